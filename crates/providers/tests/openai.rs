//! The OpenAI adapter against the fake Videos API on 127.0.0.1, one test per
//! answer the daemon must tell apart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use clawcut_core::{
    OutputKind, PollOutcome, Provider, ProviderError, ProviderErrorKind, RemoteProgress,
};
use clawcut_providers::{ProviderKind, build_provider};
use clawcut_test_support::fake_openai::{FakeOpenAi, Script, Step};
use common::{KEY, config};

async fn setup(script: Script) -> (FakeOpenAi, Arc<dyn Provider>) {
    let fake = FakeOpenAi::start(KEY).await;
    fake.script("video_1", script);
    let provider = build_provider(&config(ProviderKind::OpenAi, &fake.base_url())).unwrap();
    (fake, provider)
}

async fn poll_err(p: &Arc<dyn Provider>) -> ProviderError {
    p.poll("video_1").await.expect_err("expected an error")
}

#[tokio::test]
async fn queued_then_running_then_completed() {
    let (fake, p) = setup(Script::completes_after(2)).await;
    assert_eq!(
        p.poll("video_1").await.unwrap(),
        PollOutcome::Running {
            progress: RemoteProgress::Queued,
            poll_after: None
        }
    );
    assert_eq!(
        p.poll("video_1").await.unwrap(),
        PollOutcome::Running {
            progress: RemoteProgress::Running,
            poll_after: None
        }
    );
    let PollOutcome::Succeeded { video, thumbnail } = p.poll("video_1").await.unwrap() else {
        panic!("expected success");
    };
    let base = fake.base_url();
    assert_eq!(video.kind, OutputKind::Video);
    assert_eq!(video.url, format!("{base}/v1/videos/video_1/content"));
    assert_eq!(video.extension, "mp4");
    assert_eq!(
        video.headers,
        vec![("authorization".to_owned(), format!("Bearer {KEY}"))]
    );
    let thumbnail = thumbnail.expect("openai has thumbnails");
    assert_eq!(thumbnail.kind, OutputKind::Thumbnail);
    assert_eq!(
        thumbnail.url,
        format!("{base}/v1/videos/video_1/content?variant=thumbnail")
    );
    assert_eq!(thumbnail.extension, "webp");
    assert_eq!(thumbnail.headers, video.headers);
    assert_eq!(fake.polls("video_1"), 3);
}

#[tokio::test]
async fn poll_after_header_becomes_a_hint() {
    let (_fake, p) = setup(Script::steps(vec![Step::PollAfterMs(1500)])).await;
    assert_eq!(
        p.poll("video_1").await.unwrap(),
        PollOutcome::Running {
            progress: RemoteProgress::Running,
            poll_after: Some(Duration::from_millis(1500))
        }
    );
}

#[tokio::test]
async fn failed_carries_the_providers_reason() {
    let (_fake, p) = setup(Script::fails_after(0, "content policy violation")).await;
    assert_eq!(
        p.poll("video_1").await.unwrap(),
        PollOutcome::Failed {
            reason: "content policy violation (video_generation_failed)".into()
        }
    );
}

#[tokio::test]
async fn expired_outputs_are_gone() {
    let (_fake, p) = setup(Script::expired()).await;
    let PollOutcome::OutputsGone { reason } = p.poll("video_1").await.unwrap() else {
        panic!("expected outputs gone");
    };
    assert!(reason.starts_with("outputs expired at "), "{reason}");
    assert!(reason.ends_with(" GMT"), "{reason}");
}

#[tokio::test]
async fn future_expiry_still_succeeds() {
    let in_an_hour = 4_102_444_800; // 2100-01-01
    let (_fake, p) = setup(Script::default().with_expires_at(in_an_hour)).await;
    assert!(matches!(
        p.poll("video_1").await.unwrap(),
        PollOutcome::Succeeded { .. }
    ));
}

#[tokio::test]
async fn unknown_video_is_not_found() {
    let (_fake, p) = setup(Script::default()).await;
    let e = p.poll("video_unknown").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::NotFound);
    assert!(e.message.contains("not found"), "{}", e.message);
}

