//! The overview's charts of the last hour, drawn on the server as SVG from
//! the coordinator's own history (its jobs, kept in the store, so they
//! survive a restart): throughput, submit-to-graded latency and queue
//! depth, one bar per minute.

use chrono::{DateTime, Duration, Utc};
use maud::{html, Markup};
use sqlarena_common::JobState;

pub use crate::store::console::JobTimes;

/// Minutes shown.
pub const MINUTES: usize = 60;

/// One value per minute of the last hour, oldest first.
pub struct Series {
    /// Jobs finished (DONE or FAILED) in each minute.
    pub throughput: Vec<f64>,
    /// Median queued-to-finished time of the jobs finished in each minute,
    /// in seconds (0 for a minute without any).
    pub latency_secs: Vec<f64>,
    /// Jobs waiting in the queue at the end of each minute.
    pub queue_depth: Vec<f64>,
}

/// Buckets `jobs` into the minutes of the hour before `now`.
pub fn series(jobs: &[JobTimes], now: DateTime<Utc>) -> Series {
    let start = now - Duration::minutes(MINUTES as i64);
    let minute_of = |at: DateTime<Utc>| -> Option<usize> {
        let offset = (at - start).num_seconds();
        (0..MINUTES as i64 * 60)
            .contains(&offset)
            .then_some((offset / 60) as usize)
    };
    let mut throughput = vec![0.0; MINUTES];
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); MINUTES];
    for job in jobs {
        let finished = matches!(job.state, JobState::Done | JobState::Failed);
        if let (true, Some(at)) = (finished, job.finished_at) {
            if let Some(minute) = minute_of(at) {
                throughput[minute] += 1.0;
                latencies[minute].push((at - job.created_at).num_milliseconds() as f64 / 1000.0);
            }
        }
    }
    let latency_secs = latencies
        .into_iter()
        .map(|mut values| {
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(0.0)
        })
        .collect();
    let queue_depth = (1..=MINUTES)
        .map(|minute| {
            let at = start + Duration::minutes(minute as i64);
            let left_queue = |job: &JobTimes| match (job.leased_at, job.finished_at) {
                (Some(leased), _) => leased <= at,
                (None, Some(finished)) => finished <= at,
                (None, None) => false,
            };
            jobs.iter()
                .filter(|job| job.created_at <= at && !left_queue(job))
                .count() as f64
        })
        .collect();
    Series {
        throughput,
        latency_secs,
        queue_depth,
    }
}

/// A bar chart of one value per minute, with its largest value on the axis.
pub fn bar_chart(id: &str, title: &str, unit: &str, values: &[f64]) -> Markup {
    const WIDTH: f64 = 400.0;
    const HEIGHT: f64 = 150.0;
    const LEFT: f64 = 36.0;
    const BOTTOM: f64 = 20.0;
    let top = values.iter().copied().fold(0.0, f64::max);
    let scale = if top > 0.0 {
        (HEIGHT - BOTTOM - 10.0) / top
    } else {
        0.0
    };
    let slot = (WIDTH - LEFT) / values.len().max(1) as f64;
    let total: f64 = values.iter().sum();
    let label = format!(
        "{title} over the last hour, per minute: at most {} {unit}",
        format_value(top)
    );
    html! {
        figure {
            figcaption { strong { (title) } " (" (unit) ", per minute)" }
            svg.chart id=(id) viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(label)
                xmlns="http://www.w3.org/2000/svg" data-total=(total) {
                title { (label) }
                line x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH) y2=(HEIGHT - BOTTOM) stroke="#b8bfcc" {}
                text x=(LEFT - 4.0) y="14" text-anchor="end" font-size="12" fill="#5b6475" { (format_value(top)) }
                text x=(LEFT - 4.0) y=(HEIGHT - BOTTOM) text-anchor="end" font-size="12" fill="#5b6475" { "0" }
                text x=(LEFT) y=(HEIGHT - 4.0) font-size="12" fill="#5b6475" { "−60 min" }
                text x=(WIDTH) y=(HEIGHT - 4.0) text-anchor="end" font-size="12" fill="#5b6475" { "now" }
                @for (minute, value) in values.iter().enumerate() {
                    @if *value > 0.0 {
                        @let height = value * scale;
                        rect x=(format!("{:.1}", LEFT + minute as f64 * slot + 1.0))
                            y=(format!("{:.1}", HEIGHT - BOTTOM - height))
                            width=(format!("{:.1}", (slot - 2.0).max(1.0)))
                            height=(format!("{:.1}", height)) fill="#1f5fbf" {
                            title { (format_value(*value)) " " (unit) }
                        }
                    }
                }
            }
        }
    }
}

fn format_value(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_fall_in_their_minutes() {
        let now = Utc::now();
        let ago = |minutes: i64| now - Duration::minutes(minutes);
        let jobs = [
            // Queued 30 min ago, graded 2 s later.
            JobTimes {
                state: JobState::Done,
                created_at: ago(30),
                leased_at: Some(ago(30)),
                finished_at: Some(ago(30) + Duration::seconds(2)),
            },
            // Still waiting since 10 min ago.
            JobTimes {
                state: JobState::Queued,
                created_at: ago(10),
                leased_at: None,
                finished_at: None,
            },
            // Cancelled: not throughput.
            JobTimes {
                state: JobState::Cancelled,
                created_at: ago(6),
                leased_at: None,
                finished_at: Some(ago(4)),
            },
        ];
        let series = series(&jobs, now);
        assert_eq!(series.throughput.iter().sum::<f64>(), 1.0);
        assert_eq!(series.throughput[29] + series.throughput[30], 1.0);
        assert!(series
            .latency_secs
            .iter()
            .any(|secs| (*secs - 2.0).abs() < 0.01));
        assert_eq!(series.queue_depth[MINUTES - 1], 1.0);
        assert_eq!(series.queue_depth[MINUTES - 6], 2.0);
        assert_eq!(series.queue_depth[10], 0.0);
        let chart = bar_chart("t", "Throughput", "jobs", &series.throughput).into_string();
        assert!(
            chart.contains("<svg") && chart.contains("<rect") && chart.contains("role=\"img\"")
        );
    }
}
