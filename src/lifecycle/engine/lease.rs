//! Carries out the lease-end policy of [`crate::lifecycle::lease`]: on every block, leases
//! whose end block passed are marked ended (the close guard already lets go at that height)
//! and reported; with `close-idle`, each ended lease's channel activity is recorded and an
//! idle channel is closed. The decision is the pure `lease::decide`; `lease_plan` shows the
//! same decisions to the operator without acting on them.

use std::collections::HashMap;

use serde_json::json;

use super::*;
use crate::lifecycle::lease::{self, LeaseAction, LeaseDecision, LeasePolicy};
use crate::ports::ChannelActivity;
use crate::store::{LeaseRow, LeaseState};

/// lightningd's channels by id and by funding outpoint (a lease recorded without a channel id
/// is found by its outpoint).
struct ChannelIndex<'a> {
    by_id: HashMap<&'a str, &'a ChannelActivity>,
    by_outpoint: HashMap<(&'a str, u32), &'a ChannelActivity>,
}

impl<'a> ChannelIndex<'a> {
    fn of(channels: &'a [ChannelActivity]) -> Self {
        ChannelIndex {
            by_id: channels.iter().map(|c| (c.channel_id.as_str(), c)).collect(),
            by_outpoint: channels
                .iter()
                .filter_map(|c| Some(((c.funding_txid.as_deref()?, c.funding_outnum?), c)))
                .collect(),
        }
    }

    fn find(&self, lease: &LeaseRow) -> Option<ChannelActivity> {
        lease
            .channel_id
            .as_deref()
            .and_then(|id| self.by_id.get(id))
            .or_else(|| self.by_outpoint.get(&(lease.funding_txid.as_str(), lease.funding_outnum)))
            .map(|c| (*c).clone())
    }
}

/// One lease with the channel as lightningd lists it and what the policy makes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasePlan {
    pub lease: LeaseRow,
    pub channel: Option<ChannelActivity>,
    pub decision: LeaseDecision,
}

impl<N: NodeApi + ChannelApi + WalletApi, C: Clock> Engine<N, C> {
    /// The lease pass of a block: returns the leases that ended at this height, for the
    /// operator's notification.
    pub async fn lease_pass(&self) -> Vec<LeaseRow> {
        let _one = self.inner.lease_lock.lock().await;
        let height = self.height();
        let now = self.inner.clock.now_ms();
        let ended = match self.inner.store.call(move |s| s.end_leases(height, now)).await {
            Ok(e) => e,
            Err(e) => {
                log::warn!("Cannot mark ended leases: {e}");
                vec![]
            }
        };
        for l in &ended {
            log::info!(
                "Order {}: the lease of channel {} ended at block {}; close protection lifted (policy: {})",
                l.order_id,
                l.channel_id.as_deref().unwrap_or("?"),
                l.lease_end_block,
                self.inner.cfg.lease_policy.as_str()
            );
        }
        if let LeasePolicy::CloseIdle { force_close_after_secs, .. } = self.inner.cfg.lease_policy {
            match self.lease_plan(0, true).await {
                Ok(plans) => {
                    for p in plans {
                        self.carry_out(p, force_close_after_secs).await;
                    }
                }
                Err(e) => log::warn!("Lease-end policy skipped this block: {e}"),
            }
        }
        ended
    }

