-- clawcut-worker schema, version 2 (SQLite): provider health.
-- One row per paused provider (SPEC, "Provider health"); the row is
-- deleted when a probe finds the provider answering again. Every replica
-- reads it: a paused provider's jobs are not claimed, except one at a time
-- as a probe once `probe_at` has passed.

CREATE TABLE IF NOT EXISTS provider_pauses (
    provider    TEXT PRIMARY KEY NOT NULL,
    cause       TEXT NOT NULL CHECK (cause IN ('unauthorized', 'account', 'outage')),
    reason      TEXT NOT NULL,
    -- The call that met the fault: a probe prefers a job that makes it.
    operation   TEXT NOT NULL CHECK (operation IN ('poll', 'submit')),
    paused_at   INTEGER NOT NULL,
    paused_by   TEXT NOT NULL,
    probe_at    INTEGER NOT NULL,
    cooldown_ms INTEGER NOT NULL,
    probes      INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL
);
