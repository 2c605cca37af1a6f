//! Migrations and the app's view of the schema.

use clawcut_core::JobStatus;
use clawcut_store::{Backend, StoreError};
use clawcut_test_support::db::{AppDb, NewJob};

use super::*;

pub async fn migrate_is_idempotent_and_app_insert_works(url: &str) {
    let store = clawcut_store::connect(url).await.unwrap();
    let before = store.schema_status().await.unwrap();
    assert_eq!(before.current, 0);
    assert!(!before.is_current());
    assert_eq!(store.migrate().await.unwrap(), every_version(before.latest));
    assert_eq!(store.migrate().await.unwrap(), Vec::<i64>::new());
    let after = store.schema_status().await.unwrap();
    assert!(after.is_current(), "{after:?}");
    assert_eq!(after.current, after.latest);
    store.ping().await.unwrap();
    if store.backend() == Backend::Postgres {
        // Room on each page for the lease columns' in-place (HOT) updates.
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let opts: Option<Vec<String>> =
            sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE relname = 'ai_jobs'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(opts, Some(vec!["fillfactor=50".to_owned()]));
        pool.close().await;
    }

    // The app writes only its own columns; everything else has a default.
    let db = AppDb::connect(url).await.unwrap();
    db.insert_job(&NewJob::video("app1", "queued", None, NOW))
        .await
        .unwrap();
    let row = db.job("app1").await.unwrap().unwrap();
    assert_eq!(row.status, "queued");
    assert_eq!((row.attempts, row.polls, row.fencing_token), (0, 0, 0));
    assert_eq!(row.next_attempt_at, 0);
    assert_eq!(row.lease_owner, None);
    assert_eq!(row.lease_expires_at, None);
    assert_eq!(row.created_at, NOW);
    let job = store.get_job("app1").await.unwrap().unwrap();
    assert_eq!(job.updated_at, NOW);
    assert_eq!(job.request, NewJob::video("x", "queued", None, 0).request);

    // Even created_at/updated_at default to now (in ms on SQLite).
    db.exec(
        "INSERT INTO ai_jobs (id, kind, provider, request, status) \
         VALUES ('app2', 'video', 'openai', '{}', 'queued')",
    )
    .await
    .unwrap();
    db.exec("INSERT INTO scenes (id, title) VALUES ('s', 't')")
        .await
        .unwrap();
    db.exec("INSERT INTO scene_versions (id, scene_id) VALUES ('v', 's')")
        .await
        .unwrap();
    let row = db.job("app2").await.unwrap().unwrap();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (row.created_at - wall).abs() < 60_000,
        "{} vs {wall}",
        row.created_at
    );
    assert!((row.updated_at - wall).abs() < 60_000);
    let v = db.version("v").await.unwrap().unwrap();
    assert_eq!(v.status, "generating");
    assert!((v.created_at - wall).abs() < 60_000);
}

pub async fn migrate_concurrently(url: &str) {
    let mut handles = Vec::new();
    for _ in 0..3 {
        let url = url.to_owned();
        handles.push(tokio::spawn(async move {
            let store = clawcut_store::connect(&url).await.unwrap();
            store.migrate().await.unwrap()
        }));
    }
    let mut applied = Vec::new();
    for h in handles {
        applied.extend(h.await.unwrap());
    }
    applied.sort_unstable();
    let latest = clawcut_store::connect(url)
        .await
        .unwrap()
        .schema_status()
        .await
        .unwrap()
        .latest;
    assert_eq!(
        applied,
        every_version(latest),
        "exactly one process applies each migration"
    );
    let store = clawcut_store::connect(url).await.unwrap();
    assert!(store.schema_status().await.unwrap().is_current());
}

