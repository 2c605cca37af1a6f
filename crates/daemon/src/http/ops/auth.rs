//! Who is asking, and may they act: the panel's sign-in sessions, the two
//! token kinds, CSRF and Origin checks, and the slow-down of repeated
//! failed sign-ins.
//!
//! Deny by default: every `/ops` route but the sign-in form, the static
//! files and sign-out goes through [`require_operator`], and every action
//! calls [`Operator::may_act`] on the server before it does anything, so a
//! read-only session that crafts a POST gets 403 whatever the page showed.
//!
//! Sessions live in this process's memory: a restart signs everyone out
//! (they sign in again), and a session never outlives
//! `http.ops_session_ttl`. The cookie holds a random 256-bit id, nothing
//! else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use clawcut_core::Millis;
use rand::RngCore;

use crate::http::secret_matches;
use crate::http::serve::Peer;
use crate::state::State;

pub const COOKIE: &str = "clawcut_ops";
/// Sessions kept at once; the oldest go first past this.
const MAX_SESSIONS: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The admin token: looks and acts.
    Admin,
    /// The read-only token: looks only.
    ReadOnly,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The session cookie: forms must carry its CSRF token and come from
    /// this origin.
    Session { csrf: String },
    /// `Authorization: Bearer`: no ambient credential, so no CSRF check.
    Bearer,
}

/// The signed-in operator of one request (an extension set by
/// [`require_operator`]).
#[derive(Debug, Clone)]
pub struct Operator {
    pub role: Role,
    /// As typed at sign-in (cleaned), or `bearer` for a header request.
    pub name: String,
    pub via: Via,
}

impl Operator {
    /// The audit events' worker_id for this operator's actions.
    pub fn audit_name(&self) -> String {
        format!("ops:{}", self.name)
    }

    /// The CSRF token forms carry (empty for bearer requests, which need
    /// none).
    pub fn csrf(&self) -> &str {
        match &self.via {
            Via::Session { csrf } => csrf,
            Via::Bearer => "",
        }
    }

    pub fn may_act(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether a mutating request may go ahead: the admin role, and for a
    /// session both its CSRF token and this origin. The refusal names why
    /// (a 403).
    pub fn check_action(&self, headers: &HeaderMap, csrf: Option<&str>) -> Result<(), Refusal> {
        if !self.may_act() {
            return Err(Refusal::ReadOnly);
        }
        match &self.via {
            Via::Bearer => Ok(()),
            Via::Session { csrf: expected } => {
                let given = csrf.unwrap_or("");
                if given.is_empty() || !secret_matches(given.as_bytes(), expected.as_bytes()) {
                    return Err(Refusal::Csrf);
                }
                if !same_origin(headers) {
                    return Err(Refusal::Origin);
                }
                Ok(())
            }
        }
    }
}

/// Why an action was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ReadOnly,
    Csrf,
    Origin,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::ReadOnly => "this session is read-only: sign in with the admin token to act",
            Refusal::Csrf => {
                "the form's CSRF token is missing or wrong: reload the page and try again"
            }
            Refusal::Origin => "the request came from another origin",
        }
    }
}

/// A form POST with a session must name this daemon as its origin:
/// `Origin` (every current browser sends it on POST), else `Referer`,
/// against the `Host` it was sent to. Neither present: refused.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let matches = |url: &str| {
        ["http://", "https://"].iter().any(|scheme| {
            url.strip_prefix(scheme).is_some_and(|rest| {
                let authority = rest.split('/').next().unwrap_or("");
                authority.eq_ignore_ascii_case(host)
            })
        })
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        return origin.to_str().is_ok_and(matches);
    }
    headers
        .get(header::REFERER)
        .and_then(|r| r.to_str().ok())
        .is_some_and(matches)
}

#[derive(Debug, Clone)]
struct Session {
    role: Role,
    name: String,
    csrf: String,
    created: Millis,
    expires: Millis,
}

/// The signed-in sessions of this process.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Sessions {
    /// A new session; returns its cookie value.
    pub fn open(&self, role: Role, name: &str, now: Millis, ttl: Duration) -> String {
        let id = random_hex();
        let ttl = Millis::try_from(ttl.as_millis()).unwrap_or(Millis::MAX);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Session {
                role,
                name: name.to_owned(),
                csrf: random_hex(),
                created: now,
                expires: now.saturating_add(ttl),
            },
        );
        id
    }

    fn get(&self, id: &str, now: Millis) -> Option<Session> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).filter(|s| s.expires > now).cloned()
    }

    pub fn close(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(id);
    }
}

