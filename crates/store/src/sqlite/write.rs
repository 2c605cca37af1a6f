//! The fenced writes on SQLite: every statement matches
//! `id AND lease_owner AND fencing_token` (and the expected status); when it
//! matches no row the transaction is dropped, which rolls it back, and the
//! caller gets `LeaseLost`.

use std::time::Duration;

use clawcut_core::{JobStatus, Lease, Millis};
use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::row::{OpErr, bytes_i64, completed_at, completion_detail, detail_text, ms};
use crate::{Completion, Reschedule, Settle, StoreError};

fn lease_lost(lease: &Lease) -> StoreError {
    StoreError::LeaseLost {
        job_id: lease.job_id.clone(),
    }
}

pub(super) async fn begin(
    pool: &SqlitePool,
    op: OpErr,
) -> Result<Transaction<'static, Sqlite>, StoreError> {
    pool.begin_with("BEGIN IMMEDIATE").await.map_err(op)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn insert_event(
    tx: &mut Transaction<'static, Sqlite>,
    job_id: &str,
    from: Option<JobStatus>,
    to: JobStatus,
    worker_id: &str,
    detail: &str,
    now: Millis,
    op: OpErr,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ai_job_events (ai_job_id, from_status, to_status, worker_id, detail, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(job_id)
    .bind(from.map(|s| s.as_str()))
    .bind(to.as_str())
    .bind(worker_id)
    .bind(detail)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(op)?;
    Ok(())
}

/// Marks a job's scene version failed (never one already `ready`).
pub(super) async fn fail_version(
    tx: &mut Transaction<'static, Sqlite>,
    version_id: Option<&str>,
    error: Option<&str>,
    now: Millis,
    op: OpErr,
) -> Result<(), StoreError> {
    let Some(version_id) = version_id else {
        return Ok(());
    };
    sqlx::query(
        "UPDATE scene_versions SET status = 'failed', error = ?2, updated_at = ?3
         WHERE id = ?1 AND status <> 'ready'",
    )
    .bind(version_id)
    .bind(error)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(op)?;
    Ok(())
}

pub(super) async fn heartbeat(
    pool: &SqlitePool,
    lease: &Lease,
    now: Millis,
    ttl: Duration,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE ai_jobs SET lease_expires_at = ?4
         WHERE id = ?1 AND lease_owner = ?2 AND fencing_token = ?3",
    )
    .bind(&lease.job_id)
    .bind(&lease.owner)
    .bind(lease.token)
    .bind(now.saturating_add(ms(ttl)))
    .execute(pool)
    .await
    .map_err(StoreError::Heartbeat)?;
    if done.rows_affected() == 0 {
        return Err(lease_lost(lease));
    }
    Ok(())
}

pub(super) async fn release(pool: &SqlitePool, lease: &Lease) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE ai_jobs SET lease_owner = NULL, lease_expires_at = NULL
         WHERE id = ?1 AND lease_owner = ?2 AND fencing_token = ?3",
    )
    .bind(&lease.job_id)
    .bind(&lease.owner)
    .bind(lease.token)
    .execute(pool)
    .await
    .map_err(StoreError::Release)?;
    if done.rows_affected() == 0 {
        return Err(lease_lost(lease));
    }
    Ok(())
}

pub(super) async fn complete(
    pool: &SqlitePool,
    lease: &Lease,
    c: &Completion,
) -> Result<(), StoreError> {
    let op: OpErr = StoreError::Complete;
    let mut tx = begin(pool, op).await?;
    let thumb = c.thumbnail.as_ref();
    let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
        "UPDATE ai_jobs SET status = 'completed', completed_at = ?5, updated_at = ?5,
             video_path = ?6, video_sha256 = ?7, video_bytes = ?8, thumbnail_path = ?9,
             last_error = NULL, lease_owner = NULL, lease_expires_at = NULL
         WHERE id = ?1 AND lease_owner = ?2 AND fencing_token = ?3 AND status = ?4
         RETURNING scene_id, scene_version_id",
    )
    .bind(&lease.job_id)
    .bind(&lease.owner)
    .bind(lease.token)
    .bind(c.from.as_str())
    .bind(c.now)
    .bind(&c.video.path)
    .bind(&c.video.sha256)
    .bind(bytes_i64(c.video.bytes))
    .bind(thumb.map(|t| t.path.as_str()))
    .fetch_optional(&mut *tx)
    .await
    .map_err(op)?;
    let Some((scene_id, version_id)) = row else {
        return Err(lease_lost(lease));
    };
    if let Some(version_id) = version_id.as_deref() {
        sqlx::query(
            "UPDATE scene_versions SET status = 'ready', video_path = ?2, thumbnail_path = ?3,
                 video_sha256 = ?4, video_bytes = ?5, error = NULL, updated_at = ?6
             WHERE id = ?1",
        )
        .bind(version_id)
        .bind(&c.video.path)
        .bind(thumb.map(|t| t.path.as_str()))
        .bind(&c.video.sha256)
        .bind(bytes_i64(c.video.bytes))
        .bind(c.now)
        .execute(&mut *tx)
        .await
        .map_err(op)?;
        if let Some(scene_id) = scene_id.as_deref() {
            // Newer version wins: a version created later (id breaks ties)
            // keeps the pointer; a pointer to a missing version is replaced.
            sqlx::query(
                "UPDATE scenes SET current_version_id = ?2, updated_at = ?3
                 WHERE id = ?1
                   AND current_version_id IS NOT ?2
                   AND EXISTS (SELECT 1 FROM scene_versions WHERE id = ?2)
                   AND NOT EXISTS (
                       SELECT 1 FROM scene_versions cur, scene_versions me
                       WHERE cur.id = scenes.current_version_id AND me.id = ?2
                         AND (cur.created_at > me.created_at
                              OR (cur.created_at = me.created_at AND cur.id > me.id)))",
            )
            .bind(scene_id)
            .bind(version_id)
            .bind(c.now)
            .execute(&mut *tx)
            .await
            .map_err(op)?;
        }
    }
    let detail = completion_detail(c);
    insert_event(
        &mut tx,
        &lease.job_id,
        Some(c.from),
        JobStatus::Completed,
        &lease.owner,
        &detail,
        c.now,
        op,
    )
    .await?;
    tx.commit().await.map_err(op)?;
    Ok(())
}

