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
use crate::http::{ApiClient, Auth};
use crate::sign::KlingJwt;
use crate::{fal, kling, luma, openai, replicate, runway, veo};

/// The API dialect a provider speaks. New kinds are added here and in
/// [`build_provider`]; the compiler then points at every place to extend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    OpenAi,
    Replicate,
    Runway,
    Luma,
    Fal,
    Kling,
    Veo,
}

impl ProviderKind {
    /// Every kind this build can talk to, for messages and `check-config`.
    pub const ALL: &'static [ProviderKind] = &[
        ProviderKind::OpenAi,
        ProviderKind::Replicate,
        ProviderKind::Runway,
        ProviderKind::Luma,
        ProviderKind::Fal,
        ProviderKind::Kling,
        ProviderKind::Veo,
    ];

    /// The spelling used in the config file (`kind = "openai"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Replicate => "replicate",
            ProviderKind::Runway => "runway",
            ProviderKind::Luma => "luma",
            ProviderKind::Fal => "fal",
            ProviderKind::Kling => "kling",
            ProviderKind::Veo => "veo",
        }
    }

    /// Whether `api_secret` is required (Kling signs its tokens with it).
    pub fn needs_api_secret(self) -> bool {
        self == ProviderKind::Kling
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const SUPPORTED_KINDS: &str = "openai, replicate, runway, luma, fal, kling, veo";

impl FromStr for ProviderKind {
    type Err = ProvidersError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match ProviderKind::ALL.iter().find(|k| k.as_str() == s) {
            Some(kind) => Ok(*kind),
            None => Err(ProvidersError::UnsupportedKind {
                kind: s.to_owned(),
                supported: SUPPORTED_KINDS,
            }),
        }
    }
}

/// The most requests in flight [`ProviderConfig::max_in_flight`] may ask for
/// (the daemon's config allows the same range, `1..=10000`): a semaphore
/// that large is already far more than any provider tolerates, and one past
/// tokio's own maximum would panic.
pub const MAX_IN_FLIGHT: usize = 10_000;

