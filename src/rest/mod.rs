//! The embedded REST listener: the HTTP API of the reference LSP's "purchase channels in
//! advance" document (ours is `docs/openapi.json`) for wallets that do not speak custom
//! messages. A thin adapter: every answer comes from the same [`Service`] and the same
//! serializers as the P2P API; only the envelope differs (HTTP status, the error body every
//! REST wallet displays, the legacy get_info fields and `uris`).
//!
//! Routes: `GET /api/v1/get_info`, `POST /api/v1/create_order`,
//! `GET /api/v1/get_order?order_id=`, `GET /api/v1/openapi.json`, `GET /api/v1/health`.

mod errors;
mod server;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use errors::{error_response, status_of};
pub use server::{listen, spawn};

use crate::clock::{Clock, Entropy};
use crate::config::RestConfig;
use crate::limits::{Cost, Limiter};
use crate::lsps0::jsonrpc::RpcError;
use crate::lsps1::service::Service;
use crate::order::Transport;
use crate::ports::{NodeAddress, NodeApi};
use crate::store::Answers;
use crate::telemetry::{Telemetry, method_label};

/// The OpenAPI 3.1 document of this API, committed as `docs/openapi.json`.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Largest request body (413 above it).
pub const MAX_BODY: usize = 64 * 1024;

/// How long one request may take, headers included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the node's addresses are cached for get_info's `uris`.
const URIS_TTL: Duration = Duration::from_secs(60);

/// The client's address, put in each request by the server.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Everything the handlers share.
pub struct RestState<N, C, E> {
    pub service: Arc<Service<N, C, E>>,
    pub cfg: RestConfig,
    limiter: Limiter<IpAddr>,
    uris: Mutex<Option<(Instant, Vec<String>)>>,
    /// get_info's body as last served, reused for [`INFO_TTL`].
    info_body: Mutex<Option<(Instant, Bytes)>>,
    /// get_order bodies as last served, by order id (the service's answers, serialized).
    order_bodies: Answers<Bytes>,
    /// The operator's running counts, when attached.
    telemetry: Option<Arc<Telemetry>>,
}

/// How long a get_info body is served again. The answer moves with the wallet and the fee
/// estimates, which the service itself reads at most every few seconds; create_order
/// checks every limit afresh, so a second-old get_info misleads no one (the
/// REST get_info was 0.5× the static floor).
const INFO_TTL: Duration = Duration::from_secs(1);

impl<N: NodeApi, C: Clock, E: Entropy> RestState<N, C, E> {
    pub fn new(service: Arc<Service<N, C, E>>, cfg: RestConfig) -> Self {
        let limiter = Limiter::new(cfg.limits);
        RestState {
            service,
            cfg,
            limiter,
            uris: Mutex::new(None),
            info_body: Mutex::new(None),
            order_bodies: Answers::default(),
            telemetry: None,
        }
    }

    /// Count requests, their latency and refusals into `t`.
    pub fn with_telemetry(mut self, t: Arc<Telemetry>) -> Self {
        self.telemetry = Some(t);
        self
    }

    /// The client's IP: the peer's, or the last `X-Forwarded-For` hop when the peer is the
    /// trusted proxy.
    fn client_ip(&self, addr: SocketAddr, headers: &HeaderMap) -> IpAddr {
        if self.cfg.trusted_proxy == Some(addr.ip())
            && let Some(ip) = headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
        {
            return ip;
        }
        addr.ip()
    }

    /// Unpaid orders created from `ip` on every node sharing the order book (the store
    /// counts them, so the limit holds across nodes). A pre-check only: the insert counts
    /// again in its transaction.
    async fn unpaid_from(&self, ip: IpAddr, now_ms: i64) -> Result<u64, crate::store::StoreError> {
        let ip = ip.to_string();
        let store = self.service.store();
        if store.reads_inline() {
            return store.unpaid_from_ip(&ip, now_ms);
        }
        store.call(move |s| s.unpaid_from_ip(&ip, now_ms)).await
    }

    /// `uris` of get_info: the override, or the node's addresses as `pubkey@host:port`, IPv4
    /// first (some wallets take `uris[0]`; Alby accepts only `pubkey@IPv4:port`), then DNS
    /// names, IPv6, Tor (docs/interop.md).
    async fn uris(&self) -> Vec<String> {
        if !self.cfg.uris.is_empty() {
            return self.cfg.uris.clone();
        }
        let cached = self.uris.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((at, u)) = &cached
            && at.elapsed() < URIS_TTL
        {
            return u.clone();
        }
        // Refreshed without holding the lock; concurrent refreshes just agree.
        let id = self.service.node_info().id;
        match self.service.node().node_addresses().await {
            Ok(addrs) => {
                let u = format_uris(&id.to_string(), addrs);
                *self.uris.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), u.clone()));
                u
            }
            Err(e) => {
                log::debug!("Cannot read the node's addresses: {e}");
                cached.map(|(_, u)| u).unwrap_or_default()
            }
        }
    }
}

