//! A job the provider finished: stage its outputs, then publish them inside
//! the fenced completion.
//!
//! The video and the thumbnail are streamed to temp files under
//! `<media.dir>/.tmp/` (verified, fsynced) while nothing is at a final
//! path. Then `Store::complete` opens its transaction, checks the lease
//! with the fenced update, and only then calls [`Outputs::publish`], which
//! renames the staged files to their final paths. So a file reaches its
//! final path only while the lease is held, a worker that lost its lease
//! never overwrites the new owner's file, and two jobs for one scene
//! version never interleave (the store serializes their completions): the
//! committed checksum and size always describe the file at the path.
//!
//! The thumbnail is a courtesy: refused, missing, failing or too large, it
//! never fails a verified video and never makes the video be fetched again.
//! The job completes without it, and the log and the audit event say why.

use std::path::{Path, PathBuf};

use clawcut_core::{DownloadSpec, Event, JobStatus};
use clawcut_providers::{Installed, ProvidersError, Staged};
use clawcut_store::{Completion, Publish, StoreError, StoredOutput};
use tracing::warn;

use super::decide::{Done, WorkError, decide};
use super::{Ctx, Worker};
use crate::report::{JobOutcome, error_chain};

/// A staged output and the final path it is published to.
struct Pending {
    staged: Option<Staged>,
    installed: Option<Installed>,
    path: PathBuf,
}

/// The staged files of one completion: what `Store::complete` publishes.
pub struct Outputs {
    files: Vec<Pending>,
}

impl Publish for Outputs {
    fn publish(&mut self) -> std::io::Result<()> {
        for f in &mut self.files {
            if let Some(staged) = f.staged.take() {
                let path = &f.path;
                let installed = blocking(|| staged.install(path)).map_err(std::io::Error::other)?;
                f.installed = Some(installed);
            }
        }
        Ok(())
    }

    fn revert(&mut self) {
        // Newest first, so a thumbnail never outlives its video's revert.
        for f in self.files.iter_mut().rev() {
            if let Some(i) = f.installed.take()
                && let Err(e) = blocking(|| i.revert())
            {
                warn!(path = %f.path.display(), error = %e, "could not put back the previous file after a failed commit");
            }
        }
    }

    fn committed(&mut self) {
        for f in &mut self.files {
            if let Some(i) = f.installed.take() {
                i.commit();
            }
        }
    }
}

/// Runs a short blocking filesystem step (a rename and a directory fsync)
/// from inside the store's transaction without stalling the runtime's other
/// tasks, where the runtime allows it.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Bump a file's modification time (at most once a second, from a progress
/// callback). A failure only means the sweep may take the file early.
fn touch(path: &Path) {
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
}

/// How a video download failed, for what the job does next.
enum FetchFailure {
    Gone(String),
    Permanent(String),
    Transient(String, Option<std::time::Duration>),
}

impl From<ProvidersError> for FetchFailure {
    fn from(e: ProvidersError) -> Self {
        if e.is_output_gone() {
            FetchFailure::Gone(error_chain(&e))
        } else if e.is_transient() {
            FetchFailure::Transient(error_chain(&e), e.retry_after())
        } else {
            FetchFailure::Permanent(error_chain(&e))
        }
    }
}

