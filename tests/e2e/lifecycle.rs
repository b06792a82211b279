//! The order lifecycle end to end (bLIP-51, P-05–P-07, N-01–N-11;
//! rulings 11–17): the real plugin binary holds HTLCs the stand-in offers it, opens with
//! `fundchannel`, settles or refunds, and survives kills and restarts, with lightningd's
//! behaviour taken from the v26.06.6 recordings.

use std::time::Duration;

use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::PublicKey;
use lightning_invoice::Bolt11Invoice;
use serde_json::{Value, json};

use crate::standin::{HtlcHandle, HtlcOutcome, HtlcSpec, Reply, StandIn, peer, req};

const WAIT: Duration = Duration::from_secs(20);

/// What a payer learns from an order's invoice.
#[derive(Clone, Debug)]
pub(crate) struct Pay {
    pub order_id: String,
    pub hash: String,
    pub secret: String,
    pub amount_msat: u64,
}

/// create_order params (shared by the fault, flood and soak tests).
pub(crate) fn params(lsp: u64, client: u64, confs: u16) -> Value {
    json!({
        "lsp_balance_sat": lsp.to_string(),
        "client_balance_sat": client.to_string(),
        "required_channel_confirmations": confs,
        "funding_confirms_within_blocks": 6,
        "channel_expiry_blocks": 1000,
        "token": "",
        "refund_onchain_address": "",
        "announce_channel": false
    })
}

pub(crate) async fn create(s: &StandIn, client: &PublicKey, p: Value) -> Pay {
    let r = s.lsps(client, &req("c", "lsps1.create_order", p)).await;
    assert!(r.get("error").is_none(), "{r}");
    pay_of(&r["result"])
}

/// What a payer learns from an order (a create_order or get_order result).
pub(crate) fn pay_of(o: &Value) -> Pay {
    let inv: Bolt11Invoice = o["payment"]["bolt11"]["invoice"].as_str().unwrap().parse().unwrap();
    Pay {
        order_id: o["order_id"].as_str().unwrap().to_string(),
        hash: inv.payment_hash().to_string(),
        secret: hex::encode(inv.payment_secret().0),
        amount_msat: inv.amount_milli_satoshis().unwrap(),
    }
}

async fn get_order(s: &StandIn, client: &PublicKey, id: &str) -> Value {
    let r = s.lsps(client, &req("g", "lsps1.get_order", json!({"order_id": id}))).await;
    assert!(r.get("error").is_none(), "{r}");
    r["result"].clone()
}

/// A payer's HTLC (over the payer's channel, not the client's), with ample CLTV room.
pub(crate) fn part(s: &StandIn, pay: &Pay, amount_msat: u64, scid: &str) -> HtlcSpec {
    let (_, payer) = peer(77);
    HtlcSpec {
        total_msat: pay.amount_msat,
        short_channel_id: scid.to_string(),
        id: s.next_htlc_id(scid),
        ..HtlcSpec::new(&payer, &pay.hash, &pay.secret, amount_msat, s.height() + 160)
    }
}

pub(crate) async fn pay_whole(s: &StandIn, pay: &Pay) -> HtlcHandle {
    s.send_htlc(part(s, pay, pay.amount_msat, "103x1x0")).await
}

pub(crate) fn assert_preimage(o: &HtlcOutcome, pay: &Pay) {
    match o {
        HtlcOutcome::Settled { preimage } => {
            let bytes = hex::decode(preimage).unwrap();
            assert_eq!(sha256::Hash::hash(&bytes).to_string(), pay.hash, "the preimage settles the invoice");
        }
        other => panic!("expected settled, got {other:?}"),
    }
}

fn assert_refunded(o: &HtlcOutcome) {
    assert!(o.is_unknown_payment_details(), "expected incorrect_or_unknown_payment_details, got {o:?}");
}

