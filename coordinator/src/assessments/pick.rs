//! Which challenges a student gets: each zone picks `pick` of its pool with
//! a generator seeded per student. The generator is spelled out here
//! (splitmix64), not taken from a crate, so a `stable` pick stays the same
//! across releases.

use sqlarena_common::assessments::{Selection, Zone};

use crate::store::assessments::Question;

/// One step of splitmix64: a well-mixed 64-bit value from `state`.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform index below `bound` (> 0), by Lemire's multiply-shift (its
/// bias, below 2^-32 for pools of any real size, is negligible).
fn below(state: &mut u64, bound: usize) -> usize {
    ((u128::from(splitmix64(state)) * bound as u128) >> 64) as usize
}

/// The seed of a student's pick: `stable` depends only on the assessment
/// and the student; `random` mixes in `nonce` (fresh per session start).
pub fn seed(selection: Selection, assessment_id: i64, user_id: i64, nonce: u64) -> u64 {
    let mut state = (assessment_id as u64).rotate_left(32) ^ user_id as u64;
    let base = splitmix64(&mut state);
    match selection {
        Selection::Stable => base,
        Selection::Random => {
            let mut mixed = base ^ nonce;
            splitmix64(&mut mixed)
        }
    }
}

/// Picks each zone's challenges with `seed` (a partial Fisher-Yates
/// shuffle of the pool: every subset of size `pick` equally likely), in
/// zone order, numbered from 1. Zones must satisfy `pick <= pool.len()`.
pub fn pick_questions(zones: &[Zone], seed: u64) -> Vec<Question> {
    let mut state = seed;
    let mut questions = Vec::new();
    for (zone_index, zone) in zones.iter().enumerate() {
        let mut pool = zone.pool.clone();
        let pick = (zone.pick as usize).min(pool.len());
        for slot in 0..pick {
            let chosen = slot + below(&mut state, pool.len() - slot);
            pool.swap(slot, chosen);
            questions.push(Question {
                number: questions.len() as u32 + 1,
                zone: zone_index as u32,
                challenge_id: pool[slot],
                points: zone.points,
            });
        }
    }
    questions
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlarena_common::ChallengeId;

    fn zone(pool: Vec<i64>, pick: u32) -> Zone {
        Zone {
            pool: pool.into_iter().map(ChallengeId).collect(),
            pick,
            points: 10.0,
        }
    }

    #[test]
    fn stable_seeds_repeat_and_random_ones_vary() {
        let stable = |nonce| seed(Selection::Stable, 7, 42, nonce);
        assert_eq!(stable(1), stable(2), "stable ignores the nonce");
        assert_ne!(
            seed(Selection::Random, 7, 42, 1),
            seed(Selection::Random, 7, 42, 2)
        );
        assert_ne!(stable(0), seed(Selection::Stable, 7, 43, 0), "per student");
        let zones = [zone(vec![1, 2, 3, 4, 5], 2), zone(vec![10, 11, 12], 1)];
        assert_eq!(
            pick_questions(&zones, stable(0)),
            pick_questions(&zones, stable(9))
        );
    }

    #[test]
    fn picks_are_distinct_numbered_and_from_their_zone() {
        let zones = [zone(vec![1, 2, 3, 4, 5], 3), zone(vec![10, 11], 2)];
        for seed in 0..200 {
            let questions = pick_questions(&zones, seed);
            assert_eq!(questions.len(), 5);
            let numbers: Vec<u32> = questions.iter().map(|q| q.number).collect();
            assert_eq!(numbers, vec![1, 2, 3, 4, 5]);
            let mut ids: Vec<i64> = questions.iter().map(|q| q.challenge_id.0).collect();
            assert!(questions[..3]
                .iter()
                .all(|q| q.zone == 0 && q.challenge_id.0 < 10));
            assert!(questions[3..]
                .iter()
                .all(|q| q.zone == 1 && q.challenge_id.0 >= 10));
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), 5, "no challenge twice");
        }
    }

    /// Over many students, each challenge of a pool is picked equally
    /// often: a chi-squared test with 9 degrees of freedom at p = 0.001
    /// (critical value 27.88).
    #[test]
    fn random_picks_are_uniform() {
        let pool: Vec<i64> = (1..=10).collect();
        let zones = [zone(pool, 3)];
        let students = 20_000;
        let mut counts = [0u64; 10];
        for user_id in 0..students {
            let seed = seed(Selection::Random, 3, user_id, user_id as u64 * 7919);
            for question in pick_questions(&zones, seed) {
                counts[(question.challenge_id.0 - 1) as usize] += 1;
            }
        }
        let expected = (students * 3) as f64 / 10.0;
        let chi_squared: f64 = counts
            .iter()
            .map(|&count| (count as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi_squared < 27.88, "chi-squared {chi_squared}: {counts:?}");
    }
}
