//! Where an export's rows come from, a page at a time, each page after the
//! key of the last row of the one before (the export's cursor): attempts
//! by id, gradebook students by user id (or, for a run's gradebook, items
//! by number), a run's items by number.
//!
//! The gradebook is the one writer of gradebooks: a run's postprocessing
//! builds its gradebook through it too ([`super::Exports::render`]).

use std::collections::{BTreeMap, HashMap};

use sqlarena_common::exports::ExportKind;
use sqlarena_common::{AttemptStatus, ChallengeId, RunId, UserId};

use super::rows::Cell;
use crate::assessments::Assessments;
use crate::jobs::grade;
use crate::store::assessments::Assessment;
use crate::store::exports::ExportSpec;
use crate::store::runs::RunItem;
use crate::store::{Attempt, Challenge, Store, StoreError, StoreResult};

/// One page of rows and the key of its last row (`None`: no rows, the
/// export is complete).
pub struct Page {
    pub rows: Vec<Vec<Cell>>,
    pub last_key: Option<i64>,
}

/// The column names of an export.
pub fn columns(spec: &ExportSpec) -> Vec<String> {
    let names: &[&str] = match spec.kind {
        ExportKind::Attempts => &[
            "attempt_id",
            "user_id",
            "challenge_id",
            "challenge_version",
            "status",
            "score",
            "execution_ms",
            "ratio",
            "created_at",
            "finished_at",
            "error",
            "query",
        ],
        ExportKind::Run => &[
            "item",
            "user_id",
            "attempt_id",
            "job_id",
            "state",
            "status",
            "score",
            "execution_ms",
            "ratio",
            "tries",
            "grader_id",
            "error",
            "note",
            "finished_at",
        ],
        ExportKind::Gradebook => return gradebook_columns(spec),
    };
    names.iter().map(|name| (*name).to_string()).collect()
}

/// The gradebook's columns: the student, then a group per challenge, then
/// a score per assessment.
fn gradebook_columns(spec: &ExportSpec) -> Vec<String> {
    let mut columns: Vec<String> = ["user_id", "full_name", "email"]
        .iter()
        .map(|name| (*name).to_string())
        .collect();
    for challenge_id in spec.challenge_ids.iter().flatten() {
        for field in [
            "status",
            "score",
            "execution_ms",
            "ratio",
            "attempt_id",
            "attempt_at",
        ] {
            columns.push(format!("challenge_{challenge_id}_{field}"));
        }
    }
    for assessment_id in &spec.assessment_ids {
        columns.push(format!("assessment_{assessment_id}_score"));
    }
    columns
}

/// Reads the page of `spec`'s rows after the key `after`, at most `limit`.
///
/// # Errors
/// Store failures.
pub async fn next_page(
    store: &dyn Store,
    assessments: &Assessments,
    spec: &ExportSpec,
    after: Option<i64>,
    limit: u32,
) -> StoreResult<Page> {
    match (spec.kind, spec.filters.run_id) {
        (ExportKind::Attempts, _) => attempts_page(store, spec, after, limit).await,
        (ExportKind::Run, Some(run_id)) => {
            let items = store.list_run_items(run_id, None, after, limit).await?;
            Ok(Page {
                last_key: items.last().map(|item| item.item),
                rows: items.into_iter().map(run_row).collect(),
            })
        }
        (ExportKind::Run, None) => Err(StoreError::Invalid("a run export names its run".into())),
        (ExportKind::Gradebook, Some(run_id)) => {
            run_gradebook_page(store, spec, run_id, after, limit).await
        }
        (ExportKind::Gradebook, None) => {
            gradebook_page(store, assessments, spec, after, limit).await
        }
    }
}

