//! Small builders of [`PollOutcome`]s shared by the adapters, so every
//! provider's answer reads the same way in `last_error` and in the files the
//! daemon writes: the running snooze, failure reasons, and output specs with
//! an extension taken from the URL.

use clawcut_core::{DownloadSpec, OutputKind, PollOutcome, RemoteProgress};
use serde_json::Value;

use crate::http::excerpt;

pub(crate) const NO_REASON: &str = "provider reported failure without a reason";
const DEFAULT_VIDEO_EXTENSION: &str = "mp4";

/// Still going; no provider but OpenAI gives a poll hint, so the daemon's
/// backoff decides.
pub(crate) fn running(progress: RemoteProgress) -> PollOutcome {
    PollOutcome::Running {
        progress,
        poll_after: None,
    }
}

/// A provider's failure text (string, or any JSON), one line, short, and
/// never empty.
pub(crate) fn reason(parts: &[&Value]) -> String {
    let texts: Vec<String> = parts
        .iter()
        .filter_map(|v| match v {
            Value::Null => None,
            Value::String(s) => Some(excerpt(s.as_bytes(), "")),
            other => Some(excerpt(other.to_string().as_bytes(), "")),
        })
        .filter(|s| !s.is_empty())
        .collect();
    if texts.is_empty() {
        NO_REASON.to_owned()
    } else {
        texts.join(" ")
    }
}

/// A download of `url`; the extension comes from the URL's path (default
/// `default_ext`).
pub(crate) fn spec(
    kind: OutputKind,
    url: &str,
    headers: Vec<(String, String)>,
    default_ext: &str,
) -> DownloadSpec {
    DownloadSpec {
        kind,
        url: url.to_owned(),
        headers,
        extension: extension_of(url, default_ext),
    }
}

/// A video download without credentials (the URL is presigned or public).
pub(crate) fn public_video(url: &str) -> DownloadSpec {
    spec(OutputKind::Video, url, Vec::new(), DEFAULT_VIDEO_EXTENSION)
}

/// A thumbnail download without credentials.
pub(crate) fn public_thumbnail(url: &str) -> DownloadSpec {
    spec(OutputKind::Thumbnail, url, Vec::new(), "jpg")
}

/// Whether `s` is an absolute URL with a host (what a download needs).
pub(crate) fn is_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| u.has_host())
}

/// The URL path's extension when it is short and alphanumeric, else
/// `default`: it becomes part of a file name, so nothing else gets through.
pub(crate) fn extension_of(url: &str, default: &str) -> String {
    path_extension(url)
        .filter(|e| (1..=5).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_else(|| default.into())
}

/// The lowercased extension of the URL's last path segment, if any.
pub(crate) fn path_extension(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let last = parsed.path_segments()?.next_back()?.to_owned();
    let (_, ext) = last.rsplit_once('.')?;
    Some(ext.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extensions_are_safe_file_name_parts() {
        assert_eq!(extension_of("https://d.example/b.WEBM?x=1", "mp4"), "webm");
        assert_eq!(extension_of("https://d.example/noext", "mp4"), "mp4");
        assert_eq!(extension_of("https://d.example/x.we/ird", "mp4"), "mp4");
        assert_eq!(
            extension_of("https://d.example/x.%2F..%2Fetc", "mp4"),
            "mp4"
        );
        assert_eq!(extension_of("not a url", "jpg"), "jpg");
    }

    #[test]
    fn reasons_are_never_empty() {
        assert_eq!(reason(&[&Value::Null]), NO_REASON);
        assert_eq!(
            reason(&[&json!(" bad\nprompt "), &json!("(E1)")]),
            "bad prompt (E1)"
        );
        assert_eq!(reason(&[&json!({"a": 1})]), r#"{"a":1}"#);
    }
}
