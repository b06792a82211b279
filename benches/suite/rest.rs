//! 5. REST: `get_info` and `get_order` with a loopback keep-alive load generator against a
//!    static route on the same server (the floor: `GET /api/v1/health`), rows alternating
//!    with the floor in rounds.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Profile, Stats, Table, env_num, us};
use crate::standin::{StandIn, peer, req};

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

pub async fn load(port: u16, path: &str, conns: usize, reqs: usize) -> Stats {
    let start = Instant::now();
    let mut tasks = vec![];
    for _ in 0..conns {
        let path = path.to_string();
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
    Stats::of(all, start.elapsed())
}

/// The REST port from the plugin's log line.
pub async fn rest_port(s: &StandIn) -> u16 {
    let line = s.wait_log(Some("info"), "REST API listening").await;
    line.rsplit(':').next().and_then(|p| p.split('/').next()).and_then(|p| p.parse().ok()).expect("port in the log")
}

pub async fn run(table: &mut Table) {
    let reqs = env_num("LSPS1_BENCH_REQS", 4_000);
    let conns = env_num("LSPS1_BENCH_CONNS", 8);
    println!("\n== 5. REST ({conns} keep-alive connections, {reqs} requests each per row)");
    let s = StandIn::builder()
        .env("CLN_PLUGIN_LOG", "cln_lsps1=info,warn")
        .option("lsps1-rest-bind", json!(["127.0.0.1:0"]))
        .option("lsps1-rest-requests-per-minute", json!(1_000_000))
        .option("lsps1-rest-burst", json!(1_000_000))
        .start()
        .await;
    let port = rest_port(&s).await;
    let (_, client) = peer(9);
    let order = s.lsps(&client, &req("b", "lsps1.create_order", crate::orders::order_params(500_000))).await;
    let id = order["result"]["order_id"].as_str().expect("order").to_string();
    let paths =
        ["/api/v1/health".to_string(), "/api/v1/get_info".to_string(), format!("/api/v1/get_order?order_id={id}")];
    let _ = load(port, &paths[0], conns, reqs / 4).await; // warm-up
    let rounds = 4;
    let mut got: [Vec<Stats>; 3] = Default::default();
    for _ in 0..rounds {
        for (i, p) in paths.iter().enumerate() {
            let _p = Profile::start(if i > 0 { s.plugin_pid() } else { None }, &format!("rest_{i}"));
            got[i].push(load(port, p, conns, reqs / rounds).await);
        }
    }
    let total = |v: &Vec<Stats>| {
        let n: usize = v.iter().map(|s| s.n).sum();
        let secs: f64 = v.iter().map(|s| s.n as f64 / s.per_sec).sum();
        let mut p99: Vec<Duration> = v.iter().map(|s| s.p99).collect();
        p99.sort();
        (n as f64 / secs, p99[p99.len() / 2])
    };
    let (floor_rate, floor_p99) = total(&got[0]);
    table.add(
        "REST",
        "floor: GET /api/v1/health (static)",
        format!("{floor_rate:.0} req/s, p99 {:.0} µs", us(floor_p99)),
    );
    for (i, name) in [(1, "GET /api/v1/get_info"), (2, "GET /api/v1/get_order")] {
        let (rate, p99) = total(&got[i]);
        table
            .add("REST", name, format!("{rate:.0} req/s, p99 {:.0} µs", us(p99)))
            .ratio(rate / floor_rate)
            .goal("≥ 0.8× floor", rate / floor_rate >= 0.8);
    }
    // The same get_order load while the store is written (new orders over P2P, one every
    // 5 ms): every write makes the cached answers out of date, so this is SQLite's row.
    let s = std::sync::Arc::new(s);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            let clients = crate::common::peers(2_000);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let c = &clients[n as usize % clients.len()];
                let _ = s.lsps(c, &req("w", "lsps1.create_order", crate::orders::order_params(100_000))).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    };
    let t = Instant::now();
    let st = load(port, &paths[2], conns, reqs / rounds).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.unwrap_or(0);
    table
        .add(
            "REST",
            "GET /api/v1/get_order, store written meanwhile",
            format!(
                "{:.0} req/s, p99 {:.0} µs ({:.0} writes/s)",
                st.per_sec,
                us(st.p99),
                f64::from(writes) / t.elapsed().as_secs_f64()
            ),
        )
        .ratio(st.per_sec / floor_rate);
    if let Ok(s) = std::sync::Arc::try_unwrap(s) {
        s.shutdown().await;
    }
}
