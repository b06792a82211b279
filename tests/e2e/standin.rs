//! A lightningd stand-in (DEVELOPERS.md "Testing"): starts the real plugin binary, speaks
//! the plugin protocol on its stdin/stdout (getmanifest, init, hooks, notifications, RPC
//! passthrough) and serves a lightning-rpc unix socket whose answers are the recorded
//! Core Lightning v26.06.6 fixtures (`tests/fixtures/cln-v26.06.6`) or follow CLN's JSON
//! schemas. It records every RPC call the plugin makes and misbehaves on demand.
//!
//! Faithful to the recording: `\n\n`-terminated frames both ways, string request ids
//! (`cln:init#58`), typed option values in `init`, notifications wrapped as
//! `{"<topic>": {...}}`, `lightning-dir` = the network directory, cwd = that directory.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use lightning_invoice::Bolt11Invoice;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{Notify, oneshot};

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
    /// Answer after a delay.
    Delay(Duration, Box<Reply>),
    /// Never answer.
    Hang,
    /// Close the connection without answering.
    Close,
}

#[derive(Default)]
struct RpcState {
    calls: Mutex<Vec<(String, Value)>>,
    replies: Mutex<HashMap<String, Reply>>,
    connected: Mutex<HashSet<String>>,
    known_peers: Mutex<HashSet<String>>,
    peer_features: Mutex<HashMap<String, String>>,
    sent: Mutex<Vec<(String, String)>>,
    sent_notify: Notify,
    configs: Mutex<serde_json::Map<String, Value>>,
}

pub struct Builder {
    options: serde_json::Map<String, Value>,
    env: Vec<(String, String)>,
    dir: Option<PathBuf>,
    replies: HashMap<String, Reply>,
    configs: serde_json::Map<String, Value>,
    feature_set_init: String,
}

impl Builder {
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

    pub async fn start(self) -> StandIn {
        StandIn::start(self).await
    }
}

pub struct StandIn {
    child: Child,
    stdin: Arc<tokio::sync::Mutex<Option<ChildStdin>>>,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>,
    logs: Arc<Mutex<Vec<(String, String)>>>,
    log_notify: Arc<Notify>,
    rpc: Arc<RpcState>,
    next_id: AtomicU64,
    pub node_key: SecretKey,
    pub node_id: PublicKey,
    /// The network directory (`init.configuration.lightning-dir`).
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub manifest: Value,
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
        let node_key = SecretKey::from_slice(&[0x5a; 32]).expect("key");
        let node_id = PublicKey::from_secret_key(&Secp256k1::new(), &node_key);

