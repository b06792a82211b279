//! The [`Db`] trait on PostgreSQL: a pooled `tokio-postgres` client (deadpool-postgres),
//! driven from the store's blocking calls with `Handle::block_on` (tokio allows it on the
//! blocking pool, where `Store::call` runs them). Statements are translated from the store's
//! spelling once ([`pg_sql`]) and prepared through the client's statement cache.

use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::GenericClient;

use super::StoreError;
use super::db::{Db, Row, Val, pg_sql};
use super::schema_pg::{MIGRATION_LOCK, PG_MIGRATIONS, VERSION_TABLE};

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => v.to_string().to_sql(ty, out),
                _ => Err(format!("an integer cannot be bound as {ty}").into()),
            },
            Val::Text(s) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn read_row(r: &tokio_postgres::Row) -> Result<Row, StoreError> {
    let mut out = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i).map_err(classify)?.map(Val::Int),
            Type::INT4 => r.try_get::<_, Option<i32>>(i).map_err(classify)?.map(|v| Val::Int(v.into())),
            Type::INT2 => r.try_get::<_, Option<i16>>(i).map_err(classify)?.map(|v| Val::Int(v.into())),
            Type::BOOL => r.try_get::<_, Option<bool>>(i).map_err(classify)?.map(|v| Val::Int(v.into())),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                r.try_get::<_, Option<String>>(i).map_err(classify)?.map(Val::Text)
            }
            ref other => {
                return Err(StoreError::Corrupt(format!(
                    "postgres: column {} is {other}; cast it to BIGINT or TEXT in the statement",
                    col.name()
                )));
            }
        };
        out.push(v.unwrap_or(Val::Null));
    }
    Ok(Row(out))
}

/// A statement sent without waiting for its answer: pipelined with the next one that is
/// waited for (tokio-postgres sends requests in the order they are first polled).
enum Pending {
    /// Simple-protocol text (`BEGIN`).
    Text(String),
    /// A write whose row count nobody reads (an event, an insert checked at commit).
    Exec(String, Vec<Val>),
}

/// A pooled connection or a transaction on one, used from a blocking thread. Writes whose
/// answer is not needed ([`Db::execute_deferred`]) and the transaction's `BEGIN` wait in
/// `pending` and go out in one pipeline with the next statement that is waited for, so a
/// transaction costs a round trip per read, not per statement.
pub struct PgDb<'a, C: GenericClient> {
    c: &'a C,
    pending: std::cell::RefCell<Vec<Pending>>,
}

