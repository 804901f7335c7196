//! The grader protocol (`/api/v1/grader`): registration with a cluster token,
//! heartbeats, long-poll leases, fenced progress/complete/fail, bundles and
//! deregistration.

use std::time::Duration;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sqlarena_common::affinity::parse_bundles_parameter;
use sqlarena_common::{
    BundleCase, ChallengeBundle, ChallengeId, CompleteRequest, Envelope, FailRequest, GraderId,
    GraderState, HeartbeatRequest, HeartbeatResponse, JobId, JobPayload, JobState, LeaseBatch,
    LeaseId, LeasedJob, ProgressRequest, RegisterGraderRequest, RegisterGraderResponse,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{self, GraderAuth};
use crate::error::{created, ok, ApiError, ApiResult, AppJson, AppPath, AppQuery, Reply};
use crate::http::openapi::{Conflict, Forbidden};
use crate::jobs;
use crate::state::AppState;
use crate::store::{Completion, Grader, Job, Retry};

/// Longest a lease request may wait.
const MAX_WAIT_MS: u64 = 30_000;

/// Routes of the grader protocol but the long-poll lease (see
/// [`long_poll_router`]).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_grader))
        .routes(routes!(heartbeat_grader))
        .routes(routes!(deregister_grader))
        .routes(routes!(progress_job))
        .routes(routes!(complete_job))
        .routes(routes!(fail_job))
        .routes(routes!(get_bundle))
}

/// The long-poll lease, which waits up to 30 s by design, and the presence
/// stream, open as long as the grader runs: both kept out of the request
/// timeout.
pub fn long_poll_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(lease_job))
        .routes(routes!(open_presence))
}

/// The reply to a deregistration.
#[derive(Serialize, ToSchema)]
struct Deregistered {
    deregistered: bool,
}

/// The reply to a progress report.
#[derive(Serialize, ToSchema)]
struct ProgressRecorded {
    job_id: JobId,
    /// Cases recorded so far.
    cases_recorded: usize,
}

/// The reply to a completion: `recorded` is false when the same outcome
/// had been recorded already (a retried request).
#[derive(Serialize, ToSchema)]
struct CompletionRecorded {
    job_id: JobId,
    recorded: bool,
}

/// The reply to a failure: `QUEUED` again, or `FAILED` for good.
#[derive(Serialize, ToSchema)]
struct FailureRecorded {
    job_id: JobId,
    state: JobState,
}

/// The cluster token of a registration, checked against the store: its id.
struct ClusterAuth(Uuid);

impl axum::extract::FromRequestParts<AppState> for ClusterAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = auth::bearer_token(parts).ok_or_else(|| {
            ApiError::Unauthorized("send `Authorization: Bearer CLUSTER_TOKEN` to register".into())
        })?;
        let hash = auth::token_hash(token);
        match state.store.get_cluster_token_by_hash(&hash).await? {
            Some(stored) if !stored.revoked && auth::hashes_match(&stored.token_hash, &hash) => {
                Ok(ClusterAuth(stored.id))
            }
            Some(_) => Err(ApiError::Unauthorized(
                "this cluster token was revoked: ask an admin for a new one".into(),
            )),
            None => Err(ApiError::Unauthorized("unknown cluster token".into())),
        }
    }
}

/// Registers a grader with a cluster token; the reply's grader token is
/// shown once.
#[utoipa::path(post, path = "/register", tag = "grader", security(("cluster" = [])),
    request_body = RegisterGraderRequest,
    responses((status = 201, body = Envelope<RegisterGraderResponse>)))]
async fn register_grader(
    State(state): State<AppState>,
    ClusterAuth(cluster_token_id): ClusterAuth,
    AppJson(request): AppJson<RegisterGraderRequest>,
) -> ApiResult<Reply<RegisterGraderResponse>> {
    if request.lanes.is_empty() {
        return Err(ApiError::Unprocessable(
            "lanes: name at least one of init, fast, slow".into(),
        ));
    }
    if !(1..=256).contains(&request.slots) {
        return Err(ApiError::Unprocessable(
            "slots: must be between 1 and 256".into(),
        ));
    }
    for (field, value) in [
        ("name", &request.name),
        ("hostname", &request.hostname),
        ("version", &request.version),
    ] {
        if value.chars().count() > 200 {
            return Err(ApiError::Unprocessable(format!(
                "{field}: at most 200 characters"
            )));
        }
    }
    let mut lanes = request.lanes.clone();
    lanes.sort();
    lanes.dedup();
    let token = auth::new_token("sqg_");
    let now = Utc::now();
    let grader = Grader {
        id: GraderId::new_v7(),
        name: request.name,
        hostname: request.hostname,
        version: request.version,
        lanes,
        slots: request.slots,
        state: GraderState::Alive,
        token_hash: auth::token_hash(&token),
        last_heartbeat: now,
        registered_at: now,
        jobs_done: 0,
        cluster_token_id: Some(cluster_token_id),
    };
    state.store.create_grader(grader.clone()).await?;
    tracing::info!(grader_id = %grader.id, name = %grader.name, lanes = ?grader.lanes, "grader registered");
    Ok(created(RegisterGraderResponse {
        grader_id: grader.id,
        grader_token: token,
        heartbeat_interval_ms: state.config.heartbeat_interval_ms,
        lease_timeout_ms: state.config.grader_timeout().as_millis() as u64,
    }))
}

