-- clawcut-worker schema, version 1 (PostgreSQL).
-- The app inserts only: id, kind, provider, scene_id, scene_version_id,
-- request, status, provider_job_id, created_at, updated_at; every other
-- column has a default so that insert keeps working.

CREATE TABLE IF NOT EXISTS scenes (
    id                 text PRIMARY KEY,
    title              text NOT NULL DEFAULT '',
    current_version_id text,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS scene_versions (
    id             text PRIMARY KEY,
    scene_id       text NOT NULL,
    status         text NOT NULL DEFAULT 'generating'
                   CHECK (status IN ('generating', 'ready', 'failed')),
    video_path     text,
    thumbnail_path text,
    video_sha256   text,
    video_bytes    bigint,
    error          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS scene_versions_scene_id ON scene_versions (scene_id);

CREATE TABLE IF NOT EXISTS ai_jobs (
    id               text PRIMARY KEY,
    kind             text NOT NULL DEFAULT 'video',
    provider         text NOT NULL DEFAULT '',
    scene_id         text,
    scene_version_id text,
    request          text NOT NULL DEFAULT '{}',
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'submitting', 'pending', 'processing',
                                       'completed', 'failed', 'canceled', 'needs_operator')),
    provider_job_id  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- Daemon bookkeeping.
    attempts         integer NOT NULL DEFAULT 0,
    polls            integer NOT NULL DEFAULT 0,
    -- 'epoch' rather than '-infinity': it must convert to epoch milliseconds.
    next_attempt_at  timestamptz NOT NULL DEFAULT 'epoch',
    lease_owner      text,
    lease_expires_at timestamptz,
    fencing_token    bigint NOT NULL DEFAULT 0,
    last_error       text,
    completed_at     timestamptz,
    video_path       text,
    thumbnail_path   text,
    video_sha256     text,
    video_bytes      bigint,
    idempotency_key  text,
    -- The lease owner a claim replaced (an expired, unreleased lease), or NULL.
    lease_taken_from text
);

-- Claiming only ever looks at the few unfinished rows; a partial index keeps
-- it cheap however many finished rows accumulate.
CREATE INDEX IF NOT EXISTS ai_jobs_claimable
    ON ai_jobs (updated_at)
    WHERE status IN ('queued', 'submitting', 'pending', 'processing');

CREATE INDEX IF NOT EXISTS ai_jobs_needs_operator
    ON ai_jobs (updated_at)
    WHERE status = 'needs_operator';

CREATE INDEX IF NOT EXISTS ai_jobs_kind_status ON ai_jobs (kind, status);
-- Webhooks name jobs by the provider's id.
CREATE INDEX IF NOT EXISTS ai_jobs_provider_job ON ai_jobs (provider, provider_job_id);

CREATE TABLE IF NOT EXISTS ai_job_events (
    id          text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    -- Orders events written within the same millisecond.
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    ai_job_id   text NOT NULL,
    from_status text,
    to_status   text NOT NULL,
    worker_id   text NOT NULL,
    detail      text NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS ai_job_events_job ON ai_job_events (ai_job_id, seq);

-- Adopting an existing ClawCut database: the app's tables already exist
-- (so the CREATEs above did nothing) and lack the daemon's columns.
ALTER TABLE ai_jobs
    ADD COLUMN IF NOT EXISTS attempts         integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS polls            integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS next_attempt_at  timestamptz NOT NULL DEFAULT 'epoch',
    ADD COLUMN IF NOT EXISTS lease_owner      text,
    ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz,
    ADD COLUMN IF NOT EXISTS fencing_token    bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS last_error       text,
    ADD COLUMN IF NOT EXISTS completed_at     timestamptz,
    ADD COLUMN IF NOT EXISTS video_path       text,
    ADD COLUMN IF NOT EXISTS thumbnail_path   text,
    ADD COLUMN IF NOT EXISTS video_sha256     text,
    ADD COLUMN IF NOT EXISTS video_bytes      bigint,
    ADD COLUMN IF NOT EXISTS idempotency_key  text,
    ADD COLUMN IF NOT EXISTS lease_taken_from text;

ALTER TABLE scene_versions
    ADD COLUMN IF NOT EXISTS video_path     text,
    ADD COLUMN IF NOT EXISTS thumbnail_path text,
    ADD COLUMN IF NOT EXISTS video_sha256   text,
    ADD COLUMN IF NOT EXISTS video_bytes    bigint,
    ADD COLUMN IF NOT EXISTS error          text;
