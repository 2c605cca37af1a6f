-- clawcut-worker schema, version 7: fewer index entries per job.
--
-- A claim leases a run of due rows in one statement, and rows the app
-- inserted together sit together: the claim rewrites most rows of a page at
-- once. An in-place (HOT) update needs room on the row's own page for the
-- new version; at fillfactor 85 only the first few rows of each page found
-- it, and every other claimed row took a new page and an entry in each of
-- the table's indexes (the store-throughput bench, BENCHMARKS.md item 2:
-- 17 % of claims in place, 17.8 B-tree leaf entries per job). Half a
-- page leaves room for nearly all of them (87 % in place, 9.4 entries).
-- The price is space: pages the app fills stop at half; updates still fill
-- them up, so finished rows settle between half and full pages.
ALTER TABLE ai_jobs SET (fillfactor = 50);

-- The webhooks' lookup (`provider` and `provider_job_id`) and the panel's
-- (`provider_job_id` alone) had an index each; one led by the id serves both.
CREATE INDEX IF NOT EXISTS ai_jobs_provider_ids ON ai_jobs (provider_job_id, provider);
DROP INDEX IF EXISTS ai_jobs_provider_job;
DROP INDEX IF EXISTS ai_jobs_provider_job_id;

-- A job's events are read in (created_at, seq) order, by the panel and by
-- the time-in-state figures; one index serves those and every lookup by job
-- that `(ai_job_id, seq)` served.
CREATE INDEX IF NOT EXISTS ai_job_events_job_order ON ai_job_events (ai_job_id, created_at, seq);
DROP INDEX IF EXISTS ai_job_events_job;
DROP INDEX IF EXISTS ai_job_events_job_time;
