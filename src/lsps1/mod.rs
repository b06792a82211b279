//! LSPS1 (bLIP-51): channel purchases.

pub mod admin;
pub mod invoice;
pub mod msgs;
pub mod pricing;
pub mod service;
pub mod validate;
