//! LSPS0 over the `custommsg` hook and `sendcustommsg` (bLIP-50, T-items).

use std::time::Duration;

use serde_json::{Value, json};

use crate::standin::{StandIn, fixture, peer, req};

fn assert_parse_error(r: &Value) {
    assert_eq!(r["jsonrpc"], json!("2.0"));
    assert_eq!(r["id"], Value::Null, "{r}");
    assert_eq!(r["error"]["code"], json!(-32700), "{r}");
    assert_eq!(r["error"]["message"], json!("parse error"));
    assert!(r.get("result").is_none());
}

#[tokio::test]
async fn t18_t13_list_protocols_round_trip() {
    let s = StandIn::builder().start().await;
    let (_, p) = peer(1);
    let r = s.lsps(&p, &req("6f1a0c2e9b3d4f5a", "lsps0.list_protocols", json!({}))).await;
    assert_eq!(r, json!({"jsonrpc": "2.0", "id": "6f1a0c2e9b3d4f5a", "result": {"protocols": [1]}}));
    // The reply went to the asking peer via sendcustommsg, framed as type 37913.
    let call = &s.calls("sendcustommsg")[0];
    assert_eq!(call["node_id"], json!(p.to_string()));
    assert!(call["msg"].as_str().unwrap().starts_with("9419"));
    // Missing params read as {} (ruling 6).
    let r = s.lsps(&p, &json!({"jsonrpc": "2.0", "id": "b", "method": "lsps0.list_protocols"})).await;
    assert_eq!(r["result"]["protocols"], json!([1]));
}

