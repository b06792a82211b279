//! Section 6, on-chain payments: the plugin's work for one `block_added` (the chain pass: read the
//! wallet, record outputs at orders' addresses, reserve, decide per order) with 1k and 10k
//! open on-chain orders over a wallet of 100k outputs. In process, over the real store and
//! the real engine; `listfunds` is answered from a JSON text of the wallet, parsed each pass
//! as the plugin parses lightningd's answer, so its parse is in the figure. lightningd's own
//! time to produce `listfunds` is not.

use std::time::{Duration, Instant};

use cln_lsps1::cln::wallet::parse_wallet_outputs;
use cln_lsps1::clock::SystemClock;
use cln_lsps1::lifecycle::{Engine, LifecycleConfig};
use cln_lsps1::ports::{
    ChannelApi, FeeEstimates, NodeApi, NodeError, NodeHtlc, OpenRequest, OpenedChannel, PeerChannel, WalletApi,
    WalletFunds, WalletOutput,
};
use cln_lsps1::store::{InsertLimits, OnchainRecord, OrderRecord, Store};
use serde_json::json;

use crate::common::{Stats, Table, env_num, us};

/// A node whose only live part is its wallet.
pub(crate) struct BenchNode {
    pub(crate) listfunds: String,
}

fn no(method: &'static str) -> NodeError {
    NodeError::new(method, Some(-1), "not in this benchmark")
}

impl WalletApi for BenchNode {
    async fn wallet_outputs(&self) -> Result<Vec<WalletOutput>, NodeError> {
        let v: serde_json::Value = serde_json::from_str(&self.listfunds).map_err(|e| no_msg(e.to_string()))?;
        parse_wallet_outputs(&v)
    }
    async fn reserve_outputs(&self, _o: Vec<(String, u32)>, _b: u32) -> Result<(), NodeError> {
        Ok(())
    }
}

fn no_msg(m: String) -> NodeError {
    NodeError::new("listfunds", None, m)
}

impl NodeApi for BenchNode {
    async fn send_custom_message(&self, _p: bitcoin::secp256k1::PublicKey, _m: String) -> Result<(), NodeError> {
        Err(no("sendcustommsg"))
    }
    async fn sign_invoice(&self, _i: String) -> Result<String, NodeError> {
        Err(no("signinvoice"))
    }
    async fn peer_features(&self, _p: bitcoin::secp256k1::PublicKey) -> Result<Option<String>, NodeError> {
        Ok(None)
    }
    async fn fee_estimates(&self) -> Result<FeeEstimates, NodeError> {
        Ok(FeeEstimates { estimates: vec![(6, 2_500)], floor_perkw: 253, ..FeeEstimates::default() })
    }
    async fn wallet_funds(&self) -> Result<WalletFunds, NodeError> {
        Ok(WalletFunds { confirmed_sat: 0 })
    }
}

impl ChannelApi for BenchNode {
    async fn fund_channel(&self, _r: OpenRequest) -> Result<OpenedChannel, NodeError> {
        Err(no("fundchannel"))
    }
    async fn connect(&self, _p: bitcoin::secp256k1::PublicKey) -> Result<(), NodeError> {
        Err(no("connect"))
    }
    async fn peer_connected(&self, _p: bitcoin::secp256k1::PublicKey) -> Result<bool, NodeError> {
        Ok(false)
    }
    async fn peer_channels(&self, _p: bitcoin::secp256k1::PublicKey) -> Result<Vec<PeerChannel>, NodeError> {
        Ok(vec![])
    }
    async fn list_htlcs(&self) -> Result<Vec<NodeHtlc>, NodeError> {
        Ok(vec![])
    }
    async fn block_height(&self) -> Result<u32, NodeError> {
        Ok(1000)
    }
}

fn address(i: usize) -> String {
    format!("bcrt1p{i:058}")
}

/// An unpaid order (the order benchmark's) with an on-chain option at `address(i)`.
pub(crate) fn record(i: usize, now: i64) -> OrderRecord {
    OrderRecord {
        refund_onchain_address: Some("bcrt1qjefm5vg3pshke552apccaxf92rkku89ucyj4hd".into()),
        required_channel_confirmations: 1,
        expires_at_ms: now + 86_400_000,
        onchain: Some(OnchainRecord {
            address: address(i),
            expires_at_ms: now + 86_400_000,
            fee_total_sat: 61_000,
            order_total_sat: 61_000,
            min_confirmations: 1,
            surplus_sat: 0,
        }),
        ..crate::orders::record(i, now)
    }
}

