//! River (`riverqueue` 0.5.0): N no-op jobs inserted with `insert_many`,
//! then a client started on one queue until the database counts N
//! `completed`. The pools are opened as River's examples open them
//! (`examples/sqlite.rs`: WAL and a 5 s busy timeout; `basic_worker.rs`:
//! `PgPool::connect`).

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use riverqueue::migrate::{PostgresMigrator, SqliteMigrator};
use riverqueue::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use riverqueue::{BoxError, Client, Job, JobArgs, QueueConfig, WorkContext, WorkOutcome, Workers};
use serde::{Deserialize, Serialize};

use crate::{Engine, Measured, Pool};

#[derive(Debug, Clone, Copy)]
pub enum Profile {
    /// Fetch cooldown 100 ms and poll interval 1 s (River's constants); River
    /// has no default worker count, so 100, the figure of River's own
    /// getting-started configuration.
    Defaults,
    /// River's benchmark settings: fetch cooldown 2 ms, poll interval
    /// 20 ms, 2,000 workers.
    Bench,
}

#[derive(Clone, Debug, Deserialize, Serialize, JobArgs)]
#[river(kind = "noop")]
struct Noop {
    i: u64,
}

static WORKED: AtomicU64 = AtomicU64::new(0);

async fn noop(_ctx: WorkContext, _job: Job<Noop>) -> Result<WorkOutcome, BoxError> {
    WORKED.fetch_add(1, Ordering::Relaxed);
    Ok(WorkOutcome::Complete)
}

const ALL: &str = "SELECT COUNT(*) FROM river_job";
const COMPLETED: &str = "SELECT COUNT(*) FROM river_job WHERE state = 'completed'";
const RETRIED: &str = "SELECT COUNT(*) FROM river_job WHERE attempt <> 1";

pub async fn run(engine: Engine, url: &str, n: u64, profile: Profile) -> anyhow::Result<Measured> {
    let pool = match engine {
        Engine::Sqlite => {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new().connect_with(options).await?;
            SqliteMigrator::new(pool.clone()).migrate_up().await?;
            Pool::Sqlite(pool)
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(url).await?;
            PostgresMigrator::new(pool.clone()).migrate_up().await?;
            Pool::Pg(pool)
        }
    };

    let mut workers = Workers::new();
    workers.add_fn(noop)?;
    let builder = match &pool {
        Pool::Sqlite(p) => Client::builder(p.clone()),
        Pool::Pg(p) => Client::builder(p.clone()),
    }
    .workers(workers);
    let client = match profile {
        Profile::Defaults => builder.queue("default", QueueConfig::new(100)),
        Profile::Bench => builder.fetch_cooldown(Duration::from_millis(2)).queue(
            "default",
            QueueConfig::new(2000).with_fetch_poll_interval(Duration::from_millis(20)),
        ),
    }
    .build()?;

    let ids: Vec<u64> = (0..n).collect();
    for chunk in ids.chunks(1000) {
        client
            .insert_many(chunk.iter().map(|&i| Noop { i }))
            .await?;
    }
    if pool.scalar(ALL).await? as u64 != n {
        bail!("inserted {} of {n}", pool.scalar(ALL).await?);
    }
    pool.analyze().await?;

    WORKED.store(0, Ordering::Relaxed);
    let before = pool.commits_at_rest().await?;
    let start = Instant::now();
    let mut handle = client.start()?;
    let elapsed = crate::wait_completed(start, n, &WORKED, &pool, COMPLETED).await;
    handle.stop().await?;
    let elapsed = elapsed?;

    crate::verify(n, &WORKED, &pool, ALL, COMPLETED).await?;
    let retried = pool.scalar(RETRIED).await?;
    if retried != 0 {
        bail!("{retried} jobs took more than one attempt");
    }
    pool.measured(url, before, elapsed).await
}
