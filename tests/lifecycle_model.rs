//! "model test": an explicit-state model test of the order lifecycle
//! ([`cln_lsps1::lifecycle::Engine`]) against a fake lightningd.
//!
//! proptest generates a small world (1–2 orders in a `Store::open_in_memory()`, one or two
//! client nodes, a wallet, and what `fundchannel` will do for each order) and a sequence of
//! up to 25 operations:
//!
//! - `Part`: an HTLC part for order k arrives (`htlc_accepted` shaped like
//!   `tests/fixtures/cln-v26.06.6/hooks/htlc_accepted.final-hop.json`). Parts belong to
//!   payment attempts of 1, 2 or 3 parts summing to the order total; a part may carry a
//!   wrong `payment_secret`, a wrong `total_msat`, a hash that is no order's, too little
//!   CLTV room; a part after completion and a late payment after expiry happen naturally.
//! - `Connect` / `Disconnect`: the client node connects (the `connect` notification,
//!   `Engine::peer_connected`) or goes away (reachable again through `connect` or not).
//! - `Block`: the height rises (`block_added`: `set_height` then `housekeeping`).
//! - `Cancel`: `lsps1-cancelorder`.
//! - `KillPlugin`: the plugin process dies: its tokio runtime is dropped with every task
//!   (hook calls, drivers, timers). lightningd fails back every HTLC whose `htlc_accepted`
//!   call was pending (it has no invoice for an order's hash: "Unknown invoice"), then a new
//!   plugin process starts on the same store: `reconcile_at_start()`, `resume()`.
//! - `RestartLightningd`: the plugin process dies too, peers disconnect, but lightningd
//!   keeps the pending HTLCs and, once the new process has reconciled and resumed, replays
//!   each one through `htlc_accepted` (same payload, `cltv_expiry_relative` recomputed).
//! - `Wait`: time passes (the engine's clock jumps and real time runs, so timers fire).
//!
//! `fundchannel` (fake, [`Fund`]) does what the world says for that order: succeed; fail
//! with a code (the peer rejected it: nothing broadcast); fail without a code (a timeout: the
//! channel may or may not exist); never return because the plugin is killed / lightningd
//! restarts while it is in flight (with or without the channel created); succeed and then
//! lose the process before lightningd reads the `resolve` answers; or take a while, so that
//! operations (blocks, cancels, crashes, disconnects) land while it is in flight. Like
//! lightningd it reserves the wallet's coins while it runs and refuses an open it cannot
//! afford.
//!
//! Answers are judged as lightningd does: `resolve` settles only if SHA-256 of the key is
//! the HTLC's hash; `fail` refunds; `continue` on an order's hash is failed back by
//! lightningd (unknown invoice).
//!
//! # Invariants (after every operation, after a settle period, and at the end)
//! 1. **PAID without a channel**: no HTLC is ever settled unless its order's `fundchannel`
//!    produced a channel (the fake node has it) and the store shows the order `Completed`
//!    with its channel (not `refunded_after_open`).
//! 2. **Two opens for one order**: `fundchannel` is called at most once per order, across
//!    all restarts.
//! 3. **An HTLC held past its margin**: no HTLC is still pending once
//!    `height + safety_margin_blocks >= cltv_expiry` (the engine gets a settle period to
//!    react). Exempt: a part of an incomplete set younger than [`MPP_BOUND`], which BOLT 4
//!    lets the recipient hold for `mpp_timeout` (blocks come much faster here than the
//!    60 s `mpp_timeout` allows in reality); and the HTLCs of an order whose `fundchannel` is
//!    in flight (nothing can be failed then; that is what `open_allowance_blocks` budgets).
//! 4. **An HTLC neither resolved nor failed after the order ended**: once the store shows an
//!    order `Completed` or `Failed`, every HTLC for its hash is resolved in lightningd after
//!    a settle period.
//! 5. **Malformed answer**: `payment_key` is 64 lowercase hex; `failure_message` is
//!    non-empty hex. A `resolve` with a key that does not hash to the HTLC's hash is a bug too.
//! 6. (addition, BOLT 4 `mpp_timeout`) no part of an incomplete set stays pending longer than
//!    [`MPP_BOUND`] after its latest `htlc_accepted` call.
//!
//! At the end time and blocks run until nothing is pending, then:
//! - every order is terminal or has nothing pending; nothing pending in lightningd;
//! - a channel the fake node opened belongs to an order the store shows `Completed` with that
//!   channel (no channel given away unrecorded);
//! - an order `Completed` and not `refunded_after_open` had its whole payment settled.
//!
//! **Liveness** (checked when it applies): a *clean* attempt — every part well-formed with
//! the CLTV room the hold rule asks for (`safety_margin + open_allowance`, still true when
//! the last part arrives), all delivered to one plugin process, none failed before the last
//! arrived, begun while the order awaited payment with nothing else of it pending — whose
//! last part arrives while the client is connected, the wallet can fund every order, the
//! order's `fundchannel` will succeed and the payment option has not expired, ends
//! `Completed` within the settle period (unless a crash intervenes).
//!
//! # Running
//! `cargo test --test lifecycle_model` (about 45 s in debug when nothing fails; add
//! `-- --nocapture` for the one-line summary). Environment:
//! - `LSPS1_MODEL_CASES=N`: number of cases (default [`DEFAULT_CASES`]);
//! - `LSPS1_MODEL_SEED=S`: the generator's seed (default fixed, so sequences repeat; the
//!   engine runs in real time, so timing is not perfectly deterministic);
//! - `LSPS1_MODEL_ALLOW=replayed-parts,ghost-parts,lost-resolve`: look past
//!   known findings (see [`Allow`]) to explore further; the default looks past
//!   `lost-resolve` only (a documented limit), set it to `none` for a fully strict run.
//!
//! # Findings (minimal sequences, as shrunk by proptest)
//! - `ghost-parts` (fixed since by reconciling unpaid orders' parts at start): `Part` (1 of 2)
//!   → `KillPlugin` → a fresh complete payment: the store still counted the part lightningd
//!   had failed back, so the set "completed" with a part no hook call could settle, and the
//!   order never opened (refunded at its deadline).
//! - `replayed-parts` (fixed since): `Part` (1 of 2) → `RestartLightningd`: the replayed part
//!   got no `mpp_timeout` timer and stayed held until the order expired.
//! - `lost-resolve`: `fundchannel` succeeds, the engine records `Completed`/PAID and answers
//!   `resolve`, the plugin dies before lightningd reads the answer: lightningd fails the HTLC
//!   back, the store still says PAID (the channel was given away, unrecorded).
//! - `room-boundary` (fixed since: an HTLC must leave strictly more than margin + allowance):
//!   one part with exactly `safety_margin + open_allowance` blocks of room was accepted by
//!   the hold rule (`htlc::decide`), then refunded at once by `plan::next_step`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde_json::{Value, json};

use cln_lsps1::clock::Clock;
use cln_lsps1::lifecycle::htlc::HoldRules;
use cln_lsps1::lifecycle::plan::Deadlines;
use cln_lsps1::lifecycle::{Engine, HookAnswer, LifecycleConfig};
use cln_lsps1::lsps1::invoice::payment_hash_of;
use cln_lsps1::order::Phase;
use cln_lsps1::order::Transport;
use cln_lsps1::ports::{
    ChannelApi, FeeEstimates, NodeApi, NodeError, NodeHtlc, OpenRequest, OpenedChannel, PeerChannel, WalletFunds,
};
use cln_lsps1::store::{Bolt11Record, InsertLimits, OrderRecord, Resolution, Store};

