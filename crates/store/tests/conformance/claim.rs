//! Claiming: the eligibility rules, ordering, concurrency and the plan.

use std::collections::{BTreeSet, HashMap};

use clawcut_core::{EligibilityRules, JobStatus};
use clawcut_store::Backend;

use super::*;

pub async fn claim_respects_each_rule(url: &str) {
    let ctx = setup(url).await;
    let mut rows = Vec::new();
    let mut add = |id: &str, status: &'static str, pid: Option<&str>, f: &dyn Fn(&mut RawJob)| {
        let mut j = RawJob::new(id, status, pid);
        f(&mut j);
        rows.push(j);
    };
    add("ok_pending", "pending", Some("p1"), &|_| {});
    add("ok_queued_pid", "queued", Some("p2"), &|_| {});
    add("ok_processing", "processing", Some("p3"), &|_| {});
    add("young", "pending", Some("p4"), &|j| {
        j.updated_at = NOW - MIN
    });
    add("min_age_boundary", "pending", Some("p5"), &|j| {
        j.updated_at = NOW - 2 * MIN
    });
    add("expired_still_claimed", "pending", Some("p6"), &|j| {
        j.created_at = NOW - 8 * DAY
    });
    add("image", "pending", Some("p7"), &|j| j.kind = "image");
    add("completed", "completed", Some("p8"), &|_| {});
    add("failed", "failed", Some("p9"), &|_| {});
    add("canceled", "canceled", Some("p10"), &|_| {});
    add("needs_operator", "needs_operator", Some("p11"), &|_| {});
    add("not_due", "pending", Some("p12"), &|j| {
        j.next_attempt_at = NOW + 1
    });
    add("due_now", "pending", Some("p13"), &|j| {
        j.next_attempt_at = NOW
    });
    add("live_lease", "pending", Some("p14"), &|j| {
        j.lease_expires_at = Some(NOW + 1)
    });
    add("lease_expired", "pending", Some("p15"), &|j| {
        j.lease_expires_at = Some(NOW)
    });
    add("submitting", "submitting", None, &|_| {});
    add("queued_no_pid", "queued", None, &|_| {});
    add("pending_no_pid", "pending", None, &|_| {});
    insert_raw(&ctx, &rows).await;

    let off = rules(false);
    let got: BTreeSet<String> = claim_ids(&ctx, "w1", NOW, 100, &off)
        .await
        .into_iter()
        .collect();
    let want: BTreeSet<String> = [
        "ok_pending",
        "ok_queued_pid",
        "ok_processing",
        "min_age_boundary",
        "expired_still_claimed",
        "due_now",
        "lease_expired",
        "submitting",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(got, want);

    // With submission enabled the queued job without an id is taken too,
    // and nothing else (the others are leased now).
    let on = rules(true);
    let got = claim_ids(&ctx, "w2", NOW, 100, &on).await;
    assert_eq!(got, vec!["queued_no_pid".to_owned()]);
    // Claim touched neither status nor updated_at.
    let j = ctx.store.get_job("ok_pending").await.unwrap().unwrap();
    assert_eq!(j.status, JobStatus::Pending);
    assert_eq!(j.updated_at, NOW - 10 * MIN);
    assert_eq!(j.lease_owner.as_deref(), Some("w1"));
    assert_eq!(j.lease_expires_at, Some(NOW + 60_000));
    assert_eq!(j.fencing_token, 1);
}

