//! `clawcut-worker restore --from DIR [--backup ID] --verify` (reads only)
//! and `restore --from DIR [--backup ID] --database URL --media-dir DIR`.
//!
//! A restore never writes over anything: it refuses a database or a media
//! dir that exists and is not empty, or that is the live one of the config
//! (or, for the media dir, inside it or around it); it checks this, then
//! verifies the whole backup, and writes nothing unless both passed. Then,
//! in the order that leaves the least behind on a failure: the media files
//! (each copied through a temp file and checked against its sha256 again;
//! on failure the new media dir is removed), the database (SQLite: the
//! snapshot file copied into place and checked, then opened in WAL mode; PostgreSQL: the database
//! created when missing, and the dump loaded by `pg_restore` in one
//! transaction), and last the media paths in the new database rewritten
//! from the old media dir to the new one.
//!
//! Paths: the database stores absolute paths (`<media.dir>/videos/...`).
//! Every `video_path`/`thumbnail_path` in `scene_versions` and `ai_jobs`
//! that starts with the backup's media dir gets the new media dir instead;
//! relative paths and paths elsewhere are left as they are (they name
//! nothing the backup holds). Point `media.dir` at the new dir to use it.
//! A backup of `media.store` (its paths `s3://bucket/prefix/...`) is
//! restored the same way, into the local `--media-dir`: its paths are
//! rewritten from `s3://bucket/prefix/` to the new dir. (Restoring into a
//! bucket is not done here: copy `videos/` and `thumbnails/` into it, e.g.
//! `aws s3 sync`, and restore the database of the backup as it was.)

use std::path::{Path, PathBuf};

use anyhow::Context;
use clawcut_store::StoreError;

use crate::app;
use crate::archive::manifest::{self, Manifest};
use crate::archive::objects::{self, CopyError};
use crate::archive::progress::{Progress, human};
use crate::archive::verify::{self, Report};
use crate::archive::{lock_shared, pgtools, sync_dir};
use crate::cli::RestoreArgs;
use crate::config::Config;
use crate::exit::{self, ExitCode, Fatal, fatal};

