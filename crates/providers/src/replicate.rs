//! Replicate predictions (`GET /v1/predictions/{id}`).
//!
//! What this adapter relies on, from replicate/replicate-python at 0110c2c
//! (`replicate/prediction.py`, `replicate/client.py`,
//! `replicate/exceptions.py`; checked 2026-12-01) and Replicate's HTTP API
//! reference (replicate.com/docs/reference/http):
//!
//! - States: `starting` (queued), `processing`, `succeeded`, `failed`
//!   (`error`), `canceled` (the SDK's `Prediction.status`), and `aborted`
//!   (ended before it started: in the SPEC and Replicate's newer HTTP
//!   reference, not in this SDK version; treated as canceled). Outputs
//!   are plain URLs in `output` (a URL, a list, or an object of named URLs),
//!   fetched without the key. They live on `replicate.delivery` itself
//!   (`https://replicate.delivery/pbxt/...`, as the SDK's recorded
//!   predictions show) and on its subdomains, so the sample config allows
//!   both `replicate.delivery` and `*.replicate.delivery`. Replicate deletes
//!   API prediction outputs after an hour (`data_removed`).
//! - Create: `POST /v1/models/{owner}/{name}/predictions` when the request's
//!   `model` is `owner/name`, or `POST /v1/predictions` with `version` when
//!   the request gives a `version`. The body's `input` is the request's own
//!   `input` object when it has one, else every request field but `model`
//!   and `version`. Replicate has no idempotency key, so the key is not sent
//!   and a crash mid-create is unknowable.
//! - Errors: RFC 7807 problem details `{title, detail, status}`
//!   (`ReplicateError`); 401 a refused token (`Unauthorized`); 402 the
//!   account has no credit, classified `Account(402)` by the shared
//!   mapping; 429 throttled with `Retry-After` (the SDK reads only that
//!   header, `client.py`).
//! - Webhooks: `webhook` + `webhook_events_filter: ["completed"]`; the body
//!   is the prediction (its `id` names the job), signed with Standard
//!   Webhooks (see [`crate::sign`]).
//! - Cancel: `POST /v1/predictions/{id}/cancel` (`Prediction.cancel`, the
//!   prediction's `urls.cancel`).

