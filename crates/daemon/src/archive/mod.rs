//! The backup directory that `backup` writes and `restore` reads:
//!
//! ```text
//! DIR/lock                               flock: one writer (backup, prune) or many readers
//! DIR/objects/<sha256[..2]>/<sha256>     media content, stored once whatever
//!                                        how many backups hold it
//! DIR/backups/<ID>/database.sqlite       the snapshot (SQLite: VACUUM INTO)
//! DIR/backups/<ID>/database.pgdump       ... or (PostgreSQL: pg_dump -Fc)
//! DIR/backups/<ID>/manifest.json         written last, atomically: a backup
//!                                        without one is incomplete
//! ```
//!
//! - `manifest`: the JSON format, its atomic write, listing backups, media
//!   paths relative to the media dir;
//! - `objects`: copying with a running sha256, content-addressed storage;
//! - `pgtools`: finding and running `pg_dump`/`pg_restore`, and reading a
//!   dump's `scene_versions` rows without a server;
//! - `verify`: every check `restore --verify` makes;
//! - `progress`: a bar on a terminal, plain lines otherwise.

pub mod manifest;
pub mod objects;
pub mod pgtools;
pub mod progress;
pub mod verify;

use std::fs::File;
use std::path::Path;

use anyhow::Context;

use crate::exit::{self, ExitCode, Fatal};

/// Held for as long as a command works on a backup directory.
pub struct DirLock {
    _file: Option<File>,
}

/// Exclusive: `backup` (which may prune) is the only writer of `root`,
/// and never prunes under a restore reading it. A second one exits at once
/// (75) rather than wait behind a long copy: the next night's run, or a
/// retry, takes the backup.
pub fn lock_exclusive(root: &Path) -> Result<DirLock, Fatal> {
    let path = root.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))
        .exit_with(exit::CANTCREAT)?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: Some(file) }),
        Err(std::fs::TryLockError::WouldBlock) => Err(exit::fatal(
            exit::TEMPFAIL,
            format!(
                "another backup, or a restore, is using {} (it holds {}); try again when it is done",
                root.display(),
                path.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(e)
            .with_context(|| format!("lock {}", path.display()))
            .exit_with(exit::CANTCREAT),
    }
}

/// Shared: readers wait for a running backup (a prune may be removing
/// objects). Creates nothing: without a lock file there is no writer.
pub fn lock_shared(root: &Path) -> Result<DirLock, Fatal> {
    let path = root.join("lock");
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(DirLock { _file: None });
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("open {}", path.display()))
                .exit_with(exit::NOINPUT);
        }
    };
    if let Err(std::fs::TryLockError::WouldBlock) = file.try_lock_shared() {
        eprintln!("waiting for the backup running in {}", root.display());
        file.lock_shared()
            .with_context(|| format!("lock {}", path.display()))
            .exit_with(exit::SOFTWARE)?;
    }
    Ok(DirLock { _file: Some(file) })
}

/// fsync a directory, so a rename or a new entry in it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
