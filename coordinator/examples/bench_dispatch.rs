//! Dispatch benchmark: a coordinator and K simulated graders (long-poll,
//! keep-alive HTTP) in one process push N no-op jobs through
//! enqueue -> lease -> complete.
//!
//! ```text
//! cargo run --release -p sqlarena-coordinator --example bench_dispatch -- \
//!     [--jobs 20000] [--graders 8] [--store sqlite://PATH|mongodb://...] \
//!     [--slots 1] [--latency-samples 2000] [--deep-queue 1000000] [--kill-test]
//! ```
//!
//! Each simulated grader holds a presence stream open and leases up to its
//! `--slots` free slots in one request (the batch form of the lease), as
//! the grader daemon does, and completes its jobs concurrently.
//!
//! Prints throughput (jobs/s), dispatch latency (enqueued -> in a waiting
//! grader's hands) p50/p99, CPU time per job (coordinator and simulated
//! graders together: one process), lease latency with a shallow and a deep
//! queue, and how fast the leases of a grader that vanished are requeued:
//! one whose process died (its connections closed) and one gone silent (a
//! partition: its presence stream stays open, no heartbeats come).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlarena_common::{
    AttemptId, AttemptOutcome, AttemptPayload, ChallengeId, JobId, JobOutcome, JobPayload, Lane,
    LeaseBatch, LeasedJob, RegisterGraderResponse, UserId,
};
use sqlarena_coordinator::config::Config;
use sqlarena_coordinator::state::AppState;
use sqlarena_coordinator::store::{self, NewJob};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const CLUSTER_TOKEN: &str = "bench-cluster-token";

struct Options {
    jobs: usize,
    graders: usize,
    slots: usize,
    store: String,
    latency_samples: usize,
    deep_queue: usize,
    kill_test: bool,
}

fn options() -> Options {
    let mut options = Options {
        jobs: 20_000,
        graders: 8,
        slots: 1,
        store: format!(
            "sqlite://{}/bench.db",
            std::env::temp_dir()
                .join(format!("sqlarena-bench-{}", Uuid::new_v4().simple()))
                .display()
        ),
        latency_samples: 2000,
        deep_queue: 0,
        kill_test: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut index = 0;
    while index < args.len() {
        let value = || args.get(index + 1).cloned().unwrap_or_default();
        match args[index].as_str() {
            "--jobs" => options.jobs = value().parse().expect("--jobs N"),
            "--graders" => options.graders = value().parse().expect("--graders K"),
            "--slots" => options.slots = value().parse().expect("--slots S"),
            "--store" => options.store = value(),
            "--latency-samples" => {
                options.latency_samples = value().parse().expect("--latency-samples N")
            }
            "--deep-queue" => options.deep_queue = value().parse().expect("--deep-queue N"),
            "--kill-test" => {
                options.kill_test = true;
                index += 1;
                continue;
            }
            other => panic!("unknown option {other}"),
        }
        index += 2;
    }
    options
}

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("reading /proc/self/stat");
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}

fn noop_job(lane: Lane, index: usize) -> NewJob {
    NewJob {
        lane,
        payload: JobPayload::Attempt(AttemptPayload {
            attempt_id: AttemptId(-(index as i64) - 1),
            user_id: UserId(0),
            challenge_id: ChallengeId(0),
            challenge_name: "bench".into(),
            challenge_version: 1,
            version_hash: "bench".into(),
            query: "select 1".into(),
            times_to_run: 1,
            test_case_ids: Vec::new(),
            run_item: None,
        }),
        max_tries: 3,
        timeout_ms: 600_000,
    }
}

#[derive(Clone)]
struct Grader {
    http: reqwest::Client,
    base: String,
    token: String,
    slots: usize,
}

