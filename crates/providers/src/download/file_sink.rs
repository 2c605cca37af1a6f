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
//! An output announced at [`DIRECT_MIN`] or more is written around the page
//! cache (`O_DIRECT`, Linux), in [`DIRECT_BATCH`] writes from an aligned
//! buffer: a buffered write of a GiB cost the kernel over a second of CPU
//! copying it into the cache (more than the sha256 of it), a direct one a
//! tenth of that, and its fsync then has almost nothing left to wait for.
//! Its batches queue to one writer thread ([`QUEUED_BUFFERS`] buffers take
//! turns), so a direct write that waits for the disk holds up the receive
//! only when every buffer is queued.
//! A filesystem that refuses `O_DIRECT`, a write it rejects as unaligned,
//! or a batch that is not a whole number of blocks (the interval's partial
//! write of a slow download, the last bytes) turns the file back to
//! buffered writes for the rest of it: direct I/O is only ever a speed-up.
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
/// video waits for its thumbnail: 32 jobs hold 24 MiB at most (a long
/// output, past [`DIRECT_MIN`], takes [`QUEUED_BUFFERS`] of
/// [`DIRECT_BATCH`] instead).
pub(super) const WRITE_BATCH: usize = 256 * 1024;
/// The longest gathered bytes wait for their write. Below the stale sweep's
/// slack (`media::TEMP_SLACK` in the daemon, 10 s), so a live download's
/// file never looks abandoned.
const WRITE_INTERVAL: Duration = Duration::from_secs(1);
/// Outputs announced at least this large are written with `O_DIRECT`:
/// long videos, not clips or thumbnails, which the app may read back at
/// once and which the page cache serves then.
const DIRECT_MIN: u64 = 16 * 1024 * 1024;
/// A direct write's size: four times [`WRITE_BATCH`], as the disk takes
/// larger direct writes faster (a GiB in 0.38 s against 0.69 s in 256 KiB
/// writes, `dd oflag=direct` here) and few downloads are this large at once.
const DIRECT_BATCH: usize = 1024 * 1024;
/// The alignment a direct write's address, length and offset keep: the
/// largest logical block size in common use, so it holds on any disk.
const DIRECT_ALIGN: usize = 4096;

/// A temp file that does not exist until its first write.
pub(super) struct FileSink {
    temp_dir: PathBuf,
    /// Named by `open`; `None` before that.
    temp: Option<TempFile>,
    file: FileState,
    buf: Batch,
    /// Whether `open` chose direct writes for this output.
    direct: bool,
    last_write: Instant,
    /// Bytes handed to writes so far: where the next one starts.
    written: u64,
}

enum FileState {
    /// Nothing on disk yet.
    Unopened,
    Idle(Out),
    /// A write of gathered bytes running on the blocking pool; it hands the
    /// file and the emptied buffer back.
    Writing(JoinHandle<io::Result<(Out, Batch)>>),
    /// A long output's writer thread, taking batches in order.
    Queued(Writer),
}

/// How many buffers a long output's writes take turns with: one filling,
/// the others queued or being written. One write in flight (two buffers)
/// left the receive waiting for it on a sixth of a GiB's batches, for
/// 0.1–0.2 s in all: a direct write waits for the disk, and on a busy
/// machine for a core to submit it. A long download holds 4 MiB.
const QUEUED_BUFFERS: usize = 4;

/// One blocking thread writing a long output's batches as they come, so a
/// slow write holds up the receive only once every queued buffer is taken.
#[derive(Debug)]
struct Writer {
    batches: std::sync::mpsc::Sender<Batch>,
    /// Buffers back from the thread, written and emptied.
    spares: tokio::sync::mpsc::UnboundedReceiver<Batch>,
    thread: JoinHandle<io::Result<Out>>,
    /// Buffers this writer's output has made so far, the filling one too.
    buffers: usize,
}

