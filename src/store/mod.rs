//! The order book: SQLite beside the node .
//!
//! One connection, opened once at start, in WAL mode with `synchronous=FULL` (a commit is
//! on disk before the client hears about it), but for new orders: see
//! [`Store::insert_order`] for why they may be lost to a power cut without losing money.
//! Every write that belongs together is one
//! transaction: an order, its payment option and its first event land together or not at
//! all. Calls are blocking; async callers go through [`Store::call`], which runs them on
//! tokio's blocking pool.

mod answers;
mod chain;
pub mod copy;
pub mod db;
mod lifecycle;
pub mod pg;
#[cfg(test)]
mod pg_tests;
pub mod schema;
pub mod schema_pg;
mod status;
#[cfg(test)]
#[path = "../../tests/support/postgres.rs"]
pub(crate) mod test_postgres;

pub use answers::Answers;
pub use chain::{RefundKind, RefundRecord, RefundState, SeenOutput, WatchedFunding};
pub use lifecycle::{HtlcKey, HtlcRecord, HtlcWrite, Lease, Resolution};
pub use status::{
    BLOCKS_1D, BLOCKS_1M, BLOCKS_1W, DAY_MS, DayFigures, HeldFigures, HeldOrder, LeaseFigures, LeaseRow, LeaseState,
    StoreFigures,
};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, TransactionBehavior};
use serde_json::Value;

use crate::order::Transport;
use crate::order::{Event, PaymentMethod, Phase, TransitionError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the order store at {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error(
        "the order store at {path} has schema version {found}, newer than this plugin understands ({supported}); \
         refusing to touch it: upgrade cln-lsps1 or point lsps1-db-path elsewhere"
    )]
    TooNew { path: String, found: u32, supported: u32 },
    #[error("order store: {0}")]
    Sql(rusqlite::Error),
    #[error("cannot open the order store: {0}")]
    OpenPg(String),
    #[error(
        "the order store at {url} has schema version {found}, newer than this plugin understands ({supported}); \
         refusing to touch it: upgrade cln-lsps1 or point lsps1-db elsewhere"
    )]
    TooNewPg { url: String, found: u32, supported: u32 },
    #[error("order store: value out of range for {0}")]
    Range(&'static str),
    #[error("order store: corrupt row: {0}")]
    Corrupt(String),
    #[error(
        "the wallet cannot fund this order: {available_sat} sat free after {reserved_sat} sat held for orders in flight"
    )]
    InsufficientFunds { available_sat: u64, reserved_sat: u64 },
    #[error("the peer already has {0} unpaid orders")]
    TooManyUnpaid(u64),
    #[error("this address already has {0} unpaid orders")]
    TooManyUnpaidFromAddress(u64),
    /// The database cannot be reached now (PostgreSQL down, the pool exhausted): the
    /// request may be retried later.
    #[error("the order store is unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness or foreign-key rule refused a write.
    #[error("order store: constraint: {0}")]
    Constraint(String),
    /// PostgreSQL aborted a transaction for a conflict with another one: run it again.
    #[error("order store: transaction conflict: {0}")]
    Retry(String),
    /// An operation refused as asked (copy-store into a store that is not empty).
    #[error("{0}")]
    Refused(String),
    #[error("order store task failed: {0}")]
    Task(String),
    #[error("order {0} is not in the phase this transition needs")]
    Conflict(String),
    #[error("order store: {0}")]
    Illegal(#[from] TransitionError),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::SqliteFailure(f, msg) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                StoreError::Constraint(msg.unwrap_or_else(|| f.to_string()))
            }
            other => StoreError::Sql(other),
        }
    }
}

fn to_i64(v: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Range(what))
}

fn to_u64(v: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Range(what))
}

/// The BOLT11 payment option of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bolt11Record {
    pub invoice: String,
    pub payment_hash: String,
    /// Known only to the plugin (ruling 12); never leaves the store except to settle.
    pub preimage: String,
    pub payment_secret: String,
    pub expires_at_ms: i64,
    pub min_final_cltv: u16,
    /// This option's price (options may be priced apart, ruling 20).
    pub fee_total_sat: u64,
    pub order_total_sat: u64,
}

/// The on-chain payment option of an order (bLIP-51, payment 3.3; rulings 21–23).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnchainRecord {
    /// A fresh address of the node's wallet, this order's alone (ruling 23).
    pub address: String,
    pub expires_at_ms: i64,
    pub fee_total_sat: u64,
    pub order_total_sat: u64,
    pub min_confirmations: u16,
    /// Paid beyond the total and not yet sent back (ruling 23).
    pub surplus_sat: u64,
}

/// The channel opened for an order (N-09).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub channel_id: Option<String>,
    pub funding_txid: String,
    pub funding_outnum: u32,
    pub funded_at_ms: i64,
    pub expires_at_ms: i64,
    pub lease_end_block: Option<u32>,
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRecord {
    pub order_id: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub client_node_id: String,
    pub transport: Transport,
    pub lsp_balance_sat: u64,
    pub client_balance_sat: u64,
    pub required_channel_confirmations: u16,
    pub funding_confirms_within_blocks: u16,
    pub channel_expiry_blocks: u32,
    /// The token as the client sent it, mirrored (ruling 2): `None` = JSON `null`,
    /// `Some("")` = empty or omitted.
    pub token: Option<String>,
    pub refund_onchain_address: Option<String>,
    pub announce_channel: bool,
    pub client_info: Option<Value>,
    pub phase: Phase,
    /// When the HTLC set became complete and was held (P-05).
    pub held_at_ms: Option<i64>,
    /// The channel opened but the payment went back (ruling 17; reads PAYMENT REFUNDED).
    pub refunded_after_open: bool,
    pub failure_reason: Option<String>,
    pub fee_total_sat: u64,
    pub order_total_sat: u64,
    pub funding_feerate_perkw: u32,
    pub reserved_sat: u64,
    pub expires_at_ms: i64,
    /// The option the client paid through, once it did.
    pub paid_method: Option<PaymentMethod>,
    pub bolt11: Option<Bolt11Record>,
    pub onchain: Option<OnchainRecord>,
    pub channel: Option<ChannelRecord>,
    /// An on-chain payment of this order left the chain after the open (ruling 25).
    pub reorg_flagged: bool,
    /// The node that sells the order (schema v6); the store fills in its own when `None`.
    pub node_id: Option<String>,
    /// The address a REST order came from (per-address limits on every node).
    pub client_ip: Option<String>,
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub seq: i64,
    pub order_id: String,
    pub at_ms: i64,
    pub kind: String,
    pub from_phase: Option<String>,
    pub to_phase: Option<String>,
    pub detail: Option<Value>,
}

