//! The two signatures this crate computes by hand, both HMAC-SHA256: Kling's
//! HS256 JWT (its API authenticates with a short-lived token signed by the
//! secret key) and the Standard Webhooks signature Replicate puts on its
//! webhooks. Hand-made on `hmac` + `sha2` + `base64` rather than a JWT crate,
//! whose dependency tree is far larger than these thirty lines.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Kling tokens: valid 30 minutes, `nbf` 5 seconds back for clock skew.
const TOKEN_LIFETIME: i64 = 1800;
const NOT_BEFORE_SLACK: i64 = 5;
/// A cached token is replaced this long before it expires, so a request
/// that is slow to reach Kling never carries an expired one.
const REFRESH_MARGIN: i64 = 300;

/// Kling's bearer token: an HS256 JWT `{"iss": access_key, "exp", "nbf"}`,
/// cached and refreshed before it expires.
pub(crate) struct KlingJwt {
    access_key: String,
    secret_key: String,
    cached: Mutex<Option<(String, i64)>>,
}

impl KlingJwt {
    pub(crate) fn new(access_key: String, secret_key: String) -> Self {
        KlingJwt {
            access_key,
            secret_key,
            cached: Mutex::new(None),
        }
    }

    /// A token valid for at least [`REFRESH_MARGIN`] more seconds.
    pub(crate) fn token(&self) -> String {
        self.token_at(unix_now())
    }

    pub(crate) fn token_at(&self, now: i64) -> String {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        // Saturating: a clock at the end of time must not overflow `i64`.
        if let Some((token, exp)) = cached.as_ref()
            && now.saturating_add(REFRESH_MARGIN) < *exp
        {
            return token.clone();
        }
        let exp = now.saturating_add(TOKEN_LIFETIME);
        let token = hs256_jwt(
            &serde_json::json!({
                "iss": self.access_key,
                "exp": exp,
                "nbf": now.saturating_sub(NOT_BEFORE_SLACK),
            }),
            self.secret_key.as_bytes(),
        );
        *cached = Some((token.clone(), exp));
        token
    }
}

/// `base64url(header).base64url(claims).base64url(HMAC-SHA256)`.
pub(crate) fn hs256_jwt(claims: &serde_json::Value, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{claims}");
    let signature = URL_SAFE_NO_PAD.encode(hmac_sha256(secret, signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key).expect("hmac accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Standard Webhooks (Replicate): may go up to this far from `now` either way.
const WEBHOOK_TOLERANCE_SECS: u64 = 5 * 60;

/// Checks a Standard Webhooks signature: `webhook-signature` holds
/// space-separated `v1,<base64 HMAC-SHA256>` entries over
/// `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed with the base64-decoded
/// secret after its `whsec_` prefix. Any one matching entry suffices
/// (providers list several while rotating keys); comparison is constant-time.
pub(crate) fn standard_webhook_valid(
    headers: &[(String, String)],
    body: &[u8],
    secret: &str,
    now_unix: i64,
) -> bool {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return false;
    };
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    // `abs_diff`, not `(now - ts).abs()`: the timestamp comes from the
    // network, and `i64::MIN.abs()` panics.
    if now_unix.abs_diff(ts) > WEBHOOK_TOLERANCE_SECS {
        return false;
    }
    let encoded = secret.trim();
    let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
    let Ok(key) = STANDARD.decode(encoded) else {
        return false;
    };
    let Ok(mac) = <HmacSha256 as KeyInit>::new_from_slice(&key) else {
        return false;
    };
    let mut mac = mac;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    signatures
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|sig| STANDARD.decode(sig).ok())
        // `verify_slice` compares in constant time.
        .any(|sig| mac.clone().verify_slice(&sig).is_ok())
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_is_header_dot_claims_signed_with_hmac_sha256() {
        // The header is the fixed HS256 one; the signature covers "h.c".
        let claims = serde_json::json!({"sub": "1234567890"});
        let t = hs256_jwt(&claims, b"your-256-bit-secret");
        let parts: Vec<_> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9");
        let expected = URL_SAFE_NO_PAD.encode(hmac_sha256(
            b"your-256-bit-secret",
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
        ));
        assert_eq!(parts[2], expected);
    }

    #[test]
    fn kling_tokens_are_cached_until_close_to_expiry() {
        let jwt = KlingJwt::new("ak".into(), "sk".into());
        let a = jwt.token_at(1_000_000);
        assert_eq!(jwt.token_at(1_000_000 + 60), a);
        let b = jwt.token_at(1_000_000 + TOKEN_LIFETIME - REFRESH_MARGIN);
        assert_ne!(a, b);
        let claims = b.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        assert_eq!(claims["iss"], "ak");
        assert_eq!(
            claims["exp"],
            1_000_000 + 2 * TOKEN_LIFETIME - REFRESH_MARGIN
        );
    }

    #[test]
    fn kling_tokens_at_the_ends_of_time_do_not_overflow() {
        for now in [i64::MAX, i64::MAX - 1, i64::MIN, 0] {
            let jwt = KlingJwt::new("ak".into(), "sk".into());
            let a = jwt.token_at(now);
            let claims = a.split('.').nth(1).unwrap();
            let claims: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
            assert_eq!(claims["exp"], now.saturating_add(TOKEN_LIFETIME), "{now}");
            assert_eq!(claims["nbf"], now.saturating_sub(NOT_BEFORE_SLACK), "{now}");
            let _ = jwt.token_at(now);
        }
    }

    fn signed_headers(secret_b64: &str, ts: &str, body: &[u8]) -> Vec<(String, String)> {
        let key = STANDARD.decode(secret_b64).unwrap();
        let mut data = b"msg_1.".to_vec();
        data.extend_from_slice(ts.as_bytes());
        data.push(b'.');
        data.extend_from_slice(body);
        let sig = STANDARD.encode(hmac_sha256(&key, &data));
        vec![
            ("webhook-id".into(), "msg_1".into()),
            ("webhook-timestamp".into(), ts.into()),
            ("webhook-signature".into(), format!("v1,{sig}")),
        ]
    }

    #[test]
    fn webhook_timestamps_from_the_network_never_panic() {
        let secret = "whsec_c2VjcmV0LWtleQ==";
        let key = "c2VjcmV0LWtleQ==";
        let body = b"{}";
        let now = 1_700_000_000;
        let ok = signed_headers(key, &now.to_string(), body);
        assert!(standard_webhook_valid(&ok, body, secret, now));
        assert!(standard_webhook_valid(&ok, body, secret, now + 300));
        assert!(!standard_webhook_valid(&ok, body, secret, now + 301));
        assert!(!standard_webhook_valid(&ok, body, secret, now - 301));
        // Timestamps (and clocks) at the extremes: refused, not a panic.
        for ts in [i64::MIN, i64::MIN + 1, -1, i64::MAX] {
            let h = signed_headers(key, &ts.to_string(), body);
            for now in [i64::MIN, -1, 0, now, i64::MAX] {
                let want = now.abs_diff(ts) <= WEBHOOK_TOLERANCE_SECS;
                assert_eq!(
                    standard_webhook_valid(&h, body, secret, now),
                    want,
                    "{ts} {now}"
                );
            }
        }
        let h = signed_headers(key, "99999999999999999999", body);
        assert!(!standard_webhook_valid(&h, body, secret, now));
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
