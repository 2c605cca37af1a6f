//! Server plumbing shared by the fakes: start and shutdown, deterministic
//! streamed content, in-flight counting, and small response helpers. Lives
//! under `fake_openai` so the crate's top-level module list stays as it is;
//! `fake_replicate` uses it too.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
/// The bytes the fakes serve for `seed` (`"{id}"` for an OpenAI video,
/// `"{id}#thumbnail"` for its thumbnail, `"{id}/{file}"` for Replicate).
pub fn fake_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    fill_fake_bytes(seed_of(seed), 0, &mut out);
    out
}

fn seed_of(seed: &str) -> u64 {
    // FNV-1a: stable across runs and platforms, unlike `DefaultHasher`.
    seed.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Fills `buf` with the stream's bytes starting at `offset`: each 8-byte
/// block is splitmix64 of the seed and the block index, so any range can be
/// produced without the ones before it.
fn fill_fake_bytes(seed: u64, offset: usize, buf: &mut [u8]) {
    // One mix per block, not per byte: the benches' fake serves 66 KiB a job
    // on the two cores the daemon under test runs on, and mixing per byte
    // cost it a quarter of a millisecond of CPU a job. Whole blocks are
    // fixed 8-byte stores; copied at a variable length, each was a call to
    // `memcpy`, and serving a GiB took most of a core.
    let skip = offset % 8;
    let head_len = if skip == 0 {
        0
    } else {
        (8 - skip).min(buf.len())
    };
    let (head, rest) = buf.split_at_mut(head_len);
    if !head.is_empty() {
        let block = block_bytes(seed, (offset / 8) as u64);
        head.copy_from_slice(&block[skip..skip + head.len()]);
    }
    let mut blocks = rest.chunks_exact_mut(8);
    let mut index = ((offset + head_len) / 8) as u64;
    for out in &mut blocks {
        out.copy_from_slice(&block_bytes(seed, index));
        index += 1;
    }
    let tail = blocks.into_remainder();
    if !tail.is_empty() {
        let n = tail.len();
        tail.copy_from_slice(&block_bytes(seed, index)[..n]);
    }
}

/// splitmix64 of the seed and a block index.
fn block_bytes(seed: u64, block: u64) -> [u8; 8] {
    let mut z = seed.wrapping_add(block.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z.to_le_bytes()
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock must not take every later
    // request down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Start, shutdown and shared counters of one fake server.
pub(crate) struct Server {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    outage: Arc<OutageSwitch>,
}

/// A provider-wide fault: while set, every request (API calls and output
/// files alike) gets this answer, whatever the job. What a provider that
/// is down, or an account that is refused or out of credit, looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    pub status: u16,
    /// JSON in the provider's documented error shape (or any text).
    pub body: String,
}

impl Outage {
    pub fn new(status: u16, body: impl Into<String>) -> Outage {
        Outage {
            status,
            body: body.into(),
        }
    }
}

#[derive(Default)]
struct OutageSwitch {
    now: Mutex<Option<Outage>>,
    hits: std::sync::atomic::AtomicU64,
    /// Added before every answer (a provider across a network), in µs.
    latency_us: std::sync::atomic::AtomicU64,
}

async fn outage_layer(
    axum::extract::State(sw): axum::extract::State<Arc<OutageSwitch>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let us = sw.latency_us.load(std::sync::atomic::Ordering::Relaxed);
    if us > 0 {
        // No lock is held while waiting: requests overlap.
        tokio::time::sleep(Duration::from_micros(us)).await;
    }
    let now = lock(&sw.now).clone();
    match now {
        Some(o) => {
            sw.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let status =
                StatusCode::from_u16(o.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                o.body,
            )
                .into_response()
        }
        None => next.run(req).await,
    }
}

impl Server {
    pub async fn start(router: Router, shutdown: watch::Sender<bool>) -> io::Result<Server> {
        Server::start_with(|_| router, shutdown).await
    }

    /// Binds first, then builds the router knowing the address (for fakes
    /// whose answers embed their own URLs).
    pub async fn start_with(
        router: impl FnOnce(SocketAddr) -> Router,
        shutdown: watch::Sender<bool>,
    ) -> io::Result<Server> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let outage = Arc::<OutageSwitch>::default();
        let router = router(addr).layer(axum::middleware::from_fn_with_state(
            Arc::clone(&outage),
            outage_layer,
        ));
        let mut rx = shutdown.subscribe();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await;
        });
        Ok(Server {
            addr,
            shutdown,
            task: Some(task),
            outage,
        })
    }

    /// Answer every request with `outage` from now on (`None`: serve again).
    pub fn set_outage(&self, outage: Option<Outage>) {
        *lock(&self.outage.now) = outage;
    }

    /// Wait `d` before answering each request from now on.
    pub fn set_latency(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.outage
            .latency_us
            .store(us, std::sync::atomic::Ordering::Relaxed);
    }

    /// Requests answered with an outage so far.
    pub fn outage_hits(&self) -> u64 {
        self.outage.hits.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Stops accepting and ends hangs and slow bodies; connections close
        // as their responses end.
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Sleeps, or returns early (false) when the server shuts down.
pub(crate) async fn sleep_or_shutdown(d: Duration, shutdown: &watch::Receiver<bool>) -> bool {
    let mut rx = shutdown.clone();
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        _ = rx.wait_for(|stop| *stop) => false,
    }
}