/// Limits checked inside the insert transaction, so concurrent requests cannot both pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertLimits {
    /// Funds the wallet can commit to orders in flight, all together.
    pub fundable_sat: u64,
    /// Unexpired unpaid orders the client may hold, this one included.
    pub max_unpaid_per_client: u64,
    /// Unpaid orders one address may have over REST, on every node.
    pub max_unpaid_per_ip: u64,
    /// "Now", for deciding which unpaid orders still count.
    pub now_ms: i64,
}

/// `lsps1-listorders`' on-chain filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnchainFilter {
    /// Orders that offer an on-chain option.
    Offered,
    /// Orders paid on-chain.
    Paid,
    /// Orders with an on-chain refund.
    Refunds,
}

/// Filters of `lsps1-listorders`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderFilter {
    pub phases: Option<Vec<Phase>>,
    pub client_node_id: Option<String>,
    pub created_since_ms: Option<i64>,
    /// Created before this time (exclusive).
    pub created_before_ms: Option<i64>,
    pub limit: Option<u32>,
    /// Orders skipped first (paging, newest first).
    pub offset: Option<u32>,
    pub onchain: Option<OnchainFilter>,
    /// Orders whose id starts with this (the page's search box).
    pub id_prefix: Option<String>,
    /// Orders of every node sharing the order book; by default only this node's.
    pub all_nodes: bool,
}

/// The order store: one interface over SQLite (the default, a file beside the node) and
/// PostgreSQL (one order book shared by several nodes). Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// See [`Store::generation`].
    generation: Arc<AtomicU64>,
    /// The node this plugin sells from (`orders.node_id`): it drives only its own orders.
    node: Arc<str>,
}

#[derive(Clone)]
enum Backend {
    Sqlite(Arc<Sqlite>),
    Postgres(Arc<pg::PgBackend>),
}

struct Sqlite {
    conn: Mutex<Connection>,
    /// A read-only connection for the hot reads (`get_order`, `get_info`'s reserve): in WAL
    /// mode it never waits for the writer, so those reads run inline on the async threads
    /// instead of hopping to the blocking pool. `None` for in-memory stores.
    reader: Option<Mutex<Connection>>,
    /// The file, for connections of their own (long listings).
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.backend {
            Backend::Sqlite(_) => "Store(sqlite)",
            Backend::Postgres(_) => "Store(postgres)",
        })
    }
}

const ORDER_COLUMNS: &str = "o.order_id, o.created_at_ms, o.updated_at_ms, o.client_node_id, o.transport, o.lsp_balance_sat, \
    o.client_balance_sat, o.required_channel_confirmations, o.funding_confirms_within_blocks, o.channel_expiry_blocks, \
    o.token, o.refund_onchain_address, o.announce_channel, o.client_info, o.phase, o.failure_reason, o.fee_total_sat, \
    o.order_total_sat, o.funding_feerate_perkw, o.reserved_sat, o.expires_at_ms, \
    p.invoice, p.payment_hash, p.preimage, p.payment_secret, p.expires_at_ms, p.min_final_cltv, \
    p.fee_total_sat, p.order_total_sat, o.paid_method, \
    c.channel_id, c.funding_txid, c.funding_outnum, c.funded_at_ms, c.expires_at_ms, c.lease_end_block, \
    o.token_null, o.held_at_ms, o.refunded_after_open, \
    q.address, q.expires_at_ms, q.fee_total_sat, q.order_total_sat, q.min_confirmations, o.reorg_flagged, q.surplus_sat, \
    o.node_id, o.client_ip";

const ORDER_FROM: &str = "FROM orders o LEFT JOIN payments p ON p.order_id = o.order_id AND p.method = 'bolt11' \
    LEFT JOIN payments q ON q.order_id = o.order_id AND q.method = 'onchain' \
    LEFT JOIN channels c ON c.order_id = o.order_id";

/// Phases whose orders hold wallet funds back: paid (held) and opening. Unpaid orders do
/// not: otherwise any peer could lock the whole wallet for a payment expiry at no cost by
/// ordering channels it never pays for. A held payment whose funds are gone is refunded.
const RESERVING: &str = "('payment_held', 'opening')";

/// The writer connection, held. Dropping it (after any commit made through it, before the
/// lock is released) moves the store's generation on.
pub(crate) struct WriterGuard<'a> {
    conn: std::sync::MutexGuard<'a, Connection>,
    generation: &'a AtomicU64,
}

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        self.generation.fetch_add(1, Ordering::Release);
    }
}

