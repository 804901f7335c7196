//! Admin endpoints (`/api/v1/admin`): cluster tokens, graders, jobs and
//! queues. Every route needs the ADMIN role.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlarena_common::{
    AttemptId, CaseAudit, ChallengeId, Envelope, GraderId, GraderState, JobId, JobKind, JobOutcome,
    JobPayload, JobState, Lane, PageEnvelope, TestCaseId, UserId,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::audit::{self, Calibration};
use crate::auth::{self, CurrentUser};
use crate::error::{created, ok, ApiError, ApiResult, AppJson, AppPath, AppQuery, Reply};
use crate::http::openapi::{Conflict, Forbidden};
use crate::http::pagination::{page, PageParams, PageRequest, Paged};
use crate::http::views::Revoked;
use crate::state::AppState;
use crate::store::console::JobQuery;
use crate::store::{ClusterToken, Grader, Job};

/// Routes of the admin endpoints.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_cluster_token, list_cluster_tokens))
        .routes(routes!(revoke_cluster_token))
        .routes(routes!(list_graders))
        .routes(routes!(drain_grader))
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
        .routes(routes!(retry_job))
        .routes(routes!(get_queues))
}

/// Returns 403 unless `user` is an admin (the console's admin pages ask
/// the same).
pub(crate) fn require_admin(user: &CurrentUser) -> ApiResult<()> {
    if user.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden("only admins may do this".into()))
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewClusterToken {
    /// What the token is for, for people.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub(crate) label: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ClusterTokenView {
    pub(crate) id: Uuid,
    pub(crate) label: String,
    pub(crate) created_by: Option<UserId>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) revoked: bool,
    /// Present only in the reply that creates the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<String>,
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

/// Makes a cluster token for graders to register with; shown once.
#[utoipa::path(post, path = "/admin/cluster-tokens", tag = "admin", security(("session" = [])),
    request_body = NewClusterToken,
    responses((status = 201, body = Envelope<ClusterTokenView>), Forbidden))]
pub(crate) async fn create_cluster_token(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(request): AppJson<NewClusterToken>,
) -> ApiResult<Reply<ClusterTokenView>> {
    require_admin(&user)?;
    if request.label.chars().count() > 200 {
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
    tracing::info!(token_id = %token.id, admin = %user.0.id, "cluster token created");
    let mut view = ClusterTokenView::from(token);
    view.token = Some(secret);
    Ok(created(view))
}

/// Lists cluster tokens (never their secrets).
#[utoipa::path(get, path = "/admin/cluster-tokens", tag = "admin", security(("session" = [])),
    responses((status = 200, body = Envelope<Vec<ClusterTokenView>>), Forbidden))]
pub(crate) async fn list_cluster_tokens(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<Reply<Vec<ClusterTokenView>>> {
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

/// Revokes a cluster token: graders that registered with it are cut off.
#[utoipa::path(delete, path = "/admin/cluster-tokens/{id}", tag = "admin", security(("session" = [])),
    params(("id" = Uuid, Path, description = "The cluster token")),
    responses((status = 200, body = Envelope<Revoked>), Forbidden))]
pub(crate) async fn revoke_cluster_token(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Reply<Revoked>> {
    require_admin(&user)?;
    if !state.store.revoke_cluster_token(id).await? {
        return Err(ApiError::NotFound(format!("no cluster token {id}")));
    }
    tracing::info!(token_id = %id, admin = %user.0.id, "cluster token revoked");
    Ok(ok(Revoked { id, revoked: true }))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct GraderView {
    pub(crate) id: GraderId,
    pub(crate) name: String,
    pub(crate) hostname: String,
    pub(crate) version: String,
    pub(crate) lanes: Vec<Lane>,
    pub(crate) slots: u32,
    pub(crate) state: GraderState,
    pub(crate) last_heartbeat: DateTime<Utc>,
    pub(crate) registered_at: DateTime<Utc>,
    pub(crate) jobs_done: u64,
    /// How fast its reference runs are against the cluster's median
    /// grader, on the test cases both timed in the recent passed attempts:
    /// 1.0 for the median grader, 0.5 for one whose reference runs take
    /// twice as long (a slow or overloaded machine). Null until it shares a
    /// test case with another grader.
    pub(crate) reference_speed: Option<f64>,
    /// The reference timings of this grader `reference_speed` comes from.
    pub(crate) calibration_samples: u64,
}

impl GraderView {
    /// The view of `grader` with its calibration, if it has one.
    fn calibrated(grader: Grader, calibration: Option<&Calibration>) -> GraderView {
        GraderView {
            reference_speed: calibration.and_then(|calibration| calibration.reference_speed),
            calibration_samples: calibration.map_or(0, |calibration| calibration.samples as u64),
            ..GraderView::from(grader)
        }
    }
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
            reference_speed: None,
            calibration_samples: 0,
        }
    }
}

