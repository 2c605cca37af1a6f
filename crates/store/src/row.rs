//! Decoding `ai_jobs` rows, shared by both backends: each backend's SELECT
//! lists produce the same column names with the same Rust types (text, and
//! i64 for every number and epoch-millisecond timestamp).
//!
//! A row is decoded column by column, and a value the daemon cannot use
//! names its column rather than failing the whole statement's result.
//! SQLite's typing is dynamic, so the app can store a BLOB in `request`,
//! TEXT such as `'yesterday'` in `created_at`, a REAL in `attempts`; a NULL
//! where a value is required is refused too (SQLite's driver would read it
//! as `""` or `0`); so are an unknown status and a negative counter. On
//! PostgreSQL an infinite timestamp reads as NULL (see `pg/sql.rs`).
//!
//! - A claimed row decodes its lease first (`id`, `lease_owner`,
//!   `fencing_token`: what the claim itself wrote), then the rest: a row
//!   with a bad column becomes [`Claimed::Unreadable`], carrying its lease
//!   so that the daemon can set it aside ([`crate::Store::set_aside`]).
//! - A claimed row whose `id` (or lease) cannot be read is logged and
//!   skipped: without its id it cannot be fenced, so it stays leased until
//!   its `lease_ttl` runs out, when the next claim takes it (and skips it)
//!   again. An operator has to repair it.
//! - [`crate::Store::get_job`] and [`crate::Store::list_jobs`] report a bad
//!   column as [`StoreError::CorruptRow`], never a panic.

use clawcut_core::{Job, JobStatus, Lease};
use sqlx::{ColumnIndex, Decode, Row, Type, TypeInfo, ValueRef};

use crate::{Claimed, StoreError, UnreadableRow};

/// Wraps a driver error in the variant of the operation that was running.
pub(crate) type OpErr = fn(sqlx::Error) -> StoreError;

/// The first column of a row that could not be decoded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadColumn {
    pub column: &'static str,
    /// Lowercase, and never the value itself (it may be a prompt).
    pub problem: String,
}

/// At most `n` characters of a driver's message.
fn cut(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// A short, quoted prefix of a value the daemon can show (a status).
fn shown(v: &str) -> String {
    format!("{:?}", cut(v, 40))
}

/// One column, `None` for SQL NULL; a value of the wrong SQL type, or one
/// the driver cannot decode, is a [`BadColumn`].
fn nullable<'r, R, T>(row: &'r R, column: &'static str) -> Result<Option<T>, BadColumn>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    let bad = |problem: String| BadColumn { column, problem };
    let raw = row
        .try_get_raw(column)
        .map_err(|e| bad(format!("cannot be read: {}", cut(&e.to_string(), 120))))?;
    if raw.is_null() {
        return Ok(None);
    }
    let (found, compatible) = {
        let ty = raw.type_info();
        (ty.name().to_owned(), ty.is_null() || T::compatible(&ty))
    };
    let expected = T::type_info();
    let expected = expected.name();
    if !compatible {
        return Err(bad(format!("expected {expected}, found {found}")));
    }
    T::decode(raw).map(Some).map_err(|e| {
        let why = cut(&e.to_string(), 120);
        if found == expected {
            bad(format!("not valid {expected} ({why})"))
        } else {
            bad(format!("{found} that cannot be read as {expected} ({why})"))
        }
    })
}

/// One column that must hold a value: NULL is a [`BadColumn`].
fn required<'r, R, T>(row: &'r R, column: &'static str) -> Result<T, BadColumn>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    nullable(row, column)?.ok_or_else(|| BadColumn {
        column,
        problem: format!("expected {}, found NULL", T::type_info().name()),
    })
}

fn counter(column: &'static str, n: i64) -> Result<u32, BadColumn> {
    u32::try_from(n).map_err(|_| BadColumn {
        column,
        problem: format!("out of range: {n}"),
    })
}

