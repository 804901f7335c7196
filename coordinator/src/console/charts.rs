//! The overview's charts of the last hour, drawn on the server as SVG from
//! the coordinator's own history (per-minute rows kept in the store, see
//! [`crate::store::history`], so they survive a restart, plus the minute
//! not yet written): throughput, submit-to-graded latency and queue depth,
//! one bar per minute.

use chrono::{DateTime, Duration, Utc};
use maud::{html, Markup};

use crate::store::history::{minute_of, MinuteSample};

/// Minutes shown.
pub const MINUTES: usize = 60;

/// The first minute shown when it is `now`: the last bar is the current
/// minute.
pub fn first_minute(now: DateTime<Utc>) -> DateTime<Utc> {
    minute_of(now) - Duration::minutes(MINUTES as i64 - 1)
}

/// One value per minute of the last hour, oldest first.
pub struct Series {
    /// Jobs finished (DONE or FAILED) in each minute.
    pub throughput: Vec<f64>,
    /// Mean queued-to-finished time of the jobs finished in each minute,
    /// in seconds (0 for a minute without any).
    pub latency_secs: Vec<f64>,
    /// Jobs waiting in the queue, sampled at the end of each minute (the
    /// current minute: now).
    pub queue_depth: Vec<f64>,
}

/// Sums `samples` (every lane, stored and not yet written) into the minutes
/// of the hour up to `now`; `queued_now` is the current minute's depth.
pub fn series(samples: &[MinuteSample], queued_now: u64, now: DateTime<Utc>) -> Series {
    let start = first_minute(now);
    let mut throughput = vec![0.0; MINUTES];
    let mut latency_sum = vec![0.0; MINUTES];
    let mut latency_count = vec![0.0; MINUTES];
    let mut queue_depth = vec![0.0; MINUTES];
    for sample in samples {
        let offset = (sample.minute - start).num_minutes();
        let Some(minute) = usize::try_from(offset)
            .ok()
            .filter(|minute| *minute < MINUTES)
        else {
            continue;
        };
        throughput[minute] += (sample.completed + sample.failed) as f64;
        latency_sum[minute] += sample.latency_ms_sum as f64 / 1000.0;
        latency_count[minute] += sample.latency_count as f64;
        queue_depth[minute] += sample.queue_depth.unwrap_or(0) as f64;
    }
    queue_depth[MINUTES - 1] = queued_now as f64;
    let latency_secs = latency_sum
        .iter()
        .zip(&latency_count)
        .map(|(sum, count)| if *count > 0.0 { sum / count } else { 0.0 })
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
    use sqlarena_common::Lane;

    use super::*;

    #[test]
    fn minutes_fall_in_their_bars() {
        let now = Utc::now();
        let sample =
            |minutes_ago: i64, lane: Lane, completed: u64, depth: Option<u64>| MinuteSample {
                minute: minute_of(now) - Duration::minutes(minutes_ago),
                lane,
                completed,
                failed: 1,
                latency_ms_sum: 3_000 * (completed + 1),
                latency_count: completed + 1,
                queue_depth: depth,
            };
        let samples = [
            sample(30, Lane::Fast, 1, Some(4)),
            sample(30, Lane::Slow, 2, Some(3)),
            // Older than the hour: left out.
            sample(60, Lane::Fast, 9, Some(9)),
            sample(0, Lane::Fast, 0, None),
        ];
        let series = series(&samples, 5, now);
        assert_eq!(series.throughput.iter().sum::<f64>(), 6.0);
        assert_eq!(series.throughput[MINUTES - 31], 5.0);
        assert!((series.latency_secs[MINUTES - 31] - 3.0).abs() < 1e-9);
        assert_eq!(series.queue_depth[MINUTES - 31], 7.0);
        assert_eq!(series.queue_depth[MINUTES - 1], 5.0);
        assert_eq!(series.queue_depth[0], 0.0);
        let chart = bar_chart("t", "Throughput", "jobs", &series.throughput).into_string();
        assert!(
            chart.contains("<svg") && chart.contains("<rect") && chart.contains("role=\"img\"")
        );
    }
}
