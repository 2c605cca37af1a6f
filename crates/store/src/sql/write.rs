//! The fenced writes: every statement matches
//! `id AND lease_owner AND fencing_token` (and the expected status); when it
//! matches no row the transaction is rolled back and the caller gets
//! `LeaseLost`. Also the claim, which is where tokens come from.

use std::time::Duration;

use clawcut_core::{JobStatus, Lease, Millis};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Transaction, Type};

use super::due_hint::ClaimPath;
use super::{RowsAffected, Sql};
use crate::row::{
    OpErr, bytes_i64, claimed_from_rows, completed_at, completion_detail, detail_text, ms,
    raw_status, rejected_detail, rejected_reason,
};
use crate::{ClaimRequest, Claimed, Completion, Publish, Reschedule, SetAside, Settle, StoreError};

/// One `ai_job_events` row.
pub(super) struct Event<'a> {
    pub job_id: &'a str,
    /// The status text the change started from, as stored.
    pub from: Option<&'a str>,
    pub to: JobStatus,
    pub worker_id: &'a str,
    /// JSON text.
    pub detail: &'a str,
    pub now: Millis,
}

/// The files of a completion once [`Publish::publish`] succeeded: reverted
/// unless [`Published::committed`] is reached, including when the
/// completion's future is dropped. Declared after the transaction, so it is
/// dropped first: a revert happens while the transaction's locks are held.
struct Published<'p> {
    files: &'p mut (dyn Publish + Send),
    settled: bool,
}

impl Published<'_> {
    fn committed(mut self) {
        self.settled = true;
        self.files.committed();
    }

    fn revert(mut self) {
        self.settled = true;
        self.files.revert();
    }
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.files.revert();
        }
    }
}

fn lease_lost(lease: &Lease) -> StoreError {
    StoreError::LeaseLost {
        job_id: lease.job_id.clone(),
    }
}

