//! Submission that survives crashes: commit the intent (`submitting`, a fresh
//! idempotency key), call the provider, commit its job id (`pending`). A job
//! found in `submitting` is resolved without guessing: by the provider's
//! lookup where it has one (Kling), otherwise it goes to `needs_operator`.
//! Nothing here ever submits a job twice without proof that the first
//! attempt did not reach the provider.

use std::time::Duration;

use clawcut_core::{
    Event, Job, JobStatus, Lookup, Outcome, ProviderError, SubmitFailure, SubmitRecovery,
    SubmitRequest,
};
use clawcut_store::{ProviderCall, Settle};
use serde_json::json;
use tracing::{info, warn};

use super::decide::{Done, WorkError, decide, human};
use super::poll::Next;
use super::{Ctx, ProviderHandle, Worker};
use crate::report::JobOutcome;

/// A status change of submission, written with [`Worker::write_settle`].
struct Step {
    to: JobStatus,
    provider_job_id: Option<String>,
    idempotency_key: Option<String>,
    keep_lease: bool,
    detail: serde_json::Value,
}

impl Worker {
    /// A `queued` job without a provider id: submit it.
    pub(super) async fn submit(&self, cx: &Ctx<'_>) -> Result<Done, WorkError> {
        let (job, handle) = (cx.job, cx.handle);
        let key = format!("cw-{}-{:016x}", job.id, rand::random::<u64>());
        let to = decide(job.status, Event::SubmitIntent)?.status();
        self.write_settle(
            cx,
            Step {
                to,
                provider_job_id: None,
                idempotency_key: Some(key.clone()),
                keep_lease: true,
                detail: json!({ "event": "submit_intent", "idempotency_key": key }),
            },
        )
        .await?;
        // From here a crash leaves `submitting` with this key: recovery's job.
        let job = Job {
            status: to,
            idempotency_key: Some(key),
            ..job.clone()
        };
        let cx = &Ctx { job: &job, ..*cx };
        let req = self.submit_request(&job, handle);
        // Adapters refuse an unusable request (not JSON, no prompt) before
        // sending anything: that comes back as a rejection, not a mystery.
        let answer = {
            let _pin = cx.progress.pin();
            handle.provider.submit(&req).await
        };
        cx.progress.mark();
        let paused = self
            .observe(cx, ProviderCall::Submit, answer.as_ref().err())
            .await;
        match answer {
            Ok(pid) => {
                self.metrics.provider_request(&job.provider, "ok");
                self.submitted(cx, &pid, "submitted").await
            }
            Err(e) => {
                self.metrics.provider_request(&job.provider, e.kind.label());
                self.submit_failed(cx, &req, e, paused).await
            }
        }
    }

    /// A job found in `submitting`: a worker died between the intent and
    /// the provider's id.
    pub(super) async fn recover_submission(&self, cx: &Ctx<'_>) -> Result<Done, WorkError> {
        let (job, handle) = (cx.job, cx.handle);
        match handle.provider.submit_recovery() {
            SubmitRecovery::LookupByReference if job.idempotency_key.is_some() => {
                let req = self.submit_request(job, handle);
                self.lookup_and_settle(cx, &req).await
            }
            SubmitRecovery::LookupByReference | SubmitRecovery::Unknowable => {
                let reason = format!(
                    "submission outcome unknown: a worker stopped between recording the intent (idempotency key {}) and saving the provider's job id, and provider {:?} cannot be asked by our reference. Check the provider's dashboard for a job created around {} (epoch ms); if it exists, store its id and set the status to pending, otherwise run `clawcut-worker resolve {} --resubmit` (or `--fail`)",
                    job.idempotency_key.as_deref().unwrap_or("none recorded"),
                    job.provider,
                    job.updated_at,
                    job.id
                );
                self.settle(
                    cx,
                    Event::SubmitUnknowable,
                    reason,
                    JobOutcome::NeedsOperator,
                )
                .await
            }
        }
    }

    fn submit_request(&self, job: &Job, handle: &ProviderHandle) -> SubmitRequest {
        SubmitRequest {
            job_id: job.id.clone(),
            request: job.request.clone(),
            idempotency_key: job.idempotency_key.clone().unwrap_or_default(),
            webhook_url: handle.webhook_url.clone(),
        }
    }

