//! A fake fal queue API on 127.0.0.1: `POST /{model_id}` (queue submit),
//! `GET /{app}/requests/{id}/status`, `GET /{app}/requests/{id}` (result)
//! and `PUT /{app}/requests/{id}/cancel` (counted; 202
//! `CANCELLATION_REQUESTED`, 404 for an unknown request), where `{app}` is
//! `owner/app`, or `namespace/owner/app` for the `workflows` and `comfy`
//! namespaces (fal-js `parseEndpointId`); a request polled under another
//! app is not found. `Authorization: Key <key>` checked, fal's JSON and
//! `{"detail": ...}` errors. Result files are served without auth at
//! `/files/{key}/...`, like fal's CDN.
//!
//! [`FakeFal::fail_results`] makes every result call of a completed request
//! answer a fal *request error* (`{"detail", "error_type"}` with
//! `X-Fal-Error-Type`, fal.ai/docs/documentation/model-apis/request-errors):
//! what fal answers once it has given up on a request after its own retries.
//!
//! Rendering: [`Step::Failed`] and [`Step::Canceled`] are `COMPLETED` with
//! an `error` in the status and a 422 from the result; [`Step::Filtered`] is
//! `COMPLETED` without an error in the status, the 422 only on the result
//! (how a model's refusal looks); [`Step::OutputsGone`] is `COMPLETED` with
//! a 404 from the result. Polls are counted on the status endpoint only.
//! Creates are counted by the input's `prompt` (fal has no idempotency key);
//! the `fal_webhook` query is kept in [`CreateRecord::path`]. See
//! [`crate::fake_common`] for scripts and create control.

use std::io;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use crate::fake_common::{
    Admit, Core, Creates, Polled, core_accessors, create_control, detached, file_route,
    header_pairs, start_core, status_message, uuid_like, with_retry_after,
};
pub use crate::fake_common::{CreateRecord, CreateStep, Script, Step};
use crate::fake_openai::plumbing::{Server, json_response, lock};

/// The fake server. Dropping it shuts it down.
pub struct FakeFal {
    server: Server,
    core: Arc<Core>,
    result_error: Arc<Mutex<Option<(u16, String)>>>,
}

/// The router's state: the shared registry, and fal's own knob.
struct FalState {
    core: Arc<Core>,
    result_error: Arc<Mutex<Option<(u16, String)>>>,
}

/// Model id namespaces whose app has three segments.
const NAMESPACES: &[&str] = &["workflows", "comfy"];

/// How many leading segments of a path or model id name the app.
fn app_len(segments: &[&str]) -> usize {
    match segments.first() {
        Some(first) if NAMESPACES.contains(first) => 3,
        _ => 2,
    }
}

core_accessors!(FakeFal);
create_control!(FakeFal, core.creates);

impl FakeFal {
    /// # Panics
    /// If no loopback port can be bound; see [`FakeFal::try_start`].
    pub async fn start(api_key: &str) -> FakeFal {
        match FakeFal::try_start(api_key).await {
            Ok(fake) => fake,
            Err(e) => panic!("start fake fal server: {e}"),
        }
    }

    pub async fn try_start(api_key: &str) -> io::Result<FakeFal> {
        let result_error = Arc::new(Mutex::new(None));
        let knob = Arc::clone(&result_error);
        let (server, core) = start_core(api_key, None, move |core| {
            let files = Router::new()
                .route("/files/{key}/{name}", get(file_route))
                .with_state(Arc::clone(&core));
            let state = Arc::new(FalState {
                core,
                result_error: knob,
            });
            files.merge(Router::new().fallback(dispatch).with_state(state))
        })
        .await?;
        Ok(FakeFal {
            server,
            core,
            result_error,
        })
    }

    /// From now on, the result call of a completed request answers
    /// `status` with this `error_type` (`None`: results as scripted; an
    /// empty type: a plain `{"detail"}` error, as a gateway answers).
    pub fn fail_results(&self, error: Option<(u16, &str)>) {
        *lock(&self.result_error) = error.map(|(status, t)| (status, t.to_owned()));
    }

    /// The provider job id the adapter stores for a request of `model_id`.
    pub fn job_id(model_id: &str, request_id: &str) -> String {
        format!("{model_id}|{request_id}")
    }
}

fn error(status: u16, detail: &str) -> Response {
    json_response(status, &json!({"detail": detail}))
}

fn key_ok(headers: &HeaderMap, key: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Key "))
        .is_some_and(|given| given == key)
}

/// fal's paths do not fit a static route table (model ids have any number
/// of segments), so one handler dispatches on them.
async fn dispatch(
    State(state): State<Arc<FalState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let core = Arc::clone(&state.core);
    core.count_request();
    if !key_ok(&headers, &core.api_key) {
        return error(401, "Invalid authorization header");
    }
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let n = app_len(&segments).min(segments.len());
    let (app, rest) = segments.split_at(n);
    let app = app.join("/");
    match (&method, rest) {
        (&Method::GET, ["requests", id, "status"]) => status(&core, &app, id).await,
        (&Method::GET, ["requests", id]) => {
            let failing = lock(&state.result_error).clone();
            result(&core, &app, id, failing)
        }
        (&Method::PUT, ["requests", id, "cancel"]) => {
            let known = core.cancel(id);
            if !known || core.tag_of(id).is_some_and(|a| a != app) {
                return error(404, "Request not found");
            }
            json_response(202, &json!({"status": "CANCELLATION_REQUESTED"}))
        }
        (&Method::POST, _)
            if segments.len() >= app_len(&segments) && !segments.contains(&"requests") =>
        {
            let model = segments.join("/");
            detached(async move { create(&core, &model, &uri, &headers, &body).await }).await
        }
        _ => error(404, "Not Found"),
    }
}

