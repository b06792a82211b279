//! One way to run the store's SQL on either backend: a value type both bind and read
//! ([`Val`], [`Row`]), the [`Db`] trait the store's code is written against, its SQLite
//! implementation over rusqlite, and the translation of the store's statements (written in
//! SQLite's spelling) to PostgreSQL's ([`pg_sql`]).

use super::StoreError;

/// A value bound to a statement or read from a row, the same on both backends: integers
/// (sat, msat, unix ms, heights, 0/1 flags) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}

impl From<u32> for Val {
    fn from(v: u32) -> Self {
        Val::Int(i64::from(v))
    }
}

impl From<bool> for Val {
    fn from(v: bool) -> Self {
        Val::Int(i64::from(v))
    }
}

impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(v.to_string())
    }
}

impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(v)
    }
}

impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Self {
        v.map_or(Val::Null, Into::into)
    }
}

/// One row, read by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Val>);

impl Row {
    fn at(&self, i: usize) -> Result<&Val, StoreError> {
        self.0.get(i).ok_or_else(|| StoreError::Corrupt(format!("no column {i}")))
    }

    pub fn i64(&self, i: usize) -> Result<i64, StoreError> {
        match self.at(i)? {
            Val::Int(v) => Ok(*v),
            other => Err(StoreError::Corrupt(format!("column {i}: {other:?} is not an integer"))),
        }
    }

    pub fn opt_i64(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.at(i)? {
            Val::Null => Ok(None),
            _ => self.i64(i).map(Some),
        }
    }

    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        match self.at(i)? {
            Val::Text(v) => Ok(v.clone()),
            other => Err(StoreError::Corrupt(format!("column {i}: {other:?} is not text"))),
        }
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self.at(i)? {
            Val::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }

    pub fn flag(&self, i: usize) -> Result<bool, StoreError> {
        Ok(self.i64(i)? != 0)
    }
}

/// What the store's code needs of a connection (or of a transaction on it).
pub trait Db {
    /// Run one statement; returns the rows it changed.
    fn execute(&self, sql: &str, args: &[Val]) -> Result<u64, StoreError>;
    /// Run one write whose row count the caller does not need. PostgreSQL may send it later
    /// in the same transaction, pipelined with the next statement (an error then surfaces
    /// there, or at the commit, and the transaction rolls back); SQLite runs it now.
    fn execute_deferred(&self, sql: &str, args: &[Val]) -> Result<(), StoreError> {
        self.execute(sql, args).map(|_| ())
    }
    /// Run one query; every row.
    fn query(&self, sql: &str, args: &[Val]) -> Result<Vec<Row>, StoreError>;
    /// Run one query; its first row, if any.
    fn query_opt(&self, sql: &str, args: &[Val]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }
    /// Hold `key` until the transaction ends: a read-decide-write that two nodes could run
    /// at once on one order book runs one at a time. SQLite's writer lock already makes
    /// every write transaction exclusive, so there it does nothing.
    fn lock_key(&self, _key: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Val::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Val::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Val::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

fn sqlite_row(r: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(match r.get_ref(i)? {
            ValueRef::Null => Val::Null,
            ValueRef::Integer(v) => Val::Int(v),
            ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Real(f) => Val::Text(f.to_string()),
            ValueRef::Blob(b) => Val::Text(hex::encode(b)),
        });
    }
    Ok(Row(out))
}

impl Db for rusqlite::Connection {
    fn execute(&self, sql: &str, args: &[Val]) -> Result<u64, StoreError> {
        let n = self.prepare_cached(sql)?.execute(rusqlite::params_from_iter(args))?;
        Ok(n as u64)
    }

