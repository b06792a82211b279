//! The on-chain payment's decision table (rulings 22–25; P-10, P-13, P-14).

use super::*;
use crate::order::PaymentState;
use crate::order::chain::{ChainOutput, Outpoint, OutputRole};

const TERMS: OnchainTerms = OnchainTerms { order_total_sat: 100_000, min_confirmations: 1 };

fn out(n: u8, sat: u64, height: Option<u32>, role: OutputRole) -> ChainOutput {
    ChainOutput { outpoint: op(n), amount_sat: sat, blockheight: height, role }
}

fn op(n: u8) -> Outpoint {
    Outpoint { txid: format!("{n:02x}").repeat(32), vout: u32::from(n) }
}

fn view(phase: Phase, paid: Option<PaymentMethod>) -> OrderView {
    OrderView { phase, paid_method: paid, reorg_flagged: false, surplus_sat: 0, refund_pending: false }
}

const WAITING: OrderView = OrderView {
    phase: Phase::AwaitingPayment,
    paid_method: None,
    reorg_flagged: false,
    surplus_sat: 0,
    refund_pending: false,
};

#[test]
fn p13_confirmed_outputs_that_reach_the_total_pay() {
    let outs = [out(1, 60_000, Some(100), OutputRole::Seen), out(2, 40_000, Some(101), OutputRole::Seen)];
    assert_eq!(
        next_steps(WAITING, TERMS, &outs, 101),
        vec![ChainStep::Pay { outputs: vec![op(1), op(2)], surplus_sat: 0 }]
    );
    // Underpaid: wait (the expiry refunds it).
    assert_eq!(next_steps(WAITING, TERMS, &outs[..1], 101), vec![]);
}

#[test]
fn p10_confirmations_asked_and_never_more_than_six() {
    let outs = [out(1, 100_000, Some(100), OutputRole::Seen)];
    let three = OnchainTerms { min_confirmations: 3, ..TERMS };
    assert_eq!(next_steps(WAITING, three, &outs, 101), vec![]);
    assert!(matches!(next_steps(WAITING, three, &outs, 102)[..], [ChainStep::Pay { .. }]));
    let ten = OnchainTerms { min_confirmations: 10, ..TERMS };
    assert!(matches!(next_steps(WAITING, ten, &outs, 105)[..], [ChainStep::Pay { .. }]));
    // Unconfirmed outputs never count.
    let unconf = [out(1, 100_000, None, OutputRole::Seen)];
    assert_eq!(next_steps(WAITING, TERMS, &unconf, 200), vec![]);
}

#[test]
fn outputs_beyond_the_total_stay_out_of_the_payment_and_go_back_once_paid() {
    let outs = [
        out(1, 100_000, Some(100), OutputRole::Seen),
        out(2, 100_000, Some(100), OutputRole::Seen),
        out(3, 5_000, Some(99), OutputRole::Seen),
    ];
    let steps = next_steps(WAITING, TERMS, &outs, 100);
    // Mined order first: the 5,000 and one of the 100,000 pay; the other is left over.
    assert_eq!(steps, vec![ChainStep::Pay { outputs: vec![op(3), op(1)], surplus_sat: 5_000 }]);
    let after = [
        out(1, 100_000, Some(100), OutputRole::Payment),
        out(2, 100_000, Some(100), OutputRole::Seen),
        out(3, 5_000, Some(99), OutputRole::Payment),
    ];
    let held = view(Phase::PaymentHeld, Some(PaymentMethod::Onchain));
    assert_eq!(next_steps(held, TERMS, &after, 100), vec![ChainStep::Refund(vec![op(2)])]);
}

#[test]
fn p14_a_failed_order_refunds_its_payment_and_everything_else() {
    let outs = [
        out(1, 100_000, Some(100), OutputRole::Payment),
        out(2, 3_000, Some(101), OutputRole::Seen),
        out(3, 3_000, None, OutputRole::Seen),
        out(4, 9_000, Some(99), OutputRole::Refunding),
    ];
    let failed = view(Phase::Failed, Some(PaymentMethod::Onchain));
    assert_eq!(next_steps(failed, TERMS, &outs, 101), vec![ChainStep::Refund(vec![op(1), op(2)])]);
    // Expired underpaid: nothing was a payment; what came is refunded.
    let expired = view(Phase::Failed, None);
    assert_eq!(next_steps(expired, TERMS, &outs[1..], 101), vec![ChainStep::Refund(vec![op(2)])]);
}

#[test]
fn outputs_after_a_lightning_payment_are_refunded() {
    let outs = [out(1, 100_000, Some(100), OutputRole::Seen)];
    for phase in [Phase::PaymentHeld, Phase::Opening, Phase::Completed] {
        let v = view(phase, Some(PaymentMethod::Bolt11));
        assert_eq!(next_steps(v, TERMS, &outs, 100), vec![ChainStep::Refund(vec![op(1)])], "{phase:?}");
    }
}

#[test]
fn ruling25_a_reorg_before_the_open_goes_back_to_waiting_after_it_flags() {
    let outs = [out(1, 100_000, None, OutputRole::Payment)];
    let held = view(Phase::PaymentHeld, Some(PaymentMethod::Onchain));
    assert_eq!(next_steps(held, TERMS, &outs, 120), vec![ChainStep::Unpay]);
    let opening = view(Phase::Opening, Some(PaymentMethod::Onchain));
    assert_eq!(next_steps(opening, TERMS, &outs, 120), vec![ChainStep::Flag(vec![op(1)])]);
    let flagged = OrderView { reorg_flagged: true, ..opening };
    assert_eq!(next_steps(flagged, TERMS, &outs, 120), vec![]);
    // Never refunded after the open, reorged or not: the channel stands.
    let done = view(Phase::Completed, Some(PaymentMethod::Onchain));
    let mined_again = [out(1, 100_000, Some(121), OutputRole::Payment)];
    assert_eq!(next_steps(done, TERMS, &mined_again, 121), vec![ChainStep::Keep(vec![op(1)])]);
}

