//! End to end against the physical limit (issue 13, item 3): how close the
//! real binary comes to a program that does nothing but the durable writes
//! a completion needs.
//!
//! `cargo bench -p clawcut-worker --bench limit -- [jobs] [sqlite|postgres|both] [concurrency] [rounds]`
//!
//! (defaults 10000, both, 32, 3). For each engine and round, on a fresh
//! database and media dir each time:
//!
//! - **daemon**: N stranded jobs (`processing`, a provider id, a scene and
//!   its version), the loopback fake answering every poll `completed` with
//!   a 64 KiB video and a 2 KiB thumbnail, no latency. Timed from starting
//!   `clawcut-worker run` until all N are `completed` (whose files the
//!   daemon fsynced before the commit). Every file is then checked for its
//!   size. Also read: the daemon's CPU, this process's (the fake serving,
//!   the polling) and the cluster's, its `/metrics` (claim statements,
//!   time spent in them, busy slots sampled through the run) and on
//!   PostgreSQL the write transactions per job (commit records in the WAL,
//!   `pg_waldump`, so the bench's own reads do not count).
//! - **baseline**, `concurrency` workers and then one: in this process, per
//!   job exactly the physical work of a completion and nothing else (no
//!   HTTP, no sha256, no scheduler): the claim commit (a keyed UPDATE of the
//!   lease and fencing token), the video and the thumbnail written to
//!   `<media>/.tmp/*.part` and fsynced, each renamed to the daemon's final
//!   path (a new directory per scene, as the daemon's layout gives) with
//!   the new directory and its parent fsynced, then the completion's one
//!   transaction with the daemon's four writes (fenced job update, scene
//!   version, scene, audit event). The pool is the store's own (same
//!   pragmas, same size). Each worker claims as many jobs per statement as
//!   the daemon did per claim in the same round, so both make the same
//!   commits per job. Its CPU is this process's (SQLite included).
//!
//! The PostgreSQL leg uses the throwaway cluster of `clawcut_test_support::pg`,
//! which runs with `fsync=off` and `synchronous_commit=off`: its commits cost
//! CPU and round trips, not flushes. SQLite runs as the daemon configures it
//! (WAL, `synchronous=FULL`: one WAL fsync per commit).
//!
//! `LIMIT_ATTACH='perf record -g -o /tmp/p.data -p {pid}'` (or `strace -f
//! -c -p {pid}`, anything that stops cleanly on SIGINT) attaches a tool to
//! the daemon: the daemon is then started idle, the tool attached, and the
//! jobs seeded a second later, so the tool sees every job. One round, no
//! baseline; the time includes the tool's overhead.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clawcut_store::{PgStore, SqliteStore};
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};
use clawcut_test_support::procfs::cpu_secs;
use sqlx::{PgPool, SqlitePool};

const BIN: &str = env!("CARGO_BIN_EXE_clawcut-worker");
// The shared seeding and counting are row-at-a-time; this bench seeds in SQL.
#[allow(dead_code)]
mod common;

use common::{KEY, config, migrate, now_ms, run};

const VIDEO_BYTES: usize = 64 * 1024;
const THUMB_BYTES: usize = 2 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

/// Every run's directories, removed only when the bench ends (see
/// [`settle`]): removing a run's 30,000 files and directories made the next
/// round pay for them (85 % of the daemon's CPU in the kernel's inode
/// allocator).
static KEEP: std::sync::Mutex<Vec<tempfile::TempDir>> = std::sync::Mutex::new(Vec::new());

fn keep(dir: tempfile::TempDir) {
    KEEP.lock().unwrap().push(dir);
}

/// A new file costing more than this (mean of [`PROBE_FILES`] creates)
/// means the filesystem is still skipping recently freed inodes. A settled
/// create measured about 10-25 µs here; one right after a run's cleanup,
/// 70-450 µs.
const SETTLED_CREATE: Duration = Duration::from_micros(40);
const PROBE_FILES: u32 = 500;

