//! Professor pages for grading runs: the runs they started (an admin sees
//! every run), a form to start one, and a run's page with its progress
//! (refreshed in place until it ends), items, pause, resume and cancel,
//! the diff of a shadow run with publish, and the gradebook download.
//!
//! Each page calls the runs API's handlers, which decide who may see and
//! control a run; the list (which has no API twin) asks the same role
//! check the API asks and lists only the caller's own runs, or all for an
//! admin.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use sqlarena_common::runs::{AttemptRule, RunMode, RunState};
use sqlarena_common::{ChallengeId, Role, RunId};

use crate::console::layout::{badge, html_response, page, when, ConsoleError, PageResult};
use crate::console::session::{ConsoleUser, SignedForm};
use crate::error::{ApiError, AppJson, AppPath};
use crate::http::runs as api;
use crate::state::AppState;
use crate::store::runs::AllTargets;
use crate::store::Page;

/// Runs listed on the page.
const RUNS_SHOWN: u32 = 100;
/// Items shown on a run's page.
const ITEMS_SHOWN: u32 = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/professor/runs", get(list_runs).post(start_run))
        .route("/professor/runs/{id}", get(show_run))
        .route("/professor/runs/{id}/progress", get(run_progress))
        .route("/professor/runs/{id}/gradebook", get(download_gradebook))
        .route("/professor/runs/{id}/{action}", post(control_run))
}

fn run_id(text: &str) -> Result<RunId, ConsoleError> {
    text.parse()
        .map_err(|_| ConsoleError(ApiError::NotFound(format!("no such run: {text:?}"))))
}

/// Items ended of all, as "12 / 40".
fn progress_text(run: &api::RunView) -> String {
    let counts = &run.counts;
    format!(
        "{} / {}",
        counts.done + counts.error + counts.cancelled,
        counts.total
    )
}

/// A run's state, counts and a progress bar; marked final once it ended,
/// so the page stops refreshing it.
fn progress_fragment(run: &api::RunView) -> Markup {
    let counts = &run.counts;
    let ended = counts.done + counts.error + counts.cancelled;
    html! {
        div #run-progress data-final[run.state.is_final()] {
            p {
                "State " span #run-state { (badge(run.state.as_str())) }
                " · postprocessing " (badge(run.postprocessing.as_str()))
            }
            label for="run-bar" { "Items ended: " span #run-ended { (progress_text(run)) } }
            progress #run-bar max=(counts.total.max(1)) value=(ended) {}
            dl.facts {
                dt { "Queued" } dd { (counts.queued) }
                dt { "Running" } dd { (counts.running) }
                dt { "Done" } dd { (counts.done) }
                dt { "Error" } dd { (counts.error) }
                dt { "Cancelled" } dd { (counts.cancelled) }
                @if let Some(position) = run.queue_position { dt { "Jobs ahead in the queue" } dd { (position) } }
                @if let Some(eta) = run.eta_seconds { dt { "Estimated time left" } dd { (format!("{eta:.0} s")) } }
            }
        }
    }
}

/// The runs of the signed-in professor (every run for an admin), newest
/// first, and the form that starts one.
async fn list_runs(State(state): State<AppState>, user: ConsoleUser) -> PageResult {
    runs_page(&state, &user, None, StatusCode::OK).await
}

