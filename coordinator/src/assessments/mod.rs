//! Timed assessments as a service over the store and the jobs service:
//! validating and editing an assessment, starting sessions (the pick),
//! accepting submissions by receipt time under the deadline and the limits,
//! staff time changes, and scores. Knows nothing of HTTP.
//!
//! Every change to an assessment or a session is read, decide, write back
//! if unchanged ([`Assessments::change_session`]), so the rules hold when
//! requests race, on either store.

pub mod pick;
pub mod scoring;
pub mod timing;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlarena_common::assessments::{AssessmentSpec, Feedback, TimeOverride};
use sqlarena_common::{AttemptId, AttemptStatus, ChallengeId, ChallengeType, Role, UserId};

use crate::jobs::{Jobs, JobsError};
use crate::store::assessments::{
    Assessment, AssessmentSession, NewAssessmentSession, Question, SessionEvent, Submission,
};
use crate::store::{Attempt, Challenge, Store, StoreError, User};

/// Longest time limit, extension or extra time, in seconds (30 days).
pub const MAX_SECONDS: i64 = 30 * 24 * 3600;

/// How often a read-decide-write retries when another writer got in between.
const MAX_CHANGE_RETRIES: usize = 50;

/// Why an assessment call was refused.
#[derive(Debug, thiserror::Error)]
pub enum AssessmentError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    /// A field breaks a rule.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// The session (or the assessment, for a start) is over.
    #[error("{0}")]
    DeadlinePassed(String),
    #[error("{0}")]
    SubmissionLimit(String),
    #[error("{message}")]
    TooSoon {
        message: String,
        retry_after_secs: u64,
    },
    /// A session has started: the assessment can no longer be edited.
    #[error("{0}")]
    Started(String),
    #[error(transparent)]
    Jobs(#[from] JobsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result alias of the service.
pub type AssessmentResult<T> = Result<T, AssessmentError>;

/// A session's state: ACTIVE until finished or past its deadline, then
/// CLOSED while a submission is being graded, then FINALIZED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Active,
    Closed,
    Finalized,
}

impl SessionState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Active => "ACTIVE",
            SessionState::Closed => "CLOSED",
            SessionState::Finalized => "FINALIZED",
        }
    }
}

/// The score of one question of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct QuestionScore {
    pub number: u32,
    pub challenge_id: ChallengeId,
    pub points: f64,
    pub score: f64,
    /// The attempt that counts, if one does.
    pub counted_attempt_id: Option<AttemptId>,
    pub submissions: usize,
    /// Submissions still being graded.
    pub pending: usize,
}

/// The computed score of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionScore {
    pub session_id: i64,
    pub user_id: UserId,
    pub state: SessionState,
    pub score: f64,
    pub max_score: f64,
    pub pending: usize,
    pub questions: Vec<QuestionScore>,
}

/// A session with what it takes to show it: its assessment, deadline,
/// state and the attempts of its submissions.
#[derive(Debug, Clone)]
pub struct SessionSnapshot {
    pub assessment: Assessment,
    pub session: AssessmentSession,
    pub deadline: DateTime<Utc>,
    pub state: SessionState,
    pub attempts: HashMap<AttemptId, Attempt>,
}

impl SessionSnapshot {
    /// True when results may be shown to the session's student at `now`.
    pub fn results_visible(&self, now: DateTime<Utc>) -> bool {
        results_visible(&self.assessment, now)
    }
}

/// True when students may see results of `assessment` at `now`.
pub fn results_visible(assessment: &Assessment, now: DateTime<Utc>) -> bool {
    assessment.spec.feedback == Feedback::Immediate
        || now >= timing::results_released_at(assessment)
}

/// True for the assessment's professor and admins.
pub fn is_staff(assessment: &Assessment, user: &User) -> bool {
    user.role == Role::Admin || assessment.created_user_id == user.id
}

/// Refuses anyone but the assessment's professor and admins.
///
/// # Errors
/// `Forbidden`.
pub fn require_staff(assessment: &Assessment, user: &User) -> AssessmentResult<()> {
    if is_staff(assessment, user) {
        Ok(())
    } else {
        Err(AssessmentError::Forbidden(format!(
            "only the professor of assessment {} or an admin may do this",
            assessment.id
        )))
    }
}

