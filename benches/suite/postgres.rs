//! 7. The same work with the order book in PostgreSQL (a real server the suite starts on
//!    loopback, as the tests do): create_order with 16 clients at once through the plugin,
//!    `get_order` in the store at 1M orders, and one block's chain pass. The SQLite rows of
//!    the same run are in sections 2, 4 and 6. Skipped, with the reason, without a server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cln_lsps1::clock::SystemClock;
use cln_lsps1::lifecycle::{Engine, LifecycleConfig};
use cln_lsps1::store::{InsertLimits, Store};
use serde_json::json;

use crate::common::{Stats, Table, env_num, peers, us};
use crate::p2p::unlimited;
use crate::standin::StandIn;

#[path = "../../tests/support/postgres.rs"]
mod pg;

/// `n` orders written server-side (one in ten awaiting payment, two failed, seven completed
/// with their channel), as the SQLite generator of section 4 writes them. The running-total
/// triggers are off while they land (only `get_order` reads this book).
fn generate(url: &str, n: usize) -> Duration {
    let store = Store::open_postgres(url, None).expect("store");
    let t = Instant::now();
    let sql = format!(
        "SET LOCAL session_replication_role = replica;
         INSERT INTO orders (order_id, created_at_ms, updated_at_ms, client_node_id, transport, lsp_balance_sat, \
         client_balance_sat, required_channel_confirmations, funding_confirms_within_blocks, channel_expiry_blocks, \
         token, announce_channel, phase, failure_reason, paid_method, fee_total_sat, order_total_sat, \
         funding_feerate_perkw, reserved_sat, expires_at_ms, token_null, held_at_ms, node_id) \
         SELECT lpad(to_hex(i), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(i), 12, '0'), \
           1750000000000 + i * 10, 1750000000000 + i * 10, 'peer' || (i % 256), 'p2p', 100000, 0, 0, 6, 1000, '', 0, \
           CASE WHEN i % 10 = 0 THEN 'awaiting_payment' WHEN i % 10 < 3 THEN 'failed' ELSE 'completed' END, \
           CASE WHEN i % 10 IN (1, 2) THEN 'payment_expired' END, CASE WHEN i % 10 > 2 THEN 'bolt11' END, \
           2000, 2000, 253, 0, 4000000000000000, 0, CASE WHEN i % 10 > 2 THEN 1750000000001 + i * 10 END, '' \
         FROM generate_series(0, {last}) AS i;
         INSERT INTO payments (order_id, method, expires_at_ms, fee_total_sat, order_total_sat, invoice, payment_hash, \
           preimage, payment_secret, min_final_cltv) \
         SELECT order_id, 'bolt11', expires_at_ms, 2000, 2000, 'lnbcrt20u1bench' || order_id, md5(order_id) || md5(order_id), \
           repeat('11', 32), repeat('22', 32), 144 FROM orders;
         INSERT INTO channels (order_id, channel_id, funding_txid, funding_outnum, funded_at_ms, expires_at_ms, lease_end_block) \
         SELECT order_id, md5(order_id) || md5(order_id), md5(order_id || 'tx') || md5(order_id), 0, created_at_ms + 2, \
           created_at_ms + 3600000, 1100 FROM orders WHERE phase = 'completed';
         ANALYZE;",
        last = n - 1
    );
    store.exec_batch_for_bench(&sql).expect("generate");
    t.elapsed()
}

