//! Scale-out on PostgreSQL: 1, 2 and 4 replicas of the real binary drain the
//! same backlog from one database, against a provider that answers every
//! request after 100 ms (a provider across a network), each replica with the
//! same fixed `concurrency`. The baseline is one replica, in the same run.
//! Also counted: completions per job (audit events and the provider's
//! downloads: zero duplicates is the bar), and the CPU time the daemons and
//! PostgreSQL spent per job, which says where one PostgreSQL stops scaling.
//!
//! `cargo bench -p clawcut-worker --bench scaleout -- [jobs] [concurrency]`

use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use clawcut_test_support::db::AppDb;
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};
use clawcut_test_support::procfs::cpu_secs;

const BIN: &str = env!("CARGO_BIN_EXE_clawcut-worker");
const LATENCY: Duration = Duration::from_millis(100);
mod common;

use common::{KEY, completed_count, config, migrate, now_ms, run, seed_job};

/// CPU seconds of every `postgres` process now, by pid (the bench's
/// throwaway cluster is the only one it expects on the machine).
fn postgres_cpu() -> HashMap<u32, f64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "postgres" {
            out.insert(pid, cpu_secs(pid));
        }
    }
    out
}

/// Transactions committed in this database so far (`pg_stat_database`,
/// which the statistics collector updates within a second or so).
async fn commits(db: &AppDb) -> i64 {
    let AppDb::Pg(p) = db else { return 0 };
    sqlx::query_scalar::<_, i64>(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(p)
    .await
    .unwrap()
}

struct Run {
    secs: f64,
    /// Jobs with more than one `completed` event, and videos the provider
    /// served more than once.
    twice_completed: usize,
    twice_downloaded: usize,
    daemon_cpu: f64,
    postgres_cpu: f64,
    /// Transactions per job, the bench's own reads taken out.
    commits_per_job: f64,
    /// PostgreSQL CPU seconds per second while the replicas idle.
    idle_pg_per_sec: f64,
}

async fn drain(url: &str, n: usize, replicas: usize, concurrency: usize) -> Run {
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(Script::completes_after(0).with_video_bytes(64 * 1024));
    fake.set_latency(LATENCY);
    let dir = tempfile::tempdir().unwrap();
    // max_in_flight is per process and well above `concurrency`: the bench
    // measures replicas, not the provider semaphore.
    let cfg = config(
        dir.path(),
        url,
        &fake.base_url(),
        &format!(
            "interval = \"100ms\"\nmin_age = \"0s\"\nbatch_size = {concurrency}\nconcurrency = {concurrency}\nlease_ttl = \"30s\"\n"
        ),
    );
    migrate(BIN, &cfg);
    let db = AppDb::connect(url).await.unwrap();
    let t = now_ms() - 600_000;
    for i in 0..n {
        seed_job(&db, i, format!("job_{i}"), format!("video_{i}"), t).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let commits_before = commits(&db).await;
    let pg_before = postgres_cpu();
    let started = Instant::now();
    let mut children: Vec<Child> = (0..replicas)
        .map(|i| {
            let log = std::fs::File::create(dir.path().join(format!("replica_{i}.log"))).unwrap();
            run(BIN, &cfg, Stdio::from(log))
        })
        .collect();
    // Each of these reads is a transaction and PostgreSQL CPU of its own:
    // 50 ms apart, they stay a small share of either.
    let mut reads = 0;
    while completed_count(&db).await < n as i64 {
        reads += 1;
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "did not drain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let daemon_cpu: f64 = children.iter().map(|c| cpu_secs(c.id())).sum();
    let pg_after = postgres_cpu();
    let spent = |before: &HashMap<u32, f64>, after: &HashMap<u32, f64>| -> f64 {
        after
            .iter()
            .map(|(pid, a)| a - before.get(pid).copied().unwrap_or(0.0))
            .sum()
    };
    let pg_busy = spent(&pg_before, &pg_after);
    // The daemons' last commits reach pg_stat_database within a second or
    // so; then the same replicas with nothing to do, for what PostgreSQL
    // spends on their idle claims and on its own background work.
    let lag = Duration::from_millis(1500);
    tokio::time::sleep(lag).await;
    let (c1, p1) = (commits(&db).await, postgres_cpu());
    let idle_for = Duration::from_secs(5);
    tokio::time::sleep(idle_for).await;
    let (c2, p2) = (commits(&db).await, postgres_cpu());
    let idle_pg_per_sec = spent(&p1, &p2) / idle_for.as_secs_f64();
    let idle_commits_per_sec = (c2 - c1 - 1) as f64 / idle_for.as_secs_f64();
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let drain_commits =
        (c1 - commits_before - reads - 1) as f64 - idle_commits_per_sec * lag.as_secs_f64();
    let commits_per_job = drain_commits / n as f64;
    let mut completions: HashMap<String, usize> = HashMap::new();
    for e in db.all_events().await.unwrap() {
        if e.to_status == "completed" {
            *completions.entry(e.ai_job_id).or_default() += 1;
        }
    }
    assert_eq!(completions.len(), n, "every job has its completion event");
    let twice_completed = completions.values().filter(|&&c| c > 1).count();
    let twice_downloaded = (0..n)
        .filter(|i| fake.downloads(&format!("video_{i}"), "video") > 1)
        .count();
    db.close().await;
    // What the replicas complained of (a download redone shows here).
    for i in 0..replicas {
        let log = std::fs::read_to_string(dir.path().join(format!("replica_{i}.log")))
            .unwrap_or_default();
        for line in log.lines().filter(|l| !l.trim().is_empty()).take(3) {
            eprintln!("  replica {i}: {line}");
        }
    }
    Run {
        secs,
        twice_completed,
        twice_downloaded,
        daemon_cpu,
        postgres_cpu: pg_busy,
        commits_per_job,
        idle_pg_per_sec,
    }
}

#[tokio::main]
async fn main() {
    let mut nums = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let n = nums.next().unwrap_or(800);
    let concurrency = nums.next().unwrap_or(4);
    // One run on a database of your own (to watch it with
    // pg_stat_statements, say): SCALEOUT_PG_URL, replicas as a third number.
    if let Ok(url) = std::env::var("SCALEOUT_PG_URL") {
        let replicas = nums.next().unwrap_or(1);
        let r = drain(&url, n, replicas, concurrency).await;
        println!(
            "{replicas} replicas: {:.2} s, {:.1} jobs/s, {:.2} commits/job, PostgreSQL {:.2} ms/job",
            r.secs,
            n as f64 / r.secs,
            r.commits_per_job,
            1000.0 * r.postgres_cpu / n as f64
        );
        return;
    }
    let Some(pg) = clawcut_test_support::pg::require() else {
        println!("scaleout skipped: no PostgreSQL server binaries");
        return;
    };
    println!(
        "{n} jobs (1 poll + video + thumbnail, each answer after {LATENCY:?}); concurrency {concurrency} per replica; PostgreSQL"
    );
    println!(
        "{:<10} {:>9} {:>9} {:>7} {:>10} {:>10} {:>13} {:>10} {:>12} {:>13}",
        "replicas",
        "seconds",
        "jobs/s",
        "speedup",
        "2x done",
        "2x fetched",
        "daemon ms/job",
        "pg ms/job",
        "commits/job",
        "pg idle ms/s"
    );
    let mut base = None;
    // 8 goes past what two cores hold at this latency: where it bends.
    for replicas in [1, 2, 4, 8] {
        let url = pg.fresh_db(&format!("scaleout{replicas}"));
        let r = drain(&url, n, replicas, concurrency).await;
        let rate = n as f64 / r.secs;
        let one = *base.get_or_insert(rate);
        println!(
            "{replicas:<10} {:>9.2} {:>9.1} {:>7.2} {:>10} {:>10} {:>13.2} {:>10.2} {:>12.2} {:>13.1}",
            r.secs,
            rate,
            rate / one,
            r.twice_completed,
            r.twice_downloaded,
            1000.0 * r.daemon_cpu / n as f64,
            1000.0 * r.postgres_cpu / n as f64,
            r.commits_per_job,
            1000.0 * r.idle_pg_per_sec,
        );
    }
    println!(
        "ideal per replica: {concurrency} slots / (3 requests x {LATENCY:?}) = {:.1} jobs/s",
        concurrency as f64 / (3.0 * LATENCY.as_secs_f64())
    );
}
