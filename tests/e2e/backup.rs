//! `backup` and `restore`, end to end on both backends: a backup taken
//! while the daemon completes jobs, then restored; damage in a backup found
//! by `--verify`; incremental copies and pruning; restores aimed at live
//! data refused. And the systemd units of the nightly backup.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use clawcut_test_support::db::AppDb;
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};
use serde_json::Value;

use crate::support::*;

/// The URL of a database that does not exist yet, on the same backend.
fn new_db_url(backend: Backend, dir: &Path, name: &str) -> String {
    match backend {
        Backend::Sqlite => format!(
            "sqlite://{}",
            dir.join(format!("{name}-{:08x}.db", rand::random::<u32>()))
                .display()
        ),
        Backend::Postgres => {
            let pg = clawcut_test_support::pg::require().expect("PostgreSQL");
            pg.url(&format!(
                "{name}_{}_{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ))
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Run `backup --to dir` (plus `extra`); its backup id.
fn backup(env: &Env, dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["backup", "--to", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = env.output(&args);
    assert_eq!(out.status.code(), Some(0), "backup: {}", show(&out));
    let stdout = text(&out.stdout);
    stdout
        .strip_prefix("backup ")
        .and_then(|s| s.split(':').next())
        .unwrap_or_else(|| panic!("no backup id in {stdout}"))
        .to_owned()
}

fn verify(env: &Env, dir: &Path, id: &str) -> Output {
    env.output(&[
        "restore",
        "--from",
        dir.to_str().unwrap(),
        "--backup",
        id,
        "--verify",
    ])
}

fn manifest(dir: &Path, id: &str) -> Value {
    let text = std::fs::read(dir.join("backups").join(id).join("manifest.json")).unwrap();
    serde_json::from_slice(&text).unwrap()
}

/// (path, kind, sha256) of every file a manifest lists.
fn manifest_files(m: &Value) -> Vec<(String, String, String)> {
    m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["kind"].as_str().unwrap().to_owned(),
                f["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Ready versions: id → (video_path, thumbnail_path, video_sha256).
async fn ready_versions(
    db: &AppDb,
) -> BTreeMap<String, (Option<String>, Option<String>, Option<String>)> {
    const SQL: &str = "SELECT id, video_path, thumbnail_path, video_sha256
                       FROM scene_versions WHERE status = 'ready'";
    type Row = (String, Option<String>, Option<String>, Option<String>);
    let rows: Vec<Row> = match db {
        AppDb::Sqlite(p) => sqlx::query_as(SQL).fetch_all(p).await.unwrap(),
        AppDb::Pg(p) => sqlx::query_as(SQL).fetch_all(p).await.unwrap(),
    };
    rows.into_iter()
        .map(|(id, v, t, s)| (id, (v, t, s)))
        .collect()
}

/// Seed `n` stranded jobs `job_<tag>_<i>`; the i-th finishes after
/// `polls(i)` more polls.
async fn seed(
    fake: &FakeOpenAi,
    db: &AppDb,
    tag: &str,
    n: usize,
    polls: impl Fn(usize) -> usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let vid = format!("video_{tag}_{i}");
        fake.script(
            &vid,
            Script::completes_after(polls(i)).with_video_bytes(48 * 1024),
        );
        let job = format!("job_{tag}_{i}");
        seed_job(
            db,
            &job,
            &format!("scene_{tag}_{i}"),
            &format!("ver_{tag}_{i}"),
            &vid,
            now_ms() - 60_000 + i as i64,
        )
        .await;
        ids.push(job);
    }
    ids
}

async fn completed(db: &AppDb, ids: &[String]) -> usize {
    let mut n = 0;
    for id in ids {
        if db.job(id).await.unwrap().unwrap().status == "completed" {
            n += 1;
        }
    }
    n
}

/// Every object file under `dir/objects`, by name (its sha256).
fn objects(dir: &Path) -> BTreeSet<String> {
    files_under(&dir.join("objects"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Every file under `dir` with its sha256, by path relative to `dir`.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let sha = sha256_hex(&std::fs::read(&p).unwrap());
            (p.strip_prefix(dir).unwrap().to_owned(), sha)
        })
        .collect()
}

/// Check a restored database and media dir against the backup's manifest:
/// every ready version's files are at their rewritten paths under `media`
/// with their sha256, and the ready versions are exactly those the
/// manifest holds.
async fn check_restored(url: &str, media: &Path, m: &Value) {
    let db = AppDb::connect(url).await.unwrap();
    let ready = ready_versions(&db).await;
    let media = std::fs::canonicalize(media).unwrap();
    let files = manifest_files(m);
    let by_path: BTreeMap<&str, &str> = files
        .iter()
        .map(|(p, _, s)| (p.as_str(), s.as_str()))
        .collect();
    let manifest_versions: BTreeSet<String> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "video")
        .map(|f| f["scene_version_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ready.keys().cloned().collect::<BTreeSet<_>>(),
        manifest_versions,
        "the restored database's ready versions are the manifest's"
    );
    for (id, (video, thumb, sha)) in &ready {
        let video = PathBuf::from(video.as_deref().unwrap());
        assert!(
            video.starts_with(&media),
            "{id}: {} rewritten under {}",
            video.display(),
            media.display()
        );
        let bytes =
            std::fs::read(&video).unwrap_or_else(|e| panic!("{id}: {}: {e}", video.display()));
        assert_eq!(Some(sha256_hex(&bytes)), sha.clone(), "{id}: video content");
        let rel = video
            .strip_prefix(&media)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            by_path.get(rel.as_str()).copied(),
            sha.as_deref(),
            "{id}: manifest sha256"
        );
        let thumb = PathBuf::from(thumb.as_deref().expect("a thumbnail"));
        let rel = thumb
            .strip_prefix(&media)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let tbytes = std::fs::read(&thumb).unwrap();
        assert_eq!(
            by_path.get(rel.as_str()).copied(),
            Some(sha256_hex(&tbytes).as_str()),
            "{id}: thumbnail"
        );
    }
    db.close().await;
}

// ---------------------------------------------------------------------------

async fn backup_while_jobs_complete_then_restore(backend: Backend) {
    let fake = FakeOpenAi::start(KEY).await;
    let Some(env) = env_for(backend, "bk_live", &fake.base_url(), "") else {
        return;
    };
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    // Half finish at once; the rest over the next seconds (backoff 100 ms
    // doubling to 1 s), so the backups below race their completions.
    let ids = seed(
        &fake,
        &db,
        "live",
        12,
        |i| if i < 6 { 0 } else { 2 * i - 4 },
    )
    .await;
    let _daemon = env.start("run");
    eventually(Duration::from_secs(30), "a first completion", || async {
        (completed(&db, &ids).await > 0).then_some(())
    })
    .await;
    let bdir = env.dir.path().join("backups");
    let mut taken = Vec::new();
    loop {
        let done = all_final(&db, &ids).await;
        taken.push(backup(&env, &bdir, &[]));
        if done {
            break;
        }
        assert!(taken.len() < 200, "jobs never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(completed(&db, &ids).await, 12);
    let live = ready_versions(&db).await;
    let counts: Vec<usize> = taken
        .iter()
        .map(|id| {
            manifest_files(&manifest(&bdir, id))
                .iter()
                .filter(|f| f.1 == "video")
                .count()
        })
        .collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    assert!(
        counts[0] < 12,
        "the first backup ran before every job was done: {counts:?}"
    );
    assert_eq!(*counts.last().unwrap(), 12, "{counts:?}");
    // Every backup: verified, and each video's sha256 is the one the live
    // database records for that version (versions never change once ready).
    for id in &taken {
        let out = verify(&env, &bdir, id);
        assert_eq!(out.status.code(), Some(0), "verify {id}: {}", show(&out));
        let m = manifest(&bdir, id);
        assert_eq!(m["schema_version"], 3);
        assert_eq!(m["source"]["media_dir"], env.media().to_str().unwrap());
        for f in m["files"].as_array().unwrap() {
            if f["kind"] == "video" {
                let v = f["scene_version_id"].as_str().unwrap();
                assert_eq!(live[v].2.as_deref(), f["sha256"].as_str(), "{id}: {v}");
            }
        }
    }
    // Restore the first backup (taken mid-way) and the last.
    for id in [taken.first().unwrap(), taken.last().unwrap()] {
        let url = new_db_url(backend, env.dir.path(), "restored");
        let media = env.dir.path().join(format!("restored-media-{id}"));
        let out = env.output(&[
            "restore",
            "--from",
            bdir.to_str().unwrap(),
            "--backup",
            id,
            "--database",
            &url,
            "--media-dir",
            media.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "restore {id}: {}", show(&out));
        check_restored(&url, &media, &manifest(&bdir, id)).await;
    }
}
on_both_backends!(backup_while_jobs_complete_then_restore);

// ---------------------------------------------------------------------------

/// `cp -a` of a backup directory, to damage one copy per case.
fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn object_of(dir: &Path, sha: &str) -> PathBuf {
    dir.join("objects").join(&sha[..2]).join(sha)
}

async fn verify_finds_every_kind_of_damage(backend: Backend) {
    let fake = FakeOpenAi::start(KEY).await;
    let Some(env) = env_for(backend, "bk_damage", &fake.base_url(), "") else {
        return;
    };
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let ids = seed(&fake, &db, "dmg", 4, |_| 0).await;
    let mut daemon = env.start("run");
    eventually(Duration::from_secs(30), "every job final", || async {
        all_final(&db, &ids).await.then_some(())
    })
    .await;
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(15));
    let good = env.dir.path().join("good");
    let id = backup(&env, &good, &[]);
    let out = verify(&env, &good, &id);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let m = manifest(&good, &id);
    let files = manifest_files(&m);
    let videos: Vec<&(String, String, String)> = files.iter().filter(|f| f.1 == "video").collect();
    assert_eq!(videos.len(), 4);
    let snapshot = m["snapshot"]["file"].as_str().unwrap().to_owned();

    type Damage = Box<dyn Fn(&Path)>;
    let (v0, v1, v2, v3) = (
        videos[0].clone(),
        videos[1].clone(),
        videos[2].clone(),
        videos[3].clone(),
    );
    let cases: Vec<(&str, Damage, Vec<String>)> = vec![
        (
            "corrupted",
            Box::new({
                let sha = v0.2.clone();
                move |d: &Path| {
                    let p = object_of(d, &sha);
                    let mut b = std::fs::read(&p).unwrap();
                    b[100] ^= 0xff;
                    std::fs::write(&p, b).unwrap();
                }
            }),
            vec![v0.0.clone(), "corrupted".into()],
        ),
        (
            "truncated",
            Box::new({
                let sha = v1.2.clone();
                move |d: &Path| {
                    let p = object_of(d, &sha);
                    let b = std::fs::read(&p).unwrap();
                    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
                }
            }),
            vec![v1.0.clone(), "truncated".into()],
        ),
        (
            "missing",
            Box::new({
                let sha = v2.2.clone();
                move |d: &Path| std::fs::remove_file(object_of(d, &sha)).unwrap()
            }),
            vec![v2.0.clone(), "missing".into()],
        ),
        (
            "snapshot",
            Box::new({
                let (id, snapshot) = (id.clone(), snapshot.clone());
                move |d: &Path| {
                    let p = d.join("backups").join(&id).join(&snapshot);
                    let mut b = std::fs::read(&p).unwrap();
                    let at = b.len() / 2;
                    b[at] ^= 0x55;
                    std::fs::write(&p, b).unwrap();
                }
            }),
            vec![snapshot.clone(), "snapshot".into(), "corrupted".into()],
        ),
        (
            "not in the manifest",
            Box::new({
                let (id, path) = (id.clone(), v3.0.clone());
                move |d: &Path| {
                    let p = d.join("backups").join(&id).join("manifest.json");
                    let mut m: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                    m["files"]
                        .as_array_mut()
                        .unwrap()
                        .retain(|f| f["path"].as_str() != Some(path.as_str()));
                    std::fs::write(&p, serde_json::to_vec(&m).unwrap()).unwrap();
                }
            }),
            vec![v3.0.clone(), "not in the backup".into()],
        ),
    ];
    for (name, damage, expect) in cases {
        let dir = env
            .dir
            .path()
            .join(format!("damaged-{}", name.replace(' ', "-")));
        copy_dir(&good, &dir);
        damage(&dir);
        let out = verify(&env, &dir, &id);
        assert_eq!(out.status.code(), Some(65), "{name}: {}", show(&out));
        let err = text(&out.stderr);
        for e in &expect {
            assert!(
                err.contains(e.as_str()),
                "{name}: stderr names {e:?}: {}",
                show(&out)
            );
        }
        // A restore of the damaged backup writes nothing.
        let url = new_db_url(backend, env.dir.path(), "from_damaged");
        let media = env
            .dir
            .path()
            .join(format!("restore-{}", name.replace(' ', "-")));
        let out = env.output(&[
            "restore",
            "--from",
            dir.to_str().unwrap(),
            "--database",
            &url,
            "--media-dir",
            media.to_str().unwrap(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(65),
            "{name}: restore: {}",
            show(&out)
        );
        assert!(!media.exists(), "{name}: no media dir created");
        assert_database_absent(backend, &url).await;
    }
    // The good copy is still good.
    assert_eq!(verify(&env, &good, &id).status.code(), Some(0));
}
on_both_backends!(verify_finds_every_kind_of_damage);

async fn assert_database_absent(backend: Backend, url: &str) {
    match backend {
        Backend::Sqlite => {
            let path = url.strip_prefix("sqlite://").unwrap();
            assert!(!Path::new(path).exists(), "{path} was created");
        }
        Backend::Postgres => {
            let r = sqlx::PgPool::connect(url).await;
            assert!(r.is_err(), "{url} was created");
        }
    }
}

// ---------------------------------------------------------------------------

async fn incremental_backups_and_pruning(backend: Backend) {
    let fake = FakeOpenAi::start(KEY).await;
    let Some(env) = env_for(backend, "bk_incr", &fake.base_url(), "") else {
        return;
    };
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let mut daemon = env.start("run");
    let first = seed(&fake, &db, "a", 3, |_| 0).await;
    eventually(Duration::from_secs(30), "the first jobs final", || async {
        all_final(&db, &first).await.then_some(())
    })
    .await;
    let bdir = env.dir.path().join("backups");
    let stats = |id: &str| {
        let m = manifest(&bdir, id);
        (
            m["stats"]["copied"].as_u64().unwrap(),
            m["stats"]["reused"].as_u64().unwrap(),
        )
    };
    // Each job: a video and a thumbnail.
    let b1 = backup(&env, &bdir, &[]);
    assert_eq!(stats(&b1), (6, 0));
    let second = seed(&fake, &db, "b", 2, |_| 0).await;
    eventually(Duration::from_secs(30), "the second jobs final", || async {
        all_final(&db, &second).await.then_some(())
    })
    .await;
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(15));
    let before = objects(&bdir);
    let b2 = backup(&env, &bdir, &[]);
    assert_eq!(stats(&b2), (4, 6), "only the new files are copied");
    let after = objects(&bdir);
    assert_eq!(after.len(), 10);
    let new: BTreeSet<_> = after.difference(&before).cloned().collect();
    let b_files: BTreeSet<String> = manifest_files(&manifest(&bdir, &b2))
        .into_iter()
        .filter(|f| f.0.contains("scene_b_"))
        .map(|f| f.2)
        .collect();
    assert_eq!(
        new, b_files,
        "the objects written are the new versions' files"
    );
    // The app deletes a take: the next backups no longer hold it.
    db.exec("DELETE FROM scene_versions WHERE id = 'ver_a_0'")
        .await
        .unwrap();
    let take_files: BTreeSet<String> = manifest_files(&manifest(&bdir, &b1))
        .into_iter()
        .filter(|f| f.0.contains("scene_a_0/"))
        .map(|f| f.2)
        .collect();
    assert_eq!(take_files.len(), 2);
    let b3 = backup(&env, &bdir, &[]);
    assert_eq!(stats(&b3), (0, 8));
    let b4 = backup(&env, &bdir, &["--prune", "--keep", "2"]);
    assert_eq!(stats(&b4), (0, 8));
    // Kept: b3 and b4; removed: b1, b2, and the deleted take's two files.
    let left: BTreeSet<String> = std::fs::read_dir(bdir.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, BTreeSet::from([b3.clone(), b4.clone()]));
    let mut needed = BTreeSet::new();
    for id in [&b3, &b4] {
        needed.extend(
            manifest_files(&manifest(&bdir, id))
                .into_iter()
                .map(|f| f.2),
        );
        let out = verify(&env, &bdir, id);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{id} after the prune: {}",
            show(&out)
        );
    }
    assert_eq!(
        objects(&bdir),
        needed,
        "every file a kept backup needs, nothing else"
    );
    assert_eq!(needed.len(), 8);
    let removed: BTreeSet<String> = after.difference(&objects(&bdir)).cloned().collect();
    assert_eq!(
        removed, take_files,
        "the prune removed the deleted take's files"
    );
    // A backup that was killed (no manifest) is removed by the next prune.
    std::fs::create_dir(bdir.join("backups").join("20000101T000000.000Z-dead")).unwrap();
    let b5 = backup(&env, &bdir, &["--prune", "--keep", "1"]);
    let left: Vec<String> = std::fs::read_dir(bdir.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![b5]);
}
on_both_backends!(incremental_backups_and_pruning);

// ---------------------------------------------------------------------------

async fn restores_never_touch_live_data(backend: Backend) {
    let fake = FakeOpenAi::start(KEY).await;
    let Some(env) = env_for(backend, "bk_live_targets", &fake.base_url(), "") else {
        return;
    };
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let ids = seed(&fake, &db, "t", 2, |_| 0).await;
    let mut daemon = env.start("run");
    eventually(Duration::from_secs(30), "every job final", || async {
        all_final(&db, &ids).await.then_some(())
    })
    .await;
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(15));
    let bdir = env.dir.path().join("backups");
    backup(&env, &bdir, &[]);
    let live_versions = ready_versions(&db).await;
    let live_media = tree(&env.media());
    let restore = |url: &str, media: &Path| {
        env.output(&[
            "restore",
            "--from",
            bdir.to_str().unwrap(),
            "--database",
            url,
            "--media-dir",
            media.to_str().unwrap(),
        ])
    };
    let fresh_media = env.dir.path().join("fresh-media");
    let fresh_url = new_db_url(backend, env.dir.path(), "fresh");
    // A non-empty database that is not the live one.
    let other_url = match backend {
        Backend::Sqlite => {
            let url = new_db_url(backend, env.dir.path(), "other");
            let other = AppDb::connect(&url).await.unwrap();
            other.exec("CREATE TABLE t (x INTEGER)").await.unwrap();
            other.close().await;
            url
        }
        Backend::Postgres => {
            let url = clawcut_test_support::pg::require()
                .unwrap()
                .fresh_db("other");
            let other = AppDb::connect(&url).await.unwrap();
            other.exec("CREATE TABLE t (x integer)").await.unwrap();
            other.close().await;
            url
        }
    };
    let full_dir = env.dir.path().join("full");
    std::fs::create_dir(&full_dir).unwrap();
    std::fs::write(full_dir.join("keep.txt"), b"mine").unwrap();
    let cases: Vec<(&str, String, PathBuf, &str)> = vec![
        (
            "the live database",
            env.db_url.clone(),
            fresh_media.clone(),
            "live database",
        ),
        (
            "the live media dir",
            fresh_url.clone(),
            env.media(),
            "live media dir",
        ),
        (
            "inside the live media dir",
            fresh_url.clone(),
            env.media().join("restored"),
            "inside the live media dir",
        ),
        (
            "a database that is not empty",
            other_url.clone(),
            fresh_media.clone(),
            "not empty",
        ),
        (
            "a media dir that is not empty",
            fresh_url.clone(),
            full_dir.clone(),
            "not empty",
        ),
    ];
    for (what, url, media, says) in cases {
        let out = restore(&url, &media);
        assert_eq!(out.status.code(), Some(73), "{what}: {}", show(&out));
        assert!(text(&out.stderr).contains(says), "{what}: {}", show(&out));
        assert!(!fresh_media.exists(), "{what}: fresh media dir created");
        assert!(!env.media().join("restored").exists(), "{what}");
        assert_database_absent(backend, &fresh_url).await;
    }
    assert_eq!(std::fs::read(full_dir.join("keep.txt")).unwrap(), b"mine");
    assert_eq!(
        ready_versions(&db).await,
        live_versions,
        "live database unchanged"
    );
    assert_eq!(tree(&env.media()), live_media, "live media unchanged");
    // The same restore aimed at new places works.
    let out = restore(&fresh_url, &fresh_media);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(ready_versions(&db).await, live_versions);
}
on_both_backends!(restores_never_touch_live_data);

// ---------------------------------------------------------------------------

#[test]
fn the_backup_units_verify() {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-analyze is missing in CI"
        );
        eprintln!("SKIPPED: systemd-analyze not installed");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut paths = Vec::new();
    for name in [
        "clawcut-worker-backup.service",
        "clawcut-worker-backup.timer",
    ] {
        let unit = std::fs::read_to_string(deploy.join(name)).unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, unit.replace("/usr/bin/clawcut-worker", BIN)).unwrap();
        paths.push(path);
    }
    let o = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "verify: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let service = std::fs::read_to_string(&paths[0]).unwrap();
    assert!(service.contains("backup --to"), "{service}");
    let cargo =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    for name in [
        "clawcut-worker-backup.service",
        "clawcut-worker-backup.timer",
    ] {
        assert!(
            cargo.contains(&format!("deploy/{name}")),
            "{name} is in the .deb assets"
        );
    }
}

// ---------------------------------------------------------------------------

async fn a_damaged_live_file_is_not_backed_up(backend: Backend) {
    let fake = FakeOpenAi::start(KEY).await;
    let Some(env) = env_for(backend, "bk_live_damage", &fake.base_url(), "") else {
        return;
    };
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let ids = seed(&fake, &db, "ld", 3, |_| 0).await;
    let mut daemon = env.start("run");
    eventually(Duration::from_secs(30), "every job final", || async {
        all_final(&db, &ids).await.then_some(())
    })
    .await;
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(15));
    let bdir = env.dir.path().join("backups");
    let first = backup(&env, &bdir, &[]);
    // After a good backup, the app damages one clip and loses a thumbnail
    // of another, and a new version's clip is damaged before any backup.
    let video = |v: &str| {
        env.media()
            .join(format!("videos/scene_ld_{v}/ver_ld_{v}.mp4"))
    };
    let mut b = std::fs::read(video("0")).unwrap();
    b[10] ^= 1;
    std::fs::write(video("0"), b).unwrap();
    std::fs::remove_file(env.media().join("thumbnails/scene_ld_1/ver_ld_1.webp")).unwrap();
    let more = seed(&fake, &db, "le", 1, |_| 0).await;
    let mut daemon = env.start("run2");
    eventually(Duration::from_secs(30), "the new job final", || async {
        all_final(&db, &more).await.then_some(())
    })
    .await;
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(15));
    let new_clip = env.media().join("videos/scene_le_0/ver_le_0.mp4");
    std::fs::write(&new_clip, b"not the clip").unwrap();
    let out = env.output(&[
        "backup",
        "--to",
        bdir.to_str().unwrap(),
        "--prune",
        "--keep",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(65), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("videos/scene_le_0/ver_le_0.mp4"),
        "{}",
        show(&out)
    );
    assert!(err.contains("changed since the snapshot"), "{}", show(&out));
    assert!(err.contains("not pruning"), "{}", show(&out));
    assert!(
        err.contains("warning: ") && err.contains("ver_ld_1.webp"),
        "{}",
        show(&out)
    );
    // The damaged ver_ld_0 clip was already held (by content): not read again.
    assert!(!err.contains("ver_ld_0"), "{}", show(&out));
    let id = text(&out.stdout)
        .strip_prefix("backup ")
        .and_then(|s| s.split(':').next())
        .unwrap()
        .to_owned();
    let m = manifest(&bdir, &id);
    let missing = m["missing"].as_array().unwrap();
    assert_eq!(missing.len(), 2, "{missing:?}");
    // Nothing was pruned, and the incomplete backup fails verification by name.
    assert!(
        bdir.join("backups")
            .join(&first)
            .join("manifest.json")
            .is_file()
    );
    let out = verify(&env, &bdir, &id);
    assert_eq!(out.status.code(), Some(65), "{}", show(&out));
    assert!(text(&out.stderr).contains("ver_le_0.mp4"), "{}", show(&out));
    assert_eq!(verify(&env, &bdir, &first).status.code(), Some(0));
}
on_both_backends!(a_damaged_live_file_is_not_backed_up);
