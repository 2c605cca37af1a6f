//! The Replicate adapter against the fake predictions API on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::time::Duration;

use clawcut_core::{
    CancelAnswer, OutputKind, PollOutcome, Provider, ProviderErrorKind, RemoteProgress,
};
use clawcut_providers::{ProviderKind, build_provider};
use clawcut_test_support::fake_replicate::{FakeReplicate, Script, Step};
use common::{KEY, config};

async fn setup(script: Script) -> (FakeReplicate, Arc<dyn Provider>) {
    let fake = FakeReplicate::start(KEY).await;
    fake.script("p1", script);
    let provider = build_provider(&config(ProviderKind::Replicate, &fake.base_url())).unwrap();
    (fake, provider)
}

fn step(s: Step) -> Script {
    Script::steps(vec![s])
}

#[tokio::test]
async fn starting_then_processing_then_succeeded() {
    let (fake, p) = setup(Script::succeeds_after(2)).await;
    assert_eq!(
        p.poll("p1").await.unwrap(),
        PollOutcome::Running {
            progress: RemoteProgress::Queued,
            poll_after: None
        }
    );
    assert_eq!(
        p.poll("p1").await.unwrap(),
        PollOutcome::Running {
            progress: RemoteProgress::Running,
            poll_after: None
        }
    );
    let PollOutcome::Succeeded { video, thumbnail } = p.poll("p1").await.unwrap() else {
        panic!("expected success");
    };
    assert_eq!(video.kind, OutputKind::Video);
    assert_eq!(video.url, fake.output_url("p1", "output.mp4"));
    assert_eq!(video.extension, "mp4");
    assert!(video.headers.is_empty(), "output urls get no key");
    assert_eq!(thumbnail, None);
}

#[tokio::test]
async fn a_list_output_picks_the_video() {
    let script = Script::default().with_outputs(&["cover.png", "clip.webm", "b.mp4"], true);
    let (fake, p) = setup(script).await;
    let PollOutcome::Succeeded { video, .. } = p.poll("p1").await.unwrap() else {
        panic!("expected success");
    };
    assert_eq!(video.url, fake.output_url("p1", "clip.webm"));
    assert_eq!(video.extension, "webm");
}

#[tokio::test]
async fn a_list_without_video_takes_the_first_with_default_extension() {
    let script = Script::default().with_outputs(&["result", "other.bin"], true);
    let (fake, p) = setup(script).await;
    let PollOutcome::Succeeded { video, .. } = p.poll("p1").await.unwrap() else {
        panic!("expected success");
    };
    assert_eq!(video.url, fake.output_url("p1", "result"));
    assert_eq!(video.extension, "mp4");
}

#[tokio::test]
async fn failed_carries_the_error() {
    let (_fake, p) = setup(Script::fails_after(1, "CUDA out of memory")).await;
    let _ = p.poll("p1").await.unwrap();
    assert_eq!(
        p.poll("p1").await.unwrap(),
        PollOutcome::Failed {
            reason: "CUDA out of memory".into()
        }
    );
}

#[tokio::test]
async fn canceled_and_aborted_are_canceled() {
    for s in [Step::Canceled, Step::Aborted] {
        let (_fake, p) = setup(step(s)).await;
        assert!(matches!(
            p.poll("p1").await.unwrap(),
            PollOutcome::Canceled { .. }
        ));
    }
}

#[tokio::test]
async fn removed_or_missing_outputs_are_gone() {
    for s in [Step::DataRemoved, Step::SucceededWithoutOutput] {
        let (_fake, p) = setup(step(s)).await;
        assert!(matches!(
            p.poll("p1").await.unwrap(),
            PollOutcome::OutputsGone { .. }
        ));
    }
}

#[tokio::test]
async fn http_errors_are_classified() {
    let (_fake, p) = setup(step(Step::HttpError {
        status: 429,
        retry_after: Some(3),
    }))
    .await;
    let e = p.poll("p1").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
    assert!(e.message.contains("throttled"), "{}", e.message);

    let (_fake, p) = setup(step(Step::HttpError {
        status: 503,
        retry_after: Some(9),
    }))
    .await;
    let e = p.poll("p1").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Server(503));
    assert_eq!(e.retry_after, Some(Duration::from_secs(9)));

    let (_fake, p) = setup(Script::default()).await;
    let e = p.poll("nope").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::NotFound);
    assert!(e.message.contains("Not found."), "{}", e.message);
}

#[tokio::test]
async fn wrong_key_is_unauthorized() {
    let fake = FakeReplicate::start("r8_right").await;
    fake.script("p1", Script::default());
    let p = build_provider(&config(ProviderKind::Replicate, &fake.base_url())).unwrap();
    let e = p.poll("p1").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Unauthorized(401));
    assert!(e.message.contains("authentication token"), "{}", e.message);
    assert!(!e.message.contains(KEY));
}

