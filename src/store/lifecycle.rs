//! The store's side of the order lifecycle: held HTLCs, the open, settlement
//! and refunds. Every move that belongs together is one transaction: an HTLC set that
//! completes and the order's move to `PaymentHeld` (P-05); the channel, `COMPLETED`, `PAID`
//! and the HTLCs marked settled (ruling 11); `FAILED`, `REFUNDED` and the HTLCs marked
//! failed (P-07).

use serde_json::Value;

use super::db::{Db, Row, Val};
use super::{ChannelRecord, ORDER_COLUMNS, ORDER_FROM, OrderRecord, RawRow, Store, StoreError, to_i64, to_u64};
use super::{event_db, order_db, transition_db};
use crate::order::{Event, FailReason, PaymentMethod, Phase};

/// What became of a held HTLC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Settled,
    Failed,
}

impl Resolution {
    fn as_str(self) -> &'static str {
        match self {
            Resolution::Settled => "settled",
            Resolution::Failed => "failed",
        }
    }
}

/// An HTLC is named by its incoming channel and its id there (lightningd's key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HtlcKey {
    pub short_channel_id: String,
    pub id: u64,
}

/// An HTLC of an order's payment, as stored before the hook answers (ruling 17: the
/// store knows it before lightningd hears anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtlcRecord {
    pub key: HtlcKey,
    pub payment_hash: String,
    pub amount_msat: u64,
    pub cltv_expiry: u32,
    pub received_at_ms: i64,
    /// `None` while held.
    pub resolution: Option<Resolution>,
}

/// What the caller's decision asks the store to write for an arriving HTLC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HtlcWrite {
    Nothing,
    /// Record the HTLC as held; `complete` moves the order to `PaymentHeld` in the same
    /// transaction.
    Hold {
        complete: bool,
    },
}

/// A leased channel (N-10, ruling 16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub order_id: String,
    pub client_node_id: String,
    pub channel: ChannelRecord,
}

/// An `htlcs` row as SQLite gives it: scid, id, hash, amount, cltv, received at, resolution.
type HtlcRow = (String, i64, String, i64, i64, i64, Option<String>);

fn htlc_from(row: HtlcRow) -> Result<HtlcRecord, StoreError> {
    let (scid, id, hash, amount, cltv, at, res) = row;
    Ok(HtlcRecord {
        key: HtlcKey { short_channel_id: scid, id: to_u64(id, "htlc id")? },
        payment_hash: hash,
        amount_msat: to_u64(amount, "amount_msat")?,
        cltv_expiry: u32::try_from(cltv).map_err(|_| StoreError::Range("cltv_expiry"))?,
        received_at_ms: at,
        resolution: match res.as_deref() {
            None => None,
            Some("settled") => Some(Resolution::Settled),
            Some("failed") => Some(Resolution::Failed),
            Some(other) => return Err(StoreError::Corrupt(format!("htlc resolution {other}"))),
        },
    })
}

const HTLC_COLUMNS: &str =
    "short_channel_id, htlc_id, payment_hash, amount_msat, cltv_expiry, received_at_ms, resolution";

fn htlc_of(r: &Row) -> Result<HtlcRecord, StoreError> {
    htlc_from((r.text(0)?, r.i64(1)?, r.text(2)?, r.i64(3)?, r.i64(4)?, r.i64(5)?, r.opt_text(6)?))
}

/// An order's HTLCs, oldest first, on any backend.
pub(crate) fn htlcs_db(db: &dyn Db, order_id: &str) -> Result<Vec<HtlcRecord>, StoreError> {
    db.query(
        &format!(
            "SELECT {HTLC_COLUMNS} FROM htlcs WHERE order_id = ?1 ORDER BY received_at_ms, short_channel_id, htlc_id"
        ),
        &[order_id.into()],
    )?
    .iter()
    .map(htlc_of)
    .collect()
}

