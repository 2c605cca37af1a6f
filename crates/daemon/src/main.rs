//! `clawcut-worker`: the binary. Thin by design: parse the command line, load
//! the config, hand over to a command module, turn its failure into a
//! sysexits code.
//!
//! Reading order, top-down: `daemon` (the `run` command: the scheduler and
//! its slots, signals, reload), `worker` (one claimed row's step: poll,
//! outputs, submit, triage), `http` (probes, admin API, webhooks),
//! `commands` (the one-shot commands, `archive` for `backup` and
//! `restore`), `state` (what a running daemon's
//! parts share), `runtime` (clock, lifecycle, health, wake, systemd), `app`
//! (turning a config into parts), `report` (outcomes), `config`,
//! `metrics`, `demo`.
//!
//! Module dependencies point one way, without cycles: `main` →
//! `daemon`/`commands`/`demo` → `http` → `state` → `worker` → `runtime` →
//! `report`/`metrics`/`config`; `commands` → `archive` (the backup
//! directory's format, which imports only `exit`); `app` builds parts for all of them and
//! imports only `worker`, `runtime`, `config`, `metrics` and `exit`.

mod app;
mod archive;
mod cli;
mod commands;
mod config;
mod daemon;
mod demo;
mod exit;
mod http;
mod media;
mod metrics;
#[cfg(test)]
mod props;
mod report;
mod runtime;
mod state;
mod worker;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::exit::Fatal;

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return std::process::ExitCode::from(exit::SOFTWARE);
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(f) => {
            let msg = format!("{:#}", f.error);
            eprintln!("error: {}", clawcut_core::redact::redact(&msg));
            std::process::ExitCode::from(f.code)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), Fatal> {
    // Every command registers the config's secrets with the redaction rule
    // as soon as it has the config, before it logs or prints anything.
    let load = || {
        let cfg = Config::load(&cli.config).map_err(|e| exit::fatal(exit::CONFIG, e))?;
        crate::app::register_secrets(&cfg, |v| std::env::var(v).ok());
        Ok::<_, Fatal>(cfg)
    };
    match &cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Run => daemon::run(&cli.config, load()?).await,
        Command::Migrate => commands::migrate(&load()?).await,
        Command::CheckConfig => commands::check_config(&cli.config, &load()?),
        Command::Status { json } => commands::status(&load()?, *json).await,
        Command::Reconcile(args) => commands::reconcile(&cli.config, &load()?, args).await,
        Command::Resolve(args) => commands::resolve(&load()?, args).await,
        Command::Cancel(args) => commands::cancel(&cli.config, &load()?, args).await,
        Command::ResumeProvider(args) => commands::resume_provider(&load()?, args).await,
        Command::Backup(args) => commands::backup(&load()?, args).await,
        // The config only serves to refuse the live database and media dir,
        // so a restore on a machine without one still works.
        Command::Restore(args) => {
            let live = if cli.config.exists() {
                Some(load()?)
            } else {
                None
            };
            commands::restore(live.as_ref(), &cli.config, args).await
        }
    }
}
