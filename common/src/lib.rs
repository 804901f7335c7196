//! Wire types shared by the sqlarena coordinator and grader.
//!
//! Everything here is plain serde data: the people API's enums, the grader
//! protocol's requests and replies, job payloads and query results. No I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub mod ids;
pub use ids::{
    AttemptId, ChallengeId, ExportId, GraderId, JobId, LeaseId, RunId, TestCaseId, UserId,
};

pub mod affinity;
pub mod assessments;
pub mod audit;
pub use audit::CaseAudit;

/// A user's role. Serialized as in the seed API: `PROF`, `STUD`, `ADMIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Role {
    #[serde(rename = "PROF")]
    Professor,
    #[serde(rename = "STUD")]
    Student,
    #[serde(rename = "ADMIN")]
    Admin,
}

impl Role {
    /// Returns the wire name (`PROF`, `STUD`, `ADMIN`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Professor => "PROF",
            Role::Student => "STUD",
            Role::Admin => "ADMIN",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "PROF" => Some(Role::Professor),
            "STUD" => Some(Role::Student),
            "ADMIN" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// `FE`: fastest execution wins; `SE`: slowest execution wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum ChallengeType {
    FE,
    SE,
}

impl ChallengeType {
    /// Returns the lane attempts of this challenge type are queued on.
    pub fn attempt_lane(self) -> Lane {
        match self {
            ChallengeType::FE => Lane::Fast,
            ChallengeType::SE => Lane::Slow,
        }
    }
}

/// Generates `as_str`/`parse` for a fieldless enum whose wire names are the
/// SCREAMING or lower-case strings given.
macro_rules! wire_names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Returns the wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
            /// Parses a wire name.
            pub fn parse(text: &str) -> Option<$ty> {
                match text { $($name => Some($ty::$variant),)+ _ => None }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub mod exports;
pub mod runs;

/// Lifecycle of a challenge: created `PENDING`, then `READY` or `FAILED` once
/// its init job reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChallengeState {
    Pending,
    Ready,
    Failed,
}
wire_names!(ChallengeState { Pending => "PENDING", Ready => "READY", Failed => "FAILED" });

/// Status of an attempt as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AttemptStatus {
    Pending,
    Running,
    Passed,
    Failed,
    Error,
    Cancelled,
}
wire_names!(AttemptStatus {
    Pending => "PENDING",
    Running => "RUNNING",
    Passed => "PASSED",
    Failed => "FAILED",
    Error => "ERROR",
    Cancelled => "CANCELLED",
});

impl AttemptStatus {
    /// Returns true once the attempt can no longer change.
    pub fn is_final(self) -> bool {
        !matches!(self, AttemptStatus::Pending | AttemptStatus::Running)
    }
}

/// Status of one test case of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaseStatus {
    Pending,
    Passed,
    Failed,
    Error,
}
wire_names!(CaseStatus { Pending => "PENDING", Passed => "PASSED", Failed => "FAILED", Error => "ERROR" });

/// A queue lane. Graders can be dedicated to lanes; the slow lane has a much
/// longer statement timeout.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    Init,
    Fast,
    Slow,
}
wire_names!(Lane { Init => "init", Fast => "fast", Slow => "slow" });

impl Lane {
    /// All lanes, in dispatch priority order (init jobs go out first).
    pub const ALL: [Lane; 3] = [Lane::Init, Lane::Fast, Lane::Slow];

    /// Dispatch priority: lower goes first.
    pub fn priority(self) -> i64 {
        match self {
            Lane::Init => 0,
            Lane::Fast => 1,
            Lane::Slow => 2,
        }
    }
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Init,
    Attempt,
}
wire_names!(JobKind { Init => "init", Attempt => "attempt" });

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Queued,
    Leased,
    Done,
    Failed,
    Cancelled,
}
wire_names!(JobState {
    Queued => "QUEUED",
    Leased => "LEASED",
    Done => "DONE",
    Failed => "FAILED",
    Cancelled => "CANCELLED",
});

impl JobState {
    /// Every state, in lifecycle order (for lists and counts per state).
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Leased,
        JobState::Done,
        JobState::Failed,
        JobState::Cancelled,
    ];
}

/// Lifecycle of a grader node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GraderState {
    Alive,
    Draining,
    Dead,
}
wire_names!(GraderState { Alive => "ALIVE", Draining => "DRAINING", Dead => "DEAD" });