/// Reports the leases a grader holds; the reply names jobs to stop and
/// whether to drain.
#[utoipa::path(post, path = "/heartbeat", tag = "grader", security(("grader" = [])),
    request_body = HeartbeatRequest,
    responses((status = 200, body = Envelope<HeartbeatResponse>)))]
async fn heartbeat_grader(
    State(state): State<AppState>,
    GraderAuth(grader): GraderAuth,
    AppJson(request): AppJson<HeartbeatRequest>,
) -> ApiResult<Reply<HeartbeatResponse>> {
    cut_off_if_revoked(&state, &grader).await?;
    let now = Utc::now();
    // A quiet heartbeat writes nothing: the grader as authenticated is
    // fresh enough (its state read this request, its last write recent).
    let grader = if jobs::heartbeat_write_due(&grader, now, state.config.heartbeat_interval()) {
        let Some(grader) = state.store.touch_grader(grader.id, now).await? else {
            return Err(ApiError::Unauthorized(
                "this grader was declared dead: register again".into(),
            ));
        };
        grader
    } else {
        grader
    };
    let leases: Vec<(JobId, LeaseId)> = request
        .leases
        .iter()
        .map(|lease| (lease.job_id, lease.lease_id))
        .collect();
    let cancel = if leases.is_empty() {
        Vec::new()
    } else {
        state.store.stale_leases(grader.id, &leases).await?
    };
    Ok(ok(HeartbeatResponse {
        cancel,
        drain: grader.state == GraderState::Draining,
    }))
}

/// Cuts a grader off when the cluster token it registered with was revoked:
/// DEAD (every later call is 401) and its jobs back in the queue at once,
/// without counting a try against them. Checked on heartbeats and on bundle
/// fetches (bundles carry solutions and hidden data), so a grader that stops
/// heartbeating gets no bundle either.
///
/// # Errors
///
/// [`ApiError::Unauthorized`] when the token was revoked.
async fn cut_off_if_revoked(state: &AppState, grader: &Grader) -> ApiResult<()> {
    if !cluster_token_revoked(state, grader).await? {
        return Ok(());
    }
    let reason = format!("grader {}: its cluster token was revoked", grader.name);
    state.jobs.retire_grader(grader, &reason).await?;
    tracing::warn!(grader_id = %grader.id, name = %grader.name, "cluster token revoked: grader cut off");
    Err(ApiError::Unauthorized(
        "the cluster token this grader registered with was revoked: register with a new one".into(),
    ))
}

/// True when the grader registered with a cluster token that is now
/// revoked (or gone).
async fn cluster_token_revoked(state: &AppState, grader: &Grader) -> ApiResult<bool> {
    let Some(token_id) = grader.cluster_token_id else {
        return Ok(false);
    };
    let token = state.store.get_cluster_token(token_id).await?;
    Ok(token.is_none_or(|token| token.revoked))
}

/// Deregisters on clean shutdown: the grader's leases go back to the queue.
#[utoipa::path(post, path = "/deregister", tag = "grader", security(("grader" = [])),
    responses((status = 200, body = Envelope<Deregistered>)))]
async fn deregister_grader(
    State(state): State<AppState>,
    GraderAuth(grader): GraderAuth,
) -> ApiResult<Reply<Deregistered>> {
    let reason = format!("grader {} deregistered", grader.name);
    state.jobs.retire_grader(&grader, &reason).await?;
    tracing::info!(grader_id = %grader.id, name = %grader.name, "grader deregistered, leases released");
    Ok(ok(Deregistered { deregistered: true }))
}

/// The presence stream: a newline every [`jobs::PRESENCE_TICK`] for as long
/// as the grader holds the request open (until the coordinator shuts
/// down). When the connection closes without a deregistration, the grader
/// is declared dead and its leases taken back after
/// [`jobs::PRESENCE_GRACE`] unless it reconnected (see `jobs::presence`).
#[utoipa::path(post, path = "/presence", tag = "grader", security(("grader" = [])),
    responses((status = 200, description = "A newline every 100 ms until the coordinator stops",
        content_type = "text/plain", body = String)))]
