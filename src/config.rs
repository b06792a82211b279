//! The plugin's typed configuration, built from the `lsps1-*` options and checked at
//! start (G-02): an inconsistent configuration disables the plugin with a message naming
//! the option, rather than advertising limits no order could meet.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use bitcoin::secp256k1::PublicKey;

use crate::limits::PeerLimits;
use crate::lsps0::ser::read_pubkey;

/// An option value as lightningd passes it in `init` (typed: int, bool, string, multi).
#[derive(Debug, Clone, PartialEq)]
pub enum OptValue {
    Int(i64),
    Bool(bool),
    Str(String),
    StrList(Vec<String>),
}

/// The ten `lsps1.get_info` options (bLIP-51 "1. lsps1.get_info") as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lsps1Options {
    pub min_required_channel_confirmations: u16,
    pub min_funding_confirms_within_blocks: u16,
    pub supports_zero_channel_reserve: bool,
    pub max_channel_expiry_blocks: u32,
    pub min_initial_client_balance_sat: u64,
    pub max_initial_client_balance_sat: u64,
    pub min_initial_lsp_balance_sat: u64,
    pub max_initial_lsp_balance_sat: u64,
    pub min_channel_balance_sat: u64,
    pub max_channel_balance_sat: u64,
}

/// 21 million bitcoin, in sat.
pub const MAX_MONEY_SAT: u64 = 2_100_000_000_000_000;

/// Channels above this need `option_support_large_channel` on both sides (BOLT 2).
pub const MAX_NON_WUMBO_SAT: u64 = 16_777_215;

impl Default for Lsps1Options {
    fn default() -> Self {
        Lsps1Options {
            min_required_channel_confirmations: 0,
            min_funding_confirms_within_blocks: 6,
            supports_zero_channel_reserve: false,
            max_channel_expiry_blocks: 13_140,
            min_initial_client_balance_sat: 0,
            max_initial_client_balance_sat: 0,
            min_initial_lsp_balance_sat: 100_000,
            max_initial_lsp_balance_sat: MAX_NON_WUMBO_SAT,
            min_channel_balance_sat: 100_000,
            max_channel_balance_sat: MAX_NON_WUMBO_SAT,
        }
    }
}

/// How orders are priced (the README's Pricing section; `lsps1::pricing` computes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PricingPolicy {
    pub base_fee_sat: u64,
    pub fee_ppm_per_year: u64,
    /// Weight of the funding transaction the client pays for.
    pub funding_weight: u64,
}

impl Default for PricingPolicy {
    fn default() -> Self {
        // 702 WU is the weight lightningd itself prices an open at
        // (`feerates.onchain_fee_estimates.opening_channel_satoshis` / perkw × 1000).
        PricingPolicy { base_fee_sat: 1_000, fee_ppm_per_year: 20_000, funding_weight: 702 }
    }
}

/// Everything the service needs to know from the operator.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub options: Lsps1Options,
    pub pricing: PricingPolicy,
    /// Lifetime of a payment option (its `expires_at`) and of the BOLT11 invoice.
    pub payment_expiry_secs: u64,
    /// `min_final_cltv_expiry_delta` of the invoices: room to hold HTLCs while opening.
    pub invoice_min_final_cltv: u16,
    /// Tokens that `create_order` accepts (C-13).
    pub tokens: BTreeSet<String>,
    /// Treat unknown tokens as absent instead of answering `102`.
    pub accept_unknown_tokens: bool,
    /// Node ids refused with `1` (ruling 10).
    pub deny_nodes: HashSet<PublicKey>,
    /// Unexpired unpaid orders one peer may hold; more are refused with `1`.
    pub max_unpaid_orders_per_peer: u32,
    pub peer_limits: PeerLimits,
    /// Where the store lives; `None` = `<lightning-dir>/lsps1.sqlite3`.
    pub db_path: Option<PathBuf>,
    /// `lsps1-db`: the store as a URL (SQLite by default; PostgreSQL shared by several nodes).
    pub db: Option<DbUrl>,
    /// Advertise feature bit 729 (ruling 18).
    pub feature_bit: bool,
    /// Blocks before a held HTLC's `cltv_expiry` at which it is failed back (ruling 13).
    pub cltv_safety_margin: u32,
    /// How long a paid order waits for its client to connect before it is refunded.
    pub open_deadline_secs: u64,
    /// BOLT 4 `mpp_timeout`: parts of an incomplete payment go back after this long.
    pub mpp_timeout_secs: u64,
    /// The REST listener; off when `binds` is empty.
    pub rest: RestConfig,
    /// The `payment.onchain` option (rulings 21–26); off by default.
    pub onchain: OnchainConfig,
    /// The operator's console (`lsps1-admin-*`); off when `bind` is unset.
    pub admin: AdminConfig,
    /// What happens to a channel whose lease ended (`lsps1-lease-*`).
    pub lease_policy: LeasePolicy,
}

/// Where the orders live (`lsps1-db`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// A SQLite file (`sqlite:///abs/path`, `sqlite:relative`, or a plain path).
    Sqlite(PathBuf),
    /// `postgres://` / `postgresql://` as libpq reads it (TLS as its `sslmode` asks), the
    /// password from `lsps1-db-password-file` when given, so it never shows in `listconfigs`.
    Postgres { url: String, password_file: Option<PathBuf> },
}

