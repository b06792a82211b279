//! 3. The `htlc_accepted` hook's `continue` path for HTLCs that are not an order's, through
//!    the real plugin under the stand-in. Floor, same run: the same plugin started with
//!    `LSPS1_HTLC_HOOK_FLOOR=1`, answering a fixed `continue` to the same recorded calls.
//!    Rows: a forwarded HTLC (answered before any store access) and a final-hop HTLC for one
//!    of the node's own invoices (one indexed read, then `continue`).

use std::time::Instant;

use serde_json::{Value, json};

use crate::common::{Profile, Stats, Table, env_num, us};
use crate::standin::{StandIn, fixture};

async fn calls(s: &StandIn, params: &Value, n: usize) -> Stats {
    for _ in 0..1_000.min(n) {
        s.hook("htlc_accepted", params.clone()).await;
    }
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let r = s.hook("htlc_accepted", params.clone()).await;
        lat.push(t.elapsed());
        debug_assert_eq!(r, json!({"result": "continue"}));
    }
    Stats::of(lat, start.elapsed())
}

pub async fn run(table: &mut Table) {
    let n = env_num("LSPS1_BENCH_HOOK_N", 50_000);
    println!("\n== 3. htlc_accepted, continue path ({n} sequential calls per row)");
    let forward = fixture("hooks/htlc_accepted.forward.json")["params"].clone();
    let final_hop = fixture("hooks/htlc_accepted.final-hop.json")["params"].clone();
    let floor_s = StandIn::builder().env("CLN_PLUGIN_LOG", "error").env("LSPS1_HTLC_HOOK_FLOOR", "1").start().await;
    let s = StandIn::builder().env("CLN_PLUGIN_LOG", "warn").start().await;
    assert!(s.disabled().is_none());
    // Floor and plugin alternate in rounds, so a slow moment of the machine hits both.
    let rounds = 4;
    let mut lat: [Vec<Stats>; 4] = Default::default();
    for _ in 0..rounds {
        lat[0].push(calls(&floor_s, &forward, n / rounds).await);
        {
            let _p = Profile::start(s.plugin_pid(), "htlc_forward");
            lat[1].push(calls(&s, &forward, n / rounds).await);
        }
        lat[2].push(calls(&floor_s, &final_hop, n / rounds).await);
        {
            let _p = Profile::start(s.plugin_pid(), "htlc_final_hop");
            lat[3].push(calls(&s, &final_hop, n / rounds).await);
        }
    }
    // The median round of each row.
    let mid = |v: &Vec<Stats>| {
        let mut v = v.clone();
        v.sort_by_key(|s| s.p50);
        v[v.len() / 2]
    };
    let (f_fwd, fwd, f_fin, fin) = (mid(&lat[0]), mid(&lat[1]), mid(&lat[2]), mid(&lat[3]));
    for (name, floor, st) in [("forward", f_fwd, fwd), ("final hop, not an order's", f_fin, fin)] {
        table.add(
            "htlc hook",
            format!("floor: fixed continue, {name} call"),
            format!("p50 {:.0} µs, p99 {:.0} µs", us(floor.p50), us(floor.p99)),
        );
        table
            .add(
                "htlc hook",
                format!("continue, {name}"),
                format!(
                    "p50 {:.0} µs, p99 {:.0} µs, {:.0} calls/s; added p50 {:+.0} µs, p99 {:+.0} µs",
                    us(st.p50),
                    us(st.p99),
                    st.per_sec,
                    us(st.p50) - us(floor.p50),
                    us(st.p99) - us(floor.p99)
                ),
            )
            .ratio(st.p50.as_secs_f64() / floor.p50.as_secs_f64())
            .goal("p99 < 1 ms", st.p99.as_secs_f64() < 1e-3);
    }
    floor_s.shutdown().await;
    s.shutdown().await;
}
