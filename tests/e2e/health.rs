//! Provider health (SPEC, "Provider health") against the real binary: a
//! provider down for everyone, a refused key, an account out of credit.
//! Each pauses only its provider, no job fails or spends attempts while it
//! lasts, the pause shows in `status`, `/metrics`, `/readyz` and the log, a
//! second replica and the next start see it, and the provider resumes by
//! itself once it answers again.

use std::time::Duration;

use clawcut_test_support::db::{AppDb, NewJob};
use clawcut_test_support::fake_common::{Outage, Script as CoreScript};
use clawcut_test_support::fake_kling::FakeKling;
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};
use clawcut_test_support::fake_replicate::{FakeReplicate, Script as ReplicateScript};
use serde_json::Value;

use crate::support::*;

const KLING: (&str, &str) = ("ak-health-e2e", "sk-health-e2e-secret");

/// Fast backoff with few attempts, so "longer than max_attempts ×
/// backoff.max" is a few seconds; fast probes.
const FAST: &str = "[backoff]\ninitial = \"100ms\"\nmax = \"300ms\"\nmax_attempts = 3\n\n\
                    [provider_health]\noutage_after = 3\ncooldown = \"300ms\"\nmax_cooldown = \"600ms\"\n";

/// As [`FAST`], but the first probe is an hour away: only an operator
/// resumes within a test.
const SLOW_PROBE: &str = "[backoff]\ninitial = \"100ms\"\nmax = \"300ms\"\nmax_attempts = 3\n\n\
                          [provider_health]\noutage_after = 3\ncooldown = \"1h\"\nmax_cooldown = \"1h\"\n";

/// OpenAI's answer to a revoked key.
fn refused_key() -> Outage {
    Outage::new(
        401,
        r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#,
    )
}

/// Longer than max_attempts × backoff.max (3 × 300 ms), several times over.
const HOLD: Duration = Duration::from_secs(3);

fn job(id: &str, provider: &str, pid: &str) -> NewJob {
    let mut j = NewJob::video(id, "processing", Some(pid), now_ms() - 600_000);
    j.provider = provider.into();
    j.scene_id = Some(format!("scene_{id}"));
    j.scene_version_id = Some(format!("ver_{id}"));
    j
}

fn with_http(env: &Env) -> u16 {
    let port = free_port();
    env.edit_config("listen = \"\"", &format!("listen = \"127.0.0.1:{port}\""));
    port
}

