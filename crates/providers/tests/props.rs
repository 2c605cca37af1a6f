//! Property tests: whatever a provider answers — arbitrary bytes, arbitrary
//! JSON, JSON shaped like its documents with the wrong types, any status —
//! no adapter panics. A poll answers an outcome or an error with a message;
//! a create answers an id or an error; webhook parsers and signature checks
//! answer for any body and headers.
//!
//! The answers come from a minimal HTTP/1.1 server on 127.0.0.1 that replies
//! to every request with the case's status and body, so the real adapter
//! code (reqwest, its error mapping, its JSON reading) is what is tested.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use clawcut_core::{Provider, SubmitRequest};
use clawcut_providers::ProviderKind;
use proptest::prelude::*;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server answers now.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
}

struct Server {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
}

async fn serve() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = Arc::new(Mutex::new(Answer {
        status: 200,
        body: b"{}".to_vec(),
        headers: vec![],
    }));
    let shared = answer.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let shared = shared.clone();
            tokio::spawn(async move {
                // Read the head, then as much body as it announces.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let a = shared.lock().unwrap().clone();
                let mut out = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    a.status,
                    a.body.len()
                );
                for (k, v) in &a.headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let _ = sock.write_all(out.as_bytes()).await;
                let _ = sock.write_all(&a.body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Server { addr, answer }
}

/// Keys the adapters read, so generated objects often look like answers.
const KEYS: &[&str] = &[
    "id",
    "status",
    "state",
    "output",
    "error",
    "message",
    "code",
    "data",
    "task_id",
    "task_status",
    "task_status_msg",
    "task_result",
    "videos",
    "url",
    "assets",
    "video",
    "image",
    "failure_reason",
    "failure",
    "done",
    "response",
    "name",
    "generateVideoResponse",
    "generatedSamples",
    "uri",
    "metadata",
    "expires_at",
    "created_at",
    "progress",
    "urls",
    "get",
    "cancel",
    "request_id",
    "response_url",
    "status_url",
    "logs",
    "detail",
    "title",
    "type",
    "error_type",
    "images",
    "thumbnail",
    "raiMediaFilteredReasons",
    "predict",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("succeeded".to_owned()),
            Just("completed".to_owned()),
            Just("COMPLETED".to_owned()),
            Just("SUCCEEDED".to_owned()),
            Just("succeed".to_owned()),
            Just("failed".to_owned()),
            Just("https://127.0.0.1/v.mp4".to_owned()),
            Just("http://[::1]:0/x".to_owned()),
            ".{0,40}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![prop::sample::select(KEYS).prop_map(str::to_owned), ".{0,8}"],
                    inner
                ),
                0..8
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..256),
        Just(Vec::new()),
        Just(b"{\"status\":".to_vec()),
    ]
}

fn status() -> impl Strategy<Value = u16> {
    prop::sample::select(vec![
        200u16, 201, 202, 204, 301, 400, 401, 402, 403, 404, 409, 410, 422, 429, 500, 502, 503,
    ])
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            prop::sample::select(vec![
                "retry-after",
                "retry-after-ms",
                "openai-poll-after-ms",
                "x-fal-error-type",
                "location",
            ])
            .prop_map(str::to_owned),
            "[ -~]{0,24}",
        ),
        0..3,
    )
}

/// One poll id per adapter that passes its own shape check, so the answer
/// is really fetched and parsed.
fn poll_id(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Fal => "fal-ai/veo3/fast|req_1",
        ProviderKind::Veo => "models/veo-3.0-generate-001/operations/op_1",
        ProviderKind::OpenAi
        | ProviderKind::Replicate
        | ProviderKind::Runway
        | ProviderKind::Luma
        | ProviderKind::Kling => "job_1",
    }
}

fn submit() -> SubmitRequest {
    SubmitRequest {
        job_id: "job_1".into(),
        request: r#"{"prompt":"a cat","model":"gen4.5","seconds":"4","size":"1280x720","ratio":"1280:720","duration":5,"model_name":"kling-v2","image":"https://127.0.0.1/i.png"}"#.into(),
        idempotency_key: "cw-job_1-0001".into(),
        webhook_url: None,
    }
}

struct Rig {
    rt: tokio::runtime::Runtime,
    server: Server,
    providers: Vec<(ProviderKind, Arc<dyn Provider>)>,
}

fn rig() -> Rig {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(serve());
    let base = format!("http://{}", server.addr);
    let providers = ProviderKind::ALL
        .iter()
        .map(|k| (*k, common::impatient(*k, &base)))
        .collect();
    Rig {
        rt,
        server,
        providers,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn no_answer_makes_an_adapter_panic(status in status(), body in body(), headers in headers()) {
        static RIG: std::sync::OnceLock<Rig> = std::sync::OnceLock::new();
        let rig = RIG.get_or_init(rig);
        *rig.server.answer.lock().unwrap() = Answer { status, body: body.clone(), headers };
        rig.rt.block_on(async {
            for (kind, p) in &rig.providers {
                match p.poll(poll_id(*kind)).await {
                    Ok(_) => {}
                    Err(e) => prop_assert!(!e.message.trim().is_empty(), "{kind:?}: empty error message"),
                }
                match p.submit(&submit()).await {
                    Ok(id) => prop_assert!(!id.is_empty(), "{kind:?}: empty provider id from {status}"),
                    Err(e) => prop_assert!(!e.message.trim().is_empty(), "{kind:?}: empty error message"),
                }
                let _ = p.lookup(&submit()).await;
                let _ = p.cancel(poll_id(*kind)).await;
            }
            Ok(())
        })?;
    }

    #[test]
    fn webhook_parsers_answer_for_any_body(body in body(), sig in "[ -~]{0,120}", id in "[ -~]{0,40}", ts in any::<i64>()) {
        static RIG: std::sync::OnceLock<Rig> = std::sync::OnceLock::new();
        let rig = RIG.get_or_init(rig);
        let headers = vec![
            ("webhook-id".to_owned(), id),
            ("webhook-timestamp".to_owned(), ts.to_string()),
            ("webhook-signature".to_owned(), sig),
        ];
        for (_, p) in &rig.providers {
            let _ = p.webhook_job_id(&body);
            let _ = p.verify_webhook(&headers, &body, "whsec_c2VjcmV0", ts);
            let _ = p.verify_webhook(&headers, &body, "", i64::MIN);
        }
    }
}
