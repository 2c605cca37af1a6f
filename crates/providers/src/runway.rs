//! Runway's API (`GET /v1/tasks/{id}`, every call with `X-Runway-Version`).
//!
//! States: `PENDING`/`THROTTLED` (queued), `RUNNING`, `SUCCEEDED` (`output[]`
//! of presigned URLs, the first is the video, fetched without the key),
//! `FAILED` (`failure`, `failureCode`), `CANCELLED`. Output URLs expire after
//! 24–48 h; this adapter reports the URL a poll gives, so a re-poll yields a
//! fresh one, and a 404/410 on download is reported as gone by the
//! downloader.
//!
//! Create: `POST /v1/text_to_video`, or `/v1/image_to_video` when the
//! request has an `image` (sent as `promptImage`), with `{model, promptText,
//! ratio, duration}`; `ratio` is the request's `ratio` or its `size` as
//! `W:H`. Runway has no idempotency key and no lookup: a crash mid-create is
//! unknowable. No webhooks.
//!
//! Cancel: `DELETE /v1/tasks/{id}` (with `X-Runway-Version`), which Runway
//! documents as canceling a task that is pending, throttled or running and
//! deleting any other (runwayml/sdk-python, `src/runwayml/resources/tasks.py`,
//! `TasksResource.delete`, at commit 02c2ca0, read on 2026-12-01). A 2xx
//! (204, no body) means the request was accepted.

use async_trait::async_trait;
use clawcut_core::{
    CancelAnswer, PollOutcome, Provider, ProviderError, RemoteProgress, SubmitRequest,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http::{ApiClient, check_job_id, created_id, truncate_chars};
use crate::outcome::{is_url, public_video, reason, running};
use crate::request::JobRequest;

/// The API version this adapter speaks; Runway requires it on every call.
const API_VERSION: &str = "2024-11-06";
const VERSION_HEADER: &str = "x-runway-version";

pub(crate) struct Runway {
    name: String,
    api: ApiClient,
}

#[derive(Deserialize)]
struct Task {
    status: String,
    #[serde(default)]
    output: Option<Vec<Value>>,
    #[serde(default)]
    failure: Value,
    #[serde(default, rename = "failureCode")]
    failure_code: Value,
}

impl Runway {
    pub(crate) fn new(name: String, api: ApiClient) -> Self {
        Runway { name, api }
    }
}

#[async_trait]
impl Provider for Runway {
    fn name(&self) -> &str {
        &self.name
    }

    async fn cancel(&self, provider_job_id: &str) -> Result<CancelAnswer, ProviderError> {
        check_job_id(provider_job_id)?;
        let url = self.api.endpoint(&["v1", "tasks", provider_job_id]);
        self.api
            .send_ok(
                reqwest::Method::DELETE,
                url,
                None,
                &[(VERSION_HEADER, API_VERSION)],
            )
            .await?;
        Ok(CancelAnswer::Requested)
    }

    async fn poll(&self, provider_job_id: &str) -> Result<PollOutcome, ProviderError> {
        check_job_id(provider_job_id)?;
        let url = self.api.endpoint(&["v1", "tasks", provider_job_id]);
        let resp = self
            .api
            .send_ok(
                reqwest::Method::GET,
                url,
                None,
                &[(VERSION_HEADER, API_VERSION)],
            )
            .await?;
        let task: Task = self.api.parse_json(&resp.body)?;
        match task.status.as_str() {
            "PENDING" | "THROTTLED" => Ok(running(RemoteProgress::Queued)),
            "RUNNING" => Ok(running(RemoteProgress::Running)),
            "FAILED" => Ok(PollOutcome::Failed {
                reason: reason(&[&task.failure, &code_in_parens(&task.failure_code)]),
            }),
            "CANCELLED" => Ok(PollOutcome::Canceled {
                reason: "task cancelled at the provider".into(),
            }),
            "SUCCEEDED" => {
                let first = task.output.as_ref().and_then(|o| o.first());
                match first.and_then(Value::as_str) {
                    Some(url) if is_url(url) => Ok(PollOutcome::Succeeded {
                        video: public_video(url),
                        thumbnail: None,
                    }),
                    _ if task.output.as_ref().is_none_or(Vec::is_empty) => {
                        Ok(PollOutcome::OutputsGone {
                            reason: "task succeeded but lists no output".into(),
                        })
                    }
                    _ => Err(self.api.malformed(format!(
                        "succeeded task has no output url: {}",
                        self.api.excerpt(&resp.body)
                    ))),
                }
            }
            other => Err(self.api.malformed(format!(
                "unknown task status {:?}",
                truncate_chars(other, 60)
            ))),
        }
    }

    async fn submit(&self, req: &SubmitRequest) -> Result<String, ProviderError> {
        let job = JobRequest::parse(req)?;
        let mut body = Map::new();
        body.insert("promptText".into(), json!(job.prompt()));
        if let Some(model) = job.str("model") {
            body.insert("model".into(), json!(model));
        }
        let ratio = match job.str("ratio") {
            Some(r) => Some(r.to_owned()),
            None => job.size()?.map(|(w, h)| format!("{w}:{h}")),
        };
        if let Some(ratio) = ratio {
            body.insert("ratio".into(), json!(ratio));
        }
        if let Some(seconds) = job.seconds()? {
            body.insert("duration".into(), json!(seconds));
        }
        let endpoint = match job.get("image") {
            Some(image) => {
                body.insert("promptImage".into(), image.clone());
                "image_to_video"
            }
            None => "text_to_video",
        };
        let resp = self
            .api
            .send_ok(
                reqwest::Method::POST,
                self.api.endpoint(&["v1", endpoint]),
                Some(&Value::Object(body)),
                &[(VERSION_HEADER, API_VERSION)],
            )
            .await?;
        let task: Value = self.api.parse_json(&resp.body)?;
        created_id(&self.api, task.get("id"), "id", &resp.body)
    }
}

fn code_in_parens(code: &Value) -> Value {
    match code.as_str().map(str::trim).filter(|c| !c.is_empty()) {
        Some(c) => json!(format!("({c})")),
        None => Value::Null,
    }
}
