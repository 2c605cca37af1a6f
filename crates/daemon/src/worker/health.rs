//! Provider health in the worker (SPEC, "Provider health").
//!
//! Every answer of a poll, a create or a lookup goes through
//! [`Worker::observe`]: core's [`OutageCount`] decides whether the fault is
//! the provider's or the account's, and a pause is written to
//! `provider_pauses`, where the claim statements of every replica see it.
//! While a provider is paused its faults spend no attempt. Once its
//! `probe_at` passes, one replica takes the probe ([`Worker::probe`]): one
//! job of that provider, preferring the kind of call that failed. A probe
//! the provider answers lifts the pause; one it fails leaves the pause with
//! a doubled cooldown.
//!
//! Only a probe (or a job an operator named) resumes a provider: jobs that
//! were already in flight when it was paused may well succeed at polls
//! while creates still fail for want of credit, and letting them resume it
//! would flap.
//!
//! [`Board`] is this process's copy of the table, refreshed at most once a
//! second by the scheduler and at once after this process changes it; it
//! feeds `/readyz`, `/metrics` and the probe schedule.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use clawcut_core::{
    FaultScope, HealthPolicy, Millis, OutageCount, PauseCause, ProviderError, health::Answer,
};
use clawcut_store::{Claimed, PauseProvider, Probe, ProviderCall, ProviderPause, StoreError};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{ClaimScope, Ctx, Worker};
use crate::report::error_chain;

/// The board is read again when it is older than this.
const BOARD_MAX_AGE: Duration = Duration::from_secs(1);

/// This process's view of provider health.
#[derive(Default)]
pub struct Health {
    counts: Mutex<HashMap<String, OutageCount>>,
    board: Mutex<Board>,
}

/// The paused providers as last read from the database.
#[derive(Debug, Clone, Default)]
pub struct Board {
    pub pauses: BTreeMap<String, ProviderPause>,
    read_at: Option<Instant>,
}

impl Board {
    /// The earliest due probe, as epoch ms.
    pub fn next_probe_at(&self) -> Option<Millis> {
        self.pauses.values().map(|p| p.probe_at).min()
    }
}

impl Health {
    pub fn board(&self) -> Board {
        self.board.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_paused(&self, provider: &str) -> bool {
        self.pause_of(provider).is_some()
    }

    /// The provider's pause as last read, without copying the board.
    pub fn pause_of(&self, provider: &str) -> Option<ProviderPause> {
        self.board
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pauses
            .get(provider)
            .cloned()
    }

    fn count(
        &self,
        provider: &str,
        answer: Answer<'_>,
        policy: &HealthPolicy,
    ) -> Option<PauseCause> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(provider.to_owned())
            .or_default()
            .observe(answer, policy)
    }

    fn is_stale(&self) -> bool {
        self.board
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read_at
            .is_none_or(|t| t.elapsed() >= BOARD_MAX_AGE)
    }
}

impl Worker {
    /// Feed one provider answer to provider health. Returns `true` when
    /// the provider is paused (now or already): the job spends no attempt
    /// on this fault.
    pub(super) async fn observe(
        &self,
        cx: &Ctx<'_>,
        call: ProviderCall,
        fault: Option<&ProviderError>,
    ) -> bool {
        let provider = cx.job.provider.as_str();
        self.activity
            .record_answer(provider, fault.is_some(), self.clock.now_ms());
        let Some(e) = fault else {
            self.answered(cx, provider).await;
            return false;
        };
        let answer = Answer::Fault {
            kind: e.kind,
            job_id: &cx.job.id,
        };
        if let Some(cause) = self.health.count(provider, answer, &cx.s.health) {
            self.pause(cx, cause, e, call).await;
            return true;
        }
        match e.kind.scope() {
            FaultScope::Job => {
                self.answered(cx, provider).await;
                false
            }
            FaultScope::Account | FaultScope::Outage => {
                let paused = self.health.is_paused(provider);
                if paused && cx.probe {
                    info!(provider, job = %cx.job.id, error = %e, "probe: the provider still fails; it stays paused");
                }
                paused
            }
        }
    }

    /// The provider answered about the job: it is up. A probe's answer
    /// lifts its pause.
    async fn answered(&self, cx: &Ctx<'_>, provider: &str) {
        let _ = self.health.count(provider, Answer::Answered, &cx.s.health);
        if !cx.probe {
            return;
        }
        let Some(since) = self.health.pause_of(provider) else {
            return;
        };
        match self.store.resume_provider(provider).await {
            Ok(true) => {
                let paused_for =
                    Duration::from_secs(until(self.now_ms(), since.paused_at).as_secs());
                info!(
                    provider,
                    job = %cx.job.id,
                    paused_for = %humantime::format_duration(paused_for),
                    "provider resumed: a probe got an answer; its jobs are claimed again"
                );
                self.board_without(provider);
            }
            // Another replica resumed it first.
            Ok(false) => self.board_without(provider),
            Err(e) => {
                warn!(provider, error = %error_chain(&e), "could not resume the provider; the next probe tries again")
            }
        }
    }

