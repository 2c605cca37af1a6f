//! What "the loop is alive" means, for `/readyz`, `STATUS=` and `/metrics`.
//!
//! The scheduler records a *tick* every time its loop turns (it turns at
//! least once per `reconcile.interval`, and whenever a slot frees or a
//! webhook wakes it) and a *claim* every time a claim statement succeeds.
//! The loop is alive when it ticked recently and either claimed recently or
//! had no free slot to claim for: a slow download holds only its own slot,
//! so it never makes the loop look dead, and a claim that keeps failing (or
//! a loop that stopped turning) does.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use clawcut_core::Millis;

use crate::runtime::clock::ms;

#[derive(Debug, Default)]
pub struct LoopHealth {
    started_at: AtomicI64,
    last_tick: AtomicI64,
    last_claim_ok: AtomicI64,
    last_claimed: AtomicUsize,
    slots_busy: AtomicUsize,
    slots_total: AtomicUsize,
    last_error: Mutex<Option<String>>,
    /// What `/readyz` answered last (0 never asked, 1 ready, 2 not ready),
    /// so only changes are logged.
    last_readiness: AtomicU8,
    /// When `STATUS=` was last sent.
    status_at: AtomicI64,
}

/// One reading of the loop, at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub now: Millis,
    pub started_at: Millis,
    /// 0 when never.
    pub last_tick: Millis,
    pub last_claim_ok: Millis,
    pub last_claimed: usize,
    pub slots_busy: usize,
    pub slots_total: usize,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive {
        last_tick_age_ms: Millis,
        last_claim_age_ms: Millis,
    },
    Dead {
        reason: String,
    },
}

impl LoopHealth {
    pub fn new(started_at: Millis, slots: usize) -> LoopHealth {
        let h = LoopHealth::default();
        h.started_at.store(started_at, Ordering::Relaxed);
        h.slots_total.store(slots, Ordering::Relaxed);
        h
    }

    pub fn tick(&self, now: Millis, busy: usize, total: usize) {
        self.last_tick.store(now, Ordering::Relaxed);
        self.slots_busy.store(busy, Ordering::Relaxed);
        self.slots_total.store(total, Ordering::Relaxed);
    }

