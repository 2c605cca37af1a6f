-- clawcut-worker schema, version 4: the claim's second index.
-- `ai_jobs_claimable` orders the unfinished rows by `updated_at`, the
-- claim's order. But a running job keeps its old `updated_at` while its
-- next poll is hours away, so with many such rows a claim walked all of
-- them before reaching the few that are due. This index orders the same
-- rows by when they are due: when few are due, the claim reads just those
-- and sorts them by `updated_at` (see the store's claim). Same predicate,
-- verbatim, as the claim's (SQLite uses a partial index only then).
CREATE INDEX IF NOT EXISTS ai_jobs_due
    ON ai_jobs (next_attempt_at)
    WHERE status IN ('queued', 'submitting', 'pending', 'processing');

