//! `clawcut-test-support`: the one place for test fixtures, shared by every
//! crate's tests and by `clawcut-worker demo`.
//!
//! - [`db`]: temp SQLite databases and [`db::AppDb`], which writes rows
//!   exactly as the ClawCut app does and reads back what the daemon did, on
//!   either backend;
//! - [`pg`]: a throwaway PostgreSQL cluster started from the machine's server
//!   binaries (`initdb`/`pg_ctl`), one per test process, removed at exit;
//! - [`fake_openai`] and [`fake_replicate`]: fake providers on 127.0.0.1 that
//!   speak the real APIs' JSON, driven by per-job scripts, counting every
//!   request. `demo` uses [`fake_openai`] as its simulated provider.

pub mod db;
pub mod fake_common;
pub mod fake_fal;
pub mod fake_kling;
pub mod fake_luma;
pub mod fake_openai;
pub mod fake_replicate;
pub mod fake_runway;
pub mod fake_veo;
pub mod pg;
