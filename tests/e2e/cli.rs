//! The command line as an operator meets it: exit codes, messages, one-shot
//! commands, and `demo`.

use clawcut_test_support::db::{AppDb, NewJob};
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};

use crate::support::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn bad_config_exits_78_naming_file_and_key() {
    let env = Env::sqlite("http://127.0.0.1:9", "");
    let cfg = env.config.display().to_string();
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        text.replace("interval = \"300ms\"", "interval = \"soonish\""),
    )
    .unwrap();
    for cmd in ["check-config", "run", "migrate", "status"] {
        let o = env.output(&[cmd]);
        assert_eq!(o.status.code(), Some(78), "{cmd}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&cfg) && stderr(&o).contains("reconcile.interval"),
            "{cmd}: {}",
            stderr(&o)
        );
    }
    std::fs::write(&env.config, format!("{text}\n[surprise]\nkey = 1\n")).unwrap();
    let o = env.output(&["check-config"]);
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("surprise"), "{}", stderr(&o));
}

#[test]
fn missing_api_key_variable_is_a_config_error() {
    let env = Env::sqlite("http://127.0.0.1:9", "");
    let o = env
        .cmd(&["check-config"])
        .env_remove("E2E_OPENAI_KEY")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(
        stderr(&o).contains("E2E_OPENAI_KEY")
            && stderr(&o).contains("providers.openai.api_key_env"),
        "{}",
        stderr(&o)
    );
    let o = env.output(&["check-config"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    let o = std::process::Command::new(BIN)
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["reconcile", "--help"],
        &["demo", "--help"],
    ] {
        let o = std::process::Command::new(BIN).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}");
    }
    let o = std::process::Command::new(BIN)
        .args(["resolve", "x"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(64),
        "resolve needs --resubmit or --fail"
    );
}

#[test]
fn run_refuses_an_unmigrated_database_and_unreachable_one() {
    let env = Env::sqlite("http://127.0.0.1:9", "");
    let o = env.output(&["run"]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("clawcut-worker migrate"),
        "{}",
        stderr(&o)
    );
    env.migrate();
    let again = env.output(&["migrate"]);
    assert!(stdout(&again).contains("up to date"), "{}", stdout(&again));

    let dir = tempfile::tempdir().unwrap();
    let pg = Env::with_url(
        dir,
        "postgres://nobody@127.0.0.1:1/none".into(),
        "http://127.0.0.1:9",
        "",
    );
    let o = pg.output(&["status"]);
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_one_job_now_and_status() {
    let fake = FakeOpenAi::start(KEY).await;
    fake.script("video_now", Script::completes_after(0));
    let env = Env::sqlite(&fake.base_url(), "");
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let now = now_ms();
    let _ = db.insert_scene("scene_now", "s").await;
    db.insert_version("ver_now", "scene_now", now)
        .await
        .unwrap();
    // Fresh: min_age keeps the loop away, but an operator may force it.
    db.insert_job(&NewJob {
        id: "job_now".into(),
        kind: "video".into(),
        provider: "openai".into(),
        scene_id: Some("scene_now".into()),
        scene_version_id: Some("ver_now".into()),
        request: "{}".into(),
        status: "pending".into(),
        provider_job_id: Some("video_now".into()),
        created_at: now,
        updated_at: now,
    })
    .await
    .unwrap();
    let o = env.output(&["status", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["eligible"], 0, "too young to be eligible: {st}");
    assert_eq!(st["by_status"]["pending"], 1, "{st}");

    let o = env.output(&["reconcile", "--limit", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("claimed 0"), "{}", stdout(&o));

    let o = env.output(&["reconcile", "--job", "job_now"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("job_now") && stdout(&o).contains("completed"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        db.job("job_now").await.unwrap().unwrap().status,
        "completed"
    );

    let o = env.output(&["reconcile", "--job", "job_now"]);
    assert_eq!(o.status.code(), Some(65), "already final: {}", stderr(&o));
    let o = env.output(&["resolve", "job_now", "--fail"]);
    assert_eq!(
        o.status.code(),
        Some(65),
        "only needs_operator jobs resolve: {}",
        stderr(&o)
    );
}

#[test]
fn demo_runs_without_any_account() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(BIN)
        .args(["demo", "--dir"])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "demo failed: {}\n{}", out, stderr(&o));
    for needle in [
        "job_beach",
        "completed",
        "failed",
        "scene_river points at ver_river_2",
        "media",
    ] {
        assert!(out.contains(needle), "demo output lacks {needle:?}:\n{out}");
    }
    assert!(
        dir.path()
            .join("media/videos/scene_beach/ver_beach_1.mp4")
            .exists()
    );
    let o = std::process::Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("clawcut-worker.toml"))
        .arg("status")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "status on the demo database: {}",
        stderr(&o)
    );
}

/// A running job's next poll waits at most `backoff.poll_max`, while the
/// same backoff would wait up to `backoff.max` (errors still do): the
/// next poll of a job polled twelve times comes 60 s later, not 15
/// minutes (`initial` 1 s doubling, no jitter, so the wait is exact: the
/// twelfth poll's ceiling is 2,048 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_running_job_is_polled_at_least_every_poll_max() {
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(Script::completes_after(1000));
    for (poll_max, want_secs) in [("", 60), ("poll_max = \"15m\"\n", 900)] {
        let env = Env::sqlite(
            &fake.base_url(),
            &format!("[backoff]\ninitial = \"1s\"\nmax = \"15m\"\njitter = false\n{poll_max}"),
        );
        env.migrate();
        let db = AppDb::connect(&env.db_url).await.unwrap();
        let now = now_ms();
        let _ = db.insert_scene("scene_p", "s").await;
        db.insert_version("ver_p", "scene_p", now).await.unwrap();
        db.insert_job(&NewJob {
            id: "job_p".into(),
            kind: "video".into(),
            provider: "openai".into(),
            scene_id: Some("scene_p".into()),
            scene_version_id: Some("ver_p".into()),
            request: "{}".into(),
            status: "processing".into(),
            provider_job_id: Some("video_p".into()),
            created_at: now - 3_600_000,
            updated_at: now - 3_600_000,
        })
        .await
        .unwrap();
        db.exec("UPDATE ai_jobs SET polls = 11").await.unwrap();
        let before = now_ms();
        let o = env.output(&["reconcile", "--job", "job_p"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let after = now_ms();
        let j = db.job("job_p").await.unwrap().unwrap();
        assert!(
            ["pending", "processing"].contains(&j.status.as_str()),
            "still running: {}",
            j.status
        );
        assert_eq!(j.polls, 12);
        let want = want_secs * 1000;
        assert!(
            j.next_attempt_at >= before + want && j.next_attempt_at <= after + want,
            "{poll_max:?}: next poll {} ms after the pass, want {want}",
            j.next_attempt_at - before
        );
        db.close().await;
    }
}
