//! The Kling adapter against the fake Kling API on 127.0.0.1: its JWT, its
//! error codes, and lookup by `external_task_id` after a crash mid-create.

mod common;

use std::sync::Arc;
use std::time::Duration;

use clawcut_core::{
    Lookup, PollOutcome, Provider, ProviderErrorKind, RemoteProgress, SubmitFailure, SubmitRecovery,
};
use clawcut_providers::{ProviderKind, build_provider};
use clawcut_test_support::fake_kling::{CreateStep, FakeKling, Script, Step};
use common::*;
use serde_json::json;

const KIND: ProviderKind = ProviderKind::Kling;

async fn setup(script: Script) -> (FakeKling, Arc<dyn Provider>) {
    let fake = FakeKling::start(KEY, SECRET).await;
    fake.script("866100", script);
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
async fn submitted_then_processing_then_succeed() {
    let (fake, p) = setup(Script::succeeds_after(2)).await;
    assert_eq!(
        p.poll("866100").await.unwrap(),
        running(RemoteProgress::Queued)
    );
    assert_eq!(
        p.poll("866100").await.unwrap(),
        running(RemoteProgress::Running)
    );
    let PollOutcome::Succeeded { video, thumbnail } = p.poll("866100").await.unwrap() else {
        panic!("expected success");
    };
    assert_eq!(video.url, fake.video_url("866100"));
    assert!(video.headers.is_empty(), "cdn urls get no token");
    assert_eq!(thumbnail, None);
    assert_eq!(
        download(KIND, &fake.base_url(), &video).await,
        fake.content("866100")
    );
}

#[tokio::test]
async fn failed_carries_task_status_msg() {
    let (fake, p) = setup(Script::fails_after(0, "risk control: sensitive content")).await;
    assert_eq!(
        p.poll("866100").await.unwrap(),
        PollOutcome::Failed {
            reason: "risk control: sensitive content".into()
        }
    );
    fake.script("866100", Script::step(Step::OutputsGone));
    let PollOutcome::Succeeded { video, .. } = p.poll("866100").await.unwrap() else {
        panic!("expected success");
    };
    assert!(download_is_gone(KIND, &fake.base_url(), &video).await);
}

#[tokio::test]
async fn error_answers_are_classified_by_klings_codes() {
    let (fake, p) = setup(Script::default()).await;
    check_error_answers(&p, "866100", |s| fake.script("866100", s)).await;
    check_hostile_bodies(&p, "866100", |s| fake.script("866100", s)).await;
    let p2 = impatient(KIND, &fake.base_url());
    check_hang_is_timeout(&p2, "866100", |s| fake.script("866100", s)).await;
    // A code on a 200 counts, whatever the status says.
    let raw = json!({"code": 1303, "message": "parallel task over resource pack limit", "request_id": "r"});
    fake.script(
        "866100",
        Script::step(Step::Raw {
            status: 200,
            body: raw.to_string(),
        }),
    );
    assert_eq!(
        p.poll("866100").await.unwrap_err().kind,
        ProviderErrorKind::RateLimited
    );
    let raw = json!({"code": 1102, "message": "resource pack exhausted", "request_id": "r"});
    fake.script(
        "866100",
        Script::step(Step::Raw {
            status: 429,
            body: raw.to_string(),
        }),
    );
    let e = p.poll("866100").await.unwrap_err();
    // An account problem (issue 9): Kling's own answer to a top-up.
    assert_eq!(e.kind, ProviderErrorKind::Account(429));
    assert!(
        e.message
            .contains("kling code 1102: resource pack exhausted"),
        "{e:?}"
    );
    let raw = json!({"code": 9999, "message": "?", "request_id": "r"});
    fake.script(
        "866100",
        Script::step(Step::Raw {
            status: 200,
            body: raw.to_string(),
        }),
    );
    assert_eq!(
        p.poll("866100").await.unwrap_err().kind,
        ProviderErrorKind::Malformed
    );
}

#[tokio::test]
async fn the_jwt_is_accepted_and_a_wrong_secret_is_refused() {
    let fake = FakeKling::start(KEY, SECRET).await;
    fake.script("866100", Script::default());
    assert!(
        provider(KIND, &fake.base_url())
            .poll("866100")
            .await
            .is_ok()
    );
    let mut cfg = config(KIND, &fake.base_url());
    cfg.api_secret = Some("not-the-secret".into());
    let p = build_provider(&cfg).unwrap();
    let e = p.poll("866100").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Unauthorized(401), "{e:?}");
    assert!(e.message.contains("kling code 1002"), "{e:?}");
    assert!(!e.message.contains("not-the-secret"));
    let e = p
        .submit(&submit_request(json!({"prompt": "x"}), "k"))
        .await
        .unwrap_err();
    assert_eq!(failure(&e), SubmitFailure::NotCreated);
    cfg.api_secret = None;
    assert!(build_provider(&cfg).is_err(), "kling needs its secret key");
    assert!(!format!("{cfg:?}").contains(SECRET));
}

