//! "chain model test": random histories of on-chain payments against the real engine
//! ([`cln_lsps1::lifecycle::Engine`]) and store, over a fake chain and wallet that behave as
//! the recordings show (`tests/fixtures/cln-v26.06.6/onchain/`): a payment is invisible until
//! mined; a reorg leaves it listed, unconfirmed; a spend of ours leaves its inputs listed until
//! it is mined; a replacement must pay more; a spent output cannot be spent again.
//!
//! proptest draws up to 30 operations over three on-chain orders: payments (exact, short,
//! over, dust, split in two, twice), blocks, reorgs of 1–2 blocks, cancels, the client coming
//! and going, and restarts of the plugin (its runtime dropped with every task, a new engine
//! on the same store file: `reconcile_at_start`, `resume`, `chain_pass`).
//!
//! # Invariants
//! After every operation: no order's refunds mined add up to more than the coins that reached
//! its address (nothing is paid twice), mined refunds pay only the order's refund address, and
//! `fundchannel` is called at most once per order. At the end, with the client connected and
//! 40 more blocks: every order that failed has had every coin that reached it refunded (less
//! fees) or kept as dust; an order that completed was paid at least its total on-chain.
//!
//! `LSPS1_CHAIN_MODEL_CASES=N` for longer runs (default 24).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::PublicKey;
use cln_lsps1::clock::SystemClock;
use cln_lsps1::lifecycle::{Engine, LifecycleConfig};
use cln_lsps1::order::{Phase, Transport};
use cln_lsps1::ports::{
    ChannelApi, FeeEstimates, NodeApi, NodeError, NodeHtlc, OpenRequest, OpenedChannel, PeerChannel, SignedRefund,
    WalletApi, WalletFunds, WalletOutput,
};
use cln_lsps1::store::{Bolt11Record, InsertLimits, OnchainRecord, OrderRecord, Store};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

const ORDERS: usize = 3;
const TOTAL: u64 = 60_000;
const REFUND_TO: &str = "bcrt1qjefm5vg3pshke552apccaxf92rkku89ucyj4hd";

#[derive(Debug, Clone)]
struct Coin {
    txid: String,
    amount: u64,
    order: usize,
    /// Not mined yet: lightningd does not list it.
    fresh: bool,
    height: Option<u32>,
    reserved_to: u32,
    spent: bool,
}

#[derive(Debug, Clone)]
struct Tx {
    inputs: Vec<String>,
    amount: u64,
    fee: u64,
    dest: String,
    order: Option<usize>,
    height: Option<u32>,
}

#[derive(Default)]
struct World {
    tip: u32,
    fork: u32,
    coins: Vec<Coin>,
    next: u32,
    signed: HashMap<String, (String, Tx)>,
    txs: HashMap<String, Tx>,
    funds: HashMap<String, u32>,
    channels: Vec<PeerChannel>,
    connected: bool,
}

impl World {
    fn outpoint(c: &Coin) -> String {
        format!("{}:0", c.txid)
    }

    fn order_of(&self, op: &str) -> Option<usize> {
        self.coins.iter().find(|c| Self::outpoint(c) == op).map(|c| c.order)
    }
}

#[derive(Clone)]
struct Fake(Arc<Mutex<World>>);

fn err(m: &'static str, msg: &str) -> NodeError {
    NodeError::new(m, Some(-1), msg)
}

fn address(k: usize) -> String {
    format!("bcrt1p{k:058}")
}

impl Fake {
    fn sign(
        &self,
        ops: Vec<(String, u32)>,
        dest: String,
        rate: u32,
        amount: Option<u64>,
    ) -> Result<Option<SignedRefund>, NodeError> {
        let mut w = self.0.lock().unwrap();
        let keys: Vec<String> = ops.iter().map(|(t, v)| format!("{t}:{v}")).collect();
        let mut total = 0;
        for k in &keys {
            let Some(c) = w.coins.iter().find(|c| World::outpoint(c) == *k && !c.fresh && !c.spent) else {
                return Err(err("utxopsbt", "Unknown UTXO"));
            };
            total += c.amount;
        }
        let weight = 42 + 273 * keys.len() as u64 + 4 * 31 + if amount.is_some() { 172 } else { 0 };
        let fee = (weight * u64::from(rate)).div_ceil(1000);
        let send = match amount {
            Some(a) if a + fee <= total => a,
            Some(_) => return Ok(None),
            None if total > fee + 546 => total - fee,
            None => return Ok(None),
        };
        w.next += 1;
        let txid = sha256::Hash::hash(format!("refund-{}-{rate}-{}", keys.join(","), w.next).as_bytes()).to_string();
        let order = w.order_of(&keys[0]);
        let tx = Tx { inputs: keys, amount: send, fee, dest, order, height: None };
        let psbt = format!("psbt-{txid}");
        w.signed.insert(psbt.clone(), (txid.clone(), tx));
        Ok(Some(SignedRefund { txid, psbt, amount_sat: send, fee_sat: fee }))
    }
}

