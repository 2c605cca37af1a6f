//! The batched completion, [`crate::Store::complete_many`]: a group commit
//! of many jobs' completions. It keeps every rule of the single
//! `complete` (fenced update, files published only while the lease is
//! held, newer version wins the scene pointer, one event per job, all in
//! one transaction) but sends each step once for the whole batch, as a
//! set-based statement over a JSON array, so the cost per job is a few rows
//! written rather than five round trips and a commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clawcut_core::JobStatus;
use serde_json::{Value, json};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Transaction, Type};

use super::{RowsAffected, Sql};
use crate::row::{OpErr, bytes_i64, completion_detail};
use crate::{Completing, Publish, StoreError};

/// Where one item of the batch stands.
enum Step {
    /// Still in the batch, files not yet in place.
    Pending,
    /// Its files are at their final paths: reverted unless committed.
    Published,
    /// Out of the batch with this answer (nothing of it written).
    Out(StoreError),
    /// Written; its files are kept once the transaction commits.
    Written,
    /// Committed (or its commit's answer lost): its files are kept.
    Committed,
}

/// The items and where each stands. Dropping it (an error, or the
/// completion's future dropped) reverts every file published and not yet
/// committed; it is declared before the transaction, so the revert runs
/// after the rollback, as in `complete`.
struct Batch<'s, 'a> {
    items: &'s mut [Completing<'a>],
    steps: Vec<Step>,
}

