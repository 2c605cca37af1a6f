//! Copying and checking file contents with a running sha256, and the
//! content-addressed store `objects/<sha256[..2]>/<sha256>`.
//!
//! Every copy goes to a temp file beside its destination, is checked
//! against the sha256 it must have, fsynced, and only then renamed into
//! place (and the directory fsynced): a crash or a mismatch never leaves a
//! file at a final path whose content is not its name.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::manifest::object_path;
use super::progress::Progress;
use super::sync_dir;

const BUF: usize = 1 << 20;

/// Size and lowercase hex sha256 of everything `r` yields.
pub fn hash_reader(mut r: impl Read, progress: &mut Progress) -> io::Result<(u64, String)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        n += k as u64;
        progress.bytes(k as u64);
    }
    Ok((n, hex::encode(h.finalize())))
}

pub fn hash_file(path: &Path, progress: &mut Progress) -> io::Result<(u64, String)> {
    hash_reader(File::open(path)?, progress)
}

/// Where a file to copy comes from: a local path, or (for `backup` with
/// `media.store`) an object read through the media store. Blocking: the
/// copies run on a blocking thread.
pub trait CopySource {
    /// A reader of the whole content, from the start.
    fn open(&self) -> io::Result<Box<dyn Read + '_>>;
    /// The content's size, without reading it.
    fn len(&self) -> io::Result<u64>;
}

impl CopySource for Path {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(File::open(self)?))
    }

    fn len(&self) -> io::Result<u64> {
        Ok(std::fs::metadata(self)?.len())
    }
}

impl CopySource for PathBuf {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        self.as_path().open()
    }

    fn len(&self) -> io::Result<u64> {
        self.as_path().len()
    }
}

/// Why a copy did not produce its destination.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the source failed (missing, unreadable).
    Source(io::Error),
    /// The source's content is not the one it must be.
    Mismatch { bytes: u64, sha256: String },
    /// Writing the destination failed (disk full, permissions).
    Target(io::Error),
}

impl std::fmt::Display for CopyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyError::Source(e) => write!(f, "read: {e}"),
            CopyError::Mismatch { bytes, sha256 } => {
                write!(f, "content is {bytes} bytes with sha256 {sha256}")
            }
            CopyError::Target(e) => write!(f, "write: {e}"),
        }
    }
}

/// A temp name beside `dest` that no other copy uses.
fn temp_beside(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{:08x}.tmp", rand::random::<u32>()))
}

/// Copy `src` to `dest` (whose parent exists) through a temp file, hashing
/// on the way; rename into place only when the content's sha256 is
/// `expected` (when given). Returns size and sha256. The directory is not
/// fsynced (callers sync each directory once).
pub fn copy_checked<S: CopySource + ?Sized>(
    src: &S,
    dest: &Path,
    expected: Option<&str>,
    progress: &mut Progress,
) -> Result<(u64, String), CopyError> {
    let mut input = src.open().map_err(CopyError::Source)?;
    let tmp = temp_beside(dest);
    let result = (|| {
        let mut out = File::create(&tmp).map_err(CopyError::Target)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; BUF];
        let mut n = 0u64;
        loop {
            let k = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyError::Source(e)),
            };
            h.update(&buf[..k]);
            out.write_all(&buf[..k]).map_err(CopyError::Target)?;
            n += k as u64;
            progress.bytes(k as u64);
        }
        let sha = hex::encode(h.finalize());
        if expected.is_some_and(|e| e != sha) {
            return Err(CopyError::Mismatch {
                bytes: n,
                sha256: sha,
            });
        }
        out.sync_all().map_err(CopyError::Target)?;
        drop(out);
        std::fs::rename(&tmp, dest).map_err(CopyError::Target)?;
        Ok((n, sha))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What [`store`] did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub bytes: u64,
    pub sha256: String,
    /// `false`: `objects/` already held the content.
    pub copied: bool,
}

/// Put `src`'s content into the object store under `root`.
///
/// With `expected` (the sha256 the snapshot recorded), an object of that
/// name whose size is `expected_bytes` is taken as already stored and the
/// source is not read at all: that is what makes a nightly backup cost
/// only its new files. (Its content is checked by `restore --verify`.)
/// Otherwise the source is copied and must hash to `expected`. Without
/// `expected` (thumbnails: the schema records no checksum for them) the
/// source is hashed first, and copied only when the object is absent.
pub fn store<S: CopySource + ?Sized>(
    root: &Path,
    src: &S,
    expected: Option<&str>,
    expected_bytes: Option<u64>,
    progress: &mut Progress,
) -> Result<Stored, CopyError> {
    let sha = match expected {
        Some(sha) => sha.to_owned(),
        None => {
            let input = src.open().map_err(CopyError::Source)?;
            hash_reader(input, progress).map_err(CopyError::Source)?.1
        }
    };
    let Some(dest) = object_path(root, &sha) else {
        return Err(CopyError::Source(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the recorded sha256 {sha:?} is not a sha256"),
        )));
    };
    if let Ok(meta) = std::fs::metadata(&dest) {
        let size_ok = match expected_bytes {
            Some(b) => meta.len() == b,
            None => src.len().is_ok_and(|n| n == meta.len()),
        };
        if meta.is_file() && size_ok {
            return Ok(Stored {
                bytes: meta.len(),
                sha256: sha,
                copied: false,
            });
        }
        // A damaged object (wrong size): replaced by a good copy below.
    }
    let dir = dest.parent().expect("an object path has a parent");
    std::fs::create_dir_all(dir).map_err(CopyError::Target)?;
    let (bytes, sha256) = copy_checked(src, &dest, Some(&sha), progress)?;
    sync_dir(dir).map_err(CopyError::Target)?;
    Ok(Stored {
        bytes,
        sha256,
        copied: true,
    })
}
