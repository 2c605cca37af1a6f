//! `/healthz`, `/readyz`, `/metrics`: what an orchestrator and Prometheus
//! ask. Readiness is the database answering plus the scheduler's own
//! liveness (`runtime::health`): a slow download in one slot is not a dead
//! loop. A media directory that refuses writes (a full disk) leaves the
//! daemon ready, like a paused provider: the database answers and the loop
//! turns, running jobs are still polled, and finished ones wait for the disk
//! without spending attempts. It shows in the reason.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as Extract;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use tracing::{info, warn};

use super::bearer_ok;
use super::serve::Peer;
use crate::report::{error_chain, pause_json};
use crate::runtime::health::Liveness;
use crate::state::State;

pub(super) async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({ "status": "ok" }))).into_response()
}

pub(super) async fn readyz(
    Extract(s): Extract<Arc<State>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    let (ready, mut body, detail) = readiness(&s).await;
    // Log changes only: probes come every few seconds.
    if s.health.readiness_changed(ready) {
        if ready {
            info!("readiness: ready");
        } else {
            let reason = detail.clone().unwrap_or_else(|| body["reason"].to_string());
            warn!(%reason, "readiness: not ready");
        }
    }
    // The database's own words (host names, roles, paths) are for the
    // operator: a client on the network sees only the generic reason.
    if let Some(d) = detail
        && trusted(&s, peer.map(|Extension(p)| p), &headers)
    {
        body["reason"] = d.into();
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// A loopback peer that is not a proxy passing on someone else's request,
/// or the admin bearer token.
fn trusted(s: &State, peer: Option<Peer>, headers: &HeaderMap) -> bool {
    let forwarded = headers.contains_key("forwarded") || headers.contains_key("x-forwarded-for");
    let local = peer.is_some_and(|Peer(a)| a.ip().is_loopback()) && !forwarded;
    local || bearer_ok(s, headers)
}

/// (ready, the answer, the database's error text when that is the reason).
async fn readiness(s: &State) -> (bool, serde_json::Value, Option<String>) {
    let unready = |reason: String| {
        (
            false,
            json!({ "status": "unready", "reason": reason }),
            None,
        )
    };
    if !s.lifecycle.phases().is_running() {
        return unready("shutting down".into());
    }
    match tokio::time::timeout(Duration::from_secs(2), s.worker.store().ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let (ready, body, _) = unready("database: unavailable".into());
            return (ready, body, Some(format!("database: {}", error_chain(&e))));
        }
        Err(_) => return unready("database: no answer within 2s".into()),
    }
    let snap = s.health.snapshot(s.clock.now_ms());
    let media = s.worker.media.fault().map(|f| {
        let age = s.clock.now_ms().saturating_sub(f.since) / 1000;
        let what = if f.disk_full { "full" } else { "refusing writes" };
        format!(
            "media directory {what} for {age}s ({} failed writes in a row; finished jobs wait, spending no attempts): {}",
            f.failures, f.error
        )
    });
    match snap.liveness(s.config().reconcile.interval.0) {
        Liveness::Dead { reason } => unready(match &media {
            Some(m) => format!("{reason}; {m}"),
            None => reason,
        }),
        Liveness::Alive {
            last_tick_age_ms,
            last_claim_age_ms,
        } => {
            // Paused providers leave the daemon ready (SPEC): it is fine,
            // a provider or an account is not. They show in the reason.
            let now = s.clock.now_ms();
            let board = s.worker.health.board();
            let mut body = json!({
                "status": "ready",
                "last_tick_age_ms": last_tick_age_ms,
                "last_claim_age_ms": last_claim_age_ms,
                "slots_busy": snap.slots_busy,
                "slots_total": snap.slots_total,
                "paused_providers": board
                    .pauses
                    .values()
                    .map(|p| pause_json(p, now))
                    .collect::<Vec<_>>(),
            });
            let reasons: Vec<String> = board
                .pauses
                .values()
                .map(|p| format!("provider {} paused ({}): {}", p.provider, p.cause, p.reason))
                .chain(media)
                .collect();
            if !reasons.is_empty() {
                body["reason"] = json!(reasons.join("; "));
            }
            (true, body, None)
        }
    }
}

pub(super) async fn metrics(Extract(s): Extract<Arc<State>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.worker.metrics.render(),
    )
        .into_response()
}
