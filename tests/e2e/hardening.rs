//! The listener against hostile clients, on the real binary: slowloris
//! heads, idle keep-alives, connection floods, tokens of the wrong length,
//! bodies sent to a wrong token, trickled bodies, short public tokens.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A daemon with the admin API on and `http` appended to `[http]`.
fn start(http: &str) -> (Env, Daemon, u16) {
    let env = Env::sqlite("http://127.0.0.1:9", "");
    let port = free_port();
    env.edit_config(
        "[http]\nlisten = \"\"",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\nadmin_token_env = \"E2E_ADMIN\"\n{http}"),
    );
    env.migrate();
    let daemon = env.start_with("hardening", |c| {
        c.env("E2E_ADMIN", ADMIN_TOKEN);
    });
    (env, daemon, port)
}

async fn up(port: u16) {
    eventually(Duration::from_secs(20), "/healthz", || async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut b = String::new();
        s.read_to_string(&mut b).await.ok()?;
        b.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
}

/// Everything the server sends until it closes; `None` if it is still open
/// after `within`.
async fn until_closed(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buf = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut buf))
        .await
        .ok()
        .map(|_| String::from_utf8_lossy(&buf).into_owned())
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_heads_and_idle_keep_alives_are_closed_at_the_header_timeout() {
    let (_env, _daemon, port) = start("header_timeout = \"1s\"");
    up(port).await;

    // Slowloris: a head that never ends.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-a: ")
        .await
        .unwrap();
    let t = Instant::now();
    let got = until_closed(&mut slow, Duration::from_secs(10)).await;
    let took = t.elapsed();
    assert!(got.is_some(), "a partial head held the connection for 10 s");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    eprintln!("slowloris connection closed after {took:?} (header_timeout 1s)");

    // One answered request, then silence: the keep-alive is dropped.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let got = until_closed(&mut idle, Duration::from_secs(10))
        .await
        .expect("an idle keep-alive outlived 10 s");
    let took = t.elapsed();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    eprintln!("idle keep-alive closed after {took:?} (header_timeout 1s)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_flood_costs_at_most_the_cap_in_descriptors() {
    let (_env, daemon, port) = start("header_timeout = \"30s\"\nmax_connections = 8");
    up(port).await;
    // Let the startup pass settle its own descriptors.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = open_fds(daemon.pid());
    let mut flood = Vec::new();
    for _ in 0..400 {
        let connect = TcpStream::connect(("127.0.0.1", port));
        match tokio::time::timeout(Duration::from_millis(500), connect).await {
            Ok(Ok(s)) => flood.push(s),
            // The kernel's accept queue is full: its SYNs go unanswered
            // (or are refused), as intended.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = open_fds(daemon.pid());
    eprintln!(
        "{} half-open connections: {before} fds before, {during} during (cap 8)",
        flood.len()
    );
    assert!(flood.len() >= 50, "only {} connects", flood.len());
    // Slack for the database pool opening a connection meanwhile (three
    // descriptors each on SQLite), far below the flood's size.
    assert!(
        during <= before + 8 + 12,
        "{during} fds with {} connections open (cap 8, {before} before)",
        flood.len()
    );
    // A queued connection is served once the flood goes away.
    let late = tokio::time::timeout(
        Duration::from_millis(500),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await;
    drop(flood);
    if let Ok(Ok(mut s)) = late {
        let s = &mut s;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let got = until_closed(s, Duration::from_secs(10)).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    }
    up(port).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_checked_before_the_body_and_bodies_have_a_deadline() {
    let (_env, _daemon, port) = start("request_timeout = \"1s\"");
    up(port).await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    // Shorter, longer, and same length but wrong: all 401.
    for wrong in [
        &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1],
        &format!("{ADMIN_TOKEN}x"),
        &ADMIN_TOKEN.replace('a', "b"),
        "",
    ] {
        let r = client
            .get(format!("{base}/v1/jobs?state=stranded"))
            .bearer_auth(wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "token {wrong:?}");
    }

    // A gigabyte announced with a wrong token: refused before a byte of it.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(
        b"POST /v1/reconcile HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer nope\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{",
    )
    .await
    .unwrap();
    let t = Instant::now();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut head))
        .await
        .expect("no answer before the body")
        .unwrap();
    assert_eq!(
        &head,
        b"HTTP/1.1 401",
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    eprintln!("1 GiB body with a wrong token: 401 after {:?}", t.elapsed());

    // The right token and a body that never comes: 408 at request_timeout.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(
        format!("POST /v1/reconcile HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{")
            .as_bytes(),
    )
    .await
    .unwrap();
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .expect("a withheld body held the request past 5 s")
        .unwrap();
    assert_eq!(
        &head,
        b"HTTP/1.1 408",
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900), "408 after {took:?}");
    eprintln!("withheld body: 408 after {took:?} (request_timeout 1s)");
}

#[test]
fn a_public_listener_refuses_a_short_or_blank_token() {
    let env = Env::sqlite("http://127.0.0.1:9", "");
    env.edit_config(
        "[http]\nlisten = \"\"",
        "[http]\nlisten = \"0.0.0.0:0\"\nadmin_token_env = \"E2E_ADMIN\"",
    );
    env.migrate();
    for bad in [
        "x",
        "                    ",
        "short-token-15c",
        "a token with spaces",
    ] {
        for cmd in ["check-config", "run"] {
            let o = env.cmd(&[cmd]).env("E2E_ADMIN", bad).output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(78), "{cmd} with {bad:?}: {err}");
            assert!(
                err.contains("E2E_ADMIN") && err.contains("16"),
                "{cmd}: {err}"
            );
        }
    }
    // check-config does not bind: a good token is enough to pass it.
    let o = env
        .cmd(&["check-config"])
        .env("E2E_ADMIN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
