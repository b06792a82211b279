//! Driving a paid order: at most one driver per order waits for the client, opens the
//! channel with `fundchannel`, records it, and only then releases the preimage (ruling 11);
//! on any failure it fails the held payment back.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use serde_json::{Value, json};

use super::*;
use crate::clock::Clock;
use crate::lifecycle::htlc::Failure;
use crate::lifecycle::plan::{Observed, Step, next_step, next_step_onchain};
use crate::lsps0::ser::read_pubkey;
use crate::order::{FailReason, PaymentMethod, Phase};
use crate::ports::{ChannelApi, NodeApi, NodeError, OpenRequest, OpenedChannel, PeerChannel, WalletApi};
use crate::store::{ChannelRecord, HtlcKey, HtlcRecord, OrderRecord, StoreError};

impl<N: NodeApi + ChannelApi + WalletApi, C: Clock> Engine<N, C> {
    /// Make sure a driver runs for a paid order (at most one per order).
    pub fn drive(&self, order_id: String) {
        if !self.inner.drivers.lock().unwrap_or_else(|p| p.into_inner()).insert(order_id.clone()) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            // Unregistered however the task ends (a panic included), so the order can be
            // driven again on the next block.
            let _guard = Registered { engine: me.clone(), id: order_id.clone(), kind: Kind::Driver };
            if let Err(e) = me.run_driver(&order_id).await {
                log::warn!("Order {order_id}: {e}; will retry on the next block");
            }
        });
    }

    pub(super) async fn load(&self, order_id: &str) -> Result<Option<(OrderRecord, Vec<HtlcRecord>)>, String> {
        let id = order_id.to_string();
        self.inner.store.call(move |s| s.order_with_htlcs(&id)).await.map_err(store_err)
    }

    /// Whether the wallet can fund every order in flight, this one included.
    async fn funds_ok(&self) -> Option<bool> {
        let funds = match self.inner.node.wallet_funds().await {
            Ok(f) => f,
            Err(e) => {
                log::warn!("Cannot read wallet funds: {e}");
                return None;
            }
        };
        // Orders being opened are left out: their coins are reserved in listfunds already.
        let reserved = self.inner.store.call(|s| s.reserved_held_sat()).await.ok()?;
        Some(funds.confirmed_sat.saturating_sub(self.inner.cfg.emergency_reserve_sat) >= reserved)
    }

    async fn run_driver(&self, order_id: &str) -> Result<(), String> {
        let started = tokio::time::Instant::now();
        let mut funds_ok: Option<bool> = None;
        let mut funds_strikes = 0u32;
        let mut last_strike: Option<tokio::time::Instant> = None;
        let mut last_connect: Option<tokio::time::Instant> = None;
        let mut replay_checked = false;
        loop {
            let notified = self.inner.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Some((order, set)) = self.load(order_id).await? else { return Ok(()) };
            match order.phase {
                Phase::PaymentHeld => {}
                Phase::Opening if !self.in_flight(order_id) => {
                    // An open whose outcome this process does not know (a lost answer, or
                    // one left by a previous run): find it out, never open again; under the
                    // client's lock, so no other order's open can be taken for it.
                    let lock = self.client_lock(&order.client_node_id);
                    match lock.try_lock() {
                        Ok(_guard) => {
                            self.await_open_outcome(&order).await;
                            return Ok(());
                        }
                        Err(_) => {
                            if let Some(e) = crate::lifecycle::plan::earliest_expiry(&set)
                                && self.height().saturating_add(self.inner.cfg.deadlines.safety_margin_blocks) >= e
                            {
                                let detail = json!({"height": self.height(), "why": "open outcome unknown"});
                                self.fail(&order, Phase::Opening, FailReason::CltvDeadline, detail).await;
                                return Ok(());
                            }
                            let _ = tokio::time::timeout(self.inner.cfg.poll, notified).await;
                            continue;
                        }
                    }
                }
                _ => return Ok(()),
            }
            let client = read_pubkey(&order.client_node_id).map_err(|e| format!("bad client node id: {e}"))?;
            let live = set.iter().filter(|h| h.resolution.is_none()).all(|h| self.is_live(&h.key));
            if live && funds_ok.is_none() {
                // Three readings in a row before a refund: a wallet in the middle of another
                // open can read short for a moment.
                match self.funds_ok().await {
                    Some(false) if funds_strikes < 2 => {
                        // Strikes a poll apart: a wake-up storm must not read three times at once.
                        if last_strike.is_none_or(|t| t.elapsed() >= self.inner.cfg.poll) {
                            funds_strikes += 1;
                            last_strike = Some(tokio::time::Instant::now());
                        }
                    }
                    other => funds_ok = other,
                }
            }
            if !live && !replay_checked && started.elapsed() >= self.inner.cfg.replay_wait {
                // lightningd replays held HTLCs right after `init`; if none came, ask it.
                replay_checked = true;
                if let Some(true) = self.htlcs_gone(&set).await {
                    self.fail(&order, Phase::PaymentHeld, FailReason::PaymentLost, json!({"why": "not in listhtlcs"}))
                        .await;
                    return Ok(());
                }
            }
            let connected = if live { self.inner.node.peer_connected(client).await.unwrap_or(false) } else { false };
            let seen = Observed {
                now_ms: self.inner.clock.now_ms(),
                height: self.height(),
                peer_connected: connected,
                htlcs_live: live,
                funds_ok,
            };
            let step = if order.paid_method == Some(PaymentMethod::Onchain) {
                let deadline = i64::try_from(self.inner.cfg.onchain_open_deadline.as_millis()).unwrap_or(i64::MAX);
                next_step_onchain(&order, seen, deadline)
            } else {
                next_step(&order, &set, seen, self.inner.cfg.deadlines)
            };
            match step {
                Step::Done => return Ok(()),
                Step::Refund(reason) => {
                    let detail = json!({ "height": seen.height, "earliest_cltv_expiry": crate::lifecycle::plan::earliest_expiry(&set) });
                    self.fail(&order, Phase::PaymentHeld, reason, detail).await;
                    return Ok(());
                }
                Step::Open => {
                    if self.open(&order, client).await {
                        return Ok(());
                    }
                    let _ = tokio::time::timeout(self.inner.cfg.poll, notified).await;
                }
                Step::Wait => {
                    if live
                        && !connected
                        && funds_ok == Some(true)
                        && last_connect.is_none_or(|t| t.elapsed() >= self.inner.cfg.reconnect_every)
                    {
                        last_connect = Some(tokio::time::Instant::now());
                        match self.inner.node.connect(client).await {
                            Ok(()) => {
                                log::info!("Order {order_id}: connected to the client {client}");
                                continue;
                            }
                            Err(e) => log::info!("Order {order_id}: waiting for the client {client} to connect ({e})"),
                        }
                    }
                    let _ = tokio::time::timeout(self.inner.cfg.poll, notified).await;
                }
            }
        }
    }

    fn in_flight(&self, order_id: &str) -> bool {
        self.inner.opening.lock().unwrap_or_else(|p| p.into_inner()).contains(order_id)
    }

    /// `Some(true)` when none of the order's held HTLCs is still pending in lightningd.
    async fn htlcs_gone(&self, set: &[HtlcRecord]) -> Option<bool> {
        let held: Vec<_> = set.iter().filter(|h| h.resolution.is_none()).collect();
        let scids: Vec<String> =
            held.iter().map(|h| h.key.short_channel_id.clone()).collect::<HashSet<_>>().into_iter().collect();
        let pending = pending_on_node(&self.inner.node.list_htlcs_on(scids).await.ok()?);
        Some(held.iter().all(|h| !pending.contains(&(h.key.short_channel_id.clone(), h.key.id))))
    }

    /// The payment went back while nothing in this process held it: no live hook call, and
    /// lightningd no longer has the HTLCs.
    async fn payment_gone(&self, set: &[HtlcRecord]) -> bool {
        !set.iter().filter(|h| h.resolution.is_none()).any(|h| self.is_live(&h.key))
            && self.htlcs_gone(set).await == Some(true)
    }

    /// End an order without a channel and fail its HTLCs back (P-07, N-11). If the store
    /// cannot record it, the live HTLCs are failed back all the same: a refund never waits
    /// on bookkeeping, and the next start reconciles the order.
    pub(super) async fn fail(&self, order: &OrderRecord, from: Phase, reason: FailReason, detail: Value) {
        match self.try_fail(order, from, reason, detail).await {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => log::debug!("Order {}: moved on before it could fail", order.order_id),
            Err(e) => {
                log::error!("Order {}: cannot record the refund ({e}); failing its HTLCs back anyway", order.order_id);
                if let Ok(Some((_, set))) = self.load(&order.order_id).await {
                    self.answer(&held_keys(&set), &Outcome::Fail(Failure::IncorrectOrUnknown));
                }
            }
        }
    }

    /// Record the failure, tell operators, fail the HTLCs back; the number failed back.
    pub(super) async fn try_fail(
        &self,
        order: &OrderRecord,
        from: Phase,
        reason: FailReason,
        mut detail: Value,
    ) -> Result<usize, StoreError> {
        detail["message"] = json!(reason.describe());
        let id = order.order_id.clone();
        let now = self.inner.clock.now_ms();
        let keys = self.inner.store.call(move |s| s.fail_order(&id, from, reason, now, &detail)).await?;
        self.emit(order, from, Phase::Failed, Some(reason), false);
        self.answer(&keys, &Outcome::Fail(Failure::IncorrectOrUnknown));
        // An on-chain payment (or anything that reached the address) goes back now, not at
        // the next block (ruling 24).
        self.chain_pass_soon(order);
        Ok(keys.len())
    }

    fn open_request(&self, order: &OrderRecord, client: PublicKey) -> OpenRequest {
        OpenRequest {
            peer: client,
            amount_sat: order.lsp_balance_sat.saturating_add(order.client_balance_sat),
            feerate_perkw: order.funding_feerate_perkw,
            announce: order.announce_channel,
            push_msat: order.client_balance_sat.saturating_mul(1000),
            mindepth: order.required_channel_confirmations,
            zero_reserve: self.inner.cfg.zero_reserve,
        }
    }

    fn client_lock(&self, client: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.inner.client_locks.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 1_000 {
            m.retain(|_, l| Arc::strong_count(l) > 1);
        }
        m.entry(client.to_string()).or_default().clone()
    }

    /// Open the channel: the intent first, durably (with the client's existing channels, so
    /// none is ever taken for this order's), then `fundchannel`, then settle or refund
    ///. `false` when it could not start (try again later).
    async fn open(&self, order: &OrderRecord, client: PublicKey) -> bool {
        // Never wait for another order's open: this driver must keep checking its own
        // deadlines (try again after a poll).
        let lock = self.client_lock(&order.client_node_id);
        let Ok(_one_open_per_client) = lock.try_lock() else { return false };
        // Deposits at orders' addresses reserved before fundchannel picks its inputs: an
        // open never spends a client's on-chain payment or what is owed back (ruling 24).
        self.chain_pass().await;
        let known: Vec<String> = match self.inner.node.peer_channels(client).await {
            Ok(chans) => chans.into_iter().filter_map(|c| c.channel_id).collect(),
            Err(e) => {
                log::info!(
                    "Order {}: cannot list the client's channels before opening ({e}); retrying",
                    order.order_id
                );
                return false;
            }
        };
        let req = self.open_request(order, client);
        let detail = json!({
            "amount_sat": req.amount_sat, "push_msat": req.push_msat, "feerate_perkw": req.feerate_perkw,
            "announce": req.announce, "mindepth": req.mindepth, "reserve_zero": req.zero_reserve,
            "height": self.height(), "known_channels": known,
        });
        let id = order.order_id.clone();
        let now = self.inner.clock.now_ms();
        self.inner.opening.lock().unwrap_or_else(|p| p.into_inner()).insert(order.order_id.clone());
        let _in_flight = InFlightOpen { engine: self, order_id: &order.order_id };
        match self.inner.store.call(move |s| s.start_open(&id, now, &detail)).await {
            Ok(()) => self.emit(order, Phase::PaymentHeld, Phase::Opening, None, false),
            Err(StoreError::Conflict(_)) => return true, // cancelled meanwhile
            Err(e) => {
                log::warn!("Order {}: cannot record the open intent, not opening: {e}", order.order_id);
                return false;
            }
        }
        log::info!(
            "Order {}: fundchannel to {client}: {} sat, push {} msat, {} perkw, mindepth {}",
            order.order_id,
            req.amount_sat,
            req.push_msat,
            req.feerate_perkw,
            req.mindepth
        );
        match self.inner.node.fund_channel(req).await {
            Ok(ch) => self.complete(order, ch, false).await,
            // -4: the plugin serving fundchannel (spender) died: it may have broadcast.
            Err(e) if e.code.is_some() && e.code != Some(-4) => {
                self.fail(order, Phase::Opening, FailReason::OpenFailed, json!({ "error": e.message, "code": e.code }))
                    .await
            }
            Err(e) => {
                // No answer: lightningd may still finish the open. Never refund while it
                // might (a client stalling the open would get both).
                log::warn!("Order {}: fundchannel gave no answer ({e}); watching for the channel", order.order_id);
                if let Ok(Some((o, _))) = self.load(&order.order_id).await {
                    self.await_open_outcome(&o).await;
                }
            }
        }
        true
    }

    /// The channel of an `Opening` order whose `fundchannel` answer is unknown: funded (the
    /// broadcast happened), still being negotiated, or absent.
    pub(super) async fn find_channel(&self, order: &OrderRecord, client: PublicKey) -> Result<Found, NodeError> {
        let want = order.lsp_balance_sat.saturating_add(order.client_balance_sat).saturating_mul(1000);
        let id = order.order_id.clone();
        let known: HashSet<String> = self
            .inner
            .store
            .call(move |s| s.channels_before_open(&id))
            .await
            .map_err(|e| NodeError::new("store", None, e.to_string()))?
            .into_iter()
            .collect();
        let chans: Vec<PeerChannel> = self.inner.node.peer_channels(client).await?;
        let mut pending = false;
        for c in chans {
            if !c.opener_local || c.channel_id.as_ref().is_some_and(|id| known.contains(id)) {
                continue;
            }
            if c.funding_txid.is_none() {
                // Negotiating (OPENINGD, DUALOPEND_OPEN_*): the outcome is still coming.
                pending |= c.state.starts_with("OPENINGD") || c.state.starts_with("DUALOPEND");
                continue;
            }
            // A channel we funded for this amount, not there before the intent: the order's,
            // whatever its state now (a client may close it at once; it was still funded).
            if c.local_funds_msat != want {
                continue;
            }
            let (Some(txid), Some(outnum)) = (c.funding_txid.clone(), c.funding_outnum) else {
                pending = true;
                continue;
            };
            if let Some(cid) = c.channel_id.clone() {
                let owned = self.inner.store.call(move |s| s.channel_recorded(&cid)).await.unwrap_or(true);
                if owned {
                    continue;
                }
            }
            return Ok(Found::Funded(OpenedChannel { txid, outnum, channel_id: c.channel_id }));
        }
        Ok(if pending { Found::Pending } else { Found::Absent })
    }

    /// Wait out an open whose answer was lost: settle when its channel shows up, refund when
    /// it has surely not happened (absent on three looks in a row) or when the held HTLCs
    /// reach their safety margin, whichever comes first (ruling 17).
    async fn await_open_outcome(&self, order: &OrderRecord) {
        let Ok(client) = read_pubkey(&order.client_node_id) else { return };
        let mut absent = 0u32;
        loop {
            let notified = self.inner.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Ok(Some((order, set))) = self.load(&order.order_id).await else { return };
            if order.phase != Phase::Opening {
                return;
            }
            let height = self.height();
            if let Some(e) = crate::lifecycle::plan::earliest_expiry(&set)
                && height.saturating_add(self.inner.cfg.deadlines.safety_margin_blocks) >= e
            {
                // Out of time: stop an open still being negotiated (it can be cancelled until
                // its broadcast), then refund. A channel that opens anyway is the LSP's loss.
                if let Err(e) = self.inner.node.cancel_open(client).await {
                    log::info!("Order {}: fundchannel_cancel: {e}", order.order_id);
                }
                self.fail(
                    &order,
                    Phase::Opening,
                    FailReason::CltvDeadline,
                    json!({"height": height, "why": "open outcome unknown"}),
                )
                .await;
                return;
            }
            match self.find_channel(&order, client).await {
                Ok(Found::Funded(ch)) => {
                    let settled_here = self
                        .inner
                        .settled_unrecorded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains(&order.order_id);
                    let gone = !settled_here && self.payment_gone(&set).await;
                    self.complete(&order, ch, gone).await;
                    return;
                }
                Ok(Found::Pending) => absent = 0,
                Ok(Found::Absent) => {
                    absent += 1;
                    if absent >= 3 {
                        let reason = if self.payment_gone(&set).await {
                            FailReason::PaymentLost
                        } else {
                            FailReason::OpenFailed
                        };
                        self.fail(
                            &order,
                            Phase::Opening,
                            reason,
                            json!({"why": "no channel after an open without answer"}),
                        )
                        .await;
                        return;
                    }
                }
                Err(e) => log::info!("Order {}: cannot look for its channel yet ({e})", order.order_id),
            }
            let _ = tokio::time::timeout(self.inner.cfg.poll, notified).await;
        }
    }

    /// The funding transaction is out: record the channel, COMPLETED and PAID in one
    /// transaction, then settle (ruling 11, N-09). The broadcast happened whatever the
    /// store says: if it cannot record it after a few tries, the HTLCs are settled anyway
    /// (the client has its channel) and the next start reconciles the record.
    pub(super) async fn complete(&self, order: &OrderRecord, ch: OpenedChannel, refunded_after_open: bool) {
        self.complete_inner(order, ch, refunded_after_open).await;
        // A payment on-chain is the LSP's now, and outputs beyond it go back: at once.
        self.chain_pass_soon(order);
    }

    async fn complete_inner(&self, order: &OrderRecord, ch: OpenedChannel, refunded_after_open: bool) {
        if refunded_after_open {
            log::warn!(
                "Order {}: a channel {}:{} was opened but the payment was failed back: the channel is a gift to {}",
                order.order_id,
                ch.txid,
                ch.outnum,
                order.client_node_id
            );
        }
        let now = self.inner.clock.now_ms();
        let height = self.height();
        let blocks = order.channel_expiry_blocks;
        let channel = ChannelRecord {
            channel_id: ch.channel_id.clone(),
            funding_txid: ch.txid.clone(),
            funding_outnum: ch.outnum,
            funded_at_ms: now,
            // Ruling 16: funded_at + blocks × 10 minutes (N-10).
            expires_at_ms: now.saturating_add(i64::from(blocks).saturating_mul(600_000)),
            lease_end_block: Some(height.saturating_add(blocks)),
        };
        let detail = json!({
            "funding_outpoint": format!("{}:{}", ch.txid, ch.outnum), "channel_id": ch.channel_id,
            "lease_end_block": channel.lease_end_block, "height": height,
        });
        let mut last_err = None;
        for attempt in 0..5u64 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            let (id, rec, d) = (order.order_id.clone(), channel.clone(), detail.clone());
            match self.inner.store.call(move |s| s.complete_order(&id, &rec, now, refunded_after_open, &d)).await {
                Ok(keys) => {
                    self.emit(order, Phase::Opening, Phase::Completed, None, refunded_after_open);
                    if let (Some(t), Some(held)) = (self.inner.telemetry.get(), order.held_at_ms) {
                        t.payment_to_open(Duration::from_millis(u64::try_from(now.saturating_sub(held)).unwrap_or(0)));
                    }
                    log::info!(
                        "Order {}: channel {}:{} funded, lease until block {}",
                        order.order_id,
                        ch.txid,
                        ch.outnum,
                        height.saturating_add(blocks)
                    );
                    self.settle_or_refund(order, &keys, refunded_after_open);
                    return;
                }
                Err(StoreError::Conflict(_)) => return, // moved on (reconciled elsewhere)
                Err(StoreError::Constraint(_)) => {
                    // The channel is another order's already: never settle on it.
                    log::error!(
                        "Order {}: channel {}:{} is recorded for another order; not settling on it",
                        order.order_id,
                        ch.txid,
                        ch.outnum
                    );
                    return;
                }
                Err(e) => last_err = Some(e),
            }
        }
        log::error!(
            "Order {}: the channel {}:{} was funded but cannot be recorded ({}); settling anyway, the next start reconciles it",
            order.order_id,
            ch.txid,
            ch.outnum,
            last_err.map(|e| e.to_string()).unwrap_or_default()
        );
        if !refunded_after_open {
            self.inner.settled_unrecorded.lock().unwrap_or_else(|p| p.into_inner()).insert(order.order_id.clone());
        }
        if let Ok(Some((_, set))) = self.load(&order.order_id).await {
            self.settle_or_refund(order, &held_keys(&set), refunded_after_open);
        }
    }

    fn settle_or_refund(&self, order: &OrderRecord, keys: &[HtlcKey], refunded_after_open: bool) {
        let outcome =
            if refunded_after_open { Outcome::Fail(Failure::IncorrectOrUnknown) } else { settle_outcome(order) };
        self.answer(keys, &outcome);
    }
}
