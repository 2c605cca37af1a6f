//! A throwaway PostgreSQL cluster for tests: one per test process, started
//! lazily from the machine's server binaries, on a free loopback port, with
//! durability switched off (tests do not survive power loss anyway).
//!
//! It is removed even when the test process is killed: right after the
//! server starts, a detached reaper shell waits for this process to vanish,
//! then stops the server and deletes its directory.
//!
//! Policy when PostgreSQL cannot be started ([`require`]): with `CI=true`
//! the test panics with the reason; elsewhere a loud banner is printed and
//! the PostgreSQL half of the suite is skipped.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// `pg_waldump --stats=record` over a stretch of WAL ([`TestPg::wal_stats`]).
#[derive(Debug, Clone)]
pub struct WalStats {
    text: String,
}

impl WalStats {
    /// Records of one type (`Transaction/COMMIT`, `Btree/INSERT_LEAF`;
    /// `Total` for all of them), 0 when there were none.
    pub fn records(&self, kind: &str) -> u64 {
        self.field(kind, 1)
    }

    /// Bytes written in all, records and full-page images.
    pub fn bytes(&self) -> u64 {
        // `Total  N  record-bytes [%]  fpi-bytes [%]  combined [100%]`
        self.field("Total", 6)
    }

    /// The whole report, one line per record type.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn field(&self, first: &str, at: usize) -> u64 {
        self.text
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&first)).then(|| f.get(at)?.parse().ok())?
            })
            .unwrap_or(0)
    }
}

/// The running cluster.
#[derive(Debug)]
pub struct TestPg {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres_user: bool,
}

static CLUSTER: OnceLock<Result<TestPg, String>> = OnceLock::new();
static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The cluster, started on first use, or `None` (after a loud banner) when
/// PostgreSQL cannot be started here; panics instead when `CI=true`.
pub fn require() -> Option<&'static TestPg> {
    TestPg::get()
}

impl TestPg {
    /// See [`require`].
    pub fn get() -> Option<&'static TestPg> {
        match CLUSTER.get_or_init(TestPg::start_cluster) {
            Ok(pg) => Some(pg),
            Err(reason) => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("PostgreSQL is required in CI but could not be started: {reason}");
                }
                eprintln!(
                    "\n\
                     ************************************************************\n\
                     *** POSTGRESQL HALF SKIPPED: {reason}\n\
                     *** (install the PostgreSQL server binaries to run it;\n\
                     ***  with CI=true this is a failure)\n\
                     ************************************************************\n"
                );
                None
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port)
    }

    /// A new, empty database with a unique name; returns its URL.
    pub fn fresh_db(&self, name_hint: &str) -> String {
        let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut hint: String = name_hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        hint.truncate(40);
        let name = format!("t_{hint}_{}_{n}", std::process::id());
        let out = Command::new(self.bindir.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg(&name)
            .stdin(Stdio::null())
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    /// Restart the server (an outage of a second or so): open connections
    /// are cut, new ones succeed once this returns.
    pub fn restart(&self) {
        self.pg_ctl(&[
            "restart",
            "-w",
            "-t",
            "60",
            "-m",
            "fast",
            "-o",
            &self.server_opts(),
        ])
        .expect("pg_ctl restart");
    }

    /// Stop the server (connections fail until [`TestPg::start`]).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-w", "-t", "60", "-m", "fast"])
            .expect("pg_ctl stop");
    }

    pub fn start(&self) {
        self.pg_ctl(&["start", "-w", "-t", "60", "-o", &self.server_opts()])
            .expect("pg_ctl start");
    }

    /// What the cluster wrote to its WAL between two positions (from
    /// `pg_current_wal_insert_lsn()`), by record type: `pg_waldump
    /// --stats=record`, run as the server's user. `None` without a report.
    pub fn wal_stats(&self, from: &str, to: &str) -> Option<WalStats> {
        let out = self
            .server_cmd("pg_waldump")
            .arg("-p")
            .arg(self.data().join("pg_wal"))
            .args(["-s", from, "-e", to, "--stats=record"])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        // It may exit non-zero after the report, on a record still being
        // written past `to`: the report is what counts.
        let stats = WalStats {
            text: String::from_utf8_lossy(&out.stdout).into_owned(),
        };
        (stats.records("Total") > 0).then_some(stats)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn server_opts(&self) -> String {
        format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=300",
            self.port,
            self.dir.display()
        )
    }

    /// A server binary, run as `postgres` when we are root (initdb,
    /// postgres and pg_ctl refuse to run as root).
    fn server_cmd(&self, bin: &str) -> Command {
        server_cmd(&self.bindir, bin, self.as_postgres_user)
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let log = self.dir.join("server.log");
        let mut cmd = self.server_cmd("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .args(args);
        run(cmd, "pg_ctl").map_err(|e| format!("{e}\n{}", tail(&log)))
    }

    fn start_cluster() -> Result<TestPg, String> {
        let bindir = find_bindir()?;
        let as_postgres_user = is_root();
        let dir = tempfile::Builder::new()
            .prefix("clawcut-pg-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("create a temp dir under /tmp: {e}"))?
            .keep();
        let port = free_port()?;
        let pg = TestPg {
            bindir,
            dir,
            port,
            as_postgres_user,
        };
        if as_postgres_user {
            let mut chown = Command::new("chown");
            chown.arg("-R").arg("postgres:postgres").arg(&pg.dir);
            run(chown, "chown the cluster dir to postgres")?;
        }
        let mut initdb = pg.server_cmd("initdb");
        initdb
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(pg.data());
        run(initdb, "initdb")?;
        pg.pg_ctl(&["start", "-w", "-t", "60", "-o", &pg.server_opts()])?;
        pg.spawn_reaper()?;
        pg.wait_ready()?;
        Ok(pg)
    }

    /// Stops the server and removes its directory once this process is
    /// gone, however it ends (a killed test run included).
    fn spawn_reaper(&self) -> Result<(), String> {
        let pg_ctl = self.bindir.join("pg_ctl");
        let stop = if self.as_postgres_user {
            format!(
                "runuser -u postgres -- '{}' stop -m immediate -D '{}'",
                pg_ctl.display(),
                self.data().display()
            )
        } else {
            format!(
                "'{}' stop -m immediate -D '{}'",
                pg_ctl.display(),
                self.data().display()
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.display(),
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C or a group kill aimed at the
            // test run must not take the reaper with it.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn the cluster reaper: {e}"))?;
        Ok(())
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(self.bindir.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "server did not accept connections within 30s\n{}",
                    tail(&self.dir.join("server.log"))
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn server_cmd(bindir: &Path, bin: &str, as_postgres_user: bool) -> Command {
    if as_postgres_user {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bindir.join(bin));
        c
    } else {
        Command::new(bindir.join(bin))
    }
}

fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// `pg_config --bindir` when it holds the server binaries, else the newest
/// `/usr/lib/postgresql/<major>/bin`.
fn find_bindir() -> Result<PathBuf, String> {
    let has_server = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    has_server(&bin).then_some((major, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "no PostgreSQL server binaries (initdb, pg_ctl) found via pg_config --bindir \
         or /usr/lib/postgresql/*/bin"
            .to_owned()
    })
}

/// Effective uid 0, read from /proc (no libc dependency).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("find a free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("find a free port: {e}"))
}
