//! The HTTP surface: `/healthz`, `/readyz`, `/metrics` and the admin API
//! under `/v1` (bearer token, compared in constant time; off without one).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clawcut_core::WebhookAuth;
use clawcut_store::{JobFilter, Resolution};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::exit::{self, ExitCode, Fatal};
use crate::run::{Shared, one_pass, require_loopback_or_token};
use crate::worker::{PassOptions, Phase, error_chain, now_ms};

/// Admin request bodies are tiny JSON objects.
const MAX_BODY: usize = 16 * 1024;
/// Webhook bodies carry a whole job description (outputs, logs).
const MAX_WEBHOOK_BODY: usize = 256 * 1024;

pub async fn bind(listen: &str, has_token: bool) -> Result<TcpListener, Fatal> {
    require_loopback_or_token(listen, has_token)?;
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind http.listen {listen}"))
        .exit_with(exit::UNAVAILABLE)
}

pub fn router(shared: Arc<Shared>) -> Router {
    let mut app = Router::new()
        .route(
            "/webhooks/{provider}",
            post(webhook).layer(DefaultBodyLimit::max(MAX_WEBHOOK_BODY)),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if shared.admin_token.is_some() {
        app = app
            .route("/v1/reconcile", post(reconcile))
            .route("/v1/jobs", get(list_jobs))
            .route("/v1/jobs/{id}/resolve", post(resolve));
    }
    app.layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut phase = shared.phase.clone();
    let app = router(shared);
    let stop = async move {
        let _ = phase.wait_for(|p| *p == Phase::Abort).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        warn!(error = %e, "http server stopped");
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({ "status": "ok" }))).into_response()
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let (ready, body) = readiness(&s).await;
    // Log changes only: probes come every few seconds.
    let now = if ready { 1 } else { 2 };
    if s.last_readiness.swap(now, Ordering::Relaxed) != now {
        if ready {
            info!("readiness: ready");
        } else {
            warn!(reason = %body["reason"], "readiness: not ready");
        }
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn readiness(s: &Shared) -> (bool, serde_json::Value) {
    let unready = |reason: String| (false, json!({ "status": "unready", "reason": reason }));
    if *s.phase.borrow() != Phase::Running {
        return unready("shutting down".into());
    }
    match tokio::time::timeout(Duration::from_secs(2), s.worker.store().ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return unready(format!("database: {}", error_chain(&e))),
        Err(_) => return unready("database: no answer within 2s".into()),
    }
    let cfg = s.config();
    let last = s.last_pass_ok_at.load(Ordering::Relaxed);
    // A pass may legitimately run long (downloads); three intervals plus the
    // lease TTL is the longest a healthy loop goes without finishing one.
    // Before the first pass, the clock starts at startup (on_startup = false
    // leaves a whole interval before it).
    let window = cfg.reconcile.interval.0 * 3 + cfg.reconcile.lease_ttl.0;
    let age = now_ms() - if last == 0 { s.started_at } else { last };
    if age > window.as_millis() as i64 && last == 0 {
        let err = s
            .last_pass_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        return unready(format!(
            "no pass has finished since startup{}",
            err.map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        ));
    }
    if age > window.as_millis() as i64 {
        let err = s
            .last_pass_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        return unready(format!(
            "last successful pass {}s ago{}",
            age / 1000,
            err.map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        ));
    }
    (true, json!({ "status": "ready", "last_pass_age_ms": age }))
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.worker.metrics.render(),
    )
        .into_response()
}

/// `Some(answer)` when the request must be refused.
fn refuse_unauthorized(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = s.admin_token.as_deref() else {
        return Some(error(StatusCode::NOT_FOUND, "admin api is off"));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        None
    } else {
        Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({ "error": "missing or wrong bearer token" })),
            )
                .into_response(),
        )
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileBody {
    ai_job_id: Option<String>,
}

async fn reconcile(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = refuse_unauthorized(&s, &headers) {
        return r;
    }
    let req: ReconcileBody = if body.is_empty() {
        ReconcileBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("body must be {{}} or {{\"ai_job_id\": \"...\"}}: {e}"),
                );
            }
        }
    };
    let opts = PassOptions {
        limit: None,
        force: req.ai_job_id.is_some(),
        only_job: req.ai_job_id.clone(),
    };
    info!(job = ?req.ai_job_id, "admin api: reconcile requested");
    // Its own task: a client that hangs up must not cut a pass in half.
    let pass = tokio::spawn({
        let s = s.clone();
        async move { one_pass(&s, &opts).await }
    });
    let result = match pass.await {
        Ok(r) => r,
        Err(e) => Err(format!("reconcile task failed: {e}")),
    };
    match result {
        Ok(summary) => {
            if let (Some(id), 0) = (&req.ai_job_id, summary.claimed) {
                let why = match s.worker.store().get_job(id).await {
                    Ok(None) => "no such job".to_owned(),
                    Ok(Some(j)) => format!(
                        "not claimable now (status {}, leased until {:?})",
                        j.status, j.lease_expires_at
                    ),
                    Err(e) => error_chain(&e),
                };
                return (
                    StatusCode::CONFLICT,
                    Json(json!({ "claimed": 0, "jobs": [], "reason": why })),
                )
                    .into_response();
            }
            (StatusCode::OK, Json(summary)).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<String>,
}

async fn list_jobs(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Some(r) = refuse_unauthorized(&s, &headers) {
        return r;
    }
    // Parsed by hand so every mistake gets a JSON answer.
    let filter = match q.state.as_deref() {
        Some("stranded") => JobFilter::Stranded,
        Some("needs_operator") => JobFilter::NeedsOperator,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("?state= must be stranded or needs_operator, not {other:?}"),
            );
        }
    };
    let limit = match q.limit.as_deref().map(str::parse::<u32>) {
        None => 100,
        Some(Ok(n)) => n.min(1000),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "?limit= must be a whole number"),
    };
    let rules = s.worker.settings().rules.clone();
    let now = now_ms();
    match s.worker.store().list_jobs(filter, now, &rules, limit).await {
        Ok(jobs) => {
            let rows: Vec<_> = jobs
                .iter()
                .map(|j| crate::commands::job_json(j, now))
                .collect();
            (
                StatusCode::OK,
                Json(json!({ "state": q.state, "jobs": rows })),
            )
                .into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, error_chain(&e)),
    }
}

