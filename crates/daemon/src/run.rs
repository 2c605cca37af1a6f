//! `clawcut-worker run`: the daemon. A pass at startup, then one per
//! interval; SIGTERM/SIGINT drain, SIGHUP reloads; systemd is told about
//! each step (READY, WATCHDOG, STATUS, STOPPING).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::app;
use crate::config::Config;
use crate::exit::{self, ExitCode, Fatal, fatal};
use crate::http;
use crate::metrics::Metrics;
use crate::worker::{PassOptions, PassSummary, Phase, Worker, error_chain, now_ms};

/// What `/readyz`, the loop and the signal handler share.
pub struct Shared {
    pub worker: Arc<Worker>,
    pub config: RwLock<Arc<Config>>,
    pub config_path: PathBuf,
    /// When the last pass finished without a database error (ms; 0 = never).
    pub last_pass_ok_at: AtomicI64,
    /// When this process started (ms).
    pub started_at: i64,
    pub last_pass_error: Mutex<Option<String>>,
    /// Wakes the loop early (a webhook made a job due).
    pub wake: tokio::sync::Notify,
    /// When a webhook last woke the loop (ms), to debounce floods.
    pub woken_at: AtomicI64,
    /// A deferred wake is scheduled.
    pub wake_deferred: AtomicBool,
    /// When the job-count gauges were last refreshed (ms).
    pub gauges_at: AtomicI64,
    /// What `/readyz` answered last (0 never asked, 1 ready, 2 not ready),
    /// so only changes are logged.
    pub last_readiness: AtomicU8,
    pub phase: watch::Receiver<Phase>,
    /// Read once at startup from the env var `http.admin_token_env` names.
    pub admin_token: Option<String>,
}

impl Shared {
    pub fn new(
        worker: Arc<Worker>,
        cfg: Config,
        config_path: PathBuf,
        phase: watch::Receiver<Phase>,
        admin_token: Option<String>,
    ) -> Shared {
        Shared {
            worker,
            config: RwLock::new(Arc::new(cfg)),
            config_path,
            last_pass_ok_at: AtomicI64::new(0),
            started_at: now_ms(),
            last_pass_error: Mutex::new(None),
            last_readiness: AtomicU8::new(0),
            gauges_at: AtomicI64::new(0),
            wake: tokio::sync::Notify::new(),
            woken_at: AtomicI64::new(0),
            wake_deferred: AtomicBool::new(false),
            phase,
            admin_token,
        }
    }

