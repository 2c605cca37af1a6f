//! The operator panel at `/ops` (SPEC, "HTTP", the panel paragraph):
//! server-rendered pages over the same store and worker the admin API
//! uses, plain form POSTs for every action (they work without
//! JavaScript), and one small script that refreshes a page's `main`
//! while the tab is visible.
//!
//! Start at [`routes`]: which routes need a signed-in operator
//! (`auth::require_operator`, deny by default), which act (each calls
//! `Operator::check_action` first). `pages` renders, `actions` and `bulk`
//! change things, `media` serves a job's files, `stats` computes the
//! overview's spreads.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::state::State;

mod actions;
pub mod auth;
mod bulk;
mod media;
mod pages;
mod stats;
mod view;

/// What the panel keeps between requests, in this process's memory.
#[derive(Debug, Default)]
pub struct Panel {
    pub sessions: auth::Sessions,
    pub throttle: auth::Throttle,
    pub bulks: bulk::Bulks,
}

const CSS: &str = include_str!("assets/panel.css");
const JS: &str = include_str!("assets/panel.js");

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// The headers of every `/ops` answer: the CSP, no sniffing, no framing,
/// no referrer outside.
async fn harden(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(view::CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// The panel's routes; `None` when neither token is configured (the panel
/// is off, like the admin API).
pub fn routes(state: &Arc<State>) -> Option<Router<Arc<State>>> {
    if state.admin_token.is_none() && state.readonly_token.is_none() {
        return None;
    }
    let signed_in = Router::new()
        .route("/ops", get(pages::overview))
        .route("/ops/", get(pages::overview))
        .route("/ops/jobs", get(pages::jobs))
        .route("/ops/inbox", get(pages::inbox))
        .route("/ops/jobs/{id}", get(pages::job))
        .route("/ops/jobs/{id}/video", get(media::video))
        .route("/ops/jobs/{id}/thumbnail", get(media::thumbnail))
        .route("/ops/jobs/{id}/verify", get(media::verify))
        .route("/ops/jobs/{id}/events.ndjson", get(media::export))
        .route(
            "/ops/reconcile",
            get(pages::confirm_reconcile_all).post(actions::reconcile_all),
        )
        .route(
            "/ops/jobs/{id}/reconcile",
            get(pages::confirm_reconcile_job).post(actions::reconcile_job),
        )
        .route(
            "/ops/jobs/{id}/cancel",
            get(pages::confirm_cancel).post(actions::cancel),
        )
        .route(
            "/ops/jobs/{id}/resolve",
            get(pages::confirm_resolve).post(actions::resolve),
        )
        .route("/ops/bulk/new", get(bulk::preview))
        .route("/ops/bulk", post(bulk::create))
        .route("/ops/bulk/{id}", get(bulk::status))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_operator,
        ));
    let open = Router::new()
        .route("/ops/login", get(actions::login_form).post(actions::login))
        .route("/ops/logout", post(actions::logout))
        .route("/ops/static/panel.css", get(css))
        .route("/ops/static/panel.js", get(js));
    Some(signed_in.merge(open).layer(middleware::from_fn(harden)))
}
