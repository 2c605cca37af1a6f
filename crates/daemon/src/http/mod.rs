//! The HTTP surface: probes and metrics (`probes`), the admin API under
//! `/v1` (`admin`: bearer token, compared in constant time; off without
//! one), and provider callbacks (`webhooks`). The server closes when the
//! lifecycle reaches `Stopped`, after the scheduler drained, so probes keep
//! answering (503, "shutting down") during the drain.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tracing::warn;

use crate::app::require_loopback_or_token;
use crate::exit::{self, ExitCode, Fatal};
use crate::runtime::lifecycle::Phase;
use crate::state::State;

mod admin;
mod probes;
mod webhooks;

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

pub fn router(state: Arc<State>) -> Router {
    let mut app = Router::new()
        .route(
            "/webhooks/{provider}",
            post(webhooks::webhook).layer(DefaultBodyLimit::max(MAX_WEBHOOK_BODY)),
        )
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics));
    if state.admin_token.is_some() {
        app = app
            .route("/v1/reconcile", post(admin::reconcile))
            .route("/v1/jobs", get(admin::list_jobs))
            .route("/v1/jobs/{id}/resolve", post(admin::resolve))
            .route("/v1/jobs/{id}/cancel", post(admin::cancel));
    }
    app.layer(DefaultBodyLimit::max(MAX_BODY)).with_state(state)
}

pub async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut phases = state.lifecycle.phases();
    let app = router(state);
    let stop = async move { phases.reached(Phase::Stopped).await };
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

/// `Some(answer)` when the request must be refused.
fn refuse_unauthorized(s: &State, headers: &HeaderMap) -> Option<Response> {
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
