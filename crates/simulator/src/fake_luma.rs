//! A fake Luma Dream Machine API on 127.0.0.1:
//! `GET /dream-machine/v1/generations/{id}`,
//! `POST /dream-machine/v1/generations/video` (the create, with `model`
//! required, as lumalabs/lumaai-python's `VideoResource.create` has it) and
//! `GET /dream-machine/v1/generations` (the list, always empty here; a POST
//! there is 405, as on Luma), bearer key checked, Luma's generation JSON
//! (`state`, `assets`, `failure_reason`) and `{"detail": ...}` errors. Assets are served without auth at `/files/{key}/...`, like Luma's
//! CDN. Luma has no cancel state: [`Step::Canceled`] renders `failed`.
//! Creates are counted by `prompt` (Luma has no idempotency key). See
//! [`crate::fake_common`] for scripts and create control.

use std::io;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::fake_common::{
    Admit, Core, Creates, Polled, core_accessors, create_control, detached, file_route,
    header_pairs, start_core, status_message, uuid_like, with_retry_after,
};
pub use crate::fake_common::{CreateRecord, CreateStep, Script, Step};
use crate::fake_openai::plumbing::{Server, bearer_ok, json_response};

/// The fake server. Dropping it shuts it down.
pub struct FakeLuma {
    server: Server,
    core: Arc<Core>,
}

core_accessors!(FakeLuma);
create_control!(FakeLuma, core.creates);

impl FakeLuma {
    /// # Panics
    /// If no loopback port can be bound; see [`FakeLuma::try_start`].
    pub async fn start(api_key: &str) -> FakeLuma {
        match FakeLuma::try_start(api_key).await {
            Ok(fake) => fake,
            Err(e) => panic!("start fake luma server: {e}"),
        }
    }

    pub async fn try_start(api_key: &str) -> io::Result<FakeLuma> {
        let (server, core) = start_core(api_key, None, |core| {
            Router::new()
                .route("/dream-machine/v1/generations/{id}", get(generation))
                .route("/dream-machine/v1/generations/video", post(create))
                .route("/dream-machine/v1/generations", get(list))
                .route("/files/{key}/{name}", get(file_route))
                .fallback(|| async { error(404, "Not Found") })
                .with_state(core)
        })
        .await?;
        Ok(FakeLuma { server, core })
    }
}

fn error(status: u16, detail: &str) -> Response {
    json_response(status, &json!({"detail": detail}))
}

fn generation_json(id: &str, state: &str) -> Value {
    json!({
        "id": id,
        "generation_type": "video",
        "state": state,
        "failure_reason": null,
        "created_at": "2025-01-01T00:00:00.000Z",
        "model": "ray-2",
        "assets": {"video": null, "image": null, "progress_video": null},
        "request": {"prompt": "a fake video", "model": "ray-2"},
    })
}

async fn generation(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    core.count_request();
    if !bearer_ok(&headers, &core.api_key) {
        return error(401, "Invalid API key");
    }
    let (step, script) = match core.poll(&id).await {
        Polled::Render(step, script) => (step, script),
        Polled::Error {
            status,
            retry_after,
        } => return with_retry_after(error(status, status_message(status)), retry_after),
        Polled::Unknown => return error(404, "Generation not found"),
        Polled::Respond(resp) => return resp,
    };
    let state = match &step {
        Step::Queued => "queued",
        Step::Running | Step::Hang(_) => "dreaming",
        Step::Succeeded | Step::OutputsGone => "completed",
        Step::Failed(_) | Step::Filtered(_) | Step::Canceled => "failed",
        Step::UnknownStatus(s) => s.as_str(),
        Step::HttpError { .. } | Step::Malformed | Step::Raw { .. } => "dreaming",
    };
    let mut g = generation_json(&id, state);
    match step {
        Step::Succeeded | Step::OutputsGone => {
            g["assets"]["video"] = json!(core.file_url(&id, "video.mp4"));
            if script.thumbnail_bytes.is_some() {
                g["assets"]["image"] = json!(core.file_url(&id, "thumb.jpg"));
            }
        }
        Step::Failed(reason) | Step::Filtered(reason) => g["failure_reason"] = json!(reason),
        Step::Canceled => g["failure_reason"] = json!("Generation was cancelled"),
        _ => {}
    }
    json_response(200, &g)
}

/// `GET /generations`: Luma's list; the fake lists nothing.
async fn list(State(core): State<Arc<Core>>, headers: HeaderMap) -> Response {
    core.count_request();
    if !bearer_ok(&headers, &core.api_key) {
        return error(401, "Invalid API key");
    }
    json_response(
        200,
        &json!({"generations": [], "has_more": false, "count": 0, "limit": 10, "offset": 0}),
    )
}

async fn create(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    detached(async move {
        core.count_request();
        if !bearer_ok(&headers, &core.api_key) {
            return error(401, "Invalid API key");
        }
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return error(400, "Invalid JSON body");
        };
        let Some(prompt) = body.get("prompt").and_then(Value::as_str) else {
            return error(400, "prompt is required");
        };
        if body.get("model").and_then(Value::as_str).is_none() {
            return error(400, "model is required");
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
            path: "/dream-machine/v1/generations/video".into(),
            headers: header_pairs(&headers),
            body: body.clone(),
            reference: prompt.to_owned(),
            job_id: id.clone(),
        });
        let answer = json_response(201, &generation_json(&id, "queued"));
        Creates::finish(after, lost, answer, &core.shutdown).await
    })
    .await
}
