//! Command line and environment configuration (every flag is also
//! `SQLARENA_<FLAG>`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// sqlarena coordinator: keeps challenges, attempts and jobs, and hands work
/// to graders.
#[derive(Debug, Parser)]
#[command(name = "coordinator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: Config,
}

/// Subcommands; without one the coordinator serves.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serves the API (the default).
    Serve(Box<Config>),
    /// Creates an admin user in the store and exits.
    CreateAdmin(CreateAdmin),
    /// Brings the store's schema up to date and exits (`--check`: only
    /// reports what that would change).
    Migrate(Migrate),
    /// Writes a consistent copy of an SQLite store (`VACUUM INTO`) and exits.
    Backup(Backup),
}

/// `coordinator migrate`.
#[derive(Debug, Clone, Args)]
pub struct Migrate {
    /// Store URI: sqlite://PATH or mongodb://HOST:PORT/DB.
    #[arg(
        long,
        env = "SQLARENA_STORE",
        hide_env_values = true,
        default_value = "sqlite://data/sqlarena.db"
    )]
    pub store: String,
    /// Reports what the migration would change and leaves the store as it is.
    #[arg(long)]
    pub check: bool,
}

/// `coordinator backup`.
#[derive(Debug, Clone, Args)]
pub struct Backup {
    /// Store URI: sqlite://PATH (a MongoDB store is backed up with mongodump).
    #[arg(
        long,
        env = "SQLARENA_STORE",
        hide_env_values = true,
        default_value = "sqlite://data/sqlarena.db"
    )]
    pub store: String,
    /// The backup file to write (must not exist).
    #[arg(long)]
    pub to: std::path::PathBuf,
}

/// `coordinator create-admin`.
#[derive(Debug, Clone, Args)]
pub struct CreateAdmin {
    /// Store URI: sqlite://PATH or mongodb://HOST:PORT/DB.
    #[arg(
        long,
        env = "SQLARENA_STORE",
        hide_env_values = true,
        default_value = "sqlite://data/sqlarena.db"
    )]
    pub store: String,
    #[arg(long, env = "SQLARENA_EMAIL")]
    pub email: String,
    /// The admin's password. Prefer the environment variable or stdin: a
    /// command line is visible to every user of the machine (`ps`). Without
    /// either, the password is read from the first line of stdin.
    #[arg(long, env = "SQLARENA_ADMIN_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    #[arg(long, env = "SQLARENA_FULL_NAME", default_value = "Administrator")]
    pub full_name: String,
}

