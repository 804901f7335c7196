//! Challenges and attempts: the list, a challenge with its leaderboard and
//! the query editor, one's attempts with per-case results that refresh
//! until graded, and the professor's pages (their challenges, the form
//! that creates or edits one, reporting each field's error).
//!
//! Every page calls the API handler of the same thing with the signed-in
//! user, so what it shows is what the API would answer that person.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;
use chrono::{Duration, Utc};
use maud::{html, Markup};
use sqlarena_common::{AttemptStatus, ChallengeId, ChallengeState, ChallengeType, Role, UserId};

use crate::console::layout::{
    badge, html_response, millis, next_page, page, when, ConsoleError, PageResult,
};
use crate::console::session::{ConsoleUser, FormFields, SignedForm};
use crate::error::{ApiError, AppJson, AppPath, AppQuery};
use crate::http::attempts as api_attempts;
use crate::http::challenges::{
    self as api, CreateChallengeRequest, TestCaseRequest, UpdateChallengeRequest,
};
use crate::http::pagination::PageParams;
use crate::http::users as api_users;
use crate::http::views::{AttemptView, ChallengeView};
use crate::state::AppState;
use crate::store::Challenge;

/// Entries per list page.
const PAGE_SIZE: i64 = 50;
/// Attempts read to find one's attempts on a challenge.
const RECENT_ATTEMPTS: i64 = 200;
/// Test case rows the form offers beyond the current ones.
const SPARE_CASE_ROWS: usize = 2;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/challenges", get(list_challenges))
        .route("/challenges/{id}", get(show_challenge))
        .route("/challenges/{id}/attempts", post(submit_attempt))
        .route("/attempts", get(list_attempts))
        .route("/attempts/{id}", get(show_attempt))
        .route("/attempts/{id}/results", get(attempt_results))
        .route("/attempts/{id}/cancel", post(cancel_attempt))
        .route("/professor/challenges", get(professor_challenges))
        .route(
            "/professor/challenges/new",
            get(new_challenge_form).post(create_challenge),
        )
        .route(
            "/professor/challenges/{id}/attempts",
            get(challenge_attempts),
        )
        .route(
            "/professor/challenges/{id}/edit",
            get(edit_challenge_form).post(update_challenge),
        )
}

/// Parses an id from the path (a 404 page for anything else).
pub fn id_of<T: std::str::FromStr>(text: &str) -> Result<T, ConsoleError> {
    text.parse()
        .map_err(|_| ConsoleError(ApiError::NotFound(format!("no such page: {text:?}"))))
}

fn page_params(query: &HashMap<String, String>) -> PageParams {
    PageParams {
        limit: Some(PAGE_SIZE),
        cursor: query.get("cursor").filter(|c| !c.is_empty()).cloned(),
    }
}

fn challenge_table(challenges: &[ChallengeView], professor: bool) -> Markup {
    let now = Utc::now();
    html! {
        table {
            thead { tr {
                th scope="col" { "Challenge" } th scope="col" { "Type" } th scope="col" { "State" }
                th scope="col" { "Version" } th scope="col" { "Expires" }
                @if professor { th scope="col" { "Init errors" } th scope="col" { "Actions" } }
            } }
            tbody {
                @for challenge in challenges {
                    tr {
                        td { a href={ "/challenges/" (challenge.id) } { (challenge.name) } }
                        td { (type_name(challenge.challenge_type)) }
                        td { (badge(challenge.state.as_str())) }
                        td.num { (challenge.version) }
                        td { (when(challenge.expires_at)) @if challenge.expires_at <= now { " (expired)" } }
                        @if professor {
                            td { (challenge.init_errors.as_ref().map_or(0, Vec::len)) }
                            td {
                                a href={ "/professor/challenges/" (challenge.id) "/attempts" } { "Attempts" }
                                " · "
                                a href={ "/professor/challenges/" (challenge.id) "/edit" } { "Edit" }
                            }
                        }
                    }
                }
            }
        }
        @if challenges.is_empty() { p.hint { "Nothing here yet." } }
    }
}

/// Challenges: students see those they can attempt now (READY, unexpired);
/// others see every one the API lists.
async fn list_challenges(
    State(state): State<AppState>,
    user: ConsoleUser,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    let (mut challenges, next) = api::list_challenges(
        State(state),
        user.user.clone(),
        AppQuery(page_params(&query)),
    )
    .await?
    .into_parts();
    let student = user.role() == Role::Student;
    if student {
        let now = Utc::now();
        challenges.retain(|c| c.state == ChallengeState::Ready && c.expires_at > now);
    }
    let body = html! {
        h1 { @if student { "Challenges you can attempt" } @else { "All challenges" } }
        (challenge_table(&challenges, false))
        (next_page("/challenges", &[], next.as_deref()))
    };
    Ok(html_response(
        StatusCode::OK,
        page("Challenges", Some(&user), body),
    ))
}

