//! The fenced writes: complete, settle, reschedule, release, heartbeat,
//! resolve and make_due.

use clawcut_core::JobStatus;
use clawcut_store::{Completion, Reschedule, Resolution, Settle, StoreError, StoredOutput};

use super::*;

pub fn completion(from: JobStatus, now: Millis, id: &str) -> Completion {
    Completion {
        from,
        now,
        video: StoredOutput {
            path: format!("/media/videos/s-{id}/v-{id}.mp4"),
            sha256: "ab".repeat(32),
            bytes: 1234,
        },
        thumbnail: Some(StoredOutput {
            path: format!("/media/thumbnails/s-{id}/v-{id}.webp"),
            sha256: "cd".repeat(32),
            bytes: 56,
        }),
        thumbnail_problem: None,
    }
}

/// The job row as a completion `c` (of 1234 bytes) leaves it: completed at
/// `c.now`, its outputs recorded, its lease and last error cleared.
pub fn assert_job_completed(row: &clawcut_test_support::db::JobRow, c: &Completion) {
    assert_eq!(row.status, "completed", "{}", row.id);
    assert_eq!(row.completed_at, Some(c.now));
    assert_eq!(row.updated_at, c.now);
    assert_eq!(row.video_path.as_deref(), Some(c.video.path.as_str()));
    assert_eq!(
        row.thumbnail_path.as_deref(),
        Some(c.thumbnail.as_ref().unwrap().path.as_str())
    );
    assert_eq!(row.video_sha256.as_deref(), Some(c.video.sha256.as_str()));
    assert_eq!(row.video_bytes, Some(1234));
    assert_eq!(
        (&row.lease_owner, row.lease_expires_at, &row.last_error),
        (&None, None, &None)
    );
}

pub fn settle(from: JobStatus, to: JobStatus, now: Millis, reason: Option<&str>) -> Settle {
    Settle {
        from,
        to,
        now,
        reason: reason.map(str::to_owned),
        provider_job_id: None,
        idempotency_key: None,
        detail: serde_json::json!({"why": reason}),
        keep_lease: false,
        attempts: None,
    }
}

pub fn reschedule(from: JobStatus, to: JobStatus, now: Millis, polls: u32) -> Reschedule {
    Reschedule {
        from,
        to,
        now,
        attempts: 2,
        polls,
        next_attempt_at: now + 30_000,
        last_error: Some("HTTP 503".to_owned()),
    }
}

