//! What happens to a sold channel when its lease ends: a pure function of the operator's
//! policy, the lease as the store records it, the channel as lightningd lists it, and the
//! height. No I/O; `engine/lease.rs` carries the answer out, and `lsps1-listleases` shows
//! it with its reason before anything is ever closed.
//!
//! While the lease runs the close guard protects the channel (N-10, ruling 16). Once its end
//! block passes, protection is lifted and the operator is told; then either the channel stays
//! (`keep`, the default) or, with `close-idle`, it is closed mutually once no payment went
//! through it for the chosen number of blocks, force-closed only after the chosen wait.

pub use crate::config::LeasePolicy;
pub use crate::ports::ChannelActivity as ChannelSeen;
use crate::store::{LeaseRow, LeaseState};

/// What the policy does with one lease now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// The lease runs: the channel is protected.
    Protect,
    /// Lease over; the policy keeps the channel.
    Keep,
    /// Lease over; idle for `idle` of the `needed` blocks so far (or not idle at all).
    Wait { idle: u32, needed: u32 },
    /// Close it now.
    Close,
    /// A close was asked and is under way.
    Closing,
    /// The channel is gone: nothing left to do.
    Done,
}

impl LeaseAction {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseAction::Protect => "protect",
            LeaseAction::Keep => "keep",
            LeaseAction::Wait { .. } => "wait",
            LeaseAction::Close => "close",
            LeaseAction::Closing => "closing",
            LeaseAction::Done => "none",
        }
    }
}

/// The decision and its reason, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseDecision {
    pub action: LeaseAction,
    pub why: String,
}

/// Blocks since the channel's last fulfilled payment, counted from the lease's end when the
/// channel was busier before it.
pub fn idle_blocks(lease: &LeaseRow, height: u32) -> u32 {
    let since = lease.active_height.unwrap_or(0).max(lease.lease_end_block);
    height.saturating_sub(since)
}