impl DbUrl {
    /// Parse `lsps1-db` and `lsps1-db-password-file`.
    pub fn parse(url: &str, password_file: Option<&str>) -> Result<DbUrl, ConfigError> {
        let url = url.trim();
        let password_file = password_file.map(str::trim).filter(|s| !s.is_empty()).map(PathBuf::from);
        if let Some(rest) = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://")) {
            if rest.is_empty() || rest.starts_with('/') && rest.len() == 1 {
                return Err(err("lsps1-db", "a postgres URL needs a host or a socket directory and a database"));
            }
            let has_password = rest.split('@').next().is_some_and(|auth| rest.contains('@') && auth.contains(':'));
            if has_password && password_file.is_some() {
                return Err(err("lsps1-db-password-file", "the URL already has a password; give it in one place"));
            }
            return Ok(DbUrl::Postgres { url: url.to_string(), password_file });
        }
        if password_file.is_some() {
            return Err(err("lsps1-db-password-file", "is for a postgres:// store only"));
        }
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        if path.is_empty() {
            return Err(err("lsps1-db", "names no file"));
        }
        if url.contains("://") && !url.starts_with("sqlite://") {
            return Err(err("lsps1-db", format!("'{url}': use a file path, sqlite:///path or postgres://…")));
        }
        Ok(DbUrl::Sqlite(PathBuf::from(path)))
    }
}

/// The operator's console listener: the page, its JSON API and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminConfig {
    pub bind: Option<std::net::SocketAddr>,
    /// PEM certificate chain and private key: serve HTTPS (needed off loopback).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Host names the page may be reached by besides the bind address and `localhost`.
    pub hosts: Vec<String>,
    /// Serve `/metrics` without a rune to clients on loopback.
    pub metrics_open_on_loopback: bool,
}

/// What happens to a sold channel once its lease ended (the lease-end policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeasePolicy {
    /// Keep every channel open after its lease (the default).
    Keep,
    /// Close a channel whose lease ended once no payment went through it (in or out) for
    /// `idle_blocks`; lightningd waits `force_close_after_secs` for a mutual close before it
    /// closes unilaterally (0: never unilaterally).
    CloseIdle { idle_blocks: u32, force_close_after_secs: u64 },
}

impl LeasePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            LeasePolicy::Keep => "keep",
            LeasePolicy::CloseIdle { .. } => "close-idle",
        }
    }
}

/// Which kind of address `newaddr` makes for on-chain payments. Explicit, because
/// lightningd's default changes with its deprecated-API settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressType {
    P2tr,
    Bech32,
}

impl AddressType {
    /// The name `newaddr` takes and answers under.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressType::P2tr => "p2tr",
            AddressType::Bech32 => "bech32",
        }
    }
}

/// On-chain payments (`lsps1-onchain-*`, rulings 21–26).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnchainConfig {
    pub enabled: bool,
    /// Confirmations an order's outputs need before they count (ruling 22: 1 to 6).
    pub min_confirmations: u16,
    /// The smallest order total that may be paid on-chain; smaller orders get Lightning only.
    pub min_payment_size_sat: u64,
    /// Lifetime of the on-chain option (its `expires_at`).
    pub expiry_secs: u64,
    /// Blocks after the option's expiry in which a payment mined late still counts (ruling 23).
    pub grace_blocks: u32,
    /// Added to the Lightning price: the LSP later spends these coins.
    pub surcharge_sat: u64,
    pub address_type: AddressType,
    /// Highest fee rate a refund or a fee bump may pay (sat per 1000 weight).
    pub max_feerate_perkw: u32,
    /// Blocks a refund may stay unconfirmed before it is replaced with a higher fee (ruling 24).
    pub rbf_after_blocks: u32,
}

impl Default for OnchainConfig {
    fn default() -> Self {
        OnchainConfig {
            enabled: false,
            min_confirmations: 1,
            min_payment_size_sat: 50_000,
            expiry_secs: 86_400,
            grace_blocks: 6,
            surcharge_sat: 1_000,
            address_type: AddressType::P2tr,
            max_feerate_perkw: 50_000,
            rbf_after_blocks: 36,
        }
    }
}

/// The embedded REST listener's settings (`lsps1-rest-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestConfig {
    pub binds: Vec<std::net::SocketAddr>,
    /// PEM certificate chain and private key: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// A reverse proxy whose `X-Forwarded-For` is trusted for per-IP limits.
    pub trusted_proxy: Option<std::net::IpAddr>,
    /// `uris` to answer in get_info instead of the node's announced addresses.
    pub uris: Vec<String>,
    /// Allowed CORS origins; empty = any origin.
    pub cors_origins: Vec<String>,
    pub limits: PeerLimits,
    /// Unpaid orders created from one IP address and not yet expired.
    pub max_unpaid_per_ip: u32,
    /// Connections served at once.
    pub max_connections: u32,
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig {
            binds: vec![],
            tls: None,
            trusted_proxy: None,
            uris: vec![],
            cors_origins: vec![],
            limits: PeerLimits {
                requests_per_minute: 120,
                burst: 40,
                max_inflight_per_peer: 8,
                ..PeerLimits::default()
            },
            max_unpaid_per_ip: 10,
            max_connections: 256,
        }
    }
}

/// Blocks an arriving HTLC must leave beyond the safety margin: the open itself.
pub const OPEN_ALLOWANCE_BLOCKS: u32 = 6;

impl Default for Config {
    fn default() -> Self {
        Config {
            options: Lsps1Options::default(),
            pricing: PricingPolicy::default(),
            payment_expiry_secs: 3600,
            invoice_min_final_cltv: 144,
            tokens: BTreeSet::new(),
            accept_unknown_tokens: false,
            deny_nodes: HashSet::new(),
            max_unpaid_orders_per_peer: 5,
            peer_limits: PeerLimits::default(),
            db_path: None,
            feature_bit: true,
            cltv_safety_margin: 12,
            open_deadline_secs: 600,
            mpp_timeout_secs: 60,
            db: None,
            rest: RestConfig::default(),
            onchain: OnchainConfig::default(),
            admin: AdminConfig::default(),
            lease_policy: LeasePolicy::Keep,
        }
    }
}

/// A configuration problem, naming the option.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("option {option}: {message}")]
pub struct ConfigError {
    pub option: String,
    pub message: String,
}

fn err(option: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { option: option.into(), message: message.into() }
}

