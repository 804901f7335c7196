//! `coordinator`: parses configuration, sets up logging, and runs.
//!
//! A fatal error ends the process with one line on stderr (`coordinator:
//! error: ...`, credentials redacted) and exit status 1, never a backtrace.

use std::io::BufRead as _;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sqlarena_coordinator::config::{Backup, Cli, Command, CreateAdmin, Migrate};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::CreateAdmin(args)) => create_admin(args).await,
        Some(Command::Migrate(args)) => migrate(args).await,
        Some(Command::Backup(args)) => backup(args),
        Some(Command::Serve(config)) => serve(*config).await,
        None => serve(cli.serve).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let message = format!("{error:#}").replace(['\n', '\r'], " ");
            eprintln!(
                "coordinator: error: {}",
                sqlarena_coordinator::redact(&message)
            );
            ExitCode::FAILURE
        }
    }
}

async fn create_admin(args: CreateAdmin) -> anyhow::Result<()> {
    init_tracing(false);
    let password = match args.password {
        Some(password) => password,
        None => read_password_line().context("reading the admin's password from stdin")?,
    };
    let store = sqlarena_coordinator::store::open(&args.store)
        .await
        .context("opening the store")?;
    let id =
        sqlarena_coordinator::create_admin(store.as_ref(), &args.email, &password, &args.full_name)
            .await?;
    println!("created admin {} with id {id}", args.email);
    Ok(())
}

/// `coordinator migrate`: SQLite stores migrate when opened (and `--check`
/// migrates a copy to report the difference); MongoDB stores create their
/// indexes and fill what is new at connect, idempotently (and `--check`
/// lists the indexes missing).
async fn migrate(args: Migrate) -> anyhow::Result<()> {
    use sqlarena_coordinator::store::sqlite::{maintenance, SqliteStore};
    init_tracing(false);
    if let Some(location) = args.store.strip_prefix("sqlite://") {
        if args.check {
            println!("{}", maintenance::check_migration(location)?);
        } else {
            let from = maintenance::file_schema_version(location)?;
            let store = SqliteStore::open(location).context("opening the store")?;
            let report = maintenance::MigrationReport {
                from,
                to: store.schema_version()?,
                changes: Vec::new(),
            };
            println!("migrated: {report}");
        }
    } else if args.check {
        let report = sqlarena_coordinator::store::mongo::maintenance::check_migration(&args.store)
            .await
            .context("checking the store")?;
        println!("{report}");
    } else {
        sqlarena_coordinator::store::open(&args.store)
            .await
            .context("connecting to the store")?;
        println!(
            "migrated: indexes created, new fields filled, schema version {}",
            sqlarena_coordinator::store::mongo::maintenance::SCHEMA_VERSION
        );
    }
    Ok(())
}

/// `coordinator backup`.
fn backup(args: Backup) -> anyhow::Result<()> {
    let Some(location) = args.store.strip_prefix("sqlite://") else {
        anyhow::bail!("backup copies an SQLite store; back up MongoDB with mongodump");
    };
    sqlarena_coordinator::store::sqlite::maintenance::backup(location, &args.to)?;
    println!("wrote {}", args.to.display());
    Ok(())
}

/// Reads the password from the first line of stdin (for
/// `... | coordinator create-admin`, so it never appears in argv).
fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        anyhow::bail!(
            "no password: pass it in SQLARENA_ADMIN_PASSWORD or on the first line of stdin"
        );
    }
    Ok(password)
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
