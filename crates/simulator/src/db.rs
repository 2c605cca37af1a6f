//! The app's side of the database: [`AppDb`] writes rows exactly as the
//! ClawCut app does (only the app's columns) and reads back what the daemon
//! did, on either backend. `demo` seeds its jobs and reads their outcome
//! with it; tests do the same. (Temp SQLite files and the throwaway
//! PostgreSQL live in `clawcut-test-support`.)
//!
//! Timestamps go in and come out as epoch milliseconds on both backends, so
//! one test body runs against SQLite and PostgreSQL alike.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, ColumnIndex, Decode, Row, Type};

/// A job as the app inserts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub id: String,
    pub kind: String,
    pub provider: String,
    pub scene_id: Option<String>,
    pub scene_version_id: Option<String>,
    pub request: String,
    pub status: String,
    pub provider_job_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl NewJob {
    /// A `video` job for the `openai` provider, scene `s-<id>`, version
    /// `v-<id>`, created and updated at `at`.
    pub fn video(id: &str, status: &str, provider_job_id: Option<&str>, at: i64) -> Self {
        NewJob {
            id: id.to_owned(),
            kind: "video".to_owned(),
            provider: "openai".to_owned(),
            scene_id: Some(format!("s-{id}")),
            scene_version_id: Some(format!("v-{id}")),
            request: r#"{"prompt":"a cat","model":"sora-2","seconds":"4","size":"720x1280"}"#
                .to_owned(),
            status: status.to_owned(),
            provider_job_id: provider_job_id.map(str::to_owned),
            created_at: at,
            updated_at: at,
        }
    }
}