/// Lists graders.
#[utoipa::path(get, path = "/admin/graders", tag = "admin", security(("session" = [])), params(PageParams),
    responses((status = 200, body = PageEnvelope<GraderView>), Forbidden))]
pub(crate) async fn list_graders(
    State(state): State<AppState>,
    user: CurrentUser,
    AppQuery(params): AppQuery<PageParams>,
) -> ApiResult<Paged<GraderView>> {
    require_admin(&user)?;
    let request = PageRequest::from_params("graders", &params)?;
    let graders = state.store.list_graders(request.store_page()).await?;
    let (graders, next_cursor) = request.finish(graders, |grader| grader.id);
    let calibration = audit::grader_calibration(state.store.as_ref()).await?;
    let views: Vec<GraderView> = graders
        .into_iter()
        .map(|grader| {
            let calibrated = calibration.get(&grader.id);
            GraderView::calibrated(grader, calibrated)
        })
        .collect();
    Ok(page(views, next_cursor))
}

/// A grader's new state.
#[derive(Serialize, ToSchema)]
pub(crate) struct GraderStateView {
    pub(crate) id: GraderId,
    pub(crate) state: GraderState,
}

/// Drains a grader: it finishes its jobs and leases nothing new.
#[utoipa::path(post, path = "/admin/graders/{id}/drain", tag = "admin", security(("session" = [])),
    params(("id" = Uuid, Path, description = "The grader")),
    responses((status = 200, body = Envelope<GraderStateView>), Forbidden, Conflict))]
pub(crate) async fn drain_grader(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<GraderId>,
) -> ApiResult<Reply<GraderStateView>> {
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
    tracing::info!(grader_id = %id, admin = %user.0.id, "grader draining");
    Ok(ok(GraderStateView {
        id,
        state: GraderState::Draining,
    }))
}

/// A job as admins see it.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobView {
    pub(crate) id: JobId,
    pub(crate) kind: JobKind,
    pub(crate) lane: Lane,
    pub(crate) state: JobState,
    pub(crate) tries: u32,
    pub(crate) max_tries: u32,
    pub(crate) challenge_id: ChallengeId,
    pub(crate) attempt_id: Option<AttemptId>,
    pub(crate) grader_id: Option<GraderId>,
    pub(crate) lease_expires_at: Option<DateTime<Utc>>,
    pub(crate) error: Option<String>,
    pub(crate) cancel_requested: bool,
    pub(crate) applied: bool,
    pub(crate) cases_recorded: usize,
    pub(crate) has_outcome: bool,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) leased_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    /// Where and how each test case was measured (grader, PostgreSQL
    /// version, rounds, timing summary): in `GET /admin/jobs/{id}` only,
    /// absent from lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) audit: Option<Vec<CaseAuditEntry>>,
}

/// The audit of one test case of a job.
#[derive(Serialize, ToSchema)]
pub(crate) struct CaseAuditEntry {
    pub(crate) test_case_id: TestCaseId,
    #[serde(flatten)]
    pub(crate) audit: CaseAudit,
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
            audit: None,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct JobListParams {
    /// Only jobs in this state.
    pub(crate) state: Option<JobState>,
    /// Only jobs on this lane.
    pub(crate) lane: Option<Lane>,
    /// Only jobs for this challenge (init or attempt).
    pub(crate) challenge_id: Option<ChallengeId>,
    /// Only jobs leased now by this grader.
    pub(crate) grader_id: Option<GraderId>,
    /// Only jobs queued at or after this time (RFC 3339).
    pub(crate) queued_from: Option<DateTime<Utc>>,
    /// Only jobs queued before this time (RFC 3339).
    pub(crate) queued_before: Option<DateTime<Utc>>,
    /// Entries per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub(crate) limit: Option<i64>,
    /// The `next_cursor` of the previous page; absent or empty for the first.
    pub(crate) cursor: Option<String>,
}

/// Lists jobs, oldest first, optionally of one state, lane, challenge and
/// grader (jobs it holds now), queued within a time range.
#[utoipa::path(get, path = "/admin/jobs", tag = "admin", security(("session" = [])), params(JobListParams),
    responses((status = 200, body = PageEnvelope<JobView>), Forbidden))]
pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    user: CurrentUser,
    AppQuery(params): AppQuery<JobListParams>,
) -> ApiResult<Paged<JobView>> {
    require_admin(&user)?;
    // As documented, the names are exact (`QUEUED`, `fast`): serde refuses
    // others with 400.
    let job_state = params.state;
    let lane = params.lane;
    let request = PageRequest::new("jobs", params.limit, params.cursor.as_deref())?;
    let store_page = request.store_page();
    let jobs = state
        .store
        .list_jobs_matching(JobQuery {
            state: job_state,
            lane,
            challenge_id: params.challenge_id,
            grader_id: params.grader_id,
            queued_from: params.queued_from,
            queued_before: params.queued_before,
            limit: store_page.limit,
            after: store_page.after,
        })
        .await?;
    let (jobs, next_cursor) = request.finish(jobs, |job| job.seq);
    let views: Vec<JobView> = jobs.into_iter().map(Into::into).collect();
    Ok(page(views, next_cursor))
}

/// One job.
#[utoipa::path(get, path = "/admin/jobs/{id}", tag = "admin", security(("session" = [])),
    params(("id" = Uuid, Path, description = "The job")),
    responses((status = 200, body = Envelope<JobView>), Forbidden))]
pub(crate) async fn get_job(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<JobId>,
) -> ApiResult<Reply<JobView>> {
    require_admin(&user)?;
    let job = state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    let audits = audit::job_audits(state.store.as_ref(), &job).await?;
    let mut view = JobView::from(job);
    view.audit = Some(
        audits
            .into_iter()
            .map(|(test_case_id, audit)| CaseAuditEntry {
                test_case_id,
                audit,
            })
            .collect(),
    );
    Ok(ok(view))
}

/// Cancels a job that has not finished.
#[utoipa::path(post, path = "/admin/jobs/{id}/cancel", tag = "admin", security(("session" = [])),
    params(("id" = Uuid, Path, description = "The job")),
    responses((status = 200, body = Envelope<JobView>), Forbidden, Conflict))]
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<JobId>,
) -> ApiResult<Reply<JobView>> {
    require_admin(&user)?;
    let reason = format!("cancelled by admin {}", user.0.email);
    let job = state.jobs.cancel_job(id, &reason).await?;
    tracing::info!(job_id = %id, admin = %user.0.id, "job cancelled");
    Ok(ok(JobView::from(job)))
}

/// Puts a FAILED or CANCELLED job back in the queue, if its challenge is
/// still at the version it was made for.
#[utoipa::path(post, path = "/admin/jobs/{id}/retry", tag = "admin", security(("session" = [])),
    params(("id" = Uuid, Path, description = "The job")),
    responses((status = 200, body = Envelope<JobView>), Forbidden, Conflict))]
pub(crate) async fn retry_job(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<JobId>,
) -> ApiResult<Reply<JobView>> {
    require_admin(&user)?;
    let job = state.jobs.retry_job(id).await?;
    tracing::info!(job_id = %id, admin = %user.0.id, "job requeued by admin");
    Ok(ok(JobView::from(job)))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct QueueView {
    pub(crate) lane: Lane,
    pub(crate) queued: u64,
    pub(crate) leased: u64,
    pub(crate) oldest_queued_at: Option<DateTime<Utc>>,
    pub(crate) oldest_age_ms: i64,
}

/// Depth and age of each lane's queue.
#[utoipa::path(get, path = "/admin/queues", tag = "admin", security(("session" = [])),
    responses((status = 200, body = Envelope<Vec<QueueView>>), Forbidden))]
pub(crate) async fn get_queues(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<Reply<Vec<QueueView>>> {
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
