//! Grading runs: a challenge's professor (or an admin) grades a roster at
//! once, follows it, pauses, resumes, cancels it, retries its items in
//! ERROR, and downloads its gradebook; Broadway's `grading_run` shape as an
//! alias. Students never see runs; another professor neither sees nor
//! controls one.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlarena_common::exports::ExportFormat;
use sqlarena_common::runs::{
    AttemptRule, ItemFailurePolicy, ItemState, PostprocessingState, RunMode, RunState,
};
use sqlarena_common::{
    AttemptId, AttemptStatus, ChallengeId, Envelope, GraderId, JobId, PageEnvelope, Role, RunId,
    UserId,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{created, ok, ApiError, ApiResult, AppJson, AppPath, Reply};
use crate::http::download::{serve_bytes, Named};
use crate::http::openapi::{Conflict, Forbidden, NotFound, RangeNotSatisfiable};
use crate::http::pagination::{page, PageRequest, Paged};
use crate::runs::{RunRequest, Runs, MAX_IDEMPOTENCY_KEY, MAX_WEBHOOK_URL};
use crate::state::AppState;
use crate::store::runs::{AllTargets, Delivery, Run, RunItem, RunSpec, RunTargets};

/// Routes of runs.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_run))
        .routes(routes!(get_run))
        .routes(routes!(list_run_items))
        .routes(routes!(pause_run))
        .routes(routes!(resume_run))
        .routes(routes!(cancel_run))
        .routes(routes!(retry_run))
        .routes(routes!(get_gradebook))
        .routes(routes!(get_run_diff))
        .routes(routes!(run_events))
        .routes(routes!(publish_run))
        .routes(routes!(create_grading_run))
        .routes(routes!(start_grading_run, get_grading_run))
}

/// `"all"` (every student who attempted the challenge) or a list of user ids.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum TargetsRequest {
    All(AllTargets),
    Users(Vec<UserId>),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRunRequest {
    pub(crate) challenge_id: ChallengeId,
    pub(crate) targets: TargetsRequest,
    /// Which attempt of each student is graded (default `latest`).
    #[serde(default)]
    pub(crate) attempt: Option<AttemptRule>,
    /// `publish` (default) or `shadow`.
    #[serde(default)]
    pub(crate) mode: Option<RunMode>,
    /// What an item in ERROR does to the run (default `continue`).
    #[serde(default)]
    pub(crate) on_item_failure: Option<ItemFailurePolicy>,
    /// Called once when the run ends (http or https).
    #[serde(default)]
    #[schema(max_length = 2048, pattern = "^https?://")]
    pub(crate) webhook_url: Option<String>,
    /// The same key from the same professor returns the run it created.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub(crate) idempotency_key: Option<String>,
}

impl CreateRunRequest {
    fn into_run(self, start: bool) -> RunRequest {
        let targets = match self.targets {
            TargetsRequest::All(all) => RunTargets::All(all),
            TargetsRequest::Users(users) => RunTargets::Users(users),
        };
        RunRequest {
            spec: RunSpec {
                challenge_id: self.challenge_id,
                targets,
                attempt: self.attempt.unwrap_or(AttemptRule::Latest),
                mode: self.mode.unwrap_or(RunMode::Publish),
                on_item_failure: self.on_item_failure.unwrap_or(ItemFailurePolicy::Continue),
                webhook_url: self.webhook_url,
            },
            idempotency_key: self.idempotency_key,
            start,
        }
    }
}

/// Items of a run by state.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ItemCounts {
    pub(crate) total: u64,
    pub(crate) queued: u64,
    pub(crate) running: u64,
    pub(crate) done: u64,
    pub(crate) error: u64,
    pub(crate) cancelled: u64,
}

/// One call of the run's webhook.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeliveryView {
    pub(crate) attempt: u32,
    pub(crate) at: DateTime<Utc>,
    pub(crate) status_code: Option<u16>,
    pub(crate) error: Option<String>,
    pub(crate) duration_ms: u64,
}

