//! The stand-in's chain and on-chain wallet, answering as Core Lightning v26.06.6 did in the
//! recordings (`tests/fixtures/cln-v26.06.6/onchain/`, `rpc/newaddr.*`, `rpc/listfunds.*`,
//! `rpc/utxopsbt.*`, `rpc/addpsbtoutput.*`, `rpc/signpsbt.*`, `rpc/sendpsbt.*`,
//! `rpc/reserveinputs.*`, `rpc/unreserveinputs.*`):
//!
//! - a payment to the wallet is invisible (not in `listfunds`) until it is mined; then it is
//!   listed `confirmed` with its `blockheight`, once per output;
//! - a reorg keeps the output listed, `unconfirmed`, without `blockheight`;
//! - a spend of ours (`sendpsbt`) leaves its inputs listed (`reserved`) until it is mined,
//!   then they disappear; a replacement must spend the same inputs;
//! - `utxopsbt reservedok=false` on a reserved input: -32602 `UTXO … already reserved`; an
//!   unknown one: -32602 `Unknown UTXO …`; outputs that cannot pay the fee: 301.
//!   `utxopsbt` adds 72 blocks to the inputs' reservations, `reserveinputs` 72 (or `reserve`).

use std::collections::HashMap;
use std::str::FromStr;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{Address, Amount, Network, OutPoint, Psbt, ScriptBuf, Transaction, TxIn, TxOut, Txid, Witness};
use serde_json::{Value, json};

/// One output of the wallet.
#[derive(Debug, Clone)]
pub struct Coin {
    pub outpoint: OutPoint,
    pub amount_sat: u64,
    pub address: String,
    pub script: ScriptBuf,
    /// The block that holds it (`None`: in the mempool, or reorged out).
    pub blockheight: Option<u32>,
    /// Listed by `listfunds` (a deposit is, from its first block on).
    pub listed: bool,
    pub reserved_to: Option<u32>,
    /// Spent by a transaction of ours still in the mempool.
    pub spent_by: Option<Txid>,
}

/// A transaction of ours in the mempool.
#[derive(Debug, Clone)]
pub struct Pending {
    pub tx: Transaction,
    pub fee_sat: u64,
}

#[derive(Debug, Default)]
pub struct Wallet {
    pub coins: Vec<Coin>,
    pub addresses: HashMap<String, ScriptBuf>,
    next_key: u32,
    next_tx: u32,
    /// Deposits sent to the wallet, not mined yet.
    pub incoming: Vec<OutPoint>,
    /// Our broadcasts not mined yet, by txid.
    pub mempool: HashMap<Txid, Pending>,
    /// Every transaction of ours that was mined, by txid.
    pub mined: HashMap<Txid, (Transaction, u32)>,
    /// Our broadcasts stay out of blocks (a fee market that ignores them).
    pub hold_mempool: bool,
    /// Channel fundings and their change stay out of blocks.
    pub hold_fundings: bool,
    /// Change outputs of fundings, not mined yet.
    changes: Vec<OutPoint>,
}

fn err(code: i64, msg: impl Into<String>) -> Value {
    json!({"code": code, "message": msg.into()})
}

fn parse_outpoint(s: &str) -> Option<OutPoint> {
    let (t, v) = s.split_once(':')?;
    Some(OutPoint { txid: Txid::from_str(t).ok()?, vout: v.parse().ok()? })
}

fn feerate_perkw(v: Option<&Value>) -> Result<u64, Value> {
    let s = v.and_then(Value::as_str).unwrap_or("7500perkw");
    s.strip_suffix("perkw").and_then(|n| n.parse().ok()).ok_or_else(|| err(-32602, format!("feerate: bad '{s}'")))
}

/// Weight of one wallet input when signed (P2TR key path; the recorded refund: 396 - 166).
const INPUT_WEIGHT: u64 = 230;

impl Wallet {
    /// `newaddr`: a fresh address of `kind` (`p2tr` or `bech32`), regtest.
    pub fn new_address(&mut self, kind: &str) -> Result<Value, Value> {
        self.next_key += 1;
        let mut k = [0x42u8; 32];
        k[..4].copy_from_slice(&self.next_key.to_be_bytes());
        let sk = SecretKey::from_slice(&k).map_err(|e| err(-1, e.to_string()))?;
        let secp = Secp256k1::new();
        let pk = bitcoin::secp256k1::PublicKey::from_secret_key(&secp, &sk);
        let addr = match kind {
            "p2tr" => Address::p2tr(&secp, pk.x_only_public_key().0, None, Network::Regtest),
            "bech32" => Address::p2wpkh(&bitcoin::CompressedPublicKey(pk), Network::Regtest),
            other => {
                return Err(err(-32602, format!("'addresstype' should be 'p2tr', 'bech32', or 'all', not '{other}'")));
            }
        };
        self.addresses.insert(addr.to_string(), addr.script_pubkey());
        Ok(json!({ kind: addr.to_string() }))
    }

