//! LSPS1 over custom messages, end to end (bLIP-51, G-/C-/R-/P- items).

use std::time::{Duration, Instant};

use lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescriptionRef};
use serde_json::{Value, json};

use crate::standin::{Reply, StandIn, peer, req};

/// The exact ZEUS request (docs/interop.md) (strings for sats, "" token and refund
/// address, client_info), as ZEUS also sends it over P2P.
pub fn zeus_params() -> Value {
    json!({
        "lsp_balance_sat": "1000000",
        "client_balance_sat": "0",
        "required_channel_confirmations": 8,
        "funding_confirms_within_blocks": 6,
        "channel_expiry_blocks": 13000,
        "token": "",
        "refund_onchain_address": "",
        "announce_channel": false,
        "client_info": {"app": "ZEUS", "app_version": "v0.12.0", "node": "Core Lightning", "node_version": "v26.06"}
    })
}

fn order_fields_mirror(order: &Value, params: &Value) {
    for k in [
        "lsp_balance_sat",
        "client_balance_sat",
        "required_channel_confirmations",
        "funding_confirms_within_blocks",
        "channel_expiry_blocks",
        "announce_channel",
    ] {
        assert_eq!(order[k], params[k], "C-19: {k} mirrored");
    }
}

#[tokio::test]
async fn g01_get_info_over_custom_messages() {
    let s = StandIn::builder().start().await;
    let (_, p) = peer(1);
    let r = s.lsps(&p, &req("gi", "lsps1.get_info", json!({}))).await;
    let info = r["result"].as_object().expect("result object");
    assert_eq!(info.len(), 10);
    for k in ["min_required_channel_confirmations", "min_funding_confirms_within_blocks", "max_channel_expiry_blocks"] {
        assert!(info[k].is_u64(), "G-03: {k} is a JSON integer");
    }
    assert!(info["supports_zero_channel_reserve"].is_boolean());
    for k in info.keys().filter(|k| k.ends_with("_sat")) {
        assert!(info[k].is_string(), "G-03: {k} is a string");
    }
    // The recorded wallet holds 10,000,000 sat; minus the 25,000 sat emergency reserve and
    // the funding fee at the 6-block estimate (702 WU × 11,000 perkw = 7,722).
    assert_eq!(info["max_initial_lsp_balance_sat"], json!("9967278"));
    let r = s.lsps(&p, &req("gi2", "lsps1.get_info", json!({"x": 1}))).await;
    assert_eq!(r["error"]["data"]["unrecognized"], json!(["x"]), "G-01");
}

