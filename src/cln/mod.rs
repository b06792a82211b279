//! The Core Lightning side: plugin manifest, `init`, the `custommsg` hook, notifications
//! and the operator's RPC methods. The only module that knows cln-plugin.

pub mod hooks;
mod operator;
pub mod rpc;
pub mod stdio;
pub mod wallet;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use bitcoin::secp256k1::PublicKey;
use cln_plugin::options::{self, ConfigOption};
use cln_plugin::{Builder, FeatureBitsKind, HookBuilder, HookFilter, Plugin, RpcMethodBuilder};
use serde_json::{Value, json};

use crate::clock::{OsEntropy, SystemClock};
use crate::config::OPEN_ALLOWANCE_BLOCKS;
use crate::config::{Config, OPTIONS, OptKind, OptValue};
use crate::lifecycle::htlc::HoldRules;
use crate::lifecycle::plan::Deadlines;
use crate::lifecycle::{Engine, LifecycleConfig};
use crate::limits::{Cost, PeerLimiter};
use crate::lsps0::frame::{self, Inbound, LSPS_FEATURE_BIT, LSPS0_MESSAGE_TYPE};
use crate::lsps0::jsonrpc::RpcError;
use crate::lsps0::ser::{network_from_cln, read_pubkey};
use crate::lsps1::service::{NodeInfo, Service};
use crate::ports::NodeApi;
use crate::store::Store;
use crate::telemetry::Telemetry;
use rpc::ClnNode;

pub type Lsps1Service = Service<ClnNode, SystemClock, OsEntropy>;
pub type Lifecycle = Engine<ClnNode, SystemClock>;

#[derive(Clone)]
pub struct State {
    service: Arc<Lsps1Service>,
    engine: Lifecycle,
    limiter: PeerLimiter,
    close_guard: hooks::CloseGuard,
    /// The operator's running counts (`/metrics`, `lsps1-status`).
    telemetry: Arc<Telemetry>,
    /// Benchmark only (`LSPS1_HTLC_HOOK_FLOOR=1`, benches/suite/hook.rs): the hook answers
    /// `continue` to everything, to measure the plugin protocol's own round trip.
    htlc_floor: bool,
    /// Peers' ids as parsed: a compressed key costs a square root to parse (a tenth of an
    /// LSPS request's CPU time), and a client sends many requests.
    peer_keys: Arc<Mutex<HashMap<String, PublicKey>>>,
}

/// Most peer ids kept parsed; past it the cache starts over.
const MAX_PEER_KEYS: usize = 4096;

impl State {
    /// `peer_id` of a hook call, parsed ([`read_pubkey`]) once per peer.
    fn peer_key(&self, id: &str) -> Result<PublicKey, &'static str> {
        if let Some(k) = self.peer_keys.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(*k);
        }
        let key = read_pubkey(id)?;
        let mut keys = self.peer_keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= MAX_PEER_KEYS {
            keys.clear();
        }
        keys.insert(id.to_string(), key);
        Ok(key)
    }
}

/// Environment switch of [`State::htlc_floor`]. Never set it on a node that sells channels:
/// paid orders would be failed back.
pub const HTLC_FLOOR_ENV: &str = "LSPS1_HTLC_HOOK_FLOOR";

/// The custom notification on every order transition.
pub const ORDER_TOPIC: &str = "lsps1_order_state_changed";

/// The custom notification when a sold channel's lease ends (its protection is lifted).
pub const LEASE_TOPIC: &str = "lsps1_lease_ended";

/// How often fee estimates and wallet funds are refreshed, and expired orders swept.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(30);

/// Environment switch for the feature bit, read before the manifest is sent.
pub const FEATURE_BIT_ENV: &str = "LSPS1_FEATURE_BIT";

