//! 4. Scale of the store: `get_order` (in the store alone, and through the plugin over P2P)
//!    and `lsps1-listorders` with filters at 10k, 100k and 1M generated orders, and the
//!    plugin's memory: idle on an empty store, idle on each generated store, after load.
//!    Generated stores are kept in `target/bench-store/` and reused by later runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::secp256k1::PublicKey;
use cln_lsps1::store::Store;
use serde_json::json;

use crate::common::{Stats, Table, env_num, peers, rss_kib, us};
use crate::p2p::{ask, unlimited};
use crate::standin::{StandIn, req};

const BASE_MS: i64 = 1_750_000_000_000;

fn order_id(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i, i)
}

/// A store of `n` orders from `peers` (one in ten awaiting payment, two failed, seven
/// completed with their channel), built once.
fn generate(n: usize, peers: &[PublicKey]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-store");
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(format!("orders-v5-{n}.sqlite3"));
    let done = dir.join(format!("orders-v5-{n}.done"));
    if done.exists() && path.exists() {
        return path;
    }
    let _ = std::fs::remove_file(&path);
    let t = Instant::now();
    // Written at schema v4 and migrated by `Store::open` below, as an operator's store is
    // on upgrade: the running totals of v5 come from the migration's backfill.
    let mut c = rusqlite::Connection::open(&path).expect("open");
    for step in &cln_lsps1::store::schema::MIGRATIONS[..4] {
        c.execute_batch(step).expect("schema");
    }
    c.pragma_update(None, "user_version", 4).expect("version");
    c.execute_batch("PRAGMA synchronous = OFF;").expect("pragma");
    let tx = c.transaction().expect("tx");
    {
        let mut order = tx
            .prepare(
                "INSERT INTO orders (order_id, created_at_ms, updated_at_ms, client_node_id, transport, lsp_balance_sat, \
                 client_balance_sat, required_channel_confirmations, funding_confirms_within_blocks, channel_expiry_blocks, \
                 token, refund_onchain_address, announce_channel, client_info, phase, failure_reason, paid_method, \
                 fee_total_sat, order_total_sat, funding_feerate_perkw, reserved_sat, expires_at_ms, token_null, held_at_ms) \
                 VALUES (?1, ?2, ?2, ?3, 'p2p', 100000, 0, 0, 6, 1000, '', NULL, 0, NULL, ?4, ?5, ?6, 2000, 2000, 253, 0, ?7, 0, ?8)",
            )
            .expect("prepare");
        let mut pay = tx
            .prepare(
                "INSERT INTO payments (order_id, method, expires_at_ms, fee_total_sat, order_total_sat, invoice, \
                 payment_hash, preimage, payment_secret, min_final_cltv) VALUES (?1, 'bolt11', ?2, 2000, 2000, ?3, ?4, ?5, ?6, 144)",
            )
            .expect("prepare");
        // The event that ended each order (the v5 migration reads the log for the day).
        let mut event = tx
            .prepare(
                "INSERT INTO events (order_id, at_ms, kind, from_phase, to_phase) VALUES (?1, ?2, 'transition', ?3, ?4)",
            )
            .expect("prepare");
        let mut chan = tx
            .prepare(
                "INSERT INTO channels (order_id, channel_id, funding_txid, funding_outnum, funded_at_ms, expires_at_ms, \
                 lease_end_block) VALUES (?1, ?2, ?3, 0, ?4, ?5, 1100)",
            )
            .expect("prepare");
        for i in 0..n {
            let id = order_id(i);
            let created = BASE_MS + i as i64 * 10;
            let (phase, reason, paid) = match i % 10 {
                0 => ("awaiting_payment", None, None),
                1 | 2 => ("failed", Some("payment_expired"), None),
                _ => ("completed", None, Some("bolt11")),
            };
            // Unpaid orders stay unexpired, so housekeeping leaves the store as generated.
            let expires = if phase == "awaiting_payment" { i64::MAX / 2 } else { created + 3_600_000 };
            let client = peers[i % peers.len()].to_string();
            order
                .execute(rusqlite::params![
                    id,
                    created,
                    client,
                    phase,
                    reason,
                    paid,
                    expires,
                    paid.map(|_| created + 1)
                ])
                .expect("order");
            pay.execute(rusqlite::params![
                id,
                expires,
                format!("lnbcrt20u1bench{i}"),
                format!("{i:064x}"),
                "11".repeat(32),
                "22".repeat(32)
            ])
            .expect("payment");
            match phase {
                "completed" => event.execute(rusqlite::params![id, created + 2, "opening", phase]),
                "failed" => event.execute(rusqlite::params![id, created + 2, "awaiting_payment", phase]),
                _ => Ok(0),
            }
            .expect("event");
            if paid.is_some() {
                chan.execute(rusqlite::params![
                    id,
                    format!("{:064x}", i + 1),
                    format!("{:064x}", i + 7),
                    created + 2,
                    created + 3_600_000
                ])
                .expect("channel");
            }
        }
    }
    tx.commit().expect("commit");
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").expect("checkpoint");
    drop(c);
    let generated = t.elapsed();
    let m = Instant::now();
    drop(Store::open(&path).expect("migrate"));
    std::fs::write(&done, b"").expect("marker");
    println!(
        "  generated {n} orders in {:.1} s ({} MB); migrated to the latest schema in {:.1} s",
        generated.as_secs_f64(),
        std::fs::metadata(&path).map_or(0, |m| m.len() >> 20),
        m.elapsed().as_secs_f64()
    );
    path
}