/// One's attempts on challenge `id`, newest first (from the API's list of
/// one's attempts).
async fn my_attempts_on(
    state: &AppState,
    user: &ConsoleUser,
    id: ChallengeId,
) -> Result<Vec<AttemptView>, ConsoleError> {
    let (attempts, _) = api_users::list_user_attempts(
        State(state.clone()),
        user.user.clone(),
        AppPath(user.id()),
        AppQuery(PageParams {
            limit: Some(RECENT_ATTEMPTS),
            cursor: None,
        }),
    )
    .await?
    .into_parts();
    Ok(attempts
        .into_iter()
        .filter(|a| a.challenge_id == id)
        .collect())
}

/// An attempt with its per-case results; marked `data-final` once graded,
/// which stops the page's refreshing.
fn attempt_card(attempt: &AttemptView, csrf: &str) -> Markup {
    let graded = attempt.status.is_final();
    html! {
        article.card id={ "attempt-" (attempt.id) } {
            @if graded { span data-final hidden {} }
            h3 { "Attempt " (attempt.id) " " (badge(attempt.status.as_str())) }
            p.hint {
                "Submitted " (when(attempt.created_at)) " against version " (attempt.challenge_version)
                @if let Some(finished) = attempt.finished_at { ", graded " (when(finished)) }
            }
            details { summary { "Query" } pre { (attempt.query) } }
            @if let Some(error) = &attempt.error { p.error { (error) } }
            table {
                caption.hint { "Per test case" }
                thead { tr {
                    th scope="col" { "Case" } th scope="col" { "Visible" } th scope="col" { "Status" }
                    th.num scope="col" { "Time (ms)" } th.num scope="col" { "Reference (ms)" }
                    th.num scope="col" { "Ratio" } th scope="col" { "Details" }
                } }
                tbody {
                    @for case in &attempt.attempts {
                        tr.case-row {
                            td { (case.test_case_id) }
                            td { @if case.is_visible { "yes" } @else { "hidden" } }
                            td { (badge(case.status.as_str())) }
                            td.num { (millis(case.execution_ms)) }
                            td.num { (millis(case.reference_ms)) }
                            td.num { (case.ratio.map_or_else(|| "–".to_string(), |r| format!("{r:.3}"))) }
                            td {
                                @if let Some(error) = &case.error { span.error { (error) } }
                                @if let Some(diff) = &case.diff { details { summary { "Difference" } pre { (diff) } } }
                            }
                        }
                    }
                }
            }
            @if !graded {
                form.inline method="post" action={ "/attempts/" (attempt.id) "/cancel" } {
                    input type="hidden" name="csrf" value=(csrf);
                    button.secondary type="submit" { "Cancel attempt " (attempt.id) }
                }
            }
        }
    }
}

/// An attempt card inside a container that refreshes it until graded.
fn live_attempt(attempt: &AttemptView, csrf: &str) -> Markup {
    html! {
        @if attempt.status.is_final() {
            div { (attempt_card(attempt, csrf)) }
        } @else {
            div data-poll={ "/attempts/" (attempt.id) "/results" } aria-live="polite" { (attempt_card(attempt, csrf)) }
        }
    }
}

fn leaderboard(view: &ChallengeView) -> Markup {
    let entries = view.top_attempts.as_deref().unwrap_or_default();
    html! {
        h2 #leaderboard { "Leaderboard" }
        @if entries.is_empty() {
            p.hint { "No passing attempt yet." }
        } @else {
            table {
                thead { tr {
                    th.num scope="col" { "Rank" } th scope="col" { "Student" } th.num scope="col" { "Score" }
                    th.num scope="col" { "Time (ms)" } th scope="col" { "Submitted" }
                } }
                tbody {
                    @for entry in entries {
                        tr {
                            td.num { (entry.rank) }
                            td { (entry.user_full_name) }
                            td.num { (entry.score.map_or_else(|| "–".to_string(), |s| format!("{s:.3}"))) }
                            td.num { (millis(entry.completion_time_ms)) }
                            td { (when(entry.time_of_attempt)) }
                        }
                    }
                }
            }
        }
    }
}

