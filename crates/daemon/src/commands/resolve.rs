//! `clawcut-worker resolve ID --resubmit|--fail`: an operator's decision
//! on a `needs_operator` job, with an audit event naming the operator.

use anyhow::Context;
use clawcut_store::{Resolution, StoreError};

use crate::app;
use crate::cli::ResolveArgs;
use crate::config::Config;
use crate::exit::{self, ExitCode, Fatal, fatal};
use crate::report::error_chain;
use crate::runtime::clock::Clock;

pub async fn resolve(cfg: &Config, args: &ResolveArgs) -> Result<(), Fatal> {
    let store = app::connect_store(cfg).await?;
    app::check_schema(&*store).await?;
    let resolution = if args.fail {
        Resolution::Fail
    } else {
        Resolution::Resubmit
    };
    let operator = format!(
        "cli:{}",
        args.operator
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "operator".into())
    );
    match store
        .resolve(
            &args.id,
            resolution,
            &operator,
            args.reason.as_deref(),
            Clock::system().now_ms(),
        )
        .await
    {
        Ok(status) => {
            println!("job {} is now {}", args.id, status);
            Ok(())
        }
        Err(e @ StoreError::NotResolvable { .. }) => Err(fatal(exit::DATAERR, error_chain(&e))),
        Err(e) => Err(e).context("resolve").exit_with(exit::UNAVAILABLE),
    }
}
