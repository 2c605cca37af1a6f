//! The operations of [`Store`], written once for both backends.
//!
//! Each backend supplies a [`Dialect`]: the text of every statement (its
//! placeholders and timestamp conversions differ, the logic does not) and
//! the few steps that really differ, such as how a write transaction
//! begins. The operations themselves (the transaction sequence, lease-lost
//! detection, the audit event, the scene pointer rule) are the generic
//! methods of [`Sql`], over any `sqlx` database whose driver can bind and
//! decode the handful of Rust types they use.
//!
//! The two store types implement [`Backed`], and through it [`Store`], so
//! neither repeats the list of operations.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use clawcut_core::{EligibilityRules, Job, JobStatus, Lease, Millis};
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Transaction, Type,
};

use crate::row::OpErr;
use crate::{
    Backend, ClaimRequest, Claimed, Completion, Gauges, JobFilter, PauseProvider, ProviderPause,
    Publish, Reschedule, Resolution, SchemaStatus, SetAside, Settle, Snapshot, StatusReport, Store,
    StoreError,
};

mod batch;
mod due_hint;
mod panel;
mod pauses;
mod read;
mod resolve;
mod write;

pub use due_hint::DueHint;

/// One backend's statements. Parameter numbers are the same on both
/// backends; the comment on each field lists them.
pub struct Dialect {
    /// Opens every multi-statement write transaction; `None` is the driver's
    /// plain `BEGIN`.
    pub begin_write: Option<&'static str>,
    /// Opens the status report's read transaction, so that every count
    /// describes the same instant; `None` is the driver's plain `BEGIN`.
    pub begin_snapshot: Option<&'static str>,
    /// Largest value the `attempts` and `polls` columns hold: larger counts
    /// are stored saturated rather than failing the write.
    pub counter_max: i64,

