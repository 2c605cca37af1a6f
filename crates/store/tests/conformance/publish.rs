//! `complete` and its [`Publish`] step: files reach their final paths only
//! inside the fenced transaction, and completions of one scene version
//! never interleave.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use clawcut_core::JobStatus;
use clawcut_store::{Backend, StoreError};

use super::*;

/// Everything a completion may have changed, to compare before and after.
async fn snapshot(
    ctx: &Ctx,
    id: &str,
) -> (
    Option<clawcut_test_support::db::JobRow>,
    Option<clawcut_test_support::db::VersionRow>,
    Option<clawcut_test_support::db::SceneRow>,
    usize,
) {
    (
        ctx.db.job(id).await.unwrap(),
        ctx.db.version(&format!("v-{id}")).await.unwrap(),
        ctx.db.scene(&format!("s-{id}")).await.unwrap(),
        ctx.db.all_events().await.unwrap().len(),
    )
}

pub async fn complete_with_a_stale_lease_never_publishes(url: &str) {
    let ctx = setup(url).await;
    seed(&ctx, "j", "processing", Some("p")).await;
    let (_, lease_a) = lease_of(&ctx, "j", "A", NOW).await;
    // A stalls past its lease; B takes over.
    let (_, lease_b) = lease_of(&ctx, "j", "B", NOW + 2 * MIN).await;
    let before = snapshot(&ctx, "j").await;
    let now = NOW + 3 * MIN;
    let c = completion(JobStatus::Processing, now, "j");
    let mut files = Files::new();
    assert_lease_lost(
        ctx.store.complete(&lease_a, &c, &mut files).await,
        "stale token",
    );
    assert_eq!(files.calls, [], "stale token");
    // The holder with the wrong `from` is refused the same way.
    let wrong_from = completion(JobStatus::Pending, now, "j");
    assert_lease_lost(
        ctx.store.complete(&lease_b, &wrong_from, &mut files).await,
        "wrong from",
    );
    assert_eq!(files.calls, [], "wrong from");
    assert_eq!(snapshot(&ctx, "j").await, before);
    // Released: no longer anyone's to complete.
    ctx.store.release(&lease_b).await.unwrap();
    assert_lease_lost(
        ctx.store.complete(&lease_b, &c, &mut files).await,
        "released",
    );
    assert_eq!(files.calls, [], "released");
    assert_eq!(ctx.db.events("j").await.unwrap(), []);
}

pub async fn complete_publish_error_rolls_back(url: &str) {
    let ctx = setup(url).await;
    seed(&ctx, "j", "processing", Some("p")).await;
    let (_, lease) = lease_of(&ctx, "j", "w", NOW).await;
    let before = snapshot(&ctx, "j").await;
    let c = completion(JobStatus::Processing, NOW + 5, "j");
    let mut files = Files::failing();
    match ctx.store.complete(&lease, &c, &mut files).await {
        Err(StoreError::PublishOutputs(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
        }
        other => panic!("expected PublishOutputs, got {other:?}"),
    }
    assert_eq!(
        files.calls,
        [Call::Publish],
        "no revert of a failed publish"
    );
    // Still leased to w, still processing; no version, scene or event.
    let after = snapshot(&ctx, "j").await;
    assert_eq!(after, before);
    let row = after.0.unwrap();
    assert_eq!(
        (row.status.as_str(), row.lease_owner.as_deref()),
        ("processing", Some("w"))
    );
    assert_eq!(after.3, 0);
    // The lease still holds: the next try completes (and the lock of the
    // failed one is gone).
    let mut files = Files::new();
    ctx.store.complete(&lease, &c, &mut files).await.unwrap();
    assert_eq!(files.calls, [Call::Publish, Call::Committed]);
    assert_eq!(ctx.db.job("j").await.unwrap().unwrap().status, "completed");
    assert_eq!(
        ctx.db.version("v-j").await.unwrap().unwrap().status,
        "ready"
    );
    assert_eq!(ctx.db.events("j").await.unwrap().len(), 1);
}

/// Statements that refuse every new audit event: at once, or (PostgreSQL)
/// only at COMMIT.
pub fn refuse_events(b: Backend, at_commit: bool) -> &'static str {
    match (b, at_commit) {
        (Backend::Sqlite, false) => {
            "CREATE TRIGGER refuse_events BEFORE INSERT ON ai_job_events
             BEGIN SELECT RAISE(ABORT, 'events refused'); END;"
        }
        (Backend::Sqlite, true) => unreachable!("SQLite has no deferred triggers"),
        (Backend::Postgres, false) => {
            "CREATE FUNCTION refuse_events() RETURNS trigger LANGUAGE plpgsql
                 AS $$ BEGIN RAISE EXCEPTION 'events refused'; END $$;
             CREATE TRIGGER refuse_events BEFORE INSERT ON ai_job_events
                 FOR EACH ROW EXECUTE FUNCTION refuse_events();"
        }
        (Backend::Postgres, true) => {
            "CREATE CONSTRAINT TRIGGER refuse_events AFTER INSERT ON ai_job_events
                 DEFERRABLE INITIALLY DEFERRED
                 FOR EACH ROW EXECUTE FUNCTION refuse_events();"
        }
    }
}