/// Mark every unresolved HTLC of an order; returns their keys.
pub(crate) fn resolve_all_db(db: &dyn Db, order_id: &str, resolution: Resolution) -> Result<Vec<HtlcKey>, StoreError> {
    let keys: Vec<HtlcKey> =
        htlcs_db(db, order_id)?.into_iter().filter(|h| h.resolution.is_none()).map(|h| h.key).collect();
    db.execute(
        "UPDATE htlcs SET resolution = ?1 WHERE order_id = ?2 AND resolution IS NULL",
        &[resolution.as_str().into(), order_id.into()],
    )?;
    Ok(keys)
}

/// The order of a payment hash, on any backend.
pub(crate) fn order_id_by_hash_db(db: &dyn Db, payment_hash: &str, node: &str) -> Result<Option<String>, StoreError> {
    db.query_opt(
        "SELECT p.order_id FROM payments p JOIN orders o ON o.order_id = p.order_id \
         WHERE p.payment_hash = ?1 AND o.node_id = ?2",
        &[payment_hash.into(), node.into()],
    )?
    .map(|r| r.text(0))
    .transpose()
}

/// [`Store::apply_htlc`]'s transaction on any backend, once the hash is known to be order
/// `id`'s. The caller commits.
pub(crate) fn apply_htlc_db<D>(
    db: &dyn Db,
    id: &str,
    htlc: &HtlcRecord,
    now_ms: i64,
    decide: impl FnOnce(&OrderRecord, &[HtlcRecord]) -> (D, HtlcWrite),
) -> Result<Option<(D, OrderRecord)>, StoreError> {
    // Parts of one payment arriving together are decided one at a time, so the last one
    // always sees the set complete.
    db.lock_key(&format!("order:{id}"))?;
    let Some(order) = order_db(db, id)? else { return Ok(None) };
    let set = htlcs_db(db, id)?;
    let (decision, write) = decide(&order, &set);
    let mut order = order;
    if let HtlcWrite::Hold { complete } = write {
        // The key is new to this order (a replay is decided `Wait` and writes nothing), so
        // an existing row means another order's HTLC: refuse rather than miscount.
        let inserted = db.execute(
            "INSERT OR IGNORE INTO htlcs (payment_hash, short_channel_id, htlc_id, amount_msat, cltv_expiry, \
             received_at_ms, resolution, order_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7)",
            &[
                htlc.payment_hash.as_str().into(),
                htlc.key.short_channel_id.as_str().into(),
                to_i64(htlc.key.id, "htlc id")?.into(),
                to_i64(htlc.amount_msat, "amount_msat")?.into(),
                htlc.cltv_expiry.into(),
                htlc.received_at_ms.into(),
                id.into(),
            ],
        )?;
        if inserted != 1 {
            return Err(StoreError::Conflict(format!(
                "HTLC {}/{} is known already",
                htlc.key.short_channel_id, htlc.key.id
            )));
        }
        if complete {
            let total = db
                .query_opt(
                    "SELECT CAST(COALESCE(SUM(amount_msat), 0) AS BIGINT) FROM htlcs WHERE order_id = ?1 AND resolution IS NULL",
                    &[id.into()],
                )?
                .map(|r| r.i64(0))
                .transpose()?
                .unwrap_or(0);
            let detail = serde_json::json!({ "htlcs_held_msat": total });
            transition_db(
                db,
                id,
                Phase::AwaitingPayment,
                Event::PaymentHeld(PaymentMethod::Bolt11),
                now_ms,
                Some(&detail),
            )?;
            order = order_db(db, id)?.ok_or_else(|| StoreError::Corrupt(format!("order {id} vanished")))?;
        }
    }
    Ok(Some((decision, order)))
}

/// Orders in any of `phases`, oldest first, on any backend.
pub(crate) fn orders_in_phases_db(db: &dyn Db, phases: &[Phase], node: &str) -> Result<Vec<OrderRecord>, StoreError> {
    let marks: Vec<String> = (2..=phases.len() + 1).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "SELECT {ORDER_COLUMNS} {ORDER_FROM} WHERE o.node_id = ?1 AND o.phase IN ({}) ORDER BY o.created_at_ms",
        if marks.is_empty() { "NULL".to_string() } else { marks.join(", ") }
    );
    let mut args: Vec<Val> = vec![node.into()];
    args.extend(phases.iter().map(|p| p.as_str().into()));
    db.query(&sql, &args)?.iter().map(|r| RawRow::from_row(r)?.into_record()).collect()
}