impl Worker {
    pub(super) async fn store_outputs(
        &self,
        cx: &Ctx<'_>,
        video: &DownloadSpec,
        thumbnail: Option<&DownloadSpec>,
    ) -> Result<Done, WorkError> {
        let job = cx.job;
        // `check_row` vouched for both ids (the SPEC's alphabet).
        let scene = job.scene_id.as_deref().unwrap_or(&job.id);
        let version = job.scene_version_id.as_deref().unwrap_or(&job.id);
        let media = &cx.s.media_dir;
        let video_path = final_path(media, "videos", scene, version, &video.extension);
        let staged_video = match self.stage_beside(cx, video, None).await {
            Ok(v) => v,
            Err(f) => return self.download_failed(cx, f).await,
        };
        let mut thumb_problem = None;
        let staged_thumb = match thumbnail {
            None => None,
            Some(t) => match self
                .stage_beside(cx, t, Some(staged_video.temp_path()))
                .await
            {
                Ok(s) => Some((
                    s,
                    final_path(media, "thumbnails", scene, version, &t.extension),
                )),
                Err(e) => {
                    let why = error_chain(&e);
                    warn!(job = %job.id, reason = %why, "thumbnail could not be fetched; completing with the video alone");
                    thumb_problem = Some(why);
                    None
                }
            },
        };
        decide(job.status, Event::OutputsStored)?;
        let stored = |s: &Staged, p: &Path| StoredOutput {
            path: p.to_string_lossy().into_owned(),
            sha256: s.sha256_hex().to_owned(),
            bytes: s.bytes(),
        };
        let completion = Completion {
            from: job.status,
            now: self.now_ms(),
            video: stored(&staged_video, &video_path),
            thumbnail: staged_thumb.as_ref().map(|(s, p)| stored(s, p)),
            thumbnail_problem: thumb_problem.clone(),
        };
        let mut outputs = Outputs {
            files: std::iter::once((staged_video, video_path))
                .chain(staged_thumb)
                .map(|(s, path)| Pending {
                    staged: Some(s),
                    installed: None,
                    path,
                })
                .collect(),
        };
        let detail = format!(
            "video {} ({} bytes, sha256 {}){}",
            completion.video.path,
            completion.video.bytes,
            completion.video.sha256,
            thumb_problem
                .map(|w| format!("; no thumbnail: {w}"))
                .unwrap_or_default()
        );
        // The completion runs to its end in its own task: cut off between
        // its COMMIT and its bookkeeping (the shutdown grace ran out), it
        // would put back files a committed row points at. The slot may stop
        // waiting for it; `Worker::detached` is awaited before exit.
        let store = self.store.clone();
        let lease = cx.lease.clone();
        let completed = self
            .detached
            .spawn(async move { store.complete(&lease, &completion, &mut outputs).await })
            .await;
        let completed = match completed {
            Ok(r) => r,
            Err(e) => {
                return Ok(Done {
                    to: job.status,
                    outcome: JobOutcome::Error,
                    detail: format!("completion task failed: {e}"),
                });
            }
        };
        match completed {
            Ok(()) => Ok(Done {
                to: JobStatus::Completed,
                outcome: JobOutcome::Completed,
                detail,
            }),
            // The disk refused the rename (full, read-only): the staged files
            // are gone with `outputs`; try again on the backoff schedule.
            Err(e @ StoreError::PublishOutputs(_)) => {
                self.retry(cx, true, error_chain(&e), None).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Stage `spec`; while it progresses, keep `sibling` (the staged video,
    /// waiting for its thumbnail) fresh so the temp sweep leaves it alone.
    async fn stage_beside(
        &self,
        cx: &Ctx<'_>,
        spec: &DownloadSpec,
        sibling: Option<&Path>,
    ) -> Result<Staged, ProvidersError> {
        let metrics = self.metrics.clone();
        let progress = cx.progress.clone();
        let sibling = sibling.map(Path::to_owned);
        let mut last = 0u64;
        self.downloader
            .stage(
                spec,
                &cx.handle.policy,
                &cx.s.media_dir,
                &cx.s.limits,
                move |total| {
                    metrics.download_bytes.inc_by(total.saturating_sub(last));
                    last = total;
                    progress.mark();
                    if let Some(p) = &sibling {
                        touch(p);
                    }
                },
            )
            .await
    }

    async fn download_failed(&self, cx: &Ctx<'_>, e: ProvidersError) -> Result<Done, WorkError> {
        match FetchFailure::from(e) {
            FetchFailure::Gone(why) => {
                self.settle(
                    cx,
                    Event::OutputsGone,
                    format!("outputs gone at the provider: {why}"),
                    JobOutcome::Failed,
                )
                .await
            }
            FetchFailure::Permanent(why) => {
                self.settle(
                    cx,
                    Event::ProviderFailed,
                    format!("output refused: {why}"),
                    JobOutcome::Failed,
                )
                .await
            }
            FetchFailure::Transient(why, retry_after) => {
                self.retry(cx, true, format!("download: {why}"), retry_after)
                    .await
            }
        }
    }
}

/// `<media>/<videos|thumbnails>/<scene_id>/<scene_version_id>.<ext>`.
pub fn final_path(media: &Path, sub: &str, scene: &str, version: &str, ext: &str) -> PathBuf {
    let ext = if !ext.is_empty() && ext.len() <= 8 && ext.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        ext.to_ascii_lowercase()
    } else if sub == "videos" {
        "mp4".into()
    } else {
        "jpg".into()
    };
    media.join(sub).join(scene).join(format!("{version}.{ext}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_paths_follow_the_spec() {
        let p = final_path(Path::new("/m"), "videos", "s1", "v2", "mp4");
        assert_eq!(p, PathBuf::from("/m/videos/s1/v2.mp4"));
        let p = final_path(Path::new("/m"), "thumbnails", "s1", "v2", "WEBP");
        assert_eq!(p, PathBuf::from("/m/thumbnails/s1/v2.webp"));
        let p = final_path(Path::new("/m"), "videos", "s1", "v2", "../../etc");
        assert_eq!(p, PathBuf::from("/m/videos/s1/v2.mp4"));
    }
}
