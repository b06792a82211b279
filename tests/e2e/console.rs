//! The operator's console end to end: the page's API behind runes checked by the stand-in's
//! `checkrune` (answering like lightningd, fixtures `rpc/checkrune.*`), its security headers,
//! `/metrics` parsed back by a Prometheus text parser, `lsps1-status` through a purchase,
//! and the lease-end policy.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::lifecycle::{assert_preimage, create, params, pay_whole, wait_state};
use crate::rest::{Api, Resp, build_request};
use crate::standin::{Builder, StandIn, peer};

const WAIT: Duration = Duration::from_secs(20);

/// The read-only rune of the README (fixtures `createrune.ok-lsps1-read-only.json`).
pub fn read_only() -> Value {
    json!([["method^lsps1-list", "method^lsps1-get", "method=lsps1-status"]])
}

pub fn console_builder() -> Builder {
    StandIn::builder().option("lsps1-admin-bind", json!("127.0.0.1:0"))
}

/// The address in `Operator console on http://ADDR/ ...`.
pub async fn console_addr(s: &StandIn) -> SocketAddr {
    let line = s.wait_log(Some("info"), "Operator console on ").await;
    let url = line.split("://").nth(1).unwrap_or_else(|| panic!("no URL in {line:?}"));
    url.split('/').next().unwrap().parse().unwrap_or_else(|e| panic!("{url}: {e}"))
}

async fn send(api: &Api, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    api.exchange(&build_request(method, target, &api.host(), headers, body)).await.unwrap()
}

async fn get(api: &Api, target: &str, rune: Option<&str>) -> Resp {
    match rune {
        Some(r) => send(api, "GET", target, &[("Rune", r)], b"").await,
        None => send(api, "GET", target, &[], b"").await,
    }
}

async fn post(api: &Api, target: &str, rune: &str, body: &Value) -> Resp {
    send(api, "POST", target, &[("Rune", rune), ("Content-Type", "application/json")], body.to_string().as_bytes())
        .await
}

/// Every sample of the text as (name, labels, value), through a Prometheus text parser.
pub fn scrape(text: &str) -> Vec<(String, std::collections::BTreeMap<String, String>, f64)> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"));
    parsed
        .samples
        .into_iter()
        .map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(h) => h.iter().map(|c| c.count).fold(0.0, f64::max),
                prometheus_parse::Value::Summary(_) => f64::NAN,
            };
            let labels = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            (s.metric, labels, v)
        })
        .collect()
}

