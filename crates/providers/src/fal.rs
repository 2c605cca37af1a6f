//! fal's queue API (`queue.fal.run`), `Authorization: Key <key>`.
//!
//! What this adapter relies on (checked 2026-12-01): fal-ai/fal-js at
//! 381105e (`libs/client/src/queue.ts`, `libs/client/src/utils.ts`), fal's
//! Inference API reference (fal.ai/docs/api-reference/inference-api), its
//! queue docs, and "Request Error Types"
//! (fal.ai/docs/documentation/model-apis/request-errors).
//!
//! Provider job id format: `"{model_id}|{request_id}"`, e.g.
//! `fal-ai/veo3/fast|764cabcf-…`. fal's status, result and cancel URLs need
//! the app besides the request id, and the create answer is the only time we
//! learn both, so both are stored. The app is the model id's owner and app
//! (`fal-ai/veo3` of `fal-ai/veo3/fast`), except under the namespaces
//! `workflows` and `comfy`, whose ids have three (`workflows/owner/name`):
//! fal-js `parseEndpointId` and the queue calls that prefix
//! `{namespace}/` to `{owner}/{alias}`.
//!
//! Poll: `GET /{app}/requests/{id}/status` (`IN_QUEUE`, `IN_PROGRESS`,
//! `COMPLETED`), then on completion `GET /{app}/requests/{id}` for the
//! model's output: `video.url` (or `videos[0].url`), thumbnail from
//! `thumbnail.url` or `image.url`. A completed request failed when:
//! - its status carries an `error`;
//! - its result carries an `error`/`detail` without a video, or the result
//!   call answers 400/422 (the model refused its input: fal's model
//!   validation errors, a `detail` array);
//! - the result call answers a 5xx that is a fal *request error*: a body
//!   with `error_type` (or the `X-Fal-Error-Type` header), e.g.
//!   `request_timeout` (504), `runner_disconnected` (503). fal documents
//!   these as the final state of the request after its own retries (up to
//!   10 on a new runner), so polling again cannot change them. A 5xx
//!   without `error_type` is the gateway, not the request, and stays a
//!   transient `Server` error (fal-js retries 429/502/503/504 on the result).
//!
//! Create: `POST /{model_id}` with the request minus `model` as the model's
//! input. fal has no idempotency key and no lookup: a crash mid-create is
//! unknowable. Webhooks: `?fal_webhook=<url>`; the body is `{request_id,
//! status, payload}` and carries no model id, so [`Provider::webhook_job_id`]
//! answers the bare `request_id`: the daemon must match it against the part
//! of `provider_job_id` after the `|`. fal signs webhooks with ED25519 keys
//! from a JWKS endpoint; verifying that is out of scope, so they count as
//! unsigned (a secret in the URL authenticates them).
//!
//! Errors: `{"detail": ...}`. A key refused, or a user locked for an
//! exhausted balance, is 401/403 (`Unauthorized`, which pauses the
//! provider like any account fault); a 402 would be `Account`.
//!
//! Cancel: `PUT /{app}/requests/{id}/cancel`, the `cancel_url` fal's submit
//! answer gives, as fal-js `queue.cancel` and fal-client's
//! `SyncRequestHandle.cancel` send it (fal-ai/fal,
//! `projects/fal_client/src/fal_client/client.py`); fal's queue reference
//! ("Cancel a request", fal.ai/docs/inference-api/queue/cancel) says a
//! queued request is removed and a running one gets a cancellation signal
//! the model app may honour. Any 2xx means the request was accepted.

use async_trait::async_trait;
use clawcut_core::{
    CancelAnswer, PollOutcome, Provider, ProviderError, ProviderErrorKind, RemoteProgress,
    SubmitRequest,
};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{ApiClient, check_job_id, truncate_chars, webhook_id};
use crate::outcome::{is_url, public_thumbnail, public_video, reason, running};
use crate::request::{JobRequest, invalid_request};

/// Separates the model id from the request id in a provider job id; neither
/// contains it.
const SEPARATOR: char = '|';

pub(crate) struct Fal {
    name: String,
    api: ApiClient,
}

#[derive(Deserialize)]
struct Status {
    status: String,
    #[serde(default)]
    error: Value,
}

/// Model id namespaces whose app has three segments (`workflows/owner/name`),
/// as fal-js `parseEndpointId` has them.
const NAMESPACES: &[&str] = &["workflows", "comfy"];

/// `(app segments, request id)` from a stored id.
fn split_id(id: &str) -> Option<(Vec<&str>, &str)> {
    let (model, request) = id.split_once(SEPARATOR)?;
    let segments = model_segments(model)?;
    check_job_id(request).ok()?;
    let app_len = app_len(&segments);
    Some((segments.into_iter().take(app_len).collect(), request))
}

