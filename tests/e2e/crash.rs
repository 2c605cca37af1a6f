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
