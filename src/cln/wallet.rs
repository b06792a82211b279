//! The on-chain wallet port over lightningd (rulings 21–26), shaped by the recordings in
//! `tests/fixtures/cln-v26.06.6` (`rpc/newaddr.*`, `listfunds.*`, `utxopsbt.*`,
//! `addpsbtoutput.*`, `signpsbt.*`, `sendpsbt.*`, `reserveinputs.*`, `onchain/`).
//!
//! A refund is built with the recorded recipe that works on reserved inputs (`utxopsbt
//! reservedok=true`, `addpsbtoutput`, `signpsbt`) and broadcast apart with `sendpsbt`, so
//! the signed transaction is in the store before it leaves (`withdraw` would sign and
//! broadcast in one call, and refuses reserved inputs).

use std::str::FromStr;

use bitcoin::Psbt;
use serde_json::{Value, json};

use super::rpc::ClnNode;
use crate::ports::{NodeError, SignedRefund, WalletApi, WalletOutput};

/// `listfunds.outputs`, as [`WalletOutput`]s (amounts in whole sat).
pub fn parse_wallet_outputs(v: &Value) -> Result<Vec<WalletOutput>, NodeError> {
    let outputs = v
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or_else(|| NodeError::new("listfunds", None, "no outputs array"))?;
    let mut out = Vec::with_capacity(outputs.len());
    for o in outputs {
        let (Some(txid), Some(vout), Some(msat)) = (
            o.get("txid").and_then(Value::as_str),
            o.get("output").and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok()),
            o.get("amount_msat").and_then(Value::as_u64),
        ) else {
            continue;
        };
        let confirmed = o.get("status").and_then(Value::as_str) == Some("confirmed");
        out.push(WalletOutput {
            txid: txid.to_string(),
            vout,
            amount_sat: msat / 1000,
            address: o.get("address").and_then(Value::as_str).map(str::to_owned),
            blockheight: if confirmed {
                o.get("blockheight").and_then(Value::as_u64).and_then(|h| u32::try_from(h).ok())
            } else {
                None
            },
            reserved: o.get("reserved").and_then(Value::as_bool).unwrap_or(false),
            reserved_to_block: o.get("reserved_to_block").and_then(Value::as_u64).and_then(|h| u32::try_from(h).ok()),
        });
    }
    Ok(out)
}

/// A PSBT that spends `outpoints` and nothing else: how `reserveinputs` and
/// `unreserveinputs` name outputs (they take a PSBT, not an outpoint).
pub fn psbt_spending(outpoints: &[(String, u32)]) -> Result<String, NodeError> {
    let bad = |m: String| NodeError::new("reserveinputs", None, m);
    let mut inputs = vec![];
    for (txid, vout) in outpoints {
        let txid = bitcoin::Txid::from_str(txid).map_err(|e| bad(format!("txid {txid}: {e}")))?;
        inputs.push(bitcoin::TxIn {
            previous_output: bitcoin::OutPoint { txid, vout: *vout },
            sequence: bitcoin::Sequence::ENABLE_RBF_NO_LOCKTIME,
            ..Default::default()
        });
    }
    let tx = bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: inputs,
        output: vec![],
    };
    Ok(Psbt::from_unsigned_tx(tx).map_err(|e| bad(e.to_string()))?.to_string())
}

/// Weight of a 1-output transaction's fixed part with `dest`'s script, what `utxopsbt`'s
/// `startweight` says: 42 WU of version, counts, locktime and segwit marker, plus the
/// output (8 value + 1 length + script), × 4 (the recorded P2WPKH refund: 166).
pub fn start_weight(dest_script_len: usize) -> u64 {
    42 + 4 * (9 + dest_script_len as u64)
}

