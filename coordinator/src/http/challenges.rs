//! Challenges: professors publish them (each queues an init job), everyone
//! signed in lists and reads them, shaped by what they may see, with the
//! leaderboard (`top_attempts`).

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use sqlarena_common::{ChallengeType, Role};

use crate::auth::CurrentUser;
use crate::error::{created, ok, ApiError, ApiResult, AppJson, AppPath};
use crate::http::views::{rank_attempts, ChallengeView, LeaderboardEntry};
use crate::jobs;
use crate::state::AppState;
use crate::store::{Challenge, NewChallenge, NewTestCase};

/// Longest name, in characters.
const MAX_NAME: usize = 200;
/// Longest description, in bytes.
const MAX_DESCRIPTION: usize = 64 * 1024;
/// Longest init SQL, solution or test case data, in bytes.
const MAX_SQL: usize = 256 * 1024;
/// Accepted number of test cases.
const TEST_CASES: std::ops::RangeInclusive<usize> = 1..=50;
/// Accepted `times_to_run`.
const TIMES_TO_RUN: std::ops::RangeInclusive<u32> = 1..=100;

/// Routes of challenges.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/challenges", get(list_challenges).post(create_challenge))
        .route("/challenges/{id}", get(get_challenge))
        .route("/challenges-by-user/{user_id}", get(list_user_challenges))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateChallengeRequest {
    /// The seed sends the creator's id; it must be the caller's own.
    #[serde(default)]
    user_id: Option<i64>,
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(rename = "type")]
    challenge_type: ChallengeType,
    init: String,
    solution: String,
    times_to_run: u32,
    expires_at: String,
    test_cases: Vec<TestCaseRequest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCaseRequest {
    data: String,
    /// Hidden unless said otherwise.
    #[serde(default)]
    is_visible: bool,
}

/// Parses an expiry given as RFC 3339 or as the seed's naive
/// `2022-06-01T12:00` (taken as UTC).
fn parse_expiry(text: &str) -> ApiResult<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(at.and_utc());
        }
    }
    Err(ApiError::Unprocessable(format!(
        "expires_at: {text:?} is not a date and time (use RFC 3339 like 2030-06-01T12:00:00Z, or 2030-06-01T12:00 for UTC)"
    )))
}

fn check_sql(field: &str, text: &str) -> ApiResult<()> {
    if text.trim().is_empty() {
        return Err(ApiError::Unprocessable(format!(
            "{field}: must not be empty"
        )));
    }
    if text.len() > MAX_SQL {
        return Err(ApiError::Unprocessable(format!(
            "{field}: at most {} KiB",
            MAX_SQL / 1024
        )));
    }
    Ok(())
}

/// Validates a challenge for `creator`.
fn validate(request: CreateChallengeRequest, creator: &CurrentUser) -> ApiResult<NewChallenge> {
    if let Some(user_id) = request.user_id {
        if user_id != creator.0.id && !creator.is_admin() {
            return Err(ApiError::Unprocessable(format!(
                "user_id: {user_id} is not you; leave it out, the creator is whoever is signed in"
            )));
        }
    }
    let name = request.name.trim().to_string();
    let name_chars = name.chars().count();
    if name_chars == 0 || name_chars > MAX_NAME {
        return Err(ApiError::Unprocessable(format!(
            "name: must be 1 to {MAX_NAME} characters"
        )));
    }
    let description = request.description.filter(|text| !text.trim().is_empty());
    if description
        .as_ref()
        .is_some_and(|text| text.len() > MAX_DESCRIPTION)
    {
        return Err(ApiError::Unprocessable(format!(
            "description: at most {} KiB",
            MAX_DESCRIPTION / 1024
        )));
    }
    if !TIMES_TO_RUN.contains(&request.times_to_run) {
        return Err(ApiError::Unprocessable(format!(
            "times_to_run: must be between {} and {}",
            TIMES_TO_RUN.start(),
            TIMES_TO_RUN.end()
        )));
    }
    check_sql("init", &request.init)?;
    check_sql("solution", &request.solution)?;
    if !TEST_CASES.contains(&request.test_cases.len()) {
        return Err(ApiError::Unprocessable(format!(
            "test_cases: give {} to {} test cases",
            TEST_CASES.start(),
            TEST_CASES.end()
        )));
    }
    for (index, case) in request.test_cases.iter().enumerate() {
        if case.data.len() > MAX_SQL {
            return Err(ApiError::Unprocessable(format!(
                "test_cases[{index}].data: at most {} KiB",
                MAX_SQL / 1024
            )));
        }
    }
    let expires_at = parse_expiry(&request.expires_at)?;
    if expires_at <= Utc::now() {
        return Err(ApiError::Unprocessable(format!(
            "expires_at: {expires_at} is in the past"
        )));
    }
    Ok(NewChallenge {
        created_user_id: creator.0.id,
        name,
        description,
        challenge_type: request.challenge_type,
        init: request.init,
        solution: request.solution,
        times_to_run: request.times_to_run,
        expires_at,
        test_cases: request
            .test_cases
            .into_iter()
            .map(|case| NewTestCase {
                data: case.data,
                is_visible: case.is_visible,
            })
            .collect(),
    })
}

