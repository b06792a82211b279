//! `lsps1.create_order` validation (bLIP-51, G-/C- checklist, rulings 1–5).
//!
//! One pass over the request fields in the order bLIP-51 lists them. Each field is checked
//! completely (presence and type → `-32602`; static bound → `-32602`; advertised option →
//! `100` naming the get_info field; token → `102`) before the next, and the first failure
//! is the answer, so the same request always gets the same error (ruling 4). Unknown
//! parameters are checked first, since they have no place in that order.

use std::collections::BTreeSet;

use bitcoin::secp256k1::PublicKey;
use serde_json::{Map, Value};

use crate::config::Lsps1Options;
use crate::lsps0::jsonrpc::{RpcError, check_unrecognized};
use crate::lsps0::ser::{Leniency, check_onchain_address, read_pubkey, read_sat, read_uint};
use crate::order::Transport;

impl Transport {
    /// REST is more lenient with types (ruling 3).
    pub fn leniency(self) -> Leniency {
        match self {
            Transport::P2p => Leniency::Strict,
            Transport::Rest => Leniency::Rest,
        }
    }
}

/// The create_order fields, in bLIP-51's order.
pub const CREATE_ORDER_FIELDS: [&str; 8] = [
    "lsp_balance_sat",
    "client_balance_sat",
    "required_channel_confirmations",
    "funding_confirms_within_blocks",
    "channel_expiry_blocks",
    "token",
    "refund_onchain_address",
    "announce_channel",
];

/// Extensions real clients send (ruling 1): `client_info` on both transports.
pub const P2P_EXTENSIONS: [&str; 1] = ["client_info"];
/// REST adds `public_key`, the node to open the channel to.
pub const REST_EXTENSIONS: [&str; 2] = ["client_info", "public_key"];

/// Largest `client_info` we keep (serialized JSON).
pub const MAX_CLIENT_INFO_BYTES: usize = 2048;
/// Longest token we mirror; configured tokens are at most this long too.
pub const MAX_TOKEN_BYTES: usize = 256;

/// Which tokens `create_order` accepts (C-13).
#[derive(Debug, Clone, Default)]
pub struct TokenPolicy {
    pub accepted: BTreeSet<String>,
    pub accept_unknown: bool,
}

/// A create_order request that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRequest {
    pub lsp_balance_sat: u64,
    pub client_balance_sat: u64,
    pub required_channel_confirmations: u16,
    pub funding_confirms_within_blocks: u16,
    pub channel_expiry_blocks: u32,
    /// As sent (ruling 2): mirrored exactly, and `""` when omitted.
    pub token: Token,
    /// `None` when absent or `""` (ruling 2); checked against the network (C-16).
    pub refund_onchain_address: Option<String>,
    pub announce_channel: bool,
    pub client_info: Option<Value>,
    /// REST only: the node the channel goes to.
    pub public_key: Option<PublicKey>,
}

/// The `token` field as the client sent it (ruling 2, amended): LDK Node 0.7.1 sends
/// `null` and aborts the purchase unless the order mirrors `null`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Omitted,
    Null,
    /// A string; `""` means "no token" but is mirrored as `""`.
    Text(String),
}

impl Token {
    /// The token the LSP acts on: `None` when absent, `null` or `""`.
    pub fn value(&self) -> Option<&str> {
        match self {
            Token::Text(t) if !t.is_empty() => Some(t),
            _ => None,
        }
    }

    /// The order's mirrored `token` (C-19): `None` is JSON `null`.
    pub fn mirror(&self) -> Option<String> {
        match self {
            Token::Omitted => Some(String::new()),
            Token::Null => None,
            Token::Text(t) => Some(t.clone()),
        }
    }
}

impl OrderRequest {
    /// Channel capacity, lsp + client (cannot overflow once validated).
    pub fn capacity_sat(&self) -> u64 {
        self.lsp_balance_sat.saturating_add(self.client_balance_sat)
    }
}

fn required<'a>(p: &'a Map<String, Value>, field: &str) -> Result<&'a Value, RpcError> {
    p.get(field).ok_or_else(|| RpcError::invalid_param(field, "is required"))
}

