//! The console's HTTP side: the page's files, its JSON API (each route one `lsps1-*`
//! command), `/metrics`, and the guards around them: the rune of every request checked by
//! `checkrune` (401 without a valid one, 403 when it does not allow the command), a Host
//! check against DNS rebinding, a strict CSP, `no-store`, no CORS, and actions only as
//! POST with a JSON body and the `Rune` header, which no cross-site form can send.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::{CommandError, INVALID_PARAMS, NOT_NOW, Operator};
use crate::config::AdminConfig;
use crate::lsps0::codes::NOT_FOUND;
use crate::ports::RuneVerdict;
use crate::rest::ClientAddr;

/// The page's files, embedded: nothing is fetched from anywhere else.
const ASSETS: [(&str, &str, &str); 4] = [
    ("/", "text/html; charset=utf-8", include_str!("assets/index.html")),
    ("/assets/app.js", "text/javascript; charset=utf-8", include_str!("assets/app.js")),
    ("/assets/app.css", "text/css; charset=utf-8", include_str!("assets/app.css")),
    ("/assets/favicon.svg", "image/svg+xml", include_str!("assets/favicon.svg")),
];

/// Everything the page uses comes from the plugin itself; nothing may frame it.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Largest action body.
const MAX_BODY: usize = 16 * 1024;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Orders per page when the page does not say.
const PAGE: u64 = 50;
/// Leases the page lists: those ending within a month.
const LEASE_WINDOW_BLOCKS: u32 = crate::store::BLOCKS_1M;

struct Console<O> {
    operator: Arc<O>,
    cfg: AdminConfig,
    /// `Host` values the page may be reached by (lowercase).
    hosts: Vec<String>,
}

type Shared<O> = Arc<Console<O>>;

fn hosts_for(cfg: &AdminConfig, bound: SocketAddr) -> Vec<String> {
    let port = bound.port();
    let mut hosts = vec![format!("localhost:{port}"), bound.to_string()];
    if bound.ip().is_unspecified() || bound.ip().is_loopback() {
        hosts.push(format!("127.0.0.1:{port}"));
        hosts.push(format!("[::1]:{port}"));
    }
    for h in &cfg.hosts {
        hosts.push(h.clone());
        hosts.push(format!("{h}:{port}"));
    }
    hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect()
}

/// The console's routes for `operator`, as served on `bound`.
pub fn router<O: Operator>(operator: Arc<O>, cfg: AdminConfig, bound: SocketAddr) -> Router {
    let hosts = hosts_for(&cfg, bound);
    let state = Arc::new(Console { operator, cfg, hosts });
    let mut r = Router::new();
    for (path, kind, body) in ASSETS {
        r = r.route(path, get(move || async move { ([(header::CONTENT_TYPE, kind)], body) }));
    }
    r.route("/api/status", get(status::<O>))
        .route("/api/orders", get(orders::<O>))
        .route("/api/orders/{id}", get(order::<O>))
        .route("/api/held", get(held::<O>))
        .route("/api/leases", get(leases::<O>))
        .route("/api/cancelorder", post(action::<O>))
        .route("/api/allowclose", post(action::<O>))
        .route("/metrics", get(metrics::<O>))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such page") })
        .method_not_allowed_fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed") })
        .layer(middleware::from_fn_with_state(state.clone(), guard::<O>))
        .with_state(state)
}

/// Serve the console on `cfg.bind`. Returns the address bound, if any.
pub async fn spawn<O: Operator>(operator: Arc<O>, cfg: AdminConfig) -> Option<SocketAddr> {
    let addr = cfg.bind?;
    // Bind first: the Host check needs the port actually bound (port 0 in tests).
    let probe = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l.local_addr().ok(),
        Err(e) => {
            log::warn!("Operator console disabled on {addr}: {e}");
            return None;
        }
    }?;
    let app = router(operator, cfg.clone(), probe);
    let bound = crate::rest::listen(app, &[probe], cfg.tls.as_ref(), 64, "Operator console").await;
    let local = bound.first().copied()?;
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    log::info!("Operator console on {scheme}://{local}/ (metrics at /metrics)");
    Some(local)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], json!({ "error": message }).to_string()).into_response()
}

fn json_response(v: &Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn command_error(e: &CommandError) -> Response {
    let status = match e.code {
        INVALID_PARAMS => StatusCode::BAD_REQUEST,
        NOT_FOUND => StatusCode::NOT_FOUND,
        NOT_NOW => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.message)
}

/// Host check, time limit and the security headers of every answer.
async fn guard<O: Operator>(State(c): State<Shared<O>>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_ascii_lowercase);
    let mut resp = if !host.is_some_and(|h| c.hosts.contains(&h)) {
        // A page loaded under another name (DNS rebinding) must not reach the API.
        error(StatusCode::MISDIRECTED_REQUEST, "this host name is not served here (see lsps1-admin-host)")
    } else {
        match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
            Ok(r) => r,
            Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the request took too long"),
        }
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// The rune a request carries: the `Rune` header (the page), or `Authorization: Bearer`
/// (Prometheus).
fn rune_of(headers: &HeaderMap) -> Option<String> {
    let rune = headers.get("rune").and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty());
    let bearer = || {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    rune.or_else(bearer).map(str::to_owned)
}

/// Check the request's rune for `method` with `params`: `Err` is the answer to send.
async fn authorize<O: Operator>(
    c: &Console<O>,
    headers: &HeaderMap,
    method: &'static str,
    params: &Value,
) -> Result<(), Response> {
    let Some(rune) = rune_of(headers) else {
        return Err(error(StatusCode::UNAUTHORIZED, "a rune is needed: send it in the Rune header"));
    };
    match c.operator.check_rune(rune, method, params.clone()).await {
        Ok(RuneVerdict::Valid) => Ok(()),
        Ok(RuneVerdict::Invalid(m)) => Err(error(StatusCode::UNAUTHORIZED, &format!("this rune is not valid: {m}"))),
        Ok(RuneVerdict::NotPermitted(m)) => {
            Err(error(StatusCode::FORBIDDEN, &format!("this rune does not allow {method}: {m}")))
        }
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, &format!("cannot check the rune with lightningd: {e}"))),
    }
}

