//! The coordinator's Prometheus metrics at `/metrics`, through
//! `prometheus-client` (OpenMetrics text): process-local counters, the job
//! duration histogram, HTTP requests by method, matched route and status,
//! and gauges read from the store when scraped (queue depth, leases,
//! graders).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::Utc;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sqlarena_common::GraderState;

use crate::store::{Page, Store, StoreResult};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the job duration histogram buckets.
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0,
];

/// Upper bounds (seconds) of the HTTP request duration buckets.
const REQUEST_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5, 30.0];

/// The route label of a request no route matched (kept apart so that
/// probes of random paths cannot grow the label set).
const UNMATCHED_ROUTE: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabels {
    lane: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric of this coordinator since it started, and the registry
/// that renders them.
#[derive(Debug)]
pub struct Metrics {
    pub jobs_enqueued: Counter,
    pub leases_granted: Counter,
    pub jobs_completed: Counter,
    pub jobs_failed: Counter,
    pub requeues: Counter,
    pub stale_lease_rejections: Counter,
    pub graders_declared_dead: Counter,
    job_duration: Histogram,
    http_requests: Family<RequestLabels, Counter>,
    http_request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    queue_depth: Family<LaneLabels, Gauge>,
    queue_oldest_age: Family<LaneLabels, FloatGauge>,
    leases_held: Family<LaneLabels, Gauge>,
    graders: Family<StateLabels, Gauge>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut metrics = Metrics {
            jobs_enqueued: Counter::default(),
            leases_granted: Counter::default(),
            jobs_completed: Counter::default(),
            jobs_failed: Counter::default(),
            requeues: Counter::default(),
            stale_lease_rejections: Counter::default(),
            graders_declared_dead: Counter::default(),
            job_duration: Histogram::new(DURATION_BUCKETS),
            http_requests: Family::default(),
            http_request_duration: Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS)),
            queue_depth: Family::default(),
            queue_oldest_age: Family::default(),
            leases_held: Family::default(),
            graders: Family::default(),
            registry: Registry::default(),
        };
        // Help texts without the final full stop: the registry adds it.
        let registry = &mut metrics.registry;
        registry.register(
            "sqlarena_queue_depth",
            "Jobs queued per lane",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "sqlarena_queue_oldest_age_seconds",
            "Age of the oldest queued job per lane",
            metrics.queue_oldest_age.clone(),
        );
        registry.register(
            "sqlarena_leases_held",
            "Jobs currently leased per lane",
            metrics.leases_held.clone(),
        );
        registry.register(
            "sqlarena_graders",
            "Graders by state",
            metrics.graders.clone(),
        );
        // Counters are named without `_total`: the registry appends it.
        for (name, help, counter) in [
            (
                "sqlarena_jobs_enqueued",
                "Jobs queued",
                &metrics.jobs_enqueued,
            ),
            (
                "sqlarena_leases_granted",
                "Leases handed to graders",
                &metrics.leases_granted,
            ),
            (
                "sqlarena_jobs_completed",
                "Job results recorded",
                &metrics.jobs_completed,
            ),
            (
                "sqlarena_jobs_failed",
                "Jobs that ended FAILED",
                &metrics.jobs_failed,
            ),
            (
                "sqlarena_requeues",
                "Leases taken back and requeued",
                &metrics.requeues,
            ),
            (
                "sqlarena_stale_lease_rejections",
                "Grader calls rejected with 409 for a stale lease",
                &metrics.stale_lease_rejections,
            ),
            (
                "sqlarena_graders_declared_dead",
                "Graders declared dead",
                &metrics.graders_declared_dead,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "sqlarena_job_duration_seconds",
            "Time from lease to recorded result",
            metrics.job_duration.clone(),
        );
        registry.register(
            "sqlarena_http_requests",
            "HTTP requests answered, by method, matched route template and status",
            metrics.http_requests.clone(),
        );
        registry.register(
            "sqlarena_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and matched route template",
            metrics.http_request_duration.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// Adds one to a counter.
    pub fn incr(counter: &Counter) {
        counter.inc();
    }

    /// Records how long a job took from lease to result.
    pub fn observe_job_duration(&self, seconds: f64) {
        self.job_duration.observe(seconds);
    }

    /// Records an answered HTTP request under its route template (`None`
    /// when no route matched).
    pub fn observe_request(
        &self,
        method: &str,
        route: Option<&str>,
        status: u16,
        duration: Duration,
    ) {
        let route = route.unwrap_or(UNMATCHED_ROUTE).to_string();
        self.http_request_duration
            .get_or_create(&RouteLabels {
                method: method.to_string(),
                route: route.clone(),
            })
            .observe(duration.as_secs_f64());
        self.http_requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route,
                status,
            })
            .inc();
    }

    /// Reads the gauges from the store and renders every metric in the
    /// OpenMetrics text format ([`CONTENT_TYPE`]).
    ///
    /// # Errors
    /// Fails when the store cannot be read.
    pub async fn render(&self, store: &dyn Store) -> StoreResult<String> {
        let now = Utc::now();
        for stats in store.lane_stats().await? {
            let lane = LaneLabels {
                lane: stats.lane.to_string(),
            };
            self.queue_depth
                .get_or_create(&lane)
                .set(stats.queued as i64);
            self.leases_held
                .get_or_create(&lane)
                .set(stats.leased as i64);
            let age = stats
                .oldest_queued_at
                .map(|at| (now - at).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            self.queue_oldest_age.get_or_create(&lane).set(age);
        }
        let graders = store.list_graders(Page::all()).await?;
        for state in [GraderState::Alive, GraderState::Draining, GraderState::Dead] {
            let count = graders
                .iter()
                .filter(|grader| grader.state == state)
                .count();
            self.graders
                .get_or_create(&StateLabels {
                    state: state.to_string(),
                })
                .set(count as i64);
        }
        Ok(self.encode())
    }

    /// Renders the registry as it stands.
    fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_into_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.observe_job_duration(0.02);
        metrics.observe_job_duration(3.0);
        let text = metrics.encode();
        for line in [
            "sqlarena_job_duration_seconds_bucket{le=\"0.005\"} 0",
            "sqlarena_job_duration_seconds_bucket{le=\"0.025\"} 1",
            "sqlarena_job_duration_seconds_bucket{le=\"600.0\"} 2",
            "sqlarena_job_duration_seconds_count 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
    }

    #[test]
    fn counters_keep_their_names_and_requests_their_route() {
        let metrics = Metrics::default();
        Metrics::incr(&metrics.requeues);
        metrics.observe_request(
            "GET",
            Some("/api/v1/challenges/{id}"),
            200,
            Duration::from_millis(3),
        );
        metrics.observe_request("GET", None, 404, Duration::from_millis(1));
        let text = metrics.encode();
        for line in [
            "sqlarena_requeues_total 1",
            "sqlarena_jobs_enqueued_total 0",
            "sqlarena_http_requests_total{method=\"GET\",route=\"/api/v1/challenges/{id}\",status=\"200\"} 1",
            "sqlarena_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
            "sqlarena_http_request_duration_seconds_bucket{le=\"0.005\",method=\"GET\",route=\"/api/v1/challenges/{id}\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
    }
}
