//! `clawcut-providers`: the HTTP side of clawcut-worker — one adapter per
//! video-generation provider, and the downloader that brings finished outputs
//! home safely.
//!
//! Start with [`ProviderConfig`] and [`build_provider`]: the daemon fills the
//! config from a `[providers.<name>]` table and gets an
//! `Arc<dyn clawcut_core::Provider>` whose `poll` answers a
//! [`clawcut_core::PollOutcome`] or a classified
//! [`clawcut_core::ProviderError`]. Then [`Downloader`], which streams a
//! [`clawcut_core::DownloadSpec`] to a temporary file in the media directory,
//! enforcing the [`DownloadPolicy`] (hosts and schemes) and the byte limit,
//! and renames it into place only once it is complete and synced.
//!
//! Layout: [`config`] (kinds, config, construction), `http` (the client,
//! in-flight cap and error classification every adapter shares), `openai` and
//! `replicate` (JSON → outcome), [`download`], [`error`].

pub mod config;
pub mod download;
pub mod error;
mod http;
mod openai;
mod replicate;

pub use config::{ProviderConfig, ProviderKind, build_provider};
pub use download::{
    DownloadPolicy, Downloaded, Downloader, cleanup_stale_temp, cleanup_stale_temp_older_than,
};
pub use error::ProvidersError;
