//! The operator panel's reads and its "retry now" (see `crate::panel`).
//!
//! A job list combines optional filters, so its statement is assembled
//! here from fixed fragments; every value is bound, never spliced in (the
//! only numbers written into the text are the row limits, the count cap
//! and the timeout, all ours and bounded). The fragments that differ between the backends
//! (placeholders, timestamp conversions, the event order) come from
//! [`Backend`].

use std::future::Future;
use std::time::Duration;

use clawcut_core::{JobStatus, Millis};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::write::Event;
use super::{RowsAffected, Sql};
use crate::row::{count, job_from_row};
use crate::{
    Backend, Cursor, ErrorGroup, JobEvent, JobMedia, JobPage, JobQuery, JobView, PanelLimits,
    RetryNow, RetryOutcome, StoreError, Transition,
};

/// A value to bind, in placeholder order.
enum Bind {
    Text(String),
    Null,
    Int(i64),
    Flag(bool),
}

/// A statement being assembled, with its binds.
struct Stmt {
    backend: Backend,
    binds: Vec<Bind>,
}

impl Stmt {
    fn new(backend: Backend) -> Stmt {
        Stmt {
            backend,
            binds: Vec::new(),
        }
    }

    /// Bind `b` and return its placeholder.
    fn push(&mut self, b: Bind) -> String {
        let cast = match (&b, self.backend) {
            (_, Backend::Sqlite) => "",
            (Bind::Text(_) | Bind::Null, Backend::Postgres) => "::text",
            (Bind::Int(_), Backend::Postgres) => "::int8",
            (Bind::Flag(_), Backend::Postgres) => "::bool",
        };
        self.binds.push(b);
        let n = self.binds.len();
        match self.backend {
            Backend::Sqlite => format!("?{n}"),
            Backend::Postgres => format!("${n}{cast}"),
        }
    }

    fn text(&mut self, s: &str) -> String {
        self.push(Bind::Text(s.to_owned()))
    }

    /// A millisecond instant compared with a timestamp column.
    fn instant(&mut self, ms: Millis) -> String {
        let p = self.push(Bind::Int(ms));
        match self.backend {
            Backend::Sqlite => p,
            Backend::Postgres => format!("to_timestamp({p}::float8 / 1000.0)"),
        }
    }

    /// A [`Cursor::key`] compared with `updated_at`.
    fn key(&mut self, key: i64) -> String {
        let p = self.push(Bind::Int(key));
        match self.backend {
            Backend::Sqlite => p,
            Backend::Postgres => format!("to_timestamp({p}::float8 / 1000000.0)"),
        }
    }
}

/// A timestamp column read as epoch milliseconds (NULL when infinite).
fn ms(backend: Backend, col: &str) -> String {
    match backend {
        Backend::Sqlite => col.to_owned(),
        Backend::Postgres => {
            format!("CASE WHEN isfinite({col}) THEN (extract(epoch from {col}) * 1000)::int8 END")
        }
    }
}

/// `updated_at` as a [`Cursor::key`]: exact, in the backend's own unit.
fn sort_key(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "updated_at",
        Backend::Postgres => {
            "CASE WHEN isfinite(updated_at) THEN (extract(epoch from updated_at) * 1000000)::int8 ELSE 0 END"
        }
    }
}

/// `last_error` up to its first `:` within 40 characters, else ''.
fn error_head(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "CASE WHEN instr(last_error, ':') BETWEEN 1 AND 40 THEN substr(last_error, 1, instr(last_error, ':')) ELSE '' END"
        }
        Backend::Postgres => {
            "CASE WHEN strpos(last_error, ':') BETWEEN 1 AND 40 THEN substr(last_error, 1, strpos(last_error, ':')) ELSE '' END"
        }
    }
}

/// Events of one job in the order they were written.
fn event_order(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "created_at, rowid",
        Backend::Postgres => "created_at, seq",
    }
}