fn sample(
    samples: &[(String, std::collections::BTreeMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| *v)
}

#[tokio::test]
async fn runes_guard_every_route_and_headers_guard_the_page() {
    let s = console_builder().start().await;
    let api = Api::new(console_addr(&s).await);
    let (ro, all) = (s.create_rune(read_only()), s.create_rune(json!([["method^lsps1-"]])));
    let (_, client) = peer(61);
    s.peer_connects(&client).await;
    let unpaid = create(&s, &client, params(500_000, 0, 1)).await;

    // The page itself needs no rune; it is served with the strict headers.
    let page = get(&api, "/", None).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("/assets/app.js"));
    for (path, kind) in [("/assets/app.js", "javascript"), ("/assets/app.css", "css"), ("/assets/favicon.svg", "svg")] {
        let r = get(&api, path, None).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().contains(kind), "{path}");
    }
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(page.header("access-control-allow-origin").is_none());

    // No rune, a malformed one, another node's: 401. Read-only reads: 200.
    let theirs = crate::standin::fixture("rpc/createrune.ok-lsps1-read-only.json")["result"]["rune"]
        .as_str()
        .unwrap()
        .to_string();
    for rune in [None, Some("garbage"), Some(theirs.as_str())] {
        let r = get(&api, "/api/status", rune).await;
        assert_eq!(r.status, 401, "{rune:?}: {}", r.text());
        assert!(r.json()["error"].as_str().is_some());
    }
    for target in
        ["/api/status?days=90", "/api/orders", "/api/held", "/api/leases", &format!("/api/orders/{}", unpaid.order_id)]
    {
        let r = get(&api, target, Some(&ro)).await;
        assert_eq!(r.status, 200, "{target}: {}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    let status = get(&api, "/api/status?days=90", Some(&ro)).await.json();
    assert_eq!(status["orders"]["by_phase"]["awaiting_payment"], 1);
    assert_eq!(status["daily"].as_array().unwrap().len(), 90);
    let list = get(&api, "/api/orders?state=CREATED&limit=10", Some(&ro)).await.json();
    assert_eq!(list["orders"][0]["order_id"], json!(unpaid.order_id));
    assert_eq!(list["more"], false);
    let one = get(&api, &format!("/api/orders/{}", unpaid.order_id), Some(&ro)).await.json();
    assert_eq!(one["actions"]["cancel"], true);
    assert_eq!(get(&api, "/api/orders/nope", Some(&ro)).await.status, 404);

    // A read-only rune cannot act (403); an lsps1- rune can; the order is failed.
    let body = json!({"order_id": unpaid.order_id});
    let r = post(&api, "/api/cancelorder", &ro, &body).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("lsps1-cancelorder"));
    let r = post(&api, "/api/cancelorder", &all, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["order_state"], "FAILED");
    assert_eq!(post(&api, "/api/cancelorder", &all, &body).await.status, 409, "not twice");

    // What a cross-site page could send: a form (not JSON), a preflight, a GET action.
    let form = send(
        &api,
        "POST",
        "/api/cancelorder",
        &[("Rune", all.as_str()), ("Content-Type", "application/x-www-form-urlencoded")],
        b"order_id=x",
    )
    .await;
    assert_eq!(form.status, 415);
    let pre = send(
        &api,
        "OPTIONS",
        "/api/cancelorder",
        &[("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")],
        b"",
    )
    .await;
    assert_eq!(pre.status, 405);
    assert!(pre.header("access-control-allow-origin").is_none());
    assert_eq!(get(&api, "/api/cancelorder", Some(&all)).await.status, 405);
    // Another Host (DNS rebinding): refused before anything runs.
    let rebound = api
        .exchange(&build_request("GET", "/api/status", "evil.example", &[("Rune", ro.as_str())], b""))
        .await
        .unwrap();
    assert_eq!(rebound.status, 421);

    // /metrics: a rune as a bearer token; parsed back.
    assert_eq!(get(&api, "/metrics", None).await.status, 401);
    let m = send(&api, "GET", "/metrics", &[("Authorization", &format!("Bearer {ro}"))], b"").await;
    assert_eq!(m.status, 200, "{}", m.text());
    assert!(m.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let samples = scrape(&m.text());
    assert_eq!(sample(&samples, "lsps1_orders", &[("phase", "failed")]), Some(1.0));
    assert_eq!(sample(&samples, "lsps1_refunds", &[("cause", "cancelled")]), Some(0.0), "nothing was held");
    assert_eq!(
        sample(
            &samples,
            "lsps1_requests_total",
            &[("transport", "p2p"), ("method", "create_order"), ("outcome", "ok")]
        ),
        Some(1.0)
    );
    assert!(sample(&samples, "lsps1_request_duration_seconds_count", &[("method", "create_order")]).is_some());
    assert!(
        samples
            .iter()
            .all(|(n, l, _)| n.starts_with("lsps1_") && !l.contains_key("order_id") && !l.contains_key("peer_id"))
    );
    s.assert_no_fatal();
}

#[tokio::test]
async fn metrics_open_on_loopback_only_when_asked() {
    let s = console_builder().option("lsps1-metrics-open-on-loopback", json!(true)).start().await;
    let api = Api::new(console_addr(&s).await);
    let m = get(&api, "/metrics", None).await;
    assert_eq!(m.status, 200);
    assert!(sample(&scrape(&m.text()), "lsps1_blockheight", &[]).is_some());
    // The API still wants a rune.
    assert_eq!(get(&api, "/api/status", None).await.status, 401);
}

#[tokio::test]
async fn a_non_loopback_bind_without_tls_disables_the_plugin_with_the_reason() {
    let s = StandIn::builder().option("lsps1-admin-bind", json!("0.0.0.0:0")).start().await;
    let why = s.disabled().expect("disabled");
    assert!(why.contains("lsps1-admin-bind") && why.contains("lsps1-admin-tls-cert"), "{why}");
}

#[tokio::test]
async fn status_figures_follow_a_purchase() {
    let s = StandIn::builder().start().await;
    let (_, client) = peer(62);
    s.peer_connects(&client).await;
    let pay = create(&s, &client, params(500_000, 0, 1)).await;
    let h = pay_whole(&s, &pay).await;
    assert_preimage(&h.outcome(WAIT).await, &pay);
    let o = wait_state(&s, &client, &pay.order_id, "COMPLETED", "PAID").await;
    let fee: u64 = o["payment"]["bolt11"]["fee_total_sat"].as_str().unwrap().parse().unwrap();
    let st = s.command("lsps1-status", json!({"days": 7})).await.unwrap();
    assert_eq!(st["orders"]["by_phase"]["completed"], 1, "{st}");
    assert_eq!(st["revenue_sat"]["today"], fee);
    assert_eq!(st["revenue_sat"]["all_time"], fee);
    assert_eq!(st["capacity_sold_sat"]["last_7_days"], 500_000);
    assert_eq!(st["leases"]["active"], 1);
    assert_eq!(st["leases"]["leased_sat"], 500_000);
    assert_eq!(st["held"]["orders"], 0);
    assert_eq!(st["daily"].as_array().unwrap().len(), 7);
    assert_eq!(st["blockheight"], s.height());
    let leases = s.command("lsps1-listleases", json!({})).await.unwrap();
    assert_eq!(leases["policy"], "keep");
    assert_eq!(leases["leases"][0]["action"], "protect", "ends within a month: listed, protected: {leases}");
    assert_eq!(leases["leases"][0]["blocks_left"], 1000);
}

#[tokio::test]
async fn close_idle_closes_only_after_the_lease_and_the_idle_blocks() {
    let s = StandIn::builder()
        .option("lsps1-lease-end-policy", json!("close-idle"))
        .option("lsps1-lease-idle-blocks", json!(5))
        .option("lsps1-lease-force-close-after-secs", json!(600))
        .start()
        .await;
    let (client, pay) = sold(&s, 63, 10).await;
    let lease = s.command("lsps1-listleases", json!({})).await.unwrap();
    assert_eq!(lease["leases"][0]["action"], "protect", "{lease}");
    let end = lease["leases"][0]["lease_end_block"].as_u64().unwrap() as u32;
    let channel_id = lease["leases"][0]["channel_id"].as_str().unwrap().to_string();

    // The end block: the notification, and the close guard lets go.
    mine_synced(&s, end - s.height()).await;
    let note = s.wait_notification("lsps1_lease_ended", |n| n["order_id"] == json!(pay.order_id)).await;
    assert_eq!(note["lease_end_block"], end);
    assert_eq!(note["policy"], "close-idle");
    assert_eq!(s.rpc_command("close", json!({"id": client.to_string()})).await, json!({"result": "continue"}));
    wait_lease(&s, "idle for 0 of 5").await;

    // A payment through the channel restarts the count.
    mine_synced(&s, 3).await;
    wait_lease(&s, "idle for 3 of 5").await;
    s.route_payments(&channel_id, 1);
    mine_synced(&s, 1).await;
    wait_lease(&s, "idle for 0 of 5").await;
    mine_synced(&s, 4).await;
    wait_lease(&s, "idle for 4 of 5").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.calls("close").is_empty(), "busy 4 blocks ago: not idle enough");
    mine_synced(&s, 1).await;
    s.wait_calls("close", 1).await;
    let call = &s.calls("close")[0];
    assert_eq!((call["id"].as_str(), call["unilateraltimeout"].as_u64()), (Some(channel_id.as_str()), Some(600)));
    let o = s.command("lsps1-getorder", json!({"order_id": pay.order_id})).await.unwrap();
    assert!(o["events"].as_array().unwrap().iter().any(|e| e["kind"] == "lease_closing"), "{o}");
    // The channel went away: the lease is done, never closed twice.
    mine_synced(&s, 2).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let l = s.command("lsps1-listleases", json!({})).await.unwrap();
        if l["leases"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{l}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.calls("close").len(), 1);
    s.assert_no_fatal();
}

