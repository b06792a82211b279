//! On-chain payments end to end (bLIP-51 payment 3.3; P-08, P-10–P-15; rulings 21–25): the
//! real plugin binary offers an address of the stand-in's wallet, sees the payment once it
//! is mined, opens the channel, and refunds to the client's address whatever it should not
//! keep, through reorgs, rebroadcasts and fee bumps.

use std::time::Duration;

use serde_json::{Value, json};

use crate::lifecycle::{params, part, pay_of};
use crate::standin::{StandIn, peer, req};

const WAIT: Duration = Duration::from_secs(20);
/// A regtest address nobody in the tests owns: the client's refund address.
const REFUND_TO: &str = "bcrt1qjefm5vg3pshke552apccaxf92rkku89ucyj4hd";

async fn standin() -> StandIn {
    StandIn::builder()
        .option("lsps1-onchain-payments", json!(true))
        .option("lsps1-min-onchain-payment-size-sat", json!(5_000))
        .start()
        .await
}

fn onchain_params(lsp: u64) -> Value {
    let mut p = params(lsp, 0, 1);
    p["refund_onchain_address"] = json!(REFUND_TO);
    p
}

async fn create(s: &StandIn, client: &bitcoin::secp256k1::PublicKey, p: Value) -> Value {
    let r = s.lsps(client, &req("c", "lsps1.create_order", p)).await;
    assert!(r.get("error").is_none(), "{r}");
    r["result"].clone()
}

async fn admin(s: &StandIn, id: &str) -> Value {
    s.command("lsps1-getorder", json!({"order_id": id})).await.unwrap()
}

