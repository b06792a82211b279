//! An order's own types, below every room that handles orders: its phase and the events
//! that move it, why it failed, how it was paid, which transport created it, and the wire
//! states derived from the phase (bLIP-51 "Order Object" and "Payment"). `lsps1/`, `store/`
//! and `lifecycle/` all take them from here; this module imports nothing of the crate.
//!
//! The phase is the internal state machine, kept apart from the wire enums: the wire
//! `order_state` and payment `state` are derived from it, so they can never disagree.
//!
//! ```text
//! AwaitingPayment ──payment held──▶ PaymentHeld ──open started──▶ Opening ──funding broadcast──▶ Completed
//!        │                               │                          │
//!        └──payment expired──▶ Failed ◀──┴──── refund (open failed, peer absent, CLTV deadline) ──┘
//! ```

use serde::Serialize;

pub mod chain;

/// Which transport created an order: REST is more lenient with types and takes
/// `public_key` (rulings 1, 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    P2p,
    Rest,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::P2p => "p2p",
            Transport::Rest => "rest",
        }
    }
}

/// `order_state` (bLIP-51, order object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderState {
    Created,
    Completed,
    Failed,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Created => "CREATED",
            OrderState::Completed => "COMPLETED",
            OrderState::Failed => "FAILED",
        }
    }
}

/// A payment option's `state` (bLIP-51, payment). `CANCELLED` is deprecated and never written (P-07).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentState {
    ExpectPayment,
    Hold,
    Paid,
    Refunded,
}

impl PaymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::ExpectPayment => "EXPECT_PAYMENT",
            PaymentState::Hold => "HOLD",
            PaymentState::Paid => "PAID",
            PaymentState::Refunded => "REFUNDED",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Created, invoice issued, nothing received (CREATED / EXPECT_PAYMENT).
    AwaitingPayment,
    /// The client's HTLCs are held, the open has not started (CREATED / HOLD).
    PaymentHeld,
    /// `fundchannel` is in flight (CREATED / HOLD).
    Opening,
    /// The funding transaction was broadcast and the preimage released (COMPLETED / PAID, N-09).
    Completed,
    /// Ended without a channel; anything received was failed back (FAILED / REFUNDED, P-07).
    Failed,
}

/// Why an order failed, recorded with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// The payment option expired unpaid (ruling 13).
    PaymentExpired,
    /// `fundchannel` failed (N-11).
    OpenFailed,
    /// The client did not connect in time (N-02, ruling 13).
    PeerNotConnected,
    /// The earliest held HTLC came within the safety margin of its `cltv_expiry`.
    CltvDeadline,
    /// The operator cancelled it.
    Cancelled,
    /// The wallet could no longer fund the channel when the payment was held.
    FundsUnavailable,
    /// lightningd failed the held HTLCs back by itself while the plugin was down
    /// (ruling 12: the plugin died while holding); found at the next start.
    PaymentLost,
    /// The plugin stopped while `fundchannel` was in flight and no channel came of it
    /// (ruling 17, reconciled at start from `listpeerchannels`).
    OpenInterrupted,
}

/// A payment option of bLIP-51 (payment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentMethod {
    Bolt11,
    Bolt12,
    Onchain,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Bolt11 => "bolt11",
            PaymentMethod::Bolt12 => "bolt12",
            PaymentMethod::Onchain => "onchain",
        }
    }

    pub fn parse(s: &str) -> Option<PaymentMethod> {
        [PaymentMethod::Bolt11, PaymentMethod::Bolt12, PaymentMethod::Onchain].into_iter().find(|m| m.as_str() == s)
    }
}

/// Something that happens to an order; [`Event::apply`] says where it leads, or that it
/// cannot happen in that phase. The store only moves orders through events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The client's payment arrived through this option and is held (or, on-chain, confirmed).
    PaymentHeld(PaymentMethod),
    OpenStarted,
    FundingBroadcast,
    Fail(FailReason),
    /// An on-chain payment left the chain (a reorg) before the open started: the order
    /// waits again (ruling 25).
    PaymentReorged,
}

impl Event {
    pub fn apply(self, from: Phase) -> Result<Phase, TransitionError> {
        match self {
            Event::PaymentHeld(_) => from.payment_held(),
            Event::OpenStarted => from.open_started(),
            Event::FundingBroadcast => from.funding_broadcast(),
            Event::Fail(r) => from.fail(r),
            Event::PaymentReorged => from.payment_reorged(),
        }
    }

