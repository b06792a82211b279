//! What the fuzz targets check beyond "no panic". Each target feeds bytes to a
//! public entry point of `cln_lsps1`; the helpers here hold the invariants of the spec
//! checklist (docs/spec-checklist.md, ids like T-05, C-03) that more than one target
//! needs, and an independent reading of bLIP-51's create_order rules that every
//! validation outcome is compared with.

use std::str::FromStr;
use std::sync::LazyLock;

use bitcoin::secp256k1::PublicKey;
use cln_lsps1::config::{Lsps1Options, MAX_MONEY_SAT, PricingPolicy};
use cln_lsps1::lsps0::codes;
use cln_lsps1::lsps0::frame::MAX_PAYLOAD_LEN;
use cln_lsps1::lsps0::jsonrpc::{self, MAX_ID_LEN, MAX_NAME_ECHO, RpcError};
use cln_lsps1::lsps1::msgs::GET_INFO_FIELDS;
use cln_lsps1::order::Phase;
use cln_lsps1::lsps1::pricing;
use cln_lsps1::lsps1::service::order_response;
use cln_lsps1::lsps1::validate::{
    CREATE_ORDER_FIELDS, MAX_CLIENT_INFO_BYTES, MAX_TOKEN_BYTES, OrderRequest, P2P_EXTENSIONS, REST_EXTENSIONS, Token,
    TokenPolicy, validate_create_order,
};
use cln_lsps1::order::Transport;
use cln_lsps1::store::{Bolt11Record, OnchainRecord, OrderRecord};
use serde_json::{Map, Value, json};

/// The network every target's LSP runs on.
pub const NETWORK: bitcoin::Network = bitcoin::Network::Regtest;

/// A valid compressed public key, for REST's `public_key`.
pub const CLIENT_KEY: &str = "025b7a68b4cd85668e65db6a343a4c607a462cdd010daa793f82be561a3316c5b1";

/// The token the strict policy knows.
pub const GOOD_TOKEN: &str = "good";

/// The option sets requests are validated against: the defaults (no client balance, no
/// confirmation minimum) and the widest an operator can configure (every bound at its
/// limit, a client balance, minima of 1 and 6).
pub fn option_sets() -> [Lsps1Options; 2] {
    let roomy = Lsps1Options {
        min_required_channel_confirmations: 1,
        min_funding_confirms_within_blocks: 6,
        supports_zero_channel_reserve: false,
        max_channel_expiry_blocks: u32::MAX,
        min_initial_client_balance_sat: 0,
        max_initial_client_balance_sat: MAX_MONEY_SAT,
        min_initial_lsp_balance_sat: 1,
        max_initial_lsp_balance_sat: MAX_MONEY_SAT,
        min_channel_balance_sat: 1000,
        max_channel_balance_sat: MAX_MONEY_SAT,
    };
    [Lsps1Options::default(), roomy]
}

/// Token policies: only [`GOOD_TOKEN`]; and any token (`lsps1-accept-unknown-tokens`).
pub static TOKEN_POLICIES: LazyLock<[TokenPolicy; 2]> = LazyLock::new(|| {
    [
        TokenPolicy { accepted: [GOOD_TOKEN.to_string()].into(), accept_unknown: false },
        TokenPolicy { accepted: [GOOD_TOKEN.to_string()].into(), accept_unknown: true },
    ]
});

/// The request id that costs the most bytes to echo: [`MAX_ID_LEN`] control characters,
/// each written as a 6-byte `\u00XX` escape.
pub static WORST_ID: LazyLock<String> = LazyLock::new(|| "\u{1}".repeat(MAX_ID_LEN));

/// The longest BOLT11 invoice an order carries (P-02: at most 2048 characters).
static LONGEST_INVOICE: LazyLock<String> = LazyLock::new(|| format!("lnbcrt{}", "q".repeat(2042)));

