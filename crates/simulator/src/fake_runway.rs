//! A fake Runway API on 127.0.0.1: `GET /v1/tasks/{id}`, `DELETE
//! /v1/tasks/{id}` (cancel; counted, 204, 404 for an unknown task) and
//! `POST /v1/text_to_video` / `/v1/image_to_video`, bearer key and
//! `X-Runway-Version` checked, Runway's task JSON and `{"error": ...}`
//! errors. Outputs are served without auth at `/files/{key}/video.mp4`, like
//! Runway's presigned URLs. Creates are counted by `promptText` (Runway has
//! no idempotency key). See [`crate::fake_common`] for scripts and create
//! control.

use std::io;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::fake_common::{
    Admit, Core, Creates, Polled, core_accessors, create_control, detached, file_route,
    header_pairs, start_core, status_message, uuid_like, with_retry_after,
};
pub use crate::fake_common::{CreateRecord, CreateStep, Script, Step};
use crate::fake_openai::plumbing::{Server, bearer_ok, json_response};

/// The version header value the fake requires.
pub const API_VERSION: &str = "2024-11-06";

/// The fake server. Dropping it shuts it down.
pub struct FakeRunway {
    server: Server,
    core: Arc<Core>,
}

core_accessors!(FakeRunway);
create_control!(FakeRunway, core.creates);

impl FakeRunway {
    /// # Panics
    /// If no loopback port can be bound; see [`FakeRunway::try_start`].
    pub async fn start(api_key: &str) -> FakeRunway {
        match FakeRunway::try_start(api_key).await {
            Ok(fake) => fake,
            Err(e) => panic!("start fake runway server: {e}"),
        }
    }

    pub async fn try_start(api_key: &str) -> io::Result<FakeRunway> {
        let (server, core) = start_core(api_key, None, |core| {
            Router::new()
                .route("/v1/tasks/{id}", get(task).delete(cancel))
                .route("/v1/text_to_video", post(create))
                .route("/v1/image_to_video", post(create))
                .route("/files/{key}/{name}", get(file_route))
                .fallback(|| async { error(404, "Not found") })
                .with_state(core)
        })
        .await?;
        Ok(FakeRunway { server, core })
    }
}

fn error(status: u16, message: &str) -> Response {
    json_response(status, &json!({"error": message}))
}

/// Bearer key and version header, as Runway checks them.
fn refused(core: &Core, headers: &HeaderMap) -> Option<Response> {
    if !bearer_ok(headers, &core.api_key) {
        return Some(error(401, "Invalid API key"));
    }
    match headers
        .get("x-runway-version")
        .and_then(|v| v.to_str().ok())
    {
        Some(API_VERSION) => None,
        Some(_) => Some(error(400, "Unsupported API version")),
        None => Some(error(400, "Missing X-Runway-Version header")),
    }
}

async fn task(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    core.count_request();
    if let Some(resp) = refused(&core, &headers) {
        return resp;
    }
    let (step, _script) = match core.poll(&id).await {
        Polled::Render(step, script) => (step, script),
        Polled::Error {
            status,
            retry_after,
        } => return with_retry_after(error(status, status_message(status)), retry_after),
        Polled::Unknown => return error(404, "Task not found"),
        Polled::Respond(resp) => return resp,
    };
    let mut t = json!({"id": id, "createdAt": "2025-01-01T00:00:00.000Z"});
    let set = |t: &mut Value, k: &str, v: Value| t[k] = v;
    match step {
        Step::Queued => set(&mut t, "status", json!("PENDING")),
        Step::Running | Step::Hang(_) => {
            set(&mut t, "status", json!("RUNNING"));
            set(&mut t, "progress", json!(0.5));
        }
        Step::Succeeded | Step::OutputsGone => {
            set(&mut t, "status", json!("SUCCEEDED"));
            set(&mut t, "output", json!([core.file_url(&id, "video.mp4")]));
        }
        Step::Failed(reason) | Step::Filtered(reason) => {
            set(&mut t, "status", json!("FAILED"));
            set(&mut t, "failure", json!(reason));
            set(&mut t, "failureCode", json!("INTERNAL.BAD_OUTPUT.CODE01"));
        }
        Step::Canceled => set(&mut t, "status", json!("CANCELLED")),
        Step::UnknownStatus(s) => set(&mut t, "status", json!(s)),
        Step::HttpError { .. } | Step::Malformed | Step::Raw { .. } => {}
    }
    json_response(200, &t)
}

/// `DELETE /v1/tasks/{id}`: Runway cancels a running task (or deletes a
/// finished one) and answers 204 without a body.
async fn cancel(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    core.count_request();
    if let Some(resp) = refused(&core, &headers) {
        return resp;
    }
    if !core.cancel(&id) {
        return error(404, "Task not found");
    }
    axum::http::StatusCode::NO_CONTENT.into_response()
}

async fn create(
    State(core): State<Arc<Core>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    detached(async move {
        core.count_request();
        if let Some(resp) = refused(&core, &headers) {
            return resp;
        }
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return error(400, "Invalid JSON body");
        };
        let Some(prompt) = body.get("promptText").and_then(Value::as_str) else {
            return error(400, "promptText: Required");
        };
        let image_to_video = uri.path().ends_with("image_to_video");
        if image_to_video && body.get("promptImage").is_none() {
            return error(400, "promptImage: Required");
        }
        // What sdk-python's create params mark `Required` per model.
        let Some(model) = body.get("model").and_then(Value::as_str) else {
            return error(400, "model: Required");
        };
        let needs_ratio = ["gen4.5", "gen4_turbo", "veo3", "veo3.1", "veo3.1_fast"];
        if needs_ratio.contains(&model) && body.get("ratio").is_none() {
            return error(400, "ratio: Required");
        }
        if ["gen4.5", "veo3"].contains(&model) && body.get("duration").is_none() {
            return error(400, "duration: Required");
        }
        if model == "gen4_turbo" && !image_to_video {
            return error(400, "model: Invalid enum value for text_to_video");
        }
        let (after, lost) = match core.creates.admit(&core.shutdown).await {
            Admit::Refuse {
                status,
                retry_after,
            } => return with_retry_after(error(status, status_message(status)), retry_after),
            Admit::ShuttingDown => return error(503, "shutting down"),
            Admit::Proceed { after, lost } => (after, lost),
        };
        let id = uuid_like(core.next_number());
        core.register_created(&id);
        core.creates.record(CreateRecord {
            path: uri.path().to_owned(),
            headers: header_pairs(&headers),
            body: body.clone(),
            reference: prompt.to_owned(),
            job_id: id.clone(),
        });
        Creates::finish(
            after,
            lost,
            json_response(200, &json!({"id": id})),
            &core.shutdown,
        )
        .await
    })
    .await
}
