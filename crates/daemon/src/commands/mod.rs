//! The one-shot commands, one module each: `migrate`, `check-config`,
//! `status`, `reconcile`, `resolve`. Each prints for a person on stdout (or
//! JSON with `--json`) and returns a sysexits code through [`crate::exit`].

mod check_config;
mod migrate;
mod reconcile;
mod resolve;
mod status;

pub use check_config::check_config;
pub use migrate::migrate;
pub use reconcile::reconcile;
pub use resolve::resolve;
pub use status::status;
