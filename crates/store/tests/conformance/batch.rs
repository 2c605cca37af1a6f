//! `complete_many`, the batched completion: each job of a batch ends as a
//! single `complete` would leave it, one that cannot be finished drops out
//! alone, and a failure of the transaction puts every file back.

use clawcut_core::{JobStatus, Lease};
use clawcut_store::{Backend, Completing, Completion, StoreError};

use super::*;

/// Lease each of `ids` to `worker`.
async fn leases(ctx: &Ctx, ids: &[&str], worker: &str) -> Vec<Lease> {
    let mut out = Vec::new();
    for id in ids {
        out.push(lease_of(ctx, id, worker, NOW).await.1);
    }
    out
}

/// Run one batch of `(lease, completion, files)`.
async fn batch(
    ctx: &Ctx,
    jobs: &[(Lease, Completion)],
    files: &mut [Files],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut items: Vec<Completing<'_>> = jobs
        .iter()
        .zip(files.iter_mut())
        .map(|((lease, completion), publish)| Completing {
            lease,
            completion,
            publish,
        })
        .collect();
    ctx.store.complete_many(&mut items).await
}

fn kinds(results: &[Result<(), StoreError>]) -> Vec<&'static str> {
    results
        .iter()
        .map(|r| match r {
            Ok(()) => "ok",
            Err(e) if e.is_lease_lost() => "lease_lost",
            Err(StoreError::PublishOutputs(_)) => "publish",
            Err(_) => "other",
        })
        .collect()
}

pub async fn complete_many_writes_each_job_as_complete_does(url: &str) {
    let ctx = setup(url).await;
    let ids = ["a", "b", "c"];
    for id in ids {
        seed(&ctx, id, "processing", Some(&format!("p-{id}"))).await;
    }
    let ls = leases(&ctx, &ids, "worker-1").await;
    let jobs: Vec<(Lease, Completion)> = ls
        .into_iter()
        .zip(ids)
        .enumerate()
        .map(|(n, (l, id))| (l, completion(JobStatus::Processing, NOW + n as i64, id)))
        .collect();
    let mut files: Vec<Files> = ids.iter().map(|_| Files::new()).collect();
    let results = batch(&ctx, &jobs, &mut files).await.unwrap();
    assert_eq!(kinds(&results), ["ok", "ok", "ok"]);
    for (n, ((_, c), f)) in jobs.iter().zip(&files).enumerate() {
        let id = ids[n];
        assert_eq!(f.calls, [Call::Publish, Call::Committed], "{id}");
        assert_job_completed(&ctx.db.job(id).await.unwrap().unwrap(), c);
        let v = ctx.db.version(&format!("v-{id}")).await.unwrap().unwrap();
        assert_eq!(
            (v.status.as_str(), v.video_path.as_deref(), v.updated_at),
            ("ready", Some(c.video.path.as_str()), c.now)
        );
        assert_eq!(v.video_bytes, Some(1234));
        let s = ctx.db.scene(&format!("s-{id}")).await.unwrap().unwrap();
        assert_eq!(s.current_version_id, Some(format!("v-{id}")));
        assert_eq!(s.updated_at, c.now);
        let ev = ctx.db.events(id).await.unwrap();
        assert_eq!(ev.len(), 1, "{id}: {ev:?}");
        assert_eq!(ev[0].from_status.as_deref(), Some("processing"));
        assert_eq!(ev[0].to_status, "completed");
        assert_eq!(ev[0].worker_id, "worker-1");
        assert_eq!(ev[0].created_at, c.now);
        let detail: serde_json::Value = serde_json::from_str(&ev[0].detail).unwrap();
        assert_eq!(detail["video"]["sha256"], c.video.sha256);
        assert_eq!(detail["thumbnail"]["bytes"], 56);
    }
    // The same batch again (a retry after a lost reply) changes nothing and
    // publishes nothing.
    let mut again: Vec<Files> = ids.iter().map(|_| Files::new()).collect();
    let results = batch(&ctx, &jobs, &mut again).await.unwrap();
    assert_eq!(kinds(&results), ["lease_lost", "lease_lost", "lease_lost"]);
    assert!(again.iter().all(|f| f.calls.is_empty()));
    assert_eq!(ctx.db.all_events().await.unwrap().len(), 3);
    // An empty batch is an empty answer.
    assert_eq!(batch(&ctx, &[], &mut []).await.unwrap().len(), 0);
}

