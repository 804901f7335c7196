//! Timing statistics: medians, minimums, pairwise ratios and how sure a
//! ratio is.
//!
//! A test case is timed in rounds that alternate the student query and the
//! reference (each on its own connection); the ratio is taken pair by pair
//! so that load changes during the run affect both sides alike. Two rules
//! make a ratio trustworthy on a busy machine:
//!
//! - **Stalled rounds are discarded.** A round in which *both* sides ran
//!   more than [`STALL_FACTOR`] times their own median was slowed by the
//!   machine (a scheduler stall, another process), not by either query; it
//!   says nothing about their ratio. At most half the rounds are discarded.
//! - **The ratio comes with a 95 % confidence interval**: the median of the
//!   kept rounds' ratios, and the order statistics around it that bound the
//!   median with 95 % confidence (a distribution-free interval). Grading
//!   keeps running rounds, within its time budget, until the interval's
//!   half-width is at most [`TARGET_HALF_WIDTH`] of the ratio.

use std::time::Duration;

/// Shortest duration a ratio divides by, so a reference that measures as
/// zero cannot produce an infinite ratio.
const MIN_DIVISOR_MS: f64 = 1e-3;

/// A round whose two sides both ran this many times their medians was
/// stalled by the machine.
pub const STALL_FACTOR: f64 = 1.3;

/// The relative half-width of the ratio's 95 % confidence interval that
/// ends the timing of a case early.
pub const TARGET_HALF_WIDTH: f64 = 0.05;

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
    /// Median of the student's kept runs.
    pub execution_ms: f64,
    /// Fastest student run.
    pub min_ms: f64,
    /// Median of the reference's kept runs.
    pub reference_ms: f64,
    /// Fastest reference run.
    pub reference_min_ms: f64,
    /// Median of the kept rounds' student/reference ratios.
    pub ratio: f64,
    /// The 95 % confidence interval of that median.
    pub ratio_low: f64,
    pub ratio_high: f64,
    /// Rounds run, and how many of them were discarded as stalled.
    pub rounds: usize,
    pub discarded: usize,
}

impl TimingSummary {
    /// The interval's half-width relative to the ratio.
    pub fn half_width(&self) -> f64 {
        (self.ratio_high - self.ratio_low) / 2.0 / self.ratio.max(f64::MIN_POSITIVE)
    }

    /// True when the interval is as narrow as grading aims for.
    pub fn is_precise(&self) -> bool {
        self.half_width() <= TARGET_HALF_WIDTH
    }
}

/// The 95 % confidence interval of the median of `sorted` values: the
/// order statistics n/2 -/+ 0.98 sqrt(n) (normal approximation of the
/// binomial), the whole range for small samples.
pub fn median_interval(sorted: &[f64]) -> Option<(f64, f64)> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let spread = 0.98 * (n as f64).sqrt();
    let low = ((n as f64 / 2.0 - spread).floor() as isize).max(1) as usize;
    let high = ((n as f64 / 2.0 + spread).ceil() as usize + 1).min(n);
    Some((sorted[low - 1], sorted[high - 1]))
}

impl CaseTimings {
    /// Records one round: a student run and the reference run paired with it.
    pub fn push(&mut self, student: Duration, reference: Duration) {
        self.student_ms.push(millis(student));
        self.reference_ms.push(millis(reference));
    }

    /// Returns the number of rounds recorded.
    pub fn rounds(&self) -> usize {
        self.student_ms.len()
    }

    /// The rounds kept: all but those in which both sides ran over
    /// [`STALL_FACTOR`] times their medians (at most half are dropped,
    /// the most stalled first).
    fn kept(&self) -> Vec<usize> {
        let (Some(student), Some(reference)) =
            (median(&self.student_ms), median(&self.reference_ms))
        else {
            return Vec::new();
        };
        let stall = |i: usize| {
            (self.student_ms[i] / student.max(MIN_DIVISOR_MS))
                .min(self.reference_ms[i] / reference.max(MIN_DIVISOR_MS))
        };
        let mut stalled: Vec<usize> = (0..self.rounds())
            .filter(|&i| stall(i) > STALL_FACTOR)
            .collect();
        stalled.sort_by(|&a, &b| stall(b).total_cmp(&stall(a)));
        stalled.truncate(self.rounds() / 2);
        (0..self.rounds())
            .filter(|i| !stalled.contains(i))
            .collect()
    }

