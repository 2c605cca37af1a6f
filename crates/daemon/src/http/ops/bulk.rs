//! Bulk actions, tied to what the operator saw. The preview (a dry run)
//! freezes the selection: every job of the error group as it was then
//! (status, fencing token, attempts, last error), and shows the count and
//! a sample. Confirming runs the action in the background, in batches of
//! [`BATCH`], each batch one transaction, touching a job only while it is
//! still exactly as seen; the run's page reports what was done, skipped
//! (changed meanwhile) or failed (its batch's transaction failed).
//!
//! Snapshots and runs live in this process's memory: a restart forgets
//! them (a run cut by shutdown stops between batches and says so). A
//! snapshot is confirmed at most once, within [`SNAPSHOT_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::extract::{Path, Query, State as Extract};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use clawcut_core::Millis;
use clawcut_store::{JobQuery, JobView, RetryNow, SeenJob};
use maud::html;
use rand::RngCore;
use tracing::{info, warn};

use super::actions::{form, refused};
use super::auth::Operator;
use super::pages::{LIMITS, urlencode};
use super::stats::{classify, parse_group};
use super::view::{Confirm, Frame, ago, clip, confirm_form, instant, page, problem};
use crate::http::TimedBody;
use crate::report::error_chain;
use crate::state::State;

/// Jobs per transaction.
pub const BATCH: usize = 100;
/// The most jobs one snapshot holds; a larger group is refused with its
/// count (narrow it first, or run it twice).
pub const MAX_SELECTION: usize = 10_000;
/// A preview must be confirmed within this.
pub const SNAPSHOT_TTL: Millis = 15 * 60_000;
/// Snapshots and runs kept.
const KEEP: usize = 100;

#[derive(Debug, Clone)]
struct Snapshot {
    provider: String,
    head: String,
    taken_at: Millis,
    taken_by: String,
    jobs: Vec<SeenJob>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Done,
    /// Shutdown came between two batches.
    Stopped,
}

impl RunState {
    fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Done => "done",
            RunState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone)]
struct Run {
    snapshot: Snapshot,
    operator: String,
    reason: String,
    started_at: Millis,
    finished_at: Option<Millis>,
    state: RunState,
    done: usize,
    skipped: Vec<String>,
    failed: usize,
    errors: Vec<String>,
}

/// The previews and runs of this process.
#[derive(Debug, Default)]
pub struct Bulks {
    snapshots: Mutex<HashMap<String, Snapshot>>,
    runs: Mutex<HashMap<String, Run>>,
}

fn new_id() -> String {
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Bulks {
    fn keep_snapshot(&self, id: String, s: Snapshot, now: Millis) {
        let mut m = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, s| now - s.taken_at < SNAPSHOT_TTL);
        if m.len() >= KEEP
            && let Some(oldest) = m
                .iter()
                .min_by_key(|(_, s)| s.taken_at)
                .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(id, s);
    }

    /// The snapshot, once: a second confirm of the same preview finds none.
    fn take_snapshot(&self, id: &str, now: Millis) -> Option<Snapshot> {
        let mut m = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(id).filter(|s| now - s.taken_at < SNAPSHOT_TTL)
    }

    fn start(&self, id: String, run: Run) {
        let mut m = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= KEEP
            && let Some(oldest) = m
                .iter()
                .filter(|(_, r)| r.state != RunState::Running)
                .min_by_key(|(_, r)| r.started_at)
                .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(id, run);
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Run)) {
        let mut m = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = m.get_mut(id) {
            f(r);
        }
    }

    fn run(&self, id: &str) -> Option<Run> {
        let m = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        m.get(id).cloned()
    }
}

