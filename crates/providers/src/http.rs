//! What every adapter shares: the HTTP client with its credentials, rate
//! limiter and in-flight cap, URL building, and the one mapping from HTTP
//! failures to [`ProviderError`]. Adapters only build and parse their own
//! JSON.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use clawcut_core::{ProviderError, ProviderErrorKind};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use tokio::sync::Semaphore;
use url::Url;

use crate::config::ProviderConfig;
use crate::error::ProvidersError;
use crate::rate::RateLimiter;
use crate::sign::KlingJwt;

/// A provider's JSON answer is small; anything bigger is a misbehaving
/// endpoint, and buffering it would let it eat our memory.
const MAX_API_BODY: usize = 1024 * 1024;
/// Room for a useful provider message in logs and `last_error`, no more.
const EXCERPT_CHARS: usize = 300;
/// A `Retry-After` (or `retry-after-ms`) beyond this is treated as this: a
/// provider must not be able to park a job for years with one header. The
/// same 24h the backoff math caps every provider floor at.
pub(crate) const MAX_RETRY_AFTER: Duration = clawcut_core::backoff::MAX_FLOOR;
/// OpenAI's (and compatible proxies') millisecond form of `Retry-After`;
/// preferred when it is a usable number, as OpenAI's own SDKs do.
const RETRY_AFTER_MS: &str = "retry-after-ms";
/// Connecting should be quick even when a poll may legitimately take longer.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A 2xx answer, fully read.
pub(crate) struct ApiResponse {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Any answer, fully read: for adapters (Kling) whose error codes live in
/// the body and matter more than the HTTP status.
pub(crate) struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// How a provider wants the key presented.
pub(crate) enum Auth {
    /// `Authorization: Bearer <key>` (OpenAI, Replicate, Runway, Luma).
    Bearer,
    /// `Authorization: Key <key>` (fal).
    KeyPrefix,
    /// `x-goog-api-key: <key>` (Gemini API).
    GoogApiKey,
    /// `Authorization: Bearer <JWT>` signed with the secret key (Kling).
    KlingJwt(KlingJwt),
}

/// One provider's HTTP client: base URL, credentials, a requests-per-minute
/// limiter and a semaphore capping requests in flight, both shared by every
/// job talking to this provider.
pub(crate) struct ApiClient {
    client: reqwest::Client,
    base_url: Url,
    api_key: String,
    api_secret: Option<String>,
    auth: Auth,
    in_flight: Semaphore,
    rate: Option<RateLimiter>,
}

impl ApiClient {
    pub(crate) fn new(cfg: &ProviderConfig, auth: Auth) -> Result<Self, ProvidersError> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(MAX_CONNECT_TIMEOUT))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("clawcut-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ProvidersError::BuildClient)?;
        if HeaderValue::from_str(&format!("Bearer {}", cfg.api_key)).is_err() {
            return Err(ProvidersError::InvalidConfig {
                provider: cfg.name.clone(),
                field: "api_key",
                reason: "contains characters not allowed in a header".into(),
            });
        }
        Ok(ApiClient {
            client,
            base_url: cfg.base_url.clone(),
            api_key: cfg.api_key.clone(),
            api_secret: cfg.api_secret.clone(),
            auth,
            // `validate` bounds it; clamp anyway, `Semaphore::new` panics
            // past MAX_PERMITS.
            in_flight: Semaphore::new(cfg.max_in_flight.clamp(1, Semaphore::MAX_PERMITS)),
            rate: cfg.requests_per_minute.map(RateLimiter::new),
        })
    }

    /// `base_url` + `segments`, each segment percent-encoded so a job id can
    /// never change the path's shape.
    pub(crate) fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Whether `url` is on the API's own origin (scheme, host and port, as
    /// the base URL has them): the only place a credential may be sent
    /// outside an API call.
    pub(crate) fn is_own_origin(&self, url: &str) -> bool {
        Url::parse(url).is_ok_and(|u| u.origin() == self.base_url.origin())
    }

    /// The credential header, as (lowercase name, value): for API calls and
    /// for output downloads that need the key.
    pub(crate) fn auth_header(&self) -> (String, String) {
        match &self.auth {
            Auth::Bearer => ("authorization".into(), format!("Bearer {}", self.api_key)),
            Auth::KeyPrefix => ("authorization".into(), format!("Key {}", self.api_key)),
            Auth::GoogApiKey => ("x-goog-api-key".into(), self.api_key.clone()),
            Auth::KlingJwt(jwt) => ("authorization".into(), format!("Bearer {}", jwt.token())),
        }
    }