/// [`Store::active_leases`] on any backend.
pub(crate) fn active_leases_db(db: &dyn Db, height: u32, node: &str) -> Result<Vec<Lease>, StoreError> {
    db.query(
        "SELECT o.order_id, o.client_node_id, c.channel_id, c.funding_txid, c.funding_outnum, c.funded_at_ms, \
         c.expires_at_ms, c.lease_end_block FROM channels c JOIN orders o ON o.order_id = c.order_id \
         WHERE c.lease_end_block IS NOT NULL AND c.lease_end_block > ?1 AND o.node_id = ?2",
        &[height.into(), node.into()],
    )?
    .iter()
    .map(|r| {
        Ok(Lease {
            order_id: r.text(0)?,
            client_node_id: r.text(1)?,
            channel: ChannelRecord {
                channel_id: r.opt_text(2)?,
                funding_txid: r.text(3)?,
                funding_outnum: u32::try_from(r.i64(4)?).map_err(|_| StoreError::Range("funding_outnum"))?,
                funded_at_ms: r.i64(5)?,
                expires_at_ms: r.i64(6)?,
                lease_end_block: Some(u32::try_from(r.i64(7)?).map_err(|_| StoreError::Range("lease_end_block"))?),
            },
        })
    })
    .collect()
}

/// [`Store::complete_order`]'s transaction on any backend. The caller commits.
pub(crate) fn complete_order_db(
    db: &dyn Db,
    order_id: &str,
    channel: &ChannelRecord,
    now_ms: i64,
    refunded_after_open: bool,
    detail: &Value,
) -> Result<Vec<HtlcKey>, StoreError> {
    transition_db(db, order_id, Phase::Opening, Event::FundingBroadcast, now_ms, Some(detail))?;
    db.execute(
        "INSERT INTO channels (order_id, channel_id, funding_txid, funding_outnum, funded_at_ms, expires_at_ms, \
         lease_end_block) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        &[
            order_id.into(),
            channel.channel_id.clone().into(),
            channel.funding_txid.as_str().into(),
            channel.funding_outnum.into(),
            channel.funded_at_ms.into(),
            channel.expires_at_ms.into(),
            channel.lease_end_block.into(),
        ],
    )?;
    if refunded_after_open {
        db.execute("UPDATE orders SET refunded_after_open = 1 WHERE order_id = ?1", &[order_id.into()])?;
        resolve_all_db(db, order_id, Resolution::Failed)
    } else {
        resolve_all_db(db, order_id, Resolution::Settled)
    }
}

/// [`Store::fail_order`]'s transaction on any backend. The caller commits.
pub(crate) fn fail_order_db(
    db: &dyn Db,
    order_id: &str,
    from: Phase,
    reason: FailReason,
    now_ms: i64,
    detail: &Value,
) -> Result<Vec<HtlcKey>, StoreError> {
    transition_db(db, order_id, from, Event::Fail(reason), now_ms, Some(detail))?;
    resolve_all_db(db, order_id, Resolution::Failed)
}

impl Store {
    /// An order with its HTLCs.
    pub fn order_with_htlcs(&self, order_id: &str) -> Result<Option<(OrderRecord, Vec<HtlcRecord>)>, StoreError> {
        self.read_fresh(|db| {
            let Some(order) = order_db(db, order_id)? else { return Ok(None) };
            Ok(Some((order, htlcs_db(db, order_id)?)))
        })
    }

