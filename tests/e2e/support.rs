//! Driving the real binary: write a config, start `clawcut-worker`, wait on
//! the database, signal it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use clawcut_test_support::db::{AppDb, NewJob};
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_clawcut-worker");
pub const KEY: &str = "sk-e2e-test-key-0123456789";
pub const ADMIN_TOKEN: &str = "adm-e2e-token-9f8e7d6c5b4a";
/// Every secret the suite hands a daemon; no daemon log may contain one.
pub const SECRETS: [&str; 2] = [KEY, ADMIN_TOKEN];

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A free port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A temp dir holding a database, a media dir and a config file.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub db_url: String,
    pub config: PathBuf,
}

impl Env {
    /// A fresh SQLite database (migrated by the binary) and a config whose
    /// `openai` provider points at `base_url`. `extra` is appended verbatim
    /// inside `[reconcile]`-free TOML (e.g. `[media]\nmax_bytes = "1KiB"`).
    pub fn sqlite(base_url: &str, extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite://{}", dir.path().join("clawcut.db").display());
        Env::with_url(dir, db_url, base_url, extra)
    }

    pub fn with_url(dir: tempfile::TempDir, db_url: String, base_url: &str, extra: &str) -> Env {
        let config = dir.path().join("config.toml");
        let media = dir.path().join("media");
        let reconcile = if extra.contains("[reconcile]") {
            String::new()
        } else {
            "[reconcile]\ninterval = \"300ms\"\nmin_age = \"1s\"\nlease_ttl = \"5s\"\nshutdown_grace = \"2s\"\nconcurrency = 4\n".to_owned()
        };
        let backoff = if extra.contains("[backoff]") {
            String::new()
        } else {
            "[backoff]\ninitial = \"100ms\"\nmax = \"1s\"\nmax_attempts = 5\n".to_owned()
        };
        let media_section = if extra.contains("[media]") {
            String::new()
        } else {
            // A short stall limit, so the sweep of a killed run's temp files
            // (stall limit + 10 s) comes soon after a restart.
            format!(
                "[media]\ndir = \"{}\"\nstall_timeout = \"5s\"\nstall_min_bytes = \"1KiB\"\n",
                media.display()
            )
        };
        std::fs::write(
            &config,
            format!(
                "[database]\nurl = \"{db_url}\"\n\n{reconcile}\n{backoff}\n{media_section}\n[http]\nlisten = \"\"\n\n[providers.openai]\nkind = \"openai\"\nbase_url = \"{base_url}\"\napi_key_env = \"E2E_OPENAI_KEY\"\ntimeout = \"2s\"\n\n{extra}\n"
            ),
        )
        .unwrap();
        Env {
            dir,
            db_url,
            config,
        }
    }

    pub fn media(&self) -> PathBuf {
        self.dir.path().join("media")
    }

    /// Replace `from` with `to` in the config file.
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "config lacks {from:?}");
        std::fs::write(&self.config, text.replacen(from, to, 1)).unwrap();
    }

    /// Turn the HTTP listener on, on a free loopback port, with the admin
    /// token in `E2E_ADMIN`; returns the port.
    pub fn serve_admin_api(&self) -> u16 {
        let port = free_port();
        self.edit_config(
            "[http]\nlisten = \"\"",
            &format!("[http]\nlisten = \"127.0.0.1:{port}\"\nadmin_token_env = \"E2E_ADMIN\""),
        );
        port
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config).args(args);
        c.env("E2E_OPENAI_KEY", KEY)
            .env_remove("RUST_LOG")
            .env_remove("CLAWCUT_WORKER_ADMIN_TOKEN")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC");
        c
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn migrate(&self) {
        let out = self.output(&["migrate"]);
        assert!(
            out.status.success(),
            "migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start `run` with its logs going to a file in the temp dir.
    pub fn start(&self, name: &str) -> Daemon {
        self.start_with(name, |_| {})
    }

    pub fn start_with(&self, name: &str, f: impl FnOnce(&mut Command)) -> Daemon {
        let log = self.dir.path().join(format!("{name}.log"));
        let mut cmd = self.cmd(&["run"]);
        f(&mut cmd);
        let child = cmd
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }
}

pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    pub fn kill9(mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// Wait until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str, within: Duration) {
        eventually(within, needle, || async {
            self.logs().contains(needle).then_some(())
        })
        .await;
    }

    /// Wait for the process to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Every daemon the suite starts is scanned for the secrets it was given.
        if !std::thread::panicking() {
            let logs = self.logs();
            for s in SECRETS {
                assert!(
                    !logs.contains(s),
                    "a secret leaked into {}",
                    self.log.display()
                );
            }
            // A log file is not a terminal: no colour codes in it.
            assert!(
                !logs.contains('\u{1b}'),
                "ANSI escape codes in {}",
                self.log.display()
            );
        }
    }
}