#[tokio::test]
async fn wrong_key_is_unauthorized_and_never_echoed() {
    let fake = FakeOpenAi::start("sk-the-right-one").await;
    fake.script("video_1", Script::default());
    let p = build_provider(&config(ProviderKind::OpenAi, &fake.base_url())).unwrap();
    let e = poll_err(&p).await;
    assert_eq!(e.kind, ProviderErrorKind::Unauthorized(401));
    assert!(e.message.contains("Incorrect API key"), "{}", e.message);
    assert!(!e.message.contains(KEY));
    assert!(!format!("{e:?}").contains(KEY));
}

#[tokio::test]
async fn rate_limit_honours_retry_after_seconds() {
    let (_fake, p) = setup(Script::steps(vec![Step::HttpError {
        status: 429,
        retry_after: Some(17),
    }]))
    .await;
    let e = poll_err(&p).await;
    assert_eq!(e.kind, ProviderErrorKind::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(17)));
    assert!(e.message.contains("Rate limit"), "{}", e.message);
}

#[tokio::test]
async fn server_errors_are_classified_with_their_code() {
    let (fake, p) = setup(Script::storm_then_complete(2, 0)).await;
    assert_eq!(poll_err(&p).await.kind, ProviderErrorKind::Server(500));
    assert_eq!(poll_err(&p).await.kind, ProviderErrorKind::Server(500));
    assert!(matches!(
        p.poll("video_1").await.unwrap(),
        PollOutcome::Succeeded { .. }
    ));
    assert_eq!(fake.polls("video_1"), 3);
}

#[tokio::test]
async fn other_client_errors_keep_their_code() {
    let (_fake, p) = setup(Script::steps(vec![Step::HttpError {
        status: 400,
        retry_after: None,
    }]))
    .await;
    assert_eq!(poll_err(&p).await.kind, ProviderErrorKind::Client(400));
}

#[tokio::test]
async fn malformed_json_is_malformed() {
    let (_fake, p) = setup(Script::steps(vec![Step::Malformed])).await;
    assert_eq!(poll_err(&p).await.kind, ProviderErrorKind::Malformed);
}

#[tokio::test]
async fn unknown_status_is_malformed() {
    let body = r#"{"id":"video_1","object":"video","status":"melting","progress":3}"#;
    let (_fake, p) = setup(Script::steps(vec![Step::Raw {
        status: 200,
        body: body.into(),
    }]))
    .await;
    let e = poll_err(&p).await;
    assert_eq!(e.kind, ProviderErrorKind::Malformed);
    assert!(e.message.contains("melting"), "{}", e.message);
}

#[tokio::test]
async fn hostile_bodies_never_panic() {
    let bodies = [
        "",
        "null",
        "[]",
        r#"{"status":null}"#,
        r#"{"status":"failed","error":"not an object"}"#,
        r#"{"status":"completed","expires_at":"tomorrow"}"#,
        r#"{"status":"completed","expires_at":-99999999999999}"#,
        r#"{"status":"failed","error":{"message":null,"code":null}}"#,
    ];
    for body in bodies {
        let (_fake, p) = setup(Script::steps(vec![Step::Raw {
            status: 200,
            body: body.into(),
        }]))
        .await;
        // Any classified answer is fine; a panic fails the test.
        let _ = p.poll("video_1").await;
    }
}

