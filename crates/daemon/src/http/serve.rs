//! The accept loop. `axum::serve` has no header timeout, no connection cap
//! and no way to set them, so a public webhook listener could be held open
//! by slowloris clients and idle keep-alives until the process ran out of
//! file descriptors (and with it the database and the providers). Here:
//!
//! - at most `http.max_connections` connections are open at once: the loop
//!   takes a permit *before* it accepts, so the rest wait in the kernel's
//!   accept queue (then get refused by the kernel) and cost no descriptor;
//! - a request head must arrive within `http.header_timeout` (hyper's header
//!   read timer, which also runs while a kept-alive connection waits for its
//!   next request, so it is the idle limit too);
//! - the body's own deadline is `http.request_timeout`, applied where the
//!   body is read ([`super::TimedBody`]), after the bearer check.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tracing::{debug, warn};

/// The TCP peer of a request, for the handlers that answer loopback
/// clients in more detail.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// What bounds the listener (from `[http]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// An accept that failed (out of descriptors, most likely) is retried after
/// this pause instead of in a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serve `app` on `listener` until `stop` completes, then close every
/// connection gracefully (an idle one at once, a busy one after its answer).
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut stop => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                // Never closed: the loop owns the semaphore.
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            biased;
            () = &mut stop => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "http accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            app.clone().oneshot(req.map(axum::body::Body::new))
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), svc));
        tokio::spawn(async move {
            // Held for the connection's life: the cap counts open sockets.
            let _permit = permit;
            if let Err(e) = conn.await {
                debug!(error = %e, %peer, "http connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", get(|| async { "ok" }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_with(listener, app, limits, async move {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    /// Reads until EOF; `None` if the server kept the socket open past
    /// `within`.
    async fn read_to_close(s: &mut TcpStream, within: Duration) -> Option<String> {
        let mut buf = Vec::new();
        match tokio::time::timeout(within, s.read_to_end(&mut buf)).await {
            Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
            Err(_) => None,
        }
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

    #[tokio::test]
    async fn partial_heads_and_idle_keep_alives_are_closed_at_the_header_timeout() {
        let limits = Limits {
            header_timeout: Duration::from_millis(300),
            max_connections: 8,
        };
        let (addr, _stop) = start(limits).await;

        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
            .await
            .unwrap();
        let t = std::time::Instant::now();
        assert!(
            read_to_close(&mut slow, Duration::from_secs(3))
                .await
                .is_some()
        );
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );

        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(GET).await.unwrap();
        let t = std::time::Instant::now();
        let answer = read_to_close(&mut idle, Duration::from_secs(3))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_until_one_closes() {
        let limits = Limits {
            header_timeout: Duration::from_secs(30),
            max_connections: 2,
        };
        let (addr, _stop) = start(limits).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // One round trip proves the server took this connection.
            s.write_all(GET).await.unwrap();
            let mut b = [0u8; 12];
            s.read_exact(&mut b).await.unwrap();
            held.push(s);
        }
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(GET).await.unwrap();
        let mut b = [0u8; 12];
        let early =
            tokio::time::timeout(Duration::from_millis(500), third.read_exact(&mut b)).await;
        assert!(
            early.is_err(),
            "the third connection was served past the cap"
        );
        drop(held.pop());
        tokio::time::timeout(Duration::from_secs(3), third.read_exact(&mut b))
            .await
            .expect("served once a slot freed")
            .unwrap();
        assert_eq!(&b, b"HTTP/1.1 200");
    }

    #[tokio::test]
    async fn stop_closes_idle_connections() {
        let limits = Limits {
            header_timeout: Duration::from_secs(30),
            max_connections: 8,
        };
        let (addr, stop) = start(limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(GET).await.unwrap();
        let mut b = [0u8; 12];
        s.read_exact(&mut b).await.unwrap();
        stop.send(()).unwrap();
        assert!(
            read_to_close(&mut s, Duration::from_secs(3))
                .await
                .is_some()
        );
    }
}
