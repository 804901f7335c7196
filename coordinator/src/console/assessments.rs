//! Professor pages for assessments: the assessments they made (an admin
//! sees all), and an assessment's live sessions with each student's
//! remaining time, with forms that add time to one session or to everyone.
//!
//! The pages ask the assessment service's own staff check (its professor
//! or an admin, as the API does) before reading sessions from the store,
//! and add time through the API's handlers.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use sqlarena_common::Role;

use crate::assessments::{require_staff, timing};
use crate::console::layout::{badge, html_response, page, when, ConsoleError, PageResult};
use crate::console::session::{ConsoleUser, FormFields, SignedForm};
use crate::error::{ApiError, AppJson, AppPath};
use crate::http::assessments as api;
use crate::state::AppState;
use crate::store::Page;

/// Assessments listed on the page.
const ASSESSMENTS_SHOWN: u32 = 100;
/// Most minutes one form adds (the API's limit is 30 days).
const MAX_MINUTES: i64 = 43_200;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/professor/assessments", get(list_assessments))
        .route("/professor/assessments/{id}", get(show_assessment))
        .route("/professor/assessments/{id}/time", post(add_time_to_all))
        .route(
            "/professor/assessments/{id}/sessions/{session}/time",
            post(add_time_to_session),
        )
}

pub(super) fn number(text: &str, what: &str) -> Result<i64, ConsoleError> {
    text.parse()
        .map_err(|_| ConsoleError(ApiError::NotFound(format!("no such {what}: {text:?}"))))
}

/// Remaining time as people read it ("12 min 5 s"), or why there is none.
pub(super) fn remaining(deadline: DateTime<Utc>, finished: bool, now: DateTime<Utc>) -> String {
    let seconds = (deadline - now).num_seconds();
    if finished {
        return "finished".into();
    }
    if seconds <= 0 {
        return "time is up".into();
    }
    match seconds {
        0..=59 => format!("{seconds} s"),
        60..=5999 => format!("{} min {} s", seconds / 60, seconds % 60),
        _ => format!("{} h {} min", seconds / 3600, (seconds % 3600) / 60),
    }
}

/// The assessments of the signed-in professor (all for an admin).
async fn list_assessments(State(state): State<AppState>, user: ConsoleUser) -> PageResult {
    user.user.require(&[Role::Professor, Role::Admin])?;
    let created_by = (user.role() != Role::Admin).then(|| user.id());
    let assessments = state
        .store
        .list_assessments(
            created_by,
            Page {
                after: None,
                limit: ASSESSMENTS_SHOWN,
            },
        )
        .await?;
    let now = Utc::now();
    let body = html! {
        h1 { "Assessments" }
        p.hint { "Assessments are created with the API (`POST /api/v1/assessments`)." }
        table #assessments {
            thead { tr {
                th scope="col" { "Assessment" } th scope="col" { "Opens" } th scope="col" { "Closes" }
                th.num scope="col" { "Time limit" } th scope="col" { "Now" }
            } }
            tbody {
                @for assessment in &assessments {
                    @let closes = assessment.spec.closes_at + chrono::Duration::seconds(assessment.extension_s);
                    tr {
                        td { a href={ "/professor/assessments/" (assessment.id) } { (assessment.spec.name) } }
                        td { (when(assessment.spec.opens_at)) }
                        td { (when(closes)) }
                        td.num { (assessment.spec.time_limit_s / 60) " min" }
                        td {
                            @if now < assessment.spec.opens_at { (badge("PENDING")) }
                            @else if now < closes { (badge("OPEN")) }
                            @else { (badge("CLOSED")) }
                        }
                    }
                }
            }
        }
        @if assessments.is_empty() { p.hint { "No assessment yet." } }
    };
    Ok(html_response(
        StatusCode::OK,
        page("Assessments", Some(&user), body),
    ))
}

/// A "minutes to add" form posting to `action`.
fn add_time_form(user: &ConsoleUser, action: &str, id: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            input type="hidden" name="csrf" value=(user.csrf);
            label for=(id) { (label) }
            " "
            input id=(id) type="number" name="minutes" min="1" max=(MAX_MINUTES) value="5" required;
            " "
            button type="submit" { "Add" }
        }
    }
}

