//! `clawcut-store`: SQL only. Everything the daemon reads from or writes to
//! the ClawCut database goes through the [`Store`] trait, implemented by
//! [`SqliteStore`] (the embedded default) and [`PgStore`] (several replicas).
//!
//! Start reading at [`Store`]; then `sql/` (each operation written once,
//! generic over the database): `claim` (one statement that picks and leases
//! eligible jobs), then `complete` (the one transaction that finishes a job,
//! publishes its files, and writes its scene version, its scene and its
//! audit event), and `batch.rs`'s `complete_many` (the same for a batch of
//! jobs in one transaction: the group commit). `sqlite/` and `pg/` hold only their connection setup and
//! their statements (`Dialect`); `row.rs` decodes rows.
//!
//! Invariants:
//! - every write after a claim carries the lease's fencing token and changes
//!   nothing (returning [`StoreError::LeaseLost`]) when the token is stale;
//! - a state change commits in one transaction with its `ai_job_events`
//!   row (a batch puts several jobs' changes in one transaction, never one
//!   change in two);
//! - a claim never fails because of one row's contents: each row is decoded
//!   on its own, and one the daemon cannot read comes back as
//!   [`Claimed::Unreadable`] (leased, with its fencing token) for
//!   [`Store::set_aside`] to park as `needs_operator`. A row whose very id
//!   cannot be read is logged and skipped: it cannot be fenced, and stays
//!   leased until its lease expires (see `row.rs`);
//! - a completion's files reach their final paths only inside its fenced
//!   transaction: [`Store::complete`] calls [`Publish::publish`] after the
//!   job's fenced update matched and before anything else is written, and
//!   completions of one scene version are serialized (SQLite's write lock;
//!   a PostgreSQL advisory lock on the version), so a worker that lost its
//!   lease never overwrites a committed file, and the file at a version's
//!   path is the one whose sha256 the version records;
//! - queries are checked at runtime (`sqlx::query`), never at compile time,
//!   so building needs no database.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clawcut_core::{EligibilityRules, Job, JobStatus, Lease, Millis, PauseCause};

/// The scene pointer rule (newer version wins) as a WHERE term on `scenes`
/// for the version `$v` (a placeholder or a column): the version exists,
/// and the scene's current version is not newer (created later, the id
/// breaking ties). One text for both dialects and both completions.
macro_rules! newer_version_wins {
    ($v:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM scene_versions WHERE id = ",
            $v,
            ")
           AND NOT EXISTS (
               SELECT 1 FROM scene_versions cur, scene_versions me
               WHERE cur.id = scenes.current_version_id AND me.id = ",
            $v,
            "
                 AND (cur.created_at > me.created_at
                      OR (cur.created_at = me.created_at AND cur.id > me.id)))"
        )
    };
}

mod backup;
mod error;
mod migrate;
mod panel;
mod pg;
mod pool;
mod row;
mod sql;
mod sqlite;

pub use backup::{
    ExportedSnapshot, MediaKind, MediaRef, Snapshot, SnapshotContents, pg_check_restore_target,
    pg_create_database, read_sqlite_snapshot, sqlite_file,
};
pub use error::StoreError;
pub use migrate::SchemaStatus;
pub use panel::{
    Cursor, ErrorGroup, JobEvent, JobMedia, JobPage, JobQuery, JobView, PanelLimits, RetryNow,
    RetryOutcome, SeenJob, Transition,
};
pub use pg::PgStore;
pub use sqlite::SqliteStore;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What a pass asks of [`Store::claim`].
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// This worker's id, written as the lease owner.
    pub worker_id: &'a str,
    pub now: Millis,
    pub lease_ttl: Duration,
    pub limit: u32,
    pub rules: &'a EligibilityRules,
    /// Claim only this job (a targeted reconcile).
    pub only_job: Option<&'a str>,
    /// Ignore `min_age` and the due time (an operator asked for it now).
    /// Kind, final states and live leases still exclude.
    pub force: bool,
    /// Claim only this paused provider's jobs, as its probe. Without it, a
    /// paused provider's jobs are not claimed (unless `only_job` names one).
    pub probe: Option<Probe<'a>>,
}

