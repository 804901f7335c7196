//! Operations: one view of every long job, whatever it is. An operation id
//! names the job's kind and its own id, so there is one id space with no
//! table of its own: `run-ID` (a grading run), `export-ID` (an export),
//! `init-CHALLENGE_ID` (a challenge's init, the current version's). Each
//! shows kind, state, progress {done, total}, ETA and where its result is,
//! and runs and exports can be paused, resumed and cancelled here (a pause
//! takes effect at the next item or page boundary, holds no lease and
//! survives a restart; a run's cancel reaches running graders through
//! their heartbeat replies). An init is short and is not controlled.
//!
//! The long-running-task seed's `GET|PATCH /job-status/{job_id}` (with
//! `{"action": "pause" | "resume" | "terminate"}`) is an alias.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlarena_common::exports::{ExportState, OperationKind};
use sqlarena_common::runs::RunState;
use sqlarena_common::{ChallengeId, ChallengeState, Envelope, ExportId, Role, RunId};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{ok, ApiError, ApiResult, AppJson, AppPath, Reply};
use crate::http::exports::download_url;
use crate::http::openapi::{Conflict, Forbidden};
use crate::state::AppState;
use crate::store::exports::Export;
use crate::store::runs::Run;
use crate::store::Challenge;

/// Routes of operations and the seed's job-status alias.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_operation))
        .routes(routes!(pause_operation))
        .routes(routes!(resume_operation))
        .routes(routes!(cancel_operation))
        .routes(routes!(get_job_status, patch_job_status))
}

/// Which long job an operation id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OperationId {
    Run(RunId),
    Export(ExportId),
    Init(ChallengeId),
}

impl OperationId {
    fn parse(text: &str) -> ApiResult<OperationId> {
        let parsed = text.split_once('-').and_then(|(kind, id)| {
            let id: i64 = id.parse().ok()?;
            match OperationKind::parse(kind)? {
                OperationKind::Run => Some(OperationId::Run(RunId(id))),
                OperationKind::Export => Some(OperationId::Export(ExportId(id))),
                OperationKind::Init => Some(OperationId::Init(ChallengeId(id))),
            }
        });
        parsed.ok_or_else(|| {
            ApiError::NotFound(format!(
                "no operation {text:?}: operation ids are run-ID, export-ID or init-CHALLENGE_ID"
            ))
        })
    }
}

/// Where a long job stands, whatever its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum OperationState {
    /// Created, not started (a Broadway run waiting for its start).
    Queued,
    Running,
    Paused,
    Completed,
    Failed,
    Cancelled,
    /// Finished, and its result deleted at its expiry (exports).
    Expired,
}

/// Work done of the work there is.
#[derive(Debug, Serialize, ToSchema)]
struct Progress {
    done: u64,
    total: u64,
}

