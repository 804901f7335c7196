//! Timed assessments from the shell: staff create them from a JSON file,
//! add time and read scores; students start their session, submit and
//! finish (`assessment ...`, `session ...`).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::attempt::{read_query, wait_graded};
use super::output::{number, or_dash, out, outln, print_json, table, text};
use super::{AssessmentCommand, CliError, Client, Outcome, SessionCommand};

/// Runs an `assessment` subcommand.
pub async fn run_assessment(
    command: AssessmentCommand,
    client: &Client,
    json: bool,
) -> Result<Outcome, CliError> {
    match command {
        AssessmentCommand::Create { file } => {
            let spec = read_json(&file)?;
            let assessment = client.post("/assessments", &spec).await?;
            show_assessment(&assessment, json);
        }
        AssessmentCommand::Show { id } => {
            show_assessment(&client.get(&format!("/assessments/{id}")).await?, json);
        }
        AssessmentCommand::Time { id, seconds } => {
            let assessment = client
                .post(
                    &format!("/assessments/{id}/time"),
                    &json!({"delta_s": seconds}),
                )
                .await?;
            show_assessment(&assessment, json);
        }
        AssessmentCommand::Override {
            id,
            user_id,
            extra_s,
            time_scale,
            closes_at,
        } => {
            let mut body = json!({"user_id": user_id});
            for (field, value) in [
                ("extra_s", extra_s.map(Value::from)),
                ("time_scale", time_scale.map(Value::from)),
                ("closes_at", closes_at.map(Value::from)),
            ] {
                if let Some(value) = value {
                    body[field] = value;
                }
            }
            let assessment = client
                .put(&format!("/assessments/{id}/overrides"), &body)
                .await?;
            show_assessment(&assessment, json);
        }
        AssessmentCommand::Scores { id } => {
            let scores = client.get(&format!("/assessments/{id}/scores")).await?;
            if json {
                print_json(&scores);
            } else {
                out!("{}", scores_table(&scores));
            }
        }
        AssessmentCommand::Start { id } => {
            let session = client
                .post(&format!("/assessments/{id}/sessions"), &json!({}))
                .await?;
            show_session(&session, json);
        }
    }
    Ok(Outcome::Done)
}

/// Runs a `session` subcommand.
pub async fn run_session(
    command: SessionCommand,
    client: &Client,
    json: bool,
) -> Result<Outcome, CliError> {
    let session = match command {
        SessionCommand::Show { id } => client.get(&format!("/sessions/{id}")).await?,
        SessionCommand::Submit {
            id,
            question,
            file,
            wait,
            timeout,
        } => return submit(client, id, question, &file, wait, timeout, json).await,
        SessionCommand::Finish { id } => {
            client
                .post(&format!("/sessions/{id}/finish"), &json!({}))
                .await?
        }
        SessionCommand::Time { id, seconds } => {
            client
                .post(
                    &format!("/sessions/{id}/time"),
                    &json!({"delta_s": seconds}),
                )
                .await?
        }
        SessionCommand::Reopen { id } => {
            client
                .post(&format!("/sessions/{id}/reopen"), &json!({}))
                .await?
        }
        SessionCommand::Log { id } => {
            let log = client.get(&format!("/sessions/{id}/log")).await?;
            if json {
                print_json(&log);
            } else {
                out!("{}", log_table(&log));
            }
            return Ok(Outcome::Done);
        }
    };
    show_session(&session, json);
    Ok(Outcome::Done)
}

async fn submit(
    client: &Client,
    id: i64,
    question: u32,
    file: &Path,
    wait: bool,
    timeout: u64,
    json: bool,
) -> Result<Outcome, CliError> {
    let query = read_query(file)?;
    let submission = client
        .post(
            &format!("/sessions/{id}/questions/{question}/attempts"),
            &json!({"query": query}),
        )
        .await?;
    let attempt_id = submission["attempt_id"].as_i64();
    let (true, Some(attempt_id)) = (wait, attempt_id) else {
        if json {
            print_json(&submission);
        } else {
            outln!(
                "submission {} to question {question} received at {}",
                submission["number"],
                or_dash(&submission["received_at"])
            );
        }
        return Ok(Outcome::Done);
    };
    let attempt = wait_graded(client, attempt_id, Duration::from_secs(timeout)).await?;
    if json {
        print_json(&attempt);
    } else {
        out!("{}", super::output::attempt(&attempt));
    }
    Ok(if attempt["status"] == "PASSED" {
        Outcome::Done
    } else {
        Outcome::Unsuccessful
    })
}

fn read_json(file: &Path) -> Result<Value, CliError> {
    let body = std::fs::read_to_string(file)
        .map_err(|error| CliError::Usage(format!("cannot read {}: {error}", file.display())))?;
    serde_json::from_str(&body)
        .map_err(|error| CliError::Usage(format!("{} is not JSON: {error}", file.display())))
}

fn show_assessment(assessment: &Value, json: bool) {
    if json {
        print_json(assessment);
        return;
    }
    let spec = &assessment["spec"];
    outln!(
        "assessment {} {:?}: {} s, opens {}, closes {}, max score {}",
        assessment["id"],
        text(&spec["name"]),
        spec["time_limit_s"],
        or_dash(&spec["opens_at"]),
        or_dash(&spec["closes_at"]),
        number(&assessment["max_score"], 1)
    );
    outln!(
        "  feedback {}, scoreboard {}, time added to all: {} s",
        or_dash(&spec["feedback"]),
        or_dash(&spec["scoreboard"]),
        assessment["extension_s"]
    );
}

fn show_session(session: &Value, json: bool) {
    if json {
        print_json(session);
        return;
    }
    outln!(
        "session {} of assessment {}: {}, deadline {} ({} s left)",
        session["id"],
        session["assessment_id"],
        or_dash(&session["state"]),
        or_dash(&session["deadline"]),
        number(&session["remaining_s"], 0)
    );
    let questions = session["questions"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = questions
        .iter()
        .map(|question| {
            let submissions = question["submissions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            vec![
                question["number"].to_string(),
                question["challenge_id"].to_string(),
                or_dash(&question["challenge_name"]),
                number(&question["points"], 1),
                submissions.len().to_string(),
                submissions
                    .last()
                    .map_or_else(|| "-".into(), |last| or_dash(&last["status"])),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &[
                "question",
                "challenge",
                "name",
                "points",
                "submissions",
                "last"
            ],
            &rows
        )
    );
}

fn scores_table(scores: &Value) -> String {
    let rows: Vec<Vec<String>> = scores["scores"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|score| {
            vec![
                score["user_id"].to_string(),
                or_dash(&score["state"]),
                format!(
                    "{} / {}",
                    number(&score["score"], 1),
                    number(&score["max_score"], 1)
                ),
                score["pending"].to_string(),
                if score["manual"].is_null() {
                    ""
                } else {
                    "manual"
                }
                .to_string(),
            ]
        })
        .collect();
    table(&["user", "state", "score", "pending", ""], &rows)
}

fn log_table(log: &Value) -> String {
    let rows: Vec<Vec<String>> = log
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|event| {
            vec![
                or_dash(&event["at"]),
                or_dash(&event["kind"]),
                or_dash(&event["actor_id"]),
                or_dash(&event["detail"]),
            ]
        })
        .collect();
    table(&["at", "event", "by", "detail"], &rows)
}
