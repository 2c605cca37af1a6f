//! The Luma adapter against the fake Dream Machine API on 127.0.0.1.

mod common;

use std::sync::Arc;

use clawcut_core::{
    OutputKind, PollOutcome, Provider, RemoteProgress, SubmitFailure, SubmitRecovery,
};
use clawcut_providers::ProviderKind;
use clawcut_test_support::fake_luma::{FakeLuma, Script, Step};
use common::*;
use serde_json::json;

const KIND: ProviderKind = ProviderKind::Luma;

async fn setup(script: Script) -> (FakeLuma, Arc<dyn Provider>) {
    let fake = FakeLuma::start(KEY).await;
    fake.script("g1", script);
    let p = provider(KIND, &fake.base_url());
    (fake, p)
}

fn running(progress: RemoteProgress) -> PollOutcome {
    PollOutcome::Running {
        progress,
        poll_after: None,
    }
}

#[tokio::test]
async fn queued_then_dreaming_then_completed_with_video_and_thumbnail() {
    let (fake, p) = setup(Script::succeeds_after(2).with_thumbnail(2048)).await;
    assert_eq!(p.poll("g1").await.unwrap(), running(RemoteProgress::Queued));
    assert_eq!(
        p.poll("g1").await.unwrap(),
        running(RemoteProgress::Running)
    );
    let PollOutcome::Succeeded { video, thumbnail } = p.poll("g1").await.unwrap() else {
        panic!("expected success");
    };
    assert_eq!(video.url, fake.video_url("g1"));
    assert_eq!(video.extension, "mp4");
    let thumbnail = thumbnail.expect("assets.image is the thumbnail");
    assert_eq!(thumbnail.kind, OutputKind::Thumbnail);
    assert_eq!(thumbnail.url, fake.thumbnail_url("g1"));
    assert_eq!(thumbnail.extension, "jpg");
    assert_eq!(
        download(KIND, &fake.base_url(), &video).await,
        fake.content("g1")
    );
    assert_eq!(
        download(KIND, &fake.base_url(), &thumbnail).await,
        fake.thumbnail("g1")
    );
}

#[tokio::test]
async fn without_an_image_asset_there_is_no_thumbnail() {
    let (_fake, p) = setup(Script::default()).await;
    let PollOutcome::Succeeded { thumbnail, .. } = p.poll("g1").await.unwrap() else {
        panic!("expected success");
    };
    assert_eq!(thumbnail, None);
}

#[tokio::test]
async fn failed_carries_failure_reason() {
    let (_fake, p) = setup(Script::fails_after(1, "prompt rejected")).await;
    assert_eq!(p.poll("g1").await.unwrap(), running(RemoteProgress::Queued));
    assert_eq!(
        p.poll("g1").await.unwrap(),
        PollOutcome::Failed {
            reason: "prompt rejected".into()
        }
    );
}

#[tokio::test]
async fn gone_assets_download_as_gone_and_a_missing_one_is_gone() {
    let (fake, p) = setup(Script::step(Step::OutputsGone)).await;
    let PollOutcome::Succeeded { video, .. } = p.poll("g1").await.unwrap() else {
        panic!("expected success");
    };
    assert!(download_is_gone(KIND, &fake.base_url(), &video).await);
    let raw = json!({"id": "g1", "state": "completed", "assets": {"video": null}}).to_string();
    fake.script(
        "g1",
        Script::step(Step::Raw {
            status: 200,
            body: raw,
        }),
    );
    assert!(matches!(
        p.poll("g1").await.unwrap(),
        PollOutcome::OutputsGone { .. }
    ));
}

#[tokio::test]
async fn error_answers_are_classified() {
    let (fake, p) = setup(Script::default()).await;
    check_error_answers(&p, "g1", |s| fake.script("g1", s)).await;
    check_hostile_bodies(&p, "g1", |s| fake.script("g1", s)).await;
    let p = impatient(KIND, &fake.base_url());
    check_hang_is_timeout(&p, "g1", |s| fake.script("g1", s)).await;
}