/// `listfunds` of a wallet of `wallet` outputs, one output (paid short) at every tenth
/// order's address, the rest the LSP's own.
pub(crate) fn listfunds(orders: usize, wallet: usize) -> String {
    let mut outs = Vec::with_capacity(wallet);
    for i in 0..wallet {
        let (addr, sat) =
            if i < orders && i % 10 == 0 { (address(i), 30_000) } else { (format!("bcrt1q{i:038}"), 100_000) };
        outs.push(json!({
            "txid": format!("{i:064x}"), "output": 0, "amount_msat": sat * 1000,
            "scriptpubkey": "5120".to_string() + &"ab".repeat(32), "address": addr,
            "status": "confirmed", "blockheight": 900, "reserved": false,
        }));
    }
    json!({"outputs": outs, "channels": []}).to_string()
}

/// create_order with the on-chain option on: every order also gets an address (`newaddr`).
async fn create_onchain(table: &mut Table) {
    let n = env_num("LSPS1_BENCH_ORDERS_N", 4_000);
    let s = std::sync::Arc::new(
        crate::p2p::unlimited(crate::standin::StandIn::builder())
            .option("lsps1-onchain-payments", json!(true))
            .option("lsps1-min-onchain-payment-size-sat", json!(1_000))
            .start()
            .await,
    );
    let ps = crate::common::peers(n + 200);
    let mut params = crate::orders::order_params(100_000);
    params["refund_onchain_address"] = json!("bcrt1qjefm5vg3pshke552apccaxf92rkku89ucyj4hd");
    let _warm = crate::orders::create_many_with(&s, &ps[..200], 16, params.clone()).await;
    let (st, orders) = crate::orders::create_many_with(&s, &ps[200..], 16, params).await;
    assert!(orders.iter().all(|o| o["result"]["payment"]["onchain"]["address"].is_string()), "on-chain option");
    table
        .add(
            "chain",
            "create_order with the on-chain option, 16 at once",
            format!("{:.0} orders/s, p50 {:.0} µs, p99 {:.0} µs", st.per_sec, us(st.p50), us(st.p99)),
        )
        .goal("≥ 1,000 orders/s", st.per_sec >= 1000.0);
    if let Ok(s) = std::sync::Arc::try_unwrap(s) {
        s.shutdown().await;
    }
}

pub async fn run(table: &mut Table) {
    create_onchain(table).await;
    let wallet = env_num("LSPS1_BENCH_WALLET_OUTPUTS", 100_000);
    let passes = env_num("LSPS1_BENCH_CHAIN_PASSES", 30);
    println!("\n== 6. On-chain: one block's chain pass ({wallet} wallet outputs, {passes} passes per row)");
    for orders in [1_000usize, 10_000] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        let store = Store::open(&dir.path().join("chain.sqlite3")).expect("store");
        let now = chrono::Utc::now().timestamp_millis();
        let limits = InsertLimits {
            fundable_sat: u64::MAX,
            max_unpaid_per_client: u64::MAX,
            max_unpaid_per_ip: 100,
            now_ms: now,
        };
        for i in 0..orders {
            store.insert_order(&record(i, now), limits).expect("insert");
        }
        let text = listfunds(orders, wallet);
        // What reading lightningd's answer alone costs: parse the text, pick the fields.
        let mut parse: Vec<Duration> = Vec::with_capacity(passes);
        for _ in 0..passes.min(10) {
            let t = Instant::now();
            let v: serde_json::Value = serde_json::from_str(&text).expect("json");
            let outs = parse_wallet_outputs(&v).expect("outputs");
            std::hint::black_box(outs);
            parse.push(t.elapsed());
        }
        let parse = Stats::of(parse, Duration::from_secs(1));
        table.add(
            "chain",
            format!("listfunds answer parsed alone, {wallet} outputs ({:.1} MB)", text.len() as f64 / 1e6),
            format!("p50 {:.1} ms", us(parse.p50) / 1000.0),
        );
        let node = BenchNode { listfunds: text };
        let engine = Engine::new(store, node, SystemClock, LifecycleConfig::default(), 1000, None);
        let t = Instant::now();
        engine.on_block(1000, None).await;
        let first = t.elapsed();
        let mut lat: Vec<Duration> = Vec::with_capacity(passes);
        let start = Instant::now();
        for h in 1001..1001 + passes as u32 {
            let t = Instant::now();
            engine.on_block(h, Some(format!("{h:064x}"))).await;
            lat.push(t.elapsed());
        }
        let st = Stats::of(lat, start.elapsed());
        table.add(
            "chain",
            format!("first pass, {orders} orders ({} paid short), {wallet} outputs", orders / 10),
            format!("{:.1} ms", us(first) / 1000.0),
        );
        table
            .add(
                "chain",
                format!("block_added pass, {orders} open orders, {wallet} outputs"),
                format!("p50 {:.1} ms, p99 {:.1} ms", us(st.p50) / 1000.0, us(st.p99) / 1000.0),
            )
            .goal("p99 < 50 ms", st.p99 < Duration::from_millis(50));
    }
}