#[tokio::test]
async fn a_hang_past_the_timeout_is_a_timeout() {
    let fake = FakeOpenAi::start(KEY).await;
    fake.script(
        "video_1",
        Script::steps(vec![Step::Hang(Duration::from_secs(10))]),
    );
    let mut cfg = config(ProviderKind::OpenAi, &fake.base_url());
    cfg.timeout = Duration::from_millis(300);
    let p = build_provider(&cfg).unwrap();
    let started = std::time::Instant::now();
    let e = poll_err(&p).await;
    assert_eq!(e.kind, ProviderErrorKind::Timeout, "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let fake = FakeOpenAi::start(KEY).await;
    let base = fake.base_url();
    fake.shutdown().await;
    let p = build_provider(&config(ProviderKind::OpenAi, &base)).unwrap();
    assert_eq!(poll_err(&p).await.kind, ProviderErrorKind::Connect);
}

#[tokio::test]
async fn ids_cannot_escape_their_path_segment() {
    let (fake, p) = setup(Script::default()).await;
    for id in ["../../etc", "a/b", "x?variant=thumbnail", "..", ""] {
        assert!(p.poll(id).await.is_err(), "{id}");
    }
    // Only ids that are valid path segments reached the server, and none of
    // them matched `video_1`.
    assert_eq!(fake.polls("video_1"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_are_capped() {
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(Script::steps(vec![Step::Hang(Duration::from_millis(150))]));
    let mut cfg = config(ProviderKind::OpenAi, &fake.base_url());
    cfg.max_in_flight = 2;
    let p = build_provider(&cfg).unwrap();
    let polls: Vec<_> = (0..10)
        .map(|i| {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.poll(&format!("video_{i}")).await })
        })
        .collect();
    for handle in polls {
        assert!(handle.await.unwrap().is_ok());
    }
    assert_eq!(fake.max_concurrent_polls(), 2);
    assert_eq!(fake.total_requests(), 10);
}

#[tokio::test]
async fn a_base_url_path_prefix_is_kept() {
    let fake = FakeOpenAi::start(KEY).await;
    // A prefix the fake does not serve: the request must go to it and 404,
    // proving the prefix was not dropped.
    let cfg = config(ProviderKind::OpenAi, &format!("{}/proxy/", fake.base_url()));
    let p = build_provider(&cfg).unwrap();
    fake.script("video_1", Script::default());
    assert_eq!(poll_err(&p).await.kind, ProviderErrorKind::NotFound);
    assert_eq!(fake.polls("video_1"), 0);
}

#[tokio::test]
async fn config_debug_redacts_the_key_and_bad_configs_are_refused() {
    let mut cfg = config(ProviderKind::OpenAi, "http://127.0.0.1:9");
    assert!(!format!("{cfg:?}").contains(KEY));
    cfg.max_in_flight = 0;
    let e = build_provider(&cfg).err().expect("refused");
    assert!(e.to_string().contains("max_in_flight"), "{e}");
    let mut cfg = config(ProviderKind::OpenAi, "http://127.0.0.1:9");
    cfg.api_key = "bad\nkey".into();
    let e = build_provider(&cfg).err().expect("refused");
    assert!(!e.to_string().contains("bad\nkey"));
    assert!("sora".parse::<ProviderKind>().is_err());
    for kind in ProviderKind::ALL {
        assert_eq!(kind.as_str().parse::<ProviderKind>().unwrap(), *kind);
    }
    assert_eq!(
        "openai".parse::<ProviderKind>().unwrap(),
        ProviderKind::OpenAi
    );
}

#[tokio::test]
async fn submit_posts_the_video_request_with_the_idempotency_key() {
    let fake = FakeOpenAi::start(KEY).await;
    let p = build_provider(&config(ProviderKind::OpenAi, &fake.base_url())).unwrap();
    let req = common::submit_request(
        serde_json::json!({"prompt": "a cat", "model": "sora-2", "seconds": 8, "size": "1280x720", "extra": 1}),
        "idem-1",
    );
    let id = p.submit(&req).await.unwrap();
    let seen = fake.last_create().unwrap();
    assert_eq!(seen.job_id, id);
    assert_eq!(
        seen.body,
        serde_json::json!({"prompt": "a cat", "model": "sora-2", "seconds": "8", "size": "1280x720"})
    );
    assert_eq!(seen.header("idempotency-key"), Some("idem-1"));
    assert_eq!(fake.creates("idem-1"), 1);
    assert!(matches!(
        p.poll(&id).await.unwrap(),
        PollOutcome::Succeeded { .. }
    ));
    assert_eq!(p.webhook_job_id(br#"{"id": "video_1"}"#), None);
    assert_eq!(
        p.verify_webhook(&[], b"{}", "s", 0),
        clawcut_core::WebhookAuth::Unsigned
    );
}

#[tokio::test]
async fn submit_failures_are_classified() {
    let fake = FakeOpenAi::start(KEY).await;
    let p = build_provider(&config(ProviderKind::OpenAi, &fake.base_url())).unwrap();
    let req = common::submit_request(serde_json::json!({"prompt": "a cat"}), "idem-2");
    common::check_create_failures(&p, &req, |s| fake.script_creates(s)).await;
    common::check_create_lost(&p, &req, |n| fake.lose_next_creates(n)).await;
    let slow = common::impatient(ProviderKind::OpenAi, &fake.base_url());
    common::check_create_timeout(&slow, &req, |s| fake.script_creates(s)).await;
    assert_eq!(fake.creates("idem-2"), 3);
    let bad = common::submit_request(
        serde_json::json!({"prompt": "a cat", "seconds": "soon"}),
        "k",
    );
    assert_eq!(
        p.submit(&bad).await.unwrap_err().kind,
        ProviderErrorKind::Client(400)
    );
    let base = fake.base_url();
    fake.shutdown().await;
    common::check_create_refused(ProviderKind::OpenAi, &base, &req, "video_1").await;
}

#[tokio::test]
async fn a_held_create_waits_for_release() {
    let fake = FakeOpenAi::start(KEY).await;
    let p = build_provider(&config(ProviderKind::OpenAi, &fake.base_url())).unwrap();
    fake.hold_creates(true);
    let req = common::submit_request(serde_json::json!({"prompt": "a cat"}), "idem-3");
    let submit = tokio::spawn(async move { p.submit(&req).await });
    while fake.held_creates() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(fake.creates("idem-3"), 0, "held before the job exists");
    fake.release_creates();
    let id = submit.await.unwrap().unwrap();
    assert_eq!(fake.creates("idem-3"), 1);
    assert_eq!(fake.last_create().unwrap().job_id, id);
}

/// Issue 9: a 429 whose code is `insufficient_quota` is the account's
/// (a top-up fixes it, waiting does not): `Account(429)`, which spends no
/// attempt and, on a create, certainly created nothing. A plain 429 is
/// still a rate limit.
#[tokio::test]
async fn insufficient_quota_is_an_account_fault_not_a_rate_limit() {
    let (fake, p) = setup(Script::steps(vec![Step::HttpError {
        status: 402,
        retry_after: None,
    }]))
    .await;
    let e = poll_err(&p).await;
    assert_eq!(e.kind, ProviderErrorKind::Account(429), "{e:?}");
    assert!(!e.kind.counts_as_attempt());
    assert!(e.message.contains("insufficient_quota"), "{e:?}");
    fake.script_creates(vec![
        clawcut_test_support::fake_common::CreateStep::HttpError {
            status: 402,
            retry_after: None,
        },
    ]);
    let req = common::submit_request(serde_json::json!({"prompt": "a cat"}), "idem-q");
    let e = p.submit(&req).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Account(429), "{e:?}");
    assert_eq!(
        e.kind.submit_failure(),
        clawcut_core::SubmitFailure::NotCreated
    );
    assert_eq!(fake.creates("idem-q"), 0);
    fake.script(
        "video_1",
        Script::steps(vec![Step::HttpError {
            status: 429,
            retry_after: Some(3),
        }]),
    );
    assert_eq!(poll_err(&p).await.kind, ProviderErrorKind::RateLimited);
}

/// The Videos API has no cancel: `DELETE /v1/videos/{id}` deletes a
/// completed or failed video (openai-python `Videos.delete`), so the
/// adapter sends nothing and only the local cancel happens.
#[tokio::test]
async fn cancel_sends_nothing() {
    let (fake, p) = setup(Script::completes_after(3)).await;
    let before = fake.total_requests();
    assert_eq!(
        p.cancel("video_1").await.unwrap(),
        clawcut_core::CancelAnswer::NotSupported
    );
    assert_eq!(fake.total_requests(), before);
}
