//! `media.store = "s3://bucket/prefix"`: clips on S3-compatible object
//! storage, through Apache Arrow's `object_store` crate (`aws` feature).
//!
//! The same guarantees as the media directory, step for step:
//!
//! | on disk (`media.dir`) | in the bucket |
//! |---|---|
//! | stream into `.tmp/*.part`, sha256 on the way | stream into a multipart upload *at the final key*, one part of `media.part_size` buffered at a time, sha256 on the way |
//! | size limit, truncation and empty body checked before the rename | the same checks, before `CompleteMultipartUpload`: S3 shows a multipart object only once it is completed, so nothing partial is ever at a final key |
//! | fsync, then rename inside the fenced completion | `CompleteMultipartUpload` inside the fenced completion ([`ObjectStaged::complete`]), then a `HEAD` that the store holds exactly the bytes counted |
//! | the replaced file kept as `.tmp/*.prev` until the commit settles | the replaced object copied (server side) to `<prefix>/.prev/…` until the commit settles ([`ObjectInstalled`]) |
//! | a crash's `.part` files swept by age | a crash's multipart uploads aborted by the sweep, from the marker each upload keeps fresh under `<prefix>/.uploads/` |
//!
//! Why markers: S3's `Initiated` time cannot tell a live upload from a dead
//! one (a slow download keeps its upload open for as long as it lasts).
//! Each upload writes a small marker object (its key and upload id) right
//! after `CreateMultipartUpload` and rewrites it every third of the sweep's
//! idle limit while it lives (downloading, waiting for its thumbnail, its
//! turn, its commit). A marker idle past the limit belongs to a dead
//! process: [`ObjectMedia::sweep`] aborts its upload and deletes it. A
//! crash between `CreateMultipartUpload` and the marker's `PUT` (one round
//! trip) leaves an upload no marker names: the sweep also lists the
//! multipart uploads (`ListMultipartUploads`, which `object_store` does not
//! offer, sent as a URL it presigns) and aborts those under our keys that
//! no marker names and that were initiated longer ago than the idle limit.
//! The bucket lifecycle rule `AbortIncompleteMultipartUpload`
//! (deploy/README.md) remains the backstop for a store that refuses that
//! listing.
//!
//! Memory: a live upload holds at most one part (`media.part_size`, default
//! 8 MiB), kept as the chunks it arrived in (no copy), plus its two HTTP
//! connections' buffers (under 2 MiB); parts are sent one at a time. A
//! daemon holds at most `media.part_size × reconcile.concurrency` of clip
//! bytes (64 MiB with the defaults), however large the clips, and its
//! resident set grows by at most `concurrency × (part_size + 2 MiB)` (the
//! e2e test `clips_stream_through_bounded_memory` measures it). glibc's
//! malloc, left to move its mmap threshold, may keep up to one more freed
//! part per slot resident (deploy/README.md).
//!
//! Credentials, region and endpoint come only from the environment
//! (`AmazonS3Builder::from_env`: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, web identity and container
//! credentials); the config file names only the bucket and prefix.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use clawcut_providers::{Fetched, OutputSink, ProvidersError};
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, Checksum};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::signer::{Method, SignedUrlOptions, Signer};
use object_store::{
    BackoffConfig, ClientConfigKey, GetOptions, GetRange, MultipartId, ObjectStore, ObjectStoreExt,
    PutPayload, RetryConfig,
};
use tracing::{debug, info, warn};

use super::MediaError;

/// Where in-flight uploads keep their markers, under the prefix.
const UPLOADS: &str = ".uploads";
/// Where an object replaced by a completion waits for its commit.
const PREV: &str = ".prev";

/// One bucket (and prefix) holding the clips.
#[derive(Debug)]
pub struct ObjectMedia {
    s3: AmazonS3,
    /// For the one request `object_store` does not make:
    /// `ListMultipartUploads`, sent as a presigned URL.
    http: reqwest::Client,
    bucket: String,
    /// `""` or `a/b` (no slashes at the ends).
    prefix: String,
    part_size: usize,
}

