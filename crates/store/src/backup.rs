//! The SQL of `backup` and `restore`: a consistent snapshot of the database
//! while the daemon writes to it, what that snapshot says about media (every
//! ready scene version's files, with the checksums the daemon recorded),
//! the schema version inside it, and the preparation of a restore target.
//!
//! The file list is always read *from the snapshot itself*, never from the
//! live database: on SQLite from the file `VACUUM INTO` wrote, on
//! PostgreSQL inside the very transaction whose snapshot `pg_dump
//! --snapshot` dumps. So the manifest describes the database that will be
//! restored, not a later one.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, PgConnection, PgPool, Postgres, SqliteConnection, SqlitePool, Transaction};

use crate::StoreError;

/// Which file of a scene version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MediaKind {
    Video,
    Thumbnail,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Video => "video",
            MediaKind::Thumbnail => "thumbnail",
        }
    }
}

/// A file a ready scene version points at, as the snapshot records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRef {
    pub scene_id: String,
    pub scene_version_id: String,
    pub kind: MediaKind,
    /// `scene_versions.video_path` or `thumbnail_path`, as stored.
    pub path: String,
    /// The recorded sha256 (videos only: the schema keeps none for
    /// thumbnails).
    pub sha256: Option<String>,
    /// The recorded size (videos only).
    pub bytes: Option<i64>,
}

/// What a snapshot holds that a backup needs besides the data itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotContents {
    /// Highest migration applied (0: never migrated).
    pub schema_version: i64,
    /// Every file of every `ready` scene version, ordered by version id,
    /// video before thumbnail.
    pub media: Vec<MediaRef>,
}

/// A consistent view of the database, from [`crate::Store::begin_snapshot`].
#[derive(Debug)]
pub enum Snapshot {
    /// SQLite: `VACUUM INTO` wrote the snapshot file; its contents were read
    /// back from that file.
    Written(SnapshotContents),
    /// PostgreSQL: an open `REPEATABLE READ` transaction exported its
    /// snapshot; dump it with `pg_dump --snapshot=<id>` before
    /// [`ExportedSnapshot::release`].
    Exported(ExportedSnapshot),
}

/// A PostgreSQL snapshot held open for `pg_dump --snapshot`: the exporting
/// transaction must stay open until the dump has started its own
/// transaction on it (PostgreSQL forgets the snapshot when it ends).
#[derive(Debug)]
pub struct ExportedSnapshot {
    tx: Transaction<'static, Postgres>,
    id: String,
    contents: SnapshotContents,
}

impl ExportedSnapshot {
    /// The id for `pg_dump --snapshot`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Read in the exported snapshot, so the same instant as the dump.
    pub fn contents(&self) -> &SnapshotContents {
        &self.contents
    }

    /// End the exporting transaction (read only: nothing to commit).
    pub async fn release(self) -> Result<(), StoreError> {
        self.tx.rollback().await.map_err(StoreError::Snapshot)
    }
}

/// The same text on both backends (no parameters, no timestamps). The
/// `status = 'ready'` rows are the ones whose files the app serves.
const READY_MEDIA: &str =
    "SELECT scene_id, id, video_path, thumbnail_path, video_sha256, video_bytes
     FROM scene_versions WHERE status = 'ready' ORDER BY id";

type ReadyRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

fn media_of(rows: Vec<ReadyRow>) -> Vec<MediaRef> {
    let mut out = Vec::with_capacity(rows.len() * 2);
    for (scene_id, id, video, thumb, sha256, bytes) in rows {
        if let Some(path) = video {
            out.push(MediaRef {
                scene_id: scene_id.clone(),
                scene_version_id: id.clone(),
                kind: MediaKind::Video,
                path,
                sha256,
                bytes,
            });
        }
        if let Some(path) = thumb {
            out.push(MediaRef {
                scene_id,
                scene_version_id: id,
                kind: MediaKind::Thumbnail,
                path,
                sha256: None,
                bytes: None,
            });
        }
    }
    out
}

/// SQLite: write a consistent copy of the database to `dest` (which must
/// not exist) while other connections keep writing. `VACUUM INTO` reads in
/// one read transaction, so WAL writers are never blocked and the copy is
/// one instant of the database.
pub(crate) async fn sqlite_snapshot_to(pool: &SqlitePool, dest: &Path) -> Result<(), StoreError> {
    let dest_text = dest.to_str().ok_or_else(|| {
        StoreError::SnapshotFile(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not UTF-8", dest.display()),
        ))
    })?;
    sqlx::query("VACUUM INTO ?1")
        .bind(dest_text)
        .execute(pool)
        .await
        .map_err(StoreError::Snapshot)?;
    // VACUUM INTO does not sync its output: the manifest that names this
    // file is only written after it is on disk.
    std::fs::File::open(dest)
        .and_then(|f| f.sync_all())
        .map_err(StoreError::SnapshotFile)?;
    Ok(())
}

/// Open a SQLite snapshot file without changing a byte of it (read-only,
/// `immutable`: no journal, no WAL, no locks), so its checksum stays what
/// the manifest says.
async fn open_sqlite_file(path: &Path) -> Result<SqliteConnection, StoreError> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .immutable(true)
        .foreign_keys(false);
    SqliteConnection::connect_with(&opts)
        .await
        .map_err(StoreError::ReadSnapshot)
}

