//! The TOML config file: every key of the SPEC's contract, with its default,
//! plus a few operational extras (`reconcile.shutdown_grace`, `[log]`).
//!
//! Unknown keys and bad values are refused with the file, the key path and
//! the problem, because a daemon that silently ignores a typo in `max_age`
//! fails jobs nobody expected to fail.
//!
//! Every duration, size and count has an allowed range ([`limits`]), checked
//! at load: a value the daemon cannot use (a semaphore of 2^63 permits, an
//! interval that overflows the clock) stops `check-config` and `run` with
//! the key and the range, instead of panicking later.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clawcut_core::{BackoffPolicy, EligibilityRules};
use serde::Deserialize;
use serde::de::{self, Deserializer};

pub const DEFAULT_PATH: &str = "/etc/clawcut-worker/config.toml";

/// The allowed range of every duration, size and count in the file (both
/// ends inclusive). Wide enough for any real deployment and for tests on
/// loopback, narrow enough that nothing downstream overflows: the largest
/// duration here, added to any clock reading of this century, fits an
/// `Instant`, an `i64` of milliseconds and a tokio timer.
pub mod limits {
    use std::ops::RangeInclusive;
    use std::time::Duration;

    const SEC: Duration = Duration::from_secs(1);
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);
    const KIB: u64 = 1024;
    const GIB: u64 = 1024 * 1024 * KIB;
    const TIB: u64 = 1024 * GIB;

    /// `reconcile.interval`: faster than 100ms is a busy loop on the
    /// database; slower than a day leaves stranded jobs unseen for days.
    pub const INTERVAL: RangeInclusive<Duration> =
        RangeInclusive::new(Duration::from_millis(100), DAY);
    /// `reconcile.batch_size`: one claim statement; more than 1000 rows is a
    /// long transaction for nothing (a full batch is followed at once).
    pub const BATCH_SIZE: RangeInclusive<u32> = RangeInclusive::new(1, 1000);
    /// `reconcile.concurrency`: jobs worked at once by one process.
    pub const CONCURRENCY: RangeInclusive<usize> = RangeInclusive::new(1, 1024);
    /// `reconcile.min_age`: 0 (no grace for the app) up to 30 days.
    pub const MIN_AGE: RangeInclusive<Duration> =
        RangeInclusive::new(Duration::ZERO, Duration::from_secs(30 * 86_400));
    /// `reconcile.max_age`: longer than `min_age`, at most a year.
    pub const MAX_AGE_MAX: Duration = Duration::from_secs(365 * 86_400);
    /// `reconcile.lease_ttl`: heartbeats need at least a second; a lease of
    /// more than a day strands a crashed worker's jobs for that long.
    pub const LEASE_TTL: RangeInclusive<Duration> = RangeInclusive::new(SEC, DAY);
    /// `reconcile.shutdown_grace`: 0 (release at once) up to an hour, beyond
    /// which systemd (or an operator) gives up first anyway.
    pub const SHUTDOWN_GRACE: RangeInclusive<Duration> = RangeInclusive::new(Duration::ZERO, HOUR);
    /// `backoff.initial`: a retry sooner than 10ms is not a backoff.
    pub const BACKOFF_INITIAL: RangeInclusive<Duration> =
        RangeInclusive::new(Duration::from_millis(10), DAY);
    /// `backoff.max`: at least `backoff.initial`, at most a week.
    pub const BACKOFF_MAX_MAX: Duration = Duration::from_secs(7 * 86_400);
    /// `backoff.multiplier`: 1.0 (constant backoff) up to 100.
    pub const MULTIPLIER: RangeInclusive<f64> = RangeInclusive::new(1.0, 100.0);
    /// `backoff.max_attempts`.
    pub const MAX_ATTEMPTS: RangeInclusive<u32> = RangeInclusive::new(1, 1000);
    /// `media.max_bytes`: one output file.
    pub const MAX_BYTES: RangeInclusive<u64> = RangeInclusive::new(1, TIB);
    /// `media.download_deadline`: one output download, start to last byte.
    pub const DOWNLOAD_DEADLINE: RangeInclusive<Duration> =
        RangeInclusive::new(SEC, Duration::from_secs(7 * 86_400));
    /// `media.stall_timeout`: the window in which `stall_min_bytes` must
    /// arrive.
    pub const STALL_TIMEOUT: RangeInclusive<Duration> = RangeInclusive::new(SEC, HOUR);
    /// `media.part_size`: S3 takes parts of 5 MiB and more (all but the
    /// last); past 512 MiB a part is a lot of memory per job.
    pub const PART_SIZE: RangeInclusive<u64> =
        RangeInclusive::new(5 * 1024 * KIB, 512 * 1024 * KIB);
    /// `media.stall_min_bytes`.
    pub const STALL_MIN_BYTES: RangeInclusive<u64> = RangeInclusive::new(1, GIB);
    /// `providers.*.timeout`: one API call (not a download); a timeout under
    /// 100ms fails calls even to a loopback provider, and a call still
    /// running after an hour is hung.
    pub const PROVIDER_TIMEOUT: RangeInclusive<Duration> =
        RangeInclusive::new(Duration::from_millis(100), HOUR);
    /// `providers.*.max_in_flight`: requests at once to one provider.
    pub const MAX_IN_FLIGHT: RangeInclusive<usize> = RangeInclusive::new(1, 10_000);
    /// `providers.*.requests_per_minute`: when set.
    pub const REQUESTS_PER_MINUTE: RangeInclusive<u32> = RangeInclusive::new(1, 1_000_000);
    /// `provider_health.outage_after`.
    pub const OUTAGE_AFTER: RangeInclusive<u32> = RangeInclusive::new(2, 10_000);
    /// `provider_health.cooldown` and `max_cooldown`.
    pub const PROBE_COOLDOWN: RangeInclusive<Duration> =
        RangeInclusive::new(Duration::from_millis(100), DAY);
    /// `http.header_timeout`, `http.request_timeout`: under 100ms refuses
    /// slow but honest clients; past 10 minutes a held socket is an attack.
    pub const HTTP_TIMEOUT: RangeInclusive<Duration> =
        RangeInclusive::new(Duration::from_millis(100), Duration::from_secs(600));
    /// `http.max_connections`: open client connections at once; each is a
    /// file descriptor (the unit's `LimitNOFILE` is 65536).
    pub const MAX_CONNECTIONS: RangeInclusive<usize> = RangeInclusive::new(1, 50_000);
    /// `http.webhooks_per_minute`: per provider.
    pub const WEBHOOKS_PER_MINUTE: RangeInclusive<u32> = RangeInclusive::new(1, 1_000_000);
    /// `http.ops_session_ttl`: a minute at least (a sign-in must outlive a
    /// confirmation page), a week at most (a stolen cookie expires).
    pub const OPS_SESSION_TTL: RangeInclusive<Duration> =
        RangeInclusive::new(Duration::from_secs(60), Duration::from_secs(7 * 86_400));
}