/// Renders a challenge's page: facts, the editor, one's attempts, the
/// leaderboard; `draft` and `error` come back after a refused submission.
async fn render_challenge(
    state: &AppState,
    user: &ConsoleUser,
    id: ChallengeId,
    draft: &str,
    error: Option<String>,
    status: StatusCode,
) -> PageResult {
    let view = api::get_challenge(
        State(state.clone()),
        user.user.clone(),
        AppPath(id),
        AppQuery(api::ChallengeParams { grader_id: None }),
    )
    .await?
    .into_data();
    let challenge = api::find_challenge(state, id).await?;
    let may_change = api::require_may_change(&user.user, &challenge).is_ok();
    let attempts = my_attempts_on(state, user, id).await?;
    let open = view.state == ChallengeState::Ready && view.expires_at > Utc::now();
    let body = html! {
        h1 { (view.name) " " (badge(view.state.as_str())) }
        @if may_change {
            p {
                a.button href={ "/professor/challenges/" (id) "/edit" } { "Edit this challenge" }
                " "
                a.button href={ "/professor/challenges/" (id) "/attempts" } { "Every attempt" }
            }
        }
        div.grid {
            section.card {
                h2 { "About" }
                @if let Some(description) = &view.description { p { (description) } }
                dl.facts {
                    dt { "Type" } dd { (type_name(view.challenge_type)) @if view.challenge_type == ChallengeType::FE { " (fastest wins)" } @else { " (slowest wins)" } }
                    dt { "Version" } dd { (view.version) }
                    dt { "Expires" } dd { (when(view.expires_at)) }
                    dt { "Runs per case" } dd { (view.times_to_run) }
                    @if let Some(at) = view.init_at { dt { "Ready since" } dd { (when(at)) } }
                }
                @if let Some(errors) = &view.init_errors {
                    h3 { "Init errors" }
                    ul.error { @for error in errors { li { (error) } } }
                }
                @if !view.init_warnings.is_empty() {
                    h3 { "Init warnings" }
                    ul { @for warning in &view.init_warnings { li { (warning) } } }
                }
                details { summary { "Schema (init SQL)" } pre { (view.init) } }
                @if let Some(solution) = &view.solution { details { summary { "Solution" } pre { (solution) } } }
                details {
                    summary { "Test cases (" (view.test_cases.len()) ")" }
                    @for case in &view.test_cases {
                        h4 { "Case " (case.id) @if !case.is_visible { " (hidden)" } }
                        @if let Some(data) = &case.data { pre { (data) } } @else { p.hint { "Hidden data." } }
                    }
                }
            }
            section.card {
                h2 #editor { "Your query" }
                @if open {
                    form method="post" action={ "/challenges/" (id) "/attempts" } {
                        input type="hidden" name="csrf" value=(user.csrf);
                        @if let Some(error) = &error { p.alert role="alert" #query-error { (error) } }
                        label for="query" { "Query (one read-only SELECT)" }
                        textarea.query #query name="query" required spellcheck="false"
                            aria-describedby=[error.as_ref().map(|_| "query-error")] { (draft) }
                        p { button type="submit" { "Submit for grading" } }
                    }
                } @else {
                    p.hint { "This challenge takes no attempts now (it is " (view.state.as_str()) @if view.expires_at <= Utc::now() { ", expired" } ")." }
                }
            }
        }
        (leaderboard(&view))
        h2 #attempts { "Your attempts" }
        @if attempts.is_empty() { p.hint { "None yet." } }
        @for attempt in &attempts { (live_attempt(attempt, &user.csrf)) }
    };
    Ok(html_response(status, page(&view.name, Some(user), body)))
}

async fn show_challenge(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    render_challenge(&state, &user, id_of(&id)?, "", None, StatusCode::OK).await
}

/// Submits the editor's query through the API's handler; a refusal shows
/// the page again with the query kept and the API's reason.
async fn submit_attempt(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: SignedForm,
) -> PageResult {
    let id = id_of(&id)?;
    let query = form.fields.get("query").to_string();
    let request = api_attempts::CreateAttemptRequest {
        challenge_id: id,
        query: query.clone(),
        user_id: None,
    };
    match api_attempts::create_attempt(
        State(state.clone()),
        form.user.user.clone(),
        AppJson(request),
    )
    .await
    {
        Ok(reply) => {
            let attempt = reply.into_data();
            Ok(Redirect::to(&format!("/challenges/{id}#attempt-{}", attempt.id)).into_response())
        }
        Err(
            error @ (ApiError::Unprocessable(_)
            | ApiError::Conflict(_)
            | ApiError::TooManyRequests { .. }
            | ApiError::Forbidden(_)),
        ) => {
            let status = error.status();
            render_challenge(
                &state,
                &form.user,
                id,
                &query,
                Some(error.public_message()),
                status,
            )
            .await
        }
        Err(error) => Err(error.into()),
    }
}

/// One's attempts, newest first.
async fn list_attempts(
    State(state): State<AppState>,
    user: ConsoleUser,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    let (attempts, next) = api_users::list_user_attempts(
        State(state),
        user.user.clone(),
        AppPath(user.id()),
        AppQuery(page_params(&query)),
    )
    .await?
    .into_parts();
    let body = html! {
        h1 { "My attempts" }
        table {
            thead { tr { th scope="col" { "Attempt" } th scope="col" { "Challenge" } th scope="col" { "Status" } th scope="col" { "Submitted" } } }
            tbody {
                @for attempt in &attempts {
                    tr {
                        td { a href={ "/attempts/" (attempt.id) } { "#" (attempt.id) } }
                        td { a href={ "/challenges/" (attempt.challenge_id) } { "Challenge " (attempt.challenge_id) } }
                        td { (badge(attempt.status.as_str())) }
                        td { (when(attempt.created_at)) }
                    }
                }
            }
        }
        @if attempts.is_empty() { p.hint { "None yet." } }
        (next_page("/attempts", &[], next.as_deref()))
    };
    Ok(html_response(
        StatusCode::OK,
        page("My attempts", Some(&user), body),
    ))
}

async fn find_attempt(
    state: &AppState,
    user: &ConsoleUser,
    id: &str,
) -> Result<AttemptView, ConsoleError> {
    Ok(
        api_attempts::get_attempt(State(state.clone()), user.user.clone(), AppPath(id_of(id)?))
            .await?
            .into_data(),
    )
}

/// One attempt (its owner, the challenge's professor, admins: as the API).
async fn show_attempt(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    let attempt = find_attempt(&state, &user, &id).await?;
    let body = html! {
        h1 { "Attempt " (attempt.id) }
        p { a href={ "/challenges/" (attempt.challenge_id) } { "Back to the challenge" } }
        (live_attempt(&attempt, &user.csrf))
    };
    Ok(html_response(
        StatusCode::OK,
        page("Attempt", Some(&user), body),
    ))
}

/// The card of one attempt alone: what the page's script refreshes.
async fn attempt_results(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    let attempt = find_attempt(&state, &user, &id).await?;
    Ok(html_response(
        StatusCode::OK,
        attempt_card(&attempt, &user.csrf),
    ))
}

async fn cancel_attempt(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: SignedForm,
) -> PageResult {
    let attempt =
        api_attempts::cancel_attempt(State(state), form.user.user.clone(), AppPath(id_of(&id)?))
            .await?
            .into_data();
    Ok(Redirect::to(&format!("/attempts/{}", attempt.id)).into_response())
}

/// A professor's challenges (an admin's page lists every challenge).
async fn professor_challenges(
    State(state): State<AppState>,
    user: ConsoleUser,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    user.user.require(&[Role::Professor, Role::Admin])?;
    let params = page_params(&query);
    let (challenges, next) = if user.role() == Role::Admin {
        api::list_challenges(State(state), user.user.clone(), AppQuery(params)).await?
    } else {
        api::list_user_challenges(
            State(state),
            user.user.clone(),
            AppPath(user.id()),
            AppQuery(params),
        )
        .await?
    }
    .into_parts();
    let body = html! {
        h1 { @if user.role() == Role::Admin { "Every challenge" } @else { "My challenges" } }
        p { a.button href="/professor/challenges/new" { "New challenge" } }
        (challenge_table(&challenges, true))
        (next_page("/professor/challenges", &[], next.as_deref()))
    };
    Ok(html_response(
        StatusCode::OK,
        page("My challenges", Some(&user), body),
    ))
}

const ATTEMPT_STATUSES: [&str; 6] = [
    "PENDING",
    "RUNNING",
    "PASSED",
    "FAILED",
    "ERROR",
    "CANCELLED",
];

/// A challenge's attempts with filters in the URL (`?status=PASSED&user_id=7`),
/// newest first: the API's list, which only the challenge's professor and
/// admins may read.
async fn challenge_attempts(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    let id = id_of(&id)?;
    let text = |key: &str| {
        query
            .get(key)
            .map(|value| value.trim().to_string())
            .unwrap_or_default()
    };
    let (status_name, user_text) = (text("status"), text("user_id"));
    let status = match status_name.as_str() {
        "" => None,
        name => Some(AttemptStatus::parse(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status: {name:?} is none of {}",
                ATTEMPT_STATUSES.join(", ")
            ))
        })?),
    };
    let user_id = match user_text.as_str() {
        "" => None,
        text => Some(
            text.parse::<UserId>()
                .map_err(|_| ApiError::BadRequest(format!("user_id: {text:?} is not a user id")))?,
        ),
    };
    let params = api_attempts::ChallengeAttemptParams {
        status,
        user_id,
        limit: Some(PAGE_SIZE),
        cursor: query.get("cursor").filter(|c| !c.is_empty()).cloned(),
    };
    let (attempts, next) = api_attempts::list_challenge_attempts(
        State(state.clone()),
        user.user.clone(),
        AppPath(id),
        AppQuery(params),
    )
    .await?
    .into_parts();
    let challenge = api::find_challenge(&state, id).await?;
    let path = format!("/professor/challenges/{id}/attempts");
    let body = html! {
        h1 { "Attempts on " a href={ "/challenges/" (id) } { (challenge.name) } }
        form.card.filters method="get" action=(path) role="search" {
            div {
                label for="status" { "Status" }
                select #status name="status" {
                    option value="" { "any" }
                    @for name in ATTEMPT_STATUSES { option value=(name) selected[name == status_name] { (name) } }
                }
            }
            div {
                label for="user_id" { "Student (user id)" }
                input #user_id type="number" min="1" name="user_id" value=(user_text);
            }
            div { button type="submit" { "Filter" } }
        }
        table #challenge-attempts {
            thead { tr {
                th scope="col" { "Attempt" } th scope="col" { "Student" } th scope="col" { "Status" }
                th.num scope="col" { "Version" } th scope="col" { "Submitted" } th scope="col" { "Graded" }
            } }
            tbody {
                @for attempt in &attempts {
                    tr {
                        td { a href={ "/attempts/" (attempt.id) } { "#" (attempt.id) } }
                        td { a href={ (path) "?user_id=" (attempt.user_id) } { "user " (attempt.user_id) } }
                        td { (badge(attempt.status.as_str())) }
                        td.num { (attempt.challenge_version) }
                        td { (when(attempt.created_at)) }
                        td { @if let Some(at) = attempt.finished_at { (when(at)) } @else { "–" } }
                    }
                }
            }
        }
        @if attempts.is_empty() { p.hint { "No attempt matches." } }
        (next_page(&path, &[("status", status_name.clone()), ("user_id", user_text.clone())], next.as_deref()))
    };
    Ok(html_response(
        StatusCode::OK,
        page("Attempts", Some(&user), body),
    ))
}