pub async fn schema_newer_than_binary_is_reported(url: &str) {
    let ctx = setup(url).await;
    let sql = match ctx.backend() {
        Backend::Sqlite => {
            "INSERT INTO clawcut_worker_schema (version, description, applied_at) VALUES (99, 'future', 0)"
        }
        Backend::Postgres => {
            "INSERT INTO clawcut_worker_schema (version, description) VALUES (99, 'future')"
        }
    };
    ctx.db.exec(sql).await.unwrap();
    let st = ctx.store.schema_status().await.unwrap();
    assert_eq!(st.current, 99);
    assert!(!st.is_current());
    assert!(st.is_ahead());
    match ctx.store.migrate().await {
        Err(StoreError::SchemaTooNew {
            current: 99,
            latest,
        }) => assert_eq!(latest, st.latest),
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

pub async fn corrupt_row_is_an_error_not_a_panic(url: &str) {
    let ctx = setup(url).await;
    seed(&ctx, "bad", "pending", Some("p")).await;
    ctx.db
        .exec("UPDATE ai_jobs SET attempts = -3 WHERE id = 'bad'")
        .await
        .unwrap();
    match ctx.store.get_job("bad").await {
        Err(StoreError::CorruptRow { job_id, detail }) => {
            assert_eq!(job_id, "bad");
            assert!(detail.contains("attempts"), "{detail}");
        }
        other => panic!("expected CorruptRow, got {other:?}"),
    }
    assert!(ctx.store.get_job("missing").await.unwrap().is_none());
}

/// An existing ClawCut database: the app's tables with only the SPEC's
/// columns, and a stranded job in them. `migrate` adds what the daemon
/// needs and the job becomes claimable.
pub async fn migrate_adopts_existing_app_tables(url: &str) {
    let db = AppDb::connect(url).await.unwrap();
    let (ts, now) = match &db {
        AppDb::Sqlite(_) => ("INTEGER", NOW.to_string()),
        AppDb::Pg(_) => (
            "timestamptz",
            format!("to_timestamp({NOW}::float8 / 1000.0)"),
        ),
    };
    db.exec(&format!(
        "CREATE TABLE scenes (id TEXT PRIMARY KEY, title TEXT NOT NULL,
             current_version_id TEXT, updated_at {ts} NOT NULL);
         CREATE TABLE scene_versions (id TEXT PRIMARY KEY, scene_id TEXT NOT NULL,
             status TEXT NOT NULL, video_path TEXT, created_at {ts} NOT NULL,
             updated_at {ts} NOT NULL);
         CREATE TABLE ai_jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, provider TEXT NOT NULL,
             scene_id TEXT, scene_version_id TEXT, request TEXT NOT NULL, status TEXT NOT NULL,
             provider_job_id TEXT, created_at {ts} NOT NULL, updated_at {ts} NOT NULL);
         INSERT INTO scenes VALUES ('s', 'old scene', NULL, {now});
         INSERT INTO scene_versions VALUES ('v', 's', 'generating', NULL, {now}, {now});
         INSERT INTO ai_jobs VALUES ('old', 'video', 'openai', 's', 'v', '{{}}', 'processing',
             'video_1', {now}, {now});"
    ))
    .await
    .unwrap();
    let store = clawcut_store::connect(url).await.unwrap();
    let latest = store.schema_status().await.unwrap().latest;
    assert_eq!(store.migrate().await.unwrap(), every_version(latest));
    let r = rules(false);
    let got = jobs(
        store
            .claim(&claim_req("w", NOW + DAY, 5, &r))
            .await
            .unwrap(),
    );
    assert_eq!(got.len(), 1);
    let lease = got[0].lease().unwrap();
    store
        .complete(
            &lease,
            &completion(JobStatus::Processing, NOW + DAY, "old"),
            &mut Files::new(),
        )
        .await
        .unwrap();
    let v = db.version("v").await.unwrap().unwrap();
    assert_eq!(v.status, "ready");
    assert_eq!(v.video_bytes, Some(1234));
    assert_eq!(db.events("old").await.unwrap().len(), 1);
}

/// Versions 1 to `latest`: what a first `migrate` applies.
fn every_version(latest: i64) -> Vec<i64> {
    (1..=latest).collect()
}
