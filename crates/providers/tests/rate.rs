//! The per-provider requests-per-minute cap: paused-clock checks of the
//! limiter, and one short real-time check that the adapters go through it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use clawcut_providers::{ProviderKind, RateLimiter, build_provider};
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};
use common::{KEY, config};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn callers_wait_after_the_burst_and_never_fail() {
    // 12 rpm: a burst of 2, then one every 5 s.
    let limiter = Arc::new(RateLimiter::new(12));
    assert_eq!(limiter.burst(), 2);
    let start = Instant::now();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let l = Arc::clone(&limiter);
            tokio::spawn(async move {
                l.acquire().await;
                start.elapsed()
            })
        })
        .collect();
    let mut waited = Vec::new();
    for t in tasks {
        waited.push(t.await.unwrap());
    }
    waited.sort();
    let secs: Vec<u64> = waited.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![0, 0, 5, 10, 15]);
}

#[tokio::test(start_paused = true)]
async fn a_quiet_minute_refills_the_burst() {
    let limiter = RateLimiter::new(60); // burst 10, one per second
    let start = Instant::now();
    for _ in 0..10 {
        limiter.acquire().await;
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    limiter.acquire().await;
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    tokio::time::sleep(Duration::from_secs(60)).await;
    let again = Instant::now();
    for _ in 0..10 {
        limiter.acquire().await;
    }
    assert_eq!(again.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn polls_go_through_the_providers_limiter() {
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(Script::default());
    let mut cfg = config(ProviderKind::OpenAi, &fake.base_url());
    // 300 rpm: a burst of 50, then one per 200 ms.
    cfg.requests_per_minute = Some(300);
    let p = build_provider(&cfg).unwrap();
    let start = std::time::Instant::now();
    for i in 0..52 {
        p.poll(&format!("video_{i}")).await.unwrap();
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(390), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    cfg.requests_per_minute = Some(0);
    assert!(build_provider(&cfg).is_err());
}