#[tokio::test]
async fn submit_sends_the_idempotency_key_as_external_task_id() {
    let fake = FakeKling::start(KEY, SECRET).await;
    let p = provider(KIND, &fake.base_url());
    assert_eq!(p.submit_recovery(), SubmitRecovery::LookupByReference);
    let mut req = submit_request(
        json!({"prompt": "a cat", "model": "kling-v2-1", "seconds": 5, "size": "1280x720", "mode": "pro"}),
        "key-1",
    );
    req.webhook_url = Some("https://hooks.example/webhooks/kling?token=t".into());
    let id = p.submit(&req).await.unwrap();
    let seen = fake.last_create().unwrap();
    assert_eq!(seen.job_id, id);
    assert_eq!(
        seen.body,
        json!({
            "prompt": "a cat", "model_name": "kling-v2-1", "duration": "5", "aspect_ratio": "16:9",
            "mode": "pro", "external_task_id": "key-1",
            "callback_url": "https://hooks.example/webhooks/kling?token=t",
        })
    );
    assert_eq!(fake.creates("key-1"), 1);
    assert!(matches!(
        p.poll(&id).await.unwrap(),
        PollOutcome::Succeeded { .. }
    ));
}

#[tokio::test]
async fn lookup_finds_a_lost_create_and_knows_an_absent_one() {
    let fake = FakeKling::start(KEY, SECRET).await;
    let p = provider(KIND, &fake.base_url());
    let req = submit_request(json!({"prompt": "a cat"}), "key-lost");
    // The create reached Kling, the answer did not reach us.
    check_create_lost(&p, &req, |n| fake.lose_next_creates(n)).await;
    assert_eq!(fake.creates("key-lost"), 1);
    let task_id = fake.last_create().unwrap().job_id;
    assert_eq!(p.lookup(&req).await.unwrap(), Lookup::Found(task_id));
    let never = submit_request(json!({"prompt": "a dog"}), "key-never-sent");
    assert_eq!(p.lookup(&never).await.unwrap(), Lookup::Absent);
    // A 404 without Kling's own code is not proof of absence.
    fake.script(
        "key-odd",
        Script::step(Step::Raw {
            status: 404,
            body: "<html>nginx</html>".into(),
        }),
    );
    let odd = submit_request(json!({"prompt": "x"}), "key-odd");
    assert_eq!(
        p.lookup(&odd).await.unwrap_err().kind,
        ProviderErrorKind::NotFound
    );
    // Other errors stay errors.
    fake.script(
        "key-500",
        Script::step(Step::HttpError {
            status: 500,
            retry_after: None,
        }),
    );
    let busy = submit_request(json!({"prompt": "x"}), "key-500");
    assert_eq!(
        p.lookup(&busy).await.unwrap_err().kind,
        ProviderErrorKind::Server(500)
    );
}

#[tokio::test]
async fn a_held_create_is_found_once_released() {
    let fake = FakeKling::start(KEY, SECRET).await;
    let p = impatient(KIND, &fake.base_url());
    let req = submit_request(json!({"prompt": "a cat"}), "key-held");
    fake.hold_creates(true);
    let e = p.submit(&req).await.unwrap_err();
    assert_eq!(failure(&e), SubmitFailure::Unknown);
    assert_eq!(fake.held_creates(), 1);
    assert_eq!(p.lookup(&req).await.unwrap(), Lookup::Absent);
    fake.release_creates();
    for _ in 0..100 {
        if fake.creates("key-held") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(p.lookup(&req).await.unwrap(), Lookup::Found(_)));
}