/// The txid and the fee of a signed PSBT whose inputs carry their `witness_utxo`.
pub fn signed_psbt_facts(psbt_b64: &str) -> Result<(String, u64, u64), NodeError> {
    let psbt = Psbt::from_str(psbt_b64).map_err(|e| NodeError::new("signpsbt", None, format!("bad psbt: {e}")))?;
    let txid = psbt.unsigned_tx.compute_txid().to_string();
    let paid: u64 = psbt.unsigned_tx.output.iter().map(|o| o.value.to_sat()).sum();
    let mut inputs: u64 = 0;
    for i in &psbt.inputs {
        let Some(u) = &i.witness_utxo else {
            return Err(NodeError::new("signpsbt", None, "an input has no witness_utxo"));
        };
        inputs = inputs.saturating_add(u.value.to_sat());
    }
    Ok((txid, paid, inputs.saturating_sub(paid)))
}

fn outpoint_strings(outpoints: &[(String, u32)]) -> Vec<String> {
    outpoints.iter().map(|(t, v)| format!("{t}:{v}")).collect()
}

impl ClnNode {
    /// A signed refund of `outpoints` to `destination` (recipe A of the recordings, which
    /// takes reserved inputs): everything less the fee (`amount_sat` `None`), or
    /// `amount_sat` with the excess back to the wallet as change. `None` when the outputs
    /// cannot pay the fee, or what is left is dust.
    async fn refund_psbt(
        &self,
        outpoints: Vec<(String, u32)>,
        destination: String,
        amount_sat: Option<u64>,
        feerate_perkw: u32,
    ) -> Result<Option<SignedRefund>, NodeError> {
        let script_len = crate::lifecycle::onchain::script_len(&destination);
        let built = self
            .call(
                "utxopsbt",
                json!({
                    "satoshi": amount_sat.map_or(json!("all"), |a| json!(a)),
                    "feerate": format!("{feerate_perkw}perkw"),
                    "startweight": start_weight(script_len),
                    "utxos": outpoint_strings(&outpoints),
                    "reservedok": true,
                    "excess_as_change": amount_sat.is_some(),
                }),
            )
            .await;
        let built = match built {
            Ok(v) => v,
            // 301: the outputs cannot pay the fee at all (recorded: a 1,000 sat output).
            Err(e) if e.code == Some(301) => return Ok(None),
            Err(e) => return Err(e),
        };
        let send_sat = match amount_sat {
            Some(a) => a,
            None => built.get("excess_msat").and_then(Value::as_u64).unwrap_or(0) / 1000,
        };
        if send_sat < crate::lifecycle::onchain::DUST_SAT {
            return Ok(None);
        }
        let psbt = built
            .get("psbt")
            .and_then(Value::as_str)
            .ok_or_else(|| NodeError::new("utxopsbt", None, "no psbt in the answer"))?;
        let with_output = self
            .call("addpsbtoutput", json!({ "satoshi": send_sat, "initialpsbt": psbt, "destination": destination }))
            .await?;
        let unsigned = with_output
            .get("psbt")
            .and_then(Value::as_str)
            .ok_or_else(|| NodeError::new("addpsbtoutput", None, "no psbt in the answer"))?;
        let signed = self.call("signpsbt", json!({ "psbt": unsigned })).await?;
        let signed = signed
            .get("signed_psbt")
            .and_then(Value::as_str)
            .ok_or_else(|| NodeError::new("signpsbt", None, "no signed_psbt in the answer"))?
            .to_string();
        let (txid, _paid, fee_sat) = signed_psbt_facts(&signed)?;
        Ok(Some(SignedRefund { txid, psbt: signed, amount_sat: send_sat, fee_sat }))
    }
}