impl From<Delivery> for DeliveryView {
    fn from(delivery: Delivery) -> Self {
        DeliveryView {
            attempt: delivery.attempt,
            at: delivery.at,
            status_code: delivery.status_code,
            error: delivery.error,
            duration_ms: delivery.duration_ms,
        }
    }
}

/// A grading run.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunView {
    pub(crate) id: RunId,
    pub(crate) challenge_id: ChallengeId,
    pub(crate) challenge_version: i64,
    pub(crate) created_by: UserId,
    pub(crate) state: RunState,
    pub(crate) mode: RunMode,
    pub(crate) attempt: AttemptRule,
    pub(crate) on_item_failure: ItemFailurePolicy,
    /// `"all"` or the user ids asked for.
    pub(crate) targets: TargetsRequest,
    pub(crate) webhook_url: Option<String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) counts: ItemCounts,
    /// Jobs queued ahead of the run's next item in its lane.
    pub(crate) queue_position: Option<u64>,
    /// Estimated seconds until every item has ended.
    pub(crate) eta_seconds: Option<f64>,
    pub(crate) postprocessing: PostprocessingState,
    pub(crate) published: bool,
    /// Where the gradebook (CSV) is, once built.
    pub(crate) gradebook_url: Option<String>,
    pub(crate) webhook_deliveries: Vec<DeliveryView>,
    /// The professor's webhook secret, shown once: when this run made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) webhook_secret: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
}

/// One item of a run: a student and the attempt graded for them.
#[derive(Debug, Serialize, ToSchema)]
struct RunItemView {
    item: i64,
    user_id: UserId,
    attempt_id: Option<AttemptId>,
    job_id: Option<JobId>,
    grader_id: Option<GraderId>,
    tries: u32,
    state: ItemState,
    /// The grade, as an attempt's status.
    status: Option<AttemptStatus>,
    /// Percentage of the test cases passed.
    score: Option<f64>,
    execution_ms: Option<f64>,
    ratio: Option<f64>,
    error: Option<String>,
    /// Why an item has no grade (e.g. the student made no attempt).
    note: Option<String>,
    finished_at: Option<DateTime<Utc>>,
}

/// Builds the view of a run, with live counts, queue position and ETA.
async fn run_view(
    state: &AppState,
    run: Run,
    webhook_secret: Option<String>,
) -> ApiResult<RunView> {
    let running = if run.state.is_final() {
        0
    } else {
        state.store.count_running_items(run.id).await?
    };
    let queue_position = if matches!(run.state, RunState::Running) {
        state.store.run_queue_position(run.id).await?
    } else {
        None
    };
    let remaining = run.counts.total.saturating_sub(run.counts.ended());
    let eta_seconds = crate::runs::eta_seconds(&run);
    let deliveries = state.store.list_deliveries(run.id).await?;
    let targets = match &run.spec.targets {
        RunTargets::All(all) => TargetsRequest::All(*all),
        RunTargets::Users(users) => TargetsRequest::Users(users.clone()),
    };
    Ok(RunView {
        id: run.id,
        challenge_id: run.spec.challenge_id,
        challenge_version: run.challenge_version,
        created_by: run.created_by,
        state: run.state,
        mode: run.spec.mode,
        attempt: run.spec.attempt,
        on_item_failure: run.spec.on_item_failure,
        targets,
        webhook_url: run.spec.webhook_url.clone(),
        idempotency_key: run.idempotency_key.clone(),
        counts: ItemCounts {
            total: run.counts.total,
            queued: remaining.saturating_sub(running),
            running,
            done: run.counts.done,
            error: run.counts.error,
            cancelled: run.counts.cancelled,
        },
        queue_position,
        eta_seconds,
        postprocessing: run.postprocessing,
        published: run.published,
        gradebook_url: run
            .gradebook
            .as_ref()
            .map(|_| format!("/api/v1/runs/{}/gradebook", run.id)),
        webhook_deliveries: deliveries.into_iter().map(DeliveryView::from).collect(),
        webhook_secret,
        created_at: run.created_at,
        started_at: run.started_at,
        finished_at: run.finished_at,
    })
}

