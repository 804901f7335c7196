//! Admin pages: the cluster overview (graders, queues), jobs with filters in
//! the URL (state, lane, challenge, grader, queue-time range) and cursor
//! pages, a job's detail with cancel and retry, cluster
//! tokens (shown once; revoke), and invites.
//!
//! Each page calls the API's admin handlers, which refuse everyone but
//! admins: the console has no admin check of its own.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{html, Markup};
use sqlarena_common::{ChallengeId, GraderId, GraderState, JobId, JobState, Lane, Role};
use uuid::Uuid;

use crate::console::charts;
use crate::console::layout::{
    age, badge, html_response, next_page, page, when, ConsoleError, PageResult,
};
use crate::console::session::{ConsoleUser, SignedForm};
use crate::error::{ApiError, AppJson, AppPath, AppQuery};
use crate::http::admin as api;
use crate::http::pagination::PageParams;
use crate::http::users as api_users;
use crate::state::AppState;

/// Jobs per page.
const JOBS_PAGE: i64 = 50;
/// Graders listed on the overview.
const GRADERS_SHOWN: i64 = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(overview))
        .route("/admin/graders/{id}/drain", post(drain_grader))
        .route("/admin/jobs", get(list_jobs))
        .route("/admin/jobs/bulk", post(bulk_jobs))
        .route("/admin/jobs/{id}", get(show_job))
        .route("/admin/jobs/{id}/cancel", post(cancel_job))
        .route("/admin/jobs/{id}/retry", post(retry_job))
        .route("/admin/tokens", get(list_tokens))
        .route("/admin/tokens/new", post(create_token))
        .route("/admin/tokens/{id}/revoke", post(revoke_token))
        .route("/admin/users", get(users_page))
        .route("/admin/invites", post(create_invite))
}

fn uuid_of<T: std::str::FromStr>(text: &str) -> Result<T, ConsoleError> {
    text.parse()
        .map_err(|_| ConsoleError(ApiError::NotFound(format!("no such page: {text:?}"))))
}

/// Most jobs the charts read (the last hour's, four fields each).
const HISTORY_LIMIT: u32 = 100_000;

