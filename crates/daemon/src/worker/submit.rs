//! Submission that survives crashes: commit the intent (`submitting`, a fresh
//! idempotency key), call the provider, commit its job id (`pending`). A job
//! found in `submitting` is resolved without guessing: by the provider's
//! lookup where it has one (Kling), otherwise it goes to `needs_operator`.
//! Nothing here ever submits a job twice without proof that the first
//! attempt did not reach the provider.

use std::time::Duration;

use clawcut_core::{
    Event, Job, JobStatus, Lease, Lookup, Outcome, ProviderError, SubmitFailure, SubmitRecovery,
    SubmitRequest,
};
use clawcut_store::{Settle, StoreError};
use serde_json::json;
use tracing::{info, warn};

use super::{Done, ProviderHandle, Settings, Worker, decide, now_ms, round_secs};

impl Worker {
    /// A `queued` job without a provider id: submit it.
    pub(super) async fn submit(
        &self,
        job: &Job,
        lease: &Lease,
        s: &Settings,
    ) -> Result<Done, StoreError> {
        let Some(handle) = self.providers.get(&job.provider) else {
            let msg = format!("no provider named {:?} in the config", job.provider);
            return self.retry(job, lease, s, false, msg, None).await;
        };
        let key = format!("cw-{}-{:016x}", job.id, rand::random::<u64>());
        let to = decide(job.status, Event::SubmitIntent)?.status();
        self.write_settle(
            job,
            lease,
            to,
            None,
            None,
            Some(key.clone()),
            true,
            json!({ "event": "submit_intent", "idempotency_key": key }),
        )
        .await?;
        // From here a crash leaves `submitting` with this key: recovery's job.
        let job = Job {
            status: to,
            idempotency_key: Some(key),
            ..job.clone()
        };
        let req = self.submit_request(&job, handle);
        // Adapters refuse an unusable request (not JSON, no prompt) before
        // sending anything: that comes back as a rejection, not a mystery.
        match handle.provider.submit(&req).await {
            Ok(pid) => {
                self.metrics.provider_request(&job.provider, "ok");
                self.submitted(&job, lease, &pid, "submitted").await
            }
            Err(e) => {
                self.metrics.provider_request(&job.provider, e.kind.label());
                self.submit_failed(&job, lease, s, handle, &req, e).await
            }
        }
    }

    /// A job found in `submitting`: a worker died between the intent and
    /// the provider's id.
    pub(super) async fn recover_submission(
        &self,
        job: &Job,
        lease: &Lease,
        s: &Settings,
    ) -> Result<Done, StoreError> {
        let Some(handle) = self.providers.get(&job.provider) else {
            let msg = format!("no provider named {:?} in the config", job.provider);
            return self.retry(job, lease, s, false, msg, None).await;
        };
        match handle.provider.submit_recovery() {
            SubmitRecovery::LookupByReference if job.idempotency_key.is_some() => {
                let req = self.submit_request(job, handle);
                self.lookup_and_settle(job, lease, s, handle, &req).await
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
                    job,
                    lease,
                    Event::SubmitUnknowable,
                    reason,
                    "needs_operator",
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
        job: &Job,
        lease: &Lease,
        s: &Settings,
        handle: &ProviderHandle,
        req: &SubmitRequest,
        e: ProviderError,
    ) -> Result<Done, StoreError> {
        match e.kind.submit_failure() {
            SubmitFailure::NotCreated => {
                self.not_accepted(job, lease, s, format!("create: {e}"), e.retry_after)
                    .await
            }
            SubmitFailure::Rejected => {
                self.settle(
                    job,
                    lease,
                    Event::SubmitRejected,
                    format!("provider rejected the job: {e}"),
                    "failed",
                )
                .await
            }
            SubmitFailure::Unknown => match handle.provider.submit_recovery() {
                SubmitRecovery::LookupByReference => {
                    warn!(job = %job.id, error = %e, "create answered unclearly; looking the job up by our reference");
                    self.lookup_and_settle(job, lease, s, handle, req).await
                }
                SubmitRecovery::Unknowable => {
                    let reason = format!(
                        "submission outcome unknown: the create call to {:?} ended without a clear answer ({e}); the provider may or may not have the job. Check its dashboard for a job created around {} (epoch ms) with idempotency key {}; then `clawcut-worker resolve {} --resubmit` or `--fail`",
                        job.provider,
                        now_ms(),
                        req.idempotency_key,
                        job.id
                    );
                    self.settle(
                        job,
                        lease,
                        Event::SubmitUnknowable,
                        reason,
                        "needs_operator",
                    )
                    .await
                }
            },
        }
    }

    async fn lookup_and_settle(
        &self,
        job: &Job,
        lease: &Lease,
        s: &Settings,
        handle: &ProviderHandle,
        req: &SubmitRequest,
    ) -> Result<Done, StoreError> {
        match handle.provider.lookup(req).await {
            Ok(Lookup::Found(pid)) => {
                info!(job = %job.id, provider_job_id = %pid, "interrupted submission found at the provider");
                self.submitted(job, lease, &pid, "recovered by lookup")
                    .await
            }
            Ok(Lookup::Absent) => {
                let msg = format!(
                    "provider has no job with reference {}; it will be submitted again",
                    req.idempotency_key
                );
                self.not_accepted(job, lease, s, msg, None).await
            }
            Err(e) => {
                self.retry(
                    job,
                    lease,
                    s,
                    true,
                    format!("lookup {}: {e}", req.idempotency_key),
                    e.retry_after,
                )
                .await
            }
        }
    }

    /// The provider took the job: save its id (`pending`).
    async fn submitted(
        &self,
        job: &Job,
        lease: &Lease,
        pid: &str,
        how: &str,
    ) -> Result<Done, StoreError> {
        let to = decide(job.status, Event::Submitted)?.status();
        self.write_settle(
            job,
            lease,
            to,
            None,
            Some(pid.to_owned()),
            None,
            false,
            json!({ "event": "submitted", "provider_job_id": pid, "how": how }),
        )
        .await?;
        Ok(Done {
            to,
            action: "submitted",
            detail: format!("{how}: provider job {pid}"),
        })
    }

    /// The provider certainly did not create the job: back to `queued`,
    /// next try on the backoff schedule; failed once the attempts are spent.
    async fn not_accepted(
        &self,
        job: &Job,
        lease: &Lease,
        s: &Settings,
        msg: String,
        retry_after: Option<Duration>,
    ) -> Result<Done, StoreError> {
        let attempts = job.attempts.saturating_add(1);
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
                    job,
                    lease,
                    JobStatus::Queued,
                    attempts,
                    job.polls,
                    delay,
                    Some(msg.clone()),
                    "retry",
                )
                .await?;
                Ok(Done {
                    to: JobStatus::Queued,
                    action: "retry",
                    detail: format!(
                        "{msg}; next submission in {}",
                        humantime::format_duration(round_secs(delay))
                    ),
                })
            }
            Outcome::Move(_) | Outcome::Retry(_) | Outcome::Snooze(_) => {
                let reason = format!("gave up submitting after {attempts} attempts; last: {msg}");
                self.settle(job, lease, event, reason, "failed").await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_settle(
        &self,
        job: &Job,
        lease: &Lease,
        to: JobStatus,
        reason: Option<String>,
        provider_job_id: Option<String>,
        idempotency_key: Option<String>,
        keep_lease: bool,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.store
            .settle(
                lease,
                &Settle {
                    from: job.status,
                    to,
                    now: now_ms(),
                    reason,
                    provider_job_id,
                    idempotency_key,
                    detail,
                    keep_lease,
                    attempts: None,
                },
            )
            .await
    }
}