/// `get_order` in the store alone, on the request path's read connection.
fn store_reads(path: &Path, n_orders: usize, reads: usize) -> Stats {
    let store = Store::open(path).expect("open");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut lat = Vec::with_capacity(reads);
    let start = Instant::now();
    for _ in 0..reads {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let id = order_id((x % n_orders as u64) as usize);
        let t = Instant::now();
        let o = store.read_order(&id).expect("read");
        lat.push(t.elapsed());
        assert!(o.is_some(), "{id}");
    }
    Stats::of(lat, start.elapsed())
}

/// One `GET path` with a rune, `Connection: close`; returns the status and the body's length.
async fn http_get(addr: std::net::SocketAddr, path: &str, rune: &str) -> (u16, usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nRune: {rune}\r\nConnection: close\r\n\r\n");
    c.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![];
    c.read_to_end(&mut buf).await.expect("read");
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(buf.len());
    let status = String::from_utf8_lossy(&buf[..end]).split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, buf.len().saturating_sub(end + 4))
}

/// The operator's figures at `n` orders: in the store alone, `lsps1-status` through the
/// plugin, and a `/metrics` scrape with its rune check.
async fn console_rows(table: &mut Table, s: &StandIn, path: &Path, n: usize, addr: std::net::SocketAddr) {
    const RUNS: usize = 200;
    let store = Store::open(path).expect("open");
    let (now, height) = (BASE_MS + n as i64 * 10, 1_000);
    let figures = tokio::task::spawn_blocking(move || {
        let mut lat = vec![];
        for _ in 0..RUNS {
            let t = Instant::now();
            store.status_figures(now, height, 90).expect("figures");
            lat.push(t.elapsed());
        }
        Stats::of(lat, Duration::from_secs(1))
    })
    .await
    .expect("figures");
    table.add(
        "console",
        format!("status figures in the store (90 days), {n} orders"),
        format!("p50 {:.2} ms, p99 {:.2} ms", us(figures.p50) / 1e3, us(figures.p99) / 1e3),
    );
    let mut lat = vec![];
    for _ in 0..RUNS {
        let t = Instant::now();
        let r = s.command("lsps1-status", json!({})).await.expect("lsps1-status");
        lat.push(t.elapsed());
        assert!(r["orders"]["total"].as_u64() == Some(n as u64), "{r}");
    }
    let st = Stats::of(lat, Duration::from_secs(1));
    table
        .add(
            "console",
            format!("lsps1-status, {n} orders"),
            format!("p50 {:.2} ms, p99 {:.2} ms", us(st.p50) / 1e3, us(st.p99) / 1e3),
        )
        .goal("p99 < 50 ms (at 1M)", st.p99 < Duration::from_millis(50));
    let rune = s.create_rune(json!([["method^lsps1-list", "method^lsps1-get", "method=lsps1-status"]]));
    let mut lat = vec![];
    let mut size = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        let (status, len) = http_get(addr, "/metrics", &rune).await;
        lat.push(t.elapsed());
        assert_eq!(status, 200);
        size = len;
    }
    let st = Stats::of(lat, Duration::from_secs(1));
    table
        .add(
            "console",
            format!("/metrics scrape with its rune check, {n} orders"),
            format!("p50 {:.2} ms, p99 {:.2} ms, {size} bytes", us(st.p50) / 1e3, us(st.p99) / 1e3),
        )
        .goal("p99 < 50 ms (at 1M)", st.p99 < Duration::from_millis(50));
}

async fn idle_rss(s: &StandIn) -> u64 {
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.plugin_pid().map_or(0, |p| rss_kib(p).0)
}