async fn open_presence(
    State(state): State<AppState>,
    GraderAuth(grader): GraderAuth,
) -> ApiResult<Response> {
    let guard = state.jobs.open_presence(grader.id).await?;
    let shutdown = state.shutdown.clone();
    let ticks = futures_util::stream::unfold(
        (guard, shutdown, 0_u32),
        |(guard, shutdown, sent)| async move {
            if sent > 0 {
                tokio::select! {
                    () = tokio::time::sleep(jobs::PRESENCE_TICK) => {}
                    () = shutdown.cancelled() => return None,
                }
            }
            if sent == jobs::PRESENCE_CONFIRM_TICK {
                guard.confirm().await;
            }
            let tick: Result<axum::body::Bytes, std::convert::Infallible> =
                Ok(axum::body::Bytes::from_static(b"\n"));
            Some((tick, (guard, shutdown, sent.saturating_add(1))))
        },
    );
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/plain")],
        axum::body::Body::from_stream(ticks),
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LeaseParams {
    /// How long to wait for a job, in milliseconds; more than 30000 waits
    /// 30000.
    #[serde(default)]
    wait_ms: u64,
    /// Asks for up to this many jobs (the grader's free slots) and an
    /// answer of the batch shape, `{"jobs": [...]}`. Without it one job is
    /// answered alone (the shape of graders before batches).
    #[param(minimum = 1)]
    max_jobs: Option<u32>,
    /// The challenge bundles the grader holds (built or being built), as
    /// version hashes joined by commas; empty when it holds none. Leases
    /// prefer jobs of these (challenge affinity); without it the
    /// coordinator goes by the bundles of the jobs it leased the grader.
    #[param(pattern = "^([0-9a-f]{32}(,[0-9a-f]{32}){0,255})?$", max_length = 8447)]
    bundles: Option<String>,
}

/// A lease's answer: one job alone (no `max_jobs`), or a batch.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum LeaseReply {
    One(LeasedJob),
    Batch(LeaseBatch),
}

/// Long-polls for jobs on the grader's lanes: 200 with a lease (or, with
/// `max_jobs`, a batch of up to that many), or 204 when none came within
/// `wait_ms` (or the grader is draining).
#[utoipa::path(post, path = "/jobs/lease", tag = "grader", security(("grader" = [])), params(LeaseParams),
    responses((status = 200, body = Envelope<LeaseReply>),
        (status = 204, description = "No job within the wait"),
        (status = 414, description = "A query string over 64 KiB (e.g. `bundles` far past its limit), refused by the HTTP layer before the handler")))]
async fn lease_job(
    State(state): State<AppState>,
    GraderAuth(grader): GraderAuth,
    AppQuery(params): AppQuery<LeaseParams>,
) -> ApiResult<Response> {
    let wait = Duration::from_millis(params.wait_ms.min(MAX_WAIT_MS));
    let reported = params
        .bundles
        .as_deref()
        .map(parse_bundles_parameter)
        .transpose()
        .map_err(ApiError::Unprocessable)?;
    if let Some(max_jobs) = params.max_jobs {
        return lease_jobs(&state, &grader, max_jobs, wait, reported).await;
    }
    match state.jobs.lease_next(&grader, wait, reported).await? {
        Some(job) => Ok(ok(LeaseReply::One(leased_job(job)?)).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// The batch form of the lease: up to `max_jobs` jobs, at most the grader's
/// slots, in one answer (204 when none came).
async fn lease_jobs(
    state: &AppState,
    grader: &Grader,
    max_jobs: u32,
    wait: Duration,
    reported: Option<Vec<String>>,
) -> ApiResult<Response> {
    if max_jobs == 0 {
        return Err(ApiError::Unprocessable(
            "max_jobs: ask for at least one job".into(),
        ));
    }
    let jobs = state
        .jobs
        .lease_up_to(grader, max_jobs.min(grader.slots), wait, reported)
        .await?;
    if jobs.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let jobs = jobs
        .into_iter()
        .map(leased_job)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(ok(LeaseReply::Batch(LeaseBatch { jobs })).into_response())
}

fn leased_job(job: Job) -> ApiResult<LeasedJob> {
    let lease = job
        .lease
        .ok_or_else(|| ApiError::Internal(format!("claimed job {} has no lease", job.id)))?;
    Ok(LeasedJob {
        job_id: job.id,
        lease_id: lease.lease_id,
        lane: job.lane,
        tries: job.tries,
        deadline: lease.expires_at,
        payload: job.payload,
    })
}

/// Records one test case's result under a lease (409 when the lease is
/// stale or another grader's).
#[utoipa::path(post, path = "/jobs/{id}/progress", tag = "grader", security(("grader" = [])),
    params(("id" = Uuid, Path, description = "The job")), request_body = ProgressRequest,
    responses((status = 200, body = Envelope<ProgressRecorded>), Conflict))]
async fn progress_job(
    State(state): State<AppState>,
    GraderAuth(grader): GraderAuth,
    AppPath(job_id): AppPath<JobId>,
    AppJson(request): AppJson<ProgressRequest>,
) -> ApiResult<Reply<ProgressRecorded>> {
    let job = state
        .jobs
        .record_progress(&grader, job_id, request.lease_id, request.case)
        .await?;
    Ok(ok(ProgressRecorded {
        job_id: job.id,
        cases_recorded: job.progress.len(),
    }))
}

/// Records a job's outcome under a lease (409 when the lease is stale or
/// another grader's; 422 for an outcome of the other kind of job).
#[utoipa::path(post, path = "/jobs/{id}/complete", tag = "grader", security(("grader" = [])),
    params(("id" = Uuid, Path, description = "The job")), request_body = CompleteRequest,
    responses((status = 200, body = Envelope<CompletionRecorded>), Conflict))]
