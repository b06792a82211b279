//! The store's side of on-chain payments (rulings 22–26): the outputs seen at orders'
//! addresses and what each is to its order, the refunds (written before they are
//! broadcast, ruling 24), and recent block hashes (ruling 25). Every write that moves an
//! order is one transaction with its event, committed with `synchronous=FULL`.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::db::{Db, Row, Val};
use super::{Store, StoreError, event_db, order_db, to_i64, to_u64, transition_db};
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

fn to_output(r: &Row) -> Result<(String, ChainOutput), StoreError> {
    let role = r.text(5)?;
    let role = OutputRole::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("output role {role}")))?;
    Ok((
        r.text(0)?,
        ChainOutput {
            outpoint: Outpoint {
                txid: r.text(1)?,
                vout: u32::try_from(r.i64(2)?).map_err(|_| StoreError::Range("vout"))?,
            },
            amount_sat: to_u64(r.i64(3)?, "amount_sat")?,
            blockheight: r.opt_i64(4)?.map(u32::try_from).transpose().map_err(|_| StoreError::Range("blockheight"))?,
            role,
        },
    ))
}

fn refund_of(r: &Row) -> Result<RefundRecord, StoreError> {
    let txid = r.text(0)?;
    let state = r.text(10)?;
    Ok(RefundRecord {
        state: RefundState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("refund {txid} state {state}")))?,
        inputs: parse_outpoints(&r.text(3)?),
        order_id: r.text(1)?,
        psbt: r.text(2)?,
        destination: r.text(4)?,
        amount_sat: to_u64(r.i64(5)?, "amount_sat")?,
        fee_sat: to_u64(r.i64(6)?, "fee_sat")?,
        feerate_perkw: u32::try_from(r.i64(7)?).map_err(|_| StoreError::Range("feerate_perkw"))?,
        created_height: u32::try_from(r.i64(8)?).map_err(|_| StoreError::Range("created_height"))?,
        created_at_ms: r.i64(9)?,
        replaces: r.opt_text(11)?,
        kind: if r.text(12)? == "surplus" { RefundKind::Surplus } else { RefundKind::Whole },
        txid,
    })
}

const REFUND_COLUMNS: &str = "txid, order_id, psbt, inputs, destination, amount_sat, fee_sat, feerate_perkw, \
    created_height, created_at_ms, state, replaces, kind";

fn set_roles(db: &dyn Db, order_id: &str, ops: &[Outpoint], role: OutputRole) -> Result<(), StoreError> {
    for o in ops {
        db.execute(
            "UPDATE chain_outputs SET role = ?1 WHERE txid = ?2 AND vout = ?3 AND order_id = ?4",
            &[role.as_str().into(), o.txid.as_str().into(), o.vout.into(), order_id.into()],
        )?;
    }
    Ok(())
}

fn outputs_detail(outputs: &[Outpoint]) -> Value {
    Value::from(outputs.iter().map(ToString::to_string).collect::<Vec<_>>())
}

