//! The demo flow: a coordinator on the embedded store and two graders as
//! processes, an admin, a professor and three students, a sample challenge
//! (three test cases, one hidden), correct, wrong, slow and hostile attempts,
//! each attempt's per-case results and the leaderboard.
//!
//! `scripts/demo.sh` runs it with tables printed; the end-to-end test runs the
//! same flow and checks every response.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{start_coordinator, start_grader, workspace_root, Api, Process};

/// The sample challenge's schema.
pub const INIT: &str = "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, country text NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id), amount numeric(10,2) NOT NULL);";

/// The reference: customers by total spent, biggest first.
pub const SOLUTION: &str = "SELECT c.name, sum(o.amount) AS total
FROM customers c JOIN orders o ON o.customer_id = c.id
GROUP BY c.id, c.name
ORDER BY total DESC, c.name";

/// Test data of a case: `customers` customers with a few orders each.
pub fn case_data(customers: usize, seed: usize) -> String {
    format!(
        "INSERT INTO customers SELECT g, 'customer ' || g, (ARRAY['FR','DE','SG','BR'])[1 + g % 4] FROM generate_series(1, {customers}) g;
INSERT INTO orders SELECT g, 1 + (g * {seed}) % {customers}, ((g * 37 + {seed}) % 1000) / 10.0 FROM generate_series(1, {orders}) g;",
        orders = customers * 4
    )
}

/// The attempts the demo submits, by kind.
pub fn demo_attempts() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "correct",
            "SELECT c.name, t.total FROM customers c JOIN (SELECT customer_id, sum(amount) AS total FROM orders GROUP BY customer_id) t ON t.customer_id = c.id ORDER BY t.total DESC, c.name",
        ),
        (
            "wrong",
            "SELECT c.name, max(o.amount) AS total FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.id, c.name ORDER BY total DESC, c.name",
        ),
        (
            "slow",
            "SELECT c.name, sum(o.amount) AS total FROM customers c JOIN orders o ON o.customer_id = c.id CROSS JOIN LATERAL (SELECT count(*) FROM generate_series(1, 200 + o.id % 2)) AS busy GROUP BY c.id, c.name ORDER BY total DESC, c.name",
        ),
        ("hostile", "DELETE FROM orders RETURNING id"),
    ]
}

/// What the demo produced, for the end-to-end test to check.
pub struct DemoReport {
    pub challenge: Value,
    /// (kind, student email, final attempt as the student sees it)
    pub attempts: Vec<(String, String, Value)>,
    /// The challenge as the professor sees it, with `top_attempts`.
    pub professor_view: Value,
    /// The challenge as a student sees it.
    pub student_view: Value,
    /// The hostile attempt as the professor sees it.
    pub hostile_as_professor: Value,
}

/// The running processes of a demo cluster.
pub struct DemoCluster {
    pub coordinator: Process,
    pub graders: Vec<Process>,
}

impl DemoCluster {
    /// Starts a coordinator on a fresh embedded store and two graders.
    pub async fn start(label: &str) -> DemoCluster {
        DemoCluster::start_with(label, &[], 2, &["--slots", "2"]).await
    }

    /// Starts a coordinator on a fresh embedded store with
    /// `coordinator_flags`, and `graders` graders (named
    /// `LABEL-grader-N`) with `grader_flags`.
    pub async fn start_with(
        label: &str,
        coordinator_flags: &[&str],
        graders: usize,
        grader_flags: &[&str],
    ) -> DemoCluster {
        let data = workspace_root()
            .join("target")
            .join("demo-data")
            .join(format!("{label}-{}", Uuid::new_v4().simple()));
        let store = format!("sqlite://{}/sqlarena.db", data.display());
        let token = format!("sqc_demo_{}", Uuid::new_v4().simple());
        let coordinator = start_coordinator(
            &format!("{label}-coordinator"),
            &store,
            &token,
            coordinator_flags,
        )
        .await;
        let mut started = Vec::new();
        for index in 1..=graders {
            let name = format!("{label}-grader-{index}");
            started.push(start_grader(&name, coordinator.url(), &token, grader_flags).await);
        }
        DemoCluster {
            coordinator,
            graders: started,
        }
    }

    /// Stops every process with SIGTERM.
    pub async fn stop(mut self) {
        for grader in &mut self.graders {
            grader.terminate(Duration::from_secs(15)).await;
        }
        self.coordinator.terminate(Duration::from_secs(10)).await;
    }
}