    /// Handle an arriving HTLC in one transaction: read the order of `htlc.payment_hash`
    /// and its HTLCs, let `decide` (a pure function) say what to do, and write it. `None`
    /// when the hash is not one of this node's orders. Serialised with every other write
    /// to the order, so two parts arriving together cannot both miss completing the set.
    pub fn apply_htlc<D>(
        &self,
        htlc: &HtlcRecord,
        now_ms: i64,
        decide: impl Fn(&OrderRecord, &[HtlcRecord]) -> (D, HtlcWrite),
    ) -> Result<Option<(D, OrderRecord)>, StoreError> {
        // Most final-hop HTLCs are the node's own invoices: find that out with a plain read,
        // without taking the write lock.
        let Some(id) = self.order_id_by_payment_hash(&htlc.payment_hash)? else { return Ok(None) };
        self.write(|db| apply_htlc_db(db, &id, htlc, now_ms, &decide))
    }

    /// Fail the held parts of a payment that has not completed, received at or before
    /// `cutoff_ms` (BOLT 4 `mpp_timeout`). Only while the order still waits for payment.
    pub fn fail_incomplete_parts(&self, order_id: &str, cutoff_ms: i64) -> Result<Vec<HtlcKey>, StoreError> {
        self.write(|db| {
            db.lock_key(&format!("order:{order_id}"))?;
            let Some(order) = order_db(db, order_id)? else { return Ok(vec![]) };
            if order.phase != Phase::AwaitingPayment {
                return Ok(vec![]);
            }
            let set = htlcs_db(db, order_id)?;
            if !set.iter().any(|h| h.resolution.is_none() && h.received_at_ms <= cutoff_ms) {
                return Ok(vec![]);
            }
            // The whole incomplete set goes back: a payer retries with a fresh set.
            let keys = resolve_all_db(db, order_id, Resolution::Failed)?;
            let detail = serde_json::json!({ "htlcs": keys.len(), "why": "mpp_timeout" });
            event_db(db, order_id, cutoff_ms, "parts_timed_out", Some(order.phase), Some(order.phase), Some(&detail))?;
            Ok(keys)
        })
    }

    /// `PaymentHeld` → `Opening`: the intent to open, durable before `fundchannel` is
    /// called. `Conflict` when the order moved meanwhile (cancelled).
    pub fn start_open(&self, order_id: &str, now_ms: i64, detail: &Value) -> Result<(), StoreError> {
        self.transition(order_id, Phase::PaymentHeld, Event::OpenStarted, now_ms, Some(detail)).map(|_| ())
    }

    /// `Opening` → `Completed` with its channel, and its HTLCs marked settled, in one
    /// transaction (ruling 11, N-09). With `refunded_after_open` (the HTLCs already went
    /// back, ruling 17) nothing is marked settled and the payment reads REFUNDED.
    /// Returns the keys to settle.
    pub fn complete_order(
        &self,
        order_id: &str,
        channel: &ChannelRecord,
        now_ms: i64,
        refunded_after_open: bool,
        detail: &Value,
    ) -> Result<Vec<HtlcKey>, StoreError> {
        self.write(|db| complete_order_db(db, order_id, channel, now_ms, refunded_after_open, detail))
    }

    /// End an order without a channel: `from` → `Failed` for `reason`, its held HTLCs
    /// marked failed, in one transaction (P-07, N-11). Returns the keys to fail back.
    pub fn fail_order(
        &self,
        order_id: &str,
        from: Phase,
        reason: FailReason,
        now_ms: i64,
        detail: &Value,
    ) -> Result<Vec<HtlcKey>, StoreError> {
        self.write(|db| fail_order_db(db, order_id, from, reason, now_ms, detail))
    }

    /// This node's orders in any of `phases`, oldest first (reconciliation at start, the
    /// driver).
    pub fn orders_in_phases(&self, phases: &[Phase]) -> Result<Vec<OrderRecord>, StoreError> {
        self.read_fresh(|db| orders_in_phases_db(db, phases, &self.node))
    }

    /// Whether some order already owns the channel `channel_id` (no channel counts twice).
    pub fn channel_recorded(&self, channel_id: &str) -> Result<bool, StoreError> {
        let n = self.read_fresh(|db| {
            db.query_opt("SELECT COUNT(*) FROM channels WHERE channel_id = ?1", &[channel_id.into()])?
                .map(|r| r.i64(0))
                .transpose()
        })?;
        Ok(n.unwrap_or(0) > 0)
    }

