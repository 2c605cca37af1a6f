//! The operator panel (`/ops`) in a real browser: headless Chromium, driven
//! by Playwright (`tests/browser/panel.mjs`), against the real daemon over a
//! seeded SQLite database and a fake `openai`-shaped provider that serves a
//! real, playable MP4.
//!
//! This harness seeds the database, serves the provider, starts the daemon
//! with an admin and a read-only token, runs the script (which prints one
//! line per check and exits non-zero on any failure), then checks in the
//! database what the browser did. Node, Chromium and
//! `tests/browser/node_modules` (`npm ci --prefix tests/browser`) are
//! needed: without them the test is skipped loudly, except under `CI=true`
//! where that is a failure.
//!
//! It runs on SQLite and on PostgreSQL (`in_a_real_browser::sqlite`,
//! `::postgres`). Screenshots go to `target/panel-screenshots/`, or, from
//! the SQLite run, to `docs/screenshots/` (the README's) with
//! `UPDATE_SCREENSHOTS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clawcut_test_support::db::{AppDb, NewJob};
use serde_json::{Value, json};

use crate::support::*;

/// A real clip (VP9 in MP4, 160x90, 2 s, 10 fps: plays in any Chromium
/// build) and a real WebP thumbnail, both made with ffmpeg once.
const CLIP: &[u8] = include_bytes!("fixtures/clip.mp4");
const THUMB: &[u8] = include_bytes!("fixtures/thumb.webp");

const READONLY_TOKEN: &str = "ro-e2e-token-1a2b3c4d5e6f";
const OPERATOR: &str = "Olivia Operator";
/// What the script types at sign-in to be refused.
const WRONG_TOKEN: &str = "not-the-token";

/// The repository's root (this crate is `crates/daemon`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// What the browser tests need; `None` (after a loud notice) when something
/// is missing outside CI; a panic under CI.
struct Tools {
    node: PathBuf,
    chromium: PathBuf,
}

fn browser_tools() -> Option<Tools> {
    let root = repo_root();
    let node = PathBuf::from(std::env::var("NODE").unwrap_or_else(|_| "node".into()));
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    let mut missing = Vec::new();
    // Playwright wants Node 20 or later.
    let node_major = Command::new(&node)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let v = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            v.strip_prefix('v')?.split('.').next()?.parse::<u32>().ok()
        });
    match node_major {
        None => missing.push(format!(
            "node ({}) does not run: apt-get install nodejs npm (or set $NODE)",
            node.display()
        )),
        Some(v) if v < 20 => missing.push(format!(
            "node ({}) is version {v}; Playwright needs 20 or later",
            node.display()
        )),
        Some(_) => {}
    }
    if !chromium.is_file() {
        missing.push(format!(
            "no Chromium at {} (or $CHROMIUM): apt-get install chromium",
            chromium.display()
        ));
    }
    for m in ["playwright-core", "axe-core"] {
        let p = root.join("tests/browser/node_modules").join(m);
        if !p.join("package.json").is_file() {
            missing.push(format!(
                "{} is missing: npm ci --prefix tests/browser",
                p.display()
            ));
        }
    }
    if missing.is_empty() {
        return Some(Tools { node, chromium });
    }
    let why = missing.join("; ");
    if in_ci() {
        panic!("the browser tests cannot run under CI=true: {why}");
    }
    eprintln!("SKIPPED: the operator panel's browser tests: {why}");
    None
}

/// `target/panel-screenshots/` (`…/postgres/` for that run).
fn shots_in_target(backend: Backend) -> PathBuf {
    // The test binary is <target>/debug/deps/e2e-…: its target directory.
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| repo_root().join("target"));
    let dir = target.join("panel-screenshots");
    match backend {
        Backend::Sqlite => dir,
        Backend::Postgres => dir.join("postgres"),
    }
}

/// Where the script writes the README's two screenshots:
/// [`shots_in_target`], or `docs/screenshots/` from the SQLite run with
/// `UPDATE_SCREENSHOTS=1`.
fn screenshot_dir(backend: Backend) -> PathBuf {
    let update = std::env::var("UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1");
    if update && backend == Backend::Sqlite {
        return repo_root().join("docs/screenshots");
    }
    shots_in_target(backend)
}

