//! The PostgreSQL schema on a real server: the steps apply once under the advisory lock
//! even when two plugins start together, and the running totals' triggers count like
//! SQLite's. Skipped, with the reason, where PostgreSQL is absent, unless
//! `LSPS1_REQUIRE_POSTGRES=1`.

#[path = "support/postgres.rs"]
mod postgres;

use cln_lsps1::store::schema_pg::{MIGRATION_LOCK, PG_MIGRATIONS, VERSION_TABLE};
use postgres::Postgres;

fn server() -> Option<Postgres> {
    match Postgres::start() {
        Ok(pg) => Some(pg),
        Err(why) => {
            assert!(std::env::var("LSPS1_REQUIRE_POSTGRES").as_deref() != Ok("1"), "LSPS1_REQUIRE_POSTGRES=1: {why}");
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// What the plugin does at start: the version table, then every missing step, under the lock.
async fn migrate(url: &str) -> i64 {
    let mut c = connect(url).await;
    let tx = c.transaction().await.expect("begin");
    // The lock first: even the version table is made by one plugin only.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.expect("lock");
    tx.batch_execute(VERSION_TABLE).await.expect("version table");
    let v: i64 = tx.query_one("SELECT version FROM lsps1_schema", &[]).await.expect("version").get(0);
    for (i, step) in PG_MIGRATIONS.iter().enumerate().skip(v as usize) {
        tx.batch_execute(step).await.unwrap_or_else(|e| panic!("step v{}: {e}", i + 1));
    }
    tx.execute("UPDATE lsps1_schema SET version = $1", &[&(PG_MIGRATIONS.len() as i64)]).await.expect("set");
    tx.commit().await.expect("commit");
    v
}

#[tokio::test]
async fn migrations_apply_once_and_the_totals_count() {
    let Some(pg) = server() else { return };
    pg.create_db("lsps1").unwrap();
    let url = pg.url("lsps1");
    let (a, b) = tokio::join!(migrate(&url), migrate(&url));
    assert_eq!((a.min(b), a.max(b)), (0, PG_MIGRATIONS.len() as i64), "one migrated, the other found it done");

    let c = connect(&url).await;
    c.batch_execute(
        "INSERT INTO orders (order_id, created_at_ms, updated_at_ms, client_node_id, transport, lsp_balance_sat, \
         client_balance_sat, required_channel_confirmations, funding_confirms_within_blocks, channel_expiry_blocks, \
         token, announce_channel, phase, fee_total_sat, order_total_sat, funding_feerate_perkw, reserved_sat, \
         expires_at_ms) VALUES ('o1', 86400000, 86400000, 'p', 'p2p', 100000, 0, 0, 6, 100, '', 0, 'awaiting_payment', \
         1000, 1000, 253, 0, 999999999999); \
         INSERT INTO payments (order_id, method, expires_at_ms, fee_total_sat, order_total_sat) \
         VALUES ('o1', 'bolt11', 1, 1200, 1200); \
         UPDATE orders SET phase = 'payment_held', paid_method = 'bolt11', updated_at_ms = 172800000 WHERE order_id = 'o1'; \
         UPDATE orders SET phase = 'opening', updated_at_ms = 172800000 WHERE order_id = 'o1'; \
         UPDATE orders SET phase = 'completed', updated_at_ms = 172800000 WHERE order_id = 'o1'; \
         INSERT INTO channels (order_id, funding_txid, funding_outnum, funded_at_ms, expires_at_ms, lease_end_block) \
         VALUES ('o1', 'aa', 0, 1, 2, 500);",
    )
    .await
    .unwrap();
    let phases: Vec<(String, i64)> = c
        .query("SELECT phase, orders FROM stats_phase ORDER BY phase", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        phases,
        vec![
            ("awaiting_payment".into(), 0),
            ("completed".into(), 1),
            ("opening".into(), 0),
            ("payment_held".into(), 0)
        ]
    );
    let day =
        c.query_one("SELECT completed, revenue_sat, capacity_sat FROM stats_daily WHERE day = 2", &[]).await.unwrap();
    assert_eq!(
        (day.get::<_, i64>(0), day.get::<_, i64>(1), day.get::<_, i64>(2)),
        (1, 1200, 100_000),
        "the paid option's fee"
    );
    let lease = c.query_one("SELECT channels, leased_sat FROM stats_lease_ends WHERE block = 500", &[]).await.unwrap();
    assert_eq!((lease.get::<_, i64>(0), lease.get::<_, i64>(1)), (1, 100_000));
    // The event log stays append-only.
    c.batch_execute("INSERT INTO events (order_id, at_ms, kind) VALUES ('o1', 1, 'x')").await.unwrap();
    assert!(c.batch_execute("DELETE FROM events").await.is_err());
}

#[test]
fn store_statements_run_translated_through_the_trait() {
    use cln_lsps1::store::db::{Db, Val};
    use cln_lsps1::store::pg::PgBackend;
    let Some(pg) = server() else { return };
    pg.create_db("trait").unwrap();
    let backend = PgBackend::connect(&pg.url("trait"), None).unwrap();
    // The store's blocking calls, from a plain thread: the backend drives its own runtime.
    let out = backend
        .write(false, &|db: &dyn Db| {
            db.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, h BIGINT, s TEXT)", &[]).unwrap();
            db.execute("INSERT OR IGNORE INTO t (k, h, s) VALUES (?1, ?2, ?3)", &["a".into(), 5i64.into(), Val::Null])
                .unwrap();
            let again = db
                .execute("INSERT OR IGNORE INTO t (k, h, s) VALUES (?1, ?2, ?3)", &["a".into(), 9i64.into(), Val::Null])
                .unwrap();
            let moved = db
                .execute(
                    "UPDATE t SET h = MAX(COALESCE(h, 0), ?2) WHERE k = ?1 AND s IS ?3",
                    &["a".into(), 7i64.into(), Val::Null],
                )
                .unwrap();
            let row = db
                .query_opt("SELECT h, s, CAST(SUM(h) OVER () AS BIGINT) FROM t WHERE k = ?1", &["a".into()])
                .unwrap()
                .unwrap();
            Ok((again, moved, row.i64(0).unwrap(), row.opt_text(1).unwrap(), row.i64(2).unwrap()))
        })
        .unwrap();
    assert_eq!(out, (0, 1, 7, None, 7));
}

/// TLS as the URL asks, as libpq reads it: `sslmode=verify-full` with `sslrootcert` (a
/// private CA) connects over TLS; the same server without the CA file is refused (its
/// certificate is checked in every TLS mode); `sslmode=disable` connects in the clear.
#[test]
fn tls_as_the_url_asks() {
    use cln_lsps1::store::db::Db;
    use cln_lsps1::store::pg::PgBackend;
    let Some(mut pg) = server() else { return };
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    pg.enable_tls(&ck.cert.pem(), &ck.key_pair.serialize_pem()).unwrap();
    pg.create_db("tls").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let ssl = |b: &PgBackend| {
        b.read(false, &|db: &dyn Db| {
            db.query_opt("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])?.unwrap().flag(0)
        })
        .unwrap()
    };
    let url = pg.url("tls");
    let verified = PgBackend::connect(&format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display()), None)
        .unwrap_or_else(|e| panic!("verify-full with the CA: {e}; {}", pg.log_tail()));
    assert!(ssl(&verified), "the connection is TLS");
    assert!(PgBackend::connect(&format!("{url}?sslmode=require"), None).is_err(), "an unknown CA is refused");
    let clear = PgBackend::connect(&format!("{url}?sslmode=disable"), None).unwrap();
    assert!(!ssl(&clear));
}