pub(super) async fn settle(pool: &SqlitePool, lease: &Lease, s: &Settle) -> Result<(), StoreError> {
    let op: OpErr = StoreError::Settle;
    let mut tx = begin(pool, op).await?;
    let version_id: Option<Option<String>> = sqlx::query_scalar(
        "UPDATE ai_jobs SET status = ?5, updated_at = ?6, last_error = ?7,
             provider_job_id = COALESCE(?8, provider_job_id),
             idempotency_key = COALESCE(?9, idempotency_key),
             completed_at = COALESCE(?10, completed_at),
             lease_owner = CASE WHEN ?11 THEN lease_owner ELSE NULL END,
             lease_expires_at = CASE WHEN ?11 THEN lease_expires_at ELSE NULL END,
             attempts = COALESCE(?12, attempts)
         WHERE id = ?1 AND lease_owner = ?2 AND fencing_token = ?3 AND status = ?4
         RETURNING scene_version_id",
    )
    .bind(&lease.job_id)
    .bind(&lease.owner)
    .bind(lease.token)
    .bind(s.from.as_str())
    .bind(s.to.as_str())
    .bind(s.now)
    .bind(s.reason.as_deref())
    .bind(s.provider_job_id.as_deref())
    .bind(s.idempotency_key.as_deref())
    .bind(completed_at(s.to, s.now))
    .bind(s.keep_lease)
    .bind(s.attempts.map(i64::from))
    .fetch_optional(&mut *tx)
    .await
    .map_err(op)?;
    let Some(version_id) = version_id else {
        return Err(lease_lost(lease));
    };
    if matches!(s.to, JobStatus::Failed | JobStatus::Canceled) {
        fail_version(
            &mut tx,
            version_id.as_deref(),
            s.reason.as_deref(),
            s.now,
            op,
        )
        .await?;
    }
    insert_event(
        &mut tx,
        &lease.job_id,
        Some(s.from),
        s.to,
        &lease.owner,
        &detail_text(&s.detail),
        s.now,
        op,
    )
    .await?;
    tx.commit().await.map_err(op)?;
    Ok(())
}

pub(super) async fn reschedule(
    pool: &SqlitePool,
    lease: &Lease,
    r: &Reschedule,
) -> Result<(), StoreError> {
    let op: OpErr = StoreError::Reschedule;
    let changed = r.from != r.to;
    let mut tx = begin(pool, op).await?;
    let done = sqlx::query(
        "UPDATE ai_jobs SET status = ?5, attempts = ?6, polls = ?7, next_attempt_at = ?8,
             last_error = ?9, lease_owner = NULL, lease_expires_at = NULL,
             updated_at = CASE WHEN ?10 THEN ?11 ELSE updated_at END
         WHERE id = ?1 AND lease_owner = ?2 AND fencing_token = ?3 AND status = ?4",
    )
    .bind(&lease.job_id)
    .bind(&lease.owner)
    .bind(lease.token)
    .bind(r.from.as_str())
    .bind(r.to.as_str())
    .bind(i64::from(r.attempts))
    .bind(i64::from(r.polls))
    .bind(r.next_attempt_at)
    .bind(r.last_error.as_deref())
    .bind(changed)
    .bind(r.now)
    .execute(&mut *tx)
    .await
    .map_err(op)?;
    if done.rows_affected() == 0 {
        return Err(lease_lost(lease));
    }
    if changed {
        let detail = serde_json::json!({
            "attempts": r.attempts,
            "polls": r.polls,
            "next_attempt_at": r.next_attempt_at,
            "last_error": r.last_error,
        })
        .to_string();
        insert_event(
            &mut tx,
            &lease.job_id,
            Some(r.from),
            r.to,
            &lease.owner,
            &detail,
            r.now,
            op,
        )
        .await?;
    }
    tx.commit().await.map_err(op)?;
    Ok(())
}
