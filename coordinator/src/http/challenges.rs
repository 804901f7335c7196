//! Challenges: professors publish them (each queues an init job) and change
//! them (a new version when what grading depends on changes), everyone
//! signed in lists and reads them, shaped by what they may see, with the
//! leaderboard (`top_attempts`).

use axum::extract::State;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use sqlarena_common::{ChallengeId, ChallengeType, Envelope, GraderId, PageEnvelope, Role, UserId};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{created, ok, ApiError, ApiResult, AppJson, AppPath, AppQuery, Reply};
use crate::http::openapi::{Conflict, Forbidden};
use crate::http::pagination::{page, PageParams, PageRequest, Paged};
use crate::http::views::{ChallengeView, LeaderboardEntry};
use crate::state::AppState;
use crate::store::{Challenge, ChallengeUpdate, ChallengeVersion, NewChallenge, NewTestCase};

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
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_challenges, create_challenge))
        .routes(routes!(get_challenge, update_challenge))
        .routes(routes!(list_user_challenges))
}

/// A new challenge. Lengths count characters as sent; SQL must not be blank
/// nor hold NUL characters.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateChallengeRequest {
    /// The seed sends the creator's id; it must be the caller's own (422
    /// otherwise: a rule that depends on the caller), unless the caller is an
    /// admin.
    #[serde(default)]
    pub(crate) user_id: Option<UserId>,
    /// Not blank; whitespace around it is dropped.
    #[schema(
        max_length = 200,
        pattern = r"[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub(crate) name: String,
    /// Blank means none.
    #[serde(default)]
    #[schema(max_length = 65536)]
    pub(crate) description: Option<String>,
    #[serde(rename = "type")]
    pub(crate) challenge_type: ChallengeType,
    /// SQL that builds the schema.
    #[schema(
        max_length = 262144,
        pattern = r"^[^\x00]*[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00][^\x00]*$"
    )]
    pub(crate) init: String,
    /// The reference query.
    #[schema(
        max_length = 262144,
        pattern = r"^[^\x00]*[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00][^\x00]*$"
    )]
    pub(crate) solution: String,
    #[schema(minimum = 1, maximum = 100)]
    pub(crate) times_to_run: u32,
    /// RFC 3339 (`2030-06-01T12:00:00Z`); the seed's naive
    /// `2030-06-01T12:00` (and with seconds) is also accepted, as UTC. Must be
    /// in the future (422 otherwise: a rule no schema can state).
    #[schema(format = DateTime)]
    pub(crate) expires_at: String,
    #[schema(min_items = 1, max_items = 50)]
    pub(crate) test_cases: Vec<TestCaseRequest>,
}

