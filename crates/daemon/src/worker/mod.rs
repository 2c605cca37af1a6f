//! One reconcile pass: claim a batch, work each job (poll, download, write
//! the outcome), heartbeat the leases still held, and report what happened.
//!
//! Every decision about a job's next status goes through
//! [`clawcut_core::transition()`]; this module only carries out I/O around it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawcut_core::{
    BackoffPolicy, DownloadSpec, Eligibility, EligibilityRules, Event, Job, JobStatus, Lease,
    Millis, Outcome, PollOutcome, Provider, ProviderErrorKind, WorkKind, transition,
};
use clawcut_providers::{DownloadPolicy, Downloader};
use clawcut_store::{
    ClaimRequest, Completion, Reschedule, Settle, Store, StoreError, StoredOutput,
};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

mod submit;

use crate::liveness::Liveness;
use crate::metrics::Metrics;

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

fn ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The lifecycle of the process, observed by every pass and job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// SIGTERM: claim nothing new, let started jobs finish.
    Draining,
    /// The grace period is over: drop the work, release the leases.
    Abort,
}

/// The knobs a pass reads; replaced as a whole on reload.
#[derive(Debug, Clone)]
pub struct Settings {
    pub batch_size: u32,
    pub concurrency: usize,
    pub lease_ttl: Duration,
    pub rules: EligibilityRules,
    pub backoff: BackoffPolicy,
    pub media_dir: PathBuf,
    pub max_bytes: u64,
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
    pub liveness: Arc<Liveness>,
}

#[derive(Debug, Clone, Default)]
pub struct PassOptions {
    pub limit: Option<u32>,
    pub only_job: Option<String>,
    pub force: bool,
}

/// What happened to one job in a pass.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub job_id: String,
    pub provider: String,
    pub from: String,
    pub to: String,
    /// `completed`, `failed`, `canceled`, `needs_operator`, `expired`,
    /// `snoozed`, `retry`, `released`, `lease_lost`, `error`.
    pub action: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PassSummary {
    pub claimed: usize,
    pub jobs: Vec<JobReport>,
    pub duration_ms: u64,
}

impl PassSummary {
    pub fn count(&self, action: &str) -> usize {
        self.jobs.iter().filter(|j| j.action == action).count()
    }
}

/// A job outcome before it becomes a report.
struct Done {
    to: JobStatus,
    action: &'static str,
    detail: String,
}

