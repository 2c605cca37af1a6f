//! The provider trait every HTTP adapter implements, and what it answers.
//!
//! Adapters translate one provider's JSON into [`PollOutcome`] and its errors
//! into [`ProviderError`]; the daemon never looks at provider JSON itself.

use std::fmt;
use std::time::Duration;

/// How far along a still-running job is at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteProgress {
    Queued,
    Running,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Video,
    Thumbnail,
}

/// Where to fetch one output and how. `headers` may carry the API key, so
/// `Debug` never prints their values.
#[derive(Clone, PartialEq, Eq)]
pub struct DownloadSpec {
    pub kind: OutputKind,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// File extension for the final path, without the dot (`mp4`, `webp`).
    pub extension: String,
}

impl fmt::Debug for DownloadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DownloadSpec")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("extension", &self.extension)
            .finish()
    }
}

/// What one poll learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// Still queued or running; `poll_after` is the provider's hint (e.g.
    /// OpenAI's `openai-poll-after-ms`), used as a floor for the next poll.
    Running {
        progress: RemoteProgress,
        poll_after: Option<Duration>,
    },
    /// Done; fetch these.
    Succeeded {
        video: DownloadSpec,
        thumbnail: Option<DownloadSpec>,
    },
    Failed {
        reason: String,
    },
    Canceled {
        reason: String,
    },
    /// Done, but the outputs were deleted or expired at the provider.
    OutputsGone {
        reason: String,
    },
}

/// Why a provider call failed, classified for the retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderErrorKind {
    /// Could not connect at all (refused, DNS): nothing was sent.
    Connect,
    /// The connection failed after the request may have been sent (reset,
    /// broken pipe).
    Network,
    Timeout,
    /// 5xx.
    Server(u16),
    /// 429.
    RateLimited,
    /// A 2xx whose body is not what the provider documents.
    Malformed,
    /// The provider does not know the job (404).
    NotFound,
    /// 401/403: our credentials, not the job, are wrong.
    Unauthorized(u16),
    /// The account cannot be served, whatever the job: no credit, quota or
    /// resource pack used up, an IP allow-list, no access to the model
    /// (Replicate 402, OpenAI `insufficient_quota`, Kling 1100–1103 and
    /// 1304). The HTTP status is kept for the log.
    Account(u16),
    /// Any other 4xx.
    Client(u16),
}

impl ProviderErrorKind {
    /// Whether this error spends one of the job's `max_attempts`. Auth
    /// failures do not: a wrong key is the operator's fault, and burning every
    /// job's attempts on it would fail jobs the provider finished. They still
    /// back off, and `max_age` ends them eventually.
    pub fn counts_as_attempt(self) -> bool {
        match self {
            ProviderErrorKind::Connect
            | ProviderErrorKind::Network
            | ProviderErrorKind::Timeout
            | ProviderErrorKind::Server(_)
            | ProviderErrorKind::RateLimited
            | ProviderErrorKind::Malformed
            | ProviderErrorKind::NotFound
            | ProviderErrorKind::Client(_) => true,
            ProviderErrorKind::Unauthorized(_) | ProviderErrorKind::Account(_) => false,
        }
    }

    /// Whether this error is about the provider or the account rather than
    /// the one job that met it (SPEC, "Provider health").
    pub fn scope(self) -> FaultScope {
        match self {
            ProviderErrorKind::Unauthorized(_) | ProviderErrorKind::Account(_) => {
                FaultScope::Account
            }
            ProviderErrorKind::Connect
            | ProviderErrorKind::Network
            | ProviderErrorKind::Timeout
            | ProviderErrorKind::Server(_) => FaultScope::Outage,
            // A rate limit paces requests (it sets the next poll); a
            // malformed body, a 404 or a 4xx belongs to one job.
            ProviderErrorKind::RateLimited
            | ProviderErrorKind::Malformed
            | ProviderErrorKind::NotFound
            | ProviderErrorKind::Client(_) => FaultScope::Job,
        }
    }

