//! What an order's on-chain payment does next (rulings 22–25; P-08, P-10, P-13, P-14), as a
//! pure function of the order's phase, its option's terms, the outputs seen at its address
//! and the chain tip. No I/O: the engine reads the wallet, asks here, and carries out the
//! steps (`lifecycle/engine/chain.rs`).
//!
//! The on-chain payment is a state machine of its own, over the outputs of the order's
//! address rather than over HTLCs:
//!
//! ```text
//!  Seen ──deep enough, sum ≥ total, order waiting──▶ Payment ──order failed──▶ Refunding ──▶ Refunded
//!   │                                                  │  └──reorged out before the open──▶ Seen
//!   └──order paid (either way), failed or ended──────────────────────────────▶ Refunding / Dust
//! ```

use crate::order::chain::{ChainOutput, Outpoint, OutputRole, confirmations};
use crate::order::{PaymentMethod, Phase};

/// bLIP-51: an on-chain payment MUST count after 6 confirmations, whatever else was asked.
pub const MAX_CONFIRMATIONS: u16 = 6;

/// The on-chain option's terms, fixed when the order was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnchainTerms {
    pub order_total_sat: u64,
    pub min_confirmations: u16,
}

/// What the order as a whole looks like to its on-chain payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderView {
    pub phase: Phase,
    pub paid_method: Option<PaymentMethod>,
    /// The operator was already told that a payment of this order left the chain.
    pub reorg_flagged: bool,
    /// Paid beyond the total and not sent back yet.
    pub surplus_sat: u64,
    /// A refund of this order is out and not yet confirmed.
    pub refund_pending: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainStep {
    /// Confirmed outputs reach the order total: these are its payment (ruling 23).
    Pay { outputs: Vec<Outpoint>, surplus_sat: u64 },
    /// A payment left the chain before the open started: back to waiting (ruling 25).
    Unpay,
    /// A payment left the chain after the open: the channel stands, the operator is told.
    Flag(Vec<Outpoint>),
    /// Refund exactly these outputs to the client's refund address (ruling 24).
    Refund(Vec<Outpoint>),
    /// The channel opened on this payment: send what was paid beyond the total back from
    /// these outputs, the rest to the wallet as change (ruling 23). Before [`ChainStep::Keep`].
    RefundSurplus { from: Vec<Outpoint>, surplus_sat: u64 },
    /// The channel opened on this payment: its outputs are the LSP's.
    Keep(Vec<Outpoint>),
}

/// The confirmations an output needs to count: what the order asked, never more than six.
pub fn needed(terms: OnchainTerms) -> u32 {
    u32::from(terms.min_confirmations.clamp(1, MAX_CONFIRMATIONS))
}