async fn attempts_page(
    store: &dyn Store,
    spec: &ExportSpec,
    after: Option<i64>,
    limit: u32,
) -> StoreResult<Page> {
    let attempts = store
        .list_scoped_attempts(&spec.attempt_scope(), after.map(Into::into), limit)
        .await?;
    Ok(Page {
        last_key: attempts.last().map(|attempt| attempt.id.0),
        rows: attempts.iter().map(attempt_row).collect(),
    })
}

fn attempt_row(attempt: &Attempt) -> Vec<Cell> {
    let graded = attempt_grade(attempt);
    vec![
        Cell::Int(attempt.id.0),
        Cell::Int(attempt.user_id.0),
        Cell::Int(attempt.challenge_id.0),
        Cell::Int(attempt.challenge_version),
        Cell::Text(attempt.status.to_string()),
        Cell::number(graded.map(|grade| grade.score)),
        Cell::number(graded.and_then(|grade| grade.execution_ms)),
        Cell::number(graded.and_then(|grade| grade.ratio)),
        Cell::time(Some(attempt.created_at)),
        Cell::time(attempt.finished_at),
        Cell::text(attempt.error.clone()),
        Cell::Text(attempt.query.clone()),
    ]
}

/// An attempt's grade once it is graded (every case of its version ran).
fn attempt_grade(attempt: &Attempt) -> Option<crate::jobs::Grade> {
    is_graded(attempt.status).then(|| grade(attempt.status, &attempt.cases, attempt.cases.len()))
}

fn is_graded(status: AttemptStatus) -> bool {
    matches!(
        status,
        AttemptStatus::Passed | AttemptStatus::Failed | AttemptStatus::Error
    )
}

fn run_row(item: RunItem) -> Vec<Cell> {
    vec![
        Cell::Int(item.item),
        Cell::Int(item.user_id.0),
        Cell::int(item.attempt_id.map(|id| id.0)),
        Cell::text(item.job_id.map(|id| id.to_string())),
        Cell::Text(item.state.to_string()),
        Cell::text(item.result.status.map(|status| status.to_string())),
        Cell::number(item.result.score),
        Cell::number(item.result.execution_ms),
        Cell::number(item.result.ratio),
        Cell::Int(i64::from(item.result.tries)),
        Cell::text(item.result.grader_id.map(|id| id.to_string())),
        Cell::text(item.result.error),
        Cell::text(item.note),
        Cell::time(item.finished_at),
    ]
}

/// The first columns of a gradebook row: the student.
async fn student_cells(store: &dyn Store, user_id: UserId) -> StoreResult<Vec<Cell>> {
    let user = store.get_user(user_id).await?;
    Ok(vec![
        Cell::Int(user_id.0),
        Cell::text(user.as_ref().map(|user| user.full_name.clone())),
        Cell::text(user.map(|user| user.email)),
    ])
}

/// A challenge's cells of a gradebook row, from the attempt that counts.
fn challenge_cells(attempt: Option<&Attempt>) -> [Cell; 6] {
    let Some(attempt) = attempt else {
        return [
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null,
        ];
    };
    let graded = attempt_grade(attempt);
    [
        Cell::Text(attempt.status.to_string()),
        Cell::number(graded.map(|grade| grade.score)),
        Cell::number(graded.and_then(|grade| grade.execution_ms)),
        Cell::number(graded.and_then(|grade| grade.ratio)),
        Cell::Int(attempt.id.0),
        Cell::time(Some(attempt.created_at)),
    ]
}

