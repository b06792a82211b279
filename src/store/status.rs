//! The operator's figures (`lsps1-status`, `/metrics`, the page): read from the running
//! totals that schema v5's triggers keep in the same transactions as the changes they count,
//! and from small indexed sets (what is held now, leases ending soon). Nothing here walks
//! the whole order book, so the cost stays flat at any store size.
//!
//! Also the lease-end policy's records: a lease's end, its channel's activity, its close.

use serde_json::json;

use super::db::{Db, Row, Val};
use super::{Store, StoreError, event_db, to_u64};

/// Milliseconds in a UTC day: the unit of `stats_daily`.
pub const DAY_MS: i64 = 86_400_000;

/// One UTC day of `stats_daily`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayFigures {
    /// Days since the epoch.
    pub day: i64,
    pub created: u64,
    pub completed: u64,
    pub failed: u64,
    pub revenue_sat: u64,
    pub capacity_sat: u64,
}

/// What is held right now: HTLCs not yet settled or failed, and on-chain payments not yet
/// kept or refunded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldFigures {
    pub htlcs: u64,
    pub htlc_msat: u64,
    pub earliest_cltv_expiry: Option<u32>,
    pub onchain_outputs: u64,
    pub onchain_sat: u64,
}

/// Leases by their end block, counted from `stats_lease_ends`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseFigures {
    pub active: u64,
    pub leased_sat: u64,
    pub ending_within_1_day: u64,
    pub ending_within_1_week: u64,
    pub ending_within_1_month: u64,
}

/// Everything the store knows of the operator's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreFigures {
    /// Orders by phase (`Phase::as_str`), every phase present.
    pub by_phase: Vec<(String, u64)>,
    pub held: HeldFigures,
    /// The last `days` days, oldest first, every day present (zeros where nothing happened).
    pub days: Vec<DayFigures>,
    /// Fees and LSP-side capacity of the orders completed today, in the last 7 and 30 days.
    pub revenue_windows: [u64; 3],
    pub capacity_windows: [u64; 3],
    /// Fees and LSP-side capacity of every completed order.
    pub revenue_all_sat: u64,
    pub capacity_all_sat: u64,
    pub leases: LeaseFigures,
    /// Refunds by cause, by cause name.
    pub refunds: Vec<(String, u64)>,
}

/// Blocks in a day, a week and a month (30 days), at 144 blocks a day.
pub const BLOCKS_1D: u32 = 144;
pub const BLOCKS_1W: u32 = 1_008;
pub const BLOCKS_1M: u32 = 4_320;

const PHASES: [&str; 5] = ["awaiting_payment", "payment_held", "opening", "completed", "failed"];

/// One held order, for the page's "held now" list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldOrder {
    pub order_id: String,
    pub client_node_id: String,
    pub phase: String,
    pub paid_method: Option<String>,
    pub held_at_ms: Option<i64>,
    pub order_total_sat: u64,
    pub htlcs: u64,
    pub htlc_msat: u64,
    pub earliest_cltv_expiry: Option<u32>,
}

/// Where a lease stands (schema v5 `channels.lease_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Before its end block: the close guard protects it.
    Active,
    /// Past its end block: protection lifted, the operator told.
    Ended,
    /// The lease-end policy asked lightningd to close it.
    Closing,
    /// Its channel is gone.
    Closed,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Active => "active",
            LeaseState::Ended => "ended",
            LeaseState::Closing => "closing",
            LeaseState::Closed => "closed",
        }
    }

    fn column(self) -> Option<&'static str> {
        match self {
            LeaseState::Active => None,
            s => Some(s.as_str()),
        }
    }

    fn parse(s: Option<&str>) -> Result<Self, StoreError> {
        match s {
            None => Ok(LeaseState::Active),
            Some("ended") => Ok(LeaseState::Ended),
            Some("closing") => Ok(LeaseState::Closing),
            Some("closed") => Ok(LeaseState::Closed),
            Some(other) => Err(StoreError::Corrupt(format!("lease_state '{other}'"))),
        }
    }
}

/// A sold channel's lease, as the lease-end policy and the page see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub order_id: String,
    pub client_node_id: String,
    pub channel_id: Option<String>,
    pub funding_txid: String,
    pub funding_outnum: u32,
    pub lsp_balance_sat: u64,
    pub lease_end_block: u32,
    pub state: LeaseState,
    /// Payments fulfilled through the channel, in and out, when last seen.
    pub activity_count: Option<u64>,
    /// The block at which that count last moved (or the lease ended, if later).
    pub active_height: Option<u32>,
}

