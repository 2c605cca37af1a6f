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
//! For readers of those locations ([`Storage::open`], [`Storage::verify`]):
//! a stream of the bytes with its size, and a sha256 check, on either
//! store; memory stays one chunk at a time.

pub mod object;

#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
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

/// An opened clip: its size and its bytes.
pub struct Opened {
    #[allow(
        dead_code,
        reason = "for the operator panel's preview (Content-Length), built in parallel"
    )]
    pub size: u64,
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
}

/// What [`Storage::verify`] found.
#[allow(
    dead_code,
    reason = "for the operator panel's clip preview and checksum check, built in parallel"
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    Matches,
    /// The bytes at the location hash to this instead.
    Differs(String),
    Missing,
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

    /// The clip at `location` (as recorded in `video_path`): its size and a
    /// reader of its bytes, streamed (a preview, `backup`).
    pub async fn open(&self, location: &str) -> Result<Opened, MediaError> {
        match self {
            Storage::Local(_) => {
                let path = PathBuf::from(location);
                let local = |source| MediaError::Local {
                    path: path.clone(),
                    source,
                };
                let file = tokio::fs::File::open(&path).await.map_err(local)?;
                let size = file.metadata().await.map_err(local)?.len();
                Ok(Opened {
                    size,
                    reader: Box::pin(file),
                })
            }
            Storage::Object(o) => {
                let (size, stream) = o.open(location).await?;
                Ok(Opened {
                    size,
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

    /// Whether the clip at `location` hashes to `sha256_hex` (read through
    /// once, streamed).
    #[allow(
        dead_code,
        reason = "for the operator panel's clip preview and checksum check, built in parallel"
    )]
    pub async fn verify(&self, location: &str, sha256_hex: &str) -> Result<Verified, MediaError> {
        let mut opened = match self.open(location).await {
            Ok(o) => o,
            Err(MediaError::Local { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(Verified::Missing);
            }
            Err(MediaError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }) => return Ok(Verified::Missing),
            Err(e) => return Err(e),
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = opened
                .reader
                .read(&mut buf)
                .await
                .map_err(|source| MediaError::Local {
                    path: PathBuf::from(location),
                    source,
                })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let got = hex::encode(hasher.finalize());
        Ok(if got.eq_ignore_ascii_case(sha256_hex) {
            Verified::Matches
        } else {
            Verified::Differs(got)
        })
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
    async fn a_local_clip_opens_with_its_size_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::Local(dir.path().to_owned());
        let loc = storage.location("videos", "s1", "v1", "MP4");
        assert_eq!(loc, dir.path().join("videos/s1/v1.mp4").to_string_lossy());
        std::fs::create_dir_all(dir.path().join("videos/s1")).unwrap();
        std::fs::write(&loc, b"clip").unwrap();
        let mut opened = storage.open(&loc).await.unwrap();
        assert_eq!(opened.size, 4);
        let mut got = Vec::new();
        opened.reader.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"clip");
        let sha = hex::encode(Sha256::digest(b"clip"));
        assert_eq!(storage.verify(&loc, &sha).await.unwrap(), Verified::Matches);
        assert!(matches!(
            storage.verify(&loc, &"0".repeat(64)).await.unwrap(),
            Verified::Differs(s) if s == sha
        ));
        let gone = storage.location("videos", "s1", "v2", "mp4");
        assert_eq!(
            storage.verify(&gone, &sha).await.unwrap(),
            Verified::Missing
        );
        assert_eq!(storage.size(&loc).await.unwrap(), 4);
    }
}