    /// A payment from elsewhere to `address` (in the mempool: nobody sees it yet).
    pub fn receive(&mut self, address: &str, amount_sat: u64) -> OutPoint {
        self.next_tx += 1;
        let txid = Txid::from_byte_array(
            bitcoin::hashes::sha256d::Hash::hash(format!("deposit-{}", self.next_tx).as_bytes()).to_byte_array(),
        );
        let outpoint = OutPoint { txid, vout: self.next_tx % 3 };
        let script = self
            .addresses
            .get(address)
            .cloned()
            .or_else(|| Address::from_str(address).ok().map(|a| a.assume_checked().script_pubkey()))
            .unwrap_or_default();
        self.coins.push(Coin {
            outpoint,
            amount_sat,
            address: address.to_string(),
            script,
            blockheight: None,
            listed: false,
            reserved_to: None,
            spent_by: None,
        });
        self.incoming.push(outpoint);
        outpoint
    }

    /// The change of a funding transaction we broadcast: listed at once, unconfirmed.
    pub fn add_change(&mut self, outpoint: OutPoint, amount_sat: u64) {
        let script = Address::p2wsh(&ScriptBuf::new(), Network::Regtest);
        self.coins.push(Coin {
            outpoint,
            amount_sat,
            address: script.to_string(),
            script: script.script_pubkey(),
            blockheight: None,
            listed: true,
            reserved_to: None,
            spent_by: None,
        });
        self.changes.push(outpoint);
    }

