//! What the benches share: the key, the clock, a config for one daemon, its
//! migrate and run commands, the app's rows for one stranded job, and the
//! count of completed jobs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use clawcut_test_support::db::{AppDb, NewJob};

pub const KEY: &str = "sk-bench";

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A config for one daemon on `url` with the fake at `base`; `reconcile` is
/// the body of its `[reconcile]` table. Only keys every binary measured
/// understands (a baseline refuses newer ones).
pub fn config(dir: &Path, url: &str, base: &str, reconcile: &str) -> PathBuf {
    let path = dir.join("bench.toml");
    std::fs::write(
        &path,
        format!(
            "[database]\nurl = \"{url}\"\n[reconcile]\n{reconcile}\
             [media]\ndir = \"{}\"\n[http]\nlisten = \"\"\n[log]\nlevel = \"warn\"\n\
             [providers.openai]\nkind = \"openai\"\nbase_url = \"{base}\"\napi_key_env = \"BENCH_KEY\"\nmax_in_flight = 16\n",
            dir.join("media").display()
        ),
    )
    .unwrap();
    path
}

/// Job `id` of scene `scene_<i>` / version `ver_<i>`, running at the
/// provider as `pid`, created ten minutes ago and last updated at `updated_at`.
pub async fn seed_job(db: &AppDb, i: usize, id: String, pid: String, updated_at: i64) {
    let t = now_ms() - 600_000;
    let scene = format!("scene_{i}");
    let version = format!("ver_{i}");
    db.insert_scene(&scene, "s").await.unwrap();
    db.insert_version(&version, &scene, t).await.unwrap();
    db.insert_job(&NewJob {
        id,
        kind: "video".into(),
        provider: "openai".into(),
        scene_id: Some(scene),
        scene_version_id: Some(version),
        request: "{}".into(),
        status: "processing".into(),
        provider_job_id: Some(pid),
        created_at: t,
        updated_at,
    })
    .await
    .unwrap();
}

pub async fn completed_count(db: &AppDb) -> i64 {
    db.count_jobs_by_status()
        .await
        .unwrap()
        .into_iter()
        .filter(|(s, _)| s == "completed")
        .map(|(_, n)| n)
        .sum()
}

/// `bin migrate` with `config`; panics with its stderr when it fails.
pub fn migrate(bin: &str, config: &Path) {
    let out = Command::new(bin)
        .arg("--config")
        .arg(config)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `bin run` with `config`, its stderr (the log) to `log`.
pub fn run(bin: &str, config: &Path, log: Stdio) -> Child {
    Command::new(bin)
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("BENCH_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}
