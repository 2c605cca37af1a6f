//! Runway's API (`GET /v1/tasks/{id}`, every call with `X-Runway-Version`).
//!
//! What this adapter relies on, from runwayml/sdk-python at c604e0e
//! (generated from Runway's OpenAPI spec; checked 2026-12-01) and Runway's
//! API reference:
//!
//! - Base `https://api.dev.runwayml.com`, `Authorization: Bearer <key>`,
//!   `X-Runway-Version: 2024-11-06` on every call (`src/runwayml/_client.py`).
//! - States (`types/task_retrieve_response.py`): `PENDING`/`THROTTLED`
//!   (queued), `RUNNING`, `SUCCEEDED` (`output[]` of URLs, the first is the
//!   video, fetched without the key), `FAILED` (`failure`, `failureCode`),
//!   `CANCELLED`. Output URLs expire after 24–48 h; this adapter reports the
//!   URL a poll gives, so a re-poll yields a fresh one, and a 404/410 on
//!   download is reported as gone by the downloader.
//! - Create: `POST /v1/text_to_video`, or `/v1/image_to_video` when the
//!   request has an `image` (sent as `promptImage`: a URI or Runway's list
//!   of `{uri, position}`), with `{model, promptText, ratio?, duration?}`;
//!   `ratio` is the request's `ratio` or its `size` as `W:H` (`1280:720`).
//!   Required (`types/text_to_video_create_params.py`,
//!   `types/image_to_video_create_params.py`): `model` always, and
//!   `promptText` for text to video (every request here has a prompt);
//!   `ratio` for `gen4.5`, `gen4_turbo`, `veo3`, `veo3.1` and `veo3.1_fast`;
//!   `duration` for `gen4.5` and `veo3`; `gen4_turbo` is image to video
//!   only, so it needs `image`. Those are refused here, naming the field,
//!   before a create is spent; other models' optional fields are sent when
//!   given and left to Runway's defaults otherwise.
//! - Errors (docs.dev.runwayml.com/api-details/errors): 400 `{"error":
//!   "..."}` for a bad input, 401 a refused key, 404, 405, 429 (may retry),
//!   502/503/504 shedding load (may retry). Runway documents no credit
//!   error of its own; a 402 would be `Account` by the shared mapping. The
//!   SDK honours `retry-after-ms` before `Retry-After`
//!   (`src/runwayml/_base_client.py`), and so does the shared mapping.
//!
//! Runway has no idempotency key and no lookup: a crash mid-create is
//! unknowable. No webhooks.
//!
//! Cancel: `DELETE /v1/tasks/{id}` (with `X-Runway-Version`), which Runway
//! documents as canceling a task that is pending, throttled or running and
//! deleting any other (`src/runwayml/resources/tasks.py`,
//! `TasksResource.delete`). A 2xx (204, no body) means the request was
//! accepted.

use async_trait::async_trait;
use clawcut_core::{
    CancelAnswer, PollOutcome, Provider, ProviderError, RemoteProgress, SubmitRequest,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http::{ApiClient, check_job_id, created_id, truncate_chars};
use crate::outcome::{is_url, public_video, reason, running};
use crate::request::{JobRequest, invalid_request};

/// Models whose create schema requires `ratio` (sdk-python
/// `types/{text,image}_to_video_create_params.py`, `Required[...]`).
const RATIO_REQUIRED: &[&str] = &["gen4.5", "gen4_turbo", "veo3", "veo3.1", "veo3.1_fast"];
/// Models whose create schema requires `duration`.
const DURATION_REQUIRED: &[&str] = &["gen4.5", "veo3"];
/// Models only `image_to_video` serves.
const IMAGE_REQUIRED: &[&str] = &["gen4_turbo"];

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
        let model = job.require_str("model", "runway needs `model`, e.g. gen4.5")?;
        let mut body = Map::new();
        body.insert("promptText".into(), json!(job.prompt()));
        body.insert("model".into(), json!(model));
        let ratio = match job.str("ratio") {
            Some(r) => Some(r.to_owned()),
            None => job.size()?.map(|(w, h)| format!("{w}:{h}")),
        };
        match ratio {
            Some(ratio) => {
                body.insert("ratio".into(), json!(ratio));
            }
            None if RATIO_REQUIRED.contains(&model) => {
                return Err(invalid_request(format!(
                    "missing required field `ratio` (or `size`): runway model {model:?} requires it, e.g. 1280:720"
                )));
            }
            None => {}
        }
        match job.seconds()? {
            Some(seconds) => {
                body.insert("duration".into(), json!(seconds));
            }
            None if DURATION_REQUIRED.contains(&model) => {
                return Err(invalid_request(format!(
                    "missing required field `seconds`: runway model {model:?} requires a duration"
                )));
            }
            None => {}
        }
        if IMAGE_REQUIRED.contains(&model) && job.get("image").is_none() {
            return Err(invalid_request(format!(
                "missing required field `image`: runway model {model:?} is image to video only"
            )));
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