/// Many combinations of every column claim looks at, checked against the
/// reference implementation `EligibilityRules::check`.
pub async fn claim_agrees_with_eligibility_check(url: &str) {
    let ctx = setup(url).await;
    let kinds = ["video", "image"];
    let statuses = JobStatus::ALL.map(|s| s.as_str());
    let pids = [Some("px"), None];
    let updated = [NOW - 10 * MIN, NOW - 2 * MIN, NOW - 2 * MIN + 1];
    let next = [0, NOW, NOW + 1];
    let leases = [None, Some(NOW), Some(NOW + 1)];
    let created = [NOW - 10 * MIN, NOW - 7 * DAY];
    let mut rows = Vec::new();
    let mut n = 0u32;
    for kind in kinds {
        for status in statuses {
            for pid in pids {
                for u in updated {
                    for na in next {
                        for l in leases {
                            for c in created {
                                n += 1;
                                // A deterministic third of the cross product
                                // keeps the case quick but varied.
                                if !n.is_multiple_of(3) && kind == "image" {
                                    continue;
                                }
                                let mut j = RawJob::new(&format!("j{n:05}"), status, pid);
                                j.kind = kind;
                                j.updated_at = u;
                                j.next_attempt_at = na;
                                j.lease_expires_at = l;
                                j.created_at = c;
                                rows.push(j);
                            }
                        }
                    }
                }
            }
        }
    }
    insert_raw(&ctx, &rows).await;
    for (round, r) in [rules(false), rules(true)].iter().enumerate() {
        let now = NOW;
        let mut want = BTreeSet::new();
        for j in &rows {
            let job = ctx.store.get_job(&j.id).await.unwrap().unwrap();
            if is_eligible(r, &job, now) {
                want.insert(job.id.clone());
            }
        }
        assert!(!want.is_empty());
        let worker = format!("w{round}");
        let claimed = jobs(
            ctx.store
                .claim(&claim_req(&worker, now, 100_000, r))
                .await
                .unwrap(),
        );
        let got: BTreeSet<String> = claimed.iter().map(|j| j.id.clone()).collect();
        assert_eq!(got.len(), claimed.len());
        assert_eq!(got, want, "submit_enabled={}", r.submit_enabled);
        // Give them back so the next rule set sees the same rows.
        for j in claimed {
            ctx.store.release(&j.lease().unwrap()).await.unwrap();
        }
    }
}

pub async fn claim_oldest_first_with_limit(url: &str) {
    let ctx = setup(url).await;
    let mut rows = Vec::new();
    for (id, age) in [("e", 3), ("a", 9), ("c", 5), ("b", 5), ("d", 4)] {
        let mut j = RawJob::new(id, "pending", Some("p"));
        j.updated_at = NOW - age * MIN;
        rows.push(j);
    }
    insert_raw(&ctx, &rows).await;
    let r = rules(false);
    assert!(claim_ids(&ctx, "w", NOW, 0, &r).await.is_empty());
    assert_eq!(claim_ids(&ctx, "w", NOW, 2, &r).await, ["a", "b"]);
    assert_eq!(claim_ids(&ctx, "w", NOW, 2, &r).await, ["c", "d"]);
    assert_eq!(claim_ids(&ctx, "w", NOW, 2, &r).await, ["e"]);
    assert!(claim_ids(&ctx, "w", NOW, 2, &r).await.is_empty());
}

pub async fn claim_only_job_and_force(url: &str) {
    let ctx = setup(url).await;
    let mut young = RawJob::new("young", "pending", Some("p"));
    young.updated_at = NOW;
    young.next_attempt_at = NOW + 60 * MIN;
    let old = RawJob::new("old", "pending", Some("p"));
    let done = RawJob::new("done", "completed", Some("p"));
    let mut leased = RawJob::new("leased", "pending", Some("p"));
    leased.lease_expires_at = Some(NOW + MIN);
    insert_raw(&ctx, &[young, old, done, leased]).await;
    let r = rules(false);
    let mut req = claim_req("w", NOW, 10, &r);
    req.only_job = Some("young");
    assert!(
        ctx.store.claim(&req).await.unwrap().is_empty(),
        "too young, not due"
    );
    req.force = true;
    let got = jobs(ctx.store.claim(&req).await.unwrap());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, "young");
    // Force never overrides final states or live leases.
    for id in ["done", "leased", "missing"] {
        req.only_job = Some(id);
        assert!(ctx.store.claim(&req).await.unwrap().is_empty(), "{id}");
    }
    req.only_job = None;
    assert_eq!(
        jobs(ctx.store.claim(&req).await.unwrap())
            .iter()
            .map(|j| j.id.as_str())
            .collect::<Vec<_>>(),
        ["old"]
    );
}

