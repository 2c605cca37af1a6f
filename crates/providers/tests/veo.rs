//! The Veo (Gemini API) adapter against the fake on 127.0.0.1.

mod common;

use std::sync::Arc;

use clawcut_core::{PollOutcome, Provider, ProviderErrorKind, RemoteProgress, SubmitFailure};
use clawcut_providers::{
    DownloadPolicy, Downloader, ProviderConfig, ProviderKind, ProvidersError, build_provider,
};
use clawcut_test_support::fake_veo::{FakeVeo, Script, Step};
use common::*;
use serde_json::json;

const KIND: ProviderKind = ProviderKind::Veo;
const MODEL: &str = "veo-3.0-generate-001";

async fn setup(script: Script) -> (FakeVeo, Arc<dyn Provider>, String) {
    let fake = FakeVeo::start(KEY).await;
    let name = FakeVeo::operation_name(MODEL, "op1");
    fake.script(&name, script);
    let p = provider(KIND, &fake.base_url());
    (fake, p, name)
}

#[tokio::test]
async fn not_done_then_done_with_a_video_fetched_with_the_key() {
    let (fake, p, name) = setup(Script::succeeds_after(2)).await;
    for _ in 0..2 {
        assert_eq!(
            p.poll(&name).await.unwrap(),
            PollOutcome::Running {
                progress: RemoteProgress::Running,
                poll_after: None
            }
        );
    }
    let PollOutcome::Succeeded { video, thumbnail } = p.poll(&name).await.unwrap() else {
        panic!("expected success");
    };
    assert_eq!(video.url, fake.video_url(&name));
    assert!(video.url.ends_with(":download?alt=media"), "{}", video.url);
    assert_eq!(video.extension, "mp4");
    assert_eq!(
        video.headers,
        vec![("x-goog-api-key".to_owned(), KEY.to_owned())]
    );
    assert_eq!(thumbnail, None);
    assert_eq!(
        download(KIND, &fake.base_url(), &video).await,
        fake.content(&name)
    );
}

#[tokio::test]
async fn errors_filters_and_cancellation() {
    let (fake, p, name) = setup(Script::fails_after(0, "internal error")).await;
    assert_eq!(
        p.poll(&name).await.unwrap(),
        PollOutcome::Failed {
            reason: "internal error (13)".into()
        }
    );
    fake.script(
        &name,
        Script::step(Step::Filtered("celebrity likeness".into())),
    );
    let PollOutcome::Failed { reason } = p.poll(&name).await.unwrap() else {
        panic!("expected failure");
    };
    assert!(
        reason.contains("safety") && reason.contains("celebrity likeness"),
        "{reason}"
    );
    fake.script(&name, Script::step(Step::Canceled));
    assert!(matches!(
        p.poll(&name).await.unwrap(),
        PollOutcome::Canceled { .. }
    ));
    fake.script(&name, Script::step(Step::OutputsGone));
    let PollOutcome::Succeeded { video, .. } = p.poll(&name).await.unwrap() else {
        panic!("expected success");
    };
    assert!(download_is_gone(KIND, &fake.base_url(), &video).await);
}

#[tokio::test]
async fn error_answers_are_classified() {
    let (fake, p, name) = setup(Script::default()).await;
    check_error_answers(&p, &name, |s| fake.script(&name, s)).await;
    check_hostile_bodies(&p, &name, |s| fake.script(&name, s)).await;
    check_hang_is_timeout(&impatient(KIND, &fake.base_url()), &name, |s| {
        fake.script(&name, s)
    })
    .await;
}

#[tokio::test]
async fn a_wrong_key_is_unauthorized_not_a_rejection() {
    let (fake, _, name) = setup(Script::default()).await;
    let mut cfg = config(KIND, &fake.base_url());
    cfg.api_key = "AIza-wrong".into();
    let p = build_provider(&cfg).unwrap();
    assert_eq!(
        p.poll(&name).await.unwrap_err().kind,
        ProviderErrorKind::Unauthorized(400)
    );
    let req = submit_request(json!({"prompt": "x", "model": MODEL}), "k");
    let e = p.submit(&req).await.unwrap_err();
    assert_eq!(failure(&e), SubmitFailure::NotCreated, "{e:?}");
}

#[tokio::test]
async fn operation_names_cannot_escape_v1beta() {
    let (fake, p, _) = setup(Script::default()).await;
    for id in ["op", "models/../x", "models//x", "/models/x"] {
        assert_eq!(
            p.poll(id).await.unwrap_err().kind,
            ProviderErrorKind::NotFound,
            "{id}"
        );
    }
    assert_eq!(fake.total_requests(), 0);
}

#[tokio::test]
async fn submit_starts_a_long_running_operation() {
    let fake = FakeVeo::start(KEY).await;
    let p = provider(KIND, &fake.base_url());
    let req = submit_request(
        json!({"prompt": "a cat", "model": format!("models/{MODEL}"), "seconds": 8, "size": "720x1280", "negative_prompt": "dogs"}),
        "key-1",
    );
    let name = p.submit(&req).await.unwrap();
    let seen = fake.last_create().unwrap();
    assert_eq!(seen.job_id, name);
    assert_eq!(
        seen.path,
        format!("/v1beta/models/{MODEL}:predictLongRunning")
    );
    assert_eq!(
        seen.body,
        json!({"instances": [{"prompt": "a cat"}], "parameters": {"aspectRatio": "9:16", "durationSeconds": 8, "negativePrompt": "dogs"}})
    );
    assert_eq!(seen.header("x-goog-api-key"), Some(KEY));
    assert_eq!(fake.creates("a cat"), 1);
    assert!(matches!(
        p.poll(&name).await.unwrap(),
        PollOutcome::Succeeded { .. }
    ));
}

