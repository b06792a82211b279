//! A lightningd stand-in (CONTRIBUTING.md, "Fixtures and the stand-in"): starts the real plugin binary, speaks
//! the plugin protocol on its stdin/stdout (getmanifest, init, hooks, notifications, RPC
//! passthrough) and serves a lightning-rpc unix socket whose answers are the recorded
//! Core Lightning v26.06.6 fixtures (`tests/fixtures/cln-v26.06.6`) or follow CLN's JSON
//! schemas. It records every RPC call the plugin makes and misbehaves on demand.
//!
//! Faithful to the recording: `\n\n`-terminated frames both ways, string request ids
//! (`cln:init#58`), typed option values in `init`, notifications wrapped as
//! `{"<topic>": {...}}`, `lightning-dir` = the network directory, cwd = that directory.
//!
//! # The order lifecycle
//! The lightningd side (the RPC state: block height, peers, channels, the HTLC table, the
//! log of what lightningd said) lives in one [`RpcState`] that outlives the plugin process,
//! so the plugin can be killed ([`StandIn::kill_plugin`]), started again
//! ([`StandIn::restart_plugin`]) or see lightningd restart ([`StandIn::restart_lightningd`])
//! against the same socket, channels, HTLCs and height.
//!
//! - Chain: [`StandIn::mine`] / [`StandIn::height`]; `getinfo.blockheight`,
//!   `waitblockheight`, `block_added` notifications (`notifications/block_added.json`).
//! - Peers: [`StandIn::set_reachable`], the `connect` RPC (`rpc/connect.*.json`),
//!   [`StandIn::peer_connects`] / [`StandIn::peer_disconnects`] (`notifications/connect.in.json`,
//!   `notifications/disconnect.json`), `disconnect` (`rpc/disconnect.*.json`).
//! - Channels: `fundchannel` (`rpc/fundchannel.*.json`) records a channel that
//!   `listpeerchannels` shows (`rpc/listpeerchannels.ok-awaiting-lockin.json`,
//!   `...ok-zeroconf-unconfirmed.json`); it locks in on `mine` (`channel_state_changed`).
//! - HTLCs: [`StandIn::send_htlc`] sends `htlc_accepted` (`hooks/htlc_accepted.final-hop.json`)
//!   and judges the answer as lightningd v26.06.6 does (fixtures README "Hook answers seen by
//!   the payer", CLN `lightningd/peer_htlcs.c` `htlc_accepted_hook_deserialize`); `listhtlcs`
//!   (`rpc/listhtlcs.ok-htlc-held-before-restart.json`) serves the table.
//!
//! Notifications lightningd sends by itself (block_added, connect, disconnect,
//! channel_state_changed, shutdown) go only to a plugin whose manifest subscribes to the
//! topic (or `*`), as lightningd does; [`StandIn::notify`] sends unconditionally.
//!
//! # Faults
//! - RPC: [`Reply`] per method ([`StandIn::set_reply`], [`StandIn::push_reply`]): errors,
//!   delays, no answer, the socket closed before or after lightningd acted.
//! - Kill points: [`StandIn::trace_events`] lists every message the plugin sends (RPC calls,
//!   answers, notifications, log lines); [`StandIn::kill_at_event`] SIGKILLs it right after
//!   the k-th, alone or with the whole node; [`StandIn::try_request`] and
//!   [`StandIn::try_custommsg`] report a death instead of panicking.
//! - The store's disk: [`Builder::ignore_sigxfsz`] and [`StandIn::limit_file_size`]
//!   (RLIMIT_FSIZE on the running plugin: writes fail, reads go on).
//! - Memory: [`StandIn::plugin_memory`] (`VmRSS`, `VmHWM`).

#![allow(dead_code)]

#[path = "standin_chain.rs"]
pub mod chain;
#[path = "standin_runes.rs"]
pub mod runes;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use lightning_invoice::Bolt11Invoice;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{Notify, oneshot, watch};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cln-v26.06.6");

/// A recorded fixture file, parsed.
pub fn fixture(rel: &str) -> Value {
    let path = Path::new(FIXTURES).join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// How the stand-in answers one RPC method.
#[derive(Clone, Debug)]
pub enum Reply {
    /// The stand-in's own (fixture-based) answer.
    Default,
    Result(Value),
    Error {
        code: i64,
        message: String,
    },
    /// A whole JSON-RPC `error` object (with `data`, say); see [`Reply::fixture_error`].
    ErrorObject(Value),
    /// Answer after a delay. `Delay(d, Default)` on `fundchannel` does lightningd's work
    /// (records the channel, sends notifications) at once and only delays the answer: a
    /// plugin killed during the delay leaves the channel open, as a broadcast funding would.
    Delay(Duration, Box<Reply>),
    /// Never answer.
    Hang,
    /// Close the connection without answering.
    Close,
    /// Carry the call out as [`Reply::Default`] does (a `fundchannel` opens the channel),
    /// then close the connection before the answer is written: the caller cannot tell
    /// whether it happened.
    DoneButClosed,
}

impl Reply {
    /// The `error` object of a recorded error response, e.g.
    /// `Reply::fixture_error("rpc/fundchannel.err-peer-rejected.json")`.
    pub fn fixture_error(rel: &str) -> Reply {
        let e = fixture(rel)["error"].clone();
        assert!(e.is_object(), "{rel} is not an error response");
        Reply::ErrorObject(e)
    }

    pub fn delay(d: Duration, r: Reply) -> Reply {
        Reply::Delay(d, Box::new(r))
    }

    /// The reply after every `Delay`.
    fn eventual(&self) -> &Reply {
        match self {
            Reply::Delay(_, inner) => inner.eventual(),
            r => r,
        }
    }
}

/// One final-hop HTLC offered to us (the fields of `hooks/htlc_accepted.final-hop.json` that
/// vary). [`HtlcSpec::new`] fills the usual ones.
#[derive(Clone, Debug)]
pub struct HtlcSpec {
    pub peer_id: PublicKey,
    pub payment_hash: String,
    pub payment_secret: String,
    pub amount_msat: u64,
    /// `onion.total_msat`: more than `amount_msat` for one part of an MPP payment.
    pub total_msat: u64,
    pub cltv_expiry: u32,
    /// The incoming channel (`htlc.short_channel_id`).
    pub short_channel_id: String,
    /// The HTLC id within that channel (`htlc.id`); see [`StandIn::next_htlc_id`].
    pub id: u64,
}

impl HtlcSpec {
    /// A single-part final-hop HTLC (`total_msat` = `amount_msat`) over `103x1x0` (the client's
    /// channel to us in the lifecycle recording), HTLC id 0.
    pub fn new(peer: &PublicKey, payment_hash: &str, payment_secret: &str, amount_msat: u64, cltv_expiry: u32) -> Self {
        HtlcSpec {
            peer_id: *peer,
            payment_hash: payment_hash.to_string(),
            payment_secret: payment_secret.to_string(),
            amount_msat,
            total_msat: amount_msat,
            cltv_expiry,
            short_channel_id: "103x1x0".into(),
            id: 0,
        }
    }
}

/// How an HTLC ended, as the payer would learn it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HtlcOutcome {
    /// Fulfilled with this preimage (hex).
    Settled { preimage: String },
    /// Failed with this failure message (hex, BOLT 4: 2-byte code + data). `by_lightningd`:
    /// lightningd chose it (its own final-hop handling after `continue` or a dead plugin:
    /// `400f` + amount u64 + height u32 = incorrect_or_unknown_payment_details; a wrong
    /// preimage: bare `400f`; `fail` without a message: `2002`), not the plugin.
    Failed { message: String, by_lightningd: bool },
    /// The plugin answered `fail` with `failure_onion` (hex).
    FailedOnion { onion: String },
}

impl HtlcOutcome {
    /// The BOLT 4 failure code (`0x400f`, `0x2002`, ...) of a `Failed` outcome.
    pub fn failure_code(&self) -> Option<u16> {
        match self {
            HtlcOutcome::Failed { message, .. } => message.get(..4).and_then(|c| u16::from_str_radix(c, 16).ok()),
            _ => None,
        }
    }

    /// incorrect_or_unknown_payment_details, whoever sent it.
    pub fn is_unknown_payment_details(&self) -> bool {
        self.failure_code() == Some(0x400f)
    }

    pub fn is_settled(&self) -> bool {
        matches!(self, HtlcOutcome::Settled { .. })
    }
}

#[derive(Clone, Debug)]
enum Resolution {
    Done(HtlcOutcome),
    /// lightningd called `fatal()` on the plugin's answer.
    Fatal(String),
}

const HTLC_HELD: &str = "RCVD_ADD_ACK_REVOCATION";
const HTLC_REMOVED: &str = "SENT_REMOVE_ACK_REVOCATION";

struct HtlcEntry {
    spec: HtlcSpec,
    /// The `htlc_accepted` params of the first call (replays recompute `cltv_expiry_relative`).
    params: Value,
    created_index: u64,
    updated_index: u64,
    state: &'static str,
    /// The hook call waiting for an answer.
    call_id: Option<String>,
    call_ids: Vec<String>,
    tx: watch::Sender<Option<Resolution>>,
}

#[derive(Default)]
struct HtlcTable {
    entries: Vec<HtlcEntry>,
    update_index: u64,
}

/// A channel we opened with `fundchannel`.
#[derive(Clone, Debug)]
struct Channel {
    peer_id: String,
    channel_id: String,
    funding_txid: String,
    outnum: u32,
    amount_sat: u64,
    push_msat: u64,
    private: bool,
    mindepth: u32,
    our_reserve_msat: u64,
    their_reserve_msat: u64,
    bits: Vec<u32>,
    /// The block the funding transaction was mined in, and its index there.
    confirmed: Option<(u32, u32)>,
    state: String,
    state_changes: Vec<Value>,
    alias_local: String,
    alias_remote: String,
    /// `in_payments_fulfilled` ([`StandIn::route_payments`]).
    payments_fulfilled: u64,
}

impl Channel {
    fn depth(&self, height: u32) -> u32 {
        self.confirmed.map_or(0, |(h, _)| height.saturating_sub(h) + 1)
    }
    fn scid(&self, height: u32) -> Option<String> {
        let (h, tx) = self.confirmed?;
        (self.depth(height) >= self.mindepth.max(1)).then(|| format!("{h}x{tx}x{}", self.outnum))
    }
}

/// The plugin's outstanding requests (`closed` once lightningd saw the plugin die).
#[derive(Default)]
struct Pending {
    map: HashMap<String, oneshot::Sender<Value>>,
    closed: bool,
}

/// What a request gets when the plugin died before answering.
const PLUGIN_DIED: &str = "standin: plugin died";

/// Everything on lightningd's side; survives plugin restarts.
struct RpcState {
    node_key: SecretKey,
    node_id: PublicKey,
    calls: Mutex<Vec<(String, Value)>>,
    replies: Mutex<HashMap<String, Reply>>,
    once_replies: Mutex<HashMap<String, VecDeque<Reply>>>,
    connected: Mutex<HashSet<String>>,
    known_peers: Mutex<HashSet<String>>,
    reachable: Mutex<HashSet<String>>,
    peer_features: Mutex<HashMap<String, String>>,
    sent: Mutex<Vec<(String, String)>>,
    sent_notify: Notify,
    /// When set ([`StandIn::stream_sent`]), `sendcustommsg` messages go here instead of `sent`.
    sent_sink: Mutex<Option<tokio::sync::mpsc::UnboundedSender<(String, String)>>>,
    /// Per-peer routes ([`StandIn::route_sent`]), tried before `sent_sink`.
    sent_routes: Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<String>>>,
    configs: Mutex<serde_json::Map<String, Value>>,
    height: AtomicU32,
    height_notify: Notify,
    channels: Mutex<Vec<Channel>>,
    fundings: AtomicU64,
    htlcs: Mutex<HtlcTable>,
    /// The plugin's log lines, its notifications (level "notification") and what lightningd
    /// logged about it ("**BROKEN**", "UNUSUAL").
    logs: Mutex<Vec<(String, String)>>,
    log_notify: Notify,
    /// Notifications the plugin sent: (method, params, forwarded = declared in the manifest).
    plugin_notifications: Mutex<Vec<(String, Value, bool)>>,
    fatal: Mutex<Option<String>>,
    fatal_taken: AtomicBool,
    /// The running plugin's stdin.
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    /// The running plugin's manifest (Null when none runs): hooks, subscriptions, notifications.
    manifest: Mutex<Value>,
    /// The running plugin's process id, and which start of it this is (1, 2, ...).
    pid: AtomicU32,
    generation: AtomicU64,
    /// The running plugin's "lightningd stops it" flag ([`PluginProc::stopping`]).
    plugin_stopping: Mutex<Arc<AtomicBool>>,
    /// The plugin's messages while traced ([`StandIn::trace_events`]), and a planned kill.
    trace: Mutex<Option<Trace>>,
    /// The generation a planned kill hit (0: none): what that process sends afterwards is
    /// ignored, as if it had died at that very message.
    killed_generation: AtomicU64,
    /// The on-chain wallet and its chain ([`chain`]).
    wallet: Mutex<chain::Wallet>,
    /// Bumped by every reorg, so that replaced blocks get new hashes.
    fork: AtomicU32,
    /// Runes this node made ([`runes`]).
    runes: Mutex<runes::Runes>,
}

