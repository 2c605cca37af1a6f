//! The TOML config file: every key of the SPEC's contract, with its default,
//! plus a few operational extras (`reconcile.shutdown_grace`, `[log]`).
//!
//! Unknown keys and bad values are refused with the file, the key path and
//! the problem, because a daemon that silently ignores a typo in `max_age`
//! fails jobs nobody expected to fail.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clawcut_core::{BackoffPolicy, EligibilityRules};
use serde::Deserialize;
use serde::de::{self, Deserializer};

pub const DEFAULT_PATH: &str = "/etc/clawcut-worker/config.toml";

/// A config that could not be loaded: names the file, the key and the problem.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: Option<String>,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(
                f,
                "config {}: key `{}`: {}",
                self.file.display(),
                k,
                self.problem
            ),
            None => write!(f, "config {}: {}", self.file.display(), self.problem),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A human duration (`"30s"`, `"5m"`, `"7d"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            de::Error::custom(format!(
                "invalid duration {s:?} ({e}); write e.g. \"30s\", \"5m\", \"24h\""
            ))
        })
    }
}

/// A human size (`"2GiB"`, `"500MB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| Size(b.as_u64()))
            .map_err(|e| {
                de::Error::custom(format!(
                    "invalid size {s:?} ({e}); write e.g. \"2GiB\", \"500MB\""
                ))
            })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub reconcile: ReconcileConfig,
    pub backoff: BackoffConfig,
    pub submit: SubmitConfig,
    pub media: MediaConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub providers: BTreeMap<String, ProviderSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    pub interval: Dur,
    pub on_startup: bool,
    pub batch_size: u32,
    pub concurrency: usize,
    pub min_age: Dur,
    pub max_age: Dur,
    pub lease_ttl: Dur,
    /// How long SIGTERM waits for in-flight jobs before releasing their leases.
    pub shutdown_grace: Dur,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    pub initial: Dur,
    pub max: Dur,
    pub multiplier: f64,
    pub jitter: bool,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmitConfig {
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    pub dir: PathBuf,
    pub max_bytes: Size,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Empty string turns the HTTP server off.
    pub listen: String,
    pub admin_token_env: String,
    /// How providers reach this daemon's `/webhooks/{provider}` (e.g.
    /// `https://worker.example.com`); without it no callback URL is sent
    /// with submissions (webhooks still work if configured at the provider).
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `clawcut=debug,sqlx=warn`); `RUST_LOG` wins.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKindName {
    Openai,
    Replicate,
    Runway,
    Luma,
    Fal,
    Kling,
    Veo,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    pub kind: ProviderKindName,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    #[serde(default = "default_provider_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    #[serde(default)]
    pub allowed_download_hosts: Vec<String>,
    /// A cap on requests per minute to this provider, shared by all jobs.
    pub requests_per_minute: Option<u32>,
    /// Kling's secret key (its `api_key_env` holds the access key).
    pub api_secret_env: Option<String>,
    /// Turns `POST /webhooks/<name>` on: the env var holding the signing
    /// secret (Replicate) or the secret expected in the URL (`?token=`).
    pub webhook_secret_env: Option<String>,
}

fn default_provider_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

fn default_max_in_flight() -> usize {
    4
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite:///var/lib/clawcut-worker/clawcut.db".into(),
        }
    }
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            interval: Dur(Duration::from_secs(30)),
            on_startup: true,
            batch_size: 25,
            concurrency: 8,
            min_age: Dur(Duration::from_secs(120)),
            max_age: Dur(Duration::from_secs(7 * 86400)),
            lease_ttl: Dur(Duration::from_secs(300)),
            shutdown_grace: Dur(Duration::from_secs(30)),
        }
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        let p = BackoffPolicy::default();
        BackoffConfig {
            initial: Dur(p.initial),
            max: Dur(p.max),
            multiplier: p.multiplier,
            jitter: p.jitter,
            max_attempts: p.max_attempts,
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            dir: PathBuf::from("/var/lib/clawcut-worker/media"),
            max_bytes: Size(2 * 1024 * 1024 * 1024),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:3778".into(),
            admin_token_env: "CLAWCUT_WORKER_ADMIN_TOKEN".into(),
            public_url: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

impl ProviderKindName {
    /// The public API every kind talks to unless `base_url` says otherwise.
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKindName::Openai => "https://api.openai.com",
            ProviderKindName::Replicate => "https://api.replicate.com",
            ProviderKindName::Runway => "https://api.dev.runwayml.com",
            ProviderKindName::Luma => "https://api.lumalabs.ai",
            ProviderKindName::Fal => "https://queue.fal.run",
            ProviderKindName::Kling => "https://api-singapore.klingai.com",
            ProviderKindName::Veo => "https://generativelanguage.googleapis.com",
        }
    }
}