/// Wait until creating a file is cheap again. This machine's ext4 has no
/// journal, and there a new inode skips every inode freed in the last 60 s,
/// or 360 s while its inode-table block is still dirty, reading the inode
/// table for each (`recently_deleted`). A previous run's cleanup (or a test
/// run's) frees tens of thousands: this run's first leg, always the
/// daemon's, would pay for them, and the baseline, which runs later, much
/// less. So the bench probes file creation in its own temp area and waits
/// (up to ten minutes) until it is cheap. The probe's files are removed at
/// the end with the run's.
async fn settle() {
    let started = Instant::now();
    loop {
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        for i in 0..PROBE_FILES {
            std::fs::File::create(dir.path().join(i.to_string())).unwrap();
        }
        let per_create = t.elapsed() / PROBE_FILES;
        keep(dir);
        if per_create <= SETTLED_CREATE {
            println!("file create {per_create:.1?} (settled at {SETTLED_CREATE:?} or less)");
            return;
        }
        if started.elapsed() > Duration::from_secs(600) {
            println!(
                "file create {per_create:.1?}: still not settled after ten minutes, going on (the figures pay for it)"
            );
            return;
        }
        println!(
            "file create {per_create:.1?}: waiting for recently freed inodes to age (see `settle`)"
        );
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
}

/// A fresh database: the URL and whatever keeps it alive.
struct FreshDb {
    url: String,
    dir: Option<tempfile::TempDir>,
}

fn fresh_db(engine: Engine, hint: &str) -> FreshDb {
    match engine {
        Engine::Sqlite => {
            let (dir, url) = clawcut_test_support::db::temp_sqlite();
            FreshDb {
                url,
                dir: Some(dir),
            }
        }
        Engine::Postgres => FreshDb {
            url: clawcut_test_support::pg::require()
                .expect("PostgreSQL")
                .fresh_db(hint),
            dir: None,
        },
    }
}

/// The store's own pool (its pragmas and size), for the baseline's writes
/// and the bench's reads.
#[derive(Clone)]
enum Db {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

impl Db {
    async fn connect(url: &str) -> Db {
        if url.starts_with("sqlite:") {
            Db::Sqlite(SqliteStore::connect(url).await.unwrap().pool().clone())
        } else {
            Db::Pg(PgStore::connect(url).await.unwrap().pool().clone())
        }
    }

    async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Pg(p) => p.close().await,
        }
    }
}

/// Runs `$body` with `$p` bound to the backend's pool and `$sql` to its
/// statements: the baseline's SQL is written once per dialect, its code once.
macro_rules! on_db {
    ($db:expr, |$p:ident, $sql:ident| $body:expr) => {
        match $db {
            Db::Sqlite($p) => {
                let $sql = &sqlite_sql();
                $body
            }
            Db::Pg($p) => {
                let $sql = &pg_sql();
                $body
            }
        }
    };
}

/// The baseline's statements: the daemon's own completion writes, as the
/// store sends them (`clawcut_store::completion_sql`: same rows, columns
/// and guard), and a claim of a list of ids (the daemon's claim also finds
/// the oldest due rows; finding is not a durable write).
struct BaselineSql {
    claim: &'static str,
    writes: clawcut_store::CompletionSql,
}

fn sqlite_sql() -> BaselineSql {
    BaselineSql {
        claim: "UPDATE ai_jobs SET lease_owner = ?2, lease_expires_at = ?3,
                fencing_token = fencing_token + 1
            WHERE id IN (SELECT value FROM json_each(?1)) RETURNING id, fencing_token",
        writes: clawcut_store::completion_sql(clawcut_store::Backend::Sqlite),
    }
}

fn pg_sql() -> BaselineSql {
    BaselineSql {
        claim: "UPDATE ai_jobs SET lease_owner = $2,
                lease_expires_at = to_timestamp($3::float8 / 1000.0),
                fencing_token = fencing_token + 1
            WHERE id = ANY(ARRAY(SELECT json_array_elements_text($1::json))) RETURNING id, fencing_token",
        writes: clawcut_store::completion_sql(clawcut_store::Backend::Postgres),
    }
}

