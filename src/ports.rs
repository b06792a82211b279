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

/// One hop of a BOLT11 route hint: from a peer over a private channel to this node
///. The peer's own forwarding policy for that channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteHop {
    pub src_node_id: PublicKey,
    /// The alias the peer gave us for the channel (what it forwards on), as a u64.
    pub short_channel_id: u64,
    pub fee_base_msat: u32,
    pub fee_proportional_millionths: u32,
    pub cltv_expiry_delta: u16,
}

/// An address the node can be reached at (`getinfo.address`, else `binding`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    /// `ipv4`, `ipv6`, `torv3`, `dns`, … as lightningd names them.
    pub kind: String,
    pub host: String,
    pub port: u16,
}

/// Calls into the Lightning node.
pub trait NodeApi: WalletApi + Send + Sync + 'static {
    /// Where clients can connect to the node (REST get_info `uris`).
    fn node_addresses(&self) -> impl Future<Output = Result<Vec<NodeAddress>, NodeError>> + Send {
        async { Ok(vec![]) }
    }

    /// Route hints for invoices: empty when the node is reachable over a public channel.
    fn route_hints(&self) -> impl Future<Output = Result<Vec<RouteHop>, NodeError>> + Send {
        async { Ok(vec![]) }
    }

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

/// `fundchannel` parameters (ruling 15, N-03–N-08).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    pub peer: PublicKey,
    /// Capacity: lsp + client balance (N-04).
    pub amount_sat: u64,
    pub feerate_perkw: u32,
    pub announce: bool,
    /// The client's balance, pushed (N-04).
    pub push_msat: u64,
    /// `required_channel_confirmations`; 0 = zero-conf (N-06, N-07).
    pub mindepth: u16,
    /// `reserve=0` when `supports_zero_channel_reserve` is advertised (N-08).
    pub zero_reserve: bool,
}

/// What `fundchannel` answered: the funding transaction was broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedChannel {
    pub txid: String,
    pub outnum: u32,
    pub channel_id: Option<String>,
}

/// A channel with a peer, from `listpeerchannels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerChannel {
    pub channel_id: Option<String>,
    pub funding_txid: Option<String>,
    pub funding_outnum: Option<u32>,
    pub opener_local: bool,
    pub local_funds_msat: u64,
    pub pushed_msat: u64,
    pub state: String,
    pub short_channel_id: Option<String>,
}

/// An HTLC as `listhtlcs` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHtlc {
    pub short_channel_id: String,
    pub id: u64,
    pub payment_hash: String,
    pub incoming: bool,
    pub state: String,
}

impl NodeHtlc {
    /// Still held by the node: added and not (being) removed. Removal states are
    /// `SENT_REMOVE_*` / `RCVD_REMOVE_*` (fixtures `listhtlcs.*`).
    pub fn pending(&self) -> bool {
        !self.state.contains("REMOVE")
    }
}

/// A channel as `listpeerchannels` shows it, for the lease-end policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelActivity {
    pub channel_id: String,
    pub funding_txid: Option<String>,
    pub funding_outnum: Option<u32>,
    pub state: String,
    /// `in_payments_fulfilled + out_payments_fulfilled`: forwards count like any payment.
    pub payments_fulfilled: u64,
    pub peer_connected: bool,
}

impl ChannelActivity {
    /// Open and usable: the only state a close is asked in.
    pub fn normal(&self) -> bool {
        self.state == "CHANNELD_NORMAL"
    }

    /// Closing or closed, by anyone.
    pub fn closing(&self) -> bool {
        matches!(
            self.state.as_str(),
            "CHANNELD_SHUTTING_DOWN"
                | "CLOSINGD_SIGEXCHANGE"
                | "CLOSINGD_COMPLETE"
                | "AWAITING_UNILATERAL"
                | "FUNDING_SPEND_SEEN"
                | "ONCHAIN"
                | "CLOSED"
        )
    }
}

/// What `checkrune` said of a rune for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuneVerdict {
    Valid,
    /// Not a rune of this node, malformed, or blacklisted (1501, 1503, -32602).
    Invalid(String),
    /// A rune of this node whose restrictions refuse the command (1502).
    NotPermitted(String),
}

/// lightningd's rune check (`checkrune`), for the operator's console.
pub trait RuneApi: Send + Sync + 'static {
    /// Whether `rune` allows `method` with `params` on this node.
    fn check_rune(
        &self,
        rune: String,
        method: &'static str,
        params: serde_json::Value,
    ) -> impl Future<Output = Result<RuneVerdict, NodeError>> + Send;
}