/// The probe of one paused provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe<'a> {
    pub provider: &'a str,
    /// Prefer a job still to be submitted: the fault met a create call,
    /// which a poll succeeding would not prove fixed.
    pub prefer_unsubmitted: bool,
}

/// The provider call that met a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderCall {
    Poll,
    /// A create, or a lookup of an interrupted one.
    Submit,
}

impl ProviderCall {
    pub fn label(self) -> &'static str {
        match self {
            ProviderCall::Poll => "poll",
            ProviderCall::Submit => "submit",
        }
    }

    pub fn from_label(s: &str) -> Option<ProviderCall> {
        [ProviderCall::Poll, ProviderCall::Submit]
            .into_iter()
            .find(|c| c.label() == s)
    }
}

/// A provider to pause (or whose pause gets a fresher reason).
#[derive(Debug, Clone)]
pub struct PauseProvider<'a> {
    pub provider: &'a str,
    pub cause: PauseCause,
    /// Never a credential: the error as the adapter wrote it.
    pub reason: &'a str,
    pub call: ProviderCall,
    pub now: Millis,
    pub worker_id: &'a str,
    /// The first probe comes this long after `now`.
    pub cooldown: Duration,
}

/// A paused provider, as `provider_pauses` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderPause {
    pub provider: String,
    pub cause: PauseCause,
    pub reason: String,
    pub call: ProviderCall,
    pub paused_at: Millis,
    /// The worker id that paused it.
    pub paused_by: String,
    /// When a replica may next take a probe.
    pub probe_at: Millis,
    /// The wait that was added when the last probe was taken (or the
    /// pause began).
    pub cooldown: Duration,
    /// Probes taken so far.
    pub probes: u64,
    pub updated_at: Millis,
}

/// A verified output and the final path it is published to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutput {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// One row a claim leased.
#[derive(Debug, Clone)]
pub enum Claimed {
    Job(Job),
    /// Leased, but a column could not be decoded: the daemon sets it aside.
    Unreadable(UnreadableRow),
}

/// A claimed row with a column the daemon cannot decode (a BLOB in
/// `request`, TEXT in `created_at`, a NULL where a value is required, an
/// unknown status, a negative counter). Its lease is valid: pass it to
/// [`Store::set_aside`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableRow {
    /// Job id, owner, the new fencing token.
    pub lease: Lease,
    /// The raw status text when readable.
    pub status: Option<String>,
    /// The first column that failed, e.g. `"request"`.
    pub column: String,
    /// E.g. `"expected TEXT, found BLOB"` (lowercase; never the value).
    pub problem: String,
}

/// Why a claimed row cannot be worked, for [`Store::set_aside`].
#[derive(Debug, Clone)]
pub struct SetAside {
    pub now: Millis,
    pub column: String,
    pub problem: String,
}

