//! The panel's pages (GET): the overview, the job lists, the
//! `needs_operator` inbox, one job, and the confirmation steps of every
//! action. Each panel read runs under [`LIMITS`]; a read that fails or
//! times out shows its error in its own section, and the rest of the page
//! still renders.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::response::Response;
use clawcut_core::{JobStatus, transition};
use clawcut_store::{Cursor, JobQuery, JobView, PanelLimits};
use maud::{Markup, html};

use super::auth::Operator;
use super::stats::{self, classify, group_key, parse_group};
use super::view::{Confirm, Frame, age, ago, capped, clip, confirm_form, instant, page, problem};
use crate::report::error_chain;
use crate::state::State;

/// The bounds of every panel read.
pub const LIMITS: PanelLimits = PanelLimits {
    timeout: std::time::Duration::from_secs(3),
    count_cap: 10_000,
};
/// Rows per list page.
const PAGE: u32 = 50;
/// Audit events read for the time in each state.
const TRANSITIONS: u32 = 2_000;

type Params = Query<HashMap<String, String>>;

fn flash_of(q: &HashMap<String, String>) -> Option<(String, bool)> {
    q.get("done").map(|d| (clip(d, 300), false))
}

fn section_error(e: &clawcut_store::StoreError) -> Markup {
    html! { p.error role="alert" { "Could not read this: " (error_chain(e)) } }
}

