//! Watching the chain for on-chain payments (rulings 22–25; P-08, P-13, P-14, P-15): on
//! every block and at start, read which of the orders' addresses received what (the
//! wallet's outputs are the truth; notifications only wake us), record it, let
//! [`crate::lifecycle::onchain::next_steps`] decide, and carry the steps out. Refunds are
//! signed, written down, then broadcast; broadcast again until they confirm; replaced with
//! a higher fee when they linger.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use super::*;
use crate::clock::Clock;
use crate::lifecycle::onchain::MAX_CONFIRMATIONS;
use crate::lifecycle::onchain::{
    ChainStep, Change, FundingStep, FundingWatch, OnchainTerms, OrderView, funding_step, next_steps, script_len,
    surplus_amount, surplus_weight,
};
use crate::order::Phase;
use crate::order::chain::{Outpoint, OutputRole};
use crate::ports::{ChannelApi, NodeApi, WalletApi, WalletOutput};
use crate::store::{RefundKind, RefundRecord, RefundState, SeenOutput};

/// Outputs still owed are reserved this many blocks ahead, and again when fewer than
/// [`RESERVE_AGAIN_BELOW`] remain: no `fundchannel` or `withdraw` can take them meanwhile.
const RESERVE_BLOCKS: u32 = 2016;
const RESERVE_AGAIN_BELOW: u32 = 144;

/// The blocks a refund is aimed at, when its fee rate is chosen.
const REFUND_TARGET_BLOCKS: u32 = 6;

fn op_key(o: &Outpoint) -> (String, u32) {
    (o.txid.clone(), o.vout)
}

/// What a refund sends: every input, or a surplus of so many sat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Whole,
    Surplus(u64),
}

impl<N: NodeApi + ChannelApi + WalletApi, C: Clock> Engine<N, C> {
    /// `block_added` with its hash: remember it, tell a reorg (a height seen before with
    /// another hash, ruling 25), then look at the chain.
    pub async fn on_block(&self, height: u32, hash: Option<String>) {
        // Held HTLCs measure their margins from the new block at once, before anything here
        // may wait on the store.
        self.announce_height(height);
        if let Some(hash) = hash {
            let h = hash.clone();
            match self.inner.store.call(move |s| s.block_at(height)).await {
                Ok((Some(old), _)) if old != hash => {
                    log::warn!("Reorg: block {height} is now {hash} (was {old}); on-chain payments are read again");
                }
                Ok((None, Some(top))) if height <= top => {
                    log::warn!("Reorg: block {height} ({hash}) comes after block {top}");
                }
                Ok(_) => {}
                Err(e) => log::warn!("Cannot read recent blocks: {e}"),
            }
            if let Err(e) = self.inner.store.call(move |s| s.record_block(height, &h)).await {
                log::warn!("Cannot record block {height}: {e}");
            }
        }
        // The new block counts at once, for every pass (an open's own included), before the
        // drivers are woken by `set_height`.
        self.note_height(height);
        let tip = self.height();
        // One read of the wallet serves both passes: on a large wallet it is most of a
        // block's work.
        let wallet = self.chain_pass_at(tip).await;
        self.funding_pass(tip, wallet.as_deref()).await;
    }

