//! The operator panel's reads and its snapshot-bound "retry now": keyset
//! pages that visit every row once (ties on `updated_at` included), capped
//! counts, filters, error groups, a job's events and media, the time spent
//! in each state.

use clawcut_core::{JobStatus, Millis};
use clawcut_store::{
    Completion, Cursor, JobQuery, JobView, PanelLimits, Reschedule, RetryNow, SeenJob, Settle,
};

use super::*;

fn query<'a>(view: JobView, r: &'a EligibilityRules, limit: u32) -> JobQuery<'a> {
    JobQuery {
        view,
        status: None,
        provider: None,
        error_head: None,
        search: None,
        after: None,
        limit,
        now: NOW,
        rules: r,
        limits: PanelLimits::default(),
        count: true,
    }
}

/// Every id of a view, page by page, and the first page's count.
async fn walk(ctx: &Ctx, q: &JobQuery<'_>) -> (Vec<String>, Option<u64>) {
    let mut ids = Vec::new();
    let mut after: Option<Cursor> = None;
    let mut first_count = None;
    for page_no in 0.. {
        assert!(page_no < 100, "the walk does not end");
        let mut q = q.clone();
        q.after = after.as_ref();
        let page = ctx.store.panel_jobs(&q).await.expect("panel page");
        if page_no == 0 {
            first_count = page.count;
        }
        assert!(page.jobs.len() <= q.limit as usize);
        ids.extend(page.jobs.iter().map(|j| j.id.clone()));
        match page.next {
            Some(c) => {
                // The cursor survives its text form.
                after = Some(Cursor::decode(&c.encode()).expect("cursor round trip"));
            }
            None => break,
        }
    }
    (ids, first_count)
}