/// The bucket and prefix of a `media.store` URL, checked; `Err` says what
/// is wrong with it (for the config error).
pub fn parse_store_url(url: &str) -> Result<(String, String), String> {
    let u =
        url::Url::parse(url).map_err(|e| format!("not a URL ({e}); write s3://bucket/prefix"))?;
    if u.scheme() != "s3" {
        return Err(format!(
            "scheme {}: is not supported (only s3://, which also serves MinIO, R2 and other S3-compatible stores through AWS_ENDPOINT_URL)",
            u.scheme()
        ));
    }
    if !u.username().is_empty() || u.password().is_some() || u.query().is_some() {
        return Err("must not carry credentials or options: they come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL), never from the file".into());
    }
    let bucket = u.host_str().unwrap_or_default().to_owned();
    if bucket.is_empty() {
        return Err("names no bucket; write s3://bucket/prefix".into());
    }
    let prefix = u.path().trim_matches('/').to_owned();
    for seg in prefix
        .split('/')
        .filter(|s| !prefix.is_empty() || !s.is_empty())
    {
        let ok = !seg.is_empty()
            && !seg.starts_with('.')
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(format!(
                "prefix segment {seg:?}: use letters, digits, '-', '_' and '.' (not first)"
            ));
        }
    }
    Ok((bucket, prefix))
}