/// Poll `f` until it returns `Some`, or panic with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `n` stranded jobs `job_<i>` of `scene_<i>` / `ver_<i>`, running at the
/// provider as `video_<i>`; their ids, in order.
pub async fn seed_jobs(db: &AppDb, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("job_{i}");
        seed_job(
            db,
            &id,
            &format!("scene_{i}"),
            &format!("ver_{i}"),
            &format!("video_{i}"),
            now_ms(),
        )
        .await;
        ids.push(id);
    }
    ids
}

/// A stranded video job, as the app leaves it: running at the provider,
/// untouched for ten minutes.
pub async fn seed_job(
    db: &AppDb,
    job: &str,
    scene: &str,
    version: &str,
    provider_job_id: &str,
    version_created_at: i64,
) {
    let t = now_ms() - 600_000;
    let _ = db.insert_scene(scene, "a scene").await;
    db.insert_version(version, scene, version_created_at)
        .await
        .unwrap();
    db.insert_job(&NewJob {
        id: job.into(),
        kind: "video".into(),
        provider: "openai".into(),
        scene_id: Some(scene.into()),
        scene_version_id: Some(version.into()),
        request: r#"{"prompt":"p","model":"sora-2","seconds":"4","size":"1280x720"}"#.into(),
        status: "processing".into(),
        provider_job_id: Some(provider_job_id.into()),
        created_at: t,
        updated_at: t,
    })
    .await
    .unwrap();
}

pub async fn all_final(db: &AppDb, ids: &[String]) -> bool {
    for id in ids {
        let j = db.job(id).await.unwrap().unwrap();
        if !matches!(
            j.status.as_str(),
            "completed" | "failed" | "canceled" | "needs_operator"
        ) {
            return false;
        }
    }
    true
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The e2e tests that use PostgreSQL share one cluster, and some stop or
/// restart it: they take turns.
pub async fn pg_turn() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The backend an e2e scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh env on `backend` for a provider at `base_url` (`extra` as in
/// [`Env::sqlite`]); `None` when PostgreSQL is missing outside CI (a loud
/// skip in `pg`).
pub fn env_for(backend: Backend, name: &str, base_url: &str, extra: &str) -> Option<Env> {
    match backend {
        Backend::Sqlite => Some(Env::sqlite(base_url, extra)),
        Backend::Postgres => {
            let pg = clawcut_test_support::pg::require()?;
            let url = pg.fresh_db(name);
            Some(Env::with_url(
                tempfile::tempdir().unwrap(),
                url,
                base_url,
                extra,
            ))
        }
    }
}

/// Each scenario `async fn name(backend: Backend)` runs as `name::sqlite`
/// and `name::postgres` (the PostgreSQL half takes its turn on the shared
/// cluster).
macro_rules! on_both_backends {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                super::$scenario($crate::support::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                let _turn = $crate::support::pg_turn().await;
                super::$scenario($crate::support::Backend::Postgres).await;
            }
        }
    };
}
pub(crate) use on_both_backends;