/// Failed sign-ins per client address: from the third on, each answer
/// waits longer (0.5 s doubling to 8 s), so guessing a token by trying is
/// slow; a success or 15 quiet minutes forget them.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u32, Millis)>>,
}

const FORGET_AFTER: Millis = 15 * 60_000;

impl Throttle {
    /// How long to wait before answering this address's next sign-in.
    pub fn delay(&self, ip: IpAddr, now: Millis) -> Duration {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&ip) {
            Some(&(n, last)) if n >= 2 && now - last < FORGET_AFTER => {
                let exp = (n - 2).min(4);
                Duration::from_millis(500 << exp)
            }
            _ => Duration::ZERO,
        }
    }

    pub fn failed(&self, ip: IpAddr, now: Millis) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, last)| now - *last < FORGET_AFTER);
        let e = map.entry(ip).or_insert((0, now));
        e.0 = e.0.saturating_add(1);
        e.1 = now;
    }

    pub fn succeeded(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&ip);
    }
}

/// Which token a string is, compared in constant time against both.
pub fn role_of(s: &State, given: &str) -> Option<Role> {
    let admin = s
        .admin_token
        .as_deref()
        .is_some_and(|t| secret_matches(given.as_bytes(), t.as_bytes()));
    let readonly = s
        .readonly_token
        .as_deref()
        .is_some_and(|t| secret_matches(given.as_bytes(), t.as_bytes()));
    if given.is_empty() {
        None
    } else if admin {
        Some(Role::Admin)
    } else if readonly {
        Some(Role::ReadOnly)
    } else {
        None
    }
}

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The `Set-Cookie` of a new session: `Secure` always (browsers keep it on
/// `http://localhost` and `127.0.0.1`; anywhere else the panel belongs
/// behind TLS), never readable by scripts, never sent cross-site.
pub fn set_cookie(value: &str, ttl: Duration) -> String {
    format!(
        "{COOKIE}={value}; Path=/ops; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        ttl.as_secs()
    )
}

pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/ops; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

/// The client address of a request, for the sign-in throttle.
pub fn peer_ip(req_peer: Option<&Peer>) -> IpAddr {
    req_peer
        .map(|p| p.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// Who the request is: a bearer token (either kind) or a live session.
pub fn identify(s: &State, headers: &HeaderMap) -> Option<Operator> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        // A wrong bearer is not rescued by a cookie beside it.
        return role_of(s, bearer).map(|role| Operator {
            role,
            name: "bearer".into(),
            via: Via::Bearer,
        });
    }
    let id = session_cookie(headers)?;
    let session = s.panel.sessions.get(&id, s.clock.now_ms())?;
    Some(Operator {
        role: session.role,
        name: session.name,
        via: Via::Session { csrf: session.csrf },
    })
}

/// The layer in front of every signed-in route: sets [`Operator`], or
/// sends a browser to the sign-in form (a GET) or refuses (401).
pub async fn require_operator(
    axum::extract::State(s): axum::extract::State<Arc<State>>,
    mut req: Request,
    next: Next,
) -> Response {
    match identify(&s, req.headers()) {
        Some(op) => {
            req.extensions_mut().insert(op);
            next.run(req).await
        }
        None if req.method() == Method::GET && !has_bearer(req.headers()) => {
            Redirect::to("/ops/login").into_response()
        }
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "sign in first: /ops/login",
        )
            .into_response(),
    }
}

fn has_bearer(h: &HeaderMap) -> bool {
    h.contains_key(header::AUTHORIZATION)
}