async fn runs_page(
    state: &AppState,
    user: &ConsoleUser,
    error: Option<String>,
    status: StatusCode,
) -> PageResult {
    user.user.require(&[Role::Professor, Role::Admin])?;
    let created_by = (user.role() != Role::Admin).then(|| user.id());
    let runs = state
        .store
        .list_runs(
            created_by,
            Page {
                after: None,
                limit: RUNS_SHOWN,
            },
        )
        .await?;
    let body = html! {
        h1 { "Grading runs" }
        form.card method="post" action="/professor/runs" {
            input type="hidden" name="csrf" value=(user.csrf);
            h2 { "Start a run" }
            @if let Some(error) = &error { p.alert role="alert" #run-error { (error) } }
            label for="challenge_id" { "Challenge id" }
            input #challenge_id type="number" min="1" name="challenge_id" required;
            label for="attempt" { "Which attempt of each student counts" }
            select #attempt name="attempt" {
                option value="latest" { "latest" }
                option value="best" { "best" }
            }
            label for="mode" { "Mode" }
            select #mode name="mode" {
                option value="publish" { "publish (results replace the published ones)" }
                option value="shadow" { "shadow (compare first, publish later)" }
            }
            p.hint { "Every student who attempted the challenge is graded again." }
            p { button type="submit" { "Start run" } }
        }
        table #runs {
            thead { tr {
                th scope="col" { "Run" } th scope="col" { "Challenge" } th scope="col" { "Mode" }
                th scope="col" { "State" } th scope="col" { "Progress" } th scope="col" { "Created" }
            } }
            tbody {
                @for run in &runs {
                    tr {
                        td { a href={ "/professor/runs/" (run.id) } { "Run " (run.id) } }
                        td { a href={ "/challenges/" (run.spec.challenge_id) } { (run.spec.challenge_id) } }
                        td { (run.spec.mode.as_str()) }
                        td { (badge(run.state.as_str())) }
                        td {
                            (run.counts.done + run.counts.error + run.counts.cancelled) " / " (run.counts.total)
                        }
                        td { (when(run.created_at)) }
                    }
                }
            }
        }
        @if runs.is_empty() { p.hint { "No run yet." } }
    };
    Ok(html_response(status, page("Runs", Some(user), body)))
}

/// Starts a run of every student who attempted the challenge.
async fn start_run(State(state): State<AppState>, form: SignedForm) -> PageResult {
    let fields = &form.fields;
    let challenge_id = match fields.get("challenge_id").trim().parse::<ChallengeId>() {
        Ok(id) => id,
        Err(_) => {
            let error = "challenge id: give the number of one of your challenges".to_string();
            return runs_page(&state, &form.user, Some(error), StatusCode::BAD_REQUEST).await;
        }
    };
    let attempt = AttemptRule::parse(fields.get("attempt"))
        .ok_or_else(|| ApiError::BadRequest("attempt: latest or best".into()))?;
    let mode = RunMode::parse(fields.get("mode"))
        .ok_or_else(|| ApiError::BadRequest("mode: publish or shadow".into()))?;
    let request = api::CreateRunRequest {
        challenge_id,
        targets: api::TargetsRequest::All(AllTargets::All),
        attempt: Some(attempt),
        mode: Some(mode),
        on_item_failure: None,
        webhook_url: None,
        idempotency_key: None,
    };
    let created = api::create_run(
        State(state.clone()),
        form.user.user.clone(),
        AppJson(request),
    )
    .await;
    match created {
        Ok(reply) => {
            let run = reply.into_data();
            Ok(Redirect::to(&format!("/professor/runs/{}", run.id)).into_response())
        }
        // A refusal about the challenge is shown on the form.
        Err(error @ (ApiError::NotFound(_) | ApiError::Conflict(_))) => {
            let status = error.status();
            runs_page(&state, &form.user, Some(error.public_message()), status).await
        }
        Err(error) => Err(error.into()),
    }
}