/// Run the plugin until lightningd closes its pipes.
pub async fn run() -> Result<()> {
    let advertise = feature_bit_at_manifest(std::env::var(FEATURE_BIT_ENV).ok().as_deref(), Path::new("."));
    let (stdin, stdout) = stdio::open();
    let mut builder = Builder::new(stdin, stdout);
    for spec in OPTIONS {
        builder = match spec.kind {
            OptKind::Int(d) => builder.option(ConfigOption::new_i64_with_default(spec.name, d, spec.description)),
            OptKind::Bool(d) => builder.option(ConfigOption::new_bool_with_default(spec.name, d, spec.description)),
            OptKind::Str => builder.option(ConfigOption::new_str_no_default(spec.name, spec.description)),
            OptKind::Multi => builder.option(ConfigOption::new_str_arr_no_default(spec.name, spec.description)),
        };
    }
    if advertise {
        // Ruling 18, T-19: `init` and `node_announcement`.
        builder = builder
            .featurebits(FeatureBitsKind::Init, frame::feature_bit_hex(LSPS_FEATURE_BIT))
            .featurebits(FeatureBitsKind::Node, frame::feature_bit_hex(LSPS_FEATURE_BIT));
    }
    let builder = builder
        .hook_from_builder(HookBuilder::new("custommsg", on_custommsg).filters(vec![HookFilter::Int(i64::from(LSPS0_MESSAGE_TYPE))]))
        // Hold, settle or refund order payments (ruling 12). No filters: lightningd
        // refuses them on htlc_accepted (fixtures `plugin.err-start-htlc_accepted-with-filters`).
        .hook("htlc_accepted", hooks::on_htlc_accepted)
        // Lease protection (N-10): only `close` reaches the plugin.
        .hook_from_builder(
            HookBuilder::new("rpc_command", hooks::on_rpc_command).filters(vec![HookFilter::Str("close".into())]),
        )
        .notification(cln_plugin::messages::NotificationTopic::new(ORDER_TOPIC))
        .subscribe("block_added", on_block_added)
        .subscribe("connect", hooks::on_connect)
        .subscribe("channel_state_changed", hooks::on_channel_state_changed)
        .notification(cln_plugin::messages::NotificationTopic::new(LEASE_TOPIC))
        .rpcmethod_from_builder(
            RpcMethodBuilder::new("lsps1-status", on_status)
                .description("The LSP at a glance: orders by state, payments held now, revenue, capacity sold, leases, refunds, refused requests, wallet funds, recent errors; with days, that many days of daily totals")
                .usage("[days]"),
        )
        .rpcmethod_from_builder(
            RpcMethodBuilder::new("lsps1-listorders", on_listorders)
                .description("List LSPS1 orders, newest first, optionally by state (CREATED, COMPLETED, FAILED or a phase), peer, creation time (since, until), count, offset and payment (onchain, paid-onchain, refunds)")
                .usage("[state] [peer_id] [since] [limit] [payment] [until] [offset] [id_prefix]"),
        )
        .rpcmethod_from_builder(
            RpcMethodBuilder::new("lsps1-getorder", on_getorder)
                .description("Show one LSPS1 order in full, with its event log, its lease and what can be done with it")
                .usage("order_id"),
        )
        .rpcmethod_from_builder(
            RpcMethodBuilder::new("lsps1-listheld", on_listheld)
                .description("List the orders whose payment is held right now, earliest CLTV expiry first, with the blocks left before each is refunded")
                .usage(""),
        )
        .rpcmethod_from_builder(
            RpcMethodBuilder::new("lsps1-listleases", on_listleases)
                .description("List leases ending within within_blocks (default 4320, a month) and those ended, with what the lease-end policy does with each and why; nothing is closed by listing")
                .usage("[within_blocks]"),
        )
        .rpcmethod_from_builder(
            RpcMethodBuilder::new("lsps1-cancelorder", on_cancelorder)
                .description("Cancel an unpaid or paid-but-not-yet-opening LSPS1 order: its held payment is failed back (refunded)")
                .usage("order_id"),
        )
        .rpcmethod_from_builder(
            RpcMethodBuilder::new("lsps1-allowclose", on_allowclose)
                .description("Allow closing the leased channel of an LSPS1 order before its lease ends, for the next 10 minutes")
                .usage("order_id"),
        );

    let Some(cp) = builder.configure().await? else {
        return Ok(()); // lightningd --help
    };

    let mut values = HashMap::new();
    for spec in OPTIONS {
        if let Ok(Some(v)) = cp.option_str(spec.name) {
            values.insert(
                spec.name.to_string(),
                match v {
                    options::Value::Integer(i) => OptValue::Int(i),
                    options::Value::Boolean(b) => OptValue::Bool(b),
                    options::Value::String(s) => OptValue::Str(s),
                    options::Value::StringArray(a) => OptValue::StrList(a),
                    options::Value::IntegerArray(a) => OptValue::StrList(a.iter().map(i64::to_string).collect()),
                },
            );
        }
    }
    let cfg = match Config::from_values(&values) {
        Ok(c) => c,
        Err(e) => return cp.disable(&format!("cln-lsps1 disabled: {e}")).await,
    };
    let conf = cp.configuration();
    let Some(network) = network_from_cln(&conf.network) else {
        return cp.disable(&format!("cln-lsps1 disabled: unknown network '{}'", conf.network)).await;
    };
    let lightning_dir = PathBuf::from(&conf.lightning_dir);
    let node = ClnNode::new(lightning_dir.join(&conf.rpc_file));

    // Ruling 19: CLN's own LSPS service answers 37913 too; two answers per request
    // would confuse every client.
    let lsps_service = match cln_lsps_service_enabled(&node).await {
        Ok(on) => on,
        Err(e) => {
            return cp
                .disable(&format!(
                    "cln-lsps1 disabled: cannot tell whether Core Lightning's own LSPS service is enabled ({e}); \
                     refusing to risk two LSPS services answering the same messages"
                ))
                .await;
        }
    };
    if lsps_service {
        return cp
            .disable(
                "cln-lsps1 disabled: Core Lightning's own LSPS service (experimental-lsps2-service) is enabled on this node \
                 and also answers every LSPS message (type 37913), so clients would get two answers to each request. \
                 Run one LSPS service per node: remove experimental-lsps2-service or this plugin.",
            )
            .await;
    }

    let getinfo = match node.call("getinfo", json!({})).await {
        Ok(v) => v,
        Err(e) => return cp.disable(&format!("cln-lsps1 disabled: cannot read the node's id: {e}")).await,
    };
    let Some(node_id) = getinfo.get("id").and_then(Value::as_str).and_then(|s| read_pubkey(s).ok()) else {
        return cp.disable("cln-lsps1 disabled: getinfo returned no node id").await;
    };
    let height = getinfo.get("blockheight").and_then(Value::as_u64).and_then(|h| u32::try_from(h).ok()).unwrap_or(0);
    let emergency_reserve_sat = emergency_reserve_sat(&node).await;

    let (store, store_shown) = match open_store(&cfg, &lightning_dir, &node_id.to_string()).await {
        Ok(s) => s,
        Err(e) => return cp.disable(&format!("cln-lsps1 disabled: {e}")).await,
    };

    let advertised = conf.feature_set.get("init").is_some_and(|f| frame::has_feature_bit(f, LSPS_FEATURE_BIT));
    if !cfg.feature_bit && advertise {
        log::warn!(
            "lsps1-feature-bit=false, but feature bit 729 was already advertised: lightningd fixes plugin feature bits \
             before options are known. Put lsps1-feature-bit=false in the config file or set {FEATURE_BIT_ENV}=0."
        );
    }

    let limiter = PeerLimiter::new(cfg.peer_limits);
    let telemetry = Arc::new(Telemetry::new(crate::clock::Clock::now_ms(&SystemClock)));
    let admin_cfg = cfg.admin.clone();
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    let lifecycle_cfg = LifecycleConfig {
        rules: HoldRules { safety_margin_blocks: cfg.cltv_safety_margin, open_allowance_blocks: OPEN_ALLOWANCE_BLOCKS },
        deadlines: Deadlines {
            safety_margin_blocks: cfg.cltv_safety_margin,
            open_deadline_ms: i64::try_from(cfg.open_deadline_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            open_allowance_blocks: OPEN_ALLOWANCE_BLOCKS,
        },
        mpp_timeout: Duration::from_secs(cfg.mpp_timeout_secs),
        emergency_reserve_sat,
        zero_reserve: cfg.options.supports_zero_channel_reserve,
        onchain_open_deadline: Duration::from_secs(cfg.onchain.expiry_secs),
        onchain: cfg.onchain,
        funding_weight: cfg.pricing.funding_weight,
        lease_policy: cfg.lease_policy,
        ..LifecycleConfig::default()
    };
    let engine = Engine::new(store.clone(), node.clone(), SystemClock, lifecycle_cfg, height, Some(events_tx.clone()));
    engine.attach_telemetry(telemetry.clone());
    // Ruling 17: settle what a stop left half done before lightningd replays anything.
    if let Err(e) = engine.reconcile_at_start().await {
        // The drivers look again once running; serving must not wait on it.
        log::warn!("Cannot reconcile orders at start: {e}");
    }
    let service = Arc::new(
        Service::new(
            cfg,
            NodeInfo { id: node_id, network, emergency_reserve_sat },
            store,
            node,
            SystemClock,
            OsEntropy,
        )
        .with_events(events_tx)
        .with_telemetry(telemetry.clone()),
    );
    if let Err(e) = service.refresh_market().await {
        log::warn!("Cannot read fee estimates or wallet funds yet: {e}");
    }
    let htlc_floor = std::env::var(HTLC_FLOOR_ENV).is_ok_and(|v| v == "1");
    if htlc_floor {
        log::warn!(
            "{HTLC_FLOOR_ENV}=1: htlc_accepted answers continue to every HTLC (benchmark mode); paid orders fail back"
        );
    }
    let state = State {
        service: service.clone(),
        engine: engine.clone(),
        limiter,
        close_guard: hooks::CloseGuard::default(),
        telemetry: telemetry.clone(),
        htlc_floor,
        peer_keys: Arc::default(),
    };
    let plugin = cp.start(state.clone()).await?;
    {
        let plugin = plugin.clone();
        tokio::spawn(async move {
            while let Some(ev) = events_rx.recv().await {
                // Wrapped under the topic by cln-plugin, as pyln-testing reads it (tests/fixtures/cln-v26.06.6/README.md).
                if let Err(e) = plugin.send_custom_notification(ORDER_TOPIC.to_string(), ev.to_json()).await {
                    log::debug!("Cannot send {ORDER_TOPIC}: {e}");
                }
            }
        });
    }
    engine.resume().await;
    // Outputs that arrived, and refunds left unsent, while the plugin was down.
    engine.chain_pass().await;
    // The REST API, off unless lsps1-rest-bind is set.
    let rest_cfg = service.config().rest.clone();
    if !rest_cfg.binds.is_empty() {
        let rest_state =
            Arc::new(crate::rest::RestState::new(service.clone(), rest_cfg).with_telemetry(telemetry.clone()));
        let bound = crate::rest::spawn(rest_state).await;
        if bound.is_empty() {
            log::warn!("REST API not available: no address could be bound; LSPS1 over custom messages is unaffected");
        }
    }
    // The operator's console, off unless lsps1-admin-bind is set.
    if admin_cfg.bind.is_some() && crate::console::spawn(Arc::new(state.clone()), admin_cfg).await.is_none() {
        log::warn!("Operator console not available; lightning-cli lsps1-status and the other commands still work");
    }
    log::info!(
        "cln-lsps1 serving LSPS1 on {} for node {node_id} (store {store_shown}, feature bit 729 {})",
        conf.network,
        if advertised { "advertised" } else { "not advertised" }
    );

    // Refreshes the market when a read found it stale (Service::market_now).
    let refresher = {
        let service = service.clone();
        tokio::spawn(async move {
            loop {
                service.refresh_wanted().notified().await;
                if let Err(e) = service.refresh_if_older(crate::lsps1::service::MARKET_MAX_AGE_MS / 2).await {
                    log::debug!("Market refresh failed: {e}");
                }
            }
        })
    };
    let housekeeping = tokio::spawn(async move {
        let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        tick.tick().await;
        loop {
            tick.tick().await;
            housekeeping(&service, &engine).await;
        }
    });
    let res = plugin.join().await;
    housekeeping.abort();
    refresher.abort();
    res
}

async fn housekeeping(service: &Lsps1Service, engine: &Lifecycle) {
    if let Err(e) = service.refresh_market().await {
        log::debug!("Market refresh failed: {e}");
    }
    engine.housekeeping().await;
}

/// Decide at manifest time whether to advertise bit 729 (ruling 18). lightningd wants
/// feature bits in the manifest, before it tells the plugin its options, so the switch is
/// read from the environment or from lightningd's config files (cwd is the network dir).
pub fn feature_bit_at_manifest(env: Option<&str>, network_dir: &Path) -> bool {
    if let Some(v) = env {
        return !matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "false" | "off" | "no");
    }
    for file in [network_dir.join("config"), network_dir.join("../config")] {
        if let Ok(text) = std::fs::read_to_string(&file) {
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=')
                    && k.trim() == "lsps1-feature-bit"
                    && matches!(v.trim(), "false" | "0")
                {
                    return false;
                }
            }
        }
    }
    true
}

