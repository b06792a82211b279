//! The pricing policy: integer arithmetic only, every step overflow-checked,
//! every division rounded up so the LSP never undercharges its own costs.
//!
//! ```text
//! lease_fee_sat   = ceil(lsp_balance_sat × fee_ppm_per_year × channel_expiry_blocks / (1e6 × 52,560))
//! onchain_fee_sat = ceil(funding_feerate_perkw × funding_weight / 1000)
//! fee_total_sat   = base_fee_sat + lease_fee_sat + onchain_fee_sat
//! order_total_sat = fee_total_sat + client_balance_sat            (P-01)
//! ```
//! `funding_feerate_perkw` is the node's estimate for `funding_confirms_within_blocks`
//! ([`feerate_for_target`]); the order keeps it and the open uses it (N-05).

use crate::ports::FeeEstimates;

/// Blocks in a year at one block per ten minutes (365 × 144).
pub const BLOCKS_PER_YEAR: u64 = 52_560;

pub use crate::config::PricingPolicy;

/// One order's price, itemised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub funding_feerate_perkw: u32,
    pub base_fee_sat: u64,
    pub lease_fee_sat: u64,
    pub onchain_fee_sat: u64,
    pub fee_total_sat: u64,
    pub order_total_sat: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the order's price does not fit in 64 bits")]
pub struct Overflow;

fn div_ceil(n: u128, d: u128) -> u128 {
    n.div_ceil(d)
}

/// Price an order.
pub fn quote(
    policy: &PricingPolicy,
    lsp_balance_sat: u64,
    client_balance_sat: u64,
    channel_expiry_blocks: u32,
    funding_feerate_perkw: u32,
) -> Result<Quote, Overflow> {
    let product = u128::from(lsp_balance_sat)
        .checked_mul(u128::from(policy.fee_ppm_per_year))
        .and_then(|p| p.checked_mul(u128::from(channel_expiry_blocks)))
        .ok_or(Overflow)?;
    let lease = div_ceil(product, 1_000_000u128 * u128::from(BLOCKS_PER_YEAR));
    let lease_fee_sat = u64::try_from(lease).map_err(|_| Overflow)?;
    let onchain_fee_sat = onchain_fee_sat(funding_feerate_perkw, policy.funding_weight).ok_or(Overflow)?;
    let fee_total_sat =
        policy.base_fee_sat.checked_add(lease_fee_sat).and_then(|f| f.checked_add(onchain_fee_sat)).ok_or(Overflow)?;
    let order_total_sat = fee_total_sat.checked_add(client_balance_sat).ok_or(Overflow)?;
    Ok(Quote {
        funding_feerate_perkw,
        base_fee_sat: policy.base_fee_sat,
        lease_fee_sat,
        onchain_fee_sat,
        fee_total_sat,
        order_total_sat,
    })
}

/// `ceil(feerate_perkw × weight / 1000)`.
pub fn onchain_fee_sat(feerate_perkw: u32, weight: u64) -> Option<u64> {
    u64::try_from(div_ceil(u128::from(feerate_perkw) * u128::from(weight), 1000)).ok()
}

/// The fee rate that confirms within `target_blocks` (N-05): the estimate of the largest
/// blockcount that is still ≤ the target (a faster estimate is never cheaper); a target
/// below every estimate takes the fastest one. With no estimates, lightningd's `opening`
/// rate. Never below the relay `floor`. `None` when the node has no fee information.
pub fn feerate_for_target(fees: &FeeEstimates, target_blocks: u16) -> Option<u32> {
    let target = u32::from(target_blocks);
    let chosen = fees
        .estimates
        .iter()
        .filter(|(blocks, _)| *blocks <= target)
        .max_by_key(|(blocks, _)| *blocks)
        .or_else(|| fees.estimates.iter().min_by_key(|(blocks, _)| *blocks))
        .map(|(_, rate)| *rate)
        .or(fees.opening_perkw)?;
    Some(chosen.max(fees.floor_perkw))
}

/// Anchor outputs on a commitment transaction (2 × 330 sat).
const ANCHORS_SAT: u64 = 660;
/// Weight of an anchor commitment with no HTLCs (BOLT 3), plus room for four HTLC outputs
/// (172 WU each) so the opener can still add HTLCs at the current fee rate.
const COMMITMENT_WEIGHT: u64 = 1124 + 4 * 172;
/// Dust limit a channel reserve never goes below.
const MIN_RESERVE_SAT: u64 = 546;