/// What the challenge form holds, as typed.
struct ChallengeForm {
    name: String,
    description: String,
    challenge_type: String,
    init: String,
    solution: String,
    times_to_run: String,
    /// `YYYY-MM-DDTHH:MM`, UTC (what `datetime-local` sends).
    expires_at: String,
    /// (data, visible) per row; rows with blank data are not test cases.
    cases: Vec<(String, bool)>,
}

/// Each field's error, by the field's form name.
type FieldErrors = BTreeMap<&'static str, String>;

const EXPIRY_FORMAT: &str = "%Y-%m-%dT%H:%M";

impl ChallengeForm {
    fn blank() -> ChallengeForm {
        ChallengeForm {
            name: String::new(),
            description: String::new(),
            challenge_type: "FE".into(),
            init: String::new(),
            solution: String::new(),
            times_to_run: "5".into(),
            expires_at: (Utc::now() + Duration::days(30))
                .format(EXPIRY_FORMAT)
                .to_string(),
            cases: vec![(String::new(), true), (String::new(), false)],
        }
    }

    fn of(challenge: &Challenge) -> ChallengeForm {
        ChallengeForm {
            name: challenge.name.clone(),
            description: challenge.description.clone().unwrap_or_default(),
            challenge_type: type_name(challenge.challenge_type).into(),
            init: challenge.init.clone(),
            solution: challenge.solution.clone(),
            times_to_run: challenge.times_to_run.to_string(),
            expires_at: challenge.expires_at.format(EXPIRY_FORMAT).to_string(),
            cases: challenge
                .test_cases
                .iter()
                .map(|case| (case.data.clone(), case.is_visible))
                .collect(),
        }
    }

