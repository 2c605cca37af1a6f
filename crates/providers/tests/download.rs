//! The downloader against the fakes on 127.0.0.1: verified success, the byte
//! limit, the host/scheme policy (before any request and across redirects),
//! and that nothing incomplete ever sits at a final path.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clawcut_core::{DownloadSpec, OutputKind, PollOutcome};
use clawcut_providers::{
    DownloadPolicy, Downloader, ProviderKind, ProvidersError, build_provider, cleanup_stale_temp,
};
use clawcut_test_support::fake_openai::{FakeOpenAi, Script};
use clawcut_test_support::fake_replicate::{self, FakeReplicate};
use common::{KEY, config, limits};
use sha2::{Digest, Sha256};

const MAX: u64 = 10 * 1024 * 1024;

fn downloader() -> Downloader {
    Downloader::new(Duration::from_secs(5)).unwrap()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn temp_files(media: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(media.join(".tmp")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// A fake with `video_1` completed (content is served only after that), and
/// the adapter's download specs for it.
async fn completed(script: Script) -> (FakeOpenAi, DownloadPolicy, DownloadSpec, DownloadSpec) {
    let fake = FakeOpenAi::start(KEY).await;
    fake.script("video_1", script);
    let cfg = config(ProviderKind::OpenAi, &fake.base_url());
    let p = build_provider(&cfg).unwrap();
    let PollOutcome::Succeeded { video, thumbnail } = p.poll("video_1").await.unwrap() else {
        panic!("expected success");
    };
    (
        fake,
        DownloadPolicy::for_provider(&cfg),
        video,
        thumbnail.unwrap(),
    )
}

#[tokio::test]
async fn downloads_video_and_thumbnail_verified_to_their_final_paths() {
    let (fake, policy, video, thumb) = completed(Script::default().with_video_bytes(300_000)).await;
    let media = tempfile::tempdir().unwrap();
    let final_path = media.path().join("videos/scene_1/v1.mp4");
    let mut progress = Vec::new();
    let got = downloader()
        .download(
            &video,
            &policy,
            media.path(),
            &final_path,
            &limits(MAX),
            |n| progress.push(n),
        )
        .await
        .unwrap();
    let expected = fake.content("video_1");
    assert_eq!(got.path, final_path);
    assert_eq!(got.bytes, 300_000);
    assert_eq!(got.sha256_hex, sha(&expected));
    assert_eq!(std::fs::read(&final_path).unwrap(), expected);
    assert_eq!(progress.last(), Some(&300_000));
    assert!(progress.windows(2).all(|w| w[0] <= w[1]));

    let thumb_path = media.path().join("thumbnails/scene_1/v1.webp");
    let got = downloader()
        .download(
            &thumb,
            &policy,
            media.path(),
            &thumb_path,
            &limits(MAX),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(got.sha256_hex, sha(&fake.thumbnail("video_1")));
    assert_eq!(fake.downloads("video_1", "video"), 1);
    assert_eq!(fake.downloads("video_1", "thumbnail"), 1);
    assert!(temp_files(media.path()).is_empty());
}

#[tokio::test]
async fn a_second_download_replaces_the_file_atomically() {
    let (_fake, policy, video, _) = completed(Script::default()).await;
    let media = tempfile::tempdir().unwrap();
    let final_path = media.path().join("videos/s/v.mp4");
    std::fs::create_dir_all(final_path.parent().unwrap()).unwrap();
    std::fs::write(&final_path, b"stale").unwrap();
    let got = downloader()
        .download(
            &video,
            &policy,
            media.path(),
            &final_path,
            &limits(MAX),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(std::fs::metadata(&final_path).unwrap().len(), got.bytes);
}

#[tokio::test]
async fn a_stream_over_the_limit_is_aborted_and_cleaned_up() {
    // Chunked: no Content-Length, so only counting can catch it.
    let (fake, policy, video, _) =
        completed(Script::default().with_video_bytes(200_000).chunked()).await;
    let media = tempfile::tempdir().unwrap();
    let final_path = media.path().join("videos/s/v.mp4");
    let err = downloader()
        .download(
            &video,
            &policy,
            media.path(),
            &final_path,
            &limits(50_000),
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProvidersError::OutputTooLarge { limit: 50_000 }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert_eq!(fake.downloads("video_1", "video"), 1);
    assert!(!final_path.exists());
    assert!(temp_files(media.path()).is_empty());
}

#[tokio::test]
async fn a_content_length_over_the_limit_is_refused_before_reading() {
    // Slow enough that reading the body would take minutes.
    let script = Script::default()
        .with_video_bytes(1_000_000)
        .with_chunk_delay(Duration::from_secs(2));
    let (_fake, policy, video, _) = completed(script).await;
    let media = tempfile::tempdir().unwrap();
    let final_path = media.path().join("videos/s/v.mp4");
    let started = Instant::now();
    let err = downloader()
        .download(
            &video,
            &policy,
            media.path(),
            &final_path,
            &limits(1000),
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProvidersError::OutputTooLarge { .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!final_path.exists());
    assert!(temp_files(media.path()).is_empty());
}

#[tokio::test]
async fn disallowed_hosts_and_schemes_are_refused_without_a_request() {
    let (fake, _, video, _) = completed(Script::default()).await;
    let before = fake.total_requests();
    let media = tempfile::tempdir().unwrap();
    let final_path = media.path().join("v.mp4");

    let other_host = DownloadPolicy::new(["localhost"], ["http", "https"]);
    let err = downloader()
        .download(
            &video,
            &other_host,
            media.path(),
            &final_path,
            &limits(MAX),
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProvidersError::HostNotAllowed { host } if host == "127.0.0.1"),
        "{err:?}"
    );

    let https_only = DownloadPolicy::new(["127.0.0.1"], ["https"]);
    let err = downloader()
        .download(
            &video,
            &https_only,
            media.path(),
            &final_path,
            &limits(MAX),
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProvidersError::SchemeNotAllowed { scheme } if scheme == "http"),
        "{err:?}"
    );

    let mut file_url = video.clone();
    file_url.url = "file:///etc/passwd".into();
    let everything = DownloadPolicy::new(["127.0.0.1"], ["http", "https"]);
    assert!(
        downloader()
            .download(
                &file_url,
                &everything,
                media.path(),
                &final_path,
                &limits(MAX),
                |_| {}
            )
            .await
            .is_err()
    );

    assert_eq!(fake.total_requests(), before);
    assert!(!final_path.exists());
}

#[tokio::test]
async fn a_redirect_to_a_disallowed_host_is_refused() {
    let fake = FakeOpenAi::start(KEY).await;
    // Same server under another host name: only the policy can tell them apart.
    let elsewhere = format!(
        "http://localhost:{}/v1/videos/{{id}}/content",
        fake.addr().port()
    );
    fake.script(
        "video_1",
        Script::default().with_redirect_content_to(elsewhere),
    );
    let cfg = config(ProviderKind::OpenAi, &fake.base_url());
    let PollOutcome::Succeeded { video, .. } =
        build_provider(&cfg).unwrap().poll("video_1").await.unwrap()
    else {
        panic!("expected success");
    };
    let before = fake.total_requests();
    let media = tempfile::tempdir().unwrap();
    let final_path = media.path().join("v.mp4");
    let err = downloader()
        .download(
            &video,
            &DownloadPolicy::for_provider(&cfg),
            media.path(),
            &final_path,
            &limits(MAX),
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProvidersError::HostNotAllowed { host } if host == "localhost"),
        "{err:?}"
    );
    assert_eq!(
        fake.total_requests(),
        before + 1,
        "only the redirect itself"
    );
    assert_eq!(fake.downloads("video_1", "video"), 0);
    assert!(!final_path.exists());
}

#[tokio::test]
async fn an_allowed_cross_origin_redirect_is_followed() {
    let cdn = FakeReplicate::start("unused").await;
    cdn.script("cdn", fake_replicate::Script::default());
    let fake = FakeOpenAi::start(KEY).await;
    fake.script(
        "video_1",
        Script::default().with_redirect_content_to(cdn.output_url("cdn", "output.mp4")),
    );
    let mut cfg = config(ProviderKind::OpenAi, &fake.base_url());
    cfg.allowed_download_hosts = vec!["127.0.0.1".into()];
    let PollOutcome::Succeeded { video, .. } =
        build_provider(&cfg).unwrap().poll("video_1").await.unwrap()
    else {
        panic!("expected success");
    };
    let media = tempfile::tempdir().unwrap();
    let got = downloader()
        .download(
            &video,
            &DownloadPolicy::for_provider(&cfg),
            media.path(),
            &media.path().join("v.mp4"),
            &limits(MAX),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(got.sha256_hex, sha(&cdn.content("cdn", "output.mp4")));
    assert_eq!(cdn.downloads("cdn", "output.mp4"), 1);
}

#[tokio::test]
async fn gone_content_is_reported_as_gone() {
    let (_fake, policy, video, _) = completed(Script::content_gone()).await;
    let media = tempfile::tempdir().unwrap();
    let err = downloader()
        .download(
            &video,
            &policy,
            media.path(),
            &media.path().join("v.mp4"),
            &limits(MAX),
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(err.is_output_gone(), "{err:?}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn a_dropped_download_leaves_nothing_behind() {
    let script = Script::default()
        .with_video_bytes(1_000_000)
        .chunked()
        .with_chunk_delay(Duration::from_millis(50));
    let (_fake, policy, video, _) = completed(script).await;
    let media = tempfile::tempdir().unwrap();
    let final_path = media.path().join("v.mp4");
    let d = downloader();
    let lim = limits(MAX);
    let fut = d.download(&video, &policy, media.path(), &final_path, &lim, |_| {});
    assert!(
        tokio::time::timeout(Duration::from_millis(300), fut)
            .await
            .is_err()
    );
    assert!(!final_path.exists());
    assert!(temp_files(media.path()).is_empty());
}

#[tokio::test]
async fn replicate_outputs_download_from_the_delivery_host() {
    let fake = FakeReplicate::start(KEY).await;
    fake.script(
        "p1",
        fake_replicate::Script::default().with_file_bytes(123_457),
    );
    let cfg = config(ProviderKind::Replicate, &fake.base_url());
    let PollOutcome::Succeeded { video, .. } =
        build_provider(&cfg).unwrap().poll("p1").await.unwrap()
    else {
        panic!("expected success");
    };
    assert_eq!(video.kind, OutputKind::Video);
    let media = tempfile::tempdir().unwrap();
    let final_path = media.path().join("videos/s/v.mp4");
    let got = downloader()
        .download(
            &video,
            &DownloadPolicy::for_provider(&cfg),
            media.path(),
            &final_path,
            &limits(MAX),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(got.bytes, 123_457);
    assert_eq!(got.sha256_hex, sha(&fake.content("p1", "output.mp4")));
}

#[test]
fn stale_temp_files_are_swept() {
    let media = tempfile::tempdir().unwrap();
    assert_eq!(cleanup_stale_temp(media.path()).unwrap(), 0);
    let tmp = media.path().join(".tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("a.part"), b"x").unwrap();
    std::fs::write(tmp.join("b.part"), b"y").unwrap();
    std::fs::write(tmp.join("notes.txt"), b"z").unwrap();
    assert_eq!(cleanup_stale_temp(media.path()).unwrap(), 2);
    assert!(tmp.join("notes.txt").exists());
    assert_eq!(cleanup_stale_temp(media.path()).unwrap(), 0);
}
