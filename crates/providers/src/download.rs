//! Bringing a finished output home, in two steps so that the final path only
//! changes inside the caller's fenced database commit.
//!
//! 1. [`Downloader::stage`] streams the output to a temporary file in
//!    `<media_dir>/.tmp/`, hashing and counting it on the way, refusing
//!    anything past the byte limit or outside the [`DownloadPolicy`], and
//!    giving up on a transfer that outlives its [`DownloadLimits::deadline`]
//!    or stalls (too few bytes per [`DownloadLimits::stall_window`]). It then
//!    flushes and fsyncs the file. Nothing is at any final path yet: a worker
//!    that has lost its lease may stage as much as it likes without touching
//!    a file another worker committed.
//! 2. [`Staged::install`] (blocking, plain `std::fs`) is called only inside
//!    the caller's fenced commit, after the fenced write matched: it keeps any
//!    file already at the final path aside (a hard link in `.tmp`, `*.prev`),
//!    renames the temp file into place and fsyncs the directory. Then the
//!    transaction commits and the caller calls [`Installed::commit`] (the
//!    kept-aside file is dropped), or it fails and the caller calls
//!    [`Installed::revert`] (the previous file, or no file, is back).
//!
//! The invariants the daemon relies on: a file at a final path is always
//! complete and fsynced, and it reaches that path only by rename from the same
//! filesystem (`.tmp` is under the media directory, so the rename is atomic);
//! only a worker whose fenced commit is going through installs. Temporary
//! files (`*.part`, `*.prev`) are removed on every error, when the staging
//! future or the [`Staged`] is dropped, and when an [`Installed`] is settled;
//! [`cleanup_stale_temp`] sweeps what a crash left.
//!
//! [`Downloader::download`] is `stage` then `install` then `commit`, for
//! callers with no commit step.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clawcut_core::DownloadSpec;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use url::Url;

use crate::error::ProvidersError;
use crate::http::{display_url, retry_after};

mod file_sink;
mod policy;
use file_sink::FileSink;
pub use policy::DownloadPolicy;

/// Where temporary files go, under the media directory.
pub const TEMP_DIR: &str = ".tmp";
/// A download in progress, or staged and waiting for its install.
const TEMP_SUFFIX: &str = "part";
/// The file an install replaced, kept until the commit is settled.
const PREV_SUFFIX: &str = "prev";
const MAX_REDIRECTS: usize = 5;
/// Progress is reported at most this often (bytes or time, whichever first),
/// so a lease heartbeat does not turn into a write per chunk.
const PROGRESS_BYTES: u64 = 4 * 1024 * 1024;
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Bounds on one output download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadLimits {
    /// More than this many bytes (announced or received) is refused.
    pub max_bytes: u64,
    /// Total wall time for the whole transfer, from the first request
    /// (redirects included) to the last byte. A duration too large to add to
    /// the clock means no deadline.
    pub deadline: Duration,
    /// A transfer is stalled when fewer than `stall_min_bytes` arrive within
    /// any `stall_window` (checked per window: at the end of each window since
    /// the last check, compare bytes received in it). Windows start with the
    /// first request, so waiting a whole window for response headers is a
    /// stall too. A zero window, a zero `stall_min_bytes` or a window too large
    /// to add to the clock disables the check.
    pub stall_window: Duration,
    pub stall_min_bytes: u64,
}

/// A complete, synced output at its final path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub sha256_hex: String,
    pub bytes: u64,
}

/// Streams outputs to disk. One is enough for the whole daemon; it holds a
/// connection pool.
#[derive(Debug, Clone)]
pub struct Downloader {
    client: reqwest::Client,
}