#[tokio::test]
async fn create_order_get_order_round_trip_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("regtest");
    std::fs::create_dir(&net).unwrap();
    let s = StandIn::builder().dir(&net).start().await;
    let (_, client) = peer(1);
    let params = zeus_params();

    let started = Instant::now();
    let r = s.lsps(&client, &req("co-1", "lsps1.create_order", params.clone())).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "create_order answered in {took:?}");
    assert_eq!(r["id"], json!("co-1"));
    let order = r["result"].clone();
    assert!(order.is_object(), "{r}");
    order_fields_mirror(&order, &params);
    assert_eq!(order["token"], json!(""), "C-19");
    assert_eq!(order["order_state"], json!("CREATED"), "C-17");
    assert_eq!(order["channel"], Value::Null, "C-17");
    let created_at = order["created_at"].as_str().unwrap();
    assert_eq!(created_at.len(), 24, "YYYY-MM-DDThh:mm:ss.uuuZ: {created_at}");
    assert!(created_at.ends_with('Z') && created_at.as_bytes()[19] == b'.');
    let order_id = order["order_id"].as_str().unwrap().to_string();
    assert!(order_id.len() <= 64, "C-18");
    assert_eq!(uuid::Uuid::parse_str(&order_id).unwrap().get_version_num(), 4, "C-18");
    assert!(order["payment"].get("onchain").is_none(), "C-15");

    // P-01, P-02, P-04: the BOLT11 option and its invoice.
    let b = &order["payment"]["bolt11"];
    assert_eq!(b["state"], json!("EXPECT_PAYMENT"));
    let fee: u64 = b["fee_total_sat"].as_str().unwrap().parse().unwrap();
    let total: u64 = b["order_total_sat"].as_str().unwrap().parse().unwrap();
    assert_eq!(total, fee, "client_balance_sat is 0");
    // 1000 base + 1e6 × 20,000 × 13,000 / 52.56e9 = 4,946.7 → 4,947 + 7,722 on-chain.
    assert_eq!(fee, 1_000 + 4_947 + 7_722);
    let inv_str = b["invoice"].as_str().unwrap();
    assert!(inv_str.len() <= 2048);
    let inv: Bolt11Invoice = inv_str.parse().expect("invoice decodes");
    assert_eq!(inv.amount_milli_satoshis(), Some(total * 1000));
    assert_eq!(inv.recover_payee_pub_key(), s.node_id, "signed by the node via signinvoice");
    assert!(inv.check_signature().is_ok());
    let expires_ms =
        chrono::DateTime::parse_from_rfc3339(b["expires_at"].as_str().unwrap()).unwrap().timestamp_millis();
    assert_eq!(
        ((inv.duration_since_epoch() + inv.expiry_time()).as_millis()) as i64,
        expires_ms,
        "invoice expiry = expires_at"
    );
    assert_eq!(inv.expiry_time().as_secs(), 3600);
    assert_eq!(inv.min_final_cltv_expiry_delta(), 144);
    match inv.description() {
        Bolt11InvoiceDescriptionRef::Direct(d) => assert!(d.to_string().contains(&order_id)),
        _ => panic!("expected a direct description"),
    }
    // Ruling 12: the node was only asked to sign; lightningd holds no invoice for the hash.
    let signs = s.calls("signinvoice");
    assert_eq!(signs.len(), 1);
    assert!(s.calls("invoice").is_empty());

    //
    let g = s.lsps(&client, &req("go-1", "lsps1.get_order", json!({"order_id": order_id}))).await;
    assert_eq!(g["result"], order);
    let g2 = s.lsps(&client, &req("go-2", "lsps1.get_order", json!({"order_id": order_id}))).await;
    assert_eq!(g2["result"], order, "R-04: identical JSON");
    // Ruling 8: another peer gets 101.
    let (_, other) = peer(2);
    let e = s.lsps(&other, &req("go-3", "lsps1.get_order", json!({"order_id": order_id}))).await;
    assert_eq!(e["error"]["code"], json!(101));

    // Restart against the same store: the order is still there, unchanged.
    assert!(s.shutdown().await.success());
    let s = StandIn::builder().dir(&net).start().await;
    let g = s.lsps(&client, &req("go-4", "lsps1.get_order", json!({"order_id": order_id}))).await;
    assert_eq!(g["result"], order, "the order survives a restart");

    // Operator commands.
    let list = s.command("lsps1-listorders", json!({})).await.unwrap();
    let orders = list["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["order_id"], json!(order_id));
    assert_eq!(orders[0]["peer_id"], json!(client.to_string()));
    assert_eq!(orders[0]["order_state"], json!("CREATED"));
    let filtered = s.command("lsps1-listorders", json!(["FAILED"])).await.unwrap();
    assert!(filtered["orders"].as_array().unwrap().is_empty());
    let detail = s.command("lsps1-getorder", json!([order_id])).await.unwrap();
    assert_eq!(detail["order"], order);
    // The invoice carries the payment hash the plugin keeps for this order.
    assert_eq!(detail["payment_hash"], json!(hex::encode(inv.payment_hash().as_ref() as &[u8])));
    assert_eq!(detail["client_info"]["app"], json!("ZEUS"));
    assert_eq!(detail["events"][0]["kind"], json!("created"));
    assert!(detail.get("preimage").is_none() && !detail.to_string().contains("preimage"));
    let missing = s.command("lsps1-getorder", json!({"order_id": "nope"})).await.unwrap_err();
    assert_eq!(missing["code"], json!(101));
    let bad = s.command("lsps1-listorders", json!({"state": "WAT"})).await.unwrap_err();
    assert_eq!(bad["code"], json!(-32602));
}

#[tokio::test]
async fn c20_two_identical_requests_make_two_orders() {
    let s = StandIn::builder().start().await;
    let (_, c) = peer(3);
    let a = s.lsps(&c, &req("a", "lsps1.create_order", zeus_params())).await;
    let b = s.lsps(&c, &req("b", "lsps1.create_order", zeus_params())).await;
    assert_ne!(a["result"]["order_id"], b["result"]["order_id"]);
    assert_ne!(a["result"]["payment"]["bolt11"]["invoice"], b["result"]["payment"]["bolt11"]["invoice"]);
}