/// Changes to an assessment before its first session; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct AssessmentPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub zones: Option<Vec<sqlarena_common::assessments::Zone>>,
    pub selection: Option<sqlarena_common::assessments::Selection>,
    pub time_limit_s: Option<u32>,
    pub opens_at: Option<DateTime<Utc>>,
    pub closes_at: Option<DateTime<Utc>>,
    pub max_submissions: Option<u32>,
    pub min_interval_s: Option<u32>,
    pub feedback: Option<Feedback>,
    pub scoreboard: Option<sqlarena_common::assessments::Scoreboard>,
    pub policy: Option<sqlarena_common::assessments::ScorePolicy>,
    pub performance_credit: Option<f64>,
}

impl AssessmentPatch {
    fn apply(self, spec: &mut AssessmentSpec) {
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(value) = self.$field { spec.$field = value; })* };
        }
        set!(
            name,
            zones,
            selection,
            time_limit_s,
            opens_at,
            closes_at,
            feedback,
            scoreboard,
            policy,
            performance_credit
        );
        if let Some(description) = self.description {
            spec.description = Some(description);
        }
        if let Some(max) = self.max_submissions {
            spec.max_submissions = Some(max);
        }
        if let Some(interval) = self.min_interval_s {
            spec.min_interval_s = Some(interval);
        }
    }
}

/// The assessments service; cheap to build per request.
#[derive(Clone)]
pub struct Assessments {
    store: Arc<dyn Store>,
    jobs: Jobs,
    /// A submission still without an attempt this long after its receipt
    /// was cut off by a crash or a timeout (its request is over): its
    /// attempt is made again from the stored query.
    orphan_after: Duration,
}

fn event(kind: &str, actor: Option<&User>, detail: Option<String>) -> SessionEvent {
    SessionEvent {
        at: Utc::now(),
        kind: kind.to_string(),
        actor_id: actor.map(|user| user.id),
        detail,
    }
}

fn check_seconds(field: &str, value: i64, min: i64) -> AssessmentResult<()> {
    if value < min || value > MAX_SECONDS {
        return Err(AssessmentError::Invalid(format!(
            "{field}: must be between {min} and {MAX_SECONDS} seconds"
        )));
    }
    Ok(())
}

impl Assessments {
    /// Builds the service; `request_timeout` bounds how long a submission
    /// request can still be queueing its attempt.
    pub fn new(store: Arc<dyn Store>, jobs: Jobs, request_timeout: Duration) -> Assessments {
        Assessments {
            store,
            jobs,
            orphan_after: request_timeout + Duration::from_secs(5),
        }
    }

