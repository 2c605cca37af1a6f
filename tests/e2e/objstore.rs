//! `media.store = "s3://…"`: clips in an S3-compatible object store (moto,
//! started by `clawcut_test_support::s3` on 127.0.0.1). The same guarantees
//! as the media directory: the right bytes and sha256 at the right keys,
//! nothing partial at a final key, no multipart upload left behind after a
//! SIGKILL, the size limit, replicas on PostgreSQL sharing one bucket, and
//! a store that goes away and comes back without failing a job.

use std::time::Duration;

use clawcut_test_support::db::AppDb;
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};
use clawcut_test_support::procfs::status_bytes;
use clawcut_test_support::s3::{self, S3Server};

use crate::support::*;

const PREFIX: &str = "lib";

/// `[media]` on the bucket (5 MiB parts, so a 12 MiB clip is 3 parts).
fn media_section(env_dir: &std::path::Path, s3: &S3Server, extra: &str) -> String {
    format!(
        "[media]\ndir = \"{}\"\nstore = \"{}\"\npart_size = \"5MiB\"\nstall_timeout = \"5s\"\nstall_min_bytes = \"1KiB\"\n{extra}\n",
        env_dir.join("media").display(),
        s3.store_url(PREFIX)
    )
}

fn env_on(
    backend: Backend,
    name: &str,
    fake: &FakeOpenAi,
    s3: &S3Server,
    extra: &str,
) -> Option<Env> {
    // The media section names the env's own dir: build the env first with
    // a placeholder, then write the real section.
    let env = env_for(backend, name, &fake.base_url(), "[media]\n#MEDIA\n")?;
    let section = media_section(env.dir.path(), s3, extra);
    env.edit_config("[media]\n#MEDIA\n", &section);
    Some(env)
}

fn start(env: &Env, s3: &S3Server, name: &str) -> Daemon {
    env.start_with(name, |c| {
        for (k, v) in s3.env() {
            c.env(k, v);
        }
    })
}

