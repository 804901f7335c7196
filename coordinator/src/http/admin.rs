//! Admin endpoints (`/api/v1/admin`): cluster tokens, graders, jobs and
//! queues. Every route needs the ADMIN role.

use axum::extract::State;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlarena_common::{GraderState, JobKind, JobOutcome, JobPayload, JobState, Lane};
use uuid::Uuid;

use crate::auth::{self, CurrentUser};
use crate::error::{created, ok, ApiError, ApiResult, AppJson, AppPath, AppQuery};
use crate::http::pagination::{page, PageParams, PageRequest};
use crate::state::AppState;
use crate::store::{ClusterToken, Grader, Job, JobFilter};

/// Routes of the admin endpoints.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/cluster-tokens",
            post(create_cluster_token).get(list_cluster_tokens),
        )
        .route("/admin/cluster-tokens/{id}", delete(revoke_cluster_token))
        .route("/admin/graders", get(list_graders))
        .route("/admin/graders/{id}/drain", post(drain_grader))
        .route("/admin/jobs", get(list_jobs))
        .route("/admin/jobs/{id}", get(get_job))
        .route("/admin/jobs/{id}/cancel", post(cancel_job))
        .route("/admin/jobs/{id}/retry", post(retry_job))
        .route("/admin/queues", get(get_queues))
}

