//! The OpenAI Videos API (`GET /v1/videos/{id}`), also spoken by compatible
//! vendors and by the fake in `clawcut-test-support`.
//!
//! What this adapter relies on, from openai/openai-python at e43b422
//! (`src/openai/resources/videos.py`, `src/openai/types/video.py`,
//! `types/video_create_params.py`; checked 2026-12-01) and the API
//! reference (developers.openai.com/api/reference/resources/videos):
//!
//! - Poll: `GET /v1/videos/{id}`; `status` is `queued`, `in_progress`,
//!   `completed` or `failed` (`error: {code, message}`), with `expires_at`
//!   (unix seconds) for the downloadable assets. A poll hint comes in the
//!   `openai-poll-after-ms` header.
//! - Outputs are fetched from the API host itself with the same bearer key:
//!   `GET /v1/videos/{id}/content` (mp4) and `?variant=thumbnail` (webp)
//!   (`Videos.download_content`, variants `video`, `thumbnail`,
//!   `spritesheet`).
//! - Create: `POST /v1/videos` with `{model?, prompt, seconds?, size?}`;
//!   only `prompt` is required (`model` defaults to `sora-2`, `seconds`
//!   to `"4"`, `size` to `720x1280`); `seconds` is sent as the string
//!   OpenAI documents. The SDK sends the create as multipart/form-data
//!   (to carry an `input_reference` file); the reference lists the body
//!   parameters as JSON too, and this adapter, which sends no file, sends
//!   JSON (not checked against the live API). The idempotency key goes in
//!   an `Idempotency-Key` header; nothing documents that the Videos API
//!   honours it, so a crash mid-create is still unknowable (the trait's
//!   default recovery).
//! - Errors: `{"error": {message, type, code}}`; 401/403 are a refused key
//!   (`Unauthorized`); a 429 is a rate limit unless its code/type is
//!   `insufficient_quota` (quota used up or bill unpaid), which the shared
//!   mapping classifies `Account(429)`. The SDK honours `retry-after-ms`
//!   before `Retry-After` (`src/openai/_base_client.py`), and so does the
//!   shared mapping.
//! - Cancel: none. `DELETE /v1/videos/{id}` (`Videos.delete`) is documented
//!   as "Permanently delete a completed or failed video and its stored
//!   assets"; it does not stop one in progress, so [`Provider::cancel`] is the trait's
//!   default and only the local cancel happens.
//! - Webhooks: none for videos (openai-python's `types/webhooks` has batch,
//!   eval, fine-tuning, response and call events only), so
//!   `webhook_secret_env` has no use for this kind.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use clawcut_core::{
    DownloadSpec, OutputKind, PollOutcome, Provider, ProviderError, RemoteProgress, SubmitRequest,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http::{ApiClient, check_job_id, created_id, parse_millis, truncate_chars};
use crate::request::JobRequest;

/// OpenAI's hint for the next poll of a running video.
const POLL_AFTER_HEADER: &str = "openai-poll-after-ms";
/// A poll hint beyond this is treated as this. OpenAI sends seconds; an hour
/// is already far more than any video takes to render, so a larger value is
/// garbage that must not park a job (the backoff math caps floors at 24h on
/// top of this).
const MAX_POLL_AFTER: Duration = Duration::from_secs(3600);

pub(crate) struct OpenAi {
    name: String,
    api: ApiClient,
}

#[derive(Deserialize)]
struct Video {
    status: String,
    #[serde(default)]
    expires_at: Option<i64>,
    #[serde(default)]
    error: Option<VideoError>,
}

#[derive(Deserialize)]
struct VideoError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl OpenAi {
    pub(crate) fn new(name: String, api: ApiClient) -> Self {
        OpenAi { name, api }
    }

    fn outputs(&self, id: &str) -> PollOutcome {
        let content = self.api.endpoint(&["v1", "videos", id, "content"]);
        let mut thumbnail = content.clone();
        thumbnail
            .query_pairs_mut()
            .append_pair("variant", "thumbnail");
        PollOutcome::Succeeded {
            video: DownloadSpec {
                kind: OutputKind::Video,
                url: content.to_string(),
                headers: vec![self.api.auth_header()],
                extension: "mp4".into(),
            },
            thumbnail: Some(DownloadSpec {
                kind: OutputKind::Thumbnail,
                url: thumbnail.to_string(),
                headers: vec![self.api.auth_header()],
                extension: "webp".into(),
            }),
        }
    }
}

#[async_trait]
impl Provider for OpenAi {
    fn name(&self) -> &str {
        &self.name
    }