    async fn submit_failed(
        &self,
        cx: &Ctx<'_>,
        req: &SubmitRequest,
        e: ProviderError,
        paused: bool,
    ) -> Result<Done, WorkError> {
        let (job, handle) = (cx.job, cx.handle);
        match e.kind.submit_failure() {
            SubmitFailure::NotCreated => {
                let counts = e.kind.counts_as_attempt() && !paused;
                self.not_accepted(cx, format!("create: {e}"), e.retry_after, counts)
                    .await
            }
            SubmitFailure::Rejected => {
                self.settle(
                    cx,
                    Event::SubmitRejected,
                    format!("provider rejected the job: {e}"),
                    JobOutcome::Failed,
                )
                .await
            }
            SubmitFailure::Unknown => match handle.provider.submit_recovery() {
                SubmitRecovery::LookupByReference => {
                    warn!(job = %job.id, error = %e, "create answered unclearly; looking the job up by our reference");
                    self.lookup_and_settle(cx, req).await
                }
                SubmitRecovery::Unknowable => {
                    let reason = format!(
                        "submission outcome unknown: the create call to {:?} ended without a clear answer ({e}); the provider may or may not have the job. Check its dashboard for a job created around {} (epoch ms) with idempotency key {}; then `clawcut-worker resolve {} --resubmit` or `--fail`",
                        job.provider,
                        self.now_ms(),
                        req.idempotency_key,
                        job.id
                    );
                    self.settle(
                        cx,
                        Event::SubmitUnknowable,
                        reason,
                        JobOutcome::NeedsOperator,
                    )
                    .await
                }
            },
        }
    }

    async fn lookup_and_settle(
        &self,
        cx: &Ctx<'_>,
        req: &SubmitRequest,
    ) -> Result<Done, WorkError> {
        let job = cx.job;
        let answer = {
            let _pin = cx.progress.pin();
            cx.handle.provider.lookup(req).await
        };
        cx.progress.mark();
        let paused = self
            .observe(cx, ProviderCall::Submit, answer.as_ref().err())
            .await;
        match answer {
            Ok(Lookup::Found(pid)) => {
                info!(job = %job.id, provider_job_id = %pid, "interrupted submission found at the provider");
                self.submitted(cx, &pid, "recovered by lookup").await
            }
            Ok(Lookup::Absent) => {
                let msg = format!(
                    "provider has no job with reference {}; it will be submitted again",
                    req.idempotency_key
                );
                self.not_accepted(cx, msg, None, true).await
            }
            Err(e) => {
                self.retry(
                    cx,
                    e.kind.counts_as_attempt() && !paused,
                    format!("lookup {}: {e}", req.idempotency_key),
                    e.retry_after,
                )
                .await
            }
        }
    }

    /// The provider took the job: save its id (`pending`).
    async fn submitted(&self, cx: &Ctx<'_>, pid: &str, how: &str) -> Result<Done, WorkError> {
        let to = decide(cx.job.status, Event::Submitted)?.status();
        self.write_settle(
            cx,
            Step {
                to,
                provider_job_id: Some(pid.to_owned()),
                idempotency_key: None,
                keep_lease: false,
                detail: json!({ "event": "submitted", "provider_job_id": pid, "how": how }),
            },
        )
        .await?;
        Ok(Done {
            to,
            outcome: JobOutcome::Submitted,
            detail: format!("{how}: provider job {pid}"),
        })
    }

    /// The provider certainly did not create the job: back to `queued`,
    /// next try on the backoff schedule; failed once the attempts are spent.
    async fn not_accepted(
        &self,
        cx: &Ctx<'_>,
        msg: String,
        retry_after: Option<Duration>,
        counts: bool,
    ) -> Result<Done, WorkError> {
        let (job, s) = (cx.job, cx.s);
        let attempts = job.attempts.saturating_add(u32::from(counts));
        let event = Event::SubmitNotAccepted {
            attempts,
            max_attempts: s.backoff.max_attempts,
        };
        match decide(job.status, event)? {
            Outcome::Move(JobStatus::Queued) => {
                let delay = s
                    .backoff
                    .delay(attempts, rand::random::<f64>(), retry_after);
                self.schedule_next(
                    cx,
                    Next {
                        to: JobStatus::Queued,
                        attempts,
                        polls: job.polls,
                        delay,
                        last_error: Some(msg.clone()),
                        reason: "retry",
                    },
                )
                .await?;
                Ok(Done {
                    to: JobStatus::Queued,
                    outcome: JobOutcome::Retry,
                    detail: format!("{msg}; next submission in {}", human(delay)),
                })
            }
            Outcome::Move(_) | Outcome::Retry(_) | Outcome::Snooze(_) => {
                let reason = format!("gave up submitting after {attempts} attempts; last: {msg}");
                self.settle(cx, event, reason, JobOutcome::Failed).await
            }
        }
    }

    async fn write_settle(&self, cx: &Ctx<'_>, step: Step) -> Result<(), WorkError> {
        self.store
            .settle(
                cx.lease,
                &Settle {
                    from: cx.job.status,
                    to: step.to,
                    now: self.now_ms(),
                    reason: None,
                    provider_job_id: step.provider_job_id,
                    idempotency_key: step.idempotency_key,
                    detail: step.detail,
                    keep_lease: step.keep_lease,
                    attempts: None,
                },
            )
            .await?;
        Ok(())
    }
}
