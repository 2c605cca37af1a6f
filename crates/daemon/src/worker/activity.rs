//! What this process has been doing lately, for the operator panel: its
//! last steps (one per job worked) and, per provider, how many answers
//! were faults over the last minutes. In memory, per process: a restart
//! starts them empty, and each replica shows its own.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use clawcut_core::Millis;

use crate::report::JobReport;

/// Steps kept.
const RECENT_STEPS: usize = 50;
/// The error-rate window: this many one-minute buckets.
const MINUTES: usize = 15;
const MINUTE: Millis = 60_000;

/// One job step, as the slot reported it.
#[derive(Debug, Clone)]
pub struct Step {
    pub at: Millis,
    pub report: JobReport,
}

/// One provider's answers over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Answers {
    pub total: u64,
    pub faults: u64,
}

#[derive(Debug, Default)]
struct Window {
    /// (minute number, answers in it), newest last.
    buckets: VecDeque<(i64, Answers)>,
}

impl Window {
    fn add(&mut self, minute: i64, fault: bool) {
        match self.buckets.back_mut() {
            Some((m, a)) if *m == minute => {
                a.total += 1;
                a.faults += u64::from(fault);
            }
            _ => {
                self.buckets.push_back((
                    minute,
                    Answers {
                        total: 1,
                        faults: u64::from(fault),
                    },
                ));
                while self.buckets.len() > MINUTES {
                    self.buckets.pop_front();
                }
            }
        }
    }

    fn sum(&self, minute: i64) -> Answers {
        let oldest = minute - MINUTES as i64 + 1;
        self.buckets
            .iter()
            .filter(|(m, _)| *m >= oldest)
            .fold(Answers::default(), |acc, (_, a)| Answers {
                total: acc.total + a.total,
                faults: acc.faults + a.faults,
            })
    }
}

#[derive(Debug, Default)]
pub struct Activity {
    steps: Mutex<VecDeque<Step>>,
    answers: Mutex<HashMap<String, Window>>,
}

impl Activity {
    pub fn record_step(&self, at: Millis, report: &JobReport) {
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        steps.push_front(Step {
            at,
            report: report.clone(),
        });
        steps.truncate(RECENT_STEPS);
    }

    /// A provider answered (`fault` false) or failed to.
    pub fn record_answer(&self, provider: &str, fault: bool, at: Millis) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        answers
            .entry(provider.to_owned())
            .or_default()
            .add(at.div_euclid(MINUTE), fault);
    }

    /// The newest steps first.
    pub fn steps(&self) -> Vec<Step> {
        let steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        steps.iter().cloned().collect()
    }

    /// One provider's answers over the last [`Activity::WINDOW_MINUTES`].
    pub fn answers(&self, provider: &str, now: Millis) -> Answers {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        answers
            .get(provider)
            .map(|w| w.sum(now.div_euclid(MINUTE)))
            .unwrap_or_default()
    }

    pub const WINDOW_MINUTES: usize = MINUTES;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::JobOutcome;

    fn report(id: &str) -> JobReport {
        JobReport {
            job_id: id.into(),
            provider: "openai".into(),
            from: "pending".into(),
            to: "completed".into(),
            action: JobOutcome::Completed,
            detail: String::new(),
        }
    }

    #[test]
    fn steps_keep_the_newest_first_and_stop_at_the_cap() {
        let a = Activity::default();
        for i in 0..(RECENT_STEPS + 5) {
            a.record_step(i as Millis, &report(&format!("j{i}")));
        }
        let s = a.steps();
        assert_eq!(s.len(), RECENT_STEPS);
        assert_eq!(s[0].report.job_id, format!("j{}", RECENT_STEPS + 4));
        assert_eq!(s.last().unwrap().report.job_id, "j5");
    }

    #[test]
    fn answers_count_over_the_window_only() {
        let a = Activity::default();
        let t0 = 1_000 * MINUTE;
        a.record_answer("openai", true, t0);
        a.record_answer("openai", false, t0 + 1);
        a.record_answer("openai", false, t0 + 5 * MINUTE);
        a.record_answer("runway", true, t0);
        assert_eq!(
            a.answers("openai", t0 + 5 * MINUTE),
            Answers {
                total: 3,
                faults: 1
            }
        );
        // Fifteen minutes on, the first minute has left the window.
        assert_eq!(
            a.answers("openai", t0 + 15 * MINUTE),
            Answers {
                total: 1,
                faults: 0
            }
        );
        assert_eq!(a.answers("openai", t0 + 30 * MINUTE), Answers::default());
        assert_eq!(a.answers("nobody", t0), Answers::default());
    }
}