/// Every message the plugin sends, in order, while traced: `rpc:<method>` (a call on
/// lightning-rpc, counted when lightningd reads it), `answer:<method>` (its answer to a hook
/// or command), `notify:<topic>` (a notification), `log:<level>: <text>`.
#[derive(Default)]
struct Trace {
    events: Vec<String>,
    /// SIGKILL the plugin right after this many messages ([`StandIn::kill_at_event`]).
    kill_at: Option<usize>,
    /// The whole node dies with it (pending hook calls stay unanswered, replayed at the
    /// next start), rather than the plugin alone (lightningd fails them at once).
    node_crash: bool,
}

impl RpcState {
    fn new(node_key: SecretKey) -> Self {
        let height = fixture_result("rpc/getinfo.ok.json")["blockheight"].as_u64().expect("blockheight") as u32;
        RpcState {
            node_key,
            node_id: PublicKey::from_secret_key(&Secp256k1::new(), &node_key),
            calls: Default::default(),
            replies: Default::default(),
            once_replies: Default::default(),
            connected: Default::default(),
            known_peers: Default::default(),
            reachable: Default::default(),
            peer_features: Default::default(),
            sent: Default::default(),
            sent_notify: Notify::new(),
            sent_sink: Default::default(),
            sent_routes: Default::default(),
            configs: Default::default(),
            height: AtomicU32::new(height),
            height_notify: Notify::new(),
            channels: Default::default(),
            fundings: AtomicU64::new(0),
            htlcs: Default::default(),
            logs: Default::default(),
            log_notify: Notify::new(),
            plugin_notifications: Default::default(),
            fatal: Default::default(),
            fatal_taken: AtomicBool::new(false),
            stdin: tokio::sync::Mutex::new(None),
            manifest: Mutex::new(Value::Null),
            pid: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            plugin_stopping: Mutex::new(Arc::new(AtomicBool::new(false))),
            trace: Mutex::new(None),
            killed_generation: AtomicU64::new(0),
            wallet: Default::default(),
            fork: AtomicU32::new(0),
            runes: Mutex::new(runes::Runes::new(node_key.secret_bytes())),
        }
    }

