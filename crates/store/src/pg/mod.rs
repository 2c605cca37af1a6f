//! [`PgStore`]: the backend for several replicas. Timestamps are
//! `timestamptz` in the database and epoch milliseconds in Rust; the
//! conversion happens in SQL (`to_timestamp($n::float8 / 1000.0)` in,
//! `(extract(epoch from x) * 1000)::int8` out) so no date crate is needed.
//!
//! The statements are in `sql`; the operations that run them, shared with
//! SQLite, in `crate::sql`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::sql::{Backed, Dialect, DueHint};
use crate::{Backend, SchemaStatus, Snapshot, StoreError, backup, migrate};

mod sql;
pub(crate) use sql::CLAIM as CLAIM_SQL;
pub(crate) use sql::CLAIM_DUE;
pub(crate) use sql::MAKE_DUE as MAKE_DUE_SQL;
pub(crate) use sql::POSTGRES as DIALECT;

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    due: Arc<DueHint>,
}

impl PgStore {
    /// Connect to `url` (`postgres://user@host:port/db`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(url).map_err(StoreError::Connect)?;
        let pool = crate::pool::ping_when_idle(PgPoolOptions::new())
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .map_err(StoreError::Connect)?;
        Ok(PgStore {
            pool,
            due: Arc::default(),
        })
    }

    /// The pool, for tests and tools that need raw access.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Backed for PgStore {
    type DB = Postgres;
    const BACKEND: Backend = Backend::Postgres;
    const DIALECT: &'static Dialect = &sql::POSTGRES;

    fn sql_pool(&self) -> &PgPool {
        &self.pool
    }

    fn due_hint(&self) -> &DueHint {
        &self.due
    }

    async fn run_migrations(&self) -> Result<Vec<i64>, StoreError> {
        migrate::migrate_pg(&self.pool).await
    }

    async fn read_schema_status(&self) -> Result<SchemaStatus, StoreError> {
        migrate::schema_status_pg(&self.pool).await
    }

    async fn take_snapshot(&self, _sqlite_dest: &std::path::Path) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::Exported(
            backup::pg_export_snapshot(&self.pool).await?,
        ))
    }

    async fn rewrite_paths(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        backup::pg_rewrite_media_paths(&self.pool, from, to).await
    }
}
