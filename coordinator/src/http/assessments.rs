//! Timed assessments: professors create and edit them (until the first
//! session starts), set per-student time overrides and add time; students
//! start their session, submit by question and finish; scores per
//! assessment and per user, with audited manual scores. The rules live in
//! [`crate::assessments`]; this module authorizes and shapes the views.

use std::collections::HashMap;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlarena_common::assessments::{
    AssessmentSpec, Feedback, ScorePolicy, Scoreboard, Selection, TimeOverride, Zone,
};
use sqlarena_common::{AttemptId, ChallengeId, Envelope, Role, UserId};
use utoipa::openapi::{RefOr, Response};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::assessments::{
    is_staff, require_staff, results_visible, timing, AssessmentError, AssessmentPatch,
    Assessments, SessionScore, SessionSnapshot,
};
use crate::auth::CurrentUser;
use crate::error::{created, ok, ApiError, ApiResult, AppJson, AppPath, Reply};
use crate::http::openapi::{error_response, Forbidden, NotFound};
use crate::http::views::AttemptView;
use crate::state::AppState;
use crate::store::assessments::{Assessment, NewScoreOverride, ScoreOverride, SessionEvent};
use crate::store::Challenge;

/// Longest query, in characters (as for attempts).
const MAX_QUERY: usize = 64 * 1024;
/// Longest reason of a manual score, in characters.
const MAX_REASON: usize = 1000;

/// Routes of assessments, sessions and scores.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_assessment))
        .routes(routes!(get_assessment, update_assessment))
        .routes(routes!(set_override))
        .routes(routes!(add_assessment_time))
        .routes(routes!(start_session))
        .routes(routes!(assessment_scores))
        .routes(routes!(get_session))
        .routes(routes!(submit))
        .routes(routes!(finish_session))
        .routes(routes!(add_session_time))
        .routes(routes!(reopen_session))
        .routes(routes!(session_log))
        .routes(routes!(user_scores))
        .routes(routes!(override_score))
        .routes(routes!(record_score))
}

pub(crate) fn service(state: &AppState) -> Assessments {
    Assessments::new(
        state.store.clone(),
        state.jobs.clone(),
        state.config.request_timeout(),
    )
}

impl From<AssessmentError> for ApiError {
    fn from(error: AssessmentError) -> Self {
        match error {
            AssessmentError::NotFound(message) => ApiError::NotFound(message),
            AssessmentError::Forbidden(message) => ApiError::Forbidden(message),
            AssessmentError::Invalid(message) => ApiError::Unprocessable(message),
            AssessmentError::Conflict(message) => ApiError::Conflict(message),
            AssessmentError::DeadlinePassed(message) => ApiError::DeadlinePassed(message),
            AssessmentError::SubmissionLimit(message) => ApiError::SubmissionLimit(message),
            AssessmentError::TooSoon {
                message,
                retry_after_secs,
            } => ApiError::TooSoon {
                message,
                retry_after_secs,
            },
            AssessmentError::Started(message) => ApiError::AssessmentStarted(message),
            AssessmentError::Jobs(error) => error.into(),
            AssessmentError::Store(error) => error.into(),
        }
    }
}

/// The refusals of a submission, for the OpenAPI document.
struct SubmitRefusals;

impl utoipa::IntoResponses for SubmitRefusals {
    fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
        std::collections::BTreeMap::from([
            (
                "403".to_string(),
                error_response(
                    "`deadline_passed`: the session was over when the submission arrived; \
                 `forbidden`: not your session, or the challenge expired",
                ),
            ),
            (
                "409".to_string(),
                error_response(
                    "`submission_limit`: the question's `max_submissions` are used; \
                 `conflict`: the challenge is not READY",
                ),
            ),
            (
                "429".to_string(),
                error_response(
                    "`too_soon`: less than `min_interval_s` since the question's last submission \
                 (see `Retry-After`); `rate_limited`: too many attempts being graded",
                ),
            ),
        ])
    }
}

/// 409 `assessment_started`, for the OpenAPI document.
struct StartedRefusal;

impl utoipa::IntoResponses for StartedRefusal {
    fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
        std::collections::BTreeMap::from([(
            "409".to_string(),
            error_response("`assessment_started`: a session has started; the assessment is frozen"),
        )])
    }
}

/// 403 `forbidden` or `deadline_passed`, for the OpenAPI document.
struct StartRefusals;