/// One row of the options table: name, default, description. Shared by the plugin
/// manifest (`cln::options`) and the README so they cannot drift.
pub struct OptionSpec {
    pub name: &'static str,
    pub kind: OptKind,
    pub description: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptKind {
    Int(i64),
    Bool(bool),
    Str,
    Multi,
}

macro_rules! int_opt {
    ($name:literal, $default:expr, $desc:literal) => {
        OptionSpec { name: $name, kind: OptKind::Int($default as i64), description: $desc }
    };
}

/// Every option of the plugin.
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "lsps1-db-path",
        kind: OptKind::Str,
        description: "SQLite order store (default: <lightning-dir>/lsps1.sqlite3)",
    },
    OptionSpec {
        name: "lsps1-db",
        kind: OptKind::Str,
        description: "Where the orders live, as a URL: a SQLite file (default) or postgres://… shared by several nodes",
    },
    OptionSpec {
        name: "lsps1-db-password-file",
        kind: OptKind::Str,
        description: "A file holding the PostgreSQL password of lsps1-db, so it never shows in listconfigs",
    },
    OptionSpec {
        name: "lsps1-feature-bit",
        kind: OptKind::Bool(true),
        description: "Advertise feature bit 729 (option_supports_lsps) in init and node_announcement; read at startup from lightningd's config file or the LSPS1_FEATURE_BIT environment variable",
    },
    int_opt!(
        "lsps1-min-required-channel-confirmations",
        0,
        "get_info min_required_channel_confirmations (0 allows zero-conf channels)"
    ),
    int_opt!("lsps1-min-funding-confirms-within-blocks", 6, "get_info min_funding_confirms_within_blocks (>= 1)"),
    OptionSpec {
        name: "lsps1-supports-zero-channel-reserve",
        kind: OptKind::Bool(false),
        description: "get_info supports_zero_channel_reserve: open every LSPS1 channel with reserve=0",
    },
    int_opt!(
        "lsps1-max-channel-expiry-blocks",
        13_140,
        "get_info max_channel_expiry_blocks: longest lease, in blocks (>= 1)"
    ),
    int_opt!("lsps1-min-initial-client-balance-sat", 0, "get_info min_initial_client_balance_sat"),
    int_opt!(
        "lsps1-max-initial-client-balance-sat",
        0,
        "get_info max_initial_client_balance_sat (0: the client cannot buy outbound balance)"
    ),
    int_opt!("lsps1-min-initial-lsp-balance-sat", 100_000, "get_info min_initial_lsp_balance_sat"),
    int_opt!(
        "lsps1-max-initial-lsp-balance-sat",
        MAX_NON_WUMBO_SAT,
        "get_info max_initial_lsp_balance_sat (answered capped by the wallet's free funds)"
    ),
    int_opt!("lsps1-min-channel-balance-sat", 100_000, "get_info min_channel_balance_sat"),
    int_opt!(
        "lsps1-max-channel-balance-sat",
        MAX_NON_WUMBO_SAT,
        "get_info max_channel_balance_sat (answered capped by the wallet's free funds)"
    ),
    int_opt!("lsps1-base-fee-sat", 1_000, "Fixed part of fee_total_sat, per order"),
    int_opt!(
        "lsps1-fee-ppm-per-year",
        20_000,
        "Lease fee: parts per million of lsp_balance_sat per year (52,560 blocks), pro rata of channel_expiry_blocks"
    ),
    int_opt!(
        "lsps1-funding-weight",
        702,
        "Weight units of a funding transaction, charged at the fee rate for funding_confirms_within_blocks"
    ),
    int_opt!("lsps1-payment-expiry-secs", 3_600, "Seconds until an order's payment option (and its invoice) expires"),
    int_opt!("lsps1-invoice-cltv", 144, "min_final_cltv_expiry_delta of order invoices, in blocks"),
    OptionSpec {
        name: "lsps1-token",
        kind: OptKind::Multi,
        description: "A token create_order accepts (repeat for more); other non-empty tokens get error 102",
    },
    OptionSpec {
        name: "lsps1-accept-unknown-tokens",
        kind: OptKind::Bool(false),
        description: "Accept (and mirror) tokens that are not configured instead of answering 102",
    },
    OptionSpec {
        name: "lsps1-deny-node",
        kind: OptKind::Multi,
        description: "A node id refused with error 1 (client rejected); repeat for more",
    },
    int_opt!(
        "lsps1-cltv-safety-margin",
        12,
        "Blocks before a held payment's CLTV expiry at which it is failed back (refunded)"
    ),
    int_opt!(
        "lsps1-open-deadline-secs",
        600,
        "Seconds a paid order waits for its client node to connect before the payment is refunded"
    ),
    int_opt!(
        "lsps1-mpp-timeout-secs",
        60,
        "Seconds the parts of an incomplete multi-part payment are held (BOLT 4: 60)"
    ),
    OptionSpec {
        name: "lsps1-rest-bind",
        kind: OptKind::Multi,
        description: "Serve the REST API on this address:port (repeatable; IPv6 as [::1]:port); off when unset",
    },
    OptionSpec {
        name: "lsps1-rest-tls-cert",
        kind: OptKind::Str,
        description: "PEM certificate chain for the REST listener (HTTPS); needs lsps1-rest-tls-key",
    },
    OptionSpec {
        name: "lsps1-rest-tls-key",
        kind: OptKind::Str,
        description: "PEM private key for lsps1-rest-tls-cert",
    },
    OptionSpec {
        name: "lsps1-rest-trusted-proxy",
        kind: OptKind::Str,
        description: "IP address of a reverse proxy whose X-Forwarded-For header is trusted for per-IP limits",
    },
    OptionSpec {
        name: "lsps1-rest-uri",
        kind: OptKind::Multi,
        description: "A node URI (pubkey@host:port) that REST get_info answers in uris, instead of the announced addresses (repeatable)",
    },
    OptionSpec {
        name: "lsps1-rest-cors-origin",
        kind: OptKind::Multi,
        description: "An origin allowed to call the REST API from a browser (repeatable); any origin when unset",
    },
    int_opt!("lsps1-rest-requests-per-minute", 120, "Sustained REST requests per minute per IP address"),
    int_opt!("lsps1-rest-burst", 40, "REST requests an IP address may send at once"),
    int_opt!("lsps1-rest-max-unpaid-orders-per-ip", 10, "Unexpired unpaid orders one IP address may create over REST"),
    int_opt!("lsps1-rest-max-connections", 256, "REST connections served at the same time"),
    int_opt!("lsps1-max-unpaid-orders-per-peer", 5, "Unexpired unpaid orders one peer may hold at once"),
    int_opt!("lsps1-peer-requests-per-minute", 60, "Sustained LSPS requests per minute per peer"),
    int_opt!("lsps1-peer-burst", 20, "LSPS requests a quiet peer may send at once"),
    int_opt!("lsps1-peer-max-inflight", 4, "LSPS requests of one peer handled at the same time"),
    int_opt!("lsps1-max-inflight", 256, "LSPS requests of all peers handled at the same time (over it: error 1, busy)"),
    OptionSpec {
        name: "lsps1-onchain-payments",
        kind: OptKind::Bool(false),
        description: "Offer payment.onchain (an address of this node's wallet) beside BOLT11 to orders with a refund_onchain_address",
    },
    int_opt!(
        "lsps1-min-onchain-payment-confirmations",
        1,
        "Confirmations an on-chain payment needs before the channel opens (1 to 6)"
    ),
    int_opt!(
        "lsps1-min-onchain-payment-size-sat",
        50_000,
        "Smallest order total that may be paid on-chain (keep it well above what a refund costs)"
    ),
    int_opt!("lsps1-onchain-payment-expiry-secs", 86_400, "Seconds until an order's on-chain payment option expires"),
    int_opt!(
        "lsps1-onchain-grace-blocks",
        6,
        "Blocks after the on-chain option expired in which a payment still counts (mined late)"
    ),
    int_opt!("lsps1-onchain-surcharge-sat", 1_000, "Added to fee_total_sat of the on-chain option"),
    OptionSpec {
        name: "lsps1-onchain-address-type",
        kind: OptKind::Str,
        description: "Address type of on-chain payment addresses: p2tr (default) or bech32",
    },
    int_opt!(
        "lsps1-onchain-max-feerate-perkw",
        50_000,
        "Highest fee rate (sat per 1000 weight) a refund or a fee bump pays"
    ),
    OptionSpec {
        name: "lsps1-admin-bind",
        kind: OptKind::Str,
        description: "Serve the operator's page, its API and /metrics on this address:port (off when unset; loopback only unless lsps1-admin-tls-cert is set)",
    },
    OptionSpec {
        name: "lsps1-admin-tls-cert",
        kind: OptKind::Str,
        description: "PEM certificate chain for the operator's listener (HTTPS); needs lsps1-admin-tls-key",
    },
    OptionSpec {
        name: "lsps1-admin-tls-key",
        kind: OptKind::Str,
        description: "PEM private key for lsps1-admin-tls-cert",
    },
    OptionSpec {
        name: "lsps1-admin-host",
        kind: OptKind::Multi,
        description: "A host name the operator's page is reached by, besides its address and localhost (repeatable; the Host header is checked)",
    },
    OptionSpec {
        name: "lsps1-metrics-open-on-loopback",
        kind: OptKind::Bool(false),
        description: "Serve /metrics without a rune to scrapers on loopback",
    },
    OptionSpec {
        name: "lsps1-lease-end-policy",
        kind: OptKind::Str,
        description: "What happens to a channel whose lease ended: keep (default) or close-idle (closed once idle for lsps1-lease-idle-blocks)",
    },
    int_opt!(
        "lsps1-lease-idle-blocks",
        1_008,
        "close-idle: blocks without a payment through the channel, after its lease ended, before it is closed"
    ),
    int_opt!(
        "lsps1-lease-force-close-after-secs",
        172_800,
        "close-idle: seconds to wait for a mutual close before closing unilaterally (0: never unilaterally)"
    ),
];

