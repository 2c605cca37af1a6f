//! The operator's view: `status_report` and `list_jobs`.

use clawcut_core::JobStatus;
use clawcut_store::{Gauges, JobFilter, StatusReport};

use super::*;

/// A known mix: what each number of the report must count.
async fn seed_mix(ctx: &Ctx) {
    let mut rows = Vec::new();
    let mut add = |id: &str, status: &'static str, pid: Option<&str>, f: &dyn Fn(&mut RawJob)| {
        let mut j = RawJob::new(id, status, pid);
        f(&mut j);
        rows.push(j);
    };
    // Eligible and stranded.
    add("old_pending", "pending", Some("p"), &|j| {
        j.updated_at = NOW - 30 * MIN
    });
    add("pending", "pending", Some("p"), &|_| {});
    // Stranded but not due: not eligible.
    add("not_due", "processing", Some("p"), &|j| {
        j.updated_at = NOW - 40 * MIN;
        j.next_attempt_at = NOW + MIN;
    });
    // Running (leased): neither.
    add("leased", "processing", Some("p"), &|j| {
        j.lease_expires_at = Some(NOW + MIN)
    });
    // Too young: neither.
    add("young", "queued", Some("p"), &|j| j.updated_at = NOW);
    // Eligible (recovery), not stranded (no provider id).
    add("submitting", "submitting", None, &|j| {
        j.updated_at = NOW - 50 * MIN
    });
    // Unsubmitted; eligible only with submission on.
    add("unsubmitted", "queued", None, &|_| {});
    add("needs_op_old", "needs_operator", Some("p"), &|j| {
        j.updated_at = NOW - 90 * MIN
    });
    add("needs_op", "needs_operator", None, &|_| {});
    add("done", "completed", Some("p"), &|_| {});
    add("failed", "failed", Some("p"), &|_| {});
    // Not ours: counted nowhere.
    add("image", "pending", Some("p"), &|j| j.kind = "image");
    insert_raw(ctx, &rows).await;
}

pub async fn status_report_numbers(url: &str) {
    let ctx = setup(url).await;
    let empty = ctx.store.status_report(NOW, &rules(false)).await.unwrap();
    assert_eq!(
        empty,
        StatusReport {
            by_status_cap: 10_000,
            ..StatusReport::default()
        }
    );
    assert_eq!(
        ctx.store.gauges(NOW, &rules(false)).await.unwrap(),
        Gauges::default()
    );
    seed_mix(&ctx).await;
    let rep = ctx.store.status_report(NOW, &rules(false)).await.unwrap();
    let want = StatusReport {
        eligible: 3,
        oldest_eligible_updated_at: Some(NOW - 50 * MIN),
        stranded: 3,
        oldest_stranded_updated_at: Some(NOW - 40 * MIN),
        running: 1,
        needs_operator: 2,
        oldest_needs_operator_updated_at: Some(NOW - 90 * MIN),
        unsubmitted: 1,
        by_status: vec![
            (JobStatus::Queued, 2),
            (JobStatus::Submitting, 1),
            (JobStatus::Pending, 2),
            (JobStatus::Processing, 2),
            (JobStatus::Completed, 1),
            (JobStatus::Failed, 1),
            (JobStatus::NeedsOperator, 2),
        ],
        by_status_cap: 10_000,
    };
    assert_eq!(rep, want);
    // The gauges agree with the report.
    assert_eq!(
        ctx.store.gauges(NOW, &rules(false)).await.unwrap(),
        Gauges {
            eligible: want.eligible,
            oldest_eligible_updated_at: want.oldest_eligible_updated_at,
            needs_operator: want.needs_operator,
        }
    );
    let on = ctx.store.status_report(NOW, &rules(true)).await.unwrap();
    assert_eq!(on.eligible, 4);
    // `eligible` is exactly what a claim takes.
    let claimed = jobs(
        ctx.store
            .claim(&claim_req("w", NOW, 1000, &rules(true)))
            .await
            .unwrap(),
    );
    assert_eq!(claimed.len() as u64, on.eligible);
    let after = ctx.store.status_report(NOW, &rules(true)).await.unwrap();
    assert_eq!(after.eligible, 0);
    assert_eq!(after.oldest_eligible_updated_at, None);
    assert_eq!(after.running, 5);
}

pub async fn list_jobs_stranded_and_needs_operator(url: &str) {
    let ctx = setup(url).await;
    seed_mix(&ctx).await;
    let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let stranded = ctx
        .store
        .list_jobs(JobFilter::Stranded, NOW, &rules(false), 100)
        .await
        .unwrap();
    assert_eq!(ids(stranded), ["not_due", "old_pending", "pending"]);
    let limited = ctx
        .store
        .list_jobs(JobFilter::Stranded, NOW, &rules(false), 1)
        .await
        .unwrap();
    assert_eq!(ids(limited), ["not_due"]);
    let ops = ctx
        .store
        .list_jobs(JobFilter::NeedsOperator, NOW, &rules(false), 100)
        .await
        .unwrap();
    assert_eq!(ids(ops), ["needs_op_old", "needs_op"]);
}