#[tokio::test]
async fn validation_errors_over_the_wire() {
    let s = StandIn::builder().option("lsps1-token", json!(["vip"])).start().await;
    let (_, c) = peer(4);
    let with = |k: &str, v: Value| {
        let mut p = zeus_params();
        p[k] = v;
        p
    };
    let cases = [
        ("C-01", with("announce_channel", json!("false")), -32602, Some("announce_channel")),
        ("C-03", with("lsp_balance_sat", json!("0")), -32602, Some("lsp_balance_sat")),
        ("C-07", with("lsp_balance_sat", json!("50000")), 100, Some("min_initial_lsp_balance_sat")),
        ("C-06", with("client_balance_sat", json!("1")), 100, Some("max_initial_client_balance_sat")),
        ("C-11", with("channel_expiry_blocks", json!(20000)), 100, Some("max_channel_expiry_blocks")),
        ("C-10", with("funding_confirms_within_blocks", json!(1)), 100, Some("min_funding_confirms_within_blocks")),
        ("C-13", with("token", json!("nope")), 102, None),
        (
            "C-16",
            with("refund_onchain_address", json!("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq")),
            -32602,
            Some("refund_onchain_address"),
        ),
        (
            "C-02",
            with("public_key", json!("025b7a68b4cd85668e65db6a343a4c607a462cdd010daa793f82be561a3316c5b1")),
            -32602,
            Some("public_key"),
        ),
    ];
    for (i, (item, params, code, property)) in cases.into_iter().enumerate() {
        let r = s.lsps(&c, &req(&format!("v{i}"), "lsps1.create_order", params)).await;
        assert_eq!(r["error"]["code"], json!(code), "{item}: {r}");
        assert_eq!(r["error"]["data"]["property"].as_str(), property, "{item}: {r}");
        assert!(r["error"]["data"]["message"].is_string(), "{item}: ruling 5");
    }
    // A valid token is accepted and mirrored.
    let r = s.lsps(&c, &req("t", "lsps1.create_order", with("token", json!("vip")))).await;
    assert_eq!(r["result"]["token"], json!("vip"));
    // Nothing but the one valid order was stored.
    let list = s.command("lsps1-listorders", json!({})).await.unwrap();
    assert_eq!(list["orders"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn c14_denied_node_is_client_rejected() {
    let (_, c) = peer(5);
    let s = StandIn::builder().option("lsps1-deny-node", json!([c.to_string()])).start().await;
    let r = s.lsps(&c, &req("d", "lsps1.create_order", zeus_params())).await;
    assert_eq!(r["error"]["code"], json!(1));
    assert!(r["error"]["data"]["message"].is_string());
}

#[tokio::test]
async fn signinvoice_failure_answers_internal_error_and_stores_nothing() {
    let s = StandIn::builder()
        .reply("signinvoice", Reply::Error { code: -32602, message: "Unparsable invoice".into() })
        .start()
        .await;
    let (_, c) = peer(6);
    let r = s.lsps(&c, &req("f", "lsps1.create_order", zeus_params())).await;
    assert_eq!(r["error"]["code"], json!(-32603));
    assert!(s.command("lsps1-listorders", json!({})).await.unwrap()["orders"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_stuck_node_does_not_hold_create_order_past_the_wallet_timeout() {
    let s = StandIn::builder().reply("signinvoice", Reply::Hang).start().await;
    let (_, c) = peer(7);
    let started = Instant::now();
    let r = s.lsps(&c, &req("slow", "lsps1.create_order", zeus_params())).await;
    assert_eq!(r["error"]["code"], json!(-32603));
    assert!(started.elapsed() < Duration::from_secs(7), "answered in {:?}, inside ZEUS's 7 s", started.elapsed());
}

#[tokio::test]
async fn a_signinvoice_that_changes_the_invoice_is_refused() {
    // A node (or bug) returning a different invoice must not reach the client.
    let other = "lnbcrt500u1p4s2svasp5mcnazqqaynla02qsdj7aktrtz6dquej7xp894ufe53pud39qha9spp5l4r0fzhtda4a9vfndcsqkjk2d0v8klnl4jst6p89dq6cyufvuplqdq4d9h8vmmfvdjjqcneypkrycqp9rzjqwqefd0n900s4fvcztyxcnhh45hjjsgylgp86xkwndrfhdhc3nehkqqqdyqqqqgqqqqqqqqpqqqqqzsqqc9qxpqysgqnnq65mknnm40wcjhwzjhjdvmure8hlwxdx6rk6h9ufrz8fj2ygfjtdq5tpv5csxs52mgh0r35gu7mev4a0k3ye3j6ngvjh6fwj5js4gpx4tfav";
    let s = StandIn::builder().reply("signinvoice", Reply::Result(json!({"bolt11": other}))).start().await;
    let (_, c) = peer(8);
    let r = s.lsps(&c, &req("x", "lsps1.create_order", zeus_params())).await;
    assert_eq!(r["error"]["code"], json!(-32603));
}

#[tokio::test]
async fn empty_wallet_caps_offers_and_refuses_orders() {
    let s = StandIn::builder()
        .reply("listfunds", Reply::Result(crate::standin::fixture("rpc/listfunds.ok-empty.json")["result"].clone()))
        .start()
        .await;
    let (_, c) = peer(9);
    let info = s.lsps(&c, &req("i", "lsps1.get_info", json!({}))).await;
    assert_eq!(
        info["result"]["max_initial_lsp_balance_sat"], info["result"]["min_initial_lsp_balance_sat"],
        "min ≤ max kept"
    );
    let r = s.lsps(&c, &req("o", "lsps1.create_order", zeus_params())).await;
    assert_eq!(r["error"]["code"], json!(100));
    assert_eq!(r["error"]["data"]["property"], json!("max_initial_lsp_balance_sat"));
}

#[tokio::test]
async fn r03_get_order_param_errors() {
    let s = StandIn::builder().start().await;
    let (_, c) = peer(10);
    let r = s.lsps(&c, &req("a", "lsps1.get_order", json!({}))).await;
    assert_eq!(
        (r["error"]["code"].clone(), r["error"]["data"]["property"].clone()),
        (json!(-32602), json!("order_id"))
    );
    let r = s.lsps(&c, &req("b", "lsps1.get_order", json!({"order_id": 12}))).await;
    assert_eq!(r["error"]["code"], json!(-32602));
    let r = s.lsps(&c, &req("c", "lsps1.get_order", json!({"order_id": "00000000-0000-4000-8000-000000000000"}))).await;
    assert_eq!(r["error"]["code"], json!(101), "R-02");
}
