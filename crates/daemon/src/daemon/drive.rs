//! The scheduler: `reconcile.concurrency` slots, refilled continuously.
//!
//! The loop claims whenever slots are free and there may be work: at
//! startup (when `on_startup`), when a slot frees after a claim that came
//! back full (more rows are waiting), when a webhook wakes it, and at the
//! idle cadence (`reconcile.interval`) otherwise. Each claim asks for at
//! most the free slots and at most `batch_size`; each claimed row gets its
//! own slot (a task), so a slow download holds only its own slot and never
//! delays the claims or the other jobs.
//!
//! The loop itself never awaits a job: it awaits the claim statement, the
//! next finished slot, a wake, a phase change or its timer. Every turn is a
//! *tick* for readiness and the watchdog. On `Draining` it stops claiming
//! and waits for the slots; on `Aborting` each slot gives its lease back;
//! it returns when every slot has ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clawcut_store::Claimed;
use sd_notify::NotifyState;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::daemon::temp_max_idle;
use crate::report::{JobOutcome, JobReport, error_chain};
use crate::runtime::clock::deadline_after;
use crate::runtime::systemd::notify;
use crate::state::State;
use crate::worker::health::until;
use crate::worker::{ClaimScope, Mode};

/// Refresh the job-count gauges at most this often. They read only the due
/// and the parked rows (`Store::gauges`), beside the loop, never in it.
const GAUGES_EVERY: Duration = Duration::from_secs(15);

/// Due probes are looked for at most this often, so a board that cannot be
/// read again (the database away) never makes the loop spin.
const PROBE_CHECK_EVERY: Duration = Duration::from_millis(250);

pub async fn drive(state: &Arc<State>, on_startup: bool) {
    let mut slots: JoinSet<JobReport> = JoinSet::new();
    let mut phases = state.lifecycle.phases();
    let mut claim_now = on_startup;
    // The last claim filled its limit: a slot that frees is refilled at once.
    let mut more_waiting = false;
    let mut next_idle_claim = deadline_after(state.config().reconcile.interval.0);
    let mut next_sweep = Instant::now();
    let mut next_gauges = Instant::now();
    let gauges_running = Arc::new(AtomicBool::new(false));
    let mut logged_drain = false;
    let mut next_probe_check = Instant::now();
    loop {
        let s = state.worker.settings();
        let interval = state.config().reconcile.interval.0;
        let running = phases.is_running();
        if !running {
            if slots.is_empty() {
                break;
            }
            if !logged_drain {
                info!(
                    in_flight = slots.len(),
                    "draining: waiting for the jobs in flight"
                );
                logged_drain = true;
            }
        }
        if running {
            state.worker.refresh_pauses_if_stale().await;
        }
        if running && claim_now {
            claim_now = false;
            let free = s.concurrency.saturating_sub(slots.len());
            if free > 0 {
                let limit = u32::try_from(free.min(s.batch_size as usize)).unwrap_or(u32::MAX);
                let started = Instant::now();
                match state.worker.claim(limit, &ClaimScope::default()).await {
                    Ok(claimed) => {
                        state.worker.metrics.passes.inc();
                        state
                            .worker
                            .metrics
                            .claim_duration
                            .observe(started.elapsed().as_secs_f64());
                        state.health.claimed(state.clock.now_ms(), claimed.len());
                        more_waiting = claimed.len() >= limit as usize;
                        for c in claimed {
                            spawn_slot(&mut slots, state, c, Mode::default());
                        }
                    }
                    Err(e) => {
                        let msg = error_chain(&e);
                        error!(error = %msg, "claim failed; retrying at the next interval");
                        state.health.claim_failed(msg);
                        more_waiting = false;
                    }
                }
            } else {
                // Full: the next freed slot claims.
                more_waiting = true;
            }
            // Whatever this turn did, the idle cadence restarts from here.
            next_idle_claim = deadline_after(interval);
        }
        if running && Instant::now() >= next_probe_check {
            next_probe_check = deadline_after(PROBE_CHECK_EVERY);
            probe_due(state, &mut slots, s.concurrency).await;
        }
        let now = Instant::now();
        tick(state, slots.len(), s.concurrency);
        if now >= next_sweep {
            next_sweep = deadline_after(interval);
            let worker = state.worker.clone();
            let idle = temp_max_idle(s.limits.stall_window);
            state
                .tasks
                .spawn(async move { worker.storage.sweep(idle).await });
        }
        if now >= next_gauges && !gauges_running.swap(true, Ordering::AcqRel) {
            next_gauges = deadline_after(GAUGES_EVERY);
            let st = state.clone();
            let flag = gauges_running.clone();
            state.tasks.spawn(async move {
                update_gauges(&st).await;
                flag.store(false, Ordering::Release);
            });
        }
        // Wake at least often enough to feed the watchdog.
        let slice = deadline_after(state.watchdog.max_sleep().unwrap_or(interval));
        // Draining: no more claims, so the idle cadence no longer matters.
        let wake_at = if running {
            let probe_at =
                state.worker.health.board().next_probe_at().map(|at| {
                    deadline_after(until(at, state.clock.now_ms())).max(next_probe_check)
                });
            next_idle_claim.min(slice).min(probe_at.unwrap_or(slice))
        } else {
            slice
        };
        tokio::select! {
            Some(joined) = slots.join_next(), if !slots.is_empty() => {
                finished(state, joined);
                while let Some(j) = slots.try_join_next() {
                    finished(state, j);
                }
                claim_now = more_waiting;
            }
            () = state.wake.notified(), if running => claim_now = true,
            () = tokio::time::sleep_until(wake_at) => {
                if running && Instant::now() >= next_idle_claim {
                    claim_now = true;
                }
            }
            () = phases.changed() => {}
        }
    }
    tick(state, 0, state.worker.settings().concurrency);
}