fn urls(core: &Core, app: &str, id: &str) -> Value {
    let base = format!("{}/{app}/requests/{id}", core.base_url);
    json!({
        "request_id": id,
        "response_url": base,
        "status_url": format!("{base}/status"),
        "cancel_url": format!("{base}/cancel"),
    })
}

async fn status(core: &Core, app: &str, id: &str) -> Response {
    if core.tag_of(id).is_some_and(|a| a != app) {
        return error(404, "Request not found");
    }
    let step = match core.poll(id).await {
        Polled::Render(step, _) => step,
        Polled::Error {
            status,
            retry_after,
        } => return with_retry_after(error(status, status_message(status)), retry_after),
        Polled::Unknown => return error(404, "Request not found"),
        Polled::Respond(resp) => return resp,
    };
    let mut s = urls(core, app, id);
    let (state, error_text) = match &step {
        Step::Queued => ("IN_QUEUE", None),
        Step::Running | Step::Hang(_) => ("IN_PROGRESS", None),
        Step::Failed(reason) => ("COMPLETED", Some(reason.clone())),
        Step::Canceled => ("COMPLETED", Some("Request was cancelled".to_owned())),
        Step::UnknownStatus(other) => (other.as_str(), None),
        _ => ("COMPLETED", None),
    };
    s["status"] = json!(state);
    match state {
        "IN_QUEUE" => s["queue_position"] = json!(0),
        "IN_PROGRESS" => s["logs"] = json!([]),
        _ => s["metrics"] = json!({"inference_time": 1.5}),
    }
    if let Some(e) = error_text {
        s["error"] = json!(e);
        s["error_type"] = json!("runner_failed");
    }
    json_response(200, &s)
}

fn result(core: &Core, app: &str, id: &str, failing: Option<(u16, String)>) -> Response {
    if core.tag_of(id).is_some_and(|a| a != app) {
        return error(404, "Request not found");
    }
    let Some((step, script)) = core.last_step(id) else {
        return error(404, "Request not found");
    };
    if let Some((status, error_type)) = failing {
        // An empty type is a 5xx that is no request error (a gateway's).
        if error_type.is_empty() {
            return error(status, status_message(status));
        }
        let mut resp = json_response(
            status,
            &json!({"detail": "Request failed after retries", "error_type": error_type}),
        );
        if let Ok(v) = axum::http::HeaderValue::from_str(&error_type) {
            resp.headers_mut().insert("x-fal-error-type", v);
        }
        return resp;
    }
    match step {
        Step::Queued | Step::Running | Step::Hang(_) => error(400, "Request is still in progress"),
        Step::Failed(reason) | Step::Filtered(reason) => json_response(
            422,
            &json!({"detail": [{"loc": ["body", "prompt"], "msg": reason, "type": "content_policy_violation"}]}),
        ),
        Step::Canceled => error(422, "Request was cancelled"),
        Step::OutputsGone => error(404, "Request result not found"),
        _ => {
            let mut out = json!({
                "video": {
                    "url": core.file_url(id, "video.mp4"),
                    "content_type": "video/mp4",
                    "file_name": "video.mp4",
                    "file_size": script.video_bytes,
                },
                "seed": 42,
            });
            if script.thumbnail_bytes.is_some() {
                out["thumbnail"] =
                    json!({"url": core.file_url(id, "thumb.jpg"), "content_type": "image/jpeg"});
            }
            json_response(200, &out)
        }
    }
}

async fn create(core: &Core, model: &str, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return error(422, "Invalid JSON body");
    };
    let Some(prompt) = body.get("prompt").and_then(Value::as_str) else {
        return json_response(
            422,
            &json!({"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]}),
        );
    };
    let (after, lost) = match core.creates.admit(&core.shutdown).await {
        Admit::Refuse {
            status,
            retry_after,
        } => return with_retry_after(error(status, status_message(status)), retry_after),
        Admit::ShuttingDown => return error(503, "shutting down"),
        Admit::Proceed { after, lost } => (after, lost),
    };
    let id = uuid_like(core.next_number());
    let segments: Vec<&str> = model.split('/').collect();
    let app: String = segments[..app_len(&segments).min(segments.len())].join("/");
    // A poll under another app is not found, as on fal.
    core.tag(&id, &app);
    core.register_created(&id);
    core.creates.record(CreateRecord {
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: header_pairs(headers),
        body: body.clone(),
        reference: prompt.to_owned(),
        job_id: id.clone(),
    });
    let mut answer = urls(core, &app, &id);
    answer["gateway_request_id"] = json!(id);
    answer["queue_position"] = json!(0);
    Creates::finish(after, lost, json_response(200, &answer), &core.shutdown).await
}
