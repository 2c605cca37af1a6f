//! End-to-end throughput of the real binary: how fast a backlog of stranded
//! jobs drains, on SQLite with one replica (the baseline), on PostgreSQL with
//! one replica, and on PostgreSQL with three. The provider is the loopback
//! fake with a small per-chunk delay, so a job costs real I/O waits.
//!
//! `cargo bench -p clawcut-worker --bench throughput -- [jobs]`

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use clawcut_test_support::db::AppDb;
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};

const BIN: &str = env!("CARGO_BIN_EXE_clawcut-worker");
mod common;

use common::{KEY, completed_count, config, migrate, now_ms, run, seed_job};

async fn seed(db: &AppDb, n: usize) {
    let t = now_ms() - 600_000;
    for i in 0..n {
        seed_job(db, i, format!("job_{i}"), format!("video_{i}"), t).await;
    }
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
    let cfg = config(
        dir.path(),
        url,
        &fake.base_url(),
        "interval = \"100ms\"\nmin_age = \"0s\"\nbatch_size = 50\nconcurrency = 8\nlease_ttl = \"30s\"\n",
    );
    migrate(BIN, &cfg);
    let db = AppDb::connect(url).await.unwrap();
    seed(&db, n).await;
    let started = Instant::now();
    let mut children: Vec<Child> = (0..replicas)
        .map(|_| run(BIN, &cfg, Stdio::null()))
        .collect();
    while completed_count(&db).await < n as i64 {
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
