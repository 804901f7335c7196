//! Admin commands: `grader ls|drain`, `token create`, `invite create|ls|revoke`.
//!
//! Secrets (`token create`, `invite create`) go alone on standard output and
//! the explanation on standard error, so `$(sqlarena invite create)` works.

use serde_json::{json, Value};
use uuid::Uuid;

use super::output::{or_dash, out, outln, print_json, table, text};
use super::{CliError, Client, GraderCommand, InviteCommand, Outcome, TokenCommand};

/// Runs a `grader` subcommand.
pub async fn run_grader(
    command: GraderCommand,
    client: &Client,
    json: bool,
) -> Result<Outcome, CliError> {
    match command {
        GraderCommand::Ls => {
            let graders = client.list("/admin/graders").await?;
            if json {
                print_json(&Value::Array(graders));
                return Ok(Outcome::Done);
            }
            let rows: Vec<Vec<String>> = graders
                .iter()
                .map(|grader| {
                    let lanes: Vec<String> = grader["lanes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(text)
                        .collect();
                    vec![
                        text(&grader["id"]),
                        text(&grader["name"]),
                        or_dash(&grader["state"]),
                        lanes.join(","),
                        grader["slots"].to_string(),
                        grader["jobs_done"].to_string(),
                        or_dash(&grader["last_heartbeat"]),
                    ]
                })
                .collect();
            out!(
                "{}",
                table(
                    &[
                        "id",
                        "name",
                        "state",
                        "lanes",
                        "slots",
                        "jobs done",
                        "last heartbeat"
                    ],
                    &rows
                )
            );
            Ok(Outcome::Done)
        }
        GraderCommand::Drain { grader } => {
            let id = resolve_grader(client, &grader).await?;
            let reply = client
                .post(&format!("/admin/graders/{id}/drain"), &json!({}))
                .await?;
            if json {
                print_json(&reply);
            } else {
                outln!(
                    "grader {id} is {}: it finishes its current jobs and takes no more",
                    or_dash(&reply["state"])
                );
            }
            Ok(Outcome::Done)
        }
    }
}

/// Returns the id of the grader `name_or_id` names: a UUID as is, else the
/// one grader of that name that is not DEAD.
async fn resolve_grader(client: &Client, name_or_id: &str) -> Result<Uuid, CliError> {
    if let Ok(id) = Uuid::parse_str(name_or_id) {
        return Ok(id);
    }
    let graders = client.list("/admin/graders").await?;
    let live: Vec<&Value> = graders
        .iter()
        .filter(|grader| grader["name"].as_str() == Some(name_or_id) && grader["state"] != "DEAD")
        .collect();
    match live.as_slice() {
        [grader] => Uuid::parse_str(&text(&grader["id"]))
            .map_err(|error| CliError::Server(format!("grader id: {error}"))),
        [] => Err(CliError::NotFound(format!(
            "no live grader named or with the id {name_or_id:?} (`sqlarena grader ls` lists them)"
        ))),
        several => Err(CliError::Usage(format!(
            "{} live graders are named {name_or_id:?}: give the id (`sqlarena grader ls`)",
            several.len()
        ))),
    }
}

/// Runs a `token` subcommand.
pub async fn run_token(
    command: TokenCommand,
    client: &Client,
    json: bool,
) -> Result<Outcome, CliError> {
    let TokenCommand::Create { label } = command;
    let token = client
        .post("/admin/cluster-tokens", &json!({"label": label}))
        .await?;
    if json {
        print_json(&token);
    } else {
        outln!("{}", text(&token["token"]));
        eprintln!(
            "cluster token {} ({label}): shown once; start graders with --cluster-token or SQLARENA_CLUSTER_TOKEN",
            text(&token["id"])
        );
    }
    Ok(Outcome::Done)
}

/// Runs an `invite` subcommand.
pub async fn run_invite(
    command: InviteCommand,
    client: &Client,
    json: bool,
) -> Result<Outcome, CliError> {
    let role = match command {
        InviteCommand::Create { role } => role,
        InviteCommand::Ls => {
            let invites = client.get("/invites").await?;
            if json {
                print_json(&invites);
                return Ok(Outcome::Done);
            }
            let rows: Vec<Vec<String>> = invites
                .as_array()
                .into_iter()
                .flatten()
                .map(|invite| {
                    vec![
                        text(&invite["id"]),
                        text(&invite["role"]),
                        text(&invite["state"]),
                        text(&invite["created_at"]),
                        text(&invite["expires_at"]),
                        or_dash(&invite["used_by"]),
                    ]
                })
                .collect();
            out!(
                "{}",
                table(
                    &["id", "role", "state", "created", "expires", "used by"],
                    &rows
                )
            );
            return Ok(Outcome::Done);
        }
        InviteCommand::Revoke { id } => {
            let revoked = client.delete(&format!("/invites/{id}")).await?;
            if json {
                print_json(&revoked);
            } else {
                outln!("invite {} revoked", text(&revoked["id"]));
            }
            return Ok(Outcome::Done);
        }
    };
    let invite = client
        .post("/invites", &json!({"role": role.to_uppercase()}))
        .await?;
    if json {
        print_json(&invite);
    } else {
        outln!("{}", text(&invite["code"]));
        eprintln!(
            "invite for a {} (shown once): sqlarena register URL --email EMAIL --name NAME --invite CODE",
            text(&invite["role"])
        );
    }
    Ok(Outcome::Done)
}
