//! Every state change the daemon may make, decided in one place.
//!
//! [`transition`] is a single exhaustive `match` with no catch-all arm: adding
//! a status or an event fails to compile until each pair has been decided.
//! Illegal pairs are errors, never panics, because the `from` side comes from
//! a database row the app (or an operator) may have written.

use crate::provider::RemoteProgress;
use crate::status::JobStatus::{self, *};

/// Something that happened to a claimed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The provider answered: the job is still queued or running there.
    StillRunning(RemoteProgress),
    /// The outputs were downloaded, verified and renamed to their final paths.
    OutputsStored,
    /// The provider reported the job failed.
    ProviderFailed,
    /// The provider reported the job canceled.
    ProviderCanceled,
    /// The provider finished, but its outputs are deleted or expired.
    OutputsGone,
    /// The job is older than `max_age`: failed as expired, not polled.
    Expired,
    /// A transient error (network, 5xx, 429, timeout, malformed body).
    /// `attempts` counts this one.
    Transient { attempts: u32, max_attempts: u32 },
    /// Submission: the intent (with its idempotency key) is about to be committed.
    SubmitIntent,
    /// Submission: the provider accepted the job and gave its id.
    Submitted,
    /// Submission: the provider certainly did not create the job (refused
    /// before accepting it, e.g. 429 or connection refused); try again later.
    SubmitNotAccepted { attempts: u32, max_attempts: u32 },
    /// Submission: the provider rejected the request for good (4xx).
    SubmitRejected,
    /// Submission: the outcome cannot be known (crash or timeout mid-create,
    /// and the provider has no lookup by our reference).
    SubmitUnknowable,
    /// An operator decided to submit the job again.
    OperatorResubmit,
    /// An operator decided the job has failed.
    OperatorFail,
    /// An operator stopped a job that is not final (`cancel`).
    OperatorCancel,
    /// The row makes no sense to the daemon (a column it cannot decode, an
    /// id outside the SPEC's alphabet, a request that is not JSON, a provider
    /// the config does not name): set aside for an operator, never worked.
    RowRejected,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::StillRunning(_) => "still_running",
            Event::OutputsStored => "outputs_stored",
            Event::ProviderFailed => "provider_failed",
            Event::ProviderCanceled => "provider_canceled",
            Event::OutputsGone => "outputs_gone",
            Event::Expired => "expired",
            Event::Transient { .. } => "transient_error",
            Event::SubmitIntent => "submit_intent",
            Event::Submitted => "submitted",
            Event::SubmitNotAccepted { .. } => "submit_not_accepted",
            Event::SubmitRejected => "submit_rejected",
            Event::SubmitUnknowable => "submit_unknowable",
            Event::OperatorResubmit => "operator_resubmit",
            Event::OperatorFail => "operator_fail",
            Event::OperatorCancel => "operator_cancel",
            Event::RowRejected => "row_rejected",
        }
    }
}

/// What the daemon must write for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still running: next poll on the poll schedule; not a failed attempt.
    /// The status may move between `pending` and `processing`.
    Snooze(JobStatus),
    /// Transient failure: same status, one more attempt, next try on the
    /// backoff schedule.
    Retry(JobStatus),
    /// A status change settled now (final, `needs_operator`, or a step of
    /// submission).
    Move(JobStatus),
}