/// A change to a challenge. Every field is optional: absent (or null) leaves
/// it as it is. `test_cases` is the full new list, as on creation; the rules
/// are those of creation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateChallengeRequest {
    #[schema(
        max_length = 200,
        pattern = r"[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub(crate) name: Option<String>,
    /// Blank removes the description.
    #[schema(max_length = 65536)]
    pub(crate) description: Option<String>,
    #[schema(
        max_length = 262144,
        pattern = r"^[^\x00]*[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00][^\x00]*$"
    )]
    pub(crate) init: Option<String>,
    #[schema(
        max_length = 262144,
        pattern = r"^[^\x00]*[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00][^\x00]*$"
    )]
    pub(crate) solution: Option<String>,
    #[schema(minimum = 1, maximum = 100)]
    pub(crate) times_to_run: Option<u32>,
    /// As on creation: RFC 3339, in the future.
    #[schema(format = DateTime)]
    pub(crate) expires_at: Option<String>,
    #[schema(min_items = 1, max_items = 50)]
    pub(crate) test_cases: Option<Vec<TestCaseRequest>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestCaseRequest {
    /// Statements (INSERTs) run after the init SQL; may be empty.
    #[schema(max_length = 262144)]
    pub(crate) data: String,
    /// Hidden unless said otherwise.
    #[serde(default)]
    pub(crate) is_visible: bool,
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

pub(crate) fn check_sql(field: &str, text: &str) -> ApiResult<()> {
    if text.trim().is_empty() {
        return Err(ApiError::Unprocessable(format!(
            "{field}: must not be empty"
        )));
    }
    if text.chars().count() > MAX_SQL {
        return Err(ApiError::Unprocessable(format!(
            "{field}: at most {} KiB",
            MAX_SQL / 1024
        )));
    }
    if text.contains('\0') {
        return Err(ApiError::Unprocessable(format!(
            "{field}: must not contain NUL characters (PostgreSQL cannot run them)"
        )));
    }
    Ok(())
}

/// Returns the trimmed name, if its length is acceptable.
pub(crate) fn check_name(name: &str) -> ApiResult<String> {
    let too_long = name.chars().count() > MAX_NAME;
    let name = name.trim().to_string();
    if name.is_empty() || too_long {
        return Err(ApiError::Unprocessable(format!(
            "name: must be 1 to {MAX_NAME} characters"
        )));
    }
    Ok(name)
}

/// Returns the description (none when blank), if it is not too long.
pub(crate) fn check_description(description: Option<String>) -> ApiResult<Option<String>> {
    if description
        .as_ref()
        .is_some_and(|text| text.chars().count() > MAX_DESCRIPTION)
    {
        return Err(ApiError::Unprocessable(format!(
            "description: at most {} KiB",
            MAX_DESCRIPTION / 1024
        )));
    }
    Ok(description.filter(|text| !text.trim().is_empty()))
}

pub(crate) fn check_times_to_run(times_to_run: u32) -> ApiResult<u32> {
    if !TIMES_TO_RUN.contains(&times_to_run) {
        return Err(ApiError::Unprocessable(format!(
            "times_to_run: must be between {} and {}",
            TIMES_TO_RUN.start(),
            TIMES_TO_RUN.end()
        )));
    }
    Ok(times_to_run)
}

pub(crate) fn check_test_cases(test_cases: Vec<TestCaseRequest>) -> ApiResult<Vec<NewTestCase>> {
    if !TEST_CASES.contains(&test_cases.len()) {
        return Err(ApiError::Unprocessable(format!(
            "test_cases: give {} to {} test cases",
            TEST_CASES.start(),
            TEST_CASES.end()
        )));
    }
    for (index, case) in test_cases.iter().enumerate() {
        if case.data.chars().count() > MAX_SQL {
            return Err(ApiError::Unprocessable(format!(
                "test_cases[{index}].data: at most {} KiB",
                MAX_SQL / 1024
            )));
        }
    }
    Ok(test_cases
        .into_iter()
        .map(|case| NewTestCase {
            data: case.data,
            is_visible: case.is_visible,
        })
        .collect())
}

/// Returns the expiry, if it parses and is in the future.
pub(crate) fn check_expiry(text: &str) -> ApiResult<DateTime<Utc>> {
    let expires_at = parse_expiry(text)?;
    if expires_at <= Utc::now() {
        return Err(ApiError::Unprocessable(format!(
            "expires_at: {expires_at} is in the past"
        )));
    }
    Ok(expires_at)
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
    let name = check_name(&request.name)?;
    let description = check_description(request.description)?;
    let times_to_run = check_times_to_run(request.times_to_run)?;
    check_sql("init", &request.init)?;
    check_sql("solution", &request.solution)?;
    let test_cases = check_test_cases(request.test_cases)?;
    let expires_at = check_expiry(&request.expires_at)?;
    Ok(NewChallenge {
        created_user_id: creator.0.id,
        name,
        description,
        challenge_type: request.challenge_type,
        init: request.init,
        solution: request.solution,
        times_to_run,
        expires_at,
        test_cases,
    })
}

/// Validates a change to `challenge` with the checks of creation. It makes a
/// new version only when the init SQL, solution or test cases it results in
/// differ from the current ones.
fn validate_update(
    request: UpdateChallengeRequest,
    challenge: &Challenge,
) -> ApiResult<ChallengeUpdate> {
    let name = request.name.as_deref().map(check_name).transpose()?;
    let description = request
        .description
        .map(|text| check_description(Some(text)))
        .transpose()?;
    let times_to_run = request.times_to_run.map(check_times_to_run).transpose()?;
    if let Some(init) = &request.init {
        check_sql("init", init)?;
    }
    if let Some(solution) = &request.solution {
        check_sql("solution", solution)?;
    }
    let test_cases = request.test_cases.map(check_test_cases).transpose()?;
    let expires_at = request
        .expires_at
        .as_deref()
        .map(check_expiry)
        .transpose()?;
    let current = ChallengeVersion {
        init: challenge.init.clone(),
        solution: challenge.solution.clone(),
        test_cases: challenge
            .test_cases
            .iter()
            .map(|case| NewTestCase {
                data: case.data.clone(),
                is_visible: case.is_visible,
            })
            .collect(),
    };
    let version = ChallengeVersion {
        init: request.init.unwrap_or_else(|| current.init.clone()),
        solution: request.solution.unwrap_or_else(|| current.solution.clone()),
        test_cases: test_cases.unwrap_or_else(|| current.test_cases.clone()),
    };
    let changed = version != current;
    Ok(ChallengeUpdate {
        name,
        description,
        times_to_run,
        expires_at,
        new_version: changed.then_some(version),
    })
}

/// Publishes a challenge (PROF or ADMIN) and queues its init job.
#[utoipa::path(post, path = "/challenges", tag = "challenges", security(("session" = [])),
    request_body = CreateChallengeRequest,
    responses((status = 201, body = Envelope<ChallengeView>), Forbidden))]