    fn from_fields(fields: &FormFields) -> ChallengeForm {
        let mut cases = Vec::new();
        for row in 0.. {
            let data_key = format!("case_data_{row}");
            if !fields.has(&data_key) {
                break;
            }
            cases.push((
                fields.get(&data_key).to_string(),
                fields.has(&format!("case_visible_{row}")),
            ));
        }
        ChallengeForm {
            name: fields.get("name").into(),
            description: fields.get("description").into(),
            challenge_type: fields.get("type").into(),
            init: fields.get("init").into(),
            solution: fields.get("solution").into(),
            times_to_run: fields.get("times_to_run").into(),
            expires_at: fields.get("expires_at").into(),
            cases,
        }
    }

    fn test_cases(&self) -> Vec<TestCaseRequest> {
        self.cases
            .iter()
            .filter(|(data, _)| !data.trim().is_empty())
            .map(|(data, visible)| TestCaseRequest {
                data: data.clone(),
                is_visible: *visible,
            })
            .collect()
    }

    /// Runs the API's checks on every field, keeping each field's error.
    fn check(&self) -> Result<(ChallengeType, u32), FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut note = |field: &'static str, result: Result<(), ApiError>| {
            if let Err(error) = result {
                errors.insert(field, field_message(field, &error));
            }
        };
        note("name", api::check_name(&self.name).map(drop));
        note(
            "description",
            api::check_description(Some(self.description.clone())).map(drop),
        );
        note("init", api::check_sql("init", &self.init));
        note("solution", api::check_sql("solution", &self.solution));
        note(
            "test_cases",
            api::check_test_cases(self.test_cases()).map(drop),
        );
        note("expires_at", api::check_expiry(&self.expires_at).map(drop));
        let challenge_type = parse_type(&self.challenge_type);
        let times_to_run = self.times_to_run.trim().parse::<u32>();
        match &times_to_run {
            Ok(times) => note("times_to_run", api::check_times_to_run(*times).map(drop)),
            Err(_) => note(
                "times_to_run",
                Err(ApiError::Unprocessable(
                    "times_to_run: must be a whole number".into(),
                )),
            ),
        }
        if challenge_type.is_none() {
            errors.insert("type", "choose FE or SE".into());
        }
        match (challenge_type, times_to_run) {
            (Some(challenge_type), Ok(times)) if errors.is_empty() => Ok((challenge_type, times)),
            _ => Err(errors),
        }
    }
}