impl Store {
    /// Open (creating if needed) and migrate the store at `path`. A store written by a newer
    /// version is refused untouched; nothing is ever reset.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let conn = Connection::open(path).map_err(|source| StoreError::Open { path: shown.clone(), source })?;
        let conn = Self::init(conn, &shown)?;
        let reader = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open { path: shown.clone(), source })?;
        reader.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self::sqlite(Sqlite {
            conn: Mutex::new(conn),
            reader: Some(Mutex::new(reader)),
            path: Some(path.to_path_buf()),
        }))
    }

    /// An in-memory store (tests, benchmarks).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn =
            Connection::open_in_memory().map_err(|source| StoreError::Open { path: ":memory:".into(), source })?;
        let conn = Self::init(conn, ":memory:")?;
        Ok(Self::sqlite(Sqlite { conn: Mutex::new(conn), reader: None, path: None }))
    }

    /// Open the PostgreSQL order book at `url` (`postgres://…`), migrating it under an
    /// advisory lock so that several plugins starting together migrate once. `password`
    /// (from `lsps1-db-password-file`) overrides the URL's.
    pub fn open_postgres(url: &str, password: Option<&str>) -> Result<Store, StoreError> {
        let pg = pg::PgBackend::connect(url, password)?;
        Ok(Store { backend: Backend::Postgres(Arc::new(pg)), generation: Arc::default(), node: Arc::from("") })
    }

    fn sqlite(s: Sqlite) -> Store {
        Store { backend: Backend::Sqlite(Arc::new(s)), generation: Arc::default(), node: Arc::from("") }
    }

    /// The store as seen by the node `node_id`: the orders it creates are its own, and the
    /// drivers (holds, opens, expiry, the chain and lease passes) see only those. Orders
    /// recorded before the store knew nodes (schema v5 and older) become this node's.
    pub fn for_node(mut self, node_id: &str) -> Result<Store, StoreError> {
        self.node = Arc::from(node_id);
        if !node_id.is_empty() {
            self.write(|db| {
                db.execute("UPDATE orders SET node_id = ?1 WHERE node_id = ''", &[node_id.into()])?;
                Ok(())
            })?;
        }
        Ok(self)
    }

    /// The node this store drives orders for.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the order book is shared (PostgreSQL): answers cached by generation must not
    /// outlive a write made by another node.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Where the store is, for the logs (never a password).
    pub fn shown(&self) -> String {
        match &self.backend {
            Backend::Sqlite(s) => s.path.as_ref().map_or_else(|| ":memory:".into(), |p| p.display().to_string()),
            Backend::Postgres(p) => p.shown().to_string(),
        }
    }

    fn init(mut conn: Connection, path: &str) -> Result<Connection, StoreError> {
        let open_err = |source| StoreError::Open { path: path.to_string(), source };
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
        // The first statement reads the header: a file that is not SQLite fails here.
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(open_err)?;
        if version > schema::LATEST {
            return Err(StoreError::TooNew { path: path.to_string(), found: version, supported: schema::LATEST });
        }
        // WAL keeps readers off the writer's back; FULL makes each commit durable.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(open_err)?;
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;").map_err(open_err)?;
        for (i, step) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
            tx.execute_batch(step)?;
            tx.pragma_update(None, "user_version", i as u32 + 1)?;
            tx.commit()?;
        }
        Ok(conn)
    }

    /// Run `f` in one write transaction, committed before this returns: on SQLite under the
    /// writer lock (`BEGIN IMMEDIATE`); on PostgreSQL a transaction retried whole when the
    /// server aborts it for a conflict (deadlock, serialization), so `f` may run twice.
    pub(crate) fn write<R>(&self, f: impl Fn(&dyn db::Db) -> Result<R, StoreError>) -> Result<R, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => {
                let mut conn = s.lock(&self.generation);
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let r = f(&*tx)?;
                tx.commit()?;
                Ok(r)
            }
            Backend::Postgres(p) => {
                let r = p.write(false, &f);
                self.generation.fetch_add(1, Ordering::Release);
                r
            }
        }
    }

    /// Run `f` on the read connection (SQLite's reader; a pooled PostgreSQL connection).
    pub(crate) fn read<R>(&self, f: impl Fn(&dyn db::Db) -> Result<R, StoreError>) -> Result<R, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => f(&*s.read_lock()),
            Backend::Postgres(p) => p.read(false, &f),
        }
    }

    /// Run `f` on one consistent snapshot (every figure of an answer from the same moment).
    pub(crate) fn snapshot<R>(&self, f: impl Fn(&dyn db::Db) -> Result<R, StoreError>) -> Result<R, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => {
                let conn = s.read_lock();
                let snapshot = conn.unchecked_transaction()?;
                f(&*snapshot)
            }
            Backend::Postgres(p) => p.read(true, &f),
        }
    }

    /// Run `f` on the writer connection without a transaction of its own (reads that must
    /// see the writer's last commit at once). PostgreSQL: any pooled connection.
    pub(crate) fn read_fresh<R>(&self, f: impl Fn(&dyn db::Db) -> Result<R, StoreError>) -> Result<R, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => f(&*s.lock(&self.generation)),
            Backend::Postgres(p) => p.read(false, &f),
        }
    }

    /// A number that changes after every use of the writer connection, so after every
    /// write: what was read while it stayed the same is still what the store holds. Read
    /// it *before* reading the data it will vouch for. On a shared order book another node
    /// writes without this one knowing, so the number changes at every read.
    pub fn generation(&self) -> u64 {
        match self.backend {
            Backend::Sqlite(_) => self.generation.load(Ordering::Acquire),
            Backend::Postgres(_) => self.generation.fetch_add(1, Ordering::AcqRel),
        }
    }

    /// Whether reads are cheap enough to run inline on the async threads (SQLite's reader).
    /// PostgreSQL's are network round trips: callers hop to the blocking pool.
    pub fn reads_inline(&self) -> bool {
        matches!(self.backend, Backend::Sqlite(_))
    }

    /// One order by id, on the read connection: fast enough to call from async code on
    /// SQLite (see [`Store::read_order_async`]).
    pub fn read_order(&self, order_id: &str) -> Result<Option<OrderRecord>, StoreError> {
        self.read(|db| order_db(db, order_id))
    }

    /// [`Store::reserved_sat`] on the read connection.
    pub fn read_reserved_sat(&self) -> Result<u64, StoreError> {
        self.read(|db| reserved_db(db, &self.node))
    }

    /// [`Store::read_order`] from async code: inline on SQLite, on the blocking pool on
    /// PostgreSQL.
    pub async fn read_order_async(&self, order_id: &str) -> Result<Option<OrderRecord>, StoreError> {
        if self.reads_inline() {
            return self.read_order(order_id);
        }
        let id = order_id.to_string();
        self.call(move |s| s.read_order(&id)).await
    }

    /// [`Store::read_reserved_sat`] from async code.
    pub async fn read_reserved_sat_async(&self) -> Result<u64, StoreError> {
        if self.reads_inline() {
            return self.read_reserved_sat();
        }
        self.call(|s| s.read_reserved_sat()).await
    }

    /// A quick read from async code: inline on SQLite (its reader never waits for the
    /// writer), on the blocking pool on PostgreSQL (a network round trip).
    pub async fn read_async<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Store) -> Result<R, StoreError> + Send + 'static,
    {
        if self.reads_inline() { f(self) } else { self.call(f).await }
    }

    /// Run a blocking store operation on tokio's blocking pool.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Store) -> Result<R, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store)).await.map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Run raw SQL (tests that need to break the store on purpose).
    #[cfg(test)]
    pub(crate) fn exec_for_test(&self, sql: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => Ok(s.lock(&self.generation).execute_batch(sql)?),
            Backend::Postgres(p) => p.batch(sql),
        }
    }

    /// SQLite's writer connection (tests of SQLite's own settings).
    #[cfg(test)]
    pub(crate) fn sqlite_for_test(&self) -> WriterGuard<'_> {
        match &self.backend {
            Backend::Sqlite(s) => s.lock(&self.generation),
            Backend::Postgres(_) => panic!("not a SQLite store"),
        }
    }

    /// Run SQL text as it is, in one transaction: the benchmarks' generated order books.
    #[doc(hidden)]
    pub fn exec_batch_for_bench(&self, sql: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => Ok(s.lock(&self.generation).execute_batch(sql)?),
            Backend::Postgres(p) => p.batch(&format!("BEGIN; {sql} COMMIT;")),
        }
    }

    /// The schema version in the store.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => Ok(s.lock(&self.generation).query_row("PRAGMA user_version", [], |r| r.get(0))?),
            Backend::Postgres(p) => p.schema_version(),
        }
    }

    /// Funds held back by orders in flight: paid and being opened (see `RESERVING`).
    pub fn reserved_sat(&self) -> Result<u64, StoreError> {
        self.read_fresh(|db| reserved_db(db, &self.node))
    }

    /// Insert a new order with its BOLT11 option and its `created` event, in one
    /// transaction that also checks the wallet budget and the client's unpaid quota.
    ///
    /// Committed with `synchronous=NORMAL` on SQLite and `synchronous_commit = off` on
    /// PostgreSQL (the durability policy): a crash may lose the orders created in the last
    /// moments before it, never anything else. That loses no money: an unpaid order's
    /// invoice is known only to this store, so a payment to a lost order finds no order, is
    /// answered `continue`, and lightningd, which has no such invoice, fails it back to the
    /// payer. And the first write about a payment (its HTLC, fully durable) flushes the log
    /// up to it, so an order that was paid is on disk with the payment.
    pub fn insert_order(&self, o: &OrderRecord, limits: InsertLimits) -> Result<(), StoreError> {
        let mut o = o.clone();
        if o.node_id.is_none() {
            o.node_id = Some(self.node.to_string());
        }
        match &self.backend {
            Backend::Sqlite(s) => {
                let mut conn = s.lock(&self.generation);
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                let inserted = (|| {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    insert_order_db(&*tx, &o, limits)?;
                    tx.commit()?;
                    Ok(())
                })();
                // Every other write (HTLCs, holds, opens, settlements) stays FULL.
                conn.pragma_update(None, "synchronous", "FULL")?;
                inserted
            }
            Backend::Postgres(p) => {
                let r = p.write(true, &|db: &dyn db::Db| insert_order_db(db, &o, limits));
                self.generation.fetch_add(1, Ordering::Release);
                r
            }
        }
    }

    /// One order by id.
    pub fn get_order(&self, order_id: &str) -> Result<Option<OrderRecord>, StoreError> {
        self.read_fresh(|db| order_db(db, order_id))
    }

    /// The order of this node a payment hash belongs to, on the read connection (the
    /// `htlc_accepted` fast path: most final-hop HTLCs are the node's own invoices).
    pub fn order_id_by_payment_hash(&self, payment_hash: &str) -> Result<Option<String>, StoreError> {
        self.read(|db| lifecycle::order_id_by_hash_db(db, payment_hash, &self.node))
    }

    /// Orders matching `filter`, newest first.
    /// On a read-only connection of its own: a long listing holds up neither the writer
    /// (HTLC records, new orders) nor the shared reader (the `htlc_accepted` fast path).
    pub fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<OrderRecord>, StoreError> {
        let node = (!filter.all_nodes).then_some(&*self.node);
        match &self.backend {
            Backend::Sqlite(s) => {
                let own = match &s.path {
                    Some(p) => Some(Connection::open_with_flags(
                        p,
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?),
                    None => None,
                };
                match &own {
                    Some(c) => list_orders_db(c, filter, node),
                    None => list_orders_db(&*s.lock(&self.generation), filter, node),
                }
            }
            Backend::Postgres(p) => p.read(false, &|db: &dyn db::Db| list_orders_db(db, filter, node)),
        }
    }

    /// The event log of one order, oldest first.
    pub fn events(&self, order_id: &str) -> Result<Vec<EventRecord>, StoreError> {
        self.read_fresh(|db| events_db(db, order_id))
    }

    /// Apply `event` to an order that is in phase `from`: compare-and-set, with its event
    /// log entry, in one transaction. The target phase comes from the state machine
    /// ([`Event::apply`]), so the store cannot make an illegal move. `Conflict` when the
    /// order is no longer in `from` (another handler, or another node, got there first).
    pub fn transition(
        &self,
        order_id: &str,
        from: Phase,
        event: Event,
        now_ms: i64,
        detail: Option<&Value>,
    ) -> Result<Phase, StoreError> {
        self.write(|db| transition_db(db, order_id, from, event, now_ms, detail))
    }

    /// Unexpired unpaid orders of `client_node_id` at `now_ms`, on every node, on the read
    /// connection (one indexed count). A pre-check only: the insert counts again in its
    /// transaction.
    pub fn unpaid_count(&self, client_node_id: &str, now_ms: i64) -> Result<u64, StoreError> {
        self.read(|db| unpaid_db(db, client_node_id, now_ms))
    }

    /// Unexpired unpaid orders created over REST from `ip`, on every node.
    pub fn unpaid_from_ip(&self, ip: &str, now_ms: i64) -> Result<u64, StoreError> {
        self.read(|db| unpaid_from_ip_db(db, ip, now_ms))
    }
}