    /// GET `url`; a 2xx is returned fully read, anything else becomes a
    /// classified [`ProviderError`].
    pub(crate) async fn get(&self, url: Url) -> Result<ApiResponse, ProviderError> {
        self.send_ok(Method::GET, url, None, &[]).await
    }

    /// POST `body` as JSON with `headers` besides the credentials.
    pub(crate) async fn post_json(
        &self,
        url: Url,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> Result<ApiResponse, ProviderError> {
        self.send_ok(Method::POST, url, Some(body), headers).await
    }

    /// [`ApiClient::send`], then a non-2xx becomes a classified error.
    pub(crate) async fn send_ok(
        &self,
        method: Method,
        url: Url,
        json: Option<&serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Result<ApiResponse, ProviderError> {
        let raw = self.send(method, url, json, headers).await?;
        self.require_2xx(raw)
    }

    pub(crate) fn require_2xx(&self, raw: RawResponse) -> Result<ApiResponse, ProviderError> {
        if (200..300).contains(&raw.status) {
            Ok(ApiResponse {
                headers: raw.headers,
                body: raw.body,
            })
        } else {
            Err(self.error_from_status(raw.status, &raw.headers, &raw.body))
        }
    }

    /// Sends one request and reads the whole answer, whatever its status;
    /// only transport failures are errors. Waits for the rate limiter, then
    /// for an in-flight slot (in that order, so a caller waiting on the rate
    /// does not hold a slot others could use).
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        json: Option<&serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Result<RawResponse, ProviderError> {
        if let Some(rate) = &self.rate {
            rate.acquire().await;
        }
        // The semaphore is never closed, so this cannot fail; map anyway
        // rather than unwrap.
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| ProviderError::new(ProviderErrorKind::Network, "client shut down"))?;
        let (auth_name, auth_value) = self.auth_header();
        let mut auth_value = HeaderValue::from_str(&auth_value).map_err(|_| {
            ProviderError::new(
                ProviderErrorKind::Connect,
                "credentials contain characters not allowed in a header",
            )
        })?;
        auth_value.set_sensitive(true);
        let mut req = self
            .client
            .request(method, url)
            .header(auth_name.as_str(), auth_value);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(json) = json {
            req = req.json(json);
        }
        let resp = req.send().await.map_err(|e| self.classify_reqwest(&e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = read_capped(resp)
            .await
            .map_err(|e| self.classify_read_error(e))?;
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// Parses a 2xx JSON body; anything unparseable is `Malformed`.
    pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
        &self,
        body: &[u8],
    ) -> Result<T, ProviderError> {
        serde_json::from_slice(body).map_err(|e| {
            self.malformed(format!(
                "unexpected response body ({e}): {}",
                self.excerpt(body)
            ))
        })
    }

    pub(crate) fn malformed(&self, message: impl Into<String>) -> ProviderError {
        ProviderError::new(ProviderErrorKind::Malformed, self.scrub(&message.into()))
    }

    /// [`excerpt`] with every credential of this provider redacted.
    pub(crate) fn excerpt(&self, body: &[u8]) -> String {
        self.scrub(&excerpt(body, &self.api_key))
    }

    pub(crate) fn error_from_status(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
    ) -> ProviderError {
        let mut e = error_from_status(status, headers, body, &self.api_key);
        e.message = self.scrub(&e.message);
        e
    }

    /// This provider's keys out, then the process-wide rule (URL queries
    /// and userinfo, every registered secret): reqwest's error text carries
    /// the full request URL, webhook token and signature included.
    fn scrub(&self, text: &str) -> String {
        let text = redact(text, &self.api_key);
        let text = match &self.api_secret {
            Some(secret) => redact(&text, secret),
            None => text,
        };
        clawcut_core::redact::redact(&text).into_owned()
    }

    fn classify_reqwest(&self, e: &reqwest::Error) -> ProviderError {
        // Connect first: a connect timeout is also a timeout, but nothing was
        // sent, which is what a create call needs to know.
        let kind = if e.is_connect() {
            ProviderErrorKind::Connect
        } else if e.is_timeout() {
            ProviderErrorKind::Timeout
        } else if e.is_decode() {
            ProviderErrorKind::Malformed
        } else {
            // Reset mid-body, redirect loops: the request may have reached
            // the provider, and the network did not get us an answer.
            ProviderErrorKind::Network
        };
        ProviderError::new(kind, self.scrub(&error_chain(e)))
    }

    fn classify_read_error(&self, e: ReadError) -> ProviderError {
        match e {
            ReadError::Http(e) => self.classify_reqwest(&e),
            ReadError::TooLarge => {
                self.malformed(format!("response body larger than {MAX_API_BODY} bytes"))
            }
        }
    }
}

/// Reads a required string field of a create answer (the new job's id): a
/// 2xx without it is `Malformed`, which a create call treats as "may have
/// been created".
pub(crate) fn created_id(
    api: &ApiClient,
    value: Option<&serde_json::Value>,
    what: &str,
    body: &[u8],
) -> Result<String, ProviderError> {
    match value.and_then(|v| v.as_str()) {
        Some(id) if check_job_id(id).is_ok() => Ok(id.to_owned()),
        _ => Err(api.malformed(format!(
            "create answer has no usable {what}: {}",
            api.excerpt(body)
        ))),
    }
}

enum ReadError {
    Http(reqwest::Error),
    TooLarge,
}

async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Http)? {
        if body.len() + chunk.len() > MAX_API_BODY {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Refuses ids no provider issues (empty, `.`/`..`, control characters,
/// absurd lengths) before they reach a URL; the provider would not know them.
pub(crate) fn check_job_id(id: &str) -> Result<(), ProviderError> {
    let bad = id.is_empty()
        || id == "."
        || id == ".."
        || id.len() > 512
        || id.chars().any(|c| c.is_control());
    if bad {
        Err(ProviderError::new(
            ProviderErrorKind::NotFound,
            format!("invalid provider job id {:?}", truncate_chars(id, 80)),
        ))
    } else {
        Ok(())
    }
}

/// The job id a webhook body names at `path` (e.g. `["id"]`), if it is a
/// string [`check_job_id`] accepts: webhooks come from the network, so
/// nothing else is trusted.
pub(crate) fn webhook_id(body: &[u8], path: &[&str]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = path.iter().try_fold(&json, |v, k| v.get(k))?.as_str()?;
    check_job_id(id).ok().map(|()| id.to_owned())
}

/// Classifies a non-2xx answer. Shared with the downloader's reasoning, so
/// every adapter treats a status code the same way.
pub(crate) fn error_from_status(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    secret: &str,
) -> ProviderError {
    let kind = match status {
        429 if quota_exhausted(body) => ProviderErrorKind::Account(status),
        429 => ProviderErrorKind::RateLimited,
        500..=599 => ProviderErrorKind::Server(status),
        401 | 403 => ProviderErrorKind::Unauthorized(status),
        // Payment Required: the account has no credit (Replicate's answer,
        // SPEC "Provider health"; Luma's Agents API documents it as
        // "insufficient balance", docs.agents.lumalabs.ai/guides/error-handling,
        // checked 2026-12-01). No job of this account runs until a top-up.
        402 => ProviderErrorKind::Account(status),
        404 => ProviderErrorKind::NotFound,
        400..=499 => ProviderErrorKind::Client(status),
        // 1xx/3xx that reached us: not what any provider documents.
        _ => ProviderErrorKind::Malformed,
    };
    let retry_after = match kind {
        ProviderErrorKind::RateLimited | ProviderErrorKind::Server(_) => {
            retry_after(headers, SystemTime::now())
        }
        _ => None,
    };
    let detail = excerpt(body, secret);
    let message = if detail.is_empty() {
        format!("http {status}")
    } else {
        format!("http {status}: {detail}")
    };
    ProviderError {
        kind,
        retry_after,
        message,
    }
}

/// OpenAI's (and compatible vendors') 429 for a used-up quota or an unpaid
/// bill: `{"error": {"message": "You exceeded your current quota, ...",
/// "type": "insufficient_quota", "code": "insufficient_quota"}}`
/// (platform.openai.com/docs/guides/error-codes/api-errors; openai-python
/// `src/openai/_exceptions.py` makes every 429 a `RateLimitError`, so only
/// the code tells them apart; checked 2026-12-01). Waiting does not help
/// it, a top-up does.
fn quota_exhausted(body: &[u8]) -> bool {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let error = json.get("error");
    ["code", "type"].iter().any(|k| {
        error
            .and_then(|e| e.get(k))
            .and_then(|v| v.as_str())
            .is_some_and(|v| v == "insufficient_quota")
    })
}

/// The provider's "retry after": `retry-after-ms` when it holds a usable
/// number, else `Retry-After` as delay-seconds or an HTTP-date; capped at
/// [`MAX_RETRY_AFTER`]. Unusable values (negative, NaN, not a number or
/// date) are no hint at all: the backoff decides.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    header(RETRY_AFTER_MS)
        .and_then(|v| parse_millis(v, MAX_RETRY_AFTER))
        .or_else(|| parse_retry_after(header(RETRY_AFTER.as_str())?, now))
}

pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for u64 still means "a long time".
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// A header holding milliseconds (`retry-after-ms`, `openai-poll-after-ms`):
/// a whole number or a decimal one (`"1500"`, `"1500.5"`, `"1.5e3"`), capped
/// at `cap`. A number too large for any clock (`"1e400"`, twenty digits)
/// still means "a long time", i.e. `cap`; a negative one, NaN or anything
/// else is `None`.
pub(crate) fn parse_millis(value: &str, cap: Duration) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let delay = if value.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_millis(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        // Only what looks like a number: Rust's float syntax also reads
        // "inf" and "NaN", which no provider means.
        if !value
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            return None;
        }
        let ms = value.parse::<f64>().ok()?;
        if ms.is_nan() || ms < 0.0 {
            return None;
        }
        // `try_`: infinite or past Duration::MAX is "a long time", not a panic.
        Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX)
    };
    Some(delay.min(cap))
}

/// A short, single-line, secret-free summary of an error body: the
/// provider's own message when the body is JSON we recognise, else the text.
pub(crate) fn excerpt(body: &[u8], secret: &str) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => json_message(&json).unwrap_or_else(|| json.to_string()),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    truncate_chars(&redact(&one_line, secret), EXCERPT_CHARS)
}