    /// The event log's `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            Event::PaymentHeld(_) => "payment_held",
            Event::OpenStarted => "open_started",
            Event::FundingBroadcast => "funding_broadcast",
            Event::Fail(r) => r.as_str(),
            Event::PaymentReorged => "payment_reorged",
        }
    }
}

/// The wire state of payment option `this` (bLIP-51, payment and state machines): the option that was paid follows
/// the order's phase; the others stay `EXPECT_PAYMENT` while the order is open and read
/// `REFUNDED` (bLIP-51's replacement for `CANCELLED`) once another option was paid or the
/// order ended.
/// `refunded_after_open` marks the rare order whose channel was opened although its HTLCs
/// were failed back (the plugin died between broadcast and settlement, ruling 17): it
/// reads COMPLETED with the payment REFUNDED, which is what happened.
pub fn option_state(
    phase: Phase,
    paid_via: Option<PaymentMethod>,
    this: PaymentMethod,
    refunded_after_open: bool,
) -> PaymentState {
    match paid_via {
        Some(m) if m == this && refunded_after_open => PaymentState::Refunded,
        Some(m) if m == this => phase.lightning_payment_state(),
        Some(_) => PaymentState::Refunded,
        None => match phase {
            Phase::Failed | Phase::Completed => PaymentState::Refunded,
            _ => PaymentState::ExpectPayment,
        },
    }
}

/// The wire state of the on-chain option (bLIP-51, payment 3.3: no `HOLD` on-chain; P-13):
/// `PAID` once its outputs counted and while the order stands on them, `REFUNDED` once the
/// order ended without them (the refund follows on the next block, ruling 24) or another
/// option was paid, `EXPECT_PAYMENT` while it waits.
pub fn onchain_option_state(phase: Phase, paid_via: Option<PaymentMethod>) -> PaymentState {
    match (phase, paid_via == Some(PaymentMethod::Onchain)) {
        (Phase::AwaitingPayment, _) => PaymentState::ExpectPayment,
        (Phase::PaymentHeld | Phase::Opening | Phase::Completed, true) => PaymentState::Paid,
        _ => PaymentState::Refunded,
    }
}

/// A transition, as told to operators (the `lsps1_order_state_changed` notification and
/// the info log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderChanged {
    pub order_id: String,
    pub client_node_id: String,
    pub from: Phase,
    pub to: Phase,
    /// Why, for failures.
    pub reason: Option<FailReason>,
    /// The payment reads REFUNDED although the channel opened (ruling 17).
    pub refunded_after_open: bool,
    /// An on-chain event that is not a phase change (`from` = `to`): `refund_broadcast`,
    /// `refund_replaced`, `payment_reorged_after_open` (rulings 24, 25).
    pub note: Option<&'static str>,
}

impl OrderChanged {
    /// The notification's payload (wrapped under the topic by cln-plugin).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "order_id": self.order_id,
            "peer_id": self.client_node_id,
            "from": self.from.as_str(),
            "to": self.to.as_str(),
            "order_state": self.to.order_state().as_str(),
            "payment_state": if self.refunded_after_open {
                PaymentState::Refunded.as_str()
            } else {
                self.to.lightning_payment_state().as_str()
            },
            "reason": self.reason.map(FailReason::as_str),
            "message": self.reason.map(FailReason::describe),
            "note": self.note,
        })
    }
}

/// Where transitions are reported. Sending never blocks; nobody listening is fine.
pub type EventSink = tokio::sync::mpsc::UnboundedSender<OrderChanged>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal order transition: {event} in phase {from:?}")]
pub struct TransitionError {
    pub from: Phase,
    pub event: &'static str,
}

impl Phase {
    pub const ALL: [Phase; 5] =
        [Phase::AwaitingPayment, Phase::PaymentHeld, Phase::Opening, Phase::Completed, Phase::Failed];

    fn illegal(self, event: &'static str) -> TransitionError {
        TransitionError { from: self, event }
    }