/// N stranded jobs as `common::seed_job` writes them (job `job_<i>` of
/// scene `scene_<i>`, version `ver_<i>`, provider id `video_<i>`, updated
/// ten minutes ago), generated by the database in one transaction: a row at
/// a time, 10,000 jobs took longer than the runs they feed.
async fn seed(db: &Db, n: usize) {
    let t = now_ms() - 600_000;
    match db {
        Db::Sqlite(p) => {
            let rows = format!(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {n} - 1)"
            );
            let sql = format!(
                "BEGIN;
                 {rows} INSERT INTO scenes (id, title) SELECT 'scene_' || i, 's' FROM n;
                 {rows} INSERT INTO scene_versions (id, scene_id, status, created_at, updated_at)
                     SELECT 'ver_' || i, 'scene_' || i, 'generating', {t}, {t} FROM n;
                 {rows} INSERT INTO ai_jobs (id, kind, provider, scene_id, scene_version_id, request,
                         status, provider_job_id, created_at, updated_at)
                     SELECT 'job_' || i, 'video', 'openai', 'scene_' || i, 'ver_' || i, '{{}}',
                         'processing', 'video_' || i, {t}, {t} FROM n;
                 COMMIT;"
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(p)
                .await
                .unwrap();
        }
        Db::Pg(p) => {
            let ts = format!("to_timestamp({t}::float8 / 1000.0)");
            let rows = format!("FROM generate_series(0, {n} - 1) AS g(i)");
            let sql = format!(
                "BEGIN;
                 INSERT INTO scenes (id, title) SELECT 'scene_' || i, 's' {rows};
                 INSERT INTO scene_versions (id, scene_id, status, created_at, updated_at)
                     SELECT 'ver_' || i, 'scene_' || i, 'generating', {ts}, {ts} {rows};
                 INSERT INTO ai_jobs (id, kind, provider, scene_id, scene_version_id, request,
                         status, provider_job_id, created_at, updated_at)
                     SELECT 'job_' || i, 'video', 'openai', 'scene_' || i, 'ver_' || i, '{{}}',
                         'processing', 'video_' || i, {ts}, {ts} {rows};
                 COMMIT;
                 ANALYZE;"
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(p)
                .await
                .unwrap();
        }
    }
}

/// Whether any job is still unfinished: the predicate of the partial
/// indexes, so the check reads the few index entries left rather than
/// counting the table every 20 ms (which, on PostgreSQL, cost the cluster
/// about 1 ms of CPU a time: 5 % of a core taken from the daemon).
async fn any_unfinished(db: &Db) -> bool {
    const SQL: &str = "SELECT EXISTS (SELECT 1 FROM ai_jobs
         WHERE status IN ('queued', 'submitting', 'pending', 'processing'))";
    on_db!(db, |p, _s| sqlx::query_scalar(SQL)
        .fetch_one(p)
        .await
        .unwrap())
}

/// Every job completed with its two files at the paths its row names, each
/// of the size served; panics otherwise.
async fn verify(db: &Db, n: usize) {
    const SQL: &str = "SELECT id, status, video_path, thumbnail_path, video_bytes FROM ai_jobs";
    type Row = (String, String, Option<String>, Option<String>, Option<i64>);
    let rows: Vec<Row> = on_db!(db, |p, _s| sqlx::query_as(SQL).fetch_all(p).await.unwrap());
    assert_eq!(rows.len(), n);
    let size = |p: &Option<String>| {
        p.as_deref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
    };
    for (id, status, video, thumb, bytes) in &rows {
        assert_eq!(status, "completed", "{id}");
        assert_eq!(*bytes, Some(VIDEO_BYTES as i64), "{id}");
        assert_eq!(size(video), Some(VIDEO_BYTES as u64), "{id}: {video:?}");
        assert_eq!(size(thumb), Some(THUMB_BYTES as u64), "{id}: {thumb:?}");
    }
}

/// PostgreSQL: where the WAL is now.
async fn wal_lsn(db: &Db) -> Option<String> {
    let Db::Pg(p) = db else { return None };
    Some(
        sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
            .fetch_one(p)
            .await
            .unwrap(),
    )
}