/// The directories each item's publish left unsynced are fsynced by the
/// batch, once each, before its commit: an item one of whose directories
/// cannot be fsynced is taken out and its files put back; an item sharing
/// only a good directory with it still completes.
pub async fn complete_many_takes_out_the_jobs_whose_directory_fsync_fails(url: &str) {
    let ctx = setup(url).await;
    let ids = ["shares", "broken", "alone"];
    for id in ids {
        seed(&ctx, id, "processing", Some(&format!("p-{id}"))).await;
    }
    let mut ls = leases(&ctx, &ids, "w").await;
    let now = NOW + MIN;
    let jobs: Vec<(Lease, Completion)> = ids
        .iter()
        .zip(ls.drain(..))
        .map(|(id, l)| (l, completion(JobStatus::Processing, now, id)))
        .collect();
    let media = tempfile::tempdir().unwrap();
    let (d1, d2) = (media.path().join("videos"), media.path().join("thumbnails"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let gone = media.path().join("removed-before-its-fsync");
    let mut files: Vec<Files> = [vec![d1.clone()], vec![d1, gone], vec![d2]]
        .into_iter()
        .map(|defer| Files {
            defer,
            ..Files::new()
        })
        .collect();
    let results = batch(&ctx, &jobs, &mut files).await.unwrap();
    assert_eq!(kinds(&results), ["ok", "publish", "ok"]);
    let Err(StoreError::PublishOutputs(e)) = &results[1] else {
        unreachable!()
    };
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("removed-before-its-fsync"), "{e}");
    let calls: Vec<&[Call]> = files.iter().map(|f| f.calls.as_slice()).collect();
    assert_eq!(
        calls,
        [
            &[Call::Publish, Call::Committed][..],
            &[Call::Publish, Call::Revert],
            &[Call::Publish, Call::Committed],
        ]
    );
    for (i, id) in [(0, "shares"), (2, "alone")] {
        assert_job_completed(&ctx.db.job(id).await.unwrap().unwrap(), &jobs[i].1);
    }
    let broken = ctx.db.job("broken").await.unwrap().unwrap();
    assert_eq!(broken.status, "processing");
    assert_eq!(ctx.db.events("broken").await.unwrap(), []);
    // Only the others were written: one event each, and the broken job's
    // version and scene untouched.
    assert_eq!(ctx.db.all_events().await.unwrap().len(), 2);
    let v = ctx.db.version("v-broken").await.unwrap().unwrap();
    assert_eq!(v.status, "generating");
    let s = ctx.db.scene("s-broken").await.unwrap().unwrap();
    assert_eq!(s.current_version_id, None);
}

pub async fn complete_many_takes_out_only_the_jobs_it_cannot_finish(url: &str) {
    let ctx = setup(url).await;
    let ids = ["ok1", "stale", "wrong_from", "disk_full", "ok2"];
    for id in ids {
        seed(&ctx, id, "processing", Some(&format!("p-{id}"))).await;
    }
    let mut ls = leases(&ctx, &ids, "w").await;
    // `stale`: w stalled past its lease and B took over.
    let (_, taken) = lease_of(&ctx, "stale", "B", NOW + 2 * MIN).await;
    let now = NOW + 3 * MIN;
    let mut jobs: Vec<(Lease, Completion)> = Vec::new();
    for (id, l) in ids.iter().zip(ls.drain(..)) {
        let from = if *id == "wrong_from" {
            JobStatus::Pending
        } else {
            JobStatus::Processing
        };
        jobs.push((l, completion(from, now, id)));
    }
    let mut files: Vec<Files> = ids
        .iter()
        .map(|id| {
            if *id == "disk_full" {
                Files::failing()
            } else {
                Files::new()
            }
        })
        .collect();
    let results = batch(&ctx, &jobs, &mut files).await.unwrap();
    assert_eq!(
        kinds(&results),
        ["ok", "lease_lost", "lease_lost", "publish", "ok"]
    );
    let calls: Vec<&[Call]> = files.iter().map(|f| f.calls.as_slice()).collect();
    assert_eq!(
        calls,
        [
            &[Call::Publish, Call::Committed][..],
            &[],
            &[],
            &[Call::Publish],
            &[Call::Publish, Call::Committed],
        ]
    );
    let status = |id: &'static str| {
        let db = &ctx.db;
        async move {
            let r = db.job(id).await.unwrap().unwrap();
            (r.status, r.lease_owner)
        }
    };
    assert_eq!(status("ok1").await, ("completed".into(), None));
    assert_eq!(status("ok2").await, ("completed".into(), None));
    assert_eq!(
        status("stale").await,
        ("processing".into(), Some(taken.owner.clone()))
    );
    assert_eq!(
        status("wrong_from").await,
        ("processing".into(), Some("w".into()))
    );
    assert_eq!(
        status("disk_full").await,
        ("processing".into(), Some("w".into()))
    );
    for id in ["stale", "wrong_from", "disk_full"] {
        assert_eq!(ctx.db.events(id).await.unwrap(), [], "{id}");
        let v = ctx.db.version(&format!("v-{id}")).await.unwrap().unwrap();
        assert_eq!(v.status, "generating", "{id}");
    }
    assert_eq!(ctx.db.all_events().await.unwrap().len(), 2);
    // The failed one's lease still holds: it completes on the next try.
    let mut retry = Files::new();
    ctx.store
        .complete(&jobs[3].0, &jobs[3].1, &mut retry)
        .await
        .unwrap();
    assert_eq!(retry.calls, [Call::Publish, Call::Committed]);
}

