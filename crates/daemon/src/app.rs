//! Turning a loaded [`Config`] into running parts: logging, the store, the
//! providers and the [`Worker`]. Shared by every command; imports no
//! command, no daemon part and no HTTP handler.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Context;
use clawcut_core::WebhookAuth;
use clawcut_providers::{
    DownloadLimits, DownloadPolicy, Downloader, ProviderConfig, ProviderKind, build_provider,
};
use clawcut_store::Store;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat, ProviderKindName};
use crate::exit::{self, ExitCode, Fatal, fatal};
use crate::metrics::Metrics;
use crate::runtime::clock::Clock;
use crate::worker::{ProviderHandle, Settings, Worker, WorkerParts};

/// Logs go to stderr (journald keeps them under systemd); stdout is for
/// command output.
pub fn init_logging(cfg: &Config, default_level: &str) {
    let level = if cfg.log.level.is_empty() {
        default_level
    } else {
        &cfg.log.level
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Colour codes only for a person at a terminal: in a file or the
    // journal they are noise (`^[[2m…`).
    let ansi = std::io::stderr().is_terminal();
    // Under systemd the journal stamps every line itself.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr(Vec::new()))
        .with_ansi(ansi);
    // A second init (tests, demo) keeps the first subscriber.
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Human if journald => builder.without_time().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// One log event, buffered and written to stderr under the redaction rule
/// when the formatter is done with it: whatever a field or an error's
/// `Display` carries (a signed URL in a reqwest error, a password in a
/// driver's message) is stripped at the last point before it leaves.
struct RedactingStderr(Vec<u8>);

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingStderr {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let clean = clawcut_core::redact::redact(&text);
        // A log line that cannot be written has nowhere else to go.
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), clean.as_bytes());
    }
}

/// Registers every secret the config names (API keys, signing and webhook
/// secrets, the admin and read-only tokens, the database password) with
/// the redaction rule, before anything is logged or stored.
pub fn register_secrets(cfg: &Config, env: impl Fn(&str) -> Option<String>) {
    use clawcut_core::redact::{register_secret, register_url_password};
    register_url_password(&cfg.database.url);
    let mut vars = vec![
        cfg.http.admin_token_env.clone(),
        cfg.http.readonly_token_env.clone(),
    ];
    for (name, p) in &cfg.providers {
        vars.push(Config::api_key_env(name, p));
        vars.extend(p.api_secret_env.clone());
        vars.extend(p.webhook_secret_env.clone());
    }
    if cfg.media.store.is_some() {
        // The object store's credentials come from the environment only.
        vars.extend([
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            "AWS_SESSION_TOKEN".to_owned(),
        ]);
    }
    for v in vars {
        if let Some(secret) = env(&v) {
            register_secret(&secret);
        }
    }
}