impl<'a> Batch<'_, 'a> {
    fn in_play(&self) -> impl Iterator<Item = usize> + '_ {
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Step::Pending | Step::Published))
            .map(|(i, _)| i)
    }

    /// The lease of every item still in play, as `held_many` reads it.
    fn leases_json(&self) -> String {
        let rows: Vec<Value> = self
            .in_play()
            .map(|i| {
                let c = &self.items[i];
                json!({
                    "id": c.lease.job_id,
                    "owner": c.lease.owner,
                    "token": c.lease.token,
                    "from_status": c.completion.from.as_str(),
                })
            })
            .collect();
        Value::Array(rows).to_string()
    }

    /// Items in play whose id is not in `held`: their lease is gone.
    fn drop_unheld(&mut self, held: &HashSet<String>) {
        for i in 0..self.items.len() {
            if matches!(self.steps[i], Step::Pending | Step::Published)
                && !held.contains(&self.items[i].lease.job_id)
            {
                self.out(i, lease_lost(&self.items[i]));
            }
        }
    }

    /// Publish every pending item, then fsync each directory they changed
    /// once; a failure takes out only the items it touches. All of it runs
    /// in one stretch off the runtime's worker (see [`off_worker`]).
    fn publish_pending(&mut self) {
        let (idx, files): (Vec<usize>, Vec<&mut (dyn Publish + Send + 'a)>) = self
            .items
            .iter_mut()
            .zip(&self.steps)
            .enumerate()
            .filter(|(_, (_, s))| matches!(s, Step::Pending))
            .map(|(i, (c, _))| (i, &mut *c.publish))
            .unzip();
        let (answers, deferred, synced) = off_worker(|| {
            let mut answers = Vec::with_capacity(idx.len());
            // Which items each deferred directory fsync makes durable.
            let mut deferred: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
            for (&i, (r, dirs)) in idx.iter().zip(publish_all(files)) {
                if r.is_ok() {
                    for dir in dirs {
                        deferred.entry(dir).or_default().push(i);
                    }
                }
                answers.push(r);
            }
            let dirs: Vec<PathBuf> = deferred.keys().cloned().collect();
            let synced = sync_dirs(&dirs);
            (answers, deferred, dirs.into_iter().zip(synced))
        });
        for (i, r) in idx.into_iter().zip(answers) {
            self.steps[i] = match r {
                Ok(()) => Step::Published,
                // `publish` leaves nothing behind when it fails.
                Err(e) => Step::Out(StoreError::PublishOutputs(e)),
            };
        }
        for (dir, synced) in synced {
            let Err(e) = synced else { continue };
            for &i in &deferred[&dir] {
                if matches!(self.steps[i], Step::Published) {
                    let err = std::io::Error::new(
                        e.kind(),
                        format!("fsync the directory {}: {e}", dir.display()),
                    );
                    self.out(i, StoreError::PublishOutputs(err));
                }
            }
        }
    }

    /// Take item `i` out with `err`, putting back its files if they were
    /// published.
    fn out(&mut self, i: usize, err: StoreError) {
        if matches!(self.steps[i], Step::Published) {
            self.items[i].publish.revert();
        }
        self.steps[i] = Step::Out(err);
    }

    /// The transaction committed (or its answer was lost): keep the files
    /// of every written item.
    fn committed(&mut self) {
        for i in 0..self.items.len() {
            if matches!(self.steps[i], Step::Written) {
                self.items[i].publish.committed();
                self.steps[i] = Step::Committed;
            }
        }
    }

    /// Revert every file published for the transaction.
    fn revert_all(&mut self) {
        for i in 0..self.items.len() {
            if matches!(self.steps[i], Step::Published | Step::Written) {
                self.items[i].publish.revert();
                self.steps[i] = Step::Pending;
            }
        }
    }

    /// One answer per item, once the batch committed.
    fn answers(mut self) -> Vec<Result<(), StoreError>> {
        std::mem::take(&mut self.steps)
            .into_iter()
            .map(|s| match s {
                Step::Out(e) => Err(e),
                Step::Committed => Ok(()),
                // After `committed`, every item is committed or out.
                Step::Pending | Step::Published | Step::Written => Err(StoreError::Complete(
                    sqlx::Error::Protocol("a batched completion item was left unfinished".into()),
                )),
            })
            .collect()
    }
}

impl Drop for Batch<'_, '_> {
    fn drop(&mut self) {
        for i in 0..self.steps.len() {
            if matches!(self.steps[i], Step::Published | Step::Written) {
                self.items[i].publish.revert();
            }
        }
    }
}

/// The most threads one batch publishes on: enough for its uploads to
/// overlap, few enough that starting them costs little next to them.
const PUBLISH_THREADS: usize = 16;

/// What one item's `publish_deferring` answered, and the directories it
/// left to fsync.
type Published = (std::io::Result<()>, Vec<PathBuf>);

/// Runs the batch's blocking filesystem stretch (its publishes, then its
/// directory fsyncs) without stalling a multi-thread runtime's worker: one
/// `block_in_place` for the whole stretch, rather than one per step.
fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn publish_one(f: &mut (dyn Publish + Send + '_)) -> Published {
    let mut dirs = Vec::new();
    let r = f.publish_deferring(&mut dirs);
    (r, dirs)
}

/// Run the `publish_deferring` calls and answer for each, in order. A
/// batch with a publish that waits on the network ([`Publish::remote`]: an
/// object store completing an upload) runs them on
/// [`publish_on_threads`], so those round trips overlap as separate
/// completions' did. Local installs run on the calling thread: a `mkdir`
/// and a rename or two, tens of microseconds now that their directory
/// fsyncs are deferred, less than starting a thread. They used to go to
/// threads once one took a millisecond, which a loaded machine's
/// preemption alone reached: 0.55 thread starts per job in the end-to-end
/// bench (BENCHMARKS.md).
fn publish_all<'a>(files: Vec<&mut (dyn Publish + Send + 'a)>) -> Vec<Published> {
    if files.len() > 1 && files.iter().any(|f| f.remote()) {
        return publish_on_threads(files);
    }
    files.into_iter().map(publish_one).collect()
}

