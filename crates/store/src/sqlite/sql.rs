//! The statements of the SQLite backend: `?N` placeholders, timestamps as
//! INTEGER epoch milliseconds (bound and read as they are).

use crate::sql::Dialect;

/// Columns of a [`clawcut_core::Job`], in the names and types
/// `row::job_from_row` reads.
macro_rules! job_cols {
    () => {
        job_cols!("request")
    };
    ($request:literal) => {
        concat!(
            "id, kind, provider, scene_id, scene_version_id, ",
            $request,
            ", status, provider_job_id, \
             created_at, updated_at, attempts, polls, next_attempt_at, lease_owner, \
             lease_expires_at, fencing_token, last_error, idempotency_key, lease_taken_from"
        )
    };
}

/// The eligibility rules of `EligibilityRules::check` as a WHERE clause.
/// Parameters: ?1 submit enabled, ?2 force, ?3 updated_before, ?4 now,
/// ?5 only this job id (or NULL).
///
/// The leading `status IN (...)` term repeats the predicate of the partial
/// index `ai_jobs_claimable` verbatim: SQLite only uses a partial index
/// whose predicate appears as a term of the query. Queries name the index
/// with `INDEXED BY` (the planner otherwise prefers `ai_jobs_kind_status`
/// without statistics), which also makes them fail loudly rather than scan
/// the table should the two predicates ever drift apart.
macro_rules! eligible {
    () => {
        "status IN ('queued', 'submitting', 'pending', 'processing')
           AND kind = 'video'
           AND ((status IN ('queued', 'pending', 'processing') AND provider_job_id IS NOT NULL)
                OR status = 'submitting'
                OR (status = 'queued' AND provider_job_id IS NULL AND ?1))
           AND (?2 OR (updated_at <= ?3 AND next_attempt_at <= ?4))
           AND (lease_expires_at IS NULL OR lease_expires_at <= ?4)
           AND (?5 IS NULL OR id = ?5)"
    };
}

/// A paused provider's jobs are not claimed (SPEC, "Provider health"),
/// unless an operator named the job (?5).
macro_rules! paused {
    () => {
        " AND (?5 IS NOT NULL OR provider NOT IN (SELECT provider FROM provider_pauses))"
    };
}

/// Owed work. ?1 now, ?2 updated_before.
macro_rules! stranded {
    () => {
        "status IN ('queued', 'submitting', 'pending', 'processing')
           AND kind = 'video'
           AND status IN ('queued', 'pending', 'processing')
           AND provider_job_id IS NOT NULL
           AND (lease_expires_at IS NULL OR lease_expires_at <= ?1)
           AND updated_at <= ?2"
    };
}

