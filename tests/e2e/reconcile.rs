//! Stranded jobs reach their true final state, with their files.

use std::time::Duration;

use clawcut_test_support::db::AppDb;
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn stranded_jobs_are_reconciled_at_startup() {
    let fake = FakeOpenAi::start(KEY).await;
    let env = Env::sqlite(&fake.base_url(), "");
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let t0 = now_ms() - 3_600_000;
    let cases: Vec<(&str, &str, &str, &str, Script)> = vec![
        (
            "job_a",
            "scene_a",
            "ver_a",
            "video_a",
            Script::completes_after(0),
        ),
        (
            "job_b",
            "scene_b",
            "ver_b",
            "video_b",
            Script::completes_after(2),
        ),
        (
            "job_c",
            "scene_c",
            "ver_c",
            "video_c",
            Script::fails_after(1, "content_policy_violation"),
        ),
        (
            "job_old_take",
            "scene_r",
            "ver_r1",
            "video_r1",
            Script::completes_after(4),
        ),
        (
            "job_new_take",
            "scene_r",
            "ver_r2",
            "video_r2",
            Script::completes_after(0),
        ),
        (
            "job_storm",
            "scene_s",
            "ver_s",
            "video_s",
            Script::storm_then_complete(2, 0),
        ),
    ];
    for (i, (job, scene, version, vid, script)) in cases.iter().enumerate() {
        fake.script(vid, script.clone());
        seed_job(&db, job, scene, version, vid, t0 + i as i64 * 1000).await;
    }
    let ids: Vec<String> = cases.iter().map(|c| c.0.to_owned()).collect();
    let mut daemon = env.start("run");
    eventually(Duration::from_secs(60), "every job final", || async {
        all_final(&db, &ids).await.then_some(())
    })
    .await;

    for (job, scene, version, vid, _) in &cases {
        let j = db.job(job).await.unwrap().unwrap();
        let events = db.events(job).await.unwrap();
        let finals: Vec<_> = events
            .iter()
            .filter(|e| e.to_status == "completed" || e.to_status == "failed")
            .collect();
        assert_eq!(
            finals.len(),
            1,
            "{job}: exactly one final event, got {events:?}"
        );
        if *job == "job_c" {
            assert_eq!(j.status, "failed");
            assert!(
                j.last_error
                    .as_deref()
                    .unwrap_or("")
                    .contains("content_policy_violation"),
                "{:?}",
                j.last_error
            );
            assert_eq!(db.version(version).await.unwrap().unwrap().status, "failed");
            continue;
        }
        assert_eq!(j.status, "completed", "{job}: {:?}", j.last_error);
        let expected = fake.content(vid);
        let path = env
            .media()
            .join("videos")
            .join(scene)
            .join(format!("{version}.mp4"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{job}: {} missing: {e}", path.display()));
        assert_eq!(
            sha256_hex(&bytes),
            sha256_hex(&expected),
            "{job}: file content"
        );
        assert_eq!(
            j.video_sha256.as_deref(),
            Some(sha256_hex(&expected).as_str())
        );
        assert_eq!(j.video_path.as_deref(), Some(path.to_str().unwrap()));
        let thumb = env
            .media()
            .join("thumbnails")
            .join(scene)
            .join(format!("{version}.webp"));
        assert!(thumb.exists(), "{job}: thumbnail at {}", thumb.display());
        let v = db.version(version).await.unwrap().unwrap();
        assert_eq!(v.status, "ready");
        assert_eq!(v.video_path.as_deref(), Some(path.to_str().unwrap()));
        assert_eq!(v.video_bytes, Some(expected.len() as i64));
        assert_eq!(
            v.video_sha256.as_deref(),
            Some(sha256_hex(&expected).as_str())
        );
    }
    // The older take finished last, yet the scene keeps the newer one.
    assert_eq!(
        db.scene("scene_r")
            .await
            .unwrap()
            .unwrap()
            .current_version_id
            .as_deref(),
        Some("ver_r2")
    );
    assert_eq!(
        db.scene("scene_a")
            .await
            .unwrap()
            .unwrap()
            .current_version_id
            .as_deref(),
        Some("ver_a")
    );
    assert!(fake.polls("video_b") >= 3);

    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(15)),
        Some(0),
        "SIGTERM exits 0; logs:\n{}",
        daemon.logs()
    );
    let logs = daemon.logs();
    assert!(!logs.contains(KEY), "the API key must never be logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn download_over_the_limit_fails_the_job_and_leaves_no_file() {
    let fake = FakeOpenAi::start(KEY).await;
    let mut big = Script::completes_after(0);
    big.video_bytes = 64 * 1024;
    fake.script("video_big", big);
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    let db_url = format!("sqlite://{}", dir.path().join("clawcut.db").display());
    let env = Env::with_url(
        dir,
        db_url,
        &fake.base_url(),
        &format!(
            "[media]\ndir = \"{}\"\nmax_bytes = \"16KiB\"\n",
            media.display()
        ),
    );
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    seed_job(
        &db,
        "job_big",
        "scene_big",
        "ver_big",
        "video_big",
        now_ms(),
    )
    .await;
    let _daemon = env.start("run");
    let ids = vec!["job_big".to_owned()];
    eventually(Duration::from_secs(30), "job final", || async {
        all_final(&db, &ids).await.then_some(())
    })
    .await;
    let j = db.job("job_big").await.unwrap().unwrap();
    assert_eq!(j.status, "failed");
    assert!(
        j.last_error
            .as_deref()
            .unwrap_or("")
            .contains("larger than"),
        "{:?}",
        j.last_error
    );
    assert!(
        files_under(&env.media().join("videos")).is_empty(),
        "no file at a final path"
    );
    eventually(Duration::from_secs(30), "no temp file left", || async {
        files_under(&env.media().join(".tmp"))
            .is_empty()
            .then_some(())
    })
    .await;
    let events = db.events("job_big").await.unwrap();
    assert_eq!(events.iter().filter(|e| e.to_status == "failed").count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_errors_back_off_durably_then_fail() {
    let fake = FakeOpenAi::start(KEY).await;
    fake.script("video_down", Script::storm_then_complete(1000, 0));
    let env = Env::sqlite(&fake.base_url(), "");
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    seed_job(&db, "job_down", "scene_d", "ver_d", "video_down", now_ms()).await;
    let daemon = env.start("run");
    // Let a couple of attempts happen, then crash: the schedule is in the row.
    let before = eventually(Duration::from_secs(30), "two attempts recorded", || async {
        let j = db.job("job_down").await.unwrap().unwrap();
        (j.attempts >= 2).then_some(j)
    })
    .await;
    assert!(before.next_attempt_at > 0);
    daemon.kill9();
    let after_crash = db.job("job_down").await.unwrap().unwrap();
    assert!(after_crash.attempts >= 2, "attempts survive a crash");
    let _daemon = env.start("run2");
    let ids = vec!["job_down".to_owned()];
    eventually(
        Duration::from_secs(60),
        "job fails after max_attempts",
        || async { all_final(&db, &ids).await.then_some(()) },
    )
    .await;
    let j = db.job("job_down").await.unwrap().unwrap();
    assert_eq!(j.status, "failed");
    assert_eq!(j.attempts, 5, "max_attempts = 5 in the test config");
    assert!(
        j.last_error
            .as_deref()
            .unwrap_or("")
            .contains("gave up after 5"),
        "{:?}",
        j.last_error
    );
    // The kill may land while a poll is in flight: that one is redone, no more.
    let polls = fake.polls("video_down");
    assert!(
        (5..=6).contains(&polls),
        "one poll per attempt (plus at most one cut off by the kill): {polls}"
    );
}