/// Whether CLN's own LSPS service is on (ruling 19). `Err` when lightningd would not
/// say, after a few tries: the caller then refuses to start rather than risk two services.
async fn cln_lsps_service_enabled(node: &ClnNode) -> Result<bool, crate::ports::NodeError> {
    let mut last = None;
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        match node.call("listconfigs", json!({ "config": "experimental-lsps2-service" })).await {
            Ok(v) => {
                return Ok(v
                    .pointer("/configs/experimental-lsps2-service/set")
                    .and_then(Value::as_bool)
                    .unwrap_or(false));
            }
            // -32602 "Unknown config option": the service is not loaded (it removes itself
            // when its flag is off, as in the v26.06.6 recording).
            Err(e) if e.code == Some(-32602) => return Ok(false),
            Err(e) => {
                log::warn!("Cannot check for Core Lightning's LSPS service: {e}");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| crate::ports::NodeError::new("listconfigs", None, "no answer")))
}

async fn emergency_reserve_sat(node: &ClnNode) -> u64 {
    const DEFAULT_SAT: u64 = 25_000;
    match node.call("listconfigs", json!({ "config": "min-emergency-msat" })).await {
        Ok(v) => v
            .pointer("/configs/min-emergency-msat/value_msat")
            .and_then(Value::as_u64)
            .map_or(DEFAULT_SAT, |m| m / 1000),
        Err(_) => DEFAULT_SAT,
    }
}