impl Config {
    /// Build and check the configuration from option values; absent options take their
    /// defaults. Unknown names are ignored (lightningd only passes declared ones).
    pub fn from_values(values: &HashMap<String, OptValue>) -> Result<Config, ConfigError> {
        let r = Reader(values);
        let d = Config::default();
        let o = Lsps1Options {
            min_required_channel_confirmations: r.uint("lsps1-min-required-channel-confirmations", u16::MAX.into())?
                as u16,
            min_funding_confirms_within_blocks: r.uint("lsps1-min-funding-confirms-within-blocks", u16::MAX.into())?
                as u16,
            supports_zero_channel_reserve: r.bool("lsps1-supports-zero-channel-reserve")?,
            max_channel_expiry_blocks: r.uint("lsps1-max-channel-expiry-blocks", u32::MAX.into())? as u32,
            min_initial_client_balance_sat: r.sat("lsps1-min-initial-client-balance-sat")?,
            max_initial_client_balance_sat: r.sat("lsps1-max-initial-client-balance-sat")?,
            min_initial_lsp_balance_sat: r.sat("lsps1-min-initial-lsp-balance-sat")?,
            max_initial_lsp_balance_sat: r.sat("lsps1-max-initial-lsp-balance-sat")?,
            min_channel_balance_sat: r.sat("lsps1-min-channel-balance-sat")?,
            max_channel_balance_sat: r.sat("lsps1-max-channel-balance-sat")?,
        };
        check_options(&o)?;
        let pricing = PricingPolicy {
            base_fee_sat: r.sat("lsps1-base-fee-sat")?,
            fee_ppm_per_year: r.uint("lsps1-fee-ppm-per-year", 10_000_000)?,
            funding_weight: r.uint("lsps1-funding-weight", 400_000)?,
        };
        let payment_expiry_secs = r.uint("lsps1-payment-expiry-secs", 30 * 24 * 3600)?;
        if payment_expiry_secs < 60 {
            return Err(err("lsps1-payment-expiry-secs", "must be at least 60 seconds"));
        }
        let invoice_min_final_cltv = r.uint("lsps1-invoice-cltv", 2016)? as u16;
        if invoice_min_final_cltv < 18 {
            return Err(err(
                "lsps1-invoice-cltv",
                "must be at least 18 blocks (room to hold the payment while the channel opens)",
            ));
        }
        let cltv_safety_margin = r.uint("lsps1-cltv-safety-margin", 1008)? as u32;
        if cltv_safety_margin < 3 {
            return Err(err("lsps1-cltv-safety-margin", "must be at least 3 blocks"));
        }
        if u32::from(invoice_min_final_cltv) < cltv_safety_margin + OPEN_ALLOWANCE_BLOCKS + 6 {
            return Err(err(
                "lsps1-invoice-cltv",
                format!(
                    "must leave room beyond lsps1-cltv-safety-margin ({cltv_safety_margin}) to open the channel: at least {}",
                    cltv_safety_margin + OPEN_ALLOWANCE_BLOCKS + 6
                ),
            ));
        }
        let open_deadline_secs = r.uint("lsps1-open-deadline-secs", 7 * 24 * 3600)?;
        if open_deadline_secs < 10 {
            return Err(err("lsps1-open-deadline-secs", "must be at least 10 seconds"));
        }
        let mpp_timeout_secs = r.uint("lsps1-mpp-timeout-secs", 3600)?;
        if mpp_timeout_secs < 1 {
            return Err(err("lsps1-mpp-timeout-secs", "must be at least 1 second"));
        }
        let rest = rest_config(&r, d.rest.limits)?;
        let tokens: BTreeSet<String> = r.list("lsps1-token")?.into_iter().collect();
        if tokens.iter().any(|t| t.is_empty() || t.len() > 256) {
            return Err(err("lsps1-token", "tokens must be 1 to 256 bytes long"));
        }
        let mut deny_nodes = HashSet::new();
        for n in r.list("lsps1-deny-node")? {
            deny_nodes.insert(read_pubkey(n.trim()).map_err(|e| err("lsps1-deny-node", format!("'{n}' {e}")))?);
        }
        let peer_limits = PeerLimits {
            requests_per_minute: r.positive("lsps1-peer-requests-per-minute", 1_000_000)? as u32,
            burst: r.positive("lsps1-peer-burst", 1_000_000)? as u32,
            max_inflight_per_peer: r.positive("lsps1-peer-max-inflight", 10_000)? as u32,
            max_inflight_total: r.positive("lsps1-max-inflight", 100_000)? as u32,
            ..d.peer_limits
        };
        let onchain = onchain_config(&r)?;
        let admin = admin_config(&r)?;
        let lease_policy = match r.string("lsps1-lease-end-policy")?.as_deref().map(str::trim) {
            None | Some("") | Some("keep") => LeasePolicy::Keep,
            Some("close-idle") => LeasePolicy::CloseIdle {
                idle_blocks: r.uint("lsps1-lease-idle-blocks", 1_000_000)? as u32,
                force_close_after_secs: r.uint("lsps1-lease-force-close-after-secs", 365 * 86_400)?,
            },
            Some(other) => return Err(err("lsps1-lease-end-policy", format!("'{other}' is not keep or close-idle"))),
        };
        Ok(Config {
            options: o,
            pricing,
            payment_expiry_secs,
            invoice_min_final_cltv,
            tokens,
            accept_unknown_tokens: r.bool("lsps1-accept-unknown-tokens")?,
            deny_nodes,
            max_unpaid_orders_per_peer: r.positive("lsps1-max-unpaid-orders-per-peer", 1_000_000)? as u32,
            peer_limits,
            db_path: r.string("lsps1-db-path")?.filter(|s| !s.is_empty()).map(PathBuf::from),
            db: match r.string("lsps1-db")?.filter(|s| !s.trim().is_empty()) {
                None => {
                    if r.string("lsps1-db-password-file")?.is_some_and(|s| !s.trim().is_empty()) {
                        return Err(err("lsps1-db-password-file", "needs lsps1-db=postgres://…"));
                    }
                    None
                }
                Some(u) => Some(DbUrl::parse(&u, r.string("lsps1-db-password-file")?.as_deref())?),
            },
            feature_bit: r.bool("lsps1-feature-bit")?,
            cltv_safety_margin,
            open_deadline_secs,
            mpp_timeout_secs,
            rest,
            onchain,
            admin,
            lease_policy,
        })
    }
}

