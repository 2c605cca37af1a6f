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
    /// Connection refused, reset, DNS.
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
            ProviderErrorKind::Network
            | ProviderErrorKind::Timeout
            | ProviderErrorKind::Server(_)
            | ProviderErrorKind::RateLimited
            | ProviderErrorKind::Malformed
            | ProviderErrorKind::NotFound
            | ProviderErrorKind::Client(_) => true,
            ProviderErrorKind::Unauthorized(_) => false,
        }
    }

    /// A stable label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            ProviderErrorKind::Network => "network",
            ProviderErrorKind::Timeout => "timeout",
            ProviderErrorKind::Server(_) => "server_error",
            ProviderErrorKind::RateLimited => "rate_limited",
            ProviderErrorKind::Malformed => "malformed",
            ProviderErrorKind::NotFound => "not_found",
            ProviderErrorKind::Unauthorized(_) => "unauthorized",
            ProviderErrorKind::Client(_) => "client_error",
        }
    }
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

/// What an adapter can do about a job found in `submitting` after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitRecovery {
    /// The provider can look a job up by our own reference (Kling's
    /// `external_task_id`).
    LookupByReference,
    /// Nothing: the outcome is unknowable and goes to an operator.
    Unknowable,
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
    fn only_auth_errors_spare_the_attempt_budget() {
        assert!(!ProviderErrorKind::Unauthorized(401).counts_as_attempt());
        assert!(ProviderErrorKind::RateLimited.counts_as_attempt());
        assert!(ProviderErrorKind::Server(503).counts_as_attempt());
    }
}