fn require_admin(user: &CurrentUser) -> ApiResult<()> {
    if user.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden("only admins may do this".into()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClusterToken {
    #[serde(default)]
    label: String,
}

#[derive(Serialize)]
struct ClusterTokenView {
    id: Uuid,
    label: String,
    created_by: Option<i64>,
    created_at: DateTime<Utc>,
    revoked: bool,
    /// Present only in the reply that creates the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl From<ClusterToken> for ClusterTokenView {
    fn from(token: ClusterToken) -> Self {
        ClusterTokenView {
            id: token.id,
            label: token.label,
            created_by: token.created_by,
            created_at: token.created_at,
            revoked: token.revoked,
            token: None,
        }
    }
}

async fn create_cluster_token(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(request): AppJson<NewClusterToken>,
) -> ApiResult<Response> {
    require_admin(&user)?;
    if request.label.len() > 200 {
        return Err(ApiError::Unprocessable(
            "label: at most 200 characters".into(),
        ));
    }
    let secret = auth::new_token("sqc_");
    let token = ClusterToken {
        id: Uuid::now_v7(),
        label: request.label,
        token_hash: auth::token_hash(&secret),
        created_by: Some(user.0.id),
        created_at: Utc::now(),
        revoked: false,
    };
    state.store.create_cluster_token(token.clone()).await?;
    tracing::info!(token_id = %token.id, admin = user.0.id, "cluster token created");
    let mut view = ClusterTokenView::from(token);
    view.token = Some(secret);
    Ok(created(view))
}

async fn list_cluster_tokens(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<Response> {
    require_admin(&user)?;
    let tokens: Vec<ClusterTokenView> = state
        .store
        .list_cluster_tokens()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(ok(tokens))
}

async fn revoke_cluster_token(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Response> {
    require_admin(&user)?;
    if !state.store.revoke_cluster_token(id).await? {
        return Err(ApiError::NotFound(format!("no cluster token {id}")));
    }
    tracing::info!(token_id = %id, admin = user.0.id, "cluster token revoked");
    Ok(ok(serde_json::json!({"id": id, "revoked": true})))
}

#[derive(Serialize)]
struct GraderView {
    id: Uuid,
    name: String,
    hostname: String,
    version: String,
    lanes: Vec<Lane>,
    slots: u32,
    state: GraderState,
    last_heartbeat: DateTime<Utc>,
    registered_at: DateTime<Utc>,
    jobs_done: u64,
}

impl From<Grader> for GraderView {
    fn from(grader: Grader) -> Self {
        GraderView {
            id: grader.id,
            name: grader.name,
            hostname: grader.hostname,
            version: grader.version,
            lanes: grader.lanes,
            slots: grader.slots,
            state: grader.state,
            last_heartbeat: grader.last_heartbeat,
            registered_at: grader.registered_at,
            jobs_done: grader.jobs_done,
        }
    }
}

async fn list_graders(
    State(state): State<AppState>,
    user: CurrentUser,
    AppQuery(params): AppQuery<PageParams>,
) -> ApiResult<Response> {
    require_admin(&user)?;
    let request = PageRequest::from_params("graders", &params)?;
    let graders = state.store.list_graders(request.store_page()).await?;
    let (graders, next_cursor) = request.finish(graders, |grader| grader.id);
    let views: Vec<GraderView> = graders.into_iter().map(Into::into).collect();
    Ok(page(views, next_cursor))
}

async fn drain_grader(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Response> {
    require_admin(&user)?;
    let grader = state
        .store
        .get_grader(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no grader {id}")))?;
    if !state
        .store
        .set_grader_state(id, GraderState::Draining)
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "grader {} is {} and cannot be drained",
            grader.name, grader.state
        )));
    }
    tracing::info!(grader_id = %id, admin = user.0.id, "grader draining");
    Ok(ok(
        serde_json::json!({"id": id, "state": GraderState::Draining}),
    ))
}

/// A job as admins see it.
#[derive(Serialize)]
struct JobView {
    id: Uuid,
    kind: JobKind,
    lane: Lane,
    state: JobState,
    tries: u32,
    max_tries: u32,
    challenge_id: i64,
    attempt_id: Option<i64>,
    grader_id: Option<Uuid>,
    lease_expires_at: Option<DateTime<Utc>>,
    error: Option<String>,
    cancel_requested: bool,
    applied: bool,
    cases_recorded: usize,
    has_outcome: bool,
    created_at: DateTime<Utc>,
    leased_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        let (challenge_id, attempt_id) = match &job.payload {
            JobPayload::Init(init) => (init.challenge_id, None),
            JobPayload::Attempt(attempt) => (attempt.challenge_id, Some(attempt.attempt_id)),
        };
        JobView {
            id: job.id,
            kind: job.kind,
            lane: job.lane,
            state: job.state,
            tries: job.tries,
            max_tries: job.max_tries,
            challenge_id,
            attempt_id,
            grader_id: job.lease.map(|lease| lease.grader_id),
            lease_expires_at: job.lease.map(|lease| lease.expires_at),
            error: job.error,
            cancel_requested: job.cancel_requested,
            applied: job.applied,
            cases_recorded: match &job.outcome {
                Some(JobOutcome::Attempt(outcome)) => outcome.cases.len(),
                _ => job.progress.len(),
            },
            has_outcome: job.outcome.is_some(),
            created_at: job.created_at,
            leased_at: job.leased_at,
            finished_at: job.finished_at,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobListParams {
    state: Option<String>,
    lane: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list_jobs(
    State(state): State<AppState>,
    user: CurrentUser,
    AppQuery(params): AppQuery<JobListParams>,
) -> ApiResult<Response> {
    require_admin(&user)?;
    let job_state = match params.state.as_deref() {
        None | Some("") => None,
        Some(text) => Some(JobState::parse(&text.to_ascii_uppercase()).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "state: {text:?} is not one of QUEUED, LEASED, DONE, FAILED, CANCELLED"
            ))
        })?),
    };
    let lane = match params.lane.as_deref() {
        None | Some("") => None,
        Some(text) => Some(Lane::parse(&text.to_ascii_lowercase()).ok_or_else(|| {
            ApiError::BadRequest(format!("lane: {text:?} is not one of init, fast, slow"))
        })?),
    };
    let request = PageRequest::new("jobs", params.limit, params.cursor.as_deref())?;
    let store_page = request.store_page();
    let jobs = state
        .store
        .list_jobs(JobFilter {
            state: job_state,
            lane,
            limit: store_page.limit,
            after: store_page.after,
        })
        .await?;
    let (jobs, next_cursor) = request.finish(jobs, |job| job.seq);
    let views: Vec<JobView> = jobs.into_iter().map(Into::into).collect();
    Ok(page(views, next_cursor))
}

async fn get_job(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Response> {
    require_admin(&user)?;
    let job = state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    Ok(ok(JobView::from(job)))
}

async fn cancel_job(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Response> {
    require_admin(&user)?;
    let reason = format!("cancelled by admin {}", user.0.email);
    let job = state.jobs.cancel_job(id, &reason).await?;
    tracing::info!(job_id = %id, admin = user.0.id, "job cancelled");
    Ok(ok(JobView::from(job)))
}

async fn retry_job(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Response> {
    require_admin(&user)?;
    let job = state.jobs.retry_job(id).await?;
    tracing::info!(job_id = %id, admin = user.0.id, "job requeued by admin");
    Ok(ok(JobView::from(job)))
}

#[derive(Serialize)]
struct QueueView {
    lane: Lane,
    queued: u64,
    leased: u64,
    oldest_queued_at: Option<DateTime<Utc>>,
    oldest_age_ms: i64,
}

async fn get_queues(State(state): State<AppState>, user: CurrentUser) -> ApiResult<Response> {
    require_admin(&user)?;
    let now = Utc::now();
    let queues: Vec<QueueView> = state
        .store
        .lane_stats()
        .await?
        .into_iter()
        .map(|stats| QueueView {
            lane: stats.lane,
            queued: stats.queued,
            leased: stats.leased,
            oldest_queued_at: stats.oldest_queued_at,
            oldest_age_ms: stats
                .oldest_queued_at
                .map(|at| (now - at).num_milliseconds().max(0))
                .unwrap_or(0),
        })
        .collect();
    Ok(ok(queues))
}