    /// Checks a spec: sizes and ranges, dates in order, zones that do not
    /// share a challenge, and challenges that exist, belong to `creator`
    /// (any, for admins) and stay open until the assessment closes.
    ///
    /// # Errors
    /// `Invalid` naming the field, `Forbidden` for someone else's challenge.
    pub async fn validate(&self, creator: &User, spec: &AssessmentSpec) -> AssessmentResult<()> {
        let invalid = |message: String| Err(AssessmentError::Invalid(message));
        if spec.name.trim().is_empty() || spec.name.chars().count() > 200 {
            return invalid("name: 1 to 200 characters, not blank".into());
        }
        if spec
            .description
            .as_ref()
            .is_some_and(|text| text.chars().count() > 10_000)
        {
            return invalid("description: at most 10000 characters".into());
        }
        if spec.zones.is_empty() || spec.zones.len() > 50 {
            return invalid("zones: 1 to 50 zones".into());
        }
        check_seconds("time_limit_s", i64::from(spec.time_limit_s), 1)?;
        if spec.closes_at <= spec.opens_at {
            return invalid("closes_at: must be after opens_at".into());
        }
        if let Some(max) = spec.max_submissions {
            if !(1..=1000).contains(&max) {
                return invalid("max_submissions: 1 to 1000".into());
            }
        }
        if let Some(interval) = spec.min_interval_s {
            if !(1..=86_400).contains(&interval) {
                return invalid("min_interval_s: 1 to 86400 seconds".into());
            }
        }
        if !(0.0..=1.0).contains(&spec.performance_credit) {
            return invalid("performance_credit: from 0 to 1".into());
        }
        let mut zone_of: HashMap<ChallengeId, usize> = HashMap::new();
        for (index, zone) in spec.zones.iter().enumerate() {
            if zone.pool.is_empty() || zone.pool.len() > 200 {
                return invalid(format!("zones[{index}].pool: 1 to 200 challenges"));
            }
            if zone.pick < 1 || zone.pick as usize > zone.pool.len() {
                return invalid(format!(
                    "zones[{index}].pick: {} is not between 1 and the pool's {} challenges",
                    zone.pick,
                    zone.pool.len()
                ));
            }
            if !zone.points.is_finite() || !(0.0..=1_000_000.0).contains(&zone.points) {
                return invalid(format!("zones[{index}].points: from 0 to 1000000"));
            }
            for &challenge_id in &zone.pool {
                if let Some(other) = zone_of.insert(challenge_id, index) {
                    return invalid(if other == index {
                        format!("zones[{index}].pool: challenge {challenge_id} is listed twice")
                    } else {
                        format!(
                            "zones[{index}].pool: challenge {challenge_id} is also in zones[{other}]; \
                             zones must not share challenges, so every zone can always pick enough"
                        )
                    });
                }
            }
        }
        for (challenge_id, index) in zone_of {
            let Some(challenge) = self.store.get_challenge(challenge_id).await? else {
                return invalid(format!(
                    "zones[{index}].pool: there is no challenge {challenge_id}"
                ));
            };
            if creator.role != Role::Admin && challenge.created_user_id != creator.id {
                return Err(AssessmentError::Forbidden(format!(
                    "zones[{index}].pool: challenge {challenge_id} is not yours; \
                     an assessment may use only its professor's challenges"
                )));
            }
            if challenge.expires_at < spec.closes_at {
                return invalid(format!(
                    "zones[{index}].pool: challenge {challenge_id} expires at {}, before the assessment closes",
                    challenge.expires_at
                ));
            }
        }
        Ok(())
    }

    /// Validates and creates an assessment.
    ///
    /// # Errors
    /// As [`Assessments::validate`].
    pub async fn create(
        &self,
        creator: &User,
        spec: AssessmentSpec,
    ) -> AssessmentResult<Assessment> {
        self.validate(creator, &spec).await?;
        Ok(self.store.create_assessment(creator.id, spec).await?)
    }

    /// Returns an assessment.
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn get(&self, id: i64) -> AssessmentResult<Assessment> {
        self.store
            .get_assessment(id)
            .await?
            .ok_or_else(|| AssessmentError::NotFound(format!("no assessment {id}")))
    }

    /// Applies `change` to the assessment and writes it back if nobody
    /// wrote in between (else reads it again and retries).
    async fn change_assessment<F>(
        &self,
        mut assessment: Assessment,
        mut change: F,
    ) -> AssessmentResult<Assessment>
    where
        F: FnMut(&mut Assessment) -> AssessmentResult<()>,
    {
        for _ in 0..MAX_CHANGE_RETRIES {
            let mut next = assessment.clone();
            change(&mut next)?;
            if self.store.replace_assessment(&next).await? {
                next.rev += 1;
                return Ok(next);
            }
            assessment = self.get(assessment.id).await?;
        }
        Err(AssessmentError::Conflict(format!(
            "assessment {} is changing too often; try again",
            assessment.id
        )))
    }

    /// Applies `change` to the session as [`Assessments::change_assessment`] does.
    async fn change_session<F>(
        &self,
        mut session: AssessmentSession,
        mut change: F,
    ) -> AssessmentResult<AssessmentSession>
    where
        F: FnMut(&mut AssessmentSession) -> AssessmentResult<()>,
    {
        for _ in 0..MAX_CHANGE_RETRIES {
            let mut next = session.clone();
            change(&mut next)?;
            if self.store.replace_assessment_session(&next).await? {
                next.rev += 1;
                return Ok(next);
            }
            session = self.session(session.id).await?;
        }
        Err(AssessmentError::Conflict(format!(
            "session {} is changing too often; try again",
            session.id
        )))
    }

