//! Holding: the `htlc_accepted` calls of an order's payment, kept until the order's driver
//! settles or fails them, each answered exactly once (ruling 12); parts that never make a
//! whole payment are failed back when the MPP timer runs out.

use std::collections::HashSet;

use serde_json::Value;
use tokio::sync::oneshot;

use super::*;
use crate::clock::Clock;
use crate::lifecycle::htlc::{Failure, HtlcDecision, HtlcIn, decide};
use crate::order::Phase;
use crate::ports::{ChannelApi, NodeApi, WalletApi};
use crate::store::{HtlcKey, Resolution};

impl<N: NodeApi + ChannelApi + WalletApi, C: Clock> Engine<N, C> {
    pub(super) fn is_live(&self, key: &HtlcKey) -> bool {
        self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner()).get(key).is_some_and(|v| !v.is_empty())
    }

    fn register(&self, key: &HtlcKey) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_default().push(tx);
        // A driver waiting for lightningd's replay can go on now.
        self.inner.wake.notify_waiters();
        rx
    }

    pub(super) fn answer(&self, keys: &[HtlcKey], outcome: &Outcome) {
        let mut w = self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            for tx in w.remove(k).unwrap_or_default() {
                let _ = tx.send(outcome.clone());
            }
        }
    }

    fn to_answer(&self, outcome: Outcome, h: &HtlcIn) -> HookAnswer {
        match outcome {
            Outcome::Settle(key) => HookAnswer::Resolve { payment_key: key },
            Outcome::Fail(f) => {
                HookAnswer::Fail { failure_message: f.message_hex(h.amount_msat, self.height().max(h.height)) }
            }
        }
    }

    /// The `htlc_accepted` hook. Returns at once for HTLCs that are not an
    /// order's; holds an order's HTLC until its order completes or fails.
    pub async fn on_htlc(&self, v: &Value) -> HookAnswer {
        let Some(h) = HtlcIn::parse(v) else { return HookAnswer::Continue };
        if h.forward {
            return HookAnswer::Continue;
        }
        // A replay right after start may know the tip before block_added does; a wild value
        // from a malformed call must not move every deadline.
        if h.height <= self.height().saturating_add(2) {
            self.set_height(h.height);
        }
        // Most final-hop HTLCs are the node's own invoices: one indexed read, inline.
        let hash = h.payment_hash.clone();
        if let Ok(None) = self.inner.store.read_async(move |s| s.order_id_by_payment_hash(&hash)).await {
            return HookAnswer::Continue;
        }
        if !self.record_unrecorded_failures().await {
            // Parts already failed back would count towards this payment: leave it to
            // lightningd, which fails it back (no invoice for the hash), as for any HTLC the
            // store cannot take.
            log::warn!("Cannot record earlier failed parts; leaving HTLC {} to lightningd", h.payment_hash);
            return HookAnswer::Continue;
        }
        let now = self.inner.clock.now_ms();
        let rules = self.inner.cfg.rules;
        let (h2, rec) = (h.clone(), h.record(now));
        let res = self
            .inner
            .store
            .call(move |s| {
                s.apply_htlc(&rec, now, |order, set| {
                    let d = decide(&h2, order, set, now, rules);
                    let w = d.write();
                    (d, w)
                })
            })
            .await;
        let (decision, order) = match res {
            Ok(Some(x)) => x,
            Ok(None) => return HookAnswer::Continue, // not an order's payment
            Err(e) => {
                // lightningd knows no invoice for our hashes, so `continue` fails an order's
                // HTLC back (a refund) and settles an ordinary invoice's as usual.
                log::warn!("Cannot look up HTLC {}: {e}; leaving it to lightningd", h.payment_hash);
                return HookAnswer::Continue;
            }
        };
        match decision {
            HtlcDecision::Fail(f, why) => {
                log::info!(
                    "Failing HTLC {}/{} ({} msat) for order {}: {why}",
                    h.key.short_channel_id,
                    h.key.id,
                    h.amount_msat,
                    order.order_id
                );
                self.to_answer(Outcome::Fail(f), &h)
            }
            HtlcDecision::Settle => self.to_answer(settle_outcome(&order), &h),
            HtlcDecision::Hold { .. } | HtlcDecision::Wait => {
                let rx = self.register(&h.key);
                // Check after registering: an outcome written in between is not lost.
                if let Some(outcome) = self.resolved_outcome(&order.order_id, &h.key).await {
                    self.answer(std::slice::from_ref(&h.key), &outcome);
                }
                match decision {
                    HtlcDecision::Hold { complete: true } => {
                        log::info!(
                            "Order {}: payment of {} sat held ({} msat in this part), opening the channel",
                            order.order_id,
                            order.order_total_sat,
                            h.amount_msat
                        );
                        self.emit(&order, Phase::AwaitingPayment, Phase::PaymentHeld, None, false);
                        self.drive(order.order_id.clone());
                    }
                    HtlcDecision::Hold { complete: false } => {
                        log::debug!("Order {}: holding a part of {} msat", order.order_id, h.amount_msat);
                        self.mpp_timer(order.order_id.clone());
                    }
                    _ => {
                        log::info!(
                            "Order {}: HTLC {}/{} replayed; waiting for the order's outcome",
                            order.order_id,
                            h.key.short_channel_id,
                            h.key.id
                        );
                        if order.phase == Phase::AwaitingPayment {
                            // A replayed part of an incomplete set: it times out like any part.
                            self.mpp_timer(order.order_id.clone());
                        } else {
                            self.drive(order.order_id.clone());
                        }
                    }
                }
                match self.outcome_or_margin(rx, &h).await {
                    Ok(outcome) => self.to_answer(outcome, &h),
                    // Unreachable while the engine lives; fail back rather than guess.
                    Err(_) => self.to_answer(Outcome::Fail(Failure::IncorrectOrUnknown), &h),
                }
            }
        }
    }

    /// The outcome of a held HTLC, or a refund from memory once it reaches its safety margin
    /// (ruling 17) and nothing else answered it in a few polls: the drivers refund at the
    /// margin through the store, and when the store cannot be reached (a database outage)
    /// the refund must not wait for it. The failure is recorded when the store is back.
    async fn outcome_or_margin(
        &self,
        mut rx: oneshot::Receiver<Outcome>,
        h: &HtlcIn,
    ) -> Result<Outcome, oneshot::error::RecvError> {
        let margin = self.inner.cfg.deadlines.safety_margin_blocks;
        // The drivers act on the block at once; a few seconds is all they need.
        let grace = Duration::from_secs(3);
        let mut heights = self.inner.announced.subscribe();
        loop {
            if self.announced_height().saturating_add(margin) >= h.cltv_expiry {
                if let Ok(r) = tokio::time::timeout(grace, &mut rx).await {
                    return r;
                }
                log::warn!(
                    "HTLC {}/{} ({} msat) reached its safety margin at block {} with no outcome (is the order store \
                     reachable?); failing it back from memory",
                    h.key.short_channel_id,
                    h.key.id,
                    h.amount_msat,
                    self.announced_height()
                );
                self.inner.failed_unrecorded.lock().unwrap_or_else(|p| p.into_inner()).insert(h.key.clone());
                self.answer(std::slice::from_ref(&h.key), &Outcome::Fail(Failure::IncorrectOrUnknown));
                return rx.await;
            }
            tokio::select! {
                r = &mut rx => return r,
                changed = heights.changed() => {
                    if changed.is_err() {
                        return rx.await;
                    }
                }
            }
        }
    }

    /// Record the parts failed back from memory (`failed_unrecorded`); false while the store
    /// still refuses.
    async fn record_unrecorded_failures(&self) -> bool {
        let keys: Vec<HtlcKey> =
            self.inner.failed_unrecorded.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        if keys.is_empty() {
            return true;
        }
        let k = keys.clone();
        match self.inner.store.call(move |s| s.mark_failed(&k)).await {
            Ok(()) => {
                self.recorded_failures(&keys);
                true
            }
            Err(_) => false,
        }
    }

    fn recorded_failures(&self, keys: &[HtlcKey]) {
        let mut unrecorded = self.inner.failed_unrecorded.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            unrecorded.remove(k);
        }
    }

    /// The outcome recorded for `key`, if it is resolved.
    async fn resolved_outcome(&self, order_id: &str, key: &HtlcKey) -> Option<Outcome> {
        let id = order_id.to_string();
        let (order, set) = self.inner.store.call(move |s| s.order_with_htlcs(&id)).await.ok().flatten()?;
        match set.iter().find(|h| &h.key == key)?.resolution? {
            Resolution::Settled => Some(settle_outcome(&order)),
            Resolution::Failed => Some(Outcome::Fail(Failure::IncorrectOrUnknown)),
        }
    }

    /// Answer every live hook call whose HTLC the store already resolved: the safety net for
    /// any path that resolved HTLCs without answering (lazy expiry, races).
    pub async fn answer_resolved(&self) {
        let keys: Vec<HtlcKey> = self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        if keys.is_empty() {
            return;
        }
        let store = self.inner.store.clone();
        let found = tokio::task::spawn_blocking(move || {
            let mut out = vec![];
            let mut seen = HashSet::new();
            for k in keys {
                if let Ok(Some(order_id)) = store.order_of_htlc(&k)
                    && seen.insert(order_id.clone())
                    && let Ok(Some((order, set))) = store.order_with_htlcs(&order_id)
                {
                    out.push((order, set));
                }
            }
            out
        })
        .await
        .unwrap_or_default();
        for (order, set) in found {
            let settled: Vec<HtlcKey> =
                set.iter().filter(|h| h.resolution == Some(Resolution::Settled)).map(|h| h.key.clone()).collect();
            let failed: Vec<HtlcKey> =
                set.iter().filter(|h| h.resolution == Some(Resolution::Failed)).map(|h| h.key.clone()).collect();
            if !settled.is_empty() {
                self.answer(&settled, &settle_outcome(&order));
            }
            self.answer(&failed, &Outcome::Fail(Failure::IncorrectOrUnknown));
        }
    }

    /// Fail an incomplete set back once its first part has waited `mpp_timeout`.
    fn mpp_timer(&self, order_id: String) {
        if !self.inner.timers.lock().unwrap_or_else(|p| p.into_inner()).insert(order_id.clone()) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let _guard = Registered { engine: me.clone(), id: order_id.clone(), kind: Kind::Timer };
            let timeout = me.inner.cfg.mpp_timeout;
            let mut warned = false;
            loop {
                tokio::time::sleep(timeout).await;
                let cutoff =
                    me.inner.clock.now_ms().saturating_sub(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
                let id = order_id.clone();
                let res = me.inner.store.call(move |s| {
                    let keys = s.fail_incomplete_parts(&id, cutoff)?;
                    let pending = s.order_with_htlcs(&id)?.is_some_and(|(o, set)| {
                        o.phase == Phase::AwaitingPayment && set.iter().any(|h| h.resolution.is_none())
                    });
                    Ok((keys, pending))
                });
                match res.await {
                    Ok((keys, pending)) => {
                        if !keys.is_empty() {
                            log::info!("Order {order_id}: {} parts failed back with mpp_timeout", keys.len());
                            me.answer(&keys, &Outcome::Fail(Failure::MppTimeout));
                            me.recorded_failures(&keys);
                        }
                        if !pending {
                            break;
                        }
                    }
                    Err(e) => {
                        // BOLT 4 mpp_timeout: the parts go back at the timeout whether or not
                        // the store can record it (a refund never waits on bookkeeping, as in
                        // `fail`); held on, they could reach their expiry. Reads still work
                        // when writes do not (a full disk, a read-only store).
                        if let Ok(Some((order, set))) = me.load(&order_id).await
                            && order.phase == Phase::AwaitingPayment
                            && set.iter().any(|h| h.resolution.is_none() && h.received_at_ms <= cutoff)
                        {
                            if !std::mem::replace(&mut warned, true) {
                                log::warn!(
                                    "Order {order_id}: cannot record the mpp_timeout of its parts ({e}); failing them back anyway"
                                );
                            }
                            let keys = held_keys(&set);
                            me.inner.failed_unrecorded.lock().unwrap_or_else(|p| p.into_inner()).extend(keys.clone());
                            me.answer(&keys, &Outcome::Fail(Failure::MppTimeout));
                        } else {
                            log::warn!("Order {order_id}: cannot time out parts: {e}");
                        }
                    }
                }
            }
        });
    }
}