#[tokio::test]
async fn submit_failures_are_classified() {
    let fake = FakeVeo::start(KEY).await;
    let p = provider(KIND, &fake.base_url());
    let req = submit_request(json!({"prompt": "a cat", "model": MODEL}), "k");
    check_create_failures(&p, &req, |s| fake.script_creates(s)).await;
    check_create_lost(&p, &req, |n| fake.lose_next_creates(n)).await;
    check_create_timeout(&impatient(KIND, &fake.base_url()), &req, |s| {
        fake.script_creates(s)
    })
    .await;
    assert_eq!(fake.creates("a cat"), 3);
    let e = p
        .submit(&submit_request(json!({"prompt": "x"}), "k"))
        .await
        .unwrap_err();
    assert_eq!(failure(&e), SubmitFailure::Rejected);
    let base = fake.base_url();
    fake.shutdown().await;
    check_create_refused(KIND, &base, &req, &FakeVeo::operation_name(MODEL, "op1")).await;
}

fn done_with_uri(uri: &str) -> Script {
    let body = json!({
        "name": "x", "done": true,
        "response": {"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
            "generateVideoResponse": {"generatedSamples": [{"video": {"uri": uri}}]}},
    });
    Script::step(Step::Raw {
        status: 200,
        body: body.to_string(),
    })
}

/// Issue 9: the key goes only to Google's own origin (scheme, host and
/// port of the base URL). A video URI anywhere else was fetched with the
/// key; now it gets no credentials.
#[tokio::test]
async fn the_key_is_attached_only_on_the_api_origin() {
    let (fake, p, name) = setup(Script::default()).await;
    let port = fake.addr().port();
    let own = format!("http://127.0.0.1:{port}/v1beta/files/k:download?alt=media");
    fake.script(&name, done_with_uri(&own));
    let PollOutcome::Succeeded { video, .. } = p.poll(&name).await.unwrap() else {
        panic!("expected success");
    };
    assert_eq!(
        video.headers,
        vec![("x-goog-api-key".to_owned(), KEY.to_owned())]
    );
    for elsewhere in [
        "https://storage.example/v.mp4".to_owned(),
        // Same host, other port or scheme: another origin.
        format!(
            "http://127.0.0.1:{}/v1beta/files/k:download",
            port.wrapping_add(1)
        ),
        format!("https://127.0.0.1:{port}/v1beta/files/k:download"),
        format!("http://localhost:{port}/v1beta/files/k:download"),
    ] {
        fake.script(&name, done_with_uri(&elsewhere));
        let PollOutcome::Succeeded { video, .. } = p.poll(&name).await.unwrap() else {
            panic!("expected success");
        };
        assert!(video.headers.is_empty(), "{elsewhere}: {:?}", video.headers);
        assert!(
            !format!("{video:?}").contains(KEY),
            "{elsewhere}: the key is nowhere in the spec"
        );
    }
}

/// Issue 9: python-genai follows the file download's redirects; here the
/// final host must be allowed, and the key must not follow the redirect off
/// Google's origin.
#[tokio::test]
async fn a_redirected_download_needs_an_allowed_host_and_drops_the_key() {
    let (fake, p, name) = setup(Script::default()).await;
    let PollOutcome::Succeeded { video, .. } = p.poll(&name).await.unwrap() else {
        panic!("expected success");
    };
    assert_eq!(
        video.headers.len(),
        1,
        "the API origin's file: with the key"
    );
    // The same server under another name: another origin, and a host only
    // the policy can refuse.
    let storage = format!("http://localhost:{}", fake.addr().port());
    fake.redirect_files_to(Some(&storage));
    let mut cfg = config(KIND, &fake.base_url());
    let media = tempfile::tempdir().unwrap();
    let fetch = |cfg: ProviderConfig| {
        let video = video.clone();
        let dir = media.path().to_owned();
        async move {
            Downloader::new(std::time::Duration::from_secs(5))
                .unwrap()
                .download(
                    &video,
                    &DownloadPolicy::for_provider(&cfg),
                    &dir,
                    &dir.join("v.mp4"),
                    &limits(1 << 30),
                    |_| {},
                )
                .await
        }
    };
    let e = fetch(cfg.clone()).await.unwrap_err();
    assert!(
        matches!(&e, ProvidersError::HostNotAllowed { host } if host == "localhost"),
        "{e:?}"
    );
    // Allowed: followed, and the storage host (which refuses any request
    // carrying the key) serves it.
    // With its port: a bare host allows only the scheme's default one.
    cfg.allowed_download_hosts = vec![format!("localhost:{}", fake.addr().port())];
    let got = fetch(cfg).await.unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), fake.content(&name));
}

/// No documented cancel (see the adapter's module doc): nothing is sent and
/// only the local cancel happens.
#[tokio::test]
async fn cancel_sends_nothing() {
    let (fake, p, name) = setup(Script::default()).await;
    let before = fake.total_requests();
    assert_eq!(
        p.cancel(&name).await.unwrap(),
        clawcut_core::CancelAnswer::NotSupported
    );
    assert_eq!(fake.total_requests(), before);
    assert_eq!(fake.cancels(&name), 0);
}