#[tokio::test]
async fn t02_to_t07_bad_message_formats() {
    let s = StandIn::builder().start().await;
    let (_, p) = peer(2);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "T-04 invalid UTF-8",
            b"{\"jsonrpc\":\"2.0\",\"id\":\"\xff\xfe\",\"method\":\"lsps0.list_protocols\"}".to_vec(),
        ),
        ("T-02 not JSON", b"hello lsp".to_vec()),
        ("T-02 truncated object", b"{".to_vec()),
        ("T-02 two objects", b" { } { }".to_vec()),
        ("T-03 NUL byte", b"{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"lsps0.list_protocols\"}\0".to_vec()),
        ("T-06 batch", br#"[{"jsonrpc":"2.0","id":"a","method":"lsps0.list_protocols","params":{}}]"#.to_vec()),
        ("T-07 missing id", br#"{"jsonrpc":"2.0","method":"lsps0.list_protocols","params":{}}"#.to_vec()),
        ("T-07 numeric id", br#"{"jsonrpc":"2.0","id":7,"method":"lsps0.list_protocols","params":{}}"#.to_vec()),
        ("T-07 missing method", br#"{"jsonrpc":"2.0","id":"a","params":{}}"#.to_vec()),
        ("T-07 jsonrpc 1.0", br#"{"jsonrpc":"1.0","id":"a","method":"lsps0.list_protocols"}"#.to_vec()),
    ];
    for (name, payload) in cases {
        let r = s.lsps_raw(&p, &payload).await;
        assert_parse_error(&r);
        let _ = name;
    }
    // T-08: logged as unusual ("warn" in cln-plugin's log bridge = UNUSUAL in lightningd).
    s.wait_log(Some("warn"), "Bad LSPS0 message").await;
    // T-14: exactly one reply per message, never a batch.
    assert_eq!(s.sent_to(&p).len(), 10);
}

#[tokio::test]
async fn recorded_response_payload_is_a_bad_message() {
    // The recorded 37913 message l2 sent l1 is a *response*; to an LSP that is no request.
    let s = StandIn::builder().start().await;
    let hook = fixture("hooks/custommsg.lsps0-37913.json");
    let (_, p) = peer(3);
    s.connect(&p);
    let payload = hook["params"]["payload"].as_str().unwrap();
    let r = s.custommsg_hex(&p, payload).await;
    assert_eq!(r, json!({"result": "continue"}));
    let sent = s.wait_sent(&p, 1).await;
    assert_parse_error(&serde_json::from_slice(&sent[0]).unwrap());
}

#[tokio::test]
async fn an_error_response_from_a_client_is_not_answered() {
    // A client that could not parse one of our messages answers -32700 with id null
    // (lightning-liquidity does). Answering that with our own -32700 could ping-pong.
    let s = StandIn::builder().start().await;
    let (_, p) = peer(4);
    let r = s
        .custommsg(&p, br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error","data":null}}"#)
        .await;
    assert_eq!(r, json!({"result": "continue"}));
    s.wait_log(Some("warn"), "error response").await;
    // Followed by a real request: only that one is answered.
    let r = s.lsps(&p, &req("x", "lsps0.list_protocols", json!({}))).await;
    assert_eq!(r["id"], json!("x"));
    assert_eq!(s.sent_to(&p).len(), 1);
}

#[tokio::test]
async fn t09_t10_t11_method_and_param_errors() {
    let s = StandIn::builder().start().await;
    let (_, p) = peer(5);
    let r = s.lsps(&p, &req("u1", "lsps9.foo", json!({}))).await;
    assert_eq!((r["id"].clone(), r["error"]["code"].clone()), (json!("u1"), json!(-32601)));
    let r = s.lsps(&p, &req("u2", "lsps0.list_protocols", json!({"zeta": 1, "alpha": 2}))).await;
    assert_eq!(r["id"], json!("u2"));
    assert_eq!(r["error"]["code"], json!(-32602));
    assert_eq!(r["error"]["data"]["unrecognized"], json!(["alpha", "zeta"]));
    let r = s.lsps(&p, &req("u3", "lsps1.get_info", json!([1]))).await;
    assert_eq!((r["id"].clone(), r["error"]["code"].clone()), (json!("u3"), json!(-32602)), "array params");
    assert_eq!(r["error"]["data"]["unrecognized"], json!([]), "T-11");
    let r = s.lsps(&p, &req("u4", "lsps1.get_info", json!("x"))).await;
    assert_eq!((r["id"].clone(), r["error"]["code"].clone()), (json!("u4"), json!(-32600)));
    // T-09 before any params check: an unknown method is -32601 whatever its params.
    let r = s.lsps(&p, &req("u5", "lsps9.foo", json!([1, 2]))).await;
    assert_eq!((r["id"].clone(), r["error"]["code"].clone()), (json!("u5"), json!(-32601)));
}

#[tokio::test]
async fn t10_a_huge_set_of_unknown_params_still_gets_a_fitting_32602() {
    let s = StandIn::builder().start().await;
    let (_, p) = peer(15);
    // ~65 KB of unknown parameter names: the echo must not push the reply over the limit.
    let mut params = serde_json::Map::new();
    for i in 0..1600 {
        params.insert(format!("{i:05}{}", "u".repeat(30)), json!(0));
    }
    let body = req("big", "lsps0.list_protocols", Value::Object(params)).to_string();
    assert!(body.len() > 60_000 && body.len() <= 65_533, "{}", body.len());
    let r = s.lsps_raw(&p, body.as_bytes()).await;
    assert_eq!((r["id"].clone(), r["error"]["code"].clone()), (json!("big"), json!(-32602)));
    assert!(!r["error"]["data"]["unrecognized"].as_array().unwrap().is_empty());
    assert!(r.to_string().len() <= 65_533);
}

#[tokio::test]
async fn t21_non_ascii_id_is_echoed_unescaped() {
    let s = StandIn::builder().start().await;
    let (_, p) = peer(6);
    s.custommsg(
        &p,
        "{\"jsonrpc\":\"2.0\",\"id\":\"\u{e9}t\u{e9}-\\u00e9\",\"method\":\"lsps0.list_protocols\"}".as_bytes(),
    )
    .await;
    let raw = s.wait_sent(&p, 1).await.remove(0);
    let text = String::from_utf8(raw).unwrap();
    assert!(text.contains("\"id\":\"\u{e9}t\u{e9}-\u{e9}\""), "{text}");
}

#[tokio::test]
async fn oversized_payloads_are_dropped_with_a_log_line() {
    let s = StandIn::builder().start().await;
    let (_, p) = peer(7);
    let big = vec![b' '; 65_534];
    let r = s.custommsg(&p, &big).await;
    assert_eq!(r, json!({"result": "continue"}));
    s.wait_log(Some("warn"), "over the 65533-byte limit").await;
    // Exactly at the limit is still read (and here is not JSON, so -32700).
    let mut at_limit = vec![b' '; 65_533];
    at_limit[0] = b'x';
    let r = s.lsps_raw(&p, &at_limit).await;
    assert_parse_error(&r);
    assert_eq!(s.sent_to(&p).len(), 1, "the oversized one got no reply");
}

#[tokio::test]
async fn t01_other_message_types_are_left_alone() {
    let s = StandIn::builder().start().await;
    for f in ["hooks/custommsg.peer-storage-type-7.json", "hooks/custommsg.other-odd-type-37921.json"] {
        let call = fixture(f);
        let r = s.hook("custommsg", call["params"].clone()).await;
        assert_eq!(r, json!({"result": "continue"}), "{f}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.sent_count(), 0, "T-01, T-15: nothing sent");
    assert!(s.calls("sendcustommsg").is_empty());
}

#[tokio::test]
async fn the_hook_always_continues() {
    let s = StandIn::builder().start().await;
    let (_, p) = peer(8);
    let odd: Vec<Value> = vec![
        json!({}),
        json!({"payload": 5}),
        json!({"payload": "9419", "peer_id": "not-a-key"}),
        json!({"payload": "9419zz", "peer_id": p.to_string()}),
        json!({"payload": "941", "peer_id": p.to_string()}),
        json!({"payload": null, "peer_id": null}),
        json!({"payload": "94197b7d"}),
        json!([1, 2, 3]),
    ];
    for params in odd {
        assert_eq!(s.hook("custommsg", params.clone()).await, json!({"result": "continue"}), "{params}");
    }
    // The plugin is still alive and serving.
    let r = s.lsps(&p, &req("alive", "lsps0.list_protocols", json!({}))).await;
    assert_eq!(r["result"]["protocols"], json!([1]));
}

#[tokio::test]
async fn t16_concurrent_requests_are_all_answered_by_id() {
    let s = StandIn::builder().option("lsps1-peer-max-inflight", json!(16)).start().await;
    let (_, p) = peer(9);
    s.connect(&p);
    let ids: Vec<String> = (0..12).map(|i| format!("concurrent-{i}")).collect();
    // lightningd does not serialise hook calls; the plugin answers each hook at once and
    // serves the requests concurrently, so replies may come in any order (T-16).
    for id in &ids {
        let method = if id.ends_with('1') { "lsps1.get_info" } else { "lsps0.list_protocols" };
        assert_eq!(
            s.custommsg(&p, req(id, method, json!({})).to_string().as_bytes()).await,
            json!({"result": "continue"})
        );
    }
    let sent = s.wait_sent(&p, ids.len()).await;
    let mut got: Vec<String> =
        sent.iter().map(|b| serde_json::from_slice::<Value>(b).unwrap()["id"].as_str().unwrap().to_string()).collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn rate_limit_refuses_with_client_rejected_then_drops() {
    let s = StandIn::builder()
        .option("lsps1-peer-burst", json!(3))
        .option("lsps1-peer-requests-per-minute", json!(1))
        .start()
        .await;
    let (_, p) = peer(10);
    // create_order costs a whole request (reads cost a tenth).
    for i in 0..3 {
        let r = s.lsps(&p, &req(&format!("ok{i}"), "lsps1.create_order", json!({}))).await;
        assert_eq!(r["error"]["code"], json!(-32602));
    }
    let r = s.lsps(&p, &req("limited", "lsps1.create_order", json!({}))).await;
    assert_eq!(r["id"], json!("limited"));
    assert_eq!(r["error"]["code"], json!(1), "ruling 10: client rejected");
    assert!(r["error"]["data"]["message"].as_str().unwrap().contains("rate limit"));
    // Within the notice interval further requests are dropped without a reply.
    for i in 0..20 {
        assert_eq!(
            s.custommsg(&p, req(&format!("flood{i}"), "lsps1.create_order", json!({})).to_string().as_bytes()).await,
            json!({"result": "continue"})
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.sent_to(&p).len(), 4);
    // Other peers are unaffected.
    let (_, q) = peer(11);
    assert_eq!(s.lsps(&q, &req("other", "lsps0.list_protocols", json!({}))).await["result"]["protocols"], json!([1]));
}

#[tokio::test]
async fn t17_a_reply_to_a_vanished_peer_is_logged_and_forgotten() {
    let s = StandIn::builder().start().await;
    let (_, p) = peer(12);
    s.connect(&p);
    s.disconnect(&p);
    // lightningd only calls the hook for connected peers; simulate the peer leaving while
    // the request is handled by disconnecting it before the reply.
    s.hook("custommsg", json!({"payload": format!("9419{}", hex::encode(req("gone", "lsps0.list_protocols", json!({})).to_string())), "peer_id": p.to_string()}))
        .await;
    s.wait_log(None, "Could not deliver an LSPS reply").await;
    assert_eq!(s.calls("sendcustommsg").len(), 1, "tried once, not queued for redelivery");
    // The plugin is unaffected.
    let (_, q) = peer(13);
    assert_eq!(s.lsps(&q, &req("next", "lsps0.list_protocols", json!({}))).await["result"]["protocols"], json!([1]));
}

#[tokio::test]
async fn notifications_do_not_disturb() {
    let s = StandIn::builder().start().await;
    let b = fixture("notifications/block_added.json");
    s.notify("block_added", b["params"]["block_added"].clone()).await;
    let (_, p) = peer(14);
    assert_eq!(s.lsps(&p, &req("n", "lsps0.list_protocols", json!({}))).await["result"]["protocols"], json!([1]));
    // The notification handler runs in its own task: wait for its refresh.
    s.wait_calls("feerates", 2).await;
}