    /// The funding promise of every order, however paid (ruling 26): a funding transaction
    /// still unconfirmed as its deadline nears is bumped by a child spending its change,
    /// sized for the package; what cannot be bumped is told to the operator.
    pub async fn funding_pass(&self, tip: u32, wallet: Option<&[WalletOutput]>) {
        let watched = match self.inner.store.call(|s| s.watched_fundings()).await {
            Ok(w) if w.is_empty() => return,
            Ok(w) => w,
            Err(e) => {
                log::warn!("Cannot read the funding transactions to watch: {e}");
                return;
            }
        };
        let read;
        let wallet = match wallet {
            Some(w) => w,
            None => match self.inner.node.wallet_outputs().await {
                Ok(w) => {
                    read = w;
                    &read[..]
                }
                Err(e) => {
                    log::warn!("Cannot read the wallet for the funding promise ({e}); next block");
                    return;
                }
            },
        };
        let target = match self.inner.node.fee_estimates().await {
            Ok(f) => crate::lsps1::pricing::feerate_for_target(&f, 2).unwrap_or(0),
            Err(_) => 0,
        };
        let cap = self.inner.cfg.onchain.max_feerate_perkw;
        let now = self.inner.clock.now_ms();
        for w in watched {
            let change = wallet.iter().find(|o| o.txid == w.funding_txid && o.vout != w.funding_outnum);
            let watch = FundingWatch {
                deadline: w.deadline,
                feerate_perkw: w.feerate_perkw,
                weight: self.inner.cfg.funding_weight,
                bumped: w.child.is_some(),
            };
            let seen = change.map(|c| Change { amount_sat: c.amount_sat, confirmed: c.blockheight.is_some() });
            let child = w
                .child
                .as_ref()
                .and_then(|t| wallet.iter().find(|o| o.txid == *t))
                .map(|c| Change { amount_sat: c.amount_sat, confirmed: c.blockheight.is_some() });
            let step = funding_step(watch, seen, child, tip, target, cap);
            let id = w.order_id.clone();
            match step {
                FundingStep::Wait => {}
                FundingStep::Confirmed => {
                    let d = json!({"txid": w.funding_txid, "height": tip, "deadline": w.deadline});
                    if let Err(e) =
                        self.inner.store.call(move |s| s.set_funding_state(&id, "confirmed", None, now, &d)).await
                    {
                        log::warn!("Order {}: cannot record its funding as mined: {e}", w.order_id);
                    }
                }
                FundingStep::Bump { child_feerate_perkw, capped } => {
                    let Some(c) = change else { continue };
                    match self.inner.node.bump_by_child((c.txid.clone(), c.vout), child_feerate_perkw).await {
                        Ok(child) => {
                            log::info!(
                                "Order {}: funding {} unconfirmed {} block(s) before its deadline; child {child} at {child_feerate_perkw} perkw{}",
                                w.order_id,
                                w.funding_txid,
                                w.deadline.saturating_sub(tip),
                                if capped { " (held to the fee cap)" } else { "" }
                            );
                            let d = json!({"txid": w.funding_txid, "child": child, "feerate_perkw": child_feerate_perkw,
                                "capped": capped, "deadline": w.deadline});
                            let store_child = child.clone();
                            if let Err(e) = self
                                .inner
                                .store
                                .call(move |s| s.set_funding_state(&id, "bumped", Some(&store_child), now, &d))
                                .await
                            {
                                log::warn!("Order {}: cannot record its funding bump: {e}", w.order_id);
                            }
                        }
                        Err(e) => log::warn!("Order {}: cannot bump its funding ({e}); next block", w.order_id),
                    }
                }
                FundingStep::Warn(why) => {
                    log::warn!(
                        "Order {}: funding {} may miss its deadline (block {}): {why}",
                        w.order_id,
                        w.funding_txid,
                        w.deadline
                    );
                    let d = json!({"txid": w.funding_txid, "deadline": w.deadline, "why": why});
                    if let Ok(()) =
                        self.inner.store.call(move |s| s.set_funding_state(&id, "flagged", None, now, &d)).await
                        && let Ok(Some((order, _))) = self.load(&w.order_id).await
                    {
                        self.emit_note(&order, "funding_deadline_at_risk");
                    }
                }
            }
        }
    }

    /// A chain pass now, in the background, for an order with an on-chain option whose
    /// phase just ended (its outputs are kept or go back without waiting for a block).
    pub(super) fn chain_pass_soon(&self, order: &OrderRecord) {
        if order.onchain.is_some() {
            let me = self.clone();
            tokio::spawn(async move { me.chain_pass().await });
        }
    }

    /// One look at the chain at the current height.
    pub async fn chain_pass(&self) {
        let _ = self.chain_pass_at(self.height()).await;
    }

