-- clawcut-worker schema, version 1 (SQLite).
-- Every timestamp is INTEGER Unix epoch milliseconds, UTC.
-- The app inserts only: id, kind, provider, scene_id, scene_version_id,
-- request, status, provider_job_id, created_at, updated_at; every other
-- column has a default so that insert keeps working.

CREATE TABLE IF NOT EXISTS scenes (
    id                 TEXT PRIMARY KEY NOT NULL,
    title              TEXT NOT NULL DEFAULT '',
    current_version_id TEXT,
    updated_at         INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
);

CREATE TABLE IF NOT EXISTS scene_versions (
    id             TEXT PRIMARY KEY NOT NULL,
    scene_id       TEXT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'generating'
                   CHECK (status IN ('generating', 'ready', 'failed')),
    video_path     TEXT,
    thumbnail_path TEXT,
    video_sha256   TEXT,
    video_bytes    INTEGER,
    error          TEXT,
    created_at     INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    updated_at     INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
);

CREATE INDEX IF NOT EXISTS scene_versions_scene_id ON scene_versions (scene_id);

CREATE TABLE IF NOT EXISTS ai_jobs (
    id               TEXT PRIMARY KEY NOT NULL,
    kind             TEXT NOT NULL DEFAULT 'video',
    provider         TEXT NOT NULL DEFAULT '',
    scene_id         TEXT,
    scene_version_id TEXT,
    request          TEXT NOT NULL DEFAULT '{}',
    status           TEXT NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'submitting', 'pending', 'processing',
                                       'completed', 'failed', 'canceled', 'needs_operator')),
    provider_job_id  TEXT,
    created_at       INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    updated_at       INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    -- Daemon bookkeeping.
    attempts         INTEGER NOT NULL DEFAULT 0,
    polls            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    fencing_token    INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    completed_at     INTEGER,
    video_path       TEXT,
    thumbnail_path   TEXT,
    video_sha256     TEXT,
    video_bytes      INTEGER,
    idempotency_key  TEXT,
    -- The lease owner a claim replaced (an expired, unreleased lease), or NULL.
    lease_taken_from TEXT
);

-- Claiming only ever looks at the few unfinished rows; a partial index keeps
-- it cheap however many finished rows accumulate. The WHERE clause must stay
-- textually identical to the one in the claim query (SQLite only uses a
-- partial index whose predicate appears verbatim in the query).
CREATE INDEX IF NOT EXISTS ai_jobs_claimable
    ON ai_jobs (updated_at)
    WHERE status IN ('queued', 'submitting', 'pending', 'processing');

CREATE INDEX IF NOT EXISTS ai_jobs_needs_operator
    ON ai_jobs (updated_at)
    WHERE status = 'needs_operator';

-- Lets `status` count jobs by status from the index alone.
CREATE INDEX IF NOT EXISTS ai_jobs_kind_status ON ai_jobs (kind, status);
-- Webhooks name jobs by the provider's id.
CREATE INDEX IF NOT EXISTS ai_jobs_provider_job ON ai_jobs (provider, provider_job_id);

CREATE TABLE IF NOT EXISTS ai_job_events (
    id          TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    ai_job_id   TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    worker_id   TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
);

CREATE INDEX IF NOT EXISTS ai_job_events_job ON ai_job_events (ai_job_id);
