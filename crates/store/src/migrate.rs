//! A tiny migration runner: the SQL files under `migrations/<backend>/` are
//! embedded in the binary and applied in order, each in the same transaction
//! as its row in `clawcut_worker_schema(version, description, applied_at)`.
//!
//! Two processes may migrate at once (two replicas starting together): on
//! PostgreSQL the transaction first takes an advisory lock, on SQLite it is
//! `BEGIN IMMEDIATE`, so the second waits and then finds nothing to do.
//! A database migrated by a newer binary is reported, never downgraded.

use sqlx::{PgPool, SqlitePool};

use crate::StoreError;

/// One embedded migration.
struct Migration {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

/// The migrations of one backend's folder, in order. One list for both, so
/// the two can never disagree on a version's number or name.
macro_rules! migrations {
    ($dir:literal) => {
        &[
            Migration {
                version: 1,
                description: "init",
                sql: include_str!(concat!("../../../migrations/", $dir, "/0001_init.sql")),
            },
            Migration {
                version: 2,
                description: "provider pauses",
                sql: include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0002_provider_pauses.sql"
                )),
            },
            Migration {
                version: 3,
                description: "webhooks",
                sql: include_str!(concat!("../../../migrations/", $dir, "/0003_webhooks.sql")),
            },
            Migration {
                version: 4,
                description: "due index",
                sql: include_str!(concat!("../../../migrations/", $dir, "/0004_due_index.sql")),
            },
            Migration {
                version: 5,
                description: "panel indexes",
                sql: include_str!(concat!("../../../migrations/", $dir, "/0005_panel.sql")),
            },
            Migration {
                version: 6,
                description: "room for in-place updates",
                sql: include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0006_hot_updates.sql"
                )),
            },
            Migration {
                version: 7,
                description: "fewer index writes",
                sql: include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0007_fewer_index_writes.sql"
                )),
            },
        ]
    };
}

const SQLITE: &[Migration] = migrations!("sqlite");

const POSTGRES: &[Migration] = migrations!("postgres");

/// Arbitrary but fixed: every clawcut-worker process migrating the same
/// PostgreSQL database serializes on it.
const PG_MIGRATE_LOCK: i64 = 0x0063_6c61_7763_7574; // "clawcut"

/// Where the schema stands against the migrations this binary carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Highest version applied to the database (0: never migrated).
    pub current: i64,
    /// Highest version this binary carries.
    pub latest: i64,
}

impl SchemaStatus {
    /// The database has exactly the migrations this binary knows.
    pub fn is_current(&self) -> bool {
        self.current == self.latest
    }

    /// `migrate` has something to apply.
    pub fn is_behind(&self) -> bool {
        self.current < self.latest
    }

    /// A newer binary migrated this database.
    pub fn is_ahead(&self) -> bool {
        self.current > self.latest
    }
}

fn latest(migrations: &[Migration]) -> i64 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
}

pub(crate) async fn migrate_sqlite(pool: &SqlitePool) -> Result<Vec<i64>, StoreError> {
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::Migrate)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS clawcut_worker_schema (
            version INTEGER PRIMARY KEY NOT NULL,
            description TEXT NOT NULL,
            applied_at INTEGER NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(StoreError::Migrate)?;
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM clawcut_worker_schema")
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::Migrate)?;
    let latest = latest(SQLITE);
    if current > latest {
        return Err(StoreError::SchemaTooNew { current, latest });
    }
    if current == 0 {
        adopt_sqlite_app_tables(&mut tx).await?;
    }
    let mut applied = Vec::new();
    for m in SQLITE.iter().filter(|m| m.version > current) {
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::Migrate)?;
        sqlx::query(
            "INSERT INTO clawcut_worker_schema (version, description, applied_at)
             VALUES (?1, ?2, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))",
        )
        .bind(m.version)
        .bind(m.description)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::Migrate)?;
        applied.push(m.version);
    }
    tx.commit().await.map_err(StoreError::Migrate)?;
    Ok(applied)
}

