//! An operator's cancel through the real binary: the CLI stopping a job a
//! running daemon is downloading, the admin API route, and a Replicate job
//! whose provider is asked to cancel. Each runs on SQLite and on the
//! throwaway PostgreSQL.

use std::time::Duration;

use clawcut_test_support::db::{AppDb, EventRow, NewJob};
use clawcut_test_support::fake_common::Script as CoreScript;
use clawcut_test_support::fake_fal::FakeFal;
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};
use clawcut_test_support::fake_replicate::{FakeReplicate, Script as ReplicateScript};
use clawcut_test_support::fake_runway::FakeRunway;
use serde_json::Value;

use crate::support::*;

fn final_events(events: &[EventRow]) -> Vec<&EventRow> {
    events
        .iter()
        .filter(|e| matches!(e.to_status.as_str(), "completed" | "failed" | "canceled"))
        .collect()
}

fn detail(e: &EventRow) -> Value {
    serde_json::from_str(&e.detail).unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------
// The CLI cancels a job the running daemon is downloading.

async fn cli_cancel_mid_download_never_completes(backend: Backend) {
    let fake = FakeOpenAi::start(KEY).await;
    // 128 KiB in 4 KiB chunks, one every 250 ms: about 8 s of download,
    // fast enough for the stall guard (1 KiB per 5 s).
    fake.script(
        "video_c",
        Script::completes_after(0)
            .with_video_bytes(128 * 1024)
            .with_chunk_bytes(4 * 1024)
            .with_chunk_delay(Duration::from_millis(250)),
    );
    fake.script("video_ok", Script::completes_after(0));
    let Some(env) = env_for(backend, "cancel_cli", &fake.base_url(), "") else {
        return;
    };
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let t = now_ms() - 600_000;
    seed_job(&db, "job_c", "scene_c", "ver_c", "video_c", t).await;
    let daemon = env.start("cancel_cli");

    eventually(
        Duration::from_secs(20),
        "the video download started",
        || async { (fake.downloads("video_c", "video") >= 1).then_some(()) },
    )
    .await;
    let row = db.job("job_c").await.unwrap().unwrap();
    assert_eq!(row.status, "processing", "still downloading: {row:?}");
    assert!(row.lease_owner.is_some(), "the daemon holds it: {row:?}");

    let out = env.output(&[
        "cancel",
        "job_c",
        "--reason",
        "wrong prompt",
        "--operator",
        "alice",
    ]);
    assert_eq!(out.status.code(), Some(0), "cancel: {}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains("job job_c is now canceled (was processing)"),
        "{said}"
    );
    // OpenAI's Videos API has no cancel call: canceled locally, and said so.
    assert!(said.contains("no cancel call"), "{said}");

    // The worker finds its lease gone and drops the attempt.
    daemon.wait_log("lease lost", Duration::from_secs(15)).await;
    // Past the time the whole download would have taken.
    tokio::time::sleep(Duration::from_secs(9)).await;

    let row = db.job("job_c").await.unwrap().unwrap();
    assert_eq!(row.status, "canceled", "{row:?}");
    assert_eq!(
        row.last_error.as_deref(),
        Some("canceled by cli:alice: wrong prompt")
    );
    assert_eq!(row.video_path, None);
    let v = db.version("ver_c").await.unwrap().unwrap();
    assert_eq!(v.status, "failed", "{v:?}");
    assert_eq!(v.video_path, None);
    let final_path = env.media().join("videos/scene_c/ver_c.mp4");
    assert!(!final_path.exists(), "no file at {}", final_path.display());
    let videos = files_under(&env.media().join("videos"));
    assert!(videos.is_empty(), "no published video: {videos:?}");
    let events = db.events("job_c").await.unwrap();
    let finals = final_events(&events);
    assert_eq!(finals.len(), 1, "exactly one final event: {events:?}");
    assert_eq!(finals[0].to_status, "canceled");
    assert_eq!(finals[0].worker_id, "cli:alice");
    let d = detail(finals[0]);
    assert_eq!(d["event"], "operator_cancel");
    assert_eq!(d["reason"], "wrong prompt");
    assert_eq!(d["provider_cancel"], "not_supported");
    assert_eq!(d["provider_cancel_requested"], false);

    // A second cancel is refused: the job is final (exit 65, DATAERR).
    let again = env.output(&["cancel", "job_c"]);
    assert_eq!(again.status.code(), Some(65), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already canceled"),
        "{}",
        stderr(&again)
    );
    let missing = env.output(&["cancel", "job_nope"]);
    assert_eq!(missing.status.code(), Some(65), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("not found"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(db.events("job_c").await.unwrap().len(), events.len());
    // Other kinds are not the daemon's: refused, untouched.
    db.insert_job(&clawcut_test_support::db::NewJob {
        kind: "image".into(),
        ..clawcut_test_support::db::NewJob::video("job_img", "processing", Some("img_1"), now_ms())
    })
    .await
    .unwrap();
    let image = env.output(&["cancel", "job_img"]);
    assert_eq!(image.status.code(), Some(65), "{}", stderr(&image));
    assert!(
        stderr(&image).contains("only video jobs"),
        "{}",
        stderr(&image)
    );
    assert_eq!(
        db.job("job_img").await.unwrap().unwrap().status,
        "processing"
    );

    // The daemon keeps running and keeps working other jobs.
    seed_job(
        &db,
        "job_ok",
        "scene_ok",
        "ver_ok",
        "video_ok",
        now_ms() - 600_000,
    )
    .await;
    eventually(Duration::from_secs(20), "job_ok completes", || async {
        let j = db.job("job_ok").await.unwrap().unwrap();
        (j.status == "completed").then_some(())
    })
    .await;
    let mut daemon = daemon;
    assert_eq!(
        daemon.child.try_wait().unwrap(),
        None,
        "the daemon still runs"
    );
    assert_eq!(db.job("job_c").await.unwrap().unwrap().status, "canceled");
}
on_both_backends!(cli_cancel_mid_download_never_completes);

// ---------------------------------------------------------------------------
// The admin API route.

async fn post(
    client: &reqwest::Client,
    port: u16,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut r = client
        .post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn api_cancel_needs_the_token_and_refuses_final_jobs(backend: Backend) {
    let fake = FakeOpenAi::start(KEY).await;
    let Some(env) = env_for(backend, "cancel_api", &fake.base_url(), "") else {
        return;
    };
    let port = env.serve_admin_api();
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let now = now_ms();
    for (id, status) in [
        ("job_a", "queued"),
        ("job_b", "needs_operator"),
        ("job_done", "completed"),
    ] {
        let mut j = NewJob::video(id, status, None, now);
        j.scene_id = Some(format!("scene_{id}"));
        j.scene_version_id = Some(format!("ver_{id}"));
        db.insert_job_with_scene(&j).await.unwrap();
    }
    let _daemon = env.start_with("cancel_api", |c| {
        c.env("E2E_ADMIN", ADMIN_TOKEN);
    });
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(20), "/healthz 200", || async {
        let r = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .ok()?;
        (r.status().as_u16() == 200).then_some(())
    })
    .await;

    for token in [None, Some("wrong-token")] {
        let (code, _) = post(&client, port, "/v1/jobs/job_a/cancel", token, "{}").await;
        assert_eq!(code, 401, "token {token:?}");
    }
    assert_eq!(db.job("job_a").await.unwrap().unwrap().status, "queued");
    assert_eq!(db.events("job_a").await.unwrap(), []);

    let (code, body) = post(
        &client,
        port,
        "/v1/jobs/job_a/cancel",
        Some(ADMIN_TOKEN),
        "{}",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "canceled");
    assert_eq!(body["from_status"], "queued");
    assert_eq!(body["provider_cancel"], "not_asked", "no provider id yet");
    let row = db.job("job_a").await.unwrap().unwrap();
    assert_eq!(row.status, "canceled");
    assert_eq!(row.last_error.as_deref(), Some("canceled by api:admin"));

    let (code, body) = post(
        &client,
        port,
        "/v1/jobs/job_b/cancel",
        Some(ADMIN_TOKEN),
        r#"{"reason": "duplicate", "operator": "bob"}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["from_status"], "needs_operator");
    let ev = db.events("job_b").await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].worker_id, "api:bob");
    assert_eq!(detail(&ev[0])["reason"], "duplicate");
    assert_eq!(
        db.version("ver_job_b").await.unwrap().unwrap().status,
        "failed"
    );

    let (code, body) = post(
        &client,
        port,
        "/v1/jobs/job_done/cancel",
        Some(ADMIN_TOKEN),
        "{}",
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("already completed"),
        "{body}"
    );
    assert_eq!(
        db.job("job_done").await.unwrap().unwrap().status,
        "completed"
    );
    let (code, body) = post(
        &client,
        port,
        "/v1/jobs/job_a/cancel",
        Some(ADMIN_TOKEN),
        "{}",
    )
    .await;
    assert_eq!(code, 409, "canceled twice: {body}");
    let (code, body) = post(
        &client,
        port,
        "/v1/jobs/job_nope/cancel",
        Some(ADMIN_TOKEN),
        "{}",
    )
    .await;
    assert_eq!(code, 404, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let (code, body) = post(
        &client,
        port,
        "/v1/jobs/job_done/cancel",
        Some(ADMIN_TOKEN),
        r#"{"why":1}"#,
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(db.events("job_done").await.unwrap(), []);
    assert_eq!(db.events("job_a").await.unwrap().len(), 1);
}
on_both_backends!(api_cancel_needs_the_token_and_refuses_final_jobs);

// ---------------------------------------------------------------------------
// A Replicate job: the provider's cancel endpoint is called once.

async fn replicate_cancel_calls_the_provider_once(backend: Backend) {
    let openai = FakeOpenAi::start(KEY).await;
    let rep = FakeReplicate::start(KEY).await;
    rep.script("pred_1", ReplicateScript::succeeds_after(100));
    let extra = format!(
        "[providers.rep]\nkind = \"replicate\"\nbase_url = \"{}\"\napi_key_env = \"E2E_OPENAI_KEY\"\ntimeout = \"2s\"\n",
        rep.base_url()
    );
    let Some(env) = env_for(backend, "cancel_rep", &openai.base_url(), &extra) else {
        return;
    };
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let now = now_ms();
    for (id, pid) in [("job_r", "pred_1"), ("job_gone", "pred_gone")] {
        let mut j = NewJob::video(id, "processing", Some(pid), now);
        j.provider = "rep".into();
        j.scene_id = Some(format!("scene_{id}"));
        j.scene_version_id = Some(format!("ver_{id}"));
        db.insert_job_with_scene(&j).await.unwrap();
    }

    let out = env.output(&["cancel", "job_r", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(said["provider_cancel"], "requested", "{said}");
    assert_eq!(said["provider_job_id"], "pred_1");
    assert_eq!(rep.cancels("pred_1"), 1);
    assert_eq!(rep.polls("pred_1"), 0);
    let ev = db.events("job_r").await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(detail(&ev[0])["provider_cancel_requested"], true);
    assert_eq!(db.job("job_r").await.unwrap().unwrap().status, "canceled");

    // Refused: the provider is not asked again.
    let again = env.output(&["cancel", "job_r"]);
    assert_eq!(again.status.code(), Some(65));
    assert_eq!(rep.cancels("pred_1"), 1);

    // A submission whose outcome is not known yet: refused for now (75,
    // try again), nothing written, the provider not asked.
    let mut sub = NewJob::video("job_sub", "submitting", None, now);
    sub.provider = "rep".into();
    sub.scene_id = Some("scene_job_sub".into());
    sub.scene_version_id = Some("ver_job_sub".into());
    db.insert_job_with_scene(&sub).await.unwrap();
    let out = env.output(&["cancel", "job_sub"]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(stderr(&out).contains("not known yet"), "{}", stderr(&out));
    assert_eq!(
        db.job("job_sub").await.unwrap().unwrap().status,
        "submitting"
    );
    assert!(db.events("job_sub").await.unwrap().is_empty());

    // The provider does not know the prediction (404): the local cancel
    // happens all the same, and the event says the provider call failed.
    let out = env.output(&["cancel", "job_gone"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("provider cancel failed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(rep.cancels("pred_gone"), 1);
    let ev = db.events("job_gone").await.unwrap();
    assert_eq!(ev.len(), 1);
    let d = detail(&ev[0]);
    assert_eq!(d["provider_cancel"], "failed");
    assert_eq!(d["provider_cancel_requested"], false);
    assert!(
        d["provider_cancel_error"]
            .as_str()
            .unwrap()
            .contains("NotFound"),
        "{d}"
    );
    assert_eq!(
        db.job("job_gone").await.unwrap().unwrap().status,
        "canceled"
    );
    assert_eq!(openai.total_requests(), 0);
}
on_both_backends!(replicate_cancel_calls_the_provider_once);

// ---------------------------------------------------------------------------
// Runway (from the CLI) and fal (from the API): each provider's documented
// cancel is called exactly once, and the job ends `canceled`.

async fn runway_and_fal_cancel_call_the_provider_once(backend: Backend) {
    let openai = FakeOpenAi::start(KEY).await;
    let runway = FakeRunway::start(KEY).await;
    let fal = FakeFal::start(KEY).await;
    // Long-running at the provider: the cancel finds them mid-flight.
    runway.script("task_1", CoreScript::succeeds_after(1000));
    fal.script("req_1", CoreScript::succeeds_after(1000));
    let extra = format!(
        "[providers.runway]\nkind = \"runway\"\nbase_url = \"{}\"\napi_key_env = \"E2E_OPENAI_KEY\"\ntimeout = \"2s\"\n\n\
         [providers.fal]\nkind = \"fal\"\nbase_url = \"{}\"\napi_key_env = \"E2E_OPENAI_KEY\"\ntimeout = \"2s\"\n",
        runway.base_url(),
        fal.base_url()
    );
    let Some(env) = env_for(backend, "cancel_rw_fal", &openai.base_url(), &extra) else {
        return;
    };
    let port = env.serve_admin_api();
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let fal_pid = FakeFal::job_id("fal-ai/veo3/fast", "req_1");
    for (id, provider, pid) in [
        ("job_rw", "runway", "task_1"),
        ("job_fal", "fal", fal_pid.as_str()),
    ] {
        let mut j = NewJob::video(id, "processing", Some(pid), now_ms() - 600_000);
        j.provider = provider.into();
        j.scene_id = Some(format!("scene_{id}"));
        j.scene_version_id = Some(format!("ver_{id}"));
        db.insert_job_with_scene(&j).await.unwrap();
    }
    let _daemon = env.start_with("cancel_rw_fal", |c| {
        c.env("E2E_ADMIN", ADMIN_TOKEN);
    });
    // Both are being polled: running jobs, not idle rows.
    eventually(Duration::from_secs(20), "both jobs polled", || async {
        (runway.polls("task_1") > 0 && fal.polls("req_1") > 0).then_some(())
    })
    .await;

    let out = env.output(&["cancel", "job_rw", "--reason", "duplicate", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(said["provider_cancel"], "requested", "{said}");
    assert_eq!(runway.cancels("task_1"), 1);

    let client = reqwest::Client::new();
    let (code, body) = post(
        &client,
        port,
        "/v1/jobs/job_fal/cancel",
        Some(ADMIN_TOKEN),
        r#"{"reason":"wrong prompt","operator":"alice"}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(fal.cancels("req_1"), 1);

    for id in ["job_rw", "job_fal"] {
        let j = db.job(id).await.unwrap().unwrap();
        assert_eq!(j.status, "canceled", "{id}");
        // Polls may have moved it (pending/processing) before: one cancel event.
        let ev: Vec<EventRow> = db
            .events(id)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.to_status == "canceled")
            .collect();
        assert_eq!(ev.len(), 1, "{id}: one cancel event");
        assert_eq!(detail(&ev[0])["provider_cancel_requested"], true, "{id}");
    }
    // Final now: the providers are not asked again.
    let again = env.output(&["cancel", "job_rw"]);
    assert_eq!(again.status.code(), Some(65));
    let (code, _) = post(
        &client,
        port,
        "/v1/jobs/job_fal/cancel",
        Some(ADMIN_TOKEN),
        "{}",
    )
    .await;
    assert_eq!(code, 409);
    assert_eq!((runway.cancels("task_1"), fal.cancels("req_1")), (1, 1));
}
on_both_backends!(runway_and_fal_cancel_call_the_provider_once);
