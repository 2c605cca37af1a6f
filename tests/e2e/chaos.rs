//! The chaos suite: many jobs across two providers, each with a fault
//! drawn from a seeded plan (5xx storms, 429 with `Retry-After`, answers
//! that hang past the timeout, malformed JSON, downloads cut short of their
//! `Content-Length`, trickling downloads, outputs that expire while a job
//! waits, failures at the provider, crash-interrupted submissions), while
//! the daemon is SIGKILLed again and again (on PostgreSQL, two replicas,
//! either of which is killed). Afterwards every invariant is checked:
//!
//! - each final state is the provider's truth (completed with the right
//!   bytes, or failed for the provider's reason); a submission ends
//!   completed or, when a kill made its outcome unknowable, needs_operator;
//! - every completed job's file carries the truth's sha256, and so do the
//!   job and its scene version;
//! - exactly one final event per job;
//! - no temp or partial file anywhere under the media dir;
//! - no job was created twice at the provider;
//! - no live lease after a clean stop.
//!
//! Sizes come from the environment, so the same test is the CI run and the
//! soak: `CHAOS_JOBS` (default 200), `CHAOS_KILLS` (10), `CHAOS_SEED`. The
//! soak, by hand: `CHAOS_JOBS=1000 CHAOS_KILLS=50 cargo test --release
//! --test e2e chaos -- --nocapture` (RELIABILITY.md has the figures). Each
//! run prints one `CHAOS` summary line.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clawcut_test_support::db::{AppDb, NewJob};
use clawcut_test_support::fake_common::{Script as RunwayScript, Step as RunwayStep};
use clawcut_test_support::fake_openai::{FakeOpenAi, Script, Step};
use clawcut_test_support::fake_runway::FakeRunway;

use crate::support::*;

/// splitmix64: a seeded plan that is the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the provider will end up saying about a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truth {
    Completes,
    /// Failed at the provider, or its outputs gone: `failed`.
    Fails,
    /// A submission: `completed`, or `needs_operator` when a kill made its
    /// outcome unknowable. Never created twice.
    Submitted,
}

struct Planned {
    id: String,
    provider: &'static str,
    pid: Option<String>,
    truth: Truth,
    fault: &'static str,
}

const VIDEO: usize = 192 * 1024;

/// Running polls before the provider says done (1 to 3).
fn polls(rng: &mut Rng) -> usize {
    1 + rng.below(3) as usize
}

fn plan_openai(rng: &mut Rng, fake: &FakeOpenAi, i: u64) -> Planned {
    let id = format!("oj{i}");
    let pid = format!("video_{id}");
    let n = polls(rng);
    let base = Script::completes_after(n).with_video_bytes(VIDEO);
    let err = |status, retry_after| Step::HttpError {
        status,
        retry_after,
    };
    let prefix = |steps: Vec<Step>| {
        let mut s = base.clone();
        s.steps = steps.into_iter().chain(s.steps).collect();
        s
    };
    let (script, truth, fault) = match rng.below(10) {
        0 => (base.clone(), Truth::Completes, "none"),
        1 => {
            let k = 1 + rng.below(3) as usize;
            (
                prefix(vec![err(500, None); k]),
                Truth::Completes,
                "server_error",
            )
        }
        2 => (
            prefix(vec![err(429, Some(1))]),
            Truth::Completes,
            "rate_limited_retry_after",
        ),
        3 => (
            prefix(vec![Step::Hang(Duration::from_secs(3))]),
            Truth::Completes,
            "hang_past_timeout",
        ),
        4 => (
            prefix(vec![Step::Malformed]),
            Truth::Completes,
            "malformed_json",
        ),
        5 => (
            base.clone()
                .with_truncated_downloads(1 + rng.below(2) as usize),
            Truth::Completes,
            "truncated_download",
        ),
        6 => (
            base.clone().trickle(8 * 1024, Duration::from_millis(40)),
            Truth::Completes,
            "trickling_download",
        ),
        // Done at the provider, but its outputs expired while the job
        // waited for its turn.
        7 => (
            Script::completes_after(n)
                .with_video_bytes(VIDEO)
                .with_expires_at(unix_now() - 60),
            Truth::Fails,
            "outputs_expired",
        ),
        8 => (
            Script::fails_after(n, "moderation_blocked"),
            Truth::Fails,
            "provider_failure",
        ),
        _ => (
            base.clone().with_chunk_delay(Duration::from_millis(25)),
            Truth::Completes,
            "slow_download",
        ),
    };
    fake.script(&pid, script);
    Planned {
        id,
        provider: "openai",
        pid: Some(pid),
        truth,
        fault,
    }
}

