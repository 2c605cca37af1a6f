//! `POST /v1/videos` of the fake OpenAI: validates the body like the real
//! API, then makes the video under the shared create control.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::plumbing::{bearer_ok, lock};
use super::{FakeState, openai_error, status_error, unauthorized, video_json};
use crate::fake_common::{Admit, CreateRecord, Creates, detached, header_pairs};

pub(super) async fn create(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    detached(async move {
        state.total_requests.fetch_add(1, Ordering::SeqCst);
        if !bearer_ok(&headers, &state.api_key) {
            return unauthorized();
        }
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return openai_error(
                400,
                "We could not parse the JSON body of your request.",
                None,
            );
        };
        let Some(prompt) = body.get("prompt").and_then(Value::as_str) else {
            return openai_error(
                400,
                "Missing required parameter: 'prompt'.",
                Some("missing_required_parameter"),
            );
        };
        if body.get("seconds").is_some_and(|s| !s.is_string()) {
            return openai_error(
                400,
                "Invalid type for 'seconds': expected a string.",
                Some("invalid_type"),
            );
        }
        let (after, lost) = match state.creates.admit(&state.shutdown).await {
            Admit::Refuse {
                status,
                retry_after,
            } => {
                let mut resp = status_error(status, "Request failed");
                if let Some(secs) = retry_after {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                return resp;
            }
            Admit::ShuttingDown => return openai_error(503, "shutting down", None),
            Admit::Proceed { after, lost } => (after, lost),
        };
        let (id, script) = {
            let mut jobs = lock(&state.jobs);
            jobs.next_id += 1;
            let id = format!("video_{:032x}", jobs.next_id);
            let script = jobs.script(&id).unwrap_or_default();
            jobs.scripts.insert(id.clone(), script.clone());
            (id, script)
        };
        let reference = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(prompt)
            .to_owned();
        state.creates.record(CreateRecord {
            path: "/v1/videos".into(),
            headers: header_pairs(&headers),
            body: body.clone(),
            reference,
            job_id: id.clone(),
        });
        let answer = axum::Json(video_json(&id, "queued", 0, &script, Value::Null)).into_response();
        Creates::finish(after, lost, answer, &state.shutdown).await
    })
    .await
}
