//! The REST API end to end: the real plugin binary behind the lightningd
//! stand-in, spoken to over HTTP/1.1 (and HTTPS) by a tiny raw client, every answer checked
//! against the committed OpenAPI document (`docs/openapi.json`).
//!
//! `docs/openapi.json` carries the request and response examples; `docs/interop.md` the bodies ZEUS and Alby send and the error body every
//! REST wallet displays; rulings 3 (leniency) and 9 (`public_key`, bearer `get_order`).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lightning_invoice::Bolt11Invoice;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::standin::{Builder, HtlcSpec, Reply, StandIn, fixture, peer, req};

const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// A raw HTTP/1.1 client.

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("HTTP {} body is not JSON ({e}): {}", self.status, self.text()))
    }
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = vec![];
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").ok_or("chunk size line")?;
        let line = std::str::from_utf8(&b[..eol]).map_err(|e| e.to_string())?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).map_err(|e| e.to_string())?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Split a whole HTTP/1.1 response (read to EOF) into status, headers and body.
pub fn parse_response(raw: &[u8]) -> Result<Resp, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(raw)))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|e| e.to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    if !status_line.starts_with("HTTP/1.1 ") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 =
        status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body)?;
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad content-length {len}"))?;
        if body.len() < len {
            return Err(format!("body truncated: {} of {len} bytes", body.len()));
        }
        body.truncate(len);
    }
    Ok(Resp { status, headers, body })
}

/// Write the request while reading the answer to EOF (so that an early answer, a 413 say,
/// is read even when the server stops reading the body).
async fn talk<S: AsyncRead + AsyncWrite + Unpin>(stream: S, raw: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(stream);
    let write = async {
        let _ = w.write_all(raw).await;
        let _ = w.flush().await;
        w
    };
    let read = async {
        let mut buf = vec![];
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match r.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // A reset after the answer (body left unread), or a TLS close without
                // close_notify: what arrived is the answer.
                Err(_) => break,
            }
        }
        buf
    };
    let (_w, buf) = tokio::join!(write, read);
    buf
}

/// `METHOD target HTTP/1.1` with Host, `Connection: close`, the headers, and the body with
/// its Content-Length (unless a Transfer-Encoding header is given).
pub fn build_request(method: &str, target: &str, host: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    let chunked = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
    if !chunked && (!body.is_empty() || matches!(method, "POST" | "PUT")) {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A client of one listener; every answer of `call` is checked against the OpenAPI document.
#[derive(Clone)]
pub struct Api {
    pub addr: SocketAddr,
    tls: Option<TlsConnector>,
    /// (method, path, status) of every answer seen through `call`.
    pub seen: Arc<Mutex<BTreeSet<(String, String, u16)>>>,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api { addr, tls: None, seen: Default::default() }
    }

    /// HTTPS, trusting only `cert`.
    pub fn tls(addr: SocketAddr, cert: CertificateDer<'static>) -> Api {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("add the test certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Api { addr, tls: Some(TlsConnector::from(Arc::new(cfg))), seen: Default::default() }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Send raw bytes, read the answer to EOF. No check.
    pub async fn exchange(&self, raw: &[u8]) -> Result<Resp, String> {
        let go = async {
            let tcp = TcpStream::connect(self.addr).await.map_err(|e| format!("connect {}: {e}", self.addr))?;
            let bytes = match &self.tls {
                None => talk(tcp, raw).await,
                Some(c) => {
                    let name = ServerName::try_from("localhost").expect("name");
                    let tls = c.connect(name, tcp).await.map_err(|e| format!("TLS handshake: {e}"))?;
                    talk(tls, raw).await
                }
            };
            parse_response(&bytes)
        };
        tokio::time::timeout(WAIT, go).await.map_err(|_| format!("no answer from {} within {WAIT:?}", self.addr))?
    }

    /// One request; the answer must conform to the OpenAPI document.
    pub async fn call(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let raw = build_request(method, target, &self.host(), headers, body);
        let resp = self.exchange(&raw).await.unwrap_or_else(|e| panic!("{method} {target}: {e}"));
        let path = target.split('?').next().unwrap_or(target);
        if method != "OPTIONS" && method != "HEAD" {
            if let Err(e) = openapi().check(method, path, &resp) {
                panic!("{method} {target}: the answer does not conform to docs/openapi.json: {e}");
            }
            let (m, p) = openapi().key(method, path);
            self.seen.lock().unwrap().insert((m, p, resp.status));
        }
        resp
    }

    pub async fn get(&self, target: &str) -> Resp {
        self.call("GET", target, &[], b"").await
    }

    pub async fn post_json(&self, target: &str, body: &str) -> Resp {
        self.call("POST", target, &[("Content-Type", "application/json")], body.as_bytes()).await
    }

    pub async fn create_order(&self, body: &Value) -> Resp {
        self.post_json("/api/v1/create_order", &body.to_string()).await
    }

    pub async fn get_order(&self, order_id: &str) -> Resp {
        self.get(&format!("/api/v1/get_order?order_id={order_id}")).await
    }
}

// ---------------------------------------------------------------------------------------
// The OpenAPI document as a validator.

pub const OPENAPI_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

pub struct OpenApi {
    pub doc: Value,
    cache: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

pub fn openapi() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let text = std::fs::read_to_string(OPENAPI_PATH).expect("docs/openapi.json");
        let doc: Value = serde_json::from_str(&text).expect("docs/openapi.json is JSON");
        OpenApi { doc, cache: Mutex::new(HashMap::new()) }
    })
}