/// Wait until the operator's view of order `id` satisfies `pred`.
async fn wait_for(s: &StandIn, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = admin(s, id).await;
        if pred(&v) {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("order {id}: waited in vain for {what}: {v:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The on-chain option's order total.
fn total_of(order: &Value) -> u64 {
    order["payment"]["onchain"]["order_total_sat"].as_str().unwrap().parse().unwrap()
}

fn onchain_state(v: &Value) -> &str {
    v["order"]["payment"]["onchain"]["state"].as_str().unwrap_or("")
}

#[tokio::test]
async fn p13_an_order_paid_on_chain_opens_its_channel() {
    let s = standin().await;
    let (_, client) = peer(41);
    s.peer_connects(&client).await;
    // get_info carries the option's values while it is on.
    let info = s.lsps(&client, &req("i", "lsps1.get_info", json!({}))).await;
    assert_eq!(info["result"]["min_onchain_payment_confirmations"], json!(1), "{info}");
    assert_eq!(info["result"]["min_onchain_payment_size_sat"], json!("5000"), "{info}");

    let order = create(&s, &client, onchain_params(200_000)).await;
    let oc = &order["payment"]["onchain"];
    assert_eq!(oc["state"], "EXPECT_PAYMENT", "{order}");
    assert_eq!(oc["min_fee_for_0conf"], Value::Null, "P-11: {order}");
    assert_eq!(oc["min_onchain_payment_confirmations"], json!(1));
    assert_eq!(oc["refund_onchain_address"], json!(REFUND_TO), "P-12");
    let bolt11_total: u64 = order["payment"]["bolt11"]["order_total_sat"].as_str().unwrap().parse().unwrap();
    let total: u64 = oc["order_total_sat"].as_str().unwrap().parse().unwrap();
    assert_eq!(total, bolt11_total + 1_000, "the on-chain option costs the surcharge more");
    let address = oc["address"].as_str().unwrap().to_string();
    assert!(address.starts_with("bcrt1p"), "a p2tr address of the node: {address}");
    assert_eq!(s.calls("newaddr")[0]["addresstype"], "p2tr");
    // A second order gets a fresh address (ruling 23).
    let other = create(&s, &client, onchain_params(150_000)).await;
    assert_ne!(other["payment"]["onchain"]["address"], json!(address));

    // In the mempool lightningd sees nothing; mined, the order is paid and opens.
    let op = s.pay_onchain(&address, total);
    s.mine(1).await;
    let id = order["order_id"].as_str().unwrap();
    let v = wait_for(&s, id, "COMPLETED", |v| v["order"]["order_state"] == "COMPLETED").await;
    assert_eq!(onchain_state(&v), "PAID", "{v:#}");
    assert_eq!(v["order"]["payment"]["bolt11"]["state"], "REFUNDED", "the other option can no longer be paid");
    assert!(v["order"]["channel"]["funding_outpoint"].is_string(), "{v:#}");
    let opened = s.calls("fundchannel");
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["amount"], json!(200_000));
    // The payment is the LSP's now: kept and given back to the wallet.
    let v = wait_for(&s, id, "output kept", |v| v["onchain"]["outputs"][0]["role"] == "kept").await;
    assert_eq!(v["onchain"]["outputs"][0]["outpoint"], json!(op));
    assert_eq!(v["onchain"]["outputs"][0]["confirmations"], json!(1));
    s.mine(1).await;
    let (_, _, reserved_to, _) = s.coin(&op).unwrap();
    assert!(reserved_to.is_none_or(|r| r <= s.height()), "released: {reserved_to:?}");
    // A Lightning payment to the paid order is failed back.
    let pay = pay_of(&v["order"]);
    let h = s.send_htlc(part(&s, &pay, pay.amount_msat, "103x1x0")).await;
    assert!(h.outcome(WAIT).await.is_unknown_payment_details());
    s.assert_no_fatal();
}

#[tokio::test]
async fn p14_a_cancelled_underpaid_order_is_refunded_on_chain_and_the_refund_confirms() {
    let s = standin().await;
    let (_, client) = peer(42);
    let order = create(&s, &client, onchain_params(200_000)).await;
    let id = order["order_id"].as_str().unwrap().to_string();
    let address = order["payment"]["onchain"]["address"].as_str().unwrap().to_string();
    let paid = total_of(&order) - 2_000;
    let op = s.pay_onchain(&address, paid);
    s.mine(1).await;
    // Underpaid: seen, reserved, waiting.
    let v = wait_for(&s, &id, "the output seen", |v| v["onchain"]["outputs"][0]["role"] == "seen").await;
    assert_eq!(onchain_state(&v), "EXPECT_PAYMENT");
    let (_, _, reserved_to, _) = s.coin(&op).unwrap();
    assert!(reserved_to.is_some_and(|r| r > s.height() + 1000), "kept from other spends: {reserved_to:?}");

    s.command("lsps1-cancelorder", json!({"order_id": id})).await.unwrap();
    let v = wait_for(&s, &id, "a refund", |v| v["onchain"]["refunds"].as_array().is_some_and(|r| !r.is_empty())).await;
    assert_eq!(onchain_state(&v), "REFUNDED");
    let refund = &v["onchain"]["refunds"][0];
    assert_eq!(refund["destination"], json!(REFUND_TO));
    assert_eq!(refund["inputs"], json!([op]), "exactly the order's own output");
    let amount = refund["amount_sat"].as_u64().unwrap();
    let fee = refund["fee_sat"].as_u64().unwrap();
    assert_eq!(amount + fee, paid, "the fee comes from the amount");
    assert!(fee > 0 && fee < 5_000, "{refund}");
    let sent = s.payments_to(REFUND_TO);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].1, amount);
    assert_eq!(refund["txid"], json!(sent[0].0));
    s.mine(1).await;
    let v = wait_for(&s, &id, "the refund confirmed", |v| v["onchain"]["refunds"][0]["state"] == "confirmed").await;
    assert_eq!(v["onchain"]["outputs"][0]["role"], "refunded");
    // The operator finds it among refunds and on-chain orders.
    let listed = s.command("lsps1-listorders", json!({"payment": "refunds"})).await.unwrap();
    let ids: Vec<&Value> = listed["orders"].as_array().unwrap().iter().map(|o| &o["order_id"]).collect();
    assert_eq!(ids, [&json!(id)], "{listed}");
    let listed = s.command("lsps1-listorders", json!({"payment": "paid-onchain"})).await.unwrap();
    assert!(listed["orders"].as_array().unwrap().is_empty(), "{listed}");
    let listed = s.command("lsps1-listorders", json!({"payment": "onchain"})).await.unwrap();
    assert_eq!(listed["orders"][0]["onchain_address"], json!(address));
    assert!(s.command("lsps1-listorders", json!({"payment": "nope"})).await.is_err());
    // Never a second refund.
    s.mine(2).await;
    assert_eq!(s.payments_to(REFUND_TO).len(), 1);
    s.assert_no_fatal();
}