fn admin_config(r: &Reader<'_>) -> Result<AdminConfig, ConfigError> {
    let bind = match r.string("lsps1-admin-bind")?.filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(b) => Some(
            b.trim()
                .parse::<std::net::SocketAddr>()
                .map_err(|_| err("lsps1-admin-bind", format!("'{b}' is not address:port (IPv6 as [::1]:3011)")))?,
        ),
    };
    let cert = r.string("lsps1-admin-tls-cert")?.filter(|s| !s.is_empty()).map(PathBuf::from);
    let key = r.string("lsps1-admin-tls-key")?.filter(|s| !s.is_empty()).map(PathBuf::from);
    let tls = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => return Err(err("lsps1-admin-tls-key", "is needed with lsps1-admin-tls-cert")),
        (None, Some(_)) => return Err(err("lsps1-admin-tls-cert", "is needed with lsps1-admin-tls-key")),
    };
    if let Some(b) = bind
        && !b.ip().is_loopback()
        && tls.is_none()
    {
        // Runes would cross the network in clear text.
        return Err(err(
            "lsps1-admin-bind",
            format!(
                "{b} is not a loopback address: set lsps1-admin-tls-cert and lsps1-admin-tls-key to serve it off loopback"
            ),
        ));
    }
    let hosts = r.list("lsps1-admin-host")?.into_iter().map(|h| h.trim().to_ascii_lowercase()).collect::<Vec<_>>();
    if let Some(h) = hosts.iter().find(|h| h.is_empty() || h.contains(['/', ' ', '@'])) {
        return Err(err("lsps1-admin-host", format!("'{h}' is not a host name")));
    }
    Ok(AdminConfig { bind, tls, hosts, metrics_open_on_loopback: r.bool("lsps1-metrics-open-on-loopback")? })
}