/// Graders with lanes, slots, state, heartbeat age and version; queue depth
/// and oldest job age per lane; charts of the last hour.
async fn overview(State(state): State<AppState>, user: ConsoleUser) -> PageResult {
    let queues = api::get_queues(State(state.clone()), user.user.clone())
        .await?
        .into_data();
    // The history is read from the store directly (four fields a job, not
    // the API's whole job): only after the API's own admin check.
    api::require_admin(&user.user)?;
    let now = Utc::now();
    let since = now - chrono::Duration::minutes(charts::MINUTES as i64);
    let history = state.store.list_job_times(since, HISTORY_LIMIT).await?;
    let series = charts::series(&history, now);
    let (graders, _) = api::list_graders(
        State(state),
        user.user.clone(),
        AppQuery(PageParams {
            limit: Some(GRADERS_SHOWN),
            cursor: None,
        }),
    )
    .await?
    .into_parts();
    let now = Utc::now();
    let body = html! {
        h1 { "Cluster overview" }
        h2 { "Queues" }
        table #queues {
            thead { tr {
                th scope="col" { "Lane" } th.num scope="col" { "Queued" } th.num scope="col" { "Leased" }
                th.num scope="col" { "Oldest queued job" }
            } }
            tbody {
                @for queue in &queues {
                    tr {
                        td { a href={ "/admin/jobs?lane=" (queue.lane.as_str()) } { (queue.lane.as_str()) } }
                        td.num { (queue.queued) }
                        td.num { (queue.leased) }
                        td.num { @match queue.oldest_queued_at { Some(at) => (age(at, now)), None => "–" } }
                    }
                }
            }
        }
        h2 { "Graders" }
        table #graders {
            thead { tr {
                th scope="col" { "Name" } th scope="col" { "Host" } th scope="col" { "Version" }
                th scope="col" { "Lanes" } th.num scope="col" { "Slots" } th scope="col" { "State" }
                th.num scope="col" { "Heartbeat" } th.num scope="col" { "Jobs done" }
                th.num scope="col" title="Reference runs' speed against the cluster's median grader (1.00: the median)" { "Reference speed" }
                th scope="col" { "Actions" }
            } }
            tbody {
                @for grader in &graders {
                    tr {
                        td { (grader.name) }
                        td { (grader.hostname) }
                        td { (grader.version) }
                        td { (grader.lanes.iter().map(|lane| lane.as_str()).collect::<Vec<_>>().join(", ")) }
                        td.num { (grader.slots) }
                        td { (badge(grader.state.as_str())) }
                        td.num { (age(grader.last_heartbeat, now)) " ago" }
                        td.num { (grader.jobs_done) }
                        td.num.speed { @match grader.reference_speed { Some(speed) => (format!("{speed:.2}")), None => "–" } }
                        td {
                            @if grader.state == GraderState::Alive {
                                form.inline method="post" action={ "/admin/graders/" (grader.id) "/drain" } {
                                    input type="hidden" name="csrf" value=(user.csrf);
                                    button.secondary type="submit" aria-label={ "Drain " (grader.name) } { "Drain" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if graders.is_empty() { p.hint { "No grader is registered." } }
        h2 { "The last hour" }
        p.hint { "From the jobs queued in the last hour, as the store keeps them." }
        div.charts {
            (charts::bar_chart("chart-throughput", "Jobs graded", "jobs", &series.throughput))
            (charts::bar_chart("chart-latency", "Queued to graded, median", "seconds", &series.latency_secs))
            (charts::bar_chart("chart-queue", "Queue depth", "jobs", &series.queue_depth))
        }
    };
    Ok(html_response(
        StatusCode::OK,
        page("Overview", Some(&user), body),
    ))
}

async fn drain_grader(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: SignedForm,
) -> PageResult {
    api::drain_grader(State(state), form.user.user.clone(), AppPath(uuid_of(&id)?)).await?;
    Ok(Redirect::to("/admin").into_response())
}

/// A select of a filter, with "any" first and the chosen value selected.
fn filter_select(id: &str, label: &str, options: &[&str], chosen: &str) -> Markup {
    html! {
        div {
            label for=(id) { (label) }
            select id=(id) name=(id) {
                option value="" { "any" }
                @for option in options {
                    option value=(option) selected[*option == chosen] { (option) }
                }
            }
        }
    }
}

/// Reads a time from the URL: what `datetime-local` sends
/// (`2030-06-01T12:00`, UTC) or RFC 3339.
fn parse_time(field: &str, text: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|at| Some(at.and_utc()))
        .ok_or_else(|| ApiError::BadRequest(format!("{field}: {text:?} is not a date and time")))
}

const JOB_STATES: [&str; 5] = ["QUEUED", "LEASED", "DONE", "FAILED", "CANCELLED"];
const LANES: [&str; 3] = ["init", "fast", "slow"];

/// Jobs with their filters in the URL (`?state=QUEUED&lane=fast`), oldest
/// first, one cursor page at a time.
async fn list_jobs(
    State(state): State<AppState>,
    user: ConsoleUser,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    let text = |key: &str| {
        query
            .get(key)
            .map(|value| value.trim().to_string())
            .unwrap_or_default()
    };
    let (state_name, lane_name) = (text("state"), text("lane"));
    let job_state = match state_name.as_str() {
        "" => None,
        name => Some(JobState::parse(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "state: {name:?} is none of {}",
                JOB_STATES.join(", ")
            ))
        })?),
    };
    let lane = match lane_name.as_str() {
        "" => None,
        name => Some(Lane::parse(name).ok_or_else(|| {
            ApiError::BadRequest(format!("lane: {name:?} is none of {}", LANES.join(", ")))
        })?),
    };
    let (challenge_text, grader_text) = (text("challenge_id"), text("grader_id"));
    let (from_text, before_text) = (text("queued_from"), text("queued_before"));
    let challenge_id = match challenge_text.as_str() {
        "" => None,
        id => Some(id.parse::<ChallengeId>().map_err(|_| {
            ApiError::BadRequest(format!("challenge_id: {id:?} is not a challenge id"))
        })?),
    };
    let grader_id =
        match grader_text.as_str() {
            "" => None,
            id => Some(id.parse::<GraderId>().map_err(|_| {
                ApiError::BadRequest(format!("grader_id: {id:?} is not a grader id"))
            })?),
        };
    let params = api::JobListParams {
        state: job_state,
        lane,
        challenge_id,
        grader_id,
        queued_from: parse_time("queued_from", &from_text)?,
        queued_before: parse_time("queued_before", &before_text)?,
        limit: Some(JOBS_PAGE),
        cursor: query.get("cursor").filter(|c| !c.is_empty()).cloned(),
    };
    let (jobs, next) = api::list_jobs(State(state.clone()), user.user.clone(), AppQuery(params))
        .await?
        .into_parts();
    let (graders, _) = api::list_graders(
        State(state),
        user.user.clone(),
        AppQuery(PageParams {
            limit: Some(GRADERS_SHOWN),
            cursor: None,
        }),
    )
    .await?
    .into_parts();
    let body = html! {
        h1 { "Jobs" }
        form.card.filters method="get" action="/admin/jobs" role="search" {
            (filter_select("state", "State", &JOB_STATES, &state_name))
            (filter_select("lane", "Lane", &LANES, &lane_name))
            div {
                label for="challenge_id" { "Challenge id" }
                input #challenge_id type="number" min="1" name="challenge_id" value=(challenge_text);
            }
            div {
                label for="grader_id" { "Leased by grader" }
                select #grader_id name="grader_id" {
                    option value="" { "any" }
                    @for grader in &graders {
                        @let id = grader.id.to_string();
                        option value=(id) selected[id == grader_text] { (grader.name) }
                    }
                }
            }
            div {
                label for="queued_from" { "Queued from (UTC)" }
                input #queued_from type="datetime-local" name="queued_from" value=(from_text);
            }
            div {
                label for="queued_before" { "Queued before (UTC)" }
                input #queued_before type="datetime-local" name="queued_before" value=(before_text);
            }
            div { button type="submit" { "Filter" } }
        }
        form method="post" action="/admin/jobs/bulk" {
        input type="hidden" name="csrf" value=(user.csrf);
        table #jobs {
            thead { tr {
                th scope="col" { span.skip { "Select" } }
                th scope="col" { "Job" } th scope="col" { "Kind" } th scope="col" { "Lane" } th scope="col" { "State" }
                th.num scope="col" { "Tries" } th scope="col" { "Challenge" } th scope="col" { "Attempt" }
                th scope="col" { "Queued" }
            } }
            tbody {
                @for job in &jobs {
                    tr {
                        td { input type="checkbox" name="job" value=(job.id) aria-label={ "Select job " (job.id) }; }
                        td { a href={ "/admin/jobs/" (job.id) } { code { (Uuid::from(job.id).simple().to_string()[..12]) } } }
                        td { (job.kind.as_str()) }
                        td { (job.lane.as_str()) }
                        td { (badge(job.state.as_str())) }
                        td.num { (job.tries) "/" (job.max_tries) }
                        td { a href={ "/challenges/" (job.challenge_id) } { (job.challenge_id) } }
                        td { @if let Some(attempt) = job.attempt_id { a href={ "/attempts/" (attempt) } { (attempt) } } @else { "–" } }
                        td { (when(job.created_at)) }
                    }
                }
            }
        }
        @if jobs.is_empty() { p.hint { "No job matches." } } @else {
            p {
                button.danger type="submit" name="action" value="cancel" { "Cancel selected" }
                " "
                button type="submit" name="action" value="retry" { "Retry selected" }
            }
        }
        }
        (next_page("/admin/jobs", &[
            ("state", state_name.clone()), ("lane", lane_name.clone()),
            ("challenge_id", challenge_text.clone()), ("grader_id", grader_text.clone()),
            ("queued_from", from_text.clone()), ("queued_before", before_text.clone()),
        ], next.as_deref()))
    };
    Ok(html_response(
        StatusCode::OK,
        page("Jobs", Some(&user), body),
    ))
}

