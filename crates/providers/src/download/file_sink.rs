//! [`Downloader::stage`](super::Downloader::stage)'s sink: a new temp file
//! under `<media>/.tmp/`, written in few blocking calls.
//!
//! Every `tokio::fs` call is a hand-off to the blocking pool and back (a
//! futex wake and two context switches). Written chunk by chunk, a 64 KiB
//! clip cost a dozen of them (directory, open, each chunk, flush, fsync),
//! and on a busy daemon those switches were a quarter of its CPU (see
//! BENCHMARKS.md, item 3). So bytes are gathered in memory up to
//! [`WRITE_BATCH`] and written by one blocking call; a clip that fits is
//! created, written, fsynced and closed by [`Unsynced::sync`] at the end,
//! which the daemon runs for a job's video and thumbnail in one call
//! (`download::sync_all`). A larger
//! one has one write in flight while the next batch arrives, as
//! `tokio::fs::File` did, so disk and network still overlap, and each
//! write starts the disk's writeback of its range (`sync_file_range`), so
//! the final fsync waits for the last batch, not the whole file.
//!
//! The file's modification time is what the stale-temp sweep reads, so a
//! slow download still writes at least every [`WRITE_INTERVAL`], however
//! little has arrived.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{OutputSink, TempFile, temp_name, write_err};
use crate::error::ProvidersError;

/// Bytes gathered before a write: two of these per download at most (one
/// being written, one filling), and one more per job while a received
/// video waits for its thumbnail: 32 jobs hold 24 MiB at most.
pub(super) const WRITE_BATCH: usize = 256 * 1024;
/// The longest gathered bytes wait for their write. Below the stale sweep's
/// slack (`media::TEMP_SLACK` in the daemon, 10 s), so a live download's
/// file never looks abandoned.
const WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// A temp file that does not exist until its first write.
pub(super) struct FileSink {
    temp_dir: PathBuf,
    /// Named by `open`; `None` before that.
    temp: Option<TempFile>,
    file: FileState,
    buf: Vec<u8>,
    last_write: Instant,
    /// Bytes handed to writes so far: where the next one starts.
    written: u64,
}

enum FileState {
    /// Nothing on disk yet.
    Unopened,
    Idle(std::fs::File),
    /// A write of gathered bytes running on the blocking pool; it hands the
    /// file and the emptied buffer back.
    Writing(JoinHandle<io::Result<(std::fs::File, Vec<u8>)>>),
}

/// A received download whose last bytes (all of them, for a clip that fits
/// in [`WRITE_BATCH`]) are still in memory: [`Unsynced::sync`] writes them,
/// fsyncs and closes. Separate from the receiving so that one blocking call
/// can finish a job's video and thumbnail together.
#[derive(Debug)]
pub(super) struct Unsynced {
    /// Owned here, so a sync whose caller is gone still removes the file.
    temp: TempFile,
    file: Option<std::fs::File>,
    rest: Vec<u8>,
}

impl Unsynced {
    pub(super) fn path(&self) -> &Path {
        &self.temp.path
    }

    /// Blocking: create the file if nothing was written yet, write the
    /// rest, fsync. On error the guard removes the file.
    pub(super) fn sync(self) -> Result<TempFile, ProvidersError> {
        let Unsynced { temp, file, rest } = self;
        let done = (|| {
            let mut f = match file {
                Some(f) => f,
                // Named `<temp dir>/<name>` by `open`.
                None => create(super::parent_dir(&temp.path), &temp.path)?,
            };
            f.write_all(&rest)?;
            f.sync_all()
        })();
        match done {
            Ok(()) => Ok(temp),
            Err(e) => Err(write_err(&temp.path)(e)),
        }
    }
}

impl FileSink {
    pub(super) fn new(temp_dir: PathBuf) -> Self {
        FileSink {
            temp_dir,
            temp: None,
            file: FileState::Unopened,
            buf: Vec::new(),
            last_write: Instant::now(),
            written: 0,
        }
    }

    /// Wait for the write in flight: what is left to write and fsync, with
    /// the temp file's guard. `None` when nothing was ever opened.
    pub(super) async fn into_unsynced(mut self) -> Result<Option<Unsynced>, ProvidersError> {
        let Some(path) = self.temp.as_ref().map(|t| t.path.clone()) else {
            return Ok(None);
        };
        let (file, _) = self.settle(&path).await?;
        Ok(self.temp.take().map(|temp| Unsynced {
            temp,
            file,
            rest: std::mem::take(&mut self.buf),
        }))
    }

