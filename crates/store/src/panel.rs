//! What the operator panel (`/ops`) asks of the database, as plain types:
//! a page of jobs (keyset pagination, a capped count), one job's audit
//! events and media, the error groups, the newest state changes, and the
//! operator's snapshot-bound "retry now". The statements are in
//! `sql/panel.rs`.
//!
//! Every panel read runs under a timeout ([`PanelLimits::timeout`]): on
//! PostgreSQL as the statement's own `statement_timeout` (the server stops
//! it), on SQLite as a deadline on the call.

use std::time::Duration;

use clawcut_core::{EligibilityRules, Job, JobStatus, Millis};

/// Which jobs a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobView {
    /// Every video job, the most recently updated first.
    All,
    /// Claimable now (the claim's rules, paused providers included), oldest
    /// first.
    Eligible,
    /// Owed work ([`crate::JobFilter::Stranded`]), oldest first.
    Stranded,
    /// Parked for a human, oldest first.
    NeedsOperator,
}

impl JobView {
    pub const ALL: [JobView; 4] = [
        JobView::All,
        JobView::Eligible,
        JobView::Stranded,
        JobView::NeedsOperator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobView::All => "all",
            JobView::Eligible => "eligible",
            JobView::Stranded => "stranded",
            JobView::NeedsOperator => "needs_operator",
        }
    }

    pub fn parse(s: &str) -> Option<JobView> {
        JobView::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Newest first (the whole table) or oldest first (work owed).
    pub fn newest_first(self) -> bool {
        match self {
            JobView::All => true,
            JobView::Eligible | JobView::Stranded | JobView::NeedsOperator => false,
        }
    }
}

/// Where a page ends: the last row's sort key and id. The key is the
/// backend's own exact `updated_at` (milliseconds on SQLite, microseconds
/// on PostgreSQL, whose timestamps are finer than the milliseconds a
/// [`Job`] carries), so rows updated within one millisecond are neither
/// skipped nor repeated. Opaque to callers: round-trip it with
/// [`Cursor::encode`] and [`Cursor::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub key: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.key, self.id)
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let (key, id) = s.split_once('.')?;
        Some(Cursor {
            key: key.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

/// The bounds every panel read runs within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PanelLimits {
    /// The statement is stopped after this long ([`crate::StoreError::PanelTimeout`]).
    pub timeout: Duration,
    /// Counts stop here and read as "at least".
    pub count_cap: u32,
}

impl Default for PanelLimits {
    fn default() -> Self {
        PanelLimits {
            timeout: Duration::from_secs(3),
            count_cap: 10_000,
        }
    }
}

/// One page of a job list.
#[derive(Debug, Clone)]
pub struct JobQuery<'a> {
    pub view: JobView,
    pub status: Option<JobStatus>,
    pub provider: Option<&'a str>,
    /// Only unfinished jobs whose `last_error` starts with this (an
    /// [`ErrorGroup`]'s `head`).
    pub error_head: Option<&'a str>,
    /// A job id, a provider job id or a scene id, matched exactly.
    pub search: Option<&'a str>,
    /// Rows after this one, in the view's order.
    pub after: Option<&'a Cursor>,
    pub limit: u32,
    pub now: Millis,
    pub rules: &'a EligibilityRules,
    pub limits: PanelLimits,
    /// Also count the rows matching (capped): the first page wants it,
    /// the bulk snapshot's walk does not.
    pub count: bool,
}

#[derive(Debug, Clone)]
pub struct JobPage {
    /// The rows, without their `request` (empty here: a list never fetches
    /// it; [`Store::get_job`](crate::Store::get_job) reads it).
    pub jobs: Vec<Job>,
    /// Present when more rows follow.
    pub next: Option<Cursor>,
    /// Rows matching the filters (not the cursor), up to the cap; `None`
    /// when not asked.
    pub count: Option<u64>,
    /// `count` stopped at the cap: read it as "at least".
    pub count_capped: bool,
}

/// One `ai_job_events` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    pub id: String,
    pub ai_job_id: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub worker_id: String,
    /// JSON text as stored.
    pub detail: String,
    pub created_at: Millis,
}

/// A job's outputs and its scene version, for the job's page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobMedia {
    pub video_path: Option<String>,
    pub thumbnail_path: Option<String>,
    pub video_sha256: Option<String>,
    pub video_bytes: Option<u64>,
    pub completed_at: Option<Millis>,
    /// The scene version's own status and error (`None` without a version
    /// row).
    pub version_status: Option<String>,
    pub version_error: Option<String>,
}

/// Unfinished jobs whose last error starts alike, per provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorGroup {
    pub provider: String,
    /// `last_error` up to and including its first `:` when that comes
    /// within 40 characters (`Server(503):`, `Timeout:`), else empty.
    pub head: String,
    pub count: u64,
    pub oldest_updated_at: Millis,
}

/// One recent state change and when the job entered the state it left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub provider: String,
    pub from_status: Option<String>,
    pub to_status: String,
    /// The job's previous event, or its creation.
    pub since: Millis,
    pub at: Millis,
}

/// A job as the operator saw it when a bulk action was previewed: the
/// action touches it only while it is still exactly so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenJob {
    pub id: String,
    pub status: JobStatus,
    /// Bumped by every claim and cancel.
    pub fencing_token: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl SeenJob {
    pub fn of(job: &Job) -> SeenJob {
        SeenJob {
            id: job.id.clone(),
            status: job.status,
            fencing_token: job.fencing_token,
            attempts: job.attempts,
            last_error: job.last_error.clone(),
        }
    }
}

/// An operator's "retry now" of some jobs, all seen in one snapshot.
#[derive(Debug, Clone)]
pub struct RetryNow<'a> {
    pub jobs: &'a [SeenJob],
    pub operator: &'a str,
    pub reason: &'a str,
    /// The bulk action's id, for the audit event.
    pub bulk_id: &'a str,
    pub now: Millis,
}

/// What a [`RetryNow`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOutcome {
    /// Made due now, with an audit event each.
    pub done: Vec<String>,
    /// Changed since the snapshot (another status, claimed, canceled,
    /// retried, or leased right now): left as they are.
    pub skipped: Vec<String>,
}
