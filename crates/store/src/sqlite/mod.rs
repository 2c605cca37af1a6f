//! [`SqliteStore`]: the embedded backend. One file in WAL mode, `synchronous
//! = FULL` (a committed completion survives power loss), a generous busy
//! timeout so that two processes on one file queue instead of failing.
//!
//! Every multi-statement transaction starts with `BEGIN IMMEDIATE`: taking
//! the write lock up front makes SQLite wait in its busy handler rather than
//! fail with `SQLITE_BUSY_SNAPSHOT` when another writer got in between.

use std::str::FromStr;
use std::time::Duration;

use clawcut_core::{EligibilityRules, Job, JobStatus, Lease, Millis};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::{
    Backend, ClaimRequest, Completion, JobFilter, Reschedule, Resolution, SchemaStatus, Settle,
    StatusReport, Store, StoreError, migrate,
};

mod claim;
pub(crate) use claim::CLAIM as CLAIM_SQL;
mod read;
mod resolve;
mod write;

/// Columns of a [`Job`], in the names and types `row::job_from_row` reads.
macro_rules! sqlite_job_cols {
    () => {
        "id, kind, provider, scene_id, scene_version_id, request, status, provider_job_id, \
         created_at, updated_at, attempts, polls, next_attempt_at, lease_owner, \
         lease_expires_at, fencing_token, last_error, idempotency_key, lease_taken_from"
    };
}
pub(crate) use sqlite_job_cols;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating the file and its directory if missing) the database
    /// `url` names, e.g. `sqlite:///var/lib/clawcut-worker/clawcut.db`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::Connect)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false);
        if let Some(dir) = opts.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Connect(sqlx::Error::Io(e)))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .map_err(StoreError::Connect)?;
        Ok(SqliteStore { pool })
    }

    /// The pool, for tests and tools that need raw access.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        migrate::migrate_sqlite(&self.pool).await
    }

    async fn schema_status(&self) -> Result<SchemaStatus, StoreError> {
        migrate::schema_status_sqlite(&self.pool).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(StoreError::Ping)?;
        Ok(())
    }

    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<Job>, StoreError> {
        claim::claim(&self.pool, req).await
    }

    async fn heartbeat(&self, lease: &Lease, now: Millis, ttl: Duration) -> Result<(), StoreError> {
        write::heartbeat(&self.pool, lease, now, ttl).await
    }

    async fn complete(&self, lease: &Lease, c: &Completion) -> Result<(), StoreError> {
        write::complete(&self.pool, lease, c).await
    }

    async fn settle(&self, lease: &Lease, s: &Settle) -> Result<(), StoreError> {
        write::settle(&self.pool, lease, s).await
    }

    async fn reschedule(&self, lease: &Lease, r: &Reschedule) -> Result<(), StoreError> {
        write::reschedule(&self.pool, lease, r).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        write::release(&self.pool, lease).await
    }

    async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        read::get_job(&self.pool, id).await
    }

    async fn list_jobs(
        &self,
        filter: JobFilter,
        now: Millis,
        rules: &EligibilityRules,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        read::list_jobs(&self.pool, filter, now, rules, limit).await
    }

    async fn status_report(
        &self,
        now: Millis,
        rules: &EligibilityRules,
    ) -> Result<StatusReport, StoreError> {
        read::status_report(&self.pool, now, rules).await
    }

    async fn resolve(
        &self,
        job_id: &str,
        resolution: Resolution,
        operator: &str,
        now: Millis,
    ) -> Result<JobStatus, StoreError> {
        resolve::resolve(&self.pool, job_id, resolution, operator, now).await
    }

    async fn make_due(
        &self,
        provider: &str,
        provider_job_id: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        resolve::make_due(&self.pool, provider, provider_job_id, now).await
    }
}
