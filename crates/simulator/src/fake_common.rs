//! What the fake providers share beyond the server plumbing: scripted jobs
//! for the fakes of Runway, Luma, fal, Kling and Veo ([`Step`], [`Script`]),
//! and create-call control for every fake ([`CreateStep`], [`CreateRecord`],
//! holding and losing creates).
//!
//! Each provider fake only renders its own JSON: the registry of jobs, poll
//! counting, file serving and the create machinery live here once.
//!
//! Create control, for crash tests:
//! - `hold_creates(true)`: create requests wait, *before* the job exists,
//!   until `release_creates()` (or `hold_creates(false)`); `held_creates()`
//!   says how many are waiting. A released request then creates the job even
//!   if its client is gone, as a real provider that received it would.
//! - `lose_next_creates(n)`: the next `n` creates make the job and then
//!   reset the connection instead of answering: the provider has the job, the
//!   client never learns its id.
//! - `script_creates(steps)`: the next creates answer these steps in order
//!   (an HTTP error creates nothing; `Malformed`, `Hang` and `Raw` answer
//!   after creating).
//! - `creates(reference)`: jobs created per reference (idempotency key,
//!   `external_task_id`, or the prompt where the provider has neither).

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

mod creates;

pub(crate) use creates::{Admit, Creates, create_control, detached};
pub use creates::{CreateRecord, CreateStep};

use crate::fake_openai::fake_bytes;
pub use crate::fake_openai::plumbing::Outage;
use crate::fake_openai::plumbing::{ContentBody, InFlight, Server, lock, sleep_or_shutdown};

/// What one poll of a job answers, rendered in each provider's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Queued,
    Running,
    /// Done, with the script's outputs.
    Succeeded,
    Failed(String),
    /// Canceled at the provider (Runway `CANCELLED`, Veo's cancelled
    /// operation); providers without a cancel state render `Failed`.
    Canceled,
    /// Removed by the provider's safety filters (Veo's
    /// `raiMediaFilteredReasons`); others render `Failed`.
    Filtered(String),
    /// Done, but the outputs are gone (files answer 404; fal's result
    /// endpoint answers 404).
    OutputsGone,
    /// An HTTP error in the provider's error shape.
    HttpError {
        status: u16,
        retry_after: Option<u64>,
    },
    /// 200 with a body that is not JSON.
    Malformed,
    /// A status value the provider does not document.
    UnknownStatus(String),
    /// Wait this long, then answer `Running`.
    Hang(Duration),
    /// Exactly this status and body.
    Raw {
        status: u16,
        body: String,
    },
}

/// How one job behaves over its polls, and its outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// One per poll; the last repeats. Empty means `Succeeded`.
    pub steps: Vec<Step>,
    pub video_bytes: usize,
    /// A thumbnail of this many bytes, for providers that have one.
    pub thumbnail_bytes: Option<usize>,
    /// Answer output file requests with this status instead.
    pub file_status: Option<u16>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            steps: vec![Step::Succeeded],
            video_bytes: 64 * 1024,
            thumbnail_bytes: None,
            file_status: None,
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

    /// One step, repeated.
    pub fn step(step: Step) -> Self {
        Script::steps(vec![step])
    }

    /// `Queued`, then `n_polls - 1` polls `Running`, then `Succeeded`.
    pub fn succeeds_after(n_polls: usize) -> Self {
        Script::steps(running_steps(n_polls).chain([Step::Succeeded]).collect())
    }

    pub fn fails_after(n_polls: usize, reason: &str) -> Self {
        Script::steps(
            running_steps(n_polls)
                .chain([Step::Failed(reason.into())])
                .collect(),
        )
    }

    pub fn with_video_bytes(mut self, n: usize) -> Self {
        self.video_bytes = n;
        self
    }

    pub fn with_thumbnail(mut self, n: usize) -> Self {
        self.thumbnail_bytes = Some(n);
        self
    }

    pub fn with_file_status(mut self, status: u16) -> Self {
        self.file_status = Some(status);
        self
    }

    pub(crate) fn at(&self, poll_index: usize) -> Step {
        self.steps
            .get(poll_index)
            .or(self.steps.last())
            .cloned()
            .unwrap_or(Step::Succeeded)
    }
}