#[tokio::test]
async fn submit_sends_lumas_shape_with_the_callback() {
    let fake = FakeLuma::start(KEY).await;
    let p = provider(KIND, &fake.base_url());
    assert_eq!(p.submit_recovery(), SubmitRecovery::Unknowable);
    let mut req = submit_request(
        json!({"prompt": "a cat", "model": "ray-2", "seconds": 5, "size": "1920x1080", "resolution": "1080p"}),
        "key-1",
    );
    req.webhook_url = Some("https://hooks.example/webhooks/luma?token=t".into());
    let id = p.submit(&req).await.unwrap();
    let seen = fake.last_create().unwrap();
    assert_eq!(seen.job_id, id);
    assert_eq!(
        seen.body,
        json!({
            "prompt": "a cat", "model": "ray-2", "resolution": "1080p", "duration": "5s",
            "aspect_ratio": "16:9", "callback_url": "https://hooks.example/webhooks/luma?token=t",
        })
    );
    assert_eq!(fake.creates("a cat"), 1);
    assert!(matches!(
        p.poll(&id).await.unwrap(),
        PollOutcome::Succeeded { .. }
    ));
}

#[tokio::test]
async fn submit_failures_are_classified() {
    let fake = FakeLuma::start(KEY).await;
    let p = provider(KIND, &fake.base_url());
    // Luma requires `model`; a request without one never reaches the fake.
    let req = submit_request(json!({"prompt": "a cat", "model": "ray-2"}), "k");
    check_create_failures(&p, &req, |s| fake.script_creates(s)).await;
    check_create_lost(&p, &req, |n| fake.lose_next_creates(n)).await;
    check_create_timeout(&impatient(KIND, &fake.base_url()), &req, |s| {
        fake.script_creates(s)
    })
    .await;
    assert_eq!(fake.creates("a cat"), 3);
    let base = fake.base_url();
    fake.shutdown().await;
    check_create_refused(KIND, &base, &req, "g1").await;
}

#[tokio::test]
async fn webhook_bodies_name_the_generation() {
    let p = provider(KIND, "http://127.0.0.1:9");
    let body =
        json!({"id": "g-123", "state": "completed", "assets": {"video": "https://cdn/x.mp4"}});
    assert_eq!(
        p.webhook_job_id(body.to_string().as_bytes()),
        Some("g-123".into())
    );
    assert_eq!(p.webhook_job_id(b"not json"), None);
    assert_eq!(p.webhook_job_id(br#"{"id": 7}"#), None);
    assert_eq!(p.webhook_job_id(br#"{"id": ".."}"#), None);
    assert_eq!(
        p.verify_webhook(&[], b"{}", "s", 0),
        clawcut_core::WebhookAuth::Unsigned
    );
}

/// Issue 9: Luma creates with `POST /dream-machine/v1/generations/video`
/// (lumaai-python `VideoResource.create`); `/generations` only lists, so the
/// old path spent nothing and failed every submit.
#[tokio::test]
async fn create_posts_to_generations_video() {
    let fake = FakeLuma::start(KEY).await;
    let p = provider(KIND, &fake.base_url());
    let req = submit_request(json!({"prompt": "a cat", "model": "ray-2"}), "k");
    let id = p.submit(&req).await.unwrap();
    let seen = fake.last_create().unwrap();
    assert_eq!(seen.path, "/dream-machine/v1/generations/video");
    assert_eq!(seen.job_id, id);
    // The list endpoint refuses a create, as Luma's does.
    let resp = reqwest::Client::new()
        .post(format!("{}/dream-machine/v1/generations", fake.base_url()))
        .bearer_auth(KEY)
        .json(&json!({"prompt": "a cat", "model": "ray-2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(fake.creates("a cat"), 1);
}

/// Issue 9, item 4: `model` is required by Luma's API; without it the job
/// fails at once, naming the field, and no create is sent.
#[tokio::test]
async fn a_request_without_model_is_refused_before_any_create() {
    let fake = FakeLuma::start(KEY).await;
    let p = provider(KIND, &fake.base_url());
    for request in [
        json!({"prompt": "a cat"}),
        json!({"prompt": "a cat", "model": ""}),
        json!({"prompt": "a cat", "model": 2}),
    ] {
        let e = p
            .submit(&submit_request(request.clone(), "k"))
            .await
            .unwrap_err();
        assert_eq!(failure(&e), SubmitFailure::Rejected, "{request}: {e:?}");
        assert!(e.message.contains("`model`"), "{e:?}");
    }
    assert_eq!(fake.creates("a cat"), 0);
    assert_eq!(fake.total_requests(), 0);
}

/// No documented cancel (see the adapter's module doc): nothing is sent and
/// only the local cancel happens.
#[tokio::test]
async fn cancel_sends_nothing() {
    let (fake, p) = setup(Script::default()).await;
    let before = fake.total_requests();
    assert_eq!(
        p.cancel("g1").await.unwrap(),
        clawcut_core::CancelAnswer::NotSupported
    );
    assert_eq!(fake.total_requests(), before);
    assert_eq!(fake.cancels("g1"), 0);
}
