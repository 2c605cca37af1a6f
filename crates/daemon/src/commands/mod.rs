//! The one-shot commands, one module each: `migrate`, `check-config`,
//! `status`, `reconcile`, `resolve`, `cancel`, `resume-provider`, `backup`, `restore` (the last two on
//! the backup directory format of [`crate::archive`]). Each prints for a person on stdout (or
//! JSON with `--json`) and returns a sysexits code through [`crate::exit`].

mod backup;
mod cancel;
mod check_config;
mod migrate;
mod reconcile;
mod resolve;
mod restore;
mod resume;
mod status;

pub use backup::backup;
pub use cancel::cancel;
pub use check_config::check_config;
pub use migrate::migrate;
pub use reconcile::reconcile;
pub use resolve::resolve;
pub use restore::restore;
pub use resume::resume_provider;
pub use status::status;
