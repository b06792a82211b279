//! The service against an in-memory node, a fixed clock and counting entropy.

use std::collections::HashMap;
use std::sync::Mutex;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use serde_json::{Value, json};

use super::*;
use crate::clock::{CountingEntropy, FixedClock};
use crate::config::Config;
use crate::lsps0::codes;
use crate::lsps1::invoice::tests::resign;
use crate::ports::{FeeEstimates, NodeApi, NodeError, WalletFunds};

pub(crate) struct MockNode {
    pub key: SecretKey,
    pub fees: Mutex<Result<FeeEstimates, NodeError>>,
    pub funds: Mutex<Result<WalletFunds, NodeError>>,
    pub features: Mutex<HashMap<PublicKey, String>>,
    pub sign_fails: Mutex<bool>,
    pub sent: Mutex<Vec<(PublicKey, String)>>,
}

impl MockNode {
    pub(crate) fn new() -> Self {
        MockNode {
            key: SecretKey::from_slice(&[0x21; 32]).unwrap(),
            fees: Mutex::new(Ok(FeeEstimates {
                estimates: vec![(2, 15_000), (6, 11_000), (12, 7_500), (100, 3_750)],
                unilateral_close_perkw: Some(11_000),
                opening_perkw: Some(7_500),
                floor_perkw: 253,
            })),
            funds: Mutex::new(Ok(WalletFunds { confirmed_sat: 10_000_000 })),
            features: Mutex::new(HashMap::new()),
            sign_fails: Mutex::new(false),
            sent: Mutex::new(vec![]),
        }
    }

    pub(crate) fn id(&self) -> PublicKey {
        PublicKey::from_secret_key(&Secp256k1::new(), &self.key)
    }
}

impl crate::ports::WalletApi for MockNode {}

impl NodeApi for MockNode {
    async fn send_custom_message(&self, peer: PublicKey, msg_hex: String) -> Result<(), NodeError> {
        self.sent.lock().unwrap().push((peer, msg_hex));
        Ok(())
    }
    async fn sign_invoice(&self, invoice: String) -> Result<String, NodeError> {
        if *self.sign_fails.lock().unwrap() {
            return Err(NodeError::new("signinvoice", Some(-32602), "Unparsable invoice"));
        }
        Ok(resign(&invoice, &self.key))
    }
    async fn peer_features(&self, peer: PublicKey) -> Result<Option<String>, NodeError> {
        Ok(self.features.lock().unwrap().get(&peer).cloned())
    }
    async fn fee_estimates(&self) -> Result<FeeEstimates, NodeError> {
        self.fees.lock().unwrap().clone()
    }
    async fn wallet_funds(&self) -> Result<WalletFunds, NodeError> {
        self.funds.lock().unwrap().clone()
    }
}

const T0: i64 = 1_795_506_588_123;

type TestService = Service<MockNode, FixedClock, CountingEntropy>;

fn service_with(cfg: Config, node: MockNode) -> TestService {
    let info = NodeInfo { id: node.id(), network: bitcoin::Network::Regtest, emergency_reserve_sat: 25_000 };
    Service::new(cfg, info, Store::open_in_memory().unwrap(), node, FixedClock::new(T0), CountingEntropy::default())
}

fn service() -> TestService {
    service_with(Config::default(), MockNode::new())
}

fn peer(n: u8) -> PublicKey {
    PublicKey::from_secret_key(&Secp256k1::new(), &SecretKey::from_slice(&[n; 32]).unwrap())
}

fn order_params() -> Map<String, Value> {
    json!({
        "lsp_balance_sat": "1000000", "client_balance_sat": "0",
        "required_channel_confirmations": 0, "funding_confirms_within_blocks": 6,
        "channel_expiry_blocks": 13140, "token": "", "refund_onchain_address": "",
        "announce_channel": false,
        "client_info": {"app": "ZEUS", "app_version": "v0.12.0"}
    })
    .as_object()
    .unwrap()
    .clone()
}

async fn call(s: &TestService, from: PublicKey, request: Value) -> Value {
    serde_json::from_slice(&s.handle_payload(from, request.to_string().as_bytes()).await.unwrap()).unwrap()
}