    /// One message from the plugin process of `generation` (see [`Trace`]). True when it
    /// must be ignored: it was sent after a planned kill (the plugin is dead from that
    /// message on, however long the kernel takes to deliver the signal). The message that
    /// reaches the kill point itself is delivered: lightningd reads what a plugin wrote
    /// before it died.
    fn plugin_event(&self, generation: u64, what: impl FnOnce() -> String) -> bool {
        if self.killed_generation.load(Ordering::SeqCst) == generation {
            return true;
        }
        if generation != self.generation.load(Ordering::SeqCst) {
            return false;
        }
        let mut trace = self.trace.lock().unwrap();
        let Some(t) = trace.as_mut() else { return false };
        t.events.push(what());
        if t.kill_at == Some(t.events.len()) {
            if t.node_crash {
                self.plugin_stopping.lock().unwrap().store(true, Ordering::SeqCst);
            }
            self.killed_generation.store(generation, Ordering::SeqCst);
            let pid = self.pid.load(Ordering::SeqCst);
            if pid != 0 {
                // SAFETY: kill(2) on our own child's pid (not reaped yet: the stand-in waits
                // for it only after this); no memory is shared.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        false
    }

    fn height(&self) -> u32 {
        self.height.load(Ordering::SeqCst)
    }

    fn push_log(&self, level: &str, msg: String) {
        self.logs.lock().unwrap().push((level.into(), msg));
        self.log_notify.notify_waiters();
    }

    fn set_fatal(&self, msg: String) {
        self.push_log("**BROKEN**", format!("lightningd: FATAL: {msg}"));
        self.fatal.lock().unwrap().get_or_insert(msg);
    }

    fn subscribed(&self, topic: &str) -> bool {
        let m = self.manifest.lock().unwrap();
        m["subscriptions"].as_array().is_some_and(|a| a.iter().any(|s| s == topic || s == "*"))
    }

    fn has_hook(&self, name: &str) -> bool {
        let m = self.manifest.lock().unwrap();
        m["hooks"].as_array().is_some_and(|a| a.iter().any(|h| h == name || h["name"] == name))
    }

    fn declared_notification(&self, topic: &str) -> bool {
        let m = self.manifest.lock().unwrap();
        m["notifications"].as_array().is_some_and(|a| a.iter().any(|n| n["method"] == topic))
    }

    fn is_connected(&self, peer: &str) -> bool {
        self.connected.lock().unwrap().contains(peer)
    }

    fn next_reply(&self, method: &str) -> Reply {
        if let Some(r) = self.once_replies.lock().unwrap().get_mut(method).and_then(VecDeque::pop_front) {
            return r;
        }
        self.replies.lock().unwrap().get(method).cloned().unwrap_or(Reply::Default)
    }

    /// Lock in every channel whose funding is deep enough and whose peer is connected
    /// (channel_ready needs the peer); the `channel_state_changed` payloads to send
    /// (`notifications/channel_state_changed.CHANNELD_AWAITING_LOCKIN-to-CHANNELD_NORMAL.cause-user.json`).
    fn advance_channels(&self) -> Vec<(String, Value)> {
        let height = self.height();
        let connected = self.connected.lock().unwrap().clone();
        let mut notes = vec![];
        for ch in self.channels.lock().unwrap().iter_mut() {
            if ch.state != "CHANNELD_AWAITING_LOCKIN"
                || ch.depth(height) < ch.mindepth
                || !connected.contains(&ch.peer_id)
            {
                continue;
            }
            ch.state = "CHANNELD_NORMAL".into();
            let ts = timestamp();
            ch.state_changes.push(json!({
                "timestamp": ts, "old_state": "CHANNELD_AWAITING_LOCKIN", "new_state": "CHANNELD_NORMAL",
                "cause": "user", "message": "Lockin complete"
            }));
            let mut n = json!({
                "peer_id": ch.peer_id, "channel_id": ch.channel_id, "timestamp": ts,
                "old_state": "CHANNELD_AWAITING_LOCKIN", "new_state": "CHANNELD_NORMAL",
                "cause": "user", "message": "Lockin complete"
            });
            if let Some(scid) = ch.scid(height) {
                n["short_channel_id"] = json!(scid);
            }
            notes.push(("channel_state_changed".to_string(), n));
        }
        notes
    }

    /// A block was mined: fundings not yet mined get into it (unless held out).
    fn on_block(&self, height: u32) -> Vec<(String, Value)> {
        // A mutual close is mined in the next block: FUNDING_SPEND_SEEN, then ONCHAIN
        // (fixtures README "Observations: routed channel, idleness, close").
        let mut closed = vec![];
        for ch in self.channels.lock().unwrap().iter_mut().filter(|c| c.state == "CLOSINGD_COMPLETE") {
            ch.state = "ONCHAIN".into();
            closed.push((
                "channel_state_changed".to_string(),
                json!({"peer_id": ch.peer_id, "channel_id": ch.channel_id, "timestamp": timestamp(),
                    "old_state": "CLOSINGD_COMPLETE", "new_state": "ONCHAIN", "cause": "user", "message": "Onchain funding spend"}),
            ));
        }
        if !closed.is_empty() {
            let mut notes = closed;
            notes.extend(self.on_block_opens(height));
            return notes;
        }
        self.on_block_opens(height)
    }

    fn on_block_opens(&self, height: u32) -> Vec<(String, Value)> {
        if self.wallet.lock().unwrap().hold_fundings {
            return self.advance_channels();
        }
        let mut tx_index = 0;
        for ch in self.channels.lock().unwrap().iter_mut().filter(|c| c.confirmed.is_none()) {
            tx_index += 1;
            ch.confirmed = Some((height, tx_index));
        }
        self.advance_channels()
    }

    fn render_channels(&self) -> Vec<Value> {
        let height = self.height();
        let connected = self.connected.lock().unwrap().clone();
        self.channels
            .lock()
            .unwrap()
            .iter()
            .map(|c| render_channel(&self.node_id, c, connected.contains(&c.peer_id), height))
            .collect()
    }

    fn htlc_rows(&self) -> Vec<Value> {
        self.htlcs
            .lock()
            .unwrap()
            .entries
            .iter()
            .map(|e| {
                json!({
                    "created_index": e.created_index, "updated_index": e.updated_index,
                    "short_channel_id": e.spec.short_channel_id, "id": e.spec.id,
                    "expiry": e.spec.cltv_expiry, "direction": "in",
                    "amount_msat": e.spec.amount_msat, "payment_hash": e.spec.payment_hash,
                    "state": e.state
                })
            })
            .collect()
    }

    /// Resolve HTLC `index` (if still unresolved); a `Fatal` leaves its state alone.
    fn finish_htlc(&self, index: usize, res: Resolution) {
        let mut t = self.htlcs.lock().unwrap();
        if t.entries[index].tx.borrow().is_some() {
            return;
        }
        match &res {
            Resolution::Done(_) => {
                // SENT_REMOVE_HTLC, _COMMIT, RCVD_REMOVE_REVOCATION, _ACK_COMMIT, SENT_REMOVE_ACK_REVOCATION
                t.update_index += 5;
                let ui = t.update_index;
                let e = &mut t.entries[index];
                e.state = HTLC_REMOVED;
                e.updated_index = ui;
                e.call_id = None;
            }
            Resolution::Fatal(msg) => self.set_fatal(msg.clone()),
        }
        t.entries[index].tx.send_replace(Some(res));
    }

    /// lightningd's own final-hop handling (after `continue`, a dead plugin, or no hook): it
    /// has no invoice for the hash (the plugin's invoices are `signinvoice`d, never stored), so
    /// it fails the HTLC with incorrect_or_unknown_payment_details(amount, height)
    /// (fixtures README "What lightningd does when a plugin dies ...": "Unknown invoice").
    fn lightningd_final_hop(&self, index: usize) {
        let amount = self.htlcs.lock().unwrap().entries[index].spec.amount_msat;
        let message = format!("400f{amount:016x}{:08x}", self.height());
        self.finish_htlc(index, Resolution::Done(HtlcOutcome::Failed { message, by_lightningd: true }));
    }

    /// The plugin's answer to hook call `call_id` of HTLC `index`; ignored when stale.
    fn apply_htlc_answer(&self, index: usize, call_id: &str, frame: &Value) {
        let spec = {
            let t = self.htlcs.lock().unwrap();
            let e = &t.entries[index];
            if e.call_id.as_deref() != Some(call_id) || e.tx.borrow().is_some() {
                return;
            }
            e.spec.clone()
        };
        match judge_htlc_answer(frame, &spec) {
            Judgement::Continue => self.lightningd_final_hop(index),
            Judgement::Outcome(o, broken) => {
                for b in broken {
                    self.push_log("**BROKEN**", b);
                }
                self.finish_htlc(index, Resolution::Done(o));
            }
            Judgement::Fatal(msg) => self.finish_htlc(index, Resolution::Fatal(msg)),
        }
    }

    /// lightningd saw the plugin die: each pending `htlc_accepted` call is treated as if
    /// answered `continue`; other requests get [`PLUGIN_DIED`].
    fn plugin_died(&self, pending: &Mutex<Pending>) {
        let drained: Vec<(String, oneshot::Sender<Value>)> = {
            let mut p = pending.lock().unwrap();
            p.closed = true;
            p.map.drain().collect()
        };
        *self.manifest.lock().unwrap() = Value::Null;
        for (id, tx) in drained {
            let index =
                self.htlcs.lock().unwrap().entries.iter().position(|e| e.call_id.as_deref() == Some(id.as_str()));
            match index {
                Some(i) => self.lightningd_final_hop(i),
                None => {
                    let _ = tx.send(json!({"id": id, "error": {"code": -1, "message": PLUGIN_DIED}}));
                }
            }
        }
    }
}

enum Judgement {
    Continue,
    Outcome(HtlcOutcome, Vec<String>),
    Fatal(String),
}

fn is_hex(s: &str) -> bool {
    s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// lightningd v26.06.6's reading of an `htlc_accepted` answer (`htlc_accepted_hook_deserialize`
/// in CLN's `lightningd/peer_htlcs.c`; fixtures README "Hook answers seen by the payer").
/// `frame` is the whole JSON-RPC response.
fn judge_htlc_answer(frame: &Value, spec: &HtlcSpec) -> Judgement {
    let Some(r) = frame.get("result") else {
        return Judgement::Fatal(format!("Plugin for htlc_accepted returned non-result response {frame}"));
    };
    let Some(result) = r.get("result") else {
        return Judgement::Fatal(format!("Plugin return value does not contain 'result' key {r}"));
    };
    if let Some(p) = r.get("payload")
        && !p.as_str().is_some_and(is_hex)
    {
        return Judgement::Fatal(format!("Bad payload for htlc_accepted hook: {p}"));
    }
    if let Some(f) = r.get("forward_to")
        && !f.as_str().is_some_and(|s| s.len() == 64 && is_hex(s))
    {
        return Judgement::Fatal(format!("Bad forward_to for htlc_accepted hook: {f}"));
    }
    match result.as_str() {
        Some("continue") => Judgement::Continue,
        Some("fail") => {
            let mut broken = vec![];
            if let Some(onion) = r.get("failure_onion") {
                match onion.as_str() {
                    // The stand-in is stricter than lightningd on an empty one.
                    Some(h) if is_hex(h) && !h.is_empty() => {
                        if r.get("failure_message").is_some() {
                            broken.push(
                                "lightningd: Both 'failure_onion' and'failure_message' provided. Ignoring 'failure_message'."
                                    .to_string(),
                            );
                        }
                        return Judgement::Outcome(HtlcOutcome::FailedOnion { onion: h.to_lowercase() }, broken);
                    }
                    _ => return Judgement::Fatal(format!("Bad failure_onion for htlc_accepted hook: {onion}")),
                }
            }
            match r.get("failure_message") {
                Some(m) => match m.as_str() {
                    Some(h) if is_hex(h) && !h.is_empty() => Judgement::Outcome(
                        HtlcOutcome::Failed { message: h.to_lowercase(), by_lightningd: false },
                        broken,
                    ),
                    _ => Judgement::Fatal(format!("Bad failure_message for htlc_accepted hook: {m}")),
                },
                // No message: lightningd sends temporary_node_failure itself.
                None => Judgement::Outcome(HtlcOutcome::Failed { message: "2002".into(), by_lightningd: true }, broken),
            }
        }
        Some("resolve") => {
            let Some(key) = r.get("payment_key") else {
                return Judgement::Fatal(format!(
                    "Plugin did not specify a 'payment_key' in return value to the htlc_accepted hook: {result}"
                ));
            };
            let Some(k) = key.as_str().filter(|k| k.len() == 64 && is_hex(k)) else {
                return Judgement::Fatal(format!("Plugin specified an invalid 'payment_key': {r}"));
            };
            let k = k.to_lowercase();
            let hash = sha256::Hash::hash(&hex::decode(&k).expect("hex")).to_string();
            if hash == spec.payment_hash.to_lowercase() {
                Judgement::Outcome(HtlcOutcome::Settled { preimage: k }, vec![])
            } else {
                let msg = format!(
                    "{}-chan#1: Plugin returned a preimage (sha256({k}) = {hash}) that doesn't match the HTLC hash ({}) it tries to resolve.",
                    spec.peer_id, spec.payment_hash
                );
                Judgement::Outcome(HtlcOutcome::Failed { message: "400f".into(), by_lightningd: true }, vec![msg])
            }
        }
        _ => Judgement::Fatal(format!("Plugin responded with an unknown result to the htlc_accepted hook: {result}")),
    }
}

/// The `htlc_accepted` params for `spec` (`hooks/htlc_accepted.final-hop.json` with the
/// fields replaced; the onion payload re-encoded from them).
fn htlc_params(spec: &HtlcSpec, height: u32) -> Value {
    let mut p = fixture("hooks/htlc_accepted.final-hop.json")["params"].clone();
    p["peer_id"] = json!(spec.peer_id.to_string());
    let o = &mut p["onion"];
    o["payload"] = json!(final_hop_payload(spec));
    o["forward_msat"] = json!(spec.amount_msat);
    o["outgoing_cltv_value"] = json!(spec.cltv_expiry);
    o["total_msat"] = json!(spec.total_msat);
    o["payment_secret"] = json!(spec.payment_secret);
    o["shared_secret"] =
        json!(sha256::Hash::hash(format!("standin-ss-{}-{}", spec.short_channel_id, spec.id).as_bytes()).to_string());
    let h = &mut p["htlc"];
    h["short_channel_id"] = json!(spec.short_channel_id);
    h["id"] = json!(spec.id);
    h["amount_msat"] = json!(spec.amount_msat);
    h["cltv_expiry"] = json!(spec.cltv_expiry);
    h["cltv_expiry_relative"] = json!(i64::from(spec.cltv_expiry) - i64::from(height));
    h["payment_hash"] = json!(spec.payment_hash);
    p
}

/// The final hop's TLV payload, length-prefixed as in the fixture: amt_to_forward (2),
/// outgoing_cltv_value (4), payment_data (8) = secret + total_msat.
fn final_hop_payload(spec: &HtlcSpec) -> String {
    fn tu(v: u64) -> Vec<u8> {
        let b = v.to_be_bytes();
        b[b.iter().position(|x| *x != 0).unwrap_or(8)..].to_vec()
    }
    let mut tlv = vec![];
    for (t, v) in [
        (2u8, tu(spec.amount_msat)),
        (4, tu(u64::from(spec.cltv_expiry))),
        (8, [hex::decode(&spec.payment_secret).unwrap_or_else(|_| vec![0; 32]), tu(spec.total_msat)].concat()),
    ] {
        tlv.push(t);
        tlv.push(v.len() as u8);
        tlv.extend(v);
    }
    let mut out = vec![];
    if tlv.len() < 0xfd {
        out.push(tlv.len() as u8);
    } else {
        out.push(0xfd);
        out.extend((tlv.len() as u16).to_be_bytes());
    }
    out.extend(tlv);
    hex::encode(out)
}

/// A handle on one HTLC sent with [`StandIn::send_htlc`]; it stays connected to the HTLC
/// across a lightningd restart (the replay answers the same handle).
#[derive(Clone)]
pub struct HtlcHandle {
    index: usize,
    rx: watch::Receiver<Option<Resolution>>,
    rpc: Arc<RpcState>,
    pub payment_hash: String,
}

impl HtlcHandle {
    /// The final outcome; panics if none within `timeout`, or if the plugin's answer made
    /// lightningd call `fatal()`.
    pub async fn outcome(&self, timeout: Duration) -> HtlcOutcome {
        match self.outcome_within(timeout).await {
            Some(o) => o,
            None => panic!(
                "HTLC {} still {} after {timeout:?}; logs: {:#?}",
                self.payment_hash,
                self.state(),
                self.rpc.logs.lock().unwrap()
            ),
        }
    }

    /// The final outcome, or `None` if the HTLC is still held after `timeout`.
    pub async fn outcome_within(&self, timeout: Duration) -> Option<HtlcOutcome> {
        let mut rx = self.rx.clone();
        let r = match tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await {
            Ok(Ok(r)) => r.clone(),
            Ok(Err(_)) => panic!("stand-in gone"),
            Err(_) => return None,
        };
        match r.expect("resolved") {
            Resolution::Done(o) => Some(o),
            Resolution::Fatal(m) => {
                panic!("lightningd v26.06.6 would have called fatal() on the plugin's htlc_accepted answer: {m}")
            }
        }
    }

    /// The outcome if there is one now.
    pub fn try_outcome(&self) -> Option<HtlcOutcome> {
        match self.rx.borrow().clone() {
            Some(Resolution::Done(o)) => Some(o),
            Some(Resolution::Fatal(m)) => panic!("lightningd would have called fatal(): {m}"),
            None => None,
        }
    }

    pub fn is_held(&self) -> bool {
        self.rx.borrow().is_none()
    }

    /// Its `listhtlcs` state.
    pub fn state(&self) -> String {
        self.rpc.htlcs.lock().unwrap().entries[self.index].state.to_string()
    }

    /// The ids of the `htlc_accepted` calls made for it (first, then one per replay).
    pub fn hook_call_ids(&self) -> Vec<String> {
        self.rpc.htlcs.lock().unwrap().entries[self.index].call_ids.clone()
    }
}

pub struct Builder {
    options: serde_json::Map<String, Value>,
    env: Vec<(String, String)>,
    dir: Option<PathBuf>,
    replies: HashMap<String, Reply>,
    configs: serde_json::Map<String, Value>,
    feature_set_init: String,
    program: Option<(String, Vec<String>)>,
    ignore_sigxfsz: bool,
    node_seed: u8,
}

impl Builder {
    /// Another node: its key is 32 bytes of `seed` (two stand-ins sharing one order book
    /// must be two nodes).
    pub fn node_seed(mut self, seed: u8) -> Self {
        self.node_seed = seed;
        self
    }
    pub fn option(mut self, name: &str, value: Value) -> Self {
        self.options.insert(name.into(), value);
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    /// Reuse a lightning dir (to restart the plugin against the same store).
    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }
    pub fn reply(mut self, method: &str, r: Reply) -> Self {
        self.replies.insert(method.into(), r);
        self
    }
    /// An extra `listconfigs` entry, as another plugin's option would appear.
    pub fn config(mut self, name: &str, entry: Value) -> Self {
        self.configs.insert(name.into(), entry);
        self
    }
    /// Run another executable as the plugin (the stand-in's self-tests use a tiny script).
    pub fn program(mut self, cmd: &str, args: &[&str]) -> Self {
        self.program = Some((cmd.into(), args.iter().map(|a| a.to_string()).collect()));
        self
    }
    /// Start the plugin with SIGXFSZ ignored (set in the child before exec; an ignored
    /// signal stays ignored through exec), so that a file size limit
    /// ([`StandIn::limit_file_size`]) makes its writes fail with EFBIG, as on a full disk,
    /// instead of killing it.
    pub fn ignore_sigxfsz(mut self) -> Self {
        self.ignore_sigxfsz = true;
        self
    }

    pub async fn start(self) -> StandIn {
        StandIn::start(self).await
    }
}

/// How to start the plugin again.
struct LaunchCfg {
    options: serde_json::Map<String, Value>,
    env: Vec<(String, String)>,
    feature_set_init: String,
    program: Option<(String, Vec<String>)>,
    ignore_sigxfsz: bool,
}

/// One plugin process.
struct PluginProc {
    child: Child,
    pending: Arc<Mutex<Pending>>,
    /// Set when lightningd stops it (EOF on stdin): its death is then no "plugin died".
    stopping: Arc<AtomicBool>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl PluginProc {
    async fn spawn(rpc: &Arc<RpcState>, cfg: &LaunchCfg, dir: &Path) -> PluginProc {
        let mut cmd = match &cfg.program {
            Some((p, args)) => {
                let mut c = tokio::process::Command::new(p);
                c.args(args);
                c
            }
            None => tokio::process::Command::new(env!("CARGO_BIN_EXE_cln-lsps1")),
        };
        cmd.current_dir(dir).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
        // As lightningd's plugins_init sets them for every plugin.
        cmd.env("LIGHTNINGD_PLUGIN", "1").env("LIGHTNINGD_VERSION", "v26.06.6");
        for (k, v) in &cfg.env {
            cmd.env(k, v);
        }
        if cfg.ignore_sigxfsz {
            // SAFETY: only signal(2), which is async-signal-safe, runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn plugin");
        rpc.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        let generation = rpc.generation.fetch_add(1, Ordering::SeqCst) + 1;
        *rpc.stdin.lock().await = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let pending: Arc<Mutex<Pending>> = Default::default();
        let stopping = Arc::new(AtomicBool::new(false));
        *rpc.plugin_stopping.lock().unwrap() = stopping.clone();
        let reader = tokio::spawn(read_plugin(stdout, rpc.clone(), pending.clone(), stopping.clone(), generation));
        PluginProc { child, pending, stopping, reader: Some(reader) }
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }
}

/// Reads the plugin's stdout until EOF; on an EOF lightningd did not cause, the plugin died.
async fn read_plugin(
    mut stdout: ChildStdout,
    rpc: Arc<RpcState>,
    pending: Arc<Mutex<Pending>>,
    stopping: Arc<AtomicBool>,
    generation: u64,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        let n = match stdout.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buf.drain(..pos + 2).collect();
            let text = String::from_utf8_lossy(&frame[..pos]).to_string();
            if text.trim().is_empty() {
                continue;
            }
            let v: Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => panic!("plugin wrote a non-JSON frame ({e}): {text}"),
            };
            let method = v.get("method").and_then(Value::as_str);
            let dead = rpc.plugin_event(generation, || match (method, v.get("id").and_then(Value::as_str)) {
                (Some("log"), _) => {
                    let p = &v["params"];
                    let msg: String = p["message"].as_str().unwrap_or("").chars().take(80).collect();
                    format!("log:{}: {msg}", p["level"].as_str().unwrap_or(""))
                }
                (_, Some(id)) => format!("answer:{}", request_method(id)),
                (m, None) => format!("notify:{}", m.unwrap_or("")),
            });
            if dead {
                continue;
            }
            if method == Some("log") {
                let level = v["params"]["level"].as_str().unwrap_or("").to_string();
                let msg = v["params"]["message"].as_str().unwrap_or("").to_string();
                rpc.push_log(&level, msg);
            } else if let Some(id) = v.get("id").and_then(Value::as_str) {
                // lightningd is shutting down: a late answer to a held HTLC is lost.
                if stopping.load(Ordering::SeqCst) && id.starts_with("cln:htlc_accepted#") {
                    continue;
                }
                let tx = pending.lock().unwrap().map.remove(id);
                if let Some(tx) = tx {
                    let _ = tx.send(v);
                }
            } else if let Some(m) = method {
                // A custom notification: forwarded only if declared (fixtures README
                // "Observations: custom notifications").
                let forwarded = rpc.declared_notification(m) || matches!(m, "message" | "progress");
                rpc.plugin_notifications.lock().unwrap().push((
                    m.to_string(),
                    v.get("params").cloned().unwrap_or(Value::Null),
                    forwarded,
                ));
                if !forwarded {
                    rpc.push_log(
                        "UNUSUAL",
                        format!(
                            "plugin-cln-lsps1: Plugin attempted to send a notification to topic \"{m}\" it hasn't declared in its manifest, not forwarding to subscribers."
                        ),
                    );
                }
                rpc.push_log("notification", v.to_string());
            }
        }
    }
    if !stopping.load(Ordering::SeqCst) {
        rpc.plugin_died(&pending);
    }
}

/// The method of one of our request ids: `cln:htlc_accepted#114` -> `htlc_accepted`, and
/// `cli:close#5/cln:rpc_command#99` -> `rpc_command`.
fn request_method(id: &str) -> &str {
    let last = id.rsplit('/').next().unwrap_or(id);
    let m = last.split_once(':').map_or(last, |(_, m)| m);
    m.split('#').next().unwrap_or(m)
}

/// Write one frame to the running plugin; false when none runs (or the pipe broke).
async fn write_plugin(rpc: &RpcState, v: &Value) -> bool {
    let mut guard = rpc.stdin.lock().await;
    let Some(stdin) = guard.as_mut() else { return false };
    let mut bytes = serde_json::to_vec(v).expect("json");
    bytes.extend_from_slice(b"\n\n");
    stdin.write_all(&bytes).await.is_ok() && stdin.flush().await.is_ok()
}

/// A built-in notification, sent as lightningd does: wrapped, and only to a subscriber.
async fn send_notification(rpc: &RpcState, topic: &str, payload: Value) {
    if rpc.subscribed(topic) {
        write_plugin(rpc, &json!({"jsonrpc": "2.0", "method": topic, "params": {topic: payload}})).await;
    }
}

fn timestamp() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

pub struct StandIn {
    proc: PluginProc,
    rpc: Arc<RpcState>,
    cfg: LaunchCfg,
    next_id: AtomicU64,
    pub node_key: SecretKey,
    pub node_id: PublicKey,
    /// The network directory (`init.configuration.lightning-dir`).
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// The manifest of the latest start.
    pub manifest: Value,
    /// The `init` answer of the latest start.
    pub init_result: Value,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// An LSPS0 request object.
pub fn req(id: &str, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// A fresh peer key (a client node).
pub fn peer(n: u8) -> (SecretKey, PublicKey) {
    let sk = SecretKey::from_slice(&[n.max(1); 32]).expect("key");
    (sk, PublicKey::from_secret_key(&Secp256k1::new(), &sk))
}

const TIMEOUT: Duration = Duration::from_secs(20);

impl StandIn {
    pub fn builder() -> Builder {
        Builder {
            options: Default::default(),
            env: vec![],
            dir: None,
            replies: HashMap::new(),
            configs: Default::default(),
            feature_set_init: "800898880a8a59a1".into(),
            program: None,
            ignore_sigxfsz: false,
            node_seed: 0x5a,
        }
    }

    async fn start(b: Builder) -> StandIn {
        let (tmp, dir) = match b.dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let d = t.path().join("regtest");
                std::fs::create_dir_all(&d).expect("mkdir");
                (Some(t), d)
            }
        };
        let node_key = SecretKey::from_slice(&[b.node_seed; 32]).expect("key");
        let node_id = PublicKey::from_secret_key(&Secp256k1::new(), &node_key);

        let rpc = Arc::new(RpcState::new(node_key));
        *rpc.replies.lock().unwrap() = b.replies;
        {
            let mut configs = rpc.configs.lock().unwrap();
            *configs = fixture("rpc/listconfigs.ok.json")["result"]["configs"].as_object().cloned().unwrap_or_default();
            configs.extend(b.configs);
        }
        let sock = dir.join("lightning-rpc");
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).expect("bind lightning-rpc");
        let mut tasks = vec![];
        {
            let rpc = rpc.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let generation = rpc.generation.load(Ordering::SeqCst);
                    tokio::spawn(serve_rpc(stream, rpc.clone(), generation));
                }
            }));
        }

        let cfg = LaunchCfg {
            options: b.options,
            env: b.env,
            feature_set_init: b.feature_set_init,
            program: b.program,
            ignore_sigxfsz: b.ignore_sigxfsz,
        };
        let proc = PluginProc::spawn(&rpc, &cfg, &dir).await;
        let mut s = StandIn {
            proc,
            rpc,
            cfg,
            next_id: AtomicU64::new(27),
            node_key,
            node_id,
            dir,
            _tmp: tmp,
            manifest: Value::Null,
            init_result: Value::Null,
            tasks,
        };
        s.handshake(true).await;
        s
    }

    /// getmanifest + init, as lightningd does at startup (`startup: true`) or on
    /// `plugin start` (`plugin/init.request.dynamic-start.json`, `startup: false`).
    async fn handshake(&mut self, startup: bool) {
        let manifest = self.request("getmanifest", json!({"allow-deprecated-apis": false})).await;
        self.manifest = manifest.get("result").cloned().unwrap_or_else(|| panic!("getmanifest failed: {manifest}"));
        // lightningd's plugin_parse_getmanifest_response / plugin_manifest_cb (lightningd/plugin.c).
        let dynamic = self.manifest["dynamic"] == json!(true);
        let featurebits = self.manifest["featurebits"]
            .as_object()
            .is_some_and(|f| f.values().any(|v| v.as_str().is_some_and(|s| !s.is_empty())));
        if dynamic && featurebits {
            let _ = self.proc.child.start_kill();
            panic!(
                "lightningd kills the plugin: \"Custom featurebits only allows for non-dynamic plugins\" ({})",
                self.manifest
            );
        }
        if !startup && !dynamic {
            let _ = self.proc.child.start_kill();
            panic!(
                "lightningd v26.06.6 refuses `plugin start` of a plugin whose manifest is not dynamic (\"Not a dynamic plugin\"; a plugin with featurebits can never be dynamic); restart lightningd instead (StandIn::restart_lightningd)"
            );
        }
        *self.rpc.manifest.lock().unwrap() = self.manifest.clone();
        let mut feature_init = self.cfg.feature_set_init.clone();
        if self.manifest.pointer("/featurebits/init").is_some() {
            // As lightningd does: the plugin's bits merged into the node's set.
            let bits = self.manifest["featurebits"]["init"].as_str().unwrap_or("");
            feature_init = format!("{}{}", &bits[..bits.len().saturating_sub(feature_init.len())], feature_init);
        }
        let init = self
            .request(
                "init",
                json!({
                    "options": Value::Object(self.cfg.options.clone()),
                    "configuration": {
                        "lightning-dir": self.dir.to_string_lossy(),
                        "rpc-file": "lightning-rpc",
                        "startup": startup,
                        "network": "regtest",
                        "feature_set": {
                            "init": feature_init,
                            "node": "808898880a8a59a1",
                            "channel": "",
                            "invoice": "02000002024100",
                            "bolt12_offer": "",
                            "bolt12_invreq": "",
                            "bolt12_invoice": "020000",
                            "channel_type": "08800000800000"
                        }
                    }
                }),
            )
            .await;
        self.init_result = init.get("result").cloned().unwrap_or_else(|| panic!("init failed: {init}"));
        if self.disabled().is_some() {
            // lightningd drops a plugin that disabled itself: no hooks, no notifications.
            *self.rpc.manifest.lock().unwrap() = Value::Null;
        }
    }

    /// `Some(reason)` when the plugin disabled itself at init.
    pub fn disabled(&self) -> Option<String> {
        self.init_result.get("disable").and_then(Value::as_str).map(str::to_owned)
    }

    async fn write(&self, v: &Value) {
        assert!(write_plugin(&self.rpc, v).await, "write to plugin: stdin closed (plugin not running)");
    }

    fn call_id(&self, method: &str) -> String {
        format!("cln:{method}#{}", self.next_id.fetch_add(1, Ordering::SeqCst))
    }

    /// Send a request as lightningd does and wait for the plugin's response frame.
    pub async fn request(&self, method: &str, params: Value) -> Value {
        let id = self.call_id(method);
        self.request_with_id(id, method, params).await
    }

    async fn request_with_id(&self, id: String, method: &str, params: Value) -> Value {
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.proc.pending.lock().unwrap();
            assert!(!p.closed, "{method}: the plugin is dead");
            p.map.insert(id.clone(), tx);
        }
        self.write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await;
        match tokio::time::timeout(TIMEOUT, rx).await {
            Ok(Ok(v)) if v["error"]["message"] == PLUGIN_DIED => panic!("the plugin died before answering {method}"),
            Ok(Ok(v)) => v,
            _ => panic!("no answer to {method} within {TIMEOUT:?}; logs: {:#?}", self.logs()),
        }
    }

    /// A hook call: the hook's `result` object.
    pub async fn hook(&self, name: &str, params: Value) -> Value {
        let r = self.request(name, params).await;
        assert!(r.get("error").is_none(), "hook {name} returned an error (fatal in lightningd): {r}");
        r["result"].clone()
    }

    /// The `rpc_command` hook for an operator's `method` call, built exactly like
    /// `hooks/rpc_command.close.json`: id = caller's id + `/cln:rpc_command#N`,
    /// `params.rpc_command` = the caller's whole request. Returns the hook's `result`.
    pub async fn rpc_command(&self, method: &str, params: Value) -> Value {
        let caller = format!("cli:{method}#{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        let id = format!("{caller}/cln:rpc_command#{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        let call = json!({"rpc_command": {"jsonrpc": "2.0", "id": caller, "method": method, "params": params}});
        let r = self.request_with_id(id, "rpc_command", call).await;
        assert!(r.get("error").is_none(), "hook rpc_command returned an error (fatal in lightningd): {r}");
        r["result"].clone()
    }

    /// A notification, wrapped as lightningd wraps them (sent whether subscribed or not).
    pub async fn notify(&self, topic: &str, payload: Value) {
        self.write(&json!({"jsonrpc": "2.0", "method": topic, "params": {topic: payload}})).await;
    }

    /// An operator command through lightningd: `Ok(result)` or `Err(error)`.
    pub async fn command(&self, method: &str, params: Value) -> Result<Value, Value> {
        let r = self.request(method, params).await;
        match r.get("error") {
            Some(e) => Err(e.clone()),
            None => Ok(r["result"].clone()),
        }
    }

    /// Mark `peer` connected (no notification; see [`StandIn::peer_connects`]).
    pub fn connect(&self, peer: &PublicKey) {
        self.rpc.connected.lock().unwrap().insert(peer.to_string());
        self.rpc.known_peers.lock().unwrap().insert(peer.to_string());
    }

    /// Mark `peer` disconnected (no notification; see [`StandIn::peer_disconnects`]).
    pub fn disconnect(&self, peer: &PublicKey) {
        self.rpc.connected.lock().unwrap().remove(&peer.to_string());
    }

    /// `peer` connects to us: marked connected, the `connect` notification
    /// (`notifications/connect.in.json`, direction "in") to a subscribed plugin, and its
    /// channels lock in if deep enough.
    pub async fn peer_connects(&self, peer: &PublicKey) {
        self.connect(peer);
        let payload = json!({"id": peer.to_string(), "direction": "in",
            "address": {"type": "ipv4", "address": "127.0.0.1", "port": 47452}});
        send_notification(&self.rpc, "connect", payload).await;
        for (t, p) in self.rpc.advance_channels() {
            send_notification(&self.rpc, &t, p).await;
        }
    }

    /// `peer` goes away: marked disconnected, `disconnect` notification (`notifications/disconnect.json`).
    pub async fn peer_disconnects(&self, peer: &PublicKey) {
        self.disconnect(peer);
        send_notification(&self.rpc, "disconnect", json!({"id": peer.to_string()})).await;
    }

    /// Whether a `connect` RPC (or fundchannel's auto-connect) to `peer` succeeds.
    pub fn set_reachable(&self, peer: &PublicKey, reachable: bool) {
        let mut r = self.rpc.reachable.lock().unwrap();
        if reachable {
            r.insert(peer.to_string());
        } else {
            r.remove(&peer.to_string());
        }
    }

    pub fn is_connected(&self, peer: &PublicKey) -> bool {
        self.rpc.is_connected(&peer.to_string())
    }

    pub fn set_peer_features(&self, peer: &PublicKey, features: &str) {
        self.rpc.peer_features.lock().unwrap().insert(peer.to_string(), features.into());
    }

    /// The block height (starts at the fixture getinfo's 101).
    pub fn height(&self) -> u32 {
        self.rpc.height()
    }

    /// Mine `n` blocks, one at a time as lightningd sees them: the height rises, a subscribed
    /// plugin gets `block_added` (`notifications/block_added.json`) for each, pending fundings
    /// confirm in the first, channels lock in (`channel_state_changed`) when deep enough.
    pub async fn mine(&self, n: u32) {
        for _ in 0..n {
            let h = self.rpc.height.fetch_add(1, Ordering::SeqCst) + 1;
            let notes = self.rpc.on_block(h);
            self.rpc.wallet.lock().unwrap().on_block(h);
            let fork = self.rpc.fork.load(Ordering::SeqCst);
            let hash = sha256::Hash::hash(format!("standin-block-{h}-{fork}").as_bytes()).to_string();
            send_notification(&self.rpc, "block_added", json!({"hash": hash, "height": h})).await;
            for (t, p) in notes {
                send_notification(&self.rpc, &t, p).await;
            }
            self.rpc.height_notify.notify_waiters();
        }
    }

    /// A payment from an outside wallet to `address` of this node: in the mempool, which
    /// lightningd does not see, until [`StandIn::mine`] (`onchain/01-deposit-confirmations`).
    /// Returns its outpoint, `txid:vout`.
    pub fn pay_onchain(&self, address: &str, amount_sat: u64) -> String {
        let op = self.rpc.wallet.lock().unwrap().receive(address, amount_sat);
        format!("{}:{}", op.txid, op.vout)
    }

    /// A reorg of the last `depth` blocks: their deposits go back to unconfirmed (still
    /// listed), and `depth + 1` new blocks with new hashes make the new chain longer, as
    /// lightningd needs before it notices (`onchain/03-reorg`). `remine`: the deposits are
    /// mined again in the first new block.
    pub async fn reorg(&self, depth: u32, remine: bool) {
        let tip = self.height();
        let fork_at = tip.saturating_sub(depth);
        self.rpc.wallet.lock().unwrap().reorg_above(fork_at, remine);
        self.rpc.fork.fetch_add(1, Ordering::SeqCst);
        self.rpc.height.store(fork_at, Ordering::SeqCst);
        self.mine(depth + 1).await;
    }

    /// Keep channel fundings (and their change) out of the next blocks (`true`), or let
    /// them be mined.
    pub fn hold_fundings(&self, hold: bool) {
        self.rpc.wallet.lock().unwrap().hold_fundings = hold;
    }

    /// Keep our own broadcasts out of the next blocks (`true`), or let them be mined.
    pub fn hold_mempool(&self, hold: bool) {
        self.rpc.wallet.lock().unwrap().hold_mempool = hold;
    }

    /// Mine `outpoint` (reorged out) again in the next block.
    pub fn remine(&self, outpoint: &str) {
        let Some((t, v)) = outpoint.split_once(':') else { return };
        if let (Ok(txid), Ok(vout)) = (bitcoin::Txid::from_str(t), v.parse()) {
            self.rpc.wallet.lock().unwrap().remine(bitcoin::OutPoint { txid, vout });
        }
    }

    /// The wallet's transactions paying `address` (refunds): txid, sat, mined height.
    pub fn payments_to(&self, address: &str) -> Vec<(String, u64, Option<u32>)> {
        self.rpc
            .wallet
            .lock()
            .unwrap()
            .payments_to(address)
            .into_iter()
            .map(|(t, s, h)| (t.to_string(), s, h))
            .collect()
    }

    /// An output of the wallet: (sat, blockheight, reserved_to, spent by a pending tx).
    pub fn coin(&self, outpoint: &str) -> Option<(u64, Option<u32>, Option<u32>, bool)> {
        let (t, v) = outpoint.split_once(':')?;
        let op = bitcoin::OutPoint { txid: bitcoin::Txid::from_str(t).ok()?, vout: v.parse().ok()? };
        self.rpc
            .wallet
            .lock()
            .unwrap()
            .coin(&op)
            .map(|c| (c.amount_sat, c.blockheight, c.reserved_to, c.spent_by.is_some()))
    }

    /// `listpeerchannels` (all channels), as the plugin would see it now.
    pub fn channels(&self) -> Vec<Value> {
        self.rpc.render_channels()
    }

    /// `n` payments routed into channel `channel_id` (its `in_payments_fulfilled`).
    pub fn route_payments(&self, channel_id: &str, n: u64) {
        for c in self.rpc.channels.lock().unwrap().iter_mut().filter(|c| c.channel_id == channel_id) {
            c.payments_fulfilled += n;
        }
    }

    /// A rune of this node (`createrune` with `restrictions`, as lightning-cli would).
    pub fn create_rune(&self, restrictions: Value) -> String {
        let r = self.rpc.runes.lock().unwrap().create(&json!({ "restrictions": restrictions })).expect("createrune");
        r["rune"].as_str().expect("rune").to_string()
    }

    /// The `custommsg` hook with a raw message (hex of type + payload); the peer is
    /// connected first, as it is when lightningd calls the hook.
    pub async fn custommsg_hex(&self, peer: &PublicKey, payload_hex: &str) -> Value {
        self.connect(peer);
        self.hook("custommsg", json!({"payload": payload_hex, "peer_id": peer.to_string()})).await
    }

    /// The `custommsg` hook with an LSPS0 payload (type 37913 prepended).
    pub async fn custommsg(&self, peer: &PublicKey, payload: &[u8]) -> Value {
        self.custommsg_hex(peer, &format!("9419{}", hex::encode(payload))).await
    }

    /// Messages the plugin sent with `sendcustommsg`, decoded (type stripped).
    pub fn sent_to(&self, peer: &PublicKey) -> Vec<Vec<u8>> {
        let id = peer.to_string();
        self.rpc
            .sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| *n == id)
            .map(|(_, m)| {
                assert!(m.starts_with("9419"), "sent a non-LSPS type: {m}");
                hex::decode(&m[4..]).expect("hex")
            })
            .collect()
    }

    /// From now on, every `sendcustommsg` (peer id, message hex) goes to the returned stream
    /// and is no longer kept for [`StandIn::sent_to`]: for benchmarks, where a growing log
    /// scanned per reply would measure the stand-in.
    pub fn stream_sent(&self) -> tokio::sync::mpsc::UnboundedReceiver<(String, String)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.rpc.sent_sink.lock().unwrap() = Some(tx);
        rx
    }

    /// From now on, every `sendcustommsg` to `peer` (message hex) goes straight to the
    /// returned stream, with no task in between: benchmarks measure the reply's arrival.
    pub fn route_sent(&self, peer: &PublicKey) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.rpc.sent_routes.lock().unwrap().insert(peer.to_string(), tx);
        rx
    }

    /// The running plugin's process id (for its `/proc/<pid>/status`).
    pub fn plugin_pid(&self) -> Option<u32> {
        self.proc.child.id()
    }

    pub fn sent_count(&self) -> usize {
        self.rpc.sent.lock().unwrap().len()
    }

    /// Wait until `peer` has been sent at least `n` messages; returns them all.
    pub async fn wait_sent(&self, peer: &PublicKey, n: usize) -> Vec<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let notified = self.rpc.sent_notify.notified();
            let got = self.sent_to(peer);
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("peer got {} messages, wanted {n}; logs: {:#?}", got.len(), self.logs());
            }
        }
    }

    /// Send one LSPS0 request and return the plugin's next message to that peer (send one
    /// request at a time per peer when the reply matters).
    pub async fn lsps(&self, peer: &PublicKey, request: &Value) -> Value {
        self.lsps_raw(peer, request.to_string().as_bytes()).await
    }

    pub async fn lsps_raw(&self, peer: &PublicKey, payload: &[u8]) -> Value {
        let before = self.sent_to(peer).len();
        let hook = self.custommsg(peer, payload).await;
        assert_eq!(hook, json!({"result": "continue"}));
        let all = self.wait_sent(peer, before + 1).await;
        let reply: Value = serde_json::from_slice(&all[before]).expect("reply is JSON");
        reply
    }

    /// Every RPC call the plugin made to `method`, with its params (all plugin runs).
    pub fn calls(&self, method: &str) -> Vec<Value> {
        self.rpc.calls.lock().unwrap().iter().filter(|(m, _)| m == method).map(|(_, p)| p.clone()).collect()
    }

    /// Wait until the plugin has called `method` at least `n` times.
    pub async fn wait_calls(&self, method: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while self.calls(method).len() < n {
            if tokio::time::Instant::now() > deadline {
                panic!("{method} called {} times, wanted {n}", self.calls(method).len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How `method` is answered from now on.
    pub fn set_reply(&self, method: &str, r: Reply) {
        self.rpc.replies.lock().unwrap().insert(method.into(), r);
    }

    /// Answer the next call of `method` with `r` (queued; used before the `set_reply` one).
    pub fn push_reply(&self, method: &str, r: Reply) {
        self.rpc.once_replies.lock().unwrap().entry(method.into()).or_default().push_back(r);
    }

    pub fn logs(&self) -> Vec<(String, String)> {
        self.rpc.logs.lock().unwrap().clone()
    }

    /// What lightningd logged at `**BROKEN**` level (a wrong preimage, a fatal()).
    pub fn broken_logs(&self) -> Vec<String> {
        self.logs().into_iter().filter(|(l, _)| l == "**BROKEN**").map(|(_, m)| m).collect()
    }

    /// Wait for a log line containing `needle` at `level` (any level when `None`).
    pub async fn wait_log(&self, level: Option<&str>, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let notified = self.rpc.log_notify.notified();
            if let Some((_, m)) =
                self.logs().into_iter().find(|(l, m)| m.contains(needle) && level.is_none_or(|want| want == l))
            {
                return m;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no log line with {needle:?}; logs: {:#?}", self.logs());
            }
        }
    }

    /// The params of every notification the plugin emitted on `topic` that lightningd
    /// forwarded (declared in the manifest's `notifications`; the params as sent).
    pub fn notifications(&self, topic: &str) -> Vec<Value> {
        self.rpc
            .plugin_notifications
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _, fwd)| m == topic && *fwd)
            .map(|(_, p, _)| p.clone())
            .collect()
    }

    /// Wait for a forwarded `topic` notification whose params satisfy `pred`; returns them.
    pub async fn wait_notification(&self, topic: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let notified = self.rpc.log_notify.notified();
            if let Some(p) = self.notifications(topic).into_iter().find(|p| pred(p)) {
                return p;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "no matching {topic} notification; got {:#?}; logs: {:#?}",
                    self.notifications(topic),
                    self.logs()
                );
            }
        }
    }

    /// Offer the plugin a final-hop HTLC: records it (`listhtlcs`, RCVD_ADD_ACK_REVOCATION)
    /// and sends `htlc_accepted` (`hooks/htlc_accepted.final-hop.json` with `spec`'s fields,
    /// `cltv_expiry_relative` = expiry - height) without waiting for the answer. A plugin
    /// without the hook (or none running) leaves it to lightningd's own handling, which fails
    /// it at once (see [`HtlcOutcome::Failed`]).
    pub async fn send_htlc(&self, spec: HtlcSpec) -> HtlcHandle {
        let params = htlc_params(&spec, self.height());
        let (tx, rx) = watch::channel(None);
        let index = {
            let mut t = self.rpc.htlcs.lock().unwrap();
            // RCVD_ADD_HTLC, RCVD_ADD_COMMIT, ... RCVD_ADD_ACK_REVOCATION
            t.update_index += 3;
            let index = t.entries.len();
            let updated_index = t.update_index;
            t.entries.push(HtlcEntry {
                spec: spec.clone(),
                params,
                created_index: index as u64 + 1,
                updated_index,
                state: HTLC_HELD,
                call_id: None,
                call_ids: vec![],
                tx,
            });
            index
        };
        self.dispatch_htlc(index).await;
        HtlcHandle { index, rx, rpc: self.rpc.clone(), payment_hash: spec.payment_hash }
    }

    /// Call `htlc_accepted` for HTLC `index` (first call or replay).
    async fn dispatch_htlc(&self, index: usize) {
        if !self.rpc.has_hook("htlc_accepted") {
            self.rpc.lightningd_final_hop(index);
            return;
        }
        let id = self.call_id("htlc_accepted");
        let params = {
            let mut t = self.rpc.htlcs.lock().unwrap();
            let e = &mut t.entries[index];
            e.call_id = Some(id.clone());
            e.call_ids.push(id.clone());
            let mut p = e.params.clone();
            p["htlc"]["cltv_expiry_relative"] = json!(i64::from(e.spec.cltv_expiry) - i64::from(self.height()));
            p
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.proc.pending.lock().unwrap();
            if p.closed {
                drop(p);
                self.rpc.lightningd_final_hop(index);
                return;
            }
            p.map.insert(id.clone(), tx);
        }
        let (rpc, call) = (self.rpc.clone(), id.clone());
        tokio::spawn(async move {
            // Err: lightningd stopped (the call stays unanswered until the replay) or the
            // plugin died (handled by `plugin_died`).
            if let Ok(v) = rx.await {
                rpc.apply_htlc_answer(index, &call, &v);
            }
        });
        // A failed write means the plugin is dying: `plugin_died` handles the call.
        write_plugin(&self.rpc, &json!({"jsonrpc": "2.0", "id": id, "method": "htlc_accepted", "params": params}))
            .await;
    }

    /// The id to give the next HTLC on `short_channel_id`.
    pub fn next_htlc_id(&self, short_channel_id: &str) -> u64 {
        self.rpc.htlcs.lock().unwrap().entries.iter().filter(|e| e.spec.short_channel_id == short_channel_id).count()
            as u64
    }

    /// The HTLC table, as `listhtlcs` rows (`rpc/listhtlcs.ok-htlc-held-before-restart.json`).
    pub fn htlc_states(&self) -> Vec<Value> {
        self.rpc.htlc_rows()
    }

    /// The message lightningd's `fatal()` would have died with, if a plugin answer caused one.
    pub fn fatal(&self) -> Option<String> {
        self.rpc.fatal.lock().unwrap().clone()
    }

    /// Acknowledge an expected fatal (otherwise dropping the StandIn panics).
    pub fn take_fatal(&self) -> Option<String> {
        self.rpc.fatal_taken.store(true, Ordering::SeqCst);
        self.fatal()
    }

    pub fn assert_no_fatal(&self) {
        if let Some(m) = self.fatal() {
            panic!("lightningd v26.06.6 would have called fatal(): {m}");
        }
    }

    /// SIGKILL the plugin. lightningd then treats every pending `htlc_accepted` call as
    /// answered `continue` (fixtures README "What lightningd does when a plugin dies while an
    /// `htlc_accepted` call is pending"): failed back (incorrect_or_unknown_payment_details,
    /// SENT_REMOVE_ACK_REVOCATION) by the time this returns.
    pub async fn kill_plugin(&mut self) {
        let _ = self.proc.child.start_kill();
        tokio::time::timeout(TIMEOUT, self.proc.child.wait()).await.expect("killed plugin exits").expect("wait");
        if let Some(r) = self.proc.reader.take() {
            let _ = tokio::time::timeout(TIMEOUT, r).await;
        }
        self.rpc.stdin.lock().await.take();
    }

    /// Start the plugin again after it died, against the same lightning dir and lightningd
    /// state, as `plugin start` does (`init.configuration.startup` false). lightningd only
    /// allows that for a plugin whose manifest says `"dynamic": true`: otherwise this panics,
    /// use [`StandIn::restart_lightningd`].
    pub async fn restart_plugin(&mut self) {
        assert!(self.proc.exited(), "restart_plugin: the plugin still runs; kill_plugin() first");
        self.proc = PluginProc::spawn(&self.rpc, &self.cfg, &self.dir).await;
        self.handshake(false).await;
    }

    /// lightningd stops and starts again. Stop: `shutdown` notification to a subscribed
    /// plugin, EOF on its stdin, wait for it to exit; pending hook calls stay unanswered
    /// (HTLCs stay RCVD_ADD_ACK_REVOCATION; an answer arriving after the stop is lost), peers
    /// disconnect (no notifications; reconnect them). Start: getmanifest/init (startup), then,
    /// after the init answer, every unresolved HTLC is replayed through `htlc_accepted` with a
    /// fresh id and `cltv_expiry_relative` recomputed (fixtures README "Observations:
    /// htlc_accepted replay after a restart"); the replay resolves the same [`HtlcHandle`].
    /// Works on a dead plugin too (then only the start).
    pub async fn restart_lightningd(&mut self) {
        if !self.proc.exited() {
            self.proc.stopping.store(true, Ordering::SeqCst);
            send_notification(&self.rpc, "shutdown", json!({})).await;
            self.rpc.stdin.lock().await.take();
            tokio::time::timeout(TIMEOUT, self.proc.child.wait())
                .await
                .expect("plugin exits when lightningd stops")
                .expect("wait");
            if let Some(r) = self.proc.reader.take() {
                let _ = tokio::time::timeout(TIMEOUT, r).await;
            }
        }
        self.rpc.connected.lock().unwrap().clear();
        *self.rpc.manifest.lock().unwrap() = Value::Null;
        self.proc = PluginProc::spawn(&self.rpc, &self.cfg, &self.dir).await;
        self.handshake(true).await;
        let held: Vec<usize> = {
            let t = self.rpc.htlcs.lock().unwrap();
            (0..t.entries.len()).filter(|i| t.entries[*i].tx.borrow().is_none()).collect()
        };
        for i in held {
            self.dispatch_htlc(i).await;
        }
    }

    /// Close the plugin's stdin as lightningd does on shutdown; wait for it to exit.
    pub async fn shutdown(mut self) -> std::process::ExitStatus {
        self.proc.stopping.store(true, Ordering::SeqCst);
        self.rpc.stdin.lock().await.take();
        let status =
            tokio::time::timeout(TIMEOUT, self.proc.child.wait()).await.expect("plugin exits on EOF").expect("wait");
        for t in &self.tasks {
            t.abort();
        }
        status
    }

    /// Wait for the process to exit by itself (after `disable`).
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(TIMEOUT, self.proc.child.wait()).await.expect("plugin exits").expect("wait")
    }

    pub fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.child.try_wait().ok().flatten()
    }

    /// [`StandIn::request`] that reports what a caller of a dying plugin sees instead of
    /// panicking: `Err` when the plugin is dead or dies before answering (also by a planned
    /// kill, [`StandIn::kill_at_event`], whether lightningd survives it or not), or gives
    /// no answer within 20 s.
    pub async fn try_request(&self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.call_id(method);
        let (tx, mut rx) = oneshot::channel();
        {
            let mut p = self.proc.pending.lock().unwrap();
            if p.closed {
                return Err(format!("{method}: the plugin is dead"));
            }
            p.map.insert(id.clone(), tx);
        }
        let generation = self.rpc.generation.load(Ordering::SeqCst);
        if !write_plugin(&self.rpc, &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await {
            return Err(format!("{method}: the plugin is not running"));
        }
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            match tokio::time::timeout(Duration::from_millis(20), &mut rx).await {
                Ok(Ok(v)) if v["error"]["message"] == PLUGIN_DIED => {
                    return Err(format!("the plugin died before answering {method}"));
                }
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(_)) => return Err(format!("{method}: lightningd stopped waiting for the answer")),
                Err(_) if self.rpc.killed_generation.load(Ordering::SeqCst) == generation => {
                    return Err(format!("the plugin was killed before answering {method}"));
                }
                Err(_) if tokio::time::Instant::now() > deadline => {
                    return Err(format!("no answer to {method} within {TIMEOUT:?}"));
                }
                Err(_) => {}
            }
        }
    }

    /// [`StandIn::custommsg`] through [`StandIn::try_request`]: `Ok(())` once the hook
    /// answered `continue`.
    pub async fn try_custommsg(&self, peer: &PublicKey, payload: &[u8]) -> Result<(), String> {
        self.connect(peer);
        let params = json!({"payload": format!("9419{}", hex::encode(payload)), "peer_id": peer.to_string()});
        let r = self.try_request("custommsg", params).await?;
        assert_eq!(r["result"], json!({"result": "continue"}), "custommsg hook answer (anything else is fatal)");
        Ok(())
    }

    /// Record every message the plugin sends from now on (see [`StandIn::events`]).
    pub fn trace_events(&self) {
        *self.rpc.trace.lock().unwrap() = Some(Trace::default());
    }

    /// The plugin's messages since [`StandIn::trace_events`] (or [`StandIn::kill_at_event`]),
    /// in order: `rpc:<method>` (a lightning-rpc call, as lightningd reads it),
    /// `answer:<method>` (its answer to a hook or command), `notify:<topic>`,
    /// `log:<level>: <text>`. The points at which [`StandIn::kill_at_event`] can kill it.
    pub fn events(&self) -> Vec<String> {
        self.rpc.trace.lock().unwrap().as_ref().map(|t| t.events.clone()).unwrap_or_default()
    }

    /// Trace the plugin's messages from now on, and SIGKILL it right after the `k`-th
    /// (1-based; see [`StandIn::events`]): that message reaches lightningd (an RPC call is
    /// carried out, an answer applied), nothing after it does (later messages are ignored,
    /// the call's answer is not sent). With `node_crash`, lightningd dies at the same moment:
    /// pending `htlc_accepted` calls stay unanswered and the HTLCs stay held, to be replayed
    /// by [`StandIn::restart_lightningd`]; without it, lightningd sees the plugin die and
    /// fails them back (see [`StandIn::kill_plugin`]). After the kill, [`StandIn::kill_plugin`]
    /// reaps the process; then restart it.
    pub fn kill_at_event(&self, k: usize, node_crash: bool) {
        assert!(k >= 1, "events are counted from 1");
        *self.rpc.trace.lock().unwrap() = Some(Trace { events: vec![], kill_at: Some(k), node_crash });
    }

    /// Whether a planned kill ([`StandIn::kill_at_event`]) hit the running plugin.
    pub fn killed(&self) -> bool {
        self.rpc.killed_generation.load(Ordering::SeqCst) == self.rpc.generation.load(Ordering::SeqCst)
    }

    /// The running plugin's memory, from `/proc/<pid>/status`.
    pub fn plugin_memory(&self) -> Option<ProcMemory> {
        ProcMemory::of(self.plugin_pid()?)
    }

    /// Set (`Some(bytes)`) or lift (`None`) the running plugin's RLIMIT_FSIZE soft limit from
    /// outside, with prlimit(2): its writes to regular files past `bytes` then fail with
    /// EFBIG (start it with [`Builder::ignore_sigxfsz`], or SIGXFSZ kills it); reads, pipes
    /// and sockets are unaffected. A disk that fills up and is freed again, as the plugin's
    /// store sees it (SQLite: "disk I/O error").
    pub fn limit_file_size(&self, bytes: Option<u64>) {
        let pid = self.plugin_pid().expect("limit_file_size: no plugin running") as libc::pid_t;
        let mut cur = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: prlimit(2) with valid pointers to locals; our own child, same user.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut cur) };
        assert_eq!(rc, 0, "prlimit(FSIZE) get: {}", std::io::Error::last_os_error());
        let soft = bytes.map_or(cur.rlim_max, |b| (b as libc::rlim_t).min(cur.rlim_max));
        let new = libc::rlimit { rlim_cur: soft, rlim_max: cur.rlim_max };
        // SAFETY: as above.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &new, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit(FSIZE) set: {}", std::io::Error::last_os_error());
    }
}

