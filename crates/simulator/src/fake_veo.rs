//! A fake Gemini API for Veo on 127.0.0.1:
//! `POST /v1beta/models/{model}:predictLongRunning`,
//! `GET /v1beta/models/{model}/operations/{op}` and the generated file at
//! `GET /v1beta/files/{key}:download?alt=media`, all with `x-goog-api-key`
//! checked (a wrong key is Google's 400 `API_KEY_INVALID`), Google's
//! long-running operation JSON and `{"error": {code, message, status}}`
//! errors. [`FakeVeo::redirect_files_to`] makes file downloads redirect
//! elsewhere, as python-genai's `follow_redirects=True` allows for.
//!
//! Rendering: [`Step::Queued`] and [`Step::Running`] are an operation
//! without `done`; [`Step::Failed`] is `done` + `error` (code 13),
//! [`Step::Canceled`] `done` + `error` code 1 (`CANCELLED`),
//! [`Step::Filtered`] a response with `raiMediaFilteredReasons` and no
//! samples; [`Step::UnknownStatus`] puts its text in `done`. Operation names
//! are `models/{model}/operations/{op}`; script them by that full name.
//! Creates are counted by prompt (the Gemini API has no idempotency key).
//! See [`crate::fake_common`] for scripts and create control.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::fake_common::{
    Admit, Core, Creates, Polled, core_accessors, create_control, detached, file_route,
    header_pairs, start_core, status_message, with_retry_after,
};
pub use crate::fake_common::{CreateRecord, CreateStep, Script, Step};
use crate::fake_openai::plumbing::{Server, json_response, lock};

/// The fake server. Dropping it shuts it down.
pub struct FakeVeo {
    server: Server,
    core: Arc<Core>,
}

core_accessors!(FakeVeo);
create_control!(FakeVeo, core.creates);

impl FakeVeo {
    /// # Panics
    /// If no loopback port can be bound; see [`FakeVeo::try_start`].
    pub async fn start(api_key: &str) -> FakeVeo {
        match FakeVeo::try_start(api_key).await {
            Ok(fake) => fake,
            Err(e) => panic!("start fake veo server: {e}"),
        }
    }

    pub async fn try_start(api_key: &str) -> io::Result<FakeVeo> {
        let (server, core) = start_core(api_key, None, |core| {
            core.gemini_files.store(true, Ordering::SeqCst);
            Router::new()
                .route("/v1beta/models/{action}", post(create))
                .route("/v1beta/models/{model}/operations/{op}", get(operation))
                .route("/v1beta/files/{file}", get(file))
                .route("/files/{key}/{name}", get(storage_file))
                .fallback(|| async { error(404, "Method not found.") })
                .with_state(core)
        })
        .await?;
        Ok(FakeVeo { server, core })
    }

    /// From now on, a file download answers 302 to `base` +
    /// `/files/{key}/video.mp4` (`None`: serve the file). `base` may be
    /// another fake's base URL (a CDN), or this one's under another name.
    pub fn redirect_files_to(&self, base: Option<&str>) {
        *lock(&self.core.redirect_files_to) = base.map(str::to_owned);
    }

    /// The operation name of `op` for `model`, as the fake issues them.
    pub fn operation_name(model: &str, op: &str) -> String {
        format!("models/{model}/operations/{op}")
    }
}

fn google_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        500..=599 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

fn error(status: u16, message: &str) -> Response {
    json_response(
        status,
        &json!({"error": {"code": status, "message": message, "status": google_status(status)}}),
    )
}

fn key_refused(core: &Core, headers: &HeaderMap) -> Option<Response> {
    let given = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok());
    if given == Some(core.api_key.as_str()) {
        return None;
    }
    Some(json_response(
        400,
        &json!({"error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }],
        }}),
    ))
}

