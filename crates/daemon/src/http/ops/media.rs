//! A job's files for a signed-in operator: the clip and thumbnail streamed
//! with HTTP range requests (what `<video>` needs to seek), the "verify
//! now" check of the clip against its recorded sha256 and size, and the
//! export of the job's audit events as NDJSON.
//!
//! Only a path the job's row records is served, and only when it lies
//! inside `media.dir` once symlinks are resolved: a row the app got wrong
//! cannot turn the panel into a file server for the host.

use std::io::SeekFrom;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State as Extract};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::auth::Operator;
use super::pages::{LIMITS, urlencode};
use super::view::{Frame, page, problem};
use crate::report::error_chain;
use crate::state::State;

/// Bytes per read when streaming or hashing.
const CHUNK: usize = 64 * 1024;

/// Which of a job's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Video,
    Thumbnail,
}

/// The job's recorded file, checked to lie inside the media directory.
async fn recorded_file(
    s: &State,
    op: &Operator,
    id: &str,
    which: Which,
) -> Result<(PathBuf, clawcut_store::JobMedia), Response> {
    let media = match s.worker.store().job_media(id, LIMITS).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Err(problem(
                StatusCode::NOT_FOUND,
                Some(op),
                &format!("no job {id}"),
            ));
        }
        Err(e) => {
            return Err(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(op),
                &error_chain(&e),
            ));
        }
    };
    let recorded = match which {
        Which::Video => media.video_path.clone(),
        Which::Thumbnail => media.thumbnail_path.clone(),
    };
    let Some(recorded) = recorded else {
        return Err(problem(
            StatusCode::NOT_FOUND,
            Some(op),
            "the job has no such file yet",
        ));
    };
    let dir = s.worker.settings().media_dir.clone();
    match inside(&dir, FsPath::new(&recorded)).await {
        Ok(p) => Ok((p, media)),
        Err(msg) => Err(problem(StatusCode::NOT_FOUND, Some(op), &msg)),
    }
}

/// `path` resolved, when it is a file inside `dir` (both resolved).
async fn inside(dir: &FsPath, path: &FsPath) -> Result<PathBuf, String> {
    let dir = tokio::fs::canonicalize(dir)
        .await
        .map_err(|e| format!("the media directory {}: {e}", dir.display()))?;
    let real = tokio::fs::canonicalize(path)
        .await
        .map_err(|e| format!("the recorded file {}: {e}", path.display()))?;
    if !real.starts_with(&dir) {
        return Err(format!(
            "the recorded file {} is outside the media directory; not served",
            path.display()
        ));
    }
    Ok(real)
}

fn content_type(path: &FsPath) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("mp4" | "m4v") => "video/mp4",
        Some("webm") => "video/webm",
        Some("mov") => "video/quicktime",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        _ => "application/octet-stream",
    }
}

/// A `Range` header's one byte range against a file of `len` bytes:
/// `Ok(None)` for the whole file, `Err(())` when unsatisfiable (416).
/// Several ranges at once are answered with the whole file (allowed, and
/// no browser asks a `<video>` for more than one).
pub fn byte_range(header: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = header else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        // The last b bytes.
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || len == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            len.checked_sub(1).ok_or(())?
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
        };
        (start, end)
    };
    if start >= len || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn stream(op: &Operator, path: &FsPath, headers: &HeaderMap) -> Response {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => {
            return problem(
                StatusCode::NOT_FOUND,
                Some(op),
                &format!("open the file: {e}"),
            );
        }
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => {
            return problem(
                StatusCode::NOT_FOUND,
                Some(op),
                &format!("read the file: {e}"),
            );
        }
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match byte_range(range, len) {
        Ok(None) => (StatusCode::OK, 0, len.saturating_sub(1)),
        Ok(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Err(()) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response();
        }
    };
    if start > 0
        && let Err(e) = file.seek(SeekFrom::Start(start)).await
    {
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(op),
            &format!("seek: {e}"),
        );
    }
    let want = if len == 0 { 0 } else { end - start + 1 };
    let body = Body::from_stream(futures_util::stream::unfold(
        (file, want),
        |(mut file, left)| async move {
            if left == 0 {
                return None;
            }
            let mut buf = vec![0u8; CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((
                        Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)),
                        (file, left - n as u64),
                    ))
                }
                Err(e) => Some((Err(e), (file, 0))),
            }
        },
    ));
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(&want.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}

pub async fn video(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match recorded_file(&s, &op, &id, Which::Video).await {
        Ok((path, _)) => stream(&op, &path, &headers).await,
        Err(r) => r,
    }
}

