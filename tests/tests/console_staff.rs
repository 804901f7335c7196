//! The console's staff pages in a real headless Chromium against a real
//! coordinator, grader and PostgreSQL: a professor starts a grading run,
//! follows it to its end, downloads the gradebook, cancels a second run;
//! follows an assessment's live session and adds time to it (the remaining
//! time grows); an admin lists users, reads the counts per filter value on
//! the jobs page and a job's every try; and a student is refused each of
//! these pages by URL. Screenshots go to `target/console-screenshots/`.

use std::time::Duration;

use chrono::Utc;
use fantoccini::Locator;
use serde_json::json;
use sqlarena_e2e::browser::{Browser, PAGE_TIMEOUT};
use sqlarena_e2e::demo::{eventually, publish_sample_challenge, register, wait_final, SOLUTION};
use sqlarena_e2e::harness::{start_coordinator, start_grader, temp_store, Api};
use uuid::Uuid;

/// How long a challenge's init, an attempt's or a run's grading may take.
const GRADING_TIMEOUT: Duration = Duration::from_secs(120);

/// The `data-seconds` of a session's remaining-time cell, once the page
/// shows it (`None` while the page is being replaced).
async fn remaining_seconds(browser: &Browser, session_id: i64) -> Option<i64> {
    let cell = browser
        .client
        .find(Locator::Css(&format!(
            "tr[data-session='{session_id}'] td.remaining"
        )))
        .await
        .ok()?;
    cell.attr("data-seconds").await.ok()??.parse().ok()
}

