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
use sqlarena_common::{ChallengeId, GraderId, GraderState, JobId, JobState, Lane, Role, UserId};
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
use crate::store::console::{JobCounts, JobQuery};

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
        .route("/admin/invites/{id}/revoke", post(revoke_invite))
}

fn uuid_of<T: std::str::FromStr>(text: &str) -> Result<T, ConsoleError> {
    text.parse()
        .map_err(|_| ConsoleError(ApiError::NotFound(format!("no such page: {text:?}"))))
}

/// Graders with lanes, slots, state, heartbeat age and version; queue depth
/// and oldest job age per lane; charts of the last hour.
async fn overview(State(state): State<AppState>, user: ConsoleUser) -> PageResult {
    let queues = api::get_queues(State(state.clone()), user.user.clone())
        .await?
        .into_data();
    // The history is read from the store directly (60 rows a lane), only
    // after the API's own admin check.
    api::require_admin(&user.user)?;
    let now = Utc::now();
    let mut history = state.store.list_minutes(charts::first_minute(now)).await?;
    history.extend(state.jobs.pending_history());
    let queued_now = queues.iter().map(|queue| queue.queued).sum();
    let series = charts::series(&history, queued_now, now);
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
        p.hint { "From the per-minute history the coordinator keeps (queue depth sampled at the end of each minute)." }
        div.charts {
            (charts::bar_chart("chart-throughput", "Jobs graded", "jobs", &series.throughput))
            (charts::bar_chart("chart-latency", "Queued to graded, mean", "seconds", &series.latency_secs))
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

/// A select of a filter, with "any" first and the chosen value selected;
/// each option shows its count, when given.
fn filter_select(
    id: &str,
    label: &str,
    options: &[(&str, Option<String>)],
    chosen: &str,
) -> Markup {
    html! {
        div {
            label for=(id) { (label) }
            select id=(id) name=(id) {
                option value="" { "any" }
                @for (option, count) in options {
                    option value=(option) selected[*option == chosen] {
                        (option) @if let Some(count) = count { " (" (count) ")" }
                    }
                }
            }
        }
    }
}

/// Most jobs counted for the counts per filter value when a challenge,
/// grader or time filter is set (without one, the counts are exact).
const COUNT_CAP: u32 = 10_000;

/// A count as shown: thousands separated, `+` when counting stopped at
/// the cap.
fn count_text(count: u64, capped: bool) -> String {
    let digits = count.to_string();
    let mut text = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    if capped {
        text.push('+');
    }
    text
}

/// The counts per filter value as links that set that value (keeping the
/// other filters): one line per state, one per lane.
fn count_links(
    filters: &[(&str, String)],
    counts: &JobCounts,
    state: Option<JobState>,
    lane: Option<Lane>,
) -> Markup {
    let link = |key: &str, value: &str| {
        let mut pairs: Vec<(&str, &str)> = filters
            .iter()
            .filter(|(name, value)| *name != key && !value.is_empty())
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        pairs.push((key, value));
        format!(
            "/admin/jobs?{}",
            serde_urlencoded::to_string(&pairs).unwrap_or_default()
        )
    };
    html! {
        nav #job-counts aria-label="Jobs per filter value" {
            p {
                strong { "By state" @if let Some(lane) = lane { " (lane " (lane.as_str()) ")" } ": " }
                @for each in JobState::ALL {
                    a href=(link("state", each.as_str())) data-state=(each.as_str())
                        aria-current=[(state == Some(each)).then_some("true")] {
                        (each.as_str()) " " span.count { (count_text(counts.in_state(each, lane), counts.capped)) }
                    }
                    " "
                }
            }
            p {
                strong { "By lane" @if let Some(state) = state { " (state " (state.as_str()) ")" } ": " }
                @for each in Lane::ALL {
                    a href=(link("lane", each.as_str())) data-lane=(each.as_str())
                        aria-current=[(lane == Some(each)).then_some("true")] {
                        (each.as_str()) " " span.count { (count_text(counts.on_lane(each, state), counts.capped)) }
                    }
                    " "
                }
            }
            @if counts.capped {
                p.hint { "Counted over the first " (count_text(u64::from(COUNT_CAP), false)) " matching jobs." }
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
                JobState::ALL.map(JobState::as_str).join(", ")
            ))
        })?),
    };
    let lane = match lane_name.as_str() {
        "" => None,
        name => Some(Lane::parse(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "lane: {name:?} is none of {}",
                Lane::ALL.map(Lane::as_str).join(", ")
            ))
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
    let (queued_from, queued_before) = (
        parse_time("queued_from", &from_text)?,
        parse_time("queued_before", &before_text)?,
    );
    let params = api::JobListParams {
        state: job_state,
        lane,
        challenge_id,
        grader_id,
        queued_from,
        queued_before,
        limit: Some(JOBS_PAGE),
        cursor: query.get("cursor").filter(|c| !c.is_empty()).cloned(),
    };
    let (jobs, next) = api::list_jobs(State(state.clone()), user.user.clone(), AppQuery(params))
        .await?
        .into_parts();
    // Counts read from the store directly, after the API's admin check.
    let counted = JobQuery {
        challenge_id,
        grader_id,
        queued_from,
        queued_before,
        ..JobQuery::default()
    };
    let counts = state.store.count_jobs_by_value(counted, COUNT_CAP).await?;
    let filters = [
        ("state", state_name.clone()),
        ("lane", lane_name.clone()),
        ("challenge_id", challenge_text.clone()),
        ("grader_id", grader_text.clone()),
        ("queued_from", from_text.clone()),
        ("queued_before", before_text.clone()),
    ];
    let state_options: Vec<(&str, Option<String>)> = JobState::ALL
        .iter()
        .map(|each| {
            let count = counts.in_state(*each, lane);
            (each.as_str(), Some(count_text(count, counts.capped)))
        })
        .collect();
    let lane_options: Vec<(&str, Option<String>)> = Lane::ALL
        .iter()
        .map(|each| {
            let count = counts.on_lane(*each, job_state);
            (each.as_str(), Some(count_text(count, counts.capped)))
        })
        .collect();
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
            (filter_select("state", "State", &state_options, &state_name))
            (filter_select("lane", "Lane", &lane_options, &lane_name))
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
        (count_links(&filters, &counts, job_state, lane))
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
        (next_page("/admin/jobs", &filters, next.as_deref()))
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
    let job = api::get_job(
        State(state.clone()),
        user.user.clone(),
        AppPath(uuid_of(&id)?),
    )
    .await?
    .into_data();
    // Read from the store directly, after the API's admin check.
    let tries = state.store.list_job_tries(job.id).await?;
    let mut grader_names: HashMap<GraderId, String> = HashMap::new();
    for each in &tries {
        if !grader_names.contains_key(&each.grader_id) {
            if let Some(grader) = state.store.get_grader(each.grader_id).await? {
                grader_names.insert(grader.id, grader.name);
            }
        }
    }
    let now = Utc::now();
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
        h2 #tries-title { "Every try" }
        @if tries.is_empty() {
            p.hint { "Never leased." }
        } @else {
            table #tries aria-labelledby="tries-title" {
                thead { tr {
                    th.num scope="col" { "Try" } th scope="col" { "Grader" } th scope="col" { "Lease start" }
                    th scope="col" { "Lease end" } th.num scope="col" { "Held" } th scope="col" { "Outcome" } th scope="col" { "Error" }
                } }
                tbody {
                    @for (number, each) in tries.iter().enumerate() {
                        tr {
                            td.num { (number + 1) }
                            td {
                                @match grader_names.get(&each.grader_id) {
                                    Some(name) => { (name) " " }
                                    None => {}
                                }
                                code { (Uuid::from(each.grader_id).simple().to_string()[..12]) }
                            }
                            td { (when(each.started_at)) }
                            td { @match each.ended_at { Some(at) => (when(at)), None => "held now" } }
                            td.num { (age(each.started_at, each.ended_at.unwrap_or(now))) }
                            td { @match each.outcome { Some(outcome) => (badge(outcome.as_str())), None => (badge("LEASED")) } }
                            td { @if let Some(error) = &each.error { (error) } @else { "–" } }
                        }
                    }
                }
            }
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

/// Users listed on a page.
const USERS_PAGE: u32 = 100;

/// Users by id, a page at a time, and invites (the code shown once; the
/// open ones revocable).
fn users_body(
    user: &ConsoleUser,
    users: &[crate::store::User],
    next: Option<UserId>,
    invites: &[api_users::InviteRecord],
    created: Option<&api_users::InviteView>,
    revoked: Option<&str>,
) -> Markup {
    html! {
        h1 { "Users and invites" }
        @if let Some(id) = revoked {
            p.notice #revoked role="status" { "Invite " code { (id) } " revoked: its code registers no one now." }
        }
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
        p.hint { "The invitee registers with the code (`POST /api/v1/register` with `invite`, or `sqlarena register`). An invite is single-use and expires; an open one can be revoked." }
        h2 #invites-title { "Invites" }
        table #invites aria-labelledby="invites-title" {
            thead { tr {
                th scope="col" { "Id" } th scope="col" { "Role" } th scope="col" { "State" }
                th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "Used by" }
                th scope="col" { "Actions" }
            } }
            tbody {
                @for invite in invites {
                    @let short = invite.id.get(..12).unwrap_or(&invite.id);
                    tr {
                        td { code title=(invite.id) { (short) } }
                        td { (badge(invite.role.as_str())) }
                        td { (badge(invite.state.as_str())) }
                        td { (when(invite.created_at)) }
                        td { (when(invite.expires_at)) }
                        td.num { @if let Some(used_by) = invite.used_by { (used_by) } }
                        td {
                            @if invite.state == api_users::InviteState::Open {
                                form.inline method="post" action={ "/admin/invites/" (invite.id) "/revoke" } {
                                    input type="hidden" name="csrf" value=(user.csrf);
                                    button.danger type="submit" aria-label={ "Revoke invite " (short) } { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 #users-title { "Users" }
        table #users aria-labelledby="users-title" {
            thead { tr {
                th.num scope="col" { "Id" } th scope="col" { "Name" } th scope="col" { "Email" }
                th scope="col" { "Role" } th scope="col" { "Since" }
            } }
            tbody {
                @for each in users {
                    tr {
                        td.num { (each.id) }
                        td { (each.full_name) }
                        td { (each.email) }
                        td { (badge(each.role.as_str())) }
                        td { (when(each.created_at)) }
                    }
                }
            }
        }
        @if let Some(after) = next {
            nav.pager aria-label="Pages" { a href={ "/admin/users?after=" (after) } rel="next" { "Next page →" } }
        }
    }
}

/// The page of users after `after` and the id to continue from.
async fn users_after(
    state: &AppState,
    after: Option<UserId>,
) -> Result<(Vec<crate::store::User>, Option<UserId>), ConsoleError> {
    let mut users = state
        .store
        .list_users(crate::store::Page {
            after,
            limit: USERS_PAGE + 1,
        })
        .await?;
    let next = (users.len() > USERS_PAGE as usize).then(|| {
        users.truncate(USERS_PAGE as usize);
        users.last().map(|last| last.id)
    });
    Ok((users, next.flatten()))
}

async fn users_page(
    State(state): State<AppState>,
    user: ConsoleUser,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    // Only admins may list users and make invites: the same check as the
    // API's.
    user.user.require(&[Role::Admin])?;
    let after = match query.get("after").map(|text| text.trim()) {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<UserId>()
                .map_err(|_| ApiError::BadRequest(format!("after: {text:?} is not a user id")))?,
        ),
    };
    let (users, next) = users_after(&state, after).await?;
    let invites = invites(&state, &user).await?;
    Ok(html_response(
        StatusCode::OK,
        page(
            "Users",
            Some(&user),
            users_body(
                &user,
                &users,
                next,
                &invites,
                None,
                query.get("revoked").map(String::as_str),
            ),
        ),
    ))
}

/// The invites as the API lists them to `user`.
async fn invites(
    state: &AppState,
    user: &ConsoleUser,
) -> Result<Vec<api_users::InviteRecord>, ConsoleError> {
    Ok(
        api_users::list_invites(State(state.clone()), user.user.clone())
            .await?
            .into_data(),
    )
}

async fn revoke_invite(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: SignedForm,
) -> PageResult {
    let revoked = api_users::revoke_invite(State(state), form.user.user.clone(), AppPath(id))
        .await?
        .into_data();
    let short = revoked.id.get(..12).unwrap_or(&revoked.id);
    Ok(Redirect::to(&format!("/admin/users?revoked={short}")).into_response())
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
        State(state.clone()),
        form.user.user.clone(),
        AppJson(api_users::InviteRequest { role }),
    )
    .await?
    .into_data();
    let (users, next) = users_after(&state, None).await?;
    let invites = invites(&state, &form.user).await?;
    Ok(html_response(
        StatusCode::CREATED,
        page(
            "Users",
            Some(&form.user),
            users_body(&form.user, &users, next, &invites, Some(&invite), None),
        ),
    ))
}
