//! The operator's figures, gathered once and shown three ways: `lsps1-status` (JSON), the
//! page (the same JSON) and `/metrics` (gauges made from the same [`Status`]). Nothing here
//! queries anything the others do not: a figure exists once.

use serde_json::{Value, json};

use crate::clock::{Clock, Entropy};
use crate::lifecycle::Engine;
use crate::lifecycle::engine::LeasePlan;
use crate::lsps0::ser::format_datetime;
use crate::lsps1::service::Service;
use crate::order::FailReason;
use crate::ports::{ChannelApi, NodeApi, WalletApi};
use crate::store::{DAY_MS, HeldOrder, StoreFigures};
use crate::telemetry::{GaugeFamily, RecentError};

/// Refund causes, every one always shown (a cause at 0 is a figure too: an alert on its
/// increase sees the first one): orders whose held payment went back.
const REFUND_CAUSES: [&str; 9] = [
    FailReason::PaymentExpired.as_str(),
    FailReason::OpenFailed.as_str(),
    FailReason::PeerNotConnected.as_str(),
    FailReason::CltvDeadline.as_str(),
    FailReason::Cancelled.as_str(),
    FailReason::FundsUnavailable.as_str(),
    FailReason::PaymentLost.as_str(),
    FailReason::OpenInterrupted.as_str(),
    "refunded_after_open",
];

/// On-chain refund transactions, by kind (the store's cause `onchain_<kind>`): apart from the
/// causes, since an order paid on-chain and failed has both a cause and a transaction.
const ONCHAIN_REFUND_KINDS: [&str; 2] = ["whole", "surplus"];

/// Blocks left before a held HTLC expiring at `expiry` reaches the plugin's refund margin.
fn margin_blocks(expiry: u32, height: u32, safety_margin_blocks: u32) -> i64 {
    i64::from(expiry) - i64::from(height) - i64::from(safety_margin_blocks)
}

/// Everything `lsps1-status` shows, read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub node_id: String,
    pub network: String,
    pub height: u32,
    pub now_ms: i64,
    pub store: StoreFigures,
    /// The plugin refunds a held HTLC this many blocks before its expiry.
    pub safety_margin_blocks: u32,
    /// Confirmed, unreserved wallet funds as last read; `None` before the first read.
    pub wallet_confirmed_sat: Option<u64>,
    /// Held back for paid orders in flight and for lightningd's emergency reserve.
    pub reserved_sat: u64,
    pub emergency_reserve_sat: u64,
    pub max_channel_balance_sat: u64,
    pub rate_limited: u64,
    pub refused: u64,
    pub counting_since_ms: i64,
    pub recent_errors: Vec<RecentError>,
}

impl Status {
    /// Orders whose payment is held now.
    pub fn held_orders(&self) -> u64 {
        self.phase("payment_held") + self.phase("opening")
    }

    fn phase(&self, p: &str) -> u64 {
        self.store.by_phase.iter().find(|(q, _)| q == p).map_or(0, |(_, n)| *n)
    }

    pub fn held_sat(&self) -> u64 {
        (self.store.held.htlc_msat / 1000).saturating_add(self.store.held.onchain_sat)
    }

    /// Blocks left before the earliest held HTLC reaches the refund margin.
    pub fn cltv_margin_blocks(&self) -> Option<i64> {
        self.store.held.earliest_cltv_expiry.map(|e| margin_blocks(e, self.height, self.safety_margin_blocks))
    }

    /// What the wallet can still put into a new channel.
    pub fn free_sat(&self) -> Option<u64> {
        self.wallet_confirmed_sat
            .map(|c| c.saturating_sub(self.reserved_sat).saturating_sub(self.emergency_reserve_sat))
    }

    fn onchain_refunds(&self) -> Vec<(&'static str, u64)> {
        ONCHAIN_REFUND_KINDS
            .iter()
            .map(|k| {
                let cause = format!("onchain_{k}");
                (*k, self.store.refunds.iter().find(|(c, _)| *c == cause).map_or(0, |(_, n)| *n))
            })
            .collect()
    }

    fn refund_counts(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = REFUND_CAUSES.iter().map(|c| (c.to_string(), 0)).collect();
        for (cause, n) in self.store.refunds.iter().filter(|(c, _)| !c.starts_with("onchain_")) {
            match out.iter_mut().find(|(c, _)| c == cause) {
                Some(slot) => slot.1 = *n,
                None => out.push((cause.clone(), *n)),
            }
        }
        out
    }