    /// A stable label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            ProviderErrorKind::Connect => "connect",
            ProviderErrorKind::Network => "network",
            ProviderErrorKind::Timeout => "timeout",
            ProviderErrorKind::Server(_) => "server_error",
            ProviderErrorKind::RateLimited => "rate_limited",
            ProviderErrorKind::Malformed => "malformed",
            ProviderErrorKind::NotFound => "not_found",
            ProviderErrorKind::Unauthorized(_) => "unauthorized",
            ProviderErrorKind::Account(_) => "account",
            ProviderErrorKind::Client(_) => "client_error",
        }
    }
}

/// Who an error is about, for the provider-health decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultScope {
    /// The account (a refused key, no credit): the provider pauses at once.
    Account,
    /// The provider may be down for everyone: consecutive ones across
    /// different jobs pause it.
    Outage,
    /// This job only: nothing is paused.
    Job,
}

/// A failed provider call. Every provider error is retried with backoff; the
/// message never contains credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ProviderError {
    pub kind: ProviderErrorKind,
    /// The provider's `Retry-After` (or equivalent), a floor for the retry.
    pub retry_after: Option<Duration>,
    pub message: String,
}

impl ProviderError {
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            retry_after: None,
            message: message.into(),
        }
    }
}

/// What a failed create call means for the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitFailure {
    /// The provider certainly did not create the job (nothing sent, 429,
    /// 401/403): try again later.
    NotCreated,
    /// The provider refused the request for good (4xx): the job fails.
    Rejected,
    /// The provider may have created the job (timeout, reset, 5xx, an
    /// unreadable 2xx): only a lookup or an operator can tell.
    Unknown,
}

impl ProviderErrorKind {
    /// Classify a failed create call. Conservative: anything that may have
    /// reached the provider's job queue is `Unknown`, never retried blindly.
    pub fn submit_failure(self) -> SubmitFailure {
        match self {
            ProviderErrorKind::Connect
            | ProviderErrorKind::RateLimited
            | ProviderErrorKind::Unauthorized(_)
            | ProviderErrorKind::Account(_) => SubmitFailure::NotCreated,
            ProviderErrorKind::Client(_) | ProviderErrorKind::NotFound => SubmitFailure::Rejected,
            ProviderErrorKind::Network
            | ProviderErrorKind::Timeout
            | ProviderErrorKind::Server(_)
            | ProviderErrorKind::Malformed => SubmitFailure::Unknown,
        }
    }
}

/// What the daemon asks a provider to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitRequest {
    /// `ai_jobs.id`.
    pub job_id: String,
    /// `ai_jobs.request`: JSON text with `prompt`, `model`, `seconds`,
    /// `size` and provider-specific extras.
    pub request: String,
    /// Fresh per submission attempt, committed before the call. Sent to
    /// providers that accept one (as an idempotency header or as their own
    /// reference, e.g. Kling's `external_task_id`).
    pub idempotency_key: String,
    /// Where the provider should send its webhook, when webhooks are
    /// configured for it.
    pub webhook_url: Option<String>,
}

/// How a provider authenticates its webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookAuth {
    /// The body carries a valid signature made with the configured secret.
    Valid,
    /// A signature scheme applies and this request fails it.
    Invalid,
    /// The provider signs nothing: the daemon checks a secret in the URL.
    Unsigned,
}

/// What a lookup by our own reference found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The provider has the job: its id.
    Found(String),
    /// The provider certainly never created it: safe to submit again.
    Absent,
}

/// What an adapter can do about a job found in `submitting` after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitRecovery {
    /// The provider can look a job up by our own reference (Kling's
    /// `external_task_id`).
    LookupByReference,
    /// Nothing: the outcome is unknowable and goes to an operator.
    Unknowable,
}

/// What a provider said to a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelAnswer {
    /// The provider accepted the request to stop the job (it may still
    /// finish it; the daemon's own cancel does not depend on it).
    Requested,
    /// This adapter has no cancel call: only the local cancel happens.
    NotSupported,
}

