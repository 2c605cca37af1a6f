//! Reading `ai_jobs.request` (JSON text: `prompt`, `model`, `seconds`,
//! `size`, provider-specific extras) for a create call, shared by every
//! adapter, and the answer a create call gets when that JSON is unusable.
//!
//! A bad request is refused before anything is sent, as `Client(400)`: the
//! job can never be submitted as it is, so it fails (`SubmitFailure::Rejected`)
//! with a reason that names the field.

use clawcut_core::{ProviderError, ProviderErrorKind, SubmitRequest};
use serde_json::{Map, Value};

use crate::http::truncate_chars;

/// The parsed request of one job.
pub(crate) struct JobRequest {
    fields: Map<String, Value>,
}

/// A create call refused locally: nothing was sent.
pub(crate) fn invalid_request(reason: impl Into<String>) -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::Client(400),
        format!("invalid job request: {}", reason.into()),
    )
}

impl JobRequest {
    /// Parses the request JSON; it must be an object with a non-empty
    /// `prompt`. Also checks the idempotency key and webhook URL, which some
    /// adapters put in headers or query strings.
    pub(crate) fn parse(req: &SubmitRequest) -> Result<JobRequest, ProviderError> {
        let value: Value = serde_json::from_str(&req.request)
            .map_err(|e| invalid_request(format!("not JSON ({e})")))?;
        let Value::Object(fields) = value else {
            return Err(invalid_request("not a JSON object"));
        };
        let parsed = JobRequest { fields };
        if parsed.prompt().is_none() {
            return Err(invalid_request("`prompt` must be a non-empty string"));
        }
        if req.idempotency_key.is_empty()
            || req.idempotency_key.len() > 255
            || !req.idempotency_key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(invalid_request(
                "idempotency key must be 1-255 visible ASCII characters",
            ));
        }
        if let Some(url) = &req.webhook_url
            && url::Url::parse(url).is_err()
        {
            return Err(invalid_request("webhook url is not a URL"));
        }
        Ok(parsed)
    }

    pub(crate) fn prompt(&self) -> Option<&str> {
        self.str("prompt")
    }

    /// A non-empty string field.
    pub(crate) fn str(&self, key: &str) -> Option<&str> {
        self.fields
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// `seconds` as a whole number, from a number or a numeric string
    /// (OpenAI's own requests spell it `"8"`).
    pub(crate) fn seconds(&self) -> Result<Option<u64>, ProviderError> {
        let bad = || invalid_request("`seconds` must be a positive whole number");
        match self.fields.get("seconds") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(s) if s > 0 => Ok(Some(s)),
                _ => match n.as_f64() {
                    Some(f) if f > 0.0 && f.fract() == 0.0 && f < 1e6 => Ok(Some(f as u64)),
                    _ => Err(bad()),
                },
            },
            Some(Value::String(s)) => match s.trim().trim_end_matches('s').parse::<u64>() {
                Ok(s) if s > 0 => Ok(Some(s)),
                _ => Err(bad()),
            },
            Some(_) => Err(bad()),
        }
    }

    /// `size` as `WIDTHxHEIGHT` (`"1280x720"`).
    pub(crate) fn size(&self) -> Result<Option<(u32, u32)>, ProviderError> {
        let Some(size) = self.str("size") else {
            return Ok(None);
        };
        let parsed = size
            .split_once(['x', 'X', '*'])
            .and_then(|(w, h)| Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?)))
            .filter(|(w, h)| *w > 0 && *h > 0);
        match parsed {
            Some(wh) => Ok(Some(wh)),
            None => Err(invalid_request(format!(
                "`size` must be WIDTHxHEIGHT, got {:?}",
                truncate_chars(size, 40)
            ))),
        }
    }

    /// An explicit `aspect_ratio` extra, else the reduced ratio of `size`
    /// (`1280x720` → `16:9`).
    pub(crate) fn aspect_ratio(&self) -> Result<Option<String>, ProviderError> {
        if let Some(r) = self.str("aspect_ratio") {
            return Ok(Some(r.to_owned()));
        }
        Ok(self.size()?.map(|(w, h)| {
            let g = gcd(w, h);
            format!("{}:{}", w / g, h / g)
        }))
    }

    /// A string field the provider requires: its absence is refused here,
    /// naming the field, because the provider would refuse it only after
    /// the create was sent (and some charge for the attempt).
    pub(crate) fn require_str(&self, key: &str, hint: &str) -> Result<&str, ProviderError> {
        self.str(key).ok_or_else(|| {
            invalid_request(format!(
                "missing required field `{key}` (a non-empty string): {hint}"
            ))
        })
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key).filter(|v| !v.is_null())
    }

    /// Every field except `skip`, for providers whose request body is the
    /// model's own input (Replicate, fal).
    pub(crate) fn without(&self, skip: &[&str]) -> Map<String, Value> {
        self.fields
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<JobRequest, ProviderError> {
        JobRequest::parse(&SubmitRequest {
            job_id: "j".into(),
            request: json.into(),
            idempotency_key: "key-1".into(),
            webhook_url: None,
        })
    }

    #[test]
    fn reads_the_common_fields() {
        let r = req(r#"{"prompt":" a cat ","seconds":"8","size":"1280x720"}"#).unwrap();
        assert_eq!(r.prompt(), Some("a cat"));
        assert_eq!(r.seconds().unwrap(), Some(8));
        assert_eq!(r.size().unwrap(), Some((1280, 720)));
        assert_eq!(r.aspect_ratio().unwrap().as_deref(), Some("16:9"));
        let r = req(r#"{"prompt":"x","seconds":5.0,"aspect_ratio":"9:16"}"#).unwrap();
        assert_eq!(r.seconds().unwrap(), Some(5));
        assert_eq!(r.aspect_ratio().unwrap().as_deref(), Some("9:16"));
    }

    #[test]
    fn refuses_what_no_provider_could_take() {
        for bad in ["", "[]", r#"{"prompt":""}"#, r#"{"model":"m"}"#] {
            let e = req(bad).err().expect(bad);
            assert_eq!(e.kind, ProviderErrorKind::Client(400), "{bad}");
        }
        let r = req(r#"{"prompt":"x","seconds":-1,"size":"big"}"#).unwrap();
        assert!(r.seconds().is_err());
        assert!(r.size().is_err());
    }
}
