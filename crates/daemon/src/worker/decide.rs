//! The vocabulary shared by the job steps: what a step returns ([`Done`]),
//! what can go wrong while carrying it out ([`WorkError`]), and [`decide`],
//! the only way a step asks core's state machine for the next status.

use std::time::Duration;

use clawcut_core::{Event, JobStatus, Outcome, TransitionError, transition};
use clawcut_store::StoreError;

use crate::report::JobOutcome;

/// A job step's result, before it becomes a [`crate::report::JobReport`].
#[derive(Debug)]
pub struct Done {
    pub to: JobStatus,
    pub outcome: JobOutcome,
    pub detail: String,
}

/// Why a step could not record its outcome.
#[derive(Debug)]
pub enum WorkError {
    /// The database refused or failed the write (`LeaseLost` included).
    Store(StoreError),
    /// The state machine has no move for this event from the status we
    /// claimed: the row changed status under our lease (an operator or the
    /// app wrote it), so this attempt must not write anything more.
    Illegal(TransitionError),
}

impl std::fmt::Display for WorkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkError::Store(e) => write!(f, "record the outcome: {e}"),
            WorkError::Illegal(e) => write!(f, "decide the next status: {e}"),
        }
    }
}

impl std::error::Error for WorkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WorkError::Store(e) => e.source(),
            WorkError::Illegal(_) => None,
        }
    }
}

impl From<StoreError> for WorkError {
    fn from(e: StoreError) -> Self {
        WorkError::Store(e)
    }
}

impl WorkError {
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, WorkError::Store(e) if e.is_lease_lost())
    }
}

/// Ask core what `event` does to a job in `from`.
pub fn decide(from: JobStatus, event: Event) -> Result<Outcome, WorkError> {
    transition(from, event).map_err(WorkError::Illegal)
}

/// Whole seconds, for messages.
pub fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

pub fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(round_secs(d))
}