    pub fn claimed(&self, now: Millis, n: usize) {
        self.last_claim_ok.store(now, Ordering::Relaxed);
        self.last_claimed.store(n, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn claim_failed(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    /// Whether a `STATUS=` line is due: at most one per second, however
    /// fast slots turn over.
    pub fn status_due(&self, now: Millis) -> bool {
        let last = self.status_at.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 1_000
            && self
                .status_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Whether `ready` differs from what was answered last time.
    pub fn readiness_changed(&self, ready: bool) -> bool {
        let now = if ready { 1 } else { 2 };
        self.last_readiness.swap(now, Ordering::Relaxed) != now
    }

    pub fn snapshot(&self, now: Millis) -> Snapshot {
        Snapshot {
            now,
            started_at: self.started_at.load(Ordering::Relaxed),
            last_tick: self.last_tick.load(Ordering::Relaxed),
            last_claim_ok: self.last_claim_ok.load(Ordering::Relaxed),
            last_claimed: self.last_claimed.load(Ordering::Relaxed),
            slots_busy: self.slots_busy.load(Ordering::Relaxed),
            slots_total: self.slots_total.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

impl Snapshot {
    /// The loop's liveness given its idle cadence: it must have turned, and
    /// claimed (or been full), within three intervals plus a second of
    /// slack for a slow claim statement. Before the first tick or claim the
    /// clock runs from startup.
    pub fn liveness(&self, interval: Duration) -> Liveness {
        let window = ms(interval).saturating_mul(3).saturating_add(1_000);
        let since = |t: Millis| {
            self.now
                .saturating_sub(if t == 0 { self.started_at } else { t })
        };
        let err = || {
            self.last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        };
        let tick_age = since(self.last_tick);
        if tick_age > window {
            return Liveness::Dead {
                reason: format!(
                    "the scheduler loop has not turned for {}s{}",
                    tick_age / 1000,
                    err()
                ),
            };
        }
        let full = self.slots_total > 0 && self.slots_busy >= self.slots_total;
        let claim_age = since(self.last_claim_ok);
        if claim_age > window && !full {
            let what = if self.last_claim_ok == 0 {
                "no claim has succeeded since startup".to_owned()
            } else {
                format!("last successful claim {}s ago", claim_age / 1000)
            };
            return Liveness::Dead {
                reason: format!("{what}{}", err()),
            };
        }
        Liveness::Alive {
            last_tick_age_ms: tick_age,
            last_claim_age_ms: claim_age,
        }
    }

    /// One line for `STATUS=` and the log.
    pub fn status_line(&self) -> String {
        let claim = if self.last_claim_ok == 0 {
            "no claim yet".to_owned()
        } else {
            format!(
                "last claim {}s ago took {}",
                self.now.saturating_sub(self.last_claim_ok) / 1000,
                self.last_claimed
            )
        };
        let err = self
            .last_error
            .as_deref()
            .map(|e| format!("; database error: {e}"))
            .unwrap_or_default();
        format!(
            "slots {}/{} busy; {claim}{err}",
            self.slots_busy, self.slots_total
        )
    }
}

/// Whether the media directory takes our writes: the fault since the last
/// write that failed, cleared when a job's outputs are all staged. A job whose
/// outputs could not be written waits on it without spending an attempt
/// (`worker::outputs`); `/readyz`'s reason and `/metrics` show it.
#[derive(Debug, Default)]
pub struct MediaHealth {
    fault: Mutex<Option<MediaFault>>,
}

/// The media directory failing our writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFault {
    /// The first failure of this run of failures.
    pub since: Millis,
    /// Failures in a row, every job's counted.
    pub failures: u32,
    /// Out of space (ENOSPC or a quota), as opposed to any other write error.
    pub disk_full: bool,
    /// The last failure, without the temp file's path.
    pub error: String,
}

impl MediaHealth {
    /// One more failed write; the fault as it is now.
    pub fn failed(&self, now: Millis, disk_full: bool, error: String) -> MediaFault {
        let mut f = self.fault.lock().unwrap_or_else(|e| e.into_inner());
        let next = match f.take() {
            Some(old) => MediaFault {
                since: old.since,
                failures: old.failures.saturating_add(1),
                disk_full,
                error,
            },
            None => MediaFault {
                since: now,
                failures: 1,
                disk_full,
                error,
            },
        };
        *f = Some(next.clone());
        next
    }

    /// A write went through: the fault this ends, if there was one.
    pub fn wrote(&self) -> Option<MediaFault> {
        self.fault.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub fn fault(&self) -> Option<MediaFault> {
        self.fault.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Millis = 1_000;

    fn snap(now: Millis) -> Snapshot {
        Snapshot {
            now,
            started_at: 0,
            last_tick: now,
            last_claim_ok: now,
            last_claimed: 0,
            slots_busy: 0,
            slots_total: 4,
            last_error: None,
        }
    }

    #[test]
    fn a_loop_that_turns_and_claims_is_alive() {
        let s = snap(100 * S);
        assert!(matches!(
            s.liveness(Duration::from_secs(2)),
            Liveness::Alive { .. }
        ));
    }

    #[test]
    fn full_slots_are_not_a_dead_loop() {
        // Four slow downloads: nothing to claim for, but the loop turns.
        let s = Snapshot {
            last_claim_ok: 10 * S,
            slots_busy: 4,
            ..snap(100 * S)
        };
        assert!(matches!(
            s.liveness(Duration::from_secs(2)),
            Liveness::Alive { .. }
        ));
    }

    #[test]
    fn claims_that_keep_failing_make_the_loop_dead_and_say_why() {
        let s = Snapshot {
            last_claim_ok: 10 * S,
            last_error: Some("claim jobs: pool timed out".into()),
            ..snap(100 * S)
        };
        match s.liveness(Duration::from_secs(2)) {
            Liveness::Dead { reason } => {
                assert!(
                    reason.contains("90s ago") && reason.contains("pool timed out"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_loop_that_stopped_turning_is_dead_even_when_full() {
        let s = Snapshot {
            last_tick: 10 * S,
            slots_busy: 4,
            ..snap(100 * S)
        };
        assert!(matches!(
            s.liveness(Duration::from_secs(2)),
            Liveness::Dead { .. }
        ));
    }

    #[test]
    fn before_the_first_claim_the_clock_runs_from_startup() {
        let young = Snapshot {
            started_at: 99 * S,
            last_tick: 0,
            last_claim_ok: 0,
            ..snap(100 * S)
        };
        assert!(matches!(
            young.liveness(Duration::from_secs(2)),
            Liveness::Alive { .. }
        ));
        let old = Snapshot {
            started_at: 10 * S,
            last_tick: 0,
            last_claim_ok: 0,
            ..snap(100 * S)
        };
        match old.liveness(Duration::from_secs(2)) {
            Liveness::Dead { reason } => assert!(reason.contains("not turned"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_media_fault_counts_failures_in_a_row_until_a_write_succeeds() {
        let m = MediaHealth::default();
        assert_eq!(m.fault(), None);
        assert_eq!(m.failed(5 * S, true, "full".into()).failures, 1);
        let f = m.failed(9 * S, false, "eio".into());
        assert_eq!((f.since, f.failures, f.disk_full), (5 * S, 2, false));
        assert_eq!(m.wrote(), Some(f));
        assert_eq!(m.fault(), None);
        assert_eq!(m.wrote(), None);
        assert_eq!(m.failed(20 * S, true, "full".into()).since, 20 * S);
    }

    #[test]
    fn huge_intervals_do_not_overflow() {
        let s = Snapshot {
            last_tick: 0,
            last_claim_ok: 0,
            ..snap(Millis::MAX)
        };
        assert!(matches!(s.liveness(Duration::MAX), Liveness::Alive { .. }));
    }
}
