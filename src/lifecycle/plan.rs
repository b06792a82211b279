//! What a paid order does next (issue 11 §2–4, decisions 13–14, N-01, N-02, N-07), as a
//! pure function of the order, its HTLCs and what the driver observed. No I/O.

use crate::lsps1::order::{FailReason, Phase};
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
    /// could not be paid for (decision 17).
    pub htlcs_live: bool,
    /// `Some(false)` when the wallet was found unable to fund the channel (issue 11 §2).
    pub funds_ok: Option<bool>,
}

/// Deadlines, from the options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Fail held HTLCs this many blocks before their `cltv_expiry` (decision 13).
    pub safety_margin_blocks: u32,
    /// Give up on a client that has not connected this long after its payment was held.
    pub open_deadline_ms: i64,
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
    if seen.height.saturating_add(d.safety_margin_blocks) >= earliest {
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