impl Sqlite {
    fn lock<'a>(&'a self, generation: &'a AtomicU64) -> WriterGuard<'a> {
        // A panic while holding the lock leaves SQLite consistent (the transaction rolls
        // back on drop), so a poisoned lock is safe to take over.
        WriterGuard { conn: self.conn.lock().unwrap_or_else(|p| p.into_inner()), generation }
    }

    fn read_lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        match &self.reader {
            Some(r) => r.lock().unwrap_or_else(|p| p.into_inner()),
            // In memory: reads share the writer (a read moves no generation).
            None => self.conn.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }
}

/// A row as SQLite gives it, before range checks.
struct RawRow {
    order_id: String,
    created_at_ms: i64,
    updated_at_ms: i64,
    client_node_id: String,
    transport: String,
    lsp_balance_sat: i64,
    client_balance_sat: i64,
    required_channel_confirmations: i64,
    funding_confirms_within_blocks: i64,
    channel_expiry_blocks: i64,
    token: String,
    refund_onchain_address: Option<String>,
    announce_channel: bool,
    client_info: Option<String>,
    phase: String,
    failure_reason: Option<String>,
    fee_total_sat: i64,
    order_total_sat: i64,
    funding_feerate_perkw: i64,
    reserved_sat: i64,
    expires_at_ms: i64,
    invoice: Option<String>,
    payment_hash: Option<String>,
    preimage: Option<String>,
    payment_secret: Option<String>,
    pay_expires_at_ms: Option<i64>,
    min_final_cltv: Option<i64>,
    pay_fee_total_sat: Option<i64>,
    pay_order_total_sat: Option<i64>,
    paid_method: Option<String>,
    channel_id: Option<String>,
    funding_txid: Option<String>,
    funding_outnum: Option<i64>,
    funded_at_ms: Option<i64>,
    chan_expires_at_ms: Option<i64>,
    lease_end_block: Option<i64>,
    token_null: bool,
    held_at_ms: Option<i64>,
    refunded_after_open: bool,
    address: Option<String>,
    onchain_expires_at_ms: Option<i64>,
    onchain_fee_total_sat: Option<i64>,
    onchain_order_total_sat: Option<i64>,
    min_confirmations: Option<i64>,
    reorg_flagged: bool,
    surplus_sat: Option<i64>,
    node_id: Option<String>,
    client_ip: Option<String>,
}

