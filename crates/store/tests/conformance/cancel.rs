//! An operator's cancel: every non-final status, the refusal of final and
//! missing jobs, the fencing-token bump that stops a worker mid-download,
//! the scene version rule and the one audit event.

use clawcut_core::JobStatus;
use clawcut_store::{ProviderCancel, StoreError};

use super::*;

pub async fn cancel_each_non_final_status(url: &str) {
    let ctx = setup(url).await;
    let cases = [
        ("q", "queued", None),
        ("qp", "queued", Some("p-qp")),
        ("p", "pending", Some("p-p")),
        ("r", "processing", Some("p-r")),
        ("n", "needs_operator", None),
    ];
    for (id, status, pid) in cases {
        seed(&ctx, id, status, pid).await;
        let before = ctx.db.job(id).await.unwrap().unwrap();
        let got = ctx
            .store
            .cancel(
                id,
                "cli:alice",
                Some("wrong prompt"),
                &ProviderCancel::Requested,
                NOW,
            )
            .await
            .unwrap_or_else(|e| panic!("{id} ({status}): {e}"));
        assert_eq!(got.from.as_str(), status, "{id}");
        assert_eq!(got.provider, "openai", "{id}");
        assert_eq!(got.provider_job_id.as_deref(), pid, "{id}");
        assert_eq!(got.reason, "canceled by cli:alice: wrong prompt");
        let row = ctx.db.job(id).await.unwrap().unwrap();
        assert_eq!(row.status, "canceled", "{id}");
        assert_eq!(
            row.last_error.as_deref(),
            Some("canceled by cli:alice: wrong prompt")
        );
        assert_eq!((row.completed_at, row.updated_at), (Some(NOW), NOW), "{id}");
        assert_eq!(
            (row.lease_owner, row.lease_expires_at),
            (None, None),
            "{id}"
        );
        assert_eq!(row.fencing_token, before.fencing_token + 1, "{id}");
        let v = ctx.db.version(&format!("v-{id}")).await.unwrap().unwrap();
        assert_eq!(v.status, "failed", "{id}");
        assert_eq!(
            v.error.as_deref(),
            Some("canceled by cli:alice: wrong prompt")
        );
        let ev = ctx.db.events(id).await.unwrap();
        assert_eq!(ev.len(), 1, "{id}: one event");
        assert_eq!(ev[0].from_status.as_deref(), Some(status));
        assert_eq!(ev[0].to_status, "canceled");
        assert_eq!(ev[0].worker_id, "cli:alice");
        assert_eq!(ev[0].created_at, NOW);
        let d: serde_json::Value = serde_json::from_str(&ev[0].detail).unwrap();
        assert_eq!(d["event"], "operator_cancel");
        assert_eq!(d["reason"], "wrong prompt");
        assert_eq!(d["provider_cancel"], "requested");
        assert_eq!(d["provider_cancel_requested"], true);
    }
    assert_eq!(ctx.db.all_events().await.unwrap().len(), cases.len());
}

pub async fn cancel_refuses_final_and_missing_jobs(url: &str) {
    let ctx = setup(url).await;
    for (id, status) in [("c", "completed"), ("f", "failed"), ("x", "canceled")] {
        seed(&ctx, id, status, Some("p")).await;
    }
    // A submission in flight: its outcome is not known yet.
    seed(&ctx, "s", "submitting", None).await;
    // Not a video job: the daemon ignores other kinds, so it reads as none.
    let mut image = NewJob::video("img", "processing", Some("p"), NOW - 30 * MIN);
    image.kind = "image".into();
    ctx.db.insert_job(&image).await.unwrap();
    for (id, status) in [
        ("c", Some("completed")),
        ("f", Some("failed")),
        ("x", Some("canceled")),
        ("s", Some("submitting")),
        ("img", None),
        ("nope", None),
    ] {
        let before = ctx.db.job(id).await.unwrap();
        match ctx
            .store
            .cancel(id, "eve", None, &ProviderCancel::NotAsked, NOW)
            .await
        {
            Err(StoreError::NotCancelable {
                job_id,
                status: got,
            }) => {
                assert_eq!(job_id, id);
                assert_eq!(got.as_deref(), status);
            }
            other => panic!("{id}: expected NotCancelable, got {other:?}"),
        }
        assert_eq!(ctx.db.job(id).await.unwrap(), before, "{id} untouched");
        if let Some(v) = ctx.db.version(&format!("v-{id}")).await.unwrap() {
            assert_eq!(v.status, "generating", "{id}: version untouched");
        }
    }
    assert_eq!(ctx.db.all_events().await.unwrap(), []);
}