async fn exec(ctx: &Ctx, sql: &str) {
    ctx.db
        .exec(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Rows updated within one millisecond: on PostgreSQL a microsecond apart.
async fn same_millisecond(ctx: &Ctx, ids: &[&str], ms: Millis) {
    for (i, id) in ids.iter().enumerate() {
        let v = match ctx.backend() {
            Backend::Sqlite => ms.to_string(),
            Backend::Postgres => format!(
                "to_timestamp({ms}::float8 / 1000.0) + interval '{} microseconds'",
                100 + i * 7
            ),
        };
        exec(
            ctx,
            &format!("UPDATE ai_jobs SET updated_at = {v} WHERE id = '{id}'"),
        )
        .await;
    }
}

pub async fn panel_pages_visit_every_row_once(url: &str) {
    let ctx = setup(url).await;
    let mut raw = Vec::new();
    for i in 0..23 {
        let status = match i % 4 {
            0 => "completed",
            1 => "pending",
            2 => "needs_operator",
            _ => "failed",
        };
        let mut j = RawJob::new(&format!("j{i:02}"), status, Some(&format!("p{i:02}")));
        j.updated_at = NOW - (i as i64 % 7) * MIN - 5 * MIN;
        raw.push(j);
    }
    insert_raw(&ctx, &raw).await;
    same_millisecond(&ctx, &["j03", "j10", "j17"], NOW - 3 * MIN).await;
    let r = rules(false);

    // Newest first over every job; the expected order from the rows as read.
    let (ids, count) = walk(&ctx, &query(JobView::All, &r, 4)).await;
    assert_eq!(count, Some(23));
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 23, "every row once: {ids:?}");
    let mut expect = Vec::new();
    for id in &ids {
        expect.push((
            ctx.store.get_job(id).await.unwrap().unwrap().updated_at,
            id.clone(),
        ));
    }
    let mut by_order = expect.clone();
    by_order.sort_by(|a, b| b.cmp(a));
    assert_eq!(
        expect.iter().map(|e| e.0).collect::<Vec<_>>(),
        by_order.iter().map(|e| e.0).collect::<Vec<_>>(),
        "newest first"
    );

    // Oldest first, one status.
    let (ids, count) = walk(&ctx, &query(JobView::NeedsOperator, &r, 2)).await;
    let want: Vec<String> = (0..23)
        .filter(|i| i % 4 == 2)
        .map(|i| format!("j{i:02}"))
        .collect();
    assert_eq!(count, Some(want.len() as u64));
    let mut got = ids.clone();
    got.sort();
    assert_eq!(got, want);
    let times: Vec<Millis> = {
        let mut t = Vec::new();
        for id in &ids {
            t.push(ctx.store.get_job(id).await.unwrap().unwrap().updated_at);
        }
        t
    };
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {times:?}"
    );

    // Stranded: the pending ones (with a provider id, untouched for min_age).
    let (ids, _) = walk(&ctx, &query(JobView::Stranded, &r, 3)).await;
    let mut got = ids.clone();
    got.sort();
    let want: Vec<String> = (0..23)
        .filter(|i| i % 4 == 1)
        .map(|i| format!("j{i:02}"))
        .collect();
    assert_eq!(got, want);

    // Filters: status, provider, search by id, provider id and scene.
    let mut q = query(JobView::All, &r, 50);
    q.status = Some(JobStatus::Failed);
    let (ids, count) = walk(&ctx, &q).await;
    assert_eq!(ids.len(), 5);
    assert_eq!(count, Some(5));
    q.provider = Some("nobody");
    assert_eq!(walk(&ctx, &q).await.0.len(), 0);
    let mut q = query(JobView::All, &r, 50);
    for needle in ["j07", "p07"] {
        q.search = Some(needle);
        assert_eq!(walk(&ctx, &q).await.0, vec!["j07".to_owned()], "{needle}");
    }
    exec(
        &ctx,
        "UPDATE ai_jobs SET scene_id = 'scene-x' WHERE id IN ('j01', 'j02')",
    )
    .await;
    q.search = Some("scene-x");
    let mut got = walk(&ctx, &q).await.0;
    got.sort();
    assert_eq!(got, vec!["j01".to_owned(), "j02".to_owned()]);

    // A capped count reads as "at least".
    let mut q = query(JobView::All, &r, 2);
    q.limits.count_cap = 5;
    let page = ctx.store.panel_jobs(&q).await.unwrap();
    assert_eq!((page.count, page.count_capped), (Some(5), true));
    q.count = false;
    let page = ctx.store.panel_jobs(&q).await.unwrap();
    assert_eq!((page.count, page.count_capped), (None, false));

    // A list never fetches the app's request JSON; the job itself has it.
    let listed = &page.jobs[0];
    assert_eq!(listed.request, "");
    let whole = ctx.store.get_job(&listed.id).await.unwrap().unwrap();
    assert!(!whole.request.is_empty(), "{:?}", whole.request);
}

/// `n` pending jobs of `provider` that met `error` (attempts 2), due later.
async fn erroring(ctx: &Ctx, prefix: &str, n: usize, provider: &str, error: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}{i}");
        let mut j = RawJob::new(&id, "pending", Some(&format!("pid-{id}")));
        j.next_attempt_at = NOW + 60 * MIN;
        insert_raw(ctx, &[j]).await;
        exec(
            ctx,
            &format!(
                "UPDATE ai_jobs SET provider = '{provider}', attempts = 2, last_error = '{error}' WHERE id = '{id}'"
            ),
        )
        .await;
        ids.push(id);
    }
    ids
}

