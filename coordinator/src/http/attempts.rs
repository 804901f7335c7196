//! Attempts: a signed-in user submits a query for a READY, unexpired
//! challenge (one grading job on the challenge's lane), follows its per-case
//! results as they arrive, and may cancel it.

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::auth::CurrentUser;
use crate::error::{created, ok, ApiError, ApiResult, AppJson, AppPath};
use crate::http::views::AttemptView;
use crate::state::AppState;
use crate::store::{Attempt, AttemptErrorKind, Challenge};

/// Longest accepted query, in bytes.
const MAX_QUERY: usize = 64 * 1024;

/// Routes of attempts.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/attempts", post(create_attempt))
        .route("/attempts/{id}", get(get_attempt))
        .route("/attempts/{id}/cancel", post(cancel_attempt))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAttemptRequest {
    challenge_id: i64,
    query: String,
    /// The seed sends the submitter's id; it must be the caller's own.
    #[serde(default)]
    user_id: Option<i64>,
}

async fn create_attempt(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(request): AppJson<CreateAttemptRequest>,
) -> ApiResult<Response> {
    if let Some(user_id) = request.user_id {
        if user_id != user.0.id && !user.is_admin() {
            return Err(ApiError::Unprocessable(format!(
                "user_id: {user_id} is not you; leave it out, the attempt is made by whoever is signed in"
            )));
        }
    }
    if request.query.trim().is_empty() {
        return Err(ApiError::Unprocessable("query: must not be empty".into()));
    }
    if request.query.contains('\0') {
        return Err(ApiError::Unprocessable(
            "query: must not contain NUL characters (PostgreSQL cannot run them)".into(),
        ));
    }
    if request.query.len() > MAX_QUERY {
        return Err(ApiError::Unprocessable(format!(
            "query: at most {} KiB",
            MAX_QUERY / 1024
        )));
    }
    let challenge = state
        .store
        .get_challenge(request.challenge_id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "challenge_id: no challenge {}",
                request.challenge_id
            ))
        })?;
    let (attempt, job) = state
        .jobs
        .submit_attempt(&challenge, user.0.id, request.query)
        .await?;
    tracing::info!(attempt_id = attempt.id, challenge_id = challenge.id, user_id = user.0.id, job_id = %job.id, lane = %job.lane, "attempt queued");
    Ok(created(AttemptView::new(
        &attempt,
        Some(&challenge),
        &user.0,
    )))
}

/// Loads an attempt and its challenge, if `viewer` is its owner, the
/// challenge's professor or an admin.
async fn visible_attempt(
    state: &AppState,
    viewer: &CurrentUser,
    id: i64,
) -> ApiResult<(Attempt, Option<Challenge>)> {
    let attempt = state
        .store
        .get_attempt(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no attempt {id}")))?;
    let challenge = state.jobs.attempt_challenge(&attempt).await?;
    let is_professor = challenge
        .as_ref()
        .is_some_and(|challenge| challenge.created_user_id == viewer.0.id);
    if attempt.user_id != viewer.0.id && !is_professor && !viewer.is_admin() {
        return Err(ApiError::Forbidden(
            "only the attempt's owner, the challenge's professor or an admin may do this".into(),
        ));
    }
    Ok((attempt, challenge))
}

async fn get_attempt(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
) -> ApiResult<Response> {
    let (attempt, challenge) = visible_attempt(&state, &user, id).await?;
    let attempt = state.jobs.live_attempt(attempt).await?;
    Ok(ok(AttemptView::new(&attempt, challenge.as_ref(), &user.0)))
}

async fn cancel_attempt(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
) -> ApiResult<Response> {
    let (attempt, challenge) = visible_attempt(&state, &user, id).await?;
    let reason = if attempt.user_id == user.0.id {
        "cancelled by its owner".to_string()
    } else {
        format!("cancelled by {}", user.0.full_name)
    };
    let attempt = state
        .jobs
        .cancel_attempt(&attempt, &reason, AttemptErrorKind::Cancelled)
        .await?;
    tracing::info!(
        attempt_id = attempt.id,
        user_id = user.0.id,
        "attempt cancelled"
    );
    Ok(ok(AttemptView::new(&attempt, challenge.as_ref(), &user.0)))
}
