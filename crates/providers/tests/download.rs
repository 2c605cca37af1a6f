//! The downloader against the fakes (and a slow server) on 127.0.0.1:
//! verified success, the byte limit, the total deadline and stall windows,
//! the host/scheme policy (before any request and across redirects), that
//! nothing incomplete ever sits at a final path, and that staging touches no
//! final path until `install`, which `revert` undoes.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clawcut_core::{DownloadSpec, OutputKind, PollOutcome};
use clawcut_providers::{
    DownloadLimits, DownloadPolicy, Downloader, ProviderKind, ProvidersError, build_provider,
    cleanup_stale_temp, cleanup_stale_temp_older_than, sync_all,
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
    let everything = DownloadPolicy::new(["127.0.0.1:1"], ["http", "https"]);
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
    let cdn_port = url::Url::parse(&cdn.base_url()).unwrap().port().unwrap();
    cfg.allowed_download_hosts = vec![format!("127.0.0.1:{cdn_port}")];
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

/// A one-route HTTP/1.1 server on 127.0.0.1 for what the fakes do not do:
/// each connection gets `head` (status line and headers, CRLF-terminated),
/// then `body` one `step` bytes every `delay`, then is closed. A `head` of
/// `None` never answers at all.
async fn slow_server(
    head: Option<&'static str>,
    body: Vec<u8>,
    step: usize,
    delay: Duration,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let Some(head) = head else {
                    // Hold the connection open, silent, until the client goes.
                    let _ = conn.read(&mut buf).await;
                    return;
                };
                let head = format!("{head}Content-Length: {}\r\n\r\n", body.len());
                if conn.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for piece in body.chunks(step) {
                    tokio::time::sleep(delay).await;
                    if conn.write_all(piece).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn spec_for(url: String) -> DownloadSpec {
    DownloadSpec {
        url,
        headers: Vec::new(),
        kind: OutputKind::Video,
        extension: "mp4".into(),
    }
}

const OK_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\n";

fn loopback(addr: std::net::SocketAddr) -> DownloadPolicy {
    DownloadPolicy::new([addr.to_string()], ["http"])
}

#[tokio::test]
async fn a_trickling_body_is_stalled_and_cleaned_up() {
    // One byte every 200 ms: about 5 bytes per 1 s window, well under 64.
    let addr = slow_server(
        Some(OK_HEAD),
        vec![7u8; 1000],
        1,
        Duration::from_millis(200),
    )
    .await;
    let spec = spec_for(format!("http://{addr}/out.mp4?token=s3cret"));
    let media = tempfile::tempdir().unwrap();
    let lim = DownloadLimits {
        max_bytes: MAX,
        deadline: Duration::from_secs(60),
        stall_window: Duration::from_secs(1),
        stall_min_bytes: 64,
    };
    let started = Instant::now();
    let err = downloader()
        .stage(&spec, &loopback(addr), media.path(), &lim, |_| {})
        .await
        .unwrap_err();
    let ProvidersError::DownloadStalled { url, bytes, window } = &err else {
        panic!("expected a stall: {err:?}");
    };
    assert_eq!(*window, Duration::from_secs(1));
    assert!(*bytes < 64, "{bytes}");
    assert!(!url.contains("s3cret"), "{url}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert!(err.is_transient());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(temp_files(media.path()).is_empty());
}

#[tokio::test]
async fn a_steady_body_that_outlives_the_deadline_is_abandoned() {
    // 16 KiB every 200 ms: never stalled, but 1 MB takes about 13 s.
    let script = Script::default()
        .with_video_bytes(1_000_000)
        .with_chunk_delay(Duration::from_millis(200));
    let (_fake, policy, video, _) = completed(script).await;
    let media = tempfile::tempdir().unwrap();
    let lim = DownloadLimits {
        max_bytes: MAX,
        deadline: Duration::from_millis(1500),
        stall_window: Duration::from_secs(1),
        stall_min_bytes: 64,
    };
    let started = Instant::now();
    let mut progress = Vec::new();
    let err = downloader()
        .stage(&video, &policy, media.path(), &lim, |n| progress.push(n))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProvidersError::DownloadDeadline { deadline, .. }
            if deadline == Duration::from_millis(1500)),
        "{err:?}"
    );
    assert!(err.is_transient());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(!progress.is_empty(), "bytes were arriving");
    assert!(temp_files(media.path()).is_empty());
}

#[tokio::test]
async fn the_deadline_covers_waiting_for_headers() {
    let addr = slow_server(None, Vec::new(), 1, Duration::ZERO).await;
    let spec = spec_for(format!("http://{addr}/out.mp4"));
    let media = tempfile::tempdir().unwrap();
    let lim = DownloadLimits {
        max_bytes: MAX,
        deadline: Duration::from_millis(500),
        // No stall check: only the deadline can end this.
        stall_window: Duration::ZERO,
        stall_min_bytes: 0,
    };
    let started = Instant::now();
    let err = downloader()
        .stage(&spec, &loopback(addr), media.path(), &lim, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProvidersError::DownloadDeadline { .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(temp_files(media.path()).is_empty());
}

#[tokio::test]
async fn huge_limits_mean_no_deadline_and_no_stall_check() {
    let (fake, policy, video, _) = completed(Script::default()).await;
    let media = tempfile::tempdir().unwrap();
    let lim = DownloadLimits {
        max_bytes: u64::MAX,
        deadline: Duration::MAX,
        stall_window: Duration::MAX,
        stall_min_bytes: u64::MAX,
    };
    let final_path = media.path().join("v.mp4");
    let got = downloader()
        .download(&video, &policy, media.path(), &final_path, &lim, |_| {})
        .await
        .unwrap();
    assert_eq!(got.sha256_hex, sha(&fake.content("video_1")));
}

#[tokio::test]
async fn stage_then_install_then_commit() {
    let (fake, policy, video, _) = completed(Script::default().with_video_bytes(200_000)).await;
    let media = tempfile::tempdir().unwrap();
    let final_path = media.path().join("videos/scene_1/v1.mp4");
    let staged = downloader()
        .stage(&video, &policy, media.path(), &limits(MAX), |_| {})
        .await
        .unwrap();
    let expected = fake.content("video_1");
    assert!(
        !final_path.exists(),
        "nothing at the final path before install"
    );
    assert!(!final_path.parent().unwrap().exists());
    assert!(staged.temp_path().starts_with(media.path().join(".tmp")));
    assert_eq!(std::fs::read(staged.temp_path()).unwrap(), expected);
    assert_eq!(staged.bytes(), 200_000);
    assert_eq!(staged.sha256_hex(), sha(&expected));

    let installed = staged.install(&final_path).unwrap();
    assert_eq!(installed.path(), final_path);
    assert_eq!(std::fs::read(&final_path).unwrap(), expected);
    assert!(
        temp_files(media.path()).is_empty(),
        "no .prev: nothing was replaced"
    );
    installed.commit();
    assert_eq!(std::fs::read(&final_path).unwrap(), expected);
    assert!(temp_files(media.path()).is_empty());
}

#[tokio::test]
async fn a_long_output_is_staged_whole_through_direct_writes_and_a_buffered_tail() {
    // Past the size that is written around the page cache, and not a
    // whole number of blocks: the tail goes out after the file turns
    // buffered again.
    let len = 17 * 1024 * 1024 + 4097;
    let (fake, policy, video, _) = completed(Script::default().with_video_bytes(len)).await;
    let media = tempfile::tempdir().unwrap();
    let staged = downloader()
        .stage(&video, &policy, media.path(), &limits(64 << 20), |_| {})
        .await
        .unwrap();
    let expected = fake.content("video_1");
    assert_eq!(staged.bytes(), len as u64);
    assert_eq!(staged.sha256_hex(), sha(&expected));
    assert!(std::fs::read(staged.temp_path()).unwrap() == expected);
}

#[tokio::test]
async fn a_received_small_output_is_written_only_by_its_sync_and_both_outputs_by_one() {
    let (fake, policy, video, thumb) =
        completed(Script::default().with_video_bytes(64 * 1024)).await;
    let media = tempfile::tempdir().unwrap();
    let d = downloader();
    let v = d
        .receive(&video, &policy, media.path(), &limits(MAX), |_| {})
        .await
        .unwrap();
    let t = d
        .receive(&thumb, &policy, media.path(), &limits(MAX), |_| {})
        .await
        .unwrap();
    // Both fit in memory: nothing is on disk before the sync.
    assert!(!v.temp_path().exists());
    assert!(!t.temp_path().exists());
    assert!(temp_files(media.path()).is_empty());
    let [v, t] = sync_all([v, t]).await;
    let (v, t) = (v.unwrap(), t.unwrap());
    let (want_v, want_t) = (fake.content("video_1"), fake.thumbnail("video_1"));
    assert_eq!(std::fs::read(v.temp_path()).unwrap(), want_v);
    assert_eq!(v.sha256_hex(), sha(&want_v));
    assert_eq!(std::fs::read(t.temp_path()).unwrap(), want_t);
    assert_eq!(t.bytes(), want_t.len() as u64);
    drop((v, t));
    assert!(temp_files(media.path()).is_empty());
}

#[tokio::test]
async fn a_dropped_received_output_removes_what_it_wrote() {
    // Over the 256 KiB write batch: part of it is on disk before the sync.
    let (_fake, policy, video, _) = completed(Script::default().with_video_bytes(700_000)).await;
    let media = tempfile::tempdir().unwrap();
    let r = downloader()
        .receive(&video, &policy, media.path(), &limits(MAX), |_| {})
        .await
        .unwrap();
    let written = std::fs::metadata(r.temp_path()).unwrap().len();
    assert!(written > 0 && written < 700_000, "{written}");
    drop(r);
    assert!(temp_files(media.path()).is_empty());
}

#[tokio::test]
async fn each_sync_of_a_pair_answers_for_its_own_file() {
    let big = Script::default().with_video_bytes(700_000);
    let (fake, policy, video, thumb) = completed(big).await;
    let d = downloader();
    for big_first in [true, false] {
        let media = tempfile::tempdir().unwrap();
        let lim = limits(MAX);
        // The large video has its file open; the small thumbnail has none.
        let v = d
            .receive(&video, &policy, media.path(), &lim, |_| {})
            .await
            .unwrap();
        let t = d
            .receive(&thumb, &policy, media.path(), &lim, |_| {})
            .await
            .unwrap();
        // A file where the temp directory was: only the thumbnail, still to
        // be created, can no longer be.
        let tmp = media.path().join(".tmp");
        std::fs::rename(&tmp, media.path().join("moved")).unwrap();
        std::fs::write(&tmp, b"not a directory").unwrap();
        let (v, t) = if big_first {
            let [v, t] = sync_all([v, t]).await;
            (v, t)
        } else {
            let [t, v] = sync_all([t, v]).await;
            (v, t)
        };
        let Err(e) = t else {
            panic!("the thumbnail's sync must fail");
        };
        assert!(e.local_write_error().is_some(), "{e:?}");
        let v = v.unwrap();
        assert_eq!(v.bytes(), 700_000);
        assert_eq!(v.sha256_hex(), sha(&fake.content("video_1")));
        let moved = media
            .path()
            .join("moved")
            .join(v.temp_path().file_name().unwrap());
        assert_eq!(std::fs::read(moved).unwrap(), fake.content("video_1"));
    }
}

#[tokio::test]
async fn committing_over_an_existing_file_drops_the_kept_aside_copy() {
    let (fake, policy, video, _) = completed(Script::default()).await;
    let media = tempfile::tempdir().unwrap();
    let final_path = media.path().join("videos/s/v.mp4");
    std::fs::create_dir_all(final_path.parent().unwrap()).unwrap();
    std::fs::write(&final_path, b"committed by someone").unwrap();
    let staged = downloader()
        .stage(&video, &policy, media.path(), &limits(MAX), |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(&final_path).unwrap(), b"committed by someone");
    let installed = staged.install(&final_path).unwrap();
    let kept = temp_files(media.path());
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].extension().is_some_and(|e| e == "prev"), "{kept:?}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), b"committed by someone");
    installed.commit();
    assert_eq!(std::fs::read(&final_path).unwrap(), fake.content("video_1"));
    assert!(temp_files(media.path()).is_empty(), "no .prev left");
}

#[tokio::test]
async fn reverting_an_install_over_an_existing_file_puts_it_back() {
    let (fake, policy, video, _) = completed(Script::default()).await;
    let media = tempfile::tempdir().unwrap();
    let final_path = media.path().join("videos/s/v.mp4");
    std::fs::create_dir_all(final_path.parent().unwrap()).unwrap();
    std::fs::write(&final_path, b"old").unwrap();
    let staged = downloader()
        .stage(&video, &policy, media.path(), &limits(MAX), |_| {})
        .await
        .unwrap();
    let installed = staged.install(&final_path).unwrap();
    assert_eq!(std::fs::read(&final_path).unwrap(), fake.content("video_1"));
    installed.revert().unwrap();
    assert_eq!(std::fs::read(&final_path).unwrap(), b"old");
    assert!(temp_files(media.path()).is_empty());
}

#[tokio::test]
async fn reverting_an_install_where_nothing_was_leaves_nothing() {
    let (_fake, policy, video, _) = completed(Script::default()).await;
    let media = tempfile::tempdir().unwrap();
    let final_path = media.path().join("videos/s/v.mp4");
    let staged = downloader()
        .stage(&video, &policy, media.path(), &limits(MAX), |_| {})
        .await
        .unwrap();
    let installed = staged.install(&final_path).unwrap();
    assert!(final_path.exists());
    installed.revert().unwrap();
    assert!(!final_path.exists());
    assert!(temp_files(media.path()).is_empty());
}

#[tokio::test]
async fn a_dropped_stage_is_removed_and_a_dropped_install_counts_as_committed() {
    let (fake, policy, video, _) = completed(Script::default()).await;
    let media = tempfile::tempdir().unwrap();
    let final_path = media.path().join("v.mp4");
    let d = downloader();

    // A staged output nobody installs is removed.
    let staged = d
        .stage(&video, &policy, media.path(), &limits(MAX), |_| {})
        .await
        .unwrap();
    let temp = staged.temp_path().to_owned();
    drop(staged);
    assert!(!temp.exists());
    assert!(!final_path.exists());

    // An install nobody settles counts as committed: our file stays, the
    // kept-aside one goes.
    std::fs::write(&final_path, b"old").unwrap();
    let staged = d
        .stage(&video, &policy, media.path(), &limits(MAX), |_| {})
        .await
        .unwrap();
    drop(staged.install(&final_path).unwrap());
    assert_eq!(std::fs::read(&final_path).unwrap(), fake.content("video_1"));
    assert!(temp_files(media.path()).is_empty());
}

#[test]
fn the_sweep_takes_kept_aside_files_by_the_age_of_the_link() {
    let media = tempfile::tempdir().unwrap();
    let tmp = media.path().join(".tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("a.prev"), b"x").unwrap();
    assert_eq!(cleanup_stale_temp(media.path()).unwrap(), 1);

    // A `.prev` is a hard link to an old file and keeps its old mtime; it
    // was made just now, so a sweep with a minimum age spares it.
    let old = media.path().join("old.mp4");
    std::fs::write(&old, b"old").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    std::fs::hard_link(&old, tmp.join("b.prev")).unwrap();
    assert_eq!(
        cleanup_stale_temp_older_than(media.path(), Duration::from_secs(60)).unwrap(),
        0
    );
    assert!(tmp.join("b.prev").exists());
    assert_eq!(cleanup_stale_temp(media.path()).unwrap(), 1);
    assert!(old.exists(), "only the link goes");
}

/// A temp file that changed after the sweep read the clock (it was created
/// while the sweep listed the directory) is the youngest there, never taken
/// for an abandoned one: replicas sweeping every interval used to remove
/// each other's live downloads this way.
#[test]
fn the_sweep_spares_a_file_newer_than_its_clock() {
    let media = tempfile::tempdir().unwrap();
    let tmp = media.path().join(".tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let live = tmp.join("live.part");
    std::fs::write(&live, b"x").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&live)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(3600))
        .unwrap();
    assert_eq!(
        cleanup_stale_temp_older_than(media.path(), Duration::from_secs(60)).unwrap(),
        0
    );
    assert!(live.exists(), "a live download's temp file stays");
    // The startup sweep (no minimum age) still takes everything.
    assert_eq!(cleanup_stale_temp(media.path()).unwrap(), 1);
}
