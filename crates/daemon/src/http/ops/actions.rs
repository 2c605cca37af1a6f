//! The panel's form POSTs: sign-in and sign-out, and the actions. Every
//! action first passes [`Operator::check_action`] (the admin role, the
//! CSRF token, this origin), then does its work or starts it in the
//! background (tracked, so shutdown awaits it), and answers 303 to the
//! page that shows the result.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State as Extract};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use clawcut_store::{Resolution, StoreError};
use maud::html;
use serde_json::json;
use tracing::{info, warn};

use super::auth::{self, Operator, clean_name, identify, peer_ip};
use super::pages::urlencode;
use super::view::{Frame, page, problem};
use crate::http::TimedBody;
use crate::http::serve::Peer;
use crate::report::error_chain;
use crate::state::State;
use crate::worker::ClaimScope;
use crate::worker::cancel::{CancelError, cancel_job};
use crate::worker::pass::{PassOptions, run_once};

/// A urlencoded form body as name → value (the last of a repeated name).
pub fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn see(location: &str) -> Response {
    Redirect::to(location).into_response()
}

fn with_done(location: &str, msg: &str) -> Response {
    let sep = if location.contains('?') { '&' } else { '?' };
    see(&format!("{location}{sep}done={}", urlencode(msg)))
}

pub async fn login_form(Extract(s): Extract<Arc<State>>, headers: HeaderMap) -> Response {
    if identify(&s, &headers).is_some() {
        return see("/ops");
    }
    login_page(StatusCode::OK, None)
}

fn login_page(status: StatusCode, flash: Option<&str>) -> Response {
    let body = html! {
        h1 { "Sign in" }
        form #login method="post" action="/ops/login" {
            label for="token" { "Token" }
            input #token type="password" name="token" autocomplete="current-password" required;
            label for="operator" { "Your name" }
            input #operator type="text" name="operator" autocomplete="username" required maxlength="64";
            p.hint { "The admin token operates; the read-only token can look but not act. Your name goes into the audit log of every action you take." }
            button type="submit" { "Sign in" }
        }
    };
    page(
        status,
        Frame {
            title: "Sign in",
            op: None,
            refresh_ms: None,
            flash: flash.map(|m| (m.to_owned(), true)),
        },
        body,
    )
}

pub async fn login(
    Extract(s): Extract<Arc<State>>,
    peer: Option<Extension<Peer>>,
    TimedBody(body): TimedBody,
) -> Response {
    let ip = peer_ip(peer.as_ref().map(|p| &p.0));
    let now = s.clock.now_ms();
    let wait = s.panel.throttle.delay(ip, now);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let f = form(&body);
    let token = f.get("token").map(String::as_str).unwrap_or("");
    let Some(role) = auth::role_of(&s, token) else {
        s.panel.throttle.failed(ip, s.clock.now_ms());
        warn!(peer = %ip, "ops panel: sign-in refused (wrong token)");
        return login_page(StatusCode::UNAUTHORIZED, Some("wrong token"));
    };
    let Some(name) = f.get("operator").and_then(|n| clean_name(n)) else {
        return login_page(
            StatusCode::BAD_REQUEST,
            Some("your name is required: it goes into the audit log"),
        );
    };
    s.panel.throttle.succeeded(ip);
    let ttl = s.config().http.ops_session_ttl.0;
    let id = s.panel.sessions.open(role, &name, s.clock.now_ms(), ttl);
    info!(operator = %name, role = role.label(), peer = %ip, "ops panel: signed in");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/ops".to_owned()),
            (header::SET_COOKIE, auth::set_cookie(&id, ttl)),
        ],
    )
        .into_response()
}

pub async fn logout(Extract(s): Extract<Arc<State>>, headers: HeaderMap) -> Response {
    // Signing out needs no CSRF token: the worst another site can do with
    // it is sign the operator out.
    if let Some(id) = auth::session_cookie(&headers) {
        s.panel.sessions.close(&id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/ops/login".to_owned()),
            (header::SET_COOKIE, auth::clear_cookie()),
        ],
    )
        .into_response()
}

/// The checks every action makes; `Some` is the refusal page (403).
pub fn refused(
    op: &Operator,
    headers: &HeaderMap,
    f: &HashMap<String, String>,
    what: &str,
) -> Option<Response> {
    let why = op
        .check_action(headers, f.get("csrf").map(String::as_str))
        .err()?;
    warn!(operator = %op.name, role = op.role.label(), action = what, reason = why.message(), "ops panel: action refused");
    Some(problem(StatusCode::FORBIDDEN, Some(op), why.message()))
}

pub async fn reconcile_all(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    headers: HeaderMap,
    TimedBody(body): TimedBody,
) -> Response {
    let f = form(&body);
    if let Some(r) = refused(&op, &headers, &f, "reconcile") {
        return r;
    }
    info!(operator = %op.audit_name(), "ops panel: reconcile pass requested");
    spawn_pass(&s, None, op.audit_name());
    with_done(
        "/ops",
        "A reconcile pass started; the steps below show what it did.",
    )
}

