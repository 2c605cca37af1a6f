//! Bringing a finished output home: stream it to a temporary file in the
//! media directory, hash and count it on the way, refuse anything past the
//! byte limit or outside the [`DownloadPolicy`], and only then sync and
//! rename it to its final path.
//!
//! The invariant the daemon relies on: a file at a final path is always
//! complete. Temporary files live in `<media_dir>/.tmp/` (same filesystem, so
//! the rename is atomic), are removed on every error and when the download
//! future is dropped, and [`cleanup_stale_temp`] sweeps what a crash left.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clawcut_core::DownloadSpec;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::config::ProviderConfig;
use crate::error::ProvidersError;
use crate::http::{display_url, retry_after};

/// Where temporary files go, under the media directory.
pub const TEMP_DIR: &str = ".tmp";
const TEMP_SUFFIX: &str = "part";
const MAX_REDIRECTS: usize = 5;
/// Progress is reported at most this often (bytes or time, whichever first),
/// so a lease heartbeat does not turn into a write per chunk.
const PROGRESS_BYTES: u64 = 4 * 1024 * 1024;
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which URLs a provider's outputs may be fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadPolicy {
    hosts: Vec<String>,
    schemes: Vec<String>,
}

impl DownloadPolicy {
    /// `hosts` are exact host names (case-insensitive), or `*.example.com` for
    /// any subdomain of `example.com`.
    pub fn new<H, S>(hosts: H, schemes: S) -> Self
    where
        H: IntoIterator,
        H::Item: AsRef<str>,
        S: IntoIterator,
        S::Item: AsRef<str>,
    {
        let norm = |s: &str| s.trim().trim_end_matches('.').to_ascii_lowercase();
        DownloadPolicy {
            hosts: hosts.into_iter().map(|h| norm(h.as_ref())).collect(),
            schemes: schemes.into_iter().map(|s| norm(s.as_ref())).collect(),
        }
    }

    /// The provider's own API host plus its configured extra hosts; https,
    /// plus the base URL's scheme (so a loopback fake may use http).
    pub fn for_provider(cfg: &ProviderConfig) -> Self {
        let hosts = cfg
            .base_url
            .host_str()
            .map(str::to_owned)
            .into_iter()
            .chain(cfg.allowed_download_hosts.iter().cloned());
        let schemes = ["https".to_owned(), cfg.base_url.scheme().to_owned()];
        DownloadPolicy::new(hosts, schemes)
    }

    /// Refuses a URL whose scheme or host is not allowed.
    pub fn check(&self, url: &Url) -> Result<(), ProvidersError> {
        let scheme = url.scheme().to_ascii_lowercase();
        if !self.schemes.contains(&scheme) {
            return Err(ProvidersError::SchemeNotAllowed { scheme });
        }
        let host = url
            .host_str()
            .ok_or_else(|| ProvidersError::NoHost {
                url: display_url(url),
            })?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let allowed = self
            .hosts
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(parent) => host
                    .strip_suffix(parent)
                    .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
                None => *pattern == host,
            });
        if allowed {
            Ok(())
        } else {
            Err(ProvidersError::HostNotAllowed { host })
        }
    }
}

/// A complete, synced output at its final path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub sha256_hex: String,
    pub bytes: u64,
}

/// Streams outputs to disk. One is enough for the whole daemon; it holds a
/// connection pool.
#[derive(Debug, Clone)]
pub struct Downloader {
    client: reqwest::Client,
}