/// The `custommsg` hook. It answers `continue` at once, whatever the payload, and never
/// errors or panics (lightningd treats either as fatal); the request is served in a task.
async fn on_custommsg(plugin: Plugin<State>, v: Value) -> Result<Value, anyhow::Error> {
    let payload = v.get("payload").and_then(Value::as_str).unwrap_or("");
    let inbound = frame::decode_hook_payload(payload);
    if matches!(inbound, Inbound::NotLsps) {
        return Ok(json!({ "result": "continue" })); // T-01: another plugin's business.
    }
    let peer = v.get("peer_id").and_then(Value::as_str).map(|id| plugin.state().peer_key(id));
    match (inbound, peer) {
        (Inbound::NotLsps, _) => {}
        (Inbound::Lsps(bytes), Some(Ok(peer))) => {
            let state = plugin.state().clone();
            tokio::spawn(async move { serve(state, peer, bytes).await });
        }
        (inbound, Some(Ok(peer))) => {
            // Dropped unread; the log line counts against the peer's rate, so a flood of
            // oversized messages cannot flood the node's log either.
            let what = match inbound {
                Inbound::Oversized(n) => format!("an LSPS0 message of {n} bytes, over the 65533-byte limit"),
                _ => "a custom message whose payload is not hex".to_string(),
            };
            match plugin.state().limiter.admit(peer, Instant::now()) {
                Ok(_) => log::warn!("Dropped {what} from {peer}"),
                Err(_) => log::debug!("Dropped {what} from {peer}"),
            }
        }
        _ => log::warn!("Dropped an LSPS0 message with no valid peer_id"),
    }
    Ok(json!({ "result": "continue" }))
}

