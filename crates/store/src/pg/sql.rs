//! The statements of the PostgreSQL backend: `$N` placeholders, with
//! explicit casts where a parameter's type cannot be inferred (inside
//! COALESCE, CASE or `IS NULL`); timestamps are `timestamptz`, bound as
//! epoch milliseconds through `to_timestamp($N::float8 / 1000.0)` and read
//! back as `(extract(epoch from x) * 1000)::int8`.

use crate::sql::Dialect;

/// A `timestamptz` column as epoch milliseconds, named after the column.
/// An infinite value (`'infinity'`, `'-infinity'`: the app may write them)
/// has no epoch milliseconds and would fail the whole statement, so it
/// reads as NULL: a row with one in a NOT NULL column is then unreadable
/// (`row.rs` names the column) rather than failing every claim.
macro_rules! ms {
    ($c:literal) => {
        concat!(
            "CASE WHEN isfinite(",
            $c,
            ") THEN (extract(epoch from ",
            $c,
            ") * 1000)::int8 END AS ",
            $c
        )
    };
}

/// Columns of a [`clawcut_core::Job`], in the names and types
/// `row::decode_job` reads. No row's contents can make them fail.
macro_rules! job_cols {
    () => {
        job_cols!("request")
    };
    ($request:literal) => {
        concat!(
            "id, kind, provider, scene_id, scene_version_id, ",
            $request,
            ", status, provider_job_id, ",
            ms!("created_at"),
            ", ",
            ms!("updated_at"),
            ", ",
            "attempts::int8 AS attempts, polls::int8 AS polls, ",
            ms!("next_attempt_at"),
            ", lease_owner, ",
            ms!("lease_expires_at"),
            ", ",
            "fencing_token, last_error, idempotency_key, lease_taken_from"
        )
    };
}

/// The eligibility rules of `EligibilityRules::check` as a WHERE clause.
/// Parameters: $1 submit enabled, $2 force, $3 updated_before (ms),
/// $4 now (ms), $5 only this job id (or NULL). The leading `status IN`
/// term is the predicate of the partial index `ai_jobs_claimable`.
macro_rules! eligible {
    () => {
        "status IN ('queued', 'submitting', 'pending', 'processing')
           AND kind = 'video'
           AND ((status IN ('queued', 'pending', 'processing') AND provider_job_id IS NOT NULL)
                OR status = 'submitting'
                OR (status = 'queued' AND provider_job_id IS NULL AND $1::bool))
           AND ($2::bool OR (updated_at <= to_timestamp($3::float8 / 1000.0)
                             AND next_attempt_at <= to_timestamp($4::float8 / 1000.0)))
           AND (lease_expires_at IS NULL OR lease_expires_at <= to_timestamp($4::float8 / 1000.0))
           AND ($5::text IS NULL OR id = $5::text)"
    };
}

/// A paused provider's jobs are not claimed (SPEC, "Provider health"),
/// unless an operator named the job ($5).
macro_rules! paused {
    () => {
        " AND ($5::text IS NOT NULL OR provider NOT IN (SELECT provider FROM provider_pauses))"
    };
}

/// Owed work. $1 now (ms), $2 updated_before (ms).
macro_rules! stranded {
    () => {
        "status IN ('queued', 'submitting', 'pending', 'processing')
           AND kind = 'video'
           AND status IN ('queued', 'pending', 'processing')
           AND provider_job_id IS NOT NULL
           AND (lease_expires_at IS NULL OR lease_expires_at <= to_timestamp($1::float8 / 1000.0))
           AND updated_at <= to_timestamp($2::float8 / 1000.0)"
    };
}

