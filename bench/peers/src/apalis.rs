//! apalis (`apalis-sqlite` / `apalis-postgres` 1.0.0, on `apalis-core`'s
//! `WorkerBuilder`): N no-op tasks pushed with `push_bulk`, then one worker
//! with the backend's default `Config` (fetch batches of 10, locks and acks
//! written in batches as the worker drains its events) until the database
//! counts N `Done`. The pools are opened as apalis's examples open them
//! (`SqlitePool::connect`, `PgPool::connect`), then its `setup`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use apalis_core::backend::TaskSink;
use apalis_core::error::BoxDynError;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{Engine, Measured, Pool};

#[derive(Clone, Debug, Deserialize, Serialize)]
struct Noop {
    i: u64,
}

static WORKED: AtomicU64 = AtomicU64::new(0);

async fn noop(_task: Noop) -> Result<(), BoxDynError> {
    WORKED.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

struct Tables {
    all: &'static str,
    done: &'static str,
    retried: &'static str,
}

const SQLITE: Tables = Tables {
    all: "SELECT COUNT(*) FROM Jobs",
    done: "SELECT COUNT(*) FROM Jobs WHERE status = 'Done'",
    retried: "SELECT COUNT(*) FROM Jobs WHERE attempts <> 1",
};

const POSTGRES: Tables = Tables {
    all: "SELECT COUNT(*) FROM apalis.jobs",
    done: "SELECT COUNT(*) FROM apalis.jobs WHERE status = 'Done'",
    retried: "SELECT COUNT(*) FROM apalis.jobs WHERE attempts <> 1",
};

/// Inserting is done: all `n` there, fresh statistics, a zeroed handler
/// count.
async fn ready(pool: &Pool, tables: &Tables, n: u64) -> anyhow::Result<()> {
    let all = pool.scalar(tables.all).await? as u64;
    if all != n {
        bail!("pushed {all} of {n}");
    }
    pool.analyze().await?;
    WORKED.store(0, Ordering::Relaxed);
    Ok(())
}

pub async fn run(engine: Engine, url: &str, n: u64) -> anyhow::Result<Measured> {
    let tasks: Vec<Noop> = (0..n).map(|i| Noop { i }).collect();
    let stop = Arc::new(Notify::new());
    let stopper = stop.clone();
    let stop_on_signal = move |ctx: apalis_core::worker::context::WorkerContext| {
        let stop = stopper.clone();
        async move {
            stop.notified().await;
            ctx.stop()
        }
    };
    let (pool, tables, before, start, worker) = match engine {
        Engine::Sqlite => {
            // apalis's examples connect by URL; `mode=rwc` creates the file.
            let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc")).await?;
            SqliteStorage::setup(&pool).await?;
            let mut backend = SqliteStorage::<Noop>::new(&pool);
            for chunk in tasks.chunks(1000) {
                backend
                    .push_bulk(chunk.to_vec())
                    .await
                    .map_err(|e| anyhow::anyhow!("push: {e}"))?;
            }
            let pool = Pool::Sqlite(pool);
            ready(&pool, &SQLITE, n).await?;
            let before = pool.commits_at_rest().await?;
            let start = Instant::now();
            let worker = WorkerBuilder::new("bench-peers")
                .backend(backend)
                .build(noop);
            let run = tokio::spawn(async move { worker.run_with_ctx(stop_on_signal).await });
            (pool, SQLITE, before, start, run)
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(url).await?;
            PostgresStorage::setup(&pool).await?;
            let mut backend = PostgresStorage::<Noop>::new(&pool);
            for chunk in tasks.chunks(1000) {
                backend
                    .push_bulk(chunk.to_vec())
                    .await
                    .map_err(|e| anyhow::anyhow!("push: {e}"))?;
            }
            let pool = Pool::Pg(pool);
            ready(&pool, &POSTGRES, n).await?;
            let before = pool.commits_at_rest().await?;
            let start = Instant::now();
            let worker = WorkerBuilder::new("bench-peers")
                .backend(backend)
                .build(noop);
            let run = tokio::spawn(async move { worker.run_with_ctx(stop_on_signal).await });
            (pool, POSTGRES, before, start, run)
        }
    };
    let elapsed = crate::wait_completed(start, n, &WORKED, &pool, tables.done).await;
    stop.notify_one();
    worker
        .await
        .context("worker task")?
        .map_err(|e| anyhow::anyhow!("worker: {e}"))?;
    let elapsed = elapsed?;

    crate::verify(n, &WORKED, &pool, tables.all, tables.done).await?;
    let retried = pool.scalar(tables.retried).await?;
    if retried != 0 {
        bail!("{retried} tasks took more than one attempt");
    }
    pool.measured(url, before, elapsed).await
}
