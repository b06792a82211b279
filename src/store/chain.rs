//! The store's side of on-chain payments (rulings 22–26): the outputs seen at orders'
//! addresses and what each is to its order, the refunds (written before they are
//! broadcast, ruling 24), and recent block hashes (ruling 25). Every write that moves an
//! order is one transaction with its event, committed with `synchronous=FULL`.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use super::{Store, StoreError, insert_event, order_in, to_i64, to_u64, transition_in};
use crate::order::chain::{ChainOutput, Outpoint, OutputRole};
use crate::order::{Event, PaymentMethod, Phase};

/// Where a refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundState {
    /// Built, signed and written down; maybe not broadcast yet.
    Signed,
    Broadcast,
    /// Replaced by a higher-fee version spending the same inputs.
    Replaced,
    /// Its inputs are spent on the chain.
    Confirmed,
}

impl RefundState {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundState::Signed => "signed",
            RefundState::Broadcast => "broadcast",
            RefundState::Replaced => "replaced",
            RefundState::Confirmed => "confirmed",
        }
    }

    fn parse(s: &str) -> Option<RefundState> {
        [RefundState::Signed, RefundState::Broadcast, RefundState::Replaced, RefundState::Confirmed]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// What a refund sends back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundKind {
    /// Every input, less the fee.
    Whole,
    /// What was paid beyond the order total; the rest goes back to the wallet as change.
    Surplus,
}

impl RefundKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundKind::Whole => "whole",
            RefundKind::Surplus => "surplus",
        }
    }
}

/// A refund transaction of an order's outputs to its `refund_onchain_address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRecord {
    pub txid: String,
    pub order_id: String,
    /// The signed PSBT, as `sendpsbt` takes it (base64).
    pub psbt: String,
    pub inputs: Vec<Outpoint>,
    pub destination: String,
    pub amount_sat: u64,
    pub fee_sat: u64,
    pub feerate_perkw: u32,
    pub created_height: u32,
    pub created_at_ms: i64,
    pub state: RefundState,
    /// The refund this one replaces (a fee bump).
    pub replaces: Option<String>,
    pub kind: RefundKind,
}

/// An output as the wallet lists it now, at an order's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenOutput {
    pub order_id: String,
    pub outpoint: Outpoint,
    pub amount_sat: u64,
    pub blockheight: Option<u32>,
}

fn parse_outpoints(s: &str) -> Vec<Outpoint> {
    serde_json::from_str::<Vec<String>>(s)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|o| {
            let (t, v) = o.split_once(':')?;
            Some(Outpoint { txid: t.to_string(), vout: v.parse().ok()? })
        })
        .collect()
}

fn outpoints_json(ops: &[Outpoint]) -> String {
    Value::from(ops.iter().map(ToString::to_string).collect::<Vec<_>>()).to_string()
}

fn output_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, i64, i64, Option<i64>, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn to_output(row: (String, String, i64, i64, Option<i64>, String)) -> Result<(String, ChainOutput), StoreError> {
    let (order_id, txid, vout, amount, height, role) = row;
    let role = OutputRole::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("output role {role}")))?;
    Ok((
        order_id,
        ChainOutput {
            outpoint: Outpoint { txid, vout: u32::try_from(vout).map_err(|_| StoreError::Range("vout"))? },
            amount_sat: to_u64(amount, "amount_sat")?,
            blockheight: height.map(u32::try_from).transpose().map_err(|_| StoreError::Range("blockheight"))?,
            role,
        },
    ))
}

fn refund_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRefund> {
    Ok(RawRefund {
        txid: r.get(0)?,
        order_id: r.get(1)?,
        psbt: r.get(2)?,
        inputs: r.get(3)?,
        destination: r.get(4)?,
        amount_sat: r.get(5)?,
        fee_sat: r.get(6)?,
        feerate_perkw: r.get(7)?,
        created_height: r.get(8)?,
        created_at_ms: r.get(9)?,
        state: r.get(10)?,
        replaces: r.get(11)?,
        kind: r.get(12)?,
    })
}

struct RawRefund {
    txid: String,
    order_id: String,
    psbt: String,
    inputs: String,
    destination: String,
    amount_sat: i64,
    fee_sat: i64,
    feerate_perkw: i64,
    created_height: i64,
    created_at_ms: i64,
    state: String,
    replaces: Option<String>,
    kind: String,
}

