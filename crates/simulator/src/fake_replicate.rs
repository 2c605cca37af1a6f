//! A fake Replicate predictions API on 127.0.0.1, driven by per-prediction
//! scripts.
//!
//! It answers `GET /v1/predictions/{id}` and the creates `POST
//! /v1/predictions` (with `version`) and `POST
//! /v1/models/{owner}/{name}/predictions` with Replicate's JSON and error
//! shapes (bearer key checked; creates counted per `input.prompt`, as
//! Replicate has no idempotency key, with the create control of
//! [`crate::fake_common`]) and serves the outputs itself, without auth,
//! at `GET /files/{id}/{name}`, so output URLs stay on loopback the way real
//! ones sit on `replicate.delivery`. Each poll consumes one [`Step`]; the last
//! repeats. Bytes are [`crate::fake_openai::fake_bytes`] of `"{id}/{name}"`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::fake_common::{Admit, CreateRecord, Creates, create_control, detached, header_pairs};
use crate::fake_openai::fake_bytes;
use crate::fake_openai::plumbing::{
    ContentBody, InFlight, Server, bearer_ok, json_response, lock, sleep_or_shutdown,
};

/// What one poll of a prediction answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Starting,
    Processing,
    /// `succeeded` with the script's outputs.
    Succeeded,
    Failed(String),
    Canceled,
    Aborted,
    /// `succeeded`, `data_removed: true`, `output: null` (after the hour).
    DataRemoved,
    /// `succeeded` with `output: null`.
    SucceededWithoutOutput,
    HttpError {
        status: u16,
        retry_after: Option<u64>,
    },
    /// 200 with a body that is not JSON.
    Malformed,
    /// Wait this long, then answer `processing`.
    Hang(Duration),
    /// Exactly this status and body.
    Raw {
        status: u16,
        body: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// One per poll; the last repeats. Empty means `Succeeded`.
    pub steps: Vec<Step>,
    /// Output file names, served at `/files/{id}/{name}`.
    pub outputs: Vec<String>,
    /// `output` as a JSON list even for one file (many video models do).
    pub output_as_list: bool,
    pub file_bytes: usize,
    /// Answer file requests with this status instead.
    pub file_status: Option<u16>,
    pub chunk_delay: Option<Duration>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            steps: vec![Step::Succeeded],
            outputs: vec!["output.mp4".into()],
            output_as_list: false,
            file_bytes: 64 * 1024,
            file_status: None,
            chunk_delay: None,
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

    /// `starting`, then `n_polls - 1` polls `processing`, then `succeeded`.
    pub fn succeeds_after(n_polls: usize) -> Self {
        Script::steps(running_steps(n_polls).chain([Step::Succeeded]).collect())
    }

    pub fn fails_after(n_polls: usize, error: &str) -> Self {
        Script::steps(
            running_steps(n_polls)
                .chain([Step::Failed(error.into())])
                .collect(),
        )
    }

    pub fn with_outputs(mut self, names: &[&str], as_list: bool) -> Self {
        self.outputs = names.iter().map(|n| (*n).to_owned()).collect();
        self.output_as_list = as_list;
        self
    }

    pub fn with_file_bytes(mut self, n: usize) -> Self {
        self.file_bytes = n;
        self
    }

    pub fn with_file_status(mut self, status: u16) -> Self {
        self.file_status = Some(status);
        self
    }

    pub fn with_chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = Some(delay);
        self
    }

    fn step(&self, poll_index: usize) -> Step {
        self.steps
            .get(poll_index)
            .or(self.steps.last())
            .cloned()
            .unwrap_or(Step::Succeeded)
    }
}

fn running_steps(n_polls: usize) -> impl Iterator<Item = Step> {
    (0..n_polls).map(|i| {
        if i == 0 {
            Step::Starting
        } else {
            Step::Processing
        }
    })
}

/// The fake server. Dropping it shuts it down.
pub struct FakeReplicate {
    server: Server,
    state: Arc<FakeState>,
}

struct FakeState {
    api_key: String,
    base_url: String,
    shutdown: watch::Receiver<bool>,
    total_requests: AtomicU64,
    polls_in_flight: Arc<InFlight>,
    files_in_flight: Arc<InFlight>,
    creates: Creates,
    jobs: Mutex<Jobs>,
}

