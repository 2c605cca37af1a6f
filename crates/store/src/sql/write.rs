//! The fenced writes: every statement matches
//! `id AND lease_owner AND fencing_token` (and the expected status); when it
//! matches no row the transaction is dropped, which rolls it back, and the
//! caller gets `LeaseLost`. Also the claim, which is where tokens come from.

use std::time::Duration;

use clawcut_core::{Job, JobStatus, Lease, Millis};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Transaction, Type};

use super::{RowsAffected, Sql};
use crate::row::{
    OpErr, bytes_i64, completed_at, completion_detail, detail_text, jobs_from_rows, ms,
};
use crate::{ClaimRequest, Completion, Reschedule, Settle, StoreError};

fn lease_lost(lease: &Lease) -> StoreError {
    StoreError::LeaseLost {
        job_id: lease.job_id.clone(),
    }
}

impl<DB> Sql<'_, DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB>,
    for<'a> bool: Encode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    DB::QueryResult: RowsAffected,
{
    /// Lease up to `limit` eligible jobs in one statement.
    pub(super) async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<Job>, StoreError> {
        if req.limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(self.d.claim)
            .bind(req.rules.submit_enabled)
            .bind(req.force)
            .bind(req.rules.updated_before(req.now))
            .bind(req.now)
            .bind(req.only_job)
            .bind(req.worker_id)
            .bind(req.now.saturating_add(ms(req.lease_ttl)))
            .bind(i64::from(req.limit))
            .fetch_all(self.pool)
            .await
            .map_err(StoreError::ClaimJobs)?;
        jobs_from_rows(&rows, StoreError::ClaimJobs)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn insert_event(
        &self,
        tx: &mut Transaction<'static, DB>,
        job_id: &str,
        from: Option<JobStatus>,
        to: JobStatus,
        worker_id: &str,
        detail: &str,
        now: Millis,
        op: OpErr,
    ) -> Result<(), StoreError> {
        sqlx::query(self.d.insert_event)
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
        &self,
        tx: &mut Transaction<'static, DB>,
        version_id: Option<&str>,
        error: Option<&str>,
        now: Millis,
        op: OpErr,
    ) -> Result<(), StoreError> {
        let Some(version_id) = version_id else {
            return Ok(());
        };
        sqlx::query(self.d.fail_version)
            .bind(version_id)
            .bind(error)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(op)?;
        Ok(())
    }

    pub(super) async fn heartbeat(
        &self,
        lease: &Lease,
        now: Millis,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(self.d.heartbeat)
            .bind(lease.job_id.as_str())
            .bind(lease.owner.as_str())
            .bind(lease.token)
            .bind(now.saturating_add(ms(ttl)))
            .execute(self.pool)
            .await
            .map_err(StoreError::Heartbeat)?;
        if done.rows_affected() == 0 {
            return Err(lease_lost(lease));
        }
        Ok(())
    }

    pub(super) async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let done = sqlx::query(self.d.release)
            .bind(lease.job_id.as_str())
            .bind(lease.owner.as_str())
            .bind(lease.token)
            .execute(self.pool)
            .await
            .map_err(StoreError::Release)?;
        if done.rows_affected() == 0 {
            return Err(lease_lost(lease));
        }
        Ok(())
    }

    pub(super) async fn complete(&self, lease: &Lease, c: &Completion) -> Result<(), StoreError> {
        let op: OpErr = StoreError::Complete;
        let mut tx = self.begin_write(op).await?;
        let thumb = c.thumbnail.as_ref().map(|t| t.path.as_str());
        let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(self.d.complete_job)
            .bind(lease.job_id.as_str())
            .bind(lease.owner.as_str())
            .bind(lease.token)
            .bind(c.from.as_str())
            .bind(c.now)
            .bind(c.video.path.as_str())
            .bind(c.video.sha256.as_str())
            .bind(bytes_i64(c.video.bytes))
            .bind(thumb)
            .fetch_optional(&mut *tx)
            .await
            .map_err(op)?;
        let Some((scene_id, version_id)) = row else {
            return Err(lease_lost(lease));
        };
        if let Some(version_id) = version_id.as_deref() {
            sqlx::query(self.d.complete_version)
                .bind(version_id)
                .bind(c.video.path.as_str())
                .bind(thumb)
                .bind(c.video.sha256.as_str())
                .bind(bytes_i64(c.video.bytes))
                .bind(c.now)
                .execute(&mut *tx)
                .await
                .map_err(op)?;
            if let Some(scene_id) = scene_id.as_deref() {
                // Newer version wins: a version created later (id breaks
                // ties) keeps the pointer; a pointer to a missing version is
                // replaced. The rule is in the statement.
                sqlx::query(self.d.complete_scene)
                    .bind(scene_id)
                    .bind(version_id)
                    .bind(c.now)
                    .execute(&mut *tx)
                    .await
                    .map_err(op)?;
            }
        }
        let detail = completion_detail(c);
        self.insert_event(
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

    pub(super) async fn settle(&self, lease: &Lease, s: &Settle) -> Result<(), StoreError> {
        let op: OpErr = StoreError::Settle;
        let mut tx = self.begin_write(op).await?;
        let version_id: Option<Option<String>> = sqlx::query_scalar(self.d.settle)
            .bind(lease.job_id.as_str())
            .bind(lease.owner.as_str())
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
            self.fail_version(
                &mut tx,
                version_id.as_deref(),
                s.reason.as_deref(),
                s.now,
                op,
            )
            .await?;
        }
        self.insert_event(
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

    pub(super) async fn reschedule(&self, lease: &Lease, r: &Reschedule) -> Result<(), StoreError> {
        let op: OpErr = StoreError::Reschedule;
        let changed = r.from != r.to;
        let mut tx = self.begin_write(op).await?;
        let done = sqlx::query(self.d.reschedule)
            .bind(lease.job_id.as_str())
            .bind(lease.owner.as_str())
            .bind(lease.token)
            .bind(r.from.as_str())
            .bind(r.to.as_str())
            .bind(self.counter(r.attempts))
            .bind(self.counter(r.polls))
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
            self.insert_event(
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
}
