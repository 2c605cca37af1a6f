//! `clawcut-worker demo`: the newcomer's first command. A simulated provider
//! speaking the `openai` Videos API on 127.0.0.1, a fresh SQLite database
//! seeded with stranded jobs, the real daemon loop until they settle, and a
//! table of what happened and where the files are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clawcut_simulator::db::{AppDb, NewJob};
use clawcut_simulator::fake_openai::{FakeOpenAi, Script, Step};

use crate::app;
use crate::cli::DemoArgs;
use crate::config::{Config, Dur, ProviderKindName, ProviderSection};
use crate::daemon::drive;
use crate::exit::{self, ExitCode, Fatal, fatal};
use crate::metrics::Metrics;
use crate::runtime::clock::Clock;
use crate::runtime::lifecycle::{Lifecycle, Phase};
use crate::state::{State, StateParts};

const KEY_VAR: &str = "DEMO_OPENAI_API_KEY";
const KEY: &str = "sk-demo-not-a-real-key";

struct Seed {
    job: &'static str,
    scene: &'static str,
    version: &'static str,
    what: &'static str,
    script: Script,
    kind: &'static str,
    created_ago: Duration,
}

fn seeds() -> Vec<Seed> {
    let min = Duration::from_secs(60);
    let seed = |job, scene, version, what, script| Seed {
        job,
        scene,
        version,
        what,
        script,
        kind: "video",
        created_ago: 10 * min,
    };
    vec![
        seed(
            "job_beach",
            "scene_beach",
            "ver_beach_1",
            "finished while the app was down",
            Script::completes_after(0),
        ),
        seed(
            "job_city",
            "scene_city",
            "ver_city_1",
            "finishes after 2 more polls",
            Script::completes_after(2),
        ),
        seed(
            "job_forest",
            "scene_forest",
            "ver_forest_1",
            "keeps running for 4 polls",
            Script::completes_after(4),
        ),
        seed(
            "job_moon",
            "scene_moon",
            "ver_moon_1",
            "fails at the provider",
            Script::fails_after(1, "moderation_blocked"),
        ),
        seed(
            "job_storm",
            "scene_storm",
            "ver_storm_1",
            "3 x HTTP 500, then finishes",
            Script::storm_then_complete(3, 1),
        ),
        Seed {
            script: Script {
                steps: vec![
                    Step::HttpError {
                        status: 429,
                        retry_after: Some(1),
                    },
                    Step::Completed,
                ],
                ..Script::completes_after(0)
            },
            ..seed(
                "job_busy",
                "scene_busy",
                "ver_busy_1",
                "429 with Retry-After, then finishes",
                Script::completes_after(0),
            )
        },
        Seed {
            script: Script {
                expires_at: Some(1_700_000_000),
                ..Script::completes_after(0)
            },
            ..seed(
                "job_gone",
                "scene_gone",
                "ver_gone_1",
                "finished, but its outputs expired",
                Script::completes_after(0),
            )
        },
        seed(
            "job_take_1",
            "scene_river",
            "ver_river_1",
            "older take of one scene",
            Script::completes_after(3),
        ),
        seed(
            "job_take_2",
            "scene_river",
            "ver_river_2",
            "newer take of the same scene",
            Script::completes_after(0),
        ),
        Seed {
            created_ago: Duration::from_secs(8 * 86400),
            ..seed(
                "job_ancient",
                "scene_ancient",
                "ver_ancient_1",
                "created 8 days ago (max_age 7d)",
                Script::completes_after(0),
            )
        },
        Seed {
            kind: "image",
            ..seed(
                "job_image",
                "scene_image",
                "ver_image_1",
                "an image job: not ours",
                Script::completes_after(0),
            )
        },
    ]
}