/// OpenAI: `{"error":{"message":..,"code":..}}`; Replicate:
/// `{"detail":..,"title":..}`; others commonly `{"message":..}` or
/// `{"error":".."}`.
fn json_message(json: &serde_json::Value) -> Option<String> {
    let nonempty = |v: Option<&serde_json::Value>| {
        v.and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let error = json.get("error");
    if let Some(msg) = nonempty(error.and_then(|e| e.get("message"))) {
        return Some(match nonempty(error.and_then(|e| e.get("code"))) {
            Some(code) => format!("{msg} ({code})"),
            None => msg,
        });
    }
    nonempty(json.get("detail"))
        .or_else(|| nonempty(json.get("message")))
        .or_else(|| nonempty(error))
        .or_else(|| nonempty(json.get("title")))
}

/// Replaces any echo of the key; some proxies reflect request headers in
/// their error pages.
pub(crate) fn redact(text: &str, secret: &str) -> String {
    if secret.len() >= 4 && text.contains(secret) {
        text.replace(secret, "[redacted]")
    } else {
        text.to_owned()
    }
}

pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// "error sending request: client error (Connect): tcp connect error: ..."
/// — the chain, because reqwest's top-level message alone says little.
pub(crate) fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    truncate_chars(&out, 2 * EXCERPT_CHARS)
}

