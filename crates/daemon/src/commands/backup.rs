//! `clawcut-worker backup --to DIR [--prune --keep N]`: a consistent
//! snapshot of the database and every media file a ready scene version
//! points at, while the daemon runs.
//!
//! How the media set is made consistent with the snapshot: the snapshot
//! comes first, and the list of files comes *from the snapshot itself*
//! (SQLite: read back from the `VACUUM INTO` copy; PostgreSQL: read in the
//! transaction whose exported snapshot `pg_dump --snapshot` dumps). Each
//! file is then copied from the live media dir and must hash to the
//! `video_sha256` that the snapshot records, or it is not stored. A version
//! that became ready after the snapshot is in neither; one that was ready
//! in it is in both, because the daemon renames a file into place before
//! the transaction that marks its version ready commits and never changes
//! it afterwards. Only the app deleting or replacing a file between the
//! snapshot and its copy can break that, and then the file is recorded as
//! missing (exit 65) unless `objects/` already held its content.
//!
//! With `media.store`, the clips are read from the bucket instead (each
//! object streamed through the same checked copy, never whole in memory),
//! and the manifest's `media_dir` is the store's `s3://bucket/prefix`: the
//! same consistency holds, because an object reaches its key before the
//! transaction that marks its version ready commits, as a file does.
//!
//! Steps: lock DIR; `backups/<ID>/` with the snapshot; each file into
//! `objects/` (copied only when absent); the manifest, atomically; then the
//! prune. A failure before the manifest removes `backups/<ID>/`.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clawcut_store::{Backend, MediaRef, Snapshot, SnapshotContents};

use crate::app;
use crate::archive::manifest::{
    self, FileEntry, Kind, Manifest, MissingEntry, SnapshotEntry, Source, Stats,
};
use crate::archive::objects::{self, CopyError, CopySource};
use crate::archive::progress::{Progress, human};
use crate::archive::{lock_exclusive, pgtools, sync_dir};
use crate::cli::BackupArgs;
use crate::config::Config;
use crate::exit::{self, ExitCode, Fatal, fatal};
use crate::media::{MediaError, Storage};