#[tokio::test]
async fn malformed_and_unknown_status_are_malformed() {
    let (_fake, p) = setup(step(Step::Malformed)).await;
    assert_eq!(
        p.poll("p1").await.unwrap_err().kind,
        ProviderErrorKind::Malformed
    );
    let (_fake, p) = setup(step(Step::Raw {
        status: 200,
        body: r#"{"id":"p1","status":"teleporting"}"#.into(),
    }))
    .await;
    let e = p.poll("p1").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Malformed);
    assert!(e.message.contains("teleporting"));
    let (_fake, p) = setup(step(Step::Raw {
        status: 200,
        body: r#"{"id":"p1","status":"succeeded","output":{"n":3}}"#.into(),
    }))
    .await;
    assert_eq!(
        p.poll("p1").await.unwrap_err().kind,
        ProviderErrorKind::Malformed
    );
}

#[tokio::test]
async fn a_hang_past_the_timeout_is_a_timeout() {
    let fake = FakeReplicate::start(KEY).await;
    fake.script("p1", step(Step::Hang(Duration::from_secs(10))));
    let mut cfg = config(ProviderKind::Replicate, &fake.base_url());
    cfg.timeout = Duration::from_millis(300);
    let p = build_provider(&cfg).unwrap();
    assert_eq!(
        p.poll("p1").await.unwrap_err().kind,
        ProviderErrorKind::Timeout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_are_capped() {
    let fake = FakeReplicate::start(KEY).await;
    fake.set_default_script(step(Step::Hang(Duration::from_millis(150))));
    let mut cfg = config(ProviderKind::Replicate, &fake.base_url());
    cfg.max_in_flight = 3;
    let p = build_provider(&cfg).unwrap();
    let polls: Vec<_> = (0..9)
        .map(|i| {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.poll(&format!("p{i}")).await })
        })
        .collect();
    for h in polls {
        assert!(h.await.unwrap().is_ok());
    }
    assert_eq!(fake.max_concurrent_polls(), 3);
}

fn sign(secret_b64: &str, id: &str, ts: i64, body: &[u8]) -> String {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret_b64)
        .unwrap();
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn webhook_signatures_are_verified() {
    use clawcut_core::WebhookAuth;
    let p = build_provider(&config(ProviderKind::Replicate, "http://127.0.0.1:9")).unwrap();
    let secret_b64 = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let secret = format!("whsec_{secret_b64}");
    let body = br#"{"id":"p1","status":"succeeded"}"#;
    let now = 1_700_000_000;
    let headers = |ts: i64, sig: String| {
        vec![
            ("webhook-id".to_owned(), "msg_1".to_owned()),
            ("webhook-timestamp".to_owned(), ts.to_string()),
            ("webhook-signature".to_owned(), sig),
        ]
    };
    let good = sign(secret_b64, "msg_1", now, body);
    assert_eq!(
        p.verify_webhook(&headers(now, format!("v1,{good}")), body, &secret, now),
        WebhookAuth::Valid
    );
    // One valid entry among several (key rotation) suffices.
    let listed = format!("v1,bm90IGl0 v1,{good}");
    assert_eq!(
        p.verify_webhook(&headers(now, listed), body, &secret, now + 200),
        WebhookAuth::Valid
    );
    // Tampered body, wrong secret, stale or future timestamp, no headers.
    let tampered = br#"{"id":"p2","status":"succeeded"}"#;
    assert_eq!(
        p.verify_webhook(&headers(now, format!("v1,{good}")), tampered, &secret, now),
        WebhookAuth::Invalid
    );
    assert_eq!(
        p.verify_webhook(
            &headers(now, format!("v1,{good}")),
            body,
            "whsec_b3RoZXI=",
            now
        ),
        WebhookAuth::Invalid
    );
    let stale = sign(secret_b64, "msg_1", now - 301, body);
    assert_eq!(
        p.verify_webhook(
            &headers(now - 301, format!("v1,{stale}")),
            body,
            &secret,
            now
        ),
        WebhookAuth::Invalid
    );
    let future = sign(secret_b64, "msg_1", now + 301, body);
    assert_eq!(
        p.verify_webhook(
            &headers(now + 301, format!("v1,{future}")),
            body,
            &secret,
            now
        ),
        WebhookAuth::Invalid
    );
    assert_eq!(
        p.verify_webhook(&[], body, &secret, now),
        WebhookAuth::Invalid
    );
    assert_eq!(p.webhook_job_id(body), Some("p1".into()));
    assert_eq!(p.webhook_job_id(b"{}"), None);
}

