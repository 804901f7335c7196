//! The web console in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`) against a real coordinator, grader and PostgreSQL:
//! each role signs in and walks its main paths, a student is refused the
//! professor's and admin's pages, forms without their CSRF token are
//! refused, and every page visited is saved as a screenshot under
//! `target/console-screenshots/`.

use std::time::Duration;

use fantoccini::key::Key;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::json;
use sqlarena_e2e::browser::{Browser, PAGE_TIMEOUT};
use sqlarena_e2e::demo::{register, SOLUTION};
use sqlarena_e2e::harness::{start_coordinator, start_grader, temp_store, Api};
use uuid::Uuid;

/// How long a challenge's init and an attempt's grading may take.
const GRADING_TIMEOUT: Duration = Duration::from_secs(120);

const INIT: &str = "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, country text NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id), amount numeric(10,2) NOT NULL);";
const CASE_DATA: [&str; 2] = [
    "INSERT INTO customers VALUES (1, 'Ada', 'FR'), (2, 'Alan', 'UK');
INSERT INTO orders VALUES (1, 1, 10.5), (2, 2, 3), (3, 1, 7);",
    "INSERT INTO customers SELECT g, 'c' || g, 'DE' FROM generate_series(1, 30) g;
INSERT INTO orders SELECT g, 1 + g % 30, g FROM generate_series(1, 90) g;",
];

fn token() -> String {
    format!("sqc_console_{}", Uuid::new_v4().simple())
}