/// The API's message without its `field: ` prefix (shown beside the field).
fn field_message(field: &str, error: &ApiError) -> String {
    let message = error.public_message();
    message
        .strip_prefix(field)
        .and_then(|rest| rest.split_once(": ").map(|(_, text)| text.to_string()))
        .unwrap_or(message)
}

/// Attributes an API refusal to the field it names, if it names one.
fn refusal_field(error: &ApiError) -> &'static str {
    let message = error.public_message();
    [
        "name",
        "description",
        "type",
        "init",
        "solution",
        "times_to_run",
        "expires_at",
        "test_cases",
    ]
    .into_iter()
    .find(|field| message.starts_with(field))
    .unwrap_or("form")
}

/// The wire name of a challenge type.
fn type_name(challenge_type: ChallengeType) -> &'static str {
    match challenge_type {
        ChallengeType::FE => "FE",
        ChallengeType::SE => "SE",
    }
}

/// Reads the type select's value.
fn parse_type(text: &str) -> Option<ChallengeType> {
    match text {
        "FE" => Some(ChallengeType::FE),
        "SE" => Some(ChallengeType::SE),
        _ => None,
    }
}

/// One labelled field with its error (announced with the field).
fn field(
    id: &'static str,
    label: &str,
    hint: Option<&str>,
    errors: &FieldErrors,
    control: Markup,
) -> Markup {
    let error = errors.get(id);
    html! {
        div {
            label for=(id) { (label) }
            @if let Some(hint) = hint { p.hint id={ (id) "-hint" } { (hint) } }
            (control)
            @if let Some(error) = error { p.field-error id={ (id) "-error" } { (error) } }
        }
    }
}

fn described_by(id: &str, errors: &FieldErrors) -> String {
    let mut ids = format!("{id}-hint");
    if errors.contains_key(id) {
        ids.push_str(&format!(" {id}-error"));
    }
    ids
}

