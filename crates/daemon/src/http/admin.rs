//! The admin API under `/v1`: a one-shot reconcile, the operator's view of
//! stranded and `needs_operator` jobs, the operator's decision, and an
//! operator's cancel. The bearer token is checked by the router's layer
//! (`super::require_admin`) before any of these runs or reads a body.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clawcut_store::{JobFilter, Resolution};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use super::{TimedBody, error};
use crate::report::{error_chain, job_json};
use crate::state::State;
use crate::worker::ClaimScope;
use crate::worker::cancel::{CancelError, cancel_job};
use crate::worker::pass::{PassOptions, run_once};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReconcileBody {
    ai_job_id: Option<String>,
}

/// A body that may be empty (then the defaults) or JSON of the route's
/// shape; anything else is refused with a message naming the shape (a 400).
fn optional_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    shape: &str,
) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| format!("body must be {{}} or {shape}: {e}"))
}

pub(super) async fn reconcile(
    Extract(s): Extract<Arc<State>>,
    TimedBody(body): TimedBody,
) -> Response {
    let req: ReconcileBody = match optional_body(&body, r#"{"ai_job_id": "..."}"#) {
        Ok(b) => b,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let opts = PassOptions {
        limit: None,
        scope: ClaimScope {
            force: req.ai_job_id.is_some(),
            only_job: req.ai_job_id.clone(),
        },
    };
    info!(job = ?req.ai_job_id, "admin api: reconcile requested");
    // Its own task, tracked so shutdown awaits it: a client that hangs up
    // must not cut a pass in half.
    let pass = s.tasks.spawn({
        let worker = s.worker.clone();
        let phases = s.lifecycle.phases();
        async move { run_once(&worker, &opts, &phases).await }
    });
    let result = match pass.await {
        Ok(r) => r.map_err(|e| error_chain(&e)),
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
pub(super) struct ListQuery {
    state: Option<String>,
    limit: Option<String>,
}

pub(super) async fn list_jobs(
    Extract(s): Extract<Arc<State>>,
    Query(q): Query<ListQuery>,
) -> Response {
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
    let now = s.clock.now_ms();
    match s.worker.store().list_jobs(filter, now, &rules, limit).await {
        Ok(jobs) => {
            let rows: Vec<_> = jobs.iter().map(|j| job_json(j, now)).collect();
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
pub(super) struct ResolveBody {
    #[serde(alias = "decision", alias = "resolution")]
    action: Option<String>,
    #[serde(default)]
    resubmit: bool,
    #[serde(default)]
    fail: bool,
    operator: Option<String>,
    reason: Option<String>,
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

pub(super) async fn resolve(
    Extract(s): Extract<Arc<State>>,
    Path(id): Path<String>,
    TimedBody(body): TimedBody,
) -> Response {
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
        .resolve(
            &id,
            resolution,
            &operator,
            req.reason.as_deref(),
            s.clock.now_ms(),
        )
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

/// `{}` or `{"reason": "...", "operator": "..."}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CancelBody {
    reason: Option<String>,
    operator: Option<String>,
}

pub(super) async fn cancel(
    Extract(s): Extract<Arc<State>>,
    Path(id): Path<String>,
    TimedBody(body): TimedBody,
) -> Response {
    let req: CancelBody = match optional_body(&body, r#"{"reason": "...", "operator": "..."}"#) {
        Ok(b) => b,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let operator = format!("api:{}", req.operator.as_deref().unwrap_or("admin"));
    info!(job = %id, %operator, "admin api: cancel requested");
    // Its own task, tracked so shutdown awaits it: a client that hangs up
    // after the provider accepted the cancel must not leave the local
    // cancel undone.
    let now = s.clock.now_ms();
    let task = s.tasks.spawn({
        let worker = s.worker.clone();
        let id = id.clone();
        async move {
            cancel_job(
                &**worker.store(),
                |name| worker.provider(name).map(|h| h.provider.clone()),
                &id,
                &operator,
                req.reason.as_deref(),
                now,
            )
            .await
        }
    });
    match task.await {
        Ok(Ok(r)) => (StatusCode::OK, Json(r.to_json())).into_response(),
        Ok(Err(e @ CancelError::NotFound(_))) => error(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(
            e @ (CancelError::Final { .. }
            | CancelError::NotOurs { .. }
            | CancelError::OutcomeUnknown { .. }),
        )) => error(StatusCode::CONFLICT, e.to_string()),
        Ok(Err(CancelError::Store(e))) => error(StatusCode::SERVICE_UNAVAILABLE, error_chain(&e)),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cancel task failed: {e}"),
        ),
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

/// `{}` or `{"operator": "..."}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResumeBody {
    operator: Option<String>,
}

/// `POST /v1/providers/{name}/resume`: as `clawcut-worker resume-provider`.
/// 409 when the provider is not paused.
pub(super) async fn resume_provider(
    Extract(s): Extract<Arc<State>>,
    Path(name): Path<String>,
    TimedBody(body): TimedBody,
) -> Response {
    let req: ResumeBody = match optional_body(&body, r#"{"operator": "..."}"#) {
        Ok(b) => b,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let operator = format!("api:{}", req.operator.as_deref().unwrap_or("admin"));
    let store = s.worker.store().clone();
    match crate::worker::health::resume_by_operator(&*store, &name, &operator).await {
        Ok(Some(pause)) => {
            // This process's board at once; other replicas at their next claim.
            s.worker.refresh_pauses().await;
            let now = s.clock.now_ms();
            (
                StatusCode::OK,
                Json(json!({
                    "provider": name,
                    "resumed": true,
                    "operator": operator,
                    "was": crate::report::pause_json(&pause, now),
                })),
            )
                .into_response()
        }
        Ok(None) => error(
            StatusCode::CONFLICT,
            format!("provider {name:?} is not paused"),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, error_chain(&e)),
    }
}
