//! A student's side of a timed assessment: the assessment's page with a
//! button that starts (or continues) the student's session, and the
//! session's page: the time left, each question with its description and
//! an editor, and the submissions, refreshed until none is being graded.
//!
//! Every page and form goes through the API's handlers with the signed-in
//! user, so the deadline, the submission limits and who may see a session
//! are the API's own checks; under `feedback: after_close` the page shows
//! `SUBMITTED`, as the API does.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;
use chrono::{Duration, Utc};
use maud::{html, Markup};

use crate::console::assessments::{number, remaining};
use crate::console::layout::{badge, html_response, page, when, PageResult};
use crate::console::session::{ConsoleUser, SignedForm};
use crate::error::{ApiError, AppJson, AppPath};
use crate::http::assessments as api;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/assessments/{id}", get(show_assessment))
        .route("/assessments/{id}/start", post(start_session))
        .route("/sessions/{id}", get(show_session))
        .route("/sessions/{id}/submissions", get(submissions_fragment))
        .route("/sessions/{id}/questions/{q}/submit", post(submit))
        .route("/sessions/{id}/finish", post(finish))
}

/// An assessment's facts and the button that starts one's session.
async fn show_assessment(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    let id = number(&id, "assessment")?;
    let view = api::get_assessment(State(state), user.user.clone(), AppPath(id))
        .await?
        .into_data();
    let spec = &view.spec;
    let closes = spec.closes_at + Duration::seconds(view.extension_s);
    let now = Utc::now();
    let body = html! {
        h1 { (spec.name) }
        @if let Some(description) = &spec.description { p { (description) } }
        dl.facts {
            dt { "Opens" } dd { (when(spec.opens_at)) }
            dt { "Closes" } dd { (when(closes)) }
            dt { "Time limit" } dd #time-limit { (spec.time_limit_s / 60) " min" }
            dt { "Points" } dd { (view.max_score) }
        }
        @if now < spec.opens_at {
            p.hint #not-open { "This assessment opens " (when(spec.opens_at)) "." }
        } @else if now >= closes {
            p.hint #closed { "This assessment is closed." }
        } @else {
            form method="post" action={ "/assessments/" (id) "/start" } {
                input type="hidden" name="csrf" value=(user.csrf);
                p.hint { "Your timer starts when you press the button; pressing it again later continues the same session." }
                p { button type="submit" { "Start or continue my session" } }
            }
        }
    };
    Ok(html_response(
        StatusCode::OK,
        page(&spec.name, Some(&user), body),
    ))
}

async fn start_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: SignedForm,
) -> PageResult {
    let id = number(&id, "assessment")?;
    let session = api::start_session(State(state), form.user.user.clone(), AppPath(id))
        .await?
        .into_data();
    Ok(Redirect::to(&format!("/sessions/{}", session.id)).into_response())
}

/// True while a submission waits for its grade.
fn pending(submission: &api::SubmissionView) -> bool {
    matches!(submission.status.as_str(), "PENDING" | "RUNNING")
}