#[tokio::test]
async fn ruling23_what_was_paid_beyond_the_total_goes_back_after_the_open() {
    let s = standin().await;
    let (_, client) = peer(48);
    s.peer_connects(&client).await;
    let order = create(&s, &client, onchain_params(200_000)).await;
    let id = order["order_id"].as_str().unwrap().to_string();
    let total = total_of(&order);
    s.pay_onchain(order["payment"]["onchain"]["address"].as_str().unwrap(), total + 50_000);
    s.mine(1).await;
    let v = wait_for(&s, &id, "a surplus refund", |v| v["onchain"]["refunds"][0]["state"] == "broadcast").await;
    assert_eq!(v["order"]["order_state"], "COMPLETED");
    assert_eq!(onchain_state(&v), "PAID");
    let r = &v["onchain"]["refunds"][0];
    let amount = r["amount_sat"].as_u64().unwrap();
    let fee = r["fee_sat"].as_u64().unwrap();
    assert!(amount + fee <= 50_000 && amount > 40_000, "the surplus less its fee: {r}");
    assert_eq!(v["onchain"]["outputs"][0]["role"], "payment", "reserved until the surplus refund is mined");
    let sent = s.payments_to(REFUND_TO);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].1, amount);
    assert!(v["events"].to_string().contains("surplus_refund_signed"));
    // Once only.
    s.mine(2).await;
    let v = wait_for(&s, &id, "confirmed", |v| v["onchain"]["refunds"][0]["state"] == "confirmed").await;
    assert_eq!(v["onchain"]["refunds"].as_array().unwrap().len(), 1);
    assert_eq!(s.payments_to(REFUND_TO).len(), 1);
    let v = wait_for(&s, &id, "kept", |v| v["onchain"]["outputs"][0]["role"] == "kept").await;
    assert_eq!(onchain_state(&v), "PAID", "the order's total stays with the LSP");
    s.assert_no_fatal();
}

#[tokio::test]
async fn outputs_after_a_lightning_payment_are_refunded_and_dust_is_kept() {
    let s = standin().await;
    let (_, client) = peer(43);
    s.peer_connects(&client).await;
    let order = create(&s, &client, onchain_params(200_000)).await;
    let id = order["order_id"].as_str().unwrap().to_string();
    let address = order["payment"]["onchain"]["address"].as_str().unwrap().to_string();
    let pay = pay_of(&order);
    let h = s.send_htlc(part(&s, &pay, pay.amount_msat, "103x1x0")).await;
    assert!(matches!(h.outcome(WAIT).await, crate::standin::HtlcOutcome::Settled { .. }));
    let v = wait_for(&s, &id, "COMPLETED", |v| v["order"]["order_state"] == "COMPLETED").await;
    assert_eq!(onchain_state(&v), "REFUNDED", "paid by Lightning: the on-chain option is over");

    // The client pays on-chain too (a wallet retrying): refunded, the fee from the amount.
    let late = s.pay_onchain(&address, 30_000);
    s.mine(1).await;
    let v = wait_for(&s, &id, "a refund", |v| v["onchain"]["outputs"][0]["role"] == "refunding").await;
    assert_eq!(v["onchain"]["refunds"][0]["inputs"], json!([late]));
    assert_eq!(s.payments_to(REFUND_TO).len(), 1);
    // Then an amount a refund's fee would eat: kept, and recorded as such.
    let dust = s.pay_onchain(&address, 600);
    s.mine(1).await;
    let v = wait_for(&s, &id, "dust", |v| v["onchain"]["outputs"][1]["role"] == "dust").await;
    assert_eq!(v["onchain"]["outputs"][1]["outpoint"], json!(dust));
    assert!(v["events"].to_string().contains("refund_dust_kept"), "{v:#}");
    assert_eq!(s.payments_to(REFUND_TO).len(), 1, "no refund of dust");
    assert!(s.notifications("lsps1_order_state_changed").iter().any(|n| n.to_string().contains("refund_broadcast")));
    s.assert_no_fatal();
}