// ---------------------------------------------------------------------------
// Query results
// ---------------------------------------------------------------------------

/// One result column: its name and PostgreSQL type name (e.g. `int4`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

/// A typed query result. Cells are JSON values: numbers stay numbers, NULL is
/// `null`, text is a string; types without a JSON counterpart are text.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct QueryResult {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<serde_json::Value>>,
    /// True when the reference query fixes the row order (top-level ORDER BY).
    #[serde(default)]
    pub ordered: bool,
}

// ---------------------------------------------------------------------------
// Job payloads and outcomes
// ---------------------------------------------------------------------------

/// One test case's data as shipped to a grader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TestCaseData {
    pub id: TestCaseId,
    /// INSERT statements run after the challenge's init SQL.
    pub data: String,
}

/// Payload of an init job: build the challenge's databases and compute the
/// expected results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InitPayload {
    pub challenge_id: ChallengeId,
    pub challenge_name: String,
    pub version: i64,
    pub init: String,
    pub solution: String,
    pub times_to_run: u32,
    pub test_cases: Vec<TestCaseData>,
}

/// Payload of an attempt job: grade one student query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptPayload {
    pub attempt_id: AttemptId,
    pub user_id: UserId,
    pub challenge_id: ChallengeId,
    pub challenge_name: String,
    pub challenge_version: i64,
    /// Identifies the bundle (init, data, solution) the grader must have.
    pub version_hash: String,
    pub query: String,
    pub times_to_run: u32,
    pub test_case_ids: Vec<TestCaseId>,
    /// Set when the job grades an item of a grading run: its result goes
    /// to that item, never to the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_item: Option<runs::RunItemRef>,
}

/// What a job asks a grader to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobPayload {
    Init(InitPayload),
    Attempt(AttemptPayload),
}

impl JobPayload {
    /// Returns the job kind of this payload.
    pub fn kind(&self) -> JobKind {
        match self {
            JobPayload::Init(_) => JobKind::Init,
            JobPayload::Attempt(_) => JobKind::Attempt,
        }
    }
}

/// The expected result of one test case, computed by an init job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExpectedCase {
    pub test_case_id: TestCaseId,
    pub result: QueryResult,
    /// Median time of the reference solution on this case, in milliseconds.
    #[serde(default)]
    pub reference_ms: Option<f64>,
    /// Where and how the reference was timed (for the professor and admins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<CaseAudit>,
}

/// Outcome of an init job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InitOutcome {
    /// Expected results, one per test case, when init succeeded.
    #[serde(default)]
    pub expected: Vec<ExpectedCase>,
    /// One message per failing statement or test case; empty on success.
    #[serde(default)]
    pub errors: Vec<String>,
    /// Warnings a professor should read (e.g. an ORDER BY that does not fix
    /// the order).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Result of one test case of an attempt, as measured by a grader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CaseResult {
    pub test_case_id: TestCaseId,
    pub status: CaseStatus,
    /// Median of the student query's timed runs, in milliseconds.
    #[serde(default)]
    pub execution_ms: Option<f64>,
    /// Fastest timed run of the student query, in milliseconds.
    #[serde(default)]
    pub min_ms: Option<f64>,
    /// Median of the reference's timed runs, in milliseconds.
    #[serde(default)]
    pub reference_ms: Option<f64>,
    /// Median of the pairwise student/reference time ratios.
    #[serde(default)]
    pub ratio: Option<f64>,
    /// The student's result (possibly truncated for display).
    #[serde(default)]
    pub actual_result: Option<QueryResult>,
    /// A short description of the first differences, for wrong answers.
    #[serde(default)]
    pub diff: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// How a passed case was timed (how sure its ratio is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<CaseTiming>,
    /// Where and how the case was measured (for the professor and admins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<CaseAudit>,
}

/// How a test case was timed: the ratio's 95 % confidence interval, the
/// rounds run and how many were discarded as stalled (both sides slowed
/// together), and whether the interval got as narrow as grading aims for
/// (half-width at most 5 % of the ratio) or the time budget ran out first.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CaseTiming {
    pub ratio_low: f64,
    pub ratio_high: f64,
    pub rounds: u32,
    pub discarded: u32,
    pub precise: bool,
}

/// Outcome of an attempt job: every test case's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptOutcome {
    pub cases: Vec<CaseResult>,
    /// Set when the query was rejected before any case ran (e.g. not a
    /// single read-only statement).
    #[serde(default)]
    pub error: Option<String>,
}