impl utoipa::IntoResponses for StartRefusals {
    fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
        std::collections::BTreeMap::from([(
            "403".to_string(),
            error_response(
                "`forbidden`: the assessment has not opened yet; \
                 `deadline_passed`: it has closed for you",
            ),
        )])
    }
}

// ---------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------

/// Shows an attempt whose results are withheld
/// ([`crate::assessments::withheld_attempts`]) as merely submitted:
/// PENDING, no case results, no error, not finished.
pub(crate) fn withhold(view: &mut AttemptView) {
    view.status = sqlarena_common::AttemptStatus::Pending;
    view.attempts.clear();
    view.error = None;
    view.error_kind = None;
    view.finished_at = None;
}

/// An assessment: its spec as created (or last edited), and what changed
/// since. `overrides` only for its staff.
#[derive(Serialize, ToSchema)]
pub(crate) struct AssessmentView {
    pub(crate) id: i64,
    pub(crate) created_user_id: UserId,
    pub(crate) spec: AssessmentSpec,
    /// The most a student can score.
    pub(crate) max_score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) overrides: Option<Vec<TimeOverride>>,
    /// Seconds added for everyone.
    pub(crate) extension_s: i64,
    /// True once a session started (then it can no longer be edited).
    pub(crate) started: bool,
    pub(crate) created_at: DateTime<Utc>,
}

fn max_score(spec: &AssessmentSpec) -> f64 {
    spec.zones
        .iter()
        .map(|zone| f64::from(zone.pick) * zone.points)
        .sum()
}

impl AssessmentView {
    fn new(assessment: &Assessment, viewer: &CurrentUser) -> AssessmentView {
        AssessmentView {
            id: assessment.id,
            created_user_id: assessment.created_user_id,
            spec: assessment.spec.clone(),
            max_score: max_score(&assessment.spec),
            overrides: is_staff(assessment, &viewer.0).then(|| assessment.overrides.clone()),
            extension_s: assessment.extension_s,
            started: assessment.started,
            created_at: assessment.created_at,
        }
    }
}

/// A submission. Under `feedback: after_close` its student sees only
/// `SUBMITTED` (no attempt) until the assessment closes.
#[derive(Serialize, ToSchema)]
pub(crate) struct SubmissionView {
    pub(crate) number: u32,
    pub(crate) question: u32,
    pub(crate) received_at: DateTime<Utc>,
    /// `SUBMITTED` (results withheld), an attempt status (`PENDING`,
    /// `RUNNING`, `PASSED`, `FAILED`, `ERROR`, `CANCELLED`), or `ERROR`
    /// with `error` when no attempt could be made.
    #[schema(pattern = "^(SUBMITTED|PENDING|RUNNING|PASSED|FAILED|ERROR|CANCELLED)$")]
    pub(crate) status: String,
    pub(crate) attempt_id: Option<AttemptId>,
    pub(crate) attempt: Option<AttemptView>,
    pub(crate) error: Option<String>,
}

/// A question of a session.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionQuestionView {
    pub(crate) number: u32,
    pub(crate) challenge_id: ChallengeId,
    pub(crate) challenge_name: Option<String>,
    /// What the question asks: its challenge's description.
    pub(crate) challenge_description: Option<String>,
    pub(crate) points: f64,
    /// Submissions left (none: unlimited).
    pub(crate) submissions_left: Option<u32>,
    pub(crate) submissions: Vec<SubmissionView>,
}

/// A student's session of an assessment.
#[derive(Serialize, ToSchema)]
pub(crate) struct AssessmentSessionView {
    pub(crate) id: i64,
    pub(crate) assessment_id: i64,
    pub(crate) user_id: UserId,
    /// `ACTIVE`, then `CLOSED` (finished or past the deadline) while a
    /// submission is being graded, then `FINALIZED`.
    #[schema(pattern = "^(ACTIVE|CLOSED|FINALIZED)$")]
    pub(crate) state: String,
    pub(crate) started_at: DateTime<Utc>,
    /// `min(start + time_limit x time_scale + extra, closes_at)` plus the
    /// time staff added.
    pub(crate) deadline: DateTime<Utc>,
    /// Seconds until the deadline (0 once closed).
    pub(crate) remaining_s: f64,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    /// False while results are withheld (`feedback: after_close`).
    pub(crate) results_visible: bool,
    pub(crate) questions: Vec<SessionQuestionView>,
}

