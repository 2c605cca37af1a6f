//! Property tests: whatever a provider answers — arbitrary bytes, arbitrary
//! JSON, JSON shaped like its documents with the wrong types, any status —
//! no adapter panics. A poll answers an outcome or an error with a message;
//! a create answers an id or an error. (Webhook bodies and the config
//! loader have theirs in the daemon crate, `src/props.rs`.)
//!
//! The answers come from a minimal HTTP/1.1 server on 127.0.0.1 that replies
//! to every request with the case's status and body, so the real adapter
//! code (reqwest, its error mapping, its JSON reading) is what is tested.

mod common;

use std::sync::{Arc, Mutex};

use clawcut_core::{Provider, SubmitRequest};
use clawcut_providers::ProviderKind;
use proptest::prelude::*;
use serde_json::{Map, Value};

use common::{Canned, answering};

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
    answer: Arc<Mutex<Canned>>,
    providers: Vec<(ProviderKind, Arc<dyn Provider>)>,
}

fn rig() -> Rig {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let answer = Arc::new(Mutex::new(Canned {
        status: 200,
        headers: vec![],
        body: b"{}".to_vec(),
    }));
    let base = rt.block_on(answering(answer.clone()));
    let providers = ProviderKind::ALL
        .iter()
        .map(|k| (*k, common::impatient(*k, &base)))
        .collect();
    Rig {
        rt,
        answer,
        providers,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn no_answer_makes_an_adapter_panic(status in status(), body in body(), headers in headers()) {
        static RIG: std::sync::OnceLock<Rig> = std::sync::OnceLock::new();
        let rig = RIG.get_or_init(rig);
        *rig.answer.lock().unwrap() = Canned { status, headers, body: body.clone() };
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
}
