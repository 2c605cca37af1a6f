//! The store conformance suite: every case is written once, as
//! `pub async fn case(url)`, and run against SQLite (`tests/sqlite.rs`) and
//! PostgreSQL (`tests/postgres.rs`) on real databases. Adding a case means
//! adding it here and to [`for_each_case`].

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawcut_core::{Eligibility, EligibilityRules, Job, Lease, Millis};
use clawcut_store::{Backend, ClaimRequest, Claimed, Publish, Store, StoreError, UnreadableRow};
use clawcut_test_support::db::{AppDb, NewJob};

mod backup;
mod batch;
mod cancel;
mod claim;
mod panel;
mod pauses;
mod publish;
mod report;
mod schema;
mod set_aside;
mod webhooks;
mod workers;
mod write;

pub use backup::*;
pub use batch::*;
pub use cancel::*;
pub use claim::*;
pub use panel::*;
pub use pauses::*;
pub use publish::*;
pub use report::*;
pub use schema::*;
pub use set_aside::*;
pub use webhooks::*;
pub use workers::*;
pub use write::*;

/// Every case, for the backend files to instantiate.
macro_rules! for_each_case {
    ($m:ident) => {
        $m!(
            migrate_is_idempotent_and_app_insert_works,
            migrate_concurrently,
            migrate_adopts_existing_app_tables,
            schema_newer_than_binary_is_reported,
            claim_respects_each_rule,
            claim_agrees_with_eligibility_check,
            claim_oldest_first_with_limit,
            claim_only_job_and_force,
            concurrent_claimers_never_share_a_job,
            claim_uses_partial_index,
            claim_takes_the_oldest_due_beside_many_not_due,
            claim_due_claims_nothing_when_more_are_due_than_it_reads,
            claim_takes_the_oldest_of_a_backlog_whose_first_due_are_newer,
            stale_fencing_token_changes_nothing,
            heartbeat_extends_lease,
            complete_writes_job_version_scene_and_one_event,
            complete_newer_version_keeps_scene_pointer,
            complete_without_scene,
            settle_final_and_parked_states,
            settle_records_the_last_attempt,
            settle_submission_steps,
            reschedule_snooze_and_retry,
            resolve_both_ways_and_not_resolvable,
            make_due_only_when_it_changes_something,
            make_due_probes_indexes_not_a_scan,
            webhook_deliveries_are_noted_once,
            status_report_numbers,
            list_jobs_stranded_and_needs_operator,
            corrupt_row_is_an_error_not_a_panic,
            claim_returns_unreadable_rows_beside_healthy_jobs,
            set_aside_with_a_stale_lease_changes_nothing,
            set_aside_never_changes_a_final_row,
            complete_with_a_stale_lease_never_publishes,
            complete_publish_error_rolls_back,
            complete_failure_after_publish_reverts,
            complete_many_writes_each_job_as_complete_does,
            complete_many_takes_out_only_the_jobs_it_cannot_finish,
            complete_many_takes_out_the_jobs_whose_directory_fsync_fails,
            complete_many_keeps_the_newer_version_rule_inside_a_batch,
            complete_many_failure_reverts_every_file,
            complete_many_crossed_batches_do_not_deadlock,
            complete_many_jobs_without_a_scene_version,
            complete_many_reads_rows_by_primary_key,
            snapshot_holds_its_instant,
            rewrite_media_paths_only_under_the_prefix,
            cancel_each_non_final_status,
            cancel_refuses_final_and_missing_jobs,
            cancel_fences_out_the_worker_holding_the_job,
            cancel_keeps_a_ready_version_and_records_a_failed_provider_call,
            pause_excludes_the_provider_from_claims_until_resumed,
            probe_is_taken_once_per_due_time,
            probe_claim_takes_one_job_of_its_provider,
            recent_worker_ids_name_events_and_live_leases,
            panel_pages_visit_every_row_once,
            error_groups_and_retry_now_keep_to_the_snapshot,
            job_events_media_and_time_in_state,
        );
    };
}
pub(crate) use for_each_case;

/// A fixed "now" (2027-01-15) so every timestamp in a case is exact.
pub const NOW: Millis = 1_800_000_000_000;
pub const MIN: Millis = 60_000;
pub const DAY: Millis = 86_400_000;

pub fn rules(submit_enabled: bool) -> EligibilityRules {
    EligibilityRules {
        min_age: Duration::from_secs(120),
        max_age: Duration::from_secs(7 * 86_400),
        submit_enabled,
    }
}

pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub db: AppDb,
    pub url: String,
}

impl Ctx {
    pub fn backend(&self) -> Backend {
        self.store.backend()
    }
}

/// A migrated database, the daemon's store and the app's connection.
pub async fn setup(url: &str) -> Ctx {
    let store = clawcut_store::connect(url).await.expect("connect store");
    store.migrate().await.expect("migrate");
    let db = AppDb::connect(url).await.expect("connect app db");
    Ctx {
        store,
        db,
        url: url.to_owned(),
    }
}

pub fn claim_req<'a>(
    worker: &'a str,
    now: Millis,
    limit: u32,
    rules: &'a EligibilityRules,
) -> ClaimRequest<'a> {
    ClaimRequest {
        worker_id: worker,
        now,
        lease_ttl: Duration::from_secs(60),
        limit,
        rules,
        only_job: None,
        force: false,
        probe: None,
    }
}

/// The jobs of a claim, for cases that insert only healthy rows: an
/// unreadable row there is a failure.
pub fn jobs(claimed: Vec<Claimed>) -> Vec<Job> {
    claimed
        .into_iter()
        .map(|c| match c {
            Claimed::Job(j) => j,
            Claimed::Unreadable(u) => panic!("unexpected unreadable row: {u:?}"),
        })
        .collect()
}

/// The rows of a claim split into healthy jobs and unreadable rows, in the
/// order returned, asserting the healthy ones all come first.
pub fn split(claimed: Vec<Claimed>) -> (Vec<Job>, Vec<UnreadableRow>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for c in claimed {
        match c {
            Claimed::Job(j) => {
                assert!(
                    bad.is_empty(),
                    "healthy job {} after an unreadable row",
                    j.id
                );
                good.push(j);
            }
            Claimed::Unreadable(u) => bad.push(u),
        }
    }
    (good, bad)
}

pub async fn claim_ids(
    ctx: &Ctx,
    worker: &str,
    now: Millis,
    limit: u32,
    r: &EligibilityRules,
) -> Vec<String> {
    let claimed = ctx
        .store
        .claim(&claim_req(worker, now, limit, r))
        .await
        .expect("claim");
    jobs(claimed).into_iter().map(|j| j.id).collect()
}

/// Claim exactly job `id` (forced) and return its lease.
pub async fn lease_of(ctx: &Ctx, id: &str, worker: &str, now: Millis) -> (Job, Lease) {
    let r = rules(true);
    let mut req = claim_req(worker, now, 1, &r);
    req.only_job = Some(id);
    req.force = true;
    let mut claimed = jobs(ctx.store.claim(&req).await.expect("claim one"));
    assert_eq!(claimed.len(), 1, "job {id} should be claimable");
    let job = claimed.remove(0);
    let lease = job.lease().expect("claimed job has a lease");
    (job, lease)
}

/// A video job with its scene and a `generating` version, as the app makes
/// it, created and last touched ten minutes before [`NOW`].
pub async fn seed(ctx: &Ctx, id: &str, status: &str, pid: Option<&str>) -> NewJob {
    let j = NewJob::video(id, status, pid, NOW - 10 * MIN);
    ctx.db.insert_job_with_scene(&j).await.expect("seed job");
    j
}

/// A row with daemon columns set too, for claim tests.
#[derive(Debug, Clone)]
pub struct RawJob {
    pub id: String,
    pub kind: &'static str,
    pub status: &'static str,
    pub pid: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub next_attempt_at: Millis,
    pub lease_expires_at: Option<Millis>,
}

impl RawJob {
    pub fn new(id: &str, status: &'static str, pid: Option<&str>) -> RawJob {
        RawJob {
            id: id.to_owned(),
            kind: "video",
            status,
            pid: pid.map(str::to_owned),
            created_at: NOW - 10 * MIN,
            updated_at: NOW - 10 * MIN,
            next_attempt_at: 0,
            lease_expires_at: None,
        }
    }
}

fn sql_ts(backend: Backend, ms: Millis) -> String {
    match backend {
        Backend::Sqlite => ms.to_string(),
        Backend::Postgres => format!("to_timestamp({ms}::float8 / 1000.0)"),
    }
}

fn sql_opt(v: Option<&str>) -> String {
    v.map_or("NULL".to_owned(), |s| format!("'{s}'"))
}