    /// 1 submit enabled, 2 force, 3 updated_before, 4 now, 5 only job id,
    /// 6 worker id, 7 lease expiry, 8 limit. Returns job columns.
    pub claim: &'static str,
    /// 1 id, 2 owner, 3 token, 4 lease expiry.
    pub heartbeat: &'static str,
    /// 1 id, 2 owner, 3 token.
    pub release: &'static str,
    /// 1 job id. Serializes completions of the job's scene version (or of
    /// the job, when it has none) until the transaction ends, run first in
    /// `complete`; `None` when the write transaction already serializes
    /// every writer (SQLite).
    pub lock_completion: Option<&'static str>,
    /// 1 id, 2 owner, 3 token, 4 from. Returns a row while the lease is held.
    /// `Some` makes `complete` publish its files *before* it takes the write
    /// lock, after this read confirmed the lease, instead of inside the
    /// transaction: where the write lock is database-wide (SQLite), renames
    /// and directory fsyncs under it would serialize every other writer
    /// (claims, completions, reschedules) behind the filesystem. The fenced
    /// update inside the transaction still decides; if it does not match,
    /// the files are reverted. `None`: publish inside, under the per-version
    /// lock (PostgreSQL).
    pub lease_held: Option<&'static str>,
    /// 1 id, 2 owner, 3 token, 4 from, 5 now, 6 video path, 7 sha256,
    /// 8 bytes, 9 thumbnail path. Returns scene_id, scene_version_id.
    pub complete_job: &'static str,
    /// 1 version id, 2 video path, 3 thumbnail path, 4 sha256, 5 bytes, 6 now.
    pub complete_version: &'static str,
    /// 1 scene id, 2 version id, 3 now: the newer-version-wins pointer rule.
    pub complete_scene: &'static str,
    /// The batched completion (`batch.rs`): each takes one parameter, a
    /// JSON array of objects with the keys named here.
    /// Objects `id`, `owner`, `token`, `from_status`. Returns the `id` of
    /// each row whose lease is held and status matches. On PostgreSQL it
    /// first takes `lock_completion`'s lock for each job with a scene
    /// version, in key order, then locks the rows (`FOR UPDATE`) for the
    /// rest of the transaction.
    pub held_many: &'static str,
    /// Objects `id`, `owner`, `token`, `from_status`, `now`, `video`, `sha`,
    /// `bytes`, `thumb`, `detail` (the audit event's): the fenced update of
    /// each. Returns id, scene_id, scene_version_id of the rows it changed.
    /// On PostgreSQL the same statement writes each changed row's audit
    /// event and locks its scene rows in id order.
    pub complete_jobs: &'static str,
    /// Objects `version`, `scene` (or null), `video`, `thumb`, `sha`,
    /// `bytes`, `now`, at most one per version and per scene. On PostgreSQL
    /// the same statement moves the scene pointers.
    pub complete_versions: &'static str,
    /// The same objects: each scene's pointer, under the newer-version-wins
    /// rule of `complete_scene`; `None` where `complete_versions` does it.
    pub complete_scenes: Option<&'static str>,
    /// Objects `job`, `from_status`, `to_status`, `worker`, `detail`, `now`;
    /// `None` where `complete_jobs` writes the events.
    pub insert_events: Option<&'static str>,
    /// 1 id, 2 owner, 3 token, 4 from, 5 to, 6 now, 7 last_error,
    /// 8 provider_job_id, 9 idempotency_key, 10 completed_at, 11 keep lease,
    /// 12 attempts. Returns scene_version_id.
    pub settle: &'static str,
    /// 1 id, 2 owner, 3 token, 4 from, 5 to, 6 attempts, 7 polls,
    /// 8 next_attempt_at, 9 last_error, 10 status changed, 11 now.
    pub reschedule: &'static str,
    /// 1 id, 2 owner, 3 token. The fenced row's `status` as stored (the
    /// row locked for the rest of the transaction).
    pub set_aside_status: &'static str,
    /// 1 id, 2 owner, 3 token, 4 now, 5 last_error: `needs_operator`, lease
    /// released; fenced, and never a final row.
    pub set_aside: &'static str,
    /// 1 job id, 2 from, 3 to, 4 worker id, 5 detail, 6 now.
    pub insert_event: &'static str,
    /// 1 version id, 2 error, 3 now.
    pub fail_version: &'static str,
    /// 1 id. Returns job columns.
    pub get_job: &'static str,
    /// 1 now, 2 updated_before, 3 limit. Returns job columns.
    pub list_stranded: &'static str,
    /// 1 limit. Returns job columns.
    pub list_needs_operator: &'static str,
    /// The claim's parameters 1 to 5. Returns count, oldest updated_at.
    pub count_eligible: &'static str,
    /// 1 now, 2 updated_before. Returns count, oldest updated_at.
    pub count_stranded: &'static str,
    /// 1 now. Returns count.
    pub count_running: &'static str,
    /// Returns count, oldest updated_at.
    pub count_needs_operator: &'static str,
    /// 1 id, 2 now. Returns scene_version_id.
    pub resolve_resubmit: &'static str,
    /// 1 id, 2 now, 3 last_error. Returns scene_version_id.
    pub resolve_fail: &'static str,
    /// 1 id. Returns status.
    pub job_status: &'static str,
    /// 1 id. Returns status, provider, provider_job_id, scene_version_id,
    /// the row locked for the rest of the transaction where the backend
    /// locks rows (PostgreSQL).
    pub cancel_read: &'static str,
    /// 1 id, 2 now, 3 last_error, 4 from: `canceled`, lease released,
    /// fencing token bumped; only a row still in `from`.
    pub cancel_job: &'static str,
    /// 1 provider, 2 provider job id, 3 now.
    pub make_due: &'static str,

