//! The shipped sample config (`config/clawcut-worker.toml`) allows the hosts
//! each provider really serves its outputs from, under the wildcard rules
//! the downloader enforces: a real output URL of every provider passes its
//! table's policy.

use clawcut_providers::DownloadPolicy;
use url::Url;

const SAMPLE: &str = include_str!("../../../config/clawcut-worker.toml");

/// `(base_url, allowed_download_hosts)` of `[providers.<name>]`, read from
/// the sample whether the table is commented out or not (the daemon's own
/// test parses the live part; the commented tables are what operators copy).
fn table(name: &str) -> (String, Vec<String>) {
    let header = format!("[providers.{name}]");
    let mut lines = SAMPLE
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| !l.starts_with("[providers."));
    let mut base = None;
    let mut hosts = None;
    for line in lines.by_ref() {
        let value = |key: &str| {
            line.strip_prefix(key)
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix('='))
                .map(|v| v.split("  #").next().unwrap_or(v).trim().to_owned())
        };
        if let Some(v) = value("base_url") {
            base = Some(v.trim_matches('"').to_owned());
        }
        if let Some(v) = value("allowed_download_hosts") {
            let v = v.split(" #").next().unwrap_or(&v).trim().to_owned();
            hosts = Some(
                serde_json::from_str::<Vec<String>>(&v)
                    .unwrap_or_else(|e| panic!("{name}: allowed_download_hosts {v:?}: {e}")),
            );
        }
    }
    (
        base.unwrap_or_else(|| panic!("{name}: no base_url in the sample")),
        hosts.unwrap_or_else(|| panic!("{name}: no allowed_download_hosts in the sample")),
    )
}

fn policy(name: &str) -> DownloadPolicy {
    let (base, hosts) = table(name);
    let host = Url::parse(&base).unwrap().host_str().unwrap().to_owned();
    DownloadPolicy::new(std::iter::once(host).chain(hosts), ["https"])
}

fn allows(name: &str, url: &str) -> bool {
    policy(name).check(&Url::parse(url).unwrap()).is_ok()
}

/// Issue 9: Replicate's outputs are mostly on the bare host
/// `replicate.delivery` (replicate-python's recorded predictions:
/// `https://replicate.delivery/pbxt/...`), which `*.replicate.delivery`
/// alone does not match; Kling's videos are on its CDN, which the sample
/// did not allow at all.
#[test]
fn every_provider_allows_its_real_output_hosts() {
    let cases = [
        ("openai", "https://api.openai.com/v1/videos/video_1/content"),
        (
            "replicate",
            "https://replicate.delivery/pbxt/Dp8ewmDVzYTBRCTzWflZLPLpAxNOOh4ITj3WZYFPO217leyfA/out-0.mp4",
        ),
        (
            "replicate",
            "https://pbxt.replicate.delivery/abc/output.mp4",
        ),
        (
            "runway",
            "https://dnznrvs05pmza.cloudfront.net/abc/video.mp4?_jwt=x",
        ),
        (
            "luma",
            "https://storage.cdn-luma.com/dream_machine/abc/video.mp4",
        ),
        ("fal", "https://v3.fal.media/files/zebra/abc_output.mp4"),
        ("fal", "https://fal.media/files/zebra/abc_output.mp4"),
        (
            "kling",
            "https://cdn.klingai.com/bs2/upload-kling-api/1/video.mp4",
        ),
        (
            "veo",
            "https://generativelanguage.googleapis.com/v1beta/files/abc:download?alt=media",
        ),
    ];
    for (name, url) in cases {
        assert!(allows(name, url), "{name}: {url} is refused by the sample");
    }
}

#[test]
fn wildcards_match_subdomains_only_and_the_sample_lists_bare_hosts_itself() {
    let p = DownloadPolicy::new(["*.replicate.delivery"], ["https"]);
    let ok = |u: &str| p.check(&Url::parse(u).unwrap()).is_ok();
    assert!(ok("https://a.replicate.delivery/x"));
    assert!(ok("https://a.b.replicate.delivery/x"));
    assert!(
        !ok("https://replicate.delivery/x"),
        "the bare host is not a subdomain"
    );
    assert!(!ok("https://evilreplicate.delivery/x"));
    assert!(!ok("https://replicate.delivery.evil.example/x"));
    // Other providers' hosts stay out.
    assert!(!allows("replicate", "https://storage.cdn-luma.com/x.mp4"));
    assert!(!allows("kling", "https://klingai.com.evil.example/x.mp4"));
}
