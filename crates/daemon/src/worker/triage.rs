//! Rows that make no sense to the daemon are set aside on their own: a
//! column the store could not decode, an id outside the SPEC's alphabet, a
//! request that is not JSON, a provider the config does not name. Each one
//! becomes `needs_operator` with a `last_error` naming the column and the
//! problem, and an audit event, in one fenced write. It never holds up the
//! rows claimed with it (each row is its own slot) and it is not claimed
//! again (`needs_operator` is not claimable), so it cannot loop.

use clawcut_core::{Job, Lease, RowProblem};
use clawcut_store::{SetAside, UnreadableRow};
use tracing::warn;

use super::{ProviderHandle, Worker};
use crate::report::{JobOutcome, JobReport, error_chain};

/// A problem with one column, owned (the store's unreadable rows name
/// columns at run time).
pub struct Problem {
    pub column: String,
    pub problem: String,
}

impl From<RowProblem> for Problem {
    fn from(p: RowProblem) -> Self {
        Problem {
            column: p.column.to_owned(),
            problem: p.problem,
        }
    }
}

impl Worker {
    /// The row's provider handle, or why the row cannot be worked.
    pub(super) fn row_problem(&self, job: &Job) -> Result<&ProviderHandle, Problem> {
        job.check_row().map_err(Problem::from)?;
        self.providers.get(&job.provider).ok_or_else(|| Problem {
            column: "provider".into(),
            problem: format!(
                "{:?} is not a provider in the config (configured: {})",
                job.provider.chars().take(64).collect::<String>(),
                self.providers
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    pub(super) async fn set_aside(&self, job: &Job, lease: &Lease, p: Problem) -> JobReport {
        let report = self.write_set_aside(lease, &p).await;
        JobReport {
            job_id: job.id.clone(),
            provider: job.provider.clone(),
            from: job.status.to_string(),
            to: if report.0 == JobOutcome::SetAside {
                "needs_operator".into()
            } else {
                job.status.to_string()
            },
            action: report.0,
            detail: report.1,
        }
    }

    pub(super) async fn set_aside_unreadable(&self, row: UnreadableRow) -> JobReport {
        let p = Problem {
            column: row.column.clone(),
            problem: row.problem.clone(),
        };
        let (action, detail) = self.write_set_aside(&row.lease, &p).await;
        let from = row.status.clone().unwrap_or_else(|| "?".into());
        JobReport {
            job_id: row.lease.job_id.clone(),
            provider: String::new(),
            to: if action == JobOutcome::SetAside {
                "needs_operator".into()
            } else {
                from.clone()
            },
            from,
            action,
            detail,
        }
    }

    async fn write_set_aside(&self, lease: &Lease, p: &Problem) -> (JobOutcome, String) {
        let detail = format!("row rejected: column `{}`: {}", p.column, p.problem);
        let res = self
            .store
            .set_aside(
                lease,
                &SetAside {
                    now: self.now_ms(),
                    column: p.column.clone(),
                    problem: p.problem.clone(),
                },
            )
            .await;
        let outcome = match res {
            Ok(()) => {
                warn!(job = %lease.job_id, column = %p.column, problem = %p.problem, "row set aside for an operator (needs_operator)");
                JobOutcome::SetAside
            }
            Err(e) if e.is_lease_lost() => JobOutcome::LeaseLost,
            Err(e) => {
                warn!(job = %lease.job_id, error = %error_chain(&e), "could not set the row aside; its lease expires on its own");
                return (JobOutcome::Error, error_chain(&e));
            }
        };
        self.metrics.job(outcome);
        (outcome, detail)
    }
}
