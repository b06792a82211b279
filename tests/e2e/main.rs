//! End-to-end tests: the real plugin binary driven by the lightningd stand-in.

mod browser;
mod console;
mod faults;
mod flood;
mod interop;
mod lifecycle;
mod lsps1;
mod manifest;
mod onchain;
mod postgres;
mod rest;
mod rest_fuzz;
mod soak;
mod standin;
mod standin_selftest;
mod transport;
