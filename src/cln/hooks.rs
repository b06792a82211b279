//! The lifecycle's hooks and notifications: `htlc_accepted` (hold, settle, refund),
//! `rpc_command` filtered to `close` (lease protection, N-10), and the `connect`,
//! `block_added` and `channel_state_changed` notifications.
//!
//! A hook never returns an error and never answers anything lightningd cannot take: it
//! calls `fatal()` (the node dies) on either (tests/fixtures/cln-v26.06.6/README.md).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cln_plugin::Plugin;
use serde_json::{Value, json};

use super::State;
use crate::lifecycle::HookAnswer;
use crate::lsps0::ser::read_pubkey;
use crate::store::Lease;

/// The JSON of a hook answer. Every variant is well-formed by construction.
pub fn answer_json(a: &HookAnswer) -> Value {
    match a {
        HookAnswer::Continue => json!({ "result": "continue" }),
        HookAnswer::Resolve { payment_key } => json!({ "result": "resolve", "payment_key": payment_key }),
        HookAnswer::Fail { failure_message } => json!({ "result": "fail", "failure_message": failure_message }),
    }
}

/// `htlc_accepted`. Runs in its own task so that even a panic answers: `continue`, which
/// fails an order's HTLC back (lightningd knows no invoice for its hash) and leaves every
/// other HTLC to lightningd as if this plugin were absent.
pub async fn on_htlc_accepted(plugin: Plugin<State>, v: Value) -> Result<Value, anyhow::Error> {
    // Forwards are most of what this hook sees: answer them before anything else, with no
    // task, no store and no allocation (add next to nothing to forwarding).
    if plugin.state().htlc_floor || crate::lifecycle::htlc::is_forward(&v) {
        return Ok(json!({ "result": "continue" }));
    }
    let engine = plugin.state().engine.clone();
    let answer = match tokio::spawn(async move { engine.on_htlc(&v).await }).await {
        Ok(a) => a,
        Err(e) => {
            log::warn!("htlc_accepted handler failed ({e}); answering continue");
            HookAnswer::Continue
        }
    };
    Ok(answer_json(&answer))
}

/// Error code of a `close` refused for an active lease.
pub const LEASE_ACTIVE_CODE: i64 = 1401;

/// How long an operator's `lsps1-allowclose` lasts.
pub const ALLOW_CLOSE_FOR: Duration = Duration::from_secs(600);

/// Leased channels the operator allowed to close, and when the permission lapses.
#[derive(Debug, Default, Clone)]
pub struct CloseGuard {
    allowed: Arc<Mutex<HashMap<String, Instant>>>,
    /// (channel, state) pairs already reported, so restarts' re-sent notifications do not
    /// repeat the warning.
    reported: Arc<Mutex<HashSet<(String, String)>>>,
}

impl CloseGuard {
    pub fn allow(&self, order_id: &str) {
        self.allowed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(order_id.to_string(), Instant::now() + ALLOW_CLOSE_FOR);
    }

    fn allowed(&self, order_id: &str) -> bool {
        let mut a = self.allowed.lock().unwrap_or_else(|p| p.into_inner());
        a.retain(|_, until| *until > Instant::now());
        a.contains_key(order_id)
    }
}

/// The `id` of a `close` call, positional or named (schema `close.json`).
fn close_target(req: &Value) -> Option<String> {
    let params = req.get("params")?;
    let id = match params {
        Value::Object(m) => m.get("id"),
        Value::Array(a) => a.first(),
        _ => None,
    }?;
    id.as_str().map(|s| s.trim().to_ascii_lowercase())
}

/// Which active lease a `close` target names: a peer id, a channel id, or a short channel id.
fn lease_for<'a>(target: &str, leases: &'a [Lease], scid_channel: Option<&str>) -> Option<&'a Lease> {
    leases.iter().find(|l| {
        l.client_node_id.eq_ignore_ascii_case(target)
            || l.channel.channel_id.as_deref().is_some_and(|c| c.eq_ignore_ascii_case(target))
            || scid_channel.is_some_and(|c| l.channel.channel_id.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(c)))
    })
}