fn onchain_config(r: &Reader<'_>) -> Result<OnchainConfig, ConfigError> {
    let d = OnchainConfig::default();
    let min_confirmations = r.uint("lsps1-min-onchain-payment-confirmations", 6)? as u16;
    if min_confirmations < 1 {
        // lightningd sees no payment before it is mined (ruling 22).
        return Err(err("lsps1-min-onchain-payment-confirmations", "must be 1 to 6"));
    }
    let expiry_secs = r.uint("lsps1-onchain-payment-expiry-secs", 30 * 24 * 3600)?;
    if expiry_secs < 60 {
        return Err(err("lsps1-onchain-payment-expiry-secs", "must be at least 60 seconds"));
    }
    let address_type = match r.string("lsps1-onchain-address-type")?.as_deref().map(str::trim) {
        None | Some("") | Some("p2tr") => AddressType::P2tr,
        Some("bech32") => AddressType::Bech32,
        Some(other) => {
            return Err(err("lsps1-onchain-address-type", format!("'{other}' is not p2tr or bech32")));
        }
    };
    let max_feerate_perkw = r.uint("lsps1-onchain-max-feerate-perkw", 10_000_000)? as u32;
    if max_feerate_perkw < 253 {
        return Err(err("lsps1-onchain-max-feerate-perkw", "must be at least 253 (the relay floor)"));
    }
    Ok(OnchainConfig {
        enabled: r.bool("lsps1-onchain-payments")?,
        min_confirmations,
        min_payment_size_sat: r.sat("lsps1-min-onchain-payment-size-sat")?,
        expiry_secs,
        grace_blocks: r.uint("lsps1-onchain-grace-blocks", 1008)? as u32,
        surcharge_sat: r.sat("lsps1-onchain-surcharge-sat")?,
        address_type,
        max_feerate_perkw,
        rbf_after_blocks: d.rbf_after_blocks,
    })
}

fn rest_config(r: &Reader<'_>, limits: PeerLimits) -> Result<RestConfig, ConfigError> {
    let mut binds = vec![];
    for b in r.list("lsps1-rest-bind")? {
        let addr: std::net::SocketAddr = b
            .trim()
            .parse()
            .map_err(|_| err("lsps1-rest-bind", format!("'{b}' is not address:port (IPv6 as [::1]:8080)")))?;
        binds.push(addr);
    }
    let cert = r.string("lsps1-rest-tls-cert")?.filter(|s| !s.is_empty()).map(PathBuf::from);
    let key = r.string("lsps1-rest-tls-key")?.filter(|s| !s.is_empty()).map(PathBuf::from);
    let tls = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => return Err(err("lsps1-rest-tls-key", "is needed with lsps1-rest-tls-cert")),
        (None, Some(_)) => return Err(err("lsps1-rest-tls-cert", "is needed with lsps1-rest-tls-key")),
    };
    let trusted_proxy = match r.string("lsps1-rest-trusted-proxy")?.filter(|s| !s.is_empty()) {
        None => None,
        Some(p) => {
            Some(p.trim().parse().map_err(|_| err("lsps1-rest-trusted-proxy", format!("'{p}' is not an IP address")))?)
        }
    };
    let uris = r.list("lsps1-rest-uri")?;
    for u in &uris {
        let ok = u.split_once('@').is_some_and(|(k, hp)| read_pubkey(k).is_ok() && hp.rsplit_once(':').is_some());
        if !ok {
            return Err(err("lsps1-rest-uri", format!("'{u}' is not pubkey@host:port")));
        }
    }
    Ok(RestConfig {
        binds,
        tls,
        trusted_proxy,
        uris,
        cors_origins: r.list("lsps1-rest-cors-origin")?,
        limits: PeerLimits {
            requests_per_minute: r.positive("lsps1-rest-requests-per-minute", 1_000_000)? as u32,
            burst: r.positive("lsps1-rest-burst", 1_000_000)? as u32,
            ..limits
        },
        max_unpaid_per_ip: r.positive("lsps1-rest-max-unpaid-orders-per-ip", 1_000_000)? as u32,
        max_connections: r.positive("lsps1-rest-max-connections", 100_000)? as u32,
    })
}

