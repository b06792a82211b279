//! LSPS0 (bLIP-50): the transport every LSPS rides on.

pub mod codes;
pub mod frame;
pub mod jsonrpc;
pub mod ser;
