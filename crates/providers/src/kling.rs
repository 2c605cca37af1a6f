//! Kling's API (`GET /v1/videos/text2video/{id}`), authenticated with a
//! short-lived HS256 JWT made from the access key (`api_key`) and secret key
//! (`api_secret`); see [`crate::sign::KlingJwt`].
//!
//! Every answer is `{code, message, request_id, data}`; a non-zero `code` is
//! an error whatever the HTTP status, mapped from Kling's documented codes
//! (Kling API reference, "General Information" → "Error Code",
//! app.klingai.com/global/dev/document-api/apiReference/commonInfo,
//! checked 2026-12-01):
//! 1000–1004 authentication (401) → `Unauthorized`; 1100 account exception,
//! 1101 account in arrears, 1102 resource pack used up or expired (all
//! 429), 1103 no access to the requested API or model (403) and 1304 the
//! IP allow-list (429) → `Account` (the account cannot be served whatever
//! the job; the same job succeeds after a top-up, so it must not fail);
//! 1302/1303 (too fast, over the concurrency of the resource pack) →
//! `RateLimited`; 1203 (resource does not exist) → `NotFound`; other
//! 1200s–1300s (parameters, platform and content policy) → `Client`; 5000s
//! → `Server`. An unknown non-zero code on a 2xx is `Malformed` (a create
//! may have happened). The HTTP status is kept in the kind when it is in
//! the documented range.
//!
//! Hosts: the API is `api-singapore.klingai.com` (global); videos are on
//! Kling's CDN (`*.klingai.com`, e.g. `cdn.klingai.com`), not the API host,
//! so the sample config allows `*.klingai.com`.
//!
//! Cancel: Kling's reference documents no way to cancel or delete a task
//! (checked 2026-12-01), so [`Provider::cancel`] is the trait's default:
//! only the local cancel happens.
//!
//! States: `submitted`, `processing`, `succeed` (`task_result.videos[0].url`,
//! a public CDN URL, kept 30 days), `failed` (`task_status_msg`).
//!
//! Create: `POST /v1/videos/text2video` `{model_name?, prompt, duration?,
//! aspect_ratio?, mode?, negative_prompt?, external_task_id, callback_url?}`
//! (`prompt` is the one required field, and every request has one;
//! `model_name` defaults to Kling's oldest model when absent, `duration` is
//! the string `"5"` or `"10"`),
//! with the idempotency key as `external_task_id`. That is Kling's own
//! reference, which the single-task query accepts in place of the task id,
//! so a crash mid-create is recovered by [`Provider::lookup`]: found → its
//! task id; Kling's "resource does not exist" (code 1203) → absent. Anything
//! else (a bare 404 without Kling's envelope, 5xx) is an error, never
//! "absent": a wrong answer there would submit the job twice.
//! Webhooks: the callback body is the task JSON (`task_id`), unsigned.

use std::time::SystemTime;

use async_trait::async_trait;
use clawcut_core::{
    Lookup, PollOutcome, Provider, ProviderError, ProviderErrorKind, RemoteProgress,
    SubmitRecovery, SubmitRequest,
};
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::http::{ApiClient, check_job_id, created_id, retry_after, truncate_chars, webhook_id};
use crate::outcome::{is_url, public_video, reason, running};
use crate::request::JobRequest;

/// Kling's "resource does not exist".
const CODE_NOT_FOUND: i64 = 1203;

pub(crate) struct Kling {
    name: String,
    api: ApiClient,
}

/// A failed call, with Kling's own code when the answer had one (a lookup
/// must tell Kling's "does not exist" from any other 404).
struct KlingError {
    code: Option<i64>,
    error: ProviderError,
}

impl From<KlingError> for ProviderError {
    fn from(e: KlingError) -> Self {
        e.error
    }
}

impl From<ProviderError> for KlingError {
    fn from(error: ProviderError) -> Self {
        KlingError { code: None, error }
    }
}

impl Kling {
    pub(crate) fn new(name: String, api: ApiClient) -> Self {
        Kling { name, api }
    }

    /// One call; answers `data` of a `code: 0` answer, else the classified
    /// error.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<(Value, Vec<u8>), KlingError> {
        let raw = self
            .api
            .send(method, self.api.endpoint(segments), body, &[])
            .await?;
        let json: Option<Value> = serde_json::from_slice(&raw.body).ok();
        let code = json
            .as_ref()
            .and_then(|j| j.get("code"))
            .and_then(Value::as_i64);
        let ok = (200..300).contains(&raw.status);
        match (code, json) {
            (Some(0), Some(mut json)) if ok => Ok((json["data"].take(), raw.body)),
            (Some(code), _) if code != 0 => {
                let kind = match code {
                    1000..=1004 => {
                        ProviderErrorKind::Unauthorized(pick(raw.status, 401..=403, 401))
                    }
                    // Account problems, not the job's: the same request
                    // succeeds after a top-up or an allow-list change.
                    1100..=1103 | 1304 => {
                        ProviderErrorKind::Account(pick(raw.status, 400..=499, 429))
                    }
                    1302 | 1303 => ProviderErrorKind::RateLimited,
                    CODE_NOT_FOUND => ProviderErrorKind::NotFound,
                    1100..=1399 => ProviderErrorKind::Client(pick(raw.status, 400..=499, 400)),
                    5000..=5999 => ProviderErrorKind::Server(pick(raw.status, 500..=599, 500)),
                    _ if ok => ProviderErrorKind::Malformed,
                    _ => {
                        self.api
                            .error_from_status(raw.status, &raw.headers, &[])
                            .kind
                    }
                };
                let retry = match kind {
                    ProviderErrorKind::RateLimited | ProviderErrorKind::Server(_) => {
                        retry_after(&raw.headers, SystemTime::now())
                    }
                    _ => None,
                };
                Err(KlingError {
                    code: Some(code),
                    error: ProviderError {
                        kind,
                        retry_after: retry,
                        message: format!(
                            "http {}: kling code {code}: {}",
                            raw.status,
                            self.api.excerpt(&raw.body)
                        ),
                    },
                })
            }
            _ if !ok => Err(self
                .api
                .error_from_status(raw.status, &raw.headers, &raw.body)
                .into()),
            _ => Err(self
                .api
                .malformed(format!(
                    "answer without code 0 and data: {}",
                    self.api.excerpt(&raw.body)
                ))
                .into()),
        }
    }
}

