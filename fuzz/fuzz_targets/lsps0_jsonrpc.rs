//! The JSON-RPC parser of LSPS0 payloads (bLIP-50, T-02..T-13, rulings 5–7).
//! `parse_request` must accept exactly what a plain reading of bLIP-50, bad message format calls a request, give
//! every refusal `-32700` with `id: null`, surround-whitespace must not matter (T-05), and
//! every response built from a parsed request must echo its id and fit in one message.
#![no_main]

use cln_lsps1::lsps0::codes;
use cln_lsps1::lsps0::frame::MAX_PAYLOAD_LEN;
use cln_lsps1::lsps0::jsonrpc::{self, MAX_ID_LEN, MAX_UNRECOGNIZED_ECHO, RpcError};
use cln_lsps1_fuzz::check_error;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

/// bLIP-50, bad message format and ruling 6, read apart from `jsonrpc.rs`: the payload is a request when it has
/// no NUL (T-03), is UTF-8 (T-04), is exactly one JSON object (T-02, T-06) with
/// `"jsonrpc": "2.0"`, a string `id` of at most `MAX_ID_LEN` bytes and a string `method`
/// (T-07). Returns the object when it is one.
fn as_request(data: &[u8]) -> Result<Map<String, Value>, Option<Map<String, Value>>> {
    if data.contains(&0) {
        return Err(None);
    }
    let Ok(text) = std::str::from_utf8(data) else { return Err(None) };
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text) else { return Err(None) };
    let ok = m.get("jsonrpc") == Some(&json!("2.0"))
        && m.get("id").and_then(Value::as_str).is_some_and(|id| id.len() <= MAX_ID_LEN)
        && m.get("method").is_some_and(Value::is_string);
    if ok { Ok(m) } else { Err(Some(m)) }
}

fuzz_target!(|data: &[u8]| {
    let got = jsonrpc::parse_request(data);
    match (&got, as_request(data)) {
        (Ok(r), Ok(m)) => {
            assert_eq!(Some(r.id.as_str()), m["id"].as_str());
            assert_eq!(Some(r.method.as_str()), m["method"].as_str());
            // Params: absent is {}, an object is used as is; an array is -32602 (with an
            // empty `unrecognized`, T-11) and any other value -32600, once the method is known.
            match (m.get("params"), &r.params) {
                (None, Ok(p)) => assert!(p.is_empty()),
                (Some(Value::Object(o)), Ok(p)) => assert_eq!(o, p),
                (Some(Value::Array(_)), Err(e)) => {
                    assert_eq!(e.code, codes::INVALID_PARAMS);
                    assert_eq!(e.data.as_ref().map(|d| &d["unrecognized"]), Some(&json!([])));
                }
                (Some(v), Err(e)) if !v.is_object() && !v.is_array() => assert_eq!(e.code, codes::INVALID_REQUEST),
                (want, got) => panic!("params {want:?} read as {got:?}"),
            }
            if let Err(e) = &r.params {
                check_error(e);
            }
            check_responses(r);
            // T-05: JSON whitespace around the object changes nothing.
            let mut padded = b" \t\r\n".to_vec();
            padded.extend_from_slice(data);
            padded.extend_from_slice(b"\r\n\t ");
            assert_eq!(jsonrpc::parse_request(&padded).as_ref().ok(), Some(r), "T-05");
        }
        (Err(rej), Err(obj)) => {
            // Bad message format: -32700 with id null (T-02..T-07), the one kind of refusal.
            assert_eq!((rej.id.as_deref(), rej.error.code), (None, codes::PARSE_ERROR), "{rej:?}");
            check_error(&rej.error);
            if !rej.reply {
                // Only a peer's error response goes unanswered (no parse-error ping-pong).
                let obj = obj.expect("an unanswered message is an object");
                assert!(obj.contains_key("error") && !obj.contains_key("method"), "{obj:?}");
            }
            let resp: Value = serde_json::from_slice(&jsonrpc::error_bytes(None, &rej.error)).expect("JSON");
            assert_eq!(resp["id"], Value::Null, "T-02: id null");
        }
        (got, want) => panic!("parse_request({:?}) = {got:?}, but bLIP-50, bad message format reads {want:?}", String::from_utf8_lossy(data)),
    }
});

/// The answers a parsed request can get: success, unknown method (T-09), unknown params
/// (T-10). Each is one object echoing the id with exactly one of result/error (T-13),
/// within 65533 bytes (C-21), unknown params listed as a set (T-10) while they fit the echo.
fn check_responses(r: &jsonrpc::Request) {
    let ok: Value =
        serde_json::from_slice(&jsonrpc::success_bytes(&r.id, &json!({"protocols": [1]})).expect("serializes"))
            .expect("JSON");
    assert_eq!(ok, json!({"jsonrpc": "2.0", "id": r.id, "result": {"protocols": [1]}}), "T-13");

    let e = RpcError::method_not_found(&r.method);
    assert_eq!(e.code, codes::METHOD_NOT_FOUND);
    check_error(&e);
    let bytes = jsonrpc::error_bytes(Some(&r.id), &e);
    assert!(bytes.len() <= MAX_PAYLOAD_LEN);
    let v: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(v["id"].as_str(), Some(r.id.as_str()), "T-09: id echoed");
    assert!(v.get("result").is_none());

    if let Ok(p) = &r.params {
        match jsonrpc::check_unrecognized(p, &["order_id"]) {
            Ok(()) => assert!(p.keys().all(|k| k == "order_id")),
            Err(e) => {
                check_error(&e);
                assert_eq!(e.code, codes::INVALID_PARAMS);
                let mut unknown: Vec<&str> = p.keys().map(String::as_str).filter(|k| *k != "order_id").collect();
                unknown.sort();
                let listed = &e.data.as_ref().expect("data")["unrecognized"];
                let small = unknown.iter().map(|k| k.len() * 6 + 3).sum::<usize>() <= MAX_UNRECOGNIZED_ECHO
                    && unknown.iter().all(|k| k.len() <= jsonrpc::MAX_NAME_ECHO);
                if small {
                    assert_eq!(listed, &json!(unknown), "T-10: exactly the unknown names");
                }
                assert_eq!(e.property(), listed[0].as_str(), "the first listed name is the property");
            }
        }
    }
}
