//! The Runway adapter against the fake Runway API on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::time::Duration;

use clawcut_core::{
    CancelAnswer, OutputKind, PollOutcome, Provider, ProviderErrorKind, RemoteProgress,
    SubmitRecovery,
};
use clawcut_providers::ProviderKind;
use clawcut_test_support::fake_runway::{FakeRunway, Script, Step};
use common::*;
use serde_json::json;

const KIND: ProviderKind = ProviderKind::Runway;

async fn setup(script: Script) -> (FakeRunway, Arc<dyn Provider>) {
    let fake = FakeRunway::start(KEY).await;
    fake.script("t1", script);
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
async fn pending_then_running_then_succeeded_with_a_downloadable_video() {
    let (fake, p) = setup(Script::succeeds_after(2)).await;
    assert_eq!(p.poll("t1").await.unwrap(), running(RemoteProgress::Queued));
    assert_eq!(
        p.poll("t1").await.unwrap(),
        running(RemoteProgress::Running)
    );
    let PollOutcome::Succeeded { video, thumbnail } = p.poll("t1").await.unwrap() else {
        panic!("expected success");
    };
    assert_eq!(video.kind, OutputKind::Video);
    assert_eq!(video.url, fake.video_url("t1"));
    assert_eq!(video.extension, "mp4");
    assert!(video.headers.is_empty(), "presigned urls get no key");
    assert_eq!(thumbnail, None);
    assert_eq!(
        download(KIND, &fake.base_url(), &video).await,
        fake.content("t1")
    );
    assert_eq!(fake.polls("t1"), 3);
}

#[tokio::test]
async fn throttled_is_queued() {
    let raw = json!({"id": "t1", "status": "THROTTLED"}).to_string();
    let (_fake, p) = setup(Script::step(Step::Raw {
        status: 200,
        body: raw,
    }))
    .await;
    assert_eq!(p.poll("t1").await.unwrap(), running(RemoteProgress::Queued));
}

#[tokio::test]
async fn failed_and_cancelled() {
    let (fake, p) = setup(Script::fails_after(0, "Content moderation")).await;
    assert_eq!(
        p.poll("t1").await.unwrap(),
        PollOutcome::Failed {
            reason: "Content moderation (INTERNAL.BAD_OUTPUT.CODE01)".into()
        }
    );
    fake.script("t1", Script::step(Step::Canceled));
    assert!(matches!(
        p.poll("t1").await.unwrap(),
        PollOutcome::Canceled { .. }
    ));
}

#[tokio::test]
async fn expired_output_urls_download_as_gone() {
    let (fake, p) = setup(Script::step(Step::OutputsGone)).await;
    let PollOutcome::Succeeded { video, .. } = p.poll("t1").await.unwrap() else {
        panic!("expected success");
    };
    assert!(download_is_gone(KIND, &fake.base_url(), &video).await);
}

#[tokio::test]
async fn succeeded_without_output_is_gone() {
    let raw = json!({"id": "t1", "status": "SUCCEEDED", "output": []}).to_string();
    let (_fake, p) = setup(Script::step(Step::Raw {
        status: 200,
        body: raw,
    }))
    .await;
    assert!(matches!(
        p.poll("t1").await.unwrap(),
        PollOutcome::OutputsGone { .. }
    ));
}

#[tokio::test]
async fn error_answers_are_classified() {
    let (fake, p) = setup(Script::default()).await;
    check_error_answers(&p, "t1", |s| fake.script("t1", s)).await;
    check_hostile_bodies(&p, "t1", |s| fake.script("t1", s)).await;
    let p = impatient(KIND, &fake.base_url());
    check_hang_is_timeout(&p, "t1", |s| fake.script("t1", s)).await;
}

#[tokio::test]
async fn submit_sends_runways_shape_with_the_version_header() {
    let fake = FakeRunway::start(KEY).await;
    let p = provider(KIND, &fake.base_url());
    assert_eq!(p.submit_recovery(), SubmitRecovery::Unknowable);
    let req = submit_request(
        json!({"prompt": "a cat", "model": "gen4.5", "seconds": 5, "size": "1280x720"}),
        "key-1",
    );
    let id = p.submit(&req).await.unwrap();
    let seen = fake.last_create().unwrap();
    assert_eq!(seen.job_id, id);
    assert_eq!(seen.path, "/v1/text_to_video");
    assert_eq!(
        seen.body,
        json!({"promptText": "a cat", "model": "gen4.5", "ratio": "1280:720", "duration": 5})
    );
    assert_eq!(seen.header("x-runway-version"), Some("2024-11-06"));
    assert_eq!(fake.creates("a cat"), 1);
    assert!(matches!(
        p.poll(&id).await.unwrap(),
        PollOutcome::Succeeded { .. }
    ));

    let req = submit_request(
        json!({"prompt": "a dog", "model": "gen4_turbo", "ratio": "1280:720", "image": "https://img.example/x.png"}),
        "key-2",
    );
    p.submit(&req).await.unwrap();
    let seen = fake.last_create().unwrap();
    assert_eq!(seen.path, "/v1/image_to_video");
    assert_eq!(seen.body["promptImage"], "https://img.example/x.png");
}

#[tokio::test]
async fn submit_failures_are_classified() {
    let fake = FakeRunway::start(KEY).await;
    let p = provider(KIND, &fake.base_url());
    let req = submit_request(
        json!({"prompt": "a cat", "model": "gen4.5", "ratio": "1280:720", "seconds": 5}),
        "k",
    );
    check_create_failures(&p, &req, |s| fake.script_creates(s)).await;
    check_create_lost(&p, &req, |n| fake.lose_next_creates(n)).await;
    let slow = impatient(KIND, &fake.base_url());
    check_create_timeout(&slow, &req, |s| fake.script_creates(s)).await;
    // Lost, hung and malformed answers each made a job: why they are unknown.
    assert_eq!(fake.creates("a cat"), 3);
    let e = p
        .submit(&submit_request(json!({"model": "gen4_turbo"}), "k"))
        .await
        .unwrap_err();
    assert_eq!(failure(&e), clawcut_core::SubmitFailure::Rejected);
    let base = fake.base_url();
    fake.shutdown().await;
    check_create_refused(KIND, &base, &req, "t1").await;
}

#[tokio::test]
async fn cancel_deletes_the_task_once() {
    let (fake, p) = setup(Script::default()).await;
    assert_eq!(fake.cancels("t1"), 0);
    assert_eq!(p.cancel("t1").await.unwrap(), CancelAnswer::Requested);
    assert_eq!(fake.cancels("t1"), 1);
    assert_eq!(fake.polls("t1"), 0, "a cancel is not a poll");
    // No default script: an unknown task is Runway's 404.
    let e = p.cancel("t404").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::NotFound);
    // A wrong key is refused before the fake counts the cancel.
    let mut cfg = config(KIND, &fake.base_url());
    cfg.api_key = "wrong-key".into();
    let wrong = clawcut_providers::build_provider(&cfg).unwrap();
    let e = wrong.cancel("t1").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Unauthorized(401));
    assert_eq!(fake.cancels("t1"), 1);
}