impl Writer {
    /// The thread, appending from `offset` on.
    fn start(mut out: Out, mut offset: u64) -> Writer {
        let (batches, queue) = std::sync::mpsc::channel::<Batch>();
        let (give_back, spares) = tokio::sync::mpsc::unbounded_channel();
        let thread = tokio::task::spawn_blocking(move || {
            // Ends when the sink stops sending; an error ends it early, and
            // the sink finds out at its next batch.
            for mut batch in queue {
                out.append(batch.data(), offset)?;
                offset += batch.len() as u64;
                batch.clear();
                // The sink may be gone: the buffer is then simply freed.
                let _ = give_back.send(batch);
            }
            Ok(out)
        });
        Writer {
            batches,
            spares,
            thread,
            buffers: 2,
        }
    }

    /// An empty buffer for the next batch: a new one while fewer than
    /// [`QUEUED_BUFFERS`] exist, else the next one the thread is done with.
    /// `None` when the thread stopped (on an error: see [`Writer::finish`]).
    async fn spare(&mut self) -> Option<Batch> {
        if self.buffers < QUEUED_BUFFERS {
            self.buffers += 1;
            return Some(Batch::new(DIRECT_BATCH, true));
        }
        self.spares.recv().await
    }

    /// Wait for every queued batch to be written: the file back, or the
    /// write error that stopped the thread.
    async fn finish(self, path: &Path) -> Result<Out, ProvidersError> {
        drop(self.batches);
        joined(path, self.thread.await)
    }
}

/// The open temp file, and whether its descriptor has `O_DIRECT` set.
#[derive(Debug)]
pub(super) struct Out {
    file: std::fs::File,
    direct: bool,
}

impl Out {
    /// A new temp file at `path` (see [`create`]), direct when asked and
    /// the filesystem takes it.
    fn create(dir: &Path, path: &Path, direct: bool) -> io::Result<Out> {
        let mut out = Out {
            file: create(dir, path)?,
            direct: false,
        };
        // Set after the open, not as an open flag: a filesystem without
        // direct I/O fails such an open only once it created the file.
        if direct {
            out.direct = set_direct(&out.file, true).is_ok();
        }
        Ok(out)
    }

    /// Blocking: append `data`, which starts at `offset` in the file. A
    /// direct descriptor turns buffered first when `data` is not aligned,
    /// and when the kernel rejects a direct write as such (`EINVAL`).
    fn append(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        if self.direct && !is_aligned(data) {
            self.leave_direct()?;
        }
        let mut done = 0;
        while done < data.len() {
            match self.file.write(&data[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EINVAL, as std names it.
                Err(e) if self.direct && e.kind() == io::ErrorKind::InvalidInput => {
                    self.leave_direct()?
                }
                Err(e) => return Err(e),
            }
        }
        if !self.direct {
            start_writeback(&self.file, offset, data.len());
        }
        Ok(())
    }

    fn leave_direct(&mut self) -> io::Result<()> {
        set_direct(&self.file, false)?;
        self.direct = false;
        Ok(())
    }
}

/// Gathered bytes. For a direct file they start at a [`DIRECT_ALIGN`]ed
/// address: the vector is allocated once with room for the padding in
/// front and never grows past its capacity (a batch is filled to its
/// size and no further), so the address holds.
#[derive(Debug)]
pub(super) struct Batch {
    v: Vec<u8>,
    pad: usize,
}

impl Batch {
    fn new(capacity: usize, aligned: bool) -> Self {
        if !aligned {
            return Batch {
                v: Vec::with_capacity(capacity),
                pad: 0,
            };
        }
        let mut v = Vec::<u8>::with_capacity(capacity + DIRECT_ALIGN);
        // Never more than `DIRECT_ALIGN - 1` for bytes; should it not be
        // computable, the write finds the data unaligned and goes buffered.
        let pad = v.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        v.resize(pad, 0);
        Batch { v, pad }
    }

    fn data(&self) -> &[u8] {
        &self.v[self.pad..]
    }

    fn len(&self) -> usize {
        self.v.len() - self.pad
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.v.extend_from_slice(bytes);
    }

