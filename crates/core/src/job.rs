//! The daemon's view of one `ai_jobs` row and of the lease it holds on it.

use crate::status::JobStatus;

/// Unix epoch milliseconds, UTC: the SQLite column type, and what the store
/// converts `timestamptz` to and from on PostgreSQL.
pub type Millis = i64;

/// One `ai_jobs` row as the daemon reads it: the app's columns and the
/// daemon's bookkeeping columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub provider: String,
    pub scene_id: Option<String>,
    pub scene_version_id: Option<String>,
    /// JSON text written by the app (`prompt`, `model`, `seconds`, `size`, ...).
    pub request: String,
    pub status: JobStatus,
    pub provider_job_id: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Transient errors so far; a job fails after `max_attempts` of them.
    pub attempts: u32,
    /// Polls that found the job still running; drives the poll cadence but
    /// never counts as a failed attempt.
    pub polls: u32,
    pub next_attempt_at: Millis,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<Millis>,
    /// Incremented by every claim; every later write must present it.
    pub fencing_token: i64,
    pub last_error: Option<String>,
    pub idempotency_key: Option<String>,
    /// Set by a claim that replaced another worker's expired, unreleased
    /// lease: that worker's id (it crashed or hung). `None` otherwise.
    pub lease_taken_from: Option<String>,
}

/// Proof of a claim: every write after the claim carries it, and the store
/// refuses the write when another worker has claimed the row since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub owner: String,
    pub token: i64,
}

/// Why a row makes no sense to the daemon: the column and the problem, for
/// `last_error` and the audit event of a row set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    pub column: &'static str,
    pub problem: String,
}

/// The SPEC's alphabet for ids the app chooses: `[A-Za-z0-9_-]{1,64}`. Ids
/// become path components (`videos/<scene_id>/<scene_version_id>.mp4`), so
/// nothing else may pass.
pub fn is_spec_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Shown in a problem, cut so a huge or hostile value cannot flood a log.
fn shown(v: &str) -> String {
    let mut out: String = v.chars().take(40).collect();
    if out.len() < v.len() {
        out.push('…');
    }
    format!("{out:?}")
}

impl Job {
    /// Whether the app's columns make sense, before any work is done on the
    /// row: ids in the SPEC's alphabet, a `scene_id` to file the outputs
    /// under, and a `request` that is a JSON object (except on a job still
    /// to be submitted, whose request the adapter judges). The first problem
    /// found wins. (A provider the config does not name is the daemon's
    /// check: core does not know the config.)
    pub fn check_row(&self) -> Result<(), RowProblem> {
        let bad = |column, problem: String| Err(RowProblem { column, problem });
        if !is_spec_id(&self.id) {
            return bad(
                "id",
                format!(
                    "{} is not of the form [A-Za-z0-9_-]{{1,64}}",
                    shown(&self.id)
                ),
            );
        }
        match self.scene_id.as_deref() {
            None => {
                return bad(
                    "scene_id",
                    "is missing; the outputs have no scene to be filed under".into(),
                );
            }
            Some(s) if !is_spec_id(s) => {
                return bad(
                    "scene_id",
                    format!("{} is not of the form [A-Za-z0-9_-]{{1,64}}", shown(s)),
                );
            }
            Some(_) => {}
        }
        if let Some(v) = self.scene_version_id.as_deref()
            && !is_spec_id(v)
        {
            return bad(
                "scene_version_id",
                format!("{} is not of the form [A-Za-z0-9_-]{{1,64}}", shown(v)),
            );
        }
        // A job still to be submitted is judged by the adapter instead: a
        // request no provider can take fails that job for good (an honest
        // final state). For any other job the request is evidence that the
        // row is not what the app meant to write.
        let to_submit = self.status == JobStatus::Queued && self.provider_job_id.is_none();
        if !to_submit {
            match serde_json::from_str::<serde_json::Value>(&self.request) {
                Ok(serde_json::Value::Object(_)) => {}
                Ok(_) => return bad("request", "is JSON but not an object".into()),
                Err(e) => return bad("request", format!("is not JSON ({e})")),
            }
        }
        if let Some(pid) = self.provider_job_id.as_deref()
            && (pid.is_empty() || pid.len() > 1024 || pid.chars().any(char::is_control))
        {
            return bad(
                "provider_job_id",
                "is empty, longer than 1024 characters or holds control characters".into(),
            );
        }
        Ok(())
    }