async fn session_view(
    service: &Assessments,
    snapshot: &SessionSnapshot,
    viewer: &CurrentUser,
) -> ApiResult<AssessmentSessionView> {
    let now = Utc::now();
    let staff = is_staff(&snapshot.assessment, &viewer.0);
    let visible = staff || snapshot.results_visible(now);
    let mut challenges: HashMap<ChallengeId, Option<Challenge>> = HashMap::new();
    let mut questions = Vec::new();
    for question in &snapshot.session.questions {
        let challenge = service
            .cached_challenge(&mut challenges, question.challenge_id)
            .await?;
        let submissions: Vec<SubmissionView> = snapshot
            .session
            .submissions
            .iter()
            .filter(|submission| submission.question == question.number)
            .map(|submission| {
                let attempt = submission
                    .attempt_id
                    .and_then(|id| snapshot.attempts.get(&id));
                let status = match (visible, attempt, &submission.error) {
                    (false, _, _) => "SUBMITTED".to_string(),
                    (true, Some(attempt), _) => attempt.status.to_string(),
                    (true, None, Some(_)) => "ERROR".to_string(),
                    (true, None, None) => "PENDING".to_string(),
                };
                SubmissionView {
                    number: submission.number,
                    question: submission.question,
                    received_at: submission.received_at,
                    status,
                    attempt_id: submission.attempt_id.filter(|_| visible),
                    attempt: attempt
                        .filter(|_| visible)
                        .map(|attempt| AttemptView::new(attempt, challenge, &viewer.0)),
                    error: submission.error.clone().filter(|_| visible),
                }
            })
            .collect();
        let used = submissions.len() as u32;
        questions.push(SessionQuestionView {
            number: question.number,
            challenge_id: question.challenge_id,
            challenge_name: challenge.map(|challenge| challenge.name.clone()),
            challenge_description: challenge.and_then(|challenge| challenge.description.clone()),
            points: question.points,
            submissions_left: snapshot
                .assessment
                .spec
                .max_submissions
                .map(|max| max.saturating_sub(used)),
            submissions,
        });
    }
    let closed = timing::is_closed(&snapshot.assessment, &snapshot.session, now);
    Ok(AssessmentSessionView {
        id: snapshot.session.id,
        assessment_id: snapshot.session.assessment_id,
        user_id: snapshot.session.user_id,
        state: snapshot.state.as_str().to_string(),
        started_at: snapshot.session.started_at,
        deadline: snapshot.deadline,
        remaining_s: if closed {
            0.0
        } else {
            (snapshot.deadline - now).num_milliseconds() as f64 / 1000.0
        },
        finished_at: snapshot.session.finished_at,
        results_visible: visible,
        questions,
    })
}

// ---------------------------------------------------------------------------
// Assessments
// ---------------------------------------------------------------------------

/// Creates an assessment (PROF or ADMIN) over the caller's own challenges.
#[utoipa::path(post, path = "/assessments", tag = "assessments", security(("session" = [])),
    request_body = AssessmentSpec,
    responses((status = 201, body = Envelope<AssessmentView>), Forbidden))]
async fn create_assessment(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(spec): AppJson<AssessmentSpec>,
) -> ApiResult<Reply<AssessmentView>> {
    user.require(&[Role::Professor, Role::Admin])?;
    let assessment = service(&state).create(&user.0, spec).await?;
    tracing::info!(
        assessment_id = assessment.id,
        user_id = %user.0.id,
        "assessment created"
    );
    Ok(created(AssessmentView::new(&assessment, &user)))
}

/// An assessment (time overrides only for its staff).
#[utoipa::path(get, path = "/assessments/{id}", tag = "assessments", security(("session" = [])),
    params(("id" = i64, Path, description = "The assessment")),
    responses((status = 200, body = Envelope<AssessmentView>)))]
pub(crate) async fn get_assessment(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
) -> ApiResult<Reply<AssessmentView>> {
    let assessment = service(&state).get(id).await?;
    Ok(ok(AssessmentView::new(&assessment, &user)))
}

