//! Shared by the integration tests: a provider config pointing at a fake,
//! submit requests, and the checks every adapter must pass the same way
//! (error answers, create failures), written once.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use clawcut_core::{
    DownloadSpec, Provider, ProviderError, ProviderErrorKind, SubmitFailure, SubmitRequest,
};
use clawcut_providers::{
    DownloadLimits, DownloadPolicy, Downloader, ProviderConfig, ProviderKind, build_provider,
};
use clawcut_test_support::fake_common::{CreateStep, Script, Step};
use serde_json::Value;

pub const KEY: &str = "sk-test-0123456789";
pub const SECRET: &str = "kling-secret-0123456789";

/// Every field spelled out, as the daemon fills them.
pub fn config(kind: ProviderKind, base_url: &str) -> ProviderConfig {
    ProviderConfig {
        name: kind.as_str().to_owned(),
        kind,
        base_url: url::Url::parse(base_url).expect("fake base url"),
        api_key: KEY.to_owned(),
        api_secret: kind.needs_api_secret().then(|| SECRET.to_owned()),
        timeout: Duration::from_secs(5),
        max_in_flight: 4,
        requests_per_minute: None,
        allowed_download_hosts: Vec::new(),
    }
}

/// Roomy limits around `max_bytes`: a minute in all, a byte every 5 s.
pub fn limits(max_bytes: u64) -> DownloadLimits {
    DownloadLimits {
        max_bytes,
        deadline: Duration::from_secs(60),
        stall_window: Duration::from_secs(5),
        stall_min_bytes: 1,
    }
}

pub fn provider(kind: ProviderKind, base_url: &str) -> Arc<dyn Provider> {
    build_provider(&config(kind, base_url)).unwrap()
}

/// A provider with a short timeout, for hang tests.
pub fn impatient(kind: ProviderKind, base_url: &str) -> Arc<dyn Provider> {
    let mut cfg = config(kind, base_url);
    cfg.timeout = Duration::from_millis(300);
    build_provider(&cfg).unwrap()
}

pub fn submit_request(request: Value, key: &str) -> SubmitRequest {
    SubmitRequest {
        job_id: "job_1".into(),
        request: request.to_string(),
        idempotency_key: key.into(),
        webhook_url: None,
    }
}

/// The HTTP answers every adapter classifies alike: `script` makes the job
/// `id` answer one step forever.
pub async fn check_error_answers(p: &Arc<dyn Provider>, id: &str, script: impl Fn(Script)) {
    let cases = [
        (http(401, None), ProviderErrorKind::Unauthorized(401), None),
        (http(404, None), ProviderErrorKind::NotFound, None),
        (
            http(429, Some(7)),
            ProviderErrorKind::RateLimited,
            Some(Duration::from_secs(7)),
        ),
        (http(500, None), ProviderErrorKind::Server(500), None),
        (
            http(503, Some(2)),
            ProviderErrorKind::Server(503),
            Some(Duration::from_secs(2)),
        ),
        (Step::Malformed, ProviderErrorKind::Malformed, None),
        (
            Step::UnknownStatus("SOMETHING_NEW".into()),
            ProviderErrorKind::Malformed,
            None,
        ),
    ];
    for (step, kind, retry_after) in cases {
        script(Script::step(step.clone()));
        let e = p.poll(id).await.expect_err("expected an error");
        assert_eq!(e.kind, kind, "{step:?}: {e:?}");
        assert_eq!(e.retry_after, retry_after, "{step:?}");
        assert!(!e.message.contains(KEY), "{e:?}");
        if step == Step::UnknownStatus("SOMETHING_NEW".into()) {
            assert!(e.message.contains("SOMETHING_NEW"), "{e:?}");
        }
    }
}

fn http(status: u16, retry_after: Option<u64>) -> Step {
    Step::HttpError {
        status,
        retry_after,
    }
}

