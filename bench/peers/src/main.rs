//! Store throughput against peers (issue 13, item 2): the same N no-op jobs,
//! claimed and completed, through River (`riverqueue` 0.5.0, its defaults
//! and its benchmark profile), apalis (`apalis-sqlite` / `apalis-postgres`
//! 1.0.0, defaults) and clawcut-store (`Store::claim` + `Store::complete`,
//! each completion with its `ai_job_events` row), on SQLite (a fresh temp
//! file per system) and on PostgreSQL (a fresh database per system on one
//! throwaway cluster), in one invocation.
//!
//! ```sh
//! cargo run --release --manifest-path bench/peers/Cargo.toml -- [jobs] [sqlite|postgres|both] [concurrency] [claim_limit] [loops] [system prefix]
//! ```
//!
//! Measured per (system, engine): wall time from the start of working (all
//! N jobs already inserted; inserting is not timed) until the database holds
//! N completed jobs, jobs/s, and the time against the fastest peer on that
//! engine. Each run then checks that exactly N are completed, none lost, none
//! worked twice (the handler's count, and each system's attempt counter or
//! events), and reads the durability settings from the pools' own
//! connections: SQLite's `journal_mode` and `synchronous` on every open
//! connection (they are per connection, and a library may set them on one),
//! PostgreSQL's `synchronous_commit` and `fsync`. On PostgreSQL it also
//! counts the transactions committed per job (`pg_stat_database.xact_commit`
//! from start to stop: the library's maintenance and the harness's few
//! checks included).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::{PgPool, SqlitePool};

mod apalis;
mod ours;
mod river;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    fn label(self) -> &'static str {
        match self {
            Engine::Sqlite => "SQLite",
            Engine::Postgres => "PostgreSQL",
        }
    }
}

/// A fresh, empty database for one system.
struct FreshDb {
    url: String,
    // Holds the SQLite file's directory until the system is done with it.
    _dir: Option<tempfile::TempDir>,
}

fn fresh_db(engine: Engine, name: &str) -> anyhow::Result<FreshDb> {
    match engine {
        Engine::Sqlite => {
            let (dir, url) = clawcut_test_support::db::temp_sqlite();
            Ok(FreshDb {
                url,
                _dir: Some(dir),
            })
        }
        Engine::Postgres => {
            let pg = clawcut_test_support::pg::require()
                .context("no PostgreSQL server binaries to start a throwaway cluster")?;
            Ok(FreshDb {
                url: pg.fresh_db(name),
                _dir: None,
            })
        }
    }
}

/// One system's pool, whichever engine: what the harness reads through.
#[derive(Clone)]
pub enum Pool {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

impl Pool {
    /// A single `i64` from a statement written the same on both engines.
    pub async fn scalar(&self, sql: &'static str) -> anyhow::Result<i64> {
        let v = match self {
            Pool::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Pool::Pg(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        };
        v.with_context(|| format!("query {sql}"))
    }

    /// On PostgreSQL, what autovacuum would do after the load, so every
    /// system starts working on fresh statistics.
    pub async fn analyze(&self) -> anyhow::Result<()> {
        if let Pool::Pg(p) = self {
            sqlx::query("ANALYZE").execute(p).await?;
        }
        Ok(())
    }

    /// PostgreSQL's count of committed transactions in this database (every
    /// one: reads too), or `None` on SQLite, which keeps no such count.
    pub async fn commits(&self) -> anyhow::Result<Option<i64>> {
        match self {
            Pool::Sqlite(_) => Ok(None),
            Pool::Pg(p) => Ok(Some(
                sqlx::query_scalar(
                    "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
                )
                .fetch_one(p)
                .await?,
            )),
        }
    }

    /// Where a run starts: [`Pool::commits`] once the setup's transactions
    /// are counted (a backend idle with uncounted transactions publishes
    /// them within 10 s, PostgreSQL's `PGSTAT_IDLE_INTERVAL`, so on
    /// PostgreSQL this waits that long first, or they would be counted
    /// against the system), and the WAL's position.
    pub async fn commits_at_rest(&self) -> anyhow::Result<AtRest> {
        if let Pool::Pg(_) = self {
            tokio::time::sleep(Duration::from_millis(10_500)).await;
        }
        Ok(AtRest {
            commits: self.commits().await?,
            wal: self.wal_lsn().await?,
        })
    }

    /// PostgreSQL: where the WAL's inserts are now.
    async fn wal_lsn(&self) -> anyhow::Result<Option<String>> {
        match self {
            Pool::Sqlite(_) => Ok(None),
            Pool::Pg(p) => Ok(Some(
                sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
                    .fetch_one(p)
                    .await?,
            )),
        }
    }

    /// Transactions committed since `before`, read last: the pool is closed
    /// first, because a backend publishes its counts when it exits, or when
    /// idle only up to 10 s later (PostgreSQL's `PGSTAT_IDLE_INTERVAL`);
    /// then a fresh connection to `url` reads until two reads agree.
    pub async fn close_counting_commits(
        &self,
        url: &str,
        before: Option<i64>,
    ) -> anyhow::Result<Option<u64>> {
        let (Pool::Pg(p), Some(before)) = (self, before) else {
            return Ok(None);
        };
        p.close().await;
        let fresh = Pool::Pg(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await?,
        );
        let mut last = -1;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = fresh.commits().await?.unwrap_or_default();
            if now == last {
                break;
            }
            last = now;
        }
        if let Pool::Pg(p) = fresh {
            p.close().await;
        }
        Ok(Some((last - before) as u64))
    }

