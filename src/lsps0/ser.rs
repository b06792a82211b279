//! LSPS0 common schemas (bLIP-50) and the strict readers for them (ruling 3).

use bitcoin::secp256k1::PublicKey;
use serde::Serializer;
use serde_json::Value;

/// How forgiving a reader is (ruling 3): peer-to-peer is strict; REST also accepts sat
/// amounts as JSON integers and counts as decimal strings, because REST clients differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leniency {
    Strict,
    Rest,
}

/// Parse a canonical non-negative decimal integer: ASCII digits only, no sign, no leading
/// zero (except "0" itself), no whitespace, no fraction or exponent, and it fits in u64.
/// (`u64::from_str` would accept "+5".)
pub fn parse_decimal_u64(s: &str) -> Result<u64, &'static str> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err("must not be empty");
    }
    if !b.iter().all(u8::is_ascii_digit) {
        return Err("must be a decimal integer (digits only)");
    }
    if b.len() > 1 && b[0] == b'0' {
        return Err("must not have leading zeros");
    }
    let mut n: u64 = 0;
    for d in b {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or("is too large for a 64-bit amount")?;
    }
    Ok(n)
}

/// Read an `LSPS0.sat` value: a JSON string of a decimal integer (REST also takes a
/// non-negative JSON integer).
pub fn read_sat(v: &Value, leniency: Leniency) -> Result<u64, String> {
    match v {
        Value::String(s) => parse_decimal_u64(s).map_err(|e| format!("{e} (an LSPS0.sat decimal string)")),
        Value::Number(n) if leniency == Leniency::Rest => {
            n.as_u64().ok_or_else(|| "must be a non-negative whole number of satoshis".to_string())
        }
        _ => Err("must be a string holding a decimal number of satoshis".into()),
    }
}

/// Read an unsigned integer field of `bits` width (16 or 32): a JSON integer (REST also
/// takes a decimal string). Fractions, exponents, negatives and overflow are refused.
pub fn read_uint(v: &Value, bits: u32, leniency: Leniency) -> Result<u64, String> {
    let max = (1u64 << bits) - 1;
    let n = match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("must be a non-negative integer (uint{bits})"))?,
        Value::String(s) if leniency == Leniency::Rest => {
            parse_decimal_u64(s).map_err(|e| format!("{e} (uint{bits})"))?
        }
        _ => return Err(format!("must be a JSON integer (uint{bits})")),
    };
    if n > max {
        return Err(format!("must be at most {max} (uint{bits})"));
    }
    Ok(n)
}

/// Read an `LSPS0.pubkey`: 66 hex characters of either case, a point on the curve.
pub fn read_pubkey(s: &str) -> Result<PublicKey, &'static str> {
    if s.len() != 66 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("must be 66 hex characters (a compressed public key)");
    }
    let bytes = hex::decode(s).map_err(|_| "must be hex")?;
    if bytes[0] != 2 && bytes[0] != 3 {
        return Err("must be a compressed public key (02 or 03 prefix)");
    }
    PublicKey::from_slice(&bytes).map_err(|_| "is not a point on the secp256k1 curve")
}

/// Format a unix time in milliseconds as `LSPS0.datetime`: `YYYY-MM-DDThh:mm:ss.uuuZ`,
/// always UTC, always millisecond precision (T-20).
pub fn format_datetime(unix_ms: i64) -> String {
    match chrono::DateTime::<chrono::Utc>::from_timestamp_millis(unix_ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        // Out of chrono's range (±262,000 years): never produced by our clock.
        None => "1970-01-01T00:00:00.000Z".into(),
    }
}

/// Parse an RFC 3339 datetime (lenient, as bLIP-50's common schemas recommend for readers) to unix ms.
pub fn parse_datetime(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}

/// Check an `LSPS0.onchain_address` for `network` (bLIP-50, common schemas, C-16): SegWit only (v0 bech32,
/// v1+ bech32m); P2WPKH, P2WSH and P2TR must be accepted, other witness versions may be.
pub fn check_onchain_address(s: &str, network: bitcoin::Network) -> Result<bitcoin::Address, String> {
    let unchecked: bitcoin::Address<bitcoin::address::NetworkUnchecked> =
        s.parse().map_err(|_| "is not a valid bitcoin address".to_string())?;
    let addr = unchecked
        .require_network(network)
        .map_err(|_| format!("is not an address for this LSP's network ({network})"))?;
    if addr.witness_program().is_none() {
        return Err("must be a SegWit address (bech32 or bech32m)".into());
    }
    Ok(addr)
}