/// Decode one job, column by column in the order of the SELECT list; the
/// first column that fails is the error.
pub(crate) fn decode_job<'r, R>(row: &'r R) -> Result<Job, BadColumn>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: String = required(row, "id")?;
    let kind: String = required(row, "kind")?;
    let provider: String = required(row, "provider")?;
    let scene_id: Option<String> = nullable(row, "scene_id")?;
    let scene_version_id: Option<String> = nullable(row, "scene_version_id")?;
    let request: String = required(row, "request")?;
    let status: String = required(row, "status")?;
    let status: JobStatus = status.parse().map_err(|_| BadColumn {
        column: "status",
        problem: format!("unknown status {}", shown(&status)),
    })?;
    Ok(Job {
        kind,
        provider,
        scene_id,
        scene_version_id,
        request,
        status,
        provider_job_id: nullable(row, "provider_job_id")?,
        created_at: required(row, "created_at")?,
        updated_at: required(row, "updated_at")?,
        attempts: counter("attempts", required(row, "attempts")?)?,
        polls: counter("polls", required(row, "polls")?)?,
        next_attempt_at: required(row, "next_attempt_at")?,
        lease_owner: nullable(row, "lease_owner")?,
        lease_expires_at: nullable(row, "lease_expires_at")?,
        fencing_token: required(row, "fencing_token")?,
        last_error: nullable(row, "last_error")?,
        idempotency_key: nullable(row, "idempotency_key")?,
        lease_taken_from: nullable(row, "lease_taken_from")?,
        id,
    })
}

/// Decode one job for a reader that wants the whole row: a bad column is a
/// [`StoreError::CorruptRow`], never a panic.
pub(crate) fn job_from_row<'r, R>(row: &'r R) -> Result<Job, StoreError>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    decode_job(row).map_err(|bad| StoreError::CorruptRow {
        job_id: required::<R, String>(row, "id").unwrap_or_else(|_| "(unreadable id)".to_owned()),
        detail: format!("column `{}`: {}", bad.column, bad.problem),
    })
}

/// Rows as listed, oldest `updated_at` first.
pub(crate) fn jobs_from_rows<R>(rows: &[R]) -> Result<Vec<Job>, StoreError>
where
    R: Row,
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let mut jobs = rows
        .iter()
        .map(|r| job_from_row(r))
        .collect::<Result<Vec<_>, _>>()?;
    sort_jobs(&mut jobs);
    Ok(jobs)
}

fn sort_jobs(jobs: &mut [Job]) {
    jobs.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)));
}

/// The lease a claim wrote on a row: what fences every later write.
fn claimed_lease<'r, R>(row: &'r R) -> Result<Lease, BadColumn>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Lease {
        job_id: required(row, "id")?,
        owner: required(row, "lease_owner")?,
        token: required(row, "fencing_token")?,
    })
}

/// Rows as claimed: each decoded on its own, so one bad row never costs the
/// batch. Healthy jobs first, oldest `updated_at` first (RETURNING gives no
/// order guarantee), then the unreadable rows by id. A row whose lease
/// cannot be read is logged and left out (see the module doc).
pub(crate) fn claimed_from_rows<R>(rows: &[R]) -> Vec<Claimed>
where
    R: Row,
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let mut jobs = Vec::with_capacity(rows.len());
    let mut unreadable = Vec::new();
    for row in rows {
        let lease = match claimed_lease(row) {
            Ok(lease) => lease,
            Err(bad) => {
                let job_id = required::<R, String>(row, "id").ok();
                tracing::warn!(
                    job_id = job_id.as_deref().unwrap_or("(unreadable)"),
                    column = bad.column,
                    problem = %bad.problem,
                    "claimed a row whose lease cannot be read; it cannot be fenced, so it stays \
                     leased until its lease expires and needs an operator"
                );
                continue;
            }
        };
        match decode_job(row) {
            Ok(job) => jobs.push(job),
            Err(bad) => unreadable.push(UnreadableRow {
                lease,
                status: nullable::<R, String>(row, "status").ok().flatten(),
                column: bad.column.to_owned(),
                problem: bad.problem,
            }),
        }
    }
    sort_jobs(&mut jobs);
    unreadable.sort_by(|a, b| a.lease.job_id.cmp(&b.lease.job_id));
    jobs.into_iter()
        .map(Claimed::Job)
        .chain(unreadable.into_iter().map(Claimed::Unreadable))
        .collect()
}

/// The raw status text of a row being set aside, when it is readable text.
pub(crate) fn raw_status<'r, R>(row: &'r R) -> Option<String>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    nullable::<R, String>(row, "status").ok().flatten()
}

/// `last_error` of a row set aside.
pub(crate) fn rejected_reason(s: &crate::SetAside) -> String {
    format!("row rejected: column `{}`: {}", s.column, s.problem)
}

/// The audit event of a row set aside.
pub(crate) fn rejected_detail(s: &crate::SetAside) -> String {
    serde_json::json!({"event": "row_rejected", "column": s.column, "problem": s.problem})
        .to_string()
}

