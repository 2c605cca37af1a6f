//! The overview's numbers that are computed, not read: the time jobs spend
//! in each state (p50/p95 per provider, from the newest audit events) and
//! error groups as operators name them.

use std::collections::BTreeMap;

use clawcut_core::Millis;
use clawcut_store::Transition;

/// The p50 and p95 of how long jobs stayed in one state, and over how
/// many state changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    pub p50: Millis,
    pub p95: Millis,
    pub n: usize,
}

/// Nearest-rank percentile of sorted values (`q` in 0..=100).
fn percentile(sorted: &[Millis], q: usize) -> Millis {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// (provider, state left) → spread of the time spent in it.
pub fn time_in_state(ts: &[Transition]) -> BTreeMap<(String, String), Spread> {
    let mut by: BTreeMap<(String, String), Vec<Millis>> = BTreeMap::new();
    for t in ts {
        let Some(from) = &t.from_status else { continue };
        if from == &t.to_status {
            // An operator's note (a reconcile asked for), not a state change.
            continue;
        }
        by.entry((t.provider.clone(), from.clone()))
            .or_default()
            .push((t.at - t.since).max(0));
    }
    by.into_iter()
        .map(|(k, mut v)| {
            v.sort_unstable();
            let spread = Spread {
                p50: percentile(&v, 50),
                p95: percentile(&v, 95),
                n: v.len(),
            };
            (k, spread)
        })
        .collect()
}

/// An error group's parts, read off the head of `last_error`: the
/// provider error's kind as `ProviderError` prints it (`Server(503):`)
/// gives its class label and HTTP status; any other head is its own class.
pub fn classify(head: &str) -> (String, Option<u16>) {
    let name = head.trim_end_matches(':');
    let (kind, status) = match name.split_once('(') {
        Some((k, rest)) => (k, rest.trim_end_matches(')').parse::<u16>().ok()),
        None => (name, None),
    };
    let class = match kind {
        "Connect" => "connect",
        "Network" => "network",
        "Timeout" => "timeout",
        "Server" => "server_error",
        "RateLimited" => "rate_limited",
        "Malformed" => "malformed",
        "NotFound" => "not_found",
        "Unauthorized" => "unauthorized",
        "Account" => "account",
        "Client" => "client_error",
        "" => "other",
        other => return (other.to_ascii_lowercase(), status),
    };
    let status = status.or(match kind {
        "RateLimited" => Some(429),
        "NotFound" => Some(404),
        _ => None,
    });
    (class.to_owned(), status)
}

/// A group's key in a URL: `provider|head` (a provider name has no `|`).
pub fn group_key(provider: &str, head: &str) -> String {
    format!("{provider}|{head}")
}

pub fn parse_group(key: &str) -> Option<(&str, &str)> {
    key.split_once('|')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(provider: &str, from: Option<&str>, to: &str, since: Millis, at: Millis) -> Transition {
        Transition {
            provider: provider.into(),
            from_status: from.map(str::to_owned),
            to_status: to.into(),
            since,
            at,
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<Millis> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 95), 95);
        assert_eq!(percentile(&[7], 95), 7);
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[1, 2], 50), 1);
        assert_eq!(percentile(&[1, 2], 95), 2);
    }

    #[test]
    fn time_in_state_groups_by_provider_and_the_state_left() {
        let ts = vec![
            t("openai", Some("pending"), "processing", 0, 1_000),
            t("openai", Some("pending"), "processing", 0, 3_000),
            t("openai", Some("processing"), "completed", 1_000, 11_000),
            t("runway", Some("pending"), "completed", 0, 500),
            // Not state changes: skipped.
            t("openai", Some("pending"), "pending", 0, 99_000),
            t("openai", None, "queued", 0, 99_000),
        ];
        let m = time_in_state(&ts);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[&("openai".into(), "pending".into())],
            Spread {
                p50: 1_000,
                p95: 3_000,
                n: 2
            }
        );
        assert_eq!(
            m[&("openai".into(), "processing".into())],
            Spread {
                p50: 10_000,
                p95: 10_000,
                n: 1
            }
        );
        assert_eq!(m[&("runway".into(), "pending".into())].n, 1);
    }

    #[test]
    fn error_heads_name_their_class_and_status() {
        assert_eq!(classify("Server(503):"), ("server_error".into(), Some(503)));
        assert_eq!(
            classify("Unauthorized(401):"),
            ("unauthorized".into(), Some(401))
        );
        assert_eq!(classify("Account(402):"), ("account".into(), Some(402)));
        assert_eq!(classify("Timeout:"), ("timeout".into(), None));
        assert_eq!(classify("RateLimited:"), ("rate_limited".into(), Some(429)));
        assert_eq!(
            classify("download failed:"),
            ("download failed".into(), None)
        );
        assert_eq!(classify(""), ("other".into(), None));
        assert_eq!(
            parse_group(&group_key("openai", "Server(503):")),
            Some(("openai", "Server(503):"))
        );
    }
}
