//! Benchmark (issue 12, "Tests"): REST `get_info` and `get_order` through the real plugin
//! binary under the lightningd stand-in, against a static route on the same server (the
//! floor: `GET /api/v1/health`), with a loopback keep-alive load generator.
//!
//! `cargo bench --bench rest`. `LSPS1_BENCH_REQS` sets requests per connection (default
//! 2,000), `LSPS1_BENCH_CONNS` the concurrent connections (default 8, the per-IP in-flight cap). Prints figures;
//! never fails on them. Loopback only.

#[path = "../tests/e2e/standin.rs"]
#[allow(unused_imports)]
mod standin;

use std::time::{Duration, Instant};

use serde_json::json;
use standin::{StandIn, peer, req};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 GET; returns the status.
async fn get(stream: &mut TcpStream, buf: &mut Vec<u8>, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    buf.clear();
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok()).flatten()
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).await.expect("read");
                assert!(n > 0, "connection closed");
                buf.extend_from_slice(&chunk[..n]);
            }
            return head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        }
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn load(port: u16, path: String, conns: usize, reqs: usize) -> (f64, Duration, Duration) {
    let start = Instant::now();
    let mut tasks = vec![];
    for _ in 0..conns {
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
            s.set_nodelay(true).ok();
            let mut buf = Vec::with_capacity(8192);
            let mut lat = Vec::with_capacity(reqs);
            for _ in 0..reqs {
                let t = Instant::now();
                let status = get(&mut s, &mut buf, &path).await;
                lat.push(t.elapsed());
                assert_eq!(status, 200, "{path}");
            }
            lat
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let total = start.elapsed();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize];
    (all.len() as f64 / total.as_secs_f64(), pct(0.5), pct(0.99))
}

fn main() {
    let reqs: usize = std::env::var("LSPS1_BENCH_REQS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    let conns: usize = std::env::var("LSPS1_BENCH_CONNS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let s = StandIn::builder()
            .env("CLN_PLUGIN_LOG", "cln_lsps1=info,warn")
            .option("lsps1-rest-bind", json!(["127.0.0.1:0"]))
            .option("lsps1-rest-requests-per-minute", json!(1_000_000))
            .option("lsps1-rest-burst", json!(1_000_000))
            .start()
            .await;
        let line = s.wait_log(Some("info"), "REST API listening").await;
        let port: u16 = line
            .rsplit(':')
            .next()
            .and_then(|p| p.split('/').next())
            .and_then(|p| p.parse().ok())
            .expect("port in the log line");
        let (_, client) = peer(9);
        let order = s
            .lsps(
                &client,
                &req(
                    "b",
                    "lsps1.create_order",
                    json!({"lsp_balance_sat": "500000", "client_balance_sat": "0", "required_channel_confirmations": 1,
                       "funding_confirms_within_blocks": 6, "channel_expiry_blocks": 1000, "announce_channel": false}),
                ),
            )
            .await;
        let id = order["result"]["order_id"].as_str().expect("order").to_string();
        let rows = [
            ("floor: GET /api/v1/health (static)", "/api/v1/health".to_string()),
            ("GET /api/v1/get_info", "/api/v1/get_info".to_string()),
            ("GET /api/v1/get_order", format!("/api/v1/get_order?order_id={id}")),
        ];
        let _ = load(port, rows[0].1.clone(), conns, reqs / 4).await; // warm-up
        let mut results = vec![];
        for (label, path) in &rows {
            results.push((*label, load(port, path.clone(), conns, reqs).await));
        }
        let floor = results[0].1;
        println!("\nREST over loopback: {conns} keep-alive connections x {reqs} requests per row, release build");
        println!(
            "{:<38} {:>10} {:>9} {:>9} {:>10} {:>10}",
            "row", "req/s", "p50 µs", "p99 µs", "rate/floor", "p99/floor"
        );
        for (label, (rate, p50, p99)) in &results {
            println!(
                "{:<38} {:>10.0} {:>9.0} {:>9.0} {:>10.2} {:>10.2}",
                label,
                rate,
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6,
                rate / floor.0,
                p99.as_secs_f64() / floor.2.as_secs_f64()
            );
        }
        s.shutdown().await;
    });
}