/// Commit records between two WAL positions: every write transaction of the
/// cluster (read-only ones write none, so the bench's polling is not in it).
fn wal_commits(from: &str, to: &str) -> Option<u64> {
    let stats = clawcut_test_support::pg::require()?.wal_stats(from, to)?;
    Some(stats.records("Transaction/COMMIT"))
}

/// A counter or gauge from the daemon's `/metrics` text (the sum of its
/// series), 0 when absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(client: &reqwest::Client, port: u16) -> String {
    match client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The throwaway cluster's processes: the postmaster (a backend's parent)
/// and its children. Other clusters on the machine (another worktree's
/// tests) are not counted.
async fn cluster_pids(db: &Db) -> Vec<u32> {
    let Db::Pg(p) = db else { return Vec::new() };
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(p)
        .await
        .unwrap();
    let ppid = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let Some(postmaster) = ppid(backend as u32) else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid == postmaster || ppid(pid) == Some(postmaster))
        .collect()
}

/// CPU seconds of the cluster's processes now, by pid.
fn cpu_of(pids: &[u32]) -> HashMap<u32, f64> {
    pids.iter().map(|&p| (p, cpu_secs(p))).collect()
}

/// CPU the cluster spent since `before`: a process born since (the
/// daemon's backends) counts whole; one that exited takes its time with it
/// (the daemon's and the bench's connections live through the run).
fn cpu_since(before: &HashMap<u32, f64>, now: &HashMap<u32, f64>) -> f64 {
    now.iter()
        .map(|(p, c)| (c - before.get(p).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

struct DaemonRun {
    secs: f64,
    cpu: f64,
    /// This process meanwhile: the fake provider serving, and the polling.
    bench_cpu: f64,
    /// The cluster's CPU during the run (`None` on SQLite).
    pg_cpu: Option<f64>,
    /// Claim statements the scheduler ran, and the seconds it spent in them.
    claims: f64,
    claim_secs: f64,
    busy_slots: f64,
    commits: Option<u64>,
}

/// The tool of `LIMIT_ATTACH`, attached to `pid`.
fn attach(template: &str, pid: u32) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec {}",
            template.replace("{pid}", &pid.to_string())
        ))
        .spawn()
        .unwrap()
}

fn interrupt(tool: &mut Child) {
    let _ = Command::new("kill")
        .args(["-INT", &tool.id().to_string()])
        .status();
    let _ = tool.wait();
}

