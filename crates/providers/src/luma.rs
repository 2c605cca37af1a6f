//! Luma Dream Machine (`GET /dream-machine/v1/generations/{id}`, bearer key).
//!
//! States: `queued`, `dreaming` (running), `completed` (`assets.video`, and
//! `assets.image` as the thumbnail when present; both presigned CDN URLs
//! fetched without the key), `failed` (`failure_reason`). Luma documents no
//! cancel state and no output retention.
//!
//! Create: `POST /dream-machine/v1/generations` with `{prompt, model,
//! resolution?, duration?, aspect_ratio?, callback_url?}`; `duration` is
//! Luma's `"5s"` spelling of `seconds`, `resolution` and `aspect_ratio` are
//! passed through (or `aspect_ratio` derived from `size`). Luma has no
//! idempotency key and no lookup: a crash mid-create is unknowable.
//! Webhooks: the callback body is the generation JSON (its `id` names the
//! job), unsigned, so the daemon checks a secret in the URL.

use async_trait::async_trait;
use clawcut_core::{PollOutcome, Provider, ProviderError, RemoteProgress, SubmitRequest};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http::{ApiClient, check_job_id, created_id, truncate_chars, webhook_id};
use crate::outcome::{is_url, public_thumbnail, public_video, reason, running};
use crate::request::JobRequest;

pub(crate) struct Luma {
    name: String,
    api: ApiClient,
}

#[derive(Deserialize)]
struct Generation {
    state: String,
    #[serde(default)]
    failure_reason: Value,
    #[serde(default)]
    assets: Option<Assets>,
}

#[derive(Deserialize)]
struct Assets {
    #[serde(default)]
    video: Option<String>,
    #[serde(default)]
    image: Option<String>,
}

impl Luma {
    pub(crate) fn new(name: String, api: ApiClient) -> Self {
        Luma { name, api }
    }
}

#[async_trait]
impl Provider for Luma {
    fn name(&self) -> &str {
        &self.name
    }

    async fn poll(&self, provider_job_id: &str) -> Result<PollOutcome, ProviderError> {
        check_job_id(provider_job_id)?;
        let url = self
            .api
            .endpoint(&["dream-machine", "v1", "generations", provider_job_id]);
        let resp = self.api.get(url).await?;
        let g: Generation = self.api.parse_json(&resp.body)?;
        match g.state.as_str() {
            "queued" => Ok(running(RemoteProgress::Queued)),
            "dreaming" => Ok(running(RemoteProgress::Running)),
            "failed" => Ok(PollOutcome::Failed {
                reason: reason(&[&g.failure_reason]),
            }),
            "completed" => {
                let assets = g.assets.as_ref();
                let video = assets.and_then(|a| a.video.as_deref());
                let image = assets
                    .and_then(|a| a.image.as_deref())
                    .filter(|u| is_url(u));
                match video {
                    Some(url) if is_url(url) => Ok(PollOutcome::Succeeded {
                        video: public_video(url),
                        thumbnail: image.map(public_thumbnail),
                    }),
                    None => Ok(PollOutcome::OutputsGone {
                        reason: "generation completed but has no video asset".into(),
                    }),
                    Some(_) => Err(self.api.malformed(format!(
                        "completed generation has no usable video url: {}",
                        self.api.excerpt(&resp.body)
                    ))),
                }
            }
            other => Err(self.api.malformed(format!(
                "unknown generation state {:?}",
                truncate_chars(other, 60)
            ))),
        }
    }

    async fn submit(&self, req: &SubmitRequest) -> Result<String, ProviderError> {
        let job = JobRequest::parse(req)?;
        let mut body = Map::new();
        body.insert("prompt".into(), json!(job.prompt()));
        if let Some(model) = job.str("model") {
            body.insert("model".into(), json!(model));
        }
        if let Some(resolution) = job.str("resolution") {
            body.insert("resolution".into(), json!(resolution));
        }
        if let Some(seconds) = job.seconds()? {
            body.insert("duration".into(), json!(format!("{seconds}s")));
        }
        if let Some(ratio) = job.aspect_ratio()? {
            body.insert("aspect_ratio".into(), json!(ratio));
        }
        if let Some(webhook) = &req.webhook_url {
            body.insert("callback_url".into(), json!(webhook));
        }
        let url = self.api.endpoint(&["dream-machine", "v1", "generations"]);
        let resp = self.api.post_json(url, &Value::Object(body), &[]).await?;
        let g: Value = self.api.parse_json(&resp.body)?;
        created_id(&self.api, g.get("id"), "id", &resp.body)
    }

    fn webhook_job_id(&self, body: &[u8]) -> Option<String> {
        webhook_id(body, &["id"])
    }
}
