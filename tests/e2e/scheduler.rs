//! The continuous scheduler, tried with faults from the field: a stuck CDN
//! (head-of-line), rows the app got wrong (poison rows), a refused
//! thumbnail, and a lease lost just before the rename. Each runs on SQLite
//! and on the throwaway PostgreSQL.

use std::time::{Duration, Instant};

use clawcut_test_support::db::{AppDb, NewJob};
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};

use crate::support::*;

// ---------------------------------------------------------------------------
// Head-of-line: one output trickling for a minute beside 40 due jobs.

async fn a_slow_download_holds_only_its_own_slot(backend: Backend) {
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(Script::completes_after(0));
    // 20 bytes, one every 3 s: a minute, unless the deadline ends it first.
    fake.script(
        "video_slow",
        Script::completes_after(0)
            .with_video_bytes(20)
            .trickle(1, Duration::from_secs(3)),
    );
    let extra = "[reconcile]\ninterval = \"2s\"\nmin_age = \"1s\"\nlease_ttl = \"6s\"\nshutdown_grace = \"2s\"\nconcurrency = 4\nbatch_size = 25\n";
    let Some(env) = env_for(backend, "hol", &fake.base_url(), extra) else {
        return;
    };
    env.edit_config(
        "stall_timeout = \"5s\"\nstall_min_bytes = \"1KiB\"",
        "download_deadline = \"25s\"\nstall_timeout = \"10s\"\nstall_min_bytes = \"1B\"",
    );
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let t = now_ms() - 600_000;
    // The slow job is the oldest: it is claimed first.
    db.insert_scene("scene_slow", "slow").await.unwrap();
    db.insert_version("ver_slow", "scene_slow", t)
        .await
        .unwrap();
    db.insert_job(&NewJob {
        updated_at: t - 60_000,
        scene_id: Some("scene_slow".into()),
        scene_version_id: Some("ver_slow".into()),
        ..NewJob::video("job_slow", "processing", Some("video_slow"), t)
    })
    .await
    .unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        let id = format!("job_{i:02}");
        seed_job(
            &db,
            &id,
            &format!("scene_{i:02}"),
            &format!("ver_{i:02}"),
            &format!("video_{i:02}"),
            t,
        )
        .await;
        ids.push(id);
    }
    let daemon = env.start("hol");
    let started = Instant::now();
    eventually(
        Duration::from_secs(20),
        "all 40 fast jobs complete",
        || async { all_final(&db, &ids).await.then_some(()) },
    )
    .await;
    let fast_done = started.elapsed();
    for id in &ids {
        let j = db.job(id).await.unwrap().unwrap();
        assert_eq!(j.status, "completed", "{id}: {j:?}");
    }
    // ... while the slow one is still downloading, in its own slot.
    let slow = db.job("job_slow").await.unwrap().unwrap();
    assert_eq!(slow.status, "processing", "{slow:?}");
    assert_eq!(slow.attempts, 0, "no attempt spent yet: {slow:?}");
    assert!(
        slow.lease_owner.is_some(),
        "the slow job is still held: {slow:?}"
    );
    assert_eq!(fake.downloads("video_slow", "video"), 1);
    assert!(
        fast_done < Duration::from_secs(20),
        "the 40 jobs did not wait for the slow one ({fast_done:?})"
    );
    // Then the deadline ends it: a transient failure, retried on backoff.
    let slow = eventually(
        Duration::from_secs(40),
        "the slow download hits its deadline",
        || async {
            let j = db.job("job_slow").await.unwrap().unwrap();
            (j.attempts >= 1).then_some(j)
        },
    )
    .await;
    let err = slow.last_error.clone().unwrap_or_default();
    assert!(err.contains("deadline"), "{err}");
    assert_eq!(slow.status, "processing", "retried, not failed: {slow:?}");
    assert!(slow.next_attempt_at > now_ms() - 5_000, "{slow:?}");
    assert!(
        std::fs::read_dir(env.media().join(".tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
            <= 1,
        "the abandoned download left no temp file behind (at most a new try's)"
    );
    assert!(daemon.logs().contains("deadline"), "the log says why");
    drop(daemon);
}

on_both_backends!(a_slow_download_holds_only_its_own_slot);

// ---------------------------------------------------------------------------
// Poison rows claimed in one batch with healthy rows.

/// (job id, the column its `last_error` must name, SQL that breaks it).
fn poison_rows(backend: &Backend) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut rows = vec![
        (
            "job_p_request",
            "request",
            "UPDATE ai_jobs SET request = 'not json {' WHERE id = 'job_p_request'",
        ),
        (
            "job_p_provider",
            "provider",
            "UPDATE ai_jobs SET provider = 'sora-by-mail' WHERE id = 'job_p_provider'",
        ),
        (
            "job_p_scene",
            "scene_id",
            "UPDATE ai_jobs SET scene_id = '../../etc' WHERE id = 'job_p_scene'",
        ),
    ];
    if let Backend::Sqlite = backend {
        // SQLite's typing is dynamic: the app can store anything anywhere.
        rows.push((
            "job_p_blob",
            "request",
            "UPDATE ai_jobs SET request = x'00ff10' WHERE id = 'job_p_blob'",
        ));
        rows.push((
            "job_p_created",
            "created_at",
            "UPDATE ai_jobs SET created_at = 'yesterday' WHERE id = 'job_p_created'",
        ));
    }
    rows
}

