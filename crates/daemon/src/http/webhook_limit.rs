//! A token bucket per provider for accepted webhooks: a provider (or
//! someone replaying its valid deliveries) cannot turn webhooks into a
//! stream of writes. Over the budget the answer is 429 with `Retry-After`;
//! providers retry, and the daemon polls anyway.

use std::collections::HashMap;
use std::sync::Mutex;

use clawcut_core::Millis;

/// Buckets of `per_minute` tokens, refilled continuously.
#[derive(Debug)]
pub struct WebhookLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Millis,
}

impl WebhookLimiter {
    pub fn new(per_minute: u32) -> Self {
        WebhookLimiter {
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token from `provider`'s bucket; `Err(ms)` is how long until
    /// one is there.
    pub fn take(&self, provider: &str, now: Millis) -> Result<(), Millis> {
        let capacity = f64::from(self.per_minute);
        let per_ms = capacity / 60_000.0;
        let mut all = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = all.entry(provider.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        // A clock that steps back refills nothing (and takes nothing away).
        let elapsed = now.saturating_sub(b.at).max(0) as f64;
        b.tokens = (b.tokens + elapsed * per_ms).min(capacity);
        b.at = b.at.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / per_ms).ceil() as Millis)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_the_budget_then_one_per_refill() {
        let l = WebhookLimiter::new(60);
        for _ in 0..60 {
            assert_eq!(l.take("rep", 1_000), Ok(()));
        }
        let wait = l.take("rep", 1_000).unwrap_err();
        assert!((999..=1000).contains(&wait), "{wait}");
        // Another provider has its own bucket.
        assert_eq!(l.take("fal", 1_000), Ok(()));
        assert!(l.take("rep", 1_500).is_err());
        assert_eq!(l.take("rep", 2_000), Ok(()));
        assert!(l.take("rep", 2_000).is_err());
        // A clock stepping back neither refills nor panics.
        assert!(l.take("rep", 0).is_err());
        // Idle for long: back to a full bucket, never more.
        for _ in 0..60 {
            assert_eq!(l.take("rep", 10_000_000), Ok(()));
        }
        assert!(l.take("rep", 10_000_000).is_err());
    }
}
