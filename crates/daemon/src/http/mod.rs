//! The HTTP surface: probes and metrics (`probes`), the admin API under
//! `/v1` (`admin`: bearer token, checked by a layer before any handler or
//! body extractor runs; off without one), and provider callbacks
//! (`webhooks`). The accept loop (`serve`) bounds connections, heads and
//! bodies. The server closes when the lifecycle reaches `Stopped`, after the
//! scheduler drained, so probes keep answering (503, "shutting down")
//! during the drain.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::app::require_loopback_or_token;
use crate::exit::{self, ExitCode, Fatal};
use crate::runtime::lifecycle::Phase;
use crate::state::State;

mod admin;
pub mod ops;
mod probes;
pub mod serve;
mod webhook_limit;
mod webhooks;

/// Admin request bodies are tiny JSON objects.
const MAX_BODY: usize = 16 * 1024;
/// Webhook bodies carry a whole job description (outputs, logs).
const MAX_WEBHOOK_BODY: usize = 256 * 1024;

pub async fn bind(
    listen: &str,
    token_env: &str,
    token: Option<&str>,
) -> Result<TcpListener, Fatal> {
    require_loopback_or_token(listen, token_env, token)?;
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
        let admin = Router::new()
            .route("/v1/reconcile", post(admin::reconcile))
            .route("/v1/jobs", get(admin::list_jobs))
            .route("/v1/jobs/{id}/resolve", post(admin::resolve))
            .route("/v1/jobs/{id}/cancel", post(admin::cancel))
            .route("/v1/providers/{name}/resume", post(admin::resume_provider))
            // A route layer runs after routing and before the handler's
            // extractors: a wrong token is refused before one body byte is
            // read, whatever the body's size or pace.
            .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
        app = app.merge(admin);
    }
    if let Some(panel) = ops::routes(&state) {
        app = app.merge(panel);
    }
    let limiter = webhook_limit::WebhookLimiter::new(state.config().http.webhooks_per_minute);
    app.layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(Extension(Arc::new(limiter)))
        .with_state(state)
}

pub async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut phases = state.lifecycle.phases();
    let cfg = state.config();
    let limits = serve::Limits {
        header_timeout: cfg.http.header_timeout.0,
        max_connections: cfg.http.max_connections,
    };
    let app = router(state);
    let stop = async move { phases.reached(Phase::Stopped).await };
    serve::serve_with(listener, app, limits, stop).await;
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    let msg = msg.into();
    let msg = clawcut_core::redact::redact(&msg);
    (status, Json(json!({ "error": msg }))).into_response()
}

/// Whether `given` is `expected`, in time that depends on neither's length
/// nor content: both are hashed first, so the compare is always 32 bytes
/// against 32 bytes (comparing the raw slices returns early on a length
/// mismatch, which tells an attacker the token's length).
pub fn secret_matches(given: &[u8], expected: &[u8]) -> bool {
    let (g, e) = (Sha256::digest(given), Sha256::digest(expected));
    bool::from(g.as_slice().ct_eq(e.as_slice()))
}

/// Whether the request carries the admin bearer token.
fn bearer_ok(s: &State, headers: &HeaderMap) -> bool {
    let Some(expected) = s.admin_token.as_deref() else {
        return false;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // A missing header is compared too, so it takes the same time.
    let ok = secret_matches(given.unwrap_or("").as_bytes(), expected.as_bytes());
    ok && given.is_some()
}

async fn require_admin(
    axum::extract::State(s): axum::extract::State<Arc<State>>,
    req: Request,
    next: Next,
) -> Response {
    if s.admin_token.is_none() {
        return error(StatusCode::NOT_FOUND, "admin api is off");
    }
    if !bearer_ok(&s, req.headers()) {
        // The panel's read-only token may read the operator's lists, and
        // is refused (403, not 401: it is a known token) everything else.
        if ops::auth::identify(&s, req.headers()).is_some_and(|op| {
            op.role == ops::auth::Role::ReadOnly && matches!(op.via, ops::auth::Via::Bearer)
        }) {
            if req.method() == axum::http::Method::GET {
                return next.run(req).await;
            }
            return error(
                StatusCode::FORBIDDEN,
                "the read-only token cannot act: use the admin token",
            );
        }
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({ "error": "missing or wrong bearer token" })),
        )
            .into_response();
    }
    next.run(req).await
}

/// A request body read within `http.request_timeout` (and within the
/// route's body limit): a client that sent its head and then trickles or
/// withholds the body gets 408 instead of holding a connection.
pub(super) struct TimedBody(pub axum::body::Bytes);

impl FromRequest<Arc<State>> for TimedBody {
    type Rejection = Response;

    async fn from_request(req: Request, s: &Arc<State>) -> Result<Self, Response> {
        let within = s.config().http.request_timeout.0;
        match tokio::time::timeout(within, axum::body::Bytes::from_request(req, s)).await {
            Ok(Ok(b)) => Ok(TimedBody(b)),
            Ok(Err(rejection)) => Err(rejection.into_response()),
            Err(_) => Err(error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {}",
                    humantime::format_duration(within)
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::secret_matches;

    #[test]
    fn secrets_match_only_when_equal_whatever_the_lengths() {
        assert!(secret_matches(
            b"adm-token-0123456789",
            b"adm-token-0123456789"
        ));
        assert!(!secret_matches(
            b"adm-token-012345678",
            b"adm-token-0123456789"
        ));
        assert!(!secret_matches(
            b"adm-token-01234567890",
            b"adm-token-0123456789"
        ));
        assert!(!secret_matches(b"", b"adm-token-0123456789"));
        assert!(!secret_matches(
            b"bdm-token-0123456789",
            b"adm-token-0123456789"
        ));
    }
}