async fn poison_rows_are_set_aside_and_never_block_their_batch(backend: Backend) {
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(Script::completes_after(0));
    let extra = "[reconcile]\ninterval = \"500ms\"\nmin_age = \"1s\"\nlease_ttl = \"30s\"\nshutdown_grace = \"2s\"\nconcurrency = 16\nbatch_size = 25\n";
    let Some(env) = env_for(backend, "poison", &fake.base_url(), extra) else {
        return;
    };
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let t = now_ms() - 600_000;
    let poison = poison_rows(&backend);
    // The poison rows are the oldest, so they come first in the claim.
    for (i, (id, _, breaks)) in poison.iter().enumerate() {
        seed_job(
            &db,
            id,
            &format!("scene_p{i}"),
            &format!("ver_p{i}"),
            &format!("video_p{i}"),
            t - 60_000,
        )
        .await;
        db.exec(breaks).await.unwrap();
    }
    let mut healthy = Vec::new();
    for i in 0..8 {
        let id = format!("job_h{i}");
        seed_job(
            &db,
            &id,
            &format!("scene_h{i}"),
            &format!("ver_h{i}"),
            &format!("video_h{i}"),
            t,
        )
        .await;
        healthy.push(id);
    }
    let mut daemon = env.start("poison");
    eventually(
        Duration::from_secs(20),
        "the healthy rows complete",
        || async { all_final(&db, &healthy).await.then_some(()) },
    )
    .await;
    for id in &healthy {
        let j = db.job(id).await.unwrap().unwrap();
        assert_eq!(j.status, "completed", "{id}: {j:?}");
    }
    let rows = |id: &'static str| {
        let url = env.db_url.clone();
        async move { raw_job(&url, id).await }
    };
    for (id, column, _) in &poison {
        let r = eventually(Duration::from_secs(10), id, || async {
            let r = rows(id).await;
            (r.status == "needs_operator").then_some(r)
        })
        .await;
        let err = r.last_error.clone().unwrap_or_default();
        assert!(err.contains(&format!("`{column}`")), "{id}: {err}");
        assert!(r.lease_owner.is_none(), "{id} released");
        let events = db.events(id).await.unwrap();
        assert_eq!(events.len(), 1, "{id}: {events:?}");
        assert_eq!(events[0].to_status, "needs_operator");
        assert!(events[0].detail.contains("row_rejected"), "{:?}", events[0]);
    }
    // Not claimed again in a loop: a few passes later nothing has moved.
    let before: Vec<RawJob> =
        futures_util::future::join_all(poison.iter().map(|p| rows(p.0))).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: Vec<RawJob> = futures_util::future::join_all(poison.iter().map(|p| rows(p.0))).await;
    assert_eq!(before, after, "set-aside rows stay put");
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon keeps running"
    );
    // `reconcile` finds nothing to do and exits 0 (it used to exit 69).
    let out = env.output(&["reconcile"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(0));
}

#[derive(Debug, PartialEq, Eq)]
struct RawJob {
    status: String,
    last_error: Option<String>,
    lease_owner: Option<String>,
    fencing_token: i64,
}

/// A job read without decoding the columns the test broke.
async fn raw_job(url: &str, id: &str) -> RawJob {
    // The same read on each driver; only the pool type and placeholder differ.
    macro_rules! read {
        ($pool:ty, $sql:literal) => {{
            let pool = <$pool>::connect(url).await.unwrap();
            let (status, last_error, lease_owner, fencing_token) = sqlx::query_as($sql)
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            RawJob {
                status,
                last_error,
                lease_owner,
                fencing_token,
            }
        }};
    }
    if url.starts_with("sqlite:") {
        read!(
            sqlx::SqlitePool,
            "SELECT status, last_error, lease_owner, fencing_token FROM ai_jobs WHERE id = ?1"
        )
    } else {
        read!(
            sqlx::PgPool,
            "SELECT status, last_error, lease_owner, fencing_token FROM ai_jobs WHERE id = $1"
        )
    }
}

on_both_backends!(poison_rows_are_set_aside_and_never_block_their_batch);

// ---------------------------------------------------------------------------
// Thumbnails never cost the user the video.