pub async fn stale_fencing_token_changes_nothing(url: &str) {
    let ctx = setup(url).await;
    seed(&ctx, "j", "pending", Some("p")).await;
    let r = rules(false);
    let a = jobs(ctx.store.claim(&claim_req("A", NOW, 1, &r)).await.unwrap());
    let lease_a = a[0].lease().unwrap();
    assert_eq!(lease_a.token, 1);
    // A stalls past its lease; B takes the job over.
    assert!(
        claim_ids(&ctx, "B", NOW + 30_000, 1, &r).await.is_empty(),
        "lease still live"
    );
    let b = jobs(
        ctx.store
            .claim(&claim_req("B", NOW + 2 * MIN, 1, &r))
            .await
            .unwrap(),
    );
    let lease_b = b[0].lease().unwrap();
    assert_eq!(lease_b.token, 2);
    assert_eq!(a[0].lease_taken_from, None, "a first claim replaces nobody");
    assert_eq!(
        b[0].lease_taken_from.as_deref(),
        Some("A"),
        "B took over A's expired lease"
    );
    let before = ctx.db.job("j").await.unwrap().unwrap();
    let version_before = ctx.db.version("v-j").await.unwrap();
    let scene_before = ctx.db.scene("s-j").await.unwrap();

    let now = NOW + 3 * MIN;
    let st = &ctx.store;
    let mut files = Files::new();
    assert_lease_lost(
        st.complete(
            &lease_a,
            &completion(JobStatus::Pending, now, "j"),
            &mut files,
        )
        .await,
        "complete",
    );
    assert_eq!(files.calls, [], "a stale lease never publishes");
    assert_lease_lost(
        st.settle(
            &lease_a,
            &settle(JobStatus::Pending, JobStatus::Failed, now, Some("x")),
        )
        .await,
        "settle",
    );
    assert_lease_lost(
        st.reschedule(
            &lease_a,
            &reschedule(JobStatus::Pending, JobStatus::Processing, now, 1),
        )
        .await,
        "reschedule",
    );
    assert_lease_lost(
        st.heartbeat(&lease_a, now, Duration::from_secs(600)).await,
        "heartbeat",
    );
    assert_lease_lost(st.release(&lease_a).await, "release");
    // The same token under another owner name is no better.
    let forged = Lease {
        owner: "A".into(),
        ..lease_b.clone()
    };
    assert_lease_lost(st.release(&forged).await, "forged owner");

    assert_eq!(ctx.db.job("j").await.unwrap().unwrap(), before);
    assert_eq!(ctx.db.version("v-j").await.unwrap(), version_before);
    assert_eq!(ctx.db.scene("s-j").await.unwrap(), scene_before);
    assert!(ctx.db.events("j").await.unwrap().is_empty());

    // The current holder still can.
    let mut files = Files::new();
    st.complete(
        &lease_b,
        &completion(JobStatus::Pending, now, "j"),
        &mut files,
    )
    .await
    .unwrap();
    assert_eq!(files.calls, [Call::Publish, Call::Committed]);
    assert_eq!(ctx.db.job("j").await.unwrap().unwrap().status, "completed");
}

pub async fn heartbeat_extends_lease(url: &str) {
    let ctx = setup(url).await;
    seed(&ctx, "j", "processing", Some("p")).await;
    let (_, lease) = lease_of(&ctx, "j", "A", NOW).await;
    ctx.store
        .heartbeat(&lease, NOW + 30_000, Duration::from_secs(300))
        .await
        .unwrap();
    let row = ctx.db.job("j").await.unwrap().unwrap();
    assert_eq!(row.lease_expires_at, Some(NOW + 30_000 + 300_000));
    assert_eq!(row.fencing_token, lease.token);
    assert!(
        claim_ids(&ctx, "B", NOW + 2 * MIN, 5, &rules(false))
            .await
            .is_empty()
    );
    ctx.store.release(&lease).await.unwrap();
    let row = ctx.db.job("j").await.unwrap().unwrap();
    assert_eq!((row.lease_owner, row.lease_expires_at), (None, None));
    assert_eq!(
        row.updated_at,
        NOW - 10 * MIN,
        "release touches nothing else"
    );
    assert_eq!(
        claim_ids(&ctx, "B", NOW + 2 * MIN, 5, &rules(false)).await,
        ["j"]
    );
}

