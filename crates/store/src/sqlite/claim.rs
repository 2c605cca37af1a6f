//! Claiming on SQLite: one `UPDATE ... WHERE id IN (SELECT ... LIMIT n)
//! RETURNING`. A write statement takes the database write lock before it
//! reads, so two claimers on one file are serialized by SQLite itself and
//! can never lease the same row.

use clawcut_core::Job;
use sqlx::SqlitePool;

use super::sqlite_job_cols;
use crate::row::{jobs_from_rows, ms};
use crate::{ClaimRequest, StoreError};

/// The eligibility rules of `EligibilityRules::check` as a WHERE clause.
/// Parameters: ?1 submit enabled, ?2 force, ?3 updated_before, ?4 now,
/// ?5 only this job id (or NULL).
///
/// The leading `status IN (...)` term repeats the predicate of the partial
/// index `ai_jobs_claimable` verbatim: SQLite only uses a partial index
/// whose predicate appears as a term of the query. Queries name the index
/// with `INDEXED BY` (the planner otherwise prefers `ai_jobs_kind_status`
/// without statistics), which also makes them fail loudly rather than scan
/// the table should the two predicates ever drift apart.
macro_rules! sqlite_eligible {
    () => {
        "status IN ('queued', 'submitting', 'pending', 'processing')
           AND kind = 'video'
           AND ((status IN ('queued', 'pending', 'processing') AND provider_job_id IS NOT NULL)
                OR status = 'submitting'
                OR (status = 'queued' AND provider_job_id IS NULL AND ?1))
           AND (?2 OR (updated_at <= ?3 AND next_attempt_at <= ?4))
           AND (lease_expires_at IS NULL OR lease_expires_at <= ?4)
           AND (?5 IS NULL OR id = ?5)"
    };
}
pub(crate) use sqlite_eligible;

pub(crate) const CLAIM: &str = concat!(
    "UPDATE ai_jobs
     SET lease_taken_from = lease_owner, lease_owner = ?6, lease_expires_at = ?7,
         fencing_token = fencing_token + 1
     WHERE id IN (SELECT id FROM ai_jobs INDEXED BY ai_jobs_claimable WHERE ",
    sqlite_eligible!(),
    " ORDER BY updated_at, id LIMIT ?8)
     RETURNING ",
    sqlite_job_cols!()
);

pub(super) async fn claim(
    pool: &SqlitePool,
    req: &ClaimRequest<'_>,
) -> Result<Vec<Job>, StoreError> {
    if req.limit == 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(CLAIM)
        .bind(req.rules.submit_enabled)
        .bind(req.force)
        .bind(req.rules.updated_before(req.now))
        .bind(req.now)
        .bind(req.only_job)
        .bind(req.worker_id)
        .bind(req.now.saturating_add(ms(req.lease_ttl)))
        .bind(i64::from(req.limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::ClaimJobs)?;
    jobs_from_rows(&rows, StoreError::ClaimJobs)
}