/// Every error object the service sends: `data` is an object with a human `message` (T-12,
/// ruling 5), a `-32602` lists `unrecognized` (T-11), an LSPS1 code stays in 100–199
/// (T-22), and the response carrying it fits in one message even with the costliest id
/// (C-21, ruling 7) and is exactly `jsonrpc`, `id`, `error` (T-13).
pub fn check_error(e: &RpcError) {
    let d = e.data.as_ref().unwrap_or_else(|| panic!("T-12: error without data: {e:?}"));
    assert!(d.is_object(), "T-12: data must be an object: {e:?}");
    assert!(d["message"].is_string(), "ruling 5: data.message: {e:?}");
    if e.code == codes::INVALID_PARAMS {
        assert!(d["unrecognized"].is_array(), "T-11: -32602 without unrecognized: {e:?}");
    }
    assert!(
        [
            codes::PARSE_ERROR,
            codes::INVALID_REQUEST,
            codes::METHOD_NOT_FOUND,
            codes::INVALID_PARAMS,
            codes::INTERNAL_ERROR,
            codes::CLIENT_REJECTED,
            codes::OPTION_MISMATCH,
            codes::NOT_FOUND,
            codes::UNRECOGNIZED_TOKEN,
        ]
        .contains(&e.code),
        "T-22: unexpected code {e:?}"
    );
    let bytes = jsonrpc::error_bytes(Some(&WORST_ID), e);
    assert!(bytes.len() <= MAX_PAYLOAD_LEN, "C-21: error response of {} bytes", bytes.len());
    let v: Value = serde_json::from_slice(&bytes).expect("T-13: the error response is JSON");
    let keys: Vec<&str> = v.as_object().expect("T-13: an object").keys().map(String::as_str).collect();
    assert_eq!(keys, ["error", "id", "jsonrpc"], "T-13");
    assert_eq!(v["id"].as_str(), Some(WORST_ID.as_str()), "T-13: id echoed");
    assert_eq!(v["error"]["code"], json!(e.code));
}

/// An LSPS0.sat or count written as a decimal string, read by the definition: ASCII
/// digits that are exactly the canonical form of a u64 (no sign, no leading zero).
fn canonical_u64(s: &str) -> Option<u64> {
    let n: u64 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

/// An `LSPS0.sat` (T-20): a decimal string; REST also takes a non-negative JSON integer
/// (ruling 3).
fn sat_of(v: Option<&Value>, t: Transport) -> Option<u64> {
    match v? {
        Value::String(s) => canonical_u64(s),
        Value::Number(n) if t == Transport::Rest => n.as_u64(),
        _ => None,
    }
}

/// A `uint16`/`uint32` (G-03): a JSON integer in range; REST also takes a decimal string.
fn uint_of(v: Option<&Value>, max: u64, t: Transport) -> Option<u64> {
    let n = match v? {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) if t == Transport::Rest => canonical_u64(s)?,
        _ => return None,
    };
    (n <= max).then_some(n)
}

/// A create_order request as bLIP-51, create_order says it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub lsp: u64,
    pub client: u64,
    pub confs: u16,
    pub within: u16,
    pub expiry: u32,
    pub token: Token,
    pub refund: Option<String>,
    pub announce: bool,
    pub client_info: Option<Value>,
    pub public_key: Option<String>,
}