/// The publishes on up to [`PUBLISH_THREADS`] scoped threads, the calling
/// one among them, waiting for all. Each thread enters the caller's tokio
/// runtime, if any, for a `publish` that needs it (an object store's
/// upload completes through it).
fn publish_on_threads<'a>(files: Vec<&mut (dyn Publish + Send + 'a)>) -> Vec<Published> {
    let n = files.len();
    let shares = deal(files, PUBLISH_THREADS);
    let handle = tokio::runtime::Handle::try_current().ok();
    let mut out: Vec<Option<Published>> = (0..n).map(|_| None).collect();
    std::thread::scope(|scope| {
        let mut shares = shares.into_iter();
        let mine = shares.next().unwrap_or_default();
        let running: Vec<_> = shares
            .map(|share| {
                let handle = handle.clone();
                let indices: Vec<usize> = share.iter().map(|(i, _)| *i).collect();
                let thread = scope.spawn(move || {
                    let _entered = handle.as_ref().map(tokio::runtime::Handle::enter);
                    share
                        .into_iter()
                        .map(|(_, f)| publish_one(f))
                        .collect::<Vec<_>>()
                });
                (indices, thread)
            })
            .collect();
        for (i, f) in mine {
            out[i] = Some(publish_one(f));
        }
        for (indices, thread) in running {
            match thread.join() {
                Ok(results) => {
                    for (i, r) in indices.into_iter().zip(results) {
                        out[i] = Some(r);
                    }
                }
                Err(_) => {
                    for i in indices {
                        let e = std::io::Error::other("publishing panicked");
                        out[i] = Some((Err(e), Vec::new()));
                    }
                }
            }
        }
    });
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| (Err(std::io::Error::other("not published")), Vec::new())))
        .collect()
}

/// The most directory fsyncs a batch runs at once. On this machine's
/// virtual disk, 24 directories took 5.8-6.9 ms fsynced one after another,
/// 3.0-3.4 ms on 8 threads and 4.3-4.5 ms on 24 (BENCHMARKS.md): past a
/// few, more at once only queue at the disk, and each is a hand-off
/// through the blocking pool's one lock and a thread woken and put back
/// to sleep.
const SYNC_THREADS: usize = 8;

/// A directory fsync quicker than this costs less than handing it to
/// another thread (a futex wake and a thread parked again, each side): on
/// tmpfs or a disk with a power-safe cache the batch then fsyncs alone.
const CHEAP_FSYNC: Duration = Duration::from_micros(20);

/// fsync each directory and answer for each, in order. One after another
/// on the calling thread while each is [`CHEAP_FSYNC`]; from the first
/// that is not, the rest up to [`SYNC_THREADS`] at once: the calling thread
/// (which would otherwise only wait) takes every `threads`-th, a task on
/// the runtime's blocking pool (its threads are already there, unlike a
/// scoped thread) each of the other shares. Called off the worker
/// ([`off_worker`]).
fn sync_dirs(dirs: &[PathBuf]) -> Vec<std::io::Result<()>> {
    // The same fsync the providers' `sync_dir` makes; the store does not
    // depend on that crate.
    sync_dirs_with(dirs, CHEAP_FSYNC, |dir| {
        std::fs::File::open(dir)?.sync_all()
    })
}

fn sync_dirs_with(
    dirs: &[PathBuf],
    cheap: Duration,
    sync: fn(&std::path::Path) -> std::io::Result<()>,
) -> Vec<std::io::Result<()>> {
    let mut out = Vec::with_capacity(dirs.len());
    for d in dirs {
        let started = Instant::now();
        out.push(sync(d));
        if started.elapsed() > cheap {
            break;
        }
    }
    let rest = &dirs[out.len()..];
    out.extend(sync_dirs_on_threads(rest, sync));
    out
}

/// `sync` for each directory, up to [`SYNC_THREADS`] at once, the calling
/// thread taking the first share; answered in order.
fn sync_dirs_on_threads(
    dirs: &[PathBuf],
    sync: fn(&std::path::Path) -> std::io::Result<()>,
) -> Vec<std::io::Result<()>> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let threads = dirs.len().min(SYNC_THREADS);
    let handle = match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread && threads > 1 => h,
        _ => return dirs.iter().map(|d| sync(d)).collect(),
    };
    let mut shares = deal(dirs.iter().cloned(), threads).into_iter();
    let mine = shares.next().unwrap_or_default();
    let running: Vec<_> = shares
        .map(|share| {
            let indices: Vec<usize> = share.iter().map(|(i, _)| *i).collect();
            let task = handle.spawn_blocking(move || {
                share.into_iter().map(|(_, d)| sync(&d)).collect::<Vec<_>>()
            });
            (indices, task)
        })
        .collect();
    let mut out: Vec<Option<std::io::Result<()>>> = (0..dirs.len()).map(|_| None).collect();
    for (i, d) in mine {
        out[i] = Some(sync(&d));
    }
    for (indices, task) in running {
        match handle.block_on(task) {
            Ok(results) => {
                for (i, r) in indices.into_iter().zip(results) {
                    out[i] = Some(r);
                }
            }
            Err(e) => {
                for i in indices {
                    out[i] = Some(Err(std::io::Error::other(e.to_string())));
                }
            }
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(std::io::Error::other("not fsynced"))))
        .collect()
}

