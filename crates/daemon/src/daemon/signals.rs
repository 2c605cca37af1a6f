//! SIGTERM/SIGINT: stop claiming, let in-flight jobs finish within
//! `reconcile.shutdown_grace`, then release the leases of those that did
//! not (a second signal ends the grace early). SIGHUP: reload the config.

use std::sync::Arc;

use anyhow::Context;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tracing::info;

use crate::daemon::reload::reload;
use crate::exit::Fatal;
use crate::runtime::lifecycle::Phase;
use crate::runtime::systemd::notify;
use crate::state::State;

pub fn spawn(state: Arc<State>) -> Result<JoinHandle<()>, Fatal> {
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("install SIGHUP handler")?;
    Ok(tokio::spawn(async move {
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
    }))
}
