//! Webhooks are hints: a valid one makes its job due at once, a bad one is
//! refused, a flood does not flood the provider.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clawcut_test_support::db::AppDb;
use clawcut_test_support::fake_common::Script as CommonScript;
use clawcut_test_support::fake_luma::FakeLuma;
use clawcut_test_support::fake_replicate::{FakeReplicate, Script as ReplicateScript};
use hmac::{KeyInit, Mac};

use crate::support::*;

const WH_SECRET: &str = "whsec_ZTJlLXdlYmhvb2stc2lnbmluZy1zZWNyZXQtMTIz";

fn sign(id: &str, ts: i64, body: &str) -> String {
    let key = B64.decode(WH_SECRET.trim_start_matches("whsec_")).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

async fn post(url: &str, headers: &[(&str, String)], body: &str) -> u16 {
    let mut r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.send().await.unwrap().status().as_u16()
}

/// A job the daemon would not look at for an hour.
/// (SQLite: timestamps are epoch milliseconds.)
async fn parked(db: &AppDb, id: &str, provider: &str, pid: &str) {
    seed_job(
        db,
        id,
        &format!("scene_{id}"),
        &format!("ver_{id}"),
        pid,
        now_ms(),
    )
    .await;
    let later = now_ms() + 3_600_000;
    db.exec(&format!(
        "UPDATE ai_jobs SET provider = '{provider}', next_attempt_at = {later} WHERE id = '{id}'"
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn replicate_signed_webhooks_make_jobs_due_and_floods_cost_little() {
    let fake = FakeReplicate::start(KEY).await;
    fake.script("pred_one", ReplicateScript::succeeds_after(0));
    fake.script(
        "pred_flood",
        ReplicateScript::steps(vec![clawcut_test_support::fake_replicate::Step::Processing]),
    );
    let port = free_port();
    let extra = format!(
        "[providers.rep]\nkind = \"replicate\"\nbase_url = \"{}\"\napi_key_env = \"E2E_OPENAI_KEY\"\nwebhook_secret_env = \"E2E_WH\"\n",
        fake.base_url()
    );
    let env = Env::sqlite("http://127.0.0.1:9", &extra);
    env.edit_config(
        "[http]\nlisten = \"\"",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\""),
    );
    env.edit_config("interval = \"300ms\"", "interval = \"1h\"");
    env.edit_config("initial = \"100ms\"", "initial = \"2s\"");
    env.edit_config("max = \"1s\"", "max = \"1h\"");
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    parked(&db, "job_one", "rep", "pred_one").await;
    parked(&db, "job_flood", "rep", "pred_flood").await;
    let _d = env.start_with("webhook", |c| {
        c.env("E2E_WH", WH_SECRET);
    });
    let url = format!("http://127.0.0.1:{port}/webhooks/rep");
    eventually(Duration::from_secs(20), "http up", || async {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.polls("pred_one"), 0, "parked: not polled");

    let body = r#"{"id":"pred_one","status":"succeeded"}"#;
    let ts = now_ms() / 1000;
    // Bad signature, stale timestamp, no signature: refused, nothing due.
    assert_eq!(
        post(
            &url,
            &[
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", "v1,AAAA".into())
            ],
            body
        )
        .await,
        401
    );
    let stale = ts - 3600;
    assert_eq!(
        post(
            &url,
            &[
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", stale.to_string()),
                ("webhook-signature", sign("msg_1", stale, body))
            ],
            body
        )
        .await,
        401
    );
    assert_eq!(post(&url, &[], body).await, 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_of_job(&db, "job_one").await, "processing");

    // A valid one: due at once, polled, completed (the interval is 1h).
    let sent = Instant::now();
    assert_eq!(
        post(
            &url,
            &[
                ("webhook-id", "msg_2".into()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", sign("msg_2", ts, body))
            ],
            body
        )
        .await,
        202
    );
    let ids = vec!["job_one".to_owned()];
    eventually(
        Duration::from_secs(10),
        "completed after the webhook",
        || async { all_final(&db, &ids).await.then_some(()) },
    )
    .await;
    assert_eq!(status_of_job(&db, "job_one").await, "completed");
    eprintln!(
        "WEBHOOK: job completed {:?} after its webhook",
        sent.elapsed()
    );

    // A flood for a job that stays running: polls stay few.
    let body = r#"{"id":"pred_flood","status":"processing"}"#;
    let before = fake.polls("pred_flood");
    let started = Instant::now();
    for i in 0..100 {
        let ts = now_ms() / 1000;
        let id = format!("msg_f{i}");
        let sig = sign(&id, ts, body);
        assert_eq!(
            post(
                &url,
                &[
                    ("webhook-id", id),
                    ("webhook-timestamp", ts.to_string()),
                    ("webhook-signature", sig)
                ],
                body
            )
            .await,
            202
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let polls = fake.polls("pred_flood") - before;
    let secs = started.elapsed().as_secs_f64();
    // One wake per backoff.initial (2 s), one poll per job per pass.
    let bound = (secs / 2.0).ceil() as usize + 1;
    assert!(
        polls >= 1 && polls <= bound,
        "100 webhooks in {secs:.1}s cost {polls} polls (bound {bound})"
    );
}

async fn status_of_job(db: &AppDb, id: &str) -> String {
    db.job(id).await.unwrap().unwrap().status
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_providers_need_the_url_token() {
    let fake = FakeLuma::start(KEY).await;
    fake.script("gen_1", CommonScript::succeeds_after(0));
    let port = free_port();
    let extra = format!(
        "[providers.luma]\nkind = \"luma\"\nbase_url = \"{}\"\napi_key_env = \"E2E_OPENAI_KEY\"\nwebhook_secret_env = \"E2E_WH\"\n",
        fake.base_url()
    );
    let env = Env::sqlite("http://127.0.0.1:9", &extra);
    env.edit_config(
        "[http]\nlisten = \"\"",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\""),
    );
    env.edit_config("interval = \"300ms\"", "interval = \"1h\"");
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    parked(&db, "job_l", "luma", "gen_1").await;
    let _d = env.start_with("luma-webhook", |c| {
        c.env("E2E_WH", "tok-luma-e2e");
    });
    let base = format!("http://127.0.0.1:{port}/webhooks/luma");
    eventually(Duration::from_secs(20), "http up", || async {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let body = r#"{"id":"gen_1","state":"completed"}"#;
    assert_eq!(post(&format!("{base}?token=wrong"), &[], body).await, 401);
    assert_eq!(post(&base, &[], body).await, 401);
    assert_eq!(
        post(
            &format!("http://127.0.0.1:{port}/webhooks/nope?token=x"),
            &[],
            body
        )
        .await,
        404
    );
    assert_eq!(
        post(&format!("{base}?token=tok-luma-e2e"), &[], "{}").await,
        400,
        "names no job"
    );
    assert_eq!(
        post(&format!("{base}?token=tok-luma-e2e"), &[], body).await,
        202
    );
    let ids = vec!["job_l".to_owned()];
    eventually(
        Duration::from_secs(10),
        "completed after the webhook",
        || async { all_final(&db, &ids).await.then_some(()) },
    )
    .await;
    assert_eq!(status_of_job(&db, "job_l").await, "completed");
}

#[tokio::test(flavor = "multi_thread")]
async fn replicate_replays_are_answered_once_and_bursts_are_limited() {
    let fake = FakeReplicate::start(KEY).await;
    fake.script(
        "pred_r",
        ReplicateScript::steps(vec![clawcut_test_support::fake_replicate::Step::Processing]),
    );
    let port = free_port();
    let extra = format!(
        "[providers.rep]\nkind = \"replicate\"\nbase_url = \"{}\"\napi_key_env = \"E2E_OPENAI_KEY\"\nwebhook_secret_env = \"E2E_WH\"\n",
        fake.base_url()
    );
    let env = Env::sqlite("http://127.0.0.1:9", &extra);
    env.edit_config(
        "[http]\nlisten = \"\"",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\nwebhooks_per_minute = 5"),
    );
    env.edit_config("interval = \"300ms\"", "interval = \"1h\"");
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();
    parked(&db, "job_r", "rep", "pred_r").await;
    let _d = env.start_with("webhook-replay", |c| {
        c.env("E2E_WH", WH_SECRET);
    });
    let url = format!("http://127.0.0.1:{port}/webhooks/rep");
    eventually(Duration::from_secs(20), "http up", || async {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let body = r#"{"id":"pred_r","status":"processing"}"#;
    let ts = now_ms() / 1000;
    let signed = |id: &str| {
        vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", sign(id, ts, body)),
        ]
    };
    assert_eq!(post(&url, &signed("msg_once"), body).await, 202);
    // The same delivery again, byte for byte: recognised, nothing written.
    for _ in 0..3 {
        assert_eq!(post(&url, &signed("msg_once"), body).await, 200);
    }
    // Four more fresh ones fit the budget of 5 a minute; the sixth does not.
    for i in 0..4 {
        assert_eq!(post(&url, &signed(&format!("msg_{i}")), body).await, 202);
    }
    let r = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("webhook-id", "msg_over")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sign("msg_over", ts, body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=13).contains(&retry), "Retry-After {retry}");
}
