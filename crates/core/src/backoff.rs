//! The persisted retry and poll schedule.
//!
//! The daemon stores the *result* of this math (`next_attempt_at`, `attempts`,
//! `polls`) in the job row, so a restart never resets a schedule. Randomness
//! comes in as an argument (`sample` in `[0, 1)`) to keep this module pure.

use std::time::Duration;

/// A provider's "come back later" (`Retry-After`, a poll hint) is honoured
/// up to this much, so a garbage header cannot park a job for years. It may
/// exceed `max`: a provider that says "rate limited for six hours" means it,
/// and polling it sooner only spends attempts.
pub const MAX_FLOOR: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, PartialEq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    pub jitter: bool,
    /// Transient errors before a job fails.
    pub max_attempts: u32,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(15 * 60),
            multiplier: 2.0,
            jitter: true,
            max_attempts: 12,
        }
    }
}

impl BackoffPolicy {
    /// The longest wait before try number `n` (1-based):
    /// `min(max, initial * multiplier^(n-1))`, computed without overflow.
    pub fn ceiling(&self, n: u32) -> Duration {
        let exp = n.saturating_sub(1).min(1024) as i32;
        let mult = if self.multiplier.is_finite() && self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let secs = self.initial.as_secs_f64() * mult.powi(exp);
        let max = self.max.max(self.initial);
        if !secs.is_finite() || secs >= max.as_secs_f64() {
            max
        } else {
            // `try_`: never a panic, whatever rounding does near Duration::MAX.
            Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max))
        }
    }

    /// The wait before try number `n`: "full jitter" (uniform in
    /// `[0, ceiling]`) when jitter is on, the ceiling itself otherwise; never
    /// less than `floor` (a provider's `Retry-After` or poll hint, itself
    /// capped at [`MAX_FLOOR`]).
    pub fn delay(&self, n: u32, sample: f64, floor: Option<Duration>) -> Duration {
        let ceiling = self.ceiling(n);
        let base = if self.jitter {
            let s = if sample.is_finite() {
                sample.clamp(0.0, 1.0)
            } else {
                0.0
            };
            // Not `ceiling.mul_f64(s)`: that panics when `ceiling` is near
            // Duration::MAX and `s` is 1.0 (the product rounds up past it).
            Duration::try_from_secs_f64(ceiling.as_secs_f64() * s)
                .map_or(ceiling, |d| d.min(ceiling))
        } else {
            ceiling
        };
        match floor {
            Some(f) => base.max(f.min(MAX_FLOOR)),
            None => base,
        }
    }

    /// Whether `attempts` transient errors exhaust the job.
    pub fn exhausted(&self, attempts: u32) -> bool {
        attempts >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy::default()
    }

    #[test]
    fn ceilings_double_then_cap() {
        let p = policy();
        assert_eq!(p.ceiling(1), Duration::from_secs(5));
        assert_eq!(p.ceiling(2), Duration::from_secs(10));
        assert_eq!(p.ceiling(3), Duration::from_secs(20));
        assert_eq!(p.ceiling(8), Duration::from_secs(640));
        assert_eq!(p.ceiling(9), Duration::from_secs(900));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(900));
    }

    #[test]
    fn without_jitter_the_delay_is_the_ceiling() {
        let p = BackoffPolicy {
            jitter: false,
            ..policy()
        };
        assert_eq!(p.delay(3, 0.0, None), Duration::from_secs(20));
    }

    #[test]
    fn retry_after_is_a_floor_and_is_capped() {
        let p = policy();
        assert_eq!(
            p.delay(1, 0.0, Some(Duration::from_secs(120))),
            Duration::from_secs(120)
        );
        assert_eq!(
            p.delay(1, 0.0, Some(Duration::from_secs(10 * 86400))),
            MAX_FLOOR
        );
    }

    #[test]
    fn nonsense_multipliers_do_not_shrink_or_overflow() {
        for m in [0.0, -3.0, f64::NAN, f64::INFINITY, 1e300] {
            let p = BackoffPolicy {
                multiplier: m,
                ..policy()
            };
            for n in [1, 2, 50, u32::MAX] {
                let c = p.ceiling(n);
                assert!(c >= p.initial && c <= p.max, "m={m} n={n} c={c:?}");
            }
        }
    }

    #[test]
    fn huge_policies_never_panic() {
        // A policy the config refuses, but the math must not trust the config.
        let p = BackoffPolicy {
            initial: Duration::MAX,
            max: Duration::MAX,
            multiplier: 100.0,
            jitter: true,
            max_attempts: 1,
        };
        for n in [0, 1, 2, u32::MAX] {
            assert_eq!(p.ceiling(n), Duration::MAX);
            for sample in [0.0, 0.5, 0.999_999_999_999_999_9, 1.0, 2.0, -1.0, f64::NAN] {
                let d = p.delay(n, sample, Some(Duration::MAX));
                assert!(d >= MAX_FLOOR, "n={n} sample={sample} d={d:?}");
            }
        }
        assert_eq!(p.delay(1, 1.0, None), Duration::MAX);
        let no_jitter = BackoffPolicy { jitter: false, ..p };
        assert_eq!(no_jitter.delay(1, 0.0, None), Duration::MAX);
    }

    #[test]
    fn provider_floors_are_capped_whatever_they_say() {
        let p = policy();
        for floor in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            MAX_FLOOR + Duration::from_nanos(1),
        ] {
            assert_eq!(p.delay(1, 0.0, Some(floor)), MAX_FLOOR, "{floor:?}");
        }
        assert_eq!(p.delay(1, 0.0, Some(Duration::ZERO)), Duration::ZERO);
    }

    #[test]
    fn exhaustion() {
        let p = policy();
        assert!(!p.exhausted(11));
        assert!(p.exhausted(12));
    }

    proptest! {
        #[test]
        fn delay_stays_within_bounds(
            initial_ms in 1u64..60_000,
            max_ms in 1u64..3_600_000,
            multiplier in 1.0f64..10.0,
            n in 1u32..200,
            sample in 0.0f64..1.0,
            floor_ms in proptest::option::of(0u64..200_000_000),
        ) {
            let p = BackoffPolicy {
                initial: Duration::from_millis(initial_ms),
                max: Duration::from_millis(max_ms),
                multiplier,
                jitter: true,
                max_attempts: 12,
            };
            let floor = floor_ms.map(Duration::from_millis);
            let d = p.delay(n, sample, floor);
            let ceiling = p.ceiling(n);
            let lo = floor.map(|f| f.min(MAX_FLOOR)).unwrap_or_default();
            prop_assert!(d >= lo);
            prop_assert!(d <= ceiling.max(lo));
            prop_assert!(ceiling <= p.max.max(p.initial));
        }

        #[test]
        fn jitter_covers_the_whole_range(n in 1u32..20) {
            let p = policy();
            let ceiling = p.ceiling(n);
            prop_assert_eq!(p.delay(n, 0.0, None), Duration::ZERO);
            let top = p.delay(n, 0.999_999, None);
            prop_assert!(top <= ceiling && top >= ceiling.mul_f64(0.999));
            let mid = p.delay(n, 0.5, None);
            prop_assert!(mid >= ceiling.mul_f64(0.49) && mid <= ceiling.mul_f64(0.51));
        }

        #[test]
        fn no_policy_or_sample_panics_or_exceeds_its_bounds(
            initial_ns in any::<u64>(),
            initial_s in any::<u64>(),
            max_s in any::<u64>(),
            multiplier in any::<f64>(),
            jitter in any::<bool>(),
            n in any::<u32>(),
            sample in any::<f64>(),
            floor_s in proptest::option::of(any::<u64>()),
        ) {
            let initial = Duration::new(initial_s, (initial_ns % 1_000_000_000) as u32);
            let p = BackoffPolicy {
                initial,
                max: Duration::from_secs(max_s),
                multiplier,
                jitter,
                max_attempts: 12,
            };
            let floor = floor_s.map(Duration::from_secs);
            let d = p.delay(n, sample, floor);
            let top = p.max.max(p.initial);
            prop_assert!(p.ceiling(n) <= top);
            prop_assert!(d <= top.max(MAX_FLOOR));
            if let Some(f) = floor {
                prop_assert!(d >= f.min(MAX_FLOOR));
            }
        }

        #[test]
        fn ceilings_never_decrease(n in 1u32..500, multiplier in 1.0f64..5.0) {
            let p = BackoffPolicy { multiplier, ..policy() };
            prop_assert!(p.ceiling(n) <= p.ceiling(n + 1));
        }
    }
}
