//! Reads on SQLite: one job, the operator's lists and the status report.
//! The list and count queries start with the predicate of a partial index
//! so they stay cheap on a table of mostly finished jobs.

use clawcut_core::{EligibilityRules, Job, Millis};
use sqlx::SqlitePool;

use super::claim::sqlite_eligible;
use super::sqlite_job_cols;
use crate::row::{by_status, count, job_from_row, jobs_from_rows};
use crate::{JobFilter, StatusReport, StoreError};

/// Owed work. ?1 now, ?2 updated_before.
macro_rules! sqlite_stranded {
    () => {
        "status IN ('queued', 'submitting', 'pending', 'processing')
           AND kind = 'video'
           AND status IN ('queued', 'pending', 'processing')
           AND provider_job_id IS NOT NULL
           AND (lease_expires_at IS NULL OR lease_expires_at <= ?1)
           AND updated_at <= ?2"
    };
}

const GET_JOB: &str = concat!("SELECT ", sqlite_job_cols!(), " FROM ai_jobs WHERE id = ?1");

const LIST_STRANDED: &str = concat!(
    "SELECT ",
    sqlite_job_cols!(),
    " FROM ai_jobs WHERE ",
    sqlite_stranded!(),
    " ORDER BY updated_at, id LIMIT ?3"
);

const LIST_NEEDS_OPERATOR: &str = concat!(
    "SELECT ",
    sqlite_job_cols!(),
    " FROM ai_jobs WHERE status = 'needs_operator' AND kind = 'video'
      ORDER BY updated_at, id LIMIT ?1"
);

const COUNT_ELIGIBLE: &str = concat!(
    "SELECT COUNT(*), MIN(updated_at) FROM ai_jobs INDEXED BY ai_jobs_claimable WHERE ",
    sqlite_eligible!()
);

const COUNT_STRANDED: &str = concat!(
    "SELECT COUNT(*), MIN(updated_at) FROM ai_jobs WHERE ",
    sqlite_stranded!()
);

pub(super) async fn get_job(pool: &SqlitePool, id: &str) -> Result<Option<Job>, StoreError> {
    let row = sqlx::query(GET_JOB)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::GetJob)?;
    row.map(|r| job_from_row(&r, StoreError::GetJob))
        .transpose()
}

pub(super) async fn list_jobs(
    pool: &SqlitePool,
    filter: JobFilter,
    now: Millis,
    rules: &EligibilityRules,
    limit: u32,
) -> Result<Vec<Job>, StoreError> {
    let rows = match filter {
        JobFilter::Stranded => {
            sqlx::query(LIST_STRANDED)
                .bind(now)
                .bind(rules.updated_before(now))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        }
        JobFilter::NeedsOperator => {
            sqlx::query(LIST_NEEDS_OPERATOR)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        }
    }
    .map_err(StoreError::ListJobs)?;
    jobs_from_rows(&rows, StoreError::ListJobs)
}

pub(super) async fn status_report(
    pool: &SqlitePool,
    now: Millis,
    rules: &EligibilityRules,
) -> Result<StatusReport, StoreError> {
    let op = StoreError::StatusReport;
    // One read transaction: every number describes the same instant.
    let mut tx = pool.begin().await.map_err(op)?;
    let (eligible, oldest_eligible): (i64, Option<i64>) = sqlx::query_as(COUNT_ELIGIBLE)
        .bind(rules.submit_enabled)
        .bind(false)
        .bind(rules.updated_before(now))
        .bind(now)
        .bind(None::<&str>)
        .fetch_one(&mut *tx)
        .await
        .map_err(op)?;
    let (stranded, oldest_stranded): (i64, Option<i64>) = sqlx::query_as(COUNT_STRANDED)
        .bind(now)
        .bind(rules.updated_before(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(op)?;
    let running: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM ai_jobs
         WHERE status IN ('queued', 'submitting', 'pending', 'processing')
           AND kind = 'video' AND lease_expires_at > ?1",
    )
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(op)?;
    let (needs_operator, oldest_needs_operator): (i64, Option<i64>) = sqlx::query_as(
        "SELECT COUNT(*), MIN(updated_at) FROM ai_jobs
         WHERE status = 'needs_operator' AND kind = 'video'",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(op)?;
    let unsubmitted: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM ai_jobs
         WHERE status IN ('queued', 'submitting', 'pending', 'processing')
           AND kind = 'video' AND status = 'queued' AND provider_job_id IS NULL",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(op)?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, COUNT(*) FROM ai_jobs WHERE kind = 'video' GROUP BY status ORDER BY status",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(op)?;
    tx.commit().await.map_err(op)?;
    Ok(StatusReport {
        eligible: count(eligible),
        oldest_eligible_updated_at: oldest_eligible,
        stranded: count(stranded),
        oldest_stranded_updated_at: oldest_stranded,
        running: count(running),
        needs_operator: count(needs_operator),
        oldest_needs_operator_updated_at: oldest_needs_operator,
        unsubmitted: count(unsubmitted),
        by_status: by_status(rows)?,
    })
}