/// A duration as a human would write it back: the largest unit that
/// divides it exactly (`"100ms"`, `"24h"`, `"7d"`, `"7000000000000000000s"`).
fn human_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    const UNITS: [(u128, &str); 7] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    for (unit, name) in UNITS {
        // One day reads better as "24h", as operators write it.
        if ns.is_multiple_of(unit) && !(name == "d" && ns == unit) {
            return format!("{}{name}", ns / unit);
        }
    }
    unreachable!("every duration is a whole number of nanoseconds")
}

/// A size as a human would write it back: the largest binary or decimal
/// unit that divides it exactly (`"64KiB"`, `"500MB"`, `"1023B"`).
fn human_size(n: u64) -> String {
    if n == 0 {
        return "0B".into();
    }
    const UNITS: [(u64, &str); 8] = [
        (1 << 40, "TiB"),
        (1_000_000_000_000, "TB"),
        (1 << 30, "GiB"),
        (1_000_000_000, "GB"),
        (1 << 20, "MiB"),
        (1_000_000, "MB"),
        (1 << 10, "KiB"),
        (1_000, "KB"),
    ];
    for (unit, name) in UNITS {
        if n.is_multiple_of(unit) {
            return format!("{}{name}", n / unit);
        }
    }
    format!("{n}B")
}

type Invalid = (String, String);

fn duration_in(key: &str, got: Dur, range: &RangeInclusive<Duration>) -> Result<(), Invalid> {
    if range.contains(&got.0) {
        return Ok(());
    }
    Err((
        key.to_owned(),
        format!(
            "must be between {} and {}, got {}",
            human_duration(*range.start()),
            human_duration(*range.end()),
            human_duration(got.0)
        ),
    ))
}

fn size_in(key: &str, got: Size, range: &RangeInclusive<u64>) -> Result<(), Invalid> {
    if range.contains(&got.0) {
        return Ok(());
    }
    Err((
        key.to_owned(),
        format!(
            "must be between {} and {}, got {}",
            human_size(*range.start()),
            human_size(*range.end()),
            human_size(got.0)
        ),
    ))
}