pub async fn thumbnail(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match recorded_file(&s, &op, &id, Which::Thumbnail).await {
        Ok((path, _)) => stream(&op, &path, &headers).await,
        Err(r) => r,
    }
}

/// sha256 and size of a file, read in chunks.
async fn digest(path: &FsPath) -> std::io::Result<(String, u64)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut n_total = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        n_total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), n_total))
}

pub async fn verify(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
) -> Response {
    let (path, media) = match recorded_file(&s, &op, &id, Which::Video).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let outcome = digest(&path).await;
    let (ok, lines) = match &outcome {
        Ok((sha, bytes)) => {
            let sha_ok = media.video_sha256.as_deref() == Some(sha.as_str());
            let size_ok = media.video_bytes.is_none_or(|b| b == *bytes);
            (
                sha_ok && size_ok,
                vec![
                    format!("read {bytes} bytes from {}", path.display()),
                    format!("sha256 {sha}"),
                    format!(
                        "recorded {} ({} bytes)",
                        media.video_sha256.as_deref().unwrap_or("no checksum"),
                        media.video_bytes.map_or("?".into(), |b| b.to_string())
                    ),
                ],
            )
        }
        Err(e) => (
            false,
            vec![format!("could not read {}: {e}", path.display())],
        ),
    };
    let body = html! {
        h1 { "Verify the clip of job " code { (id) } }
        p #verify-result data-ok=(ok) .flash .error[!ok] role=(if ok { "status" } else { "alert" }) {
            @if ok { "The file matches its recorded checksum and size." }
            @else { "The file does NOT match its recorded checksum or size." }
        }
        ul { @for l in &lines { li { code { (l) } } } }
        p { a href={"/ops/jobs/" (urlencode(&id))} { "Back to the job" } }
    };
    page(
        StatusCode::OK,
        Frame {
            title: "Verify",
            op: Some(&op),
            refresh_ms: None,
            flash: None,
        },
        body,
    )
}

/// The most events one export holds.
const EXPORT_MAX: u32 = 100_000;

pub async fn export(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
) -> Response {
    let limits = clawcut_store::PanelLimits {
        timeout: std::time::Duration::from_secs(30),
        ..LIMITS
    };
    let events = match s.worker.store().job_events(&id, EXPORT_MAX, limits).await {
        Ok(e) => e,
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, Some(&op), &error_chain(&e)),
    };
    let mut out = String::new();
    for e in &events {
        let detail: serde_json::Value =
            serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::String(e.detail.clone()));
        let line = serde_json::json!({
            "id": e.id,
            "ai_job_id": e.ai_job_id,
            "from_status": e.from_status,
            "to_status": e.to_status,
            "worker_id": e.worker_id,
            "detail": detail,
            "created_at": super::view::instant(e.created_at),
            "created_at_ms": e.created_at,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    let name: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_".contains(*c))
        .collect();
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"job-{name}-events.ndjson\""),
            ),
        ],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_as_video_elements_ask_for_them() {
        assert_eq!(byte_range(None, 100), Ok(None));
        assert_eq!(byte_range(Some("bytes=0-"), 100), Ok(Some((0, 99))));
        assert_eq!(byte_range(Some("bytes=10-19"), 100), Ok(Some((10, 19))));
        assert_eq!(byte_range(Some("bytes=90-200"), 100), Ok(Some((90, 99))));
        assert_eq!(byte_range(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(byte_range(Some("bytes=-1000"), 100), Ok(Some((0, 99))));
        assert_eq!(byte_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=20-10"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=-0"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=0-"), 0), Err(()));
        assert_eq!(byte_range(Some("bytes=x-"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(byte_range(Some("items=0-1"), 100), Ok(None));
    }

    #[tokio::test]
    async fn only_files_inside_the_media_directory_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let media = dir.path().join("media");
        std::fs::create_dir_all(media.join("videos")).unwrap();
        std::fs::write(media.join("videos/a.mp4"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        assert!(inside(&media, &media.join("videos/a.mp4")).await.is_ok());
        assert!(
            inside(&media, &media.join("videos/../../secret"))
                .await
                .is_err()
        );
        assert!(inside(&media, &dir.path().join("secret")).await.is_err());
        std::os::unix::fs::symlink(dir.path().join("secret"), media.join("videos/link.mp4"))
            .unwrap();
        assert!(
            inside(&media, &media.join("videos/link.mp4"))
                .await
                .is_err()
        );
        assert!(
            inside(&media, &media.join("videos/missing.mp4"))
                .await
                .is_err()
        );
    }
}