fn params(args: &[Val]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

impl<'a, C: GenericClient> PgDb<'a, C> {
    pub fn new(c: &'a C) -> Self {
        PgDb { c, pending: std::cell::RefCell::new(vec![]) }
    }

    fn defer_text(&self, sql: &str) {
        self.pending.borrow_mut().push(Pending::Text(sql.to_string()));
    }

    /// Run what is pending and then `op`, in one pipeline; `op`'s answer. The statements
    /// are prepared first (from the cache, after their first use), so nothing can overtake.
    fn pipelined<T>(&self, op: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        futures::executor::block_on(async {
            let mut prepared = Vec::with_capacity(pending.len());
            for p in &pending {
                prepared.push(match p {
                    Pending::Exec(sql, _) => Some(self.c.prepare_cached(sql).await.map_err(classify)?),
                    Pending::Text(_) => None,
                });
            }
            let sends = pending.iter().zip(&prepared).map(|(p, st)| async move {
                match (p, st) {
                    (Pending::Exec(_, args), Some(st)) => self.c.execute(st, &params(args)).await.map(|_| ()),
                    (Pending::Text(t), _) => self.c.batch_execute(t).await,
                    _ => Ok(()),
                }
            });
            let (sent, out) = futures::future::join(futures::future::join_all(sends), op).await;
            // The first failure is the one to report: what follows it failed because of it.
            for r in sent {
                r.map_err(classify)?;
            }
            out
        })
    }

    /// Send what is pending, if anything, and wait for it.
    fn flush(&self) -> Result<(), StoreError> {
        if self.pending.borrow().is_empty() {
            return Ok(());
        }
        self.pipelined(async { Ok(()) })
    }

    /// Send what is pending with `tail` (the transaction's end), waiting for all of it.
    fn finish(&self, tail: &str) -> Result<(), StoreError> {
        self.pipelined(async { self.c.batch_execute(tail).await.map_err(classify) })
    }
}

impl<C: GenericClient> Db for PgDb<'_, C> {
    fn execute(&self, sql: &str, args: &[Val]) -> Result<u64, StoreError> {
        let sql = pg_sql(sql);
        let stmt = futures::executor::block_on(self.c.prepare_cached(&sql)).map_err(classify)?;
        self.pipelined(async { self.c.execute(&stmt, &params(args)).await.map_err(classify) })
    }

    fn execute_deferred(&self, sql: &str, args: &[Val]) -> Result<(), StoreError> {
        self.pending.borrow_mut().push(Pending::Exec(pg_sql(sql), args.to_vec()));
        Ok(())
    }

    fn query(&self, sql: &str, args: &[Val]) -> Result<Vec<Row>, StoreError> {
        let sql = pg_sql(sql);
        let stmt = futures::executor::block_on(self.c.prepare_cached(&sql)).map_err(classify)?;
        self.pipelined(async {
            let rows = self.c.query(&stmt, &params(args)).await.map_err(classify)?;
            rows.iter().map(read_row).collect()
        })
    }

    fn lock_key(&self, key: &str) -> Result<(), StoreError> {
        self.query("SELECT pg_advisory_xact_lock(hashtextextended(?1, 0))::text", &[key.into()]).map(|_| ())
    }
}

/// The PostgreSQL side of [`super::Store`]: a pool of connections driven by a small runtime
/// of its own, so that the store's blocking calls work from any thread (the blocking pool,
/// a test, the copy command) without borrowing the plugin's async threads.
pub struct PgBackend {
    pool: deadpool_postgres::Pool,
    rt: Option<tokio::runtime::Runtime>,
    /// What the URL names, without its password (for messages).
    shown: String,
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        // Dropping a runtime blocks; from async code that panics. Let its threads go.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Waits longer than this for a connection are an outage: the caller answers "try again".
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// At most this many retries of a transaction aborted for a conflict with another one.
const CONFLICT_RETRIES: usize = 20;

fn classify(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
            StoreError::Retry(e.to_string())
        }
        Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::FOREIGN_KEY_VIOLATION => {
            StoreError::Constraint(e.to_string())
        }
        Some(c) if c.code().starts_with("08") || c.code().starts_with("57P") || c.code().starts_with("53") => {
            StoreError::Unavailable(e.to_string())
        }
        Some(_) => StoreError::Corrupt(format!("postgres: {e}")),
        // No SQLSTATE: the connection itself failed (closed, reset, timed out).
        None => StoreError::Unavailable(e.to_string()),
    }
}

/// The URL as the driver takes it, and the CA file it names. libpq's `sslrootcert` (a
/// private CA) is taken out, and `sslmode=verify-ca`/`verify-full` become `require`: the
/// driver knows neither, and rustls checks the chain and the name in every mode.
pub fn libpq_tls(url: &str) -> (String, Option<std::path::PathBuf>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_string(), None) };
    let mut rootcert = None;
    let mut kept = vec![];
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslrootcert", v)) => rootcert = Some(std::path::PathBuf::from(percent_decode(v))),
            Some(("sslmode", "verify-ca" | "verify-full")) => kept.push("sslmode=require".to_string()),
            _ => kept.push(pair.to_string()),
        }
    }
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    (url, rootcert)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn shown_url(cfg: &tokio_postgres::Config) -> String {
    let host = cfg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("postgres://{}@{host}:{port}/{}", cfg.get_user().unwrap_or(""), cfg.get_dbname().unwrap_or(""))
}

