//! What a paid order does next (rulings 13–14, N-01, N-02, N-07), as a
//! pure function of the order, its HTLCs and what the driver observed. No I/O.

use crate::order::{FailReason, Phase};
use crate::store::{HtlcRecord, OrderRecord};

/// What the driver saw, just now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub now_ms: i64,
    pub height: u32,
    /// The client node is connected (N-02).
    pub peer_connected: bool,
    /// Every held HTLC has a hook call pending in this process, so the plugin can answer
    /// it. After a restart lightningd replays them; until then nothing may be opened that
    /// could not be paid for (ruling 17).
    pub htlcs_live: bool,
    /// `Some(false)` when the wallet was found unable to fund the channel.
    pub funds_ok: Option<bool>,
}

/// Deadlines, from the options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Fail held HTLCs this many blocks before their `cltv_expiry` (ruling 13).
    pub safety_margin_blocks: u32,
    /// Give up on a client that has not connected this long after its payment was held.
    pub open_deadline_ms: i64,
    /// Blocks an open may take: no open starts with less room than margin + this, so no
    /// block found during `fundchannel` can put a held HTLC inside its margin.
    pub open_allowance_blocks: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do yet (waiting for the client to connect, or for lightningd's replay).
    Wait,
    /// Open the channel now.
    Open,
    /// Fail the held HTLCs back: the refund (P-07).
    Refund(FailReason),
    /// The order is not one this driver acts on (not `PaymentHeld`).
    Done,
}

/// The earliest `cltv_expiry` of the HTLCs still held.
pub fn earliest_expiry(set: &[HtlcRecord]) -> Option<u32> {
    set.iter().filter(|h| h.resolution.is_none()).map(|h| h.cltv_expiry).min()
}

/// Decide the next step of a `PaymentHeld` order. The safety deadlines come first: no
/// HTLC is ever held into its margin, whatever else is going on.
pub fn next_step(order: &OrderRecord, set: &[HtlcRecord], seen: Observed, d: Deadlines) -> Step {
    if order.phase != Phase::PaymentHeld {
        return Step::Done;
    }
    let Some(earliest) = earliest_expiry(set) else {
        // Held with nothing held: the HTLCs were resolved behind our back.
        return Step::Refund(FailReason::PaymentLost);
    };
    if seen.height.saturating_add(d.safety_margin_blocks).saturating_add(d.open_allowance_blocks) >= earliest {
        // Too close to open safely, and it only gets closer.
        return Step::Refund(FailReason::CltvDeadline);
    }
    if seen.funds_ok == Some(false) {
        return Step::Refund(FailReason::FundsUnavailable);
    }
    let held_at = order.held_at_ms.unwrap_or(order.updated_at_ms);
    if seen.now_ms.saturating_sub(held_at) >= d.open_deadline_ms {
        return Step::Refund(FailReason::PeerNotConnected);
    }
    if seen.htlcs_live && seen.peer_connected && seen.funds_ok == Some(true) { Step::Open } else { Step::Wait }
}

