//! The one clock of the daemon. Every "now" the daemon writes into a row or
//! compares with one comes from [`Clock::now_ms`].
//!
//! Production uses the system's wall clock: leases are compared across
//! replicas, so every host must speak the same time. Tests that exercise
//! time logic build a [`Clock::tokio`] instead: wall time that advances with
//! tokio's clock, so `tokio::time::pause()` and `advance()` move it without
//! sleeping.

use clawcut_core::Millis;

#[derive(Debug, Clone, Copy)]
pub enum Clock {
    System,
    /// `base_ms` at `base`, advancing with `tokio::time::Instant`.
    Tokio {
        base_ms: Millis,
        base: tokio::time::Instant,
    },
}

impl Clock {
    pub fn system() -> Clock {
        Clock::System
    }

    /// A clock for tests under `tokio::time::pause()`; starts at `base_ms`.
    #[cfg_attr(not(test), expect(dead_code, reason = "test-only constructor"))]
    pub fn tokio(base_ms: Millis) -> Clock {
        Clock::Tokio {
            base_ms,
            base: tokio::time::Instant::now(),
        }
    }

    /// Unix epoch milliseconds, UTC.
    pub fn now_ms(&self) -> Millis {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(Millis::MAX)),
            Clock::Tokio { base_ms, base } => base_ms
                .saturating_add(i64::try_from(base.elapsed().as_millis()).unwrap_or(Millis::MAX)),
        }
    }
}

/// A duration as i64 milliseconds, saturating (config values are bounded,
/// but arithmetic on them must never wrap).
pub fn ms(d: std::time::Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

/// `now + d` on tokio's clock, or a far future (a year) when it would
/// overflow: a sleep that long is "never" for a daemon.
pub fn deadline_after(d: std::time::Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(365 * 86_400))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_moves_with_paused_time() {
        let c = Clock::tokio(1_000);
        assert_eq!(c.now_ms(), 1_000);
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(c.now_ms(), 3_500);
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(Clock::system().now_ms() > 1_577_836_800_000);
    }

    #[tokio::test(start_paused = true)]
    async fn huge_deadlines_do_not_overflow() {
        let far = deadline_after(Duration::from_secs(u64::MAX / 2));
        assert!(far > tokio::time::Instant::now());
        assert_eq!(ms(Duration::from_secs(u64::MAX)), Millis::MAX);
    }
}
