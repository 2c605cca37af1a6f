//! The one-shot pass of `clawcut-worker reconcile` and `POST
//! /v1/reconcile`: one claim of up to the batch size (or `--limit`), every
//! claimed row worked with `reconcile.concurrency` at once, and a summary
//! of what happened. The daemon's own loop does not use it: it claims
//! continuously into slots (`daemon::drive`).

use std::sync::Arc;

use clawcut_store::StoreError;
use futures_util::StreamExt;

use super::{ClaimScope, Mode, Worker};
use crate::report::PassSummary;
use crate::runtime::lifecycle::Phases;

#[derive(Debug, Clone, Default)]
pub struct PassOptions {
    pub limit: Option<u32>,
    pub scope: ClaimScope,
}

/// Claim once, work everything claimed, report. Rows claimed but not
/// started when the lifecycle leaves `Running` are given back at once.
pub async fn run_once(
    worker: &Arc<Worker>,
    opts: &PassOptions,
    phases: &Phases,
) -> Result<PassSummary, StoreError> {
    let started = tokio::time::Instant::now();
    if !phases.is_running() {
        return Ok(PassSummary::default());
    }
    let s = worker.settings();
    let claimed = worker
        .claim(opts.limit.unwrap_or(s.batch_size), &opts.scope)
        .await?;
    let n = claimed.len();
    let jobs = futures_util::stream::iter(claimed)
        .map(|c| {
            let mode = Mode {
                force: opts.scope.force,
                // An operator who names a job of a paused provider is
                // probing it on purpose.
                probe: opts.scope.only_job.is_some(),
            };
            worker.work(c, mode, phases.clone())
        })
        .buffer_unordered(s.concurrency.max(1))
        .collect()
        .await;
    worker.metrics.passes.inc();
    worker
        .metrics
        .pass_duration
        .observe(started.elapsed().as_secs_f64());
    Ok(PassSummary {
        claimed: n,
        jobs,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}