pub fn accept_events(b: Backend) -> &'static str {
    match b {
        Backend::Sqlite => "DROP TRIGGER refuse_events",
        Backend::Postgres => "DROP TRIGGER refuse_events ON ai_job_events",
    }
}

/// A failure after `publish` (a statement, or on PostgreSQL the COMMIT
/// itself) rolls back and calls `revert`.
pub async fn complete_failure_after_publish_reverts(url: &str) {
    let ctx = setup(url).await;
    let b = ctx.backend();
    seed(&ctx, "j", "processing", Some("p")).await;
    let (_, lease) = lease_of(&ctx, "j", "w", NOW).await;
    let before = snapshot(&ctx, "j").await;
    let c = completion(JobStatus::Processing, NOW + 5, "j");

    ctx.db.exec(refuse_events(b, false)).await.unwrap();
    let mut files = Files::new();
    match ctx.store.complete(&lease, &c, &mut files).await {
        Err(StoreError::Complete(_)) => {}
        other => panic!("expected Complete, got {other:?}"),
    }
    assert_eq!(files.calls, [Call::Publish, Call::Revert]);
    assert_eq!(snapshot(&ctx, "j").await, before);
    ctx.db.exec(accept_events(b)).await.unwrap();

    if b == Backend::Postgres {
        ctx.db.exec(refuse_events(b, true)).await.unwrap();
        let mut files = Files::new();
        match ctx.store.complete(&lease, &c, &mut files).await {
            Err(StoreError::Complete(_)) => {}
            other => panic!("expected Complete (at commit), got {other:?}"),
        }
        assert_eq!(files.calls, [Call::Publish, Call::Revert], "commit failed");
        assert_eq!(snapshot(&ctx, "j").await, before);
        ctx.db.exec(accept_events(b)).await.unwrap();
    }

    let mut files = Files::new();
    ctx.store.complete(&lease, &c, &mut files).await.unwrap();
    assert_eq!(files.calls, [Call::Publish, Call::Committed]);
    assert_eq!(ctx.db.events("j").await.unwrap().len(), 1);
}

/// What the concurrent publishers share: the content of the version's one
/// final path, whether someone is inside `publish`, and a log.
#[derive(Clone, Default)]
struct Disk {
    file: Arc<Mutex<Option<String>>>,
    inside: Arc<AtomicBool>,
    overlaps: Arc<AtomicUsize>,
    log: Log<(usize, Call)>,
}

/// Renames "its" file (the sha256) over the version's path, slowly.
struct SlowFiles {
    me: usize,
    sha: String,
    disk: Disk,
    replaced: Option<String>,
}

impl Publish for SlowFiles {
    fn publish(&mut self) -> std::io::Result<()> {
        if self.disk.inside.swap(true, Ordering::SeqCst) {
            self.disk.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        self.disk.log.lock().unwrap().push((self.me, Call::Publish));
        self.replaced = self.disk.file.lock().unwrap().replace(self.sha.clone());
        // Long enough that unserialized completions would overlap here.
        std::thread::sleep(Duration::from_millis(150));
        self.disk.inside.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn revert(&mut self) {
        self.disk.log.lock().unwrap().push((self.me, Call::Revert));
        *self.disk.file.lock().unwrap() = self.replaced.take();
    }

    fn committed(&mut self) {
        self.disk
            .log
            .lock()
            .unwrap()
            .push((self.me, Call::Committed));
    }
}

/// Several jobs for one scene version complete at once, each from its own
/// store (its own connections, as replicas would): their `publish` calls
/// never overlap, and the version records the sha256 of the file left at
/// its path, the last committer's.
pub async fn complete_serializes_publishing_per_scene_version(url: &str) {
    const JOBS: usize = 3;
    let ctx = setup(url).await;
    ctx.db.insert_scene("s", "scene").await.unwrap();
    ctx.db
        .insert_version("v", "s", NOW - 20 * MIN)
        .await
        .unwrap();
    let mut leases = Vec::new();
    for i in 0..JOBS {
        let id = format!("k{i}");
        let mut j = NewJob::video(&id, "processing", Some("p"), NOW - 30 * MIN);
        j.scene_id = Some("s".into());
        j.scene_version_id = Some("v".into());
        ctx.db.insert_job(&j).await.unwrap();
        leases.push(lease_of(&ctx, &id, &format!("w{i}"), NOW).await.1);
    }
    // Each completion on its own thread and runtime, with its own store
    // (its own connections, as a replica would have): `publish` blocks, and
    // nothing but the store may keep them from running at the same time.
    let disk = Disk::default();
    let barrier = Arc::new(std::sync::Barrier::new(JOBS));
    let mut threads = Vec::new();
    for (i, lease) in leases.into_iter().enumerate() {
        let (url, barrier, disk) = (url.to_owned(), barrier.clone(), disk.clone());
        threads.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let store = clawcut_store::connect(&url).await.unwrap();
                let mut c = completion(JobStatus::Processing, NOW + 1 + i as i64, &format!("k{i}"));
                c.video.sha256 = format!("{i:064x}");
                let mut files = SlowFiles {
                    me: i,
                    sha: c.video.sha256.clone(),
                    disk,
                    replaced: None,
                };
                barrier.wait();
                let res = store.complete(&lease, &c, &mut files).await;
                drop(store);
                res
            })
        }));
    }
    tokio::task::block_in_place(|| {
        for t in threads {
            t.join().unwrap().unwrap();
        }
    });
    assert_eq!(
        disk.overlaps.load(Ordering::SeqCst),
        0,
        "publish calls overlapped"
    );
    let log = disk.log.lock().unwrap().clone();
    for i in 0..JOBS {
        let mine: Vec<Call> = log
            .iter()
            .filter(|(me, _)| *me == i)
            .map(|(_, c)| *c)
            .collect();
        assert_eq!(mine, [Call::Publish, Call::Committed], "job {i}: {log:?}");
    }
    let last_published = log
        .iter()
        .rev()
        .find(|(_, c)| *c == Call::Publish)
        .unwrap()
        .0;
    let last_committed = log
        .iter()
        .rev()
        .find(|(_, c)| *c == Call::Committed)
        .unwrap()
        .0;
    assert_eq!(last_published, last_committed, "{log:?}");
    let want = format!("{last_committed:064x}");
    let v = ctx.db.version("v").await.unwrap().unwrap();
    assert_eq!(v.status, "ready");
    assert_eq!(v.video_sha256.as_deref(), Some(want.as_str()));
    assert_eq!(
        disk.file.lock().unwrap().as_deref(),
        Some(want.as_str()),
        "the file matches"
    );
    let s = ctx.db.scene("s").await.unwrap().unwrap();
    assert_eq!(s.current_version_id.as_deref(), Some("v"));
    for i in 0..JOBS {
        let ev = ctx.db.events(&format!("k{i}")).await.unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].to_status, "completed");
    }
}