/// Fields of an assessment to change; absent ones stay.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateAssessmentRequest {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    #[schema(max_length = 10000)]
    description: Option<String>,
    #[schema(min_items = 1, max_items = 50)]
    zones: Option<Vec<Zone>>,
    selection: Option<Selection>,
    #[schema(minimum = 1, maximum = 2592000)]
    time_limit_s: Option<u32>,
    opens_at: Option<DateTime<Utc>>,
    closes_at: Option<DateTime<Utc>>,
    #[schema(minimum = 1, maximum = 1000)]
    max_submissions: Option<u32>,
    #[schema(minimum = 1, maximum = 86400)]
    min_interval_s: Option<u32>,
    feedback: Option<Feedback>,
    scoreboard: Option<Scoreboard>,
    policy: Option<ScorePolicy>,
    #[schema(minimum = 0, maximum = 1)]
    performance_credit: Option<f64>,
}

/// Edits an assessment while no session has started (its professor or an
/// admin); 409 `assessment_started` after.
#[utoipa::path(patch, path = "/assessments/{id}", tag = "assessments", security(("session" = [])),
    params(("id" = i64, Path, description = "The assessment")),
    request_body = UpdateAssessmentRequest,
    responses((status = 200, body = Envelope<AssessmentView>), Forbidden, StartedRefusal))]
async fn update_assessment(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
    AppJson(request): AppJson<UpdateAssessmentRequest>,
) -> ApiResult<Reply<AssessmentView>> {
    let patch = AssessmentPatch {
        name: request.name,
        description: request.description,
        zones: request.zones,
        selection: request.selection,
        time_limit_s: request.time_limit_s,
        opens_at: request.opens_at,
        closes_at: request.closes_at,
        max_submissions: request.max_submissions,
        min_interval_s: request.min_interval_s,
        feedback: request.feedback,
        scoreboard: request.scoreboard,
        policy: request.policy,
        performance_credit: request.performance_credit,
    };
    let assessment = service(&state).update(&user.0, id, patch).await?;
    Ok(ok(AssessmentView::new(&assessment, &user)))
}

/// Sets a student's time override (its professor or an admin): extra
/// seconds, a time multiplier, their own close date. Replaces the
/// student's previous one and applies to a running session at once.
#[utoipa::path(put, path = "/assessments/{id}/overrides", tag = "assessments", security(("session" = [])),
    params(("id" = i64, Path, description = "The assessment")),
    request_body = TimeOverride,
    responses((status = 200, body = Envelope<AssessmentView>), Forbidden))]
async fn set_override(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
    AppJson(time): AppJson<TimeOverride>,
) -> ApiResult<Reply<AssessmentView>> {
    let assessment = service(&state).set_override(&user.0, id, time).await?;
    Ok(ok(AssessmentView::new(&assessment, &user)))
}

/// Seconds to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddTimeRequest {
    #[schema(minimum = 1, maximum = 2592000)]
    pub(crate) delta_s: i64,
}

/// Adds time for everyone (its professor or an admin): every session's
/// deadline and the close date move by `delta_s`.
#[utoipa::path(post, path = "/assessments/{id}/time", tag = "assessments", security(("session" = [])),
    params(("id" = i64, Path, description = "The assessment")),
    request_body = AddTimeRequest,
    responses((status = 200, body = Envelope<AssessmentView>), Forbidden))]
pub(crate) async fn add_assessment_time(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
    AppJson(request): AppJson<AddTimeRequest>,
) -> ApiResult<Reply<AssessmentView>> {
    let assessment = service(&state)
        .add_time_to_all(&user.0, id, request.delta_s)
        .await?;
    Ok(ok(AssessmentView::new(&assessment, &user)))
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

/// Starts the caller's session (201), or returns it if it exists (200):
/// the questions are picked and the deadline fixed.
#[utoipa::path(post, path = "/assessments/{id}/sessions", tag = "assessments", security(("session" = [])),
    params(("id" = i64, Path, description = "The assessment")),
    responses((status = 201, body = Envelope<AssessmentSessionView>),
        (status = 200, description = "The session already existed", body = Envelope<AssessmentSessionView>),
        StartRefusals))]
pub(crate) async fn start_session(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
) -> ApiResult<Reply<AssessmentSessionView>> {
    let service = service(&state);
    let (session, new) = service.start(&user.0, id).await?;
    let assessment = service.get(id).await?;
    let snapshot = service.snapshot(assessment, session).await?;
    let view = session_view(&service, &snapshot, &user).await?;
    if new {
        tracing::info!(
            assessment_id = id,
            session_id = view.id,
            user_id = %user.0.id,
            deadline = %view.deadline,
            "assessment session started"
        );
        Ok(created(view))
    } else {
        Ok(ok(view))
    }
}