/// A professor (by invite) and a student, registered over the API.
async fn people(api: &Api, label: &str) -> (String, String) {
    let admin = api.login("admin@example.com", "admin-password").await;
    let (status, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
    assert_eq!(status, 201, "{invite}");
    let code = invite["data"]["code"].as_str().unwrap();
    let professor = format!("console-prof-{label}@example.edu");
    let student = format!("console-stud-{label}@example.edu");
    register(api, &professor, "Paula Professor", "PROF", Some(code)).await;
    register(api, &student, "Sam Student", "STUD", None).await;
    (professor, student)
}

/// Professor creates a challenge (the form reports each field's error
/// first) and sees it READY; a student submits and sees PASSED appear
/// without reloading; an admin drains the grader and cancels a job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_walks_its_main_paths_in_a_real_browser() {
    let cluster_token = token();
    let coordinator = start_coordinator(
        "console-walk-coordinator",
        &temp_store("console-walk"),
        &cluster_token,
        &[],
    )
    .await;
    let grader = start_grader(
        "console-walk-grader",
        coordinator.url(),
        &cluster_token,
        &["--slots", "2"],
    )
    .await;
    let api = Api::new(coordinator.url());
    let (professor, student) = people(&api, "walk").await;
    let browser = Browser::start(coordinator.url(), "walk").await;

    // --- Professor -------------------------------------------------------
    browser.sign_in(&professor, "demo-password").await;
    assert_eq!(browser.path().await, "/professor/challenges");
    browser.screenshot("professor-challenges").await;
    browser.goto("/professor/challenges/new").await;
    browser.screenshot("professor-new-challenge").await;
    // Sent empty: every field that needs something says so at once.
    browser.click("form.card button[type=submit]").await;
    let alert = browser
        .wait_for_text("#form-errors", "not saved", PAGE_TIMEOUT)
        .await;
    assert!(alert.contains("4 field(s)"), "{alert}");
    for field in ["name", "init", "solution", "test_cases"] {
        let error = browser.text(&format!("#{field}-error")).await;
        assert!(!error.is_empty(), "no error shown for {field}");
    }
    assert!(browser
        .text("#init-error")
        .await
        .contains("must not be empty"));
    browser.screenshot("professor-form-errors").await;
    browser.fill("#name", "Console spenders").await;
    browser
        .fill("#description", "Customers by total spent.")
        .await;
    browser.fill("#init", INIT).await;
    browser.fill("#solution", SOLUTION).await;
    browser.fill("#case_data_0", CASE_DATA[0]).await;
    browser.fill("#case_data_1", CASE_DATA[1]).await;
    browser.click("form.card button[type=submit]").await;
    browser
        .wait_for_text("h1", "Console spenders", PAGE_TIMEOUT)
        .await;
    let challenge_path = browser.path().await;
    let challenge_id: i64 = challenge_path
        .strip_prefix("/challenges/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not a challenge page: {challenge_path}"));
    // The state is shown as of the page load: reload until READY.
    let deadline = tokio::time::Instant::now() + GRADING_TIMEOUT;
    loop {
        let title = browser.text("h1").await;
        if title.contains("READY") {
            break;
        }
        assert!(!title.contains("FAILED"), "{}", browser.page_text().await);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the challenge never became READY"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        browser.goto(&challenge_path).await;
    }
    // The professor sees the solution and the edit link.
    let page = browser.page_text().await;
    assert!(page.contains("Solution") && page.contains("Edit this challenge"));
    browser.screenshot("professor-challenge-ready").await;
    browser
        .goto(&format!("/professor/challenges/{challenge_id}/edit"))
        .await;
    assert_eq!(
        browser
            .client
            .find(fantoccini::Locator::Css("#name"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("Console spenders")
    );
    browser.screenshot("professor-edit-challenge").await;
    browser.sign_out().await;

    // --- Student ---------------------------------------------------------
    browser.sign_in(&student, "demo-password").await;
    assert_eq!(browser.path().await, "/challenges");
    let list = browser.text("main").await;
    assert!(list.contains("Console spenders"), "{list}");
    browser.screenshot("student-challenges").await;
    browser.goto(&challenge_path).await;
    let page = browser.page_text().await;
    assert!(
        !page.contains("Solution") && !page.contains("Edit this challenge"),
        "a student sees the professor's parts: {page}"
    );
    browser
        .fill(
            "#query",
            "SELECT c.name, sum(o.amount) AS total FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.id, c.name ORDER BY total DESC, c.name",
        )
        .await;
    browser.click("form[action$='/attempts'] button").await;
    // The attempt's card is refreshed in place until graded.
    let card = browser
        .wait_for_text("article.card h3", "PASSED", GRADING_TIMEOUT)
        .await;
    assert!(card.starts_with("Attempt "), "{card}");
    let cases = browser.text("article.card table").await;
    assert_eq!(cases.matches("PASSED").count(), 2, "{cases}");
    browser.screenshot("student-attempt-passed").await;
    browser.goto(&challenge_path).await;
    browser
        .wait_for_text("main", "Sam Student", PAGE_TIMEOUT)
        .await;
    assert!(browser
        .text("#leaderboard + table")
        .await
        .contains("Sam Student"));
    browser.goto("/attempts").await;
    assert!(browser.text("main table").await.contains("PASSED"));
    browser.screenshot("student-attempts").await;
    browser.sign_out().await;

    // --- Admin -----------------------------------------------------------
    browser.sign_in("admin@example.com", "admin-password").await;
    assert_eq!(browser.path().await, "/admin");
    let graders = browser.text("#graders").await;
    assert!(
        graders.contains("console-walk-grader") && graders.contains("ALIVE"),
        "{graders}"
    );
    assert!(browser.text("#queues").await.contains("fast"));
    // The charts count the init and the graded attempt (both DONE).
    let graded = browser
        .client
        .find(fantoccini::Locator::Css("#chart-throughput"))
        .await
        .unwrap()
        .attr("data-total")
        .await
        .unwrap();
    assert_eq!(graded.as_deref(), Some("2"));
    for chart in ["#chart-latency", "#chart-queue"] {
        browser.text(chart).await;
    }
    browser.screenshot("admin-overview").await;
    browser.click("#graders button").await;
    browser
        .wait_for_text("#graders", "DRAINING", PAGE_TIMEOUT)
        .await;
    browser.screenshot("admin-grader-draining").await;
    // With the only grader draining, a new attempt's job stays queued.
    let student_api = api.login(&student, "demo-password").await;
    let (status, attempt) = student_api
        .post(
            "/attempts",
            json!({"challenge_id": challenge_id, "query": "SELECT 1"}),
        )
        .await;
    assert_eq!(status, 201, "{attempt}");
    let attempt_id = attempt["data"]["id"].as_i64().unwrap();
    browser.goto("/admin/jobs?state=QUEUED&lane=fast").await;
    let jobs = browser.text("#jobs").await;
    assert!(jobs.contains(&attempt_id.to_string()), "{jobs}");
    browser.screenshot("admin-jobs-queued").await;
    browser.click("#jobs tbody tr a").await;
    browser.wait_for_text("h1", "QUEUED", PAGE_TIMEOUT).await;
    browser.screenshot("admin-job").await;
    browser.click("form[action$='/cancel'] button").await;
    browser.wait_for_text("h1", "CANCELLED", PAGE_TIMEOUT).await;
    assert!(browser.page_text().await.contains("Retry job"));
    browser.screenshot("admin-job-cancelled").await;
    let (_, attempt) = student_api.get(&format!("/attempts/{attempt_id}")).await;
    assert_eq!(attempt["data"]["status"], "CANCELLED", "{attempt}");
    // Jobs filtered by challenge and by queue time, in the URL.
    browser
        .goto(&format!("/admin/jobs?challenge_id={challenge_id}"))
        .await;
    let jobs = browser.text("#jobs").await;
    assert!(
        jobs.contains("init") && jobs.contains("CANCELLED") && jobs.contains("DONE"),
        "{jobs}"
    );
    browser.goto("/admin/jobs?challenge_id=999999").await;
    assert!(browser.text("main").await.contains("No job matches."));
    browser
        .goto(&format!(
            "/admin/jobs?challenge_id={challenge_id}&queued_from=2099-01-01T00:00"
        ))
        .await;
    assert!(browser.text("main").await.contains("No job matches."));
    browser.screenshot("admin-jobs-filtered").await;
    // The challenge's attempts, filtered in the URL.
    browser
        .goto(&format!(
            "/professor/challenges/{challenge_id}/attempts?status=CANCELLED"
        ))
        .await;
    let listed = browser.text("#challenge-attempts").await;
    assert!(
        listed.contains(&format!("#{attempt_id}")) && !listed.contains("PASSED"),
        "{listed}"
    );
    browser
        .goto(&format!("/professor/challenges/{challenge_id}/attempts"))
        .await;
    let listed = browser.text("#challenge-attempts").await;
    assert!(
        listed.contains("PASSED") && listed.contains("CANCELLED"),
        "{listed}"
    );
    browser.screenshot("admin-challenge-attempts").await;
    // Bulk: two more queued jobs cancelled at once, then all three retried.
    for _ in 0..2 {
        let (status, attempt) = student_api
            .post(
                "/attempts",
                json!({"challenge_id": challenge_id, "query": "SELECT 2"}),
            )
            .await;
        assert_eq!(status, 201, "{attempt}");
    }
    browser.goto("/admin/jobs?state=QUEUED").await;
    browser.tick_all("#jobs input[type=checkbox]").await;
    browser.click("button[value=cancel]").await;
    let summary = browser
        .wait_for_text("#bulk-summary", "jobs", PAGE_TIMEOUT)
        .await;
    assert_eq!(summary, "2 of 2 jobs cancelled.");
    browser.screenshot("admin-bulk-cancelled").await;
    browser
        .goto(&format!(
            "/admin/jobs?state=CANCELLED&challenge_id={challenge_id}"
        ))
        .await;
    assert_eq!(
        browser
            .text("#jobs tbody")
            .await
            .matches("CANCELLED")
            .count(),
        3
    );
    browser.tick_all("#jobs input[type=checkbox]").await;
    browser.click("button[value=retry]").await;
    let summary = browser
        .wait_for_text("#bulk-summary", "jobs", PAGE_TIMEOUT)
        .await;
    assert_eq!(summary, "3 of 3 jobs requeued.");
    assert_eq!(browser.text("#bulk").await.matches("QUEUED").count(), 3);
    // A cluster token is shown once.
    browser.goto("/admin/tokens").await;
    browser.fill("#label", "console rack").await;
    browser.click("form.card button").await;
    let secret = browser
        .wait_for_text("#new-token", "sqc_", PAGE_TIMEOUT)
        .await;
    assert!(secret.starts_with("sqc_"), "{secret}");
    browser.screenshot("admin-token-created").await;
    browser.goto("/admin/tokens").await;
    let page = browser.page_text().await;
    assert!(page.contains("console rack") && !page.contains(&secret));
    browser.goto("/admin/users").await;
    browser.click("form.card button").await;
    let code = browser
        .wait_for_text("#new-invite", "sqi_", PAGE_TIMEOUT)
        .await;
    assert!(code.starts_with("sqi_"), "{code}");
    browser.screenshot("admin-invite-created").await;
    // Listed without its code, and revoked: the invites table keeps only
    // the professor's used one.
    browser.goto("/admin/users").await;
    let invites = browser.text("#invites tbody").await;
    assert!(
        invites.contains("OPEN") && invites.contains("USED") && !invites.contains(&code),
        "{invites}"
    );
    browser.click("#invites button.danger").await;
    browser
        .wait_for_text("#revoked", "revoked", PAGE_TIMEOUT)
        .await;
    let invites = browser.text("#invites tbody").await;
    assert!(
        !invites.contains("OPEN") && invites.contains("USED"),
        "{invites}"
    );
    let (status, reply) = api
        .post(
            "/register",
            json!({"email": "revoked-invitee@example.edu", "full_name": "Too Late",
                   "password": "demo-password", "invite": code}),
        )
        .await;
    assert_eq!(status, 403, "a revoked invite registers no one: {reply}");
    browser.sign_out().await;
    // Signed out, pages send back to the sign-in form.
    browser.goto("/admin").await;
    assert_eq!(browser.path().await, "/login");

    browser.close().await;
    drop(grader);
    drop(coordinator);
}

/// The value of cookie `name` in a response's `Set-Cookie` headers, with
/// the whole header.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with(&format!("{name}=")))
        .map(|header| {
            let value = header[name.len() + 1..]
                .split(';')
                .next()
                .unwrap_or_default()
                .to_string();
            (value, header.to_string())
        })
}

