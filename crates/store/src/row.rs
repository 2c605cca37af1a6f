//! Decoding an `ai_jobs` row into a [`Job`], shared by both backends: each
//! backend's SELECT lists produce the same column names with the same Rust
//! types (text, and i64 for every number and epoch-millisecond timestamp).

use clawcut_core::{Job, JobStatus};
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::StoreError;

/// Wraps a driver error in the variant of the operation that was running.
pub(crate) type OpErr = fn(sqlx::Error) -> StoreError;

/// Decode one job; an unknown status or a negative counter is a
/// [`StoreError::CorruptRow`], never a panic.
pub(crate) fn job_from_row<'r, R>(row: &'r R, op: OpErr) -> Result<Job, StoreError>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: String = row.try_get("id").map_err(op)?;
    let corrupt = |detail: String| StoreError::CorruptRow {
        job_id: id.clone(),
        detail,
    };
    let status: String = row.try_get("status").map_err(op)?;
    let status: JobStatus = status
        .parse()
        .map_err(|_| corrupt(format!("unknown status {status:?}")))?;
    let attempts: i64 = row.try_get("attempts").map_err(op)?;
    let polls: i64 = row.try_get("polls").map_err(op)?;
    let attempts = u32::try_from(attempts)
        .map_err(|_| corrupt(format!("attempts out of range: {attempts}")))?;
    let polls =
        u32::try_from(polls).map_err(|_| corrupt(format!("polls out of range: {polls}")))?;
    Ok(Job {
        kind: row.try_get("kind").map_err(op)?,
        provider: row.try_get("provider").map_err(op)?,
        scene_id: row.try_get("scene_id").map_err(op)?,
        scene_version_id: row.try_get("scene_version_id").map_err(op)?,
        request: row.try_get("request").map_err(op)?,
        status,
        provider_job_id: row.try_get("provider_job_id").map_err(op)?,
        created_at: row.try_get("created_at").map_err(op)?,
        updated_at: row.try_get("updated_at").map_err(op)?,
        attempts,
        polls,
        next_attempt_at: row.try_get("next_attempt_at").map_err(op)?,
        lease_owner: row.try_get("lease_owner").map_err(op)?,
        lease_expires_at: row.try_get("lease_expires_at").map_err(op)?,
        fencing_token: row.try_get("fencing_token").map_err(op)?,
        last_error: row.try_get("last_error").map_err(op)?,
        idempotency_key: row.try_get("idempotency_key").map_err(op)?,
        lease_taken_from: row.try_get("lease_taken_from").map_err(op)?,
        id,
    })
}

/// Rows as claimed or listed, oldest `updated_at` first (RETURNING gives no
/// order guarantee).
pub(crate) fn jobs_from_rows<R>(rows: &[R], op: OpErr) -> Result<Vec<Job>, StoreError>
where
    R: Row,
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let mut jobs = rows
        .iter()
        .map(|r| job_from_row(r, op))
        .collect::<Result<Vec<_>, _>>()?;
    jobs.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)));
    Ok(jobs)
}

/// Saturating conversion for durations and byte counts bound as i64.
pub(crate) fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn bytes_i64(b: u64) -> i64 {
    i64::try_from(b).unwrap_or(i64::MAX)
}

/// `completed_at` for a status change: now when `to` is final.
pub(crate) fn completed_at(to: JobStatus, now: i64) -> Option<i64> {
    to.is_final().then_some(now)
}

/// The audit event of a completion.
pub(crate) fn completion_detail(c: &crate::Completion) -> String {
    let thumb = c
        .thumbnail
        .as_ref()
        .map(|t| serde_json::json!({"path": t.path, "sha256": t.sha256, "bytes": t.bytes}));
    serde_json::json!({
        "video": {"path": c.video.path, "sha256": c.video.sha256, "bytes": c.video.bytes},
        "thumbnail": thumb,
    })
    .to_string()
}

/// `detail` as stored: JSON text, `{}` for null.
pub(crate) fn detail_text(v: &serde_json::Value) -> String {
    if v.is_null() {
        "{}".to_owned()
    } else {
        v.to_string()
    }
}

/// Counts in [`JobStatus::ALL`] order. A status the daemon does not know
/// (possible in an adopted app table without our CHECK constraint) is
/// logged and left out rather than failing the whole report: `/metrics`
/// and `/readyz` must keep answering.
pub(crate) fn by_status(rows: Vec<(String, i64)>) -> Result<Vec<(JobStatus, u64)>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    for (status, n) in rows {
        match status.parse::<JobStatus>() {
            Ok(st) => out.push((st, count(n))),
            Err(_) => tracing::warn!(%status, jobs = n, "video jobs with an unknown status"),
        }
    }
    out.sort_by_key(|(st, _)| JobStatus::ALL.iter().position(|s| s == st));
    Ok(out)
}

/// A count from SQL as u64 (never negative in practice).
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// `last_error` of a job an operator failed.
pub(crate) const FAILED_BY_OPERATOR: &str = "failed by operator";

/// How an operator's decision is named in its audit event.
pub(crate) fn resolution_name(r: crate::Resolution) -> &'static str {
    match r {
        crate::Resolution::Resubmit => "resubmit",
        crate::Resolution::Fail => "fail",
    }
}