/// Settings of a serving coordinator.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "SQLARENA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Store URI: sqlite://PATH (embedded, default) or mongodb://HOST:PORT/DB.
    #[arg(
        long,
        env = "SQLARENA_STORE",
        hide_env_values = true,
        default_value = "sqlite://data/sqlarena.db"
    )]
    pub store: String,
    /// Lets anyone register as a professor (otherwise an admin invite is needed).
    #[arg(long, env = "SQLARENA_ALLOW_PROFESSOR_SIGNUP")]
    pub allow_professor_signup: bool,
    /// A cluster token to accept from graders, seeded at start for simple setups.
    #[arg(long, env = "SQLARENA_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
    /// Email of an admin to create at first start (with --admin-password).
    #[arg(long, env = "SQLARENA_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Password of the admin created at first start.
    #[arg(long, env = "SQLARENA_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// How often graders heartbeat.
    #[arg(long, env = "SQLARENA_HEARTBEAT_INTERVAL_MS", default_value_t = 2000)]
    pub heartbeat_interval_ms: u64,
    /// A grader is declared dead after this many missed heartbeats.
    #[arg(long, env = "SQLARENA_MISSED_HEARTBEATS", default_value_t = 3)]
    pub missed_heartbeats: u32,
    /// A job that was leased this many times without a result fails.
    #[arg(long, env = "SQLARENA_MAX_TRIES", default_value_t = 3)]
    pub max_tries: u32,
    /// Deadline of an init job's lease.
    #[arg(long, env = "SQLARENA_INIT_TIMEOUT_MS", default_value_t = 300_000)]
    pub init_timeout_ms: u64,
    /// Deadline of a fast-lane (FE) attempt job's lease.
    #[arg(long, env = "SQLARENA_FAST_TIMEOUT_MS", default_value_t = 300_000)]
    pub fast_timeout_ms: u64,
    /// Deadline of a slow-lane (SE) attempt job's lease.
    #[arg(long, env = "SQLARENA_SLOW_TIMEOUT_MS", default_value_t = 3_600_000)]
    pub slow_timeout_ms: u64,
    /// Largest request body accepted, in bytes (413 above).
    #[arg(long, env = "SQLARENA_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Attempts a user may have PENDING or RUNNING at once (429 above).
    #[arg(long, env = "SQLARENA_MAX_UNFINISHED_ATTEMPTS", default_value_t = 5)]
    pub max_unfinished_attempts: u64,
    /// Lifetime of a login token, in hours.
    #[arg(long, env = "SQLARENA_SESSION_TTL_HOURS", default_value_t = 168)]
    pub session_ttl_hours: i64,
    /// How long finished jobs are kept after they were queued (their
    /// results live on in challenges and attempts): `30d`, `12h`, `90m`,
    /// `600s`; `0` keeps them forever. A background compaction deletes
    /// older ones.
    #[arg(long, env = "SQLARENA_JOB_RETENTION", default_value = "7d", value_parser = parse_retention)]
    pub job_retention: Duration,
    /// Lifetime of an invite code, in hours.
    #[arg(long, env = "SQLARENA_INVITE_TTL_HOURS", default_value_t = 168)]
    pub invite_ttl_hours: i64,
    /// Sign-in and registration attempts one client (IP address) may make
    /// at once before it is held to `--auth-client-per-minute` (429 above).
    #[arg(long, env = "SQLARENA_AUTH_CLIENT_BURST", default_value_t = 120)]
    pub auth_client_burst: u32,
    /// Sustained sign-in and registration attempts per client and minute.
    #[arg(long, env = "SQLARENA_AUTH_CLIENT_PER_MINUTE", default_value_t = 60)]
    pub auth_client_per_minute: u32,
    /// Failed sign-ins one account may take at once before it is held to
    /// `--auth-account-per-minute` (429 above).
    #[arg(long, env = "SQLARENA_AUTH_ACCOUNT_BURST", default_value_t = 10)]
    pub auth_account_burst: u32,
    /// Sustained failed sign-ins per account and minute.
    #[arg(long, env = "SQLARENA_AUTH_ACCOUNT_PER_MINUTE", default_value_t = 4)]
    pub auth_account_per_minute: u32,
    /// How long a sign-in or registration refused by those limits is held
    /// before its 429 (at most its `Retry-After`), so clients that ignore
    /// `Retry-After` cannot flood the server with refusals.
    #[arg(long, env = "SQLARENA_AUTH_REFUSAL_DELAY_MS", default_value_t = 1000)]
    pub auth_refusal_delay_ms: u64,
    /// Password hashes computed at once (each takes 19 MiB and a core for
    /// tens of milliseconds); the default, half the cores, leaves the other
    /// half to serve requests during a login flood.
    #[arg(long, env = "SQLARENA_MAX_CONCURRENT_HASHES", default_value_t = default_hash_slots())]
    pub max_concurrent_hashes: usize,
    /// Password hashes that may wait for a turn; more are refused at once
    /// with 503 and `Retry-After`.
    #[arg(long, env = "SQLARENA_MAX_QUEUED_HASHES", default_value_t = 16)]
    pub max_queued_hashes: usize,
    /// Requires `Authorization: Bearer TOKEN` on `/metrics`.
    #[arg(long, env = "SQLARENA_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Serves `/metrics` on this address instead of `--listen` (e.g. a
    /// private interface); port 0 picks a free port (logged).
    #[arg(long, env = "SQLARENA_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// How long DEAD graders stay in the admin lists, in seconds.
    #[arg(
        long,
        env = "SQLARENA_DEAD_GRADER_RETENTION_SECS",
        default_value_t = 86_400
    )]
    pub dead_grader_retention_secs: u64,
    /// A client must send a request's headers within this time, or the
    /// connection is closed.
    #[arg(long, env = "SQLARENA_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Longest a request may take, body included (503 above); the grader's
    /// long-poll lease is exempt (it waits at most 30 s by itself).
    #[arg(long, env = "SQLARENA_REQUEST_TIMEOUT_MS", default_value_t = 60_000)]
    pub request_timeout_ms: u64,
    /// How often the reaper looks for dead graders and expired leases.
    #[arg(long, env = "SQLARENA_REAPER_INTERVAL_MS", default_value_t = 250)]
    pub reaper_interval_ms: u64,
    /// Logs as JSON lines.
    #[arg(long, env = "SQLARENA_JSON_LOGS")]
    pub json_logs: bool,
    /// A run's webhook is retried (with exponential backoff) for this long
    /// before postprocessing gives up on it, in seconds.
    #[arg(long, env = "SQLARENA_WEBHOOK_RETRY_SECS", default_value_t = 3600)]
    pub webhook_retry_secs: u64,
    /// The wait before a webhook's second try, doubled after each failed
    /// try (at most 5 minutes), in milliseconds.
    #[arg(long, env = "SQLARENA_WEBHOOK_BACKOFF_MS", default_value_t = 1000)]
    pub webhook_backoff_ms: u64,
    /// Leases ignore which challenge bundles graders hold: the oldest job
    /// goes to whichever grader asks first (to measure what affinity buys).
    #[arg(long, env = "SQLARENA_NO_AFFINITY")]
    pub no_affinity: bool,
    /// How long a queued attempt is kept for graders that hold its
    /// challenge's bundle (an ALIVE one does) before any grader may take
    /// it; 0 lets any grader take any job at once (graders still prefer
    /// their own bundles).
    #[arg(long, env = "SQLARENA_AFFINITY_WAIT_MS", default_value_t = 50)]
    pub affinity_wait_ms: u64,
    /// A grader takes a job of a bundle it holds before an older job it
    /// would have to build only while the older one was queued at most
    /// this much earlier: the most affinity may reorder the queue.
    #[arg(long, env = "SQLARENA_AFFINITY_MAX_REORDER_MS", default_value_t = 2000)]
    pub affinity_max_reorder_ms: u64,
    /// Where the coordinator writes files (exports under `exports/`);
    /// by default the SQLite store's directory, or `data` with MongoDB.
    #[arg(long, env = "SQLARENA_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// How long a finished export's file is kept before it is deleted
    /// (a number and a unit s, m, h or d).
    #[arg(long, env = "SQLARENA_EXPORT_TTL", default_value = "24h", value_parser = parse_retention)]
    pub export_ttl: Duration,
    /// Rows an export reads from the store and writes per page (a pause
    /// or cancel takes effect between two pages).
    #[arg(long, env = "SQLARENA_EXPORT_PAGE_ROWS", default_value_t = crate::exports::PAGE_ROWS)]
    pub export_page_rows: u32,
    /// A wait between two pages of an export, in milliseconds, so a big
    /// export leaves the store to live traffic (0: none).
    #[arg(long, env = "SQLARENA_EXPORT_PAGE_PAUSE_MS", default_value_t = 0)]
    pub export_page_pause_ms: u64,
}