fn item_view(item: RunItem, running: bool) -> RunItemView {
    let state = if running && item.state == ItemState::Queued {
        ItemState::Running
    } else {
        item.state
    };
    RunItemView {
        item: item.item,
        user_id: item.user_id,
        attempt_id: item.attempt_id,
        job_id: item.job_id,
        grader_id: item.result.grader_id,
        tries: item.result.tries,
        state,
        status: item.result.status,
        score: item.result.score,
        execution_ms: item.result.execution_ms,
        ratio: item.result.ratio,
        error: item.result.error,
        note: item.note,
        finished_at: item.finished_at,
    }
}

/// Refuses students: runs are for professors and admins.
fn require_staff(user: &CurrentUser) -> ApiResult<()> {
    user.require(&[Role::Professor, Role::Admin])
}

/// Loads a run the caller may see and control.
async fn visible(state: &AppState, user: &CurrentUser, id: RunId) -> ApiResult<Run> {
    require_staff(user)?;
    Ok(state.runs.visible_run(&user.0, id).await?)
}

async fn create(
    state: &AppState,
    user: &CurrentUser,
    request: CreateRunRequest,
    start: bool,
) -> ApiResult<Reply<RunView>> {
    require_staff(user)?;
    let created_run = state.runs.create(&user.0, request.into_run(start)).await?;
    let view = run_view(state, created_run.run, created_run.webhook_secret).await?;
    Ok(if created_run.created {
        created(view)
    } else {
        ok(view)
    })
}

/// Creates and starts a grading run of a challenge: one item per target,
/// the attempt each is graded with chosen by `attempt`; a target with no
/// attempt is an item DONE with no score. The challenge's professor or an
/// admin; a repeated `idempotency_key` answers 200 with the run it made.
#[utoipa::path(post, path = "/runs", tag = "runs", security(("session" = [])),
    request_body = CreateRunRequest,
    responses((status = 201, body = Envelope<RunView>),
        (status = 200, description = "The run this idempotency key made", body = Envelope<RunView>),
        Forbidden, NotFound, Conflict))]
pub(crate) async fn create_run(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(request): AppJson<CreateRunRequest>,
) -> ApiResult<Reply<RunView>> {
    create(&state, &user, request, true).await
}

/// A run: state, counts per item state, queue position of its next item,
/// ETA, postprocessing and webhook deliveries.
#[utoipa::path(get, path = "/runs/{id}", tag = "runs", security(("session" = [])),
    params(("id" = i64, Path, description = "The run")),
    responses((status = 200, body = Envelope<RunView>), Forbidden))]