    /// One look at the chain: reserve what is owed, settle refunds, decide and act per
    /// order, with the chain's tip at `tip`. Returns the wallet's outputs when it read them.
    async fn chain_pass_at(&self, tip: u32) -> Option<Vec<WalletOutput>> {
        let _one = self.inner.chain_lock.lock().await;
        let addresses = match self.inner.store.call(|s| s.onchain_addresses()).await {
            Ok(a) => a,
            Err(e) => {
                log::warn!("Cannot read on-chain addresses: {e}");
                return None;
            }
        };
        if addresses.is_empty() {
            return None;
        }
        let wallet = match self.inner.node.wallet_outputs().await {
            Ok(w) => w,
            Err(e) => {
                log::warn!("Cannot read the wallet's outputs ({e}); on-chain payments wait for the next block");
                return None;
            }
        };
        let now = self.inner.clock.now_ms();
        let mut listed: HashMap<(String, u32), &WalletOutput> = HashMap::new();
        let mut seen = vec![];
        for o in &wallet {
            let Some(order_id) = o.address.as_ref().and_then(|a| addresses.get(a)) else { continue };
            seen.push(SeenOutput {
                order_id: order_id.clone(),
                outpoint: Outpoint { txid: o.txid.clone(), vout: o.vout },
                amount_sat: o.amount_sat,
                blockheight: o.blockheight,
            });
            listed.insert((o.txid.clone(), o.vout), o);
        }
        let changed = match self.inner.store.call(move |s| s.record_outputs(&seen, now)).await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("Cannot record on-chain outputs: {e}");
                return None;
            }
        };
        let open = match self.inner.store.call(|s| s.open_chain_outputs()).await {
            Ok(o) => o,
            Err(e) => {
                log::warn!("Cannot read on-chain outputs: {e}");
                return None;
            }
        };
        let mut reserve = vec![];
        let mut picked: HashSet<String> = changed.iter().cloned().collect();
        let mut orders: Vec<String> = changed;
        for (order_id, phase, o) in &open {
            match listed.get(&op_key(&o.outpoint)) {
                // A completed order's payment may leave the list spent by its own surplus
                // refund: that is settled with the refund, not news.
                None if o.role.must_stay_reserved() && o.blockheight.is_some() && *phase != Phase::Completed => {
                    // Not listed any more, not by a refund of ours: reorged out with its
                    // transaction, or spent by something else. Never counted again until
                    // the wallet lists it again.
                    log::warn!("Order {order_id}: output {} left the wallet's list", o.outpoint);
                    let op = o.outpoint.clone();
                    if let Err(e) = self.inner.store.call(move |s| s.output_vanished(&op)).await {
                        log::warn!("Cannot record a vanished output: {e}");
                    }
                }
                Some(w)
                    if o.role.held_back()
                        && (!w.reserved
                            || w.reserved_to_block.unwrap_or(0) < tip.saturating_add(RESERVE_AGAIN_BELOW)) =>
                {
                    reserve.push(op_key(&o.outpoint));
                }
                _ => {}
            }
            // An order waiting for payment whose outputs did not move has nothing new to
            // decide, unless an output just got deep enough: those (most of them, on a busy
            // LSP) are left alone, so a block's work follows what happened, not history.
            let idle = *phase == Phase::AwaitingPayment
                && o.role == OutputRole::Seen
                && o.blockheight.is_none_or(|h| tip.saturating_sub(h) > u32::from(MAX_CONFIRMATIONS));
            if !idle && picked.insert(order_id.clone()) {
                orders.push(order_id.clone());
            }
        }
        // Reserved first of all: no open of another order and no withdraw may take them.
        if !reserve.is_empty()
            && let Err(e) = self.inner.node.reserve_outputs(reserve.clone(), RESERVE_BLOCKS).await
        {
            log::warn!("Cannot reserve {} on-chain payment output(s): {e}", reserve.len());
        }
        self.settle_refunds(&listed, tip).await;
        for id in orders {
            self.chain_order(&id, tip).await;
        }
        drop(listed);
        Some(wallet)
    }

    /// Decide and act for one order.
    async fn chain_order(&self, order_id: &str, tip: u32) {
        let id = order_id.to_string();
        let (order, outputs) = match self.inner.store.call(move |s| s.order_with_outputs(&id)).await {
            Ok(Some(x)) => x,
            Ok(None) => return,
            Err(e) => {
                log::warn!("Order {order_id}: cannot read it for the chain ({e})");
                return;
            }
        };
        let Some(q) = &order.onchain else { return };
        let id = order.order_id.clone();
        let refund_pending = match self.inner.store.call(move |s| s.refunds_of(&id)).await {
            Ok(r) => r.iter().any(|r| matches!(r.state, RefundState::Signed | RefundState::Broadcast)),
            Err(e) => {
                log::warn!("Order {order_id}: cannot read its refunds ({e})");
                return;
            }
        };
        let view = OrderView {
            phase: order.phase,
            paid_method: order.paid_method,
            reorg_flagged: order.reorg_flagged,
            surplus_sat: q.surplus_sat,
            refund_pending,
        };
        let terms = OnchainTerms { order_total_sat: q.order_total_sat, min_confirmations: q.min_confirmations };
        let now = self.inner.clock.now_ms();
        for step in next_steps(view, terms, &outputs, tip) {
            match step {
                ChainStep::Pay { outputs: paying, surplus_sat } => {
                    let (id, p) = (order.order_id.clone(), paying.clone());
                    match self.inner.store.call(move |s| s.pay_onchain(&id, &p, surplus_sat, now)).await {
                        Ok(()) => {
                            log::info!(
                                "Order {}: paid on-chain by {} output(s){} (P-13)",
                                order.order_id,
                                paying.len(),
                                if surplus_sat > 0 {
                                    format!(", {surplus_sat} sat over the total")
                                } else {
                                    String::new()
                                }
                            );
                            self.emit(&order, Phase::AwaitingPayment, Phase::PaymentHeld, None, false);
                            self.drive(order.order_id.clone());
                        }
                        Err(StoreError::Conflict(_)) => {}
                        Err(e) => log::warn!("Order {}: cannot record its on-chain payment: {e}", order.order_id),
                    }
                }
                ChainStep::Unpay => {
                    let id = order.order_id.clone();
                    match self.inner.store.call(move |s| s.unpay_onchain(&id, now)).await {
                        Ok(()) => {
                            log::warn!(
                                "Order {}: its on-chain payment left the chain before the open; waiting again (ruling 25)",
                                order.order_id
                            );
                            self.emit(&order, Phase::PaymentHeld, Phase::AwaitingPayment, None, false);
                        }
                        Err(StoreError::Conflict(_)) => {}
                        Err(e) => log::warn!("Order {}: cannot undo its on-chain payment: {e}", order.order_id),
                    }
                }
                ChainStep::Flag(gone) => {
                    let (id, g) = (order.order_id.clone(), gone.clone());
                    if let Ok(true) = self.inner.store.call(move |s| s.flag_reorg(&id, &g, now)).await {
                        log::warn!(
                            "Order {}: its on-chain payment ({}) left the chain after the channel was opened; the channel stands (ruling 25)",
                            order.order_id,
                            gone.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                        );
                        self.emit_note(&order, "payment_reorged_after_open");
                    }
                }
                ChainStep::Keep(kept) => {
                    let (id, k) = (order.order_id.clone(), kept.clone());
                    if let Err(e) = self.inner.store.call(move |s| s.keep_outputs(&id, &k)).await {
                        log::warn!("Order {}: cannot record its kept outputs: {e}", order.order_id);
                        continue;
                    }
                    let ops: Vec<(String, u32)> = kept.iter().map(op_key).collect();
                    if let Err(e) = self.inner.node.unreserve_outputs(ops).await {
                        log::info!("Order {}: could not release its paid outputs to the wallet ({e})", order.order_id);
                    }
                }
                ChainStep::Refund(ops) => self.refund(&order, ops, tip, Plan::Whole).await,
                ChainStep::RefundSurplus { from, surplus_sat } => {
                    self.refund(&order, from, tip, Plan::Surplus(surplus_sat)).await;
                }
            }
        }
    }

    /// The fee rate for a refund (bLIP-51: "a reasonable fee rate"): the estimate for a few
    /// blocks, never above the operator's cap.
    async fn refund_feerate(&self) -> u32 {
        let cap = self.inner.cfg.onchain.max_feerate_perkw;
        let est = match self.inner.node.fee_estimates().await {
            Ok(f) => crate::lsps1::pricing::feerate_for_target(&f, REFUND_TARGET_BLOCKS as u16)
                .or(f.opening_perkw)
                .unwrap_or(f.floor_perkw.max(253)),
            Err(e) => {
                log::info!("No fee estimates for a refund ({e}); using 2,500 perkw");
                2_500
            }
        };
        est.clamp(253, cap.max(253))
    }

    /// Refund exactly `ops` of `order` to its refund address (ruling 24, P-14), or the
    /// surplus paid beyond its total from them (ruling 23).
    async fn refund(&self, order: &OrderRecord, ops: Vec<Outpoint>, tip: u32, plan: Plan) {
        let Some(dest) = order.refund_onchain_address.clone() else {
            log::error!("Order {}: outputs to refund but no refund address", order.order_id);
            return;
        };
        let feerate = self.refund_feerate().await;
        let _ = self.sign_and_send(order, ops, dest, feerate, tip, None, plan).await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn sign_and_send(
        &self,
        order: &OrderRecord,
        ops: Vec<Outpoint>,
        dest: String,
        feerate: u32,
        tip: u32,
        replaces: Option<String>,
        plan: Plan,
    ) -> bool {
        let now = self.inner.clock.now_ms();
        let keys: Vec<(String, u32)> = ops.iter().map(op_key).collect();
        let signed = match plan {
            Plan::Whole => self.inner.node.sign_refund(keys, dest.clone(), feerate).await,
            Plan::Surplus(surplus) => match surplus_amount(surplus, ops.len(), script_len(&dest), feerate) {
                Some(amount) => self.inner.node.sign_partial_refund(keys, dest.clone(), amount, feerate).await,
                None => Ok(None),
            },
        };
        let signed = match (signed, plan) {
            (Ok(Some(s)), _) => s,
            (Ok(None), Plan::Surplus(surplus)) if replaces.is_none() => {
                log::info!("Order {}: a surplus of {surplus} sat cannot pay its refund's fee; kept", order.order_id);
                let id = order.order_id.clone();
                if let Err(e) = self.inner.store.call(move |s| s.surplus_kept(&id, surplus, now)).await {
                    log::warn!("Order {}: cannot record a kept surplus: {e}", order.order_id);
                }
                return false;
            }
            (Ok(None), Plan::Whole) if replaces.is_none() => {
                let (id, o) = (order.order_id.clone(), ops.clone());
                log::info!("Order {}: {} output(s) too small to refund; kept and recorded", order.order_id, ops.len());
                if let Err(e) = self.inner.store.call(move |s| s.mark_dust(&id, &o, now)).await {
                    log::warn!("Order {}: cannot record dust: {e}", order.order_id);
                }
                return false;
            }
            (Ok(None), _) => return false,
            (Err(e), _) => {
                log::warn!("Order {}: cannot build its refund ({e}); trying again on the next block", order.order_id);
                return false;
            }
        };
        let record = RefundRecord {
            txid: signed.txid.clone(),
            order_id: order.order_id.clone(),
            psbt: signed.psbt.clone(),
            inputs: ops,
            destination: dest,
            amount_sat: signed.amount_sat,
            fee_sat: signed.fee_sat,
            feerate_perkw: feerate,
            created_height: tip,
            created_at_ms: now,
            state: RefundState::Signed,
            replaces,
            kind: match plan {
                Plan::Whole => RefundKind::Whole,
                Plan::Surplus(_) => RefundKind::Surplus,
            },
        };
        // Written down before it leaves: a restart sends the same transaction again.
        let r = record.clone();
        if let Err(e) = self.inner.store.call(move |s| s.record_refund(&r)).await {
            log::warn!("Order {}: cannot record its refund ({e}); not broadcast", order.order_id);
            return false;
        }
        log::info!(
            "Order {}: refund {} of {} sat ({} sat fee, {} perkw) to {}",
            order.order_id,
            record.txid,
            record.amount_sat,
            record.fee_sat,
            feerate,
            record.destination
        );
        self.send_refund(&record).await;
        self.emit_note(order, if record.replaces.is_some() { "refund_replaced" } else { "refund_broadcast" });
        true
    }

    async fn send_refund(&self, r: &RefundRecord) {
        match self.inner.node.broadcast(r.psbt.clone()).await {
            Ok(_) => {}
            Err(e) if e.message.contains("already") || e.message.contains("-27") => {}
            Err(e) => {
                log::info!("Refund {} of order {}: broadcast failed ({e}); again next block", r.txid, r.order_id);
                return;
            }
        }
        if r.state == RefundState::Signed {
            let txid = r.txid.clone();
            if let Err(e) = self.inner.store.call(move |s| s.set_refund_state(&txid, RefundState::Broadcast)).await {
                log::warn!("Refund {}: cannot record its broadcast: {e}", r.txid);
            }
        }
    }

    /// Refunds not known to be confirmed: done when the wallet no longer lists their inputs
    /// (spent and mined); else sent again, and replaced with a higher fee once they waited
    /// `rbf_after_blocks` (P-15), up to the fee cap.
    async fn settle_refunds(&self, listed: &HashMap<(String, u32), &WalletOutput>, tip: u32) {
        let open = match self.inner.store.call(|s| s.open_refunds()).await {
            Ok(r) => r,
            Err(e) => {
                log::warn!("Cannot read refunds: {e}");
                return;
            }
        };
        for r in open {
            if r.inputs.iter().all(|o| !listed.contains_key(&op_key(o))) {
                let txid = r.txid.clone();
                if self.inner.store.call(move |s| s.set_refund_state(&txid, RefundState::Confirmed)).await.is_ok() {
                    log::info!("Order {}: refund {} confirmed", r.order_id, r.txid);
                }
                continue;
            }
            let cap = self.inner.cfg.onchain.max_feerate_perkw;
            let waited = tip.saturating_sub(r.created_height);
            if waited >= self.inner.cfg.onchain.rbf_after_blocks && r.feerate_perkw < cap {
                // bLIP-51: bumped if unresolved after 6 hours. A replacement must pay more
                // than the original by at least the relay fee: a quarter more, or 253 perkw.
                let bumped = r.feerate_perkw.saturating_add((r.feerate_perkw / 4).max(253)).min(cap);
                let id = r.order_id.clone();
                if let Ok(Some((order, _))) = self.inner.store.call(move |s| s.order_with_outputs(&id)).await {
                    log::info!(
                        "Order {}: refund {} unconfirmed after {waited} blocks; replacing it at {bumped} perkw",
                        r.order_id,
                        r.txid
                    );
                    let plan = match r.kind {
                        RefundKind::Whole => Plan::Whole,
                        // The surplus it was made for: its amount plus the fee it was allowed.
                        RefundKind::Surplus => {
                            let w = surplus_weight(r.inputs.len(), script_len(&r.destination));
                            Plan::Surplus(r.amount_sat + (w * u64::from(r.feerate_perkw)).div_ceil(1000))
                        }
                    };
                    let (ins, dest) = (r.inputs.clone(), r.destination.clone());
                    if self.sign_and_send(&order, ins, dest, bumped, tip, Some(r.txid.clone()), plan).await {
                        continue;
                    }
                    // No replacement could be made: the standing refund is sent again.
                }
            }
            // lightningd never rebroadcasts a wallet spend after a restart: we do.
            self.send_refund(&r).await;
        }
    }

    /// An on-chain event that is not a phase change (a refund, a reorg flag), told the same
    /// way as transitions.
    fn emit_note(&self, order: &OrderRecord, note: &'static str) {
        if let Some(tx) = &self.inner.events {
            let _ = tx.send(OrderChanged {
                order_id: order.order_id.clone(),
                client_node_id: order.client_node_id.clone(),
                from: order.phase,
                to: order.phase,
                reason: None,
                refunded_after_open: order.refunded_after_open,
                note: Some(note),
            });
        }
    }
}