pub(crate) async fn create_challenge(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(request): AppJson<CreateChallengeRequest>,
) -> ApiResult<Reply<ChallengeView>> {
    user.require(&[Role::Professor, Role::Admin])?;
    let (challenge, job) = state
        .jobs
        .create_challenge(validate(request, &user)?)
        .await?;
    tracing::info!(challenge_id = %challenge.id, user_id = %user.0.id, job_id = %job.id, "challenge created, init queued");
    Ok(created(ChallengeView::new(&challenge, &user.0)))
}

/// Lists challenges, newest first, shaped for the caller.
#[utoipa::path(get, path = "/challenges", tag = "challenges", security(("session" = [])), params(PageParams),
    responses((status = 200, body = PageEnvelope<ChallengeView>)))]
pub(crate) async fn list_challenges(
    State(state): State<AppState>,
    user: CurrentUser,
    AppQuery(params): AppQuery<PageParams>,
) -> ApiResult<Paged<ChallengeView>> {
    let request = PageRequest::from_params("challenges", &params)?;
    challenge_page(&state, &user, None, request).await
}

/// Lists the challenges a user created, newest first.
#[utoipa::path(get, path = "/challenges-by-user/{user_id}", tag = "challenges", security(("session" = [])),
    params(("user_id" = i64, Path, description = "The creator"), PageParams),
    responses((status = 200, body = PageEnvelope<ChallengeView>)))]
pub(crate) async fn list_user_challenges(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(user_id): AppPath<UserId>,
    AppQuery(params): AppQuery<PageParams>,
) -> ApiResult<Paged<ChallengeView>> {
    let request = PageRequest::from_params("challenges-by-user", &params)?;
    if state.store.get_user(user_id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no user {user_id}")));
    }
    challenge_page(&state, &user, Some(user_id), request).await
}

/// One page of challenges (newest first), shaped for `viewer`.
async fn challenge_page(
    state: &AppState,
    viewer: &CurrentUser,
    created_by: Option<UserId>,
    request: PageRequest<ChallengeId>,
) -> ApiResult<Paged<ChallengeView>> {
    let challenges = state
        .store
        .list_challenges(created_by, request.store_page())
        .await?;
    let (challenges, next_cursor) = request.finish(challenges, |challenge| challenge.id);
    let views: Vec<ChallengeView> = challenges
        .iter()
        .map(|challenge| ChallengeView::new(challenge, &viewer.0))
        .collect();
    Ok(page(views, next_cursor))
}

/// Reads the leaderboard of a challenge's current version: the best
/// [`LEADERBOARD_SIZE`] rows, kept by the store as attempts finish.
async fn leaderboard(
    state: &AppState,
    challenge: &Challenge,
    grader: Option<GraderId>,
) -> ApiResult<Vec<LeaderboardEntry>> {
    let ranked = state.jobs.leaderboard(challenge, grader).await?;
    Ok(ranked
        .into_iter()
        .map(|ranked| LeaderboardEntry {
            rank: ranked.rank,
            attempt_id: ranked.row.attempt_id,
            user_id: ranked.row.user_id,
            user_full_name: ranked.user_full_name,
            score: Some(ranked.row.score),
            completion_time_ms: Some(ranked.row.completion_time_ms),
            time_of_attempt: ranked.row.time_of_attempt,
        })
        .collect())
}

/// Returns 403 unless `user` may change `challenge`: a professor who
/// created it, or an admin. The console's edit page asks the same.
///
/// # Errors
/// `Forbidden` for everyone else.
pub(crate) fn require_may_change(user: &CurrentUser, challenge: &Challenge) -> ApiResult<()> {
    user.require(&[Role::Professor, Role::Admin])?;
    if challenge.created_user_id != user.0.id && !user.is_admin() {
        return Err(ApiError::Forbidden(
            "only the challenge's creator or an admin may change it".into(),
        ));
    }
    Ok(())
}

