//! [`SqliteStore`]: the embedded backend. One file in WAL mode, `synchronous
//! = FULL` (a committed completion survives power loss), a generous busy
//! timeout so that two processes on one file queue instead of failing.
//!
//! Every multi-statement transaction starts with `BEGIN IMMEDIATE`: taking
//! the write lock up front makes SQLite wait in its busy handler rather than
//! fail with `SQLITE_BUSY_SNAPSHOT` when another writer got in between.
//!
//! The statements are in `sql`; the operations that run them, shared with
//! PostgreSQL, in `crate::sql`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use crate::sql::{Backed, Dialect, DueHint};
use crate::{Backend, SchemaStatus, Snapshot, StoreError, backup, migrate};

mod sql;
pub(crate) use sql::CLAIM as CLAIM_SQL;
pub(crate) use sql::CLAIM_DUE;
pub(crate) use sql::MAKE_DUE as MAKE_DUE_SQL;
pub(crate) use sql::SQLITE as DIALECT;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    due: Arc<DueHint>,
}

impl SqliteStore {
    /// Open (creating the file and its directory if missing) the database
    /// `url` names, e.g. `sqlite:///var/lib/clawcut-worker/clawcut.db`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::Connect)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false);
        if let Some(dir) = opts.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Connect(sqlx::Error::Io(e)))?;
        }
        // Switching a new file to WAL needs it to itself, and the busy
        // handler does not cover that: processes opening one fresh database
        // at once (`migrate` beside `run`, two workers) retry instead.
        let open = || {
            crate::pool::ping_when_idle(SqlitePoolOptions::new())
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(opts.clone())
        };
        let pool = open
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(20))
                    .with_max_delay(Duration::from_secs(1))
                    .with_max_times(10)
                    .with_jitter(),
            )
            .when(is_locked)
            .await
            .map_err(StoreError::Connect)?;
        Ok(SqliteStore {
            pool,
            due: Arc::default(),
        })
    }

    /// The pool, for tests and tools that need raw access.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// SQLITE_BUSY / SQLITE_LOCKED (primary codes 5 and 6).
fn is_locked(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| matches!(c.parse::<i32>().map(|c| c & 0xff), Ok(5 | 6)))
}

impl Backed for SqliteStore {
    type DB = Sqlite;
    const BACKEND: Backend = Backend::Sqlite;
    const DIALECT: &'static Dialect = &sql::SQLITE;

    fn sql_pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn due_hint(&self) -> &DueHint {
        &self.due
    }

    async fn run_migrations(&self) -> Result<Vec<i64>, StoreError> {
        migrate::migrate_sqlite(&self.pool).await
    }

    async fn read_schema_status(&self) -> Result<SchemaStatus, StoreError> {
        migrate::schema_status_sqlite(&self.pool).await
    }

    async fn take_snapshot(&self, sqlite_dest: &std::path::Path) -> Result<Snapshot, StoreError> {
        backup::sqlite_snapshot_to(&self.pool, sqlite_dest).await?;
        // Read from the copy, not the live file: the list of media must
        // describe the database the backup holds.
        Ok(Snapshot::Written(
            backup::read_sqlite_snapshot(sqlite_dest).await?,
        ))
    }

    async fn rewrite_paths(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        backup::sqlite_rewrite_media_paths(&self.pool, from, to).await
    }
}