    /// HTLCs for the full amount arrived and are held (P-05).
    pub fn payment_held(self) -> Result<Phase, TransitionError> {
        match self {
            Phase::AwaitingPayment => Ok(Phase::PaymentHeld),
            _ => Err(self.illegal("payment_held")),
        }
    }

    /// A payment that was confirmed is no longer (ruling 25); only before the open started,
    /// so nothing was spent on it.
    pub fn payment_reorged(self) -> Result<Phase, TransitionError> {
        match self {
            Phase::PaymentHeld => Ok(Phase::AwaitingPayment),
            _ => Err(self.illegal("payment_reorged")),
        }
    }

    /// The open is attempted (N-01: only from a held payment).
    pub fn open_started(self) -> Result<Phase, TransitionError> {
        match self {
            Phase::PaymentHeld => Ok(Phase::Opening),
            _ => Err(self.illegal("open_started")),
        }
    }

    /// The funding transaction was broadcast (N-09, ruling 11).
    pub fn funding_broadcast(self) -> Result<Phase, TransitionError> {
        match self {
            Phase::Opening => Ok(Phase::Completed),
            _ => Err(self.illegal("funding_broadcast")),
        }
    }

    /// The order ends without a channel for `reason`.
    pub fn fail(self, reason: FailReason) -> Result<Phase, TransitionError> {
        match (self, reason) {
            (Phase::AwaitingPayment, FailReason::PaymentExpired | FailReason::Cancelled) => Ok(Phase::Failed),
            (
                Phase::PaymentHeld,
                FailReason::PeerNotConnected
                | FailReason::CltvDeadline
                | FailReason::Cancelled
                | FailReason::FundsUnavailable
                | FailReason::PaymentLost,
            ) => Ok(Phase::Failed),
            // Once `fundchannel` is in flight only its outcome (or its loss) ends the order:
            // cancelling then could refund a channel that is being broadcast.
            // CltvDeadline: an open whose outcome stayed unknown up to the safety margin.
            (
                Phase::Opening,
                FailReason::OpenFailed
                | FailReason::OpenInterrupted
                | FailReason::PaymentLost
                | FailReason::CltvDeadline,
            ) => Ok(Phase::Failed),
            _ => Err(self.illegal("fail")),
        }
    }

    /// The wire `order_state` (bLIP-51, order object).
    pub fn order_state(self) -> OrderState {
        match self {
            Phase::AwaitingPayment | Phase::PaymentHeld | Phase::Opening => OrderState::Created,
            Phase::Completed => OrderState::Completed,
            Phase::Failed => OrderState::Failed,
        }
    }

    /// The wire state of the Lightning payment option (bLIP-51, payment; `REFUNDED`, never `CANCELLED`).
    pub fn lightning_payment_state(self) -> PaymentState {
        match self {
            Phase::AwaitingPayment => PaymentState::ExpectPayment,
            Phase::PaymentHeld | Phase::Opening => PaymentState::Hold,
            Phase::Completed => PaymentState::Paid,
            Phase::Failed => PaymentState::Refunded,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::AwaitingPayment => "awaiting_payment",
            Phase::PaymentHeld => "payment_held",
            Phase::Opening => "opening",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl FailReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            FailReason::PaymentExpired => "payment_expired",
            FailReason::OpenFailed => "open_failed",
            FailReason::PeerNotConnected => "peer_not_connected",
            FailReason::CltvDeadline => "cltv_deadline",
            FailReason::Cancelled => "cancelled",
            FailReason::FundsUnavailable => "funds_unavailable",
            FailReason::PaymentLost => "payment_lost",
            FailReason::OpenInterrupted => "open_interrupted",
        }
    }

