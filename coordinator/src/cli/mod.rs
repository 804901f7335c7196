//! `sqlarena`, the command-line client of the people API, in the style of
//! `gh` and `kubectl`: `sqlarena login URL` once, then commands per resource
//! (`challenge push DIR`, `attempt submit ID FILE --wait`, `grader ls`, ...).
//!
//! Every command prints a readable summary, or with `--json` the API's data
//! for scripts. Errors print the server's message, and the exit code says
//! what failed (see [`CliError::exit_code`]).

mod admin;
mod assessment;
mod attempt;
mod challenge;
mod challenge_dir;
mod client;
mod credentials;
mod output;
mod run;
mod session;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use challenge_dir::ChallengeDir;
pub use client::Client;
pub use credentials::Credentials;

/// Exit code of a command that worked but whose result is a failure: a
/// graded attempt that did not pass, a challenge whose init failed.
pub const EXIT_UNSUCCESSFUL: u8 = 1;

/// The `sqlarena` command line.
#[derive(Debug, Parser)]
#[command(
    name = "sqlarena",
    version,
    about = "Command-line client of a sqlarena coordinator",
    after_help = "The login is kept in $SQLARENA_CONFIG_DIR, else $XDG_CONFIG_HOME/sqlarena, else ~/.config/sqlarena (credentials.toml, mode 0600).\n\nExit codes: 0 done; 1 a graded attempt that did not pass (or a challenge whose init failed, or a waited-for run that did not end COMPLETED); 2 usage or a request the server refused as given (400, 409, 422, 429); 3 not logged in, wrong password or not allowed (401, 403); 4 not found (404); 5 server or network error."
)]
pub struct Cli {
    /// Prints the API's JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Signs in to a coordinator and keeps the token for later commands.
    Login(LoginArgs),
    /// Creates an account (a student's, or a professor's with an invite) and signs in.
    Register(RegisterArgs),
    /// Revokes the kept token and forgets it.
    Logout,
    /// Challenges: push a directory, list, show with the leaderboard.
    #[command(subcommand)]
    Challenge(ChallengeCommand),
    /// Attempts: submit a query, show the per-case results.
    #[command(subcommand)]
    Attempt(AttemptCommand),
    /// Graders (admins): list, drain.
    #[command(subcommand)]
    Grader(GraderCommand),
    /// Cluster tokens for graders (admins).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Invites (admins): a code that lets someone register with a role.
    #[command(subcommand)]
    Invite(InviteCommand),
    /// Grading runs (professors): grade a whole class, follow, pause, cancel, diff, publish.
    #[command(subcommand)]
    Run(RunCommand),
    /// Timed assessments: create, add time, scores (staff); start your session (students).
    #[command(subcommand)]
    Assessment(AssessmentCommand),
    /// Assessment sessions: show, submit, finish (students); add time, reopen, log (staff).
    #[command(subcommand)]
    Session(SessionCommand),
}

/// `sqlarena login URL`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The coordinator, e.g. http://127.0.0.1:8080.
    pub url: String,
    /// Asked for when missing.
    #[arg(long)]
    pub email: Option<String>,
    /// Asked for (without echo) when missing.
    #[arg(long, env = "SQLARENA_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// `sqlarena register URL`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The coordinator, e.g. http://127.0.0.1:8080.
    pub url: String,
    #[arg(long)]
    pub email: String,
    /// Full name, as leaderboards show it.
    #[arg(long)]
    pub name: String,
    /// STUD (default) or PROF (needs an invite, unless the coordinator allows professor signup).
    #[arg(long)]
    pub role: Option<String>,
    /// An invite code from an admin (`sqlarena invite create`); it decides the role.
    #[arg(long)]
    pub invite: Option<String>,
    /// Asked for (without echo) when missing.
    #[arg(long, env = "SQLARENA_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// `sqlarena challenge ...`.