/// Puts verified files at their final paths. [`Store::complete`] calls it
/// inside its write transaction, after the fenced update of the job matched
/// and before the scene version is written, so a file reaches its final
/// path only while the lease is held, and two completions of one scene
/// version never interleave.
///
/// It runs on the calling task while the transaction (and, on SQLite, the
/// database's write lock) is held: keep it to renames and fsyncs.
/// [`Store::complete_many`] runs the `publish_deferring` of the jobs of a
/// batch on up to 16 threads, inside the caller's tokio runtime context if
/// there is one, waits for them all, then fsyncs each directory they named
/// once.
pub trait Publish: Send {
    /// Rename the staged files into place (fsynced). An error aborts the
    /// completion (rolled back, [`StoreError::PublishOutputs`]); `revert`
    /// is not called then, so `publish` leaves nothing half-done behind
    /// when it fails.
    fn publish(&mut self) -> std::io::Result<()>;
    /// [`publish`](Self::publish), leaving the fsync of each directory it
    /// changed to the caller: they are added to `dirs`, and the files are
    /// durable only once each is fsynced. [`Store::complete_many`] calls
    /// this, then fsyncs each distinct directory of the batch once before
    /// its commit, and treats an item whose directory's fsync failed as
    /// one whose `publish` failed (after `revert`). By default `publish`,
    /// which syncs its own.
    fn publish_deferring(&mut self, dirs: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
        let _ = dirs;
        self.publish()
    }
    /// Whether `publish` waits on the network (an object store completing
    /// an upload) rather than on the local filesystem. A batch runs such
    /// publishes on threads so their round trips overlap, and a local one
    /// on the calling thread, however long a loaded machine makes it take.
    fn remote(&self) -> bool {
        false
    }
    /// The transaction did not commit after `publish` succeeded: put back
    /// what it replaced. Called at most once, while the completion's locks
    /// are still held when the failure came before the commit (a failed
    /// commit has already released them), and also when the completion's
    /// future is dropped after `publish`. Not called when the commit's
    /// answer was lost (the connection dropped): it may have committed all
    /// the same, so the store calls `committed` and returns the error.
    fn revert(&mut self);
    /// The transaction committed, or its commit's answer was lost (the
    /// completion then returns [`StoreError::Complete`]): keep the files.
    fn committed(&mut self);
}

/// The completion of a job: written in one transaction with the scene
/// version, the scene and the audit event.
#[derive(Debug, Clone)]
pub struct Completion {
    pub from: JobStatus,
    pub now: Millis,
    pub video: StoredOutput,
    pub thumbnail: Option<StoredOutput>,
    /// Why the job completes without a thumbnail the provider offered
    /// (refused, missing, failing): recorded in the audit event.
    pub thumbnail_problem: Option<String>,
}

/// One job of [`Store::complete_many`]: its lease, its completion and its
/// files.
pub struct Completing<'a> {
    pub lease: &'a Lease,
    pub completion: &'a Completion,
    pub publish: &'a mut (dyn Publish + Send),
}

/// A status change that ends or parks a job (`failed`, `canceled`,
/// `needs_operator`) or moves it through submission (`submitting`,
/// `pending`, back to `queued`).
#[derive(Debug, Clone)]
pub struct Settle {
    pub from: JobStatus,
    pub to: JobStatus,
    pub now: Millis,
    /// Becomes `last_error` (and `scene_versions.error` when `to` is failed
    /// or canceled); `None` clears it.
    pub reason: Option<String>,
    /// Set `provider_job_id` (submission committed).
    pub provider_job_id: Option<String>,
    /// Set `idempotency_key` (submission intent).
    pub idempotency_key: Option<String>,
    /// Extra JSON for the audit event's `detail`.
    pub detail: serde_json::Value,
    /// Keep the lease (submission steps go on working the job); otherwise the
    /// lease is released.
    pub keep_lease: bool,
    /// Record this attempt count (a job failing on its last transient error).
    pub attempts: Option<u32>,
}

/// The next try of a job that stays in flight: a snooze (still running,
/// `polls` grows) or a retry (transient error, `attempts` grows). Writes an
/// event only when the status changes (`pending` to `processing`).
#[derive(Debug, Clone)]
pub struct Reschedule {
    pub from: JobStatus,
    pub to: JobStatus,
    pub now: Millis,
    pub attempts: u32,
    pub polls: u32,
    pub next_attempt_at: Millis,
    pub last_error: Option<String>,
}

/// An operator's decision on a `needs_operator` job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Back to `queued` without a provider id: submission will send it again.
    Resubmit,
    Fail,
}

/// What came of asking the provider to cancel, before [`Store::cancel`]:
/// recorded in the audit event, never a reason to refuse the local cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderCancel {
    /// The provider accepted the cancel request.
    Requested,
    /// The provider's adapter has no cancel call.
    NotSupported,
    /// The call failed (the message, never a credential).
    Failed(String),
    /// Nothing to ask: no provider job id yet, or no such provider configured.
    NotAsked,
}