pub async fn complete_writes_job_version_scene_and_one_event(url: &str) {
    let ctx = setup(url).await;
    seed(&ctx, "j", "processing", Some("p")).await;
    let (_, lease) = lease_of(&ctx, "j", "worker-1", NOW).await;
    let c = completion(JobStatus::Processing, NOW + 5, "j");
    let mut files = Files::new();
    ctx.store.complete(&lease, &c, &mut files).await.unwrap();
    assert_eq!(
        files.calls,
        [Call::Publish, Call::Committed],
        "published once, inside the transaction, then told it committed"
    );

    assert_eq!(c.now, NOW + 5);
    assert_job_completed(&ctx.db.job("j").await.unwrap().unwrap(), &c);

    let v = ctx.db.version("v-j").await.unwrap().unwrap();
    assert_eq!(v.status, "ready");
    assert_eq!(v.video_path, Some(c.video.path.clone()));
    assert_eq!(v.video_sha256, Some(c.video.sha256.clone()));
    assert_eq!(v.video_bytes, Some(1234));
    assert_eq!(v.error, None);
    assert_eq!(v.updated_at, NOW + 5);
    let s = ctx.db.scene("s-j").await.unwrap().unwrap();
    assert_eq!(s.current_version_id.as_deref(), Some("v-j"));
    assert_eq!(s.updated_at, NOW + 5);

    let ev = ctx.db.events("j").await.unwrap();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].from_status.as_deref(), Some("processing"));
    assert_eq!(ev[0].to_status, "completed");
    assert_eq!(ev[0].worker_id, "worker-1");
    assert_eq!(ev[0].created_at, NOW + 5);
    let detail: serde_json::Value = serde_json::from_str(&ev[0].detail).unwrap();
    assert_eq!(detail["video"]["sha256"], c.video.sha256);

    // Completing twice (a retry after a lost reply) changes nothing.
    let mut again = Files::new();
    assert_lease_lost(
        ctx.store.complete(&lease, &c, &mut again).await,
        "second complete",
    );
    assert_eq!(again.calls, [], "a second completion never publishes");
    assert_eq!(ctx.db.events("j").await.unwrap().len(), 1);
    // A finished job is never claimed again.
    assert!(
        claim_ids(&ctx, "w", NOW + DAY, 10, &rules(true))
            .await
            .is_empty()
    );
}

pub async fn complete_newer_version_keeps_scene_pointer(url: &str) {
    let ctx = setup(url).await;
    let db = &ctx.db;
    db.insert_scene("s", "scene").await.unwrap();
    db.insert_version("v_old", "s", NOW - 20 * MIN)
        .await
        .unwrap();
    db.insert_version("v_new", "s", NOW - 10 * MIN)
        .await
        .unwrap();
    for (job, version) in [("j_old", "v_old"), ("j_new", "v_new")] {
        let mut j = NewJob::video(job, "processing", Some("p"), NOW - 30 * MIN);
        j.scene_id = Some("s".into());
        j.scene_version_id = Some(version.into());
        db.insert_job(&j).await.unwrap();
    }
    // The newer take finishes first; the older one must not steal the pointer.
    let (_, l) = lease_of(&ctx, "j_new", "w", NOW).await;
    ctx.store
        .complete(
            &l,
            &completion(JobStatus::Processing, NOW + 1, "n"),
            &mut Files::new(),
        )
        .await
        .unwrap();
    let (_, l) = lease_of(&ctx, "j_old", "w", NOW).await;
    ctx.store
        .complete(
            &l,
            &completion(JobStatus::Processing, NOW + 2, "o"),
            &mut Files::new(),
        )
        .await
        .unwrap();
    let s = db.scene("s").await.unwrap().unwrap();
    assert_eq!(s.current_version_id.as_deref(), Some("v_new"));
    assert_eq!(s.updated_at, NOW + 1, "unchanged pointer, untouched scene");
    assert_eq!(db.version("v_old").await.unwrap().unwrap().status, "ready");

    // In the other order the pointer moves forward.
    db.insert_scene("t", "scene").await.unwrap();
    db.insert_version("t_old", "t", NOW - 20 * MIN)
        .await
        .unwrap();
    db.insert_version("t_new", "t", NOW - 10 * MIN)
        .await
        .unwrap();
    // Same created_at: the id breaks the tie (t_tie_b > t_tie_a).
    db.insert_version("t_tie_a", "t", NOW - 5 * MIN)
        .await
        .unwrap();
    db.insert_version("t_tie_b", "t", NOW - 5 * MIN)
        .await
        .unwrap();
    for (job, version) in [
        ("k_old", "t_old"),
        ("k_new", "t_new"),
        ("k_tie_a", "t_tie_a"),
        ("k_tie_b", "t_tie_b"),
    ] {
        let mut j = NewJob::video(job, "processing", Some("p"), NOW - 30 * MIN);
        j.scene_id = Some("t".into());
        j.scene_version_id = Some(version.into());
        db.insert_job(&j).await.unwrap();
    }
    let mut now = NOW;
    let mut expect = |job: &'static str, current: &'static str| {
        now += 1;
        (job, current, now)
    };
    let steps = [
        expect("k_old", "t_old"),
        expect("k_new", "t_new"),
        expect("k_tie_b", "t_tie_b"),
        expect("k_tie_a", "t_tie_b"),
    ];
    for (job, current, now) in steps {
        let (_, l) = lease_of(&ctx, job, "w", now).await;
        ctx.store
            .complete(
                &l,
                &completion(JobStatus::Processing, now, job),
                &mut Files::new(),
            )
            .await
            .unwrap();
        let s = db.scene("t").await.unwrap().unwrap();
        assert_eq!(
            s.current_version_id.as_deref(),
            Some(current),
            "after {job}"
        );
    }

    // A pointer at a version that no longer exists is replaced.
    db.insert_scene("u", "scene").await.unwrap();
    db.insert_version("u1", "u", NOW - 20 * MIN).await.unwrap();
    db.set_current_version("u", "gone").await.unwrap();
    let mut j = NewJob::video("ju", "processing", Some("p"), NOW - 30 * MIN);
    j.scene_id = Some("u".into());
    j.scene_version_id = Some("u1".into());
    db.insert_job(&j).await.unwrap();
    let (_, l) = lease_of(&ctx, "ju", "w", NOW).await;
    ctx.store
        .complete(
            &l,
            &completion(JobStatus::Processing, NOW, "ju"),
            &mut Files::new(),
        )
        .await
        .unwrap();
    let s = db.scene("u").await.unwrap().unwrap();
    assert_eq!(s.current_version_id.as_deref(), Some("u1"));
}

