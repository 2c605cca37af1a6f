//! An operator's decision on a `needs_operator` job, and the webhook hint
//! that makes a job due now.

use clawcut_core::{JobStatus, Millis};
use sqlx::SqlitePool;

use super::write::{begin, fail_version, insert_event};
use crate::row::{FAILED_BY_OPERATOR, OpErr, resolution_name};
use crate::{Resolution, StoreError};

pub(super) async fn resolve(
    pool: &SqlitePool,
    job_id: &str,
    resolution: Resolution,
    operator: &str,
    now: Millis,
) -> Result<JobStatus, StoreError> {
    let op: OpErr = StoreError::Resolve;
    let mut tx = begin(pool, op).await?;
    let (to, changed) = match resolution {
        Resolution::Resubmit => {
            let changed: Option<Option<String>> = sqlx::query_scalar(
                "UPDATE ai_jobs SET status = 'queued', provider_job_id = NULL,
                     idempotency_key = NULL, attempts = 0, polls = 0, next_attempt_at = 0,
                     last_error = NULL, lease_owner = NULL, lease_expires_at = NULL,
                     updated_at = ?2
                 WHERE id = ?1 AND status = 'needs_operator'
                 RETURNING scene_version_id",
            )
            .bind(job_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(op)?;
            (JobStatus::Queued, changed)
        }
        Resolution::Fail => {
            let changed: Option<Option<String>> = sqlx::query_scalar(
                "UPDATE ai_jobs SET status = 'failed', last_error = ?3, completed_at = ?2,
                     lease_owner = NULL, lease_expires_at = NULL, updated_at = ?2
                 WHERE id = ?1 AND status = 'needs_operator'
                 RETURNING scene_version_id",
            )
            .bind(job_id)
            .bind(now)
            .bind(FAILED_BY_OPERATOR)
            .fetch_optional(&mut *tx)
            .await
            .map_err(op)?;
            if let Some(version_id) = &changed {
                fail_version(
                    &mut tx,
                    version_id.as_deref(),
                    Some(FAILED_BY_OPERATOR),
                    now,
                    op,
                )
                .await?;
            }
            (JobStatus::Failed, changed)
        }
    };
    if changed.is_none() {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM ai_jobs WHERE id = ?1")
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(op)?;
        return Err(StoreError::NotResolvable {
            job_id: job_id.to_owned(),
            status,
        });
    }
    let detail = serde_json::json!({ "resolution": resolution_name(resolution) }).to_string();
    insert_event(
        &mut tx,
        job_id,
        Some(JobStatus::NeedsOperator),
        to,
        operator,
        &detail,
        now,
        op,
    )
    .await?;
    tx.commit().await.map_err(op)?;
    Ok(to)
}

pub(super) async fn make_due(
    pool: &SqlitePool,
    provider: &str,
    provider_job_id: &str,
    now: Millis,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE ai_jobs SET next_attempt_at = ?3
         WHERE provider = ?1
           AND (provider_job_id = ?2
                OR substr(provider_job_id, -length(?2) - 1) = '|' || ?2)
           AND next_attempt_at > ?3
           AND status NOT IN ('completed', 'failed', 'canceled')",
    )
    .bind(provider)
    .bind(provider_job_id)
    .bind(now)
    .execute(pool)
    .await
    .map_err(StoreError::MakeDue)?;
    Ok(done.rows_affected() > 0)
}
