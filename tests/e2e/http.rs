//! The HTTP surface against the real server: probes, metrics, the admin API.

use std::time::Duration;

use clawcut_test_support::db::{AppDb, NewJob};
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};
use serde_json::{Value, json};

use crate::support::*;

struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    fn new(port: u16) -> Http {
        Http {
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut r = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        match r.send().await {
            Ok(resp) => (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, String) {
        let mut r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.unwrap();
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    }
}

fn fresh_job(id: &str, status: &str, provider_job_id: Option<&str>) -> NewJob {
    let now = now_ms();
    NewJob {
        id: id.into(),
        kind: "video".into(),
        provider: "openai".into(),
        scene_id: Some(format!("scene_{id}")),
        scene_version_id: Some(format!("ver_{id}")),
        request: "{}".into(),
        status: status.into(),
        provider_job_id: provider_job_id.map(Into::into),
        created_at: now,
        updated_at: now,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_metrics_and_the_admin_api() {
    let fake = FakeOpenAi::start(KEY).await;
    fake.script("video_x", Script::completes_after(0));
    let env = Env::sqlite(&fake.base_url(), "");
    let port = env.serve_admin_api();
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    for j in ["job_x", "job_sub"] {
        let _ = db.insert_scene(&format!("scene_{j}"), "s").await;
        db.insert_version(&format!("ver_{j}"), &format!("scene_{j}"), now_ms())
            .await
            .unwrap();
    }
    db.insert_job(&fresh_job("job_x", "pending", Some("video_x")))
        .await
        .unwrap();
    // Left in `submitting` by some crashed submitter, long ago.
    let mut sub = fresh_job("job_sub", "submitting", None);
    sub.updated_at -= 3_600_000;
    db.insert_job(&sub).await.unwrap();

    let _daemon = env.start_with("http", |c| {
        c.env("E2E_ADMIN", ADMIN_TOKEN);
    });
    let http = Http::new(port);
    eventually(Duration::from_secs(20), "/readyz 200", || async {
        (http.get("/readyz", None).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(http.get("/healthz", None).await.0, 200);
    let (code, metrics) = http.get("/metrics", None).await;
    assert_eq!(code, 200);
    for m in [
        "clawcut_worker_passes_total",
        "clawcut_worker_eligible_jobs",
        "clawcut_worker_pass_duration_seconds",
    ] {
        assert!(metrics.contains(m), "metrics lack {m}:\n{metrics}");
    }

    // Auth: missing and wrong tokens are 401, before any body is looked at.
    assert_eq!(http.post("/v1/reconcile", None, "{}").await.0, 401);
    assert_eq!(
        http.post("/v1/reconcile", Some("wrong-token"), "{}")
            .await
            .0,
        401
    );
    assert_eq!(
        http.get("/v1/jobs?state=stranded", Some("adm-e2e-token-9f8e7d6c5b4"))
            .await
            .0,
        401
    );
    // Oversized bodies are refused (just over the 16 KiB limit: a much
    // larger one is cut off mid-send when the server answers early).
    let big = format!("{{\"ai_job_id\": \"{}\"}}", "x".repeat(17 * 1024));
    assert_eq!(
        http.post("/v1/reconcile", Some(ADMIN_TOKEN), big).await.0,
        413
    );
    assert_eq!(
        http.post("/v1/reconcile", Some(ADMIN_TOKEN), "{\"nope\":1}")
            .await
            .0,
        400
    );

    // The submitting job became needs_operator at the startup pass.
    let (code, body) = eventually(Duration::from_secs(20), "needs_operator listed", || async {
        let (c, b) = http
            .get("/v1/jobs?state=needs_operator", Some(ADMIN_TOKEN))
            .await;
        b.contains("job_sub").then_some((c, b))
    })
    .await;
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["jobs"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("resolve job_sub"),
        "{v}"
    );
    assert_eq!(
        http.get("/v1/jobs?state=bogus", Some(ADMIN_TOKEN)).await.0,
        400
    );

    // Targeted reconcile of one fresh job (min_age would keep the loop away).
    let (code, body) = http
        .post(
            "/v1/reconcile",
            Some(ADMIN_TOKEN),
            json!({"ai_job_id": "job_x"}).to_string(),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["jobs"][0]["job_id"], "job_x", "{v}");
    assert_eq!(v["jobs"][0]["action"], "completed", "{v}");
    assert_eq!(db.job("job_x").await.unwrap().unwrap().status, "completed");
    let (code, _) = http
        .post(
            "/v1/reconcile",
            Some(ADMIN_TOKEN),
            json!({"ai_job_id": "job_x"}).to_string(),
        )
        .await;
    assert_eq!(code, 409, "a final job is not reconciled again");
    let (code, body) = http.post("/v1/reconcile", Some(ADMIN_TOKEN), "{}").await;
    assert_eq!(code, 200, "{body}");

    // The operator's decision, with its audit event.
    let (code, body) = http
        .post(
            "/v1/jobs/job_sub/resolve",
            Some(ADMIN_TOKEN),
            json!({"action": "fail", "operator": "alice"}).to_string(),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(db.job("job_sub").await.unwrap().unwrap().status, "failed");
    let ev = db.events("job_sub").await.unwrap();
    assert!(
        ev.iter()
            .any(|e| e.to_status == "failed" && e.worker_id.contains("alice")),
        "{ev:?}"
    );
    let (code, _) = http
        .post(
            "/v1/jobs/job_sub/resolve",
            Some(ADMIN_TOKEN),
            json!({"action": "fail"}).to_string(),
        )
        .await;
    assert_eq!(code, 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_routes_are_off_without_a_token_and_public_listen_needs_one() {
    let env = Env::sqlite("http://127.0.0.1:9", "");
    let port = free_port();
    env.edit_config(
        "[http]\nlisten = \"\"",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\""),
    );
    env.migrate();
    let _daemon = env.start("notoken");
    let http = Http::new(port);
    eventually(Duration::from_secs(20), "/healthz", || async {
        (http.get("/healthz", None).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(
        http.post("/v1/reconcile", Some("anything"), "{}").await.0,
        404
    );

    let env2 = Env::sqlite("http://127.0.0.1:9", "");
    env2.edit_config("[http]\nlisten = \"\"", "[http]\nlisten = \"0.0.0.0:0\"");
    env2.migrate();
    let o = env2.output(&["run"]);
    assert_eq!(
        o.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("non-loopback"));
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_database() {
    // It stops the shared cluster: the other PostgreSQL tests wait their turn.
    let _turn = pg_turn().await;
    let Some(pg) = clawcut_test_support::pg::require() else {
        return;
    };
    let url = pg.fresh_db("readyz");
    let dir = tempfile::tempdir().unwrap();
    let env = Env::with_url(dir, url, "http://127.0.0.1:9", "");
    let port = free_port();
    env.edit_config(
        "[http]\nlisten = \"\"",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\""),
    );
    env.edit_config("interval = \"300ms\"", "interval = \"300ms\"");
    env.migrate();
    let daemon = env.start("readyz");
    let http = Http::new(port);
    eventually(Duration::from_secs(20), "ready", || async {
        (http.get("/readyz", None).await.0 == 200).then_some(())
    })
    .await;
    pg.stop();
    let body = eventually(
        Duration::from_secs(30),
        "503 while the database is down",
        || async {
            let (c, b) = http.get("/readyz", None).await;
            (c == 503).then_some(b)
        },
    )
    .await;
    assert!(body.contains("database"), "{body}");
    assert!(
        !body.contains("database: unavailable"),
        "a local client sees the database's own words: {body}"
    );
    // Through a proxy (or from the network) only the generic reason shows.
    let proxied: Value = http
        .client
        .get(format!("{}/readyz", http.base))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        matches!(
            proxied["reason"].as_str(),
            Some("database: unavailable" | "database: no answer within 2s")
        ),
        "{proxied}"
    );
    assert_eq!(
        http.get("/healthz", None).await.0,
        200,
        "liveness is not readiness"
    );
    pg.start();
    eventually(
        Duration::from_secs(60),
        "200 again once the database is back",
        || async { (http.get("/readyz", None).await.0 == 200).then_some(()) },
    )
    .await;
    let logs = daemon.logs();
    assert!(
        logs.contains("readiness: not ready") && logs.contains("readiness: ready"),
        "the outage is in the logs:\n{logs}"
    );
}
