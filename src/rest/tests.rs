use super::*;

#[test]
fn uris_put_ipv4_first() {
    let a = |k: &str, h: &str, p: u16| NodeAddress { kind: k.into(), host: h.into(), port: p };
    let u = format_uris("02ab", vec![a("torv3", "x.onion", 9735), a("ipv6", "::1", 9735), a("ipv4", "1.2.3.4", 9735)]);
    assert_eq!(u, ["02ab@1.2.3.4:9735", "02ab@[::1]:9735", "02ab@x.onion:9735"]);
}

#[test]
fn statuses_of_lsps_errors() {
    use axum::http::StatusCode;
    assert_eq!(status_of(&RpcError::invalid_param("x", "y")), StatusCode::BAD_REQUEST);
    assert_eq!(status_of(&RpcError::option_mismatch("max_channel_expiry_blocks", "y")), StatusCode::BAD_REQUEST);
    assert_eq!(status_of(&RpcError::unrecognized_token("y")), StatusCode::BAD_REQUEST);
    assert_eq!(status_of(&RpcError::not_found("y")), StatusCode::NOT_FOUND);
    assert_eq!(status_of(&RpcError::client_rejected("y")), StatusCode::FORBIDDEN);
    assert_eq!(status_of(&RpcError::internal("y")), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(status_of(&RpcError::unavailable("y")), StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn content_type_must_name_json() {
    let h = |s: &str| HeaderValue::from_str(s).unwrap();
    for ok in ["application/json", "Application/JSON; charset=utf-8", " application/json\t;x=y"] {
        assert!(is_json_content_type(Some(&h(ok))), "{ok:?}");
    }
    for bad in ["text/plain", "application/jsonx", "application/json-seq", ""] {
        assert!(!is_json_content_type(Some(&h(bad))), "{bad:?}");
    }
    assert!(!is_json_content_type(None));
    assert!(!is_json_content_type(Some(&HeaderValue::from_bytes(b"application/json\xff").unwrap())));
}

#[test]
fn create_order_body_decoder_codes() {
    assert_eq!(decode_create_order_body(b" {\"a\":1} ").unwrap()["a"], json!(1));
    // Not one JSON value: -32700 (T-02); JSON but not an object: -32600. Both are 400.
    for (body, code) in [(&b"{"[..], -32700), (b"", -32700), (b"{}{}", -32700), (b"\xff", -32700), (b"[1]", -32600)] {
        let e = decode_create_order_body(body).unwrap_err();
        assert_eq!(e.code, code, "{body:?}");
        assert_eq!(status_of(&e), axum::http::StatusCode::BAD_REQUEST);
    }
    assert_eq!(decode_create_order_body(b"null").unwrap_err().code, -32600);
}

#[test]
fn get_order_query_decoding() {
    let q = |s: &str| decode_get_order_query(&s.parse::<Uri>().unwrap());
    assert_eq!(Value::Object(q("/api/v1/get_order?order_id=a%20b+c%e2%82%ac")), json!({"order_id": "a b c€"}));
    // A repeated key keeps its last value; a key without `=` has an empty value.
    assert_eq!(Value::Object(q("/api/v1/get_order?order_id=1&order_id=2")), json!({"order_id": "2"}));
    assert_eq!(Value::Object(q("/api/v1/get_order?x&order_id=1")), json!({"order_id": "1", "x": ""}));
    assert!(q("/api/v1/get_order").is_empty());
    // What the service makes of them (R-03, C-18).
    use crate::lsps1::service::read_order_id;
    assert_eq!(read_order_id(&q("/api/v1/get_order?order_id=abc")).unwrap(), "abc");
    for (uri, property) in [
        ("/api/v1/get_order", "order_id"),
        ("/api/v1/get_order?order_id=", "order_id"),
        ("/api/v1/get_order?order_id=1&x=2", "x"),
    ] {
        let e = read_order_id(&q(uri)).unwrap_err();
        assert_eq!((e.code, e.property()), (-32602, Some(property)), "{uri}");
    }
    let long = format!("/api/v1/get_order?order_id={}", "é".repeat(65));
    assert_eq!(read_order_id(&q(&long)).unwrap_err().property(), Some("order_id"));
    assert!(read_order_id(&q(&format!("/api/v1/get_order?order_id={}", "é".repeat(64)))).is_ok());
}