/// Claiming is one `UPDATE ... WHERE id = ANY(ARRAY(SELECT ... FOR UPDATE
/// SKIP LOCKED)) RETURNING`. The array makes the outer update find its rows
/// by primary key; `id IN (subquery)` let the planner hash-join the
/// subquery against a scan of the whole table, every claim. Rows another claimer holds are skipped, and a row
/// another claimer leased and committed meanwhile is re-checked against the
/// WHERE clause on its new version (read committed), so two replicas never
/// lease the same job.
pub(crate) const CLAIM: &str = concat!(
    "UPDATE ai_jobs
     SET lease_taken_from = lease_owner, lease_owner = $6, lease_expires_at = to_timestamp($7::float8 / 1000.0),
         fencing_token = fencing_token + 1
     WHERE id = ANY(ARRAY(SELECT id FROM ai_jobs WHERE ",
    eligible!(),
    paused!(),
    " ORDER BY updated_at, id LIMIT $8 FOR UPDATE SKIP LOCKED))
     RETURNING ",
    job_cols!()
);

/// The claim when few rows are due (see the SQLite twin): the due rows
/// through `ai_jobs_due` ($9 bounds the read; one more found and it claims
/// nothing), sorted oldest-updated first in memory; then the first of
/// those the locking level finds still eligible and unlocked. The locking
/// level repeats the eligibility rules, so a row another replica claimed
/// meanwhile is re-checked and left alone.
///
/// It locks from the first `4 × $8` candidates only, by primary key: a
/// join of all the due rows made the planner hash them against a second
/// read of the due index and sort the lot before it could lock one, every
/// claim. Candidates beyond are only needed when replicas claiming at the
/// same instant hold most of them, and then a claim takes fewer jobs and
/// the next one the rest.
pub(crate) const CLAIM_DUE: &str = concat!(
    // MATERIALIZED: the due rows are read first, so the planner cannot
    // turn the outer ORDER BY into a walk of every unfinished row.
    "WITH due AS MATERIALIZED (SELECT id, updated_at FROM ai_jobs WHERE ",
    eligible!(),
    paused!(),
    " AND next_attempt_at <= to_timestamp($4::float8 / 1000.0)
       ORDER BY next_attempt_at LIMIT $9 + 1),
     candidates AS MATERIALIZED (SELECT id FROM due WHERE (SELECT COUNT(*) FROM due) <= $9
       ORDER BY updated_at, id LIMIT $8 * 4)
     UPDATE ai_jobs
     SET lease_taken_from = lease_owner, lease_owner = $6, lease_expires_at = to_timestamp($7::float8 / 1000.0),
         fencing_token = fencing_token + 1
     WHERE id = ANY(ARRAY(SELECT id FROM ai_jobs
                  WHERE id = ANY(ARRAY(SELECT id FROM candidates)) AND ",
    eligible!(),
    paused!(),
    " ORDER BY updated_at, id LIMIT $8 FOR UPDATE SKIP LOCKED))
     RETURNING ",
    job_cols!()
);

/// A probe of a paused provider: its oldest eligible job, preferring ($10)
/// one still to be submitted when the fault met a create call.
pub(crate) const CLAIM_PROBE: &str = concat!(
    "UPDATE ai_jobs
     SET lease_taken_from = lease_owner, lease_owner = $6, lease_expires_at = to_timestamp($7::float8 / 1000.0),
         fencing_token = fencing_token + 1
     WHERE id = ANY(ARRAY(SELECT id FROM ai_jobs WHERE ",
    eligible!(),
    " AND provider = $9
       ORDER BY CASE WHEN (provider_job_id IS NULL) = $10::bool THEN 0 ELSE 1 END, updated_at, id
       LIMIT $8 FOR UPDATE SKIP LOCKED))
     RETURNING ",
    job_cols!()
);

pub(crate) const POSTGRES: Dialect = Dialect {
    // Every write statement is fenced on the row it changes, so read
    // committed suffices.
    begin_write: None,
    // Read committed would let each count see a different instant.
    begin_snapshot: Some("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
    // `attempts` and `polls` are `integer`.
    counter_max: i32::MAX as i64,

    claim: CLAIM,
    heartbeat: "UPDATE ai_jobs SET lease_expires_at = to_timestamp($4::float8 / 1000.0)
         WHERE id = $1 AND lease_owner = $2 AND fencing_token = $3",
    release: "UPDATE ai_jobs SET lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $1 AND lease_owner = $2 AND fencing_token = $3",
    // Two completions of one scene version (two jobs, or a worker that lost
    // its lease and the one that took over) publish and commit one after
    // the other, across replicas: each takes this lock before its fenced
    // update, and holds it until it commits or rolls back. The version id
    // never changes, so reading it unlocked is fine; the prefixes keep the
    // two kinds of key apart.
    lock_completion: Some(
        "SELECT pg_advisory_xact_lock(hashtextextended(COALESCE(
             'clawcut-worker:scene_version:'
                 || (SELECT scene_version_id FROM ai_jobs WHERE id = $1::text),
             'clawcut-worker:job:' || $1::text), 0))",
    ),
    // Row and advisory locks are per job and per version: publishing
    // inside the transaction holds up no other job.
    lease_held: None,
    complete_job: "UPDATE ai_jobs SET status = 'completed',
             completed_at = to_timestamp($5::float8 / 1000.0),
             updated_at = to_timestamp($5::float8 / 1000.0),
             video_path = $6, video_sha256 = $7, video_bytes = $8, thumbnail_path = $9,
             last_error = NULL, lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $1 AND lease_owner = $2 AND fencing_token = $3 AND status = $4
         RETURNING scene_id, scene_version_id",
    complete_version: "UPDATE scene_versions SET status = 'ready', video_path = $2,
             thumbnail_path = $3, video_sha256 = $4, video_bytes = $5, error = NULL,
             updated_at = to_timestamp($6::float8 / 1000.0)
         WHERE id = $1",
    complete_scene: concat!(
        "UPDATE scenes SET current_version_id = $2,
             updated_at = to_timestamp($3::float8 / 1000.0)
         WHERE id = $1
           AND current_version_id IS DISTINCT FROM $2
           AND ",
        newer_version_wins!("$2")
    ),
    // Each batch statement names its rows' ids a second time as
    // `= ANY(ARRAY(…))`: the planner guesses 100 rows for a JSON set and,
    // for a table of some thousands, would rather hash-join it against a
    // scan of the whole table (every batch, under the locks) than probe
    // the primary key; the array makes it an index scan.
    // Three statements and no more (with BEGIN and COMMIT): under load a
    // round trip to the server costs more than the statements' work, and
    // every batch waits for the one before. So `held_many` takes the
    // advisory locks too, `complete_jobs` writes the audit events and locks
    // the scenes, and `complete_versions` moves the scene pointers.
    //
    // `held_many`: first `lock_completion`'s scene-version keys, each once,
    // taken in key order (volatile functions in the target list run after
    // the sort), in a gate evaluated before the first row is read, let
    // alone locked; then the job rows, locked in id order. The row read's
    // snapshot predates the wait for a key, but `FOR UPDATE` re-checks a
    // row another completion changed meanwhile against the new version
    // (read committed), so a lease that completion ended is not held. A job
    // without a version needs no key: locking its row before anything is
    // published serializes its completions (a single `complete` holds the
    // same row lock from its fenced update on).
    held_many: "WITH keys AS MATERIALIZED (
             SELECT pg_advisory_xact_lock(k) FROM (
                 SELECT DISTINCT hashtextextended(
                     'clawcut-worker:scene_version:' || j.scene_version_id, 0) AS k
                 FROM ai_jobs j
                 WHERE j.id = ANY(ARRAY(SELECT x.id FROM json_to_recordset($1::json) AS x(id text)))
                   AND j.scene_version_id IS NOT NULL) keys
             ORDER BY k)
         SELECT j.id FROM ai_jobs j
         JOIN json_to_recordset($1::json) AS t(id text, owner text, token int8, from_status text)
           ON j.id = t.id AND j.lease_owner = t.owner AND j.fencing_token = t.token
          AND j.status = t.from_status
         WHERE j.id = ANY(ARRAY(SELECT x.id FROM json_to_recordset($1::json) AS x(id text)))
           AND (SELECT COUNT(*) FROM keys) >= 0
         ORDER BY j.id FOR UPDATE OF j",
    // Versions are serialized by the advisory locks; scenes are not (two
    // versions of one scene may complete at once), and a set-based UPDATE
    // locks its rows in no set order: `scene_locks` takes them in id order
    // first, so two batches cannot deadlock on two scenes. A data-modifying
    // CTE runs whether or not it is read; `scene_locks` runs because the
    // result's gate reads it, before the first row is returned.
    complete_jobs: "WITH done AS (
             UPDATE ai_jobs j SET status = 'completed',
                 completed_at = to_timestamp(t.now::float8 / 1000.0),
                 updated_at = to_timestamp(t.now::float8 / 1000.0),
                 video_path = t.video, video_sha256 = t.sha, video_bytes = t.bytes,
                 thumbnail_path = t.thumb,
                 last_error = NULL, lease_owner = NULL, lease_expires_at = NULL
             FROM json_to_recordset($1::json) AS t(id text, owner text, token int8,
                 from_status text, now int8, video text, sha text, bytes int8, thumb text,
                 detail text)
             WHERE j.id = t.id AND j.lease_owner = t.owner AND j.fencing_token = t.token
               AND j.status = t.from_status
               AND j.id = ANY(ARRAY(SELECT x.id FROM json_to_recordset($1::json) AS x(id text)))
             RETURNING j.id, j.scene_id, j.scene_version_id, t.from_status, t.owner, t.detail, t.now),
         events AS (
             INSERT INTO ai_job_events
                 (ai_job_id, from_status, to_status, worker_id, detail, created_at)
             SELECT id, from_status, 'completed', owner, detail,
                    to_timestamp(now::float8 / 1000.0)
             FROM done),
         scene_locks AS (
             SELECT s.id FROM scenes s
             WHERE s.id = ANY(ARRAY(SELECT d.scene_id FROM done d WHERE d.scene_id IS NOT NULL))
             ORDER BY s.id FOR UPDATE)
         SELECT id, scene_id, scene_version_id FROM done
         WHERE (SELECT COUNT(*) FROM scene_locks) >= 0",
    // The scene pointers' rule reads the versions' `created_at` and ids,
    // which the versions' update (in the same snapshot) does not change.
    complete_versions: concat!(
        "WITH versions AS (
             UPDATE scene_versions v SET status = 'ready', video_path = t.video,
                 thumbnail_path = t.thumb, video_sha256 = t.sha, video_bytes = t.bytes,
                 error = NULL, updated_at = to_timestamp(t.now::float8 / 1000.0)
             FROM json_to_recordset($1::json) AS t(version text, video text, thumb text,
                 sha text, bytes int8, now int8)
             WHERE v.id = t.version
               AND v.id = ANY(ARRAY(SELECT x.version FROM json_to_recordset($1::json)
                                     AS x(version text))))
         UPDATE scenes SET current_version_id = t.version,
             updated_at = to_timestamp(t.now::float8 / 1000.0)
         FROM json_to_recordset($1::json) AS t(scene text, version text, now int8)
         WHERE scenes.id = t.scene
           AND scenes.id = ANY(ARRAY(SELECT x.scene FROM json_to_recordset($1::json)
                                     AS x(scene text)))
           AND scenes.current_version_id IS DISTINCT FROM t.version
           AND ",
        newer_version_wins!("t.version")
    ),
    complete_scenes: None,
    insert_events: None,
    settle: "UPDATE ai_jobs SET status = $5, updated_at = to_timestamp($6::float8 / 1000.0),
             last_error = $7,
             provider_job_id = COALESCE($8::text, provider_job_id),
             idempotency_key = COALESCE($9::text, idempotency_key),
             completed_at = COALESCE(to_timestamp($10::float8 / 1000.0), completed_at),
             lease_owner = CASE WHEN $11::bool THEN lease_owner ELSE NULL END,
             lease_expires_at = CASE WHEN $11::bool THEN lease_expires_at ELSE NULL END,
             attempts = COALESCE($12::int8, attempts)
         WHERE id = $1 AND lease_owner = $2 AND fencing_token = $3 AND status = $4
         RETURNING scene_version_id",
    reschedule: "UPDATE ai_jobs SET status = $5, attempts = $6, polls = $7,
             next_attempt_at = to_timestamp($8::float8 / 1000.0),
             last_error = $9, lease_owner = NULL, lease_expires_at = NULL,
             updated_at = CASE WHEN $10::bool THEN to_timestamp($11::float8 / 1000.0)
                               ELSE updated_at END
         WHERE id = $1 AND lease_owner = $2 AND fencing_token = $3 AND status = $4",
    set_aside_status: "SELECT status FROM ai_jobs
         WHERE id = $1 AND lease_owner = $2 AND fencing_token = $3
         FOR UPDATE",
    set_aside: "UPDATE ai_jobs SET status = 'needs_operator', last_error = $5,
             updated_at = to_timestamp($4::float8 / 1000.0),
             lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $1 AND lease_owner = $2 AND fencing_token = $3
           AND status NOT IN ('completed', 'failed', 'canceled')",
    insert_event: "INSERT INTO ai_job_events
             (ai_job_id, from_status, to_status, worker_id, detail, created_at)
         VALUES ($1, $2, $3, $4, $5, to_timestamp($6::float8 / 1000.0))",
    fail_version: "UPDATE scene_versions SET status = 'failed', error = $2,
             updated_at = to_timestamp($3::float8 / 1000.0)
         WHERE id = $1 AND status <> 'ready'",

    get_job: concat!("SELECT ", job_cols!(), " FROM ai_jobs WHERE id = $1"),
    list_stranded: concat!(
        "SELECT ",
        job_cols!(),
        " FROM ai_jobs WHERE ",
        stranded!(),
        // Qualified: bare, `updated_at` is the output column (epoch ms,
        // computed), which no index orders.
        " ORDER BY ai_jobs.updated_at, ai_jobs.id LIMIT $3"
    ),
    list_needs_operator: concat!(
        "SELECT ",
        job_cols!(),
        " FROM ai_jobs WHERE status = 'needs_operator' AND kind = 'video'
          ORDER BY ai_jobs.updated_at, ai_jobs.id LIMIT $1"
    ),
    // The range term lets the due index bound the count to the due rows.
    count_eligible: concat!(
        "SELECT COUNT(*), (extract(epoch from MIN(updated_at)) * 1000)::int8 FROM ai_jobs WHERE ",
        eligible!(),
        " AND next_attempt_at <= to_timestamp($4::float8 / 1000.0)"
    ),
    count_stranded: concat!(
        "SELECT COUNT(*), (extract(epoch from MIN(updated_at)) * 1000)::int8 FROM ai_jobs WHERE ",
        stranded!()
    ),
    count_running: "SELECT COUNT(*) FROM ai_jobs
         WHERE status IN ('queued', 'submitting', 'pending', 'processing')
           AND kind = 'video' AND lease_expires_at > to_timestamp($1::float8 / 1000.0)",
    count_needs_operator: "SELECT COUNT(*), (extract(epoch from MIN(updated_at)) * 1000)::int8
         FROM ai_jobs
         WHERE status = 'needs_operator' AND kind = 'video'",

    resolve_resubmit: "UPDATE ai_jobs SET status = 'queued', provider_job_id = NULL,
             idempotency_key = NULL, attempts = 0, polls = 0, next_attempt_at = 'epoch',
             last_error = NULL, lease_owner = NULL, lease_expires_at = NULL,
             updated_at = to_timestamp($2::float8 / 1000.0)
         WHERE id = $1 AND status = 'needs_operator'
         RETURNING scene_version_id",
    resolve_fail: "UPDATE ai_jobs SET status = 'failed', last_error = $3,
             completed_at = to_timestamp($2::float8 / 1000.0),
             lease_owner = NULL, lease_expires_at = NULL,
             updated_at = to_timestamp($2::float8 / 1000.0)
         WHERE id = $1 AND status = 'needs_operator'
         RETURNING scene_version_id",
    job_status: "SELECT status FROM ai_jobs WHERE id = $1",
    cancel_read: "SELECT status, provider, provider_job_id, scene_version_id
         FROM ai_jobs WHERE id = $1 AND kind = 'video' FOR UPDATE",
    cancel_job: "UPDATE ai_jobs SET status = 'canceled', last_error = $3,
             completed_at = to_timestamp($2::float8 / 1000.0),
             updated_at = to_timestamp($2::float8 / 1000.0),
             lease_owner = NULL, lease_expires_at = NULL,
             fencing_token = fencing_token + 1
         WHERE id = $1 AND status = $4",
    // An id stored as `<prefix>|<id>` also matches its bare `<id>`. Each arm
    // of the OR is a probe of its own index (`ai_jobs_provider_ids`, migration 7;
    // `ai_jobs_provider_job_tail`, migration 3).
    make_due: "UPDATE ai_jobs SET next_attempt_at = to_timestamp($3::float8 / 1000.0)
         WHERE provider = $1
           AND (provider_job_id = $2
                OR substr(provider_job_id, strpos(provider_job_id, '|') + 1) = $2)
           AND next_attempt_at > to_timestamp($3::float8 / 1000.0)
           AND status NOT IN ('completed', 'failed', 'canceled')",
    claim_probe: CLAIM_PROBE,
    claim_due: CLAIM_DUE,
    count_due_upto: "SELECT COUNT(*) FROM (SELECT 1 FROM ai_jobs
         WHERE status IN ('queued', 'submitting', 'pending', 'processing')
           AND next_attempt_at <= to_timestamp($1::float8 / 1000.0) LIMIT $2) d",
    insert_pause: "INSERT INTO provider_pauses
         (provider, cause, reason, operation, paused_at, paused_by, probe_at, cooldown_ms, updated_at)
         VALUES ($1, $2, $3, $4, to_timestamp($5::float8 / 1000.0), $6,
                 to_timestamp($7::float8 / 1000.0), $8, to_timestamp($5::float8 / 1000.0))
         ON CONFLICT (provider) DO NOTHING",
    update_pause: "UPDATE provider_pauses
         SET cause = $2, reason = $3, operation = $4, updated_at = to_timestamp($5::float8 / 1000.0)
         WHERE provider = $1",
    take_probe: "UPDATE provider_pauses
         SET probe_at = to_timestamp($3::float8 / 1000.0), cooldown_ms = $4, probes = probes + 1,
             updated_at = to_timestamp($2::float8 / 1000.0)
         WHERE provider = $1 AND probe_at <= to_timestamp($2::float8 / 1000.0)",
    delete_pause: "DELETE FROM provider_pauses WHERE provider = $1",
    recent_workers: "SELECT worker_id FROM (SELECT worker_id FROM ai_job_events
         WHERE created_at >= to_timestamp($1::float8 / 1000.0) ORDER BY seq DESC LIMIT 10000) e
         UNION SELECT lease_owner FROM ai_jobs
         WHERE status IN ('queued', 'submitting', 'pending', 'processing')
           AND lease_owner IS NOT NULL AND lease_expires_at > to_timestamp($1::float8 / 1000.0)",
    list_pauses: concat!(
        "SELECT provider, cause, reason, operation, ",
        ms!("paused_at"),
        ", paused_by, ",
        ms!("probe_at"),
        ", cooldown_ms, probes, ",
        ms!("updated_at"),
        " FROM provider_pauses ORDER BY provider"
    ),
    insert_webhook: "INSERT INTO clawcut_webhook_deliveries (provider, delivery_id, received_at)
         VALUES ($1, $2, to_timestamp($3::float8 / 1000.0)) ON CONFLICT DO NOTHING",
    prune_webhooks: "DELETE FROM clawcut_webhook_deliveries
         WHERE received_at < to_timestamp($1::float8 / 1000.0)",
    backend: crate::Backend::Postgres,
    job_cols: job_cols!(),
    list_cols: job_cols!("'' AS request"),
    eligible_where: eligible!(),
    stranded_where: stranded!(),
};

pub(crate) const MAKE_DUE: &str = POSTGRES.make_due;