/// Decide what the outputs of one order's address call for now. Steps are independent:
/// the engine carries them out in order.
pub fn next_steps(order: OrderView, terms: OnchainTerms, outputs: &[ChainOutput], tip: u32) -> Vec<ChainStep> {
    let deep = |o: &ChainOutput| confirmations(o.blockheight, tip) >= needed(terms);
    let confirmed = |o: &ChainOutput| o.blockheight.is_some_and(|h| h <= tip);
    let of = |role: OutputRole| outputs.iter().filter(move |o| o.role == role);
    let paid_here = order.paid_method == Some(PaymentMethod::Onchain);
    let mut steps = vec![];
    match order.phase {
        Phase::AwaitingPayment => {
            // Deep outputs in the order they were mined: the earliest that reach the total pay.
            let mut candidates: Vec<&ChainOutput> = of(OutputRole::Seen).filter(|o| deep(o)).collect();
            candidates.sort_by(|a, b| (a.blockheight, &a.outpoint).cmp(&(b.blockheight, &b.outpoint)));
            let mut sum = 0u64;
            let mut chosen = vec![];
            for o in candidates {
                if sum >= terms.order_total_sat {
                    break;
                }
                sum = sum.saturating_add(o.amount_sat);
                chosen.push(o.outpoint.clone());
            }
            if sum >= terms.order_total_sat && !chosen.is_empty() {
                steps.push(ChainStep::Pay { outputs: chosen, surplus_sat: sum - terms.order_total_sat });
            }
        }
        // Only before `fundchannel` starts: nothing was spent on the payment yet.
        Phase::PaymentHeld if paid_here && of(OutputRole::Payment).any(|o| !deep(o)) => {
            steps.push(ChainStep::Unpay);
            return steps;
        }
        Phase::Opening | Phase::Completed if paid_here => {
            let gone: Vec<Outpoint> =
                of(OutputRole::Payment).filter(|o| !confirmed(o)).map(|o| o.outpoint.clone()).collect();
            if !gone.is_empty() && !order.reorg_flagged {
                steps.push(ChainStep::Flag(gone));
            }
            if order.phase == Phase::Completed {
                let keep: Vec<Outpoint> =
                    of(OutputRole::Payment).filter(|o| confirmed(o)).map(|o| o.outpoint.clone()).collect();
                // The surplus first; the outputs become the LSP's (and are released to the
                // wallet) only once no refund spending them is pending.
                if !keep.is_empty() {
                    if order.surplus_sat > 0 {
                        steps.push(ChainStep::RefundSurplus { from: keep, surplus_sat: order.surplus_sat });
                    } else if !order.refund_pending {
                        steps.push(ChainStep::Keep(keep));
                    }
                }
            }
        }
        _ => {}
    }
    // Whatever is not (or no longer) a payment goes back: outputs after the order was paid
    // either way, after it failed, or beyond what paid it. Only confirmed ones can be spent.
    let waiting = order.phase == Phase::AwaitingPayment;
    let failed = order.phase == Phase::Failed;
    let mut refund: Vec<Outpoint> = vec![];
    if !waiting {
        refund.extend(of(OutputRole::Seen).filter(|o| confirmed(o)).map(|o| o.outpoint.clone()));
    }
    if failed {
        refund.extend(of(OutputRole::Payment).filter(|o| confirmed(o)).map(|o| o.outpoint.clone()));
    }
    if !refund.is_empty() {
        refund.sort();
        steps.push(ChainStep::Refund(refund));
    }
    steps
}

/// Weight of a refund with `inputs` inputs of the wallet (P2TR or P2WPKH, ≤ 68 vB each) and
/// one output to `script_len` bytes of script: what its fee is computed on.
pub fn refund_weight(inputs: usize, script_len: usize) -> u64 {
    // version, locktime, counts, segwit marker: 42 WU; per input 41 bytes non-witness
    // (164 WU) plus a witness of at most 109 WU (P2WPKH); the output: 8 + 1 + script.
    let inputs = inputs as u64;
    42 + inputs.saturating_mul(164 + 109) + 4 * (9 + script_len as u64)
}

/// What a surplus refund of `surplus_sat` from `inputs` outputs sends to a `script_len`
/// script at `feerate_perkw`, the fee (with the change output back to the wallet, a P2TR
/// output of 43 bytes) taken from the surplus; `None` when that leaves dust.
pub fn surplus_amount(surplus_sat: u64, inputs: usize, script_len: usize, feerate_perkw: u32) -> Option<u64> {
    refund_amount(surplus_sat, surplus_weight(inputs, script_len), feerate_perkw)
}

/// Weight of a surplus refund: a whole refund's, plus the change output back to the wallet.
pub fn surplus_weight(inputs: usize, script_len: usize) -> u64 {
    refund_weight(inputs, script_len) + 4 * 43
}

/// The length of `address`'s output script, what a refund's weight depends on (34, a P2TR or
/// P2WSH script, for anything unreadable: the longest standard one).
pub fn script_len(address: &str) -> usize {
    use std::str::FromStr;
    bitcoin::Address::from_str(address).map_or(34, |a| a.assume_checked().script_pubkey().len())
}

/// Below this an output is not worth a transaction (Bitcoin Core's dust limit for P2TR/P2WSH
/// outputs is 330 sat; 546 covers every standard script).
pub const DUST_SAT: u64 = 546;

