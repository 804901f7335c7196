//! `run start|show|items|pause|resume|cancel|retry|diff|publish|gradebook`:
//! a professor's grading runs from the shell.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::challenge::POLL_INTERVAL;
use super::output::{number, or_dash, out, outln, print_json, table, text};
use super::{CliError, Client, Outcome, RunCommand};

/// Runs a `run` subcommand.
pub async fn run(command: RunCommand, client: &Client, json: bool) -> Result<Outcome, CliError> {
    match command {
        RunCommand::Start {
            challenge_id,
            users,
            attempt,
            shadow,
            fail_on_error,
            webhook,
            key,
            wait,
            timeout,
        } => {
            let mut body = json!({
                "challenge_id": challenge_id,
                "targets": if users.is_empty() { json!("all") } else { json!(users) },
                "attempt": attempt,
                "mode": if shadow { "shadow" } else { "publish" },
                "on_item_failure": if fail_on_error { "fail_run" } else { "continue" },
            });
            if let Some(url) = webhook {
                body["webhook_url"] = json!(url);
            }
            if let Some(key) = key {
                body["idempotency_key"] = json!(key);
            }
            let created = client.post("/runs", &body).await?;
            if let Some(secret) = created["webhook_secret"].as_str() {
                eprintln!("webhook secret (shown once; it signs every delivery): {secret}");
            }
            let id = text(&created["id"]);
            if !wait {
                show(&created, json);
                return Ok(Outcome::Done);
            }
            if !json {
                eprintln!("run {id} started; waiting for it to end");
            }
            let ended = wait_ended(client, &id, Duration::from_secs(timeout)).await?;
            show(&ended, json);
            Ok(if ended["state"] == "COMPLETED" {
                Outcome::Done
            } else {
                Outcome::Unsuccessful
            })
        }
        RunCommand::Show { id } => {
            show(&client.get(&format!("/runs/{id}")).await?, json);
            Ok(Outcome::Done)
        }
        RunCommand::Items { id, state } => {
            let path = match state {
                Some(state) => format!("/runs/{id}/items?state={state}"),
                None => format!("/runs/{id}/items"),
            };
            let items = client.list(&path).await?;
            if json {
                print_json(&Value::Array(items));
            } else {
                out!("{}", items_table(&items));
            }
            Ok(Outcome::Done)
        }
        RunCommand::Pause { id } => control(client, &id, "pause", json).await,
        RunCommand::Resume { id } => control(client, &id, "resume", json).await,
        RunCommand::Cancel { id } => control(client, &id, "cancel", json).await,
        RunCommand::Retry { id } => control(client, &id, "retry", json).await,
        RunCommand::Publish { id } => control(client, &id, "publish", json).await,
        RunCommand::Diff { id } => {
            let diff = client.get(&format!("/runs/{id}/diff")).await?;
            if json {
                print_json(&diff);
            } else {
                out!("{}", diff_table(&diff));
            }
            Ok(Outcome::Done)
        }
        RunCommand::Gradebook { id, output } => {
            let csv = client.download(&format!("/runs/{id}/gradebook")).await?;
            match output {
                Some(path) => write_file(&path, &csv)?,
                None => out!("{csv}"),
            }
            Ok(Outcome::Done)
        }
    }
}

/// POSTs one of a run's actions and shows the run it answers.
async fn control(client: &Client, id: &str, action: &str, json: bool) -> Result<Outcome, CliError> {
    let reply = client
        .post(&format!("/runs/{id}/{action}"), &json!({}))
        .await?;
    show(&reply, json);
    Ok(Outcome::Done)
}

fn write_file(path: &Path, contents: &str) -> Result<(), CliError> {
    std::fs::write(path, contents)
        .map_err(|error| CliError::Usage(format!("cannot write {}: {error}", path.display())))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Polls a run until its state is final.
async fn wait_ended(client: &Client, id: &str, timeout: Duration) -> Result<Value, CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let run = client.get(&format!("/runs/{id}")).await?;
        if is_final(&run["state"]) {
            return Ok(run);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Server(format!(
                "run {id} is still {} after {} s ({} of {} items ended)",
                or_dash(&run["state"]),
                timeout.as_secs(),
                ended(&run["counts"]),
                run["counts"]["total"]
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn is_final(state: &Value) -> bool {
    matches!(
        state.as_str(),
        Some("COMPLETED" | "COMPLETED_WITH_ERRORS" | "FAILED" | "CANCELLED")
    )
}

fn ended(counts: &Value) -> u64 {
    ["done", "error", "cancelled"]
        .iter()
        .map(|state| counts[state].as_u64().unwrap_or(0))
        .sum()
}

fn show(run: &Value, json: bool) {
    if json {
        print_json(run);
        return;
    }
    let counts = &run["counts"];
    outln!(
        "run {} of challenge {} ({}, {}): {}",
        text(&run["id"]),
        run["challenge_id"],
        or_dash(&run["mode"]),
        or_dash(&run["attempt"]),
        or_dash(&run["state"])
    );
    outln!(
        "  items: {} total, {} queued, {} running, {} done, {} error, {} cancelled",
        counts["total"],
        counts["queued"],
        counts["running"],
        counts["done"],
        counts["error"],
        counts["cancelled"]
    );
    if let Some(position) = run["queue_position"].as_u64() {
        outln!("  queue position of the next item: {position}");
    }
    if let Some(eta) = run["eta_seconds"].as_f64() {
        outln!("  ETA: {eta:.1} s");
    }
    outln!("  postprocessing: {}", or_dash(&run["postprocessing"]));
    if let Some(url) = run["gradebook_url"].as_str() {
        outln!(
            "  gradebook: {url} (`sqlarena run gradebook {}`)",
            text(&run["id"])
        );
    }
}

fn items_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            vec![
                item["item"].to_string(),
                item["user_id"].to_string(),
                or_dash(&item["attempt_id"]),
                or_dash(&item["state"]),
                or_dash(&item["status"]),
                number(&item["score"], 1),
                item["tries"].to_string(),
                or_dash(&item["error"]).chars().take(60).collect(),
            ]
        })
        .collect();
    table(
        &[
            "item", "user", "attempt", "state", "status", "score", "tries", "error",
        ],
        &rows,
    )
}

fn diff_table(diff: &Value) -> String {
    let changes = diff.as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|change| {
            vec![
                change["user_id"].to_string(),
                or_dash(&change["attempt_id"]),
                or_dash(&change["published_from"]),
                or_dash(&change["published_status"]),
                number(&change["published_score"], 1),
                or_dash(&change["status"]),
                number(&change["score"], 1),
            ]
        })
        .collect();
    table(
        &[
            "user",
            "attempt",
            "published from",
            "published",
            "score",
            "new",
            "score",
        ],
        &rows,
    )
}