/// A session: questions, deadline, remaining time, each submission's state
/// (its student, the assessment's professor, admins).
#[utoipa::path(get, path = "/sessions/{id}", tag = "assessments", security(("session" = [])),
    params(("id" = i64, Path, description = "The session")),
    responses((status = 200, body = Envelope<AssessmentSessionView>), Forbidden))]
pub(crate) async fn get_session(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
) -> ApiResult<Reply<AssessmentSessionView>> {
    let service = service(&state);
    let (assessment, session) = service.visible_session(&user.0, id).await?;
    let snapshot = service.snapshot(assessment, session).await?;
    Ok(ok(session_view(&service, &snapshot, &user).await?))
}

/// A query for one question.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitQueryRequest {
    /// One read-only statement; not blank, no NUL characters.
    #[schema(
        max_length = 65536,
        pattern = r"^[^\x00]*[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00][^\x00]*$"
    )]
    pub(crate) query: String,
}

/// Submits a query for question `q` of the caller's session: accepted by
/// its receipt time before the deadline, under the question's limits, and
/// graded as an ordinary attempt.
#[utoipa::path(post, path = "/sessions/{id}/questions/{q}/attempts", tag = "assessments", security(("session" = [])),
    params(("id" = i64, Path, description = "The session"),
        ("q" = u32, Path, description = "The question's number")),
    request_body = SubmitQueryRequest,
    responses((status = 201, body = Envelope<SubmissionView>), SubmitRefusals))]
pub(crate) async fn submit(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath((id, number)): AppPath<(i64, u32)>,
    AppJson(request): AppJson<SubmitQueryRequest>,
) -> ApiResult<Reply<SubmissionView>> {
    // The receipt time: the whole submission has arrived (a body trickled
    // in from before the deadline is not received before it), and nothing
    // after this point (store writes, queueing) can make it late.
    let received_at = Utc::now();
    if request.query.trim().is_empty() || request.query.contains('\0') {
        return Err(ApiError::Unprocessable(
            "query: must not be blank nor contain NUL characters".into(),
        ));
    }
    if request.query.chars().count() > MAX_QUERY {
        return Err(ApiError::Unprocessable(format!(
            "query: at most {MAX_QUERY} characters"
        )));
    }
    let service = service(&state);
    let (session, submission_number) = service
        .submit(&user.0, id, number, request.query, received_at)
        .await?;
    let assessment = service.get(session.assessment_id).await?;
    let snapshot = service.snapshot(assessment, session).await?;
    let view = session_view(&service, &snapshot, &user).await?;
    tracing::info!(
        session_id = id,
        question = number,
        submission = submission_number,
        user_id = %user.0.id,
        "assessment submission accepted"
    );
    let submission = view
        .questions
        .into_iter()
        .flat_map(|question| question.submissions)
        .find(|submission| submission.number == submission_number)
        .ok_or_else(|| ApiError::Internal(format!("submission {submission_number} vanished")))?;
    Ok(created(submission))
}

/// Finishes a session (its student or staff): no more submissions; it is
/// FINALIZED once every submission is graded.
#[utoipa::path(post, path = "/sessions/{id}/finish", tag = "assessments", security(("session" = [])),
    params(("id" = i64, Path, description = "The session")),
    responses((status = 200, body = Envelope<AssessmentSessionView>), Forbidden))]
pub(crate) async fn finish_session(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
) -> ApiResult<Reply<AssessmentSessionView>> {
    let service = service(&state);
    let snapshot = service.finish(&user.0, id).await?;
    Ok(ok(session_view(&service, &snapshot, &user).await?))
}

/// Adds time to one session (the assessment's professor or an admin).
#[utoipa::path(post, path = "/sessions/{id}/time", tag = "assessments", security(("session" = [])),
    params(("id" = i64, Path, description = "The session")),
    request_body = AddTimeRequest,
    responses((status = 200, body = Envelope<AssessmentSessionView>), Forbidden))]
pub(crate) async fn add_session_time(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
    AppJson(request): AppJson<AddTimeRequest>,
) -> ApiResult<Reply<AssessmentSessionView>> {
    let service = service(&state);
    let snapshot = service.add_time(&user.0, id, request.delta_s).await?;
    Ok(ok(session_view(&service, &snapshot, &user).await?))
}

/// How long a reopened session stays open.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReopenRequest {
    #[schema(minimum = 1, maximum = 2592000)]
    duration_s: i64,
}