    /// Run a pass soon, but wake the loop at most once per
    /// `backoff.initial`: a flood of webhooks costs at most one extra pass
    /// (and one poll per job) per that period. A wake inside the period is
    /// not dropped but deferred to its end.
    pub fn wake_soon(self: &Arc<Self>) {
        let floor = self.worker.settings().backoff.initial.as_millis() as i64;
        let now = now_ms();
        let last = self.woken_at.load(Ordering::Relaxed);
        if now - last >= floor {
            if self
                .woken_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                self.wake.notify_one();
            }
        } else if !self.wake_deferred.swap(true, Ordering::Relaxed) {
            let me = self.clone();
            let wait = std::time::Duration::from_millis((last + floor - now).max(0) as u64);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                me.wake_deferred.store(false, Ordering::Relaxed);
                me.woken_at.store(now_ms(), Ordering::Relaxed);
                me.wake.notify_one();
            });
        }
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn notify(state: &[NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this is a no-op.
    if let Err(e) = sd_notify::notify(state) {
        warn!(error = %e, "sd_notify failed");
    }
}

pub async fn run(path: &Path, cfg: Config) -> Result<(), Fatal> {
    app::init_logging(&cfg, "info");
    let store = app::connect_store(&cfg).await?;
    app::check_schema(&*store).await?;
    std::fs::create_dir_all(&cfg.media.dir)
        .with_context(|| format!("create media.dir {}", cfg.media.dir.display()))
        .exit_with(exit::CANTCREAT)?;
    sweep_temp(&cfg.media.dir).await;
    let admin_token = std::env::var(&cfg.http.admin_token_env)
        .ok()
        .filter(|t| !t.is_empty());
    let metrics = Arc::new(Metrics::new());
    let worker = Arc::new(app::build_worker(&cfg, path, store, metrics)?);
    info!(worker_id = %worker.id, database = %app::redact_url(&cfg.database.url), "clawcut-worker starting");

    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let shared = Arc::new(Shared::new(
        worker,
        cfg.clone(),
        path.to_owned(),
        phase_rx,
        admin_token,
    ));

    if !cfg.http.listen.is_empty() {
        let listener = http::bind(&cfg.http.listen, shared.admin_token.is_some()).await?;
        info!(listen = %cfg.http.listen, admin_api = shared.admin_token.is_some(), "http listening");
        tokio::spawn(http::serve(listener, shared.clone()));
    }

    spawn_signal_handler(shared.clone(), phase_tx)?;
    notify(&[
        NotifyState::Ready,
        NotifyState::Status("started; first pass pending"),
    ]);

    drive(&shared, cfg.reconcile.on_startup).await;
    notify(&[NotifyState::Stopping, NotifyState::Status("stopped")]);
    info!("clawcut-worker stopped");
    Ok(())
}

/// The loop itself: a pass at startup (when asked), then one per interval;
/// a pass that filled its batch is followed by another at once. Returns when
/// the phase leaves `Running` and the current pass has drained.
pub async fn drive(shared: &Shared, on_startup: bool) {
    let mut first = on_startup;
    let mut phase = shared.phase.clone();
    loop {
        if !first {
            let interval = shared.config().reconcile.interval.0;
            let wake_at = tokio::time::Instant::now() + interval;
            // Sleep in slices short enough to keep feeding the watchdog.
            let slice = shared.worker.liveness.max_sleep().unwrap_or(interval);
            while tokio::time::Instant::now() < wake_at && *phase.borrow() == Phase::Running {
                let until = wake_at.min(tokio::time::Instant::now() + slice);
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    _ = phase.changed() => {}
                    () = shared.wake.notified() => break,
                }
                shared.worker.liveness.beat();
            }
        }
        first = false;
        if *phase.borrow() != Phase::Running {
            return;
        }
        loop {
            let batch = shared.worker.settings().batch_size as usize;
            let claimed = one_pass(shared, &PassOptions::default())
                .await
                .map_or(0, |s| s.claimed);
            shared.worker.liveness.beat();
            sweep_temp(&shared.worker.settings().media_dir).await;
            if claimed < batch || *phase.borrow() != Phase::Running {
                break;
            }
        }
    }
}

/// Temp files idle this long belong to a dead process (a live download
/// writes every few milliseconds). Removing a live-but-stalled one is safe:
/// its rename fails and that job retries on the backoff schedule.
const TEMP_MAX_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Remove temporary download files left by a crashed process.
pub async fn sweep_temp(media: &Path) {
    let media = media.to_owned();
    let res = tokio::task::spawn_blocking(move || {
        clawcut_providers::cleanup_stale_temp_older_than(&media, TEMP_MAX_IDLE)
    })
    .await;
    match res {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => info!(removed = n, "removed stale temporary download files"),
        Ok(Err(e)) => warn!(error = %e, "could not clean stale temporary files"),
        Err(e) => warn!(error = %e, "temp sweep task failed"),
    }
}