    /// Edits an assessment no session has started (staff).
    ///
    /// # Errors
    /// `Forbidden`, `Started` once a session started, `Invalid`.
    pub async fn update(
        &self,
        user: &User,
        id: i64,
        patch: AssessmentPatch,
    ) -> AssessmentResult<Assessment> {
        let assessment = self.get(id).await?;
        require_staff(&assessment, user)?;
        let mut spec = assessment.spec.clone();
        patch.apply(&mut spec);
        self.validate(user, &spec).await?;
        self.change_assessment(assessment, |assessment| {
            if assessment.started {
                return Err(started(assessment.id));
            }
            assessment.spec = spec.clone();
            Ok(())
        })
        .await
    }

    /// Sets (replaces) a student's time override (staff); it applies to a
    /// running session at once.
    ///
    /// # Errors
    /// `Forbidden`, `NotFound` for an unknown user, `Invalid`.
    pub async fn set_override(
        &self,
        user: &User,
        id: i64,
        time: TimeOverride,
    ) -> AssessmentResult<Assessment> {
        let assessment = self.get(id).await?;
        require_staff(&assessment, user)?;
        if self.store.get_user(time.user_id).await?.is_none() {
            return Err(AssessmentError::NotFound(format!(
                "user_id: no user {}",
                time.user_id
            )));
        }
        if let Some(extra) = time.extra_s {
            check_seconds("extra_s", i64::from(extra), 0)?;
        }
        if let Some(scale) = time.time_scale {
            if !scale.is_finite() || scale <= 0.0 || scale > 10.0 {
                return Err(AssessmentError::Invalid(
                    "time_scale: more than 0, at most 10".into(),
                ));
            }
        }
        if let Some(closes_at) = time.closes_at {
            if closes_at <= assessment.spec.opens_at {
                return Err(AssessmentError::Invalid(
                    "closes_at: must be after the assessment's opens_at".into(),
                ));
            }
        }
        self.change_assessment(assessment, |assessment| {
            assessment
                .overrides
                .retain(|other| other.user_id != time.user_id);
            assessment.overrides.push(time.clone());
            Ok(())
        })
        .await
    }

    /// Adds `delta_s` seconds for everyone (staff): every session's
    /// deadline and the close date move by it.
    ///
    /// # Errors
    /// `Forbidden`, `Invalid` for a delta out of range.
    pub async fn add_time_to_all(
        &self,
        user: &User,
        id: i64,
        delta_s: i64,
    ) -> AssessmentResult<Assessment> {
        check_seconds("delta_s", delta_s, 1)?;
        let assessment = self.get(id).await?;
        require_staff(&assessment, user)?;
        self.change_assessment(assessment, |assessment| {
            check_seconds("delta_s", assessment.extension_s + delta_s, 0)?;
            assessment.extension_s += delta_s;
            assessment.log.push(event(
                "extended",
                Some(user),
                Some(format!("+{delta_s} s for every session")),
            ));
            Ok(())
        })
        .await
    }

    /// Starts the caller's session, or returns it if it exists (`true` when
    /// this call created it). The assessment is marked started first, so an
    /// edit racing with the first start is refused, and the pick is made
    /// from the spec as frozen.
    ///
    /// # Errors
    /// `Forbidden` before it opens, `DeadlinePassed` once closed for the caller.
    pub async fn start(&self, user: &User, id: i64) -> AssessmentResult<(AssessmentSession, bool)> {
        let assessment = self.get(id).await?;
        if let Some(existing) = self.store.find_assessment_session(id, user.id).await? {
            return Ok((existing, false));
        }
        let now = Utc::now();
        if now < assessment.spec.opens_at {
            return Err(AssessmentError::Forbidden(format!(
                "assessment {id} opens at {}",
                assessment.spec.opens_at
            )));
        }
        let closes_at = timing::closes_at_for(&assessment, user.id);
        if now >= closes_at {
            return Err(AssessmentError::DeadlinePassed(format!(
                "assessment {id} closed at {closes_at}"
            )));
        }
        let assessment = if assessment.started {
            assessment
        } else {
            self.change_assessment(assessment, |assessment| {
                assessment.started = true;
                Ok(())
            })
            .await?
        };
        let seed = pick::seed(
            assessment.spec.selection,
            assessment.id,
            user.id.0,
            rand::random(),
        );
        let questions = pick::pick_questions(&assessment.spec.zones, seed);
        let session = NewAssessmentSession {
            assessment_id: id,
            user_id: user.id,
            seed,
            questions,
            started_at: now,
            log: vec![event("started", Some(user), None)],
        };
        Ok(self.store.create_assessment_session(session).await?)
    }