/// The HTTP status when it is in `range` (Kling pairs codes with statuses),
/// else `default`.
fn pick(status: u16, range: std::ops::RangeInclusive<u16>, default: u16) -> u16 {
    if range.contains(&status) {
        status
    } else {
        default
    }
}

#[async_trait]
impl Provider for Kling {
    fn name(&self) -> &str {
        &self.name
    }

    async fn poll(&self, provider_job_id: &str) -> Result<PollOutcome, ProviderError> {
        check_job_id(provider_job_id)?;
        let (task, body) = self
            .call(
                Method::GET,
                &["v1", "videos", "text2video", provider_job_id],
                None,
            )
            .await?;
        let status = task.get("task_status").and_then(Value::as_str);
        match status {
            Some("submitted") => Ok(running(RemoteProgress::Queued)),
            Some("processing") => Ok(running(RemoteProgress::Running)),
            Some("failed") => Ok(PollOutcome::Failed {
                reason: reason(&[task.get("task_status_msg").unwrap_or(&Value::Null)]),
            }),
            Some("succeed") => {
                let url = task
                    .pointer("/task_result/videos/0/url")
                    .and_then(Value::as_str);
                match url {
                    Some(url) if is_url(url) => Ok(PollOutcome::Succeeded {
                        video: public_video(url),
                        thumbnail: None,
                    }),
                    _ => Err(self.api.malformed(format!(
                        "succeeded task has no video url: {}",
                        self.api.excerpt(&body)
                    ))),
                }
            }
            Some(other) => Err(self.api.malformed(format!(
                "unknown task status {:?}",
                truncate_chars(other, 60)
            ))),
            None => Err(self.api.malformed(format!(
                "task without task_status: {}",
                self.api.excerpt(&body)
            ))),
        }
    }

    fn submit_recovery(&self) -> SubmitRecovery {
        SubmitRecovery::LookupByReference
    }

    async fn submit(&self, req: &SubmitRequest) -> Result<String, ProviderError> {
        let job = JobRequest::parse(req)?;
        let mut body = Map::new();
        body.insert("prompt".into(), json!(job.prompt()));
        if let Some(model) = job.str("model") {
            body.insert("model_name".into(), json!(model));
        }
        if let Some(seconds) = job.seconds()? {
            // Kling documents duration as a string ("5", "10").
            body.insert("duration".into(), json!(seconds.to_string()));
        }
        if let Some(ratio) = job.aspect_ratio()? {
            body.insert("aspect_ratio".into(), json!(ratio));
        }
        for extra in ["mode", "negative_prompt"] {
            if let Some(v) = job.str(extra) {
                body.insert(extra.into(), json!(v));
            }
        }
        body.insert("external_task_id".into(), json!(req.idempotency_key));
        if let Some(webhook) = &req.webhook_url {
            body.insert("callback_url".into(), json!(webhook));
        }
        let (data, raw) = self
            .call(
                Method::POST,
                &["v1", "videos", "text2video"],
                Some(&Value::Object(body)),
            )
            .await?;
        created_id(&self.api, data.get("task_id"), "data.task_id", &raw)
    }

    async fn lookup(&self, req: &SubmitRequest) -> Result<Lookup, ProviderError> {
        check_job_id(&req.idempotency_key)?;
        let found = self
            .call(
                Method::GET,
                &["v1", "videos", "text2video", &req.idempotency_key],
                None,
            )
            .await;
        match found {
            Ok((data, raw)) => {
                // A task id equal to our reference would be a coincidence;
                // make sure the task is the one we named.
                let external = data
                    .pointer("/task_info/external_task_id")
                    .and_then(Value::as_str);
                if external.is_some_and(|e| e != req.idempotency_key) {
                    return Err(self.api.malformed(format!(
                        "lookup by external_task_id answered another task: {}",
                        self.api.excerpt(&raw)
                    )));
                }
                created_id(&self.api, data.get("task_id"), "data.task_id", &raw).map(Lookup::Found)
            }
            Err(KlingError {
                code: Some(CODE_NOT_FOUND),
                ..
            }) => Ok(Lookup::Absent),
            Err(e) => Err(e.into()),
        }
    }

    fn webhook_job_id(&self, body: &[u8]) -> Option<String> {
        webhook_id(body, &["task_id"]).or_else(|| webhook_id(body, &["data", "task_id"]))
    }
}