fn count_in<T: PartialOrd + fmt::Display>(
    key: &str,
    got: T,
    range: &RangeInclusive<T>,
) -> Result<(), Invalid> {
    if range.contains(&got) {
        return Ok(());
    }
    Err((
        key.to_owned(),
        format!(
            "must be between {} and {}, got {got}",
            range.start(),
            range.end()
        ),
    ))
}

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
    pub provider_health: ProviderHealthConfig,
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
    /// Cadence of passes ([`limits::INTERVAL`]).
    pub interval: Dur,
    /// A pass before the first interval.
    pub on_startup: bool,
    /// Most jobs claimed by one statement ([`limits::BATCH_SIZE`]).
    pub batch_size: u32,
    /// Jobs worked at once ([`limits::CONCURRENCY`]).
    pub concurrency: usize,
    /// A job is eligible once `updated_at` is older than this
    /// ([`limits::MIN_AGE`]).
    pub min_age: Dur,
    /// Older jobs are failed as expired: longer than `min_age`, at most
    /// [`limits::MAX_AGE_MAX`].
    pub max_age: Dur,
    /// How long a claim lasts without a heartbeat ([`limits::LEASE_TTL`]).
    pub lease_ttl: Dur,
    /// How long SIGTERM waits for in-flight jobs before releasing their leases
    /// ([`limits::SHUTDOWN_GRACE`]).
    pub shutdown_grace: Dur,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    /// The first wait ([`limits::BACKOFF_INITIAL`]).
    pub initial: Dur,
    /// The longest wait: at least `initial`, at most
    /// [`limits::BACKOFF_MAX_MAX`]. A provider's `Retry-After` or poll hint
    /// may push one wait past it, up to [`clawcut_core::backoff::MAX_FLOOR`].
    pub max: Dur,
    /// Growth per try ([`limits::MULTIPLIER`]).
    pub multiplier: f64,
    /// Full jitter: a uniform wait in `[0, ceiling]`.
    pub jitter: bool,
    /// Transient errors before a job fails ([`limits::MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// The longest wait between two polls of a job still running at the
    /// provider ([`limits::BACKOFF_INITIAL`]'s range), clamped into
    /// `[initial, max]`. Polls grow like the error backoff up to it; errors
    /// keep `max`. Not in the SPEC's list: its default cadence (up to 15
    /// min between polls) noticed a 10-minute job 137 s late on average
    /// (`crates/core/examples/poll_schedule.rs`); 60 s costs 2.7 more polls
    /// per job and notices it 24 s late.
    pub poll_max: Dur,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmitConfig {
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Clips on disk (the default), and with `store` set only the lock
    /// files that order completions on this host.
    pub dir: PathBuf,
    /// `s3://bucket/prefix`: clips in an S3-compatible object store instead
    /// of `dir` (shared by replicas on many hosts). Credentials, region and
    /// endpoint come from the environment only (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, ...).
    pub store: Option<String>,
    /// The multipart upload's part size with `store`: also the most clip
    /// bytes one job holds in memory (default 8MiB; [`limits::PART_SIZE`]).
    pub part_size: Size,
    /// With `store`: send each part's sha256 for the store to check on
    /// receipt (`x-amz-checksum-sha256`; default true). Turn off only for a
    /// store that refuses checksum headers.
    pub part_checksums: bool,
    /// Refused: a secret never goes in the file (see `store`).
    pub access_key_id: Option<toml::Value>,
    /// Refused, as `access_key_id`.
    pub secret_access_key: Option<toml::Value>,
    /// Refused, as `access_key_id`.
    pub session_token: Option<toml::Value>,
    /// A larger output fails its job and leaves no file
    /// ([`limits::MAX_BYTES`]).
    pub max_bytes: Size,
    /// Total wall time for one output download, first request to last byte
    /// (default 1h, sized so a 2 GiB clip completes on a ~5 Mbit/s link:
    /// 2 GiB × 8 / 3600 s ≈ 4.8 Mbit/s). Past it the download is abandoned
    /// as a transient failure ([`limits::DOWNLOAD_DEADLINE`]).
    pub download_deadline: Dur,
    /// A download that receives fewer than `stall_min_bytes` within any
    /// `stall_timeout` window is abandoned as stalled: a transient failure,
    /// which spends an attempt and is retried on backoff (default 60s,
    /// [`limits::STALL_TIMEOUT`]).
    pub stall_timeout: Dur,
    /// See `stall_timeout` (default 64KiB, about 8.7 kbit/s averaged over the
    /// window; [`limits::STALL_MIN_BYTES`]).
    pub stall_min_bytes: Size,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Empty string turns the HTTP server off.
    pub listen: String,
    pub admin_token_env: String,
    /// The env var holding the operator panel's read-only token: it can
    /// look at `/ops` (and `GET /v1/jobs`) but not act. Unset: no
    /// read-only access.
    pub readonly_token_env: String,
    /// A panel sign-in lasts this long (default 12h;
    /// [`limits::OPS_SESSION_TTL`]).
    pub ops_session_ttl: Dur,
    /// How providers reach this daemon's `/webhooks/{provider}` (e.g.
    /// `https://worker.example.com`); without it no callback URL is sent
    /// with submissions (webhooks still work if configured at the provider).
    pub public_url: Option<String>,
    /// A request's head must arrive within this, counted from the accept or,
    /// on a kept-alive connection, from the previous answer: it is also the
    /// idle keep-alive limit (default 10s; [`limits::HTTP_TIMEOUT`]).
    pub header_timeout: Dur,
    /// A request's body must arrive within this, counted from the end of its
    /// head (default 30s; [`limits::HTTP_TIMEOUT`]). The handler's own work
    /// (a reconcile pass) is not cut by it.
    pub request_timeout: Dur,
    /// Client connections open at once; more wait in the kernel's accept
    /// queue and cost this process no descriptor (default 512;
    /// [`limits::MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Accepted webhooks per provider per minute (a token bucket of that
    /// size); more get 429 with `Retry-After` (default 600;
    /// [`limits::WEBHOOKS_PER_MINUTE`]).
    pub webhooks_per_minute: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderHealthConfig {
    /// Consecutive outage faults (connect, timeout, 5xx), across at least
    /// two different jobs, that pause a provider ([`limits::OUTAGE_AFTER`]).
    pub outage_after: u32,
    /// Wait before the first probe of a paused provider
    /// ([`limits::PROBE_COOLDOWN`]).
    pub cooldown: Dur,
    /// Each failed probe doubles the wait, up to this (at least
    /// `cooldown`, at most [`limits::PROBE_COOLDOWN`]'s end).
    pub max_cooldown: Dur,
}

impl Default for ProviderHealthConfig {
    fn default() -> Self {
        let p = clawcut_core::HealthPolicy::default();
        ProviderHealthConfig {
            outage_after: p.outage_after,
            cooldown: Dur(p.cooldown),
            max_cooldown: Dur(p.max_cooldown),
        }
    }
}

impl ProviderHealthConfig {
    pub fn policy(&self) -> clawcut_core::HealthPolicy {
        clawcut_core::HealthPolicy {
            outage_after: self.outage_after,
            cooldown: self.cooldown.0,
            max_cooldown: self.max_cooldown.0,
        }
    }
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
    /// Whole-request timeout of one API call ([`limits::PROVIDER_TIMEOUT`]).
    #[serde(default = "default_provider_timeout")]
    pub timeout: Dur,
    /// Requests in flight at once to this provider
    /// ([`limits::MAX_IN_FLIGHT`]).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    #[serde(default)]
    pub allowed_download_hosts: Vec<String>,
    /// A cap on requests per minute to this provider, shared by all jobs
    /// ([`limits::REQUESTS_PER_MINUTE`]; omitted is no cap).
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
            poll_max: Dur(Duration::from_secs(60)),
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            dir: PathBuf::from("/var/lib/clawcut-worker/media"),
            max_bytes: Size(2 * 1024 * 1024 * 1024),
            download_deadline: Dur(Duration::from_secs(3600)),
            stall_timeout: Dur(Duration::from_secs(60)),
            stall_min_bytes: Size(64 * 1024),
            store: None,
            part_size: Size(8 * 1024 * 1024),
            part_checksums: true,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:3778".into(),
            admin_token_env: "CLAWCUT_WORKER_ADMIN_TOKEN".into(),
            readonly_token_env: "CLAWCUT_WORKER_READONLY_TOKEN".into(),
            ops_session_ttl: Dur(Duration::from_secs(12 * 3600)),
            public_url: None,
            header_timeout: Dur(Duration::from_secs(10)),
            request_timeout: Dur(Duration::from_secs(30)),
            max_connections: 512,
            webhooks_per_minute: 600,
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

    /// Semantic checks serde cannot express, and the [`limits`] of every
    /// duration, size and count. Returns (key, problem).
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
        duration_in("reconcile.interval", r.interval, &limits::INTERVAL)?;
        count_in("reconcile.batch_size", r.batch_size, &limits::BATCH_SIZE)?;
        count_in("reconcile.concurrency", r.concurrency, &limits::CONCURRENCY)?;
        duration_in("reconcile.min_age", r.min_age, &limits::MIN_AGE)?;
        if r.max_age.0 <= r.min_age.0 || r.max_age.0 > limits::MAX_AGE_MAX {
            return Err((
                "reconcile.max_age".into(),
                format!(
                    "must be longer than reconcile.min_age ({}) and at most {}, got {}",
                    human_duration(r.min_age.0),
                    human_duration(limits::MAX_AGE_MAX),
                    human_duration(r.max_age.0)
                ),
            ));
        }
        duration_in("reconcile.lease_ttl", r.lease_ttl, &limits::LEASE_TTL)?;
        duration_in(
            "reconcile.shutdown_grace",
            r.shutdown_grace,
            &limits::SHUTDOWN_GRACE,
        )?;
        let b = &self.backoff;
        duration_in("backoff.initial", b.initial, &limits::BACKOFF_INITIAL)?;
        duration_in("backoff.poll_max", b.poll_max, &limits::BACKOFF_INITIAL)?;
        if b.max.0 < b.initial.0 || b.max.0 > limits::BACKOFF_MAX_MAX {
            return Err((
                "backoff.max".into(),
                format!(
                    "must not be shorter than backoff.initial ({}) and at most {}, got {}",
                    human_duration(b.initial.0),
                    human_duration(limits::BACKOFF_MAX_MAX),
                    human_duration(b.max.0)
                ),
            ));
        }
        // `contains` is false for NaN; infinities are outside the range.
        if !limits::MULTIPLIER.contains(&b.multiplier) {
            return Err((
                "backoff.multiplier".into(),
                format!(
                    "must be a number >= {:?} and <= {:?}, got {}",
                    limits::MULTIPLIER.start(),
                    limits::MULTIPLIER.end(),
                    b.multiplier
                ),
            ));
        }
        count_in(
            "backoff.max_attempts",
            b.max_attempts,
            &limits::MAX_ATTEMPTS,
        )?;
        let m = &self.media;
        size_in("media.max_bytes", m.max_bytes, &limits::MAX_BYTES)?;
        duration_in(
            "media.download_deadline",
            m.download_deadline,
            &limits::DOWNLOAD_DEADLINE,
        )?;
        duration_in(
            "media.stall_timeout",
            m.stall_timeout,
            &limits::STALL_TIMEOUT,
        )?;
        size_in(
            "media.stall_min_bytes",
            m.stall_min_bytes,
            &limits::STALL_MIN_BYTES,
        )?;
        size_in("media.part_size", m.part_size, &limits::PART_SIZE)?;
        for (key, set) in [
            ("media.access_key_id", m.access_key_id.is_some()),
            ("media.secret_access_key", m.secret_access_key.is_some()),
            ("media.session_token", m.session_token.is_some()),
        ] {
            if set {
                return bad(
                    key,
                    "credentials are never read from the file: set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) in the environment (the unit's EnvironmentFile), or use the instance's role",
                );
            }
        }
        if let Some(url) = &m.store
            && let Err(problem) = crate::media::object::parse_store_url(url)
        {
            return Err(("media.store".into(), problem));
        }
        let h = &self.provider_health;
        count_in(
            "provider_health.outage_after",
            h.outage_after,
            &limits::OUTAGE_AFTER,
        )?;
        duration_in(
            "provider_health.cooldown",
            h.cooldown,
            &limits::PROBE_COOLDOWN,
        )?;
        duration_in(
            "provider_health.max_cooldown",
            h.max_cooldown,
            &limits::PROBE_COOLDOWN,
        )?;
        if h.max_cooldown.0 < h.cooldown.0 {
            return Err((
                "provider_health.max_cooldown".into(),
                format!(
                    "must not be shorter than provider_health.cooldown ({}), got {}",
                    human_duration(h.cooldown.0),
                    human_duration(h.max_cooldown.0)
                ),
            ));
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
        let h = &self.http;
        duration_in(
            "http.header_timeout",
            h.header_timeout,
            &limits::HTTP_TIMEOUT,
        )?;
        duration_in(
            "http.request_timeout",
            h.request_timeout,
            &limits::HTTP_TIMEOUT,
        )?;
        count_in(
            "http.max_connections",
            h.max_connections,
            &limits::MAX_CONNECTIONS,
        )?;
        count_in(
            "http.webhooks_per_minute",
            h.webhooks_per_minute,
            &limits::WEBHOOKS_PER_MINUTE,
        )?;
        duration_in(
            "http.ops_session_ttl",
            h.ops_session_ttl,
            &limits::OPS_SESSION_TTL,
        )?;
        if h.readonly_token_env.trim().is_empty() || h.readonly_token_env == h.admin_token_env {
            return bad(
                "http.readonly_token_env",
                "must name an environment variable other than http.admin_token_env",
            );
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
            duration_in(&key("timeout"), p.timeout, &limits::PROVIDER_TIMEOUT)?;
            count_in(
                &key("max_in_flight"),
                p.max_in_flight,
                &limits::MAX_IN_FLIGHT,
            )?;
            if let Some(rpm) = p.requests_per_minute {
                count_in(
                    &key("requests_per_minute"),
                    rpm,
                    &limits::REQUESTS_PER_MINUTE,
                )
                .map_err(|(k, p)| (k, format!("{p} (omit it for no cap)")))?;
            }
            // OpenAI's webhook events name no video job (openai-python's
            // webhook types, checked 2026-12-01): a secret would turn on a
            // route that can never make a job due.
            if p.kind == ProviderKindName::Openai && p.webhook_secret_env.is_some() {
                return Err((
                    key("webhook_secret_env"),
                    "openai sends no webhook that names a video job; remove the key (the daemon polls)".into(),
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

    /// The poll cadence of running jobs: the backoff, capped at
    /// `backoff.poll_max` (clamped into `[initial, max]`).
    pub fn poll_policy(&self) -> BackoffPolicy {
        let b = self.backoff_policy();
        BackoffPolicy {
            max: self.backoff.poll_max.0.clamp(b.initial, b.max),
            ..b
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
        assert_eq!(c.http.header_timeout.0, Duration::from_secs(10));
        assert_eq!(c.http.request_timeout.0, Duration::from_secs(30));
        assert_eq!(c.http.max_connections, 512);
    }

    #[test]
    fn an_object_store_is_a_bucket_url_and_never_a_secret() {
        let c = parse("[media]\nstore = \"s3://clips/prod\"\npart_size = \"16MiB\"\n").unwrap();
        assert_eq!(c.media.store.as_deref(), Some("s3://clips/prod"));
        assert_eq!(c.media.part_size.0, 16 << 20);
        assert_eq!(
            Config::default().media.store,
            None,
            "the local dir stays the default"
        );
        assert_eq!(Config::default().media.part_size.0, 8 << 20);
        for (text, key, says) in [
            ("store = \"gs://clips\"", "media.store", "only s3://"),
            (
                "store = \"s3://AKIA:pw@clips\"",
                "media.store",
                "environment",
            ),
            (
                "store = \"s3://clips?secret=x\"",
                "media.store",
                "environment",
            ),
            ("part_size = \"1MiB\"", "media.part_size", "between 5MiB"),
            (
                "secret_access_key = \"x\"",
                "media.secret_access_key",
                "AWS_SECRET_ACCESS_KEY",
            ),
            (
                "access_key_id = \"AKIA\"",
                "media.access_key_id",
                "environment",
            ),
            (
                "session_token = \"t\"",
                "media.session_token",
                "environment",
            ),
        ] {
            let e = parse(&format!("[media]\n{text}\n")).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
            assert!(e.problem.contains(says), "{text}: {e}");
            assert!(
                !e.to_string().contains("pw@"),
                "{text}: a credential in {e}"
            );
        }
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let text = include_str!("../../../config/clawcut-worker.toml");
        let c = parse(text).unwrap();
        assert!(c.providers.contains_key("openai"));
        // It shows the defaults.
        let d = Config::default();
        assert_eq!(c.media.download_deadline, d.media.download_deadline);
        assert_eq!(c.media.stall_timeout, d.media.stall_timeout);
        assert_eq!(c.media.stall_min_bytes, d.media.stall_min_bytes);
        assert_eq!(c.reconcile.interval, d.reconcile.interval);
        assert_eq!(c.backoff.max, d.backoff.max);
        assert_eq!(c.http.header_timeout, d.http.header_timeout);
        assert_eq!(c.http.request_timeout, d.http.request_timeout);
        assert_eq!(c.http.max_connections, d.http.max_connections);
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
        let e =
            parse("[providers.o]\nkind = \"openai\"\nwebhook_secret_env = \"W\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("providers.o.webhook_secret_env"));
        let e =
            parse("[provider_health]\ncooldown = \"1m\"\nmax_cooldown = \"30s\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("provider_health.max_cooldown"));
        let e = parse("[provider_health]\noutage_after = 1\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("provider_health.outage_after"));
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

    #[test]
    fn new_media_keys_have_their_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.media.download_deadline.0, Duration::from_secs(3600));
        assert_eq!(c.media.stall_timeout.0, Duration::from_secs(60));
        assert_eq!(c.media.stall_min_bytes.0, 64 * 1024);
        let c = parse(
            "[media]\ndownload_deadline = \"3h\"\nstall_timeout = \"2m\"\nstall_min_bytes = \"1MiB\"\n",
        )
        .unwrap();
        assert_eq!(c.media.download_deadline.0, Duration::from_secs(3 * 3600));
        assert_eq!(c.media.stall_timeout.0, Duration::from_secs(120));
        assert_eq!(c.media.stall_min_bytes.0, 1 << 20);
    }

    /// One row per bound: `(toml, None)` must load, `(toml, Some(key))` must
    /// be refused naming `key`, with a problem that states the range.
    #[test]
    fn polls_are_capped_at_poll_max_within_initial_and_max() {
        let c = parse("").unwrap();
        assert_eq!(c.poll_policy().max, Duration::from_secs(60));
        assert_eq!(
            c.backoff_policy().max,
            Duration::from_secs(900),
            "errors keep max"
        );
        assert_eq!(c.poll_policy().initial, c.backoff_policy().initial);
        // Clamped into [initial, max], never refused for it.
        let c = parse("[backoff]\ninitial = \"200ms\"\nmax = \"2s\"").unwrap();
        assert_eq!(c.poll_policy().max, Duration::from_secs(2));
        let c = parse("[backoff]\ninitial = \"2m\"\nmax = \"1h\"").unwrap();
        assert_eq!(c.poll_policy().max, Duration::from_secs(120));
        let c = parse("[backoff]\npoll_max = \"5m\"").unwrap();
        assert_eq!(c.poll_policy().max, Duration::from_secs(300));
    }

    #[test]
    fn the_readonly_token_needs_a_variable_of_its_own() {
        for text in [
            "[http]\nreadonly_token_env = \"CLAWCUT_WORKER_ADMIN_TOKEN\"",
            "[http]\nadmin_token_env = \"T\"\nreadonly_token_env = \"T\"",
            "[http]\nreadonly_token_env = \" \"",
        ] {
            let e = parse(text).expect_err(text);
            assert_eq!(
                e.key.as_deref(),
                Some("http.readonly_token_env"),
                "{text:?}: {e}"
            );
            assert!(e.problem.contains("environment variable"), "{text:?}: {e}");
        }
        parse("[http]\nreadonly_token_env = \"OPS_VIEWER_TOKEN\"").expect("its own variable");
    }

    #[test]
    fn every_range_bound_is_checked_and_names_the_key() {
        const ROWS: &[(&str, Option<&str>)] = &[
            // The operator's report.
            (
                "[reconcile]\ninterval = \"7000000000000000000s\"",
                Some("reconcile.interval"),
            ),
            (
                "[providers.openai]\nkind = \"openai\"\nmax_in_flight = 9223372036854775807",
                Some("providers.openai.max_in_flight"),
            ),
            // reconcile.interval 100ms..=24h
            ("[reconcile]\ninterval = \"100ms\"", None),
            (
                "[reconcile]\ninterval = \"99ms 999us 999ns\"",
                Some("reconcile.interval"),
            ),
            ("[reconcile]\ninterval = \"0s\"", Some("reconcile.interval")),
            ("[reconcile]\ninterval = \"24h\"", None),
            (
                "[reconcile]\ninterval = \"24h 1ns\"",
                Some("reconcile.interval"),
            ),
            // http.header_timeout, http.request_timeout 100ms..=10m
            ("[http]\nheader_timeout = \"100ms\"", None),
            (
                "[http]\nheader_timeout = \"99ms\"",
                Some("http.header_timeout"),
            ),
            ("[http]\nrequest_timeout = \"10m\"", None),
            (
                "[http]\nrequest_timeout = \"10m 1s\"",
                Some("http.request_timeout"),
            ),
            // http.max_connections 1..=50000
            ("[http]\nmax_connections = 1", None),
            ("[http]\nmax_connections = 0", Some("http.max_connections")),
            (
                "[http]\nmax_connections = 50001",
                Some("http.max_connections"),
            ),
            ("[http]\nwebhooks_per_minute = 1", None),
            (
                "[http]\nwebhooks_per_minute = 0",
                Some("http.webhooks_per_minute"),
            ),
            ("[http]\nops_session_ttl = \"1m\"", None),
            (
                "[http]\nops_session_ttl = \"59s\"",
                Some("http.ops_session_ttl"),
            ),
            // reconcile.batch_size 1..=1000
            ("[reconcile]\nbatch_size = 1", None),
            ("[reconcile]\nbatch_size = 0", Some("reconcile.batch_size")),
            ("[reconcile]\nbatch_size = 1000", None),
            (
                "[reconcile]\nbatch_size = 1001",
                Some("reconcile.batch_size"),
            ),
            // reconcile.concurrency 1..=1024
            ("[reconcile]\nconcurrency = 1", None),
            (
                "[reconcile]\nconcurrency = 0",
                Some("reconcile.concurrency"),
            ),
            ("[reconcile]\nconcurrency = 1024", None),
            (
                "[reconcile]\nconcurrency = 1025",
                Some("reconcile.concurrency"),
            ),
            // reconcile.min_age 0..=30d
            ("[reconcile]\nmin_age = \"0s\"", None),
            ("[reconcile]\nmin_age = \"30d\"\nmax_age = \"31d\"", None),
            (
                "[reconcile]\nmin_age = \"30d 1ns\"\nmax_age = \"31d\"",
                Some("reconcile.min_age"),
            ),
            // reconcile.max_age (min_age, 365d]
            ("[reconcile]\nmin_age = \"2m\"\nmax_age = \"2m 1ns\"", None),
            (
                "[reconcile]\nmin_age = \"2m\"\nmax_age = \"2m\"",
                Some("reconcile.max_age"),
            ),
            ("[reconcile]\nmax_age = \"365d\"", None),
            (
                "[reconcile]\nmax_age = \"365d 1ns\"",
                Some("reconcile.max_age"),
            ),
            // reconcile.lease_ttl 1s..=24h
            ("[reconcile]\nlease_ttl = \"1s\"", None),
            (
                "[reconcile]\nlease_ttl = \"999ms\"",
                Some("reconcile.lease_ttl"),
            ),
            ("[reconcile]\nlease_ttl = \"24h\"", None),
            (
                "[reconcile]\nlease_ttl = \"24h 1ns\"",
                Some("reconcile.lease_ttl"),
            ),
            // reconcile.shutdown_grace 0..=1h
            ("[reconcile]\nshutdown_grace = \"0s\"", None),
            ("[reconcile]\nshutdown_grace = \"1h\"", None),
            (
                "[reconcile]\nshutdown_grace = \"1h 1ns\"",
                Some("reconcile.shutdown_grace"),
            ),
            // backoff.initial 10ms..=24h
            ("[backoff]\ninitial = \"10ms\"", None),
            ("[backoff]\ninitial = \"9ms\"", Some("backoff.initial")),
            ("[backoff]\ninitial = \"0s\"", Some("backoff.initial")),
            ("[backoff]\ninitial = \"24h\"\nmax = \"24h\"", None),
            (
                "[backoff]\ninitial = \"24h 1ns\"\nmax = \"7d\"",
                Some("backoff.initial"),
            ),
            // backoff.max initial..=7d
            ("[backoff]\ninitial = \"5s\"\nmax = \"5s\"", None),
            (
                "[backoff]\ninitial = \"5s\"\nmax = \"4s 999ms\"",
                Some("backoff.max"),
            ),
            ("[backoff]\npoll_max = \"10ms\"", None),
            ("[backoff]\npoll_max = \"9ms\"", Some("backoff.poll_max")),
            ("[backoff]\npoll_max = \"24h\"", None),
            (
                "[backoff]\npoll_max = \"24h 1ns\"",
                Some("backoff.poll_max"),
            ),
            ("[backoff]\nmax = \"7d\"", None),
            ("[backoff]\nmax = \"7d 1ns\"", Some("backoff.max")),
            // backoff.multiplier 1.0..=100, finite
            ("[backoff]\nmultiplier = 1.0", None),
            ("[backoff]\nmultiplier = 0.999", Some("backoff.multiplier")),
            ("[backoff]\nmultiplier = 100.0", None),
            (
                "[backoff]\nmultiplier = 100.001",
                Some("backoff.multiplier"),
            ),
            ("[backoff]\nmultiplier = nan", Some("backoff.multiplier")),
            ("[backoff]\nmultiplier = inf", Some("backoff.multiplier")),
            ("[backoff]\nmultiplier = -inf", Some("backoff.multiplier")),
            // backoff.max_attempts 1..=1000
            ("[backoff]\nmax_attempts = 1", None),
            ("[backoff]\nmax_attempts = 0", Some("backoff.max_attempts")),
            ("[backoff]\nmax_attempts = 1000", None),
            (
                "[backoff]\nmax_attempts = 1001",
                Some("backoff.max_attempts"),
            ),
            // media.max_bytes 1B..=1TiB
            ("[media]\nmax_bytes = \"1B\"", None),
            ("[media]\nmax_bytes = \"0B\"", Some("media.max_bytes")),
            ("[media]\nmax_bytes = \"1TiB\"", None),
            (
                "[media]\nmax_bytes = \"1099511627777B\"",
                Some("media.max_bytes"),
            ),
            // media.download_deadline 1s..=7d
            ("[media]\ndownload_deadline = \"1s\"", None),
            (
                "[media]\ndownload_deadline = \"999ms\"",
                Some("media.download_deadline"),
            ),
            ("[media]\ndownload_deadline = \"7d\"", None),
            (
                "[media]\ndownload_deadline = \"7d 1ns\"",
                Some("media.download_deadline"),
            ),
            // media.stall_timeout 1s..=1h
            ("[media]\nstall_timeout = \"1s\"", None),
            (
                "[media]\nstall_timeout = \"999ms\"",
                Some("media.stall_timeout"),
            ),
            ("[media]\nstall_timeout = \"1h\"", None),
            (
                "[media]\nstall_timeout = \"1h 1ns\"",
                Some("media.stall_timeout"),
            ),
            // media.stall_min_bytes 1B..=1GiB
            ("[media]\nstall_min_bytes = \"1B\"", None),
            (
                "[media]\nstall_min_bytes = \"0B\"",
                Some("media.stall_min_bytes"),
            ),
            ("[media]\nstall_min_bytes = \"1GiB\"", None),
            (
                "[media]\nstall_min_bytes = \"1073741825B\"",
                Some("media.stall_min_bytes"),
            ),
            // providers.*.timeout 100ms..=1h
            (
                "[providers.p]\nkind = \"openai\"\ntimeout = \"100ms\"",
                None,
            ),
            (
                "[providers.p]\nkind = \"openai\"\ntimeout = \"99ms\"",
                Some("providers.p.timeout"),
            ),
            (
                "[providers.p]\nkind = \"openai\"\ntimeout = \"0s\"",
                Some("providers.p.timeout"),
            ),
            ("[providers.p]\nkind = \"openai\"\ntimeout = \"1h\"", None),
            (
                "[providers.p]\nkind = \"openai\"\ntimeout = \"1h 1ns\"",
                Some("providers.p.timeout"),
            ),
            // providers.*.max_in_flight 1..=10000
            ("[providers.p]\nkind = \"openai\"\nmax_in_flight = 1", None),
            (
                "[providers.p]\nkind = \"openai\"\nmax_in_flight = 0",
                Some("providers.p.max_in_flight"),
            ),
            (
                "[providers.p]\nkind = \"openai\"\nmax_in_flight = 10000",
                None,
            ),
            (
                "[providers.p]\nkind = \"openai\"\nmax_in_flight = 10001",
                Some("providers.p.max_in_flight"),
            ),
            // providers.*.requests_per_minute 1..=1000000
            (
                "[providers.p]\nkind = \"openai\"\nrequests_per_minute = 1",
                None,
            ),
            (
                "[providers.p]\nkind = \"openai\"\nrequests_per_minute = 0",
                Some("providers.p.requests_per_minute"),
            ),
            (
                "[providers.p]\nkind = \"openai\"\nrequests_per_minute = 1000000",
                None,
            ),
            (
                "[providers.p]\nkind = \"openai\"\nrequests_per_minute = 1000001",
                Some("providers.p.requests_per_minute"),
            ),
        ];
        for (text, want) in ROWS {
            match (parse(text), want) {
                (Ok(_), None) => {}
                (Err(e), None) => panic!("{text:?} must load, got: {e}"),
                (Ok(_), Some(key)) => panic!("{text:?} must be refused at `{key}`"),
                (Err(e), Some(key)) => {
                    assert_eq!(e.key.as_deref(), Some(*key), "{text:?}: {e}");
                    assert!(
                        e.problem.contains("between")
                            || e.problem.contains("at most")
                            || e.problem.contains("<="),
                        "{text:?}: the problem must state the range: {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn range_problems_say_the_range_and_the_value() {
        let e = parse("[reconcile]\ninterval = \"7000000000000000000s\"\n").unwrap_err();
        assert_eq!(
            e.problem,
            "must be between 100ms and 24h, got 7000000000000000000s"
        );
        let e =
            parse("[providers.openai]\nkind = \"openai\"\nmax_in_flight = 9223372036854775807\n")
                .unwrap_err();
        assert_eq!(
            e.problem,
            "must be between 1 and 10000, got 9223372036854775807"
        );
        let s = e.to_string();
        assert!(
            s.contains("/etc/cw.toml") && s.contains("providers.openai.max_in_flight"),
            "{s}"
        );
        let e = parse("[media]\nmax_bytes = \"2TiB\"\n").unwrap_err();
        assert_eq!(e.problem, "must be between 1B and 1TiB, got 2TiB");
        let e = parse("[reconcile]\nmin_age = \"1h\"\nmax_age = \"30m\"\n").unwrap_err();
        assert_eq!(
            e.problem,
            "must be longer than reconcile.min_age (1h) and at most 365d, got 30m"
        );
        let e = parse("[backoff]\nmultiplier = 0.5\n").unwrap_err();
        assert_eq!(e.problem, "must be a number >= 1.0 and <= 100.0, got 0.5");
        let e = parse("[providers.p]\nkind = \"openai\"\nrequests_per_minute = 0\n").unwrap_err();
        assert_eq!(
            e.problem,
            "must be between 1 and 1000000, got 0 (omit it for no cap)"
        );
    }

    #[test]
    fn human_forms_round_trip_through_the_parsers() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(100),
            Duration::from_secs(90),
            Duration::from_secs(86_400),
            Duration::from_secs(7_000_000_000_000_000_000),
        ] {
            let text = human_duration(d);
            assert_eq!(humantime::parse_duration(&text).ok(), Some(d), "{text}");
        }
        assert_eq!(human_duration(Duration::from_secs(90)), "90s");
        assert_eq!(human_duration(Duration::from_secs(86_400)), "24h");
        assert_eq!(human_duration(Duration::from_secs(7 * 86_400)), "7d");
        for n in [0, 1, 1023, 1024, 64 * 1024, 500_000_000, 1 << 40, u64::MAX] {
            let text = human_size(n);
            let back = text.parse::<bytesize::ByteSize>().map(|b| b.as_u64());
            assert_eq!(back, Ok(n), "{text}");
        }
        assert_eq!(human_size(500_000_000), "500MB");
        assert_eq!(human_size(64 * 1024), "64KiB");
    }
}