impl RawRow {
    /// The same row read through the backend-neutral [`db::Row`].
    fn from_row(r: &db::Row) -> Result<RawRow, StoreError> {
        Ok(RawRow {
            order_id: r.text(0)?,
            created_at_ms: r.i64(1)?,
            updated_at_ms: r.i64(2)?,
            client_node_id: r.text(3)?,
            transport: r.text(4)?,
            lsp_balance_sat: r.i64(5)?,
            client_balance_sat: r.i64(6)?,
            required_channel_confirmations: r.i64(7)?,
            funding_confirms_within_blocks: r.i64(8)?,
            channel_expiry_blocks: r.i64(9)?,
            token: r.text(10)?,
            refund_onchain_address: r.opt_text(11)?,
            announce_channel: r.flag(12)?,
            client_info: r.opt_text(13)?,
            phase: r.text(14)?,
            failure_reason: r.opt_text(15)?,
            fee_total_sat: r.i64(16)?,
            order_total_sat: r.i64(17)?,
            funding_feerate_perkw: r.i64(18)?,
            reserved_sat: r.i64(19)?,
            expires_at_ms: r.i64(20)?,
            invoice: r.opt_text(21)?,
            payment_hash: r.opt_text(22)?,
            preimage: r.opt_text(23)?,
            payment_secret: r.opt_text(24)?,
            pay_expires_at_ms: r.opt_i64(25)?,
            min_final_cltv: r.opt_i64(26)?,
            pay_fee_total_sat: r.opt_i64(27)?,
            pay_order_total_sat: r.opt_i64(28)?,
            paid_method: r.opt_text(29)?,
            channel_id: r.opt_text(30)?,
            funding_txid: r.opt_text(31)?,
            funding_outnum: r.opt_i64(32)?,
            funded_at_ms: r.opt_i64(33)?,
            chan_expires_at_ms: r.opt_i64(34)?,
            lease_end_block: r.opt_i64(35)?,
            token_null: r.flag(36)?,
            held_at_ms: r.opt_i64(37)?,
            refunded_after_open: r.flag(38)?,
            address: r.opt_text(39)?,
            onchain_expires_at_ms: r.opt_i64(40)?,
            onchain_fee_total_sat: r.opt_i64(41)?,
            onchain_order_total_sat: r.opt_i64(42)?,
            min_confirmations: r.opt_i64(43)?,
            reorg_flagged: r.flag(44)?,
            surplus_sat: r.opt_i64(45)?,
            node_id: r.opt_text(46)?.filter(|n| !n.is_empty()),
            client_ip: r.opt_text(47)?,
        })
    }

