//! Section 2, create_order: orders/s sustained through the stand-in (invoice built by the
//! plugin, signed by `signinvoice`, order committed to SQLite), and where the time goes:
//! the store's commit, `signinvoice`, JSON, measured separately in the same run.
//!
//! Section 3b, held payments: orders paid at once (one HTLC each, distinct clients), held,
//! opened (`fundchannel`) and settled: payments settled per second.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::secp256k1::PublicKey;
use cln_lsps1::order::Transport;
use cln_lsps1::store::{Bolt11Record, InsertLimits, OrderRecord, Store};
use lightning_invoice::Bolt11Invoice;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::common::{Profile, Stats, Table, cpu_us, env_num, peers, us};
use crate::p2p::{ask, unlimited};
use crate::standin::{HtlcSpec, StandIn, req};

pub fn order_params(lsp_sat: u64) -> Value {
    json!({"lsp_balance_sat": lsp_sat.to_string(), "client_balance_sat": "0", "required_channel_confirmations": 0,
           "funding_confirms_within_blocks": 6, "channel_expiry_blocks": 1000, "token": "",
           "refund_onchain_address": "", "announce_channel": false})
}

/// `conc` lanes at once, each creating one order for each of its clients in turn: every
/// order from a different client, as on a live LSP (the per-client quota never binds).
async fn create_many(s: &Arc<StandIn>, clients: &[PublicKey], conc: usize) -> (Stats, Vec<Value>) {
    create_many_with(s, clients, conc, order_params(100_000)).await
}

/// [`create_many`] with these create_order params.
pub(crate) async fn create_many_with(
    s: &Arc<StandIn>,
    clients: &[PublicKey],
    conc: usize,
    params: Value,
) -> (Stats, Vec<Value>) {
    let start = Instant::now();
    let mut tasks = vec![];
    for lane in clients.chunks(clients.len().div_ceil(conc)) {
        let s = s.clone();
        let lane: Vec<_> = lane.iter().map(|p| (*p, s.route_sent(p))).collect();
        let params = params.clone();
        tasks.push(tokio::spawn(async move {
            let body = req("c", "lsps1.create_order", params).to_string().into_bytes();
            let mut out = Vec::with_capacity(lane.len());
            for (p, mut rx) in lane {
                let t = Instant::now();
                let r = ask(&s, &mut rx, &p, &body).await;
                assert!(r.get("result").is_some(), "create_order refused: {r}");
                out.push((t.elapsed(), r));
            }
            out
        }));
    }
    let (mut lat, mut orders) = (vec![], vec![]);
    for t in tasks {
        for (l, o) in t.await.expect("task") {
            lat.push(l);
            orders.push(o);
        }
    }
    (Stats::of(lat, start.elapsed()), orders)
}

/// One raw JSON-RPC call on lightning-rpc (what the plugin's `signinvoice` costs, seen
/// from outside).
async fn rpc_once(path: &Path, method: &str, params: Value) -> Duration {
    let mut sock = UnixStream::connect(path).await.expect("lightning-rpc");
    let body = json!({"jsonrpc": "2.0", "id": "bench", "method": method, "params": params}).to_string();
    let t = Instant::now();
    sock.write_all(body.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 65536];
    let mut got = vec![];
    loop {
        let n = sock.read(&mut buf).await.expect("read");
        assert!(n > 0, "lightning-rpc closed");
        got.extend_from_slice(&buf[..n]);
        if got.ends_with(b"\n\n") {
            break;
        }
    }
    t.elapsed()
}

pub(crate) fn record(i: usize, now: i64) -> OrderRecord {
    let id = format!("bench-{i:08}");
    OrderRecord {
        order_id: id.clone(),
        created_at_ms: now,
        updated_at_ms: now,
        client_node_id: format!("02{:064x}", i % 1000),
        transport: Transport::P2p,
        lsp_balance_sat: 100_000,
        client_balance_sat: 0,
        required_channel_confirmations: 0,
        funding_confirms_within_blocks: 6,
        channel_expiry_blocks: 1000,
        token: Some(String::new()),
        refund_onchain_address: None,
        announce_channel: false,
        client_info: None,
        phase: cln_lsps1::order::Phase::AwaitingPayment,
        held_at_ms: None,
        refunded_after_open: false,
        failure_reason: None,
        fee_total_sat: 2_000,
        order_total_sat: 2_000,
        funding_feerate_perkw: 253,
        reserved_sat: 0,
        expires_at_ms: now + 3_600_000,
        paid_method: None,
        bolt11: Some(Bolt11Record {
            invoice: format!("lnbcrt-{id}"),
            payment_hash: format!("{i:064x}"),
            preimage: "11".repeat(32),
            payment_secret: "22".repeat(32),
            expires_at_ms: now + 3_600_000,
            min_final_cltv: 144,
            fee_total_sat: 2_000,
            order_total_sat: 2_000,
        }),
        channel: None,
        onchain: None,
        reorg_flagged: false,
        node_id: None,
        client_ip: None,
    }
}

/// The store's commit of one new order, alone (same file system as the plugin's store).
fn store_commit(n: usize) -> Stats {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let store = Store::open(&dir.path().join("bench.sqlite3")).expect("store");
    let now = chrono::Utc::now().timestamp_millis();
    let limits =
        InsertLimits { fundable_sat: u64::MAX, max_unpaid_per_client: u64::MAX, max_unpaid_per_ip: 100, now_ms: now };
    let start = Instant::now();
    let mut lat = vec![];
    for i in 0..n {
        let r = record(i, now);
        let t = Instant::now();
        store.insert_order(&r, limits).expect("insert");
        lat.push(t.elapsed());
    }
    Stats::of(lat, start.elapsed())
}