/// `GET /ops/bulk/new?group=provider|head`: the dry run.
pub async fn preview(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some((provider, head)) = q.get("group").and_then(|g| parse_group(g)) else {
        return problem(
            StatusCode::BAD_REQUEST,
            Some(&op),
            "group must be provider|head (follow a link from the overview)",
        );
    };
    let now = s.clock.now_ms();
    let settings = s.worker.settings();
    let store = s.worker.store();
    let mut seen: Vec<SeenJob> = Vec::new();
    let mut after = None;
    let mut sample = Vec::new();
    loop {
        let query = JobQuery {
            view: JobView::All,
            status: None,
            provider: Some(provider),
            error_head: Some(head),
            search: None,
            after: after.as_ref(),
            limit: 500,
            now,
            rules: &settings.rules,
            limits: LIMITS,
            count: false,
        };
        let page = match store.panel_jobs(&query).await {
            Ok(p) => p,
            Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, Some(&op), &error_chain(&e)),
        };
        for j in &page.jobs {
            if sample.len() < 10 {
                sample.push(j.clone());
            }
            seen.push(SeenJob::of(j));
        }
        if seen.len() > MAX_SELECTION {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(&op),
                &format!(
                    "this group holds more than {MAX_SELECTION} jobs; a bulk action takes at most that many: filter it further"
                ),
            );
        }
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let id = new_id();
    let count = seen.len();
    s.panel.bulks.keep_snapshot(
        id.clone(),
        Snapshot {
            provider: provider.to_owned(),
            head: head.to_owned(),
            taken_at: now,
            taken_by: op.audit_name(),
            jobs: seen,
        },
        now,
    );
    let (class, status) = classify(head);
    let body = html! {
        h1 { "Retry now: an error group" }
        p { "Provider " strong { (provider) } ", " (class)
            @if let Some(st) = status { " (HTTP " (st) ")" }
            ", errors starting " code { (head) } "." }
        p { strong #bulk-count { (count) } " jobs, as of " (instant(now)) ". Confirming makes each of them due now, with an audit event naming you, "
            "but only if it is still exactly as it is now: a job that changed meanwhile (claimed, retried, canceled, finished) is skipped and counted. "
            "Confirm within " (SNAPSHOT_TTL / 60_000) " minutes." }
        h2 { "Sample" }
        ul #bulk-sample {
            @for j in &sample {
                li data-job=(j.id) {
                    a href={"/ops/jobs/" (urlencode(&j.id))} { (clip(&j.id, 32)) }
                    " — " (j.status.as_str()) ", " (j.attempts) " attempts, updated " (ago(now, j.updated_at)) ": "
                    (clip(j.last_error.as_deref().unwrap_or(""), 100))
                }
            }
        }
        @if !op.may_act() { p.flash.error role="alert" { "This session is read-only: the server will refuse this action." } }
        @if count > 0 {
            (confirm_form(&op, &Confirm {
                action: "/ops/bulk",
                button: &format!("Retry {count} jobs now"),
                hidden: &[("snapshot", &id)],
                reason: Some("Reason (kept in the audit log)"),
                reason_required: false,
                back: "/ops",
            }))
        }
    };
    page(
        StatusCode::OK,
        Frame {
            title: "Bulk retry",
            op: Some(&op),
            refresh_ms: None,
            flash: None,
        },
        body,
    )
}

/// `POST /ops/bulk`: run a previewed snapshot.
pub async fn create(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    headers: HeaderMap,
    TimedBody(body): TimedBody,
) -> Response {
    let f = form(&body);
    if let Some(r) = refused(&op, &headers, &f, "bulk") {
        return r;
    }
    let now = s.clock.now_ms();
    let Some(snapshot) = f
        .get("snapshot")
        .and_then(|id| s.panel.bulks.take_snapshot(id, now))
    else {
        return problem(
            StatusCode::CONFLICT,
            Some(&op),
            "this preview is gone (already confirmed, older than 15 minutes, or from before a restart): preview again",
        );
    };
    let reason = f
        .get("reason")
        .map(|r| r.trim().to_owned())
        .unwrap_or_default();
    let id = new_id();
    info!(operator = %op.audit_name(), bulk = %id, jobs = snapshot.jobs.len(), provider = %snapshot.provider, head = %snapshot.head, "ops panel: bulk retry started");
    s.panel.bulks.start(
        id.clone(),
        Run {
            snapshot,
            operator: op.audit_name(),
            reason,
            started_at: now,
            finished_at: None,
            state: RunState::Running,
            done: 0,
            skipped: Vec::new(),
            failed: 0,
            errors: Vec::new(),
        },
    );
    let task_state = s.clone();
    let task_id = id.clone();
    s.tasks.spawn(async move { run(task_state, task_id).await });
    Redirect::to(&format!("/ops/bulk/{id}")).into_response()
}

