//! Rows the daemon cannot read: a claim returns them beside the healthy
//! jobs, and `set_aside` parks them as `needs_operator`.

use clawcut_core::JobStatus;
use clawcut_store::{Backend, SetAside};

use super::*;

/// One corrupted row: which job, the SQL that breaks it, and what the claim
/// must say about it.
struct Broken {
    id: &'static str,
    set: &'static str,
    column: &'static str,
    /// The problem, exactly, or (ending in `*`) its beginning.
    problem: &'static str,
    /// Not eligible without `force` (its `updated_at` is not a time).
    needs_force: bool,
}

const fn broken(
    id: &'static str,
    set: &'static str,
    column: &'static str,
    problem: &'static str,
) -> Broken {
    Broken {
        id,
        set,
        column,
        problem,
        needs_force: false,
    }
}

/// What each backend lets the app store that the daemon cannot read.
/// SQLite's typing is dynamic (a column's affinity converts only what
/// converts losslessly); PostgreSQL's is static, but a negative counter or
/// an infinite timestamp fits its types.
fn broken_rows(b: Backend) -> Vec<Broken> {
    match b {
        Backend::Sqlite => vec![
            broken(
                "bad_request",
                "request = CAST(x'00ff' AS BLOB)",
                "request",
                "expected TEXT, found BLOB",
            ),
            broken(
                "bad_request_utf8",
                "request = CAST(x'ff' AS TEXT)",
                "request",
                "not valid TEXT (*",
            ),
            broken(
                "bad_created",
                "created_at = 'yesterday'",
                "created_at",
                "expected INTEGER, found TEXT",
            ),
            broken(
                "bad_attempts_real",
                "attempts = 1.5",
                "attempts",
                "expected INTEGER, found REAL",
            ),
            broken(
                "bad_attempts_negative",
                "attempts = -3",
                "attempts",
                "out of range: -3",
            ),
            broken(
                "bad_provider",
                "provider = x'01'",
                "provider",
                "expected TEXT, found BLOB",
            ),
            broken(
                "bad_scene",
                "scene_id = x'02'",
                "scene_id",
                "expected TEXT, found BLOB",
            ),
            broken(
                "bad_last_error",
                "last_error = x'03'",
                "last_error",
                "expected TEXT, found BLOB",
            ),
            Broken {
                needs_force: true,
                ..broken(
                    "bad_updated",
                    "updated_at = 'yesterday'",
                    "updated_at",
                    "expected INTEGER, found TEXT",
                )
            },
        ],
        Backend::Postgres => vec![
            broken(
                "bad_attempts_negative",
                "attempts = -3",
                "attempts",
                "out of range: -3",
            ),
            broken("bad_polls", "polls = -1", "polls", "out of range: -1"),
            broken(
                "bad_created",
                "created_at = 'infinity'",
                "created_at",
                "expected INT8, found NULL",
            ),
            broken(
                "bad_updated",
                "updated_at = '-infinity'",
                "updated_at",
                "expected INT8, found NULL",
            ),
        ],
    }
}

fn assert_problem(want: &str, got: &str, id: &str) {
    match want.strip_suffix('*') {
        Some(prefix) => assert!(
            got.starts_with(prefix),
            "{id}: {got:?} should start with {prefix:?}"
        ),
        None => assert_eq!(got, want, "{id}"),
    }
}