#[tokio::test]
async fn ruling25_a_payment_reorged_out_before_the_open_waits_again() {
    let s = standin().await;
    let (_, client) = peer(44);
    // The client is away: the paid order waits for it, so the reorg comes before the open.
    let order = create(&s, &client, onchain_params(200_000)).await;
    s.peer_disconnects(&client).await;
    let id = order["order_id"].as_str().unwrap().to_string();
    let oc = &order["payment"]["onchain"];
    let total: u64 = oc["order_total_sat"].as_str().unwrap().parse().unwrap();
    let op = s.pay_onchain(oc["address"].as_str().unwrap(), total);
    s.mine(1).await;
    wait_for(&s, &id, "PAID", |v| onchain_state(v) == "PAID").await;

    // The block with the payment is replaced by two without it.
    s.reorg(1, false).await;
    let v = wait_for(&s, &id, "waiting again", |v| onchain_state(v) == "EXPECT_PAYMENT").await;
    assert_eq!(v["order"]["order_state"], "CREATED");
    assert_eq!(v["onchain"]["outputs"][0]["blockheight"], Value::Null);
    assert!(s.logs().iter().any(|(_, l)| l.contains("left the chain before the open")), "told the operator");

    // Mined again: paid again, and it opens once the client is there.
    s.remine(&op);
    s.mine(1).await;
    wait_for(&s, &id, "PAID again", |v| onchain_state(v) == "PAID").await;
    s.peer_connects(&client).await;
    wait_for(&s, &id, "COMPLETED", |v| v["order"]["order_state"] == "COMPLETED").await;
    assert_eq!(s.calls("fundchannel").len(), 1, "one open");
    assert!(s.payments_to(REFUND_TO).is_empty(), "nothing refunded");
    s.assert_no_fatal();
}