/// A URL fit for logs and error messages: no query, fragment or userinfo,
/// which is where signed URLs keep their tokens.
pub(crate) fn display_url(url: &Url) -> String {
    let mut clean = url.clone();
    clean.set_query(None);
    clean.set_fragment(None);
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after(
                "Sun, 06 Nov 1994 08:50:37 GMT",
                now - Duration::from_secs(0)
            ),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn retry_after_from_outside_is_capped_or_ignored_never_a_panic() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let cap = Some(MAX_RETRY_AFTER);
        assert_eq!(parse_retry_after("99999999999999999999", now), cap);
        assert_eq!(parse_retry_after(&u64::MAX.to_string(), now), cap);
        assert_eq!(parse_retry_after("86401", now), cap);
        assert_eq!(
            parse_retry_after("86400", now),
            Some(Duration::from_secs(86400))
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1e400", now), None);
        assert_eq!(parse_retry_after("NaN", now), None);
        // A date far in the future, and one far in the past.
        assert_eq!(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now), cap);
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        // A clock before the epoch or far ahead does not matter either.
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 40);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", far),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn millisecond_headers_are_capped_or_ignored_never_a_panic() {
        let cap = Duration::from_secs(3600);
        let ms = |v| parse_millis(v, cap);
        assert_eq!(ms("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(ms(" 250 "), Some(Duration::from_millis(250)));
        assert_eq!(ms("1500.5"), Some(Duration::from_micros(1_500_500)));
        assert_eq!(ms("1.5e3"), Some(Duration::from_millis(1500)));
        assert_eq!(ms("0"), Some(Duration::ZERO));
        assert_eq!(ms("-0"), Some(Duration::ZERO));
        assert_eq!(ms("3600001"), Some(cap));
        assert_eq!(ms("99999999999999999999"), Some(cap));
        assert_eq!(ms("1e400"), Some(cap));
        assert_eq!(ms("1.8e19"), Some(cap));
        assert_eq!(ms("-5"), None);
        assert_eq!(ms("-1e400"), None);
        assert_eq!(ms("NaN"), None);
        assert_eq!(ms("inf"), None);
        assert_eq!(ms("soon"), None);
        assert_eq!(ms(""), None);
        assert_eq!(ms("1,5"), None);
    }

    #[test]
    fn retry_after_ms_wins_when_usable() {
        let now = SystemTime::UNIX_EPOCH;
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        let h = headers(&[("retry-after-ms", "1500"), ("retry-after", "7")]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(1500)));
        let h = headers(&[("retry-after-ms", "-1"), ("retry-after", "7")]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let h = headers(&[("retry-after-ms", "1e400")]);
        assert_eq!(retry_after(&h, now), Some(MAX_RETRY_AFTER));
        let h = headers(&[("retry-after", "99999999999999999999")]);
        assert_eq!(retry_after(&h, now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        // Through the status mapping, as adapters see it.
        let h = headers(&[("retry-after-ms", "1e400")]);
        let e = error_from_status(429, &h, b"", "k");
        assert_eq!(e.retry_after, Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn any_millisecond_text_stays_within_the_cap() {
        // A cheap property test without a dependency: many pseudo-random
        // strings over the characters that matter.
        const ALPHABET: &[u8] = b"0123456789.eE+-inftyNa ";
        let cap = Duration::from_secs(60);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let text: String = (0..len)
                .map(|i| ALPHABET[((x >> (i % 8 * 8)) as usize + i) % ALPHABET.len()] as char)
                .collect();
            if let Some(d) = parse_millis(&text, cap) {
                assert!(d <= cap, "{text:?} -> {d:?}");
            }
            if let Some(d) = parse_retry_after(&text, SystemTime::UNIX_EPOCH) {
                assert!(d <= MAX_RETRY_AFTER, "{text:?} -> {d:?}");
            }
        }
    }

    #[test]
    fn excerpt_prefers_the_providers_message_and_hides_the_key() {
        let openai = br#"{"error":{"message":"Invalid key sk-abc123","code":"invalid_api_key"}}"#;
        assert_eq!(
            excerpt(openai, "sk-abc123"),
            "Invalid key [redacted] (invalid_api_key)"
        );
        let replicate = br#"{"title":"Unauthenticated","detail":"bad token","status":401}"#;
        assert_eq!(excerpt(replicate, "x"), "bad token");
        let html = "<html>\n\n<b>oops</b>\t</html>".as_bytes();
        assert_eq!(excerpt(html, "secret"), "<html> <b>oops</b> </html>");
        let long = "é".repeat(1000);
        assert_eq!(excerpt(long.as_bytes(), "secret").chars().count(), 301);
        assert_eq!(excerpt(&[0xff, 0xfe, 0x00], "secret"), "��");
    }

    #[test]
    fn status_codes_map_to_kinds() {
        let h = HeaderMap::new();
        let kind = |s| error_from_status(s, &h, b"", "k").kind;
        assert_eq!(kind(429), ProviderErrorKind::RateLimited);
        assert_eq!(kind(503), ProviderErrorKind::Server(503));
        assert_eq!(kind(401), ProviderErrorKind::Unauthorized(401));
        assert_eq!(kind(403), ProviderErrorKind::Unauthorized(403));
        assert_eq!(kind(404), ProviderErrorKind::NotFound);
        assert_eq!(kind(422), ProviderErrorKind::Client(422));
        assert_eq!(kind(402), ProviderErrorKind::Account(402));
        let quota = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let e = error_from_status(429, &h, quota, "k");
        assert_eq!(e.kind, ProviderErrorKind::Account(429));
        assert_eq!(e.retry_after, None);
        let busy = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert_eq!(
            error_from_status(429, &h, busy, "k").kind,
            ProviderErrorKind::RateLimited
        );
        assert_eq!(kind(302), ProviderErrorKind::Malformed);
    }

    #[test]
    fn display_url_drops_tokens() {
        let url = Url::parse("https://u:p@cdn.example/a/b.mp4?sig=secret#x").unwrap();
        assert_eq!(display_url(&url), "https://cdn.example/a/b.mp4");
    }
}
