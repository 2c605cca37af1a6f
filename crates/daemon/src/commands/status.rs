//! `clawcut-worker status`: eligible, stranded, running and
//! `needs_operator` jobs, with ages.

use anyhow::Context;
use clawcut_core::Millis;
use serde_json::json;

use crate::app;
use crate::config::Config;
use crate::exit::{self, ExitCode, Fatal};
use crate::report::{job_json, pause_json};
use crate::runtime::clock::Clock;

fn age(now: Millis, t: Option<Millis>) -> String {
    match t {
        Some(t) => humantime::format_duration(std::time::Duration::from_secs(
            (now.saturating_sub(t).max(0) / 1000) as u64,
        ))
        .to_string(),
        None => "-".into(),
    }
}

fn until_text(now: Millis, at: Millis) -> String {
    if at <= now {
        "due now".into()
    } else {
        format!(
            "in {}",
            humantime::format_duration(std::time::Duration::from_secs(
                u64::try_from((at - now) / 1000).unwrap_or(0)
            ))
        )
    }
}

pub async fn status(cfg: &Config, as_json: bool) -> Result<(), Fatal> {
    let store = app::connect_store(cfg).await?;
    app::check_schema(&*store).await?;
    let now = Clock::system().now_ms();
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
    let pauses = store
        .provider_pauses()
        .await
        .context("read the provider pauses")
        .exit_with(exit::UNAVAILABLE)?;
    if as_json {
        let out = json!({
            "eligible": r.eligible,
            "oldest_eligible_age_seconds": r.oldest_eligible_updated_at.map(|t| now.saturating_sub(t) / 1000),
            "stranded": r.stranded,
            "oldest_stranded_age_seconds": r.oldest_stranded_updated_at.map(|t| now.saturating_sub(t) / 1000),
            "running": r.running,
            "needs_operator": r.needs_operator,
            "oldest_needs_operator_age_seconds": r.oldest_needs_operator_updated_at.map(|t| now.saturating_sub(t) / 1000),
            "unsubmitted": r.unsubmitted,
            "by_status": r.by_status.iter().map(|(s, n)| (s.as_str().to_owned(), serde_json::Value::from(*n))).collect::<serde_json::Map<_, _>>(),
            // A count equal to this is "at least": counting stops there.
            "by_status_cap": r.by_status_cap,
            "needs_operator_jobs": needs.iter().map(|j| job_json(j, now)).collect::<Vec<_>>(),
            "paused_providers": pauses.iter().map(|p| pause_json(p, now)).collect::<Vec<_>>(),
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
        .map(|(s, n)| {
            if *n >= r.by_status_cap {
                format!("{s}>={n}")
            } else {
                format!("{s}={n}")
            }
        })
        .collect();
    println!("by status: {}", by.join(" "));
    for p in &pauses {
        println!(
            "provider {} PAUSED ({}, {} ago, next probe {}): {}; {}",
            p.provider,
            p.cause,
            age(now, Some(p.paused_at)),
            until_text(now, p.probe_at),
            p.reason,
            p.cause.advice()
        );
    }
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