#[test]
fn wire_states_of_the_onchain_option() {
    use crate::order::onchain_option_state as st;
    let on = Some(PaymentMethod::Onchain);
    assert_eq!(st(Phase::AwaitingPayment, None), PaymentState::ExpectPayment);
    assert_eq!(st(Phase::PaymentHeld, on), PaymentState::Paid);
    assert_eq!(st(Phase::Opening, on), PaymentState::Paid);
    assert_eq!(st(Phase::Completed, on), PaymentState::Paid);
    assert_eq!(st(Phase::Failed, on), PaymentState::Refunded);
    assert_eq!(st(Phase::Completed, Some(PaymentMethod::Bolt11)), PaymentState::Refunded);
    assert_eq!(st(Phase::Failed, None), PaymentState::Refunded);
}

#[test]
fn refund_fee_comes_from_the_amount_and_dust_is_kept() {
    let w = refund_weight(1, 22);
    assert_eq!(refund_amount(100_000, w, 7_500), Some(100_000 - (w * 7_500).div_ceil(1000)));
    assert_eq!(refund_amount(1_000, w, 7_500), None);
    assert_eq!(refund_amount(0, w, 253), None);
}

#[test]
fn ruling23_a_surplus_goes_back_once_the_channel_opened() {
    let outs = [out(1, 150_000, Some(100), OutputRole::Payment)];
    let done = OrderView { surplus_sat: 50_000, ..view(Phase::Completed, Some(PaymentMethod::Onchain)) };
    assert_eq!(
        next_steps(done, TERMS, &outs, 101),
        vec![ChainStep::RefundSurplus { from: vec![op(1)], surplus_sat: 50_000 }]
    );
    // Kept (released to the wallet) only once the surplus refund is mined.
    let sent = OrderView { surplus_sat: 0, refund_pending: true, ..done };
    assert_eq!(next_steps(sent, TERMS, &outs, 102), vec![]);
    let mined = OrderView { refund_pending: false, ..sent };
    assert_eq!(next_steps(mined, TERMS, &outs, 103), vec![ChainStep::Keep(vec![op(1)])]);
    // Not before the open: a failed order refunds the whole outputs instead.
    let held = OrderView { surplus_sat: 50_000, ..view(Phase::PaymentHeld, Some(PaymentMethod::Onchain)) };
    assert_eq!(next_steps(held, TERMS, &outs, 101), vec![]);
    let w = refund_weight(1, 22) + 4 * 43;
    assert_eq!(surplus_amount(50_000, 1, 22, 1_000), Some(50_000 - (w * 1_000).div_ceil(1000)));
    assert_eq!(surplus_amount(700, 1, 22, 1_000), None);
}

const WATCH: FundingWatch = FundingWatch { deadline: 106, feerate_perkw: 11_000, weight: 702, bumped: false };

#[test]
fn ruling26_a_funding_near_its_deadline_is_bumped_for_the_whole_package() {
    let change = Some(Change { amount_sat: 1_000_000, confirmed: false });
    assert_eq!(funding_step(WATCH, change, None, 100, 15_000, 50_000), FundingStep::Wait, "not near yet");
    // Package at 15,000 perkw: 15,000 x 1,146 / 1000 = 17,190 sat, less the parent's
    // 11,000 x 702 / 1000 = 7,722: 9,468 sat on the child's 444 WU.
    assert_eq!(
        funding_step(WATCH, change, None, 104, 15_000, 50_000),
        FundingStep::Bump { child_feerate_perkw: 21_325, capped: false }
    );
    assert_eq!(
        funding_step(WATCH, change, None, 104, 15_000, 20_000),
        FundingStep::Bump { child_feerate_perkw: 20_000, capped: true }
    );
    assert_eq!(funding_step(WATCH, change, None, 104, 10_000, 50_000), FundingStep::Wait, "already pays the market");
    let bumped = FundingWatch { bumped: true, ..WATCH };
    assert_eq!(funding_step(bumped, change, None, 105, 15_000, 50_000), FundingStep::Wait);
    let mined = Some(Change { amount_sat: 1_000_000, confirmed: true });
    assert_eq!(funding_step(WATCH, mined, None, 104, 15_000, 50_000), FundingStep::Confirmed);
    assert!(matches!(funding_step(WATCH, None, None, 104, 15_000, 50_000), FundingStep::Warn(_)), "no change");
    let small = Some(Change { amount_sat: 5_000, confirmed: false });
    assert!(matches!(funding_step(WATCH, small, None, 104, 15_000, 50_000), FundingStep::Warn(_)), "change too small");
    // Bumped: the child's output mined says the parent is; still nothing past the lead: told.
    let child = Some(Change { amount_sat: 990_000, confirmed: true });
    assert_eq!(funding_step(bumped, None, child, 107, 15_000, 50_000), FundingStep::Confirmed);
    assert_eq!(funding_step(bumped, None, None, 108, 15_000, 50_000), FundingStep::Wait);
    assert!(matches!(funding_step(bumped, change, None, 109, 15_000, 50_000), FundingStep::Warn(_)));
}
