//! Luma Dream Machine (`GET /dream-machine/v1/generations/{id}`, bearer key).
//!
//! What this adapter relies on, from lumalabs/lumaai-python at c00ac17
//! (generated from Luma's OpenAPI spec; checked 2026-12-01):
//!
//! - Base: `https://api.lumalabs.ai/dream-machine/v1` (`src/lumaai/_client.py`),
//!   `Authorization: Bearer <key>`.
//! - Create: `POST /generations/video` (`resources/generations/video.py`,
//!   `VideoResource.create`, and `GenerationsResource.create`, which posts
//!   to the same path); `/generations` itself only lists (GET). (Luma's
//!   older "Errors" page, docs.lumalabs.ai/docs/errors, still names
//!   `/generations` for creates; the SDK generated from the current
//!   OpenAPI spec is taken as the truth.) Body
//!   `{model, prompt, aspect_ratio?, duration?, resolution?, callback_url?}`
//!   (`types/generations/video_create_params.py`): `model` is required
//!   (`ray-1-6`, `ray-2`, `ray-flash-2`), so a request without one is
//!   refused here, before a create is spent; `duration` is Luma's `"5s"`
//!   spelling of `seconds`; `resolution` (`540p` … `4k`) and `aspect_ratio`
//!   (`16:9`, …) are passed through, or `aspect_ratio` is derived from
//!   `size`.
//! - Poll: `GET /generations/{id}`; the `Generation` (`types/generation.py`)
//!   has `state`: `queued`, `dreaming` (running), `completed`, `failed`
//!   (`failure_reason`); `assets.video` and `assets.image` (the thumbnail)
//!   are presigned CDN URLs (`storage.cdn-luma.com`), fetched without the
//!   key. There is no canceled state and no documented retention.
//! - Errors: `{"detail": "..."}`. Luma pre-charges credits at create
//!   (docs.lumalabs.ai/docs/faq) but documents no status or message for an
//!   account without credit; a 402 would be `Account` by the shared
//!   mapping, 401/403 are `Unauthorized`.
//! - Cancel: none. The API's only other call on a generation is
//!   `DELETE /generations/{id}`, documented as "Remove a specific
//!   generation by its ID" (`GenerationsResource.delete`), not as stopping
//!   one, so it is not used as a cancel: [`Provider::cancel`] is the trait's
//!   default and only the local cancel happens.
//!
//! Luma has no idempotency key and no lookup: a crash mid-create is
//! unknowable. Webhooks: the callback body is the generation JSON (its `id`
//! names the job), sent when the generation is dreaming, completed or
//! failed, unsigned, so the daemon checks a secret in the URL.

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
        let model = job.require_str("model", "luma needs `model`, e.g. ray-2")?;
        let mut body = Map::new();
        body.insert("prompt".into(), json!(job.prompt()));
        body.insert("model".into(), json!(model));
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
        let url = self
            .api
            .endpoint(&["dream-machine", "v1", "generations", "video"]);
        let resp = self.api.post_json(url, &Value::Object(body), &[]).await?;
        let g: Value = self.api.parse_json(&resp.body)?;
        created_id(&self.api, g.get("id"), "id", &resp.body)
    }

    fn webhook_job_id(&self, body: &[u8]) -> Option<String> {
        webhook_id(body, &["id"])
    }
}