/// A name for the audit events: letters, digits and ` ._@-`, at most 64.
pub fn clean_name(raw: &str) -> Option<String> {
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_alphanumeric() || " ._@-".contains(*c))
        .take(64)
        .collect();
    let name = name.trim().to_owned();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn session_op(role: Role) -> Operator {
        Operator {
            role,
            name: "ann".into(),
            via: Via::Session {
                csrf: "c".repeat(64),
            },
        }
    }

    #[test]
    fn an_action_needs_the_admin_role_the_csrf_token_and_this_origin() {
        let ok = headers(&[
            ("host", "127.0.0.1:3778"),
            ("origin", "http://127.0.0.1:3778"),
        ]);
        let csrf = "c".repeat(64);
        let admin = session_op(Role::Admin);
        assert_eq!(admin.check_action(&ok, Some(&csrf)), Ok(()));
        assert_eq!(admin.check_action(&ok, None), Err(Refusal::Csrf));
        assert_eq!(admin.check_action(&ok, Some("")), Err(Refusal::Csrf));
        assert_eq!(admin.check_action(&ok, Some("wrong")), Err(Refusal::Csrf));
        let evil = headers(&[
            ("host", "127.0.0.1:3778"),
            ("origin", "http://evil.example"),
        ]);
        assert_eq!(admin.check_action(&evil, Some(&csrf)), Err(Refusal::Origin));
        let other_port = headers(&[
            ("host", "127.0.0.1:3778"),
            ("origin", "http://127.0.0.1:9999"),
        ]);
        assert_eq!(
            admin.check_action(&other_port, Some(&csrf)),
            Err(Refusal::Origin)
        );
        let neither = headers(&[("host", "127.0.0.1:3778")]);
        assert_eq!(
            admin.check_action(&neither, Some(&csrf)),
            Err(Refusal::Origin)
        );
        let referer = headers(&[
            ("host", "127.0.0.1:3778"),
            ("referer", "http://127.0.0.1:3778/ops/jobs/x"),
        ]);
        assert_eq!(admin.check_action(&referer, Some(&csrf)), Ok(()));
        let null_origin = headers(&[("host", "127.0.0.1:3778"), ("origin", "null")]);
        assert_eq!(
            admin.check_action(&null_origin, Some(&csrf)),
            Err(Refusal::Origin)
        );

        let ro = session_op(Role::ReadOnly);
        assert_eq!(ro.check_action(&ok, Some(&csrf)), Err(Refusal::ReadOnly));
        let bearer_ro = Operator {
            via: Via::Bearer,
            ..ro
        };
        assert_eq!(
            bearer_ro.check_action(&neither, None),
            Err(Refusal::ReadOnly)
        );
        let bearer_admin = Operator {
            via: Via::Bearer,
            ..admin
        };
        assert_eq!(bearer_admin.check_action(&neither, None), Ok(()));
    }

    #[test]
    fn sessions_expire_and_close() {
        let s = Sessions::default();
        let id = s.open(Role::Admin, "ann", 1_000, Duration::from_secs(60));
        assert_eq!(id.len(), 64);
        assert!(s.get(&id, 1_000 + 59_999).is_some());
        assert!(s.get(&id, 1_000 + 60_000).is_none());
        let id2 = s.open(Role::ReadOnly, "bo", 2_000, Duration::from_secs(60));
        assert_ne!(id, id2);
        let got = s.get(&id2, 2_000).unwrap();
        assert_eq!((got.role, got.name.as_str()), (Role::ReadOnly, "bo"));
        s.close(&id2);
        assert!(s.get(&id2, 2_000).is_none());
        assert!(s.get("not-a-session", 2_000).is_none());
    }

    #[test]
    fn failed_sign_ins_slow_the_next_ones_until_success_or_quiet() {
        let t = Throttle::default();
        let ip = IpAddr::from([10, 0, 0, 1]);
        let other = IpAddr::from([10, 0, 0, 2]);
        assert_eq!(t.delay(ip, 0), Duration::ZERO);
        t.failed(ip, 0);
        assert_eq!(t.delay(ip, 1), Duration::ZERO, "one typo is free");
        t.failed(ip, 1);
        assert_eq!(t.delay(ip, 2), Duration::from_millis(500));
        for n in 2..10 {
            t.failed(ip, n);
        }
        assert_eq!(t.delay(ip, 11), Duration::from_secs(8), "capped");
        assert_eq!(t.delay(other, 11), Duration::ZERO, "per address");
        assert_eq!(t.delay(ip, 9 + FORGET_AFTER), Duration::ZERO, "forgotten");
        t.failed(ip, 20);
        t.failed(ip, 21);
        t.succeeded(ip);
        assert_eq!(t.delay(ip, 22), Duration::ZERO);
    }

    #[test]
    fn the_cookie_is_http_only_secure_strict_and_expiring() {
        let c = set_cookie("abc", Duration::from_secs(3600));
        for part in [
            "clawcut_ops=abc",
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Max-Age=3600",
            "Path=/ops",
        ] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
        let h = headers(&[("cookie", "a=1; clawcut_ops=xyz; b=2")]);
        assert_eq!(session_cookie(&h).as_deref(), Some("xyz"));
        assert_eq!(session_cookie(&headers(&[("cookie", "a=1")])), None);
    }

    #[test]
    fn names_are_cleaned_for_the_audit_log() {
        assert_eq!(
            clean_name("  Ann O'Neil <x> ").as_deref(),
            Some("Ann ONeil x")
        );
        assert_eq!(
            clean_name("ops@clawcut.example").as_deref(),
            Some("ops@clawcut.example")
        );
        assert_eq!(clean_name("\n\t"), None);
        assert_eq!(clean_name(&"a".repeat(100)).unwrap().len(), 64);
    }
}