/// The path of the run page the browser was sent to.
async fn run_path(browser: &Browser) -> String {
    browser.wait_for_text("h1", "Run ", PAGE_TIMEOUT).await;
    let path = browser.path().await;
    assert!(path.starts_with("/professor/runs/"), "{path}");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_pages_for_runs_assessments_users_and_jobs_in_a_real_browser() {
    let cluster_token = format!("sqc_staff_{}", Uuid::new_v4().simple());
    let coordinator = start_coordinator(
        "console-staff-coordinator",
        &temp_store("console-staff"),
        &cluster_token,
        &[],
    )
    .await;
    let grader = start_grader(
        "console-staff-grader",
        coordinator.url(),
        &cluster_token,
        &["--slots", "2"],
    )
    .await;
    let api = Api::new(coordinator.url());
    let admin = api.login("admin@example.com", "admin-password").await;
    let (status, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
    assert_eq!(status, 201, "{invite}");
    let professor_email = "staff-prof@example.edu";
    let student_email = "staff-stud@example.edu";
    let (_, professor) = register(
        &api,
        professor_email,
        "Paula Professor",
        "PROF",
        invite["data"]["code"].as_str(),
    )
    .await;
    let (_, student) = register(&api, student_email, "Sam Student", "STUD", None).await;
    let challenge = publish_sample_challenge(&professor, "Staff spenders", GRADING_TIMEOUT).await;
    let challenge_id = challenge["id"].as_i64().unwrap();
    let (status, attempt) = student
        .post(
            "/attempts",
            json!({"challenge_id": challenge_id, "query": SOLUTION}),
        )
        .await;
    assert_eq!(status, 201, "{attempt}");
    let attempt_id = attempt["data"]["id"].as_i64().unwrap();
    assert_eq!(wait_final(&student, attempt_id).await["status"], "PASSED");

    let browser = Browser::start(coordinator.url(), "staff").await;

    // --- Professor: a run from the form to its end -----------------------
    browser.sign_in(professor_email, "demo-password").await;
    browser.goto("/professor/runs").await;
    browser.screenshot("professor-runs-empty").await;
    browser
        .fill("#challenge_id", &challenge_id.to_string())
        .await;
    browser.click("form.card button[type=submit]").await;
    let first_run = run_path(&browser).await;
    // The progress refreshes in place until the run has ended.
    browser
        .wait_for_text("#run-state", "COMPLETED", GRADING_TIMEOUT)
        .await;
    assert_eq!(browser.text("#run-ended").await, "1 / 1");
    // The controls are drawn with the page: load it again once the run ended.
    browser.goto(&first_run).await;
    browser
        .wait_for_text("#run-controls", "gradebook", PAGE_TIMEOUT)
        .await;
    let items = browser.text("#run-items").await;
    assert!(
        items.contains("PASSED") && items.contains(&attempt_id.to_string()),
        "{items}"
    );
    browser.screenshot("professor-run-completed").await;
    // The gradebook downloads through the console, as the API serves it.
    let href = browser
        .client
        .find(Locator::Css("#gradebook"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(href, format!("{first_run}/gradebook"));
    let gradebook = browser
        .client
        .execute(
            "return fetch(arguments[0]).then(r => r.text().then(t => r.status + ' ' + r.headers.get('content-type') + '\\n' + t));",
            vec![json!(href)],
        )
        .await
        .unwrap();
    let gradebook = gradebook.as_str().unwrap();
    assert!(gradebook.starts_with("200 text/csv"), "{gradebook}");
    assert!(gradebook.contains(&attempt_id.to_string()), "{gradebook}");

    // A shadow run's diff: nothing changes, and it can be published.
    browser.goto("/professor/runs").await;
    browser
        .fill("#challenge_id", &challenge_id.to_string())
        .await;
    browser
        .client
        .find(Locator::Css("#mode option[value=shadow]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.click("form.card button[type=submit]").await;
    run_path(&browser).await;
    browser
        .wait_for_text("#run-state", "COMPLETED", GRADING_TIMEOUT)
        .await;
    // The diff is drawn with the page: load it again once the run ended.
    browser.goto(&browser.path().await).await;
    browser
        .wait_for_text("#diff-empty", "Nobody", PAGE_TIMEOUT)
        .await;
    browser.screenshot("professor-shadow-run-diff").await;
    browser.click("form[action$='/publish'] button").await;
    browser
        .wait_for_text("#run-facts", "published", PAGE_TIMEOUT)
        .await;

    // With the only grader draining, a run waits: it is cancelled.
    let graders = admin.get("/admin/graders").await.1;
    let grader_id = graders["data"][0]["id"].as_str().unwrap().to_string();
    let (status, reply) = admin
        .post(&format!("/admin/graders/{grader_id}/drain"), json!({}))
        .await;
    assert_eq!(status, 200, "{reply}");
    browser.goto("/professor/runs").await;
    browser
        .fill("#challenge_id", &challenge_id.to_string())
        .await;
    browser.click("form.card button[type=submit]").await;
    let waiting_run = run_path(&browser).await;
    assert_eq!(browser.text("#run-ended").await, "0 / 1");
    browser.screenshot("professor-run-waiting").await;
    browser.click("form[action$='/cancel'] button").await;
    browser
        .wait_for_text("#run-state", "CANCELLED", GRADING_TIMEOUT)
        .await;
    browser.screenshot("professor-run-cancelled").await;
    browser.goto("/professor/runs").await;
    let runs = browser.text("#runs").await;
    assert!(
        runs.contains("CANCELLED") && runs.matches("COMPLETED").count() == 2,
        "{runs}"
    );

    // --- Professor: an assessment's live session -------------------------
    let now = Utc::now();
    let (status, assessment) = professor
        .post(
            "/assessments",
            json!({
                "name": "Staff quiz", "zones": [{"pool": [challenge_id], "pick": 1, "points": 10.0}],
                "selection": "stable", "time_limit_s": 1200,
                "opens_at": (now - chrono::Duration::minutes(1)).to_rfc3339(),
                "closes_at": (now + chrono::Duration::hours(3)).to_rfc3339(),
                "feedback": "immediate", "scoreboard": "hidden"
            }),
        )
        .await;
    assert_eq!(status, 201, "{assessment}");
    let assessment_id = assessment["data"]["id"].as_i64().unwrap();
    let (status, session) = student
        .post(&format!("/assessments/{assessment_id}/sessions"), json!({}))
        .await;
    assert_eq!(status, 201, "{session}");
    let session_id = session["data"]["id"].as_i64().unwrap();
    browser.goto("/professor/assessments").await;
    assert!(browser.text("#assessments").await.contains("Staff quiz"));
    browser.screenshot("professor-assessments").await;
    browser.click("#assessments a").await;
    let sessions = browser
        .wait_for_text("#sessions", "Sam Student", PAGE_TIMEOUT)
        .await;
    assert!(sessions.contains("min"), "{sessions}");
    let before = remaining_seconds(&browser, session_id).await.unwrap();
    assert!((1000..=1200).contains(&before), "{before}");
    browser.screenshot("professor-assessment-sessions").await;
    browser.fill(&format!("#minutes-{session_id}"), "30").await;
    browser
        .click(&format!("tr[data-session='{session_id}'] button"))
        .await;
    let after_one = eventually("the session's time to grow", PAGE_TIMEOUT, || async {
        let seconds = remaining_seconds(&browser, session_id).await?;
        (seconds > before + 1700).then_some(seconds)
    })
    .await;
    browser.fill("#all-minutes", "10").await;
    browser.click("form[action$='/time'] button").await;
    let after_all = eventually("everyone's time to grow", PAGE_TIMEOUT, || async {
        let seconds = remaining_seconds(&browser, session_id).await?;
        (seconds > after_one + 500).then_some(seconds)
    })
    .await;
    assert!(
        after_all > before + 2300,
        "{before} -> {after_one} -> {after_all}"
    );
    browser.screenshot("professor-assessment-time-added").await;
    browser.sign_out().await;

    // --- Admin: users, counts per filter value, a job's tries -------------
    browser.sign_in("admin@example.com", "admin-password").await;
    browser.goto("/admin/users").await;
    let users = browser.text("#users").await;
    for expected in [
        professor_email,
        student_email,
        "admin@example.com",
        "PROF",
        "STUD",
    ] {
        assert!(users.contains(expected), "{expected} missing: {users}");
    }
    browser.screenshot("admin-users").await;
    browser.click("form.card button").await;
    browser
        .wait_for_text("#new-invite", "sqi_", PAGE_TIMEOUT)
        .await;
    assert!(browser.text("#users").await.contains(student_email));
    // A queued attempt (the grader drains), then the counts.
    let (status, queued) = student
        .post(
            "/attempts",
            json!({"challenge_id": challenge_id, "query": "SELECT 1"}),
        )
        .await;
    assert_eq!(status, 201, "{queued}");
    let count_of = |jobs: &serde_json::Value| jobs["data"].as_array().unwrap().len().to_string();
    let done = count_of(&admin.get("/admin/jobs?state=DONE&limit=500").await.1);
    let queued_jobs = count_of(&admin.get("/admin/jobs?state=QUEUED&limit=500").await.1);
    let cancelled = count_of(&admin.get("/admin/jobs?state=CANCELLED&limit=500").await.1);
    browser.goto("/admin/jobs").await;
    let count = |selector: &'static str| {
        let browser = &browser;
        async move {
            browser
                .text(&format!("#job-counts {selector} .count"))
                .await
        }
    };
    assert_eq!(count("a[data-state=DONE]").await, done);
    assert_eq!(count("a[data-state=QUEUED]").await, queued_jobs);
    assert_eq!(count("a[data-state=CANCELLED]").await, cancelled);
    assert_eq!(count("a[data-state=FAILED]").await, "0");
    assert_eq!(queued_jobs, "1");
    // The selects carry the counts too; a lane filter narrows the states'.
    let options = browser.text("#state").await;
    assert!(options.contains(&format!("DONE ({done})")), "{options}");
    browser.goto("/admin/jobs?lane=init").await;
    assert_eq!(count("a[data-state=DONE]").await, "1");
    assert_eq!(count("a[data-state=QUEUED]").await, "0");
    browser
        .goto(&format!("/admin/jobs?challenge_id={challenge_id}"))
        .await;
    assert_eq!(count("a[data-state=QUEUED]").await, "1");
    browser.screenshot("admin-jobs-counts").await;
    // The graded attempt's job: one try, by the grader, DONE.
    browser.goto("/admin/jobs?state=DONE&lane=fast").await;
    browser.click("#jobs tbody tr a").await;
    let tries = browser.wait_for_text("#tries", "DONE", PAGE_TIMEOUT).await;
    assert!(tries.contains("console-staff-grader"), "{tries}");
    assert_eq!(
        browser
            .client
            .find_all(Locator::Css("#tries tbody tr"))
            .await
            .unwrap()
            .len(),
        1
    );
    browser.screenshot("admin-job-tries").await;
    // The queued job was never leased.
    browser.goto("/admin/jobs?state=QUEUED").await;
    browser.click("#jobs tbody tr a").await;
    browser
        .wait_for_text("main", "Never leased.", PAGE_TIMEOUT)
        .await;
    // Runs and assessments of every professor, for an admin.
    browser.goto("/professor/runs").await;
    assert!(browser.text("#runs").await.contains("CANCELLED"));
    browser.goto(&waiting_run).await;
    assert!(browser.text("#run-state").await.contains("CANCELLED"));
    browser.sign_out().await;

    // --- Student: refused every staff page by URL ------------------------
    browser.sign_in(student_email, "demo-password").await;
    let refused = [
        (
            "/professor/runs".to_string(),
            "this needs one of the roles PROF, ADMIN",
        ),
        (first_run.clone(), "this needs one of the roles PROF, ADMIN"),
        (
            format!("{first_run}/gradebook"),
            "this needs one of the roles PROF, ADMIN",
        ),
        (
            "/professor/assessments".to_string(),
            "this needs one of the roles PROF, ADMIN",
        ),
        (format!("/professor/assessments/{assessment_id}"), ""),
        (
            "/admin/users".to_string(),
            "this needs one of the roles ADMIN",
        ),
        ("/admin/jobs".to_string(), "only admins may do this"),
    ];
    for (path, reason) in &refused {
        browser.goto(path).await;
        assert_eq!(
            browser.text("h1").await,
            "403 Forbidden",
            "{path} was not refused"
        );
        assert!(browser.text("p.alert").await.contains(reason), "{path}");
    }
    browser.screenshot("student-refused-staff-pages").await;

    // --- Student: the assessment in the console --------------------------
    // The start button continues the session the API started; a wrong
    // query, then the solution, graded on the page as they arrive (by a
    // second grader: the first one is draining).
    let _second_grader = start_grader(
        "console-staff-grader-2",
        coordinator.url(),
        &cluster_token,
        &["--slots", "2"],
    )
    .await;
    browser.goto(&format!("/assessments/{assessment_id}")).await;
    assert!(browser.text("#time-limit").await.contains("20 min"));
    browser.click("form[action$='/start'] button").await;
    browser
        .wait_for_text("h1", &format!("Session {session_id} ACTIVE"), PAGE_TIMEOUT)
        .await;
    assert!(browser.text("#remaining").await.contains("min"));
    assert!(browser.text("#question-1").await.contains("Staff spenders"));
    browser.assert_fields_labelled().await;
    browser.fill("#query-1", "SELECT 1 AS wrong").await;
    browser.click("#question-1 button").await;
    browser
        .wait_for_text("#live-submissions", "FAILED", GRADING_TIMEOUT)
        .await;
    browser.fill("#query-1", SOLUTION).await;
    browser.click("#question-1 button").await;
    browser
        .wait_for_text("#live-submissions", "PASSED", GRADING_TIMEOUT)
        .await;
    browser.screenshot("student-session").await;
    browser.click("form[action$='/finish'] button").await;
    browser.wait_for_text("h1", "FINALIZED", PAGE_TIMEOUT).await;
    assert!(browser.text("#remaining").await.contains("finished"));
    let (status, refused) = student
        .post(
            &format!("/sessions/{session_id}/questions/1/attempts"),
            json!({"query": SOLUTION}),
        )
        .await;
    assert_eq!(status, 403, "a finished session takes nothing: {refused}");
    let (_, scores) = student
        .get(&format!("/assessments/{assessment_id}/scores"))
        .await;
    assert!(scores.to_string().contains("10.0"), "{scores}");
    browser.sign_out().await;
    // Another student cannot open the session.
    register(&api, "staff-stud2@example.edu", "Olga Other", "STUD", None).await;
    browser
        .sign_in("staff-stud2@example.edu", "demo-password")
        .await;
    browser.goto(&format!("/sessions/{session_id}")).await;
    assert_eq!(browser.text("h1").await, "403 Forbidden");
    browser.close().await;

    // Over HTTP with the student's own valid CSRF token: the forms are
    // refused and change nothing.
    let (_, before_session) = student.get(&format!("/sessions/{session_id}")).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = coordinator.url().trim_end_matches('/').to_string();
    let form = http.get(format!("{base}/login")).send().await.unwrap();
    let login_cookie = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| value.strip_prefix("sqlarena_login="))
        .and_then(|value| value.split(';').next())
        .unwrap()
        .to_string();
    let page = form.text().await.unwrap();
    let csrf_at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    let login_csrf = page[csrf_at..csrf_at + page[csrf_at..].find('"').unwrap()].to_string();
    let signed_in = http
        .post(format!("{base}/login"))
        .header("cookie", format!("sqlarena_login={login_cookie}"))
        .form(&[
            ("csrf", login_csrf.as_str()),
            ("email", student_email),
            ("password", "demo-password"),
        ])
        .send()
        .await
        .unwrap();
    let session_cookie = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| value.strip_prefix("sqlarena_console="))
        .and_then(|value| value.split(';').next())
        .unwrap()
        .to_string();
    let own_page = http
        .get(format!("{base}/challenges"))
        .header("cookie", format!("sqlarena_console={session_cookie}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf_at = own_page.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = own_page[csrf_at..csrf_at + own_page[csrf_at..].find('"').unwrap()].to_string();
    let forged = [
        (
            format!("/professor/assessments/{assessment_id}/time"),
            vec![("minutes", "60")],
        ),
        (
            format!("/professor/assessments/{assessment_id}/sessions/{session_id}/time"),
            vec![("minutes", "60")],
        ),
        (format!("{waiting_run}/resume"), vec![]),
        (
            "/professor/runs".to_string(),
            vec![
                ("challenge_id", "1"),
                ("attempt", "latest"),
                ("mode", "publish"),
            ],
        ),
    ];
    for (path, mut fields) in forged {
        fields.push(("csrf", csrf.as_str()));
        let reply = http
            .post(format!("{base}{path}"))
            .header("cookie", format!("sqlarena_console={session_cookie}"))
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 403, "{path}");
    }
    let (_, after_session) = student.get(&format!("/sessions/{session_id}")).await;
    assert_eq!(
        before_session["data"]["deadline"], after_session["data"]["deadline"],
        "a refused form moved the deadline"
    );
    // Three runs were started; the refused form made no fourth.
    let (status, _) = professor.get("/runs/4").await;
    assert_eq!(status, 404);
    drop(grader);
    drop(coordinator);
}