/// One configured provider, resolved by the daemon.
#[derive(Clone)]
pub struct ProviderConfig {
    /// The table name, which is also `ai_jobs.provider`.
    pub name: String,
    pub kind: ProviderKind,
    /// Scheme, host and optional path prefix; `/v1/...` is appended to it.
    pub base_url: url::Url,
    /// The secret itself, already read from the environment. `Debug` redacts
    /// it. For Kling, the access key.
    pub api_key: String,
    /// A second secret, for kinds that need one ([`ProviderKind::needs_api_secret`]):
    /// Kling's secret key, which signs its JWTs. `None` for the others.
    /// `Debug` redacts it.
    pub api_secret: Option<String>,
    /// Whole-request timeout for API calls (not for output downloads).
    pub timeout: Duration,
    /// Requests to this provider in flight at once, across all jobs.
    pub max_in_flight: usize,
    /// Requests to this provider per minute, across all jobs of this process
    /// (polls and creates alike); `None` is unlimited. Callers wait for a
    /// slot, never fail: see `rate` for the burst.
    pub requests_per_minute: Option<u32>,
    /// Hosts outputs may be downloaded from besides `base_url`'s own origin.
    /// An exact host name, or `*.example.com` for any subdomain of
    /// `example.com` at any depth, but not `example.com` itself (as a TLS
    /// wildcard would not): a provider that serves from the bare host too
    /// (Replicate's `replicate.delivery`) lists both. A wildcard needs two
    /// labels after `*.`, so `*.com` is refused. `host:port` allows another
    /// port than the scheme's default (443, 80), the only one a bare host
    /// allows. Downloads from these hosts never get the API key.
    pub allowed_download_hosts: Vec<String>,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &"[redacted]")
            .field(
                "api_secret",
                &self.api_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("timeout", &self.timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("requests_per_minute", &self.requests_per_minute)
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
        if self.max_in_flight > MAX_IN_FLIGHT {
            return Err(invalid(
                "max_in_flight",
                &format!("must be at most {MAX_IN_FLIGHT}"),
            ));
        }
        if self.requests_per_minute == Some(0) {
            return Err(invalid(
                "requests_per_minute",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        if self.kind.needs_api_secret() {
            match &self.api_secret {
                None => return Err(invalid("api_secret", "is required for this kind")),
                Some(s) if s.trim().is_empty() => return Err(invalid("api_secret", "is empty")),
                _ => {}
            }
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
        // A host name, optionally with `:port` (a bare IPv6 address goes
        // in brackets: `[::1]:8080`).
        let host_entry = |h: &str| {
            let (host, port) = match h.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
                    (host, Some(port))
                }
                _ => (h, None),
            };
            !host.is_empty()
                && !host.contains(['/', ' ', '?', '#', '@'])
                && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')))
                && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
        };
        if let Some(bad) = self
            .allowed_download_hosts
            .iter()
            .find(|h| h.trim().is_empty() || !host_entry(h))
        {
            return Err(invalid(
                "allowed_download_hosts",
                &format!("{bad:?} is not a host name or host:port"),
            ));
        }
        if let Some(bad) = self
            .allowed_download_hosts
            .iter()
            .find(|h| !host_pattern_ok(h))
        {
            return Err(invalid(
                "allowed_download_hosts",
                &format!(
                    "{bad:?}: a wildcard is only a leading \"*.\" followed by at least two labels (\"*.example.com\")"
                ),
            ));
        }
        Ok(())
    }
}

/// An exact host, or `*.` and a parent of at least two labels: anything
/// broader (`*`, `*.com`) or a `*` elsewhere (`cdn*.example.com`, which
/// would never match) is a mistake worth stopping for.
fn host_pattern_ok(pattern: &str) -> bool {
    let pattern = pattern.trim().trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(parent) => {
            !parent.contains('*')
                && parent.split('.').count() >= 2
                && parent.split('.').all(|label| !label.is_empty())
        }
        None => !pattern.contains('*'),
    }
}

/// Builds the adapter for `cfg.kind`, with its own HTTP client, rate limiter
/// and in-flight cap.
pub fn build_provider(cfg: &ProviderConfig) -> Result<Arc<dyn Provider>, ProvidersError> {
    cfg.validate()?;
    let auth = match cfg.kind {
        ProviderKind::OpenAi
        | ProviderKind::Replicate
        | ProviderKind::Runway
        | ProviderKind::Luma => Auth::Bearer,
        ProviderKind::Fal => Auth::KeyPrefix,
        ProviderKind::Veo => Auth::GoogApiKey,
        ProviderKind::Kling => Auth::KlingJwt(KlingJwt::new(
            cfg.api_key.clone(),
            cfg.api_secret.clone().unwrap_or_default(),
        )),
    };
    let api = ApiClient::new(cfg, auth)?;
    let name = cfg.name.clone();
    Ok(match cfg.kind {
        ProviderKind::OpenAi => Arc::new(openai::OpenAi::new(name, api)),
        ProviderKind::Replicate => Arc::new(replicate::Replicate::new(name, api)),
        ProviderKind::Runway => Arc::new(runway::Runway::new(name, api)),
        ProviderKind::Luma => Arc::new(luma::Luma::new(name, api)),
        ProviderKind::Fal => Arc::new(fal::Fal::new(name, api)),
        ProviderKind::Kling => Arc::new(kling::Kling::new(name, api)),
        ProviderKind::Veo => Arc::new(veo::Veo::new(name, api)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ProviderConfig {
        ProviderConfig {
            name: "openai".into(),
            kind: ProviderKind::OpenAi,
            base_url: url::Url::parse("https://api.openai.com").unwrap(),
            api_key: "sk-test".into(),
            api_secret: None,
            timeout: Duration::from_secs(30),
            max_in_flight: 4,
            requests_per_minute: None,
            allowed_download_hosts: Vec::new(),
        }
    }

    #[test]
    fn out_of_range_values_are_refused_or_survived_never_a_panic() {
        for n in [0, MAX_IN_FLIGHT + 1, 9_223_372_036_854_775_807, usize::MAX] {
            let c = ProviderConfig {
                max_in_flight: n,
                ..cfg()
            };
            let e = build_provider(&c).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains("max_in_flight")),
                "{n}: {e:?}"
            );
        }
        let c = ProviderConfig {
            max_in_flight: MAX_IN_FLIGHT,
            // Huge but legal for this crate: timers saturate.
            timeout: Duration::MAX,
            requests_per_minute: Some(u32::MAX),
            ..cfg()
        };
        assert!(build_provider(&c).is_ok());
    }

    #[test]
    fn wildcard_hosts_are_leading_and_not_too_broad() {
        for good in [
            "replicate.delivery",
            "*.replicate.delivery",
            "*.cdn.example.com",
            "*.fal.media.",
        ] {
            let c = ProviderConfig {
                allowed_download_hosts: vec![good.into()],
                ..cfg()
            };
            assert!(c.validate().is_ok(), "{good}");
        }
        for bad in [
            "*",
            "*.",
            "*.com",
            "cdn*.example.com",
            "*.*.example.com",
            "*..x.y",
        ] {
            let c = ProviderConfig {
                allowed_download_hosts: vec![bad.into()],
                ..cfg()
            };
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("allowed_download_hosts"), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn a_huge_timeout_is_a_long_wait_not_a_panic() {
        // Nothing listens on port 1: the call fails at once, classified.
        let c = ProviderConfig {
            base_url: url::Url::parse("http://127.0.0.1:1").unwrap(),
            timeout: Duration::MAX,
            ..cfg()
        };
        let p = build_provider(&c).unwrap();
        let e = p.poll("video_1").await.unwrap_err();
        assert_eq!(e.kind, clawcut_core::ProviderErrorKind::Connect, "{e}");
    }
}
