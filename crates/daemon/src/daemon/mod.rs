//! `clawcut-worker run`: the daemon. Builds each part, spawns it with the
//! lifecycle as its shutdown handle, and awaits every one before exit:
//!
//! - the scheduler ([`drive`](mod@drive)): slots refilled continuously;
//! - the HTTP server (`crate::http`): probes, metrics, admin API, webhooks;
//! - the signal handler ([`signals`]): SIGTERM/SIGINT drain, SIGHUP reload;
//! - side tasks on `State::tasks` (admin passes, gauges, temp sweeps).
//!
//! systemd hears READY=1 once the schema is checked and the listener bound,
//! WATCHDOG=1 from the scheduler's turns, STATUS= with the slots, and
//! STOPPING=1 on shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sd_notify::NotifyState;
use tracing::{info, warn};

use crate::app;
use crate::config::Config;
use crate::exit::{self, ExitCode, Fatal};
use crate::http;
use crate::media::Storage;
use crate::metrics::Metrics;
use crate::runtime::clock::Clock;
use crate::runtime::lifecycle::{Lifecycle, Phase};
use crate::runtime::systemd::notify;
use crate::state::{State, StateParts};

pub mod drive;
mod multi_host;
pub mod reload;
mod signals;

pub use drive::drive;

/// How long the HTTP server and the side tasks get to finish after the
/// scheduler returned.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

pub async fn run(path: &Path, cfg: Config) -> Result<(), Fatal> {
    app::init_logging(&cfg, "info");
    let mut sigs = signals::Signals::install()?;
    let clock = Clock::system();
    let startup = async {
        let store = app::connect_store(&cfg).await?;
        app::check_schema(&*store).await?;
        // With `media.store` the directory still holds the lock files that
        // order completions on this host.
        std::fs::create_dir_all(&cfg.media.dir)
            .with_context(|| format!("create media.dir {}", cfg.media.dir.display()))
            .exit_with(exit::CANTCREAT)?;
        Ok::<_, Fatal>(store)
    };
    let Some(store) = sigs.unless_stopped(startup).await else {
        info!("shutdown requested during startup; nothing was claimed");
        return Ok(());
    };
    let store = store?;
    let admin_token = std::env::var(&cfg.http.admin_token_env)
        .ok()
        .filter(|t| !t.is_empty());
    let readonly_token = std::env::var(&cfg.http.readonly_token_env)
        .ok()
        .filter(|t| !t.is_empty());
    app::check_readonly_token(&cfg.http, admin_token.as_deref(), readonly_token.as_deref())?;
    let metrics = Arc::new(Metrics::new());
    let worker = Arc::new(app::build_worker(&cfg, path, store, metrics, clock)?);
    info!(worker_id = %worker.id, database = %app::redact_url(&cfg.database.url), media = %worker.storage.describe(), slots = cfg.reconcile.concurrency, "clawcut-worker starting");
    let startup_sweep = async {
        if let Storage::Object(o) = &worker.storage
            && let Err(e) = o.probe().await
        {
            // Not a refusal: completions wait for the store without
            // spending attempts, and it may be back before the first one.
            warn!(store = %o.describe(), error = %crate::report::error_chain(&e), "the object store does not answer; finished jobs will wait for it");
        }
        worker
            .storage
            .sweep(temp_max_idle(cfg.media.stall_timeout.0))
            .await;
        multi_host::warn_if_local_media_is_shared(&cfg, &worker).await;
    };
    if sigs.unless_stopped(startup_sweep).await.is_none() {
        info!("shutdown requested during startup; nothing was claimed");
        return Ok(());
    }

    let lifecycle = Lifecycle::new();
    let state = State::new(StateParts {
        worker,
        config: cfg.clone(),
        config_path: path.to_owned(),
        clock,
        lifecycle: lifecycle.clone(),
        admin_token,
        readonly_token,
    });

    let server = if cfg.http.listen.is_empty() {
        None
    } else {
        let listener = http::bind(
            &cfg.http.listen,
            &cfg.http.admin_token_env,
            state.admin_token.as_deref(),
        )
        .await?;
        info!(listen = %cfg.http.listen, admin_api = state.admin_token.is_some(), "http listening");
        Some(tokio::spawn(http::serve(listener, state.clone())))
    };

    let signals = signals::spawn(state.clone(), sigs);
    notify(&[
        NotifyState::Ready,
        NotifyState::Status("started; first claim pending"),
    ]);

    drive(&state, cfg.reconcile.on_startup).await;
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    lifecycle.advance(Phase::Stopped);
    signals.abort();
    state.tasks.close();
    state.worker.detached.close();
    let side = async {
        state.tasks.wait().await;
        state.worker.detached.wait().await;
    };
    if tokio::time::timeout(CLOSE_GRACE, side).await.is_err() {
        warn!(
            "side tasks (admin passes, completions, gauges) still running after {CLOSE_GRACE:?}; exiting anyway"
        );
    }
    if let Some(server) = server {
        match tokio::time::timeout(CLOSE_GRACE, server).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "http server task failed"),
            Err(_) => warn!("http server still closing after {CLOSE_GRACE:?}; exiting anyway"),
        }
    }
    notify(&[NotifyState::Status("stopped")]);
    info!("clawcut-worker stopped");
    Ok(())
}

pub use crate::media::temp_max_idle;