pub async fn complete_without_scene(url: &str) {
    let ctx = setup(url).await;
    let mut j = NewJob::video("bare", "pending", Some("p"), NOW - 30 * MIN);
    j.scene_id = None;
    j.scene_version_id = None;
    ctx.db.insert_job(&j).await.unwrap();
    let (_, l) = lease_of(&ctx, "bare", "w", NOW).await;
    let mut c = completion(JobStatus::Pending, NOW, "bare");
    c.thumbnail = None;
    ctx.store.complete(&l, &c, &mut Files::new()).await.unwrap();
    let row = ctx.db.job("bare").await.unwrap().unwrap();
    assert_eq!(row.status, "completed");
    assert_eq!(row.thumbnail_path, None);
    assert_eq!(ctx.db.events("bare").await.unwrap().len(), 1);
}

pub async fn settle_records_the_last_attempt(url: &str) {
    let ctx = setup(url).await;
    seed(&ctx, "x", "pending", Some("p")).await;
    let (_, lease) = lease_of(&ctx, "x", "w", NOW).await;
    let mut s = settle(
        JobStatus::Pending,
        JobStatus::Failed,
        NOW + 1,
        Some("gave up"),
    );
    s.attempts = Some(12);
    ctx.store.settle(&lease, &s).await.unwrap();
    let row = ctx.db.job("x").await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.attempts), ("failed", 12));
    // Released cleanly: the next claim replaces nobody.
    seed(&ctx, "y", "pending", Some("p")).await;
    let (_, lease) = lease_of(&ctx, "y", "w", NOW).await;
    ctx.store.release(&lease).await.unwrap();
    let again = jobs(
        ctx.store
            .claim(&claim_req("w2", NOW + 1, 5, &rules(false)))
            .await
            .unwrap(),
    );
    let y = again.iter().find(|j| j.id == "y").unwrap();
    assert_eq!(y.lease_taken_from, None);
}