fn running_steps(n_polls: usize) -> impl Iterator<Item = Step> {
    (0..n_polls).map(|i| if i == 0 { Step::Queued } else { Step::Running })
}

/// The accessors every [`Core`]-based fake exposes (it has `server: Server`
/// and `core: Arc<Core>` fields); one macro instead of copies.
macro_rules! core_accessors {
    ($fake:ty) => {
        impl $fake {
            /// `http://127.0.0.1:PORT`, without a trailing slash.
            pub fn base_url(&self) -> String {
                self.core.base_url.clone()
            }

            pub fn addr(&self) -> std::net::SocketAddr {
                self.server.addr
            }

            /// Script the job `id` (polled by that id).
            pub fn script(&self, id: &str, script: $crate::fake_common::Script) {
                self.core.script(id, script);
            }

            /// The script of created jobs and of ids without their own;
            /// without one, unknown ids are not found and created jobs
            /// succeed at once.
            pub fn set_default_script(&self, script: $crate::fake_common::Script) {
                self.core.set_default_script(script);
            }

            /// Authenticated polls of `id` so far.
            pub fn polls(&self, id: &str) -> usize {
                self.core.polls(id)
            }

            /// Output requests for `name` (`video.mp4`, `thumb.jpg`) of `id`
            /// answered with content.
            pub fn downloads(&self, id: &str, name: &str) -> usize {
                self.core.downloads(id, name)
            }

            /// Authenticated cancel requests for `id` (for fakes that serve
            /// the provider's cancel call), whether the id was known or not.
            pub fn cancels(&self, id: &str) -> usize {
                self.core.cancels(id)
            }

            /// The most polls in flight at once.
            pub fn max_concurrent_polls(&self) -> usize {
                self.core.polls_in_flight.max($crate::fake_common::ALL)
            }

            /// Every request received, including rejected ones.
            pub fn total_requests(&self) -> u64 {
                self.core.total_requests()
            }

            /// The URL the video of `id` is served at (when the provider's
            /// outputs are plain files).
            pub fn video_url(&self, id: &str) -> String {
                self.core.file_url(id, "video.mp4")
            }

            pub fn thumbnail_url(&self, id: &str) -> String {
                self.core.file_url(id, "thumb.jpg")
            }

            /// The video bytes served for `id` under its script.
            pub fn content(&self, id: &str) -> Vec<u8> {
                self.core.content(id, "video.mp4")
            }

            pub fn thumbnail(&self, id: &str) -> Vec<u8> {
                self.core.content(id, "thumb.jpg")
            }

            /// Stops the server and waits (briefly) for it to finish.
            pub async fn shutdown(self) {
                self.server.shutdown().await;
            }
        }
        $crate::fake_common::outage_accessors!($fake);
    };
}
pub(crate) use core_accessors;

/// Provider-wide faults, for every fake (it has a `server: Server` field).
macro_rules! outage_accessors {
    ($fake:ty) => {
        impl $fake {
            /// Answer every request with this fault until it is cleared
            /// with `None`: the provider down, a refused key, no credit.
            pub fn set_outage(&self, outage: Option<$crate::fake_common::Outage>) {
                self.server.set_outage(outage);
            }

            /// Requests answered with the outage so far.
            pub fn outage_hits(&self) -> u64 {
                self.server.outage_hits()
            }

            /// Wait `d` before answering each request from now on (a
            /// provider across a network; requests still overlap).
            pub fn set_latency(&self, d: std::time::Duration) {
                self.server.set_latency(d);
            }
        }
    };
}
pub(crate) use outage_accessors;