impl ObjectMedia {
    /// The client for `url` (`s3://bucket/prefix`, already checked by the
    /// config), everything else from the environment. Each request is
    /// retried by `object_store` a few times within 30 s; past that the
    /// error reaches the job, which waits without spending an attempt.
    pub fn new(url: &str, part_size: u64, part_checksums: bool) -> Result<ObjectMedia, MediaError> {
        let (bucket, prefix) = parse_store_url(url).map_err(MediaError::BadStoreUrl)?;
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
        };
        let mut builder = AmazonS3Builder::from_env();
        if part_checksums {
            // Every part (and a single PUT) carries its sha256
            // (`x-amz-checksum-sha256`); the store refuses a part whose
            // bytes do not match it, so what it keeps is what we hashed.
            builder = builder.with_checksum_algorithm(Checksum::SHA256);
        }
        let s3 = builder
            .with_bucket_name(&bucket)
            .with_retry(retry)
            // Set key by key: `with_client_options` would drop what the
            // environment set (AWS_ALLOW_HTTP, proxies).
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "10s",
            )
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "120s")
            .build()
            .map_err(MediaError::Build)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| MediaError::BadStoreUrl(format!("build the HTTP client: {e}")))?;
        Ok(ObjectMedia {
            s3,
            http,
            bucket,
            prefix,
            part_size: usize::try_from(part_size).unwrap_or(usize::MAX),
        })
    }

    /// `s3://bucket/prefix`, for the log (never a credential).
    pub fn describe(&self) -> String {
        self.url_of(&self.key(""))
    }

    fn key(&self, rel: &str) -> Key {
        let joined = match (self.prefix.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_owned(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{rel}", self.prefix),
        };
        Key::from(joined)
    }

    /// The form recorded in `video_path`/`thumbnail_path`.
    pub fn url_of(&self, key: &Key) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }

    /// The key a recorded location names, when it is in this bucket.
    /// Parsed as written (`url_of` prints a key's encoded form, which
    /// `Key::from` would encode again), and refused unless it reads back
    /// the same: no `.`/`..` segment, no empty one, no slash at an end.
    pub fn key_of(&self, location: &str) -> Option<Key> {
        let rest = location.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/')?;
        if bucket != self.bucket || key.is_empty() {
            return None;
        }
        Key::parse(key).ok().filter(|k| k.as_ref() == key)
    }

    /// Whether `key` is one this daemon writes clips at: under the prefix,
    /// in `videos/` or `thumbnails/` (not `.uploads/`, `.prev/`, another
    /// prefix, or another writer's keys).
    fn is_clip_key(&self, key: &str) -> bool {
        let rel = match self.prefix.is_empty() {
            true => Some(key),
            false => key
                .strip_prefix(self.prefix.as_str())
                .and_then(|r| r.strip_prefix('/')),
        };
        rel.is_some_and(|r| r.starts_with("videos/") || r.starts_with("thumbnails/"))
    }

    /// The key of a recorded clip location, when it is one this daemon
    /// writes (see `is_clip_key`): the operator panel serves no other.
    pub fn clip_key(&self, location: &str) -> Option<Key> {
        self.key_of(location)
            .filter(|k| self.is_clip_key(k.as_ref()))
    }

    /// The key of `<sub>/<scene>/<version>.<ext>` under the prefix.
    pub fn final_key(&self, rel: &str) -> Key {
        self.key(rel)
    }

    /// A sink streaming one output to `key`.
    pub fn upload(self: &Arc<Self>, key: Key, keep_every: Duration) -> ObjectUpload {
        ObjectUpload {
            media: self.clone(),
            key,
            keep_every,
            live: None,
            chunks: Vec::new(),
            buffered: 0,
        }
    }

    /// Whether the bucket answers (startup: a warning, never a refusal, so
    /// a store that is down only delays completions).
    pub async fn probe(&self) -> Result<(), MediaError> {
        let prefix = self.key(UPLOADS);
        self.s3
            .list_with_delimiter(Some(&prefix))
            .await
            .map(|_| ())
            .map_err(|source| MediaError::Store {
                what: format!("list {}", self.url_of(&prefix)),
                source,
            })
    }

    /// Abort what dead processes left, and return how many uploads that
    /// was: the uploads of markers idle for `max_idle`, then (a backstop
    /// for a crash between `CreateMultipartUpload` and the marker's `PUT`)
    /// every upload under the prefix that no marker names and that S3 says
    /// was initiated more than `max_idle` ago. Replaced objects kept aside
    /// as long are deleted too.
    ///
    /// Uploads are listed before markers, so an upload whose marker is
    /// being written meanwhile is found named. Aborting a live upload by
    /// mistake (a store whose `Initiated` times are wrong) costs that job a
    /// retry without an attempt spent, never a wrong object.
    pub async fn sweep(&self, max_idle: Duration) -> Result<usize, MediaError> {
        let now = SystemTime::now();
        let idle = |t: SystemTime| now.duration_since(t).unwrap_or_default() >= max_idle;
        let err = |what: String| move |source| MediaError::Store { what, source };
        // Optional: a store without ListMultipartUploads still has markers.
        let uploads = match self.list_uploads().await {
            Ok(u) => Some(u),
            Err(e) => {
                debug!(store = %self.describe(), error = %e, "could not list multipart uploads; sweeping by markers only");
                None
            }
        };
        let markers_at = self.key(UPLOADS);
        let mut markers = self.s3.list(Some(&markers_at));
        let mut named = std::collections::HashSet::new();
        let mut aborted = 0;
        while let Some(meta) = markers.next().await {
            let meta = meta.map_err(err(format!("list {}", self.url_of(&markers_at))))?;
            if let Some(name) = meta.location.filename() {
                named.insert(name.to_owned());
            }
            if !idle(meta.last_modified.into()) {
                continue;
            }
            let body = match self.s3.get(&meta.location).await {
                Ok(r) => r.bytes().await.ok(),
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(source) => {
                    return Err(MediaError::Store {
                        what: format!("read {}", self.url_of(&meta.location)),
                        source,
                    });
                }
            };
            if let Some(m) = body.as_deref().and_then(Marker::parse) {
                aborted += self.abort(&Key::from(m.key.as_str()), &m.upload_id).await?;
            }
            delete_quietly(&self.s3, &meta.location).await;
        }
        for u in uploads.unwrap_or_default() {
            // Only keys this daemon writes: another writer's uploads in the
            // bucket (or an empty prefix) are not ours to abort.
            let ours = self.is_clip_key(&u.key);
            let unnamed = !named.contains(&hex::encode(&u.upload_id));
            if ours && unnamed && u.initiated.is_none_or(idle) {
                aborted += self.abort(&Key::from(u.key.as_str()), &u.upload_id).await?;
            }
        }
        let prev = self.key(PREV);
        let mut kept = self.s3.list(Some(&prev));
        while let Some(meta) = kept.next().await {
            let meta = meta.map_err(err(format!("list {}", self.url_of(&prev))))?;
            if idle(meta.last_modified.into()) {
                delete_quietly(&self.s3, &meta.location).await;
            }
        }
        if aborted > 0 {
            info!(aborted, store = %self.describe(), "aborted multipart uploads left by a dead process");
        }
        Ok(aborted)
    }

    /// Abort one upload: 1 when it was there, 0 when it was already gone.
    async fn abort(&self, key: &Key, id: &str) -> Result<usize, MediaError> {
        match self.s3.abort_multipart(key, &id.to_owned()).await {
            Ok(()) => Ok(1),
            Err(object_store::Error::NotFound { .. }) => Ok(0),
            Err(source) => Err(MediaError::Store {
                what: format!("abort the upload to {}", self.url_of(key)),
                source,
            }),
        }
    }

    /// The multipart uploads in progress under the prefix
    /// (`ListMultipartUploads`, which `object_store` does not offer: sent
    /// as a URL it presigns, page by page).
    async fn list_uploads(&self) -> Result<Vec<Upload>, String> {
        let prefix = match self.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", self.prefix),
        };
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..100 {
            let mut query = vec![("uploads", String::new()), ("prefix", prefix.clone())];
            if let Some((k, u)) = &markers {
                query.push(("key-marker", k.clone()));
                query.push(("upload-id-marker", u.clone()));
            }
            let url = self
                .s3
                .signed_url_opts(
                    Method::GET,
                    &Key::from(""),
                    Duration::from_secs(300),
                    &SignedUrlOptions::new().with_query(query),
                )
                .await
                .map_err(|e| format!("presign ListMultipartUploads: {e}"))?;
            let resp = self
                .http
                .get(url)
                .send()
                .await
                .map_err(|e| format!("ListMultipartUploads: {}", e.without_url()))?;
            let status = resp.status();
            let body = resp
                .text()
                .await
                .map_err(|e| format!("ListMultipartUploads: {}", e.without_url()))?;
            if !status.is_success() {
                return Err(format!("ListMultipartUploads: HTTP {status}"));
            }
            let page = parse_uploads(&body);
            out.extend(page.uploads);
            match page.next {
                Some(next) => markers = Some(next),
                None => return Ok(out),
            }
        }
        Ok(out)
    }

    /// The object at `location`: a stream of its bytes.
    pub async fn open(
        &self,
        location: &str,
    ) -> Result<futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>, MediaError> {
        let key = self
            .key_of(location)
            .ok_or_else(|| MediaError::NotInStore(location.to_owned()))?;
        self.read(&key, None, None).await
    }
}