async fn get(port: u16, path: &str) -> (u16, String) {
    match reqwest::get(format!("http://127.0.0.1:{port}{path}")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

fn status_json(env: &Env) -> Value {
    let out = env.output(&["status", "--json"]);
    assert!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn statuses(db: &AppDb, ids: &[&str]) -> Vec<(String, String, i64)> {
    let mut v = Vec::new();
    for id in ids {
        let j = db.job(id).await.unwrap().unwrap();
        v.push((j.id, j.status, j.attempts));
    }
    v
}

async fn all_completed(db: &AppDb, ids: &[&str]) -> bool {
    statuses(db, ids)
        .await
        .iter()
        .all(|(_, s, _)| s == "completed")
}

/// No job failed and none spent its last attempt.
async fn none_failed(db: &AppDb, ids: &[&str], max_attempts: i64) {
    for (id, status, attempts) in statuses(db, ids).await {
        assert!(
            !matches!(status.as_str(), "failed" | "needs_operator"),
            "{id} ended {status} while its provider was paused"
        );
        assert!(
            attempts < max_attempts,
            "{id} spent {attempts} of {max_attempts} attempts"
        );
    }
}

// ---------------------------------------------------------------------------
// A provider answering 503 to everything: paused after consecutive faults
// across jobs; another provider's jobs complete meanwhile.

async fn an_outage_pauses_only_that_provider(backend: Backend) {
    let openai = FakeOpenAi::start(KEY).await;
    let rep = FakeReplicate::start(KEY).await;
    let extra = format!(
        "{FAST}\n[providers.rep]\nkind = \"replicate\"\nbase_url = \"{}\"\napi_key_env = \"E2E_OPENAI_KEY\"\ntimeout = \"2s\"\n",
        rep.base_url()
    );
    let Some(env) = env_for(backend, "health_outage", &openai.base_url(), &extra) else {
        return;
    };
    let port = with_http(&env);
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let ours = ["o1", "o2", "o3", "o4"];
    for id in ours {
        openai.script(&format!("video_{id}"), Script::completes_after(1));
        db.insert_job_with_scene(&job(id, "openai", &format!("video_{id}")))
            .await
            .unwrap();
    }
    for id in ["r1", "r2"] {
        rep.script(&format!("pred_{id}"), ReplicateScript::succeeds_after(1));
        db.insert_job_with_scene(&job(id, "rep", &format!("pred_{id}")))
            .await
            .unwrap();
    }
    openai.set_outage(Some(Outage::new(
        503,
        r#"{"error":{"message":"The server is overloaded","type":"server_error","code":null}}"#,
    )));

    let d = env.start("outage");
    d.wait_log("provider paused", Duration::from_secs(20)).await;
    let logs = d.logs();
    assert!(
        logs.contains("cause=\"outage\"") || logs.contains("cause=outage"),
        "{logs}"
    );
    eventually(
        Duration::from_secs(20),
        "the other provider's jobs complete",
        || async { all_completed(&db, &["r1", "r2"]).await.then_some(()) },
    )
    .await;

    // While paused: visible everywhere, and ready all the same.
    let st = status_json(&env);
    let paused = st["paused_providers"].as_array().unwrap();
    assert_eq!(paused.len(), 1, "{st}");
    assert_eq!(paused[0]["provider"], "openai");
    assert_eq!(paused[0]["cause"], "outage");
    assert!(
        paused[0]["reason"].as_str().unwrap().contains("503"),
        "{st}"
    );
    let (code, ready) = eventually(
        Duration::from_secs(10),
        "/readyz shows the pause",
        || async {
            let (code, body) = get(port, "/readyz").await;
            body.contains("paused_providers\":[{")
                .then_some((code, body))
        },
    )
    .await;
    assert_eq!(
        code, 200,
        "a paused provider leaves the daemon ready: {ready}"
    );
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert!(
        ready["reason"]
            .as_str()
            .unwrap()
            .contains("provider openai paused (outage)"),
        "{ready}"
    );
    let (_, metrics) = get(port, "/metrics").await;
    assert!(
        metrics.contains("clawcut_worker_provider_up{provider=\"openai\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("clawcut_worker_provider_up{provider=\"rep\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("clawcut_worker_provider_paused{provider=\"openai\",cause=\"outage\"} 1"),
        "{metrics}"
    );

    tokio::time::sleep(HOLD).await;
    none_failed(&db, &ours, 3).await;
    let probes = d.logs().matches("probing a paused provider").count();
    assert!(probes >= 2, "probes retry after the cooldown: {probes}");

    openai.set_outage(None);
    eventually(
        Duration::from_secs(30),
        "every job completes after the outage",
        || async { all_completed(&db, &ours).await.then_some(()) },
    )
    .await;
    d.wait_log("provider resumed", Duration::from_secs(5)).await;
    assert_eq!(
        d.logs().matches("provider paused: ").count(),
        1,
        "one log line per change"
    );
    assert!(
        status_json(&env)["paused_providers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    eventually(Duration::from_secs(5), "provider_up back to 1", || async {
        get(port, "/metrics")
            .await
            .1
            .contains("clawcut_worker_provider_up{provider=\"openai\"} 1")
            .then_some(())
    })
    .await;
    for id in ours {
        assert_eq!(
            db.events(id)
                .await
                .unwrap()
                .iter()
                .filter(|e| e.to_status == "completed")
                .count(),
            1
        );
    }
    d.signal("TERM");
}
on_both_backends!(an_outage_pauses_only_that_provider);

// ---------------------------------------------------------------------------
// Account faults pause at once and never spend an attempt: a refused key
// (OpenAI 401), no credit (Replicate 402), Kling's resource pack used up.

struct AccountCase {
    name: &'static str,
    provider_section: String,
    cause: &'static str,
    set: Box<dyn Fn(Option<Outage>)>,
    ids: Vec<(&'static str, String)>,
    env: Vec<(&'static str, &'static str)>,
}

async fn account_fault_case(c: AccountCase, openai_url: &str) {
    let extra = format!("{FAST}\n{}", c.provider_section);
    let env = Env::sqlite(openai_url, &extra);
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let provider = c.name;
    let ids: Vec<&str> = c.ids.iter().map(|(id, _)| *id).collect();
    for (id, pid) in &c.ids {
        db.insert_job_with_scene(&job(id, provider, pid))
            .await
            .unwrap();
    }
    let d = env.start_with(provider, |cmd| {
        for (k, v) in &c.env {
            cmd.env(k, v);
        }
    });
    d.wait_log("provider paused", Duration::from_secs(20)).await;
    let logs = d.logs();
    assert!(
        logs.contains(c.cause),
        "{provider}: cause {}: {logs}",
        c.cause
    );
    tokio::time::sleep(HOLD).await;
    for (id, status, attempts) in statuses(&db, &ids).await {
        assert!(
            !matches!(status.as_str(), "failed" | "needs_operator"),
            "{provider}: {id} ended {status}"
        );
        assert_eq!(
            attempts, 0,
            "{provider}: {id}: an account fault spends no attempt"
        );
    }
    let st = status_json(&env);
    assert_eq!(st["paused_providers"][0]["provider"], provider, "{st}");
    assert_eq!(st["paused_providers"][0]["cause"], c.cause, "{st}");

    // The operator tops up / fixes the key: it resumes by itself.
    (c.set)(None);
    eventually(
        Duration::from_secs(30),
        "every job completes once fixed",
        || async { all_completed(&db, &ids).await.then_some(()) },
    )
    .await;
    d.wait_log("provider resumed", Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn account_faults_pause_the_provider_without_spending_attempts() {
    // OpenAI: the key is refused.
    let openai = FakeOpenAi::start(KEY).await;
    for id in ["a1", "a2"] {
        openai.script(&format!("video_{id}"), Script::completes_after(1));
    }
    openai.set_outage(Some(refused_key()));
    let o = std::sync::Arc::new(openai);
    let o2 = o.clone();
    account_fault_case(
        AccountCase {
            name: "openai",
            provider_section: String::new(),
            cause: "unauthorized",
            set: Box::new(move |x| o2.set_outage(x)),
            ids: vec![("a1", "video_a1".into()), ("a2", "video_a2".into())],
            env: vec![],
        },
        &o.base_url(),
    )
    .await;

    // Replicate: 402, out of credit.
    let rep = std::sync::Arc::new(FakeReplicate::start(KEY).await);
    for id in ["b1", "b2"] {
        rep.script(&format!("pred_{id}"), ReplicateScript::succeeds_after(1));
    }
    rep.set_outage(Some(Outage::new(
        402,
        r#"{"title":"Insufficient credit","detail":"You have insufficient credit to run this model. Go to https://replicate.com/account/billing#billing to purchase credit.","status":402}"#,
    )));
    let r2 = rep.clone();
    account_fault_case(
        AccountCase {
            name: "rep",
            provider_section: format!(
                "[providers.rep]\nkind = \"replicate\"\nbase_url = \"{}\"\napi_key_env = \"E2E_OPENAI_KEY\"\ntimeout = \"2s\"\n",
                rep.base_url()
            ),
            cause: "account",
            set: Box::new(move |x| r2.set_outage(x)),
            ids: vec![("b1", "pred_b1".into()), ("b2", "pred_b2".into())],
            env: vec![],
        },
        &o.base_url(),
    )
    .await;

    // Kling: the resource pack is used up (code 1102, HTTP 429).
    let kling = std::sync::Arc::new(FakeKling::start(KLING.0, KLING.1).await);
    for id in ["c1", "c2"] {
        kling.script(&format!("task_{id}"), CoreScript::succeeds_after(1));
    }
    kling.set_outage(Some(Outage::new(
        429,
        r#"{"code":1102,"message":"Account balance not enough","request_id":"req-health-1"}"#,
    )));
    let k2 = kling.clone();
    account_fault_case(
        AccountCase {
            name: "kling",
            provider_section: format!(
                "[providers.kling]\nkind = \"kling\"\nbase_url = \"{}\"\napi_key_env = \"E2E_KLING_AK\"\napi_secret_env = \"E2E_KLING_SK\"\ntimeout = \"2s\"\nallowed_download_hosts = [\"127.0.0.1\"]\n",
                kling.base_url()
            ),
            cause: "account",
            set: Box::new(move |x| k2.set_outage(x)),
            ids: vec![("c1", "task_c1".into()), ("c2", "task_c2".into())],
            env: vec![("E2E_KLING_AK", KLING.0), ("E2E_KLING_SK", KLING.1)],
        },
        &o.base_url(),
    )
    .await;
    // Each fake really answered the daemon with its fault.
    assert!(o.outage_hits() > 0 && rep.outage_hits() > 0 && kling.outage_hits() > 0);
}

// ---------------------------------------------------------------------------
// Two replicas on PostgreSQL: the pause one of them records is honoured by
// the other and by the next start.

#[tokio::test(flavor = "multi_thread")]
async fn a_pause_is_shared_by_replicas_and_survives_a_restart() {
    let _turn = pg_turn().await;
    let openai = FakeOpenAi::start(KEY).await;
    let Some(env) = env_for(
        Backend::Postgres,
        "health_replicas",
        &openai.base_url(),
        FAST,
    ) else {
        return;
    };
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let ids = ["p1", "p2", "p3"];
    for id in ids {
        openai.script(&format!("video_{id}"), Script::completes_after(1));
        db.insert_job_with_scene(&job(id, "openai", &format!("video_{id}")))
            .await
            .unwrap();
    }
    openai.set_outage(Some(refused_key()));
    let a = env.start("replica_a");
    a.wait_log("provider paused", Duration::from_secs(20)).await;
    let b = env.start("replica_b");
    b.wait_log(
        "provider is paused (recorded in the database)",
        Duration::from_secs(20),
    )
    .await;
    // The next start of a replica sees it too.
    a.kill9();
    let a2 = env.start("replica_a2");
    a2.wait_log(
        "provider is paused (recorded in the database)",
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(HOLD).await;
    none_failed(&db, &ids, 3).await;
    for (id, _, attempts) in statuses(&db, &ids).await {
        assert_eq!(attempts, 0, "{id}");
    }
    openai.set_outage(None);
    eventually(Duration::from_secs(30), "every job completes", || async {
        all_completed(&db, &ids).await.then_some(())
    })
    .await;
    // Whichever replica probed, the other learns of the resume.
    let resumed = |l: &str| l.contains("provider resumed");
    eventually(
        Duration::from_secs(10),
        "both replicas log the resume",
        || async { (resumed(&b.logs()) && resumed(&a2.logs())).then_some(()) },
    )
    .await;
    for id in ids {
        let done = db
            .events(id)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.to_status == "completed")
            .count();
        assert_eq!(done, 1, "{id} completed once");
    }
    b.signal("TERM");
    a2.signal("TERM");
}

// ---------------------------------------------------------------------------
// A pause whose provider has no job left to probe with: the daemon keeps
// turning (the probe finds nothing), and stops promptly on SIGTERM.

async fn a_pause_without_jobs_neither_spins_nor_blocks_shutdown(backend: Backend) {
    let openai = FakeOpenAi::start(KEY).await;
    let Some(env) = env_for(backend, "health_idle_pause", &openai.base_url(), FAST) else {
        return;
    };
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let now = now_ms();
    let at = match backend {
        Backend::Sqlite => now.to_string(),
        Backend::Postgres => format!("to_timestamp({now}::float8 / 1000.0)"),
    };
    db.exec(&format!(
        "INSERT INTO provider_pauses (provider, cause, reason, operation, paused_at, paused_by, probe_at, cooldown_ms, updated_at)
         VALUES ('openai', 'outage', 'Server(503): down', 'poll', {at}, 'old:1:x', {at}, 300, {at})"
    ))
    .await
    .unwrap();
    let mut d = env.start("idle_pause");
    d.wait_log(
        "provider is paused (recorded in the database)",
        Duration::from_secs(20),
    )
    .await;
    d.wait_log(
        "none of the provider's jobs is eligible",
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let probes = d
        .logs()
        .matches("none of the provider's jobs is eligible")
        .count();
    // 300 ms doubling to 600 ms: a handful in 2 s, not a spin.
    assert!(probes <= 10, "{probes} probes in about two seconds");
    d.signal("TERM");
    assert_eq!(
        d.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        d.logs()
    );
    assert_eq!(openai.total_requests(), 0);
}
on_both_backends!(a_pause_without_jobs_neither_spins_nor_blocks_shutdown);

// ---------------------------------------------------------------------------
// An operator fixed the key: `resume-provider` lifts the pause at once, not
// after the next probe (an hour away here).

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_resumes_a_paused_provider_at_once() {
    let openai = FakeOpenAi::start(KEY).await;
    let env = Env::sqlite(&openai.base_url(), SLOW_PROBE);
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    let ids = ["m1", "m2"];
    for id in ids {
        openai.script(&format!("video_{id}"), Script::completes_after(1));
        db.insert_job_with_scene(&job(id, "openai", &format!("video_{id}")))
            .await
            .unwrap();
    }
    openai.set_outage(Some(refused_key()));
    let d = env.start("resume");
    d.wait_log("provider paused", Duration::from_secs(20)).await;
    // Not paused: refused, nothing changes.
    let out = env.output(&["resume-provider", "nope"]);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not paused"));

    openai.set_outage(None);
    let out = env.output(&["resume-provider", "openai", "--operator", "alice", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["resumed"], true, "{said}");
    assert_eq!(said["operator"], "alice");
    assert_eq!(said["was"]["cause"], "unauthorized");
    d.wait_log(
        "provider resumed (recorded in the database)",
        Duration::from_secs(10),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the jobs complete long before the probe",
        || async { all_completed(&db, &ids).await.then_some(()) },
    )
    .await;
    assert!(
        status_json(&env)["paused_providers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let again = env.output(&["resume-provider", "openai"]);
    assert_eq!(again.status.code(), Some(65));
}

/// The same from the admin API: `POST /v1/providers/{name}/resume`.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_resumes_a_paused_provider() {
    const TOKEN: &str = "health-admin-token-0123456789";
    let openai = FakeOpenAi::start(KEY).await;
    let env = Env::sqlite(&openai.base_url(), SLOW_PROBE);
    let port = free_port();
    env.edit_config(
        "listen = \"\"",
        &format!("listen = \"127.0.0.1:{port}\"\nadmin_token_env = \"E2E_HEALTH_ADMIN\""),
    );
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    openai.script("video_n1", Script::completes_after(1));
    db.insert_job_with_scene(&job("n1", "openai", "video_n1"))
        .await
        .unwrap();
    openai.set_outage(Some(refused_key()));
    let d = env.start_with("api_resume", |c| {
        c.env("E2E_HEALTH_ADMIN", TOKEN);
    });
    d.wait_log("provider paused", Duration::from_secs(20)).await;
    openai.set_outage(None);
    let client = reqwest::Client::new();
    let post = |token: &'static str| {
        client
            .post(format!(
                "http://127.0.0.1:{port}/v1/providers/openai/resume"
            ))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(r#"{"operator":"bob"}"#)
            .send()
    };
    assert_eq!(post("wrong-token").await.unwrap().status().as_u16(), 401);
    let ok = post(TOKEN).await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let said: Value = ok.json().await.unwrap();
    assert_eq!(said["operator"], "api:bob", "{said}");
    assert_eq!(said["was"]["cause"], "unauthorized");
    // This replica's readiness shows it at once.
    let (_, ready) = get(port, "/readyz").await;
    assert!(ready.contains("\"paused_providers\":[]"), "{ready}");
    assert_eq!(post(TOKEN).await.unwrap().status().as_u16(), 409);
    eventually(Duration::from_secs(30), "the job completes", || async {
        all_completed(&db, &["n1"]).await.then_some(())
    })
    .await;
}