impl ProviderCancel {
    /// A stable label for the audit event and the command's output.
    pub fn label(&self) -> &'static str {
        match self {
            ProviderCancel::Requested => "requested",
            ProviderCancel::NotSupported => "not_supported",
            ProviderCancel::Failed(_) => "failed",
            ProviderCancel::NotAsked => "not_asked",
        }
    }
}

/// An operator's cancel, as [`Store::cancel`] wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canceled {
    /// The status the job had.
    pub from: JobStatus,
    pub provider: String,
    pub provider_job_id: Option<String>,
    /// `ai_jobs.last_error` as written.
    pub reason: String,
}

/// Which jobs an operator lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobFilter {
    /// Not final, with a provider id, no live lease, not touched by the app
    /// for `min_age`: work the daemon owes.
    Stranded,
    NeedsOperator,
}

/// Counts for `status`, `/metrics` and `/readyz`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusReport {
    /// Claimable right now.
    pub eligible: u64,
    /// `updated_at` of the oldest claimable job.
    pub oldest_eligible_updated_at: Option<Millis>,
    /// Owed work: see [`JobFilter::Stranded`] (includes those not yet due).
    pub stranded: u64,
    pub oldest_stranded_updated_at: Option<Millis>,
    /// Leased right now.
    pub running: u64,
    pub needs_operator: u64,
    pub oldest_needs_operator_updated_at: Option<Millis>,
    /// `queued` video jobs without a provider id (waiting for submission).
    pub unsubmitted: u64,
    /// Video jobs by status (statuses with none left out). A count stops
    /// at `by_status_cap`: read it as "at least".
    pub by_status: Vec<(JobStatus, u64)>,
    pub by_status_cap: u64,
}

/// What the metrics gauges need, read from the partial indexes alone: the
/// cost follows the due and the parked rows, never the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    pub eligible: u64,
    pub oldest_eligible_updated_at: Option<Millis>,
    pub needs_operator: u64,
}

