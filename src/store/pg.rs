//! The [`Db`] trait on PostgreSQL: a pooled `tokio-postgres` client (deadpool-postgres),
//! driven from the store's blocking calls with `Handle::block_on` (tokio allows it on the
//! blocking pool, where `Store::call` runs them). Statements are translated from the store's
//! spelling once ([`pg_sql`]) and prepared through the client's statement cache.

use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::StoreError;
use super::db::{Db, Row, Val, pg_sql};

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

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(format!("postgres: {e}"))
}

fn read_row(r: &tokio_postgres::Row) -> Result<Row, StoreError> {
    let mut out = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i).map_err(pg_err)?.map(Val::Int),
            Type::INT4 => r.try_get::<_, Option<i32>>(i).map_err(pg_err)?.map(|v| Val::Int(v.into())),
            Type::INT2 => r.try_get::<_, Option<i16>>(i).map_err(pg_err)?.map(|v| Val::Int(v.into())),
            Type::BOOL => r.try_get::<_, Option<bool>>(i).map_err(pg_err)?.map(|v| Val::Int(v.into())),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                r.try_get::<_, Option<String>>(i).map_err(pg_err)?.map(Val::Text)
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

/// One pooled connection, used from a blocking thread.
pub struct PgDb<'a> {
    pub client: &'a tokio_postgres::Client,
    pub handle: tokio::runtime::Handle,
}

impl PgDb<'_> {
    fn params(args: &[Val]) -> Vec<&(dyn ToSql + Sync)> {
        args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
    }
}

impl Db for PgDb<'_> {
    fn execute(&self, sql: &str, args: &[Val]) -> Result<u64, StoreError> {
        let sql = pg_sql(sql);
        let client = self.client;
        self.handle.block_on(async {
            let stmt = client.prepare(&sql).await.map_err(pg_err)?;
            client.execute(&stmt, &Self::params(args)).await.map_err(pg_err)
        })
    }

    fn query(&self, sql: &str, args: &[Val]) -> Result<Vec<Row>, StoreError> {
        let sql = pg_sql(sql);
        let client = self.client;
        self.handle.block_on(async {
            let stmt = client.prepare(&sql).await.map_err(pg_err)?;
            let rows = client.query(&stmt, &Self::params(args)).await.map_err(pg_err)?;
            rows.iter().map(read_row).collect()
        })
    }
}