#[tokio::test]
async fn submit_to_a_model_with_a_webhook() {
    let fake = FakeReplicate::start(KEY).await;
    let p = build_provider(&config(ProviderKind::Replicate, &fake.base_url())).unwrap();
    let mut req = common::submit_request(
        serde_json::json!({"prompt": "a cat", "model": "google/veo-3", "seconds": 8}),
        "k1",
    );
    req.webhook_url = Some("https://hooks.example/webhooks/replicate".into());
    let id = p.submit(&req).await.unwrap();
    let seen = fake.last_create().unwrap();
    assert_eq!(seen.job_id, id);
    assert_eq!(seen.path, "/v1/models/google/veo-3/predictions");
    assert_eq!(
        seen.body,
        serde_json::json!({
            "input": {"prompt": "a cat", "seconds": 8},
            "webhook": "https://hooks.example/webhooks/replicate",
            "webhook_events_filter": ["completed"],
        })
    );
    assert_eq!(fake.creates("a cat"), 1);
    assert!(matches!(
        p.poll(&id).await.unwrap(),
        PollOutcome::Succeeded { .. }
    ));
}

#[tokio::test]
async fn submit_a_version_with_its_own_input() {
    let fake = FakeReplicate::start(KEY).await;
    let p = build_provider(&config(ProviderKind::Replicate, &fake.base_url())).unwrap();
    let req = common::submit_request(
        serde_json::json!({"prompt": "a cat", "version": "abc123", "input": {"prompt": "a cat", "fps": 24}}),
        "k1",
    );
    p.submit(&req).await.unwrap();
    let seen = fake.last_create().unwrap();
    assert_eq!(seen.path, "/v1/predictions");
    assert_eq!(
        seen.body,
        serde_json::json!({"version": "abc123", "input": {"prompt": "a cat", "fps": 24}})
    );
    let no_model = common::submit_request(serde_json::json!({"prompt": "a cat"}), "k");
    assert_eq!(
        common::failure(&p.submit(&no_model).await.unwrap_err()),
        clawcut_core::SubmitFailure::Rejected
    );
}

#[tokio::test]
async fn submit_failures_are_classified() {
    let fake = FakeReplicate::start(KEY).await;
    let p = build_provider(&config(ProviderKind::Replicate, &fake.base_url())).unwrap();
    let req = common::submit_request(serde_json::json!({"prompt": "a cat", "model": "o/m"}), "k");
    common::check_create_failures(&p, &req, |s| fake.script_creates(s)).await;
    common::check_create_lost(&p, &req, |n| fake.lose_next_creates(n)).await;
    let slow = common::impatient(ProviderKind::Replicate, &fake.base_url());
    common::check_create_timeout(&slow, &req, |s| fake.script_creates(s)).await;
    assert_eq!(fake.creates("a cat"), 3);
    let base = fake.base_url();
    fake.shutdown().await;
    common::check_create_refused(ProviderKind::Replicate, &base, &req, "p1").await;
}

#[tokio::test]
async fn cancel_posts_to_the_cancel_endpoint_once() {
    let (fake, p) = setup(Script::succeeds_after(3)).await;
    assert_eq!(fake.cancels("p1"), 0);
    assert_eq!(p.cancel("p1").await.unwrap(), CancelAnswer::Requested);
    assert_eq!(fake.cancels("p1"), 1);
    assert_eq!(fake.polls("p1"), 0, "a cancel is not a poll");
    // An unknown prediction is the provider's 404, classified.
    let e = p.cancel("nope").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::NotFound);
    assert_eq!(fake.cancels("nope"), 1);
    // An id that cannot be a path segment is refused before any request.
    let before = fake.total_requests();
    assert!(p.cancel("..").await.is_err());
    assert_eq!(fake.total_requests(), before);
}

#[tokio::test]
async fn cancel_with_a_wrong_key_is_unauthorized() {
    let fake = FakeReplicate::start("r8_right").await;
    fake.script("p1", Script::default());
    let p = build_provider(&config(ProviderKind::Replicate, &fake.base_url())).unwrap();
    let e = p.cancel("p1").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Unauthorized(401));
    assert_eq!(
        fake.cancels("p1"),
        0,
        "unauthenticated requests are not counted"
    );
}

/// Issue 9: Replicate's 402 (insufficient credit) is the account's fault:
/// `Account(402)`, no attempt spent, and a create refused with it created
/// nothing (it was `Client(402)`: a submit was rejected and the job failed).
#[tokio::test]
async fn insufficient_credit_is_an_account_fault() {
    let (fake, p) = setup(step(Step::HttpError {
        status: 402,
        retry_after: None,
    }))
    .await;
    let e = p.poll("p1").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Account(402), "{e:?}");
    assert!(!e.kind.counts_as_attempt());
    assert!(e.message.contains("insufficient credit"), "{e:?}");
    fake.script_creates(vec![
        clawcut_test_support::fake_common::CreateStep::HttpError {
            status: 402,
            retry_after: None,
        },
    ]);
    let req = common::submit_request(serde_json::json!({"prompt": "a cat", "model": "o/m"}), "k");
    let e = p.submit(&req).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Account(402), "{e:?}");
    assert_eq!(
        e.kind.submit_failure(),
        clawcut_core::SubmitFailure::NotCreated
    );
    assert_eq!(fake.creates("a cat"), 0);
}
