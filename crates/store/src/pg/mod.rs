//! [`PgStore`]: the backend for several replicas. Timestamps are
//! `timestamptz` in the database and epoch milliseconds in Rust; the
//! conversion happens in SQL (`to_timestamp($n::float8 / 1000.0)` in,
//! `(extract(epoch from x) * 1000)::int8` out) so no date crate is needed.

use std::str::FromStr;
use std::time::Duration;

use clawcut_core::{EligibilityRules, Job, JobStatus, Lease, Millis};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

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
macro_rules! pg_job_cols {
    () => {
        "id, kind, provider, scene_id, scene_version_id, request, status, provider_job_id,
         (extract(epoch from created_at) * 1000)::int8 AS created_at,
         (extract(epoch from updated_at) * 1000)::int8 AS updated_at,
         attempts::int8 AS attempts, polls::int8 AS polls,
         (extract(epoch from next_attempt_at) * 1000)::int8 AS next_attempt_at,
         lease_owner,
         (extract(epoch from lease_expires_at) * 1000)::int8 AS lease_expires_at,
         fencing_token, last_error, idempotency_key, lease_taken_from"
    };
}
pub(crate) use pg_job_cols;

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connect to `url` (`postgres://user@host:port/db`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(url).map_err(StoreError::Connect)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .map_err(StoreError::Connect)?;
        Ok(PgStore { pool })
    }

    /// The pool, for tests and tools that need raw access.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        migrate::migrate_pg(&self.pool).await
    }

    async fn schema_status(&self) -> Result<SchemaStatus, StoreError> {
        migrate::schema_status_pg(&self.pool).await
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
