//! What the daemon tells this crate about one `[providers.<name>]` table, and
//! [`build_provider`], which turns it into a ready adapter.
//!
//! The daemon parses TOML and reads the API key from the environment; this
//! struct is the already-resolved result, so this crate knows nothing about
//! files or environment variables.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clawcut_core::Provider;

use crate::error::ProvidersError;
use crate::http::ApiClient;
use crate::{openai, replicate};

/// The API dialect a provider speaks. New kinds are added here and in
/// [`build_provider`]; the compiler then points at every place to extend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    OpenAi,
    Replicate,
}

impl ProviderKind {
    /// Every kind this build can talk to, for messages and `check-config`.
    pub const ALL: &'static [ProviderKind] = &[ProviderKind::OpenAi, ProviderKind::Replicate];

    /// The spelling used in the config file (`kind = "openai"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Replicate => "replicate",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const SUPPORTED_KINDS: &str = "openai, replicate";

impl FromStr for ProviderKind {
    type Err = ProvidersError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "openai" => Ok(ProviderKind::OpenAi),
            "replicate" => Ok(ProviderKind::Replicate),
            other => Err(ProvidersError::UnsupportedKind {
                kind: other.to_owned(),
                supported: SUPPORTED_KINDS,
            }),
        }
    }
}

/// One configured provider, resolved by the daemon.
#[derive(Clone)]
pub struct ProviderConfig {
    /// The table name, which is also `ai_jobs.provider`.
    pub name: String,
    pub kind: ProviderKind,
    /// Scheme, host and optional path prefix; `/v1/...` is appended to it.
    pub base_url: url::Url,
    /// The secret itself, already read from the environment. `Debug` redacts it.
    pub api_key: String,
    /// Whole-request timeout for API calls (not for output downloads).
    pub timeout: Duration,
    /// Requests to this provider in flight at once, across all jobs.
    pub max_in_flight: usize,
    /// Hosts outputs may be downloaded from besides `base_url`'s own host.
    /// `*.example.com` allows any subdomain of `example.com`.
    pub allowed_download_hosts: Vec<String>,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &"[redacted]")
            .field("timeout", &self.timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("allowed_download_hosts", &self.allowed_download_hosts)
            .finish()
    }
}

impl ProviderConfig {
    /// Checks what the adapters rely on, so a bad table stops the daemon at
    /// startup rather than failing every poll.
    pub fn validate(&self) -> Result<(), ProvidersError> {
        let invalid = |field, reason: &str| ProvidersError::InvalidConfig {
            provider: self.name.clone(),
            field,
            reason: reason.to_owned(),
        };
        if !matches!(self.base_url.scheme(), "http" | "https") {
            return Err(invalid("base_url", "scheme must be http or https"));
        }
        if self.base_url.host_str().is_none() || self.base_url.cannot_be_a_base() {
            return Err(invalid("base_url", "must be an absolute url with a host"));
        }
        if self.base_url.query().is_some() || self.base_url.fragment().is_some() {
            return Err(invalid("base_url", "must not have a query or fragment"));
        }
        if self.max_in_flight == 0 {
            return Err(invalid("max_in_flight", "must be at least 1"));
        }
        if self.timeout.is_zero() {
            return Err(invalid("timeout", "must be greater than zero"));
        }
        if self.api_key.trim().is_empty() {
            return Err(invalid("api_key", "is empty"));
        }
        if reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.api_key)).is_err() {
            // The key's value must not appear in the message.
            return Err(invalid(
                "api_key",
                "contains characters not allowed in a header",
            ));
        }
        if let Some(bad) = self
            .allowed_download_hosts
            .iter()
            .find(|h| h.trim().is_empty() || h.contains(['/', ':', ' ']))
        {
            return Err(invalid(
                "allowed_download_hosts",
                &format!("{bad:?} is not a bare host name"),
            ));
        }
        Ok(())
    }
}

/// Builds the adapter for `cfg.kind`, with its own HTTP client and in-flight
/// cap.
pub fn build_provider(cfg: &ProviderConfig) -> Result<Arc<dyn Provider>, ProvidersError> {
    cfg.validate()?;
    let api = ApiClient::new(cfg)?;
    Ok(match cfg.kind {
        ProviderKind::OpenAi => Arc::new(openai::OpenAi::new(cfg.name.clone(), api)),
        ProviderKind::Replicate => Arc::new(replicate::Replicate::new(cfg.name.clone(), api)),
    })
}