/// A process's memory, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcMemory {
    /// Resident set size now (`VmRSS`), KiB.
    pub rss_kb: u64,
    /// The largest it has been (`VmHWM`), KiB.
    pub hwm_kb: u64,
}

impl ProcMemory {
    pub fn of(pid: u32) -> Option<ProcMemory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        };
        Some(ProcMemory { rss_kb: field("VmRSS:")?, hwm_kb: field("VmHWM:")? })
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(r) = &self.proc.reader {
            r.abort();
        }
        if !std::thread::panicking()
            && !self.rpc.fatal_taken.load(Ordering::SeqCst)
            && let Some(m) = self.fatal()
        {
            panic!("lightningd v26.06.6 would have called fatal() during this test: {m} (take_fatal() if expected)");
        }
    }
}

/// One lightning-rpc connection, opened by the plugin process of `generation`.
async fn serve_rpc(mut stream: UnixStream, rpc: Arc<RpcState>, generation: u64) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        // Take every complete JSON object off the front of the buffer.
        loop {
            let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            let req = match it.next() {
                Some(Ok(v)) => v,
                _ => break,
            };
            let used = it.byte_offset();
            buf.drain(..used);
            while buf.first().is_some_and(|b| b.is_ascii_whitespace()) {
                buf.remove(0);
            }
            let method = req["method"].as_str().unwrap_or("").to_string();
            if rpc.plugin_event(generation, || format!("rpc:{method}")) {
                return; // sent after a planned kill: never written, as far as lightningd knows
            }
            let params = req.get("params").cloned().unwrap_or(Value::Null);
            let mut reply = rpc.next_reply(&method);
            // lightningd opens the channel (and broadcasts) before its answer travels back;
            // recorded before the call shows in `calls()`, so a test that saw the call and
            // then kills the plugin finds the channel.
            let mut early = None;
            if method == "fundchannel" && matches!(reply.eventual(), Reply::Default) {
                early = Some(default_reply_async(&rpc, &method, &params).await);
            }
            rpc.calls.lock().unwrap().push((method.clone(), params.clone()));
            while let Reply::Delay(d, inner) = reply {
                tokio::time::sleep(d).await;
                reply = *inner;
            }
            let body = match reply {
                Reply::Hang => {
                    std::future::pending::<()>().await;
                    return;
                }
                Reply::Close => return,
                Reply::DoneButClosed => {
                    let _ = default_reply_async(&rpc, &method, &params).await;
                    return;
                }
                Reply::Result(v) => Ok(v),
                Reply::Error { code, message } => Err(json!({"code": code, "message": message})),
                Reply::ErrorObject(e) => Err(e),
                Reply::Default => match early.take() {
                    Some(r) => r,
                    None => default_reply_async(&rpc, &method, &params).await,
                },
                Reply::Delay(..) => unreachable!(),
            };
            let frame = match body {
                Ok(result) => json!({"jsonrpc": "2.0", "id": req["id"], "result": result}),
                Err(error) => json!({"jsonrpc": "2.0", "id": req["id"], "error": error}),
            };
            if rpc.killed_generation.load(Ordering::SeqCst) == generation {
                return; // lightningd did the work, but the caller is dead: nobody reads it
            }
            let mut bytes = serde_json::to_vec(&frame).expect("json");
            bytes.extend_from_slice(b"\n\n");
            if stream.write_all(&bytes).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// [`default_reply`], plus what needs waiting (`waitblockheight`) and the notifications the
/// call makes lightningd send.
async fn default_reply_async(rpc: &RpcState, method: &str, params: &Value) -> Result<Value, Value> {
    if method == "waitblockheight" {
        // rpc/waitblockheight.ok.json, rpc/waitblockheight.err-timeout.json
        let Some(want) = param(params, "blockheight", 0).and_then(Value::as_u64) else {
            return Err(json!({"code": -32602, "message": "missing required parameter: blockheight"}));
        };
        let secs = param(params, "timeout", 1).and_then(Value::as_u64).unwrap_or(60);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let notified = rpc.height_notify.notified();
            if u64::from(rpc.height()) >= want {
                return Ok(json!({"blockheight": rpc.height()}));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(json!({"code": 2000, "message": "Timed out."}));
            }
        }
    }
    let mut notes = vec![];
    let r = default_reply(rpc, method, params, &mut notes);
    for (t, p) in notes {
        send_notification(rpc, &t, p).await;
    }
    r
}