async fn create_challenge(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(request): AppJson<CreateChallengeRequest>,
) -> ApiResult<Response> {
    user.require(&[Role::Professor, Role::Admin])?;
    let challenge = state
        .store
        .create_challenge(validate(request, &user)?)
        .await?;
    let job = jobs::enqueue_init(&state, &challenge).await?;
    tracing::info!(challenge_id = challenge.id, user_id = user.0.id, job_id = %job.id, "challenge created, init queued");
    Ok(created(ChallengeView::new(&challenge, &user.0)))
}

async fn list_challenges(State(state): State<AppState>, user: CurrentUser) -> ApiResult<Response> {
    let challenges = state.store.list_challenges(None).await?;
    let views: Vec<ChallengeView> = challenges
        .iter()
        .map(|challenge| ChallengeView::new(challenge, &user.0))
        .collect();
    Ok(ok(views))
}

async fn list_user_challenges(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(user_id): AppPath<i64>,
) -> ApiResult<Response> {
    if state.store.get_user(user_id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no user {user_id}")));
    }
    let challenges = state.store.list_challenges(Some(user_id)).await?;
    let views: Vec<ChallengeView> = challenges
        .iter()
        .map(|challenge| ChallengeView::new(challenge, &user.0))
        .collect();
    Ok(ok(views))
}

/// Builds the leaderboard of a challenge.
async fn leaderboard(state: &AppState, challenge: &Challenge) -> ApiResult<Vec<LeaderboardEntry>> {
    let passed = state.store.list_passed_attempts(challenge.id).await?;
    let mut entries = Vec::new();
    for (index, ranked) in rank_attempts(challenge, &passed).into_iter().enumerate() {
        let user_full_name = match state.store.get_user(ranked.user_id).await? {
            Some(user) => user.full_name,
            None => format!("user {}", ranked.user_id),
        };
        entries.push(LeaderboardEntry {
            rank: index + 1,
            attempt_id: ranked.attempt_id,
            user_id: ranked.user_id,
            user_full_name,
            score: ranked.score,
            completion_time_ms: ranked.completion_time_ms,
            time_of_attempt: ranked.time_of_attempt,
        });
    }
    Ok(entries)
}

async fn get_challenge(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
) -> ApiResult<Response> {
    let challenge = state
        .store
        .get_challenge(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no challenge {id}")))?;
    let mut view = ChallengeView::new(&challenge, &user.0);
    view.top_attempts = Some(leaderboard(&state, &challenge).await?);
    Ok(ok(view))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_accepts_rfc3339_and_the_seed_naive_form_as_utc() {
        let naive = parse_expiry("2030-06-01T12:00").unwrap();
        assert_eq!(naive.to_rfc3339(), "2030-06-01T12:00:00+00:00");
        let offset = parse_expiry("2030-06-01T14:00:00+02:00").unwrap();
        assert_eq!(offset, naive);
        assert!(parse_expiry("next tuesday").is_err());
        assert!(parse_expiry("2030-13-01T12:00").is_err());
    }
}