fn plan_runway(rng: &mut Rng, fake: &FakeRunway, i: u64) -> Planned {
    let id = format!("rj{i}");
    let pid = format!("task_{id}");
    let n = polls(rng);
    let running = std::iter::repeat_n(RunwayStep::Running, n);
    let (first, truth, fault): (Vec<RunwayStep>, _, _) = match rng.below(6) {
        0 => (vec![], Truth::Completes, "none"),
        1 => (
            vec![
                RunwayStep::HttpError {
                    status: 502,
                    retry_after: None
                };
                1 + rng.below(3) as usize
            ],
            Truth::Completes,
            "server_error",
        ),
        2 => (
            vec![RunwayStep::HttpError {
                status: 429,
                retry_after: Some(1),
            }],
            Truth::Completes,
            "rate_limited_retry_after",
        ),
        3 => (
            vec![RunwayStep::Malformed],
            Truth::Completes,
            "malformed_json",
        ),
        4 => (
            vec![RunwayStep::Hang(Duration::from_secs(3))],
            Truth::Completes,
            "hang_past_timeout",
        ),
        _ => (vec![], Truth::Fails, "outputs_gone"),
    };
    let last = if truth == Truth::Fails {
        RunwayStep::OutputsGone
    } else {
        RunwayStep::Succeeded
    };
    let steps = first.into_iter().chain(running).chain([last]).collect();
    fake.script(&pid, RunwayScript::steps(steps).with_video_bytes(VIDEO));
    Planned {
        id,
        provider: "runway",
        pid: Some(pid),
        truth,
        fault,
    }
}

fn unix_now() -> i64 {
    now_ms() / 1000
}