#[tokio::test]
async fn t18_list_protocols() {
    let s = service();
    let r = call(&s, peer(1), json!({"jsonrpc":"2.0","id":"x","method":"lsps0.list_protocols","params":{}})).await;
    assert_eq!(r, json!({"jsonrpc":"2.0","id":"x","result":{"protocols":[1]}}));
    let r = call(&s, peer(1), json!({"jsonrpc":"2.0","id":"y","method":"lsps0.list_protocols","params":{"x":1}})).await;
    assert_eq!(r["error"]["code"], json!(-32602));
    assert_eq!(r["error"]["data"]["unrecognized"], json!(["x"]));
}

#[tokio::test]
async fn t09_unknown_method_echoes_id() {
    let r = call(&service(), peer(1), json!({"jsonrpc":"2.0","id":"abc","method":"lsps9.foo","params":{}})).await;
    assert_eq!(r["id"], json!("abc"));
    assert_eq!(r["error"]["code"], json!(-32601));
}

#[tokio::test]
async fn g01_get_info_caps_maxima_by_funds() {
    let s = service();
    let r = call(&s, peer(1), json!({"jsonrpc":"2.0","id":"1","method":"lsps1.get_info","params":{}})).await;
    let info = &r["result"];
    // 10,000,000 confirmed − 25,000 emergency reserve − 702 WU × 11,000 perkw (7,722) = 9,967,278.
    assert_eq!(info["max_initial_lsp_balance_sat"], json!("9967278"));
    assert_eq!(info["max_channel_balance_sat"], json!("9967278"));
    assert_eq!(info["min_initial_lsp_balance_sat"], json!("100000"));
    assert_eq!(info["max_channel_expiry_blocks"], json!(13140));
    assert_eq!(info.as_object().unwrap().len(), 10);
    // An empty wallet never pushes a maximum below its minimum (G-02).
    *s.node().funds.lock().unwrap() = Ok(WalletFunds { confirmed_sat: 0 });
    s.refresh_market().await.unwrap();
    let info = s.get_info().await.unwrap();
    assert_eq!(info.max_initial_lsp_balance_sat, 100_000);
    assert_eq!(info.max_channel_balance_sat, 100_000);
}

#[tokio::test]
async fn create_then_get_order() {
    let s = service();
    let client = peer(1);
    let o = s.create_order(Some(client), Transport::P2p, &order_params()).await.unwrap();
    // C-17, C-18, C-19: mirrors, CREATED, null channel, UUIDv4 id, "" token.
    assert_eq!(o.order_id.len(), 36);
    assert_eq!(uuid::Uuid::parse_str(&o.order_id).unwrap().get_version_num(), 4);
    assert_eq!((o.lsp_balance_sat, o.client_balance_sat, o.channel_expiry_blocks), (1_000_000, 0, 13_140));
    assert_eq!((o.required_channel_confirmations, o.funding_confirms_within_blocks, o.announce_channel), (0, 6, false));
    assert_eq!(o.token.as_deref(), Some(""));
    assert_eq!(o.order_state, crate::order::OrderState::Created);
    assert_eq!(o.created_at, "2026-11-24T07:49:48.123Z");
    assert!(o.channel.is_none());
    let b = o.payment.bolt11.as_ref().unwrap();
    // Pricing: 1000 base + ceil(1e6 × 20,000 × 13,140 / 52.56e9) = 5,000 + 702 × 11,000 / 1000 = 7,722.
    assert_eq!((b.fee_total_sat, b.order_total_sat), (13_722, 13_722));
    assert_eq!(b.expires_at, "2026-11-24T08:49:48.000Z");
    // P-02: the invoice is for the total, signed by the node, expiring with the option.
    let inv: lightning_invoice::Bolt11Invoice = b.invoice.parse().unwrap();
    assert_eq!(inv.amount_milli_satoshis(), Some(13_722_000));
    assert_eq!(inv.recover_payee_pub_key(), s.node().id());
    assert_eq!(inv.duration_since_epoch().as_secs() + inv.expiry_time().as_secs(), 1_795_510_188);
    assert_eq!(inv.min_final_cltv_expiry_delta(), 144);
    match inv.description() {
        lightning_invoice::Bolt11InvoiceDescriptionRef::Direct(d) => assert!(d.to_string().contains(&o.order_id)),
        _ => panic!("direct description expected"),
    }
    // The preimage is kept, and matches the invoice's hash.
    let rec = s.store().get_order(&o.order_id).unwrap().unwrap();
    let pre: [u8; 32] = hex::decode(&rec.bolt11.as_ref().unwrap().preimage).unwrap().try_into().unwrap();
    assert_eq!(crate::lsps1::invoice::payment_hash_of(&pre), inv.payment_hash().to_byte_array());
    assert_eq!(rec.client_info.unwrap()["app"], json!("ZEUS"));

    // R-01, R-04: get_order answers the same object, twice identically.
    let params = json!({"order_id": o.order_id}).as_object().unwrap().clone();
    let g1 = s.get_order(Some(client), &params).await.unwrap();
    assert_eq!(g1, o);
    assert_eq!(s.get_order(Some(client), &params).await.unwrap(), g1);
    // Ruling 8: another peer gets 101.
    assert_eq!(s.get_order(Some(peer(2)), &params).await.unwrap_err().code, codes::NOT_FOUND);
    // C-20: not idempotent.
    let o2 = s.create_order(Some(client), Transport::P2p, &order_params()).await.unwrap();
    assert_ne!(o2.order_id, o.order_id);
    assert_ne!(o2.payment.bolt11.unwrap().invoice, b.invoice);
}

