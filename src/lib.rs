//! cln-lsps1: an LSPS1 (bLIP-51) channel-purchase service for Core Lightning.
//!
//! Layering (ARCHITECTURE.md has the whole map):
//! - [`lsps0`]: the bLIP-50 transport: 37913 framing, JSON-RPC envelope, error codes, LSPS0
//!   common schemas. No I/O.
//! - [`lsps1`]: bLIP-51 wire types, request validation, pricing, the order state machine and
//!   the service that answers requests, generic over the [`ports`] it needs.
//! - [`store`]: the SQLite order book.
//! - [`cln`]: the only module that talks to Core Lightning (cln-plugin / cln-rpc).

pub mod cln;
pub mod clock;
pub mod config;
pub mod console;
pub mod lifecycle;
pub mod limits;
pub mod lsps0;
pub mod lsps1;
pub mod order;
pub mod ports;
pub mod rest;
pub mod store;
pub mod telemetry;