fn demo_config(dir: &Path, base_url: &str) -> Config {
    let mut cfg = Config::default();
    cfg.database.url = format!("sqlite://{}", dir.join("clawcut.db").display());
    cfg.media.dir = dir.join("media");
    cfg.http.listen = String::new();
    cfg.log.level = "warn".into();
    // A fast cadence so the demo settles in seconds; the shipped defaults are
    // in config/clawcut-worker.toml.
    cfg.reconcile.interval = Dur(Duration::from_millis(500));
    cfg.reconcile.min_age = Dur(Duration::from_millis(500));
    cfg.reconcile.lease_ttl = Dur(Duration::from_secs(30));
    cfg.reconcile.concurrency = 4;
    cfg.backoff.initial = Dur(Duration::from_millis(200));
    cfg.backoff.max = Dur(Duration::from_secs(2));
    cfg.backoff.max_attempts = 6;
    cfg.providers = BTreeMap::from([(
        "openai".to_owned(),
        ProviderSection {
            kind: ProviderKindName::Openai,
            base_url: Some(base_url.to_owned()),
            api_key_env: Some(KEY_VAR.into()),
            timeout: Dur(Duration::from_secs(5)),
            max_in_flight: 4,
            allowed_download_hosts: vec![],
            requests_per_minute: None,
            api_secret_env: None,
            webhook_secret_env: None,
        },
    )]);
    cfg
}

pub async fn run(args: &DemoArgs) -> Result<(), Fatal> {
    let dir: PathBuf = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("create {}", d.display()))
                .exit_with(exit::CANTCREAT)?;
            if d.join("clawcut.db").exists() {
                return Err(fatal(
                    exit::CANTCREAT,
                    format!(
                        "{} already holds a demo database; pick an empty directory",
                        d.display()
                    ),
                ));
            }
            std::path::absolute(d)
                .with_context(|| format!("resolve {}", d.display()))
                .exit_with(exit::CANTCREAT)?
        }
        None => tempfile::Builder::new()
            .prefix("clawcut-demo-")
            .tempdir()
            .context("create a temp directory")
            .exit_with(exit::CANTCREAT)?
            .keep(),
    };
    let fake = FakeOpenAi::start(KEY).await;
    let cfg = demo_config(&dir, &fake.base_url());
    app::init_logging(&cfg, "warn");
    println!("clawcut-worker demo");
    println!(
        "  simulated provider (openai Videos API shape): {}",
        fake.base_url()
    );
    println!("  database: {}", dir.join("clawcut.db").display());

    let store = app::connect_store(&cfg).await?;
    store
        .migrate()
        .await
        .context("migrate the demo database")
        .exit_with(exit::SOFTWARE)?;
    let seeds = seeds();
    seed(&cfg.database.url, &fake, &seeds).await?;
    println!(
        "  seeded {} stranded jobs; running the daemon loop until they settle...\n",
        seeds.len()
    );

    let providers = app::build_providers_with(&cfg, Path::new("(demo)"), |var| {
        (var == KEY_VAR).then(|| KEY.to_owned())
    })?;
    let worker = Arc::new(app::worker_with(
        &cfg,
        store.clone(),
        Arc::new(Metrics::new()),
        providers,
        Clock::system(),
    )?);
    let lifecycle = Lifecycle::new();
    let state = State::new(StateParts {
        worker,
        config: cfg.clone(),
        config_path: PathBuf::from("(demo)"),
        clock: Clock::system(),
        lifecycle: lifecycle.clone(),
        admin_token: None,
        readonly_token: None,
    });
    let driver = tokio::spawn({
        let state = state.clone();
        async move { drive(&state, true).await }
    });
    let started = Instant::now();
    let app_db = AppDb::connect(&cfg.database.url)
        .await
        .context("open the demo database")
        .exit_with(exit::SOFTWARE)?;
    let ours: Vec<&Seed> = seeds.iter().filter(|s| s.kind == "video").collect();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let mut settled = 0;
        for s in &ours {
            let job = app_db
                .job(s.job)
                .await
                .context("read a job")
                .exit_with(exit::SOFTWARE)?;
            if job.is_some_and(|j| {
                matches!(
                    j.status.as_str(),
                    "completed" | "failed" | "canceled" | "needs_operator"
                )
            }) {
                settled += 1;
            }
        }
        if settled == ours.len() {
            break;
        }
        if started.elapsed() > args.timeout {
            lifecycle.advance(Phase::Aborting);
            return Err(fatal(
                exit::SOFTWARE,
                format!(
                    "only {settled} of {} jobs settled within {:?}",
                    ours.len(),
                    args.timeout
                ),
            ));
        }
    }
    lifecycle.advance(Phase::Draining);
    let _ = driver.await;
    lifecycle.advance(Phase::Stopped);
    state.worker.detached.close();
    state.worker.detached.wait().await;
    let took = started.elapsed();

    println!(
        "{:<12} {:<38} {:<10} {:>5} {:>8}  result",
        "job", "scenario", "status", "polls", "retries"
    );
    for s in &seeds {
        let j = app_db
            .job(s.job)
            .await
            .context("read a job")
            .exit_with(exit::SOFTWARE)?;
        let Some(j) = j else { continue };
        let result = match (j.video_path.as_deref(), j.last_error.as_deref()) {
            (Some(p), _) => p
                .strip_prefix(&format!("{}/", dir.display()))
                .unwrap_or(p)
                .to_owned(),
            (None, Some(e)) => e.chars().take(70).collect(),
            (None, None) => "untouched".into(),
        };
        println!(
            "{:<12} {:<38} {:<10} {:>5} {:>8}  {}",
            s.job, s.what, j.status, j.polls, j.attempts, result
        );
    }
    let river = app_db
        .scene("scene_river")
        .await
        .context("read a scene")
        .exit_with(exit::SOFTWARE)?;
    println!(
        "\nscene_river points at {} (the newer take wins, whatever order they finished in)",
        river
            .and_then(|s| s.current_version_id)
            .unwrap_or_else(|| "nothing".into())
    );
    let events = app_db
        .all_events()
        .await
        .context("read events")
        .exit_with(exit::SOFTWARE)?;
    println!(
        "{} audit events in ai_job_events; settled in {:.1}s with {} requests to the provider",
        events.len(),
        took.as_secs_f64(),
        fake.total_requests()
    );
    let conf = dir.join("clawcut-worker.toml");
    let _ = std::fs::write(
        &conf,
        format!(
            "# Written by `clawcut-worker demo`: points at the demo database.\n[database]\nurl = \"{}\"\n\n[media]\ndir = \"{}\"\n\n[http]\nlisten = \"\"\n",
            cfg.database.url,
            cfg.media.dir.display()
        ),
    );
    println!("\nfiles:    {}", cfg.media.dir.display());
    println!("database: {}", dir.join("clawcut.db").display());
    println!(
        "look around: {} --config {} status",
        // The binary as it was started (cargo run leaves it off the PATH).
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "clawcut-worker".into()),
        conf.display()
    );
    Ok(())
}

