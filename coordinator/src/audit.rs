//! The audit of grading as admins and professors read it: the case
//! audits of a job, and each grader's calibration (how fast its reference
//! runs are against the cluster's median grader), so that a slow or
//! overloaded machine stands out in the graders list.

use std::collections::HashMap;

use sqlarena_common::{CaseAudit, CaseResult, GraderId, JobOutcome, JobPayload, TestCaseId};

use crate::store::{Job, Store, StoreResult};

/// How many recent passed attempts calibration reads.
pub const CALIBRATION_ATTEMPTS: u32 = 2_000;

/// The case audits of `job`, by test case: from its outcome or progress
/// while it has them, otherwise (once applied, the job keeps neither)
/// from its attempt or its challenge version's init audits.
///
/// # Errors
/// Store failures.
pub async fn job_audits(store: &dyn Store, job: &Job) -> StoreResult<Vec<(TestCaseId, CaseAudit)>> {
    let kept = match &job.outcome {
        Some(JobOutcome::Attempt(outcome)) => case_audits(&outcome.cases),
        Some(JobOutcome::Init(outcome)) => outcome
            .expected
            .iter()
            .filter_map(|case| Some((case.test_case_id, case.audit.clone()?)))
            .collect(),
        None => case_audits(&job.progress),
    };
    if !kept.is_empty() || !job.applied {
        return Ok(kept);
    }
    match &job.payload {
        JobPayload::Init(init) => {
            store
                .list_init_audits(init.challenge_id, init.version)
                .await
        }
        // A run item's result went to its item, not to the attempt.
        JobPayload::Attempt(attempt) if attempt.run_item.is_some() => Ok(Vec::new()),
        JobPayload::Attempt(attempt) => Ok(store
            .get_attempt(attempt.attempt_id)
            .await?
            .map(|attempt| case_audits(&attempt.cases))
            .unwrap_or_default()),
    }
}

fn case_audits(cases: &[CaseResult]) -> Vec<(TestCaseId, CaseAudit)> {
    cases
        .iter()
        .filter_map(|case| Some((case.test_case_id, case.audit.clone()?)))
        .collect()
}

/// A grader's reference speed against the cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// The median grader's reference time over this grader's, on the test
    /// cases both measured: 1.0 for the median grader, 0.5 for one whose
    /// reference runs take twice as long. `None` until the grader shares a
    /// test case with another grader.
    pub reference_speed: Option<f64>,
    /// Reference timings of this grader it is computed from.
    pub samples: usize,
}

/// Reads the reference timings of the recent passed attempts and
/// calibrates every grader that made some.
///
/// # Errors
/// Store failures.
pub async fn grader_calibration(store: &dyn Store) -> StoreResult<HashMap<GraderId, Calibration>> {
    let cases = store.list_recent_passed_cases(CALIBRATION_ATTEMPTS).await?;
    Ok(calibrate(cases.iter().filter_map(reference_sample)))
}

/// One reference timing: the grader, the test case, its median time.
fn reference_sample(case: &CaseResult) -> Option<(GraderId, TestCaseId, f64)> {
    let audit = case.audit.as_ref()?;
    let reference_ms = audit.reference_median_ms.or(case.reference_ms)?;
    (reference_ms.is_finite() && reference_ms > 0.0).then_some((
        audit.grader_id?,
        case.test_case_id,
        reference_ms,
    ))
}

/// Calibrates graders from reference timings. Per test case, each
/// grader's median time is set against the median of the graders that
/// timed it (a case timed by one grader says nothing); a grader's index is
/// the median of those ratios over its cases, and its speed is the
/// median grader's index over its own. Medians throughout, so one stalled
/// run or one odd case does not move a grader.
pub fn calibrate(
    samples: impl IntoIterator<Item = (GraderId, TestCaseId, f64)>,
) -> HashMap<GraderId, Calibration> {
    let mut by_case: HashMap<TestCaseId, HashMap<GraderId, Vec<f64>>> = HashMap::new();
    let mut counts: HashMap<GraderId, usize> = HashMap::new();
    for (grader_id, test_case_id, reference_ms) in samples {
        by_case
            .entry(test_case_id)
            .or_default()
            .entry(grader_id)
            .or_default()
            .push(reference_ms);
        *counts.entry(grader_id).or_default() += 1;
    }
    let mut ratios: HashMap<GraderId, Vec<f64>> = HashMap::new();
    for graders in by_case.values().filter(|graders| graders.len() >= 2) {
        let medians: Vec<(GraderId, f64)> = graders
            .iter()
            .filter_map(|(grader_id, times)| Some((*grader_id, median(times)?)))
            .collect();
        let times: Vec<f64> = medians.iter().map(|(_, time)| *time).collect();
        let Some(cluster) = median(&times) else {
            continue;
        };
        for (grader_id, time) in medians {
            ratios.entry(grader_id).or_default().push(time / cluster);
        }
    }
    let indexes: HashMap<GraderId, f64> = ratios
        .iter()
        .filter_map(|(grader_id, ratios)| Some((*grader_id, median(ratios)?)))
        .collect();
    let all: Vec<f64> = indexes.values().copied().collect();
    let cluster_index = median(&all);
    counts
        .into_iter()
        .map(|(grader_id, samples)| {
            let reference_speed = match (cluster_index, indexes.get(&grader_id)) {
                (Some(cluster), Some(index)) if *index > 0.0 => Some(cluster / index),
                _ => None,
            };
            (
                grader_id,
                Calibration {
                    reference_speed,
                    samples,
                },
            )
        })
        .collect()
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grader_twice_as_slow_as_the_others_gets_half_their_speed() {
        let (fast, median_grader, slow, alone) = (
            GraderId::new_v7(),
            GraderId::new_v7(),
            GraderId::new_v7(),
            GraderId::new_v7(),
        );
        let mut samples = Vec::new();
        for case in 1..=3 {
            let base = f64::from(case);
            samples.push((fast, TestCaseId(case.into()), base * 0.9));
            samples.push((median_grader, TestCaseId(case.into()), base));
            samples.push((median_grader, TestCaseId(case.into()), base * 50.0));
            samples.push((median_grader, TestCaseId(case.into()), base));
            samples.push((slow, TestCaseId(case.into()), base * 2.0));
        }
        // A case no other grader timed calibrates nothing.
        samples.push((alone, TestCaseId(99), 5.0));
        let calibration = calibrate(samples);
        let speed = |grader: GraderId| calibration[&grader].reference_speed.unwrap();
        assert!(
            (speed(median_grader) - 1.0).abs() < 1e-9,
            "one stalled run does not move it"
        );
        assert!((speed(slow) - 0.5).abs() < 1e-9);
        assert!(speed(fast) > 1.0);
        assert_eq!(calibration[&median_grader].samples, 9);
        assert_eq!(calibration[&alone].reference_speed, None);
        assert_eq!(calibration[&alone].samples, 1);
    }
}
