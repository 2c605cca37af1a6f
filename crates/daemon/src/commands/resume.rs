//! `clawcut-worker resume-provider NAME`: an operator lifts a provider's
//! pause at once (after fixing a key or topping up an account) instead of
//! waiting for the next probe. Every replica sees the row gone at its next
//! claim; each logs "provider resumed (recorded in the database)".

use anyhow::Context;
use serde_json::json;

use crate::app;
use crate::cli::ResumeProviderArgs;
use crate::config::Config;
use crate::exit::{self, ExitCode, Fatal, fatal};
use crate::report::pause_json;
use crate::runtime::clock::Clock;

pub async fn resume_provider(cfg: &Config, args: &ResumeProviderArgs) -> Result<(), Fatal> {
    let store = app::connect_store(cfg).await?;
    app::check_schema(&*store).await?;
    let now = Clock::system().now_ms();
    let operator = args
        .operator
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "operator".into());
    let lifted = crate::worker::health::resume_by_operator(&*store, &args.name, &operator)
        .await
        .context("resume the provider")
        .exit_with(exit::UNAVAILABLE)?;
    let Some(pause) = lifted else {
        return Err(fatal(
            exit::DATAERR,
            format!("provider {:?} is not paused", args.name),
        ));
    };
    if args.json {
        let out = json!({
            "provider": args.name,
            "resumed": true,
            "operator": operator,
            "was": pause_json(&pause, now),
        });
        println!("{out}");
    } else {
        println!(
            "provider {} resumed by {operator} (it was paused for {}: {}); its jobs are claimed again",
            args.name, pause.cause, pause.reason
        );
    }
    Ok(())
}