impl Store {
    /// Every on-chain payment address of this node's orders, and its order. Outputs that
    /// reach an address after its order ended are refunded too, so every address stays
    /// watched.
    pub fn onchain_addresses(&self) -> Result<HashMap<String, String>, StoreError> {
        self.read_fresh(|db| {
            db.query(
                "SELECT p.address, p.order_id FROM payments p JOIN orders o ON o.order_id = p.order_id \
                 WHERE p.address IS NOT NULL AND o.node_id = ?1",
                &[(*self.node).into()],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?, r.text(1)?)))
            .collect()
        })
    }

    /// The outputs of one order's address.
    pub fn chain_outputs(&self, order_id: &str) -> Result<Vec<ChainOutput>, StoreError> {
        self.read_fresh(|db| chain_outputs_db(db, order_id))
    }

    /// This node's outputs that still call for work (seen, a payment, being refunded), with
    /// their order's phase.
    pub fn open_chain_outputs(&self) -> Result<Vec<(String, Phase, ChainOutput)>, StoreError> {
        self.read_fresh(|db| {
            db.query(
                "SELECT c.order_id, c.txid, c.vout, c.amount_sat, c.blockheight, c.role, o.phase \
                 FROM chain_outputs c JOIN orders o ON o.order_id = c.order_id \
                 WHERE c.role IN ('seen', 'payment', 'refunding') AND o.node_id = ?1",
                &[(*self.node).into()],
            )?
            .iter()
            .map(|r| {
                let phase = r.text(6)?;
                let phase = Phase::parse(&phase).ok_or_else(|| StoreError::Corrupt(format!("phase {phase}")))?;
                let (id, o) = to_output(r)?;
                Ok((id, phase, o))
            })
            .collect()
        })
    }

    /// Record what the wallet lists at orders' addresses: new outputs as `seen`, and moved
    /// confirmation heights (a reorg). Returns the orders whose outputs changed.
    pub fn record_outputs(&self, seen: &[SeenOutput], now_ms: i64) -> Result<Vec<String>, StoreError> {
        self.write(|db| {
            let mut changed: Vec<String> = vec![];
            for s in seen {
                let known = db.query_opt(
                    "SELECT blockheight FROM chain_outputs WHERE txid = ?1 AND vout = ?2",
                    &[s.outpoint.txid.as_str().into(), s.outpoint.vout.into()],
                )?;
                let height = s.blockheight.map(i64::from);
                match known {
                    None => {
                        db.execute(
                            "INSERT INTO chain_outputs (txid, vout, order_id, amount_sat, blockheight, first_seen_ms, \
                             role) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'seen')",
                            &[
                                s.outpoint.txid.as_str().into(),
                                s.outpoint.vout.into(),
                                s.order_id.as_str().into(),
                                to_i64(s.amount_sat, "amount_sat")?.into(),
                                height.into(),
                                now_ms.into(),
                            ],
                        )?;
                        event_db(
                            db,
                            &s.order_id,
                            now_ms,
                            "onchain_output",
                            None,
                            None,
                            Some(&json!({"outpoint": s.outpoint.to_string(), "amount_sat": s.amount_sat,
                                "blockheight": s.blockheight})),
                        )?;
                    }
                    Some(r) if r.opt_i64(0)? == height => continue,
                    Some(_) => {
                        db.execute(
                            "UPDATE chain_outputs SET blockheight = ?1 WHERE txid = ?2 AND vout = ?3",
                            &[height.into(), s.outpoint.txid.as_str().into(), s.outpoint.vout.into()],
                        )?;
                    }
                }
                if !changed.contains(&s.order_id) {
                    changed.push(s.order_id.clone());
                }
            }
            Ok(changed)
        })
    }

    /// An output that left the wallet's list without a refund of ours: its block is gone
    /// and so is its transaction, or something spent it (ruling 25). Kept, unconfirmed.
    pub fn output_vanished(&self, op: &Outpoint) -> Result<(), StoreError> {
        self.write(|db| {
            db.execute(
                "UPDATE chain_outputs SET blockheight = NULL WHERE txid = ?1 AND vout = ?2",
                &[op.txid.as_str().into(), op.vout.into()],
            )?;
            Ok(())
        })
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
        let surplus = to_i64(surplus_sat, "surplus_sat")?;
        let detail = json!({"outputs": outputs_detail(outputs), "surplus_sat": surplus_sat});
        self.write(|db| {
            transition_db(
                db,
                order_id,
                Phase::AwaitingPayment,
                Event::PaymentHeld(PaymentMethod::Onchain),
                now_ms,
                Some(&detail),
            )?;
            set_roles(db, order_id, outputs, OutputRole::Payment)?;
            db.execute(
                "UPDATE payments SET surplus_sat = ?1 WHERE order_id = ?2 AND method = 'onchain'",
                &[surplus.into(), order_id.into()],
            )?;
            Ok(())
        })
    }

    /// A payment reorged out before the open: the order waits again (ruling 25).
    pub fn unpay_onchain(&self, order_id: &str, now_ms: i64) -> Result<(), StoreError> {
        self.write(|db| {
            transition_db(db, order_id, Phase::PaymentHeld, Event::PaymentReorged, now_ms, None)?;
            db.execute(
                "UPDATE payments SET surplus_sat = 0 WHERE order_id = ?1 AND method = 'onchain'",
                &[order_id.into()],
            )?;
            db.execute(
                "UPDATE chain_outputs SET role = 'seen' WHERE order_id = ?1 AND role = 'payment'",
                &[order_id.into()],
            )?;
            Ok(())
        })
    }

    /// After the open, a payment output left the chain: flag the order, once (ruling 25).
    pub fn flag_reorg(&self, order_id: &str, outputs: &[Outpoint], now_ms: i64) -> Result<bool, StoreError> {
        let detail = json!({"outputs": outputs_detail(outputs)});
        self.write(|db| {
            let n = db.execute(
                "UPDATE orders SET reorg_flagged = 1, updated_at_ms = ?1 WHERE order_id = ?2 AND reorg_flagged = 0",
                &[now_ms.into(), order_id.into()],
            )?;
            if n == 1 {
                event_db(db, order_id, now_ms, "payment_reorged_after_open", None, None, Some(&detail))?;
            }
            Ok(n == 1)
        })
    }

    /// The payment of an order whose channel opened: the LSP's coins now.
    pub fn keep_outputs(&self, order_id: &str, outputs: &[Outpoint]) -> Result<(), StoreError> {
        self.write(|db| set_roles(db, order_id, outputs, OutputRole::Kept))
    }

    /// A surplus too small to send back once its fee is paid: kept, and recorded.
    pub fn surplus_kept(&self, order_id: &str, surplus_sat: u64, now_ms: i64) -> Result<(), StoreError> {
        self.write(|db| {
            db.execute(
                "UPDATE payments SET surplus_sat = 0 WHERE order_id = ?1 AND method = 'onchain'",
                &[order_id.into()],
            )?;
            event_db(db, order_id, now_ms, "surplus_dust_kept", None, None, Some(&json!({"surplus_sat": surplus_sat})))
        })
    }

    /// Outputs too small to refund: kept, and recorded (ruling 24).
    pub fn mark_dust(&self, order_id: &str, outputs: &[Outpoint], now_ms: i64) -> Result<(), StoreError> {
        let detail = json!({"outputs": outputs_detail(outputs)});
        self.write(|db| {
            set_roles(db, order_id, outputs, OutputRole::Dust)?;
            event_db(db, order_id, now_ms, "refund_dust_kept", None, None, Some(&detail))
        })
    }

    /// Write a signed refund down before it is broadcast (ruling 24): its inputs are being
    /// refunded from now on, so no second refund is ever built for them. A replacement
    /// marks the refund it replaces.
    pub fn record_refund(&self, r: &RefundRecord) -> Result<(), StoreError> {
        let amount = to_i64(r.amount_sat, "amount_sat")?;
        let fee = to_i64(r.fee_sat, "fee_sat")?;
        let kind = match (r.kind, r.replaces.is_some()) {
            (_, true) => "refund_replaced",
            (RefundKind::Whole, false) => "refund_signed",
            (RefundKind::Surplus, false) => "surplus_refund_signed",
        };
        let detail = json!({"txid": r.txid, "inputs": outputs_detail(&r.inputs),
            "amount_sat": r.amount_sat, "fee_sat": r.fee_sat, "feerate_perkw": r.feerate_perkw,
            "destination": r.destination, "replaces": r.replaces});
        self.write(|db| {
            db.execute(
                &format!(
                    "INSERT INTO chain_refunds ({REFUND_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
                     ?11, ?12, ?13)"
                ),
                &[
                    r.txid.as_str().into(),
                    r.order_id.as_str().into(),
                    r.psbt.as_str().into(),
                    outpoints_json(&r.inputs).into(),
                    r.destination.as_str().into(),
                    amount.into(),
                    fee.into(),
                    r.feerate_perkw.into(),
                    r.created_height.into(),
                    r.created_at_ms.into(),
                    r.state.as_str().into(),
                    r.replaces.clone().into(),
                    r.kind.as_str().into(),
                ],
            )?;
            if let Some(old) = &r.replaces {
                db.execute("UPDATE chain_refunds SET state = 'replaced' WHERE txid = ?1", &[old.as_str().into()])?;
            }
            if r.kind == RefundKind::Whole {
                for o in &r.inputs {
                    db.execute(
                        "UPDATE chain_outputs SET role = 'refunding', refund_txid = ?1 \
                         WHERE txid = ?2 AND vout = ?3 AND order_id = ?4",
                        &[r.txid.as_str().into(), o.txid.as_str().into(), o.vout.into(), r.order_id.as_str().into()],
                    )?;
                }
            } else {
                // The surplus is on its way: never sent twice.
                db.execute(
                    "UPDATE payments SET surplus_sat = 0 WHERE order_id = ?1 AND method = 'onchain'",
                    &[r.order_id.as_str().into()],
                )?;
            }
            event_db(db, &r.order_id, r.created_at_ms, kind, None, None, Some(&detail))
        })
    }

    pub fn set_refund_state(&self, txid: &str, state: RefundState) -> Result<(), StoreError> {
        self.write(|db| {
            db.execute("UPDATE chain_refunds SET state = ?1 WHERE txid = ?2", &[state.as_str().into(), txid.into()])?;
            if state != RefundState::Confirmed {
                return Ok(());
            }
            let Some(r) = db.query_opt("SELECT inputs, kind FROM chain_refunds WHERE txid = ?1", &[txid.into()])?
            else {
                return Ok(());
            };
            let surplus = r.text(1)? == "surplus";
            for o in parse_outpoints(&r.text(0)?) {
                // Every version spends the same inputs: whichever was mined, the refund is
                // done.
                db.execute(
                    "UPDATE chain_outputs SET role = 'refunded' WHERE role = 'refunding' AND txid = ?1 AND vout = ?2",
                    &[o.txid.as_str().into(), o.vout.into()],
                )?;
                if surplus {
                    // A surplus refund spent the payment: the rest went to the wallet as change.
                    db.execute(
                        "UPDATE chain_outputs SET role = 'kept' WHERE role = 'payment' AND txid = ?1 AND vout = ?2",
                        &[o.txid.as_str().into(), o.vout.into()],
                    )?;
                }
            }
            Ok(())
        })
    }

    /// This node's refunds not known to be confirmed, oldest first.
    pub fn open_refunds(&self) -> Result<Vec<RefundRecord>, StoreError> {
        self.read_fresh(|db| {
            db.query(
                &format!(
                    "SELECT {} FROM chain_refunds r JOIN orders o ON o.order_id = r.order_id \
                     WHERE r.state IN ('signed', 'broadcast') AND o.node_id = ?1 ORDER BY r.created_at_ms",
                    REFUND_COLUMNS_R
                ),
                &[(*self.node).into()],
            )?
            .iter()
            .map(refund_of)
            .collect()
        })
    }

    /// Every refund of an order, oldest first (`lsps1-getorder`).
    pub fn refunds_of(&self, order_id: &str) -> Result<Vec<RefundRecord>, StoreError> {
        self.read_fresh(|db| {
            db.query(
                &format!("SELECT {REFUND_COLUMNS} FROM chain_refunds WHERE order_id = ?1 ORDER BY created_at_ms, txid"),
                &[order_id.into()],
            )?
            .iter()
            .map(refund_of)
            .collect()
        })
    }

    /// The hash this node recorded for `height`, and the highest height it recorded.
    pub fn block_at(&self, height: u32) -> Result<(Option<String>, Option<u32>), StoreError> {
        self.read_fresh(|db| {
            let hash = db
                .query_opt(
                    "SELECT hash FROM chain_blocks WHERE node_id = ?1 AND height = ?2",
                    &[(*self.node).into(), height.into()],
                )?
                .map(|r| r.text(0))
                .transpose()?;
            let top = db
                .query_opt("SELECT MAX(height) FROM chain_blocks WHERE node_id = ?1", &[(*self.node).into()])?
                .map(|r| r.opt_i64(0))
                .transpose()?
                .flatten();
            Ok((hash, top.and_then(|t| u32::try_from(t).ok())))
        })
    }

    /// Record block `height`'s hash as this node saw it; blocks above it are gone (a reorg)
    /// and only the last 1,000 are kept.
    pub fn record_block(&self, height: u32, hash: &str) -> Result<(), StoreError> {
        self.write(|db| {
            let node: Val = (*self.node).into();
            db.execute("DELETE FROM chain_blocks WHERE node_id = ?1 AND height >= ?2", &[node.clone(), height.into()])?;
            db.execute(
                "INSERT INTO chain_blocks (node_id, height, hash) VALUES (?1, ?2, ?3)",
                &[node.clone(), height.into(), hash.into()],
            )?;
            db.execute(
                "DELETE FROM chain_blocks WHERE node_id = ?1 AND height < ?2",
                &[node, (i64::from(height) - 1000).into()],
            )?;
            Ok(())
        })
    }

    /// The order and its outputs, read together.
    pub fn order_with_outputs(
        &self,
        order_id: &str,
    ) -> Result<Option<(super::OrderRecord, Vec<ChainOutput>)>, StoreError> {
        self.read_fresh(|db| {
            let Some(o) = order_db(db, order_id)? else { return Ok(None) };
            Ok(Some((o, chain_outputs_db(db, order_id)?)))
        })
    }
}

