//! Shared by the integration tests: a provider config pointing at a fake.
#![allow(dead_code)]

use std::time::Duration;

use clawcut_providers::{ProviderConfig, ProviderKind};

pub const KEY: &str = "sk-test-0123456789";

pub fn config(kind: ProviderKind, base_url: &str) -> ProviderConfig {
    ProviderConfig {
        name: kind.as_str().to_owned(),
        kind,
        base_url: url::Url::parse(base_url).expect("fake base url"),
        api_key: KEY.to_owned(),
        timeout: Duration::from_secs(5),
        max_in_flight: 4,
        allowed_download_hosts: Vec::new(),
    }
}
