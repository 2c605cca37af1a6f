//! A PostgreSQL outage: errors say "unavailable" while the server is down
//! and the same store recovers once it is back. Its own test binary, so
//! stopping the cluster cannot disturb the conformance suite.

use std::time::{Duration, Instant};

use clawcut_test_support::pg;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_unavailable_then_recovers() {
    let Some(pg) = pg::require() else { return };
    let url = pg.fresh_db("outage");
    let store = clawcut_store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();

    tokio::task::block_in_place(|| pg.stop());
    let err = store.ping().await.expect_err("ping with the server down");
    assert!(err.is_unavailable(), "{err:?}");
    let err = clawcut_store::connect(&url)
        .await
        .err()
        .expect("connect with the server down");
    assert!(err.is_unavailable(), "{err:?}");

    tokio::task::block_in_place(|| pg.start());
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = store.ping().await {
        assert!(Instant::now() < deadline, "store did not recover: {e:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store.schema_status().await.unwrap().is_current());

    // A restart mid-life: connections are cut, the pool reconnects.
    tokio::task::block_in_place(|| pg.restart());
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = store.ping().await {
        assert!(e.is_unavailable(), "{e:?}");
        assert!(Instant::now() < deadline, "store did not recover: {e:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn unsupported_url_scheme() {
    match clawcut_store::connect("mysql://x").await {
        Err(clawcut_store::StoreError::UnsupportedUrl { scheme }) => assert_eq!(scheme, "mysql"),
        Err(e) => panic!("expected UnsupportedUrl, got {e:?}"),
        Ok(_) => panic!("expected UnsupportedUrl, got a store"),
    }
}
