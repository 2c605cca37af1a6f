//! Databases for tests: a temp SQLite file ([`temp_sqlite`]), and, from
//! `clawcut-simulator`, [`AppDb`], which writes rows exactly as the ClawCut
//! app does and reads back what the daemon did, on either backend.

#[doc(inline)]
pub use clawcut_simulator::db::*;

/// A fresh directory and the URL of a (not yet created) SQLite database in
/// it. Keep the `TempDir` alive as long as the database is used.
pub fn temp_sqlite() -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix("clawcut-sqlite-")
        .tempdir()
        .expect("create a temp dir for SQLite");
    let path = dir.path().join("clawcut.db");
    let url = format!("sqlite://{}", path.display());
    (dir, url)
}