/// Saturating conversion for durations and byte counts bound as i64.
pub(crate) fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn bytes_i64(b: u64) -> i64 {
    i64::try_from(b).unwrap_or(i64::MAX)
}

/// `completed_at` for a status change: now when `to` is final.
pub(crate) fn completed_at(to: JobStatus, now: i64) -> Option<i64> {
    to.is_final().then_some(now)
}

/// The audit event of a completion.
pub(crate) fn completion_detail(c: &crate::Completion) -> String {
    let thumb = c
        .thumbnail
        .as_ref()
        .map(|t| serde_json::json!({"path": t.path, "sha256": t.sha256, "bytes": t.bytes}));
    serde_json::json!({
        "video": {"path": c.video.path, "sha256": c.video.sha256, "bytes": c.video.bytes},
        "thumbnail": thumb,
        "thumbnail_problem": c.thumbnail_problem,
    })
    .to_string()
}

/// `detail` as stored: JSON text, `{}` for null.
pub(crate) fn detail_text(v: &serde_json::Value) -> String {
    if v.is_null() {
        "{}".to_owned()
    } else {
        v.to_string()
    }
}

/// Counts in [`JobStatus::ALL`] order. A status the daemon does not know
/// (possible in an adopted app table without our CHECK constraint) is
/// logged and left out rather than failing the whole report: `/metrics`
/// and `/readyz` must keep answering.
/// A count from SQL as u64 (never negative in practice).
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// `last_error` of a job an operator failed.
pub(crate) const FAILED_BY_OPERATOR: &str = "failed by operator";