pub async fn claim_returns_unreadable_rows_beside_healthy_jobs(url: &str) {
    let ctx = setup(url).await;
    let healthy = ["good_a", "good_b", "good_c"];
    for id in healthy {
        seed(&ctx, id, "pending", Some("p")).await;
    }
    let broken = broken_rows(ctx.backend());
    for b in &broken {
        seed(&ctx, b.id, "pending", Some("p")).await;
        ctx.db
            .exec(&format!(
                "UPDATE ai_jobs SET {} WHERE id = '{}'",
                b.set, b.id
            ))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", b.id));
    }

    let r = rules(false);
    let (good, mut bad) = split(
        ctx.store
            .claim(&claim_req("w", NOW, 100, &r))
            .await
            .unwrap(),
    );
    assert_eq!(
        good.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        healthy
    );
    for j in &good {
        assert_eq!(j.status, JobStatus::Pending);
        assert_eq!(j.lease_owner.as_deref(), Some("w"));
        assert_eq!(j.lease_expires_at, Some(NOW + 60_000));
        assert_eq!(
            j.lease(),
            Some(Lease {
                job_id: j.id.clone(),
                owner: "w".into(),
                token: 1
            })
        );
    }
    // A row whose updated_at is not a time is only claimed when forced.
    for b in broken.iter().filter(|b| b.needs_force) {
        assert!(
            bad.iter().all(|u| u.lease.job_id != b.id),
            "{} claimed unforced",
            b.id
        );
        let mut req = claim_req("w", NOW, 1, &r);
        req.only_job = Some(b.id);
        req.force = true;
        let (none, more) = split(ctx.store.claim(&req).await.unwrap());
        assert!(none.is_empty());
        assert_eq!(more.len(), 1, "{}", b.id);
        bad.extend(more);
    }
    let mut want_ids: Vec<&str> = broken.iter().map(|b| b.id).collect();
    want_ids.sort();
    let mut got_ids: Vec<&str> = bad.iter().map(|u| u.lease.job_id.as_str()).collect();
    got_ids.sort();
    assert_eq!(got_ids, want_ids);
    for u in &bad {
        let b = broken.iter().find(|b| b.id == u.lease.job_id).unwrap();
        assert_eq!(
            u.lease,
            Lease {
                job_id: b.id.into(),
                owner: "w".into(),
                token: 1
            }
        );
        assert_eq!(u.status.as_deref(), Some("pending"), "{}", b.id);
        assert_eq!(u.column, b.column, "{}: {}", b.id, u.problem);
        assert_problem(b.problem, &u.problem, b.id);
    }

    // Each is parked for an operator, in one transaction with its event.
    let now = NOW + 5;
    for u in &bad {
        let s = SetAside {
            now,
            column: u.column.clone(),
            problem: u.problem.clone(),
        };
        ctx.store.set_aside(&u.lease, &s).await.unwrap();
        let id = u.lease.job_id.as_str();
        assert_eq!(
            parked(&ctx, id).await,
            Parked {
                status: "needs_operator".into(),
                last_error: Some(format!(
                    "row rejected: column `{}`: {}",
                    u.column, u.problem
                )),
                updated_at: now,
                lease_owner: None,
                lease_expires_at: None,
                fencing_token: 1,
            }
        );
        let ev = ctx.db.events(id).await.unwrap();
        assert_eq!(ev.len(), 1, "{id}: {ev:?}");
        assert_eq!(ev[0].from_status.as_deref(), Some("pending"));
        assert_eq!(ev[0].to_status, "needs_operator");
        assert_eq!(ev[0].worker_id, "w");
        assert_eq!(ev[0].created_at, now);
        let detail: serde_json::Value = serde_json::from_str(&ev[0].detail).unwrap();
        assert_eq!(
            detail,
            serde_json::json!({"event": "row_rejected", "column": u.column, "problem": u.problem})
        );
        // The lease went with it.
        assert_lease_lost(ctx.store.set_aside(&u.lease, &s).await, "set aside twice");
        assert_eq!(ctx.db.events(id).await.unwrap().len(), 1);
    }
    // The healthy jobs were left alone.
    for id in healthy {
        let row = ctx.db.job(id).await.unwrap().unwrap();
        assert_eq!(
            (row.status.as_str(), row.lease_owner.as_deref()),
            ("pending", Some("w"))
        );
        assert!(ctx.db.events(id).await.unwrap().is_empty());
    }
    let report = ctx.store.status_report(now, &r).await.unwrap();
    assert_eq!(report.needs_operator, bad.len() as u64);
    assert_eq!(report.oldest_needs_operator_updated_at, Some(now));

    // Set aside is never claimed again, even forced; the healthy jobs are.
    for j in &good {
        ctx.store.release(&j.lease().unwrap()).await.unwrap();
    }
    let mut req = claim_req("w2", NOW + DAY, 100, &r);
    req.force = true;
    let again = jobs(ctx.store.claim(&req).await.unwrap());
    assert_eq!(
        again.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        healthy
    );
}

pub async fn set_aside_with_a_stale_lease_changes_nothing(url: &str) {
    let ctx = setup(url).await;
    seed(&ctx, "j", "pending", Some("p")).await;
    let r = rules(false);
    let a = jobs(ctx.store.claim(&claim_req("A", NOW, 1, &r)).await.unwrap());
    let lease_a = a[0].lease().unwrap();
    let b = jobs(
        ctx.store
            .claim(&claim_req("B", NOW + 2 * MIN, 1, &r))
            .await
            .unwrap(),
    );
    let lease_b = b[0].lease().unwrap();
    assert_eq!((lease_a.token, lease_b.token), (1, 2));
    let before = ctx.db.job("j").await.unwrap().unwrap();
    let s = SetAside {
        now: NOW + 3 * MIN,
        column: "request".into(),
        problem: "expected TEXT, found BLOB".into(),
    };
    assert_lease_lost(ctx.store.set_aside(&lease_a, &s).await, "stale token");
    let forged = Lease {
        owner: "A".into(),
        ..lease_b.clone()
    };
    assert_lease_lost(ctx.store.set_aside(&forged, &s).await, "forged owner");
    let other = Lease {
        job_id: "missing".into(),
        ..lease_b.clone()
    };
    assert_lease_lost(ctx.store.set_aside(&other, &s).await, "no such job");
    assert_eq!(ctx.db.job("j").await.unwrap().unwrap(), before);
    assert!(ctx.db.all_events().await.unwrap().is_empty());

    // The holder can.
    ctx.store.set_aside(&lease_b, &s).await.unwrap();
    let row = ctx.db.job("j").await.unwrap().unwrap();
    assert_eq!(row.status, "needs_operator");
    assert_eq!(row.lease_owner, None);
    assert_eq!(ctx.db.events("j").await.unwrap().len(), 1);
}

