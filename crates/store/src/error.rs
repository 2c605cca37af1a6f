//! The one error type of the store. Each variant names the operation that
//! failed, so a log line reads "claim jobs: `<database error>`".

use sqlx::Error as SqlxError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("connect to the database")]
    Connect(#[source] SqlxError),
    #[error("migrate the schema")]
    Migrate(#[source] SqlxError),
    /// The database carries migrations this binary does not know: it was
    /// migrated by a newer release. Never downgraded.
    #[error(
        "database schema is at version {current}, newer than the {latest} this binary knows; upgrade clawcut-worker"
    )]
    SchemaTooNew { current: i64, latest: i64 },
    #[error("read the schema version")]
    SchemaStatus(#[source] SqlxError),
    #[error("ping the database")]
    Ping(#[source] SqlxError),
    #[error("claim jobs")]
    ClaimJobs(#[source] SqlxError),
    #[error("extend the lease")]
    Heartbeat(#[source] SqlxError),
    #[error("complete the job")]
    Complete(#[source] SqlxError),
    /// A batched completion ([`crate::Store::complete_many`]) failed as a
    /// whole: what each of its jobs but one gets (the error itself goes to
    /// one of them), see [`StoreError::for_batch`].
    #[error("complete the job in a batch: {message}")]
    CompleteBatch { message: String, unavailable: bool },
    /// [`crate::Publish::publish`] failed inside a completion: rolled back,
    /// nothing written.
    #[error("publish the outputs")]
    PublishOutputs(#[source] std::io::Error),
    #[error("set the row aside")]
    SetAside(#[source] SqlxError),
    #[error("settle the job")]
    Settle(#[source] SqlxError),
    #[error("reschedule the job")]
    Reschedule(#[source] SqlxError),
    #[error("release the lease")]
    Release(#[source] SqlxError),
    #[error("read the job")]
    GetJob(#[source] SqlxError),
    #[error("list jobs")]
    ListJobs(#[source] SqlxError),
    #[error("build the status report")]
    StatusReport(#[source] SqlxError),
    #[error("resolve the job")]
    Resolve(#[source] SqlxError),
    #[error("cancel the job")]
    Cancel(#[source] SqlxError),
    #[error("make the job due")]
    MakeDue(#[source] SqlxError),
    #[error("pause the provider")]
    PauseProvider(#[source] SqlxError),
    #[error("take the probe of a paused provider")]
    TakeProbe(#[source] SqlxError),
    #[error("resume the provider")]
    ResumeProvider(#[source] SqlxError),
    #[error("read the provider pauses")]
    ReadProviderPauses(#[source] SqlxError),
    #[error("read the recent worker ids")]
    ReadWorkers(#[source] SqlxError),
    /// A `provider_pauses` row this binary cannot read (a newer schema, or
    /// a hand edit).
    #[error("provider pause of {provider:?} is unreadable: {detail}")]
    CorruptPause { provider: String, detail: String },
    #[error("read for the operator panel")]
    PanelQuery(#[source] SqlxError),
    /// A panel read ran past its timeout and was stopped.
    #[error("panel query stopped after {after:?} (its timeout)")]
    PanelTimeout { after: std::time::Duration },
    #[error("retry the jobs now")]
    RetryNow(#[source] SqlxError),
    #[error("record the operator's action")]
    NoteOperator(#[source] SqlxError),
    #[error("record a webhook delivery")]
    NoteWebhook(#[source] SqlxError),
    #[error("take a snapshot of the database")]
    Snapshot(#[source] SqlxError),
    /// The snapshot file `VACUUM INTO` wrote could not be named or synced.
    #[error("write the snapshot file")]
    SnapshotFile(#[source] std::io::Error),
    #[error("read the snapshot")]
    ReadSnapshot(#[source] SqlxError),
    #[error("rewrite the media paths")]
    RewriteMediaPaths(#[source] SqlxError),
    #[error("prepare the restore target database")]
    PrepareRestoreTarget(#[source] SqlxError),
    /// A restore never loads into a database that holds anything.
    #[error(
        "database {database:?} is not empty ({objects} tables, views or sequences); a restore needs a new or empty database"
    )]
    RestoreTargetNotEmpty { database: String, objects: i64 },
    /// The fencing token is stale: another worker claimed the job since.
    /// Nothing was written.
    #[error("lease on job {job_id} lost to another worker; nothing written")]
    LeaseLost { job_id: String },
    #[error("job {job_id} cannot be resolved: {}", describe_status(.status))]
    NotResolvable {
        job_id: String,
        /// The job's status, `None` when there is no such job.
        status: Option<String>,
    },
    /// `cancel` of a job that is final (or missing): nothing written.
    #[error("job {job_id} cannot be canceled: {}", describe_final(.status))]
    NotCancelable {
        job_id: String,
        /// The job's status, `None` when there is no such job.
        status: Option<String>,
    },
    #[error("unsupported database url scheme {scheme:?} (expected sqlite: or postgres:)")]
    UnsupportedUrl { scheme: String },
    /// A row the daemon cannot interpret (a column of the wrong type, a NULL
    /// where a value is required, an unknown status, a negative counter),
    /// from `get_job` or `list_jobs`: reported, never a panic. (`claim`
    /// returns such rows as `Claimed::Unreadable` instead.)
    #[error("job {job_id} has a corrupt row: {detail}")]
    CorruptRow { job_id: String, detail: String },
}

fn describe_status(status: &Option<String>) -> String {
    match status {
        None => "no such job".to_owned(),
        Some(s) => format!("it is {s}, not needs_operator"),
    }
}

fn describe_final(status: &Option<String>) -> String {
    match status {
        None => "no such job".to_owned(),
        Some(s) => format!("it is already {s}"),
    }
}

impl StoreError {
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, StoreError::LeaseLost { .. })
    }

    /// The database could not be reached (as opposed to a refused or
    /// malformed statement): the caller should back off and retry, and
    /// readiness should report it.
    pub fn is_unavailable(&self) -> bool {
        if let StoreError::CompleteBatch { unavailable, .. } = self {
            return *unavailable;
        }
        match self.sqlx_error() {
            Some(e) => is_unavailable(e),
            None => false,
        }
    }

    /// A copy of a batch's error for another job of the batch: the message
    /// with its sources, and whether the database was unreachable.
    pub fn for_batch(&self) -> StoreError {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        StoreError::CompleteBatch {
            message,
            unavailable: self.is_unavailable(),
        }
    }

    fn sqlx_error(&self) -> Option<&SqlxError> {
        match self {
            StoreError::Connect(e)
            | StoreError::Migrate(e)
            | StoreError::SchemaStatus(e)
            | StoreError::Ping(e)
            | StoreError::ClaimJobs(e)
            | StoreError::Heartbeat(e)
            | StoreError::Complete(e)
            | StoreError::SetAside(e)
            | StoreError::Settle(e)
            | StoreError::Reschedule(e)
            | StoreError::Release(e)
            | StoreError::GetJob(e)
            | StoreError::ListJobs(e)
            | StoreError::StatusReport(e)
            | StoreError::Resolve(e)
            | StoreError::Cancel(e)
            | StoreError::MakeDue(e)
            | StoreError::PauseProvider(e)
            | StoreError::TakeProbe(e)
            | StoreError::ResumeProvider(e)
            | StoreError::ReadProviderPauses(e)
            | StoreError::ReadWorkers(e)
            | StoreError::PanelQuery(e)
            | StoreError::RetryNow(e)
            | StoreError::NoteOperator(e)
            | StoreError::NoteWebhook(e)
            | StoreError::Snapshot(e)
            | StoreError::ReadSnapshot(e)
            | StoreError::RewriteMediaPaths(e)
            | StoreError::PrepareRestoreTarget(e) => Some(e),
            StoreError::SchemaTooNew { .. }
            | StoreError::CompleteBatch { .. }
            | StoreError::PublishOutputs(_)
            | StoreError::SnapshotFile(_)
            | StoreError::RestoreTargetNotEmpty { .. }
            | StoreError::PanelTimeout { .. }
            | StoreError::LeaseLost { .. }
            | StoreError::NotResolvable { .. }
            | StoreError::NotCancelable { .. }
            | StoreError::UnsupportedUrl { .. }
            | StoreError::CorruptRow { .. }
            | StoreError::CorruptPause { .. } => None,
        }
    }
}

fn is_unavailable(e: &SqlxError) -> bool {
    match e {
        SqlxError::Io(_)
        | SqlxError::Tls(_)
        | SqlxError::Protocol(_)
        | SqlxError::PoolTimedOut
        | SqlxError::PoolClosed
        | SqlxError::WorkerCrashed => true,
        SqlxError::Database(db) => {
            // SQLite: the file is locked beyond the busy timeout.
            // PostgreSQL: class 08 (connection exception), 57P01..57P03
            // (admin shutdown, crash shutdown, cannot connect now).
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            matches!(
                code,
                "5" | "6" | "261" | "517" | "57P01" | "57P02" | "57P03"
            ) || code.starts_with("08")
        }
        _ => false,
    }
}
