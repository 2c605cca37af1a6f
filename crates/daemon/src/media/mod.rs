//! Where clips are kept: the one interface `worker/outputs.rs` (and, for
//! previews and checksums, the operator panel) uses, whatever the store.
//!
//! - [`Storage::Local`]: `media.dir`, as the SPEC describes it (temp file,
//!   fsync, rename); the default, unchanged.
//! - [`Storage::Object`]: `media.store = "s3://bucket/prefix"` ([`object`]):
//!   a multipart upload at the final key, completed inside the fenced
//!   completion. Replicas on many hosts share one library of clips.
//!
//! Locations recorded in `video_path`/`thumbnail_path`: an absolute path
//! (`<media.dir>/videos/<scene>/<version>.mp4`) on disk, an
//! `s3://bucket/prefix/videos/<scene>/<version>.mp4` URL in a bucket (the
//! app reads it with its own S3 client, or presigns it for a browser).
//!
//! For readers of those locations: [`Storage::open`] (`backup`), a stream
//! of the bytes; [`Storage::find`] (the operator panel), a clip checked to
//! lie inside the store, then read whole or by byte range
//! ([`Found::read`]) or hashed ([`Found::digest`]), on either store; memory
//! stays one chunk at a time.

pub mod object;

#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};
use tracing::{info, warn};

pub use object::ObjectMedia;

use crate::config::MediaConfig;