impl Outcome {
    pub fn status(self) -> JobStatus {
        match self {
            Outcome::Snooze(s) | Outcome::Retry(s) | Outcome::Move(s) => s,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: event {event} on a job in status {from}")]
pub struct TransitionError {
    pub from: JobStatus,
    pub event: &'static str,
}

/// Decide what `event` does to a job in status `from`.
pub fn transition(from: JobStatus, event: Event) -> Result<Outcome, TransitionError> {
    let illegal = Err(TransitionError {
        from,
        event: event.name(),
    });
    match event {
        Event::StillRunning(progress) => match from {
            Queued | Pending | Processing => Ok(Outcome::Snooze(match progress {
                RemoteProgress::Queued => Pending,
                RemoteProgress::Running => Processing,
            })),
            Submitting | Completed | Failed | Canceled | NeedsOperator => illegal,
        },
        Event::OutputsStored => match from {
            Queued | Pending | Processing => Ok(Outcome::Move(Completed)),
            Submitting | Completed | Failed | Canceled | NeedsOperator => illegal,
        },
        Event::ProviderFailed | Event::OutputsGone | Event::Expired => match from {
            Queued | Pending | Processing => Ok(Outcome::Move(Failed)),
            Submitting | Completed | Failed | Canceled | NeedsOperator => illegal,
        },
        Event::ProviderCanceled => match from {
            Queued | Pending | Processing => Ok(Outcome::Move(Canceled)),
            Submitting | Completed | Failed | Canceled | NeedsOperator => illegal,
        },
        Event::Transient {
            attempts,
            max_attempts,
        } => match from {
            Queued | Pending | Processing if attempts >= max_attempts => Ok(Outcome::Move(Failed)),
            Queued | Pending | Processing => Ok(Outcome::Retry(from)),
            // A lookup of an interrupted submission failed: ask again later;
            // when the attempts run out only an operator can decide.
            Submitting if attempts >= max_attempts => Ok(Outcome::Move(NeedsOperator)),
            Submitting => Ok(Outcome::Retry(Submitting)),
            Completed | Failed | Canceled | NeedsOperator => illegal,
        },
        Event::SubmitIntent => match from {
            Queued => Ok(Outcome::Move(Submitting)),
            Submitting | Pending | Processing | Completed | Failed | Canceled | NeedsOperator => {
                illegal
            }
        },
        Event::Submitted => match from {
            Submitting => Ok(Outcome::Move(Pending)),
            Queued | Pending | Processing | Completed | Failed | Canceled | NeedsOperator => {
                illegal
            }
        },
        Event::SubmitNotAccepted {
            attempts,
            max_attempts,
        } => match from {
            Submitting if attempts >= max_attempts => Ok(Outcome::Move(Failed)),
            Submitting => Ok(Outcome::Move(Queued)),
            Queued | Pending | Processing | Completed | Failed | Canceled | NeedsOperator => {
                illegal
            }
        },
        Event::SubmitRejected => match from {
            Submitting => Ok(Outcome::Move(Failed)),
            Queued | Pending | Processing | Completed | Failed | Canceled | NeedsOperator => {
                illegal
            }
        },
        Event::SubmitUnknowable => match from {
            Submitting => Ok(Outcome::Move(NeedsOperator)),
            Queued | Pending | Processing | Completed | Failed | Canceled | NeedsOperator => {
                illegal
            }
        },
        Event::OperatorResubmit => match from {
            NeedsOperator => Ok(Outcome::Move(Queued)),
            Queued | Submitting | Pending | Processing | Completed | Failed | Canceled => illegal,
        },
        Event::OperatorFail => match from {
            NeedsOperator => Ok(Outcome::Move(Failed)),
            Queued | Submitting | Pending | Processing | Completed | Failed | Canceled => illegal,
        },
        Event::RowRejected => match from {
            Queued | Submitting | Pending | Processing => Ok(Outcome::Move(NeedsOperator)),
            Completed | Failed | Canceled | NeedsOperator => illegal,
        },
        // An operator may stop any job that is not final, including one in
        // `submitting` (the provider may have it: the caller asks the
        // provider to cancel first where it can) and one a worker holds (the
        // store bumps the fencing token, so that worker's writes are refused).
        // A submission's outcome is not known yet: canceling now could
        // strand a job the provider did create (and bills) with nobody
        // left to cancel it there. Once it is pending, queued or
        // needs_operator, it can be canceled.
        Event::OperatorCancel => match from {
            Queued | Pending | Processing | NeedsOperator => Ok(Outcome::Move(Canceled)),
            Submitting | Completed | Failed | Canceled => illegal,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_events() -> Vec<Event> {
        let mut v = vec![
            Event::StillRunning(RemoteProgress::Queued),
            Event::StillRunning(RemoteProgress::Running),
            Event::OutputsStored,
            Event::ProviderFailed,
            Event::ProviderCanceled,
            Event::OutputsGone,
            Event::Expired,
            Event::SubmitIntent,
            Event::Submitted,
            Event::SubmitRejected,
            Event::SubmitUnknowable,
            Event::OperatorResubmit,
            Event::OperatorFail,
            Event::OperatorCancel,
            Event::RowRejected,
        ];
        for (a, m) in [(1, 3), (2, 3), (3, 3), (4, 3)] {
            v.push(Event::Transient {
                attempts: a,
                max_attempts: m,
            });
            v.push(Event::SubmitNotAccepted {
                attempts: a,
                max_attempts: m,
            });
        }
        v
    }

    /// The whole table, written out by hand so that a change to `transition`
    /// must be made twice, deliberately.
    fn expected(from: JobStatus, e: Event) -> Option<Outcome> {
        let polling = matches!(from, Queued | Pending | Processing);
        match e {
            Event::StillRunning(RemoteProgress::Queued) if polling => {
                Some(Outcome::Snooze(Pending))
            }
            Event::StillRunning(RemoteProgress::Running) if polling => {
                Some(Outcome::Snooze(Processing))
            }
            Event::OutputsStored if polling => Some(Outcome::Move(Completed)),
            Event::ProviderFailed | Event::OutputsGone | Event::Expired if polling => {
                Some(Outcome::Move(Failed))
            }
            Event::ProviderCanceled if polling => Some(Outcome::Move(Canceled)),
            Event::Transient {
                attempts,
                max_attempts,
            } if polling => Some(if attempts >= max_attempts {
                Outcome::Move(Failed)
            } else {
                Outcome::Retry(from)
            }),
            Event::Transient {
                attempts,
                max_attempts,
            } if from == Submitting => Some(if attempts >= max_attempts {
                Outcome::Move(NeedsOperator)
            } else {
                Outcome::Retry(Submitting)
            }),
            Event::SubmitIntent if from == Queued => Some(Outcome::Move(Submitting)),
            Event::Submitted if from == Submitting => Some(Outcome::Move(Pending)),
            Event::SubmitNotAccepted {
                attempts,
                max_attempts,
            } if from == Submitting => Some(Outcome::Move(if attempts >= max_attempts {
                Failed
            } else {
                Queued
            })),
            Event::SubmitRejected if from == Submitting => Some(Outcome::Move(Failed)),
            Event::SubmitUnknowable if from == Submitting => Some(Outcome::Move(NeedsOperator)),
            Event::OperatorResubmit if from == NeedsOperator => Some(Outcome::Move(Queued)),
            Event::OperatorFail if from == NeedsOperator => Some(Outcome::Move(Failed)),
            Event::RowRejected if polling || from == Submitting => {
                Some(Outcome::Move(NeedsOperator))
            }
            Event::OperatorCancel if polling || from == NeedsOperator => {
                Some(Outcome::Move(Canceled))
            }
            _ => None,
        }
    }

    #[test]
    fn transition_table_is_exactly_as_specified() {
        let mut legal = 0;
        for from in JobStatus::ALL {
            for e in all_events() {
                let got = transition(from, e);
                match expected(from, e) {
                    Some(out) => {
                        legal += 1;
                        assert_eq!(got, Ok(out), "{from} + {e:?}");
                    }
                    None => assert_eq!(
                        got,
                        Err(TransitionError {
                            from,
                            event: e.name()
                        }),
                        "{from} + {e:?} must be illegal"
                    ),
                }
            }
        }
        assert!(legal > 20, "the table has legal moves: {legal}");
    }

    #[test]
    fn final_statuses_never_move() {
        for from in [Completed, Failed, Canceled] {
            for e in all_events() {
                assert!(transition(from, e).is_err(), "{from} + {e:?}");
            }
        }
    }

    #[test]
    fn every_completion_path_goes_through_outputs_stored() {
        for from in JobStatus::ALL {
            for e in all_events() {
                if let Ok(out) = transition(from, e)
                    && out.status() == Completed
                {
                    assert_eq!(e, Event::OutputsStored);
                }
            }
        }
    }

    #[test]
    fn error_message_names_both_sides() {
        let err = transition(Completed, Event::OutputsStored).unwrap_err();
        assert_eq!(
            err.to_string(),
            "illegal transition: event outputs_stored on a job in status completed"
        );
    }
}