/// A long job.
#[derive(Debug, Serialize, ToSchema)]
struct OperationView {
    /// `run-ID`, `export-ID` or `init-CHALLENGE_ID`.
    id: String,
    kind: OperationKind,
    state: OperationState,
    /// The job's own state (`COMPLETED_WITH_ERRORS`, `POSTPROCESSING`,
    /// `READY`, ...).
    detail: String,
    /// Items ended (runs), rows written (exports), test-case sets built
    /// (inits: 0 or 1).
    progress: Progress,
    /// Estimated seconds until it ends, when it can be told.
    eta_seconds: Option<f64>,
    /// Where its result is (the gradebook, the file, the challenge), or
    /// the job itself while there is none.
    result_url: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

fn run_operation(run: &Run) -> OperationView {
    let state = match run.state {
        RunState::Queued => OperationState::Queued,
        RunState::Running | RunState::Postprocessing => OperationState::Running,
        RunState::Paused => OperationState::Paused,
        RunState::Completed | RunState::CompletedWithErrors => OperationState::Completed,
        RunState::Failed => OperationState::Failed,
        RunState::Cancelled => OperationState::Cancelled,
    };
    OperationView {
        id: format!("run-{}", run.id),
        kind: OperationKind::Run,
        state,
        detail: run.state.to_string(),
        progress: Progress {
            done: run.counts.ended(),
            total: run.counts.total,
        },
        eta_seconds: crate::runs::eta_seconds(run),
        result_url: Some(match run.gradebook {
            Some(_) => format!("/api/v1/runs/{}/gradebook", run.id),
            None => format!("/api/v1/runs/{}", run.id),
        }),
        created_at: run.created_at,
        finished_at: run.finished_at,
    }
}

fn export_operation(export: &Export) -> OperationView {
    let state = match export.state {
        ExportState::Running => OperationState::Running,
        ExportState::Paused => OperationState::Paused,
        ExportState::Completed => OperationState::Completed,
        ExportState::Failed => OperationState::Failed,
        ExportState::Cancelled => OperationState::Cancelled,
        ExportState::Expired => OperationState::Expired,
    };
    OperationView {
        id: format!("export-{}", export.id),
        kind: OperationKind::Export,
        state,
        detail: export.state.to_string(),
        progress: Progress {
            done: export.rows,
            total: export.total,
        },
        eta_seconds: crate::exports::eta_seconds(export),
        result_url: Some(match export.state {
            ExportState::Completed => download_url(export.id),
            _ => format!("/api/v1/exports/{}", export.id),
        }),
        created_at: export.created_at,
        finished_at: export.finished_at,
    }
}

fn init_operation(challenge: &Challenge) -> OperationView {
    let (state, done) = match challenge.state {
        ChallengeState::Pending => (OperationState::Running, 0),
        ChallengeState::Ready => (OperationState::Completed, 1),
        ChallengeState::Failed => (OperationState::Failed, 1),
    };
    OperationView {
        id: format!("init-{}", challenge.id),
        kind: OperationKind::Init,
        state,
        detail: challenge.state.to_string(),
        progress: Progress { done, total: 1 },
        eta_seconds: None,
        result_url: Some(format!("/api/v1/challenges/{}", challenge.id)),
        created_at: challenge.created_at,
        finished_at: challenge.init_at,
    }
}

/// Loads the operation `id` names, if `user` may see it: runs and exports
/// as their own endpoints allow, inits for the challenge's professor and
/// admins. Students see none.
async fn load(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
) -> ApiResult<(OperationId, OperationView)> {
    user.require(&[Role::Professor, Role::Admin])?;
    let operation = OperationId::parse(id)?;
    let view = match operation {
        OperationId::Run(run_id) => run_operation(&state.runs.visible_run(&user.0, run_id).await?),
        OperationId::Export(export_id) => {
            export_operation(&state.exports.visible(&user.0, export_id).await?)
        }
        OperationId::Init(challenge_id) => {
            let challenge = state
                .store
                .get_challenge(challenge_id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no challenge {challenge_id}")))?;
            if user.0.role != Role::Admin && challenge.created_user_id != user.0.id {
                return Err(ApiError::Forbidden(
                    "only the challenge's professor or an admin may follow its init".into(),
                ));
            }
            init_operation(&challenge)
        }
    };
    Ok((operation, view))
}

/// What a control asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Action {
    Pause,
    Resume,
    /// Cancel (the seed's word).
    #[serde(alias = "cancel")]
    Terminate,
}

async fn control(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
    action: Action,
) -> ApiResult<Reply<OperationView>> {
    let (operation, _) = load(state, user, id).await?;
    let view = match operation {
        OperationId::Run(run_id) => {
            let run = state.runs.visible_run(&user.0, run_id).await?;
            let run = match action {
                Action::Pause => state.runs.pause(&run).await?,
                Action::Resume => state.runs.resume(&run).await?,
                Action::Terminate => state.runs.cancel(&run).await?,
            };
            run_operation(&run)
        }
        OperationId::Export(export_id) => {
            let export = state.exports.visible(&user.0, export_id).await?;
            let export = match action {
                Action::Pause => state.exports.pause(&export).await?,
                Action::Resume => state.exports.resume(&export).await?,
                Action::Terminate => state.exports.cancel(&export).await?,
            };
            export_operation(&export)
        }
        OperationId::Init(_) => {
            return Err(ApiError::Conflict(format!(
                "{id} is a challenge's init: it cannot be paused, resumed or cancelled \
                 (update the challenge to build it again)"
            )))
        }
    };
    tracing::info!(operation = %id, user_id = %user.0.id, action = ?action, "operation controlled");
    Ok(ok(view))
}

/// A long job (run, export or challenge init): kind, state, progress,
/// ETA, result link.
#[utoipa::path(get, path = "/operations/{id}", tag = "long-jobs", security(("session" = [])),
    params(("id" = String, Path, description = "`run-ID`, `export-ID` or `init-CHALLENGE_ID`")),
    responses((status = 200, body = Envelope<OperationView>), Forbidden))]