/// What can go wrong building or reading a media store.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("media.store: {0}")]
    BadStoreUrl(String),
    #[error("build the object store client")]
    Build(#[source] object_store::Error),
    #[error("{what}")]
    Store {
        what: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{0} is not in this media store")]
    NotInStore(String),
    #[error("{0} is outside the media store; not served")]
    Outside(String),
    #[error("read {path}")]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The configured media store.
#[derive(Debug, Clone)]
pub enum Storage {
    Local(PathBuf),
    Object(Arc<ObjectMedia>),
}

/// A reader of a clip's bytes.
pub type Reader = Pin<Box<dyn AsyncRead + Send>>;

/// An opened clip: its bytes.
pub struct Opened {
    pub reader: Reader,
}

/// A clip at a recorded location, checked to lie inside the store and
/// sized, not read yet ([`Storage::find`]).
#[derive(Debug)]
pub struct Found {
    /// Its size in bytes.
    pub size: u64,
    /// Where it is, for a person: the resolved path or the `s3://` URL.
    pub shown: String,
    at: FoundAt,
}

#[derive(Debug)]
enum FoundAt {
    /// Open already, so what is read is the file that was sized, even if
    /// a redo renames another one over its path meanwhile.
    File(tokio::fs::File),
    /// The `HEAD`'s ETag: a read fails rather than mix two versions.
    Object {
        media: Arc<ObjectMedia>,
        key: object_store::path::Path,
        etag: Option<String>,
    },
}

impl MediaError {
    /// Whether the clip is simply not there (or not ours to serve), as
    /// opposed to a store that does not answer.
    pub fn is_not_found(&self) -> bool {
        match self {
            MediaError::NotInStore(_) | MediaError::Outside(_) => true,
            MediaError::Local { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            MediaError::Store { source, .. } => {
                matches!(source, object_store::Error::NotFound { .. })
            }
            MediaError::BadStoreUrl(_) | MediaError::Build(_) => false,
        }
    }
}

impl Found {
    /// Bytes `start..=end` (all of them for `None`), streamed. `range`
    /// must lie inside [`size`](Self::size) (the panel's `byte_range`
    /// checks it).
    pub async fn read(self, range: Option<(u64, u64)>) -> Result<Reader, MediaError> {
        match self.at {
            FoundAt::File(mut file) => {
                let local = |source| MediaError::Local {
                    path: PathBuf::from(&self.shown),
                    source,
                };
                let Some((start, end)) = range else {
                    return Ok(Box::pin(file));
                };
                file.seek(std::io::SeekFrom::Start(start))
                    .await
                    .map_err(local)?;
                Ok(Box::pin(file.take(end - start + 1)))
            }
            FoundAt::Object { media, key, etag } => {
                let stream = media.read(&key, range.map(|(a, b)| a..b + 1), etag).await?;
                Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
            }
        }
    }

    /// The sha256 (hex) and length of the bytes, read through once.
    pub async fn digest(self) -> Result<(String, u64), MediaError> {
        let shown = self.shown.clone();
        let mut reader = self.read(None).await?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|source| MediaError::Local {
                    path: PathBuf::from(&shown),
                    source,
                })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n as u64;
        }
        Ok((hex::encode(hasher.finalize()), total))
    }
}

impl Storage {
    /// `media.store` when set, else `media.dir`.
    pub fn from_config(m: &MediaConfig) -> Result<Storage, MediaError> {
        match &m.store {
            Some(url) => Ok(Storage::Object(Arc::new(ObjectMedia::new(
                url,
                m.part_size.0,
                m.part_checksums,
            )?))),
            None => Ok(Storage::Local(m.dir.clone())),
        }
    }

    /// For the log: the directory or the `s3://` URL.
    pub fn describe(&self) -> String {
        match self {
            Storage::Local(dir) => dir.display().to_string(),
            Storage::Object(o) => o.describe(),
        }
    }

    /// The location a version's output is recorded at:
    /// `<videos|thumbnails>/<scene>/<version>.<ext>` under the directory or
    /// the prefix.
    pub fn location(&self, sub: &str, scene: &str, version: &str, ext: &str) -> String {
        let rel = relative(sub, scene, version, ext);
        match self {
            Storage::Local(dir) => dir.join(rel).to_string_lossy().into_owned(),
            Storage::Object(o) => o.url_of(&o.final_key(&rel)),
        }
    }

    /// Remove what dead processes left: temp files idle for `max_idle`
    /// under `<dir>/.tmp`, or multipart uploads whose markers sat idle as
    /// long. Logs what it did; never fails (the next sweep tries again).
    pub async fn sweep(&self, max_idle: Duration) {
        match self {
            Storage::Local(dir) => {
                let dir = dir.clone();
                let res = tokio::task::spawn_blocking(move || {
                    clawcut_providers::cleanup_stale_temp_older_than(&dir, max_idle)
                })
                .await;
                match res {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => info!(removed = n, "removed stale temporary download files"),
                    Ok(Err(e)) => warn!(error = %e, "could not clean stale temporary files"),
                    Err(e) => warn!(error = %e, "temp sweep task failed"),
                }
            }
            Storage::Object(o) => {
                if let Err(e) = o.sweep(max_idle).await {
                    warn!(store = %o.describe(), error = %crate::report::error_chain(&e), "could not sweep abandoned uploads; the next sweep tries again");
                }
            }
        }
    }

    /// The clip at `location` (as recorded in `video_path`): a reader of
    /// its bytes, streamed (`backup`, which checks them against the
    /// snapshot's sha256 itself). No check that it lies inside the store:
    /// [`find`](Self::find) is the one for locations shown to a person.
    pub async fn open(&self, location: &str) -> Result<Opened, MediaError> {
        match self {
            Storage::Local(_) => {
                let file =
                    tokio::fs::File::open(location)
                        .await
                        .map_err(|source| MediaError::Local {
                            path: PathBuf::from(location),
                            source,
                        })?;
                Ok(Opened {
                    reader: Box::pin(file),
                })
            }
            Storage::Object(o) => {
                let stream = o.open(location).await?;
                Ok(Opened {
                    reader: Box::pin(tokio_util::io::StreamReader::new(stream)),
                })
            }
        }
    }

    /// The size of the clip at `location`, without reading it.
    pub async fn size(&self, location: &str) -> Result<u64, MediaError> {
        match self {
            Storage::Local(_) => tokio::fs::metadata(location)
                .await
                .map(|m| m.len())
                .map_err(|source| MediaError::Local {
                    path: PathBuf::from(location),
                    source,
                }),
            Storage::Object(o) => o.size(location).await,
        }
    }

    /// The clip at `location` (a recorded `video_path`/`thumbnail_path`)
    /// when it lies inside this store, sized: on disk, a file inside the
    /// media directory once both are resolved (symlinks included); in a
    /// bucket, a key this daemon writes clips at (this bucket, under the
    /// prefix's `videos/` or `thumbnails/`). Anything else is
    /// [`MediaError::Outside`]: a row the app got wrong cannot turn the
    /// operator panel into a reader of the host's files or the bucket.
    pub async fn find(&self, location: &str) -> Result<Found, MediaError> {
        match self {
            Storage::Local(dir) => {
                let local = |path: &std::path::Path| {
                    let path = path.to_owned();
                    move |source| MediaError::Local { path, source }
                };
                let dir = tokio::fs::canonicalize(dir).await.map_err(local(dir))?;
                let given = std::path::Path::new(location);
                let real = tokio::fs::canonicalize(given).await.map_err(local(given))?;
                if !real.starts_with(&dir) {
                    return Err(MediaError::Outside(location.to_owned()));
                }
                let file = tokio::fs::File::open(&real).await.map_err(local(&real))?;
                let meta = file.metadata().await.map_err(local(&real))?;
                if !meta.is_file() {
                    return Err(MediaError::Outside(location.to_owned()));
                }
                Ok(Found {
                    size: meta.len(),
                    shown: real.display().to_string(),
                    at: FoundAt::File(file),
                })
            }
            Storage::Object(o) => {
                let key = o
                    .clip_key(location)
                    .ok_or_else(|| MediaError::Outside(location.to_owned()))?;
                let (size, etag) = o.head(&key).await?;
                Ok(Found {
                    size,
                    shown: o.url_of(&key),
                    at: FoundAt::Object {
                        media: o.clone(),
                        key,
                        etag,
                    },
                })
            }
        }
    }
}

/// How long past the stall limit a temp file must sit untouched before the
/// sweep takes it for a dead process's. A live download writes whenever
/// bytes arrive and is abandoned when a whole `media.stall_timeout` window
/// brings too few; a staged video is touched while its thumbnail downloads
/// and waits only for its commit after that. An upload's marker in an
/// object store is rewritten every third of this while it lives. Sweeping
/// a live-but-idle file (or aborting such an upload) is safe anyway: its
/// publish fails and the job retries without spending an attempt.
const TEMP_SLACK: Duration = Duration::from_secs(10);

/// Temp files idle this long belong to a dead process.
pub fn temp_max_idle(stall_window: Duration) -> Duration {
    stall_window.saturating_add(TEMP_SLACK)
}

/// How often a live temp file or upload marker that sees no writes is
/// refreshed: three times per [`temp_max_idle`], so no sweep takes it.
pub fn temp_keep_every(stall_window: Duration) -> Duration {
    temp_max_idle(stall_window) / 3
}

/// `<videos|thumbnails>/<scene>/<version>.<ext>`, the extension cleaned: a
/// short alphanumeric one from the provider, lowercased, else `mp4`/`jpg`.
pub fn relative(sub: &str, scene: &str, version: &str, ext: &str) -> String {
    let ext = if !ext.is_empty() && ext.len() <= 8 && ext.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        ext.to_ascii_lowercase()
    } else if sub == "videos" {
        "mp4".into()
    } else {
        "jpg".into()
    };
    format!("{sub}/{scene}/{version}.{ext}")
}

