//! `attempt submit|show`.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::challenge::POLL_INTERVAL;
use super::output::{self, out, outln, print_json};
use super::{AttemptCommand, CliError, Client, Outcome};

/// Runs an `attempt` subcommand.
pub async fn run(
    command: AttemptCommand,
    client: &Client,
    json: bool,
) -> Result<Outcome, CliError> {
    match command {
        AttemptCommand::Submit {
            challenge_id,
            file,
            wait,
            timeout,
        } => {
            submit(
                client,
                challenge_id,
                &file,
                wait,
                Duration::from_secs(timeout),
                json,
            )
            .await
        }
        AttemptCommand::Show { id } => {
            let attempt = client.get(&format!("/attempts/{id}")).await?;
            show(&attempt, json);
            Ok(Outcome::Done)
        }
    }
}

fn show(attempt: &Value, json: bool) {
    if json {
        print_json(attempt);
    } else {
        out!("{}", output::attempt(attempt));
    }
}

/// Reads the query from `file`, or standard input for `-`.
pub(super) fn read_query(file: &Path) -> Result<String, CliError> {
    if file == Path::new("-") {
        let mut query = String::new();
        std::io::stdin()
            .read_to_string(&mut query)
            .map_err(|error| {
                CliError::Usage(format!("reading the query from standard input: {error}"))
            })?;
        return Ok(query);
    }
    std::fs::read_to_string(file)
        .map_err(|error| CliError::Usage(format!("cannot read {}: {error}", file.display())))
}

async fn submit(
    client: &Client,
    challenge_id: i64,
    file: &Path,
    wait: bool,
    timeout: Duration,
    json: bool,
) -> Result<Outcome, CliError> {
    let query = read_query(file)?;
    let attempt = client
        .post(
            "/attempts",
            &json!({"challenge_id": challenge_id, "query": query}),
        )
        .await?;
    let id = attempt["id"]
        .as_i64()
        .ok_or_else(|| CliError::Server(format!("the reply has no attempt id: {attempt}")))?;
    if !wait {
        if json {
            print_json(&attempt);
        } else {
            outln!(
                "attempt {id} queued ({}); follow it with `sqlarena attempt show {id}`",
                output::or_dash(&attempt["status"])
            );
        }
        return Ok(Outcome::Done);
    }
    if !json {
        eprintln!("attempt {id} queued; waiting for its result");
    }
    let attempt = wait_graded(client, id, timeout).await?;
    show(&attempt, json);
    if attempt["status"] == "PASSED" {
        Ok(Outcome::Done)
    } else {
        Ok(Outcome::Unsuccessful)
    }
}

/// Polls an attempt until its status is final.
pub(super) async fn wait_graded(
    client: &Client,
    id: i64,
    timeout: Duration,
) -> Result<Value, CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let attempt = client.get(&format!("/attempts/{id}")).await?;
        match attempt["status"].as_str() {
            Some("PENDING" | "RUNNING") | None => {}
            Some(_) => return Ok(attempt),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Server(format!(
                "attempt {id} is still {} after {} s: is a grader serving its lane? (`sqlarena grader ls`)",
                output::or_dash(&attempt["status"]),
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
