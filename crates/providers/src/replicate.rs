//! Replicate predictions (`GET /v1/predictions/{id}`).
//!
//! Outputs are plain URLs (usually on `replicate.delivery`), fetched without
//! the key; the operator allows those hosts with `allowed_download_hosts`.
//! Replicate deletes API prediction outputs after an hour (`data_removed`).

use async_trait::async_trait;
use clawcut_core::{
    DownloadSpec, OutputKind, PollOutcome, Provider, ProviderError, RemoteProgress,
};
use serde::Deserialize;
use serde_json::Value;

use crate::http::{ApiClient, check_job_id, excerpt, truncate_chars};

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
                            extension: extension_of(url),
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

fn running(progress: RemoteProgress) -> PollOutcome {
    // Replicate gives no poll hint; the daemon's backoff decides.
    PollOutcome::Running {
        progress,
        poll_after: None,
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

fn extension_of(url: &str) -> String {
    path_extension(url)
        .filter(|e| (1..=5).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_else(|| DEFAULT_EXTENSION.into())
}

/// The lowercased extension of the URL's last path segment, if any.
fn path_extension(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let last = parsed.path_segments()?.next_back()?.to_owned();
    let (_, ext) = last.rsplit_once('.')?;
    Some(ext.to_ascii_lowercase())
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
        assert_eq!(extension_of(v), "webm");
        assert_eq!(extension_of("https://d.example/noext"), "mp4");
        assert_eq!(extension_of("https://d.example/x.we/ird"), "mp4");
        assert_eq!(extension_of("https://d.example/x.%2F..%2Fetc"), "mp4");
    }

    #[test]
    fn ignores_non_urls_in_output() {
        let out = json!({"text": "hello", "n": 3, "video": "https://d.example/v.mp4"});
        let mut urls = Vec::new();
        collect_urls(&out, &mut urls);
        assert_eq!(urls, vec!["https://d.example/v.mp4"]);
    }
}