impl Downloader {
    /// Builds the client; `connect_timeout` bounds connecting. Everything
    /// after that (headers, body) is bounded by the [`DownloadLimits`] passed
    /// to each download.
    pub fn new(connect_timeout: Duration) -> Result<Self, ProvidersError> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            // Redirects are followed by hand so every hop is checked against
            // the policy and credentials never leave their origin.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("clawcut-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ProvidersError::BuildClient)?;
        Ok(Downloader { client })
    }

    /// Streams `spec` to a temp file under `<media_dir>/.tmp/`, hashing and
    /// counting, enforcing `limits` and `allowed`, then flushes and fsyncs
    /// it. Nothing is at any final path yet. `on_progress(total_bytes)` is
    /// called as bytes arrive, at most every few MiB or every second (and
    /// once at the end), so the caller can renew its lease.
    ///
    /// The temp file is removed on error, when this future is dropped, and
    /// when the returned [`Staged`] is dropped without being installed.
    pub async fn stage(
        &self,
        spec: &DownloadSpec,
        allowed: &DownloadPolicy,
        media_dir: &Path,
        limits: &DownloadLimits,
        on_progress: impl FnMut(u64) + Send,
    ) -> Result<Staged, ProvidersError> {
        let received = self
            .receive(spec, allowed, media_dir, limits, on_progress)
            .await?;
        let [staged] = sync_all([received]).await;
        staged
    }

    /// [`stage`](Self::stage) up to its fsync: every byte received and
    /// verified, the last of them (all of them, for an output under 256
    /// KiB) still in memory. [`sync_all`] finishes several in one blocking
    /// call, so a job's video and thumbnail cost one hand-off to the
    /// blocking pool, not two. Dropped, the temp file is removed.
    pub async fn receive(
        &self,
        spec: &DownloadSpec,
        allowed: &DownloadPolicy,
        media_dir: &Path,
        limits: &DownloadLimits,
        on_progress: impl FnMut(u64) + Send,
    ) -> Result<Received, ProvidersError> {
        let mut sink = FileSink::new(media_dir.join(TEMP_DIR));
        let fetched = self
            .fetch_into(spec, allowed, limits, &mut sink, on_progress)
            .await?;
        let Some(unsynced) = sink.into_unsynced().await? else {
            // `fetch_into` opens the sink before its first chunk, and an
            // empty output is an error: unreachable, but not worth a panic.
            return Err(ProvidersError::EmptyOutput {
                url: display_url_of(&spec.url),
            });
        };
        Ok(Received {
            unsynced,
            sha256_hex: fetched.sha256_hex,
            bytes: fetched.bytes,
        })
    }

    /// Streams `spec` into `sink`, hashing and counting, enforcing `limits`
    /// and `allowed`: the one download loop, whatever the bytes are written
    /// to (a temp file for [`stage`](Self::stage), a multipart upload to an
    /// object store for the daemon's `media.store`). The sink is opened only
    /// once the answer is a success whose announced length is within the
    /// limit, and gets every chunk in order; a length past the limit, a
    /// truncated or empty body is an error before the caller can make the
    /// bytes visible anywhere. Progress as in [`stage`](Self::stage), with
    /// a last call once every byte went into the sink.
    pub async fn fetch_into<S: OutputSink>(
        &self,
        spec: &DownloadSpec,
        allowed: &DownloadPolicy,
        limits: &DownloadLimits,
        sink: &mut S,
        mut on_progress: impl FnMut(u64) + Send,
    ) -> Result<Fetched, ProvidersError> {
        let url = Url::parse(&spec.url).map_err(|source| ProvidersError::BadUrl {
            url: display_url_of(&spec.url),
            source,
        })?;
        let headers = header_map(spec)?;
        let mut watch = Watch::start(limits, Instant::now());
        let (mut resp, url) = self
            .send_following_redirects(url, headers, allowed, &mut watch)
            .await?;
        let shown_url = display_url(&url);

        let max_bytes = limits.max_bytes;
        let expected = resp.content_length();
        if expected.is_some_and(|len| len > max_bytes) {
            return Err(ProvidersError::OutputTooLarge { limit: max_bytes });
        }
        sink.open(expected).await?;

        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        let mut reported = (0u64, Instant::now());
        loop {
            let chunk = watch
                .run(resp.chunk(), &shown_url)
                .await?
                .map_err(|source| ProvidersError::DownloadOutput {
                    url: shown_url.clone(),
                    // Its text would carry the full (signed) URL.
                    source: source.without_url(),
                })?;
            let Some(chunk) = chunk else { break };
            let len = chunk.len() as u64;
            total = total.saturating_add(len);
            if total > max_bytes {
                return Err(ProvidersError::OutputTooLarge { limit: max_bytes });
            }
            hasher.update(&chunk);
            sink.write(chunk).await?;
            watch.received(len);
            // Chunks that keep arriving never let a timer fire: check here
            // too, or a steady stream would outlive its deadline.
            watch.check(Instant::now(), &shown_url)?;
            if total - reported.0 >= PROGRESS_BYTES || reported.1.elapsed() >= PROGRESS_INTERVAL {
                on_progress(total);
                reported = (total, Instant::now());
            }
        }
        if let Some(expected) = expected.filter(|&e| e != total) {
            return Err(ProvidersError::TruncatedOutput {
                url: shown_url,
                expected,
                got: total,
            });
        }
        if total == 0 {
            return Err(ProvidersError::EmptyOutput { url: shown_url });
        }
        on_progress(total);
        Ok(Fetched {
            sha256_hex: hex::encode(hasher.finalize()),
            bytes: total,
        })
    }

    /// [`stage`](Self::stage), then [`Staged::install`] to `final_path` and
    /// [`Installed::commit`]: for callers that have no commit step to fence
    /// the install with.
    pub async fn download(
        &self,
        spec: &DownloadSpec,
        allowed: &DownloadPolicy,
        media_dir: &Path,
        final_path: &Path,
        limits: &DownloadLimits,
        on_progress: impl FnMut(u64) + Send,
    ) -> Result<Downloaded, ProvidersError> {
        let staged = self
            .stage(spec, allowed, media_dir, limits, on_progress)
            .await?;
        let sha256_hex = staged.sha256_hex.clone();
        let bytes = staged.bytes;
        let final_owned = final_path.to_owned();
        let installed = tokio::task::spawn_blocking(move || staged.install(&final_owned))
            .await
            .map_err(|e| ProvidersError::WriteOutput {
                path: final_path.to_owned(),
                source: io::Error::other(e),
            })??;
        installed.commit();
        Ok(Downloaded {
            path: final_path.to_owned(),
            sha256_hex,
            bytes,
        })
    }

    async fn send_following_redirects(
        &self,
        mut url: Url,
        mut headers: HeaderMap,
        allowed: &DownloadPolicy,
        watch: &mut Watch,
    ) -> Result<(reqwest::Response, Url), ProvidersError> {
        let spec_origin = url.origin();
        for _ in 0..=MAX_REDIRECTS {
            allowed.check(&url)?;
            // The spec's headers are credentials for one origin (the
            // provider's API, e.g. OpenAI's content endpoint), never for a
            // CDN or whatever a poll answer or a redirect points at.
            if !allowed.credentials_go_to(&url, &spec_origin) {
                headers.clear();
            }
            let shown = display_url(&url);
            let send = self.client.get(url.clone()).headers(headers.clone()).send();
            let resp = watch.run(send, &shown).await?.map_err(|source| {
                ProvidersError::DownloadOutput {
                    url: shown.clone(),
                    source: source.without_url(),
                }
            })?;
            let status = resp.status();
            if status.is_success() {
                return Ok((resp, url));
            }
            if !is_followed_redirect(status) {
                return Err(ProvidersError::DownloadStatus {
                    url: shown,
                    status: status.as_u16(),
                    retry_after: retry_after(resp.headers(), SystemTime::now()),
                });
            }
            let next = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|loc| url.join(loc).ok())
                .ok_or(ProvidersError::BadRedirect { url: shown })?;
            url = next;
        }
        Err(ProvidersError::TooManyRedirects {
            limit: MAX_REDIRECTS,
        })
    }
}