#[derive(Debug, Subcommand)]
pub enum ChallengeCommand {
    /// Creates the challenge a directory describes, or updates your challenge
    /// of that name (new SQL makes a new version, which is re-initialized).
    ///
    /// DIR holds challenge.toml (name, description, type FE|SE, times_to_run,
    /// expires_at), init.sql, solution.sql and cases/NN-visible.sql or
    /// cases/NN-hidden.sql (test data, in NN order).
    Push {
        dir: PathBuf,
        /// Waits until the challenge is READY (exit 0) or FAILED (exit 1).
        #[arg(long)]
        wait: bool,
        /// Longest wait, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Lists every challenge.
    Ls,
    /// Shows a challenge: state, init errors, test cases, leaderboard.
    Show { id: i64 },
}

/// `sqlarena attempt ...`.
#[derive(Debug, Subcommand)]
pub enum AttemptCommand {
    /// Submits the query in FILE (`-` reads standard input) to challenge ID.
    Submit {
        challenge_id: i64,
        file: PathBuf,
        /// Waits for the result and prints it; exits 1 unless PASSED.
        #[arg(long)]
        wait: bool,
        /// Longest wait, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Shows an attempt with its per-case results.
    Show { id: i64 },
}

/// `sqlarena grader ...`.
#[derive(Debug, Subcommand)]
pub enum GraderCommand {
    /// Lists the graders the coordinator knows.
    Ls,
    /// Drains a grader (by id or name): it finishes its jobs and takes no more.
    Drain { grader: String },
}

/// `sqlarena token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Creates a cluster token for graders; prints it once.
    Create { label: String },
}

/// `sqlarena invite ...`.
#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// Creates an invite code; prints it once.
    Create {
        /// The role the invitee gets: PROF, STUD or ADMIN.
        #[arg(long, default_value = "PROF")]
        role: String,
    },
    /// Lists the newest invites: open, used or expired (never their codes).
    Ls,
    /// Revokes an open invite: its code then registers no one.
    Revoke {
        /// The invite's id, from `invite ls` or `invite create --json`.
        id: String,
    },
}

/// `sqlarena run ...`.
#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Grades every student who attempted a challenge (or `--users`) at once.
    Start {
        challenge_id: i64,
        /// Only these students (user ids, comma-separated).
        #[arg(long, value_delimiter = ',')]
        users: Vec<i64>,
        /// Which attempt of each student is graded: latest or best.
        #[arg(long, default_value = "latest", value_parser = ["latest", "best"])]
        attempt: String,
        /// Grades beside the published results; `run diff` and `run publish` follow.
        #[arg(long)]
        shadow: bool,
        /// The first item in ERROR fails the whole run.
        #[arg(long)]
        fail_on_error: bool,
        /// Called once when the run ends, signed with your webhook secret.
        #[arg(long)]
        webhook: Option<String>,
        /// An idempotency key: the same key returns the run it made.
        #[arg(long)]
        key: Option<String>,
        /// Waits until the run ends; exits 1 unless COMPLETED.
        #[arg(long)]
        wait: bool,
        /// Longest wait, in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Shows a run: state, item counts, queue position, ETA.
    Show { id: String },
    /// Lists a run's items (one per student).
    Items {
        id: String,
        /// Only items in this state (QUEUED, RUNNING, DONE, ERROR, CANCELLED).
        #[arg(long)]
        state: Option<String>,
    },
    /// Pauses a run at its next item.
    Pause { id: String },
    /// Resumes a paused run.
    Resume { id: String },
    /// Cancels a run; running items are cancelled on their graders.
    Cancel { id: String },
    /// Retries the items in ERROR.
    Retry { id: String },
    /// Lists the students whose result a finished shadow run would change.
    Diff { id: String },
    /// Publishes a finished shadow run's results.
    Publish { id: String },
    /// Prints (or writes to --output) the run's gradebook CSV.
    Gradebook {
        id: String,
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// `sqlarena assessment ...`.
#[derive(Debug, Subcommand)]
pub enum AssessmentCommand {
    /// Creates an assessment from a JSON file in the API's shape
    /// (name, zones, selection, time_limit_s, opens_at, closes_at, ...).
    Create { file: PathBuf },
    /// Shows an assessment.
    Show { id: i64 },
    /// Adds SECONDS to every session and to the close date.
    Time { id: i64, seconds: i64 },
    /// Sets one student's time override (accommodations).
    Override {
        id: i64,
        user_id: i64,
        /// Extra seconds.
        #[arg(long)]
        extra_s: Option<u32>,
        /// Multiplies the time limit (e.g. 1.5).
        #[arg(long)]
        time_scale: Option<f64>,
        /// The student's own close date (RFC 3339).
        #[arg(long)]
        closes_at: Option<String>,
    },
    /// Shows the scores: every student's (staff) or your own.
    Scores { id: i64 },
    /// Starts your session (or shows it if started): the questions and the deadline.
    Start { id: i64 },
}

/// `sqlarena session ...`.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Shows a session: state, deadline, time left, each question's submissions.
    Show { id: i64 },
    /// Submits the query in FILE (`-` reads standard input) to a question.
    Submit {
        id: i64,
        question: u32,
        file: PathBuf,
        /// Waits for the result (when feedback is immediate); exits 1 unless PASSED.
        #[arg(long)]
        wait: bool,
        /// Longest wait, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Finishes the session: no more submissions.
    Finish { id: i64 },
    /// Adds SECONDS to this session (staff).
    Time { id: i64, seconds: i64 },
    /// Reopens a closed session (staff).
    Reopen { id: i64 },
    /// Shows the session's log: started, submitted, extended, closed.
    Log { id: i64 },
}

/// What went wrong, classed by who can fix it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or files, or a request the server refused as given.
    #[error("{0}")]
    Usage(String),
    /// Not logged in, wrong credentials, or not allowed.
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    NotFound(String),
    /// The server failed or could not be reached.
    #[error("{0}")]
    Server(String),
}

impl CliError {
    /// Returns the process exit code: 2 usage, 3 auth, 4 not found, 5 server.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Auth(_) => 3,
            CliError::NotFound(_) => 4,
            CliError::Server(_) => 5,
        }
    }
}

