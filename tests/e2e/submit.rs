//! Submission that survives crashes: a crash at each step of submission,
//! with fakes that count creates per job.

use std::time::Duration;

use clawcut_test_support::db::{AppDb, NewJob};
use clawcut_test_support::fake_common::{CreateStep, Script as CommonScript};
use clawcut_test_support::fake_kling::FakeKling;
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};

use crate::support::*;

const SUBMIT: &str = "[submit]\nenabled = true\n";
const KLING: (&str, &str) = ("ak-e2e-access", "sk-e2e-secret-kling");

async fn queued(db: &AppDb, id: &str, model: &str) {
    let t = now_ms() - 600_000;
    let scene = format!("scene_{id}");
    let version = format!("ver_{id}");
    let _ = db.insert_scene(&scene, "s").await;
    db.insert_version(&version, &scene, t).await.unwrap();
    db.insert_job(&NewJob {
        id: id.into(),
        kind: "video".into(),
        provider: if model.starts_with("kling") {
            "kling".into()
        } else {
            "openai".into()
        },
        scene_id: Some(scene),
        scene_version_id: Some(version),
        request: format!(
            r#"{{"prompt":"a red fox in snow","model":"{model}","seconds":"5","size":"1280x720"}}"#
        ),
        status: "queued".into(),
        provider_job_id: None,
        created_at: t,
        updated_at: t,
    })
    .await
    .unwrap();
}

async fn status_of(db: &AppDb, id: &str) -> String {
    db.job(id).await.unwrap().unwrap().status
}

async fn wait_status(db: &AppDb, id: &str, want: &str, within: Duration) {
    eventually(within, &format!("{id} {want}"), || async {
        let s = status_of(db, id).await;
        (s == want).then_some(())
    })
    .await;
}

fn kling_env(fake: &FakeKling) -> Env {
    let extra = format!(
        "{SUBMIT}\n[providers.kling]\nkind = \"kling\"\nbase_url = \"{}\"\napi_key_env = \"E2E_KLING_AK\"\napi_secret_env = \"E2E_KLING_SK\"\ntimeout = \"2s\"\n",
        fake.base_url()
    );
    Env::sqlite("http://127.0.0.1:9", &extra)
}