#[tokio::test]
async fn p15_a_lingering_refund_is_rebroadcast_then_replaced_with_a_higher_fee() {
    let s = standin().await;
    let (_, client) = peer(45);
    let order = create(&s, &client, onchain_params(200_000)).await;
    let id = order["order_id"].as_str().unwrap().to_string();
    let op = s.pay_onchain(order["payment"]["onchain"]["address"].as_str().unwrap(), total_of(&order) - 2_000);
    s.mine(1).await;
    wait_for(&s, &id, "seen", |v| v["onchain"]["outputs"][0]["role"] == "seen").await;
    s.hold_mempool(true);
    s.command("lsps1-cancelorder", json!({"order_id": id})).await.unwrap();
    let v = wait_for(&s, &id, "a refund", |v| v["onchain"]["refunds"][0]["state"] == "broadcast").await;
    let first = v["onchain"]["refunds"][0].clone();

    // Sent again on every block while unconfirmed; after 36 blocks, replaced.
    s.mine(35).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.calls("sendpsbt").len() < 36 {
        assert!(tokio::time::Instant::now() < deadline, "rebroadcast each block: {}", s.calls("sendpsbt").len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = admin(&s, &id).await;
    assert_eq!(v["onchain"]["refunds"].as_array().unwrap().len(), 1, "no bump before 36 blocks");
    s.mine(1).await;
    let v = wait_for(&s, &id, "a replacement", |v| v["onchain"]["refunds"].as_array().unwrap().len() == 2).await;
    let second = &v["onchain"]["refunds"][1];
    assert_eq!(second["replaces"], first["txid"]);
    assert_eq!(second["inputs"], json!([op]), "the same input: only one can confirm");
    assert!(second["feerate_perkw"].as_u64() > first["feerate_perkw"].as_u64());
    assert!(second["amount_sat"].as_u64() < first["amount_sat"].as_u64());
    assert_eq!(v["onchain"]["refunds"][0]["state"], "replaced");

    s.hold_mempool(false);
    s.mine(1).await;
    let v = wait_for(&s, &id, "confirmed", |v| v["onchain"]["refunds"][1]["state"] == "confirmed").await;
    assert_eq!(v["onchain"]["outputs"][0]["role"], "refunded");
    let sent = s.payments_to(REFUND_TO);
    assert_eq!(sent.iter().filter(|(_, _, h)| h.is_some()).count(), 1, "one refund mined: {sent:?}");
    s.assert_no_fatal();
}

#[tokio::test]
async fn a_refund_written_before_a_kill_is_sent_after_the_restart_and_never_built_twice() {
    let mut s = standin().await;
    let (_, client) = peer(46);
    let order = create(&s, &client, onchain_params(200_000)).await;
    let id = order["order_id"].as_str().unwrap().to_string();
    s.pay_onchain(order["payment"]["onchain"]["address"].as_str().unwrap(), total_of(&order) - 2_000);
    s.mine(1).await;
    wait_for(&s, &id, "seen", |v| v["onchain"]["outputs"][0]["role"] == "seen").await;
    // The broadcast is lost: lightningd answers nothing useful, then the plugin dies.
    s.push_reply("sendpsbt", crate::standin::Reply::Error { code: -1, message: "bitcoind unreachable".into() });
    s.command("lsps1-cancelorder", json!({"order_id": id})).await.unwrap();
    let v = wait_for(&s, &id, "a signed refund", |v| v["onchain"]["refunds"][0]["state"] == "signed").await;
    let txid = v["onchain"]["refunds"][0]["txid"].clone();
    assert!(s.payments_to(REFUND_TO).is_empty());
    s.restart_lightningd().await;
    let v =
        wait_for(&s, &id, "broadcast after the restart", |v| v["onchain"]["refunds"][0]["state"] == "broadcast").await;
    assert_eq!(v["onchain"]["refunds"].as_array().unwrap().len(), 1, "the same refund, not a new one");
    assert_eq!(v["onchain"]["refunds"][0]["txid"], txid);
    assert_eq!(s.payments_to(REFUND_TO).len(), 1);
    s.assert_no_fatal();
}

#[tokio::test]
async fn off_by_default_and_small_orders_get_lightning_only() {
    let s = StandIn::builder().start().await;
    let (_, client) = peer(47);
    let order = create(&s, &client, onchain_params(200_000)).await;
    assert!(order["payment"].get("onchain").is_none(), "off by default: {order}");
    let info = s.lsps(&client, &req("i", "lsps1.get_info", json!({}))).await;
    assert!(info["result"].get("min_onchain_payment_confirmations").is_none(), "{info}");
    drop(s);

    let s = StandIn::builder()
        .option("lsps1-onchain-payments", json!(true))
        .option("lsps1-min-onchain-payment-size-sat", json!(1_000_000))
        .start()
        .await;
    let order = create(&s, &client, onchain_params(200_000)).await;
    assert!(order["payment"].get("onchain").is_none(), "below the on-chain minimum: {order}");
    // Without a refund address there is no on-chain option either (bLIP-51 payment 3.3).
    let order = create(&s, &client, params(2_000_000, 0, 1)).await;
    assert!(order["payment"].get("onchain").is_none(), "{order}");
    // A refund address of another network is refused on its property.
    let mut p = onchain_params(200_000);
    p["refund_onchain_address"] = json!("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq");
    let r = s.lsps(&client, &req("c", "lsps1.create_order", p)).await;
    assert_eq!(r["error"]["code"], json!(-32602), "{r}");
    assert_eq!(r["error"]["data"]["property"], json!("refund_onchain_address"), "{r}");
}

// ---------------------------------------------------------------------------------------
// The plugin SIGKILLed at every message of the on-chain path (alone, or with the node):
// nothing is lost and nothing is paid twice.

/// Which on-chain path a sweep kills.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// Paid in full, opened, the payment kept.
    Open,
    /// Paid short, cancelled, refunded.
    Refund,
}

/// Run `path` from the payment on (the order exists, the trace or the kill is armed),
/// watching only the stand-in's own state, so that the plugin's messages are the path's
/// alone: returns the sat paid on-chain. A command to a dead plugin is skipped.
async fn run_path(s: &StandIn, order: &Value, path: Path) -> u64 {
    let id = order["order_id"].as_str().unwrap();
    let total = total_of(order);
    let paid = match path {
        Path::Open => total,
        Path::Refund => total - 2_000,
    };
    s.pay_onchain(order["payment"]["onchain"]["address"].as_str().unwrap(), paid);
    s.mine(1).await;
    let until = async |done: &dyn Fn() -> bool| {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !s.killed() && !done() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    match path {
        Path::Open => until(&|| !s.channels().is_empty()).await,
        Path::Refund => {
            until(&|| !s.calls("reserveinputs").is_empty()).await;
            if !s.killed() {
                let _ = s.try_request("lsps1-cancelorder", json!({"order_id": id})).await;
                until(&|| !s.payments_to(REFUND_TO).is_empty()).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    paid
}

async fn onchain_fresh(client: &bitcoin::secp256k1::PublicKey) -> (StandIn, Value) {
    let s = standin().await;
    s.wait_log(Some("info"), "serving LSPS1 on regtest").await;
    s.peer_connects(client).await;
    let order = create(&s, client, onchain_params(200_000)).await;
    (s, order)
}

/// One run of `path`, killed after the plugin's `k`-th message; then lightningd restarts,
/// blocks come, and the end is checked. Returns how it ended.
async fn onchain_kill_case(path: Path, k: usize, node_crash: bool) -> String {
    let (_, client) = peer(49);
    let (mut s, order) = onchain_fresh(&client).await;
    let id = order["order_id"].as_str().unwrap().to_string();
    s.kill_at_event(k, node_crash);
    let paid = run_path(&s, &order, path).await;
    let what = format!("{path:?} kill at {k} (node crash: {node_crash})");
    if s.killed() {
        s.kill_plugin().await;
        s.restart_lightningd().await;
        s.peer_connects(&client).await;
    }
    // The kill point may come late (message order varies a little between runs): once
    // it has hit, whenever that was, lightningd restarts.
    let mut restarted = s.killed();
    let mut view = async |s: &mut StandIn| -> Value {
        loop {
            match s.try_request("lsps1-getorder", json!({"order_id": id})).await {
                Ok(v) => return v["result"].clone(),
                Err(_) if s.killed() && !restarted => {
                    restarted = true;
                    s.kill_plugin().await;
                    s.restart_lightningd().await;
                    s.peer_connects(&client).await;
                }
                Err(e) => panic!("lsps1-getorder: {e}"),
            }
        }
    };
    if let Path::Refund = path {
        // The operator's cancel may have died with the plugin: ask again.
        let v = view(&mut s).await;
        if v["phase"] == "awaiting_payment" {
            let r = s.try_request("lsps1-cancelorder", json!({"order_id": id})).await;
            assert!(r.is_ok(), "cancel after the restart: {r:?}");
        }
    }
    // Blocks: payments count, refunds go out and are mined.
    let mut ended = String::new();
    'blocks: for _ in 0..20 {
        s.mine(1).await;
        for _ in 0..20 {
            let v = view(&mut s).await;
            let outs = v["onchain"]["outputs"].as_array().cloned().unwrap_or_default();
            if !outs.is_empty() && outs.iter().all(|o| matches!(o["role"].as_str(), Some("kept" | "refunded"))) {
                ended = format!("{} / {}", v["order"]["order_state"], onchain_state(&v));
                break 'blocks;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    assert!(!ended.is_empty(), "{what}: never settled: {:#}", admin(&s, &id).await);
    let mined: Vec<_> = s.payments_to(REFUND_TO).into_iter().filter(|(_, _, h)| h.is_some()).collect();
    let fundings = s.calls("fundchannel").len();
    match path {
        // Either the channel opened on the payment (and nothing went back), or no channel
        // came of it (killed before fundchannel went out: an open found unfinished at start
        // is never retried, ruling 17) and the payment went back whole, once.
        Path::Open if ended == r#""COMPLETED" / PAID"# => {
            assert!(fundings >= 1 && s.channels().len() == 1, "{what}: one channel ({fundings} fundchannel calls)");
            assert!(mined.is_empty(), "{what}: nothing refunded: {mined:?}");
        }
        Path::Open => {
            assert_eq!(ended, r#""FAILED" / REFUNDED"#, "{what}: {:#}", admin(&s, &id).await["events"]);
            assert!(s.channels().is_empty(), "{what}: no channel");
            assert_eq!(mined.len(), 1, "{what}: exactly one refund mined: {mined:?}");
            assert!(mined[0].1 < paid && mined[0].1 > paid - 5_000, "{what}: {mined:?}");
        }
        Path::Refund => {
            assert_eq!(ended, r#""FAILED" / REFUNDED"#, "{what}");
            assert_eq!(mined.len(), 1, "{what}: exactly one refund mined: {mined:?}");
            assert!(mined[0].1 < paid && mined[0].1 > paid - 5_000, "{what}: {mined:?}");
            assert!(s.channels().is_empty(), "{what}: no channel");
        }
    }
    s.assert_no_fatal();
    ended
}

async fn onchain_sweep(path: Path) {
    let (_, client) = peer(49);
    let (s, order) = onchain_fresh(&client).await;
    s.trace_events();
    run_path(&s, &order, path).await;
    let trace = s.events();
    drop(s);
    let n = trace
        .len()
        .min(std::env::var("LSPS1_FAULT_KILL_POINTS").ok().and_then(|v| v.parse().ok()).unwrap_or(usize::MAX));
    for k in 1..=n {
        let alone = onchain_kill_case(path, k, false).await;
        let crash = onchain_kill_case(path, k, true).await;
        let event: String = trace[k - 1].chars().take(50).collect();
        println!("  {k:2} {event:<50} plugin killed: {alone:<24} node crash: {crash}");
    }
    println!("{path:?}: {} messages on the on-chain path, {} kill points tried", trace.len(), 2 * n);
}

#[tokio::test]
async fn killed_at_every_message_of_an_onchain_purchase() {
    onchain_sweep(Path::Open).await;
}

#[tokio::test]
async fn killed_at_every_message_of_an_onchain_refund() {
    onchain_sweep(Path::Refund).await;
}

#[tokio::test]
async fn ruling26_a_funding_near_its_deadline_is_bumped_by_a_child_paying_for_the_package() {
    // Any order, however paid: here one paid by Lightning.
    let s = StandIn::builder().start().await;
    let (_, client) = peer(50);
    s.peer_connects(&client).await;
    let order = create(&s, &client, params(200_000, 0, 1)).await;
    let id = order["order_id"].as_str().unwrap().to_string();
    s.hold_fundings(true);
    let pay = pay_of(&order);
    let h = s.send_htlc(part(&s, &pay, pay.amount_msat, "103x1x0")).await;
    assert!(h.outcome(WAIT).await.is_settled());
    let funded_at = s.height();
    let funding = s.calls("fundchannel");
    assert_eq!(funding.len(), 1);
    // funding_confirms_within_blocks 6: the deadline is 6 blocks on; nothing before the
    // last two.
    s.mine(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.calls("withdraw").is_empty(), "no bump 3 blocks before the deadline");
    s.mine(1).await;
    let v = wait_for(&s, &id, "a bump", |v| v["events"].to_string().contains("funding_bumped")).await;
    let w = s.calls("withdraw");
    assert_eq!(w.len(), 1, "{w:?}");
    let outpoint = v["order"]["channel"]["funding_outpoint"].as_str().unwrap().to_string();
    let (txid, _) = outpoint.split_once(':').unwrap();
    assert_eq!(w[0]["utxos"], json!([format!("{txid}:1")]), "the funding's change");
    assert_eq!(w[0]["minconf"], json!(0));
    // The fixture's 2-block estimate (15,000 perkw) for parent and child together: the child
    // pays more than the package rate.
    let rate: u32 = w[0]["feerate"].as_str().unwrap().trim_end_matches("perkw").parse().unwrap();
    assert!(rate > 15_000, "{rate}");
    assert_eq!(s.height(), funded_at + 4);
    // Mined: watched no more, bumped once.
    s.hold_fundings(false);
    s.mine(1).await;
    wait_for(&s, &id, "confirmed", |v| v["events"].to_string().contains("funding_confirmed")).await;
    s.mine(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.calls("withdraw").len(), 1);
    s.assert_no_fatal();
}
