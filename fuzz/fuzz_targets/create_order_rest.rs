//! `POST /api/v1/create_order`: the HTTP body through the REST body decoder
//! (`rest::decode_create_order_body`), then validated as the service does
//! (`Transport::Rest`: sat amounts may be integers, counts strings, `public_key` required).
//! Refusals before validation are `-32700` (not JSON) or `-32600` (not an object), both 400;
//! every validation outcome is compared with an independent reading of bLIP-51's create_order rules
//! (`cln_lsps1_fuzz::check_create_order`, see `create_order_p2p`).
#![no_main]

use cln_lsps1::lsps0::codes;
use cln_lsps1::order::Transport;
use cln_lsps1::rest;
use cln_lsps1_fuzz::{check_create_order, check_error};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    match rest::decode_create_order_body(data) {
        Ok(p) => {
            check_create_order(&p, Transport::Rest);
        }
        Err(e) => {
            let json = serde_json::from_slice::<Value>(data).ok();
            let want = if json.is_some() { codes::INVALID_REQUEST } else { codes::PARSE_ERROR };
            assert_eq!(e.code, want, "{e:?}");
            assert!(json.is_none_or(|v| !v.is_object()));
            check_error(&e);
            assert_eq!(rest::status_of(&e).as_u16(), 400);
        }
    }
});