async fn get_operation(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<Reply<OperationView>> {
    Ok(ok(load(&state, &user, &id).await?.1))
}

/// Pauses a running run or export at its next item or page boundary (409
/// otherwise).
#[utoipa::path(post, path = "/operations/{id}/pause", tag = "long-jobs", security(("session" = [])),
    params(("id" = String, Path, description = "`run-ID` or `export-ID`")),
    responses((status = 200, body = Envelope<OperationView>), Forbidden, Conflict))]
async fn pause_operation(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<Reply<OperationView>> {
    control(&state, &user, &id, Action::Pause).await
}

/// Resumes a paused run or export (409 otherwise).
#[utoipa::path(post, path = "/operations/{id}/resume", tag = "long-jobs", security(("session" = [])),
    params(("id" = String, Path, description = "`run-ID` or `export-ID`")),
    responses((status = 200, body = Envelope<OperationView>), Forbidden, Conflict))]
async fn resume_operation(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<Reply<OperationView>> {
    control(&state, &user, &id, Action::Resume).await
}

/// Cancels a run (running items are stopped through their graders'
/// heartbeats; nothing more is graded) or an export (its file is deleted);
/// 409 once it has ended.
#[utoipa::path(post, path = "/operations/{id}/cancel", tag = "long-jobs", security(("session" = [])),
    params(("id" = String, Path, description = "`run-ID` or `export-ID`")),
    responses((status = 200, body = Envelope<OperationView>), Forbidden, Conflict))]
async fn cancel_operation(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<Reply<OperationView>> {
    control(&state, &user, &id, Action::Terminate).await
}

/// The seed's job-status: the operation `job_id` names.
#[utoipa::path(get, path = "/job-status/{job_id}", tag = "long-jobs", security(("session" = [])),
    params(("job_id" = String, Path, description = "An operation id")),
    responses((status = 200, body = Envelope<OperationView>), Forbidden))]
async fn get_job_status(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(job_id): AppPath<String>,
) -> ApiResult<Reply<OperationView>> {
    Ok(ok(load(&state, &user, &job_id).await?.1))
}

/// The seed's control of a job.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct JobStatusRequest {
    /// `pause`, `resume` or `terminate`.
    action: Action,
}

/// The seed's job-status control: `pause`, `resume` or `terminate` the
/// operation `job_id` names (as `POST /operations/{id}/...`).
#[utoipa::path(patch, path = "/job-status/{job_id}", tag = "long-jobs", security(("session" = [])),
    params(("job_id" = String, Path, description = "An operation id")),
    request_body = JobStatusRequest,
    responses((status = 200, body = Envelope<OperationView>), Forbidden, Conflict))]
async fn patch_job_status(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(job_id): AppPath<String>,
    AppJson(request): AppJson<JobStatusRequest>,
) -> ApiResult<Reply<OperationView>> {
    control(&state, &user, &job_id, request.action).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_name_a_kind_and_its_id() {
        assert_eq!(
            OperationId::parse("run-12").unwrap(),
            OperationId::Run(RunId(12))
        );
        assert_eq!(
            OperationId::parse("export-3").unwrap(),
            OperationId::Export(ExportId(3))
        );
        assert_eq!(
            OperationId::parse("init-7").unwrap(),
            OperationId::Init(ChallengeId(7))
        );
        for bad in ["12", "run-", "run-x", "job-1", "RUN-1", ""] {
            assert!(OperationId::parse(bad).is_err(), "{bad}");
        }
    }
}