    /// Returns a session.
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn session(&self, id: i64) -> AssessmentResult<AssessmentSession> {
        self.store
            .get_assessment_session(id)
            .await?
            .ok_or_else(|| AssessmentError::NotFound(format!("no session {id}")))
    }

    /// Loads a session and its assessment for `user`: the session's student
    /// or the assessment's staff.
    ///
    /// # Errors
    /// `NotFound`, `Forbidden`.
    pub async fn visible_session(
        &self,
        user: &User,
        id: i64,
    ) -> AssessmentResult<(Assessment, AssessmentSession)> {
        let session = self.session(id).await?;
        let assessment = self.get(session.assessment_id).await?;
        if session.user_id != user.id && !is_staff(&assessment, user) {
            return Err(AssessmentError::Forbidden(
                "only the session's student, the assessment's professor or an admin may see it"
                    .into(),
            ));
        }
        Ok((assessment, session))
    }

    /// The session as it stands: deadline, state, its submissions' attempts
    /// (queueing again the attempt of a submission cut off before it had one).
    ///
    /// # Errors
    /// Store failures.
    pub async fn snapshot(
        &self,
        assessment: Assessment,
        session: AssessmentSession,
    ) -> AssessmentResult<SessionSnapshot> {
        let session = self.recover_orphans(session).await?;
        let mut attempts = HashMap::new();
        for submission in &session.submissions {
            if let Some(attempt_id) = submission.attempt_id {
                if let Some(attempt) = self.store.get_attempt(attempt_id).await? {
                    let attempt = self.jobs.live_attempt(attempt).await?;
                    attempts.insert(attempt_id, attempt);
                }
            }
        }
        let deadline = timing::deadline(&assessment, &session);
        let now = Utc::now();
        let pending = session
            .submissions
            .iter()
            .any(|submission| is_pending(submission, &attempts));
        let state = if !timing::is_closed(&assessment, &session, now) {
            SessionState::Active
        } else if pending {
            SessionState::Closed
        } else {
            SessionState::Finalized
        };
        Ok(SessionSnapshot {
            assessment,
            session,
            deadline,
            state,
            attempts,
        })
    }

    /// Queues again the attempts of submissions left without one (see
    /// `orphan_after`); one that cannot be queued ends as an error.
    async fn recover_orphans(
        &self,
        session: AssessmentSession,
    ) -> AssessmentResult<AssessmentSession> {
        let cutoff = Utc::now()
            - chrono::Duration::from_std(self.orphan_after).unwrap_or(chrono::Duration::zero());
        let orphans: Vec<Submission> = session
            .submissions
            .iter()
            .filter(|s| s.attempt_id.is_none() && s.error.is_none() && s.received_at < cutoff)
            .cloned()
            .collect();
        let mut session = session;
        for orphan in orphans {
            let Some(question) = session
                .questions
                .iter()
                .find(|question| question.number == orphan.question)
                .cloned()
            else {
                continue;
            };
            tracing::warn!(
                session_id = session.id,
                submission = orphan.number,
                "queueing the attempt of a submission left without one"
            );
            let outcome = self
                .queue_attempt(session.user_id, &question, orphan.query.clone())
                .await;
            session = self
                .change_session(session, |session| {
                    if let Some(submission) = session
                        .submissions
                        .iter_mut()
                        .find(|s| s.number == orphan.number && s.attempt_id.is_none())
                    {
                        match &outcome {
                            Ok(attempt_id) => submission.attempt_id = Some(*attempt_id),
                            Err(error) => submission.error = Some(error.to_string()),
                        }
                    }
                    Ok(())
                })
                .await?;
        }
        Ok(session)
    }