fn param<'a>(params: &'a Value, name: &str, pos: usize) -> Option<&'a Value> {
    match params {
        Value::Object(m) => m.get(name),
        Value::Array(a) => a.get(pos),
        _ => None,
    }
}

fn fixture_result(rel: &str) -> Value {
    fixture(rel)["result"].clone()
}

/// A `sat` / `sat_or_all` parameter: an integer, `"<n>"`, `"<n>sat"`, `"<n>000msat"`.
fn parse_sat(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let s = v.as_str()?;
    if let Some(m) = s.strip_suffix("msat") {
        let m: u64 = m.parse().ok()?;
        return m.is_multiple_of(1000).then_some(m / 1000);
    }
    s.strip_suffix("sat").unwrap_or(s).parse().ok()
}

/// An `msat` parameter: an integer, `"<n>"`, `"<n>msat"`, `"<n>sat"`.
fn parse_msat(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let s = v.as_str()?;
    if let Some(m) = s.strip_suffix("msat") {
        return m.parse().ok();
    }
    if let Some(m) = s.strip_suffix("sat") {
        return m.parse::<u64>().ok().map(|n| n * 1000);
    }
    s.parse().ok()
}

fn is_scid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('x').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

const BIT_NAMES: [(u32, &str, &str); 4] = [
    (12, "static_remotekey/even", "option_static_remotekey"),
    (22, "anchors/even", "option_anchors"),
    (46, "scid_alias/even", "option_scid_alias"),
    (50, "zeroconf/even", "option_zeroconf"),
];