fn spawn_slot(slots: &mut JoinSet<JobReport>, state: &Arc<State>, c: Claimed, mode: Mode) {
    let worker = state.worker.clone();
    let phases = state.lifecycle.phases();
    slots.spawn(async move { worker.work(c, mode, phases).await });
}

/// Probe each paused provider whose probe is due, one job each, while
/// slots are free (`worker::health`).
async fn probe_due(state: &Arc<State>, slots: &mut JoinSet<JobReport>, concurrency: usize) {
    let now = state.clock.now_ms();
    let board = state.worker.health.board();
    for pause in board.pauses.values().filter(|p| p.probe_at <= now) {
        if slots.len() >= concurrency {
            break;
        }
        match state.worker.probe(pause).await {
            Ok(Some(c)) => spawn_slot(
                slots,
                state,
                c,
                Mode {
                    force: false,
                    probe: true,
                },
            ),
            Ok(None) => {}
            Err(e) => {
                warn!(provider = %pause.provider, error = %error_chain(&e), "could not take the probe of a paused provider")
            }
        }
    }
}

fn finished(state: &State, joined: Result<JobReport, tokio::task::JoinError>) {
    match joined {
        Ok(r) if r.action == JobOutcome::Error => {
            warn!(job = %r.job_id, detail = %r.detail, "slot ended with an error")
        }
        Ok(_) => {}
        // A panic in a slot is a bug; the job's lease expires and it is
        // redone. The loop goes on.
        Err(e) => error!(error = %e, "a job slot panicked or was cancelled"),
    }
    state.watchdog.beat();
}

/// One turn of the loop: readiness, the watchdog, `STATUS=`, gauges.
fn tick(state: &State, busy: usize, total: usize) {
    let now = state.clock.now_ms();
    state.health.tick(now, busy, total);
    state.watchdog.beat();
    let m = &state.worker.metrics;
    m.slots_busy.set(i64::try_from(busy).unwrap_or(i64::MAX));
    m.slots_total.set(i64::try_from(total).unwrap_or(i64::MAX));
    if state.health.status_due(now) {
        notify(&[NotifyState::Status(
            &state.health.snapshot(now).status_line(),
        )]);
    }
}

async fn update_gauges(state: &State) {
    let worker = &state.worker;
    let s = worker.settings();
    let now = worker.now_ms();
    match worker.store().gauges(now, &s.rules).await {
        Ok(r) => {
            let m = &worker.metrics;
            m.eligible_jobs
                .set(i64::try_from(r.eligible).unwrap_or(i64::MAX));
            m.needs_operator_jobs
                .set(i64::try_from(r.needs_operator).unwrap_or(i64::MAX));
            m.oldest_eligible_age_seconds.set(
                r.oldest_eligible_updated_at
                    .map_or(0, |t| now.saturating_sub(t).max(0) / 1000),
            );
        }
        Err(e) => warn!(error = %error_chain(&e), "could not read job counts for metrics"),
    }
}