pub(crate) async fn find_challenge(state: &AppState, id: ChallengeId) -> ApiResult<Challenge> {
    state
        .store
        .get_challenge(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no challenge {id}")))
}

/// Shapes `challenge` for `viewer` with its leaderboard, as GET shows it.
async fn full_view(
    state: &AppState,
    challenge: &Challenge,
    viewer: &CurrentUser,
    grader: Option<GraderId>,
) -> ApiResult<ChallengeView> {
    let mut view = ChallengeView::new(challenge, &viewer.0);
    let mut board = leaderboard(state, challenge, grader).await?;
    // Score and time add up every case, hidden ones included: with hidden
    // cases, others than the professor and admins see the ranking only
    // (a time is a channel for hidden data).
    let has_hidden = challenge.test_cases.iter().any(|case| !case.is_visible);
    if has_hidden && !crate::http::views::sees_everything(&viewer.0, challenge) {
        for entry in &mut board {
            entry.score = None;
            entry.completion_time_ms = None;
        }
    }
    // Passing rows of assessment submissions whose results are withheld
    // would tell their students they passed.
    let mut kept = Vec::with_capacity(board.len());
    for entry in board {
        let withheld =
            crate::assessments::withheld_attempts(state.store.as_ref(), &viewer.0, entry.user_id)
                .await?;
        if !withheld.contains(&entry.attempt_id) {
            kept.push(entry);
        }
    }
    for (index, entry) in kept.iter_mut().enumerate() {
        entry.rank = index + 1;
    }
    view.top_attempts = Some(kept);
    Ok(view)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ChallengeParams {
    /// Ranks only the attempts this grader graded (each user's best of
    /// them): for the challenge's professor and admins, who see which
    /// grader graded what (403 for others).
    pub(crate) grader_id: Option<GraderId>,
}

/// A challenge with its leaderboard (`top_attempts`), shaped for the
/// caller; with `grader_id`, the leaderboard of that grader's results.
#[utoipa::path(get, path = "/challenges/{id}", tag = "challenges", security(("session" = [])),
    params(("id" = i64, Path, description = "The challenge"), ChallengeParams),
    responses((status = 200, body = Envelope<ChallengeView>), Forbidden))]
pub(crate) async fn get_challenge(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<ChallengeId>,
    AppQuery(params): AppQuery<ChallengeParams>,
) -> ApiResult<Reply<ChallengeView>> {
    let challenge = find_challenge(&state, id).await?;
    let full = crate::http::views::sees_everything(&user.0, &challenge);
    if params.grader_id.is_some() && !full {
        return Err(ApiError::Forbidden(
            "only the challenge's professor and admins may rank one grader's results".into(),
        ));
    }
    let mut view = full_view(&state, &challenge, &user, params.grader_id).await?;
    if full {
        add_init_audits(&state, &challenge, &mut view).await?;
    }
    Ok(ok(view))
}

/// Adds to a full view of `challenge` where and how its init timed the
/// reference on each test case.
async fn add_init_audits(
    state: &AppState,
    challenge: &Challenge,
    view: &mut ChallengeView,
) -> ApiResult<()> {
    let audits = state
        .store
        .list_init_audits(challenge.id, challenge.version)
        .await?;
    for (test_case_id, audit) in audits {
        if let Some(case) = view
            .test_cases
            .iter_mut()
            .find(|case| case.id == test_case_id)
        {
            case.audit = Some(audit);
        }
    }
    Ok(())
}

/// Changes a challenge: its creator or an admin (others 403; 404 for an
/// unknown id). Answers 200 with the challenge as GET shows it.
///
/// Each body field is optional and checked as on creation. Name,
/// description, times_to_run and expires_at change in place. New init SQL,
/// solution or test cases (differing from the current ones) make a new
/// version: version + 1, PENDING with no init result, the test cases under
/// new ids, and a new init job. Until the new version is READY, attempts get
/// 409 as for any PENDING challenge.
///
/// Attempts keep the version they were made against. Finished ones stay
/// viewable with that version's test cases (the store keeps them) and drop
/// off the leaderboard, which ranks the current version only. Unfinished
/// ones are cancelled, with an error saying the challenge changed: graders
/// fetch only the current version's databases, so the old version can no
/// longer be graded. (An attempt accepted in the instant before the switch
/// may escape the sweep: a grader still holding the old databases grades it,
/// any other fails it for the version mismatch.)
///
/// The switch is conditional on the version read here, so of two updates
/// at once only one makes the next version; the other gets 409.
#[utoipa::path(patch, path = "/challenges/{id}", tag = "challenges", security(("session" = [])),
    params(("id" = i64, Path, description = "The challenge")),
    request_body = UpdateChallengeRequest,
    responses((status = 200, body = Envelope<ChallengeView>), Forbidden, Conflict))]
pub(crate) async fn update_challenge(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<ChallengeId>,
    AppJson(request): AppJson<UpdateChallengeRequest>,
) -> ApiResult<Reply<ChallengeView>> {
    let challenge = find_challenge(&state, id).await?;
    require_may_change(&user, &challenge)?;
    let update = validate_update(request, &challenge)?;
    let (challenge, switch) = state
        .jobs
        .change_challenge(id, challenge.version, update)
        .await?;
    if let Some(switch) = switch {
        tracing::info!(challenge_id = %id, version = challenge.version, user_id = %user.0.id, job_id = %switch.init_job.id, cancelled = switch.cancelled_attempts, stale_inits = switch.cancelled_inits, "challenge changed, new version queued for init");
    } else {
        tracing::info!(
            challenge_id = %id,
            user_id = %user.0.id,
            "challenge updated in place"
        );
    }
    Ok(ok(full_view(&state, &challenge, &user, None).await?))
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