/// What `policy` does with `lease` at `height`, the channel being `seen` (`None`: lightningd
/// does not list it any more).
pub fn decide(policy: LeasePolicy, lease: &LeaseRow, seen: Option<&ChannelSeen>, height: u32) -> LeaseDecision {
    let d = |action, why: String| LeaseDecision { action, why };
    if lease.state == LeaseState::Closed {
        return d(LeaseAction::Done, "the channel is closed".into());
    }
    let Some(seen) = seen else {
        return d(LeaseAction::Done, "lightningd no longer lists the channel".into());
    };
    if matches!(seen.state.as_str(), "ONCHAIN" | "CLOSED") {
        return d(LeaseAction::Done, format!("the channel is closed ({})", seen.state));
    }
    if height < lease.lease_end_block {
        return d(
            LeaseAction::Protect,
            format!(
                "the lease runs until block {} ({} blocks left)",
                lease.lease_end_block,
                lease.lease_end_block - height
            ),
        );
    }
    if lease.state == LeaseState::Closing || seen.closing() {
        return d(LeaseAction::Closing, format!("closing ({})", seen.state));
    }
    match policy {
        LeasePolicy::Keep => d(
            LeaseAction::Keep,
            format!("the lease ended at block {}; the policy keeps channels open", lease.lease_end_block),
        ),
        LeasePolicy::CloseIdle { idle_blocks: needed, .. } => {
            let idle = idle_blocks(lease, height);
            if idle < needed {
                return d(
                    LeaseAction::Wait { idle, needed },
                    format!("the lease ended at block {}; idle for {idle} of {needed} blocks", lease.lease_end_block),
                );
            }
            if !seen.normal() {
                return d(
                    LeaseAction::Wait { idle, needed },
                    format!("idle for {idle} blocks, but the channel is {}, not CHANNELD_NORMAL", seen.state),
                );
            }
            d(
                LeaseAction::Close,
                format!(
                    "the lease ended at block {} and no payment went through the channel for {idle} blocks (policy: {needed})",
                    lease.lease_end_block
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(end: u32, state: LeaseState, active: Option<u32>) -> LeaseRow {
        LeaseRow {
            order_id: "o".into(),
            client_node_id: "02".into(),
            channel_id: Some("c".into()),
            funding_txid: "aa".repeat(32),
            funding_outnum: 0,
            lsp_balance_sat: 100_000,
            lease_end_block: end,
            state,
            activity_count: Some(3),
            active_height: active,
        }
    }

    fn seen(state: &str) -> ChannelSeen {
        ChannelSeen {
            channel_id: "c".into(),
            funding_txid: None,
            funding_outnum: None,
            state: state.into(),
            payments_fulfilled: 3,
            peer_connected: true,
        }
    }

    const IDLE: LeasePolicy = LeasePolicy::CloseIdle { idle_blocks: 100, force_close_after_secs: 3600 };

    #[test]
    fn protected_until_the_end_block() {
        let l = lease(500, LeaseState::Active, None);
        for policy in [LeasePolicy::Keep, IDLE] {
            assert_eq!(decide(policy, &l, Some(&seen("CHANNELD_NORMAL")), 499).action, LeaseAction::Protect);
        }
        // At the end block the lease is over (the close guard lets go at the same height).
        assert_eq!(decide(LeasePolicy::Keep, &l, Some(&seen("CHANNELD_NORMAL")), 500).action, LeaseAction::Keep);
    }

    #[test]
    fn close_idle_counts_from_the_later_of_end_and_last_payment() {
        let n = seen("CHANNELD_NORMAL");
        // Busy before the end: idleness counts from the end.
        let l = lease(500, LeaseState::Ended, Some(450));
        assert_eq!(decide(IDLE, &l, Some(&n), 599).action, LeaseAction::Wait { idle: 99, needed: 100 });
        assert_eq!(decide(IDLE, &l, Some(&n), 600).action, LeaseAction::Close);
        // A payment after the end restarts the count.
        let l = lease(500, LeaseState::Ended, Some(550));
        assert_eq!(decide(IDLE, &l, Some(&n), 600).action, LeaseAction::Wait { idle: 50, needed: 100 });
        assert_eq!(decide(IDLE, &l, Some(&n), 650).action, LeaseAction::Close);
        // Keep never closes.
        assert_eq!(decide(LeasePolicy::Keep, &l, Some(&n), 10_000).action, LeaseAction::Keep);
    }

    #[test]
    fn never_closes_twice_or_a_channel_not_normal() {
        let l = lease(500, LeaseState::Closing, Some(500));
        assert_eq!(decide(IDLE, &l, Some(&seen("CHANNELD_NORMAL")), 900).action, LeaseAction::Closing);
        let l = lease(500, LeaseState::Ended, Some(500));
        assert_eq!(decide(IDLE, &l, Some(&seen("CHANNELD_SHUTTING_DOWN")), 900).action, LeaseAction::Closing);
        assert_eq!(
            decide(IDLE, &l, Some(&seen("CHANNELD_AWAITING_LOCKIN")), 900).action,
            LeaseAction::Wait { idle: 400, needed: 100 }
        );
        assert_eq!(decide(IDLE, &l, Some(&seen("ONCHAIN")), 900).action, LeaseAction::Done);
        assert_eq!(decide(IDLE, &l, None, 900).action, LeaseAction::Done);
        assert_eq!(decide(IDLE, &lease(500, LeaseState::Closed, None), None, 900).action, LeaseAction::Done);
    }

    #[test]
    fn every_decision_says_why() {
        let l = lease(500, LeaseState::Ended, Some(500));
        for h in [0, 499, 500, 599, 600, 10_000] {
            for p in [LeasePolicy::Keep, IDLE] {
                assert!(!decide(p, &l, Some(&seen("CHANNELD_NORMAL")), h).why.is_empty());
            }
        }
    }
}