// ---------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------

const DEFAULT_CASES: u32 = 150;
const DEFAULT_SEED: u64 = 0x1511_0de1_2026_0011;
const MAX_OPS: usize = 25;

const MARGIN: u32 = 12;
const ALLOWANCE: u32 = 6;
const MIN_DELTA: u32 = MARGIN + ALLOWANCE;
const MPP_TIMEOUT: Duration = Duration::from_millis(60);
const REPLAY_WAIT: Duration = Duration::from_millis(50);
const POLL: Duration = Duration::from_millis(8);
const RECONNECT_EVERY: Duration = Duration::from_millis(15);
/// How often the model's plugin runs `housekeeping` (the plugin: every 30 s and on blocks).
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(30);
/// Engine-clock deadlines; the clock also jumps in `Wait` operations.
const OPEN_DEADLINE_MS: i64 = 10_000;
const PAY_EXPIRY_MS: i64 = 20_000;
const EMERGENCY_SAT: u64 = 25_000;
/// How long a `Fund::Slow` `fundchannel` takes.
const SLOW_FUND: Duration = Duration::from_millis(40);

/// Real time each operation is given before the invariants are looked at.
const SETTLE: Duration = Duration::from_millis(10);
/// How long an invariant that needs the engine to act may take before it counts as broken
/// (only spent when the engine is slow or wrong).
const EVENTUAL: Duration = Duration::from_millis(1500);
/// The longest a part of an incomplete set may stay pending: the engine's timer fires every
/// `mpp_timeout` and fails parts older than `mpp_timeout`, so 2 × plus generous slack.
const MPP_BOUND: Duration = Duration::from_millis(2 * 60 + 400);

const START_HEIGHT: u32 = 1_000;
const T0: i64 = 1_795_506_588_123;