/// Reopens a session (the assessment's professor or an admin): ACTIVE
/// again, for at least `duration_s` seconds from now.
#[utoipa::path(post, path = "/sessions/{id}/reopen", tag = "assessments", security(("session" = [])),
    params(("id" = i64, Path, description = "The session")),
    request_body = ReopenRequest,
    responses((status = 200, body = Envelope<AssessmentSessionView>), Forbidden))]
async fn reopen_session(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
    AppJson(request): AppJson<ReopenRequest>,
) -> ApiResult<Reply<AssessmentSessionView>> {
    let service = service(&state);
    let snapshot = service.reopen(&user.0, id, request.duration_s).await?;
    Ok(ok(session_view(&service, &snapshot, &user).await?))
}

/// One entry of a session's log.
#[derive(Serialize, ToSchema)]
struct SessionLogEntry {
    at: DateTime<Utc>,
    /// `started`, `submitted`, `withdrawn`, `extended`, `finished`,
    /// `reopened`, `closed` (by the deadline).
    kind: String,
    /// Who did it; null for the clock.
    actor_id: Option<UserId>,
    detail: Option<String>,
}

impl From<&SessionEvent> for SessionLogEntry {
    fn from(event: &SessionEvent) -> Self {
        SessionLogEntry {
            at: event.at,
            kind: event.kind.clone(),
            actor_id: event.actor_id,
            detail: event.detail.clone(),
        }
    }
}

/// A session's log, oldest first (its student, the assessment's professor,
/// admins): the session's own events, the extensions for everyone while it
/// ran, and its close by the deadline.
#[utoipa::path(get, path = "/sessions/{id}/log", tag = "assessments", security(("session" = [])),
    params(("id" = i64, Path, description = "The session")),
    responses((status = 200, body = Envelope<Vec<SessionLogEntry>>), Forbidden))]
async fn session_log(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
) -> ApiResult<Reply<Vec<SessionLogEntry>>> {
    let service = service(&state);
    let (assessment, session) = service.visible_session(&user.0, id).await?;
    let mut entries: Vec<SessionLogEntry> = session.log.iter().map(SessionLogEntry::from).collect();
    entries.extend(
        assessment
            .log
            .iter()
            .filter(|event| event.at >= session.started_at)
            .map(SessionLogEntry::from),
    );
    let deadline = timing::deadline(&assessment, &session);
    let now = Utc::now();
    if session.finished_at.is_none() && deadline <= now {
        entries.push(SessionLogEntry {
            at: deadline,
            kind: "closed".into(),
            actor_id: None,
            detail: Some("the deadline passed".into()),
        });
    }
    entries.sort_by_key(|entry| entry.at);
    Ok(ok(entries))
}

// ---------------------------------------------------------------------------
// Scores
// ---------------------------------------------------------------------------

/// A manual score, with who set it, when and why.
#[derive(Serialize, ToSchema)]
struct ManualScoreView {
    id: i64,
    assessment_id: i64,
    /// The student (the seed's name for it).
    user: UserId,
    score: f64,
    reason: String,
    created_by: UserId,
    /// When it was recorded (the seed's name for it).
    date_submitted: DateTime<Utc>,
}

impl From<&ScoreOverride> for ManualScoreView {
    fn from(score: &ScoreOverride) -> Self {
        ManualScoreView {
            id: score.id,
            assessment_id: score.assessment_id,
            user: score.user_id,
            score: score.score,
            reason: score.reason.clone(),
            created_by: score.created_by,
            date_submitted: score.created_at,
        }
    }
}

/// A question's score.
#[derive(Serialize, ToSchema)]
struct QuestionScoreView {
    number: u32,
    challenge_id: ChallengeId,
    points: f64,
    score: f64,
    counted_attempt_id: Option<AttemptId>,
    submissions: usize,
    pending: usize,
}

/// A student's score in an assessment.
#[derive(Serialize, ToSchema)]
struct ScoreView {
    assessment_id: i64,
    user_id: UserId,
    session_id: i64,
    #[schema(pattern = "^(ACTIVE|CLOSED|FINALIZED)$")]
    state: String,
    /// The manual score when there is one, else `computed`.
    score: f64,
    computed: f64,
    max_score: f64,
    /// Submissions still being graded (the score may still rise).
    pending: usize,
    /// `best` or `last`.
    policy: ScorePolicy,
    manual: Option<ManualScoreView>,
    questions: Vec<QuestionScoreView>,
}