/// A final row is never parked, even under a lease that still matches (a
/// row the app or an operator finished while a worker held it).
pub async fn set_aside_never_changes_a_final_row(url: &str) {
    let ctx = setup(url).await;
    for status in ["completed", "failed", "canceled"] {
        let id = format!("fin_{status}");
        seed(&ctx, &id, "pending", Some("p")).await;
        let (_, lease) = lease_of(&ctx, &id, "w", NOW).await;
        ctx.db
            .exec(&format!(
                "UPDATE ai_jobs SET status = '{status}' WHERE id = '{id}'"
            ))
            .await
            .unwrap();
        let before = ctx.db.job(&id).await.unwrap().unwrap();
        assert_eq!(
            before.lease_owner.as_deref(),
            Some("w"),
            "the fence still matches"
        );
        let s = SetAside {
            now: NOW + 1,
            column: "request".into(),
            problem: "is not JSON".into(),
        };
        assert_lease_lost(ctx.store.set_aside(&lease, &s).await, status);
        assert_eq!(ctx.db.job(&id).await.unwrap().unwrap(), before, "{status}");
        assert!(ctx.db.events(&id).await.unwrap().is_empty(), "{status}");
    }
}

/// SQLite only: a TEXT primary key can hold a BLOB. Such a row cannot be
/// fenced without its id, so the claim logs and skips it; it stays leased
/// until the lease runs out, and is skipped again by the next claim.
pub async fn claim_skips_a_row_whose_id_cannot_be_read(url: &str) {
    let ctx = setup(url).await;
    assert_eq!(ctx.backend(), Backend::Sqlite);
    seed(&ctx, "good", "pending", Some("p")).await;
    let at = NOW - 10 * MIN;
    ctx.db
        .exec(&format!(
            "INSERT INTO ai_jobs (id, kind, provider, request, status, provider_job_id,
                 created_at, updated_at)
             VALUES (x'6869', 'video', 'openai', '{{}}', 'pending', 'p', {at}, {at})"
        ))
        .await
        .unwrap();
    let lease_of_blob = || async {
        let AppDb::Sqlite(pool) = &ctx.db else {
            unreachable!()
        };
        sqlx::query_as::<_, (Option<String>, i64)>(
            "SELECT lease_owner, fencing_token FROM ai_jobs WHERE typeof(id) = 'blob'",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let r = rules(false);
    let got = ctx.store.claim(&claim_req("w", NOW, 10, &r)).await.unwrap();
    assert_eq!(
        jobs(got).iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["good"]
    );
    assert_eq!(
        lease_of_blob().await,
        (Some("w".into()), 1),
        "leased by the claim"
    );
    assert!(
        claim_ids(&ctx, "w2", NOW + 1, 10, &r).await.is_empty(),
        "lease still live"
    );
    // Both leases ran out: the healthy job comes back, the other is
    // leased and skipped again.
    assert_eq!(claim_ids(&ctx, "w2", NOW + 2 * MIN, 10, &r).await, ["good"]);
    assert_eq!(lease_of_blob().await, (Some("w2".into()), 2));
}

/// SQLite only: whatever the token column held (the app's typing is
/// dynamic), a claim writes an INTEGER, so every claimed row can be fenced.
pub async fn claim_writes_an_integer_token_whatever_the_column_held(url: &str) {
    let ctx = setup(url).await;
    assert_eq!(ctx.backend(), Backend::Sqlite);
    for (id, token, want) in [("real", "2.5", 3), ("text", "'abc'", 1), ("int", "7", 8)] {
        seed(&ctx, id, "pending", Some("p")).await;
        ctx.db
            .exec(&format!(
                "UPDATE ai_jobs SET fencing_token = {token} WHERE id = '{id}'"
            ))
            .await
            .unwrap();
        let (job, lease) = lease_of(&ctx, id, "w", NOW).await;
        assert_eq!(lease.token, want, "{id}");
        assert_eq!(job.fencing_token, want, "{id}");
        ctx.store.release(&lease).await.unwrap();
    }
}
