//! The `htlc_accepted` hook payload (ruling 12): `is_forward`, `HtlcIn::parse`
//! and `decide` on the parsed HTLC, for orders in every phase and with the HTLC new, held,
//! settled or failed before (a replay, ruling 17). The input is the hook's `params`
//! object as JSON. Parsing is compared with a plain reading of the hook schema; every
//! decision with the decision table (P-05, P-07); every answer must be one lightningd takes
//! (a malformed `failure_message` makes it `fatal()`).
#![no_main]

use cln_lsps1::cln::hooks::answer_json;
use cln_lsps1::lifecycle::HookAnswer;
use cln_lsps1::lifecycle::htlc::{Failure, HoldRules, HtlcDecision, HtlcIn, decide, is_forward};
use cln_lsps1::order::Phase;
use cln_lsps1::order::Transport;
use cln_lsps1::store::{Bolt11Record, HtlcKey, HtlcRecord, HtlcWrite, OrderRecord, Resolution};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const NOW: i64 = 1_718_001_791_542;
const RULES: HoldRules = HoldRules { safety_margin_blocks: 12, open_allowance_blocks: 6 };
const PHASES: [Phase; 5] =
    [Phase::AwaitingPayment, Phase::PaymentHeld, Phase::Opening, Phase::Completed, Phase::Failed];

/// The hook schema read apart from `htlc.rs`: `None` unless every field a decision needs
/// is there with its type (and the height, `cltv_expiry - cltv_expiry_relative`, fits).
fn expected(v: &Value) -> Option<HtlcIn> {
    let htlc = v.get("htlc")?.as_object()?;
    let onion = v.get("onion");
    let cltv_expiry = htlc.get("cltv_expiry")?.as_u64()?;
    let cltv_expiry = u32::try_from(cltv_expiry).ok()?;
    let relative = htlc.get("cltv_expiry_relative")?.as_i64()?;
    let height = u32::try_from(i128::from(cltv_expiry) - i128::from(relative)).ok()?;
    let hash = htlc.get("payment_hash")?.as_str()?;
    if hash.len() != 64 || hex_bytes(hash).is_none() {
        return None;
    }
    Some(HtlcIn {
        key: HtlcKey {
            short_channel_id: htlc.get("short_channel_id")?.as_str()?.to_string(),
            id: htlc.get("id")?.as_u64()?,
        },
        payment_hash: hash.to_lowercase(),
        amount_msat: htlc.get("amount_msat")?.as_u64()?,
        cltv_expiry,
        height,
        payment_secret: onion.and_then(|o| o.get("payment_secret")?.as_str()).map(str::to_ascii_lowercase),
        total_msat: onion.and_then(|o| o.get("total_msat")?.as_u64()),
        forward: forward(v),
    })
}