/// How bLIP-51's create_order errors (and rulings 1–5) answer `p`, written from the spec and apart from
/// `validate.rs`: the values of an acceptable request, or the code and `data.property` of
/// the first failing check, in bLIP-51's field order (ruling 4). Property `""` for 102.
pub fn expected_create_order(
    p: &Map<String, Value>,
    t: Transport,
    o: &Lsps1Options,
    tokens: &TokenPolicy,
) -> Result<Expected, (i64, String)> {
    let bad = |f: &str| Err((codes::INVALID_PARAMS, f.to_string()));
    let mismatch = |f: &str| Err((codes::OPTION_MISMATCH, f.to_string()));
    let ext: &[&str] = if t == Transport::Rest { &REST_EXTENSIONS } else { &P2P_EXTENSIONS };
    // C-02/T-10: unknown params first; the smallest name is the property (cut like the echo).
    if let Some(first) =
        p.keys().filter(|k| !CREATE_ORDER_FIELDS.contains(&k.as_str()) && !ext.contains(&k.as_str())).min()
    {
        return bad(jsonrpc::truncate(first, MAX_NAME_ECHO));
    }
    let Some(lsp) = sat_of(p.get("lsp_balance_sat"), t) else { return bad("lsp_balance_sat") }; // C-01
    if lsp == 0 {
        return bad("lsp_balance_sat"); // C-03
    }
    if lsp < o.min_initial_lsp_balance_sat {
        return mismatch("min_initial_lsp_balance_sat"); // C-07
    }
    if lsp > o.max_initial_lsp_balance_sat {
        return mismatch("max_initial_lsp_balance_sat");
    }
    let Some(client) = sat_of(p.get("client_balance_sat"), t) else { return bad("client_balance_sat") }; // C-04
    if client < o.min_initial_client_balance_sat {
        return mismatch("min_initial_client_balance_sat"); // C-06
    }
    if client > o.max_initial_client_balance_sat {
        return mismatch("max_initial_client_balance_sat");
    }
    let Some(total) = lsp.checked_add(client) else { return bad("client_balance_sat") }; // C-08 overflow
    if total < o.min_channel_balance_sat {
        return mismatch("min_channel_balance_sat"); // C-08
    }
    if total > o.max_channel_balance_sat {
        return mismatch("max_channel_balance_sat");
    }
    let f = "required_channel_confirmations";
    let Some(confs) = uint_of(p.get(f), u16::MAX.into(), t) else { return bad(f) };
    if confs < u64::from(o.min_required_channel_confirmations) {
        return mismatch("min_required_channel_confirmations"); // C-09
    }
    let f = "funding_confirms_within_blocks";
    let Some(within) = uint_of(p.get(f), u16::MAX.into(), t) else { return bad(f) };
    if within < u64::from(o.min_funding_confirms_within_blocks) {
        return mismatch("min_funding_confirms_within_blocks"); // C-10
    }
    let f = "channel_expiry_blocks";
    let Some(expiry) = uint_of(p.get(f), u32::MAX.into(), t) else { return bad(f) };
    if expiry == 0 {
        return bad(f); // C-05
    }
    if expiry > u64::from(o.max_channel_expiry_blocks) {
        return mismatch("max_channel_expiry_blocks"); // C-11
    }
    let token = match p.get("token") {
        None => Token::Omitted,
        Some(Value::Null) => Token::Null,
        Some(Value::String(s)) => Token::Text(s.clone()),
        Some(_) => return bad("token"),
    };
    if let Token::Text(s) = &token
        && !s.is_empty()
        && (s.len() > MAX_TOKEN_BYTES || (!tokens.accepted.contains(s) && !tokens.accept_unknown))
    {
        return Err((codes::UNRECOGNIZED_TOKEN, String::new())); // C-13
    }
    let f = "refund_onchain_address";
    let refund = match p.get(f) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            // C-16: SegWit (v0 bech32, v1+ bech32m) on our network.
            let Ok(a) = bitcoin::Address::from_str(s) else { return bad(f) };
            let Ok(a) = a.require_network(NETWORK) else { return bad(f) };
            if a.witness_program().is_none() {
                return bad(f);
            }
            Some(a.to_string())
        }
        Some(_) => return bad(f),
    };
    let Some(announce) = p.get("announce_channel").and_then(Value::as_bool) else { return bad("announce_channel") };
    let client_info = match p.get("client_info") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) if v.to_string().len() <= MAX_CLIENT_INFO_BYTES => Some(v.clone()),
        Some(_) => return bad("client_info"),
    };
    let public_key = match t {
        Transport::P2p => None,
        Transport::Rest => {
            let Some(s) = p.get("public_key").and_then(Value::as_str) else { return bad("public_key") };
            if s.len() != 66 {
                return bad("public_key");
            }
            let Ok(k) = PublicKey::from_str(s) else { return bad("public_key") };
            Some(k.to_string())
        }
    };
    Ok(Expected {
        lsp,
        client,
        confs: confs as u16,
        within: within as u16,
        expiry: expiry as u32,
        token,
        refund,
        announce,
        client_info,
        public_key,
    })
}

/// Validate `p` as create_order over `t` against every option set and token policy, and
/// compare each outcome with [`expected_create_order`]. A refusal must be the expected code
/// naming the expected property (C-01..C-13, ruling 4) in a well-formed error; an accepted
/// order must hold exactly the request's values (C-19), lie within the policy, price
/// without overflow (P-01) and answer within one message (C-21). Returns whether any
/// combination accepted the request.
pub fn check_create_order(p: &Map<String, Value>, t: Transport) -> bool {
    let mut accepted = false;
    for o in &option_sets() {
        for tokens in TOKEN_POLICIES.iter() {
            let got = validate_create_order(p, t, NETWORK, o, tokens);
            let want = expected_create_order(p, t, o, tokens);
            match (&got, &want) {
                (Ok(r), Ok(x)) => {
                    check_accepted(r, x, o, t);
                    if t == Transport::P2p {
                        check_rest_accepts_too(p, r, o, tokens);
                    }
                    accepted = true;
                }
                (Err(e), Err((code, property))) => {
                    check_error(e);
                    assert_eq!(e.code, *code, "wrong code for {p:?}: {e:?}, expected {want:?}");
                    if *code != codes::UNRECOGNIZED_TOKEN {
                        assert_eq!(e.property(), Some(property.as_str()), "wrong property for {p:?}: {e:?}");
                    }
                    if *code == codes::OPTION_MISMATCH {
                        assert!(GET_INFO_FIELDS.contains(&property.as_str()), "C-12: {e:?}");
                    }
                    if t == Transport::Rest {
                        // Every validation refusal is the client's fault: 400, never 5xx.
                        assert_eq!(cln_lsps1::rest::status_of(e).as_u16(), 400, "{e:?}");
                    }
                }
                _ => panic!("validate_create_order({p:?}, {t:?}) = {got:?}, but the spec reads {want:?}"),
            }
        }
    }
    accepted
}

