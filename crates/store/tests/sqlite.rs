//! The conformance suite on SQLite: each case on a fresh database file.

mod conformance;

use clawcut_test_support::db::temp_sqlite;

macro_rules! sqlite_cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_dir, url) = temp_sqlite();
                conformance::$name(&url).await;
            }
        )*
    };
}

conformance::for_each_case!(sqlite_cases);