    /// Queues the grading attempt of a submission.
    async fn queue_attempt(
        &self,
        user_id: UserId,
        question: &Question,
        query: String,
    ) -> AssessmentResult<AttemptId> {
        let challenge = self
            .store
            .get_challenge(question.challenge_id)
            .await?
            .ok_or_else(|| {
                AssessmentError::NotFound(format!("challenge {} is gone", question.challenge_id))
            })?;
        let (attempt, job) = self.jobs.submit_attempt(&challenge, user_id, query).await?;
        tracing::info!(attempt_id = %attempt.id, job_id = %job.id, "assessment attempt queued");
        Ok(attempt.id)
    }

    /// Accepts a submission received at `received_at` for question
    /// `number` of the caller's session, under the deadline and the
    /// question's limits, then queues its attempt. A submission whose
    /// attempt cannot be queued (e.g. too many being graded) is withdrawn
    /// and does not count.
    ///
    /// # Errors
    /// `Forbidden` for anyone but the session's student, `NotFound` for an
    /// unknown question, `DeadlinePassed`, `SubmissionLimit`, `TooSoon`,
    /// and the attempt's own refusals.
    pub async fn submit(
        &self,
        user: &User,
        session_id: i64,
        number: u32,
        query: String,
        received_at: DateTime<Utc>,
    ) -> AssessmentResult<(AssessmentSession, u32)> {
        let session = self.session(session_id).await?;
        if session.user_id != user.id {
            return Err(AssessmentError::Forbidden(
                "only the session's student may submit in it".into(),
            ));
        }
        let assessment = self.get(session.assessment_id).await?;
        let question = session
            .questions
            .iter()
            .find(|question| question.number == number)
            .cloned()
            .ok_or_else(|| {
                AssessmentError::NotFound(format!(
                    "session {session_id} has no question {number} (it has {})",
                    session.questions.len()
                ))
            })?;
        let spec = &assessment.spec;
        let mut submission_number = 0;
        let session = self
            .change_session(session, |session| {
                let deadline = timing::deadline(&assessment, session);
                if session.finished_at.is_some() || received_at >= deadline {
                    return Err(AssessmentError::DeadlinePassed(format!(
                        "session {} ended at {}; the submission arrived at {received_at}",
                        session.id,
                        session.finished_at.unwrap_or(deadline).min(deadline)
                    )));
                }
                let earlier: Vec<&Submission> = session
                    .submissions
                    .iter()
                    .filter(|submission| submission.question == number)
                    .collect();
                if let Some(max) = spec.max_submissions {
                    if earlier.len() >= max as usize {
                        return Err(AssessmentError::SubmissionLimit(format!(
                            "question {number} already has its {max} submissions"
                        )));
                    }
                }
                if let (Some(interval), Some(last)) = (spec.min_interval_s, earlier.last()) {
                    let allowed = last.received_at + chrono::Duration::seconds(i64::from(interval));
                    if received_at < allowed {
                        let wait_ms = (allowed - received_at).num_milliseconds().max(1);
                        return Err(AssessmentError::TooSoon {
                            message: format!(
                                "submit question {number} again after {allowed} \
                                 (at least {interval} s between submissions)"
                            ),
                            retry_after_secs: (wait_ms as u64).div_ceil(1000),
                        });
                    }
                }
                submission_number = session
                    .submissions
                    .iter()
                    .map(|submission| submission.number)
                    .max()
                    .unwrap_or(0)
                    + 1;
                session.submissions.push(Submission {
                    number: submission_number,
                    question: number,
                    received_at,
                    query: query.clone(),
                    attempt_id: None,
                    error: None,
                });
                session.log.push(event(
                    "submitted",
                    Some(user),
                    Some(format!("question {number}, submission {submission_number}")),
                ));
                Ok(())
            })
            .await?;
        let outcome = self.queue_attempt(user.id, &question, query).await;
        let session = self
            .change_session(session, |session| {
                match &outcome {
                    Ok(attempt_id) => {
                        if let Some(submission) = session
                            .submissions
                            .iter_mut()
                            .find(|submission| submission.number == submission_number)
                        {
                            submission.attempt_id = Some(*attempt_id);
                        }
                    }
                    Err(_) => {
                        session
                            .submissions
                            .retain(|submission| submission.number != submission_number);
                        session.log.push(event(
                            "withdrawn",
                            None,
                            Some(format!(
                                "submission {submission_number}: its attempt could not be queued"
                            )),
                        ));
                    }
                }
                Ok(())
            })
            .await?;
        outcome?;
        Ok((session, submission_number))
    }