/// Bodies no provider documents, on 200: a classified answer, never a panic.
pub async fn check_hostile_bodies(p: &Arc<dyn Provider>, id: &str, script: impl Fn(Script)) {
    let bodies = [
        "null",
        "[]",
        "7",
        "\"x\"",
        "{}",
        r#"{"status": 5, "state": [], "done": "yes"}"#,
        r#"{"status": "SUCCEEDED", "output": [null, 3]}"#,
        r#"{"state": "completed", "assets": 5}"#,
        r#"{"status": "COMPLETED", "error": null}"#,
        r#"{"code": 0}"#,
        r#"{"code": 0, "data": {"task_status": "succeed", "task_result": {"videos": [{"url": 5}]}}}"#,
        r#"{"done": true, "response": 7}"#,
        r#"{"done": true, "response": {"generateVideoResponse": {"generatedSamples": [{"video": {"uri": "../x"}}]}}}"#,
        r#"{"done": true, "error": {"code": "x", "message": ["a"]}}"#,
    ];
    for body in bodies {
        script(Script::step(Step::Raw {
            status: 200,
            body: body.to_owned(),
        }));
        // Any classified answer is fine; a panic fails the test.
        let _ = p.poll(id).await;
    }
}

/// A poll that hangs past the timeout is a `Timeout`, quickly.
pub async fn check_hang_is_timeout(p: &Arc<dyn Provider>, id: &str, script: impl Fn(Script)) {
    script(Script::step(Step::Hang(Duration::from_secs(10))));
    let started = std::time::Instant::now();
    let e = p.poll(id).await.expect_err("expected a timeout");
    assert_eq!(e.kind, ProviderErrorKind::Timeout, "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A failed create, classified for the daemon.
pub fn failure(e: &ProviderError) -> SubmitFailure {
    e.kind.submit_failure()
}

/// Create answers: 400 → rejected, 429 → not created (with Retry-After),
/// 500 and an unreadable 2xx → unknown. `creates` scripts the next create.
pub async fn check_create_failures(
    p: &Arc<dyn Provider>,
    req: &SubmitRequest,
    creates: impl Fn(Vec<CreateStep>),
) {
    let err = |status, retry_after| CreateStep::HttpError {
        status,
        retry_after,
    };
    creates(vec![err(400, None)]);
    let e = p.submit(req).await.expect_err("400");
    assert_eq!(failure(&e), SubmitFailure::Rejected, "{e:?}");
    creates(vec![err(429, Some(9))]);
    let e = p.submit(req).await.expect_err("429");
    assert_eq!(failure(&e), SubmitFailure::NotCreated, "{e:?}");
    assert_eq!(e.retry_after, Some(Duration::from_secs(9)));
    creates(vec![err(500, None)]);
    let e = p.submit(req).await.expect_err("500");
    assert_eq!(failure(&e), SubmitFailure::Unknown, "{e:?}");
    creates(vec![CreateStep::Malformed]);
    let e = p.submit(req).await.expect_err("malformed");
    assert_eq!(e.kind, ProviderErrorKind::Malformed, "{e:?}");
    assert_eq!(failure(&e), SubmitFailure::Unknown);
}

/// A create whose answer hangs past the timeout: unknown, and the fake did
/// create the job (which is why it must not be retried blindly).
pub async fn check_create_timeout(
    p: &Arc<dyn Provider>,
    req: &SubmitRequest,
    creates: impl Fn(Vec<CreateStep>),
) {
    creates(vec![CreateStep::Hang(Duration::from_secs(10))]);
    let e = p.submit(req).await.expect_err("timeout");
    assert_eq!(e.kind, ProviderErrorKind::Timeout, "{e:?}");
    assert_eq!(failure(&e), SubmitFailure::Unknown);
}

/// A create whose connection is reset after the job was made: unknown.
pub async fn check_create_lost(p: &Arc<dyn Provider>, req: &SubmitRequest, lose: impl Fn(usize)) {
    lose(1);
    let e = p.submit(req).await.expect_err("lost");
    assert_eq!(failure(&e), SubmitFailure::Unknown, "{e:?}");
}

/// Nothing listening: `Connect`, so certainly not created.
pub async fn check_create_refused(
    kind: ProviderKind,
    base: &str,
    req: &SubmitRequest,
    poll_id: &str,
) {
    let p = provider(kind, base);
    let e = p.submit(req).await.expect_err("refused");
    assert_eq!(e.kind, ProviderErrorKind::Connect, "{e:?}");
    assert_eq!(failure(&e), SubmitFailure::NotCreated);
    assert_eq!(
        p.poll(poll_id).await.unwrap_err().kind,
        ProviderErrorKind::Connect
    );
}

/// Downloads `spec` under the provider's policy and returns the bytes.
pub async fn download(kind: ProviderKind, base: &str, spec: &DownloadSpec) -> Vec<u8> {
    let cfg = config(kind, base);
    let media = tempfile::tempdir().unwrap();
    let path = media.path().join(format!("out.{}", spec.extension));
    Downloader::new(Duration::from_secs(5))
        .unwrap()
        .download(
            spec,
            &DownloadPolicy::for_provider(&cfg),
            media.path(),
            &path,
            &limits(1 << 30),
            |_| {},
        )
        .await
        .unwrap();
    std::fs::read(&path).unwrap()
}

/// Whether a download of `spec` answers "gone" (404/410).
pub async fn download_is_gone(kind: ProviderKind, base: &str, spec: &DownloadSpec) -> bool {
    let cfg = config(kind, base);
    let media = tempfile::tempdir().unwrap();
    let path = media.path().join("out.mp4");
    Downloader::new(Duration::from_secs(5))
        .unwrap()
        .download(
            spec,
            &DownloadPolicy::for_provider(&cfg),
            media.path(),
            &path,
            &limits(1 << 30),
            |_| {},
        )
        .await
        .is_err_and(|e| e.is_output_gone())
}

/// The account is out of credit (each fake renders a scripted 402 in its
/// provider's own shape: Replicate's 402, OpenAI's 429 `insufficient_quota`,
/// Kling's code 1102): an `Account` fault on a poll and on a create, which
/// spends no attempt and creates nothing.
pub async fn check_out_of_credit(
    p: &Arc<dyn Provider>,
    id: &str,
    script: impl Fn(Script),
    req: &SubmitRequest,
    creates: impl Fn(Vec<CreateStep>),
) {
    script(Script::step(http(402, None)));
    let e = p.poll(id).await.expect_err("out of credit");
    assert!(
        matches!(e.kind, ProviderErrorKind::Account(_)),
        "poll: {e:?}"
    );
    assert!(!e.kind.counts_as_attempt(), "{e:?}");
    assert_eq!(e.kind.scope(), clawcut_core::FaultScope::Account);
    creates(vec![CreateStep::HttpError {
        status: 402,
        retry_after: None,
    }]);
    let e = p.submit(req).await.expect_err("out of credit");
    assert!(
        matches!(e.kind, ProviderErrorKind::Account(_)),
        "create: {e:?}"
    );
    assert_eq!(failure(&e), SubmitFailure::NotCreated, "{e:?}");
}

/// What [`answering`] replies to every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A loopback server that answers every request with `status`, these
/// headers and an empty JSON object, for answers no fake scripts (extra
/// headers). Returns its base URL; it lives as long as the test's runtime.
pub async fn canned_server(status: u16, headers: &[(&str, &str)]) -> String {
    let canned = Canned {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        body: b"{}".to_vec(),
    };
    answering(std::sync::Arc::new(std::sync::Mutex::new(canned))).await
}

/// A loopback server that answers every request with what `answer` holds
/// at that moment (any status, headers and bytes: nothing is checked), after
/// reading the request's head and the body it announces. Returns its base
/// URL; it lives as long as the test's runtime.
pub async fn answering(answer: std::sync::Arc<std::sync::Mutex<Canned>>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                // Read the body too, so closing never resets a client still
                // sending it.
                while seen.len() < head_end + len {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let a = answer.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let mut out = format!(
                    "HTTP/1.1 {} Canned\r\ncontent-type: application/json\r\n",
                    a.status
                );
                for (name, value) in &a.headers {
                    out.push_str(&format!("{name}: {value}\r\n"));
                }
                out.push_str(&format!(
                    "content-length: {}\r\nconnection: close\r\n\r\n",
                    a.body.len()
                ));
                let _ = socket.write_all(out.as_bytes()).await;
                let _ = socket.write_all(&a.body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}