    /// This node's channels whose lease has not ended at `height` (N-10).
    pub fn active_leases(&self, height: u32) -> Result<Vec<Lease>, StoreError> {
        self.read_fresh(|db| active_leases_db(db, height, &self.node))
    }

    /// The order an HTLC belongs to.
    pub fn order_of_htlc(&self, key: &HtlcKey) -> Result<Option<String>, StoreError> {
        let id = to_i64(key.id, "htlc id")?;
        self.read_fresh(|db| {
            db.query_opt(
                "SELECT order_id FROM htlcs WHERE short_channel_id = ?1 AND htlc_id = ?2",
                &[key.short_channel_id.as_str().into(), id.into()],
            )?
            .map(|r| r.opt_text(0))
            .transpose()
            .map(Option::flatten)
        })
    }

    /// Fail every unpaid order of this node whose payment deadline has passed (ruling 13),
    /// with any parts of an incomplete payment marked failed. Returns the orders (as they
    /// were) and the HTLCs to fail back.
    pub fn expire_unpaid(&self, now_ms: i64) -> Result<Vec<(OrderRecord, Vec<HtlcKey>)>, StoreError> {
        let due: Vec<OrderRecord> = self.read_fresh(|db| {
            let sql = format!(
                "SELECT {ORDER_COLUMNS} {ORDER_FROM} WHERE o.node_id = ?1 AND o.phase = 'awaiting_payment' \
                 AND o.expires_at_ms <= ?2"
            );
            db.query(&sql, &[(*self.node).into(), now_ms.into()])?
                .iter()
                .map(|r| RawRow::from_row(r)?.into_record())
                .collect()
        })?;
        let mut moved = vec![];
        for o in due {
            let detail = serde_json::json!({ "message": FailReason::PaymentExpired.describe() });
            match self.fail_order(&o.order_id, Phase::AwaitingPayment, FailReason::PaymentExpired, now_ms, &detail) {
                Ok(keys) => moved.push((o, keys)),
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }

    /// Mark some held HTLCs failed (they were failed back while the plugin was down).
    pub fn mark_failed(&self, keys: &[HtlcKey]) -> Result<(), StoreError> {
        self.write(|db| {
            for k in keys {
                db.execute(
                    "UPDATE htlcs SET resolution = 'failed' WHERE short_channel_id = ?1 AND htlc_id = ?2 \
                     AND resolution IS NULL",
                    &[k.short_channel_id.as_str().into(), to_i64(k.id, "htlc id")?.into()],
                )?;
            }
            Ok(())
        })
    }

    /// This node's unpaid orders holding parts of a payment (MPP sets not yet complete).
    pub fn unpaid_with_parts(&self) -> Result<Vec<String>, StoreError> {
        self.read_fresh(|db| {
            db.query(
                "SELECT DISTINCT o.order_id FROM orders o JOIN htlcs h ON h.order_id = o.order_id \
                 WHERE o.node_id = ?1 AND o.phase = 'awaiting_payment' AND h.resolution IS NULL",
                &[(*self.node).into()],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect()
        })
    }

    /// The peer's channels that existed before this order's open (recorded with the intent),
    /// so a reconciliation never mistakes one of them for the order's.
    pub fn channels_before_open(&self, order_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .events(order_id)?
            .into_iter()
            .filter(|e| e.kind == "open_started")
            .filter_map(|e| e.detail)
            .flat_map(|d| {
                d.get("known_channels")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .collect())
    }

    /// Funds held back by this node's paid orders whose open has not started. Orders being
    /// opened are left out: their coins are already reserved in the wallet (`listfunds`).
    pub fn reserved_held_sat(&self) -> Result<u64, StoreError> {
        let sum = self.read_fresh(|db| {
            db.query_opt(
                "SELECT CAST(COALESCE(SUM(reserved_sat), 0) AS BIGINT) FROM orders \
                 WHERE phase = 'payment_held' AND node_id = ?1",
                &[(*self.node).into()],
            )?
            .map(|r| r.i64(0))
            .transpose()
        })?;
        to_u64(sum.unwrap_or(0), "reserved_sat")
    }
}
