//! The LSPS0 frame (bLIP-50, T-01): the `custommsg` hook's `payload` hex and the
//! `sendcustommsg` hex we write. Checks `decode_hook_payload` against the definition of the
//! frame (type 37913 = `9419`, then at most 65533 bytes of hex), `encode` ∘ decode round
//! trips, and the feature-bit reader (T-19) against a plain reading of BOLT 9 bit order.
#![no_main]

use cln_lsps1::lsps0::frame::{Inbound, MAX_PAYLOAD_LEN, TooLarge, decode_hook_payload, encode, has_feature_bit};
use cln_lsps1::lsps0::{codes, jsonrpc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // 1. The bytes as a payload to send: encode, then read back as the hook would.
    match encode(data) {
        Ok(hex) => {
            assert!(data.len() <= MAX_PAYLOAD_LEN);
            assert_eq!(hex.len(), 4 + 2 * data.len());
            assert!(hex.starts_with("9419"), "T-01: type 37913");
            assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "lowercase hex");
            assert_eq!(decode_hook_payload(&hex), Inbound::Lsps(data.to_vec()), "encode ∘ decode");
        }
        Err(TooLarge(n)) => assert!(n == data.len() && n > MAX_PAYLOAD_LEN),
    }

    // 2. The bytes as the hook's `payload` string (lightningd sends hex; anything else is
    // a defensive branch that must not panic).
    let Ok(s) = std::str::from_utf8(data) else { return };
    let got = decode_hook_payload(s);
    let b = s.as_bytes();
    let want = if b.len() < 4 || !b[..4].eq_ignore_ascii_case(b"9419") {
        Inbound::NotLsps // T-01: other types are left alone
    } else {
        let body = &b[4..];
        if body.len() % 2 == 1 {
            Inbound::BadHex
        } else if body.len() / 2 > MAX_PAYLOAD_LEN {
            Inbound::Oversized(body.len() / 2)
        } else {
            let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
            let bytes: Option<Vec<u8>> = body.chunks(2).map(|p| Some(nib(p[0])? << 4 | nib(p[1])?)).collect();
            bytes.map_or(Inbound::BadHex, Inbound::Lsps)
        }
    };
    assert_eq!(got, want, "payload {s:?}");
    if let Inbound::Lsps(payload) = &got {
        // Re-encoding gives the same frame up to the case of the hex digits.
        assert_eq!(encode(payload).ok().as_deref(), Some(s.to_ascii_lowercase().as_str()));
        // What the hook does next: one request, or a refusal with -32700 and id null (T-02).
        if let Err(rej) = jsonrpc::parse_request(payload) {
            assert_eq!((rej.id, rej.error.code), (None, codes::PARSE_ERROR));
        }
    }

    // 3. The same string as a hex feature bitfield (T-19: bit n is in byte len-1-n/8).
    for bit in [0, 18, 19, 729, 4096] {
        let want = hex_bytes(s).is_some_and(|v| {
            let i = bit / 8;
            i < v.len() && v[v.len() - 1 - i] & (1 << (bit % 8)) != 0
        });
        assert_eq!(has_feature_bit(s, bit), want, "bit {bit} of {s:?}");
    }
});

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 == 1 {
        return None;
    }
    b.chunks(2)
        .map(|p| {
            let hi = (p[0] as char).to_digit(16)?;
            let lo = (p[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}