/// Columns the daemon needs on tables the app may have created already,
/// with definitions valid for `ALTER TABLE ... ADD COLUMN` (constant
/// defaults). Must match `migrations/sqlite/0001_init.sql`.
const SQLITE_ADOPTED_COLUMNS: &[(&str, &str, &str)] = &[
    ("ai_jobs", "attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("ai_jobs", "polls", "INTEGER NOT NULL DEFAULT 0"),
    ("ai_jobs", "next_attempt_at", "INTEGER NOT NULL DEFAULT 0"),
    ("ai_jobs", "lease_owner", "TEXT"),
    ("ai_jobs", "lease_expires_at", "INTEGER"),
    ("ai_jobs", "fencing_token", "INTEGER NOT NULL DEFAULT 0"),
    ("ai_jobs", "last_error", "TEXT"),
    ("ai_jobs", "completed_at", "INTEGER"),
    ("ai_jobs", "video_path", "TEXT"),
    ("ai_jobs", "thumbnail_path", "TEXT"),
    ("ai_jobs", "video_sha256", "TEXT"),
    ("ai_jobs", "video_bytes", "INTEGER"),
    ("ai_jobs", "idempotency_key", "TEXT"),
    ("ai_jobs", "lease_taken_from", "TEXT"),
    ("scene_versions", "video_path", "TEXT"),
    ("scene_versions", "thumbnail_path", "TEXT"),
    ("scene_versions", "video_sha256", "TEXT"),
    ("scene_versions", "video_bytes", "INTEGER"),
    ("scene_versions", "error", "TEXT"),
];

/// Adopting an existing ClawCut database: the app's tables exist (so the
/// `CREATE TABLE IF NOT EXISTS` of migration 1 does nothing) but lack the
/// daemon's columns. SQLite has no `ADD COLUMN IF NOT EXISTS`, hence this.
async fn adopt_sqlite_app_tables(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
) -> Result<(), StoreError> {
    for (table, column, definition) in SQLITE_ADOPTED_COLUMNS {
        let present: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2")
                .bind(table)
                .bind(column)
                .fetch_one(&mut **tx)
                .await
                .map_err(StoreError::Migrate)?;
        let table_exists: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        )
        .bind(table)
        .fetch_one(&mut **tx)
        .await
        .map_err(StoreError::Migrate)?;
        if table_exists == 1 && present == 0 {
            // Built only from the constants above, never from input.
            let sql = format!("ALTER TABLE {table} ADD COLUMN {column} {definition}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut **tx)
                .await
                .map_err(StoreError::Migrate)?;
        }
    }
    Ok(())
}

pub(crate) async fn schema_status_sqlite(pool: &SqlitePool) -> Result<SchemaStatus, StoreError> {
    let exists: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'clawcut_worker_schema'",
    )
    .fetch_one(pool)
    .await
    .map_err(StoreError::SchemaStatus)?;
    let current = if exists == 0 {
        0
    } else {
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM clawcut_worker_schema")
            .fetch_one(pool)
            .await
            .map_err(StoreError::SchemaStatus)?
    };
    Ok(SchemaStatus {
        current,
        latest: latest(SQLITE),
    })
}

pub(crate) async fn migrate_pg(pool: &PgPool) -> Result<Vec<i64>, StoreError> {
    let mut tx = pool.begin().await.map_err(StoreError::Migrate)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PG_MIGRATE_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::Migrate)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS clawcut_worker_schema (
            version bigint PRIMARY KEY,
            description text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut *tx)
    .await
    .map_err(StoreError::Migrate)?;
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::int8 FROM clawcut_worker_schema")
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::Migrate)?;
    let latest = latest(POSTGRES);
    if current > latest {
        return Err(StoreError::SchemaTooNew { current, latest });
    }
    let mut applied = Vec::new();
    for m in POSTGRES.iter().filter(|m| m.version > current) {
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::Migrate)?;
        sqlx::query("INSERT INTO clawcut_worker_schema (version, description) VALUES ($1, $2)")
            .bind(m.version)
            .bind(m.description)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::Migrate)?;
        applied.push(m.version);
    }
    tx.commit().await.map_err(StoreError::Migrate)?;
    Ok(applied)
}

pub(crate) async fn schema_status_pg(pool: &PgPool) -> Result<SchemaStatus, StoreError> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('clawcut_worker_schema') IS NOT NULL")
            .fetch_one(pool)
            .await
            .map_err(StoreError::SchemaStatus)?;
    let current = if exists {
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::int8 FROM clawcut_worker_schema")
            .fetch_one(pool)
            .await
            .map_err(StoreError::SchemaStatus)?
    } else {
        0
    };
    Ok(SchemaStatus {
        current,
        latest: latest(POSTGRES),
    })
}
