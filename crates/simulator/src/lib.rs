//! `clawcut-simulator`: a simulated ClawCut app and simulated video
//! providers, for `clawcut-worker demo` and for every test.
//!
//! The daemon sits between two systems it does not own: the app, which
//! inserts `ai_jobs` rows, and a provider's HTTP API. This crate stands in
//! for both, so the real daemon (or one real adapter) runs against them
//! unchanged:
//!
//! - [`db`]: the app's side of the database. [`db::AppDb`] inserts scenes,
//!   versions and jobs with exactly the columns the app writes, and reads
//!   back what the daemon did, on SQLite or PostgreSQL.
//! - one fake per provider on 127.0.0.1, speaking the real API's JSON and
//!   error shapes and checking its authentication: [`fake_openai`],
//!   [`fake_replicate`], [`fake_runway`], [`fake_luma`], [`fake_fal`],
//!   [`fake_kling`], [`fake_veo`]. Each job is driven by a script (one step
//!   per poll, the last repeating), outputs are deterministic bytes (so the
//!   expected sha256 is known without a download), and every request is
//!   counted. Creates can be held open or have their answer lost, for the
//!   submission crash tests.
//!
//! Where to start reading: [`fake_openai`] — `demo`'s provider, and the
//! fake most tests use: its [`fake_openai::Script`] and
//! [`fake_openai::Step`] say what a video does; its private `plumbing`
//! submodule has the server, the streamed content and the in-flight counts
//! that all fakes share. Then [`fake_common`]: the job registry and the
//! create control behind the Runway, Luma, fal, Kling and Veo fakes, each of
//! which only renders its provider's JSON. [`fake_replicate`] keeps its own
//! registry (files under `/files/`, two create routes).
//!
//! This crate is linked into the release binary (for `demo`), so it holds
//! nothing test-only: temp databases and the throwaway PostgreSQL cluster
//! are in `clawcut-test-support`, which re-exports this crate's modules
//! under their old paths.

pub mod db;
pub mod fake_common;
pub mod fake_fal;
pub mod fake_kling;
pub mod fake_luma;
pub mod fake_openai;
pub mod fake_replicate;
pub mod fake_runway;
pub mod fake_veo;