fn channel_type(bits: &[u32]) -> Value {
    let names: Vec<&str> = bits.iter().filter_map(|b| BIT_NAMES.iter().find(|(n, ..)| n == b).map(|x| x.1)).collect();
    json!({"bits": bits, "names": names})
}

/// One `listpeerchannels` entry, shaped like `rpc/listpeerchannels.ok-awaiting-lockin.json`
/// (opener local, before lockin: no `short_channel_id`, only `alias.local`) and, once locked
/// in, like `...ok-one-peer.json` / `...ok-zeroconf-unconfirmed.json` (zero-conf: NORMAL
/// without `short_channel_id` until mined).
fn render_channel(our_id: &PublicKey, ch: &Channel, connected: bool, height: u32) -> Value {
    let mut c = fixture_result("rpc/listpeerchannels.ok-awaiting-lockin.json")["channels"][0].clone();
    let total = ch.amount_sat * 1000;
    let to_us = total.saturating_sub(ch.push_msat);
    let normal = ch.state == "CHANNELD_NORMAL";
    let scid = ch.scid(height);
    let o = c.as_object_mut().expect("channel object");
    o.insert("peer_id".into(), json!(ch.peer_id));
    o.insert("peer_connected".into(), json!(connected));
    if connected {
        o.insert("reestablished".into(), json!(true));
        o.insert("owner".into(), json!("channeld"));
    } else {
        o.remove("reestablished");
        o.remove("owner");
    }
    o.insert("channel_type".into(), channel_type(&ch.bits));
    let local_update = json!({"htlc_minimum_msat": 0, "htlc_maximum_msat": total / 100 * 99,
        "cltv_expiry_delta": 6, "fee_base_msat": 1, "fee_proportional_millionths": 10});
    let mut updates = json!({"local": local_update});
    if normal && scid.is_some() {
        let mut remote = updates["local"].clone();
        remote["htlc_maximum_msat"] = json!(total - ch.their_reserve_msat);
        updates["remote"] = remote;
    }
    o.insert("updates".into(), updates);
    o.insert("state".into(), json!(ch.state));
    // rpc/listpeerchannels.ok-routed-out.json: forwards count like any payment.
    o.insert("in_payments_fulfilled".into(), json!(ch.payments_fulfilled));
    o.insert("out_payments_fulfilled".into(), json!(0));
    match &scid {
        Some(s) => {
            o.insert("short_channel_id".into(), json!(s));
        }
        None => {
            o.remove("short_channel_id");
        }
    }
    o.insert("direction".into(), json!(u8::from(our_id.to_string() > ch.peer_id)));
    o.insert("channel_id".into(), json!(ch.channel_id));
    o.insert("funding_txid".into(), json!(ch.funding_txid));
    o.insert("funding_outnum".into(), json!(ch.outnum));
    o.insert("private".into(), json!(ch.private));
    o.insert("opener".into(), json!("local"));
    let mut alias = json!({"local": ch.alias_local});
    if normal {
        alias["remote"] = json!(ch.alias_remote);
    }
    o.insert("alias".into(), alias);
    let mut feats = vec!["option_static_remotekey", "option_anchors"];
    if ch.bits.contains(&50) {
        feats.push("option_zeroconf");
    }
    if ch.bits.contains(&46) {
        feats.push("option_scid_alias");
    }
    o.insert("features".into(), json!(feats));
    o.insert(
        "funding".into(),
        json!({"local_funds_msat": total, "remote_funds_msat": 0, "pushed_msat": ch.push_msat, "withheld": false}),
    );
    for k in ["to_us_msat", "min_to_us_msat", "max_to_us_msat"] {
        o.insert(k.into(), json!(to_us));
    }
    o.insert("total_msat".into(), json!(total));
    o.insert("their_reserve_msat".into(), json!(ch.their_reserve_msat));
    o.insert("our_reserve_msat".into(), json!(ch.our_reserve_msat));
    // The recorded channels: spendable = to_us - our reserve - 11,282 sat of commitment fee
    // and anchors; receivable = their side - their reserve.
    o.insert("spendable_msat".into(), json!(to_us.saturating_sub(ch.our_reserve_msat + 11_282_000)));
    o.insert("receivable_msat".into(), json!(ch.push_msat.saturating_sub(ch.their_reserve_msat)));
    o.insert("maximum_htlc_out_msat".into(), json!(total / 100 * 99));
    o.insert("state_changes".into(), json!(ch.state_changes));
    let status = if normal {
        "CHANNELD_NORMAL:Channel ready for use.".to_string()
    } else {
        format!(
            "CHANNELD_AWAITING_LOCKIN:Funding needs {} more confirmations to be ready.",
            ch.mindepth.saturating_sub(ch.depth(height))
        )
    };
    o.insert("status".into(), json!([status]));
    o.insert("htlcs".into(), json!([]));
    c
}

