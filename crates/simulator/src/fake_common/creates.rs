//! Create-call control shared by every fake (see the parent module's docs):
//! scripted create answers, holding, losing, and counting per reference.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::watch;

use super::{malformed_response, raw_response};
use crate::fake_openai::plumbing::{lock, sleep_or_shutdown};

/// How one create call is answered (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateStep {
    /// The provider's error in its own shape; nothing is created.
    HttpError {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Created, then answered with a body that is not JSON.
    Malformed,
    /// Created, then answered after this long (past a client timeout).
    Hang(Duration),
    /// Created, then answered with exactly this.
    Raw { status: u16, body: String },
}

/// A create request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRecord {
    pub path: String,
    /// Lowercase names; values as sent.
    pub headers: Vec<(String, String)>,
    pub body: Value,
    /// What `creates()` counts it under.
    pub reference: String,
    /// The id the fake gave the job.
    pub job_id: String,
}

impl CreateRecord {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Create-call control shared by every fake.
pub(crate) struct Creates {
    inner: Mutex<CreatesInner>,
    hold: watch::Sender<bool>,
}

#[derive(Default)]
struct CreatesInner {
    records: Vec<CreateRecord>,
    by_ref: HashMap<String, usize>,
    steps: VecDeque<CreateStep>,
    lose: usize,
    held: usize,
}

/// What to do with one create request.
pub(crate) enum Admit {
    /// Answer this error; create nothing.
    Refuse {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Create the job, then answer as `after` says (or normally), or lose
    /// the answer.
    Proceed {
        after: Option<CreateStep>,
        lost: bool,
    },
    /// The server is shutting down while the request was held.
    ShuttingDown,
}

impl Default for Creates {
    fn default() -> Self {
        Creates {
            inner: Mutex::default(),
            hold: watch::channel(false).0,
        }
    }
}

impl Creates {
    /// Decides how this request goes; waits while creates are held.
    pub async fn admit(&self, shutdown: &watch::Receiver<bool>) -> Admit {
        let step = lock(&self.inner).steps.pop_front();
        if let Some(CreateStep::HttpError {
            status,
            retry_after,
        }) = step
        {
            return Admit::Refuse {
                status,
                retry_after,
            };
        }
        let mut hold = self.hold.subscribe();
        if *hold.borrow() {
            lock(&self.inner).held += 1;
            let mut stop = shutdown.clone();
            let released = tokio::select! {
                r = hold.wait_for(|h| !*h) => r.is_ok(),
                _ = stop.wait_for(|s| *s) => false,
            };
            lock(&self.inner).held -= 1;
            if !released {
                return Admit::ShuttingDown;
            }
        }
        let mut inner = lock(&self.inner);
        let lost = inner.lose > 0;
        inner.lose = inner.lose.saturating_sub(1);
        Admit::Proceed { after: step, lost }
    }

    pub fn record(&self, record: CreateRecord) {
        let mut inner = lock(&self.inner);
        *inner.by_ref.entry(record.reference.clone()).or_default() += 1;
        inner.records.push(record);
    }

    /// The answer to a create that made `ok`'s job.
    pub async fn finish(
        after: Option<CreateStep>,
        lost: bool,
        ok: Response,
        shutdown: &watch::Receiver<bool>,
    ) -> Response {
        if lost {
            return lost_response();
        }
        match after {
            None | Some(CreateStep::HttpError { .. }) => ok,
            Some(CreateStep::Malformed) => malformed_response(),
            Some(CreateStep::Hang(d)) => {
                sleep_or_shutdown(d, shutdown).await;
                ok
            }
            Some(CreateStep::Raw { status, body }) => raw_response(status, body),
        }
    }

    pub fn hold(&self, on: bool) {
        self.hold.send_replace(on);
    }

    pub fn held(&self) -> usize {
        lock(&self.inner).held
    }

    pub fn lose_next(&self, n: usize) {
        lock(&self.inner).lose = n;
    }

    pub fn script(&self, steps: Vec<CreateStep>) {
        lock(&self.inner).steps = steps.into();
    }

    pub fn count(&self, reference: &str) -> usize {
        lock(&self.inner)
            .by_ref
            .get(reference)
            .copied()
            .unwrap_or(0)
    }

    pub fn records(&self) -> Vec<CreateRecord> {
        lock(&self.inner).records.clone()
    }
}

/// The public create-control methods every fake exposes, delegating to its
/// [`Creates`]; one macro instead of the same eight methods in each fake.
macro_rules! create_control {
    ($fake:ty, $($creates:tt)+) => {
        impl $fake {
            /// Jobs created under `reference` (see the module docs of
            /// `fake_common` for what each fake counts by).
            pub fn creates(&self, reference: &str) -> usize {
                self.$($creates)+.count(reference)
            }

            /// Every create request received that made a job, in order.
            pub fn create_requests(&self) -> Vec<$crate::fake_common::CreateRecord> {
                self.$($creates)+.records()
            }

            /// The last create request that made a job.
            pub fn last_create(&self) -> Option<$crate::fake_common::CreateRecord> {
                self.$($creates)+.records().pop()
            }

            /// Hold create requests (before the job exists) until released.
            pub fn hold_creates(&self, on: bool) {
                self.$($creates)+.hold(on);
            }

            pub fn release_creates(&self) {
                self.$($creates)+.hold(false);
            }

            /// Create requests waiting on the hold right now.
            pub fn held_creates(&self) -> usize {
                self.$($creates)+.held()
            }

            /// The next `n` creates make their job, then reset the
            /// connection instead of answering.
            pub fn lose_next_creates(&self, n: usize) {
                self.$($creates)+.lose_next(n);
            }

            /// The next creates answer these, in order; then normally.
            pub fn script_creates(&self, steps: Vec<$crate::fake_common::CreateStep>) {
                self.$($creates)+.script(steps);
            }
        }
    };
}
pub(crate) use create_control;

/// Runs a create handler's work in its own task: a provider that received a
/// create request finishes it even when the client hangs up (a held or slow
/// create must still make its job, or crash tests would prove nothing).
pub(crate) async fn detached(
    work: impl std::future::Future<Output = Response> + Send + 'static,
) -> Response {
    tokio::spawn(work)
        .await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// 200 with a declared body that never comes: the server resets the
/// connection, so the client sees the request go out and no answer.
pub(crate) fn lost_response() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<axum::body::Bytes, _>(io::Error::other("answer lost"))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(1024u64));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
