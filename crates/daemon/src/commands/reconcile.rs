//! `clawcut-worker reconcile`: one pass now, with what happened to each job.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::app;
use crate::cli::ReconcileArgs;
use crate::config::Config;
use crate::exit::{self, ExitCode, Fatal, fatal};
use crate::metrics::Metrics;
use crate::report::{PassSummary, error_chain};
use crate::runtime::clock::Clock;
use crate::runtime::lifecycle::Lifecycle;
use crate::worker::ClaimScope;
use crate::worker::pass::{PassOptions, run_once};

pub async fn reconcile(path: &Path, cfg: &Config, args: &ReconcileArgs) -> Result<(), Fatal> {
    app::init_logging(cfg, "warn");
    let store = app::connect_store(cfg).await?;
    app::check_schema(&*store).await?;
    let worker = Arc::new(app::build_worker(
        cfg,
        path,
        store,
        Arc::new(Metrics::new()),
        Clock::system(),
    )?);
    let lifecycle = Lifecycle::new();
    let opts = PassOptions {
        limit: args.limit,
        scope: ClaimScope {
            force: args.job.is_some(),
            only_job: args.job.clone(),
        },
    };
    let summary = run_once(&worker, &opts, &lifecycle.phases()).await;
    worker.detached.close();
    worker.detached.wait().await;
    let summary = summary
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
            j.action.to_string()
        } else {
            format!("{} -> {}", j.action, j.to)
        };
        println!(
            "{:<24} {:<10} {:<12} {:<14} {}",
            j.job_id, j.provider, j.from, result, j.detail
        );
    }
}