/// `<media>/<videos|thumbnails>/<scene_id>/<scene_version_id>.<ext>`.
#[cfg(test)]
pub fn final_path(media: &Path, sub: &str, scene: &str, version: &str, ext: &str) -> PathBuf {
    media.join(relative(sub, scene, version, ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_clip_opens_reads_by_range_and_digests() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::Local(dir.path().to_owned());
        let loc = storage.location("videos", "s1", "v1", "MP4");
        assert_eq!(loc, dir.path().join("videos/s1/v1.mp4").to_string_lossy());
        std::fs::create_dir_all(dir.path().join("videos/s1")).unwrap();
        std::fs::write(&loc, b"clip").unwrap();
        let mut got = Vec::new();
        let mut opened = storage.open(&loc).await.unwrap();
        opened.reader.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"clip");
        assert_eq!(storage.size(&loc).await.unwrap(), 4);

        let found = storage.find(&loc).await.unwrap();
        assert_eq!(found.size, 4);
        let mut part = Vec::new();
        let mut r = found.read(Some((1, 2))).await.unwrap();
        r.read_to_end(&mut part).await.unwrap();
        assert_eq!(part, b"li");
        let sha = hex::encode(Sha256::digest(b"clip"));
        let found = storage.find(&loc).await.unwrap();
        assert_eq!(found.digest().await.unwrap(), (sha, 4));
        let gone = storage.location("videos", "s1", "v2", "mp4");
        assert!(storage.find(&gone).await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn only_files_inside_the_media_directory_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let media = dir.path().join("media");
        std::fs::create_dir_all(media.join("videos")).unwrap();
        std::fs::write(media.join("videos/a.mp4"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        let storage = Storage::Local(media.clone());
        let find = |p: PathBuf| {
            let storage = storage.clone();
            async move { storage.find(&p.to_string_lossy()).await }
        };
        assert!(find(media.join("videos/a.mp4")).await.is_ok());
        for outside in [
            media.join("videos/../../secret"),
            dir.path().join("secret"),
            media.join("videos"),
        ] {
            let e = find(outside.clone()).await.err().unwrap();
            assert!(matches!(e, MediaError::Outside(_)), "{outside:?}: {e}");
        }
        std::os::unix::fs::symlink(dir.path().join("secret"), media.join("videos/link.mp4"))
            .unwrap();
        assert!(matches!(
            find(media.join("videos/link.mp4")).await,
            Err(MediaError::Outside(_))
        ));
        let e = find(media.join("videos/missing.mp4")).await.err().unwrap();
        assert!(e.is_not_found(), "{e}");
    }
}
