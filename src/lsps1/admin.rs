//! Operator commands: `lsps1-listorders` and `lsps1-getorder`. Pure parsing
//! and rendering; `cln` exposes them as Core Lightning RPC methods. Params come either by
//! position (`lightning-cli lsps1-getorder <id>`) or by name (`-k order_id=<id>`).

use serde_json::{Value, json};

use crate::lsps0::ser::{format_datetime, parse_datetime};
use crate::lsps1::service::order_response;
use crate::order::chain::ChainOutput;
use crate::order::{PaymentMethod, Phase, onchain_option_state, option_state};
use crate::store::{EventRecord, HtlcRecord, OnchainFilter, OrderFilter, OrderRecord, RefundRecord, Resolution};

/// A bad operator argument, shown by lightning-cli.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArgError(pub String);

/// Bind positional or named params to `names`; unknown names are refused.
pub fn bind_params(params: &Value, names: &[&str]) -> Result<Vec<Option<Value>>, ArgError> {
    match params {
        Value::Null => Ok(vec![None; names.len()]),
        Value::Array(a) => {
            if a.len() > names.len() {
                return Err(ArgError(format!(
                    "too many parameters: expected at most {} ({})",
                    names.len(),
                    names.join(", ")
                )));
            }
            Ok(names.iter().enumerate().map(|(i, _)| a.get(i).filter(|v| !v.is_null()).cloned()).collect())
        }
        Value::Object(m) => {
            if let Some(k) = m.keys().find(|k| !names.contains(&k.as_str())) {
                return Err(ArgError(format!("unknown parameter '{k}'; expected {}", names.join(", "))));
            }
            Ok(names.iter().map(|n| m.get(*n).filter(|v| !v.is_null()).cloned()).collect())
        }
        _ => Err(ArgError("parameters must be an array or an object".into())),
    }
}

pub const LISTORDERS_PARAMS: [&str; 9] =
    ["state", "peer_id", "since", "limit", "payment", "until", "offset", "id_prefix", "all_nodes"];

/// Orders `lsps1-listorders` returns when no `limit` is given: the newest first, so a store
/// of a million orders never builds a million-entry answer by accident.
pub const LISTORDERS_DEFAULT_LIMIT: u32 = 1_000;

/// Parse `lsps1-listorders [state] [peer_id] [since] [limit]`. `state` is an order state
/// (`CREATED`, `COMPLETED`, `FAILED`) or an internal phase (`awaiting_payment`, ...);
/// `since` is unix seconds or an RFC 3339 datetime; `limit` defaults to
/// [`LISTORDERS_DEFAULT_LIMIT`].
pub fn parse_listorders(params: &Value) -> Result<OrderFilter, ArgError> {
    let [state, peer, since, limit, payment, until, offset, id_prefix, all_nodes]: [Option<Value>; 9] =
        bind_params(params, &LISTORDERS_PARAMS)?
            .try_into()
            .map_err(|_| ArgError("internal: parameter count".into()))?;
    let phases = match state {
        None => None,
        Some(Value::String(s)) => Some(phases_for(&s).ok_or_else(|| {
            ArgError(format!("unknown state '{s}': use CREATED, COMPLETED, FAILED or a phase (awaiting_payment, payment_held, opening, completed, failed)"))
        })?),
        Some(_) => return Err(ArgError("state must be a string".into())),
    };
    let client_node_id = match peer {
        None => None,
        Some(Value::String(s)) => {
            Some(crate::lsps0::ser::read_pubkey(&s).map_err(|e| ArgError(format!("peer_id {e}")))?.to_string())
        }
        Some(_) => return Err(ArgError("peer_id must be a node id".into())),
    };
    let created_since_ms = time_param(since, "since", 0)?;
    // A date alone means the whole of that day.
    let created_before_ms = time_param(until, "until", 86_400_000)?;
    let offset = match offset {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| ArgError("offset must be a non-negative integer".into()))?,
        ),
    };
    let limit = match limit {
        None => Some(LISTORDERS_DEFAULT_LIMIT),
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| ArgError("limit must be a positive integer".into()))?,
        ),
    };
    let onchain = match payment {
        None => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "onchain" => OnchainFilter::Offered,
            "paid-onchain" => OnchainFilter::Paid,
            "refunds" => OnchainFilter::Refunds,
            _ => return Err(ArgError(format!("unknown payment filter '{s}': use onchain, paid-onchain or refunds"))),
        }),
        Some(_) => return Err(ArgError("payment must be a string".into())),
    };
    let id_prefix = match id_prefix {
        None => None,
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 128 => Some(s.trim().to_string()),
        Some(_) => return Err(ArgError("id_prefix must be the start of an order id".into())),
    };
    // Every node sharing the order book, or (by default) this node's orders only.
    let all_nodes = match all_nodes {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
        Some(_) => return Err(ArgError("all_nodes must be true or false".into())),
    };
    Ok(OrderFilter {
        phases,
        client_node_id,
        created_since_ms,
        created_before_ms,
        limit,
        offset,
        onchain,
        id_prefix,
        all_nodes,
    })
}