pub(crate) async fn get_run(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<RunId>,
) -> ApiResult<Reply<RunView>> {
    let run = visible(&state, &user, id).await?;
    Ok(ok(run_view(&state, run, None).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ItemParams {
    /// Only items in this state.
    state: Option<ItemState>,
    /// Entries per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A run's items in order: user, attempt, job, grader, tries, state,
/// status, score, error.
#[utoipa::path(get, path = "/runs/{id}/items", tag = "runs", security(("session" = [])),
    params(("id" = i64, Path, description = "The run"), ItemParams),
    responses((status = 200, body = PageEnvelope<RunItemView>), Forbidden))]
async fn list_run_items(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<RunId>,
    params: Result<Query<ItemParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Paged<RunItemView>> {
    let Query(params) = params.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let request = PageRequest::<i64>::new("run_items", params.limit, params.cursor.as_deref())?;
    let run = visible(&state, &user, id).await?;
    let store_page = request.store_page();
    let items = state
        .store
        .list_run_items(run.id, params.state, store_page.after, store_page.limit)
        .await?;
    let (items, next) = request.finish(items, |item| item.item);
    let running = match params.state {
        Some(ItemState::Running) => items.iter().map(|item| item.item).collect(),
        Some(_) => Vec::new(),
        None if run.state.is_final() => Vec::new(),
        None => state
            .store
            .list_run_items(run.id, Some(ItemState::Running), None, 0)
            .await?
            .into_iter()
            .map(|item| item.item)
            .collect(),
    };
    let views = items
        .into_iter()
        .map(|item| {
            let is_running = running.contains(&item.item);
            item_view(item, is_running)
        })
        .collect();
    Ok(page(views, next))
}

/// Which control a POST applies.
enum Control {
    Pause,
    Resume,
    Cancel,
    Retry,
}

async fn control(
    state: &AppState,
    user: &CurrentUser,
    id: RunId,
    control: Control,
) -> ApiResult<Reply<RunView>> {
    let run = visible(state, user, id).await?;
    let runs: &Runs = &state.runs;
    let run = match control {
        Control::Pause => runs.pause(&run).await?,
        Control::Resume => runs.resume(&run).await?,
        Control::Cancel => runs.cancel(&run).await?,
        Control::Retry => runs.retry(&run).await?,
    };
    tracing::info!(run_id = %run.id, user_id = %user.0.id, state = %run.state, "run controlled");
    Ok(ok(run_view(state, run, None).await?))
}

/// Pauses a RUNNING run at the next item boundary: running items finish,
/// queued ones leave the queue (409 otherwise).
#[utoipa::path(post, path = "/runs/{id}/pause", tag = "runs", security(("session" = [])),
    params(("id" = i64, Path, description = "The run")),
    responses((status = 200, body = Envelope<RunView>), Forbidden, Conflict))]
pub(crate) async fn pause_run(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<RunId>,
) -> ApiResult<Reply<RunView>> {
    control(&state, &user, id, Control::Pause).await
}

/// Resumes a PAUSED run (409 otherwise).
#[utoipa::path(post, path = "/runs/{id}/resume", tag = "runs", security(("session" = [])),
    params(("id" = i64, Path, description = "The run")),
    responses((status = 200, body = Envelope<RunView>), Forbidden, Conflict))]
pub(crate) async fn resume_run(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<RunId>,
) -> ApiResult<Reply<RunView>> {
    control(&state, &user, id, Control::Resume).await
}

/// Cancels a run: nothing more is graded; the gradebook of what was
/// graded is still built (409 once it has ended).
#[utoipa::path(post, path = "/runs/{id}/cancel", tag = "runs", security(("session" = [])),
    params(("id" = i64, Path, description = "The run")),
    responses((status = 200, body = Envelope<RunView>), Forbidden, Conflict))]
pub(crate) async fn cancel_run(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<RunId>,
) -> ApiResult<Reply<RunView>> {
    control(&state, &user, id, Control::Cancel).await
}

/// Grades again the items in ERROR of a finished run (409 when it has
/// none or has not finished).
#[utoipa::path(post, path = "/runs/{id}/retry", tag = "runs", security(("session" = [])),
    params(("id" = i64, Path, description = "The run")),
    responses((status = 200, body = Envelope<RunView>), Forbidden, Conflict))]
async fn retry_run(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<RunId>,
) -> ApiResult<Reply<RunView>> {
    control(&state, &user, id, Control::Retry).await
}

/// The run's gradebook as CSV, one row per student (404 until
/// postprocessing built it); `Range` is served as for exports (206, 416).
#[utoipa::path(get, path = "/runs/{id}/gradebook", tag = "runs", security(("session" = [])),
    params(("id" = i64, Path, description = "The run")),
    responses((status = 200, content_type = "text/csv", body = String),
        (status = 206, description = "The range asked for", content_type = "text/csv", body = String),
        RangeNotSatisfiable, Forbidden))]
