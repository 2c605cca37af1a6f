//! systemd integration: the unit file, sd_notify over a real NOTIFY_SOCKET,
//! SIGHUP reloads.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn the_unit_file_verifies() {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-analyze is missing in CI"
        );
        eprintln!("SKIPPED: systemd-analyze not installed");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/clawcut-worker.service"
    ))
    .unwrap();
    // Verify against the binary this suite built; the package installs it at /usr/bin.
    let path = dir.path().join("clawcut-worker.service");
    std::fs::write(&path, unit.replace("/usr/bin/clawcut-worker", BIN)).unwrap();
    let o = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "verify: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    if let Some(line) = text.lines().find(|l| l.contains("Overall exposure level")) {
        let score: f64 = line
            .split("level for clawcut-worker.service:")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
    }
}

fn recv_all(
    sock: &UnixDatagram,
    until: Instant,
    mut stop: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until && !stop(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn sd_notify_ready_watchdog_stopping() {
    let env = Env::sqlite("http://127.0.0.1:9", "");
    env.migrate();
    let sock_path = env.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let mut daemon = env.start_with("notify", |c| {
        c.env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "600000");
    });
    let msgs = recv_all(&sock, Instant::now() + Duration::from_secs(15), |m| {
        m.iter().filter(|s| s.contains("WATCHDOG=1")).count() >= 6
    });
    assert!(msgs.iter().any(|m| m.contains("READY=1")), "{msgs:?}");
    let first_ready = msgs.iter().position(|m| m.contains("READY=1")).unwrap();
    let first_wd = msgs.iter().position(|m| m.contains("WATCHDOG=1")).unwrap();
    assert!(first_ready < first_wd, "READY before WATCHDOG: {msgs:?}");
    let wd = msgs.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(wd >= 6, "watchdog pings at ~1/3 of WatchdogSec: {msgs:?}");
    // Six pings need at least five gaps of a quarter period (150ms).
    assert!(
        started.elapsed() >= Duration::from_millis(750),
        "not faster than the rate limit"
    );
    assert!(msgs.iter().any(|m| m.contains("STATUS=")), "{msgs:?}");
    daemon.signal("TERM");
    let msgs = recv_all(&sock, Instant::now() + Duration::from_secs(10), |m| {
        m.iter().any(|s| s.contains("STOPPING=1"))
    });
    assert!(msgs.iter().any(|m| m.contains("STOPPING=1")), "{msgs:?}");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_a_good_config_and_rejects_a_bad_one() {
    let fake = clawcut_test_support::fake_openai::FakeOpenAi::start(KEY).await;
    fake.script(
        "video_hup",
        clawcut_test_support::fake_openai::Script::completes_after(0),
    );
    let env = Env::sqlite(&fake.base_url(), "");
    env.edit_config("min_age = \"1s\"", "min_age = \"1h\"");
    env.migrate();
    let db = clawcut_test_support::db::AppDb::connect(&env.db_url)
        .await
        .unwrap();
    seed_job(
        &db,
        "job_hup",
        "scene_hup",
        "ver_hup",
        "video_hup",
        now_ms(),
    )
    .await;
    // Ten minutes old: too young for min_age = 1h.
    let mut daemon = env.start("hup");
    daemon
        .wait_log("clawcut-worker starting", Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        db.job("job_hup").await.unwrap().unwrap().status,
        "processing"
    );

    env.edit_config("min_age = \"1h\"", "min_age = \"1s\"");
    daemon.signal("HUP");
    daemon
        .wait_log("SIGHUP: config reloaded", Duration::from_secs(10))
        .await;
    let ids = vec!["job_hup".to_owned()];
    eventually(
        Duration::from_secs(20),
        "the new min_age applies without a restart",
        || async { all_final(&db, &ids).await.then_some(()) },
    )
    .await;

    env.edit_config("interval = \"300ms\"", "interval = \"whenever\"");
    daemon.signal("HUP");
    daemon
        .wait_log("new config rejected", Duration::from_secs(10))
        .await;
    assert!(
        daemon.logs().contains("reconcile.interval"),
        "the rejection names the key"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "still running on the old config"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(0));
}
