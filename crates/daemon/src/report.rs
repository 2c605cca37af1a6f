//! What happened to jobs, as the daemon tells it: the outcome of one job
//! ([`JobOutcome`], [`JobReport`]), of a one-shot pass ([`PassSummary`]),
//! and the JSON shape of a job for the CLI and the admin API.

use clawcut_core::redact::redact;
use clawcut_core::{Job, Millis};
use serde::Serialize;
use serde_json::json;

/// The outcome of working one claimed job. Counted in `/metrics`
/// (`jobs_total{outcome=…}`), printed by `reconcile`, logged per job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    Completed,
    Failed,
    Canceled,
    NeedsOperator,
    /// Failed as older than `max_age`, without a poll.
    Expired,
    /// Still running at the provider; next poll scheduled.
    Snoozed,
    /// A transient error; next try on the backoff schedule.
    Retry,
    /// Submission committed the provider's job id.
    Submitted,
    /// The lease was given back untouched (shutdown, not eligible).
    Released,
    /// Another worker took the job; nothing of this attempt was written.
    LeaseLost,
    /// A row that makes no sense to the daemon, parked as `needs_operator`.
    SetAside,
    /// The outcome could not be written; the lease expires and the job is redone.
    Error,
}

impl JobOutcome {
    pub const ALL: [JobOutcome; 12] = [
        JobOutcome::Completed,
        JobOutcome::Failed,
        JobOutcome::Canceled,
        JobOutcome::NeedsOperator,
        JobOutcome::Expired,
        JobOutcome::Snoozed,
        JobOutcome::Retry,
        JobOutcome::Submitted,
        JobOutcome::Released,
        JobOutcome::LeaseLost,
        JobOutcome::SetAside,
        JobOutcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Completed => "completed",
            JobOutcome::Failed => "failed",
            JobOutcome::Canceled => "canceled",
            JobOutcome::NeedsOperator => "needs_operator",
            JobOutcome::Expired => "expired",
            JobOutcome::Snoozed => "snoozed",
            JobOutcome::Retry => "retry",
            JobOutcome::Submitted => "submitted",
            JobOutcome::Released => "released",
            JobOutcome::LeaseLost => "lease_lost",
            JobOutcome::SetAside => "set_aside",
            JobOutcome::Error => "error",
        }
    }
}

impl std::fmt::Display for JobOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to one job.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub job_id: String,
    pub provider: String,
    pub from: String,
    pub to: String,
    pub action: JobOutcome,
    pub detail: String,
}

/// A one-shot pass (`reconcile`, `POST /v1/reconcile`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassSummary {
    pub claimed: usize,
    pub jobs: Vec<JobReport>,
    pub duration_ms: u64,
}

/// A job as the CLI's `--json` and the admin API show it.
pub fn job_json(j: &Job, now: Millis) -> serde_json::Value {
    json!({
        "id": j.id,
        "provider": j.provider,
        "status": j.status.as_str(),
        "provider_job_id": j.provider_job_id,
        "scene_id": j.scene_id,
        "scene_version_id": j.scene_version_id,
        "attempts": j.attempts,
        "age_seconds": now.saturating_sub(j.updated_at) / 1000,
        "next_attempt_at": j.next_attempt_at,
        "last_error": j.last_error.as_deref().map(|e| redact(e).into_owned()),
    })
}

/// An error and its sources on one line, for logs and `last_error`, under
/// the one redaction rule ([`clawcut_core::redact`]).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    redact(&s).into_owned()
}

/// One paused provider, as `status --json` and `/readyz` show it.
pub fn pause_json(p: &clawcut_store::ProviderPause, now: Millis) -> serde_json::Value {
    json!({
        "provider": p.provider,
        "cause": p.cause.label(),
        "reason": p.reason,
        "call": p.call.label(),
        "paused_at_ms": p.paused_at,
        "paused_for_seconds": now.saturating_sub(p.paused_at).max(0) / 1000,
        "paused_by": p.paused_by,
        "next_probe_in_ms": p.probe_at.saturating_sub(now).max(0),
        "probes": p.probes,
        "advice": p.cause.advice(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_serialize_as_their_names() {
        for o in JobOutcome::ALL {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
    }
}
