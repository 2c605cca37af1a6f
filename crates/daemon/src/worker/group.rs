//! Group commit: completions that arrive while another is committing are
//! written together, in one transaction, by [`Store::complete_many`].
//!
//! There is no background task to start or drain. Each completion queues
//! itself and then either finds its answer or takes one of [`WRITERS`]
//! turns; the task holding a turn writes everything queued (up to
//! [`MAX_BATCH`]) and answers each. Under no load a completion is a batch
//! of one and commits at once; under load the batch is whatever queued
//! during the previous commit, so a commit (and its fsync) is shared
//! without ever waiting for company. Every completion runs in a task `Worker::detached` tracks, so
//! the turn's holder always runs to its end.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use clawcut_core::Lease;
use clawcut_store::{Completing, Completion, Publish, Store, StoreError};
use tokio::sync::oneshot;
use tracing::warn;

/// The most completions one transaction writes: a bound on the time the
/// transaction holds its locks, and on the statement's JSON.
pub const MAX_BATCH: usize = 256;

/// One queued completion and where its answer goes.
struct Queued {
    lease: Lease,
    completion: Completion,
    outputs: Box<dyn Publish + Send>,
    answer: oneshot::Sender<Result<(), StoreError>>,
}

pub struct GroupCommit {
    queue: Mutex<Vec<Queued>>,
    /// One permit per batch that may be written at once.
    turns: tokio::sync::Semaphore,
    /// Transactions written so far.
    batches: AtomicU64,
}

/// Batches in flight at once. One serializes each batch's renames and
/// fsyncs behind the previous batch's commit, yet measured faster than four
/// (BENCHMARKS.md, "End to end against the physical limit": 0.77 against
/// 0.58 of the limit on PostgreSQL): four batches' publishes contend for the
/// same directories, and fewer jobs share each commit.
pub const WRITERS: usize = 1;

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            queue: Mutex::default(),
            turns: tokio::sync::Semaphore::new(WRITERS),
            batches: AtomicU64::default(),
        }
    }
}