/// The least the LSP's side of a new channel must hold (Bitkit #1856): as the
/// opener it pays the commitment fee and the anchors, and keeps the reserve the client
/// imposes (1% of capacity, the common default, never below dust). An order that leaves
/// less on the LSP's side fails at open time, after the client paid; refuse it up front.
pub fn min_lsp_side_sat(capacity_sat: u64, commitment_feerate_perkw: u32) -> u64 {
    let fee = onchain_fee_sat(commitment_feerate_perkw, COMMITMENT_WEIGHT).unwrap_or(u64::MAX);
    let reserve = capacity_sat.div_ceil(100).max(MIN_RESERVE_SAT);
    fee.saturating_add(ANCHORS_SAT).saturating_add(reserve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_hand_computed() {
        let p = PricingPolicy::default();
        // (lsp, client, blocks, perkw) → (lease, onchain, fee_total, order_total)
        type Row = (u64, u64, u32, u32, u64, u64, u64, u64);
        let table: &[Row] = &[
            // One year of 1,000,000 sat at 2% = 20,000; 7500 perkw × 702 WU = 5265 (CLN's own
            // opening_channel_satoshis at that rate); + 1000 base.
            (1_000_000, 0, 52_560, 7_500, 20_000, 5_265, 26_265, 26_265),
            // A quarter year of 10,000,000: 10e6 × 20,000 × 13,140 / 52.56e9 = 50,000 exactly.
            (10_000_000, 0, 13_140, 11_000, 50_000, 7_722, 58_722, 58_722),
            // Rounding up: 100,000 × 20,000 × 1 / 52.56e9 = 0.038 → 1; 253 × 702 / 1000 = 177.6 → 178.
            (100_000, 0, 1, 253, 1, 178, 1_179, 1_179),
            // Client balance is added to the total, not the fee.
            (500_000, 200_000, 4_320, 3_750, 822, 2_633, 4_455, 204_455),
        ];
        for &(lsp, client, blocks, rate, lease, onchain, fee, total) in table {
            let q = quote(&p, lsp, client, blocks, rate).unwrap();
            assert_eq!(
                (q.lease_fee_sat, q.onchain_fee_sat, q.fee_total_sat, q.order_total_sat),
                (lease, onchain, fee, total),
                "{lsp} {blocks}"
            );
            assert_eq!(q.order_total_sat, q.fee_total_sat + client, "P-01");
        }
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let p = PricingPolicy { base_fee_sat: u64::MAX, ..Default::default() };
        assert_eq!(quote(&p, 1, 0, 1, 253), Err(Overflow));
        let p = PricingPolicy::default();
        assert_eq!(quote(&p, 0, u64::MAX, 1, 253), Err(Overflow));
        let p = PricingPolicy { fee_ppm_per_year: 10_000_000, ..Default::default() };
        assert_eq!(quote(&p, u64::MAX, 0, u32::MAX, 253), Err(Overflow));
        // The u128 product itself overflows here (2^64 · 2^64 · 2^32): caught, not wrapped.
        let p = PricingPolicy { fee_ppm_per_year: u64::MAX, ..Default::default() };
        assert_eq!(quote(&p, u64::MAX, 0, u32::MAX, 253), Err(Overflow));
    }

    fn fees() -> FeeEstimates {
        // The recorded `feerates perkw` of CLN v26.06.6 on regtest.
        FeeEstimates {
            estimates: vec![(2, 15_000), (6, 11_000), (12, 7_500), (100, 3_750)],
            unilateral_close_perkw: Some(11_000),
            opening_perkw: Some(7_500),
            floor_perkw: 253,
        }
    }

    #[test]
    fn n05_feerate_for_target() {
        let f = fees();
        assert_eq!(feerate_for_target(&f, 1), Some(15_000));
        assert_eq!(feerate_for_target(&f, 2), Some(15_000));
        assert_eq!(feerate_for_target(&f, 6), Some(11_000));
        assert_eq!(feerate_for_target(&f, 11), Some(11_000));
        assert_eq!(feerate_for_target(&f, 144), Some(3_750));
        let none = FeeEstimates {
            estimates: vec![],
            opening_perkw: Some(7_500),
            floor_perkw: 253,
            unilateral_close_perkw: None,
        };
        assert_eq!(feerate_for_target(&none, 6), Some(7_500));
        assert_eq!(feerate_for_target(&FeeEstimates::default(), 6), None);
        let low = FeeEstimates { estimates: vec![(2, 100)], floor_perkw: 253, ..Default::default() };
        assert_eq!(feerate_for_target(&low, 6), Some(253));
    }

    #[test]
    fn commitment_headroom() {
        // 11,000 perkw × 1812 WU = 19,932; + 660 anchors + 1% of 110,000 = 1,100.
        assert_eq!(min_lsp_side_sat(110_000, 11_000), 19_932 + 660 + 1_100);
        // The reserve rounds up: 1% of 110,001 is 1,100.01 → 1,101.
        assert_eq!(min_lsp_side_sat(110_001, 11_000), 19_932 + 660 + 1_101);
        // The reserve never goes below dust.
        assert_eq!(min_lsp_side_sat(10_000, 253), 459 + 660 + 546);
    }
}
