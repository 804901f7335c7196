//! Cluster benchmark: what challenge affinity buys when many challenges
//! share the graders.
//!
//! For affinity on, then off (`--no-affinity`), in one run: a coordinator
//! on the embedded store and 8 grader processes with 1 slot each on the
//! local PostgreSQL; 40 "scores" challenges of 3 cases x 5,000 rows; then
//! 2,000 attempts whose challenges follow a Zipf popularity (s = 1.1),
//! submitted by 100 students, each keeping its 5 allowed attempts in
//! flight. Prints, per mode, the bundle builds (the graders' `bundle built`
//! log lines), submit-to-graded latency (the attempt's `finished_at` minus
//! its `created_at`, as the coordinator recorded them) at p50 and p99, and
//! attempts graded per second (first submission to last result).
//!
//! Run with `scripts/bench.sh cluster` (release binaries) or
//! `SQLARENA_BIN_PROFILE=release cargo run --release -p sqlarena-e2e --bin cluster-bench -- [flags]`;
//! flags (defaults): `--graders 8 --challenges 40 --rows 5000
//! --attempts 2000 --students 100 --zipf-s 1.1 --times-to-run 3
//! --wait-ms 50 --max-reorder-ms 2000 --modes on,off`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlarena_e2e::bench::{
    create_scores_challenge, final_attempt, flag, flags, percentile, submit, wait_ready, People,
    ATTEMPT,
};
use sqlarena_e2e::demo::DemoCluster;
use sqlarena_e2e::harness::Api;

/// Attempts a student may have unfinished at once (the coordinator's
/// default `--max-unfinished-attempts`): a student waits for its oldest
/// before submitting more, rather than retrying into 429s.
const IN_FLIGHT: usize = 5;
/// How often a student looks at its oldest unfinished attempt.
const POLL: Duration = Duration::from_millis(250);

struct Settings {
    graders: usize,
    challenges: usize,
    rows: usize,
    attempts: usize,
    students: usize,
    zipf_s: f64,
    times_to_run: u32,
    wait_ms: u64,
    max_reorder_ms: u64,
    modes: Vec<String>,
}

fn settings() -> Settings {
    let flags = flags(&[
        "--graders",
        "--challenges",
        "--rows",
        "--attempts",
        "--students",
        "--zipf-s",
        "--times-to-run",
        "--wait-ms",
        "--max-reorder-ms",
        "--modes",
    ]);
    Settings {
        graders: flag(&flags, "--graders", 8),
        challenges: flag(&flags, "--challenges", 40),
        rows: flag(&flags, "--rows", 5000),
        attempts: flag(&flags, "--attempts", 2000),
        students: flag(&flags, "--students", 100),
        zipf_s: flag(&flags, "--zipf-s", 1.1),
        times_to_run: flag(&flags, "--times-to-run", 3),
        wait_ms: flag(&flags, "--wait-ms", 50),
        max_reorder_ms: flag(&flags, "--max-reorder-ms", 2000),
        modes: flag(&flags, "--modes", "on,off".to_string())
            .split(',')
            .map(str::to_owned)
            .collect(),
    }
}

/// SplitMix64: a small seeded generator, so both modes grade the same
/// attempts.
struct SplitMix(u64);

impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws challenge indexes 0..n with probability proportional to
/// 1 / (index + 1)^s.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn sample(&self, random: &mut SplitMix) -> usize {
        let target = random.next_f64() * self.cumulative.last().copied().unwrap_or(0.0);
        self.cumulative
            .partition_point(|&total| total <= target)
            .min(self.cumulative.len() - 1)
    }
}

/// Each student's attempts, as challenge indexes in submission order.
fn plan(settings: &Settings) -> Vec<Vec<usize>> {
    let zipf = Zipf::new(settings.challenges, settings.zipf_s);
    let mut random = SplitMix(0x5eed);
    let per_student = settings.attempts.div_ceil(settings.students);
    (0..settings.students)
        .map(|_| (0..per_student).map(|_| zipf.sample(&mut random)).collect())
        .collect()
}

/// What one mode measured.
struct Figures {
    mode: String,
    builds: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    per_second: f64,
    attempts: usize,
}

fn time_of(attempt: &Value, field: &str) -> DateTime<Utc> {
    attempt[field]
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .unwrap_or_else(|| panic!("attempt without {field}: {attempt}"))
        .with_timezone(&Utc)
}

/// One student's attempts, at most [`IN_FLIGHT`] unfinished at once;
/// returns each final attempt.
async fn grade_all(student: Api, challenge_ids: Vec<i64>) -> Vec<Value> {
    let mut in_flight = VecDeque::new();
    let mut graded = Vec::new();
    for challenge_id in challenge_ids {
        if in_flight.len() == IN_FLIGHT {
            let oldest = in_flight.pop_front().expect("in flight");
            graded.push(final_attempt(&student, oldest, POLL).await);
        }
        in_flight.push_back(submit(&student, challenge_id, ATTEMPT).await.0);
    }
    for attempt_id in in_flight {
        graded.push(final_attempt(&student, attempt_id, POLL).await);
    }
    graded
}