/// Poll the order (through `lsps1-getorder`, whose `order` is exactly the client's view, so
/// that polling does not connect the client as a custom message would).
pub(crate) async fn wait_state(
    s: &StandIn,
    _client: &PublicKey,
    id: &str,
    order_state: &str,
    payment_state: &str,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let o = getorder_admin(s, id).await["order"].clone();
        if o["order_state"] == order_state && o["payment"]["bolt11"]["state"] == payment_state {
            return o;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "order {id} is {} / {}, wanted {order_state} / {payment_state}",
                o["order_state"], o["payment"]["bolt11"]["state"]
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn getorder_admin(s: &StandIn, id: &str) -> Value {
    s.command("lsps1-getorder", json!({"order_id": id})).await.unwrap()
}

#[tokio::test]
async fn p05_p06_n09_one_payment_held_then_channel_then_preimage() {
    let s = StandIn::builder()
        .option("lsps1-max-initial-client-balance-sat", json!(500_000))
        .option("lsps1-supports-zero-channel-reserve", json!(true))
        .start()
        .await;
    let (_, client) = peer(31);
    s.peer_connects(&client).await;
    let pay = create(&s, &client, params(1_000_000, 200_000, 1)).await;
    let h = pay_whole(&s, &pay).await;
    let out = h.outcome(WAIT).await;
    assert_preimage(&out, &pay);
    s.assert_no_fatal();
    // N-03, N-04, N-06, N-08, N-05: ruling 15's mapping.
    let calls = s.calls("fundchannel");
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c["id"], json!(client.to_string()));
    assert_eq!(c["amount"], json!(1_200_000));
    assert_eq!(c["push_msat"], json!(200_000_000u64));
    assert_eq!(
        (c["announce"].clone(), c["mindepth"].clone(), c["reserve"].clone()),
        (json!(false), json!(1), json!(0))
    );
    assert_eq!(c["feerate"], json!("11000perkw"), "the order's funding rate (6-block estimate)");
    // N-09: COMPLETED / PAID, the channel filled in, matching the funding transaction.
    let o = wait_state(&s, &client, &pay.order_id, "COMPLETED", "PAID").await;
    let chan = s.channels().into_iter().find(|ch| ch["peer_id"] == json!(client.to_string())).expect("channel");
    assert_eq!(
        o["channel"]["funding_outpoint"],
        json!(format!("{}:{}", chan["funding_txid"].as_str().unwrap(), chan["funding_outnum"]))
    );
    assert!(o["channel"]["funded_at"].is_string() && o["channel"]["expires_at"].is_string());
    let admin = getorder_admin(&s, &pay.order_id).await;
    assert_eq!(admin["lease_end_block"], json!(s.height() + 1000));
    assert_eq!((admin["held_msat"].clone(), admin["htlcs"][0]["state"].clone()), (json!(0), json!("settled")));
    // Every transition was told to operators, wrapped under the topic (fixtures README).
    let payload = |n: &Value| n.get("lsps1_order_state_changed").cloned().unwrap_or_else(|| n.clone());
    s.wait_notification("lsps1_order_state_changed", |n| payload(n)["to"] == "completed").await;
    let seen: Vec<(String, String)> = s
        .notifications("lsps1_order_state_changed")
        .iter()
        .map(|n| {
            let p = n.get("lsps1_order_state_changed").unwrap_or(n);
            (p["from"].as_str().unwrap().to_string(), p["to"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        seen,
        [("awaiting_payment", "payment_held"), ("payment_held", "opening"), ("opening", "completed")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // lightningd removed the HTLC (fulfilled) once the plugin answered.
    assert_eq!(h.state(), "SENT_REMOVE_ACK_REVOCATION");
}

#[tokio::test]
async fn mpp_in_two_and_three_parts() {
    let s = StandIn::builder().start().await;
    let (_, client) = peer(32);
    s.peer_connects(&client).await;
    for parts in [2u64, 3] {
        let pay = create(&s, &client, params(500_000, 0, 1)).await;
        let each = pay.amount_msat / parts;
        let mut handles = vec![];
        for i in 0..parts {
            let amount = if i == parts - 1 { pay.amount_msat - each * (parts - 1) } else { each };
            let scid = if i % 2 == 0 { "103x1x0" } else { "104x1x0" };
            handles.push(s.send_htlc(part(&s, &pay, amount, scid)).await);
            if i < parts - 1 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert!(handles[0].is_held(), "an incomplete set is held");
                let o = get_order(&s, &client, &pay.order_id).await;
                assert_eq!(o["payment"]["bolt11"]["state"], "EXPECT_PAYMENT");
            }
        }
        for h in &handles {
            assert_preimage(&h.outcome(WAIT).await, &pay);
        }
        wait_state(&s, &client, &pay.order_id, "COMPLETED", "PAID").await;
    }
    assert_eq!(s.calls("fundchannel").len(), 2);
}

#[tokio::test]
async fn wrong_secret_under_and_overpayment_are_failed_back() {
    let s = StandIn::builder().start().await;
    let (_, client) = peer(33);
    s.peer_connects(&client).await;
    let pay = create(&s, &client, params(500_000, 0, 1)).await;
    let cases = [
        ("wrong secret", HtlcSpec { payment_secret: "33".repeat(32), ..part(&s, &pay, pay.amount_msat, "103x1x0") }),
        (
            "underpayment",
            HtlcSpec { total_msat: pay.amount_msat - 1000, ..part(&s, &pay, pay.amount_msat - 1000, "104x1x0") },
        ),
        (
            "overpayment",
            HtlcSpec { total_msat: pay.amount_msat + 1000, ..part(&s, &pay, pay.amount_msat + 1000, "105x1x0") },
        ),
    ];
    for (what, spec) in cases {
        let h = s.send_htlc(spec).await;
        let out = h.outcome(WAIT).await;
        assert!(matches!(&out, HtlcOutcome::Failed { by_lightningd: false, .. }), "{what}: {out:?}");
        assert_refunded(&out);
    }
    // The order still waits for a correct payment.
    let o = get_order(&s, &client, &pay.order_id).await;
    assert_eq!(
        (o["order_state"].as_str(), o["payment"]["bolt11"]["state"].as_str()),
        (Some("CREATED"), Some("EXPECT_PAYMENT"))
    );
    assert!(s.calls("fundchannel").is_empty());
    // A correct payment still goes through, and a part after the set completed is failed.
    let h = pay_whole(&s, &pay).await;
    assert_preimage(&h.outcome(WAIT).await, &pay);
    let late = s.send_htlc(part(&s, &pay, 1000, "106x1x0")).await;
    assert_refunded(&late.outcome(WAIT).await);
    s.assert_no_fatal();
}

#[tokio::test]
async fn an_incomplete_set_times_out_with_mpp_timeout() {
    let s = StandIn::builder().option("lsps1-mpp-timeout-secs", json!(1)).start().await;
    let (_, client) = peer(34);
    s.peer_connects(&client).await;
    let pay = create(&s, &client, params(500_000, 0, 1)).await;
    let h = s.send_htlc(part(&s, &pay, pay.amount_msat / 2, "103x1x0")).await;
    match h.outcome(WAIT).await {
        HtlcOutcome::Failed { message, by_lightningd: false } => assert_eq!(message, "0017", "mpp_timeout"),
        other => panic!("{other:?}"),
    }
    // The payer may try again: the order still waits.
    let h = pay_whole(&s, &pay).await;
    assert_preimage(&h.outcome(WAIT).await, &pay);
}

#[tokio::test]
async fn p07_n11_open_refused_refunds_the_payer() {
    let s = StandIn::builder()
        .reply("fundchannel", Reply::fixture_error("rpc/fundchannel.err-peer-rejected.json"))
        .start()
        .await;
    let (_, client) = peer(35);
    s.peer_connects(&client).await;
    let pay = create(&s, &client, params(500_000, 0, 1)).await;
    let h = pay_whole(&s, &pay).await;
    let out = h.outcome(WAIT).await;
    assert!(matches!(&out, HtlcOutcome::Failed { by_lightningd: false, .. }), "{out:?}");
    assert_refunded(&out);
    let o = wait_state(&s, &client, &pay.order_id, "FAILED", "REFUNDED").await;
    assert!(o["channel"].is_null());
    let admin = getorder_admin(&s, &pay.order_id).await;
    assert_eq!(admin["failure_reason"], "open_failed");
    let ev = admin["events"].as_array().unwrap().last().unwrap().clone();
    assert!(ev["detail"]["error"].as_str().unwrap().contains("no thanks"), "{ev}");
}

#[tokio::test]
async fn n02_absent_client_is_waited_for_then_connected_out() {
    let s = StandIn::builder().start().await;
    let (_, client) = peer(36);
    let pay = create(&s, &client, params(500_000, 0, 1)).await;
    s.disconnect(&client);
    // Unreachable at first: held, no open (N-02).
    s.set_reachable(&client, false);
    let h = pay_whole(&s, &pay).await;
    wait_state(&s, &client, &pay.order_id, "CREATED", "HOLD").await;
    s.wait_calls("connect", 1).await;
    assert!(h.is_held());
    assert!(s.calls("fundchannel").is_empty(), "no open while the client is away");
    // The client connects by itself: the open goes on at once.
    s.peer_connects(&client).await;
    assert_preimage(&h.outcome(WAIT).await, &pay);
    assert_eq!(s.calls("fundchannel").len(), 1);
}

#[tokio::test]
async fn peer_absent_past_the_deadline_is_refunded() {
    let s = StandIn::builder().option("lsps1-open-deadline-secs", json!(10)).start().await;
    let (_, client) = peer(37);
    let pay = create(&s, &client, params(500_000, 0, 1)).await;
    s.disconnect(&client);
    s.set_reachable(&client, false);
    let h = pay_whole(&s, &pay).await;
    let out = h.outcome(Duration::from_secs(30)).await;
    assert_refunded(&out);
    assert!(s.calls("fundchannel").is_empty());
    assert!(!s.calls("connect").is_empty(), "ruling 14: it tried to connect out");
    assert_eq!(getorder_admin(&s, &pay.order_id).await["failure_reason"], "peer_not_connected");
}

#[tokio::test]
async fn cltv_margin_refunds_before_the_htlc_expires() {
    let s = StandIn::builder().start().await;
    let (_, client) = peer(38);
    let pay = create(&s, &client, params(500_000, 0, 1)).await;
    s.disconnect(&client);
    s.set_reachable(&client, false);
    // 30 blocks of room: accepted (margin 12 + 6), then the chain moves.
    let spec = HtlcSpec { cltv_expiry: s.height() + 30, ..part(&s, &pay, pay.amount_msat, "103x1x0") };
    let expiry = spec.cltv_expiry;
    let h = s.send_htlc(spec).await;
    wait_state(&s, &client, &pay.order_id, "CREATED", "HOLD").await;
    // No open may start with less than margin (12) + open allowance (6) blocks left.
    s.mine(11).await; // height + 18 < expiry: still held
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.is_held(), "still outside the margin");
    s.mine(1).await; // height + 18 == expiry: refund now
    let out = h.outcome(WAIT).await;
    assert_refunded(&out);
    assert!(s.height() < expiry, "failed back before it expired");
    assert_eq!(getorder_admin(&s, &pay.order_id).await["failure_reason"], "cltv_deadline");
}

#[tokio::test]
async fn funds_gone_by_payment_time_refund_at_once() {
    let s = StandIn::builder().start().await;
    let (_, client) = peer(39);
    s.peer_connects(&client).await;
    let pay = create(&s, &client, params(500_000, 0, 1)).await;
    s.set_reply("listfunds", Reply::Result(crate::standin::fixture("rpc/listfunds.ok-empty.json")["result"].clone()));
    let h = pay_whole(&s, &pay).await;
    assert_refunded(&h.outcome(WAIT).await);
    assert!(s.calls("fundchannel").is_empty());
    assert_eq!(getorder_admin(&s, &pay.order_id).await["failure_reason"], "funds_unavailable");
}

#[tokio::test]
async fn cancel_while_held_refunds_and_cannot_cancel_twice() {
    let s = StandIn::builder().start().await;
    let (_, client) = peer(40);
    let pay = create(&s, &client, params(500_000, 0, 1)).await;
    s.disconnect(&client);
    s.set_reachable(&client, false);
    let h = pay_whole(&s, &pay).await;
    wait_state(&s, &client, &pay.order_id, "CREATED", "HOLD").await;
    // The operator sees what is held.
    assert_eq!(getorder_admin(&s, &pay.order_id).await["held_msat"], json!(pay.amount_msat));
    let r = s.command("lsps1-cancelorder", json!([pay.order_id])).await.unwrap();
    assert_eq!(r["htlcs_failed"], 1);
    assert_refunded(&h.outcome(WAIT).await);
    wait_state(&s, &client, &pay.order_id, "FAILED", "REFUNDED").await;
    assert!(s.command("lsps1-cancelorder", json!({"order_id": pay.order_id})).await.is_err());
    assert!(s.command("lsps1-cancelorder", json!({"order_id": "nope"})).await.is_err());
    // An unpaid order can be cancelled too; a late payment for it is failed.
    let other = create(&s, &client, params(500_000, 0, 1)).await;
    s.command("lsps1-cancelorder", json!([other.order_id])).await.unwrap();
    let late = pay_whole(&s, &other).await;
    assert_refunded(&late.outcome(WAIT).await);
}

#[tokio::test]
async fn replayed_htlc_after_a_lightningd_restart_gets_the_same_outcome() {
    let mut s = StandIn::builder().start().await;
    let (_, client) = peer(41);
    let pay = create(&s, &client, params(500_000, 0, 1)).await;
    s.disconnect(&client);
    s.set_reachable(&client, false);
    let h = pay_whole(&s, &pay).await;
    wait_state(&s, &client, &pay.order_id, "CREATED", "HOLD").await;
    s.restart_lightningd().await;
    assert_eq!(h.hook_call_ids().len(), 2, "replayed once after the restart");
    assert!(h.is_held(), "still held after the replay");
    s.peer_connects(&client).await;
    assert_preimage(&h.outcome(WAIT).await, &pay);
    assert_eq!(s.calls("fundchannel").len(), 1);
    wait_state(&s, &client, &pay.order_id, "COMPLETED", "PAID").await;
    s.assert_no_fatal();
}

#[tokio::test]
async fn plugin_killed_while_holding_refunds_and_never_opens() {
    let mut s = StandIn::builder().start().await;
    let (_, client) = peer(42);
    let pay = create(&s, &client, params(500_000, 0, 1)).await;
    s.disconnect(&client);
    s.set_reachable(&client, false);
    let h = pay_whole(&s, &pay).await;
    wait_state(&s, &client, &pay.order_id, "CREATED", "HOLD").await;
    s.kill_plugin().await;
    // lightningd fails it back by itself (fixtures plugin-death): the payer is refunded.
    let out = h.outcome(WAIT).await;
    assert!(matches!(&out, HtlcOutcome::Failed { by_lightningd: true, .. }), "{out:?}");
    s.restart_lightningd().await;
    // The client is there now, and would take a channel: none is opened (ruling 17).
    s.peer_connects(&client).await;
    let o = wait_state(&s, &client, &pay.order_id, "FAILED", "REFUNDED").await;
    assert!(o["channel"].is_null());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.calls("fundchannel").is_empty());
    assert_eq!(getorder_admin(&s, &pay.order_id).await["failure_reason"], "payment_lost");
}

#[tokio::test]
async fn killed_after_fundchannel_before_the_store_write_never_opens_twice() {
    // fundchannel goes through in lightningd (the channel exists) but its answer is slow;
    // the plugin dies meanwhile, so lightningd fails the HTLC back.
    let mut s =
        StandIn::builder().reply("fundchannel", Reply::delay(Duration::from_secs(3), Reply::Default)).start().await;
    let (_, client) = peer(43);
    s.peer_connects(&client).await;
    let pay = create(&s, &client, params(500_000, 0, 1)).await;
    let h = pay_whole(&s, &pay).await;
    s.wait_calls("fundchannel", 1).await;
    s.kill_plugin().await;
    assert!(matches!(h.outcome(WAIT).await, HtlcOutcome::Failed { by_lightningd: true, .. }));
    s.restart_lightningd().await;
    s.peer_connects(&client).await;
    // The channel was a gift: recorded, COMPLETED, payment REFUNDED; no second open.
    let o = wait_state(&s, &client, &pay.order_id, "COMPLETED", "REFUNDED").await;
    assert!(o["channel"].is_object());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.calls("fundchannel").len(), 1, "never a second fundchannel");
    s.wait_log(Some("warn"), "gift").await;
}

#[tokio::test]
async fn lightningd_restart_during_fundchannel_settles_on_replay() {
    let mut s =
        StandIn::builder().reply("fundchannel", Reply::delay(Duration::from_secs(3), Reply::Default)).start().await;
    let (_, client) = peer(44);
    s.peer_connects(&client).await;
    let pay = create(&s, &client, params(500_000, 0, 1)).await;
    let h = pay_whole(&s, &pay).await;
    s.wait_calls("fundchannel", 1).await;
    s.restart_lightningd().await;
    // Reconciled from listpeerchannels at start; the replayed HTLC is settled.
    assert_preimage(&h.outcome(WAIT).await, &pay);
    s.peer_connects(&client).await;
    wait_state(&s, &client, &pay.order_id, "COMPLETED", "PAID").await;
    assert_eq!(s.calls("fundchannel").len(), 1);
}

#[tokio::test]
async fn n10_a_leased_channel_cannot_be_closed_without_the_override() {
    let s = StandIn::builder().start().await;
    let (_, client) = peer(45);
    s.peer_connects(&client).await;
    let pay = create(&s, &client, params(500_000, 0, 1)).await;
    assert_preimage(&pay_whole(&s, &pay).await.outcome(WAIT).await, &pay);
    wait_state(&s, &client, &pay.order_id, "COMPLETED", "PAID").await;
    let chan = s.channels().into_iter().find(|c| c["peer_id"] == json!(client.to_string())).unwrap();
    for target in [json!({"id": client.to_string()}), json!([chan["channel_id"]])] {
        let r = s.rpc_command("close", target.clone()).await;
        let e = &r["return"]["error"];
        assert_eq!(e["code"], 1401, "{target}: {r}");
        assert!(e["message"].as_str().unwrap().contains(&pay.order_id));
    }
    // Another peer's channel closes as usual.
    let (_, other) = peer(46);
    assert_eq!(s.rpc_command("close", json!({"id": other.to_string()})).await, json!({"result": "continue"}));
    s.command("lsps1-allowclose", json!([pay.order_id])).await.unwrap();
    assert_eq!(s.rpc_command("close", json!({"id": client.to_string()})).await, json!({"result": "continue"}));
}

#[tokio::test]
async fn polling_get_order_twice_a_second_is_never_refused() {
    let s = StandIn::builder().start().await;
    let (_, client) = peer(47);
    let pay = create(&s, &client, params(500_000, 0, 1)).await;
    // 150 polls back to back: far beyond the burst of 20 full requests.
    for i in 0..150 {
        let r = s.lsps(&client, &req(&format!("p{i}"), "lsps1.get_order", json!({"order_id": pay.order_id}))).await;
        assert!(r.get("error").is_none(), "poll {i}: {r}");
    }
}