    async fn pause(&self, cx: &Ctx<'_>, cause: PauseCause, e: &ProviderError, call: ProviderCall) {
        let provider = cx.job.provider.as_str();
        let reason = e.to_string();
        let cooldown = cx.s.health.cooldown;
        let write = PauseProvider {
            provider,
            cause,
            reason: &reason,
            call,
            now: self.now_ms(),
            worker_id: &self.id,
            cooldown,
        };
        match self.store.pause_provider(&write).await {
            Ok(true) => {
                self.metrics
                    .provider_pauses
                    .get_or_create(&crate::metrics::PauseLabels {
                        provider: provider.to_owned(),
                        cause: cause.label().to_owned(),
                    })
                    .inc();
                warn!(
                    provider,
                    cause = cause.label(),
                    reason = %reason,
                    call = call.label(),
                    job = %cx.job.id,
                    next_probe_in = %humantime::format_duration(cooldown),
                    advice = cause.advice(),
                    "provider paused: its jobs wait and spend no attempts until a probe gets an answer"
                );
            }
            Ok(false) => {}
            Err(err) => {
                warn!(provider, cause = cause.label(), error = %error_chain(&err), "could not record the provider's pause; its jobs go on backing off");
            }
        }
        self.refresh_pauses().await;
    }

    fn board_without(&self, provider: &str) {
        let mut b = self.health.board.lock().unwrap_or_else(|e| e.into_inner());
        b.pauses.remove(provider);
        drop(b);
        self.metrics.provider_health(provider, None);
    }

    /// Read the pauses again when the board is older than a second.
    pub async fn refresh_pauses_if_stale(&self) {
        if self.health.is_stale() {
            self.refresh_pauses().await;
        }
    }

    /// Read `provider_pauses`; log the changes other processes made, and
    /// set the health gauges of every configured provider.
    pub async fn refresh_pauses(&self) {
        let read = match self.store.provider_pauses().await {
            Ok(v) => v,
            Err(e) => {
                // Keep the old board; try again in a second.
                let mut b = self.health.board.lock().unwrap_or_else(|e| e.into_inner());
                b.read_at = Some(Instant::now());
                drop(b);
                warn!(error = %error_chain(&e), "could not read the provider pauses");
                return;
            }
        };
        let new: BTreeMap<String, ProviderPause> =
            read.into_iter().map(|p| (p.provider.clone(), p)).collect();
        let old = {
            let mut b = self.health.board.lock().unwrap_or_else(|e| e.into_inner());
            let old = std::mem::replace(&mut b.pauses, new.clone());
            b.read_at = Some(Instant::now());
            old
        };
        for (name, p) in &new {
            if !old.contains_key(name) && p.paused_by != self.id {
                warn!(
                    provider = %name,
                    cause = p.cause.label(),
                    reason = %p.reason,
                    by = %p.paused_by,
                    advice = p.cause.advice(),
                    "provider is paused (recorded in the database); its jobs wait"
                );
            }
        }
        for name in old.keys() {
            if !new.contains_key(name) {
                info!(provider = %name, "provider resumed (recorded in the database)");
            }
        }
        for name in self.providers.keys() {
            self.metrics
                .provider_health(name, new.get(name).map(|p| p.cause));
        }
    }

    /// Take the due probe of `provider` and claim its job. `None` when
    /// another replica took it, or no job of the provider is eligible.
    pub async fn probe(&self, pause: &ProviderPause) -> Result<Option<Claimed>, StoreError> {
        let s = self.settings();
        let next = s.health.next_cooldown(pause.cooldown);
        let now = self.now_ms();
        let won = self.store.take_probe(&pause.provider, now, next).await?;
        let claimed = if won {
            let mut c = self
                .claim_with(
                    1,
                    &ClaimScope::default(),
                    Some(Probe {
                        provider: &pause.provider,
                        prefer_unsubmitted: pause.call == ProviderCall::Submit,
                    }),
                )
                .await?;
            let c = c.pop();
            match &c {
                Some(Claimed::Job(j)) => {
                    info!(provider = %pause.provider, job = %j.id, probes = pause.probes + 1, next_probe_in = %humantime::format_duration(next), "probing a paused provider with one job");
                }
                Some(Claimed::Unreadable(_)) => {}
                None => {
                    info!(provider = %pause.provider, next_probe_in = %humantime::format_duration(next), "a probe is due but none of the provider's jobs is eligible");
                }
            }
            c
        } else {
            None
        };
        self.refresh_pauses().await;
        Ok(claimed)
    }
}

/// An operator lifts `provider`'s pause (`resume-provider`, `POST
/// /v1/providers/{name}/resume`): the pause that was lifted, `None` when
/// the provider was not paused (or a probe lifted it first).
pub async fn resume_by_operator(
    store: &dyn clawcut_store::Store,
    provider: &str,
    operator: &str,
) -> Result<Option<ProviderPause>, StoreError> {
    let Some(pause) = store
        .provider_pauses()
        .await?
        .into_iter()
        .find(|p| p.provider == provider)
    else {
        return Ok(None);
    };
    if !store.resume_provider(provider).await? {
        return Ok(None);
    }
    info!(
        provider,
        operator,
        cause = pause.cause.label(),
        "provider resumed by an operator"
    );
    Ok(Some(pause))
}

/// Milliseconds until `at`, for the scheduler's timer.
pub fn until(at: Millis, now: Millis) -> Duration {
    Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}