pub async fn overview(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Query(q): Params,
) -> Response {
    let now = s.clock.now_ms();
    let settings = s.worker.settings();
    let store = s.worker.store();
    let (report, pauses, groups, transitions) = tokio::join!(
        store.status_report(now, &settings.rules),
        store.provider_pauses(),
        store.error_groups(50, LIMITS),
        store.recent_transitions(TRANSITIONS, LIMITS),
    );
    let health = s.health.snapshot(now);
    let steps = s.worker.activity.steps();
    let spreads = transitions.as_ref().map(|t| stats::time_in_state(t)).ok();
    let states = [
        JobStatus::Queued,
        JobStatus::Submitting,
        JobStatus::Pending,
        JobStatus::Processing,
    ];
    let body = html! {
        h1 { "Overview" }
        @if op.may_act() {
            p { a #reconcile-all .button href="/ops/reconcile" { "Reconcile now…" } }
        }
        section aria-labelledby="h-counts" {
            h2 #h-counts { "Jobs" }
            @match &report {
                Ok(r) => {
                    ul.summary {
                        li { a href="/ops/jobs?view=eligible" { "Eligible " strong { (r.eligible) } } }
                        li { a href="/ops/jobs?view=stranded" { "Stranded " strong { (r.stranded) } } }
                        li { "Leased now " strong { (r.running) } }
                        li { a href="/ops/inbox" { "Needs operator " strong { (r.needs_operator) } } }
                        li { "Waiting for submission " strong { (r.unsubmitted) } }
                    }
                    p #oldest-eligible {
                        "Oldest eligible job: "
                        @match r.oldest_eligible_updated_at {
                            Some(t) => { strong { (age(now - t)) } " since its last update" }
                            None => { "none" }
                        }
                    }
                    table #counts {
                        caption { "Video jobs by status (a count stops at " (r.by_status_cap) ")" }
                        thead { tr { th scope="col" { "Status" } th scope="col" { "Jobs" } } }
                        tbody {
                            @for st in JobStatus::ALL {
                                @let n = r.by_status.iter().find(|(x, _)| *x == st).map_or(0, |(_, n)| *n);
                                tr data-status=(st.as_str()) {
                                    th scope="row" { a href={"/ops/jobs?view=all&status=" (st.as_str())} { (st.as_str()) } }
                                    td.count { (capped(n, n >= r.by_status_cap)) }
                                }
                            }
                        }
                    }
                }
                Err(e) => { (section_error(e)) }
            }
        }
        section aria-labelledby="h-providers" {
            h2 #h-providers { "Providers" }
            @if let Err(e) = &pauses { (section_error(e)) }
            div.scroll {
                table #providers {
                    caption { "Answers and errors over the last " (crate::worker::activity::Activity::WINDOW_MINUTES) " minutes (this process); time in each state over the last " (TRANSITIONS) " state changes (p50 / p95)" }
                    thead { tr {
                        th scope="col" { "Provider" }
                        th scope="col" { "State" }
                        th scope="col" { "Answers" }
                        th scope="col" { "Error rate" }
                        @for st in states { th scope="col" { "In " (st.as_str()) } }
                    } }
                    tbody {
                        @for name in s.worker.provider_names() {
                            @let pause = pauses.as_ref().ok().and_then(|p| p.iter().find(|p| p.provider == name));
                            @let answers = s.worker.activity.answers(&name, now);
                            tr data-provider=(name) {
                                th scope="row" { a href={"/ops/jobs?view=all&provider=" (name)} { (name) } }
                                td.paused {
                                    @match pause {
                                        Some(p) => {
                                            strong.bad { "paused" }
                                            " (" (p.cause.label()) ", since " (ago(now, p.paused_at)) "; next probe " (age(p.probe_at - now)) "): " (clip(&p.reason, 200))
                                        }
                                        None => { "up" }
                                    }
                                }
                                td { (answers.total) }
                                td {
                                    @if answers.total == 0 { "–" } @else {
                                        (format!("{:.0}%", 100.0 * answers.faults as f64 / answers.total as f64)) " (" (answers.faults) ")"
                                    }
                                }
                                @for st in states {
                                    td {
                                        @match spreads.as_ref().and_then(|m| m.get(&(name.clone(), st.as_str().to_owned()))) {
                                            Some(sp) => { (age(sp.p50)) " / " (age(sp.p95)) }
                                            None => { "–" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Err(e) = &transitions { (section_error(e)) }
        }
        section #activity aria-labelledby="h-activity" {
            h2 #h-activity { "Loop activity (this process)" }
            ul.summary {
                li { "Last turn " strong { (if health.last_tick > 0 { age(now - health.last_tick) + " ago" } else { "never".into() }) } }
                li { "Last claim " strong { (if health.last_claim_ok > 0 { age(now - health.last_claim_ok) + " ago" } else { "never".into() }) } " (" (health.last_claimed) " rows)" }
                li { "Slots busy " strong { (health.slots_busy) " of " (health.slots_total) } }
                @if let Some(e) = &health.last_error { li.error { "Last loop error: " (clip(e, 300)) } }
            }
            div.scroll {
                table #steps {
                    caption { "The last job steps" }
                    thead { tr { th scope="col" { "When" } th scope="col" { "Job" } th scope="col" { "Provider" } th scope="col" { "Change" } th scope="col" { "Outcome" } } }
                    tbody {
                        @for st in steps.iter().take(15) {
                            tr {
                                td { (ago(now, st.at)) }
                                td { a href={"/ops/jobs/" (st.report.job_id)} { (clip(&st.report.job_id, 24)) } }
                                td { (st.report.provider) }
                                td { (st.report.from) " → " (st.report.to) }
                                td { (st.report.action.as_str()) }
                            }
                        }
                        @if steps.is_empty() { tr { td colspan="5" { "No job worked yet." } } }
                    }
                }
            }
        }
        section aria-labelledby="h-groups" {
            h2 #h-groups { "Error groups" }
            @match &groups {
                Ok(groups) => {
                    div.scroll {
                        table #error-groups {
                            caption { "Unfinished jobs by provider and last error" }
                            thead { tr {
                                th scope="col" { "Provider" } th scope="col" { "Class" } th scope="col" { "HTTP" }
                                th scope="col" { "Error" } th scope="col" { "Jobs" } th scope="col" { "Oldest" } th scope="col" { "Act" }
                            } }
                            tbody {
                                @for g in groups {
                                    @let (class, status) = classify(&g.head);
                                    @let key = group_key(&g.provider, &g.head);
                                    tr.error-group data-provider=(g.provider) data-class=(class) data-status=(status.map(|s| s.to_string()).unwrap_or_default()) {
                                        td { (g.provider) }
                                        td { (class) }
                                        td { (status.map(|s| s.to_string()).unwrap_or_else(|| "–".into())) }
                                        td { code { (clip(&g.head, 40)) } }
                                        td.count { a href={"/ops/jobs?view=all&group=" (urlencode(&key))} { (g.count) } }
                                        td { (ago(now, g.oldest_updated_at)) }
                                        td { a.bulk-retry href={"/ops/bulk/new?group=" (urlencode(&key))} { "Retry now…" } }
                                    }
                                }
                                @if groups.is_empty() { tr { td colspan="7" { "No unfinished job has an error." } } }
                            }
                        }
                    }
                }
                Err(e) => { (section_error(e)) }
            }
        }
    };
    page(
        StatusCode::OK,
        Frame {
            title: "Overview",
            op: Some(&op),
            refresh_ms: Some(5_000),
            flash: flash_of(&q),
        },
        body,
    )
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// What a job list was asked for, parsed and checked.
struct ListAsk {
    view: JobView,
    status: Option<JobStatus>,
    provider: Option<String>,
    group: Option<(String, String)>,
    search: Option<String>,
    after: Option<Cursor>,
}

fn parse_list(q: &HashMap<String, String>) -> Result<ListAsk, String> {
    let some = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let view = match some("view") {
        None => JobView::All,
        Some(v) => JobView::parse(v).ok_or_else(|| {
            format!("view must be all, eligible, stranded or needs_operator, not {v:?}")
        })?,
    };
    let status = some("status")
        .map(|v| {
            v.parse::<JobStatus>()
                .map_err(|_| format!("no such status {v:?}"))
        })
        .transpose()?;
    let group = some("group")
        .map(|g| {
            parse_group(g)
                .map(|(p, h)| (p.to_owned(), h.to_owned()))
                .ok_or_else(|| "group must be provider|head".to_owned())
        })
        .transpose()?;
    let after = some("after")
        .map(|a| Cursor::decode(a).ok_or_else(|| "after is not a page cursor".to_owned()))
        .transpose()?;
    Ok(ListAsk {
        view,
        status,
        provider: some("provider").map(str::to_owned),
        group,
        search: some("q").map(str::to_owned),
        after,
    })
}

fn list_link(a: &ListAsk, after: Option<&Cursor>) -> String {
    let mut u = url::form_urlencoded::Serializer::new(String::new());
    u.append_pair("view", a.view.as_str());
    if let Some(s) = a.status {
        u.append_pair("status", s.as_str());
    }
    if let Some(p) = &a.provider {
        u.append_pair("provider", p);
    }
    if let Some((p, h)) = &a.group {
        u.append_pair("group", &group_key(p, h));
    }
    if let Some(q) = &a.search {
        u.append_pair("q", q);
    }
    if let Some(c) = after {
        u.append_pair("after", &c.encode());
    }
    format!("/ops/jobs?{}", u.finish())
}

pub async fn jobs(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Query(q): Params,
) -> Response {
    let ask = match parse_list(&q) {
        Ok(a) => a,
        Err(msg) => return problem(StatusCode::BAD_REQUEST, Some(&op), &msg),
    };
    let now = s.clock.now_ms();
    let settings = s.worker.settings();
    let provider = ask
        .group
        .as_ref()
        .map(|(p, _)| p.as_str())
        .or(ask.provider.as_deref());
    let query = JobQuery {
        view: ask.view,
        status: ask.status,
        provider,
        error_head: ask.group.as_ref().map(|(_, h)| h.as_str()),
        search: ask.search.as_deref(),
        after: ask.after.as_ref(),
        limit: PAGE,
        now,
        rules: &settings.rules,
        limits: LIMITS,
        count: true,
    };
    let result = s.worker.store().panel_jobs(&query).await;
    let title = match ask.view {
        JobView::All => "All jobs",
        JobView::Eligible => "Eligible jobs",
        JobView::Stranded => "Stranded jobs",
        JobView::NeedsOperator => "Jobs that need an operator",
    };
    let body = html! {
        h1 { (title) }
        form.filters method="get" action="/ops/jobs" role="search" {
            label for="f-view" { "View" }
            select #f-view name="view" {
                @for v in JobView::ALL {
                    option value=(v.as_str()) selected[v == ask.view] { (v.as_str()) }
                }
            }
            label for="f-status" { "Status" }
            select #f-status name="status" {
                option value="" { "any" }
                @for st in JobStatus::ALL {
                    option value=(st.as_str()) selected[Some(st) == ask.status] { (st.as_str()) }
                }
            }
            label for="f-provider" { "Provider" }
            select #f-provider name="provider" {
                option value="" { "any" }
                @for p in s.worker.provider_names() {
                    option value=(p) selected[Some(&p) == ask.provider.as_ref()] { (p) }
                }
            }
            @if let Some((p, h)) = &ask.group {
                input type="hidden" name="group" value=(group_key(p, h));
            }
            label for="f-q" { "Job, provider job or scene id" }
            input #f-q type="search" name="q" value=[ask.search.as_deref()];
            button type="submit" { "Show" }
        }
        @if let Some((p, h)) = &ask.group {
            p { "Error group: " strong { (p) " " code { (h) } } " — " a href=(list_link(&ListAsk { group: None, after: None, ..copy(&ask) }, None)) { "clear" } }
        }
        @match &result {
            Ok(page) => {
                p #jobs-count { (capped(page.count.unwrap_or(0), page.count_capped)) " jobs" }
                div.scroll {
                    table #jobs {
                        caption.visually-hidden { (title) }
                        thead { tr {
                            th scope="col" { "Job" } th scope="col" { "Status" } th scope="col" { "Provider" }
                            th scope="col" { "Age" } th scope="col" { "Attempts" } th scope="col" { "Next attempt" }
                            th scope="col" { "Last error" }
                        } }
                        tbody {
                            @for j in &page.jobs {
                                tr data-job=(j.id) {
                                    td { a.job-link href={"/ops/jobs/" (urlencode(&j.id))} { (clip(&j.id, 32)) } }
                                    td.status { (j.status.as_str()) }
                                    td.provider { (j.provider) }
                                    td.age { (age(now - j.updated_at)) }
                                    td.attempts { (j.attempts) }
                                    td.next-attempt {
                                        @if j.status.is_final() { "–" }
                                        @else if j.next_attempt_at <= now { "due" }
                                        @else { (age(j.next_attempt_at - now)) " from now" }
                                    }
                                    td.last-error { (clip(j.last_error.as_deref().unwrap_or(""), 120)) }
                                }
                            }
                            @if page.jobs.is_empty() { tr { td colspan="7" { "No job matches." } } }
                        }
                    }
                }
                @if let Some(next) = &page.next {
                    p { a #next-page href=(list_link(&ask, Some(next))) { "Next page" } }
                }
            }
            Err(e) => { (section_error(e)) }
        }
    };
    page(
        StatusCode::OK,
        Frame {
            title,
            op: Some(&op),
            refresh_ms: None,
            flash: flash_of(&q),
        },
        body,
    )
}

fn copy(a: &ListAsk) -> ListAsk {
    ListAsk {
        view: a.view,
        status: a.status,
        provider: a.provider.clone(),
        group: a.group.clone(),
        search: a.search.clone(),
        after: a.after.clone(),
    }
}

pub async fn inbox(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Query(q): Params,
) -> Response {
    let now = s.clock.now_ms();
    let settings = s.worker.settings();
    let after = q.get("after").and_then(|a| Cursor::decode(a));
    let query = JobQuery {
        view: JobView::NeedsOperator,
        status: None,
        provider: None,
        error_head: None,
        search: None,
        after: after.as_ref(),
        limit: PAGE,
        now,
        rules: &settings.rules,
        limits: LIMITS,
        count: true,
    };
    let store = s.worker.store();
    let result = store.panel_jobs(&query).await;
    // Each job's last audit event: what the daemon (or the provider) said
    // when it stopped.
    let mut last = HashMap::new();
    if let Ok(p) = &result {
        for j in &p.jobs {
            if let Ok(ev) = store.job_events(&j.id, 200, LIMITS).await
                && let Some(e) = ev.into_iter().next_back()
            {
                last.insert(j.id.clone(), e);
            }
        }
    }
    let body = html! {
        h1 { "Needs operator" }
        p { "These jobs stopped because the daemon could not decide alone. Resubmit sends a job to its provider again; fail ends it. Both ask for a reason, kept in the audit log with your name." }
        @match &result {
            Ok(page) => {
                p #jobs-count { (capped(page.count.unwrap_or(0), page.count_capped)) " jobs" }
                div.scroll {
                    table #inbox {
                        caption.visually-hidden { "Jobs that need an operator" }
                        thead { tr {
                            th scope="col" { "Job" } th scope="col" { "Provider" } th scope="col" { "Why it stopped" }
                            th scope="col" { "Idempotency key" } th scope="col" { "Last answer" }
                            th scope="col" { "Attempts" } th scope="col" { "Since" } th scope="col" { "Decide" }
                        } }
                        tbody {
                            @for j in &page.jobs {
                                tr data-job=(j.id) {
                                    td { a.job-link href={"/ops/jobs/" (urlencode(&j.id))} { (clip(&j.id, 32)) } }
                                    td { (j.provider) }
                                    td.why { (clip(j.last_error.as_deref().unwrap_or("(no reason recorded)"), 200)) }
                                    td.idempotency-key { code { (j.idempotency_key.as_deref().unwrap_or("–")) } }
                                    td.last-answer {
                                        @match last.get(&j.id) {
                                            Some(e) => { code { (clip(&e.detail, 200)) } }
                                            None => { "–" }
                                        }
                                    }
                                    td.attempts { (j.attempts) }
                                    td { (ago(now, j.updated_at)) }
                                    td.decide {
                                        @if op.may_act() {
                                            a.resubmit href={"/ops/jobs/" (urlencode(&j.id)) "/resolve?action=resubmit"} { "Resubmit…" }
                                            " "
                                            a.fail href={"/ops/jobs/" (urlencode(&j.id)) "/resolve?action=fail"} { "Fail…" }
                                        } @else { "read-only" }
                                    }
                                }
                            }
                            @if page.jobs.is_empty() { tr { td colspan="8" { "Nothing waits for a decision." } } }
                        }
                    }
                }
                @if let Some(next) = &page.next {
                    p { a #next-page href={"/ops/inbox?after=" (urlencode(&next.encode()))} { "Next page" } }
                }
            }
            Err(e) => { (section_error(e)) }
        }
    };
    page(
        StatusCode::OK,
        Frame {
            title: "Needs operator",
            op: Some(&op),
            refresh_ms: None,
            flash: flash_of(&q),
        },
        body,
    )
}

pub async fn job(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let now = s.clock.now_ms();
    let store = s.worker.store();
    let job = match store.get_job(&id).await {
        Ok(Some(j)) => j,
        Ok(None) => return problem(StatusCode::NOT_FOUND, Some(&op), &format!("no job {id}")),
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, Some(&op), &error_chain(&e)),
    };
    let (media, events) = tokio::join!(
        store.job_media(&id, LIMITS),
        store.job_events(&id, 500, LIMITS)
    );
    let enc = urlencode(&id);
    let cancelable = transition(job.status, clawcut_core::Event::OperatorCancel).is_ok();
    let body = html! {
        h1 { "Job " code { (id) } }
        p { "Status " strong #job-status data-status=(job.status.as_str()) { (job.status.as_str()) } }
        @if op.may_act() {
            p.actions {
                @if !job.status.is_final() {
                    a #reconcile-job .button href={"/ops/jobs/" (enc) "/reconcile"} { "Reconcile now…" }
                }
                @if cancelable {
                    a #cancel-job .button.danger href={"/ops/jobs/" (enc) "/cancel"} { "Cancel…" }
                }
                @if job.status == JobStatus::NeedsOperator {
                    a.resubmit .button href={"/ops/jobs/" (enc) "/resolve?action=resubmit"} { "Resubmit…" }
                    a.fail .button.danger href={"/ops/jobs/" (enc) "/resolve?action=fail"} { "Fail…" }
                }
            }
        }
        dl.facts {
            dt { "Provider" } dd { (job.provider) }
            dt { "Provider job id" } dd { code { (job.provider_job_id.as_deref().unwrap_or("–")) } }
            dt { "Scene" } dd { (job.scene_id.as_deref().unwrap_or("–")) }
            dt { "Scene version" } dd { (job.scene_version_id.as_deref().unwrap_or("–")) }
            dt { "Attempts (errors)" } dd { (job.attempts) }
            dt { "Polls (still running)" } dd { (job.polls) }
            dt { "Next attempt" } dd {
                @if job.status.is_final() { "–" } @else if job.next_attempt_at <= now { "due now" } @else { (age(job.next_attempt_at - now)) " from now" }
            }
            dt { "Lease" } dd {
                @match (&job.lease_owner, job.lease_expires_at) {
                    (Some(o), Some(t)) if t > now => { (o) ", for " (age(t - now)) }
                    _ => { "none" }
                }
            }
            dt { "Last error" } dd { (job.last_error.as_deref().unwrap_or("–")) }
            dt { "Idempotency key" } dd { code { (job.idempotency_key.as_deref().unwrap_or("–")) } }
            dt { "Created" } dd { (instant(job.created_at)) }
            dt { "Updated" } dd { (instant(job.updated_at)) " (" (age(now - job.updated_at)) " ago)" }
        }
        section #media aria-labelledby="h-media" {
            h2 #h-media { "Scene version and media" }
            @match &media {
                Ok(Some(m)) => {
                    dl.facts {
                        dt { "Version status" } dd { (m.version_status.as_deref().unwrap_or("(no version row)")) }
                        @if let Some(e) = &m.version_error { dt { "Version error" } dd { (e) } }
                        dt { "Video" } dd { code { (m.video_path.as_deref().unwrap_or("–")) } }
                        dt { "Bytes" } dd #video-bytes { (m.video_bytes.map(|b| b.to_string()).unwrap_or_else(|| "–".into())) }
                        dt { "SHA-256" } dd { code #video-sha256 { (m.video_sha256.as_deref().unwrap_or("–")) } }
                        dt { "Thumbnail" } dd { code { (m.thumbnail_path.as_deref().unwrap_or("–")) } }
                    }
                    @if m.video_path.is_some() {
                        p { a #verify .button href={"/ops/jobs/" (enc) "/verify"} { "Verify now" } " reads the file and checks it against its checksum." }
                        video #preview controls preload="metadata" src={"/ops/jobs/" (enc) "/video"}
                            poster=[m.thumbnail_path.as_ref().map(|_| format!("/ops/jobs/{enc}/thumbnail"))] {
                            "Your browser cannot play this clip: " a href={"/ops/jobs/" (enc) "/video"} { "download it" } "."
                        }
                    } @else {
                        p { "No output yet." }
                    }
                }
                Ok(None) => { p { "No such job." } }
                Err(e) => { (section_error(e)) }
            }
        }
        section aria-labelledby="h-timeline" {
            h2 #h-timeline { "Timeline" }
            p { a #export href={"/ops/jobs/" (enc) "/events.ndjson"} { "Export the audit events (NDJSON)" } }
            @match &events {
                Ok(events) => {
                    ol #timeline {
                        li.created { (instant(job.created_at)) " — created by the app as " code { "queued" } }
                        @for e in events {
                            li.event data-to=(e.to_status) {
                                (instant(e.created_at)) " — "
                                @if e.from_status.as_deref() == Some(e.to_status.as_str()) {
                                    "note on " code { (e.to_status) }
                                } @else {
                                    code { (e.from_status.as_deref().unwrap_or("–")) } " → " code { (e.to_status) }
                                }
                                " by " (e.worker_id)
                                @if e.detail != "{}" { details { summary { "detail" } pre { (clip(&e.detail, 2_000)) } } }
                            }
                        }
                        @if !job.status.is_final() {
                            li.now { (instant(now)) " — now " code { (job.status.as_str()) } ": " (job.polls) " polls, " (job.attempts) " errors so far"
                                @if let Some(e) = &job.last_error { ", last: " (clip(e, 200)) } }
                        }
                    }
                }
                Err(e) => { (section_error(e)) }
            }
        }
    };
    page(
        StatusCode::OK,
        Frame {
            title: "Job",
            op: Some(&op),
            refresh_ms: (!job.status.is_final()).then_some(2_000),
            flash: flash_of(&q),
        },
        body,
    )
}

/// `GET /ops/reconcile`: the confirmation of a pass now.
pub async fn confirm_reconcile_all(Extension(op): Extension<Operator>) -> Response {
    let body = html! {
        h1 { "Reconcile now" }
        p { "Runs one pass now, of up to the batch size of eligible jobs, in the background. The audit log records what each job did." }
        (confirm_form(&op, &Confirm { action: "/ops/reconcile", button: "Reconcile now", hidden: &[], reason: None, reason_required: false, back: "/ops" }))
    };
    confirm_page(&op, "Reconcile now", body)
}

fn confirm_page(op: &Operator, title: &str, body: Markup) -> Response {
    let body = html! {
        @if !op.may_act() { p.flash.error role="alert" { "This session is read-only: the server will refuse this action." } }
        (body)
    };
    page(
        StatusCode::OK,
        Frame {
            title,
            op: Some(op),
            refresh_ms: None,
            flash: None,
        },
        body,
    )
}

/// The job a confirmation page is about, or the page saying why not.
async fn job_for(s: &State, op: &Operator, id: &str) -> Result<clawcut_core::Job, Response> {
    match s.worker.store().get_job(id).await {
        Ok(Some(j)) => Ok(j),
        Ok(None) => Err(problem(
            StatusCode::NOT_FOUND,
            Some(op),
            &format!("no job {id}"),
        )),
        Err(e) => Err(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(op),
            &error_chain(&e),
        )),
    }
}

pub async fn confirm_reconcile_job(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
) -> Response {
    let job = match job_for(&s, &op, &id).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let action = format!("/ops/jobs/{}/reconcile", urlencode(&id));
    let back = format!("/ops/jobs/{}", urlencode(&id));
    let body = html! {
        h1 { "Reconcile job " code { (id) } }
        p { "It is " strong { (job.status.as_str()) } " at " (job.provider) ". The daemon claims it now (whatever its next attempt time) and takes one step: a poll, a submission, or its download. This page then follows it." }
        (confirm_form(&op, &Confirm { action: &action, button: "Reconcile this job", hidden: &[], reason: None, reason_required: false, back: &back }))
    };
    confirm_page(&op, "Reconcile a job", body)
}

pub async fn confirm_cancel(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
) -> Response {
    let job = match job_for(&s, &op, &id).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let action = format!("/ops/jobs/{}/cancel", urlencode(&id));
    let back = format!("/ops/jobs/{}", urlencode(&id));
    let body = html! {
        h1 { "Cancel job " code { (id) } }
        p { "It is " strong { (job.status.as_str()) } " at " (job.provider) ". The daemon asks the provider to stop it where the provider has a cancel call, then marks it " code { "canceled" } ", and its scene version failed. A download in progress is never completed." }
        (confirm_form(&op, &Confirm { action: &action, button: "Cancel this job", hidden: &[], reason: Some("Reason (kept in the audit log)"), reason_required: false, back: &back }))
    };
    confirm_page(&op, "Cancel a job", body)
}

pub async fn confirm_resolve(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let resubmit = match q.get("action").map(String::as_str) {
        Some("resubmit") => true,
        Some("fail") => false,
        other => {
            return problem(
                StatusCode::BAD_REQUEST,
                Some(&op),
                &format!("action must be resubmit or fail, not {other:?}"),
            );
        }
    };
    let job = match job_for(&s, &op, &id).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let now = s.clock.now_ms();
    // The newest sign of life from the provider: the last audit event, or
    // the row's own update time.
    let last_event = s
        .worker
        .store()
        .job_events(&id, 500, LIMITS)
        .await
        .ok()
        .and_then(|e| e.into_iter().next_back());
    let last_seen = last_event
        .as_ref()
        .map_or(job.updated_at, |e| e.created_at.max(job.updated_at));
    let action = format!("/ops/jobs/{}/resolve", urlencode(&id));
    let back = format!("/ops/jobs/{}", urlencode(&id));
    let verb = if resubmit { "resubmit" } else { "fail" };
    let body = html! {
        h1 { (if resubmit { "Resubmit" } else { "Fail" }) " job " code { (id) } }
        dl.facts {
            dt { "Why it stopped" } dd { (job.last_error.as_deref().unwrap_or("(no reason recorded)")) }
            dt { "Idempotency key" } dd { code { (job.idempotency_key.as_deref().unwrap_or("–")) } }
            dt { "Provider job id" } dd { code { (job.provider_job_id.as_deref().unwrap_or("–")) } }
            dt { "Attempts" } dd { (job.attempts) }
            @if let Some(e) = &last_event { dt { "Last answer" } dd { code { (clip(&e.detail, 500)) } } }
        }
        @if resubmit {
            div #resubmit-warning .warning role="alert" {
                p { strong { "This may be paid twice." } " The provider may have been working on this job as recently as "
                    (instant(last_seen)) " (" (age(now - last_seen)) " ago)"
                    @if let Some(k) = &job.idempotency_key { ", under idempotency key " code { (k) } }
                    ". A resubmit sends it as a new job; if the first one did run, both are billed." }
            }
        }
        (confirm_form(&op, &Confirm { action: &action, button: if resubmit { "Resubmit this job" } else { "Fail this job" }, hidden: &[("action", verb)], reason: Some("Reason (required, kept in the audit log)"), reason_required: true, back: &back }))
    };
    confirm_page(&op, "Resolve a job", body)
}