async fn operation(
    State(core): State<Arc<Core>>,
    Path((model, op)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    core.count_request();
    if let Some(resp) = key_refused(&core, &headers) {
        return resp;
    }
    let name = FakeVeo::operation_name(&model, &op);
    let step = match core.poll(&name).await {
        Polled::Render(step, _) => step,
        Polled::Error {
            status,
            retry_after,
        } => return with_retry_after(error(status, status_message(status)), retry_after),
        Polled::Unknown => return error(404, "Operation not found."),
        Polled::Respond(resp) => return resp,
    };
    let mut o = json!({"name": name});
    match step {
        Step::Succeeded | Step::OutputsGone => {
            o["done"] = json!(true);
            o["response"] = json!({
                "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
                "generateVideoResponse": {"generatedSamples": [
                    {"video": {"uri": core.file_url(&name, "video.mp4")}}
                ]},
            });
        }
        Step::Failed(reason) => {
            o["done"] = json!(true);
            o["error"] = json!({"code": 13, "message": reason});
        }
        Step::Canceled => {
            o["done"] = json!(true);
            o["error"] = json!({"code": 1, "message": "Operation was cancelled."});
        }
        Step::Filtered(reason) => {
            o["done"] = json!(true);
            o["response"] = json!({
                "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
                "generateVideoResponse": {
                    "raiMediaFilteredCount": 1,
                    "raiMediaFilteredReasons": [reason],
                },
            });
        }
        Step::UnknownStatus(s) => o["done"] = json!(s),
        _ => {
            o["metadata"] = json!({"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningMetadata"})
        }
    }
    json_response(200, &o)
}

async fn file(
    State(core): State<Arc<Core>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    core.count_request();
    if let Some(resp) = key_refused(&core, &headers) {
        return resp;
    }
    let Some(key) = file.strip_suffix(":download") else {
        return error(404, "File not found.");
    };
    if let Some(target) = lock(&core.redirect_files_to).clone() {
        let location = format!("{}/files/{key}/video.mp4", target.trim_end_matches('/'));
        return (
            StatusCode::FOUND,
            [(axum::http::header::LOCATION, location)],
        )
            .into_response();
    }
    match core.file(key, "video.mp4") {
        Ok(resp) => resp,
        Err(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::NOT_FOUND);
            error(status.as_u16(), "File not found.").into_response()
        }
    }
}

/// Where [`FakeVeo::redirect_files_to`] sends downloads: plain storage that
/// must never see the API key (a 403 if it does, so a leak fails the test).
async fn storage_file(
    State(core): State<Arc<Core>>,
    Path((key, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if headers.contains_key("x-goog-api-key") {
        core.count_request();
        return error(403, "the API key was sent to the storage host");
    }
    file_route(State(core), Path((key, name))).await
}

async fn create(
    State(core): State<Arc<Core>>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    detached(async move {
        core.count_request();
        if let Some(resp) = key_refused(&core, &headers) {
            return resp;
        }
        let Some(model) = action.strip_suffix(":predictLongRunning") else {
            return error(404, "Method not found.");
        };
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return error(400, "Invalid JSON payload received.");
        };
        let Some(prompt) = body.pointer("/instances/0/prompt").and_then(Value::as_str) else {
            return error(400, "instances[0].prompt is required.");
        };
        let (after, lost) = match core.creates.admit(&core.shutdown).await {
            Admit::Refuse {
                status,
                retry_after,
            } => return with_retry_after(error(status, status_message(status)), retry_after),
            Admit::ShuttingDown => return error(503, "shutting down"),
            Admit::Proceed { after, lost } => (after, lost),
        };
        let name = FakeVeo::operation_name(model, &format!("op{}", core.next_number()));
        core.register_created(&name);
        core.creates.record(CreateRecord {
            path: format!("/v1beta/models/{action}"),
            headers: header_pairs(&headers),
            body: body.clone(),
            reference: prompt.to_owned(),
            job_id: name.clone(),
        });
        Creates::finish(
            after,
            lost,
            json_response(200, &json!({"name": name})),
            &core.shutdown,
        )
        .await
    })
    .await
}