/// A time parameter: unix seconds, an RFC 3339 datetime, or a date (`YYYY-MM-DD`, UTC
/// midnight, plus `date_extra_ms`).
fn time_param(v: Option<Value>, name: &str, date_extra_ms: i64) -> Result<Option<i64>, ArgError> {
    let bad = || ArgError(format!("{name} must be unix seconds, an RFC 3339 datetime or a date (YYYY-MM-DD)"));
    Ok(match v {
        None => None,
        Some(Value::Number(n)) => Some(n.as_i64().and_then(|s| s.checked_mul(1000)).ok_or_else(bad)?),
        Some(Value::String(s)) => Some(match s.parse::<i64>() {
            Ok(secs) => secs.checked_mul(1000).ok_or_else(bad)?,
            Err(_) => match parse_datetime(&s) {
                Some(ms) => ms,
                None if s.len() == 10 => {
                    parse_datetime(&format!("{s}T00:00:00Z")).map(|ms| ms + date_extra_ms).ok_or_else(bad)?
                }
                None => return Err(bad()),
            },
        }),
        Some(_) => return Err(bad()),
    })
}

fn phases_for(state: &str) -> Option<Vec<Phase>> {
    match state.to_ascii_uppercase().as_str() {
        "CREATED" => Some(vec![Phase::AwaitingPayment, Phase::PaymentHeld, Phase::Opening]),
        "COMPLETED" => Some(vec![Phase::Completed]),
        "FAILED" => Some(vec![Phase::Failed]),
        _ => Phase::parse(&state.to_ascii_lowercase()).map(|p| vec![p]),
    }
}

/// Parse `lsps1-getorder order_id`.
pub fn parse_getorder(params: &Value) -> Result<String, ArgError> {
    match bind_params(params, &["order_id"])?.pop().flatten() {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(ArgError("order_id is required".into())),
    }
}

/// One line of `lsps1-listorders`.
pub fn summary(r: &OrderRecord) -> Value {
    json!({
        "order_id": r.order_id,
        "peer_id": r.client_node_id,
        "transport": r.transport.as_str(),
        "created_at": format_datetime(r.created_at_ms),
        "order_state": r.phase.order_state().as_str(),
        // The paid option's state (a channel opened on a refunded payment reads REFUNDED).
        "payment_state": match r.paid_method {
            Some(PaymentMethod::Onchain) => onchain_option_state(r.phase, r.paid_method),
            m => option_state(r.phase, m, m.unwrap_or(PaymentMethod::Bolt11), r.refunded_after_open),
        }
        .as_str(),
        "paid_method": r.paid_method.map(PaymentMethod::as_str),
        "onchain_address": r.onchain.as_ref().map(|q| q.address.clone()),
        "reorg_flagged": r.reorg_flagged,
        "phase": r.phase.as_str(),
        "lsp_balance_sat": r.lsp_balance_sat,
        "client_balance_sat": r.client_balance_sat,
        "channel_expiry_blocks": r.channel_expiry_blocks,
        "fee_total_sat": r.fee_total_sat,
        "order_total_sat": r.order_total_sat,
        "expires_at": format_datetime(r.expires_at_ms),
        "token": r.token,
        "failure_reason": r.failure_reason,
        "lease_end_block": r.channel.as_ref().and_then(|c| c.lease_end_block),
    })
}

/// The HTLCs of an order in `lsps1-getorder`: each with its state, and the
/// amount held now.
pub fn add_htlcs(v: &mut Value, htlcs: &[HtlcRecord]) {
    let held: u64 = htlcs.iter().filter(|h| h.resolution.is_none()).map(|h| h.amount_msat).fold(0, u64::saturating_add);
    v["held_msat"] = json!(held);
    v["htlcs"] = json!(
        htlcs
            .iter()
            .map(|h| json!({
                "short_channel_id": h.key.short_channel_id,
                "id": h.key.id,
                "amount_msat": h.amount_msat,
                "cltv_expiry": h.cltv_expiry,
                "received_at": format_datetime(h.received_at_ms),
                "state": match h.resolution {
                    None => "held",
                    Some(Resolution::Settled) => "settled",
                    Some(Resolution::Failed) => "failed",
                },
            }))
            .collect::<Vec<_>>()
    );
}

