//! 1. P2P round trip: `lsps1.get_info`, `lsps1.get_order` and `lsps0.list_protocols` through
//!    the real plugin under the stand-in (`custommsg` hook in, `sendcustommsg` out), at 1, 16
//!    and 256 concurrent peers, each peer one request at a time. Floor, same run: the same
//!    plugin answering a `custommsg` hook of another message type (plugin-protocol I/O alone).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::secp256k1::PublicKey;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::common::{Profile, Stats, Table, cpu_us, env_num, peers, us};
use crate::standin::{StandIn, req};

/// One LSPS request from `peer`; the reply, decoded.
pub async fn ask(s: &StandIn, rx: &mut mpsc::UnboundedReceiver<String>, peer: &PublicKey, body: &[u8]) -> Value {
    let hook = s.custommsg(peer, body).await;
    debug_assert_eq!(hook, json!({"result": "continue"}));
    let msg = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a reply in time")
        .expect("the stand-in routes replies");
    serde_json::from_slice(&hex::decode(&msg[4..]).expect("hex")).expect("JSON reply")
}

/// The options that take the per-peer limits out of the way of a benchmark.
pub fn unlimited(b: crate::standin::Builder) -> crate::standin::Builder {
    b.env("CLN_PLUGIN_LOG", "warn")
        .option("lsps1-peer-requests-per-minute", json!(1_000_000))
        .option("lsps1-peer-burst", json!(1_000_000))
        .option("lsps1-max-unpaid-orders-per-peer", json!(1_000_000))
        // 256 peers each with a request always in flight sit exactly at the default cap
        // (256): a peer's next request can arrive before the plugin has read lightningd's
        // answer to its previous reply, and be refused as busy.
        .option("lsps1-max-inflight", json!(1_024))
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Floor,
    GetInfo,
    GetOrder,
    ListProtocols,
}

async fn row(
    s: &Arc<StandIn>,
    who: &[(PublicKey, String)],
    kind: Kind,
    conc: usize,
    total: usize,
) -> (Vec<Duration>, Duration, usize) {
    let per_peer = (total / conc).max(1);
    let start = Instant::now();
    let mut tasks = vec![];
    for (peer, order_id) in who[..conc].iter() {
        let (peer, order_id) = (*peer, order_id.clone());
        let s = s.clone();
        let mut rx = s.route_sent(&peer);
        tasks.push(tokio::spawn(async move {
            let body = match kind {
                Kind::Floor => vec![],
                Kind::GetInfo => req("b", "lsps1.get_info", json!({})).to_string().into_bytes(),
                Kind::GetOrder => req("b", "lsps1.get_order", json!({"order_id": order_id})).to_string().into_bytes(),
                Kind::ListProtocols => req("b", "lsps0.list_protocols", json!({})).to_string().into_bytes(),
            };
            let (mut lat, mut busy) = (Vec::with_capacity(per_peer), 0usize);
            for _ in 0..per_peer {
                let t = Instant::now();
                if kind == Kind::Floor {
                    // Type 32769: odd, custom, not LSPS: answered `continue` with no work.
                    let r = s.custommsg_hex(&peer, "8001").await;
                    debug_assert_eq!(r, json!({"result": "continue"}));
                } else {
                    loop {
                        let reply = ask(&s, &mut rx, &peer, &body).await;
                        // Error 1 "busy": the plugin's cap of requests in flight (256, held
                        // until lightningd took the reply) refused it; a client retries.
                        if reply.pointer("/error/code") == Some(&json!(1)) {
                            busy += 1;
                            continue;
                        }
                        assert!(reply.get("result").is_some(), "error reply: {reply}");
                        break;
                    }
                }
                lat.push(t.elapsed());
            }
            (lat, busy)
        }));
    }
    let (mut all, mut busy) = (vec![], 0);
    for t in tasks {
        let (lat, b) = t.await.expect("peer task");
        all.extend(lat);
        busy += b;
    }
    (all, start.elapsed(), busy)
}