async fn chaos(backend: Backend) {
    let jobs = env_num("CHAOS_JOBS", 200);
    let kills = env_num("CHAOS_KILLS", 10);
    let seed = env_num("CHAOS_SEED", 0x00c1_a05c_2026);
    // The PostgreSQL run gets its own plan from the same seed.
    let seed = seed ^ u64::from(backend == Backend::Postgres);
    let mut rng = Rng(seed);
    let openai = FakeOpenAi::start(KEY).await;
    let runway = FakeRunway::start(KEY).await;
    // Created jobs (the submissions) complete after two polls.
    openai.set_default_script(Script::completes_after(2).with_video_bytes(VIDEO));
    let extra = format!(
        "[reconcile]\ninterval = \"300ms\"\nmin_age = \"1s\"\nlease_ttl = \"4s\"\nshutdown_grace = \"2s\"\nconcurrency = 12\nbatch_size = 12\n\n\
         [backoff]\ninitial = \"100ms\"\nmax = \"1s\"\nmax_attempts = 12\n\n\
         [submit]\nenabled = true\n\n\
         [provider_health]\noutage_after = 3\ncooldown = \"200ms\"\nmax_cooldown = \"400ms\"\n\n\
         [providers.runway]\nkind = \"runway\"\nbase_url = \"{}\"\napi_key_env = \"E2E_OPENAI_KEY\"\ntimeout = \"2s\"\n",
        runway.base_url()
    );
    let Some(env) = env_for(backend, "chaos", &openai.base_url(), &extra) else {
        return;
    };
    env.migrate();
    let db = AppDb::connect(&env.db_url).await.unwrap();

    let mut plan = Vec::new();
    for i in 0..jobs {
        let p = match rng.below(20) {
            0..=13 => plan_openai(&mut rng, &openai, i),
            14..=16 => plan_runway(&mut rng, &runway, i),
            _ => Planned {
                id: format!("sj{i}"),
                provider: "openai",
                pid: None,
                truth: Truth::Submitted,
                fault: "submission",
            },
        };
        let mut j = NewJob::video(
            &p.id,
            if p.pid.is_some() {
                "processing"
            } else {
                "queued"
            },
            p.pid.as_deref(),
            now_ms() - 600_000,
        );
        j.provider = p.provider.into();
        // The submission's prompt names the job, so creates can be counted per job.
        j.request = format!(
            r#"{{"prompt":"chaos {}","model":"sora-2","seconds":"4","size":"1280x720"}}"#,
            p.id
        );
        j.scene_id = Some(format!("scene_{}", p.id));
        j.scene_version_id = Some(format!("ver_{}", p.id));
        db.insert_job_with_scene(&j).await.unwrap();
        plan.push(p);
    }
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &plan {
        *faults.entry(p.fault).or_default() += 1;
    }

    // Replicas: one on SQLite, two on PostgreSQL. Each kill takes one at
    // random and starts it again at once.
    let started = Instant::now();
    let replicas = if backend == Backend::Postgres { 2 } else { 1 };
    let mut daemons: Vec<Option<Daemon>> = (0..replicas)
        .map(|r| Some(env.start(&format!("r{r}-0"))))
        .collect();
    let ids: Vec<String> = plan.iter().map(|p| p.id.clone()).collect();
    let (mut killed, mut mid_work) = (0, 0);
    while killed < kills {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(900))).await;
        if !all_final(&db, &ids).await {
            mid_work += 1;
        }
        let r = rng.below(replicas) as usize;
        if let Some(d) = daemons[r].take() {
            d.kill9();
        }
        killed += 1;
        daemons[r] = Some(env.start(&format!("r{r}-{killed}")));
    }
    eventually(
        Duration::from_secs(240),
        "every chaos job final",
        || async { all_final(&db, &ids).await.then_some(()) },
    )
    .await;
    for d in daemons.iter_mut().flatten() {
        d.signal("TERM");
    }
    for (r, d) in daemons.iter_mut().enumerate() {
        if let Some(d) = d {
            assert_eq!(
                d.wait_exit(Duration::from_secs(20)),
                Some(0),
                "replica {r} stops cleanly: {}",
                d.logs()
            );
        }
    }
    let took = started.elapsed();

    // The invariants.
    let mut lost = Vec::new();
    let creates = openai.create_requests();
    let now = now_ms();
    for p in &plan {
        let j = db.job(&p.id).await.unwrap().unwrap();
        let what = format!(
            "{} ({}, {}): {} {:?}",
            p.id, p.provider, p.fault, j.status, j.last_error
        );
        let ok = match (p.truth, j.status.as_str()) {
            (Truth::Completes, "completed") | (Truth::Fails, "failed") => true,
            (Truth::Submitted, "completed") => true,
            (Truth::Submitted, "needs_operator") => j
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("submission outcome unknown")),
            _ => false,
        };
        if !ok {
            lost.push(format!("wrong final state: {what}"));
        }
        if j.status == "completed" {
            let pid = j.provider_job_id.clone().unwrap_or_default();
            let want = match p.provider {
                "runway" => sha256_hex(&runway.content(&pid)),
                _ => sha256_hex(&openai.content(&pid)),
            };
            let path = env
                .media()
                .join("videos")
                .join(format!("scene_{}", p.id))
                .join(format!("ver_{}.mp4", p.id));
            match std::fs::read(&path) {
                Ok(bytes) if sha256_hex(&bytes) == want => {}
                Ok(_) => lost.push(format!("file with the wrong bytes: {what}")),
                Err(e) => lost.push(format!("completed without its file ({e}): {what}")),
            }
            if j.video_sha256.as_deref() != Some(want.as_str()) {
                lost.push(format!("job's sha256 is not the truth's: {what}"));
            }
            let v = db.version(&format!("ver_{}", p.id)).await.unwrap().unwrap();
            if v.status != "ready" || v.video_sha256.as_deref() != Some(want.as_str()) {
                lost.push(format!(
                    "scene version not ready with the truth's sha256: {what}"
                ));
            }
        }
        let finals = db
            .events(&p.id)
            .await
            .unwrap()
            .iter()
            .filter(|e| matches!(e.to_status.as_str(), "completed" | "failed"))
            .count();
        let want_finals = usize::from(matches!(j.status.as_str(), "completed" | "failed"));
        if finals != want_finals {
            lost.push(format!("{finals} final events: {what}"));
        }
        if p.truth == Truth::Submitted {
            let needle = format!("chaos {}", p.id);
            let n = creates
                .iter()
                .filter(|c| c.body["prompt"].as_str() == Some(needle.as_str()))
                .count();
            if n > 1 {
                lost.push(format!("created {n} times at the provider: {what}"));
            }
        }
        if j.lease_expires_at.is_some_and(|t| t > now) {
            lost.push(format!("live lease after a clean stop: {what}"));
        }
    }
    let leftovers: Vec<_> = files_under(&env.media())
        .into_iter()
        .filter(|f| {
            let s = f.to_string_lossy();
            s.contains("/.tmp/") || s.ends_with(".part") || s.ends_with(".prev")
        })
        .collect();
    // A killed run's staged files are swept once idle for the stall limit
    // (5 s here) + 10 s: start a daemon once more to sweep them.
    if !leftovers.is_empty() {
        let mut d = env.start("sweep");
        eventually(Duration::from_secs(40), "the temp sweep", || async {
            files_under(&env.media().join(".tmp"))
                .is_empty()
                .then_some(())
        })
        .await;
        d.signal("TERM");
        assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));
    }
    for f in files_under(&env.media()) {
        let s = f.to_string_lossy();
        if s.ends_with(".part") || s.ends_with(".prev") || s.contains("/.tmp/") {
            lost.push(format!("temp or partial file left: {s}"));
        }
    }
    let by_status = db.count_jobs_by_status().await.unwrap();
    println!(
        "CHAOS backend={backend:?} seed={seed:#x} jobs={jobs} kills={killed} kills_mid_work={mid_work} replicas={replicas} took={:.1}s faults={faults:?} final={by_status:?} creates={} lost={}",
        took.as_secs_f64(),
        creates.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} invariant violations:\n{}",
        lost.len(),
        lost.join("\n")
    );
    assert!(
        mid_work * 2 >= killed,
        "most kills must land while work remains: {mid_work} of {killed}"
    );
}
on_both_backends!(chaos);
