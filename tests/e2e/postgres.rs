//! Several nodes on one PostgreSQL order book, end to end: two real plugin binaries on two
//! stand-in nodes sharing one database (an order made on one is read over REST on the
//! other, limits count on both, each opens only its own orders, concurrent creates never
//! pass a quota), a standby taking over a node's orders, and the database going away in
//! the middle of a purchase. The server is a real PostgreSQL started by the test (skipped,
//! with the reason, where there is none, unless `LSPS1_REQUIRE_POSTGRES=1`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::lifecycle::{create, params, part, pay_whole, wait_state};
use crate::rest::{self, Api};
use crate::standin::{HtlcOutcome, StandIn, peer, req};

#[path = "../support/postgres.rs"]
mod pg;

const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn database() -> Option<String> {
    match pg::fresh_database() {
        Ok(url) => Some(url),
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

async fn node(url: &str, seed: u8, extra: &[(&str, Value)]) -> (StandIn, Api) {
    let mut b = rest::builder()
        .node_seed(seed)
        .option("lsps1-db", json!(url))
        .option("lsps1-max-initial-client-balance-sat", json!(500_000))
        .option("lsps1-supports-zero-channel-reserve", json!(true));
    for (k, v) in extra {
        b = b.option(k, v.clone());
    }
    rest::start(b).await
}

#[tokio::test]
async fn two_nodes_share_one_order_book_and_each_opens_only_its_own() {
    let Some(url) = database() else { return };
    let limits = [("lsps1-rest-max-unpaid-orders-per-ip", json!(1))];
    let (a, api_a) = node(&url, 0x5a, &limits).await;
    let (b, api_b) = node(&url, 0x5b, &limits).await;
    assert_ne!(a.node_id, b.node_id);
    let (_, client) = peer(41);

    // Made over REST on A, read over REST on B: the same order.
    let made = api_a.create_order(&rest::zeus_body(&client)).await;
    assert_eq!(made.status, 200, "{}", made.json());
    let order = made.json();
    let id = order["order_id"].as_str().unwrap().to_string();
    let read = api_b.get_order(&id).await;
    assert_eq!(read.status, 200, "{}", read.json());
    assert_eq!(read.json(), order, "B reads A's order as A made it");

    // The per-address limit counts A's unpaid order on B too.
    let (_, other) = peer(42);
    let refused = api_b.create_order(&rest::zeus_body(&other)).await;
    assert_eq!(refused.status, 403, "{}", refused.json());

    // The payment reaches A: A holds it and A opens; B never calls fundchannel.
    a.peer_connects(&client).await;
    let pay = crate::lifecycle::pay_of(&order);
    let h = pay_whole(&a, &pay).await;
    crate::lifecycle::assert_preimage(&h.outcome(WAIT).await, &pay);
    assert_eq!(a.calls("fundchannel").len(), 1);
    let done = api_b.get_order(&id).await.json();
    assert_eq!(done["order_state"], "COMPLETED", "{done}");
    assert_eq!(done["payment"]["bolt11"]["state"], "PAID", "{done}");

    // The same hash arriving at B is not B's to hold: left to lightningd, which fails it.
    let stray = b.send_htlc(part(&b, &pay, pay.amount_msat, "104x1x0")).await;
    if let HtlcOutcome::Settled { .. } = stray.outcome(WAIT).await {
        panic!("B settled A's payment");
    }
    assert!(b.calls("fundchannel").is_empty(), "B opened A's order");

    // Listings: one node by default, every node on request.
    let mine = b.command("lsps1-listorders", json!({})).await.unwrap();
    assert_eq!(mine["orders"].as_array().map(Vec::len), Some(0), "{mine}");
    let all = b.command("lsps1-listorders", json!({"all_nodes": true})).await.unwrap();
    assert_eq!(all["orders"].as_array().map(Vec::len), Some(1), "{all}");
    a.assert_no_fatal();
    b.assert_no_fatal();
}

#[tokio::test]
async fn concurrent_creates_on_two_nodes_never_pass_the_client_quota() {
    let Some(url) = database() else { return };
    let quota = [("lsps1-max-unpaid-orders-per-peer", json!(3))];
    let (a, api_a) = node(&url, 0x5a, &quota).await;
    let (_b, api_b) = node(&url, 0x5b, &quota).await;
    let (_, client) = peer(43);
    // Twelve create_orders for one client at once, half on each node.
    let body = rest::zeus_body(&client);
    let mut tasks = vec![];
    for api in [&api_a, &api_b] {
        for _ in 0..6 {
            tasks.push(api.create_order(&body));
        }
    }
    let answers = futures::future::join_all(tasks).await;
    let made = answers.iter().filter(|r| r.status == 200).count();
    let refused = answers.iter().filter(|r| r.status == 403).count();
    assert_eq!(
        made,
        3,
        "exactly the quota, across both nodes: {:?}",
        answers.iter().map(|r| r.json()).collect::<Vec<_>>()
    );
    assert_eq!(refused, 9);
    let all = a.command("lsps1-listorders", json!({"all_nodes": true})).await.unwrap();
    assert_eq!(all["orders"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn a_standby_with_the_same_node_id_takes_over_the_order_book() {
    let Some(url) = database() else { return };
    let (mut a, _) = node(&url, 0x5a, &[]).await;
    let (_, client) = peer(44);
    a.peer_connects(&client).await;
    let pay = create(&a, &client, params(1_000_000, 0, 0)).await;
    a.kill_plugin().await;
    drop(a);
    // The standby: the same node (id), another machine (lightning dir), the same database.
    let (standby, api) = node(&url, 0x5a, &[]).await;
    assert_eq!(api.get_order(&pay.order_id).await.json()["order_state"], "CREATED");
    standby.peer_connects(&client).await;
    let h = pay_whole(&standby, &pay).await;
    crate::lifecycle::assert_preimage(&h.outcome(WAIT).await, &pay);
    wait_state(&standby, &client, &pay.order_id, "COMPLETED", "PAID").await;
    assert_eq!(standby.calls("fundchannel").len(), 1);
}

#[tokio::test]
async fn an_outage_refuses_writes_with_retry_refunds_at_the_margin_and_resumes() {
    let mut server = match pg::Postgres::start() {
        Ok(s) => s,
        Err(why) => {
            assert!(std::env::var("LSPS1_REQUIRE_POSTGRES").as_deref() != Ok("1"), "LSPS1_REQUIRE_POSTGRES=1: {why}");
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    server.create_db("outage").unwrap();
    let url = server.url("outage");
    let (s, api) = node(&url, 0x5a, &[]).await;
    let (_, client) = peer(45);
    // The client stays away: the payment is held while the open waits for it (N-02).
    let made = api.create_order(&rest::zeus_body(&client)).await.json();
    let pay = crate::lifecycle::pay_of(&made);
    s.disconnect(&client);
    s.set_reachable(&client, false);
    let mut spec = part(&s, &pay, pay.amount_msat, "103x1x0");
    spec.cltv_expiry = s.height() + 30;
    let expiry = spec.cltv_expiry;
    let h = s.send_htlc(spec).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.is_held(), "held while the client is away: {}", h.state());

    server.stop();
    // Writes: retryable. Over REST a 503 with Retry-After.
    let (_, other) = peer(46);
    let raw = serde_json::to_vec(&rest::zeus_body(&other)).unwrap();
    let r = api
        .exchange(&crate::rest::build_request(
            "POST",
            "/api/v1/create_order",
            &api.host(),
            &[("Content-Type", "application/json")],
            &raw,
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{}", r.json());
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.json()["error"]["data"]["retry"], json!(true));
    // Over P2P: the spec's error with retry.
    s.peer_connects(&other).await;
    let p2p = s.lsps(&other, &req("c", "lsps1.create_order", params(100_000, 0, 0))).await;
    assert_eq!(p2p["error"]["data"]["retry"], json!(true), "{p2p}");

    // The held payment reaches its margin while the database is away: refunded anyway.
    s.mine(19).await;
    let out = h.outcome(WAIT).await;
    assert!(out.is_unknown_payment_details(), "refunded at the margin: {out:?}");
    assert!(s.height() < expiry, "failed back before it expired");

    // The database comes back: the same plugin serves again, nothing lost.
    server.run().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = api.get_order(&pay.order_id).await;
        if r.status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no recovery: {}", r.json());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let again = api.create_order(&rest::zeus_body(&other)).await;
    assert_eq!(again.status, 200, "{}", again.json());
    s.assert_no_fatal();
}
