//! `clawcut-core`: what a video job *is* and what may happen to it, with no I/O.
//!
//! Start with [`status`] (the statuses of `ai_jobs.status`) and [`transition()`],
//! the one function that decides every state change the daemon makes. Then
//! [`backoff`] (the persisted retry and poll schedule), [`eligibility`] (which
//! rows a pass may claim; the store's SQL mirrors it and is tested against it)
//! and [`provider`] (the trait every HTTP adapter implements).
//!
//! This crate never imports sqlx, reqwest or tokio: everything here is a pure
//! function of its arguments, so it is tested exhaustively and quickly (the
//! one exception is [`redact`]'s list of the process's secrets).

pub mod backoff;
pub mod eligibility;
pub mod health;
pub mod job;
pub mod provider;
pub mod redact;
pub mod status;
pub mod transition;

pub use backoff::BackoffPolicy;
pub use eligibility::{Eligibility, EligibilityRules, Ineligible, WorkKind};
pub use health::{HealthPolicy, OutageCount, PauseCause};
pub use job::{Job, Lease, Millis, RowProblem, is_spec_id};
pub use provider::{
    CancelAnswer, DownloadSpec, FaultScope, Lookup, OutputKind, PollOutcome, Provider,
    ProviderError, ProviderErrorKind, RemoteProgress, SubmitFailure, SubmitRecovery, SubmitRequest,
    WebhookAuth,
};
pub use status::JobStatus;
pub use transition::{Event, Outcome, TransitionError, transition};

/// Errors of this crate. Each variant names the operation that failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoreError {
    #[error("parse job status {0:?}")]
    ParseStatus(String),
    #[error("apply transition")]
    Transition(#[from] TransitionError),
}