/// `fundchannel` (`rpc/fundchannel.ok.json`, `...ok-zeroconf.json`, `...err-not-connected.json`;
/// params as in `doc/schemas/fundchannel.json`): a fresh funding transaction (a real one, so
/// `txid` is its id and `channel_id` is derived from it as CLN does), and a channel recorded
/// for `listpeerchannels`. A peer not connected is connected first when reachable, as
/// lightningd does with an address it knows.
fn fundchannel(rpc: &RpcState, params: &Value, notes: &mut Vec<(String, Value)>) -> Result<Value, Value> {
    let bad = |name: &str, what: &str, v: &Value| {
        Err(json!({"code": -32602, "message": format!("{name}: should be {what}: invalid token '{v}'")}))
    };
    let Some(idv) = param(params, "id", 0) else {
        return Err(json!({"code": -32602, "message": "missing required parameter: id"}));
    };
    let Some(id) = idv.as_str().filter(|s| PublicKey::from_str(s).is_ok()).map(str::to_owned) else {
        return bad("id", "a public key", idv);
    };
    let Some(amv) = param(params, "amount", 1) else {
        return Err(json!({"code": -32602, "message": "missing required parameter: amount"}));
    };
    let amount = if amv == "all" {
        let funds = fixture_result("rpc/listfunds.ok.json");
        let total: u64 =
            funds["outputs"].as_array().into_iter().flatten().filter_map(|o| o["amount_msat"].as_u64()).sum();
        (total / 1000).saturating_sub(25_000 + 7_722)
    } else {
        match parse_sat(amv) {
            Some(a) => a,
            None => return bad("amount", "a satoshi amount", amv),
        }
    };
    let announce = match param(params, "announce", 3) {
        None | Some(Value::Null) => true,
        Some(v) => match v.as_bool() {
            Some(b) => b,
            None => return bad("announce", "'true' or 'false'", v),
        },
    };
    let push_msat = match param(params, "push_msat", 5) {
        None | Some(Value::Null) => 0,
        Some(v) => match parse_msat(v) {
            Some(m) => m,
            None => return bad("push_msat", "a millisatoshi amount", v),
        },
    };
    let default_depth =
        rpc.configs.lock().unwrap().get("funding-confirms").and_then(|c| c["value_int"].as_u64()).unwrap_or(1) as u32;
    let mindepth = match param(params, "mindepth", 10) {
        None | Some(Value::Null) => default_depth,
        Some(v) => match v.as_u64() {
            Some(d) => d as u32,
            None => return bad("mindepth", "an unsigned 32 bit integer", v),
        },
    };
    let reserve_sat = match param(params, "reserve", 11) {
        None | Some(Value::Null) => None,
        Some(v) => match parse_sat(v) {
            Some(r) => Some(r),
            None => return bad("reserve", "a satoshi amount", v),
        },
    };

    if !rpc.is_connected(&id) {
        if !rpc.reachable.lock().unwrap().contains(&id) {
            return Err(json!({"code": 400, "message": "Unable to connect, no address known for peer",
                "data": {"id": id, "method": "connect"}}));
        }
        rpc.connected.lock().unwrap().insert(id.clone());
        rpc.known_peers.lock().unwrap().insert(id.clone());
        notes.push((
            "connect".into(),
            json!({"id": id, "direction": "out", "address": {"type": "ipv4", "address": "127.0.0.1", "port": 33643}}),
        ));
    }

    // A real (unsigned) funding transaction, fresh per call.
    let n = rpc.fundings.fetch_add(1, Ordering::SeqCst);
    let prev =
        bitcoin::Txid::from_byte_array(sha256::Hash::hash(format!("standin-utxo-{n}").as_bytes()).to_byte_array());
    let wsh = bitcoin::WScriptHash::from_byte_array(
        sha256::Hash::hash(format!("standin-2of2-{id}-{n}").as_bytes()).to_byte_array(),
    );
    let tx = bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::from_height(rpc.height()).expect("height"),
        input: vec![bitcoin::TxIn {
            previous_output: bitcoin::OutPoint { txid: prev, vout: 0 },
            script_sig: bitcoin::ScriptBuf::new(),
            sequence: bitcoin::Sequence(0xffff_fffd),
            witness: bitcoin::Witness::new(),
        }],
        output: vec![bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(amount),
            script_pubkey: bitcoin::ScriptBuf::new_p2wsh(&wsh),
        }],
    };
    let txid = tx.compute_txid();
    let outnum = 0u32;
    // The wallet's change, listed at once, unconfirmed (onchain/05-fundchannel-cpfp): the
    // output a child can spend to pay for its parent.
    rpc.wallet.lock().unwrap().add_change(bitcoin::OutPoint { txid, vout: outnum + 1 }, 1_000_000);
    // derive_channel_id: the txid's bytes (internal order), last two XORed with the outnum.
    let mut cid = txid.to_byte_array();
    cid[30] ^= (outnum >> 8) as u8;
    cid[31] ^= (outnum & 0xff) as u8;
    let channel_id = hex::encode(cid);

    let mut bits = vec![12, 22];
    if !announce {
        bits.push(46);
    }
    if mindepth == 0 {
        bits.push(50);
    }
    let alias = |tag: &str| {
        let h = sha256::Hash::hash(format!("{tag}-{channel_id}").as_bytes()).to_byte_array();
        let n = |i: usize, len: usize| h[i..i + len].iter().fold(0u64, |a, b| a << 8 | u64::from(*b));
        format!("{}x{}x{}", n(0, 3), n(3, 3), n(6, 2))
    };
    let total_msat = amount * 1000;
    // The recorded opens: our reserve is 1% (the peer's choice); theirs is ours to set
    // (`reserve`, default 1%) but never below the 546 sat dust limit (reserve=0 -> 546000).
    let their_reserve_msat = reserve_sat.map_or(total_msat / 100, |r| r * 1000).max(546_000);
    let our_reserve_msat = (total_msat / 100).max(546_000);
    let ts = timestamp();
    rpc.channels.lock().unwrap().push(Channel {
        peer_id: id.clone(),
        channel_id: channel_id.clone(),
        funding_txid: txid.to_string(),
        outnum,
        amount_sat: amount,
        push_msat,
        private: !announce,
        mindepth,
        our_reserve_msat,
        their_reserve_msat,
        bits: bits.clone(),
        confirmed: None,
        state: "CHANNELD_AWAITING_LOCKIN".into(),
        state_changes: vec![],
        alias_local: alias("local"),
        alias_remote: alias("remote"),
        payments_fulfilled: 0,
    });
    // notifications/channel_state_changed.none-to-CHANNELD_AWAITING_LOCKIN.cause-user.json
    notes.push((
        "channel_state_changed".into(),
        json!({"peer_id": id, "channel_id": channel_id, "timestamp": ts,
            "new_state": "CHANNELD_AWAITING_LOCKIN", "cause": "user", "message": "new channel opened"}),
    ));
    notes.extend(rpc.advance_channels());
    Ok(json!({
        "tx": bitcoin::consensus::encode::serialize_hex(&tx),
        "txid": txid.to_string(),
        "channel_id": channel_id,
        "channel_type": channel_type(&bits),
        "outnum": outnum
    }))
}