    fn into_record(self) -> Result<OrderRecord, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("order {}: {what}", self.order_id));
        let narrow = |v: i64, what: &'static str| -> Result<u32, StoreError> {
            u32::try_from(v).map_err(|_| StoreError::Range(what))
        };
        let phase = Phase::parse(&self.phase).ok_or_else(|| corrupt("unknown phase"))?;
        let transport = match self.transport.as_str() {
            "p2p" => Transport::P2p,
            "rest" => Transport::Rest,
            _ => return Err(corrupt("unknown transport")),
        };
        let paid_method = match self.paid_method.as_deref() {
            None => None,
            Some(m) => Some(PaymentMethod::parse(m).ok_or_else(|| corrupt("unknown paid_method"))?),
        };
        let fee_total_sat = to_u64(self.pay_fee_total_sat.unwrap_or(self.fee_total_sat), "fee_total_sat")?;
        let order_total_sat = to_u64(self.pay_order_total_sat.unwrap_or(self.order_total_sat), "order_total_sat")?;
        let bolt11 = match (self.invoice, self.payment_hash, self.preimage, self.payment_secret, self.pay_expires_at_ms)
        {
            (Some(invoice), Some(payment_hash), Some(preimage), Some(payment_secret), Some(expires_at_ms)) => {
                Some(Bolt11Record {
                    invoice,
                    payment_hash,
                    preimage,
                    payment_secret,
                    expires_at_ms,
                    min_final_cltv: u16::try_from(self.min_final_cltv.unwrap_or(0))
                        .map_err(|_| StoreError::Range("min_final_cltv"))?,
                    fee_total_sat,
                    order_total_sat,
                })
            }
            _ => None,
        };
        let onchain = match (
            self.address,
            self.onchain_expires_at_ms,
            self.onchain_fee_total_sat,
            self.onchain_order_total_sat,
        ) {
            (Some(address), Some(expires_at_ms), Some(fee), Some(total)) => Some(OnchainRecord {
                address,
                expires_at_ms,
                fee_total_sat: to_u64(fee, "fee_total_sat")?,
                order_total_sat: to_u64(total, "order_total_sat")?,
                min_confirmations: u16::try_from(self.min_confirmations.unwrap_or(1))
                    .map_err(|_| StoreError::Range("min_confirmations"))?,
                surplus_sat: to_u64(self.surplus_sat.unwrap_or(0), "surplus_sat")?,
            }),
            _ => None,
        };
        let channel = match (self.funding_txid, self.funding_outnum, self.funded_at_ms, self.chan_expires_at_ms) {
            (Some(funding_txid), Some(outnum), Some(funded_at_ms), Some(expires_at_ms)) => Some(ChannelRecord {
                channel_id: self.channel_id,
                funding_txid,
                funding_outnum: narrow(outnum, "funding_outnum")?,
                funded_at_ms,
                expires_at_ms,
                lease_end_block: self.lease_end_block.map(|b| narrow(b, "lease_end_block")).transpose()?,
            }),
            _ => None,
        };
        Ok(OrderRecord {
            order_id: self.order_id,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            client_node_id: self.client_node_id,
            transport,
            lsp_balance_sat: to_u64(self.lsp_balance_sat, "lsp_balance_sat")?,
            client_balance_sat: to_u64(self.client_balance_sat, "client_balance_sat")?,
            required_channel_confirmations: u16::try_from(self.required_channel_confirmations)
                .map_err(|_| StoreError::Range("required_channel_confirmations"))?,
            funding_confirms_within_blocks: u16::try_from(self.funding_confirms_within_blocks)
                .map_err(|_| StoreError::Range("funding_confirms_within_blocks"))?,
            channel_expiry_blocks: narrow(self.channel_expiry_blocks, "channel_expiry_blocks")?,
            token: (!self.token_null).then_some(self.token),
            refund_onchain_address: self.refund_onchain_address,
            announce_channel: self.announce_channel,
            client_info: self.client_info.and_then(|s| serde_json::from_str(&s).ok()),
            phase,
            held_at_ms: self.held_at_ms,
            refunded_after_open: self.refunded_after_open,
            failure_reason: self.failure_reason,
            fee_total_sat: to_u64(self.fee_total_sat, "fee_total_sat")?,
            order_total_sat: to_u64(self.order_total_sat, "order_total_sat")?,
            funding_feerate_perkw: narrow(self.funding_feerate_perkw, "funding_feerate_perkw")?,
            reserved_sat: to_u64(self.reserved_sat, "reserved_sat")?,
            expires_at_ms: self.expires_at_ms,
            paid_method,
            node_id: self.node_id,
            client_ip: self.client_ip,
            bolt11,
            onchain,
            channel,
            reorg_flagged: self.reorg_flagged,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;

// ---------------------------------------------------------------------------------------
// The same operations written once against the `Db` trait, for both backends (the store's
// methods above still run their rusqlite twins until every caller moves).

/// [`Store::get_order`] on any backend.
pub(crate) fn order_db(db: &dyn db::Db, order_id: &str) -> Result<Option<OrderRecord>, StoreError> {
    let sql = format!("SELECT {ORDER_COLUMNS} {ORDER_FROM} WHERE o.order_id = ?1");
    db.query_opt(&sql, &[order_id.into()])?.map(|r| RawRow::from_row(&r)?.into_record()).transpose()
}

/// Funds held back by `node`'s orders in flight: each node funds its own orders.
fn reserved_db(db: &dyn db::Db, node: &str) -> Result<u64, StoreError> {
    let r = db
        .query_opt(
            &format!(
                "SELECT CAST(COALESCE(SUM(reserved_sat), 0) AS BIGINT) FROM orders \
                 WHERE phase IN {RESERVING} AND node_id = ?1"
            ),
            &[node.into()],
        )?
        .ok_or_else(|| StoreError::Corrupt("no sum".into()))?;
    to_u64(r.i64(0)?, "reserved_sat")
}

fn unpaid_db(db: &dyn db::Db, client_node_id: &str, now_ms: i64) -> Result<u64, StoreError> {
    let r = db
        .query_opt(
            "SELECT COUNT(*) FROM orders WHERE client_node_id = ?1 AND phase = 'awaiting_payment' AND expires_at_ms > ?2",
            &[client_node_id.into(), now_ms.into()],
        )?
        .ok_or_else(|| StoreError::Corrupt("no count".into()))?;
    to_u64(r.i64(0)?, "unpaid order count")
}

/// Unexpired unpaid orders created over REST from `ip`, on every node.
fn unpaid_from_ip_db(db: &dyn db::Db, ip: &str, now_ms: i64) -> Result<u64, StoreError> {
    let r = db
        .query_opt(
            "SELECT COUNT(*) FROM orders WHERE client_ip = ?1 AND phase = 'awaiting_payment' AND expires_at_ms > ?2",
            &[ip.into(), now_ms.into()],
        )?
        .ok_or_else(|| StoreError::Corrupt("no count".into()))?;
    to_u64(r.i64(0)?, "unpaid order count")
}

/// An event of the order's log, with the phases it moved between.
pub(crate) fn event_db(
    db: &dyn db::Db,
    order_id: &str,
    at_ms: i64,
    kind: &str,
    from: Option<Phase>,
    to: Option<Phase>,
    detail: Option<&Value>,
) -> Result<(), StoreError> {
    db.execute_deferred(
        "INSERT INTO events (order_id, at_ms, kind, from_phase, to_phase, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        &[
            order_id.into(),
            at_ms.into(),
            kind.into(),
            from.map(Phase::as_str).into(),
            to.map(Phase::as_str).into(),
            detail.map(|d| d.to_string()).into(),
        ],
    )?;
    Ok(())
}

/// [`Store::insert_order`]'s transaction on any backend: the quota and budget checks, the
/// order, its options and its `created` event. The caller commits.
pub(crate) fn insert_order_db(db: &dyn db::Db, o: &OrderRecord, limits: InsertLimits) -> Result<(), StoreError> {
    // Counted and inserted under the client's lock: two nodes taking orders from one
    // client at once cannot both find room (SQLite's writer lock does this on its own).
    db.lock_key(&format!("client:{}", o.client_node_id))?;
    let unpaid = unpaid_db(db, &o.client_node_id, limits.now_ms)?;
    if unpaid >= limits.max_unpaid_per_client {
        return Err(StoreError::TooManyUnpaid(unpaid));
    }
    if let Some(ip) = &o.client_ip {
        db.lock_key(&format!("ip:{ip}"))?;
        let from_ip = unpaid_from_ip_db(db, ip, limits.now_ms)?;
        if from_ip >= limits.max_unpaid_per_ip {
            return Err(StoreError::TooManyUnpaidFromAddress(from_ip));
        }
    }
    let reserved = reserved_db(db, o.node_id.as_deref().unwrap_or(""))?;
    if reserved.saturating_add(o.reserved_sat) > limits.fundable_sat {
        return Err(StoreError::InsufficientFunds {
            available_sat: limits.fundable_sat.saturating_sub(reserved),
            reserved_sat: reserved,
        });
    }
    // The rows are checked by the database (keys, constraints) when they land; nothing here
    // reads them back, so they travel with the commit.
    db.execute_deferred(
        "INSERT INTO orders (order_id, created_at_ms, updated_at_ms, client_node_id, transport, lsp_balance_sat, \
         client_balance_sat, required_channel_confirmations, funding_confirms_within_blocks, channel_expiry_blocks, \
         token, refund_onchain_address, announce_channel, client_info, phase, failure_reason, fee_total_sat, \
         order_total_sat, funding_feerate_perkw, reserved_sat, expires_at_ms, token_null, node_id, client_ip) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, \
         ?23, ?24)",
        &[
            o.order_id.as_str().into(),
            o.created_at_ms.into(),
            o.updated_at_ms.into(),
            o.client_node_id.as_str().into(),
            o.transport.as_str().into(),
            to_i64(o.lsp_balance_sat, "lsp_balance_sat")?.into(),
            to_i64(o.client_balance_sat, "client_balance_sat")?.into(),
            i64::from(o.required_channel_confirmations).into(),
            i64::from(o.funding_confirms_within_blocks).into(),
            o.channel_expiry_blocks.into(),
            o.token.as_deref().unwrap_or("").into(),
            o.refund_onchain_address.clone().into(),
            o.announce_channel.into(),
            o.client_info.as_ref().map(|v| v.to_string()).into(),
            o.phase.as_str().into(),
            o.failure_reason.clone().into(),
            to_i64(o.fee_total_sat, "fee_total_sat")?.into(),
            to_i64(o.order_total_sat, "order_total_sat")?.into(),
            i64::from(o.funding_feerate_perkw).into(),
            to_i64(o.reserved_sat, "reserved_sat")?.into(),
            o.expires_at_ms.into(),
            o.token.is_none().into(),
            o.node_id.as_deref().unwrap_or("").into(),
            o.client_ip.clone().into(),
        ],
    )?;
    if let Some(b) = &o.bolt11 {
        db.execute_deferred(
            "INSERT INTO payments (order_id, method, expires_at_ms, fee_total_sat, order_total_sat, invoice, \
             payment_hash, preimage, payment_secret, min_final_cltv) VALUES (?1, 'bolt11', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            &[
                o.order_id.as_str().into(),
                b.expires_at_ms.into(),
                to_i64(b.fee_total_sat, "fee_total_sat")?.into(),
                to_i64(b.order_total_sat, "order_total_sat")?.into(),
                b.invoice.as_str().into(),
                b.payment_hash.as_str().into(),
                b.preimage.as_str().into(),
                b.payment_secret.as_str().into(),
                i64::from(b.min_final_cltv).into(),
            ],
        )?;
    }
    if let Some(q) = &o.onchain {
        db.execute_deferred(
            "INSERT INTO payments (order_id, method, expires_at_ms, fee_total_sat, order_total_sat, address, \
             min_confirmations) VALUES (?1, 'onchain', ?2, ?3, ?4, ?5, ?6)",
            &[
                o.order_id.as_str().into(),
                q.expires_at_ms.into(),
                to_i64(q.fee_total_sat, "fee_total_sat")?.into(),
                to_i64(q.order_total_sat, "order_total_sat")?.into(),
                q.address.as_str().into(),
                i64::from(q.min_confirmations).into(),
            ],
        )?;
    }
    let detail = serde_json::json!({
        "transport": o.transport.as_str(),
        "client_node_id": o.client_node_id,
        "order_total_sat": o.order_total_sat,
        "client_info": o.client_info,
    });
    event_db(db, &o.order_id, o.created_at_ms, "created", None, Some(o.phase), Some(&detail))
}