    /// Summarises the rounds, or returns `None` when there are none.
    pub fn summary(&self) -> Option<TimingSummary> {
        let kept = self.kept();
        let student: Vec<f64> = kept.iter().map(|&i| self.student_ms[i]).collect();
        let reference: Vec<f64> = kept.iter().map(|&i| self.reference_ms[i]).collect();
        let mut ratios: Vec<f64> = student
            .iter()
            .zip(&reference)
            .map(|(student, reference)| student.max(MIN_DIVISOR_MS) / reference.max(MIN_DIVISOR_MS))
            .collect();
        ratios.sort_by(f64::total_cmp);
        let (ratio_low, ratio_high) = median_interval(&ratios)?;
        Some(TimingSummary {
            execution_ms: median(&student)?,
            min_ms: minimum(&self.student_ms)?,
            reference_ms: median(&reference)?,
            reference_min_ms: minimum(&self.reference_ms)?,
            ratio: median(&ratios)?,
            ratio_low,
            ratio_high,
            rounds: self.rounds(),
            discarded: self.rounds() - kept.len(),
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
        timings.push(Duration::from_millis(12), Duration::from_millis(4));
        timings.push(Duration::from_millis(9), Duration::from_millis(3));
        let summary = timings.summary().unwrap();
        assert_eq!(summary.ratio, 3.0);
        assert_eq!(summary.execution_ms, 10.0);
        assert_eq!(summary.min_ms, 9.0);
        assert_eq!(summary.reference_ms, 4.0);
        assert_eq!(summary.discarded, 0);
        assert!(CaseTimings::default().summary().is_none());
    }

    #[test]
    fn rounds_stalled_on_both_sides_are_discarded() {
        let mut timings = CaseTimings::default();
        for _ in 0..9 {
            timings.push(Duration::from_millis(20), Duration::from_millis(10));
        }
        // A stall slows both sides together: the ratio would be 1.0.
        timings.push(Duration::from_millis(200), Duration::from_millis(200));
        // One side slow alone is a real measurement and stays.
        timings.push(Duration::from_millis(40), Duration::from_millis(10));
        let summary = timings.summary().unwrap();
        assert_eq!((summary.rounds, summary.discarded), (11, 1));
        assert_eq!(summary.ratio, 2.0);
        assert_eq!(summary.reference_ms, 10.0);
    }

    #[test]
    fn never_more_than_half_the_rounds_are_discarded() {
        let mut timings = CaseTimings::default();
        for i in 0..6 {
            let ms = if i % 2 == 0 { 10 } else { 100 };
            timings.push(Duration::from_millis(ms), Duration::from_millis(ms));
        }
        assert!(timings.summary().unwrap().discarded <= 3);
    }

    #[test]
    fn the_interval_narrows_as_rounds_agree() {
        let noisy = [0.9, 1.1, 1.0, 1.3, 0.8, 1.0];
        let mut sorted = noisy.to_vec();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(median_interval(&sorted), Some((0.8, 1.3)));
        let mut timings = CaseTimings::default();
        for i in 0..60u64 {
            timings.push(
                Duration::from_micros(1000 + i % 3),
                Duration::from_micros(1000),
            );
        }
        let summary = timings.summary().unwrap();
        assert!(summary.ratio_low <= summary.ratio && summary.ratio <= summary.ratio_high);
        assert!(summary.is_precise(), "{summary:?}");
        let mut few = CaseTimings::default();
        for (student, reference) in [(10, 10), (14, 10), (8, 10)] {
            few.push(
                Duration::from_millis(student),
                Duration::from_millis(reference),
            );
        }
        assert!(!few.summary().unwrap().is_precise());
    }

    #[test]
    fn zero_reference_time_gives_a_finite_ratio() {
        let mut timings = CaseTimings::default();
        timings.push(Duration::from_micros(2), Duration::ZERO);
        assert!(timings.summary().unwrap().ratio.is_finite());
    }
}
