//! End-to-end throughput of the real binary: how fast a backlog of stranded
//! jobs drains, on SQLite with one replica (the baseline), on PostgreSQL with
//! one replica, and on PostgreSQL with three. The provider is the loopback
//! fake with a small per-chunk delay, so a job costs real I/O waits.
//!
//! `cargo bench -p clawcut-worker --bench throughput -- [jobs]`

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clawcut_test_support::db::{AppDb, NewJob};
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};

const BIN: &str = env!("CARGO_BIN_EXE_clawcut-worker");
const KEY: &str = "sk-bench";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn config(dir: &std::path::Path, url: &str, base: &str) -> std::path::PathBuf {
    let path = dir.join("bench.toml");
    std::fs::write(
        &path,
        format!(
            "[database]\nurl = \"{url}\"\n[reconcile]\ninterval = \"100ms\"\nmin_age = \"0s\"\nbatch_size = 50\nconcurrency = 8\nlease_ttl = \"30s\"\n\
             [media]\ndir = \"{}\"\n[http]\nlisten = \"\"\n[log]\nlevel = \"warn\"\n\
             [providers.openai]\nkind = \"openai\"\nbase_url = \"{base}\"\napi_key_env = \"BENCH_KEY\"\nmax_in_flight = 16\n",
            dir.join("media").display()
        ),
    )
    .unwrap();
    path
}

async fn seed(db: &AppDb, n: usize) {
    let t = now_ms() - 600_000;
    for i in 0..n {
        let scene = format!("scene_{i}");
        db.insert_scene(&scene, "s").await.unwrap();
        db.insert_version(&format!("ver_{i}"), &scene, t)
            .await
            .unwrap();
        db.insert_job(&NewJob {
            id: format!("job_{i}"),
            kind: "video".into(),
            provider: "openai".into(),
            scene_id: Some(scene),
            scene_version_id: Some(format!("ver_{i}")),
            request: "{}".into(),
            status: "processing".into(),
            provider_job_id: Some(format!("video_{i}")),
            created_at: t,
            updated_at: t,
        })
        .await
        .unwrap();
    }
}

async fn completed(db: &AppDb) -> i64 {
    db.count_jobs_by_status()
        .await
        .unwrap()
        .into_iter()
        .filter(|(s, _)| s == "completed")
        .map(|(_, n)| n)
        .sum()
}

fn start(config: &std::path::Path) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("BENCH_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Seconds to drain `n` jobs with `replicas` processes.
async fn drain(name: &str, url: &str, n: usize, replicas: usize) -> f64 {
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(
        Script::completes_after(0)
            .with_video_bytes(64 * 1024)
            .with_chunk_delay(Duration::from_millis(2)),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), url, &fake.base_url());
    let st = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let db = AppDb::connect(url).await.unwrap();
    seed(&db, n).await;
    let started = Instant::now();
    let mut children: Vec<Child> = (0..replicas).map(|_| start(&cfg)).collect();
    while completed(&db).await < n as i64 {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{name}: did not drain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    println!(
        "{name:<28} {n} jobs in {secs:>6.2}s  = {:>7.1} jobs/s",
        n as f64 / secs
    );
    secs
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let (_dir, sqlite) = clawcut_test_support::db::temp_sqlite();
    let base = drain("sqlite, 1 replica (baseline)", &sqlite, n, 1).await;
    let Some(pg) = clawcut_test_support::pg::require() else {
        return;
    };
    let one = drain("postgres, 1 replica", &pg.fresh_db("bench1"), n, 1).await;
    let three = drain("postgres, 3 replicas", &pg.fresh_db("bench3"), n, 3).await;
    println!(
        "ratios (time): postgres/sqlite {:.2}, 3 replicas/1 replica {:.2}",
        one / base,
        three / one
    );
}