pub async fn restore(
    live: Option<&Config>,
    config_path: &Path,
    args: &RestoreArgs,
) -> Result<(), Fatal> {
    let root = &args.from;
    if !manifest::backups_dir(root).is_dir() {
        return Err(fatal(
            exit::NOINPUT,
            format!(
                "{} holds no backups (no backups/ directory)",
                root.display()
            ),
        ));
    }
    let _lock = lock_shared(root)?;
    let id = match &args.backup {
        Some(id) if manifest::is_valid_id(id) => id.clone(),
        Some(id) => return Err(fatal(exit::USAGE, format!("{id:?} is not a backup id"))),
        None => latest(root)?,
    };
    let bdir = manifest::backups_dir(root).join(&id);
    if !bdir.join(manifest::FILE_NAME).is_file() {
        let why = if bdir.is_dir() {
            "it is incomplete (no manifest: it failed, or is still running)"
        } else {
            "there is no such backup"
        };
        return Err(fatal(
            exit::NOINPUT,
            format!("backup {id} in {}: {why}", root.display()),
        ));
    }
    let m = manifest::read(root, &id)
        .context("read the manifest")
        .exit_with(exit::DATAERR)?;

    if args.verify {
        let report = verify::verify(root, &m).await;
        return conclude(&m, &report, "");
    }
    let (Some(url), Some(media)) = (&args.database, &args.media_dir) else {
        return Err(fatal(
            exit::USAGE,
            "restore needs --verify, or --database URL and --media-dir DIR",
        ));
    };

    // 1. The targets: refused before anything is read or written.
    let target = check_database_target(live, config_path, &m, url).await?;
    check_media_target(live, config_path, media)?;

    // 2. The whole backup.
    let report = verify::verify(root, &m).await;
    conclude(&m, &report, "; nothing was restored")?;

    // 3. Media, database, paths.
    let media_existed = media.exists();
    let restored = tokio::task::spawn_blocking({
        let (root, media, m) = (root.clone(), media.clone(), m.clone());
        move || restore_media(&root, &media, &m)
    })
    .await
    .context("restore the media")
    .exit_with(exit::SOFTWARE)?;
    let clean_media = || {
        if media_existed {
            if let Ok(rd) = std::fs::read_dir(media) {
                for e in rd.flatten() {
                    let _ = std::fs::remove_dir_all(e.path())
                        .or_else(|_| std::fs::remove_file(e.path()));
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(media);
        }
    };
    let (files, bytes) = match restored {
        Ok(n) => n,
        Err(e) => {
            clean_media();
            return Err(e);
        }
    };
    if let Err(e) = restore_database(root, &m, url, &target).await {
        clean_media();
        if let Target::Sqlite(path) = &target {
            for p in sqlite_files(path) {
                let _ = std::fs::remove_file(p);
            }
        }
        return Err(e);
    }
    let new_media = std::fs::canonicalize(media)
        .with_context(|| format!("resolve {}", media.display()))
        .exit_with(exit::CANTCREAT)?;
    let store = clawcut_store::connect(url)
        .await
        .with_context(|| format!("connect to the restored database {}", app::redact_url(url)))
        .exit_with(exit::UNAVAILABLE)?;
    let old = Path::new(&m.source.media_dir);
    // A backup of `media.store` names its clips `s3://bucket/prefix/...`:
    // they are restored into the local media dir, and the paths follow.
    let from_store = m.source.media_dir.starts_with("s3://");
    let rewritten = if old.is_absolute() || from_store {
        let from = if from_store {
            format!("{}/", m.source.media_dir.trim_end_matches('/'))
        } else {
            dir_prefix(old)
        };
        let to = dir_prefix(&new_media);
        let n = store
            .rewrite_media_paths(&from, &to)
            .await
            .context("rewrite the media paths in the restored database")
            .exit_with(exit::CANTCREAT)?;
        format!("{n} media path(s) rewritten from {from} to {to}")
    } else {
        format!(
            "media paths left as they are (the backup's media dir {:?} is relative)",
            m.source.media_dir
        )
    };
    println!(
        "restored backup {} (taken {} from {}):\n  database {} (schema version {})\n  {files} files ({}) into {}\n  {rewritten}",
        m.id,
        m.created_at,
        m.source.database_url,
        app::redact_url(url),
        m.schema_version,
        human(bytes),
        new_media.display(),
    );
    if let Ok(st) = store.schema_status().await
        && st.current < st.latest
    {
        println!(
            "  the schema is at version {}, this binary needs {}: run `clawcut-worker migrate` on it before `run`",
            st.current, st.latest
        );
    }
    Ok(())
}

/// The newest complete backup.
fn latest(root: &Path) -> Result<String, Fatal> {
    let (complete, _) = manifest::list(root)
        .with_context(|| format!("list the backups in {}", root.display()))
        .exit_with(exit::NOINPUT)?;
    complete.last().cloned().ok_or_else(|| {
        fatal(
            exit::NOINPUT,
            format!("{} holds no complete backup", root.display()),
        )
    })
}

/// Print a verification's outcome; `Err` (exit 65) unless it passed.
fn conclude(m: &Manifest, r: &Report, suffix: &str) -> Result<(), Fatal> {
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    for p in &r.problems {
        eprintln!("bad: {p}");
    }
    if let Some(why) = &r.unavailable {
        return Err(fatal(
            exit::UNAVAILABLE,
            format!("backup {} could not be fully verified: {why}{suffix}", m.id),
        ));
    }
    if !r.problems.is_empty() {
        return Err(fatal(
            exit::DATAERR,
            format!(
                "backup {} failed verification: {} problem(s), each named above{suffix}",
                m.id,
                r.problems.len()
            ),
        ));
    }
    println!(
        "backup {} verified: snapshot {} ({}, sha256 {}), {} files ({}) with their checksums, \
         every file of the {} ready scene versions present",
        m.id,
        m.snapshot.file,
        human(m.snapshot.bytes),
        m.snapshot.sha256,
        r.files_ok,
        human(r.bytes_ok),
        r.ready_versions.unwrap_or(0)
    );
    Ok(())
}

/// Where the database goes.
enum Target {
    /// The file, which does not exist (or is empty).
    Sqlite(PathBuf),
    /// Whether the (empty) database exists already.
    Postgres { exists: bool },
}

fn sqlite_files(path: &Path) -> [PathBuf; 3] {
    let s = path.as_os_str().to_owned();
    let with = |suffix: &str| {
        let mut s = s.clone();
        s.push(suffix);
        PathBuf::from(s)
    };
    [path.to_owned(), with("-wal"), with("-shm")]
}

/// `p` made absolute and canonical as far as it exists (a target usually
/// does not exist yet).
fn canonical_target(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => canonical_target(parent).join(name),
        _ => abs,
    }
}

fn dir_prefix(p: &Path) -> String {
    let s = p.to_string_lossy();
    format!("{}/", s.trim_end_matches('/'))
}

/// A PostgreSQL URL as (host, port, database), for "is it the live one".
fn pg_identity(url: &str) -> Option<(String, u16, String)> {
    let u = url::Url::parse(url).ok()?;
    let query_host = u
        .query_pairs()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.into_owned());
    let host = query_host
        .or_else(|| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "localhost".into())
        .to_ascii_lowercase();
    let host = match host.as_str() {
        "127.0.0.1" | "::1" | "[::1]" => "localhost".to_owned(),
        _ => host,
    };
    let db = u.path().trim_start_matches('/').to_owned();
    let db = if db.is_empty() {
        u.username().to_owned()
    } else {
        db
    };
    Some((host, u.port().unwrap_or(5432), db))
}