/// Waits until `check` returns a value, polling every 100 ms.
///
/// # Panics
/// After `timeout`, naming `what`.
pub async fn eventually<F, Fut, T>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Registers a user (with an invite code for professors) and logs in.
pub async fn register(
    api: &Api,
    email: &str,
    name: &str,
    role: &str,
    invite: Option<&str>,
) -> (i64, Api) {
    let mut body =
        json!({"email": email, "full_name": name, "role": role, "password": "demo-password"});
    if let Some(code) = invite {
        body["invite"] = json!(code);
    }
    let (status, reply) = api.post("/register", body).await;
    assert_eq!(status, 201, "registering {email}: {reply}");
    assert!(
        reply["data"].get("password").is_none() && reply["data"].get("unsafe_password").is_none()
    );
    (
        reply["data"]["id"].as_i64().unwrap(),
        api.login(email, "demo-password").await,
    )
}

/// Creates the sample challenge as `professor` and waits until it is READY.
pub async fn publish_sample_challenge(professor: &Api, name: &str, init_wait: Duration) -> Value {
    let body = json!({
        "name": name,
        "description": "List every customer who ordered, with the total they spent, biggest spender first.",
        "type": "FE",
        "init": INIT,
        "solution": SOLUTION,
        "times_to_run": 5,
        "expires_at": "2099-12-31T23:59:59Z",
        "test_cases": [
            {"data": case_data(20, 7), "is_visible": true},
            {"data": case_data(200, 11), "is_visible": true},
            {"data": case_data(400, 13), "is_visible": false},
        ]
    });
    let (status, reply) = professor.post("/challenges", body).await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["data"]["state"], "PENDING");
    let id = reply["data"]["id"].as_i64().unwrap();
    eventually("the challenge to be READY", init_wait, || async {
        let (_, reply) = professor.get(&format!("/challenges/{id}")).await;
        match reply["data"]["state"].as_str() {
            Some("READY") => Some(reply["data"].clone()),
            Some("FAILED") => panic!("challenge init failed: {}", reply["data"]["init_errors"]),
            _ => None,
        }
    })
    .await
}