fn optional_string<'a>(p: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, RpcError> {
    match p.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(RpcError::invalid_param(field, "must be a string")),
    }
}

/// Validate `params` of `lsps1.create_order` against the advertised `options`.
pub fn validate_create_order(
    p: &Map<String, Value>,
    transport: Transport,
    network: bitcoin::Network,
    options: &Lsps1Options,
    tokens: &TokenPolicy,
) -> Result<OrderRequest, RpcError> {
    let extensions: &[&str] = match transport {
        Transport::P2p => &P2P_EXTENSIONS,
        Transport::Rest => &REST_EXTENSIONS,
    };
    let allowed: Vec<&str> = CREATE_ORDER_FIELDS.iter().chain(extensions).copied().collect();
    check_unrecognized(p, &allowed)?; // C-02
    let lenient = transport.leniency();
    let o = options;

    // lsp_balance_sat: C-01, C-03 (≥ 1, static → -32602), C-07.
    let f = "lsp_balance_sat";
    let lsp = read_sat(required(p, f)?, lenient).map_err(|m| RpcError::invalid_param(f, m))?;
    if lsp < 1 {
        return Err(RpcError::invalid_param(f, "must be at least 1"));
    }
    if lsp < o.min_initial_lsp_balance_sat {
        return Err(RpcError::option_mismatch(
            "min_initial_lsp_balance_sat",
            format!("lsp_balance_sat must be at least {} sat", o.min_initial_lsp_balance_sat),
        ));
    }
    if lsp > o.max_initial_lsp_balance_sat {
        return Err(RpcError::option_mismatch(
            "max_initial_lsp_balance_sat",
            format!("lsp_balance_sat must be at most {} sat", o.max_initial_lsp_balance_sat),
        ));
    }

    // client_balance_sat: C-01, C-04, C-06, then the channel total C-08.
    let f = "client_balance_sat";
    let client = read_sat(required(p, f)?, lenient).map_err(|m| RpcError::invalid_param(f, m))?;
    if client < o.min_initial_client_balance_sat {
        return Err(RpcError::option_mismatch(
            "min_initial_client_balance_sat",
            format!("client_balance_sat must be at least {} sat", o.min_initial_client_balance_sat),
        ));
    }
    if client > o.max_initial_client_balance_sat {
        return Err(RpcError::option_mismatch(
            "max_initial_client_balance_sat",
            format!("client_balance_sat must be at most {} sat", o.max_initial_client_balance_sat),
        ));
    }
    let total = lsp
        .checked_add(client)
        .ok_or_else(|| RpcError::invalid_param(f, "lsp_balance_sat + client_balance_sat overflows"))?;
    if total < o.min_channel_balance_sat {
        return Err(RpcError::option_mismatch(
            "min_channel_balance_sat",
            format!("the channel (lsp + client balance) must be at least {} sat", o.min_channel_balance_sat),
        ));
    }
    if total > o.max_channel_balance_sat {
        return Err(RpcError::option_mismatch(
            "max_channel_balance_sat",
            format!("the channel (lsp + client balance) must be at most {} sat", o.max_channel_balance_sat),
        ));
    }

    // required_channel_confirmations: uint16, C-09.
    let f = "required_channel_confirmations";
    let confs = read_uint(required(p, f)?, 16, lenient).map_err(|m| RpcError::invalid_param(f, m))? as u16;
    if confs < o.min_required_channel_confirmations {
        return Err(RpcError::option_mismatch(
            "min_required_channel_confirmations",
            format!("required_channel_confirmations must be at least {}", o.min_required_channel_confirmations),
        ));
    }

    // funding_confirms_within_blocks: uint16, C-10.
    let f = "funding_confirms_within_blocks";
    let within = read_uint(required(p, f)?, 16, lenient).map_err(|m| RpcError::invalid_param(f, m))? as u16;
    if within < o.min_funding_confirms_within_blocks {
        return Err(RpcError::option_mismatch(
            "min_funding_confirms_within_blocks",
            format!("funding_confirms_within_blocks must be at least {}", o.min_funding_confirms_within_blocks),
        ));
    }

    // channel_expiry_blocks: uint32, C-05 (≥ 1, static), C-11.
    let f = "channel_expiry_blocks";
    let expiry = read_uint(required(p, f)?, 32, lenient).map_err(|m| RpcError::invalid_param(f, m))? as u32;
    if expiry < 1 {
        return Err(RpcError::invalid_param(f, "must be at least 1"));
    }
    if expiry > o.max_channel_expiry_blocks {
        return Err(RpcError::option_mismatch(
            "max_channel_expiry_blocks",
            format!("channel_expiry_blocks must be at most {}", o.max_channel_expiry_blocks),
        ));
    }

    // token: optional, "" = absent (ruling 2); unknown → 102 (C-13).
    let token = match p.get("token") {
        None => Token::Omitted,
        Some(Value::Null) => Token::Null,
        Some(Value::String(s)) => Token::Text(s.clone()),
        Some(_) => return Err(RpcError::invalid_param("token", "must be a string")),
    };
    if let Some(t) = token.value() {
        // No configured token is longer than MAX_TOKEN_BYTES, so a longer one is unknown;
        // it is refused even when unknown tokens are accepted, because it is mirrored.
        let known = tokens.accepted.contains(t);
        if t.len() > MAX_TOKEN_BYTES || (!known && !tokens.accept_unknown) {
            return Err(RpcError::unrecognized_token("this token is not recognized by the LSP; retry without a token"));
        }
    }

    // refund_onchain_address: optional, "" = absent, SegWit on our network (C-16).
    let f = "refund_onchain_address";
    let refund = match optional_string(p, f)? {
        None => None,
        Some(a) => Some(check_onchain_address(a, network).map_err(|m| RpcError::invalid_param(f, m))?.to_string()),
    };

    // announce_channel: required boolean.
    let f = "announce_channel";
    let announce = required(p, f)?.as_bool().ok_or_else(|| RpcError::invalid_param(f, "must be a boolean"))?;

    // client_info (ruling 1): an object, bounded, kept with the order.
    let client_info = match p.get("client_info") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => {
            if serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX) > MAX_CLIENT_INFO_BYTES {
                return Err(RpcError::invalid_param(
                    "client_info",
                    format!("must be at most {MAX_CLIENT_INFO_BYTES} bytes"),
                ));
            }
            Some(v.clone())
        }
        Some(_) => return Err(RpcError::invalid_param("client_info", "must be an object")),
    };

    // public_key (REST, ruling 9).
    let public_key = match transport {
        Transport::P2p => None,
        Transport::Rest => {
            let f = "public_key";
            let s = required(p, f)?.as_str().ok_or_else(|| RpcError::invalid_param(f, "must be a string"))?;
            Some(read_pubkey(s).map_err(|m| RpcError::invalid_param(f, m))?)
        }
    };

    Ok(OrderRequest {
        lsp_balance_sat: lsp,
        client_balance_sat: client,
        required_channel_confirmations: confs,
        funding_confirms_within_blocks: within,
        channel_expiry_blocks: expiry,
        token,
        refund_onchain_address: refund,
        announce_channel: announce,
        client_info,
        public_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsps0::codes;
    use crate::lsps1::msgs::GET_INFO_FIELDS;
    use serde_json::json;

    fn opts() -> Lsps1Options {
        Lsps1Options {
            min_required_channel_confirmations: 1,
            min_funding_confirms_within_blocks: 6,
            supports_zero_channel_reserve: false,
            max_channel_expiry_blocks: 13_000,
            min_initial_client_balance_sat: 0,
            max_initial_client_balance_sat: 500_000,
            min_initial_lsp_balance_sat: 100_000,
            max_initial_lsp_balance_sat: 10_000_000,
            min_channel_balance_sat: 150_000,
            max_channel_balance_sat: 10_000_000,
        }
    }

    fn tokens() -> TokenPolicy {
        TokenPolicy { accepted: ["good".to_string()].into(), accept_unknown: false }
    }

    fn base() -> Value {
        json!({
            "lsp_balance_sat": "1000000",
            "client_balance_sat": "0",
            "required_channel_confirmations": 1,
            "funding_confirms_within_blocks": 6,
            "channel_expiry_blocks": 13000,
            "announce_channel": false
        })
    }

    fn run(v: &Value, t: Transport) -> Result<OrderRequest, RpcError> {
        validate_create_order(v.as_object().unwrap(), t, bitcoin::Network::Regtest, &opts(), &tokens())
    }

    fn with(changes: &[(&str, Option<Value>)]) -> Value {
        let mut v = base();
        for (k, val) in changes {
            match val {
                Some(val) => v[*k] = val.clone(),
                None => {
                    v.as_object_mut().unwrap().remove(*k);
                }
            }
        }
        v
    }

    #[test]
    fn accepts_a_plain_request() {
        let r = run(&base(), Transport::P2p).unwrap();
        assert_eq!(r.lsp_balance_sat, 1_000_000);
        assert_eq!(r.token, Token::Omitted);
        assert_eq!(r.capacity_sat(), 1_000_000);
    }

    #[test]
    fn zeus_request_succeeds() {
        // ZEUS over REST (docs/interop.md): strings for sats, "" token and refund address, client_info.
        let v = json!({
            "lsp_balance_sat": "1000000", "client_balance_sat": "0",
            "required_channel_confirmations": 8, "funding_confirms_within_blocks": 6,
            "channel_expiry_blocks": 13000, "token": "", "refund_onchain_address": "",
            "announce_channel": false,
            "client_info": {"app": "ZEUS", "app_version": "v0.12.0", "node": "LND", "node_version": "v0.19.0"}
        });
        let r = run(&v, Transport::P2p).unwrap();
        assert_eq!((r.token.value(), r.refund_onchain_address), (None, None));
        assert_eq!(r.client_info.unwrap()["app"], json!("ZEUS"));
    }

    /// (case, changes, expected code, expected property)
    type Case = (&'static str, Vec<(&'static str, Option<Value>)>, i64, &'static str);

    fn cases() -> Vec<Case> {
        use codes::*;
        vec![
            ("C-01 missing lsp_balance_sat", vec![("lsp_balance_sat", None)], INVALID_PARAMS, "lsp_balance_sat"),
            (
                "C-01 numeric sat over p2p",
                vec![("lsp_balance_sat", Some(json!(1000000)))],
                INVALID_PARAMS,
                "lsp_balance_sat",
            ),
            ("C-01 signed sat", vec![("lsp_balance_sat", Some(json!("+1000000")))], INVALID_PARAMS, "lsp_balance_sat"),
            (
                "C-01 overflowing sat",
                vec![("lsp_balance_sat", Some(json!("18446744073709551616")))],
                INVALID_PARAMS,
                "lsp_balance_sat",
            ),
            ("C-03 zero lsp balance", vec![("lsp_balance_sat", Some(json!("0")))], INVALID_PARAMS, "lsp_balance_sat"),
            (
                "C-07 lsp below min",
                vec![("lsp_balance_sat", Some(json!("99999")))],
                OPTION_MISMATCH,
                "min_initial_lsp_balance_sat",
            ),
            (
                "C-07 lsp above max",
                vec![("lsp_balance_sat", Some(json!("10000001")))],
                OPTION_MISMATCH,
                "max_initial_lsp_balance_sat",
            ),
            (
                "C-01 missing client_balance_sat",
                vec![("client_balance_sat", None)],
                INVALID_PARAMS,
                "client_balance_sat",
            ),
            (
                "C-04 negative client balance",
                vec![("client_balance_sat", Some(json!("-1")))],
                INVALID_PARAMS,
                "client_balance_sat",
            ),
            (
                "C-06 client above max",
                vec![("client_balance_sat", Some(json!("500001")))],
                OPTION_MISMATCH,
                "max_initial_client_balance_sat",
            ),
            (
                "C-08 channel below min",
                vec![("lsp_balance_sat", Some(json!("100000")))],
                OPTION_MISMATCH,
                "min_channel_balance_sat",
            ),
            (
                "C-08 channel above max",
                vec![("lsp_balance_sat", Some(json!("9800000"))), ("client_balance_sat", Some(json!("300000")))],
                OPTION_MISMATCH,
                "max_channel_balance_sat",
            ),
            (
                "C-01 confirmations as string",
                vec![("required_channel_confirmations", Some(json!("1")))],
                INVALID_PARAMS,
                "required_channel_confirmations",
            ),
            (
                "C-01 confirmations over uint16",
                vec![("required_channel_confirmations", Some(json!(65536)))],
                INVALID_PARAMS,
                "required_channel_confirmations",
            ),
            (
                "C-01 confirmations fractional",
                vec![("required_channel_confirmations", Some(json!(1.5)))],
                INVALID_PARAMS,
                "required_channel_confirmations",
            ),
            (
                "C-09 confirmations below min",
                vec![("required_channel_confirmations", Some(json!(0)))],
                OPTION_MISMATCH,
                "min_required_channel_confirmations",
            ),
            (
                "C-01 missing funding_confirms_within_blocks",
                vec![("funding_confirms_within_blocks", None)],
                INVALID_PARAMS,
                "funding_confirms_within_blocks",
            ),
            (
                "C-10 funding target below min",
                vec![("funding_confirms_within_blocks", Some(json!(5)))],
                OPTION_MISMATCH,
                "min_funding_confirms_within_blocks",
            ),
            (
                "C-05 zero expiry",
                vec![("channel_expiry_blocks", Some(json!(0)))],
                INVALID_PARAMS,
                "channel_expiry_blocks",
            ),
            (
                "C-01 expiry over uint32",
                vec![("channel_expiry_blocks", Some(json!(4294967296u64)))],
                INVALID_PARAMS,
                "channel_expiry_blocks",
            ),
            (
                "C-11 expiry above max",
                vec![("channel_expiry_blocks", Some(json!(13001)))],
                OPTION_MISMATCH,
                "max_channel_expiry_blocks",
            ),
            ("C-01 token not a string", vec![("token", Some(json!(5)))], INVALID_PARAMS, "token"),
            (
                "C-16 refund address garbage",
                vec![("refund_onchain_address", Some(json!("nope")))],
                INVALID_PARAMS,
                "refund_onchain_address",
            ),
            (
                "C-16 refund address wrong network",
                vec![("refund_onchain_address", Some(json!("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq")))],
                INVALID_PARAMS,
                "refund_onchain_address",
            ),
            (
                "C-16 refund address not segwit",
                vec![("refund_onchain_address", Some(json!("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn")))],
                INVALID_PARAMS,
                "refund_onchain_address",
            ),
            ("C-01 missing announce_channel", vec![("announce_channel", None)], INVALID_PARAMS, "announce_channel"),
            (
                "C-01 announce_channel not a boolean",
                vec![("announce_channel", Some(json!("false")))],
                INVALID_PARAMS,
                "announce_channel",
            ),
            ("C-02 unknown param", vec![("surprise", Some(json!(1)))], INVALID_PARAMS, "surprise"),
            (
                "C-02 public_key is REST-only",
                vec![("public_key", Some(json!("025b7a68b4cd85668e65db6a343a4c607a462cdd010daa793f82be561a3316c5b1")))],
                INVALID_PARAMS,
                "public_key",
            ),
            (
                "ruling 1 client_info must be an object",
                vec![("client_info", Some(json!("ZEUS")))],
                INVALID_PARAMS,
                "client_info",
            ),
            (
                "ruling 4 first field wins",
                vec![("lsp_balance_sat", Some(json!("1"))), ("announce_channel", Some(json!(3)))],
                OPTION_MISMATCH,
                "min_initial_lsp_balance_sat",
            ),
            (
                "ruling 4 type error before later option error",
                vec![("client_balance_sat", Some(json!(7))), ("channel_expiry_blocks", Some(json!(99999)))],
                INVALID_PARAMS,
                "client_balance_sat",
            ),
        ]
    }

    #[test]
    fn checklist_table() {
        for (name, changes, code, property) in cases() {
            let e = run(&with(&changes), Transport::P2p).expect_err(name);
            assert_eq!(e.code, code, "{name}: {e:?}");
            assert_eq!(e.property(), Some(property), "{name}: {e:?}");
            let data = e.data.as_ref().unwrap();
            assert!(data["message"].is_string(), "{name}: ruling 5");
            if code == codes::INVALID_PARAMS {
                assert!(data["unrecognized"].is_array(), "{name}: T-11");
            }
            if code == codes::OPTION_MISMATCH {
                assert!(GET_INFO_FIELDS.contains(&property), "{name}: C-12");
            }
        }
    }

    #[test]
    fn c02_lists_every_unknown_param() {
        let e = run(&with(&[("b", Some(json!(1))), ("a", Some(json!(1)))]), Transport::P2p).unwrap_err();
        assert_eq!(e.data.unwrap()["unrecognized"], json!(["a", "b"]));
    }

    #[test]
    fn c13_tokens() {
        let e = run(&with(&[("token", Some(json!("bad")))]), Transport::P2p).unwrap_err();
        assert_eq!(e.code, 102);
        assert!(e.data.unwrap()["message"].is_string());
        let r = run(&with(&[("token", Some(json!("good")))]), Transport::P2p).unwrap();
        assert_eq!(r.token.value(), Some("good"));
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(run(&with(&[("token", Some(json!(long)))]), Transport::P2p).unwrap_err().code, 102);
        let lenient = TokenPolicy { accept_unknown: true, ..tokens() };
        let r = validate_create_order(
            with(&[("token", Some(json!("AlbyHub/1.0")))]).as_object().unwrap(),
            Transport::P2p,
            bitcoin::Network::Regtest,
            &opts(),
            &lenient,
        )
        .unwrap();
        assert_eq!(r.token.value(), Some("AlbyHub/1.0"));
    }

    #[test]
    fn c16_valid_refund_address_is_kept() {
        let r = run(
            &with(&[("refund_onchain_address", Some(json!("bcrt1qufr4lmec5a8humz7anckxk092uel83r2eqr33s")))]),
            Transport::P2p,
        )
        .unwrap();
        assert_eq!(r.refund_onchain_address.as_deref(), Some("bcrt1qufr4lmec5a8humz7anckxk092uel83r2eqr33s"));
    }

    #[test]
    fn rest_is_lenient_and_needs_public_key() {
        let k = "025b7a68b4cd85668e65db6a343a4c607a462cdd010daa793f82be561a3316c5b1";
        let v = with(&[
            ("lsp_balance_sat", Some(json!(1000000))),
            ("required_channel_confirmations", Some(json!("8"))),
            ("public_key", Some(json!(k))),
        ]);
        let r = run(&v, Transport::Rest).unwrap();
        assert_eq!(r.required_channel_confirmations, 8);
        assert_eq!(r.public_key.unwrap().to_string(), k);
        let e = run(&base(), Transport::Rest).unwrap_err();
        assert_eq!(e.property(), Some("public_key"));
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "[0-9]{0,22}".prop_map(Value::String),
            "[+-]?[0-9]{1,5}(\\.[0-9])?".prop_map(Value::String),
            "\\PC{0,20}".prop_map(Value::String),
            Just(json!({"app": "x"})),
            Just(json!([1])),
            Just(json!("bcrt1qufr4lmec5a8humz7anckxk092uel83r2eqr33s")),
        ]
    }

    proptest::proptest! {
        /// Every known field gets random JSON (or goes missing): no panic, and every
        /// refusal is one of the create_order codes with a property or a token message.
        #[test]
        fn random_field_values_never_panic(
            values in proptest::collection::vec(proptest::option::of(any_json()), CREATE_ORDER_FIELDS.len() + 1)
        ) {
            let mut m = Map::new();
            for (k, v) in CREATE_ORDER_FIELDS.iter().chain(["client_info"].iter()).zip(values) {
                if let Some(v) = v {
                    m.insert(k.to_string(), v);
                }
            }
            let v = Value::Object(m);
            for t in [Transport::P2p, Transport::Rest] {
                if let Err(e) = run(&v, t) {
                    proptest::prop_assert!([codes::INVALID_PARAMS, codes::OPTION_MISMATCH, codes::UNRECOGNIZED_TOKEN].contains(&e.code));
                    proptest::prop_assert!(e.code == codes::UNRECOGNIZED_TOKEN || e.property().is_some());
                }
            }
        }
    }
}