    /// Finishes a session (its student or staff): it takes no more
    /// submissions. Finishing a finished session changes nothing.
    ///
    /// # Errors
    /// `NotFound`, `Forbidden`.
    pub async fn finish(&self, user: &User, id: i64) -> AssessmentResult<SessionSnapshot> {
        let (assessment, session) = self.visible_session(user, id).await?;
        let session = if session.finished_at.is_some() {
            session
        } else {
            self.change_session(session, |session| {
                if session.finished_at.is_none() {
                    session.finished_at = Some(Utc::now());
                    session.log.push(event("finished", Some(user), None));
                }
                Ok(())
            })
            .await?
        };
        self.snapshot(assessment, session).await
    }

    /// Adds `delta_s` seconds to one session (staff).
    ///
    /// # Errors
    /// `Forbidden`, `Invalid`.
    pub async fn add_time(
        &self,
        user: &User,
        id: i64,
        delta_s: i64,
    ) -> AssessmentResult<SessionSnapshot> {
        check_seconds("delta_s", delta_s, 1)?;
        let (assessment, session) = self.visible_session(user, id).await?;
        require_staff(&assessment, user)?;
        let session = self
            .change_session(session, |session| {
                check_seconds("delta_s", session.extension_s + delta_s, i64::MIN)?;
                session.extension_s += delta_s;
                session
                    .log
                    .push(event("extended", Some(user), Some(format!("+{delta_s} s"))));
                Ok(())
            })
            .await?;
        self.snapshot(assessment, session).await
    }

    /// Reopens a session (staff): not finished any more, and open for at
    /// least `duration_s` more seconds from now.
    ///
    /// # Errors
    /// `Forbidden`, `Invalid`.
    pub async fn reopen(
        &self,
        user: &User,
        id: i64,
        duration_s: i64,
    ) -> AssessmentResult<SessionSnapshot> {
        check_seconds("duration_s", duration_s, 1)?;
        let (assessment, session) = self.visible_session(user, id).await?;
        require_staff(&assessment, user)?;
        let session = self
            .change_session(session, |session| {
                let wanted = Utc::now() + chrono::Duration::seconds(duration_s);
                let short_by = (wanted - timing::deadline(&assessment, session)).num_seconds();
                if short_by > 0 {
                    session.extension_s += short_by;
                }
                session.finished_at = None;
                session.log.push(event(
                    "reopened",
                    Some(user),
                    Some(format!("open for {duration_s} s more")),
                ));
                Ok(())
            })
            .await?;
        self.snapshot(assessment, session).await
    }