/// Several stores on separate connections claim at once, round after
/// round, and snooze what they got while the others still claim; no job is
/// ever leased to two of them in the same round. Between rounds the clock
/// moves past the snooze, so every job is due again.
pub async fn concurrent_claimers_never_share_a_job(url: &str) {
    const CLAIMERS: usize = 4;
    const ROUNDS: i64 = 50;
    const JOBS: usize = 30;
    let ctx = setup(url).await;
    let rows: Vec<RawJob> = (0..JOBS)
        .map(|i| RawJob::new(&format!("c{i:03}"), "pending", Some("p")))
        .collect();
    insert_raw(&ctx, &rows).await;
    let mut stores = Vec::new();
    for _ in 0..CLAIMERS {
        stores.push(clawcut_store::connect(url).await.unwrap());
    }
    let mut claims_per_job: HashMap<String, i64> = HashMap::new();
    for round in 0..ROUNDS {
        let now = NOW + round * 10 * MIN;
        let barrier = Arc::new(tokio::sync::Barrier::new(CLAIMERS));
        let mut handles = Vec::new();
        for (i, store) in stores.iter().enumerate() {
            let store = store.clone();
            let barrier = barrier.clone();
            handles.push(tokio::spawn(async move {
                let r = rules(false);
                let worker = format!("claimer-{i}");
                barrier.wait().await;
                let mut req = claim_req(&worker, now, 10, &r);
                // Long enough to outlive the round, short enough to have
                // expired by the next one.
                req.lease_ttl = Duration::from_secs(60);
                let jobs = jobs(store.claim(&req).await.unwrap());
                // Snooze each job while the others are still claiming: the
                // released row is not due again within this round.
                for job in &jobs {
                    let snooze = clawcut_store::Reschedule {
                        from: JobStatus::Pending,
                        to: JobStatus::Pending,
                        now,
                        attempts: 0,
                        polls: job.polls + 1,
                        next_attempt_at: now + 5 * MIN,
                        last_error: None,
                    };
                    store
                        .reschedule(&job.lease().unwrap(), &snooze)
                        .await
                        .unwrap();
                }
                jobs
            }));
        }
        let mut seen = BTreeSet::new();
        let mut total = 0;
        for h in handles {
            for job in h.await.unwrap() {
                total += 1;
                assert!(
                    seen.insert(job.id.clone()),
                    "round {round}: {} claimed twice",
                    job.id
                );
                let n = claims_per_job.entry(job.id.clone()).or_default();
                *n += 1;
                assert_eq!(job.fencing_token, *n, "token grows by one per claim");
            }
        }
        assert_eq!(total, JOBS, "round {round}: every job claimed exactly once");
    }
    for row in &rows {
        let job = ctx.store.get_job(&row.id).await.unwrap().unwrap();
        assert_eq!(i64::from(job.polls), ROUNDS, "{}", job.id);
        assert_eq!(job.fencing_token, ROUNDS);
        assert_eq!(job.lease_owner, None);
    }
    // Every store holds its own pool; close them so PostgreSQL can drop the DB.
    drop(stores);
}

pub async fn claim_uses_partial_index(url: &str) {
    let ctx = setup(url).await;
    let b = ctx.backend();
    let bulk = match b {
        Backend::Sqlite => {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO ai_jobs (id, kind, provider, request, status, provider_job_id,
                                  created_at, updated_at)
             SELECT 'done' || i, 'video', 'openai', '{}',
                    CASE i % 3 WHEN 0 THEN 'completed' WHEN 1 THEN 'failed' ELSE 'canceled' END,
                    'p' || i, 1700000000000 + i, 1700000000000 + i FROM n"
        }
        Backend::Postgres => {
            "INSERT INTO ai_jobs (id, kind, provider, request, status, provider_job_id,
                                  created_at, updated_at)
             SELECT 'done' || i, 'video', 'openai', '{}',
                    CASE i % 3 WHEN 0 THEN 'completed' WHEN 1 THEN 'failed' ELSE 'canceled' END,
                    'p' || i, to_timestamp(1700000000 + i), to_timestamp(1700000000 + i)
             FROM generate_series(1, 20000) AS i;
             ANALYZE ai_jobs;"
        }
    };
    ctx.db.exec(bulk).await.unwrap();
    insert_raw(
        &ctx,
        &[
            RawJob::new("live1", "pending", Some("p")),
            RawJob::new("live2", "processing", Some("p")),
            RawJob::new("live3", "submitting", None),
        ],
    )
    .await;
    let plan = explain_claim(&ctx, clawcut_store::claim_sql(b), None).await;
    assert!(
        plan.contains("ai_jobs_claimable"),
        "claim must use the partial index; plan:\n{plan}"
    );
    // With few rows due, the claim reads them through the due index.
    let plan = explain_claim(&ctx, clawcut_store::claim_due_sql(b), Some(1000)).await;
    assert!(
        plan.contains("ai_jobs_due"),
        "the few-due claim must read the due index; plan:\n{plan}"
    );
    let started = std::time::Instant::now();
    let got = claim_ids(&ctx, "w", NOW, 25, &rules(false)).await;
    assert_eq!(got.len(), 3);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A claim statement's parameters 1 to 8, as a plain claim by worker `w`
