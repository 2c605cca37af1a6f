//! Property test of the config loader: any text — garbage, broken TOML,
//! every known key with a value of any type or shape — is either a config
//! or an error naming the file and saying what is wrong. Never a panic.

use std::path::Path;

use proptest::prelude::*;

use crate::config::Config;

/// Every key of the contract and the extra ones, by table.
const KEYS: &[(&str, &str)] = &[
    ("database", "url"),
    ("reconcile", "interval"),
    ("reconcile", "on_startup"),
    ("reconcile", "batch_size"),
    ("reconcile", "concurrency"),
    ("reconcile", "min_age"),
    ("reconcile", "max_age"),
    ("reconcile", "lease_ttl"),
    ("reconcile", "shutdown_grace"),
    ("backoff", "initial"),
    ("backoff", "max"),
    ("backoff", "multiplier"),
    ("backoff", "jitter"),
    ("backoff", "max_attempts"),
    ("submit", "enabled"),
    ("media", "dir"),
    ("media", "max_bytes"),
    ("media", "download_deadline"),
    ("media", "stall_timeout"),
    ("media", "stall_min_bytes"),
    ("http", "listen"),
    ("http", "admin_token_env"),
    ("http", "public_url"),
    ("log", "format"),
    ("log", "level"),
    ("provider_health", "outage_after"),
    ("provider_health", "cooldown"),
    ("provider_health", "max_cooldown"),
    ("providers.p", "kind"),
    ("providers.p", "base_url"),
    ("providers.p", "api_key_env"),
    ("providers.p", "api_secret_env"),
    ("providers.p", "timeout"),
    ("providers.p", "max_in_flight"),
    ("providers.p", "allowed_download_hosts"),
    ("providers.p", "requests_per_minute"),
    ("providers.p", "webhook_secret_env"),
];

/// A TOML value of any type, some of them plausible.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}").replace("inf", "inf").replace("NaN", "nan")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[ -~&&[^\"\\\\]]{0,20}".prop_map(|s| format!("\"{s}\"")),
        prop::sample::select(vec![
            "\"30s\"",
            "\"0s\"",
            "\"-1s\"",
            "\"99999999999d\"",
            "\"2GiB\"",
            "\"0B\"",
            "\"18446744073709551615B\"",
            "\"sqlite:///tmp/x.db\"",
            "\"postgres://u:p@h/db\"",
            "\"openai\"",
            "\"kling\"",
            "\"*\"",
            "\"*.com\"",
            "[\"*.x.y\", 3]",
            "[]",
            "{}",
            "\"127.0.0.1:0\"",
            "\"http://\"",
            "\"json\"",
            "1e400",
            "-0",
        ])
        .prop_map(str::to_owned),
    ]
}

fn config_text() -> impl Strategy<Value = String> {
    prop_oneof![
        // Garbage.
        ".{0,200}",
        // Known keys with any values, grouped under their tables.
        prop::collection::vec((prop::sample::select(KEYS), value()), 0..12).prop_map(|kv| {
            let mut out = String::new();
            for ((table, key), v) in kv {
                out.push_str(&format!("[{table}]\n{key} = {v}\n"));
            }
            out
        }),
        // Unknown keys and tables.
        ("[a-z_]{1,12}", "[a-z_]{1,12}", value())
            .prop_map(|(t, k, v)| format!("[{t}]\n{k} = {v}\n")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_a_config_or_an_error_naming_the_file(text in config_text()) {
        let path = Path::new("/etc/clawcut-worker/config.toml");
        match Config::parse(path, &text) {
            Ok(cfg) => prop_assert!(cfg.validate().is_ok()),
            Err(e) => {
                prop_assert_eq!(e.file.as_path(), path);
                prop_assert!(!e.problem.trim().is_empty());
                let shown = e.to_string();
                prop_assert!(shown.contains("config.toml"), "{}", shown);
            }
        }
    }
}