/// Runs `sql` on a connection of its own that never waits for a lock, on
/// a thread of its own (`publish` is synchronous): whether it went through.
fn write_now(url: &str, sql: &'static str) -> bool {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use sqlx::ConnectOptions;
            use std::str::FromStr;
            let mut conn = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
                .unwrap()
                .busy_timeout(Duration::ZERO)
                .connect()
                .await
                .unwrap();
            sqlx::raw_sql(sql).execute(&mut conn).await.is_ok()
        })
    })
    .join()
    .unwrap()
}

/// Publishes while checking what another writer of the file can do.
struct Probe {
    url: String,
    sql: &'static str,
    went_through: Option<bool>,
    calls: Vec<Call>,
}

impl Publish for Probe {
    fn publish(&mut self) -> std::io::Result<()> {
        self.calls.push(Call::Publish);
        self.went_through = Some(write_now(&self.url, self.sql));
        Ok(())
    }

    fn revert(&mut self) {
        self.calls.push(Call::Revert);
    }

    fn committed(&mut self) {
        self.calls.push(Call::Committed);
    }
}

/// SQLite: renames and directory fsyncs happen before the database-wide
/// write lock is taken, so another writer (a claim, another completion) is
/// never held up behind the filesystem. The lease was checked first.
pub async fn complete_publishes_before_taking_the_write_lock(url: &str) {
    let ctx = setup(url).await;
    seed(&ctx, "j", "processing", Some("p")).await;
    let (_, lease) = lease_of(&ctx, "j", "w", NOW).await;
    let c = completion(JobStatus::Processing, NOW + 5, "j");
    let mut probe = Probe {
        url: url.to_owned(),
        sql: "BEGIN IMMEDIATE; UPDATE scenes SET title = title; COMMIT;",
        went_through: None,
        calls: Vec::new(),
    };
    ctx.store.complete(&lease, &c, &mut probe).await.unwrap();
    assert_eq!(probe.calls, [Call::Publish, Call::Committed]);
    assert_eq!(
        probe.went_through,
        Some(true),
        "another writer got the write lock while the files were published"
    );
}

/// SQLite: when the row changes under the lease between the check and the
/// fenced update (the app or an operator wrote it), the early publish is
/// reverted and nothing is written.
pub async fn complete_reverts_an_early_publish_when_the_fence_no_longer_matches(url: &str) {
    let ctx = setup(url).await;
    seed(&ctx, "j", "processing", Some("p")).await;
    let (_, lease) = lease_of(&ctx, "j", "w", NOW).await;
    let c = completion(JobStatus::Processing, NOW + 5, "j");
    let mut probe = Probe {
        url: url.to_owned(),
        sql: "UPDATE ai_jobs SET fencing_token = fencing_token + 1, lease_owner = 'other' WHERE id = 'j'",
        went_through: None,
        calls: Vec::new(),
    };
    match ctx.store.complete(&lease, &c, &mut probe).await {
        Err(StoreError::LeaseLost { .. }) => {}
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    assert_eq!(probe.went_through, Some(true));
    assert_eq!(probe.calls, [Call::Publish, Call::Revert]);
    assert!(ctx.db.events("j").await.unwrap().is_empty(), "no event");
    assert_eq!(ctx.db.job("j").await.unwrap().unwrap().status, "processing");
}