impl WalletApi for Fake {
    async fn wallet_outputs(&self) -> Result<Vec<WalletOutput>, NodeError> {
        let w = self.0.lock().unwrap();
        Ok(w.coins
            .iter()
            .filter(|c| !c.fresh && !c.spent)
            .map(|c| WalletOutput {
                txid: c.txid.clone(),
                vout: 0,
                amount_sat: c.amount,
                address: Some(address(c.order)),
                blockheight: c.height,
                reserved: c.reserved_to > w.tip,
                reserved_to_block: (c.reserved_to > w.tip).then_some(c.reserved_to),
            })
            .collect())
    }

    async fn reserve_outputs(&self, ops: Vec<(String, u32)>, blocks: u32) -> Result<(), NodeError> {
        let mut w = self.0.lock().unwrap();
        let tip = w.tip;
        for c in w.coins.iter_mut().filter(|c| ops.iter().any(|(t, _)| *t == c.txid)) {
            c.reserved_to = tip + blocks;
        }
        Ok(())
    }

    async fn unreserve_outputs(&self, ops: Vec<(String, u32)>) -> Result<(), NodeError> {
        let mut w = self.0.lock().unwrap();
        for c in w.coins.iter_mut().filter(|c| ops.iter().any(|(t, _)| *t == c.txid)) {
            c.reserved_to = 0;
        }
        Ok(())
    }

    async fn sign_refund(
        &self,
        ops: Vec<(String, u32)>,
        dest: String,
        rate: u32,
    ) -> Result<Option<SignedRefund>, NodeError> {
        self.sign(ops, dest, rate, None)
    }

    async fn sign_partial_refund(
        &self,
        ops: Vec<(String, u32)>,
        dest: String,
        amount: u64,
        rate: u32,
    ) -> Result<Option<SignedRefund>, NodeError> {
        self.sign(ops, dest, rate, Some(amount))
    }

    async fn broadcast(&self, psbt: String) -> Result<String, NodeError> {
        let mut w = self.0.lock().unwrap();
        let (txid, tx) = w.signed.get(&psbt).cloned().ok_or_else(|| err("sendpsbt", "unknown psbt"))?;
        if let Some(known) = w.txs.get(&txid) {
            return if known.height.is_some() { Err(err("sendpsbt", "-27 already in block chain")) } else { Ok(txid) };
        }
        // Inputs spent by a mined transaction cannot be spent again.
        if tx.inputs.iter().any(|i| w.coins.iter().any(|c| World::outpoint(c) == *i && c.spent)) {
            return Err(err("sendpsbt", "bad-txns-inputs-missingorspent"));
        }
        let conflicts: Vec<String> = w
            .txs
            .iter()
            .filter(|(_, t)| t.height.is_none() && t.inputs.iter().any(|i| tx.inputs.contains(i)))
            .map(|(id, _)| id.clone())
            .collect();
        if conflicts.iter().any(|c| w.txs[c].fee >= tx.fee) {
            return Err(err("sendpsbt", "-26 insufficient fee, rejecting replacement"));
        }
        for c in conflicts {
            w.txs.remove(&c);
        }
        w.txs.insert(txid.clone(), tx);
        Ok(txid)
    }
}

impl NodeApi for Fake {
    async fn send_custom_message(&self, _p: PublicKey, _m: String) -> Result<(), NodeError> {
        Ok(())
    }
    async fn sign_invoice(&self, _i: String) -> Result<String, NodeError> {
        Err(err("signinvoice", "not here"))
    }
    async fn peer_features(&self, _p: PublicKey) -> Result<Option<String>, NodeError> {
        Ok(None)
    }
    async fn fee_estimates(&self) -> Result<FeeEstimates, NodeError> {
        Ok(FeeEstimates { estimates: vec![(2, 5_000), (6, 3_000)], floor_perkw: 253, ..FeeEstimates::default() })
    }
    async fn wallet_funds(&self) -> Result<WalletFunds, NodeError> {
        Ok(WalletFunds { confirmed_sat: 100_000_000 })
    }
}

