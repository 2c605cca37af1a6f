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
    /// The due-first claim's own connections, which plan its prepared
    /// statement once, generically (see `connect`).
    due_pool: PgPool,
    due: Arc<DueHint>,
}

impl PgStore {
    /// Connect to `url` (`postgres://user@host:port/db`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(url).map_err(StoreError::Connect)?;
        let pool = crate::pool::ping_when_idle(PgPoolOptions::new())
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts.clone())
            .await
            .map_err(StoreError::Connect)?;
        // On a busy table (many live rows not yet due) PostgreSQL's plan
        // cache estimates the due-first claim's generic plan at a third of
        // `ai_jobs_due` (it cannot see `$4`) and so re-plans it for every
        // call: 0.45 ms of planning against 0.25 ms of execution, on every
        // claim. The generic plan is the right one for this statement (the
        // `ai_jobs_due` scan with the bound applied at run time), so these
        // connections force it. Only this statement: the walk's generic
        // plan would scan `ai_jobs_claimable` whole, and the panel's
        // queries want their parameters seen. `plan_cache_mode` needs
        // PostgreSQL 12 or later; an ANALYZE still invalidates the cached
        // plan, so it follows the table's growth. BENCHMARKS.md, item 1.
        let due_pool = crate::pool::ping_when_idle(PgPoolOptions::new())
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(opts.options([("plan_cache_mode", "force_generic_plan")]));
        Ok(PgStore {
            pool,
            due_pool,
            due: Arc::default(),
        })
    }

    /// The pool, for tests and tools that need raw access.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The due-first claim's pool, for the test that reads its plans.
    #[doc(hidden)]
    pub fn due_claim_pool(&self) -> &PgPool {
        &self.due_pool
    }
}

impl Backed for PgStore {
    type DB = Postgres;
    const BACKEND: Backend = Backend::Postgres;
    const DIALECT: &'static Dialect = &sql::POSTGRES;

    fn sql_pool(&self) -> &PgPool {
        &self.pool
    }

    fn due_claim_pool(&self) -> &PgPool {
        &self.due_pool
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