/// How many leading segments of a model id name its app.
fn app_len(segments: &[&str]) -> usize {
    match segments.first() {
        Some(first) if NAMESPACES.contains(first) => 3,
        _ => 2,
    }
}

/// [`split_id`], or the `NotFound` error a poll or cancel answers.
fn parse_job_id(id: &str) -> Result<(Vec<&str>, &str), ProviderError> {
    check_job_id(id)?;
    split_id(id).ok_or_else(|| {
        ProviderError::new(
            ProviderErrorKind::NotFound,
            format!(
                "fal job id {:?} is not model_id|request_id",
                truncate_chars(id, 80)
            ),
        )
    })
}

/// A model id is `owner/app[/path...]` (`namespace/owner/app[/path...]`
/// under a namespace), every segment non-empty.
fn model_segments(model: &str) -> Option<Vec<&str>> {
    let segments: Vec<&str> = model.split('/').collect();
    let ok = segments.len() >= app_len(&segments)
        && segments
            .iter()
            .all(|s| !s.is_empty() && *s != "." && *s != ".." && !s.contains(SEPARATOR));
    ok.then_some(segments)
}

impl Fal {
    pub(crate) fn new(name: String, api: ApiClient) -> Self {
        Fal { name, api }
    }

    async fn result(&self, app: &[&str], request_id: &str) -> Result<PollOutcome, ProviderError> {
        let mut path = app.to_vec();
        path.extend(["requests", request_id]);
        let raw = self
            .api
            .send(Method::GET, self.api.endpoint(&path), None, &[])
            .await?;
        match raw.status {
            // The model refused its input or raised: fal answers the result
            // call with the model's error, and no retry changes it.
            400 | 422 => {
                return Ok(PollOutcome::Failed {
                    reason: self
                        .api
                        .error_from_status(raw.status, &raw.headers, &raw.body)
                        .message,
                });
            }
            404 | 410 => {
                return Ok(PollOutcome::OutputsGone {
                    reason: format!("result no longer available (http {})", raw.status),
                });
            }
            500..=599 => {
                if let Some(error_type) = request_error_type(&raw.headers, &raw.body) {
                    let detail = serde_json::from_slice::<Value>(&raw.body)
                        .ok()
                        .and_then(|v| v.get("detail").cloned())
                        .unwrap_or(Value::Null);
                    return Ok(PollOutcome::Failed {
                        reason: reason(&[&detail, &json!(format!("({error_type})"))]),
                    });
                }
            }
            _ => {}
        }
        let resp = self.api.require_2xx(raw)?;
        let out: Value = self.api.parse_json(&resp.body)?;
        let url_at = |keys: &[&str]| -> Option<&str> {
            let mut v = &out;
            for k in keys {
                v = match k.parse::<usize>() {
                    Ok(i) => v.get(i)?,
                    Err(_) => v.get(k)?,
                };
            }
            v.as_str().filter(|u| is_url(u))
        };
        let video = url_at(&["video", "url"]).or_else(|| url_at(&["videos", "0", "url"]));
        let thumbnail = url_at(&["thumbnail", "url"]).or_else(|| url_at(&["image", "url"]));
        match video {
            Some(url) => Ok(PollOutcome::Succeeded {
                video: public_video(url),
                thumbnail: thumbnail.map(public_thumbnail),
            }),
            None if has_error(&out) => Ok(PollOutcome::Failed {
                reason: reason(&[
                    out.get("error").unwrap_or(&Value::Null),
                    out.get("detail").unwrap_or(&Value::Null),
                ]),
            }),
            None => Err(self.api.malformed(format!(
                "completed request has no video url: {}",
                self.api.excerpt(&resp.body)
            ))),
        }
    }
}

/// fal's machine-readable request error category, from the body's
/// `error_type` or the `X-Fal-Error-Type` header: present only on a
/// request that fal itself has given up on.
fn request_error_type(headers: &reqwest::header::HeaderMap, body: &[u8]) -> Option<String> {
    let clean = |s: &str| {
        let s = s.trim();
        (!s.is_empty()).then(|| truncate_chars(s, 60))
    };
    let from_body = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error_type").and_then(Value::as_str).and_then(clean));
    from_body.or_else(|| {
        headers
            .get("x-fal-error-type")
            .and_then(|v| v.to_str().ok())
            .and_then(clean)
    })
}

fn has_error(v: &Value) -> bool {
    ["error", "detail"]
        .iter()
        .any(|k| v.get(k).is_some_and(|e| !e.is_null()))
}