/// Two versions of one scene, and two jobs of one version, in one batch:
/// the newer version keeps the pointer whatever the order, and every job
/// gets its event.
pub async fn complete_many_keeps_the_newer_version_rule_inside_a_batch(url: &str) {
    let ctx = setup(url).await;
    let db = &ctx.db;
    for s in ["s1", "s2"] {
        db.insert_scene(s, "scene").await.unwrap();
        db.insert_version(&format!("{s}_old"), s, NOW - 20 * MIN)
            .await
            .unwrap();
        db.insert_version(&format!("{s}_new"), s, NOW - 10 * MIN)
            .await
            .unwrap();
    }
    db.insert_version("shared", "s3", NOW - 10 * MIN)
        .await
        .unwrap();
    db.insert_scene("s3", "scene").await.unwrap();
    // s1: newer listed first; s2: older listed first; two jobs of `shared`.
    let rows = [
        ("j1_new", "s1", "s1_new"),
        ("j1_old", "s1", "s1_old"),
        ("j2_old", "s2", "s2_old"),
        ("j2_new", "s2", "s2_new"),
        ("j3_a", "s3", "shared"),
        ("j3_b", "s3", "shared"),
    ];
    for (job, scene, version) in rows {
        let mut j = NewJob::video(job, "processing", Some("p"), NOW - 30 * MIN);
        j.scene_id = Some(scene.into());
        j.scene_version_id = Some(version.into());
        db.insert_job(&j).await.unwrap();
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let ls = leases(&ctx, &ids, "w").await;
    let jobs: Vec<(Lease, Completion)> = ls
        .into_iter()
        .zip(&ids)
        .map(|(l, id)| (l, completion(JobStatus::Processing, NOW + 1, id)))
        .collect();
    let mut files: Vec<Files> = ids.iter().map(|_| Files::new()).collect();
    let results = batch(&ctx, &jobs, &mut files).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for (s, v) in [("s1", "s1_new"), ("s2", "s2_new"), ("s3", "shared")] {
        let scene = db.scene(s).await.unwrap().unwrap();
        assert_eq!(scene.current_version_id.as_deref(), Some(v), "{s}");
    }
    for v in ["s1_old", "s1_new", "s2_old", "s2_new", "shared"] {
        assert_eq!(db.version(v).await.unwrap().unwrap().status, "ready", "{v}");
    }
    // The later job of the shared version wrote last, as it would have
    // committed last one by one.
    let shared = db.version("shared").await.unwrap().unwrap();
    assert_eq!(shared.video_path, Some(jobs[5].1.video.path.clone()));
    for id in &ids {
        assert_eq!(db.events(id).await.unwrap().len(), 1, "{id}");
    }
}

/// A failure after the files were published (a statement, or on
/// PostgreSQL the COMMIT) rolls the whole batch back and reverts every
/// file; nothing of any job is written.
pub async fn complete_many_failure_reverts_every_file(url: &str) {
    let ctx = setup(url).await;
    let b = ctx.backend();
    let ids = ["a", "b"];
    for id in ids {
        seed(&ctx, id, "processing", Some("p")).await;
    }
    let ls = leases(&ctx, &ids, "w").await;
    let jobs: Vec<(Lease, Completion)> = ls
        .into_iter()
        .zip(ids)
        .map(|(l, id)| (l, completion(JobStatus::Processing, NOW + 5, id)))
        .collect();
    let mut ats = vec![false];
    if b == Backend::Postgres {
        ats.push(true);
    }
    for at_commit in ats {
        ctx.db.exec(refuse_events(b, at_commit)).await.unwrap();
        let mut files = vec![Files::new(), Files::new()];
        match batch(&ctx, &jobs, &mut files).await {
            Err(StoreError::Complete(_)) => {}
            other => panic!("expected Complete (at commit: {at_commit}), got {other:?}"),
        }
        for f in &files {
            assert_eq!(
                f.calls,
                [Call::Publish, Call::Revert],
                "at commit {at_commit}"
            );
        }
        for id in ids {
            let row = ctx.db.job(id).await.unwrap().unwrap();
            assert_eq!(
                (row.status.as_str(), row.lease_owner.as_deref()),
                ("processing", Some("w"))
            );
        }
        assert_eq!(ctx.db.all_events().await.unwrap().len(), 0);
        ctx.db.exec(accept_events(b)).await.unwrap();
    }
    let mut files = vec![Files::new(), Files::new()];
    let results = batch(&ctx, &jobs, &mut files).await.unwrap();
    assert_eq!(kinds(&results), ["ok", "ok"]);
    assert_eq!(ctx.db.all_events().await.unwrap().len(), 2);
}

/// Two batches whose jobs share scene versions in crossed order (A holds
/// v1 then v2, B v2 then v1) both finish: the locks are taken in one order,
/// so neither waits on the other forever (PostgreSQL would abort one as a
/// deadlock: an error).
pub async fn complete_many_crossed_batches_do_not_deadlock(url: &str) {
    let ctx = setup(url).await;
    let db = &ctx.db;
    db.insert_scene("s", "scene").await.unwrap();
    db.insert_version("v1", "s", NOW - 20 * MIN).await.unwrap();
    db.insert_version("v2", "s", NOW - 10 * MIN).await.unwrap();
    for (job, version) in [("a1", "v1"), ("a2", "v2"), ("b2", "v2"), ("b1", "v1")] {
        let mut j = NewJob::video(job, "processing", Some("p"), NOW - 30 * MIN);
        j.scene_id = Some("s".into());
        j.scene_version_id = Some(version.into());
        db.insert_job(&j).await.unwrap();
    }
    let la = leases(&ctx, &["a1", "a2"], "A").await;
    let lb = leases(&ctx, &["b2", "b1"], "B").await;
    let mk = |ls: Vec<Lease>, ids: [&str; 2]| -> Vec<(Lease, Completion)> {
        ls.into_iter()
            .zip(ids)
            .map(|(l, id)| (l, completion(JobStatus::Processing, NOW + 1, id)))
            .collect()
    };
    let (ja, jb) = (mk(la, ["a1", "a2"]), mk(lb, ["b2", "b1"]));
    let (mut fa, mut fb) = (
        vec![Files::new(), Files::new()],
        vec![Files::new(), Files::new()],
    );
    let (ra, rb) = tokio::join!(batch(&ctx, &ja, &mut fa), batch(&ctx, &jb, &mut fb));
    assert_eq!(kinds(&ra.unwrap()), ["ok", "ok"]);
    assert_eq!(kinds(&rb.unwrap()), ["ok", "ok"]);
    let s = db.scene("s").await.unwrap().unwrap();
    assert_eq!(s.current_version_id.as_deref(), Some("v2"));
    assert_eq!(db.all_events().await.unwrap().len(), 4);
}

/// Jobs without a scene or version (no version lock to take), beside one
/// with both, in one batch; and a second holder of one of them completing
/// it alone at the same moment: exactly one of the two writes it.
pub async fn complete_many_jobs_without_a_scene_version(url: &str) {
    let ctx = setup(url).await;
    for id in ["bare1", "bare2"] {
        let mut j = NewJob::video(id, "processing", Some("p"), NOW - 30 * MIN);
        j.scene_id = None;
        j.scene_version_id = None;
        ctx.db.insert_job(&j).await.unwrap();
    }
    seed(&ctx, "full", "processing", Some("p")).await;
    let ids = ["bare1", "bare2", "full"];
    let mut ls = leases(&ctx, &ids, "A").await;
    // bare2's lease expires and B takes it; A's batch and B's single
    // completion race for it.
    let (_, taken) = lease_of(&ctx, "bare2", "B", NOW + 2 * MIN).await;
    let now = NOW + 3 * MIN;
    let jobs: Vec<(Lease, Completion)> = ls
        .drain(..)
        .zip(ids)
        .map(|(l, id)| {
            let mut c = completion(JobStatus::Processing, now, id);
            c.thumbnail = None;
            (l, c)
        })
        .collect();
    let mut files: Vec<Files> = ids.iter().map(|_| Files::new()).collect();
    let mut b_files = Files::new();
    let b_completion = jobs[1].1.clone();
    let (batch_results, single) = tokio::join!(
        batch(&ctx, &jobs, &mut files),
        ctx.store.complete(&taken, &b_completion, &mut b_files)
    );
    assert_eq!(kinds(&batch_results.unwrap()), ["ok", "lease_lost", "ok"]);
    single.unwrap();
    assert_eq!(files[1].calls, [], "the stale holder never publishes");
    assert_eq!(b_files.calls, [Call::Publish, Call::Committed]);
    for id in ids {
        assert_eq!(ctx.db.job(id).await.unwrap().unwrap().status, "completed");
        assert_eq!(ctx.db.events(id).await.unwrap().len(), 1, "{id}");
    }
    let bare2 = ctx.db.events("bare2").await.unwrap();
    assert_eq!(bare2[0].worker_id, "B");
}

/// Every batch statement finds its rows by primary key, however large the
/// tables: a scan of `scenes`, `scene_versions` or `ai_jobs` per batch
/// would grow with the history and run under the batch's locks.
pub async fn complete_many_reads_rows_by_primary_key(url: &str) {
    let ctx = setup(url).await;
    let b = ctx.backend();
    let n = 20_000;
    let seed = match b {
        Backend::Sqlite => format!(
            "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {n})
             INSERT INTO scenes (id, title) SELECT 's' || i, 't' FROM g;
             WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {n})
             INSERT INTO scene_versions (id, scene_id, created_at) SELECT 'v' || i, 's' || i, 0 FROM g;
             WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {n})
             INSERT INTO ai_jobs (id, kind, provider, scene_id, scene_version_id, request, status,
                                  provider_job_id, created_at, updated_at)
             SELECT 'j' || i, 'video', 'openai', 's' || i, 'v' || i, '{{}}', 'completed', 'p' || i, 0, 0
             FROM g;
             ANALYZE;"
        ),
        Backend::Postgres => format!(
            "INSERT INTO scenes (id, title) SELECT 's' || i, 't' FROM generate_series(1, {n}) i;
             INSERT INTO scene_versions (id, scene_id, created_at)
                 SELECT 'v' || i, 's' || i, now() FROM generate_series(1, {n}) i;
             INSERT INTO ai_jobs (id, kind, provider, scene_id, scene_version_id, request, status,
                                  provider_job_id, created_at, updated_at)
                 SELECT 'j' || i, 'video', 'openai', 's' || i, 'v' || i, '{{}}', 'completed',
                        'p' || i, now(), now()
                 FROM generate_series(1, {n}) i;
             ANALYZE;"
        ),
    };
    ctx.db.exec(&seed).await.unwrap();
    let objects = serde_json::json!([
        {"id": "j1", "owner": "w", "token": 1, "from_status": "processing", "now": NOW,
         "video": "/v", "sha": "00", "bytes": 1, "thumb": null,
         "version": "v1", "scene": "s1"},
        {"id": "j2", "owner": "w", "token": 1, "from_status": "processing", "now": NOW,
         "video": "/v", "sha": "00", "bytes": 1, "thumb": null,
         "version": "v2", "scene": "s2"},
    ])
    .to_string();
    for (name, sql) in clawcut_store::complete_many_sql(b) {
        let param = &objects;
        let plan: Vec<String> = match &ctx.db {
            AppDb::Sqlite(pool) => {
                let q = format!("EXPLAIN QUERY PLAN {sql}");
                sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(q))
                    .bind(param.as_str())
                    .fetch_all(pool)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.3)
                    .collect()
            }
            AppDb::Pg(pool) => {
                let q = format!("EXPLAIN {sql}");
                sqlx::query_as::<_, (String,)>(sqlx::AssertSqlSafe(q))
                    .bind(param.as_str())
                    .fetch_all(pool)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.0)
                    .collect()
            }
        };
        let scans: Vec<&String> = plan
            .iter()
            .filter(|l| {
                ["ai_jobs", "scenes", "scene_versions"].iter().any(|t| {
                    l.contains(&format!("Seq Scan on {t}"))
                        || l.trim_start().starts_with(&format!("SCAN {t}"))
                })
            })
            .collect();
        assert!(
            scans.is_empty(),
            "{name} scans a table:\n{}",
            plan.join("\n")
        );
    }
}