    /// The claim's parameters 1 to 8, then 9 provider, 10 prefer jobs still
    /// to be submitted: one paused provider's jobs, for a probe.
    pub claim_probe: &'static str,
    /// The claim's parameters 1 to 8, then 9 the most due rows read: the
    /// claim for when at most that many rows are due. Claims nothing when
    /// more are due, since it would not have seen the oldest-updated.
    pub claim_due: &'static str,
    /// 1 now, 2 cap. Unfinished rows due now, counted up to the cap.
    pub count_due_upto: &'static str,
    /// 1 provider, 2 cause, 3 reason, 4 operation, 5 now, 6 worker id,
    /// 7 probe_at, 8 cooldown ms. Does nothing when the provider is paused.
    pub insert_pause: &'static str,
    /// 1 provider, 2 cause, 3 reason, 4 operation, 5 now.
    pub update_pause: &'static str,
    /// 1 provider, 2 now, 3 next probe_at, 4 cooldown ms: only while the
    /// probe is due, so one replica takes it.
    pub take_probe: &'static str,
    /// 1 provider.
    pub delete_pause: &'static str,
    /// Returns provider, cause, reason, operation, paused_at, paused_by,
    /// probe_at, cooldown_ms, probes, updated_at.
    pub list_pauses: &'static str,
    /// 1 since: the worker ids of events written since then (the latest
    /// 10,000) and of unfinished jobs' live leases. One column.
    pub recent_workers: &'static str,
    /// 1 provider, 2 delivery id, 3 now; nothing when the pair is there.
    pub insert_webhook: &'static str,
    /// 1 before: deliveries recorded earlier are dropped.
    pub prune_webhooks: &'static str,

    /// The operator panel's statements are assembled from fragments
    /// (`panel.rs`); these are the backend's own.
    pub backend: Backend,
    /// The columns a [`Job`] is decoded from.
    pub job_cols: &'static str,
    /// The same for a list: `request` (the app's JSON, as large as a
    /// prompt and its images) read as `''`, never fetched for a page.
    pub list_cols: &'static str,
    /// The claim's eligibility rules, parameters 1 to 5 as in `claim`.
    pub eligible_where: &'static str,
    /// Owed work, 1 now, 2 updated_before.
    pub stranded_where: &'static str,
}

/// The operations on one pool, with its backend's statements. Their
/// methods (in `write`, `read` and `resolve`) are bounded by what they need
/// of the driver: executing on a connection, and binding or decoding `&str`,
/// `i64`, `bool`, their `Option`s and `String`. Both drivers provide it.
pub struct Sql<'p, DB: Database> {
    pub pool: &'p Pool<DB>,
    /// The pool the due-first claim runs on ([`Backed::due_claim_pool`]).
    pub due_pool: &'p Pool<DB>,
    pub d: &'static Dialect,
    /// Which claim statement to try first (`due_hint.rs`).
    pub due: &'p DueHint,
}

impl<DB: Database> Sql<'_, DB> {
    /// A write transaction, begun the backend's way.
    async fn begin_write(&self, op: OpErr) -> Result<Transaction<'static, DB>, StoreError> {
        match self.d.begin_write {
            Some(stmt) => self.pool.begin_with(stmt).await,
            None => self.pool.begin().await,
        }
        .map_err(op)
    }

    /// Roll back a transaction being abandoned for `err` and return `err`.
    /// A failing rollback is only logged: dropping the transaction rolls it
    /// back too, and the caller's error is the one that matters.
    async fn abandon(&self, tx: Transaction<'static, DB>, err: StoreError) -> StoreError {
        if let Err(e) = tx.rollback().await {
            tracing::warn!(error = %e, "roll back an abandoned write transaction");
        }
        err
    }

    /// `attempts`/`polls` as bound, saturated to what the column holds.
    fn counter(&self, n: u32) -> i64 {
        i64::from(n).min(self.d.counter_max)
    }
}

/// How many rows a statement changed: each driver has the method, but no
/// `sqlx` trait names it.
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        sqlx::sqlite::SqliteQueryResult::rows_affected(self)
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        sqlx::postgres::PgQueryResult::rows_affected(self)
    }
}

