//! What the scheduler, the HTTP server and the one-shot commands share: the
//! clock, the lifecycle, the loop's health, the wake-up, systemd, and the
//! [`State`] that bundles them for a running daemon. Nothing here imports
//! `daemon`, `http` or `commands`: they import it.

pub mod clock;
pub mod health;
pub mod lifecycle;
pub mod state;
pub mod systemd;
pub mod wake;
