//! A throwaway S3-compatible server for the object-store tests: moto's
//! `moto_server` (PyPI `moto[server]`, installed by `.ci/run`) on a free
//! port of 127.0.0.1, one per call of [`require`], killed when dropped.
//!
//! The daemon reaches it through a small TCP relay on another port, so a
//! test can make the store unreachable ([`S3Server::set_reachable`]) and
//! bring it back without losing what the server holds (moto keeps its
//! buckets in memory). The test's own reads ([`S3Server::get`],
//! [`S3Server::keys`], [`S3Server::multipart_uploads`]) go to the server
//! directly, as plain unsigned HTTP (moto does not check signatures).
//!
//! Without `moto_server` (on `PATH`, or `$MOTO_SERVER`) the tests skip
//! loudly; with `CI=true` that is a failure.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The bucket every server starts with.
pub const BUCKET: &str = "clips";

/// A running moto server with one bucket, [`BUCKET`].
pub struct S3Server {
    child: Child,
    port: u16,
    relay_port: u16,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

/// A started server, or `None` after a loud banner when `moto_server` is
/// not installed; panics instead when `CI=true`.
pub fn require() -> Option<S3Server> {
    match S3Server::start() {
        Ok(s) => Some(s),
        Err(reason) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("the S3 test server is required in CI but could not be started: {reason}");
            }
            eprintln!(
                "\n\
                 ************************************************************\n\
                 *** SKIPPED: object-store test: {reason}\n\
                 *** (pip install 'moto[server]' to run it; .ci/run does;\n\
                 ***  with CI=true this is a failure)\n\
                 ************************************************************\n"
            );
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

impl S3Server {
    fn start() -> Result<S3Server, String> {
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {bin}: {e}"))?;
        let relay = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("relay: {e}"))?;
        let relay_port = relay.local_addr().map_err(|e| e.to_string())?.port();
        let mut server = S3Server {
            child,
            port,
            relay_port,
            up: Arc::new(AtomicBool::new(true)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("{bin} exited at once ({status})"));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{bin} did not listen on 127.0.0.1:{port} within 30s"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (status, body) = server.http("PUT", &format!("/{BUCKET}"));
        if status != 200 {
            return Err(format!(
                "create bucket: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        server.spawn_relay(relay);
        Ok(server)
    }

    /// Accepts on the relay port; while reachable, pipes each connection
    /// to the server; while not, closes new ones at once and cuts the
    /// live ones.
    fn spawn_relay(&self, relay: TcpListener) {
        let (up, stop, port) = (self.up.clone(), self.stop.clone(), self.port);
        std::thread::spawn(move || {
            for conn in relay.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = conn else { continue };
                if !up.load(Ordering::Relaxed) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(mut from), Ok(mut to)) = (from, to) else {
                        continue;
                    };
                    let up = up.clone();
                    std::thread::spawn(move || {
                        let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            if !up.load(Ordering::Relaxed) {
                                break;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
    }

    /// The endpoint the daemon is given (the relay).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.relay_port)
    }

    /// `s3://clips/<prefix>`.
    pub fn store_url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The environment a daemon needs to reach it (no secret of value:
    /// moto takes any key).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing-secret-0123".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Cut the daemon off from the store (new and live connections), or
    /// let it through again.
    pub fn set_reachable(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    /// The object at `key` in [`BUCKET`], if any.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let (status, body) = self.http("GET", &format!("/{BUCKET}/{key}"));
        (status == 200).then_some(body)
    }

    /// Delete the object at `key` in [`BUCKET`] (as an app or an operator
    /// might).
    pub fn delete(&self, key: &str) {
        let (status, body) = self.http("DELETE", &format!("/{BUCKET}/{key}"));
        assert!(
            status == 204 || status == 200,
            "delete {key}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// Write `body` at `key` in [`BUCKET`], behind the daemon's back (a
    /// damaged or replaced object).
    pub fn put(&self, key: &str, body: &[u8]) {
        let (status, answer) = self.http_with("PUT", &format!("/{BUCKET}/{key}"), body);
        assert_eq!(
            status,
            200,
            "put {key}: {}",
            String::from_utf8_lossy(&answer)
        );
    }

    /// Every key under `prefix` in [`BUCKET`].
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (status, body) = self.http(
            "GET",
            &format!("/{BUCKET}?list-type=2&max-keys=1000&prefix={prefix}"),
        );
        assert_eq!(status, 200, "list: {}", String::from_utf8_lossy(&body));
        tags(&String::from_utf8_lossy(&body), "Key")
    }

    /// The multipart uploads in progress in [`BUCKET`], as keys.
    pub fn multipart_uploads(&self) -> Vec<String> {
        let (status, body) = self.http("GET", &format!("/{BUCKET}?uploads"));
        assert_eq!(status, 200, "uploads: {}", String::from_utf8_lossy(&body));
        tags(&String::from_utf8_lossy(&body), "Key")
    }

    /// One HTTP/1.0 request to the server itself (not the relay).
    fn http(&self, method: &str, path: &str) -> (u16, Vec<u8>) {
        self.http_with(method, path, &[])
    }

    fn http_with(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, Vec::new());
        };
        let req = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        if s.write_all(req.as_bytes()).is_err() || s.write_all(body).is_err() {
            return (0, Vec::new());
        }
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            return (0, raw);
        };
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, raw[split + 4..].to_vec())
    }
}

/// The text of every `<tag>…</tag>` in `xml`, in order.
fn tags(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(after[..j].to_owned());
        rest = &after[j + close.len()..];
    }
    out
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.relay_port));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