    async fn submit(&self, req: &SubmitRequest) -> Result<String, ProviderError> {
        let job = JobRequest::parse(req)?;
        let mut body = Map::new();
        body.insert("prompt".into(), json!(job.prompt()));
        if let Some(model) = job.str("model") {
            body.insert("model".into(), json!(model));
        }
        if let Some(seconds) = job.seconds()? {
            body.insert("seconds".into(), json!(seconds.to_string()));
        }
        if let Some((w, h)) = job.size()? {
            body.insert("size".into(), json!(format!("{w}x{h}")));
        }
        let resp = self
            .api
            .post_json(
                self.api.endpoint(&["v1", "videos"]),
                &Value::Object(body),
                &[("idempotency-key", &req.idempotency_key)],
            )
            .await?;
        let video: Value = self.api.parse_json(&resp.body)?;
        created_id(&self.api, video.get("id"), "id", &resp.body)
    }

    async fn poll(&self, provider_job_id: &str) -> Result<PollOutcome, ProviderError> {
        check_job_id(provider_job_id)?;
        let resp = self
            .api
            .get(self.api.endpoint(&["v1", "videos", provider_job_id]))
            .await?;
        let video: Video = self.api.parse_json(&resp.body)?;
        let poll_after = poll_after(&resp.headers);
        match video.status.as_str() {
            "queued" => Ok(PollOutcome::Running {
                progress: RemoteProgress::Queued,
                poll_after,
            }),
            "in_progress" => Ok(PollOutcome::Running {
                progress: RemoteProgress::Running,
                poll_after,
            }),
            "failed" => Ok(PollOutcome::Failed {
                reason: failure_reason(video.error.as_ref()),
            }),
            "completed" => match video.expires_at {
                // Any i64 compares; a far-future (or negative) value only
                // decides "expired or not", no arithmetic on it.
                Some(at) if at <= unix_now() => Ok(PollOutcome::OutputsGone {
                    reason: format!("outputs expired at {}", format_unix(at)),
                }),
                _ => Ok(self.outputs(provider_job_id)),
            },
            other => Err(self.api.malformed(format!(
                "unknown video status {:?}",
                truncate_chars(other, 60)
            ))),
        }
    }
}

fn failure_reason(error: Option<&VideoError>) -> String {
    let clean = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| truncate_chars(s, 300))
    };
    match error {
        Some(e) => match (clean(&e.message), clean(&e.code)) {
            (Some(m), Some(c)) => format!("{m} ({c})"),
            (Some(m), None) => m,
            (None, Some(c)) => c,
            (None, None) => "provider reported failure without a reason".into(),
        },
        None => "provider reported failure without a reason".into(),
    }
}

/// `openai-poll-after-ms`, capped at [`MAX_POLL_AFTER`]; unusable is `None`.
fn poll_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(POLL_AFTER_HEADER)?.to_str().ok()?;
    parse_millis(value, MAX_POLL_AFTER)
}

/// The last second an HTTP-date can show (9999-12-31T23:59:59Z);
/// `httpdate` panics past it.
const LAST_HTTP_DATE: i64 = 253_402_300_799;

/// Provider-supplied unix seconds for a message: an HTTP-date when it has
/// one, the raw number otherwise (negative, or past year 9999), never a panic.
fn format_unix(secs: i64) -> String {
    match u64::try_from(secs) {
        Ok(s) if secs <= LAST_HTTP_DATE => match UNIX_EPOCH.checked_add(Duration::from_secs(s)) {
            Some(at) => httpdate::fmt_http_date(at),
            None => format!("unix time {secs}"),
        },
        _ => format!("unix time {secs}"),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn hint(value: &str) -> Option<Duration> {
        let mut h = HeaderMap::new();
        h.insert(POLL_AFTER_HEADER, HeaderValue::from_str(value).unwrap());
        poll_after(&h)
    }

    #[test]
    fn poll_hints_are_capped_or_ignored() {
        assert_eq!(hint("5000"), Some(Duration::from_secs(5)));
        assert_eq!(hint("2500.0"), Some(Duration::from_millis(2500)));
        assert_eq!(hint("99999999999999999999"), Some(MAX_POLL_AFTER));
        assert_eq!(hint("1e400"), Some(MAX_POLL_AFTER));
        assert_eq!(hint("3600001"), Some(MAX_POLL_AFTER));
        assert_eq!(hint("-5000"), None);
        assert_eq!(hint("NaN"), None);
        assert_eq!(hint("later"), None);
        assert_eq!(poll_after(&HeaderMap::new()), None);
    }

    #[test]
    fn expiry_times_from_the_provider_format_without_panicking() {
        assert_eq!(format_unix(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(format_unix(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(format_unix(LAST_HTTP_DATE), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(
            format_unix(LAST_HTTP_DATE + 1),
            format!("unix time {}", LAST_HTTP_DATE + 1)
        );
        assert_eq!(format_unix(i64::MAX), format!("unix time {}", i64::MAX));
        assert_eq!(format_unix(-1), "unix time -1");
        assert_eq!(format_unix(i64::MIN), format!("unix time {}", i64::MIN));
    }
}