/// Removes an unfinished backup's directory unless the manifest was written.
struct Unfinished(Option<PathBuf>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub async fn backup(cfg: &Config, args: &BackupArgs) -> Result<(), Fatal> {
    // Clips are read from where the daemon keeps them: `media.dir`, or
    // the bucket of `media.store` (streamed, one chunk at a time).
    let storage = Storage::from_config(&cfg.media)
        .context("set up media.store")
        .exit_with(exit::CONFIG)?;
    let root = &args.to;
    for d in [manifest::objects_dir(root), manifest::backups_dir(root)] {
        std::fs::create_dir_all(&d)
            .with_context(|| format!("create {}", d.display()))
            .exit_with(exit::CANTCREAT)?;
    }
    let _lock = lock_exclusive(root)?;
    // No schema check: a backup must work on any schema, above all right
    // before a `migrate`. The snapshot records its version.
    let store = app::connect_store(cfg).await?;
    let started = std::time::SystemTime::now();
    let id = manifest::new_id(started);
    let bdir = manifest::backups_dir(root).join(&id);
    std::fs::create_dir(&bdir)
        .with_context(|| format!("create {}", bdir.display()))
        .exit_with(exit::CANTCREAT)?;
    let mut unfinished = Unfinished(Some(bdir.clone()));

    // 1. The snapshot, and what it says about media.
    let (snapshot_file, format, backend) = match store.backend() {
        Backend::Sqlite => ("database.sqlite", "sqlite", "sqlite"),
        Backend::Postgres => ("database.pgdump", "pg_dump-custom", "postgres"),
    };
    let snap_path = bdir.join(snapshot_file);
    let contents: SnapshotContents = match store
        .begin_snapshot(&snap_path)
        .await
        .context("take the snapshot")
        .exit_with(exit::UNAVAILABLE)?
    {
        Snapshot::Written(c) => c,
        Snapshot::Exported(snap) => {
            let dumped = pgtools::dump(&cfg.database.url, snap.id(), &snap_path).await;
            let contents = snap.contents().clone();
            // The dump has its own transaction on the snapshot by now (or
            // failed); the exporting one is no longer needed.
            let _ = snap.release().await;
            dumped
                .with_context(|| format!("dump the database into {}", snap_path.display()))
                .exit_with(exit::UNAVAILABLE)?;
            contents
        }
    };
    let size = std::fs::metadata(&snap_path).map_or(0, |m| m.len());
    let mut p = Progress::new("snapshot checksum", 1, Some(size));
    let (snap_bytes, snap_sha) = objects::hash_file(&snap_path, &mut p)
        .with_context(|| format!("read {}", snap_path.display()))
        .exit_with(exit::CANTCREAT)?;
    p.file_done();
    p.finish();

    // 2. The media, into objects/.
    let media_dir = match &storage {
        Storage::Local(dir) => dir.clone(),
        Storage::Object(o) => PathBuf::from(o.describe()),
    };
    let (files, missing, stats) = tokio::task::spawn_blocking({
        let root = root.clone();
        let media_dir = media_dir.clone();
        let media = contents.media.clone();
        let storage = storage.clone();
        let rt = tokio::runtime::Handle::current();
        move || copy_media(&root, &media_dir, &storage, &rt, &media)
    })
    .await
    .context("copy the media")
    .exit_with(exit::SOFTWARE)??;

    // 3. The manifest: from here on the backup exists.
    let m = Manifest {
        format: manifest::FORMAT.into(),
        version: manifest::VERSION,
        id: id.clone(),
        created_at: humantime::format_rfc3339_millis(started).to_string(),
        created_at_ms: started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        tool: format!("clawcut-worker {}", env!("CARGO_PKG_VERSION")),
        source: Source {
            backend: backend.into(),
            database_url: app::redact_url(&cfg.database.url),
            media_dir: media_dir.to_string_lossy().into_owned(),
            host: hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
        },
        schema_version: contents.schema_version,
        snapshot: SnapshotEntry {
            file: snapshot_file.into(),
            format: format.into(),
            bytes: snap_bytes,
            sha256: snap_sha,
        },
        files,
        missing,
        stats,
    };
    manifest::write_atomic(&bdir, &m)
        .context("write the manifest")
        .exit_with(exit::CANTCREAT)?;
    unfinished.0 = None;
    let _ = sync_dir(&manifest::backups_dir(root));

    let versions: BTreeSet<&str> = m
        .files
        .iter()
        .map(|f| f.scene_version_id.as_str())
        .collect();
    println!(
        "backup {id}: snapshot {} ({}, schema version {}), {} files of {} ready scene versions: \
         {} copied ({}), {} already held ({})",
        snapshot_file,
        human(m.snapshot.bytes),
        m.schema_version,
        m.files.len(),
        versions.len(),
        m.stats.copied,
        human(m.stats.copied_bytes),
        m.stats.reused,
        human(m.stats.reused_bytes),
    );
    println!("  in {}", bdir.display());
    for miss in &m.missing {
        let level = if miss.required { "missing" } else { "warning" };
        eprintln!(
            "{level}: {} ({} of scene version {}): {}",
            miss.path,
            miss.kind.as_str(),
            miss.scene_version_id,
            miss.reason
        );
    }
    let required = m.required_missing().count();
    if required > 0 {
        return Err(fatal(
            exit::DATAERR,
            format!(
                "backup {id} is incomplete: {required} video file(s) of ready scene versions could not be backed up (listed above); not pruning"
            ),
        ));
    }
    if args.prune {
        prune(root, &id, args.keep.unwrap_or(1) as usize)?;
    }
    Ok(())
}

/// Copy every file the snapshot names into `objects/`: the manifest's
/// entries, what could not be stored, and the counts.
fn copy_media(
    root: &Path,
    media_dir: &Path,
    storage: &Storage,
    rt: &tokio::runtime::Handle,
    media: &[MediaRef],
) -> Result<(Vec<FileEntry>, Vec<MissingEntry>, Stats), Fatal> {
    let mut progress = Progress::new("backup", media.len() as u64, None);
    let mut files = Vec::new();
    let mut missing = Vec::new();
    let mut stats = Stats::default();
    let mut seen = HashSet::new();
    for m in media {
        let kind = Kind::from(m.kind);
        let miss = |reason: String| MissingEntry {
            path: m.path.clone(),
            kind,
            scene_id: m.scene_id.clone(),
            scene_version_id: m.scene_version_id.clone(),
            required: kind == Kind::Video,
            reason,
        };
        let rel = match manifest::relative_media_path(&m.path, media_dir) {
            Ok(rel) => rel,
            Err(why) => {
                missing.push(miss(why));
                progress.file_done();
                continue;
            }
        };
        let rel_text = rel.to_string_lossy().into_owned();
        if !seen.insert(rel_text.clone()) {
            // Two versions naming one file: stored (and restored) once.
            progress.file_done();
            continue;
        }
        let expected = m.sha256.as_deref().map(str::to_ascii_lowercase);
        let bytes = m.bytes.and_then(|b| u64::try_from(b).ok());
        let (local, object);
        let (src, shown): (&dyn CopySource, String) = match storage {
            Storage::Local(_) => {
                local = media_dir.join(&rel);
                (&local, local.display().to_string())
            }
            Storage::Object(_) => {
                object = StoreSource {
                    storage,
                    location: &m.path,
                    rt,
                };
                (&object, m.path.clone())
            }
        };
        match objects::store(root, src, expected.as_deref(), bytes, &mut progress) {
            Ok(s) => {
                if s.copied {
                    stats.copied += 1;
                    stats.copied_bytes += s.bytes;
                } else {
                    stats.reused += 1;
                    stats.reused_bytes += s.bytes;
                }
                files.push(FileEntry {
                    path: rel_text,
                    kind,
                    scene_id: m.scene_id.clone(),
                    scene_version_id: m.scene_version_id.clone(),
                    bytes: s.bytes,
                    sha256: s.sha256,
                });
            }
            Err(CopyError::Target(e)) => {
                return Err(e)
                    .with_context(|| format!("store {shown} in {}", root.display()))
                    .exit_with(exit::CANTCREAT);
            }
            Err(CopyError::Source(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(miss(format!("{shown} is not in the media dir")));
            }
            Err(e @ CopyError::Source(_)) => {
                missing.push(miss(format!("{shown}: {e}")));
            }
            Err(CopyError::Mismatch { bytes, sha256 }) => missing.push(miss(format!(
                "{shown} changed since the snapshot, or is damaged: {bytes} bytes with sha256 {sha256}, the snapshot records {}",
                expected.as_deref().unwrap_or("-")
            ))),
        }
        progress.file_done();
    }
    progress.finish();
    Ok((files, missing, stats))
}

/// An object of `media.store`, read for a copy on a blocking thread: the
/// async reader bridged to `Read`, one chunk at a time.
struct StoreSource<'a> {
    storage: &'a Storage,
    location: &'a str,
    rt: &'a tokio::runtime::Handle,
}

/// A media store error as the copy's `io::Error`: a missing object stays
/// `NotFound`, so it is reported as missing, not as a failed read.
fn media_io(e: MediaError) -> std::io::Error {
    let missing = matches!(
        &e,
        MediaError::Store {
            source: object_store::Error::NotFound { .. },
            ..
        }
    );
    let text = crate::report::error_chain(&e);
    if missing {
        std::io::Error::new(std::io::ErrorKind::NotFound, text)
    } else {
        std::io::Error::other(text)
    }
}

impl CopySource for StoreSource<'_> {
    fn open(&self) -> std::io::Result<Box<dyn std::io::Read + '_>> {
        let opened = self
            .rt
            .block_on(self.storage.open(self.location))
            .map_err(media_io)?;
        Ok(Box::new(tokio_util::io::SyncIoBridge::new_with_handle(
            opened.reader,
            self.rt.clone(),
        )))
    }

    fn len(&self) -> std::io::Result<u64> {
        self.rt
            .block_on(self.storage.size(self.location))
            .map_err(media_io)
    }
}