/// How a command that ran without error ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The command worked, but what it waited for did not succeed.
    Unsuccessful,
}

/// Runs a parsed command line and returns the exit code; errors are printed
/// to standard error.
pub async fn run(cli: Cli) -> u8 {
    match dispatch(cli).await {
        Ok(Outcome::Done) => 0,
        Ok(Outcome::Unsuccessful) => EXIT_UNSUCCESSFUL,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

async fn dispatch(cli: Cli) -> Result<Outcome, CliError> {
    let json = cli.json;
    match cli.command {
        Command::Login(args) => session::login(args, json).await,
        Command::Register(args) => session::register(args, json).await,
        Command::Logout => session::logout(json).await,
        Command::Challenge(command) => {
            let (client, credentials) = Client::signed_in()?;
            challenge::run(command, &client, &credentials, json).await
        }
        Command::Attempt(command) => {
            let (client, _) = Client::signed_in()?;
            attempt::run(command, &client, json).await
        }
        Command::Grader(command) => {
            let (client, _) = Client::signed_in()?;
            admin::run_grader(command, &client, json).await
        }
        Command::Token(command) => {
            let (client, _) = Client::signed_in()?;
            admin::run_token(command, &client, json).await
        }
        Command::Invite(command) => {
            let (client, _) = Client::signed_in()?;
            admin::run_invite(command, &client, json).await
        }
        Command::Run(command) => {
            let (client, _) = Client::signed_in()?;
            run::run(command, &client, json).await
        }
        Command::Assessment(command) => {
            let (client, _) = Client::signed_in()?;
            assessment::run_assessment(command, &client, json).await
        }
        Command::Session(command) => {
            let (client, _) = Client::signed_in()?;
            assessment::run_session(command, &client, json).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn json_is_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from(["sqlarena", "challenge", "show", "3", "--json"]).unwrap();
        assert!(cli.json);
        assert!(matches!(
            cli.command,
            Command::Challenge(ChallengeCommand::Show { id: 3 })
        ));
    }
}