async fn seed(url: &str, fake: &FakeOpenAi, seeds: &[Seed]) -> Result<(), Fatal> {
    let db = AppDb::connect(url)
        .await
        .context("open the demo database")
        .exit_with(exit::SOFTWARE)?;
    let now = Clock::system().now_ms();
    for (i, s) in seeds.iter().enumerate() {
        let created = now - s.created_ago.as_millis() as i64;
        let provider_job_id = format!("video_demo_{:02}", i + 1);
        fake.script(&provider_job_id, s.script.clone());
        db.insert_scene(s.scene, s.what).await.ok();
        db.insert_version(s.version, s.scene, created + i as i64)
            .await
            .context("seed a scene version")
            .exit_with(exit::SOFTWARE)?;
        db.insert_job(&NewJob {
            id: s.job.into(),
            kind: s.kind.into(),
            provider: "openai".into(),
            scene_id: Some(s.scene.into()),
            scene_version_id: Some(s.version.into()),
            request: r#"{"prompt":"a calm shot","model":"sora-2","seconds":"4","size":"1280x720"}"#
                .into(),
            status: "processing".into(),
            provider_job_id: Some(provider_job_id),
            created_at: created,
            updated_at: created,
        })
        .await
        .context("seed a job")
        .exit_with(exit::SOFTWARE)?;
    }
    Ok(())
}