async fn run(s: Arc<State>, id: String) {
    let Some(r) = s.panel.bulks.run(&id) else {
        return;
    };
    let phases = s.lifecycle.phases();
    let store = s.worker.store().clone();
    for batch in r.snapshot.jobs.chunks(BATCH) {
        if !phases.is_running() {
            s.panel.bulks.update(&id, |r| {
                r.state = RunState::Stopped;
                r.finished_at = Some(s.clock.now_ms());
            });
            warn!(bulk = %id, "ops panel: bulk retry stopped by shutdown between batches");
            return;
        }
        let out = store
            .retry_now(&RetryNow {
                jobs: batch,
                operator: &r.operator,
                reason: &r.reason,
                bulk_id: &id,
                now: s.clock.now_ms(),
            })
            .await;
        s.panel.bulks.update(&id, |run| match out {
            Ok(o) => {
                run.done += o.done.len();
                run.skipped.extend(o.skipped);
            }
            Err(e) => {
                run.failed += batch.len();
                run.errors.push(error_chain(&e));
            }
        });
    }
    s.panel.bulks.update(&id, |r| {
        r.state = RunState::Done;
        r.finished_at = Some(s.clock.now_ms());
    });
    if let Some(r) = s.panel.bulks.run(&id) {
        info!(bulk = %id, done = r.done, skipped = r.skipped.len(), failed = r.failed, "ops panel: bulk retry done");
    }
    // Jobs made due now: the scheduler need not wait for its interval.
    s.wake_soon();
}

/// `GET /ops/bulk/{id}`: a run's progress and result.
pub async fn status(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
) -> Response {
    let Some(r) = s.panel.bulks.run(&id) else {
        return problem(
            StatusCode::NOT_FOUND,
            Some(&op),
            "no such bulk run (runs are kept in memory, until a restart)",
        );
    };
    let now = s.clock.now_ms();
    let total = r.snapshot.jobs.len();
    let body = html! {
        h1 { "Bulk retry " code { (id) } }
        p { "Started " (ago(now, r.started_at)) " by " (r.operator)
            @if !r.reason.is_empty() { ", reason: " (r.reason) }
            ". Snapshot of " (total) " jobs taken " (instant(r.snapshot.taken_at)) " by " (r.snapshot.taken_by)
            " (" (r.snapshot.provider) ", " code { (r.snapshot.head) } ")." }
        p { "State " strong #bulk-state data-state=(r.state.as_str()) { (r.state.as_str()) }
            @if let Some(t) = r.finished_at { ", finished " (instant(t)) } }
        table #bulk-result {
            caption { "What was done" }
            tbody {
                tr { th scope="row" { "Made due now" } td #bulk-done { (r.done) } }
                tr { th scope="row" { "Skipped (changed since the preview)" } td #bulk-skipped { (r.skipped.len()) } }
                tr { th scope="row" { "Failed" } td #bulk-failed { (r.failed) } }
                tr { th scope="row" { "Not yet reached" } td { (total.saturating_sub(r.done + r.skipped.len() + r.failed)) } }
            }
        }
        @if !r.skipped.is_empty() {
            h2 { "Skipped" }
            ul #bulk-skipped-jobs {
                @for j in r.skipped.iter().take(50) {
                    li data-job=(j) { a href={"/ops/jobs/" (urlencode(j))} { (j) } }
                }
            }
        }
        @for e in &r.errors { p.error role="alert" { (e) } }
    };
    page(
        StatusCode::OK,
        Frame {
            title: "Bulk retry",
            op: Some(&op),
            refresh_ms: (r.state == RunState::Running).then_some(1_000),
            flash: None,
        },
        body,
    )
}
