//! Attempt jobs: time a student query against the reference on each test
//! case and check its result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlarena_common::{
    AttemptOutcome, AttemptPayload, CaseAudit, CaseResult, CaseStatus, CaseTiming, TestCaseId,
};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracing::{debug, instrument};

use super::report::{clip, shown, POST_BUDGET};
use super::row_order;
use crate::compare::compare;
use crate::error::JobError;
use crate::sandbox::session::check_query_shape;
use crate::sandbox::{CachedBundle, Limits, QueryError, RunnerSession, Sandbox, SessionKind};
use crate::timing::{millis, timed_rounds, CaseTimings, TimingSummary};

/// Runs an attempt job on a built bundle. Each case's result is sent to
/// `progress` as it finishes. With `finish_by` (the job's deadline less a
/// margin), a case whose rounds would not fit its share of the time left
/// runs fewer timed rounds, at least one, instead of running past the
/// deadline: a slow but correct query still gets its result.
///
/// # Errors
///
/// [`JobError::Terminal`] when the payload names cases the bundle lacks,
/// [`JobError::Retryable`] when PostgreSQL fails, [`JobError::Cancelled`]
/// when `cancel` fires.
#[instrument(skip_all, fields(attempt_id = %payload.attempt_id, challenge_id = %payload.challenge_id))]
pub async fn run_attempt(
    sandbox: &Sandbox,
    payload: &AttemptPayload,
    bundle: Arc<CachedBundle>,
    limits: &Limits,
    cancel: &CancellationToken,
    progress: Option<&UnboundedSender<CaseResult>>,
    finish_by: Option<Instant>,
) -> Result<AttemptOutcome, JobError> {
    let mut outcome = AttemptOutcome {
        cases: Vec::new(),
        error: None,
    };
    if let Err(rejection) = check_query_shape(&payload.query) {
        outcome.error = Some(rejection.to_string());
    }
    let cases = payload.test_case_ids.len();
    for (index, &case_id) in payload.test_case_ids.iter().enumerate() {
        if cancel.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        let budget = finish_by.map(|at| {
            at.saturating_duration_since(Instant::now()) / u32::try_from(cases - index).unwrap_or(1)
        });
        let mut case = match &outcome.error {
            Some(message) => error_case(case_id, message.clone()),
            None => run_case(sandbox, payload, &bundle, case_id, limits, cancel, budget).await?,
        };
        case.audit
            .get_or_insert_with(CaseAudit::default)
            .postgres_version = Some(sandbox.postgres_version().to_string());
        debug!(%case_id, status = %case.status, "case finished");
        if let Some(progress) = progress {
            // The receiver is gone only when the job is being abandoned.
            let _ = progress.send(case.clone());
        }
        outcome.cases.push(case);
    }
    Ok(outcome)
}

/// A case result carrying only an error.
fn error_case(test_case_id: TestCaseId, error: String) -> CaseResult {
    CaseResult {
        test_case_id,
        status: CaseStatus::Error,
        execution_ms: None,
        min_ms: None,
        reference_ms: None,
        ratio: None,
        actual_result: None,
        diff: None,
        error: Some(error),
        timing: None,
        audit: None,
    }
}

/// Maps a student query's failure into a case result or a job error.
fn student_failure(case_id: TestCaseId, error: QueryError) -> Result<CaseResult, JobError> {
    match error {
        QueryError::Cancelled => Err(JobError::Cancelled),
        QueryError::Connection(message) => Err(JobError::Retryable(format!(
            "database connection problem: {message}"
        ))),
        QueryError::Rejected(message) | QueryError::Failed(message) => {
            Ok(error_case(case_id, message))
        }
    }
}

/// Maps a reference failure (which should not happen) into a job error.
fn reference_failure(case_id: TestCaseId, error: QueryError) -> JobError {
    match error {
        QueryError::Cancelled => JobError::Cancelled,
        other => JobError::Retryable(format!(
            "test case {case_id}: the reference solution failed here: {other}"
        )),
    }
}

/// Grades one test case on two runner connections to its database: the
/// student's holds nothing but the student's statement, the reference is
/// prepared and run on the other. One discarded warm-up each (the
/// student's warm-up result is the one compared), then timed rounds
/// alternating the two.
async fn run_case(
    sandbox: &Sandbox,
    payload: &AttemptPayload,
    bundle: &CachedBundle,
    case_id: TestCaseId,
    limits: &Limits,
    cancel: &CancellationToken,
    budget: Option<Duration>,
) -> Result<CaseResult, JobError> {
    let Some(database) = bundle.databases.get(&case_id) else {
        return Err(JobError::Terminal(format!(
            "test case {case_id} is not part of the challenge's bundle"
        )));
    };
    let connection = |e: QueryError| JobError::Retryable(e.to_string());
    let mut student = sandbox
        .runner_session(database, SessionKind::Student)
        .await
        .map_err(connection)?;
    let mut reference = sandbox
        .runner_session(database, SessionKind::Reference)
        .await
        .map_err(connection)?;
    let result = grade_case(
        Sessions {
            student: &mut student,
            reference: &mut reference,
        },
        payload,
        bundle,
        case_id,
        limits,
        cancel,
        budget,
    )
    .await;
    sandbox.release_session(database, SessionKind::Student, student);
    sandbox.release_session(database, SessionKind::Reference, reference);
    result
}

/// The two connections a case is graded on.
struct Sessions<'a> {
    student: &'a mut RunnerSession,
    reference: &'a mut RunnerSession,
}

