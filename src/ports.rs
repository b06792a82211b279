//! What the core needs from the node, as traits (the "ports"). `cln::rpc` implements them
//! with cln-rpc; tests implement them in memory.

use std::future::Future;

use bitcoin::secp256k1::PublicKey;

/// An error from the node's RPC, kept typed so callers can tell causes apart.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("node RPC {method} failed: {message}{}", code.map(|c| format!(" (code {c})")).unwrap_or_default())]
pub struct NodeError {
    pub method: &'static str,
    pub code: Option<i64>,
    pub message: String,
}

impl NodeError {
    pub fn new(method: &'static str, code: Option<i64>, message: impl Into<String>) -> Self {
        NodeError { method, code, message: message.into() }
    }
}

/// Fee-rate estimates from `feerates perkw` (sat per 1000 weight units).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FeeEstimates {
    /// `(blockcount, feerate_perkw)` sorted by blockcount.
    pub estimates: Vec<(u32, u32)>,
    /// `unilateral_close`: what a commitment transaction pays now.
    pub unilateral_close_perkw: Option<u32>,
    /// `opening`: lightningd's own default for opens, a fallback when no estimate exists.
    pub opening_perkw: Option<u32>,
    /// `floor`: the minimum relay fee rate.
    pub floor_perkw: u32,
}

/// The node's on-chain wallet as far as funding channels goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalletFunds {
    /// Confirmed, unreserved outputs (`listfunds`).
    pub confirmed_sat: u64,
}

/// Calls into the Lightning node.
pub trait NodeApi: Send + Sync + 'static {
    /// `sendcustommsg`: `msg_hex` already carries the 2-byte type.
    fn send_custom_message(
        &self,
        peer: PublicKey,
        msg_hex: String,
    ) -> impl Future<Output = Result<(), NodeError>> + Send;

    /// `signinvoice`: returns the invoice re-signed by the node key.
    fn sign_invoice(&self, invoice: String) -> impl Future<Output = Result<String, NodeError>> + Send;

    /// `listpeers`: the peer's init features (hex), `None` when the peer is unknown.
    fn peer_features(&self, peer: PublicKey) -> impl Future<Output = Result<Option<String>, NodeError>> + Send;

    /// `feerates perkw`.
    fn fee_estimates(&self) -> impl Future<Output = Result<FeeEstimates, NodeError>> + Send;

    /// `listfunds`.
    fn wallet_funds(&self) -> impl Future<Output = Result<WalletFunds, NodeError>> + Send;
}
