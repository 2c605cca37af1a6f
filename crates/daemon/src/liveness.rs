//! systemd's watchdog, fed by progress of the loop itself: passes that
//! finish, jobs that finish, download bytes that arrive, and the loop's own
//! sleep between passes. A loop stuck anywhere stops feeding it and systemd
//! restarts the service (`WatchdogSec`, `Restart=on-failure`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

use crate::worker::now_ms;

pub struct Liveness {
    period: Option<Duration>,
    last_ping_ms: AtomicI64,
}

impl Liveness {
    /// From `WATCHDOG_USEC`/`WATCHDOG_PID`, as systemd sets them.
    pub fn from_env() -> Liveness {
        Liveness {
            period: sd_notify::watchdog_enabled(),
            last_ping_ms: AtomicI64::new(0),
        }
    }

    /// Progress happened: send WATCHDOG=1, at most four times per period.
    pub fn beat(&self) {
        let Some(period) = self.period else { return };
        let now = now_ms();
        let last = self.last_ping_ms.load(Ordering::Relaxed);
        if now - last >= (period / 4).as_millis() as i64
            && self
                .last_ping_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
    }

    /// The loop must not sleep longer than this between beats.
    pub fn max_sleep(&self) -> Option<Duration> {
        self.period.map(|p| p / 3)
    }
}