/// Unfinished statuses: the predicate of the partial indexes, verbatim.
const UNFINISHED: &str = "status IN ('queued', 'submitting', 'pending', 'processing')";

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
    /// Run `text` with `binds` and fetch every row, within `limits`: in a
    /// read transaction whose `statement_timeout` is the limit on
    /// PostgreSQL, and under a deadline on either.
    async fn panel_rows(
        &self,
        text: String,
        binds: &[Bind],
        limits: PanelLimits,
    ) -> Result<Vec<DB::Row>, StoreError> {
        let timeout = limits.timeout;
        let work = async {
            let mut tx = self.pool.begin().await?;
            if self.d.backend == Backend::Postgres {
                let ms = timeout.as_millis().max(1);
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SET LOCAL statement_timeout = {ms}"
                )))
                .execute(&mut *tx)
                .await?;
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
            for b in binds {
                q = match b {
                    Bind::Text(s) => q.bind(s.as_str()),
                    Bind::Null => q.bind(None::<&str>),
                    Bind::Int(i) => q.bind(*i),
                    Bind::Flag(f) => q.bind(*f),
                };
            }
            let rows = q.fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(rows)
        };
        within(timeout, work).await
    }

    pub(super) async fn panel_jobs(&self, q: &JobQuery<'_>) -> Result<JobPage, StoreError> {
        let b = self.d.backend;
        let mut st = Stmt::new(b);
        // The view's own predicate first: it names the partial index.
        let mut w = match q.view {
            JobView::All => "kind = 'video'".to_owned(),
            JobView::NeedsOperator => "status = 'needs_operator' AND kind = 'video'".to_owned(),
            JobView::Eligible => {
                // eligible!() numbers its parameters 1 to 5.
                st.push(Bind::Flag(q.rules.submit_enabled));
                st.push(Bind::Flag(false));
                st.push(Bind::Int(q.rules.updated_before(q.now)));
                st.push(Bind::Int(q.now));
                st.push(Bind::Null);
                self.d.eligible_where.to_owned()
            }
            JobView::Stranded => {
                // stranded!() numbers its parameters 1 and 2.
                st.push(Bind::Int(q.now));
                st.push(Bind::Int(q.rules.updated_before(q.now)));
                self.d.stranded_where.to_owned()
            }
        };
        if let Some(s) = q.status {
            w += &format!(" AND status = {}", st.text(s.as_str()));
        }
        if let Some(p) = q.provider {
            w += &format!(" AND provider = {}", st.text(p));
        }
        // An error group is some of the unfinished jobs, which are few
        // beside the finished history: SQLite walks their partial index
        // (bare, it walks `ai_jobs_recent` through the whole history to
        // find a page). The term it needs is `UNFINISHED`, verbatim.
        let from = match (q.error_head, b) {
            (Some(_), Backend::Sqlite) => "ai_jobs INDEXED BY ai_jobs_claimable",
            _ => "ai_jobs",
        };
        if let Some(h) = q.error_head {
            let p = st.text(h);
            // A group holds unfinished jobs only, as `error_groups` counts.
            w += &format!(" AND {UNFINISHED} AND substr(last_error, 1, length({p})) = {p}");
        }
        if let Some(s) = q.search {
            let p = st.text(s);
            w += &format!(" AND (id = {p} OR provider_job_id = {p} OR scene_id = {p})");
        }
        let filters = w.clone();
        let filter_binds = st.binds.len();
        let (cmp, dir) = if q.view.newest_first() {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some(c) = q.after {
            let k = st.key(c.key);
            let id = st.text(&c.id);
            w += &format!(" AND (updated_at, id) {cmp} ({k}, {id})");
        }
        let page = i64::from(q.limit.clamp(1, 1000));
        // The limit is written into the text (ours, and bounded): bound as a
        // parameter, PostgreSQL's generic plan cannot know it is small and
        // may sort the whole table instead of walking the index.
        let lim = page + 1;
        // The ORDER BY names the table's columns: bare, PostgreSQL would
        // take `updated_at` for the output column (epoch ms, computed by
        // `job_cols`) and sort every matching row instead of walking
        // `ai_jobs_recent`.
        let text = format!(
            "SELECT {cols}, {key} AS sort_key FROM {from} WHERE {w}
             ORDER BY ai_jobs.updated_at {dir}, ai_jobs.id {dir} LIMIT {lim}",
            cols = self.d.list_cols,
            key = sort_key(b),
        );
        let rows = self.panel_rows(text, &st.binds, q.limits).await?;
        let mut jobs = Vec::with_capacity(rows.len());
        let mut next = None;
        for (i, r) in rows.iter().enumerate() {
            if i as i64 == page {
                break;
            }
            jobs.push(job_from_row(r)?);
            if i as i64 == page - 1 && rows.len() as i64 > page {
                next = Some(Cursor {
                    key: r.try_get("sort_key").map_err(StoreError::PanelQuery)?,
                    id: r.try_get("id").map_err(StoreError::PanelQuery)?,
                });
            }
        }
        let (count, count_capped) = if q.count {
            let cap = i64::from(q.limits.count_cap);
            let text = format!(
                "SELECT COUNT(*) AS n FROM (SELECT 1 FROM {from} WHERE {filters} LIMIT {}) c",
                cap + 1
            );
            let rows = self
                .panel_rows(text, &st.binds[..filter_binds], q.limits)
                .await?;
            let n: i64 = match rows.first() {
                Some(r) => r.try_get("n").map_err(StoreError::PanelQuery)?,
                None => 0,
            };
            (Some(count(n.min(cap))), n > cap)
        } else {
            (None, false)
        };
        Ok(JobPage {
            jobs,
            next,
            count,
            count_capped,
        })
    }

    pub(super) async fn job_events(
        &self,
        job_id: &str,
        limit: u32,
        limits: PanelLimits,
    ) -> Result<Vec<JobEvent>, StoreError> {
        let b = self.d.backend;
        let mut st = Stmt::new(b);
        let id = st.text(job_id);
        let lim = limit;
        let text = format!(
            "SELECT id, ai_job_id, from_status, to_status, worker_id, detail, {at} AS at
             FROM ai_job_events WHERE ai_job_id = {id} ORDER BY {order} LIMIT {lim}",
            at = ms(b, "created_at"),
            order = event_order(b),
        );
        let rows = self.panel_rows(text, &st.binds, limits).await?;
        rows.iter()
            .map(|r| {
                Ok(JobEvent {
                    id: r.try_get("id")?,
                    ai_job_id: r.try_get("ai_job_id")?,
                    from_status: r.try_get("from_status")?,
                    to_status: r.try_get("to_status")?,
                    worker_id: r.try_get("worker_id")?,
                    detail: r.try_get("detail")?,
                    created_at: r.try_get::<Option<i64>, _>("at")?.unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::PanelQuery)
    }

    pub(super) async fn job_media(
        &self,
        job_id: &str,
        limits: PanelLimits,
    ) -> Result<Option<JobMedia>, StoreError> {
        let b = self.d.backend;
        let mut st = Stmt::new(b);
        let id = st.text(job_id);
        let text = format!(
            "SELECT j.video_path AS video_path, j.thumbnail_path AS thumbnail_path,
                    j.video_sha256 AS video_sha256, j.video_bytes AS video_bytes,
                    {done} AS done, v.status AS version_status, v.error AS version_error
             FROM ai_jobs j LEFT JOIN scene_versions v ON v.id = j.scene_version_id
             WHERE j.id = {id}",
            done = ms(b, "j.completed_at"),
        );
        let rows = self.panel_rows(text, &st.binds, limits).await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let media = (|| {
            Ok::<_, sqlx::Error>(JobMedia {
                video_path: r.try_get("video_path")?,
                thumbnail_path: r.try_get("thumbnail_path")?,
                video_sha256: r.try_get("video_sha256")?,
                video_bytes: r
                    .try_get::<Option<i64>, _>("video_bytes")?
                    .map(|n| u64::try_from(n).unwrap_or(0)),
                completed_at: r.try_get("done")?,
                version_status: r.try_get("version_status")?,
                version_error: r.try_get("version_error")?,
            })
        })()
        .map_err(StoreError::PanelQuery)?;
        Ok(Some(media))
    }

    pub(super) async fn error_groups(
        &self,
        limit: u32,
        limits: PanelLimits,
    ) -> Result<Vec<ErrorGroup>, StoreError> {
        let b = self.d.backend;
        let st = Stmt::new(b);
        let lim = limit;
        let text = format!(
            "SELECT provider, head, COUNT(*) AS n, MIN(at) AS oldest FROM (
                 SELECT provider, {head} AS head, {at} AS at FROM ai_jobs
                 WHERE {UNFINISHED} AND kind = 'video' AND last_error IS NOT NULL
             ) e GROUP BY provider, head ORDER BY n DESC, provider, head LIMIT {lim}",
            head = error_head(b),
            at = ms(b, "updated_at"),
        );
        let rows = self.panel_rows(text, &st.binds, limits).await?;
        rows.iter()
            .map(|r| {
                Ok(ErrorGroup {
                    provider: r.try_get("provider")?,
                    head: r.try_get("head")?,
                    count: count(r.try_get("n")?),
                    oldest_updated_at: r.try_get::<Option<i64>, _>("oldest")?.unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::PanelQuery)
    }

    pub(super) async fn recent_transitions(
        &self,
        limit: u32,
        limits: PanelLimits,
    ) -> Result<Vec<Transition>, StoreError> {
        let b = self.d.backend;
        let st = Stmt::new(b);
        let lim = limit;
        // The newest events through their time index; each one's previous
        // event through the (job, time) index: `limit` probes, whatever the
        // table holds.
        let text = format!(
            "SELECT j.provider AS provider, e.from_status AS from_status,
                    e.to_status AS to_status, {at} AS at,
                    COALESCE((SELECT {prev} FROM ai_job_events p
                              WHERE p.ai_job_id = e.ai_job_id AND p.created_at < e.created_at
                              ORDER BY p.created_at DESC LIMIT 1), {created}) AS since
             FROM (SELECT ai_job_id, from_status, to_status, created_at FROM ai_job_events
                   ORDER BY created_at DESC LIMIT {lim}) e
             JOIN ai_jobs j ON j.id = e.ai_job_id",
            at = ms(b, "e.created_at"),
            prev = ms(b, "p.created_at"),
            created = ms(b, "j.created_at"),
        );
        let rows = self.panel_rows(text, &st.binds, limits).await?;
        rows.iter()
            .map(|r| {
                Ok(Transition {
                    provider: r.try_get("provider")?,
                    from_status: r.try_get("from_status")?,
                    to_status: r.try_get("to_status")?,
                    since: r.try_get::<Option<i64>, _>("since")?.unwrap_or(0),
                    at: r.try_get::<Option<i64>, _>("at")?.unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::PanelQuery)
    }

    /// Each job, in one write transaction per call: made due now only
    /// while it is exactly as seen (status, fencing token, attempts, last
    /// error) and not leased, with an audit event; otherwise skipped.
    pub(super) async fn retry_now(&self, r: &RetryNow<'_>) -> Result<RetryOutcome, StoreError> {
        let op = StoreError::RetryNow;
        let b = self.d.backend;
        let mut st = Stmt::new(b);
        let id = st.text("");
        let status = st.text("");
        let token = st.push(Bind::Int(0));
        let attempts = st.push(Bind::Int(0));
        let err = st.text("");
        let now = st.instant(0);
        let text = format!(
            "UPDATE ai_jobs SET next_attempt_at = {now}
             WHERE id = {id} AND status = {status} AND fencing_token = {token}
               AND attempts = {attempts} AND COALESCE(last_error, '') = {err}
               AND {UNFINISHED}
               AND (lease_expires_at IS NULL OR lease_expires_at <= {now})"
        );
        let mut out = RetryOutcome::default();
        let mut tx = self.begin_write(op).await?;
        for seen in r.jobs {
            let done = sqlx::query(sqlx::AssertSqlSafe(text.clone()))
                .bind(seen.id.as_str())
                .bind(seen.status.as_str())
                .bind(seen.fencing_token)
                .bind(i64::from(seen.attempts))
                .bind(seen.last_error.as_deref().unwrap_or(""))
                .bind(r.now)
                .execute(&mut *tx)
                .await
                .map_err(op)?;
            if done.rows_affected() == 0 {
                out.skipped.push(seen.id.clone());
                continue;
            }
            let detail = serde_json::json!({
                "event": "operator_retry",
                "operator": r.operator,
                "reason": r.reason,
                "bulk": r.bulk_id,
            })
            .to_string();
            let event = Event {
                job_id: &seen.id,
                from: Some(seen.status.as_str()),
                to: seen.status,
                worker_id: r.operator,
                detail: &detail,
                now: r.now,
            };
            self.insert_event(&mut tx, &event, op).await?;
            out.done.push(seen.id.clone());
        }
        tx.commit().await.map_err(op)?;
        Ok(out)
    }

    /// An operator's action on a job that changes no column (a reconcile
    /// asked for): its audit event, from and to the job's status. `None`
    /// when there is no such job.
    pub(super) async fn note_operator(
        &self,
        job_id: &str,
        operator: &str,
        detail: &serde_json::Value,
        now: Millis,
    ) -> Result<Option<JobStatus>, StoreError> {
        let op = StoreError::NoteOperator;
        let mut tx = self.begin_write(op).await?;
        let status: Option<String> = sqlx::query_scalar(self.d.job_status)
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(op)?;
        let Some(status) = status.and_then(|s| s.parse::<JobStatus>().ok()) else {
            return Ok(None);
        };
        let detail = detail.to_string();
        let event = Event {
            job_id,
            from: Some(status.as_str()),
            to: status,
            worker_id: operator,
            detail: &detail,
            now,
        };
        self.insert_event(&mut tx, &event, op).await?;
        tx.commit().await.map_err(op)?;
        Ok(Some(status))
    }
}

/// `work` within `timeout`: a statement the server stopped for its
/// `statement_timeout` (PostgreSQL's 57014) and a deadline passed both
/// read as [`StoreError::PanelTimeout`].
async fn within<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(StoreError::PanelTimeout { after: timeout }),
        Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("57014") => {
            Err(StoreError::PanelTimeout { after: timeout })
        }
        Ok(Err(e)) => Err(StoreError::PanelQuery(e)),
        Ok(Ok(v)) => Ok(v),
    }
}