impl ObjectMedia {
    /// The size and ETag of the object at `key` (a `HEAD`).
    pub async fn head(&self, key: &Key) -> Result<(u64, Option<String>), MediaError> {
        self.s3
            .head(key)
            .await
            .map(|m| (m.size, m.e_tag))
            .map_err(|source| MediaError::Store {
                what: format!("look at {}", self.url_of(key)),
                source,
            })
    }

    /// Bytes `range` of the object at `key` (all of them for `None`),
    /// streamed: a ranged `GET`. With `etag` (from [`head`](Self::head)),
    /// the store refuses (`Precondition`) when the object was replaced
    /// since, so a range never mixes two versions of a clip.
    pub async fn read(
        &self,
        key: &Key,
        range: Option<std::ops::Range<u64>>,
        etag: Option<String>,
    ) -> Result<futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>, MediaError> {
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            if_match: etag,
            ..GetOptions::default()
        };
        let got = self
            .s3
            .get_opts(key, opts)
            .await
            .map_err(|source| MediaError::Store {
                what: format!("read {}", self.url_of(key)),
                source,
            })?;
        Ok(got
            .into_stream()
            .map(|r| r.map_err(std::io::Error::other))
            .boxed())
    }

    /// The size of the object at `location` (a `HEAD`).
    pub async fn size(&self, location: &str) -> Result<u64, MediaError> {
        let key = self
            .key_of(location)
            .ok_or_else(|| MediaError::NotInStore(location.to_owned()))?;
        self.s3
            .head(&key)
            .await
            .map(|m| m.size)
            .map_err(|source| MediaError::Store {
                what: format!("look at {location}"),
                source,
            })
    }
}

