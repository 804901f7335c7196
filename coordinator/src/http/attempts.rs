//! Attempts: a signed-in user submits a query for a READY, unexpired
//! challenge (one grading job on the challenge's lane), follows its per-case
//! results as they arrive, and may cancel it.

use axum::extract::State;
use serde::Deserialize;
use sqlarena_common::{AttemptId, ChallengeId, Envelope, UserId};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{created, ok, ApiError, ApiResult, AppJson, AppPath, Reply};
use crate::http::openapi::{Conflict, Forbidden, NotFound, RateLimited};
use crate::http::views::AttemptView;
use crate::state::AppState;
use crate::store::{Attempt, AttemptErrorKind, Challenge};

/// Longest accepted query, in bytes.
const MAX_QUERY: usize = 64 * 1024;

/// Routes of attempts.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_attempt))
        .routes(routes!(get_attempt))
        .routes(routes!(cancel_attempt))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateAttemptRequest {
    challenge_id: ChallengeId,
    /// One read-only statement; not blank, no NUL characters.
    #[schema(
        max_length = 65536,
        pattern = r"^[^\x00]*[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00][^\x00]*$"
    )]
    query: String,
    /// The seed sends the submitter's id; it must be the caller's own (422
    /// otherwise: a rule that depends on the caller), unless the caller is an
    /// admin.
    #[serde(default)]
    user_id: Option<UserId>,
}

/// Submits a query for a READY, unexpired challenge (409 while it is not
/// READY, 403 once it expired; 429 over the cap of unfinished attempts).
#[utoipa::path(post, path = "/attempts", tag = "attempts", security(("session" = [])),
    request_body = CreateAttemptRequest,
    responses((status = 201, body = Envelope<AttemptView>), Forbidden, NotFound, Conflict,
        RateLimited))]
async fn create_attempt(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(request): AppJson<CreateAttemptRequest>,
) -> ApiResult<Reply<AttemptView>> {
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
    if request.query.chars().count() > MAX_QUERY {
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
    tracing::info!(attempt_id = %attempt.id, challenge_id = %challenge.id, user_id = %user.0.id, job_id = %job.id, lane = %job.lane, "attempt queued");
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
    id: AttemptId,
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

/// An attempt with its per-case results so far: for its owner, the
/// challenge's professor or an admin.
#[utoipa::path(get, path = "/attempts/{id}", tag = "attempts", security(("session" = [])),
    params(("id" = i64, Path, description = "The attempt")),
    responses((status = 200, body = Envelope<AttemptView>), Forbidden))]
async fn get_attempt(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<AttemptId>,
) -> ApiResult<Reply<AttemptView>> {
    let (attempt, challenge) = visible_attempt(&state, &user, id).await?;
    let attempt = state.jobs.live_attempt(attempt).await?;
    Ok(ok(AttemptView::new(&attempt, challenge.as_ref(), &user.0)))
}

/// Cancels an unfinished attempt: its owner, the challenge's professor or an
/// admin (409 once it is final).
#[utoipa::path(post, path = "/attempts/{id}/cancel", tag = "attempts", security(("session" = [])),
    params(("id" = i64, Path, description = "The attempt")),
    responses((status = 200, body = Envelope<AttemptView>), Forbidden, Conflict))]
async fn cancel_attempt(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<AttemptId>,
) -> ApiResult<Reply<AttemptView>> {
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
        attempt_id = %attempt.id,
        user_id = %user.0.id,
        "attempt cancelled"
    );
    Ok(ok(AttemptView::new(&attempt, challenge.as_ref(), &user.0)))
}