pub async fn settle_final_and_parked_states(url: &str) {
    let ctx = setup(url).await;
    for (id, to) in [
        ("f", JobStatus::Failed),
        ("c", JobStatus::Canceled),
        ("n", JobStatus::NeedsOperator),
    ] {
        seed(&ctx, id, "pending", Some("p")).await;
        let (_, lease) = lease_of(&ctx, id, "w", NOW).await;
        let reason = format!("reason for {id}");
        ctx.store
            .settle(
                &lease,
                &settle(JobStatus::Pending, to, NOW + 7, Some(&reason)),
            )
            .await
            .unwrap();
        let row = ctx.db.job(id).await.unwrap().unwrap();
        assert_eq!(row.status, to.as_str());
        assert_eq!(row.last_error.as_deref(), Some(reason.as_str()));
        assert_eq!(row.updated_at, NOW + 7);
        assert_eq!((row.lease_owner, row.lease_expires_at), (None, None));
        assert_eq!(row.completed_at, to.is_final().then_some(NOW + 7));
        assert_eq!(row.provider_job_id.as_deref(), Some("p"));
        let v = ctx.db.version(&format!("v-{id}")).await.unwrap().unwrap();
        if to.is_final() {
            assert_eq!(v.status, "failed");
            assert_eq!(v.error.as_deref(), Some(reason.as_str()));
        } else {
            assert_eq!(v.status, "generating");
        }
        let ev = ctx.db.events(id).await.unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].from_status.as_deref(), Some("pending"));
        assert_eq!(ev[0].to_status, to.as_str());
        let detail: serde_json::Value = serde_json::from_str(&ev[0].detail).unwrap();
        assert_eq!(detail["why"], reason);
        // A wrong `from` is refused like a stale lease.
        seed(&ctx, &format!("{id}2"), "pending", Some("p")).await;
        let (_, lease) = lease_of(&ctx, &format!("{id}2"), "w", NOW).await;
        assert_lease_lost(
            ctx.store
                .settle(&lease, &settle(JobStatus::Processing, to, NOW, None))
                .await,
            "wrong from",
        );
    }
}

pub async fn settle_submission_steps(url: &str) {
    let ctx = setup(url).await;
    seed(&ctx, "s1", "queued", None).await;
    seed(&ctx, "s2", "queued", None).await;
    let on = rules(true);
    let claimed = jobs(
        ctx.store
            .claim(&claim_req("w", NOW, 10, &on))
            .await
            .unwrap(),
    );
    assert_eq!(claimed.len(), 2);
    for job in claimed {
        let lease = job.lease().unwrap();
        let mut intent = settle(JobStatus::Queued, JobStatus::Submitting, NOW + 1, None);
        intent.idempotency_key = Some(format!("key-{}", job.id));
        intent.keep_lease = true;
        ctx.store.settle(&lease, &intent).await.unwrap();
        let row = ctx.db.job(&job.id).await.unwrap().unwrap();
        assert_eq!(row.status, "submitting");
        assert_eq!(row.idempotency_key, Some(format!("key-{}", job.id)));
        assert_eq!(row.lease_owner.as_deref(), Some("w"), "lease kept");
        assert_eq!(row.lease_expires_at, Some(NOW + 60_000));
        if job.id == "s1" {
            // Accepted: the provider id is committed and the lease released.
            let mut done = settle(JobStatus::Submitting, JobStatus::Pending, NOW + 2, None);
            done.provider_job_id = Some("video_123".into());
            ctx.store.settle(&lease, &done).await.unwrap();
            let row = ctx.db.job("s1").await.unwrap().unwrap();
            assert_eq!(row.status, "pending");
            assert_eq!(row.provider_job_id.as_deref(), Some("video_123"));
            assert_eq!(row.idempotency_key.as_deref(), Some("key-s1"));
            assert_eq!(row.lease_owner, None);
            assert_eq!(row.completed_at, None);
        } else {
            // Not accepted: back to queued, still without a provider id.
            let back = settle(
                JobStatus::Submitting,
                JobStatus::Queued,
                NOW + 2,
                Some("HTTP 400"),
            );
            ctx.store.settle(&lease, &back).await.unwrap();
            let row = ctx.db.job("s2").await.unwrap().unwrap();
            assert_eq!(row.status, "queued");
            assert_eq!(row.provider_job_id, None);
            assert_eq!(row.last_error.as_deref(), Some("HTTP 400"));
        }
        let ev = ctx.db.events(&job.id).await.unwrap();
        let steps: Vec<(Option<String>, String)> = ev
            .into_iter()
            .map(|e| (e.from_status, e.to_status))
            .collect();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0], (Some("queued".into()), "submitting".into()));
    }
}