/// Insert many rows in one statement (fast on both backends).
pub async fn insert_raw(ctx: &Ctx, jobs: &[RawJob]) {
    let b = ctx.backend();
    for chunk in jobs.chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|j| {
                format!(
                    "('{}', '{}', 'openai', NULL, NULL, '{{}}', '{}', {}, {}, {}, {}, {}, {})",
                    j.id,
                    j.kind,
                    j.status,
                    sql_opt(j.pid.as_deref()),
                    sql_ts(b, j.created_at),
                    sql_ts(b, j.updated_at),
                    sql_ts(b, j.next_attempt_at),
                    sql_opt(j.lease_expires_at.map(|_| "someone-else")),
                    j.lease_expires_at
                        .map_or("NULL".to_owned(), |ms| sql_ts(b, ms)),
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO ai_jobs (id, kind, provider, scene_id, scene_version_id, request, status,
                 provider_job_id, created_at, updated_at, next_attempt_at, lease_owner,
                 lease_expires_at) VALUES {}",
            values.join(",\n")
        );
        ctx.db.exec(&sql).await.expect("insert raw jobs");
    }
}

/// Set a daemon column of one job to a timestamp (test-only raw SQL).
pub async fn set_ts(ctx: &Ctx, id: &str, column: &str, ms: Option<Millis>) {
    let v = ms.map_or("NULL".to_owned(), |ms| sql_ts(ctx.backend(), ms));
    ctx.db
        .exec(&format!(
            "UPDATE ai_jobs SET {column} = {v} WHERE id = '{id}'"
        ))
        .await
        .expect("set timestamp");
}

pub fn is_eligible(r: &EligibilityRules, j: &Job, now: Millis) -> bool {
    matches!(r.check(j, now), Eligibility::Eligible(_))
}

pub fn assert_lease_lost(res: Result<(), StoreError>, what: &str) {
    match res {
        Err(e) if e.is_lease_lost() => {}
        other => panic!("{what}: expected LeaseLost, got {other:?}"),
    }
}

/// What a test [`Publish`] was asked to do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Publish,
    Revert,
    Committed,
}

/// A [`Publish`] that records its calls and can be told to fail.
#[derive(Debug, Default)]
pub struct Files {
    pub calls: Vec<Call>,
    pub fail: bool,
    /// The directories `publish_deferring` leaves to the store to fsync.
    pub defer: Vec<std::path::PathBuf>,
}

impl Files {
    pub fn new() -> Files {
        Files::default()
    }

    pub fn failing() -> Files {
        Files {
            fail: true,
            ..Files::default()
        }
    }
}

impl Publish for Files {
    fn publish(&mut self) -> std::io::Result<()> {
        self.calls.push(Call::Publish);
        if self.fail {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left on device",
            ));
        }
        Ok(())
    }

    fn publish_deferring(&mut self, dirs: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
        self.publish()?;
        dirs.extend(self.defer.iter().cloned());
        Ok(())
    }

    fn revert(&mut self) {
        self.calls.push(Call::Revert);
    }

    fn committed(&mut self) {
        self.calls.push(Call::Committed);
    }
}

/// The columns a set-aside rewrites, read with raw SQL: `AppDb::job`
/// insists on well-typed rows, and a set-aside row may keep garbage in
/// `created_at` or `request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    pub status: String,
    pub last_error: Option<String>,
    pub updated_at: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub fencing_token: i64,
}

pub async fn parked(ctx: &Ctx, id: &str) -> Parked {
    type Cols = (
        String,
        Option<String>,
        i64,
        Option<String>,
        Option<i64>,
        i64,
    );
    let row: Cols = match &ctx.db {
        AppDb::Sqlite(pool) => sqlx::query_as(
            "SELECT status, last_error, updated_at, lease_owner, lease_expires_at, fencing_token
             FROM ai_jobs WHERE id = ?1",
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap(),
        AppDb::Pg(pool) => sqlx::query_as(
            "SELECT status, last_error, (extract(epoch from updated_at) * 1000)::int8,
                 lease_owner, (extract(epoch from lease_expires_at) * 1000)::int8, fencing_token
             FROM ai_jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap(),
    };
    Parked {
        status: row.0,
        last_error: row.1,
        updated_at: row.2,
        lease_owner: row.3,
        lease_expires_at: row.4,
        fencing_token: row.5,
    }
}

/// A shared log for tests that watch several [`Publish`] calls at once.
pub type Log<T> = Arc<Mutex<Vec<T>>>;
