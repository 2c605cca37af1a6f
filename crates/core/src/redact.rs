//! The one redaction rule, for every piece of text that leaves the process
//! (logs, `ai_jobs.last_error`, `ai_job_events.detail`, API and CLI
//! answers): no URL keeps its query string, fragment or userinfo (signed
//! URLs and webhook URLs carry their tokens there, database URLs their
//! passwords), no `password=` keyword keeps its value, and no configured
//! secret appears at all.
//!
//! [`redact_with`] is the pure rule. [`redact`] applies it with the
//! process's secrets, registered once at startup by the daemon with
//! [`register_secret`]: the only state in this crate, because the layers
//! that write text out (the log writer, the store) cannot be handed the
//! config's secrets one call at a time.

use std::borrow::Cow;
use std::sync::RwLock;

/// What a removed secret or query string is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not searched for: a one-letter "secret"
/// would shred every message (the daemon refuses such tokens where they
/// matter anyway).
const MIN_SECRET_LEN: usize = 6;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds `secret` to the process's secrets; [`redact`] removes it from all
/// text from now on.
pub fn register_secret(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    let mut all = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|s| s == secret) {
        all.push(secret.to_owned());
        // Longest first, so a secret that contains another goes whole.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Registers the password of a database URL (userinfo or `?password=`).
pub fn register_url_password(url: &str) {
    if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
        {
            register_secret(password);
            register_secret(&percent_decode(password));
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=')
                && k.eq_ignore_ascii_case("password")
            {
                register_secret(v);
                register_secret(&percent_decode(v));
            }
        }
    }
}

/// `text` under the rule, with the registered secrets.
pub fn redact(text: &str) -> Cow<'_, str> {
    let all = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let secrets: Vec<&str> = all.iter().map(String::as_str).collect();
    redact_with(text, &secrets)
}

/// `text` under the rule: `secrets` replaced by [`REDACTED`], every URL's
/// userinfo replaced by `***`, its query and fragment by `?[redacted]`,
/// and the value of every `password=` keyword by `***`.
pub fn redact_with<'a>(text: &'a str, secrets: &[&str]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for s in secrets.iter().filter(|s| s.len() >= MIN_SECRET_LEN) {
        if out.contains(s) {
            out = Cow::Owned(out.replace(s, REDACTED));
        }
    }
    if out.contains("://") {
        out = Cow::Owned(strip_urls(&out));
    }
    if out.to_ascii_lowercase().contains("password=") {
        out = Cow::Owned(strip_password_keywords(&out));
    }
    out
}

/// Where a URL ends in running text: whitespace, quotes, brackets that
/// close around it, a backslash (JSON escapes).
fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | '\\' | ')' | '}' | '|')
}

fn strip_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        out.push_str(&rest[..at + 3]);
        let tail = &rest[at + 3..];
        let end = tail.find(ends_url).unwrap_or(tail.len());
        let url_rest = &tail[..end];
        let authority_end = url_rest.find(['/', '?', '#']).unwrap_or(url_rest.len());
        let authority = &url_rest[..authority_end];
        match authority.rfind('@') {
            Some(i) => {
                out.push_str("***");
                out.push_str(&authority[i..]);
            }
            None => out.push_str(authority),
        }
        let after = &url_rest[authority_end..];
        match after.find(['?', '#']) {
            Some(q) => {
                out.push_str(&after[..q]);
                out.push('?');
                out.push_str(REDACTED);
            }
            None => out.push_str(after),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn strip_password_keywords(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(found) = lower[i..].find("password=") {
        let value_start = i + found + "password=".len();
        out.push_str(&text[i..value_start]);
        let value_len = text[value_start..]
            .find(|c: char| ends_url(c) || c == '&' || c == ';' || c == ',')
            .unwrap_or(text.len() - value_start);
        if value_len > 0 {
            out.push_str("***");
        }
        i = value_start + value_len;
    }
    out.push_str(&text[i..]);
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| (*c as char).to_digit(16)),
                b.get(i + 2).and_then(|c| (*c as char).to_digit(16)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(text: &str) -> String {
        redact_with(text, &["sk-live-abcdef123456", "whsec_topsecret"]).into_owned()
    }

    #[test]
    fn signed_urls_lose_their_query_and_userinfo() {
        assert_eq!(
            r(
                "error sending request for url (https://cdn.example/v.mp4?X-Amz-Signature=abc&X-Amz-Credential=k)"
            ),
            "error sending request for url (https://cdn.example/v.mp4?[redacted])"
        );
        assert_eq!(
            r("connect postgres://clawcut:hunter2@db:5432/app?sslmode=require&password=x failed"),
            "connect postgres://***@db:5432/app?[redacted] failed"
        );
        assert_eq!(
            r(r#"{"url":"http://127.0.0.1:9/webhooks/fal?token=abc"}"#),
            r#"{"url":"http://127.0.0.1:9/webhooks/fal?[redacted]"}"#
        );
        assert_eq!(
            r("https://a.example/x#frag"),
            "https://a.example/x?[redacted]"
        );
        assert_eq!(
            r("plain https://a.example/x/y"),
            "plain https://a.example/x/y"
        );
    }

    #[test]
    fn secrets_and_password_keywords_go() {
        assert_eq!(
            r("key sk-live-abcdef123456 refused"),
            "key [redacted] refused"
        );
        assert_eq!(r("bad whsec_topsecret!"), "bad [redacted]!");
        assert_eq!(
            r("host=db user=u password=hunter2 dbname=x"),
            "host=db user=u password=*** dbname=x"
        );
        assert_eq!(r("PASSWORD=abc;x"), "PASSWORD=***;x");
        // Too short to search for.
        assert_eq!(redact_with("a b c", &["a"]), "a b c");
    }

    #[test]
    fn registered_database_passwords_are_found_anywhere() {
        register_url_password("postgres://u:p%40ss-w0rd-x@h/db?password=qs-pw-123456");
        for s in ["p%40ss-w0rd-x", "p@ss-w0rd-x", "qs-pw-123456"] {
            let text = format!("the server said {s} was wrong");
            assert!(!redact(&text).contains(s), "{text}");
        }
    }

    proptest! {
        #[test]
        fn no_query_survives_and_nothing_panics(
            prefix in "[a-z ]{0,20}", host in "[a-z]{1,8}", q in "[A-Za-z0-9=&%-]{1,30}", suffix in "[ ,.;].{0,20}"
        ) {
            let text = format!("{prefix}https://{host}.example/p?{q}{suffix}");
            let out = r(&text);
            prop_assert!(!out.contains(&format!("?{q}")), "{out}");
        }

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = r(&text);
        }
    }
}
