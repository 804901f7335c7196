//! Scores: per question from the submissions that count, per session as
//! the sum, replaced by the latest manual score when there is one.

use sqlarena_common::assessments::ScorePolicy;
use sqlarena_common::{AttemptStatus, ChallengeType};

use crate::store::Attempt;

/// What one graded submission earns out of `points`: nothing unless it
/// passed every test case; then `points`, of which the share
/// `performance_credit` scales with speed against the reference (FE: full
/// at or below the reference's time, `points x 1/ratio` slower; SE the
/// other way round), using the geometric mean of the per-case ratios.
pub fn attempt_score(
    attempt: &Attempt,
    challenge_type: ChallengeType,
    points: f64,
    performance_credit: f64,
) -> f64 {
    if attempt.status != AttemptStatus::Passed {
        return 0.0;
    }
    let ratios: Vec<f64> = attempt
        .cases
        .iter()
        .filter_map(|case| case.ratio)
        .filter(|ratio| ratio.is_finite() && *ratio > 0.0)
        .collect();
    let performance = if ratios.is_empty() {
        1.0
    } else {
        let mean = (ratios.iter().map(|ratio| ratio.ln()).sum::<f64>() / ratios.len() as f64).exp();
        match challenge_type {
            ChallengeType::FE => (1.0 / mean).min(1.0),
            ChallengeType::SE => mean.min(1.0),
        }
    };
    let credit = performance_credit.clamp(0.0, 1.0);
    points * ((1.0 - credit) + credit * performance)
}

/// The score of a question from its graded submissions, in receipt order,
/// each with its score and whether it passed: `best` takes the highest,
/// `last` the last that passed. Returns the score and the index counted.
pub fn question_score(policy: ScorePolicy, graded: &[(f64, bool)]) -> (f64, Option<usize>) {
    let counted = match policy {
        ScorePolicy::Best => graded
            .iter()
            .enumerate()
            .filter(|(_, (_, passed))| *passed)
            .max_by(|(_, (a, _)), (_, (b, _))| a.total_cmp(b))
            .map(|(index, _)| index),
        ScorePolicy::Last => graded.iter().rposition(|(_, passed)| *passed),
    };
    (counted.map_or(0.0, |index| graded[index].0), counted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_takes_the_highest_and_last_the_last_passing() {
        let graded = [
            (5.0, true),
            (8.0, true),
            (0.0, false),
            (6.0, true),
            (0.0, false),
        ];
        assert_eq!(question_score(ScorePolicy::Best, &graded), (8.0, Some(1)));
        assert_eq!(question_score(ScorePolicy::Last, &graded), (6.0, Some(3)));
        assert_eq!(
            question_score(ScorePolicy::Best, &[(0.0, false)]),
            (0.0, None)
        );
    }
}