/// What a refund of `amount_sat` leaves for the client at `feerate_perkw`, or `None` when the
/// fee would eat it down to dust (kept and recorded, ruling 24).
pub fn refund_amount(amount_sat: u64, weight: u64, feerate_perkw: u32) -> Option<u64> {
    let fee = weight.saturating_mul(u64::from(feerate_perkw)).div_ceil(1000);
    amount_sat.checked_sub(fee).filter(|left| *left >= DUST_SAT)
}

#[cfg(test)]
mod tests;

/// What the funding promise of an order asks (ruling 26): its funding transaction confirms
/// within `funding_confirms_within_blocks` of the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FundingWatch {
    /// The block by which the funding transaction must be mined.
    pub deadline: u32,
    /// The fee rate the funding transaction pays (what the order was opened at).
    pub feerate_perkw: u32,
    /// Its weight, as priced.
    pub weight: u64,
    /// A child was already sent.
    pub bumped: bool,
}

/// The funding transaction's change output, as the wallet lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub amount_sat: u64,
    pub confirmed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FundingStep {
    /// Mined: the promise is kept.
    Confirmed,
    Wait,
    /// Spend the change to ourselves at this rate: parent and child together pay the
    /// target rate (CPFP). `capped`: the cap held it below what the target needs.
    Bump {
        child_feerate_perkw: u32,
        capped: bool,
    },
    /// The promise is at risk and cannot be helped by a bump: tell the operator, once.
    Warn(&'static str),
}

/// Weight of the CPFP child: one wallet input, one output to the wallet (the recorded
/// child: 111 vB).
pub const CHILD_WEIGHT: u64 = 444;

/// Blocks before the deadline at which an unconfirmed funding transaction is bumped.
pub const BUMP_LEAD_BLOCKS: u32 = 2;

/// Decide for one funding transaction at `tip`, with the fee market asking `target_perkw`
/// to be mined soon and the operator's cap `cap_perkw` (ruling 26). `change` is `None`
/// when the wallet lists no change output of it (none, or already spent).
///
/// `child` is the bump's own output once one was sent: mined with its parent, it says the
/// parent is mined too (the change it spent is no longer listed then).
pub fn funding_step(
    w: FundingWatch,
    change: Option<Change>,
    child: Option<Change>,
    tip: u32,
    target_perkw: u32,
    cap_perkw: u32,
) -> FundingStep {
    let near = tip.saturating_add(BUMP_LEAD_BLOCKS) >= w.deadline;
    if child.is_some_and(|c| c.confirmed) {
        return FundingStep::Confirmed;
    }
    if w.bumped {
        return match change {
            Some(Change { confirmed: true, .. }) => FundingStep::Confirmed,
            _ if tip > w.deadline.saturating_add(BUMP_LEAD_BLOCKS) => {
                FundingStep::Warn("the funding transaction is still unconfirmed after its bump")
            }
            _ => FundingStep::Wait,
        };
    }
    match change {
        Some(Change { confirmed: true, .. }) => FundingStep::Confirmed,
        None if near => FundingStep::Warn("the funding transaction has no change output to bump"),
        None => FundingStep::Wait,
        Some(_) if !near => FundingStep::Wait,
        Some(c) => {
            if target_perkw <= w.feerate_perkw {
                // It pays what the market asks: a child would not make it any likelier.
                return FundingStep::Wait;
            }
            // The package (parent + child) at the target rate, less what the parent pays.
            let package = u64::from(target_perkw).saturating_mul(w.weight + CHILD_WEIGHT).div_ceil(1000);
            let parent = u64::from(w.feerate_perkw).saturating_mul(w.weight) / 1000;
            let child_fee = package.saturating_sub(parent);
            let want = u32::try_from(child_fee.saturating_mul(1000).div_ceil(CHILD_WEIGHT)).unwrap_or(u32::MAX);
            let rate = want.min(cap_perkw);
            let fee_at_rate = u64::from(rate).saturating_mul(CHILD_WEIGHT).div_ceil(1000);
            if c.amount_sat.saturating_sub(fee_at_rate) < DUST_SAT {
                return FundingStep::Warn("the funding transaction's change is too small to pay for a bump");
            }
            FundingStep::Bump { child_feerate_perkw: rate, capped: want > cap_perkw }
        }
    }
}