/// Most jobs one bulk action takes.
const BULK_MAX: usize = 500;

/// Cancels or retries the jobs ticked on the list, one API call each (so
/// each is refused or done exactly as alone), and shows what became of each.
async fn bulk_jobs(State(state): State<AppState>, form: SignedForm) -> PageResult {
    let user = &form.user;
    let action = form.fields.get("action");
    if action != "cancel" && action != "retry" {
        return Err(ApiError::BadRequest("action: cancel or retry".into()).into());
    }
    let ids = form.fields.all("job");
    if ids.is_empty() || ids.len() > BULK_MAX {
        return Err(ApiError::BadRequest(format!("job: tick 1 to {BULK_MAX} jobs")).into());
    }
    let mut outcomes: Vec<(String, Result<JobState, String>)> = Vec::new();
    for id in ids {
        let id: JobId = uuid_of(id)?;
        let result = if action == "cancel" {
            api::cancel_job(State(state.clone()), user.user.clone(), AppPath(id)).await
        } else {
            api::retry_job(State(state.clone()), user.user.clone(), AppPath(id)).await
        };
        let outcome = match result {
            Ok(reply) => Ok(reply.into_data().state),
            // Not being an admin refuses the whole batch, as it would alone.
            Err(error @ ApiError::Forbidden(_)) => return Err(error.into()),
            Err(error) => Err(error.public_message()),
        };
        outcomes.push((id.to_string(), outcome));
    }
    let done = outcomes
        .iter()
        .filter(|(_, outcome)| outcome.is_ok())
        .count();
    let verb = if action == "cancel" {
        "cancelled"
    } else {
        "requeued"
    };
    let body = html! {
        h1 { "Bulk " (action) }
        p.notice role="status" #bulk-summary { (done) " of " (outcomes.len()) " jobs " (verb) "." }
        table #bulk {
            thead { tr { th scope="col" { "Job" } th scope="col" { "Outcome" } } }
            tbody {
                @for (id, outcome) in &outcomes {
                    tr {
                        td { a href={ "/admin/jobs/" (id) } { code { (id) } } }
                        td {
                            @match outcome {
                                Ok(job_state) => (badge(job_state.as_str())),
                                Err(message) => span.error { (message) },
                            }
                        }
                    }
                }
            }
        }
        p { a href="/admin/jobs" { "All jobs" } }
    };
    Ok(html_response(
        StatusCode::OK,
        page("Bulk action", Some(user), body),
    ))
}

