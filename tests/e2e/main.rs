//! End-to-end tests: the real plugin binary driven by the lightningd stand-in.

mod interop;
mod lsps1;
mod manifest;
mod standin;
mod transport;
