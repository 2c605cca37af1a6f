//! systemd's notify protocol: READY, STATUS, STOPPING, and the watchdog,
//! fed by the scheduler loop itself. A loop stuck anywhere stops feeding it
//! and systemd restarts the service (`WatchdogSec`, `Restart=on-failure`).
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::warn;

use crate::runtime::clock::{Clock, ms};

pub fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!(error = %e, "sd_notify failed");
    }
}

#[derive(Debug)]
pub struct Watchdog {
    period: Option<Duration>,
    clock: Clock,
    last_ping_ms: AtomicI64,
}

impl Watchdog {
    /// From `WATCHDOG_USEC`/`WATCHDOG_PID`, as systemd sets them.
    pub fn from_env(clock: Clock) -> Watchdog {
        Watchdog {
            period: sd_notify::watchdog_enabled(),
            clock,
            last_ping_ms: AtomicI64::new(i64::MIN / 2),
        }
    }

    /// The loop turned: send WATCHDOG=1, at most four times per period.
    pub fn beat(&self) {
        let Some(period) = self.period else { return };
        let now = self.clock.now_ms();
        let last = self.last_ping_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= ms(period / 4)
            && self
                .last_ping_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
    }

    /// The loop must not sleep longer than this between turns.
    pub fn max_sleep(&self) -> Option<Duration> {
        self.period.map(|p| p / 3)
    }
}
