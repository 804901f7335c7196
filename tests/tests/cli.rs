//! The `sqlarena` command-line client as users run it: the real binary
//! against a real coordinator and grader (graders named `cli-*`), each user
//! with their own config directory. The README's quickstart is run here
//! exactly as written, so it cannot drift from the product.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use sqlarena_e2e::harness::{
    binary, postgres_url, start_coordinator, start_grader, workspace_root, Process,
};
use uuid::Uuid;

/// A fresh directory under `target/e2e-data`.
fn temp_dir(label: &str) -> PathBuf {
    let dir = workspace_root()
        .join("target")
        .join("e2e-data")
        .join(format!("{label}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn temp_store(label: &str) -> String {
    format!("sqlite://{}/sqlarena.db", temp_dir(label).display())
}

fn cluster_token() -> String {
    format!("sqc_cli_{}", Uuid::new_v4().simple())
}

/// What one run of `sqlarena` did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// One user of the CLI: their own config directory.
struct User {
    config_dir: PathBuf,
}

impl User {
    fn new(label: &str) -> User {
        User {
            config_dir: temp_dir(&format!("cli-config-{label}")),
        }
    }

    fn credentials(&self) -> PathBuf {
        self.config_dir.join("credentials.toml")
    }

    /// Runs `sqlarena ARGS` as this user, from the workspace root.
    async fn run(&self, args: &[&str]) -> Run {
        let output = tokio::process::Command::new(binary("sqlarena"))
            .args(args)
            .current_dir(workspace_root())
            .env("SQLARENA_CONFIG_DIR", &self.config_dir)
            .env_remove("SQLARENA_PASSWORD")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("running sqlarena");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs and expects exit code `code`.
    async fn expect(&self, code: i32, args: &[&str]) -> Run {
        let run = self.run(args).await;
        assert_eq!(
            run.code, code,
            "sqlarena {args:?} exited {} (expected {code})\nstdout:\n{}\nstderr:\n{}",
            run.code, run.stdout, run.stderr
        );
        run
    }

    /// Runs with `--json`, expects exit code `code` and parses standard output.
    async fn json(&self, code: i32, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let run = self.expect(code, &args).await;
        serde_json::from_str(&run.stdout).unwrap_or_else(|error| {
            panic!(
                "sqlarena {args:?} printed no JSON ({error}):\n{}",
                run.stdout
            )
        })
    }

    async fn login(&self, url: &str, email: &str, password: &str) {
        let run = self
            .expect(0, &["login", url, "--email", email, "--password", password])
            .await;
        assert!(run.stdout.contains(&format!("as {email}")), "{run:?}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn example(path: &str) -> PathBuf {
    workspace_root().join("docs").join("examples").join(path)
}

/// The rows of an attempt table whose status column is `status`.
fn table_rows_with(stdout: &str, status: &str) -> usize {
    stdout
        .lines()
        .filter(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            cells.len() >= 3
                && cells[0].parse::<i64>().is_ok()
                && matches!(cells[1], "visible" | "hidden")
                && cells[2] == status
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_pushes_a_challenge_directory_submits_and_prints_the_results() {
    let token = cluster_token();
    let mut coordinator =
        start_coordinator("cli-flow-coordinator", &temp_store("cli-flow"), &token, &[]).await;
    let url = coordinator.url().to_string();
    let mut grader = start_grader("cli-flow", &url, &token, &[]).await;

    let admin = User::new("admin");
    admin
        .login(&url, "admin@example.com", "admin-password")
        .await;
    let credentials = std::fs::metadata(admin.credentials()).unwrap();
    assert_eq!(credentials.permissions().mode() & 0o777, 0o600);
    let kept = std::fs::read_to_string(admin.credentials()).unwrap();
    assert!(kept.contains("token = \"sqa_"), "{kept}");

    let invite = admin
        .expect(0, &["invite", "create", "--role", "PROF"])
        .await;
    let code = invite.stdout.trim();
    assert!(code.starts_with("sqi_"), "{invite:?}");
    let professor = User::new("professor");
    let registered = professor
        .expect(
            0,
            &[
                "register",
                &url,
                "--email",
                "prof-cli@example.edu",
                "--name",
                "Prof CLI",
                "--invite",
                code,
                "--password",
                "prof-password",
            ],
        )
        .await;
    assert!(registered.stdout.contains("as PROF"), "{registered:?}");

    // First push: created, initialized by the grader.
    let dir = temp_dir("cli-challenge").join("big-spenders");
    copy_dir(&example("big-spenders"), &dir);
    let dir_arg = dir.to_str().unwrap();
    let pushed = professor
        .json(0, &["challenge", "push", dir_arg, "--wait"])
        .await;
    assert_eq!(pushed["action"], "created", "{pushed}");
    let challenge = &pushed["challenge"];
    assert_eq!(challenge["state"], "READY", "{challenge}");
    assert_eq!(challenge["version"], 1);
    assert_eq!(challenge["name"], "Big spenders");
    let visible: Vec<bool> = challenge["test_cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| case["is_visible"].as_bool().unwrap())
        .collect();
    assert_eq!(visible, vec![true, true, false]);
    let challenge_id = challenge["id"].as_i64().unwrap();
    let id = challenge_id.to_string();

    // The same directory again: no new version.
    let again = professor.expect(0, &["challenge", "push", dir_arg]).await;
    assert!(again.stdout.contains("updated in place"), "{again:?}");
    let shown = professor.json(0, &["challenge", "show", &id]).await;
    assert_eq!(shown["version"], 1);

    // A changed solution: a new version, initialized again.
    std::fs::write(
        dir.join("solution.sql"),
        "SELECT c.name, sum(o.amount) AS total FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.id, c.name ORDER BY 2 DESC, 1",
    )
    .unwrap();
    let pushed = professor
        .json(0, &["challenge", "push", dir_arg, "--wait"])
        .await;
    assert_eq!(pushed["action"], "new_version", "{pushed}");
    assert_eq!(pushed["challenge"]["version"], 2);
    assert_eq!(pushed["challenge"]["state"], "READY");
    assert_eq!(pushed["challenge"]["id"].as_i64(), Some(challenge_id));

    // A student's correct attempt: the table, exit 0.
    let student = User::new("student");
    student
        .expect(
            0,
            &[
                "register",
                &url,
                "--email",
                "stud-cli@example.edu",
                "--name",
                "Stud CLI",
                "--password",
                "stud-password",
            ],
        )
        .await;
    let attempt_file = example("big-spenders-attempt.sql");
    let passed = student
        .expect(
            0,
            &[
                "attempt",
                "submit",
                &id,
                attempt_file.to_str().unwrap(),
                "--wait",
            ],
        )
        .await;
    let first_line = passed.stdout.lines().next().unwrap_or_default();
    assert!(
        first_line.contains("(version 2)") && first_line.ends_with(": PASSED"),
        "{passed:?}"
    );
    assert!(
        passed.stdout.contains("case  shown    status  ms"),
        "{passed:?}"
    );
    assert!(
        passed.stdout.contains("JOIN (SELECT customer_id"),
        "{passed:?}"
    );
    assert_eq!(table_rows_with(&passed.stdout, "PASSED"), 3, "{passed:?}");
    let passed_id = first_line.split_whitespace().nth(1).unwrap().to_string();

    // A wrong one: exit 1, and the JSON parses with every case.
    let wrong = temp_dir("cli-wrong").join("wrong.sql");
    std::fs::write(
        &wrong,
        "SELECT name, 1 AS total FROM customers ORDER BY name",
    )
    .unwrap();
    let failed = student
        .json(
            1,
            &["attempt", "submit", &id, wrong.to_str().unwrap(), "--wait"],
        )
        .await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let cases = failed["attempts"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    assert!(cases.iter().all(|case| case["status"] == "FAILED"));
    assert!(cases[0]["diff"].as_str().is_some(), "{failed}");
    assert!(
        cases[2].get("diff").is_none(),
        "a hidden case showed its diff"
    );
    let failed_text = student
        .expect(0, &["attempt", "show", &failed["id"].to_string()])
        .await;
    assert_eq!(table_rows_with(&failed_text.stdout, "FAILED"), 3);

    let shown = student.json(0, &["attempt", "show", &passed_id]).await;
    assert_eq!(shown["status"], "PASSED");
    let board = student.expect(0, &["challenge", "show", &id]).await;
    assert!(board.stdout.contains("geometric mean"), "{board:?}");
    assert!(board.stdout.contains("Stud CLI"), "{board:?}");
    assert!(!board.stdout.contains("\"READY\""), "{board:?}");

    let listed = professor.json(0, &["challenge", "ls"]).await;
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|challenge| challenge["id"].as_i64() == Some(challenge_id)));
    let graders = admin.json(0, &["grader", "ls"]).await;
    assert!(
        graders
            .as_array()
            .unwrap()
            .iter()
            .any(|grader| grader["name"] == "cli-flow" && grader["state"] == "ALIVE"),
        "{graders}"
    );
    let cluster = admin.expect(0, &["token", "create", "lab machines"]).await;
    assert!(cluster.stdout.trim().starts_with("sqc_"), "{cluster:?}");
    let drained = admin.json(0, &["grader", "drain", "cli-flow"]).await;
    assert_eq!(drained["state"], "DRAINING", "{drained}");

    student.expect(0, &["logout"]).await;
    assert!(!student.credentials().exists());
    let after = student.expect(3, &["challenge", "ls"]).await;
    assert!(after.stderr.contains("not logged in"), "{after:?}");

    grader.terminate(std::time::Duration::from_secs(15)).await;
    coordinator
        .terminate(std::time::Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exit_codes_say_what_failed() {
    let token = cluster_token();
    let mut coordinator = start_coordinator(
        "cli-codes-coordinator",
        &temp_store("cli-codes"),
        &token,
        &[],
    )
    .await;
    let url = coordinator.url().to_string();

    let admin = User::new("codes-admin");
    let wrong = admin
        .expect(
            3,
            &[
                "login",
                &url,
                "--email",
                "admin@example.com",
                "--password",
                "not-the-password",
            ],
        )
        .await;
    assert!(
        wrong.stderr.contains("wrong email or password"),
        "{wrong:?}"
    );
    assert!(!admin.credentials().exists());
    let anonymous = admin.expect(3, &["challenge", "ls"]).await;
    assert!(anonymous.stderr.contains("not logged in"), "{anonymous:?}");

    admin
        .login(&url, "admin@example.com", "admin-password")
        .await;
    let missing = admin.expect(4, &["challenge", "show", "999999"]).await;
    assert!(
        missing.stderr.contains("no challenge 999999"),
        "{missing:?}"
    );
    admin.expect(4, &["attempt", "show", "999999"]).await;
    admin
        .expect(
            4,
            &["grader", "drain", "0190b5d4-0000-7000-8000-000000000000"],
        )
        .await;

    let student = User::new("codes-student");
    student
        .expect(
            0,
            &[
                "register",
                &url,
                "--email",
                "stud-codes@example.edu",
                "--name",
                "Stud Codes",
                "--password",
                "stud-password",
            ],
        )
        .await;
    let invite = student
        .expect(3, &["invite", "create", "--role", "PROF"])
        .await;
    assert!(invite.stderr.to_lowercase().contains("admin"), "{invite:?}");
    assert!(invite.stdout.is_empty(), "{invite:?}");
    let push = student
        .expect(
            3,
            &[
                "challenge",
                "push",
                example("big-spenders").to_str().unwrap(),
            ],
        )
        .await;
    assert!(push.stderr.starts_with("error: "), "{push:?}");
    student.expect(3, &["grader", "ls"]).await;

    // Usage: clap's own errors and local files that are not there.
    student.expect(2, &["attempt", "submit"]).await;
    student.expect(2, &["challenge", "show", "first"]).await;
    let no_dir = student
        .expect(2, &["challenge", "push", "/nonexistent/challenge"])
        .await;
    assert!(no_dir.stderr.contains("not a directory"), "{no_dir:?}");
    // Refused as given (422): an empty query.
    let empty = admin
        .expect(2, &["attempt", "submit", "999999", "/dev/null"])
        .await;
    assert!(empty.stderr.contains("query"), "{empty:?}");

    // Network: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = User::new("codes-nowhere")
        .expect(
            5,
            &[
                "login",
                &format!("http://127.0.0.1:{port}"),
                "--email",
                "a@example.com",
                "--password",
                "whatever-password",
            ],
        )
        .await;
    assert!(
        unreachable.stderr.contains("cannot reach the coordinator"),
        "{unreachable:?}"
    );

    coordinator
        .terminate(std::time::Duration::from_secs(10))
        .await;
}

/// The quickstart block of README.md: the lines after the marker comment,
/// inside the next ```sh fence.
fn readme_quickstart() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let start = readme
        .find("<!-- quickstart")
        .expect("README.md has a `<!-- quickstart` marker before its quickstart block");
    let block = &readme[start..];
    let fence = block
        .find("```sh\n")
        .expect("a ```sh block after the marker");
    let block = &block[fence + "```sh\n".len()..];
    let end = block.find("```").expect("the quickstart block ends");
    block[..end].lines().map(str::to_string).collect()
}

/// Sets `flag` to `value` in `args`, replacing its value if present.
fn set_flag(args: &mut Vec<String>, flag: &str, value: &str) {
    match args.iter().position(|arg| arg == flag) {
        Some(index) => args[index + 1] = value.to_string(),
        None => args.extend([flag.to_string(), value.to_string()]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quickstart_runs_as_written() {
    /// The address the README's coordinator listens on.
    const README_URL: &str = "http://127.0.0.1:8080";
    let lines = readme_quickstart();
    let commands: Vec<&str> = lines
        .iter()
        .map(|line| line.trim())
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    assert!(
        commands.len() < 10,
        "the quickstart promises under ten commands: {commands:#?}"
    );
    let mut processes: Vec<Process> = Vec::new();
    let mut url = String::new();
    let user = User::new("quickstart");
    let path = format!(
        "{}:{}",
        binary("sqlarena").parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut last_stdout = String::new();
    for command in &commands {
        // Words without the trailing `&` and comment.
        let words: Vec<String> = command
            .split("  #")
            .next()
            .unwrap()
            .split_whitespace()
            .filter(|word| *word != "&")
            .map(str::to_string)
            .collect();
        match words[0].as_str() {
            // The tests already built the binaries and set PATH themselves.
            "cargo" | "export" => {}
            "target/release/coordinator" => {
                let mut args = words[1..].to_vec();
                set_flag(&mut args, "--listen", "127.0.0.1:0");
                set_flag(&mut args, "--store", &temp_store("cli-quickstart"));
                let process = Process::start(
                    "cli-quickstart-coordinator",
                    &binary("coordinator"),
                    &args,
                    true,
                )
                .await;
                url = process.url().to_string();
                processes.push(process);
            }
            "target/release/grader" => {
                assert!(!url.is_empty(), "the grader starts before the coordinator");
                let mut args = words[1..].to_vec();
                set_flag(&mut args, "--coordinator", &url);
                set_flag(&mut args, "--postgres", &postgres_url());
                set_flag(&mut args, "--name", "cli-quickstart");
                processes
                    .push(Process::start("cli-quickstart", &binary("grader"), &args, false).await);
            }
            "sqlarena" => {
                assert!(
                    !url.is_empty(),
                    "a CLI command before the coordinator starts"
                );
                let line = command.replace(README_URL, &url);
                let output = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(&line)
                    .current_dir(workspace_root())
                    .env("PATH", &path)
                    .env("SQLARENA_CONFIG_DIR", &user.config_dir)
                    .stdin(Stdio::null())
                    .output()
                    .await
                    .unwrap();
                let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
                assert!(
                    output.status.success(),
                    "README quickstart: `{command}` exited {:?}\nstdout:\n{stdout}\nstderr:\n{}",
                    output.status.code(),
                    String::from_utf8_lossy(&output.stderr)
                );
                last_stdout = stdout;
            }
            other => panic!("the quickstart has a command this test cannot run: {other}"),
        }
    }
    assert!(
        last_stdout
            .lines()
            .next()
            .unwrap_or_default()
            .ends_with(": PASSED"),
        "the quickstart should end with a graded attempt:\n{last_stdout}"
    );
    assert_eq!(table_rows_with(&last_stdout, "PASSED"), 3, "{last_stdout}");
    for mut process in processes.into_iter().rev() {
        process.terminate(std::time::Duration::from_secs(15)).await;
    }
}

/// A professor grades the class with a run and holds a timed assessment,
/// and a student takes it, all from the shell; a student may do neither
/// staff command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_runs_a_class_and_holds_an_assessment() {
    let token = cluster_token();
    let mut coordinator =
        start_coordinator("cli-runs-coordinator", &temp_store("cli-runs"), &token, &[]).await;
    let url = coordinator.url().to_string();
    let mut grader = start_grader("cli-runs", &url, &token, &[]).await;
    let admin = User::new("runs-admin");
    admin
        .login(&url, "admin@example.com", "admin-password")
        .await;
    let code = admin
        .expect(0, &["invite", "create", "--role", "PROF"])
        .await
        .stdout;
    let professor = User::new("runs-professor");
    professor
        .expect(
            0,
            &[
                "register",
                &url,
                "--email",
                "prof-runs@example.edu",
                "--name",
                "Prof Runs",
                "--invite",
                code.trim(),
                "--password",
                "prof-password",
            ],
        )
        .await;
    let dir = temp_dir("cli-runs-challenge").join("big-spenders");
    copy_dir(&example("big-spenders"), &dir);
    let pushed = professor
        .json(0, &["challenge", "push", dir.to_str().unwrap(), "--wait"])
        .await;
    let challenge_id = pushed["challenge"]["id"].as_i64().unwrap().to_string();
    let attempt_file = example("big-spenders-attempt.sql");
    let attempt_file = attempt_file.to_str().unwrap();
    let mut students = Vec::new();
    for index in 0..2 {
        let student = User::new(&format!("runs-student-{index}"));
        student
            .expect(
                0,
                &[
                    "register",
                    &url,
                    "--email",
                    &format!("stud-runs-{index}@example.edu"),
                    "--name",
                    &format!("Student {index}"),
                    "--password",
                    "stud-password",
                ],
            )
            .await;
        student
            .expect(
                0,
                &["attempt", "submit", &challenge_id, attempt_file, "--wait"],
            )
            .await;
        students.push(student);
    }

    // A run over the class: it ends COMPLETED with one item per student.
    let refused = students[0]
        .expect(3, &["run", "start", &challenge_id])
        .await;
    assert!(!refused.stderr.is_empty(), "{refused:?}");
    let run = professor
        .json(
            0,
            &["run", "start", &challenge_id, "--wait", "--timeout", "300"],
        )
        .await;
    assert_eq!(run["state"], "COMPLETED", "{run}");
    assert_eq!(run["counts"]["done"], 2, "{run}");
    let run_id = &run["id"].to_string();
    let items = professor.json(0, &["run", "items", run_id]).await;
    let statuses: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["PASSED", "PASSED"], "{items}");
    let gradebook = temp_dir("cli-runs-gradebook").join("gradebook.csv");
    professor
        .expect(
            0,
            &[
                "run",
                "gradebook",
                run_id,
                "--output",
                gradebook.to_str().unwrap(),
            ],
        )
        .await;
    let csv = std::fs::read_to_string(&gradebook).unwrap();
    assert_eq!(
        csv.lines().count(),
        3,
        "a header and a row per student:\n{csv}"
    );
    let shown = professor.expect(0, &["run", "show", run_id]).await;
    assert!(shown.stdout.contains(": COMPLETED"), "{shown:?}");
    assert!(shown.stdout.contains("2 done"), "{shown:?}");

    // A timed assessment over the challenge.
    let now = chrono::Utc::now();
    let spec = serde_json::json!({
        "name": "CLI quiz",
        "zones": [{"pool": [challenge_id.parse::<i64>().unwrap()], "pick": 1, "points": 4.0}],
        "selection": "stable", "time_limit_s": 600,
        "opens_at": (now - chrono::Duration::minutes(1)).to_rfc3339(),
        "closes_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
        "feedback": "immediate", "scoreboard": "hidden"
    });
    let spec_file = temp_dir("cli-assessment").join("quiz.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    let assessment = professor
        .json(0, &["assessment", "create", spec_file.to_str().unwrap()])
        .await;
    let assessment_id = assessment["id"].to_string();
    let student = &students[0];
    let session = student
        .json(0, &["assessment", "start", &assessment_id])
        .await;
    let session_id = session["id"].to_string();
    let deadline = session["deadline"].as_str().unwrap().to_string();
    let graded = student
        .json(
            0,
            &[
                "session",
                "submit",
                &session_id,
                "1",
                attempt_file,
                "--wait",
            ],
        )
        .await;
    assert_eq!(graded["status"], "PASSED", "{graded}");

    // Staff add time; the student may not.
    let refused = student
        .expect(3, &["session", "time", &session_id, "60"])
        .await;
    assert!(!refused.stderr.is_empty(), "{refused:?}");
    let extended = professor
        .json(0, &["session", "time", &session_id, "60"])
        .await;
    assert_ne!(extended["deadline"].as_str().unwrap(), deadline);
    let finished = student.json(0, &["session", "finish", &session_id]).await;
    assert_eq!(finished["state"], "FINALIZED", "{finished}");
    let scores = professor
        .expect(0, &["assessment", "scores", &assessment_id])
        .await;
    assert!(scores.stdout.contains("4.0 / 4.0"), "{scores:?}");
    let log = professor.json(0, &["session", "log", &session_id]).await;
    let kinds: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"started") && kinds.contains(&"extended"),
        "{kinds:?}"
    );

    grader.terminate(std::time::Duration::from_secs(15)).await;
    coordinator
        .terminate(std::time::Duration::from_secs(10))
        .await;
}
