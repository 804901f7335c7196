//! What the end-to-end benchmarks (`e2e-bench`, `cluster-bench`) share:
//! their flags, the people they sign in, the "scores" challenge they
//! publish, submitting past the per-user cap, waiting for results, and
//! percentiles.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::demo::{eventually, register};
use crate::harness::Api;

/// The "scores" challenge: a table of players per case; the reference
/// lists those above ten points, best first.
pub const INIT: &str =
    "CREATE TABLE scores (id int PRIMARY KEY, player text NOT NULL, points int NOT NULL);";
/// The reference solution of the "scores" challenge.
pub const SOLUTION: &str =
    "SELECT player, points FROM scores WHERE points > 10 ORDER BY points DESC, player";
/// A correct attempt, spelled differently from the reference.
pub const ATTEMPT: &str =
    "SELECT player, points FROM scores WHERE NOT points <= 10 ORDER BY points DESC, player";

/// Reads `--name value` pairs; `known` lists the accepted names.
///
/// # Panics
/// On a flag not in `known` or without a value, listing `known`.
pub fn flags(known: &[&str]) -> HashMap<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || format!("flags: {}", known.join(" N "));
    let mut values = HashMap::new();
    for pair in args.chunks(2) {
        assert!(
            known.contains(&pair[0].as_str()),
            "unknown flag {}; {}",
            pair[0],
            usage()
        );
        let value = pair
            .get(1)
            .unwrap_or_else(|| panic!("{} needs a value; {}", pair[0], usage()));
        values.insert(pair[0].clone(), value.clone());
    }
    values
}

/// The value of flag `name` in `flags`, or `default`.
///
/// # Panics
/// When the value does not parse.
pub fn flag<T: FromStr>(flags: &HashMap<String, String>, name: &str, default: T) -> T {
    match flags.get(name) {
        Some(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}: cannot read {value:?}")),
        None => default,
    }
}

/// The value at `fraction` (0..=1) of sorted `values`.
pub fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

/// The people of a benchmark: an admin, a professor and `students`.
pub struct People {
    pub admin: Api,
    pub professor: Api,
    pub students: Vec<Api>,
}

impl People {
    /// Signs in the coordinator's admin, invites and registers a
    /// professor, and registers `students` students (at least one).
    pub async fn sign_up(api: &Api, students: usize) -> People {
        let admin = api.login("admin@example.com", "admin-password").await;
        let (_, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
        let code = invite["data"]["code"]
            .as_str()
            .expect("invite code")
            .to_string();
        let (_, professor) =
            register(api, "prof@bench.test", "Bench Prof", "PROF", Some(&code)).await;
        let mut signed_up = Vec::new();
        for index in 0..students.max(1) {
            let email = format!("student{index}@bench.test");
            signed_up.push(register(api, &email, "Bench Student", "STUD", None).await.1);
        }
        People {
            admin,
            professor,
            students: signed_up,
        }
    }
}

/// The test data of one case of the "scores" challenge: `rows` players
/// whose points follow `seed`.
pub fn scores_case(rows: usize, seed: usize) -> String {
    format!(
        "INSERT INTO scores SELECT g, 'player ' || g, (g * {seed}) % 50 FROM generate_series(1, {rows}) g;"
    )
}

/// Publishes a "scores" challenge named `name` with one case per seed of
/// `rows` rows (the last one hidden), and waits until it is READY (for at
/// most `init_wait`); returns its id.
pub async fn publish_scores_challenge(
    professor: &Api,
    name: &str,
    rows: usize,
    seeds: &[usize],
    times_to_run: u32,
    init_wait: Duration,
) -> i64 {
    let id = create_scores_challenge(professor, name, rows, seeds, times_to_run).await;
    wait_ready(professor, id, init_wait).await;
    id
}

/// Creates the "scores" challenge of [`publish_scores_challenge`] without
/// waiting for its init; returns its id.
pub async fn create_scores_challenge(
    professor: &Api,
    name: &str,
    rows: usize,
    seeds: &[usize],
    times_to_run: u32,
) -> i64 {
    let cases: Vec<Value> = seeds
        .iter()
        .enumerate()
        .map(|(index, seed)| {
            json!({"data": scores_case(rows, *seed), "is_visible": index + 1 < seeds.len()})
        })
        .collect();
    let body = json!({
        "name": name,
        "description": "players above ten points, best first",
        "type": "FE",
        "init": INIT,
        "solution": SOLUTION,
        "times_to_run": times_to_run,
        "expires_at": "2099-12-31T23:59:59Z",
        "test_cases": cases,
    });
    let (status, reply) = professor.post("/challenges", body).await;
    assert_eq!(status, 201, "{reply}");
    reply["data"]["id"].as_i64().expect("challenge id")
}

/// Waits until challenge `id` is READY.
///
/// # Panics
/// When its init fails, or after `wait`.
pub async fn wait_ready(professor: &Api, id: i64, wait: Duration) {
    eventually(&format!("challenge {id} to be READY"), wait, || async {
        let (_, reply) = professor.get(&format!("/challenges/{id}")).await;
        match reply["data"]["state"].as_str() {
            Some("READY") => Some(()),
            Some("FAILED") => panic!("challenge {id} failed: {}", reply["data"]["init_errors"]),
            _ => None,
        }
    })
    .await;
}

/// Submits `query`, retrying while the per-user cap answers 429; returns the
/// attempt id and when the accepted submission was sent.
pub async fn submit(student: &Api, challenge_id: i64, query: &str) -> (i64, Instant) {
    loop {
        let sent = Instant::now();
        let (status, reply) = student
            .post(
                "/attempts",
                json!({"challenge_id": challenge_id, "query": query}),
            )
            .await;
        match status {
            201 => return (reply["data"]["id"].as_i64().expect("attempt id"), sent),
            429 => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("submission refused with {status}: {reply}"),
        }
    }
}

/// Polls an attempt every `every` until it is final; returns it.
pub async fn final_attempt(viewer: &Api, attempt_id: i64, every: Duration) -> Value {
    loop {
        let (status, reply) = viewer.get(&format!("/attempts/{attempt_id}")).await;
        assert_eq!(status, 200, "{reply}");
        match reply["data"]["status"].as_str() {
            Some("PENDING" | "RUNNING") => tokio::time::sleep(every).await,
            Some(_) => return reply["data"].clone(),
            None => panic!("attempt {attempt_id} without a status: {reply}"),
        }
    }
}