/// One multipart upload in progress, as `ListMultipartUploads` says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Upload {
    key: String,
    upload_id: String,
    /// `None` when the store's time could not be read.
    initiated: Option<SystemTime>,
}

/// One page of `ListMultipartUploads`: its uploads, and the markers of the
/// next page when it is truncated.
struct UploadsPage {
    uploads: Vec<Upload>,
    next: Option<(String, String)>,
}

/// The text of the first `<tag>…</tag>` in `xml`, unescaped.
fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

fn parse_uploads(xml: &str) -> UploadsPage {
    let mut uploads = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<Upload>") {
        let after = &rest[i + "<Upload>".len()..];
        let Some(j) = after.find("</Upload>") else {
            break;
        };
        let one = &after[..j];
        if let (Some(key), Some(upload_id)) = (tag(one, "Key"), tag(one, "UploadId")) {
            let initiated = tag(one, "Initiated")
                .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok());
            uploads.push(Upload {
                key,
                upload_id,
                initiated,
            });
        }
        rest = &after[j..];
    }
    let truncated = tag(xml, "IsTruncated").is_some_and(|t| t == "true");
    let next = match (
        truncated,
        tag(xml, "NextKeyMarker"),
        tag(xml, "NextUploadIdMarker"),
    ) {
        (true, Some(k), Some(u)) => Some((k, u)),
        _ => None,
    };
    UploadsPage { uploads, next }
}

/// Delete `key`, logging a failure: what is left is the sweep's.
async fn delete_quietly(s3: &AmazonS3, key: &Key) {
    match s3.delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => warn!(key = %key, error = %e, "could not delete; the sweep will"),
    }
}

/// A random name for a marker or a kept-aside object.
fn unique() -> String {
    format!(
        "{:x}-{:08x}-{:016x}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default(),
        std::process::id(),
        rand::random::<u64>()
    )
}

/// The marker's body: `<key>\n<upload id>\n`.
struct Marker {
    key: String,
    upload_id: String,
}

impl Marker {
    fn body(&self) -> Bytes {
        Bytes::from(format!("{}\n{}\n", self.key, self.upload_id))
    }

    fn parse(b: &[u8]) -> Option<Marker> {
        let text = std::str::from_utf8(b).ok()?;
        let mut lines = text.lines();
        let key = lines.next()?.to_owned();
        let upload_id = lines.next()?.to_owned();
        (!key.is_empty() && !upload_id.is_empty()).then_some(Marker { key, upload_id })
    }
}

/// A multipart upload in progress and the marker that names it.
struct Live {
    id: MultipartId,
    parts: Vec<PartId>,
    marker: Key,
    /// Rewrites the marker while the upload lives; aborted on drop.
    keeper: tokio::task::JoinHandle<()>,
}

impl Live {
    /// Abort the upload and delete its marker, in the background (from a
    /// `Drop`): best effort, the sweep takes what this misses.
    fn abandon(self, media: &Arc<ObjectMedia>, key: Key) {
        self.keeper.abort();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let s3 = media.s3.clone();
        rt.spawn(async move {
            match s3.abort_multipart(&key, &self.id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    delete_quietly(&s3, &self.marker).await;
                }
                Err(e) => {
                    warn!(key = %key, error = %e, "could not abort a multipart upload; the sweep will");
                }
            }
        });
    }
}

/// [`OutputSink`] into a multipart upload at the final key: parts of
/// `part_size` (the last one shorter), sent one at a time. Dropped before
/// [`finish`](Self::finish), it aborts the upload.
pub struct ObjectUpload {
    media: Arc<ObjectMedia>,
    key: Key,
    keep_every: Duration,
    live: Option<Live>,
    /// The next part's bytes, as the chunks they arrived in (no copy: the
    /// part is sent as these chunks), and their total.
    chunks: Vec<Bytes>,
    buffered: usize,
}

impl ObjectUpload {
    fn refused(&self, what: &str, e: object_store::Error) -> ProvidersError {
        ProvidersError::WriteOutput {
            path: self.media.url_of(&self.key).into(),
            source: std::io::Error::other(format!("{what}: {e}")),
        }
    }