/// Where [`Downloader::fetch_into`] writes a download's bytes, in order.
/// An error of either method ends the download with it (it should be a
/// [`ProvidersError::WriteOutput`], so the caller can tell the machine's
/// storage refusing from the provider's fault); the sink cleans up what it
/// wrote when dropped unfinished.
pub trait OutputSink: Send {
    /// Called once, after the answer was found good and before the first
    /// chunk: where nothing is created for a download that fails early.
    /// `announced` is the answer's `Content-Length`, already within the
    /// limit (a hint for buffers; the body is still checked against it).
    fn open(
        &mut self,
        announced: Option<u64>,
    ) -> impl Future<Output = Result<(), ProvidersError>> + Send;
    /// The next chunk of the body.
    fn write(&mut self, chunk: Bytes) -> impl Future<Output = Result<(), ProvidersError>> + Send;
}

/// What [`Downloader::fetch_into`] received: all of it went into the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The sha256 of the bytes, lowercase hex, computed as they streamed.
    pub sha256_hex: String,
    pub bytes: u64,
}

/// The deadline and the stall windows of one transfer, on tokio's clock (so
/// `tokio::time::pause()` drives them in tests).
#[derive(Debug)]
struct Watch {
    /// `None`: no deadline (it did not fit on the clock).
    deadline: Option<Instant>,
    /// The end of the current stall window; `None`: no stall check.
    window_end: Option<Instant>,
    window_bytes: u64,
    limits: DownloadLimits,
}

