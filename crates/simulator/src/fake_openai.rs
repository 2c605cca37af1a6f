//! A fake OpenAI Videos API on 127.0.0.1, driven by per-video scripts.
//!
//! It answers `GET /v1/videos/{id}`, `GET /v1/videos/{id}/content[?variant=]`
//! and `POST /v1/videos` (create; counted per `Idempotency-Key`, else per
//! prompt, with the create control of [`crate::fake_common`]) with the real
//! API's JSON and error shapes, checks the bearer key, and counts
//! everything, so tests (and `clawcut-worker demo`) exercise the real adapter
//! over real HTTP. Each poll of a video consumes one [`Step`] of its
//! [`Script`]; the last step repeats. Content is only served once a poll has
//! answered `completed`, like the real API.
//!
//! Served bytes are deterministic ([`fake_bytes`]), so a test can compute the
//! expected sha256 without downloading: see [`FakeOpenAi::content`].
//!
//! The server plumbing shared with [`crate::fake_replicate`] lives in the
//! private `plumbing` submodule.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::watch;

mod create;
pub(crate) mod plumbing;

use crate::fake_common::{Creates, create_control};
use create::create;

pub use plumbing::fake_bytes;
use plumbing::{
    ContentBody, InFlight, Server, bearer_ok, json_response, lock, sleep_or_shutdown, unix_now,
};

/// What one poll of a video answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Queued,
    /// `in_progress` with this progress (0–100).
    InProgress(u8),
    Completed,
    Failed {
        code: String,
        message: String,
    },
    /// An HTTP error with OpenAI's error JSON, optionally with `Retry-After`.
    HttpError {
        status: u16,
        retry_after: Option<u64>,
    },
    /// 200 with a body that is not JSON.
    Malformed,
    /// Wait this long before answering `in_progress` (for timeouts and
    /// in-flight caps).
    Hang(Duration),
    /// `in_progress` with the `openai-poll-after-ms` header.
    PollAfterMs(u64),
    /// Exactly this status and body (e.g. an unknown `status` value).
    Raw {
        status: u16,
        body: String,
    },
}

/// How one video behaves over its polls, and what its content looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// One per poll; the last repeats. Empty means `Completed`.
    pub steps: Vec<Step>,
    pub video_bytes: usize,
    pub thumbnail_bytes: usize,
    /// Answer content requests (both variants) with this status and
    /// OpenAI's error JSON instead (404: content gone).
    pub content_status: Option<u16>,
    /// Answer `?variant=thumbnail` with this status and OpenAI's error JSON
    /// (403: refused, 500: failing) while the video itself is served
    /// normally. Wins over `content_status` for the thumbnail.
    pub thumbnail_status: Option<u16>,
    /// `expires_at` in the video JSON (unix seconds), `null` when `None`.
    pub expires_at: Option<i64>,
    /// Sleep between chunks of content (slow downloads); the first chunk
    /// is sent at once. Only content is slowed: polls answer at once, and
    /// no lock is held while sleeping, so other jobs are served meanwhile.
    pub chunk_delay: Option<Duration>,
    /// The size of those chunks; `None` is 16 KiB. With `chunk_delay`, a
    /// trickle: `Some(1)` and 3 s is one byte every 3 seconds.
    pub chunk_bytes: Option<usize>,
    /// Send content without `Content-Length` (chunked transfer).
    pub chunked: bool,
    /// Answer content requests with `302 Location: <this>`; `{id}` and
    /// `{variant}` are substituted.
    pub redirect_content_to: Option<String>,
    /// The first this many video downloads stop halfway while their
    /// `Content-Length` announces the whole file (a cut connection).
    pub truncated_downloads: usize,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            steps: vec![Step::Completed],
            video_bytes: 64 * 1024,
            thumbnail_bytes: 2 * 1024,
            content_status: None,
            thumbnail_status: None,
            expires_at: None,
            chunk_delay: None,
            chunk_bytes: None,
            chunked: false,
            redirect_content_to: None,
            truncated_downloads: 0,
        }
    }
}

