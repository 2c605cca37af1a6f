//! Veo through the Gemini API (`generativelanguage.googleapis.com`), key in
//! `x-goog-api-key`.
//!
//! What this adapter relies on (googleapis/python-genai at 6680718,
//! checked 2026-12-01, and ai.google.dev/gemini-api/docs/video):
//!
//! - Create: `POST /v1beta/models/{model}:predictLongRunning` with
//!   `{instances: [{prompt}], parameters: {aspectRatio?, durationSeconds?,
//!   resolution?, negativePrompt?}}`; the answer is a long-running operation
//!   whose `name` (`models/…/operations/…`) is the provider job id. `model`
//!   is required (it is in the path), so a request without one is refused
//!   before anything is sent. The Gemini API has no idempotency key or
//!   lookup: a crash mid-create is unknowable. No webhooks.
//! - Poll: `GET /v1beta/{name}` (`google/genai/operations.py`,
//!   `_get_videos_operation`). `done` absent or false → running (Veo does
//!   not tell queued from running); `done` + `error` → failed; `done` +
//!   `response.generateVideoResponse.generatedSamples[0].video.uri` →
//!   succeeded (`google/genai/_operations_converters.py` reads the same
//!   paths, and `raiMediaFilteredCount`/`raiMediaFilteredReasons`; the
//!   create parameters' names are those of `models.py`,
//!   `_GenerateVideosConfig_to_mldev`). A response whose samples were all removed by the safety
//!   filters (`raiMediaFilteredReasons`) failed with those reasons; an
//!   operation cancelled (`google.rpc.Code` 1) is canceled. A wrong key
//!   comes back as 400 `API_KEY_INVALID` and is classified `Unauthorized`.
//! - Download: the URI is a Gemini file (`…/v1beta/files/{id}:download?alt=media`)
//!   that needs the key; python-genai fetches it with the key and follows
//!   redirects (`google/genai/_api_client.py`, `follow_redirects=True`;
//!   `files.py`, `Files.download`). The key is attached only when the URI
//!   is on the configured API origin (scheme, host and port of `base_url`):
//!   a URI anywhere else is fetched without it, so a response naming
//!   another host can never collect the key. The downloader checks every
//!   redirect hop against the download policy (so the final host must be
//!   allowed) and drops the key on any hop that leaves its origin. Where
//!   Google's redirect lands is not documented; a host it refuses is named
//!   in the error (add it to `allowed_download_hosts`). Videos are kept two
//!   days.
//! - Cancel: none. python-genai's operations module only gets operations
//!   (`get`, `_get_videos_operation`, `fetchPredictOperation`), and the
//!   Gemini API reference lists no `operations.cancel` for video
//!   operations, so [`Provider::cancel`] is the trait's default: only the
//!   local cancel happens.

use async_trait::async_trait;
use clawcut_core::{
    OutputKind, PollOutcome, Provider, ProviderError, ProviderErrorKind, RemoteProgress,
    SubmitRequest,
};
use serde_json::{Map, Value, json};

use crate::http::{ApiClient, check_job_id, truncate_chars};
use crate::outcome::{is_url, reason, running, spec};
use crate::request::{JobRequest, invalid_request};

pub(crate) struct Veo {
    name: String,
    api: ApiClient,
}

/// The path segments of an operation name, each non-empty and not a dot
/// segment, so a stored id can only ever name a path under `/v1beta/`.
fn name_segments(name: &str) -> Option<Vec<&str>> {
    let segments: Vec<&str> = name.split('/').collect();
    let ok = segments.len() >= 2
        && segments
            .iter()
            .all(|s| !s.is_empty() && *s != "." && *s != "..");
    ok.then_some(segments)
}

/// Google answers a wrong API key with 400 `API_KEY_INVALID`, not 401: it is
/// still our credentials, not the job, so it must not fail the job (a create
/// refused for it was certainly not created).
fn key_invalid(mut e: ProviderError) -> ProviderError {
    if e.kind == ProviderErrorKind::Client(400) && e.message.contains("API key not valid") {
        e.kind = ProviderErrorKind::Unauthorized(400);
    }
    e
}

impl Veo {
    pub(crate) fn new(name: String, api: ApiClient) -> Self {
        Veo { name, api }
    }
}

#[async_trait]
impl Provider for Veo {
    fn name(&self) -> &str {
        &self.name
    }