/// One job: its phases, lease, tries and error, with cancel and retry.
async fn show_job(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    let job = api::get_job(State(state), user.user.clone(), AppPath(uuid_of(&id)?))
        .await?
        .into_data();
    let finished = matches!(
        job.state,
        JobState::Done | JobState::Failed | JobState::Cancelled
    );
    let body = html! {
        h1 { "Job " code { (job.id) } " " (badge(job.state.as_str())) }
        section.card {
            dl.facts {
                dt { "Kind" } dd { (job.kind.as_str()) }
                dt { "Lane" } dd { (job.lane.as_str()) }
                dt { "Challenge" } dd { a href={ "/challenges/" (job.challenge_id) } { (job.challenge_id) } }
                @if let Some(attempt) = job.attempt_id { dt { "Attempt" } dd { a href={ "/attempts/" (attempt) } { (attempt) } } }
                dt { "Tries" } dd { (job.tries) " of at most " (job.max_tries) }
                dt { "Queued" } dd { (when(job.created_at)) }
                @if let Some(at) = job.leased_at { dt { "Last leased" } dd { (when(at)) } }
                @if let Some(grader) = job.grader_id { dt { "Grader" } dd { code { (grader) } } }
                @if let Some(at) = job.lease_expires_at { dt { "Lease expires" } dd { (when(at)) } }
                @if let Some(at) = job.finished_at { dt { "Finished" } dd { (when(at)) } }
                dt { "Cases recorded" } dd { (job.cases_recorded) }
                dt { "Cancel requested" } dd { (if job.cancel_requested { "yes" } else { "no" }) }
                dt { "Result applied" } dd { (if job.applied { "yes" } else { "no" }) }
            }
            @if let Some(error) = &job.error { h2 { "Last error" } pre.error { (error) } }
        }
        @if let Some(audits) = job.audit.as_deref().filter(|audits| !audits.is_empty()) {
            (audit_table(audits))
        }
        p {
            @if !finished {
                form.inline method="post" action={ "/admin/jobs/" (job.id) "/cancel" } {
                    input type="hidden" name="csrf" value=(user.csrf);
                    button.danger type="submit" { "Cancel job" }
                }
            }
            @if matches!(job.state, JobState::Failed | JobState::Cancelled) {
                " "
                form.inline method="post" action={ "/admin/jobs/" (job.id) "/retry" } {
                    input type="hidden" name="csrf" value=(user.csrf);
                    button type="submit" { "Retry job" }
                }
            }
        }
        p { a href="/admin/jobs" { "All jobs" } }
    };
    Ok(html_response(
        StatusCode::OK,
        page("Job", Some(&user), body),
    ))
}