fn u32_of(v: i64, what: &'static str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Range(what))
}

fn one(db: &dyn Db, sql: &str, args: &[Val]) -> Result<Row, StoreError> {
    db.query_opt(sql, args)?.ok_or_else(|| StoreError::Corrupt(format!("no row from: {sql}")))
}

fn held_in(db: &dyn Db) -> Result<HeldFigures, StoreError> {
    let r = one(
        db,
        "SELECT COUNT(*), CAST(COALESCE(SUM(amount_msat), 0) AS BIGINT), MIN(cltv_expiry) FROM htlcs \
         WHERE resolution IS NULL",
        &[],
    )?;
    // The IN lets SQLite use the partial index `chain_outputs_open`.
    let o = one(
        db,
        "SELECT COUNT(*), CAST(COALESCE(SUM(amount_sat), 0) AS BIGINT) FROM chain_outputs \
         WHERE role IN ('seen', 'payment', 'refunding') AND role = 'payment'",
        &[],
    )?;
    Ok(HeldFigures {
        htlcs: to_u64(r.i64(0)?, "held htlcs")?,
        htlc_msat: to_u64(r.i64(1)?, "held msat")?,
        earliest_cltv_expiry: r.opt_i64(2)?.map(|e| u32_of(e, "cltv_expiry")).transpose()?,
        onchain_outputs: to_u64(o.i64(0)?, "held outputs")?,
        onchain_sat: to_u64(o.i64(1)?, "held on-chain sat")?,
    })
}

fn leases_in(db: &dyn Db, height: u32) -> Result<LeaseFigures, StoreError> {
    let h = i64::from(height);
    let r = one(
        db,
        "SELECT CAST(COALESCE(SUM(channels), 0) AS BIGINT), CAST(COALESCE(SUM(leased_sat), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN block <= ?2 THEN channels END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN block <= ?3 THEN channels END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN block <= ?4 THEN channels END), 0) AS BIGINT) \
         FROM stats_lease_ends WHERE block > ?1",
        &[
            h.into(),
            (h + i64::from(BLOCKS_1D)).into(),
            (h + i64::from(BLOCKS_1W)).into(),
            (h + i64::from(BLOCKS_1M)).into(),
        ],
    )?;
    Ok(LeaseFigures {
        active: to_u64(r.i64(0)?, "leases")?,
        leased_sat: to_u64(r.i64(1)?, "leased sat")?,
        ending_within_1_day: to_u64(r.i64(2)?, "leases")?,
        ending_within_1_week: to_u64(r.i64(3)?, "leases")?,
        ending_within_1_month: to_u64(r.i64(4)?, "leases")?,
    })
}

const LEASE_COLUMNS: &str = "c.order_id, o.client_node_id, c.channel_id, o.lsp_balance_sat, c.lease_end_block, \
     c.lease_state, c.activity_count, c.active_height, c.funding_txid, c.funding_outnum \
     FROM channels c JOIN orders o ON o.order_id = c.order_id";

fn leases_from(db: &dyn Db, sql: &str, args: &[Val]) -> Result<Vec<LeaseRow>, StoreError> {
    db.query(sql, args)?
        .into_iter()
        .map(|r| {
            Ok(LeaseRow {
                order_id: r.text(0)?,
                client_node_id: r.text(1)?,
                channel_id: r.opt_text(2)?,
                lsp_balance_sat: to_u64(r.i64(3)?, "lsp_balance_sat")?,
                lease_end_block: u32_of(r.i64(4)?, "lease_end_block")?,
                state: LeaseState::parse(r.opt_text(5)?.as_deref())?,
                activity_count: r.opt_i64(6)?.map(|c| to_u64(c, "activity_count")).transpose()?,
                active_height: r.opt_i64(7)?.map(|a| u32_of(a, "active_height")).transpose()?,
                funding_txid: r.text(8)?,
                funding_outnum: u32_of(r.i64(9)?, "funding_outnum")?,
            })
        })
        .collect()
}