    /// What the policy makes of every lease that ends within `within_blocks` of the tip,
    /// every lease that ended in the last `within_blocks` and every one closing (`record`: the
    /// lease pass, which looks at every ended lease and records each channel's activity; a
    /// look by the operator records nothing), earliest end first.
    pub async fn lease_plan(&self, within_blocks: u32, record: bool) -> Result<Vec<LeasePlan>, String> {
        let height = self.height();
        let until = height.saturating_add(within_blocks);
        let ended_since = if record { 0 } else { height.saturating_sub(within_blocks) };
        let leases = self.inner.store.call(move |s| s.leases_until(until, ended_since)).await.map_err(store_err)?;
        if leases.is_empty() {
            return Ok(vec![]);
        }
        let channels = self.inner.node.channel_activity().await.map_err(|e| e.to_string())?;
        let index = ChannelIndex::of(&channels);
        let mut plans = Vec::with_capacity(leases.len());
        for mut lease in leases {
            let channel = index.find(&lease);
            if let Some(c) = &channel
                && lease.state != LeaseState::Active
                && lease.activity_count != Some(c.payments_fulfilled)
            {
                // A first reading counts from now: what moved before it is unknown, so a channel
                // is never found idle for blocks nobody watched (after an upgrade, a policy
                // change, or a restart past the lease's end).
                lease.active_height = Some(lease.active_height.unwrap_or(0).max(height));
                lease.activity_count = Some(c.payments_fulfilled);
                if record {
                    let (id, count) = (lease.order_id.clone(), c.payments_fulfilled);
                    if let Err(e) = self.inner.store.call(move |s| s.note_activity(&id, count, height)).await {
                        log::warn!("Cannot record the activity of order {}'s channel: {e}", lease.order_id);
                    }
                }
            }
            let decision = lease::decide(self.inner.cfg.lease_policy, &lease, channel.as_ref(), height);
            plans.push(LeasePlan { lease, channel, decision });
        }
        Ok(plans)
    }

    /// The policy's view of one lease, with its channel as lightningd lists it now.
    pub async fn lease_plan_of(&self, lease: LeaseRow) -> LeasePlan {
        let height = self.height();
        match self.inner.node.channel_activity().await {
            Ok(channels) => {
                let channel = ChannelIndex::of(&channels).find(&lease);
                let decision = lease::decide(self.inner.cfg.lease_policy, &lease, channel.as_ref(), height);
                LeasePlan { lease, channel, decision }
            }
            Err(e) => {
                let action = if height < lease.lease_end_block { LeaseAction::Protect } else { LeaseAction::Keep };
                let decision = LeaseDecision { action, why: format!("cannot read the channel from lightningd: {e}") };
                LeasePlan { lease, channel: None, decision }
            }
        }
    }

    async fn carry_out(&self, plan: LeasePlan, force_close_after_secs: u64) {
        let LeasePlan { lease, decision, .. } = plan;
        let now = self.inner.clock.now_ms();
        match decision.action {
            LeaseAction::Done if lease.state != LeaseState::Closed => {
                let (id, from) = (lease.order_id.clone(), lease.state);
                let detail = json!({ "why": decision.why });
                if let Err(e) =
                    self.inner.store.call(move |s| s.set_lease_state(&id, from, LeaseState::Closed, now, &detail)).await
                {
                    log::warn!("Cannot record the close of order {}'s channel: {e}", lease.order_id);
                }
            }
            LeaseAction::Close => {
                let Some(channel_id) = lease.channel_id.clone() else { return };
                // The intent first: a restart in the middle never asks twice.
                let (id, detail) = (lease.order_id.clone(), json!({ "why": decision.why, "channel_id": channel_id }));
                match self
                    .inner
                    .store
                    .call(move |s| s.set_lease_state(&id, LeaseState::Ended, LeaseState::Closing, now, &detail))
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        log::warn!("Not closing order {}'s channel: {e}", lease.order_id);
                        return;
                    }
                }
                log::info!("Order {}: closing channel {channel_id}: {}", lease.order_id, decision.why);
                let engine = self.clone();
                // `close` waits for the peer (up to the force-close wait): not on the block's path.
                tokio::spawn(async move {
                    match engine.inner.node.close_channel(channel_id.clone(), force_close_after_secs).await {
                        Ok(kind) => log::info!("Order {}: channel {channel_id} closed ({kind})", lease.order_id),
                        Err(e) if e.code.is_some() => {
                            // lightningd refused: nothing is closing; the next block decides again.
                            let msg = format!("Order {}: close of channel {channel_id} refused: {e}", lease.order_id);
                            log::warn!("{msg}");
                            engine.note_error(msg);
                            let id = lease.order_id.clone();
                            let detail = json!({ "error": e.to_string() });
                            let now = engine.inner.clock.now_ms();
                            let _ = engine
                                .inner
                                .store
                                .call(move |s| {
                                    s.set_lease_state(&id, LeaseState::Closing, LeaseState::Ended, now, &detail)
                                })
                                .await;
                        }
                        // No answer (the wait outlasted the call): lightningd goes on closing.
                        Err(e) => log::info!("Order {}: close of channel {channel_id} under way: {e}", lease.order_id),
                    }
                });
            }
            _ => {}
        }
    }
}