/// One provider, as configured under `[providers.<name>]`.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The provider's name (`ai_jobs.provider`).
    fn name(&self) -> &str;

    /// Ask the provider how the job `provider_job_id` is doing.
    async fn poll(&self, provider_job_id: &str) -> Result<PollOutcome, ProviderError>;

    /// What this provider allows after a crash mid-submit.
    fn submit_recovery(&self) -> SubmitRecovery {
        SubmitRecovery::Unknowable
    }

    /// Create the job at the provider; returns the provider's job id (the
    /// value stored in `ai_jobs.provider_job_id`, which `poll` takes back).
    async fn submit(&self, req: &SubmitRequest) -> Result<String, ProviderError>;

    /// Look a submission up by our own reference (`req.idempotency_key`).
    /// Only meaningful when `submit_recovery()` is `LookupByReference`.
    async fn lookup(&self, req: &SubmitRequest) -> Result<Lookup, ProviderError> {
        let _ = req;
        Err(ProviderError::new(
            ProviderErrorKind::Client(501),
            format!(
                "provider {} cannot look submissions up by reference",
                self.name()
            ),
        ))
    }

    /// Ask the provider to stop the job `provider_job_id` (an operator's
    /// `cancel`). Adapters opt in: by default there is no such call.
    async fn cancel(&self, provider_job_id: &str) -> Result<CancelAnswer, ProviderError> {
        let _ = provider_job_id;
        Ok(CancelAnswer::NotSupported)
    }

    /// From a webhook body this provider sent, the provider job id it is
    /// about (`None` when the body does not name one). Webhooks are hints:
    /// the daemon polls to learn the truth.
    fn webhook_job_id(&self, body: &[u8]) -> Option<String> {
        let _ = body;
        None
    }

    /// Check a webhook's signature with the configured secret. `headers`
    /// are lowercase names. `now_unix` lets schemes with timestamps refuse
    /// replays.
    fn verify_webhook(
        &self,
        headers: &[(String, String)],
        body: &[u8],
        secret: &str,
        now_unix: i64,
    ) -> WebhookAuth {
        let _ = (headers, body, secret, now_unix);
        WebhookAuth::Unsigned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_download_spec_hides_header_values() {
        let spec = DownloadSpec {
            kind: OutputKind::Video,
            url: "https://api.example/v1/videos/1/content".into(),
            headers: vec![("authorization".into(), "Bearer sk-secret".into())],
            extension: "mp4".into(),
        };
        let s = format!("{spec:?}");
        assert!(s.contains("authorization"));
        assert!(!s.contains("sk-secret"));
    }

    #[test]
    fn create_failures_are_classified_conservatively() {
        use ProviderErrorKind::*;
        for k in [
            Connect,
            RateLimited,
            Unauthorized(401),
            Unauthorized(403),
            Account(402),
        ] {
            assert_eq!(k.submit_failure(), SubmitFailure::NotCreated, "{k:?}");
        }
        for k in [Client(400), Client(422), NotFound] {
            assert_eq!(k.submit_failure(), SubmitFailure::Rejected, "{k:?}");
        }
        for k in [Network, Timeout, Server(500), Server(503), Malformed] {
            assert_eq!(k.submit_failure(), SubmitFailure::Unknown, "{k:?}");
        }
    }

    #[test]
    fn only_account_errors_spare_the_attempt_budget() {
        assert!(!ProviderErrorKind::Unauthorized(401).counts_as_attempt());
        assert!(!ProviderErrorKind::Account(402).counts_as_attempt());
        assert!(ProviderErrorKind::RateLimited.counts_as_attempt());
        assert!(ProviderErrorKind::Server(503).counts_as_attempt());
    }

    #[test]
    fn fault_scopes() {
        use ProviderErrorKind::*;
        for k in [
            Unauthorized(401),
            Unauthorized(403),
            Account(402),
            Account(429),
        ] {
            assert_eq!(k.scope(), FaultScope::Account, "{k:?}");
        }
        for k in [Connect, Network, Timeout, Server(500), Server(503)] {
            assert_eq!(k.scope(), FaultScope::Outage, "{k:?}");
        }
        for k in [RateLimited, Malformed, NotFound, Client(400), Client(422)] {
            assert_eq!(k.scope(), FaultScope::Job, "{k:?}");
        }
    }
}