    /// What a run measured, read once the system has stopped: the
    /// durability settings, what the cluster wrote to its WAL since
    /// `before` (the library's maintenance included, the harness's reads
    /// writing none), then (closing the pool) the transactions since.
    pub async fn measured(
        &self,
        url: &str,
        before: AtRest,
        elapsed: Duration,
    ) -> anyhow::Result<Measured> {
        let durability = self.durability().await?;
        let wal = match (before.wal, self.wal_lsn().await?) {
            (Some(from), Some(to)) => {
                // The WAL writer flushes asynchronously (`synchronous_commit=off`).
                tokio::time::sleep(Duration::from_millis(500)).await;
                clawcut_test_support::pg::require().and_then(|pg| pg.wal_stats(&from, &to))
            }
            _ => None,
        };
        let commits = self.close_counting_commits(url, before.commits).await?;
        Ok(Measured {
            elapsed,
            commits,
            wal,
            durability,
        })
    }

    /// The durability settings every idle connection of the pool has now.
    /// Call it once the library has stopped, so its connections are idle.
    pub async fn durability(&self) -> anyhow::Result<String> {
        let mut seen: Vec<(String, usize)> = Vec::new();
        let mut add = |s: String| match seen.iter_mut().find(|(k, _)| *k == s) {
            Some((_, n)) => *n += 1,
            None => seen.push((s, 1)),
        };
        match self {
            Pool::Sqlite(p) => {
                let mut held = Vec::new();
                while let Some(c) = p.try_acquire() {
                    held.push(c);
                }
                for c in &mut held {
                    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
                        .fetch_one(&mut **c)
                        .await?;
                    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                        .fetch_one(&mut **c)
                        .await?;
                    let sync = match sync {
                        0 => "OFF",
                        1 => "NORMAL",
                        2 => "FULL",
                        3 => "EXTRA",
                        _ => "?",
                    };
                    add(format!("journal_mode={journal} synchronous={sync}"));
                }
            }
            Pool::Pg(p) => {
                let mut held = Vec::new();
                while let Some(c) = p.try_acquire() {
                    held.push(c);
                }
                for c in &mut held {
                    let commit: String = sqlx::query_scalar("SHOW synchronous_commit")
                        .fetch_one(&mut **c)
                        .await?;
                    let fsync: String =
                        sqlx::query_scalar("SHOW fsync").fetch_one(&mut **c).await?;
                    add(format!("synchronous_commit={commit} fsync={fsync}"));
                }
            }
        }
        if seen.is_empty() {
            return Ok("no idle connection to ask".into());
        }
        let total: usize = seen.iter().map(|(_, n)| n).sum();
        Ok(seen
            .iter()
            .map(|(s, n)| format!("{s} ({n} of {total} conns)"))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// Where a run started ([`Pool::commits_at_rest`]).
pub struct AtRest {
    commits: Option<i64>,
    wal: Option<String>,
}

/// What one system's run produced.
pub struct Measured {
    pub elapsed: Duration,
    /// PostgreSQL only: transactions committed from start to stop.
    pub commits: Option<u64>,
    /// PostgreSQL only: the WAL written from start to stop, by record type.
    pub wal: Option<clawcut_test_support::pg::WalStats>,
    pub durability: String,
}

/// Waits until the handler has run `n` times, then until the database
/// counts `n` completed (completions may be written after the handler
/// returns, in batches), and returns the time since `start`. The database is
/// not asked before the handlers are done, so the wait itself adds no load.
pub async fn wait_completed(
    start: Instant,
    n: u64,
    worked: &AtomicU64,
    pool: &Pool,
    count_completed: &'static str,
) -> anyhow::Result<Duration> {
    let deadline = start + Duration::from_secs(600);
    while worked.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            bail!(
                "handler ran {} of {n} times in 600 s",
                worked.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    loop {
        let done = pool.scalar(count_completed).await?;
        if done as u64 >= n {
            return Ok(start.elapsed());
        }
        if Instant::now() > deadline {
            bail!("{done} of {n} completed in the database after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Exactly `n` rows, `n` of them completed, and the handler ran `n` times.
pub async fn verify(
    n: u64,
    worked: &AtomicU64,
    pool: &Pool,
    count_all: &'static str,
    count_completed: &'static str,
) -> anyhow::Result<()> {
    let all = pool.scalar(count_all).await? as u64;
    let completed = pool.scalar(count_completed).await? as u64;
    let ran = worked.load(Ordering::Relaxed);
    if all != n || completed != n || ran != n {
        bail!(
            "expected {n} rows all completed, worked once each: {all} rows, {completed} completed, handler ran {ran} times"
        );
    }
    Ok(())
}

struct Row {
    system: &'static str,
    engine: Engine,
    result: anyhow::Result<Measured>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

async fn run_one(
    system: &'static str,
    engine: Engine,
    n: u64,
    opts: &ours::Opts,
) -> anyhow::Result<Measured> {
    let db = fresh_db(engine, system)?;
    let url = db.url.as_str();
    match system {
        "River, defaults" => river::run(engine, url, n, river::Profile::Defaults).await,
        "River, bench profile" => river::run(engine, url, n, river::Profile::Bench).await,
        "apalis, defaults" => apalis::run(engine, url, n).await,
        "clawcut-store, per job" => ours::run(engine, url, n, opts, ours::Mode::PerJob).await,
        "clawcut-store, group commit" => ours::run(engine, url, n, opts, ours::Mode::Batched).await,
        other => bail!("no system {other}"),
    }
}

const SYSTEMS: [&str; 5] = [
    "River, defaults",
    "River, bench profile",
    "apalis, defaults",
    "clawcut-store, per job",
    "clawcut-store, group commit",
];

fn is_peer(system: &str) -> bool {
    !system.starts_with("clawcut-store")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = match args.next() {
        Some(a) => a.parse().context("jobs: a number")?,
        None => 20_000,
    };
    let engines = match args.next().as_deref().unwrap_or("both") {
        "sqlite" => vec![Engine::Sqlite],
        "postgres" => vec![Engine::Postgres],
        "both" => vec![Engine::Sqlite, Engine::Postgres],
        other => bail!("engine: sqlite, postgres or both, not {other}"),
    };
    let opts = ours::Opts {
        concurrency: match args.next() {
            Some(a) => a.parse().context("concurrency: a number")?,
            None => 8,
        },
        // As many as River's benchmark profile has workers, each of which
        // holds one fetched job.
        claim_limit: match args.next() {
            Some(a) => a.parse().context("claim_limit: a number")?,
            None => 2000,
        },
        loops: match args.next() {
            Some(a) => a.parse().context("loops: a number")?,
            None => 2,
        },
    };
    // A system name (or its prefix) runs only those: the peers take minutes.
    let only = args.next();

    let mut rows = Vec::new();
    for &engine in &engines {
        for system in SYSTEMS {
            if only.as_deref().is_some_and(|o| !system.starts_with(o)) {
                continue;
            }
            eprintln!("{} / {system}: {n} jobs ...", engine.label());
            let result = run_one(system, engine, n, &opts).await;
            match &result {
                Ok(m) => {
                    eprintln!(
                        "  {:.2} s, {:.0} jobs/s",
                        m.elapsed.as_secs_f64(),
                        n as f64 / m.elapsed.as_secs_f64()
                    );
                    if let (Some(w), true) = (&m.wal, std::env::var_os("PEERS_WALDUMP").is_some()) {
                        eprintln!("{}", w.text());
                    }
                }
                Err(e) => eprintln!("  FAILED: {e:#}"),
            }
            rows.push(Row {
                system,
                engine,
                result,
            });
        }
    }

    println!();
    println!(
        "{n} no-op jobs per system; clawcut-store: concurrency {} (per job), claim limit {}, {} loops (group commit)",
        opts.concurrency, opts.claim_limit, opts.loops
    );
    println!();
    println!(
        "| engine | system | seconds | jobs/s | time / best peer | transactions per job | WAL per job: records, B-tree entries, bytes | durability (as the pool's connections have it) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &engine in &engines {
        let best_peer = rows
            .iter()
            .filter(|r| r.engine == engine && is_peer(r.system))
            .filter_map(|r| r.result.as_ref().ok())
            .map(|m| m.elapsed)
            .min();
        for r in rows.iter().filter(|r| r.engine == engine) {
            match &r.result {
                Ok(m) => {
                    let secs = m.elapsed.as_secs_f64();
                    let ratio = best_peer
                        .map(|b| format!("{:.2}", secs / b.as_secs_f64()))
                        .unwrap_or_else(|| "—".into());
                    let commits = m
                        .commits
                        .map(|c| format!("{:.2}", c as f64 / n as f64))
                        .unwrap_or_else(|| "—".into());
                    let wal =
                        m.wal
                            .as_ref()
                            .map(|w| {
                                let per = |v: u64| v as f64 / n as f64;
                                format!(
                                    "{:.1}, {:.1}, {:.0}",
                                    per(w.records("Total")),
                                    per(w.records("Btree/INSERT_LEAF")
                                        + w.records("Btree/INSERT_POST")),
                                    per(w.bytes())
                                )
                            })
                            .unwrap_or_else(|| "—".into());
                    println!(
                        "| {} | {} | {secs:.2} | {:.0} | {ratio} | {commits} | {wal} | {} |",
                        engine.label(),
                        r.system,
                        n as f64 / secs,
                        m.durability
                    );
                }
                Err(e) => println!(
                    "| {} | {} | failed | | | | | {} |",
                    engine.label(),
                    r.system,
                    format!("{e:#}").replace('|', "/")
                ),
            }
        }
    }
    Ok(())
}
