//! The HTLC decision table (P-05, P-07; ruling 17).

use super::*;
use crate::store::tests::record;

const NOW: i64 = 1_000_000;
const RULES: HoldRules = HoldRules { safety_margin_blocks: 12, open_allowance_blocks: 6 };

fn order() -> OrderRecord {
    // order_total_sat 20_000 → 20_000_000 msat; secret "22"×32; expires NOW + 1 h.
    record("o1", "peer", NOW)
}

fn part(id: u64, amount_msat: u64) -> HtlcIn {
    HtlcIn {
        key: HtlcKey { short_channel_id: "103x1x0".into(), id },
        payment_hash: order().bolt11.unwrap().payment_hash,
        amount_msat,
        cltv_expiry: 100 + 144,
        height: 100,
        payment_secret: Some("22".repeat(32)),
        total_msat: Some(20_000_000),
        forward: false,
    }
}

fn held(h: &HtlcIn, resolution: Option<Resolution>) -> HtlcRecord {
    HtlcRecord { resolution, ..h.record(NOW) }
}

#[test]
fn p05_single_part_completes() {
    assert_eq!(decide(&part(0, 20_000_000), &order(), &[], NOW, RULES), HtlcDecision::Hold { complete: true });
}

#[test]
fn mpp_in_two_and_three_parts() {
    let o = order();
    let (a, b) = (part(0, 12_000_000), part(1, 8_000_000));
    assert_eq!(decide(&a, &o, &[], NOW, RULES), HtlcDecision::Hold { complete: false });
    assert_eq!(decide(&b, &o, &[held(&a, None)], NOW, RULES), HtlcDecision::Hold { complete: true });
    let (x, y, z) = (part(0, 5_000_000), part(1, 5_000_000), part(2, 10_000_000));
    assert_eq!(decide(&y, &o, &[held(&x, None)], NOW, RULES), HtlcDecision::Hold { complete: false });
    assert_eq!(decide(&z, &o, &[held(&x, None), held(&y, None)], NOW, RULES), HtlcDecision::Hold { complete: true });
    // Parts failed by mpp_timeout do not count towards a new set.
    assert_eq!(
        decide(&z, &o, &[held(&x, Some(Resolution::Failed)), held(&y, None)], NOW, RULES),
        HtlcDecision::Hold { complete: false }
    );
}

#[test]
fn refusals_each_with_incorrect_or_unknown_payment_details() {
    let o = order();
    let cases: Vec<(&str, HtlcIn, i64)> = vec![
        ("wrong secret", HtlcIn { payment_secret: Some("33".repeat(32)), ..part(0, 20_000_000) }, NOW),
        ("no secret", HtlcIn { payment_secret: None, ..part(0, 20_000_000) }, NOW),
        ("underpayment", HtlcIn { total_msat: Some(19_999_999), ..part(0, 19_999_999) }, NOW),
        ("overpayment", HtlcIn { total_msat: Some(20_000_001), ..part(0, 20_000_001) }, NOW),
        ("no total", HtlcIn { total_msat: None, ..part(0, 20_000_000) }, NOW),
        ("late payment", part(0, 20_000_000), NOW + 3_600_000),
        ("cltv too close", HtlcIn { cltv_expiry: 100 + 17, ..part(0, 20_000_000) }, NOW),
        ("cltv exactly margin + allowance", HtlcIn { cltv_expiry: 100 + 18, ..part(0, 20_000_000) }, NOW),
    ];
    for (name, h, now) in cases {
        match decide(&h, &o, &[], now, RULES) {
            HtlcDecision::Fail(Failure::IncorrectOrUnknown, _) => {}
            other => panic!("{name}: {other:?}"),
        }
    }
    // Just enough room (one block more than margin + allowance) is accepted.
    assert!(matches!(
        decide(&HtlcIn { cltv_expiry: 119, ..part(0, 20_000_000) }, &o, &[], NOW, RULES),
        HtlcDecision::Hold { .. }
    ));
}