impl GroupCommit {
    /// Complete one job, in whichever batch takes it.
    pub async fn complete(
        &self,
        store: &dyn Store,
        lease: Lease,
        completion: Completion,
        outputs: Box<dyn Publish + Send>,
    ) -> Result<(), StoreError> {
        let (answer, mut answered) = oneshot::channel();
        self.lock_queue().push(Queued {
            lease,
            completion,
            outputs,
            answer,
        });
        loop {
            tokio::select! {
                biased;
                got = &mut answered => return got.unwrap_or_else(|_| Err(unanswered())),
                turn = self.turns.acquire() => {
                    let batch = self.take_batch();
                    if batch.is_empty() {
                        // Another writer took ours: its answer is coming.
                        drop(turn);
                        return answered.await.unwrap_or_else(|_| Err(unanswered()));
                    }
                    self.batches.fetch_add(1, Ordering::Relaxed);
                    write(store, batch).await;
                    drop(turn);
                }
            }
        }
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        // A panic while pushing or draining leaves the Vec whole.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The oldest queued completions, up to [`MAX_BATCH`].
    fn take_batch(&self) -> Vec<Queued> {
        let mut q = self.lock_queue();
        let n = q.len().min(MAX_BATCH);
        q.drain(..n).collect()
    }
}

/// The answer of a completion whose batch ended without one (its writer
/// panicked).
fn unanswered() -> StoreError {
    StoreError::CompleteBatch {
        message: "the batch writing this completion ended without an answer".to_owned(),
        unavailable: false,
    }
}

/// Write one batch and answer each of its completions.
async fn write(store: &dyn Store, mut batch: Vec<Queued>) {
    let results = {
        let mut items: Vec<Completing<'_>> = batch
            .iter_mut()
            .map(|q| Completing {
                lease: &q.lease,
                completion: &q.completion,
                publish: q.outputs.as_mut(),
            })
            .collect();
        store.complete_many(&mut items).await
    };
    match results {
        Ok(results) => {
            for (q, r) in batch.into_iter().zip(results) {
                let _ = q.answer.send(r);
            }
        }
        Err(e) => {
            if batch.len() > 1 {
                warn!(jobs = batch.len(), error = %crate::report::error_chain(&e), "a batched completion failed; each job retries on its own");
            }
            let mut e = Some(e);
            let n = batch.len();
            for (i, q) in batch.into_iter().enumerate() {
                // The last job gets the error itself, the others a copy.
                let err = if i + 1 == n {
                    e.take().unwrap_or_else(unanswered)
                } else {
                    e.as_ref().map_or_else(unanswered, StoreError::for_batch)
                };
                let _ = q.answer.send(Err(err));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use clawcut_core::{EligibilityRules, JobStatus};
    use clawcut_store::{ClaimRequest, Claimed, StoredOutput};
    use clawcut_test_support::db::{AppDb, NewJob, temp_sqlite};

    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    /// Counts its calls; publishing takes a moment, so completions that
    /// arrive meanwhile queue behind the one committing.
    struct Files {
        published: Arc<AtomicUsize>,
        committed: Arc<AtomicUsize>,
    }

    impl Publish for Files {
        fn publish(&mut self) -> std::io::Result<()> {
            std::thread::sleep(Duration::from_millis(20));
            self.published.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn revert(&mut self) {}
        fn committed(&mut self) {
            self.committed.fetch_add(1, Ordering::SeqCst);
        }
    }

    async fn lease(store: &dyn Store, id: &str, now: i64) -> Lease {
        let rules = EligibilityRules {
            min_age: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 86400),
            submit_enabled: true,
        };
        let req = ClaimRequest {
            worker_id: "w",
            now,
            lease_ttl: Duration::from_secs(300),
            limit: 1,
            rules: &rules,
            only_job: Some(id),
            force: true,
            probe: None,
        };
        match store.claim(&req).await.unwrap().pop() {
            Some(Claimed::Job(j)) => j.lease().unwrap(),
            other => panic!("claim {id}: {other:?}"),
        }
    }

    fn completion(id: &str) -> Completion {
        Completion {
            from: JobStatus::Processing,
            now: NOW + 1,
            video: StoredOutput {
                path: format!("/media/videos/s/{id}.mp4"),
                sha256: "ab".repeat(32),
                bytes: 10,
            },
            thumbnail: None,
            thumbnail_problem: None,
        }
    }

    /// Many completions at once: every one is answered and written once,
    /// in fewer transactions than jobs, and a stale lease among them fails
    /// alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_completions_share_transactions_and_each_gets_its_answer() {
        let (_dir, url) = temp_sqlite();
        let store = clawcut_store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let db = AppDb::connect(&url).await.unwrap();
        let n = 24;
        let mut leases = Vec::new();
        for i in 0..n {
            let id = format!("j{i}");
            db.insert_job_with_scene(&NewJob::video(&id, "processing", Some("p"), NOW - 600_000))
                .await
                .unwrap();
            leases.push(lease(&*store, &id, NOW).await);
        }
        // j0's lease goes stale: it expires and another claim takes it.
        let _taken = lease(&*store, "j0", NOW + 600_000).await;
        let group = Arc::new(GroupCommit::default());
        let published = Arc::new(AtomicUsize::new(0));
        let committed = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, l) in leases.into_iter().enumerate() {
            let (group, store) = (group.clone(), store.clone());
            let files = Files {
                published: published.clone(),
                committed: committed.clone(),
            };
            tasks.spawn(async move {
                let c = completion(&format!("j{i}"));
                (i, group.complete(&*store, l, c, Box::new(files)).await)
            });
        }
        let mut ok = 0;
        while let Some(r) = tasks.join_next().await {
            let (i, r) = r.unwrap();
            match (i, r) {
                (0, Err(e)) => assert!(e.is_lease_lost(), "{e:?}"),
                (0, Ok(())) => panic!("a stale lease completed"),
                (_, r) => {
                    r.unwrap();
                    ok += 1;
                }
            }
        }
        assert_eq!(ok, n - 1);
        assert_eq!(published.load(Ordering::SeqCst), n - 1);
        assert_eq!(committed.load(Ordering::SeqCst), n - 1);
        let events = db.all_events().await.unwrap();
        assert_eq!(events.len(), n - 1, "one event per completed job");
        // Each publish takes 20 ms, so the others queue meanwhile: a few
        // transactions, not one per job.
        let batches = group.batches.load(Ordering::SeqCst);
        assert!(
            batches < n as u64 / 2,
            "{batches} transactions for {n} jobs"
        );
        assert!(group.lock_queue().is_empty());
    }

    /// A batch's failure reaches every job of it, and says whether the
    /// database was away.
    #[test]
    fn a_batch_error_is_copied_with_its_cause_and_availability() {
        let e = StoreError::Complete(sqlx::Error::PoolTimedOut);
        let copy = e.for_batch();
        assert!(copy.is_unavailable());
        assert!(copy.to_string().contains("complete the job"), "{copy}");
        assert!(copy.to_string().contains("pool timed out"), "{copy}");
        let refused = StoreError::Complete(sqlx::Error::RowNotFound).for_batch();
        assert!(!refused.is_unavailable());
    }
}