/// A run: progress refreshed in place, controls, items, diff, gradebook.
async fn show_run(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    let id = run_id(&id)?;
    let run = api::get_run(State(state.clone()), user.user.clone(), AppPath(id))
        .await?
        .into_data();
    // Read from the store directly, after the API's own visibility check.
    let items = state
        .store
        .list_run_items(run.id, None, None, ITEMS_SHOWN)
        .await?;
    let finished = run.state.is_final();
    let diff = if run.mode == RunMode::Shadow && finished {
        Some(
            api::get_run_diff(State(state.clone()), user.user.clone(), AppPath(id))
                .await?
                .into_data(),
        )
    } else {
        None
    };
    let control = |action: &str, label: &str, class: &str| {
        html! {
            form.inline method="post" action={ "/professor/runs/" (run.id) "/" (action) } {
                input type="hidden" name="csrf" value=(user.csrf);
                button class=(class) type="submit" { (label) }
            }
            " "
        }
    };
    let body = html! {
        h1 { "Run " (run.id) " of challenge " a href={ "/challenges/" (run.challenge_id) } { (run.challenge_id) } }
        section.card aria-live="polite" data-poll={ "/professor/runs/" (run.id) "/progress" } {
            (progress_fragment(&run))
        }
        p #run-controls {
            @if run.state == RunState::Running { (control("pause", "Pause", "secondary")) }
            @if run.state == RunState::Paused { (control("resume", "Resume", "")) }
            @if !finished { (control("cancel", "Cancel run", "danger")) }
            @if run.mode == RunMode::Shadow && finished && !run.published { (control("publish", "Publish results", "")) }
            @if run.gradebook_url.is_some() {
                a #gradebook href={ "/professor/runs/" (run.id) "/gradebook" } download { "Download the gradebook (CSV)" }
            }
        }
        dl.facts #run-facts {
            dt { "Mode" } dd { (run.mode.as_str()) @if run.published { " (published)" } }
            dt { "Attempt counted" } dd { (run.attempt.as_str()) }
            dt { "Created" } dd { (when(run.created_at)) }
            @if let Some(at) = run.started_at { dt { "Started" } dd { (when(at)) } }
            @if let Some(at) = run.finished_at { dt { "Finished" } dd { (when(at)) } }
        }
        @if let Some(changes) = &diff {
            h2 #diff-title { "Who this shadow run changes" }
            @if changes.is_empty() {
                p #diff-empty { "Nobody: every status and score stays as published." }
            } @else {
                table #diff aria-labelledby="diff-title" {
                    thead { tr {
                        th scope="col" { "Student" } th scope="col" { "Attempt" } th scope="col" { "Published" }
                        th scope="col" { "This run" } th scope="col" { "Published from" }
                    } }
                    tbody {
                        @for change in changes {
                            tr {
                                td { (change.user_id) }
                                td { a href={ "/attempts/" (change.attempt_id) } { (change.attempt_id) } }
                                td { (status_and_score(change.published_status.map(|s| s.as_str()), change.published_score)) }
                                td { (status_and_score(change.status.map(|s| s.as_str()), change.score)) }
                                td { (change.published_from) }
                            }
                        }
                    }
                }
            }
        }
        h2 #items-title { "Items" }
        table #run-items aria-labelledby="items-title" {
            thead { tr {
                th.num scope="col" { "Item" } th scope="col" { "Student" } th scope="col" { "Attempt" }
                th scope="col" { "State" } th scope="col" { "Grade" } th scope="col" { "Note" }
            } }
            tbody {
                @for item in &items {
                    tr {
                        td.num { (item.item) }
                        td { (item.user_id) }
                        td { @if let Some(attempt) = item.attempt_id { a href={ "/attempts/" (attempt) } { (attempt) } } @else { "–" } }
                        td { (badge(item.state.as_str())) }
                        td { (status_and_score(item.result.status.map(|s| s.as_str()), item.result.score)) }
                        td { (item.note.as_deref().or(item.result.error.as_deref()).unwrap_or("")) }
                    }
                }
            }
        }
        p { a href="/professor/runs" { "All runs" } }
    };
    Ok(html_response(
        StatusCode::OK,
        page(&format!("Run {}", run.id), Some(&user), body),
    ))
}

fn status_and_score(status: Option<&str>, score: Option<f64>) -> Markup {
    html! {
        @match status { Some(status) => (badge(status)), None => "–" }
        @if let Some(score) = score { " " (format!("{score:.0} %")) }
    }
}

/// The progress fragment the run's page refreshes itself with.
async fn run_progress(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    let run = api::get_run(State(state), user.user.clone(), AppPath(run_id(&id)?))
        .await?
        .into_data();
    Ok(html_response(StatusCode::OK, progress_fragment(&run)))
}

/// The gradebook CSV, as the API serves it.
async fn download_gradebook(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let csv = api::get_gradebook(
        State(state),
        user.user.clone(),
        AppPath(run_id(&id)?),
        axum::http::HeaderMap::new(),
    )
    .await?;
    Ok(csv)
}

/// Pause, resume, cancel or publish, then back to the run's page.
async fn control_run(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    form: SignedForm,
) -> PageResult {
    let id = AppPath(run_id(&id)?);
    let user = form.user.user.clone();
    let state_now = State(state);
    let run = match action.as_str() {
        "pause" => api::pause_run(state_now, user, id).await?,
        "resume" => api::resume_run(state_now, user, id).await?,
        "cancel" => api::cancel_run(state_now, user, id).await?,
        "publish" => api::publish_run(state_now, user, id).await?,
        _ => {
            return Err(ConsoleError(ApiError::NotFound(format!(
                "no such action: {action:?}"
            ))))
        }
    }
    .into_data();
    Ok(Redirect::to(&format!("/professor/runs/{}", run.id)).into_response())
}
