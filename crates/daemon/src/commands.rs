//! The one-shot commands: `migrate`, `check-config`, `status`, `reconcile`,
//! `resolve`. Each prints for a person on stdout (or JSON with `--json`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clawcut_core::{Job, Millis};
use clawcut_store::{Resolution, StoreError};
use serde_json::json;
use tokio::sync::watch;

use crate::app;
use crate::cli::{ReconcileArgs, ResolveArgs};
use crate::config::Config;
use crate::exit::{self, ExitCode, Fatal, fatal};
use crate::metrics::Metrics;
use crate::worker::{PassOptions, PassSummary, Phase, error_chain, now_ms};

pub async fn migrate(cfg: &Config) -> Result<(), Fatal> {
    let store = app::connect_store(cfg).await?;
    let applied = store
        .migrate()
        .await
        .context("migrate the schema")
        .exit_with(exit::UNAVAILABLE)?;
    let st = store
        .schema_status()
        .await
        .context("read the schema version")
        .exit_with(exit::UNAVAILABLE)?;
    if applied.is_empty() {
        println!("schema is up to date (version {})", st.current);
    } else {
        println!(
            "applied migrations {applied:?}; schema is at version {}",
            st.current
        );
    }
    Ok(())
}

pub fn check_config(path: &Path, cfg: &Config) -> Result<(), Fatal> {
    // Building the providers reads every API key variable the config names.
    app::build_providers(cfg, path)?;
    if !cfg.http.listen.is_empty() {
        let has_token = std::env::var(&cfg.http.admin_token_env).is_ok_and(|t| !t.is_empty());
        crate::run::require_loopback_or_token(&cfg.http.listen, has_token)?;
    }
    println!("config {} is valid", path.display());
    println!("  database: {}", app::redact_url(&cfg.database.url));
    println!(
        "  providers: {}",
        cfg.providers.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

fn age(now: Millis, t: Option<Millis>) -> String {
    match t {
        Some(t) => humantime::format_duration(std::time::Duration::from_secs(
            ((now - t).max(0) / 1000) as u64,
        ))
        .to_string(),
        None => "-".into(),
    }
}

pub async fn status(cfg: &Config, as_json: bool) -> Result<(), Fatal> {
    let store = app::connect_store(cfg).await?;
    app::check_schema(&*store).await?;
    let now = now_ms();
    let rules = cfg.eligibility();
    let r = store
        .status_report(now, &rules)
        .await
        .context("read job counts")
        .exit_with(exit::UNAVAILABLE)?;
    let needs = store
        .list_jobs(clawcut_store::JobFilter::NeedsOperator, now, &rules, 20)
        .await
        .context("list needs_operator jobs")
        .exit_with(exit::UNAVAILABLE)?;
    if as_json {
        let out = json!({
            "eligible": r.eligible,
            "oldest_eligible_age_seconds": r.oldest_eligible_updated_at.map(|t| (now - t) / 1000),
            "stranded": r.stranded,
            "oldest_stranded_age_seconds": r.oldest_stranded_updated_at.map(|t| (now - t) / 1000),
            "running": r.running,
            "needs_operator": r.needs_operator,
            "oldest_needs_operator_age_seconds": r.oldest_needs_operator_updated_at.map(|t| (now - t) / 1000),
            "unsubmitted": r.unsubmitted,
            "by_status": r.by_status.iter().map(|(s, n)| (s.as_str().to_owned(), serde_json::Value::from(*n))).collect::<serde_json::Map<_, _>>(),
            "needs_operator_jobs": needs.iter().map(|j| job_json(j, now)).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    println!("{:<16} {:>8}  oldest (by updated_at)", "", "jobs");
    println!(
        "{:<16} {:>8}  {}",
        "eligible now",
        r.eligible,
        age(now, r.oldest_eligible_updated_at)
    );
    println!(
        "{:<16} {:>8}  {}",
        "stranded",
        r.stranded,
        age(now, r.oldest_stranded_updated_at)
    );
    println!("{:<16} {:>8}", "running (leased)", r.running);
    println!(
        "{:<16} {:>8}  {}",
        "needs_operator",
        r.needs_operator,
        age(now, r.oldest_needs_operator_updated_at)
    );
    let submission = if cfg.submit.enabled {
        "waiting for submission"
    } else {
        "submission is off"
    };
    println!(
        "{:<16} {:>8}  (queued without a provider id; {submission})",
        "unsubmitted", r.unsubmitted
    );
    let by: Vec<String> = r
        .by_status
        .iter()
        .map(|(s, n)| format!("{s}={n}"))
        .collect();
    println!("by status: {}", by.join(" "));
    for j in &needs {
        println!(
            "needs_operator {} ({} old): {}",
            j.id,
            age(now, Some(j.updated_at)),
            j.last_error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

pub fn job_json(j: &Job, now: Millis) -> serde_json::Value {
    json!({
        "id": j.id,
        "provider": j.provider,
        "status": j.status.as_str(),
        "provider_job_id": j.provider_job_id,
        "scene_id": j.scene_id,
        "scene_version_id": j.scene_version_id,
        "attempts": j.attempts,
        "age_seconds": (now - j.updated_at) / 1000,
        "next_attempt_at": j.next_attempt_at,
        "last_error": j.last_error,
    })
}

pub async fn reconcile(path: &Path, cfg: &Config, args: &ReconcileArgs) -> Result<(), Fatal> {
    app::init_logging(cfg, "warn");
    let store = app::connect_store(cfg).await?;
    app::check_schema(&*store).await?;
    let worker = app::build_worker(cfg, path, store, Arc::new(Metrics::new()))?;
    let (_tx, phase) = watch::channel(Phase::Running);
    let opts = PassOptions {
        limit: args.limit,
        force: args.job.is_some(),
        only_job: args.job.clone(),
    };
    let summary = worker
        .pass(&opts, &phase)
        .await
        .context("reconcile pass")
        .exit_with(exit::UNAVAILABLE)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        print_summary(&summary);
    }
    if let (Some(id), 0) = (&args.job, summary.claimed) {
        let why = match worker.store().get_job(id).await {
            Ok(None) => "no such job".to_owned(),
            Ok(Some(j)) if j.status.is_final() => format!("already {}", j.status),
            Ok(Some(j)) => format!(
                "not claimable now (status {}, kind {}, {})",
                j.status,
                j.kind,
                j.lease_expires_at
                    .map_or("not leased".to_owned(), |t| format!(
                        "leased until {t} (epoch ms)"
                    ))
            ),
            Err(e) => error_chain(&e),
        };
        return Err(fatal(
            exit::DATAERR,
            format!("job {id} was not reconciled: {why}"),
        ));
    }
    Ok(())
}

pub fn print_summary(s: &PassSummary) {
    println!("claimed {} job(s) in {} ms", s.claimed, s.duration_ms);
    if s.jobs.is_empty() {
        return;
    }
    println!(
        "{:<24} {:<10} {:<12} {:<14} detail",
        "job", "provider", "from", "result"
    );
    for j in &s.jobs {
        let result = if j.to == j.from {
            j.action.to_owned()
        } else {
            format!("{} -> {}", j.action, j.to)
        };
        println!(
            "{:<24} {:<10} {:<12} {:<14} {}",
            j.job_id, j.provider, j.from, result, j.detail
        );
    }
}

pub async fn resolve(cfg: &Config, args: &ResolveArgs) -> Result<(), Fatal> {
    let store = app::connect_store(cfg).await?;
    app::check_schema(&*store).await?;
    let resolution = if args.fail {
        Resolution::Fail
    } else {
        Resolution::Resubmit
    };
    let operator = format!(
        "cli:{}",
        args.operator
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "operator".into())
    );
    match store
        .resolve(&args.id, resolution, &operator, now_ms())
        .await
    {
        Ok(status) => {
            println!("job {} is now {}", args.id, status);
            Ok(())
        }
        Err(e @ StoreError::NotResolvable { .. }) => Err(fatal(exit::DATAERR, error_chain(&e))),
        Err(e) => Err(e).context("resolve").exit_with(exit::UNAVAILABLE),
    }
}
