//! The operator's figures (`lsps1-status`, `/metrics`, the page): read from the running
//! totals that schema v5's triggers keep in the same transactions as the changes they count,
//! and from small indexed sets (what is held now, leases ending soon). Nothing here walks
//! the whole order book, so the cost stays flat at any store size.
//!
//! Also the lease-end policy's records: a lease's end, its channel's activity, its close.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use super::{Store, StoreError, insert_event, to_u64};

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

fn held_in(conn: &Connection) -> Result<HeldFigures, StoreError> {
    let (htlcs, msat, earliest): (i64, i64, Option<i64>) = conn
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(amount_msat), 0), MIN(cltv_expiry) FROM htlcs WHERE resolution IS NULL",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let (outputs, sat): (i64, i64) = conn
        // The IN lets SQLite use the partial index `chain_outputs_open`.
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(amount_sat), 0) FROM chain_outputs \
             WHERE role IN ('seen', 'payment', 'refunding') AND role = 'payment'",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(HeldFigures {
        htlcs: to_u64(htlcs, "held htlcs")?,
        htlc_msat: to_u64(msat, "held msat")?,
        earliest_cltv_expiry: earliest.map(|e| u32_of(e, "cltv_expiry")).transpose()?,
        onchain_outputs: to_u64(outputs, "held outputs")?,
        onchain_sat: to_u64(sat, "held on-chain sat")?,
    })
}

fn leases_in(conn: &Connection, height: u32) -> Result<LeaseFigures, StoreError> {
    let h = i64::from(height);
    let (active, sat, d, w, m): (i64, i64, i64, i64, i64) = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(channels), 0), COALESCE(SUM(leased_sat), 0), \
             COALESCE(SUM(CASE WHEN block <= ?2 THEN channels END), 0), \
             COALESCE(SUM(CASE WHEN block <= ?3 THEN channels END), 0), \
             COALESCE(SUM(CASE WHEN block <= ?4 THEN channels END), 0) \
             FROM stats_lease_ends WHERE block > ?1",
        )?
        .query_row(params![h, h + i64::from(BLOCKS_1D), h + i64::from(BLOCKS_1W), h + i64::from(BLOCKS_1M)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
    Ok(LeaseFigures {
        active: to_u64(active, "leases")?,
        leased_sat: to_u64(sat, "leased sat")?,
        ending_within_1_day: to_u64(d, "leases")?,
        ending_within_1_week: to_u64(w, "leases")?,
        ending_within_1_month: to_u64(m, "leases")?,
    })
}

/// A lease row as read: order, client, channel, balance, end, state, activity, active height.
type RawLease = (String, String, Option<String>, i64, i64, Option<String>, Option<i64>, Option<i64>, String, i64);

fn lease_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawLease> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?))
}

const LEASE_COLUMNS: &str = "c.order_id, o.client_node_id, c.channel_id, o.lsp_balance_sat, c.lease_end_block, \
     c.lease_state, c.activity_count, c.active_height, c.funding_txid, c.funding_outnum \
     FROM channels c JOIN orders o ON o.order_id = c.order_id";

fn leases_from(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<Vec<LeaseRow>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, lease_row)?;
    let mut out = vec![];
    for row in rows {
        let (order_id, client_node_id, channel_id, lsp, end, state, count, active, txid, outnum) = row?;
        out.push(LeaseRow {
            order_id,
            client_node_id,
            channel_id,
            funding_txid: txid,
            funding_outnum: u32_of(outnum, "funding_outnum")?,
            lsp_balance_sat: to_u64(lsp, "lsp_balance_sat")?,
            lease_end_block: u32_of(end, "lease_end_block")?,
            state: LeaseState::parse(state.as_deref())?,
            activity_count: count.map(|c| to_u64(c, "activity_count")).transpose()?,
            active_height: active.map(|a| u32_of(a, "active_height")).transpose()?,
        });
    }
    Ok(out)
}