/// Keep the newest `keep` complete backups (always `this` one, just
/// written); remove the older ones, every
/// incomplete backup directory (the lock says none is running), and every
/// object no kept manifest lists. A kept manifest that cannot be read stops
/// the removal of objects: what it needs is unknown.
fn prune(root: &Path, this: &str, keep: usize) -> Result<(), Fatal> {
    let (mut complete, incomplete) = manifest::list(root)
        .with_context(|| format!("list the backups in {}", root.display()))
        .exit_with(exit::CANTCREAT)?;
    // Newest last; this backup is the newest whatever a clock said.
    complete.retain(|id| id != this);
    complete.push(this.to_owned());
    let cut = complete.len().saturating_sub(keep);
    let (old, kept) = complete.split_at(cut);
    let mut needed = HashSet::new();
    for id in kept {
        let m = manifest::read(root, id)
            .with_context(|| {
                format!("read backup {id}, which --keep {keep} keeps; no object was removed")
            })
            .exit_with(exit::DATAERR)?;
        needed.extend(m.files.into_iter().map(|f| f.sha256));
    }
    for id in old.iter().chain(&incomplete) {
        let d = manifest::backups_dir(root).join(id);
        std::fs::remove_dir_all(&d)
            .with_context(|| format!("remove {}", d.display()))
            .exit_with(exit::CANTCREAT)?;
    }
    let (mut removed, mut freed) = (0u64, 0u64);
    let objects = manifest::objects_dir(root);
    for prefix in std::fs::read_dir(&objects)
        .with_context(|| format!("list {}", objects.display()))
        .exit_with(exit::CANTCREAT)?
        .flatten()
    {
        let Ok(entries) = std::fs::read_dir(prefix.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Temp files of a killed copy go too: the lock says no copy runs.
            if needed.contains(&name) {
                continue;
            }
            freed += e.metadata().map_or(0, |m| m.len());
            std::fs::remove_file(e.path())
                .with_context(|| format!("remove {}", e.path().display()))
                .exit_with(exit::CANTCREAT)?;
            removed += 1;
        }
        let _ = std::fs::remove_dir(prefix.path()); // only when empty
    }
    println!(
        "pruned: kept {} backup(s), removed {} old and {} incomplete, {removed} unreferenced object(s) ({})",
        kept.len(),
        old.len(),
        incomplete.len(),
        human(freed)
    );
    Ok(())
}
