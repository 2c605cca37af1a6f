//! Provider health: when a fault is the provider's or the account's rather
//! than one job's, and how long a paused provider waits between probes
//! (SPEC, "Provider health").
//!
//! Pure decisions only. The daemon feeds every provider answer of a poll, a
//! create or a lookup into an [`OutageCount`] per provider; the first
//! account fault, or `outage_after` consecutive outage faults met by at
//! least two different jobs, yield a [`PauseCause`]. The pause itself lives
//! in the database (`provider_pauses`), so every replica honours it.
//!
//! Why two different jobs: one job whose polls keep failing with 5xx may be
//! that job's problem at the provider, and pausing the whole provider for it
//! would starve every other job. Many jobs failing in a row is the provider.

use std::fmt;
use std::time::Duration;

use crate::provider::{FaultScope, ProviderErrorKind};

/// The knobs of `[provider_health]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive outage faults (connect, network, timeout, 5xx), across at
    /// least two different jobs, that pause a provider.
    pub outage_after: u32,
    /// The wait before the first probe of a paused provider.
    pub cooldown: Duration,
    /// Each failed probe doubles the wait, up to this.
    pub max_cooldown: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            outage_after: 3,
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(600),
        }
    }
}

impl HealthPolicy {
    /// The wait after a probe that found the provider still at fault.
    pub fn next_cooldown(&self, current: Duration) -> Duration {
        current
            .saturating_mul(2)
            .max(self.cooldown)
            .min(self.max_cooldown.max(self.cooldown))
    }
}

/// Why a provider is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PauseCause {
    /// 401/403: the key is refused.
    Unauthorized,
    /// No credit, quota used up, no access (Replicate 402, OpenAI
    /// `insufficient_quota`, Kling's account codes).
    Account,
    /// Down for everyone: consecutive transient failures across jobs.
    Outage,
}

impl PauseCause {
    pub const ALL: [PauseCause; 3] = [
        PauseCause::Unauthorized,
        PauseCause::Account,
        PauseCause::Outage,
    ];

    /// A stable label: the database value and the metrics label.
    pub fn label(self) -> &'static str {
        match self {
            PauseCause::Unauthorized => "unauthorized",
            PauseCause::Account => "account",
            PauseCause::Outage => "outage",
        }
    }

    pub fn from_label(s: &str) -> Option<PauseCause> {
        PauseCause::ALL.into_iter().find(|c| c.label() == s)
    }

    /// What an operator should do about it, for the log and `status`.
    pub fn advice(self) -> &'static str {
        match self {
            PauseCause::Unauthorized => {
                "check the API key in the environment variable the provider's api_key_env names"
            }
            PauseCause::Account => "top up the account or raise its quota at the provider",
            PauseCause::Outage => "the provider looks down; it resumes by itself once it answers",
        }
    }
}

impl fmt::Display for PauseCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What a provider call told us about the provider's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'a> {
    /// The provider answered about the job (any result, or a job-level
    /// error such as a 400 or a 404): it is up and the account works.
    Answered,
    /// The call failed with this error, met by this job.
    Fault {
        kind: ProviderErrorKind,
        job_id: &'a str,
    },
}

/// One provider's run of consecutive outage faults, as one process saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutageCount {
    streak: u32,
    /// The first two different jobs of the streak; two are all the rule
    /// needs.
    jobs: Vec<String>,
}

impl OutageCount {
    /// Feed one answer; `Some` when the provider should be paused now.
    pub fn observe(&mut self, answer: Answer<'_>, policy: &HealthPolicy) -> Option<PauseCause> {
        let (kind, job_id) = match answer {
            Answer::Answered => {
                self.reset();
                return None;
            }
            Answer::Fault { kind, job_id } => (kind, job_id),
        };
        match kind.scope() {
            FaultScope::Account => {
                self.reset();
                Some(match kind {
                    ProviderErrorKind::Unauthorized(_) => PauseCause::Unauthorized,
                    ProviderErrorKind::Account(_)
                    | ProviderErrorKind::Connect
                    | ProviderErrorKind::Network
                    | ProviderErrorKind::Timeout
                    | ProviderErrorKind::Server(_)
                    | ProviderErrorKind::RateLimited
                    | ProviderErrorKind::Malformed
                    | ProviderErrorKind::NotFound
                    | ProviderErrorKind::Client(_) => PauseCause::Account,
                })
            }
            FaultScope::Outage => {
                self.streak = self.streak.saturating_add(1);
                if self.jobs.len() < 2 && !self.jobs.iter().any(|j| j == job_id) {
                    self.jobs.push(job_id.to_owned());
                }
                if self.streak >= policy.outage_after.max(1) && self.jobs.len() >= 2 {
                    self.reset();
                    Some(PauseCause::Outage)
                } else {
                    None
                }
            }
            // The provider answered about this job: it is up.
            FaultScope::Job => {
                self.reset();
                None
            }
        }
    }