    async fn poll(&self, provider_job_id: &str) -> Result<PollOutcome, ProviderError> {
        check_job_id(provider_job_id)?;
        let Some(segments) = name_segments(provider_job_id) else {
            return Err(ProviderError::new(
                ProviderErrorKind::NotFound,
                format!(
                    "veo job id {:?} is not an operation name",
                    truncate_chars(provider_job_id, 80)
                ),
            ));
        };
        let mut path = vec!["v1beta"];
        path.extend(segments);
        let resp = self
            .api
            .get(self.api.endpoint(&path))
            .await
            .map_err(key_invalid)?;
        let op: Value = self.api.parse_json(&resp.body)?;
        if !op.is_object() {
            return Err(self.api.malformed(format!(
                "operation is not an object: {}",
                self.api.excerpt(&resp.body)
            )));
        }
        match op.get("done") {
            None | Some(Value::Bool(false)) | Some(Value::Null) => {
                return Ok(running(RemoteProgress::Running));
            }
            Some(Value::Bool(true)) => {}
            Some(other) => {
                return Err(self.api.malformed(format!(
                    "unknown operation done value {}",
                    truncate_chars(&other.to_string(), 60)
                )));
            }
        }
        if let Some(error) = op.get("error").filter(|e| !e.is_null()) {
            // google.rpc.Code 1: the operation was cancelled.
            if error.get("code").and_then(Value::as_i64) == Some(1) {
                return Ok(PollOutcome::Canceled {
                    reason: reason(&[error.get("message").unwrap_or(&Value::Null)]),
                });
            }
            let code = error.get("status").or_else(|| error.get("code"));
            let code = code.map(|c| {
                json!(format!(
                    "({})",
                    c.as_str().map_or_else(|| c.to_string(), str::to_owned)
                ))
            });
            return Ok(PollOutcome::Failed {
                reason: reason(&[
                    error.get("message").unwrap_or(&Value::Null),
                    code.as_ref().unwrap_or(&Value::Null),
                ]),
            });
        }
        let Some(response) = op.pointer("/response/generateVideoResponse") else {
            return Err(self.api.malformed(format!(
                "finished operation has neither error nor generateVideoResponse: {}",
                self.api.excerpt(&resp.body)
            )));
        };
        if let Some(uri) = response
            .pointer("/generatedSamples/0/video/uri")
            .and_then(Value::as_str)
            .filter(|u| is_url(u))
        {
            // The key belongs to Google's own origin only.
            let headers = if self.api.is_own_origin(uri) {
                vec![self.api.auth_header()]
            } else {
                Vec::new()
            };
            return Ok(PollOutcome::Succeeded {
                // Gemini file URIs end in `:download?alt=media`, not a file
                // name, so the extension is fixed.
                video: clawcut_core::DownloadSpec {
                    extension: "mp4".into(),
                    ..spec(OutputKind::Video, uri, headers, "mp4")
                },
                thumbnail: None,
            });
        }
        let filtered = response
            .get("raiMediaFilteredReasons")
            .filter(|r| r.as_array().is_some_and(|a| !a.is_empty()));
        match filtered {
            Some(reasons) => Ok(PollOutcome::Failed {
                reason: format!(
                    "filtered by the provider's safety checks: {}",
                    reason(
                        &reasons
                            .as_array()
                            .map(|a| a.iter().collect::<Vec<_>>())
                            .unwrap_or_default()
                    )
                ),
            }),
            None => Ok(PollOutcome::Failed {
                reason: "operation finished without a generated video".into(),
            }),
        }
    }

    async fn submit(&self, req: &SubmitRequest) -> Result<String, ProviderError> {
        let job = JobRequest::parse(req)?;
        let model = job.str("model").unwrap_or_default();
        let model = model.strip_prefix("models/").unwrap_or(model);
        if model.is_empty() || model.contains(['/', ':']) {
            return Err(invalid_request(
                "veo needs `model` as a model name, e.g. veo-3.0-generate-001",
            ));
        }
        let mut parameters = Map::new();
        if let Some(ratio) = job.aspect_ratio()? {
            parameters.insert("aspectRatio".into(), json!(ratio));
        }
        if let Some(seconds) = job.seconds()? {
            parameters.insert("durationSeconds".into(), json!(seconds));
        }
        for (from, to) in [
            ("resolution", "resolution"),
            ("negative_prompt", "negativePrompt"),
        ] {
            if let Some(v) = job.str(from) {
                parameters.insert(to.into(), json!(v));
            }
        }
        let mut body = json!({"instances": [{"prompt": job.prompt()}]});
        if !parameters.is_empty() {
            body["parameters"] = Value::Object(parameters);
        }
        let action = format!("{model}:predictLongRunning");
        let url = self.api.endpoint(&["v1beta", "models", &action]);
        let resp = self
            .api
            .post_json(url, &body, &[])
            .await
            .map_err(key_invalid)?;
        let op: Value = self.api.parse_json(&resp.body)?;
        match op.get("name").and_then(Value::as_str) {
            Some(name) if check_job_id(name).is_ok() && name_segments(name).is_some() => {
                Ok(name.to_owned())
            }
            _ => Err(self.api.malformed(format!(
                "create answer has no usable operation name: {}",
                self.api.excerpt(&resp.body)
            ))),
        }
    }
}