/// The final outcome a grader posts when it completes a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobOutcome {
    Init(InitOutcome),
    Attempt(AttemptOutcome),
}

// ---------------------------------------------------------------------------
// Grader protocol (`/api/v1/grader`)
// ---------------------------------------------------------------------------

/// `POST /grader/register`, authenticated with a cluster token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterGraderRequest {
    #[schema(max_length = 200)]
    pub name: String,
    #[schema(max_length = 200)]
    pub hostname: String,
    #[schema(max_length = 200)]
    pub version: String,
    /// The lanes it takes jobs from; duplicates are ignored.
    #[schema(min_items = 1)]
    pub lanes: Vec<Lane>,
    /// Jobs it runs at once.
    #[schema(minimum = 1, maximum = 256)]
    pub slots: u32,
}

/// Reply to a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegisterGraderResponse {
    pub grader_id: GraderId,
    /// Bearer token for every further call; shown once.
    pub grader_token: String,
    pub heartbeat_interval_ms: u64,
    /// A grader silent for this long is declared dead and loses its leases.
    pub lease_timeout_ms: u64,
}

/// A lease a grader holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeldLease {
    pub job_id: JobId,
    pub lease_id: LeaseId,
}

/// `POST /grader/heartbeat`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    #[serde(default)]
    pub leases: Vec<HeldLease>,
}

/// Reply to a heartbeat.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    /// Jobs the grader must stop at once (cancelled, or no longer its own).
    pub cancel: Vec<JobId>,
    /// True when an admin drains this grader: finish current work, lease
    /// nothing new.
    pub drain: bool,
}

/// A job handed to a grader by `POST /grader/jobs/lease`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeasedJob {
    pub job_id: JobId,
    pub lease_id: LeaseId,
    pub lane: Lane,
    /// Number of times this job has been leased, this lease included.
    pub tries: u32,
    /// The job must be completed by then or it is taken back.
    pub deadline: DateTime<Utc>,
    pub payload: JobPayload,
}

/// The jobs handed to a grader by `POST /grader/jobs/lease?max_jobs=N`
/// (at most `N`, and at most its slots), in the order they were claimed:
/// lane priority, then age.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeaseBatch {
    pub jobs: Vec<LeasedJob>,
}

/// `POST /grader/jobs/:id/progress`: one test case's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    pub lease_id: LeaseId,
    pub case: CaseResult,
}

/// `POST /grader/jobs/:id/complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    pub lease_id: LeaseId,
    pub outcome: JobOutcome,
}

/// `POST /grader/jobs/:id/fail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    pub lease_id: LeaseId,
    pub error: String,
    /// True when another try (possibly on another grader) could succeed.
    pub retryable: bool,
}

/// One test case in a challenge bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BundleCase {
    pub id: TestCaseId,
    pub data: String,
    pub expected: Option<QueryResult>,
}

/// `GET /grader/challenges/:id/bundle`: everything a grader needs to build a
/// challenge's databases and grade attempts against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChallengeBundle {
    pub challenge_id: ChallengeId,
    pub version: i64,
    pub version_hash: String,
    pub init: String,
    pub solution: String,
    pub times_to_run: u32,
    pub test_cases: Vec<BundleCase>,
}

// ---------------------------------------------------------------------------
// The API envelope
// ---------------------------------------------------------------------------

/// The `status` of a success envelope: always `success`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SuccessStatus {
    #[default]
    Success,
}

/// The `status` of an error envelope: always `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErrorStatus {
    #[default]
    Error,
}

/// The success envelope: `{"status":"success","data":...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Envelope<T> {
    pub status: SuccessStatus,
    pub data: T,
}

impl<T> Envelope<T> {
    /// Wraps `data`.
    pub fn new(data: T) -> Envelope<T> {
        Envelope {
            status: SuccessStatus::Success,
            data,
        }
    }
}

/// One page of a list: `{"status":"success","data":[...],"next_cursor":...}`,
/// `next_cursor` null on the last page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PageEnvelope<T> {
    pub status: SuccessStatus,
    pub data: Vec<T>,
    /// Pass it as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// What went wrong, for programs: stable across releases, unlike `message`.
