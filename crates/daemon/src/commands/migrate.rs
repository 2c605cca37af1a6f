//! `clawcut-worker migrate`: create or upgrade the schema.

use anyhow::Context;

use crate::app;
use crate::config::Config;
use crate::exit::{self, ExitCode, Fatal};

pub async fn migrate(cfg: &Config) -> Result<(), Fatal> {
    let store = app::connect_store(cfg).await?;
    let applied = store
        .migrate()
        .await
        .context("migrate the schema")
        .exit_with(exit::UNAVAILABLE)?;
    let st = store
        .schema_status()
        .await
        .context("read the schema version")
        .exit_with(exit::UNAVAILABLE)?;
    if applied.is_empty() {
        println!("schema is up to date (version {})", st.current);
    } else {
        println!(
            "applied migrations {applied:?}; schema is at version {}",
            st.current
        );
    }
    Ok(())
}