impl PgBackend {
    /// Connect to `url` and migrate the schema under the advisory lock. A database written
    /// by a newer version is refused untouched.
    pub fn connect(url: &str, password: Option<&str>) -> Result<PgBackend, StoreError> {
        let (url, rootcert) = libpq_tls(url);
        let mut cfg: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::OpenPg(format!("lsps1-db is not a PostgreSQL URL: {e}")))?;
        if let Some(p) = password {
            cfg.password(p);
        }
        cfg.application_name("cln-lsps1");
        cfg.connect_timeout(CONNECT_TIMEOUT);
        // A dead peer (a failed-over server) is noticed in seconds, not at the next timeout.
        cfg.keepalives_idle(Duration::from_secs(10));
        let shown = shown_url(&cfg);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lsps1-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::OpenPg(format!("cannot start the database runtime: {e}")))?;
        let mgr_cfg = deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast };
        let mgr = if cfg.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
            deadpool_postgres::Manager::from_config(cfg, tokio_postgres::NoTls, mgr_cfg)
        } else {
            // `sslmode=prefer` (the default), `require`, `verify-ca` or `verify-full`: the
            // server's certificate and name are always checked, against `sslrootcert` when the
            // URL names one (a private CA, as libpq reads it), else against the web's roots.
            let roots = match &rootcert {
                None => tokio_rustls::rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
                Some(path) => {
                    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
                    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
                    let certs = CertificateDer::pem_file_iter(path)
                        .map_err(|e| StoreError::OpenPg(format!("sslrootcert {}: {e}", path.display())))?;
                    for c in certs {
                        let c = c.map_err(|e| StoreError::OpenPg(format!("sslrootcert {}: {e}", path.display())))?;
                        roots.add(c).map_err(|e| StoreError::OpenPg(format!("sslrootcert {}: {e}", path.display())))?;
                    }
                    if roots.is_empty() {
                        return Err(StoreError::OpenPg(format!("sslrootcert {}: no certificate", path.display())));
                    }
                    roots
                }
            };
            let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
                tokio_rustls::rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::OpenPg(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            deadpool_postgres::Manager::from_config(cfg, tokio_postgres_rustls::MakeRustlsConnect::new(tls), mgr_cfg)
        };
        let pool = {
            let _guard = rt.enter();
            deadpool_postgres::Pool::builder(mgr)
                .max_size(16)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(CONNECT_TIMEOUT))
                .create_timeout(Some(CONNECT_TIMEOUT))
                .recycle_timeout(Some(CONNECT_TIMEOUT))
                .build()
                .map_err(|e| StoreError::OpenPg(format!("cannot build the connection pool: {e}")))?
        };
        let backend = PgBackend { pool, rt: Some(rt), shown };
        backend.migrate()?;
        Ok(backend)
    }

    /// Run `fut` on this backend's runtime and wait for it from any thread.
    fn on_rt<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T, StoreError> {
        let rt = self.rt.as_ref().ok_or_else(|| StoreError::Unavailable("the store is closing".into()))?;
        futures::executor::block_on(rt.spawn(fut)).map_err(|e| StoreError::Task(e.to_string()))
    }

    fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let pool = self.pool.clone();
        self.on_rt(async move { pool.get().await })?
            .map_err(|e| StoreError::Unavailable(format!("cannot reach PostgreSQL at {}: {e}", self.shown)))
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client()?;
        futures::executor::block_on(async {
            let tx = client.transaction().await.map_err(classify)?;
            // The lock first: even the version table is made by one plugin only.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(classify)?;
            tx.batch_execute(VERSION_TABLE).await.map_err(classify)?;
            let v: i64 = tx.query_one("SELECT version FROM lsps1_schema", &[]).await.map_err(classify)?.get(0);
            let latest = PG_MIGRATIONS.len() as i64;
            if v > latest {
                return Err(StoreError::TooNewPg {
                    url: self.shown.clone(),
                    found: u32::try_from(v).unwrap_or(u32::MAX),
                    supported: latest as u32,
                });
            }
            for (i, step) in PG_MIGRATIONS.iter().enumerate().skip(v as usize) {
                tx.batch_execute(step).await.map_err(|e| StoreError::OpenPg(format!("schema step v{}: {e}", i + 1)))?;
            }
            tx.execute("UPDATE lsps1_schema SET version = $1", &[&latest]).await.map_err(classify)?;
            tx.commit().await.map_err(classify)
        })
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let client = self.client()?;
        let v: i64 = futures::executor::block_on(client.query_one("SELECT version FROM lsps1_schema", &[]))
            .map_err(classify)?
            .get(0);
        u32::try_from(v).map_err(|_| StoreError::Range("schema version"))
    }

    /// Run SQL text as it is (tests; the copy command's checks).
    pub fn batch(&self, sql: &str) -> Result<(), StoreError> {
        let client = self.client()?;
        futures::executor::block_on(client.batch_execute(sql)).map_err(classify)
    }

    /// Run `f` in one transaction (READ COMMITTED: the compare-and-sets are single
    /// statements and the read-decide-writes take [`Db::lock_key`]), committed before this
    /// returns; run again when the server aborts it for a conflict. `relaxed`: committed
    /// without waiting for the flush (new orders, see `Store::insert_order`).
    pub fn write<R>(&self, relaxed: bool, f: &dyn Fn(&dyn Db) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let client = self.client()?;
        // The transaction opens with its first statement, in the same round trip.
        let begin = if relaxed { "BEGIN; SET LOCAL synchronous_commit = off" } else { "BEGIN" };
        let mut attempt = 0;
        loop {
            let db = PgDb::new(&client);
            db.defer_text(begin);
            let outcome = f(&db).and_then(|r| db.finish("COMMIT").map(|()| r));
            if outcome.is_err() {
                // Whatever failed (a statement, its pipeline, the COMMIT), nothing of it stays:
                // a ROLLBACK outside a transaction is only a warning, and a connection that
                // cannot even roll back is dropped by the pool's check.
                db.pending.borrow_mut().clear();
                let _ = futures::executor::block_on(client.batch_execute("ROLLBACK"));
            }
            match outcome {
                Err(StoreError::Retry(_)) if attempt < CONFLICT_RETRIES => attempt += 1,
                other => return other,
            }
        }
    }

    /// Run `f` on a pooled connection; `snapshot`: in one read-only REPEATABLE READ
    /// transaction, so every read sees the same moment.
    pub fn read<R>(&self, snapshot: bool, f: &dyn Fn(&dyn Db) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let mut client = self.client()?;
        if !snapshot {
            let db = PgDb::new(&client);
            let r = f(&db)?;
            db.flush()?;
            return Ok(r);
        }
        let tx = futures::executor::block_on(
            client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start(),
        )
        .map_err(classify)?;
        let db = PgDb::new(&tx);
        let r = f(&db)?;
        db.flush()?;
        futures::executor::block_on(tx.commit()).map_err(classify)?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::libpq_tls;

    #[test]
    fn libpq_tls_parameters_are_read_and_taken_out() {
        assert_eq!(libpq_tls("postgres://u@h/db"), ("postgres://u@h/db".into(), None));
        let (url, ca) =
            libpq_tls("postgres://u@h:5432/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5");
        assert_eq!(url, "postgres://u@h:5432/db?sslmode=require&connect_timeout=5");
        assert_eq!(ca.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        assert_eq!(libpq_tls("postgres://u@h/db?sslrootcert=/x").0, "postgres://u@h/db");
    }
}
