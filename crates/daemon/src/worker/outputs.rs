//! A job the provider finished: stage its outputs, then publish them inside
//! the fenced completion.
//!
//! The video and the thumbnail are streamed to temp files under
//! `<media.dir>/.tmp/` (verified, fsynced) while nothing is at a final
//! path. Then the job waits for its scene version's turn ([`VersionLocks`])
//! and calls `Store::complete`, which checks the lease and only then calls
//! [`Outputs::publish`] to rename the staged files to their final paths,
//! then commits with the fenced update (reverting the renames when it does
//! not match or the commit fails). So a file reaches its final path only
//! while the lease is held, a worker that lost its lease never overwrites
//! the new owner's file, and two jobs for one scene version never
//! interleave: the committed checksum and size always describe the file at
//! the path.
//!
//! The thumbnail is a courtesy: refused, missing, failing or too large, it
//! never fails a verified video and never makes the video be fetched again.
//! The job completes without it, and the log and the audit event say why.
//!
//! A write the media directory refuses (the disk full, a quota, a read-only
//! or failing filesystem), while staging the video or the thumbnail or while
//! publishing them, is the machine's fault, not the job's: the job tries
//! again later without spending an attempt, its staged files gone, and the
//! fault shows in `/readyz`'s reason, `/metrics` and the log until a job's
//! outputs are all staged again ([`crate::runtime::health::MediaHealth`]). Such a
//! thumbnail is not dropped: that would lose it for good over a fault that
//! an operator clears.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clawcut_core::{DownloadSpec, Event, JobStatus};
use clawcut_providers::{Installed, ProvidersError, Received, Staged, is_no_space, sync_all};
use clawcut_store::{Completion, Publish, StoreError, StoredOutput};
use tracing::{error, info, warn};

use super::decide::{Done, WorkError, decide};
use super::{Ctx, Worker};
use crate::media::Storage;
use crate::media::object::{ObjectInstalled, ObjectStaged};
use crate::report::{JobOutcome, error_chain};

/// Per-scene-version turns: two completions of one version publish and
/// commit one after the other. SQLite publishes before its write lock, so
/// the database alone would not order them; PostgreSQL also orders them
/// across replicas with an advisory lock, and this costs it nothing.
///
/// A version's turn is one of [`LOCK_FILES`] slots, chosen by the version
/// id: an async mutex (this process), then an exclusive lock on the slot's
/// file under `<media.dir>/.locks/` (other processes on this host sharing
/// the media directory: `reconcile` run by hand beside the daemon, a second
/// `run` on one SQLite file). Two versions may share a slot: they then take
/// turns too, which costs a few milliseconds, never correctness.
///
/// A slot's file is opened once and kept open, and locked without leaving
/// the task when nobody else holds it (`try_lock`): a turn used to cost an
/// open, a lock and a close on the blocking pool per completion.
#[derive(Debug, Default)]
pub struct VersionLocks {
    slots: std::sync::Mutex<HashMap<PathBuf, Arc<Slot>>>,
}

/// One lock file's turn in this process, and the file once opened.
type Slot = tokio::sync::Mutex<Option<Arc<std::fs::File>>>;

/// How many lock files a media directory holds, at most (and this process
/// keeps open). At 64, two versions shared a slot often enough that a
/// completion waited 1.3 ms on average for another version's turn, with
/// 32 jobs in flight (BENCHMARKS.md, end to end).
pub const LOCK_FILES: u64 = 256;

/// A held turn: released when dropped.
pub struct Turn {
    guard: tokio::sync::OwnedMutexGuard<Option<Arc<std::fs::File>>>,
    /// Whether the file lock is held (it is given up before the slot).
    locked: bool,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if self.locked
            && let Some(f) = self.guard.as_ref()
            && let Err(e) = f.unlock()
        {
            // Unlocked anyway when the process exits; until then another
            // process waits for this slot. The file is closed so the lock
            // goes with it, and the next turn opens it again.
            warn!(error = %e, "could not unlock a scene version's lock file");
            *self.guard = None;
        }
    }
}