    /// The JSON of `lsps1-status` and of the page's `/api/status`.
    pub fn to_json(&self) -> Value {
        let s = &self.store;
        let by_phase: serde_json::Map<String, Value> = s.by_phase.iter().map(|(p, n)| (p.clone(), json!(n))).collect();
        let total: u64 = s.by_phase.iter().map(|(_, n)| *n).sum();
        let refunds = self.refund_counts();
        json!({
            "node_id": self.node_id,
            "network": self.network,
            "blockheight": self.height,
            "generated_at": format_datetime(self.now_ms),
            "orders": {"total": total, "by_phase": by_phase},
            "held": {
                "orders": self.held_orders(),
                "amount_sat": self.held_sat(),
                "htlcs": s.held.htlcs,
                "onchain_outputs": s.held.onchain_outputs,
                "earliest_cltv_expiry": s.held.earliest_cltv_expiry,
                "cltv_margin_blocks": self.cltv_margin_blocks(),
            },
            "revenue_sat": {
                "today": s.revenue_windows[0], "last_7_days": s.revenue_windows[1],
                "last_30_days": s.revenue_windows[2], "all_time": s.revenue_all_sat,
            },
            "capacity_sold_sat": {
                "today": s.capacity_windows[0], "last_7_days": s.capacity_windows[1],
                "last_30_days": s.capacity_windows[2], "all_time": s.capacity_all_sat,
            },
            "leases": {
                "active": s.leases.active,
                "leased_sat": s.leases.leased_sat,
                "ending_within_1_day": s.leases.ending_within_1_day,
                "ending_within_1_week": s.leases.ending_within_1_week,
                "ending_within_1_month": s.leases.ending_within_1_month,
            },
            "refunds": {
                "total": refunds.iter().map(|(_, n)| n).sum::<u64>(),
                "by_cause": refunds.iter().map(|(c, n)| (c.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "onchain_transactions": self.onchain_refunds().into_iter()
                    .map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            },
            "requests": {
                "rate_limited": self.rate_limited,
                "refused": self.refused,
                "since": format_datetime(self.counting_since_ms),
            },
            "wallet": {
                "confirmed_sat": self.wallet_confirmed_sat,
                "reserved_sat": self.reserved_sat,
                "emergency_reserve_sat": self.emergency_reserve_sat,
                "free_sat": self.free_sat(),
                "max_channel_balance_sat": self.max_channel_balance_sat,
            },
            "recent_errors": self.recent_errors.iter().map(|e| json!({
                "at": format_datetime(e.at_ms), "message": e.message,
            })).collect::<Vec<_>>(),
            "daily": s.days.iter().map(|d| json!({
                "day": format_datetime(d.day * DAY_MS).get(..10).unwrap_or(""),
                "revenue_sat": d.revenue_sat,
                "capacity_sold_sat": d.capacity_sat,
                "orders_created": d.created,
                "orders_completed": d.completed,
                "orders_failed": d.failed,
            })).collect::<Vec<_>>(),
        })
    }

    /// The same figures as Prometheus gauges (`lsps1_` prefix, money in `_sat`, no per-order
    /// or per-peer labels).
    pub fn gauges(&self) -> Vec<GaugeFamily> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let s = &self.store;
        let windows = |vals: [u64; 3], all: u64| {
            vec![
                (vec![("window", "today".to_string())], n(vals[0])),
                (vec![("window", "7d".to_string())], n(vals[1])),
                (vec![("window", "30d".to_string())], n(vals[2])),
                (vec![("window", "all".to_string())], n(all)),
            ]
        };
        let mut out = vec![
            GaugeFamily::single(
                "lsps1_blockheight",
                "The chain tip the plugin measures against",
                i64::from(self.height),
            ),
            GaugeFamily {
                name: "lsps1_orders",
                help: "Orders by phase",
                samples: s.by_phase.iter().map(|(p, v)| (vec![("phase", p.clone())], n(*v))).collect(),
            },
            GaugeFamily::single("lsps1_held_payments", "Orders whose payment is held now", n(self.held_orders())),
            GaugeFamily::single("lsps1_held_sat", "Money held now: HTLCs and on-chain payments", n(self.held_sat())),
            GaugeFamily::single("lsps1_held_htlcs", "HTLCs held now", n(s.held.htlcs)),
            GaugeFamily::single("lsps1_held_onchain_outputs", "On-chain payments held now", n(s.held.onchain_outputs)),
            GaugeFamily {
                name: "lsps1_held_cltv_margin_blocks",
                help: "Blocks before the earliest held HTLC must be refunded (absent when none is held)",
                samples: self.cltv_margin_blocks().map(|m| (vec![], m)).into_iter().collect(),
            },
            GaugeFamily {
                name: "lsps1_revenue_sat",
                help: "Fees of completed orders, by window (UTC days)",
                samples: windows(s.revenue_windows, s.revenue_all_sat),
            },
            GaugeFamily {
                name: "lsps1_capacity_sold_sat",
                help: "LSP-side balance of completed orders, by window (UTC days)",
                samples: windows(s.capacity_windows, s.capacity_all_sat),
            },
            GaugeFamily::single("lsps1_leases_active", "Leases not yet ended", n(s.leases.active)),
            GaugeFamily::single(
                "lsps1_leased_sat",
                "LSP-side balance of the leases not yet ended",
                n(s.leases.leased_sat),
            ),
            GaugeFamily {
                name: "lsps1_leases_ending",
                help: "Leases ending within a day, a week and a month (144 blocks a day)",
                samples: vec![
                    (vec![("within", "1d".to_string())], n(s.leases.ending_within_1_day)),
                    (vec![("within", "1w".to_string())], n(s.leases.ending_within_1_week)),
                    (vec![("within", "1m".to_string())], n(s.leases.ending_within_1_month)),
                ],
            },
            GaugeFamily {
                name: "lsps1_refunds",
                help: "Orders whose held payment went back, by cause, since the store was created",
                samples: self.refund_counts().into_iter().map(|(c, v)| (vec![("cause", c)], n(v))).collect(),
            },
            GaugeFamily {
                name: "lsps1_onchain_refunds",
                help: "On-chain refund transactions (not their replacements), by kind, since the store was created",
                samples: self
                    .onchain_refunds()
                    .into_iter()
                    .map(|(k, v)| (vec![("kind", k.to_string())], n(v)))
                    .collect(),
            },
            GaugeFamily::single(
                "lsps1_max_channel_balance_sat",
                "The largest channel offered (lsps1-max-channel-balance-sat)",
                n(self.max_channel_balance_sat),
            ),
            GaugeFamily::single(
                "lsps1_reserved_sat",
                "Wallet funds held back for paid orders in flight",
                n(self.reserved_sat),
            ),
        ];
        if let Some(free) = self.free_sat() {
            out.push(GaugeFamily::single(
                "lsps1_wallet_free_sat",
                "Wallet funds free for new channels (after orders in flight and the emergency reserve)",
                n(free),
            ));
        }
        out
    }
}

/// Read the figures now. `days`: daily totals to include (the page's chart reads 90).
pub async fn status<N, C, E>(service: &Service<N, C, E>, engine: &Engine<N, C>, days: u32) -> Result<Status, String>
where
    N: NodeApi + ChannelApi + WalletApi,
    C: Clock,
    E: Entropy,
{
    let now_ms = service.now_ms();
    let height = engine.height();
    let days = days.min(3_660);
    let store = service.store().clone();
    let (figures, reserved) = store
        .call(move |s| Ok((s.status_figures(now_ms, height, days)?, s.read_reserved_sat()?)))
        .await
        .map_err(|e| e.to_string())?;
    let (rate_limited, refused, since, recent) = match service.telemetry() {
        Some(t) => {
            let (r, f) = t.refused_counts();
            (r, f, t.started_at_ms(), t.recent_errors())
        }
        None => (0, 0, now_ms, vec![]),
    };
    Ok(Status {
        node_id: service.node_info().id.to_string(),
        network: service.node_info().network.to_string(),
        height,
        now_ms,
        store: figures,
        safety_margin_blocks: engine.config().rules.safety_margin_blocks,
        wallet_confirmed_sat: service.market().funds.map(|f| f.confirmed_sat),
        reserved_sat: reserved,
        emergency_reserve_sat: service.node_info().emergency_reserve_sat,
        max_channel_balance_sat: service.config().options.max_channel_balance_sat,
        rate_limited,
        refused,
        counting_since_ms: since,
        recent_errors: recent,
    })
}

/// The page's "held now" list (`lsps1-listheld`).
pub fn held_json(height: u32, safety_margin_blocks: u32, orders: &[HeldOrder]) -> Value {
    json!({
        "blockheight": height,
        "orders": orders.iter().map(|o| json!({
            "order_id": o.order_id,
            "peer_id": o.client_node_id,
            "phase": o.phase,
            "paid_method": o.paid_method,
            "amount_sat": if o.htlcs > 0 { o.htlc_msat / 1000 } else { o.order_total_sat },
            "htlcs": o.htlcs,
            "earliest_cltv_expiry": o.earliest_cltv_expiry,
            "cltv_margin_blocks": o.earliest_cltv_expiry
                .map(|e| margin_blocks(e, height, safety_margin_blocks)),
            "held_since": o.held_at_ms.map(format_datetime),
        })).collect::<Vec<_>>(),
    })
}

/// One lease as the page and `lsps1-listleases` show it.
pub fn lease_json(p: &LeasePlan, height: u32) -> Value {
    let l = &p.lease;
    json!({
        "order_id": l.order_id,
        "peer_id": l.client_node_id,
        "channel_id": l.channel_id,
        "channel_state": p.channel.as_ref().map(|c| c.state.clone()),
        "lsp_balance_sat": l.lsp_balance_sat,
        "lease_end_block": l.lease_end_block,
        "blocks_left": i64::from(l.lease_end_block) - i64::from(height),
        "state": l.state.as_str(),
        "payments_fulfilled": p.channel.as_ref().map(|c| c.payments_fulfilled),
        "idle_blocks": (l.state != crate::store::LeaseState::Active)
            .then(|| crate::lifecycle::lease::idle_blocks(l, height)),
        "action": p.decision.action.as_str(),
        "why": p.decision.why,
    })
}

/// `lsps1-listleases`: every lease ending within the window, with what the policy does.
pub fn leases_json(height: u32, policy: crate::config::LeasePolicy, plans: &[LeasePlan]) -> Value {
    json!({
        "blockheight": height,
        "policy": policy.as_str(),
        "leases": plans.iter().map(|p| lease_json(p, height)).collect::<Vec<_>>(),
    })
}
