//! `challenge push|ls|show`.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::output::{self, or_dash, out, outln, print_json, table, text};
use super::{ChallengeCommand, ChallengeDir, CliError, Client, Credentials, Outcome};

/// How often a waiting command asks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Runs a `challenge` subcommand.
pub async fn run(
    command: ChallengeCommand,
    client: &Client,
    credentials: &Credentials,
    json: bool,
) -> Result<Outcome, CliError> {
    match command {
        ChallengeCommand::Push { dir, wait, timeout } => {
            push(
                client,
                credentials,
                &dir,
                wait,
                Duration::from_secs(timeout),
                json,
            )
            .await
        }
        ChallengeCommand::Ls => list(client, json).await,
        ChallengeCommand::Show { id } => {
            let challenge = client.get(&format!("/challenges/{id}")).await?;
            if json {
                print_json(&challenge);
            } else {
                out!("{}", output::challenge(&challenge));
            }
            Ok(Outcome::Done)
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PushAction {
    Created,
    NewVersion,
    Unchanged,
}

impl PushAction {
    fn as_str(self) -> &'static str {
        match self {
            PushAction::Created => "created",
            PushAction::NewVersion => "new_version",
            PushAction::Unchanged => "updated_in_place",
        }
    }
}

/// Creates the challenge `dir` describes, or updates the caller's challenge
/// of that name. With `wait`, waits until it is READY or FAILED.
async fn push(
    client: &Client,
    credentials: &Credentials,
    dir: &Path,
    wait: bool,
    timeout: Duration,
    json: bool,
) -> Result<Outcome, CliError> {
    let local = ChallengeDir::load(dir)?;
    let mine = client
        .list(&format!("/challenges-by-user/{}", credentials.user_id))
        .await?;
    let same_name: Vec<&Value> = mine
        .iter()
        .filter(|challenge| challenge["name"].as_str() == Some(local.name.as_str()))
        .collect();
    let (action, mut challenge) = match same_name.as_slice() {
        [] => (
            PushAction::Created,
            client.post("/challenges", &local.create_body()).await?,
        ),
        [existing] => {
            let id = existing["id"].as_i64().unwrap_or_default();
            let remote_type = text(&existing["type"]);
            if remote_type != text(&json!(local.challenge_type)) {
                return Err(CliError::Usage(format!(
                    "your challenge {id} \"{}\" is of type {remote_type}; a challenge's type cannot change (rename it in challenge.toml to push a new one)",
                    local.name
                )));
            }
            let before = existing["version"].as_i64();
            let updated = client
                .patch(&format!("/challenges/{id}"), &local.update_body())
                .await?;
            let action = if updated["version"].as_i64() != before {
                PushAction::NewVersion
            } else {
                PushAction::Unchanged
            };
            (action, updated)
        }
        several => {
            let ids: Vec<String> = several.iter().map(|c| c["id"].to_string()).collect();
            return Err(CliError::Usage(format!(
                "you have {} challenges named \"{}\" (ids {}); rename one so a push knows which to update",
                several.len(),
                local.name,
                ids.join(", ")
            )));
        }
    };
    let id = challenge["id"].as_i64().unwrap_or_default();
    if !json {
        let said = match action {
            PushAction::Created => "created",
            PushAction::NewVersion => "updated with a new version of its SQL (re-initializing)",
            PushAction::Unchanged => "updated in place (same SQL, same version)",
        };
        outln!(
            "challenge {id} \"{}\" {said}: version {}, {}",
            local.name,
            challenge["version"],
            or_dash(&challenge["state"])
        );
    }
    if wait {
        challenge = wait_initialized(client, id, timeout).await?;
    }
    if json {
        print_json(&json!({"action": action.as_str(), "challenge": challenge}));
    } else if wait {
        out!("{}", output::challenge(&challenge));
    }
    if challenge["state"] == "FAILED" && wait {
        Ok(Outcome::Unsuccessful)
    } else {
        Ok(Outcome::Done)
    }
}

/// Polls a challenge until it is no longer PENDING.
async fn wait_initialized(client: &Client, id: i64, timeout: Duration) -> Result<Value, CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let challenge = client.get(&format!("/challenges/{id}")).await?;
        if challenge["state"] != "PENDING" {
            return Ok(challenge);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Server(format!(
                "challenge {id} is still PENDING after {} s: is a grader serving the init lane? (`sqlarena grader ls`)",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn list(client: &Client, json: bool) -> Result<Outcome, CliError> {
    let mut challenges = client.list("/challenges").await?;
    challenges.sort_by_key(|challenge| challenge["id"].as_i64());
    if json {
        print_json(&Value::Array(challenges));
        return Ok(Outcome::Done);
    }
    let rows: Vec<Vec<String>> = challenges
        .iter()
        .map(|challenge| {
            vec![
                challenge["id"].to_string(),
                text(&challenge["name"]),
                or_dash(&challenge["type"]),
                or_dash(&challenge["state"]),
                challenge["version"].to_string(),
                challenge["test_cases"]
                    .as_array()
                    .map_or(0, Vec::len)
                    .to_string(),
                or_dash(&challenge["expires_at"]),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &["id", "name", "type", "state", "version", "cases", "expires"],
            &rows
        )
    );
    Ok(Outcome::Done)
}