pub async fn cancel_fences_out_the_worker_holding_the_job(url: &str) {
    let ctx = setup(url).await;
    seed(&ctx, "j", "processing", Some("p")).await;
    // A worker is mid-download: it holds a live lease.
    let (_, lease) = lease_of(&ctx, "j", "W", NOW).await;
    let got = ctx
        .store
        .cancel(
            "j",
            "api:admin",
            None,
            &ProviderCancel::NotSupported,
            NOW + 1,
        )
        .await
        .unwrap();
    assert_eq!(got.from, JobStatus::Processing);
    assert_eq!(got.reason, "canceled by api:admin");
    let after_cancel = ctx.db.job("j").await.unwrap().unwrap();
    assert_eq!(after_cancel.fencing_token, lease.token + 1);

    // Every later write with the old lease is refused and writes nothing.
    let mut files = Files::new();
    let c = completion(JobStatus::Processing, NOW + 2, "j");
    assert_lease_lost(ctx.store.complete(&lease, &c, &mut files).await, "complete");
    assert_eq!(files.calls, [], "publish never called");
    assert_lease_lost(
        ctx.store
            .settle(
                &lease,
                &settle(JobStatus::Processing, JobStatus::Failed, NOW + 2, Some("x")),
            )
            .await,
        "settle",
    );
    assert_lease_lost(
        ctx.store
            .reschedule(
                &lease,
                &reschedule(JobStatus::Processing, JobStatus::Processing, NOW + 2, 1),
            )
            .await,
        "reschedule",
    );
    assert_lease_lost(
        ctx.store
            .heartbeat(&lease, NOW + 2, Duration::from_secs(60))
            .await,
        "heartbeat",
    );
    assert_eq!(ctx.db.job("j").await.unwrap().unwrap(), after_cancel);
    let v = ctx.db.version("v-j").await.unwrap().unwrap();
    assert_eq!(v.status, "failed");
    assert_eq!(v.video_path, None);
    let ev = ctx.db.events("j").await.unwrap();
    assert_eq!(ev.len(), 1, "exactly one final event");
    assert_eq!(ev[0].to_status, "canceled");
    let d: serde_json::Value = serde_json::from_str(&ev[0].detail).unwrap();
    assert_eq!(d["provider_cancel"], "not_supported");
    assert_eq!(d["provider_cancel_requested"], false);
    assert_eq!(d["reason"], serde_json::Value::Null);

    // Never claimable again.
    let r = rules(true);
    let mut req = claim_req("W2", NOW + DAY, 10, &r);
    req.force = true;
    assert!(jobs(ctx.store.claim(&req).await.unwrap()).is_empty());
}

pub async fn cancel_keeps_a_ready_version_and_records_a_failed_provider_call(url: &str) {
    let ctx = setup(url).await;
    seed(&ctx, "j", "pending", Some("p")).await;
    ctx.db
        .exec("UPDATE scene_versions SET status = 'ready' WHERE id = 'v-j'")
        .await
        .unwrap();
    let before = ctx.db.version("v-j").await.unwrap().unwrap();
    ctx.store
        .cancel(
            "j",
            "cli:bob",
            Some("  "),
            &ProviderCancel::Failed("Server(503): down".into()),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(ctx.db.version("v-j").await.unwrap().unwrap(), before);
    let row = ctx.db.job("j").await.unwrap().unwrap();
    // A blank reason is no reason.
    assert_eq!(row.last_error.as_deref(), Some("canceled by cli:bob"));
    let ev = ctx.db.events("j").await.unwrap();
    assert_eq!(ev.len(), 1);
    let d: serde_json::Value = serde_json::from_str(&ev[0].detail).unwrap();
    assert_eq!(d["provider_cancel"], "failed");
    assert_eq!(d["provider_cancel_error"], "Server(503): down");
    assert_eq!(d["provider_cancel_requested"], false);
    // A job without a scene version cancels too.
    let mut j = NewJob::video("bare", "queued", None, NOW - 10 * MIN);
    j.scene_id = None;
    j.scene_version_id = None;
    ctx.db.insert_job(&j).await.unwrap();
    ctx.store
        .cancel("bare", "cli:bob", None, &ProviderCancel::NotAsked, NOW)
        .await
        .unwrap();
    assert_eq!(
        ctx.db.job("bare").await.unwrap().unwrap().status,
        "canceled"
    );
}
