//! Property tests for what outsiders feed the daemon: webhook bodies and
//! headers (any bytes, any JSON) for every provider kind, and config files
//! (any text, any TOML-ish shape). None may panic; each answers with a
//! clear error or a plain "no".

use std::path::Path;
use std::time::Duration;

use clawcut_providers::{ProviderConfig, ProviderKind, build_provider};
use proptest::prelude::*;

use crate::config::Config;

/// One adapter of each kind, built once: building one loads a TLS
/// configuration, far slower than what is being tested.
fn providers() -> &'static [std::sync::Arc<dyn clawcut_core::Provider>] {
    static ALL: std::sync::LazyLock<Vec<std::sync::Arc<dyn clawcut_core::Provider>>> =
        std::sync::LazyLock::new(build_all);
    &ALL
}

fn build_all() -> Vec<std::sync::Arc<dyn clawcut_core::Provider>> {
    ProviderKind::ALL
        .iter()
        .map(|&kind| {
            build_provider(&ProviderConfig {
                name: kind.as_str().into(),
                kind,
                base_url: url::Url::parse("https://provider.example").unwrap(),
                api_key: "key-0123456789".into(),
                api_secret: kind.needs_api_secret().then(|| "secret-0123456789".into()),
                timeout: Duration::from_secs(5),
                max_in_flight: 1,
                requests_per_minute: None,
                allowed_download_hosts: Vec::new(),
            })
            .unwrap()
        })
        .collect()
}

/// JSON values of any shape, a few levels deep.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        ".{0,40}".prop_map(serde_json::Value::from),
        // The keys the parsers look for, with odd values.
        prop_oneof![
            Just("id"),
            Just("request_id"),
            Just("status"),
            Just("task_id")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("request_id".to_owned()),
                    Just("task_id".to_owned()),
                    Just("data".to_owned()),
                    Just("status".to_owned()),
                    ".{0,10}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            prop_oneof![
                Just("webhook-id".to_owned()),
                Just("webhook-timestamp".to_owned()),
                Just("webhook-signature".to_owned()),
                "[a-z-]{1,20}"
            ],
            ".{0,80}",
        ),
        0..5,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn webhook_parsers_take_any_bytes(body in prop::collection::vec(any::<u8>(), 0..512), hs in headers(), now in any::<i64>()) {
        for p in providers() {
            if let Some(id) = p.webhook_job_id(&body) {
                prop_assert!(!id.is_empty());
            }
            let _ = p.verify_webhook(&hs, &body, "whsec_c2VjcmV0LXNpZ25pbmcta2V5", now);
            let _ = p.verify_webhook(&hs, &body, "", now);
        }
    }

    #[test]
    fn webhook_parsers_take_any_json(v in json(), hs in headers()) {
        let body = serde_json::to_vec(&v).unwrap();
        for p in providers() {
            let _ = p.webhook_job_id(&body);
            let _ = p.verify_webhook(&hs, &body, "whsec_c2VjcmV0LXNpZ25pbmcta2V5", 1_800_000_000);
        }
    }

    #[test]
    fn config_loader_takes_any_text(text in ".{0,400}") {
        if let Err(e) = Config::parse(Path::new("/etc/cw.toml"), &text) {
            prop_assert!(e.to_string().starts_with("config /etc/cw.toml"), "{e}");
            prop_assert!(!e.problem.is_empty());
        }
    }

    #[test]
    fn config_loader_takes_any_known_key_with_any_value(
        section in prop_oneof![Just("reconcile"), Just("backoff"), Just("media"), Just("http"), Just("submit"), Just("log"), Just("database")],
        key in prop_oneof![
            Just("interval"), Just("batch_size"), Just("concurrency"), Just("min_age"), Just("max_age"),
            Just("lease_ttl"), Just("initial"), Just("max"), Just("multiplier"), Just("max_attempts"),
            Just("max_bytes"), Just("dir"), Just("listen"), Just("header_timeout"), Just("max_connections"),
            Just("webhooks_per_minute"), Just("url"), Just("enabled"), Just("format"), Just("level")
        ],
        value in prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            any::<bool>().prop_map(|b| b.to_string()),
            ".{0,30}".prop_map(|s| format!("{s:?}")),
            "[0-9]{1,25}(ns|ms|s|m|h|d|KiB|GiB|TiB|EiB)".prop_map(|s| format!("{s:?}")),
            Just("[]".to_owned()),
            Just("{}".to_owned()),
        ],
    ) {
        let text = format!("[{section}]\n{key} = {value}\n");
        if let Err(e) = Config::parse(Path::new("/etc/cw.toml"), &text) {
            prop_assert!(!e.problem.is_empty(), "{text}");
            if let Some(k) = &e.key {
                prop_assert!(!k.is_empty(), "{text}: {e}");
            }
        }
    }
}