/// [`Store::status_figures`] on any backend, inside one read snapshot the caller holds.
pub(crate) fn status_figures_in(db: &dyn Db, now_ms: i64, height: u32, days: u32) -> Result<StoreFigures, StoreError> {
    let mut by_phase: Vec<(String, u64)> = PHASES.iter().map(|p| (p.to_string(), 0)).collect();
    for r in db.query("SELECT phase, CAST(SUM(orders) AS BIGINT) FROM stats_phase GROUP BY phase", &[])? {
        let phase = r.text(0)?;
        if let Some(slot) = by_phase.iter_mut().find(|(p, _)| *p == phase) {
            slot.1 = to_u64(r.i64(1)?, "orders by phase")?;
        }
    }
    let today = now_ms.div_euclid(DAY_MS);
    let span = i64::from(days.max(30));
    let first = today - span + 1;
    let mut daily: Vec<DayFigures> = (first..=today).map(|day| DayFigures { day, ..DayFigures::default() }).collect();
    for r in db.query(
        "SELECT day, CAST(SUM(created) AS BIGINT), CAST(SUM(completed) AS BIGINT), CAST(SUM(failed) AS BIGINT), \
         CAST(SUM(revenue_sat) AS BIGINT), CAST(SUM(capacity_sat) AS BIGINT) FROM stats_daily \
         WHERE day >= ?1 AND day <= ?2 GROUP BY day",
        &[first.into(), today.into()],
    )? {
        let day = r.i64(0)?;
        if let Some(slot) = usize::try_from(day - first).ok().and_then(|i| daily.get_mut(i)) {
            *slot = DayFigures {
                day,
                created: to_u64(r.i64(1)?, "created")?,
                completed: to_u64(r.i64(2)?, "completed")?,
                failed: to_u64(r.i64(3)?, "failed")?,
                revenue_sat: to_u64(r.i64(4)?, "revenue_sat")?,
                capacity_sat: to_u64(r.i64(5)?, "capacity_sat")?,
            };
        }
    }
    let all = one(
        db,
        "SELECT CAST(COALESCE(SUM(revenue_sat), 0) AS BIGINT), CAST(COALESCE(SUM(capacity_sat), 0) AS BIGINT) \
         FROM stats_daily",
        &[],
    )?;
    let mut refunds = vec![];
    for r in db.query("SELECT cause, refunds FROM stats_refunds ORDER BY cause", &[])? {
        refunds.push((r.text(0)?, to_u64(r.i64(1)?, "refunds")?));
    }
    let window = |n: usize, f: fn(&DayFigures) -> u64| -> u64 {
        daily[daily.len().saturating_sub(n)..].iter().map(f).fold(0, u64::saturating_add)
    };
    let revenue_windows = [1, 7, 30].map(|n| window(n, |d| d.revenue_sat));
    let capacity_windows = [1, 7, 30].map(|n| window(n, |d| d.capacity_sat));
    let keep = usize::try_from(days).unwrap_or(usize::MAX);
    let days = daily.split_off(daily.len().saturating_sub(keep));
    Ok(StoreFigures {
        by_phase,
        held: held_in(db)?,
        days,
        revenue_windows,
        capacity_windows,
        revenue_all_sat: to_u64(all.i64(0)?, "revenue")?,
        capacity_all_sat: to_u64(all.i64(1)?, "capacity")?,
        leases: leases_in(db, height)?,
        refunds,
    })
}

/// [`Store::held_orders`] on any backend.
pub(crate) fn held_orders_in(db: &dyn Db, node: &str) -> Result<Vec<HeldOrder>, StoreError> {
    db.query(
        "SELECT o.order_id, o.client_node_id, o.phase, o.paid_method, o.held_at_ms, o.order_total_sat, \
         COUNT(h.htlc_id), CAST(COALESCE(SUM(h.amount_msat), 0) AS BIGINT), MIN(h.cltv_expiry) \
         FROM orders o LEFT JOIN htlcs h ON h.order_id = o.order_id AND h.resolution IS NULL \
         WHERE o.phase IN ('payment_held', 'opening') AND o.node_id = ?1 GROUP BY o.order_id \
         ORDER BY MIN(h.cltv_expiry) IS NULL, MIN(h.cltv_expiry), o.held_at_ms",
        &[node.into()],
    )?
    .into_iter()
    .map(|r| {
        Ok(HeldOrder {
            order_id: r.text(0)?,
            client_node_id: r.text(1)?,
            phase: r.text(2)?,
            paid_method: r.opt_text(3)?,
            held_at_ms: r.opt_i64(4)?,
            order_total_sat: to_u64(r.i64(5)?, "order_total_sat")?,
            htlcs: to_u64(r.i64(6)?, "htlcs")?,
            htlc_msat: to_u64(r.i64(7)?, "held msat")?,
            earliest_cltv_expiry: r.opt_i64(8)?.map(|e| u32_of(e, "cltv_expiry")).transpose()?,
        })
    })
    .collect()
}