/// What the order lifecycle needs from the node besides [`NodeApi`].
pub trait ChannelApi: Send + Sync + 'static {
    /// `fundchannel`; returns once the funding transaction is broadcast. An error with a
    /// `code` is lightningd's answer (nothing was broadcast); without one, the outcome is
    /// unknown (timeout, connection lost) and must be reconciled.
    fn fund_channel(&self, req: OpenRequest) -> impl Future<Output = Result<OpenedChannel, NodeError>> + Send;

    /// `fundchannel_cancel <id>`: abort an open that has not been broadcast yet.
    fn cancel_open(&self, _peer: PublicKey) -> impl Future<Output = Result<(), NodeError>> + Send {
        async { Ok(()) }
    }

    /// `connect <id>`: lightningd tries the addresses it knows from gossip (ruling 14).
    fn connect(&self, peer: PublicKey) -> impl Future<Output = Result<(), NodeError>> + Send;

    /// `listpeers <id>`: whether the peer is connected now.
    fn peer_connected(&self, peer: PublicKey) -> impl Future<Output = Result<bool, NodeError>> + Send;

    /// `listpeerchannels <id>`.
    fn peer_channels(&self, peer: PublicKey) -> impl Future<Output = Result<Vec<PeerChannel>, NodeError>> + Send;

    /// `listhtlcs`: every HTLC the node knows.
    fn list_htlcs(&self) -> impl Future<Output = Result<Vec<NodeHtlc>, NodeError>> + Send;

    /// `listhtlcs <scid>` for each channel: the HTLCs on those channels only (a routing node's
    /// whole history can be large).
    fn list_htlcs_on(&self, scids: Vec<String>) -> impl Future<Output = Result<Vec<NodeHtlc>, NodeError>> + Send {
        async move {
            let all = self.list_htlcs().await?;
            Ok(all.into_iter().filter(|h| scids.contains(&h.short_channel_id)).collect())
        }
    }

    /// `getinfo.blockheight`.
    fn block_height(&self) -> impl Future<Output = Result<u32, NodeError>> + Send;

    /// Every channel of the node with its activity (`listpeerchannels`), for the lease-end
    /// policy. A fake without channels to show refuses.
    fn channel_activity(&self) -> impl Future<Output = Result<Vec<ChannelActivity>, NodeError>> + Send {
        async { Err(NodeError::new("listpeerchannels", None, "not supported")) }
    }

    /// `close` a channel: mutually, unilaterally after `unilateral_timeout_secs` (0: never).
    /// Returns the close's `type` (`mutual`, `unilateral`).
    fn close_channel(
        &self,
        _channel_id: String,
        _unilateral_timeout_secs: u64,
    ) -> impl Future<Output = Result<String, NodeError>> + Send {
        async { Err(NodeError::new("close", None, "not supported")) }
    }
}

/// An output of the node's wallet, as `listfunds` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletOutput {
    pub txid: String,
    pub vout: u32,
    pub amount_sat: u64,
    pub address: Option<String>,
    /// `None` while unconfirmed (lightningd lists deposits only once mined; after a reorg
    /// they stay listed, unconfirmed).
    pub blockheight: Option<u32>,
    pub reserved: bool,
    pub reserved_to_block: Option<u32>,
}

/// A refund built and signed, not broadcast: written to the store first (ruling 24).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRefund {
    pub txid: String,
    /// The signed PSBT (base64), what `sendpsbt` takes, again and again.
    pub psbt: String,
    pub amount_sat: u64,
    pub fee_sat: u64,
}

/// The on-chain wallet, for on-chain payments (rulings 21–26). Every method has a default
/// that refuses, for nodes (and test fakes) without on-chain payments.
pub trait WalletApi: Send + Sync + 'static {
    /// `newaddr addresstype=…`: a fresh address of the wallet.
    fn new_address(&self, _kind: &'static str) -> impl Future<Output = Result<String, NodeError>> + Send {
        async { Err(NodeError::new("newaddr", None, "no on-chain wallet")) }
    }

    /// `listfunds`: the wallet's unspent outputs (reserved ones included).
    fn wallet_outputs(&self) -> impl Future<Output = Result<Vec<WalletOutput>, NodeError>> + Send {
        async { Err(NodeError::new("listfunds", None, "no on-chain wallet")) }
    }

    /// `reserveinputs` (not exclusive) for `blocks`: keep these outputs from any other spend.
    fn reserve_outputs(
        &self,
        _outpoints: Vec<(String, u32)>,
        _blocks: u32,
    ) -> impl Future<Output = Result<(), NodeError>> + Send {
        async { Err(NodeError::new("reserveinputs", None, "no on-chain wallet")) }
    }

    /// `unreserveinputs`: give these outputs back to the wallet.
    fn unreserve_outputs(&self, _outpoints: Vec<(String, u32)>) -> impl Future<Output = Result<(), NodeError>> + Send {
        async { Err(NodeError::new("unreserveinputs", None, "no on-chain wallet")) }
    }

    /// Spend exactly `outpoints` (reserved or not) to `destination`, the fee at
    /// `feerate_perkw` taken from the amount; signed, not broadcast. `Ok(None)` when what is
    /// left after the fee would be dust.
    fn sign_refund(
        &self,
        _outpoints: Vec<(String, u32)>,
        _destination: String,
        _feerate_perkw: u32,
    ) -> impl Future<Output = Result<Option<SignedRefund>, NodeError>> + Send {
        async { Err(NodeError::new("utxopsbt", None, "no on-chain wallet")) }
    }

    /// Send `amount_sat` of `outpoints` to `destination`, the rest (less the fee) back to
    /// the wallet as change; signed, not broadcast. For a surplus paid beyond an order.
    fn sign_partial_refund(
        &self,
        _outpoints: Vec<(String, u32)>,
        _destination: String,
        _amount_sat: u64,
        _feerate_perkw: u32,
    ) -> impl Future<Output = Result<Option<SignedRefund>, NodeError>> + Send {
        async { Err(NodeError::new("utxopsbt", None, "no on-chain wallet")) }
    }

    /// Spend `outpoint` (an unconfirmed change output of ours) back to the wallet at
    /// `feerate_perkw`, at once: a child that pays for its parent (CPFP, ruling 26).
    fn bump_by_child(
        &self,
        _outpoint: (String, u32),
        _feerate_perkw: u32,
    ) -> impl Future<Output = Result<String, NodeError>> + Send {
        async { Err(NodeError::new("withdraw", None, "no on-chain wallet")) }
    }

    /// `sendpsbt`: broadcast a signed PSBT (again: a rebroadcast is harmless).
    fn broadcast(&self, _psbt: String) -> impl Future<Output = Result<String, NodeError>> + Send {
        async { Err(NodeError::new("sendpsbt", None, "no on-chain wallet")) }
    }
}
