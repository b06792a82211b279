//! Malformed peers (hardening): 200 peers at once send thousands of malformed,
//! oversized, truncated and hostile LSPS0 messages while other peers use the service as
//! wallets do. The well-formed requests keep being answered correctly, the hostile ones
//! only ever get error responses (T-02..T-14, C-01..C-13, rulings 6, 10), the plugin's
//! memory stays bounded, no order comes from malformed input, and lightningd sees nothing
//! fatal (a hook that did not answer `continue` would be).
//!
//! `LSPS1_FLOOD_MESSAGES=N` sets the messages per hostile peer (default 40: 8,000 in all,
//! enough that the per-peer limits refuse some).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::secp256k1::PublicKey;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::standin::{ProcMemory, StandIn, peer, req};

const HOSTILE_PEERS: u8 = 200;
const GOOD_PEERS: u8 = 20;
/// Orders each well-formed peer makes (under the default 5 unpaid orders per node).
const ORDERS_PER_GOOD_PEER: usize = 3;

fn messages_per_hostile_peer() -> usize {
    std::env::var("LSPS1_FLOOD_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(40)
}

/// `good_params` with `field` set to `v` (or removed when `v` is null).
fn with(field: &str, v: Value) -> Value {
    let mut p = crate::lifecycle::params(500_000, 0, 1);
    if v.is_null() {
        p.as_object_mut().unwrap().remove(field);
    } else {
        p[field] = v;
    }
    p
}

fn create(params: Value) -> Vec<u8> {
    req("h", "lsps1.create_order", params).to_string().into_bytes()
}

/// One hostile custom message: the whole hook payload as hex (type included).
fn hostile(i: usize, victim_order: &str) -> String {
    let lsps = |b: &[u8]| format!("9419{}", hex::encode(b));
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    match i % 40 {
        // Not hex, odd length, or not an LSPS message at all (T-01: left alone).
        0 => format!("9419{}", "zz".repeat(40)),
        1 => "9419abc".to_string(),
        2 => format!("9421{}", hex::encode(b"{}")),
        3 => "94".to_string(),
        // Bad JSON (T-02..T-07).
        4 => lsps(b"{"),
        5 => lsps(br#"{"jsonrpc":"2.0","id":"t","method":"lsps0.list_protocols","params":{}"#),
        6 => lsps(b" { } { }"),
        7 => lsps(b"{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"lsps1.get_info\"}\0"),
        8 => lsps(b"{\"jsonrpc\":\"2.0\",\"id\":\"\xff\xfe\",\"method\":\"lsps1.get_info\"}"),
        9 => lsps(br#"[{"jsonrpc":"2.0","id":"a","method":"lsps1.get_info","params":{}}]"#),
        10 => lsps(&(0..300u32).map(|k| (k * 7919 % 251) as u8).collect::<Vec<u8>>()),
        11 => lsps(b"null"),
        // Wrong types.
        12 => lsps(br#"{"jsonrpc":"2.0","id":7,"method":"lsps1.get_info","params":{}}"#),
        13 => lsps(br#"{"jsonrpc":"2.0","id":{"a":1},"method":"lsps1.get_info"}"#),
        14 => lsps(br#"{"jsonrpc":"2.0","id":"m","method":42}"#),
        15 => lsps(br#"{"jsonrpc":"1.0","id":"v","method":"lsps1.get_info"}"#),
        16 => lsps(br#"{"jsonrpc":"2.0","id":"p","method":"lsps1.get_info","params":[]}"#),
        17 => lsps(br#"{"jsonrpc":"2.0","id":"p","method":"lsps1.get_order","params":"x"}"#),
        // Huge ids (over the 1,024-byte echo limit).
        18 => lsps(req(&"i".repeat(2000), "lsps1.get_info", json!({})).to_string().as_bytes()),
        19 => lsps(req(&"\u{1F4A5}".repeat(16_000), "lsps1.get_info", json!({})).to_string().as_bytes()),
        // Deep nesting: past serde_json's recursion limit, and just inside it.
        20 => lsps(deep(30_000).as_bytes()),
        21 => lsps(
            format!(r#"{{"jsonrpc":"2.0","id":"d","method":"lsps1.get_info","params":{{"x":{}}}}}"#, deep(120))
                .as_bytes(),
        ),
        // Unknown methods (T-09), also with hostile params.
        22 => lsps(req("u", "lsps9.pwn", json!({"a": "b".repeat(5000)})).to_string().as_bytes()),
        23 => lsps(req("u", &"lsps1.".repeat(5000), json!([1, 2, 3])).to_string().as_bytes()),
        // Oversized: over BOLT8's 65,533 bytes (dropped unread, ruling 6).
        24 => format!("9419{}", "7b".repeat(65_534)),
        25 => lsps(
            format!(
                r#"{{"jsonrpc":"2.0","id":"big","method":"lsps1.get_info","params":{{"a":"{}"}}}}"#,
                "x".repeat(70_000)
            )
            .as_bytes(),
        ),
        // Valid frames, hostile params: never an order (C-01..C-13).
        26 => lsps(&create(with("lsp_balance_sat", json!("340282366920938463463374607431768211456")))),
        27 => lsps(&create(with("lsp_balance_sat", json!(500000)))),
        28 => lsps(&create(with("client_balance_sat", json!("-1")))),
        29 => lsps(&create(with("required_channel_confirmations", json!(70_000)))),
        30 => lsps(&create(with("channel_expiry_blocks", json!(4_294_967_296u64)))),
        31 => lsps(&create(with("announce_channel", json!("false")))),
        32 => lsps(&create(with("token", json!("t".repeat(300))))),
        33 => lsps(&create(with("token", json!("not-a-token")))),
        34 => lsps(&create(with("refund_onchain_address", json!("bc1q-not-an-address")))),
        35 => lsps(&create(with("client_info", json!({"app": "x".repeat(4000)})))),
        36 => {
            let mut p = crate::lifecycle::params(500_000, 0, 1);
            for k in 0..3000 {
                p[format!("unknown_{k:05}")] = json!(k);
            }
            lsps(&create(p))
        }
        37 => lsps(&create(with("funding_confirms_within_blocks", Value::Null))),
        // Another node's order (ruling 8: 101), and an id far over 64 characters.
        38 => lsps(req("o", "lsps1.get_order", json!({"order_id": victim_order})).to_string().as_bytes()),
        _ => lsps(req("o", "lsps1.get_order", json!({"order_id": "0".repeat(10_000)})).to_string().as_bytes()),
    }
}

/// What the hostile peers got back.
#[derive(Default, Debug)]
struct HostileReplies {
    by_code: BTreeMap<i64, usize>,
    total: usize,
    bad: Vec<String>,
}

/// Routes the plugin's `sendcustommsg` replies: to each well-formed peer's inbox, or into the
/// hostile peers' tally (checked: T-12, T-13; never a `result`).
fn route(
    mut sent: mpsc::UnboundedReceiver<(String, String)>,
    inboxes: HashMap<String, mpsc::UnboundedSender<Value>>,
    hostile: Arc<Mutex<HostileReplies>>,
) {
    tokio::spawn(async move {
        while let Some((node, msg)) = sent.recv().await {
            let bytes = msg.strip_prefix("9419").and_then(|h| hex::decode(h).ok());
            let reply: Option<Value> = bytes.as_deref().and_then(|b| serde_json::from_slice(b).ok());
            if let Some(tx) = inboxes.get(&node) {
                let _ = tx.send(reply.unwrap_or(Value::Null));
                continue;
            }
            let mut h = hostile.lock().unwrap();
            h.total += 1;
            let Some(r) = reply else {
                h.bad.push(format!("not LSPS0 JSON: {}", &msg[..msg.len().min(80)]));
                continue;
            };
            let code = r["error"]["code"].as_i64();
            let shape_ok = r["jsonrpc"] == "2.0"
                && r.get("result").is_none()
                && code.is_some()
                && (r["id"].is_null() || r["id"].is_string())
                && r["error"].get("data").is_none_or(Value::is_object);
            if !shape_ok || bytes.as_ref().is_some_and(|b| b.len() > 65_533) {
                h.bad.push(r.to_string().chars().take(300).collect());
            }
            *h.by_code.entry(code.unwrap_or(0)).or_default() += 1;
        }
    });
}

/// A wallet: one request at a time, its answer from its inbox.
struct Wallet {
    key: PublicKey,
    inbox: mpsc::UnboundedReceiver<Value>,
    n: usize,
}

impl Wallet {
    async fn call(&mut self, s: &StandIn, method: &str, params: Value) -> Value {
        self.n += 1;
        let id = format!("{}-{}", &self.key.to_string()[2..18], self.n);
        s.custommsg(&self.key, req(&id, method, params).to_string().as_bytes()).await;
        let r = tokio::time::timeout(Duration::from_secs(20), self.inbox.recv())
            .await
            .unwrap_or_else(|_| panic!("{method} from {}: no answer within 20 s", self.key))
            .expect("router");
        assert_eq!((r["jsonrpc"].as_str(), r["id"].as_str()), (Some("2.0"), Some(id.as_str())), "{r}");
        r
    }
}

/// A wallet's session during the flood: list_protocols, get_info, orders, polling them,
/// and a peek at another wallet's order. Every answer is checked; returns its order ids.
async fn wallet_session(
    s: Arc<StandIn>,
    mut w: Wallet,
    stranger_order: Arc<Mutex<Option<String>>>,
) -> (Vec<String>, usize) {
    let mut orders = vec![];
    for round in 0..ORDERS_PER_GOOD_PEER {
        let r = w.call(&s, "lsps0.list_protocols", json!({})).await;
        assert_eq!(r["result"], json!({"protocols": [1]}), "T-18: {r}");
        let r = w.call(&s, "lsps1.get_info", json!({})).await;
        assert_eq!(r["result"].as_object().map(|o| o.len()), Some(10), "G-01: {r}");
        let r = w.call(&s, "lsps1.create_order", crate::lifecycle::params(500_000, 0, 1)).await;
        let o = &r["result"];
        assert_eq!((o["order_state"].as_str(), o["channel"].is_null()), (Some("CREATED"), true), "C-17: {r}");
        for k in ["lsp_balance_sat", "client_balance_sat", "channel_expiry_blocks", "token", "announce_channel"] {
            assert_eq!(o[k], crate::lifecycle::params(500_000, 0, 1)[k], "C-19 {k}: {r}");
        }
        let id = o["order_id"].as_str().unwrap().to_string();
        *stranger_order.lock().unwrap() = Some(id.clone());
        for _ in 0..3 {
            let g = w.call(&s, "lsps1.get_order", json!({"order_id": id})).await;
            assert_eq!(g["result"]["order_id"], json!(id), "R-01: {g}");
            assert_eq!(g["result"]["payment"]["bolt11"]["state"], "EXPECT_PAYMENT", "{g}");
        }
        orders.push(id);
        if round == 1 {
            // Another wallet's order: not this node's (ruling 8).
            let other = stranger_order.lock().unwrap().clone().unwrap();
            if !orders.contains(&other) {
                let g = w.call(&s, "lsps1.get_order", json!({"order_id": other})).await;
                assert_eq!(g["error"]["code"], json!(101), "R-02: {g}");
            }
        }
    }
    (orders, w.n)
}

fn mem(s: &StandIn) -> ProcMemory {
    s.plugin_memory().expect("the plugin process")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_flood_from_200_peers_while_wallets_are_served() {
    let started = Instant::now();
    let s = Arc::new(StandIn::builder().start().await);
    s.wait_log(Some("info"), "serving LSPS1 on regtest").await;
    let before = mem(&s);

    let hostile_replies = Arc::new(Mutex::new(HostileReplies::default()));
    let mut inboxes = HashMap::new();
    let mut wallets = vec![];
    for n in 0..GOOD_PEERS {
        let (_, key) = peer(HOSTILE_PEERS + 1 + n);
        let (tx, rx) = mpsc::unbounded_channel();
        inboxes.insert(key.to_string(), tx);
        wallets.push(Wallet { key, inbox: rx, n: 0 });
    }
    let good_keys: HashSet<String> = inboxes.keys().cloned().collect();
    // One more wallet, for after the flood.
    let (_, key) = peer(250);
    let (tx, rx) = mpsc::unbounded_channel();
    inboxes.insert(key.to_string(), tx);
    let mut last = Wallet { key, inbox: rx, n: 0 };
    route(s.stream_sent(), inboxes, hostile_replies.clone());

    // A real order some hostile peers will ask for (ruling 8: 101 to them).
    let victim = Arc::new(Mutex::new(None::<String>));
    let per_peer = messages_per_hostile_peer();
    let mut hostile_tasks = tokio::task::JoinSet::new();
    let sent_bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut messages = 0;
    for p in 1..=HOSTILE_PEERS {
        // Every 20th peer is greedy: four streams at once, past its rate and in-flight limits
        // (ruling 10: error 1 at most once a second, the rest dropped).
        let streams = if p % 20 == 0 { 4 } else { 1 };
        messages += streams * per_peer;
        for stream in 0..streams {
            let (s, victim, sent_bytes) = (s.clone(), victim.clone(), sent_bytes.clone());
            hostile_tasks.spawn(async move {
                let (_, key) = peer(p);
                for j in 0..per_peer {
                    let v = victim.lock().unwrap().clone().unwrap_or_else(|| "none".into());
                    let msg = hostile(usize::from(p) * 7 + stream * 13 + j, &v);
                    sent_bytes.fetch_add(msg.len() / 2, std::sync::atomic::Ordering::Relaxed);
                    // lightningd: the hook must answer `continue`, whatever came (else fatal).
                    let r = s.custommsg_hex(&key, &msg).await;
                    assert_eq!(r, json!({"result": "continue"}));
                }
            });
        }
    }
    let mut wallet_tasks = tokio::task::JoinSet::new();
    for w in wallets {
        wallet_tasks.spawn(wallet_session(s.clone(), w, victim.clone()));
    }
    let (mut good_orders, mut good_requests) = (vec![], 0);
    while let Some(r) = wallet_tasks.join_next().await {
        let (orders, n) = r.expect("a wallet's session");
        good_orders.extend(orders);
        good_requests += n;
    }
    let wallets_done = started.elapsed();
    while let Some(r) = hostile_tasks.join_next().await {
        r.expect("a hostile peer");
    }
    let flood_done = started.elapsed();
    let peak = mem(&s);
    // Let the last replies go out, then look at the plugin again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = mem(&s);

    // Still serving, not disabled, nothing fatal or BROKEN.
    assert!(s.disabled().is_none());
    s.assert_no_fatal();
    assert!(s.broken_logs().is_empty(), "{:?}", s.broken_logs());
    let r = last.call(&s, "lsps1.get_info", json!({})).await;
    assert!(r.get("result").is_some(), "served after the flood: {r}");

    let h = hostile_replies.lock().unwrap();
    println!(
        "flood: {messages} hostile messages ({:.1} MB) from {HOSTILE_PEERS} peers, {} replies to them by code {:?}; \
         {} well-formed requests from {GOOD_PEERS} peers answered, {} orders; wallets done in {wallets_done:?}, \
         flood in {flood_done:?}",
        sent_bytes.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6,
        h.total,
        h.by_code,
        good_requests,
        good_orders.len(),
    );
    println!(
        "plugin memory (KiB): before VmRSS {} VmHWM {}; end of flood VmRSS {} VmHWM {}; after VmRSS {} VmHWM {}",
        before.rss_kb, before.hwm_kb, peak.rss_kb, peak.hwm_kb, after.rss_kb, after.hwm_kb
    );
    assert!(
        h.bad.is_empty(),
        "replies to hostile peers that are not plain errors: {:#?}",
        &h.bad[..h.bad.len().min(5)]
    );
    // T-14: never more than one reply per message.
    assert!(h.total <= messages, "{} replies to {messages} messages", h.total);
    // Generous: the whole flood passes through the plugin a few times over in bytes.
    assert!(after.hwm_kb < 128 * 1024, "VmHWM {} KiB", after.hwm_kb);
    assert!(after.rss_kb < before.rss_kb + 64 * 1024, "VmRSS {} KiB after, {} before", after.rss_kb, before.rss_kb);
    drop(h);

    // No order from malformed input: the store, read on its own read-only connection.
    let c = rusqlite::Connection::open_with_flags(
        s.dir.join("lsps1.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    let rows: Vec<(String, String)> = c
        .prepare("SELECT order_id, client_node_id FROM orders")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), good_orders.len(), "exactly the wallets' orders");
    let ids: HashSet<&str> = good_orders.iter().map(String::as_str).collect();
    assert!(rows.iter().all(|(id, node)| ids.contains(id.as_str()) && good_keys.contains(node)), "{rows:?}");
}