/// A page of the gradebook: one row per student with an attempt in scope,
/// each challenge's latest graded attempt (else the latest), and each
/// assessment's score (the latest manual score, else the computed one).
async fn gradebook_page(
    store: &dyn Store,
    assessments: &Assessments,
    spec: &ExportSpec,
    after: Option<i64>,
    limit: u32,
) -> StoreResult<Page> {
    let scope = spec.attempt_scope();
    let users = store
        .list_scoped_users(&scope, after.map(UserId), limit)
        .await?;
    let mut loaded: HashMap<i64, Option<Assessment>> = HashMap::new();
    let mut challenges: HashMap<ChallengeId, Option<Challenge>> = HashMap::new();
    let mut rows = Vec::with_capacity(users.len());
    for user_id in &users {
        let mut row = student_cells(store, *user_id).await?;
        let own = crate::store::exports::AttemptScope {
            user_id: Some(*user_id),
            ..scope.clone()
        };
        let mut counted: BTreeMap<ChallengeId, Attempt> = BTreeMap::new();
        for attempt in store.list_scoped_attempts(&own, None, 0).await? {
            let replaces = counted
                .get(&attempt.challenge_id)
                .is_none_or(|current| is_graded(attempt.status) || !is_graded(current.status));
            if replaces {
                counted.insert(attempt.challenge_id, attempt);
            }
        }
        for challenge_id in spec.challenge_ids.iter().flatten() {
            row.extend(challenge_cells(counted.get(challenge_id)));
        }
        for assessment_id in &spec.assessment_ids {
            if !loaded.contains_key(assessment_id) {
                let assessment = store.get_assessment(*assessment_id).await?;
                loaded.insert(*assessment_id, assessment);
            }
            let assessment = loaded.get(assessment_id).cloned().flatten();
            let score = match assessment {
                Some(assessment) => {
                    assessment_score(store, assessments, assessment, *user_id, &mut challenges)
                        .await?
                }
                None => None,
            };
            row.push(Cell::number(score));
        }
        rows.push(row);
    }
    Ok(Page {
        last_key: users.last().map(|user| user.0),
        rows,
    })
}

/// A student's score in an assessment: the latest manual score, else the
/// computed one; `None` without a session.
async fn assessment_score(
    store: &dyn Store,
    assessments: &Assessments,
    assessment: Assessment,
    user_id: UserId,
    challenges: &mut HashMap<ChallengeId, Option<Challenge>>,
) -> StoreResult<Option<f64>> {
    let manual = store
        .list_score_overrides(Some(assessment.id), Some(user_id))
        .await?;
    if let Some(latest) = manual.last() {
        return Ok(Some(latest.score));
    }
    let Some(session) = store
        .find_assessment_session(assessment.id, user_id)
        .await?
    else {
        return Ok(None);
    };
    let scored = async {
        let snapshot = assessments.snapshot(assessment, session).await?;
        assessments.score(&snapshot, challenges).await
    };
    match scored.await {
        Ok(score) => Ok(Some(score.score)),
        Err(error) => Err(StoreError::Backend(format!(
            "scoring an assessment session: {error}"
        ))),
    }
}

/// A page of a run's gradebook: a row per item (student), its challenge's
/// cells from the item's grade (the item's state where it has none).
async fn run_gradebook_page(
    store: &dyn Store,
    spec: &ExportSpec,
    run_id: RunId,
    after: Option<i64>,
    limit: u32,
) -> StoreResult<Page> {
    let items = store.list_run_items(run_id, None, after, limit).await?;
    let mut rows = Vec::with_capacity(items.len());
    for item in &items {
        let mut row = student_cells(store, item.user_id).await?;
        let attempt = match item.attempt_id {
            Some(id) => store.get_attempt(id).await?,
            None => None,
        };
        let status = match item.result.status {
            Some(status) => Some(status.to_string()),
            None if item.attempt_id.is_some() => Some(item.state.to_string()),
            None => None,
        };
        for _ in spec.challenge_ids.iter().flatten() {
            row.extend([
                Cell::text(status.clone()),
                Cell::number(item.result.score),
                Cell::number(item.result.execution_ms),
                Cell::number(item.result.ratio),
                Cell::int(item.attempt_id.map(|id| id.0)),
                Cell::time(attempt.as_ref().map(|attempt| attempt.created_at)),
            ]);
        }
        rows.push(row);
    }
    Ok(Page {
        last_key: items.last().map(|item| item.item),
        rows,
    })
}