impl Watch {
    fn start(limits: &DownloadLimits, now: Instant) -> Self {
        let stall_check = limits.stall_min_bytes > 0 && !limits.stall_window.is_zero();
        Watch {
            deadline: now.checked_add(limits.deadline),
            window_end: stall_check
                .then(|| now.checked_add(limits.stall_window))
                .flatten(),
            window_bytes: 0,
            limits: *limits,
        }
    }

    fn received(&mut self, bytes: u64) {
        self.window_bytes = self.window_bytes.saturating_add(bytes);
    }

    /// The deadline, then the stall window if it has ended (which starts the
    /// next one at `now`).
    fn check(&mut self, now: Instant, url: &str) -> Result<(), ProvidersError> {
        if self.deadline.is_some_and(|d| now >= d) {
            return Err(ProvidersError::DownloadDeadline {
                url: url.to_owned(),
                deadline: self.limits.deadline,
            });
        }
        if let Some(end) = self.window_end
            && now >= end
        {
            if self.window_bytes < self.limits.stall_min_bytes {
                return Err(ProvidersError::DownloadStalled {
                    url: url.to_owned(),
                    bytes: self.window_bytes,
                    window: self.limits.stall_window,
                });
            }
            self.window_bytes = 0;
            self.window_end = now.checked_add(self.limits.stall_window);
        }
        Ok(())
    }