impl RawRefund {
    fn into_record(self) -> Result<RefundRecord, StoreError> {
        Ok(RefundRecord {
            state: RefundState::parse(&self.state)
                .ok_or_else(|| StoreError::Corrupt(format!("refund {} state {}", self.txid, self.state)))?,
            inputs: parse_outpoints(&self.inputs),
            txid: self.txid,
            order_id: self.order_id,
            psbt: self.psbt,
            destination: self.destination,
            amount_sat: to_u64(self.amount_sat, "amount_sat")?,
            fee_sat: to_u64(self.fee_sat, "fee_sat")?,
            feerate_perkw: u32::try_from(self.feerate_perkw).map_err(|_| StoreError::Range("feerate_perkw"))?,
            created_height: u32::try_from(self.created_height).map_err(|_| StoreError::Range("created_height"))?,
            created_at_ms: self.created_at_ms,
            replaces: self.replaces,
            kind: if self.kind == "surplus" { RefundKind::Surplus } else { RefundKind::Whole },
        })
    }
}

const REFUND_COLUMNS: &str = "txid, order_id, psbt, inputs, destination, amount_sat, fee_sat, feerate_perkw, \
    created_height, created_at_ms, state, replaces, kind";

fn set_roles(tx: &Connection, order_id: &str, ops: &[Outpoint], role: OutputRole) -> Result<(), StoreError> {
    let mut stmt =
        tx.prepare_cached("UPDATE chain_outputs SET role = ?1 WHERE txid = ?2 AND vout = ?3 AND order_id = ?4")?;
    for o in ops {
        stmt.execute(params![role.as_str(), o.txid, o.vout, order_id])?;
    }
    Ok(())
}