/// G-02 and the consistency rules: every min ≤ its max, and the channel bounds
/// leave room for at least one order.
pub fn check_options(o: &Lsps1Options) -> Result<(), ConfigError> {
    if o.min_funding_confirms_within_blocks < 1 {
        return Err(err("lsps1-min-funding-confirms-within-blocks", "must be at least 1"));
    }
    if o.max_channel_expiry_blocks < 1 {
        return Err(err("lsps1-max-channel-expiry-blocks", "must be at least 1"));
    }
    let pairs = [
        (
            "lsps1-min-initial-client-balance-sat",
            o.min_initial_client_balance_sat,
            "lsps1-max-initial-client-balance-sat",
            o.max_initial_client_balance_sat,
        ),
        (
            "lsps1-min-initial-lsp-balance-sat",
            o.min_initial_lsp_balance_sat,
            "lsps1-max-initial-lsp-balance-sat",
            o.max_initial_lsp_balance_sat,
        ),
        (
            "lsps1-min-channel-balance-sat",
            o.min_channel_balance_sat,
            "lsps1-max-channel-balance-sat",
            o.max_channel_balance_sat,
        ),
    ];
    for (min_name, min, max_name, max) in pairs {
        if min > max {
            return Err(err(min_name, format!("{min} is above {max_name} ({max})")));
        }
    }
    // bLIP-51: lsp_balance_sat must be at least 1.
    if o.max_initial_lsp_balance_sat < 1 {
        return Err(err("lsps1-max-initial-lsp-balance-sat", "must be at least 1"));
    }
    let min_sum = o.min_initial_lsp_balance_sat.saturating_add(o.min_initial_client_balance_sat).max(1);
    if o.max_channel_balance_sat < min_sum {
        return Err(err(
            "lsps1-max-channel-balance-sat",
            format!(
                "{} is below the smallest possible order (min lsp + min client balance = {min_sum})",
                o.max_channel_balance_sat
            ),
        ));
    }
    let max_sum = o.max_initial_lsp_balance_sat.saturating_add(o.max_initial_client_balance_sat);
    if o.min_channel_balance_sat > max_sum {
        return Err(err(
            "lsps1-min-channel-balance-sat",
            format!(
                "{} is above the largest possible order (max lsp + max client balance = {max_sum})",
                o.min_channel_balance_sat
            ),
        ));
    }
    Ok(())
}

struct Reader<'a>(&'a HashMap<String, OptValue>);

