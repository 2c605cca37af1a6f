//! SIGTERM/SIGINT: stop claiming, let in-flight jobs finish within
//! `reconcile.shutdown_grace`, then release the leases of those that did
//! not (a second signal ends the grace early). SIGHUP: reload the config.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use sd_notify::NotifyState;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;
use tracing::info;

use crate::daemon::reload::reload;
use crate::exit::Fatal;
use crate::runtime::lifecycle::Phase;
use crate::runtime::systemd::notify;
use crate::state::State;

/// The signal streams, installed first thing at startup: a SIGTERM that
/// arrives while the daemon connects and checks the schema ends it
/// cleanly (exit 0) instead of by the signal's default action.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> Result<Signals, Fatal> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("install SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("install SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("install SIGHUP handler")?,
        })
    }

    /// Run `startup` unless SIGTERM or SIGINT comes first (`None`). A
    /// SIGHUP meanwhile is moot: the config is being read anyway.
    pub async fn unless_stopped<T>(&mut self, startup: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(startup);
        loop {
            tokio::select! {
                out = &mut startup => return Some(out),
                _ = self.term.recv() => return None,
                _ = self.int.recv() => return None,
                _ = self.hup.recv() => {}
            }
        }
    }
}

pub fn spawn(state: Arc<State>, signals: Signals) -> JoinHandle<()> {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => reload(&state),
            }
        }
        let grace = state.config().reconcile.shutdown_grace.0;
        info!(grace = %humantime::format_duration(grace), "shutdown requested: claiming nothing new, letting in-flight jobs finish");
        notify(&[NotifyState::Stopping]);
        state.lifecycle.advance(Phase::Draining);
        let mut phases = state.lifecycle.phases();
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
            // Drained before the grace ran out: nothing left to abort.
            () = phases.reached(Phase::Stopped) => return,
        }
        info!("grace period over: releasing the leases of unfinished jobs");
        state.lifecycle.advance(Phase::Aborting);
    })
}
