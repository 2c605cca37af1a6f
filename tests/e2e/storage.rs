//! Storage faults: the machine's, never the job's. The media directory's
//! disk full (a 1 MiB tmpfs mounted by the test), SQLite locked by another
//! writer past the busy timeout, PostgreSQL stopped and restarted under
//! load. In each case the daemon reports the fault, keeps its loop, spends
//! no job's attempts on it, leaves nothing partial at a final path, and
//! finishes every job by itself once the fault clears.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clawcut_test_support::db::AppDb;
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};

use crate::support::*;

/// A tmpfs mounted over a directory, unmounted (lazily, so open files do
/// not keep it) when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Mount a `size` tmpfs at `dir`. Refused (not root, no mount namespace):
/// a failure under `CI=true`, a loud skip elsewhere.
fn mount_tmpfs(dir: &Path, size: &str) -> Option<Tmpfs> {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output();
    let why = match out {
        Ok(o) if o.status.success() => {
            return Some(Tmpfs {
                dir: dir.to_owned(),
            });
        }
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        Err(e) => format!("run mount: {e}"),
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the disk-full test needs to mount a tmpfs (run as root): {why}");
    }
    eprintln!(
        "\n\
         ************************************************************\n\
         *** DISK-FULL TEST SKIPPED: cannot mount a tmpfs: {why}\n\
         *** (run as root; with CI=true this is a failure)\n\
         ************************************************************\n"
    );
    None
}

/// Fill the filesystem of `dir` up to `leave` free bytes (at most) with a
/// ballast file; its path.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join("ballast");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    drop(f);
    // Full to the last page; give `leave` back.
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len.saturating_sub(leave))
        .unwrap();
    path
}

/// `[http]` on a free loopback port; the port.
fn listen(env: &Env) -> u16 {
    let port = free_port();
    env.edit_config(
        "[http]\nlisten = \"\"",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\""),
    );
    port
}