/// A channel of 500,000 sat sold to peer `n` for `expiry_blocks`, paid and opened.
async fn sold(s: &StandIn, n: u8, expiry_blocks: u32) -> (bitcoin::secp256k1::PublicKey, crate::lifecycle::Pay) {
    let (_, client) = peer(n);
    s.peer_connects(&client).await;
    let mut p = params(500_000, 0, 1);
    p["channel_expiry_blocks"] = json!(expiry_blocks);
    let pay = create(s, &client, p).await;
    assert_preimage(&pay_whole(s, &pay).await.outcome(WAIT).await, &pay);
    wait_state(s, &client, &pay.order_id, "COMPLETED", "PAID").await;
    (client, pay)
}

/// Mine `n` blocks one at a time, each seen by the plugin before the next.
async fn mine_synced(s: &StandIn, n: u32) {
    for _ in 0..n {
        s.mine(1).await;
        let h = s.height();
        let deadline = tokio::time::Instant::now() + WAIT;
        while s.command("lsps1-status", json!({})).await.unwrap()["blockheight"] != h {
            assert!(tokio::time::Instant::now() < deadline, "the plugin never saw block {h}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Poll `lsps1-listleases` until the first lease's reason contains `why`.
async fn wait_lease(s: &StandIn, why: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let l = s.command("lsps1-listleases", json!({})).await.unwrap();
        if l["leases"][0]["why"].as_str().is_some_and(|w| w.contains(why)) {
            return l;
        }
        assert!(tokio::time::Instant::now() < deadline, "wanted '{why}': {l}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test]
async fn keep_never_closes() {
    let s = StandIn::builder().start().await;
    let (_, pay) = sold(&s, 64, 5).await;
    s.mine(50).await;
    s.wait_notification("lsps1_lease_ended", |n| n["order_id"] == json!(pay.order_id)).await;
    let l = s.command("lsps1-listleases", json!({})).await.unwrap();
    assert_eq!(l["leases"][0]["action"], "keep", "{l}");
    assert!(s.calls("close").is_empty());
}

#[tokio::test]
async fn close_idle_counts_from_its_first_look_not_from_the_lease_end() {
    // The plugin was down while the lease ended (or the store was just upgraded, or the
    // policy just switched): blocks nobody watched are not idle blocks.
    let mut s = StandIn::builder()
        .option("lsps1-lease-end-policy", json!("close-idle"))
        .option("lsps1-lease-idle-blocks", json!(5))
        .start()
        .await;
    let (client, _) = sold(&s, 65, 5).await;
    s.kill_plugin().await;
    s.mine(30).await;
    s.restart_lightningd().await;
    s.peer_connects(&client).await;
    mine_synced(&s, 1).await;
    wait_lease(&s, "idle for 0 of 5").await;
    mine_synced(&s, 4).await;
    wait_lease(&s, "idle for 4 of 5").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.calls("close").is_empty(), "30 blocks unwatched are not 30 idle blocks");
    mine_synced(&s, 1).await;
    s.wait_calls("close", 1).await;
    s.assert_no_fatal();
}

#[tokio::test]
async fn off_loopback_with_tls_serves_https_only_by_the_names_it_knows() {
    let dir = tempfile::tempdir().unwrap();
    let (der, cert, key) = crate::rest::write_test_cert(dir.path());
    let s = StandIn::builder()
        .option("lsps1-admin-bind", json!("0.0.0.0:0"))
        .option("lsps1-admin-tls-cert", json!(cert.to_string_lossy()))
        .option("lsps1-admin-tls-key", json!(key.to_string_lossy()))
        .option("lsps1-admin-host", json!(["lsp.example"]))
        .start()
        .await;
    assert!(s.disabled().is_none(), "{:?}", s.disabled());
    let line = s.wait_log(Some("info"), "Operator console on https://").await;
    let port = console_addr(&s).await.port();
    assert!(line.contains("https://0.0.0.0:"), "{line}");
    let api = Api::tls(SocketAddr::from(([127, 0, 0, 1], port)), der);
    let ro = s.create_rune(read_only());
    let ok = api
        .exchange(&build_request("GET", "/api/status", &format!("lsp.example:{port}"), &[("Rune", ro.as_str())], b""))
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    let other = api
        .exchange(&build_request("GET", "/api/status", "evil.example", &[("Rune", ro.as_str())], b""))
        .await
        .unwrap();
    assert_eq!(other.status, 421);
}