/// `pubkey@host:port` for each address, in the order wallets want.
pub fn format_uris(id: &str, mut addrs: Vec<NodeAddress>) -> Vec<String> {
    let rank = |k: &str| match k {
        "ipv4" => 0,
        "dns" => 1,
        "ipv6" => 2,
        "torv3" | "torv2" => 3,
        _ => 4,
    };
    addrs.sort_by_key(|a| rank(&a.kind));
    addrs
        .into_iter()
        .map(|a| {
            if a.kind == "ipv6" || a.host.contains(':') {
                format!("{id}@[{}]:{}", a.host, a.port)
            } else {
                format!("{id}@{}:{}", a.host, a.port)
            }
        })
        .collect()
}

type Shared<N, C, E> = Arc<RestState<N, C, E>>;

/// The API's router: routes, per-IP limits, CORS, the request log.
pub fn router<N: NodeApi, C: Clock, E: Entropy>(state: Shared<N, C, E>) -> Router {
    let cors = cors_layer(&state.cfg.cors_origins);
    Router::new()
        .route("/api/v1/get_info", get(get_info::<N, C, E>))
        .route("/api/v1/create_order", axum::routing::post(create_order::<N, C, E>))
        .route("/api/v1/get_order", get(get_order::<N, C, E>))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), admit::<N, C, E>))
        .layer(middleware::from_fn(time_limit))
        .layer(cors)
        .layer(middleware::from_fn_with_state(state.clone(), log_request::<N, C, E>))
        .with_state(state)
}

/// CORS for browser wallets (BTCPay calls from the page): any origin unless configured, no
/// credentials, and a preflight answer for a JSON POST.
fn cors_layer(origins: &[String]) -> CorsLayer {
    let allow = if origins.is_empty() {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::ACCEPT])
        // A browser wallet may read how long to back off after a 429.
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

/// One debug line per request: method, path (never the query: an order id is a bearer
/// capability), status, duration; and the request's count and latency for the operator.
async fn log_request<N: NodeApi, C: Clock, E: Entropy>(
    State(state): State<Shared<N, C, E>>,
    req: Request,
    next: Next,
) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let start = Instant::now();
    let resp = next.run(req).await;
    let took = start.elapsed();
    log::debug!("REST {method} {path} {} {} µs", resp.status().as_u16(), took.as_micros());
    // Refusals are counted by `admit`; preflights are not requests.
    if let Some(t) = &state.telemetry
        && method != Method::OPTIONS
        && resp.status() != StatusCode::TOO_MANY_REQUESTS
    {
        let name = method_label(path.strip_prefix("/api/v1/").unwrap_or("other"));
        t.request("rest", name, resp.status().is_success(), took);
    }
    resp
}

/// The whole request, body included, within [`REQUEST_TIMEOUT`]; over it, 408 in the error
/// body every wallet reads (inside the CORS layer, so a browser can read it too).
async fn time_limit(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => errors::plain(StatusCode::REQUEST_TIMEOUT, "the request took too long; send it again"),
    }
}

/// Per-IP rate limit, weighted like the P2P limiter (reads cost a tenth).
async fn admit<N: NodeApi, C: Clock, E: Entropy>(
    State(state): State<Shared<N, C, E>>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let Some(ClientAddr(addr)) = req.extensions().get::<ClientAddr>().copied() else {
        return next.run(req).await;
    };
    let ip = state.client_ip(addr, req.headers());
    let cost = if req.uri().path() == "/api/v1/create_order" { Cost::Full } else { Cost::Read };
    match state.limiter.admit_costing(ip, Instant::now(), cost) {
        Ok(_inflight) => {
            let mut req = req;
            req.extensions_mut().insert(ClientIp(ip));
            next.run(req).await
        }
        Err((refusal, _)) => {
            if let Some(t) = &state.telemetry {
                t.refused("rest", refusal.label());
            }
            // 429 with Retry-After for every refusal: rate, in-flight and overload alike.
            let mut resp = error_response(&RpcError::client_rejected(refusal.describe()));
            *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
    }
}

/// The client's IP as the limits see it.
#[derive(Debug, Clone, Copy)]
struct ClientIp(IpAddr);

/// 200 with `v` serialized once, straight to the body (the P2P serializers).
fn json_ok<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_string(v) {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => error_response(&RpcError::internal("cannot serialize the response")),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|_| RpcError::internal("cannot serialize the response"))
}

/// `GET /api/v1/get_info`: the P2P options (one serializer), the seed's legacy on-chain
/// fields (`null`: no on-chain payment), and `uris`.
async fn get_info<N: NodeApi, C: Clock, E: Entropy>(State(state): State<Shared<N, C, E>>) -> Response {
    let cached = state.info_body.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some((at, body)) = cached
        && at.elapsed() < INFO_TTL
    {
        return json_body(body);
    }
    let info = match state.service.get_info().await.and_then(|i| to_json(&i)) {
        Ok(v) => v,
        Err(e) => return error_response(&e),
    };
    let mut body = match info {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    // The REST document's legacy fields: the on-chain option's values, null when it is off.
    body.entry("min_onchain_payment_confirmations").or_insert(Value::Null);
    body.entry("min_onchain_payment_size_sat").or_insert(Value::Null);
    body.insert("uris".into(), json!(state.uris().await));
    match serde_json::to_vec(&Value::Object(body)) {
        Ok(bytes) => {
            let bytes = Bytes::from(bytes);
            *state.info_body.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), bytes.clone()));
            json_body(bytes)
        }
        Err(_) => error_response(&RpcError::internal("cannot serialize the response")),
    }
}