/// Status and body of `GET path` (0 when nothing answers).
async fn get(port: u16, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    match client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
    {
        Ok(r) => {
            let code = r.status().as_u16();
            (code, r.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// The value of one series in the Prometheus text, if exported.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

async fn seed(db: &AppDb, n: usize) -> Vec<String> {
    let t = now_ms() - 600_000;
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("job_{i:02}");
        seed_job(
            db,
            &id,
            &format!("scene_{i:02}"),
            &format!("ver_{i:02}"),
            &format!("video_{i:02}"),
            t,
        )
        .await;
        ids.push(id);
    }
    ids
}

/// How many of `ids` are in `status`.
async fn count(db: &AppDb, ids: &[String], status: &str) -> usize {
    let mut n = 0;
    for id in ids {
        // A database that is down for the daemon is down for us too.
        if let Ok(Some(j)) = db.job(id).await
            && j.status == status
        {
            n += 1;
        }
    }
    n
}

/// Every job (`job_X`, provider id `video_X`) completed once, spending no
/// attempt, with its video and its thumbnail at their final paths carrying
/// the provider's bytes; nothing else under the media dir's `videos/` and
/// `thumbnails/`, and no temp file left.
async fn assert_all_stored(env: &Env, db: &AppDb, fake: &FakeOpenAi, ids: &[String]) {
    let mut paths = Vec::new();
    let mut thumbs = Vec::new();
    for id in ids {
        let video = id.replacen("job_", "video_", 1);
        let j = db.job(id).await.unwrap().unwrap();
        assert_eq!(j.status, "completed", "{id}: {j:?}");
        assert_eq!(j.attempts, 0, "the fault spent no attempt of {id}: {j:?}");
        let path = PathBuf::from(j.video_path.clone().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        let truth = fake.content(&video);
        assert_eq!(sha256_hex(&bytes), sha256_hex(&truth), "{id}: file bytes");
        assert_eq!(j.video_sha256.as_deref(), Some(sha256_hex(&truth).as_str()));
        let thumb = PathBuf::from(
            j.thumbnail_path
                .clone()
                .unwrap_or_else(|| panic!("{id} lost its thumbnail: {j:?}")),
        );
        assert_eq!(
            std::fs::read(&thumb).unwrap(),
            fake.thumbnail(&video),
            "{id}: thumbnail bytes"
        );
        thumbs.push(thumb);
        let finals = db
            .events(id)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.to_status == "completed" || e.to_status == "failed")
            .count();
        assert_eq!(finals, 1, "{id}: one final event");
        paths.push(path);
    }
    let mut on_disk = files_under(&env.media().join("videos"));
    on_disk.sort();
    paths.sort();
    assert_eq!(
        on_disk, paths,
        "exactly the committed videos at final paths"
    );
    let mut on_disk = files_under(&env.media().join("thumbnails"));
    on_disk.sort();
    thumbs.sort();
    assert_eq!(on_disk, thumbs, "exactly the committed thumbnails");
    let temp = files_under(&env.media().join(".tmp"));
    assert!(temp.is_empty(), "temp files left: {temp:?}");
}

// ---------------------------------------------------------------------------
// The media directory's disk full.

async fn a_full_media_disk_spends_no_attempt(backend: Backend) {
    let fake = FakeOpenAi::start(KEY).await;
    // 64 KiB videos on a disk with 40 KiB left: some writes fail at the
    // first chunk, some halfway through a file.
    fake.set_default_script(Script::completes_after(0).with_video_bytes(64 * 1024));
    // A video that fits, with a thumbnail that does not: the job must
    // neither fail nor complete without its thumbnail.
    fake.script(
        "video_thumb",
        Script::completes_after(0)
            .with_video_bytes(4 * 1024)
            .with_thumbnail_bytes(96 * 1024),
    );
    let Some(env) = env_for(backend, "diskfull", &fake.base_url(), "") else {
        return;
    };
    let port = listen(&env);
    env.migrate();
    let Some(_tmpfs) = mount_tmpfs(&env.media(), "1m") else {
        return;
    };
    let ballast = fill(&env.media(), 40 * 1024);
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let mut ids = seed(&db, 6).await;
    seed_job(
        &db,
        "job_thumb",
        "scene_thumb",
        "ver_thumb",
        "video_thumb",
        now_ms() - 600_000,
    )
    .await;
    ids.push("job_thumb".into());
    let mut daemon = env.start("diskfull");

    // Every job hits the full disk more often than `max_attempts` (5)
    // would allow if the disk's fault were the job's.
    eventually(
        Duration::from_secs(60),
        "every job met the full disk more than max_attempts times",
        || async {
            let met = ids
                .iter()
                .all(|id| fake.downloads(&id.replacen("job_", "video_", 1), "video") > 6)
                // ... and the thumbnail that does not fit was fetched, so
                // its video had been written.
                && fake.downloads("video_thumb", "thumbnail") > 2;
            // A job that ended is a failure of this test: say which.
            (met || count(&db, &ids, "processing").await < ids.len()).then_some(())
        },
    )
    .await;
    for id in &ids {
        let j = db.job(id).await.unwrap().unwrap();
        assert_eq!(j.status, "processing", "{id}: {j:?}");
        assert_eq!(j.attempts, 0, "a full disk spends no attempt: {j:?}");
    }
    assert!(
        files_under(&env.media().join("videos")).is_empty(),
        "nothing reached a final path"
    );
    let (code, body) = get(port, "/readyz").await;
    assert_eq!(code, 200, "the daemon itself is fine: {body}");
    assert!(
        body.contains("media") && body.contains("No space left on device"),
        "/readyz names the fault: {body}"
    );
    let (_, metrics) = get(port, "/metrics").await;
    let faults = metric(
        &metrics,
        "clawcut_worker_storage_faults_total{store=\"media\",kind=\"disk_full\"}",
    )
    .unwrap_or(0.0);
    assert!(faults >= 6.0, "faults counted: {metrics}");
    assert_eq!(
        metric(&metrics, "clawcut_worker_media_writable"),
        Some(0.0),
        "{metrics}"
    );
    let logs = daemon.logs();
    assert!(
        logs.contains("media directory") && logs.contains("No space left on device"),
        "the log names the fault"
    );

    // The operator frees space: every job completes on its own.
    std::fs::remove_file(&ballast).unwrap();
    let freed = Instant::now();
    eventually(
        Duration::from_secs(60),
        "every job completed after space was freed",
        || async { all_final(&db, &ids).await.then_some(()) },
    )
    .await;
    eprintln!(
        "disk full ({backend:?}): all {} jobs completed {:?} after space was freed",
        ids.len(),
        freed.elapsed()
    );
    assert_all_stored(&env, &db, &fake, &ids).await;
    eventually(Duration::from_secs(10), "/readyz clear again", || async {
        let (code, body) = get(port, "/readyz").await;
        (code == 200 && !body.contains("media")).then_some(())
    })
    .await;
    let (_, metrics) = get(port, "/metrics").await;
    assert_eq!(
        metric(&metrics, "clawcut_worker_media_writable"),
        Some(1.0),
        "{metrics}"
    );
    assert!(daemon.child.try_wait().unwrap().is_none(), "still running");
}
on_both_backends!(a_full_media_disk_spends_no_attempt);

// ---------------------------------------------------------------------------
// SQLite locked by another writer for longer than the busy timeout (10 s).

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_locked_past_the_busy_timeout() {
    use sqlx::Connection;
    let fake = FakeOpenAi::start(KEY).await;
    // Two polls, then slow-ish downloads: the lock finds jobs between
    // polls, mid-download and about to complete.
    fake.set_default_script(
        Script::completes_after(2)
            .with_video_bytes(64 * 1024)
            .with_chunk_bytes(8 * 1024)
            .with_chunk_delay(Duration::from_millis(100)),
    );
    let env = Env::sqlite(&fake.base_url(), "");
    let port = listen(&env);
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let ids = seed(&db, 16).await;
    let mut daemon = env.start("locked");
    eventually(Duration::from_secs(30), "work under way", || async {
        (count(&db, &ids, "completed").await >= 2).then_some(())
    })
    .await;

    // Another writer takes the write lock and keeps it.
    let mut writer = sqlx::SqliteConnection::connect(&env.db_url).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut writer)
        .await
        .unwrap();
    let locked = Instant::now();
    // Not ready within a few intervals: the loop waits in its claim.
    let first = eventually(Duration::from_secs(30), "/readyz 503", || async {
        let (code, body) = get(port, "/readyz").await;
        (code == 503).then_some(body)
    })
    .await;
    eprintln!(
        "sqlite locked: unready after {:?}: {first}",
        locked.elapsed()
    );
    // The daemon's own busy timeout runs out, and it says so.
    daemon
        .wait_log("database is locked", Duration::from_secs(40))
        .await;
    let reason = eventually(
        Duration::from_secs(30),
        "/readyz reports the lock",
        || async {
            let (code, body) = get(port, "/readyz").await;
            (code == 503 && body.contains("database is locked")).then_some(body)
        },
    )
    .await;
    eprintln!(
        "sqlite locked: reported after {:?}: {reason}",
        locked.elapsed()
    );
    // Held through a second busy timeout: leases (5 s) run out and
    // heartbeats fail while the database cannot be written.
    eventually(Duration::from_secs(60), "a second claim fails", || async {
        (daemon.logs().matches("claim failed").count() >= 2).then_some(())
    })
    .await;
    let mid = count(&db, &ids, "completed").await;
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut writer)
        .await
        .unwrap();
    drop(writer);
    let released = Instant::now();
    eprintln!(
        "sqlite locked: held {:?}; {mid} jobs completed before release",
        locked.elapsed()
    );

    eventually(
        Duration::from_secs(90),
        "every job completed after the lock was released",
        || async { all_final(&db, &ids).await.then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(20), "/readyz ready again", || async {
        (get(port, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    eprintln!(
        "sqlite locked: all jobs completed and ready {:?} after release",
        released.elapsed()
    );
    assert_all_stored(&env, &db, &fake, &ids).await;
    assert!(daemon.child.try_wait().unwrap().is_none(), "still running");
    print_fault_lines("sqlite locked", &daemon.logs());
}

/// What the daemon logged about the fault, for the figures in README.
fn print_fault_lines(what: &str, logs: &str) {
    for needle in [
        "claim failed",
        "could not record the job's outcome",
        "heartbeat failed",
        "took over a job whose lease expired",
        "lease lost",
    ] {
        eprintln!(
            "{what}: {:>4} log lines with {needle:?}",
            logs.matches(needle).count()
        );
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL stopped, started, and restarted under load.

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_and_restarted_under_load() {
    let _turn = pg_turn().await;
    let Some(pg) = clawcut_test_support::pg::require() else {
        return;
    };
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(
        Script::completes_after(1)
            .with_video_bytes(64 * 1024)
            .with_chunk_bytes(8 * 1024)
            .with_chunk_delay(Duration::from_millis(100)),
    );
    let Some(env) = env_for(Backend::Postgres, "pgstop", &fake.base_url(), "") else {
        return;
    };
    let port = listen(&env);
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let ids = seed(&db, 40).await;
    let mut daemon = env.start("pgstop");
    eventually(Duration::from_secs(30), "work under way", || async {
        (count(&db, &ids, "completed").await >= 4).then_some(())
    })
    .await;

    tokio::task::block_in_place(|| pg.stop());
    let stopped = Instant::now();
    let reason = eventually(
        Duration::from_secs(30),
        "/readyz reports the outage",
        || async {
            let (code, body) = get(port, "/readyz").await;
            (code == 503 && body.contains("database")).then_some(body)
        },
    )
    .await;
    eprintln!(
        "postgres stopped: reported after {:?}: {reason}",
        stopped.elapsed()
    );
    // Down for longer than a lease (5 s): leases run out while the
    // database cannot be written.
    daemon
        .wait_log("claim failed", Duration::from_secs(30))
        .await;
    eventually(Duration::from_secs(30), "down past a lease", || async {
        (stopped.elapsed() > Duration::from_secs(7)).then_some(())
    })
    .await;
    tokio::task::block_in_place(|| pg.start());
    let started = Instant::now();
    eventually(Duration::from_secs(60), "/readyz ready again", || async {
        (get(port, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    eprintln!(
        "postgres started: ready {:?} after start",
        started.elapsed()
    );

    // A quick restart in the middle of the rest.
    let before = count(&db, &ids, "completed").await;
    eventually(Duration::from_secs(60), "more work done", || async {
        (count(&db, &ids, "completed").await > before).then_some(())
    })
    .await;
    tokio::task::block_in_place(|| pg.restart());
    let restarted = Instant::now();
    eventually(
        Duration::from_secs(120),
        "every job completed after the restart",
        || async { all_final(&db, &ids).await.then_some(()) },
    )
    .await;
    eprintln!(
        "postgres restarted: all jobs completed {:?} after the restart",
        restarted.elapsed()
    );
    assert_all_stored(&env, &db, &fake, &ids).await;
    assert!(daemon.child.try_wait().unwrap().is_none(), "still running");
    print_fault_lines("postgres", &daemon.logs());
}