pub async fn error_groups_and_retry_now_keep_to_the_snapshot(url: &str) {
    let ctx = setup(url).await;
    let group = erroring(&ctx, "s", 4, "openai", "Server(503): upstream unavailable").await;
    erroring(&ctx, "t", 1, "openai", "Timeout: no answer in 30s").await;
    erroring(&ctx, "r", 2, "runway", "Server(503): busy").await;
    erroring(&ctx, "x", 1, "runway", "no colon in this error at all").await;
    // Final jobs are in no group.
    let mut done = RawJob::new("f", "failed", Some("pid-f"));
    done.updated_at = NOW - MIN;
    insert_raw(&ctx, &[done]).await;
    exec(
        &ctx,
        "UPDATE ai_jobs SET last_error = 'Server(503): old' WHERE id = 'f'",
    )
    .await;

    let groups = ctx
        .store
        .error_groups(50, PanelLimits::default())
        .await
        .unwrap();
    let got: Vec<(String, String, u64)> = groups
        .iter()
        .map(|g| (g.provider.clone(), g.head.clone(), g.count))
        .collect();
    assert_eq!(
        got,
        vec![
            ("openai".into(), "Server(503):".into(), 4),
            ("runway".into(), "Server(503):".into(), 2),
            ("openai".into(), "Timeout:".into(), 1),
            ("runway".into(), "".into(), 1),
        ]
    );

    // The group's jobs, as the operator's preview sees them.
    let r = rules(false);
    let mut q = query(JobView::All, &r, 100);
    q.provider = Some("openai");
    q.error_head = Some("Server(503):");
    let page = ctx.store.panel_jobs(&q).await.unwrap();
    let mut ids: Vec<String> = page.jobs.iter().map(|j| j.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, group);
    let seen: Vec<SeenJob> = page.jobs.iter().map(SeenJob::of).collect();

    // Meanwhile: s0 is claimed (and still leased), s1 retried by the
    // daemon (attempts 3), s2 canceled; s3 is as seen.
    let (_, _lease) = lease_of(&ctx, "s0", "w-other", NOW).await;
    let (j1, l1) = lease_of(&ctx, "s1", "w-other", NOW).await;
    ctx.store
        .reschedule(
            &l1,
            &Reschedule {
                from: j1.status,
                to: j1.status,
                now: NOW,
                attempts: 3,
                polls: 0,
                next_attempt_at: NOW + 90 * MIN,
                last_error: Some("Server(503): upstream unavailable".into()),
            },
        )
        .await
        .unwrap();
    ctx.store
        .cancel(
            "s2",
            "ops:carol",
            None,
            &clawcut_store::ProviderCancel::NotAsked,
            NOW,
        )
        .await
        .unwrap();
    let before_s1 = ctx.db.job("s1").await.unwrap().unwrap();

    let out = ctx
        .store
        .retry_now(&RetryNow {
            jobs: &seen,
            operator: "ops:dave",
            reason: "provider is back",
            bulk_id: "bulk-1",
            now: NOW + 1,
        })
        .await
        .unwrap();
    assert_eq!(out.done, vec!["s3".to_owned()]);
    let mut skipped = out.skipped.clone();
    skipped.sort();
    assert_eq!(skipped, vec!["s0", "s1", "s2"]);

    let s3 = ctx.db.job("s3").await.unwrap().unwrap();
    assert_eq!(s3.next_attempt_at, NOW + 1);
    assert_eq!(s3.status, "pending");
    let ev = ctx.db.events("s3").await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].worker_id, "ops:dave");
    assert_eq!(
        (ev[0].from_status.as_deref(), ev[0].to_status.as_str()),
        (Some("pending"), "pending")
    );
    let detail: serde_json::Value = serde_json::from_str(&ev[0].detail).unwrap();
    assert_eq!(detail["event"], "operator_retry");
    assert_eq!(detail["reason"], "provider is back");
    assert_eq!(detail["bulk"], "bulk-1");
    // The skipped ones are exactly as the changes left them.
    assert_eq!(ctx.db.job("s1").await.unwrap().unwrap(), before_s1);
    assert!(ctx.db.events("s1").await.unwrap().is_empty());
    assert_eq!(ctx.db.job("s2").await.unwrap().unwrap().status, "canceled");
    assert_eq!(
        ctx.db.events("s2").await.unwrap().len(),
        1,
        "only the cancel"
    );
}