/// A store type backed by one `sqlx` pool: what [`Store`] needs beyond the
/// shared operations. Public only so that the blanket [`Store`] impl may
/// name it; the module is private, so nothing outside can implement it.
pub trait Backed: Send + Sync + 'static {
    type DB: Database;
    const BACKEND: Backend;
    const DIALECT: &'static Dialect;

    fn sql_pool(&self) -> &Pool<Self::DB>;
    /// Where the due-first claim (`CLAIM_DUE`) runs: the main pool unless
    /// the backend needs that one statement planned differently (see
    /// `PgStore`).
    fn due_claim_pool(&self) -> &Pool<Self::DB> {
        self.sql_pool()
    }
    /// The store's claim hint, shared by its clones.
    fn due_hint(&self) -> &DueHint;
    fn run_migrations(&self) -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;
    fn read_schema_status(&self) -> impl Future<Output = Result<SchemaStatus, StoreError>> + Send;
    /// See [`Store::begin_snapshot`]: the one operation whose mechanism
    /// differs entirely between the backends.
    fn take_snapshot(
        &self,
        sqlite_dest: &Path,
    ) -> impl Future<Output = Result<Snapshot, StoreError>> + Send;
    /// See [`Store::rewrite_media_paths`].
    fn rewrite_paths(
        &self,
        from: &str,
        to: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    fn sql(&self) -> Sql<'_, Self::DB> {
        Sql {
            pool: self.sql_pool(),
            due_pool: self.due_claim_pool(),
            d: Self::DIALECT,
            due: self.due_hint(),
        }
    }
}