impl Store {
    /// Every on-chain payment address and its order. Outputs that reach an address after its
    /// order ended are refunded too, so every address stays watched.
    pub fn onchain_addresses(&self) -> Result<HashMap<String, String>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT address, order_id FROM payments WHERE address IS NOT NULL")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = HashMap::new();
        for r in rows {
            let (a, o) = r?;
            out.insert(a, o);
        }
        Ok(out)
    }

    /// The outputs of one order's address.
    pub fn chain_outputs(&self, order_id: &str) -> Result<Vec<ChainOutput>, StoreError> {
        chain_outputs_in(&self.lock(), order_id)
    }

    /// Outputs that still call for work (seen, a payment, being refunded), with their
    /// order's phase.
    pub fn open_chain_outputs(&self) -> Result<Vec<(String, Phase, ChainOutput)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT c.order_id, c.txid, c.vout, c.amount_sat, c.blockheight, c.role, o.phase \
             FROM chain_outputs c JOIN orders o ON o.order_id = c.order_id \
             WHERE c.role IN ('seen', 'payment', 'refunding')",
        )?;
        let rows = stmt.query_map([], |r| Ok((output_row(r)?, r.get::<_, String>(6)?)))?;
        let mut out = vec![];
        for r in rows {
            let (row, phase) = r?;
            let phase = Phase::parse(&phase).ok_or_else(|| StoreError::Corrupt(format!("phase {phase}")))?;
            let (id, o) = to_output(row)?;
            out.push((id, phase, o));
        }
        Ok(out)
    }

    /// Record what the wallet lists at orders' addresses: new outputs as `seen`, and moved
    /// confirmation heights (a reorg). Returns the orders whose outputs changed.
    pub fn record_outputs(&self, seen: &[SeenOutput], now_ms: i64) -> Result<Vec<String>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut changed = vec![];
        {
            let mut get = tx.prepare_cached("SELECT blockheight FROM chain_outputs WHERE txid = ?1 AND vout = ?2")?;
            let mut ins = tx.prepare_cached(
                "INSERT INTO chain_outputs (txid, vout, order_id, amount_sat, blockheight, first_seen_ms, role) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'seen')",
            )?;
            let mut upd =
                tx.prepare_cached("UPDATE chain_outputs SET blockheight = ?1 WHERE txid = ?2 AND vout = ?3")?;
            for s in seen {
                let known: Option<Option<i64>> =
                    get.query_row(params![s.outpoint.txid, s.outpoint.vout], |r| r.get(0)).optional()?;
                let height = s.blockheight.map(i64::from);
                match known {
                    None => {
                        ins.execute(params![
                            s.outpoint.txid,
                            s.outpoint.vout,
                            s.order_id,
                            to_i64(s.amount_sat, "amount_sat")?,
                            height,
                            now_ms
                        ])?;
                        insert_event(
                            &tx,
                            &s.order_id,
                            now_ms,
                            "onchain_output",
                            None,
                            None,
                            Some(&json!({"outpoint": s.outpoint.to_string(), "amount_sat": s.amount_sat,
                                "blockheight": s.blockheight})),
                        )?;
                    }
                    Some(h) if h == height => continue,
                    Some(_) => {
                        upd.execute(params![height, s.outpoint.txid, s.outpoint.vout])?;
                    }
                }
                if !changed.contains(&s.order_id) {
                    changed.push(s.order_id.clone());
                }
            }
        }
        tx.commit()?;
        Ok(changed)
    }

    /// An output that left the wallet's list without a refund of ours: its block is gone
    /// and so is its transaction, or something spent it (ruling 25). Kept, unconfirmed.
    pub fn output_vanished(&self, op: &Outpoint) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE chain_outputs SET blockheight = NULL WHERE txid = ?1 AND vout = ?2",
            params![op.txid, op.vout],
        )?;
        Ok(())
    }

    /// The order is paid on-chain by `outputs` (P-13, ruling 23): `PaymentHeld` and the
    /// outputs are its payment, together. `Conflict` when the order moved meanwhile.
    pub fn pay_onchain(
        &self,
        order_id: &str,
        outputs: &[Outpoint],
        surplus_sat: u64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let detail = json!({"outputs": outputs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "surplus_sat": surplus_sat});
        transition_in(
            &tx,
            order_id,
            Phase::AwaitingPayment,
            Event::PaymentHeld(PaymentMethod::Onchain),
            now_ms,
            Some(&detail),
        )?;
        set_roles(&tx, order_id, outputs, OutputRole::Payment)?;
        tx.execute(
            "UPDATE payments SET surplus_sat = ?1 WHERE order_id = ?2 AND method = 'onchain'",
            params![to_i64(surplus_sat, "surplus_sat")?, order_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A payment reorged out before the open: the order waits again (ruling 25).
    pub fn unpay_onchain(&self, order_id: &str, now_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        transition_in(&tx, order_id, Phase::PaymentHeld, Event::PaymentReorged, now_ms, None)?;
        tx.execute(
            "UPDATE payments SET surplus_sat = 0 WHERE order_id = ?1 AND method = 'onchain'",
            params![order_id],
        )?;
        tx.execute(
            "UPDATE chain_outputs SET role = 'seen' WHERE order_id = ?1 AND role = 'payment'",
            params![order_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// After the open, a payment output left the chain: flag the order, once (ruling 25).
    pub fn flag_reorg(&self, order_id: &str, outputs: &[Outpoint], now_ms: i64) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE orders SET reorg_flagged = 1, updated_at_ms = ?1 WHERE order_id = ?2 AND reorg_flagged = 0",
            params![now_ms, order_id],
        )?;
        if n == 1 {
            let detail = json!({"outputs": outputs.iter().map(ToString::to_string).collect::<Vec<_>>()});
            insert_event(&tx, order_id, now_ms, "payment_reorged_after_open", None, None, Some(&detail))?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// The payment of an order whose channel opened: the LSP's coins now.
    pub fn keep_outputs(&self, order_id: &str, outputs: &[Outpoint]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        set_roles(&tx, order_id, outputs, OutputRole::Kept)?;
        tx.commit()?;
        Ok(())
    }

    /// A surplus too small to send back once its fee is paid: kept, and recorded.
    pub fn surplus_kept(&self, order_id: &str, surplus_sat: u64, now_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE payments SET surplus_sat = 0 WHERE order_id = ?1 AND method = 'onchain'",
            params![order_id],
        )?;
        insert_event(
            &tx,
            order_id,
            now_ms,
            "surplus_dust_kept",
            None,
            None,
            Some(&json!({"surplus_sat": surplus_sat})),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Outputs too small to refund: kept, and recorded (ruling 24).
    pub fn mark_dust(&self, order_id: &str, outputs: &[Outpoint], now_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        set_roles(&tx, order_id, outputs, OutputRole::Dust)?;
        let detail = json!({"outputs": outputs.iter().map(ToString::to_string).collect::<Vec<_>>()});
        insert_event(&tx, order_id, now_ms, "refund_dust_kept", None, None, Some(&detail))?;
        tx.commit()?;
        Ok(())
    }

    /// Write a signed refund down before it is broadcast (ruling 24): its inputs are being
    /// refunded from now on, so no second refund is ever built for them. A replacement
    /// marks the refund it replaces.
    pub fn record_refund(&self, r: &RefundRecord) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            &format!(
                "INSERT INTO chain_refunds ({REFUND_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            params![
                r.txid,
                r.order_id,
                r.psbt,
                outpoints_json(&r.inputs),
                r.destination,
                to_i64(r.amount_sat, "amount_sat")?,
                to_i64(r.fee_sat, "fee_sat")?,
                r.feerate_perkw,
                r.created_height,
                r.created_at_ms,
                r.state.as_str(),
                r.replaces,
                r.kind.as_str(),
            ],
        )?;
        if let Some(old) = &r.replaces {
            tx.execute("UPDATE chain_refunds SET state = 'replaced' WHERE txid = ?1", params![old])?;
        }
        if r.kind == RefundKind::Whole {
            let mut stmt = tx.prepare_cached(
                "UPDATE chain_outputs SET role = 'refunding', refund_txid = ?1 \
                 WHERE txid = ?2 AND vout = ?3 AND order_id = ?4",
            )?;
            for o in &r.inputs {
                stmt.execute(params![r.txid, o.txid, o.vout, r.order_id])?;
            }
        } else {
            // The surplus is on its way: never sent twice.
            tx.execute(
                "UPDATE payments SET surplus_sat = 0 WHERE order_id = ?1 AND method = 'onchain'",
                params![r.order_id],
            )?;
        }
        let kind = match (r.kind, r.replaces.is_some()) {
            (_, true) => "refund_replaced",
            (RefundKind::Whole, false) => "refund_signed",
            (RefundKind::Surplus, false) => "surplus_refund_signed",
        };
        let detail = json!({"txid": r.txid, "inputs": r.inputs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "amount_sat": r.amount_sat, "fee_sat": r.fee_sat, "feerate_perkw": r.feerate_perkw,
            "destination": r.destination, "replaces": r.replaces});
        insert_event(&tx, &r.order_id, r.created_at_ms, kind, None, None, Some(&detail))?;
        tx.commit()?;
        Ok(())
    }

    pub fn set_refund_state(&self, txid: &str, state: RefundState) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute("UPDATE chain_refunds SET state = ?1 WHERE txid = ?2", params![state.as_str(), txid])?;
        if state == RefundState::Confirmed {
            // Every version spends the same inputs: whichever was mined, the refund is done.
            tx.execute(
                "UPDATE chain_outputs SET role = 'refunded' WHERE role = 'refunding' AND txid || ':' || vout IN \
                 (SELECT value FROM json_each((SELECT inputs FROM chain_refunds WHERE txid = ?1)))",
                params![txid],
            )?;
            // A surplus refund spent the payment: the rest went to the wallet as change.
            tx.execute(
                "UPDATE chain_outputs SET role = 'kept' WHERE role = 'payment' AND txid || ':' || vout IN \
                 (SELECT value FROM json_each((SELECT inputs FROM chain_refunds WHERE txid = ?1 AND kind = 'surplus')))",
                params![txid],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Refunds not known to be confirmed, oldest first.
    pub fn open_refunds(&self) -> Result<Vec<RefundRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {REFUND_COLUMNS} FROM chain_refunds WHERE state IN ('signed', 'broadcast') ORDER BY created_at_ms"
        ))?;
        let rows = stmt.query_map([], refund_row)?;
        let mut out = vec![];
        for r in rows {
            out.push(r?.into_record()?);
        }
        Ok(out)
    }

    /// Every refund of an order, oldest first (`lsps1-getorder`).
    pub fn refunds_of(&self, order_id: &str) -> Result<Vec<RefundRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {REFUND_COLUMNS} FROM chain_refunds WHERE order_id = ?1 ORDER BY created_at_ms, txid"
        ))?;
        let rows = stmt.query_map(params![order_id], refund_row)?;
        let mut out = vec![];
        for r in rows {
            out.push(r?.into_record()?);
        }
        Ok(out)
    }

    /// The hash recorded for `height`, and the highest height recorded.
    pub fn block_at(&self, height: u32) -> Result<(Option<String>, Option<u32>), StoreError> {
        let conn = self.lock();
        let hash = conn
            .prepare_cached("SELECT hash FROM chain_blocks WHERE height = ?1")?
            .query_row(params![height], |r| r.get(0))
            .optional()?;
        let top: Option<i64> = conn.query_row("SELECT MAX(height) FROM chain_blocks", [], |r| r.get(0))?;
        Ok((hash, top.and_then(|t| u32::try_from(t).ok())))
    }

    /// Record block `height`'s hash; blocks above it are gone (a reorg) and only the last
    /// 1,000 are kept.
    pub fn record_block(&self, height: u32, hash: &str) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM chain_blocks WHERE height >= ?1", params![height])?;
        tx.execute("INSERT INTO chain_blocks (height, hash) VALUES (?1, ?2)", params![height, hash])?;
        tx.execute("DELETE FROM chain_blocks WHERE height < ?1", params![i64::from(height) - 1000])?;
        tx.commit()?;
        Ok(())
    }

    /// The order and its outputs, read together.
    pub fn order_with_outputs(
        &self,
        order_id: &str,
    ) -> Result<Option<(super::OrderRecord, Vec<ChainOutput>)>, StoreError> {
        let conn = self.lock();
        let Some(o) = order_in(&conn, order_id)? else { return Ok(None) };
        let outs = chain_outputs_in(&conn, order_id)?;
        Ok(Some((o, outs)))
    }
}

