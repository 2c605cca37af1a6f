//! `POST /webhooks/{provider}`: a provider's hint that a job changed.

use std::sync::Arc;

use axum::extract::{Path, Query, State as Extract};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use clawcut_core::WebhookAuth;
use serde_json::json;

use super::webhook_limit::WebhookLimiter;
use super::{TimedBody, error, secret_matches};
use crate::report::error_chain;
use crate::state::State;

/// How long a delivery id is remembered: well past the 5 minutes a
/// signature's timestamp is accepted for, so a replay is refused by one or
/// the other.
const DELIVERY_MEMORY_MS: i64 = 60 * 60 * 1000;

/// `POST /webhooks/{provider}`: a hint that a job changed. Authenticated by
/// the provider's signature where it has one, else by `?token=` compared in
/// constant time. It only makes the job due; the daemon still polls for the
/// truth, so a forged or replayed webhook costs at most one extra poll.
pub(super) async fn webhook(
    Extract(s): Extract<Arc<State>>,
    Extension(limiter): Extension<Arc<WebhookLimiter>>,
    Path(provider): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    TimedBody(body): TimedBody,
) -> Response {
    let Some(h) = s.worker.provider(&provider) else {
        return error(StatusCode::NOT_FOUND, "no such provider");
    };
    let Some(secret) = h.webhook_secret.as_deref() else {
        return error(StatusCode::NOT_FOUND, "webhooks are off for this provider");
    };
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_owned())))
        .collect();
    let now_unix = s.clock.now_ms() / 1000;
    let signed = match h.provider.verify_webhook(&pairs, &body, secret, now_unix) {
        WebhookAuth::Valid => true,
        WebhookAuth::Invalid => return error(StatusCode::UNAUTHORIZED, "bad webhook signature"),
        WebhookAuth::Unsigned => {
            let given = q.get("token").map(String::as_str).unwrap_or("");
            if !secret_matches(given.as_bytes(), secret.as_bytes()) {
                return error(StatusCode::UNAUTHORIZED, "missing or wrong webhook token");
            }
            false
        }
    };
    let Some(pid) = h.provider.webhook_job_id(&body) else {
        return error(StatusCode::BAD_REQUEST, "the webhook body names no job");
    };
    let now = s.clock.now_ms();
    // A signed delivery's id is covered by its signature: the same id again
    // is a replay (or the provider's retry of one we took), answered 200 so
    // the provider stops, without a write to ai_jobs.
    if let Some(delivery) = headers.get("webhook-id").and_then(|v| v.to_str().ok())
        && signed
    {
        match s
            .worker
            .store()
            .note_webhook(&provider, delivery, now, now - DELIVERY_MEMORY_MS)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return (
                    StatusCode::OK,
                    Json(json!({ "provider_job_id": pid, "duplicate": true })),
                )
                    .into_response();
            }
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, error_chain(&e)),
        }
    }
    if let Err(wait_ms) = limiter.take(&provider, now) {
        let secs = (wait_ms / 1000 + 1).to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs)],
            Json(json!({ "error": "too many webhooks for this provider; retry later" })),
        )
            .into_response();
    }
    match s.worker.store().make_due(&provider, &pid, now).await {
        Ok(due) => {
            // Already due counts too: the loop may be asleep for an interval.
            s.wake_soon();
            (
                StatusCode::ACCEPTED,
                Json(json!({ "provider_job_id": pid, "made_due": due })),
            )
                .into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, error_chain(&e)),
    }
}