#[derive(Default)]
struct Jobs {
    scripts: HashMap<String, Script>,
    default: Option<Script>,
    polls: HashMap<String, usize>,
    downloads: HashMap<(String, String), usize>,
    cancels: HashMap<String, usize>,
    next_id: u64,
}

impl Jobs {
    fn script(&self, id: &str) -> Option<Script> {
        self.scripts.get(id).or(self.default.as_ref()).cloned()
    }
}

const ALL: &str = "*";

crate::fake_common::outage_accessors!(FakeReplicate);

impl FakeReplicate {
    /// Starts on 127.0.0.1 with a free port.
    ///
    /// # Panics
    /// If no loopback port can be bound; see [`FakeReplicate::try_start`].
    pub async fn start(api_key: &str) -> FakeReplicate {
        match FakeReplicate::try_start(api_key).await {
            Ok(fake) => fake,
            Err(e) => panic!("start fake replicate server: {e}"),
        }
    }

    pub async fn try_start(api_key: &str) -> io::Result<FakeReplicate> {
        // Output URLs embed the bound port, known only once the server is
        // up; the router reaches the state through a cell filled right after
        // (a request before that gets 503, and none can arrive that early).
        let (tx, rx) = watch::channel(false);
        let cell: Arc<Mutex<Option<Arc<FakeState>>>> = Arc::default();
        let router_cell = Arc::clone(&cell);
        let router = Router::new()
            .route("/v1/predictions", post(create))
            .route("/v1/models/{owner}/{name}/predictions", post(create))
            .route("/v1/predictions/{id}", get(retrieve))
            .route("/v1/predictions/{id}/cancel", post(cancel))
            .route("/files/{id}/{name}", get(file))
            .fallback(fallback)
            .with_state(router_cell);
        let server = Server::start(router, tx).await?;
        let state = Arc::new(FakeState {
            api_key: api_key.to_owned(),
            base_url: format!("http://{}", server.addr),
            shutdown: rx,
            total_requests: AtomicU64::new(0),
            polls_in_flight: Arc::default(),
            files_in_flight: Arc::default(),
            creates: Creates::default(),
            jobs: Mutex::default(),
        });
        *lock(&cell) = Some(Arc::clone(&state));
        Ok(FakeReplicate { server, state })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.state.base_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub fn script(&self, prediction_id: &str, script: Script) {
        lock(&self.state.jobs)
            .scripts
            .insert(prediction_id.to_owned(), script);
    }

    pub fn set_default_script(&self, script: Script) {
        lock(&self.state.jobs).default = Some(script);
    }

    pub fn polls(&self, prediction_id: &str) -> usize {
        lock(&self.state.jobs)
            .polls
            .get(prediction_id)
            .copied()
            .unwrap_or(0)
    }

    /// Authenticated `POST /v1/predictions/{id}/cancel` requests for
    /// `prediction_id` (answered or not).
    pub fn cancels(&self, prediction_id: &str) -> usize {
        lock(&self.state.jobs)
            .cancels
            .get(prediction_id)
            .copied()
            .unwrap_or(0)
    }

    /// Requests for output `name` of `prediction_id` answered with content.
    pub fn downloads(&self, prediction_id: &str, name: &str) -> usize {
        lock(&self.state.jobs)
            .downloads
            .get(&(prediction_id.to_owned(), name.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn max_concurrent_downloads(&self, prediction_id: &str) -> usize {
        self.state.files_in_flight.max(prediction_id)
    }

    pub fn max_concurrent_polls(&self) -> usize {
        self.state.polls_in_flight.max(ALL)
    }

    pub fn total_requests(&self) -> u64 {
        self.state.total_requests.load(Ordering::SeqCst)
    }

    /// The URL output `name` of `prediction_id` is served at.
    pub fn output_url(&self, prediction_id: &str, name: &str) -> String {
        output_url(&self.state.base_url, prediction_id, name)
    }

    /// The bytes served for output `name` under the current script.
    pub fn content(&self, prediction_id: &str, name: &str) -> Vec<u8> {
        let len = lock(&self.state.jobs)
            .script(prediction_id)
            .map_or(0, |s| s.file_bytes);
        fake_bytes(&format!("{prediction_id}/{name}"), len)
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

create_control!(FakeReplicate, state.creates);

type Shared = Arc<Mutex<Option<Arc<FakeState>>>>;

fn state_of(cell: &Shared) -> Option<Arc<FakeState>> {
    lock(cell).clone()
}

fn output_url(base: &str, id: &str, name: &str) -> String {
    format!("{base}/files/{id}/{name}")
}

/// A scripted HTTP error in Replicate's problem-details shape; 402 is
/// Replicate's "insufficient credit".
fn http_error(status: u16) -> Response {
    let (title, detail) = match status {
        402 => (
            "Insufficient credit",
            "You have insufficient credit to run this model. Go to https://replicate.com/account/billing#billing to purchase credit.",
        ),
        429 => ("Request was throttled.", "Request was throttled."),
        500..=599 => ("Internal server error.", "Internal server error."),
        _ => ("Request failed.", "Request failed."),
    };
    replicate_error(status, title, detail)
}

fn replicate_error(status: u16, title: &str, detail: &str) -> Response {
    json_response(
        status,
        &json!({"title": title, "detail": detail, "status": status}),
    )
}

fn prediction_json(
    state: &FakeState,
    id: &str,
    status: &str,
    script: &Script,
    output: Value,
    error: Value,
    data_removed: bool,
) -> Value {
    json!({
        "id": id,
        "model": "fake/video-model",
        "version": "0000000000000000000000000000000000000000000000000000000000000000",
        "input": {"prompt": "a fake video"},
        "logs": "",
        "output": output,
        "data_removed": data_removed,
        "error": error,
        "status": status,
        "created_at": "2025-01-01T00:00:00.000Z",
        "urls": {
            "get": format!("{}/v1/predictions/{id}", state.base_url),
            "cancel": format!("{}/v1/predictions/{id}/cancel", state.base_url),
        },
        "metrics": {"predict_time": if status == "succeeded" { json!(1.5) } else { Value::Null }},
        "files": script.outputs.len(),
    })
}

fn outputs_json(state: &FakeState, id: &str, script: &Script) -> Value {
    let urls: Vec<Value> = script
        .outputs
        .iter()
        .map(|n| Value::String(output_url(&state.base_url, id, n)))
        .collect();
    match urls.as_slice() {
        [one] if !script.output_as_list => one.clone(),
        _ => Value::Array(urls),
    }
}

async fn retrieve(
    State(cell): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(state) = state_of(&cell) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    state.total_requests.fetch_add(1, Ordering::SeqCst);
    if !bearer_ok(&headers, &state.api_key) {
        return replicate_error(
            401,
            "Unauthenticated",
            "You did not pass a valid authentication token",
        );
    }
    let _in_flight = state.polls_in_flight.enter(ALL);
    let (script, step) = {
        let mut jobs = lock(&state.jobs);
        let Some(script) = jobs.script(&id) else {
            return replicate_error(404, "Not found", "Not found.");
        };
        let polls = jobs.polls.entry(id.clone()).or_default();
        let step = script.step(*polls);
        *polls += 1;
        (script, step)
    };
    let answer = |status: &str, output: Value, error: Value, removed: bool| {
        axum::Json(prediction_json(
            &state, &id, status, &script, output, error, removed,
        ))
        .into_response()
    };
    match step {
        Step::Starting => answer("starting", Value::Null, Value::Null, false),
        Step::Processing => answer("processing", Value::Null, Value::Null, false),
        Step::Succeeded => answer(
            "succeeded",
            outputs_json(&state, &id, &script),
            Value::Null,
            false,
        ),
        Step::Failed(e) => answer("failed", Value::Null, Value::String(e), false),
        Step::Canceled => answer("canceled", Value::Null, Value::Null, false),
        Step::Aborted => answer("aborted", Value::Null, Value::Null, false),
        Step::DataRemoved => answer("succeeded", Value::Null, Value::Null, true),
        Step::SucceededWithoutOutput => answer("succeeded", Value::Null, Value::Null, false),
        Step::HttpError {
            status,
            retry_after,
        } => {
            let mut resp = http_error(status);
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
        Step::Malformed => (StatusCode::OK, "<html>not json</html>").into_response(),
        Step::Hang(d) => {
            sleep_or_shutdown(d, &state.shutdown).await;
            answer("processing", Value::Null, Value::Null, false)
        }
        Step::Raw { status, body } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
    }
}

/// `POST /v1/predictions/{id}/cancel`: counted, answered with the
/// prediction as `canceled` (404 for an id with no script).
async fn cancel(
    State(cell): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(state) = state_of(&cell) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    state.total_requests.fetch_add(1, Ordering::SeqCst);
    if !bearer_ok(&headers, &state.api_key) {
        return replicate_error(
            401,
            "Unauthenticated",
            "You did not pass a valid authentication token",
        );
    }
    let script = {
        let mut jobs = lock(&state.jobs);
        *jobs.cancels.entry(id.clone()).or_default() += 1;
        jobs.script(&id)
    };
    let Some(script) = script else {
        return replicate_error(404, "Not found", "Not found.");
    };
    axum::Json(prediction_json(
        &state,
        &id,
        "canceled",
        &script,
        Value::Null,
        Value::Null,
        false,
    ))
    .into_response()
}

async fn create(
    State(cell): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    detached(async move {
        let Some(state) = state_of(&cell) else {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        };
        state.total_requests.fetch_add(1, Ordering::SeqCst);
        if !bearer_ok(&headers, &state.api_key) {
            return replicate_error(
                401,
                "Unauthenticated",
                "You did not pass a valid authentication token",
            );
        }
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return replicate_error(400, "Invalid JSON", "The request body is not valid JSON.");
        };
        let Some(input) = body.get("input").filter(|i| i.is_object()) else {
            return replicate_error(422, "Input validation failed", "input: input is required");
        };
        if uri.path() == "/v1/predictions" && body.get("version").and_then(Value::as_str).is_none()
        {
            return replicate_error(
                422,
                "Input validation failed",
                "version: version is required",
            );
        }
        let reference = input
            .get("prompt")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let (after, lost) = match state.creates.admit(&state.shutdown).await {
            Admit::Refuse {
                status,
                retry_after,
            } => {
                let mut resp = http_error(status);
                if let Some(secs) = retry_after {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                return resp;
            }
            Admit::ShuttingDown => return replicate_error(503, "Unavailable", "shutting down"),
            Admit::Proceed { after, lost } => (after, lost),
        };
        let (id, script) = {
            let mut jobs = lock(&state.jobs);
            jobs.next_id += 1;
            let id = format!("fake{:022x}", jobs.next_id);
            let script = jobs.script(&id).unwrap_or_default();
            jobs.scripts.insert(id.clone(), script.clone());
            (id, script)
        };
        state.creates.record(CreateRecord {
            path: uri.path().to_owned(),
            headers: header_pairs(&headers),
            body: body.clone(),
            reference,
            job_id: id.clone(),
        });
        let answer = json_response(
            201,
            &prediction_json(
                &state,
                &id,
                "starting",
                &script,
                Value::Null,
                Value::Null,
                false,
            ),
        );
        Creates::finish(after, lost, answer, &state.shutdown).await
    })
    .await
}

async fn file(State(cell): State<Shared>, Path((id, name)): Path<(String, String)>) -> Response {
    let Some(state) = state_of(&cell) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    state.total_requests.fetch_add(1, Ordering::SeqCst);
    let script = {
        let jobs = lock(&state.jobs);
        match jobs.script(&id) {
            Some(s) if s.outputs.contains(&name) => s,
            _ => return StatusCode::NOT_FOUND.into_response(),
        }
    };
    if let Some(status) = script.file_status {
        return StatusCode::from_u16(status)
            .unwrap_or(StatusCode::NOT_FOUND)
            .into_response();
    }
    *lock(&state.jobs)
        .downloads
        .entry((id.clone(), name.clone()))
        .or_default() += 1;
    let content_type = if name.ends_with(".mp4") {
        "video/mp4"
    } else {
        "application/octet-stream"
    };
    ContentBody {
        seed: format!("{id}/{name}"),
        len: script.file_bytes,
        chunk_delay: script.chunk_delay,
        chunk_bytes: None,
        chunked: false,
        content_type,
        truncate_at: None,
    }
    .into_response(state.files_in_flight.enter(&id), state.shutdown.clone())
}

async fn fallback(State(cell): State<Shared>) -> Response {
    if let Some(state) = state_of(&cell) {
        state.total_requests.fetch_add(1, Ordering::SeqCst);
    }
    replicate_error(404, "Not found", "Not found.")
}
