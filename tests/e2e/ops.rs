//! The operator panel over HTTP against the real binary, on SQLite and on
//! PostgreSQL: sign-in and its refusals, the read-only token's 403 on
//! every action, CSRF and Origin, each action and its audit event, the
//! clip served by ranges and verified, the NDJSON export, and a bulk retry
//! that skips the job changed after its preview. (`panel.rs` drives the
//! same panel in a real browser.)

use std::time::Duration;

use clawcut_test_support::db::AppDb;
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};
use serde_json::Value;

use crate::support::*;

const READONLY: &str = "ro-e2e-token-1a2b3c4d5e6f";

/// A signed-in (or not) client of the panel, as a browser without
/// JavaScript would be (also used by `objstore.rs`).
pub(crate) struct Browser {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    cookie: Option<String>,
}

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) location: Option<String>,
    set_cookie: Option<String>,
    pub(crate) body: String,
    pub(crate) raw: Vec<u8>,
    pub(crate) headers: reqwest::header::HeaderMap,
}

impl Browser {
    pub(crate) fn new(port: u16) -> Browser {
        Browser {
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    fn origin(&self) -> String {
        self.base.clone()
    }

    pub(crate) async fn send(&self, r: reqwest::RequestBuilder) -> Answer {
        let r = match &self.cookie {
            Some(c) => r.header("cookie", c),
            None => r,
        };
        let resp = r.send().await.unwrap();
        let h = |k: &str| {
            resp.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (location, set_cookie) = (h("location"), h("set-cookie"));
        let headers = resp.headers().clone();
        let status = resp.status().as_u16();
        let raw = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Answer {
            status,
            location,
            set_cookie,
            body: String::from_utf8_lossy(&raw).into_owned(),
            raw,
            headers,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    /// A form POST as a browser on this origin sends it.
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.post_from(path, form, Some(&self.origin())).await
    }

    async fn post_from(&self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Answer {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        self.send(r).await
    }

    pub(crate) async fn sign_in(&mut self, token: &str, name: &str) -> Answer {
        let a = self
            .post("/ops/login", &[("token", token), ("operator", name)])
            .await;
        if let Some(c) = &a.set_cookie {
            self.cookie = Some(c.split(';').next().unwrap().to_owned());
        }
        a
    }

    /// The CSRF token the signed-in pages carry.
    async fn csrf(&self) -> String {
        let page = self.get("/ops").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let at = page
            .body
            .find("name=\"csrf\" value=\"")
            .expect("the page carries a csrf field");
        let rest = &page.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

fn sql_ts(backend: Backend, ms: i64) -> String {
    match backend {
        Backend::Sqlite => ms.to_string(),
        Backend::Postgres => format!("to_timestamp({ms}::float8 / 1000.0)"),
    }
}

async fn panel_end_to_end(backend: Backend) {
    let fake = FakeOpenAi::start(KEY).await;
    fake.script("video_done", Script::completes_after(0));
    fake.set_default_script(Script::completes_after(100_000));
    let Some(env) = env_for(backend, "ops_panel", &fake.base_url(), "") else {
        return;
    };
    let port = free_port();
    env.edit_config(
        "[http]\nlisten = \"\"",
        &format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\nadmin_token_env = \"E2E_ADMIN\"\nreadonly_token_env = \"E2E_READONLY\""
        ),
    );
    // Nothing due on its own: only the operator's actions move jobs.
    env.edit_config("interval = \"300ms\"", "interval = \"1h\"");
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let t = now_ms() - 600_000;
    seed_job(&db, "job_done", "scene_d", "ver_d", "video_done", t).await;
    seed_job(&db, "job_run", "scene_r", "ver_r", "video_run", t).await;
    seed_job(&db, "job_no", "scene_n", "ver_n", "video_no", t).await;
    let far = sql_ts(backend, now_ms() + 3_600_000);
    for j in ["job_no"] {
        db.exec(&format!(
            "UPDATE ai_jobs SET status = 'needs_operator', idempotency_key = 'idem-{j}', last_error = 'submission outcome unknown' WHERE id = '{j}'"
        ))
        .await
        .unwrap();
    }
    let group: Vec<String> = (0..3).map(|i| format!("job_g{i}")).collect();
    for (i, j) in group.iter().enumerate() {
        seed_job(
            &db,
            j,
            &format!("scene_g{i}"),
            &format!("ver_g{i}"),
            &format!("video_g{i}"),
            t,
        )
        .await;
        db.exec(&format!(
            "UPDATE ai_jobs SET status = 'pending', attempts = 2, next_attempt_at = {far}, last_error = 'Server(503): upstream unavailable' WHERE id = '{j}'"
        ))
        .await
        .unwrap();
    }
    // job_done and job_run wait far in the future too: only a reconcile
    // the operator asks for takes them.
    db.exec(&format!(
        "UPDATE ai_jobs SET next_attempt_at = {far} WHERE id IN ('job_done', 'job_run')"
    ))
    .await
    .unwrap();

    let daemon = env.start_with("ops", |c| {
        c.env("E2E_ADMIN", ADMIN_TOKEN)
            .env("E2E_READONLY", READONLY);
    });
    let mut anon = Browser::new(port);
    eventually(Duration::from_secs(20), "the panel answers", || async {
        let r = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
        r.is_ok_and(|r| r.status() == 200).then_some(())
    })
    .await;

    // Deny by default: a page sends to the sign-in form, an action is 401.
    let a = anon.get("/ops").await;
    assert_eq!((a.status, a.location.as_deref()), (303, Some("/ops/login")));
    assert_eq!(anon.post("/ops/reconcile", &[]).await.status, 401);
    let a = anon.get("/ops/login").await;
    assert_eq!(a.status, 200);
    let csp = a.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    // A wrong token: 401, the form again, no cookie.
    let a = anon.sign_in("wrong-token-000000000", "mallory").await;
    assert_eq!(a.status, 401);
    assert!(a.body.contains("wrong token"));
    assert!(a.set_cookie.is_none());
    assert!(anon.cookie.is_none());

    // Read-only: looks, and every action is 403 with its own valid csrf.
    let mut ro = Browser::new(port);
    let a = ro.sign_in(READONLY, "Rita").await;
    assert_eq!(a.status, 303, "{}", a.body);
    let cookie = a.set_cookie.unwrap();
    for part in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Max-Age=",
        "Path=/ops",
    ] {
        assert!(cookie.contains(part), "{cookie} lacks {part}");
    }
    let csrf = ro.csrf().await;
    assert_eq!(ro.get("/ops/jobs?view=stranded").await.status, 200);
    let before = db.all_events().await.unwrap().len();
    for (path, form) in [
        ("/ops/reconcile", vec![]),
        ("/ops/jobs/job_done/reconcile", vec![]),
        ("/ops/jobs/job_run/cancel", vec![("reason", "x")]),
        (
            "/ops/jobs/job_no/resolve",
            vec![("action", "fail"), ("reason", "x")],
        ),
        ("/ops/bulk", vec![("snapshot", "whatever")]),
    ] {
        let mut f = form.clone();
        f.push(("csrf", &csrf));
        assert_eq!(ro.post(path, &f).await.status, 403, "read-only POST {path}");
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let v1 = |m: reqwest::Method, p: &str| {
        client
            .request(m, format!("http://127.0.0.1:{port}{p}"))
            .bearer_auth(READONLY)
    };
    assert_eq!(
        v1(reqwest::Method::GET, "/v1/jobs?state=stranded")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        v1(reqwest::Method::POST, "/v1/reconcile")
            .body("{}")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        v1(reqwest::Method::POST, "/v1/jobs/job_run/cancel")
            .body("{}")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        db.all_events().await.unwrap().len(),
        before,
        "nothing was written"
    );

    // The admin: CSRF and Origin are checked on every action.
    let mut admin = Browser::new(port);
    assert_eq!(admin.sign_in(ADMIN_TOKEN, "Ann").await.status, 303);
    let csrf = admin.csrf().await;
    assert_eq!(
        admin
            .post("/ops/jobs/job_run/cancel", &[("reason", "x")])
            .await
            .status,
        403,
        "no csrf"
    );
    assert_eq!(
        admin
            .post(
                "/ops/jobs/job_run/cancel",
                &[("reason", "x"), ("csrf", "0000")]
            )
            .await
            .status,
        403,
        "wrong csrf"
    );
    assert_eq!(
        admin
            .post_from(
                "/ops/jobs/job_run/cancel",
                &[("reason", "x"), ("csrf", &csrf)],
                Some("http://evil.example")
            )
            .await
            .status,
        403,
        "another origin"
    );
    assert_eq!(
        admin
            .post_from(
                "/ops/jobs/job_run/cancel",
                &[("reason", "x"), ("csrf", &csrf)],
                None
            )
            .await
            .status,
        403,
        "no origin at all"
    );
    assert_eq!(
        db.job("job_run").await.unwrap().unwrap().status,
        "processing"
    );
    // The other session's csrf is not this one's.
    let ro_csrf = ro.csrf().await;
    assert_eq!(
        admin
            .post("/ops/jobs/job_run/cancel", &[("csrf", &ro_csrf)])
            .await
            .status,
        403
    );

    // The stranded list shows them; reconcile one and it completes.
    let list = admin.get("/ops/jobs?view=stranded").await;
    assert!(list.body.contains("data-job=\"job_done\""), "{}", list.body);
    let page = admin.get("/ops/jobs/job_done/reconcile").await;
    assert!(page.body.contains("id=\"confirm\""));
    let a = admin
        .post("/ops/jobs/job_done/reconcile", &[("csrf", &csrf)])
        .await;
    assert_eq!(a.status, 303);
    assert!(a.location.unwrap().starts_with("/ops/jobs/job_done"));
    eventually(Duration::from_secs(20), "job_done completed", || async {
        let j = db.job("job_done").await.unwrap().unwrap();
        (j.status == "completed").then_some(())
    })
    .await;
    let ev = db.events("job_done").await.unwrap();
    assert!(
        ev.iter()
            .any(|e| e.worker_id == "ops:Ann" && e.detail.contains("operator_reconcile")),
        "the reconcile is audited with the operator: {ev:?}"
    );

    // Its page: status, checksum; the clip by ranges; verify; export.
    let page = admin.get("/ops/jobs/job_done").await;
    assert!(page.body.contains("data-status=\"completed\""));
    let row = db.job("job_done").await.unwrap().unwrap();
    let sha = row.video_sha256.clone().unwrap();
    assert!(page.body.contains(&sha), "the page shows the sha256");
    let file = std::fs::read(row.video_path.as_ref().unwrap()).unwrap();
    let r = admin
        .send(
            admin
                .client
                .get(format!("{}/ops/jobs/job_done/video", admin.base))
                .header("range", "bytes=0-9"),
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.headers["content-range"].to_str().unwrap(),
        format!("bytes 0-9/{}", file.len())
    );
    assert_eq!(r.raw, &file[..10]);
    let r = admin
        .send(
            admin
                .client
                .get(format!("{}/ops/jobs/job_done/video", admin.base))
                .header("range", format!("bytes={}-", file.len())),
        )
        .await;
    assert_eq!(r.status, 416);
    assert!(
        admin
            .get("/ops/jobs/job_done/verify")
            .await
            .body
            .contains("data-ok=\"true\"")
    );
    let export = admin.get("/ops/jobs/job_done/events.ndjson").await;
    assert_eq!(export.status, 200);
    let lines: Vec<Value> = export
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), ev.len());
    assert!(lines.iter().any(|l| l["to_status"] == "completed"));
    // A file changed behind the daemon's back no longer verifies.
    let mut bad = file.clone();
    bad[0] ^= 0xff;
    std::fs::write(row.video_path.as_ref().unwrap(), &bad).unwrap();
    assert!(
        admin
            .get("/ops/jobs/job_done/verify")
            .await
            .body
            .contains("data-ok=\"false\"")
    );
    // The anonymous cannot fetch it.
    assert_eq!(anon.get("/ops/jobs/job_done/video").await.status, 303);

    // Resolve a needs_operator job: a reason is required and recorded.
    let page = admin.get("/ops/jobs/job_no/resolve?action=resubmit").await;
    assert!(page.body.contains("resubmit-warning"), "{}", page.body);
    let a = admin
        .post(
            "/ops/jobs/job_no/resolve",
            &[("csrf", &csrf), ("action", "resubmit"), ("reason", " ")],
        )
        .await;
    assert_eq!(a.status, 400);
    let a = admin
        .post(
            "/ops/jobs/job_no/resolve",
            &[
                ("csrf", &csrf),
                ("action", "resubmit"),
                ("reason", "provider confirmed it never started"),
            ],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.body);
    let j = db.job("job_no").await.unwrap().unwrap();
    assert_eq!(j.status, "queued");
    let ev = db.events("job_no").await.unwrap();
    let last = ev.last().unwrap();
    assert_eq!(last.worker_id, "ops:Ann");
    let d: Value = serde_json::from_str(&last.detail).unwrap();
    assert_eq!(d["reason"], "provider confirmed it never started");

    // Bulk: preview freezes the group; one job changes; confirm skips it.
    let overview = admin.get("/ops").await;
    assert!(
        overview.body.contains("class=\"error-group\""),
        "{}",
        overview.body
    );
    let preview = admin
        .get("/ops/bulk/new?group=openai%7CServer%28503%29%3A")
        .await;
    assert_eq!(preview.status, 200, "{}", preview.body);
    assert!(
        preview.body.contains("id=\"bulk-count\">3<"),
        "{}",
        preview.body
    );
    let at = preview.body.find("name=\"snapshot\" value=\"").unwrap();
    let rest = &preview.body[at + "name=\"snapshot\" value=\"".len()..];
    let snapshot = rest[..rest.find('"').unwrap()].to_owned();
    let a = admin
        .post(
            "/ops/jobs/job_g1/cancel",
            &[("csrf", &csrf), ("reason", "wrong prompt")],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.body);
    let a = admin
        .post(
            "/ops/bulk",
            &[
                ("csrf", &csrf),
                ("snapshot", &snapshot),
                ("reason", "503s are over"),
            ],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.body);
    let run = a.location.unwrap();
    let done = eventually(Duration::from_secs(20), "the bulk run ends", || async {
        let p = admin.get(&run).await;
        p.body.contains("data-state=\"done\"").then_some(p.body)
    })
    .await;
    assert!(done.contains("id=\"bulk-done\">2<"), "{done}");
    assert!(done.contains("id=\"bulk-skipped\">1<"), "{done}");
    assert!(done.contains("id=\"bulk-failed\">0<"), "{done}");
    for j in ["job_g0", "job_g2"] {
        let ev = db.events(j).await.unwrap();
        assert!(
            ev.iter().any(|e| e.worker_id == "ops:Ann"
                && e.detail.contains("operator_retry")
                && e.detail.contains("503s are over")),
            "{j}: {ev:?}"
        );
    }
    assert_eq!(db.job("job_g1").await.unwrap().unwrap().status, "canceled");
    assert!(
        !db.events("job_g1")
            .await
            .unwrap()
            .iter()
            .any(|e| e.detail.contains("operator_retry")),
        "the changed job was skipped"
    );
    // A snapshot runs once.
    let a = admin
        .post("/ops/bulk", &[("csrf", &csrf), ("snapshot", &snapshot)])
        .await;
    assert_eq!(a.status, 409);

    // A bearer request needs no csrf (no ambient credential).
    let r = client
        .post(format!("http://127.0.0.1:{port}/ops/jobs/job_run/cancel"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("reason=by+api")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(db.job("job_run").await.unwrap().unwrap().status, "canceled");

    // Sign-out ends the session.
    let a = admin.post("/ops/logout", &[]).await;
    assert_eq!(a.status, 303);
    assert!(a.set_cookie.unwrap().contains("Max-Age=0"));
    assert_eq!(admin.get("/ops").await.status, 303);

    let logs = daemon.logs();
    for secret in [ADMIN_TOKEN, READONLY, KEY] {
        assert!(!logs.contains(secret), "a token reached the log");
    }
}

on_both_backends!(panel_end_to_end);

/// Failed sign-ins slow down: the third wrong token from one address waits.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_wrong_tokens_are_slowed() {
    let env = Env::sqlite("http://127.0.0.1:9", "");
    let port = env.serve_admin_api();
    env.migrate();
    let _daemon = env.start_with("ops_throttle", |c| {
        c.env("E2E_ADMIN", ADMIN_TOKEN);
    });
    let mut b = Browser::new(port);
    eventually(Duration::from_secs(20), "the panel answers", || async {
        let r = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
        r.is_ok_and(|r| r.status() == 200).then_some(())
    })
    .await;
    for _ in 0..2 {
        assert_eq!(b.sign_in("nope-nope-nope-nope", "x").await.status, 401);
    }
    let started = std::time::Instant::now();
    assert_eq!(b.sign_in("nope-nope-nope-nope", "x").await.status, 401);
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "the third failure waited {:?}",
        started.elapsed()
    );
    // The right token still gets in (after its wait).
    assert_eq!(b.sign_in(ADMIN_TOKEN, "Ann").await.status, 303);
}