impl Script {
    pub fn steps(steps: Vec<Step>) -> Self {
        Script {
            steps,
            ..Script::default()
        }
    }

    /// `queued`, then `n_polls - 1` polls in progress, then `completed`:
    /// the poll number `n_polls + 1` is the first to complete.
    pub fn completes_after(n_polls: usize) -> Self {
        Script::steps(running_steps(n_polls).chain([Step::Completed]).collect())
    }

    /// Like [`Script::completes_after`], but ends `failed` with `message`.
    pub fn fails_after(n_polls: usize, message: &str) -> Self {
        let failed = Step::Failed {
            code: "video_generation_failed".into(),
            message: message.into(),
        };
        Script::steps(running_steps(n_polls).chain([failed]).collect())
    }

    /// `n_errors` answers of 500, then [`Script::completes_after`]`(then)`.
    pub fn storm_then_complete(n_errors: usize, then: usize) -> Self {
        let storm = std::iter::repeat_n(
            Step::HttpError {
                status: 500,
                retry_after: None,
            },
            n_errors,
        );
        Script::steps(
            storm
                .chain(running_steps(then))
                .chain([Step::Completed])
                .collect(),
        )
    }

    /// Completed, but its outputs expired an hour ago.
    pub fn expired() -> Self {
        Script {
            expires_at: Some(unix_now() - 3600),
            ..Script::default()
        }
    }

    /// Completed, but the content endpoint answers 404.
    pub fn content_gone() -> Self {
        Script {
            content_status: Some(404),
            ..Script::default()
        }
    }

    pub fn with_video_bytes(mut self, n: usize) -> Self {
        self.video_bytes = n;
        self
    }

    pub fn with_thumbnail_bytes(mut self, n: usize) -> Self {
        self.thumbnail_bytes = n;
        self
    }

    pub fn with_chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = Some(delay);
        self
    }

    /// Content in chunks of `n` bytes (at least 1) instead of 16 KiB; see
    /// [`Script::chunk_bytes`].
    pub fn with_chunk_bytes(mut self, n: usize) -> Self {
        self.chunk_bytes = Some(n);
        self
    }

    /// Send `n` bytes every `delay`: [`Script::with_chunk_bytes`] and
    /// [`Script::with_chunk_delay`] together.
    pub fn trickle(self, n: usize, delay: Duration) -> Self {
        self.with_chunk_bytes(n).with_chunk_delay(delay)
    }

    pub fn with_expires_at(mut self, unix_secs: i64) -> Self {
        self.expires_at = Some(unix_secs);
        self
    }

    pub fn with_content_status(mut self, status: u16) -> Self {
        self.content_status = Some(status);
        self
    }

    pub fn with_thumbnail_status(mut self, status: u16) -> Self {
        self.thumbnail_status = Some(status);
        self
    }

    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    pub fn with_redirect_content_to(mut self, url: impl Into<String>) -> Self {
        self.redirect_content_to = Some(url.into());
        self
    }

    /// See [`Script::truncated_downloads`].
    pub fn with_truncated_downloads(mut self, n: usize) -> Self {
        self.truncated_downloads = n;
        self
    }

    fn step(&self, poll_index: usize) -> Step {
        self.steps
            .get(poll_index)
            .or(self.steps.last())
            .cloned()
            .unwrap_or(Step::Completed)
    }
}

fn running_steps(n_polls: usize) -> impl Iterator<Item = Step> {
    (0..n_polls).map(move |i| {
        if i == 0 {
            Step::Queued
        } else {
            Step::InProgress(u8::try_from(i * 100 / n_polls).unwrap_or(99))
        }
    })
}

/// The fake server. Dropping it shuts it down.
pub struct FakeOpenAi {
    server: Server,
    state: Arc<FakeState>,
}

struct FakeState {
    api_key: String,
    shutdown: watch::Receiver<bool>,
    total_requests: AtomicU64,
    polls_in_flight: Arc<InFlight>,
    content_in_flight: Arc<InFlight>,
    creates: Creates,
    jobs: Mutex<Jobs>,
}

