//! The redaction rule end to end: signed URLs, a webhook token, a database
//! password, the admin token and API keys are fed into every failure path
//! the suite can reach (connect refused, 500, a redirect the policy
//! refuses, a submit that cannot connect, a poll that times out), then the
//! daemon's log, the database file and every CLI and API answer are
//! searched for them.

use std::time::Duration;

use clawcut_test_support::db::{AppDb, NewJob};
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};

use crate::support::*;

const SIG: &str = "sigSECRETa1b2c3d4e5f6";
const WEBHOOK: &str = "whTOKENsecret-0987654321";
const DB_PASSWORD: &str = "dbPASSWORDsecret-4242";

fn all_secrets() -> [&'static str; 5] {
    [KEY, ADMIN_TOKEN, SIG, WEBHOOK, DB_PASSWORD]
}

fn assert_clean(what: &str, text: &str) {
    for s in all_secrets() {
        assert!(!text.contains(s), "{s:?} leaked into {what}:\n{text}");
    }
}

fn closed_port() -> u16 {
    free_port()
}

async fn job(db: &AppDb, id: &str, provider: &str, status: &str, pid: Option<&str>, request: &str) {
    let t = now_ms() - 600_000;
    let (scene, version) = (format!("scene_{id}"), format!("ver_{id}"));
    let _ = db.insert_scene(&scene, "s").await;
    db.insert_version(&version, &scene, t).await.unwrap();
    db.insert_job(&NewJob {
        id: id.into(),
        kind: "video".into(),
        provider: provider.into(),
        scene_id: Some(scene),
        scene_version_id: Some(version),
        request: request.into(),
        status: status.into(),
        provider_job_id: pid.map(Into::into),
        created_at: t,
        updated_at: t,
    })
    .await
    .unwrap();
}

on_both_backends!(no_secret_leaves_the_process_on_any_failure_path);