/// The session's submissions, newest first; marked `data-final` once none
/// is being graded, which stops the page's refreshing.
fn submissions_table(view: &api::AssessmentSessionView) -> Markup {
    let mut submissions: Vec<&api::SubmissionView> = view
        .questions
        .iter()
        .flat_map(|question| &question.submissions)
        .collect();
    submissions.sort_by_key(|submission| std::cmp::Reverse(submission.number));
    html! {
        @if !submissions.iter().any(|submission| pending(submission)) { span data-final hidden {} }
        @if submissions.is_empty() {
            p.hint { "Nothing submitted yet." }
        } @else {
            table #submissions {
                caption.hint { "Your submissions" }
                thead { tr {
                    th.num scope="col" { "#" } th.num scope="col" { "Question" }
                    th scope="col" { "Received" } th scope="col" { "Status" } th scope="col" { "Details" }
                } }
                tbody {
                    @for submission in &submissions {
                        tr {
                            td.num { (submission.number) }
                            td.num { (submission.question) }
                            td { (when(submission.received_at)) }
                            td { (badge(&submission.status)) }
                            td {
                                @if let Some(error) = &submission.error { span.error { (error) } }
                                @if let Some(attempt) = &submission.attempt {
                                    @if let Some(error) = &attempt.error { span.error { (error) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A session's page; `error` is a refused submission's message, shown at
/// the question it was for, with the refused query back in its editor.
fn session_page(
    user: &ConsoleUser,
    view: &api::AssessmentSessionView,
    refused: Option<(u32, &str, &str)>,
) -> Markup {
    let now = Utc::now();
    let active = view.state == "ACTIVE";
    let body = html! {
        h1 { "Session " (view.id) " " (badge(&view.state)) }
        dl.facts {
            dt { "Started" } dd { (when(view.started_at)) }
            dt { "Deadline" } dd #deadline { (when(view.deadline)) }
            dt { "Time left" } dd #remaining data-seconds=(view.remaining_s.max(0.0).floor()) {
                (remaining(view.deadline, view.finished_at.is_some() || !active, now))
            }
        }
        @if !view.results_visible {
            p.hint { "Results are shown once the assessment closes; until then each submission says SUBMITTED." }
        }
        @for question in &view.questions {
            section.card id={ "question-" (question.number) } {
                h2 {
                    "Question " (question.number) ": "
                    (question.challenge_name.as_deref().unwrap_or("(a challenge)"))
                    " (" (question.points) " points)"
                }
                @if let Some(description) = &question.challenge_description { p { (description) } }
                @if let Some(left) = question.submissions_left { p.hint { (left) " submissions left." } }
                @if active {
                    @let field = format!("query-{}", question.number);
                    @let error = refused.filter(|(number, _, _)| *number == question.number);
                    form method="post" action={ "/sessions/" (view.id) "/questions/" (question.number) "/submit" } {
                        input type="hidden" name="csrf" value=(user.csrf);
                        @if let Some((_, message, _)) = error {
                            p.alert role="alert" id={ (field) "-error" } { (message) }
                        }
                        label for=(field) { "Query for question " (question.number) }
                        textarea.query id=(field) name="query" required spellcheck="false"
                            aria-describedby=[error.map(|_| format!("{field}-error"))] {
                            @if let Some((_, _, draft)) = error { (draft) }
                        }
                        p { button type="submit" { "Submit question " (question.number) } }
                    }
                }
            }
        }
        h2 { "Submissions" }
        div #live-submissions data-poll={ "/sessions/" (view.id) "/submissions" } aria-live="polite" {
            (submissions_table(view))
        }
        @if active {
            form method="post" action={ "/sessions/" (view.id) "/finish" } {
                input type="hidden" name="csrf" value=(user.csrf);
                p { button.danger type="submit" { "Finish the session" } }
            }
        }
    };
    page(&format!("Session {}", view.id), Some(user), body)
}

async fn session_view(
    state: AppState,
    user: &ConsoleUser,
    id: i64,
) -> Result<api::AssessmentSessionView, ApiError> {
    Ok(
        api::get_session(State(state), user.user.clone(), AppPath(id))
            .await?
            .into_data(),
    )
}

async fn show_session(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    let id = number(&id, "session")?;
    let view = session_view(state, &user, id).await?;
    Ok(html_response(
        StatusCode::OK,
        session_page(&user, &view, None),
    ))
}

/// The submissions table alone, for the session page's refreshing.
async fn submissions_fragment(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    let id = number(&id, "session")?;
    let view = session_view(state, &user, id).await?;
    Ok(html_response(StatusCode::OK, submissions_table(&view)))
}

/// Submits a question's query; a refusal (past the deadline, too many
/// submissions, too soon) comes back on the page with the query kept.
async fn submit(
    State(state): State<AppState>,
    Path((id, question)): Path<(String, String)>,
    form: SignedForm,
) -> PageResult {
    let id = number(&id, "session")?;
    let question: u32 = u32::try_from(number(&question, "question")?)
        .map_err(|_| ApiError::NotFound(format!("no question {question}")))?;
    let query = form.fields.get("query").to_string();
    let submitted = api::submit(
        State(state.clone()),
        form.user.user.clone(),
        AppPath((id, question)),
        AppJson(api::SubmitQueryRequest {
            query: query.clone(),
        }),
    )
    .await;
    match submitted {
        Ok(_) => Ok(Redirect::to(&format!("/sessions/{id}")).into_response()),
        // The session's own refusals (deadline, limits, a blank query):
        // the page again, the message at the question, the query kept.
        Err(error)
            if error.status().is_client_error() && error.status() != StatusCode::NOT_FOUND =>
        {
            let status = error.status();
            let message = error.to_string();
            let view = session_view(state, &form.user, id).await?;
            Ok(html_response(
                status,
                session_page(&form.user, &view, Some((question, &message, &query))),
            ))
        }
        Err(error) => Err(error.into()),
    }
}

async fn finish(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: SignedForm,
) -> PageResult {
    let id = number(&id, "session")?;
    api::finish_session(State(state), form.user.user.clone(), AppPath(id)).await?;
    Ok(Redirect::to(&format!("/sessions/{id}")).into_response())
}
