//! Timing statistics: medians, minimums and pairwise ratios.
//!
//! A test case is timed in rounds that alternate the student query and the
//! reference on the same connection; the ratio is taken pair by pair so
//! that load changes during the run affect both sides alike.

use std::time::Duration;

/// Shortest duration a ratio divides by, so a reference that measures as
/// zero cannot produce an infinite ratio.
const MIN_DIVISOR_MS: f64 = 1e-3;

/// Converts a duration to fractional milliseconds.
pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Returns the median of `values` (the mean of the middle two for an even
/// count), or `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
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

/// Returns the smallest of `values`, or `None` when empty.
pub fn minimum(values: &[f64]) -> Option<f64> {
    values.iter().copied().min_by(f64::total_cmp)
}

/// How many timed rounds to run: `times_to_run`, or as many rounds as fit
/// in the time `left` when each costs `round`, at least one. Keeps a job
/// with slow queries within its deadline, timed on fewer rounds.
pub fn timed_rounds(times_to_run: u32, left: Option<Duration>, round: Duration) -> u32 {
    let wanted = times_to_run.max(1);
    let Some(left) = left else {
        return wanted;
    };
    let fit = left.as_nanos() / round.as_nanos().max(1);
    u32::try_from(fit).unwrap_or(u32::MAX).clamp(1, wanted)
}

/// The timings of one test case: paired student and reference runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaseTimings {
    pub student_ms: Vec<f64>,
    pub reference_ms: Vec<f64>,
}

/// What a test case's timings add up to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimingSummary {
    /// Median of the student's runs.
    pub execution_ms: f64,
    /// Fastest student run.
    pub min_ms: f64,
    /// Median of the reference's runs.
    pub reference_ms: f64,
    /// Median of the pairwise student/reference ratios.
    pub ratio: f64,
}

impl CaseTimings {
    /// Records one round: a student run and the reference run paired with it.
    pub fn push(&mut self, student: Duration, reference: Duration) {
        self.student_ms.push(millis(student));
        self.reference_ms.push(millis(reference));
    }

    /// Summarises the rounds, or returns `None` when there are none.
    pub fn summary(&self) -> Option<TimingSummary> {
        let ratios: Vec<f64> = self
            .student_ms
            .iter()
            .zip(&self.reference_ms)
            .map(|(student, reference)| student.max(MIN_DIVISOR_MS) / reference.max(MIN_DIVISOR_MS))
            .collect();
        Some(TimingSummary {
            execution_ms: median(&self.student_ms)?,
            min_ms: minimum(&self.student_ms)?,
            reference_ms: median(&self.reference_ms)?,
            ratio: median(&ratios)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_shrink_to_fit_the_time_left_but_never_below_one() {
        let ms = Duration::from_millis;
        assert_eq!(timed_rounds(5, None, ms(100)), 5);
        assert_eq!(timed_rounds(0, None, ms(100)), 1);
        assert_eq!(timed_rounds(5, Some(ms(10_000)), ms(100)), 5);
        assert_eq!(timed_rounds(20, Some(ms(1_050)), ms(100)), 10);
        assert_eq!(timed_rounds(20, Some(ms(50)), ms(100)), 1);
        assert_eq!(timed_rounds(20, Some(ms(0)), ms(0)), 1);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(minimum(&[3.0, 1.5, 2.0]), Some(1.5));
    }

    #[test]
    fn ratio_is_the_median_of_pairwise_ratios() {
        let mut timings = CaseTimings::default();
        timings.push(Duration::from_millis(10), Duration::from_millis(5));
        timings.push(Duration::from_millis(40), Duration::from_millis(10));
        timings.push(Duration::from_millis(9), Duration::from_millis(3));
        let summary = timings.summary().unwrap();
        assert_eq!(summary.ratio, 3.0);
        assert_eq!(summary.execution_ms, 10.0);
        assert_eq!(summary.min_ms, 9.0);
        assert_eq!(summary.reference_ms, 5.0);
        assert!(CaseTimings::default().summary().is_none());
    }

    #[test]
    fn zero_reference_time_gives_a_finite_ratio() {
        let mut timings = CaseTimings::default();
        timings.push(Duration::from_micros(2), Duration::ZERO);
        assert!(timings.summary().unwrap().ratio.is_finite());
    }
}