async fn daemon_run(
    engine: Engine,
    n: usize,
    concurrency: usize,
    attach_tool: Option<&str>,
) -> DaemonRun {
    let fresh = fresh_db(engine, "limit_daemon");
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(
        Script::completes_after(0)
            .with_video_bytes(VIDEO_BYTES)
            .with_thumbnail_bytes(THUMB_BYTES),
    );
    let dir = tempfile::tempdir().unwrap();
    // A full claim is followed at once, so `batch_size = concurrency` fills
    // every slot at startup and each freed slot claims what is free; the
    // interval only paces an idle daemon. The lease outlives any run, so no
    // heartbeat write is needed.
    let cfg = config(
        dir.path(),
        &fresh.url,
        &fake.base_url(),
        &format!(
            "interval = \"100ms\"\nmin_age = \"0s\"\nbatch_size = {concurrency}\nconcurrency = {concurrency}\nlease_ttl = \"10m\"\n"
        ),
    );
    // The shared config caps provider requests at 16 at once and turns the
    // listener off; here every slot may poll at once, and `/metrics` is read.
    let port = free_port();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            "max_in_flight = 16",
            &format!("max_in_flight = {}", concurrency.max(16)),
        )
        .replace("listen = \"\"", &format!("listen = \"127.0.0.1:{port}\""));
    std::fs::write(&cfg, text).unwrap();
    migrate(BIN, &cfg);
    let db = Db::connect(&fresh.url).await;
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut tool = None;
    let mut child = None;
    if let Some(t) = attach_tool {
        let c = run(BIN, &cfg, Stdio::from(log.try_clone().unwrap()));
        tool = Some(attach(t, c.id()));
        child = Some(c);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    seed(&db, n).await;
    let wal_before = wal_lsn(&db).await;
    let pg_before = cpu_of(&cluster_pids(&db).await);
    let me_before = cpu_secs(std::process::id());
    let started = Instant::now();
    let mut child = child.unwrap_or_else(|| run(BIN, &cfg, Stdio::from(log)));

    let client = reqwest::Client::new();
    let (mut busy_sum, mut samples) = (0.0, 0u32);
    let mut next_sample = Instant::now() + Duration::from_millis(250);
    while any_unfinished(&db).await {
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "{}: did not drain; log in {}",
            engine.name(),
            dir.path().display()
        );
        if Instant::now() >= next_sample {
            next_sample += Duration::from_millis(250);
            let m = scrape(&client, port).await;
            if !m.is_empty() {
                busy_sum += metric(&m, "clawcut_worker_slots_busy");
                samples += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs(child.id());
    let bench_cpu = cpu_secs(std::process::id()) - me_before;
    let pg_cpu = if engine == Engine::Postgres {
        Some(cpu_since(&pg_before, &cpu_of(&cluster_pids(&db).await)))
    } else {
        None
    };
    let m = scrape(&client, port).await;
    if let Some(t) = tool.as_mut() {
        interrupt(t);
    }
    let _ = child.kill();
    let _ = child.wait();
    let commits = match wal_before {
        Some(from) => {
            // The WAL writer flushes asynchronously (`synchronous_commit=off`).
            tokio::time::sleep(Duration::from_millis(500)).await;
            let to = wal_lsn(&db).await.unwrap();
            wal_commits(&from, &to)
        }
        None => None,
    };
    verify(&db, n).await;
    db.close().await;
    keep(dir);
    if let Some(d) = fresh.dir {
        keep(d);
    }
    DaemonRun {
        secs,
        cpu,
        bench_cpu,
        pg_cpu,
        claims: metric(&m, "clawcut_worker_passes_total"),
        claim_secs: metric(&m, "clawcut_worker_claim_duration_seconds_sum"),
        busy_slots: if samples > 0 {
            busy_sum / f64::from(samples)
        } else {
            f64::NAN
        },
        commits,
    }
}

fn sync_dir(dir: &Path) {
    std::fs::File::open(dir).unwrap().sync_all().unwrap();
}

/// Write `bytes` to a new temp file and fsync it.
fn stage(temp: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

/// Rename into a directory the job creates (one per scene), then fsync it
/// and, being new, its parent: what the daemon's install does.
fn install(temp: &Path, path: &Path) {
    let parent = path.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    std::fs::rename(temp, path).unwrap();
    sync_dir(parent);
    sync_dir(parent.parent().unwrap());
}

const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Lease jobs `ids` in one statement: their fencing tokens.
async fn baseline_claim(db: &Db, ids: &[String]) -> HashMap<String, i64> {
    let list = serde_json::to_string(ids).unwrap();
    let rows: Vec<(String, i64)> = on_db!(db, |p, sql| sqlx::query_as(sql.claim)
        .bind(list.as_str())
        .bind(OWNER)
        .bind(now_ms() + 600_000)
        .fetch_all(p)
        .await
        .unwrap());
    assert_eq!(rows.len(), ids.len());
    rows.into_iter().collect()
}

const OWNER: &str = "baseline";

async fn baseline_job(
    db: &Db,
    media: &Path,
    video: &Arc<Vec<u8>>,
    thumb: &Arc<Vec<u8>>,
    i: usize,
    token: i64,
) {
    let owner = OWNER;
    let (job, scene, version) = (format!("job_{i}"), format!("scene_{i}"), format!("ver_{i}"));
    let video_path = media.join(format!("videos/{scene}/{version}.mp4"));
    let thumb_path = media.join(format!("thumbnails/{scene}/{version}.webp"));
    {
        let (media, video, thumb) = (media.to_owned(), video.clone(), thumb.clone());
        let (vp, tp) = (video_path.clone(), thumb_path.clone());
        tokio::task::spawn_blocking(move || {
            let vt = media.join(format!(".tmp/{i}.v.part"));
            let tt = media.join(format!(".tmp/{i}.t.part"));
            stage(&vt, &video);
            stage(&tt, &thumb);
            install(&vt, &vp);
            install(&tt, &tp);
        })
        .await
        .unwrap();
    }
    let now = now_ms();
    let (vp, tp) = (video_path.to_string_lossy(), thumb_path.to_string_lossy());
    let detail = format!("{{\"video\":\"{vp}\",\"bytes\":{VIDEO_BYTES}}}");
    on_db!(db, |p, sql| {
        let w = &sql.writes;
        let mut tx = match w.begin_write {
            Some(b) => p.begin_with(b).await,
            None => p.begin().await,
        }
        .unwrap();
        let matched: Option<(Option<String>, Option<String>)> = sqlx::query_as(w.complete_job)
            .bind(job.as_str())
            .bind(owner)
            .bind(token)
            .bind("processing")
            .bind(now)
            .bind(vp.as_ref())
            .bind(SHA)
            .bind(VIDEO_BYTES as i64)
            .bind(tp.as_ref())
            .fetch_optional(&mut *tx)
            .await
            .unwrap();
        assert!(matched.is_some(), "the fenced update matched");
        sqlx::query(w.complete_version)
            .bind(version.as_str())
            .bind(vp.as_ref())
            .bind(tp.as_ref())
            .bind(SHA)
            .bind(VIDEO_BYTES as i64)
            .bind(now)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(w.complete_scene)
            .bind(scene.as_str())
            .bind(version.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(w.insert_event)
            .bind(job.as_str())
            .bind("processing")
            .bind("completed")
            .bind(owner)
            .bind(detail.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    });
}

/// Seconds for `workers` tasks to do the physical work of `n` completions,
/// each task claiming `per_claim` jobs at a time (the daemon's claims per
/// job, measured in the same round: the same commits).
async fn baseline(engine: Engine, n: usize, workers: usize, per_claim: usize) -> (f64, f64) {
    let fresh = fresh_db(engine, "limit_baseline");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &fresh.url, "http://127.0.0.1:9", "");
    migrate(BIN, &cfg);
    let db = Db::connect(&fresh.url).await;
    seed(&db, n).await;
    let media = dir.path().join("media");
    std::fs::create_dir_all(media.join(".tmp")).unwrap();
    let video = Arc::new(vec![7u8; VIDEO_BYTES]);
    let thumb = Arc::new(vec![9u8; THUMB_BYTES]);
    let next = Arc::new(AtomicUsize::new(0));
    let me_before = cpu_secs(std::process::id());
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (db, media, video, thumb, next) = (
                db.clone(),
                media.clone(),
                video.clone(),
                thumb.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let first = next.fetch_add(per_claim, Ordering::Relaxed);
                    if first >= n {
                        break;
                    }
                    let mine: Vec<usize> = (first..n.min(first + per_claim)).collect();
                    let ids: Vec<String> = mine.iter().map(|i| format!("job_{i}")).collect();
                    let tokens = baseline_claim(&db, &ids).await;
                    for (i, id) in mine.iter().zip(&ids) {
                        baseline_job(&db, &media, &video, &thumb, *i, tokens[id]).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs(std::process::id()) - me_before;
    verify(&db, n).await;
    db.close().await;
    keep(dir);
    if let Some(d) = fresh.dir {
        keep(d);
    }
    (secs, cpu)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(v: &[f64], n: usize) -> String {
    let rates: Vec<String> = v.iter().map(|s| format!("{:.0}", n as f64 / s)).collect();
    rates.join("/")
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut nums = args.iter().filter_map(|a| a.parse::<usize>().ok());
    let n = nums.next().unwrap_or(10_000);
    let concurrency = nums.next().unwrap_or(32);
    let rounds = nums.next().unwrap_or(3).max(1);
    let engines: Vec<Engine> = match args
        .iter()
        .find(|a| a.parse::<usize>().is_err())
        .map(String::as_str)
    {
        Some("sqlite") => vec![Engine::Sqlite],
        Some("postgres") => vec![Engine::Postgres],
        _ => vec![Engine::Sqlite, Engine::Postgres],
    };
    let attach_tool = std::env::var("LIMIT_ATTACH").ok().filter(|s| !s.is_empty());
    settle().await;
    println!(
        "{n} jobs, 64 KiB video + 2 KiB thumbnail each, concurrency {concurrency}, {rounds} round(s)"
    );
    let mut table: Rows = Vec::new();
    for engine in engines {
        if engine == Engine::Postgres && clawcut_test_support::pg::require().is_none() {
            continue;
        }
        if let Some(t) = attach_tool.as_deref() {
            let d = daemon_run(engine, n, concurrency, Some(t)).await;
            println!(
                "{:<9} daemon (with the attached tool) {:>7.2}s {:>6.0} jobs/s",
                engine.name(),
                d.secs,
                n as f64 / d.secs
            );
            continue;
        }
        let (mut ds, mut bc, mut bs) = (vec![], vec![], vec![]);
        for round in 0..rounds {
            let d = daemon_run(engine, n, concurrency, None).await;
            // The daemon's claim statements per job, as a batch size.
            let per_claim = ((n as f64 / d.claims.max(1.0)).round() as usize).max(1);
            let (c, c_cpu) = baseline(engine, n, concurrency, per_claim).await;
            let (s, _) = baseline(engine, n, 1, per_claim).await;
            println!(
                "{:<9} round {round}: daemon {:>7.2}s {:>6.0} jobs/s (cpu {:.2} ms/job, bench+fake cpu {:.2} ms/job, postgres cpu {} ms/job, \
                 {:.3} claims/job, {:.2} ms/claim, {:.1} busy slots, {} write commits/job) | \
                 baseline (claims of {per_claim}) x{concurrency} {:>6.2}s {:>6.0} jobs/s (cpu {:.2} ms/job) | baseline x1 {:>6.2}s {:>6.0} jobs/s",
                engine.name(),
                d.secs,
                n as f64 / d.secs,
                1000.0 * d.cpu / n as f64,
                1000.0 * d.bench_cpu / n as f64,
                d.pg_cpu
                    .map_or("-".to_owned(), |c| format!("{:.2}", 1000.0 * c / n as f64)),
                d.claims / n as f64,
                1000.0 * d.claim_secs / d.claims.max(1.0),
                d.busy_slots,
                d.commits
                    .map_or("-".to_owned(), |c| format!("{:.2}", c as f64 / n as f64)),
                c,
                n as f64 / c,
                1000.0 * c_cpu / n as f64,
                s,
                n as f64 / s,
            );
            ds.push(d.secs);
            bc.push(c);
            bs.push(s);
        }
        table.push((engine, ds, bc, bs));
    }
    // A static is never dropped: its directories are removed here.
    if !table.is_empty() {
        print_table(&table, n, rounds, concurrency);
    }
    KEEP.lock().unwrap().clear();
}

type Rows = Vec<(Engine, Vec<f64>, Vec<f64>, Vec<f64>)>;

fn print_table(table: &Rows, n: usize, rounds: usize, concurrency: usize) {
    println!("\nmedians of {rounds} round(s), {n} jobs (each round's jobs/s in brackets)");
    println!(
        "| engine | daemon jobs/s | baseline x{concurrency} jobs/s | ratio (bar 0.8) | baseline x1 jobs/s | ratio to x1 |"
    );
    println!("|---|---|---|---|---|---|");
    for (engine, ds, bc, bs) in table {
        let (d, c, s) = (
            n as f64 / median(ds.clone()),
            n as f64 / median(bc.clone()),
            n as f64 / median(bs.clone()),
        );
        println!(
            "| {} | {d:.0} [{}] | {c:.0} [{}] | **{:.2}** | {s:.0} [{}] | {:.2} |",
            engine.name(),
            spread(ds, n),
            spread(bc, n),
            d / c,
            spread(bs, n),
            d / s
        );
    }
}