    /// A sentence for the event log, `lsps1-getorder` and the info log.
    pub fn describe(self) -> &'static str {
        match self {
            FailReason::PaymentExpired => "the payment option expired unpaid",
            FailReason::OpenFailed => "the channel open failed",
            FailReason::PeerNotConnected => "the client node did not connect in time",
            FailReason::CltvDeadline => "the held payment came within the safety margin of its CLTV expiry",
            FailReason::Cancelled => "the operator cancelled the order",
            FailReason::FundsUnavailable => "the wallet could no longer fund the channel",
            FailReason::PaymentLost => "the node failed the payment back while the plugin was not running",
            FailReason::OpenInterrupted => "the plugin stopped during the open and no channel was found",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailReason::*;
    use Phase::*;

    #[test]
    fn legal_transitions() {
        assert_eq!(AwaitingPayment.payment_held(), Ok(PaymentHeld));
        assert_eq!(PaymentHeld.open_started(), Ok(Opening));
        assert_eq!(Opening.funding_broadcast(), Ok(Completed));
        assert_eq!(AwaitingPayment.fail(PaymentExpired), Ok(Failed));
        for r in [PeerNotConnected, CltvDeadline, Cancelled, FundsUnavailable, PaymentLost] {
            assert_eq!(PaymentHeld.fail(r), Ok(Failed));
        }
        for r in [OpenFailed, OpenInterrupted, PaymentLost, CltvDeadline] {
            assert_eq!(Opening.fail(r), Ok(Failed));
        }
        // An open in flight cannot be cancelled or given up for an absent client.
        for r in [Cancelled, PeerNotConnected, FundsUnavailable] {
            assert!(Opening.fail(r).is_err(), "{r:?}");
        }
        assert!(PaymentHeld.fail(OpenFailed).is_err(), "no open was attempted");
    }

    #[test]
    fn every_other_transition_is_illegal() {
        type Event = fn(Phase) -> Result<Phase, TransitionError>;
        let events: [(&str, Event); 4] = [
            ("held", Phase::payment_held),
            ("open", Phase::open_started),
            ("broadcast", Phase::funding_broadcast),
            ("reorged", Phase::payment_reorged),
        ];
        // A payment reorged out goes back to waiting only before the open (ruling 25).
        let legal =
            [(AwaitingPayment, "held"), (PaymentHeld, "open"), (Opening, "broadcast"), (PaymentHeld, "reorged")];
        for p in Phase::ALL {
            for (name, ev) in events {
                assert_eq!(ev(p).is_ok(), legal.contains(&(p, name)), "{p:?} {name}");
            }
        }
        // Terminal phases never move; an unpaid order cannot fail for an open failure.
        for r in [
            PaymentExpired,
            OpenFailed,
            PeerNotConnected,
            CltvDeadline,
            Cancelled,
            FundsUnavailable,
            PaymentLost,
            OpenInterrupted,
        ] {
            assert!(Completed.fail(r).is_err());
            assert!(Failed.fail(r).is_err());
        }
        assert!(AwaitingPayment.fail(OpenFailed).is_err());
        assert!(PaymentHeld.fail(PaymentExpired).is_err(), "a held payment is refunded, not expired");
    }

    #[test]
    fn option_states_with_several_payment_options() {
        use PaymentMethod::*;
        assert_eq!(option_state(AwaitingPayment, None, Bolt11, false), PaymentState::ExpectPayment);
        assert_eq!(option_state(Failed, None, Bolt11, false), PaymentState::Refunded);
        assert_eq!(option_state(PaymentHeld, Some(Bolt11), Bolt11, false), PaymentState::Hold);
        assert_eq!(option_state(PaymentHeld, Some(Bolt11), Onchain, false), PaymentState::Refunded);
        assert_eq!(option_state(Completed, Some(Onchain), Onchain, false), PaymentState::Paid);
        assert_eq!(option_state(Failed, Some(Bolt11), Bolt11, false), PaymentState::Refunded);
        assert_eq!(Event::PaymentHeld(Bolt11).apply(AwaitingPayment), Ok(PaymentHeld));
        assert!(Event::FundingBroadcast.apply(AwaitingPayment).is_err());
        for m in [Bolt11, Bolt12, Onchain] {
            assert_eq!(PaymentMethod::parse(m.as_str()), Some(m));
        }
    }

    #[test]
    fn wire_states_follow_the_phase() {
        assert_eq!(
            (AwaitingPayment.order_state(), AwaitingPayment.lightning_payment_state()),
            (OrderState::Created, PaymentState::ExpectPayment)
        );
        assert_eq!(PaymentHeld.lightning_payment_state(), PaymentState::Hold);
        assert_eq!(
            (Completed.order_state(), Completed.lightning_payment_state()),
            (OrderState::Completed, PaymentState::Paid)
        );
        assert_eq!(
            (Failed.order_state(), Failed.lightning_payment_state()),
            (OrderState::Failed, PaymentState::Refunded)
        );
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
    }
}
