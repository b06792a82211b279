//! The LSPS1 service: answers LSPS0 requests (`lsps0.list_protocols`, `lsps1.get_info`,
//! `lsps1.create_order`, `lsps1.get_order`) and the operator's commands. Generic over the
//! node ([`NodeApi`]), the clock and the randomness, so it runs in tests without a node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use serde_json::{Map, Value, json};

use crate::clock::{Clock, Entropy};
use crate::config::{Config, Lsps1Options, MAX_NON_WUMBO_SAT};
use crate::lsps0::frame::{self, MAX_PAYLOAD_LEN};
use crate::lsps0::jsonrpc::{self, Request, RpcError, check_unrecognized};
use crate::lsps0::ser::format_datetime;
use crate::lsps1::invoice::{self, InvoiceSpec};
use crate::lsps1::msgs::{
    Bolt11PaymentInfo, ChannelInfo, GetInfoResponse, OnchainPaymentInfo, OrderResponse, PaymentInfo,
};
use crate::lsps1::pricing::{self, Quote};
use crate::lsps1::validate::{OrderRequest, TokenPolicy, validate_create_order};
use crate::order::{
    EventSink, FailReason, OrderChanged, PaymentMethod, Phase, Transport, onchain_option_state, option_state,
};
use crate::ports::{FeeEstimates, NodeApi, NodeError, RouteHop, WalletFunds};
use crate::store::{Answers, Bolt11Record, InsertLimits, OnchainRecord, OrderRecord, Store, StoreError};
use crate::telemetry::{Telemetry, method_label};

/// The LSPS numbers this service speaks, for `lsps0.list_protocols` (T-18: never 0).
pub const PROTOCOLS: [u16; 1] = [1];

/// `order_id` of bLIP-51 is at most 64 characters (C-18).
pub const MAX_ORDER_ID_LEN: usize = 64;

/// `option_support_large_channel` (BOLT 9 bits 18/19).
const LARGE_CHANNEL_BITS: [usize; 2] = [18, 19];

/// Facts about the node, learned once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: PublicKey,
    pub network: bitcoin::Network,
    /// On-chain funds lightningd keeps back for anchor fee bumps (`min-emergency-msat`).
    pub emergency_reserve_sat: u64,
}

/// The latest fee estimates and wallet balance. Refreshed in the background (on every
/// block and every 30 s) and, when older than [`MARKET_MAX_AGE_MS`], by the request that
/// needs it, within [`MARKET_WAIT`]: a wallet funded a moment ago is seen, and no request
/// waits long on the node (create_order answers fast).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Market {
    pub fees: Option<FeeEstimates>,
    pub funds: Option<WalletFunds>,
    /// Route hints for new invoices; empty for a node with public channels.
    pub route_hints: Vec<RouteHop>,
    /// When the route hints were last read (unix ms).
    pub route_hints_at_ms: Option<i64>,
    /// How many refreshes this snapshot has seen: it changes with every refresh, even two
    /// within one millisecond.
    pub version: u64,
    /// When the last successful refresh finished (unix ms).
    pub refreshed_at_ms: Option<i64>,
}

pub struct Service<N, C, E> {
    cfg: Config,
    node_info: NodeInfo,
    store: Store,
    node: N,
    clock: C,
    entropy: E,
    market: Mutex<Market>,
    /// One market refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// The last get_info answer, by (market snapshot, store generation).
    info_cache: Mutex<Option<InfoCacheEntry>>,
    /// get_order answers by order id, with the order's client (ruling 8).
    order_answers: Answers<(String, OrderResponse)>,
    refresh_wanted: tokio::sync::Notify,
    /// Where transitions made here (lazy expiry) are reported.
    events: Option<EventSink>,
    /// The operator's running counts of P2P requests, when attached.
    telemetry: Option<Arc<Telemetry>>,
}

type InfoCacheEntry = ((u64, u64), GetInfoResponse);

/// How long a request may wait for the node to refresh the market.
pub const MARKET_WAIT: Duration = Duration::from_secs(2);
/// A market snapshot older than this is refreshed before it is used to answer.
pub const MARKET_MAX_AGE_MS: i64 = 5_000;
/// Route hints are read again after this long (they cost a whole
/// `listpeerchannels`, and a node's private channels rarely change).
pub const ROUTE_HINTS_MAX_AGE_MS: i64 = 300_000;
/// A read may be answered from a snapshot up to this old while a refresh runs.
pub const MARKET_STALE_MAX_MS: i64 = 60_000;