async fn measure(settings: &Settings, mode: &str, plan: &[Vec<usize>]) -> Figures {
    let wait = settings.wait_ms.to_string();
    let max_reorder = settings.max_reorder_ms.to_string();
    let coordinator_flags: Vec<&str> = match mode {
        "on" => vec![
            "--affinity-wait-ms",
            &wait,
            "--affinity-max-reorder-ms",
            &max_reorder,
        ],
        "off" => vec!["--no-affinity"],
        other => panic!("--modes: {other:?} is neither on nor off"),
    };
    // The planned rounds only: precision rounds would make an attempt's
    // cost depend on the machine's noise.
    let grader_flags = ["--slots", "1", "--precision-time-ms", "0"];
    let label = format!("cluster-{mode}");
    let cluster =
        DemoCluster::start_with(&label, &coordinator_flags, settings.graders, &grader_flags).await;
    let api = Api::new(cluster.coordinator.url());
    let people = People::sign_up(&api, settings.students).await;
    // Created together, so the graders initialize them together.
    let mut challenge_ids = Vec::new();
    for index in 0..settings.challenges {
        let seeds = [7 + index, 11 + index, 13 + index];
        challenge_ids.push(
            create_scores_challenge(
                &people.professor,
                &format!("cluster {index}"),
                settings.rows,
                &seeds,
                settings.times_to_run,
            )
            .await,
        );
    }
    for id in &challenge_ids {
        wait_ready(&people.professor, *id, Duration::from_secs(600)).await;
    }
    let builds_before = bundle_builds(&cluster);

    let started = Instant::now();
    let mut tasks = Vec::new();
    for (student, indexes) in people.students.iter().zip(plan) {
        let ids = indexes.iter().map(|index| challenge_ids[*index]).collect();
        tasks.push(tokio::spawn(grade_all(student.clone(), ids)));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        for attempt in task.await.expect("student task") {
            assert_eq!(attempt["status"], "PASSED", "{attempt}");
            let latency = time_of(&attempt, "finished_at") - time_of(&attempt, "created_at");
            latencies.push(latency.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let builds = bundle_builds(&cluster) - builds_before;
    cluster.stop().await;
    latencies.sort_by(f64::total_cmp);
    let figures = Figures {
        mode: mode.to_string(),
        builds,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or_default(),
        per_second: latencies.len() as f64 / elapsed,
        attempts: latencies.len(),
    };
    println!(
        "affinity {}: {} attempts in {elapsed:.1} s = {:.1} attempts/s; bundle builds {}; submit -> graded p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        figures.mode,
        figures.attempts,
        figures.per_second,
        figures.builds,
        figures.p50_ms,
        figures.p99_ms,
        figures.max_ms
    );
    figures
}

/// Bundles built so far by the cluster's graders (each logs `bundle
/// built` once per build).
fn bundle_builds(cluster: &DemoCluster) -> usize {
    cluster
        .graders
        .iter()
        .map(|grader| grader.log().matches("bundle built").count())
        .sum()
}

#[tokio::main]
async fn main() {
    let settings = settings();
    let plan = plan(&settings);
    let mut per_challenge: HashMap<usize, usize> = HashMap::new();
    for index in plan.iter().flatten() {
        *per_challenge.entry(*index).or_default() += 1;
    }
    let mut popular: Vec<(usize, usize)> = per_challenge.into_iter().collect();
    popular.sort_by_key(|(index, count)| (std::cmp::Reverse(*count), *index));
    println!(
        "{} graders x 1 slot, {} challenges of 3 cases x {} rows (times_to_run {}), {} attempts from {} students (Zipf s = {}; most attempted: {:?}), embedded store; affinity wait {} ms, max reorder {} ms",
        settings.graders,
        settings.challenges,
        settings.rows,
        settings.times_to_run,
        plan.iter().map(Vec::len).sum::<usize>(),
        settings.students,
        settings.zipf_s,
        &popular[..popular.len().min(5)],
        settings.wait_ms,
        settings.max_reorder_ms
    );
    let mut results = Vec::new();
    for mode in &settings.modes {
        results.push(measure(&settings, mode, &plan).await);
    }
    println!("mode | bundle builds | p50 ms | p99 ms | attempts/s");
    for figures in &results {
        println!(
            "affinity {:<3} | {:>5} | {:>8.0} | {:>8.0} | {:>6.1}",
            figures.mode, figures.builds, figures.p50_ms, figures.p99_ms, figures.per_second
        );
    }
    if let [on, off] = &results[..] {
        println!(
            "with affinity: {:.2}x the builds of {} challenges (target at most 1.5x); p99 {:.2}x lower than without (target at least 3x)",
            on.builds as f64 / settings.challenges as f64,
            settings.challenges,
            off.p99_ms / on.p99_ms
        );
    }
}