pub async fn reschedule_snooze_and_retry(url: &str) {
    let ctx = setup(url).await;
    seed(&ctx, "j", "pending", Some("p")).await;
    // Snooze: still pending; no event, updated_at untouched.
    let (_, lease) = lease_of(&ctx, "j", "w", NOW).await;
    ctx.store
        .reschedule(
            &lease,
            &reschedule(JobStatus::Pending, JobStatus::Pending, NOW + 1, 1),
        )
        .await
        .unwrap();
    let row = ctx.db.job("j").await.unwrap().unwrap();
    assert_eq!(row.status, "pending");
    assert_eq!((row.attempts, row.polls), (2, 1));
    assert_eq!(row.next_attempt_at, NOW + 1 + 30_000);
    assert_eq!(row.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(row.updated_at, NOW - 10 * MIN);
    assert_eq!((row.lease_owner, row.lease_expires_at), (None, None));
    assert!(ctx.db.events("j").await.unwrap().is_empty());
    // Not due yet, then due.
    assert!(
        claim_ids(&ctx, "w", NOW + 2, 5, &rules(false))
            .await
            .is_empty()
    );
    assert_eq!(
        claim_ids(&ctx, "w", NOW + 1 + 30_000, 5, &rules(false)).await,
        ["j"]
    );
    let lease = ctx
        .store
        .get_job("j")
        .await
        .unwrap()
        .unwrap()
        .lease()
        .unwrap();
    // Status change: an event and a new updated_at.
    ctx.store
        .reschedule(
            &lease,
            &reschedule(JobStatus::Pending, JobStatus::Processing, NOW + 40_000, 2),
        )
        .await
        .unwrap();
    let row = ctx.db.job("j").await.unwrap().unwrap();
    assert_eq!(row.status, "processing");
    assert_eq!(row.updated_at, NOW + 40_000);
    let ev = ctx.db.events("j").await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].to_status, "processing");
    // Reschedule after losing the lease.
    assert_lease_lost(
        ctx.store
            .reschedule(
                &lease,
                &reschedule(JobStatus::Processing, JobStatus::Processing, NOW, 3),
            )
            .await,
        "released lease",
    );
}