    /// Send what is buffered as the next part.
    async fn send_buffered(&mut self) -> Result<(), ProvidersError> {
        let data: PutPayload = std::mem::take(&mut self.chunks).into_iter().collect();
        self.buffered = 0;
        self.send_part(data).await
    }

    async fn send_part(&mut self, data: PutPayload) -> Result<(), ProvidersError> {
        let Some(live) = self.live.as_mut() else {
            return Err(ProvidersError::WriteOutput {
                path: self.media.url_of(&self.key).into(),
                source: std::io::Error::other("upload written before it was opened"),
            });
        };
        let idx = live.parts.len();
        let put = self.media.s3.put_part(&self.key, &live.id, idx, data).await;
        match put {
            Ok(part) => {
                live.parts.push(part);
                Ok(())
            }
            Err(e) => Err(self.refused("upload a part", e)),
        }
    }

    /// The last part, after [`Downloader::fetch_into`] returned `fetched`:
    /// the upload is then complete but for `CompleteMultipartUpload`, which
    /// only the fenced completion sends.
    ///
    /// [`Downloader::fetch_into`]: clawcut_providers::Downloader::fetch_into
    pub async fn finish(mut self, fetched: Fetched) -> Result<ObjectStaged, ProvidersError> {
        if self.buffered > 0 {
            self.send_buffered().await?;
        }
        let Some(live) = self.live.take() else {
            return Err(ProvidersError::WriteOutput {
                path: self.media.url_of(&self.key).into(),
                source: std::io::Error::other("upload finished before it was opened"),
            });
        };
        Ok(ObjectStaged {
            media: self.media.clone(),
            key: self.key.clone(),
            live: Some(live),
            fetched,
        })
    }
}

impl OutputSink for ObjectUpload {
    async fn open(&mut self, _announced: Option<u64>) -> Result<(), ProvidersError> {
        let id = self
            .media
            .s3
            .create_multipart(&self.key)
            .await
            .map_err(|e| self.refused("start a multipart upload", e))?;
        // Named by the upload id, so one listing of the markers tells which
        // uploads are accounted for (see `ObjectMedia::sweep`).
        let marker = self.media.key(&format!("{UPLOADS}/{}", hex::encode(&id)));
        let body = Marker {
            key: self.key.to_string(),
            upload_id: id.clone(),
        }
        .body();
        let s3 = self.media.s3.clone();
        if let Err(e) = s3.put(&marker, body.clone().into()).await {
            // Without its marker no sweep could find the upload: abort it.
            let _ = s3.abort_multipart(&self.key, &id).await;
            return Err(self.refused("write the upload's marker", e));
        }
        let (keep_every, keeper_marker) = (self.keep_every, marker.clone());
        let keeper = tokio::spawn(async move {
            loop {
                tokio::time::sleep(keep_every).await;
                if let Err(e) = s3.put(&keeper_marker, body.clone().into()).await {
                    warn!(marker = %keeper_marker, error = %e, "could not refresh an upload's marker");
                }
            }
        });
        self.live = Some(Live {
            id,
            parts: Vec::new(),
            marker,
            keeper,
        });
        Ok(())
    }

    /// Buffers `chunk`; every `part_size` bytes go out as one part, of
    /// exactly that size (R2 wants all parts but the last equal), the chunk
    /// that crosses the boundary split without a copy.
    async fn write(&mut self, mut chunk: Bytes) -> Result<(), ProvidersError> {
        while !chunk.is_empty() {
            let need = self.media.part_size - self.buffered;
            if chunk.len() < need {
                self.buffered += chunk.len();
                self.chunks.push(chunk);
                break;
            }
            self.chunks.push(chunk.split_to(need));
            self.buffered += need;
            self.send_buffered().await?;
        }
        Ok(())
    }
}

impl Drop for ObjectUpload {
    fn drop(&mut self) {
        if let Some(live) = self.live.take() {
            live.abandon(&self.media, self.key.clone());
        }
    }
}

