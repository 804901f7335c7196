//! `sqlarena`: the command-line client. Parses the command line and runs it
//! (see `sqlarena_coordinator::cli`); the exit code says what failed.

use std::process::ExitCode;

use clap::Parser;
use sqlarena_coordinator::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(5);
        }
    };
    ExitCode::from(runtime.block_on(cli::run(cli)))
}