/// A JSON pointer token.
fn esc(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

impl OpenApi {
    /// The value at a JSON pointer of the document.
    pub fn at(&self, pointer: &str) -> Option<&Value> {
        self.doc.pointer(pointer)
    }

    /// Follow `$ref`s (local ones) from `pointer`.
    fn follow(&self, mut pointer: String) -> Result<String, String> {
        for _ in 0..8 {
            let v = self.at(&pointer).ok_or_else(|| format!("nothing at {pointer}"))?;
            match v.get("$ref").and_then(Value::as_str) {
                Some(r) => pointer = r.strip_prefix('#').ok_or_else(|| format!("non-local $ref {r}"))?.to_string(),
                None => return Ok(pointer),
            }
        }
        Err(format!("$ref loop at {pointer}"))
    }

    /// The pointer of the response object the document gives for `status` to `method path`.
    pub fn response(&self, method: &str, path: &str, status: u16) -> Result<String, String> {
        let m = method.to_ascii_lowercase();
        let generic = |name: &str| Ok(format!("/components/responses/{name}"));
        let ptr = match self.doc["paths"].get(path) {
            Some(item) => match item.get(&m) {
                Some(op) => {
                    if op["responses"].get(status.to_string()).is_none() {
                        return Err(format!("status {status} is not documented for {method} {path}"));
                    }
                    Ok(format!("/paths/{}/{m}/responses/{status}", esc(path)))
                }
                None if status == 405 => generic("MethodNotAllowed"),
                None if status == 429 => generic("TooManyRequests"),
                None => Err(format!("{method} {path} answered {status}; only 405 (or 429) is documented")),
            },
            None if status == 404 => generic("RouteNotFound"),
            None if status == 429 => generic("TooManyRequests"),
            None => Err(format!("unknown route {path} answered {status}; only 404 (or 429) is documented")),
        }?;
        self.follow(ptr)
    }

    /// A validator for the schema at `pointer` (a schema of this document), compiled in a
    /// root that embeds the document's `paths` and `components` so its `$ref`s resolve.
    pub fn validator(&self, pointer: &str) -> Arc<jsonschema::Validator> {
        let mut cache = self.cache.lock().unwrap();
        cache
            .entry(pointer.to_string())
            .or_insert_with(|| {
                assert!(self.at(pointer).is_some(), "no schema at {pointer}");
                let root = json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "paths": self.doc["paths"],
                    "components": self.doc["components"],
                    "$ref": format!("#{pointer}"),
                });
                Arc::new(jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("schema at {pointer}: {e}")))
            })
            .clone()
    }

    /// Validate `v` against the schema at `pointer`.
    pub fn validate(&self, pointer: &str, v: &Value) -> Result<(), String> {
        let val = self.validator(pointer);
        let errors: Vec<String> = val.iter_errors(v).map(|e| format!("{e} (at {})", e.instance_path)).collect();
        if errors.is_empty() { Ok(()) } else { Err(format!("{} against {pointer}: {}", v, errors.join("; "))) }
    }

    /// Validate `v` against `#/components/schemas/<name>`.
    pub fn validate_schema(&self, name: &str, v: &Value) -> Result<(), String> {
        self.validate(&format!("/components/schemas/{name}"), v)
    }

    /// An answer of the server to `method path` conforms to the document: a documented
    /// status, JSON, a body valid against that status's schema, the documented headers, and
    /// (errors) the top-level message repeating `error.data.message`, nothing internal.
    pub fn check(&self, method: &str, path: &str, r: &Resp) -> Result<(), String> {
        let resp = self.response(method, path, r.status)?;
        let ctype = r.header("content-type").unwrap_or("");
        if !ctype.starts_with("application/json") {
            return Err(format!("HTTP {}: content-type {ctype:?}, body {:?}", r.status, r.text()));
        }
        let body: Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("HTTP {}: the body is not JSON ({e}): {:?}", r.status, r.text()))?;
        let schema = format!("{resp}/content/application~1json/schema");
        if self.at(&schema).is_none() {
            return Err(format!("no application/json schema at {schema}"));
        }
        self.validate(&schema, &body).map_err(|e| format!("HTTP {}: {e}", r.status))?;
        if let Some(h) = self.at(&format!("{resp}/headers")).and_then(Value::as_object) {
            for name in h.keys() {
                if r.header(name).is_none() {
                    return Err(format!("HTTP {}: header {name} missing", r.status));
                }
            }
        }
        if r.status >= 400 {
            if body["message"] != body["error"]["data"]["message"] {
                return Err(format!("HTTP {}: top-level message is not error.data.message: {body}", r.status));
            }
            let text = r.text();
            for leak in ["/work/", "/home/", "/root/", "src/", ".rs:", "panicked", "backtrace", "RUST_"] {
                if text.contains(leak) {
                    return Err(format!("HTTP {}: the error body leaks {leak:?}: {text}", r.status));
                }
            }
        }
        Ok(())
    }

    /// Where the document lists an answer to `method path`: its own operation; for a
    /// method the route does not take (405), the route's operation; `*` for unknown paths.
    pub fn key(&self, method: &str, path: &str) -> (String, String) {
        match self.doc["paths"].get(path).and_then(Value::as_object) {
            Some(item) if item.contains_key(&method.to_ascii_lowercase()) => (method.to_string(), path.to_string()),
            Some(item) => (item.keys().next().expect("an operation").to_ascii_uppercase(), path.to_string()),
            None => (method.to_string(), "*".to_string()),
        }
    }

    /// Every (method, path, status) the document lists for its routes.
    pub fn documented(&self) -> BTreeSet<(String, String, u16)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for (m, op) in item.as_object().expect("path item") {
                for status in op["responses"].as_object().expect("responses").keys() {
                    out.insert((m.to_ascii_uppercase(), path.clone(), status.parse().expect("numeric status")));
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Starting the plugin with a REST listener.

/// A stand-in whose REST listener binds an ephemeral IPv4 port, with limits high enough
/// that a test's own requests never hit them.
pub fn builder() -> Builder {
    StandIn::builder()
        .option("lsps1-rest-bind", json!(["127.0.0.1:0"]))
        .option("lsps1-rest-requests-per-minute", json!(1_000_000))
        .option("lsps1-rest-burst", json!(1_000_000))
        .option("lsps1-rest-max-unpaid-orders-per-ip", json!(100_000))
        .option("lsps1-max-unpaid-orders-per-peer", json!(100_000))
}

/// The address in `REST API listening on http://ADDR/api/v1/`.
fn listen_addr(line: &str) -> SocketAddr {
    let rest = line.split("://").nth(1).unwrap_or_else(|| panic!("no URL in {line:?}"));
    let addr = rest.split("/api/v1/").next().unwrap_or(rest);
    addr.parse().unwrap_or_else(|e| panic!("{addr:?} in {line:?}: {e}"))
}

/// Every address the listener logged (after the first such line appeared).
pub async fn listening(s: &StandIn) -> Vec<SocketAddr> {
    s.wait_log(Some("info"), "REST API listening on ").await;
    s.logs()
        .into_iter()
        .filter(|(l, m)| l == "info" && m.contains("REST API listening on "))
        .map(|(_, m)| listen_addr(&m))
        .collect()
}

pub async fn start(b: Builder) -> (StandIn, Api) {
    let s = b.start().await;
    assert!(s.disabled().is_none(), "{:?}", s.disabled());
    let addrs = listening(&s).await;
    (s, Api::new(addrs[0]))
}

/// ZEUS's REST body (docs/interop.md) for the node `pk`.
pub fn zeus_body(pk: &bitcoin::secp256k1::PublicKey) -> Value {
    let mut b = crate::lsps1::zeus_params();
    b["public_key"] = json!(pk.to_string());
    b
}

/// An Alby Hub style body: numeric sats, its token, a refund address, get_info's max expiry.
fn alby_body(pk: &bitcoin::secp256k1::PublicKey) -> Value {
    json!({
        "lsp_balance_sat": 1_000_000,
        "client_balance_sat": 0,
        "required_channel_confirmations": 1,
        "funding_confirms_within_blocks": 6,
        "channel_expiry_blocks": 13140,
        "token": "AlbyHub/1.18.0",
        "refund_onchain_address": "bcrt1qufr4lmec5a8humz7anckxk092uel83r2eqr33s",
        "announce_channel": false,
        "public_key": pk.to_string()
    })
}

/// `body` with `field` set to the raw JSON text `raw` (exponents, huge numbers, `-0`: what
/// `json!` cannot write).
pub fn with_raw(body: &Value, field: &str, raw: &str) -> String {
    let mut b = body.clone();
    b.as_object_mut().unwrap().remove(field);
    let text = b.to_string();
    format!("{{\"{field}\":{raw},{}", &text[1..])
}

/// Assert an error answer: status, LSPS code, and `data.property` when given.
fn assert_error(r: &Resp, status: u16, code: i64, property: Option<&str>) -> Value {
    let b = r.json();
    assert_eq!((r.status, b["error"]["code"].as_i64()), (status, Some(code)), "{}", r.text());
    if let Some(p) = property {
        assert_eq!(b["error"]["data"]["property"], json!(p), "{}", r.text());
    }
    // ZEUS: a truthy top-level `error` and a top-level `message`; BTCPay: error.data.message.
    assert!(b["error"].is_object() && b["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(b["error"]["message"].is_string() && b["error"]["data"]["message"].is_string());
    b
}

// ---------------------------------------------------------------------------------------
// The seed's examples.

/// The seed's `POST /api/v1/create_order` request example, byte for byte.
const SEED_CREATE_ORDER_REQUEST: &str = r#"{
    "lsp_balance_sat": "10000000",
    "client_balance_sat": "0",
    "required_channel_confirmations": 8,
    "funding_confirms_within_blocks": 6,
    "channel_expiry_blocks": 13000,
    "token": "",
    "refund_onchain_address": "",
    "announce_channel": false,
    "public_key": "025b7a68b4cd85668e65db6a343a4c607a462cdd010daa793f82be561a3316c5b1"
}"#;

/// The seed's create_order response example, byte for byte.
const SEED_CREATE_ORDER_RESPONSE: &str = r#"{
    "announce_channel": false,
    "channel": null,
    "channel_expiry_blocks": 13000,
    "client_balance_sat": "0",
    "funding_confirms_within_blocks": 6,
    "created_at": "2024-06-10T03:43:11.542Z",
    "lsp_balance_sat": "10000000",
    "order_id": "030fbe24220d35b9789a152bf3ada51b",
    "order_state": "CREATED",
    "payment": {
        "bolt11": {
            "order_total_sat": "81961",
            "fee_total_sat": "81961",
            "invoice": 
                "lntbs819610n1pnxvajwpp580gpd5r9v49sju3h3cz9kp773d3af6dheudrawzp4xdt3j5lkewqdyzgd5xzmnwv4kzqvpwxycrqvpsxqcrqgr5dusryvpjxsknqwfdxqu9gvfs8gerxw33xqhrsvfktgszsvpnxpnxyefjxseryvryxv6kywfh8qukzvf4xf3xvvmpv3sn2vtz9ycqzzsxqrrsssp53j80yq9srjgatu6rdghulwlup7yt2yq024erjrkdc6jcm9xckwmq9qyyssqlxdrprrqkggrpt6m0cnyl0kdpszpjt5ywdu4wzh4rak8j5x2v3xqrh5yr2pqsykmun5l7yqn6gp5vvckn77sxqm52sdlj2s534gps2gpt547pu",
            "state": "EXPECT_PAYMENT",
            "expires_at": "2024-06-10T04:43:11.542Z"
        }
    },
    "token": ""
}"#;

/// The seed's get_info response example. The seed is missing the comma after
/// `"supports_zero_channel_reserve": false`; added here, nothing else changed.
const SEED_GET_INFO_RESPONSE: &str = r#"{
    "max_channel_balance_sat": "10000000",
    "max_channel_expiry_blocks": 13000,
    "max_initial_client_balance_sat": "0",
    "max_initial_lsp_balance_sat": "10000000",
    "min_channel_balance_sat": "100000",
    "min_funding_confirms_within_blocks": 6,
    "min_initial_client_balance_sat": "0",
    "min_initial_lsp_balance_sat": "100000",
    "min_onchain_payment_confirmations": null,
    "min_onchain_payment_size_sat": null,
    "min_required_channel_confirmations": 6,
    "supports_zero_channel_reserve": false,
    "uris": [
        "031b301307574bbe9b9ac7b79cbe1700e31e544513eae0b5d7497483083f99e581@45.79.192.236:9735",
        "031b301307574bbe9b9ac7b79cbe1700e31e544513eae0b5d7497483083f99e581@r46dwvxcdri754hf6n3rwexmc53h5x4natg5g6hidnxfzejm5xrqn2id.onion:9735"
    ]
}"#;

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every field of `example` is in `actual` with the same JSON type, at every depth.
fn assert_same_shape(example: &Value, actual: &Value, at: &str) {
    match (example, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let av = a.get(k).unwrap_or_else(|| panic!("{at}.{k} missing in {actual}"));
                assert_same_shape(ev, av, &format!("{at}.{k}"));
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if let Some(e0) = e.first() {
                assert!(!a.is_empty(), "{at}: empty array, the example has items");
                for x in a {
                    assert_same_shape(e0, x, &format!("{at}[]"));
                }
            }
        }
        _ => assert_eq!(json_kind(example), json_kind(actual), "{at}: {example} vs {actual}"),
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

/// listfunds with one confirmed 50,000,000 sat output (shape of `rpc/listfunds.ok.json`).
fn big_wallet() -> Value {
    let mut f = fixture("rpc/listfunds.ok.json")["result"].clone();
    f["outputs"][0]["amount_msat"] = json!(50_000_000_000u64);
    f
}

#[tokio::test]
async fn seed_examples_verbatim() {
    let (s, api) = start(builder().reply("listfunds", Reply::Result(big_wallet()))).await;
    // The node announces Tor, IPv6, a DNS name and IPv4, in that order.
    let mut gi = fixture("rpc/getinfo.ok.json")["result"].clone();
    gi["id"] = json!(s.node_id.to_string());
    gi["blockheight"] = json!(s.height());
    gi["address"] = json!([
        {"type": "torv3", "address": "r46dwvxcdri754hf6n3rwexmc53h5x4natg5g6hidnxfzejm5xrqn2id.onion", "port": 9735},
        {"type": "ipv6", "address": "2001:db8::1", "port": 9735},
        {"type": "dns", "address": "lsp.example.com", "port": 9735},
        {"type": "ipv4", "address": "45.79.192.236", "port": 9735}
    ]);
    s.set_reply("getinfo", Reply::Result(gi));

    // get_info: every field of the seed's example, with the same JSON types, and no other.
    let r = api.get("/api/v1/get_info").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let info = r.json();
    let seed_info: Value = serde_json::from_str(SEED_GET_INFO_RESPONSE).unwrap();
    assert_same_shape(&seed_info, &info, "get_info");
    assert_eq!(keys(&info), keys(&seed_info), "flat options, the two legacy fields and uris");
    assert_eq!(info["min_onchain_payment_confirmations"], Value::Null);
    assert_eq!(info["min_onchain_payment_size_sat"], Value::Null);
    let id = s.node_id.to_string();
    assert_eq!(
        info["uris"],
        json!([
            format!("{id}@45.79.192.236:9735"),
            format!("{id}@lsp.example.com:9735"),
            format!("{id}@[2001:db8::1]:9735"),
            format!("{id}@r46dwvxcdri754hf6n3rwexmc53h5x4natg5g6hidnxfzejm5xrqn2id.onion:9735"),
        ]),
        "IPv4 first (Alby, ZEUS take uris[0])"
    );
    assert_eq!(info["max_initial_lsp_balance_sat"], json!("16777215"), "the wallet covers the configured max");

    // create_order: the seed's request, byte for byte.
    let r = api.post_json("/api/v1/create_order", SEED_CREATE_ORDER_REQUEST).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let order = r.json();
    let seed_order: Value = serde_json::from_str(SEED_CREATE_ORDER_RESPONSE).unwrap();
    assert_same_shape(&seed_order, &order, "create_order");
    let mut want = keys(&seed_order);
    want.insert("required_channel_confirmations".into());
    assert_eq!(
        keys(&order),
        want,
        "the seed's fields plus required_channel_confirmations (the reference LSP's REST document omits it)"
    );
    assert_eq!(order["required_channel_confirmations"], json!(8));
    assert_eq!(order["order_state"], json!("CREATED"));
    assert_eq!(order["lsp_balance_sat"], json!("10000000"));
    assert_eq!(order["token"], json!(""));
    assert_eq!(order["channel"], Value::Null);
    assert_eq!(keys(&order["payment"]), keys(&seed_order["payment"]), "bolt11 only");
    let b = &order["payment"]["bolt11"];
    assert_eq!(b["state"], json!("EXPECT_PAYMENT"));
    let inv: Bolt11Invoice = b["invoice"].as_str().unwrap().parse().expect("invoice");
    let total: u64 = b["order_total_sat"].as_str().unwrap().parse().unwrap();
    assert_eq!(inv.amount_milli_satoshis(), Some(total * 1000));
    assert_eq!(inv.recover_payee_pub_key(), s.node_id);
    // The order is the public_key's.
    let detail = s.command("lsps1-getorder", json!([order["order_id"]])).await.unwrap();
    assert_eq!(detail["order"], order);
    let list = s.command("lsps1-listorders", json!({})).await.unwrap();
    assert_eq!(
        list["orders"][0]["peer_id"],
        json!("025b7a68b4cd85668e65db6a343a4c607a462cdd010daa793f82be561a3316c5b1")
    );
}

#[tokio::test]
async fn zeus_and_alby_bodies_and_rest_leniency() {
    let (_s, api) = start(builder().option("lsps1-accept-unknown-tokens", json!(true))).await;
    let (_, pk) = peer(41);

    // ZEUS: strings for sats, "" token and refund address, client_info.
    let r = api.create_order(&zeus_body(&pk)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let o = r.json();
    assert_eq!((o["lsp_balance_sat"].clone(), o["token"].clone()), (json!("1000000"), json!("")));
    assert!(o.get("client_info").is_none() && o.get("public_key").is_none());

    // Alby Hub: numeric sats, its own token (accepted: lsps1-accept-unknown-tokens).
    let r = api.create_order(&alby_body(&pk)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let o = r.json();
    assert_eq!(o["lsp_balance_sat"], json!("1000000"), "answered as a string");
    assert_eq!(o["client_balance_sat"], json!("0"));
    assert_eq!(o["token"], json!("AlbyHub/1.18.0"), "mirrored");
    assert_eq!(o["channel_expiry_blocks"], json!(13140));

    // Ruling 3: counts as decimal strings are accepted over REST, answered as integers.
    let mut b = zeus_body(&pk);
    b["required_channel_confirmations"] = json!("8");
    b["funding_confirms_within_blocks"] = json!("6");
    b["channel_expiry_blocks"] = json!("13000");
    b["lsp_balance_sat"] = json!(1_000_000);
    let r = api.create_order(&b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let o = r.json();
    assert_eq!(
        (o["required_channel_confirmations"].clone(), o["funding_confirms_within_blocks"].clone()),
        (json!(8), json!(6))
    );
    assert_eq!(o["channel_expiry_blocks"], json!(13000));

    // Never signs, fractions, exponents, leading zeros or overflow: 400, -32602 on the field.
    let base = zeus_body(&pk);
    let refused: &[(&str, &str)] = &[
        ("lsp_balance_sat", r#""+1000000""#),
        ("lsp_balance_sat", r#""-1000000""#),
        ("lsp_balance_sat", r#""1000000.0""#),
        ("lsp_balance_sat", r#""1e6""#),
        ("lsp_balance_sat", r#"" 1000000""#),
        ("lsp_balance_sat", r#""01000000""#),
        ("lsp_balance_sat", r#""18446744073709551616""#),
        ("lsp_balance_sat", "-1000000"),
        ("lsp_balance_sat", "1000000.5"),
        ("lsp_balance_sat", "1000000.0"),
        ("lsp_balance_sat", "1e6"),
        ("lsp_balance_sat", "1E6"),
        ("lsp_balance_sat", "18446744073709551616"),
        ("client_balance_sat", "-0"),
        ("client_balance_sat", r#""-0""#),
        ("client_balance_sat", "0.0"),
        ("required_channel_confirmations", r#""+8""#),
        ("required_channel_confirmations", r#""-8""#),
        ("required_channel_confirmations", r#""8.0""#),
        ("required_channel_confirmations", r#""8e0""#),
        ("required_channel_confirmations", "8.5"),
        ("required_channel_confirmations", "8e0"),
        ("required_channel_confirmations", "-8"),
        ("required_channel_confirmations", "65536"),
        ("required_channel_confirmations", r#""65536""#),
        ("funding_confirms_within_blocks", r#""06""#),
        ("channel_expiry_blocks", "4294967296"),
        ("channel_expiry_blocks", r#""4294967296""#),
        ("channel_expiry_blocks", r#""1.3e4""#),
        ("channel_expiry_blocks", "13000.0"),
        ("channel_expiry_blocks", r#""""#),
    ];
    for (field, raw) in refused {
        let r = api.post_json("/api/v1/create_order", &with_raw(&base, field, raw)).await;
        assert_error(&r, 400, -32602, Some(field));
    }
}

#[tokio::test]
async fn error_statuses_and_bodies() {
    let (_, denied) = peer(42);
    let (s, api) =
        start(builder().option("lsps1-deny-node", json!([denied.to_string()])).option("lsps1-token", json!(["vip"])))
            .await;
    let (_, pk) = peer(43);
    let base = zeus_body(&pk);
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };

    // 400: -32602 (missing public_key, a bad one, unknown fields), 100, 102, -32700, -32600.
    let mut no_key = base.clone();
    no_key.as_object_mut().unwrap().remove("public_key");
    let e = assert_error(&api.create_order(&no_key).await, 400, -32602, Some("public_key"));
    assert_eq!(e["error"]["data"]["unrecognized"], json!([]), "ruling 5");
    assert_error(&api.create_order(&with("public_key", json!("02xx"))).await, 400, -32602, Some("public_key"));
    let off_curve = format!("02{:064x}", 5);
    assert_error(&api.create_order(&with("public_key", json!(off_curve))).await, 400, -32602, Some("public_key"));
    let e = assert_error(&api.create_order(&with("surprise", json!(1))).await, 400, -32602, None);
    assert_eq!(e["error"]["data"]["unrecognized"], json!(["surprise"]));
    assert_error(
        &api.create_order(&with("lsp_balance_sat", json!("50000"))).await,
        400,
        100,
        Some("min_initial_lsp_balance_sat"),
    );
    assert_error(
        &api.create_order(&with("channel_expiry_blocks", json!(99_999))).await,
        400,
        100,
        Some("max_channel_expiry_blocks"),
    );
    let e = assert_error(&api.create_order(&with("token", json!("nope"))).await, 400, 102, None);
    assert!(e["message"].as_str().unwrap().contains("token"), "{e}");
    assert_eq!(api.create_order(&with("token", json!("vip"))).await.status, 200, "a configured token");
    assert_error(&api.post_json("/api/v1/create_order", "{").await, 400, -32700, None);
    assert_error(&api.post_json("/api/v1/create_order", "").await, 400, -32700, None);
    assert_error(&api.post_json("/api/v1/create_order", "[]").await, 400, -32600, None);
    assert_error(&api.post_json("/api/v1/create_order", "\"x\"").await, 400, -32600, None);
    assert_error(&api.get("/api/v1/get_order").await, 400, -32602, Some("order_id"));
    assert_error(&api.get("/api/v1/get_order?order_id=").await, 400, -32602, Some("order_id"));
    assert_error(
        &api.get(&format!("/api/v1/get_order?order_id={}", "a".repeat(65))).await,
        400,
        -32602,
        Some("order_id"),
    );
    let e = assert_error(&api.get("/api/v1/get_order?order_id=x&y=1").await, 400, -32602, None);
    assert_eq!(e["error"]["data"]["unrecognized"], json!(["y"]));

    // 404: an unknown order (101), unknown routes (-32600).
    let e = assert_error(&api.get_order("00000000-0000-4000-8000-000000000000").await, 404, 101, None);
    assert!(e["message"].is_string());
    for path in ["/api/v1/nope", "/", "/api/v2/get_info", "/api/v1/get_info/", "/get_info", "/api/v1/create_order/x"] {
        assert_error(&api.get(path).await, 404, -32600, None);
    }
    assert_error(
        &api.call("POST", "/api/v1/nope", &[("Content-Type", "application/json")], b"{}").await,
        404,
        -32600,
        None,
    );

    // 403: a denied node (ruling 10), code 1.
    assert_error(&api.create_order(&zeus_body(&denied)).await, 403, 1, None);

    // 405 on every route with a method it does not take.
    for (m, path, allow) in [
        ("DELETE", "/api/v1/get_info", "GET"),
        ("POST", "/api/v1/get_info", "GET"),
        ("PUT", "/api/v1/create_order", "POST"),
        ("GET", "/api/v1/create_order", "POST"),
        ("DELETE", "/api/v1/get_order", "GET"),
        ("POST", "/api/v1/openapi.json", "GET"),
        ("PATCH", "/api/v1/health", "GET"),
    ] {
        let r = api.call(m, path, &[("Content-Type", "application/json")], b"{}").await;
        assert_error(&r, 405, -32600, None);
        assert!(r.header("allow").is_some_and(|a| a.split(',').any(|x| x.trim() == allow)), "{m} {path}: {r:?}");
    }

    // 413: a body over 64 KiB, with a Content-Length and chunked.
    let mut big = base.clone();
    big["client_info"] = json!({"pad": "x".repeat(70 * 1024)});
    let big = big.to_string();
    assert_error(&api.post_json("/api/v1/create_order", &big).await, 413, -32600, None);
    let chunked = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let r = api
        .call(
            "POST",
            "/api/v1/create_order",
            &[("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")],
            chunked.as_bytes(),
        )
        .await;
    assert_error(&r, 413, -32600, None);
    // Just under the limit is read (and then judged: client_info over 2048 bytes).
    let mut under = base.clone();
    under["client_info"] = json!({"pad": "x".repeat(60 * 1024)});
    assert_error(&api.create_order(&under).await, 400, -32602, Some("client_info"));

    // 415: not sent as JSON.
    let body = base.to_string();
    for headers in
        [vec![], vec![("Content-Type", "text/plain")], vec![("Content-Type", "application/x-www-form-urlencoded")]]
    {
        let r = api.call("POST", "/api/v1/create_order", &headers, body.as_bytes()).await;
        assert_error(&r, 415, -32600, None);
    }
    let r = api
        .call("POST", "/api/v1/create_order", &[("Content-Type", "Application/JSON; charset=utf-8")], body.as_bytes())
        .await;
    assert_eq!(r.status, 200, "a JSON media type with parameters is JSON: {}", r.text());

    // Nothing was created by the refused requests.
    let list = s.command("lsps1-listorders", json!({})).await.unwrap();
    assert_eq!(list["orders"].as_array().unwrap().len(), 2, "the vip order and the charset one");
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let (_s, api) =
        start(builder().option("lsps1-rest-burst", json!(2)).option("lsps1-rest-requests-per-minute", json!(1))).await;
    // Two create_orders fit the burst (refused on their merits), the third is over it.
    assert_eq!(api.post_json("/api/v1/create_order", "{}").await.status, 400);
    assert_eq!(api.post_json("/api/v1/create_order", "{}").await.status, 400);
    let r = api.post_json("/api/v1/create_order", "{}").await;
    assert_error(&r, 429, 1, None);
    assert_eq!(r.header("retry-after"), Some("1"));
    // Every route counts against the same bucket.
    for path in ["/api/v1/get_info", "/api/v1/get_order?order_id=x", "/api/v1/health", "/api/v1/openapi.json", "/nope"]
    {
        let r = api.get(path).await;
        assert_error(&r, 429, 1, None);
        assert!(r.header("retry-after").is_some());
    }
}

#[tokio::test]
async fn per_ip_limits_follow_x_forwarded_for_only_from_the_trusted_proxy() {
    let limited = || builder().option("lsps1-rest-burst", json!(1)).option("lsps1-rest-requests-per-minute", json!(1));
    let post = |api: &Api, xff: &'static str| {
        let api = api.clone();
        async move {
            api.call(
                "POST",
                "/api/v1/create_order",
                &[("Content-Type", "application/json"), ("X-Forwarded-For", xff)],
                b"{}",
            )
            .await
            .status
        }
    };
    // Behind a trusted proxy, each client (the last X-Forwarded-For hop) has its own bucket.
    let (_s, api) = start(limited().option("lsps1-rest-trusted-proxy", json!("127.0.0.1"))).await;
    assert_eq!(post(&api, "10.0.0.1").await, 400);
    assert_eq!(post(&api, "10.0.0.1").await, 429);
    assert_eq!(post(&api, "192.0.2.9, 10.0.0.2").await, 400, "the last hop is the client");
    assert_eq!(post(&api, "10.0.0.2").await, 429);
    // Without one, the header is the client's word and is ignored.
    let (_s2, api) = start(limited()).await;
    assert_eq!(post(&api, "10.0.0.1").await, 400);
    assert_eq!(post(&api, "10.0.0.2").await, 429);
}

#[tokio::test]
async fn configured_uris_and_the_same_options_as_p2p() {
    let uri = "031b301307574bbe9b9ac7b79cbe1700e31e544513eae0b5d7497483083f99e581@45.79.192.236:9735";
    let (s, api) = start(builder().option("lsps1-rest-uri", json!([uri]))).await;
    let mut info = api.get("/api/v1/get_info").await.json();
    assert_eq!(info["uris"], json!([uri]), "lsps1-rest-uri replaces the node's addresses");
    // One serializer: REST get_info is the P2P answer plus the three REST fields.
    let (_, p) = peer(56);
    let p2p = s.lsps(&p, &req("gi", "lsps1.get_info", json!({}))).await;
    for k in ["uris", "min_onchain_payment_confirmations", "min_onchain_payment_size_sat"] {
        info.as_object_mut().unwrap().remove(k);
    }
    assert_eq!(info, p2p["result"]);
    // Without the option, the fixture node's bound address (getinfo has no announced one).
    let (s, api) = start(builder()).await;
    let info = api.get("/api/v1/get_info").await.json();
    assert_eq!(info["uris"], json!([format!("{}@127.0.0.1:33339", s.node_id)]));
}

#[tokio::test]
async fn node_failures_are_503_and_500_and_create_nothing() {
    let (s, api) =
        start(builder().reply("signinvoice", Reply::Error { code: -1, message: "signing failed".into() })).await;
    let (_, pk) = peer(44);
    // The node refuses to sign: 503, retry.
    let e = assert_error(&api.create_order(&zeus_body(&pk)).await, 503, -32603, None);
    assert_eq!(e["error"]["data"]["retry"], json!(true));
    assert!(!e.to_string().contains("signing failed"), "the node's error stays in the log: {e}");
    // The node returns somebody else's invoice: 500.
    let other = "lnbcrt500u1p4s2svasp5mcnazqqaynla02qsdj7aktrtz6dquej7xp894ufe53pud39qha9spp5l4r0fzhtda4a9vfndcsqkjk2d0v8klnl4jst6p89dq6cyufvuplqdq4d9h8vmmfvdjjqcneypkrycqp9rzjqwqefd0n900s4fvcztyxcnhh45hjjsgylgp86xkwndrfhdhc3nehkqqqdyqqqqgqqqqqqqqpqqqqqzsqqc9qxpqysgqnnq65mknnm40wcjhwzjhjdvmure8hlwxdx6rk6h9ufrz8fj2ygfjtdq5tpv5csxs52mgh0r35gu7mev4a0k3ye3j6ngvjh6fwj5js4gpx4tfav";
    s.set_reply("signinvoice", Reply::Result(json!({"bolt11": other})));
    let e = assert_error(&api.create_order(&zeus_body(&pk)).await, 500, -32603, None);
    assert!(e["error"]["data"].get("retry").is_none());
    // The node hangs: 503 inside ZEUS's 7 s.
    s.set_reply("signinvoice", Reply::Hang);
    let started = Instant::now();
    let e = assert_error(&api.create_order(&zeus_body(&pk)).await, 503, -32603, None);
    assert_eq!(e["error"]["data"]["retry"], json!(true));
    assert!(started.elapsed() < Duration::from_secs(7), "answered in {:?}", started.elapsed());
    let list = s.command("lsps1-listorders", json!({})).await.unwrap();
    assert!(list["orders"].as_array().unwrap().is_empty());
    // get_info and health still answer.
    assert_eq!(api.get("/api/v1/get_info").await.status, 200);
    assert_eq!(api.get("/api/v1/health").await.json(), json!({"status": "ok"}));
}

/// The `orders` table goes away under the running plugin (a broken store): the reads that
/// need it answer 500 with the standard body, nothing internal in it.
async fn break_the_store(s: &StandIn) {
    let db = s.dir.join("lsps1.sqlite3");
    let c = rusqlite::Connection::open(&db).expect("open the store");
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.execute_batch("ALTER TABLE orders RENAME TO orders_gone;").expect("rename");
}

#[tokio::test]
async fn a_broken_store_answers_500() {
    let (s, api) = start(builder()).await;
    let (_, pk) = peer(45);
    let order = api.create_order(&zeus_body(&pk)).await.json();
    break_the_store(&s).await;
    let e = assert_error(&api.get_order(order["order_id"].as_str().unwrap()).await, 500, -32603, None);
    assert!(e["error"]["data"].get("retry").is_none());
    assert_error(&api.get("/api/v1/get_info").await, 500, -32603, None);
    assert_error(&api.create_order(&zeus_body(&pk)).await, 500, -32603, None);
    assert_eq!(api.get("/api/v1/health").await.status, 200);
}

#[tokio::test]
async fn cors_preflight_and_allowed_origins() {
    let preflight = |origin: &'static str| {
        [
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ]
    };
    // Any origin by default.
    let (_s, api) = start(builder()).await;
    let r = api.call("OPTIONS", "/api/v1/create_order", &preflight("https://btcpay.example"), b"").await;
    assert!((200..300).contains(&r.status), "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let methods = r.header("access-control-allow-methods").unwrap_or("").to_ascii_uppercase();
    assert!(methods.contains("POST") && methods.contains("GET"), "{methods}");
    let allowed = r.header("access-control-allow-headers").unwrap_or("").to_ascii_lowercase();
    assert!(allowed.contains("content-type"), "{allowed}");
    assert!(r.header("access-control-allow-credentials").is_none(), "no credentials");
    let r = api.call("GET", "/api/v1/get_info", &[("Origin", "https://btcpay.example")], b"").await;
    assert_eq!((r.status, r.header("access-control-allow-origin")), (200, Some("*")));
    // The actual POST from the page carries the header too, errors included.
    let r = api
        .call(
            "POST",
            "/api/v1/create_order",
            &[("Origin", "https://btcpay.example"), ("Content-Type", "application/json")],
            b"{}",
        )
        .await;
    assert_eq!((r.status, r.header("access-control-allow-origin")), (400, Some("*")));

    // With lsps1-rest-cors-origin: only that origin.
    let (_s2, api) = start(builder().option("lsps1-rest-cors-origin", json!(["https://btcpay.example"]))).await;
    let r = api.call("OPTIONS", "/api/v1/create_order", &preflight("https://btcpay.example"), b"").await;
    assert_eq!(r.header("access-control-allow-origin"), Some("https://btcpay.example"));
    let r = api.call("OPTIONS", "/api/v1/create_order", &preflight("https://evil.example"), b"").await;
    assert!(r.header("access-control-allow-origin").is_none(), "{r:?}");
    let r = api.call("GET", "/api/v1/get_info", &[("Origin", "https://evil.example")], b"").await;
    assert_eq!(r.status, 200, "CORS is the browser's business; the answer itself is served");
    assert!(r.header("access-control-allow-origin").is_none(), "{r:?}");
}

#[tokio::test]
async fn rest_order_is_read_by_id_and_by_its_node_over_p2p() {
    let (s, api) = start(builder()).await;
    let (_, pk) = peer(46);
    let r = api.create_order(&zeus_body(&pk)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let created = r.json();
    let id = created["order_id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4, "ruling 9: random UUIDv4");
    // REST: a bearer read by id, the same object.
    let got = api.get_order(id).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json(), created);
    assert_eq!(
        api.get(&format!("/api/v1/get_order?order_id={}", id.to_uppercase())).await.status,
        404,
        "ids are exact"
    );
    // P2P: the node named in public_key may read it (ruling 9) ...
    let p = s.lsps(&pk, &req("g", "lsps1.get_order", json!({"order_id": id}))).await;
    assert_eq!(p["result"], created, "{p}");
    // ... and another node may not (ruling 8).
    let (_, other) = peer(47);
    let p = s.lsps(&other, &req("g", "lsps1.get_order", json!({"order_id": id}))).await;
    assert_eq!(p["error"]["code"], json!(101), "{p}");
    // A P2P order is readable over REST by id too (the id is the capability).
    let p = s.lsps(&other, &req("c", "lsps1.create_order", crate::lsps1::zeus_params())).await;
    let p2p_id = p["result"]["order_id"].as_str().unwrap().to_string();
    let got = api.get_order(&p2p_id).await;
    assert_eq!(got.json(), p["result"]);
}

#[tokio::test]
async fn ipv6_bind_answers() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    }
    let s = builder().option("lsps1-rest-bind", json!(["127.0.0.1:0", "[::1]:0"])).start().await;
    let deadline = Instant::now() + WAIT;
    let addrs = loop {
        let a = listening(&s).await;
        if a.len() == 2 || Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    let v6 = addrs.iter().find(|a| a.is_ipv6()).copied().expect("an IPv6 listener");
    let api = Api::new(v6);
    assert_eq!(api.host(), format!("[::1]:{}", v6.port()));
    let r = api.get("/api/v1/get_info").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, pk) = peer(48);
    assert_eq!(api.create_order(&zeus_body(&pk)).await.status, 200);
    let v4 = addrs.iter().find(|a| a.is_ipv4()).copied().unwrap();
    assert_eq!(Api::new(v4).get("/api/v1/health").await.status, 200);
}

#[tokio::test]
async fn a_port_in_use_disables_only_rest() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let s = builder().option("lsps1-rest-bind", json!([addr])).start().await;
    assert!(s.disabled().is_none());
    let line = s.wait_log(Some("warn"), "REST listener disabled on").await;
    assert!(line.contains(&addr), "names the address: {line}");
    s.wait_log(Some("warn"), "REST API not available").await;
    // P2P keeps working.
    let (_, p) = peer(49);
    let r = s.lsps(&p, &req("lp", "lsps0.list_protocols", json!({}))).await;
    assert_eq!(r["result"]["protocols"], json!([1]), "{r}");
    let r = s.lsps(&p, &req("gi", "lsps1.get_info", json!({}))).await;
    assert!(r["result"].is_object(), "{r}");
    assert!(!s.logs().iter().any(|(_, m)| m.contains("REST API listening")));
    drop(taken);

    // With a second, free address, that one still serves.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let s = builder().option("lsps1-rest-bind", json!([addr, "127.0.0.1:0"])).start().await;
    let addrs = listening(&s).await;
    s.wait_log(Some("warn"), &format!("REST listener disabled on {addr}")).await;
    assert_eq!(addrs.len(), 1);
    assert_ne!(addrs[0].to_string(), addr);
    assert_eq!(Api::new(addrs[0]).get("/api/v1/get_info").await.status, 200);
}

/// A self-signed certificate for `localhost`, written as PEM files into `dir`.
pub fn write_test_cert(dir: &Path) -> (CertificateDer<'static>, std::path::PathBuf, std::path::PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let cert = dir.join("rest-cert.pem");
    let key = dir.join("rest-key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    (ck.cert.der().clone(), cert, key)
}

#[tokio::test]
async fn tls_with_a_generated_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let net = tmp.path().join("regtest");
    std::fs::create_dir(&net).unwrap();
    let (der, cert, key) = write_test_cert(&net);
    let s = builder()
        .dir(&net)
        .option("lsps1-rest-tls-cert", json!(cert.to_string_lossy()))
        .option("lsps1-rest-tls-key", json!(key.to_string_lossy()))
        .start()
        .await;
    let line = s.wait_log(Some("info"), "REST API listening on https://").await;
    let addr = listen_addr(&line);
    let api = Api::tls(addr, der);
    let r = api.get("/api/v1/get_info").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["uris"].is_array());
    let (_, pk) = peer(50);
    let r = api.create_order(&zeus_body(&pk)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["order_id"].as_str().unwrap().to_string();
    assert_eq!(api.get_order(&id).await.status, 200);
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = Api::new(addr);
    let raw = build_request("GET", "/api/v1/get_info", &plain.host(), &[], b"");
    assert!(plain.exchange(&raw).await.is_err(), "plaintext must not be served on the TLS port");
    // A client that does not trust the certificate fails the handshake.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let untrusting = Api::tls(addr, other.cert.der().clone());
    assert!(untrusting.exchange(&raw).await.is_err());
}

#[tokio::test]
async fn unreadable_tls_key_disables_only_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, cert, _) = write_test_cert(tmp.path());
    let s = builder()
        .option("lsps1-rest-tls-cert", json!(cert.to_string_lossy()))
        .option("lsps1-rest-tls-key", json!(tmp.path().join("missing.pem").to_string_lossy()))
        .start()
        .await;
    assert!(s.disabled().is_none());
    let line = s.wait_log(Some("warn"), "REST listener disabled: TLS").await;
    assert!(line.contains("missing.pem"), "{line}");
    let (_, p) = peer(51);
    let r = s.lsps(&p, &req("lp", "lsps0.list_protocols", json!({}))).await;
    assert_eq!(r["result"]["protocols"], json!([1]));
}

/// Create an order over REST for `client` and pay its invoice in full from another node.
async fn create_and_pay(
    s: &StandIn,
    api: &Api,
    client: &bitcoin::secp256k1::PublicKey,
) -> (String, crate::standin::HtlcHandle) {
    let r = api.create_order(&zeus_body(client)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let order = r.json();
    let id = order["order_id"].as_str().unwrap().to_string();
    let inv: Bolt11Invoice = order["payment"]["bolt11"]["invoice"].as_str().unwrap().parse().unwrap();
    let (_, payer) = peer(77);
    let spec = HtlcSpec::new(
        &payer,
        &inv.payment_hash().to_string(),
        &hex::encode(inv.payment_secret().0),
        inv.amount_milli_satoshis().unwrap(),
        s.height() + 160,
    );
    (id, s.send_htlc(spec).await)
}

/// Poll REST get_order until the order and its BOLT11 option are in these states.
async fn wait_rest_state(api: &Api, id: &str, order_state: &str, payment_state: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let o = api.get_order(id).await.json();
        if o["order_state"] == order_state && o["payment"]["bolt11"]["state"] == payment_state {
            return o;
        }
        assert!(Instant::now() < deadline, "order is {} / {}", o["order_state"], o["payment"]["bolt11"]["state"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rest_order_paid_opens_its_channel_to_the_public_key_node() {
    let (s, api) = start(builder()).await;
    let (_, client) = peer(52);
    s.set_reachable(&client, false);
    let (id, h) = create_and_pay(&s, &api, &client).await;
    // Held while the public_key node is away (ruling 14), seen over REST as HOLD.
    wait_rest_state(&api, &id, "CREATED", "HOLD").await;
    assert!(h.is_held());
    assert!(s.calls("fundchannel").is_empty(), "no open before the node connects");
    // The public_key node connects: the channel opens to it, the payment settles.
    s.peer_connects(&client).await;
    let out = h.outcome(WAIT).await;
    assert!(out.is_settled(), "{out:?}");
    let calls = s.calls("fundchannel");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["id"], json!(client.to_string()), "the channel goes to public_key");
    assert_eq!(calls[0]["amount"], json!(1_000_000));
    assert_eq!(calls[0]["mindepth"], json!(8), "required_channel_confirmations");
    let o = wait_rest_state(&api, &id, "COMPLETED", "PAID").await;
    let chan = s.channels().into_iter().find(|c| c["peer_id"] == json!(client.to_string())).expect("channel");
    assert_eq!(
        o["channel"]["funding_outpoint"],
        json!(format!("{}:{}", chan["funding_txid"].as_str().unwrap(), chan["funding_outnum"]))
    );
    // The node reads the same over P2P.
    let p = s.lsps(&client, &req("g", "lsps1.get_order", json!({"order_id": id}))).await;
    assert_eq!(p["result"], o);
}

#[tokio::test]
async fn rest_order_whose_open_is_refused_reads_failed_refunded() {
    let (s, api) =
        start(builder().reply("fundchannel", Reply::fixture_error("rpc/fundchannel.err-peer-rejected.json"))).await;
    let (_, client) = peer(57);
    s.peer_connects(&client).await;
    let (id, h) = create_and_pay(&s, &api, &client).await;
    let out = h.outcome(WAIT).await;
    assert!(out.is_unknown_payment_details(), "refunded: {out:?}");
    let o = wait_rest_state(&api, &id, "FAILED", "REFUNDED").await;
    assert!(o["channel"].is_null());
    assert_eq!(s.calls("fundchannel")[0]["id"], json!(client.to_string()));
}

#[tokio::test]
async fn request_log_lines_name_method_path_status_never_the_order_id() {
    let (s, api) = start(builder().env("CLN_PLUGIN_LOG", "cln_lsps1=debug")).await;
    let (_, pk) = peer(53);
    let order = api.create_order(&zeus_body(&pk)).await.json();
    let id = order["order_id"].as_str().unwrap().to_string();
    assert_eq!(api.get_order(&id).await.status, 200);
    assert_eq!(api.get_order("secret-looking-id-123").await.status, 404);
    assert_eq!(api.get("/api/v1/nope?order_id=abc").await.status, 404);
    for want in [
        "REST POST /api/v1/create_order 200 ",
        "REST GET /api/v1/get_order 200 ",
        "REST GET /api/v1/get_order 404 ",
        "REST GET /api/v1/nope 404 ",
    ] {
        s.wait_log(Some("debug"), want).await;
    }
    let lines: Vec<String> = s
        .logs()
        .into_iter()
        .filter(|(_, m)| m.starts_with("REST ") && !m.starts_with("REST API"))
        .map(|(_, m)| m)
        .collect();
    assert!(lines.len() >= 4, "{lines:?}");
    for l in &lines {
        for secret in [id.as_str(), "order_id", "?", "secret-looking-id-123", "abc"] {
            assert!(!l.contains(secret), "the request log shows {secret:?}: {l}");
        }
    }
}

#[tokio::test]
async fn openapi_document_describes_every_answer() {
    let doc = openapi();
    // The document is OpenAPI 3.1 with exactly the five routes.
    assert_eq!(doc.doc["openapi"], json!("3.1.0"));
    let routes: BTreeSet<&str> = doc.doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        routes,
        BTreeSet::from([
            "/api/v1/get_info",
            "/api/v1/create_order",
            "/api/v1/get_order",
            "/api/v1/openapi.json",
            "/api/v1/health"
        ])
    );
    // Every $ref resolves; every schema compiles; every example conforms.
    fn walk(v: &Value, at: &str, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    out.push((format!("{at}/{}", esc(k)), x.clone()));
                    walk(x, &format!("{at}/{}", esc(k)), out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut all = vec![];
    walk(&doc.doc, "", &mut all);
    for (at, v) in &all {
        if at.ends_with("/$ref") {
            let r = v.as_str().unwrap();
            assert!(doc.at(r.trim_start_matches('#')).is_some(), "{at}: dangling $ref {r}");
        }
    }
    for name in doc.doc["components"]["schemas"].as_object().unwrap().keys() {
        doc.validator(&format!("/components/schemas/{name}"));
    }
    let schema_examples = [
        ("/components/schemas/GetInfoResponse/example", "/components/schemas/GetInfoResponse"),
        ("/components/schemas/Order/example", "/components/schemas/Order"),
        (
            "/components/responses/BadRequest/content/application~1json/example",
            "/components/responses/BadRequest/content/application~1json/schema",
        ),
        ("/paths/~1api~1v1~1get_order/get/parameters/0/example", "/paths/~1api~1v1~1get_order/get/parameters/0/schema"),
    ];
    for (ex, schema) in schema_examples {
        doc.validate(schema, doc.at(ex).unwrap_or_else(|| panic!("{ex}"))).unwrap();
    }
    let req_schema = "/paths/~1api~1v1~1create_order/post/requestBody/content/application~1json/schema";
    let examples =
        doc.at("/paths/~1api~1v1~1create_order/post/requestBody/content/application~1json/examples").unwrap();
    for (name, ex) in examples.as_object().unwrap() {
        doc.validate(req_schema, &ex["value"]).unwrap_or_else(|e| panic!("example {name}: {e}"));
    }
    doc.validate(req_schema, &serde_json::from_str(SEED_CREATE_ORDER_REQUEST).unwrap()).unwrap();
    // The number patterns are exact at their bounds.
    for (schema, ok, bad) in [
        ("SatString", "18446744073709551615", "18446744073709551616"),
        ("SatString", "0", "00"),
        ("Uint16Input", "65535", "65536"),
        ("Uint32Input", "4294967295", "4294967296"),
        ("Uint16Input", "6", "+6"),
    ] {
        assert!(doc.validate_schema(schema, &json!(ok)).is_ok(), "{schema} {ok}");
        assert!(doc.validate_schema(schema, &json!(bad)).is_err(), "{schema} {bad}");
    }
    assert!(doc.validate_schema("SatInput", &json!(18446744073709551615u64)).is_ok());
    assert!(doc.validate_schema("SatInput", &json!(-1)).is_err());
    assert!(doc.validate_schema("SatInput", &json!(1.5)).is_err());

    // The real answers: every documented (route, method, status) is produced and conforms
    // (Api::call checks each one against the document).
    let (s, api) = start(builder().option("lsps1-token", json!(["vip"]))).await;
    let served = api.get("/api/v1/openapi.json").await;
    assert_eq!(served.status, 200);
    assert_eq!(served.body, std::fs::read(OPENAPI_PATH).unwrap(), "the served document is the committed file");
    assert_eq!(api.get("/api/v1/health").await.json(), json!({"status": "ok"}));
    assert_eq!(api.get("/api/v1/get_info").await.status, 200);
    let (_, pk) = peer(54);
    let created = api.create_order(&zeus_body(&pk)).await;
    assert_eq!(created.status, 200);
    let id = created.json()["order_id"].as_str().unwrap().to_string();
    assert_eq!(api.get_order(&id).await.status, 200);
    assert_eq!(api.get_order("nope").await.status, 404);
    assert_eq!(api.get("/api/v1/get_order?x=1").await.status, 400);
    assert_eq!(api.create_order(&json!({})).await.status, 400);
    assert_eq!(api.create_order(&json!({"x": 1})).await.status, 400);
    let mut mismatch = zeus_body(&pk);
    mismatch["client_balance_sat"] = json!("1");
    assert_eq!(api.create_order(&mismatch).await.status, 400);
    let mut token = zeus_body(&pk);
    token["token"] = json!("nope");
    assert_eq!(api.create_order(&token).await.status, 400);
    assert_eq!(api.post_json("/api/v1/create_order", "{").await.status, 400);
    let mut big = zeus_body(&pk);
    big["client_info"] = json!({"pad": "x".repeat(66 * 1024)});
    assert_eq!(api.create_order(&big).await.status, 413);
    assert_eq!(api.call("POST", "/api/v1/create_order", &[], b"{}").await.status, 415);
    for path in
        ["/api/v1/get_info", "/api/v1/create_order", "/api/v1/get_order", "/api/v1/openapi.json", "/api/v1/health"]
    {
        let m = if path.ends_with("create_order") { "GET" } else { "POST" };
        assert_eq!(api.call(m, path, &[("Content-Type", "application/json")], b"{}").await.status, 405);
    }
    assert_eq!(api.get("/api/v1/unknown").await.status, 404);
    // 403: too many unpaid orders for one node.
    let (s2, api2) = start(builder().option("lsps1-max-unpaid-orders-per-peer", json!(1))).await;
    assert_eq!(api2.create_order(&zeus_body(&pk)).await.status, 200);
    assert_eq!(api2.create_order(&zeus_body(&pk)).await.status, 403);
    // 503 and 500 from the node's signer.
    s2.set_reply("signinvoice", Reply::Error { code: -1, message: "no".into() });
    let (_, pk2) = peer(55);
    assert_eq!(api2.create_order(&zeus_body(&pk2)).await.status, 503);
    break_the_store(&s2).await;
    assert_eq!(api2.create_order(&zeus_body(&pk2)).await.status, 500);
    assert_eq!(api2.get("/api/v1/get_info").await.status, 500);
    assert_eq!(api2.get_order(&id).await.status, 500);
    // 429 on every route.
    let (_s3, api3) =
        start(builder().option("lsps1-rest-burst", json!(1)).option("lsps1-rest-requests-per-minute", json!(1))).await;
    assert_eq!(api3.create_order(&json!({})).await.status, 400);
    for path in ["/api/v1/get_info", "/api/v1/get_order", "/api/v1/openapi.json", "/api/v1/health"] {
        assert_eq!(api3.get(path).await.status, 429);
    }
    assert_eq!(api3.create_order(&json!({})).await.status, 429);

    let mut seen = BTreeSet::new();
    for a in [&api, &api2, &api3] {
        seen.extend(a.seen.lock().unwrap().iter().cloned());
    }
    // 408 takes a 15 s stall: a_stalled_body_is_answered_408_in_the_error_body.
    seen.insert(("POST".into(), "/api/v1/create_order".into(), 408));
    let documented = doc.documented();
    let missing: Vec<_> = documented.difference(&seen).collect();
    assert!(missing.is_empty(), "documented but never produced here: {missing:?}");
    drop(s);
}

/// A client that sends the headers and then stalls the body: after the 15 s request limit,
/// 408 in the standard error body, with the CORS header a browser needs to read it.
#[tokio::test]
async fn a_stalled_body_is_answered_408_in_the_error_body() {
    let (_s, api) = start(builder()).await;
    let mut tcp = TcpStream::connect(api.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/create_order HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nOrigin: https://btcpay.example\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        api.host()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut buf = vec![];
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut buf)).await.expect("answered").unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(14) && took < Duration::from_secs(20), "{took:?}");
    let r = parse_response(&buf).unwrap();
    assert_error(&r, 408, -32600, None);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    openapi().check("POST", "/api/v1/create_order", &r).unwrap();
}

/// On-chain payments over REST (rulings 21–23): get_info's legacy fields carry the option's
/// values, the order carries `payment.onchain` (checked against docs/openapi.json like every
/// answer), and an order paid on-chain opens to its `public_key` node.
#[tokio::test]
async fn rest_order_paid_on_chain_opens_its_channel() {
    let (s, api) = start(
        builder()
            .option("lsps1-onchain-payments", json!(true))
            .option("lsps1-min-onchain-payment-size-sat", json!(1_000)),
    )
    .await;
    let info = api.get("/api/v1/get_info").await.json();
    assert_eq!(info["min_onchain_payment_confirmations"], json!(1), "{info}");
    assert_eq!(info["min_onchain_payment_size_sat"], json!("1000"), "{info}");
    let (_, client) = peer(53);
    s.peer_connects(&client).await;
    let mut body = zeus_body(&client);
    body["refund_onchain_address"] = json!("bcrt1qjefm5vg3pshke552apccaxf92rkku89ucyj4hd");
    let r = api.create_order(&body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let order = r.json();
    let id = order["order_id"].as_str().unwrap().to_string();
    let oc = &order["payment"]["onchain"];
    assert_eq!(oc["state"], "EXPECT_PAYMENT", "{order}");
    let total: u64 = oc["order_total_sat"].as_str().unwrap().parse().unwrap();
    s.pay_onchain(oc["address"].as_str().unwrap(), total);
    s.mine(1).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let o = api.get(&format!("/api/v1/get_order?order_id={id}")).await.json();
        if o["order_state"] == "COMPLETED" {
            assert_eq!(o["payment"]["onchain"]["state"], "PAID", "{o}");
            assert_eq!(o["payment"]["bolt11"]["state"], "REFUNDED", "{o}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never completed: {o}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.calls("fundchannel")[0]["id"], json!(client.to_string()), "to public_key");
}
