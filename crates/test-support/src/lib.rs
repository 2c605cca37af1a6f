//! `clawcut-test-support`: the test fixtures shared by every crate's tests
//! (and benchmarks) that are no part of the shipped binary.
//!
//! - [`db`]: [`db::temp_sqlite`], a temp SQLite database, plus everything of
//!   `clawcut_simulator::db` ([`db::AppDb`], which writes rows exactly as
//!   the ClawCut app does and reads back what the daemon did);
//! - [`pg`]: a throwaway PostgreSQL cluster started from the machine's server
//!   binaries (`initdb`/`pg_ctl`), one per test process, removed at exit;
//! - [`procfs`]: a started process's memory and CPU time, from `/proc`;
//! - [`s3`]: a throwaway S3-compatible server (moto) behind a relay a test
//!   can cut, for `media.store`;
//! - [`fake_openai`], [`fake_replicate`], [`fake_common`] and the other
//!   `fake_*` modules: re-exported unchanged from `clawcut-simulator`, where
//!   the simulated providers live because `clawcut-worker demo` uses
//!   [`fake_openai`] too. Tests keep their `clawcut_test_support::fake_*`
//!   paths.

pub mod db;
pub mod pg;
pub mod procfs;
pub mod s3;

pub use clawcut_simulator::{
    fake_common, fake_fal, fake_kling, fake_luma, fake_openai, fake_replicate, fake_runway,
    fake_veo,
};
