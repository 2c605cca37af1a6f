//! The small parts everything else stands on: the clock, the lifecycle, the
//! loop's health, the wake-up and systemd. Leaves: nothing here imports
//! another module of the crate but `runtime` itself (the `state` module
//! bundles these parts with the worker for a running daemon).

pub mod clock;
pub mod health;
pub mod lifecycle;
pub mod systemd;
pub mod wake;
