//! Exports and operations end to end: a real coordinator (killed and
//! restarted where it matters), real graders on real PostgreSQL, files in
//! the coordinator's data directory, downloads with `Range`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use sqlarena_e2e::demo::{
    eventually, publish_sample_challenge, register, submit, wait_final, SOLUTION,
};
use sqlarena_e2e::harness::{start_coordinator, start_grader, temp_store, Api};
use uuid::Uuid;

const WRONG: &str = "SELECT c.name, 0 AS total FROM customers c ORDER BY c.name";
/// A slow but correct query, so a run item takes a while.
const SLOW_CORRECT: &str = "SELECT c.name, sum(o.amount) AS total FROM customers c JOIN orders o ON o.customer_id = c.id CROSS JOIN LATERAL (SELECT count(*) FROM generate_series(1, 3000 + o.id % 2)) AS busy GROUP BY c.id, c.name ORDER BY total DESC, c.name";

fn token() -> String {
    format!("sqc_test_{}", Uuid::new_v4().simple())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The directory a coordinator on `store` writes its export files to.
fn exports_dir(store: &str) -> PathBuf {
    let path = PathBuf::from(store.strip_prefix("sqlite://").unwrap());
    path.parent().unwrap().join("exports")
}

/// The files of export `id` in `dir` (finished or partial).
fn files_of(dir: &PathBuf, id: i64) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let prefix = format!("{id}.");
    entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

/// An admin, two professors and `students` students (ids and clients).
async fn people(api: &Api, label: &str, students: usize) -> (Api, Api, Api, Vec<(i64, Api)>) {
    let admin = api.login("admin@example.com", "admin-password").await;
    let mut professors = Vec::new();
    for which in ["a", "b"] {
        let (status, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
        assert_eq!(status, 201, "{invite}");
        let code = invite["data"]["code"].as_str().unwrap().to_string();
        let (_, professor) = register(
            api,
            &format!("exports-prof-{which}-{label}@example.edu"),
            "Prof",
            "PROF",
            Some(&code),
        )
        .await;
        professors.push(professor);
    }
    let mut people = Vec::new();
    for index in 0..students {
        people.push(
            register(
                api,
                &format!("exports-stud-{index}-{label}@example.edu"),
                &format!("Student {index}"),
                "STUD",
                None,
            )
            .await,
        );
    }
    let second = professors.pop().unwrap();
    let first = professors.pop().unwrap();
    (admin, first, second, people)
}

async fn export_state(viewer: &Api, id: i64) -> Value {
    let (status, reply) = viewer.get(&format!("/exports/{id}")).await;
    assert_eq!(status, 200, "{reply}");
    reply["data"].clone()
}

async fn wait_export_final(viewer: &Api, id: i64) -> Value {
    eventually(
        &format!("export {id} to finish"),
        Duration::from_secs(120),
        || async {
            let export = export_state(viewer, id).await;
            (!matches!(export["state"].as_str(), Some("RUNNING" | "PAUSED"))).then_some(export)
        },
    )
    .await
}

/// GETs `path` (under the API) with an optional `Range`; answers status,
/// `Content-Range` and the body's bytes.
async fn download(
    viewer: &Api,
    base: &str,
    path: &str,
    range: Option<&str>,
) -> (u16, Option<String>, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .get(format!("{base}/api/v1{path}"))
        .bearer_auth(viewer.token.as_deref().unwrap());
    if let Some(range) = range {
        request = request.header("Range", range);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_range = response
        .headers()
        .get("content-range")
        .map(|value| value.to_str().unwrap().to_string());
    (
        status,
        content_range,
        response.bytes().await.unwrap().to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exports_are_scoped_to_their_professor_and_downloaded_with_ranges() {
    let token = token();
    let store = temp_store("exports-main");
    let coordinator = start_coordinator(
        "exports-coordinator",
        &store,
        &token,
        &["--export-ttl", "20s"],
    )
    .await;
    let base = coordinator.url().to_string();
    let mut grader = start_grader("exports-grader", &base, &token, &["--slots", "2"]).await;
    let api = Api::new(&base);
    let (admin, professor, other, students) = people(&api, "main", 3).await;
    let challenge = publish_sample_challenge(
        &professor,
        "exports: big spenders",
        Duration::from_secs(120),
    )
    .await;
    let challenge_id = challenge["id"].as_i64().unwrap();
    for ((_, student), query) in students.iter().zip([SOLUTION, WRONG, SOLUTION]) {
        let attempt = submit(student, challenge_id, query).await;
        wait_final(student, attempt).await;
    }
    grader.terminate(Duration::from_secs(15)).await;
    // An assessment with a manual score: the gradebook shows it.
    let now = chrono::Utc::now();
    let (status, reply) = professor
        .post(
            "/assessments",
            json!({
                "name": "Quiz", "zones": [{"pool": [challenge_id], "pick": 1, "points": 10.0}],
                "selection": "stable", "time_limit_s": 600,
                "opens_at": (now - chrono::Duration::minutes(1)).to_rfc3339(),
                "closes_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
                "feedback": "immediate", "scoreboard": "hidden"
            }),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let assessment_id = reply["data"]["id"].as_i64().unwrap();
    let (status, reply) = professor
        .call(
            reqwest::Method::PUT,
            &format!("/scores/{assessment_id}/{}/override", students[0].0),
            Some(json!({"score": 7.5, "reason": "oral exam"})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");

    // Refusals: the envelope, and nothing created.
    let gradebook = json!({"kind": "gradebook", "filters": {"challenge_id": challenge_id}});
    let (status, reply) = students[0].1.post("/exports", gradebook.clone()).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (403, Some("forbidden")),
        "a student exports nothing: {reply}"
    );
    let (status, reply) = other.post("/exports", gradebook.clone()).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (403, Some("forbidden")),
        "another professor's challenge: {reply}"
    );
    let (status, reply) = professor
        .post(
            "/exports",
            json!({"kind": "attempts", "filters": {"challenge_id": 999_999}}),
        )
        .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (404, Some("not_found")),
        "{reply}"
    );
    for bad in [
        json!({"kind": "attempts", "filters": {"date_gte": "yesterday"}}),
        json!({"kind": "attempts", "filters": {"date_gte": "2026-02-01", "date_lte": "2026-01-01"}}),
        json!({"kind": "run"}),
        json!({"kind": "attempts", "filters": {"challenge": 1}}),
        json!({"kind": "everything"}),
        json!({"kind": "attempts", "format": "xlsx"}),
    ] {
        let (status, reply) = professor.post("/exports", bad.clone()).await;
        assert!(matches!(status, 400 | 422), "{bad}: {status} {reply}");
        assert_eq!(reply["status"], "error", "{reply}");
    }
    let (status, reply) = professor.get("/exports/1").await;
    assert_eq!(status, 404, "no refusal created an export: {reply}");

    // The professor's gradebook: a row per student, each challenge's
    // result and the assessment's score.
    let (status, reply) = professor.post("/exports", gradebook.clone()).await;
    assert_eq!(status, 201, "{reply}");
    let gradebook_id = reply["data"]["id"].as_i64().unwrap();
    assert_eq!(
        reply["data"]["operation_id"],
        format!("export-{gradebook_id}")
    );
    let finished = wait_export_final(&professor, gradebook_id).await;
    assert_eq!(finished["state"], "COMPLETED", "{finished}");
    assert_eq!(
        (finished["rows"].as_u64(), finished["total"].as_u64()),
        (Some(3), Some(3))
    );
    let url = format!("/exports/{gradebook_id}/download");
    assert_eq!(finished["download_url"], format!("/api/v1{url}"));
    let (status, _, body) = download(&professor, &base, &url, None).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "a header and a row per student: {text}");
    assert!(
        lines[0].starts_with("user_id,full_name,email,")
            && lines[0].contains(&format!("challenge_{challenge_id}_status"))
            && lines[0].contains(&format!("challenge_{challenge_id}_execution_ms"))
            && lines[0].ends_with(&format!("assessment_{assessment_id}_score")),
        "{text}"
    );
    assert!(
        lines[1].contains("Student 0") && lines[1].contains("PASSED") && lines[1].ends_with(",7.5"),
        "{text}"
    );
    assert!(
        lines[2].contains("Student 1") && lines[2].contains("FAILED"),
        "{text}"
    );

    // Ranges.
    let length = body.len();
    let (status, content_range, part) = download(&professor, &base, &url, Some("bytes=0-9")).await;
    assert_eq!(status, 206);
    assert_eq!(content_range, Some(format!("bytes 0-9/{length}")));
    assert_eq!(part, body[..10]);
    let (status, content_range, part) = download(&professor, &base, &url, Some("bytes=-5")).await;
    assert_eq!(status, 206);
    assert_eq!(
        content_range,
        Some(format!("bytes {}-{}/{length}", length - 5, length - 1))
    );
    assert_eq!(part, body[length - 5..]);
    for bad in [
        format!("bytes={length}-"),
        "bytes=9-2".into(),
        "pages=1-2".into(),
    ] {
        let (status, content_range, reply) = download(&professor, &base, &url, Some(&bad)).await;
        assert_eq!(status, 416, "{bad}");
        assert_eq!(content_range, Some(format!("bytes */{length}")), "{bad}");
        let reply: Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(reply["code"], "range_not_satisfiable", "{reply}");
    }

    // Who sees what.
    for (who, viewer) in [("another professor", &other), ("a student", &students[0].1)] {
        let (status, reply) = viewer.get(&format!("/exports/{gradebook_id}")).await;
        assert_eq!(status, 403, "{who}: {reply}");
        let (status, _, _) = download(viewer, &base, &url, None).await;
        assert_eq!(status, 403, "{who}");
        let (status, reply) = viewer
            .get(&format!("/operations/export-{gradebook_id}"))
            .await;
        assert_eq!(status, 403, "{who}: {reply}");
    }
    let (status, _, _) = download(&admin, &base, &url, None).await;
    assert_eq!(status, 200, "an admin downloads anything");
    // Another professor's exports read only their own challenges: none here.
    let (status, reply) = other
        .post("/exports", json!({"kind": "attempts", "format": "jsonl"}))
        .await;
    assert_eq!(status, 201, "{reply}");
    let empty = wait_export_final(&other, reply["data"]["id"].as_i64().unwrap()).await;
    assert_eq!(
        (empty["state"].as_str(), empty["rows"].as_u64()),
        (Some("COMPLETED"), Some(0))
    );
    let (status, reply) = admin
        .post("/exports", json!({"kind": "attempts", "format": "jsonl"}))
        .await;
    assert_eq!(status, 201, "{reply}");
    let all_id = reply["data"]["id"].as_i64().unwrap();
    let all = wait_export_final(&admin, all_id).await;
    assert_eq!(all["rows"], 3, "{all}");
    let (_, _, body) = download(&admin, &base, &format!("/exports/{all_id}/download"), None).await;
    let rows: Vec<Value> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["status"], "FAILED", "{rows:?}");
    assert_eq!(rows[0]["score"], 100.0, "{rows:?}");

    // Operations: the export, the challenge's init, the alias.
    let (status, operation) = professor
        .get(&format!("/operations/export-{gradebook_id}"))
        .await;
    assert_eq!(status, 200, "{operation}");
    let operation = &operation["data"];
    assert_eq!(
        (operation["kind"].as_str(), operation["state"].as_str()),
        (Some("export"), Some("COMPLETED"))
    );
    assert_eq!(operation["progress"], json!({"done": 3, "total": 3}));
    assert_eq!(operation["result_url"], format!("/api/v1{url}"));
    let (status, alias) = professor
        .get(&format!("/job-status/export-{gradebook_id}"))
        .await;
    assert_eq!(status, 200, "{alias}");
    assert_eq!(alias["data"]["id"], format!("export-{gradebook_id}"));
    let (status, init) = professor
        .get(&format!("/operations/init-{challenge_id}"))
        .await;
    assert_eq!(status, 200, "{init}");
    assert_eq!(init["data"]["state"], "COMPLETED", "{init}");
    assert_eq!(init["data"]["progress"], json!({"done": 1, "total": 1}));
    let (status, reply) = professor
        .post(&format!("/operations/init-{challenge_id}/pause"), json!({}))
        .await;
    assert_eq!(status, 409, "{reply}");
    let (status, reply) = professor
        .call(
            reqwest::Method::PATCH,
            &format!("/job-status/export-{gradebook_id}"),
            Some(json!({"action": "pause"})),
        )
        .await;
    assert_eq!(status, 409, "a finished export is not paused: {reply}");
    for bad in ["bogus", "run-x", "export-999999"] {
        let (status, reply) = professor.get(&format!("/operations/{bad}")).await;
        assert_eq!(status, 404, "{bad}: {reply}");
    }
    let (status, reply) = students[0]
        .1
        .get(&format!("/operations/init-{challenge_id}"))
        .await;
    assert_eq!(status, 403, "{reply}");

    // The file is deleted at its expiry; the download says so.
    let dir = exports_dir(&store);
    let gone = eventually(
        "the gradebook to expire",
        Duration::from_secs(90),
        || async {
            let (status, _, body) = download(&professor, &base, &url, None).await;
            (status == 410).then_some(body)
        },
    )
    .await;
    let reply: Value = serde_json::from_slice(&gone).unwrap();
    assert_eq!(reply["code"], "gone", "{reply}");
    assert!(
        files_of(&dir, gradebook_id).is_empty(),
        "the file is deleted"
    );
    assert_eq!(
        export_state(&professor, gradebook_id).await["state"],
        "EXPIRED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_export_resumes_after_a_restart_byte_identical_and_a_cancelled_one_leaves_no_file()
{
    let token = token();
    let store = temp_store("exports-pause");
    let listen = format!("127.0.0.1:{}", free_port());
    let extra = [
        "--listen",
        listen.as_str(),
        "--export-page-rows",
        "1",
        "--export-page-pause-ms",
        "300",
    ];
    let mut coordinator =
        start_coordinator("exports-pause-coordinator", &store, &token, &extra).await;
    let base = coordinator.url().to_string();
    let mut grader = start_grader("exports-pause-grader", &base, &token, &["--slots", "2"]).await;
    let api = Api::new(&base);
    let (_admin, professor, _other, students) = people(&api, "pause", 3).await;
    let challenge =
        publish_sample_challenge(&professor, "exports: pause", Duration::from_secs(120)).await;
    let challenge_id = challenge["id"].as_i64().unwrap();
    for (_, student) in &students {
        for query in [SOLUTION, WRONG] {
            let attempt = submit(student, challenge_id, query).await;
            wait_final(student, attempt).await;
        }
    }
    grader.terminate(Duration::from_secs(15)).await;
    let dir = exports_dir(&store);
    let request = json!({"kind": "attempts", "filters": {"challenge_id": challenge_id}});

    // Paused midway through the seed's alias, then the coordinator is killed.
    let (status, reply) = professor.post("/exports", request.clone()).await;
    assert_eq!(status, 201, "{reply}");
    let paused_id = reply["data"]["id"].as_i64().unwrap();
    assert_eq!(reply["data"]["total"], 6, "{reply}");
    eventually("two pages written", Duration::from_secs(60), || async {
        (export_state(&professor, paused_id).await["rows"].as_u64() >= Some(2)).then_some(())
    })
    .await;
    let (status, reply) = professor
        .call(
            reqwest::Method::PATCH,
            &format!("/job-status/export-{paused_id}"),
            Some(json!({"action": "pause"})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["state"], "PAUSED", "{reply}");
    let held = export_state(&professor, paused_id).await;
    assert!(held["rows"].as_u64().unwrap() < 6, "paused midway: {held}");
    assert_eq!(
        files_of(&dir, paused_id),
        vec![format!("{paused_id}.csv.part")],
        "a partial file while paused"
    );
    coordinator.kill().await;
    let coordinator =
        start_coordinator("exports-pause-coordinator-2", &store, &token, &extra).await;
    let after = export_state(&professor, paused_id).await;
    assert_eq!(
        after["state"], "PAUSED",
        "the pause survives a restart: {after}"
    );
    assert_eq!(
        after["rows"], held["rows"],
        "nothing written while paused: {after}"
    );
    let (status, reply) = professor
        .post(&format!("/operations/export-{paused_id}/resume"), json!({}))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["state"], "RUNNING", "{reply}");
    let resumed = wait_export_final(&professor, paused_id).await;
    assert_eq!(
        (resumed["state"].as_str(), resumed["rows"].as_u64()),
        (Some("COMPLETED"), Some(6))
    );

    // The same export in one go: the same bytes.
    let (status, reply) = professor.post("/exports", request.clone()).await;
    assert_eq!(status, 201, "{reply}");
    let straight_id = reply["data"]["id"].as_i64().unwrap();
    wait_export_final(&professor, straight_id).await;
    let (_, _, resumed_bytes) = download(
        &professor,
        &base,
        &format!("/exports/{paused_id}/download"),
        None,
    )
    .await;
    let (_, _, straight_bytes) = download(
        &professor,
        &base,
        &format!("/exports/{straight_id}/download"),
        None,
    )
    .await;
    assert!(
        String::from_utf8_lossy(&resumed_bytes).starts_with("attempt_id,user_id,"),
        "the header, written once"
    );
    assert!(
        resumed_bytes.len() > 200,
        "six attempts (queries are quoted, multi-line CSV fields)"
    );
    assert_eq!(
        resumed_bytes, straight_bytes,
        "byte-identical after pause and restart"
    );

    // Cancelled while writing, and while paused: no file is left.
    let (_, reply) = professor.post("/exports", request.clone()).await;
    let running_id = reply["data"]["id"].as_i64().unwrap();
    eventually("a page written", Duration::from_secs(60), || async {
        (export_state(&professor, running_id).await["rows"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    let (status, reply) = professor
        .post(
            &format!("/operations/export-{running_id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["state"], "CANCELLED", "{reply}");
    let (_, reply) = professor.post("/exports", request.clone()).await;
    let paused_then_cancelled = reply["data"]["id"].as_i64().unwrap();
    let (status, _) = professor
        .post(
            &format!("/operations/export-{paused_then_cancelled}/pause"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, reply) = professor
        .call(
            reqwest::Method::PATCH,
            &format!("/job-status/export-{paused_then_cancelled}"),
            Some(json!({"action": "terminate"})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    for id in [running_id, paused_then_cancelled] {
        eventually("no file left", Duration::from_secs(30), || async {
            files_of(&dir, id).is_empty().then_some(())
        })
        .await;
        let (status, _, reply) =
            download(&professor, &base, &format!("/exports/{id}/download"), None).await;
        assert_eq!(status, 409, "{}", String::from_utf8_lossy(&reply));
        let stopped = export_state(&professor, id).await;
        assert_eq!(stopped["state"], "CANCELLED", "{stopped}");
        assert!(
            stopped["rows"].as_u64().unwrap() < 6,
            "cancelled midway: {stopped}"
        );
    }
    let (status, reply) = professor
        .post(
            &format!("/operations/export-{running_id}/resume"),
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "a cancelled export stays cancelled: {reply}");
    drop(coordinator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_cancelled_through_its_operation_grades_nothing_more() {
    let token = token();
    let coordinator = start_coordinator(
        "ops-cancel-coordinator",
        &temp_store("ops-cancel"),
        &token,
        &["--heartbeat-interval-ms", "500"],
    )
    .await;
    let base = coordinator.url().to_string();
    let grader = start_grader("ops-cancel-grader", &base, &token, &["--slots", "1"]).await;
    let api = Api::new(&base);
    let (_admin, professor, other, students) = people(&api, "cancel", 4).await;
    let challenge =
        publish_sample_challenge(&professor, "ops: cancel", Duration::from_secs(120)).await;
    let challenge_id = challenge["id"].as_i64().unwrap();
    for (_, student) in &students {
        let attempt = submit(student, challenge_id, SLOW_CORRECT).await;
        wait_final(student, attempt).await;
    }
    let (status, reply) = professor
        .post(
            "/runs",
            json!({"challenge_id": challenge_id, "targets": "all"}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let run_id = reply["data"]["id"].as_i64().unwrap();
    let operation = format!("/operations/run-{run_id}");
    eventually("an item to run", Duration::from_secs(60), || async {
        let (_, run) = professor.get(&format!("/runs/{run_id}")).await;
        (run["data"]["counts"]["running"] == 1).then_some(())
    })
    .await;
    let (status, reply) = professor.get(&operation).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        (
            reply["data"]["kind"].as_str(),
            reply["data"]["state"].as_str()
        ),
        (Some("run"), Some("RUNNING")),
        "{reply}"
    );
    assert_eq!(reply["data"]["progress"]["total"], 4, "{reply}");
    let (status, reply) = other.post(&format!("{operation}/cancel"), json!({})).await;
    assert_eq!(status, 403, "another professor's run: {reply}");

    let (status, reply) = professor
        .post(&format!("{operation}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{reply}");
    let cancelled_at = chrono::Utc::now();
    let finished = eventually("the run to end", Duration::from_secs(60), || async {
        let (_, reply) = professor.get(&operation).await;
        (reply["data"]["state"] == "CANCELLED").then_some(reply["data"].clone())
    })
    .await;
    assert_eq!(
        finished["progress"]["done"], 4,
        "every item ended: {finished}"
    );
    // The running item's grader heard of the cancel on its heartbeat and
    // stopped the query.
    eventually(
        "the grader to stop the job",
        Duration::from_secs(30),
        || async {
            grader
                .log()
                .contains("coordinator cancelled the job")
                .then_some(())
        },
    )
    .await;
    let (_, run) = professor.get(&format!("/runs/{run_id}")).await;
    let counts = run["data"]["counts"].clone();
    assert!(
        counts["cancelled"].as_u64().unwrap() >= 3,
        "the queued items and the running one: {run}"
    );
    assert_eq!(
        counts["done"].as_u64().unwrap() + counts["cancelled"].as_u64().unwrap(),
        4,
        "{run}"
    );
    // Nothing was graded after the cancel: an item graded at all (the
    // running one, had it finished just before) ended before it.
    let (_, items) = professor.get(&format!("/runs/{run_id}/items")).await;
    for item in items["data"].as_array().unwrap() {
        match item["state"].as_str() {
            Some("CANCELLED") => assert_eq!(item["status"], Value::Null, "no grade: {item}"),
            Some("DONE") => {
                let finished_at: chrono::DateTime<chrono::Utc> =
                    item["finished_at"].as_str().unwrap().parse().unwrap();
                assert!(
                    finished_at <= cancelled_at,
                    "graded after the cancel: {item}"
                );
            }
            _ => panic!("an item neither graded nor cancelled: {item}"),
        }
    }
    let (status, reply) = professor
        .post(&format!("{operation}/resume"), json!({}))
        .await;
    assert_eq!(status, 409, "{reply}");
    drop(grader);
}