/// Parses a retention: a whole number with a unit `s`, `m`, `h` or `d`
/// (`0` alone means forever, as a zero duration).
fn parse_retention(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text.len().saturating_sub(1);
    let (number, unit) = text.split_at(split);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?}: give a number and a unit s, m, h or d (e.g. 7d), or 0"
            ))
        }
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: {number:?} is not a whole number"))?;
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Half the available cores, at least one.
fn default_hash_slots() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| (cores.get() / 2).max(1))
}

impl Config {
    /// A configuration with every default, for tests and benchmarks.
    pub fn for_store(store: &str) -> Config {
        let cli = Cli::parse_from(["coordinator", "--store", store, "--listen", "127.0.0.1:0"]);
        cli.serve
    }

    /// Returns the directory the coordinator writes files to.
    pub fn data_dir(&self) -> std::path::PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        let sqlite_dir = self
            .store
            .strip_prefix("sqlite://")
            .map(|location| location.split('?').next().unwrap_or(location))
            .and_then(|path| std::path::Path::new(path).parent())
            .filter(|parent| !parent.as_os_str().is_empty());
        sqlite_dir.map_or_else(
            || std::path::PathBuf::from("data"),
            std::path::Path::to_path_buf,
        )
    }

    /// Returns the heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// Returns how long DEAD graders stay listed.
    pub fn dead_grader_retention(&self) -> Duration {
        Duration::from_secs(self.dead_grader_retention_secs)
    }

    /// Returns how long a client may take to send a request's headers.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms.max(1))
    }

    /// Returns how long a request may take.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }

    /// Returns how long a silent grader keeps its leases.
    pub fn grader_timeout(&self) -> Duration {
        self.heartbeat_interval() * self.missed_heartbeats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentions_read_like_people_write_them() {
        assert_eq!(parse_retention("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_retention("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_retention("0"), Ok(Duration::ZERO));
        for bad in ["", "7", "d", "-1d", "1.5h", "7w"] {
            assert!(parse_retention(bad).is_err(), "{bad:?} accepted");
        }
    }
}
