//! A job's files for a signed-in operator: the clip and thumbnail streamed
//! with HTTP range requests (what `<video>` needs to seek), the "verify
//! now" check of the clip against its recorded sha256 and size, and the
//! export of the job's audit events as NDJSON.
//!
//! Read through the media store ([`crate::media::Storage`]), so the same
//! links work on `media.dir` and on `media.store` (a ranged `GET` of the
//! object). Only a location the job's row records is served, and only when
//! it lies inside the store ([`Storage::find`]: a file inside `media.dir`
//! once symlinks are resolved, or a key under the prefix's `videos/` or
//! `thumbnails/`): a row the app got wrong cannot turn the panel into a
//! file server for the host or a reader of the bucket.
//!
//! [`Storage::find`]: crate::media::Storage::find

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State as Extract};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::auth::Operator;
use super::pages::{LIMITS, urlencode};
use super::view::{Frame, page, problem};
use crate::media::{Found, MediaError};
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

/// The job's recorded file, found inside the media store.
async fn recorded_file(
    s: &State,
    op: &Operator,
    id: &str,
    which: Which,
) -> Result<(Found, clawcut_store::JobMedia), Response> {
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
    match s.worker.storage.find(&recorded).await {
        Ok(found) => Ok((found, media)),
        Err(e) => Err(unreadable(op, &e)),
    }
}

/// 404 for a clip that is not there (or not ours to serve), 503 for a
/// store that does not answer: the clip may well be there.
fn unreadable(op: &Operator, e: &MediaError) -> Response {
    let status = if e.is_not_found() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    problem(status, Some(op), &error_chain(e))
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

async fn stream(op: &Operator, found: Found, headers: &HeaderMap) -> Response {
    let len = found.size;
    let kind = content_type(FsPath::new(&found.shown));
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
    let want = if len == 0 { 0 } else { end - start + 1 };
    let part = (status == StatusCode::PARTIAL_CONTENT).then_some((start, end));
    let reader = match found.read(part).await {
        Ok(r) => r,
        Err(e) => return unreadable(op, &e),
    };
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(reader, CHUNK));
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
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
        Ok((found, _)) => stream(&op, found, &headers).await,
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
        Ok((found, _)) => stream(&op, found, &headers).await,
        Err(r) => r,
    }
}

pub async fn verify(
    Extract(s): Extract<Arc<State>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
) -> Response {
    let (found, media) = match recorded_file(&s, &op, &id, Which::Video).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let shown = found.shown.clone();
    let outcome = found.digest().await;
    let (ok, lines) = match &outcome {
        Ok((sha, bytes)) => {
            let sha_ok = media.video_sha256.as_deref() == Some(sha.as_str());
            let size_ok = media.video_bytes.is_none_or(|b| b == *bytes);
            (
                sha_ok && size_ok,
                vec![
                    format!("read {bytes} bytes from {shown}"),
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
            vec![format!("could not read {shown}: {}", error_chain(e))],
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
}
