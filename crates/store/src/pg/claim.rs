//! Claiming on PostgreSQL: one `UPDATE ... WHERE id IN (SELECT ... FOR
//! UPDATE SKIP LOCKED) RETURNING`. Rows another claimer holds are skipped,
//! and a row another claimer leased and committed meanwhile is re-checked
//! against the WHERE clause on its new version (read committed), so two
//! replicas never lease the same job.

use clawcut_core::Job;
use sqlx::PgPool;

use super::pg_job_cols;
use crate::row::{jobs_from_rows, ms};
use crate::{ClaimRequest, StoreError};

/// The eligibility rules of `EligibilityRules::check` as a WHERE clause.
/// Parameters: $1 submit enabled, $2 force, $3 updated_before (ms),
/// $4 now (ms), $5 only this job id (or NULL). The leading `status IN`
/// term is the predicate of the partial index `ai_jobs_claimable`.
macro_rules! pg_eligible {
    () => {
        "status IN ('queued', 'submitting', 'pending', 'processing')
           AND kind = 'video'
           AND ((status IN ('queued', 'pending', 'processing') AND provider_job_id IS NOT NULL)
                OR status = 'submitting'
                OR (status = 'queued' AND provider_job_id IS NULL AND $1::bool))
           AND ($2::bool OR (updated_at <= to_timestamp($3::float8 / 1000.0)
                             AND next_attempt_at <= to_timestamp($4::float8 / 1000.0)))
           AND (lease_expires_at IS NULL OR lease_expires_at <= to_timestamp($4::float8 / 1000.0))
           AND ($5::text IS NULL OR id = $5::text)"
    };
}
pub(crate) use pg_eligible;

pub(crate) const CLAIM: &str = concat!(
    "UPDATE ai_jobs
     SET lease_taken_from = lease_owner, lease_owner = $6, lease_expires_at = to_timestamp($7::float8 / 1000.0),
         fencing_token = fencing_token + 1
     WHERE id IN (SELECT id FROM ai_jobs WHERE ",
    pg_eligible!(),
    " ORDER BY updated_at, id LIMIT $8 FOR UPDATE SKIP LOCKED)
     RETURNING ",
    pg_job_cols!()
);

pub(super) async fn claim(pool: &PgPool, req: &ClaimRequest<'_>) -> Result<Vec<Job>, StoreError> {
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
