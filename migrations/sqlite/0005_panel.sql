-- clawcut-worker schema, version 5: what the operator panel (`/ops`) reads.
-- Its job list pages by (updated_at, id) in both directions over any
-- status (keyset pagination, never OFFSET), finds a job by scene or by the
-- provider's id, and reads the newest audit events for the time spent in
-- each state. Each index costs one more entry per write on these rows.
CREATE INDEX IF NOT EXISTS ai_jobs_recent ON ai_jobs (updated_at, id);
CREATE INDEX IF NOT EXISTS ai_jobs_scene ON ai_jobs (scene_id);
CREATE INDEX IF NOT EXISTS ai_jobs_provider_job_id ON ai_jobs (provider_job_id);
CREATE INDEX IF NOT EXISTS ai_job_events_recent ON ai_job_events (created_at);
CREATE INDEX IF NOT EXISTS ai_job_events_job_time ON ai_job_events (ai_job_id, created_at);
