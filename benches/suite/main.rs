//! The benchmark suite: one command, `cargo bench --bench suite`, prints every
//! figure with its ratio to the floor measured in the same run, and a closing table
//! (BENCHMARKS.md keeps it). `LSPS1_BENCH_ONLY=p2p,orders,hook,store,rest,chain,postgres` picks sections;
//! `LSPS1_BENCH_PERF=<dir>` records the plugin with `perf` during each measured row.
//!
//! Everything runs over loopback and the stand-in's stdio; the figures are never asserted.

#[path = "../../tests/e2e/standin.rs"]
#[allow(unused_imports)]
mod standin;

mod chain;
mod common;
mod hook;
mod orders;
mod p2p;
mod postgres;
mod rest;
mod store;

fn main() {
    let only = std::env::var("LSPS1_BENCH_ONLY").unwrap_or_default();
    let want = |s: &str| only.is_empty() || only.split(',').any(|o| o.trim() == s);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut table = common::Table::default();
    println!(
        "cln-lsps1 benchmark suite: release build, {} CPUs, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH
    );
    rt.block_on(async {
        if want("p2p") {
            p2p::run(&mut table).await;
        }
        if want("orders") {
            orders::run(&mut table).await;
        }
        if want("hook") {
            hook::run(&mut table).await;
        }
        if want("store") {
            store::run(&mut table).await;
        }
        if want("rest") {
            rest::run(&mut table).await;
        }
        if want("chain") {
            chain::run(&mut table).await;
        }
        if want("postgres") {
            postgres::run(&mut table).await;
        }
    });
    table.print();
}
