//! SIGHUP: re-read the config file. Cadence, thresholds, limits and
//! backoff take effect at the scheduler's next turn (jobs already in a slot
//! keep the settings they started with); leases in flight are untouched. A
//! bad file is refused and the running config kept. The number of slots
//! follows `reconcile.concurrency` live. Changes that need a restart
//! (database, providers, http, media.dir, media.store, media.part_size) are
//! named in the log.

use tracing::{error, info, warn};

use crate::app;
use crate::config::Config;
use crate::state::State;

pub fn reload(state: &State) {
    let path = &state.config_path;
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "SIGHUP: new config rejected; keeping the running one");
            return;
        }
    };
    let old = state.config();
    let mut needs_restart = Vec::new();
    if new.database.url != old.database.url {
        needs_restart.push("database.url");
    }
    if format!("{:?}", new.providers) != format!("{:?}", old.providers) {
        needs_restart.push("providers");
    }
    if format!("{:?}", new.http) != format!("{:?}", old.http) {
        needs_restart.push("http");
    }
    if new.media.dir != old.media.dir {
        needs_restart.push("media.dir");
    }
    // The object store client is built once, at start.
    if new.media.store != old.media.store {
        needs_restart.push("media.store");
    }
    if new.media.part_size != old.media.part_size {
        needs_restart.push("media.part_size");
    }
    if new.media.part_checksums != old.media.part_checksums {
        needs_restart.push("media.part_checksums");
    }
    let mut applied = new.clone();
    // Keep what cannot change live, so the running process stays coherent.
    applied.database = old.database.clone();
    applied.providers = old.providers.clone();
    applied.http = old.http.clone();
    applied.media.dir = old.media.dir.clone();
    applied.media.store = old.media.store.clone();
    applied.media.part_size = old.media.part_size;
    applied.media.part_checksums = old.media.part_checksums;
    state.worker.replace_settings(app::settings(&applied));
    state.replace_config(applied);
    if needs_restart.is_empty() {
        info!("SIGHUP: config reloaded");
    } else {
        warn!(keys = ?needs_restart, "SIGHUP: config reloaded; these keys changed but need a restart to apply");
    }
}