/// The daemon's whole view of the database.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    fn backend(&self) -> Backend;

    /// Create or upgrade the schema; returns the versions applied now.
    async fn migrate(&self) -> Result<Vec<i64>, StoreError>;

    /// Where the schema stands against the migrations this binary carries.
    async fn schema_status(&self) -> Result<SchemaStatus, StoreError>;

    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Lease up to `limit` eligible jobs, oldest `updated_at` first, in one
    /// statement: sets the lease owner and expiry and bumps the fencing
    /// token. Returns the rows as claimed (with the new token): the healthy
    /// jobs first, oldest `updated_at` first, then the rows with a column
    /// that could not be decoded, as [`Claimed::Unreadable`]. One bad row
    /// never fails the claim.
    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<Claimed>, StoreError>;

    /// Park a claimed row the daemon cannot work: `needs_operator`,
    /// `last_error` = ``row rejected: column `<column>`: <problem>``,
    /// `updated_at` = now, lease released, and in the same transaction an
    /// `ai_job_events` row (from_status = the row's raw status text,
    /// to_status `needs_operator`, detail
    /// `{"event":"row_rejected","column":..,"problem":..}`). Fenced by lease
    /// owner + fencing token only (not by the status, which may be the broken
    /// column); never touches a final row (completed/failed/canceled);
    /// `LeaseLost` when the fence does not match (or the row is final).
    /// Works whatever `updated_at`, `created_at` or `request` hold.
    async fn set_aside(&self, lease: &Lease, s: &SetAside) -> Result<(), StoreError>;

    /// Extend a lease (a long download). `LeaseLost` when stale.
    async fn heartbeat(&self, lease: &Lease, now: Millis, ttl: Duration) -> Result<(), StoreError>;

    /// Finish a job as `completed`: one transaction for the job, its files
    /// ([`Publish`]), its scene version, its scene (unless it points at a
    /// newer version) and the event. In order: begin the write transaction;
    /// on PostgreSQL take a transaction-scoped advisory lock keyed by the
    /// job's scene version (or the job when it has none); the fenced update
    /// of the job (no match: rolled back, `LeaseLost`, `publish` never
    /// called); [`Publish::publish`] (an error: rolled back,
    /// [`StoreError::PublishOutputs`]); the version, the scene pointer and
    /// the event; commit. Any failure after `publish` calls
    /// [`Publish::revert`]; success calls [`Publish::committed`].
    async fn complete(
        &self,
        lease: &Lease,
        c: &Completion,
        publish: &mut (dyn Publish + Send),
    ) -> Result<(), StoreError>;

    /// Finish several jobs as `completed` in one transaction (a group
    /// commit): each job's fenced update, files, scene version, scene and
    /// event exactly as [`Store::complete`] writes them, with a handful of
    /// set-based statements for the whole batch instead of five per job.
    /// The order of the steps is `complete`'s; on PostgreSQL the batch
    /// takes its advisory locks in one statement, in key order, so two
    /// batches never deadlock, and locks the fenced rows before it
    /// publishes.
    ///
    /// `Ok` holds one result per item, in order: `Ok(())` (committed,
    /// [`Publish::committed`] called), `LeaseLost` (nothing of it written,
    /// its files never published or reverted) or `PublishOutputs` (its
    /// `publish` failed: nothing of it written). `Err` when the transaction
    /// as a whole failed: every file published for it was reverted, except
    /// when the commit's answer was lost (then kept, as `complete` does).
    async fn complete_many(
        &self,
        items: &mut [Completing<'_>],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError>;

    /// Any other status change, with its event, in one transaction.
    async fn settle(&self, lease: &Lease, s: &Settle) -> Result<(), StoreError>;

    /// Schedule the next try and release the lease.
    async fn reschedule(&self, lease: &Lease, r: &Reschedule) -> Result<(), StoreError>;

    /// Give the job back untouched (shutdown before it finished).
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;

    async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError>;

    async fn list_jobs(
        &self,
        filter: JobFilter,
        now: Millis,
        rules: &EligibilityRules,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;

    async fn status_report(
        &self,
        now: Millis,
        rules: &EligibilityRules,
    ) -> Result<StatusReport, StoreError>;

    /// Apply an operator's decision to a `needs_operator` job, with an event
    /// naming `operator` (worker_id) and carrying `reason` in its detail.
    /// Returns the new status. Fails with `NotResolvable` when the job is
    /// missing or not `needs_operator`.
    async fn resolve(
        &self,
        job_id: &str,
        resolution: Resolution,
        operator: &str,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<JobStatus, StoreError>;

    /// A page of jobs for the operator panel: keyset-paginated in the
    /// view's order, filtered, and (when asked) counted up to the cap,
    /// within the query's timeout.
    async fn panel_jobs(&self, q: &JobQuery<'_>) -> Result<JobPage, StoreError>;

    /// A job's audit events, oldest first, at most `limit`.
    async fn job_events(
        &self,
        job_id: &str,
        limit: u32,
        limits: PanelLimits,
    ) -> Result<Vec<JobEvent>, StoreError>;

    /// A job's output columns and its scene version's status; `None` when
    /// there is no such job.
    async fn job_media(
        &self,
        job_id: &str,
        limits: PanelLimits,
    ) -> Result<Option<JobMedia>, StoreError>;

    /// Unfinished jobs with a `last_error`, grouped by provider and the
    /// error's head, the largest groups first.
    async fn error_groups(
        &self,
        limit: u32,
        limits: PanelLimits,
    ) -> Result<Vec<ErrorGroup>, StoreError>;

    /// The newest `limit` audit events, each with when its job entered the
    /// state it left: the time spent in each state.
    async fn recent_transitions(
        &self,
        limit: u32,
        limits: PanelLimits,
    ) -> Result<Vec<Transition>, StoreError>;

    /// An operator's "retry now" of jobs seen in one snapshot, in one
    /// transaction: each job still exactly as seen and not leased gets
    /// `next_attempt_at` = now and an `ai_job_events` row (from and to its
    /// status, worker_id = `operator`, detail `{"event":"operator_retry",
    /// "operator":..,"reason":..,"bulk":..}`); the others are skipped.
    async fn retry_now(&self, r: &RetryNow<'_>) -> Result<RetryOutcome, StoreError>;

    /// The audit event of an operator's action that changes no column (a
    /// reconcile asked for): from and to the job's status, worker_id =
    /// `operator`. `None` when there is no such job.
    async fn note_operator(
        &self,
        job_id: &str,
        operator: &str,
        detail: &serde_json::Value,
        now: Millis,
    ) -> Result<Option<JobStatus>, StoreError>;

    /// An operator stops a job that is not final, in one transaction: the
    /// job becomes `canceled` (`last_error` = `canceled by <operator>[:
    /// <reason>]`, `completed_at` and `updated_at` = now, lease released)
    /// and its fencing token is bumped, so a worker still holding the lease
    /// (mid-download) gets `LeaseLost` from its next write and never
    /// completes it; its scene version becomes `failed` with that error
    /// unless it is `ready`; one `ai_job_events` row (to `canceled`,
    /// worker_id = `operator`, detail `{"event":"operator_cancel","reason":
    /// ..,"provider_cancel":..,"provider_cancel_requested":..}`).
    /// `NotCancelable` when the job is missing or final.
    async fn cancel(
        &self,
        job_id: &str,
        operator: &str,
        reason: Option<&str>,
        provider_cancel: &ProviderCancel,
        now: Millis,
    ) -> Result<Canceled, StoreError>;

    /// Make the unfinished job `provider` knows as `provider_job_id` due now
    /// (a webhook hint). An id stored as `<prefix>|<id>` (fal's
    /// `model|request_id`) also matches its bare `<id>`. Returns whether a row changed (false when already
    /// due, final or unknown).
    async fn make_due(
        &self,
        provider: &str,
        provider_job_id: &str,
        now: Millis,
    ) -> Result<bool, StoreError>;

    /// Record that `provider`'s webhook delivery `delivery_id` (Replicate's
    /// `webhook-id`) arrived at `now`; false when it had already (a replay).
    /// Deliveries recorded before `forget_before` are dropped first.
    async fn note_webhook(
        &self,
        provider: &str,
        delivery_id: &str,
        now: Millis,
        forget_before: Millis,
    ) -> Result<bool, StoreError>;

    /// The numbers of `/metrics`' job gauges: cheap enough to refresh
    /// often on any table.
    async fn gauges(&self, now: Millis, rules: &EligibilityRules) -> Result<Gauges, StoreError>;

    /// Pause a provider (SPEC, "Provider health"): its jobs are no longer
    /// claimed. Returns `true` when it was not paused before; otherwise the
    /// pause keeps its start and probe time and takes the newer cause and
    /// reason.
    async fn pause_provider(&self, p: &PauseProvider<'_>) -> Result<bool, StoreError>;

    /// Take the probe of a paused provider whose `probe_at` has passed: the
    /// next probe moves to `now + cooldown`. `true` for exactly one caller
    /// per due probe, across replicas; `false` when not due or not paused.
    async fn take_probe(
        &self,
        provider: &str,
        now: Millis,
        cooldown: Duration,
    ) -> Result<bool, StoreError>;

    /// Lift a pause; `true` when there was one.
    async fn resume_provider(&self, provider: &str) -> Result<bool, StoreError>;

    /// Every paused provider, by name.
    async fn provider_pauses(&self) -> Result<Vec<ProviderPause>, StoreError>;

    /// The worker ids (`<hostname>:<pid>:<suffix>`) seen since `since`: in
    /// the latest events and in unfinished jobs' live leases; sorted, each
    /// once. The daemon tells from them whether replicas on other hosts
    /// share this database (a local `media.dir` then splits the clips).
    async fn recent_worker_ids(&self, since: Millis) -> Result<Vec<String>, StoreError>;

    /// A consistent snapshot of the whole database for a backup, taken while
    /// other connections keep writing. SQLite writes it to `sqlite_dest`
    /// (which must not exist) with `VACUUM INTO`, fsyncs it and reads its
    /// contents back from that file ([`Snapshot::Written`]). PostgreSQL
    /// ignores `sqlite_dest`: it opens a `REPEATABLE READ` transaction,
    /// exports its snapshot and reads the contents in it
    /// ([`Snapshot::Exported`]), for `pg_dump --snapshot` to dump.
    async fn begin_snapshot(&self, sqlite_dest: &Path) -> Result<Snapshot, StoreError>;

    /// After a restore: every media path column (`scene_versions` and
    /// `ai_jobs`, `video_path` and `thumbnail_path`) that starts with
    /// `from` gets `to` instead, in one transaction. Returns the number of
    /// values changed. Pass directory prefixes ending in `/`, so that
    /// `/media` does not match `/media2`.
    async fn rewrite_media_paths(&self, from: &str, to: &str) -> Result<u64, StoreError>;
}

/// Open the store `url` names: `sqlite:` or `postgres:`/`postgresql:`.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl {
            scheme: url.split(':').next().unwrap_or_default().to_owned(),
        })
    }
}

/// The claim statement for when few rows are due, as the given backend
/// runs it (parameters 1 to 8 as [`claim_sql`]'s, 9 the most due rows
/// read), for the query-plan test. Not for other uses.
#[doc(hidden)]
pub fn claim_due_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => sqlite::CLAIM_DUE,
        Backend::Postgres => pg::CLAIM_DUE,
    }
}