/// Claiming is one `UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`.
/// A write statement takes the database write lock before it reads, so two
/// claimers on one file are serialized by SQLite itself and can never lease
/// the same row.
///
/// The new token is written as an INTEGER whatever the column held (the
/// typing is dynamic: `2.5 + 1` would stay REAL), so every claimed row can
/// be fenced. The returned columns are raw values, never converted, so no
/// row's contents can fail the statement; `row.rs` decodes each row on its
/// own.
pub(crate) const CLAIM: &str = concat!(
    "UPDATE ai_jobs
     SET lease_taken_from = lease_owner, lease_owner = ?6, lease_expires_at = ?7,
         fencing_token = COALESCE(CAST(fencing_token AS INTEGER), 0) + 1
     WHERE id IN (SELECT id FROM ai_jobs INDEXED BY ai_jobs_claimable WHERE ",
    eligible!(),
    paused!(),
    " ORDER BY updated_at, id LIMIT ?8)
     RETURNING ",
    job_cols!()
);

/// The claim when few rows are due (at most `DUE_SCAN_MAX`): read exactly
/// the due rows through `ai_jobs_due` (?9 bounds the read), then take the
/// oldest-updated of them. The same rows, in the same order, as [`CLAIM`],
/// without walking the running jobs whose next poll is hours away. Finding
/// one row more than ?9, it claims nothing: it has not read them all, so
/// the oldest-updated may be among those it left. The extra range term on
/// `next_attempt_at` lets SQLite seek the index (the one inside
/// `eligible!` sits in an OR with ?2).
pub(crate) const CLAIM_DUE: &str = concat!(
    "WITH due AS MATERIALIZED (SELECT id, updated_at FROM ai_jobs INDEXED BY ai_jobs_due WHERE ",
    eligible!(),
    paused!(),
    " AND next_attempt_at <= ?4 ORDER BY next_attempt_at LIMIT ?9 + 1)
     UPDATE ai_jobs
     SET lease_taken_from = lease_owner, lease_owner = ?6, lease_expires_at = ?7,
         fencing_token = COALESCE(CAST(fencing_token AS INTEGER), 0) + 1
     WHERE id IN (SELECT id FROM due WHERE (SELECT COUNT(*) FROM due) <= ?9
                  ORDER BY updated_at, id LIMIT ?8)
     RETURNING ",
    job_cols!()
);

/// A probe of a paused provider: its oldest eligible job, preferring (?10)
/// one still to be submitted when the fault met a create call. Rare and
/// limited to one provider, so the sort over its eligible rows is cheap.
pub(crate) const CLAIM_PROBE: &str = concat!(
    "UPDATE ai_jobs
     SET lease_taken_from = lease_owner, lease_owner = ?6, lease_expires_at = ?7,
         fencing_token = COALESCE(CAST(fencing_token AS INTEGER), 0) + 1
     WHERE id IN (SELECT id FROM ai_jobs INDEXED BY ai_jobs_claimable WHERE ",
    eligible!(),
    " AND provider = ?9
       ORDER BY CASE WHEN (provider_job_id IS NULL) = ?10 THEN 0 ELSE 1 END, updated_at, id
       LIMIT ?8)
     RETURNING ",
    job_cols!()
);

pub(crate) const SQLITE: Dialect = Dialect {
    // Taking the write lock up front makes SQLite wait in its busy handler
    // rather than fail with `SQLITE_BUSY_SNAPSHOT` when another writer got
    // in between the transaction's read and its write.
    begin_write: Some("BEGIN IMMEDIATE"),
    // A deferred transaction reads one snapshot of a WAL database.
    begin_snapshot: None,
    counter_max: i64::MAX,

    claim: CLAIM,
    heartbeat: "UPDATE ai_jobs SET lease_expires_at = ?4
         WHERE id = ?1 AND lease_owner = ?2 AND fencing_token = ?3",
    release: "UPDATE ai_jobs SET lease_owner = NULL, lease_expires_at = NULL
         WHERE id = ?1 AND lease_owner = ?2 AND fencing_token = ?3",
    // `BEGIN IMMEDIATE` already serializes every writer of the file.
    lock_completion: None,
    // A read: WAL readers never wait for the writer. A takeover needs the
    // lease to expire, and the job's heartbeat has just renewed it, so
    // nobody else can claim the row between this check and the commit; an
    // out-of-band write (the app, an operator) is caught by the fenced
    // update and the files are reverted. Two completions of one scene
    // version in one process are serialized by the daemon (SQLite serves
    // one replica).
    lease_held: Some(
        "SELECT 1 FROM ai_jobs WHERE id = ?1 AND lease_owner = ?2 AND fencing_token = ?3 AND status = ?4",
    ),
    complete_job: "UPDATE ai_jobs SET status = 'completed', completed_at = ?5, updated_at = ?5,
             video_path = ?6, video_sha256 = ?7, video_bytes = ?8, thumbnail_path = ?9,
             last_error = NULL, lease_owner = NULL, lease_expires_at = NULL
         WHERE id = ?1 AND lease_owner = ?2 AND fencing_token = ?3 AND status = ?4
         RETURNING scene_id, scene_version_id",
    complete_version: "UPDATE scene_versions SET status = 'ready', video_path = ?2,
             thumbnail_path = ?3, video_sha256 = ?4, video_bytes = ?5, error = NULL,
             updated_at = ?6
         WHERE id = ?1",
    complete_scene: concat!(
        "UPDATE scenes SET current_version_id = ?2, updated_at = ?3
         WHERE id = ?1
           AND current_version_id IS NOT ?2
           AND ",
        newer_version_wins!("?2")
    ),
    held_many: "SELECT j.id FROM ai_jobs j
         JOIN (SELECT value ->> 'id' AS id, value ->> 'owner' AS owner,
                      value ->> 'token' AS token, value ->> 'from_status' AS from_status
               FROM json_each(?1)) t
           ON j.id = t.id AND j.lease_owner = t.owner AND j.fencing_token = t.token
          AND j.status = t.from_status",
    complete_jobs: "UPDATE ai_jobs SET status = 'completed', completed_at = t.now,
             updated_at = t.now, video_path = t.video, video_sha256 = t.sha,
             video_bytes = t.bytes, thumbnail_path = t.thumb,
             last_error = NULL, lease_owner = NULL, lease_expires_at = NULL
         FROM (SELECT value ->> 'id' AS id, value ->> 'owner' AS owner,
                      value ->> 'token' AS token, value ->> 'from_status' AS from_status,
                      value ->> 'now' AS now, value ->> 'video' AS video,
                      value ->> 'sha' AS sha, value ->> 'bytes' AS bytes,
                      value ->> 'thumb' AS thumb
               FROM json_each(?1)) AS t
         WHERE ai_jobs.id = t.id AND ai_jobs.lease_owner = t.owner
           AND ai_jobs.fencing_token = t.token AND ai_jobs.status = t.from_status
         RETURNING id, scene_id, scene_version_id",
    complete_versions: "UPDATE scene_versions SET status = 'ready', video_path = t.video,
             thumbnail_path = t.thumb, video_sha256 = t.sha, video_bytes = t.bytes,
             error = NULL, updated_at = t.now
         FROM (SELECT value ->> 'version' AS version, value ->> 'video' AS video,
                      value ->> 'thumb' AS thumb, value ->> 'sha' AS sha,
                      value ->> 'bytes' AS bytes, value ->> 'now' AS now
               FROM json_each(?1)) AS t
         WHERE scene_versions.id = t.version",
    complete_scenes: Some(concat!(
        "UPDATE scenes SET current_version_id = t.version, updated_at = t.now
         FROM (SELECT value ->> 'scene' AS scene, value ->> 'version' AS version,
                      value ->> 'now' AS now
               FROM json_each(?1)) AS t
         WHERE scenes.id = t.scene
           AND scenes.current_version_id IS NOT t.version
           AND ",
        newer_version_wins!("t.version")
    )),
    insert_events: Some(
        "INSERT INTO ai_job_events
             (ai_job_id, from_status, to_status, worker_id, detail, created_at)
         SELECT value ->> 'job', value ->> 'from_status', value ->> 'to_status',
                value ->> 'worker', value ->> 'detail', value ->> 'now'
         FROM json_each(?1)",
    ),
    settle: "UPDATE ai_jobs SET status = ?5, updated_at = ?6, last_error = ?7,
             provider_job_id = COALESCE(?8, provider_job_id),
             idempotency_key = COALESCE(?9, idempotency_key),
             completed_at = COALESCE(?10, completed_at),
             lease_owner = CASE WHEN ?11 THEN lease_owner ELSE NULL END,
             lease_expires_at = CASE WHEN ?11 THEN lease_expires_at ELSE NULL END,
             attempts = COALESCE(?12, attempts)
         WHERE id = ?1 AND lease_owner = ?2 AND fencing_token = ?3 AND status = ?4
         RETURNING scene_version_id",
    reschedule: "UPDATE ai_jobs SET status = ?5, attempts = ?6, polls = ?7, next_attempt_at = ?8,
             last_error = ?9, lease_owner = NULL, lease_expires_at = NULL,
             updated_at = CASE WHEN ?10 THEN ?11 ELSE updated_at END
         WHERE id = ?1 AND lease_owner = ?2 AND fencing_token = ?3 AND status = ?4",
    set_aside_status: "SELECT status FROM ai_jobs
         WHERE id = ?1 AND lease_owner = ?2 AND fencing_token = ?3",
    set_aside: "UPDATE ai_jobs SET status = 'needs_operator', last_error = ?5, updated_at = ?4,
             lease_owner = NULL, lease_expires_at = NULL
         WHERE id = ?1 AND lease_owner = ?2 AND fencing_token = ?3
           AND status NOT IN ('completed', 'failed', 'canceled')",
    insert_event: "INSERT INTO ai_job_events
             (ai_job_id, from_status, to_status, worker_id, detail, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    fail_version: "UPDATE scene_versions SET status = 'failed', error = ?2, updated_at = ?3
         WHERE id = ?1 AND status <> 'ready'",

    get_job: concat!("SELECT ", job_cols!(), " FROM ai_jobs WHERE id = ?1"),
    list_stranded: concat!(
        "SELECT ",
        job_cols!(),
        " FROM ai_jobs WHERE ",
        stranded!(),
        " ORDER BY updated_at, id LIMIT ?3"
    ),
    list_needs_operator: concat!(
        "SELECT ",
        job_cols!(),
        " FROM ai_jobs WHERE status = 'needs_operator' AND kind = 'video'
          ORDER BY updated_at, id LIMIT ?1"
    ),
    // Through the due index: reads the due rows, not every unfinished one.
    count_eligible: concat!(
        "SELECT COUNT(*), MIN(updated_at) FROM ai_jobs INDEXED BY ai_jobs_due WHERE ",
        eligible!(),
        " AND next_attempt_at <= ?4"
    ),
    count_stranded: concat!(
        "SELECT COUNT(*), MIN(updated_at) FROM ai_jobs WHERE ",
        stranded!()
    ),
    count_running: "SELECT COUNT(*) FROM ai_jobs
         WHERE status IN ('queued', 'submitting', 'pending', 'processing')
           AND kind = 'video' AND lease_expires_at > ?1",
    count_needs_operator: "SELECT COUNT(*), MIN(updated_at) FROM ai_jobs
         WHERE status = 'needs_operator' AND kind = 'video'",

    resolve_resubmit: "UPDATE ai_jobs SET status = 'queued', provider_job_id = NULL,
             idempotency_key = NULL, attempts = 0, polls = 0, next_attempt_at = 0,
             last_error = NULL, lease_owner = NULL, lease_expires_at = NULL,
             updated_at = ?2
         WHERE id = ?1 AND status = 'needs_operator'
         RETURNING scene_version_id",
    resolve_fail: "UPDATE ai_jobs SET status = 'failed', last_error = ?3, completed_at = ?2,
             lease_owner = NULL, lease_expires_at = NULL, updated_at = ?2
         WHERE id = ?1 AND status = 'needs_operator'
         RETURNING scene_version_id",
    job_status: "SELECT status FROM ai_jobs WHERE id = ?1",
    // `BEGIN IMMEDIATE` already holds the write lock: the row cannot change
    // between this read and the update.
    cancel_read: "SELECT status, provider, provider_job_id, scene_version_id
         FROM ai_jobs WHERE id = ?1 AND kind = 'video'",
    cancel_job: "UPDATE ai_jobs SET status = 'canceled', last_error = ?3, completed_at = ?2,
             updated_at = ?2, lease_owner = NULL, lease_expires_at = NULL,
             fencing_token = COALESCE(CAST(fencing_token AS INTEGER), 0) + 1
         WHERE id = ?1 AND status = ?4",
    // An id stored as `<prefix>|<id>` also matches its bare `<id>`. Each arm
    // of the OR is a probe of its own index (`ai_jobs_provider_ids`, migration 7;
    // `ai_jobs_provider_job_tail`, migration 3): no scan under the write lock.
    make_due: "UPDATE ai_jobs SET next_attempt_at = ?3
         WHERE rowid IN (
               SELECT rowid FROM ai_jobs WHERE provider = ?1 AND provider_job_id = ?2
               UNION
               SELECT rowid FROM ai_jobs WHERE provider = ?1
                  AND substr(provider_job_id, instr(provider_job_id, '|') + 1) = ?2)
           AND next_attempt_at > ?3
           AND status NOT IN ('completed', 'failed', 'canceled')",
    claim_probe: CLAIM_PROBE,
    claim_due: CLAIM_DUE,
    count_due_upto: "SELECT COUNT(*) FROM (SELECT 1 FROM ai_jobs INDEXED BY ai_jobs_due
         WHERE status IN ('queued', 'submitting', 'pending', 'processing')
           AND next_attempt_at <= ?1 LIMIT ?2)",
    insert_pause: "INSERT INTO provider_pauses
         (provider, cause, reason, operation, paused_at, paused_by, probe_at, cooldown_ms, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?5)
         ON CONFLICT (provider) DO NOTHING",
    update_pause: "UPDATE provider_pauses SET cause = ?2, reason = ?3, operation = ?4, updated_at = ?5
         WHERE provider = ?1",
    take_probe: "UPDATE provider_pauses
         SET probe_at = ?3, cooldown_ms = ?4, probes = probes + 1, updated_at = ?2
         WHERE provider = ?1 AND probe_at <= ?2",
    delete_pause: "DELETE FROM provider_pauses WHERE provider = ?1",
    list_pauses: "SELECT provider, cause, reason, operation, paused_at, paused_by, probe_at,
         cooldown_ms, probes, updated_at FROM provider_pauses ORDER BY provider",
    recent_workers: "SELECT worker_id FROM (SELECT worker_id FROM ai_job_events
         WHERE created_at >= ?1 ORDER BY rowid DESC LIMIT 10000)
         UNION SELECT lease_owner FROM ai_jobs
         WHERE status IN ('queued', 'submitting', 'pending', 'processing')
           AND lease_owner IS NOT NULL AND lease_expires_at > ?1",
    insert_webhook: "INSERT INTO clawcut_webhook_deliveries (provider, delivery_id, received_at)
         VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
    prune_webhooks: "DELETE FROM clawcut_webhook_deliveries WHERE received_at < ?1",
    backend: crate::Backend::Sqlite,
    job_cols: job_cols!(),
    list_cols: job_cols!("'' AS request"),
    eligible_where: eligible!(),
    stranded_where: stranded!(),
};

pub(crate) const MAKE_DUE: &str = SQLITE.make_due;