/// Every part uploaded and counted; nothing at the final key until
/// [`complete`](Self::complete). Dropped uncompleted, it aborts the upload.
pub struct ObjectStaged {
    media: Arc<ObjectMedia>,
    key: Key,
    live: Option<Live>,
    fetched: Fetched,
}

impl ObjectStaged {
    pub fn sha256_hex(&self) -> &str {
        &self.fetched.sha256_hex
    }

    pub fn bytes(&self) -> u64 {
        self.fetched.bytes
    }

    /// Make the object visible at its final key: keep any object already
    /// there aside (a server-side copy under `.prev/`), complete the
    /// multipart upload, check that the store holds exactly the bytes
    /// counted. Called only inside the fenced completion. On error the
    /// final key is as it was (best effort) and the upload is aborted.
    pub async fn complete(mut self) -> std::io::Result<ObjectInstalled> {
        let s3 = self.media.s3.clone();
        let io = |what: &str, e: object_store::Error| {
            std::io::Error::other(format!("{what} {}: {e}", self.media.url_of(&self.key)))
        };
        let prev = match s3.head(&self.key).await {
            Ok(_) => {
                let prev = self.media.key(&format!("{PREV}/{}", unique()));
                s3.copy(&self.key, &prev)
                    .await
                    .map_err(|e| io("keep aside the object at", e))?;
                Some(prev)
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(io("look at", e)),
        };
        let installed = ObjectInstalled {
            media: self.media.clone(),
            key: self.key.clone(),
            prev,
            settled: false,
        };
        let Some(live) = self.live.take() else {
            return Err(std::io::Error::other("upload completed twice"));
        };
        let done = s3
            .complete_multipart(&self.key, &live.id, live.parts.clone())
            .await;
        if let Err(e) = done {
            let err = io("complete the upload to", e);
            // The answer may have been lost after the object appeared: put
            // back what was there, and abort what is left of the upload.
            installed.revert().await.ok();
            live.abandon(&self.media, self.key.clone());
            return Err(err);
        }
        live.keeper.abort();
        delete_quietly(&s3, &live.marker).await;
        match s3.head(&self.key).await {
            Ok(meta) if meta.size == self.fetched.bytes => Ok(installed),
            Ok(meta) => {
                let got = meta.size;
                installed.revert().await.ok();
                Err(std::io::Error::other(format!(
                    "{} holds {got} bytes after its upload, not the {} received",
                    self.media.url_of(&self.key),
                    self.fetched.bytes
                )))
            }
            Err(e) => {
                let err = io("look at the completed", e);
                installed.revert().await.ok();
                Err(err)
            }
        }
    }
}

impl Drop for ObjectStaged {
    fn drop(&mut self) {
        if let Some(live) = self.live.take() {
            live.abandon(&self.media, self.key.clone());
        }
    }
}

/// A completed object whose database commit is pending: settle it with
/// [`commit`](Self::commit) or [`revert`](Self::revert). Dropped unsettled
/// it counts as committed (as [`clawcut_providers::Installed`], for the same
/// reason: the commit may have happened).
pub struct ObjectInstalled {
    media: Arc<ObjectMedia>,
    key: Key,
    prev: Option<Key>,
    settled: bool,
}

impl ObjectInstalled {
    /// The commit did not happen: put the replaced object back (or delete
    /// ours when there was none).
    pub async fn revert(mut self) -> std::io::Result<()> {
        self.settled = true;
        let s3 = &self.media.s3;
        let res = match &self.prev {
            Some(prev) => match s3.copy(prev, &self.key).await {
                Ok(()) => {
                    delete_quietly(s3, prev).await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            None => match s3.delete(&self.key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            },
        };
        res.map_err(|e| {
            std::io::Error::other(format!("revert {}: {e}", self.media.url_of(&self.key)))
        })
    }

    /// The commit happened: drop the kept-aside object.
    pub async fn commit(mut self) {
        self.settled = true;
        if let Some(prev) = self.prev.take() {
            delete_quietly(&self.media.s3, &prev).await;
        }
    }
}

impl Drop for ObjectInstalled {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if let (Some(prev), Ok(rt)) = (self.prev.take(), tokio::runtime::Handle::try_current()) {
            let s3 = self.media.s3.clone();
            rt.spawn(async move { delete_quietly(&s3, &prev).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_name_a_bucket_and_a_clean_prefix_and_nothing_else() {
        assert_eq!(
            parse_store_url("s3://clips/prod/media").unwrap(),
            ("clips".into(), "prod/media".into())
        );
        assert_eq!(
            parse_store_url("s3://clips").unwrap(),
            ("clips".into(), String::new())
        );
        assert_eq!(
            parse_store_url("s3://clips/").unwrap(),
            ("clips".into(), String::new())
        );
        for bad in [
            "gs://clips/x",
            "s3://key:secret@clips/x",
            "s3://clips/x?access_key_id=AKIA",
            "s3:///x",
            "s3://clips/a b",
            "s3://clips/.uploads",
            "s3://clips/a//b",
            "clips/x",
        ] {
            assert!(parse_store_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_clip_keys_under_the_prefix_are_clips() {
        let m = ObjectMedia::new("s3://clips/lib", 5 << 20, false).unwrap();
        let k = m.final_key("videos/s/v.mp4");
        assert_eq!(m.key_of(&m.url_of(&k)), Some(k.clone()));
        assert_eq!(m.clip_key("s3://clips/lib/videos/s/v.mp4"), Some(k));
        assert!(m.clip_key("s3://clips/lib/thumbnails/s/v.jpg").is_some());
        for not in [
            "s3://other/lib/videos/s/v.mp4",
            "s3://clips/lib2/videos/s/v.mp4",
            "s3://clips/libvideos/s/v.mp4",
            "s3://clips/lib/.uploads/abc",
            "s3://clips/lib/.prev/abc",
            "s3://clips/lib/videos/../../secret",
            "s3://clips/lib/videos//v.mp4",
            "s3://clips//lib/videos/s/v.mp4",
            "s3://clips/lib/videos/s/v.mp4/",
            "s3://clips/lib/backups/x",
            "/srv/media/videos/s/v.mp4",
        ] {
            assert_eq!(m.clip_key(not), None, "{not}");
        }
        let bare = ObjectMedia::new("s3://clips", 5 << 20, false).unwrap();
        assert!(bare.clip_key("s3://clips/videos/s/v.mp4").is_some());
        assert!(bare.clip_key("s3://clips/lib/videos/s/v.mp4").is_none());
    }

    #[test]
    fn list_multipart_uploads_answers_are_read() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>clips</Bucket><KeyMarker/><UploadIdMarker/>
  <NextKeyMarker>p/videos/s/b.mp4</NextKeyMarker><NextUploadIdMarker>id&amp;2</NextUploadIdMarker>
  <IsTruncated>true</IsTruncated>
  <Upload><Key>p/videos/s/a.mp4</Key><UploadId>id1</UploadId><Initiated>2026-12-01T10:00:00.000Z</Initiated></Upload>
  <Upload><Key>p/videos/s/b.mp4</Key><UploadId>id&amp;2</UploadId><Initiated>garbage</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let page = parse_uploads(xml);
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[0].key, "p/videos/s/a.mp4");
        assert_eq!(page.uploads[0].upload_id, "id1");
        let t = humantime::parse_rfc3339("2026-12-01T10:00:00Z").unwrap();
        assert_eq!(page.uploads[0].initiated, Some(t));
        assert_eq!(page.uploads[1].upload_id, "id&2");
        assert_eq!(page.uploads[1].initiated, None);
        assert_eq!(page.next, Some(("p/videos/s/b.mp4".into(), "id&2".into())));
        let last = parse_uploads(
            "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
        );
        assert!(last.uploads.is_empty() && last.next.is_none());
    }

    #[test]
    fn markers_round_trip_and_refuse_garbage() {
        let m = Marker {
            key: "p/videos/s/v.mp4".into(),
            upload_id: "abc".into(),
        };
        let back = Marker::parse(&m.body()).unwrap();
        assert_eq!(
            (back.key.as_str(), back.upload_id.as_str()),
            ("p/videos/s/v.mp4", "abc")
        );
        assert!(Marker::parse(b"only-a-key\n").is_none());
        assert!(Marker::parse(&[0xff, 0xfe]).is_none());
    }
}
