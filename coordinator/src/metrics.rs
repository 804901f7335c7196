//! Process-local counters rendered as Prometheus text at `/metrics`, together
//! with gauges read from the store (queue depth, leases, graders).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use sqlarena_common::GraderState;

use crate::store::{Page, Store, StoreResult};

/// Upper bounds (seconds) of the job duration histogram buckets.
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0,
];

/// Counters since this coordinator started.
#[derive(Debug, Default)]
pub struct Metrics {
    pub jobs_enqueued: AtomicU64,
    pub leases_granted: AtomicU64,
    pub jobs_completed: AtomicU64,
    pub jobs_failed: AtomicU64,
    pub requeues: AtomicU64,
    pub stale_lease_rejections: AtomicU64,
    pub graders_declared_dead: AtomicU64,
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_micros: AtomicU64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long a job took from lease to result.
    pub fn observe_job_duration(&self, seconds: f64) {
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.duration_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Renders every metric in the Prometheus text format.
    ///
    /// # Errors
    /// Fails when the store cannot be read.
    pub async fn render(&self, store: &dyn Store) -> StoreResult<String> {
        let mut out = String::new();
        let now = Utc::now();
        let lanes = store.lane_stats().await?;
        gauge_header(&mut out, "sqlarena_queue_depth", "Jobs queued per lane.");
        for stats in &lanes {
            let _ = writeln!(
                out,
                "sqlarena_queue_depth{{lane=\"{}\"}} {}",
                stats.lane, stats.queued
            );
        }
        gauge_header(
            &mut out,
            "sqlarena_queue_oldest_age_seconds",
            "Age of the oldest queued job per lane.",
        );
        for stats in &lanes {
            let age = stats
                .oldest_queued_at
                .map(|at| (now - at).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            let _ = writeln!(
                out,
                "sqlarena_queue_oldest_age_seconds{{lane=\"{}\"}} {age}",
                stats.lane
            );
        }
        gauge_header(
            &mut out,
            "sqlarena_leases_held",
            "Jobs currently leased per lane.",
        );
        for stats in &lanes {
            let _ = writeln!(
                out,
                "sqlarena_leases_held{{lane=\"{}\"}} {}",
                stats.lane, stats.leased
            );
        }
        let graders = store.list_graders(Page::all()).await?;
        gauge_header(&mut out, "sqlarena_graders", "Graders by state.");
        for state in [GraderState::Alive, GraderState::Draining, GraderState::Dead] {
            let count = graders
                .iter()
                .filter(|grader| grader.state == state)
                .count();
            let _ = writeln!(out, "sqlarena_graders{{state=\"{state}\"}} {count}");
        }
        let counters = [
            (
                "sqlarena_jobs_enqueued_total",
                "Jobs queued.",
                &self.jobs_enqueued,
            ),
            (
                "sqlarena_leases_granted_total",
                "Leases handed to graders.",
                &self.leases_granted,
            ),
            (
                "sqlarena_jobs_completed_total",
                "Job results recorded.",
                &self.jobs_completed,
            ),
            (
                "sqlarena_jobs_failed_total",
                "Jobs that ended FAILED.",
                &self.jobs_failed,
            ),
            (
                "sqlarena_requeues_total",
                "Leases taken back and requeued.",
                &self.requeues,
            ),
            (
                "sqlarena_stale_lease_rejections_total",
                "Grader calls rejected with 409 for a stale lease.",
                &self.stale_lease_rejections,
            ),
            (
                "sqlarena_graders_declared_dead_total",
                "Graders declared dead.",
                &self.graders_declared_dead,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
        let name = "sqlarena_job_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from lease to recorded result.\n# TYPE {name} histogram"
        );
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.duration_buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.duration_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.duration_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
        Ok(out)
    }
}

fn gauge_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_into_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.observe_job_duration(0.02);
        metrics.observe_job_duration(3.0);
        assert_eq!(metrics.duration_buckets[0].load(Ordering::Relaxed), 0);
        assert_eq!(metrics.duration_buckets[2].load(Ordering::Relaxed), 1);
        assert_eq!(
            metrics.duration_buckets[DURATION_BUCKETS.len() - 1].load(Ordering::Relaxed),
            2
        );
        assert_eq!(metrics.duration_count.load(Ordering::Relaxed), 2);
    }
}