        let rpc = Arc::new(RpcState::default());
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
            let key = node_key;
            tasks.push(tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let rpc = rpc.clone();
                    tokio::spawn(serve_rpc(stream, rpc, key));
                }
            }));
        }

        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cln-lsps1"));
        cmd.current_dir(&dir).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
        for (k, v) in &b.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn plugin");
        let stdin = Arc::new(tokio::sync::Mutex::new(child.stdin.take()));
        let mut stdout = child.stdout.take().expect("stdout");
        let pending: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>> = Default::default();
        let logs: Arc<Mutex<Vec<(String, String)>>> = Default::default();
        let log_notify = Arc::new(Notify::new());
        {
            let (pending, logs, log_notify) = (pending.clone(), logs.clone(), log_notify.clone());
            tasks.push(tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
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
                        if v.get("method").and_then(Value::as_str) == Some("log") {
                            let level = v["params"]["level"].as_str().unwrap_or("").to_string();
                            let msg = v["params"]["message"].as_str().unwrap_or("").to_string();
                            logs.lock().unwrap().push((level, msg));
                            log_notify.notify_waiters();
                        } else if let Some(id) = v.get("id").and_then(Value::as_str) {
                            if let Some(tx) = pending.lock().unwrap().remove(id) {
                                let _ = tx.send(v);
                            }
                        } else {
                            logs.lock().unwrap().push(("notification".into(), v.to_string()));
                            log_notify.notify_waiters();
                        }
                    }
                }
            }));
        }

        let mut s = StandIn {
            child,
            stdin,
            pending,
            logs,
            log_notify,
            rpc,
            next_id: AtomicU64::new(27),
            node_key,
            node_id,
            dir: dir.clone(),
            _tmp: tmp,
            manifest: Value::Null,
            init_result: Value::Null,
            tasks,
        };
        let manifest = s.request("getmanifest", json!({"allow-deprecated-apis": false})).await;
        s.manifest = manifest.get("result").cloned().unwrap_or_else(|| panic!("getmanifest failed: {manifest}"));
        let mut feature_init = b.feature_set_init.clone();
        if s.manifest.pointer("/featurebits/init").is_some() {
            // As lightningd does: the plugin's bits merged into the node's set.
            let bits = s.manifest["featurebits"]["init"].as_str().unwrap_or("");
            feature_init = format!("{}{}", &bits[..bits.len().saturating_sub(feature_init.len())], feature_init);
        }
        let init = s
            .request(
                "init",
                json!({
                    "options": Value::Object(b.options),
                    "configuration": {
                        "lightning-dir": dir.to_string_lossy(),
                        "rpc-file": "lightning-rpc",
                        "startup": true,
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
        s.init_result = init.get("result").cloned().unwrap_or_else(|| panic!("init failed: {init}"));
        s
    }

    /// `Some(reason)` when the plugin disabled itself at init.
    pub fn disabled(&self) -> Option<String> {
        self.init_result.get("disable").and_then(Value::as_str).map(str::to_owned)
    }

    async fn write(&self, v: &Value) {
        let mut guard = self.stdin.lock().await;
        let stdin = guard.as_mut().expect("stdin open");
        let mut bytes = serde_json::to_vec(v).expect("json");
        bytes.extend_from_slice(b"\n\n");
        stdin.write_all(&bytes).await.expect("write to plugin");
        stdin.flush().await.expect("flush");
    }

    /// Send a request as lightningd does and wait for the plugin's response frame.
    pub async fn request(&self, method: &str, params: Value) -> Value {
        let id = format!("cln:{method}#{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id.clone(), tx);
        self.write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await;
        match tokio::time::timeout(TIMEOUT, rx).await {
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

    /// A notification, wrapped as lightningd wraps them.
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

    pub fn connect(&self, peer: &PublicKey) {
        self.rpc.connected.lock().unwrap().insert(peer.to_string());
        self.rpc.known_peers.lock().unwrap().insert(peer.to_string());
    }

    pub fn disconnect(&self, peer: &PublicKey) {
        self.rpc.connected.lock().unwrap().remove(&peer.to_string());
    }

    pub fn set_peer_features(&self, peer: &PublicKey, features: &str) {
        self.rpc.peer_features.lock().unwrap().insert(peer.to_string(), features.into());
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

    /// Every RPC call the plugin made to `method`, with its params.
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

    pub fn set_reply(&self, method: &str, r: Reply) {
        self.rpc.replies.lock().unwrap().insert(method.into(), r);
    }

    pub fn logs(&self) -> Vec<(String, String)> {
        self.logs.lock().unwrap().clone()
    }

    /// Wait for a log line containing `needle` at `level` (any level when `None`).
    pub async fn wait_log(&self, level: Option<&str>, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let notified = self.log_notify.notified();
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

    /// Close the plugin's stdin as lightningd does on shutdown; wait for it to exit.
    pub async fn shutdown(mut self) -> std::process::ExitStatus {
        self.stdin.lock().await.take();
        let status =
            tokio::time::timeout(TIMEOUT, self.child.wait()).await.expect("plugin exits on EOF").expect("wait");
        for t in &self.tasks {
            t.abort();
        }
        status
    }

    /// Wait for the process to exit by itself (after `disable`).
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(TIMEOUT, self.child.wait()).await.expect("plugin exits").expect("wait")
    }

    pub fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve_rpc(mut stream: UnixStream, rpc: Arc<RpcState>, key: SecretKey) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 65536];
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
            let params = req.get("params").cloned().unwrap_or(Value::Null);
            rpc.calls.lock().unwrap().push((method.clone(), params.clone()));
            let configured = rpc.replies.lock().unwrap().get(&method).cloned().unwrap_or(Reply::Default);
            let mut reply = configured;
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
                Reply::Result(v) => Ok(v),
                Reply::Error { code, message } => Err(json!({"code": code, "message": message})),
                Reply::Default => default_reply(&rpc, &key, &method, &params),
                Reply::Delay(..) => unreachable!(),
            };
            let frame = match body {
                Ok(result) => json!({"jsonrpc": "2.0", "id": req["id"], "result": result}),
                Err(error) => json!({"jsonrpc": "2.0", "id": req["id"], "error": error}),
            };
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

/// Answers shaped like CLN v26.06.6's (fixtures), or by `doc/schemas` where nothing was
/// recorded.
fn default_reply(rpc: &RpcState, key: &SecretKey, method: &str, params: &Value) -> Result<Value, Value> {
    let node_id = PublicKey::from_secret_key(&Secp256k1::new(), key);
    match method {
        "getinfo" => {
            let mut r = fixture_result("rpc/getinfo.ok.json");
            r["id"] = json!(node_id.to_string());
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
        "listfunds" => Ok(fixture_result("rpc/listfunds.ok.json")),
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
            rpc.sent.lock().unwrap().push((node.to_string(), msg.to_string()));
            rpc.sent_notify.notify_waiters();
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
            let peers: Vec<Value> = known
                .iter()
                .filter(|p| id.is_none_or(|want| want == p.as_str()))
                .map(|p| {
                    json!({
                        "id": p, "connected": connected.contains(p), "num_channels": 0,
                        "netaddr": ["127.0.0.1:33643"],
                        "features": features.get(p).cloned().unwrap_or_else(|| "800898880a8a59a1".into())
                    })
                })
                .collect();
            Ok(json!({"peers": peers}))
        }
        other => Err(json!({"code": -32601, "message": format!("Unknown command '{other}'")})),
    }
}
