//! What to do with one arriving HTLC (ruling 12), as a pure function of the
//! HTLC, its order and the HTLCs already held for it. No I/O: the store runs [`decide`]
//! inside the transaction that records the outcome, so concurrent parts are decided one
//! after the other.

use serde_json::Value;

use crate::order::Phase;
use crate::store::{HtlcKey, HtlcRecord, HtlcWrite, OrderRecord, Resolution};

/// A `htlc_accepted` call, read tolerantly (schema `hook/htlc_accepted.json`; fixtures
/// `hooks/htlc_accepted.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtlcIn {
    pub key: HtlcKey,
    /// Lowercase hex.
    pub payment_hash: String,
    pub amount_msat: u64,
    pub cltv_expiry: u32,
    /// The node's block height when lightningd made the call (`cltv_expiry` −
    /// `cltv_expiry_relative`): no RPC needed to know it.
    pub height: u32,
    /// The onion's `payment_secret` (lowercase hex), final hop only.
    pub payment_secret: Option<String>,
    pub total_msat: Option<u64>,
    /// Not for this node: the onion names a next hop.
    pub forward: bool,
}

/// Whether a `htlc_accepted` call is for an HTLC this node forwards (the onion names a
/// next hop, or lightningd says where it goes): never an order's payment.
pub fn is_forward(v: &Value) -> bool {
    v.get("onion").is_some_and(|o| o.get("short_channel_id").is_some() || o.get("next_node_id").is_some())
        || v.get("forward_to").is_some()
}

impl HtlcIn {
    /// `None` when the call lacks what a decision needs; such an HTLC is left to lightningd
    /// (`continue`), which knows no invoice for our hashes and so fails it back.
    pub fn parse(v: &Value) -> Option<HtlcIn> {
        let htlc = v.get("htlc")?;
        let onion = v.get("onion");
        let forward = is_forward(v);
        let cltv_expiry = u32::try_from(htlc.get("cltv_expiry")?.as_u64()?).ok()?;
        // Without it the height is unknown; such a call is left to lightningd.
        let relative = htlc.get("cltv_expiry_relative")?.as_i64()?;
        let height = u32::try_from(i64::from(cltv_expiry).saturating_sub(relative)).ok()?;
        let hash = htlc.get("payment_hash")?.as_str()?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(HtlcIn {
            key: HtlcKey {
                short_channel_id: htlc.get("short_channel_id")?.as_str()?.to_string(),
                id: htlc.get("id")?.as_u64()?,
            },
            payment_hash: hash.to_ascii_lowercase(),
            amount_msat: htlc.get("amount_msat")?.as_u64()?,
            cltv_expiry,
            height,
            payment_secret: onion
                .and_then(|o| o.get("payment_secret"))
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase),
            total_msat: onion.and_then(|o| o.get("total_msat")).and_then(Value::as_u64),
            forward,
        })
    }

    pub fn record(&self, now_ms: i64) -> HtlcRecord {
        HtlcRecord {
            key: self.key.clone(),
            payment_hash: self.payment_hash.clone(),
            amount_msat: self.amount_msat,
            cltv_expiry: self.cltv_expiry,
            received_at_ms: now_ms,
            resolution: None,
        }
    }
}

/// The BOLT 4 failures this service sends back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `incorrect_or_unknown_payment_details` (PERM|15) with the HTLC amount and the
    /// height: what a payer reads as "this payment will not go through" (the refund).
    IncorrectOrUnknown,
    /// `mpp_timeout` (23): the parts of a multi-part payment did not all arrive in time.
    MppTimeout,
}

impl Failure {
    /// The hex `failure_message` of a `fail` answer. Always well-formed: lightningd calls
    /// `fatal()` on a malformed one (fixtures README).
    pub fn message_hex(self, amount_msat: u64, height: u32) -> String {
        match self {
            Failure::IncorrectOrUnknown => format!("400f{amount_msat:016x}{height:08x}"),
            Failure::MppTimeout => "0017".to_string(),
        }
    }
}

/// The verdict on one HTLC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HtlcDecision {
    /// Record it and hold it; `complete` when the set now covers the order (P-05).
    Hold { complete: bool },
    /// Already held (lightningd replays unresolved HTLCs after a restart): wait for the
    /// order's outcome, as the first call did (ruling 17).
    Wait,
    /// The order's channel was opened: settle with the preimage (ruling 11).
    Settle,
    /// Fail it back, with why (for the log).
    Fail(Failure, &'static str),
}

impl HtlcDecision {
    pub fn write(&self) -> HtlcWrite {
        match self {
            HtlcDecision::Hold { complete } => HtlcWrite::Hold { complete: *complete },
            _ => HtlcWrite::Nothing,
        }
    }
}

/// How much CLTV room an HTLC must leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldRules {
    /// Blocks before `cltv_expiry` at which a held HTLC is failed back (ruling 13).
    pub safety_margin_blocks: u32,
    /// Blocks the open may take after the payment is held (waiting for the client
    /// included); an HTLC must leave at least margin + this when it arrives.
    pub open_allowance_blocks: u32,
}

impl HoldRules {
    pub fn min_delta(&self) -> u32 {
        self.safety_margin_blocks.saturating_add(self.open_allowance_blocks)
    }
}

/// Decide what to do with `h`, for `order` whose HTLCs so far are `set`.
pub fn decide(h: &HtlcIn, order: &OrderRecord, set: &[HtlcRecord], now_ms: i64, rules: HoldRules) -> HtlcDecision {
    use HtlcDecision::*;
    const UNKNOWN: Failure = Failure::IncorrectOrUnknown;
    // A replay of an HTLC we already know: the same answer as before (ruling 17).
    if let Some(known) = set.iter().find(|k| k.key == h.key) {
        return match (known.resolution, order.phase) {
            (Some(Resolution::Settled), _) => Settle,
            (Some(Resolution::Failed), _) => Fail(UNKNOWN, "this HTLC was already failed back"),
            (None, Phase::Completed) if !order.refunded_after_open => Settle,
            (None, Phase::Failed | Phase::Completed) => Fail(UNKNOWN, "the order has ended"),
            (None, _) => Wait,
        };
    }
    let Some(bolt11) = &order.bolt11 else {
        return Fail(UNKNOWN, "the order has no BOLT11 option");
    };
    if order.phase != Phase::AwaitingPayment {
        // A part after the set completed, or a payment to an ended order.
        return Fail(UNKNOWN, "the order is no longer waiting for payment");
    }
    if now_ms >= bolt11.expires_at_ms {
        return Fail(UNKNOWN, "the payment option has expired");
    }
    if h.payment_secret.as_deref() != Some(bolt11.payment_secret.as_str()) {
        return Fail(UNKNOWN, "wrong or missing payment_secret");
    }
    let want_msat = bolt11.order_total_sat.saturating_mul(1000);
    // The payer states the total in every part; it must be the invoice's amount exactly:
    // less is an underpayment, more would take more than the order costs.
    if h.total_msat != Some(want_msat) {
        return Fail(UNKNOWN, "total_msat does not match the order total");
    }
    // Strictly more than margin + allowance: with exactly that much the open could not
    // start (plan::next_step) and the payment would be held only to be refunded.
    if h.cltv_expiry.saturating_sub(h.height) <= rules.min_delta() {
        return Fail(UNKNOWN, "cltv_expiry leaves too little time to open the channel");
    }
    let held: u64 = set.iter().filter(|k| k.resolution.is_none()).map(|k| k.amount_msat).fold(0, u64::saturating_add);
    Hold { complete: held.saturating_add(h.amount_msat) >= want_msat }
}

#[cfg(test)]
mod tests;
