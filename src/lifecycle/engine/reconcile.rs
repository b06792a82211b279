//! Reconciling with the node at start, and the periodic work: orders caught by a stop in
//! `PaymentHeld` or `Opening` are matched against `listhtlcs` and `listpeerchannels` (an open
//! that happened is recorded, never repeated: ruling 17); expiry and operator cancels.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::*;
use crate::clock::Clock;
use crate::lifecycle::htlc::Failure;
use crate::lsps0::ser::read_pubkey;
use crate::order::{FailReason, Phase};
use crate::ports::{ChannelApi, NodeApi, WalletApi};
use crate::store::{HtlcKey, StoreError};

impl<N: NodeApi + ChannelApi + WalletApi, C: Clock> Engine<N, C> {
    /// Reconcile with the node before serving (ruling 17): orders caught in
    /// `PaymentHeld` or `Opening` by a stop, and unpaid orders holding parts, are matched
    /// against `listhtlcs` (still held → wait for lightningd's replay; gone → refunded) and
    /// `listpeerchannels` (an open that happened is recorded, never repeated). If the node
    /// cannot answer, the orders are left as they are: their drivers settle them later.
    pub async fn reconcile_at_start(&self) -> Result<(), String> {
        let orders = self
            .inner
            .store
            .call(|s| {
                let mut v = s.orders_in_phases(&[Phase::PaymentHeld, Phase::Opening])?;
                for id in s.unpaid_with_parts()? {
                    if let Some(o) = s.get_order(&id)? {
                        v.push(o);
                    }
                }
                Ok(v)
            })
            .await
            .map_err(store_err)?;
        if orders.is_empty() {
            return Ok(());
        }
        let mut loaded = vec![];
        for o in orders {
            if let Some(x) = self.load(&o.order_id).await? {
                loaded.push(x);
            }
        }
        let scids: Vec<String> = loaded
            .iter()
            .flat_map(|(_, set)| set.iter().filter(|h| h.resolution.is_none()).map(|h| h.key.short_channel_id.clone()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let node_htlcs = match self.inner.node.list_htlcs_on(scids).await {
            Ok(h) => h,
            Err(e) => {
                log::warn!("Cannot reconcile held payments at start ({e}); their drivers will look again");
                return Ok(());
            }
        };
        let pending = pending_on_node(&node_htlcs);
        for (order, set) in loaded {
            let held: Vec<_> = set.iter().filter(|h| h.resolution.is_none()).collect();
            let gone: Vec<HtlcKey> = held
                .iter()
                .filter(|h| !pending.contains(&(h.key.short_channel_id.clone(), h.key.id)))
                .map(|h| h.key.clone())
                .collect();
            // An on-chain payment holds no HTLCs: nothing of it can be lost while we were down.
            let onchain = order.paid_method == Some(crate::order::PaymentMethod::Onchain);
            let still_held = onchain || (!held.is_empty() && gone.is_empty());
            match order.phase {
                Phase::AwaitingPayment => {
                    // Parts lightningd failed back while the plugin was down no longer count.
                    if !gone.is_empty()
                        && let Err(e) = self.inner.store.call(move |s| s.mark_failed(&gone)).await
                    {
                        log::warn!("Order {}: cannot mark lost parts: {e}", order.order_id);
                    }
                }
                Phase::PaymentHeld if !still_held => {
                    log::info!("Order {}: its payment was failed back while the plugin was down", order.order_id);
                    self.fail(
                        &order,
                        Phase::PaymentHeld,
                        FailReason::PaymentLost,
                        json!({"why": "not in listhtlcs at start"}),
                    )
                    .await;
                }
                Phase::PaymentHeld => {} // the driver waits for the replay
                Phase::Opening => {
                    let Ok(client) = read_pubkey(&order.client_node_id) else {
                        log::warn!("Order {}: unreadable client node id", order.order_id);
                        continue;
                    };
                    match self.find_channel(&order, client).await {
                        // Still held: settled on lightningd's replay. Gone: a gift.
                        Ok(Found::Funded(ch)) => self.complete(&order, ch, !still_held).await,
                        Ok(Found::Absent) => {
                            let reason = if still_held { FailReason::OpenInterrupted } else { FailReason::PaymentLost };
                            self.fail(&order, Phase::Opening, reason, json!({"why": "no channel found at start"}))
                                .await;
                        }
                        // Still negotiating, or the node would not say: the driver watches it.
                        Ok(Found::Pending) => {}
                        Err(e) => log::warn!("Order {}: cannot look for its channel yet ({e})", order.order_id),
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Start drivers for every paid order (after start, and on every block as a safety net).
    pub async fn resume(&self) {
        match self.inner.store.call(|s| s.orders_in_phases(&[Phase::PaymentHeld, Phase::Opening])).await {
            Ok(orders) => {
                for o in orders {
                    self.drive(o.order_id);
                }
            }
            Err(e) => log::warn!("Cannot list held orders: {e}"),
        }
    }

    /// Fail back the parts of incomplete sets that waited longer than `mpp_timeout` (the
    /// sweep behind the per-order timers).
    async fn fail_stale_parts(&self) {
        let timeout = i64::try_from(self.inner.cfg.mpp_timeout.as_millis()).unwrap_or(i64::MAX);
        let cutoff = self.inner.clock.now_ms().saturating_sub(timeout);
        let res = self
            .inner
            .store
            .call(move |s| {
                let mut out = vec![];
                for id in s.unpaid_with_parts()? {
                    out.extend(s.fail_incomplete_parts(&id, cutoff)?);
                }
                Ok(out)
            })
            .await;
        match res {
            Ok(keys) if !keys.is_empty() => self.answer(&keys, &Outcome::Fail(Failure::MppTimeout)),
            Ok(_) => {}
            Err(e) => log::warn!("Cannot time out stale parts: {e}"),
        }
    }

    /// Fail unpaid orders whose payment option expired (ruling 13), with any parts held.
    pub async fn expire_due(&self) {
        let now = self.inner.clock.now_ms();
        match self.inner.store.call(move |s| s.expire_unpaid(now)).await {
            Ok(moved) => {
                for (order, keys) in moved {
                    self.emit(&order, Phase::AwaitingPayment, Phase::Failed, Some(FailReason::PaymentExpired), false);
                    self.answer(&keys, &Outcome::Fail(Failure::IncorrectOrUnknown));
                }
            }
            Err(e) => log::warn!("Cannot expire orders: {e}"),
        }
    }

    /// Periodic work: expiry, deadlines of held orders, stray answers.
    pub async fn housekeeping(&self) {
        self.expire_due().await;
        self.fail_stale_parts().await;
        self.resume().await;
        self.answer_resolved().await;
    }

    /// `lsps1-cancelorder`: fail an unpaid or held order. Refused once the
    /// open has started: `fundchannel` may be broadcasting.
    pub async fn cancel(&self, order_id: &str) -> Result<Value, String> {
        let Some((order, _)) = self.load(order_id).await? else { return Err(format!("no order {order_id}")) };
        match order.phase {
            Phase::AwaitingPayment | Phase::PaymentHeld => {
                match self.try_fail(&order, order.phase, FailReason::Cancelled, json!({})).await {
                    Ok(n) => Ok(json!({ "order_id": order.order_id, "order_state": "FAILED", "htlcs_failed": n })),
                    Err(StoreError::Conflict(_)) => Err(format!("order {order_id} moved on meanwhile; look again")),
                    Err(e) => Err(store_err(e)),
                }
            }
            Phase::Opening => Err(format!("order {order_id} is opening its channel; it can no longer be cancelled")),
            Phase::Completed => Err(format!("order {order_id} is completed: its channel is open")),
            Phase::Failed => Err(format!("order {order_id} has already failed")),
        }
    }
}
