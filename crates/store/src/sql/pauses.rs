//! Provider pauses (SPEC, "Provider health"): one row per paused provider
//! in `provider_pauses`, shared by every replica. The claim statements read
//! the table themselves; these are the writes and the listing.

use std::time::Duration;

use clawcut_core::{Millis, PauseCause};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::{RowsAffected, Sql};
use crate::row::ms;
use crate::{PauseProvider, ProviderCall, ProviderPause, StoreError};

/// A `provider_pauses` row as read: timestamps may be NULL where the
/// backend cannot express them in milliseconds.
type PauseRow = (
    String,
    String,
    String,
    String,
    Option<i64>,
    String,
    Option<i64>,
    i64,
    i64,
    Option<i64>,
);

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
    pub(super) async fn pause_provider(&self, p: &PauseProvider<'_>) -> Result<bool, StoreError> {
        let op = StoreError::PauseProvider;
        let reason = clawcut_core::redact::redact(p.reason);
        let inserted = sqlx::query(self.d.insert_pause)
            .bind(p.provider)
            .bind(p.cause.label())
            .bind(reason.as_ref())
            .bind(p.call.label())
            .bind(p.now)
            .bind(p.worker_id)
            .bind(p.now.saturating_add(ms(p.cooldown)))
            .bind(ms(p.cooldown))
            .execute(self.pool)
            .await
            .map_err(op)?;
        if inserted.rows_affected() > 0 {
            return Ok(true);
        }
        // Already paused (by us or another replica): keep its start and its
        // probe schedule, take the newest cause and reason.
        sqlx::query(self.d.update_pause)
            .bind(p.provider)
            .bind(p.cause.label())
            .bind(reason.as_ref())
            .bind(p.call.label())
            .bind(p.now)
            .execute(self.pool)
            .await
            .map_err(op)?;
        Ok(false)
    }

    pub(super) async fn take_probe(
        &self,
        provider: &str,
        now: Millis,
        cooldown: Duration,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(self.d.take_probe)
            .bind(provider)
            .bind(now)
            .bind(now.saturating_add(ms(cooldown)))
            .bind(ms(cooldown))
            .execute(self.pool)
            .await
            .map_err(StoreError::TakeProbe)?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn resume_provider(&self, provider: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(self.d.delete_pause)
            .bind(provider)
            .execute(self.pool)
            .await
            .map_err(StoreError::ResumeProvider)?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn provider_pauses(&self) -> Result<Vec<ProviderPause>, StoreError>
    where
        PauseRow: for<'r> sqlx::FromRow<'r, DB::Row>,
    {
        let rows: Vec<PauseRow> = sqlx::query_as(self.d.list_pauses)
            .fetch_all(self.pool)
            .await
            .map_err(StoreError::ReadProviderPauses)?;
        rows.into_iter().map(pause_from_row).collect()
    }
}

impl<DB> Sql<'_, DB>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    (String,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    /// See [`crate::Store::recent_worker_ids`].
    pub(super) async fn recent_worker_ids(&self, since: Millis) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(self.d.recent_workers)
            .bind(since)
            .fetch_all(self.pool)
            .await
            .map_err(StoreError::ReadWorkers)?;
        let mut ids: Vec<String> = rows.into_iter().map(|(w,)| w).collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}

fn pause_from_row(r: PauseRow) -> Result<ProviderPause, StoreError> {
    let (provider, cause, reason, call, paused_at, paused_by, probe_at, cooldown, probes, updated) =
        r;
    let corrupt = |detail: String| StoreError::CorruptPause {
        provider: provider.clone(),
        detail,
    };
    let cause =
        PauseCause::from_label(&cause).ok_or_else(|| corrupt(format!("cause {cause:?}")))?;
    let call =
        ProviderCall::from_label(&call).ok_or_else(|| corrupt(format!("operation {call:?}")))?;
    let time = |v: Option<i64>, col: &str| v.ok_or_else(|| corrupt(format!("{col} is not a time")));
    Ok(ProviderPause {
        cause,
        call,
        reason,
        paused_at: time(paused_at, "paused_at")?,
        paused_by,
        probe_at: time(probe_at, "probe_at")?,
        cooldown: Duration::from_millis(u64::try_from(cooldown).unwrap_or(0)),
        probes: u64::try_from(probes).unwrap_or(0),
        updated_at: time(updated, "updated_at")?,
        provider,
    })
}