fn challenge_form(
    action: &str,
    title: &str,
    user: &ConsoleUser,
    form: &ChallengeForm,
    errors: &FieldErrors,
    status: StatusCode,
) -> axum::response::Response {
    let invalid = |id: &str| errors.contains_key(id).then_some("true");
    let rows = form.cases.len() + SPARE_CASE_ROWS;
    let body = html! {
        h1 { (title) }
        @if !errors.is_empty() {
            div.alert role="alert" #form-errors {
                "The challenge was not saved: " (errors.len()) " field(s) need attention."
                @if let Some(message) = errors.get("form") { " " (message) }
            }
        }
        form.card method="post" action=(action) novalidate {
            input type="hidden" name="csrf" value=(user.csrf);
            (field("name", "Name", Some("1 to 200 characters."), errors, html! {
                input #name type="text" name="name" value=(form.name) aria-invalid=[invalid("name")] aria-describedby=(described_by("name", errors));
            }))
            (field("description", "Description", Some("Optional; shown to students."), errors, html! {
                textarea #description name="description" aria-invalid=[invalid("description")] aria-describedby=(described_by("description", errors)) { (form.description) }
            }))
            (field("type", "Type", Some("FE: the fastest passing query wins; SE: the slowest."), errors, html! {
                select #type name="type" aria-describedby=(described_by("type", errors)) {
                    option value="FE" selected[form.challenge_type == "FE"] { "FE — fastest execution wins" }
                    option value="SE" selected[form.challenge_type == "SE"] { "SE — slowest execution wins" }
                }
            }))
            (field("init", "Schema (init SQL)", Some("Statements that create the tables."), errors, html! {
                textarea #init name="init" spellcheck="false" aria-invalid=[invalid("init")] aria-describedby=(described_by("init", errors)) { (form.init) }
            }))
            (field("solution", "Solution", Some("The reference SELECT; students never see it."), errors, html! {
                textarea #solution name="solution" spellcheck="false" aria-invalid=[invalid("solution")] aria-describedby=(described_by("solution", errors)) { (form.solution) }
            }))
            (field("times_to_run", "Runs per test case", Some("1 to 100."), errors, html! {
                input #times_to_run type="number" min="1" max="100" name="times_to_run" value=(form.times_to_run) aria-invalid=[invalid("times_to_run")] aria-describedby=(described_by("times_to_run", errors));
            }))
            (field("expires_at", "Expires at (UTC)", Some("In the future."), errors, html! {
                input #expires_at type="datetime-local" name="expires_at" value=(form.expires_at) aria-invalid=[invalid("expires_at")] aria-describedby=(described_by("expires_at", errors));
            }))
            fieldset {
                legend { "Test cases" }
                p.hint #test_cases-hint { "INSERT statements run after the schema, one case per box; leave a box empty to skip it (1 to 50 cases)." }
                @if let Some(error) = errors.get("test_cases") { p.field-error #test_cases-error { (error) } }
                @for row in 0..rows {
                    @let (data, visible) = form.cases.get(row).cloned().unwrap_or_default();
                    div {
                        label for={ "case_data_" (row) } { "Test case " (row + 1) " data" }
                        textarea id={ "case_data_" (row) } name={ "case_data_" (row) } spellcheck="false" aria-describedby="test_cases-hint" { (data) }
                        label.inline for={ "case_visible_" (row) } {
                            input type="checkbox" id={ "case_visible_" (row) } name={ "case_visible_" (row) } value="1" checked[visible];
                            "Visible to students"
                        }
                    }
                }
            }
            p { button type="submit" { "Save challenge" } }
        }
    };
    html_response(status, page(title, Some(user), body))
}

async fn new_challenge_form(user: ConsoleUser) -> PageResult {
    user.user.require(&[Role::Professor, Role::Admin])?;
    Ok(challenge_form(
        "/professor/challenges/new",
        "New challenge",
        &user,
        &ChallengeForm::blank(),
        &FieldErrors::new(),
        StatusCode::OK,
    ))
}