fn score_view(
    assessment: &Assessment,
    score: &SessionScore,
    manual: Option<&ScoreOverride>,
) -> ScoreView {
    ScoreView {
        assessment_id: assessment.id,
        user_id: score.user_id,
        session_id: score.session_id,
        state: score.state.as_str().to_string(),
        score: manual.map_or(score.score, |manual| manual.score),
        computed: score.score,
        max_score: score.max_score,
        pending: score.pending,
        policy: assessment.spec.policy,
        manual: manual.map(ManualScoreView::from),
        questions: score
            .questions
            .iter()
            .map(|question| QuestionScoreView {
                number: question.number,
                challenge_id: question.challenge_id,
                points: question.points,
                score: question.score,
                counted_attempt_id: question.counted_attempt_id,
                submissions: question.submissions,
                pending: question.pending,
            })
            .collect(),
    }
}

/// One row of a live scoreboard.
#[derive(Serialize, ToSchema)]
struct ScoreboardRow {
    user_id: UserId,
    full_name: String,
    score: f64,
}

/// Scores of an assessment: staff get every student's; a student gets
/// their own (once results are visible) and, with `scoreboard: live`, the
/// scoreboard.
#[derive(Serialize, ToSchema)]
struct AssessmentScores {
    scores: Vec<ScoreView>,
    /// Everyone's score, best first; only with `scoreboard: live` (and
    /// visible results) for students, always for staff.
    scoreboard: Option<Vec<ScoreboardRow>>,
}

/// The latest manual score of each student.
fn latest_manual(scores: &[ScoreOverride]) -> HashMap<UserId, &ScoreOverride> {
    let mut latest = HashMap::new();
    for score in scores {
        latest.insert(score.user_id, score);
    }
    latest
}

/// Scores of an assessment (see [`AssessmentScores`]).
#[utoipa::path(get, path = "/assessments/{id}/scores", tag = "assessments", security(("session" = [])),
    params(("id" = i64, Path, description = "The assessment")),
    responses((status = 200, body = Envelope<AssessmentScores>)))]
async fn assessment_scores(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
) -> ApiResult<Reply<AssessmentScores>> {
    let service = service(&state);
    let assessment = service.get(id).await?;
    let staff = is_staff(&assessment, &user.0);
    let visible = staff || results_visible(&assessment, Utc::now());
    let manual_scores = state.store.list_score_overrides(Some(id), None).await?;
    let manual = latest_manual(&manual_scores);
    let live = staff || (visible && assessment.spec.scoreboard == Scoreboard::Live);
    let all = if live {
        service.scores(&assessment).await?
    } else {
        match state.store.find_assessment_session(id, user.0.id).await? {
            Some(session) => {
                let snapshot = service.snapshot(assessment.clone(), session).await?;
                vec![service.score(&snapshot, &mut HashMap::new()).await?]
            }
            None => Vec::new(),
        }
    };
    let views: Vec<ScoreView> = all
        .iter()
        .map(|score| score_view(&assessment, score, manual.get(&score.user_id).copied()))
        .collect();
    let scoreboard = if live {
        let mut rows = Vec::new();
        for view in &views {
            let full_name = state
                .store
                .get_user(view.user_id)
                .await?
                .map_or_else(String::new, |user| user.full_name);
            rows.push(ScoreboardRow {
                user_id: view.user_id,
                full_name,
                score: view.score,
            });
        }
        rows.sort_by(|a, b| b.score.total_cmp(&a.score));
        Some(rows)
    } else {
        None
    };
    let scores = views
        .into_iter()
        .filter(|view| staff || (visible && view.user_id == user.0.id))
        .collect();
    Ok(ok(AssessmentScores { scores, scoreboard }))
}

/// A user's scores in every assessment they took: for the user (results
/// withheld until visible), admins, and each assessment's professor (their
/// own assessments only).
#[utoipa::path(get, path = "/users/{id}/scores", tag = "assessments", security(("session" = [])),
    params(("id" = UserId, Path, description = "The user")),
    responses((status = 200, body = Envelope<Vec<ScoreView>>), Forbidden))]