impl ChannelApi for Fake {
    async fn fund_channel(&self, req: OpenRequest) -> Result<OpenedChannel, NodeError> {
        let mut w = self.0.lock().unwrap();
        *w.funds.entry(req.peer.to_string()).or_default() += 1;
        w.next += 1;
        let txid = sha256::Hash::hash(format!("funding-{}", w.next).as_bytes()).to_string();
        w.channels.push(PeerChannel {
            channel_id: Some(txid.clone()),
            funding_txid: Some(txid.clone()),
            funding_outnum: Some(0),
            opener_local: true,
            local_funds_msat: req.amount_sat * 1000,
            pushed_msat: 0,
            state: "CHANNELD_AWAITING_LOCKIN".into(),
            short_channel_id: None,
        });
        Ok(OpenedChannel { txid: txid.clone(), outnum: 0, channel_id: Some(txid) })
    }
    async fn connect(&self, _p: PublicKey) -> Result<(), NodeError> {
        Ok(())
    }
    async fn peer_connected(&self, _p: PublicKey) -> Result<bool, NodeError> {
        Ok(self.0.lock().unwrap().connected)
    }
    async fn peer_channels(&self, _p: PublicKey) -> Result<Vec<PeerChannel>, NodeError> {
        Ok(self.0.lock().unwrap().channels.clone())
    }
    async fn list_htlcs(&self) -> Result<Vec<NodeHtlc>, NodeError> {
        Ok(vec![])
    }
    async fn block_height(&self) -> Result<u32, NodeError> {
        Ok(self.0.lock().unwrap().tip)
    }
}

fn client(k: usize) -> PublicKey {
    let sk = bitcoin::secp256k1::SecretKey::from_slice(&[k as u8 + 1; 32]).unwrap();
    PublicKey::from_secret_key(&bitcoin::secp256k1::Secp256k1::new(), &sk)
}

fn order(k: usize, now: i64) -> OrderRecord {
    OrderRecord {
        order_id: format!("order-{k}"),
        created_at_ms: now,
        updated_at_ms: now,
        client_node_id: client(k).to_string(),
        transport: Transport::P2p,
        lsp_balance_sat: 100_000,
        client_balance_sat: 0,
        required_channel_confirmations: 1,
        funding_confirms_within_blocks: 6,
        channel_expiry_blocks: 1000,
        token: Some(String::new()),
        refund_onchain_address: Some(REFUND_TO.into()),
        announce_channel: false,
        client_info: None,
        phase: Phase::AwaitingPayment,
        held_at_ms: None,
        refunded_after_open: false,
        failure_reason: None,
        fee_total_sat: TOTAL - 1_000,
        order_total_sat: TOTAL - 1_000,
        funding_feerate_perkw: 3_000,
        reserved_sat: 102_000,
        expires_at_ms: now + 86_400_000,
        paid_method: None,
        bolt11: Some(Bolt11Record {
            invoice: format!("lnbcrt-{k}"),
            payment_hash: format!("{k:064x}"),
            preimage: "11".repeat(32),
            payment_secret: "22".repeat(32),
            expires_at_ms: now + 3_600_000,
            min_final_cltv: 144,
            fee_total_sat: TOTAL - 1_000,
            order_total_sat: TOTAL - 1_000,
        }),
        onchain: Some(OnchainRecord {
            address: address(k),
            expires_at_ms: now + 86_400_000,
            fee_total_sat: TOTAL,
            order_total_sat: TOTAL,
            min_confirmations: 1,
            surplus_sat: 0,
        }),
        channel: None,
        reorg_flagged: false,
        node_id: None,
        client_ip: None,
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A payment of this many sat to order k's address (into the mempool).
    Pay(usize, u64),
    Mine,
    Reorg(u32),
    Cancel(usize),
    Connect(bool),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..ORDERS, prop_oneof![Just(TOTAL), Just(TOTAL - 5_000), Just(TOTAL + 20_000), Just(700u64), Just(TOTAL / 2)])
            .prop_map(|(k, a)| Op::Pay(k, a)),
        4 => Just(Op::Mine),
        1 => (1u32..3).prop_map(Op::Reorg),
        1 => (0..ORDERS).prop_map(Op::Cancel),
        1 => any::<bool>().prop_map(Op::Connect),
        1 => Just(Op::Restart),
    ]
}

