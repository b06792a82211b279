//! The thin async loop around the pure decisions of [`super::htlc`] and [`super::plan`]:
//! it holds the `htlc_accepted` calls, drives each paid order to its channel or its refund,
//! answers every held HTLC exactly once, and reconciles with the node at start.
//!
//! Invariants (issue 11; checked by the model test and the end-to-end tests):
//! - an HTLC is settled only after its order's channel is recorded (decision 11);
//! - an order is opened at most once: the `PaymentHeld` → `Opening` compare-and-set is the
//!   only way to `fundchannel`, and an order found in `Opening` at start is never reopened;
//! - nothing is opened unless every held HTLC has a live hook call to settle (decision 17);
//! - a held HTLC is failed back before it comes within the safety margin of its expiry.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot, watch};

use super::htlc::{Failure, HoldRules, HtlcDecision, HtlcIn, decide};
use super::plan::{Deadlines, Observed, Step, next_step};
use crate::clock::Clock;
use crate::lsps0::ser::read_pubkey;
use crate::lsps1::invoice::payment_hash_of;
use crate::lsps1::order::{EventSink, FailReason, OrderChanged, Phase};
use crate::ports::{ChannelApi, NodeApi, NodeError, NodeHtlc, OpenRequest, OpenedChannel, PeerChannel};
use crate::store::{ChannelRecord, HtlcKey, HtlcRecord, OrderRecord, Resolution, Store, StoreError};

/// The lifecycle's settings, from the options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleConfig {
    pub rules: HoldRules,
    pub deadlines: Deadlines,
    /// BOLT 4 `mpp_timeout`: an incomplete set is failed back after this long.
    pub mpp_timeout: Duration,
    /// `min-emergency-msat`, which the wallet keeps back.
    pub emergency_reserve_sat: u64,
    /// Open with `reserve=0` (N-08).
    pub zero_reserve: bool,
    /// How long a driver waits for lightningd to replay held HTLCs before asking
    /// `listhtlcs` whether they still exist.
    pub replay_wait: Duration,
    /// How often a waiting driver looks again without being woken.
    pub poll: Duration,
    /// How often to try `connect` to an absent client (decision 14).
    pub reconnect_every: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            rules: HoldRules { safety_margin_blocks: 12, open_allowance_blocks: 6 },
            deadlines: Deadlines { safety_margin_blocks: 12, open_deadline_ms: 600_000, open_allowance_blocks: 6 },
            mpp_timeout: Duration::from_secs(60),
            emergency_reserve_sat: 25_000,
            zero_reserve: false,
            replay_wait: Duration::from_secs(60),
            poll: Duration::from_secs(5),
            reconnect_every: Duration::from_secs(30),
        }
    }
}

/// The hook's answer, built only from typed values (lightningd calls `fatal()` on a
/// malformed one; fixtures README). `cln::hooks` turns it into JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAnswer {
    Continue,
    /// 64 lowercase hex characters whose SHA-256 is the HTLC's payment hash.
    Resolve {
        payment_key: String,
    },
    /// Hex of a BOLT 4 failure message.
    Fail {
        failure_message: String,
    },
}

/// What [`Engine::find_channel`] saw.
enum Found {
    Funded(OpenedChannel),
    /// An open with the client is still being negotiated.
    Pending,
    Absent,
}

/// Marks an order's `fundchannel` as in flight in this process while it lives.
struct InFlightOpen<'a, N, C> {
    engine: &'a Engine<N, C>,
    order_id: &'a str,
}

impl<N, C> Drop for InFlightOpen<'_, N, C> {
    fn drop(&mut self) {
        self.engine.inner.opening.lock().unwrap_or_else(|p| p.into_inner()).remove(self.order_id);
    }
}

enum Kind {
    Driver,
    Timer,
}

/// An order's driver or MPP timer, registered while its task lives.
struct Registered<N, C> {
    engine: Engine<N, C>,
    id: String,
    kind: Kind,
}