/// [`transition_in`] on any backend: the compare-and-set of a phase, as one statement, so
/// two writers (two nodes) can never both move one order.
pub(crate) fn transition_db(
    db: &dyn db::Db,
    order_id: &str,
    from: Phase,
    event: Event,
    now_ms: i64,
    detail: Option<&Value>,
) -> Result<Phase, StoreError> {
    let to = event.apply(from)?;
    let n = if event == Event::PaymentReorged {
        db.execute(
            "UPDATE orders SET phase = ?1, paid_method = NULL, held_at_ms = NULL, updated_at_ms = ?2 \
             WHERE order_id = ?3 AND phase = ?4",
            &[to.as_str().into(), now_ms.into(), order_id.into(), from.as_str().into()],
        )?
    } else {
        let reason = match event {
            Event::Fail(r) => Some(r.as_str()),
            _ => None,
        };
        let paid = match event {
            Event::PaymentHeld(m) => Some(m.as_str()),
            _ => None,
        };
        let held_at = matches!(event, Event::PaymentHeld(_)).then_some(now_ms);
        db.execute(
            "UPDATE orders SET phase = ?1, failure_reason = COALESCE(?2, failure_reason), \
             paid_method = COALESCE(?3, paid_method), held_at_ms = COALESCE(?4, held_at_ms), updated_at_ms = ?5 \
             WHERE order_id = ?6 AND phase = ?7",
            &[
                to.as_str().into(),
                reason.into(),
                paid.into(),
                held_at.into(),
                now_ms.into(),
                order_id.into(),
                from.as_str().into(),
            ],
        )?
    };
    if n != 1 {
        return Err(StoreError::Conflict(order_id.to_string()));
    }
    event_db(db, order_id, now_ms, event.kind(), Some(from), Some(to), detail)?;
    Ok(to)
}

