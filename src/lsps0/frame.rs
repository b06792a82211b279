//! Custom message framing (bLIP-50; T-01).
//!
//! Core Lightning hands the `custommsg` hook the whole message as hex, including the 2-byte
//! big-endian type, and `sendcustommsg` wants the same form back.

/// `lsps0_message_id`: BOLT8 message type 37913 (`0x9419`), registered in bLIP-2.
pub const LSPS0_MESSAGE_TYPE: u16 = 37913;

/// Largest payload a BOLT8 message can carry after its 2-byte type (65535 - 2).
pub const MAX_PAYLOAD_LEN: usize = 65533;

/// Feature bit `option_supports_lsps` (bLIP-50, T-19).
pub const LSPS_FEATURE_BIT: usize = 729;

/// What a `custommsg` hook payload turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Another message type: not ours, leave it alone (T-01).
    NotLsps,
    /// Payload is larger than BOLT8 allows; dropped unread (ruling 6).
    Oversized(usize),
    /// The hex itself is broken (lightningd never sends this; a defensive branch).
    BadHex,
    /// The LSPS0 payload bytes (after the type).
    Lsps(Vec<u8>),
}

/// Classify a hook payload. Checks the type and the length before decoding anything, so an
/// oversized message costs no allocation.
pub fn decode_hook_payload(payload_hex: &str) -> Inbound {
    let bytes = payload_hex.as_bytes();
    if bytes.len() < 4 || !bytes[..4].eq_ignore_ascii_case(b"9419") {
        return Inbound::NotLsps;
    }
    let body = &payload_hex[4..];
    if !body.len().is_multiple_of(2) {
        return Inbound::BadHex;
    }
    let len = body.len() / 2;
    if len > MAX_PAYLOAD_LEN {
        return Inbound::Oversized(len);
    }
    match hex::decode(body) {
        Ok(v) => Inbound::Lsps(v),
        Err(_) => Inbound::BadHex,
    }
}

/// The payload would not fit in one BOLT8 message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("LSPS0 payload of {0} bytes exceeds {MAX_PAYLOAD_LEN}")]
pub struct TooLarge(pub usize);

/// Frame a JSON payload as the `msg` hex of `sendcustommsg` (type 37913 + payload).
pub fn encode(payload: &[u8]) -> Result<String, TooLarge> {
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(TooLarge(payload.len()));
    }
    let mut out = String::with_capacity(4 + payload.len() * 2);
    out.push_str("9419");
    out.push_str(&hex::encode(payload));
    Ok(out)
}

/// Hex of a BOLT-9 feature bitfield with only `bit` set, as the plugin manifest wants it
/// (big-endian: bit n lives in byte `len-1-n/8`). For 729 this is `"02"` + 91 zero bytes.
pub fn feature_bit_hex(bit: usize) -> String {
    let mut v = vec![0u8; bit / 8 + 1];
    v[0] = 1 << (bit % 8);
    hex::encode(v)
}

/// Whether a hex feature bitfield (as `listpeers.features` or `init.feature_set`) has `bit`
/// set. Malformed hex reads as "not set".
pub fn has_feature_bit(features_hex: &str, bit: usize) -> bool {
    let Ok(bytes) = hex::decode(features_hex) else {
        return false;
    };
    let byte_from_end = bit / 8;
    if byte_from_end >= bytes.len() {
        return false;
    }
    bytes[bytes.len() - 1 - byte_from_end] & (1 << (bit % 8)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t01_other_types_are_not_lsps() {
        // Recorded payloads: peer storage (type 7) and another odd type 37921.
        assert_eq!(decode_hook_payload("0007003966"), Inbound::NotLsps);
        assert_eq!(decode_hook_payload("94216e6f74206c737073"), Inbound::NotLsps);
        assert_eq!(decode_hook_payload(""), Inbound::NotLsps);
        assert_eq!(decode_hook_payload("94"), Inbound::NotLsps);
    }

    #[test]
    fn decodes_recorded_lsps0_payload() {
        let hex = "94197b226a736f6e727063223a2022322e30227d";
        assert_eq!(decode_hook_payload(hex), Inbound::Lsps(br#"{"jsonrpc": "2.0"}"#.to_vec()));
        // Upper-case hex is still hex.
        assert!(matches!(decode_hook_payload("94197B7D"), Inbound::Lsps(v) if v == b"{}"));
    }

    #[test]
    fn oversized_is_detected_without_decoding() {
        let body = "zz".repeat(MAX_PAYLOAD_LEN + 1);
        assert_eq!(decode_hook_payload(&format!("9419{body}")), Inbound::Oversized(MAX_PAYLOAD_LEN + 1));
        let ok = "00".repeat(MAX_PAYLOAD_LEN);
        assert!(matches!(decode_hook_payload(&format!("9419{ok}")), Inbound::Lsps(v) if v.len() == MAX_PAYLOAD_LEN));
    }

    #[test]
    fn bad_hex() {
        assert_eq!(decode_hook_payload("9419abc"), Inbound::BadHex);
        assert_eq!(decode_hook_payload("9419zz"), Inbound::BadHex);
    }

    #[test]
    fn encode_limits() {
        assert_eq!(encode(b"{}").unwrap(), "94197b7d");
        assert!(encode(&vec![b' '; MAX_PAYLOAD_LEN]).is_ok());
        assert_eq!(encode(&vec![b' '; MAX_PAYLOAD_LEN + 1]), Err(TooLarge(MAX_PAYLOAD_LEN + 1)));
    }

    #[test]
    fn t19_feature_bit_729_hex() {
        let h = feature_bit_hex(LSPS_FEATURE_BIT);
        assert_eq!(h.len(), 184);
        assert!(h.starts_with("02"));
        assert!(h[2..].chars().all(|c| c == '0'));
        // The recorded init feature set of a node whose plugin set bit 729.
        let recorded = format!("{}800898880a8a59a1", &h[..h.len() - 16]);
        assert!(has_feature_bit(&recorded, 729));
        assert!(!has_feature_bit("800898880a8a59a1", 729));
        assert!(!has_feature_bit("nothex", 729));
    }
}