#[async_trait]
impl Provider for Fal {
    fn name(&self) -> &str {
        &self.name
    }

    async fn cancel(&self, provider_job_id: &str) -> Result<CancelAnswer, ProviderError> {
        let (app, request_id) = parse_job_id(provider_job_id)?;
        let mut path = app;
        path.extend(["requests", request_id, "cancel"]);
        self.api
            .send_ok(Method::PUT, self.api.endpoint(&path), None, &[])
            .await?;
        Ok(CancelAnswer::Requested)
    }

    async fn poll(&self, provider_job_id: &str) -> Result<PollOutcome, ProviderError> {
        let (app, request_id) = parse_job_id(provider_job_id)?;
        let mut path = app.clone();
        path.extend(["requests", request_id, "status"]);
        let resp = self.api.get(self.api.endpoint(&path)).await?;
        let status: Status = self.api.parse_json(&resp.body)?;
        match status.status.as_str() {
            "IN_QUEUE" => Ok(running(RemoteProgress::Queued)),
            "IN_PROGRESS" => Ok(running(RemoteProgress::Running)),
            "COMPLETED" if !status.error.is_null() => Ok(PollOutcome::Failed {
                reason: reason(&[&status.error]),
            }),
            "COMPLETED" => self.result(&app, request_id).await,
            other => Err(self.api.malformed(format!(
                "unknown request status {:?}",
                truncate_chars(other, 60)
            ))),
        }
    }

    async fn submit(&self, req: &SubmitRequest) -> Result<String, ProviderError> {
        let job = JobRequest::parse(req)?;
        let model = job.str("model").unwrap_or_default();
        let Some(segments) = model_segments(model) else {
            return Err(invalid_request(
                "fal needs `model` as its model id, e.g. fal-ai/veo3/fast",
            ));
        };
        let mut url = self.api.endpoint(&segments);
        if let Some(webhook) = &req.webhook_url {
            url.query_pairs_mut().append_pair("fal_webhook", webhook);
        }
        let input = json!(job.without(&["model"]));
        let resp = self.api.post_json(url, &input, &[]).await?;
        let answer: Value = self.api.parse_json(&resp.body)?;
        match answer.get("request_id").and_then(Value::as_str) {
            Some(id) if check_job_id(id).is_ok() && !id.contains(SEPARATOR) => {
                Ok(format!("{model}{SEPARATOR}{id}"))
            }
            _ => Err(self.api.malformed(format!(
                "create answer has no usable request_id: {}",
                self.api.excerpt(&resp.body)
            ))),
        }
    }

    fn webhook_job_id(&self, body: &[u8]) -> Option<String> {
        webhook_id(body, &["request_id"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_ids_rebuild_the_app_path() {
        let (app, id) = split_id("fal-ai/veo3/fast|abc-1").unwrap();
        assert_eq!(app, vec!["fal-ai", "veo3"]);
        assert_eq!(id, "abc-1");
        assert!(split_id("abc-1").is_none());
        assert!(split_id("fal-ai|abc").is_none());
        assert!(split_id("fal-ai//x|abc").is_none());
        assert!(split_id("fal-ai/../x|abc").is_none());
        assert!(split_id("fal-ai/x|").is_none());
        // Namespaced ids keep three segments (fal-js parseEndpointId).
        let (app, _) = split_id("workflows/acme/my-flow|abc").unwrap();
        assert_eq!(app, vec!["workflows", "acme", "my-flow"]);
        let (app, _) = split_id("comfy/acme/graph/v2|abc").unwrap();
        assert_eq!(app, vec!["comfy", "acme", "graph"]);
        assert!(split_id("workflows/acme|abc").is_none());
        // Only the first segment is a namespace.
        let (app, _) = split_id("acme/workflows/x|abc").unwrap();
        assert_eq!(app, vec!["acme", "workflows"]);
    }

    #[test]
    fn request_errors_are_told_by_error_type_in_the_body_or_the_header() {
        let mut h = reqwest::header::HeaderMap::new();
        let body = br#"{"detail":"Request timed out","error_type":"request_timeout"}"#;
        assert_eq!(
            request_error_type(&h, body).as_deref(),
            Some("request_timeout")
        );
        assert_eq!(request_error_type(&h, b"<html>bad gateway</html>"), None);
        assert_eq!(request_error_type(&h, br#"{"error_type":" "}"#), None);
        h.insert(
            "x-fal-error-type",
            reqwest::header::HeaderValue::from_static("runner_disconnected"),
        );
        assert_eq!(
            request_error_type(&h, b"").as_deref(),
            Some("runner_disconnected")
        );
    }
}
