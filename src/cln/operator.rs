//! The operator's commands, one handler each, shared by `lightning-cli` (the RPC methods
//! registered in `cln::run`) and the console's page (`console::Operator`): a command and its
//! page route can never disagree.

use serde_json::{Value, json};

use super::State;
use crate::console::figures::{self, Status};
use crate::console::{CommandError, INTERNAL, INVALID_PARAMS, NOT_NOW, Operator};
use crate::lsps0::codes::NOT_FOUND;
use crate::lsps1::admin;
use crate::order::Phase;
use crate::ports::{NodeError, RuneApi, RuneVerdict};
use crate::store::{BLOCKS_1M, LeaseState};

fn bad(e: impl std::fmt::Display) -> CommandError {
    CommandError::new(INVALID_PARAMS, e.to_string())
}

fn internal(e: impl std::fmt::Display) -> CommandError {
    CommandError::new(INTERNAL, e.to_string())
}

/// Run the operator command `method` with `params`.
pub async fn run(state: &State, method: &str, params: Value) -> Result<Value, CommandError> {
    match method {
        "lsps1-status" => Ok(status(state, &params).await?.to_json()),
        "lsps1-listorders" => list_orders(state, params).await,
        "lsps1-getorder" => get_order(state, params).await,
        "lsps1-listheld" => list_held(state, params).await,
        "lsps1-listleases" => list_leases(state, params).await,
        "lsps1-cancelorder" => cancel_order(state, params).await,
        "lsps1-allowclose" => allow_close(state, params).await,
        other => Err(CommandError::new(-32601, format!("unknown command {other}"))),
    }
}

/// `lsps1-status [days]`: the figures; `days` of daily totals (default 0, at most 3660).
async fn status(state: &State, params: &Value) -> Result<Status, CommandError> {
    let [days]: [Option<Value>; 1] =
        admin::bind_params(params, &["days"]).map_err(bad)?.try_into().map_err(|_| bad("parameter count"))?;
    let days = match days {
        None => 0,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n <= 3_660)
            .ok_or_else(|| bad("days must be an integer from 0 to 3660"))?,
    };
    figures::status(&state.service, &state.engine, days).await.map_err(internal)
}

/// The Prometheus text: the figures of [`status`] and the running counts.
pub async fn metrics(state: &State) -> Result<String, CommandError> {
    let status = status(state, &json!({})).await?;
    state.telemetry.encode(status.gauges()).map_err(internal)
}

async fn list_orders(state: &State, params: Value) -> Result<Value, CommandError> {
    let filter = admin::parse_listorders(&params).map_err(bad)?;
    let orders = state.service.store().call(move |s| s.list_orders(&filter)).await.map_err(internal)?;
    Ok(json!({ "orders": orders.iter().map(admin::summary).collect::<Vec<_>>() }))
}

async fn get_order(state: &State, params: Value) -> Result<Value, CommandError> {
    let id = admin::parse_getorder(&params).map_err(bad)?;
    let lookup = id.clone();
    let found = state
        .service
        .store()
        .call(move |s| {
            Ok(s.order_with_htlcs(&lookup)?.map(|(o, h)| {
                let chain = s.chain_outputs(&lookup).and_then(|c| Ok((c, s.refunds_of(&lookup)?)));
                (s.events(&lookup), o, h, chain, s.lease_of(&lookup))
            }))
        })
        .await
        .map_err(internal)?;
    let Some((events, order, htlcs, chain, lease)) = found else {
        return Err(CommandError::new(NOT_FOUND, format!("no order {id}")));
    };
    let height = state.engine.height();
    let mut v = admin::detail(&order, &events.map_err(internal)?);
    v["blockheight"] = json!(height);
    admin::add_htlcs(&mut v, &htlcs);
    if order.onchain.is_some() {
        let (outputs, refunds) = chain.map_err(internal)?;
        admin::add_onchain(&mut v, &outputs, &refunds, height);
    }
    let lease = lease.map_err(internal)?;
    v["lease"] = match &lease {
        None => Value::Null,
        Some(l) => {
            // The policy's view, with the channel as lightningd lists it now.
            let plans = state.engine.lease_plan_of(l.clone()).await;
            figures::lease_json(&plans, height)
        }
    };
    v["actions"] = json!({
        "cancel": matches!(order.phase, Phase::AwaitingPayment | Phase::PaymentHeld),
        "allowclose": lease.as_ref().is_some_and(|l| l.state == LeaseState::Active && l.lease_end_block > height),
    });
    Ok(v)
}

async fn list_held(state: &State, params: Value) -> Result<Value, CommandError> {
    admin::bind_params(&params, &[]).map_err(bad)?;
    let orders = state.service.store().call(|s| s.held_orders()).await.map_err(internal)?;
    Ok(figures::held_json(state.engine.height(), state.engine.config().rules.safety_margin_blocks, &orders))
}

/// `lsps1-listleases [within_blocks]`: leases ending within the window (default a month),
/// those ended and not closed, and what the lease-end policy does with each, before it
/// ever closes one.
async fn list_leases(state: &State, params: Value) -> Result<Value, CommandError> {
    let [within]: [Option<Value>; 1] =
        admin::bind_params(&params, &["within_blocks"]).map_err(bad)?.try_into().map_err(|_| bad("parameter count"))?;
    let within = match within {
        None => BLOCKS_1M,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad("within_blocks must be a non-negative integer"))?,
    };
    let plans = state.engine.lease_plan(within, false).await.map_err(internal)?;
    Ok(figures::leases_json(state.engine.height(), state.engine.config().lease_policy, &plans))
}

async fn cancel_order(state: &State, params: Value) -> Result<Value, CommandError> {
    let id = admin::parse_getorder(&params).map_err(bad)?;
    state.engine.cancel(&id).await.map_err(|e| {
        if e.starts_with("no order") { CommandError::new(NOT_FOUND, e) } else { CommandError::new(NOT_NOW, e) }
    })
}

async fn allow_close(state: &State, params: Value) -> Result<Value, CommandError> {
    let id = admin::parse_getorder(&params).map_err(bad)?;
    let height = state.engine.height();
    let leases = state.engine.store().call(move |s| s.active_leases(height)).await.map_err(internal)?;
    let Some(lease) = leases.iter().find(|l| l.order_id == id) else {
        return Err(CommandError::new(NOT_NOW, format!("order {id} has no active lease")));
    };
    state.close_guard.allow(&id);
    log::warn!(
        "Operator allowed closing the leased channel of order {id} (lease until block {})",
        lease.channel.lease_end_block.unwrap_or(0)
    );
    Ok(json!({
        "order_id": id,
        "channel_id": lease.channel.channel_id,
        "lease_end_block": lease.channel.lease_end_block,
        "allowed_for_secs": super::hooks::ALLOW_CLOSE_FOR.as_secs(),
    }))
}

impl Operator for State {
    async fn command(&self, method: &'static str, params: Value) -> Result<Value, CommandError> {
        run(self, method, params).await
    }

    async fn metrics(&self) -> Result<String, CommandError> {
        metrics(self).await
    }

    async fn check_rune(&self, rune: String, method: &'static str, params: Value) -> Result<RuneVerdict, NodeError> {
        self.service.node().check_rune(rune, method, params).await
    }
}