    fn next_wake(&self) -> Option<Instant> {
        match (self.deadline, self.window_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Awaits `fut`, checking the deadline and each stall window as they
    /// come due; the same future is polled on across windows that pass.
    async fn run<F: Future>(&mut self, fut: F, url: &str) -> Result<F::Output, ProvidersError> {
        let mut fut = std::pin::pin!(fut);
        loop {
            match self.next_wake() {
                None => return Ok(fut.await),
                Some(at) => {
                    if let Ok(out) = tokio::time::timeout_at(at, fut.as_mut()).await {
                        return Ok(out);
                    }
                }
            }
            self.check(Instant::now(), url)?;
        }
    }
}

/// A verified output, received but not yet fsynced: [`sync_all`] (or
/// [`Received::sync`], blocking) makes it a [`Staged`]. Dropped, its temp
/// file is removed.
#[derive(Debug)]
pub struct Received {
    unsynced: file_sink::Unsynced,
    sha256_hex: String,
    bytes: u64,
}

impl Received {
    /// The temp file under `<media_dir>/.tmp/`. It may not exist yet: an
    /// output that fit in memory is created by its sync.
    pub fn temp_path(&self) -> &Path {
        self.unsynced.path()
    }

    /// Blocking: write what is still in memory, fsync, close.
    pub fn sync(self) -> Result<Staged, ProvidersError> {
        let Received {
            unsynced,
            sha256_hex,
            bytes,
        } = self;
        Ok(Staged {
            temp: unsynced.sync()?,
            sha256_hex,
            bytes,
        })
    }
}

/// [`Received::sync`] for each, one after another in one blocking call;
/// each answered on its own, in order. A failed sync removes only its own
/// file.
pub async fn sync_all<const N: usize>(
    received: [Received; N],
) -> [Result<Staged, ProvidersError>; N] {
    let paths = received.each_ref().map(|r| r.temp_path().to_owned());
    match tokio::task::spawn_blocking(move || received.map(Received::sync)).await {
        Ok(synced) => synced,
        // A panicked sync dropped every `Received`, and their files with them.
        Err(e) => paths.map(|p| Err(write_err(&p)(io::Error::other(e.to_string())))),
    }
}

/// A verified, fsynced output in the temp dir, not at any final path yet.
/// Removed on drop unless installed.
#[derive(Debug)]
pub struct Staged {
    temp: TempFile,
    sha256_hex: String,
    bytes: u64,
}

impl Staged {
    /// The sha256 of the bytes received, lowercase hex.
    pub fn sha256_hex(&self) -> &str {
        &self.sha256_hex
    }

    /// How many bytes were received (and are in the file).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The temp file under `<media_dir>/.tmp/`.
    pub fn temp_path(&self) -> &Path {
        &self.temp.path
    }

    /// Moves the output to `final_path`. Blocking (plain `std::fs`): it is
    /// meant to run inside the caller's fenced database transaction, after
    /// the fenced write matched and before the commit.
    ///
    /// Creates the parent directories, keeps any file already at
    /// `final_path` aside (a hard link `<media_dir>/.tmp/*.prev`), renames
    /// the temp file to `final_path` and fsyncs the directory (and a newly
    /// created parent's parent). On error the temp file is gone and
    /// `final_path` is as it was (a failure after the rename, of a directory
    /// fsync, is reverted here, best effort).
    pub fn install(self, final_path: &Path) -> Result<Installed, ProvidersError> {
        let mut dirs = Vec::new();
        let installed = self.install_deferring(final_path, &mut dirs)?;
        for dir in &dirs {
            if let Err(e) = sync_dir(dir).map_err(write_err(dir)) {
                // The caller gets no `Installed` to revert, so undo here.
                let _ = installed.revert();
                return Err(e);
            }
        }
        Ok(installed)
    }

    /// [`install`](Self::install) without its directory fsyncs: the
    /// directories whose entries changed (the parent, and a newly created
    /// parent's parent) are added to `dirs`, and the file is durable at
    /// `final_path` only once the caller has fsynced each of them
    /// ([`sync_dir`]) before its commit. A batch of installs into one
    /// directory then pays for its fsync once. A caller whose fsync fails
    /// must [`Installed::revert`].
    pub fn install_deferring(
        self,
        final_path: &Path,
        dirs: &mut Vec<PathBuf>,
    ) -> Result<Installed, ProvidersError> {
        let parent = parent_dir(final_path);
        // One `mkdir` tells both whether the directory is there and, when
        // it was not, makes it: no `stat` per file on the hot path.
        let parent_existed = match std::fs::create_dir(parent) {
            Ok(()) => false,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(parent).map_err(write_err(parent))?;
                false
            }
            Err(source) => {
                return Err(ProvidersError::WriteOutput {
                    path: parent.to_owned(),
                    source,
                });
            }
        };

        // Next to the temp file, in `.tmp`: same filesystem, swept alike.
        // A directory this call made holds no previous file.
        let prev_path = self.temp.path.with_extension(PREV_SUFFIX);
        let linked = if parent_existed {
            std::fs::hard_link(final_path, &prev_path)
        } else {
            Err(io::ErrorKind::NotFound.into())
        };
        let prev = match linked {
            Ok(()) => Some(prev_path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            // Without a copy of the previous file a failed commit could not
            // be undone: refuse rather than overwrite it.
            Err(source) => {
                return Err(ProvidersError::WriteOutput {
                    path: prev_path,
                    source,
                });
            }
        };
        let installed = Installed {
            path: final_path.to_owned(),
            prev,
        };
        if let Err(source) = std::fs::rename(&self.temp.path, final_path) {
            // `installed` drops: its `.prev` link goes, the file stays.
            return Err(ProvidersError::WriteOutput {
                path: final_path.to_owned(),
                source,
            });
        }
        self.temp.keep();
        dirs.push(parent.to_owned());
        // A freshly created directory's own entry must be durable too, or a
        // crash could lose the directory and the file with it.
        if !parent_existed
            && let Some(grand) = parent.parent().filter(|p| !p.as_os_str().is_empty())
        {
            dirs.push(grand.to_owned());
        }
        Ok(installed)
    }
}

/// A file at its final path whose database commit is still pending: settle
/// it with [`commit`](Self::commit) or [`revert`](Self::revert).
///
/// Dropping it without either is the same as `commit` (our file stays, the
/// kept-aside previous file is removed). The owner may have committed and
/// then been cancelled before saying so, and reverting then would leave a
/// completed row without its file; if the commit did not happen, our complete
/// file at the final path is exactly what a crash after the rename leaves,
/// and the job is redone.
#[derive(Debug)]
pub struct Installed {
    path: PathBuf,
    /// The hard link to the file we replaced; `None` when there was none.
    prev: Option<PathBuf>,
}

impl Installed {
    /// The final path the output is now at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The commit did not happen: put the previous file back (or remove ours
    /// when there was none) and fsync the directory. Best effort: on error
    /// the kept-aside file stays in `.tmp` until the stale sweep.
    pub fn revert(mut self) -> io::Result<()> {
        match self.prev.take() {
            Some(prev) => std::fs::rename(&prev, &self.path)?,
            None => match std::fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            },
        }
        sync_dir(parent_dir(&self.path))
    }

    /// The commit happened: drop the kept-aside previous file.
    pub fn commit(self) {
        drop(self);
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(prev) = self.prev.take() {
            let _ = std::fs::remove_file(prev);
        }
    }
}

fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn header_map(spec: &DownloadSpec) -> Result<HeaderMap, ProvidersError> {
    let mut map = HeaderMap::new();
    for (name, value) in &spec.headers {
        let bad = || ProvidersError::BadHeader { name: name.clone() };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let mut value = HeaderValue::from_str(value).map_err(|_| bad())?;
        value.set_sensitive(true);
        map.append(name, value);
    }
    Ok(map)
}

impl ProvidersError {
    /// The local write that failed (staging a temp file, installing it at
    /// its final path), when this is one: the machine's fault (a full disk,
    /// a quota, a read-only or broken filesystem), never the output's or the
    /// provider's. Network and HTTP errors are never this.
    pub fn local_write_error(&self) -> Option<&io::Error> {
        match self {
            ProvidersError::WriteOutput { source, .. } => Some(source),
            _ => None,
        }
    }

