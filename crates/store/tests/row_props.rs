//! Property test: whatever the app (or a hand edit) stores in a job's
//! columns — any SQLite storage class in any column — the store never fails
//! a claim, a read, a list or the status report because of it, and never
//! panics. A claimed row comes back as a job or as `Unreadable` naming its
//! column; `get_job` answers the job or `CorruptRow`.
//!
//! SQLite only: its dynamic typing is what lets a column hold anything.
//! PostgreSQL's typed columns refuse such values at the app's INSERT.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clawcut_core::EligibilityRules;
use clawcut_store::{ClaimRequest, Claimed, JobFilter, Store, StoreError};
use clawcut_test_support::db::{AppDb, NewJob, temp_sqlite};
use proptest::prelude::*;

const NOW: i64 = 1_800_000_000_000;

/// One SQLite value, as an SQL literal.
fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("NULL".to_owned()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        ".{0,24}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(|b| format!("x'{}'", hex(&b))),
        Just("'processing'".to_owned()),
        Just("'{}'".to_owned()),
        Just("9223372036854775807".to_owned()),
        Just("-9223372036854775808".to_owned()),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const COLUMNS: &[&str] = &[
    "request",
    "created_at",
    "updated_at",
    "attempts",
    "polls",
    "next_attempt_at",
    "lease_expires_at",
    "lease_owner",
    "fencing_token",
    "provider_job_id",
    "provider",
    "scene_id",
    "scene_version_id",
    "idempotency_key",
    "last_error",
    "status",
];

struct Rig {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn Store>,
    db: AppDb,
    _dir: tempfile::TempDir,
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (dir, url) = temp_sqlite();
        let (store, db) = rt.block_on(async {
            let store = clawcut_store::connect(&url).await.unwrap();
            store.migrate().await.unwrap();
            (store, AppDb::connect(&url).await.unwrap())
        });
        Rig {
            rt,
            store,
            db,
            _dir: dir,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn no_column_value_fails_a_claim_a_read_or_a_report(
        sets in prop::collection::vec((prop::sample::select(COLUMNS), literal()), 1..5),
    ) {
        static N: AtomicU64 = AtomicU64::new(0);
        let rig = rig();
        let id = format!("prop_{}", N.fetch_add(1, Ordering::Relaxed));
        let assignments: Vec<String> = sets.iter().map(|(c, v)| format!("{c} = {v}")).collect();
        let rules = EligibilityRules {
            min_age: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 86_400),
            submit_enabled: true,
        };
        rig.rt.block_on(async {
            let job = NewJob::video(&id, "processing", Some("p"), NOW - 600_000);
            rig.db.insert_job_with_scene(&job).await.unwrap();
            // The column's own constraints (NOT NULL, CHECK) may refuse a
            // value, as they would refuse the app: then there is nothing
            // to read.
            let sql = format!("UPDATE ai_jobs SET {} WHERE id = '{id}'", assignments.join(", "));
            if rig.db.exec(&sql).await.is_err() {
                return Ok(());
            }
            match rig.store.get_job(&id).await {
                Ok(_) | Err(StoreError::CorruptRow { .. }) => {}
                Err(e) => prop_assert!(false, "get_job after {sql}: {e:?}"),
            }
            let claimed = rig
                .store
                .claim(&ClaimRequest {
                    worker_id: "w",
                    now: NOW,
                    lease_ttl: Duration::from_secs(60),
                    limit: 5,
                    rules: &rules,
                    only_job: Some(&id),
                    force: true,
                    probe: None,
                })
                .await;
            match claimed {
                Ok(rows) => {
                    for c in rows {
                        match c {
                            Claimed::Job(j) => prop_assert_eq!(&j.id, &id),
                            Claimed::Unreadable(u) => {
                                prop_assert!(!u.column.is_empty() && !u.problem.is_empty(), "{u:?}")
                            }
                        }
                    }
                }
                Err(e) => prop_assert!(false, "claim after {sql}: {e:?}"),
            }
            for f in [JobFilter::Stranded, JobFilter::NeedsOperator] {
                if let Err(e) = rig.store.list_jobs(f, NOW, &rules, 50).await {
                    prop_assert!(false, "list_jobs after {sql}: {e:?}");
                }
            }
            if let Err(e) = rig.store.status_report(NOW, &rules).await {
                prop_assert!(false, "status_report after {sql}: {e:?}");
            }
            // Leave the row out of later cases' lists and counts.
            rig.db
                .exec(&format!("DELETE FROM ai_jobs WHERE id = '{id}'"))
                .await
                .unwrap();
            Ok(())
        })?;
    }
}
