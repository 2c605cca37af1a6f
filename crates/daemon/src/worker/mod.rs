//! Working jobs: claim rows, and carry one claimed row through one step of
//! its life (poll, download and publish, submit, expire, or set aside).
//!
//! Start at [`Worker::work`], what one scheduler slot does with one claimed
//! row; then `poll` (a running job), `outputs` (a finished one), `submit`
//! (a queued or interrupted submission), `triage` (rows that make no sense).
//! [`pass`] is the one-shot pass of `reconcile` and `POST /v1/reconcile`.
//!
//! Every decision about a job's next status goes through
//! [`decide::decide`], i.e. [`clawcut_core::transition()`]; these modules
//! only carry out the I/O around it. They never sleep, never loop over
//! jobs (the scheduler does), and never write without the lease.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawcut_core::{
    BackoffPolicy, Eligibility, EligibilityRules, Event, Job, Millis, Provider, WorkKind,
};
use clawcut_providers::{DownloadLimits, DownloadPolicy, Downloader};
use clawcut_store::{ClaimRequest, Claimed, Store, StoreError};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub mod activity;
pub mod cancel;
pub mod decide;
mod group;
pub mod health;
pub mod lease;
pub mod outputs;
pub mod pass;
mod poll;
mod submit;
mod triage;

use crate::metrics::Metrics;
use crate::report::{JobOutcome, JobReport, error_chain};
use crate::runtime::clock::Clock;
use crate::runtime::lifecycle::{Phase, Phases};
use decide::{Done, WorkError, human};
use lease::{KeepAlive, Progress, keep_alive};

/// The knobs a job step reads; replaced as a whole on reload.
#[derive(Debug, Clone)]
pub struct Settings {
    pub batch_size: u32,
    pub concurrency: usize,
    pub lease_ttl: Duration,
    pub rules: EligibilityRules,
    pub backoff: BackoffPolicy,
    /// The cadence of polls of running jobs (`backoff` capped at
    /// `backoff.poll_max`).
    pub poll: BackoffPolicy,
    pub media_dir: PathBuf,
    pub limits: DownloadLimits,
    /// A job that shows no progress for this long stops renewing its lease.
    pub progress_window: Duration,
    /// When a provider's faults pause it (`[provider_health]`).
    pub health: clawcut_core::HealthPolicy,
}

/// A configured provider and where its outputs may come from.
pub struct ProviderHandle {
    pub provider: Arc<dyn Provider>,
    pub policy: DownloadPolicy,
    /// Sent with submissions when webhooks are configured for the provider.
    pub webhook_url: Option<String>,
    /// Turns `POST /webhooks/<name>` on: the signing secret, or the token
    /// expected in the URL for providers that sign nothing.
    pub webhook_secret: Option<String>,
}

pub struct Worker {
    pub id: String,
    store: Arc<dyn Store>,
    providers: HashMap<String, ProviderHandle>,
    downloader: Downloader,
    settings: Mutex<Arc<Settings>>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// Steps that must not be cut off halfway (a completion's transaction
    /// with its renames): they run here, and the process awaits them
    /// before it exits.
    pub detached: TaskTracker,
    /// One completion at a time per scene version in this process (the
    /// database serializes them across replicas).
    versions: outputs::VersionLocks,
    /// Completions that meet while one commits are written together.
    group: Arc<group::GroupCommit>,
    /// Provider pauses: the counts that decide them, and the board.
    pub health: health::Health,
    /// Whether the media directory takes our writes (`outputs`).
    pub media: crate::runtime::health::MediaHealth,
    /// Where clips go: `media.dir`, or `media.store`'s bucket.
    pub storage: crate::media::Storage,
    /// The last steps and the providers' answers, for the operator panel.
    pub activity: activity::Activity,
}

/// What [`Worker::new`] needs.
pub struct WorkerParts {
    pub id: String,
    pub store: Arc<dyn Store>,
    pub providers: HashMap<String, ProviderHandle>,
    pub downloader: Downloader,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub storage: crate::media::Storage,
}

