//! The outputs an order's on-chain payment option receives, and what each is to the order
//! (rulings 23–25). Shared by the store, which keeps them, and the lifecycle, which decides.

/// A transaction output, `txid:vout`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Outpoint {
    pub txid: String,
    pub vout: u32,
}

impl std::fmt::Display for Outpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.txid, self.vout)
    }
}

/// What an output at an order's address is to the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputRole {
    /// Received, not (or no longer) counted.
    Seen,
    /// Counted as the order's payment (P-13).
    Payment,
    /// Spent by a refund that was written down and broadcast, not yet confirmed.
    Refunding,
    /// Its refund confirmed.
    Refunded,
    /// Too small to refund once a refund's fee is paid: kept, and recorded (ruling 24).
    Dust,
    /// Paid for an order that opened its channel: the LSP's coins now.
    Kept,
}

impl OutputRole {
    pub const ALL: [OutputRole; 6] = [
        OutputRole::Seen,
        OutputRole::Payment,
        OutputRole::Refunding,
        OutputRole::Refunded,
        OutputRole::Dust,
        OutputRole::Kept,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutputRole::Seen => "seen",
            OutputRole::Payment => "payment",
            OutputRole::Refunding => "refunding",
            OutputRole::Refunded => "refunded",
            OutputRole::Dust => "dust",
            OutputRole::Kept => "kept",
        }
    }

    pub fn parse(s: &str) -> Option<OutputRole> {
        OutputRole::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Counted by the order, or owed to the client: a vanishing one is news.
    pub fn must_stay_reserved(self) -> bool {
        matches!(self, OutputRole::Seen | OutputRole::Payment)
    }

    /// Kept reserved while listed, so that nothing but the order's own payment or refund
    /// can spend it: a refund's inputs too, until the refund is mined (its inputs leaving
    /// the wallet's list is how it is known to be).
    pub fn held_back(self) -> bool {
        matches!(self, OutputRole::Seen | OutputRole::Payment | OutputRole::Refunding)
    }
}

/// One output received at an order's address, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainOutput {
    pub outpoint: Outpoint,
    pub amount_sat: u64,
    /// The block that holds it; `None` while unconfirmed (after a reorg: ruling 25).
    pub blockheight: Option<u32>,
    pub role: OutputRole,
}

/// Confirmations of an output in block `height` with the chain at `tip`.
pub fn confirmations(height: Option<u32>, tip: u32) -> u32 {
    match height {
        Some(h) if h <= tip => tip - h + 1,
        _ => 0,
    }
}