impl<N, C> Drop for Registered<N, C> {
    fn drop(&mut self) {
        let set = match self.kind {
            Kind::Driver => &self.engine.inner.drivers,
            Kind::Timer => &self.engine.inner.timers,
        };
        set.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

/// What a held HTLC's hook call is finally told.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Settle(String),
    Fail(Failure),
}

struct Inner<N, C> {
    store: Store,
    node: N,
    clock: C,
    cfg: LifecycleConfig,
    /// Pending hook calls, by HTLC. A key present here is "live": this process can answer it.
    waiters: Mutex<HashMap<HtlcKey, Vec<oneshot::Sender<Outcome>>>>,
    /// Orders with a driver running (at most one each).
    drivers: Mutex<HashSet<String>>,
    /// Orders with an MPP timer running.
    timers: Mutex<HashSet<String>>,
    /// Orders settled from memory because their record could not be written: when the
    /// record is retried they read PAID, not a gift.
    settled_unrecorded: Mutex<HashSet<String>>,
    /// Parts failed back from memory (mpp_timeout) because the store could not record it:
    /// recorded before any new HTLC is counted, so that no set is completed by parts
    /// already sent back.
    failed_unrecorded: Mutex<HashSet<HtlcKey>>,
    /// Orders whose `fundchannel` is in flight in this process.
    opening: Mutex<HashSet<String>>,
    /// One open at a time per client node, so a lost answer can never be matched to another
    /// order's channel of the same size.
    client_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    height: watch::Sender<u32>,
    /// Woken on `connect` notifications and new blocks.
    wake: Notify,
    events: Option<EventSink>,
}

/// The order lifecycle. Cheap to clone.
pub struct Engine<N, C> {
    inner: Arc<Inner<N, C>>,
}

impl<N, C> Clone for Engine<N, C> {
    fn clone(&self) -> Self {
        Engine { inner: self.inner.clone() }
    }
}

fn store_err(e: StoreError) -> String {
    format!("order store: {e}")
}

/// The keys of the HTLCs still held.
fn held_keys(set: &[HtlcRecord]) -> Vec<HtlcKey> {
    set.iter().filter(|h| h.resolution.is_none()).map(|h| h.key.clone()).collect()
}

/// The incoming HTLCs lightningd still holds, by key.
fn pending_on_node(node: &[NodeHtlc]) -> HashSet<(String, u64)> {
    node.iter().filter(|h| h.incoming && h.pending()).map(|h| (h.short_channel_id.clone(), h.id)).collect()
}

/// What a settled HTLC of `order` is told: the checked preimage, or (never expected) a
/// failure rather than a wrong key.
fn settle_outcome(order: &OrderRecord) -> Outcome {
    match checked_preimage(order) {
        Some(p) => Outcome::Settle(p),
        None => {
            log::error!("Order {}: stored preimage does not match its payment hash; failing back", order.order_id);
            Outcome::Fail(Failure::IncorrectOrUnknown)
        }
    }
}

/// The preimage of `order` if it is well-formed and matches its payment hash. Never answer
/// `resolve` with anything else: a wrong key makes lightningd log BROKEN and fail the HTLC.
fn checked_preimage(order: &OrderRecord) -> Option<String> {
    let b = order.bolt11.as_ref()?;
    let bytes: [u8; 32] = hex::decode(&b.preimage).ok()?.try_into().ok()?;
    (hex::encode(payment_hash_of(&bytes)) == b.payment_hash.to_ascii_lowercase()).then(|| hex::encode(bytes))
}

impl<N: NodeApi + ChannelApi, C: Clock> Engine<N, C> {
    pub fn new(store: Store, node: N, clock: C, cfg: LifecycleConfig, height: u32, events: Option<EventSink>) -> Self {
        let (tx, _rx) = watch::channel(height);
        Engine {
            inner: Arc::new(Inner {
                store,
                node,
                clock,
                cfg,
                waiters: Mutex::new(HashMap::new()),
                drivers: Mutex::new(HashSet::new()),
                timers: Mutex::new(HashSet::new()),
                opening: Mutex::new(HashSet::new()),
                settled_unrecorded: Mutex::new(HashSet::new()),
                failed_unrecorded: Mutex::new(HashSet::new()),
                client_locks: Mutex::new(HashMap::new()),
                height: tx,
                wake: Notify::new(),
                events,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn height(&self) -> u32 {
        *self.inner.height.borrow()
    }

    /// A new block (`block_added`): deadlines are measured against it.
    pub fn set_height(&self, h: u32) {
        self.inner.height.send_if_modified(|cur| {
            let changed = h > *cur;
            if changed {
                *cur = h;
            }
            changed
        });
        self.inner.wake.notify_waiters();
    }

    /// A peer connected (`connect` notification): waiting opens look again (N-02).
    pub fn peer_connected(&self, _peer: PublicKey) {
        self.inner.wake.notify_waiters();
    }

    fn emit(&self, order: &OrderRecord, from: Phase, to: Phase, reason: Option<FailReason>, refunded: bool) {
        let ev = OrderChanged {
            order_id: order.order_id.clone(),
            client_node_id: order.client_node_id.clone(),
            from,
            to,
            reason,
            refunded_after_open: refunded,
        };
        match reason {
            Some(r) => log::info!(
                "Order {}: {} -> {} ({}); held HTLCs failed back",
                ev.order_id,
                from.as_str(),
                to.as_str(),
                r.describe()
            ),
            None => log::info!("Order {}: {} -> {}", ev.order_id, from.as_str(), to.as_str()),
        }
        if let Some(tx) = &self.inner.events {
            let _ = tx.send(ev);
        }
    }

    fn is_live(&self, key: &HtlcKey) -> bool {
        self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner()).get(key).is_some_and(|v| !v.is_empty())
    }

    fn register(&self, key: &HtlcKey) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_default().push(tx);
        // A driver waiting for lightningd's replay can go on now.
        self.inner.wake.notify_waiters();
        rx
    }

    fn answer(&self, keys: &[HtlcKey], outcome: &Outcome) {
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

    /// The `htlc_accepted` hook (issue 11 §1). Returns at once for HTLCs that are not an
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
        if let Ok(None) = self.inner.store.order_id_by_payment_hash(&h.payment_hash) {
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
                match rx.await {
                    Ok(outcome) => self.to_answer(outcome, &h),
                    // Unreachable while the engine lives; fail back rather than guess.
                    Err(_) => self.to_answer(Outcome::Fail(Failure::IncorrectOrUnknown), &h),
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

    async fn load(&self, order_id: &str) -> Result<Option<(OrderRecord, Vec<HtlcRecord>)>, String> {
        let id = order_id.to_string();
        self.inner.store.call(move |s| s.order_with_htlcs(&id)).await.map_err(store_err)
    }

    /// Whether the wallet can fund every order in flight, this one included (issue 11 §2).
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
                            if let Some(e) = super::plan::earliest_expiry(&set)
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
            match next_step(&order, &set, seen, self.inner.cfg.deadlines) {
                Step::Done => return Ok(()),
                Step::Refund(reason) => {
                    let detail =
                        json!({ "height": seen.height, "earliest_cltv_expiry": super::plan::earliest_expiry(&set) });
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
    async fn fail(&self, order: &OrderRecord, from: Phase, reason: FailReason, detail: Value) {
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
    async fn try_fail(
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
    /// (issue 11 §3–4). `false` when it could not start (try again later).
    async fn open(&self, order: &OrderRecord, client: PublicKey) -> bool {
        // Never wait for another order's open: this driver must keep checking its own
        // deadlines (try again after a poll).
        let lock = self.client_lock(&order.client_node_id);
        let Ok(_one_open_per_client) = lock.try_lock() else { return false };
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
                // might (issue 11's review: a client stalling the open would get both).
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
    async fn find_channel(&self, order: &OrderRecord, client: PublicKey) -> Result<Found, NodeError> {
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
    /// reach their safety margin, whichever comes first (decision 17).
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
            if let Some(e) = super::plan::earliest_expiry(&set)
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
    /// transaction, then settle (decision 11, N-09). The broadcast happened whatever the
    /// store says: if it cannot record it after a few tries, the HTLCs are settled anyway
    /// (the client has its channel) and the next start reconciles the record.
    async fn complete(&self, order: &OrderRecord, ch: OpenedChannel, refunded_after_open: bool) {
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
            // Decision 16: funded_at + blocks × 10 minutes (N-10).
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
                Err(StoreError::Sql(rusqlite::Error::SqliteFailure(f, _)))
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
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

    /// Reconcile with the node before serving (decision 17, issue 11 §6): orders caught in
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
            let still_held = !held.is_empty() && gone.is_empty();
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

    /// Fail unpaid orders whose payment option expired (decision 13), with any parts held.
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

    /// `lsps1-cancelorder` (issue 11 §7): fail an unpaid or held order. Refused once the
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
