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
        if let Some((token, exp)) = cached.as_ref()
            && now + REFRESH_MARGIN < *exp
        {
            return token.clone();
        }
        let exp = now + TOKEN_LIFETIME;
        let token = hs256_jwt(
            &serde_json::json!({
                "iss": self.access_key,
                "exp": exp,
                "nbf": now - NOT_BEFORE_SLACK,
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
const WEBHOOK_TOLERANCE_SECS: i64 = 5 * 60;

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
    if (now_unix.saturating_sub(ts)).abs() > WEBHOOK_TOLERANCE_SECS {
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
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