/// The most due rows a claim reads and sorts itself; beyond, the walk in
/// `updated_at` order is the cheaper way to the oldest due ones.
const DUE_SCAN_MAX: i64 = 1000;

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
    /// Each row is decoded on its own (`row::claimed_from_rows`): a row the
    /// daemon cannot read comes back as `Claimed::Unreadable` instead of
    /// failing a batch whose leases are already committed.
    pub(super) async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<Claimed>, StoreError> {
        if req.limit == 0 {
            return Ok(Vec::new());
        }
        // Few rows due (the usual case, however many jobs are running with
        // their next poll far ahead): read just those. Many due: walk the
        // rows in `updated_at` order, which finds due ones at once. The
        // hint (`due_hint.rs`) says which to try; only an empty due-first
        // claim pays for a count.
        let plain = req.probe.is_none() && req.only_job.is_none() && !req.force;
        if !plain {
            return self.claim_with(req, false).await;
        }
        match self.due.path(req.now) {
            ClaimPath::DueFirst => {
                let got = self.claim_with(req, true).await?;
                if !got.is_empty() || self.count_due(req.now).await? <= DUE_SCAN_MAX {
                    return Ok(got);
                }
                self.due.backlog(req.now);
                self.claim_with(req, false).await
            }
            ClaimPath::Walk => {
                let got = self.claim_with(req, false).await?;
                if got.is_empty() {
                    self.due.drained();
                }
                Ok(got)
            }
        }
    }

    /// The due rows, counted up to one past `DUE_SCAN_MAX`.
    async fn count_due(&self, now: Millis) -> Result<i64, StoreError> {
        sqlx::query_scalar(self.d.count_due_upto)
            .bind(now)
            .bind(DUE_SCAN_MAX + 1)
            .fetch_one(self.pool)
            .await
            .map_err(StoreError::ClaimJobs)
    }

    /// One claim statement with its parameters: the probe's when
    /// `req.probe` asks for one, else the due-first claim or the walk.
    async fn claim_with(
        &self,
        req: &ClaimRequest<'_>,
        due_first: bool,
    ) -> Result<Vec<Claimed>, StoreError> {
        // The due-first claim runs on its own pool (`Backed::due_claim_pool`).
        let (stmt, pool) = match (req.probe, due_first) {
            (Some(_), _) => (self.d.claim_probe, self.pool),
            (None, true) => (self.d.claim_due, self.due_pool),
            (None, false) => (self.d.claim, self.pool),
        };
        let q = sqlx::query(stmt)
            .bind(req.rules.submit_enabled)
            .bind(req.force)
            .bind(req.rules.updated_before(req.now))
            .bind(req.now)
            .bind(req.only_job)
            .bind(req.worker_id)
            .bind(req.now.saturating_add(ms(req.lease_ttl)))
            .bind(i64::from(req.limit));
        let q = match (req.probe, due_first) {
            (Some(p), _) => q.bind(p.provider).bind(p.prefer_unsubmitted),
            (None, true) => q.bind(DUE_SCAN_MAX),
            (None, false) => q,
        };
        let rows = q.fetch_all(pool).await.map_err(StoreError::ClaimJobs)?;
        Ok(claimed_from_rows(&rows))
    }

    pub(super) async fn insert_event(
        &self,
        tx: &mut Transaction<'static, DB>,
        e: &Event<'_>,
        op: OpErr,
    ) -> Result<(), StoreError> {
        sqlx::query(self.d.insert_event)
            .bind(e.job_id)
            .bind(e.from)
            .bind(e.to.as_str())
            .bind(e.worker_id)
            // Every text column is written under the one redaction rule.
            .bind(clawcut_core::redact::redact(e.detail).as_ref())
            .bind(e.now)
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
        let error = error.map(clawcut_core::redact::redact);
        sqlx::query(self.d.fail_version)
            .bind(version_id)
            .bind(error.as_deref())
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

    /// See [`crate::Store::complete`] for the order of the steps.
    pub(super) async fn complete(
        &self,
        lease: &Lease,
        c: &Completion,
        publish: &mut (dyn Publish + Send),
    ) -> Result<(), StoreError> {
        let op: OpErr = StoreError::Complete;
        let mut publish = Some(publish);
        // Declared before the transaction, so a revert of files published
        // early runs after the rollback (nothing of ours is locked then).
        let mut early: Option<Published<'_>> = None;
        if let Some(check) = self.d.lease_held {
            let held: Option<(i64,)> = sqlx::query_as(check)
                .bind(lease.job_id.as_str())
                .bind(lease.owner.as_str())
                .bind(lease.token)
                .bind(c.from.as_str())
                .fetch_optional(self.pool)
                .await
                .map_err(op)?;
            if held.is_none() {
                return Err(lease_lost(lease));
            }
            if let Some(files) = publish.take() {
                files.publish().map_err(StoreError::PublishOutputs)?;
                early = Some(Published {
                    files,
                    settled: false,
                });
            }
        }
        let mut tx = self.begin_write(op).await?;
        if let Some(lock) = self.d.lock_completion
            && let Err(e) = sqlx::query(lock)
                .bind(lease.job_id.as_str())
                .execute(&mut *tx)
                .await
        {
            return Err(self.abandon(tx, op(e)).await);
        }
        let thumb = c.thumbnail.as_ref().map(|t| t.path.as_str());
        let row: Result<Option<(Option<String>, Option<String>)>, _> =
            sqlx::query_as(self.d.complete_job)
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
                .await;
        let (scene_id, version_id) = match row {
            Ok(Some(ids)) => ids,
            Ok(None) => return Err(self.abandon(tx, lease_lost(lease)).await),
            Err(e) => return Err(self.abandon(tx, op(e)).await),
        };
        let published = match (early, publish) {
            (Some(p), _) => p,
            (None, Some(files)) => {
                if let Err(e) = files.publish() {
                    return Err(self.abandon(tx, StoreError::PublishOutputs(e)).await);
                }
                Published {
                    files,
                    settled: false,
                }
            }
            // `early` holds the files whenever `publish` was taken.
            (None, None) => {
                let e = std::io::Error::other("the outputs were handed over twice");
                return Err(self.abandon(tx, StoreError::PublishOutputs(e)).await);
            }
        };
        let written = self
            .complete_version_scene_event(&mut tx, lease, c, scene_id, version_id)
            .await;
        if let Err(e) = written {
            published.revert();
            return Err(self.abandon(tx, e).await);
        }
        match tx.commit().await {
            Ok(()) => {
                published.committed();
                Ok(())
            }
            // The server refused the commit: nothing was written.
            Err(e @ sqlx::Error::Database(_)) => {
                published.revert();
                Err(op(e))
            }
            // The answer was lost with the connection: the server may have
            // committed. Putting the files back could leave a completed row
            // without its file, which nothing repairs; keeping them leaves,
            // if it did not commit, what a crash after the rename leaves
            // (the job is redone and commits the same bytes).
            Err(e) => {
                published.committed();
                Err(op(e))
            }
        }
    }

    /// The rest of a completion, once the job's row is ours and its files
    /// are in place.
    async fn complete_version_scene_event(
        &self,
        tx: &mut Transaction<'static, DB>,
        lease: &Lease,
        c: &Completion,
        scene_id: Option<String>,
        version_id: Option<String>,
    ) -> Result<(), StoreError> {
        let op: OpErr = StoreError::Complete;
        let thumb = c.thumbnail.as_ref().map(|t| t.path.as_str());
        if let Some(version_id) = version_id.as_deref() {
            sqlx::query(self.d.complete_version)
                .bind(version_id)
                .bind(c.video.path.as_str())
                .bind(thumb)
                .bind(c.video.sha256.as_str())
                .bind(bytes_i64(c.video.bytes))
                .bind(c.now)
                .execute(&mut **tx)
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
                    .execute(&mut **tx)
                    .await
                    .map_err(op)?;
            }
        }
        let detail = completion_detail(c);
        let event = Event {
            job_id: &lease.job_id,
            from: Some(c.from.as_str()),
            to: JobStatus::Completed,
            worker_id: &lease.owner,
            detail: &detail,
            now: c.now,
        };
        self.insert_event(tx, &event, op).await
    }

    /// See [`crate::Store::set_aside`]. The status is read first, under the
    /// same fence, for the event's `from_status`: the row may hold anything
    /// there, so it is whatever text was stored (or NULL).
    pub(super) async fn set_aside(&self, lease: &Lease, s: &SetAside) -> Result<(), StoreError> {
        let op: OpErr = StoreError::SetAside;
        let mut tx = self.begin_write(op).await?;
        let row = sqlx::query(self.d.set_aside_status)
            .bind(lease.job_id.as_str())
            .bind(lease.owner.as_str())
            .bind(lease.token)
            .fetch_optional(&mut *tx)
            .await;
        let from = match row {
            Ok(Some(row)) => raw_status(&row),
            Ok(None) => return Err(self.abandon(tx, lease_lost(lease)).await),
            Err(e) => return Err(self.abandon(tx, op(e)).await),
        };
        let reason = rejected_reason(s);
        let done = sqlx::query(self.d.set_aside)
            .bind(lease.job_id.as_str())
            .bind(lease.owner.as_str())
            .bind(lease.token)
            .bind(s.now)
            .bind(clawcut_core::redact::redact(&reason).as_ref())
            .execute(&mut *tx)
            .await;
        match done {
            Ok(done) if done.rows_affected() > 0 => {}
            // Fenced, but final: not ours to park.
            Ok(_) => return Err(self.abandon(tx, lease_lost(lease)).await),
            Err(e) => return Err(self.abandon(tx, op(e)).await),
        }
        let detail = rejected_detail(s);
        let event = Event {
            job_id: &lease.job_id,
            from: from.as_deref(),
            to: JobStatus::NeedsOperator,
            worker_id: &lease.owner,
            detail: &detail,
            now: s.now,
        };
        if let Err(e) = self.insert_event(&mut tx, &event, op).await {
            return Err(self.abandon(tx, e).await);
        }
        tx.commit().await.map_err(op)?;
        Ok(())
    }

    pub(super) async fn settle(&self, lease: &Lease, s: &Settle) -> Result<(), StoreError> {
        let op: OpErr = StoreError::Settle;
        let mut tx = self.begin_write(op).await?;
        let reason = s.reason.as_deref().map(clawcut_core::redact::redact);
        let version_id: Option<Option<String>> = sqlx::query_scalar(self.d.settle)
            .bind(lease.job_id.as_str())
            .bind(lease.owner.as_str())
            .bind(lease.token)
            .bind(s.from.as_str())
            .bind(s.to.as_str())
            .bind(s.now)
            .bind(reason.as_deref())
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
        let detail = detail_text(&s.detail);
        let event = Event {
            job_id: &lease.job_id,
            from: Some(s.from.as_str()),
            to: s.to,
            worker_id: &lease.owner,
            detail: &detail,
            now: s.now,
        };
        self.insert_event(&mut tx, &event, op).await?;
        tx.commit().await.map_err(op)?;
        Ok(())
    }

    pub(super) async fn reschedule(&self, lease: &Lease, r: &Reschedule) -> Result<(), StoreError> {
        let op: OpErr = StoreError::Reschedule;
        let changed = r.from != r.to;
        let mut tx = self.begin_write(op).await?;
        let last_error = r.last_error.as_deref().map(clawcut_core::redact::redact);
        let done = sqlx::query(self.d.reschedule)
            .bind(lease.job_id.as_str())
            .bind(lease.owner.as_str())
            .bind(lease.token)
            .bind(r.from.as_str())
            .bind(r.to.as_str())
            .bind(self.counter(r.attempts))
            .bind(self.counter(r.polls))
            .bind(r.next_attempt_at)
            .bind(last_error.as_deref())
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
            let event = Event {
                job_id: &lease.job_id,
                from: Some(r.from.as_str()),
                to: r.to,
                worker_id: &lease.owner,
                detail: &detail,
                now: r.now,
            };
            self.insert_event(&mut tx, &event, op).await?;
        }
        tx.commit().await.map_err(op)?;
        Ok(())
    }
}
