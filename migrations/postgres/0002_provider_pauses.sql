-- clawcut-worker schema, version 2 (PostgreSQL): provider health.
-- One row per paused provider (SPEC, "Provider health"); the row is
-- deleted when a probe finds the provider answering again. Every replica
-- reads it: a paused provider's jobs are not claimed, except one at a time
-- as a probe once `probe_at` has passed.

CREATE TABLE IF NOT EXISTS provider_pauses (
    provider    text PRIMARY KEY,
    cause       text NOT NULL CHECK (cause IN ('unauthorized', 'account', 'outage')),
    reason      text NOT NULL,
    -- The call that met the fault: a probe prefers a job that makes it.
    operation   text NOT NULL CHECK (operation IN ('poll', 'submit')),
    paused_at   timestamptz NOT NULL,
    paused_by   text NOT NULL,
    probe_at    timestamptz NOT NULL,
    cooldown_ms bigint NOT NULL,
    probes      bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL
);