    fn clear(&mut self) {
        self.v.truncate(self.pad);
    }
}

/// Whether a direct write can take `data` as it is: a whole number of
/// blocks from an aligned address (offsets stay aligned, as every write
/// before it was such a whole number).
fn is_aligned(data: &[u8]) -> bool {
    data.len().is_multiple_of(DIRECT_ALIGN) && data.as_ptr().align_offset(DIRECT_ALIGN) == 0
}

/// A received download whose last bytes (all of them, for a clip that fits
/// in [`WRITE_BATCH`]) are still in memory: [`Unsynced::sync`] writes them,
/// fsyncs and closes. Separate from the receiving so that one blocking call
/// can finish a job's video and thumbnail together.
#[derive(Debug)]
pub(super) struct Unsynced {
    /// Owned here, so a sync whose caller is gone still removes the file.
    temp: TempFile,
    file: Option<Out>,
    rest: Batch,
    /// Where `rest` starts in the file.
    offset: u64,
}

impl Unsynced {
    pub(super) fn path(&self) -> &Path {
        &self.temp.path
    }

    /// Blocking: create the file if nothing was written yet, write the
    /// rest, fsync. On error the guard removes the file.
    pub(super) fn sync(self) -> Result<TempFile, ProvidersError> {
        let Unsynced {
            temp,
            file,
            rest,
            offset,
        } = self;
        let done = (|| {
            let mut out = match file {
                Some(out) => out,
                // Named `<temp dir>/<name>` by `open`.
                None => Out::create(super::parent_dir(&temp.path), &temp.path, false)?,
            };
            out.append(rest.data(), offset)?;
            out.file.sync_all()
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
            buf: Batch::new(0, false),
            direct: false,
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
        let rest = std::mem::replace(&mut self.buf, Batch::new(0, false));
        Ok(self.temp.take().map(|temp| Unsynced {
            temp,
            file,
            rest,
            offset: self.written,
        }))
    }

    /// Wait for the write in flight, if any: the file when one is open, and
    /// the buffer that write emptied, for the next batch to fill.
    async fn settle(
        &mut self,
        path: &Path,
    ) -> Result<(Option<Out>, Option<Batch>), ProvidersError> {
        match std::mem::replace(&mut self.file, FileState::Unopened) {
            FileState::Unopened => Ok((None, None)),
            FileState::Idle(out) => Ok((Some(out), None)),
            FileState::Writing(task) => {
                let (out, mut spare) = joined(path, task.await)?;
                spare.clear();
                Ok((Some(out), Some(spare)))
            }
            FileState::Queued(writer) => Ok((Some(writer.finish(path).await?), None)),
        }
    }

    fn temp_path(&self) -> Result<PathBuf, ProvidersError> {
        self.temp
            .as_ref()
            .map(|temp| temp.path.clone())
            .ok_or_else(|| self.not_opened())
    }

    fn not_opened(&self) -> ProvidersError {
        ProvidersError::WriteOutput {
            path: self.temp_dir.clone(),
            source: io::Error::other("temp file written before it was opened"),
        }
    }

    /// Hand the gathered bytes to a blocking write. The first one (which
    /// creates the file) is waited for, so a dropped download never leaves
    /// a file created after its temp guard removed the name; later ones run
    /// while the next batch arrives.
    async fn write_gathered(&mut self, path: &Path) -> Result<(), ProvidersError> {
        match std::mem::replace(&mut self.file, FileState::Unopened) {
            FileState::Queued(writer) => return self.queue_gathered(writer, path).await,
            other => self.file = other,
        }
        let (file, spare) = self.settle(path).await?;
        // Two buffers take turns, so a long download allocates no more.
        let spare = spare.unwrap_or_else(|| Batch::new(self.batch(), self.direct));
        let data = std::mem::replace(&mut self.buf, spare);
        let offset = self.note_write(data.len());
        match file {
            None => {
                let (dir, target, direct) = (self.temp_dir.clone(), path.to_owned(), self.direct);
                let out = blocking(path, move || {
                    let mut out = Out::create(&dir, &target, direct)?;
                    out.append(data.data(), offset)?;
                    Ok(out)
                })
                .await?;
                self.file = FileState::Idle(out);
            }
            Some(out) if self.direct => {
                let writer = Writer::start(out, offset);
                // Just started: it is there to take the batch.
                let _ = writer.batches.send(data);
                self.file = FileState::Queued(writer);
            }
            Some(mut out) => {
                self.file = FileState::Writing(tokio::task::spawn_blocking(move || {
                    out.append(data.data(), offset)?;
                    Ok((out, data))
                }));
            }
        }
        Ok(())
    }

    /// Hand the gathered bytes to a long output's writer thread, once it
    /// has a buffer to give back (or may make one more). Its error, when
    /// it stopped on one, is the download's.
    async fn queue_gathered(
        &mut self,
        mut writer: Writer,
        path: &Path,
    ) -> Result<(), ProvidersError> {
        if let Some(spare) = writer.spare().await {
            let data = std::mem::replace(&mut self.buf, spare);
            self.note_write(data.len());
            if writer.batches.send(data).is_ok() {
                self.file = FileState::Queued(writer);
                return Ok(());
            }
        }
        writer.finish(path).await?;
        Err(write_err(path)(io::Error::other(
            "the writer thread stopped",
        )))
    }

    /// Bytes gathered before a write.
    fn batch(&self) -> usize {
        if self.direct {
            DIRECT_BATCH
        } else {
            WRITE_BATCH
        }
    }

    /// Count `len` bytes as handed to a write: where that write starts.
    fn note_write(&mut self, len: usize) -> u64 {
        self.last_write = Instant::now();
        let offset = self.written;
        self.written += len as u64;
        offset
    }
}

impl OutputSink for FileSink {
    async fn open(&mut self, announced: Option<u64>) -> Result<(), ProvidersError> {
        // Sized once: grown by doubling, a 64 KiB clip was copied three
        // times over on its way in (memmove was 3 % of a busy daemon).
        self.direct = cfg!(target_os = "linux") && announced.is_some_and(|n| n >= DIRECT_MIN);
        let first = announced.map_or(0, |n| n.min(self.batch() as u64) as usize);
        self.buf = Batch::new(first, self.direct);
        self.temp = Some(TempFile::new(self.temp_dir.join(temp_name())));
        self.last_write = Instant::now();
        Ok(())
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), ProvidersError> {
        if self.temp.is_none() {
            return Err(self.not_opened());
        }
        // Batches are filled to their size exactly, never past it: a direct
        // write's buffer must not grow (and move), and its length must
        // stay a whole number of blocks.
        let (batch, mut rest) = (self.batch(), &chunk[..]);
        loop {
            let n = batch.saturating_sub(self.buf.len()).min(rest.len());
            self.buf.extend(&rest[..n]);
            rest = &rest[n..];
            if self.buf.len() >= batch || self.last_write.elapsed() >= WRITE_INTERVAL {
                // The path is copied only when a write goes out, not per chunk.
                let path = self.temp_path()?;
                self.write_gathered(&path).await?;
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
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

/// Set or clear `O_DIRECT` on an open descriptor. Fails where the
/// filesystem has no direct I/O, which leaves the file buffered.
#[cfg(target_os = "linux")]
fn set_direct(f: &std::fs::File, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: `f` keeps the descriptor open for both calls, which read and
    // set its status flags and touch no memory of ours.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        if libc::fcntl(fd, libc::F_SETFL, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_: &std::fs::File, on: bool) -> io::Result<()> {
    if on {
        Err(io::ErrorKind::Unsupported.into())
    } else {
        Ok(())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    async fn write_chunks(sink: &mut FileSink, data: &[u8], chunk: usize) {
        for c in data.chunks(chunk) {
            sink.write(Bytes::copy_from_slice(c)).await.unwrap();
        }
    }

    /// Whether the open file's descriptor is direct, once any write in
    /// flight is done.
    async fn is_direct(sink: &mut FileSink) -> bool {
        let path = sink.temp_path().unwrap();
        let (out, _) = sink.settle(&path).await.unwrap();
        let out = out.expect("a file was written");
        let direct = out.direct;
        sink.file = FileState::Idle(out);
        direct
    }

    /// Whether this filesystem takes `O_DIRECT` at all (tmpfs did not
    /// before Linux 6.6): where it does not, the sink must stay buffered.
    fn takes_direct(dir: &Path) -> bool {
        let f = tempfile::tempfile_in(dir).unwrap();
        cfg!(target_os = "linux") && set_direct(&f, true).is_ok()
    }

    async fn finish(sink: FileSink) -> Vec<u8> {
        let temp = sink.into_unsynced().await.unwrap().unwrap().sync().unwrap();
        std::fs::read(&temp.path).unwrap()
    }

    #[tokio::test]
    async fn a_long_output_goes_direct_in_whole_batches_and_ends_with_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let want_direct = takes_direct(dir.path());
        let data = pattern(3 * DIRECT_BATCH + 1000);
        let mut sink = FileSink::new(dir.path().join(".tmp"));
        sink.open(Some(DIRECT_MIN + 1000)).await.unwrap();
        // Odd chunks: batches are cut to their size whatever arrives.
        write_chunks(&mut sink, &data, 100_003).await;
        assert_eq!(sink.written, 3 * DIRECT_BATCH as u64);
        assert_eq!(is_direct(&mut sink).await, want_direct);
        assert!(finish(sink).await == data);
    }

    #[tokio::test]
    async fn a_short_output_is_never_direct() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(2 * WRITE_BATCH + 5);
        let mut sink = FileSink::new(dir.path().join(".tmp"));
        sink.open(Some(DIRECT_MIN - 1)).await.unwrap();
        write_chunks(&mut sink, &data, 65_536).await;
        assert!(!is_direct(&mut sink).await);
        assert!(finish(sink).await == data);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_of_a_slow_download_turns_the_file_buffered_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let want_direct = takes_direct(dir.path());
        let data = pattern(DIRECT_BATCH + 5000 + 2 * DIRECT_BATCH + 7);
        let (first, rest) = data.split_at(DIRECT_BATCH + 5000);
        let mut sink = FileSink::new(dir.path().join(".tmp"));
        sink.open(Some(data.len() as u64 + DIRECT_MIN))
            .await
            .unwrap();
        write_chunks(&mut sink, first, 4096).await;
        assert_eq!(is_direct(&mut sink).await, want_direct);
        // The interval passes with 5000 bytes gathered: they go out as
        // they are, which no direct write takes.
        tokio::time::advance(WRITE_INTERVAL).await;
        write_chunks(&mut sink, &rest[..1], 1).await;
        assert_eq!(sink.written, DIRECT_BATCH as u64 + 5001);
        assert!(!is_direct(&mut sink).await);
        write_chunks(&mut sink, &rest[1..], 300_000).await;
        assert!(finish(sink).await == data);
    }

    #[tokio::test]
    async fn a_failed_queued_write_is_the_downloads_error() {
        let dir = tempfile::tempdir().unwrap();
        let read_only = dir.path().join("read-only");
        std::fs::write(&read_only, b"").unwrap();
        let mut sink = FileSink::new(dir.path().join(".tmp"));
        sink.open(Some(DIRECT_MIN)).await.unwrap();
        // A writer whose every write fails (the descriptor is not open for
        // writing), as a full or failing disk would fail them.
        let out = Out {
            file: std::fs::File::open(&read_only).unwrap(),
            direct: false,
        };
        sink.file = FileState::Queued(Writer::start(out, 0));
        let data = pattern(2 * QUEUED_BUFFERS * DIRECT_BATCH);
        let mut failed = None;
        for c in data.chunks(DIRECT_BATCH) {
            if let Err(e) = sink.write(Bytes::copy_from_slice(c)).await {
                failed = Some(e);
                break;
            }
        }
        let err = match failed {
            Some(e) => e,
            None => sink.into_unsynced().await.unwrap_err(),
        };
        assert!(err.local_write_error().is_some(), "{err}");
    }

    #[test]
    fn an_aligned_batch_stays_aligned_when_filled_to_its_size() {
        let mut b = Batch::new(DIRECT_BATCH, true);
        let before = b.data().as_ptr();
        assert_eq!(before.align_offset(DIRECT_ALIGN), 0);
        b.extend(&pattern(DIRECT_BATCH));
        assert_eq!(b.data().as_ptr(), before, "the buffer did not move");
        assert!(is_aligned(b.data()));
        b.clear();
        b.extend(&pattern(DIRECT_BATCH - 1));
        assert!(!is_aligned(b.data()), "not a whole number of blocks");
    }
}