/// Serve one request: admission (per-peer limits), the service, the reply.
async fn serve(state: State, peer: PublicKey, bytes: Vec<u8>) {
    // The in-flight slot is held until the reply is handed to lightningd, so replies are
    // bounded by the same limits as requests.
    let (reply, _inflight) = match state.limiter.admit_costing(peer, Instant::now(), Cost::of_payload(&bytes)) {
        Ok(inflight) => (state.service.handle_payload(peer, &bytes).await, Some(inflight)),
        Err((refusal, notify)) => {
            state.telemetry.refused("p2p", refusal.label());
            if !notify {
                log::debug!("Dropped a request from {peer}: {}", refusal.describe());
                return;
            }
            log::info!("Refused a request from {peer}: {}", refusal.describe());
            // Ruling 10: a refused request gets error 1; other messages get their usual answer.
            (state.service.refuse(peer, &bytes, RpcError::client_rejected(refusal.describe())).await, None)
        }
    };
    let Some(reply) = reply else { return };
    let msg = match frame::encode(&reply) {
        Ok(m) => m,
        Err(e) => {
            log::warn!("Not sending a reply to {peer}: {e}");
            return;
        }
    };
    // T-17: a reply that cannot be delivered is treated as delivered; nothing is rolled back.
    if let Err(e) = state.service.node().send_custom_message(peer, msg).await {
        log::info!("Could not deliver an LSPS reply to {peer}: {e}");
    }
}