async fn user_scores(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<UserId>,
) -> ApiResult<Reply<Vec<ScoreView>>> {
    if id != user.0.id && user.0.role == Role::Student {
        return Err(ApiError::Forbidden(
            "a student may see only their own scores".into(),
        ));
    }
    if state.store.get_user(id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no user {id}")));
    }
    let service = service(&state);
    let manual_scores = state.store.list_score_overrides(None, Some(id)).await?;
    let mut views = Vec::new();
    let mut challenges = HashMap::new();
    for session in state.store.list_user_assessment_sessions(id).await? {
        let assessment = service.get(session.assessment_id).await?;
        let staff = is_staff(&assessment, &user.0);
        if !staff && (id != user.0.id || !results_visible(&assessment, Utc::now())) {
            continue;
        }
        let snapshot = service.snapshot(assessment.clone(), session).await?;
        let score = service.score(&snapshot, &mut challenges).await?;
        let manual = manual_scores
            .iter()
            .rev()
            .find(|manual| manual.assessment_id == assessment.id);
        views.push(score_view(&assessment, &score, manual));
    }
    Ok(ok(views))
}

/// A manual score and why it was given.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ScoreOverrideRequest {
    /// From 0 to the assessment's `max_score`.
    #[schema(minimum = 0, maximum = 1000000000)]
    score: f64,
    #[schema(
        min_length = 1,
        max_length = 1000,
        pattern = r"[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    reason: String,
}

/// Records a manual score (the assessment's professor or an admin), kept
/// with who gave it, when and why; the latest replaces the computed score.
async fn record_manual(
    state: &AppState,
    user: &CurrentUser,
    assessment_id: i64,
    user_id: UserId,
    request: ScoreOverrideRequest,
) -> ApiResult<ScoreOverride> {
    let assessment = service(state).get(assessment_id).await?;
    require_staff(&assessment, &user.0)?;
    if state.store.get_user(user_id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no user {user_id}")));
    }
    let max = max_score(&assessment.spec);
    if !request.score.is_finite() || request.score < 0.0 || request.score > max {
        return Err(ApiError::Unprocessable(format!(
            "score: from 0 to the assessment's max_score {max}"
        )));
    }
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON {
        return Err(ApiError::Unprocessable(format!(
            "reason: 1 to {MAX_REASON} characters, not blank: say why"
        )));
    }
    let stored = state
        .store
        .create_score_override(NewScoreOverride {
            assessment_id,
            user_id,
            score: request.score,
            reason: reason.to_string(),
            created_by: user.0.id,
        })
        .await?;
    tracing::info!(
        assessment_id,
        user_id = %user_id,
        by = %user.0.id,
        score = stored.score,
        "manual score recorded"
    );
    Ok(stored)
}

/// Overrides a student's score in an assessment (its professor or an
/// admin), audited: who, when, why.
#[utoipa::path(put, path = "/scores/{assessment_id}/{user_id}/override", tag = "assessments", security(("session" = [])),
    params(("assessment_id" = i64, Path, description = "The assessment"),
        ("user_id" = UserId, Path, description = "The student")),
    request_body = ScoreOverrideRequest,
    responses((status = 200, body = Envelope<ManualScoreView>), Forbidden))]
async fn override_score(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath((assessment_id, user_id)): AppPath<(i64, UserId)>,
    AppJson(request): AppJson<ScoreOverrideRequest>,
) -> ApiResult<Reply<ManualScoreView>> {
    let stored = record_manual(&state, &user, assessment_id, user_id, request).await?;
    Ok(ok(ManualScoreView::from(&stored)))
}

/// The score seed's endpoint: a manual score for a student in an assessment.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RecordScoreRequest {
    user_id: UserId,
    assessment_id: i64,
    #[schema(minimum = 0, maximum = 1000000000)]
    score: f64,
    #[schema(
        min_length = 1,
        max_length = 1000,
        pattern = r"[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    reason: String,
}

/// Records a manual score (the assessment's professor or an admin) and
/// answers as the score seed does: `id`, `user`, `score`, `date_submitted`.
/// An unknown user or assessment is a 404.
#[utoipa::path(post, path = "/scores", tag = "assessments", security(("session" = [])),
    request_body = RecordScoreRequest,
    responses((status = 201, body = Envelope<ManualScoreView>), Forbidden, NotFound))]
async fn record_score(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(request): AppJson<RecordScoreRequest>,
) -> ApiResult<Reply<ManualScoreView>> {
    let stored = record_manual(
        &state,
        &user,
        request.assessment_id,
        request.user_id,
        ScoreOverrideRequest {
            score: request.score,
            reason: request.reason,
        },
    )
    .await?;
    Ok(created(ManualScoreView::from(&stored)))
}