fn check_accepted(r: &OrderRequest, x: &Expected, o: &Lsps1Options, t: Transport) {
    // The values are the request's (C-19, mirrored below).
    assert_eq!(
        (r.lsp_balance_sat, r.client_balance_sat, r.required_channel_confirmations, r.funding_confirms_within_blocks),
        (x.lsp, x.client, x.confs, x.within)
    );
    assert_eq!((r.channel_expiry_blocks, &r.token, r.announce_channel), (x.expiry, &x.token, x.announce));
    assert_eq!((&r.refund_onchain_address, &r.client_info), (&x.refund, &x.client_info));
    assert_eq!(r.public_key.map(|k| k.to_string()), x.public_key);
    assert_eq!(r.public_key.is_some(), t == Transport::Rest, "public_key is REST's only (ruling 9)");
    // Within the advertised policy (C-03..C-11), spelled out.
    assert!(r.lsp_balance_sat >= 1 && r.channel_expiry_blocks >= 1, "C-03/C-05");
    assert!((o.min_initial_lsp_balance_sat..=o.max_initial_lsp_balance_sat).contains(&r.lsp_balance_sat), "C-07");
    assert!(
        (o.min_initial_client_balance_sat..=o.max_initial_client_balance_sat).contains(&r.client_balance_sat),
        "C-06"
    );
    let total = r.lsp_balance_sat.checked_add(r.client_balance_sat).expect("C-08: no overflow once validated");
    assert_eq!(r.capacity_sat(), total);
    assert!((o.min_channel_balance_sat..=o.max_channel_balance_sat).contains(&total), "C-08");
    assert!(r.required_channel_confirmations >= o.min_required_channel_confirmations, "C-09");
    assert!(r.funding_confirms_within_blocks >= o.min_funding_confirms_within_blocks, "C-10");
    assert!(r.channel_expiry_blocks <= o.max_channel_expiry_blocks, "C-11");
    if let Some(tk) = r.token.value() {
        assert!(tk.len() <= MAX_TOKEN_BYTES, "a mirrored token is bounded");
    }
    // P-01: an order within any configurable option set prices without overflow, and the
    // total is the fee plus the client balance, at the floor and the highest fee rate.
    for feerate in [253, u32::MAX] {
        let q = pricing::quote(
            &PricingPolicy::default(),
            r.lsp_balance_sat,
            r.client_balance_sat,
            r.channel_expiry_blocks,
            feerate,
        )
        .unwrap_or_else(|e| panic!("{e} for {r:?}"));
        assert_eq!(q.order_total_sat, q.fee_total_sat + r.client_balance_sat, "P-01");
        let _ = pricing::min_lsp_side_sat(r.capacity_sat(), feerate);
    }
    check_order_response(r);
}