/// [`Store::leases_until`] on any backend.
pub(crate) fn leases_until_in(
    db: &dyn Db,
    until_block: u32,
    ended_since: u32,
    node: &str,
) -> Result<Vec<LeaseRow>, StoreError> {
    let mut out = leases_from(
        db,
        &format!(
            "SELECT {LEASE_COLUMNS} WHERE c.lease_end_block IS NOT NULL AND c.lease_state IS NULL \
             AND c.lease_end_block <= ?1 AND o.node_id = ?2"
        ),
        &[until_block.into(), node.into()],
    )?;
    out.extend(leases_from(
        db,
        &format!(
            "SELECT {LEASE_COLUMNS} WHERE c.lease_end_block IS NOT NULL AND c.lease_state IN ('ended', 'closing') \
             AND (c.lease_end_block >= ?1 OR c.lease_state = 'closing') AND o.node_id = ?2"
        ),
        &[ended_since.into(), node.into()],
    )?);
    out.sort_by(|a, b| (a.lease_end_block, &a.order_id).cmp(&(b.lease_end_block, &b.order_id)));
    Ok(out)
}

/// [`Store::lease_of`] on any backend.
pub(crate) fn lease_of_in(db: &dyn Db, order_id: &str) -> Result<Option<LeaseRow>, StoreError> {
    Ok(leases_from(
        db,
        &format!("SELECT {LEASE_COLUMNS} WHERE c.order_id = ?1 AND c.lease_end_block IS NOT NULL"),
        &[order_id.into()],
    )?
    .pop())
}

/// [`Store::end_leases`] inside a transaction the caller commits.
pub(crate) fn end_leases_in(db: &dyn Db, height: u32, now_ms: i64, node: &str) -> Result<Vec<LeaseRow>, StoreError> {
    let ended = leases_from(
        db,
        &format!(
            "SELECT {LEASE_COLUMNS} WHERE c.lease_end_block IS NOT NULL AND c.lease_end_block <= ?1 \
             AND c.lease_state IS NULL AND o.node_id = ?2 ORDER BY c.lease_end_block, c.order_id"
        ),
        &[height.into(), node.into()],
    )?;
    for lease in &ended {
        db.execute(
            "UPDATE channels SET lease_state = 'ended', active_height = MAX(COALESCE(active_height, 0), lease_end_block) \
             WHERE order_id = ?1 AND lease_state IS NULL",
            &[lease.order_id.as_str().into()],
        )?;
        event_db(
            db,
            &lease.order_id,
            now_ms,
            "lease_ended",
            None,
            None,
            Some(&json!({"lease_end_block": lease.lease_end_block, "height": height})),
        )?;
    }
    Ok(ended.into_iter().map(|l| LeaseRow { state: LeaseState::Ended, ..l }).collect())
}

/// [`Store::lease_channel_closed`] inside a transaction the caller commits.
pub(crate) fn lease_channel_closed_in(
    db: &dyn Db,
    channel_id: &str,
    now_ms: i64,
    detail: &serde_json::Value,
) -> Result<Option<String>, StoreError> {
    let order = db
        .query_opt(
            "SELECT order_id FROM channels WHERE channel_id = ?1 AND lease_end_block IS NOT NULL \
             AND (lease_state IS NULL OR lease_state <> 'closed')",
            &[channel_id.to_ascii_lowercase().into()],
        )?
        .map(|r| r.text(0))
        .transpose()?;
    if let Some(id) = &order {
        db.execute("UPDATE channels SET lease_state = 'closed' WHERE order_id = ?1", &[id.as_str().into()])?;
        event_db(db, id, now_ms, "lease_closed", None, None, Some(detail))?;
    }
    Ok(order)
}

/// [`Store::lease_close_refused`] inside a transaction the caller commits.
pub(crate) fn lease_close_refused_in(
    db: &dyn Db,
    order_id: &str,
    height: u32,
    now_ms: i64,
    detail: &serde_json::Value,
) -> Result<bool, StoreError> {
    let n = db.execute(
        "UPDATE channels SET lease_state = 'ended', active_height = MAX(COALESCE(active_height, 0), ?2) \
         WHERE order_id = ?1 AND lease_state = 'closing'",
        &[order_id.into(), height.into()],
    )?;
    if n == 1 {
        event_db(db, order_id, now_ms, "lease_close_refused", None, None, Some(detail))?;
    }
    Ok(n == 1)
}