/// Where and how each test case of a job was measured.
fn audit_table(audits: &[api::CaseAuditEntry]) -> Markup {
    let ms = |value: Option<f64>| value.map_or_else(|| "–".to_string(), |ms| format!("{ms:.3}"));
    html! {
        h2 { "Audit" }
        table #audit {
            thead { tr {
                th scope="col" { "Test case" } th scope="col" { "Grader" } th scope="col" { "PostgreSQL" }
                th.num scope="col" { "Rounds" } th.num scope="col" { "Discarded" }
                th.num scope="col" { "Query median ms" } th.num scope="col" { "Reference median ms" }
                th.num scope="col" { "Ratio (95 % interval)" }
            } }
            tbody {
                @for entry in audits {
                    @let audit = &entry.audit;
                    tr {
                        td { (entry.test_case_id) }
                        td { (audit.grader_name.as_deref().unwrap_or("–")) " " @if let Some(id) = audit.grader_id { code { (id) } } }
                        td { (audit.postgres_version.as_deref().unwrap_or("–")) }
                        td.num { (audit.rounds) }
                        td.num { (audit.discarded) }
                        td.num { (ms(audit.student_median_ms)) }
                        td.num { (ms(audit.reference_median_ms)) }
                        td.num {
                            @match (audit.ratio, audit.ratio_low, audit.ratio_high) {
                                (Some(ratio), Some(low), Some(high)) => (format!("{ratio:.3} ({low:.3}-{high:.3})")),
                                _ => "–",
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: SignedForm,
) -> PageResult {
    let job = api::cancel_job(State(state), form.user.user.clone(), AppPath(uuid_of(&id)?))
        .await?
        .into_data();
    Ok(Redirect::to(&format!("/admin/jobs/{}", job.id)).into_response())
}

async fn retry_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: SignedForm,
) -> PageResult {
    let job = api::retry_job(State(state), form.user.user.clone(), AppPath(uuid_of(&id)?))
        .await?
        .into_data();
    Ok(Redirect::to(&format!("/admin/jobs/{}", job.id)).into_response())
}

/// Cluster tokens, with the secret of one just created (shown once).
async fn tokens_page(
    state: AppState,
    user: &ConsoleUser,
    created: Option<api::ClusterTokenView>,
    status: StatusCode,
) -> PageResult {
    let tokens = api::list_cluster_tokens(State(state), user.user.clone())
        .await?
        .into_data();
    let body = html! {
        h1 { "Cluster tokens" }
        @if let Some(created) = &created {
            div.notice role="status" {
                p { "Token " strong { (created.label) } " created. Copy it now: it is not shown again." }
                p { code.secret #new-token { (created.token.as_deref().unwrap_or_default()) } }
            }
        }
        form.card method="post" action="/admin/tokens/new" {
            input type="hidden" name="csrf" value=(user.csrf);
            label for="label" { "Label of a new token" }
            input #label type="text" name="label" maxlength="200";
            p { button type="submit" { "Create token" } }
        }
        table #tokens {
            thead { tr { th scope="col" { "Label" } th scope="col" { "Created" } th scope="col" { "State" } th scope="col" { "Actions" } } }
            tbody {
                @for token in &tokens {
                    tr {
                        td { (token.label) }
                        td { (when(token.created_at)) }
                        td { @if token.revoked { (badge("REVOKED")) } @else { (badge("ACTIVE")) } }
                        td {
                            @if !token.revoked {
                                form.inline method="post" action={ "/admin/tokens/" (token.id) "/revoke" } {
                                    input type="hidden" name="csrf" value=(user.csrf);
                                    button.danger type="submit" aria-label={ "Revoke " (token.label) } { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(html_response(
        status,
        page("Cluster tokens", Some(user), body),
    ))
}

async fn list_tokens(State(state): State<AppState>, user: ConsoleUser) -> PageResult {
    tokens_page(state, &user, None, StatusCode::OK).await
}

async fn create_token(State(state): State<AppState>, form: SignedForm) -> PageResult {
    let request = api::NewClusterToken {
        label: form.fields.get("label").trim().to_string(),
    };
    let created = api::create_cluster_token(
        State(state.clone()),
        form.user.user.clone(),
        AppJson(request),
    )
    .await?
    .into_data();
    tokens_page(state, &form.user, Some(created), StatusCode::CREATED).await
}

async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: SignedForm,
) -> PageResult {
    api::revoke_cluster_token(State(state), form.user.user.clone(), AppPath(uuid_of(&id)?)).await?;
    Ok(Redirect::to("/admin/tokens").into_response())
}

/// Invites (the code shown once), for professors, admins or students.
fn users_body(user: &ConsoleUser, created: Option<&api_users::InviteView>) -> Markup {
    html! {
        h1 { "Users and invites" }
        @if let Some(invite) = created {
            div.notice role="status" {
                p { "Invite for a " (invite.role.as_str()) " created, valid until " (when(invite.expires_at)) ". Copy it now: it is not shown again." }
                p { code.secret #new-invite { (invite.code) } }
            }
        }
        form.card method="post" action="/admin/invites" {
            input type="hidden" name="csrf" value=(user.csrf);
            label for="role" { "Role of the invitee" }
            select #role name="role" {
                option value="PROF" { "Professor" }
                option value="ADMIN" { "Admin" }
                option value="STUD" { "Student" }
            }
            p { button type="submit" { "Create invite" } }
        }
        p.hint { "The invitee registers with the code (`POST /api/v1/register` with `invite`, or `sqlarena register`)." }
    }
}

async fn users_page(user: ConsoleUser) -> PageResult {
    // Only admins may make invites: the same check as the API's.
    user.user.require(&[Role::Admin])?;
    Ok(html_response(
        StatusCode::OK,
        page("Users", Some(&user), users_body(&user, None)),
    ))
}

async fn create_invite(State(state): State<AppState>, form: SignedForm) -> PageResult {
    let role = match form.fields.get("role") {
        "" => None,
        name => Some(
            Role::parse(name)
                .ok_or_else(|| ApiError::BadRequest(format!("role: {name:?} is not a role")))?,
        ),
    };
    let invite = api_users::create_invite(
        State(state),
        form.user.user.clone(),
        AppJson(api_users::InviteRequest { role }),
    )
    .await?
    .into_data();
    Ok(html_response(
        StatusCode::CREATED,
        page(
            "Users",
            Some(&form.user),
            users_body(&form.user, Some(&invite)),
        ),
    ))
}