fn start_kling(env: &Env, name: &str) -> Daemon {
    env.start_with(name, |c| {
        c.env("E2E_KLING_AK", KLING.0).env("E2E_KLING_SK", KLING.1);
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_jobs_are_submitted_polled_and_completed() {
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(Script::completes_after(1));
    let env = Env::sqlite(&fake.base_url(), SUBMIT);
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let ids: Vec<String> = (0..3).map(|i| format!("job_s{i}")).collect();
    for id in &ids {
        queued(&db, id, "sora-2").await;
    }
    let _d = env.start("submit");
    eventually(Duration::from_secs(60), "all completed", || async {
        all_final(&db, &ids).await.then_some(())
    })
    .await;
    for id in &ids {
        let j = db.job(id).await.unwrap().unwrap();
        assert_eq!(j.status, "completed", "{id}: {:?}", j.last_error);
        let key = j.idempotency_key.clone().expect("the intent's key is kept");
        assert_eq!(fake.creates(&key), 1, "{id}: one create");
        let rec = fake
            .create_requests()
            .into_iter()
            .find(|r| r.reference == key)
            .unwrap();
        assert_eq!(rec.header("idempotency-key"), Some(key.as_str()));
        assert_eq!(j.provider_job_id.as_deref(), Some(rec.job_id.as_str()));
        let steps: Vec<(Option<String>, String)> = db
            .events(id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.from_status, e.to_status))
            .collect();
        assert_eq!(
            steps[0],
            (Some("queued".into()), "submitting".into()),
            "{steps:?}"
        );
        assert_eq!(
            steps[1],
            (Some("submitting".into()), "pending".into()),
            "{steps:?}"
        );
        assert_eq!(steps.last().unwrap().1, "completed");
    }
    assert_eq!(
        fake.create_requests().len(),
        3,
        "no second submission of anything"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_refusals_are_retried_or_fail_without_guessing() {
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(Script::completes_after(0));
    // First create: 429 (certainly not created) → back to queued, then OK.
    fake.script_creates(vec![CreateStep::HttpError {
        status: 429,
        retry_after: Some(1),
    }]);
    let env = Env::sqlite(&fake.base_url(), SUBMIT);
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    queued(&db, "job_429", "sora-2").await;
    let mut d = env.start("refusals");
    wait_status(&db, "job_429", "completed", Duration::from_secs(60)).await;
    assert_eq!(
        fake.create_requests().len(),
        1,
        "the refused create made nothing; the retry made one"
    );
    let steps: Vec<String> = db
        .events("job_429")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.to_status)
        .collect();
    assert_eq!(
        &steps[..4],
        ["submitting", "queued", "submitting", "pending"],
        "{steps:?}"
    );
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));

    // A 400 rejects the job for good; an unusable request is never sent.
    fake.script_creates(vec![CreateStep::HttpError {
        status: 400,
        retry_after: None,
    }]);
    queued(&db, "job_400", "sora-2").await;
    let _ = db
        .insert_version("ver_bad", "scene_job_400", now_ms())
        .await;
    db.insert_job(&NewJob {
        request: "not json".into(),
        ..NewJob::video("job_bad", "queued", None, now_ms() - 600_000)
    })
    .await
    .unwrap();
    let _d = env.start("refusals2");
    wait_status(&db, "job_400", "failed", Duration::from_secs(30)).await;
    wait_status(&db, "job_bad", "failed", Duration::from_secs(30)).await;
    assert!(
        db.job("job_400")
            .await
            .unwrap()
            .unwrap()
            .last_error
            .unwrap()
            .contains("rejected")
    );
    let bad = db
        .job("job_bad")
        .await
        .unwrap()
        .unwrap()
        .last_error
        .unwrap();
    assert!(
        bad.contains("invalid job request"),
        "refused by the adapter before sending: {bad}"
    );
    assert_eq!(fake.create_requests().len(), 1, "nothing more was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_crash_while_create_held_open_goes_to_an_operator() {
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_default_script(Script::completes_after(0));
    fake.hold_creates(true);
    let env = Env::sqlite(&fake.base_url(), SUBMIT);
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    queued(&db, "job_held", "sora-2").await;
    let d = env.start("held");
    eventually(Duration::from_secs(30), "create in flight", || async {
        (fake.held_creates() == 1).then_some(())
    })
    .await;
    assert_eq!(
        status_of(&db, "job_held").await,
        "submitting",
        "the intent is committed before the call"
    );
    d.kill9();
    // The provider goes on and creates it although the client is gone.
    fake.hold_creates(false);
    let key = db
        .job("job_held")
        .await
        .unwrap()
        .unwrap()
        .idempotency_key
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "created at the provider",
        || async { (fake.creates(&key) == 1).then_some(()) },
    )
    .await;

    let d2 = env.start("held-restart");
    wait_status(&db, "job_held", "needs_operator", Duration::from_secs(30)).await;
    let j = db.job("job_held").await.unwrap().unwrap();
    let why = j.last_error.unwrap();
    assert!(
        why.contains(&key) && why.contains("resolve job_held"),
        "the reason says what to check: {why}"
    );
    assert_eq!(
        fake.create_requests().len(),
        1,
        "never silently submitted twice"
    );
    drop(d2);

    // The operator decides: submit again.
    let o = env.output(&["resolve", "job_held", "--resubmit", "--operator", "alice"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(status_of(&db, "job_held").await, "queued");
    let _d3 = env.start("held-resubmit");
    wait_status(&db, "job_held", "completed", Duration::from_secs(60)).await;
    assert_eq!(
        fake.create_requests().len(),
        2,
        "one more create, by the operator's decision"
    );
    let ev = db.events("job_held").await.unwrap();
    assert!(
        ev.iter()
            .any(|e| e.to_status == "queued" && e.worker_id == "cli:alice"),
        "{ev:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_crash_after_create_answered_before_commit_goes_to_an_operator() {
    let fake = FakeOpenAi::start(KEY).await;
    // Created at once, answered 20 s later: the kill lands after the job
    // exists at the provider and before the daemon could commit its id.
    fake.script_creates(vec![CreateStep::Hang(Duration::from_secs(20))]);
    let env = Env::sqlite(&fake.base_url(), SUBMIT);
    env.edit_config("timeout = \"2s\"", "timeout = \"30s\"");
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    queued(&db, "job_ans", "sora-2").await;
    let d = env.start("answered");
    eventually(
        Duration::from_secs(30),
        "created at the provider",
        || async { (fake.create_requests().len() == 1).then_some(()) },
    )
    .await;
    d.kill9();
    let _d2 = env.start("answered-restart");
    wait_status(&db, "job_ans", "needs_operator", Duration::from_secs(30)).await;
    assert_eq!(fake.create_requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn kling_recovers_an_interrupted_submission_by_lookup() {
    let fake = FakeKling::start(KLING.0, KLING.1).await;
    fake.set_default_script(CommonScript::succeeds_after(0));
    let env = kling_env(&fake);
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();

    // Crash while the create is held open; the provider then creates it.
    fake.hold_creates(true);
    queued(&db, "job_k1", "kling-v1").await;
    let d = start_kling(&env, "kling");
    eventually(Duration::from_secs(30), "create in flight", || async {
        (fake.held_creates() == 1).then_some(())
    })
    .await;
    d.kill9();
    fake.hold_creates(false);
    let key1 = db
        .job("job_k1")
        .await
        .unwrap()
        .unwrap()
        .idempotency_key
        .unwrap();
    eventually(Duration::from_secs(10), "created", || async {
        (fake.creates(&key1) == 1).then_some(())
    })
    .await;

    // Crash after the provider answered but before the commit.
    fake.script_creates(vec![CreateStep::Hang(Duration::from_secs(20))]);
    queued(&db, "job_k2", "kling-v1").await;
    let d = start_kling(&env, "kling2");
    eventually(Duration::from_secs(30), "second created", || async {
        (fake.create_requests().len() == 2).then_some(())
    })
    .await;
    d.kill9();
    let key2 = db
        .job("job_k2")
        .await
        .unwrap()
        .unwrap()
        .idempotency_key
        .unwrap();

    let _d = start_kling(&env, "kling3");
    let ids = vec!["job_k1".to_owned(), "job_k2".to_owned()];
    eventually(Duration::from_secs(60), "both completed", || async {
        all_final(&db, &ids).await.then_some(())
    })
    .await;
    for (id, key) in [("job_k1", &key1), ("job_k2", &key2)] {
        let j = db.job(id).await.unwrap().unwrap();
        assert_eq!(j.status, "completed", "{id}: {:?}", j.last_error);
        assert_eq!(fake.creates(key), 1, "{id}: created exactly once");
        let ev = db.events(id).await.unwrap();
        assert!(
            ev.iter()
                .any(|e| e.to_status == "pending" && e.detail.contains("recovered by lookup")),
            "{id}: {ev:?}"
        );
    }
    assert_eq!(fake.create_requests().len(), 2, "no second submission");
}

/// Issue 9, item 4: a request missing a field its provider requires fails
/// at once, naming the field, through the daemon's existing "invalid job
/// request" path (`SubmitFailure::Rejected`), and no create is sent: the
/// fakes see no request at all. A complete request next to it is created.
#[tokio::test(flavor = "multi_thread")]
async fn requests_missing_a_required_field_fail_before_any_create() {
    use clawcut_test_support::fake_luma::FakeLuma;
    use clawcut_test_support::fake_runway::FakeRunway;
    let runway = FakeRunway::start(KEY).await;
    let luma = FakeLuma::start(KEY).await;
    let extra = format!(
        "{SUBMIT}\n[providers.runway]\nkind = \"runway\"\nbase_url = \"{}\"\napi_key_env = \"E2E_OPENAI_KEY\"\ntimeout = \"2s\"\n\n[providers.luma]\nkind = \"luma\"\nbase_url = \"{}\"\napi_key_env = \"E2E_OPENAI_KEY\"\ntimeout = \"2s\"\n",
        runway.base_url(),
        luma.base_url()
    );
    let env = Env::sqlite("http://127.0.0.1:9", &extra);
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let t = now_ms() - 600_000;
    let jobs = [
        ("job_rw_nomodel", "runway", r#"{"prompt":"a fox"}"#),
        (
            "job_rw_noratio",
            "runway",
            r#"{"prompt":"a fox","model":"gen4.5","seconds":5}"#,
        ),
        ("job_luma_nomodel", "luma", r#"{"prompt":"a fox"}"#),
    ];
    for (id, provider, request) in jobs {
        let scene = format!("scene_{id}");
        let version = format!("ver_{id}");
        let _ = db.insert_scene(&scene, "s").await;
        db.insert_version(&version, &scene, t).await.unwrap();
        db.insert_job(&NewJob {
            provider: provider.into(),
            scene_id: Some(scene),
            scene_version_id: Some(version),
            request: request.into(),
            ..NewJob::video(id, "queued", None, t)
        })
        .await
        .unwrap();
    }
    let d = env.start("required-fields");
    for (id, field) in [
        ("job_rw_nomodel", "`model`"),
        ("job_rw_noratio", "`ratio`"),
        ("job_luma_nomodel", "`model`"),
    ] {
        wait_status(&db, id, "failed", Duration::from_secs(30)).await;
        let err = db.job(id).await.unwrap().unwrap().last_error.unwrap();
        assert!(
            err.contains("invalid job request") && err.contains(field),
            "{id}: {err}"
        );
    }
    assert_eq!(runway.total_requests(), 0, "no runway create was sent");
    assert_eq!(luma.total_requests(), 0, "no luma create was sent");
    drop(d);
}