pub async fn run(table: &mut Table) {
    let n = env_num("LSPS1_BENCH_ORDERS_N", 4_000);
    println!("\n== 2. create_order ({n} orders per row)");
    let s = Arc::new(unlimited(StandIn::builder()).start().await);
    let ps = peers(3 * n + 200);
    let _warm = create_many(&s, &ps[..200], 16).await;
    for (k, conc) in [1usize, 16, 64].into_iter().enumerate() {
        let clients = &ps[200 + k * n..200 + (k + 1) * n];
        let _p = Profile::start(s.plugin_pid(), &format!("create_order_{conc}"));
        let cpu0 = cpu_us(s.plugin_pid());
        let (st, orders) = create_many(&s, clients, conc).await;
        let cpu = (cpu_us(s.plugin_pid()) - cpu0) / n as f64;
        let met = st.per_sec >= 1000.0;
        table
            .add(
                "create_order",
                format!("create_order, {conc} at once"),
                format!(
                    "{:.0} orders/s, p50 {:.0} µs, p99 {:.0} µs; plugin CPU {cpu:.0} µs/order",
                    st.per_sec,
                    us(st.p50),
                    us(st.p99)
                ),
            )
            .goal("≥ 1,000 orders/s", met);
        if conc == 1 {
            // Where one order's time goes, each part measured on its own.
            let per_order = st.p50;
            let inv = orders[0]["result"]["payment"]["bolt11"]["invoice"].as_str().expect("invoice").to_string();
            let rpc = s.dir.join("lightning-rpc");
            let mut sign = vec![];
            for _ in 0..500 {
                sign.push(rpc_once(&rpc, "signinvoice", json!({"invstring": inv})).await);
            }
            let sign = Stats::of(sign, Duration::from_secs(1));
            let commit = tokio::task::spawn_blocking(|| store_commit(2_000)).await.expect("store");
            let body = req("c", "lsps1.create_order", order_params(100_000)).to_string();
            let answer = orders[0].to_string();
            let t = Instant::now();
            for _ in 0..10_000 {
                let v: Value = serde_json::from_str(&body).expect("json");
                let a: Value = serde_json::from_str(&answer).expect("json");
                std::hint::black_box((serde_json::to_vec(&v).expect("ser"), serde_json::to_vec(&a).expect("ser")));
            }
            let json_us = us(t.elapsed()) / 10_000.0;
            let share = |x: f64| 100.0 * x / us(per_order);
            table.add(
                "create_order",
                "  share: SQLite commit of the order (alone)",
                format!("p50 {:.0} µs = {:.0}% of p50", us(commit.p50), share(us(commit.p50))),
            );
            table.add(
                "create_order",
                "  share: signinvoice round trip (stand-in signs)",
                format!("p50 {:.0} µs = {:.0}% of p50", us(sign.p50), share(us(sign.p50))),
            );
            table.add(
                "create_order",
                "  share: JSON parse + serialize (request, answer)",
                format!("{json_us:.1} µs = {:.1}% of p50", share(json_us)),
            );
        }
    }
    if let Ok(s) = Arc::try_unwrap(s) {
        s.shutdown().await;
    }
    held_payments(table).await;
}

/// Orders paid at once, each by one HTLC, held, opened and settled.
async fn held_payments(table: &mut Table) {
    let n = env_num("LSPS1_BENCH_PAID_N", 40);
    println!("\n== 3b. held payments ({n} orders paid at once)");
    let s = Arc::new(unlimited(StandIn::builder()).start().await);
    let ps = peers(n);
    let mut pays = vec![];
    for p in &ps {
        let mut rx = s.route_sent(p);
        let r = ask(&s, &mut rx, p, req("c", "lsps1.create_order", order_params(100_000)).to_string().as_bytes()).await;
        let inv: Bolt11Invoice =
            r["result"]["payment"]["bolt11"]["invoice"].as_str().expect("invoice").parse().expect("bolt11");
        pays.push(inv);
    }
    let payer = peers(n + 1)[n];
    let start = Instant::now();
    let mut tasks = vec![];
    for (i, inv) in pays.iter().enumerate() {
        let s = s.clone();
        let amount = inv.amount_milli_satoshis().expect("amount");
        let spec = HtlcSpec {
            id: i as u64,
            short_channel_id: "103x1x0".into(),
            ..HtlcSpec::new(
                &payer,
                &inv.payment_hash().to_string(),
                &hex::encode(inv.payment_secret().0),
                amount,
                s.height() + 200,
            )
        };
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let h = s.send_htlc(spec).await;
            let o = h.outcome(Duration::from_secs(120)).await;
            assert!(o.is_settled(), "not settled: {o:?}");
            t.elapsed()
        }));
    }
    let mut lat = vec![];
    for t in tasks {
        lat.push(t.await.expect("payment"));
    }
    let st = Stats::of(lat, start.elapsed());
    table.add(
        "held payments",
        format!("{n} payments held → opened → settled"),
        format!(
            "{:.1} settled/s, p50 {:.0} ms, p99 {:.0} ms per payment",
            st.per_sec,
            us(st.p50) / 1e3,
            us(st.p99) / 1e3
        ),
    );
    if let Ok(s) = Arc::try_unwrap(s) {
        s.shutdown().await;
    }
}
