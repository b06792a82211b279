//! The REST decoders: the `Content-Type` check and body decoder of
//! `POST /api/v1/create_order`, and the query decoder of `GET /api/v1/get_order` with the
//! `order_id` check behind it (R-03, C-18). The first byte picks the input: `Q` then a query
//! string; anything else then `<Content-Type value>\n<body>` (no newline: no header).
//! Each decoder is compared with a plain reading of its format, and every refusal must be a
//! 400 whose body every REST wallet reads (`error` object and top-level `message`).
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::http::{HeaderValue, Uri};
use cln_lsps1::lsps0::codes;
use cln_lsps1::lsps0::jsonrpc::RpcError;
use cln_lsps1::lsps1::service::{MAX_ORDER_ID_LEN, read_order_id};
use cln_lsps1::rest;
use cln_lsps1_fuzz::check_error;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((b'Q', q)) => query(q),
        Some((_, rest)) => body(rest),
        None => {}
    }
});

fn body(data: &[u8]) {
    let (ct, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (Some(&data[..i]), &data[i + 1..]),
        None => (None, data),
    };
    // The header as hyper would hand it over (invalid header bytes never reach a handler).
    let header = match ct {
        Some(c) => match HeaderValue::from_bytes(c) {
            Ok(h) => Some(h),
            Err(_) => return,
        },
        None => None,
    };
    // RFC 9110 media type: case-insensitive type/subtype, parameters after `;`, optional
    // whitespace (SP/HTAB) around.
    let want = header.as_ref().and_then(|h| h.to_str().ok()).is_some_and(|v| {
        let media = v.split(';').next().unwrap_or_default();
        media.trim_matches([' ', '\t']).eq_ignore_ascii_case("application/json")
    });
    assert_eq!(rest::is_json_content_type(header.as_ref()), want, "{header:?}");

    let parsed = serde_json::from_slice::<Value>(body).ok();
    match rest::decode_create_order_body(body) {
        Ok(p) => assert_eq!(parsed, Some(Value::Object(p))),
        Err(e) => {
            let want = match &parsed {
                None => codes::PARSE_ERROR,
                Some(v) => {
                    assert!(!v.is_object());
                    codes::INVALID_REQUEST
                }
            };
            assert_eq!(e.code, want, "{e:?}");
            check_rest_error(&e);
        }
    }
}

fn query(data: &[u8]) {
    let Ok(q) = std::str::from_utf8(data) else { return };
    // Only what parses as a request target reaches the handler.
    let Ok(uri) = Uri::try_from(format!("/api/v1/get_order?{q}")) else { return };
    let params = rest::decode_get_order_query(&uri);
    assert_eq!(params, form_decode(uri.query().unwrap_or_default()), "query {:?}", uri.query());
    match read_order_id(&params) {
        Ok(id) => {
            assert_eq!(params.len(), 1, "R-03: no unknown params");
            assert_eq!(params.get("order_id"), Some(&Value::String(id.clone())));
            assert!((1..=MAX_ORDER_ID_LEN).contains(&id.chars().count()), "C-18");
        }
        Err(e) => {
            assert_eq!(e.code, codes::INVALID_PARAMS, "R-03: {e:?}");
            let unknown = params.keys().filter(|k| *k != "order_id").min();
            match unknown {
                Some(k) => assert_eq!(e.property(), Some(cln_lsps1::lsps0::jsonrpc::truncate(k, 256))),
                None => assert_eq!(e.property(), Some("order_id")),
            }
            check_rest_error(&e);
        }
    }
}

/// `application/x-www-form-urlencoded` as the URL standard parses it: `&`-separated
/// `name=value` pairs (empty ones skipped, no `=` means an empty value), `+` is a space,
/// `%XX` a byte (a `%` not followed by two hex digits stays), bytes read as lossy UTF-8.
/// A repeated name keeps its last value.
fn form_decode(q: &str) -> Map<String, Value> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() && hex(b[i + 1]).is_some() && hex(b[i + 2]).is_some() => {
                    out.push((hex(b[i + 1]).unwrap_or(0) * 16 + hex(b[i + 2]).unwrap_or(0)) as u8);
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    let mut m = Map::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(decode(k), Value::String(decode(v)));
    }
    m
}

/// A refusal as REST sends it: 400 and the body every wallet reads (errors.rs).
fn check_rest_error(e: &RpcError) {
    check_error(e);
    let resp = rest::error_response(e);
    assert_eq!(resp.status().as_u16(), 400, "{e:?}");
    assert_eq!(resp.headers().get("content-type").map(HeaderValue::as_bytes), Some(&b"application/json"[..]));
    let bytes = ready(axum::body::to_bytes(resp.into_body(), usize::MAX)).expect("a static body");
    let v: Value = serde_json::from_slice(&bytes).expect("JSON body");
    assert_eq!(v["error"]["code"], Value::from(e.code), "BTCPay reads error.code");
    assert!(v["error"]["message"].is_string() && v["error"]["data"].is_object());
    assert_eq!(v["message"], e.data.as_ref().expect("data")["message"], "ZEUS shows the top-level message");
}

/// Poll a future that is ready at once (a body built from a string).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}
