//! Keeping a claimed job's lease alive while, and only while, the job makes
//! progress.
//!
//! Each job in a slot runs beside its own [`keep_alive`] future. Every
//! `lease_ttl / 3` it renews the lease if the job showed [`Progress`]
//! (a step finished, a provider answered, download bytes arrived) within
//! `window`. A job wedged somewhere stops renewing, its lease expires and
//! another replica (or this one's next claim) takes it over: a stuck CDN
//! cannot hold a job forever. When the store says the lease is lost, the
//! future resolves and the job's work is dropped: another worker owns it.
//! One exception: a submission's create (or lookup) call in flight is
//! [`Progress::pin`]ned, because a takeover in the middle of it would make
//! its outcome unknowable.
//!
//! This module never writes anything but the lease expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use clawcut_core::{Lease, Millis};
use clawcut_store::Store;
use tracing::{debug, warn};

use crate::report::error_chain;
use crate::runtime::clock::{Clock, ms};

/// When the job last moved. Cheap to clone and to mark.
#[derive(Debug, Clone)]
pub struct Progress {
    clock: Clock,
    at: Arc<AtomicI64>,
    pinned: Arc<AtomicUsize>,
}

/// While alive, the job counts as progressing (see [`Progress::pin`]).
pub struct Pin(Arc<AtomicUsize>);

impl Drop for Pin {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Progress {
    pub fn new(clock: Clock) -> Progress {
        Progress {
            at: Arc::new(AtomicI64::new(clock.now_ms())),
            pinned: Arc::new(AtomicUsize::new(0)),
            clock,
        }
    }

    pub fn mark(&self) {
        self.at.store(self.clock.now_ms(), Ordering::Relaxed);
    }

    /// Keep the lease however long the next step waits. For a create call
    /// in flight: it may queue behind the provider's rate limiter for
    /// minutes, and a takeover then would turn a submission that is about
    /// to succeed into one whose outcome nobody can know.
    pub fn pin(&self) -> Pin {
        self.pinned.fetch_add(1, Ordering::Relaxed);
        Pin(self.pinned.clone())
    }

    pub fn idle_for(&self) -> Millis {
        if self.pinned.load(Ordering::Relaxed) > 0 {
            return 0;
        }
        self.clock
            .now_ms()
            .saturating_sub(self.at.load(Ordering::Relaxed))
    }
}

/// What [`keep_alive`] needs.
pub struct KeepAlive {
    pub store: Arc<dyn Store>,
    pub lease: Lease,
    pub ttl: Duration,
    /// Renew only when the job moved within this long.
    pub window: Duration,
    pub progress: Progress,
}

/// Renews the lease while the job progresses. Resolves only when the lease
/// is lost to another worker.
pub async fn keep_alive(k: KeepAlive) {
    let every = (k.ttl / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let idle = k.progress.idle_for();
        if idle > ms(k.window) {
            debug!(job = %k.lease.job_id, idle_ms = idle, "no progress: not renewing the lease");
            continue;
        }
        let now = k.progress.clock.now_ms();
        match k.store.heartbeat(&k.lease, now, k.ttl).await {
            Ok(()) => {}
            // Counted once, by the slot that drops the attempt.
            Err(e) if e.is_lease_lost() => {
                warn!(job = %k.lease.job_id, "heartbeat: lease lost (another worker, or an operator's cancel); dropping this attempt");
                return;
            }
            Err(e) => {
                warn!(job = %k.lease.job_id, error = %error_chain(&e), "heartbeat failed; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn progress_ages_with_the_clock() {
        let p = Progress::new(Clock::tokio(0));
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(p.idle_for(), 7_000);
        p.mark();
        assert_eq!(p.idle_for(), 0);
        let q = p.clone();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(q.idle_for(), 1_000, "clones share one mark");
        let pin = q.pin();
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(p.idle_for(), 0, "a pinned step counts as progressing");
        drop(pin);
        assert_eq!(p.idle_for(), 601_000);
    }

    /// A real SQLite store. sqlx's pool needs a running clock (paused, its
    /// acquire timeouts fire at once), so this one runs on real time, scaled
    /// down: a 600 ms lease renewed every 200 ms, a 300 ms progress window.
    /// Its assertions do not depend on speed: renewal *happens* while the job
    /// progresses, and *never* happens once it stopped.
    #[tokio::test]
    async fn the_heartbeat_renews_only_while_the_job_progresses() {
        use clawcut_core::EligibilityRules;
        use clawcut_store::{ClaimRequest, Claimed};
        use clawcut_test_support::db::{AppDb, NewJob, temp_sqlite};

        let (_dir, url) = temp_sqlite();
        let store = clawcut_store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let db = AppDb::connect(&url).await.unwrap();
        let clock = Clock::system();
        let t = clock.now_ms() - 600_000;
        db.insert_job(&NewJob::video("job_hb", "processing", Some("video_hb"), t))
            .await
            .unwrap();
        let ttl = Duration::from_millis(600);
        let rules = EligibilityRules {
            min_age: Duration::from_secs(60),
            max_age: Duration::from_secs(86_400),
            submit_enabled: false,
        };
        let claimed = store
            .claim(&ClaimRequest {
                worker_id: "w1",
                now: clock.now_ms(),
                lease_ttl: ttl,
                limit: 1,
                rules: &rules,
                only_job: None,
                force: false,
                probe: None,
            })
            .await
            .unwrap();
        let [Claimed::Job(job)] = claimed.as_slice() else {
            panic!("{claimed:?}")
        };
        let lease = job.lease().unwrap();
        let expiry = || {
            let store = store.clone();
            async move {
                store
                    .get_job("job_hb")
                    .await
                    .unwrap()
                    .unwrap()
                    .lease_expires_at
                    .unwrap()
            }
        };
        let first = expiry().await;
        let progress = Progress::new(clock);
        let beat = tokio::spawn(keep_alive(KeepAlive {
            store: store.clone(),
            lease: lease.clone(),
            ttl,
            window: Duration::from_millis(300),
            progress: progress.clone(),
        }));
        // Progress every 100 ms for 1.5 s: renewed on the 200 ms ticks.
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            progress.mark();
        }
        let renewed = expiry().await;
        assert!(
            renewed >= first + 600,
            "renewed while progressing: {first} -> {renewed}"
        );
        // No progress: past the window, the lease is left to expire.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let last = expiry().await;
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert_eq!(expiry().await, last, "not renewed without progress");
        assert!(last < clock.now_ms(), "the lease has expired: {last}");
        // Another worker takes the job: the heartbeat ends on its own.
        db.exec("UPDATE ai_jobs SET lease_owner = 'w2', fencing_token = fencing_token + 1")
            .await
            .unwrap();
        progress.mark();
        tokio::time::timeout(Duration::from_secs(30), beat)
            .await
            .expect("keep_alive resolves once the lease is lost")
            .unwrap();
    }
}