fn spawn_pass(s: &Arc<State>, job: Option<String>, operator: String) {
    let opts = PassOptions {
        limit: None,
        scope: ClaimScope {
            force: job.is_some(),
            only_job: job,
        },
    };
    let worker = s.worker.clone();
    let phases = s.lifecycle.phases();
    s.tasks.spawn(async move {
        match run_once(&worker, &opts, &phases).await {
            Ok(summary) => {
                info!(operator = %operator, claimed = summary.claimed, "ops panel: reconcile pass done")
            }
            Err(e) => warn!(operator = %operator, error = %error_chain(&e), "ops panel: reconcile pass failed"),
        }
    });
}

pub async fn reconcile_job(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
    headers: HeaderMap,
    TimedBody(body): TimedBody,
) -> Response {
    let f = form(&body);
    if let Some(r) = refused(&op, &headers, &f, "reconcile job") {
        return r;
    }
    let store = s.worker.store();
    let detail = json!({ "event": "operator_reconcile", "operator": op.audit_name() });
    match store
        .note_operator(&id, &op.audit_name(), &detail, s.clock.now_ms())
        .await
    {
        Ok(Some(_)) => {}
        Ok(None) => return problem(StatusCode::NOT_FOUND, Some(&op), &format!("no job {id}")),
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, Some(&op), &error_chain(&e)),
    }
    info!(operator = %op.audit_name(), job = %id, "ops panel: reconcile of one job requested");
    spawn_pass(&s, Some(id.clone()), op.audit_name());
    with_done(
        &format!("/ops/jobs/{}", urlencode(&id)),
        "Reconcile started; this page follows the job.",
    )
}

pub async fn cancel(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
    headers: HeaderMap,
    TimedBody(body): TimedBody,
) -> Response {
    let f = form(&body);
    if let Some(r) = refused(&op, &headers, &f, "cancel") {
        return r;
    }
    let reason = f
        .get("reason")
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    let operator = op.audit_name();
    let now = s.clock.now_ms();
    // Its own task, tracked: a browser that goes away must not cut the
    // provider call and the local cancel apart.
    let task = s.tasks.spawn({
        let worker = s.worker.clone();
        let id = id.clone();
        let operator = operator.clone();
        async move {
            cancel_job(
                &**worker.store(),
                |name| worker.provider(name).map(|h| h.provider.clone()),
                &id,
                &operator,
                reason.as_deref(),
                now,
            )
            .await
        }
    });
    let back = format!("/ops/jobs/{}", urlencode(&id));
    match task.await {
        Ok(Ok(r)) => {
            let provider = r.to_json()["provider_cancel"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            with_done(&back, &format!("Canceled (provider cancel: {provider})."))
        }
        Ok(Err(e @ CancelError::NotFound(_))) => {
            problem(StatusCode::NOT_FOUND, Some(&op), &e.to_string())
        }
        Ok(Err(
            e @ (CancelError::Final { .. }
            | CancelError::NotOurs { .. }
            | CancelError::OutcomeUnknown { .. }),
        )) => problem(StatusCode::CONFLICT, Some(&op), &e.to_string()),
        Ok(Err(CancelError::Store(e))) => {
            problem(StatusCode::SERVICE_UNAVAILABLE, Some(&op), &error_chain(&e))
        }
        Err(e) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(&op),
            &format!("cancel task failed: {e}"),
        ),
    }
}

pub async fn resolve(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
    headers: HeaderMap,
    TimedBody(body): TimedBody,
) -> Response {
    let f = form(&body);
    if let Some(r) = refused(&op, &headers, &f, "resolve") {
        return r;
    }
    let resolution = match f.get("action").map(String::as_str) {
        Some("resubmit") => Resolution::Resubmit,
        Some("fail") => Resolution::Fail,
        other => {
            return problem(
                StatusCode::BAD_REQUEST,
                Some(&op),
                &format!("action must be resubmit or fail, not {other:?}"),
            );
        }
    };
    let Some(reason) = f.get("reason").map(|r| r.trim()).filter(|r| !r.is_empty()) else {
        return problem(
            StatusCode::BAD_REQUEST,
            Some(&op),
            "a reason is required: it goes into the audit log",
        );
    };
    match s
        .worker
        .store()
        .resolve(
            &id,
            resolution,
            &op.audit_name(),
            Some(reason),
            s.clock.now_ms(),
        )
        .await
    {
        Ok(status) => {
            info!(operator = %op.audit_name(), job = %id, status = %status, "ops panel: job resolved");
            with_done(
                &format!("/ops/jobs/{}", urlencode(&id)),
                &format!("Resolved: the job is now {status}."),
            )
        }
        Err(e @ StoreError::NotResolvable { .. }) => {
            problem(StatusCode::CONFLICT, Some(&op), &error_chain(&e))
        }
        Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, Some(&op), &error_chain(&e)),
    }
}