impl Downloader {
    /// `idle_timeout` bounds the wait for each read (and the connection), not
    /// the whole transfer: a large video on a slow link is fine, a stalled one
    /// is not.
    pub fn new(idle_timeout: Duration) -> Result<Self, ProvidersError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(idle_timeout))
            .read_timeout(idle_timeout)
            // Redirects are followed by hand so every hop is checked against
            // the policy and credentials never leave their origin.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("clawcut-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ProvidersError::BuildClient)?;
        Ok(Downloader { client })
    }

    /// Downloads `spec` to `final_path` through a temporary file under
    /// `media_dir`. `on_progress` receives the byte count so far, at most
    /// every few MiB or every second, so the caller can renew its lease.
    pub async fn download(
        &self,
        spec: &DownloadSpec,
        allowed: &DownloadPolicy,
        media_dir: &Path,
        final_path: &Path,
        max_bytes: u64,
        mut on_progress: impl FnMut(u64) + Send,
    ) -> Result<Downloaded, ProvidersError> {
        let url = Url::parse(&spec.url).map_err(|source| ProvidersError::BadUrl {
            url: spec.url.split('?').next().unwrap_or_default().to_owned(),
            source,
        })?;
        let headers = header_map(spec)?;
        let (mut resp, url) = self.send_following_redirects(url, headers, allowed).await?;
        let shown_url = display_url(&url);

        let expected = resp.content_length();
        if expected.is_some_and(|len| len > max_bytes) {
            return Err(ProvidersError::OutputTooLarge { limit: max_bytes });
        }

        let temp_dir = media_dir.join(TEMP_DIR);
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |source| ProvidersError::WriteOutput { path, source }
        };
        tokio::fs::create_dir_all(&temp_dir)
            .await
            .map_err(write_err(&temp_dir))?;
        let temp = TempFile::new(temp_dir.join(temp_name()));
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp.path)
            .await
            .map_err(write_err(&temp.path))?;

        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        let mut reported = (0u64, Instant::now());
        while let Some(chunk) =
            resp.chunk()
                .await
                .map_err(|source| ProvidersError::DownloadOutput {
                    url: shown_url.clone(),
                    source,
                })?
        {
            total = total.saturating_add(chunk.len() as u64);
            if total > max_bytes {
                return Err(ProvidersError::OutputTooLarge { limit: max_bytes });
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(write_err(&temp.path))?;
            if total - reported.0 >= PROGRESS_BYTES || reported.1.elapsed() >= PROGRESS_INTERVAL {
                on_progress(total);
                reported = (total, Instant::now());
            }
        }
        if let Some(expected) = expected.filter(|&e| e != total) {
            return Err(ProvidersError::TruncatedOutput {
                url: shown_url,
                expected,
                got: total,
            });
        }
        if total == 0 {
            return Err(ProvidersError::EmptyOutput { url: shown_url });
        }
        file.flush().await.map_err(write_err(&temp.path))?;
        file.sync_all().await.map_err(write_err(&temp.path))?;
        drop(file);
        on_progress(total);

        install(&temp, final_path).await?;
        temp.keep();
        Ok(Downloaded {
            path: final_path.to_owned(),
            sha256_hex: hex::encode(hasher.finalize()),
            bytes: total,
        })
    }

    async fn send_following_redirects(
        &self,
        mut url: Url,
        mut headers: HeaderMap,
        allowed: &DownloadPolicy,
    ) -> Result<(reqwest::Response, Url), ProvidersError> {
        for _ in 0..=MAX_REDIRECTS {
            allowed.check(&url)?;
            let resp = self
                .client
                .get(url.clone())
                .headers(headers.clone())
                .send()
                .await
                .map_err(|source| ProvidersError::DownloadOutput {
                    url: display_url(&url),
                    source,
                })?;
            let status = resp.status();
            if status.is_success() {
                return Ok((resp, url));
            }
            if !is_followed_redirect(status) {
                return Err(ProvidersError::DownloadStatus {
                    url: display_url(&url),
                    status: status.as_u16(),
                    retry_after: retry_after(resp.headers(), SystemTime::now()),
                });
            }
            let next = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|loc| url.join(loc).ok())
                .ok_or_else(|| ProvidersError::BadRedirect {
                    url: display_url(&url),
                })?;
            if next.origin() != url.origin() {
                // The spec's headers are credentials for its own origin
                // (OpenAI's content endpoint), never for a CDN.
                headers.clear();
            }
            url = next;
        }
        Err(ProvidersError::TooManyRedirects {
            limit: MAX_REDIRECTS,
        })
    }
}

fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn header_map(spec: &DownloadSpec) -> Result<HeaderMap, ProvidersError> {
    let mut map = HeaderMap::new();
    for (name, value) in &spec.headers {
        let bad = || ProvidersError::BadHeader { name: name.clone() };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let mut value = HeaderValue::from_str(value).map_err(|_| bad())?;
        value.set_sensitive(true);
        map.append(name, value);
    }
    Ok(map)
}

/// Moves a synced temp file into place and makes the rename durable.
async fn install(temp: &TempFile, final_path: &Path) -> Result<(), ProvidersError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| ProvidersError::WriteOutput { path, source }
    };
    let parent = final_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let parent_existed = tokio::fs::try_exists(parent).await.unwrap_or(false);
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(err(parent))?;
    tokio::fs::rename(&temp.path, final_path)
        .await
        .map_err(err(final_path))?;
    sync_dir(parent).await.map_err(err(parent))?;
    if !parent_existed {
        // A freshly created directory's own entry must be durable too, or a
        // crash could lose the directory and the file with it.
        if let Some(grand) = parent.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(grand).await.map_err(err(grand))?;
        }
    }
    Ok(())
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
            .await
            .map_err(io::Error::other)?
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// A temp file that deletes itself unless kept: on errors, and also when the
/// download future is dropped (shutdown, lease lost).
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    fn new(path: PathBuf) -> Self {
        TempFile { path, keep: false }
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{nanos:016x}-{:08x}-{n:x}.{TEMP_SUFFIX}",
        std::process::id()
    )
}

/// Removes every `.part` file left in `<media_dir>/.tmp` by a crash. Call it
/// at startup, before downloads begin: it does not know which temp files
/// belong to live downloads. Returns how many it removed.
pub fn cleanup_stale_temp(media_dir: &Path) -> io::Result<usize> {
    cleanup_stale_temp_older_than(media_dir, Duration::ZERO)
}

/// Like [`cleanup_stale_temp`], sparing files modified within `min_age`, so it
/// is safe while downloads (this process's or another replica's sharing the
/// media directory) are running.
pub fn cleanup_stale_temp_older_than(media_dir: &Path, min_age: Duration) -> io::Result<usize> {
    let entries = match std::fs::read_dir(media_dir.join(TEMP_DIR)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some(TEMP_SUFFIX) {
            continue;
        }
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or(Duration::MAX);
        if age < min_age {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            // Someone else (another replica's sweep) got there first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_matches_hosts_and_schemes() {
        let p = DownloadPolicy::new(["api.example.com", "*.delivery.example"], ["https"]);
        let ok = |u: &str| p.check(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("https://API.example.com/x"));
        assert!(ok("https://a.delivery.example/x"));
        assert!(ok("https://a.b.delivery.example./x"));
        assert!(!ok("https://delivery.example/x"));
        assert!(!ok("https://evildelivery.example/x"));
        assert!(!ok("http://api.example.com/x"));
        assert!(!ok("https://api.example.com.evil/x"));
        assert!(!ok("file:///etc/passwd"));
    }
}