/// What a SQLite snapshot file (a backup's copy of the database) holds: its
/// schema version and every ready scene version's files. Reads only.
pub async fn read_sqlite_snapshot(path: &Path) -> Result<SnapshotContents, StoreError> {
    let mut conn = open_sqlite_file(path).await?;
    let has_schema: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'clawcut_worker_schema'",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(StoreError::ReadSnapshot)?;
    let schema_version = if has_schema == 0 {
        0
    } else {
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM clawcut_worker_schema")
            .fetch_one(&mut conn)
            .await
            .map_err(StoreError::ReadSnapshot)?
    };
    let rows: Vec<ReadyRow> = sqlx::query_as(READY_MEDIA)
        .fetch_all(&mut conn)
        .await
        .map_err(StoreError::ReadSnapshot)?;
    let _ = conn.close().await;
    Ok(SnapshotContents {
        schema_version,
        media: media_of(rows),
    })
}

/// PostgreSQL: open a `REPEATABLE READ READ ONLY` transaction, export its
/// snapshot for `pg_dump --snapshot`, and read the contents in it.
pub(crate) async fn pg_export_snapshot(pool: &PgPool) -> Result<ExportedSnapshot, StoreError> {
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(StoreError::Snapshot)?;
    // The first statement fixes the transaction's snapshot: export it
    // before reading anything, so the reads below and the dump agree.
    let id: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::Snapshot)?;
    let has_schema: bool =
        sqlx::query_scalar("SELECT to_regclass('clawcut_worker_schema') IS NOT NULL")
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::ReadSnapshot)?;
    let schema_version = if has_schema {
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::int8 FROM clawcut_worker_schema")
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::ReadSnapshot)?
    } else {
        0
    };
    let rows: Vec<ReadyRow> = sqlx::query_as(READY_MEDIA)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::ReadSnapshot)?;
    Ok(ExportedSnapshot {
        tx,
        id,
        contents: SnapshotContents {
            schema_version,
            media: media_of(rows),
        },
    })
}

/// The file a `sqlite:` URL names.
pub fn sqlite_file(url: &str) -> Result<PathBuf, StoreError> {
    let opts = SqliteConnectOptions::from_str(url).map_err(StoreError::Connect)?;
    Ok(opts.get_filename().to_owned())
}

/// PostgreSQL: whether `url`'s database can take a restore, without
/// writing anything: `Ok(false)` when it does not exist yet, `Ok(true)`
/// when it exists and is empty, [`StoreError::RestoreTargetNotEmpty`] when
/// it holds any table, view or sequence.
pub async fn pg_check_restore_target(url: &str) -> Result<bool, StoreError> {
    let opts = PgConnectOptions::from_str(url).map_err(StoreError::Connect)?;
    let name = opts.get_database().unwrap_or_default().to_owned();
    let mut conn = match PgConnection::connect_with(&opts).await {
        Ok(c) => c,
        // 3D000 invalid_catalog_name: no such database.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            return Ok(false);
        }
        Err(e) => return Err(StoreError::Connect(e)),
    };
    let objects: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg_toast%'
            AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(StoreError::PrepareRestoreTarget)?;
    let _ = conn.close().await;
    if objects > 0 {
        return Err(StoreError::RestoreTargetNotEmpty {
            database: name,
            objects,
        });
    }
    Ok(true)
}

/// PostgreSQL: `CREATE DATABASE` for `url`'s database, through the same
/// server's `postgres` database, as the URL's user.
pub async fn pg_create_database(url: &str) -> Result<(), StoreError> {
    let opts = PgConnectOptions::from_str(url).map_err(StoreError::Connect)?;
    let name = opts.get_database().unwrap_or_default().to_owned();
    let mut admin = PgConnection::connect_with(&opts.clone().database("postgres"))
        .await
        .map_err(StoreError::Connect)?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    // An identifier cannot be a bind parameter; it is quoted above.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
        .execute(&mut admin)
        .await
        .map_err(StoreError::PrepareRestoreTarget)?;
    let _ = admin.close().await;
    Ok(())
}

/// The path columns a restore rewrites: every place the daemon (or the app)
/// stores where a media file is.
const PATH_COLUMNS: [(&str, &str); 4] = [
    ("scene_versions", "video_path"),
    ("scene_versions", "thumbnail_path"),
    ("ai_jobs", "video_path"),
    ("ai_jobs", "thumbnail_path"),
];

/// One path column's rewrite: values starting with parameter 1 get it
/// replaced by parameter 2. Built only from [`PATH_COLUMNS`], never input.
fn rewrite_sql(table: &str, column: &str, p1: &str, p2: &str) -> String {
    format!(
        "UPDATE {table} SET {column} = {p2} || substr({column}, length({p1}) + 1)
          WHERE substr({column}, 1, length({p1})) = {p1}"
    )
}

pub(crate) async fn sqlite_rewrite_media_paths(
    pool: &SqlitePool,
    from: &str,
    to: &str,
) -> Result<u64, StoreError> {
    let op = StoreError::RewriteMediaPaths;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(op)?;
    let mut n = 0;
    for (table, column) in PATH_COLUMNS {
        let sql = rewrite_sql(table, column, "?1", "?2");
        n += sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await
            .map_err(op)?
            .rows_affected();
    }
    tx.commit().await.map_err(op)?;
    Ok(n)
}

pub(crate) async fn pg_rewrite_media_paths(
    pool: &PgPool,
    from: &str,
    to: &str,
) -> Result<u64, StoreError> {
    let op = StoreError::RewriteMediaPaths;
    let mut tx = pool.begin().await.map_err(op)?;
    let mut n = 0;
    for (table, column) in PATH_COLUMNS {
        let sql = rewrite_sql(table, column, "$1::text", "$2::text");
        n += sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await
            .map_err(op)?
            .rows_affected();
    }
    tx.commit().await.map_err(op)?;
    Ok(n)
}