const REFUND_COLUMNS_R: &str = "r.txid, r.order_id, r.psbt, r.inputs, r.destination, r.amount_sat, r.fee_sat, \
    r.feerate_perkw, r.created_height, r.created_at_ms, r.state, r.replaces, r.kind";

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
    /// Funding transactions of this node's completed orders not yet known to be mined.
    pub fn watched_fundings(&self) -> Result<Vec<WatchedFunding>, StoreError> {
        self.read_fresh(|db| {
            db.query(
                "SELECT c.order_id, c.funding_txid, c.funding_outnum, c.lease_end_block, o.channel_expiry_blocks, \
                 o.funding_confirms_within_blocks, o.funding_feerate_perkw, c.funding_child \
                 FROM channels c JOIN orders o ON o.order_id = c.order_id \
                 WHERE (c.funding_state IS NULL OR c.funding_state = 'bumped') AND c.lease_end_block IS NOT NULL \
                 AND o.node_id = ?1",
                &[(*self.node).into()],
            )?
            .iter()
            .map(|r| {
                let funded = r.i64(3)?.saturating_sub(r.i64(4)?);
                Ok(WatchedFunding {
                    order_id: r.text(0)?,
                    funding_txid: r.text(1)?,
                    funding_outnum: u32::try_from(r.i64(2)?).map_err(|_| StoreError::Range("funding_outnum"))?,
                    deadline: u32::try_from(funded.saturating_add(r.i64(5)?))
                        .map_err(|_| StoreError::Range("deadline"))?,
                    feerate_perkw: u32::try_from(r.i64(6)?).map_err(|_| StoreError::Range("funding_feerate_perkw"))?,
                    child: r.opt_text(7)?,
                })
            })
            .collect()
        })
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
        self.write(|db| {
            db.execute(
                "UPDATE channels SET funding_state = ?1, funding_child = COALESCE(?2, funding_child) WHERE order_id = ?3",
                &[state.into(), child.into(), order_id.into()],
            )?;
            event_db(db, order_id, now_ms, &format!("funding_{state}"), None, None, Some(detail))
        })
    }
}

pub(crate) fn chain_outputs_db(db: &dyn Db, order_id: &str) -> Result<Vec<ChainOutput>, StoreError> {
    db.query(
        "SELECT order_id, txid, vout, amount_sat, blockheight, role FROM chain_outputs WHERE order_id = ?1 \
         ORDER BY first_seen_ms, txid, vout",
        &[order_id.into()],
    )?
    .iter()
    .map(|r| Ok(to_output(r)?.1))
    .collect()
}