/// `{"action": "resubmit"|"fail"}`, also spelled `"decision"` or
/// `"resolution"`, or the CLI's flags `{"resubmit": true}` / `{"fail": true}`;
/// `operator` names who decided (for the audit event).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    #[serde(alias = "decision", alias = "resolution")]
    action: Option<String>,
    #[serde(default)]
    resubmit: bool,
    #[serde(default)]
    fail: bool,
    operator: Option<String>,
}

impl ResolveBody {
    fn resolution(&self) -> Result<Resolution, String> {
        match (self.action.as_deref(), self.resubmit, self.fail) {
            (Some("resubmit"), false, false) | (None, true, false) => Ok(Resolution::Resubmit),
            (Some("fail"), false, false) | (None, false, true) => Ok(Resolution::Fail),
            (Some(other), false, false) => Err(format!("action must be resubmit or fail, not {other:?}")),
            _ => Err("say exactly one of {\"action\": \"resubmit\"|\"fail\"}, {\"resubmit\": true}, {\"fail\": true}".into()),
        }
    }
}

async fn resolve(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = refuse_unauthorized(&s, &headers) {
        return r;
    }
    let req: ResolveBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"action\": \"resubmit\"|\"fail\"}}: {e}"),
            );
        }
    };
    let resolution = match req.resolution() {
        Ok(r) => r,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let operator = format!("api:{}", req.operator.as_deref().unwrap_or("admin"));
    match s
        .worker
        .store()
        .resolve(&id, resolution, &operator, now_ms())
        .await
    {
        Ok(status) => (
            StatusCode::OK,
            Json(json!({ "ai_job_id": id, "status": status.as_str() })),
        )
            .into_response(),
        Err(e @ clawcut_store::StoreError::NotResolvable { .. }) => {
            error(StatusCode::CONFLICT, error_chain(&e))
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, error_chain(&e)),
    }
}

/// `POST /webhooks/{provider}`: a hint that a job changed. Authenticated by
/// the provider's signature where it has one, else by `?token=` compared in
/// constant time. It only makes the job due; the daemon still polls for the
/// truth, so a forged or replayed webhook costs at most one extra poll.
async fn webhook(
    State(s): State<Arc<Shared>>,
    Path(provider): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
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
    let now_unix = now_ms() / 1000;
    match h.provider.verify_webhook(&pairs, &body, secret, now_unix) {
        WebhookAuth::Valid => {}
        WebhookAuth::Invalid => return error(StatusCode::UNAUTHORIZED, "bad webhook signature"),
        WebhookAuth::Unsigned => {
            let given = q.get("token").map(String::as_str).unwrap_or("");
            if !bool::from(given.as_bytes().ct_eq(secret.as_bytes())) {
                return error(StatusCode::UNAUTHORIZED, "missing or wrong webhook token");
            }
        }
    }
    let Some(pid) = h.provider.webhook_job_id(&body) else {
        return error(StatusCode::BAD_REQUEST, "the webhook body names no job");
    };
    match s.worker.store().make_due(&provider, &pid, now_ms()).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Resolution, String> {
        serde_json::from_str::<ResolveBody>(body)
            .map_err(|e| e.to_string())?
            .resolution()
    }

    #[test]
    fn resolve_bodies_in_every_spelling() {
        for (body, want) in [
            (r#"{"action":"resubmit"}"#, Resolution::Resubmit),
            (r#"{"decision":"fail"}"#, Resolution::Fail),
            (
                r#"{"resolution":"resubmit","operator":"bob"}"#,
                Resolution::Resubmit,
            ),
            (r#"{"resubmit":true}"#, Resolution::Resubmit),
            (r#"{"fail":true}"#, Resolution::Fail),
        ] {
            assert_eq!(parse(body), Ok(want), "{body}");
        }
        for bad in [
            r#"{}"#,
            r#"{"action":"retry"}"#,
            r#"{"resubmit":true,"fail":true}"#,
            r#"{"action":"fail","fail":true}"#,
            r#"{"x":1}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