    /// A local write refused for want of space (ENOSPC, or a quota).
    pub fn is_disk_full(&self) -> bool {
        self.local_write_error().is_some_and(is_no_space)
    }
}

/// ENOSPC or EDQUOT: the disk (or the user's share of it) is full.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

fn display_url_of(url: &str) -> String {
    url.split('?').next().unwrap_or_default().to_owned()
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> ProvidersError + use<> {
    let path = path.to_owned();
    move |source| ProvidersError::WriteOutput { path, source }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// fsync a directory, so the entries renamed or created in it survive a
/// crash (a no-op where the platform has no such thing).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// A temp file that deletes itself unless kept: on errors, and also when the
/// staging future or its [`Staged`] is dropped (shutdown, lease lost).
#[derive(Debug)]
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    fn new(path: PathBuf) -> Self {
        TempFile { path, keep: false }
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{nanos:016x}-{:08x}-{n:x}.{TEMP_SUFFIX}",
        std::process::id()
    )
}

/// Removes every temp file (`*.part`, `*.prev`) left in `<media_dir>/.tmp`
/// by a crash. Call it at startup, before downloads begin: it does not know
/// which temp files belong to live downloads, staged outputs or pending
/// installs. Returns how many it removed.
pub fn cleanup_stale_temp(media_dir: &Path) -> io::Result<usize> {
    cleanup_stale_temp_older_than(media_dir, Duration::ZERO)
}

/// Like [`cleanup_stale_temp`], sparing files changed within `min_age`, so it
/// is safe while downloads (this process's or another replica's sharing the
/// media directory) are running, provided `min_age` is longer than a live
/// temp file stays untouched: a stall window while downloading, and the time
/// from the end of [`Downloader::stage`] to the settling of its install.
///
/// A `*.prev` is a hard link to an older file, so it keeps that file's
/// modification time; its age is counted from its last status change (the
/// link's creation) where the platform records one.
pub fn cleanup_stale_temp_older_than(media_dir: &Path, min_age: Duration) -> io::Result<usize> {
    let entries = match std::fs::read_dir(media_dir.join(TEMP_DIR)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str());
        if ext != Some(TEMP_SUFFIX) && ext != Some(PREV_SUFFIX) {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !meta.is_file() {
            continue;
        }
        // A file changed after `now` was read (created while this sweep
        // lists the directory) is the youngest there is, not the oldest:
        // counted as infinitely old it was removed under a live download,
        // whose publish then failed (seen with replicas sharing a media
        // dir, a sweep every interval). Only a file whose time cannot be
        // read at all counts as old.
        let age = match last_change(&meta) {
            Some(m) => now.duration_since(m).unwrap_or(Duration::ZERO),
            None => Duration::MAX,
        };
        if age < min_age {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            // Someone else (another replica's sweep, a settled install) got
            // there first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// The later of the modification and (on unix) the status-change time.
fn last_change(meta: &std::fs::Metadata) -> Option<SystemTime> {
    let modified = meta.modified().ok();
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let changed = u64::try_from(meta.ctime()).ok().and_then(|secs| {
            UNIX_EPOCH.checked_add(Duration::new(secs, u32::try_from(meta.ctime_nsec()).ok()?))
        });
        modified.max(changed)
    }
    #[cfg(not(unix))]
    {
        modified
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(deadline_ms: u64, window_ms: u64, min: u64) -> DownloadLimits {
        DownloadLimits {
            max_bytes: u64::MAX,
            deadline: Duration::from_millis(deadline_ms),
            stall_window: Duration::from_millis(window_ms),
            stall_min_bytes: min,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stall_windows_are_checked_one_window_at_a_time() {
        let t0 = Instant::now();
        let mut w = Watch::start(&lim(60_000, 1000, 64), t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        w.received(100);
        assert!(w.check(at(500), "u").is_ok(), "window not over yet");
        assert!(w.check(at(1000), "u").is_ok(), "100 >= 64");
        // The next window runs from that check: 1000..2000 ms.
        w.received(63);
        assert!(w.check(at(1999), "u").is_ok());
        let e = w.check(at(2000), "u").unwrap_err();
        assert!(
            matches!(e, ProvidersError::DownloadStalled { bytes: 63, .. }),
            "{e:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_wait_ends_on_tokios_clock() {
        let t0 = Instant::now();
        let mut w = Watch::start(&lim(60_000, 1000, 1), t0);
        let e = w.run(std::future::pending::<()>(), "u").await.unwrap_err();
        assert!(matches!(
            e,
            ProvidersError::DownloadStalled { bytes: 0, .. }
        ));
        assert_eq!(Instant::now() - t0, Duration::from_secs(1));

        let t0 = Instant::now();
        let mut w = Watch::start(&lim(2500, 0, 0), t0);
        let e = w.run(std::future::pending::<()>(), "u").await.unwrap_err();
        assert!(matches!(e, ProvidersError::DownloadDeadline { .. }));
        assert_eq!(Instant::now() - t0, Duration::from_millis(2500));

        // Windows that pass keep polling the same future.
        let t0 = Instant::now();
        let mut w = Watch::start(&lim(60_000, 1000, 1), t0);
        w.received(1);
        let slept = w.run(tokio::time::sleep(Duration::from_millis(1500)), "u");
        assert!(slept.await.is_ok());
        assert_eq!(Instant::now() - t0, Duration::from_millis(1500));
    }

    #[test]
    fn durations_past_the_clock_mean_no_limit() {
        let w = Watch::start(&lim(0, 0, 0), Instant::now());
        assert!(w.deadline.is_some() && w.window_end.is_none());
        let huge = DownloadLimits {
            max_bytes: 1,
            deadline: Duration::MAX,
            stall_window: Duration::MAX,
            stall_min_bytes: 1,
        };
        let w = Watch::start(&huge, Instant::now());
        assert_eq!((w.deadline, w.window_end), (None, None));
        assert_eq!(w.next_wake(), None);
    }

    #[test]
    fn local_write_errors_are_told_from_the_transfers() {
        let write = |code| ProvidersError::WriteOutput {
            path: PathBuf::from("/m/.tmp/x.part"),
            source: io::Error::from_raw_os_error(code),
        };
        // ENOSPC and EDQUOT are a full disk; EROFS is another refusal.
        for (code, full) in [(28, true), (122, true), (30, false)] {
            let e = write(code);
            assert!(e.local_write_error().is_some(), "{e:?}");
            assert_eq!(e.is_disk_full(), full, "{e:?}");
        }
        let truncated = ProvidersError::TruncatedOutput {
            url: "https://cdn/x".into(),
            expected: 10,
            got: 5,
        };
        let status = ProvidersError::DownloadStatus {
            url: "https://cdn/x".into(),
            status: 507,
            retry_after: None,
        };
        for e in [truncated, status] {
            assert!(
                e.local_write_error().is_none() && !e.is_disk_full(),
                "{e:?}"
            );
        }
    }
}