    /// Consecutive outage faults seen so far.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    fn reset(&mut self) {
        self.streak = 0;
        self.jobs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProviderErrorKind::*;

    fn policy(n: u32) -> HealthPolicy {
        HealthPolicy {
            outage_after: n,
            ..HealthPolicy::default()
        }
    }

    fn fault(kind: ProviderErrorKind, job_id: &str) -> Answer<'_> {
        Answer::Fault { kind, job_id }
    }

    #[test]
    fn an_account_fault_pauses_at_once() {
        let p = policy(5);
        let mut c = OutageCount::default();
        assert_eq!(
            c.observe(fault(Unauthorized(401), "a"), &p),
            Some(PauseCause::Unauthorized)
        );
        assert_eq!(
            c.observe(fault(Unauthorized(403), "a"), &p),
            Some(PauseCause::Unauthorized)
        );
        assert_eq!(
            c.observe(fault(Account(402), "a"), &p),
            Some(PauseCause::Account)
        );
    }

    #[test]
    fn outages_need_the_streak_and_two_jobs() {
        let p = policy(3);
        let mut c = OutageCount::default();
        // One job alone never pauses the provider, however long its streak.
        for _ in 0..10 {
            assert_eq!(c.observe(fault(Server(503), "a"), &p), None);
        }
        assert_eq!(c.streak(), 10);
        assert_eq!(c.observe(fault(Timeout, "b"), &p), Some(PauseCause::Outage));
        // The streak starts over after a pause.
        assert_eq!(c.streak(), 0);
        assert_eq!(c.observe(fault(Connect, "a"), &p), None);
        assert_eq!(c.observe(fault(Network, "b"), &p), None);
        assert_eq!(
            c.observe(fault(Server(500), "c"), &p),
            Some(PauseCause::Outage)
        );
    }

    #[test]
    fn any_answer_breaks_the_streak() {
        let p = policy(3);
        for breaker in [
            Answer::Answered,
            fault(Client(400), "x"),
            fault(NotFound, "x"),
            fault(RateLimited, "x"),
            fault(Malformed, "x"),
        ] {
            let mut c = OutageCount::default();
            assert_eq!(c.observe(fault(Server(503), "a"), &p), None);
            assert_eq!(c.observe(fault(Server(503), "b"), &p), None);
            assert_eq!(c.observe(breaker, &p), None, "{breaker:?}");
            assert_eq!(c.streak(), 0, "{breaker:?}");
            assert_eq!(c.observe(fault(Server(503), "a"), &p), None);
            assert_eq!(c.observe(fault(Server(503), "b"), &p), None);
            assert_eq!(
                c.observe(fault(Server(503), "c"), &p),
                Some(PauseCause::Outage)
            );
        }
    }

    #[test]
    fn an_outage_after_of_zero_still_needs_one_fault_per_job() {
        let p = policy(0);
        let mut c = OutageCount::default();
        assert_eq!(c.observe(fault(Server(502), "a"), &p), None);
        assert_eq!(
            c.observe(fault(Server(502), "b"), &p),
            Some(PauseCause::Outage)
        );
    }

    #[test]
    fn cooldowns_double_up_to_the_cap() {
        let p = HealthPolicy {
            outage_after: 3,
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(100),
        };
        assert_eq!(
            p.next_cooldown(Duration::from_secs(30)),
            Duration::from_secs(60)
        );
        assert_eq!(
            p.next_cooldown(Duration::from_secs(60)),
            Duration::from_secs(100)
        );
        assert_eq!(
            p.next_cooldown(Duration::from_secs(100)),
            Duration::from_secs(100)
        );
        // A stored cooldown below the floor (a config change) starts over.
        assert_eq!(p.next_cooldown(Duration::ZERO), Duration::from_secs(30));
        // A cap below the floor is the floor.
        let odd = HealthPolicy {
            max_cooldown: Duration::from_secs(1),
            ..p
        };
        assert_eq!(
            odd.next_cooldown(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn cause_labels_round_trip() {
        for c in PauseCause::ALL {
            assert_eq!(PauseCause::from_label(c.label()), Some(c));
            assert!(!c.advice().is_empty());
        }
        assert_eq!(PauseCause::from_label("tired"), None);
    }
}