async fn complete_job(
    State(state): State<AppState>,
    GraderAuth(grader): GraderAuth,
    AppPath(job_id): AppPath<JobId>,
    AppJson(request): AppJson<CompleteRequest>,
) -> ApiResult<Reply<CompletionRecorded>> {
    let completion = state
        .jobs
        .complete_job(&grader, job_id, request.lease_id, request.outcome)
        .await?;
    let (job, recorded) = match completion {
        Completion::Recorded(job) => (job, true),
        Completion::AlreadyRecorded(job) => (job, false),
    };
    Ok(ok(CompletionRecorded {
        job_id: job.id,
        recorded,
    }))
}

/// Reports that a job failed under a lease; it is requeued when the error
/// is retryable and tries remain (409 when the lease is stale).
#[utoipa::path(post, path = "/jobs/{id}/fail", tag = "grader", security(("grader" = [])),
    params(("id" = Uuid, Path, description = "The job")), request_body = FailRequest,
    responses((status = 200, body = Envelope<FailureRecorded>), Conflict))]
async fn fail_job(
    State(state): State<AppState>,
    GraderAuth(grader): GraderAuth,
    AppPath(job_id): AppPath<JobId>,
    AppJson(request): AppJson<FailRequest>,
) -> ApiResult<Reply<FailureRecorded>> {
    let error = truncate(&request.error, 4000);
    let job = state
        .jobs
        .fail_job(
            &grader,
            job_id,
            request.lease_id,
            error,
            if request.retryable {
                Retry::IfTriesLeft
            } else {
                Retry::Never
            },
        )
        .await?;
    Ok(ok(FailureRecorded {
        job_id: job.id,
        state: job.state,
    }))
}

/// A challenge's bundle, only for a grader that holds a lease on a job of
/// that challenge (the coordinator trusts a grader only for its leases).
#[utoipa::path(get, path = "/challenges/{id}/bundle", tag = "grader", security(("grader" = [])),
    params(("id" = i64, Path, description = "The challenge")),
    responses((status = 200, body = Envelope<ChallengeBundle>), Forbidden))]
async fn get_bundle(
    State(state): State<AppState>,
    GraderAuth(grader): GraderAuth,
    AppPath(challenge_id): AppPath<ChallengeId>,
) -> ApiResult<Reply<ChallengeBundle>> {
    cut_off_if_revoked(&state, &grader).await?;
    let leases = state.store.list_grader_leases(grader.id).await?;
    let holds_lease = leases.iter().any(|job| match &job.payload {
        JobPayload::Init(init) => init.challenge_id == challenge_id,
        JobPayload::Attempt(attempt) => attempt.challenge_id == challenge_id,
    });
    if !holds_lease {
        return Err(ApiError::Forbidden(format!(
            "this grader holds no lease on a job of challenge {challenge_id}"
        )));
    }
    let challenge = state
        .store
        .get_challenge(challenge_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no challenge {challenge_id}")))?;
    Ok(ok(ChallengeBundle {
        challenge_id: challenge.id,
        version: challenge.version,
        version_hash: jobs::version_hash(&challenge),
        init: challenge.init.clone(),
        solution: challenge.solution.clone(),
        times_to_run: challenge.times_to_run,
        test_cases: challenge
            .test_cases
            .iter()
            .map(|case| BundleCase {
                id: case.id,
                data: case.data.clone(),
                expected: case.expected.clone(),
            })
            .collect(),
    }))
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}