/// A funding transaction watched for the funding promise (ruling 26).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedFunding {
    pub order_id: String,
    pub funding_txid: String,
    pub funding_outnum: u32,
    /// The block by which it must be mined: the block it was recorded at plus the order's
    /// `funding_confirms_within_blocks`.
    pub deadline: u32,
    pub feerate_perkw: u32,
    /// The child that bumped it, once one was sent.
    pub child: Option<String>,
}

impl Store {
    /// Funding transactions of completed orders not yet known to be mined.
    pub fn watched_fundings(&self) -> Result<Vec<WatchedFunding>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT c.order_id, c.funding_txid, c.funding_outnum, c.lease_end_block, o.channel_expiry_blocks, \
             o.funding_confirms_within_blocks, o.funding_feerate_perkw, c.funding_child \
             FROM channels c JOIN orders o ON o.order_id = c.order_id \
             WHERE (c.funding_state IS NULL OR c.funding_state = 'bumped') AND c.lease_end_block IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })?;
        let mut out = vec![];
        for r in rows {
            let (order_id, funding_txid, outnum, lease_end, expiry, within, rate, child) = r?;
            let funded = lease_end.saturating_sub(expiry);
            out.push(WatchedFunding {
                order_id,
                funding_txid,
                funding_outnum: u32::try_from(outnum).map_err(|_| StoreError::Range("funding_outnum"))?,
                deadline: u32::try_from(funded.saturating_add(within)).map_err(|_| StoreError::Range("deadline"))?,
                feerate_perkw: u32::try_from(rate).map_err(|_| StoreError::Range("funding_feerate_perkw"))?,
                child,
            });
        }
        Ok(out)
    }

    /// Where an order's funding promise stands now, with its event.
    pub fn set_funding_state(
        &self,
        order_id: &str,
        state: &'static str,
        child: Option<&str>,
        now_ms: i64,
        detail: &Value,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE channels SET funding_state = ?1, funding_child = COALESCE(?2, funding_child) WHERE order_id = ?3",
            params![state, child, order_id],
        )?;
        insert_event(&tx, order_id, now_ms, &format!("funding_{state}"), None, None, Some(detail))?;
        tx.commit()?;
        Ok(())
    }
}

pub(crate) fn chain_outputs_in(conn: &Connection, order_id: &str) -> Result<Vec<ChainOutput>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT order_id, txid, vout, amount_sat, blockheight, role FROM chain_outputs WHERE order_id = ?1 \
         ORDER BY first_seen_ms, txid, vout",
    )?;
    let rows = stmt.query_map(params![order_id], output_row)?;
    let mut out = vec![];
    for r in rows {
        out.push(to_output(r?)?.1);
    }
    Ok(out)
}
