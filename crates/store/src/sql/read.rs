//! Reads: one job, the operator's lists and the status report. The list and
//! count statements start with the predicate of a partial index so they
//! stay cheap on a table of mostly finished jobs.

use clawcut_core::{EligibilityRules, Job, JobStatus, Millis};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::{RowsAffected, Sql};
use crate::row::{count, job_from_row, jobs_from_rows};
use crate::{Gauges, JobFilter, StatusReport, StoreError};

/// The same text on both backends (no parameters, no timestamps).
const COUNT_UNSUBMITTED: &str = "SELECT COUNT(*) FROM ai_jobs
         WHERE status IN ('queued', 'submitting', 'pending', 'processing')
           AND kind = 'video' AND status = 'queued' AND provider_job_id IS NULL";
/// Counts by status stop here: a million finished rows are not read to
/// print "≥ 10000" (StatusReport::by_status_cap).
pub(crate) const BY_STATUS_CAP: i64 = 10_000;

/// One status's count, capped. Same text on both backends: the status is
/// one of ours and the cap a constant, never input.
fn count_status_sql(status: JobStatus) -> String {
    format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM ai_jobs WHERE kind = 'video' AND status = '{}' LIMIT {BY_STATUS_CAP}) c",
        status.as_str()
    )
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
    pub(super) async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(self.d.get_job)
            .bind(id)
            .fetch_optional(self.pool)
            .await
            .map_err(StoreError::GetJob)?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    pub(super) async fn list_jobs(
        &self,
        filter: JobFilter,
        now: Millis,
        rules: &EligibilityRules,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let rows = match filter {
            JobFilter::Stranded => {
                sqlx::query(self.d.list_stranded)
                    .bind(now)
                    .bind(rules.updated_before(now))
                    .bind(i64::from(limit))
                    .fetch_all(self.pool)
                    .await
            }
            JobFilter::NeedsOperator => {
                sqlx::query(self.d.list_needs_operator)
                    .bind(i64::from(limit))
                    .fetch_all(self.pool)
                    .await
            }
        }
        .map_err(StoreError::ListJobs)?;
        jobs_from_rows(&rows)
    }

    pub(super) async fn status_report(
        &self,
        now: Millis,
        rules: &EligibilityRules,
    ) -> Result<StatusReport, StoreError> {
        let op = StoreError::StatusReport;
        // One read transaction: every number describes the same instant.
        let mut tx = match self.d.begin_snapshot {
            Some(stmt) => self.pool.begin_with(stmt).await,
            None => self.pool.begin().await,
        }
        .map_err(op)?;
        let (eligible, oldest_eligible): (i64, Option<i64>) = sqlx::query_as(self.d.count_eligible)
            .bind(rules.submit_enabled)
            .bind(false)
            .bind(rules.updated_before(now))
            .bind(now)
            .bind(None::<&str>)
            .fetch_one(&mut *tx)
            .await
            .map_err(op)?;
        let (stranded, oldest_stranded): (i64, Option<i64>) = sqlx::query_as(self.d.count_stranded)
            .bind(now)
            .bind(rules.updated_before(now))
            .fetch_one(&mut *tx)
            .await
            .map_err(op)?;
        let running: i64 = sqlx::query_scalar(self.d.count_running)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(op)?;
        let (needs_operator, oldest_needs_operator): (i64, Option<i64>) =
            sqlx::query_as(self.d.count_needs_operator)
                .fetch_one(&mut *tx)
                .await
                .map_err(op)?;
        let unsubmitted: i64 = sqlx::query_scalar(COUNT_UNSUBMITTED)
            .fetch_one(&mut *tx)
            .await
            .map_err(op)?;
        let mut by_status = Vec::new();
        for st in JobStatus::ALL {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_status_sql(st)))
                .fetch_one(&mut *tx)
                .await
                .map_err(op)?;
            if n > 0 {
                by_status.push((st, count(n)));
            }
        }
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
            by_status,
            by_status_cap: count(BY_STATUS_CAP),
        })
    }

    pub(super) async fn gauges(
        &self,
        now: Millis,
        rules: &EligibilityRules,
    ) -> Result<Gauges, StoreError> {
        let op = StoreError::StatusReport;
        let (eligible, oldest_eligible): (i64, Option<i64>) = sqlx::query_as(self.d.count_eligible)
            .bind(rules.submit_enabled)
            .bind(false)
            .bind(rules.updated_before(now))
            .bind(now)
            .bind(None::<&str>)
            .fetch_one(self.pool)
            .await
            .map_err(op)?;
        let (needs_operator, _): (i64, Option<i64>) = sqlx::query_as(self.d.count_needs_operator)
            .fetch_one(self.pool)
            .await
            .map_err(op)?;
        Ok(Gauges {
            eligible: count(eligible),
            oldest_eligible_updated_at: oldest_eligible,
            needs_operator: count(needs_operator),
        })
    }
}