/// Submits `query` and returns the new attempt's id.
pub async fn submit(student: &Api, challenge_id: i64, query: &str) -> i64 {
    let (status, reply) = student
        .post(
            "/attempts",
            json!({"challenge_id": challenge_id, "query": query}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    reply["data"]["id"].as_i64().unwrap()
}

/// Submits `query` and waits for its final result.
pub async fn grade(student: &Api, challenge_id: i64, query: &str) -> Value {
    let id = submit(student, challenge_id, query).await;
    wait_final(student, id).await
}

/// Waits until an attempt is final and returns it.
pub async fn wait_final(viewer: &Api, attempt_id: i64) -> Value {
    eventually(
        &format!("attempt {attempt_id} to be graded"),
        Duration::from_secs(120),
        || async {
            let (_, reply) = viewer.get(&format!("/attempts/{attempt_id}")).await;
            match reply["data"]["status"].as_str() {
                Some("PENDING" | "RUNNING") | None => None,
                Some(_) => Some(reply["data"].clone()),
            }
        },
    )
    .await
}

/// Runs the demo against a started cluster; prints tables when `print`.
pub async fn run_demo(cluster: &DemoCluster, print: bool) -> DemoReport {
    let api = Api::new(cluster.coordinator.url());
    let admin = api.login("admin@example.com", "admin-password").await;
    let (status, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
    assert_eq!(status, 201, "{invite}");
    let code = invite["data"]["code"].as_str().unwrap().to_string();
    let (_, professor) =
        register(&api, "ada@example.edu", "Ada Lovelace", "PROF", Some(&code)).await;
    let mut students = Vec::new();
    for (email, name) in [
        ("alan@example.edu", "Alan Turing"),
        ("grace@example.edu", "Grace Hopper"),
        ("edgar@example.edu", "Edgar Codd"),
    ] {
        let (_, client) = register(&api, email, name, "STUD", None).await;
        students.push((email.to_string(), client));
    }
    let challenge =
        publish_sample_challenge(&professor, "Big spenders", Duration::from_secs(120)).await;
    let challenge_id = challenge["id"].as_i64().unwrap();
    if print {
        print_challenge(&challenge);
    }
    let plan = demo_attempts();
    let submitters = [0usize, 1, 2, 0];
    // Submitted one after the other, so attempt ids follow the plan; graded
    // concurrently by the two graders.
    let mut handles = Vec::new();
    for ((kind, query), who) in plan.iter().zip(submitters) {
        let (email, client) = students[who].clone();
        let attempt_id = submit(&client, challenge_id, query).await;
        let kind = kind.to_string();
        handles.push(tokio::spawn(async move {
            let result = wait_final(&client, attempt_id).await;
            (kind, email, result)
        }));
    }
    let mut attempts = Vec::new();
    for handle in handles {
        attempts.push(handle.await.expect("attempt task"));
    }
    let hostile_id = attempts
        .iter()
        .find(|(kind, _, _)| kind == "hostile")
        .map(|(_, _, a)| a["id"].as_i64().unwrap())
        .unwrap();
    let (_, hostile_as_professor) = professor.get(&format!("/attempts/{hostile_id}")).await;
    if print {
        for (kind, email, attempt) in &attempts {
            print_attempt(kind, email, attempt);
        }
    }
    let (_, professor_view) = professor.get(&format!("/challenges/{challenge_id}")).await;
    let (_, student_view) = students[1]
        .1
        .get(&format!("/challenges/{challenge_id}"))
        .await;
    if print {
        print_leaderboard(&professor_view["data"]);
    }
    DemoReport {
        challenge,
        attempts,
        professor_view: professor_view["data"].clone(),
        student_view: student_view["data"].clone(),
        hostile_as_professor: hostile_as_professor["data"].clone(),
    }
}

fn number(value: &Value, digits: usize) -> String {
    value
        .as_f64()
        .map(|n| format!("{n:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("  {}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for row in rows {
        line(row.clone());
    }
}

/// A JSON value as text: strings without their quotes, null as `-`.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Prints `text` with every line indented.
fn print_indented(text: &str) {
    for line in text.trim_end().lines() {
        println!("    {line}");
    }
}

fn print_challenge(challenge: &Value) {
    println!(
        "\nchallenge {} \"{}\" ({}, {} timed runs per case) is {} (initialized at {})",
        challenge["id"],
        plain(&challenge["name"]),
        plain(&challenge["type"]),
        challenge["times_to_run"],
        plain(&challenge["state"]),
        plain(&challenge["init_at"])
    );
    print_indented(&plain(&challenge["description"]));
    println!("  schema:");
    print_indented(&plain(&challenge["init"]));
    let cases = challenge["test_cases"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let hidden = cases
        .iter()
        .filter(|case| case["is_visible"] == false)
        .count();
    println!(
        "  {} test cases ({hidden} hidden: students see only whether they passed)",
        cases.len()
    );
}

fn print_attempt(kind: &str, email: &str, attempt: &Value) {
    println!(
        "\nattempt {} ({kind}) by {email}: {}",
        attempt["id"],
        plain(&attempt["status"])
    );
    print_indented(&plain(&attempt["query"]));
    if let Some(error) = attempt["error"].as_str() {
        println!("  error: {error}");
    }
    let cases = attempt["attempts"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = cases
        .iter()
        .map(|case| {
            vec![
                case["test_case_id"].to_string(),
                if case["is_visible"].as_bool().unwrap_or(false) {
                    "visible".into()
                } else {
                    "hidden".into()
                },
                plain(&case["status"]),
                number(&case["execution_ms"], 3),
                number(&case["reference_ms"], 3),
                number(&case["ratio"], 2),
            ]
        })
        .collect();
    print_table(&["case", "shown", "status", "ms", "ref ms", "ratio"], &rows);
    // The whole detail of each failing case, never cut.
    for case in &cases {
        if let Some(detail) = case["diff"].as_str().or(case["error"].as_str()) {
            println!("  case {}:", case["test_case_id"]);
            print_indented(detail);
        }
    }
}

fn print_leaderboard(challenge: &Value) {
    println!(
        "\nleaderboard of \"{}\": ratio = geometric mean over the test cases of (student time / reference time); FE: lowest wins",
        challenge["name"].as_str().unwrap_or("")
    );
    let rows: Vec<Vec<String>> = challenge["top_attempts"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|entry| {
                    vec![
                        entry["rank"].to_string(),
                        entry["user_full_name"].as_str().unwrap_or("").to_string(),
                        entry["attempt_id"].to_string(),
                        number(&entry["score"], 3),
                        number(&entry["completion_time_ms"], 3),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    print_table(&["rank", "student", "attempt", "ratio", "total ms"], &rows);
}