/// Grades one case on a runner connection to its database.
async fn grade_case(
    sessions: Sessions<'_>,
    payload: &AttemptPayload,
    bundle: &CachedBundle,
    case_id: TestCaseId,
    limits: &Limits,
    cancel: &CancellationToken,
    budget: Option<Duration>,
) -> Result<CaseResult, JobError> {
    let started = Instant::now();
    let expected = bundle
        .bundle
        .test_cases
        .iter()
        .find(|case| case.id == case_id)
        .and_then(|case| case.expected.as_ref())
        .ok_or_else(|| JobError::Terminal(format!("test case {case_id} has no expected result")))?;
    let Sessions {
        student: student_session,
        reference: reference_session,
    } = sessions;
    let (student, reference) = tokio::join!(
        student_session.prepare(&payload.query),
        reference_session.prepare_kept(&bundle.bundle.solution)
    );
    let student = match student {
        Ok(prepared) => prepared,
        Err(error) => return student_failure(case_id, error),
    };
    let reference = reference.map_err(|e| reference_failure(case_id, e))?;
    let warm_up = match student_session
        .execute(&student, limits, true, cancel)
        .await
    {
        Ok(execution) => execution,
        Err(error) => return student_failure(case_id, error),
    };
    let mut actual = warm_up.result.unwrap_or_default();
    let order = row_order(&bundle.bundle.solution, &expected.columns);
    // `ordered` says how rows were compared, on both results alike.
    actual.ordered = matches!(order, crate::compare::RowOrder::Ordered { .. });
    if let Err(diff) = compare(expected, &actual, &order) {
        let mut case = error_case(case_id, String::new());
        case.status = CaseStatus::Failed;
        case.error = None;
        case.diff = Some(clip(diff, shown_budget(payload) / 4));
        case.execution_ms = Some(millis(warm_up.elapsed));
        case.audit = Some(CaseAudit {
            student_median_ms: case.execution_ms,
            ..CaseAudit::default()
        });
        case.actual_result = Some(shown(actual, shown_budget(payload)));
        return Ok(case);
    }
    let reference_warm_up = reference_session
        .execute(&reference, limits, false, cancel)
        .await
        .map_err(|e| reference_failure(case_id, e))?;
    let round = warm_up.elapsed + reference_warm_up.elapsed;
    let left = budget.map(|budget| budget.saturating_sub(started.elapsed()));
    let rounds = timed_rounds(payload.times_to_run, left, round);
    if rounds < payload.times_to_run {
        debug!(
            %case_id,
            rounds, "fewer timed rounds to finish before the job's deadline"
        );
    }
    // Beyond times_to_run, rounds go on until the ratio is precise enough,
    // for at most the precision time (or as long as the planned rounds
    // take, if longer) and never past the case's share of the job's time.
    let planned = round * rounds;
    let precision_time = limits.precision_time.max(planned);
    let extra_time = left.map_or(precision_time, |left| left.min(precision_time));
    let timing_started = Instant::now();
    let mut timings = CaseTimings::default();
    loop {
        let round_started = Instant::now();
        let student_run = match student_session
            .execute(&student, limits, false, cancel)
            .await
        {
            Ok(execution) => execution,
            Err(error) => return student_failure(case_id, error),
        };
        let reference_run = reference_session
            .execute(&reference, limits, false, cancel)
            .await
            .map_err(|e| reference_failure(case_id, e))?;
        timings.push(student_run.elapsed, reference_run.elapsed);
        if timings.rounds() < rounds as usize {
            continue;
        }
        let precise = timings.summary().is_some_and(|s| s.is_precise());
        let next_ends = timing_started.elapsed() + round_started.elapsed();
        if precise
            || limits.precision_time.is_zero()
            || timings.rounds() >= MAX_ROUNDS
            || next_ends > extra_time
        {
            break;
        }
    }
    let summary = timings
        .summary()
        .ok_or_else(|| JobError::Terminal("no timed runs".into()))?;
    Ok(CaseResult {
        test_case_id: case_id,
        status: CaseStatus::Passed,
        execution_ms: Some(summary.execution_ms),
        min_ms: Some(summary.min_ms),
        reference_ms: Some(summary.reference_ms),
        ratio: Some(summary.ratio),
        actual_result: Some(shown(actual, shown_budget(payload))),
        diff: None,
        error: None,
        timing: Some(CaseTiming {
            ratio_low: summary.ratio_low,
            ratio_high: summary.ratio_high,
            rounds: u32::try_from(summary.rounds).unwrap_or(u32::MAX),
            discarded: u32::try_from(summary.discarded).unwrap_or(u32::MAX),
            precise: summary.is_precise(),
        }),
        audit: Some(audit_of(&summary)),
    })
}

/// The audit of a timed case: its rounds and timing summary (the
/// PostgreSQL version is added by the caller, the grader by the
/// coordinator).
fn audit_of(summary: &TimingSummary) -> CaseAudit {
    CaseAudit {
        rounds: u32::try_from(summary.rounds).unwrap_or(u32::MAX),
        discarded: u32::try_from(summary.discarded).unwrap_or(u32::MAX),
        student_median_ms: Some(summary.execution_ms),
        student_min_ms: Some(summary.min_ms),
        reference_median_ms: Some(summary.reference_ms),
        reference_min_ms: Some(summary.reference_min_ms),
        ratio: Some(summary.ratio),
        ratio_low: Some(summary.ratio_low),
        ratio_high: Some(summary.ratio_high),
        ..CaseAudit::default()
    }
}

/// Most timed rounds of one case.
const MAX_ROUNDS: usize = 200;

/// Bytes of display (rows and diff) each case may carry: an equal share of
/// the post budget, so the whole outcome fits one post.
fn shown_budget(payload: &AttemptPayload) -> usize {
    (POST_BUDGET / payload.test_case_ids.len().max(1)).max(4096)
}
