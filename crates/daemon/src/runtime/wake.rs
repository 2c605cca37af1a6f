//! Waking the scheduler early (a webhook made a job due), debounced: at
//! most one wake per `backoff.initial`, so a flood of webhooks costs at most
//! one extra claim (and one poll per job) per that period. A wake inside
//! the period is not dropped but deferred to its end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::runtime::clock::{Clock, ms};

#[derive(Debug)]
pub struct Wake {
    notify: Notify,
    clock: Clock,
    woken_at: AtomicI64,
    deferred: AtomicBool,
}

impl Wake {
    pub fn new(clock: Clock) -> Arc<Wake> {
        Arc::new(Wake {
            notify: Notify::new(),
            clock,
            woken_at: AtomicI64::new(i64::MIN / 2),
            deferred: AtomicBool::new(false),
        })
    }

    /// Wake the scheduler soon: now, or at the end of the current `floor`.
    pub fn soon(self: &Arc<Self>, floor: Duration) {
        let floor = ms(floor);
        let now = self.clock.now_ms();
        let last = self.woken_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= floor {
            if self
                .woken_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                self.notify.notify_one();
            }
        } else if !self.deferred.swap(true, Ordering::Relaxed) {
            let me = self.clone();
            let wait = Duration::from_millis(
                u64::try_from(last.saturating_add(floor).saturating_sub(now)).unwrap_or(0),
            );
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                me.deferred.store(false, Ordering::Relaxed);
                me.woken_at.store(me.clock.now_ms(), Ordering::Relaxed);
                me.notify.notify_one();
            });
        }
    }

    /// Resolves at the next wake (one stored permit survives between waits).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn woke(w: &Wake) -> bool {
        tokio::time::timeout(Duration::from_millis(1), w.notified())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_wakes_once_per_floor_and_the_last_wake_is_deferred_not_lost() {
        let w = Wake::new(Clock::tokio(1_000_000));
        let floor = Duration::from_secs(5);
        w.soon(floor);
        assert!(woke(&w).await, "the first wake is immediate");
        for _ in 0..100 {
            w.soon(floor);
        }
        assert!(
            !woke(&w).await,
            "a flood inside the floor does not wake at once"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        tokio::task::yield_now().await;
        assert!(
            woke(&w).await,
            "the deferred wake arrives at the end of the floor"
        );
        assert!(!woke(&w).await, "and only one");
    }
}
