//! A requests-per-minute cap shared by every job of one provider in this
//! process: a token bucket in its GCRA form (one "theoretical arrival time"
//! instead of a token count), which makes callers wait and never fails them.
//!
//! Burst: `max(1, rpm / 6)` requests, i.e. ten seconds' worth, may go out at
//! once after a quiet spell; past that, requests are spaced `60s / rpm`
//! apart. A provider's own limit is usually per minute, so a small burst keeps
//! a reconcile pass quick without ever exceeding the minute's budget by more
//! than the burst.
//!
//! Uses `tokio::time`, so tests drive it with a paused clock.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Waits callers so that no more than `rpm` requests per minute (after a
/// burst of `max(1, rpm/6)`) pass [`RateLimiter::acquire`].
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    burst: u32,
    /// When the next request would be due if requests were perfectly spaced;
    /// a request may go up to `(burst - 1) * interval` ahead of it.
    tat: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `rpm` of 0 is treated as 1: the config refuses 0, and a limiter that
    /// never lets anything through would only hang jobs.
    pub fn new(rpm: u32) -> Self {
        let rpm = rpm.max(1);
        RateLimiter {
            interval: Duration::from_secs(60) / rpm,
            burst: (rpm / 6).max(1),
            tat: Mutex::new(None),
        }
    }

    /// Requests that may go out at once after a quiet spell.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The spacing between requests once the burst is spent.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits until this request may go out. The slot is taken when the call
    /// starts, so waiters go in call order; a caller dropped while waiting
    /// still used its slot (conservative: never more than the cap).
    pub async fn acquire(&self) {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    fn reserve(&self, now: Instant) -> Duration {
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let due = tat.map_or(now, |t| t.max(now));
        // Saturating/checked: `interval * (burst - 1)` is about ten seconds
        // for any rpm, and `due` moves by `interval` per call, but neither
        // `Duration * u32` nor `Instant + Duration` may panic here.
        let ahead = self.interval.saturating_mul(self.burst.saturating_sub(1));
        let wait = due.saturating_duration_since(now).saturating_sub(ahead);
        *tat = Some(due.checked_add(self.interval).unwrap_or(due));
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_is_ten_seconds_worth_and_at_least_one() {
        assert_eq!(RateLimiter::new(60).burst(), 10);
        assert_eq!(RateLimiter::new(5).burst(), 1);
        assert_eq!(RateLimiter::new(0).burst(), 1);
        assert_eq!(RateLimiter::new(120).interval(), Duration::from_millis(500));
    }

    #[test]
    fn any_rpm_gives_sane_spacing_and_waits() {
        // Every rpm a u32 can hold, sampled: the waits never exceed what the
        // cap implies, and nothing overflows.
        let mut rpms: Vec<u32> = (0..=130).collect();
        rpms.extend([
            1_000,
            59_999,
            60_000,
            60_001,
            1_000_000,
            u32::MAX - 1,
            u32::MAX,
        ]);
        let mut x: u32 = 0x2545_F491;
        for _ in 0..500 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            rpms.push(x);
        }
        let t0 = Instant::now();
        for rpm in rpms {
            let l = RateLimiter::new(rpm);
            let rpm = rpm.max(1);
            assert!(l.burst() >= 1 && l.burst() <= rpm, "{rpm}");
            assert!(l.interval() <= Duration::from_secs(60), "{rpm}");
            // Burst, then one request per interval: the n-th wait is about
            // (n - burst + 1) intervals.
            let calls = l.burst() as u64 + 3;
            let mut last = Duration::ZERO;
            for _ in 0..calls.min(200) {
                let w = l.reserve(t0);
                assert!(w >= last, "{rpm}: waits never shrink at a fixed now");
                assert!(w <= Duration::from_secs(60) * 4, "{rpm}: {w:?}");
                last = w;
            }
        }
    }

    #[test]
    fn reservations_space_requests_after_the_burst() {
        let l = RateLimiter::new(12); // burst 2, one per 5 s
        let t0 = Instant::now();
        assert_eq!(l.reserve(t0), Duration::ZERO);
        assert_eq!(l.reserve(t0), Duration::ZERO);
        assert_eq!(l.reserve(t0), Duration::from_secs(5));
        assert_eq!(l.reserve(t0), Duration::from_secs(10));
        // After a long quiet spell the burst is back.
        let later = t0 + Duration::from_secs(600);
        assert_eq!(l.reserve(later), Duration::ZERO);
        assert_eq!(l.reserve(later), Duration::ZERO);
        assert_eq!(l.reserve(later), Duration::from_secs(5));
    }
}