/// A fake OpenAI Videos API whose behaviour is named by the video id:
/// `vid_done_*` is completed (content: the real clip and thumbnail),
/// `vid_run_*` and anything else is still in progress.
async fn fake_provider() -> String {
    async fn retrieve(UrlPath(id): UrlPath<String>, headers: HeaderMap) -> Response {
        if !authorized(&headers) {
            return unauthorized();
        }
        let status = if id.starts_with("vid_done_") {
            "completed"
        } else {
            "in_progress"
        };
        axum::Json(json!({
            "id": id, "object": "video", "status": status, "model": "sora-2",
            "progress": if status == "completed" { 100 } else { 40 },
            "seconds": "4", "size": "1280x720", "created_at": 1_764_000_000,
            "expires_at": null, "error": null,
        }))
        .into_response()
    }

    async fn content(
        UrlPath(id): UrlPath<String>,
        Query(q): Query<std::collections::HashMap<String, String>>,
        headers: HeaderMap,
    ) -> Response {
        if !authorized(&headers) {
            return unauthorized();
        }
        if !id.starts_with("vid_done_") {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": {"message": "not ready", "type": "invalid_request_error", "code": null}})),
            )
                .into_response();
        }
        let (bytes, mime) = match q.get("variant").map(String::as_str) {
            Some("thumbnail") => (THUMB, "image/webp"),
            _ => (CLIP, "video/mp4"),
        };
        ([(header::CONTENT_TYPE, mime)], bytes).into_response()
    }

    fn authorized(h: &HeaderMap) -> bool {
        h.get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {KEY}"))
    }

    fn unauthorized() -> Response {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"}})),
        )
            .into_response()
    }

    let app = Router::new()
        .route("/v1/videos/{id}", get(retrieve))
        .route("/v1/videos/{id}/content", get(content));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// The jobs the browser works on, by role.
struct Seed {
    /// Stranded at the provider, which has finished them.
    stranded: Vec<String>,
    /// The one the browser reconciles.
    reconcile: String,
    /// Stranded, untouched by everyone: the read-only session's targets.
    untouched: String,
    /// The CSRF and other-origin targets (refused, so untouched too).
    csrf_target: String,
    /// Still running at the provider: the browser cancels it.
    running: String,
    /// `needs_operator`: the browser fails it with a reason.
    inbox: String,
    inbox_why: String,
    inbox_key: String,
    /// An error group (503s at `openai`): bulk retried.
    errors: Vec<String>,
    /// Of the group, the one canceled between the dry run and the confirm.
    changed: String,
    /// Completed, with its file in the media dir.
    completed: String,
    /// Completed, but its file no longer matches its checksum.
    damaged: String,
}

/// Older completed jobs, so the full list has a second page (50 a page).
const HISTORY: usize = 55;

const FAR_FUTURE_MS: i64 = 6 * 3_600_000;

/// A timestamp (epoch ms) as the backend's SQL writes it.
fn at(b: Backend, ms: i64) -> String {
    match b {
        Backend::Sqlite => ms.to_string(),
        Backend::Postgres => format!("to_timestamp({ms}::float8 / 1000.0)"),
    }
}

async fn seed(b: Backend, db: &AppDb, env: &Env) -> Seed {
    let ago = now_ms() - 600_000;
    let job = |id: &str, status: &str, pid: Option<&str>| {
        let mut j = NewJob::video(id, status, pid, ago);
        j.request =
            r#"{"prompt":"a lighthouse at dusk","model":"sora-2","seconds":"4","size":"1280x720"}"#
                .into();
        j
    };
    let mut s = Seed {
        stranded: vec![],
        reconcile: "job_strand_1".into(),
        untouched: "job_strand_3".into(),
        csrf_target: "job_strand_2".into(),
        running: "job_running".into(),
        inbox: "job_inbox".into(),
        inbox_why: "submission outcome unknown: the create call timed out".into(),
        inbox_key: "idem-7c1f0e55-inbox".into(),
        errors: vec![],
        changed: "job_err_4".into(),
        completed: "job_done".into(),
        damaged: "job_damaged".into(),
    };
    for n in 1..=3 {
        let id = format!("job_strand_{n}");
        db.insert_job_with_scene(&job(&id, "processing", Some(&format!("vid_done_{n}"))))
            .await
            .unwrap();
        s.stranded.push(id);
    }
    // The read-only session's and the forged requests' targets are not due
    // for hours (a long poll hint), so that no pass of the daemon's (a bulk
    // retry wakes the loop) touches them: only an accepted action could.
    let later = at(b, now_ms() + FAR_FUTURE_MS);
    for id in [&s.untouched, &s.csrf_target] {
        db.exec(&format!(
            "UPDATE ai_jobs SET next_attempt_at = {later} WHERE id = '{id}'"
        ))
        .await
        .unwrap();
    }
    db.insert_job_with_scene(&job(&s.running, "processing", Some("vid_run_1")))
        .await
        .unwrap();

    // A job whose submission's outcome is unknown, as the daemon leaves it.
    db.insert_job_with_scene(&job(&s.inbox, "needs_operator", None))
        .await
        .unwrap();
    db.exec(&format!(
        "UPDATE ai_jobs SET attempts = 1, last_error = '{}', idempotency_key = '{}' WHERE id = '{}'",
        s.inbox_why, s.inbox_key, s.inbox
    ))
    .await
    .unwrap();

    // An error group: four jobs that met a 503 at the same provider, backed
    // off far into the future.
    let next = at(b, now_ms() + FAR_FUTURE_MS);
    for n in 1..=4 {
        let id = format!("job_err_{n}");
        db.insert_job_with_scene(&job(&id, "pending", Some(&format!("vid_503_{n}"))))
            .await
            .unwrap();
        db.exec(&format!(
            "UPDATE ai_jobs SET attempts = 3, next_attempt_at = {next},
                 last_error = 'Server(503): service unavailable (upstream overloaded)'
             WHERE id = '{id}'"
        ))
        .await
        .unwrap();
        s.errors.push(id);
    }

    // A completed job with its clip on disk, as the daemon leaves one; one
    // whose file was damaged on disk since; and a history of older finished
    // jobs, more than one page of the list.
    completed(b, db, env, &s.completed, CLIP, ago + 60_000).await;
    let mut damaged = CLIP.to_vec();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0xff;
    completed(b, db, env, &s.damaged, &damaged, ago + 90_000).await;
    for n in 0..HISTORY {
        let id = format!("job_old_{n:02}");
        let mut j = job(&id, "completed", Some(&format!("vid_old_{n:02}")));
        j.created_at -= 86_400_000 + n as i64 * 60_000;
        j.updated_at = j.created_at + 120_000;
        db.insert_job_with_scene(&j).await.unwrap();
    }
    s
}