/// The full record of `lsps1-getorder`: the client's view (`order`), what the operator
/// needs besides it, and the event log. The preimage is never shown.
pub fn detail(r: &OrderRecord, events: &[EventRecord]) -> Value {
    json!({
        "order": order_response(r),
        "peer_id": r.client_node_id,
        "transport": r.transport.as_str(),
        "phase": r.phase.as_str(),
        "failure_reason": r.failure_reason,
        "client_info": r.client_info,
        "refund_onchain_address": r.refund_onchain_address,
        "payment_hash": r.bolt11.as_ref().map(|b| b.payment_hash.clone()),
        "funding_feerate_perkw": r.funding_feerate_perkw,
        "reserved_sat": r.reserved_sat,
        "paid_method": r.paid_method.map(PaymentMethod::as_str),
        "updated_at": format_datetime(r.updated_at_ms),
        "lease_end_block": r.channel.as_ref().and_then(|c| c.lease_end_block),
        "events": events.iter().map(|e| json!({
            "seq": e.seq,
            "at": format_datetime(e.at_ms),
            "kind": e.kind,
            "from": e.from_phase,
            "to": e.to_phase,
            "detail": e.detail,
        })).collect::<Vec<_>>(),
    })
}

/// The on-chain side of `lsps1-getorder` (rulings 23–25): every output seen at the order's
/// address with its depth and what it is to the order, and every refund transaction.
pub fn add_onchain(v: &mut Value, outputs: &[ChainOutput], refunds: &[RefundRecord], tip: u32) {
    v["onchain"] = json!({
        "outputs": outputs.iter().map(|o| json!({
            "outpoint": o.outpoint.to_string(),
            "amount_sat": o.amount_sat,
            "blockheight": o.blockheight,
            "confirmations": crate::order::chain::confirmations(o.blockheight, tip),
            "role": o.role.as_str(),
        })).collect::<Vec<_>>(),
        "refunds": refunds.iter().map(|r| json!({
            "txid": r.txid,
            "state": r.state.as_str(),
            "inputs": r.inputs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "destination": r.destination,
            "amount_sat": r.amount_sat,
            "fee_sat": r.fee_sat,
            "feerate_perkw": r.feerate_perkw,
            "created_height": r.created_height,
            "replaces": r.replaces,
        })).collect::<Vec<_>>(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_and_named() {
        let f = parse_listorders(&json!(["FAILED"])).unwrap();
        assert_eq!(f.phases, Some(vec![Phase::Failed]));
        let f = parse_listorders(&json!({"since": 1_700_000_000, "limit": 3})).unwrap();
        assert_eq!((f.created_since_ms, f.limit), (Some(1_700_000_000_000), Some(3)));
        let f = parse_listorders(&json!({"since": "2024-06-10T03:43:11.542Z", "state": "created"})).unwrap();
        assert_eq!(f.created_since_ms, Some(1_717_990_991_542));
        assert_eq!(f.phases.unwrap().len(), 3);
        assert!(parse_listorders(&json!({"bogus": 1})).is_err());
        assert!(parse_listorders(&json!(["NOPE"])).is_err());
        assert!(parse_listorders(&json!([null, "02xx"])).is_err());
        assert!(parse_listorders(&json!([1, 2, 3, 4, 5, 6, 7, 8, 9])).is_err());
        assert_eq!(parse_listorders(&json!({"id_prefix": " 3da2 "})).unwrap().id_prefix.as_deref(), Some("3da2"));
        let f = parse_listorders(&json!({"since": "2024-06-10", "until": "2024-06-10", "offset": "50"})).unwrap();
        assert_eq!((f.created_since_ms, f.created_before_ms), (Some(1_717_977_600_000), Some(1_718_064_000_000)));
        assert_eq!(f.offset, Some(50));
        assert!(parse_listorders(&json!({"until": "yesterday"})).is_err());
        // No limit given: the newest LISTORDERS_DEFAULT_LIMIT (a million-order
        // store never answers with a million entries by accident).
        assert_eq!(
            parse_listorders(&json!([])).unwrap(),
            OrderFilter { limit: Some(LISTORDERS_DEFAULT_LIMIT), ..OrderFilter::default() }
        );
    }

    #[test]
    fn getorder_params() {
        assert_eq!(parse_getorder(&json!(["abc"])).unwrap(), "abc");
        assert_eq!(parse_getorder(&json!({"order_id": "abc"})).unwrap(), "abc");
        assert!(parse_getorder(&json!([])).is_err());
        assert!(parse_getorder(&json!({"id": "abc"})).is_err());
    }
}
