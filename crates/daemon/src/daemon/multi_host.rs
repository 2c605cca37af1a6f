//! A local `media.dir` shared by replicas on several hosts splits the
//! library: each clip lands on the host that completed it. The daemon can
//! tell when it is so: on PostgreSQL, other hosts' worker ids
//! (`<hostname>:<pid>:<suffix>`) in recent events or live leases. Then it
//! says so at startup, loudly; it does not refuse, because a shared
//! filesystem mounted at `media.dir` on every host is a correct setup it
//! cannot see.

use std::time::Duration;

use tracing::{debug, warn};

use crate::config::Config;
use crate::media::Storage;
use crate::worker::Worker;

/// How far back other hosts' activity counts.
const RECENT: Duration = Duration::from_secs(7 * 86_400);

/// The hostnames in `ids` other than `own`, sorted, each once.
pub fn other_hosts(ids: &[String], own: &str) -> Vec<String> {
    let mut hosts: Vec<String> = ids
        .iter()
        .filter_map(|id| id.split(':').next())
        .filter(|h| !h.is_empty() && *h != own)
        .map(str::to_owned)
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Warn when `media.dir` is local, the database is PostgreSQL and workers
/// on other hosts used it within [`RECENT`]. A failed read is only logged.
pub async fn warn_if_local_media_is_shared(cfg: &Config, worker: &Worker) {
    let Storage::Local(dir) = &worker.storage else {
        return;
    };
    if !cfg.database.url.starts_with("postgres") {
        return;
    }
    let own = worker.id.split(':').next().unwrap_or_default();
    let since = worker
        .now_ms()
        .saturating_sub(i64::try_from(RECENT.as_millis()).unwrap_or(i64::MAX));
    match worker.store().recent_worker_ids(since).await {
        Ok(ids) => {
            let hosts = other_hosts(&ids, own);
            if !hosts.is_empty() {
                warn!(
                    media_dir = %dir.display(),
                    other_hosts = %hosts.join(", "),
                    "replicas on other hosts share this database but media.dir is a local directory: each clip is stored on the host that completed it. Set media.store = \"s3://bucket/prefix\" (or mount one shared filesystem at media.dir on every host); see deploy/README.md"
                );
            }
        }
        Err(e) => {
            debug!(error = %crate::report::error_chain(&e), "could not read the recent worker ids")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_hosts_are_told_from_worker_ids() {
        let ids = [
            "web-1:10:abc".to_owned(),
            "web-2:11:def".to_owned(),
            "web-2:12:fed".to_owned(),
            "web-3:1:x".to_owned(),
            "operator".to_owned(),
        ];
        assert_eq!(other_hosts(&ids, "web-1"), ["operator", "web-2", "web-3"]);
        assert!(other_hosts(&ids[..1], "web-1").is_empty());
    }
}