/// `id` as the daemon leaves a completed job: its clip at the final path,
/// the row, its scene version and scene, and the completing event. The row
/// records the sha256 of [`CLIP`]; `on_disk` is what the file holds.
async fn completed(b: Backend, db: &AppDb, env: &Env, id: &str, on_disk: &[u8], ms: i64) {
    let mut j = NewJob::video(id, "processing", Some(&format!("vid_{id}")), ms - 300_000);
    j.updated_at = ms - 300_000;
    let t = at(b, ms);
    db.insert_job_with_scene(&j).await.unwrap();
    let path = env.media().join(format!("videos/s-{id}/v-{id}.mp4"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, on_disk).unwrap();
    let (sha, bytes) = (sha256_hex(CLIP), CLIP.len());
    let p = path.display();
    db.exec(&format!(
        "UPDATE ai_jobs SET status = 'completed', polls = 2, completed_at = {t}, updated_at = {t},
             video_path = '{p}', video_sha256 = '{sha}', video_bytes = {bytes} WHERE id = '{id}';
         UPDATE scene_versions SET status = 'ready', video_path = '{p}', video_sha256 = '{sha}',
             video_bytes = {bytes}, updated_at = {t} WHERE id = 'v-{id}';
         UPDATE scenes SET current_version_id = 'v-{id}' WHERE id = 's-{id}';
         INSERT INTO ai_job_events (ai_job_id, from_status, to_status, worker_id, detail, created_at)
             VALUES ('{id}', 'processing', 'completed', 'vm:1:seed',
                     '{{\"video\":{{\"bytes\":{bytes},\"sha256\":\"{sha}\"}}}}', {t});"
    ))
    .await
    .unwrap();
}

fn seed_json(s: &Seed) -> Value {
    json!({
        "stranded": s.stranded,
        "reconcile": s.reconcile,
        "untouched": s.untouched,
        "csrfTarget": s.csrf_target,
        "running": s.running,
        "inbox": {"id": s.inbox, "why": s.inbox_why, "key": s.inbox_key},
        "errors": s.errors,
        "changed": s.changed,
        "completed": s.completed,
        "damaged": s.damaged,
        // By status, as seeded.
        "counts": {"processing": 4, "pending": 4, "needs_operator": 1, "completed": 2 + HISTORY},
        "clip": {"sha256": sha256_hex(CLIP), "bytes": CLIP.len()},
        "operator": OPERATOR,
        "wrongToken": WRONG_TOKEN,
    })
}

fn detail(e: &clawcut_test_support::db::EventRow) -> Value {
    serde_json::from_str(&e.detail).unwrap_or(Value::Null)
}

on_both_backends!(in_a_real_browser);

async fn in_a_real_browser(backend: Backend) {
    let Some(tools) = browser_tools() else {
        return;
    };
    let provider = fake_provider().await;
    // No pass of its own during the test (none at startup, the next in an
    // hour): every change is the browser's doing.
    let Some(env) = env_for(
        backend,
        "panel",
        &provider,
        "[reconcile]\ninterval = \"1h\"\non_startup = false\nmin_age = \"1s\"\nlease_ttl = \"30s\"\nshutdown_grace = \"2s\"\nconcurrency = 4\n",
    ) else {
        return;
    };
    let port = free_port();
    env.edit_config(
        "[http]\nlisten = \"\"",
        &format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\nadmin_token_env = \"E2E_ADMIN\"\nreadonly_token_env = \"E2E_READONLY\""
        ),
    );
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let s = seed(backend, &db, &env).await;

    let daemon = env.start_with("panel", |c| {
        c.env("E2E_ADMIN", ADMIN_TOKEN)
            .env("E2E_READONLY", READONLY_TOKEN);
    });
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "GET /ops/login answers",
        || async {
            let r = client.get(format!("{base}/ops/login")).send().await.ok()?;
            (r.status().as_u16() == 200).then_some(())
        },
    )
    .await;

    let shots = screenshot_dir(backend);
    // Every page the accessibility check visits, for a human to look at.
    let page_shots = shots_in_target(backend).join("pages");
    std::fs::create_dir_all(&shots).unwrap();
    let root = repo_root();
    let (node, chromium) = (tools.node, tools.chromium);
    let seed = seed_json(&s).to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(node)
            .arg(root.join("tests/browser/panel.mjs"))
            .current_dir(&root)
            .env("BASE_URL", &base)
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("READONLY_TOKEN", READONLY_TOKEN)
            .env("SCREENSHOT_DIR", &shots)
            .env("PAGE_SHOTS", &page_shots)
            .env("CHROMIUM", &chromium)
            .env("SEED", seed)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the browser tests failed ({}):\n{stdout}\n{stderr}\n--- daemon log ---\n{}",
        out.status,
        daemon.logs()
    );

    // What the browser did, as the database has it.
    let job = |id: String| {
        let db = db.clone();
        async move { db.job(&id).await.unwrap().unwrap() }
    };
    let r = job(s.reconcile.clone()).await;
    assert_eq!(r.status, "completed", "{r:?}");
    assert_eq!(r.video_sha256.as_deref(), Some(sha256_hex(CLIP).as_str()));

    let inbox = job(s.inbox.clone()).await;
    assert!(
        matches!(inbox.status.as_str(), "failed" | "queued"),
        "{inbox:?}"
    );
    let events = db.events(&s.inbox).await.unwrap();
    let resolved = events
        .iter()
        .find(|e| e.from_status.as_deref() == Some("needs_operator"))
        .unwrap_or_else(|| panic!("no resolve event: {events:?}"));
    assert!(
        resolved.worker_id.contains(OPERATOR),
        "the event names the operator: {resolved:?}"
    );
    assert!(
        resolved
            .detail
            .contains("provider confirms it never got it"),
        "the event has the reason: {resolved:?}"
    );

    let running = job(s.running.clone()).await;
    assert_eq!(running.status, "canceled", "{running:?}");
    let events = db.events(&s.running).await.unwrap();
    let canceled = events
        .iter()
        .find(|e| e.to_status == "canceled")
        .unwrap_or_else(|| panic!("no cancel event: {events:?}"));
    assert!(canceled.worker_id.contains(OPERATOR), "{canceled:?}");
    assert_eq!(detail(canceled)["reason"], "wrong prompt", "{canceled:?}");

    // The bulk retry: the group's jobs are due now, each with an audit
    // event; the one canceled in between is as the cancel left it.
    let now = now_ms();
    for id in s.errors.iter().filter(|id| **id != s.changed) {
        let j = job(id.clone()).await;
        assert!(
            j.next_attempt_at < now + FAR_FUTURE_MS / 2,
            "made due by the bulk retry: {j:?}"
        );
        let events = db.events(id).await.unwrap();
        assert!(!events.is_empty(), "an audit event for {id}");
        assert!(
            events.iter().any(|e| e.worker_id.contains(OPERATOR)),
            "the bulk retry's event names the operator: {events:?}"
        );
    }
    let changed = job(s.changed.clone()).await;
    assert_eq!(changed.status, "canceled", "{changed:?}");
    let events = db.events(&s.changed).await.unwrap();
    assert_eq!(events.len(), 1, "only the cancel's event: {events:?}");
    assert_eq!(events[0].to_status, "canceled");

    // The read-only session's, the forged requests' targets: untouched.
    for id in [&s.untouched, &s.csrf_target] {
        let j = job(id.clone()).await;
        assert_eq!(j.status, "processing", "{j:?}");
        assert_eq!(j.attempts, 0, "{j:?}");
        assert!(db.events(id).await.unwrap().is_empty(), "no event for {id}");
    }
    // No token the daemon was given or refused is in its log (the admin
    // token and the API key are checked for every daemon of the suite).
    let logs = daemon.logs();
    for t in [READONLY_TOKEN, WRONG_TOKEN, &format!("{ADMIN_TOKEN}x")] {
        assert!(!logs.contains(t), "{t} is in the daemon's log");
    }
    drop(daemon);
}
