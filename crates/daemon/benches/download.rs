//! One 1 GiB output through the real binary against `curl` fetching the
//! same bytes from the same loopback fake, in the same run: the daemon's
//! throughput (poll, stream with sha256, fsync, rename, commit) as a ratio
//! of curl's, and the daemon's resident-memory growth while it downloads.
//!
//! `cargo bench -p clawcut-worker --bench download -- [MiB] [rounds]`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clawcut_test_support::db::AppDb;
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};
use clawcut_test_support::procfs::status_bytes;

const BIN: &str = env!("CARGO_BIN_EXE_clawcut-worker");
mod common;

use common::{KEY, completed_count, config, migrate, now_ms, run, seed_job};

fn curl(args: &[&str]) {
    let st = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "-H",
            &format!("Authorization: Bearer {KEY}"),
        ])
        .args(args)
        .status()
        .expect("curl");
    assert!(st.success(), "curl {args:?}");
}

/// Seconds for curl to fetch `id`'s video to a file, and with that file
/// fsynced (`sync FILE`), as the daemon does.
fn curl_round(fake: &FakeOpenAi, dir: &std::path::Path, id: &str) -> (f64, f64) {
    let base = fake.base_url();
    // A poll first: the fake serves content only for a completed video.
    curl(&["-o", "/dev/null", &format!("{base}/v1/videos/{id}")]);
    let out = dir.join(format!("{id}.mp4"));
    let out_s = out.to_string_lossy().into_owned();
    let t = Instant::now();
    curl(&["-o", &out_s, &format!("{base}/v1/videos/{id}/content")]);
    let fetched = t.elapsed().as_secs_f64();
    let st = Command::new("sync").arg(&out).status().expect("sync");
    assert!(st.success());
    let synced = t.elapsed().as_secs_f64();
    std::fs::remove_file(&out).unwrap();
    (fetched, synced)
}

/// Seconds from the job's insertion to `completed` (its claim waits for
/// the next 100 ms tick at most), and the daemon's resident-set growth over
/// its idle baseline.
async fn daemon_round(fake: &FakeOpenAi, round: usize) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (_db_dir, url) = clawcut_test_support::db::temp_sqlite();
    let cfg = config(
        dir.path(),
        &url,
        &fake.base_url(),
        "interval = \"100ms\"\nmin_age = \"0s\"\nconcurrency = 1\n",
    );
    migrate(BIN, &cfg);
    let db = AppDb::connect(&url).await.unwrap();
    let mut child = run(BIN, &cfg, Stdio::null());
    // Idle baseline: started, migrated, listening, nothing to do.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = status_bytes(child.id(), "VmRSS:");
    let t = Instant::now();
    seed_job(
        &db,
        round,
        format!("job_{round}"),
        format!("video_d{round}"),
        now_ms() - 600_000,
    )
    .await;
    while completed_count(&db).await < 1 {
        assert!(t.elapsed() < Duration::from_secs(300), "did not complete");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let peak = status_bytes(child.id(), "VmHWM:");
    let _ = child.kill();
    let _ = child.wait();
    let job = db.job(&format!("job_{round}")).await.unwrap().unwrap();
    assert_eq!(
        job.video_bytes,
        Some(fake.content(&format!("video_d{round}")).len() as i64)
    );
    db.close().await;
    (secs, peak.saturating_sub(baseline))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let mut nums = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let mib = nums.next().unwrap_or(1024);
    let rounds = nums.next().unwrap_or(3);
    let bytes = mib * 1024 * 1024;
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(
        Script::completes_after(0)
            .with_video_bytes(bytes)
            .with_thumbnail_bytes(2048),
    );
    let scratch = tempfile::tempdir().unwrap();
    let (mut c_fetch, mut c_sync, mut d_secs, mut growth) = (vec![], vec![], vec![], vec![]);
    for r in 0..rounds {
        let (f, s) = curl_round(&fake, scratch.path(), &format!("video_c{r}"));
        c_fetch.push(f);
        c_sync.push(s);
        let (secs, grew) = daemon_round(&fake, r).await;
        d_secs.push(secs);
        growth.push(grew);
    }
    let mb = bytes as f64 / 1e6;
    let (cf, cs, d) = (median(c_fetch), median(c_sync), median(d_secs));
    println!("{mib} MiB from the loopback fake; medians of {rounds} alternating rounds");
    println!(
        "  curl -o FILE                 {cf:>7.2} s  {:>7.0} MB/s",
        mb / cf
    );
    println!(
        "  curl -o FILE && sync FILE    {cs:>7.2} s  {:>7.0} MB/s",
        mb / cs
    );
    println!(
        "  clawcut-worker, insert to completed {d:>7.2} s  {:>7.0} MB/s   ratio to curl {:.2}, to curl+sync {:.2}",
        mb / d,
        cf / d,
        cs / d
    );
    println!(
        "  daemon resident-set growth over idle: {} (max {:.1} MiB)",
        growth
            .iter()
            .map(|g| format!("{:.1} MiB", *g as f64 / 1048576.0))
            .collect::<Vec<_>>()
            .join(", "),
        growth.iter().max().copied().unwrap_or(0) as f64 / 1048576.0
    );
}