#[tokio::test]
async fn r02_r03_get_order_errors() {
    let s = service();
    let p = |v: Value| v.as_object().unwrap().clone();
    let e =
        s.get_order(Some(peer(1)), &p(json!({"order_id": "00000000-0000-4000-8000-000000000000"}))).await.unwrap_err();
    assert_eq!(e.code, 101);
    for bad in [json!({}), json!({"order_id": 5}), json!({"order_id": ""}), json!({"order_id": "x".repeat(65)})] {
        let e = s.get_order(Some(peer(1)), &p(bad.clone())).await.unwrap_err();
        assert_eq!((e.code, e.property()), (-32602, Some("order_id")), "{bad}");
    }
    let e = s.get_order(Some(peer(1)), &p(json!({"order_id": "a", "extra": 1}))).await.unwrap_err();
    assert_eq!(e.data.unwrap()["unrecognized"], json!(["extra"]));
}

#[tokio::test]
async fn expired_order_reads_failed_and_refunded() {
    let s = service();
    let o = s.create_order(Some(peer(1)), Transport::P2p, &order_params()).await.unwrap();
    let params = json!({"order_id": o.order_id}).as_object().unwrap().clone();
    s.clock.advance(3_600_000);
    let g = s.get_order(Some(peer(1)), &params).await.unwrap();
    assert_eq!(g.order_state, crate::order::OrderState::Failed);
    assert_eq!(g.payment.bolt11.unwrap().state, crate::order::PaymentState::Refunded);
    assert!(s.store().expire_unpaid(i64::MAX / 2).unwrap().is_empty(), "already expired by the read");
}

#[tokio::test]
async fn get_order_answers_are_reused_only_while_they_hold() {
    // answers are cached by Store::generation and the order's own deadline.
    use crate::order::{Event, Phase};
    use crate::order::{OrderState, PaymentState};
    let s = service();
    let params = |id: &str| json!({"order_id": id}).as_object().unwrap().clone();
    let a = s.create_order(Some(peer(1)), Transport::P2p, &order_params()).await.unwrap();
    let state = |o: &crate::lsps1::msgs::OrderResponse| (o.order_state, o.payment.bolt11.as_ref().unwrap().state);
    let g = s.get_order(Some(peer(1)), &params(&a.order_id)).await.unwrap();
    assert_eq!(state(&g), (OrderState::Created, PaymentState::ExpectPayment));
    // A cached answer is still only for its own client (ruling 8).
    assert_eq!(s.get_order(Some(peer(2)), &params(&a.order_id)).await.unwrap_err().code, codes::NOT_FOUND);
    // Any write: the next read sees it.
    s.store()
        .transition(
            &a.order_id,
            Phase::AwaitingPayment,
            Event::PaymentHeld(crate::order::PaymentMethod::Bolt11),
            0,
            None,
        )
        .unwrap();
    let g = s.get_order(Some(peer(1)), &params(&a.order_id)).await.unwrap();
    assert_eq!(state(&g), (OrderState::Created, PaymentState::Hold));
    // No write, but the deadline of an unpaid order passes: it reads expired.
    let b = s.create_order(Some(peer(1)), Transport::P2p, &order_params()).await.unwrap();
    s.get_order(Some(peer(1)), &params(&b.order_id)).await.unwrap();
    s.clock.advance(3_600_000);
    let g = s.get_order(Some(peer(1)), &params(&b.order_id)).await.unwrap();
    assert_eq!(state(&g), (OrderState::Failed, PaymentState::Refunded));
}