pub async fn run(table: &mut Table) {
    let sizes: Vec<usize> = std::env::var("LSPS1_BENCH_STORE_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    let reads = env_num("LSPS1_BENCH_STORE_READS", 20_000);
    println!("\n== 4. Store scale ({sizes:?} orders; {reads} reads per row)");
    let ps = peers(256);
    {
        let s = unlimited(StandIn::builder()).start().await;
        let rss = idle_rss(&s).await;
        table
            .add("store", "plugin RSS idle, empty store", format!("{:.1} MB", rss as f64 / 1024.0))
            .goal("< 15 MB", rss < 15 * 1024);
        s.shutdown().await;
    }
    for &n in &sizes {
        let path = tokio::task::spawn_blocking({
            let ps = ps.clone();
            move || generate(n, &ps)
        })
        .await
        .expect("generate");
        // First as the file is found (pages the OS has not cached are read from the disk),
        // then with the whole file in the OS page cache, as a running node's hot store is.
        let (cold, warm) = tokio::task::spawn_blocking({
            let path = path.clone();
            move || {
                let cold = store_reads(&path, n, reads);
                if let Ok(mut f) = std::fs::File::open(&path) {
                    let _ = std::io::copy(&mut f, &mut std::io::sink());
                }
                (cold, store_reads(&path, n, reads))
            }
        })
        .await
        .expect("reads");
        table.add(
            "store",
            format!("get_order in the store, {n} orders, file as found"),
            format!("p50 {:.1} µs, p99 {:.1} µs", us(cold.p50), us(cold.p99)),
        );
        table
            .add(
                "store",
                format!("get_order in the store, {n} orders, file in the page cache"),
                format!("p50 {:.1} µs, p99 {:.1} µs", us(warm.p50), us(warm.p99)),
            )
            .goal("p99 < 1 ms (at 1M)", warm.p99 < Duration::from_millis(1));
        // A port chosen here: benchmarks run the plugin with info logs off.
        let console_bind = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port");
        let s = Arc::new(
            unlimited(StandIn::builder())
                .option("lsps1-db-path", json!(path.to_string_lossy()))
                .option("lsps1-admin-bind", json!(console_bind.to_string()))
                .start()
                .await,
        );
        let rss_idle = idle_rss(&s).await;
        console_rows(table, &s, &path, n, console_bind).await;
        // P2P get_order from 16 peers, each asking for its own orders.
        let start = Instant::now();
        let mut tasks = vec![];
        for (k, p) in ps.iter().take(16).copied().enumerate() {
            let s = s.clone();
            let mut rx = s.route_sent(&p);
            let per = reads / 16;
            tasks.push(tokio::spawn(async move {
                let mut lat = vec![];
                for j in 0..per {
                    // Order i belongs to peer i % 256.
                    let i = (k + 256 * (j * 7919 % (n / 256).max(1))) % n;
                    let body = req("g", "lsps1.get_order", json!({"order_id": order_id(i)})).to_string();
                    let t = Instant::now();
                    let r = ask(&s, &mut rx, &p, body.as_bytes()).await;
                    lat.push(t.elapsed());
                    assert!(r.get("result").is_some(), "{r}");
                }
                lat
            }));
        }
        let mut lat = vec![];
        for t in tasks {
            lat.extend(t.await.expect("task"));
        }
        let p2p = Stats::of(lat, start.elapsed());
        table.add(
            "store",
            format!("P2P get_order, {n} orders, 16 peers"),
            format!("p50 {:.0} µs, p99 {:.0} µs, {:.0}/s", us(p2p.p50), us(p2p.p99), p2p.per_sec),
        );
        let peer = ps[3].to_string();
        for (name, params) in [
            ("listorders (default limit)", json!({})),
            ("listorders state=completed limit=100", json!({"state": "completed", "limit": 100})),
            ("listorders peer_id=<one peer>", json!({"peer_id": peer})),
            ("listorders since=<last 1000 orders>", json!({"since": (BASE_MS + (n as i64 - 1000) * 10) / 1000})),
        ] {
            let mut lat = vec![];
            let mut count = 0;
            for _ in 0..5 {
                let t = Instant::now();
                let r = s.command("lsps1-listorders", params.clone()).await.expect("listorders");
                lat.push(t.elapsed());
                count = r["orders"].as_array().map_or(0, Vec::len);
            }
            let st = Stats::of(lat, Duration::from_secs(1));
            table.add(
                "store",
                format!("{name}, {n} orders"),
                format!("p50 {:.1} ms, {count} orders", us(st.p50) / 1e3),
            );
        }
        let (rss_load, hwm) = s.plugin_pid().map_or((0, 0), rss_kib);
        table.add(
            "store",
            format!("plugin RSS, {n} orders: idle / after load / peak"),
            format!(
                "{:.1} / {:.1} / {:.1} MB",
                rss_idle as f64 / 1024.0,
                rss_load as f64 / 1024.0,
                hwm as f64 / 1024.0
            ),
        );
        if let Ok(s) = Arc::try_unwrap(s) {
            s.shutdown().await;
        }
    }
}