/// One pass with its bookkeeping: health, gauges, a summary line, STATUS=.
pub async fn one_pass(shared: &Shared, opts: &PassOptions) -> Result<PassSummary, String> {
    let worker = &shared.worker;
    match worker.pass(opts, &shared.phase).await {
        Ok(summary) => {
            shared.last_pass_ok_at.store(now_ms(), Ordering::Relaxed);
            *shared
                .last_pass_error
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = None;
            // Counting by status reads every row (115 ms on PostgreSQL with a
            // million finished jobs, BENCHMARKS.md): at most every 15 s.
            let now = now_ms();
            if now - shared.gauges_at.load(Ordering::Relaxed) >= GAUGES_EVERY_MS {
                shared.gauges_at.store(now, Ordering::Relaxed);
                update_gauges(worker).await;
            }
            let line = format!(
                "last pass: {} claimed, {} completed, {} failed, {} snoozed, {} retried in {} ms",
                summary.claimed,
                summary.count("completed"),
                summary.count("failed") + summary.count("expired"),
                summary.count("snoozed"),
                summary.count("retry"),
                summary.duration_ms
            );
            if summary.claimed > 0 {
                info!("{line}");
            }
            notify(&[NotifyState::Status(&line)]);
            Ok(summary)
        }
        Err(e) => {
            let msg = error_chain(&e);
            error!(error = %msg, "pass failed; retrying next interval");
            *shared
                .last_pass_error
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(msg.clone());
            notify(&[NotifyState::Status(&format!("database error: {msg}"))]);
            Err(msg)
        }
    }
}

const GAUGES_EVERY_MS: i64 = 15_000;

async fn update_gauges(worker: &Worker) {
    let s = worker.settings();
    let now = now_ms();
    match worker.store().status_report(now, &s.rules).await {
        Ok(r) => {
            let m = &worker.metrics;
            m.eligible_jobs.set(r.eligible as i64);
            m.needs_operator_jobs.set(r.needs_operator as i64);
            m.oldest_eligible_age_seconds.set(
                r.oldest_eligible_updated_at
                    .map_or(0, |t| (now - t).max(0) / 1000),
            );
        }
        Err(e) => warn!(error = %error_chain(&e), "could not read job counts for metrics"),
    }
}

fn spawn_signal_handler(shared: Arc<Shared>, phase_tx: watch::Sender<Phase>) -> Result<(), Fatal> {
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("install SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => reload(&shared),
            }
        }
        let grace = shared.config().reconcile.shutdown_grace.0;
        info!(grace = %humantime::format_duration(grace), "shutdown requested: claiming nothing new, letting in-flight jobs finish");
        notify(&[NotifyState::Stopping]);
        let _ = phase_tx.send(Phase::Draining);
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("grace period over: releasing the leases of unfinished jobs");
        let _ = phase_tx.send(Phase::Abort);
    });
    Ok(())
}

/// SIGHUP: re-read the config. Cadence, thresholds, limits and backoff take
/// effect at the next pass; leases in flight are untouched. A bad file is
/// refused and the running config kept. Changes that need a restart
/// (database, providers, http) are named in the log.
pub fn reload(shared: &Shared) {
    let path = &shared.config_path;
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "SIGHUP: new config rejected; keeping the running one");
            return;
        }
    };
    let old = shared.config();
    let mut needs_restart = Vec::new();
    if new.database.url != old.database.url {
        needs_restart.push("database.url");
    }
    if format!("{:?}", new.providers) != format!("{:?}", old.providers) {
        needs_restart.push("providers");
    }
    if new.http.listen != old.http.listen || new.http.admin_token_env != old.http.admin_token_env {
        needs_restart.push("http");
    }
    if new.media.dir != old.media.dir {
        needs_restart.push("media.dir");
    }
    let mut applied = new.clone();
    // Keep what cannot change live, so the running process stays coherent.
    applied.database = old.database.clone();
    applied.providers = old.providers.clone();
    applied.http = old.http.clone();
    applied.media.dir = old.media.dir.clone();
    shared.worker.replace_settings(app::settings(&applied));
    *shared.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(applied);
    if needs_restart.is_empty() {
        info!("SIGHUP: config reloaded");
    } else {
        warn!(keys = ?needs_restart, "SIGHUP: config reloaded; these keys changed but need a restart to apply");
    }
}

pub fn require_loopback_or_token(listen: &str, has_token: bool) -> Result<(), Fatal> {
    let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
        fatal(
            exit::CONFIG,
            format!("http.listen {listen:?} is not an address"),
        )
    })?;
    if !addr.ip().is_loopback() && !has_token {
        return Err(fatal(
            exit::CONFIG,
            format!(
                "refusing to listen on non-loopback {listen} without an admin token: set the variable named by http.admin_token_env, or listen on 127.0.0.1"
            ),
        ));
    }
    Ok(())
}