/// Creates a challenge through the API's handler once every field passes
/// the API's checks; otherwise the form comes back with each field's error.
async fn create_challenge(State(state): State<AppState>, form: SignedForm) -> PageResult {
    let user = form.user;
    user.user.require(&[Role::Professor, Role::Admin])?;
    let input = ChallengeForm::from_fields(&form.fields);
    let action = "/professor/challenges/new";
    let (challenge_type, times_to_run) = match input.check() {
        Ok(checked) => checked,
        Err(errors) => {
            return Ok(challenge_form(
                action,
                "New challenge",
                &user,
                &input,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            ))
        }
    };
    let request = CreateChallengeRequest {
        user_id: None,
        name: input.name.clone(),
        description: Some(input.description.clone()),
        challenge_type,
        init: input.init.clone(),
        solution: input.solution.clone(),
        times_to_run,
        expires_at: input.expires_at.clone(),
        test_cases: input.test_cases(),
    };
    match api::create_challenge(State(state), user.user.clone(), AppJson(request)).await {
        Ok(reply) => {
            Ok(Redirect::to(&format!("/challenges/{}", reply.into_data().id)).into_response())
        }
        Err(error @ ApiError::Unprocessable(_)) => {
            let errors = FieldErrors::from([(refusal_field(&error), error.public_message())]);
            Ok(challenge_form(
                action,
                "New challenge",
                &user,
                &input,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            ))
        }
        Err(error) => Err(error.into()),
    }
}

async fn editable(
    state: &AppState,
    user: &ConsoleUser,
    id: &str,
) -> Result<Challenge, ConsoleError> {
    let challenge = api::find_challenge(state, id_of(id)?).await?;
    api::require_may_change(&user.user, &challenge)?;
    Ok(challenge)
}

async fn edit_challenge_form(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    let challenge = editable(&state, &user, &id).await?;
    let title = format!("Edit {}", challenge.name);
    Ok(challenge_form(
        &format!("/professor/challenges/{}/edit", challenge.id),
        &title,
        &user,
        &ChallengeForm::of(&challenge),
        &FieldErrors::new(),
        StatusCode::OK,
    ))
}

/// Changes a challenge through the API's handler (a new version when the
/// schema, solution or cases change). An unchanged expiry is not sent, so a
/// challenge that expired can still be edited otherwise.
async fn update_challenge(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: SignedForm,
) -> PageResult {
    let user = form.user;
    let challenge = editable(&state, &user, &id).await?;
    let input = ChallengeForm::from_fields(&form.fields);
    let action = format!("/professor/challenges/{}/edit", challenge.id);
    let title = format!("Edit {}", challenge.name);
    let same_expiry = input.expires_at == challenge.expires_at.format(EXPIRY_FORMAT).to_string();
    let checked = input.check().or_else(|mut errors| {
        if same_expiry {
            errors.remove("expires_at");
        }
        if errors.is_empty() {
            Ok((
                parse_type(&input.challenge_type).unwrap_or(challenge.challenge_type),
                input
                    .times_to_run
                    .trim()
                    .parse()
                    .unwrap_or(challenge.times_to_run),
            ))
        } else {
            Err(errors)
        }
    });
    let (_, times_to_run) = match checked {
        Ok(checked) => checked,
        Err(errors) => {
            return Ok(challenge_form(
                &action,
                &title,
                &user,
                &input,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            ))
        }
    };
    let request = UpdateChallengeRequest {
        name: Some(input.name.clone()),
        description: Some(input.description.clone()),
        init: Some(input.init.clone()),
        solution: Some(input.solution.clone()),
        times_to_run: Some(times_to_run),
        expires_at: (!same_expiry).then(|| input.expires_at.clone()),
        test_cases: Some(input.test_cases()),
    };
    match api::update_challenge(
        State(state),
        user.user.clone(),
        AppPath(challenge.id),
        AppJson(request),
    )
    .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/challenges/{}", challenge.id)).into_response()),
        Err(error @ ApiError::Unprocessable(_)) => {
            let errors = FieldErrors::from([(refusal_field(&error), error.public_message())]);
            Ok(challenge_form(
                &action,
                &title,
                &user,
                &input,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            ))
        }
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_error_is_reported_at_once() {
        let mut form = ChallengeForm::blank();
        form.times_to_run = "0".into();
        form.expires_at = "2001-01-01T00:00".into();
        let errors = form.check().unwrap_err();
        let fields: Vec<&str> = errors.keys().copied().collect();
        assert_eq!(
            fields,
            [
                "expires_at",
                "init",
                "name",
                "solution",
                "test_cases",
                "times_to_run"
            ]
        );
        assert_eq!(errors["init"], "must not be empty");
        form.name = "Sales".into();
        form.init = "create table t(a int)".into();
        form.solution = "select a from t".into();
        form.times_to_run = "3".into();
        form.expires_at = ChallengeForm::blank().expires_at;
        form.cases[1].0 = "insert into t values (1)".into();
        assert_eq!(form.check().unwrap(), (ChallengeType::FE, 3));
        assert_eq!(form.test_cases().len(), 1);
    }
}
