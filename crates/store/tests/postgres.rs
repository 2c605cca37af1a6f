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