/// The order object of an accepted request, through the service's own serializers: every
/// field mirrored (C-19, with `""` for an omitted token and `null` for a `null` one),
/// `_sat` values as strings (T-20), and the whole response within one message (C-21).
fn check_order_response(r: &OrderRequest) {
    let record = OrderRecord {
        order_id: "3b5c1d7e-8a4f-4f1e-9a6b-2c7d8e9f0a1b".into(),
        created_at_ms: 1_718_001_791_542,
        updated_at_ms: 1_718_001_791_542,
        client_node_id: CLIENT_KEY.into(),
        transport: Transport::P2p,
        lsp_balance_sat: r.lsp_balance_sat,
        client_balance_sat: r.client_balance_sat,
        required_channel_confirmations: r.required_channel_confirmations,
        funding_confirms_within_blocks: r.funding_confirms_within_blocks,
        channel_expiry_blocks: r.channel_expiry_blocks,
        token: r.token.mirror(),
        refund_onchain_address: r.refund_onchain_address.clone(),
        announce_channel: r.announce_channel,
        client_info: r.client_info.clone(),
        phase: Phase::AwaitingPayment,
        held_at_ms: None,
        refunded_after_open: false,
        failure_reason: None,
        fee_total_sat: u64::MAX / 2,
        order_total_sat: u64::MAX,
        funding_feerate_perkw: u32::MAX,
        reserved_sat: 0,
        expires_at_ms: 1_718_005_391_542,
        paid_method: None,
        bolt11: Some(Bolt11Record {
            invoice: LONGEST_INVOICE.clone(),
            payment_hash: "00".repeat(32),
            preimage: "11".repeat(32),
            payment_secret: "22".repeat(32),
            expires_at_ms: 1_718_005_391_542,
            min_final_cltv: 144,
            fee_total_sat: u64::MAX / 2,
            order_total_sat: u64::MAX,
        }),
        channel: None,
        // With on-chain payments on, an order with a refund address carries the option
        // (ruling 21): a p2tr address of the node, the longest kind.
        onchain: r.refund_onchain_address.as_ref().map(|_| OnchainRecord {
            address: "bcrt1p".to_string() + &"q".repeat(58),
            expires_at_ms: 1_718_087_791_542,
            fee_total_sat: u64::MAX / 2,
            order_total_sat: u64::MAX,
            min_confirmations: 6,
            surplus_sat: 0,
        }),
        reorg_flagged: false,
        node_id: None,
        client_ip: None,
    };
    let bytes = jsonrpc::success_bytes(&WORST_ID, &order_response(&record)).expect("an order serializes");
    assert!(bytes.len() <= MAX_PAYLOAD_LEN, "C-21: order response of {} bytes", bytes.len());
    let v: Value = serde_json::from_slice(&bytes).expect("JSON");
    let o = &v["result"];
    assert_eq!(o["lsp_balance_sat"], json!(r.lsp_balance_sat.to_string()), "C-19, T-20");
    assert_eq!(o["client_balance_sat"], json!(r.client_balance_sat.to_string()), "C-19, T-20");
    assert_eq!(o["required_channel_confirmations"], json!(r.required_channel_confirmations), "C-19");
    assert_eq!(o["funding_confirms_within_blocks"], json!(r.funding_confirms_within_blocks), "C-19");
    assert_eq!(o["channel_expiry_blocks"], json!(r.channel_expiry_blocks), "C-19");
    assert_eq!(o["announce_channel"], json!(r.announce_channel), "C-19");
    let token = match &r.token {
        Token::Omitted => json!(""),
        Token::Null => Value::Null,
        Token::Text(s) => json!(s),
    };
    assert_eq!(o["token"], token, "C-19: token mirrored, \"\" when omitted");
    assert_eq!(o["order_state"], json!("CREATED"), "C-17");
    assert_eq!(o["channel"], Value::Null, "C-17");
    match &r.refund_onchain_address {
        None => assert!(o["payment"].get("onchain").is_none(), "C-15"),
        Some(a) => {
            let oc = &o["payment"]["onchain"];
            assert_eq!(oc["state"], json!("EXPECT_PAYMENT"), "P-13");
            assert_eq!(oc["min_fee_for_0conf"], Value::Null, "P-11");
            assert_eq!(oc["refund_onchain_address"], json!(a), "P-12");
            assert_eq!(oc["order_total_sat"], json!(u64::MAX.to_string()), "T-20");
        }
    }
}

/// Ruling 3: REST is more lenient than P2P, so a request P2P accepts is accepted over
/// REST too once it names the node (`public_key`), with the same values.
fn check_rest_accepts_too(p: &Map<String, Value>, r: &OrderRequest, o: &Lsps1Options, tokens: &TokenPolicy) {
    let mut q = p.clone();
    q.insert("public_key".into(), json!(CLIENT_KEY));
    let rest = validate_create_order(&q, Transport::Rest, NETWORK, o, tokens)
        .unwrap_or_else(|e| panic!("P2P accepts {p:?} but REST refuses it: {e:?}"));
    assert_eq!(OrderRequest { public_key: None, ..rest }, *r);
}
