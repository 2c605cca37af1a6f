//! SIGKILL in the middle of a pass, then a restart: nothing lost, no partial
//! file at a final path, no second event.

use std::time::Duration;

use clawcut_test_support::db::AppDb;
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_pass_then_restart_loses_nothing() {
    let fake = FakeOpenAi::start(KEY).await;
    let env = Env::sqlite(&fake.base_url(), "");
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..8 {
        let mut s = Script::completes_after(0);
        // Slow streaming: each download takes ~1s, so the kill lands mid-write.
        s.video_bytes = 1024 * 1024;
        s.chunk_delay = Some(Duration::from_millis(60));
        fake.script(&format!("video_{i}"), s);
        seed_job(
            &db,
            &format!("job_{i}"),
            &format!("scene_{i}"),
            &format!("ver_{i}"),
            &format!("video_{i}"),
            now_ms(),
        )
        .await;
        ids.push(format!("job_{i}"));
    }
    let daemon = env.start("first");
    eventually(Duration::from_secs(30), "downloads under way", || async {
        (!files_under(&env.media().join(".tmp")).is_empty()).then_some(())
    })
    .await;
    daemon.kill9();

    // Whatever reached a final path is complete; whatever is completed has its file.
    for i in 0..8 {
        let path = env
            .media()
            .join("videos")
            .join(format!("scene_{i}"))
            .join(format!("ver_{i}.mp4"));
        if let Ok(bytes) = std::fs::read(&path) {
            assert_eq!(
                sha256_hex(&bytes),
                sha256_hex(&fake.content(&format!("video_{i}"))),
                "partial file at {}",
                path.display()
            );
        }
        let j = db.job(&format!("job_{i}")).await.unwrap().unwrap();
        if j.status == "completed" {
            assert!(path.exists(), "completed job_{i} without its file");
        }
    }

    let _daemon = env.start("second");
    eventually(
        Duration::from_secs(90),
        "every job final after restart",
        || async { all_final(&db, &ids).await.then_some(()) },
    )
    .await;
    for i in 0..8 {
        let job = format!("job_{i}");
        let j = db.job(&job).await.unwrap().unwrap();
        assert_eq!(j.status, "completed", "{job}: {:?}", j.last_error);
        let path = env
            .media()
            .join("videos")
            .join(format!("scene_{i}"))
            .join(format!("ver_{i}.mp4"));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            sha256_hex(&fake.content(&format!("video_{i}")))
        );
        let completed = db
            .events(&job)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.to_status == "completed")
            .count();
        assert_eq!(completed, 1, "{job}: exactly one completion event");
    }
    eventually(
        Duration::from_secs(60),
        "the killed run's temp files swept",
        || async {
            files_under(&env.media().join(".tmp"))
                .is_empty()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_short_work_and_releases_long_work() {
    let fake = FakeOpenAi::start(KEY).await;
    // ~1 s download: finishes within the 4 s grace.
    fake.script(
        "video_short",
        Script::completes_after(0)
            .with_video_bytes(256 * 1024)
            .with_chunk_delay(Duration::from_millis(30)),
    );
    // ~60 s download: cannot finish; its lease must be released.
    fake.script(
        "video_long",
        Script::completes_after(0)
            .with_video_bytes(4 * 1024 * 1024)
            .with_chunk_delay(Duration::from_millis(100)),
    );
    let env = Env::sqlite(&fake.base_url(), "");
    env.edit_config("shutdown_grace = \"2s\"", "shutdown_grace = \"4s\"");
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    seed_job(
        &db,
        "job_short",
        "scene_s",
        "ver_s",
        "video_short",
        now_ms(),
    )
    .await;
    seed_job(&db, "job_long", "scene_l", "ver_l", "video_long", now_ms()).await;
    let mut daemon = env.start("term");
    eventually(
        Duration::from_secs(30),
        "both downloads under way",
        || async {
            (fake.downloads("video_short", "video") + fake.downloads("video_long", "video") >= 2)
                .then_some(())
        },
    )
    .await;
    daemon.signal("TERM");
    let code = daemon.wait_exit(Duration::from_secs(15));
    assert_eq!(
        code,
        Some(0),
        "exit 0 within the grace period; logs:\n{}",
        daemon.logs()
    );
    let short = db.job("job_short").await.unwrap().unwrap();
    assert_eq!(
        short.status, "completed",
        "in-flight work finishes within the grace"
    );
    let long = db.job("job_long").await.unwrap().unwrap();
    assert_eq!(long.status, "processing");
    assert_eq!(
        long.lease_owner, None,
        "the unfinished job's lease is released, not left to expire"
    );
    assert!(files_under(&env.media().join("videos").join("scene_l")).is_empty());
    assert!(
        daemon.logs().contains("releasing the leases"),
        "{}",
        daemon.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_keep_a_long_download_from_being_taken_over() {
    let fake = FakeOpenAi::start(KEY).await;
    // ~10 s download with a 4 s lease: only heartbeats keep it ours.
    fake.script(
        "video_slow",
        Script::completes_after(0)
            .with_video_bytes(1600 * 1024)
            .with_chunk_delay(Duration::from_millis(100)),
    );
    let env = Env::sqlite(&fake.base_url(), "");
    env.edit_config("lease_ttl = \"5s\"", "lease_ttl = \"4s\"");
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    seed_job(&db, "job_slow", "scene_w", "ver_w", "video_slow", now_ms()).await;
    // Two workers on one database: the second would take over an expired lease.
    let _a = env.start("hb-a");
    let _b = env.start("hb-b");
    let ids = vec!["job_slow".to_owned()];
    eventually(Duration::from_secs(60), "completed", || async {
        all_final(&db, &ids).await.then_some(())
    })
    .await;
    assert_eq!(
        db.job("job_slow").await.unwrap().unwrap().status,
        "completed"
    );
    assert_eq!(
        fake.downloads("video_slow", "video"),
        1,
        "downloaded once: the lease never lapsed"
    );
    let completed = db
        .events("job_slow")
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.to_status == "completed")
        .count();
    assert_eq!(completed, 1);
}