/// Run `method` for the page, its rune checked against the same method and params.
async fn run<O: Operator>(c: &Console<O>, headers: &HeaderMap, method: &'static str, params: Value) -> Response {
    if let Err(resp) = authorize(c, headers, method, &params).await {
        return resp;
    }
    match c.operator.command(method, params).await {
        Ok(v) => json_response(&v),
        Err(e) => command_error(&e),
    }
}

/// Query params with empty values dropped (an empty filter field means "any").
fn query_params(q: &[(String, String)]) -> Map<String, Value> {
    q.iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k.clone(), Value::String(v.trim().to_string())))
        .collect()
}

async fn status<O: Operator>(
    State(c): State<Shared<O>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let mut params = Map::new();
    for (k, v) in query_params(&q) {
        match (k.as_str(), v.as_str().and_then(|s| s.parse::<u64>().ok())) {
            ("days", Some(n)) => params.insert(k, json!(n)),
            _ => return error(StatusCode::BAD_REQUEST, &format!("unknown or bad query parameter '{k}'")),
        };
    }
    run(&c, &headers, "lsps1-status", Value::Object(params)).await
}

async fn orders<O: Operator>(
    State(c): State<Shared<O>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let mut params = query_params(&q);
    // The page's search box: the start of an order id.
    if let Some(q) = params.remove("q") {
        params.insert("id_prefix".into(), q);
    }
    let num = |v: Option<&Value>| v.and_then(Value::as_str).map(|s| s.parse::<u64>().ok());
    let (Some(limit), Some(offset)) =
        (num(params.get("limit")).unwrap_or(Some(PAGE)), num(params.get("offset")).unwrap_or(Some(0)))
    else {
        return error(StatusCode::BAD_REQUEST, "limit and offset must be integers");
    };
    let limit = limit.clamp(1, 500);
    // One more than shown tells whether there is a next page.
    params.insert("limit".into(), json!(limit + 1));
    params.insert("offset".into(), json!(offset));
    if let Err(resp) = authorize(&c, &headers, "lsps1-listorders", &Value::Object(params.clone())).await {
        return resp;
    }
    match c.operator.command("lsps1-listorders", Value::Object(params)).await {
        Ok(mut v) => {
            let mut list = v.get_mut("orders").and_then(Value::as_array_mut).map(std::mem::take).unwrap_or_default();
            let more = list.len() as u64 > limit;
            list.truncate(limit as usize);
            json_response(&json!({ "orders": list, "offset": offset, "limit": limit, "more": more }))
        }
        Err(e) => command_error(&e),
    }
}

async fn order<O: Operator>(State(c): State<Shared<O>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    run(&c, &headers, "lsps1-getorder", json!({ "order_id": id })).await
}

async fn held<O: Operator>(State(c): State<Shared<O>>, headers: HeaderMap) -> Response {
    run(&c, &headers, "lsps1-listheld", json!({})).await
}

async fn leases<O: Operator>(State(c): State<Shared<O>>, headers: HeaderMap) -> Response {
    run(&c, &headers, "lsps1-listleases", json!({ "within_blocks": LEASE_WINDOW_BLOCKS })).await
}

/// `POST /api/cancelorder` and `/api/allowclose`: a JSON object body, the command's params.
async fn action<O: Operator>(State(c): State<Shared<O>>, req: Request) -> Response {
    let method = match req.uri().path() {
        "/api/cancelorder" => "lsps1-cancelorder",
        _ => "lsps1-allowclose",
    };
    let json_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !json_body {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the action as application/json");
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large");
    };
    let params: Value = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        _ => return error(StatusCode::BAD_REQUEST, "the body must be a JSON object"),
    };
    run(&c, &parts.headers, method, params).await
}

async fn metrics<O: Operator>(State(c): State<Shared<O>>, req: Request) -> Response {
    // Behind a reverse proxy every client comes from loopback: a forwarded request is never
    // taken for a local scraper.
    let forwarded = req.headers().contains_key("x-forwarded-for") || req.headers().contains_key(header::FORWARDED);
    let loopback = !forwarded && req.extensions().get::<ClientAddr>().is_some_and(|a| a.0.ip().is_loopback());
    if !(c.cfg.metrics_open_on_loopback && loopback)
        && let Err(resp) = authorize(&c, req.headers(), "lsps1-status", &json!({})).await
    {
        return resp;
    }
    match c.operator.metrics().await {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, crate::telemetry::CONTENT_TYPE)], text).into_response(),
        Err(e) => command_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runes_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(rune_of(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(rune_of(&h).as_deref(), Some("abc"));
        h.insert("rune", HeaderValue::from_static("def"));
        assert_eq!(rune_of(&h).as_deref(), Some("def"));
    }

    #[test]
    fn hosts_include_the_bound_port_only() {
        let cfg = AdminConfig { hosts: vec!["lsp.example".into()], ..AdminConfig::default() };
        let hosts = hosts_for(&cfg, "127.0.0.1:3011".parse().unwrap());
        for h in ["localhost:3011", "127.0.0.1:3011", "[::1]:3011", "lsp.example", "lsp.example:3011"] {
            assert!(hosts.contains(&h.to_string()), "{h}");
        }
        assert!(!hosts.contains(&"localhost:80".to_string()));
        assert!(!hosts.contains(&"evil.example:3011".to_string()));
    }
}