async fn check_database_target(
    live: Option<&Config>,
    config_path: &Path,
    m: &Manifest,
    url: &str,
) -> Result<Target, Fatal> {
    let is_sqlite = url.starts_with("sqlite:");
    let is_pg = url.starts_with("postgres:") || url.starts_with("postgresql:");
    match (m.snapshot.format.as_str(), is_sqlite, is_pg) {
        ("sqlite", true, _) | ("pg_dump-custom", _, true) => {}
        (format, _, _) => {
            return Err(fatal(
                exit::USAGE,
                format!(
                    "backup {} holds a {} snapshot: restore it into a {} URL, not {}",
                    m.id,
                    m.source.backend,
                    if format == "sqlite" {
                        "sqlite:"
                    } else {
                        "postgres:"
                    },
                    app::redact_url(url)
                ),
            ));
        }
    }
    let live_url = live.map(|c| c.database.url.as_str());
    if is_sqlite {
        let path = clawcut_store::sqlite_file(url)
            .context("read the --database URL")
            .exit_with(exit::USAGE)?;
        let target = canonical_target(&path);
        if let Some(live_url) = live_url.filter(|u| u.starts_with("sqlite:"))
            && let Ok(live_path) = clawcut_store::sqlite_file(live_url)
            && canonical_target(&live_path) == target
        {
            return Err(fatal(
                exit::CANTCREAT,
                format!(
                    "refusing to restore into {}: it is the live database of {}",
                    path.display(),
                    config_path.display()
                ),
            ));
        }
        for p in sqlite_files(&path) {
            if std::fs::metadata(&p).is_ok_and(|md| md.len() > 0 || md.is_dir()) {
                return Err(fatal(
                    exit::CANTCREAT,
                    format!(
                        "refusing to restore into {}: {} exists and is not empty; a restore only creates a new database",
                        path.display(),
                        p.display()
                    ),
                ));
            }
        }
        return Ok(Target::Sqlite(path));
    }
    if let Some(live_url) = live_url
        && pg_identity(live_url).is_some()
        && pg_identity(live_url) == pg_identity(url)
    {
        return Err(fatal(
            exit::CANTCREAT,
            format!(
                "refusing to restore into {}: it is the live database of {}",
                app::redact_url(url),
                config_path.display()
            ),
        ));
    }
    match clawcut_store::pg_check_restore_target(url).await {
        Ok(exists) => Ok(Target::Postgres { exists }),
        Err(e @ StoreError::RestoreTargetNotEmpty { .. }) => Err(fatal(
            exit::CANTCREAT,
            format!("refusing to restore into {}: {e}", app::redact_url(url)),
        )),
        Err(e) => Err(e)
            .with_context(|| format!("check the target database {}", app::redact_url(url)))
            .exit_with(exit::UNAVAILABLE),
    }
}

fn check_media_target(
    live: Option<&Config>,
    config_path: &Path,
    media: &Path,
) -> Result<(), Fatal> {
    let target = canonical_target(media);
    if let Some(cfg) = live {
        let live_dir = canonical_target(&cfg.media.dir);
        if target.starts_with(&live_dir) || live_dir.starts_with(&target) {
            let how = if target == live_dir {
                "it is"
            } else if target.starts_with(&live_dir) {
                "it is inside"
            } else {
                "it holds"
            };
            return Err(fatal(
                exit::CANTCREAT,
                format!(
                    "refusing to restore into {}: {how} the live media dir {} of {}",
                    media.display(),
                    live_dir.display(),
                    config_path.display()
                ),
            ));
        }
    }
    match std::fs::read_dir(media) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(fatal(
                    exit::CANTCREAT,
                    format!(
                        "refusing to restore into {}: it exists and is not empty",
                        media.display()
                    ),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e)
            .with_context(|| format!("{} exists but cannot be listed", media.display()))
            .exit_with(exit::CANTCREAT),
    }
}