    /// The computed score of a session (see [`scoring`]).
    ///
    /// # Errors
    /// Store failures.
    pub async fn score(
        &self,
        snapshot: &SessionSnapshot,
        challenges: &mut HashMap<ChallengeId, Option<Challenge>>,
    ) -> AssessmentResult<SessionScore> {
        let spec = &snapshot.assessment.spec;
        let mut questions = Vec::new();
        for question in &snapshot.session.questions {
            let challenge_type = self
                .cached_challenge(challenges, question.challenge_id)
                .await?
                .map_or(ChallengeType::FE, |challenge| challenge.challenge_type);
            let submissions: Vec<&Submission> = snapshot
                .session
                .submissions
                .iter()
                .filter(|submission| submission.question == question.number)
                .collect();
            let mut graded = Vec::new();
            let mut graded_ids = Vec::new();
            let mut pending = 0;
            for submission in &submissions {
                if is_pending(submission, &snapshot.attempts) {
                    pending += 1;
                    continue;
                }
                let attempt = submission
                    .attempt_id
                    .and_then(|id| snapshot.attempts.get(&id));
                let (score, passed) = attempt.map_or((0.0, false), |attempt| {
                    (
                        scoring::attempt_score(
                            attempt,
                            challenge_type,
                            question.points,
                            spec.performance_credit,
                        ),
                        attempt.status == AttemptStatus::Passed,
                    )
                });
                graded.push((score, passed));
                graded_ids.push(submission.attempt_id);
            }
            let (score, counted) = scoring::question_score(spec.policy, &graded);
            questions.push(QuestionScore {
                number: question.number,
                challenge_id: question.challenge_id,
                points: question.points,
                score,
                counted_attempt_id: counted.and_then(|index| graded_ids[index]),
                submissions: submissions.len(),
                pending,
            });
        }
        Ok(SessionScore {
            session_id: snapshot.session.id,
            user_id: snapshot.session.user_id,
            state: snapshot.state,
            score: questions.iter().map(|question| question.score).sum(),
            max_score: questions.iter().map(|question| question.points).sum(),
            pending: questions.iter().map(|question| question.pending).sum(),
            questions,
        })
    }

    /// Scores of every session of an assessment, by session id.
    ///
    /// # Errors
    /// Store failures.
    pub async fn scores(&self, assessment: &Assessment) -> AssessmentResult<Vec<SessionScore>> {
        let mut challenges = HashMap::new();
        let mut scores = Vec::new();
        for session in self.store.list_assessment_sessions(assessment.id).await? {
            let snapshot = self.snapshot(assessment.clone(), session).await?;
            scores.push(self.score(&snapshot, &mut challenges).await?);
        }
        Ok(scores)
    }

    /// Returns a challenge, read once per `cache`.
    ///
    /// # Errors
    /// Store failures.
    pub async fn cached_challenge<'a>(
        &self,
        cache: &'a mut HashMap<ChallengeId, Option<Challenge>>,
        id: ChallengeId,
    ) -> AssessmentResult<Option<&'a Challenge>> {
        if let std::collections::hash_map::Entry::Vacant(entry) = cache.entry(id) {
            entry.insert(self.store.get_challenge(id).await?);
        }
        Ok(cache.get(&id).and_then(Option::as_ref))
    }

    /// Jobs, for the HTTP layer's attempt views.
    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// The store, for the HTTP layer's reads.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// The attempts of `user_id` whose results `viewer` may not see yet:
/// submissions of assessments with `feedback: after_close` that have not
/// closed, unless `viewer` is that assessment's staff. The attempts API and
/// leaderboards withhold them, so results do not leak around the session.
///
/// # Errors
/// Store failures.
pub async fn withheld_attempts(
    store: &dyn Store,
    viewer: &User,
    user_id: UserId,
) -> Result<HashSet<AttemptId>, StoreError> {
    let mut withheld = HashSet::new();
    if viewer.role == Role::Admin {
        return Ok(withheld);
    }
    let now = Utc::now();
    for session in store.list_user_assessment_sessions(user_id).await? {
        let Some(assessment) = store.get_assessment(session.assessment_id).await? else {
            continue;
        };
        if results_visible(&assessment, now) || is_staff(&assessment, viewer) {
            continue;
        }
        withheld.extend(session.submissions.iter().filter_map(|s| s.attempt_id));
    }
    Ok(withheld)
}

fn started(id: i64) -> AssessmentError {
    AssessmentError::Started(format!(
        "assessment {id} has a started session and can no longer be edited; \
         change one student's time with an override or add time with POST /assessments/{id}/time"
    ))
}

/// True while a submission has no final state: its attempt is being
/// graded, or it has no attempt yet (and no error).
pub fn is_pending(submission: &Submission, attempts: &HashMap<AttemptId, Attempt>) -> bool {
    match submission.attempt_id {
        Some(id) => attempts
            .get(&id)
            .is_some_and(|attempt| !attempt.status.is_final()),
        None => submission.error.is_none(),
    }
}
