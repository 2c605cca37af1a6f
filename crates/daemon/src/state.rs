//! [`State`]: everything a running daemon's parts share, built once by
//! `daemon::run` (or `demo`) and handed to the scheduler, the HTTP server
//! and the signal handler.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::runtime::clock::Clock;
use crate::runtime::health::LoopHealth;
use crate::runtime::lifecycle::Lifecycle;
use crate::runtime::systemd::Watchdog;
use crate::runtime::wake::Wake;
use crate::worker::Worker;

pub struct State {
    pub worker: Arc<Worker>,
    config: RwLock<Arc<Config>>,
    pub config_path: PathBuf,
    pub clock: Clock,
    pub lifecycle: Lifecycle,
    pub health: LoopHealth,
    pub wake: Arc<Wake>,
    pub watchdog: Watchdog,
    /// Read once at startup from the env var `http.admin_token_env` names.
    pub admin_token: Option<String>,
    /// Read once at startup from the env var `http.readonly_token_env`
    /// names: the panel's look-only token.
    pub readonly_token: Option<String>,
    /// The operator panel's sessions, sign-in throttle and bulk runs.
    pub panel: crate::http::ops::Panel,
    /// Work started outside the scheduler's slots (admin-triggered passes,
    /// gauge refreshes): awaited before the process exits.
    pub tasks: TaskTracker,
}

/// What [`State::new`] needs.
pub struct StateParts {
    pub worker: Arc<Worker>,
    pub config: Config,
    pub config_path: PathBuf,
    pub clock: Clock,
    pub lifecycle: Lifecycle,
    pub admin_token: Option<String>,
    pub readonly_token: Option<String>,
}

impl State {
    pub fn new(p: StateParts) -> Arc<State> {
        let slots = p.config.reconcile.concurrency;
        Arc::new(State {
            health: LoopHealth::new(p.clock.now_ms(), slots),
            wake: Wake::new(p.clock),
            watchdog: Watchdog::from_env(p.clock),
            worker: p.worker,
            config: RwLock::new(Arc::new(p.config)),
            config_path: p.config_path,
            clock: p.clock,
            lifecycle: p.lifecycle,
            admin_token: p.admin_token,
            readonly_token: p.readonly_token,
            panel: crate::http::ops::Panel::default(),
            tasks: TaskTracker::new(),
        })
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn replace_config(&self, cfg: Config) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(cfg);
    }

    /// A webhook made a job due: wake the scheduler, debounced by
    /// `backoff.initial`.
    pub fn wake_soon(&self) {
        self.wake.soon(self.worker.settings().backoff.initial);
    }
}