/// The next step of a `PaymentHeld` order paid on-chain (N-01, N-02): no HTLC holds a
/// deadline, so it waits for its client up to `open_deadline_ms` (the on-chain option's
/// lifetime: the coins are the client's until the channel opens), then is refunded on-chain.
pub fn next_step_onchain(order: &OrderRecord, seen: Observed, open_deadline_ms: i64) -> Step {
    if order.phase != Phase::PaymentHeld {
        return Step::Done;
    }
    if seen.funds_ok == Some(false) {
        return Step::Refund(FailReason::FundsUnavailable);
    }
    let held_at = order.held_at_ms.unwrap_or(order.updated_at_ms);
    if seen.now_ms.saturating_sub(held_at) >= open_deadline_ms {
        return Step::Refund(FailReason::PeerNotConnected);
    }
    if seen.peer_connected && seen.funds_ok == Some(true) { Step::Open } else { Step::Wait }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{HtlcKey, HtlcRecord};

    const D: Deadlines = Deadlines { safety_margin_blocks: 12, open_deadline_ms: 600_000, open_allowance_blocks: 6 };

    fn held(cltv: u32) -> Vec<HtlcRecord> {
        vec![HtlcRecord {
            key: HtlcKey { short_channel_id: "1x1x1".into(), id: 0 },
            payment_hash: "00".repeat(32),
            amount_msat: 1,
            cltv_expiry: cltv,
            received_at_ms: 0,
            resolution: None,
        }]
    }

    fn order() -> OrderRecord {
        OrderRecord { phase: Phase::PaymentHeld, held_at_ms: Some(0), ..crate::store::tests::record("o", "p", 0) }
    }

    fn seen(height: u32) -> Observed {
        Observed { now_ms: 1_000, height, peer_connected: true, htlcs_live: true, funds_ok: Some(true) }
    }

    #[test]
    fn n07_opens_at_once_when_everything_is_there() {
        assert_eq!(next_step(&order(), &held(200), seen(100), D), Step::Open);
    }

    #[test]
    fn safety_first_no_open_without_room_for_it() {
        // 100 + 12 + 6 = 118: an HTLC expiring at 119 may still be opened for, 118 not.
        assert_eq!(next_step(&order(), &held(119), seen(100), D), Step::Open);
        assert_eq!(next_step(&order(), &held(118), seen(100), D), Step::Refund(FailReason::CltvDeadline));
        // The deadline wins over everything else, liveness included.
        let dead = Observed { htlcs_live: false, peer_connected: false, funds_ok: None, ..seen(110) };
        assert_eq!(next_step(&order(), &held(118), dead, D), Step::Refund(FailReason::CltvDeadline));
    }

    #[test]
    fn waits_for_the_client_the_replay_and_the_funds() {
        for s in [
            Observed { peer_connected: false, ..seen(100) },
            Observed { htlcs_live: false, ..seen(100) },
            Observed { funds_ok: None, ..seen(100) },
        ] {
            assert_eq!(next_step(&order(), &held(200), s, D), Step::Wait, "{s:?}");
        }
        assert_eq!(
            next_step(&order(), &held(200), Observed { funds_ok: Some(false), ..seen(100) }, D),
            Step::Refund(FailReason::FundsUnavailable)
        );
        let late = Observed { now_ms: 600_000, peer_connected: false, ..seen(100) };
        assert_eq!(next_step(&order(), &held(200), late, D), Step::Refund(FailReason::PeerNotConnected));
        assert_eq!(next_step(&order(), &[], seen(100), D), Step::Refund(FailReason::PaymentLost));
        let unpaid = OrderRecord { phase: Phase::AwaitingPayment, ..order() };
        assert_eq!(next_step_onchain(&unpaid, seen(100), 1_000), Step::Done);
        assert_eq!(next_step(&unpaid, &held(200), seen(100), D), Step::Done);
    }

    #[test]
    fn n01_an_order_paid_on_chain_opens_for_a_connected_client_and_waits_its_deadline() {
        let o = OrderRecord { paid_method: Some(crate::order::PaymentMethod::Onchain), ..order() };
        // No HTLCs, no CLTV: only the client, the funds and the deadline matter.
        let absent = Observed { peer_connected: false, ..seen(100) };
        assert_eq!(next_step_onchain(&o, seen(100), 2_000), Step::Open);
        assert_eq!(next_step_onchain(&o, absent, 2_000), Step::Wait);
        let broke = Observed { funds_ok: Some(false), ..seen(100) };
        assert_eq!(next_step_onchain(&o, broke, 2_000), Step::Refund(FailReason::FundsUnavailable));
        assert_eq!(next_step_onchain(&o, absent, 1_000), Step::Refund(FailReason::PeerNotConnected));
    }
}