/// `rpc_command` (registered with `filters: ["close"]`, fixtures `hooks/rpc_command.close*`):
/// refuse to close a channel whose lease has not ended (N-10), unless the operator allowed
/// it with `lsps1-allowclose`. Fails open if the store cannot be read (the close goes on),
/// closed if a short channel id cannot be looked up while leases exist.
pub async fn on_rpc_command(plugin: Plugin<State>, v: Value) -> Result<Value, anyhow::Error> {
    let state = plugin.state().clone();
    let cont = Ok(json!({ "result": "continue" }));
    let Some(req) = v.get("rpc_command") else { return cont };
    if req.get("method").and_then(Value::as_str) != Some("close") {
        return cont;
    }
    let Some(target) = close_target(req) else { return cont };
    let height = state.engine.height();
    let leases = match state.engine.store().call(move |s| s.active_leases(height)).await {
        Ok(l) => l,
        Err(e) => {
            log::warn!("Cannot check leases before close {target}: {e}; not blocking it");
            return cont;
        }
    };
    if leases.is_empty() {
        return cont;
    }
    // A short channel id (`103x1x0`), real or an alias (private channels have only an alias
    // until they confirm), is looked up among the channels of the leases' clients. If that
    // cannot be done, the close is refused: the operator can retry or use lsps1-allowclose.
    let scid_channel = if target.contains('x') {
        let mut found = None;
        let clients: HashSet<&str> = leases.iter().map(|l| l.client_node_id.as_str()).collect();
        for client in clients {
            match state.service.node().call("listpeerchannels", json!({ "id": client })).await {
                Ok(r) => {
                    for c in r.get("channels").and_then(Value::as_array).into_iter().flatten() {
                        let names = [c.get("short_channel_id"), c.pointer("/alias/local"), c.pointer("/alias/remote")];
                        if names.iter().flatten().filter_map(|v| v.as_str()).any(|n| n == target) {
                            found = c.get("channel_id").and_then(Value::as_str).map(str::to_owned);
                        }
                    }
                }
                Err(e) => {
                    log::warn!("Cannot check whether close {target} breaks a lease: {e}; refusing it");
                    return Ok(refuse(
                        format!(
                            "cannot check whether {target} is a leased channel ({e}); retry, close by channel id, or lsps1-allowclose the order"
                        ),
                        json!({}),
                    ));
                }
            }
        }
        found
    } else {
        None
    };
    let Some(lease) = lease_for(&target, &leases, scid_channel.as_deref()) else { return cont };
    if state.close_guard.allowed(&lease.order_id) {
        log::warn!(
            "Closing leased channel of order {} before its lease ends at block {} (allowed by lsps1-allowclose)",
            lease.order_id,
            lease.channel.lease_end_block.unwrap_or(0)
        );
        return cont;
    }
    let end = lease.channel.lease_end_block.unwrap_or(0);
    log::info!("Refused close {target}: order {} leases the channel until block {end}", lease.order_id);
    Ok(refuse(
        format!(
            "channel {} is leased to {} by LSPS1 order {} until block {end} (now {height}); closing it before then breaks the lease (bLIP-51). To close anyway: lightning-cli lsps1-allowclose {}, then close again within 10 minutes",
            lease.channel.channel_id.as_deref().unwrap_or("?"),
            lease.client_node_id,
            lease.order_id,
            lease.order_id
        ),
        json!({ "order_id": lease.order_id, "lease_end_block": end, "blockheight": height }),
    ))
}

/// The `rpc_command` answer that refuses the call: the caller gets exactly this error
/// (fixture `rpc/close.err-refused-by-rpc_command-hook.json`).
fn refuse(message: String, data: Value) -> Value {
    json!({ "return": { "error": { "code": LEASE_ACTIVE_CODE, "message": message, "data": data } } })
}

/// States that mean a channel is closing (fixtures `channel_state_changed.*`).
const CLOSING_STATES: [&str; 6] = [
    "CHANNELD_SHUTTING_DOWN",
    "CLOSINGD_SIGEXCHANGE",
    "CLOSINGD_COMPLETE",
    "AWAITING_UNILATERAL",
    "FUNDING_SPEND_SEEN",
    "ONCHAIN",
];

