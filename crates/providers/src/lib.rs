//! `clawcut-providers`: the HTTP side of clawcut-worker — one adapter per
//! video-generation provider, and the downloader that brings finished outputs
//! home safely.
//!
//! Start with [`ProviderConfig`] and [`build_provider`]: the daemon fills the
//! config from a `[providers.<name>]` table and gets an
//! `Arc<dyn clawcut_core::Provider>` whose `poll` answers a
//! [`clawcut_core::PollOutcome`] and whose `submit` creates a job, both with
//! errors classified as [`clawcut_core::ProviderError`]. Then [`Downloader`],
//! which stages a [`clawcut_core::DownloadSpec`] in a temporary file in the
//! media directory ([`Downloader::stage`]), enforcing the [`DownloadPolicy`]
//! (hosts and schemes) and the [`DownloadLimits`] (bytes, total deadline,
//! stalls), and hands back a complete, synced [`Staged`] file that the caller
//! installs at its final path ([`Staged::install`]) only inside its fenced
//! commit, then settles ([`Installed::commit`] or [`Installed::revert`]).
//!
//! Layout: [`config`] (kinds, config, construction); `http` (the client with
//! credentials, the per-provider [`RateLimiter`] and in-flight cap, and the
//! one mapping of HTTP failures to error kinds every adapter shares);
//! `request` (reading `ai_jobs.request` for a create call); `outcome`
//! (building poll outcomes); `sign` (Kling's JWT, Replicate's webhook
//! signatures); one module per provider — `openai`, `replicate`, `runway`,
//! `luma`, `fal`, `kling`, `veo`, each documenting its endpoints, where the
//! idempotency key goes, its webhooks and what a crash mid-create means for
//! it; [`download`]; [`error`].

pub mod config;
pub mod download;
pub mod error;
mod fal;
mod http;
mod kling;
mod luma;
mod openai;
mod outcome;
pub mod rate;
mod replicate;
mod request;
mod runway;
mod sign;
mod veo;

pub use config::{ProviderConfig, ProviderKind, build_provider};
pub use download::{
    DownloadLimits, DownloadPolicy, Downloaded, Downloader, Fetched, Installed, OutputSink,
    Received, Staged, cleanup_stale_temp, cleanup_stale_temp_older_than, is_no_space, sync_all,
    sync_dir,
};
pub use error::ProvidersError;
pub use rate::RateLimiter;