/// Binds a fake on 127.0.0.1 and builds its router around a fresh [`Core`]
/// that knows the server's URL.
pub(crate) async fn start_core(
    api_key: &str,
    secret: Option<&str>,
    router: impl FnOnce(Arc<Core>) -> axum::Router,
) -> io::Result<(Server, Arc<Core>)> {
    let (tx, rx) = watch::channel(false);
    let mut slot = None;
    let server = Server::start_with(
        |addr| {
            let core = Core::new(
                format!("http://{addr}"),
                api_key.to_owned(),
                secret.map(str::to_owned),
                rx,
            );
            slot = Some(Arc::clone(&core));
            router(core)
        },
        tx,
    )
    .await?;
    let core = slot.ok_or_else(|| io::Error::other("router was not built"))?;
    Ok((server, core))
}

/// The registry behind the newer fakes: scripts, polls, files, creates.
pub(crate) struct Core {
    pub base_url: String,
    pub api_key: String,
    /// A second credential (Kling's secret key).
    pub secret: Option<String>,
    pub shutdown: watch::Receiver<bool>,
    pub total_requests: AtomicU64,
    pub polls_in_flight: Arc<InFlight>,
    pub files_in_flight: Arc<InFlight>,
    pub creates: Creates,
    /// Serve videos the Gemini way (`/v1beta/files/{key}:download?alt=media`,
    /// key required) instead of as CDN files.
    pub gemini_files: std::sync::atomic::AtomicBool,
    /// Answer Gemini file downloads with a 302 to this base URL +
    /// `/files/{key}/{name}` (Veo's fake), as Google's file service may.
    pub redirect_files_to: Mutex<Option<String>>,
    jobs: Mutex<Jobs>,
}

#[derive(Default)]
struct Jobs {
    scripts: HashMap<String, Script>,
    default: Option<Script>,
    polls: HashMap<String, usize>,
    downloads: HashMap<(String, String), usize>,
    /// Authenticated cancel requests per job id.
    cancels: HashMap<String, usize>,
    /// Jobs whose outputs are gone (a poll answered `OutputsGone`).
    gone: HashSet<String>,
    /// File key → job id (file URLs must not depend on ids with slashes).
    files: HashMap<String, String>,
    /// One provider-specific string per job: fal's app, Kling's
    /// `external_task_id`.
    tags: HashMap<String, String>,
    next_id: u64,
}

/// Key under which all polls are counted together.
pub(crate) const ALL: &str = "*";

/// What a poll should answer.
pub(crate) enum Polled {
    /// Render this state in the provider's JSON (never an HTTP error,
    /// `Malformed`, `Hang` or `Raw`, which are answered here).
    Render(Step, Script),
    /// The provider's error shape with this status.
    Error {
        status: u16,
        retry_after: Option<u64>,
    },
    /// No such job.
    Unknown,
    Respond(Response),
}

