//! The lifecycle of the process, one small type instead of phase checks
//! scattered over the code: `Running`, then `Draining` (SIGTERM: claim
//! nothing new, let started jobs finish), then `Aborting` (the grace period
//! is over: drop the work, release the leases), then `Stopped` (the loop
//! has returned: the HTTP server closes).

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    Draining,
    Aborting,
    Stopped,
}

/// Owned by whoever decides (the signal handler, `demo`); cheap to clone.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    tx: std::sync::Arc<watch::Sender<Phase>>,
}

/// What every task watches.
#[derive(Debug, Clone)]
pub struct Phases {
    rx: watch::Receiver<Phase>,
}

impl Lifecycle {
    pub fn new() -> Lifecycle {
        Lifecycle {
            tx: std::sync::Arc::new(watch::channel(Phase::Running).0),
        }
    }

    pub fn phases(&self) -> Phases {
        Phases {
            rx: self.tx.subscribe(),
        }
    }

    /// Move forward to `to`; the lifecycle never goes back.
    pub fn advance(&self, to: Phase) {
        self.tx.send_if_modified(|p| {
            if to > *p {
                *p = to;
                true
            } else {
                false
            }
        });
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new()
    }
}

impl Phases {
    pub fn now(&self) -> Phase {
        *self.rx.borrow()
    }

    pub fn is_running(&self) -> bool {
        self.now() == Phase::Running
    }

    /// Resolves once the phase is `at` or later (at once if it already is,
    /// and when the lifecycle is gone: the process is exiting).
    pub async fn reached(&mut self, at: Phase) {
        let _ = self.rx.wait_for(|p| *p >= at).await;
    }

    /// Resolves at the next change of phase.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The sender is gone: never resolve again, or a select loop spins.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_only_move_forward() {
        let l = Lifecycle::new();
        let mut p = l.phases();
        assert!(p.is_running());
        l.advance(Phase::Aborting);
        l.advance(Phase::Draining);
        assert_eq!(p.now(), Phase::Aborting);
        p.reached(Phase::Draining).await;
        l.advance(Phase::Stopped);
        p.reached(Phase::Stopped).await;
    }
}
