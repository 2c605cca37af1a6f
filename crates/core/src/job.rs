//! The daemon's view of one `ai_jobs` row and of the lease it holds on it.

use crate::status::JobStatus;

/// Unix epoch milliseconds, UTC: the SQLite column type, and what the store
/// converts `timestamptz` to and from on PostgreSQL.
pub type Millis = i64;

/// One `ai_jobs` row as the daemon reads it: the app's columns and the
/// daemon's bookkeeping columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub provider: String,
    pub scene_id: Option<String>,
    pub scene_version_id: Option<String>,
    /// JSON text written by the app (`prompt`, `model`, `seconds`, `size`, ...).
    pub request: String,
    pub status: JobStatus,
    pub provider_job_id: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Transient errors so far; a job fails after `max_attempts` of them.
    pub attempts: u32,
    /// Polls that found the job still running; drives the poll cadence but
    /// never counts as a failed attempt.
    pub polls: u32,
    pub next_attempt_at: Millis,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<Millis>,
    /// Incremented by every claim; every later write must present it.
    pub fencing_token: i64,
    pub last_error: Option<String>,
    pub idempotency_key: Option<String>,
    /// Set by a claim that replaced another worker's expired, unreleased
    /// lease: that worker's id (it crashed or hung). `None` otherwise.
    pub lease_taken_from: Option<String>,
}

/// Proof of a claim: every write after the claim carries it, and the store
/// refuses the write when another worker has claimed the row since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub owner: String,
    pub token: i64,
}

impl Job {
    /// The lease this job carries right after it was claimed by `owner`.
    pub fn lease(&self) -> Option<Lease> {
        let owner = self.lease_owner.clone()?;
        Some(Lease {
            job_id: self.id.clone(),
            owner,
            token: self.fencing_token,
        })
    }
}