pub(crate) async fn get_gradebook(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<RunId>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let run = visible(&state, &user, id).await?;
    let gradebook = run.gradebook.ok_or_else(|| {
        ApiError::NotFound(format!(
            "run {id} has no gradebook yet: it is built once every item has ended"
        ))
    })?;
    let filename = format!("run-{id}-gradebook.csv");
    let named = Named {
        content_type: ExportFormat::Csv.content_type(),
        filename: &filename,
    };
    serve_bytes(gradebook.into_bytes(), &named, &headers)
}

/// A student whose published status or score the run would change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChangeView {
    pub(crate) user_id: UserId,
    pub(crate) attempt_id: AttemptId,
    /// Where the published result comes from: `run N` or `attempt N`.
    pub(crate) published_from: String,
    pub(crate) published_status: Option<AttemptStatus>,
    pub(crate) published_score: Option<f64>,
    pub(crate) status: Option<AttemptStatus>,
    pub(crate) score: Option<f64>,
}

/// The students whose status or score this (shadow) run would change,
/// against the challenge's latest published run or, where none graded a
/// student, the attempt's own result (409 until the run has finished).
#[utoipa::path(get, path = "/runs/{id}/diff", tag = "runs", security(("session" = [])),
    params(("id" = i64, Path, description = "The run")),
    responses((status = 200, body = Envelope<Vec<ChangeView>>), Forbidden, Conflict))]
pub(crate) async fn get_run_diff(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<RunId>,
) -> ApiResult<Reply<Vec<ChangeView>>> {
    let run = visible(&state, &user, id).await?;
    let changes = state.runs.diff(&run).await?;
    Ok(ok(changes
        .into_iter()
        .map(|change| ChangeView {
            user_id: change.user_id,
            attempt_id: change.attempt_id,
            published_from: change.published_from,
            published_status: change.published_status,
            published_score: change.published_score,
            status: change.status,
            score: change.score,
        })
        .collect()))
}

/// Publishes a finished shadow run: its results become the published ones
/// (409 for a publish run, an unfinished or already published one).
#[utoipa::path(post, path = "/runs/{id}/publish", tag = "runs", security(("session" = [])),
    params(("id" = i64, Path, description = "The run")),
    responses((status = 200, body = Envelope<RunView>), Forbidden, Conflict))]
pub(crate) async fn publish_run(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<RunId>,
) -> ApiResult<Reply<RunView>> {
    let run = visible(&state, &user, id).await?;
    let run = state.runs.publish(&run).await?;
    tracing::info!(run_id = %run.id, user_id = %user.0.id, "run published");
    Ok(ok(run_view(&state, run, None).await?))
}

/// A server-sent-events stream of the run's transitions: a `run` event
/// with the run as `GET /runs/{id}` shows it, at once and then each time
/// one of its items or the run itself changes; the stream ends after the
/// event that shows the run ended.
#[utoipa::path(get, path = "/runs/{id}/events", tag = "runs", security(("session" = [])),
    params(("id" = i64, Path, description = "The run")),
    responses((status = 200, content_type = "text/event-stream",
        description = "`run` events, each the run's JSON", body = String), Forbidden))]