/// 200 with a body already serialized.
fn json_body(body: Bytes) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Whether a `Content-Type` header value names JSON: `application/json` in any case, with
/// any parameters (`; charset=utf-8`). A missing or non-ASCII value is not JSON (415).
pub fn is_json_content_type(value: Option<&HeaderValue>) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// The REST body decoder of `POST /api/v1/create_order` (the body already bounded to
/// [`MAX_BODY`]): the params object, or the error REST answers with 400. Anything that is
/// not one JSON value is `-32700` (as over P2P, T-02); a JSON value that is not an object
/// is `-32600`. Public so that the fuzz targets (`fuzz/`) reach it without a server.
pub fn decode_create_order_body(body: &[u8]) -> Result<Map<String, Value>, RpcError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(RpcError::invalid_request("the body must be a JSON object")),
        Err(e) => Err(RpcError::parse_error(format!("the body is not JSON: {e}"))),
    }
}

/// The params of `GET /api/v1/get_order?order_id=` from the request URI, as the `Query`
/// extractor reads them: every `key=value` pair percent-decoded into a string, a repeated
/// key keeping its last value. A query that cannot be read gives `{}` (answered "order_id
/// is required"). Public for the fuzz targets, like [`decode_create_order_body`].
pub fn decode_get_order_query(uri: &Uri) -> Map<String, Value> {
    let mut params = Map::new();
    if let Ok(Query(q)) = Query::<HashMap<String, String>>::try_from_uri(uri) {
        for (k, v) in q {
            params.insert(k, Value::String(v));
        }
    }
    params
}

/// `POST /api/v1/create_order`: the P2P params plus `public_key` (rulings 3, 9).
async fn create_order<N: NodeApi, C: Clock, E: Entropy>(
    State(state): State<Shared<N, C, E>>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let ip = req.extensions().get::<ClientIp>().map(|c| c.0);
    if !is_json_content_type(headers.get(header::CONTENT_TYPE)) {
        return errors::plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the order as JSON (Content-Type: application/json)",
        );
    }
    let bytes: Bytes = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return errors::plain(StatusCode::PAYLOAD_TOO_LARGE, &format!("the body is over {MAX_BODY} bytes"));
        }
    };
    let params = match decode_create_order_body(&bytes) {
        Ok(m) => m,
        Err(e) => return error_response(&e),
    };
    let now = chrono::Utc::now().timestamp_millis();
    if let Some(ip) = ip {
        match state.unpaid_from(ip, now).await {
            Ok(n) if n >= u64::from(state.cfg.max_unpaid_per_ip) => {
                return error_response(&RpcError::client_rejected(
                    "too many unpaid orders from this address; pay or let them expire first",
                ));
            }
            Ok(_) => {}
            Err(e) => return error_response(&crate::lsps1::service::store_error(&e)),
        }
    }
    let origin = ip.map(|ip| (ip, state.cfg.max_unpaid_per_ip));
    match state.service.create_order_from(None, Transport::Rest, &params, origin).await {
        Ok(order) => json_ok(&order),
        Err(e) => error_response(&e),
    }
}

/// `GET /api/v1/get_order?order_id=`: a bearer read by order id (ruling 9).
async fn get_order<N: NodeApi, C: Clock, E: Entropy>(State(state): State<Shared<N, C, E>>, uri: Uri) -> Response {
    let params = decode_get_order_query(&uri);
    // Only a well-formed lookup is cached; anything else goes to the service for its error.
    let id = match params.get("order_id") {
        Some(Value::String(id)) if params.len() == 1 => Some(id.clone()),
        _ => None,
    };
    // Read before the store is: a write racing this read moves it on, and the entry stored
    // below is then already out of date.
    let generation = state.service.store().generation();
    let now = state.service.now_ms();
    if let Some((body, _)) = id.as_deref().and_then(|id| state.order_bodies.get(id, generation, now)) {
        return json_body(body);
    }
    match state.service.get_order_until(None, &params).await {
        Ok((o, until_ms)) => match serde_json::to_vec(&o) {
            Ok(body) => {
                let body = Bytes::from(body);
                if let Some(id) = id {
                    state.order_bodies.put(id, generation, until_ms, body.clone());
                }
                json_body(body)
            }
            Err(_) => error_response(&RpcError::internal("cannot serialize the response")),
        },
        Err(e) => error_response(&e),
    }
}

async fn openapi() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// A static answer: the floor of the REST benchmark, and a liveness probe for proxies.
async fn health() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#).into_response()
}

async fn not_found() -> Response {
    errors::plain(StatusCode::NOT_FOUND, "no such route; see /api/v1/openapi.json")
}

async fn method_not_allowed() -> Response {
    errors::plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
}

#[cfg(test)]
mod tests;