/// Wait for `done`, showing the daemon's log when it never comes.
async fn settle<F, Fut>(daemon: &Daemon, within: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + within;
    while !done().await {
        assert!(
            std::time::Instant::now() < until,
            "timed out; daemon log:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn key(sub: &str, scene: &str, version: &str, ext: &str) -> String {
    format!("{PREFIX}/{sub}/{scene}/{version}.{ext}")
}

/// No multipart upload in progress and no marker left: eventually (the
/// sweep takes a dead process's after `stall_timeout` + 10 s).
async fn nothing_left_behind(s3: &S3Server, within: Duration) {
    let until = std::time::Instant::now() + within;
    loop {
        let uploads = s3.multipart_uploads();
        let markers = s3.keys(&format!("{PREFIX}/.uploads/"));
        let prev = s3.keys(&format!("{PREFIX}/.prev/"));
        if uploads.is_empty() && markers.is_empty() && prev.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "left behind after {within:?}: uploads {uploads:?}, markers {markers:?}, kept aside {prev:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn completes_at_the_right_keys(backend: Backend) {
    let Some(s3) = s3::require() else { return };
    let fake = FakeOpenAi::start(KEY).await;
    // 12 MiB: three parts; and a small one: a single short part.
    fake.script(
        "video_big",
        Script::completes_after(0).with_video_bytes(12 * 1024 * 1024),
    );
    fake.script(
        "video_small",
        Script::completes_after(0).with_video_bytes(100 * 1024),
    );
    let Some(env) = env_on(backend, "objstore_keys", &fake, &s3, "") else {
        return;
    };
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    seed_job(&db, "job_big", "scene_b", "ver_b", "video_big", now_ms()).await;
    seed_job(
        &db,
        "job_small",
        "scene_s",
        "ver_s",
        "video_small",
        now_ms(),
    )
    .await;
    let ids = vec!["job_big".to_owned(), "job_small".to_owned()];
    let daemon = start(&env, &s3, "objstore");
    settle(&daemon, Duration::from_secs(60), || async {
        all_final(&db, &ids).await
    })
    .await;
    for (job, scene, version, video) in [
        ("job_big", "scene_b", "ver_b", "video_big"),
        ("job_small", "scene_s", "ver_s", "video_small"),
    ] {
        let j = db.job(job).await.unwrap().unwrap();
        assert_eq!(
            j.status,
            "completed",
            "{job}: {:?}\n{}",
            j.last_error,
            daemon.logs()
        );
        let want = fake.content(video);
        let k = key("videos", scene, version, "mp4");
        let got = s3.get(&k).unwrap_or_else(|| panic!("no object at {k}"));
        assert_eq!(
            sha256_hex(&got),
            sha256_hex(&want),
            "{k}: the provider's bytes"
        );
        assert_eq!(
            j.video_path.as_deref(),
            Some(format!("s3://{}/{k}", s3::BUCKET).as_str())
        );
        assert_eq!(j.video_sha256.as_deref(), Some(sha256_hex(&want).as_str()));
        let v = db.version(version).await.unwrap().unwrap();
        assert_eq!(v.status, "ready");
        assert_eq!(v.video_bytes, Some(want.len() as i64));
        let thumb = key("thumbnails", scene, version, "webp");
        assert_eq!(
            s3.get(&thumb).map(|b| sha256_hex(&b)),
            Some(sha256_hex(&fake.thumbnail(video))),
            "{thumb}"
        );
        assert_eq!(
            j.thumbnail_path.as_deref(),
            Some(format!("s3://{}/{thumb}", s3::BUCKET).as_str())
        );
        let completions = db
            .events(job)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.to_status == "completed")
            .count();
        assert_eq!(completions, 1, "{job}: one completion event");
    }
    nothing_left_behind(&s3, Duration::from_secs(10)).await;
    assert!(
        !files_under(&env.media())
            .iter()
            .any(|p| p.to_string_lossy().contains("videos")),
        "nothing written to the local media dir"
    );
}
on_both_backends!(completes_at_the_right_keys);

#[tokio::test(flavor = "multi_thread")]
async fn the_size_limit_holds_on_the_store() {
    let Some(s3) = s3::require() else { return };
    let fake = FakeOpenAi::start(KEY).await;
    // Announced too large (refused before any upload) and chunked without
    // a length (refused mid-stream, its upload aborted).
    fake.script(
        "video_announced",
        Script::completes_after(0).with_video_bytes(8 * 1024 * 1024),
    );
    let mut chunked = Script::completes_after(0).with_video_bytes(8 * 1024 * 1024);
    chunked.chunked = true;
    fake.script("video_chunked", chunked);
    let env = env_on(
        Backend::Sqlite,
        "objstore_limit",
        &fake,
        &s3,
        "max_bytes = \"6MiB\"",
    )
    .unwrap();
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    seed_job(
        &db,
        "job_a",
        "scene_a",
        "ver_a",
        "video_announced",
        now_ms(),
    )
    .await;
    seed_job(&db, "job_c", "scene_c", "ver_c", "video_chunked", now_ms()).await;
    let ids = vec!["job_a".to_owned(), "job_c".to_owned()];
    let daemon = start(&env, &s3, "limit");
    eventually(Duration::from_secs(60), "both jobs final", || async {
        all_final(&db, &ids).await.then_some(())
    })
    .await;
    for (job, scene, version) in [("job_a", "scene_a", "ver_a"), ("job_c", "scene_c", "ver_c")] {
        let j = db.job(job).await.unwrap().unwrap();
        assert_eq!(j.status, "failed", "{job}\n{}", daemon.logs());
        assert!(
            j.last_error
                .as_deref()
                .unwrap_or_default()
                .contains("limit"),
            "{job}: {:?}",
            j.last_error
        );
        assert_eq!(s3.get(&key("videos", scene, version, "mp4")), None);
    }
    nothing_left_behind(&s3, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_upload_then_restart_leaves_nothing_behind() {
    let Some(s3) = s3::require() else { return };
    let fake = FakeOpenAi::start(KEY).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        // 12 MiB at 64 KiB every 20 ms: ~4 s each, parts go up meanwhile.
        fake.script(
            &format!("video_{i}"),
            Script::completes_after(0)
                .with_video_bytes(12 * 1024 * 1024)
                .with_chunk_bytes(64 * 1024)
                .with_chunk_delay(Duration::from_millis(20)),
        );
        ids.push(format!("job_{i}"));
    }
    let env = env_on(Backend::Sqlite, "objstore_kill", &fake, &s3, "").unwrap();
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    seed_jobs(&db, 4).await;
    let first = start(&env, &s3, "first");
    eventually(Duration::from_secs(30), "uploads under way", || async {
        (!s3.multipart_uploads().is_empty() && fake.downloads("video_0", "video") > 0).then_some(())
    })
    .await;
    // A part or more uploaded by now for some of them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.kill9();
    let orphans = s3.multipart_uploads();
    assert!(!orphans.is_empty(), "the kill left uploads in progress");
    for i in 0..4 {
        let k = key("videos", &format!("scene_{i}"), &format!("ver_{i}"), "mp4");
        let j = db.job(&format!("job_{i}")).await.unwrap().unwrap();
        match s3.get(&k) {
            Some(bytes) => assert_eq!(
                sha256_hex(&bytes),
                sha256_hex(&fake.content(&format!("video_{i}"))),
                "partial object at {k}"
            ),
            None => assert_ne!(
                j.status, "completed",
                "job_{i} completed without its object"
            ),
        }
    }

    let second = start(&env, &s3, "second");
    eventually(
        Duration::from_secs(90),
        "every job final after restart",
        || async { all_final(&db, &ids).await.then_some(()) },
    )
    .await;
    for i in 0..4 {
        let job = format!("job_{i}");
        let j = db.job(&job).await.unwrap().unwrap();
        assert_eq!(
            j.status,
            "completed",
            "{job}: {:?}\n{}",
            j.last_error,
            second.logs()
        );
        let k = key("videos", &format!("scene_{i}"), &format!("ver_{i}"), "mp4");
        assert_eq!(
            s3.get(&k).map(|b| sha256_hex(&b)),
            Some(sha256_hex(&fake.content(&format!("video_{i}"))))
        );
        let completions = db
            .events(&job)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.to_status == "completed")
            .count();
        assert_eq!(completions, 1, "{job}: exactly one completion event");
    }
    // The killed run's uploads: aborted once their markers sat idle past
    // stall_timeout (5 s) + 10 s.
    nothing_left_behind(&s3, Duration::from_secs(60)).await;
    assert!(
        second
            .logs()
            .contains("aborted multipart uploads left by a dead process"),
        "{}",
        second.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_store_delays_jobs_and_fails_none() {
    let Some(s3) = s3::require() else { return };
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(Script::completes_after(0).with_video_bytes(256 * 1024));
    let env = env_on(Backend::Sqlite, "objstore_down", &fake, &s3, "").unwrap();
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let ids = seed_jobs(&db, 3).await;
    s3.set_reachable(false);
    let daemon = start(&env, &s3, "down");
    // Long enough for several tries each (backoff.max is 1 s here, and
    // max_attempts 5: a job spending attempts would have failed).
    eventually(
        Duration::from_secs(60),
        "the store's refusal seen",
        || async {
            let j = db.job("job_0").await.unwrap().unwrap();
            j.last_error
                .is_some_and(|e| e.contains("media"))
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    for id in &ids {
        let j = db.job(id).await.unwrap().unwrap();
        assert_ne!(j.status, "failed", "{id}: {:?}", j.last_error);
        assert_eq!(j.attempts, 0, "{id}: the store's fault spends no attempt");
    }
    s3.set_reachable(true);
    eventually(
        Duration::from_secs(90),
        "every job completed once the store is back",
        || async { all_final(&db, &ids).await.then_some(()) },
    )
    .await;
    for (i, id) in ids.iter().enumerate() {
        let j = db.job(id).await.unwrap().unwrap();
        assert_eq!(
            j.status,
            "completed",
            "{id}: {:?}\n{}",
            j.last_error,
            daemon.logs()
        );
        let k = key("videos", &format!("scene_{i}"), &format!("ver_{i}"), "mp4");
        assert_eq!(
            s3.get(&k).map(|b| sha256_hex(&b)),
            Some(sha256_hex(&fake.content(&format!("video_{i}"))))
        );
    }
    nothing_left_behind(&s3, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_postgres_replicas_share_one_bucket_under_sigkills() {
    let _turn = pg_turn().await;
    let Some(s3) = s3::require() else { return };
    let fake = FakeOpenAi::start(KEY).await;
    // 6 MiB at 64 KiB every 10 ms: ~1 s each, two parts.
    fake.set_default_script(
        Script::completes_after(0)
            .with_video_bytes(6 * 1024 * 1024)
            .with_chunk_bytes(64 * 1024)
            .with_chunk_delay(Duration::from_millis(10)),
    );
    let Some(env) = env_on(Backend::Postgres, "objstore_replicas", &fake, &s3, "") else {
        return;
    };
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let n = 24;
    let mut ids = Vec::new();
    for i in 0..n {
        seed_job(
            &db,
            &format!("job_{i:02}"),
            &format!("scene_{i:02}"),
            &format!("ver_{i:02}"),
            &format!("video_{i:02}"),
            now_ms(),
        )
        .await;
        ids.push(format!("job_{i:02}"));
    }
    let mut replicas: Vec<Daemon> = (0..3).map(|i| start(&env, &s3, &format!("r{i}"))).collect();
    // Two rounds of SIGKILL-and-restart of one replica while uploads run.
    for round in 0..2 {
        eventually(Duration::from_secs(60), "uploads under way", || async {
            (!s3.multipart_uploads().is_empty()).then_some(())
        })
        .await;
        let victim = replicas.remove(round % replicas.len());
        victim.kill9();
        replicas.push(start(&env, &s3, &format!("r{round}-again")));
    }
    eventually(Duration::from_secs(180), "every job final", || async {
        all_final(&db, &ids).await.then_some(())
    })
    .await;
    for (i, id) in ids.iter().enumerate() {
        let j = db.job(id).await.unwrap().unwrap();
        assert_eq!(j.status, "completed", "{id}: {:?}", j.last_error);
        let k = key(
            "videos",
            &format!("scene_{i:02}"),
            &format!("ver_{i:02}"),
            "mp4",
        );
        let want = sha256_hex(&fake.content(&format!("video_{i:02}")));
        assert_eq!(
            s3.get(&k).map(|b| sha256_hex(&b)),
            Some(want.clone()),
            "{k}"
        );
        assert_eq!(j.video_sha256.as_deref(), Some(want.as_str()));
        let completions = db
            .events(id)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.to_status == "completed")
            .count();
        assert_eq!(completions, 1, "{id}: exactly one completion event");
    }
    nothing_left_behind(&s3, Duration::from_secs(60)).await;
}

/// A local `media.dir` on PostgreSQL where another host's worker has been
/// at work: a warning at startup.
#[tokio::test(flavor = "multi_thread")]
async fn a_local_media_dir_shared_across_hosts_is_warned_about() {
    let _turn = pg_turn().await;
    let fake = FakeOpenAi::start(KEY).await;
    let Some(env) = env_for(Backend::Postgres, "objstore_warn", &fake.base_url(), "") else {
        return;
    };
    env.migrate();
    let pool = sqlx::PgPool::connect(&env.db_url).await.unwrap();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    seed_job(&db, "job_w", "scene_w", "ver_w", "video_w", now_ms()).await;
    sqlx::query(
        "INSERT INTO ai_job_events (ai_job_id, from_status, to_status, worker_id) VALUES ('job_w', 'processing', 'processing', 'some-other-host:42:abcdef')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let daemon = env.start("warn");
    daemon
        .wait_log("some-other-host", Duration::from_secs(30))
        .await;
    assert!(
        daemon.logs().contains("media.dir is a local directory"),
        "{}",
        daemon.logs()
    );
}

/// Streamed end to end: three 160 MiB clips at once (480 MiB) pass through
/// a daemon whose resident set grows, past its baseline, by no more than
/// `concurrency × (part_size + 2 MiB)` (21 MiB here), far below one clip
/// (held whole, three of them would add 480 MiB):
/// - each upload holds one part being filled or sent: `part_size` ×
///   `concurrency` (15 MiB);
/// - each transfer has two HTTP connections (provider, store), each with a
///   read and a write buffer of at most ~408 KiB (hyper's
///   `max_buf_size`): under 2 MiB per transfer (about 1 MiB measured).
///
/// The daemon runs with glibc's mmap threshold pinned
/// (`MALLOC_MMAP_THRESHOLD_`, at its default 128 KiB) so that this
/// measures what the daemon holds, not its allocator's mood: by default
/// glibc raises the threshold past hyper's read buffers, which then land
/// in per-thread arenas that keep freed parts resident by a varying
/// amount (growth 22–30 MiB measured here, against 18–19 MiB pinned;
/// deploy/README.md budgets for it).
///
/// The baseline is the daemon's own peak after a small clip (64 KiB, one
/// short part) went the same way: every code path, connection pool and
/// allocator arena touched once, nothing of a large clip (about 33 MiB).
#[tokio::test(flavor = "multi_thread")]
async fn clips_stream_through_bounded_memory() {
    const PART: u64 = 5 * 1024 * 1024;
    const CONCURRENCY: u64 = 3;
    const CLIP: usize = 160 * 1024 * 1024;
    let Some(s3) = s3::require() else { return };
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(
        Script::completes_after(0)
            .with_video_bytes(CLIP)
            .with_thumbnail_bytes(1024),
    );
    fake.script(
        "video_warm",
        Script::completes_after(0)
            .with_video_bytes(64 * 1024)
            .with_thumbnail_bytes(1024),
    );
    let Some(env) = env_on(Backend::Sqlite, "objstore_rss", &fake, &s3, "") else {
        return;
    };
    env.edit_config("concurrency = 4", &format!("concurrency = {CONCURRENCY}"));
    env.edit_config(
        "part_size = \"5MiB\"",
        &format!("part_size = \"{}MiB\"", PART >> 20),
    );
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    seed_job(&db, "job_warm", "scene_w", "ver_w", "video_warm", now_ms()).await;
    let daemon = env.start_with("rss", |c| {
        for (k, v) in s3.env() {
            c.env(k, v);
        }
        c.env("MALLOC_MMAP_THRESHOLD_", (128 * 1024).to_string());
    });
    let warm = vec!["job_warm".to_owned()];
    settle(&daemon, Duration::from_secs(60), || async {
        all_final(&db, &warm).await
    })
    .await;
    let baseline = status_bytes(daemon.pid() as u32, "VmHWM:");

    let ids = seed_jobs(&db, CONCURRENCY as usize).await;
    settle(&daemon, Duration::from_secs(180), || async {
        all_final(&db, &ids).await
    })
    .await;
    let peak = status_bytes(daemon.pid() as u32, "VmHWM:");
    for (i, id) in ids.iter().enumerate() {
        let j = db.job(id).await.unwrap().unwrap();
        assert_eq!(j.status, "completed", "{id}: {:?}", j.last_error);
        assert_eq!(j.video_bytes, Some(CLIP as i64), "{id}");
        let k = key("videos", &format!("scene_{i}"), &format!("ver_{i}"), "mp4");
        assert_eq!(
            s3.get(&k).map(|b| sha256_hex(&b)),
            Some(sha256_hex(&fake.content(&format!("video_{i}"))))
        );
    }
    let bound = CONCURRENCY * (PART + 2 * 1024 * 1024);
    eprintln!(
        "peak resident set: {} MiB (baseline {} MiB, grew {} MiB; bound {} MiB)",
        peak >> 20,
        baseline >> 20,
        peak.saturating_sub(baseline) >> 20,
        bound >> 20
    );
    assert!(baseline > 0, "VmHWM read");
    assert!(
        peak.saturating_sub(baseline) <= bound,
        "peak resident set {} MiB, {} MiB over the baseline {} MiB, past concurrency × (part_size + 2 MiB) = {} MiB: clips held in memory",
        peak >> 20,
        peak.saturating_sub(baseline) >> 20,
        baseline >> 20,
        bound >> 20
    );
}

/// `backup` reads the clips from the bucket (a missing one is named, exit
/// 65), `restore --verify` passes, and `restore` writes them into a local
/// media dir with the paths rewritten from `s3://` to it.
#[tokio::test(flavor = "multi_thread")]
async fn backup_reads_the_bucket_and_restore_writes_a_local_dir() {
    let Some(s3) = s3::require() else { return };
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(Script::completes_after(0).with_video_bytes(6 * 1024 * 1024));
    let env = env_on(Backend::Sqlite, "objstore_backup", &fake, &s3, "").unwrap();
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let ids = seed_jobs(&db, 3).await;
    let daemon = start(&env, &s3, "backup");
    settle(&daemon, Duration::from_secs(60), || async {
        all_final(&db, &ids).await
    })
    .await;
    drop(daemon);

    let with_s3 = |args: &[&str]| {
        let mut c = env.cmd(args);
        for (k, v) in s3.env() {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let shown = |o: &std::process::Output| {
        format!(
            "exit {:?}\n{}\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let bdir = env.dir.path().join("backups");
    let out = with_s3(&["backup", "--to", bdir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let out = with_s3(&["restore", "--from", bdir.to_str().unwrap(), "--verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));

    let restored_db = env.dir.path().join("restored.db");
    let restored_url = format!("sqlite://{}", restored_db.display());
    let media = env.dir.path().join("restored-media");
    let out = with_s3(&[
        "restore",
        "--from",
        bdir.to_str().unwrap(),
        "--database",
        &restored_url,
        "--media-dir",
        media.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let rdb = AppDb::connect(&restored_url).await.unwrap();
    let media = std::fs::canonicalize(&media).unwrap();
    for i in 0..3 {
        let j = rdb.job(&format!("job_{i}")).await.unwrap().unwrap();
        let path = media.join(format!("videos/scene_{i}/ver_{i}.mp4"));
        assert_eq!(
            j.video_path.as_deref(),
            Some(path.to_str().unwrap()),
            "job_{i}"
        );
        let v = rdb.version(&format!("ver_{i}")).await.unwrap().unwrap();
        assert_eq!(
            v.video_path.as_deref(),
            Some(path.to_str().unwrap()),
            "ver_{i}"
        );
        assert_eq!(
            sha256_hex(&std::fs::read(&path).unwrap()),
            sha256_hex(&fake.content(&format!("video_{i}")))
        );
    }

    // A clip gone from the bucket: named, and the backup fails (exit 65).
    let gone = key("videos", "scene_1", "ver_1", "mp4");
    s3.delete(&gone);
    let bdir2 = env.dir.path().join("backups2");
    let out = with_s3(&["backup", "--to", bdir2.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65), "{}", shown(&out));
    assert!(shown(&out).contains(&gone), "{}", shown(&out));
}

/// The operator panel's clip links on the bucket, read through the media
/// store: the clip by byte ranges (206 with `Content-Range`, one range
/// across a part boundary, a suffix; 416 past the end), whole, the
/// thumbnail, "verify" passing, then failing once the object is damaged
/// behind the daemon's back; a row pointing at a key the daemon does not
/// write clips at (another prefix, its `.uploads/`) is not served, and
/// neither is a clip gone from the bucket (404 both).
#[tokio::test(flavor = "multi_thread")]
async fn the_panel_serves_and_verifies_clips_from_the_bucket() {
    let Some(s3) = s3::require() else { return };
    let fake = FakeOpenAi::start(KEY).await;
    // Two 5 MiB parts and a short one.
    fake.set_default_script(
        Script::completes_after(0)
            .with_video_bytes(11 * 1024 * 1024)
            .with_thumbnail_bytes(2048),
    );
    let Some(env) = env_on(Backend::Sqlite, "objstore_panel", &fake, &s3, "") else {
        return;
    };
    let port = env.serve_admin_api();
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    seed_job(&db, "job_p", "scene_p", "ver_p", "video_p", now_ms()).await;
    seed_job(&db, "job_q", "scene_q", "ver_q", "video_q", now_ms()).await;
    let daemon = env.start_with("panel", |c| {
        for (k, v) in s3.env() {
            c.env(k, v);
        }
        c.env("E2E_ADMIN", ADMIN_TOKEN);
    });
    let ids = vec!["job_p".to_owned(), "job_q".to_owned()];
    settle(&daemon, Duration::from_secs(60), || async {
        all_final(&db, &ids).await
    })
    .await;
    let row = db.job("job_p").await.unwrap().unwrap();
    assert_eq!(row.status, "completed", "{:?}", row.last_error);
    let video = key("videos", "scene_p", "ver_p", "mp4");
    assert_eq!(
        row.video_path.as_deref(),
        Some(format!("s3://{}/{video}", s3::BUCKET).as_str())
    );
    let clip = s3.get(&video).unwrap();
    let len = clip.len();

    let mut admin = crate::ops::Browser::new(port);
    assert_eq!(admin.sign_in(ADMIN_TOKEN, "Ann").await.status, 303);
    let ranged = |range: String| {
        let admin = &admin;
        async move {
            admin
                .send(
                    admin
                        .client
                        .get(format!("{}/ops/jobs/job_p/video", admin.base))
                        .header("range", range),
                )
                .await
        }
    };
    let page = admin.get("/ops/jobs/job_p").await;
    assert!(page.body.contains("/ops/jobs/job_p/video"), "{}", page.body);

    let r = ranged("bytes=0-9".into()).await;
    assert_eq!(r.status, 206, "{}", r.body);
    assert_eq!(
        r.headers["content-range"],
        format!("bytes 0-9/{len}").as_str()
    );
    assert_eq!(r.headers["content-type"], "video/mp4");
    assert_eq!(r.headers["accept-ranges"], "bytes");
    assert_eq!(r.raw, &clip[..10]);
    // Across the first part boundary (5 MiB).
    let (a, b) = (5 * 1024 * 1024 - 1000, 5 * 1024 * 1024 + 999);
    let r = ranged(format!("bytes={a}-{b}")).await;
    assert_eq!(r.status, 206, "{}", r.body);
    assert_eq!(
        r.headers["content-range"],
        format!("bytes {a}-{b}/{len}").as_str()
    );
    assert_eq!(r.raw, &clip[a..=b]);
    let r = ranged("bytes=-100".into()).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.raw, &clip[len - 100..]);
    let r = ranged(format!("bytes={len}-")).await;
    assert_eq!(r.status, 416);
    assert_eq!(
        r.headers["content-range"],
        format!("bytes */{len}").as_str()
    );
    let r = admin.get("/ops/jobs/job_p/video").await;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.raw), sha256_hex(&clip));
    let r = admin.get("/ops/jobs/job_p/thumbnail").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.raw, fake.thumbnail("video_p"));

    let v = admin.get("/ops/jobs/job_p/verify").await;
    assert!(v.body.contains("data-ok=\"true\""), "{}", v.body);
    assert!(
        v.body.contains(&format!(
            "read {len} bytes from s3://{}/{video}",
            s3::BUCKET
        )),
        "{}",
        v.body
    );
    // Damaged behind the daemon's back (same size): verify says so.
    let mut bad = clip.clone();
    bad[len / 2] ^= 0xff;
    s3.put(&video, &bad);
    let v = admin.get("/ops/jobs/job_p/verify").await;
    assert!(v.body.contains("data-ok=\"false\""), "{}", v.body);

    // Gone from the bucket: 404, not an error page of the store.
    s3.delete(&key("videos", "scene_q", "ver_q", "mp4"));
    let r = admin.get("/ops/jobs/job_q/video").await;
    assert_eq!(r.status, 404, "{}", r.body);
    let v = admin.get("/ops/jobs/job_q/verify").await;
    assert_eq!(v.status, 404, "{}", v.body);

    // Only keys the daemon writes clips at: not another prefix (a real
    // object there), not its own `.uploads/`.
    s3.put("other/videos/x.mp4", b"not for the panel");
    for outside in [
        format!("s3://{}/other/videos/x.mp4", s3::BUCKET),
        format!("s3://{}/{PREFIX}/.uploads/x", s3::BUCKET),
        format!(
            "s3://{}/{PREFIX}/videos/../../other/videos/x.mp4",
            s3::BUCKET
        ),
        "/etc/passwd".to_owned(),
    ] {
        db.exec(&format!(
            "UPDATE ai_jobs SET video_path = '{outside}' WHERE id = 'job_q'"
        ))
        .await
        .unwrap();
        let r = admin.get("/ops/jobs/job_q/video").await;
        assert_eq!(r.status, 404, "{outside}: {}", r.body);
        assert!(r.body.contains("not served"), "{outside}: {}", r.body);
        let v = admin.get("/ops/jobs/job_q/verify").await;
        assert_eq!(v.status, 404, "{outside}: {}", v.body);
    }
}
