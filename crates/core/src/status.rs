//! The statuses of `ai_jobs.status`, spelled exactly as the SPEC spells them.

use std::fmt;
use std::str::FromStr;

use crate::CoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobStatus {
    Queued,
    Submitting,
    Pending,
    Processing,
    Completed,
    Failed,
    Canceled,
    NeedsOperator,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Queued,
        JobStatus::Submitting,
        JobStatus::Pending,
        JobStatus::Processing,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Canceled,
        JobStatus::NeedsOperator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Submitting => "submitting",
            JobStatus::Pending => "pending",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
            JobStatus::NeedsOperator => "needs_operator",
        }
    }

    /// Final statuses are never touched again by the daemon.
    pub fn is_final(self) -> bool {
        match self {
            JobStatus::Completed | JobStatus::Failed | JobStatus::Canceled => true,
            JobStatus::Queued
            | JobStatus::Submitting
            | JobStatus::Pending
            | JobStatus::Processing
            | JobStatus::NeedsOperator => false,
        }
    }

    /// Statuses a pass may claim. `needs_operator` waits for a person.
    pub fn is_workable(self) -> bool {
        match self {
            JobStatus::Queued
            | JobStatus::Submitting
            | JobStatus::Pending
            | JobStatus::Processing => true,
            JobStatus::Completed
            | JobStatus::Failed
            | JobStatus::Canceled
            | JobStatus::NeedsOperator => false,
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| CoreError::ParseStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_status() {
        for st in JobStatus::ALL {
            assert_eq!(st.as_str().parse::<JobStatus>().unwrap(), st);
        }
        assert!("done".parse::<JobStatus>().is_err());
        assert!("Completed".parse::<JobStatus>().is_err());
    }

    #[test]
    fn final_and_workable_are_disjoint() {
        for st in JobStatus::ALL {
            assert!(!(st.is_final() && st.is_workable()), "{st}");
        }
        assert_eq!(JobStatus::ALL.iter().filter(|s| s.is_final()).count(), 3);
    }
}