/// How an operator's decision is named in its audit event.
pub(crate) fn resolution_name(r: crate::Resolution) -> &'static str {
    match r {
        crate::Resolution::Resubmit => "resubmit",
        crate::Resolution::Fail => "fail",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::SqlitePool;
    use sqlx::sqlite::SqliteRow;

    /// The columns of a healthy claimed row, as SQL literals.
    const HEALTHY: [(&str, &str); 19] = [
        ("id", "'j'"),
        ("kind", "'video'"),
        ("provider", "'openai'"),
        ("scene_id", "'s'"),
        ("scene_version_id", "NULL"),
        ("request", "'{}'"),
        ("status", "'pending'"),
        ("provider_job_id", "'p'"),
        ("created_at", "1"),
        ("updated_at", "2"),
        ("attempts", "3"),
        ("polls", "4"),
        ("next_attempt_at", "5"),
        ("lease_owner", "'w'"),
        ("lease_expires_at", "6"),
        ("fencing_token", "7"),
        ("last_error", "NULL"),
        ("idempotency_key", "NULL"),
        ("lease_taken_from", "NULL"),
    ];

    /// Columns replaced in the healthy row: name, SQL literal.
    type Over<'a> = &'a [(&'a str, &'a str)];

    /// One SELECT of a row per entry, each the healthy row with the given
    /// columns replaced.
    async fn rows(variants: &[Over<'_>]) -> Vec<SqliteRow> {
        let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
        let selects: Vec<String> = variants
            .iter()
            .map(|over| {
                let cols: Vec<String> = HEALTHY
                    .iter()
                    .map(|(name, v)| {
                        let v = over.iter().find(|(n, _)| n == name).map_or(*v, |(_, v)| *v);
                        format!("{v} AS {name}")
                    })
                    .collect();
                format!("SELECT {}", cols.join(", "))
            })
            .collect();
        let sql = sqlx::AssertSqlSafe(selects.join(" UNION ALL "));
        sqlx::query(sql).fetch_all(&pool).await.unwrap()
    }

    async fn bad_column(over: Over<'_>) -> BadColumn {
        let rows = rows(&[over]).await;
        decode_job(&rows[0]).expect_err("should not decode")
    }

    #[tokio::test]
    async fn decode_job_reads_a_healthy_row() {
        let rows = rows(&[&[]]).await;
        let j = decode_job(&rows[0]).unwrap();
        assert_eq!(j.id, "j");
        assert_eq!(j.scene_id.as_deref(), Some("s"));
        assert_eq!(j.scene_version_id, None);
        assert_eq!(j.status, JobStatus::Pending);
        assert_eq!(
            (
                j.created_at,
                j.updated_at,
                j.attempts,
                j.polls,
                j.next_attempt_at
            ),
            (1, 2, 3, 4, 5)
        );
        assert_eq!((j.lease_expires_at, j.fencing_token), (Some(6), 7));
        assert_eq!(j.lease_owner.as_deref(), Some("w"));
    }

    #[tokio::test]
    async fn decode_job_names_the_column_and_the_problem() {
        let cases: &[(Over, &str, &str)] = &[
            (
                &[("request", "x'00ff'")],
                "request",
                "expected TEXT, found BLOB",
            ),
            // SQLite's driver would read these NULLs as "" and 0.
            (
                &[("request", "NULL")],
                "request",
                "expected TEXT, found NULL",
            ),
            (
                &[("attempts", "NULL")],
                "attempts",
                "expected INTEGER, found NULL",
            ),
            (
                &[("created_at", "'yesterday'")],
                "created_at",
                "expected INTEGER, found TEXT",
            ),
            (
                &[("updated_at", "2.5")],
                "updated_at",
                "expected INTEGER, found REAL",
            ),
            (&[("kind", "x'00'")], "kind", "expected TEXT, found BLOB"),
            (
                &[("scene_id", "7")],
                "scene_id",
                "expected TEXT, found INTEGER",
            ),
            (
                &[("lease_expires_at", "'soon'")],
                "lease_expires_at",
                "expected INTEGER, found TEXT",
            ),
            (
                &[("status", "'exploded'")],
                "status",
                "unknown status \"exploded\"",
            ),
            (&[("polls", "-1")], "polls", "out of range: -1"),
            (
                &[("attempts", "4294967296")],
                "attempts",
                "out of range: 4294967296",
            ),
            // The first bad column, in the order of the SELECT list, wins.
            (
                &[("created_at", "'x'"), ("request", "NULL")],
                "request",
                "expected TEXT, found NULL",
            ),
        ];
        for (over, column, problem) in cases {
            let bad = bad_column(over).await;
            assert_eq!(
                (bad.column, bad.problem.as_str()),
                (*column, *problem),
                "{over:?}"
            );
        }
        let bad = bad_column(&[("request", "CAST(x'ff' AS TEXT)")]).await;
        assert_eq!(bad.column, "request");
        assert!(
            bad.problem.starts_with("not valid TEXT (invalid utf-8"),
            "{}",
            bad.problem
        );
    }

    #[tokio::test]
    async fn problems_never_show_the_value() {
        let secret = "'sk-live-SECRET-prompt'";
        for col in ["created_at", "attempts", "fencing_token"] {
            let bad = bad_column(&[(col, secret)]).await;
            assert!(!bad.problem.contains("SECRET"), "{}", bad.problem);
        }
        // A status is shown, but only a short prefix of it.
        let long = format!("'{}'", "x".repeat(5000));
        let bad = bad_column(&[("status", &long)]).await;
        assert!(bad.problem.len() < 100, "{}", bad.problem);
    }

    #[tokio::test]
    async fn job_from_row_reports_a_corrupt_row() {
        let rows = rows(&[
            &[("request", "x'00'")],
            &[("id", "x'00'"), ("request", "x'00'")],
        ])
        .await;
        match job_from_row(&rows[0]) {
            Err(StoreError::CorruptRow { job_id, detail }) => {
                assert_eq!(job_id, "j");
                assert_eq!(detail, "column `request`: expected TEXT, found BLOB");
            }
            other => panic!("expected CorruptRow, got {other:?}"),
        }
        match job_from_row(&rows[1]) {
            Err(StoreError::CorruptRow { job_id, detail }) => {
                assert_eq!(job_id, "(unreadable id)");
                assert_eq!(detail, "column `id`: expected TEXT, found BLOB");
            }
            other => panic!("expected CorruptRow, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn claimed_rows_healthy_first_then_unreadable_and_unfenceable_skipped() {
        let rows = rows(&[
            &[("id", "'late'"), ("updated_at", "9")],
            &[("id", "'bad_b'"), ("request", "x'00'"), ("status", "x'01'")],
            &[("id", "x'6869'")],
            &[("id", "'early'"), ("updated_at", "1")],
            &[("id", "'bad_a'"), ("created_at", "'yesterday'")],
            &[("id", "'no_token'"), ("fencing_token", "2.5")],
        ])
        .await;
        let got = claimed_from_rows(&rows);
        let summary: Vec<String> = got
            .iter()
            .map(|c| match c {
                Claimed::Job(j) => format!("job {}", j.id),
                Claimed::Unreadable(u) => format!(
                    "unreadable {} {:?} {} {} {}",
                    u.lease.job_id, u.status, u.column, u.lease.owner, u.lease.token
                ),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "job early",
                "job late",
                "unreadable bad_a Some(\"pending\") created_at w 7",
                "unreadable bad_b None request w 7",
            ]
        );
    }
}