/// An assessment's sessions with each one's deadline and remaining time.
async fn show_assessment(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    let id = number(&id, "assessment")?;
    let assessment = api::service(&state).get(id).await.map_err(ApiError::from)?;
    require_staff(&assessment, &user.user.0).map_err(ApiError::from)?;
    let sessions = state.store.list_assessment_sessions(id).await?;
    let now = Utc::now();
    let mut rows = Vec::with_capacity(sessions.len());
    for session in &sessions {
        let name = state
            .store
            .get_user(session.user_id)
            .await?
            .map_or_else(|| session.user_id.to_string(), |user| user.full_name);
        let deadline = timing::deadline(&assessment, session);
        rows.push((session, name, deadline));
    }
    let closes = assessment.spec.closes_at + chrono::Duration::seconds(assessment.extension_s);
    let body = html! {
        h1 { (assessment.spec.name) }
        dl.facts {
            dt { "Opens" } dd { (when(assessment.spec.opens_at)) }
            dt { "Closes" } dd #closes { (when(closes)) }
            dt { "Time limit" } dd { (assessment.spec.time_limit_s / 60) " min" }
            @if assessment.extension_s > 0 { dt { "Added for everyone" } dd { (assessment.extension_s / 60) " min" } }
        }
        section.card {
            h2 { "Add time to everyone" }
            p.hint { "Every session's deadline and the close date move." }
            (add_time_form(&user, &format!("/professor/assessments/{id}/time"), "all-minutes", "Minutes for everyone"))
        }
        h2 #sessions-title { "Sessions" }
        @if rows.is_empty() { p.hint { "No student has started yet." } }
        @else {
            table #sessions aria-labelledby="sessions-title" {
                thead { tr {
                    th scope="col" { "Student" } th scope="col" { "Started" } th scope="col" { "Deadline" }
                    th scope="col" { "Remaining" } th.num scope="col" { "Submissions" } th scope="col" { "Add time" }
                } }
                tbody {
                    @for (session, name, deadline) in &rows {
                        tr data-session=(session.id) {
                            td { (name) }
                            td { (when(session.started_at)) }
                            td { (when(*deadline)) }
                            td.remaining data-seconds=((*deadline - now).num_seconds().max(0)) {
                                (remaining(*deadline, session.finished_at.is_some(), now))
                            }
                            td.num { (session.submissions.len()) }
                            td {
                                (add_time_form(
                                    &user,
                                    &format!("/professor/assessments/{id}/sessions/{}/time", session.id),
                                    &format!("minutes-{}", session.id),
                                    &format!("Minutes for {name}"),
                                ))
                            }
                        }
                    }
                }
            }
        }
        p { a href="/professor/assessments" { "All assessments" } }
    };
    Ok(html_response(
        StatusCode::OK,
        page(&assessment.spec.name, Some(&user), body),
    ))
}

/// The minutes of an add-time form, as the API's seconds.
fn added_seconds(fields: &FormFields) -> Result<api::AddTimeRequest, ConsoleError> {
    let minutes: i64 = fields
        .get("minutes")
        .trim()
        .parse()
        .ok()
        .filter(|minutes| (1..=MAX_MINUTES).contains(minutes))
        .ok_or_else(|| {
            ApiError::BadRequest(format!("minutes: a whole number from 1 to {MAX_MINUTES}"))
        })?;
    Ok(api::AddTimeRequest {
        delta_s: minutes * 60,
    })
}

async fn add_time_to_all(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: SignedForm,
) -> PageResult {
    let id = number(&id, "assessment")?;
    let request = added_seconds(&form.fields)?;
    api::add_assessment_time(
        State(state),
        form.user.user.clone(),
        AppPath(id),
        AppJson(request),
    )
    .await?;
    Ok(Redirect::to(&format!("/professor/assessments/{id}")).into_response())
}

async fn add_time_to_session(
    State(state): State<AppState>,
    Path((id, session)): Path<(String, String)>,
    form: SignedForm,
) -> PageResult {
    let id = number(&id, "assessment")?;
    let session = number(&session, "session")?;
    let request = added_seconds(&form.fields)?;
    // Staff of the assessment in the URL only, and the session must be one
    // of its own (nothing about other sessions is told to anyone else).
    let assessment = api::service(&state).get(id).await.map_err(ApiError::from)?;
    require_staff(&assessment, &form.user.user.0).map_err(ApiError::from)?;
    let found = state.store.get_assessment_session(session).await?;
    if found.is_none_or(|found| found.assessment_id != id) {
        return Err(ApiError::NotFound(format!("no session {session} in assessment {id}")).into());
    }
    api::add_session_time(
        State(state),
        form.user.user.clone(),
        AppPath(session),
        AppJson(request),
    )
    .await?;
    Ok(Redirect::to(&format!("/professor/assessments/{id}")).into_response())
}
