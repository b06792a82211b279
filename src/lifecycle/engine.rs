//! The thin async loop around the pure decisions of [`super::htlc`] and [`super::plan`]:
//! it holds the `htlc_accepted` calls, drives each paid order to its channel or its refund,
//! answers every held HTLC exactly once, and reconciles with the node at start.
//!
//! Invariants (checked by the model test and the end-to-end tests):
//! - an HTLC is settled only after its order's channel is recorded (ruling 11);
//! - an order is opened at most once: the `PaymentHeld` → `Opening` compare-and-set is the
//!   only way to `fundchannel`, and an order found in `Opening` at start is never reopened;
//! - nothing is opened unless every held HTLC has a live hook call to settle (ruling 17);
//! - a held HTLC is failed back before it comes within the safety margin of its expiry.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use tokio::sync::{Notify, oneshot, watch};

use super::htlc::{Failure, HoldRules};
use super::plan::Deadlines;
use crate::clock::Clock;
use crate::lsps1::invoice::payment_hash_of;
use crate::order::{EventSink, FailReason, OrderChanged, Phase};
use crate::ports::{ChannelApi, NodeApi, NodeHtlc, OpenedChannel, WalletApi};
use crate::store::{HtlcKey, HtlcRecord, OrderRecord, Store, StoreError};
use crate::telemetry::Telemetry;

mod chain;
mod drive;
mod hold;
mod lease;
pub use lease::LeasePlan;
mod reconcile;

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
    /// How often to try `connect` to an absent client (ruling 14).
    pub reconnect_every: Duration,
    /// How long an order paid on-chain waits for its client before it is refunded.
    pub onchain_open_deadline: Duration,
    /// On-chain payments (rulings 21–26).
    pub onchain: crate::config::OnchainConfig,
    /// Weight of a funding transaction, as priced (the funding promise sizes a bump on it).
    pub funding_weight: u64,
    /// What happens to a channel whose lease ended.
    pub lease_policy: crate::config::LeasePolicy,
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
            onchain_open_deadline: Duration::from_secs(86_400),
            onchain: crate::config::OnchainConfig::default(),
            funding_weight: 702,
            lease_policy: crate::config::LeasePolicy::Keep,
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
    /// The newest block announced, before its passes ran: what held HTLCs measure their
    /// safety margin against, so a slow store never delays a refund.
    announced: watch::Sender<u32>,
    /// One look at the chain at a time: two would both refund the same outputs (only one
    /// refund could confirm, but the record would be muddled).
    chain_lock: tokio::sync::Mutex<()>,
    /// Woken on `connect` notifications and new blocks.
    wake: Notify,
    events: Option<EventSink>,
    /// The operator's running counts (payment to open, errors), once attached.
    telemetry: std::sync::OnceLock<Arc<Telemetry>>,
    /// One lease pass at a time.
    lease_lock: tokio::sync::Mutex<()>,
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

impl<N: NodeApi + ChannelApi + WalletApi, C: Clock> Engine<N, C> {
    pub fn new(store: Store, node: N, clock: C, cfg: LifecycleConfig, height: u32, events: Option<EventSink>) -> Self {
        let (tx, _rx) = watch::channel(height);
        let (announced, _) = watch::channel(height);
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
                announced,
                chain_lock: tokio::sync::Mutex::new(()),
                wake: Notify::new(),
                events,
                telemetry: std::sync::OnceLock::new(),
                lease_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Count into `t` from now on (payment to open, errors shown to the operator).
    pub fn attach_telemetry(&self, t: Arc<Telemetry>) {
        let _ = self.inner.telemetry.set(t);
    }

    /// The lifecycle's settings.
    pub fn config(&self) -> &LifecycleConfig {
        &self.inner.cfg
    }

    /// Show `message` to the operator among the recent errors.
    pub(crate) fn note_error(&self, message: String) {
        if let Some(t) = self.inner.telemetry.get() {
            t.error(self.inner.clock.now_ms(), message);
        }
    }

    pub fn height(&self) -> u32 {
        *self.inner.height.borrow()
    }

    /// A new block (`block_added`): deadlines are measured against it.
    pub fn set_height(&self, h: u32) {
        self.note_height(h);
        self.inner.wake.notify_waiters();
    }

    /// Take `h` as the tip without waking the drivers (the chain pass of a new block runs
    /// first, so that every confirmation count, an open's own pass included, uses it).
    /// A block was announced (`block_added`): held HTLCs' margins count from it at once.
    pub(crate) fn announce_height(&self, h: u32) {
        self.inner.announced.send_if_modified(|cur| {
            let changed = h > *cur;
            if changed {
                *cur = h;
            }
            changed
        });
    }

    /// The newest block announced (at least [`Engine::height`]).
    pub(crate) fn announced_height(&self) -> u32 {
        (*self.inner.announced.borrow()).max(self.height())
    }

    pub(crate) fn note_height(&self, h: u32) {
        self.announce_height(h);
        self.inner.height.send_if_modified(|cur| {
            let changed = h > *cur;
            if changed {
                *cur = h;
            }
            changed
        });
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
            note: None,
        };
        if let Some(r) = reason
            && !matches!(r, FailReason::PaymentExpired | FailReason::Cancelled)
        {
            self.note_error(format!(
                "Order {}: {} -> {}: {}",
                order.order_id,
                from.as_str(),
                to.as_str(),
                r.describe()
            ));
        }
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
}