#[test]
fn payments_to_an_order_no_longer_waiting_are_failed() {
    for phase in [Phase::PaymentHeld, Phase::Opening, Phase::Completed, Phase::Failed] {
        let o = OrderRecord { phase, ..order() };
        // A part after the set completed, or a payment to an ended order.
        assert!(
            matches!(
                decide(&part(9, 1_000), &o, &[held(&part(0, 20_000_000), None)], NOW, RULES),
                HtlcDecision::Fail(..)
            ),
            "{phase:?}"
        );
    }
}

#[test]
fn replays_get_the_same_answer() {
    let h = part(0, 20_000_000);
    let held_order = OrderRecord { phase: Phase::PaymentHeld, ..order() };
    assert_eq!(decide(&h, &held_order, &[held(&h, None)], NOW, RULES), HtlcDecision::Wait);
    let opening = OrderRecord { phase: Phase::Opening, ..order() };
    assert_eq!(decide(&h, &opening, &[held(&h, None)], NOW, RULES), HtlcDecision::Wait);
    let done = OrderRecord { phase: Phase::Completed, ..order() };
    assert_eq!(decide(&h, &done, &[held(&h, Some(Resolution::Settled))], NOW, RULES), HtlcDecision::Settle);
    let failed = OrderRecord { phase: Phase::Failed, ..order() };
    assert!(matches!(decide(&h, &failed, &[held(&h, Some(Resolution::Failed))], NOW, RULES), HtlcDecision::Fail(..)));
    assert!(matches!(decide(&h, &failed, &[held(&h, None)], NOW, RULES), HtlcDecision::Fail(..)));
    // Completed although the payment went back (ruling 17): never settle then.
    let gift = OrderRecord { phase: Phase::Completed, refunded_after_open: true, ..order() };
    assert!(matches!(decide(&h, &gift, &[held(&h, None)], NOW, RULES), HtlcDecision::Fail(..)));
    // Even a replay after expiry of the option waits: the payment was held in time.
    assert_eq!(decide(&h, &held_order, &[held(&h, None)], NOW + 7_200_000, RULES), HtlcDecision::Wait);
}

#[test]
fn failure_messages_are_well_formed_hex() {
    // As recorded: 400f + amount (u64) + height (u32) (fixtures README).
    assert_eq!(Failure::IncorrectOrUnknown.message_hex(0x31975, 0x6a), "400f00000000000319750000006a");
    assert_eq!(Failure::MppTimeout.message_hex(1, 2), "0017");
}

#[test]
fn parses_recorded_hook_calls() {
    let fixture = |name: &str| -> serde_json::Value {
        let path = format!("{}/tests/fixtures/cln-v26.06.6/hooks/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let h = HtlcIn::parse(&fixture("htlc_accepted.final-hop.json")["params"]).unwrap();
    assert_eq!((h.amount_msat, h.cltv_expiry, h.height, h.forward), (123_456_000, 111, 105, false));
    assert_eq!(h.total_msat, Some(123_456_000));
    assert_eq!(h.key, HtlcKey { short_channel_id: "105x1x0".into(), id: 0 });
    let f = HtlcIn::parse(&fixture("htlc_accepted.forward.json")["params"]).unwrap();
    assert!(f.forward);
    let p = HtlcIn::parse(&fixture("htlc_accepted.final-hop-mpp-part1.json")["params"]).unwrap();
    assert_eq!((p.amount_msat, p.total_msat), (120_000_000, Some(200_000_000)));
    // Replayed after a restart: same HTLC, same key.
    let a = HtlcIn::parse(&fixture("htlc_accepted.held-before-restart.json")["params"]).unwrap();
    let b = HtlcIn::parse(&fixture("htlc_accepted.replay-after-restart.json")["params"]).unwrap();
    assert_eq!((a.key, a.payment_hash, a.cltv_expiry), (b.key, b.payment_hash, b.cltv_expiry));
    assert!(HtlcIn::parse(&serde_json::json!({"htlc": {"payment_hash": "zz"}})).is_none());
    assert!(HtlcIn::parse(&serde_json::json!(null)).is_none());
}