pub async fn run(table: &mut Table) {
    println!("\n== 7. PostgreSQL (loopback): create_order, get_order at scale, one block's pass");
    let url = match pg::fresh_database() {
        Ok(u) => u,
        Err(why) => {
            println!("  SKIPPED: {why}");
            return;
        }
    };
    // The store's own part: new orders committed from 16 threads at once, no plugin.
    let alone = pg::fresh_database().expect("database");
    let st = tokio::task::spawn_blocking(move || {
        let store = Store::open_postgres(&alone, None).expect("store");
        let now = chrono::Utc::now().timestamp_millis();
        let limits = InsertLimits {
            fundable_sat: u64::MAX,
            max_unpaid_per_client: u64::MAX,
            max_unpaid_per_ip: 100,
            now_ms: now,
        };
        let start = Instant::now();
        let lat: Vec<Duration> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..16)
                .map(|t| {
                    let store = store.clone();
                    sc.spawn(move || {
                        (0..500)
                            .map(|k| {
                                let r = crate::orders::record(t * 10_000 + k, now);
                                let at = Instant::now();
                                store.insert_order(&r, limits).expect("insert");
                                at.elapsed()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("thread")).collect()
        });
        Stats::of(lat, start.elapsed())
    })
    .await
    .expect("store alone");
    table.add(
        "postgres",
        "  the store alone: new orders committed from 16 threads, PostgreSQL",
        format!("{:.0} orders/s, p50 {:.0} µs, p99 {:.0} µs", st.per_sec, us(st.p50), us(st.p99)),
    );

    // create_order through the plugin, 16 clients at once.
    let n = env_num("LSPS1_BENCH_ORDERS_N", 4_000);
    let s = Arc::new(unlimited(StandIn::builder()).option("lsps1-db", json!(url)).start().await);
    let ps = peers(n + 200);
    let _warm = crate::orders::create_many_with(&s, &ps[..200], 16, crate::orders::order_params(100_000)).await;
    let (st, _) = crate::orders::create_many_with(&s, &ps[200..], 16, crate::orders::order_params(100_000)).await;
    table
        .add(
            "postgres",
            "create_order, 16 at once, PostgreSQL",
            format!("{:.0} orders/s, p50 {:.0} µs, p99 {:.0} µs", st.per_sec, us(st.p50), us(st.p99)),
        )
        .goal("≥ 1,000 orders/s", st.per_sec >= 1000.0);
    if let Ok(s) = Arc::try_unwrap(s) {
        s.shutdown().await;
    }

    // get_order in the store at scale.
    let size = env_num("LSPS1_BENCH_PG_ORDERS", 1_000_000);
    let reads = env_num("LSPS1_BENCH_STORE_READS", 20_000);
    let big = pg::fresh_database().expect("database");
    let made = tokio::task::spawn_blocking({
        let big = big.clone();
        move || generate(&big, size)
    })
    .await
    .expect("generate");
    println!("  generated {size} orders in PostgreSQL in {:.1} s", made.as_secs_f64());
    let st = tokio::task::spawn_blocking(move || {
        let store = Store::open_postgres(&big, None).expect("store");
        let start = Instant::now();
        let mut lat = Vec::with_capacity(reads);
        for j in 0..reads {
            let i = j * 7919 % size;
            let id = format!("{i:08x}-0000-4000-8000-{i:012x}");
            let t = Instant::now();
            let o = store.read_order(&id).expect("read");
            lat.push(t.elapsed());
            assert!(o.is_some(), "{id}");
        }
        Stats::of(lat, start.elapsed())
    })
    .await
    .expect("reads");
    table
        .add(
            "postgres",
            format!("get_order in the store, {size} orders, PostgreSQL"),
            format!("p50 {:.0} µs, p99 {:.0} µs, {:.0}/s on one connection", us(st.p50), us(st.p99), st.per_sec),
        )
        .goal("p99 < 2 ms (at 1M)", st.p99 < Duration::from_millis(2));

    // One block's chain pass with the order book in PostgreSQL.
    let wallet = env_num("LSPS1_BENCH_WALLET_OUTPUTS", 100_000);
    let passes = env_num("LSPS1_BENCH_CHAIN_PASSES", 30);
    let orders = 10_000;
    let chain_url = pg::fresh_database().expect("database");
    let store = tokio::task::spawn_blocking(move || {
        let store = Store::open_postgres(&chain_url, None).expect("store");
        let now = chrono::Utc::now().timestamp_millis();
        let limits = InsertLimits {
            fundable_sat: u64::MAX,
            max_unpaid_per_client: u64::MAX,
            max_unpaid_per_ip: 100,
            now_ms: now,
        };
        for i in 0..orders {
            store.insert_order(&crate::chain::record(i, now), limits).expect("insert");
        }
        store
    })
    .await
    .expect("orders");
    let node = crate::chain::BenchNode { listfunds: crate::chain::listfunds(orders, wallet) };
    let engine = Engine::new(store, node, SystemClock, LifecycleConfig::default(), 1000, None);
    engine.on_block(1000, None).await;
    let mut lat: Vec<Duration> = Vec::with_capacity(passes);
    let start = Instant::now();
    for h in 1001..1001 + passes as u32 {
        let t = Instant::now();
        engine.on_block(h, Some(format!("{h:064x}"))).await;
        lat.push(t.elapsed());
    }
    let st = Stats::of(lat, start.elapsed());
    table
        .add(
            "postgres",
            format!("block_added pass, {orders} open orders, {wallet} outputs, PostgreSQL"),
            format!("p50 {:.1} ms, p99 {:.1} ms", us(st.p50) / 1000.0, us(st.p99) / 1000.0),
        )
        .goal("p99 < 50 ms", st.p99 < Duration::from_millis(50));
}