    /// The lease this job carries right after it was claimed by `owner`.
    pub fn lease(&self) -> Option<Lease> {
        let owner = self.lease_owner.clone()?;
        Some(Lease {
            job_id: self.id.clone(),
            owner,
            token: self.fencing_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            id: "job_1".into(),
            kind: "video".into(),
            provider: "openai".into(),
            scene_id: Some("scene-1".into()),
            scene_version_id: Some("ver_1".into()),
            request: r#"{"prompt":"a cat"}"#.into(),
            status: JobStatus::Pending,
            provider_job_id: Some("video_123".into()),
            created_at: 0,
            updated_at: 0,
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
    fn check_row_accepts_a_row_as_the_app_writes_it() {
        assert_eq!(job().check_row(), Ok(()));
        let no_version = Job {
            scene_version_id: None,
            provider_job_id: None,
            ..job()
        };
        assert_eq!(no_version.check_row(), Ok(()));
    }

    #[test]
    fn check_row_names_the_column_of_each_problem() {
        let cases: Vec<(Job, &str)> = vec![
            (
                Job {
                    id: "../etc".into(),
                    ..job()
                },
                "id",
            ),
            (
                Job {
                    id: "x".repeat(65),
                    ..job()
                },
                "id",
            ),
            (
                Job {
                    scene_id: None,
                    ..job()
                },
                "scene_id",
            ),
            (
                Job {
                    scene_id: Some("a b".into()),
                    ..job()
                },
                "scene_id",
            ),
            (
                Job {
                    scene_version_id: Some("v/1".into()),
                    ..job()
                },
                "scene_version_id",
            ),
            (
                Job {
                    request: "not json".into(),
                    ..job()
                },
                "request",
            ),
            (
                Job {
                    request: "[1,2]".into(),
                    ..job()
                },
                "request",
            ),
            (
                Job {
                    request: String::new(),
                    ..job()
                },
                "request",
            ),
            (
                Job {
                    provider_job_id: Some(String::new()),
                    ..job()
                },
                "provider_job_id",
            ),
            (
                Job {
                    provider_job_id: Some("a\nb".into()),
                    ..job()
                },
                "provider_job_id",
            ),
        ];
        for (j, column) in cases {
            let got = j.check_row().expect_err(column);
            assert_eq!(got.column, column, "{got:?}");
            assert!(!got.problem.is_empty());
        }
    }

    #[test]
    fn a_job_to_submit_leaves_its_request_to_the_adapter() {
        let queued = Job {
            status: JobStatus::Queued,
            provider_job_id: None,
            request: "not json".into(),
            ..job()
        };
        assert_eq!(queued.check_row(), Ok(()));
        let submitting = Job {
            status: JobStatus::Submitting,
            ..queued.clone()
        };
        assert_eq!(submitting.check_row().unwrap_err().column, "request");
    }

    #[test]
    fn problems_quote_at_most_a_short_prefix_of_the_value() {
        let j = Job {
            id: "é".repeat(10_000),
            ..job()
        };
        let p = j.check_row().unwrap_err();
        assert!(p.problem.len() < 200, "{}", p.problem.len());
    }

    #[test]
    fn spec_ids() {
        assert!(is_spec_id("scene_1-A"));
        for bad in ["", "..", "a/b", "a b", "ü", &"x".repeat(65)] {
            assert!(!is_spec_id(bad), "{bad:?}");
        }
    }
}
