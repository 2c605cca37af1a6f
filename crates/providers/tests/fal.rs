//! The fal adapter against the fake fal queue API on 127.0.0.1.

mod common;

use std::sync::Arc;

use clawcut_core::{
    CancelAnswer, PollOutcome, Provider, ProviderErrorKind, RemoteProgress, WebhookAuth,
};
use clawcut_providers::ProviderKind;
use clawcut_test_support::fake_fal::{FakeFal, Script, Step};
use common::*;
use serde_json::json;

const KIND: ProviderKind = ProviderKind::Fal;
const MODEL: &str = "fal-ai/veo3/fast";

/// The fake with request `r1` scripted, and its stored id.
async fn setup(script: Script) -> (FakeFal, Arc<dyn Provider>, String) {
    let fake = FakeFal::start(KEY).await;
    fake.script("r1", script);
    let p = provider(KIND, &fake.base_url());
    (fake, p, FakeFal::job_id(MODEL, "r1"))
}

fn running(progress: RemoteProgress) -> PollOutcome {
    PollOutcome::Running {
        progress,
        poll_after: None,
    }
}

#[tokio::test]
async fn in_queue_then_in_progress_then_completed_with_its_result() {
    let (fake, p, id) = setup(Script::succeeds_after(2).with_thumbnail(1000)).await;
    assert_eq!(p.poll(&id).await.unwrap(), running(RemoteProgress::Queued));
    assert_eq!(p.poll(&id).await.unwrap(), running(RemoteProgress::Running));
    let PollOutcome::Succeeded { video, thumbnail } = p.poll(&id).await.unwrap() else {
        panic!("expected success");
    };
    assert_eq!(video.url, fake.video_url("r1"));
    assert!(video.headers.is_empty());
    assert_eq!(thumbnail.unwrap().url, fake.thumbnail_url("r1"));
    assert_eq!(
        download(KIND, &fake.base_url(), &video).await,
        fake.content("r1")
    );
    // Only the status endpoint counts as a poll.
    assert_eq!(fake.polls("r1"), 3);
}

#[tokio::test]
async fn a_completed_request_with_an_error_failed() {
    let (fake, p, id) = setup(Script::fails_after(0, "runner crashed")).await;
    assert_eq!(
        p.poll(&id).await.unwrap(),
        PollOutcome::Failed {
            reason: "runner crashed".into()
        }
    );
    // No error in the status, the model's refusal in the result (422).
    fake.script("r1", Script::step(Step::Filtered("nsfw prompt".into())));
    let PollOutcome::Failed { reason } = p.poll(&id).await.unwrap() else {
        panic!("expected failure");
    };
    assert!(reason.contains("nsfw prompt"), "{reason}");
}

#[tokio::test]
async fn an_expired_result_is_gone() {
    let (_fake, p, id) = setup(Script::step(Step::OutputsGone)).await;
    assert!(matches!(
        p.poll(&id).await.unwrap(),
        PollOutcome::OutputsGone { .. }
    ));
}

#[tokio::test]
async fn error_answers_are_classified() {
    let (fake, p, id) = setup(Script::default()).await;
    check_error_answers(&p, &id, |s| fake.script("r1", s)).await;
    check_hostile_bodies(&p, &id, |s| fake.script("r1", s)).await;
    let p = impatient(KIND, &fake.base_url());
    check_hang_is_timeout(&p, &id, |s| fake.script("r1", s)).await;
}

#[tokio::test]
async fn ids_without_a_model_are_not_found_before_any_request() {
    let (fake, p, _) = setup(Script::default()).await;
    for id in ["r1", "fal-ai|r1", "|r1", "fal-ai/veo3|", "fal-ai/../x|r1"] {
        assert_eq!(
            p.poll(id).await.unwrap_err().kind,
            ProviderErrorKind::NotFound,
            "{id}"
        );
    }
    assert_eq!(fake.total_requests(), 0);
}

#[tokio::test]
async fn submit_posts_the_input_to_the_model_and_stores_model_and_request() {
    let fake = FakeFal::start(KEY).await;
    let p = provider(KIND, &fake.base_url());
    let mut req = submit_request(
        json!({"prompt": "a cat", "model": MODEL, "duration": "8s", "aspect_ratio": "16:9"}),
        "key-1",
    );
    req.webhook_url = Some("https://hooks.example/webhooks/fal?token=t".into());
    let id = p.submit(&req).await.unwrap();
    let seen = fake.last_create().unwrap();
    assert_eq!(id, FakeFal::job_id(MODEL, &seen.job_id));
    assert_eq!(
        seen.path,
        format!("/{MODEL}?fal_webhook=https%3A%2F%2Fhooks.example%2Fwebhooks%2Ffal%3Ftoken%3Dt")
    );
    assert_eq!(
        seen.body,
        json!({"prompt": "a cat", "duration": "8s", "aspect_ratio": "16:9"})
    );
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Key {KEY}").as_str())
    );
    assert_eq!(fake.creates("a cat"), 1);
    // The stored id polls under the app (`fal-ai/veo3`), as fal requires.
    assert!(matches!(
        p.poll(&id).await.unwrap(),
        PollOutcome::Succeeded { .. }
    ));
}

