//! Benchmark (issue 11, "Tests"): what the `htlc_accepted` hook adds to an HTLC that is not
//! an order's, through the real plugin binary under the lightningd stand-in.
//!
//! `cargo bench --bench htlc_hook` (release build). `LSPS1_BENCH_N` sets the calls per row
//! (default 100,000). Rows:
//! - floor: the same plugin answering the `custommsg` hook for a non-LSPS message type, a
//!   fixed `continue` with no lookup: the plugin protocol's round trip alone;
//! - forward: `htlc_accepted` for a forwarded HTLC (recorded `htlc_accepted.forward`):
//!   answered `continue` without touching the store;
//! - final hop, not an order's: `htlc_accepted` for an invoice of the node's own (recorded
//!   `htlc_accepted.final-hop`): one indexed store lookup, then `continue`.
//!
//! Not a timed test: it prints figures and never fails on them.

#[path = "../tests/e2e/standin.rs"]
#[allow(unused_imports)]
mod standin;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use standin::{StandIn, fixture};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(s: &StandIn, name: &str, params: &Value, n: usize) -> (Duration, Duration, f64) {
    for _ in 0..1_000 {
        s.hook(name, params.clone()).await;
    }
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let r = s.hook(name, params.clone()).await;
        lat.push(t.elapsed());
        debug_assert_eq!(r, json!({"result": "continue"}));
    }
    let total = start.elapsed();
    lat.sort_unstable();
    (percentile(&lat, 0.5), percentile(&lat, 0.99), n as f64 / total.as_secs_f64())
}

fn main() {
    let n: usize = std::env::var("LSPS1_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let forward = fixture("hooks/htlc_accepted.forward.json")["params"].clone();
        let final_hop = fixture("hooks/htlc_accepted.final-hop.json")["params"].clone();
        let floor = StandIn::builder().env("CLN_PLUGIN_LOG", "error").env("LSPS1_HTLC_HOOK_FLOOR", "1").start().await;
        let mut results = vec![
            ("floor: fixed continue, forward call", run(&floor, "htlc_accepted", &forward, n).await),
            ("floor: fixed continue, final-hop call", run(&floor, "htlc_accepted", &final_hop, n).await),
        ];
        floor.shutdown().await;
        let s = StandIn::builder().env("CLN_PLUGIN_LOG", "warn").start().await;
        assert!(s.disabled().is_none());
        results.push(("htlc_accepted, forward", run(&s, "htlc_accepted", &forward, n).await));
        results.push(("htlc_accepted, final hop, not an order's", run(&s, "htlc_accepted", &final_hop, n).await));
        // Each row against the floor with the same message.
        let floor_of = |i: usize| if i.is_multiple_of(2) { &results[0].1 } else { &results[1].1 };
        println!(
            "\nhtlc_accepted hook, continue path: {n} sequential calls per row, release build, stand-in over stdio"
        );
        println!(
            "{:<44} {:>10} {:>10} {:>10} {:>9} {:>9}",
            "row", "p50 µs", "p99 µs", "calls/s", "p50/floor", "p99/floor"
        );
        for (i, (label, (p50, p99, rate))) in results.iter().enumerate() {
            let f = floor_of(i);
            println!(
                "{:<44} {:>10.1} {:>10.1} {:>10.0} {:>9.2} {:>9.2}",
                label,
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6,
                rate,
                p50.as_secs_f64() / f.0.as_secs_f64(),
                p99.as_secs_f64() / f.1.as_secs_f64()
            );
        }
        for (i, (label, (p50, p99, _))) in results.iter().enumerate().skip(2) {
            let f = floor_of(i);
            println!(
                "added by the hook ({label}): p50 {:+.1} µs, p99 {:+.1} µs",
                (p50.as_secs_f64() - f.0.as_secs_f64()) * 1e6,
                (p99.as_secs_f64() - f.1.as_secs_f64()) * 1e6
            );
        }
        s.shutdown().await;
    });
}
