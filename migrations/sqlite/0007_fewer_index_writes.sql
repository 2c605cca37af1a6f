-- clawcut-worker schema, version 7: fewer index entries per job (see its
-- twin; SQLite has no fillfactor, it rewrites a row in place).
--
-- The webhooks' lookup (`provider` and `provider_job_id`) and the panel's
-- (`provider_job_id` alone) had an index each; one led by the id serves both.
CREATE INDEX IF NOT EXISTS ai_jobs_provider_ids ON ai_jobs (provider_job_id, provider);
DROP INDEX IF EXISTS ai_jobs_provider_job;
DROP INDEX IF EXISTS ai_jobs_provider_job_id;

-- `(ai_job_id)` is a prefix of `(ai_job_id, created_at)`, which orders a
-- job's events as they are read (created_at, then rowid, which every SQLite
-- index ends with).
DROP INDEX IF EXISTS ai_job_events_job;