impl VersionLocks {
    /// Wait for `version`'s turn. A lock file that cannot be opened or
    /// locked only loses the ordering across processes (logged); it never
    /// fails the completion.
    pub async fn turn(&self, media: &Path, version: &str) -> Turn {
        let path = lock_path(media, version);
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.entry(path.clone()).or_default().clone()
        };
        let mut guard = slot.lock_owned().await;
        let locked = match lock_file(&mut guard, path).await {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "could not take the scene version's lock file; ordering only within this process");
                false
            }
        };
        Turn { guard, locked }
    }
}

/// Lock the slot's file, opening it first if this process has not yet.
/// Uncontended, this is one `flock` on the caller's thread; a file another
/// process holds is waited for on the blocking pool.
async fn lock_file(file: &mut Option<Arc<std::fs::File>>, path: PathBuf) -> std::io::Result<()> {
    let f = match file {
        Some(f) => f.clone(),
        None => {
            let opened = tokio::task::spawn_blocking(move || {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
            })
            .await
            .map_err(std::io::Error::other)??;
            file.insert(Arc::new(opened)).clone()
        }
    };
    match f.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => tokio::task::spawn_blocking(move || f.lock())
            .await
            .map_err(std::io::Error::other)?,
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// `<media>/.locks/<n>.lock`, `n` a stable hash of the version id (FNV-1a:
/// the same in every process and release, unlike std's `DefaultHasher`).
/// Not under `.tmp`: these files are permanent (a lock file must never be
/// removed while another process may wait on it), and `.tmp` holds only
/// what a sweep may take.
fn lock_path(media: &Path, version: &str) -> PathBuf {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in version.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    media
        .join(".locks")
        .join(format!("{:02}.lock", h % LOCK_FILES))
}

/// A staged output and where it is published to.
enum Pending {
    /// A temp file under `<media.dir>/.tmp`, renamed to `path`.
    Local {
        staged: Option<Staged>,
        installed: Option<Installed>,
        path: PathBuf,
    },
    /// A multipart upload at its final key, completed by `publish`.
    Object {
        staged: Option<ObjectStaged>,
        installed: Option<ObjectInstalled>,
    },
}

/// An output staged on either store.
enum StagedOutput {
    Local(Staged),
    Object(ObjectStaged),
}

impl StagedOutput {
    fn sha256_hex(&self) -> &str {
        match self {
            StagedOutput::Local(s) => s.sha256_hex(),
            StagedOutput::Object(s) => s.sha256_hex(),
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            StagedOutput::Local(s) => s.bytes(),
            StagedOutput::Object(s) => s.bytes(),
        }
    }

    fn pending(self, path: PathBuf) -> Pending {
        match self {
            StagedOutput::Local(s) => Pending::Local {
                staged: Some(s),
                installed: None,
                path,
            },
            StagedOutput::Object(s) => Pending::Object {
                staged: Some(s),
                installed: None,
            },
        }
    }
}

/// An output received on either store: a local one still to be fsynced.
enum ReceivedOutput {
    Local(Received),
    Object(ObjectStaged),
}

impl ReceivedOutput {
    /// The temp file to keep fresh while the thumbnail downloads (an
    /// upload keeps its own marker fresh).
    fn temp_path(&self) -> Option<&Path> {
        match self {
            ReceivedOutput::Local(r) => Some(r.temp_path()),
            ReceivedOutput::Object(_) => None,
        }
    }
}

/// A job's outputs staged: the local ones fsynced in one hand-off to the
/// blocking pool for the pair (a hand-off is a thread woken and parked
/// again, and on a CPU-bound daemon those were its largest cost after
/// HTTP; BENCHMARKS.md, item 3). Each answers for itself.
async fn sync_outputs(
    video: ReceivedOutput,
    thumbnail: Option<ReceivedOutput>,
) -> (
    Result<StagedOutput, ProvidersError>,
    Option<Result<StagedOutput, ProvidersError>>,
) {
    match (video, thumbnail) {
        (ReceivedOutput::Local(v), Some(ReceivedOutput::Local(t))) => {
            let [v, t] = sync_all([v, t]).await;
            (v.map(StagedOutput::Local), Some(t.map(StagedOutput::Local)))
        }
        (v, t) => {
            let v = sync_one(v).await;
            let t = match t {
                Some(t) => Some(sync_one(t).await),
                None => None,
            };
            (v, t)
        }
    }
}

async fn sync_one(r: ReceivedOutput) -> Result<StagedOutput, ProvidersError> {
    match r {
        ReceivedOutput::Local(r) => {
            let [staged] = sync_all([r]).await;
            staged.map(StagedOutput::Local)
        }
        ReceivedOutput::Object(s) => Ok(StagedOutput::Object(s)),
    }
}

/// The staged files of one completion: what `Store::complete` publishes.
pub struct Outputs {
    files: Vec<Pending>,
}

impl Outputs {
    /// Every staged file to its final path, its directories fsynced here
    /// (`dirs` is `None`) or named in `dirs` for the caller to fsync. A
    /// failure puts back what was already installed: a video in place and
    /// its thumbnail refused would otherwise leave a redo's new video over
    /// the committed one while the row still describes the old, since the
    /// store calls no `revert` after a failed `publish`.
    fn publish_with(&mut self, mut dirs: Option<&mut Vec<PathBuf>>) -> std::io::Result<()> {
        let published = self.install_all(&mut dirs);
        if published.is_err() {
            self.revert();
        }
        published
    }

    /// Each staged file to its final path, in order; stops at the first
    /// that fails.
    fn install_all(&mut self, dirs: &mut Option<&mut Vec<PathBuf>>) -> std::io::Result<()> {
        for f in &mut self.files {
            match f {
                Pending::Local {
                    staged,
                    installed,
                    path,
                } => {
                    if let Some(s) = staged.take() {
                        // The kind of the write that failed is kept, so the
                        // caller can tell a full disk from other refusals.
                        let done = blocking(|| match dirs.as_deref_mut() {
                            Some(dirs) => s.install_deferring(path, dirs),
                            None => s.install(path),
                        })
                        .map_err(|e| {
                            let kind = e
                                .local_write_error()
                                .map_or(std::io::ErrorKind::Other, std::io::Error::kind);
                            std::io::Error::new(kind, e)
                        })?;
                        *installed = Some(done);
                    }
                }
                Pending::Object { staged, installed } => {
                    if let Some(s) = staged.take() {
                        *installed = Some(block_on(s.complete())??);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Publish for Outputs {
    fn publish(&mut self) -> std::io::Result<()> {
        self.publish_with(None)
    }

    /// The renames, each directory's fsync left to the batch (one per
    /// distinct directory of the whole group commit).
    fn publish_deferring(&mut self, dirs: &mut Vec<PathBuf>) -> std::io::Result<()> {
        self.publish_with(Some(dirs))
    }

    /// An upload's completion is a round trip to the object store.
    fn remote(&self) -> bool {
        self.files
            .iter()
            .any(|f| matches!(f, Pending::Object { .. }))
    }

    fn revert(&mut self) {
        // Newest first, so a thumbnail never outlives its video's revert.
        for f in self.files.iter_mut().rev() {
            match f {
                Pending::Local {
                    installed, path, ..
                } => {
                    if let Some(i) = installed.take()
                        && let Err(e) = blocking(|| i.revert())
                    {
                        warn!(path = %path.display(), error = %e, "could not put back the previous file after a failed commit");
                    }
                }
                Pending::Object { installed, .. } => {
                    if let Some(i) = installed.take()
                        && let Err(e) = block_on(i.revert()).and_then(|r| r)
                    {
                        warn!(error = %e, "could not put back the previous object after a failed commit");
                    }
                }
            }
        }
    }

    fn committed(&mut self) {
        for f in &mut self.files {
            match f {
                Pending::Local { installed, .. } => {
                    if let Some(i) = installed.take() {
                        i.commit();
                    }
                }
                Pending::Object { installed, .. } => {
                    if let Some(i) = installed.take() {
                        // Only the kept-aside copy is deleted: a failure
                        // leaves it to the sweep.
                        let _ = block_on(i.commit());
                    }
                }
            }
        }
    }
}

/// Runs an object store request from inside the store's transaction (which
/// `Publish` calls synchronously) on this runtime. Every command runs on
/// the multi-thread runtime (`main.rs`); anywhere else this refuses rather
/// than deadlock.
fn block_on<F: std::future::Future>(f: F) -> std::io::Result<F::Output> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| h.block_on(f)))
        }
        _ => Err(std::io::Error::other(
            "publishing to an object store needs the multi-thread runtime",
        )),
    }
}

/// Runs a short blocking filesystem step (a rename and a directory fsync)
/// from inside the store's transaction without stalling the runtime's other
/// tasks, where the runtime allows it.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// When a staged file waiting on its sibling's download is due a
/// [`touch`]: every [`crate::media::temp_keep_every`], as an upload's
/// marker is rewritten. Not on every progress call: a small thumbnail finishes well
/// within the limit, and a touch is an open, a `utimensat` and a close on
/// the runtime's thread.
struct Freshen {
    every: Duration,
    last: Instant,
}

impl Freshen {
    fn new(every: Duration, fresh_at: Instant) -> Self {
        Freshen {
            every,
            last: fresh_at,
        }
    }

    fn due(&mut self, now: Instant) -> bool {
        let due = now.saturating_duration_since(self.last) >= self.every;
        if due {
            self.last = now;
        }
        due
    }
}

/// Bump a file's modification time (when [`Freshen`] says so, from a
/// progress callback). A failure only means the sweep may take the file
/// early.
fn touch(path: &Path) {
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
}

/// A job that met a refusing media directory tries again at most this
/// long after the last failure, however many failures in a row: each retry
/// costs a request and a first chunk, and a freed disk should be used soon.
const MEDIA_RETRY_MAX: Duration = Duration::from_secs(60);

/// How a video download failed, for what the job does next.
enum FetchFailure {
    Gone(String),
    Permanent(String),
    Transient(String, Option<Duration>),
    /// Our own write failed (the media directory): not the job's fault.
    Local(std::io::Error, String),
}

impl From<ProvidersError> for FetchFailure {
    fn from(e: ProvidersError) -> Self {
        if let Some(io) = e.local_write_error() {
            FetchFailure::Local(copy_io(io), error_chain(&e))
        } else if e.is_output_gone() {
            FetchFailure::Gone(error_chain(&e))
        } else if e.is_transient() {
            FetchFailure::Transient(error_chain(&e), e.retry_after())
        } else {
            FetchFailure::Permanent(error_chain(&e))
        }
    }
}

impl Worker {
    pub(super) async fn store_outputs(
        &self,
        cx: &Ctx<'_>,
        video: &DownloadSpec,
        thumbnail: Option<&DownloadSpec>,
    ) -> Result<Done, WorkError> {
        let job = cx.job;
        // `check_row` vouched for both ids (the SPEC's alphabet).
        let scene = job.scene_id.as_deref().unwrap_or(&job.id);
        let version = job.scene_version_id.as_deref().unwrap_or(&job.id);
        let media = &cx.s.media_dir;
        let video_path =
            PathBuf::from(
                self.storage
                    .location("videos", scene, version, &video.extension),
            );
        let video_received = match self.receive_output(cx, video, &video_path, None).await {
            Ok(v) => v,
            Err(f) => return self.download_failed(cx, f).await,
        };
        let mut thumb_problem = None;
        let thumb_received = match thumbnail {
            None => None,
            Some(t) => {
                let thumb_path = PathBuf::from(self.storage.location(
                    "thumbnails",
                    scene,
                    version,
                    &t.extension,
                ));
                match self
                    .receive_output(cx, t, &thumb_path, video_received.temp_path())
                    .await
                {
                    Ok(r) => Some((r, thumb_path)),
                    Err(e) => {
                        if let Some(io) = e.local_write_error() {
                            // The received video goes with this return; both are
                            // fetched again once the media directory takes them.
                            let detail = format!("thumbnail: {}", error_chain(&e));
                            return self.media_refused(cx, copy_io(io), detail).await;
                        }
                        let why = error_chain(&e);
                        warn!(job = %job.id, reason = %why, "thumbnail could not be fetched; completing with the video alone");
                        thumb_problem = Some(why);
                        None
                    }
                }
            }
        };
        let (thumb_received, thumb_path) = thumb_received.unzip();
        let (video_synced, thumb_synced) = sync_outputs(video_received, thumb_received).await;
        let staged_video = match video_synced {
            Ok(v) => v,
            Err(f) => return self.download_failed(cx, f).await,
        };
        let staged_thumb = match thumb_synced.zip(thumb_path) {
            None => None,
            Some((Ok(s), path)) => Some((s, path)),
            Some((Err(e), _)) => {
                let io = e
                    .local_write_error()
                    .map_or_else(|| std::io::Error::other(error_chain(&e)), copy_io);
                let detail = format!("thumbnail: {}", error_chain(&e));
                return self.media_refused(cx, io, detail).await;
            }
        };
        // Only a whole job's outputs end a fault: a small file slipping
        // onto a nearly full disk would make it flap.
        self.media_wrote();
        decide(job.status, Event::OutputsStored)?;
        let stored = |s: &StagedOutput, p: &Path| StoredOutput {
            path: p.to_string_lossy().into_owned(),
            sha256: s.sha256_hex().to_owned(),
            bytes: s.bytes(),
        };
        let completion = Completion {
            from: job.status,
            now: self.now_ms(),
            video: stored(&staged_video, &video_path),
            thumbnail: staged_thumb.as_ref().map(|(s, p)| stored(s, p)),
            thumbnail_problem: thumb_problem.clone(),
        };
        let outputs = Outputs {
            files: std::iter::once((staged_video, video_path))
                .chain(staged_thumb)
                .map(|(s, path)| s.pending(path))
                .collect(),
        };
        let detail = format!(
            "video {} ({} bytes, sha256 {}){}",
            completion.video.path,
            completion.video.bytes,
            completion.video.sha256,
            thumb_problem
                .map(|w| format!("; no thumbnail: {w}"))
                .unwrap_or_default()
        );
        // The completion runs to its end in its own task: cut off between
        // its COMMIT and its bookkeeping (the shutdown grace ran out), it
        // would put back files a committed row points at. The slot may stop
        // waiting for it; `Worker::detached` is awaited before exit.
        let store = self.store.clone();
        let group = self.group.clone();
        let lease = cx.lease.clone();
        let turn = self.versions.turn(media, version).await;
        let completed = self
            .detached
            .spawn(async move {
                let _turn = turn;
                group
                    .complete(&*store, lease, completion, Box::new(outputs))
                    .await
            })
            .await;
        let completed = match completed {
            Ok(r) => r,
            Err(e) => {
                return Ok(Done {
                    to: job.status,
                    outcome: JobOutcome::Error,
                    detail: format!("completion task failed: {e}"),
                });
            }
        };
        match completed {
            Ok(()) => Ok(Done {
                to: JobStatus::Completed,
                outcome: JobOutcome::Completed,
                detail,
            }),
            // The disk refused the rename (full, read-only): the staged files
            // are gone with `outputs`; the machine's fault, not the job's.
            Err(StoreError::PublishOutputs(io)) => {
                let detail = format!("publish the outputs: {}", error_chain(&io));
                let root = io
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<ProvidersError>())
                    .and_then(ProvidersError::local_write_error)
                    .map_or_else(|| copy_io(&io), copy_io);
                self.media_refused(cx, root, detail).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Receive `spec` for `location` on the configured store: a temp file
    /// that [`sync_outputs`] fsyncs, or a multipart upload at the final key
    /// (every part sent, not yet completed).
    async fn receive_output(
        &self,
        cx: &Ctx<'_>,
        spec: &DownloadSpec,
        location: &Path,
        sibling: Option<&Path>,
    ) -> Result<ReceivedOutput, ProvidersError> {
        let Storage::Object(store) = &self.storage else {
            return self
                .receive_beside(cx, spec, sibling)
                .await
                .map(ReceivedOutput::Local);
        };
        let key = store.key_of(&location.to_string_lossy()).ok_or_else(|| {
            ProvidersError::WriteOutput {
                path: location.to_owned(),
                source: std::io::Error::other("not a key of the configured store"),
            }
        })?;
        let keep_every = crate::media::temp_keep_every(cx.s.limits.stall_window);
        let mut upload = store.upload(key, keep_every);
        let metrics = self.metrics.clone();
        let progress = cx.progress.clone();
        let mut last = 0u64;
        let fetched = self
            .downloader
            .fetch_into(
                spec,
                &cx.handle.policy,
                &cx.s.limits,
                &mut upload,
                move |total| {
                    metrics.download_bytes.inc_by(total.saturating_sub(last));
                    last = total;
                    progress.mark();
                },
            )
            .await?;
        upload.finish(fetched).await.map(ReceivedOutput::Object)
    }

    /// Receive `spec`; while it progresses, keep `sibling` (the received
    /// video, waiting for its thumbnail) fresh so the temp sweep leaves it
    /// alone.
    async fn receive_beside(
        &self,
        cx: &Ctx<'_>,
        spec: &DownloadSpec,
        sibling: Option<&Path>,
    ) -> Result<Received, ProvidersError> {
        let metrics = self.metrics.clone();
        let progress = cx.progress.clone();
        let sibling = sibling.map(Path::to_owned);
        // The sibling was written a moment ago, or is still in memory.
        let mut freshen = Freshen::new(
            crate::media::temp_keep_every(cx.s.limits.stall_window),
            Instant::now(),
        );
        let mut last = 0u64;
        self.downloader
            .receive(
                spec,
                &cx.handle.policy,
                &cx.s.media_dir,
                &cx.s.limits,
                move |total| {
                    metrics.download_bytes.inc_by(total.saturating_sub(last));
                    last = total;
                    progress.mark();
                    if let Some(p) = &sibling
                        && freshen.due(Instant::now())
                    {
                        touch(p);
                    }
                },
            )
            .await
    }

    async fn download_failed(&self, cx: &Ctx<'_>, e: ProvidersError) -> Result<Done, WorkError> {
        match FetchFailure::from(e) {
            FetchFailure::Gone(why) => {
                self.settle(
                    cx,
                    Event::OutputsGone,
                    format!("outputs gone at the provider: {why}"),
                    JobOutcome::Failed,
                )
                .await
            }
            FetchFailure::Permanent(why) => {
                self.settle(
                    cx,
                    Event::ProviderFailed,
                    format!("output refused: {why}"),
                    JobOutcome::Failed,
                )
                .await
            }
            FetchFailure::Transient(why, retry_after) => {
                self.retry(cx, true, format!("download: {why}"), retry_after)
                    .await
            }
            FetchFailure::Local(io, why) => {
                self.media_refused(cx, io, format!("download: {why}")).await
            }
        }
    }

    /// The media directory refused a write (`io`; `detail` for the row and
    /// the log): recorded and reported, and the job tries again without
    /// spending an attempt, after a delay that grows with the failures in a
    /// row across jobs (so a full disk is not met with a download per job
    /// every few seconds), capped at [`MEDIA_RETRY_MAX`].
    async fn media_refused(
        &self,
        cx: &Ctx<'_>,
        io: std::io::Error,
        detail: String,
    ) -> Result<Done, WorkError> {
        let disk_full = is_no_space(&io);
        let fault = self.media.failed(self.now_ms(), disk_full, io.to_string());
        self.metrics
            .storage_fault("media", if disk_full { "disk_full" } else { "write" });
        self.metrics.media_writable.set(0);
        if fault.failures == 1 {
            error!(media = %self.storage.describe(), error = %io, %detail, "the media directory refuses writes; finished jobs wait for it without spending attempts");
        }
        let delay =
            cx.s.backoff
                .delay(fault.failures, rand::random::<f64>(), None)
                .min(MEDIA_RETRY_MAX);
        self.retry(cx, false, format!("media directory: {detail}"), Some(delay))
            .await
    }

    /// A write to the media directory went through: any fault is over.
    fn media_wrote(&self) {
        if let Some(f) = self.media.wrote() {
            self.metrics.media_writable.set(1);
            let secs = self.now_ms().saturating_sub(f.since) / 1000;
            info!(
                failures = f.failures,
                "the media directory takes writes again after {secs}s"
            );
        }
    }
}

/// An owned stand-in for a borrowed `io::Error`: its kind and message.
fn copy_io(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::final_path;

    /// Two `VersionLocks` stand for two processes sharing a media directory:
    /// one version's turn is held by one at a time; other versions' turns
    /// are not held up (unless they share a lock file).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_turn_per_scene_version_across_processes() {
        let media = tempfile::tempdir().unwrap();
        let (a, b) = (VersionLocks::default(), VersionLocks::default());
        let held = a.turn(media.path(), "ver_1").await;
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            b.turn(media.path(), "ver_1"),
        )
        .await;
        assert!(waiting.is_err(), "the other process waits for the turn");
        // A version on another lock file goes ahead at once.
        let other = (0..1000)
            .map(|i| format!("ver_x{i}"))
            .find(|v| lock_path(media.path(), v) != lock_path(media.path(), "ver_1"))
            .unwrap();
        let _other = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            b.turn(media.path(), &other),
        )
        .await
        .expect("another version is not held up");
        drop(held);
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            b.turn(media.path(), "ver_1"),
        )
        .await
        .expect("the turn passes once released");
    }

    /// Two outputs staged in a real media directory, from the loopback fake.
    async fn staged_pair(media: &Path) -> (StagedOutput, StagedOutput) {
        use clawcut_providers::{
            DownloadLimits, DownloadPolicy, Downloader, ProviderConfig, ProviderKind,
            build_provider,
        };
        use clawcut_test_support::fake_openai::{FakeOpenAi, Script};
        let fake = FakeOpenAi::start("k").await;
        fake.script("video_1", Script::default().with_video_bytes(5_000));
        let cfg = ProviderConfig {
            name: "openai".into(),
            kind: ProviderKind::OpenAi,
            base_url: url::Url::parse(&fake.base_url()).unwrap(),
            api_key: "k".into(),
            api_secret: None,
            timeout: std::time::Duration::from_secs(5),
            max_in_flight: 4,
            requests_per_minute: None,
            allowed_download_hosts: Vec::new(),
        };
        let clawcut_core::PollOutcome::Succeeded { video, thumbnail } =
            build_provider(&cfg).unwrap().poll("video_1").await.unwrap()
        else {
            panic!("expected a finished video");
        };
        let d = Downloader::new(std::time::Duration::from_secs(5)).unwrap();
        let policy = DownloadPolicy::for_provider(&cfg);
        let limits = DownloadLimits {
            max_bytes: 1 << 20,
            deadline: std::time::Duration::from_secs(10),
            stall_window: std::time::Duration::ZERO,
            stall_min_bytes: 0,
        };
        let stage = async |spec| {
            let s = d.stage(spec, &policy, media, &limits, |_| {}).await;
            StagedOutput::Local(s.unwrap())
        };
        (stage(&video).await, stage(&thumbnail.unwrap()).await)
    }

    /// A redo whose video is renamed into place and whose thumbnail is then
    /// refused puts the committed video back: the failed `publish` leaves
    /// nothing behind, as the store expects (it calls no `revert` then).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_publish_refused_halfway_puts_the_first_file_back() {
        let media = tempfile::tempdir().unwrap();
        let video_path = final_path(media.path(), "videos", "s1", "v1", "mp4");
        std::fs::create_dir_all(video_path.parent().unwrap()).unwrap();
        std::fs::write(&video_path, b"the committed video").unwrap();
        // `thumbnails/s1` cannot be made: `thumbnails` is a file.
        std::fs::write(media.path().join("thumbnails"), b"").unwrap();
        let thumb_path = final_path(media.path(), "thumbnails", "s1", "v1", "jpg");
        for deferring in [false, true] {
            let (video, thumb) = staged_pair(media.path()).await;
            let mut outputs = Outputs {
                files: vec![
                    video.pending(video_path.clone()),
                    thumb.pending(thumb_path.clone()),
                ],
            };
            let mut dirs = Vec::new();
            let res = if deferring {
                outputs.publish_deferring(&mut dirs)
            } else {
                outputs.publish()
            };
            assert!(res.is_err(), "deferring {deferring}");
            assert_eq!(
                std::fs::read(&video_path).unwrap(),
                b"the committed video",
                "deferring {deferring}"
            );
            drop(outputs);
            assert_eq!(std::fs::read(&video_path).unwrap(), b"the committed video");
        }
        let left: Vec<_> = std::fs::read_dir(media.path().join(".tmp"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_waiting_sibling_is_touched_only_once_its_interval_passed() {
        let t0 = Instant::now();
        let every = Duration::from_secs(200);
        let mut f = Freshen::new(every, t0);
        // A thumbnail's progress calls within the interval: no touch.
        assert!(!f.due(t0));
        assert!(!f.due(t0 + Duration::from_secs(199)));
        // A slow one: touched once the interval passed, then not again
        // until a further interval from that touch.
        assert!(f.due(t0 + every));
        assert!(!f.due(t0 + every + Duration::from_secs(1)));
        assert!(f.due(t0 + every * 2));
        // A clock read before the start (never, but) is not due.
        let mut g = Freshen::new(every, t0 + every);
        assert!(!g.due(t0));
    }

    #[test]
    fn lock_files_are_few_and_stable() {
        let p = lock_path(Path::new("/m"), "ver_1");
        assert_eq!(p, lock_path(Path::new("/m"), "ver_1"));
        assert!(p.starts_with("/m/.locks"));
        let distinct: std::collections::HashSet<_> = (0..10_000)
            .map(|i| lock_path(Path::new("/m"), &format!("v{i}")))
            .collect();
        assert_eq!(distinct.len() as u64, LOCK_FILES);
    }

    #[test]
    fn final_paths_follow_the_spec() {
        let p = final_path(Path::new("/m"), "videos", "s1", "v2", "mp4");
        assert_eq!(p, PathBuf::from("/m/videos/s1/v2.mp4"));
        let p = final_path(Path::new("/m"), "thumbnails", "s1", "v2", "WEBP");
        assert_eq!(p, PathBuf::from("/m/thumbnails/s1/v2.webp"));
        let p = final_path(Path::new("/m"), "videos", "s1", "v2", "../../etc");
        assert_eq!(p, PathBuf::from("/m/videos/s1/v2.mp4"));
    }
}