/// at `NOW` binds them.
macro_rules! claim_params {
    ($q:expr, $rules:expr, $limit:expr) => {
        $q.bind($rules.submit_enabled)
            .bind(false)
            .bind($rules.updated_before(NOW))
            .bind(NOW)
            .bind(None::<&str>)
            .bind("w")
            .bind(NOW + MIN)
            .bind($limit)
    };
}

async fn explain_claim(ctx: &Ctx, sql: &str, due_cap: Option<i64>) -> String {
    let r: EligibilityRules = rules(false);
    let lines: Vec<String> = match &ctx.db {
        AppDb::Sqlite(pool) => {
            let q = format!("EXPLAIN QUERY PLAN {sql}");
            let rows = claim_params!(
                sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(q)),
                r,
                25_i64
            );
            let rows = match due_cap {
                Some(cap) => rows.bind(cap),
                None => rows,
            };
            let rows = rows.fetch_all(pool).await.unwrap();
            rows.into_iter().map(|r| r.3).collect()
        }
        AppDb::Pg(pool) => {
            let q = format!("EXPLAIN {sql}");
            let rows = claim_params!(
                sqlx::query_as::<_, (String,)>(sqlx::AssertSqlSafe(q)),
                r,
                25_i64
            );
            let rows = match due_cap {
                Some(cap) => rows.bind(cap),
                None => rows,
            };
            let rows = rows.fetch_all(pool).await.unwrap();
            rows.into_iter().map(|r| r.0).collect()
        }
    };
    lines.join("\n")
}

/// Oldest-updated first among the due rows, whichever way the claim reads
/// them: few due beside many running jobs whose next poll is ahead (read
/// through the due index), and more due rows than that index's read holds
/// (the walk in `updated_at` order).
pub async fn claim_takes_the_oldest_due_beside_many_not_due(url: &str) {
    let ctx = setup(url).await;
    let b = ctx.backend();
    let bulk =
        |prefix: &str, n: i64, base: Millis, next: Millis| bulk_due(b, prefix, n, base, next, 0);
    // 3000 running jobs updated long ago whose next poll is an hour ahead,
    // then 30 due ones updated later.
    ctx.db
        .exec(&bulk("wait", 3000, NOW - 5 * DAY, NOW + 60 * MIN))
        .await
        .unwrap();
    ctx.db
        .exec(&bulk("due", 30, NOW - DAY, NOW - MIN))
        .await
        .unwrap();
    let r = rules(false);
    let got = claim_ids(&ctx, "w", NOW, 5, &r).await;
    assert_eq!(got, ["due1", "due2", "due3", "due4", "due5"]);
    // 1500 more due rows, updated before the first 30: more than the due
    // index read holds, so the claim walks by `updated_at`.
    ctx.db
        .exec(&bulk("late", 1500, NOW - 2 * DAY, NOW - MIN))
        .await
        .unwrap();
    let got = claim_ids(&ctx, "w", NOW, 3, &r).await;
    assert_eq!(got, ["late1", "late2", "late3"]);
    let report = ctx.store.status_report(NOW, &r).await.unwrap();
    assert_eq!(report.eligible, 30 - 5 + 1500 - 3);
    assert_eq!(
        ctx.store.gauges(NOW, &r).await.unwrap().eligible,
        report.eligible
    );
}