#[tokio::test]
async fn c14_denied_and_quota() {
    let mut cfg = Config::default();
    cfg.deny_nodes.insert(peer(9));
    cfg.max_unpaid_orders_per_peer = 2;
    let s = service_with(cfg, MockNode::new());
    let e = s.create_order(Some(peer(9)), Transport::P2p, &order_params()).await.unwrap_err();
    assert_eq!(e.code, 1);
    assert!(e.data.unwrap()["message"].is_string());
    let small = {
        let mut p = order_params();
        p.insert("lsp_balance_sat".into(), json!("200000"));
        p
    };
    s.create_order(Some(peer(1)), Transport::P2p, &small).await.unwrap();
    s.create_order(Some(peer(1)), Transport::P2p, &small).await.unwrap();
    assert_eq!(s.create_order(Some(peer(1)), Transport::P2p, &small).await.unwrap_err().code, 1);
    assert!(s.create_order(Some(peer(2)), Transport::P2p, &small).await.is_ok(), "quota is per peer");
}

#[tokio::test]
async fn funds_are_reserved_by_orders_in_flight() {
    use crate::order::{Event, PaymentMethod};
    let s = service();
    let mut p = order_params();
    p.insert("lsp_balance_sat".into(), json!("6000000"));
    let first = s.create_order(Some(peer(1)), Transport::P2p, &p).await.unwrap();
    // Unpaid, it holds nothing back: a second client may order the same funds.
    let second = s.create_order(Some(peer(2)), Transport::P2p, &p).await.unwrap();
    // Once the first is paid (held), its channel's funds are reserved.
    s.store()
        .transition(&first.order_id, Phase::AwaitingPayment, Event::PaymentHeld(PaymentMethod::Bolt11), T0, None)
        .unwrap();
    // 9,975,000 fundable − 6,007,722 reserved: a third 6M order no longer fits.
    let e = s.create_order(Some(peer(3)), Transport::P2p, &p).await.unwrap_err();
    assert_eq!((e.code, e.property()), (100, Some("max_initial_lsp_balance_sat")));
    // get_info already says so.
    let info = s.get_info().await.unwrap();
    assert_eq!(info.max_initial_lsp_balance_sat, 9_975_000 - 6_007_722 - 7_722);
    // The held order's payment reads HOLD; the unpaid one is untouched.
    let g = s.get_order(Some(peer(1)), json!({"order_id": first.order_id}).as_object().unwrap()).await.unwrap();
    assert_eq!(g.payment.bolt11.unwrap().state, crate::order::PaymentState::Hold);
    let g = s.get_order(Some(peer(2)), json!({"order_id": second.order_id}).as_object().unwrap()).await.unwrap();
    assert_eq!(g.payment.bolt11.unwrap().state, crate::order::PaymentState::ExpectPayment);
}

#[tokio::test]
async fn a_peer_over_its_quota_costs_no_invoice_signing() {
    let cfg = Config { max_unpaid_orders_per_peer: 1, ..Default::default() };
    let s = service_with(cfg, MockNode::new());
    s.create_order(Some(peer(1)), Transport::P2p, &order_params()).await.unwrap();
    *s.node().sign_fails.lock().unwrap() = true; // a sign attempt would now show as -32603
    assert_eq!(s.create_order(Some(peer(1)), Transport::P2p, &order_params()).await.unwrap_err().code, 1);
}

#[tokio::test]
async fn commitment_fee_and_reserve_must_fit_on_the_lsp_side() {
    let mut cfg = Config::default();
    cfg.options.min_initial_lsp_balance_sat = 10_000;
    cfg.options.max_initial_client_balance_sat = 1_000_000;
    let s = service_with(cfg, MockNode::new());
    // Bitkit #1856: client 100k / LSP 10k.
    let mut p = order_params();
    p.insert("lsp_balance_sat".into(), json!("10000"));
    p.insert("client_balance_sat".into(), json!("100000"));
    let e = s.create_order(Some(peer(1)), Transport::P2p, &p).await.unwrap_err();
    assert_eq!((e.code, e.property()), (100, Some("min_initial_lsp_balance_sat")));
    assert!(e.data.unwrap()["message"].as_str().unwrap().contains("commitment fee"));
    p.insert("lsp_balance_sat".into(), json!("50000"));
    let o = s.create_order(Some(peer(1)), Transport::P2p, &p).await.unwrap();
    let b = o.payment.bolt11.unwrap();
    assert_eq!(b.order_total_sat, b.fee_total_sat + 100_000, "P-01");
}