impl Reader<'_> {
    fn default_of(name: &str) -> Option<&'static OptionSpec> {
        OPTIONS.iter().find(|s| s.name == name)
    }

    fn int(&self, name: &str) -> Result<i64, ConfigError> {
        match self.0.get(name) {
            Some(OptValue::Int(i)) => Ok(*i),
            // Config files and `setconfig` can hand over strings; accept plain integers.
            Some(OptValue::Str(s)) => s.trim().parse().map_err(|_| err(name, format!("'{s}' is not an integer"))),
            Some(other) => Err(err(name, format!("expected an integer, got {other:?}"))),
            None => match Self::default_of(name).map(|s| s.kind) {
                Some(OptKind::Int(d)) => Ok(d),
                _ => Err(err(name, "has no default")),
            },
        }
    }

    fn uint(&self, name: &str, max: u64) -> Result<u64, ConfigError> {
        let v = self.int(name)?;
        let v = u64::try_from(v).map_err(|_| err(name, format!("{v} must not be negative")))?;
        if v > max {
            return Err(err(name, format!("{v} is above the largest allowed value {max}")));
        }
        Ok(v)
    }

    fn positive(&self, name: &str, max: u64) -> Result<u64, ConfigError> {
        let v = self.uint(name, max)?;
        if v == 0 {
            return Err(err(name, "must be at least 1"));
        }
        Ok(v)
    }

    /// An amount in sat: at most all bitcoin (2.1e15 sat), so sums of a few stay in i64.
    fn sat(&self, name: &str) -> Result<u64, ConfigError> {
        self.uint(name, MAX_MONEY_SAT)
    }

    fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        match self.0.get(name) {
            Some(OptValue::Bool(b)) => Ok(*b),
            Some(OptValue::Str(s)) => match s.trim() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(err(name, format!("'{s}' is not true or false"))),
            },
            Some(other) => Err(err(name, format!("expected true or false, got {other:?}"))),
            None => match Self::default_of(name).map(|s| s.kind) {
                Some(OptKind::Bool(d)) => Ok(d),
                _ => Err(err(name, "has no default")),
            },
        }
    }

    fn string(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(OptValue::Str(s)) => Ok(Some(s.clone())),
            Some(other) => Err(err(name, format!("expected a string, got {other:?}"))),
        }
    }

    fn list(&self, name: &str) -> Result<Vec<String>, ConfigError> {
        match self.0.get(name) {
            None => Ok(vec![]),
            Some(OptValue::StrList(v)) => Ok(v.clone()),
            Some(OptValue::Str(s)) => Ok(vec![s.clone()]),
            Some(other) => Err(err(name, format!("expected strings, got {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, OptValue)]) -> Result<Config, ConfigError> {
        Config::from_values(&pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    #[test]
    fn defaults_are_consistent() {
        let c = with(&[]).unwrap();
        assert_eq!(c, Config::default());
        assert!(check_options(&c.options).is_ok());
    }

    #[test]
    fn every_option_has_a_unique_lsps1_name() {
        let mut seen = HashSet::new();
        for o in OPTIONS {
            assert!(o.name.starts_with("lsps1-"), "{}", o.name);
            assert!(seen.insert(o.name), "duplicate {}", o.name);
        }
    }

    #[test]
    fn db_urls() {
        assert_eq!(
            DbUrl::parse("/var/lib/lsps1.sqlite3", None).unwrap(),
            DbUrl::Sqlite("/var/lib/lsps1.sqlite3".into())
        );
        assert_eq!(DbUrl::parse("sqlite:///var/x.db", None).unwrap(), DbUrl::Sqlite("/var/x.db".into()));
        assert_eq!(
            DbUrl::parse("postgresql://lsps1@db.internal/lsps1?sslmode=require", Some("/etc/lsps1/pg")).unwrap(),
            DbUrl::Postgres {
                url: "postgresql://lsps1@db.internal/lsps1?sslmode=require".into(),
                password_file: Some("/etc/lsps1/pg".into())
            }
        );
        assert!(DbUrl::parse("postgres://u:secret@h/db", Some("/f")).is_err(), "a password in two places");
        assert!(DbUrl::parse("mysql://h/db", None).is_err());
        assert!(DbUrl::parse("/x.db", Some("/f")).is_err(), "a password file for SQLite");
        assert!(DbUrl::parse("postgres://", None).is_err());
    }

    #[test]
    fn readme_documents_every_option() {
        let readme = include_str!("../README.md");
        for o in OPTIONS {
            assert!(readme.contains(&format!("| `{}` |", o.name)), "README.md has no row for {}", o.name);
            let default = match o.kind {
                OptKind::Int(d) => d.to_string(),
                OptKind::Bool(b) => b.to_string(),
                OptKind::Str | OptKind::Multi => continue,
            };
            assert!(readme.contains(&format!("| `{}` | `{}` |", o.name, default)), "README.md default of {}", o.name);
        }
    }

    #[test]
    fn g02_inconsistent_options_name_the_option() {
        use OptValue::Int;
        let cases: &[(&[(&str, OptValue)], &str)] = &[
            (&[("lsps1-min-funding-confirms-within-blocks", Int(0))], "lsps1-min-funding-confirms-within-blocks"),
            (&[("lsps1-max-channel-expiry-blocks", Int(0))], "lsps1-max-channel-expiry-blocks"),
            (&[("lsps1-min-initial-lsp-balance-sat", Int(20_000_000))], "lsps1-min-initial-lsp-balance-sat"),
            (&[("lsps1-min-initial-client-balance-sat", Int(1))], "lsps1-min-initial-client-balance-sat"),
            (&[("lsps1-min-channel-balance-sat", Int(20_000_000))], "lsps1-min-channel-balance-sat"),
            (
                &[("lsps1-min-channel-balance-sat", Int(1_000)), ("lsps1-max-channel-balance-sat", Int(50_000))],
                "lsps1-max-channel-balance-sat",
            ),
            (
                &[("lsps1-max-initial-lsp-balance-sat", Int(50_000)), ("lsps1-min-initial-lsp-balance-sat", Int(1000))],
                "lsps1-min-channel-balance-sat",
            ),
            (&[("lsps1-min-initial-lsp-balance-sat", Int(-5))], "lsps1-min-initial-lsp-balance-sat"),
            (&[("lsps1-min-required-channel-confirmations", Int(70_000))], "lsps1-min-required-channel-confirmations"),
            (&[("lsps1-deny-node", OptValue::StrList(vec!["02xx".into()]))], "lsps1-deny-node"),
            (&[("lsps1-payment-expiry-secs", Int(5))], "lsps1-payment-expiry-secs"),
            (&[("lsps1-peer-burst", Int(0))], "lsps1-peer-burst"),
            (&[("lsps1-base-fee-sat", Int(i64::MAX))], "lsps1-base-fee-sat"),
            // The lifecycle's and REST's options.
            (&[("lsps1-invoice-cltv", Int(23))], "lsps1-invoice-cltv"),
            (&[("lsps1-cltv-safety-margin", Int(2))], "lsps1-cltv-safety-margin"),
            (&[("lsps1-cltv-safety-margin", Int(200))], "lsps1-invoice-cltv"),
            (&[("lsps1-open-deadline-secs", Int(5))], "lsps1-open-deadline-secs"),
            (&[("lsps1-mpp-timeout-secs", Int(0))], "lsps1-mpp-timeout-secs"),
            (&[("lsps1-rest-bind", OptValue::StrList(vec!["localhost".into()]))], "lsps1-rest-bind"),
            (&[("lsps1-rest-tls-cert", OptValue::Str("/c.pem".into()))], "lsps1-rest-tls-key"),
            (&[("lsps1-rest-trusted-proxy", OptValue::Str("proxy".into()))], "lsps1-rest-trusted-proxy"),
            (&[("lsps1-rest-uri", OptValue::StrList(vec!["nope".into()]))], "lsps1-rest-uri"),
            (&[("lsps1-min-onchain-payment-confirmations", Int(0))], "lsps1-min-onchain-payment-confirmations"),
            (&[("lsps1-min-onchain-payment-confirmations", Int(7))], "lsps1-min-onchain-payment-confirmations"),
            (&[("lsps1-onchain-address-type", OptValue::Str("p2sh".into()))], "lsps1-onchain-address-type"),
            (&[("lsps1-onchain-max-feerate-perkw", Int(100))], "lsps1-onchain-max-feerate-perkw"),
            (&[("lsps1-onchain-payment-expiry-secs", Int(59))], "lsps1-onchain-payment-expiry-secs"),
        ];
        for (vals, option) in cases {
            let e = with(vals).expect_err(option);
            assert_eq!(&e.option, option, "{e}");
        }
    }

    #[test]
    fn lists_and_strings() {
        use OptValue::Int;
        let k = "025b7a68b4cd85668e65db6a343a4c607a462cdd010daa793f82be561a3316c5b1";
        let c = with(&[
            ("lsps1-token", OptValue::StrList(vec!["a".into(), "b".into()])),
            ("lsps1-deny-node", OptValue::StrList(vec![k.to_uppercase()])),
            ("lsps1-max-initial-client-balance-sat", OptValue::Str("5000".into())),
            ("lsps1-supports-zero-channel-reserve", OptValue::Bool(true)),
        ])
        .unwrap();
        assert_eq!(c.tokens.len(), 2);
        assert_eq!(c.deny_nodes.len(), 1);
        assert_eq!(c.options.max_initial_client_balance_sat, 5000);
        assert!(c.options.supports_zero_channel_reserve);
        let r = with(&[
            ("lsps1-rest-bind", OptValue::StrList(vec!["127.0.0.1:3010".into(), "[::1]:3010".into()])),
            ("lsps1-rest-trusted-proxy", OptValue::Str("127.0.0.1".into())),
            ("lsps1-invoice-cltv", Int(24)),
        ])
        .unwrap();
        assert_eq!(r.rest.binds.len(), 2);
        assert!(r.rest.trusted_proxy.is_some() && r.rest.tls.is_none());
        assert_eq!(Config::default().rest.binds, vec![], "REST is off by default");
    }
}