/// [`Store::note_activity`] on any backend.
pub(crate) fn note_activity_in(db: &dyn Db, order_id: &str, count: u64, height: u32) -> Result<(), StoreError> {
    let count = i64::try_from(count).map_err(|_| StoreError::Range("activity_count"))?;
    db.execute(
        "UPDATE channels SET active_height = CASE WHEN activity_count IS NULL OR activity_count <> ?2 \
         THEN MAX(?3, COALESCE(active_height, 0)) ELSE active_height END, activity_count = ?2 WHERE order_id = ?1",
        &[order_id.into(), count.into(), height.into()],
    )?;
    Ok(())
}

/// [`Store::set_lease_state`] inside a transaction the caller commits.
pub(crate) fn set_lease_state_in(
    db: &dyn Db,
    order_id: &str,
    from: LeaseState,
    to: LeaseState,
    now_ms: i64,
    detail: &serde_json::Value,
) -> Result<bool, StoreError> {
    let n = db.execute(
        "UPDATE channels SET lease_state = ?2 WHERE order_id = ?1 AND lease_state IS ?3",
        &[order_id.into(), to.column().into(), from.column().into()],
    )?;
    if n == 1 {
        event_db(db, order_id, now_ms, &format!("lease_{}", to.as_str()), None, None, Some(detail))?;
    }
    Ok(n == 1)
}

impl Store {
    /// The operator's figures at `now_ms` and `height`, with the last `days` days (at least
    /// 30, for the 30-day window) of daily totals. The running totals cover the whole order
    /// book (every node sharing it); what is held now is this node's.
    pub fn status_figures(&self, now_ms: i64, height: u32, days: u32) -> Result<StoreFigures, StoreError> {
        // One snapshot: every figure of an answer from the same moment.
        self.snapshot(|db| status_figures_in(db, now_ms, height, days))
    }

    /// This node's orders whose payment is held now (`payment_held`, `opening`), with their
    /// HTLCs still held, earliest expiry first.
    pub fn held_orders(&self) -> Result<Vec<HeldOrder>, StoreError> {
        self.read(|db| held_orders_in(db, &self.node))
    }

    /// This node's leases not closed, earliest end first: those still running that end by
    /// `until_block`, those ended at or after `ended_since` (0: all) and every one closing.
    /// Each part reads its own partial index.
    pub fn leases_until(&self, until_block: u32, ended_since: u32) -> Result<Vec<LeaseRow>, StoreError> {
        self.read(|db| leases_until_in(db, until_block, ended_since, &self.node))
    }

    /// The lease of one order, if it has one.
    pub fn lease_of(&self, order_id: &str) -> Result<Option<LeaseRow>, StoreError> {
        self.read(|db| lease_of_in(db, order_id))
    }

    /// Mark every running lease of this node whose end block is at or below `height` as
    /// ended, with an event each, in one transaction. Returns the leases that ended now.
    pub fn end_leases(&self, height: u32, now_ms: i64) -> Result<Vec<LeaseRow>, StoreError> {
        self.write(|db| end_leases_in(db, height, now_ms, &self.node))
    }

    /// The channel `channel_id` is gone (closed by anyone): its lease, if not closed yet, is.
    /// Returns the order whose lease this was.
    pub fn lease_channel_closed(
        &self,
        channel_id: &str,
        now_ms: i64,
        detail: &serde_json::Value,
    ) -> Result<Option<String>, StoreError> {
        self.write(|db| lease_channel_closed_in(db, channel_id, now_ms, detail))
    }

    /// lightningd refused the policy's close: the lease is ended again and its idle count
    /// starts over at `height`, so the close is asked again only after another idle spell.
    pub fn lease_close_refused(
        &self,
        order_id: &str,
        height: u32,
        now_ms: i64,
        detail: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.write(|db| lease_close_refused_in(db, order_id, height, now_ms, detail))
    }

    /// Record a channel's fulfilled-payment count as seen at `height`; the active height
    /// moves only when the count moved.
    pub fn note_activity(&self, order_id: &str, count: u64, height: u32) -> Result<(), StoreError> {
        self.write(|db| note_activity_in(db, order_id, count, height))
    }

    /// Move a lease from `from` to `to` (compare-and-set), with an event. `false` when it
    /// was not in `from`.
    pub fn set_lease_state(
        &self,
        order_id: &str,
        from: LeaseState,
        to: LeaseState,
        now_ms: i64,
        detail: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.write(|db| set_lease_state_in(db, order_id, from, to, now_ms, detail))
    }
}