#[derive(Default)]
struct Jobs {
    scripts: HashMap<String, Script>,
    default: Option<Script>,
    polls: HashMap<String, usize>,
    completed: HashSet<String>,
    downloads: HashMap<(String, String), usize>,
    next_id: u64,
}

impl Jobs {
    fn script(&self, id: &str) -> Option<Script> {
        self.scripts.get(id).or(self.default.as_ref()).cloned()
    }
}

/// Key under which all polls are counted together.
const ALL: &str = "*";

crate::fake_common::outage_accessors!(FakeOpenAi);

impl FakeOpenAi {
    /// Starts on 127.0.0.1 with a free port.
    ///
    /// # Panics
    /// If no loopback port can be bound; use [`FakeOpenAi::try_start`] to
    /// handle that.
    pub async fn start(api_key: &str) -> FakeOpenAi {
        match FakeOpenAi::try_start(api_key).await {
            Ok(fake) => fake,
            Err(e) => panic!("start fake openai server: {e}"),
        }
    }

    pub async fn try_start(api_key: &str) -> io::Result<FakeOpenAi> {
        let (tx, rx) = watch::channel(false);
        let state = Arc::new(FakeState {
            api_key: api_key.to_owned(),
            shutdown: rx,
            total_requests: AtomicU64::new(0),
            polls_in_flight: Arc::default(),
            content_in_flight: Arc::default(),
            creates: Creates::default(),
            jobs: Mutex::default(),
        });
        let router = Router::new()
            .route("/v1/videos", post(create))
            .route("/v1/videos/{id}", get(retrieve))
            .route("/v1/videos/{id}/content", get(content))
            .fallback(fallback)
            .with_state(Arc::clone(&state));
        let server = Server::start(router, tx).await?;
        Ok(FakeOpenAi { server, state })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub fn script(&self, video_id: &str, script: Script) {
        lock(&self.state.jobs)
            .scripts
            .insert(video_id.to_owned(), script);
    }

    /// The script of every video without its own; without one, unknown ids
    /// answer 404.
    pub fn set_default_script(&self, script: Script) {
        lock(&self.state.jobs).default = Some(script);
    }

    /// Authenticated polls of `video_id` so far.
    pub fn polls(&self, video_id: &str) -> usize {
        lock(&self.state.jobs)
            .polls
            .get(video_id)
            .copied()
            .unwrap_or(0)
    }

    /// Content requests for `variant` (`video` or `thumbnail`) that were
    /// answered with content.
    pub fn downloads(&self, video_id: &str, variant: &str) -> usize {
        lock(&self.state.jobs)
            .downloads
            .get(&(video_id.to_owned(), variant.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// The most content transfers for `video_id` (any variant) at once.
    pub fn max_concurrent_downloads(&self, video_id: &str) -> usize {
        self.state.content_in_flight.max(video_id)
    }

    /// The most polls (of any video) in flight at once.
    pub fn max_concurrent_polls(&self) -> usize {
        self.state.polls_in_flight.max(ALL)
    }

    /// Every request received, including rejected ones.
    pub fn total_requests(&self) -> u64 {
        self.state.total_requests.load(Ordering::SeqCst)
    }

    /// The video bytes served for `video_id` under its current script.
    pub fn content(&self, video_id: &str) -> Vec<u8> {
        let len = lock(&self.state.jobs)
            .script(video_id)
            .map_or(0, |s| s.video_bytes);
        fake_bytes(video_id, len)
    }

    /// The thumbnail bytes served for `video_id` under its current script.
    pub fn thumbnail(&self, video_id: &str) -> Vec<u8> {
        let len = lock(&self.state.jobs)
            .script(video_id)
            .map_or(0, |s| s.thumbnail_bytes);
        fake_bytes(&format!("{video_id}#thumbnail"), len)
    }

    /// Stops the server and waits (briefly) for it to finish.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

create_control!(FakeOpenAi, state.creates);

fn openai_error(status: u16, message: &str, code: Option<&str>) -> Response {
    let kind = if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

/// A scripted HTTP error in OpenAI's shape. OpenAI never answers 402: a
/// script's 402 stands for "out of quota" and renders OpenAI's own way,
/// 429 with `insufficient_quota` (platform.openai.com/docs/guides/error-codes).
fn status_error(status: u16, message: &str) -> Response {
    if status == 402 {
        return json_response(
            429,
            &json!({"error": {
                "message": "You exceeded your current quota, please check your plan and billing details.",
                "type": "insufficient_quota", "param": null, "code": "insufficient_quota",
            }}),
        );
    }
    openai_error(status, message, None)
}

fn unauthorized() -> Response {
    openai_error(
        401,
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
        Some("invalid_api_key"),
    )
}

fn not_found(id: &str) -> Response {
    openai_error(404, &format!("Video with id '{id}' not found."), None)
}

fn video_json(id: &str, status: &str, progress: u8, script: &Script, error: Value) -> Value {
    let now = unix_now();
    json!({
        "id": id,
        "object": "video",
        "model": "sora-2",
        "status": status,
        "progress": progress,
        "created_at": now - 60,
        "completed_at": if status == "completed" { json!(now) } else { Value::Null },
        "expires_at": script.expires_at,
        "prompt": "a fake video",
        "size": "1280x720",
        "seconds": "8",
        "quality": "standard",
        "remixed_from_video_id": null,
        "error": error,
    })
}

async fn retrieve(
    State(state): State<Arc<FakeState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    state.total_requests.fetch_add(1, Ordering::SeqCst);
    if !bearer_ok(&headers, &state.api_key) {
        return unauthorized();
    }
    let _in_flight = state.polls_in_flight.enter(ALL);
    let (script, step) = {
        let mut jobs = lock(&state.jobs);
        let Some(script) = jobs.script(&id) else {
            return not_found(&id);
        };
        let polls = jobs.polls.entry(id.clone()).or_default();
        let step = script.step(*polls);
        *polls += 1;
        if step == Step::Completed {
            jobs.completed.insert(id.clone());
        }
        (script, step)
    };
    let running = |progress| {
        axum::Json(video_json(
            &id,
            "in_progress",
            progress,
            &script,
            Value::Null,
        ))
    };
    match step {
        Step::Queued => {
            axum::Json(video_json(&id, "queued", 0, &script, Value::Null)).into_response()
        }
        Step::InProgress(p) => running(p.min(100)).into_response(),
        Step::PollAfterMs(ms) => {
            let mut resp = running(50).into_response();
            resp.headers_mut()
                .insert("openai-poll-after-ms", HeaderValue::from(ms));
            resp
        }
        Step::Completed => {
            axum::Json(video_json(&id, "completed", 100, &script, Value::Null)).into_response()
        }
        Step::Failed { code, message } => axum::Json(video_json(
            &id,
            "failed",
            0,
            &script,
            json!({"code": code, "message": message}),
        ))
        .into_response(),
        Step::HttpError {
            status,
            retry_after,
        } => {
            let message = match status {
                429 => "Rate limit reached for requests",
                500..=599 => "The server had an error while processing your request.",
                _ => "Request failed",
            };
            let mut resp = status_error(status, message);
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
        Step::Malformed => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"id\": \"oops\", \"status\": ",
        )
            .into_response(),
        Step::Hang(d) => {
            sleep_or_shutdown(d, &state.shutdown).await;
            running(50).into_response()
        }
        Step::Raw { status, body } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
    }
}

async fn content(
    State(state): State<Arc<FakeState>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    state.total_requests.fetch_add(1, Ordering::SeqCst);
    if !bearer_ok(&headers, &state.api_key) {
        return unauthorized();
    }
    let variant = query.get("variant").map_or("video", String::as_str);
    let script = {
        let jobs = lock(&state.jobs);
        let Some(script) = jobs.script(&id) else {
            return not_found(&id);
        };
        if !jobs.completed.contains(&id) {
            return openai_error(404, &format!("Video with id '{id}' is not ready."), None);
        }
        script
    };
    let (seed, len, content_type) = match variant {
        "video" => (id.clone(), script.video_bytes, "video/mp4"),
        "thumbnail" => (
            format!("{id}#thumbnail"),
            script.thumbnail_bytes,
            "image/webp",
        ),
        other => {
            return openai_error(400, &format!("Invalid variant '{other}'."), None);
        }
    };
    if variant == "thumbnail"
        && let Some(status) = script.thumbnail_status
    {
        let message = match status {
            403 => "You are not allowed to access the thumbnail of this video.",
            404 => "The thumbnail for this video is not available.",
            500..=599 => "The server had an error while processing your request.",
            _ => "Request failed",
        };
        return openai_error(status, message, None);
    }
    if let Some(status) = script.content_status {
        return openai_error(
            status,
            "The content for this video is no longer available.",
            None,
        );
    }
    if let Some(target) = &script.redirect_content_to {
        let location = target.replace("{id}", &id).replace("{variant}", variant);
        let mut resp = StatusCode::FOUND.into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return resp;
    }
    let served_before = {
        let mut jobs = lock(&state.jobs);
        let n = jobs
            .downloads
            .entry((id.clone(), variant.to_owned()))
            .or_default();
        *n += 1;
        *n - 1
    };
    let truncate_at =
        (variant == "video" && served_before < script.truncated_downloads).then_some(len / 2);
    let guard = state.content_in_flight.enter(&id);
    ContentBody {
        seed,
        len,
        chunk_delay: script.chunk_delay,
        chunk_bytes: script.chunk_bytes,
        chunked: script.chunked,
        content_type,
        truncate_at,
    }
    .into_response(guard, state.shutdown.clone())
}

async fn fallback(State(state): State<Arc<FakeState>>) -> Response {
    state.total_requests.fetch_add(1, Ordering::SeqCst);
    openai_error(404, "Invalid URL.", None)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn scripts_repeat_their_last_step() {
        let s = Script::completes_after(2);
        assert_eq!(s.step(0), Step::Queued);
        assert_eq!(s.step(1), Step::InProgress(50));
        assert_eq!(s.step(2), Step::Completed);
        assert_eq!(s.step(9), Step::Completed);
        assert_eq!(Script::steps(vec![]).step(0), Step::Completed);
    }

    const KEY: &str = "sk-test";

    /// The fake and one HTTP client for it (building a client, with its TLS
    /// roots, is slow in debug builds: one per test, not one per request).
    struct Api {
        fake: FakeOpenAi,
        http: reqwest::Client,
    }

    impl Api {
        async fn start() -> Arc<Api> {
            Arc::new(Api {
                fake: FakeOpenAi::start(KEY).await,
                http: reqwest::Client::new(),
            })
        }

        async fn get(&self, path: &str) -> reqwest::Response {
            self.http
                .get(format!("{}{path}", self.fake.base_url()))
                .bearer_auth(KEY)
                .send()
                .await
                .expect("request the fake")
        }

        /// Polls `id` once, expecting `completed` (after which its content
        /// is served).
        async fn complete(&self, id: &str) {
            let poll = self.get(&format!("/v1/videos/{id}")).await;
            assert_eq!(poll.status(), 200);
            let video: Value = poll.json().await.expect("video JSON");
            assert_eq!(video["status"], "completed");
        }

        async fn download(&self, id: &str, variant: &str) -> (u16, Vec<u8>) {
            let resp = self
                .get(&format!("/v1/videos/{id}/content?variant={variant}"))
                .await;
            let status = resp.status().as_u16();
            (status, resp.bytes().await.expect("content").to_vec())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn latency_delays_every_answer_without_serialising_them() {
        let api = Api::start().await;
        api.fake.set_default_script(Script::completes_after(0));
        let latency = Duration::from_millis(300);
        api.fake.set_latency(latency);
        let t = Instant::now();
        let polls: Vec<_> = (0..4)
            .map(|i| {
                let api = Arc::clone(&api);
                tokio::spawn(async move { api.get(&format!("/v1/videos/lat_{i}")).await.status() })
            })
            .collect();
        for p in polls {
            assert_eq!(p.await.unwrap(), 200);
        }
        let took = t.elapsed();
        // Each answer waited; four one after another would take 4 × 300 ms.
        assert!(took >= latency && took < 3 * latency, "took {took:?}");
        api.fake.set_latency(Duration::ZERO);
        let t = Instant::now();
        api.get("/v1/videos/lat_0").await;
        assert!(t.elapsed() < latency, "latency off again");
    }

    #[tokio::test]
    async fn thumbnail_status_refuses_only_the_thumbnail() {
        let api = Api::start().await;
        for (id, status, kind) in [
            ("video_refused", 403, "invalid_request_error"),
            ("video_failing", 500, "server_error"),
        ] {
            api.fake
                .script(id, Script::default().with_thumbnail_status(status));
            api.complete(id).await;

            assert_eq!(api.download(id, "video").await, (200, api.fake.content(id)));

            let (got, body) = api.download(id, "thumbnail").await;
            assert_eq!(got, status);
            let err: Value = serde_json::from_slice(&body).expect("OpenAI's error JSON");
            assert_eq!(err["error"]["type"], kind, "{err}");
            assert!(
                err["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );

            assert_eq!(api.fake.downloads(id, "video"), 1);
            assert_eq!(api.fake.downloads(id, "thumbnail"), 0);
        }

        // Without it, the thumbnail is served as before.
        api.fake.script("video_plain", Script::default());
        api.complete("video_plain").await;
        assert_eq!(
            api.download("video_plain", "thumbnail").await,
            (200, api.fake.thumbnail("video_plain"))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trickling_download_holds_up_nobody() {
        let delay = Duration::from_secs(1);
        let api = Api::start().await;
        api.fake
            .set_default_script(Script::default().with_video_bytes(100 * 1024));
        api.fake.script(
            "video_slow",
            Script::default().with_video_bytes(4).trickle(1, delay),
        );
        api.complete("video_slow").await;

        let started = Instant::now();
        let mut slow = api.get("/v1/videos/video_slow/content").await;
        assert_eq!(slow.status(), 200);
        let first = slow.chunk().await.expect("first byte").expect("a chunk");
        assert_eq!(first.len(), 1, "the first chunk comes at once, alone");
        let trickle = tokio::spawn(async move {
            let mut chunks = vec![first];
            while let Some(c) = slow.chunk().await.expect("the rest of the trickle") {
                chunks.push(c);
            }
            chunks
        });

        // Meanwhile 40 other jobs are polled and downloaded in full, and the
        // trickling video itself is polled again: none waits for the trickle.
        let others = (0..40).map(|i| {
            let api = Arc::clone(&api);
            async move {
                let id = format!("video_other_{i}");
                api.complete(&id).await;
                assert_eq!(
                    api.download(&id, "video").await,
                    (200, api.fake.content(&id))
                );
            }
        });
        futures_util::future::join_all(others).await;
        api.complete("video_slow").await;
        // (Were a lock held across the trickle's sleeps, they would have
        // finished after it: it takes at least three seconds.)
        assert!(
            !trickle.is_finished(),
            "the others took {:?}",
            started.elapsed()
        );
        assert_eq!(api.fake.polls("video_slow"), 2);

        let chunks = trickle.await.expect("trickle task");
        let took = started.elapsed();
        assert!(took >= 3 * delay, "3 delays between 4 bytes, took {took:?}");
        assert!(chunks.iter().all(|c| c.len() == 1), "{chunks:?}");
        assert_eq!(chunks.concat(), api.fake.content("video_slow"));
    }

    #[tokio::test]
    async fn content_comes_in_16_kib_chunks_by_default() {
        let delay = Duration::from_millis(150);
        let api = Api::start().await;
        api.fake.script(
            "video_1",
            Script::default()
                .with_video_bytes(40 * 1024)
                .with_chunk_delay(delay),
        );
        api.complete("video_1").await;
        let started = Instant::now();
        let got = api.download("video_1", "video").await;
        // 16 + 16 + 8 KiB: two delays, not 40 Ki of them.
        let took = started.elapsed();
        assert!(took >= 2 * delay && took < 10 * delay, "took {took:?}");
        assert_eq!(got, (200, api.fake.content("video_1")));
    }
}