/// Connecting to an output's host takes at most this long (the transfer
/// itself is bounded by `media.download_deadline` and the stall limit).
pub const DOWNLOAD_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `<hostname>:<pid>:<random suffix>`.
pub fn worker_id() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!(
        "{host}:{}:{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

pub async fn connect_store(cfg: &Config) -> Result<Arc<dyn Store>, Fatal> {
    clawcut_store::connect(&cfg.database.url)
        .await
        .with_context(|| {
            format!(
                "connect to the database ({})",
                redact_url(&cfg.database.url)
            )
        })
        .exit_with(exit::UNAVAILABLE)
}

/// Refuse to work on a schema this binary does not match.
pub async fn check_schema(store: &dyn Store) -> Result<(), Fatal> {
    let st = store
        .schema_status()
        .await
        .context("read the schema version")
        .exit_with(exit::UNAVAILABLE)?;
    if st.current < st.latest {
        return Err(fatal(
            exit::CONFIG,
            format!(
                "the database schema is at version {} but this binary needs {}: run `clawcut-worker migrate` first",
                st.current, st.latest
            ),
        ));
    }
    if st.current > st.latest {
        return Err(fatal(
            exit::CONFIG,
            format!(
                "the database schema is at version {}, newer than this binary knows ({}): upgrade clawcut-worker",
                st.current, st.latest
            ),
        ));
    }
    Ok(())
}

/// Build every configured provider, reading each API key from its env var.
pub fn build_providers(
    cfg: &Config,
    path: &std::path::Path,
) -> Result<HashMap<String, ProviderHandle>, Fatal> {
    build_providers_with(cfg, path, |var| std::env::var(var).ok())
}

/// [`build_providers`] with the environment lookup passed in (`demo` hands
/// its simulated provider's key over without touching the process env).
pub fn build_providers_with(
    cfg: &Config,
    path: &std::path::Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<HashMap<String, ProviderHandle>, Fatal> {
    let mut out = HashMap::new();
    for (name, p) in &cfg.providers {
        let env_name = Config::api_key_env(name, p);
        let api_key = env(&env_name).ok_or_else(|| {
            fatal(
                exit::CONFIG,
                format!(
                    "config {}: key `providers.{name}.api_key_env`: environment variable {env_name} is not set",
                    path.display()
                ),
            )
        })?;
        let kind = match p.kind {
            ProviderKindName::Openai => ProviderKind::OpenAi,
            ProviderKindName::Replicate => ProviderKind::Replicate,
            ProviderKindName::Runway => ProviderKind::Runway,
            ProviderKindName::Luma => ProviderKind::Luma,
            ProviderKindName::Fal => ProviderKind::Fal,
            ProviderKindName::Kling => ProviderKind::Kling,
            ProviderKindName::Veo => ProviderKind::Veo,
        };
        let secret_of = |key: &str, var: &Option<String>| -> Result<Option<String>, Fatal> {
            match var {
                None => Ok(None),
                Some(v) => env(v).filter(|s| !s.is_empty()).map(Some).ok_or_else(|| {
                    fatal(
                        exit::CONFIG,
                        format!("config {}: key `providers.{name}.{key}`: environment variable {v} is not set", path.display()),
                    )
                }),
            }
        };
        let api_secret = secret_of("api_secret_env", &p.api_secret_env)?;
        let webhook_secret = secret_of("webhook_secret_env", &p.webhook_secret_env)?;
        let base = p.base_url.as_deref().unwrap_or(p.kind.default_base_url());
        let pc = ProviderConfig {
            name: name.clone(),
            kind,
            base_url: url::Url::parse(base)
                .with_context(|| format!("providers.{name}.base_url"))
                .exit_with(exit::CONFIG)?,
            api_key,
            api_secret,
            timeout: p.timeout.0,
            max_in_flight: p.max_in_flight,
            requests_per_minute: p.requests_per_minute,
            allowed_download_hosts: p.allowed_download_hosts.clone(),
        };
        let provider = build_provider(&pc)
            .with_context(|| format!("config {}: providers.{name}", path.display()))
            .exit_with(exit::CONFIG)?;
        let policy = DownloadPolicy::for_provider(&pc);
        let webhook_url = match (&cfg.http.public_url, &webhook_secret) {
            (Some(public), Some(secret)) => {
                let mut u = format!("{}/webhooks/{name}", public.trim_end_matches('/'));
                // Providers that sign their webhooks need no secret in the URL.
                if provider.verify_webhook(&[], b"", secret, 0) == WebhookAuth::Unsigned {
                    u.push_str("?token=");
                    u.push_str(secret);
                }
                Some(u)
            }
            _ => None,
        };
        out.insert(
            name.clone(),
            ProviderHandle {
                provider,
                policy,
                webhook_url,
                webhook_secret,
            },
        );
    }
    Ok(out)
}

pub fn settings(cfg: &Config) -> Settings {
    let m = &cfg.media;
    // The longest a healthy step goes without progress: a provider request
    // up to its timeout, or a download window up to the stall limit.
    let slowest_request = cfg
        .providers
        .values()
        .map(|p| p.timeout.0)
        .max()
        .unwrap_or_default();
    Settings {
        batch_size: cfg.reconcile.batch_size,
        concurrency: cfg.reconcile.concurrency,
        lease_ttl: cfg.reconcile.lease_ttl.0,
        rules: cfg.eligibility(),
        backoff: cfg.backoff_policy(),
        poll: cfg.poll_policy(),
        media_dir: m.dir.clone(),
        limits: DownloadLimits {
            max_bytes: m.max_bytes.0,
            deadline: m.download_deadline.0,
            stall_window: m.stall_timeout.0,
            stall_min_bytes: m.stall_min_bytes.0,
        },
        progress_window: m.stall_timeout.0.max(slowest_request) * 2,
        health: cfg.provider_health.policy(),
    }
}

pub fn build_worker(
    cfg: &Config,
    path: &std::path::Path,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    clock: Clock,
) -> Result<Worker, Fatal> {
    worker_with(cfg, store, metrics, build_providers(cfg, path)?, clock)
}

pub fn worker_with(
    cfg: &Config,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    providers: HashMap<String, ProviderHandle>,
    clock: Clock,
) -> Result<Worker, Fatal> {
    let downloader = Downloader::new(DOWNLOAD_CONNECT_TIMEOUT)
        .context("build the download client")
        .exit_with(exit::SOFTWARE)?;
    // Reads the AWS_* environment only; nothing is requested yet.
    let storage = crate::media::Storage::from_config(&cfg.media)
        .context("set up media.store")
        .exit_with(exit::CONFIG)?;
    Ok(Worker::new(WorkerParts {
        id: worker_id(),
        store,
        providers,
        downloader,
        settings: settings(cfg),
        metrics,
        clock,
        storage,
    }))
}

/// A database URL for messages: no userinfo, no query (`?password=`, keys
/// in `sslkey`), no registered secret.
pub fn redact_url(url: &str) -> String {
    clawcut_core::redact::redact(url).into_owned()
}

/// The shortest admin token a non-loopback listener accepts.
pub const MIN_PUBLIC_TOKEN_LEN: usize = 16;

/// A non-loopback listener needs an admin token, and one that is not
/// guessable: at least [`MIN_PUBLIC_TOKEN_LEN`] characters, none of them
/// whitespace (a stray space or a one-letter token passes a "set" check).
pub fn require_loopback_or_token(
    listen: &str,
    token_env: &str,
    token: Option<&str>,
) -> Result<(), Fatal> {
    let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
        fatal(
            exit::CONFIG,
            format!("http.listen {listen:?} is not an address"),
        )
    })?;
    if addr.ip().is_loopback() {
        return Ok(());
    }
    let Some(token) = token else {
        return Err(fatal(
            exit::CONFIG,
            format!(
                "refusing to listen on non-loopback {listen} without an admin token: set the variable named by http.admin_token_env ({token_env}), or listen on 127.0.0.1"
            ),
        ));
    };
    let chars = token.chars().count();
    if chars < MIN_PUBLIC_TOKEN_LEN || token.chars().any(char::is_whitespace) {
        return Err(fatal(
            exit::CONFIG,
            format!(
                "refusing to listen on non-loopback {listen}: key `http.admin_token_env`: the token in {token_env} must be at least {MIN_PUBLIC_TOKEN_LEN} characters with no whitespace (it has {chars} characters{})",
                if token.chars().any(char::is_whitespace) {
                    ", some of them whitespace"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(())
}

/// The read-only token: never the admin token itself (a read-only
/// operator would then act), and as long as the admin token must be when
/// the listener is not loopback.
pub fn check_readonly_token(
    http: &crate::config::HttpConfig,
    admin: Option<&str>,
    readonly: Option<&str>,
) -> Result<(), Fatal> {
    let Some(ro) = readonly else { return Ok(()) };
    let env = &http.readonly_token_env;
    if admin == Some(ro) {
        return Err(fatal(
            exit::CONFIG,
            format!(
                "key `http.readonly_token_env`: the token in {env} is the admin token; give the read-only token its own value"
            ),
        ));
    }
    let public = http
        .listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| !a.ip().is_loopback());
    if public && (ro.chars().count() < MIN_PUBLIC_TOKEN_LEN || ro.chars().any(char::is_whitespace))
    {
        return Err(fatal(
            exit::CONFIG,
            format!(
                "refusing to listen on non-loopback {}: key `http.readonly_token_env`: the token in {env} must be at least {MIN_PUBLIC_TOKEN_LEN} characters with no whitespace",
                http.listen
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_listeners_need_a_long_token_without_whitespace() {
        let check = |listen: &str, t: Option<&str>| {
            require_loopback_or_token(listen, "TOK", t).map_err(|f| format!("{f:?}"))
        };
        assert!(check("127.0.0.1:1", None).is_ok());
        assert!(check("127.0.0.1:1", Some("x")).is_ok());
        assert!(check("0.0.0.0:1", Some("0123456789abcdef")).is_ok());
        for bad in [
            None,
            Some("x"),
            Some("0123456789abcde"),
            Some("0123456789 abcdef"),
            Some("                "),
        ] {
            let e = check("0.0.0.0:1", bad).unwrap_err();
            assert!(e.contains("TOK"), "{e}");
            if let Some(t) = bad.filter(|t| t.len() > 1) {
                assert!(!e.contains(t), "the token is in the message: {e}");
            }
        }
    }
}