/// One `ai_jobs` row as a test inspects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub provider_job_id: Option<String>,
    pub attempts: i64,
    pub polls: i64,
    pub next_attempt_at: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub fencing_token: i64,
    pub last_error: Option<String>,
    pub idempotency_key: Option<String>,
    pub video_path: Option<String>,
    pub thumbnail_path: Option<String>,
    pub video_sha256: Option<String>,
    pub video_bytes: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub id: String,
    pub ai_job_id: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub worker_id: String,
    pub detail: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SceneRow {
    pub id: String,
    pub title: String,
    pub current_version_id: Option<String>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    pub id: String,
    pub scene_id: String,
    pub status: String,
    pub video_path: Option<String>,
    pub thumbnail_path: Option<String>,
    pub video_sha256: Option<String>,
    pub video_bytes: Option<i64>,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The app's side of the database.
#[derive(Debug, Clone)]
pub enum AppDb {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

/// Read a typed column; panics with the column name (tests only).
fn col<'r, R, T>(row: &'r R, name: &'r str) -> T
where
    R: Row,
    &'r str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(name)
        .unwrap_or_else(|e| panic!("decode column {name}: {e}"))
}

macro_rules! job_row {
    ($r:expr) => {
        JobRow {
            id: col($r, "id"),
            kind: col($r, "kind"),
            status: col($r, "status"),
            provider_job_id: col($r, "provider_job_id"),
            attempts: col($r, "attempts"),
            polls: col($r, "polls"),
            next_attempt_at: col($r, "next_attempt_at"),
            lease_owner: col($r, "lease_owner"),
            lease_expires_at: col($r, "lease_expires_at"),
            fencing_token: col($r, "fencing_token"),
            last_error: col($r, "last_error"),
            idempotency_key: col($r, "idempotency_key"),
            video_path: col($r, "video_path"),
            thumbnail_path: col($r, "thumbnail_path"),
            video_sha256: col($r, "video_sha256"),
            video_bytes: col($r, "video_bytes"),
            created_at: col($r, "created_at"),
            updated_at: col($r, "updated_at"),
            completed_at: col($r, "completed_at"),
        }
    };
}

macro_rules! event_row {
    ($r:expr) => {
        EventRow {
            id: col($r, "id"),
            ai_job_id: col($r, "ai_job_id"),
            from_status: col($r, "from_status"),
            to_status: col($r, "to_status"),
            worker_id: col($r, "worker_id"),
            detail: col($r, "detail"),
            created_at: col($r, "created_at"),
        }
    };
}

macro_rules! scene_row {
    ($r:expr) => {
        SceneRow {
            id: col($r, "id"),
            title: col($r, "title"),
            current_version_id: col($r, "current_version_id"),
            updated_at: col($r, "updated_at"),
        }
    };
}

macro_rules! version_row {
    ($r:expr) => {
        VersionRow {
            id: col($r, "id"),
            scene_id: col($r, "scene_id"),
            status: col($r, "status"),
            video_path: col($r, "video_path"),
            thumbnail_path: col($r, "thumbnail_path"),
            video_sha256: col($r, "video_sha256"),
            video_bytes: col($r, "video_bytes"),
            error: col($r, "error"),
            created_at: col($r, "created_at"),
            updated_at: col($r, "updated_at"),
        }
    };
}

const SQLITE_JOB: &str = "SELECT id, kind, status, provider_job_id, attempts, polls,
    next_attempt_at, lease_owner, lease_expires_at, fencing_token, last_error, idempotency_key,
    video_path, thumbnail_path, video_sha256, video_bytes, created_at, updated_at, completed_at
    FROM ai_jobs WHERE id = ?1";

const PG_JOB: &str = "SELECT id, kind, status, provider_job_id, attempts::int8 AS attempts,
    polls::int8 AS polls,
    (extract(epoch from next_attempt_at) * 1000)::int8 AS next_attempt_at,
    lease_owner, (extract(epoch from lease_expires_at) * 1000)::int8 AS lease_expires_at,
    fencing_token, last_error, idempotency_key,
    video_path, thumbnail_path, video_sha256, video_bytes,
    (extract(epoch from created_at) * 1000)::int8 AS created_at,
    (extract(epoch from updated_at) * 1000)::int8 AS updated_at,
    (extract(epoch from completed_at) * 1000)::int8 AS completed_at
    FROM ai_jobs WHERE id = $1";

const SQLITE_EVENTS: &str = "SELECT id, ai_job_id, from_status, to_status, worker_id, detail,
    created_at FROM ai_job_events WHERE ai_job_id = ?1 ORDER BY created_at, rowid";
const SQLITE_ALL_EVENTS: &str = "SELECT id, ai_job_id, from_status, to_status, worker_id,
    detail, created_at FROM ai_job_events ORDER BY created_at, rowid";
const PG_EVENTS: &str = "SELECT id, ai_job_id, from_status, to_status, worker_id, detail,
    (extract(epoch from created_at) * 1000)::int8 AS created_at
    FROM ai_job_events WHERE ai_job_id = $1 ORDER BY created_at, seq";
const PG_ALL_EVENTS: &str = "SELECT id, ai_job_id, from_status, to_status, worker_id, detail,
    (extract(epoch from created_at) * 1000)::int8 AS created_at
    FROM ai_job_events ORDER BY created_at, seq";

/// One statement on whichever backend this is: the SQL text differs
/// (placeholders, timestamp conversions); the binds and what is done with
/// the result do not, so they are written once.
macro_rules! on_backend {
    ($db:expr, sqlite: $sqlite:expr, pg: $pg:expr, [$($bind:expr),* $(,)?], |$q:ident, $pool:ident| $run:expr) => {
        match $db {
            AppDb::Sqlite($pool) => {
                let $q = sqlx::query($sqlite)$(.bind($bind))*;
                $run
            }
            AppDb::Pg($pool) => {
                let $q = sqlx::query($pg)$(.bind($bind))*;
                $run
            }
        }
    };
}

impl AppDb {
    /// Connect to either backend, by the URL's scheme. The schema must be
    /// created by the daemon (`migrate`) before rows are written.
    pub async fn connect(url: &str) -> Result<AppDb, sqlx::Error> {
        if url.starts_with("sqlite:") {
            let opts: SqliteConnectOptions = url.parse()?;
            let opts = opts
                .create_if_missing(true)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(2)
                .connect_with(opts)
                .await?;
            Ok(AppDb::Sqlite(pool))
        } else {
            let pool = PgPoolOptions::new().max_connections(4).connect(url).await?;
            Ok(AppDb::Pg(pool))
        }
    }

    pub async fn close(&self) {
        match self {
            AppDb::Sqlite(p) => p.close().await,
            AppDb::Pg(p) => p.close().await,
        }
    }

    /// Run raw SQL (one or several statements).
    pub async fn exec(&self, sql: &str) -> Result<(), sqlx::Error> {
        let sql = AssertSqlSafe(sql.to_owned());
        match self {
            AppDb::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
            AppDb::Pg(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
        }
    }

    pub async fn insert_scene(&self, id: &str, title: &str) -> Result<(), sqlx::Error> {
        on_backend!(self,
            sqlite: "INSERT INTO scenes (id, title) VALUES (?1, ?2)",
            pg: "INSERT INTO scenes (id, title) VALUES ($1, $2)",
            [id, title], |q, p| q.execute(p).await.map(drop))
    }

    /// A `generating` version of `scene_id`, created at `created_at_ms`.
    pub async fn insert_version(
        &self,
        id: &str,
        scene_id: &str,
        created_at_ms: i64,
    ) -> Result<(), sqlx::Error> {
        on_backend!(self,
            sqlite: "INSERT INTO scene_versions (id, scene_id, status, created_at, updated_at)
                     VALUES (?1, ?2, 'generating', ?3, ?3)",
            pg: "INSERT INTO scene_versions (id, scene_id, status, created_at, updated_at)
                 VALUES ($1, $2, 'generating', to_timestamp($3::float8 / 1000.0),
                         to_timestamp($3::float8 / 1000.0))",
            [id, scene_id, created_at_ms], |q, p| q.execute(p).await.map(drop))
    }

    /// Insert a job with only the columns the app writes.
    pub async fn insert_job(&self, j: &NewJob) -> Result<(), sqlx::Error> {
        on_backend!(self,
            sqlite: "INSERT INTO ai_jobs (id, kind, provider, scene_id, scene_version_id, request,
                         status, provider_job_id, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            pg: "INSERT INTO ai_jobs (id, kind, provider, scene_id, scene_version_id, request,
                     status, provider_job_id, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                         to_timestamp($9::float8 / 1000.0), to_timestamp($10::float8 / 1000.0))",
            [&j.id, &j.kind, &j.provider, &j.scene_id, &j.scene_version_id, &j.request,
             &j.status, &j.provider_job_id, j.created_at, j.updated_at],
            |q, p| q.execute(p).await.map(drop))
    }

    /// Insert a job's scene (titled after it) and its `generating` version,
    /// created at the job's `created_at`, when the job names them.
    pub async fn insert_job_with_scene(&self, j: &NewJob) -> Result<(), sqlx::Error> {
        if let Some(scene) = &j.scene_id {
            self.insert_scene(scene, &format!("scene of {}", j.id))
                .await?;
            if let Some(version) = &j.scene_version_id {
                self.insert_version(version, scene, j.created_at).await?;
            }
        }
        self.insert_job(j).await
    }

    pub async fn set_current_version(&self, scene: &str, version: &str) -> Result<(), sqlx::Error> {
        on_backend!(self,
            sqlite: "UPDATE scenes SET current_version_id = ?2 WHERE id = ?1",
            pg: "UPDATE scenes SET current_version_id = $2 WHERE id = $1",
            [scene, version], |q, p| q.execute(p).await.map(drop))
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRow>, sqlx::Error> {
        on_backend!(self, sqlite: SQLITE_JOB, pg: PG_JOB, [id],
            |q, p| Ok(q.fetch_optional(p).await?.map(|r| job_row!(&r))))
    }

    /// A job's events, oldest first.
    pub async fn events(&self, job_id: &str) -> Result<Vec<EventRow>, sqlx::Error> {
        on_backend!(self, sqlite: SQLITE_EVENTS, pg: PG_EVENTS, [job_id],
            |q, p| Ok(q.fetch_all(p).await?.iter().map(|r| event_row!(r)).collect()))
    }

    pub async fn all_events(&self) -> Result<Vec<EventRow>, sqlx::Error> {
        on_backend!(self, sqlite: SQLITE_ALL_EVENTS, pg: PG_ALL_EVENTS, [],
            |q, p| Ok(q.fetch_all(p).await?.iter().map(|r| event_row!(r)).collect()))
    }

    pub async fn scene(&self, id: &str) -> Result<Option<SceneRow>, sqlx::Error> {
        on_backend!(self,
            sqlite: "SELECT id, title, current_version_id, updated_at FROM scenes WHERE id = ?1",
            pg: "SELECT id, title, current_version_id,
                     (extract(epoch from updated_at) * 1000)::int8 AS updated_at
                 FROM scenes WHERE id = $1",
            [id], |q, p| Ok(q.fetch_optional(p).await?.map(|r| scene_row!(&r))))
    }

    pub async fn version(&self, id: &str) -> Result<Option<VersionRow>, sqlx::Error> {
        on_backend!(self,
            sqlite: "SELECT id, scene_id, status, video_path, thumbnail_path, video_sha256,
                         video_bytes, error, created_at, updated_at
                     FROM scene_versions WHERE id = ?1",
            pg: "SELECT id, scene_id, status, video_path, thumbnail_path, video_sha256,
                     video_bytes, error,
                     (extract(epoch from created_at) * 1000)::int8 AS created_at,
                     (extract(epoch from updated_at) * 1000)::int8 AS updated_at
                 FROM scene_versions WHERE id = $1",
            [id], |q, p| Ok(q.fetch_optional(p).await?.map(|r| version_row!(&r))))
    }

    /// Every job (any kind) by status, sorted by status.
    pub async fn count_jobs_by_status(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        const SQL: &str = "SELECT status, COUNT(*) FROM ai_jobs GROUP BY status ORDER BY status";
        match self {
            AppDb::Sqlite(p) => sqlx::query_as(SQL).fetch_all(p).await,
            AppDb::Pg(p) => sqlx::query_as(SQL).fetch_all(p).await,
        }
    }
}
