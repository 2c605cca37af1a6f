//! The OpenAI Videos API (`GET /v1/videos/{id}`), also spoken by compatible
//! vendors and by the fake in `clawcut-test-support`.
//!
//! Outputs are fetched from the API host itself with the same bearer key:
//! `/v1/videos/{id}/content` (mp4) and `?variant=thumbnail` (webp).
//!
//! Create: `POST /v1/videos` with `{model, prompt, seconds, size}` (seconds as
//! the string OpenAI documents), the idempotency key in an `Idempotency-Key`
//! header. Nothing documents that the Videos API honours that header, so a
//! crash mid-create is still unknowable (the trait's default recovery). No
//! webhooks: OpenAI's are not used.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use clawcut_core::{
    DownloadSpec, OutputKind, PollOutcome, Provider, ProviderError, RemoteProgress, SubmitRequest,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http::{ApiClient, check_job_id, created_id, truncate_chars};
use crate::request::JobRequest;

/// OpenAI's hint for the next poll of a running video.
const POLL_AFTER_HEADER: &str = "openai-poll-after-ms";

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
        let poll_after = resp
            .headers
            .get(POLL_AFTER_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis);
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

fn format_unix(secs: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    httpdate::fmt_http_date(at)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
