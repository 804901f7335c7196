//! The grader's command line. Every flag can also be set through the
//! environment as `SQLARENA_<FLAG>` (`--cluster-token` is
//! `SQLARENA_CLUSTER_TOKEN`).

use std::time::Duration;

use clap::Parser;
use sqlarena_common::Lane;

use crate::sandbox::Limits;

/// Command line of the `grader` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "grader",
    version,
    about = "sqlarena grader: runs SQL attempts in a hardened PostgreSQL sandbox"
)]
pub struct Config {
    /// Base URL of the coordinator.
    #[arg(
        long,
        env = "SQLARENA_COORDINATOR",
        default_value = "http://127.0.0.1:8080"
    )]
    pub coordinator: String,
    /// Cluster token used to register.
    #[arg(long, env = "SQLARENA_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: String,
    /// Admin URL of the local PostgreSQL.
    #[arg(
        long,
        env = "SQLARENA_POSTGRES",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres: String,
    /// Lanes to take jobs from.
    #[arg(long, env = "SQLARENA_LANES", value_delimiter = ',', default_value = "init,fast,slow", value_parser = parse_lane)]
    pub lanes: Vec<Lane>,
    /// Jobs run at the same time.
    #[arg(long, env = "SQLARENA_SLOTS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub slots: u32,
    /// Name of this grader (default: the hostname).
    #[arg(long, env = "SQLARENA_NAME")]
    pub name: Option<String>,
    /// Challenge bundles kept built.
    #[arg(long, env = "SQLARENA_CACHE_SIZE", default_value_t = 32)]
    pub cache_size: usize,
    /// Statement timeout of the fast lane, in milliseconds.
    #[arg(long, env = "SQLARENA_FAST_TIMEOUT_MS", default_value_t = 5_000)]
    pub fast_timeout_ms: u64,
    /// Statement timeout of the slow lane, in milliseconds.
    #[arg(long, env = "SQLARENA_SLOW_TIMEOUT_MS", default_value_t = 60_000)]
    pub slow_timeout_ms: u64,
    /// Statement timeout of init jobs, in milliseconds.
    #[arg(long, env = "SQLARENA_INIT_TIMEOUT_MS", default_value_t = 60_000)]
    pub init_timeout_ms: u64,
    /// Most rows a query may return.
    #[arg(long, env = "SQLARENA_MAX_ROWS", default_value_t = 100_000)]
    pub max_rows: usize,
    /// Most bytes a query may return (e.g. 16MiB, 500KB, 1048576).
    #[arg(long, env = "SQLARENA_MAX_BYTES", default_value = "16MiB", value_parser = parse_size)]
    pub max_bytes: usize,
    /// Most bytes one value of a result may take once decoded.
    #[arg(long, env = "SQLARENA_MAX_CELL_BYTES", default_value = "1MiB", value_parser = parse_size)]
    pub max_cell_bytes: usize,
    /// Longest one test case of an attempt may go on timing, beyond its
    /// `times_to_run` rounds, until its ratio's 95 % interval is within
    /// 5 % (milliseconds; 0 times the planned rounds only).
    #[arg(long, env = "SQLARENA_PRECISION_TIME_MS", default_value_t = 2_000)]
    pub precision_time_ms: u64,
    /// Largest size a test-case database may reach while init SQL and data
    /// fill it; a build that grows past it fails as the professor's error.
    #[arg(long, env = "SQLARENA_MAX_DATABASE_BYTES", default_value = "256MiB", value_parser = parse_size)]
    pub max_database_bytes: usize,
    /// How long running jobs may take to finish on shutdown, in milliseconds.
    #[arg(long, env = "SQLARENA_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// Log as JSON lines.
    #[arg(long, env = "SQLARENA_JSON_LOGS")]
    pub json_logs: bool,
    /// Prefix of the roles and databases this grader creates (default:
    /// derived from the name).
    #[arg(long, env = "SQLARENA_PREFIX")]
    pub prefix: Option<String>,
}

/// Parses a lane name.
fn parse_lane(text: &str) -> Result<Lane, String> {
    Lane::parse(text.trim())
        .ok_or_else(|| format!("unknown lane {text:?} (use init, fast or slow)"))
}

/// Parses a size: a number of bytes with an optional unit (KB, KiB, MB,
/// MiB, GB, GiB).
///
/// # Errors
///
/// Returns a message for anything else.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}"))?;
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size unit in {text:?} (use KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

impl Config {
    /// Returns the grader's name: `--name` or the hostname.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(hostname)
    }

    /// Returns the sandbox prefix: `--prefix`, or `sqlarena_` and the name
    /// reduced to lower-case letters, digits and underscores.
    pub fn prefix(&self) -> String {
        self.prefix
            .clone()
            .unwrap_or_else(|| prefix_for(&self.name()))
    }

    /// Returns the limits of a lane's runs.
    pub fn limits(&self, lane: Lane) -> Limits {
        let timeout = match lane {
            Lane::Init => self.init_timeout_ms,
            Lane::Fast => self.fast_timeout_ms,
            Lane::Slow => self.slow_timeout_ms,
        };
        Limits::new(
            Duration::from_millis(timeout),
            self.max_rows,
            self.max_bytes,
        )
        .with_max_cell_bytes(self.max_cell_bytes)
        .with_precision_time(Duration::from_millis(self.precision_time_ms))
    }

    /// Returns the longest timeout of any lane.
    pub fn longest_timeout(&self) -> Duration {
        Duration::from_millis(
            self.fast_timeout_ms
                .max(self.slow_timeout_ms)
                .max(self.init_timeout_ms),
        )
    }
}

/// Returns this machine's hostname, or `grader`.
/// The default sandbox prefix of a grader named `name`: `sqlarena_` and
/// the name reduced to lower-case letters, digits and underscores.
pub fn prefix_for(name: &str) -> String {
    let name: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(30)
        .collect();
    format!("sqlarena_{name}")
}

/// `grader cleanup`: drops what a grader made in its PostgreSQL.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "grader cleanup",
    about = "Drops the roles and databases a grader made in its PostgreSQL (refused while that grader runs)"
)]
pub struct CleanupConfig {
    /// Admin URL of the local PostgreSQL.
    #[arg(
        long,
        env = "SQLARENA_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub postgres: String,
    /// Name of the grader whose objects to drop (default: the hostname).
    #[arg(long, env = "SQLARENA_NAME")]
    pub name: Option<String>,
    /// Prefix of the roles and databases to drop (default: derived from the name).
    #[arg(long, env = "SQLARENA_PREFIX")]
    pub prefix: Option<String>,
}

impl CleanupConfig {
    /// Returns the prefix to clean up.
    pub fn prefix(&self) -> String {
        self.prefix
            .clone()
            .unwrap_or_else(|| prefix_for(&self.name.clone().unwrap_or_else(hostname)))
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "grader".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("500KB"), Ok(500_000));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("16 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn flags_parse_and_derive_the_prefix() {
        let config = Config::try_parse_from([
            "grader",
            "--cluster-token",
            "t",
            "--lanes",
            "fast,slow",
            "--name",
            "Node-1.example",
            "--max-bytes",
            "1MiB",
        ])
        .unwrap();
        assert_eq!(config.lanes, vec![Lane::Fast, Lane::Slow]);
        assert_eq!(config.prefix(), "sqlarena_node_1_example");
        assert_eq!(config.max_bytes, 1 << 20);
        assert_eq!(config.limits(Lane::Fast).timeout, Duration::from_secs(5));
        assert!(
            Config::try_parse_from(["grader", "--cluster-token", "t", "--lanes", "turbo"]).is_err()
        );
    }
}
