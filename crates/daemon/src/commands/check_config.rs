//! `clawcut-worker check-config`: load and validate the config and the
//! environment variables it names; exit 78 naming the file and key when
//! anything is wrong.

use std::path::Path;

use crate::app;
use crate::config::Config;
use crate::exit::Fatal;

pub fn check_config(path: &Path, cfg: &Config) -> Result<(), Fatal> {
    // Building the providers reads every API key variable the config names.
    app::build_providers(cfg, path)?;
    if !cfg.http.listen.is_empty() {
        let token = std::env::var(&cfg.http.admin_token_env)
            .ok()
            .filter(|t| !t.is_empty());
        app::require_loopback_or_token(
            &cfg.http.listen,
            &cfg.http.admin_token_env,
            token.as_deref(),
        )?;
    }
    println!("config {} is valid", path.display());
    println!("  database: {}", app::redact_url(&cfg.database.url));
    println!(
        "  providers: {}",
        cfg.providers.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}