#[tokio::test]
async fn large_channels_need_the_peer_to_support_them() {
    let mut cfg = Config::default();
    cfg.options.max_initial_lsp_balance_sat = 50_000_000;
    cfg.options.max_channel_balance_sat = 50_000_000;
    let node = MockNode::new();
    *node.funds.lock().unwrap() = Ok(WalletFunds { confirmed_sat: 100_000_000 });
    node.features.lock().unwrap().insert(peer(2), "080000".into()); // bit 19
    node.features.lock().unwrap().insert(peer(3), "800898880a8a59a1".into()); // recorded, bit 19 set
    node.features.lock().unwrap().insert(peer(1), "02".into());
    let s = service_with(cfg, node);
    let mut p = order_params();
    p.insert("lsp_balance_sat".into(), json!("20000000"));
    let e = s.create_order(Some(peer(1)), Transport::P2p, &p).await.unwrap_err();
    assert_eq!((e.code, e.property()), (100, Some("max_channel_balance_sat")));
    assert!(s.create_order(Some(peer(2)), Transport::P2p, &p).await.is_ok());
    assert!(s.create_order(Some(peer(3)), Transport::P2p, &p).await.is_ok());
}

#[tokio::test]
async fn node_failures_answer_internal_error_and_store_nothing() {
    let node = MockNode::new();
    *node.sign_fails.lock().unwrap() = true;
    let s = service_with(Config::default(), node);
    let e = s.create_order(Some(peer(1)), Transport::P2p, &order_params()).await.unwrap_err();
    assert_eq!(e.code, -32603);
    assert!(s.store().list_orders(&Default::default()).unwrap().is_empty());

    let node = MockNode::new();
    *node.fees.lock().unwrap() = Err(NodeError::new("feerates", None, "down"));
    let s = service_with(Config::default(), node);
    assert_eq!(s.create_order(Some(peer(1)), Transport::P2p, &order_params()).await.unwrap_err().code, -32603);
}

#[tokio::test]
async fn a_stale_wallet_snapshot_is_refreshed_by_the_request() {
    let node = MockNode::new();
    *node.funds.lock().unwrap() = Ok(WalletFunds { confirmed_sat: 0 });
    let s = service_with(Config::default(), node);
    s.refresh_market().await.unwrap();
    assert_eq!(s.create_order(Some(peer(1)), Transport::P2p, &order_params()).await.unwrap_err().code, 100);
    // The wallet is funded; the snapshot is still fresh, so the old answer stands...
    *s.node().funds.lock().unwrap() = Ok(WalletFunds { confirmed_sat: 10_000_000 });
    assert_eq!(s.create_order(Some(peer(1)), Transport::P2p, &order_params()).await.unwrap_err().code, 100);
    // ...until it is older than MARKET_MAX_AGE_MS: then the request refreshes it.
    s.clock.advance(MARKET_MAX_AGE_MS + 1);
    assert!(s.create_order(Some(peer(1)), Transport::P2p, &order_params()).await.is_ok());
}

#[tokio::test]
async fn regtest_without_fee_estimates_uses_the_floor() {
    let node = MockNode::new();
    *node.fees.lock().unwrap() = Ok(FeeEstimates { floor_perkw: 253, ..Default::default() });
    let s = service_with(Config::default(), node);
    let o = s.create_order(Some(peer(1)), Transport::P2p, &order_params()).await.unwrap();
    // 1000 base + 5000 lease + ceil(253 × 702 / 1000) = 178.
    assert_eq!(o.payment.bolt11.unwrap().fee_total_sat, 6_178);
}

