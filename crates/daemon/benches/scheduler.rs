//! The scheduler against the loop it replaced: how fast one replica drains
//! a backlog of stranded jobs, and how much one slow download in the mix
//! costs everyone else. The baseline is the previous `clawcut-worker`
//! binary (a pass of `batch_size` jobs at a time, waiting for the whole
//! pass), run in the same invocation on the same machine, given by
//! `BASELINE_BIN`:
//!
//! ```sh
//! git worktree add /tmp/cw-baseline ece0e60
//! cargo build --release --manifest-path /tmp/cw-baseline/Cargo.toml \
//!     --target-dir /tmp/cw-baseline/target -p clawcut-worker
//! BASELINE_BIN=/tmp/cw-baseline/target/release/clawcut-worker \
//!     cargo bench -p clawcut-worker --bench scheduler -- 2000
//! ```
//!
//! Each job is one poll and two downloads (a 64 KiB video streamed in 16 KiB
//! chunks 2 ms apart, and a thumbnail) from the loopback fake, fsynced and
//! published, then the completion transaction; SQLite, one replica,
//! `interval = 2s`, `batch_size = 25`, `concurrency = 8`. The slow job's
//! content (a 300-byte video, then the fake's 2 KiB thumbnail) trickles one
//! byte every 100 ms, about 235 s in all, and it is the oldest row, so both
//! loops claim it first. Measured: seconds until every *other* job is
//! `completed`.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use clawcut_test_support::db::AppDb;
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};

const BIN: &str = env!("CARGO_BIN_EXE_clawcut-worker");
mod common;

use common::{KEY, completed_count, config, migrate, now_ms, run, seed_job};

/// Both binaries' settings (the baseline refuses newer keys).
const RECONCILE: &str =
    "interval = \"2s\"\nmin_age = \"0s\"\nbatch_size = 25\nconcurrency = 8\nlease_ttl = \"60s\"\n";

async fn seed(db: &AppDb, n: usize, slow: bool) {
    let t = now_ms() - 600_000;
    if slow {
        seed_job(db, n, "job_slow".into(), "video_slow".into(), t - 60_000).await;
    }
    for i in 0..n {
        seed_job(db, i, format!("job_{i}"), format!("video_{i}"), t).await;
    }
}

async fn fast_completed(db: &AppDb, n: usize) -> usize {
    let mut done = 0;
    for i in 0..n {
        if db
            .job(&format!("job_{i}"))
            .await
            .unwrap()
            .is_some_and(|j| j.status == "completed")
        {
            done += 1;
        }
    }
    done
}

/// Seconds until the `n` fast jobs are completed, with `bin`.
async fn drain(bin: &str, name: &str, n: usize, slow: bool) -> f64 {
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(
        Script::completes_after(0)
            .with_video_bytes(64 * 1024)
            .with_chunk_delay(Duration::from_millis(2)),
    );
    fake.script(
        "video_slow",
        Script::completes_after(0)
            .with_video_bytes(300)
            .trickle(1, Duration::from_millis(100)),
    );
    let (_db_dir, url) = clawcut_test_support::db::temp_sqlite();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, &fake.base_url(), RECONCILE);
    migrate(bin, &cfg);
    let db = AppDb::connect(&url).await.unwrap();
    seed(&db, n, slow).await;
    let started = Instant::now();
    // BENCH_LOG_DIR keeps each daemon's log, to see where its time goes.
    let log = match std::env::var("BENCH_LOG_DIR") {
        Ok(d) => Stdio::from(
            std::fs::File::create(format!("{d}/{}.log", name.replace([' ', ','], "_"))).unwrap(),
        ),
        Err(_) => Stdio::null(),
    };
    let mut child: Child = run(bin, &cfg, log);
    loop {
        // Counting all completions is cheap; only near the end ask whether
        // the fast ones (not the slow one) are the ones done.
        let all = completed_count(&db).await;
        if all >= n as i64 && fast_completed(&db, n).await == n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{name}: did not drain"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "{name:<44} {n} jobs in {secs:>6.2}s = {:>7.1} jobs/s",
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
    let Ok(baseline) = std::env::var("BASELINE_BIN") else {
        eprintln!(
            "BASELINE_BIN is not set: see the module doc for how to build the previous binary"
        );
        std::process::exit(2);
    };
    let old = drain(&baseline, "baseline (pass loop), drain", n, false).await;
    let new = drain(BIN, "slots, drain", n, false).await;
    if std::env::var("BENCH_ONLY_DRAIN").is_ok() {
        println!("ratio (time, slots/baseline): {:.2}", new / old);
        return;
    }
    let old_slow = drain(
        &baseline,
        "baseline (pass loop), drain + 1 slow job",
        n,
        true,
    )
    .await;
    let new_slow = drain(BIN, "slots, drain + 1 slow job", n, true).await;
    println!();
    println!("| case | baseline (pass loop) | slots | ratio (time, slots/baseline) |");
    println!("|---|---|---|---|");
    println!(
        "| drain {n} jobs | {old:.2} s | {new:.2} s | {:.2} |",
        new / old
    );
    println!(
        "| drain {n} jobs + 1 slow | {old_slow:.2} s | {new_slow:.2} s | {:.2} |",
        new_slow / old_slow
    );
    println!(
        "| cost of the slow job (time with / without) | {:.2} | {:.2} | |",
        old_slow / old,
        new_slow / new
    );
}