impl Config {
    /// Read, parse and validate `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            key: None,
            problem: format!("cannot read the file: {e}"),
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let err = |key: Option<String>, problem: String| ConfigError {
            file: path.to_owned(),
            key,
            problem,
        };
        let value: toml::Table =
            toml::from_str(text).map_err(|e| err(None, format!("not valid TOML: {e}")))?;
        let cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
                let key = e.path().to_string();
                let key = (key != ".").then_some(key);
                err(key, e.into_inner().to_string())
            })?;
        cfg.validate().map_err(|(k, p)| err(Some(k), p))?;
        Ok(cfg)
    }

    /// Semantic checks serde cannot express. Returns (key, problem).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, p: &str| Err((k.to_owned(), p.to_owned()));
        let url = &self.database.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return bad("database.url", "must start with sqlite: or postgres:");
        }
        let r = &self.reconcile;
        if r.interval.0.is_zero() {
            return bad("reconcile.interval", "must be greater than zero");
        }
        if r.batch_size == 0 {
            return bad("reconcile.batch_size", "must be at least 1");
        }
        if r.concurrency == 0 {
            return bad("reconcile.concurrency", "must be at least 1");
        }
        if r.lease_ttl.0 < Duration::from_secs(1) {
            return bad("reconcile.lease_ttl", "must be at least 1s");
        }
        if r.max_age.0 <= r.min_age.0 {
            return bad("reconcile.max_age", "must be longer than reconcile.min_age");
        }
        let b = &self.backoff;
        if b.initial.0.is_zero() {
            return bad("backoff.initial", "must be greater than zero");
        }
        if b.max.0 < b.initial.0 {
            return bad("backoff.max", "must not be shorter than backoff.initial");
        }
        if !(b.multiplier.is_finite() && b.multiplier >= 1.0) {
            return bad("backoff.multiplier", "must be a number >= 1.0");
        }
        if b.max_attempts == 0 {
            return bad("backoff.max_attempts", "must be at least 1");
        }
        if self.media.max_bytes.0 == 0 {
            return bad("media.max_bytes", "must be greater than zero");
        }
        if let Some(u) = &self.http.public_url {
            match url::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") && p.host_str().is_some() => {}
                _ => {
                    return bad(
                        "http.public_url",
                        "must be an http(s) URL like https://worker.example.com",
                    );
                }
            }
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<SocketAddr>().is_err() {
            return bad(
                "http.listen",
                "must be an address like 127.0.0.1:3778 (or \"\" to turn HTTP off)",
            );
        }
        for (name, p) in &self.providers {
            let key = |k: &str| format!("providers.{name}.{k}");
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                || name.is_empty()
            {
                return Err((
                    format!("providers.{name}"),
                    "provider names use [A-Za-z0-9_-]".into(),
                ));
            }
            let base = p.base_url.as_deref().unwrap_or(p.kind.default_base_url());
            match url::Url::parse(base) {
                Ok(u)
                    if (u.scheme() == "https" || u.scheme() == "http")
                        && u.host_str().is_some() => {}
                Ok(_) => {
                    return Err((
                        key("base_url"),
                        format!("{base:?} must be an http(s) URL with a host"),
                    ));
                }
                Err(e) => return Err((key("base_url"), format!("{base:?} is not a URL: {e}"))),
            }
            if p.timeout.0.is_zero() {
                return Err((key("timeout"), "must be greater than zero".into()));
            }
            if p.max_in_flight == 0 {
                return Err((key("max_in_flight"), "must be at least 1".into()));
            }
            if p.requests_per_minute == Some(0) {
                return Err((
                    key("requests_per_minute"),
                    "must be at least 1 (omit it for no cap)".into(),
                ));
            }
            if p.kind == ProviderKindName::Kling && p.api_secret_env.is_none() {
                return Err((key("api_secret_env"), "kling needs the env var holding its secret key (api_key_env holds the access key)".into()));
            }
        }
        Ok(())
    }

    pub fn backoff_policy(&self) -> BackoffPolicy {
        BackoffPolicy {
            initial: self.backoff.initial.0,
            max: self.backoff.max.0,
            multiplier: self.backoff.multiplier,
            jitter: self.backoff.jitter,
            max_attempts: self.backoff.max_attempts,
        }
    }

    pub fn eligibility(&self) -> EligibilityRules {
        EligibilityRules {
            min_age: self.reconcile.min_age.0,
            max_age: self.reconcile.max_age.0,
            submit_enabled: self.submit.enabled,
        }
    }

    /// The env var holding `name`'s API key.
    pub fn api_key_env(name: &str, p: &ProviderSection) -> String {
        p.api_key_env
            .clone()
            .unwrap_or_else(|| format!("{}_API_KEY", name.to_ascii_uppercase().replace('-', "_")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/cw.toml"), text)
    }

    #[test]
    fn empty_file_gives_the_spec_defaults() {
        let c = parse("").unwrap();
        assert_eq!(
            c.database.url,
            "sqlite:///var/lib/clawcut-worker/clawcut.db"
        );
        assert_eq!(c.reconcile.interval.0, Duration::from_secs(30));
        assert!(c.reconcile.on_startup);
        assert_eq!(c.reconcile.batch_size, 25);
        assert_eq!(c.reconcile.concurrency, 8);
        assert_eq!(c.reconcile.min_age.0, Duration::from_secs(120));
        assert_eq!(c.reconcile.max_age.0, Duration::from_secs(7 * 86400));
        assert_eq!(c.reconcile.lease_ttl.0, Duration::from_secs(300));
        assert_eq!(c.backoff.initial.0, Duration::from_secs(5));
        assert_eq!(c.backoff.max.0, Duration::from_secs(900));
        assert_eq!(c.backoff.multiplier, 2.0);
        assert!(c.backoff.jitter);
        assert_eq!(c.backoff.max_attempts, 12);
        assert!(!c.submit.enabled);
        assert_eq!(c.media.dir, PathBuf::from("/var/lib/clawcut-worker/media"));
        assert_eq!(c.media.max_bytes.0, 2 << 30);
        assert_eq!(c.http.listen, "127.0.0.1:3778");
        assert_eq!(c.http.admin_token_env, "CLAWCUT_WORKER_ADMIN_TOKEN");
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let text = include_str!("../../../config/clawcut-worker.toml");
        let c = parse(text).unwrap();
        assert!(c.providers.contains_key("openai"));
    }

    #[test]
    fn unknown_keys_name_file_and_key() {
        let e = parse("[reconcile]\nintervall = \"5s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/cw.toml"), "{e}");
        assert!(e.contains("intervall"), "{e}");
        let e = parse("[providers.openai]\nkind = \"openai\"\napi_key = \"sk-x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("providers.openai") && e.contains("api_key"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = parse("[reconcile]\ninterval = \"soon\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("reconcile.interval"));
        assert!(e.problem.contains("invalid duration"), "{}", e.problem);
        let e = parse("[media]\nmax_bytes = \"lots\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("media.max_bytes"));
        let e = parse("[backoff]\nmultiplier = 0.5\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("backoff.multiplier"));
        let e = parse("[reconcile]\nbatch_size = -1\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("reconcile.batch_size"));
        let e = parse("[providers.k]\nkind = \"kling\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("providers.k.api_secret_env"));
        let e = parse("[providers.x]\nkind = \"sora\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("providers.x.kind"));
        let e = parse("[database]\nurl = \"mysql://x\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("database.url"));
        let e = parse("not toml [").unwrap_err();
        assert!(e.problem.contains("not valid TOML"));
    }

    #[test]
    fn sizes_and_durations_read_as_humans_write_them() {
        let c = parse(
            "[media]\nmax_bytes = \"500MB\"\n[reconcile]\nmax_age = \"24h\"\nmin_age = \"90s\"\n",
        )
        .unwrap();
        assert_eq!(c.media.max_bytes.0, 500_000_000);
        assert_eq!(c.reconcile.max_age.0, Duration::from_secs(86400));
        assert_eq!(c.reconcile.min_age.0, Duration::from_secs(90));
    }
}