impl Worker {
    pub fn new(
        id: String,
        store: Arc<dyn Store>,
        providers: HashMap<String, ProviderHandle>,
        downloader: Downloader,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Worker {
        Worker {
            id,
            store,
            providers,
            downloader,
            settings: Mutex::new(Arc::new(settings)),
            metrics,
            liveness: Arc::new(Liveness::from_env()),
        }
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderHandle> {
        self.providers.get(name)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swap in new settings; passes already running keep the old ones.
    pub fn replace_settings(&self, s: Settings) {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
    }

    /// One pass: claim up to the batch size (or `opts.limit`) and work them
    /// with bounded concurrency. Jobs claimed but not started when the phase
    /// leaves `Running` are released at once.
    pub async fn pass(
        &self,
        opts: &PassOptions,
        phase: &watch::Receiver<Phase>,
    ) -> Result<PassSummary, StoreError> {
        let started = Instant::now();
        let s = self.settings();
        if *phase.borrow() != Phase::Running {
            return Ok(PassSummary::default());
        }
        let now = now_ms();
        let jobs = self
            .store
            .claim(&ClaimRequest {
                worker_id: &self.id,
                now,
                lease_ttl: s.lease_ttl,
                limit: opts.limit.unwrap_or(s.batch_size),
                rules: &s.rules,
                only_job: opts.only_job.as_deref(),
                force: opts.force,
            })
            .await?;
        let claimed = jobs.len();
        for j in &jobs {
            if let Some(dead) = &j.lease_taken_from {
                self.metrics.lease_takeovers.inc();
                info!(job = %j.id, from = %dead, "took over a job whose lease expired unreleased");
            }
        }
        let held: Arc<Mutex<HashMap<String, Lease>>> = Arc::new(Mutex::new(
            jobs.iter()
                .filter_map(|j| j.lease().map(|l| (j.id.clone(), l)))
                .collect(),
        ));
        // Stops with the pass, even when the pass future is dropped: a
        // heartbeat outliving its work would hold the leases forever.
        let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat_loop(
            self.store.clone(),
            held.clone(),
            s.lease_ttl,
            self.metrics.clone(),
        )));
        let reports: Vec<JobReport> = futures_util::stream::iter(jobs)
            .map(|job| {
                let held = held.clone();
                let s = s.clone();
                let mut phase = phase.clone();
                async move {
                    let report = self.work_guarded(job, &s, opts.force, &mut phase).await;
                    held.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&report.job_id);
                    report
                }
            })
            .buffer_unordered(s.concurrency.max(1))
            .collect()
            .await;
        self.metrics.passes.inc();
        self.metrics
            .pass_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(PassSummary {
            claimed,
            jobs: reports,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Work one job unless the process is leaving; on abort, give the lease
    /// back so another replica (or the next start) takes the job at once.
    async fn work_guarded(
        &self,
        job: Job,
        s: &Settings,
        force: bool,
        phase: &mut watch::Receiver<Phase>,
    ) -> JobReport {
        let base = |to: JobStatus, action: &'static str, detail: String| JobReport {
            job_id: job.id.clone(),
            provider: job.provider.clone(),
            from: job.status.to_string(),
            to: to.to_string(),
            action,
            detail,
        };
        let Some(lease) = job.lease() else {
            return base(job.status, "error", "claimed row carries no lease".into());
        };
        if *phase.borrow() != Phase::Running {
            return self
                .release(
                    &lease,
                    base(
                        job.status,
                        "released",
                        "shutting down before work started".into(),
                    ),
                )
                .await;
        }
        let work = self.work(&job, &lease, s, force);
        let abort = async {
            // An error means the sender is gone: the process is exiting.
            let _ = phase.wait_for(|p| *p == Phase::Abort).await;
        };
        let done = tokio::select! {
            d = work => d,
            () = abort => {
                return self.release(&lease, base(job.status, "released", "shutdown grace period over".into())).await;
            }
        };
        let report = match done {
            Ok(d) => base(d.to, d.action, d.detail),
            Err(e) if e.is_lease_lost() => {
                self.metrics.leases_lost.inc();
                warn!(job = %job.id, "lease lost: another worker took the job; dropping this attempt");
                base(
                    job.status,
                    "lease_lost",
                    "another worker holds the job now".into(),
                )
            }
            Err(e) => {
                warn!(job = %job.id, error = %error_chain(&e), "could not record the job's outcome; the lease will expire and the job will be redone");
                base(job.status, "error", error_chain(&e))
            }
        };
        self.metrics.job(report.action);
        self.liveness.beat();
        info!(job = %report.job_id, provider = %report.provider, from = %report.from, to = %report.to, action = report.action, detail = %report.detail, "job worked");
        report
    }

    async fn release(&self, lease: &Lease, report: JobReport) -> JobReport {
        if let Err(e) = self.store.release(lease).await {
            warn!(job = %lease.job_id, error = %error_chain(&e), "could not release lease; it expires on its own");
        }
        self.metrics.job("released");
        report
    }

    async fn work(
        &self,
        job: &Job,
        lease: &Lease,
        s: &Settings,
        force: bool,
    ) -> Result<Done, StoreError> {
        let now = now_ms();
        // We hold the lease, and a forced claim skipped min_age and due time:
        // ask core what kind of work this is without those gates.
        let mut probe = job.clone();
        probe.lease_expires_at = None;
        if force {
            probe.updated_at = Millis::MIN;
            probe.next_attempt_at = Millis::MIN;
        }
        let kind = match s.rules.check(&probe, now) {
            Eligibility::Eligible(k) => k,
            Eligibility::Ineligible(why) => {
                self.store.release(lease).await?;
                return Ok(Done {
                    to: job.status,
                    action: "released",
                    detail: format!("not eligible: {why:?}"),
                });
            }
        };
        match kind {
            WorkKind::Expire => {
                let age = Duration::from_millis(now.saturating_sub(job.created_at).max(0) as u64);
                let reason = format!(
                    "expired: created {} ago, beyond reconcile.max_age ({}); the provider's outputs are presumed gone",
                    humantime::format_duration(round_secs(age)),
                    humantime::format_duration(s.rules.max_age)
                );
                self.settle(job, lease, Event::Expired, reason, "expired")
                    .await
            }
            WorkKind::RecoverSubmission => self.recover_submission(job, lease, s).await,
            WorkKind::Submit => self.submit(job, lease, s).await,
            WorkKind::Poll => self.poll(job, lease, s).await,
        }
    }

    async fn poll(&self, job: &Job, lease: &Lease, s: &Settings) -> Result<Done, StoreError> {
        let Some(handle) = self.providers.get(&job.provider) else {
            let msg = format!("no provider named {:?} in the config", job.provider);
            return self.retry(job, lease, s, false, msg, None).await;
        };
        let Some(provider_job_id) = job.provider_job_id.as_deref() else {
            self.store.release(lease).await?;
            return Ok(Done {
                to: job.status,
                action: "released",
                detail: "no provider job id".into(),
            });
        };
        let answer = handle.provider.poll(provider_job_id).await;
        let status_label = match &answer {
            Ok(_) => "ok",
            Err(e) => e.kind.label(),
        };
        self.metrics.provider_request(&job.provider, status_label);
        match answer {
            Ok(PollOutcome::Running {
                progress,
                poll_after,
            }) => {
                let to = decide(job.status, Event::StillRunning(progress))?;
                let polls = job.polls.saturating_add(1);
                let delay = s.backoff.delay(polls, rand::random::<f64>(), poll_after);
                self.schedule_next(
                    job,
                    lease,
                    to.status(),
                    job.attempts,
                    polls,
                    delay,
                    None,
                    "poll",
                )
                .await?;
                Ok(Done {
                    to: to.status(),
                    action: "snoozed",
                    detail: format!(
                        "still running; next poll in {}",
                        humantime::format_duration(round_secs(delay))
                    ),
                })
            }
            Ok(PollOutcome::Succeeded { video, thumbnail }) => {
                self.store_outputs(job, lease, s, handle, &video, thumbnail.as_ref())
                    .await
            }
            Ok(PollOutcome::Failed { reason }) => {
                self.settle(
                    job,
                    lease,
                    Event::ProviderFailed,
                    format!("provider reported failure: {reason}"),
                    "failed",
                )
                .await
            }
            Ok(PollOutcome::Canceled { reason }) => {
                self.settle(
                    job,
                    lease,
                    Event::ProviderCanceled,
                    format!("provider reported the job canceled: {reason}"),
                    "canceled",
                )
                .await
            }
            Ok(PollOutcome::OutputsGone { reason }) => {
                self.settle(
                    job,
                    lease,
                    Event::OutputsGone,
                    format!("outputs gone at the provider: {reason}"),
                    "failed",
                )
                .await
            }
            Err(e) => {
                let counts = e.kind.counts_as_attempt();
                if let ProviderErrorKind::Unauthorized(code) = e.kind {
                    warn!(provider = %job.provider, status = code, "provider refused our credentials; check the API key's environment variable");
                }
                let msg = format!("poll {}: {}", provider_job_id, e);
                self.retry(job, lease, s, counts, msg, e.retry_after).await
            }
        }
    }

    async fn store_outputs(
        &self,
        job: &Job,
        lease: &Lease,
        s: &Settings,
        handle: &ProviderHandle,
        video: &DownloadSpec,
        thumbnail: Option<&DownloadSpec>,
    ) -> Result<Done, StoreError> {
        let (Some(scene), Some(version)) = (
            safe_id(job.scene_id.as_deref()),
            safe_id(job.scene_version_id.as_deref().or(Some(&job.id))),
        ) else {
            let reason = "scene_id or scene_version_id is missing or not of the form [A-Za-z0-9_-]{1,64}; refusing to build a media path from it".to_owned();
            return self
                .settle(job, lease, Event::ProviderFailed, reason, "failed")
                .await;
        };
        let video_path = final_path(&s.media_dir, "videos", scene, version, &video.extension);
        let stored_video = match self.fetch(video, handle, s, &video_path).await {
            Ok(v) => v,
            Err(f) => return self.download_failed(job, lease, s, f).await,
        };
        let stored_thumb = match thumbnail {
            None => None,
            Some(t) => {
                let p = final_path(&s.media_dir, "thumbnails", scene, version, &t.extension);
                match self.fetch(t, handle, s, &p).await {
                    Ok(v) => Some(v),
                    // A missing thumbnail does not cost the user the video.
                    Err(FetchFailure::Gone(why)) => {
                        warn!(job = %job.id, reason = %why, "thumbnail is gone at the provider; completing without it");
                        None
                    }
                    Err(f) => return self.download_failed(job, lease, s, f).await,
                }
            }
        };
        decide(job.status, Event::OutputsStored)?;
        let detail = format!(
            "video {} ({} bytes, sha256 {})",
            stored_video.path, stored_video.bytes, stored_video.sha256
        );
        self.store
            .complete(
                lease,
                &Completion {
                    from: job.status,
                    now: now_ms(),
                    video: stored_video,
                    thumbnail: stored_thumb,
                },
            )
            .await?;
        Ok(Done {
            to: JobStatus::Completed,
            action: "completed",
            detail,
        })
    }

    async fn fetch(
        &self,
        spec: &DownloadSpec,
        handle: &ProviderHandle,
        s: &Settings,
        path: &Path,
    ) -> Result<StoredOutput, FetchFailure> {
        let metrics = self.metrics.clone();
        let liveness = self.liveness.clone();
        let mut last = 0u64;
        let got = self
            .downloader
            .download(
                spec,
                &handle.policy,
                &s.media_dir,
                path,
                s.max_bytes,
                move |total| {
                    metrics.download_bytes.inc_by(total.saturating_sub(last));
                    last = total;
                    liveness.beat();
                },
            )
            .await;
        match got {
            Ok(d) => Ok(StoredOutput {
                path: d.path.to_string_lossy().into_owned(),
                sha256: d.sha256_hex,
                bytes: d.bytes,
            }),
            Err(e) if e.is_output_gone() => Err(FetchFailure::Gone(error_chain(&e))),
            Err(e) if e.is_transient() => {
                Err(FetchFailure::Transient(error_chain(&e), e.retry_after()))
            }
            Err(e) => Err(FetchFailure::Permanent(error_chain(&e))),
        }
    }

    async fn download_failed(
        &self,
        job: &Job,
        lease: &Lease,
        s: &Settings,
        f: FetchFailure,
    ) -> Result<Done, StoreError> {
        match f {
            FetchFailure::Gone(why) => {
                self.settle(
                    job,
                    lease,
                    Event::OutputsGone,
                    format!("outputs gone at the provider: {why}"),
                    "failed",
                )
                .await
            }
            FetchFailure::Permanent(why) => {
                self.settle(
                    job,
                    lease,
                    Event::ProviderFailed,
                    format!("output refused: {why}"),
                    "failed",
                )
                .await
            }
            FetchFailure::Transient(why, retry_after) => {
                self.retry(job, lease, s, true, format!("download: {why}"), retry_after)
                    .await
            }
        }
    }

    /// A transient error: one more attempt (when it counts), next try on the
    /// backoff schedule, or failed once the attempts are spent.
    async fn retry(
        &self,
        job: &Job,
        lease: &Lease,
        s: &Settings,
        counts: bool,
        msg: String,
        retry_after: Option<Duration>,
    ) -> Result<Done, StoreError> {
        let attempts = job.attempts.saturating_add(u32::from(counts));
        let event = Event::Transient {
            attempts,
            max_attempts: s.backoff.max_attempts,
        };
        match decide(job.status, event)? {
            Outcome::Retry(to) => {
                let delay = s
                    .backoff
                    .delay(attempts.max(1), rand::random::<f64>(), retry_after);
                self.schedule_next(
                    job,
                    lease,
                    to,
                    attempts,
                    job.polls,
                    delay,
                    Some(msg.clone()),
                    "retry",
                )
                .await?;
                debug!(job = %job.id, attempts, error = %msg, "transient error; rescheduled");
                Ok(Done {
                    to,
                    action: "retry",
                    detail: format!(
                        "{msg}; attempt {attempts} of {}, next try in {}",
                        s.backoff.max_attempts,
                        humantime::format_duration(round_secs(delay))
                    ),
                })
            }
            Outcome::Move(to) | Outcome::Snooze(to) => {
                let (reason, action) = if to == JobStatus::NeedsOperator {
                    (
                        format!(
                            "could not learn the submission's outcome after {attempts} tries; last: {msg}. Check the provider, then `clawcut-worker resolve {} --resubmit` or `--fail`",
                            job.id
                        ),
                        "needs_operator",
                    )
                } else {
                    (
                        format!("gave up after {attempts} transient errors; last: {msg}"),
                        "failed",
                    )
                };
                self.settle(job, lease, event, reason, action).await
            }
        }
    }

    /// Write the next try (status, counters, due time), release the lease.
    #[allow(clippy::too_many_arguments)]
    async fn schedule_next(
        &self,
        job: &Job,
        lease: &Lease,
        to: JobStatus,
        attempts: u32,
        polls: u32,
        delay: Duration,
        last_error: Option<String>,
        reason: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        self.store
            .reschedule(
                lease,
                &Reschedule {
                    from: job.status,
                    to,
                    now,
                    attempts,
                    polls,
                    next_attempt_at: now.saturating_add(ms(delay)),
                    last_error,
                },
            )
            .await?;
        self.metrics.reschedule(reason);
        Ok(())
    }

    async fn settle(
        &self,
        job: &Job,
        lease: &Lease,
        event: Event,
        reason: String,
        action: &'static str,
    ) -> Result<Done, StoreError> {
        let to = decide(job.status, event)?.status();
        self.store
            .settle(
                lease,
                &Settle {
                    from: job.status,
                    to,
                    now: now_ms(),
                    reason: Some(reason.clone()),
                    provider_job_id: None,
                    idempotency_key: None,
                    detail: serde_json::json!({ "event": event.name(), "reason": reason }),
                    keep_lease: false,
                    attempts: if let Event::Transient { attempts, .. } = event {
                        Some(attempts)
                    } else {
                        None
                    },
                },
            )
            .await?;
        Ok(Done {
            to,
            action,
            detail: reason,
        })
    }
}

enum FetchFailure {
    Gone(String),
    Permanent(String),
    Transient(String, Option<Duration>),
}

/// `transition` with its error mapped into the store's error space: an
/// illegal transition means the row changed status under our lease, which is
/// the same situation as a lost lease.
fn decide(from: JobStatus, event: Event) -> Result<Outcome, StoreError> {
    transition(from, event).map_err(|e| StoreError::CorruptRow {
        job_id: String::new(),
        detail: e.to_string(),
    })
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// IDs become path components: only the SPEC's `[A-Za-z0-9_-]{1,64}` may.
fn safe_id(id: Option<&str>) -> Option<&str> {
    id.filter(|s| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// `<media>/<videos|thumbnails>/<scene_id>/<scene_version_id>.<ext>`.
pub fn final_path(media: &Path, sub: &str, scene: &str, version: &str, ext: &str) -> PathBuf {
    let ext = if !ext.is_empty() && ext.len() <= 8 && ext.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        ext.to_ascii_lowercase()
    } else if sub == "videos" {
        "mp4".into()
    } else {
        "jpg".into()
    };
    media.join(sub).join(scene).join(format!("{version}.{ext}"))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn heartbeat_loop(
    store: Arc<dyn Store>,
    held: Arc<Mutex<HashMap<String, Lease>>>,
    ttl: Duration,
    metrics: Arc<Metrics>,
) {
    let every = (ttl / 3).max(Duration::from_millis(200));
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let leases: Vec<Lease> = held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for lease in leases {
            match store.heartbeat(&lease, now_ms(), ttl).await {
                Ok(()) => {}
                Err(e) if e.is_lease_lost() => {
                    metrics.leases_lost.inc();
                    held.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&lease.job_id);
                    warn!(job = %lease.job_id, "heartbeat: lease lost to another worker");
                }
                Err(e) => {
                    warn!(job = %lease.job_id, error = %error_chain(&e), "heartbeat failed; will retry")
                }
            }
        }
    }
}

/// An error and its sources on one line, for logs and `last_error`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_paths_follow_the_spec() {
        let p = final_path(Path::new("/m"), "videos", "s1", "v2", "mp4");
        assert_eq!(p, PathBuf::from("/m/videos/s1/v2.mp4"));
        let p = final_path(Path::new("/m"), "thumbnails", "s1", "v2", "WEBP");
        assert_eq!(p, PathBuf::from("/m/thumbnails/s1/v2.webp"));
        let p = final_path(Path::new("/m"), "videos", "s1", "v2", "../../etc");
        assert_eq!(p, PathBuf::from("/m/videos/s1/v2.mp4"));
    }

    #[test]
    fn only_spec_ids_become_path_components() {
        assert_eq!(safe_id(Some("scene_1-A")), Some("scene_1-A"));
        for bad in ["", "..", "a/b", "a b", &"x".repeat(65)] {
            assert_eq!(safe_id(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(safe_id(None), None);
    }
}