pub async fn job_events_media_and_time_in_state(url: &str) {
    let ctx = setup(url).await;
    seed(&ctx, "a", "pending", Some("pa")).await;
    let (job, lease) = lease_of(&ctx, "a", "w1", NOW).await;
    let mut s = Settle {
        from: job.status,
        to: JobStatus::NeedsOperator,
        now: NOW + 5 * MIN,
        reason: Some("provider lost the job".into()),
        provider_job_id: None,
        idempotency_key: None,
        detail: serde_json::json!({"why": "test"}),
        keep_lease: false,
        attempts: None,
    };
    ctx.store.settle(&lease, &s).await.unwrap();
    let noted = ctx
        .store
        .note_operator(
            "a",
            "ops:erin",
            &serde_json::json!({"event": "operator_reconcile"}),
            NOW + 6 * MIN,
        )
        .await
        .unwrap();
    assert_eq!(noted, Some(JobStatus::NeedsOperator));
    assert_eq!(
        ctx.store
            .note_operator("nope", "ops:erin", &serde_json::json!({}), NOW)
            .await
            .unwrap(),
        None
    );
    ctx.store
        .resolve(
            "a",
            clawcut_store::Resolution::Fail,
            "ops:erin",
            Some("gone"),
            NOW + 7 * MIN,
        )
        .await
        .unwrap();

    let ev = ctx
        .store
        .job_events("a", 100, PanelLimits::default())
        .await
        .unwrap();
    let path: Vec<(Option<&str>, &str, &str, Millis)> = ev
        .iter()
        .map(|e| {
            (
                e.from_status.as_deref(),
                e.to_status.as_str(),
                e.worker_id.as_str(),
                e.created_at,
            )
        })
        .collect();
    assert_eq!(
        path,
        vec![
            (Some("pending"), "needs_operator", "w1", NOW + 5 * MIN),
            (
                Some("needs_operator"),
                "needs_operator",
                "ops:erin",
                NOW + 6 * MIN
            ),
            (Some("needs_operator"), "failed", "ops:erin", NOW + 7 * MIN),
        ]
    );
    let limited = ctx
        .store
        .job_events("a", 1, PanelLimits::default())
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);

    // Time in each state: since the previous event, or since creation.
    let t = ctx
        .store
        .recent_transitions(10, PanelLimits::default())
        .await
        .unwrap();
    let mut got: Vec<(Option<String>, String, Millis)> = t
        .iter()
        .map(|t| (t.from_status.clone(), t.to_status.clone(), t.at - t.since))
        .collect();
    got.sort();
    let created = NOW - 10 * MIN;
    assert_eq!(
        got,
        vec![
            (Some("needs_operator".into()), "failed".into(), MIN),
            (Some("needs_operator".into()), "needs_operator".into(), MIN),
            (
                Some("pending".into()),
                "needs_operator".into(),
                NOW + 5 * MIN - created
            ),
        ]
    );
    assert!(t.iter().all(|t| t.provider == "openai"));

    // Media: none yet, then the completed job's columns and its version.
    let m = ctx
        .store
        .job_media("a", PanelLimits::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((m.video_path, m.video_sha256), (None, None));
    assert_eq!(m.version_status.as_deref(), Some("failed"));
    assert!(
        ctx.store
            .job_media("nope", PanelLimits::default())
            .await
            .unwrap()
            .is_none()
    );
    seed(&ctx, "c", "pending", Some("pc")).await;
    let (job, lease) = lease_of(&ctx, "c", "w1", NOW).await;
    let video = clawcut_store::StoredOutput {
        path: "/media/videos/s-c/v-c.mp4".into(),
        sha256: "ab".repeat(32),
        bytes: 1234,
    };
    let c = Completion {
        from: job.status,
        now: NOW + MIN,
        video: video.clone(),
        thumbnail: None,
        thumbnail_problem: None,
    };
    ctx.store
        .complete(&lease, &c, &mut NoopPublish)
        .await
        .unwrap();
    let m = ctx
        .store
        .job_media("c", PanelLimits::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.video_path.as_deref(), Some(video.path.as_str()));
    assert_eq!(m.video_sha256.as_deref(), Some(video.sha256.as_str()));
    assert_eq!(m.video_bytes, Some(1234));
    assert_eq!(m.completed_at, Some(NOW + MIN));
    assert_eq!(m.version_status.as_deref(), Some("ready"));
    s.now = NOW;
}

struct NoopPublish;

impl Publish for NoopPublish {
    fn publish(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn revert(&mut self) {}
    fn committed(&mut self) {}
}