/// Every file of the manifest into `media`, at its relative path.
fn restore_media(root: &Path, media: &Path, m: &Manifest) -> Result<(u64, u64), Fatal> {
    std::fs::create_dir_all(media)
        .with_context(|| format!("create {}", media.display()))
        .exit_with(exit::CANTCREAT)?;
    let total = m.files.iter().map(|f| f.bytes).sum();
    let mut progress = Progress::new("restore", m.files.len() as u64, Some(total));
    let mut dirs = std::collections::BTreeSet::new();
    let (mut files, mut bytes) = (0, 0);
    for f in &m.files {
        // Both checked by the verification that passed.
        let (Some(rel), Some(obj)) = (
            manifest::clean_relative(&f.path),
            manifest::object_path(root, &f.sha256),
        ) else {
            return Err(fatal(exit::DATAERR, format!("{}: not restorable", f.path)));
        };
        let dest = media.join(rel);
        let dir = dest.parent().unwrap_or(media).to_owned();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("create {}", dir.display()))
            .exit_with(exit::CANTCREAT)?;
        match objects::copy_checked(&obj, &dest, Some(&f.sha256), &mut progress) {
            Ok((n, _)) => {
                files += 1;
                bytes += n;
            }
            Err(CopyError::Target(e)) => {
                return Err(e)
                    .with_context(|| format!("write {}", dest.display()))
                    .exit_with(exit::CANTCREAT);
            }
            // Changed since it was verified: the backup is being damaged.
            Err(e) => {
                return Err(fatal(
                    exit::DATAERR,
                    format!(
                        "{} (object {}): {e}; the restore was undone",
                        f.path,
                        obj.display()
                    ),
                ));
            }
        }
        dirs.insert(dir);
        progress.file_done();
    }
    progress.finish();
    for d in dirs.iter().chain(std::iter::once(&media.to_owned())) {
        sync_dir(d)
            .with_context(|| format!("sync {}", d.display()))
            .exit_with(exit::CANTCREAT)?;
    }
    Ok((files, bytes))
}

async fn restore_database(
    root: &Path,
    m: &Manifest,
    url: &str,
    target: &Target,
) -> Result<(), Fatal> {
    let snap = manifest::backups_dir(root)
        .join(&m.id)
        .join(&m.snapshot.file);
    match target {
        Target::Sqlite(path) => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_owned();
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("create {}", dir.display()))
                .exit_with(exit::CANTCREAT)?;
            let mut p = Progress::new("restore database", 1, Some(m.snapshot.bytes));
            let copied = objects::copy_checked(&snap, path, Some(&m.snapshot.sha256), &mut p);
            p.file_done();
            p.finish();
            match copied {
                Ok(_) => {}
                Err(CopyError::Target(e)) => {
                    return Err(e)
                        .with_context(|| format!("write {}", path.display()))
                        .exit_with(exit::CANTCREAT);
                }
                Err(e) => {
                    return Err(fatal(
                        exit::DATAERR,
                        format!("snapshot {}: {e}", snap.display()),
                    ));
                }
            }
            // The copy is in rollback-journal mode (VACUUM INTO writes it
            // so); the store's connect below switches it to WAL, as the
            // daemon runs it.
            sync_dir(&dir)
                .with_context(|| format!("sync {}", dir.display()))
                .exit_with(exit::CANTCREAT)?;
        }
        Target::Postgres { exists } => {
            if !exists {
                clawcut_store::pg_create_database(url)
                    .await
                    .with_context(|| format!("create the database {}", app::redact_url(url)))
                    .exit_with(exit::CANTCREAT)?;
            }
            pgtools::restore(url, &snap)
                .await
                .with_context(|| {
                    format!(
                        "load the snapshot into {} (in one transaction: it is left empty)",
                        app::redact_url(url)
                    )
                })
                .exit_with(exit::CANTCREAT)?;
        }
    }
    Ok(())
}
