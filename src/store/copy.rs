//! Moving an LSP's order book between backends: `cln-lsps1 copy-store FROM TO` copies every
//! table of an SQLite store into an empty PostgreSQL database (or back), in one transaction
//! on the target, and compares the row counts of every table before it commits. A target
//! that already holds orders is refused untouched.

use super::db::{Db, Val};
use super::{Store, StoreError};

/// The store's tables, parents before children. Running totals come last: the triggers
/// fill them as the rows land, and they are then replaced by the source's own, so the
/// figures carry over exactly.
pub const TABLES: [&str; 8] =
    ["orders", "payments", "htlcs", "channels", "events", "chain_outputs", "chain_refunds", "chain_blocks"];
pub const TOTALS: [&str; 4] = ["stats_phase", "stats_daily", "stats_refunds", "stats_lease_ends"];

/// Each running-total table's key and its counts: read as one sum per key, because
/// PostgreSQL spreads a total over slots and SQLite keeps one row.
fn total_columns(table: &str) -> (&'static str, &'static [&'static str]) {
    match table {
        "stats_phase" => ("phase", &["orders"]),
        "stats_daily" => ("day", &["created", "completed", "failed", "revenue_sat", "capacity_sat"]),
        "stats_refunds" => ("cause", &["refunds"]),
        _ => ("block", &["channels", "leased_sat"]),
    }
}

/// One table as read from the source: its name, columns and rows.
type TableRows = (&'static str, Vec<String>, Vec<Vec<Val>>);

/// What was copied: each table and its rows.
pub type CopyReport = Vec<(&'static str, u64)>;

fn columns(store: &Store, db: &dyn Db, table: &str) -> Result<Vec<String>, StoreError> {
    let sql = if store.is_shared() {
        "SELECT CAST(column_name AS TEXT) FROM information_schema.columns WHERE table_name = ?1 \
         AND table_schema = current_schema() ORDER BY ordinal_position"
    } else {
        "SELECT name FROM pragma_table_info(?1) ORDER BY cid"
    };
    db.query(sql, &[table.into()])?.iter().map(|r| r.text(0)).collect()
}

fn count(db: &dyn Db, table: &str) -> Result<u64, StoreError> {
    let n = db.query_opt(&format!("SELECT COUNT(*) FROM {table}"), &[])?.map(|r| r.i64(0)).transpose()?.unwrap_or(0);
    u64::try_from(n).map_err(|_| StoreError::Range("row count"))
}

/// Copy `from` into `to`, which must hold no order and no event.
pub fn copy_store(from: &Store, to: &Store) -> Result<CopyReport, StoreError> {
    if from.schema_version()? != to.schema_version()? {
        return Err(StoreError::Refused("the two stores have different schema versions".into()));
    }
    let data: Vec<TableRows> = from.snapshot(|db| {
        let mut out = vec![];
        for t in TABLES {
            let cols = columns(from, db, t)?;
            let rows = db.query(&format!("SELECT {} FROM {t}", cols.join(", ")), &[])?;
            out.push((t, cols, rows.into_iter().map(|r| r.0).collect()));
        }
        for t in TOTALS {
            let (key, counts) = total_columns(t);
            let sums: Vec<String> = counts.iter().map(|c| format!("CAST(SUM({c}) AS BIGINT)")).collect();
            let rows = db.query(&format!("SELECT {key}, {} FROM {t} GROUP BY {key}", sums.join(", ")), &[])?;
            let cols = std::iter::once(key).chain(counts.iter().copied()).map(String::from).collect();
            out.push((t, cols, rows.into_iter().map(|r| r.0).collect()));
        }
        Ok(out)
    })?;
    to.write(|db| {
        for t in TABLES {
            if count(db, t)? != 0 {
                return Err(StoreError::Refused(format!(
                    "the target already holds rows in {t}; copy-store fills an empty store only"
                )));
            }
        }
        for (t, cols, rows) in &data {
            if TOTALS.contains(t) {
                db.execute(&format!("DELETE FROM {t}"), &[])?;
            }
            let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
            let sql = format!("INSERT INTO {t} ({}) VALUES ({})", cols.join(", "), marks.join(", "));
            for r in rows {
                db.execute(&sql, r)?;
            }
        }
        if to.is_shared() {
            // Event numbers were copied as they were: the next one follows the last.
            db.query("SELECT CAST(setval(pg_get_serial_sequence('events', 'seq'), COALESCE(MAX(seq), 0) + 1, false) AS BIGINT) FROM events", &[])?;
        }
        for (t, _, rows) in data.iter().filter(|(t, _, _)| TABLES.contains(t)) {
            let n = count(db, t)?;
            if n != rows.len() as u64 {
                return Err(StoreError::Corrupt(format!("{t}: {} rows read, {n} in the target", rows.len())));
            }
        }
        Ok(())
    })?;
    Ok(data.iter().map(|(t, _, rows)| (*t, rows.len() as u64)).collect())
}

/// Open a store named as `lsps1-db` names one (a file path, `sqlite:` or `postgres://`).
pub fn open_named(name: &str, password: Option<&str>) -> Result<Store, StoreError> {
    if name.starts_with("postgres://") || name.starts_with("postgresql://") {
        Store::open_postgres(name, password)
    } else {
        let path = name.strip_prefix("sqlite://").or_else(|| name.strip_prefix("sqlite:")).unwrap_or(name);
        Store::open(std::path::Path::new(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{for_each_backend, record};
    use crate::store::{InsertLimits, OrderFilter};

    fn limits() -> InsertLimits {
        InsertLimits { fundable_sat: u64::MAX / 4, max_unpaid_per_client: 100, max_unpaid_per_ip: 100, now_ms: 0 }
    }

    fn book(s: &Store) -> (Vec<crate::store::OrderRecord>, crate::store::StoreFigures) {
        let all = OrderFilter { all_nodes: true, ..Default::default() };
        (s.list_orders(&all).unwrap(), s.status_figures(86_400_000, 100, 30).unwrap())
    }

    /// SQLite → each backend → SQLite again: the same orders and the same figures, and a
    /// second copy into the now non-empty target is refused.
    #[test]
    fn an_order_book_moves_there_and_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let src = Store::open(&dir.path().join("src.sqlite3")).unwrap();
        for i in 0..5 {
            src.insert_order(&record(&format!("o{i}"), "peer", 1_000 + i), limits()).unwrap();
        }
        let want = book(&src);
        for_each_backend(|mid| {
            let report = copy_store(&src, &mid).unwrap();
            assert_eq!(report.iter().find(|(t, _)| *t == "orders").map(|r| r.1), Some(5));
            assert_eq!(book(&mid), want);
            assert!(copy_store(&src, &mid).is_err(), "a non-empty target is refused");
            let back = Store::open_in_memory().unwrap();
            copy_store(&mid, &back).unwrap();
            assert_eq!(book(&back), want);
        });
    }
}