/// Answers shaped like CLN v26.06.6's (fixtures), or by `doc/schemas` where nothing was
/// recorded. `notes`: notifications lightningd sends because of the call.
fn default_reply(
    rpc: &RpcState,
    method: &str,
    params: &Value,
    notes: &mut Vec<(String, Value)>,
) -> Result<Value, Value> {
    let key = &rpc.node_key;
    let node_id = rpc.node_id;
    match method {
        "getinfo" => {
            let mut r = fixture_result("rpc/getinfo.ok.json");
            r["id"] = json!(node_id.to_string());
            r["blockheight"] = json!(rpc.height());
            r["num_peers"] = json!(rpc.connected.lock().unwrap().len());
            let chans = rpc.channels.lock().unwrap();
            r["num_pending_channels"] = json!(chans.iter().filter(|c| c.state == "CHANNELD_AWAITING_LOCKIN").count());
            r["num_active_channels"] = json!(chans.iter().filter(|c| c.state == "CHANNELD_NORMAL").count());
            Ok(r)
        }
        "listconfigs" => {
            let configs = rpc.configs.lock().unwrap();
            match param(params, "config", 0).and_then(Value::as_str) {
                None => Ok(json!({"configs": Value::Object(configs.clone())})),
                Some(name) => match configs.get(name) {
                    Some(entry) => Ok(json!({"configs": {name: entry}})),
                    None => Err(
                        json!({"code": -32602, "message": format!("config: Unknown config option: invalid token '\"{name}\"'")}),
                    ),
                },
            }
        }
        "feerates" => match param(params, "style", 0).and_then(Value::as_str) {
            Some("perkw") => Ok(fixture_result("rpc/feerates.ok-perkw.json")),
            Some("perkb") => {
                let mut r = fixture_result("rpc/feerates.ok-perkw.json");
                let mut perkw = r["perkw"].take();
                for (k, v) in perkw.as_object_mut().unwrap().iter_mut() {
                    if let Some(n) = v.as_u64() {
                        *v = json!(n * 4);
                    } else if k == "estimates" {
                        for e in v.as_array_mut().unwrap() {
                            e["feerate"] = json!(e["feerate"].as_u64().unwrap() * 4);
                            e["smoothed_feerate"] = json!(e["smoothed_feerate"].as_u64().unwrap() * 4);
                        }
                    }
                }
                Ok(json!({"perkb": perkw, "onchain_fee_estimates": r["onchain_fee_estimates"]}))
            }
            other => Err(
                json!({"code": -32602, "message": format!("'style' should be 'perkw' or 'perkb', not '{}'", other.map(|v| format!("\"{v}\"")).unwrap_or_default())}),
            ),
        },
        "listfunds" => {
            let mut r = fixture_result("rpc/listfunds.ok.json");
            let rows = rpc.wallet.lock().unwrap().listfunds_rows(rpc.height());
            if let Some(outs) = r["outputs"].as_array_mut() {
                outs.extend(rows);
            }
            Ok(r)
        }
        // The on-chain wallet (standin_chain.rs).
        "newaddr" => {
            let kind = param(params, "addresstype", 0).and_then(Value::as_str).unwrap_or("p2tr");
            rpc.wallet.lock().unwrap().new_address(kind)
        }
        "reserveinputs" => rpc.wallet.lock().unwrap().reserve(params, rpc.height()),
        "unreserveinputs" => rpc.wallet.lock().unwrap().unreserve(params, rpc.height()),
        "utxopsbt" => rpc.wallet.lock().unwrap().utxopsbt(params, rpc.height()),
        "addpsbtoutput" => chain::Wallet::addpsbtoutput(params),
        "signpsbt" => chain::Wallet::signpsbt(params),
        "sendpsbt" => rpc.wallet.lock().unwrap().sendpsbt(params),
        "withdraw" => rpc.wallet.lock().unwrap().withdraw(params),
        "sendcustommsg" => {
            let node = param(params, "node_id", 0).and_then(Value::as_str).unwrap_or("");
            let msg = param(params, "msg", 1).and_then(Value::as_str).unwrap_or("");
            let typ = msg.get(..4).and_then(|t| u16::from_str_radix(t, 16).ok()).unwrap_or(0);
            if typ < 32768 && typ % 2 == 0 && typ != 0 {
                return Err(
                    json!({"code": -32600, "message": format!("Cannot send messages of type {typ}. It is not possible to send messages that have a type managed internally since that might cause issues with the internal state tracking.")}),
                );
            }
            if !rpc.known_peers.lock().unwrap().contains(node) {
                return Err(json!({"code": -32600, "message": format!("No such peer: {node}")}));
            }
            if !rpc.connected.lock().unwrap().contains(node) {
                return Err(json!({"code": -32600, "message": "Peer is not connected"}));
            }
            let routed = rpc.sent_routes.lock().unwrap().get(node).cloned();
            if let Some(route) = routed {
                let _ = route.send(msg.to_string());
            } else if let Some(sink) = rpc.sent_sink.lock().unwrap().as_ref() {
                let _ = sink.send((node.to_string(), msg.to_string()));
            } else {
                rpc.sent.lock().unwrap().push((node.to_string(), msg.to_string()));
                rpc.sent_notify.notify_waiters();
            }
            Ok(fixture_result("rpc/sendcustommsg.ok.json"))
        }
        "signinvoice" => {
            let inv = param(params, "invstring", 0).and_then(Value::as_str).unwrap_or("");
            let parsed: Bolt11Invoice = match inv.parse() {
                Ok(i) => i,
                Err(_) => {
                    return Err(
                        json!({"code": -32602, "message": format!("Unparsable invoice '{inv}': Bad bech32 string")}),
                    );
                }
            };
            let raw = parsed.into_signed_raw().into_parts().0;
            let secp = Secp256k1::new();
            let signed = raw.sign::<_, ()>(|m| Ok(secp.sign_ecdsa_recoverable(m, key))).expect("sign");
            Ok(json!({"bolt11": Bolt11Invoice::from_signed(signed).expect("valid").to_string()}))
        }
        "listpeers" => {
            let id = param(params, "id", 0).and_then(Value::as_str);
            let known = rpc.known_peers.lock().unwrap().clone();
            let connected = rpc.connected.lock().unwrap().clone();
            let features = rpc.peer_features.lock().unwrap().clone();
            let chans = rpc.channels.lock().unwrap().clone();
            let peers: Vec<Value> = known
                .iter()
                .filter(|p| id.is_none_or(|want| want == p.as_str()))
                .map(|p| {
                    json!({
                        "id": p, "connected": connected.contains(p),
                        "num_channels": chans.iter().filter(|c| &c.peer_id == p).count(),
                        "netaddr": ["127.0.0.1:33643"],
                        "features": features.get(p).cloned().unwrap_or_else(|| "800898880a8a59a1".into())
                    })
                })
                .collect();
            Ok(json!({"peers": peers}))
        }
        // rpc/connect.ok.json, connect.ok-already-connected.json, connect.err-no-address-known.json,
        // connect.err-connection-refused.json (when a host was given); notifications/connect.out.json.
        "connect" => {
            let raw = param(params, "id", 0).and_then(Value::as_str).unwrap_or("");
            let (id, mut host, mut port) = match raw.split_once('@') {
                None => (raw, None, None),
                Some((id, addr)) => match addr.rsplit_once(':') {
                    Some((h, p)) if p.parse::<u16>().is_ok() => (id, Some(h.to_string()), p.parse::<u16>().ok()),
                    _ => (id, Some(addr.to_string()), None),
                },
            };
            if let Some(h) = param(params, "host", 1).and_then(Value::as_str) {
                host = Some(h.to_string());
            }
            if let Some(p) = param(params, "port", 2).and_then(Value::as_u64) {
                port = Some(p as u16);
            }
            if PublicKey::from_str(id).is_err() {
                return Err(
                    json!({"code": -32602, "message": format!("id: should be a node id: invalid token '\"{raw}\"'")}),
                );
            }
            let port = port.unwrap_or(if host.is_some() { 9735 } else { 33643 });
            let addr = host.clone().unwrap_or_else(|| "127.0.0.1".into());
            let kind = if addr.parse::<std::net::Ipv4Addr>().is_ok() {
                "ipv4"
            } else if addr.parse::<std::net::Ipv6Addr>().is_ok() {
                "ipv6"
            } else {
                "dns"
            };
            let address = json!({"type": kind, "address": addr, "port": port});
            let features =
                rpc.peer_features.lock().unwrap().get(id).cloned().unwrap_or_else(|| "800898880a8a59a1".into());
            let ok = json!({"id": id, "features": features, "direction": "out", "address": address});
            if rpc.is_connected(id) {
                return Ok(ok);
            }
            if rpc.reachable.lock().unwrap().contains(id) {
                rpc.connected.lock().unwrap().insert(id.to_string());
                rpc.known_peers.lock().unwrap().insert(id.to_string());
                notes.push(("connect".into(), json!({"id": id, "direction": "out", "address": address})));
                notes.extend(rpc.advance_channels());
                return Ok(ok);
            }
            match host {
                Some(h) => Err(json!({"code": 401,
                    "message": format!("All addresses failed: {h}:{port}: Connection establishment: Connection refused. ")})),
                None => Err(json!({"code": 400, "message": "Unable to connect, no address known for peer"})),
            }
        }
        // rpc/disconnect.ok.json, rpc/disconnect.err-not-connected.json; notifications/disconnect.json
        "disconnect" => {
            let id = param(params, "id", 0).and_then(Value::as_str).unwrap_or("");
            if !rpc.connected.lock().unwrap().remove(id) {
                return Err(json!({"code": -32602, "message": format!("Unknown peer '{id}'")}));
            }
            notes.push(("disconnect".into(), json!({"id": id})));
            Ok(json!({}))
        }
        "fundchannel" => fundchannel(rpc, params, notes),
        // rpc/createrune.*, rpc/checkrune.* (standin_runes.rs).
        "createrune" => rpc.runes.lock().unwrap().create(params),
        "checkrune" => rpc.runes.lock().unwrap().check(params),
        // rpc/close.ok.json: the peer online, a mutual close at once; the channel shuts down.
        "close" => {
            let id = param(params, "id", 0).and_then(Value::as_str).unwrap_or("").to_string();
            let mut chans = rpc.channels.lock().unwrap();
            let Some(ch) = chans.iter_mut().find(|c| c.channel_id == id || c.peer_id == id) else {
                return Err(json!({"code": -32602, "message": format!("id: Short channel ID not active: '{id}'")}));
            };
            let old = std::mem::replace(&mut ch.state, "CLOSINGD_COMPLETE".to_string());
            notes.push((
                "channel_state_changed".into(),
                json!({"peer_id": ch.peer_id, "channel_id": ch.channel_id, "timestamp": timestamp(),
                    "old_state": old, "new_state": "CLOSINGD_COMPLETE", "cause": "user", "message": "Closing complete"}),
            ));
            let mut r = fixture_result("rpc/close.ok.json");
            r["type"] = json!("mutual");
            Ok(r)
        }
        // rpc/listpeerchannels.*.json; filters per doc/schemas/listpeerchannels.json.
        "listpeerchannels" => {
            let id = param(params, "id", 0).filter(|v| !v.is_null());
            let scid = param(params, "short_channel_id", 1).filter(|v| !v.is_null());
            let cid = param(params, "channel_id", 2).filter(|v| !v.is_null());
            if [id, scid, cid].iter().filter(|f| f.is_some()).count() > 1 {
                return Err(
                    json!({"code": -32602, "message": "Cannot specify more than one of id, short_channel_id or channel_id"}),
                );
            }
            if let Some(v) = id
                && v.as_str().is_none_or(|s| PublicKey::from_str(s).is_err())
            {
                return Err(
                    json!({"code": -32602, "message": format!("id: should be a node id: invalid token '{v}'")}),
                );
            }
            if let Some(v) = scid
                && !v.as_str().is_some_and(is_scid)
            {
                return Err(
                    json!({"code": -32602, "message": format!("short_channel_id: should be a short_channel_id of form NxNxN: invalid token '{v}'")}),
                );
            }
            if let Some(v) = cid
                && !v.as_str().is_some_and(|s| s.len() == 64 && is_hex(s))
            {
                return Err(
                    json!({"code": -32602, "message": format!("channel_id: should be a 32 byte hex value: invalid token '{v}'")}),
                );
            }
            let channels: Vec<Value> = rpc
                .render_channels()
                .into_iter()
                .filter(|c| id.is_none_or(|v| c["peer_id"] == *v))
                .filter(|c| scid.is_none_or(|v| c["short_channel_id"] == *v || c["alias"]["local"] == *v))
                .filter(|c| cid.is_none_or(|v| c["channel_id"] == *v))
                .collect();
            Ok(json!({"channels": channels}))
        }
        // rpc/listhtlcs.ok-htlc-held-before-restart.json, rpc/listhtlcs.err-bad-id.json
        "listhtlcs" => {
            let mut rows = rpc.htlc_rows();
            if let Some(v) = param(params, "id", 0).filter(|v| !v.is_null()) {
                let Some(s) = v.as_str().filter(|s| is_scid(s) || (s.len() == 64 && is_hex(s))) else {
                    return Err(
                        json!({"code": -32602, "message": format!("id: must be channel id or short channel id: invalid token '{v}'")}),
                    );
                };
                let scids: Vec<Value> = rpc
                    .render_channels()
                    .into_iter()
                    .filter(|c| c["channel_id"] == s)
                    .flat_map(|c| [c["short_channel_id"].clone(), c["alias"]["local"].clone()])
                    .collect();
                rows.retain(|r| r["short_channel_id"] == s || scids.contains(&r["short_channel_id"]));
            }
            Ok(json!({"htlcs": rows}))
        }
        other => Err(json!({"code": -32601, "message": format!("Unknown command '{other}'")})),
    }
}
