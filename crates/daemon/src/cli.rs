//! The command line. `--help` works on every command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::DEFAULT_PATH;

#[derive(Debug, Parser)]
#[command(
    name = "clawcut-worker",
    version,
    about = "Makes ClawCut's AI video-generation jobs durable: claims stranded jobs with leases, polls the provider, downloads the outputs and records them, backing off durably when anything fails."
)]
pub struct Cli {
    /// The config file.
    #[arg(long, global = true, env = "CLAWCUT_WORKER_CONFIG", default_value = DEFAULT_PATH)]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: a pass at startup, then one per interval, until SIGTERM.
    Run,
    /// Create or upgrade the database schema.
    Migrate,
    /// Load and validate the config (and the environment variables it names); exit 78 when wrong.
    CheckConfig,
    /// Show eligible, stranded, running and needs_operator jobs, with ages.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run one pass now and print what happened to each job.
    Reconcile(ReconcileArgs),
    /// An operator's decision on a needs_operator job.
    Resolve(ResolveArgs),
    /// An operator stops a job: the provider's own cancel call where it has
    /// one, then `canceled` with an audit event naming the operator.
    Cancel(CancelArgs),
    /// Lift a provider's pause now (after fixing its key or topping up the
    /// account) instead of waiting for the next probe.
    ResumeProvider(ResumeProviderArgs),
    /// A consistent snapshot of the database and every media file a ready
    /// scene version points at, with a checksummed manifest, taken while the
    /// daemon runs. Incremental: content DIR already holds is not copied again.
    Backup(BackupArgs),
    /// Check a backup (--verify), or restore it into a new database and media dir.
    Restore(RestoreArgs),
    /// A newcomer's first run: a simulated provider on 127.0.0.1, a fresh
    /// SQLite database seeded with stranded jobs, the real loop until they
    /// settle, and a table of what happened. Needs no account and no config.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Just this job, now (ignores min_age and the backoff schedule; a live lease still wins).
    #[arg(long)]
    pub job: Option<String>,
    /// At most this many jobs (default: reconcile.batch_size).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The ai_jobs.id.
    pub id: String,
    /// Send the job to the provider again (back to queued, provider id cleared).
    #[arg(long, conflicts_with = "fail", required_unless_present = "fail")]
    pub resubmit: bool,
    /// Mark the job failed.
    #[arg(long)]
    pub fail: bool,
    /// Who decided, for the audit event (default: $USER).
    #[arg(long)]
    pub operator: Option<String>,
    /// Why, for the audit event.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct ResumeProviderArgs {
    /// The provider's name (its `[providers.NAME]` table, `ai_jobs.provider`).
    pub name: String,
    /// Who decided, for the log (default: $USER).
    #[arg(long)]
    pub operator: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The ai_jobs.id.
    pub id: String,
    /// Why, for last_error and the audit event.
    #[arg(long)]
    pub reason: Option<String>,
    /// Who decided, for the audit event (default: $USER).
    #[arg(long)]
    pub operator: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup directory (created if missing): `objects/`, `backups/<ID>/`.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// After the backup, remove older backups beyond --keep and the content
    /// no kept backup needs.
    #[arg(long, requires = "keep")]
    pub prune: bool,
    /// With --prune: how many backups to keep, newest first (this one included).
    #[arg(long, value_name = "N", requires = "prune", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["verify", "database"])))]
pub struct RestoreArgs {
    /// The backup directory `backup --to` wrote.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// Which backup (default: the newest complete one).
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// Only check: every checksum, and that every ready scene version's files
    /// are in the backup. Writes nothing; exit 0 only when all hold.
    #[arg(long, conflicts_with_all = ["database", "media_dir"])]
    pub verify: bool,
    /// Restore into this new (or empty) database: sqlite:///path or postgres://...
    #[arg(long, value_name = "URL", requires = "media_dir")]
    pub database: Option<String>,
    /// Restore the media files into this new (or empty) directory.
    #[arg(long, value_name = "DIR", requires = "database")]
    pub media_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to create the database and media (default: a new temp directory, kept afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Give up waiting for the jobs to settle after this long.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}