#[async_trait::async_trait]
impl<T> Store for T
where
    T: Backed,
    // What the shared operations need of the driver (see `Sql`).
    for<'c> &'c mut <T::DB as Database>::Connection: Executor<'c, Database = T::DB>,
    <T::DB as Database>::Arguments: IntoArguments<T::DB>,
    for<'a> &'a str: Encode<'a, T::DB> + Type<T::DB> + ColumnIndex<<T::DB as Database>::Row>,
    for<'a> Option<&'a str>: Encode<'a, T::DB>,
    for<'a> i64: Encode<'a, T::DB> + Decode<'a, T::DB> + Type<T::DB>,
    for<'a> Option<i64>: Encode<'a, T::DB>,
    for<'a> bool: Encode<'a, T::DB> + Type<T::DB>,
    for<'a> String: Decode<'a, T::DB> + Type<T::DB>,
    usize: ColumnIndex<<T::DB as Database>::Row>,
    <T::DB as Database>::QueryResult: RowsAffected,
{
    fn backend(&self) -> Backend {
        T::BACKEND
    }

    async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        self.run_migrations().await
    }

    async fn schema_status(&self) -> Result<SchemaStatus, StoreError> {
        self.read_schema_status().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.sql().ping().await
    }

    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<Claimed>, StoreError> {
        self.sql().claim(req).await
    }

    async fn set_aside(&self, lease: &Lease, s: &SetAside) -> Result<(), StoreError> {
        self.sql().set_aside(lease, s).await
    }

    async fn heartbeat(&self, lease: &Lease, now: Millis, ttl: Duration) -> Result<(), StoreError> {
        self.sql().heartbeat(lease, now, ttl).await
    }

    async fn complete(
        &self,
        lease: &Lease,
        c: &Completion,
        publish: &mut (dyn Publish + Send),
    ) -> Result<(), StoreError> {
        self.sql().complete(lease, c, publish).await
    }

    async fn complete_many(
        &self,
        items: &mut [crate::Completing<'_>],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.sql().complete_many(items).await
    }

    async fn settle(&self, lease: &Lease, s: &Settle) -> Result<(), StoreError> {
        self.sql().settle(lease, s).await
    }

    async fn reschedule(&self, lease: &Lease, r: &Reschedule) -> Result<(), StoreError> {
        self.sql().reschedule(lease, r).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.sql().release(lease).await
    }

    async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        self.sql().get_job(id).await
    }

    async fn list_jobs(
        &self,
        filter: JobFilter,
        now: Millis,
        rules: &EligibilityRules,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        self.sql().list_jobs(filter, now, rules, limit).await
    }

    async fn status_report(
        &self,
        now: Millis,
        rules: &EligibilityRules,
    ) -> Result<StatusReport, StoreError> {
        self.sql().status_report(now, rules).await
    }

    async fn resolve(
        &self,
        job_id: &str,
        resolution: Resolution,
        operator: &str,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<JobStatus, StoreError> {
        self.sql()
            .resolve(job_id, resolution, operator, reason, now)
            .await
    }

    async fn panel_jobs(&self, q: &crate::JobQuery<'_>) -> Result<crate::JobPage, StoreError> {
        self.sql().panel_jobs(q).await
    }

    async fn job_events(
        &self,
        job_id: &str,
        limit: u32,
        limits: crate::PanelLimits,
    ) -> Result<Vec<crate::JobEvent>, StoreError> {
        self.sql().job_events(job_id, limit, limits).await
    }

    async fn job_media(
        &self,
        job_id: &str,
        limits: crate::PanelLimits,
    ) -> Result<Option<crate::JobMedia>, StoreError> {
        self.sql().job_media(job_id, limits).await
    }

    async fn error_groups(
        &self,
        limit: u32,
        limits: crate::PanelLimits,
    ) -> Result<Vec<crate::ErrorGroup>, StoreError> {
        self.sql().error_groups(limit, limits).await
    }

    async fn recent_transitions(
        &self,
        limit: u32,
        limits: crate::PanelLimits,
    ) -> Result<Vec<crate::Transition>, StoreError> {
        self.sql().recent_transitions(limit, limits).await
    }

    async fn retry_now(&self, r: &crate::RetryNow<'_>) -> Result<crate::RetryOutcome, StoreError> {
        self.sql().retry_now(r).await
    }

    async fn note_operator(
        &self,
        job_id: &str,
        operator: &str,
        detail: &serde_json::Value,
        now: Millis,
    ) -> Result<Option<JobStatus>, StoreError> {
        self.sql()
            .note_operator(job_id, operator, detail, now)
            .await
    }

    async fn cancel(
        &self,
        job_id: &str,
        operator: &str,
        reason: Option<&str>,
        provider_cancel: &crate::ProviderCancel,
        now: Millis,
    ) -> Result<crate::Canceled, StoreError> {
        self.sql()
            .cancel(job_id, operator, reason, provider_cancel, now)
            .await
    }

    async fn make_due(
        &self,
        provider: &str,
        provider_job_id: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.sql().make_due(provider, provider_job_id, now).await
    }

    async fn gauges(&self, now: Millis, rules: &EligibilityRules) -> Result<Gauges, StoreError> {
        self.sql().gauges(now, rules).await
    }

    async fn pause_provider(&self, p: &PauseProvider<'_>) -> Result<bool, StoreError> {
        self.sql().pause_provider(p).await
    }

    async fn take_probe(
        &self,
        provider: &str,
        now: Millis,
        cooldown: Duration,
    ) -> Result<bool, StoreError> {
        self.sql().take_probe(provider, now, cooldown).await
    }

    async fn resume_provider(&self, provider: &str) -> Result<bool, StoreError> {
        self.sql().resume_provider(provider).await
    }

    async fn provider_pauses(&self) -> Result<Vec<ProviderPause>, StoreError> {
        self.sql().provider_pauses().await
    }

    async fn recent_worker_ids(&self, since: Millis) -> Result<Vec<String>, StoreError> {
        self.sql().recent_worker_ids(since).await
    }

    async fn note_webhook(
        &self,
        provider: &str,
        delivery_id: &str,
        now: Millis,
        forget_before: Millis,
    ) -> Result<bool, StoreError> {
        self.sql()
            .note_webhook(provider, delivery_id, now, forget_before)
            .await
    }

    async fn begin_snapshot(&self, sqlite_dest: &Path) -> Result<Snapshot, StoreError> {
        self.take_snapshot(sqlite_dest).await
    }

    async fn rewrite_media_paths(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        self.rewrite_paths(from, to).await
    }
}
