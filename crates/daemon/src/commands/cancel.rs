//! `clawcut-worker cancel ID [--reason TEXT] [--operator NAME] [--json]`:
//! an operator stops a job (see [`crate::worker::cancel`] for the order of
//! the provider call and the store's cancel).

use std::collections::HashMap;

use anyhow::Context;
use clawcut_store::ProviderCancel;

use crate::app;
use crate::cli::CancelArgs;
use crate::config::Config;
use crate::exit::{self, ExitCode, Fatal, fatal};
use crate::runtime::clock::Clock;
use crate::worker::cancel::{CancelError, cancel_job};

pub async fn cancel(path: &std::path::Path, cfg: &Config, args: &CancelArgs) -> Result<(), Fatal> {
    let store = app::connect_store(cfg).await?;
    app::check_schema(&*store).await?;
    // A provider whose key is not in this shell's environment must not stop
    // the local cancel: it is then canceled locally only, and said so.
    let providers = match app::build_providers(cfg, path) {
        Ok(p) => p,
        Err(f) => {
            eprintln!(
                "warning: providers not available ({:#}); the provider will not be asked to cancel",
                f.error
            );
            HashMap::new()
        }
    };
    let operator = format!(
        "cli:{}",
        args.operator
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "operator".into())
    );
    match cancel_job(
        &*store,
        |name| providers.get(name).map(|h| h.provider.clone()),
        &args.id,
        &operator,
        args.reason.as_deref(),
        Clock::system().now_ms(),
    )
    .await
    {
        Ok(r) => {
            if args.json {
                println!("{}", r.to_json());
            } else {
                let asked = match &r.provider_cancel {
                    ProviderCancel::Requested => "provider cancel requested".to_owned(),
                    ProviderCancel::NotSupported => {
                        "provider has no cancel call (canceled locally)".to_owned()
                    }
                    ProviderCancel::Failed(m) => {
                        format!("provider cancel failed: {m} (canceled locally)")
                    }
                    ProviderCancel::NotAsked => "provider not asked".to_owned(),
                };
                println!(
                    "job {} is now canceled (was {}); {asked}",
                    r.job_id, r.canceled.from
                );
            }
            Ok(())
        }
        Err(
            e
            @ (CancelError::NotFound(_) | CancelError::NotOurs { .. } | CancelError::Final { .. }),
        ) => Err(fatal(exit::DATAERR, e)),
        // Try again shortly: the daemon settles a submission on its own.
        Err(e @ CancelError::OutcomeUnknown { .. }) => Err(fatal(exit::TEMPFAIL, e)),
        // As `resolve`: any other store failure is the database's.
        Err(CancelError::Store(e)) => Err(e).context("cancel").exit_with(exit::UNAVAILABLE),
    }
}