/// Each HTTP status has one code, except 400 (`bad_request`: the request
/// could not be read, e.g. malformed JSON, a bad query string or cursor) and
/// 422 (`validation_failed`: it was read but a field breaks a rule), and the
/// refusals of timed assessments, which name their rule (`deadline_passed`,
/// `submission_limit`, `too_soon`, `assessment_started`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request could not be read.
    BadRequest,
    /// 401: no credentials, or unknown, expired or revoked ones.
    Unauthorized,
    /// 403: signed in, but not allowed to do this.
    Forbidden,
    /// 404: no such resource or route.
    NotFound,
    /// 405: the route does not take this method.
    MethodNotAllowed,
    /// 409: the resource's state does not allow it (taken email, stale
    /// lease, concurrent change).
    Conflict,
    /// 413: the body is larger than the limit.
    PayloadTooLarge,
    /// 422: a field breaks a documented rule.
    ValidationFailed,
    /// 429: too many requests; wait `retry_after` seconds.
    RateLimited,
    /// 503: busy or the store is unreachable; try again (after
    /// `retry_after` seconds when given).
    Unavailable,
    /// 500: a fault of the server; the detail is in its log.
    Internal,
    /// 403: the assessment session's deadline had passed when the request
    /// arrived (or the session was finished).
    DeadlinePassed,
    /// 409: the question already has the assessment's `max_submissions`.
    SubmissionLimit,
    /// 429: less than the assessment's `min_interval_s` since the last
    /// submission of the question; wait `retry_after` seconds.
    TooSoon,
    /// 409: a session of the assessment has started, so it can no longer
    /// be edited.
    AssessmentStarted,
    /// 410: the resource existed but is gone (an expired export's file).
    Gone,
    /// 416: the `Range` asked for is malformed or outside the file.
    RangeNotSatisfiable,
}

impl ErrorCode {
    /// Returns the wire name (`not_found`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::DeadlinePassed => "deadline_passed",
            ErrorCode::SubmissionLimit => "submission_limit",
            ErrorCode::TooSoon => "too_soon",
            ErrorCode::AssessmentStarted => "assessment_started",
            ErrorCode::Gone => "gone",
            ErrorCode::RangeNotSatisfiable => "range_not_satisfiable",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error envelope:
/// `{"status":"error","code":"not_found","message":"..."}`, with
/// `retry_after` (seconds, as in the `Retry-After` header) on 429 and some
/// 503s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorEnvelope {
    pub status: ErrorStatus,
    pub code: ErrorCode,
    /// For people: what went wrong and what to do about it.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl ErrorEnvelope {
    /// Parses an error reply's body; `None` when it is not an envelope
    /// (e.g. from a proxy in between).
    pub fn parse(body: &str) -> Option<ErrorEnvelope> {
        serde_json::from_str(body).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_their_kind_tag() {
        let payload = JobPayload::Init(InitPayload {
            challenge_id: ChallengeId(1),
            challenge_name: "c".into(),
            version: 1,
            init: "create table t(a int)".into(),
            solution: "select a from t".into(),
            times_to_run: 3,
            test_cases: vec![TestCaseData {
                id: TestCaseId(1),
                data: "insert into t values (1)".into(),
            }],
        });
        let json = serde_json::to_value(&payload).unwrap();
        assert_eq!(json["kind"], "init");
        assert_eq!(serde_json::from_value::<JobPayload>(json).unwrap(), payload);
    }

    #[test]
    fn enums_use_the_seed_wire_names() {
        assert_eq!(serde_json::to_string(&Role::Student).unwrap(), "\"STUD\"");
        assert_eq!(serde_json::to_string(&Lane::Slow).unwrap(), "\"slow\"");
        assert_eq!(
            serde_json::to_string(&JobState::Leased).unwrap(),
            "\"LEASED\""
        );
        assert_eq!(JobState::parse("DONE"), Some(JobState::Done));
        assert_eq!(Lane::parse("nope"), None);
    }

    #[test]
    fn error_codes_are_snake_case_and_round_trip() {
        for code in [
            ErrorCode::NotFound,
            ErrorCode::ValidationFailed,
            ErrorCode::RateLimited,
        ] {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, code.as_str());
        }
        let envelope = ErrorEnvelope::parse(
            r#"{"status":"error","code":"unavailable","message":"m","retry_after":2}"#,
        )
        .unwrap();
        assert_eq!(
            (envelope.code, envelope.retry_after),
            (ErrorCode::Unavailable, Some(2))
        );
        assert!(ErrorEnvelope::parse("<html>bad gateway</html>").is_none());
    }
}