    /// `withdraw` of chosen outputs, all of them, to `destination` (the recorded CPFP child).
    pub fn withdraw(&mut self, params: &Value) -> Result<Value, Value> {
        let feerate = feerate_perkw(params.get("feerate"))?;
        let ops: Vec<OutPoint> = params["utxos"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().and_then(parse_outpoint))
            .collect();
        let coins: Vec<Coin> = self.coins.iter().filter(|c| ops.contains(&c.outpoint) && c.listed).cloned().collect();
        if coins.len() != ops.len() || coins.is_empty() {
            return Err(err(-32602, "Unknown UTXO"));
        }
        let total: u64 = coins.iter().map(|c| c.amount_sat).sum();
        let fee = (444 * coins.len() as u64 * feerate).div_ceil(1000);
        let dest = params["destination"]
            .as_str()
            .and_then(|a| Address::from_str(a).ok())
            .ok_or_else(|| err(-32602, "destination: should be a valid address"))?
            .assume_checked();
        let tx = Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: coins.iter().map(|c| TxIn { previous_output: c.outpoint, ..Default::default() }).collect(),
            output: vec![TxOut {
                value: Amount::from_sat(total.saturating_sub(fee)),
                script_pubkey: dest.script_pubkey(),
            }],
        };
        let txid = tx.compute_txid();
        for c in self.coins.iter_mut().filter(|c| ops.contains(&c.outpoint)) {
            c.spent_by = Some(txid);
        }
        // Its output is the wallet's: listed at once, unconfirmed, mined with the tx.
        if self.addresses.contains_key(&dest.to_string()) {
            self.coins.push(Coin {
                outpoint: OutPoint { txid, vout: 0 },
                amount_sat: total.saturating_sub(fee),
                address: dest.to_string(),
                script: dest.script_pubkey(),
                blockheight: None,
                listed: true,
                reserved_to: None,
                spent_by: None,
            });
        }
        self.mempool.insert(txid, Pending { tx: tx.clone(), fee_sat: fee });
        Ok(json!({"tx": bitcoin::consensus::encode::serialize_hex(&tx), "txid": txid.to_string(), "psbt": ""}))
    }

    /// A block at `height`: incoming deposits and our broadcasts are mined.
    pub fn on_block(&mut self, height: u32) {
        if !self.hold_fundings {
            for op in std::mem::take(&mut self.changes) {
                if let Some(c) = self.coins.iter_mut().find(|c| c.outpoint == op) {
                    c.blockheight = Some(height);
                }
            }
        }
        for op in std::mem::take(&mut self.incoming) {
            if let Some(c) = self.coins.iter_mut().find(|c| c.outpoint == op) {
                c.blockheight = Some(height);
                c.listed = true;
            }
        }
        if self.hold_mempool {
            return;
        }
        for (txid, p) in std::mem::take(&mut self.mempool) {
            let spent: Vec<OutPoint> = p.tx.input.iter().map(|i| i.previous_output).collect();
            self.coins.retain(|c| !spent.contains(&c.outpoint));
            for c in self.coins.iter_mut().filter(|c| c.outpoint.txid == txid) {
                c.blockheight = Some(height);
            }
            self.mined.insert(txid, (p.tx, height));
        }
    }

    /// Blocks above `height` are gone: deposits in them go back to unconfirmed, still
    /// listed (`onchain/03-reorg`); they are mined again only if `remine`.
    pub fn reorg_above(&mut self, height: u32, remine: bool) {
        for c in self.coins.iter_mut() {
            if c.blockheight.is_some_and(|h| h > height) {
                c.blockheight = None;
                if remine {
                    self.incoming.push(c.outpoint);
                }
            }
        }
    }

    /// Mine `op` again in the next block (after a reorg took it out).
    pub fn remine(&mut self, op: OutPoint) {
        self.incoming.push(op);
    }

    pub fn coin(&self, op: &OutPoint) -> Option<&Coin> {
        self.coins.iter().find(|c| c.outpoint == *op)
    }

    /// The rows `listfunds` adds for this wallet.
    pub fn listfunds_rows(&self, height: u32) -> Vec<Value> {
        self.coins
            .iter()
            .filter(|c| c.listed)
            .map(|c| {
                let mut o = json!({
                    "txid": c.outpoint.txid.to_string(),
                    "output": c.outpoint.vout,
                    "amount_msat": c.amount_sat * 1000,
                    "scriptpubkey": c.script.to_hex_string(),
                    "address": c.address,
                    "status": if c.blockheight.is_some() { "confirmed" } else { "unconfirmed" },
                    "reserved": c.reserved_to.is_some_and(|r| r > height),
                });
                if let Some(h) = c.blockheight {
                    o["blockheight"] = json!(h);
                }
                if let Some(r) = c.reserved_to.filter(|r| *r > height) {
                    o["reserved_to_block"] = json!(r);
                }
                o
            })
            .collect()
    }

    fn inputs_of(psbt: &Value) -> Result<Vec<OutPoint>, Value> {
        let p = psbt
            .as_str()
            .and_then(|s| Psbt::from_str(s).ok())
            .ok_or_else(|| err(-32602, "psbt: should be a PSBT: invalid token"))?;
        Ok(p.unsigned_tx.input.iter().map(|i| i.previous_output).collect())
    }

    /// `reserveinputs` (rpc/reserveinputs.*).
    pub fn reserve(&mut self, params: &Value, height: u32) -> Result<Value, Value> {
        let ops = Self::inputs_of(&params["psbt"])?;
        let exclusive = params["exclusive"].as_bool().unwrap_or(true);
        let blocks = params["reserve"].as_u64().unwrap_or(72) as u32;
        let mut rows = vec![];
        for op in &ops {
            let Some(c) = self.coins.iter_mut().find(|c| c.outpoint == *op && c.listed) else {
                return Err(err(-32602, format!("Unknown UTXO {}:{}", op.txid, op.vout)));
            };
            let was = c.reserved_to.is_some_and(|r| r > height);
            if was && exclusive {
                return Err(err(-32602, format!("{}:{} already reserved", op.txid, op.vout)));
            }
            let to = c.reserved_to.filter(|_| was).unwrap_or(height) + blocks;
            c.reserved_to = Some(to);
            rows.push(json!({"txid": op.txid.to_string(), "vout": op.vout, "was_reserved": was,
                "reserved": true, "reserved_to_block": to}));
        }
        Ok(json!({ "reservations": rows }))
    }

    /// `unreserveinputs` (rpc/unreserveinputs.*).
    pub fn unreserve(&mut self, params: &Value, height: u32) -> Result<Value, Value> {
        let ops = Self::inputs_of(&params["psbt"])?;
        let blocks = params["reserve"].as_u64().unwrap_or(72) as u32;
        let mut rows = vec![];
        for op in &ops {
            if let Some(c) = self.coins.iter_mut().find(|c| c.outpoint == *op)
                && let Some(r) = c.reserved_to.filter(|r| *r > height)
            {
                let left = r.saturating_sub(blocks);
                c.reserved_to = (left > height).then_some(left);
                rows.push(json!({"txid": op.txid.to_string(), "vout": op.vout, "was_reserved": true,
                    "reserved": c.reserved_to.is_some()}));
            }
        }
        Ok(json!({ "reservations": rows }))
    }

    /// `utxopsbt satoshi=all` (recipe A of the recordings).
    pub fn utxopsbt(&mut self, params: &Value, height: u32) -> Result<Value, Value> {
        let feerate = feerate_perkw(params.get("feerate"))?;
        let startweight = params["startweight"].as_u64().unwrap_or(0);
        let reservedok = params["reservedok"].as_bool().unwrap_or(false);
        let mut coins = vec![];
        for u in params["utxos"].as_array().into_iter().flatten() {
            let op = u.as_str().and_then(parse_outpoint).ok_or_else(|| err(-32602, "utxos: bad outpoint"))?;
            let Some(c) = self.coins.iter().find(|c| c.outpoint == op && c.listed) else {
                return Err(err(-32602, format!("Unknown UTXO {}:{}", op.txid, op.vout)));
            };
            if !reservedok && c.reserved_to.is_some_and(|r| r > height) {
                return Err(err(-32602, format!("UTXO {}:{} already reserved", op.txid, op.vout)));
            }
            coins.push(c.clone());
        }
        let total: u64 = coins.iter().map(|c| c.amount_sat).sum();
        // `satoshi`: "all", or an amount with the excess as change (excess_as_change).
        let amount = match &params["satoshi"] {
            Value::String(s) if s == "all" => None,
            v => Some(v.as_u64().ok_or_else(|| err(-32602, "satoshi: should be a satoshi amount"))?),
        };
        let change = amount.is_some() && params["excess_as_change"].as_bool().unwrap_or(false);
        let weight = startweight + INPUT_WEIGHT * coins.len() as u64 + if change { 172 } else { 0 };
        let fee = (weight * feerate).div_ceil(1000);
        if total <= fee + amount.unwrap_or(0) {
            return Err(err(
                301,
                format!(
                    "Could not afford anything using UTXOs totalling {total}sat with weight {weight} at feerate {feerate}"
                ),
            ));
        }
        let tx = Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::from_height(height).unwrap_or(bitcoin::absolute::LockTime::ZERO),
            input: coins
                .iter()
                .map(|c| TxIn {
                    previous_output: c.outpoint,
                    sequence: bitcoin::Sequence::ENABLE_RBF_NO_LOCKTIME,
                    ..Default::default()
                })
                .collect(),
            output: if change {
                // Change to an address of the wallet (not tracked further here).
                let script = Address::p2wsh(&ScriptBuf::new(), Network::Regtest).script_pubkey();
                vec![TxOut { value: Amount::from_sat(total - fee - amount.unwrap_or(0)), script_pubkey: script }]
            } else {
                vec![]
            },
        };
        let mut psbt = Psbt::from_unsigned_tx(tx).map_err(|e| err(-1, e.to_string()))?;
        for (i, c) in coins.iter().enumerate() {
            psbt.inputs[i].witness_utxo =
                Some(TxOut { value: Amount::from_sat(c.amount_sat), script_pubkey: c.script.clone() });
        }
        for c in self.coins.iter_mut().filter(|c| coins.iter().any(|k| k.outpoint == c.outpoint)) {
            c.reserved_to = Some(c.reserved_to.filter(|r| *r > height).unwrap_or(height) + 72);
        }
        Ok(json!({
            "psbt": psbt.to_string(),
            "feerate_per_kw": feerate,
            "estimated_final_weight": weight,
            "excess_msat": if change { 0 } else { (total - fee - amount.unwrap_or(0)) * 1000 },
        }))
    }

    /// `addpsbtoutput` (rpc/addpsbtoutput.ok-rbf.json).
    pub fn addpsbtoutput(params: &Value) -> Result<Value, Value> {
        let mut psbt = params["initialpsbt"]
            .as_str()
            .and_then(|s| Psbt::from_str(s).ok())
            .ok_or_else(|| err(-32602, "initialpsbt: should be a PSBT"))?;
        let sat = params["satoshi"].as_u64().ok_or_else(|| err(-32602, "satoshi: should be a satoshi amount"))?;
        let dest = params["destination"]
            .as_str()
            .and_then(|a| Address::from_str(a).ok())
            .ok_or_else(|| err(-32602, "destination: should be a valid address"))?
            .assume_checked();
        psbt.unsigned_tx.output.push(TxOut { value: Amount::from_sat(sat), script_pubkey: dest.script_pubkey() });
        psbt.outputs.push(Default::default());
        let outnum = psbt.unsigned_tx.output.len() - 1;
        Ok(json!({"psbt": psbt.to_string(), "estimated_added_weight": 172, "outnum": outnum}))
    }

    /// `signpsbt`: every input is ours, so every input gets a witness.
    pub fn signpsbt(params: &Value) -> Result<Value, Value> {
        let mut psbt = params["psbt"]
            .as_str()
            .and_then(|s| Psbt::from_str(s).ok())
            .ok_or_else(|| err(-32602, "psbt: should be a PSBT"))?;
        for i in psbt.inputs.iter_mut() {
            i.final_script_witness = Some(Witness::from_slice(&[[0x5a; 64]]));
        }
        Ok(json!({"signed_psbt": psbt.to_string()}))
    }

    /// `sendpsbt`: into the mempool; a different transaction spending the same inputs
    /// replaces the old one only with a higher fee (BIP125, as bitcoind 27.1 did).
    pub fn sendpsbt(&mut self, params: &Value) -> Result<Value, Value> {
        let psbt = params["psbt"]
            .as_str()
            .and_then(|s| Psbt::from_str(s).ok())
            .ok_or_else(|| err(-32602, "psbt: should be a PSBT"))?;
        if psbt.inputs.iter().any(|i| i.final_script_witness.is_none()) {
            return Err(err(-32602, "psbt: not signed"));
        }
        let fee = psbt.inputs.iter().filter_map(|i| i.witness_utxo.as_ref()).map(|u| u.value.to_sat()).sum::<u64>()
            - psbt.unsigned_tx.output.iter().map(|o| o.value.to_sat()).sum::<u64>();
        let tx = psbt.extract_tx_unchecked_fee_rate();
        let txid = tx.compute_txid();
        if self.mempool.contains_key(&txid) {
            // bitcoind takes a transaction it already has as sent.
            return Ok(json!({"tx": bitcoin::consensus::encode::serialize_hex(&tx), "txid": txid.to_string()}));
        }
        if self.mined.contains_key(&txid) {
            return Err(err(
                -1,
                format!(
                    "Error broadcasting transaction: error code: -27\\nerror message:\\nTransaction already in block chain\\n. Unsent tx discarded {txid}"
                ),
            ));
        }
        let inputs: Vec<OutPoint> = tx.input.iter().map(|i| i.previous_output).collect();
        let conflicting: Vec<Txid> = self
            .mempool
            .iter()
            .filter(|(_, p)| p.tx.input.iter().any(|i| inputs.contains(&i.previous_output)))
            .map(|(t, _)| *t)
            .collect();
        for t in &conflicting {
            if self.mempool[t].fee_sat >= fee {
                return Err(err(
                    -1,
                    format!(
                        "Error broadcasting transaction: error code: -26\\nerror message:\\ninsufficient fee, rejecting replacement {txid}"
                    ),
                ));
            }
        }
        for t in conflicting {
            self.mempool.remove(&t);
        }
        for c in self.coins.iter_mut().filter(|c| inputs.contains(&c.outpoint)) {
            c.spent_by = Some(txid);
        }
        self.mempool.insert(txid, Pending { tx: tx.clone(), fee_sat: fee });
        Ok(json!({"tx": bitcoin::consensus::encode::serialize_hex(&tx), "txid": txid.to_string()}))
    }

    /// Every transaction of ours paying `address`, mined or not: (txid, sat, mined height).
    pub fn payments_to(&self, address: &str) -> Vec<(Txid, u64, Option<u32>)> {
        let Ok(script) = Address::from_str(address).map(|a| a.assume_checked().script_pubkey()) else { return vec![] };
        let pays = |tx: &Transaction| {
            tx.output.iter().filter(|o| o.script_pubkey == script).map(|o| o.value.to_sat()).sum::<u64>()
        };
        let mut out: Vec<(Txid, u64, Option<u32>)> =
            self.mempool.iter().filter(|(_, p)| pays(&p.tx) > 0).map(|(t, p)| (*t, pays(&p.tx), None)).collect();
        out.extend(self.mined.iter().filter(|(_, (tx, _))| pays(tx) > 0).map(|(t, (tx, h))| (*t, pays(tx), Some(*h))));
        out
    }
}
