//! Which jobs a pass may claim, and what it must do with each.
//!
//! The store's claim query implements exactly these rules in SQL (so it can
//! use the partial index); the store conformance suite checks the SQL against
//! [`EligibilityRules::check`] on the same rows.

use std::time::Duration;

use crate::job::{Job, Millis};
use crate::status::JobStatus;

/// The only `ai_jobs.kind` the daemon touches.
pub const VIDEO_KIND: &str = "video";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EligibilityRules {
    /// A job is eligible once `updated_at` is older than this, so the daemon
    /// never races the app on a job the app is still handling itself.
    pub min_age: Duration,
    /// Jobs created longer ago than this are failed as expired, not polled.
    pub max_age: Duration,
    /// Take `queued` jobs without a provider id and submit them.
    pub submit_enabled: bool,
}

/// What a pass does with an eligible job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    /// Ask the provider how the job is doing.
    Poll,
    /// Fail it as expired without asking.
    Expire,
    /// Submit it (submission enabled, no provider id yet).
    Submit,
    /// Found in `submitting`: a previous attempt crashed mid-submit.
    RecoverSubmission,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    NotVideo,
    Final,
    NeedsOperator,
    /// `queued` without a provider id while submission is disabled.
    NoProviderId,
    TooYoung,
    NotDue,
    Leased,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    Eligible(WorkKind),
    Ineligible(Ineligible),
}

