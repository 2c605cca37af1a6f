//! [`DownloadPolicy`]: which URLs a provider's outputs may come from, and
//! the one origin its download credentials may go to.

use url::Url;

use crate::config::ProviderConfig;
use crate::error::ProvidersError;
use crate::http::display_url;

/// Which URLs a provider's outputs may be fetched from, and which origin
/// the download's headers (credentials) may go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadPolicy {
    /// (host pattern, port); `None`: the scheme's default port only.
    hosts: Vec<(String, Option<u16>)>,
    schemes: Vec<String>,
    /// The only origin (scheme, host, port) that a download's headers
    /// ([`clawcut_core::DownloadSpec::headers`]) are sent to; `None`: the
    /// spec URL's own origin.
    credentials_for: Option<url::Origin>,
}

impl DownloadPolicy {
    /// `hosts` are exact host names (case-insensitive), or `*.example.com` for
    /// any subdomain of `example.com` at any depth, each optionally with
    /// `:port`; without one only the scheme's default port (443, 80) is
    /// allowed, so another service on an allowed host is not.
    /// `*.example.com` does not match `example.com` itself: list the bare
    /// host too where outputs live there (the sample config does, for
    /// `replicate.delivery`).
    pub fn new<H, S>(hosts: H, schemes: S) -> Self
    where
        H: IntoIterator,
        H::Item: AsRef<str>,
        S: IntoIterator,
        S::Item: AsRef<str>,
    {
        let norm = |s: &str| s.trim().trim_end_matches('.').to_ascii_lowercase();
        let host_port = |s: &str| {
            let s = norm(s);
            // `[::1]:8080`, `host:8080`; a bare IPv6 address has no port.
            match s.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.ends_with(']')) => {
                    match p.parse::<u16>() {
                        Ok(port) => (norm(h), Some(port)),
                        Err(_) => (s, None),
                    }
                }
                _ => (s, None),
            }
        };
        DownloadPolicy {
            hosts: hosts.into_iter().map(|h| host_port(h.as_ref())).collect(),
            schemes: schemes.into_iter().map(|s| norm(s.as_ref())).collect(),
            credentials_for: None,
        }
    }

    /// The provider's own API origin (host and port) plus its configured
    /// extra hosts; https, plus the base URL's scheme (so a loopback fake may
    /// use http). Credentials go to the API origin only: a poll answer that
    /// points elsewhere gets the URL fetched, without the key.
    pub fn for_provider(cfg: &ProviderConfig) -> Self {
        let base = &cfg.base_url;
        let own = base.host_str().map(|h| match base.port_or_known_default() {
            Some(p) => format!("{}:{p}", h.trim_end_matches('.')),
            None => h.to_owned(),
        });
        let hosts = own
            .into_iter()
            .chain(cfg.allowed_download_hosts.iter().cloned());
        let schemes = ["https".to_owned(), base.scheme().to_owned()];
        DownloadPolicy {
            credentials_for: Some(base.origin()),
            ..DownloadPolicy::new(hosts, schemes)
        }
    }

    /// Refuses a URL whose scheme, host or port is not allowed.
    pub fn check(&self, url: &Url) -> Result<(), ProvidersError> {
        let scheme = url.scheme().to_ascii_lowercase();
        if !self.schemes.contains(&scheme) {
            return Err(ProvidersError::SchemeNotAllowed { scheme });
        }
        let host = url
            .host_str()
            .ok_or_else(|| ProvidersError::NoHost {
                url: display_url(url),
            })?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let port = url.port_or_known_default();
        let default_port = match scheme.as_str() {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        };
        let mut host_allowed = false;
        for (pattern, want_port) in &self.hosts {
            let host_matches = match pattern.strip_prefix("*.") {
                Some(parent) => host
                    .strip_suffix(parent)
                    .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
                None => *pattern == host,
            };
            if host_matches {
                host_allowed = true;
                if port == want_port.or(default_port) {
                    return Ok(());
                }
            }
        }
        if host_allowed {
            Err(ProvidersError::HostNotAllowed {
                host: format!("{host}:{}", port.unwrap_or_default()),
            })
        } else {
            Err(ProvidersError::HostNotAllowed { host })
        }
    }

    /// Whether a download spec's headers may be sent to `url`.
    pub(super) fn credentials_go_to(&self, url: &Url, spec_origin: &url::Origin) -> bool {
        url.origin() == *self.credentials_for.as_ref().unwrap_or(spec_origin)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn policy_matches_hosts_and_schemes() {
        let p = DownloadPolicy::new(["api.example.com", "*.delivery.example"], ["https"]);
        let ok = |u: &str| p.check(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("https://API.example.com/x"));
        assert!(ok("https://a.delivery.example/x"));
        assert!(ok("https://a.b.delivery.example./x"));
        assert!(!ok("https://delivery.example/x"));
        assert!(!ok("https://evildelivery.example/x"));
        assert!(!ok("http://api.example.com/x"));
        assert!(!ok("https://api.example.com.evil/x"));
        assert!(!ok("file:///etc/passwd"));
        assert!(!ok("https://api.example.com:8443/x"));
        assert!(ok("https://api.example.com:443/x"));

        let ported = DownloadPolicy::new(["127.0.0.1:8080", "[::1]:9000"], ["http"]);
        let ok = |u: &str| ported.check(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("http://127.0.0.1:8080/x"));
        assert!(ok("http://[::1]:9000/x"));
        assert!(!ok("http://127.0.0.1:8081/x"));
        assert!(!ok("http://127.0.0.1/x"));
    }

    #[test]
    fn credentials_go_only_to_the_providers_own_origin() {
        let cfg = |base: &str| ProviderConfig {
            name: "p".into(),
            kind: crate::config::ProviderKind::Veo,
            base_url: Url::parse(base).unwrap(),
            api_key: "k".into(),
            api_secret: None,
            timeout: Duration::from_secs(30),
            max_in_flight: 1,
            requests_per_minute: None,
            allowed_download_hosts: vec!["cdn.example".into(), "api.example.com:8443".into()],
        };
        let p = DownloadPolicy::for_provider(&cfg("https://api.example.com"));
        let spec = Url::parse("https://api.example.com/v").unwrap().origin();
        let to = |u: &str| p.credentials_go_to(&Url::parse(u).unwrap(), &spec);
        assert!(to("https://api.example.com/files/1"));
        assert!(to("https://API.example.com:443/files/1"));
        assert!(!to("https://api.example.com:8443/files/1"));
        assert!(!to("http://api.example.com/files/1"));
        assert!(!to("https://cdn.example/files/1"));
        // Its own port only: a fake on loopback is one origin, not the host.
        let p = DownloadPolicy::for_provider(&cfg("http://127.0.0.1:4000"));
        assert!(
            p.check(&Url::parse("http://127.0.0.1:4000/v").unwrap())
                .is_ok()
        );
        assert!(
            p.check(&Url::parse("http://127.0.0.1:4001/v").unwrap())
                .is_err()
        );
    }
}
