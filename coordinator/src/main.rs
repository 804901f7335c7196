//! `coordinator`: parses configuration, sets up logging, and runs.

use anyhow::Context;
use clap::Parser;
use sqlarena_coordinator::config::{Cli, Command};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CreateAdmin(args)) => {
            init_tracing(false);
            let store = sqlarena_coordinator::store::open(&args.store)
                .await
                .context("opening the store")?;
            let id = sqlarena_coordinator::create_admin(
                store.as_ref(),
                &args.email,
                &args.password,
                &args.full_name,
            )
            .await?;
            println!("created admin {} with id {id}", args.email);
            Ok(())
        }
        Some(Command::Serve(config)) => serve(config).await,
        None => serve(cli.serve).await,
    }
}

async fn serve(config: sqlarena_coordinator::config::Config) -> anyhow::Result<()> {
    init_tracing(config.json_logs);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    sqlarena_coordinator::run(config, listener, shutdown).await
}

/// Cancels `shutdown` on the first SIGTERM/SIGINT; exits at once on a second.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("shutting down: finishing in-flight requests");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second signal: exiting now");
    std::process::exit(130);
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    // Colours only on a terminal: log files and journald get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
