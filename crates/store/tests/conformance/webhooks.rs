//! Webhook lookups: `make_due` probes indexes (it runs once per accepted
//! webhook, under SQLite's write lock), and delivery ids are noted once.

use std::time::{Duration, Instant};

use clawcut_store::Backend;
use clawcut_test_support::db::AppDb;

use super::*;

pub async fn make_due_probes_indexes_not_a_scan(url: &str) {
    let ctx = setup(url).await;
    // 20k fal-style ids (`model|request`) and 20k bare ones, all in flight.
    let bulk = match ctx.backend() {
        Backend::Sqlite => {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO ai_jobs (id, kind, provider, request, status, provider_job_id,
                                  created_at, updated_at, next_attempt_at)
             SELECT 'j' || i, 'video', CASE i % 2 WHEN 0 THEN 'fal' ELSE 'openai' END, '{}',
                    'processing',
                    CASE i % 2 WHEN 0 THEN 'fal-ai/veo3|req-' || i ELSE 'video_' || i END,
                    1700000000000, 1700000000000, 1900000000000 FROM n"
        }
        Backend::Postgres => {
            "INSERT INTO ai_jobs (id, kind, provider, request, status, provider_job_id,
                                  created_at, updated_at, next_attempt_at)
             SELECT 'j' || i, 'video', CASE i % 2 WHEN 0 THEN 'fal' ELSE 'openai' END, '{}',
                    'processing',
                    CASE i % 2 WHEN 0 THEN 'fal-ai/veo3|req-' || i ELSE 'video_' || i END,
                    to_timestamp(1700000000), to_timestamp(1700000000), to_timestamp(1900000000)
             FROM generate_series(1, 20000) AS i;
             ANALYZE ai_jobs;"
        }
    };
    ctx.db.exec(bulk).await.unwrap();
    let plan = explain_make_due(&ctx, "fal", "req-10").await;
    assert!(
        plan.contains("ai_jobs_provider_job_tail") && !plan.contains("Seq Scan"),
        "make_due must probe the tail index; plan:\n{plan}"
    );
    assert!(
        plan.contains("ai_jobs_provider_ids"),
        "make_due must probe the provider-id index for the exact id; plan:\n{plan}"
    );
    assert!(
        !plan.contains("SCAN ai_jobs") || plan.contains("USING INDEX"),
        "make_due must not scan ai_jobs; plan:\n{plan}"
    );
    let started = Instant::now();
    for i in (2..=200).step_by(2) {
        assert!(
            ctx.store
                .make_due("fal", &format!("req-{i}"), NOW)
                .await
                .unwrap()
        );
    }
    assert!(
        ctx.store.make_due("openai", "video_11", NOW).await.unwrap(),
        "a bare id still matches exactly"
    );
    assert!(!ctx.store.make_due("openai", "ideo_11", NOW).await.unwrap());
    let took = started.elapsed();
    eprintln!(
        "{:?}: 101 make_due over 20k rows in {took:?}; plan:\n{plan}",
        ctx.backend()
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

async fn explain_make_due(ctx: &Ctx, provider: &str, pid: &str) -> String {
    let sql = clawcut_store::make_due_sql(ctx.backend());
    match &ctx.db {
        AppDb::Sqlite(pool) => {
            let q = format!("EXPLAIN QUERY PLAN {sql}");
            let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(q))
                .bind(provider)
                .bind(pid)
                .bind(NOW)
                .fetch_all(pool)
                .await
                .unwrap();
            rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
        }
        AppDb::Pg(pool) => {
            let q = format!("EXPLAIN {sql}");
            let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(q))
                .bind(provider)
                .bind(pid)
                .bind(NOW)
                .fetch_all(pool)
                .await
                .unwrap();
            rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n")
        }
    }
}

pub async fn webhook_deliveries_are_noted_once(url: &str) {
    let ctx = setup(url).await;
    let s = &ctx.store;
    assert!(
        s.note_webhook("rep", "msg_1", NOW, NOW - 60 * MIN)
            .await
            .unwrap()
    );
    assert!(
        !s.note_webhook("rep", "msg_1", NOW + 1, NOW - 60 * MIN)
            .await
            .unwrap(),
        "a replay"
    );
    assert!(
        s.note_webhook("other", "msg_1", NOW, NOW - 60 * MIN)
            .await
            .unwrap(),
        "per provider"
    );
    // Forgotten once older than the window: the same id is new again.
    assert!(
        s.note_webhook("rep", "msg_1", NOW + 61 * MIN, NOW + MIN)
            .await
            .unwrap()
    );
}
