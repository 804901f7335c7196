//! Init jobs: build a challenge's databases, run the reference solution on
//! each test case as the runner, and report the expected results.

use std::time::{Duration, Instant};

use sqlarena_common::{CaseAudit, ExpectedCase, InitOutcome, InitPayload, TestCaseId};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument};

use super::row_order;
use crate::compare::{first_unfixed_tie, RowOrder};
use crate::error::JobError;
use crate::sandbox::{BuildError, Limits, Login, QueryError, Sandbox};
use crate::timing::{median, millis, minimum, timed_rounds};

/// Runs an init job. Problems with the professor's SQL are reported in the
/// outcome's `errors` (one per failing statement or test case); only
/// infrastructure problems are job errors. The databases and their owner
/// role are dropped at the end: attempts build their own from the bundle. With `finish_by`, the
/// reference's timed runs on each case shrink to fit its share of the time
/// left, as an attempt's rounds do.
///
/// # Errors
///
/// [`JobError::Retryable`] when PostgreSQL fails, [`JobError::Cancelled`]
/// when `cancel` fires.
#[instrument(skip_all, fields(challenge_id = %payload.challenge_id, version = payload.version))]
pub async fn run_init(
    sandbox: &Sandbox,
    payload: &InitPayload,
    limits: &Limits,
    cancel: &CancellationToken,
    finish_by: Option<Instant>,
) -> Result<InitOutcome, JobError> {
    let owner = sandbox.create_owner().await.map_err(|error| match error {
        BuildError::Cancelled => JobError::Cancelled,
        other => JobError::Retryable(other.describe(None)),
    })?;
    let mut databases = Vec::new();
    let result = build_and_run(
        sandbox,
        &owner,
        payload,
        limits,
        cancel,
        finish_by,
        &mut databases,
    )
    .await;
    sandbox
        .drop_version(&owner.role, databases.into_iter().map(|(_, name)| name))
        .await;
    let outcome = result?;
    info!(
        errors = outcome.errors.len(),
        warnings = outcome.warnings.len(),
        "init finished"
    );
    Ok(outcome)
}

/// Builds every case's database (recording them in `databases`) and runs
/// the reference on each.
async fn build_and_run(
    sandbox: &Sandbox,
    owner: &Login,
    payload: &InitPayload,
    limits: &Limits,
    cancel: &CancellationToken,
    finish_by: Option<Instant>,
    databases: &mut Vec<(TestCaseId, String)>,
) -> Result<InitOutcome, JobError> {
    let mut outcome = InitOutcome {
        expected: vec![],
        errors: vec![],
        warnings: vec![],
    };
    if payload.test_cases.is_empty() {
        outcome
            .errors
            .push("the challenge has no test cases".into());
        return Ok(outcome);
    }
    for case in &payload.test_cases {
        if cancel.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        match sandbox
            .build_case_database(owner, &payload.init, &case.data, cancel)
            .await
        {
            Ok(name) => databases.push((case.id, name)),
            Err(BuildError::Infrastructure(message)) => return Err(JobError::Retryable(message)),
            Err(BuildError::Cancelled) => return Err(JobError::Cancelled),
            Err(error @ BuildError::Init { .. }) => {
                // The init SQL is the same for every case: report it once.
                outcome.errors.push(error.describe(Some(case.id)));
                return Ok(outcome);
            }
            Err(error) => outcome.errors.push(error.describe(Some(case.id))),
        }
    }
    if !outcome.errors.is_empty() {
        return Ok(outcome);
    }
    sandbox
        .seal_owner(owner)
        .await
        .map_err(|error| JobError::Retryable(error.describe(None)))?;
    for (index, (case_id, database)) in databases.iter().enumerate() {
        let budget = finish_by.map(|at| {
            at.saturating_duration_since(Instant::now())
                / u32::try_from(databases.len() - index).unwrap_or(1)
        });
        let runs = Runs {
            times_to_run: payload.times_to_run,
            budget,
        };
        match run_reference(
            sandbox,
            *case_id,
            &payload.solution,
            database,
            runs,
            limits,
            cancel,
        )
        .await
        {
            Ok(expected) => {
                if let Some(warning) = order_warning(*case_id, &payload.solution, &expected) {
                    outcome.warnings.push(warning);
                }
                outcome.expected.push(expected);
            }
            Err(QueryError::Cancelled) => return Err(JobError::Cancelled),
            Err(QueryError::Connection(message)) => return Err(JobError::Retryable(message)),
            Err(error) => outcome
                .errors
                .push(format!("test case {case_id}: the solution failed: {error}")),
        }
    }
    let results: Vec<_> = outcome.expected.iter().map(|e| &e.result).collect();
    if let Some(size) = super::report::over_budget(&results) {
        outcome.errors.push(format!(
            "the solution's results on all test cases together are {size} bytes as JSON; \
             at most {} bytes are kept: make the expected results smaller",
            super::report::POST_BUDGET
        ));
    }
    if !outcome.errors.is_empty() {
        outcome.expected.clear();
    }
    Ok(outcome)
}

/// How often to time the reference on one case, and in how long.
struct Runs {
    times_to_run: u32,
    budget: Option<Duration>,
}

/// Runs the reference once for its result and `times_to_run` more times
/// (fewer when they do not fit the budget) for its median time, on a
/// runner connection.
async fn run_reference(
    sandbox: &Sandbox,
    case_id: TestCaseId,
    solution: &str,
    database: &str,
    runs: Runs,
    limits: &Limits,
    cancel: &CancellationToken,
) -> Result<ExpectedCase, QueryError> {
    let started = Instant::now();
    let mut session = sandbox.connect_runner(database).await?;
    let prepared = session.prepare(solution).await?;
    let first = session.execute(&prepared, limits, true, cancel).await?;
    let mut result = first.result.unwrap_or_default();
    let mut times = Vec::new();
    let rounds = timed_rounds(
        runs.times_to_run,
        runs.budget
            .map(|budget| budget.saturating_sub(started.elapsed())),
        first.elapsed,
    );
    for _ in 0..rounds {
        times.push(millis(
            session
                .execute(&prepared, limits, false, cancel)
                .await?
                .elapsed,
        ));
    }
    result.ordered = matches!(
        row_order(solution, &result.columns),
        RowOrder::Ordered { .. }
    );
    Ok(ExpectedCase {
        test_case_id: case_id,
        result,
        reference_ms: median(&times),
        audit: Some(CaseAudit {
            postgres_version: Some(sandbox.postgres_version().to_string()),
            rounds,
            reference_median_ms: median(&times),
            reference_min_ms: minimum(&times),
            ..CaseAudit::default()
        }),
    })
}

/// Warns when the ORDER BY leaves ties whose order is not fixed.
fn order_warning(case_id: TestCaseId, solution: &str, expected: &ExpectedCase) -> Option<String> {
    let RowOrder::Ordered { tie_columns } = row_order(solution, &expected.result.columns) else {
        return None;
    };
    if tie_columns.is_empty() {
        return None;
    }
    let row = first_unfixed_tie(&expected.result.rows, &tie_columns)?;
    Some(format!(
        "test case {case_id}: the ORDER BY does not fix the order: rows {} and {} tie on the ORDER BY \
         columns but differ elsewhere; add a tie-breaker (rows tied on the ORDER BY columns are compared \
         in any order)",
        row + 1,
        row + 2
    ))
}