/// The webhook lookup (`make_due`) as the given backend runs it, for tests
/// that check its query plan (that it probes indexes). Not for other uses.
#[doc(hidden)]
pub fn make_due_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => sqlite::MAKE_DUE_SQL,
        Backend::Postgres => pg::MAKE_DUE_SQL,
    }
}

/// The single completion's writes, as [`Store::complete`] sends them (see
/// `sql::Dialect` for their parameters), for the end-to-end bench's
/// baseline, which replays the same writes without the daemon. Not for
/// other uses.
#[doc(hidden)]
pub struct CompletionSql {
    pub begin_write: Option<&'static str>,
    /// 1 id, 2 owner, 3 token, 4 from, 5 now, 6 video path, 7 sha256,
    /// 8 bytes, 9 thumbnail path; returns scene_id, scene_version_id.
    pub complete_job: &'static str,
    /// 1 version id, 2 video path, 3 thumbnail path, 4 sha256, 5 bytes, 6 now.
    pub complete_version: &'static str,
    /// 1 scene id, 2 version id, 3 now.
    pub complete_scene: &'static str,
    /// 1 job id, 2 from, 3 to, 4 worker id, 5 detail, 6 now.
    pub insert_event: &'static str,
}

#[doc(hidden)]
pub fn completion_sql(backend: Backend) -> CompletionSql {
    let d = match backend {
        Backend::Sqlite => &sqlite::DIALECT,
        Backend::Postgres => &pg::DIALECT,
    };
    CompletionSql {
        begin_write: d.begin_write,
        complete_job: d.complete_job,
        complete_version: d.complete_version,
        complete_scene: d.complete_scene,
        insert_event: d.insert_event,
    }
}

/// The batched completion's statements that read or write rows by id, by
/// name, as the given backend runs them: for the test that checks each
/// finds its rows through the primary key. Not for other uses.
#[doc(hidden)]
pub fn complete_many_sql(backend: Backend) -> Vec<(&'static str, &'static str)> {
    let d = match backend {
        Backend::Sqlite => &sqlite::DIALECT,
        Backend::Postgres => &pg::DIALECT,
    };
    let mut out = vec![
        ("held_many", d.held_many),
        ("complete_jobs", d.complete_jobs),
        ("complete_versions", d.complete_versions),
    ];
    out.extend(d.complete_scenes.map(|s| ("complete_scenes", s)));
    out
}

/// The claim statement as the given backend runs it, for tests that check
/// its query plan (that it uses the partial index). Not for other uses.
#[doc(hidden)]
pub fn claim_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => sqlite::CLAIM_SQL,
        Backend::Postgres => pg::CLAIM_SQL,
    }
}