/// Issue 9, item 4: what Runway's create schema requires (sdk-python
/// `types/{text,image}_to_video_create_params.py`) is checked before any
/// create: the old adapter sent such requests, and Runway refused them
/// after the call.
#[tokio::test]
async fn requests_missing_a_required_field_are_refused_before_any_create() {
    let fake = FakeRunway::start(KEY).await;
    let p = provider(KIND, &fake.base_url());
    for (request, field) in [
        (json!({"prompt": "a cat"}), "`model`"),
        (
            json!({"prompt": "a cat", "model": "gen4.5", "seconds": 5}),
            "`ratio`",
        ),
        (
            json!({"prompt": "a cat", "model": "gen4.5", "ratio": "1280:720"}),
            "`seconds`",
        ),
        (
            json!({"prompt": "a cat", "model": "veo3", "ratio": "1280:720"}),
            "`seconds`",
        ),
        (json!({"prompt": "a cat", "model": "veo3.1"}), "`ratio`"),
        (
            json!({"prompt": "a cat", "model": "gen4_turbo", "ratio": "1280:720"}),
            "`image`",
        ),
    ] {
        let e = p
            .submit(&submit_request(request.clone(), "k"))
            .await
            .unwrap_err();
        assert_eq!(
            failure(&e),
            clawcut_core::SubmitFailure::Rejected,
            "{request}"
        );
        assert!(e.message.contains(field), "{request}: {e:?}");
    }
    assert_eq!(fake.total_requests(), 0, "no create was sent");
    // Models without those requirements go out with what they have.
    let id = p
        .submit(&submit_request(
            json!({"prompt": "a cat", "model": "seedance2"}),
            "k",
        ))
        .await
        .unwrap();
    assert_eq!(fake.last_create().unwrap().job_id, id);
}

/// `retry-after-ms` (sdk-python `_base_client.py` and openai-python read it
/// before `Retry-After`) sets the wait of a rate-limited or shedding answer,
/// for polls and creates alike.
#[tokio::test]
async fn retry_after_ms_is_honoured_before_retry_after() {
    for status in [429, 503] {
        let base = canned_server(status, &[("retry-after-ms", "1500"), ("retry-after", "7")]).await;
        let p = provider(KIND, &base);
        let e = p.poll("t1").await.unwrap_err();
        assert_eq!(e.retry_after, Some(Duration::from_millis(1500)), "{e:?}");
        let req = submit_request(
            json!({"prompt": "a cat", "model": "gen4.5", "ratio": "1280:720", "seconds": 5}),
            "k",
        );
        let e = p.submit(&req).await.unwrap_err();
        assert_eq!(e.retry_after, Some(Duration::from_millis(1500)), "{e:?}");
    }
}