/// [`Store::list_orders`] on any backend.
pub(crate) fn list_orders_db(
    db: &dyn db::Db,
    filter: &OrderFilter,
    node: Option<&str>,
) -> Result<Vec<OrderRecord>, StoreError> {
    let mut sql = format!("SELECT {ORDER_COLUMNS} {ORDER_FROM} WHERE 1 = 1");
    let mut args: Vec<db::Val> = vec![];
    if let Some(node) = node {
        args.push(node.into());
        sql.push_str(&format!(" AND o.node_id = ?{}", args.len()));
    }
    if let Some(phases) = &filter.phases {
        let marks: Vec<String> = phases
            .iter()
            .map(|p| {
                args.push(p.as_str().into());
                format!("?{}", args.len())
            })
            .collect();
        sql.push_str(&format!(" AND o.phase IN ({})", if marks.is_empty() { "NULL".into() } else { marks.join(", ") }));
    }
    if let Some(node) = &filter.client_node_id {
        args.push(node.as_str().into());
        sql.push_str(&format!(" AND o.client_node_id = ?{}", args.len()));
    }
    if let Some(since) = filter.created_since_ms {
        args.push(since.into());
        sql.push_str(&format!(" AND o.created_at_ms >= ?{}", args.len()));
    }
    if let Some(prefix) = &filter.id_prefix {
        // A range on the primary key, not LIKE: case-sensitive and indexed.
        args.push(prefix.as_str().into());
        let lo = args.len();
        args.push(format!("{prefix}\u{10FFFF}").into());
        sql.push_str(&format!(" AND o.order_id >= ?{lo} AND o.order_id < ?{}", args.len()));
    }
    if let Some(before) = filter.created_before_ms {
        args.push(before.into());
        sql.push_str(&format!(" AND o.created_at_ms < ?{}", args.len()));
    }
    match filter.onchain {
        None => {}
        Some(OnchainFilter::Offered) => sql.push_str(" AND q.address IS NOT NULL"),
        Some(OnchainFilter::Paid) => sql.push_str(" AND o.paid_method = 'onchain'"),
        Some(OnchainFilter::Refunds) => {
            sql.push_str(" AND EXISTS (SELECT 1 FROM chain_refunds r WHERE r.order_id = o.order_id)")
        }
    }
    sql.push_str(" ORDER BY o.created_at_ms DESC, o.order_id");
    match (filter.limit, filter.offset) {
        (Some(limit), Some(offset)) => sql.push_str(&format!(" LIMIT {limit} OFFSET {offset}")),
        (Some(limit), None) => sql.push_str(&format!(" LIMIT {limit}")),
        (None, Some(offset)) => sql.push_str(&format!(" LIMIT -1 OFFSET {offset}")),
        (None, None) => {}
    }
    db.query(&sql, &args)?.iter().map(|r| RawRow::from_row(r)?.into_record()).collect()
}

/// [`Store::events`] on any backend.
pub(crate) fn events_db(db: &dyn db::Db, order_id: &str) -> Result<Vec<EventRecord>, StoreError> {
    db.query(
        "SELECT seq, order_id, at_ms, kind, from_phase, to_phase, detail FROM events WHERE order_id = ?1 ORDER BY seq",
        &[order_id.into()],
    )?
    .iter()
    .map(|r| {
        Ok(EventRecord {
            seq: r.i64(0)?,
            order_id: r.text(1)?,
            at_ms: r.i64(2)?,
            kind: r.text(3)?,
            from_phase: r.opt_text(4)?,
            to_phase: r.opt_text(5)?,
            detail: r.opt_text(6)?.and_then(|s| serde_json::from_str(&s).ok()),
        })
    })
    .collect()
}