impl WalletApi for ClnNode {
    async fn new_address(&self, kind: &'static str) -> Result<String, NodeError> {
        let v = self.call("newaddr", json!({ "addresstype": kind })).await?;
        v.get(kind)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| NodeError::new("newaddr", None, format!("no {kind} address in the answer")))
    }

    async fn wallet_outputs(&self) -> Result<Vec<WalletOutput>, NodeError> {
        parse_wallet_outputs(&self.call_within("listfunds", json!({}), super::rpc::LONG_CALL_TIMEOUT).await?)
    }

    async fn reserve_outputs(&self, outpoints: Vec<(String, u32)>, blocks: u32) -> Result<(), NodeError> {
        let psbt = psbt_spending(&outpoints)?;
        self.call("reserveinputs", json!({ "psbt": psbt, "exclusive": false, "reserve": blocks })).await.map(|_| ())
    }

    async fn unreserve_outputs(&self, outpoints: Vec<(String, u32)>) -> Result<(), NodeError> {
        let psbt = psbt_spending(&outpoints)?;
        // Reservations add up by 72 blocks a call: release far more than any could hold.
        self.call("unreserveinputs", json!({ "psbt": psbt, "reserve": 1_000_000 })).await.map(|_| ())
    }

    async fn sign_refund(
        &self,
        outpoints: Vec<(String, u32)>,
        destination: String,
        feerate_perkw: u32,
    ) -> Result<Option<SignedRefund>, NodeError> {
        self.refund_psbt(outpoints, destination, None, feerate_perkw).await
    }

    async fn sign_partial_refund(
        &self,
        outpoints: Vec<(String, u32)>,
        destination: String,
        amount_sat: u64,
        feerate_perkw: u32,
    ) -> Result<Option<SignedRefund>, NodeError> {
        self.refund_psbt(outpoints, destination, Some(amount_sat), feerate_perkw).await
    }

    async fn bump_by_child(&self, outpoint: (String, u32), feerate_perkw: u32) -> Result<String, NodeError> {
        // The recorded CPFP child (`withdraw.ok-cpfp-child-of-unconfirmed-funding`):
        // `withdraw` of exactly the change, minconf 0, to an address of our own.
        let to = self.new_address("p2tr").await?;
        let v = self
            .call(
                "withdraw",
                json!({
                    "destination": to,
                    "satoshi": "all",
                    "feerate": format!("{feerate_perkw}perkw"),
                    "minconf": 0,
                    "utxos": [format!("{}:{}", outpoint.0, outpoint.1)],
                }),
            )
            .await?;
        v.get("txid")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| NodeError::new("withdraw", None, "no txid in the answer"))
    }

    async fn broadcast(&self, psbt: String) -> Result<String, NodeError> {
        let v = self.call("sendpsbt", json!({ "psbt": psbt })).await?;
        v.get("txid")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| NodeError::new("sendpsbt", None, "no txid in the answer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> Value {
        let path = format!("{}/tests/fixtures/cln-v26.06.6/{rel}", env!("CARGO_MANIFEST_DIR"));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v.get("result").cloned().unwrap_or(v)
    }

    #[test]
    fn listfunds_outputs_confirmed_reserved_and_unconfirmed() {
        let outs = parse_wallet_outputs(&fixture("rpc/listfunds.ok-reserved-output.json")).unwrap();
        assert!(!outs.is_empty());
        assert!(outs.iter().any(|o| o.reserved && o.reserved_to_block.is_some()), "{outs:?}");
        assert!(outs.iter().all(|o| o.address.is_some()));
    }

    #[test]
    fn the_recorded_refund_psbt_reads_its_txid_and_fee() {
        // signpsbt.ok-rbf: recipe A at 15000perkw, 396 WU: 5,940 sat of fee.
        let signed = fixture("rpc/signpsbt.ok-rbf.json");
        let (txid, _paid, fee) = signed_psbt_facts(signed["signed_psbt"].as_str().unwrap()).unwrap();
        assert_eq!(fee, 5_940);
        let sent = fixture("rpc/sendpsbt.ok-rbf-replacement.json");
        assert_eq!(sent["txid"].as_str().unwrap(), txid);
    }

    #[test]
    fn start_weight_is_what_withdraw_uses() {
        assert_eq!(start_weight(22), 166);
    }

    #[test]
    fn a_psbt_names_the_outputs_to_reserve() {
        let txid = "a2348264c520c0cd67a4a621efcd1eba04bf40c3f8ffe2dd71f6f61deaeba616".to_string();
        let p = psbt_spending(&[(txid.clone(), 0)]).unwrap();
        let psbt = Psbt::from_str(&p).unwrap();
        assert_eq!(psbt.unsigned_tx.input[0].previous_output.to_string(), format!("{txid}:0"));
        assert!(psbt_spending(&[("zz".into(), 0)]).is_err());
    }
}