/// Counts requests in flight for a key, and remembers the maximum.
#[derive(Default)]
pub(crate) struct InFlight {
    counts: Mutex<HashMap<String, (usize, usize)>>,
}

impl InFlight {
    pub fn enter(self: &Arc<Self>, key: &str) -> InFlightGuard {
        let mut counts = lock(&self.counts);
        let entry = counts.entry(key.to_owned()).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(entry.0);
        InFlightGuard {
            owner: Arc::clone(self),
            key: key.to_owned(),
        }
    }

    pub fn max(&self, key: &str) -> usize {
        lock(&self.counts).get(key).map_or(0, |c| c.1)
    }
}

pub(crate) struct InFlightGuard {
    owner: Arc<InFlight>,
    key: String,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Some(c) = lock(&self.owner.counts).get_mut(&self.key) {
            c.0 = c.0.saturating_sub(1);
        }
    }
}

/// How a fake streams content.
pub(crate) struct ContentBody {
    pub seed: String,
    pub len: usize,
    /// Sleep before every chunk but the first.
    pub chunk_delay: Option<Duration>,
    /// Chunk size; `None` is [`CHUNK`]. At least 1.
    pub chunk_bytes: Option<usize>,
    pub chunked: bool,
    pub content_type: &'static str,
    /// End the body after this many bytes while `Content-Length` still
    /// announces `len`: a connection cut mid-transfer.
    pub truncate_at: Option<usize>,
}

/// The default chunk size of streamed content.
const CHUNK: usize = 16 * 1024;
/// The buffer a stream's chunks are cut from.
const POOL: usize = 256 * 1024;

impl ContentBody {
    /// The response; `guard` lives until the body is fully sent or dropped,
    /// so in-flight counts cover the transfer, not just the handler. The
    /// stream's state holds no lock: a sleeping transfer blocks nobody.
    pub fn into_response(self, guard: InFlightGuard, shutdown: watch::Receiver<bool>) -> Response {
        let seed = seed_of(&self.seed);
        let (announced, delay) = (self.len, self.chunk_delay);
        let len = self.truncate_at.map_or(announced, |t| t.min(announced));
        let chunk = self.chunk_bytes.unwrap_or(CHUNK).max(1);
        // Chunks are cut from one buffer, which `resize` (reserving) takes
        // back once the server has sent and dropped them: a fresh allocation per
        // chunk had the fake faulting in new pages for most of a GiB.
        let pool = BytesMut::with_capacity(POOL.max(chunk));
        let stream = futures_util::stream::unfold(
            (0usize, guard, shutdown, pool),
            move |(offset, guard, shutdown, mut pool)| async move {
                if offset >= len {
                    return None;
                }
                if offset > 0
                    && let Some(d) = delay
                    && !sleep_or_shutdown(d, &shutdown).await
                {
                    return Some((
                        Err(io::Error::other("fake server shutting down")),
                        (len, guard, shutdown, pool),
                    ));
                }
                let n = chunk.min(len - offset);
                pool.resize(n, 0);
                fill_fake_bytes(seed, offset, &mut pool[..n]);
                let bytes = pool.split().freeze();
                Some((
                    Ok::<_, io::Error>(bytes),
                    (offset + n, guard, shutdown, pool),
                ))
            },
        );
        let mut resp = Response::new(Body::from_stream(stream));
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        if !self.chunked {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(announced as u64));
        }
        resp
    }
}

pub(crate) fn json_response(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body.clone())).into_response()
}

pub(crate) fn bearer_ok(headers: &HeaderMap, key: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| given == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_bytes_are_deterministic_and_seekable() {
        let all = fake_bytes("video_1", 100);
        assert_eq!(all, fake_bytes("video_1", 100));
        assert_ne!(all, fake_bytes("video_2", 100));
        let mut tail = vec![0; 37];
        fill_fake_bytes(seed_of("video_1"), 63, &mut tail);
        assert_eq!(&all[63..], &tail[..]);
    }

    #[test]
    fn the_block_fill_gives_the_per_byte_definitions_bytes_at_any_offset() {
        // The definition as it was first written, one mix per byte: the block
        // fill must not change a byte that tests compare against.
        fn per_byte(seed: u64, offset: usize, buf: &mut [u8]) {
            for (i, b) in buf.iter_mut().enumerate() {
                let pos = (offset + i) as u64;
                let mut z = seed.wrapping_add((pos / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                *b = z.to_le_bytes()[(pos % 8) as usize];
            }
        }
        let seed = seed_of("video_1");
        for offset in 0..17 {
            for len in 0..30 {
                let (mut got, mut want) = (vec![0xAA; len], vec![0x55; len]);
                fill_fake_bytes(seed, offset, &mut got);
                per_byte(seed, offset, &mut want);
                assert_eq!(got, want, "offset {offset}, len {len}");
            }
        }
    }
}
