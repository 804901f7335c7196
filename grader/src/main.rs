//! The `grader` binary: parses the configuration, sets up tracing, and runs
//! the job loop until SIGTERM/SIGINT (a second signal exits at once).
//! `grader cleanup` drops what a grader made in its PostgreSQL.

use clap::Parser;
use sqlarena_grader::config::{CleanupConfig, Config};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("cleanup") {
        return cleanup(CleanupConfig::parse_from(std::env::args().skip(1))).await;
    }
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if config.json_logs {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        // Colours only on a terminal: log files and journald get plain text.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init();
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    sqlarena_grader::daemon::run(config, shutdown).await
}

/// Drops a grader's roles and databases and says what went.
async fn cleanup(config: CleanupConfig) -> anyhow::Result<()> {
    let prefix = config.prefix();
    match sqlarena_grader::sandbox::cleanup(&config.postgres, &prefix).await {
        Ok(removed) => {
            println!(
                "removed {} databases and {} roles of prefix {prefix}",
                removed.databases.len(),
                removed.roles.len()
            );
            for name in removed.databases.iter().chain(&removed.roles) {
                println!("  {name}");
            }
            Ok(())
        }
        Err(error) => {
            eprintln!("grader cleanup: {error}");
            std::process::exit(1);
        }
    }
}

/// Cancels `shutdown` on the first SIGTERM/SIGINT and exits on the second.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! { _ = terminate.recv() => {}, _ = interrupt.recv() => {} }
    tracing::info!("signal received: finishing current jobs (send again to exit at once)");
    shutdown.cancel();
    tokio::select! { _ = terminate.recv() => {}, _ = interrupt.recv() => {} }
    tracing::warn!("second signal: exiting now");
    std::process::exit(1);
}