/// Map Core Lightning's network names (`init.configuration.network`) to `bitcoin::Network`.
pub fn network_from_cln(name: &str) -> Option<bitcoin::Network> {
    match name {
        "bitcoin" => Some(bitcoin::Network::Bitcoin),
        "testnet" => Some(bitcoin::Network::Testnet),
        "testnet4" => Some(bitcoin::Network::Testnet4),
        "signet" => Some(bitcoin::Network::Signet),
        "regtest" => Some(bitcoin::Network::Regtest),
        _ => None,
    }
}

/// serde helper: write a u64 as an `LSPS0.sat` decimal string (T-20).
pub fn sat_string<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn decimal_strictness() {
        assert_eq!(parse_decimal_u64("0"), Ok(0));
        assert_eq!(parse_decimal_u64("546"), Ok(546));
        assert_eq!(parse_decimal_u64("18446744073709551615"), Ok(u64::MAX));
        for bad in ["", "+5", "-5", "05", "00", " 5", "5 ", "5.0", "5e3", "0x10", "18446744073709551616", "１"] {
            assert!(parse_decimal_u64(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sat_reader_by_transport() {
        assert_eq!(read_sat(&json!("100"), Leniency::Strict), Ok(100));
        assert!(read_sat(&json!(100), Leniency::Strict).is_err());
        assert_eq!(read_sat(&json!(100), Leniency::Rest), Ok(100));
        for bad in [json!(-1), json!(1.5), json!(1e3), json!(null), json!(true), json!("1e3")] {
            assert!(read_sat(&bad, Leniency::Rest).is_err(), "{bad}");
        }
    }

    #[test]
    fn uint_reader_by_transport() {
        assert_eq!(read_uint(&json!(65535), 16, Leniency::Strict), Ok(65535));
        assert!(read_uint(&json!(65536), 16, Leniency::Strict).is_err());
        assert!(read_uint(&json!("6"), 16, Leniency::Strict).is_err());
        assert_eq!(read_uint(&json!("6"), 16, Leniency::Rest), Ok(6));
        assert!(read_uint(&json!(6.0), 16, Leniency::Strict).is_err());
        assert!(read_uint(&json!(-1), 32, Leniency::Rest).is_err());
        assert_eq!(read_uint(&json!(4294967295u64), 32, Leniency::Strict), Ok(4294967295));
        assert!(read_uint(&json!(4294967296u64), 32, Leniency::Strict).is_err());
    }

    #[test]
    fn pubkeys_either_case_on_curve() {
        let k = "025b7a68b4cd85668e65db6a343a4c607a462cdd010daa793f82be561a3316c5b1";
        assert!(read_pubkey(k).is_ok());
        assert!(read_pubkey(&k.to_uppercase()).is_ok());
        assert!(read_pubkey(&k[..64]).is_err());
        assert!(read_pubkey(&format!("04{}", &k[2..])).is_err());
        // x = 5 is not on the curve (y^2 = 132 has no root mod p).
        let off = format!("02{:064x}", 5);
        assert_eq!(read_pubkey(&off), Err("is not a point on the secp256k1 curve"));
    }

    #[test]
    fn t20_datetime_format() {
        assert_eq!(format_datetime(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_datetime(1_718_001_791_542), "2024-06-10T06:43:11.542Z");
        assert_eq!(parse_datetime("2024-06-10T06:43:11.542Z"), Some(1_718_001_791_542));
        assert_eq!(parse_datetime("2025-01-01T00:00:00Z"), Some(1_735_689_600_000));
    }

    #[test]
    fn c16_address_network_and_kind() {
        use bitcoin::Network::*;
        // P2WPKH / P2TR on regtest; a mainnet address on regtest; base58 refused.
        assert!(check_onchain_address("bcrt1qufr4lmec5a8humz7anckxk092uel83r2eqr33s", Regtest).is_ok());
        assert!(check_onchain_address("bcrt1qufr4lmec5a8humz7anckxk092uel83r2eqr33s", Bitcoin).is_err());
        assert!(check_onchain_address("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", Bitcoin).is_ok());
        assert!(
            check_onchain_address("bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr", Bitcoin).is_ok()
        );
        assert!(check_onchain_address("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", Bitcoin).is_err());
        assert!(check_onchain_address("nonsense", Bitcoin).is_err());
        // tb1 addresses are valid for every test network.
        assert!(check_onchain_address("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", Signet).is_ok());
    }

    proptest! {
        #[test]
        fn decimal_parser_agrees_with_canonical_form(n: u64) {
            prop_assert_eq!(parse_decimal_u64(&n.to_string()), Ok(n));
        }

        #[test]
        fn decimal_parser_never_panics(s in "\\PC{0,30}") {
            if let Ok(n) = parse_decimal_u64(&s) {
                prop_assert_eq!(n.to_string(), s);
            }
        }
    }
}