pub async fn resolve_both_ways_and_not_resolvable(url: &str) {
    let ctx = setup(url).await;
    for id in ["r", "f"] {
        seed(&ctx, id, "pending", Some("p")).await;
        let (_, lease) = lease_of(&ctx, id, "w", NOW).await;
        let mut s = settle(
            JobStatus::Pending,
            JobStatus::NeedsOperator,
            NOW,
            Some("unknowable"),
        );
        s.idempotency_key = Some("k".into());
        ctx.store.settle(&lease, &s).await.unwrap();
    }
    let st = ctx
        .store
        .resolve("r", Resolution::Resubmit, "alice", None, NOW + 1)
        .await
        .unwrap();
    assert_eq!(st, JobStatus::Queued);
    let row = ctx.db.job("r").await.unwrap().unwrap();
    assert_eq!(row.status, "queued");
    assert_eq!((row.provider_job_id, row.idempotency_key), (None, None));
    assert_eq!((row.attempts, row.polls, row.next_attempt_at), (0, 0, 0));
    let ev = ctx.db.events("r").await.unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[1].worker_id, "alice");
    assert_eq!(ev[1].from_status.as_deref(), Some("needs_operator"));
    assert_eq!(ev[1].to_status, "queued");

    let st = ctx
        .store
        .resolve(
            "f",
            Resolution::Fail,
            "bob",
            Some("provider says it never started"),
            NOW + 2,
        )
        .await
        .unwrap();
    assert_eq!(st, JobStatus::Failed);
    let row = ctx.db.job("f").await.unwrap().unwrap();
    assert_eq!(row.status, "failed");
    assert_eq!(row.last_error.as_deref(), Some("failed by operator"));
    assert_eq!(row.completed_at, Some(NOW + 2));
    let v = ctx.db.version("v-f").await.unwrap().unwrap();
    assert_eq!(v.status, "failed");
    let ev = ctx.db.events("f").await.unwrap();
    assert_eq!(ev.last().unwrap().to_status, "failed");
    assert_eq!(ev.last().unwrap().worker_id, "bob");
    let detail: serde_json::Value = serde_json::from_str(&ev.last().unwrap().detail).unwrap();
    assert_eq!(detail["resolution"], "fail");
    assert_eq!(detail["reason"], "provider says it never started");
    let detail: serde_json::Value = serde_json::from_str(&ev_r_detail(&ctx).await).unwrap();
    assert!(
        detail.get("reason").is_none(),
        "no reason given, none recorded: {detail}"
    );

    // Already resolved, a running job, a missing job: refused, untouched.
    for (id, status) in [("f", Some("failed")), ("r", Some("queued")), ("nope", None)] {
        let before = ctx.db.job(id).await.unwrap();
        match ctx
            .store
            .resolve(id, Resolution::Fail, "eve", None, NOW + 3)
            .await
        {
            Err(StoreError::NotResolvable {
                job_id,
                status: got,
            }) => {
                assert_eq!(job_id, id);
                assert_eq!(got.as_deref(), status);
            }
            other => panic!("{id}: expected NotResolvable, got {other:?}"),
        }
        assert_eq!(ctx.db.job(id).await.unwrap(), before);
    }
    assert_eq!(ctx.db.all_events().await.unwrap().len(), 4);
}

pub async fn make_due_only_when_it_changes_something(url: &str) {
    let ctx = setup(url).await;
    seed(&ctx, "j", "pending", Some("pj")).await;
    seed(&ctx, "done", "completed", Some("pdone")).await;
    set_ts(&ctx, "j", "next_attempt_at", Some(NOW + 10 * MIN)).await;
    set_ts(&ctx, "done", "next_attempt_at", Some(NOW + 10 * MIN)).await;
    assert!(
        !ctx.store.make_due("replicate", "pj", NOW).await.unwrap(),
        "another provider's id"
    );
    assert!(ctx.store.make_due("openai", "pj", NOW).await.unwrap());
    let row = ctx.db.job("j").await.unwrap().unwrap();
    assert_eq!(row.next_attempt_at, NOW);
    assert_eq!(row.updated_at, NOW - 10 * MIN);
    assert!(
        !ctx.store.make_due("openai", "pj", NOW).await.unwrap(),
        "already due"
    );
    assert!(
        !ctx.store.make_due("openai", "pdone", NOW).await.unwrap(),
        "final"
    );
    assert!(!ctx.store.make_due("openai", "missing", NOW).await.unwrap());
    // fal stores `model|request_id`; its webhooks name only the request id.
    seed(&ctx, "fal", "pending", Some("fal-ai/veo3|req-1")).await;
    set_ts(&ctx, "fal", "next_attempt_at", Some(NOW + 10 * MIN)).await;
    assert!(
        !ctx.store.make_due("openai", "eq-1", NOW).await.unwrap(),
        "a suffix is not enough"
    );
    assert!(ctx.store.make_due("openai", "req-1", NOW).await.unwrap());
    set_ts(&ctx, "fal", "next_attempt_at", Some(NOW + 10 * MIN)).await;
    assert_eq!(claim_ids(&ctx, "w", NOW, 5, &rules(false)).await, ["j"]);
}

async fn ev_r_detail(ctx: &Ctx) -> String {
    ctx.db.events("r").await.unwrap()[1].detail.clone()
}