impl Store {
    /// The operator's figures at `now_ms` and `height`, with the last `days` days (at least
    /// 30, for the 30-day window) of daily totals.
    pub fn status_figures(&self, now_ms: i64, height: u32, days: u32) -> Result<StoreFigures, StoreError> {
        let conn = self.read_lock();
        // One snapshot: every figure of an answer from the same moment.
        let snapshot = conn.unchecked_transaction()?;
        let conn = &*snapshot;
        let mut by_phase: Vec<(String, u64)> = PHASES.iter().map(|p| (p.to_string(), 0)).collect();
        {
            let mut stmt = conn.prepare_cached("SELECT phase, orders FROM stats_phase")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (phase, n) = row?;
                if let Some(slot) = by_phase.iter_mut().find(|(p, _)| *p == phase) {
                    slot.1 = to_u64(n, "orders by phase")?;
                }
            }
        }
        let today = now_ms.div_euclid(DAY_MS);
        let span = i64::from(days.max(30));
        let first = today - span + 1;
        let mut daily: Vec<DayFigures> =
            (first..=today).map(|day| DayFigures { day, ..DayFigures::default() }).collect();
        {
            let mut stmt = conn.prepare_cached(
                "SELECT day, created, completed, failed, revenue_sat, capacity_sat FROM stats_daily \
                 WHERE day >= ?1 AND day <= ?2",
            )?;
            let rows = stmt.query_map(params![first, today], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?;
            for row in rows {
                let (day, created, completed, failed, revenue, capacity) = row?;
                if let Some(slot) = usize::try_from(day - first).ok().and_then(|i| daily.get_mut(i)) {
                    *slot = DayFigures {
                        day,
                        created: to_u64(created, "created")?,
                        completed: to_u64(completed, "completed")?,
                        failed: to_u64(failed, "failed")?,
                        revenue_sat: to_u64(revenue, "revenue_sat")?,
                        capacity_sat: to_u64(capacity, "capacity_sat")?,
                    };
                }
            }
        }
        let (revenue_all, capacity_all): (i64, i64) = conn
            .prepare_cached("SELECT COALESCE(SUM(revenue_sat), 0), COALESCE(SUM(capacity_sat), 0) FROM stats_daily")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let mut refunds = vec![];
        {
            let mut stmt = conn.prepare_cached("SELECT cause, refunds FROM stats_refunds ORDER BY cause")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (cause, n) = row?;
                refunds.push((cause, to_u64(n, "refunds")?));
            }
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
            held: held_in(conn)?,
            days,
            revenue_windows,
            capacity_windows,
            revenue_all_sat: to_u64(revenue_all, "revenue")?,
            capacity_all_sat: to_u64(capacity_all, "capacity")?,
            leases: leases_in(conn, height)?,
            refunds,
        })
    }

    /// Orders whose payment is held now (`payment_held`, `opening`), with their HTLCs still
    /// held, earliest expiry first.
    pub fn held_orders(&self) -> Result<Vec<HeldOrder>, StoreError> {
        let conn = self.read_lock();
        let mut stmt = conn.prepare_cached(
            "SELECT o.order_id, o.client_node_id, o.phase, o.paid_method, o.held_at_ms, o.order_total_sat, \
             COUNT(h.htlc_id), COALESCE(SUM(h.amount_msat), 0), MIN(h.cltv_expiry) \
             FROM orders o LEFT JOIN htlcs h ON h.order_id = o.order_id AND h.resolution IS NULL \
             WHERE o.phase IN ('payment_held', 'opening') GROUP BY o.order_id \
             ORDER BY MIN(h.cltv_expiry) IS NULL, MIN(h.cltv_expiry), o.held_at_ms",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, Option<i64>>(8)?,
            ))
        })?;
        let mut out = vec![];
        for row in rows {
            let (order_id, client_node_id, phase, paid_method, held_at_ms, total, htlcs, msat, earliest) = row?;
            out.push(HeldOrder {
                order_id,
                client_node_id,
                phase,
                paid_method,
                held_at_ms,
                order_total_sat: to_u64(total, "order_total_sat")?,
                htlcs: to_u64(htlcs, "htlcs")?,
                htlc_msat: to_u64(msat, "held msat")?,
                earliest_cltv_expiry: earliest.map(|e| u32_of(e, "cltv_expiry")).transpose()?,
            });
        }
        Ok(out)
    }

    /// Leases not closed, earliest end first: those still running that end by `until_block`,
    /// those ended at or after `ended_since` (0: all) and every one closing. Each part reads
    /// its own partial index.
    pub fn leases_until(&self, until_block: u32, ended_since: u32) -> Result<Vec<LeaseRow>, StoreError> {
        let conn = self.read_lock();
        let mut out = leases_from(
            &conn,
            &format!(
                "SELECT {LEASE_COLUMNS} WHERE c.lease_end_block IS NOT NULL AND c.lease_state IS NULL \
                 AND c.lease_end_block <= ?1"
            ),
            params![until_block],
        )?;
        out.extend(leases_from(
            &conn,
            &format!(
                "SELECT {LEASE_COLUMNS} WHERE c.lease_end_block IS NOT NULL AND c.lease_state IN ('ended', 'closing') \
                 AND (c.lease_end_block >= ?1 OR c.lease_state = 'closing')"
            ),
            params![ended_since],
        )?);
        out.sort_by(|a, b| (a.lease_end_block, &a.order_id).cmp(&(b.lease_end_block, &b.order_id)));
        Ok(out)
    }

    /// The lease of one order, if it has one.
    pub fn lease_of(&self, order_id: &str) -> Result<Option<LeaseRow>, StoreError> {
        let conn = self.read_lock();
        Ok(leases_from(
            &conn,
            &format!("SELECT {LEASE_COLUMNS} WHERE c.order_id = ?1 AND c.lease_end_block IS NOT NULL"),
            params![order_id],
        )?
        .pop())
    }

    /// Mark every running lease whose end block is at or below `height` as ended, with an
    /// event each, in one transaction. Returns the leases that ended now.
    pub fn end_leases(&self, height: u32, now_ms: i64) -> Result<Vec<LeaseRow>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let ended = leases_from(
            &tx,
            &format!(
                "SELECT {LEASE_COLUMNS} WHERE c.lease_end_block IS NOT NULL AND c.lease_end_block <= ?1 \
                 AND c.lease_state IS NULL ORDER BY c.lease_end_block, c.order_id"
            ),
            params![height],
        )?;
        for lease in &ended {
            tx.execute(
                "UPDATE channels SET lease_state = 'ended', active_height = MAX(COALESCE(active_height, 0), lease_end_block) \
                 WHERE order_id = ?1 AND lease_state IS NULL",
                params![lease.order_id],
            )?;
            insert_event(
                &tx,
                &lease.order_id,
                now_ms,
                "lease_ended",
                None,
                None,
                Some(&json!({"lease_end_block": lease.lease_end_block, "height": height})),
            )?;
        }
        tx.commit()?;
        Ok(ended.into_iter().map(|l| LeaseRow { state: LeaseState::Ended, ..l }).collect())
    }

    /// The channel `channel_id` is gone (closed by anyone): its lease, if not closed yet, is.
    /// Returns the order whose lease this was.
    pub fn lease_channel_closed(
        &self,
        channel_id: &str,
        now_ms: i64,
        detail: &serde_json::Value,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let order: Option<String> = tx
            .query_row(
                "SELECT order_id FROM channels WHERE channel_id = ?1 AND lease_end_block IS NOT NULL \
                 AND (lease_state IS NULL OR lease_state <> 'closed')",
                params![channel_id.to_ascii_lowercase()],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = &order {
            tx.execute("UPDATE channels SET lease_state = 'closed' WHERE order_id = ?1", params![id])?;
            insert_event(&tx, id, now_ms, "lease_closed", None, None, Some(detail))?;
        }
        tx.commit()?;
        Ok(order)
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
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE channels SET lease_state = 'ended', active_height = MAX(COALESCE(active_height, 0), ?2) \
             WHERE order_id = ?1 AND lease_state = 'closing'",
            params![order_id, height],
        )?;
        if n == 1 {
            insert_event(&tx, order_id, now_ms, "lease_close_refused", None, None, Some(detail))?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// Record a channel's fulfilled-payment count as seen at `height`; the active height
    /// moves only when the count moved.
    pub fn note_activity(&self, order_id: &str, count: u64, height: u32) -> Result<(), StoreError> {
        let count = i64::try_from(count).map_err(|_| StoreError::Range("activity_count"))?;
        self.lock().execute(
            "UPDATE channels SET active_height = CASE WHEN activity_count IS NULL OR activity_count <> ?2 \
             THEN MAX(?3, COALESCE(active_height, 0)) ELSE active_height END, activity_count = ?2 WHERE order_id = ?1",
            params![order_id, count, height],
        )?;
        Ok(())
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
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE channels SET lease_state = ?2 WHERE order_id = ?1 AND lease_state IS ?3",
            params![order_id, to.column(), from.column()],
        )?;
        if n == 1 {
            insert_event(&tx, order_id, now_ms, &format!("lease_{}", to.as_str()), None, None, Some(detail))?;
        }
        tx.commit()?;
        Ok(n == 1)
    }
}
