//! The one error type of this crate, for everything that is not a provider
//! answer (those are [`clawcut_core::ProviderError`]): building clients and
//! downloading outputs.
//!
//! Each variant names the operation that failed, so a log line reads as
//! "what we were doing: why". Messages never contain credentials, and URLs in
//! them are stripped of their query string (signed URLs carry tokens there).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProvidersError {
    #[error("build http client")]
    BuildClient(#[source] reqwest::Error),

    #[error("invalid provider config for {provider:?}: {field}: {reason}")]
    InvalidConfig {
        provider: String,
        field: &'static str,
        reason: String,
    },

    #[error("unsupported provider kind {kind:?} (supported: {supported})")]
    UnsupportedKind {
        kind: String,
        supported: &'static str,
    },

    #[error("parse url {url:?}")]
    BadUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },

    #[error("download url has no host: {url}")]
    NoHost { url: String },

    #[error("download host {host:?} is not allowed")]
    HostNotAllowed { host: String },

    #[error("download scheme {scheme:?} is not allowed")]
    SchemeNotAllowed { scheme: String },

    #[error("invalid download header {name:?}")]
    BadHeader { name: String },

    #[error("download output from {url}")]
    DownloadOutput {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("download output from {url}: http status {status}")]
    DownloadStatus {
        url: String,
        status: u16,
        retry_after: Option<Duration>,
    },

    #[error("download output from {url}: redirect without a usable location")]
    BadRedirect { url: String },

    #[error("download output: more than {limit} redirects")]
    TooManyRedirects { limit: usize },

    #[error("download output from {url}: expected {expected} bytes, got {got}")]
    TruncatedOutput {
        url: String,
        expected: u64,
        got: u64,
    },

    #[error("download output from {url}: empty body")]
    EmptyOutput { url: String },

    /// The transfer (requests, redirects and body) outlived its deadline.
    #[error("download output from {url}: not finished within the deadline of {deadline:?}")]
    DownloadDeadline { url: String, deadline: Duration },

    /// Only `bytes` arrived in the last `window`, fewer than the limits ask.
    #[error("download output from {url}: stalled, {bytes} bytes in {window:?}")]
    DownloadStalled {
        url: String,
        bytes: u64,
        window: Duration,
    },

    #[error("output is larger than the limit of {limit} bytes")]
    OutputTooLarge { limit: u64 },

    #[error("write output to {path}")]
    WriteOutput {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ProvidersError {
    /// Whether trying the same download again later may succeed: network
    /// trouble, timeouts (the deadline, a stall), 5xx, 429 and local I/O
    /// errors (a full disk gets freed). Everything else is a decision (limit, policy) or a fact about
    /// the output (gone) that a retry does not change.
    pub fn is_transient(&self) -> bool {
        match self {
            ProvidersError::DownloadOutput { .. }
            | ProvidersError::WriteOutput { .. }
            | ProvidersError::TruncatedOutput { .. }
            | ProvidersError::EmptyOutput { .. }
            | ProvidersError::DownloadDeadline { .. }
            | ProvidersError::DownloadStalled { .. } => true,
            ProvidersError::DownloadStatus { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// Whether the provider says the output no longer exists (404/410 on the
    /// output URL): the job should end as failed with that reason, not retry
    /// forever.
    pub fn is_output_gone(&self) -> bool {
        matches!(
            self,
            ProvidersError::DownloadStatus {
                status: 404 | 410,
                ..
            }
        )
    }

    /// The server's `Retry-After` on a 429/5xx download answer.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProvidersError::DownloadStatus { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