/// Which rows a claim takes.
#[derive(Debug, Clone, Default)]
pub struct ClaimScope {
    /// Just this job (a targeted reconcile).
    pub only_job: Option<String>,
    /// Ignore `min_age` and the due time (an operator asked for it now).
    pub force: bool,
}

/// The job and lease a step works with, and the settings of its claim.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub job: &'a Job,
    pub lease: &'a clawcut_core::Lease,
    pub s: &'a Settings,
    pub progress: &'a Progress,
    pub handle: &'a ProviderHandle,
    /// This step probes a paused provider (or an operator named the job):
    /// an answer from the provider lifts its pause.
    pub probe: bool,
}

/// How a slot works its claimed row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mode {
    /// The claim skipped `min_age` and the due time (an operator asked).
    pub force: bool,
    /// See [`Ctx::probe`].
    pub probe: bool,
}

impl Worker {
    pub fn new(p: WorkerParts) -> Worker {
        Worker {
            id: p.id,
            store: p.store,
            providers: p.providers,
            downloader: p.downloader,
            settings: Mutex::new(Arc::new(p.settings)),
            metrics: p.metrics,
            clock: p.clock,
            detached: TaskTracker::new(),
            versions: outputs::VersionLocks::default(),
            group: Arc::default(),
            health: health::Health::default(),
            media: crate::runtime::health::MediaHealth::default(),
            storage: p.storage,
            activity: activity::Activity::default(),
        }
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderHandle> {
        self.providers.get(name)
    }

    /// The configured providers' names, sorted.
    pub fn provider_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.providers.keys().cloned().collect();
        names.sort();
        names
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn now_ms(&self) -> Millis {
        self.clock.now_ms()
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swap in new settings; jobs already in a slot keep the old ones.
    pub fn replace_settings(&self, s: Settings) {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
    }

    /// Lease up to `limit` eligible rows in one statement.
    pub async fn claim(&self, limit: u32, scope: &ClaimScope) -> Result<Vec<Claimed>, StoreError> {
        self.claim_with(limit, scope, None).await
    }

    async fn claim_with(
        &self,
        limit: u32,
        scope: &ClaimScope,
        probe: Option<clawcut_store::Probe<'_>>,
    ) -> Result<Vec<Claimed>, StoreError> {
        let s = self.settings();
        let claimed = self
            .store
            .claim(&ClaimRequest {
                worker_id: &self.id,
                now: self.now_ms(),
                lease_ttl: s.lease_ttl,
                limit,
                rules: &s.rules,
                only_job: scope.only_job.as_deref(),
                force: scope.force,
                probe,
            })
            .await?;
        for c in &claimed {
            if let Claimed::Job(j) = c
                && let Some(dead) = &j.lease_taken_from
            {
                self.metrics.lease_takeovers.inc();
                info!(job = %j.id, from = %dead, "took over a job whose lease expired unreleased");
            }
        }
        Ok(claimed)
    }

    /// What one slot does with one claimed row: set it aside if it makes no
    /// sense, otherwise one step of its life, beside a heartbeat that keeps
    /// the lease while the step progresses. Leaves early, giving the lease
    /// back, when the lifecycle reaches `Aborting`; drops the attempt when
    /// the lease is lost.
    pub async fn work(&self, claimed: Claimed, mode: Mode, phases: Phases) -> JobReport {
        let report = self.work_row(claimed, mode, phases).await;
        self.activity.record_step(self.clock.now_ms(), &report);
        report
    }

    async fn work_row(&self, claimed: Claimed, mode: Mode, mut phases: Phases) -> JobReport {
        let job = match claimed {
            Claimed::Unreadable(row) => return self.set_aside_unreadable(row).await,
            Claimed::Job(job) => job,
        };
        let report = |to: clawcut_core::JobStatus, action, detail: String| JobReport {
            job_id: job.id.clone(),
            provider: job.provider.clone(),
            from: job.status.to_string(),
            to: to.to_string(),
            action,
            detail,
        };
        let Some(lease) = job.lease() else {
            return report(
                job.status,
                JobOutcome::Error,
                "claimed row carries no lease".into(),
            );
        };
        let handle = match self.row_problem(&job) {
            Ok(h) => h,
            Err(problem) => return self.set_aside(&job, &lease, problem).await,
        };
        if !phases.is_running() {
            self.release(&lease).await;
            return report(
                job.status,
                JobOutcome::Released,
                "shutting down before work started".into(),
            );
        }
        let s = self.settings();
        let progress = Progress::new(self.clock);
        let lost = keep_alive(KeepAlive {
            store: self.store.clone(),
            lease: lease.clone(),
            ttl: s.lease_ttl,
            window: s.progress_window,
            progress: progress.clone(),
        });
        let ctx = Ctx {
            job: &job,
            lease: &lease,
            s: &s,
            progress: &progress,
            handle,
            probe: mode.probe,
        };
        let done = tokio::select! {
            d = self.step(&ctx, mode.force) => d,
            () = lost => Err(WorkError::Store(StoreError::LeaseLost { job_id: job.id.clone() })),
            () = phases.reached(Phase::Aborting) => {
                self.release(&lease).await;
                let r = report(job.status, JobOutcome::Released, "shutdown grace period over".into());
                self.metrics.job(r.action);
                return r;
            }
        };
        let r = match done {
            Ok(d) => report(d.to, d.outcome, d.detail),
            Err(e) if e.is_lease_lost() => {
                self.metrics.leases_lost.inc();
                warn!(job = %job.id, "lease lost: another worker took the job or an operator canceled it; dropping this attempt");
                report(
                    job.status,
                    JobOutcome::LeaseLost,
                    "lease lost (another worker holds the job, or an operator canceled it)".into(),
                )
            }
            Err(e) => {
                if matches!(&e, WorkError::Store(s) if s.is_unavailable()) {
                    self.metrics.storage_fault("database", "unavailable");
                }
                warn!(job = %job.id, error = %error_chain(&e), "could not record the job's outcome; the lease will expire and the job will be redone");
                report(job.status, JobOutcome::Error, error_chain(&e))
            }
        };
        self.metrics.job(r.action);
        info!(job = %r.job_id, provider = %r.provider, from = %r.from, to = %r.to, action = %r.action, detail = %r.detail, "job worked");
        r
    }

    async fn release(&self, lease: &clawcut_core::Lease) {
        if let Err(e) = self.store.release(lease).await {
            warn!(job = %lease.job_id, error = %error_chain(&e), "could not release lease; it expires on its own");
        }
    }

    /// One step, chosen by core's eligibility rules.
    async fn step(&self, cx: &Ctx<'_>, force: bool) -> Result<Done, WorkError> {
        let now = self.now_ms();
        // We hold the lease, and a forced claim skipped min_age and due time:
        // ask core what kind of work this is without those gates.
        let mut probe = cx.job.clone();
        probe.lease_expires_at = None;
        if force {
            probe.updated_at = Millis::MIN;
            probe.next_attempt_at = Millis::MIN;
        }
        let kind = match cx.s.rules.check(&probe, now) {
            Eligibility::Eligible(k) => k,
            Eligibility::Ineligible(why) => {
                self.store.release(cx.lease).await?;
                return Ok(Done {
                    to: cx.job.status,
                    outcome: JobOutcome::Released,
                    detail: format!("not eligible: {why:?}"),
                });
            }
        };
        match kind {
            WorkKind::Expire => {
                let age = Duration::from_millis(
                    u64::try_from(now.saturating_sub(cx.job.created_at)).unwrap_or(0),
                );
                let reason = format!(
                    "expired: created {} ago, beyond reconcile.max_age ({}); the provider's outputs are presumed gone",
                    human(age),
                    humantime::format_duration(cx.s.rules.max_age)
                );
                self.settle(cx, Event::Expired, reason, JobOutcome::Expired)
                    .await
            }
            WorkKind::RecoverSubmission => self.recover_submission(cx).await,
            WorkKind::Submit => self.submit(cx).await,
            WorkKind::Poll => self.poll(cx).await,
        }
    }
}