    /// Wait for the write in flight, if any: the file when one is open, and
    /// the buffer that write emptied, for the next batch to fill.
    async fn settle(
        &mut self,
        path: &Path,
    ) -> Result<(Option<std::fs::File>, Vec<u8>), ProvidersError> {
        match std::mem::replace(&mut self.file, FileState::Unopened) {
            FileState::Unopened => Ok((None, Vec::new())),
            FileState::Idle(f) => Ok((Some(f), Vec::new())),
            FileState::Writing(task) => {
                let (f, mut spare) = joined(path, task.await)?;
                spare.clear();
                Ok((Some(f), spare))
            }
        }
    }

    /// Hand the gathered bytes to a blocking write. The first one (which
    /// creates the file) is waited for, so a dropped download never leaves
    /// a file created after its temp guard removed the name; later ones run
    /// while the next batch arrives.
    async fn write_gathered(&mut self, path: &Path) -> Result<(), ProvidersError> {
        let (file, spare) = self.settle(path).await?;
        // Two buffers take turns, so a long download allocates no more.
        let data = std::mem::replace(&mut self.buf, spare);
        self.last_write = Instant::now();
        let offset = self.written;
        self.written += data.len() as u64;
        match file {
            None => {
                let (dir, target) = (self.temp_dir.clone(), path.to_owned());
                let f = blocking(path, move || {
                    let mut f = create(&dir, &target)?;
                    f.write_all(&data)?;
                    start_writeback(&f, offset, data.len());
                    Ok(f)
                })
                .await?;
                self.file = FileState::Idle(f);
            }
            Some(mut f) => {
                self.file = FileState::Writing(tokio::task::spawn_blocking(move || {
                    f.write_all(&data)?;
                    start_writeback(&f, offset, data.len());
                    Ok((f, data))
                }));
            }
        }
        Ok(())
    }
}

impl OutputSink for FileSink {
    async fn open(&mut self, announced: Option<u64>) -> Result<(), ProvidersError> {
        // Sized once: grown by doubling, a 64 KiB clip was copied three
        // times over on its way in (memmove was 3 % of a busy daemon).
        let first = announced.map_or(0, |n| n.min(WRITE_BATCH as u64) as usize);
        self.buf.reserve_exact(first);
        self.temp = Some(TempFile::new(self.temp_dir.join(temp_name())));
        self.last_write = Instant::now();
        Ok(())
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), ProvidersError> {
        let Some(temp) = self.temp.as_ref() else {
            return Err(ProvidersError::WriteOutput {
                path: self.temp_dir.clone(),
                source: io::Error::other("temp file written before it was opened"),
            });
        };
        self.buf.extend_from_slice(&chunk);
        if self.buf.len() >= WRITE_BATCH || self.last_write.elapsed() >= WRITE_INTERVAL {
            // The path is copied only when a write goes out, not per chunk.
            let path = temp.path.clone();
            self.write_gathered(&path).await?;
        }
        Ok(())
    }
}

/// Start writing `len` bytes at `offset` to the disk, without waiting: a
/// long download's pages then go out while the rest arrives, and its final
/// fsync waits for the last batch only, not for the whole file (a 1 GiB
/// output's fsync took 1.2 s after the fact). Best effort: the fsync that
/// follows is what makes the file durable, so a failure here changes
/// nothing but timing.
#[cfg(target_os = "linux")]
fn start_writeback(f: &std::fs::File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: `f` keeps the descriptor open for the call, which only names
    // a byte range of that file and reads no memory of ours.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &std::fs::File, _: u64, _: usize) {}

/// A new temp file at `path`, creating `dir` only when it is missing (one
/// `open` per file otherwise, no `mkdir`).
fn create(dir: &Path, path: &Path) -> io::Result<std::fs::File> {
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            open()
        }
        other => other,
    }
}

/// `f` on the blocking pool, its error a write error at `path`.
async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, ProvidersError> {
    joined(path, tokio::task::spawn_blocking(f).await)
}

fn joined<T>(
    path: &Path,
    res: Result<io::Result<T>, tokio::task::JoinError>,
) -> Result<T, ProvidersError> {
    res.map_err(io::Error::other)
        .and_then(|r| r)
        .map_err(write_err(path))
}
