-- clawcut-worker schema, version 3 (SQLite): webhooks.
--
-- Deliveries already accepted, by the provider's own delivery id (Replicate's
-- `webhook-id`): a replay inside the signature's timestamp window is
-- answered without touching ai_jobs. Rows older than an hour are pruned by
-- the daemon; the signature check refuses anything older than 5 minutes.
CREATE TABLE IF NOT EXISTS clawcut_webhook_deliveries (
    provider    TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (provider, delivery_id)
);
CREATE INDEX IF NOT EXISTS clawcut_webhook_deliveries_received
    ON clawcut_webhook_deliveries (received_at);

-- A webhook names the provider's job id; fal stores `<model>|<request id>`
-- and its webhook names only the request id. The part after the first `|`
-- (the whole id when there is none) gets its own index, so the lookup is an
-- index probe instead of a suffix scan over every row of the provider.
CREATE INDEX IF NOT EXISTS ai_jobs_provider_job_tail
    ON ai_jobs (provider, substr(provider_job_id, instr(provider_job_id, '|') + 1));