async fn on_block_added(plugin: Plugin<State>, v: Value) -> Result<(), anyhow::Error> {
    let state = plugin.state().clone();
    if let Some(h) = v.pointer("/block_added/height").and_then(Value::as_u64).and_then(|h| u32::try_from(h).ok()) {
        // On-chain payments first (rulings 22–25): new deposits at orders' addresses are
        // reserved before the new height wakes any open. The hash tells a reorg at the same
        // height.
        let hash = v.pointer("/block_added/hash").and_then(Value::as_str).map(str::to_owned);
        state.engine.on_block(h, hash).await;
        state.engine.set_height(h);
        // Leases that end at this height: protection is already lifted (the close guard
        // reads the same height); the operator hears of it.
        for lease in state.engine.lease_pass().await {
            let note = json!({
                "order_id": lease.order_id,
                "peer_id": lease.client_node_id,
                "channel_id": lease.channel_id,
                "lease_end_block": lease.lease_end_block,
                "blockheight": h,
                "policy": state.engine.config().lease_policy.as_str(),
            });
            if let Err(e) = plugin.send_custom_notification(LEASE_TOPIC.to_string(), note).await {
                log::debug!("Cannot send {LEASE_TOPIC}: {e}");
            }
        }
    }
    housekeeping(&state.service, &state.engine).await;
    Ok(())
}

/// An RPC error with a code lightning-cli shows (cln-plugin maps JSON text to the object).
fn rpc_err(e: crate::console::CommandError) -> anyhow::Error {
    anyhow::anyhow!(json!({ "code": e.code, "message": e.message }).to_string())
}

async fn command(plugin: Plugin<State>, method: &'static str, params: Value) -> Result<Value, anyhow::Error> {
    operator::run(plugin.state(), method, params).await.map_err(rpc_err)
}