async fn run_events(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<RunId>,
) -> ApiResult<Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>> {
    visible(&state, &user, id).await?;
    let receiver = state.jobs.run_events();
    let shutdown = state.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (state, receiver, false, true),
        move |(state, mut receiver, ended, first)| {
            let shutdown = shutdown.clone();
            async move {
                if ended {
                    return None;
                }
                if !first {
                    loop {
                        let changed = tokio::select! {
                            () = shutdown.cancelled() => return None,
                            changed = receiver.recv() => changed,
                        };
                        match changed {
                            Ok(run_id) if run_id == id => break,
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                }
                let run = state.store.get_run(id).await.ok().flatten()?;
                let view = run_view(&state, run, None).await.ok()?;
                let ended = view.state.is_final();
                let event = Event::default().event("run").json_data(&view).ok()?;
                Some((Ok(event), (state, receiver, ended, false)))
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

// --- Broadway's shape -------------------------------------------------------

/// Broadway's answer to a created grading run.
#[derive(Debug, Serialize, ToSchema)]
struct GradingRunCreated {
    id: RunId,
}

/// Broadway's view of a grading run.
#[derive(Debug, Serialize, ToSchema)]
struct GradingRunView {
    student_statuses: Vec<StudentStatus>,
    postprocessing_status: PostprocessingStatus,
}

#[derive(Debug, Serialize, ToSchema)]
struct StudentStatus {
    /// The item's job, or null when it has none (no attempt, not queued).
    job_id: Option<JobId>,
    user_id: UserId,
    status: ItemState,
}

#[derive(Debug, Serialize, ToSchema)]
struct PostprocessingStatus {
    job_id: Option<JobId>,
    status: PostprocessingState,
}

/// Broadway's `POST /grading_run`: creates a run (the same body as
/// `POST /runs`) that waits QUEUED until started.
#[utoipa::path(post, path = "/grading_run", tag = "runs", security(("session" = [])),
    request_body = CreateRunRequest,
    responses((status = 201, body = Envelope<GradingRunCreated>),
        (status = 200, description = "The run this idempotency key made", body = Envelope<GradingRunCreated>),
        Forbidden, NotFound, Conflict))]
async fn create_grading_run(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(request): AppJson<CreateRunRequest>,
) -> ApiResult<Reply<GradingRunCreated>> {
    require_staff(&user)?;
    let created_run = state.runs.create(&user.0, request.into_run(false)).await?;
    let answer = GradingRunCreated {
        id: created_run.run.id,
    };
    Ok(if created_run.created {
        created(answer)
    } else {
        ok(answer)
    })
}

/// Broadway's `POST /grading_run/{id}`: starts a QUEUED run (409 otherwise).
#[utoipa::path(post, path = "/grading_run/{id}", tag = "runs", security(("session" = [])),
    params(("id" = i64, Path, description = "The run")),
    responses((status = 200, body = Envelope<GradingRunCreated>), Forbidden, Conflict))]
async fn start_grading_run(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<RunId>,
) -> ApiResult<Reply<GradingRunCreated>> {
    let run = visible(&state, &user, id).await?;
    let run = state.runs.start(&run).await?;
    Ok(ok(GradingRunCreated { id: run.id }))
}

/// Broadway's `GET /grading_run/{id}`: each student's job and status, and
/// the postprocessing's.
#[utoipa::path(get, path = "/grading_run/{id}", tag = "runs", security(("session" = [])),
    params(("id" = i64, Path, description = "The run")),
    responses((status = 200, body = Envelope<GradingRunView>), Forbidden))]
async fn get_grading_run(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<RunId>,
) -> ApiResult<Reply<GradingRunView>> {
    let run = visible(&state, &user, id).await?;
    let items = state.store.list_run_items(run.id, None, None, 0).await?;
    let running: Vec<i64> = if run.state.is_final() {
        Vec::new()
    } else {
        state
            .store
            .list_run_items(run.id, Some(ItemState::Running), None, 0)
            .await?
            .into_iter()
            .map(|item| item.item)
            .collect()
    };
    let student_statuses = items
        .into_iter()
        .map(|item| {
            let view = item_view(item, false);
            let status = if running.contains(&view.item) {
                ItemState::Running
            } else {
                view.state
            };
            StudentStatus {
                job_id: view.job_id,
                user_id: view.user_id,
                status,
            }
        })
        .collect();
    Ok(ok(GradingRunView {
        student_statuses,
        postprocessing_status: PostprocessingStatus {
            job_id: None,
            status: run.postprocessing,
        },
    }))
}

/// Holds the schema constants to the service's limits.
const _: () = {
    assert!(MAX_IDEMPOTENCY_KEY == 200);
    assert!(MAX_WEBHOOK_URL == 2048);
};