use async_trait::async_trait;
use clawcut_core::{
    CancelAnswer, DownloadSpec, OutputKind, PollOutcome, Provider, ProviderError, RemoteProgress,
    SubmitRequest, WebhookAuth,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http::{ApiClient, check_job_id, created_id, excerpt, truncate_chars, webhook_id};
use crate::outcome::{extension_of, path_extension, running};
use crate::request::{JobRequest, invalid_request};
use crate::sign::standard_webhook_valid;

const VIDEO_EXTENSIONS: &[&str] = &["mp4", "webm", "mov", "m4v", "mkv", "gif"];
const DEFAULT_EXTENSION: &str = "mp4";

pub(crate) struct Replicate {
    name: String,
    api: ApiClient,
}

#[derive(Deserialize)]
struct Prediction {
    status: String,
    #[serde(default)]
    output: Value,
    #[serde(default)]
    error: Value,
    #[serde(default)]
    data_removed: bool,
}

impl Replicate {
    pub(crate) fn new(name: String, api: ApiClient) -> Self {
        Replicate { name, api }
    }
}

#[async_trait]
impl Provider for Replicate {
    fn name(&self) -> &str {
        &self.name
    }

    async fn submit(&self, req: &SubmitRequest) -> Result<String, ProviderError> {
        let job = JobRequest::parse(req)?;
        let input = match job.get("input") {
            Some(Value::Object(input)) => input.clone(),
            Some(_) => return Err(invalid_request("`input` must be an object")),
            None => job.without(&["model", "version", "input"]),
        };
        let mut body = Map::new();
        let url = if let Some(version) = job.str("version") {
            body.insert("version".into(), json!(version));
            self.api.endpoint(&["v1", "predictions"])
        } else {
            let model = job.str("model").unwrap_or_default();
            match model.split_once('/') {
                Some((owner, name))
                    if !owner.is_empty() && !name.is_empty() && !name.contains('/') =>
                {
                    self.api
                        .endpoint(&["v1", "models", owner, name, "predictions"])
                }
                _ => {
                    return Err(invalid_request(
                        "replicate needs `model` as owner/name, or a `version`",
                    ));
                }
            }
        };
        body.insert("input".into(), Value::Object(input));
        if let Some(webhook) = &req.webhook_url {
            body.insert("webhook".into(), json!(webhook));
            body.insert("webhook_events_filter".into(), json!(["completed"]));
        }
        let resp = self.api.post_json(url, &Value::Object(body), &[]).await?;
        let prediction: Value = self.api.parse_json(&resp.body)?;
        created_id(&self.api, prediction.get("id"), "id", &resp.body)
    }

    async fn cancel(&self, provider_job_id: &str) -> Result<CancelAnswer, ProviderError> {
        check_job_id(provider_job_id)?;
        let url = self
            .api
            .endpoint(&["v1", "predictions", provider_job_id, "cancel"]);
        self.api
            .send_ok(reqwest::Method::POST, url, None, &[])
            .await?;
        Ok(CancelAnswer::Requested)
    }

    fn webhook_job_id(&self, body: &[u8]) -> Option<String> {
        webhook_id(body, &["id"])
    }

    fn verify_webhook(
        &self,
        headers: &[(String, String)],
        body: &[u8],
        secret: &str,
        now_unix: i64,
    ) -> WebhookAuth {
        if standard_webhook_valid(headers, body, secret, now_unix) {
            WebhookAuth::Valid
        } else {
            WebhookAuth::Invalid
        }
    }

    async fn poll(&self, provider_job_id: &str) -> Result<PollOutcome, ProviderError> {
        check_job_id(provider_job_id)?;
        let resp = self
            .api
            .get(self.api.endpoint(&["v1", "predictions", provider_job_id]))
            .await?;
        let p: Prediction = self.api.parse_json(&resp.body)?;
        match p.status.as_str() {
            "starting" => Ok(running(RemoteProgress::Queued)),
            "processing" => Ok(running(RemoteProgress::Running)),
            "failed" => Ok(PollOutcome::Failed {
                reason: error_text(&p.error)
                    .unwrap_or_else(|| "provider reported failure without a reason".into()),
            }),
            "canceled" | "aborted" => Ok(PollOutcome::Canceled {
                reason: match error_text(&p.error) {
                    Some(e) => format!("prediction {}: {e}", p.status),
                    None => format!("prediction {} at the provider", p.status),
                },
            }),
            "succeeded" if p.data_removed => Ok(PollOutcome::OutputsGone {
                reason: "outputs were removed by the provider (data_removed)".into(),
            }),
            "succeeded" => {
                let mut urls = Vec::new();
                collect_urls(&p.output, &mut urls);
                match pick_video(&urls) {
                    Some(url) => Ok(PollOutcome::Succeeded {
                        video: DownloadSpec {
                            kind: OutputKind::Video,
                            url: url.to_string(),
                            headers: Vec::new(),
                            extension: extension_of(url, DEFAULT_EXTENSION),
                        },
                        thumbnail: None,
                    }),
                    None if p.output.is_null() => Ok(PollOutcome::OutputsGone {
                        reason: "prediction succeeded but its output is gone".into(),
                    }),
                    None => Err(self.api.malformed(format!(
                        "succeeded prediction has no output url: {}",
                        excerpt(p.output.to_string().as_bytes(), "")
                    ))),
                }
            }
            other => Err(self.api.malformed(format!(
                "unknown prediction status {:?}",
                truncate_chars(other, 60)
            ))),
        }
    }
}

fn error_text(error: &Value) -> Option<String> {
    let text = match error {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = excerpt(text.as_bytes(), "");
    (!text.is_empty()).then_some(text)
}

/// Models answer a URL, a list of URLs, or an object of named URLs; take every
/// http(s) URL in document order.
fn collect_urls<'a>(output: &'a Value, out: &mut Vec<&'a str>) {
    match output {
        Value::String(s) if url::Url::parse(s).is_ok_and(|u| u.has_host()) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| collect_urls(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_urls(v, out)),
        _ => {}
    }
}

fn pick_video<'a>(urls: &[&'a str]) -> Option<&'a str> {
    urls.iter()
        .copied()
        .find(|u| path_extension(u).is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.as_str())))
        .or_else(|| urls.first().copied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_the_first_video_url_and_its_extension() {
        let out = json!(["https://d.example/a.png", "https://d.example/b.WEBM?x=1"]);
        let mut urls = Vec::new();
        collect_urls(&out, &mut urls);
        let v = pick_video(&urls).unwrap();
        assert_eq!(v, "https://d.example/b.WEBM?x=1");
        assert_eq!(extension_of(v, DEFAULT_EXTENSION), "webm");
    }

    #[test]
    fn ignores_non_urls_in_output() {
        let out = json!({"text": "hello", "n": 3, "video": "https://d.example/v.mp4"});
        let mut urls = Vec::new();
        collect_urls(&out, &mut urls);
        assert_eq!(urls, vec!["https://d.example/v.mp4"]);
    }
}