#[tokio::test]
async fn a_failed_store_write_answers_internal_error_and_leaves_nothing() {
    let s = service();
    // The order row goes in first, then its payment: make the second insert fail.
    s.store()
        .exec_for_test(
            "CREATE TRIGGER no_payments BEFORE INSERT ON payments BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        )
        .unwrap();
    let e = s.create_order(Some(peer(1)), Transport::P2p, &order_params()).await.unwrap_err();
    assert_eq!(e.code, codes::INTERNAL_ERROR);
    assert!(s.store().list_orders(&Default::default()).unwrap().is_empty(), "no half-written order");
    assert_eq!(s.store().reserved_sat().unwrap(), 0);
}

#[tokio::test]
async fn c13_token_is_mirrored() {
    let mut cfg = Config::default();
    cfg.tokens.insert("promo".into());
    let s = service_with(cfg, MockNode::new());
    let mut p = order_params();
    p.insert("token".into(), json!("promo"));
    assert_eq!(s.create_order(Some(peer(1)), Transport::P2p, &p).await.unwrap().token.as_deref(), Some("promo"));
    p.insert("token".into(), json!("other"));
    assert_eq!(s.create_order(Some(peer(1)), Transport::P2p, &p).await.unwrap_err().code, 102);
}

#[tokio::test]
async fn c21_responses_fit_and_bad_messages_get_parse_errors() {
    let s = service();
    let long_id = "i".repeat(crate::lsps0::jsonrpc::MAX_ID_LEN);
    let mut params = order_params();
    params.insert("client_info".into(), json!({"app": "x".repeat(2000)}));
    let r = s
        .handle_payload(
            peer(1),
            json!({"jsonrpc":"2.0","id":long_id,"method":"lsps1.create_order","params":params}).to_string().as_bytes(),
        )
        .await
        .unwrap();
    assert!(r.len() <= MAX_PAYLOAD_LEN);
    let v: Value = serde_json::from_slice(&r).unwrap();
    assert!(v.get("result").is_some(), "{v}");
    let r: Value = serde_json::from_slice(&s.handle_payload(peer(1), b"{oops").await.unwrap()).unwrap();
    assert_eq!((r["id"].clone(), r["error"]["code"].clone()), (Value::Null, json!(-32700)));
}

#[test]
fn t20_channel_object_encoding() {
    let mut r = crate::store::tests::record("o", "p", T0);
    r.phase = Phase::Completed;
    r.paid_method = Some(crate::order::PaymentMethod::Bolt11);
    r.channel = Some(crate::store::ChannelRecord {
        channel_id: None,
        funding_txid: "0301E0480B374B32851A9462DB29DC19FE830A7F7D7A88B81612B9D42099C0AE".into(),
        funding_outnum: 1,
        funded_at_ms: T0,
        expires_at_ms: T0 + 13_140 * 600_000,
        lease_end_block: Some(900),
    });
    let v = serde_json::to_value(order_response(&r)).unwrap();
    assert_eq!(v["order_state"], json!("COMPLETED"));
    assert_eq!(v["payment"]["bolt11"]["state"], json!("PAID"));
    assert_eq!(
        v["channel"]["funding_outpoint"],
        json!("0301e0480b374b32851a9462db29dc19fe830a7f7d7a88b81612b9d42099c0ae:1")
    );
    assert_eq!(v["channel"]["funded_at"], json!("2026-11-24T07:49:48.123Z"));
    assert_eq!(v["channel"]["expires_at"], json!("2027-02-23T13:49:48.123Z"));
    // LDK's types read it (its ChannelInfo wants a real outpoint and RFC 3339 times).
    let ldk: lightning_liquidity::lsps1::msgs::LSPS1ChannelInfo = serde_json::from_value(v["channel"].clone()).unwrap();
    assert_eq!(ldk.funding_outpoint.vout, 1);
}

#[tokio::test]
async fn a_refused_payload_gets_the_answer_its_kind_calls_for() {
    let s = service();
    let busy = || RpcError::client_rejected("busy");
    let r: Value = serde_json::from_slice(
        &s.refuse(peer(1), br#"{"jsonrpc":"2.0","id":"q","method":"lsps1.get_info"}"#, busy()).await.unwrap(),
    )
    .unwrap();
    assert_eq!((r["id"].clone(), r["error"]["code"].clone()), (json!("q"), json!(1)), "a request: error 1");
    let r: Value = serde_json::from_slice(&s.refuse(peer(1), b"nonsense", busy()).await.unwrap()).unwrap();
    assert_eq!((r["id"].clone(), r["error"]["code"].clone()), (Value::Null, json!(-32700)), "bad format: -32700");
    let e = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}"#;
    assert!(s.refuse(peer(1), e, busy()).await.is_none(), "a client's error response: nothing");
}
