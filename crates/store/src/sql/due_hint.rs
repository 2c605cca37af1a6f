//! Which claim statement to try first, learnt from the claims before.
//!
//! The due-first claim reads every due row through `ai_jobs_due` and takes
//! the oldest-updated of them, which is only the SPEC's order while it read
//! *all* the due rows: it refuses (claims nothing) when more than
//! `DUE_SCAN_MAX` are due. The walk in `updated_at` order is right whatever
//! is due, and cheap when many are. Counting the due rows before every
//! claim told the two cases apart, at a statement and a round trip per
//! claim; instead, the claim runs the statement the last claims chose and
//! counts only when the due-first claim came back empty (nothing due, or
//! too many due). A backlog makes the claims walk for [`RECOUNT_AFTER`],
//! then try the due-first claim again. Either statement claims only rows
//! in the SPEC's order, so the hint can cost time, never correctness.

use std::sync::atomic::{AtomicI64, Ordering};

use clawcut_core::Millis;

/// How long, in the claims' `now`, a backlog keeps the claims walking
/// before the due-first claim is tried again.
pub const RECOUNT_AFTER: Millis = 1_000;

/// The statement a plain claim runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimPath {
    /// The due rows through `ai_jobs_due`, refusing beyond `DUE_SCAN_MAX`.
    DueFirst,
    /// The walk in `updated_at` order.
    Walk,
}

/// Shared by the clones of one store, so every claimer of a process learns
/// from the others' claims.
#[derive(Debug, Default)]
pub struct DueHint {
    /// Until when (the claims' `now`) to walk; 0: due-first.
    walk_until: AtomicI64,
}

impl DueHint {
    pub fn path(&self, now: Millis) -> ClaimPath {
        let until = self.walk_until.load(Ordering::Relaxed);
        // A clock stepped back by more than the window must not keep the
        // claims walking for as long as it stepped.
        if until > now && until.saturating_sub(now) <= RECOUNT_AFTER {
            ClaimPath::Walk
        } else {
            ClaimPath::DueFirst
        }
    }

    /// A count found more rows due than the due-first claim reads.
    pub fn backlog(&self, now: Millis) {
        self.walk_until
            .store(now.saturating_add(RECOUNT_AFTER), Ordering::Relaxed);
    }

    /// A walk found nothing to claim: no backlog left to walk.
    pub fn drained(&self) {
        self.walk_until.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_tries_the_due_first_claim() {
        assert_eq!(DueHint::default().path(1_000_000), ClaimPath::DueFirst);
    }

    #[test]
    fn a_backlog_walks_until_the_window_ends() {
        let h = DueHint::default();
        h.backlog(10_000);
        assert_eq!(h.path(10_000), ClaimPath::Walk);
        assert_eq!(h.path(10_000 + RECOUNT_AFTER - 1), ClaimPath::Walk);
        assert_eq!(h.path(10_000 + RECOUNT_AFTER), ClaimPath::DueFirst);
    }

    #[test]
    fn an_empty_walk_ends_the_backlog_at_once() {
        let h = DueHint::default();
        h.backlog(10_000);
        h.drained();
        assert_eq!(h.path(10_001), ClaimPath::DueFirst);
    }

    #[test]
    fn a_clock_stepped_back_past_the_window_does_not_keep_walking() {
        let h = DueHint::default();
        h.backlog(10_000);
        assert_eq!(h.path(10_000 - 1), ClaimPath::DueFirst);
        assert_eq!(h.path(5_000), ClaimPath::DueFirst);
        assert_eq!(h.path(i64::MIN), ClaimPath::DueFirst);
    }

    #[test]
    fn a_backlog_at_the_end_of_time_saturates() {
        let h = DueHint::default();
        h.backlog(Millis::MAX);
        assert_eq!(h.path(Millis::MAX), ClaimPath::DueFirst);
        assert_eq!(h.path(Millis::MAX - 1), ClaimPath::Walk);
    }
}