/// `n` processing rows `prefix<i>`, updated at `base + i`, next due at
/// `next - i * next_step` (a later row is due earlier when the step is
/// positive).
fn bulk_due(
    b: Backend,
    prefix: &str,
    n: i64,
    base: Millis,
    next: Millis,
    next_step: i64,
) -> String {
    match b {
        Backend::Sqlite => format!(
            "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {n})
             INSERT INTO ai_jobs (id, kind, provider, request, status, provider_job_id,
                                  created_at, updated_at, next_attempt_at)
             SELECT '{prefix}' || i, 'video', 'openai', '{{}}', 'processing', 'p' || i,
                    {base}, {base} + i, {next} - i * {next_step} FROM g"
        ),
        Backend::Postgres => format!(
            "INSERT INTO ai_jobs (id, kind, provider, request, status, provider_job_id,
                                  created_at, updated_at, next_attempt_at)
             SELECT '{prefix}' || i, 'video', 'openai', '{{}}', 'processing', 'p' || i,
                    to_timestamp(({base})::float8 / 1000.0),
                    to_timestamp(({base} + i)::float8 / 1000.0),
                    to_timestamp(({next} - i * {next_step})::float8 / 1000.0)
             FROM generate_series(1, {n}) AS i;
             ANALYZE ai_jobs;"
        ),
    }
}

/// The due-first claim's own guard, on the statement itself: with one row
/// due more than it may read, it claims nothing (it would have missed the
/// oldest-updated); with exactly as many, the oldest-updated of them.
pub async fn claim_due_claims_nothing_when_more_are_due_than_it_reads(url: &str) {
    let ctx = setup(url).await;
    // 11 due rows; the later-updated are due first, so a read of the first
    // 10 by due time misses `d1`, the oldest-updated.
    ctx.db
        .exec(&bulk_due(
            ctx.backend(),
            "d",
            11,
            NOW - DAY,
            NOW - MIN,
            1000,
        ))
        .await
        .unwrap();
    assert_eq!(claim_due_raw(&ctx, 3, 10).await, Vec::<String>::new());
    assert_eq!(claim_due_raw(&ctx, 3, 11).await, ["d1", "d2", "d3"]);
}

/// `claim_due_sql` run as it is, with `limit` and the read's cap; the
/// claimed ids, sorted.
async fn claim_due_raw(ctx: &Ctx, limit: i64, cap: i64) -> Vec<String> {
    let r = rules(false);
    let sql = clawcut_store::claim_due_sql(ctx.backend());
    macro_rules! run {
        ($pool:expr) => {
            claim_params!(sqlx::query_scalar::<_, String>(sql), r, limit)
                .bind(cap)
                .fetch_all($pool)
                .await
                .unwrap()
        };
    }
    let mut ids = match &ctx.db {
        AppDb::Sqlite(pool) => run!(pool),
        AppDb::Pg(pool) => run!(pool),
    };
    ids.sort();
    ids
}

/// A backlog larger than the due-first read whose earliest-due rows are
/// the newest: the store's claims still take the oldest-updated first,
/// while the backlog lasts and after it has shrunk to a few due rows.
pub async fn claim_takes_the_oldest_of_a_backlog_whose_first_due_are_newer(url: &str) {
    let ctx = setup(url).await;
    let b = ctx.backend();
    // 1500 due; the due index's first 1000 are `late1500` to `late501`.
    ctx.db
        .exec(&bulk_due(b, "late", 1500, NOW - 2 * DAY, NOW - MIN, 1))
        .await
        .unwrap();
    let r = rules(false);
    assert_eq!(
        claim_ids(&ctx, "w", NOW, 3, &r).await,
        ["late1", "late2", "late3"]
    );
    assert_eq!(
        claim_ids(&ctx, "w", NOW + 1, 3, &r).await,
        ["late4", "late5", "late6"]
    );
    // All but the 20 newest of the rest finish.
    let upto = NOW - 2 * DAY + 1480;
    ctx.db
        .exec(&match b {
            Backend::Sqlite => format!(
                "UPDATE ai_jobs SET status = 'completed'
                 WHERE lease_owner IS NULL AND updated_at <= {upto}"
            ),
            Backend::Postgres => format!(
                "UPDATE ai_jobs SET status = 'completed'
                 WHERE lease_owner IS NULL AND updated_at <= to_timestamp(({upto})::float8 / 1000.0)"
            ),
        })
        .await
        .unwrap();
    assert_eq!(
        claim_ids(&ctx, "w", NOW + 2, 3, &r).await,
        ["late1481", "late1482", "late1483"]
    );
    // Long after: whichever statement the store now tries first.
    assert_eq!(
        claim_ids(&ctx, "w", NOW + 5_000, 3, &r).await,
        ["late1484", "late1485", "late1486"]
    );
    let report = ctx.store.status_report(NOW + 5_000, &r).await.unwrap();
    assert_eq!(report.eligible, 20 - 6);
}