/// A forward: the onion names a next hop, or lightningd says where the HTLC goes.
fn forward(v: &Value) -> bool {
    let onion = v.get("onion").and_then(Value::as_object);
    onion.is_some_and(|o| o.contains_key("short_channel_id") || o.contains_key("next_node_id"))
        || v.as_object().is_some_and(|m| m.contains_key("forward_to"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else { return };
    assert_eq!(is_forward(&v), forward(&v), "is_forward({v})");
    let h = HtlcIn::parse(&v);
    assert_eq!(h, expected(&v), "HtlcIn::parse({v})");
    let Some(h) = h else { return };
    assert!(h.payment_hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "lowercase hash");
    let r = h.record(NOW);
    assert_eq!(
        (&r.key, &r.payment_hash, r.amount_msat, r.cltv_expiry),
        (&h.key, &h.payment_hash, h.amount_msat, h.cltv_expiry)
    );
    assert_eq!((r.received_at_ms, r.resolution), (NOW, None));
    if h.forward {
        return; // answered `continue` before any order is looked at
    }

    // Orders the HTLC may pay: one with a fixed secret and price, and one that matches the
    // HTLC's secret and total, so that the hold branch is reachable too.
    let fixed = order("22".repeat(32), 20_000);
    let matching =
        order(h.payment_secret.clone().unwrap_or_else(|| "22".repeat(32)), h.total_msat.map_or(20_000, |t| t / 1000));
    let other = HtlcKey { short_channel_id: format!("{}x", h.key.short_channel_id), id: h.key.id };
    for base in [&fixed, &matching] {
        let want_msat = base.bolt11.as_ref().map_or(0, |b| b.order_total_sat.saturating_mul(1000));
        let sets: [Vec<HtlcRecord>; 5] = [
            vec![],
            vec![held(&h.key, h.amount_msat, None)],
            vec![held(&h.key, h.amount_msat, Some(Resolution::Settled))],
            vec![held(&h.key, h.amount_msat, Some(Resolution::Failed))],
            vec![held(&other, want_msat / 2, None), held(&other, 1, Some(Resolution::Failed))],
        ];
        for phase in PHASES {
            for refunded_after_open in [false, true] {
                let o = OrderRecord { phase, refunded_after_open, ..base.clone() };
                for set in &sets {
                    for now in [NOW, o.expires_at_ms] {
                        check(&h, &o, set, now);
                    }
                }
            }
        }
        let no_bolt11 = OrderRecord { bolt11: None, ..base.clone() };
        check(&h, &no_bolt11, &[], NOW);
    }
});

fn check(h: &HtlcIn, o: &OrderRecord, set: &[HtlcRecord], now: i64) {
    let d = decide(h, o, set, now, RULES);
    // The decision table, read from rulings 12 and 17.
    let want = if let Some(k) = set.iter().find(|k| k.key == h.key) {
        match (k.resolution, o.phase) {
            (Some(Resolution::Settled), _) => "settle",
            (Some(Resolution::Failed), _) => "fail",
            (None, Phase::Completed) if !o.refunded_after_open => "settle",
            (None, Phase::Completed | Phase::Failed) => "fail",
            (None, _) => "wait",
        }
    } else {
        let b = o.bolt11.as_ref();
        let holdable = b.is_some_and(|b| {
            o.phase == Phase::AwaitingPayment
                && now < b.expires_at_ms
                && h.payment_secret.as_deref() == Some(b.payment_secret.as_str())
                && h.total_msat.map(u128::from) == Some(u128::from(b.order_total_sat) * 1000)
                && i64::from(h.cltv_expiry) - i64::from(h.height)
                    > i64::from(RULES.safety_margin_blocks + RULES.open_allowance_blocks)
        });
        if holdable { "hold" } else { "fail" }
    };
    let answer = match &d {
        HtlcDecision::Settle => {
            assert_eq!(want, "settle", "{d:?} for {h:?}");
            HookAnswer::Resolve {
                payment_key: o.bolt11.as_ref().map_or_else(|| "11".repeat(32), |b| b.preimage.clone()),
            }
        }
        HtlcDecision::Wait => {
            assert_eq!(want, "wait", "{d:?} for {h:?}");
            HookAnswer::Continue
        }
        HtlcDecision::Hold { complete } => {
            assert_eq!(want, "hold", "{d:?} for {h:?} on {o:?}");
            let held: u128 = set.iter().filter(|k| k.resolution.is_none()).map(|k| u128::from(k.amount_msat)).sum();
            let total = u128::from(o.bolt11.as_ref().map_or(0, |b| b.order_total_sat)) * 1000;
            assert_eq!(
                *complete,
                held + u128::from(h.amount_msat) >= total,
                "P-05: complete when the set covers the order"
            );
            assert_eq!(d.write(), HtlcWrite::Hold { complete: *complete });
            HookAnswer::Continue
        }
        HtlcDecision::Fail(f, why) => {
            assert_eq!(want, "fail", "{d:?} for {h:?} on {o:?}");
            assert!(!why.is_empty());
            assert_eq!(d.write(), HtlcWrite::Nothing);
            let msg = f.message_hex(h.amount_msat, h.height);
            if *f == Failure::IncorrectOrUnknown {
                // BOLT 4 incorrect_or_unknown_payment_details: PERM|15, htlc_msat, height.
                let b = hex_bytes(&msg).expect("hex");
                assert_eq!(b.len(), 14);
                assert_eq!(&b[..2], &[0x40, 0x0f]);
                assert_eq!(u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")), h.amount_msat);
                assert_eq!(u32::from_be_bytes(b[10..].try_into().expect("4 bytes")), h.height);
            }
            HookAnswer::Fail { failure_message: msg }
        }
    };
    // What lightningd receives: `continue`, `resolve` with a 32-byte key, or `fail` with a
    // well-formed hex message.
    let j = answer_json(&answer);
    match j["result"].as_str() {
        Some("continue") => {}
        Some("resolve") => assert_eq!(j["payment_key"].as_str().and_then(hex_bytes).map(|b| b.len()), Some(32)),
        Some("fail") => {
            let m = j["failure_message"].as_str().and_then(hex_bytes).expect("hex failure_message");
            assert!(m.len() >= 2);
        }
        other => panic!("answer {other:?}"),
    }
}

fn order(payment_secret: String, order_total_sat: u64) -> OrderRecord {
    OrderRecord {
        order_id: "3b5c1d7e-8a4f-4f1e-9a6b-2c7d8e9f0a1b".into(),
        created_at_ms: NOW,
        updated_at_ms: NOW,
        client_node_id: "025b7a68b4cd85668e65db6a343a4c607a462cdd010daa793f82be561a3316c5b1".into(),
        transport: Transport::P2p,
        lsp_balance_sat: 1_000_000,
        client_balance_sat: 0,
        required_channel_confirmations: 0,
        funding_confirms_within_blocks: 6,
        channel_expiry_blocks: 13_140,
        token: Some(String::new()),
        refund_onchain_address: None,
        announce_channel: false,
        client_info: None,
        phase: Phase::AwaitingPayment,
        held_at_ms: None,
        refunded_after_open: false,
        failure_reason: None,
        fee_total_sat: order_total_sat,
        order_total_sat,
        funding_feerate_perkw: 253,
        reserved_sat: 1_000_000,
        expires_at_ms: NOW + 3_600_000,
        paid_method: None,
        bolt11: Some(Bolt11Record {
            invoice: "lnbcrt1".into(),
            payment_hash: "00".repeat(32),
            preimage: "11".repeat(32),
            payment_secret,
            expires_at_ms: NOW + 3_600_000,
            min_final_cltv: 144,
            fee_total_sat: order_total_sat,
            order_total_sat,
        }),
        channel: None,
        onchain: None,
        reorg_flagged: false,
        node_id: None,
        client_ip: None,
    }
}

fn held(key: &HtlcKey, amount_msat: u64, resolution: Option<Resolution>) -> HtlcRecord {
    HtlcRecord {
        key: key.clone(),
        payment_hash: "00".repeat(32),
        amount_msat,
        cltv_expiry: 500,
        received_at_ms: NOW - 1000,
        resolution,
    }
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 == 1 {
        return None;
    }
    b.chunks(2).map(|p| Some(((p[0] as char).to_digit(16)? * 16 + (p[1] as char).to_digit(16)?) as u8)).collect()
}
