//! An operator's decision on a `needs_operator` job, the webhook hint that
//! makes a job due now, an operator's cancel, and the readiness ping.

use clawcut_core::{Event as CoreEvent, JobStatus, Millis, transition};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::write::Event;
use super::{RowsAffected, Sql};
use crate::row::{FAILED_BY_OPERATOR, OpErr, resolution_name};
use crate::{Canceled, ProviderCancel, Resolution, StoreError};

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
    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(self.pool)
            .await
            .map_err(StoreError::Ping)?;
        Ok(())
    }

    pub(super) async fn resolve(
        &self,
        job_id: &str,
        resolution: Resolution,
        operator: &str,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<JobStatus, StoreError> {
        let op: OpErr = StoreError::Resolve;
        let mut tx = self.begin_write(op).await?;
        let (to, changed) = match resolution {
            Resolution::Resubmit => {
                let changed: Option<Option<String>> = sqlx::query_scalar(self.d.resolve_resubmit)
                    .bind(job_id)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(op)?;
                (JobStatus::Queued, changed)
            }
            Resolution::Fail => {
                let changed: Option<Option<String>> = sqlx::query_scalar(self.d.resolve_fail)
                    .bind(job_id)
                    .bind(now)
                    .bind(FAILED_BY_OPERATOR)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(op)?;
                if let Some(version_id) = &changed {
                    self.fail_version(
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
            let status: Option<String> = sqlx::query_scalar(self.d.job_status)
                .bind(job_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(op)?;
            return Err(StoreError::NotResolvable {
                job_id: job_id.to_owned(),
                status,
            });
        }
        let mut detail = serde_json::json!({ "resolution": resolution_name(resolution) });
        if let Some(r) = reason.map(str::trim).filter(|r| !r.is_empty()) {
            detail["reason"] = serde_json::Value::String(r.to_owned());
        }
        let detail = detail.to_string();
        let event = Event {
            job_id,
            from: Some(JobStatus::NeedsOperator.as_str()),
            to,
            worker_id: operator,
            detail: &detail,
            now,
        };
        self.insert_event(&mut tx, &event, op).await?;
        tx.commit().await.map_err(op)?;
        Ok(to)
    }

    pub(super) async fn cancel(
        &self,
        job_id: &str,
        operator: &str,
        reason: Option<&str>,
        provider_cancel: &ProviderCancel,
        now: Millis,
    ) -> Result<Canceled, StoreError> {
        let op: OpErr = StoreError::Cancel;
        let mut tx = self.begin_write(op).await?;
        let row: Option<(String, String, Option<String>, Option<String>)> =
            sqlx::query_as(self.d.cancel_read)
                .bind(job_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(op)?;
        let not_cancelable = |status: Option<String>| StoreError::NotCancelable {
            job_id: job_id.to_owned(),
            status,
        };
        let Some((status_text, provider, provider_job_id, version_id)) = row else {
            return Err(self.abandon(tx, not_cancelable(None)).await);
        };
        // An unknown status is not the daemon's to judge: refused like a
        // final one, and the operator sees what the row holds.
        let from = match status_text.parse::<JobStatus>().ok() {
            Some(s) if transition(s, CoreEvent::OperatorCancel).is_ok() => s,
            _ => return Err(self.abandon(tx, not_cancelable(Some(status_text))).await),
        };
        let last_error = match reason {
            Some(r) if !r.trim().is_empty() => format!("canceled by {operator}: {}", r.trim()),
            _ => format!("canceled by {operator}"),
        };
        let done = sqlx::query(self.d.cancel_job)
            .bind(job_id)
            .bind(now)
            .bind(clawcut_core::redact::redact(&last_error).as_ref())
            .bind(from.as_str())
            .execute(&mut *tx)
            .await
            .map_err(op)?;
        if done.rows_affected() == 0 {
            // Cannot happen under the lock taken by `cancel_read`; refused
            // rather than trusted.
            return Err(self.abandon(tx, not_cancelable(Some(status_text))).await);
        }
        self.fail_version(&mut tx, version_id.as_deref(), Some(&last_error), now, op)
            .await?;
        let mut detail = serde_json::json!({
            "event": "operator_cancel",
            "reason": reason,
            "provider_cancel": provider_cancel.label(),
            "provider_cancel_requested": *provider_cancel == ProviderCancel::Requested,
        });
        if let ProviderCancel::Failed(msg) = provider_cancel {
            detail["provider_cancel_error"] = serde_json::Value::String(msg.clone());
        }
        let detail = detail.to_string();
        let event = Event {
            job_id,
            from: Some(from.as_str()),
            to: JobStatus::Canceled,
            worker_id: operator,
            detail: &detail,
            now,
        };
        self.insert_event(&mut tx, &event, op).await?;
        tx.commit().await.map_err(op)?;
        Ok(Canceled {
            from,
            provider,
            provider_job_id,
            reason: last_error,
        })
    }

    pub(super) async fn make_due(
        &self,
        provider: &str,
        provider_job_id: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(self.d.make_due)
            .bind(provider)
            .bind(provider_job_id)
            .bind(now)
            .execute(self.pool)
            .await
            .map_err(StoreError::MakeDue)?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn note_webhook(
        &self,
        provider: &str,
        delivery_id: &str,
        now: Millis,
        forget_before: Millis,
    ) -> Result<bool, StoreError> {
        sqlx::query(self.d.prune_webhooks)
            .bind(forget_before)
            .execute(self.pool)
            .await
            .map_err(StoreError::NoteWebhook)?;
        let done = sqlx::query(self.d.insert_webhook)
            .bind(provider)
            .bind(delivery_id)
            .bind(now)
            .execute(self.pool)
            .await
            .map_err(StoreError::NoteWebhook)?;
        Ok(done.rows_affected() > 0)
    }
}
