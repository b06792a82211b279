//! `lsps1.create_order` over P2P: the payload of a 37913 message (framed and read back as
//! the `custommsg` hook gets it), parsed as a JSON-RPC request, its params validated as the
//! service does (`Transport::P2p`, strict types). Every outcome is compared with the spec
//! independent reading of bLIP-51's create_order rules (`cln_lsps1_fuzz::check_create_order`): refusals carry the
//! right code and property (C-01..C-13, ruling 4), accepted orders lie within the policy,
//! mirror the request (C-19), price (P-01) and fit in one message (C-21); and what P2P
//! accepts, REST accepts too (ruling 3).
#![no_main]

use cln_lsps1::lsps0::codes;
use cln_lsps1::lsps0::frame::{self, Inbound};
use cln_lsps1::lsps0::jsonrpc;
use cln_lsps1::order::Transport;
use cln_lsps1_fuzz::{check_create_order, check_error};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(hex) = frame::encode(data) else { return }; // over 65533 bytes: never sent
    let Inbound::Lsps(payload) = frame::decode_hook_payload(&hex) else { panic!("our own frame is not LSPS0") };
    let req = match jsonrpc::parse_request(&payload) {
        Ok(r) => r,
        Err(rej) => {
            assert_eq!(rej.error.code, codes::PARSE_ERROR);
            return;
        }
    };
    // The service routes only `lsps1.create_order` here; the params of any method are
    // validated so that mutations of the method name do not hide the params from the fuzzer.
    match req.params() {
        Ok(p) => {
            check_create_order(p, Transport::P2p);
        }
        Err(e) => {
            assert!([codes::INVALID_PARAMS, codes::INVALID_REQUEST].contains(&e.code), "{e:?}");
            check_error(&e);
        }
    }
});