/// One plugin process: a runtime of its own and an engine on the store file.
struct Process {
    rt: tokio::runtime::Runtime,
    engine: Engine<Fake, SystemClock>,
}

fn start(path: &Path, fake: &Fake, tip: u32) -> Process {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store = Store::open(path).unwrap();
    let cfg = LifecycleConfig { poll: Duration::from_millis(10), ..LifecycleConfig::default() };
    let engine = Engine::new(store, fake.clone(), SystemClock, cfg, tip, None);
    rt.block_on(async {
        engine.reconcile_at_start().await.unwrap();
        engine.resume().await;
        engine.chain_pass().await;
    });
    Process { rt, engine }
}

fn mine(p: &Process, fake: &Fake, remine: bool) {
    let (tip, hash) = {
        let mut w = fake.0.lock().unwrap();
        w.tip += 1;
        let tip = w.tip;
        for c in w.coins.iter_mut() {
            if c.fresh || (remine && c.height.is_none() && !c.spent) {
                c.fresh = false;
                c.height = Some(tip);
            }
        }
        let pending: Vec<String> = w.txs.iter().filter(|(_, t)| t.height.is_none()).map(|(id, _)| id.clone()).collect();
        for id in pending {
            let inputs = w.txs[&id].inputs.clone();
            if inputs.iter().any(|i| w.coins.iter().any(|c| World::outpoint(c) == *i && c.spent)) {
                w.txs.remove(&id);
                continue;
            }
            for c in w.coins.iter_mut().filter(|c| inputs.contains(&World::outpoint(c))) {
                c.spent = true;
            }
            if let Some(t) = w.txs.get_mut(&id) {
                t.height = Some(tip);
            }
        }
        (tip, sha256::Hash::hash(format!("block-{tip}-{}", w.fork).as_bytes()).to_string())
    };
    p.rt.block_on(p.engine.on_block(tip, Some(hash)));
    settle(p);
}

fn settle(p: &Process) {
    p.rt.block_on(async { tokio::time::sleep(Duration::from_millis(30)).await });
}

fn check(fake: &Fake) -> Result<(), TestCaseError> {
    let w = fake.0.lock().unwrap();
    for (peer, n) in &w.funds {
        prop_assert!(*n <= 1, "two opens for {peer}");
    }
    for k in 0..ORDERS {
        let received: u64 = w.coins.iter().filter(|c| c.order == k && !c.fresh).map(|c| c.amount).sum();
        let mined: Vec<&Tx> = w.txs.values().filter(|t| t.order == Some(k) && t.height.is_some()).collect();
        let sent: u64 = mined.iter().map(|t| t.amount + t.fee).sum();
        prop_assert!(sent <= received, "order {k}: refunds of {sent} sat for {received} sat received");
        prop_assert!(mined.iter().all(|t| t.dest == REFUND_TO), "order {k}: a refund elsewhere");
    }
    Ok(())
}