/// Saturating: a duration past `i64::MAX` ms is "forever", never a wrap.
fn ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl EligibilityRules {
    /// `updated_at` must be at or before this instant.
    pub fn updated_before(&self, now: Millis) -> Millis {
        now.saturating_sub(ms(self.min_age))
    }

    /// Jobs created at or before this instant are expired.
    pub fn expired_before(&self, now: Millis) -> Millis {
        now.saturating_sub(ms(self.max_age))
    }

    /// The reference implementation of eligibility.
    pub fn check(&self, job: &Job, now: Millis) -> Eligibility {
        use Eligibility::{Eligible, Ineligible as No};
        if job.kind != VIDEO_KIND {
            return No(Ineligible::NotVideo);
        }
        let kind = match job.status {
            JobStatus::Completed | JobStatus::Failed | JobStatus::Canceled => {
                return No(Ineligible::Final);
            }
            JobStatus::NeedsOperator => return No(Ineligible::NeedsOperator),
            JobStatus::Submitting => WorkKind::RecoverSubmission,
            JobStatus::Queued if job.provider_job_id.is_none() && self.submit_enabled => {
                WorkKind::Submit
            }
            // A running status without an id cannot be polled, and a queued
            // one waits for submission to be enabled: both are left to the
            // app or an operator (`status` reports them as unknowable).
            JobStatus::Queued | JobStatus::Pending | JobStatus::Processing
                if job.provider_job_id.is_none() =>
            {
                return No(Ineligible::NoProviderId);
            }
            JobStatus::Queued | JobStatus::Pending | JobStatus::Processing => WorkKind::Poll,
        };
        if job.updated_at > self.updated_before(now) {
            return No(Ineligible::TooYoung);
        }
        if job.next_attempt_at > now {
            return No(Ineligible::NotDue);
        }
        if job.lease_expires_at.is_some_and(|exp| exp > now) {
            return No(Ineligible::Leased);
        }
        match kind {
            WorkKind::Poll | WorkKind::Submit if job.created_at <= self.expired_before(now) => {
                Eligible(WorkKind::Expire)
            }
            WorkKind::Poll | WorkKind::Submit | WorkKind::Expire | WorkKind::RecoverSubmission => {
                Eligible(kind)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: Millis = 1_800_000_000_000;
    const MIN: Millis = 60_000;

    fn rules() -> EligibilityRules {
        EligibilityRules {
            min_age: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 86400),
            submit_enabled: false,
        }
    }

    fn job(status: JobStatus) -> Job {
        Job {
            id: "j1".into(),
            kind: "video".into(),
            provider: "openai".into(),
            scene_id: Some("s1".into()),
            scene_version_id: Some("v1".into()),
            request: "{}".into(),
            status,
            provider_job_id: Some("video_1".into()),
            created_at: NOW - 10 * MIN,
            updated_at: NOW - 10 * MIN,
            attempts: 0,
            polls: 0,
            next_attempt_at: 0,
            lease_owner: None,
            lease_expires_at: None,
            fencing_token: 0,
            last_error: None,
            idempotency_key: None,
            lease_taken_from: None,
        }
    }

    #[test]
    fn running_jobs_are_polled() {
        for st in [JobStatus::Queued, JobStatus::Pending, JobStatus::Processing] {
            assert_eq!(
                rules().check(&job(st), NOW),
                Eligibility::Eligible(WorkKind::Poll)
            );
        }
    }

    #[test]
    fn each_rule_excludes() {
        let r = rules();
        let mut j = job(JobStatus::Pending);
        j.kind = "image".into();
        assert_eq!(
            r.check(&j, NOW),
            Eligibility::Ineligible(Ineligible::NotVideo)
        );
        for st in [JobStatus::Completed, JobStatus::Failed, JobStatus::Canceled] {
            assert_eq!(
                r.check(&job(st), NOW),
                Eligibility::Ineligible(Ineligible::Final)
            );
        }
        assert_eq!(
            r.check(&job(JobStatus::NeedsOperator), NOW),
            Eligibility::Ineligible(Ineligible::NeedsOperator)
        );
        let mut j = job(JobStatus::Pending);
        j.updated_at = NOW - MIN;
        assert_eq!(
            r.check(&j, NOW),
            Eligibility::Ineligible(Ineligible::TooYoung)
        );
        j.updated_at = NOW - 2 * MIN;
        assert_eq!(
            r.check(&j, NOW),
            Eligibility::Eligible(WorkKind::Poll),
            "boundary is inclusive"
        );
        let mut j = job(JobStatus::Pending);
        j.next_attempt_at = NOW + 1;
        assert_eq!(
            r.check(&j, NOW),
            Eligibility::Ineligible(Ineligible::NotDue)
        );
        let mut j = job(JobStatus::Pending);
        j.lease_owner = Some("w".into());
        j.lease_expires_at = Some(NOW + 1);
        assert_eq!(
            r.check(&j, NOW),
            Eligibility::Ineligible(Ineligible::Leased)
        );
        j.lease_expires_at = Some(NOW);
        assert_eq!(
            r.check(&j, NOW),
            Eligibility::Eligible(WorkKind::Poll),
            "expired lease is free"
        );
    }

    #[test]
    fn old_jobs_expire_instead_of_polling() {
        let mut j = job(JobStatus::Processing);
        j.created_at = NOW - 7 * 86_400_000;
        assert_eq!(
            rules().check(&j, NOW),
            Eligibility::Eligible(WorkKind::Expire)
        );
        j.created_at += 1;
        assert_eq!(
            rules().check(&j, NOW),
            Eligibility::Eligible(WorkKind::Poll)
        );
    }

    #[test]
    fn submission_rules() {
        let mut j = job(JobStatus::Queued);
        j.provider_job_id = None;
        assert_eq!(
            rules().check(&j, NOW),
            Eligibility::Ineligible(Ineligible::NoProviderId)
        );
        let on = EligibilityRules {
            submit_enabled: true,
            ..rules()
        };
        assert_eq!(on.check(&j, NOW), Eligibility::Eligible(WorkKind::Submit));
        let mut s = job(JobStatus::Submitting);
        s.provider_job_id = None;
        assert_eq!(
            rules().check(&s, NOW),
            Eligibility::Eligible(WorkKind::RecoverSubmission)
        );
        let mut p = job(JobStatus::Pending);
        p.provider_job_id = None;
        assert_eq!(
            on.check(&p, NOW),
            Eligibility::Ineligible(Ineligible::NoProviderId)
        );
    }

    #[test]
    fn extreme_ages_and_clocks_saturate() {
        let huge = EligibilityRules {
            min_age: Duration::MAX,
            max_age: Duration::MAX,
            submit_enabled: true,
        };
        assert_eq!(huge.updated_before(NOW), NOW - i64::MAX);
        assert_eq!(huge.updated_before(i64::MIN), i64::MIN);
        assert_eq!(huge.expired_before(-1), i64::MIN);
        let zero = EligibilityRules {
            min_age: Duration::ZERO,
            max_age: Duration::ZERO,
            submit_enabled: false,
        };
        assert_eq!(zero.updated_before(i64::MAX), i64::MAX);
        assert_eq!(zero.expired_before(i64::MIN), i64::MIN);
    }

    proptest! {
        #[test]
        fn check_never_panics_and_respects_the_cut_offs(
            min_s in any::<u64>(),
            max_s in any::<u64>(),
            now in any::<i64>(),
            created_at in any::<i64>(),
            updated_at in any::<i64>(),
            next_attempt_at in any::<i64>(),
            lease in proptest::option::of(any::<i64>()),
        ) {
            let r = EligibilityRules {
                min_age: Duration::from_secs(min_s),
                max_age: Duration::from_secs(max_s),
                submit_enabled: true,
            };
            let mut j = job(JobStatus::Pending);
            j.created_at = created_at;
            j.updated_at = updated_at;
            j.next_attempt_at = next_attempt_at;
            j.lease_expires_at = lease;
            prop_assert!(r.updated_before(now) <= now);
            prop_assert!(r.expired_before(now) <= now);
            if let Eligibility::Eligible(_) = r.check(&j, now) {
                prop_assert!(updated_at <= r.updated_before(now));
                prop_assert!(next_attempt_at <= now);
            }
        }
    }
}
