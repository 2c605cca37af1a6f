//! The SPEC's Prometheus metrics, on `prometheus-client`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::report::JobOutcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PauseLabels {
    pub provider: String,
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageFaultLabels {
    /// `media` or `database`.
    pub store: String,
    /// `media`: `disk_full` or `write`; `database`: `unavailable`.
    pub kind: String,
}

pub struct Metrics {
    registry: Registry,
    pub passes: Counter,
    pub jobs: Family<OutcomeLabel, Counter>,
    pub provider_requests: Family<ProviderLabels, Counter>,
    pub reschedules: Family<ReasonLabel, Counter>,
    pub lease_takeovers: Counter,
    pub leases_lost: Counter,
    pub eligible_jobs: Gauge,
    pub oldest_eligible_age_seconds: Gauge,
    pub needs_operator_jobs: Gauge,
    pub download_bytes: Counter,
    pub pass_duration: Histogram,
    pub claim_duration: Histogram,
    pub slots_busy: Gauge,
    pub slots_total: Gauge,
    pub provider_up: Family<ProviderLabel, Gauge>,
    pub provider_paused: Family<PauseLabels, Gauge>,
    pub provider_pauses: Family<PauseLabels, Counter>,
    pub storage_faults: Family<StorageFaultLabels, Counter>,
    pub media_writable: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("clawcut_worker");
        let passes = Counter::default();
        let jobs = Family::<OutcomeLabel, Counter>::default();
        // Every outcome is exported from the start, at zero, so a dashboard
        // sees the series before the first job of each kind.
        for o in JobOutcome::ALL {
            let _ = jobs.get_or_create(&OutcomeLabel {
                outcome: o.as_str().to_owned(),
            });
        }
        let provider_requests = Family::<ProviderLabels, Counter>::default();
        let reschedules = Family::<ReasonLabel, Counter>::default();
        let lease_takeovers = Counter::default();
        let leases_lost = Counter::default();
        let eligible_jobs = Gauge::default();
        let oldest_eligible_age_seconds = Gauge::default();
        let needs_operator_jobs = Gauge::default();
        let download_bytes = Counter::default();
        let pass_duration = Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0]);
        let claim_duration =
            Histogram::new([0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]);
        let slots_busy = Gauge::default();
        let slots_total = Gauge::default();
        let provider_up = Family::<ProviderLabel, Gauge>::default();
        let provider_paused = Family::<PauseLabels, Gauge>::default();
        let provider_pauses = Family::<PauseLabels, Counter>::default();
        let storage_faults = Family::<StorageFaultLabels, Counter>::default();
        // Exported at zero from the start, like the outcomes.
        for (store, kind) in [
            ("media", "disk_full"),
            ("media", "write"),
            ("database", "unavailable"),
        ] {
            let _ = storage_faults.get_or_create(&StorageFaultLabels {
                store: store.to_owned(),
                kind: kind.to_owned(),
            });
        }
        let media_writable = Gauge::default();
        media_writable.set(1);
        registry.register(
            "passes",
            "Claim rounds of the scheduler, and one-shot passes (reconcile, POST /v1/reconcile)",
            passes.clone(),
        );
        registry.register("jobs", "Jobs worked, by outcome", jobs.clone());
        registry.register(
            "provider_requests",
            "Provider poll requests, by provider and answer",
            provider_requests.clone(),
        );
        registry.register(
            "backoff_reschedules",
            "Jobs rescheduled, by reason (poll: still running, retry: transient error)",
            reschedules.clone(),
        );
        registry.register(
            "lease_takeovers",
            "Jobs claimed whose previous lease had expired unreleased",
            lease_takeovers.clone(),
        );
        registry.register(
            "leases_lost",
            "Writes refused because another worker had taken the job",
            leases_lost.clone(),
        );
        registry.register("eligible_jobs", "Jobs claimable now", eligible_jobs.clone());
        registry.register(
            "oldest_eligible_job_age_seconds",
            "Age of the oldest claimable job's updated_at",
            oldest_eligible_age_seconds.clone(),
        );
        registry.register(
            "needs_operator_jobs",
            "Jobs waiting for an operator's decision",
            needs_operator_jobs.clone(),
        );
        registry.register(
            "download_bytes",
            "Output bytes downloaded",
            download_bytes.clone(),
        );
        registry.register(
            "pass_duration_seconds",
            "Duration of one-shot passes (reconcile, POST /v1/reconcile)",
            pass_duration.clone(),
        );
        registry.register(
            "claim_duration_seconds",
            "Duration of the scheduler's claim statements",
            claim_duration.clone(),
        );
        registry.register(
            "slots_busy",
            "Scheduler slots working a job now",
            slots_busy.clone(),
        );
        registry.register(
            "slots",
            "Scheduler slots (reconcile.concurrency)",
            slots_total.clone(),
        );
        registry.register(
            "provider_up",
            "1 while the provider's jobs are claimed, 0 while it is paused (provider health)",
            provider_up.clone(),
        );
        registry.register(
            "provider_paused",
            "1 for the cause of a provider's pause now (unauthorized, account, outage)",
            provider_paused.clone(),
        );
        registry.register(
            "provider_pauses",
            "Pauses this process started, by provider and cause",
            provider_pauses.clone(),
        );
        registry.register(
            "storage_faults",
            "Local storage faults met by job steps: media writes refused (disk_full, write), database unreachable or locked (unavailable); none spends a job's attempts",
            storage_faults.clone(),
        );
        registry.register(
            "media_writable",
            "0 while the media directory refuses writes (from a failed write until a job's outputs are all written), else 1",
            media_writable.clone(),
        );
        Metrics {
            registry,
            passes,
            jobs,
            provider_requests,
            reschedules,
            lease_takeovers,
            leases_lost,
            eligible_jobs,
            oldest_eligible_age_seconds,
            needs_operator_jobs,
            download_bytes,
            pass_duration,
            claim_duration,
            slots_busy,
            slots_total,
            provider_up,
            provider_paused,
            provider_pauses,
            storage_faults,
            media_writable,
        }
    }

    pub fn storage_fault(&self, store: &str, kind: &str) {
        self.storage_faults
            .get_or_create(&StorageFaultLabels {
                store: store.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// A provider's health gauges: up, or paused for `cause`. Every cause
    /// series of the provider is written, so the old one drops to 0.
    pub fn provider_health(&self, provider: &str, paused: Option<clawcut_core::PauseCause>) {
        self.provider_up
            .get_or_create(&ProviderLabel {
                provider: provider.to_owned(),
            })
            .set(i64::from(paused.is_none()));
        for c in clawcut_core::PauseCause::ALL {
            self.provider_paused
                .get_or_create(&PauseLabels {
                    provider: provider.to_owned(),
                    cause: c.label().to_owned(),
                })
                .set(i64::from(paused == Some(c)));
        }
    }

    pub fn job(&self, outcome: JobOutcome) {
        self.jobs
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
    }

    pub fn provider_request(&self, provider: &str, status: &str) {
        self.provider_requests
            .get_or_create(&ProviderLabels {
                provider: provider.to_owned(),
                status: status.to_owned(),
            })
            .inc();
    }

    pub fn reschedule(&self, reason: &str) {
        self.reschedules
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