async fn a_refused_or_failing_thumbnail_completes_the_video_without_it(backend: Backend) {
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(Script::completes_after(0));
    fake.script(
        "video_403",
        Script::completes_after(0).with_thumbnail_status(403),
    );
    fake.script(
        "video_500",
        Script::completes_after(0).with_thumbnail_status(500),
    );
    let Some(env) = env_for(backend, "thumb", &fake.base_url(), "") else {
        return;
    };
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let t = now_ms() - 600_000;
    seed_job(&db, "job_403", "scene_403", "ver_403", "video_403", t).await;
    seed_job(&db, "job_500", "scene_500", "ver_500", "video_500", t).await;
    let ids = vec!["job_403".to_owned(), "job_500".to_owned()];
    let daemon = env.start("thumb");
    eventually(Duration::from_secs(20), "both jobs settle", || async {
        all_final(&db, &ids).await.then_some(())
    })
    .await;
    for (job, vid, version) in [
        ("job_403", "video_403", "ver_403"),
        ("job_500", "video_500", "ver_500"),
    ] {
        let j = db.job(job).await.unwrap().unwrap();
        assert_eq!(j.status, "completed", "{j:?}");
        assert!(j.thumbnail_path.is_none(), "{j:?}");
        let path = j.video_path.clone().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes, fake.content(vid));
        assert_eq!(j.video_sha256.as_deref(), Some(sha256_hex(&bytes).as_str()));
        let v = db.version(version).await.unwrap().unwrap();
        assert_eq!(v.status, "ready");
        assert!(v.thumbnail_path.is_none());
        // A failing thumbnail does not fetch the video again.
        assert_eq!(fake.downloads(vid, "video"), 1, "{job}");
        let events = db.events(job).await.unwrap();
        let done: Vec<_> = events
            .iter()
            .filter(|e| e.to_status == "completed")
            .collect();
        assert_eq!(done.len(), 1, "{events:?}");
        assert!(
            done[0].detail.contains("thumbnail"),
            "the audit event says why: {}",
            done[0].detail
        );
    }
    assert!(daemon.logs().contains("thumbnail could not be fetched"));
    assert!(
        files_under(&env.media().join("thumbnails")).is_empty(),
        "no thumbnail file"
    );
}

on_both_backends!(a_refused_or_failing_thumbnail_completes_the_video_without_it);

// ---------------------------------------------------------------------------
// A lease lost just before the rename: the new owner's file survives.

async fn a_worker_that_lost_its_lease_never_overwrites_the_new_owners_file(backend: Backend) {
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(Script::completes_after(0));
    // 64 KiB in 16 chunks of 4 KiB, 250 ms apart: about 4 s of download.
    fake.script(
        "video_slow",
        Script::completes_after(0)
            .with_video_bytes(64 * 1024)
            .with_chunk_bytes(4 * 1024)
            .with_chunk_delay(Duration::from_millis(250)),
    );
    let extra = "[reconcile]\ninterval = \"300ms\"\nmin_age = \"1s\"\nlease_ttl = \"30s\"\nshutdown_grace = \"2s\"\nconcurrency = 4\n";
    let Some(env) = env_for(backend, "lease_lost", &fake.base_url(), extra) else {
        return;
    };
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    seed_job(
        &db,
        "job_ll",
        "scene_ll",
        "ver_ll",
        "video_slow",
        now_ms() - 600_000,
    )
    .await;
    let daemon = env.start("lease_lost");
    eventually(
        Duration::from_secs(20),
        "the download is under way",
        || async { (fake.downloads("video_slow", "video") >= 1).then_some(()) },
    )
    .await;
    // Another owner takes the job (as a replica would after an expiry),
    // writes its own file and commits it, while ours is still downloading.
    let final_path = env.media().join("videos/scene_ll/ver_ll.mp4");
    std::fs::create_dir_all(final_path.parent().unwrap()).unwrap();
    let theirs = b"the new owner's clip".to_vec();
    std::fs::write(&final_path, &theirs).unwrap();
    let sha = sha256_hex(&theirs);
    let p = final_path.display();
    let n = theirs.len();
    db.exec(&format!(
        "UPDATE ai_jobs SET lease_owner = 'other-host:1:abc', fencing_token = fencing_token + 1, \
         status = 'completed', video_path = '{p}', video_sha256 = '{sha}', video_bytes = {n} WHERE id = 'job_ll'"
    ))
    .await
    .unwrap();
    db.exec(&format!(
        "UPDATE scene_versions SET status = 'ready', video_path = '{p}', video_sha256 = '{sha}', video_bytes = {n} WHERE id = 'ver_ll'"
    ))
    .await
    .unwrap();
    // Our worker finishes (or abandons) its download and must publish nothing.
    daemon.wait_log("lease lost", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        std::fs::read(&final_path).unwrap(),
        theirs,
        "the new owner's file survives"
    );
    let v = db.version("ver_ll").await.unwrap().unwrap();
    assert_eq!(v.video_sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(v.video_bytes, Some(n as i64));
    let events = db.events("job_ll").await.unwrap();
    assert!(
        events.iter().all(|e| e.to_status != "completed"),
        "our worker recorded nothing: {events:?}"
    );
}

on_both_backends!(a_worker_that_lost_its_lease_never_overwrites_the_new_owners_file);