fn run_case(ops: Vec<Op>, dir: &Path) -> Result<(), TestCaseError> {
    let path: PathBuf = dir.join("model.sqlite3");
    let _ = std::fs::remove_file(&path);
    let now = chrono::Utc::now().timestamp_millis();
    {
        let store = Store::open(&path).unwrap();
        let limits = InsertLimits {
            fundable_sat: u64::MAX / 4,
            max_unpaid_per_client: 100,
            max_unpaid_per_ip: 100,
            now_ms: now,
        };
        for k in 0..ORDERS {
            store.insert_order(&order(k, now), limits).unwrap();
        }
    }
    let fake = Fake(Arc::new(Mutex::new(World { tip: 100, ..World::default() })));
    let mut p = start(&path, &fake, 100);
    for op in ops {
        match op {
            Op::Pay(k, amount) => {
                let mut w = fake.0.lock().unwrap();
                w.next += 1;
                let txid = sha256::Hash::hash(format!("deposit-{}", w.next).as_bytes()).to_string();
                w.coins.push(Coin { txid, amount, order: k, fresh: true, height: None, reserved_to: 0, spent: false });
            }
            Op::Mine => mine(&p, &fake, true),
            Op::Reorg(depth) => {
                {
                    let mut w = fake.0.lock().unwrap();
                    let fork_at = w.tip.saturating_sub(depth);
                    w.tip = fork_at;
                    w.fork += 1;
                    for c in w.coins.iter_mut().filter(|c| c.height.is_some_and(|h| h > fork_at)) {
                        c.height = None;
                    }
                    let undone: Vec<String> = w
                        .txs
                        .iter()
                        .filter(|(_, t)| t.height.is_some_and(|h| h > fork_at))
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in undone {
                        let inputs = w.txs[&id].inputs.clone();
                        for c in w.coins.iter_mut().filter(|c| inputs.contains(&World::outpoint(c))) {
                            c.spent = false;
                        }
                        if let Some(t) = w.txs.get_mut(&id) {
                            t.height = None;
                        }
                    }
                }
                // The replacing blocks come without the reorged payments, then they are
                // mined again.
                for _ in 0..depth {
                    mine(&p, &fake, false);
                }
                mine(&p, &fake, true);
            }
            Op::Cancel(k) => {
                let _ = p.rt.block_on(p.engine.cancel(&format!("order-{k}")));
                settle(&p);
            }
            Op::Connect(c) => {
                fake.0.lock().unwrap().connected = c;
                p.engine.peer_connected(client(0));
                settle(&p);
            }
            Op::Restart => {
                let tip = fake.0.lock().unwrap().tip;
                let Process { rt, engine } = p;
                drop(engine);
                rt.shutdown_background();
                p = start(&path, &fake, tip);
            }
        }
        check(&fake)?;
    }
    // The end: the client is there, blocks come, everything settles.
    fake.0.lock().unwrap().connected = true;
    p.engine.peer_connected(client(0));
    for _ in 0..40 {
        mine(&p, &fake, true);
    }
    check(&fake)?;
    let store = p.engine.store().clone();
    let w = fake.0.lock().unwrap();
    for k in 0..ORDERS {
        let o = store.get_order(&format!("order-{k}")).unwrap().unwrap();
        let outs = store.chain_outputs(&o.order_id).unwrap();
        let received: u64 = w.coins.iter().filter(|c| c.order == k && !c.fresh).map(|c| c.amount).sum();
        match o.phase {
            Phase::Failed => {
                for out in &outs {
                    prop_assert!(
                        matches!(out.role.as_str(), "refunded" | "dust"),
                        "order {k} failed but output {} is {}",
                        out.outpoint,
                        out.role.as_str()
                    );
                }
            }
            Phase::Completed => {
                let paid: u64 = outs.iter().filter(|x| x.role.as_str() == "kept").map(|x| x.amount_sat).sum();
                prop_assert!(
                    paid >= TOTAL || o.paid_method != Some(cln_lsps1::order::PaymentMethod::Onchain),
                    "order {k} completed on {paid} sat"
                );
                for out in outs.iter().filter(|x| x.role.as_str() == "seen") {
                    prop_assert!(out.blockheight.is_none(), "order {k}: output {} left unrefunded", out.outpoint);
                }
            }
            // Paid orders open: with the client there and 40 blocks, none is left in between.
            Phase::PaymentHeld | Phase::Opening => {
                prop_assert!(false, "order {k} still {:?} at the end: {outs:?}", o.phase)
            }
            Phase::AwaitingPayment => prop_assert!(
                received < TOTAL || outs.iter().any(|x| x.blockheight.is_none()),
                "order {k} waits although {received} sat reached it: {outs:?}; events {:?}",
                store
                    .events(&o.order_id)
                    .unwrap()
                    .iter()
                    .map(|e| (e.kind.clone(), e.detail.clone()))
                    .collect::<Vec<_>>()
            ),
        }
    }
    drop(w);
    p.rt.shutdown_background();
    Ok(())
}

#[test]
fn chain_model() {
    let cases = std::env::var("LSPS1_CHAIN_MODEL_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(24);
    let dir = tempfile::tempdir().unwrap();
    let mut runner = TestRunner::new(ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() });
    let result = runner.run(&proptest::collection::vec(op(), 1..30), |ops| run_case(ops, dir.path()));
    if let Err(e) = result {
        panic!("{e}");
    }
}
