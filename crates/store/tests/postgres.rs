//! The conformance suite on PostgreSQL: each case on a fresh database of
//! one throwaway cluster. Skipped loudly when PostgreSQL cannot be started
//! here (a failure with `CI=true`).

mod conformance;

use clawcut_test_support::pg;

macro_rules! pg_cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(pg) = pg::require() else { return };
                let url = pg.fresh_db(stringify!($name));
                conformance::$name(&url).await;
            }
        )*
    };
}

conformance::for_each_case!(pg_cases);

// PostgreSQL only: its completions publish inside the transaction, under an
// advisory lock per scene version, so the store itself serializes them
// across replicas. SQLite publishes before its write lock (see
// `sqlite.rs`), and the daemon orders one version's completions itself.
pg_cases!(complete_serializes_publishing_per_scene_version);

// PostgreSQL only: its plan cache (`pg_prepared_statements`) and its table
// counters (`pg_stat_user_tables`).
pg_cases!(claim_due_is_planned_once_on_a_busy_table);
pg_cases!(claim_of_a_run_of_rows_updates_them_in_place);