fn hidden_csrf(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

/// Signs in over plain HTTP as a browser would; returns the session cookie.
async fn console_sign_in(
    http: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> String {
    let form = http.get(format!("{base}/login")).send().await.unwrap();
    let (login_cookie, _) = set_cookie(&form, "sqlarena_login").expect("sign-in form cookie");
    let csrf = hidden_csrf(&form.text().await.unwrap());
    let reply = http
        .post(format!("{base}/login"))
        .header(COOKIE, format!("sqlarena_login={login_cookie}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 303, "{}", reply.text().await.unwrap());
    let (session, header) = set_cookie(&reply, "sqlarena_console").expect("session cookie");
    assert!(
        header.contains("HttpOnly") && header.contains("SameSite=Strict"),
        "{header}"
    );
    session
}

/// A student who types a professor's or an admin's page gets the API's
/// refusal; forms without their CSRF token (sign-in included) are refused
/// and change nothing; console cookies and API tokens never stand in for
/// each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_refuse_other_roles_and_forms_without_their_csrf_token() {
    let coordinator = start_coordinator(
        "console-refusal-coordinator",
        &temp_store("console-refusal"),
        &token(),
        &[],
    )
    .await;
    let base = coordinator.url().trim_end_matches('/').to_string();
    let api = Api::new(&base);
    let (professor, student) = people(&api, "refusal").await;
    let professor_api = api.login(&professor, "demo-password").await;
    let (status, challenge) = professor_api
        .post(
            "/challenges",
            json!({"name": "Pending one", "type": "FE", "init": INIT, "solution": SOLUTION,
                   "times_to_run": 1, "expires_at": "2099-01-01T00:00:00Z",
                   "test_cases": [{"data": CASE_DATA[0], "is_visible": true}]}),
        )
        .await;
    assert_eq!(status, 201, "{challenge}");
    let challenge_id = challenge["data"]["id"].as_i64().unwrap();

    // In the browser, by keyboard alone: the email field has the focus,
    // Tab moves to the password, Enter sends the form.
    let browser = Browser::start(&base, "refusal").await;
    browser.goto("/login").await;
    browser.press(&student).await;
    browser.press(&Key::Tab.to_string()).await;
    browser.press("demo-password").await;
    browser.press(&Key::Enter.to_string()).await;
    browser
        .wait_for_text("h1", "Challenges you can attempt", PAGE_TIMEOUT)
        .await;
    // Tab from the top reaches the skip link first, then the navigation.
    browser.press(&Key::Tab.to_string()).await;
    let focused = browser.client.active_element().await.unwrap();
    assert_eq!(focused.text().await.unwrap(), "Skip to content");
    // Every professor and admin page refuses the student.
    let refused = [
        ("/admin", "only admins may do this"),
        ("/admin/jobs", "only admins may do this"),
        ("/admin/tokens", "only admins may do this"),
        ("/admin/users", "this needs one of the roles ADMIN"),
        (
            "/professor/challenges",
            "this needs one of the roles PROF, ADMIN",
        ),
        (
            "/professor/challenges/new",
            "this needs one of the roles PROF, ADMIN",
        ),
        (
            &format!("/professor/challenges/{challenge_id}/edit") as &str,
            "this needs one of the roles PROF, ADMIN",
        ),
        (
            &format!("/professor/challenges/{challenge_id}/attempts") as &str,
            "only the challenge's professor or an admin may list its attempts",
        ),
    ];
    for (path, reason) in refused {
        browser.goto(path).await;
        let title = browser.text("h1").await;
        assert_eq!(title, "403 Forbidden", "{path} was not refused");
        let alert = browser.text("p.alert").await;
        assert!(alert.contains(reason), "{path}: {alert}");
        assert!(!browser.page_text().await.contains("Cluster overview"));
    }
    browser.screenshot("student-refused").await;
    // The student's own pages work, and the challenge shows no solution.
    browser.goto(&format!("/challenges/{challenge_id}")).await;
    assert!(browser.text("h1").await.contains("Pending one"));
    assert!(!browser.page_text().await.contains("Solution"));
    browser.close().await;

    // Over HTTP: the same refusals come with the status code.
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let student_cookie = console_sign_in(&http, &base, &student, "demo-password").await;
    for path in ["/admin", "/admin/jobs", "/professor/challenges/new"] {
        let reply = http
            .get(format!("{base}{path}"))
            .header(COOKIE, format!("sqlarena_console={student_cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 403, "{path}");
    }
    // Another professor may not edit the challenge either.
    let admin = api.login("admin@example.com", "admin-password").await;
    let (_, invite) = admin.post("/invites", json!({"role": "PROF"})).await;
    let other = "console-prof2-refusal@example.edu";
    register(
        &api,
        other,
        "Other Prof",
        "PROF",
        invite["data"]["code"].as_str(),
    )
    .await;
    let other_cookie = console_sign_in(&http, &base, other, "demo-password").await;
    let reply = http
        .get(format!("{base}/professor/challenges/{challenge_id}/edit"))
        .header(COOKIE, format!("sqlarena_console={other_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 403);
    assert!(reply.text().await.unwrap().contains("creator or an admin"));

    let reply = http
        .get(format!(
            "{base}/professor/challenges/{challenge_id}/attempts"
        ))
        .header(COOKIE, format!("sqlarena_console={other_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 403);
    // The API's list of a challenge's attempts: its professor only.
    let path = format!("/challenges/{challenge_id}/attempts?status=PASSED");
    let (status, reply) = professor_api.get(&path).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"], json!([]));
    let student_api = api.login(&student, "demo-password").await;
    let (status, reply) = student_api.get(&path).await;
    assert_eq!(status, 403, "{reply}");
    let (status, _) = api.login(other, "demo-password").await.get(&path).await;
    assert_eq!(status, 403);

    // Sign-in needs the form's token and its cookie.
    let form = http.get(format!("{base}/login")).send().await.unwrap();
    let (login_cookie, _) = set_cookie(&form, "sqlarena_login").unwrap();
    let csrf = hidden_csrf(&form.text().await.unwrap());
    let credentials = [
        ("email", "admin@example.com"),
        ("password", "admin-password"),
    ];
    let without_token = http
        .post(format!("{base}/login"))
        .header(COOKIE, format!("sqlarena_login={login_cookie}"))
        .form(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(without_token.status(), 403);
    assert!(set_cookie(&without_token, "sqlarena_console").is_none());
    let without_cookie = http
        .post(format!("{base}/login"))
        .form(&[("csrf", csrf.as_str()), credentials[0], credentials[1]])
        .send()
        .await
        .unwrap();
    assert_eq!(without_cookie.status(), 403);
    assert!(set_cookie(&without_cookie, "sqlarena_console").is_none());

    // An admin's form without its token, or with another session's, is
    // refused and creates nothing.
    let admin_cookie = console_sign_in(&http, &base, "admin@example.com", "admin-password").await;
    let tokens_page = http
        .get(format!("{base}/admin/tokens"))
        .header(COOKIE, format!("sqlarena_console={admin_cookie}"))
        .send()
        .await
        .unwrap();
    let admin_csrf = hidden_csrf(&tokens_page.text().await.unwrap());
    let student_page = http
        .get(format!("{base}/challenges"))
        .header(COOKIE, format!("sqlarena_console={student_cookie}"))
        .send()
        .await
        .unwrap();
    let student_csrf = hidden_csrf(&student_page.text().await.unwrap());
    let token_count = || async {
        let (_, tokens) = admin.get("/admin/cluster-tokens").await;
        tokens["data"].as_array().unwrap().len()
    };
    let before = token_count().await;
    for csrf in [None, Some(""), Some(student_csrf.as_str())] {
        let mut fields = vec![("label", "forged")];
        if let Some(csrf) = csrf {
            fields.push(("csrf", csrf));
        }
        let reply = http
            .post(format!("{base}/admin/tokens/new"))
            .header(COOKIE, format!("sqlarena_console={admin_cookie}"))
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 403, "csrf {csrf:?} was accepted");
        assert!(reply.text().await.unwrap().contains("CSRF token"));
    }
    assert_eq!(
        token_count().await,
        before,
        "a refused form created a token"
    );
    let accepted = http
        .post(format!("{base}/admin/tokens/new"))
        .header(COOKIE, format!("sqlarena_console={admin_cookie}"))
        .form(&[("label", "real"), ("csrf", admin_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 201);
    assert_eq!(token_count().await, before + 1);
    // The student's valid token on an admin form: the API's 403.
    let reply = http
        .post(format!("{base}/admin/tokens/new"))
        .header(COOKIE, format!("sqlarena_console={student_cookie}"))
        .form(&[("label", "x"), ("csrf", student_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 403);
    assert!(reply
        .text()
        .await
        .unwrap()
        .contains("only admins may do this"));
    assert_eq!(token_count().await, before + 1);

    // A console cookie is no bearer token, and a bearer token no cookie.
    let reply = http
        .get(format!("{base}/api/v1/admin/graders"))
        .bearer_auth(&admin_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    let bearer = admin.token.clone().unwrap();
    let reply = http
        .get(format!("{base}/admin"))
        .header(COOKIE, format!("sqlarena_console={bearer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 303);
    assert_eq!(reply.headers()[LOCATION], "/login");

    // Signing out ends the session in the store.
    let reply = http
        .post(format!("{base}/logout"))
        .header(COOKIE, format!("sqlarena_console={admin_cookie}"))
        .form(&[("csrf", admin_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 303);
    let reply = http
        .get(format!("{base}/admin"))
        .header(COOKIE, format!("sqlarena_console={admin_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 303, "the session outlived its sign-out");
    drop(coordinator);
}