async fn no_secret_leaves_the_process_on_any_failure_path(backend: Backend) {
    let fake = FakeOpenAi::start(KEY).await;
    let refused = closed_port();
    // A signed CDN URL on a host that refuses the connection.
    fake.script(
        "video_refused",
        Script::completes_after(0).with_redirect_content_to(format!(
            "http://127.0.0.1:{refused}/v.mp4?X-Amz-Signature={SIG}&X-Amz-Credential=c"
        )),
    );
    // A signed URL the download policy refuses.
    fake.script(
        "video_elsewhere",
        Script::completes_after(0).with_redirect_content_to(format!(
            "http://elsewhere.invalid/v.mp4?X-Amz-Signature={SIG}"
        )),
    );
    fake.script(
        "video_500",
        Script::completes_after(0).with_content_status(500),
    );
    // A provider that accepts and never answers: polls time out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let port = free_port();
    let fal_port = closed_port();
    let extra = format!(
        "[submit]\nenabled = true\n\n[providers.fal]\nkind = \"fal\"\nbase_url = \"http://127.0.0.1:{fal_port}\"\napi_key_env = \"E2E_OPENAI_KEY\"\nwebhook_secret_env = \"E2E_WH\"\ntimeout = \"1s\"\n\n[providers.luma]\nkind = \"luma\"\nbase_url = \"http://127.0.0.1:{silent_port}\"\napi_key_env = \"E2E_OPENAI_KEY\"\ntimeout = \"500ms\"\n"
    );
    let Some(env) = env_for(backend, "secrets", &fake.base_url(), &extra) else {
        return;
    };
    env.edit_config(
        "timeout = \"2s\"",
        &format!("timeout = \"2s\"\nallowed_download_hosts = [\"127.0.0.1:{refused}\"]"),
    );
    env.edit_config(
        "[http]\nlisten = \"\"",
        &format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\nadmin_token_env = \"E2E_ADMIN\"\npublic_url = \"http://127.0.0.1:{port}\""
        ),
    );
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let openai_req = r#"{"prompt":"p","model":"sora-2","seconds":"4","size":"1280x720"}"#;
    for (id, pid) in [
        ("job_refused", "video_refused"),
        ("job_elsewhere", "video_elsewhere"),
        ("job_500", "video_500"),
    ] {
        job(&db, id, "openai", "processing", Some(pid), openai_req).await;
    }
    job(
        &db,
        "job_fal",
        "fal",
        "queued",
        None,
        r#"{"prompt":"p","model":"fal-ai/veo3/fast"}"#,
    )
    .await;
    job(
        &db,
        "job_luma",
        "luma",
        "processing",
        Some("gen_1"),
        r#"{"prompt":"p"}"#,
    )
    .await;

    let daemon = env.start_with("secrets", |c| {
        c.env("E2E_ADMIN", ADMIN_TOKEN).env("E2E_WH", WEBHOOK);
    });
    let ids = [
        "job_refused",
        "job_elsewhere",
        "job_500",
        "job_fal",
        "job_luma",
    ];
    eventually(
        Duration::from_secs(60),
        "every job has met its failure",
        || async {
            for id in ids {
                db.job(id).await.ok()??.last_error?;
            }
            Some(())
        },
    )
    .await;
    // The failures are really the ones this test is about.
    let errors: Vec<String> = {
        let mut v = Vec::new();
        for id in ids {
            v.push(db.job(id).await.unwrap().unwrap().last_error.unwrap());
        }
        v
    };
    eprintln!("last_error of each job: {errors:#?}");
    assert!(errors[0].contains("127.0.0.1"), "{}", errors[0]);
    assert!(errors[1].contains("not allowed"), "{}", errors[1]);
    assert!(errors[2].contains("500"), "{}", errors[2]);

    // API answers.
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for path in [
        "/v1/jobs?state=stranded",
        "/v1/jobs?state=needs_operator",
        "/readyz",
        "/metrics",
    ] {
        let text = client
            .get(format!("{base}{path}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_clean(path, &text);
    }
    let r = client
        .post(format!("{base}/v1/reconcile"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "ai_job_id": "job_refused" }))
        .send()
        .await
        .unwrap();
    assert_clean("POST /v1/reconcile", &r.text().await.unwrap());

    // CLI answers.
    for args in [
        &["status", "--json"][..],
        &["status"],
        &["reconcile", "--json", "--job", "job_elsewhere"],
        &["reconcile", "--job", "job_500"],
        &["check-config"],
    ] {
        let o = env
            .cmd(args)
            .env("E2E_ADMIN", ADMIN_TOKEN)
            .env("E2E_WH", WEBHOOK)
            .output()
            .unwrap();
        assert_clean(
            &format!("{args:?} stdout"),
            &String::from_utf8_lossy(&o.stdout),
        );
        assert_clean(
            &format!("{args:?} stderr"),
            &String::from_utf8_lossy(&o.stderr),
        );
    }
    // Every table: on PostgreSQL each row as text, on SQLite the file's
    // bytes (the WAL too, so a row since overwritten still counts).
    drop(daemon);
    if let AppDb::Pg(pool) = &db {
        for table in [
            "ai_jobs",
            "ai_job_events",
            "scene_versions",
            "scenes",
            "clawcut_webhook_deliveries",
        ] {
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT t::text FROM {table} t"
            )))
            .fetch_all(pool)
            .await
            .unwrap();
            assert!(table != "ai_jobs" || rows.len() == 5, "{rows:?}");
            assert_clean(table, &rows.join("\n"));
        }
    }
    db.close().await;
    for f in files_under(env.dir.path()) {
        let name = f.display().to_string();
        if name.contains("clawcut.db") || name.ends_with(".log") {
            let bytes = std::fs::read(&f).unwrap();
            assert_clean(&name, &String::from_utf8_lossy(&bytes));
        }
    }
    drop(silent);
}

#[test]
fn the_database_password_is_not_printed() {
    let env = Env::sqlite("http://127.0.0.1:9", "");
    let url = format!(
        "postgres://clawcut:{DB_PASSWORD}@127.0.0.1:{}/app?sslmode=disable&password={DB_PASSWORD}",
        closed_port()
    );
    let sqlite_url = env.db_url.clone();
    env.edit_config(&sqlite_url, &url);
    for args in [
        &["check-config"][..],
        &["migrate"],
        &["run"],
        &["status", "--json"],
    ] {
        let o = env.output(args);
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert_clean(&format!("{args:?} stdout"), &out);
        assert_clean(&format!("{args:?} stderr"), &err);
        if args == ["check-config"] {
            assert!(out.contains("postgres://***@127.0.0.1"), "{out}");
        }
    }
}