impl Grader {
    async fn register(base: &str, name: &str, slots: usize) -> Grader {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(4)
            .build()
            .unwrap();
        let body: Value = http
            .post(format!("{base}/api/v1/grader/register"))
            .bearer_auth(CLUSTER_TOKEN)
            .json(&json!({"name": name, "hostname": "bench", "version": "bench", "lanes": ["fast"], "slots": slots}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let registered: RegisterGraderResponse =
            serde_json::from_value(body["data"].clone()).unwrap();
        Grader {
            http,
            base: base.to_string(),
            token: registered.grader_token,
            slots,
        }
    }

    /// Leases up to `max_jobs` jobs in one request (the batch form).
    async fn lease_batch(&self, wait_ms: u64, max_jobs: usize) -> Vec<LeasedJob> {
        let response = self
            .http
            .post(format!(
                "{}/api/v1/grader/jobs/lease?wait_ms={wait_ms}&max_jobs={max_jobs}",
                self.base
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Vec::new();
        }
        let body: Value = response.json().await.unwrap();
        let batch: LeaseBatch = serde_json::from_value(body["data"].clone()).unwrap();
        batch.jobs
    }

    async fn lease(&self, wait_ms: u64) -> Option<LeasedJob> {
        self.lease_batch(wait_ms, 1).await.pop()
    }

    /// Opens the presence stream; it stays open while the answer is held.
    async fn presence(&self) -> reqwest::Response {
        let response = self
            .http
            .post(format!("{}/api/v1/grader/presence", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "presence answered {}",
            response.status()
        );
        response
    }

    async fn complete(&self, job: &LeasedJob) {
        let outcome = JobOutcome::Attempt(AttemptOutcome {
            cases: Vec::new(),
            error: None,
        });
        let response = self
            .http
            .post(format!(
                "{}/api/v1/grader/jobs/{}/complete",
                self.base, job.job_id
            ))
            .bearer_auth(&self.token)
            .json(&json!({"lease_id": job.lease_id, "outcome": outcome}))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "complete answered {}",
            response.status()
        );
    }

    async fn heartbeat(&self) {
        let _ = self
            .http
            .post(format!("{}/api/v1/grader/heartbeat", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"leases": []}))
            .send()
            .await;
    }
}

/// Starts graders that lease and complete until `stop`, recording when each
/// job arrived.
fn spawn_graders(
    graders: &[Grader],
    arrivals: Arc<Mutex<HashMap<JobId, Instant>>>,
    done: Arc<AtomicUsize>,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for original in graders {
        let (grader, arrivals, done, stopped) = (
            original.clone(),
            arrivals.clone(),
            done.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut presence = grader.presence().await;
            // Read the presence ticks, as the daemon does.
            let ticks =
                tokio::spawn(async move { while let Ok(Some(_)) = presence.chunk().await {} });
            while !stopped.is_cancelled() {
                let jobs = tokio::select! {
                    jobs = grader.lease_batch(1000, grader.slots) => jobs,
                    _ = stopped.cancelled() => Vec::new(),
                };
                let leased_at = Instant::now();
                {
                    let mut arrivals = arrivals.lock().unwrap();
                    for job in &jobs {
                        arrivals.insert(job.job_id, leased_at);
                    }
                }
                futures_util::future::join_all(jobs.iter().map(|job| grader.complete(job))).await;
                done.fetch_add(jobs.len(), Ordering::Relaxed);
            }
            ticks.abort();
        }));
        let (grader, stop) = (original.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                grader.heartbeat().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    tasks
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options();
    let store = store::open(&options.store).await?;
    let mut config = Config::for_store(&options.store);
    config.cluster_token = Some(CLUSTER_TOKEN.into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let state = AppState::new(store, config, CancellationToken::new());
    // The listener is bound: the graders' first requests wait in its backlog.
    let server = tokio::spawn(sqlarena_coordinator::serve_state(state.clone(), listener));
    println!(
        "store: {} (SQLite: WAL, synchronous=NORMAL unless the URI says otherwise)",
        sqlarena_coordinator::redact(&options.store)
    );
    println!(
        "graders: {} with {} slots each, jobs: {}",
        options.graders, options.slots, options.jobs
    );

    let mut graders = Vec::new();
    for index in 0..options.graders {
        graders.push(Grader::register(&base, &format!("bench-{index}"), options.slots).await);
    }

    // Throughput: queue N jobs as fast as possible while the graders drain.
    let arrivals = Arc::new(Mutex::new(HashMap::with_capacity(options.jobs)));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let tasks = spawn_graders(&graders, arrivals.clone(), done.clone(), stop.clone());
    let cpu_before = cpu_time();
    let started = Instant::now();
    for index in 0..options.jobs {
        state.jobs.enqueue(noop_job(Lane::Fast, index)).await?;
    }
    while done.load(Ordering::Relaxed) < options.jobs {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time() - cpu_before;
    println!(
        "throughput: {} jobs in {:.2} s = {:.0} jobs/s; CPU {:.1} us/job (coordinator + graders)",
        options.jobs,
        elapsed.as_secs_f64(),
        options.jobs as f64 / elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / options.jobs as f64
    );

    // Dispatch latency: one job at a time, graders waiting.
    let mut latencies = Vec::with_capacity(options.latency_samples);
    for index in 0..options.latency_samples {
        let target = done.load(Ordering::Relaxed) + 1;
        let queued_at = Instant::now();
        let job = state.jobs.enqueue(noop_job(Lane::Fast, index)).await?;
        loop {
            if let Some(arrived) = arrivals.lock().unwrap().get(&job.id) {
                latencies.push(arrived.duration_since(queued_at));
                break;
            }
            tokio::task::yield_now().await;
        }
        while done.load(Ordering::Relaxed) < target {
            tokio::task::yield_now().await;
        }
    }
    latencies.sort();
    println!(
        "dispatch latency (enqueue -> waiting grader has it), {} samples: p50 {} p99 {} max {}",
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0))
    );
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }

    // Lease latency with a shallow and a deep queue (one grader).
    if options.deep_queue > 0 {
        let client = Grader::register(&base, "lease-probe", 1).await;
        // Filling a deep queue takes longer than a grader may stay silent.
        let heartbeat = {
            let client = client.clone();
            tokio::spawn(async move {
                loop {
                    client.heartbeat().await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        for depth in [1000, options.deep_queue] {
            let queued = state
                .store
                .lane_stats()
                .await?
                .into_iter()
                .find(|s| s.lane == Lane::Fast)
                .map(|s| s.queued)
                .unwrap_or(0);
            let fill_started = Instant::now();
            for index in queued as usize..depth {
                state.store.enqueue_job(noop_job(Lane::Fast, index)).await?;
            }
            let fill = fill_started.elapsed();
            let mut samples = Vec::new();
            for _ in 0..500 {
                let started = Instant::now();
                let job = client.lease(0).await.expect("a queued job");
                samples.push(started.elapsed());
                client.complete(&job).await;
                state.store.enqueue_job(noop_job(Lane::Fast, 0)).await?;
            }
            samples.sort();
            println!(
                "lease latency with {depth} queued (filled in {:.1} s): p50 {} p99 {}",
                fill.as_secs_f64(),
                ms(percentile(&samples, 0.5)),
                ms(percentile(&samples, 0.99))
            );
        }
        heartbeat.abort();
    }

    // A grader that vanishes with leases held: its process died (its
    // connections close, as the kernel closes a killed process's sockets;
    // no deregistration), or it went silent (a partition: the presence
    // stream stays open, no more requests).
    if options.kill_test {
        let survivor = Grader::register(&base, "survivor", 1).await;
        let heartbeat = {
            let survivor = survivor.clone();
            tokio::spawn(async move {
                loop {
                    survivor.heartbeat().await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        for died in [true, false] {
            let name = if died { "died" } else { "silent" };
            let doomed = Grader::register(&base, &format!("doomed-{name}"), 3).await;
            let presence = doomed.presence().await;
            let mut held = Vec::new();
            while held.len() < 3 {
                state.jobs.enqueue(noop_job(Lane::Fast, held.len())).await?;
                held.extend(
                    doomed
                        .lease_batch(1000, 3 - held.len())
                        .await
                        .into_iter()
                        .map(|job| job.job_id),
                );
            }
            let vanished_at = Instant::now();
            let silent_presence = if died {
                drop(presence);
                drop(doomed);
                None
            } else {
                Some((presence, doomed))
            };
            let mut recovered = 0;
            while recovered < held.len() {
                if let Some(job) = survivor.lease(1000).await {
                    if held.contains(&job.job_id) {
                        recovered += 1;
                    }
                    survivor.complete(&job).await;
                }
            }
            let took = vanished_at.elapsed();
            drop(silent_presence);
            if died {
                println!(
                    "process died: its {} leases were requeued and re-leased {:.2} s after its connections closed",
                    held.len(),
                    took.as_secs_f64()
                );
            } else {
                println!(
                    "silent: its {} leases were requeued and re-leased {:.2} s after its last request (presence stream open; heartbeat 2 s, dead after 3 missed)",
                    held.len(),
                    took.as_secs_f64()
                );
            }
        }
        heartbeat.abort();
    }

    state.shutdown.cancel();
    server.await??;
    Ok(())
}