#[tokio::test]
async fn submit_failures_are_classified() {
    let fake = FakeFal::start(KEY).await;
    let p = provider(KIND, &fake.base_url());
    let req = submit_request(json!({"prompt": "a cat", "model": MODEL}), "k");
    check_create_failures(&p, &req, |s| fake.script_creates(s)).await;
    check_create_lost(&p, &req, |n| fake.lose_next_creates(n)).await;
    check_create_timeout(&impatient(KIND, &fake.base_url()), &req, |s| {
        fake.script_creates(s)
    })
    .await;
    assert_eq!(fake.creates("a cat"), 3);
    let no_model = submit_request(json!({"prompt": "a cat"}), "k");
    assert_eq!(
        p.submit(&no_model).await.unwrap_err().kind,
        ProviderErrorKind::Client(400)
    );
    let base = fake.base_url();
    fake.shutdown().await;
    check_create_refused(KIND, &base, &req, "fal-ai/veo3/fast|r1").await;
}

#[tokio::test]
async fn webhooks_name_the_bare_request_id_and_are_unsigned() {
    let p = provider(KIND, "http://127.0.0.1:9");
    let body = json!({"request_id": "abc-1", "gateway_request_id": "abc-1", "status": "OK", "payload": {}});
    assert_eq!(
        p.webhook_job_id(body.to_string().as_bytes()),
        Some("abc-1".into())
    );
    assert_eq!(p.webhook_job_id(br#"{"status": "OK"}"#), None);
    assert_eq!(p.verify_webhook(&[], b"{}", "s", 0), WebhookAuth::Unsigned);
}

#[tokio::test]
async fn cancel_puts_to_the_request_cancel_url_once() {
    let (fake, p, id) = setup(Script::default()).await;
    assert_eq!(fake.cancels("r1"), 0);
    assert_eq!(p.cancel(&id).await.unwrap(), CancelAnswer::Requested);
    assert_eq!(fake.cancels("r1"), 1);
    assert_eq!(fake.polls("r1"), 0, "a cancel is not a poll");
    // An unknown request is fal's 404.
    let e = p.cancel(&FakeFal::job_id(MODEL, "r404")).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::NotFound);
    assert_eq!(fake.cancels("r404"), 1);
    // An id without the model part is refused before any request.
    let before = fake.total_requests();
    let e = p.cancel("r1").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::NotFound);
    assert_eq!(fake.total_requests(), before);
}

/// Issue 9: `workflows/…` and `comfy/…` model ids name a three-segment app
/// (fal-js `parseEndpointId`); the old two-segment app polled, fetched and
/// canceled under a path fal does not serve.
#[tokio::test]
async fn namespaced_models_poll_fetch_and_cancel_under_their_three_segment_app() {
    for model in ["workflows/acme/storyboard", "comfy/acme/graph/v2"] {
        let fake = FakeFal::start(KEY).await;
        let p = provider(KIND, &fake.base_url());
        let req = submit_request(json!({"prompt": "a cat", "model": model}), "k");
        let id = p.submit(&req).await.unwrap();
        let seen = fake.last_create().unwrap();
        assert_eq!(seen.path, format!("/{model}"));
        assert_eq!(id, FakeFal::job_id(model, &seen.job_id));
        let PollOutcome::Succeeded { video, .. } = p.poll(&id).await.unwrap() else {
            panic!("{model}: expected success");
        };
        assert_eq!(video.url, fake.video_url(&seen.job_id));
        assert_eq!(p.cancel(&id).await.unwrap(), CancelAnswer::Requested);
        assert_eq!(fake.cancels(&seen.job_id), 1);
    }
}

/// Issue 9: a 5xx from the result call of a COMPLETED request that carries
/// fal's `error_type` is a final request error (fal retried it already),
/// not a transient answer to poll again until `max_attempts`. Without
/// `error_type` it is the gateway, and stays transient.
#[tokio::test]
async fn a_request_error_from_the_result_call_is_final() {
    let (fake, p, id) = setup(Script::default()).await;
    for (status, error_type) in [(504, "request_timeout"), (503, "runner_disconnected")] {
        fake.fail_results(Some((status, error_type)));
        let PollOutcome::Failed { reason } = p.poll(&id).await.unwrap() else {
            panic!("{status}: expected a final failure");
        };
        assert!(reason.contains(error_type), "{reason}");
        assert!(reason.contains("Request failed after retries"), "{reason}");
    }
    // A bare 5xx (no error_type, e.g. a gateway) is transient.
    fake.fail_results(Some((502, "")));
    let e = p.poll(&id).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Server(502), "{e:?}");
    fake.fail_results(None);
    assert!(matches!(
        p.poll(&id).await.unwrap(),
        PollOutcome::Succeeded { .. }
    ));
}
