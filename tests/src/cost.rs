//! Where a benchmark's time goes: CPU seconds of the coordinator, the
//! graders, their PostgreSQL backends, the bench client and the rest of the
//! machine (from `/proc`), and the coordinator's HTTP requests by route
//! (from its `/metrics`), sampled before and after a part of a benchmark
//! and printed per attempt.

use std::collections::{BTreeMap, HashMap};

use crate::demo::DemoCluster;
use crate::harness::postgres_url;

/// CPU seconds (user + system) a process has used, from `/proc`; 0 once
/// it is gone.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command name (which may hold spaces, in
    // parentheses); utime and stime are the 14th and 15th of the line.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Busy CPU seconds of the whole machine (every core), from `/proc/stat`.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|value| value.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    (ticks.iter().take(8).sum::<f64>() - idle) / 100.0
}

/// CPU seconds of each PostgreSQL backend logged in as a role of the
/// graders named `LABEL-grader-N`, by pid.
async fn backend_cpu(label: &str) -> HashMap<u32, f64> {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    let pattern = format!("sqlarena_{label}_grader_%");
    let rows = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE usename LIKE $1",
            &[&pattern],
        )
        .await
        .expect("list the graders' backends");
    rows.iter()
        .map(|row| {
            let pid = u32::try_from(row.get::<_, i32>(0)).unwrap_or(0);
            (pid, cpu_seconds(pid))
        })
        .collect()
}

/// Requests the coordinator answered, by `METHOD route`, from its metrics.
async fn requests(coordinator_url: &str) -> BTreeMap<String, f64> {
    let text = reqwest::get(format!("{coordinator_url}/metrics"))
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics' text");
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some(labels) = line.strip_prefix("sqlarena_http_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = labels.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("?")
                .to_string()
        };
        let key = format!("{} {}", label("method"), label("route"));
        *counts.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    counts
}

/// One reading of what a cluster has spent so far.
pub struct CostSample {
    coordinator: f64,
    graders: f64,
    client: f64,
    backends: HashMap<u32, f64>,
    machine_busy: f64,
    requests: BTreeMap<String, f64>,
}

impl CostSample {
    /// Reads the cluster started with `label` (its graders' backends are
    /// found by their role names).
    pub async fn take(cluster: &DemoCluster, label: &str) -> CostSample {
        CostSample {
            coordinator: cpu_seconds(cluster.coordinator.pid()),
            graders: cluster.graders.iter().map(|g| cpu_seconds(g.pid())).sum(),
            client: cpu_seconds(std::process::id()),
            backends: backend_cpu(label).await,
            machine_busy: machine_busy_seconds(),
            requests: requests(cluster.coordinator.url()).await,
        }
    }

    /// Prints what was spent since `before`, per attempt of `attempts`.
    pub fn print_since(&self, before: &CostSample, attempts: usize) {
        let per = |seconds: f64| seconds * 1000.0 / attempts as f64;
        let backends: f64 = self
            .backends
            .iter()
            .map(|(pid, end)| end - before.backends.get(pid).copied().unwrap_or(0.0))
            .sum();
        let coordinator = self.coordinator - before.coordinator;
        let graders = self.graders - before.graders;
        let client = self.client - before.client;
        let machine = self.machine_busy - before.machine_busy;
        println!(
            "CPU per attempt: coordinator {:.2} ms, graders {:.2} ms, PostgreSQL backends {:.2} ms \
             ({} backends), bench client {:.2} ms; whole machine busy {:.2} ms (other processes {:.2} ms)",
            per(coordinator),
            per(graders),
            per(backends),
            self.backends.len(),
            per(client),
            per(machine),
            per(machine - coordinator - graders - backends - client)
        );
        let mut shown = Vec::new();
        for (route, count) in &self.requests {
            let made = count - before.requests.get(route).copied().unwrap_or(0.0);
            if made > 0.0 {
                shown.push(format!("{route} {:.2}", made / attempts as f64));
            }
        }
        println!("coordinator requests per attempt: {}", shown.join(", "));
    }
}