/// PostgreSQL only: a migrated database seeded by `seeds` (bulk inserts),
/// and a `PgStore` of its own, whose pools a case may read and close.
async fn pg_store_over(url: &str, seeds: &[String]) -> clawcut_store::PgStore {
    let ctx = setup(url).await;
    assert_eq!(ctx.backend(), Backend::Postgres);
    for seed in seeds {
        ctx.db.exec(seed).await.unwrap();
    }
    clawcut_store::PgStore::connect(url).await.unwrap()
}

/// PostgreSQL only: on a busy table (many live rows not yet due) the
/// due-first claim keeps one generic plan instead of being planned afresh
/// on every call, which cost more than running it (BENCHMARKS.md, item 1).
/// The plan cache's own counters, on the claim pool's connections.
pub async fn claim_due_is_planned_once_on_a_busy_table(url: &str) {
    let b = Backend::Postgres;
    let store = pg_store_over(
        url,
        &[
            bulk_due(b, "wait", 3000, NOW - 5 * DAY, NOW + 60 * MIN, 0),
            bulk_due(b, "due", 25, NOW - DAY, NOW - MIN, 0),
        ],
    )
    .await;
    let r = rules(false);
    for i in 0..12 {
        let got = store.claim(&claim_req("w", NOW + i, 1, &r)).await.unwrap();
        assert_eq!(jobs(got).len(), 1);
    }
    // The claims may have run on either of the pool's two connections:
    // hold both and add up their counters.
    let pool = store.due_claim_pool();
    let conns = [pool.acquire().await.unwrap(), pool.acquire().await.unwrap()];
    let (mut generic, mut custom) = (0, 0);
    for mut conn in conns {
        let counts: Option<(i64, i64)> = sqlx::query_as(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements
             WHERE statement = $1",
        )
        .bind(clawcut_store::claim_due_sql(b))
        .fetch_optional(&mut *conn)
        .await
        .unwrap();
        let (g, c) = counts.unwrap_or_default();
        (generic, custom) = (generic + g, custom + c);
    }
    assert_eq!(
        (generic >= 1, custom),
        (true, 0),
        "{generic} generic, {custom} custom"
    );
}

/// PostgreSQL: a claim of a run of rows the app inserted together (every
/// row of their pages at once) rewrites them in place, a HOT update each,
/// instead of a new version on another page and an entry in every index.
/// Needs room for a page's rows on that page (migration 7's fillfactor); at
/// the old 85, 17 % of them were.
pub async fn claim_of_a_run_of_rows_updates_them_in_place(url: &str) {
    let b = Backend::Postgres;
    let store = pg_store_over(url, &[bulk_due(b, "run", 400, NOW - DAY, NOW - MIN, 0)]).await;
    let r = rules(false);
    let got = store.claim(&claim_req("w", NOW, 400, &r)).await.unwrap();
    assert_eq!(jobs(got).len(), 400);
    // A backend publishes its table counters when it exits.
    store.due_claim_pool().close().await;
    store.pool().close().await;
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let mut counts = (0i64, 0i64);
    for _ in 0..100 {
        counts = sqlx::query_as(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'ai_jobs'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if counts.0 >= 400 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    pool.close().await;
    let (updated, hot) = counts;
    assert_eq!(updated, 400, "the claim's updates, counted");
    assert!(
        hot * 4 >= updated * 3,
        "{hot} of {updated} claimed rows updated in place"
    );
}
