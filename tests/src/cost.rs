//! Where a benchmark's time goes: CPU seconds of the coordinator, the
//! graders, PostgreSQL, the bench client and the rest of the
//! machine (from `/proc`), and the coordinator's HTTP requests by route
//! (from its `/metrics`), sampled before and after a part of a benchmark
//! and printed per attempt.

use std::collections::BTreeMap;

use crate::demo::DemoCluster;

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces, in parentheses), and the command name.
fn stat_fields(pid: u32) -> Option<(String, Vec<String>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    Some((name, rest.split_whitespace().map(str::to_string).collect()))
}

/// Clock ticks field `index` of `fields` (0 = the state, the line's 3rd).
fn ticks(fields: &[String], index: usize) -> f64 {
    fields
        .get(index)
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// CPU seconds (user + system) a process has used, from `/proc`; 0 once
/// it is gone.
fn cpu_seconds(pid: u32) -> f64 {
    // utime and stime are the 14th and 15th fields of the line.
    stat_fields(pid).map_or(0.0, |(_, fields)| {
        (ticks(&fields, 11) + ticks(&fields, 12)) / 100.0
    })
}

/// CPU seconds of every PostgreSQL process on the machine, those that
/// ended included: each live `postgres` process's own time plus the time
/// of the children its postmaster has reaped (graders open and close
/// connections, so sampling live backends alone misses most of it).
fn postgres_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut total = 0.0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((name, fields)) = stat_fields(pid) else {
            continue;
        };
        if name == "postgres" {
            // Own utime, stime, then reaped children's cutime, cstime.
            total += (ticks(&fields, 11) + ticks(&fields, 12)) / 100.0;
            let parent = fields.get(1).and_then(|ppid| ppid.parse::<u32>().ok());
            let parent_is_postgres = parent
                .and_then(stat_fields)
                .is_some_and(|(name, _)| name == "postgres");
            if !parent_is_postgres {
                total += (ticks(&fields, 13) + ticks(&fields, 14)) / 100.0;
            }
        }
    }
    total
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
    postgres: f64,
    machine_busy: f64,
    requests: BTreeMap<String, f64>,
}

impl CostSample {
    /// Reads what `cluster` and the machine's PostgreSQL have spent.
    pub async fn take(cluster: &DemoCluster) -> CostSample {
        CostSample {
            coordinator: cpu_seconds(cluster.coordinator.pid()),
            graders: cluster.graders.iter().map(|g| cpu_seconds(g.pid())).sum(),
            client: cpu_seconds(std::process::id()),
            postgres: postgres_seconds(),
            machine_busy: machine_busy_seconds(),
            requests: requests(cluster.coordinator.url()).await,
        }
    }

    /// Prints what was spent since `before`, per attempt of `attempts`.
    pub fn print_since(&self, before: &CostSample, attempts: usize) {
        let per = |seconds: f64| seconds * 1000.0 / attempts as f64;
        let postgres = self.postgres - before.postgres;
        let coordinator = self.coordinator - before.coordinator;
        let graders = self.graders - before.graders;
        let client = self.client - before.client;
        let machine = self.machine_busy - before.machine_busy;
        println!(
            "CPU per attempt: coordinator {:.2} ms, graders {:.2} ms, PostgreSQL {:.2} ms, \
             bench client {:.2} ms; whole machine busy {:.2} ms (other processes {:.2} ms)",
            per(coordinator),
            per(graders),
            per(postgres),
            per(client),
            per(machine),
            per(machine - coordinator - graders - postgres - client)
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