/// `items` dealt round-robin into at most `hands` shares, each item with
/// its index: share `t` holds items t, t + hands, ..., so a thread running
/// a share can answer for each in the caller's order.
fn deal<T>(items: impl IntoIterator<Item = T>, hands: usize) -> Vec<Vec<(usize, T)>> {
    let mut shares: Vec<Vec<(usize, T)>> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let t = i % hands.max(1);
        if shares.len() <= t {
            shares.push(Vec::new());
        }
        shares[t].push((i, item));
    }
    shares
}

fn lease_lost(c: &Completing<'_>) -> StoreError {
    StoreError::LeaseLost {
        job_id: c.lease.job_id.clone(),
    }
}

/// A written item's scene and version, from `complete_jobs`.
struct Written {
    item: usize,
    scene_id: Option<String>,
    version_id: Option<String>,
}

/// Split the written items into rounds in which no version and no scene
/// appears twice: a set-based UPDATE applies one source row per target
/// row, so two completions of one version (or two versions of one scene)
/// go in successive statements, in batch order, as successive single
/// completions would.
fn rounds(written: &[Written]) -> Vec<Vec<&Written>> {
    let mut rounds: Vec<(HashSet<&str>, Vec<&Written>)> = Vec::new();
    for w in written {
        let keys: Vec<&str> = [w.version_id.as_deref(), w.scene_id.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        // The first round after the last one holding any of its keys.
        let after = rounds
            .iter()
            .rposition(|(seen, _)| keys.iter().any(|k| seen.contains(k)))
            .map_or(0, |r| r + 1);
        if after == rounds.len() {
            rounds.push((HashSet::new(), Vec::new()));
        }
        let (seen, members) = &mut rounds[after];
        seen.extend(keys.iter().copied());
        members.push(w);
    }
    rounds.into_iter().map(|(_, m)| m).collect()
}

impl<DB> Sql<'_, DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB>,
    for<'a> bool: Encode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    for<'a> Option<String>: Decode<'a, DB>,
    usize: ColumnIndex<DB::Row>,
    DB::QueryResult: RowsAffected,
{
    /// See [`crate::Store::complete_many`].
    pub(super) async fn complete_many(
        &self,
        items: &mut [Completing<'_>],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let op: OpErr = StoreError::Complete;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let steps = (0..items.len()).map(|_| Step::Pending).collect();
        let mut batch = Batch { items, steps };
        // Where the write lock is database-wide (SQLite), publish before
        // taking it, once a read confirmed each lease (see `lease_held`).
        let early = self.d.lease_held.is_some();
        if early {
            let held = self.held(None, &batch.leases_json()).await?;
            batch.drop_unheld(&held);
            batch.publish_pending();
        }
        let mut tx = self.begin_write(op).await?;
        match self.write_batch(&mut tx, &mut batch, early).await {
            Ok(()) => {}
            Err(e) => {
                let e = self.abandon(tx, e).await;
                batch.revert_all();
                return Err(e);
            }
        }
        match tx.commit().await {
            Ok(()) => {
                batch.committed();
                Ok(batch.answers())
            }
            // The server refused the commit: nothing was written.
            Err(e @ sqlx::Error::Database(_)) => {
                batch.revert_all();
                Err(op(e))
            }
            // The answer was lost: keep the files, as `complete` does.
            Err(e) => {
                batch.committed();
                Err(op(e))
            }
        }
    }

    /// The ids among `leases` whose lease is held, read on `tx` (rows
    /// locked where the backend locks) or on the pool.
    async fn held(
        &self,
        tx: Option<&mut Transaction<'static, DB>>,
        leases: &str,
    ) -> Result<HashSet<String>, StoreError> {
        let q = sqlx::query_scalar::<DB, String>(self.d.held_many).bind(leases);
        let ids = match tx {
            Some(tx) => q.fetch_all(&mut **tx).await,
            None => q.fetch_all(self.pool).await,
        };
        Ok(ids.map_err(StoreError::Complete)?.into_iter().collect())
    }

    /// Everything between begin and commit.
    async fn write_batch(
        &self,
        tx: &mut Transaction<'static, DB>,
        batch: &mut Batch<'_, '_>,
        early: bool,
    ) -> Result<(), StoreError> {
        let op: OpErr = StoreError::Complete;
        if !early {
            let held = self.held(Some(&mut *tx), &batch.leases_json()).await?;
            batch.drop_unheld(&held);
            batch.publish_pending();
        }
        let jobs: Vec<Value> = batch
            .in_play()
            .map(|i| {
                let (l, c) = (batch.items[i].lease, batch.items[i].completion);
                json!({
                    "id": l.job_id, "owner": l.owner, "token": l.token,
                    "from_status": c.from.as_str(), "now": c.now,
                    "video": c.video.path, "sha": c.video.sha256,
                    "bytes": bytes_i64(c.video.bytes),
                    "thumb": c.thumbnail.as_ref().map(|t| t.path.as_str()),
                    // The audit event's, where this statement writes it.
                    "detail": self.d.insert_events.is_none()
                        .then(|| clawcut_core::redact::redact(&completion_detail(c)).into_owned()),
                })
            })
            .collect();
        if jobs.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, Option<String>, Option<String>)> =
            sqlx::query_as(self.d.complete_jobs)
                .bind(Value::Array(jobs).to_string().as_str())
                .fetch_all(&mut **tx)
                .await
                .map_err(op)?;
        let by_id: HashMap<&str, usize> = batch
            .in_play()
            .map(|i| (batch.items[i].lease.job_id.as_str(), i))
            .collect();
        let mut written: Vec<Written> = rows
            .into_iter()
            .filter_map(|(id, scene_id, version_id)| {
                by_id.get(id.as_str()).map(|&item| Written {
                    item,
                    scene_id,
                    version_id,
                })
            })
            .collect();
        written.sort_by_key(|w| w.item);
        for w in &written {
            batch.steps[w.item] = Step::Written;
        }
        // In play but not written: the fenced update did not match (an
        // out-of-band write after the early read), so put its files back
        // while the transaction's locks are held.
        let unmatched: Vec<usize> = batch.in_play().collect();
        for i in unmatched {
            batch.out(i, lease_lost(&batch.items[i]));
        }
        for round in rounds(&written) {
            self.versions_and_scenes(tx, batch, &round).await?;
        }
        let Some(insert_events) = self.d.insert_events else {
            return Ok(());
        };
        let events: Vec<Value> = written
            .iter()
            .map(|w| {
                let (l, c) = (batch.items[w.item].lease, batch.items[w.item].completion);
                json!({
                    "job": l.job_id, "from_status": c.from.as_str(),
                    "to_status": JobStatus::Completed.as_str(), "worker": l.owner,
                    // Every text column is written under the one redaction rule.
                    "detail": clawcut_core::redact::redact(&completion_detail(c)),
                    "now": c.now,
                })
            })
            .collect();
        sqlx::query(insert_events)
            .bind(Value::Array(events).to_string().as_str())
            .execute(&mut **tx)
            .await
            .map_err(op)?;
        Ok(())
    }

    /// One round's scene versions and scene pointers.
    async fn versions_and_scenes(
        &self,
        tx: &mut Transaction<'static, DB>,
        batch: &mut Batch<'_, '_>,
        round: &[&Written],
    ) -> Result<(), StoreError> {
        let op: OpErr = StoreError::Complete;
        let versions: Vec<Value> = round
            .iter()
            .filter_map(|w| {
                let version = w.version_id.as_deref()?;
                let c = batch.items[w.item].completion;
                Some(json!({
                    "version": version, "scene": w.scene_id, "video": c.video.path,
                    "thumb": c.thumbnail.as_ref().map(|t| t.path.as_str()),
                    "sha": c.video.sha256, "bytes": bytes_i64(c.video.bytes), "now": c.now,
                }))
            })
            .collect();
        if versions.is_empty() {
            return Ok(());
        }
        let versions = Value::Array(versions).to_string();
        for stmt in std::iter::once(self.d.complete_versions).chain(self.d.complete_scenes) {
            sqlx::query(stmt)
                .bind(versions.as_str())
                .execute(&mut **tx)
                .await
                .map_err(op)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    fn w(item: usize, scene: Option<&str>, version: Option<&str>) -> Written {
        Written {
            item,
            scene_id: scene.map(str::to_owned),
            version_id: version.map(str::to_owned),
        }
    }

    fn items(rounds: &[Vec<&Written>]) -> Vec<Vec<usize>> {
        rounds
            .iter()
            .map(|r| r.iter().map(|w| w.item).collect())
            .collect()
    }

    /// A publish that records the thread it ran on and takes `takes`.
    struct Timed {
        takes: Duration,
        remote: bool,
        ran_on: Option<std::thread::ThreadId>,
        fails: bool,
    }

    impl Publish for Timed {
        fn publish(&mut self) -> std::io::Result<()> {
            std::thread::sleep(self.takes);
            self.ran_on = Some(std::thread::current().id());
            if self.fails {
                return Err(std::io::Error::other("refused"));
            }
            Ok(())
        }
        fn remote(&self) -> bool {
            self.remote
        }
        fn revert(&mut self) {}
        fn committed(&mut self) {}
    }

    fn timed(n: usize, takes: Duration, remote: impl Fn(usize) -> bool) -> Vec<Timed> {
        (0..n)
            .map(|i| Timed {
                takes,
                remote: remote(i),
                ran_on: None,
                fails: i == 3,
            })
            .collect()
    }

    fn run(items: &mut [Timed]) -> Vec<bool> {
        let files = items
            .iter_mut()
            .map(|t| t as &mut (dyn Publish + Send))
            .collect();
        publish_all(files)
            .into_iter()
            .map(|(r, _)| r.is_ok())
            .collect()
    }

    #[test]
    fn local_publishes_stay_on_the_calling_thread_however_long_they_take() {
        // Slow as a preempted rename on a loaded machine.
        let mut items = timed(6, Duration::from_millis(3), |_| false);
        let answers = run(&mut items);
        assert_eq!(answers, [true, true, true, false, true, true]);
        let me = std::thread::current().id();
        assert!(items.iter().all(|t| t.ran_on == Some(me)));
    }

    #[test]
    fn a_remote_publish_sends_the_batch_to_threads() {
        let mut items = timed(6, Duration::from_millis(3), |i| i == 4);
        let answers = run(&mut items);
        // Each answer stays with its item, whichever thread ran it.
        assert_eq!(answers, [true, true, true, false, true, true]);
        let threads: HashSet<_> = items.iter().map(|t| t.ran_on.unwrap()).collect();
        assert_eq!(threads.len(), 6, "six publishes on six threads");
        let me = std::thread::current().id();
        assert!(threads.contains(&me), "the calling thread takes a share");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_directory_fsync_answers_for_its_own_directory() {
        let root = tempfile::tempdir().unwrap();
        // Missing ones in the calling thread's share (8) and in others'.
        let missing = [3, 8, 10, 17];
        let dirs: Vec<PathBuf> = (0..20)
            .map(|i| {
                let d = root.path().join(i.to_string());
                if !missing.contains(&i) {
                    std::fs::create_dir(&d).unwrap();
                }
                d
            })
            .collect();
        let answers = tokio::task::block_in_place(|| sync_dirs(&dirs));
        assert_eq!(answers.len(), dirs.len());
        for (i, a) in answers.iter().enumerate() {
            assert_eq!(a.is_err(), missing.contains(&i), "directory {i}: {a:?}");
        }
    }

    /// Which thread fsynced each directory, for the tests below (each under
    /// its own temp root).
    static SYNCED_ON: Mutex<Vec<(PathBuf, std::thread::ThreadId)>> = Mutex::new(Vec::new());

    /// A stand-in fsync: recorded, 5 ms for a directory named `slow*`, an
    /// error for one named `missing*`.
    fn recorded(dir: &std::path::Path) -> std::io::Result<()> {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("slow") {
            std::thread::sleep(Duration::from_millis(5));
        }
        SYNCED_ON
            .lock()
            .unwrap()
            .push((dir.to_owned(), std::thread::current().id()));
        if name.starts_with("missing") {
            return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        }
        Ok(())
    }

    fn threads_of(root: &std::path::Path, dirs: &[PathBuf]) -> Vec<std::thread::ThreadId> {
        let seen = SYNCED_ON.lock().unwrap();
        dirs.iter()
            .map(|d| {
                assert!(d.starts_with(root));
                seen.iter().find(|(p, _)| p == d).map(|(_, t)| *t).unwrap()
            })
            .collect()
    }

    fn named(root: &std::path::Path, names: impl Fn(usize) -> String, n: usize) -> Vec<PathBuf> {
        (0..n).map(|i| root.join(names(i))).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cheap_directory_fsyncs_stay_on_the_calling_thread() {
        let root = tempfile::tempdir().unwrap();
        let dirs = named(root.path(), |i| format!("d{i}"), 20);
        let (answers, me) = tokio::task::block_in_place(|| {
            let answers = sync_dirs_with(&dirs, Duration::from_secs(1), recorded);
            (answers, std::thread::current().id())
        });
        assert!(answers.iter().all(Result::is_ok));
        assert!(threads_of(root.path(), &dirs).iter().all(|t| *t == me));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn from_the_first_slow_fsync_the_rest_go_to_threads_each_answering_for_its_own() {
        let root = tempfile::tempdir().unwrap();
        // The 4th is slow; failures before it, in the calling thread's
        // share after it and in the other shares.
        let missing = [1, 4, 12, 13];
        let dirs = named(
            root.path(),
            |i| match i {
                3 => "slow".to_owned(),
                i if missing.contains(&i) => format!("missing{i}"),
                i => format!("d{i}"),
            },
            20,
        );
        let (answers, me) = tokio::task::block_in_place(|| {
            let answers = sync_dirs_with(&dirs, Duration::from_millis(1), recorded);
            (answers, std::thread::current().id())
        });
        assert_eq!(answers.len(), dirs.len());
        for (i, a) in answers.iter().enumerate() {
            assert_eq!(a.is_err(), missing.contains(&i), "directory {i}: {a:?}");
        }
        let threads = threads_of(root.path(), &dirs);
        assert_eq!(threads[3], me, "the slow one ran where it was found slow");
        let others = threads[4..].iter().filter(|t| **t != me).count();
        // 16 after it, in 8 shares of 2: the calling thread keeps one.
        assert_eq!(others, 14, "{threads:?}");
    }

    #[test]
    fn distinct_scenes_and_versions_share_one_round() {
        let ws = [
            w(0, Some("s1"), Some("v1")),
            w(1, Some("s2"), Some("v2")),
            w(2, None, None),
        ];
        assert_eq!(items(&rounds(&ws)), [vec![0, 1, 2]]);
    }

    #[test]
    fn a_repeated_version_or_scene_waits_for_the_next_round_in_order() {
        let ws = [
            w(0, Some("s1"), Some("v1")),
            w(1, Some("s1"), Some("v2")),
            w(2, Some("s3"), Some("v1")),
            w(3, Some("s4"), Some("v4")),
            w(4, Some("s1"), Some("v5")),
        ];
        // 1 shares s1 with 0; 2 shares v1 with 0; 4 shares s1 with 1.
        assert_eq!(items(&rounds(&ws)), [vec![0, 3], vec![1, 2], vec![4]]);
    }

    #[test]
    fn an_item_never_moves_ahead_of_an_earlier_one_with_its_key() {
        // 2 shares v2 with 1, which is in round 1: 2 goes to round 2 even
        // though round 0 has no v2.
        let ws = [
            w(0, Some("s1"), Some("v1")),
            w(1, Some("s1"), Some("v2")),
            w(2, Some("s9"), Some("v2")),
        ];
        assert_eq!(items(&rounds(&ws)), [vec![0], vec![1], vec![2]]);
    }
}