async fn on_status(plugin: Plugin<State>, params: Value) -> Result<Value, anyhow::Error> {
    command(plugin, "lsps1-status", params).await
}

async fn on_listorders(plugin: Plugin<State>, params: Value) -> Result<Value, anyhow::Error> {
    command(plugin, "lsps1-listorders", params).await
}

async fn on_getorder(plugin: Plugin<State>, params: Value) -> Result<Value, anyhow::Error> {
    command(plugin, "lsps1-getorder", params).await
}

async fn on_listheld(plugin: Plugin<State>, params: Value) -> Result<Value, anyhow::Error> {
    command(plugin, "lsps1-listheld", params).await
}

async fn on_listleases(plugin: Plugin<State>, params: Value) -> Result<Value, anyhow::Error> {
    command(plugin, "lsps1-listleases", params).await
}

async fn on_cancelorder(plugin: Plugin<State>, params: Value) -> Result<Value, anyhow::Error> {
    command(plugin, "lsps1-cancelorder", params).await
}

async fn on_allowclose(plugin: Plugin<State>, params: Value) -> Result<Value, anyhow::Error> {
    command(plugin, "lsps1-allowclose", params).await
}

/// Open the order store `lsps1-db` names (SQLite beside the node by default; PostgreSQL
/// shared by several nodes), as seen by this node. PostgreSQL that cannot be reached at
/// start is tried for a few seconds: nodes and their database often start together.
async fn open_store(
    cfg: &crate::config::Config,
    lightning_dir: &std::path::Path,
    node_id: &str,
) -> Result<(Store, String), String> {
    use crate::config::DbUrl;
    let db = match &cfg.db {
        Some(db) => db.clone(),
        None => DbUrl::Sqlite(cfg.db_path.clone().unwrap_or_else(|| lightning_dir.join("lsps1.sqlite3"))),
    };
    let node = node_id.to_string();
    match db {
        DbUrl::Sqlite(path) => {
            let shown = path.display().to_string();
            tokio::task::spawn_blocking(move || Store::open(&path).and_then(|s| s.for_node(&node)))
                .await
                .map_err(|e| e.to_string())?
                .map(|s| (s, shown))
                .map_err(|e| e.to_string())
        }
        DbUrl::Postgres { url, password_file } => {
            let password = match &password_file {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .map_err(|e| format!("cannot read lsps1-db-password-file {}: {e}", f.display()))?
                        .trim_end_matches(['\r', '\n'])
                        .to_string(),
                ),
                None => None,
            };
            let mut tries = 0;
            loop {
                let (url, password, node) = (url.clone(), password.clone(), node.clone());
                let opened = tokio::task::spawn_blocking(move || {
                    Store::open_postgres(&url, password.as_deref()).and_then(|s| s.for_node(&node))
                })
                .await
                .map_err(|e| e.to_string())?;
                match opened {
                    Ok(s) => {
                        let shown = format!("PostgreSQL {}", s.shown());
                        return Ok((s, shown));
                    }
                    Err(crate::store::StoreError::Unavailable(e)) if tries < 5 => {
                        log::warn!("The order store is not reachable yet ({e}); trying again");
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_bit_switch() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("regtest");
        std::fs::create_dir(&net).unwrap();
        assert!(feature_bit_at_manifest(None, &net));
        assert!(!feature_bit_at_manifest(Some("0"), &net));
        assert!(feature_bit_at_manifest(Some("1"), &net));
        std::fs::write(dir.path().join("config"), "network=regtest\nlsps1-feature-bit=false\n").unwrap();
        assert!(!feature_bit_at_manifest(None, &net));
        assert!(feature_bit_at_manifest(Some("true"), &net), "the environment wins");
        std::fs::write(net.join("config"), "lsps1-feature-bit = 0\n").unwrap();
        std::fs::remove_file(dir.path().join("config")).unwrap();
        assert!(!feature_bit_at_manifest(None, &net));
    }
}
