//! Provider requests per job (the benchmarks issue, item 6): for jobs that
//! take 30 s to 10 min at the provider, how many polls does each schedule
//! spend per completed job, and how late does it notice the end? Against
//! the minimum: one poll, right after the job is done.
//!
//! Pure arithmetic over the daemon's own `BackoffPolicy::delay` (the poll
//! cadence of running jobs is `[backoff]`), with the loop's claim tick
//! modelled: a due job is claimed at the next `reconcile.interval` tick
//! when the daemon is idle (slots that free claim at once, so a busy
//! daemon is closer to "no tick").
//!
//! `cargo run --release -p clawcut-core --example poll_schedule`

use std::time::Duration;

use clawcut_core::BackoffPolicy;

/// xorshift64*: a seeded, dependency-free sample in [0, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Schedule {
    name: &'static str,
    policy: BackoffPolicy,
    /// The idle loop's claim tick, if any.
    tick: Option<f64>,
    /// A webhook at the end makes the job due at once and wakes the loop.
    webhook: bool,
}

/// Polls spent and seconds from done to noticed, for a job done at `done`.
fn run(s: &Schedule, done: f64, rng: &mut Rng) -> (u32, f64) {
    let phase = rng.next() * s.tick.unwrap_or(0.0);
    let mut t = 0.0; // the first poll: the job is claimed
    let mut polls = 1u32;
    loop {
        if t >= done {
            return (polls, t - done);
        }
        let delay = s.policy.delay(polls, rng.next(), None).as_secs_f64();
        let due = t + delay;
        t = match s.tick {
            Some(tick) => phase + ((due - phase) / tick).ceil().max(0.0) * tick,
            None => due,
        };
        // The webhook at the end makes the job due and wakes the loop.
        if s.webhook && t > done {
            t = done;
        }
        polls += 1;
    }
}

fn policy(initial: u64, max: u64, multiplier: f64, jitter: bool) -> BackoffPolicy {
    BackoffPolicy {
        initial: Duration::from_secs(initial),
        max: Duration::from_secs(max),
        multiplier,
        jitter,
        max_attempts: 12,
    }
}

fn main() {
    let spec = || policy(5, 900, 2.0, true);
    let schedules = [
        Schedule {
            name: "fixed 5 s, no tick",
            policy: policy(5, 5, 1.0, false),
            tick: None,
            webhook: false,
        },
        Schedule {
            name: "fixed 5 s, 30 s tick",
            policy: policy(5, 5, 1.0, false),
            tick: Some(30.0),
            webhook: false,
        },
        Schedule {
            name: "SPEC default, no tick",
            policy: spec(),
            tick: None,
            webhook: false,
        },
        Schedule {
            name: "SPEC default, 30 s tick",
            policy: spec(),
            tick: Some(30.0),
            webhook: false,
        },
        Schedule {
            name: "SPEC default + webhooks",
            policy: spec(),
            tick: Some(30.0),
            webhook: true,
        },
        Schedule {
            name: "capped at 60 s, 30 s tick",
            policy: policy(5, 60, 2.0, true),
            tick: Some(30.0),
            webhook: false,
        },
        Schedule {
            name: "capped at 60 s, no tick",
            policy: policy(5, 60, 2.0, true),
            tick: None,
            webhook: false,
        },
    ];
    // 30 s to 10 min in 10 s steps, 500 jitter draws each.
    let durations: Vec<f64> = (3..=60).map(|k| f64::from(k) * 10.0).collect();
    const DRAWS: usize = 500;
    println!(
        "jobs done after 30 s .. 10 min (10 s steps, {DRAWS} draws each); minimum: 1 poll, 0 s late"
    );
    println!(
        "{:<28} {:>10} {:>11} {:>11} {:>11}",
        "schedule", "polls/job", "late, mean", "late, p95", "late, max"
    );
    for s in &schedules {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut polls = 0u64;
        let mut late = Vec::with_capacity(durations.len() * DRAWS);
        for &d in &durations {
            for _ in 0..DRAWS {
                // Anywhere in its 10 s step, so no schedule lines up with it.
                let done = d + 10.0 * rng.next();
                let (p, l) = run(s, done, &mut rng);
                polls += u64::from(p);
                late.push(l);
            }
        }
        late.sort_by(f64::total_cmp);
        let n = late.len();
        let mean = late.iter().sum::<f64>() / n as f64;
        println!(
            "{:<28} {:>10.1} {:>10.1}s {:>10.1}s {:>10.1}s",
            s.name,
            polls as f64 / n as f64,
            mean,
            late[n * 95 / 100],
            late[n - 1]
        );
    }
}