impl Core {
    pub fn new(
        base_url: String,
        api_key: String,
        secret: Option<String>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Core> {
        Arc::new(Core {
            base_url,
            api_key,
            secret,
            shutdown,
            total_requests: AtomicU64::new(0),
            polls_in_flight: Arc::default(),
            files_in_flight: Arc::default(),
            creates: Creates::default(),
            gemini_files: std::sync::atomic::AtomicBool::new(false),
            redirect_files_to: Mutex::new(None),
            jobs: Mutex::default(),
        })
    }

    pub fn count_request(&self) {
        self.total_requests.fetch_add(1, Ordering::SeqCst);
    }

    pub fn total_requests(&self) -> u64 {
        self.total_requests.load(Ordering::SeqCst)
    }

    pub fn script(&self, id: &str, script: Script) {
        let mut jobs = lock(&self.jobs);
        jobs.files.insert(file_key(id), id.to_owned());
        jobs.scripts.insert(id.to_owned(), script);
    }

    pub fn set_default_script(&self, script: Script) {
        lock(&self.jobs).default = Some(script);
    }

    pub fn script_of(&self, id: &str) -> Option<Script> {
        let jobs = lock(&self.jobs);
        jobs.scripts.get(id).or(jobs.default.as_ref()).cloned()
    }

    /// The step the last poll of `id` answered (before any poll: the
    /// first), with the script: for result endpoints that follow a status
    /// endpoint without being a poll themselves (fal).
    pub fn last_step(&self, id: &str) -> Option<(Step, Script)> {
        let jobs = lock(&self.jobs);
        let script = jobs.scripts.get(id).or(jobs.default.as_ref()).cloned()?;
        let polls = jobs.polls.get(id).copied().unwrap_or(0);
        Some((script.at(polls.saturating_sub(1)), script))
    }

    pub fn polls(&self, id: &str) -> usize {
        lock(&self.jobs).polls.get(id).copied().unwrap_or(0)
    }

    /// Count a cancel request for `id`; whether the fake knows the job.
    pub fn cancel(&self, id: &str) -> bool {
        let mut jobs = lock(&self.jobs);
        *jobs.cancels.entry(id.to_owned()).or_default() += 1;
        jobs.scripts.contains_key(id) || jobs.default.is_some()
    }

    pub fn cancels(&self, id: &str) -> usize {
        lock(&self.jobs).cancels.get(id).copied().unwrap_or(0)
    }

    pub fn downloads(&self, id: &str, name: &str) -> usize {
        lock(&self.jobs)
            .downloads
            .get(&(id.to_owned(), name.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Attaches the provider-specific string of a job (see `Jobs::tags`).
    pub fn tag(&self, id: &str, tag: &str) {
        lock(&self.jobs).tags.insert(id.to_owned(), tag.to_owned());
    }

    pub fn tag_of(&self, id: &str) -> Option<String> {
        lock(&self.jobs).tags.get(id).cloned()
    }

    /// The job carrying `tag`, if any.
    pub fn find_by_tag(&self, tag: &str) -> Option<String> {
        lock(&self.jobs)
            .tags
            .iter()
            .find(|(_, t)| t.as_str() == tag)
            .map(|(id, _)| id.clone())
    }

    /// A fresh job number for a created job's id.
    pub fn next_number(&self) -> u64 {
        let mut jobs = lock(&self.jobs);
        jobs.next_id += 1;
        jobs.next_id
    }

    /// Registers a created job (default script, or succeed at once).
    pub fn register_created(&self, id: &str) {
        let script = {
            let jobs = lock(&self.jobs);
            jobs.scripts
                .get(id)
                .or(jobs.default.as_ref())
                .cloned()
                .unwrap_or_default()
        };
        self.script(id, script);
    }

    /// The URL output `name` (`video.mp4`, `thumb.jpg`) of `id` is served at.
    pub fn file_url(&self, id: &str, name: &str) -> String {
        if self.gemini_files.load(Ordering::SeqCst) {
            format!(
                "{}/v1beta/files/{}:download?alt=media",
                self.base_url,
                file_key(id)
            )
        } else {
            format!("{}/files/{}/{name}", self.base_url, file_key(id))
        }
    }

    pub async fn poll(&self, id: &str) -> Polled {
        let _in_flight = self.polls_in_flight.enter(ALL);
        let (script, step) = {
            let mut jobs = lock(&self.jobs);
            let Some(script) = jobs.scripts.get(id).or(jobs.default.as_ref()).cloned() else {
                return Polled::Unknown;
            };
            let polls = jobs.polls.entry(id.to_owned()).or_default();
            let step = script.at(*polls);
            *polls += 1;
            if step == Step::OutputsGone {
                jobs.gone.insert(id.to_owned());
            }
            jobs.files.insert(file_key(id), id.to_owned());
            (script, step)
        };
        match step {
            Step::HttpError {
                status,
                retry_after,
            } => Polled::Error {
                status,
                retry_after,
            },
            Step::Malformed => Polled::Respond(malformed_response()),
            Step::Hang(d) => {
                sleep_or_shutdown(d, &self.shutdown).await;
                Polled::Render(Step::Running, script)
            }
            Step::Raw { status, body } => Polled::Respond(raw_response(status, body)),
            other => Polled::Render(other, script),
        }
    }

    /// Serves output `name` of the job behind `key`; `Err(status)` when the
    /// job or file does not exist or is gone (the caller answers its way).
    pub fn file(&self, key: &str, name: &str) -> Result<Response, u16> {
        let (id, script) = {
            let jobs = lock(&self.jobs);
            let id = jobs.files.get(key).cloned().ok_or(404u16)?;
            if jobs.gone.contains(&id) {
                return Err(404);
            }
            let script = jobs.scripts.get(&id).or(jobs.default.as_ref()).cloned();
            (id, script.ok_or(404u16)?)
        };
        if let Some(status) = script.file_status {
            return Err(status);
        }
        let (len, content_type) = match name {
            "video.mp4" => (script.video_bytes, "video/mp4"),
            "thumb.jpg" => (script.thumbnail_bytes.ok_or(404u16)?, "image/jpeg"),
            _ => return Err(404),
        };
        *lock(&self.jobs)
            .downloads
            .entry((id.clone(), name.to_owned()))
            .or_default() += 1;
        Ok(ContentBody {
            seed: format!("{id}/{name}"),
            len,
            chunk_delay: None,
            chunk_bytes: None,
            chunked: false,
            content_type,
            truncate_at: None,
        }
        .into_response(self.files_in_flight.enter(&id), self.shutdown.clone()))
    }

    /// The bytes served for output `name` of `id` under its script.
    pub fn content(&self, id: &str, name: &str) -> Vec<u8> {
        let script = self.script_of(id).unwrap_or_default();
        let len = if name == "thumb.jpg" {
            script.thumbnail_bytes.unwrap_or(0)
        } else {
            script.video_bytes
        };
        fake_bytes(&format!("{id}/{name}"), len)
    }
}

/// `GET /files/{key}/{name}`: outputs served without auth, like presigned
/// CDN URLs; errors as bare statuses, as CDNs answer.
pub(crate) async fn file_route(
    axum::extract::State(core): axum::extract::State<Arc<Core>>,
    axum::extract::Path((key, name)): axum::extract::Path<(String, String)>,
) -> Response {
    core.count_request();
    match core.file(&key, &name) {
        Ok(resp) => resp,
        Err(status) => StatusCode::from_u16(status)
            .unwrap_or(StatusCode::NOT_FOUND)
            .into_response(),
    }
}

/// A file-name-safe key for a job id.
fn file_key(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(crate) fn malformed_response() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{\"id\": \"oops\", \"status\": ",
    )
        .into_response()
}

pub(crate) fn raw_response(status: u16, body: String) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

pub(crate) fn with_retry_after(mut resp: Response, retry_after: Option<u64>) -> Response {
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// Request headers as (lowercase name, value) pairs, for [`CreateRecord`].
pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// A default message for an HTTP error status.
pub(crate) fn status_message(status: u16) -> &'static str {
    match status {
        400 => "Bad request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not found",
        422 => "Unprocessable entity",
        429 => "Too many requests",
        500..=599 => "Internal server error",
        _ => "Request failed",
    }
}

/// A uuid-shaped id from a number, like most providers' ids.
pub(crate) fn uuid_like(n: u64) -> String {
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        n.wrapping_mul(0x9e37_79b9) & 0xffff_ffff,
        n
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_repeat_their_last_step() {
        let s = Script::succeeds_after(2);
        assert_eq!(s.at(0), Step::Queued);
        assert_eq!(s.at(1), Step::Running);
        assert_eq!(s.at(5), Step::Succeeded);
        assert_eq!(Script::steps(vec![]).at(0), Step::Succeeded);
        assert_eq!(file_key("models/v/operations/1"), "models_v_operations_1");
    }
}