pub async fn run(table: &mut Table) {
    let total = env_num("LSPS1_BENCH_P2P_N", 20_000);
    println!("\n== 1. P2P round trip ({total} requests per row)");
    let s = Arc::new(unlimited(StandIn::builder()).start().await);
    // Every peer owns one order, for its get_order.
    let ps = peers(256);
    let mut who = vec![];
    for p in &ps {
        let mut rx = s.route_sent(p);
        let body = req(
            "c",
            "lsps1.create_order",
            json!({"lsp_balance_sat": "100000", "client_balance_sat": "0", "required_channel_confirmations": 1,
                   "funding_confirms_within_blocks": 6, "channel_expiry_blocks": 1000, "announce_channel": false}),
        );
        let r = ask(&s, &mut rx, p, body.to_string().as_bytes()).await;
        let id = r["result"]["order_id"].as_str().unwrap_or_else(|| panic!("create_order: {r}")).to_string();
        who.push((*p, id));
    }
    let kinds = [
        (Kind::Floor, "floor: other custommsg"),
        (Kind::GetInfo, "lsps1.get_info"),
        (Kind::GetOrder, "lsps1.get_order"),
        (Kind::ListProtocols, "lsps0.list_protocols"),
    ];
    for conc in [1usize, 16, 256] {
        let _warm = row(&s, &who, Kind::GetInfo, conc, total / 10).await;
        // Rows alternate with the floor in rounds, so a slow moment hits all of them.
        let rounds = 4;
        let mut got: Vec<(Vec<Duration>, Duration)> = vec![(vec![], Duration::ZERO); kinds.len()];
        // The plugin's CPU time per request of each row (user + system).
        let mut cpu = vec![0.0f64; kinds.len()];
        let mut busy = vec![0usize; kinds.len()];
        for _ in 0..rounds {
            for (i, (kind, name)) in kinds.iter().enumerate() {
                let _p = Profile::start(if i > 0 { s.plugin_pid() } else { None }, &format!("p2p_{name}_{conc}"));
                let c0 = cpu_us(s.plugin_pid());
                let (lat, wall, b) = row(&s, &who, *kind, conc, total / rounds).await;
                cpu[i] += cpu_us(s.plugin_pid()) - c0;
                busy[i] += b;
                got[i].0.extend(lat);
                got[i].1 += wall;
            }
        }
        let stats: Vec<Stats> = got.into_iter().map(|(lat, wall)| Stats::of(lat, wall)).collect();
        let floor = stats[0];
        table.add(
            "P2P",
            format!("floor: other custommsg, {conc} peers"),
            format!(
                "p50 {:.0} µs, p99 {:.0} µs, {:.0}/s; plugin CPU {:.0} µs/request",
                us(floor.p50),
                us(floor.p99),
                floor.per_sec,
                cpu[0] / floor.n as f64
            ),
        );
        for (i, (_, name)) in kinds.iter().enumerate().skip(1) {
            let st = stats[i];
            let r50 = st.p50.as_secs_f64() / floor.p50.as_secs_f64();
            let r99 = st.p99.as_secs_f64() / floor.p99.as_secs_f64();
            table
                .add(
                    "P2P",
                    format!("{name}, {conc} peers"),
                    format!(
                        "p50 {:.0} µs, p99 {:.0} µs, {:.0}/s (p99 {r99:.2}× floor's); plugin CPU {:.0} µs/request{}",
                        us(st.p50),
                        us(st.p99),
                        st.per_sec,
                        cpu[i] / st.n as f64,
                        if busy[i] > 0 { format!("; {} busy refusals retried", busy[i]) } else { String::new() }
                    ),
                )
                .ratio(r50)
                .goal("p50 ≤ 1.5× floor", r50 <= 1.5);
        }
    }
    if let Ok(s) = Arc::try_unwrap(s) {
        s.shutdown().await;
    }
}