/// `channel_state_changed`: warn when a leased channel closes before its lease ends, by
/// whoever's hand (the peer, a force close, an allowed close).
pub async fn on_channel_state_changed(plugin: Plugin<State>, v: Value) -> Result<(), anyhow::Error> {
    let n = v.get("channel_state_changed").unwrap_or(&v);
    let (Some(channel_id), Some(new_state)) =
        (n.get("channel_id").and_then(Value::as_str), n.get("new_state").and_then(Value::as_str))
    else {
        return Ok(());
    };
    if !CLOSING_STATES.contains(&new_state) {
        return Ok(());
    }
    let state = plugin.state().clone();
    if matches!(new_state, "FUNDING_SPEND_SEEN" | "ONCHAIN" | "CLOSED") {
        // The channel is gone, whatever the lease-end policy: its lease leaves the work lists.
        let (id, now) = (channel_id.to_string(), state.service.now_ms());
        let detail = json!({ "state": new_state, "cause": n.get("cause") });
        if let Err(e) = state.engine.store().call(move |s| s.lease_channel_closed(&id, now, &detail)).await {
            log::debug!("Cannot record the close of channel {channel_id}: {e}");
        }
    }
    let height = state.engine.height();
    let leases = state.engine.store().call(move |s| s.active_leases(height)).await.unwrap_or_default();
    if let Some(lease) =
        leases.iter().find(|l| l.channel.channel_id.as_deref().is_some_and(|c| c.eq_ignore_ascii_case(channel_id)))
    {
        let first = state
            .close_guard
            .reported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((channel_id.to_string(), new_state.to_string()));
        if first {
            log::warn!(
                "Leased channel {channel_id} of order {} is closing ({new_state}, cause {}) before its lease ends at block {}",
                lease.order_id,
                n.get("cause").and_then(Value::as_str).unwrap_or("unknown"),
                lease.channel.lease_end_block.unwrap_or(0)
            );
        }
    }
    Ok(())
}

/// `connect`: a client that connects may be waiting for its channel (N-02).
pub async fn on_connect(plugin: Plugin<State>, v: Value) -> Result<(), anyhow::Error> {
    let n = v.get("connect").unwrap_or(&v);
    if let Some(Ok(peer)) = n.get("id").and_then(Value::as_str).map(read_pubkey) {
        plugin.state().engine.peer_connected(peer);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ChannelRecord;

    #[test]
    fn answers_are_what_lightningd_takes() {
        assert_eq!(answer_json(&HookAnswer::Continue), json!({"result": "continue"}));
        let r = answer_json(&HookAnswer::Resolve { payment_key: "11".repeat(32) });
        assert_eq!(r["result"], "resolve");
        assert_eq!(r["payment_key"].as_str().unwrap().len(), 64);
        let f = answer_json(&HookAnswer::Fail { failure_message: "0017".into() });
        assert_eq!(f, json!({"result": "fail", "failure_message": "0017"}));
    }

    #[test]
    fn close_targets_and_leases() {
        let rec: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/cln-v26.06.6/hooks/rpc_command.close.json"))
                .unwrap();
        let req = &rec["params"]["rpc_command"];
        let target = close_target(req).unwrap();
        assert_eq!(target.len(), 66);
        assert_eq!(close_target(&json!({"params": ["103x1x0"]})).as_deref(), Some("103x1x0"));
        assert_eq!(close_target(&json!({"params": {}})), None);
        let lease = Lease {
            order_id: "o".into(),
            client_node_id: target.clone(),
            channel: ChannelRecord {
                channel_id: Some("ab".repeat(32)),
                funding_txid: "cd".repeat(32),
                funding_outnum: 0,
                funded_at_ms: 0,
                expires_at_ms: 0,
                lease_end_block: Some(500),
            },
        };
        let leases = vec![lease];
        assert!(lease_for(&target, &leases, None).is_some(), "by peer id");
        assert!(lease_for(&"ab".repeat(32), &leases, None).is_some(), "by channel id");
        assert!(lease_for("103x1x0", &leases, Some(&"ab".repeat(32))).is_some(), "by scid");
        assert!(lease_for("103x1x0", &leases, None).is_none());
        let g = CloseGuard::default();
        assert!(!g.allowed("o"));
        g.allow("o");
        assert!(g.allowed("o"));
    }
}
