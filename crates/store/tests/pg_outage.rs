//! A PostgreSQL outage: errors say "unavailable" while the server is down
//! and the same store recovers once it is back. Its own test binary, so
//! stopping the cluster cannot disturb the conformance suite.

use std::time::{Duration, Instant};

use clawcut_test_support::pg;

/// The tests here stop the cluster or count on it: they take turns.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_unavailable_then_recovers() {
    let _turn = TURN.lock().await;
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

/// A loopback proxy to the cluster that, once armed, forwards the next
/// chunk holding a `COMMIT` to the server, waits for the server's answer
/// (so the commit happened) and then cuts the connection before the client
/// hears it: a commit whose answer was lost.
async fn commit_cutting_proxy(
    server_port: u16,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u16 {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let armed = armed.clone();
            tokio::spawn(async move {
                let Ok(mut server) =
                    tokio::net::TcpStream::connect(("127.0.0.1", server_port)).await
                else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let (mut up, mut down) = (vec![0u8; 16384], vec![0u8; 16384]);
                loop {
                    tokio::select! {
                        n = cr.read(&mut up) => {
                            let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                            let chunk = &up[..n];
                            let cut = armed.load(Ordering::SeqCst)
                                && chunk.windows(6).any(|w| w == b"COMMIT");
                            if sw.write_all(chunk).await.is_err() {
                                return;
                            }
                            if cut {
                                armed.store(false, Ordering::SeqCst);
                                let _ = sr.read(&mut down).await;
                                return;
                            }
                        }
                        n = sr.read(&mut down) => {
                            let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                            if cw.write_all(&down[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    port
}

/// What the store asked of the files.
#[derive(Default)]
struct Calls(Vec<&'static str>);

impl clawcut_store::Publish for Calls {
    fn publish(&mut self) -> std::io::Result<()> {
        self.0.push("publish");
        Ok(())
    }
    fn revert(&mut self) {
        self.0.push("revert");
    }
    fn committed(&mut self) {
        self.0.push("committed");
    }
}

/// The server committed a completion but the connection dropped before
/// its answer: the store cannot tell, and must not put the files back (a
/// completed row without its file is the one state the SPEC forbids; a
/// file whose commit did not happen is what a crash after the rename
/// leaves, and the job is redone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_keeps_the_files() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use clawcut_core::{EligibilityRules, JobStatus};
    use clawcut_store::{ClaimRequest, Claimed, Completion, StoreError, StoredOutput};
    use clawcut_test_support::db::{AppDb, NewJob};

    let _turn = TURN.lock().await;
    let Some(pg) = pg::require() else { return };
    let url = pg.fresh_db("lost_commit");
    let direct = clawcut_store::connect(&url).await.unwrap();
    direct.migrate().await.unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let proxy = commit_cutting_proxy(pg.port(), armed.clone()).await;
    let via_proxy = url.replace(&format!(":{}/", pg.port()), &format!(":{proxy}/"));
    let store = clawcut_store::connect(&via_proxy).await.unwrap();

    let db = AppDb::connect(&url).await.unwrap();
    let now = 1_800_000_000_000;
    db.insert_job_with_scene(&NewJob::video("j", "processing", Some("p"), now - 600_000))
        .await
        .unwrap();
    let rules = EligibilityRules {
        min_age: Duration::from_secs(60),
        max_age: Duration::from_secs(86_400),
        submit_enabled: false,
    };
    let claimed = store
        .claim(&ClaimRequest {
            worker_id: "w",
            now,
            lease_ttl: Duration::from_secs(60),
            limit: 1,
            rules: &rules,
            only_job: None,
            force: false,
            probe: None,
        })
        .await
        .unwrap();
    let [Claimed::Job(job)] = claimed.as_slice() else {
        panic!("{claimed:?}")
    };
    let lease = job.lease().unwrap();
    let out = StoredOutput {
        path: "/media/videos/s/v.mp4".into(),
        sha256: "ab".repeat(32),
        bytes: 1,
    };
    let c = Completion {
        from: JobStatus::Processing,
        now: now + 1,
        video: out,
        thumbnail: None,
        thumbnail_problem: None,
    };
    let mut files = Calls::default();
    armed.store(true, Ordering::SeqCst);
    let err = store
        .complete(&lease, &c, &mut files)
        .await
        .expect_err("the answer to COMMIT never arrives");
    assert!(matches!(err, StoreError::Complete(_)), "{err:?}");
    assert!(!armed.load(Ordering::SeqCst), "the proxy cut at the COMMIT");
    let row = db.job("j").await.unwrap().unwrap();
    assert_eq!(row.status, "completed", "the server did commit: {row:?}");
    assert_eq!(
        files.0,
        ["publish", "committed"],
        "a committed row keeps its files"
    );
}

#[tokio::test]
async fn unsupported_url_scheme() {
    match clawcut_store::connect("mysql://x").await {
        Err(clawcut_store::StoreError::UnsupportedUrl { scheme }) => assert_eq!(scheme, "mysql"),
        Err(e) => panic!("expected UnsupportedUrl, got {e:?}"),
        Ok(_) => panic!("expected UnsupportedUrl, got a store"),
    }
}

/// Cut every connection of the store's database from the server side, as a
/// server restart or a proxy's idle timeout would.
async fn cut_connections(url: &str) {
    let admin = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
}

/// A connection cut while it sat idle is pinged on its way out of the pool
/// and replaced: the next statement succeeds the first time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_while_idle_is_replaced_before_use() {
    let _turn = TURN.lock().await;
    let Some(pg) = pg::require() else { return };
    let url = pg.fresh_db("idle_cut");
    let store = clawcut_store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    cut_connections(&url).await;
    // Past the idle time after which a connection is pinged first.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    store.ping().await.expect("the cut connection was replaced");
    assert!(store.schema_status().await.unwrap().is_current());
}

/// A connection cut moments after its last use is handed out unpinged: one
/// statement fails as the database being unavailable (which callers retry),
/// and the store is whole again without anyone reconnecting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_in_steady_use_fails_one_statement_then_recovers() {
    let _turn = TURN.lock().await;
    let Some(pg) = pg::require() else { return };
    let url = pg.fresh_db("busy_cut");
    let store = clawcut_store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    cut_connections(&url).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut failures = 0;
    while let Err(e) = store.ping().await {
        assert!(e.is_unavailable(), "{e:?}");
        assert!(Instant::now() < deadline, "store did not recover: {e:?}");
        failures += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        failures <= 8,
        "{failures} failed statements, one per pooled connection at most"
    );
    assert!(store.schema_status().await.unwrap().is_current());
}
