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

// SQLite only by nature: its dynamic typing lets a TEXT key or an INTEGER
// column hold any type of value.
sqlite_cases!(
    claim_skips_a_row_whose_id_cannot_be_read,
    claim_writes_an_integer_token_whatever_the_column_held,
    complete_publishes_before_taking_the_write_lock,
    complete_reverts_an_early_publish_when_the_fence_no_longer_matches,
);

/// SQLite specifics: the file and its directory are created, WAL is on.
#[tokio::test]
async fn creates_directory_and_uses_wal() {
    let (dir, _) = temp_sqlite();
    let path = dir.path().join("a/b/clawcut.db");
    let url = format!("sqlite://{}", path.display());
    let store = clawcut_store::SqliteStore::connect(&url).await.unwrap();
    clawcut_store::Store::migrate(&store).await.unwrap();
    assert!(path.is_file());
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(sync, 2, "synchronous = FULL");
}