#[tokio::test]
async fn submit_failures_are_classified() {
    let fake = FakeKling::start(KEY, SECRET).await;
    let p = provider(KIND, &fake.base_url());
    let req = submit_request(json!({"prompt": "a cat"}), "k");
    check_create_failures(&p, &req, |s| fake.script_creates(s)).await;
    check_create_timeout(&impatient(KIND, &fake.base_url()), &req, |s| {
        fake.script_creates(s)
    })
    .await;
    fake.script_creates(vec![CreateStep::HttpError {
        status: 503,
        retry_after: Some(4),
    }]);
    let e = p.submit(&req).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Server(503));
    assert_eq!(e.retry_after, Some(Duration::from_secs(4)));
    let base = fake.base_url();
    fake.shutdown().await;
    check_create_refused(KIND, &base, &req, "866100").await;
}

#[tokio::test]
async fn webhook_bodies_name_the_task() {
    let p = provider(KIND, "http://127.0.0.1:9");
    let body = json!({"task_id": "866200", "task_status": "succeed"});
    assert_eq!(
        p.webhook_job_id(body.to_string().as_bytes()),
        Some("866200".into())
    );
    let wrapped = json!({"code": 0, "data": {"task_id": "866201"}});
    assert_eq!(
        p.webhook_job_id(wrapped.to_string().as_bytes()),
        Some("866201".into())
    );
    assert_eq!(p.webhook_job_id(b"[]"), None);
}

/// Issue 9: Kling's account codes (arrears, resource pack used up, no access
/// to the model, IP allow-list) are the account's fault, not the job's; they
/// were `Client` errors, which failed the job on submit.
#[tokio::test]
async fn account_codes_are_account_faults_not_job_failures() {
    let (fake, p) = setup(Script::default()).await;
    let req = submit_request(json!({"prompt": "a cat"}), "ref-1");
    check_out_of_credit(
        &p,
        "866100",
        |s| fake.script("866100", s),
        &req,
        |s| fake.script_creates(s),
    )
    .await;
    assert_eq!(fake.creates("ref-1"), 0);
    for (code, status, kind) in [
        (1100, 429, ProviderErrorKind::Account(429)),
        (1101, 429, ProviderErrorKind::Account(429)),
        (1102, 429, ProviderErrorKind::Account(429)),
        (1103, 403, ProviderErrorKind::Account(403)),
        (1304, 429, ProviderErrorKind::Account(429)),
        // Documented on a 429, but Kling's codes decide: a 200 is no status
        // an account fault has, so the documented one stands in.
        (1102, 200, ProviderErrorKind::Account(429)),
        // Neighbours that stay what they were.
        (1200, 400, ProviderErrorKind::Client(400)),
        (1301, 400, ProviderErrorKind::Client(400)),
        (1302, 429, ProviderErrorKind::RateLimited),
    ] {
        let raw = json!({"code": code, "message": "m", "request_id": "r"});
        fake.script(
            "866100",
            Script::step(Step::Raw {
                status,
                body: raw.to_string(),
            }),
        );
        let e = p.poll("866100").await.unwrap_err();
        assert_eq!(e.kind, kind, "code {code} on {status}: {e:?}");
    }
    let raw = json!({"code": 1103, "message": "no access to kling-v2-master", "request_id": "r"});
    fake.script_creates(vec![CreateStep::Raw {
        status: 403,
        body: raw.to_string(),
    }]);
    let e = p.submit(&req).await.unwrap_err();
    assert_eq!(failure(&e), SubmitFailure::NotCreated, "{e:?}");
}

/// No documented cancel (see the adapter's module doc): nothing is sent and
/// only the local cancel happens.
#[tokio::test]
async fn cancel_sends_nothing() {
    let (fake, p) = setup(Script::default()).await;
    let before = fake.total_requests();
    assert_eq!(
        p.cancel("866100").await.unwrap(),
        clawcut_core::CancelAnswer::NotSupported
    );
    assert_eq!(fake.total_requests(), before);
    assert_eq!(fake.cancels("866100"), 0);
}
