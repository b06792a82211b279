//! Soak (hardening): a bounded run of mixed P2P and REST traffic (get_info,
//! list_protocols, create_order, get_order from many nodes) with orders going through their
//! whole life: paid, opened and COMPLETED / PAID (N-09, P-06); paid and refunded because
//! their node never came (ruling 14, P-07) or the operator cancelled them; cancelled
//! unpaid and paid late (refused); left to expire (ruling 13). No error of any kind, no
//! memory growth after warm-up, and every order made is accounted for at the end.
//!
//! `LSPS1_SOAK_SECS` sets the load's length (default 20 s; from about 70 s on, unpaid orders
//! also expire within the run).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::secp256k1::PublicKey;
use lightning_invoice::Bolt11Invoice;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::rest::Api;
use crate::standin::{HtlcHandle, HtlcSpec, ProcMemory, StandIn, peer, req};

const P2P_CLIENTS: u8 = 16;
const REST_ONLINE: u8 = 4;
const REST_OFFLINE: u8 = 2;
/// Payment options live 60 s (the least the plugin allows).
const PAYMENT_EXPIRY_SECS: u64 = 60;
/// A paid order whose node never connects is refunded after this long (the least allowed).
const OPEN_DEADLINE_SECS: u64 = 10;

fn soak_secs() -> u64 {
    std::env::var("LSPS1_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

/// What an order is meant to go through, and so how it must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    /// Paid in one part: COMPLETED / PAID.
    Paid,
    /// Paid in two parts: COMPLETED / PAID.
    PaidMpp,
    /// Cancelled by the operator while unpaid, then paid anyway: the payment is refused.
    CancelledThenPaid,
    /// Paid for a node that never connects: held, refunded at the open deadline.
    NodeNeverCame,
    /// Paid for a node that never connects, cancelled by the operator while held: refunded.
    CancelledWhileHeld,
    /// Never paid: waits, and expires with its payment option.
    Unpaid,
}

struct Made {
    order_id: String,
    fate: Fate,
    htlcs: Vec<HtlcHandle>,
}

#[derive(Default)]
struct Counts {
    p2p: BTreeMap<&'static str, AtomicUsize>,
    rest: BTreeMap<&'static str, AtomicUsize>,
}

impl Counts {
    fn new() -> Counts {
        let mut c = Counts::default();
        for m in ["lsps0.list_protocols", "lsps1.get_info", "lsps1.create_order", "lsps1.get_order"] {
            c.p2p.insert(m, AtomicUsize::new(0));
        }
        for m in ["get_info", "create_order", "get_order", "health"] {
            c.rest.insert(m, AtomicUsize::new(0));
        }
        c
    }
}

struct Soak {
    s: StandIn,
    api: Api,
    made: Mutex<Vec<Made>>,
    counts: Counts,
    /// Answers that were not what a wallet expects: must stay empty.
    errors: Mutex<Vec<String>>,
    until: Instant,
    /// The next HTLC id on each of the payer's two channels.
    htlc_ids: [std::sync::atomic::AtomicU64; 2],
}

impl Soak {
    fn err(&self, e: String) {
        let mut errs = self.errors.lock().unwrap();
        if errs.len() < 50 {
            errs.push(e);
        }
    }

    /// Pay `total` in `parts` HTLCs from a payer node.
    async fn pay(&self, order: &Value, parts: u64) -> Vec<HtlcHandle> {
        let inv: Bolt11Invoice = order["payment"]["bolt11"]["invoice"].as_str().unwrap().parse().unwrap();
        let total = inv.amount_milli_satoshis().unwrap();
        let (_, payer) = peer(77);
        let mut out = vec![];
        for i in 0..parts {
            let amount = if i == parts - 1 { total - total / parts * (parts - 1) } else { total / parts };
            let scid = if i == 0 { "103x1x0" } else { "104x1x0" };
            let spec = HtlcSpec {
                total_msat: total,
                short_channel_id: scid.into(),
                // HTLC ids are unique per channel; the payers run concurrently, so the ids are
                // handed out here rather than counted from the stand-in's table.
                id: self.htlc_ids[usize::from(i > 0)].fetch_add(1, Ordering::Relaxed),
                ..HtlcSpec::new(
                    &payer,
                    &inv.payment_hash().to_string(),
                    &hex::encode(inv.payment_secret().0),
                    amount,
                    self.s.height() + 160,
                )
            };
            out.push(self.s.send_htlc(spec).await);
        }
        out
    }

    fn record(&self, order_id: &str, fate: Fate, htlcs: Vec<HtlcHandle>) {
        self.made.lock().unwrap().push(Made { order_id: order_id.into(), fate, htlcs });
    }
}

/// A P2P wallet: one request at a time, answers from its inbox.
struct Wallet {
    key: PublicKey,
    inbox: mpsc::UnboundedReceiver<Value>,
    n: usize,
}

impl Wallet {
    async fn call(&mut self, k: &Soak, method: &'static str, params: Value) -> Option<Value> {
        self.n += 1;
        let id = format!("{}-{}", &self.key.to_string()[2..14], self.n);
        k.counts.p2p[method].fetch_add(1, Ordering::Relaxed);
        k.s.custommsg(&self.key, req(&id, method, params).to_string().as_bytes()).await;
        let r = match tokio::time::timeout(Duration::from_secs(20), self.inbox.recv()).await {
            Ok(Some(r)) => r,
            _ => {
                k.err(format!("{method}: no answer"));
                return None;
            }
        };
        if r["id"] != json!(id) || r.get("result").is_none() {
            k.err(format!("P2P {method}: {r}"));
            return None;
        }
        Some(r["result"].clone())
    }
}

async fn p2p_client(k: Arc<Soak>, mut w: Wallet, seed: usize) {
    let mut mine: Vec<String> = vec![];
    let mut step = seed;
    while Instant::now() < k.until {
        step += 1;
        match step % 8 {
            0 => {
                if let Some(r) = w.call(&k, "lsps0.list_protocols", json!({})).await
                    && r != json!({"protocols": [1]})
                {
                    k.err(format!("list_protocols: {r}"));
                }
            }
            1 => {
                if let Some(r) = w.call(&k, "lsps1.get_info", json!({})).await
                    && r.as_object().map(|o| o.len()) != Some(10)
                {
                    k.err(format!("get_info: {r}"));
                }
            }
            2 => {
                let Some(order) = w.call(&k, "lsps1.create_order", crate::lifecycle::params(100_000, 0, 0)).await
                else {
                    continue;
                };
                let id = order["order_id"].as_str().unwrap().to_string();
                let fate = [Fate::Paid, Fate::PaidMpp, Fate::Unpaid, Fate::CancelledThenPaid][(step / 8) % 4];
                let htlcs = match fate {
                    Fate::Paid => k.pay(&order, 1).await,
                    Fate::PaidMpp => k.pay(&order, 2).await,
                    Fate::CancelledThenPaid => {
                        if let Err(e) = k.s.command("lsps1-cancelorder", json!([id])).await {
                            k.err(format!("cancel unpaid {id}: {e}"));
                        }
                        k.pay(&order, 1).await
                    }
                    _ => vec![],
                };
                k.record(&id, fate, htlcs);
                mine.push(id);
            }
            _ => {
                if let Some(id) = mine.get(step % mine.len().max(1)).cloned()
                    && let Some(o) = w.call(&k, "lsps1.get_order", json!({"order_id": id})).await
                    && o["order_id"] != json!(id)
                {
                    k.err(format!("get_order {id}: {o}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

/// A REST client for node `pk` (connected or not).
async fn rest_client(k: Arc<Soak>, pk: PublicKey, online: bool, seed: usize) {
    let mut mine: Vec<String> = vec![];
    let mut step = seed;
    let ok = |what: &str, r: &crate::rest::Resp| {
        if r.status != 200 {
            k.err(format!("REST {what}: {} {}", r.status, r.text()));
            false
        } else {
            true
        }
    };
    while Instant::now() < k.until {
        step += 1;
        match step % 6 {
            0 => {
                k.counts.rest["get_info"].fetch_add(1, Ordering::Relaxed);
                ok("get_info", &k.api.get("/api/v1/get_info").await);
            }
            1 => {
                k.counts.rest["health"].fetch_add(1, Ordering::Relaxed);
                ok("health", &k.api.get("/api/v1/health").await);
            }
            2 => {
                k.counts.rest["create_order"].fetch_add(1, Ordering::Relaxed);
                let mut body = crate::lifecycle::params(100_000, 0, 0);
                body["public_key"] = json!(pk.to_string());
                let r = k.api.create_order(&body).await;
                if !ok("create_order", &r) {
                    continue;
                }
                let order = r.json();
                let id = order["order_id"].as_str().unwrap().to_string();
                let fate = match (online, (step / 6) % 3) {
                    (true, 2) => Fate::Unpaid,
                    (true, _) => Fate::Paid,
                    (false, 0) => Fate::CancelledWhileHeld,
                    (false, 1) => Fate::NodeNeverCame,
                    (false, _) => Fate::Unpaid,
                };
                let htlcs = if fate == Fate::Unpaid { vec![] } else { k.pay(&order, 1).await };
                if fate == Fate::CancelledWhileHeld {
                    let k2 = k.clone();
                    let id2 = id.clone();
                    tokio::spawn(async move {
                        // Once it is held, the operator cancels it.
                        for _ in 0..100 {
                            let o = k2.s.command("lsps1-getorder", json!([id2])).await.unwrap();
                            if o["phase"] == "payment_held" {
                                if let Err(e) = k2.s.command("lsps1-cancelorder", json!([id2])).await {
                                    k2.err(format!("cancel held {id2}: {e}"));
                                }
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        k2.err(format!("{id2} never held"));
                    });
                }
                k.record(&id, fate, htlcs);
                mine.push(id);
            }
            _ => {
                if let Some(id) = mine.get(step % mine.len().max(1)) {
                    k.counts.rest["get_order"].fetch_add(1, Ordering::Relaxed);
                    let r = k.api.get_order(id).await;
                    if ok("get_order", &r) && r.json()["order_id"] != json!(id) {
                        k.err(format!("REST get_order {id}: {}", r.text()));
                    }
                }
            }
        }
        // A node that never comes holds its paid orders' funds until the open deadline:
        // slower, so the wallet is never exhausted by them (that would be error 100).
        tokio::time::sleep(Duration::from_millis(if online { 25 } else { 100 })).await;
    }
}

fn mem(s: &StandIn) -> ProcMemory {
    s.plugin_memory().expect("the plugin process")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mixed_p2p_and_rest_traffic_through_whole_order_lives() {
    let secs = soak_secs();
    let (s, api) = crate::rest::start(
        crate::rest::builder()
            .option("lsps1-peer-requests-per-minute", json!(100_000))
            .option("lsps1-peer-burst", json!(10_000))
            .option("lsps1-payment-expiry-secs", json!(PAYMENT_EXPIRY_SECS))
            .option("lsps1-open-deadline-secs", json!(OPEN_DEADLINE_SECS)),
    )
    .await;
    s.wait_log(Some("info"), "serving LSPS1 on regtest").await;
    let started = Instant::now();

    // P2P replies go to each wallet's inbox; a reply to anyone else is an error.
    let mut inboxes = HashMap::new();
    let mut wallets = vec![];
    for n in 0..P2P_CLIENTS {
        let (_, key) = peer(100 + n);
        s.peer_connects(&key).await;
        let (tx, rx) = mpsc::unbounded_channel();
        inboxes.insert(key.to_string(), tx);
        wallets.push(Wallet { key, inbox: rx, n: 0 });
    }
    let stray = Arc::new(AtomicUsize::new(0));
    {
        let (mut sent, stray) = (s.stream_sent(), stray.clone());
        tokio::spawn(async move {
            while let Some((node, msg)) = sent.recv().await {
                let r: Value =
                    hex::decode(&msg[4..]).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
                match inboxes.get(&node) {
                    Some(tx) => drop(tx.send(r)),
                    None => drop(stray.fetch_add(1, Ordering::Relaxed)),
                }
            }
        });
    }
    let mut rest_nodes = vec![];
    for n in 0..REST_ONLINE + REST_OFFLINE {
        let (_, pk) = peer(130 + n);
        let online = n < REST_ONLINE;
        if online {
            s.peer_connects(&pk).await;
        } else {
            s.set_reachable(&pk, false);
        }
        rest_nodes.push((pk, online));
    }

    let k = Arc::new(Soak {
        s,
        api,
        made: Mutex::new(vec![]),
        counts: Counts::new(),
        errors: Mutex::new(vec![]),
        until: started + Duration::from_secs(secs),
        htlc_ids: Default::default(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (i, w) in wallets.into_iter().enumerate() {
        tasks.spawn(p2p_client(k.clone(), w, i * 3));
    }
    for (i, (pk, online)) in rest_nodes.into_iter().enumerate() {
        tasks.spawn(rest_client(k.clone(), pk, online, i));
    }
    // Blocks keep coming (housekeeping, deadlines, lock-ins), and the plugin's memory is read
    // once warmed up (a quarter of the run, at least 3 s).
    let warm_at = Duration::from_secs((secs / 4).max(3));
    let mut warm = None;
    let mut channels_at_warm = 0;
    let mut series = vec![];
    while Instant::now() < k.until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        k.s.mine(1).await;
        let m = mem(&k.s);
        series.push(m.rss_kb / 1024);
        if warm.is_none() && started.elapsed() >= warm_at {
            warm = Some(m);
            channels_at_warm = k.s.channels().len();
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("a client");
    }
    let end_of_load = mem(&k.s);
    let channels_at_end = k.s.channels().len();

    // Drain: every payment answered (the last refunds come at the open deadline), blocks
    // still coming once a second.
    let made = std::mem::take(&mut *k.made.lock().unwrap());
    let drain = Instant::now();
    while made.iter().any(|m| m.htlcs.iter().any(HtlcHandle::is_held))
        && drain.elapsed() < Duration::from_secs(OPEN_DEADLINE_SECS + 20)
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
        k.s.mine(1).await;
    }
    for m in &made {
        for h in &m.htlcs {
            let Some(out) = h.try_outcome() else {
                let o = k.s.command("lsps1-getorder", json!([m.order_id])).await;
                let logs: Vec<_> = k.s.logs().into_iter().filter(|(_, l)| l.contains(&m.order_id)).collect();
                panic!("{} ({:?}): a payment still held after the run: {o:#?}\n{logs:#?}", m.order_id, m.fate);
            };
            let want_settled = matches!(m.fate, Fate::Paid | Fate::PaidMpp);
            if out.is_settled() != want_settled || (!want_settled && !out.is_unknown_payment_details()) {
                k.err(format!("{} ({:?}): payment ended {out:?}", m.order_id, m.fate));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = mem(&k.s);

    // Orders in = orders out: every order made is in the store, once, in the state its life
    // allows (the operator's list reads the store).
    let list = k.s.command("lsps1-listorders", json!({"limit": 1_000_000})).await.unwrap()["orders"]
        .as_array()
        .unwrap()
        .clone();
    let by_id: HashMap<&str, &Value> = list.iter().map(|o| (o["order_id"].as_str().unwrap(), o)).collect();
    let mut ends: BTreeMap<(Fate, String), usize> = BTreeMap::new();
    for m in &made {
        let Some(o) = by_id.get(m.order_id.as_str()) else {
            k.err(format!("{} missing from the store", m.order_id));
            continue;
        };
        let end = format!(
            "{}/{}{}",
            o["order_state"].as_str().unwrap(),
            o["payment_state"].as_str().unwrap(),
            o["failure_reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default()
        );
        let allowed: &[&str] = match m.fate {
            Fate::Paid | Fate::PaidMpp => &["COMPLETED/PAID"],
            Fate::CancelledThenPaid => &["FAILED/REFUNDED (cancelled)"],
            Fate::NodeNeverCame => &["FAILED/REFUNDED (peer_not_connected)"],
            Fate::CancelledWhileHeld => &["FAILED/REFUNDED (cancelled)"],
            Fate::Unpaid => &["CREATED/EXPECT_PAYMENT", "FAILED/REFUNDED (payment_expired)"],
        };
        if !allowed.contains(&end.as_str()) {
            k.err(format!("{} ({:?}) ended {end}", m.order_id, m.fate));
        }
        *ends.entry((m.fate, end)).or_default() += 1;
    }
    if list.len() != made.len() {
        k.err(format!("{} orders in the store, {} made", list.len(), made.len()));
    }

    let warm = warm.expect("warmed up");
    let p2p: usize = k.counts.p2p.values().map(|c| c.load(Ordering::Relaxed)).sum();
    let rest: usize = k.counts.rest.values().map(|c| c.load(Ordering::Relaxed)).sum();
    println!("soak: {secs} s of load, {:?} in all", started.elapsed());
    println!(
        "  requests: {p2p} P2P {:?}; {rest} REST {:?}",
        k.counts.p2p.iter().map(|(m, c)| (*m, c.load(Ordering::Relaxed))).collect::<Vec<_>>(),
        k.counts.rest.iter().map(|(m, c)| (*m, c.load(Ordering::Relaxed))).collect::<Vec<_>>()
    );
    println!("  orders: {} made, {} in the store", made.len(), list.len());
    for ((fate, end), n) in &ends {
        println!("    {n:4} {fate:?} -> {end}");
    }
    println!(
        "  plugin memory (KiB): warm-up VmRSS {} VmHWM {}; end of load VmRSS {} VmHWM {}; after drain VmRSS {} VmHWM {}",
        warm.rss_kb, warm.hwm_kb, end_of_load.rss_kb, end_of_load.hwm_kb, after.rss_kb, after.hwm_kb
    );
    println!("  node channels: {channels_at_warm} at warm-up, {channels_at_end} at the end of the load");
    println!("  plugin VmRSS during the load, MiB, once a second: {series:?}");
    let warn = k.s.logs().iter().filter(|(l, _)| l == "warn").count();
    println!("  plugin log lines at warn (UNUSUAL): {warn}");
    for (_, l) in k.s.logs().iter().filter(|(l, _)| l == "warn").take(10) {
        println!("    {l}");
    }

    let errors = k.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "{} errors, first: {errors:#?}", errors.len());
    assert_eq!(stray.load(Ordering::Relaxed), 0, "P2P replies to nodes that asked nothing (T-15)");
    k.s.assert_no_fatal();
    assert!(k.s.broken_logs().is_empty(), "{:?}", k.s.broken_logs());
    assert!(k.s.disabled().is_none());
    // No growth after warm-up beyond slack (store cache, allocator) and what the node's
    // channel count costs: route hints list all channels (at most every 5 minutes, so at
    // start here), and the allocator keeps the peak of the largest such answer (about
    // 22 KiB per channel measured before that limit; every paid order adds a channel).
    let allowance = 16 * 1024 + 64 * (channels_at_end.saturating_sub(channels_at_warm) as u64);
    assert!(
        end_of_load.rss_kb <= warm.rss_kb + allowance,
        "VmRSS grew from {} KiB at warm-up to {} KiB (allowed {allowance} KiB more)",
        warm.rss_kb,
        end_of_load.rss_kb
    );
}