fn lifecycle_config() -> LifecycleConfig {
    LifecycleConfig {
        rules: HoldRules { safety_margin_blocks: MARGIN, open_allowance_blocks: ALLOWANCE },
        // Struct update: any further field (e.g. an open allowance) keeps its default, which
        // matches ALLOWANCE.
        deadlines: Deadlines {
            safety_margin_blocks: MARGIN,
            open_deadline_ms: OPEN_DEADLINE_MS,
            ..LifecycleConfig::default().deadlines
        },
        mpp_timeout: MPP_TIMEOUT,
        emergency_reserve_sat: EMERGENCY_SAT,
        zero_reserve: false,
        replay_wait: REPLAY_WAIT,
        poll: POLL,
        reconnect_every: RECONNECT_EVERY,
        ..LifecycleConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// The generated world and operations
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    WrongSecret,
    WrongTotal,
    /// A hash that is no order's (an ordinary payment through the node).
    ForeignHash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    KillPlugin,
    RestartLightningd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// The next part of order `order`'s current attempt (a new attempt of `split` parts
    /// begins when the last one is used up).
    Part {
        order: usize,
        split: u8,
        fault: Fault,
        delta: u32,
        scid: u8,
    },
    Connect {
        client: usize,
    },
    Disconnect {
        client: usize,
        reachable: bool,
    },
    Block {
        n: u32,
    },
    Cancel {
        order: usize,
    },
    KillPlugin,
    RestartLightningd,
    Wait {
        clock_ms: i64,
        real_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fund {
    Ok,
    /// An error with a code: lightningd's answer, nothing broadcast.
    Rejected,
    /// An error without a code (timeout): the channel may exist.
    Timeout {
        created: bool,
    },
    /// `fundchannel` never answers: the process dies while it is in flight.
    Crash {
        crash: Crash,
        created: bool,
    },
    /// `fundchannel` succeeds, then the process dies after the engine answered the first
    /// `resolve` but before lightningd read it (the answers of the dying process are lost).
    OkThenCrash {
        crash: Crash,
    },
    /// `fundchannel` answers after [`SLOW_FUND`] of real time, so operations land while it is
    /// in flight; when it will succeed, the funding may be broadcast at once (`created_early`,
    /// so a crash meanwhile leaves the channel) or only at the end. `ok: false`: an error with
    /// a code, nothing broadcast.
    Slow {
        ok: bool,
        created_early: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wallet {
    Plenty,
    /// Enough for either order, not both at once.
    OneOrder,
    Empty,
}

#[derive(Debug, Clone)]
struct Case {
    orders: usize,
    same_client: bool,
    wallet: Wallet,
    fund: [Fund; 2],
    connected: [bool; 2],
    reachable: [bool; 2],
    ops: Vec<Op>,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        12 => Just(Fault::None),
        1 => Just(Fault::WrongSecret),
        1 => Just(Fault::WrongTotal),
        1 => Just(Fault::ForeignHash),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0..2usize, 1..=3u8, fault(), prop::sample::select(vec![MIN_DELTA - 1, MIN_DELTA, MIN_DELTA + 1, MIN_DELTA + 6, MIN_DELTA + 12, MIN_DELTA + 22]), 0..2u8)
            .prop_map(|(order, split, fault, delta, scid)| Op::Part { order, split, fault, delta, scid }),
        2 => (0..2usize).prop_map(|client| Op::Connect { client }),
        2 => (0..2usize, any::<bool>()).prop_map(|(client, reachable)| Op::Disconnect { client, reachable }),
        3 => (1..=3u32).prop_map(|n| Op::Block { n }),
        1 => (0..2usize).prop_map(|order| Op::Cancel { order }),
        1 => Just(Op::KillPlugin),
        1 => Just(Op::RestartLightningd),
        3 => (prop::sample::select(vec![0i64, 1_000, 6_000, 12_000]), prop::sample::select(vec![2u64, 30, 150]))
            .prop_map(|(clock_ms, real_ms)| Op::Wait { clock_ms, real_ms }),
    ]
}

fn fund() -> impl Strategy<Value = Fund> {
    let crash = prop_oneof![Just(Crash::KillPlugin), Just(Crash::RestartLightningd)];
    prop_oneof![
        5 => Just(Fund::Ok),
        1 => Just(Fund::Rejected),
        2 => any::<bool>().prop_map(|created| Fund::Timeout { created }),
        2 => (crash.clone(), any::<bool>()).prop_map(|(crash, created)| Fund::Crash { crash, created }),
        1 => crash.prop_map(|crash| Fund::OkThenCrash { crash }),
        2 => (any::<bool>(), any::<bool>()).prop_map(|(ok, created_early)| Fund::Slow { ok, created_early }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let wallet = prop_oneof![4 => Just(Wallet::Plenty), 1 => Just(Wallet::OneOrder), 1 => Just(Wallet::Empty)];
    (
        1..=2usize,
        any::<bool>(),
        wallet,
        (fund(), fund()),
        [prop::bool::weighted(0.7), prop::bool::weighted(0.7)],
        [prop::bool::weighted(0.7), prop::bool::weighted(0.7)],
        prop::collection::vec(op(), 1..=MAX_OPS),
    )
        .prop_map(|(orders, same_client, wallet, (f0, f1), connected, reachable, ops)| Case {
            orders,
            same_client,
            wallet,
            fund: [f0, f1],
            connected,
            reachable,
            ops,
        })
}

// ---------------------------------------------------------------------------------------
// The clock: real elapsed time plus jumps, so BOLT 4 timers (tokio time) and clock
// deadlines agree, and `Wait` can jump past order deadlines.
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
struct ModelClock {
    start: Instant,
    skew: Arc<AtomicI64>,
}

impl Clock for ModelClock {
    fn now_ms(&self) -> i64 {
        T0 + i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX / 2) + self.skew.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------
// The fake lightningd (outlives plugin processes)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HState {
    Pending,
    Settled,
    Failed,
}

#[derive(Debug, Clone)]
struct LnHtlc {
    /// `None`: not an order's hash.
    order: Option<usize>,
    scid: String,
    id: u64,
    hash: String,
    secret: String,
    total_msat: u64,
    amount_msat: u64,
    cltv_expiry: u32,
    state: HState,
    /// The plugin process generation whose `htlc_accepted` call is pending.
    call_gen: Option<u64>,
    call_started: Instant,
    replayed: bool,
}

#[derive(Debug, Clone)]
struct FakeChannel {
    order: usize,
    peer: PublicKey,
    capacity_sat: u64,
    push_msat: u64,
    txid: String,
    channel_id: String,
}

#[derive(Debug, Clone)]
struct OrderInfo {
    id: String,
    client: usize,
    capacity_sat: u64,
    total_msat: u64,
    hash: String,
    secret: String,
    expires_at_ms: i64,
}

struct Ln {
    height: u32,
    htlcs: Vec<LnHtlc>,
    connected: [bool; 2],
    reachable: [bool; 2],
    wallet_sat: u64,
    channels: Vec<FakeChannel>,
    fund_calls: [u32; 2],
    fund: [Fund; 2],
    /// A crash `fundchannel` asked for; the harness performs it.
    crash: Option<Crash>,
    /// `Fund::OkThenCrash`: crash when the engine answers `resolve` for this order.
    crash_on_resolve: Option<(usize, Crash)>,
    /// The process whose answers no longer reach lightningd (it is dying).
    dying: Option<u64>,
    /// A `Fund::Slow` call is in flight for the order.
    fund_in_flight: [bool; 2],
    /// Violations seen when an answer arrived (invariant 5, wrong keys, unknown opens).
    hard: Vec<String>,
    settled: Vec<usize>,
    trace: Vec<String>,
    orders: Vec<OrderInfo>,
    clients: Vec<PublicKey>,
    next_id: HashMap<String, u64>,
    epoch: Instant,
}

impl Ln {
    fn t(&mut self, s: String) {
        let ms = self.epoch.elapsed().as_millis();
        self.trace.push(format!("{ms:>6}ms h={} {s}", self.height));
    }

    fn client_of(&self, peer: &PublicKey) -> Option<usize> {
        self.clients.iter().position(|c| c == peer)
    }

    /// lightningd applies a hook answer (`htlc_accepted_hook_deserialize`).
    fn apply_answer(&mut self, idx: usize, generation: u64, a: HookAnswer) {
        let h = self.htlcs[idx].clone();
        if self.dying == Some(generation) {
            self.t(format!("answer for htlc #{idx} lost: the process is dying ({a:?})"));
            return;
        }
        if let (Some((k, crash)), HookAnswer::Resolve { .. }) = (self.crash_on_resolve, &a)
            && h.order == Some(k)
        {
            self.crash_on_resolve = None;
            self.crash = Some(crash);
            self.dying = Some(generation);
            self.t(format!("{crash:?} requested: the resolve for htlc #{idx} never reaches lightningd"));
            return;
        }
        if h.state != HState::Pending || h.call_gen != Some(generation) {
            self.t(format!("stale answer for htlc #{idx} ignored: {a:?}"));
            return;
        }
        let state = match &a {
            HookAnswer::Continue => HState::Failed, // no invoice for an order's hash: failed back
            HookAnswer::Resolve { payment_key } => {
                let well_formed =
                    payment_key.len() == 64 && payment_key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                if !well_formed {
                    self.hard.push(format!("invariant 5: malformed payment_key {payment_key:?} for htlc #{idx}"));
                }
                let matches = hex::decode(payment_key)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .is_some_and(|k| hex::encode(payment_hash_of(&k)) == h.hash);
                if matches {
                    HState::Settled
                } else {
                    self.hard.push(format!("invariant 5: resolve with a key that does not hash to htlc #{idx}'s hash"));
                    HState::Failed
                }
            }
            HookAnswer::Fail { failure_message } => {
                let ok = !failure_message.is_empty()
                    && failure_message.len() % 2 == 0
                    && failure_message.bytes().all(|b| b.is_ascii_hexdigit());
                if !ok {
                    self.hard
                        .push(format!("invariant 5: malformed failure_message {failure_message:?} for htlc #{idx}"));
                }
                HState::Failed
            }
        };
        let e = &mut self.htlcs[idx];
        e.state = state;
        e.call_gen = None;
        if state == HState::Settled {
            self.settled.push(idx);
        }
        let what = match &a {
            HookAnswer::Continue => "continue (lightningd fails it)".to_string(),
            HookAnswer::Resolve { .. } => format!("resolve -> {state:?}"),
            HookAnswer::Fail { failure_message } => {
                format!("fail {}", &failure_message[..failure_message.len().min(4)])
            }
        };
        self.t(format!("answer htlc #{idx} (order {:?}): {what}", h.order));
    }

    fn create_channel(&mut self, k: usize, req: &OpenRequest) {
        let n = self.channels.len();
        let txid = hex::encode(payment_hash_of(&[0xa0 + k as u8 + 2 * n as u8; 32]));
        let channel_id = hex::encode(payment_hash_of(&[0xc0 + k as u8 + 2 * n as u8; 32]));
        self.channels.push(FakeChannel {
            order: k,
            peer: req.peer,
            capacity_sat: req.amount_sat,
            push_msat: req.push_msat,
            txid,
            channel_id,
        });
    }
}

/// A `Fund::Slow` call in flight; dropped unfinished when its process dies.
struct SlowOpen {
    node: FakeNode,
    order: usize,
    amount_sat: u64,
    done: bool,
}

impl Drop for SlowOpen {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut ln = self.node.ln();
        ln.fund_in_flight[self.order] = false;
        if !ln.channels.iter().any(|c| c.order == self.order) {
            ln.wallet_sat += self.amount_sat;
        }
        let k = self.order;
        ln.t(format!("slow fundchannel for order {k} abandoned (process died)"));
    }
}

/// The node as the engine sees it, backed by the fake lightningd.
#[derive(Clone)]
struct FakeNode(Arc<Mutex<Ln>>);

impl FakeNode {
    fn ln(&self) -> MutexGuard<'_, Ln> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl cln_lsps1::ports::WalletApi for FakeNode {}

impl NodeApi for FakeNode {
    async fn send_custom_message(&self, _peer: PublicKey, _msg_hex: String) -> Result<(), NodeError> {
        Ok(())
    }
    async fn sign_invoice(&self, invoice: String) -> Result<String, NodeError> {
        Ok(invoice)
    }
    async fn peer_features(&self, _peer: PublicKey) -> Result<Option<String>, NodeError> {
        Ok(None)
    }
    async fn fee_estimates(&self) -> Result<FeeEstimates, NodeError> {
        Ok(FeeEstimates::default())
    }
    async fn wallet_funds(&self) -> Result<WalletFunds, NodeError> {
        Ok(WalletFunds { confirmed_sat: self.ln().wallet_sat })
    }
}

impl ChannelApi for FakeNode {
    async fn fund_channel(&self, req: OpenRequest) -> Result<OpenedChannel, NodeError> {
        let hang = {
            let mut ln = self.ln();
            let Some(k) =
                ln.orders.iter().position(|o| o.capacity_sat == req.amount_sat && ln.clients[o.client] == req.peer)
            else {
                ln.hard.push(format!("fundchannel for no order: {req:?}"));
                return Err(NodeError::new("fundchannel", Some(-1), "unknown peer"));
            };
            ln.fund_calls[k] += 1;
            let n = ln.fund_calls[k];
            let plan = ln.fund[k];
            ln.t(format!("fundchannel #{n} for order {k}: {plan:?}"));
            if n > 1 {
                // Invariant 2 is checked by the harness; a second open is refused.
                return Err(NodeError::new("fundchannel", Some(-1), "second open refused by the model"));
            }
            // lightningd reserves the coins for the open (listfunds no longer shows them) and
            // gives them back if nothing is broadcast.
            if ln.wallet_sat < req.amount_sat + EMERGENCY_SAT {
                ln.t(format!("fundchannel for order {k}: cannot afford"));
                return Err(NodeError::new("fundchannel", Some(301), "Could not afford (model)"));
            }
            ln.wallet_sat -= req.amount_sat;
            let release = |ln: &mut Ln| ln.wallet_sat += req.amount_sat;
            match plan {
                Fund::Ok | Fund::OkThenCrash { .. } => {
                    if let Fund::OkThenCrash { crash } = plan {
                        ln.crash_on_resolve = Some((k, crash));
                    }
                    ln.create_channel(k, &req);
                    let c = ln.channels.last().expect("just created").clone();
                    return Ok(OpenedChannel { txid: c.txid, outnum: 0, channel_id: Some(c.channel_id) });
                }
                Fund::Rejected => {
                    release(&mut ln);
                    return Err(NodeError::new("fundchannel", Some(-1), "peer rejected the open (model)"));
                }
                Fund::Timeout { created } => {
                    if created {
                        ln.create_channel(k, &req);
                    } else {
                        release(&mut ln);
                    }
                    return Err(NodeError::new("fundchannel", None, "timed out (model)"));
                }
                Fund::Slow { ok, created_early } => {
                    // An error with a code means nothing was broadcast.
                    if ok && created_early {
                        ln.create_channel(k, &req);
                    }
                    ln.fund_in_flight[k] = true;
                    false
                }
                Fund::Crash { crash, created } => {
                    if created {
                        ln.create_channel(k, &req);
                    } else {
                        release(&mut ln);
                    }
                    ln.crash = Some(crash);
                    true
                }
            }
        };
        if hang {
            std::future::pending::<()>().await;
        }
        let k = self.ln().orders.iter().position(|o| o.capacity_sat == req.amount_sat).expect("found above");
        // If the process dies meanwhile, nothing more is broadcast and unused coins go back.
        let mut guard = SlowOpen { node: self.clone(), order: k, amount_sat: req.amount_sat, done: false };
        tokio::time::sleep(SLOW_FUND).await;
        guard.done = true;
        let mut ln = self.ln();
        ln.fund_in_flight[k] = false;
        let Fund::Slow { ok, created_early } = ln.fund[k] else { unreachable!() };
        ln.t(format!("slow fundchannel for order {k} answers: ok {ok}"));
        if !ok {
            ln.wallet_sat += req.amount_sat;
            return Err(NodeError::new("fundchannel", Some(-1), "peer rejected the open (model, slow)"));
        }
        if !created_early {
            ln.create_channel(k, &req);
        }
        let c = ln.channels.iter().rev().find(|c| c.order == k).expect("created").clone();
        Ok(OpenedChannel { txid: c.txid, outnum: 0, channel_id: Some(c.channel_id) })
    }

    async fn connect(&self, peer: PublicKey) -> Result<(), NodeError> {
        let mut ln = self.ln();
        let Some(c) = ln.client_of(&peer) else { return Err(NodeError::new("connect", Some(401), "unknown peer")) };
        if ln.reachable[c] {
            ln.connected[c] = true;
            ln.t(format!("connect to client {c}: ok"));
            Ok(())
        } else {
            ln.t(format!("connect to client {c}: refused"));
            Err(NodeError::new("connect", Some(401), "Connection establishment: Connection refused"))
        }
    }

    async fn peer_connected(&self, peer: PublicKey) -> Result<bool, NodeError> {
        let ln = self.ln();
        Ok(ln.client_of(&peer).is_some_and(|c| ln.connected[c]))
    }

    async fn peer_channels(&self, peer: PublicKey) -> Result<Vec<PeerChannel>, NodeError> {
        let ln = self.ln();
        Ok(ln
            .channels
            .iter()
            .filter(|c| c.peer == peer)
            .map(|c| PeerChannel {
                channel_id: Some(c.channel_id.clone()),
                funding_txid: Some(c.txid.clone()),
                funding_outnum: Some(0),
                opener_local: true,
                local_funds_msat: c.capacity_sat * 1000,
                pushed_msat: c.push_msat,
                state: "CHANNELD_AWAITING_LOCKIN".into(),
                short_channel_id: None,
            })
            .collect())
    }

    async fn list_htlcs(&self) -> Result<Vec<NodeHtlc>, NodeError> {
        let ln = self.ln();
        Ok(ln
            .htlcs
            .iter()
            .map(|h| NodeHtlc {
                short_channel_id: h.scid.clone(),
                id: h.id,
                payment_hash: h.hash.clone(),
                incoming: true,
                state: if h.state == HState::Pending {
                    "RCVD_ADD_ACK_REVOCATION"
                } else {
                    "SENT_REMOVE_ACK_REVOCATION"
                }
                .into(),
            })
            .collect())
    }

    async fn block_height(&self) -> Result<u32, NodeError> {
        Ok(self.ln().height)
    }
}

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

/// A plugin process: its own runtime, so killing it drops every task it spawned.
struct Proc {
    engine: Engine<FakeNode, ModelClock>,
    rt: tokio::runtime::Runtime,
}

#[derive(Debug, Clone)]
struct Attempt {
    parts: Vec<u64>,
    sent: Vec<usize>,
    generation: u64,
    /// Every part so far well-formed with room, begun with nothing else pending.
    clean: bool,
}

#[derive(Debug, Default, Clone)]
struct Stats {
    /// Failed orders by recorded reason.
    reasons: std::collections::BTreeMap<String, u64>,
    ops: u64,
    completed: u64,
    failed: u64,
    unpaid: u64,
    settled_htlcs: u64,
    gifts: u64,
    crashes: u64,
    liveness_checked: u64,
}

struct World {
    case: Case,
    ln: Arc<Mutex<Ln>>,
    store: Store,
    clock: ModelClock,
    proc: Option<Proc>,
    generation: u64,
    attempts: Vec<Option<Attempt>>,
    cancelled: [bool; 2],
    template: Value,
    allow: Allow,
    stats: Stats,
    foreign: u8,
}

fn key(n: u8) -> PublicKey {
    PublicKey::from_secret_key(&Secp256k1::new(), &SecretKey::from_slice(&[n; 32]).expect("valid key"))
}

fn template() -> Value {
    let v: Value = serde_json::from_str(include_str!("fixtures/cln-v26.06.6/hooks/htlc_accepted.final-hop.json"))
        .expect("fixture");
    v["params"].clone()
}

/// The `htlc_accepted` params for `h` at `height`, from the recorded final-hop call.
fn payload(template: &Value, h: &LnHtlc, height: u32) -> Value {
    let mut p = template.clone();
    let o = &mut p["onion"];
    o["forward_msat"] = json!(h.amount_msat);
    o["outgoing_cltv_value"] = json!(h.cltv_expiry);
    o["total_msat"] = json!(h.total_msat);
    o["payment_secret"] = json!(h.secret);
    let x = &mut p["htlc"];
    x["short_channel_id"] = json!(h.scid);
    x["id"] = json!(h.id);
    x["amount_msat"] = json!(h.amount_msat);
    x["cltv_expiry"] = json!(h.cltv_expiry);
    x["cltv_expiry_relative"] = json!(i64::from(h.cltv_expiry) - i64::from(height));
    x["payment_hash"] = json!(h.hash);
    p
}

impl World {
    fn new(case: Case, allow: Allow) -> Result<World, String> {
        let clock = ModelClock { start: Instant::now(), skew: Arc::new(AtomicI64::new(0)) };
        let now = clock.now_ms();
        let store = match ON_POSTGRES.with(|p| p.get()) {
            false => Store::open_in_memory().map_err(|e| e.to_string())?,
            true => {
                let url = pg::fresh_database()?;
                Store::open_postgres(&url, None).map_err(|e| e.to_string())?
            }
        };
        let clients = vec![key(0x21), key(0x22)];
        let mut infos = vec![];
        let mut max_reserved = 0;
        for k in 0..case.orders {
            let client = if case.same_client { 0 } else { k };
            let lsp = 1_000_000 + 500_000 * k as u64;
            let client_balance = if k == 1 { 50_000 } else { 0 };
            let fee = 20_000 + 1_000 * k as u64;
            let total_sat = fee + client_balance;
            let preimage = [0x11 + k as u8; 32];
            let hash = hex::encode(payment_hash_of(&preimage));
            let secret = hex::encode([0x31 + k as u8; 32]);
            let reserved = lsp + client_balance + 10_000;
            max_reserved = max_reserved.max(reserved);
            let rec = OrderRecord {
                order_id: format!("model-order-{k}"),
                created_at_ms: now,
                updated_at_ms: now,
                client_node_id: clients[client].to_string(),
                transport: Transport::P2p,
                lsp_balance_sat: lsp,
                client_balance_sat: client_balance,
                required_channel_confirmations: 0,
                funding_confirms_within_blocks: 6,
                channel_expiry_blocks: 13_140,
                token: Some(String::new()),
                held_at_ms: None,
                refunded_after_open: false,
                refund_onchain_address: None,
                announce_channel: false,
                client_info: None,
                phase: Phase::AwaitingPayment,
                failure_reason: None,
                fee_total_sat: fee,
                order_total_sat: total_sat,
                funding_feerate_perkw: 11_000,
                reserved_sat: reserved,
                expires_at_ms: now + PAY_EXPIRY_MS,
                paid_method: None,
                bolt11: Some(Bolt11Record {
                    invoice: format!("lnbcrt-model-{k}"),
                    payment_hash: hash.clone(),
                    preimage: hex::encode(preimage),
                    payment_secret: secret.clone(),
                    expires_at_ms: now + PAY_EXPIRY_MS,
                    min_final_cltv: MIN_DELTA as u16,
                    fee_total_sat: fee,
                    order_total_sat: total_sat,
                }),
                channel: None,
                onchain: None,
                reorg_flagged: false,
                node_id: None,
                client_ip: None,
            };
            store
                .insert_order(
                    &rec,
                    InsertLimits {
                        fundable_sat: u64::MAX / 4,
                        max_unpaid_per_client: 100,
                        max_unpaid_per_ip: 100,
                        now_ms: now,
                    },
                )
                .map_err(|e| format!("insert_order: {e}"))?;
            infos.push(OrderInfo {
                id: rec.order_id.clone(),
                client,
                capacity_sat: lsp + client_balance,
                total_msat: total_sat * 1000,
                hash,
                secret,
                expires_at_ms: now + PAY_EXPIRY_MS,
            });
        }
        let wallet_sat = match case.wallet {
            Wallet::Plenty => 1_000_000_000,
            Wallet::OneOrder => EMERGENCY_SAT + max_reserved + 1,
            Wallet::Empty => 0,
        };
        let ln = Ln {
            height: START_HEIGHT,
            htlcs: vec![],
            connected: case.connected,
            reachable: case.reachable,
            wallet_sat,
            channels: vec![],
            fund_calls: [0; 2],
            fund: case.fund,
            crash: None,
            crash_on_resolve: None,
            dying: None,
            fund_in_flight: [false; 2],
            hard: vec![],
            settled: vec![],
            trace: vec![],
            orders: infos,
            clients,
            next_id: HashMap::new(),
            epoch: Instant::now(),
        };
        let mut w = World {
            attempts: vec![None, None],
            case,
            ln: Arc::new(Mutex::new(ln)),
            store,
            clock,
            proc: None,
            generation: 0,
            cancelled: [false; 2],
            template: template(),
            allow,
            stats: Stats::default(),
            foreign: 0,
        };
        w.start_process()?;
        Ok(w)
    }

    fn ln(&self) -> MutexGuard<'_, Ln> {
        self.ln.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn trace(&self, s: String) {
        self.ln().t(s);
    }

    fn proc(&self) -> &Proc {
        self.proc.as_ref().expect("a plugin process runs between operations")
    }

    fn order(&self, k: usize) -> OrderRecord {
        let id = self.ln().orders[k].id.clone();
        self.store.get_order(&id).expect("store").expect("order exists")
    }

    fn phases(&self) -> Vec<Phase> {
        (0..self.case.orders).map(|k| self.order(k).phase).collect()
    }

    // --- processes -----------------------------------------------------------------------

    fn start_process(&mut self) -> Result<(), String> {
        self.generation += 1;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let height = self.ln().height;
        let engine = Engine::new(
            self.store.clone(),
            FakeNode(self.ln.clone()),
            self.clock.clone(),
            lifecycle_config(),
            height,
            None,
        );
        self.trace(format!("plugin process {} starts: reconcile_at_start, resume", self.generation));
        let res = rt.block_on(async {
            let r = engine.reconcile_at_start().await;
            if r.is_ok() {
                engine.resume().await;
            }
            r
        });
        if let Err(e) = res {
            return Err(format!("reconcile_at_start failed (the plugin would disable itself): {e}"));
        }
        let hk = engine.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                hk.housekeeping().await;
            }
        });
        self.proc = Some(Proc { engine, rt });
        Ok(())
    }

    fn crash(&mut self, kind: Crash) -> Result<(), String> {
        self.stats.crashes += 1;
        let old_generation = self.generation;
        if let Some(p) = self.proc.take() {
            drop(p.engine);
            drop(p.rt); // every task of the process is dropped: hook calls, drivers, timers
        }
        let replay: Vec<usize> = {
            let mut ln = self.ln();
            ln.t(format!("{kind:?} (process {old_generation} dies)"));
            let mut replay = vec![];
            for i in 0..ln.htlcs.len() {
                if ln.htlcs[i].state != HState::Pending {
                    continue;
                }
                match kind {
                    Crash::KillPlugin => {
                        if ln.htlcs[i].call_gen != Some(old_generation) {
                            ln.hard.push(format!("model: pending htlc #{i} had no hook call in the dying process"));
                        }
                        // lightningd: the dead plugin's pending hook call counts as `continue`,
                        // and it has no invoice for the hash: failed back.
                        ln.htlcs[i].state = HState::Failed;
                        ln.htlcs[i].call_gen = None;
                        ln.t(format!("lightningd fails htlc #{i} back (plugin died)"));
                    }
                    Crash::RestartLightningd => {
                        ln.htlcs[i].call_gen = None;
                        ln.htlcs[i].replayed = true;
                        replay.push(i);
                    }
                }
            }
            ln.fund_in_flight = [false; 2]; // the dead process's `fundchannel` call is gone
            if kind == Crash::RestartLightningd {
                ln.connected = [false; 2];
            }
            replay
        };
        self.start_process()?;
        for i in replay {
            self.trace(format!("lightningd replays htlc #{i}"));
            self.deliver(i);
        }
        Ok(())
    }

    fn handle_crash_requests(&mut self) -> Result<(), String> {
        loop {
            let c = self.ln().crash.take();
            match c {
                Some(c) => self.crash(c)?,
                None => return Ok(()),
            }
        }
    }

    /// Let the plugin process run for `d` of real time.
    fn run_for(&mut self, d: Duration) -> Result<(), String> {
        let end = Instant::now() + d;
        loop {
            self.handle_crash_requests()?;
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            let slice = (end - now).min(Duration::from_millis(2));
            self.proc().rt.block_on(async { tokio::time::sleep(slice).await });
        }
    }

    fn wait_until(&mut self, bound: Duration, mut pred: impl FnMut(&World) -> bool) -> Result<bool, String> {
        let start = Instant::now();
        loop {
            if pred(self) {
                return Ok(true);
            }
            if start.elapsed() >= bound {
                return Ok(false);
            }
            self.run_for(Duration::from_millis(2))?;
        }
    }

    /// Hand HTLC `idx` to the running plugin (`htlc_accepted`).
    fn deliver(&mut self, idx: usize) {
        let generation = self.generation;
        let p = {
            let mut ln = self.ln();
            let height = ln.height;
            let h = &mut ln.htlcs[idx];
            h.call_gen = Some(generation);
            h.call_started = Instant::now();
            payload(&self.template, h, height)
        };
        let engine = self.proc().engine.clone();
        let ln = self.ln.clone();
        self.proc().rt.spawn(async move {
            let a = engine.on_htlc(&p).await;
            ln.lock().unwrap_or_else(|e| e.into_inner()).apply_answer(idx, generation, a);
        });
    }

    // --- operations ----------------------------------------------------------------------

    fn apply(&mut self, op: Op) -> Result<(), String> {
        self.stats.ops += 1;
        self.trace(format!("OP {op:?}"));
        let n = self.case.orders;
        match op {
            Op::Part { order, split, fault, delta, scid } => self.part(order % n, split, fault, delta, scid)?,
            Op::Connect { client } => {
                let c = self.client_index(client);
                let pk = {
                    let mut ln = self.ln();
                    ln.connected[c] = true;
                    ln.reachable[c] = true;
                    ln.clients[c]
                };
                self.proc().engine.peer_connected(pk);
            }
            Op::Disconnect { client, reachable } => {
                let c = self.client_index(client);
                let mut ln = self.ln();
                ln.connected[c] = false;
                ln.reachable[c] = reachable;
            }
            Op::Block { n } => self.block(n),
            Op::Cancel { order } => {
                let k = order % n;
                let id = self.ln().orders[k].id.clone();
                let p = self.proc();
                let r = p.rt.block_on(p.engine.cancel(&id));
                if r.is_ok() {
                    self.cancelled[k] = true;
                }
                self.trace(format!("cancel order {k}: {r:?}"));
            }
            Op::KillPlugin => self.crash(Crash::KillPlugin)?,
            Op::RestartLightningd => self.crash(Crash::RestartLightningd)?,
            Op::Wait { clock_ms, real_ms } => {
                self.clock.skew.fetch_add(clock_ms, Ordering::SeqCst);
                self.run_for(Duration::from_millis(real_ms))?;
            }
        }
        self.check()
    }

    fn client_index(&self, c: usize) -> usize {
        if self.case.same_client || self.case.orders == 1 { 0 } else { c % 2 }
    }

    fn block(&mut self, n: u32) {
        let h = {
            let mut ln = self.ln();
            ln.height += n;
            ln.height
        };
        let p = self.proc();
        p.engine.set_height(h);
        p.rt.block_on(p.engine.housekeeping());
    }

    fn part(&mut self, k: usize, split: u8, fault: Fault, delta: u32, scid: u8) -> Result<(), String> {
        let (info, height) = {
            let ln = self.ln();
            (ln.orders[k].clone(), ln.height)
        };
        let phase_before = self.order(k).phase;
        let exhausted = self.attempts[k].as_ref().is_none_or(|a| a.sent.len() >= a.parts.len());
        if exhausted {
            let n = u64::from(split.clamp(1, 3));
            let base = info.total_msat / n;
            let mut parts = vec![base; n as usize];
            parts[n as usize - 1] = info.total_msat - base * (n - 1);
            let nothing_pending = !self.ln().htlcs.iter().any(|h| h.order == Some(k) && h.state == HState::Pending);
            // Parts the store still counts as held that lightningd no longer has (see
            // `Allow::ghost_parts`).
            let ghosts = {
                let set = self.store.order_with_htlcs(&info.id).expect("store").expect("order").1;
                let ln = self.ln();
                set.iter().filter(|r| r.resolution.is_none()).any(|r| {
                    !ln.htlcs
                        .iter()
                        .any(|h| h.scid == r.key.short_channel_id && h.id == r.key.id && h.state == HState::Pending)
                })
            };
            let nothing_pending = nothing_pending && !(self.allow.ghost_parts && ghosts);
            self.attempts[k] = Some(Attempt {
                parts,
                sent: vec![],
                generation: self.generation,
                clean: nothing_pending && phase_before == Phase::AwaitingPayment,
            });
        }
        let att = self.attempts[k].clone().expect("an attempt");
        let amount = att.parts[att.sent.len()];
        let last = att.sent.len() + 1 == att.parts.len();
        // Before the last part: were the earlier ones all still pending?
        let earlier_pending = {
            let ln = self.ln();
            att.sent.iter().all(|&i| ln.htlcs[i].state == HState::Pending)
        };
        let (hash, secret, total, order) = match fault {
            Fault::None => (info.hash.clone(), info.secret.clone(), info.total_msat, Some(k)),
            Fault::WrongSecret => (info.hash.clone(), "ee".repeat(32), info.total_msat, Some(k)),
            Fault::WrongTotal => (info.hash.clone(), info.secret.clone(), info.total_msat - 1_000, Some(k)),
            Fault::ForeignHash => {
                self.foreign += 1;
                (hex::encode(payment_hash_of(&[0xf0 ^ self.foreign; 32])), info.secret.clone(), amount, None)
            }
        };
        let scid = ["103x1x0", "205x2x1"][usize::from(scid % 2)].to_string();
        let cltv_expiry = height + delta;
        let idx = {
            let mut ln = self.ln();
            let id = {
                let n = ln.next_id.entry(scid.clone()).or_insert(0);
                *n += 1;
                *n - 1
            };
            ln.htlcs.push(LnHtlc {
                order,
                scid,
                id,
                hash,
                secret,
                total_msat: total,
                amount_msat: amount,
                cltv_expiry,
                state: HState::Pending,
                call_gen: None,
                call_started: Instant::now(),
                replayed: false,
            });
            let idx = ln.htlcs.len() - 1;
            ln.t(format!("htlc #{idx}: {amount} msat of {total} for {order:?}, cltv {cltv_expiry}, {fault:?}"));
            idx
        };
        let clean = att.clean
            && fault == Fault::None
            && delta >= MIN_DELTA
            && att.generation == self.generation
            && earlier_pending
            && !self.cancelled[k];
        {
            let a = self.attempts[k].as_mut().expect("an attempt");
            a.sent.push(idx);
            a.clean = clean;
        }
        let generation = self.generation;
        self.deliver(idx);
        if !last || !clean {
            return Ok(());
        }
        // Liveness: a clean attempt just completed.
        let (connected, min_cltv) = {
            let ln = self.ln();
            let min_cltv = att.sent.iter().chain([&idx]).map(|&i| ln.htlcs[i].cltv_expiry).min().unwrap_or(0);
            (ln.connected[info.client], min_cltv)
        };
        let eligible = connected
            && self.case.fund[k] == Fund::Ok
            && self.case.wallet == Wallet::Plenty
            // The hold rule's own room test, applied now: the earliest part still leaves
            // strictly more than margin + allowance.
            && height + MIN_DELTA < min_cltv
            && self.clock.now_ms() + 1_000 < info.expires_at_ms;
        if !eligible {
            return Ok(());
        }
        self.stats.liveness_checked += 1;
        self.run_for(SETTLE)?;
        let done = self.wait_until(EVENTUAL, |w| w.order(k).phase == Phase::Completed)?;
        if !done && self.generation == generation {
            let o = self.order(k);
            return Err(format!(
                "liveness: order {k}: a clean payment completed while the client was connected, the wallet funded and \
                 fundchannel would succeed, but the order is {:?} ({:?})",
                o.phase, o.failure_reason
            ));
        }
        Ok(())
    }

    // --- invariants ----------------------------------------------------------------------

    fn hard_violations(&self) -> Vec<String> {
        let phases: Vec<OrderRecord> = (0..self.case.orders).map(|k| self.order(k)).collect();
        let ln = self.ln();
        let mut v = ln.hard.clone();
        for k in 0..self.case.orders {
            if ln.fund_calls[k] > 1 {
                v.push(format!("invariant 2: fundchannel called {} times for order {k}", ln.fund_calls[k]));
            }
        }
        for &i in &ln.settled {
            let Some(k) = ln.htlcs[i].order else {
                v.push(format!("invariant 1: htlc #{i} (no order's) settled"));
                continue;
            };
            let o = &phases[k];
            let has_channel = ln.channels.iter().any(|c| c.order == k);
            if !has_channel || o.phase != Phase::Completed || o.channel.is_none() || o.refunded_after_open {
                v.push(format!(
                    "invariant 1: htlc #{i} of order {k} settled, but channel in node: {has_channel}, store: {:?} \
                     channel {:?} refunded_after_open {}",
                    o.phase,
                    o.channel.as_ref().map(|c| &c.funding_txid),
                    o.refunded_after_open
                ));
            }
        }
        v
    }

    fn soft_violations(&self) -> Vec<String> {
        let phases = self.phases();
        let ln = self.ln();
        let mut v = vec![];
        for (i, h) in ln.htlcs.iter().enumerate() {
            if h.state != HState::Pending {
                continue;
            }
            let age = h.call_started.elapsed();
            let incomplete = h.order.is_some_and(|k| phases[k] == Phase::AwaitingPayment);
            let allowed = self.allow.replayed_parts && incomplete && h.replayed;
            // While `fundchannel` is in flight nothing can be failed (the open allowance).
            let opening = h.order.is_some_and(|k| phases[k] == Phase::Opening && ln.fund_in_flight[k]);
            let exempt = (incomplete && age < MPP_BOUND) || allowed || opening;
            if ln.height + MARGIN >= h.cltv_expiry && !exempt {
                v.push(format!(
                    "invariant 3: htlc #{i} (order {:?}, store {:?}) still pending at height {} with cltv_expiry {} \
                     (margin {MARGIN})",
                    h.order,
                    h.order.map(|k| phases[k]),
                    ln.height,
                    h.cltv_expiry
                ));
            }
            if incomplete && age > MPP_BOUND && !allowed {
                v.push(format!(
                    "invariant 6: htlc #{i}, a part of an incomplete set of order {:?}{}, pending {} ms after its \
                     htlc_accepted call (mpp_timeout {} ms)",
                    h.order,
                    if h.replayed { " replayed after a lightningd restart" } else { "" },
                    age.as_millis(),
                    MPP_TIMEOUT.as_millis()
                ));
            }
            if let Some(k) = h.order
                && matches!(phases[k], Phase::Completed | Phase::Failed)
            {
                v.push(format!("invariant 4: htlc #{i} still pending although order {k} is {:?}", phases[k]));
            }
        }
        v
    }

    fn check(&mut self) -> Result<(), String> {
        self.run_for(SETTLE)?;
        let hard = self.hard_violations();
        if !hard.is_empty() {
            return Err(hard.join("\n"));
        }
        if !self.wait_until(EVENTUAL, |w| w.soft_violations().is_empty())? {
            return Err(self.soft_violations().join("\n"));
        }
        let hard = self.hard_violations();
        if !hard.is_empty() {
            return Err(hard.join("\n"));
        }
        Ok(())
    }

    fn quiet(&self) -> bool {
        let phases = self.phases();
        !phases.iter().any(|p| matches!(p, Phase::PaymentHeld | Phase::Opening))
            && !self.ln().htlcs.iter().any(|h| h.state == HState::Pending)
    }

    /// Let time and blocks run until nothing is pending, then the end invariants.
    fn finish(&mut self) -> Result<(), String> {
        self.trace("FINISH: time and blocks run".into());
        // Parts of incomplete sets first get real time for their mpp_timeout (invariant 6).
        let incomplete = |w: &World| {
            let phases = w.phases();
            !w.ln()
                .htlcs
                .iter()
                .any(|h| h.state == HState::Pending && h.order.is_some_and(|k| phases[k] == Phase::AwaitingPayment))
        };
        self.wait_until(MPP_BOUND + Duration::from_millis(100), incomplete)?;
        self.check()?;
        for _ in 0..60 {
            if self.quiet() {
                break;
            }
            self.clock.skew.fetch_add(3_000, Ordering::SeqCst);
            self.block(1);
            self.check()?;
        }
        if !self.quiet() {
            let pending: Vec<usize> = self
                .ln()
                .htlcs
                .iter()
                .enumerate()
                .filter(|(_, h)| h.state == HState::Pending)
                .map(|(i, _)| i)
                .collect();
            return Err(format!("not quiescent at the end: orders {:?}, pending htlcs {pending:?}", self.phases()));
        }
        let orders: Vec<OrderRecord> = (0..self.case.orders).map(|k| self.order(k)).collect();
        let sets: Vec<_> =
            orders.iter().map(|o| self.store.order_with_htlcs(&o.order_id).expect("store").expect("order").1).collect();
        let ln = self.ln();
        let mut v = vec![];
        for c in &ln.channels {
            let o = &orders[c.order];
            if o.phase != Phase::Completed || o.channel.as_ref().map(|x| &x.funding_txid) != Some(&c.txid) {
                v.push(format!(
                    "end: the node opened channel {} for order {}, but the store shows {:?} with channel {:?}",
                    &c.txid[..8],
                    c.order,
                    o.phase,
                    o.channel.as_ref().map(|x| &x.funding_txid)
                ));
            }
        }
        for (k, o) in orders.iter().enumerate() {
            let lost = self.allow.lost_resolve && self.case.fund[k] == (Fund::OkThenCrash { crash: Crash::KillPlugin });
            if o.phase == Phase::Completed && !o.refunded_after_open && !lost {
                let settled: u64 = ln
                    .htlcs
                    .iter()
                    .filter(|h| h.order == Some(k) && h.state == HState::Settled)
                    .map(|h| h.amount_msat)
                    .sum();
                if settled < ln.orders[k].total_msat {
                    v.push(format!(
                        "end: order {k} is Completed (PAID) but only {settled} of {} msat were settled",
                        ln.orders[k].total_msat
                    ));
                }
                for r in &sets[k] {
                    if r.resolution == Some(Resolution::Settled)
                        && !ln
                            .htlcs
                            .iter()
                            .any(|h| h.scid == r.key.short_channel_id && h.id == r.key.id && h.state == HState::Settled)
                    {
                        v.push(format!("end: order {k}: htlc {:?} settled in the store, not in lightningd", r.key));
                    }
                }
            }
            if o.refunded_after_open && ln.htlcs.iter().any(|h| h.order == Some(k) && h.state == HState::Settled) {
                v.push(format!("end: order {k} reads refunded_after_open but an HTLC was settled"));
            }
        }
        drop(ln);
        if !v.is_empty() {
            return Err(v.join("\n"));
        }
        for o in &orders {
            match o.phase {
                Phase::Completed => {
                    self.stats.completed += 1;
                    if o.refunded_after_open {
                        self.stats.gifts += 1;
                    }
                }
                Phase::Failed => {
                    self.stats.failed += 1;
                    *self.stats.reasons.entry(o.failure_reason.clone().unwrap_or_default()).or_default() += 1;
                }
                _ => self.stats.unpaid += 1,
            }
        }
        let settled = self.ln().settled.len() as u64;
        self.stats.settled_htlcs = settled;
        Ok(())
    }

    fn trace_tail(&self) -> String {
        let ln = self.ln();
        let n = ln.trace.len();
        ln.trace[n.saturating_sub(80)..].join("\n")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(p) = self.proc.take() {
            drop(p.engine);
            drop(p.rt);
        }
    }
}

/// Known findings to look past (`LSPS1_MODEL_ALLOW`, comma-separated), so a long run can
/// explore beyond them. The default is strict.
#[derive(Debug, Clone, Copy, Default)]
struct Allow {
    /// `replayed-parts`: a part of an incomplete set replayed after a lightningd restart
    /// (the engine starts no `mpp_timeout` timer for it) is exempt from invariants 3 and 6.
    replayed_parts: bool,
    /// `ghost-parts`: an attempt begun while the store still counts as held a part that
    /// lightningd failed back when the plugin died is not held to liveness.
    ghost_parts: bool,
    /// `lost-resolve`: an order whose plugin died after recording `Completed` and before
    /// lightningd read the `resolve` answers (`Fund::OkThenCrash` with `KillPlugin`) is not
    /// held to "Completed means the payment was settled".
    lost_resolve: bool,
}

fn run_case(case: Case, allow: Allow) -> Result<Stats, String> {
    let mut w = World::new(case.clone(), allow)?;
    let res = (|| {
        for op in case.ops.clone() {
            w.apply(op)?;
        }
        w.finish()
    })();
    match res {
        Ok(()) => Ok(w.stats.clone()),
        Err(e) => Err(format!("{e}\n--- trace (last lines) ---\n{}", w.trace_tail())),
    }
}

#[path = "support/postgres.rs"]
mod pg;

thread_local! {
    /// This thread's worlds keep their orders in PostgreSQL (one fresh database each).
    static ON_POSTGRES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[test]
fn lifecycle_model() {
    run_model(DEFAULT_CASES);
}

/// The same model with every world's store on a real PostgreSQL (a quarter of the cases:
/// each makes a database); skipped, with the reason, where no server can run.
#[test]
fn lifecycle_model_on_postgres() {
    if let Err(why) = pg::fresh_database() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    ON_POSTGRES.with(|p| p.set(true));
    run_model(DEFAULT_CASES.div_ceil(4));
}

fn run_model(default_cases: u32) {
    let cases = std::env::var("LSPS1_MODEL_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default_cases);
    let seed = std::env::var("LSPS1_MODEL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEED);
    // `lost-resolve` is a known, documented limit (README, "What happens when something
    // dies"): lightningd's listhtlcs cannot tell a fulfilled HTLC from a failed one, so a
    // plugin killed between recording PAID and lightningd reading `resolve` leaves the books
    // saying PAID for a refunded payment. The client keeps channel and money; nothing else
    // is looked past by default.
    let allowed = std::env::var("LSPS1_MODEL_ALLOW").unwrap_or_else(|_| "lost-resolve".to_string());
    let has = |name: &str| allowed.split(',').any(|x| x.trim() == name);
    let allow = Allow {
        replayed_parts: has("replayed-parts"),
        ghost_parts: has("ghost-parts"),
        lost_resolve: has("lost-resolve"),
    };
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 400,
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    };
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let total = RefCell::new(Stats::default());
    let runs = RefCell::new(0u64);
    let failing = RefCell::new(0u64);
    let started = Instant::now();
    let result = runner.run(&case(), |c| {
        *runs.borrow_mut() += 1;
        match run_case(c, allow) {
            Ok(s) => {
                let mut t = total.borrow_mut();
                t.ops += s.ops;
                t.completed += s.completed;
                t.failed += s.failed;
                t.unpaid += s.unpaid;
                t.settled_htlcs += s.settled_htlcs;
                t.gifts += s.gifts;
                t.crashes += s.crashes;
                t.liveness_checked += s.liveness_checked;
                for (r, n) in s.reasons {
                    *t.reasons.entry(r).or_default() += n;
                }
                Ok(())
            }
            Err(e) => {
                *failing.borrow_mut() += 1;
                Err(TestCaseError::fail(e))
            }
        }
    });
    let t = total.borrow().clone();
    eprintln!(
        "lifecycle_model: {} runs ({} passing cases, {} failing incl. shrinking), {} ops in passing cases; orders ended \
         Completed {} (of which refunded_after_open {}), Failed {} {:?}, unpaid {}; {} HTLCs settled, {} crashes, \
         {} liveness checks; seed {seed}; {:.1} s",
        runs.borrow(),
        *runs.borrow() - *failing.borrow(),
        failing.borrow(),
        t.ops,
        t.completed,
        t.gifts,
        t.failed,
        t.reasons,
        t.unpaid,
        t.settled_htlcs,
        t.crashes,
        t.liveness_checked,
        started.elapsed().as_secs_f64()
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, minimal)) => {
            panic!("model invariant violated:\n{reason}\nminimal case: {minimal:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("model test aborted: {reason}"),
    }
}
