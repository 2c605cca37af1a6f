//! An operator's cancel, in the order both `clawcut-worker cancel` and
//! `POST /v1/jobs/{id}/cancel` follow: read the job; when it has a provider
//! job id and its provider is configured, ask the provider to cancel (an
//! error or no such call is logged and recorded, never a reason to keep the
//! job running); then [`Store::cancel`], which bumps the fencing token so a
//! worker mid-download can never complete the job.

use std::sync::Arc;

use clawcut_core::{CancelAnswer, Job, JobStatus, Millis, Provider};
use clawcut_store::{Canceled, ProviderCancel, Store, StoreError};
use serde_json::json;
use tracing::{info, warn};

/// What an operator's cancel did.
#[derive(Debug, Clone)]
pub struct CancelReport {
    pub job_id: String,
    pub canceled: Canceled,
    pub provider_cancel: ProviderCancel,
}

impl CancelReport {
    pub fn to_json(&self) -> serde_json::Value {
        let error = match &self.provider_cancel {
            ProviderCancel::Failed(m) => Some(m.as_str()),
            _ => None,
        };
        json!({
            "ai_job_id": self.job_id,
            "status": JobStatus::Canceled.as_str(),
            "from_status": self.canceled.from.as_str(),
            "provider": self.canceled.provider,
            "provider_job_id": self.canceled.provider_job_id,
            "provider_cancel": self.provider_cancel.label(),
            "provider_cancel_error": error,
            "last_error": self.canceled.reason,
        })
    }
}

/// Why [`cancel_job`] did nothing.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("job {0} not found")]
    NotFound(String),
    /// Not a video job: the daemon ignores other kinds (SPEC), so it does
    /// not cancel them either.
    #[error("job {job_id} is a {kind:?} job; clawcut-worker handles only video jobs")]
    NotOurs { job_id: String, kind: String },
    /// Final (or in a status the daemon does not know).
    #[error("job {job_id} cannot be canceled: it is already {status}")]
    Final { job_id: String, status: String },
    /// `submitting`: the create call's outcome is not known yet, and a
    /// cancel now could strand a job the provider did create.
    #[error(
        "job {job_id} is being submitted and its outcome at the provider is not known yet; cancel it once it is pending or needs_operator (`clawcut-worker reconcile --job {job_id}` settles it now)"
    )]
    OutcomeUnknown { job_id: String },
    #[error("cancel the job")]
    Store(#[source] StoreError),
}

impl From<StoreError> for CancelError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotCancelable {
                job_id,
                status: None,
            } => CancelError::NotFound(job_id),
            StoreError::NotCancelable {
                job_id,
                status: Some(status),
            } if status == JobStatus::Submitting.as_str() => CancelError::OutcomeUnknown { job_id },
            StoreError::NotCancelable {
                job_id,
                status: Some(status),
            } => CancelError::Final { job_id, status },
            other => CancelError::Store(other),
        }
    }
}

/// Ask the job's provider to stop it, when there is something to ask.
async fn ask_provider(job: &Job, provider: Option<Arc<dyn Provider>>) -> ProviderCancel {
    let Some(pid) = job.provider_job_id.as_deref() else {
        return ProviderCancel::NotAsked;
    };
    let Some(provider) = provider else {
        warn!(job = %job.id, provider = %job.provider, "cancel: provider not configured; canceling locally only");
        return ProviderCancel::NotAsked;
    };
    match provider.cancel(pid).await {
        Ok(CancelAnswer::Requested) => {
            info!(job = %job.id, provider = %job.provider, "cancel: provider accepted the cancel request");
            ProviderCancel::Requested
        }
        Ok(CancelAnswer::NotSupported) => {
            info!(job = %job.id, provider = %job.provider, "cancel: provider has no cancel call; canceling locally only");
            ProviderCancel::NotSupported
        }
        Err(e) => {
            warn!(job = %job.id, provider = %job.provider, error = %e, "cancel: provider cancel failed; canceling locally anyway");
            ProviderCancel::Failed(e.to_string())
        }
    }
}

/// The operator's cancel, in its order: read, provider, store.
pub async fn cancel_job<F>(
    store: &dyn Store,
    provider_of: F,
    job_id: &str,
    operator: &str,
    reason: Option<&str>,
    now: Millis,
) -> Result<CancelReport, CancelError>
where
    F: Fn(&str) -> Option<Arc<dyn Provider>>,
{
    let job = match store.get_job(job_id).await {
        Ok(Some(j)) => j,
        Ok(None) => return Err(CancelError::NotFound(job_id.to_owned())),
        Err(StoreError::CorruptRow { .. }) => {
            // Unreadable here, but the store's cancel reads only the columns
            // it needs: no provider call, the local cancel still happens.
            return finish(
                store,
                job_id,
                operator,
                reason,
                ProviderCancel::NotAsked,
                now,
            )
            .await;
        }
        Err(e) => return Err(CancelError::Store(e)),
    };
    if job.kind != "video" {
        return Err(CancelError::NotOurs {
            job_id: job_id.to_owned(),
            kind: job.kind.chars().take(64).collect(),
        });
    }
    if job.status == JobStatus::Submitting {
        return Err(CancelError::OutcomeUnknown {
            job_id: job_id.to_owned(),
        });
    }
    if job.status.is_final() {
        return Err(CancelError::Final {
            job_id: job_id.to_owned(),
            status: job.status.as_str().to_owned(),
        });
    }
    let provider_cancel = ask_provider(&job, provider_of(&job.provider)).await;
    finish(store, job_id, operator, reason, provider_cancel, now).await
}

async fn finish(
    store: &dyn Store,
    job_id: &str,
    operator: &str,
    reason: Option<&str>,
    provider_cancel: ProviderCancel,
    now: Millis,
) -> Result<CancelReport, CancelError> {
    let canceled = store
        .cancel(job_id, operator, reason, &provider_cancel, now)
        .await?;
    info!(job = %job_id, operator, from = %canceled.from, provider_cancel = provider_cancel.label(), "job canceled by an operator");
    Ok(CancelReport {
        job_id: job_id.to_owned(),
        canceled,
        provider_cancel,
    })
}