    fn query(&self, sql: &str, args: &[Val]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.prepare_cached(sql)?;
        let n = stmt.column_count();
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| sqlite_row(r, n))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

/// A statement in the store's spelling (SQLite's) as PostgreSQL spells it: `?N` → `$N`,
/// two-argument `MAX(a, b)` → `GREATEST(a, b)`, `IS ?N` → `IS NOT DISTINCT FROM $N`,
/// `INSERT OR IGNORE` → `INSERT … ON CONFLICT DO NOTHING`, `LIMIT -1` dropped. Quoted text
/// is left alone.
pub fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut ignore = false;
    let bytes = sql.as_bytes();
    let mut i = 0;
    // Byte-wise: the store's statements are ASCII; anything else is copied through.
    let upper = sql.to_ascii_uppercase().into_bytes();
    let word_start = |i: usize| i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\'' {
            // Copy a quoted string as it is ('' inside stays).
            let start = i;
            i += 1;
            while i < bytes.len() {
                if bytes[i] == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i = (i + 1).min(bytes.len());
            out.push_str(&sql[start..i]);
            continue;
        }
        if upper[i..].starts_with(b"INSERT OR IGNORE") {
            out.push_str("INSERT");
            i += "INSERT OR IGNORE".len();
            ignore = true;
            continue;
        }
        if upper[i..].starts_with(b"LIMIT -1") {
            i += "LIMIT -1".len();
            continue;
        }
        if word_start(i) && upper[i..].starts_with(b"IS ?") {
            out.push_str("IS NOT DISTINCT FROM $");
            i += "IS ?".len();
            continue;
        }
        if c == b'?' {
            out.push('$');
            i += 1;
            continue;
        }
        if (upper[i..].starts_with(b"MAX(") || upper[i..].starts_with(b"MIN(")) && word_start(i) {
            // Two arguments at the top level of the call: the scalar form.
            let open = i + 3;
            let mut depth = 0;
            let mut commas = 0;
            let mut j = open;
            while j < bytes.len() {
                match bytes[j] {
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b',' if depth == 1 => commas += 1,
                    _ => {}
                }
                j += 1;
            }
            if commas == 1 {
                out.push_str(if upper[i..].starts_with(b"MAX(") { "GREATEST(" } else { "LEAST(" });
                i = open + 1;
                continue;
            }
        }
        // Copy one whole character (non-ASCII only inside comments or text).
        let len = sql[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&sql[i..i + len]);
        i += len;
    }
    if ignore {
        let trimmed = out.trim_end().trim_end_matches(';').to_string();
        return format!("{trimmed} ON CONFLICT DO NOTHING");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_the_store_spelling() {
        assert_eq!(pg_sql("SELECT a FROM t WHERE b = ?1 AND c = ?2"), "SELECT a FROM t WHERE b = $1 AND c = $2");
        assert_eq!(
            pg_sql("UPDATE c SET h = MAX(COALESCE(h, 0), ?2) WHERE s IS ?3"),
            "UPDATE c SET h = GREATEST(COALESCE(h, 0), $2) WHERE s IS NOT DISTINCT FROM $3"
        );
        assert_eq!(pg_sql("SELECT MAX(x) FROM t"), "SELECT MAX(x) FROM t", "the aggregate stays");
        assert_eq!(pg_sql("SELECT THIS ?1"), "SELECT THIS $1", "IS only as a word");
        assert_eq!(pg_sql("SELECT 'é' -- ünïcode\n, ?1"), "SELECT 'é' -- ünïcode\n, $1");
        assert_eq!(
            pg_sql("INSERT OR IGNORE INTO t (a) VALUES (?1)"),
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT DO NOTHING"
        );
        assert_eq!(pg_sql("SELECT * FROM t LIMIT -1 OFFSET 5"), "SELECT * FROM t  OFFSET 5");
        assert_eq!(pg_sql("SELECT '?1', 'it''s ?' FROM t"), "SELECT '?1', 'it''s ?' FROM t", "quoted text untouched");
    }

    #[test]
    fn sqlite_reads_and_binds_through_the_trait() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        Db::execute(&c, "CREATE TABLE t (a INTEGER, b TEXT)", &[]).unwrap();
        Db::execute(&c, "INSERT INTO t (a, b) VALUES (?1, ?2)", &[Val::from(7i64), Val::from(None::<String>)]).unwrap();
        let r = c.query_opt("SELECT a, b FROM t WHERE a = ?1", &[Val::from(7i64)]).unwrap().unwrap();
        assert_eq!((r.i64(0).unwrap(), r.opt_text(1).unwrap()), (7, None));
        assert!(r.text(0).is_err());
    }
}