impl<N: NodeApi, C: Clock, E: Entropy> Service<N, C, E> {
    pub fn new(cfg: Config, node_info: NodeInfo, store: Store, node: N, clock: C, entropy: E) -> Self {
        Service {
            cfg,
            node_info,
            store,
            node,
            clock,
            entropy,
            market: Mutex::new(Market::default()),
            refreshing: tokio::sync::Mutex::new(()),
            info_cache: Mutex::new(None),
            order_answers: Answers::default(),
            refresh_wanted: tokio::sync::Notify::new(),
            events: None,
            telemetry: None,
        }
    }

    /// Report transitions to `sink` (the `lsps1_order_state_changed` notification).
    pub fn with_events(mut self, sink: EventSink) -> Self {
        self.events = Some(sink);
        self
    }

    /// Count P2P requests and their latency into `t`.
    pub fn with_telemetry(mut self, t: Arc<Telemetry>) -> Self {
        self.telemetry = Some(t);
        self
    }

    pub fn telemetry(&self) -> Option<&Arc<Telemetry>> {
        self.telemetry.as_ref()
    }

    pub fn node_info(&self) -> &NodeInfo {
        &self.node_info
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn node(&self) -> &N {
        &self.node
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn market(&self) -> Market {
        self.market.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Ask the node for fee estimates and wallet funds; keep what it answered.
    pub async fn refresh_market(&self) -> Result<(), NodeError> {
        // Route hints come from every channel of the node (`listpeerchannels`, megabytes
        // on a big node) and change rarely: read at most every ROUTE_HINTS_MAX_AGE_MS.
        let hints_due = self
            .market()
            .route_hints_at_ms
            .is_none_or(|t| self.clock.now_ms().saturating_sub(t) > ROUTE_HINTS_MAX_AGE_MS);
        let hints = async {
            match hints_due {
                true => Some(self.node.route_hints().await),
                false => None,
            }
        };
        let (fees, funds, hints) = tokio::join!(self.node.fee_estimates(), self.node.wallet_funds(), hints);
        let mut m = self.market.lock().unwrap_or_else(|p| p.into_inner());
        m.version = m.version.wrapping_add(1);
        match hints {
            Some(Ok(h)) => {
                m.route_hints = h;
                m.route_hints_at_ms = Some(self.clock.now_ms());
            }
            Some(Err(e)) => log::debug!("Cannot read channels for route hints: {e}"),
            None => {}
        }
        let mut first_err = None;
        match fees {
            Ok(f) => m.fees = Some(f),
            Err(e) => first_err = Some(e),
        }
        match funds {
            Ok(f) => m.funds = Some(f),
            Err(e) => first_err = first_err.or(Some(e)),
        }
        if first_err.is_none() {
            m.refreshed_at_ms = Some(self.clock.now_ms());
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The market for answering a request. A snapshot at most [`MARKET_MAX_AGE_MS`] old is
    /// used as is. With `stale_ok` (reads: `get_info`), one up to [`MARKET_STALE_MAX_MS`] old
    /// is used too and a background refresh is asked for, so no read waits on lightningd
    /// (that wait was the P2P round trip's tail). Otherwise (create_order, whose
    /// funds check must see a wallet funded a moment ago) the request refreshes it, one
    /// refresh at a time: concurrent requests wait for the same one.
    async fn market_now(&self, stale_ok: bool) -> Market {
        let m = self.market();
        let age = m.refreshed_at_ms.map(|t| self.clock.now_ms().saturating_sub(t));
        if m.fees.is_some() && m.funds.is_some() {
            match age {
                Some(a) if a <= MARKET_MAX_AGE_MS => {
                    // Past half its age: refreshed in the background before any request
                    // has to wait for it.
                    if a > MARKET_MAX_AGE_MS / 2 {
                        self.refresh_wanted.notify_one();
                    }
                    return m;
                }
                Some(a) if stale_ok && a <= MARKET_STALE_MAX_MS => {
                    self.refresh_wanted.notify_one();
                    return m;
                }
                _ => {}
            }
        }
        let refreshed = tokio::time::timeout(MARKET_WAIT, self.refresh_if_older(MARKET_MAX_AGE_MS)).await;
        if let Err(e) = refreshed.unwrap_or_else(|_| Err(NodeError::new("feerates/listfunds", None, "timed out"))) {
            log::warn!("Cannot refresh fee estimates and wallet funds: {e}");
        }
        self.market()
    }

    /// Refresh the market unless it is at most `max_age_ms` old, which it may have become
    /// while this caller waited for another's refresh.
    pub async fn refresh_if_older(&self, max_age_ms: i64) -> Result<(), NodeError> {
        let _turn = self.refreshing.lock().await;
        let m = self.market();
        let fresh = m.refreshed_at_ms.is_some_and(|t| self.clock.now_ms().saturating_sub(t) <= max_age_ms);
        if fresh && m.fees.is_some() && m.funds.is_some() {
            return Ok(());
        }
        self.refresh_market().await
    }

    /// Woken when a read was served from a stale market; the plugin's refresher waits on it.
    pub fn refresh_wanted(&self) -> &tokio::sync::Notify {
        &self.refresh_wanted
    }

    /// The funding fee rate for a confirmation target (N-05). On regtest, where a fresh
    /// bitcoind has no estimates at all, the relay floor stands in.
    fn funding_feerate(&self, fees: &FeeEstimates, target_blocks: u16) -> Option<u32> {
        pricing::feerate_for_target(fees, target_blocks)
            .or_else(|| (self.node_info.network == bitcoin::Network::Regtest).then_some(fees.floor_perkw.max(253)))
    }

    /// Handle one LSPS0 payload from `peer`; returns the response payload to send back.
    /// Every request and every bad message gets exactly one response (T-14), never larger
    /// than BOLT8 allows (C-21); only a client's own error response gets none (see
    /// [`jsonrpc::Rejection::reply`]).
    pub async fn handle_payload(&self, peer: PublicKey, payload: &[u8]) -> Option<Vec<u8>> {
        self.respond(peer, payload, None).await
    }

    /// Answer a payload that admission control refused: a request gets `refusal` instead of
    /// being served; anything else gets what [`Service::handle_payload`] would give it.
    pub async fn refuse(&self, peer: PublicKey, payload: &[u8], refusal: RpcError) -> Option<Vec<u8>> {
        self.respond(peer, payload, Some(refusal)).await
    }

    async fn respond(&self, peer: PublicKey, payload: &[u8], refusal: Option<RpcError>) -> Option<Vec<u8>> {
        let (id, outcome) = match jsonrpc::parse_request(payload) {
            Ok(req) => {
                let id = req.id.clone();
                let outcome = match refusal {
                    Some(e) => Err(e),
                    None => {
                        let start = std::time::Instant::now();
                        let method = method_label(&req.method);
                        let outcome = self.dispatch(peer, req).await;
                        if let Some(t) = &self.telemetry {
                            t.request("p2p", method, outcome.is_ok(), start.elapsed());
                        }
                        outcome
                    }
                };
                (Some(id), outcome)
            }
            Err(rej) if !rej.reply => {
                log::warn!(
                    "LSPS0 error response from {peer}, not answered: {}",
                    jsonrpc::truncate(&String::from_utf8_lossy(payload), 200)
                );
                return None;
            }
            Err(rej) => {
                // T-08: bad messages are logged as unusual.
                log::warn!(
                    "Bad LSPS0 message from {peer}: {} ({})",
                    rej.error.data.as_ref().and_then(|d| d["message"].as_str()).unwrap_or(""),
                    jsonrpc::truncate(&String::from_utf8_lossy(payload), 200)
                );
                (rej.id, Err(rej.error))
            }
        };
        let id = id.as_deref();
        let bytes = match outcome.and_then(|result| {
            // A result always belongs to a parsed request, so `id` is set here.
            jsonrpc::success_bytes(id.unwrap_or_default(), &result)
                .map_err(|_| RpcError::internal("cannot serialize the response"))
        }) {
            Ok(b) => b,
            Err(e) => jsonrpc::error_bytes(id, &e),
        };
        if bytes.len() > MAX_PAYLOAD_LEN {
            // Unreachable by construction (ruling 7); never send a truncated message.
            log::warn!("Response of {} bytes to {peer} exceeds the LSPS0 limit; answering -32603", bytes.len());
            return Some(jsonrpc::error_bytes(id, &RpcError::internal("response too large")));
        }
        Some(bytes)
    }

    /// Route a parsed request (T-09: unknown methods get -32601).
    pub async fn dispatch(&self, peer: PublicKey, req: Request) -> Result<Value, RpcError> {
        match req.method.as_str() {
            "lsps0.list_protocols" => {
                check_unrecognized(req.params()?, &[])?;
                Ok(json!({ "protocols": PROTOCOLS }))
            }
            "lsps1.get_info" => {
                check_unrecognized(req.params()?, &[])?;
                to_value(&self.get_info().await?)
            }
            "lsps1.create_order" => to_value(&self.create_order(Some(peer), Transport::P2p, req.params()?).await?),
            "lsps1.get_order" => to_value(&self.get_order(Some(peer), req.params()?).await?),
            other => Err(RpcError::method_not_found(other)),
        }
    }

    /// Funds the wallet can still commit to new orders, and what orders in flight hold.
    fn fundable_sat(&self, funds: &WalletFunds) -> u64 {
        funds.confirmed_sat.saturating_sub(self.node_info.emergency_reserve_sat)
    }

    /// The options as answered now: the configured ones, with the balance maxima capped by
    /// what the wallet can fund. The caps never go below their minima, so the
    /// answer keeps min ≤ max (G-02); orders above the real headroom still get `100`.
    pub fn effective_options(&self, market: &Market, reserved_sat: u64) -> Lsps1Options {
        let mut o = self.cfg.options;
        if let Some(funds) = &market.funds {
            let opening_fee = market
                .fees
                .as_ref()
                .and_then(|f| self.funding_feerate(f, o.min_funding_confirms_within_blocks))
                .and_then(|r| pricing::onchain_fee_sat(r, self.cfg.pricing.funding_weight))
                .unwrap_or(0);
            let headroom = self.fundable_sat(funds).saturating_sub(reserved_sat).saturating_sub(opening_fee);
            o.max_initial_lsp_balance_sat =
                o.max_initial_lsp_balance_sat.min(headroom).max(o.min_initial_lsp_balance_sat);
            let channel_floor = o
                .min_channel_balance_sat
                .max(o.min_initial_lsp_balance_sat.saturating_add(o.min_initial_client_balance_sat));
            o.max_channel_balance_sat = o.max_channel_balance_sat.min(headroom).max(channel_floor);
        }
        o
    }

    /// `lsps1.get_info` (G-01).
    pub async fn get_info(&self) -> Result<GetInfoResponse, RpcError> {
        let market = self.market_now(true).await;
        // The answer is a function of the market snapshot and the funds held by orders in
        // flight (the store): computed again only when either moved.
        let generation = self.store.generation();
        let key = (market.version, generation);
        if let Some((k, info)) = self.info_cache.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && *k == key
        {
            return Ok(info.clone());
        }
        let reserved = self.store.read_reserved_sat_async().await.map_err(internal)?;
        let mut info = GetInfoResponse::from(&self.effective_options(&market, reserved));
        if self.cfg.onchain.enabled {
            info.min_onchain_payment_confirmations = Some(self.cfg.onchain.min_confirmations);
            info.min_onchain_payment_size_sat = Some(self.cfg.onchain.min_payment_size_sat);
        }
        *self.info_cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((key, info.clone()));
        Ok(info)
    }

    /// `lsps1.create_order` (bLIP-51, create_order). The channel goes to the requesting `peer` over P2P
    /// (ruling 8), to `public_key` over REST (`peer` is `None` there, ruling 9).
    pub async fn create_order(
        &self,
        peer: Option<PublicKey>,
        transport: Transport,
        params: &Map<String, Value>,
    ) -> Result<OrderResponse, RpcError> {
        self.create_order_from(peer, transport, params, None).await
    }

    /// [`Service::create_order`] for a REST client at `origin.0`, which may have at most
    /// `origin.1` unpaid orders on every node sharing the order book.
    pub async fn create_order_from(
        &self,
        peer: Option<PublicKey>,
        transport: Transport,
        params: &Map<String, Value>,
        origin: Option<(std::net::IpAddr, u32)>,
    ) -> Result<OrderResponse, RpcError> {
        if let Some(peer) = peer
            && self.cfg.deny_nodes.contains(&peer)
        {
            log::info!("Refusing create_order from denied node {peer}");
            return Err(RpcError::client_rejected("this node is not served by this LSP"));
        }
        // Every node call below shares one budget, inside the wallets' patience (ZEUS: 7 s).
        let deadline = tokio::time::Instant::now() + CREATE_ORDER_BUDGET;
        let market = self.market_now(false).await;
        let now = self.clock.now_ms();
        let reserved = self.store.read_reserved_sat_async().await.map_err(internal)?;
        let options = self.effective_options(&market, reserved);
        let tokens = TokenPolicy { accepted: self.cfg.tokens.clone(), accept_unknown: self.cfg.accept_unknown_tokens };
        let req = validate_create_order(params, transport, self.node_info.network, &options, &tokens)?;
        let Some(client) = req.public_key.or(peer) else {
            return Err(RpcError::invalid_param("public_key", "is required"));
        };
        if client == self.node_info.id {
            // A channel to ourselves can never open; the payment would only be held and refunded.
            return Err(RpcError::invalid_param(
                "public_key",
                "is this LSP's own node; name the node the channel goes to",
            ));
        }
        if transport == Transport::Rest && self.cfg.deny_nodes.contains(&client) {
            return Err(RpcError::client_rejected("this node is not served by this LSP"));
        }
        // Ruling 10, checked again in the insert transaction; checked here too so that a
        // peer over its quota costs no invoice signing.
        let client_id = client.to_string();
        let unpaid = {
            let client_id = client_id.clone();
            self.store.read_async(move |s| s.unpaid_count(&client_id, now)).await.map_err(internal)?
        };
        if unpaid >= u64::from(self.cfg.max_unpaid_orders_per_peer) {
            return Err(too_many_unpaid(unpaid));
        }

        let fees = market
            .fees
            .as_ref()
            .ok_or_else(|| RpcError::unavailable("no fee estimates from the node yet; retry shortly"))?;
        let funds = market.funds.ok_or_else(|| RpcError::unavailable("wallet balance unknown; retry shortly"))?;
        let feerate = self
            .funding_feerate(fees, req.funding_confirms_within_blocks)
            .ok_or_else(|| RpcError::unavailable("the node has no fee estimate; retry shortly"))?;
        let quote = pricing::quote(
            &self.cfg.pricing,
            req.lsp_balance_sat,
            req.client_balance_sat,
            req.channel_expiry_blocks,
            feerate,
        )
        .map_err(|e| RpcError::internal(e.to_string()))?;

        // The LSP's side must pay the commitment fee and keep its reserve (Bitkit #1856).
        let commit_rate = fees.unilateral_close_perkw.unwrap_or(feerate).max(feerate);
        let needed = pricing::min_lsp_side_sat(req.capacity_sat(), commit_rate);
        if req.lsp_balance_sat < needed {
            return Err(RpcError::option_mismatch(
                "min_initial_lsp_balance_sat",
                format!(
                    "lsp_balance_sat must be at least {needed} sat for this channel: the LSP's side pays the commitment fee and keeps the channel reserve"
                ),
            ));
        }
        if req.capacity_sat() > MAX_NON_WUMBO_SAT {
            self.check_large_channel(client, deadline).await?;
        }

        let at = Moment { now_ms: now, deadline };
        let mut record = self.new_order_record(client, transport, &req, &quote, at, &market.route_hints).await?;
        self.add_onchain_option(&mut record, &req, deadline).await;
        record.client_ip = origin.map(|(ip, _)| ip.to_string());
        let limits = InsertLimits {
            fundable_sat: self.fundable_sat(&funds),
            max_unpaid_per_client: u64::from(self.cfg.max_unpaid_orders_per_peer),
            max_unpaid_per_ip: origin.map_or(u64::MAX, |(_, n)| u64::from(n)),
            now_ms: now,
        };
        let stored = record.clone();
        match self.store.call(move |s| s.insert_order(&stored, limits)).await {
            Ok(()) => {}
            Err(StoreError::TooManyUnpaid(n)) => return Err(too_many_unpaid(n)),
            Err(StoreError::TooManyUnpaidFromAddress(_)) => {
                return Err(RpcError::client_rejected(
                    "too many unpaid orders from this address; pay or let them expire first",
                ));
            }
            Err(StoreError::InsufficientFunds { available_sat, .. }) => {
                // Name the bound that was crossed: the LSP's balance alone, or the channel.
                let can = available_sat.saturating_sub(quote.onchain_fee_sat);
                let property =
                    if req.lsp_balance_sat > can { "max_initial_lsp_balance_sat" } else { "max_channel_balance_sat" };
                return Err(RpcError::option_mismatch(
                    property,
                    format!("the LSP can currently fund channels of at most {can} sat"),
                ));
            }
            Err(e @ (StoreError::Unavailable(_) | StoreError::Retry(_))) => {
                log::warn!("Cannot store a new order: {e}");
                return Err(RpcError::unavailable(
                    "the order store is unavailable; nothing was created, try again shortly",
                ));
            }
            Err(e) => {
                log::warn!("Cannot store a new order: {e}");
                return Err(RpcError::internal("cannot store the order; nothing was created"));
            }
        }
        log::info!(
            "Order {} created for {} over {}: lsp {} sat, client {} sat, {} blocks, total {} sat{}",
            record.order_id,
            record.client_node_id,
            transport.as_str(),
            record.lsp_balance_sat,
            record.client_balance_sat,
            record.channel_expiry_blocks,
            record.order_total_sat,
            record.client_info.as_ref().map(|c| format!(", client_info {c}")).unwrap_or_default(),
        );
        Ok(order_response(&record))
    }

    /// The `payment.onchain` option (ruling 21): offered when the operator switched it on,
    /// the client gave a refund address (validated already: our network, a standard
    /// script), and the order is large enough to be worth a refund's fee. Priced apart: the
    /// Lightning fee plus a surcharge, since the LSP later spends these coins. A node that
    /// cannot give an address now leaves the order with Lightning only (bLIP-51 lets the LSP
    /// omit any option).
    async fn add_onchain_option(&self, record: &mut OrderRecord, req: &OrderRequest, deadline: tokio::time::Instant) {
        let oc = &self.cfg.onchain;
        if !oc.enabled || req.refund_onchain_address.is_none() {
            return;
        }
        let Some(fee_total_sat) = record.fee_total_sat.checked_add(oc.surcharge_sat) else { return };
        let Some(order_total_sat) = fee_total_sat.checked_add(record.client_balance_sat) else { return };
        if order_total_sat < oc.min_payment_size_sat {
            return;
        }
        let address = match within(deadline, "newaddr", self.node.new_address(oc.address_type.as_str())).await {
            Ok(a) => a,
            Err(e) => {
                log::warn!("Order {}: no on-chain address ({e}); offering Lightning only", record.order_id);
                return;
            }
        };
        let lifetime_ms = i64::try_from(oc.expiry_secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
        let expires_at_ms = record.created_at_ms.saturating_add(lifetime_ms);
        // A payment mined in the grace blocks after the option expired still counts
        // (ruling 23): the order waits that long before it expires.
        let grace_ms = i64::from(oc.grace_blocks).saturating_mul(600_000);
        record.expires_at_ms = record.expires_at_ms.max(expires_at_ms.saturating_add(grace_ms));
        record.onchain = Some(OnchainRecord {
            address,
            expires_at_ms,
            fee_total_sat,
            order_total_sat,
            min_confirmations: oc.min_confirmations,
            surplus_sat: 0,
        });
    }

    async fn check_large_channel(&self, client: PublicKey, deadline: tokio::time::Instant) -> Result<(), RpcError> {
        let features = within(deadline, "listpeers", self.node.peer_features(client)).await.map_err(|e| {
            log::warn!("Cannot read features of {client}: {e}");
            RpcError::unavailable("cannot check the node's channel size support; retry shortly")
        })?;
        let supported = features.is_some_and(|f| LARGE_CHANNEL_BITS.iter().any(|b| frame::has_feature_bit(&f, *b)));
        if supported {
            Ok(())
        } else {
            Err(RpcError::option_mismatch(
                "max_channel_balance_sat",
                format!(
                    "channels above {MAX_NON_WUMBO_SAT} sat need option_support_large_channel, which the client node does not signal"
                ),
            ))
        }
    }

    async fn new_order_record(
        &self,
        client: PublicKey,
        transport: Transport,
        req: &OrderRequest,
        quote: &Quote,
        at: Moment,
        route_hints: &[RouteHop],
    ) -> Result<OrderRecord, RpcError> {
        let Moment { now_ms, deadline } = at;
        // What the open will take from the wallet once the order is paid.
        let reserved_sat = req.capacity_sat().saturating_add(quote.onchain_fee_sat);
        let rng_err = |_| RpcError::internal("no randomness available");
        let id_bytes: [u8; 16] = self.entropy.bytes32().map_err(rng_err)?[..16].try_into().unwrap_or([0; 16]);
        let order_id = uuid::Builder::from_random_bytes(id_bytes).into_uuid().to_string();
        let preimage = self.entropy.bytes32().map_err(rng_err)?;
        let payment_secret = self.entropy.bytes32().map_err(rng_err)?;
        let timestamp_secs = u64::try_from(now_ms / 1000).unwrap_or(0);
        let spec = InvoiceSpec {
            network: self.node_info.network,
            amount_msat: quote
                .order_total_sat
                .checked_mul(1000)
                .ok_or_else(|| RpcError::internal("order total overflows msat"))?,
            payment_hash: invoice::payment_hash_of(&preimage),
            payment_secret,
            description: format!("LSPS1 channel order {order_id}"),
            timestamp_secs,
            expiry_secs: self.cfg.payment_expiry_secs,
            min_final_cltv: u64::from(self.cfg.invoice_min_final_cltv),
            route_hints: route_hints.to_vec(),
        };
        let unsigned = invoice::build_unsigned(&spec).map_err(|e| {
            log::warn!("{e}");
            RpcError::internal("cannot build the invoice")
        })?;
        let signed = within(deadline, "signinvoice", self.node.sign_invoice(unsigned)).await.map_err(|e| {
            log::warn!("signinvoice failed for order {order_id}: {e}");
            RpcError::unavailable("the node could not sign the invoice; nothing was created")
        })?;
        invoice::verify_signed(&spec, &signed, &self.node_info.id).map_err(|e| {
            log::warn!("Order {order_id}: {e}");
            RpcError::internal("the node returned an unusable invoice; nothing was created")
        })?;
        // The invoice expires on a whole second; the payment option says the same instant.
        let expires_at_ms = i64::try_from(timestamp_secs.saturating_add(self.cfg.payment_expiry_secs))
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000);
        Ok(OrderRecord {
            order_id,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            client_node_id: client.to_string(),
            transport,
            lsp_balance_sat: req.lsp_balance_sat,
            client_balance_sat: req.client_balance_sat,
            required_channel_confirmations: req.required_channel_confirmations,
            funding_confirms_within_blocks: req.funding_confirms_within_blocks,
            channel_expiry_blocks: req.channel_expiry_blocks,
            token: req.token.mirror(),
            refund_onchain_address: req.refund_onchain_address.clone(),
            announce_channel: req.announce_channel,
            client_info: req.client_info.clone(),
            phase: Phase::AwaitingPayment,
            held_at_ms: None,
            refunded_after_open: false,
            failure_reason: None,
            fee_total_sat: quote.fee_total_sat,
            order_total_sat: quote.order_total_sat,
            funding_feerate_perkw: quote.funding_feerate_perkw,
            reserved_sat,
            expires_at_ms,
            paid_method: None,
            node_id: None,
            client_ip: None,
            bolt11: Some(Bolt11Record {
                invoice: signed,
                payment_hash: hex::encode(spec.payment_hash),
                preimage: hex::encode(preimage),
                payment_secret: hex::encode(payment_secret),
                expires_at_ms,
                min_final_cltv: self.cfg.invoice_min_final_cltv,
                fee_total_sat: quote.fee_total_sat,
                order_total_sat: quote.order_total_sat,
            }),
            channel: None,
            onchain: None,
            reorg_flagged: false,
        })
    }

    /// Settle a payment deadline that passed since the last sweep, so `get_order` answers
    /// current state (ruling 13): the order after, and before when it moved. Parts of an
    /// incomplete payment are marked failed; the lifecycle answers their hook calls on its
    /// next round.
    async fn expire_and_read(
        &self,
        id: String,
        now: i64,
    ) -> Result<Option<(OrderRecord, Option<OrderRecord>)>, RpcError> {
        self.store
            .call(move |s| {
                let Some(r) = s.get_order(&id)? else { return Ok(None) };
                if r.phase != Phase::AwaitingPayment || r.expires_at_ms > now {
                    return Ok(Some((r, None)));
                }
                let detail = json!({ "message": FailReason::PaymentExpired.describe(), "lazy": true });
                match s.fail_order(&id, Phase::AwaitingPayment, FailReason::PaymentExpired, now, &detail) {
                    Ok(_) => Ok(s.get_order(&id)?.map(|a| (a, Some(r)))),
                    Err(StoreError::Conflict(_)) => Ok(s.get_order(&id)?.map(|a| (a, None))),
                    Err(e) => Err(e),
                }
            })
            .await
            .map_err(internal)
    }

    /// `lsps1.get_order` (bLIP-51, get_order). `peer` is `None` over REST, where the order id is the
    /// capability (ruling 9); over P2P only the order's node may read it (ruling 8).
    pub async fn get_order(
        &self,
        peer: Option<PublicKey>,
        params: &Map<String, Value>,
    ) -> Result<OrderResponse, RpcError> {
        self.get_order_until(peer, params).await.map(|(o, _)| o)
    }

    /// [`Service::get_order`], and until when (unix ms) the answer holds if the store does
    /// not change ([`Store::generation`]): an order awaiting payment expires by itself at
    /// its deadline; any other answer changes only with a write.
    pub async fn get_order_until(
        &self,
        peer: Option<PublicKey>,
        params: &Map<String, Value>,
    ) -> Result<(OrderResponse, i64), RpcError> {
        let order_id = read_order_id(params)?;
        let now = self.clock.now_ms();
        // Read before the store is, so that a write racing this read leaves the entry
        // stored below already out of date (Store::generation).
        let generation = self.store.generation();
        let not_found = || match peer {
            Some(_) => RpcError::not_found(format!("no order {order_id} for this node")),
            None => RpcError::not_found(format!("no order {order_id}")),
        };
        if let Some(((client, response), until)) = self.order_answers.get(&order_id, generation, now) {
            if peer.is_some_and(|p| p.to_string() != client) {
                return Err(not_found());
            }
            return Ok((response, until));
        }
        let id = order_id.clone();
        // The common case, an order that needs no lazy expiry, is read inline on the read
        // connection; only an expiry to settle goes to the writer.
        let record = match self.store.read_order_async(&id).await.map_err(internal)? {
            Some(r) if !(r.phase == Phase::AwaitingPayment && r.expires_at_ms <= now) => Some((r, None)),
            // Another node's order: that node expires it (each node drives its own orders).
            Some(r) if r.node_id.as_deref().is_some_and(|n| n != self.store.node()) => Some((r, None)),
            None => None,
            Some(_) => self.expire_and_read(id, now).await?,
        };
        let record = record.map(|(after, before)| {
            if let (Some(before), Some(sink)) = (before, &self.events) {
                let _ = sink.send(OrderChanged {
                    order_id: before.order_id.clone(),
                    client_node_id: before.client_node_id.clone(),
                    from: before.phase,
                    to: after.phase,
                    reason: Some(FailReason::PaymentExpired),
                    refunded_after_open: false,
                    note: None,
                });
            }
            after
        });
        let record = record.ok_or_else(not_found)?;
        if let Some(peer) = peer
            && record.client_node_id != peer.to_string()
        {
            return Err(not_found());
        }
        let until = if record.phase == Phase::AwaitingPayment { record.expires_at_ms } else { i64::MAX };
        let response = order_response(&record);
        self.order_answers.put(order_id, generation, until, (record.client_node_id, response.clone()));
        Ok((response, until))
    }

    /// "Now" by the service's clock (unix ms).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// The `order_id` of `lsps1.get_order` params (both transports), checked before any store
/// read: unknown params and a missing, non-string, empty or over-long (C-18) id are `-32602`
/// . Pure, so the fuzz targets reach it without a store.
pub fn read_order_id(params: &Map<String, Value>) -> Result<String, RpcError> {
    check_unrecognized(params, &["order_id"])?;
    match params.get("order_id") {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_ORDER_ID_LEN => Ok(s.clone()),
        Some(Value::String(_)) => {
            Err(RpcError::invalid_param("order_id", format!("must be 1 to {MAX_ORDER_ID_LEN} characters")))
        }
        Some(_) => Err(RpcError::invalid_param("order_id", "must be a string")),
        None => Err(RpcError::invalid_param("order_id", "is required")),
    }
}

/// When a request started, and when its node calls must be done.
#[derive(Debug, Clone, Copy)]
struct Moment {
    now_ms: i64,
    deadline: tokio::time::Instant,
}

/// Time `create_order` may spend on node calls in total.
pub const CREATE_ORDER_BUDGET: Duration = Duration::from_secs(6);

/// Run a node call, giving up at `deadline`.
async fn within<T>(
    deadline: tokio::time::Instant,
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, NodeError>>,
) -> Result<T, NodeError> {
    tokio::time::timeout_at(deadline, call).await.unwrap_or_else(|_| Err(NodeError::new(method, None, "out of time")))
}

fn too_many_unpaid(n: u64) -> RpcError {
    RpcError::client_rejected(format!("{n} unpaid orders are open for this node; pay or let them expire first"))
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|_| RpcError::internal("cannot serialize the response"))
}

fn internal(e: StoreError) -> RpcError {
    store_error(&e)
}

/// A store failure as the client hears it: an outage of the database (PostgreSQL down) is
/// the spec's error with `"retry": true` (REST: 503 with `Retry-After`); anything else an
/// internal error. Nothing was changed either way.
pub fn store_error(e: &StoreError) -> RpcError {
    log::warn!("Order store error: {e}");
    match e {
        StoreError::Unavailable(_) | StoreError::Retry(_) => {
            RpcError::unavailable("the order store is unavailable for a moment; try again shortly")
        }
        _ => RpcError::internal("order store unavailable"),
    }
}

/// The wire order object for a stored order (R-01: the same shape as create_order's).
pub fn order_response(r: &OrderRecord) -> OrderResponse {
    OrderResponse {
        order_id: r.order_id.clone(),
        lsp_balance_sat: r.lsp_balance_sat,
        client_balance_sat: r.client_balance_sat,
        required_channel_confirmations: r.required_channel_confirmations,
        funding_confirms_within_blocks: r.funding_confirms_within_blocks,
        channel_expiry_blocks: r.channel_expiry_blocks,
        token: r.token.clone(),
        created_at: format_datetime(r.created_at_ms),
        announce_channel: r.announce_channel,
        order_state: r.phase.order_state(),
        payment: PaymentInfo {
            bolt11: r.bolt11.as_ref().map(|b| Bolt11PaymentInfo {
                state: option_state(r.phase, r.paid_method, PaymentMethod::Bolt11, r.refunded_after_open),
                expires_at: format_datetime(b.expires_at_ms),
                fee_total_sat: b.fee_total_sat,
                order_total_sat: b.order_total_sat,
                invoice: b.invoice.clone(),
            }),
            onchain: r.onchain.as_ref().map(|q| OnchainPaymentInfo {
                state: onchain_option_state(r.phase, r.paid_method),
                expires_at: format_datetime(q.expires_at_ms),
                fee_total_sat: q.fee_total_sat,
                order_total_sat: q.order_total_sat,
                address: q.address.clone(),
                min_onchain_payment_confirmations: q.min_confirmations,
                min_fee_for_0conf: None,
                refund_onchain_address: r.refund_onchain_address.clone(),
            }),
        },
        channel: r.channel.as_ref().map(|c| ChannelInfo {
            funded_at: format_datetime(c.funded_at_ms),
            funding_outpoint: format!("{}:{}", c.funding_txid.to_lowercase(), c.funding_outnum),
            expires_at: format_datetime(c.expires_at_ms),
        }),
    }
}

#[cfg(test)]
mod tests;
