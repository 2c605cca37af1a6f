//! A job running at the provider: poll it and write what the answer means.
//! Also the writes every step shares: [`Worker::retry`] (a transient
//! error), [`Worker::schedule_next`] (the next try) and [`Worker::settle`]
//! (a status change with its audit event).

use std::time::Duration;

use clawcut_core::{Event, JobStatus, Outcome, PollOutcome};
use clawcut_store::{ProviderCall, Reschedule, Settle};
use tracing::debug;

use super::decide::{Done, WorkError, decide, human};
use super::{Ctx, Worker};
use crate::report::JobOutcome;
use crate::runtime::clock::ms;

/// The next try of a job that stays in flight.
pub(super) struct Next {
    pub to: JobStatus,
    pub attempts: u32,
    pub polls: u32,
    pub delay: Duration,
    pub last_error: Option<String>,
    /// `poll` (still running) or `retry` (transient error), for metrics.
    pub reason: &'static str,
}

impl Worker {
    pub(super) async fn poll(&self, cx: &Ctx<'_>) -> Result<Done, WorkError> {
        let job = cx.job;
        let Some(provider_job_id) = job.provider_job_id.as_deref() else {
            self.store.release(cx.lease).await?;
            return Ok(Done {
                to: job.status,
                outcome: JobOutcome::Released,
                detail: "no provider job id".into(),
            });
        };
        let answer = cx.handle.provider.poll(provider_job_id).await;
        cx.progress.mark();
        let status_label = match &answer {
            Ok(_) => "ok",
            Err(e) => e.kind.label(),
        };
        self.metrics.provider_request(&job.provider, status_label);
        let paused = self
            .observe(cx, ProviderCall::Poll, answer.as_ref().err())
            .await;
        match answer {
            Ok(PollOutcome::Running {
                progress,
                poll_after,
            }) => {
                let to = decide(job.status, Event::StillRunning(progress))?.status();
                let polls = job.polls.saturating_add(1);
                let delay = cx.s.poll.delay(polls, rand::random::<f64>(), poll_after);
                self.schedule_next(
                    cx,
                    Next {
                        to,
                        attempts: job.attempts,
                        polls,
                        delay,
                        last_error: None,
                        reason: "poll",
                    },
                )
                .await?;
                Ok(Done {
                    to,
                    outcome: JobOutcome::Snoozed,
                    detail: format!("still running; next poll in {}", human(delay)),
                })
            }
            Ok(PollOutcome::Succeeded { video, thumbnail }) => {
                self.store_outputs(cx, &video, thumbnail.as_ref()).await
            }
            Ok(PollOutcome::Failed { reason }) => {
                self.settle(
                    cx,
                    Event::ProviderFailed,
                    format!("provider reported failure: {reason}"),
                    JobOutcome::Failed,
                )
                .await
            }
            Ok(PollOutcome::Canceled { reason }) => {
                self.settle(
                    cx,
                    Event::ProviderCanceled,
                    format!("provider reported the job canceled: {reason}"),
                    JobOutcome::Canceled,
                )
                .await
            }
            Ok(PollOutcome::OutputsGone { reason }) => {
                self.settle(
                    cx,
                    Event::OutputsGone,
                    format!("outputs gone at the provider: {reason}"),
                    JobOutcome::Failed,
                )
                .await
            }
            Err(e) => {
                // A paused provider's faults are the provider's, not the job's.
                let counts = e.kind.counts_as_attempt() && !paused;
                let msg = format!("poll {provider_job_id}: {e}");
                self.retry(cx, counts, msg, e.retry_after).await
            }
        }
    }

    /// A transient error: one more attempt (when it counts), next try on the
    /// backoff schedule, or failed once the attempts are spent.
    pub(super) async fn retry(
        &self,
        cx: &Ctx<'_>,
        counts: bool,
        msg: String,
        retry_after: Option<Duration>,
    ) -> Result<Done, WorkError> {
        let job = cx.job;
        let attempts = job.attempts.saturating_add(u32::from(counts));
        let event = Event::Transient {
            attempts,
            max_attempts: cx.s.backoff.max_attempts,
        };
        match decide(job.status, event)? {
            Outcome::Retry(to) => {
                let delay =
                    cx.s.backoff
                        .delay(attempts.max(1), rand::random::<f64>(), retry_after);
                self.schedule_next(
                    cx,
                    Next {
                        to,
                        attempts,
                        polls: job.polls,
                        delay,
                        last_error: Some(msg.clone()),
                        reason: "retry",
                    },
                )
                .await?;
                debug!(job = %job.id, attempts, error = %msg, "transient error; rescheduled");
                Ok(Done {
                    to,
                    outcome: JobOutcome::Retry,
                    detail: format!(
                        "{msg}; attempt {attempts} of {}, next try in {}",
                        cx.s.backoff.max_attempts,
                        human(delay)
                    ),
                })
            }
            Outcome::Move(to) | Outcome::Snooze(to) => {
                let (reason, outcome) = if to == JobStatus::NeedsOperator {
                    (
                        format!(
                            "could not learn the submission's outcome after {attempts} tries; last: {msg}. Check the provider, then `clawcut-worker resolve {} --resubmit` or `--fail`",
                            job.id
                        ),
                        JobOutcome::NeedsOperator,
                    )
                } else {
                    (
                        format!("gave up after {attempts} transient errors; last: {msg}"),
                        JobOutcome::Failed,
                    )
                };
                self.settle(cx, event, reason, outcome).await
            }
        }
    }

    /// Write the next try (status, counters, due time), release the lease.
    pub(super) async fn schedule_next(&self, cx: &Ctx<'_>, n: Next) -> Result<(), WorkError> {
        let now = self.now_ms();
        self.store
            .reschedule(
                cx.lease,
                &Reschedule {
                    from: cx.job.status,
                    to: n.to,
                    now,
                    attempts: n.attempts,
                    polls: n.polls,
                    next_attempt_at: now.saturating_add(ms(n.delay)),
                    last_error: n.last_error,
                },
            )
            .await?;
        self.metrics.reschedule(n.reason);
        Ok(())
    }

    /// A status change decided by `event`, with its audit event; releases
    /// the lease.
    pub(super) async fn settle(
        &self,
        cx: &Ctx<'_>,
        event: Event,
        reason: String,
        outcome: JobOutcome,
    ) -> Result<Done, WorkError> {
        let to = decide(cx.job.status, event)?.status();
        self.store
            .settle(
                cx.lease,
                &Settle {
                    from: cx.job.status,
                    to,
                    now: self.now_ms(),
                    reason: Some(reason.clone()),
                    provider_job_id: None,
                    idempotency_key: None,
                    detail: serde_json::json!({ "event": event.name(), "reason": reason }),
                    keep_lease: false,
                    attempts: if let Event::Transient { attempts, .. } = event {
                        Some(attempts)
                    } else {
                        None
                    },
                },
            )
            .await?;
        Ok(Done {
            to,
            outcome,
            detail: reason,
        })
    }
}
