//! The grader's outer loop: register, heartbeat, lease jobs into slots,
//! run them, post results, and shut down gracefully.
//!
//! One root `CancellationToken` (the caller's `shutdown`) stops leasing;
//! running jobs then get `--shutdown-grace-ms` to finish before they are
//! cancelled, and the grader deregisters. A 401 on any call means the
//! coordinator forgot this grader: its jobs are dropped and it registers
//! again. Transient errors never end the loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use sqlarena_common::{
    CaseResult, ChallengeId, CompleteRequest, FailRequest, HeartbeatRequest, HeldLease, JobId,
    JobOutcome, JobPayload, LeaseId, LeasedJob, ProgressRequest, RegisterGraderRequest,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, instrument, warn};

use crate::client::{ClientError, CoordinatorClient};
use crate::config::Config;
use crate::error::JobError;
use crate::run::{run_attempt, run_init};
use crate::sandbox::{Sandbox, SandboxConfig};

/// How long one lease poll waits on the coordinator.
const LEASE_WAIT: Duration = Duration::from_secs(20);
/// Pause between registrations while the cluster token is refused.
const UNAUTHORIZED_PAUSE: Duration = Duration::from_secs(30);

/// Exponential backoff with jitter.
#[derive(Debug)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { attempt: 0 }
    }

    /// Returns the next delay: 250 ms doubling up to 30 s, plus up to 50 % jitter.
    fn next_delay(&mut self) -> Duration {
        let base = Duration::from_millis(250)
            .saturating_mul(1 << self.attempt.min(7))
            .min(Duration::from_secs(30));
        self.attempt += 1;
        base + base.mul_f64(rand::thread_rng().gen_range(0.0..0.5))
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Sleeps for `duration` unless `cancel` fires first; returns false if it did.
async fn pause(duration: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => true,
        () = cancel.cancelled() => false,
    }
}

/// A job this grader is running.
struct RunningJob {
    lease_id: LeaseId,
    cancel: CancellationToken,
    /// The bundle it needs (attempts): built, or being built.
    version_hash: Option<String>,
}

/// State shared by one registration's tasks.
struct Session {
    client: CoordinatorClient,
    sandbox: Arc<Sandbox>,
    config: Arc<Config>,
    jobs: Mutex<HashMap<JobId, RunningJob>>,
    draining: AtomicBool,
    /// Fired when the coordinator no longer knows this grader.
    lost: CancellationToken,
}

/// Runs the grader until `shutdown` fires.
///
/// # Errors
///
/// Fails only on startup problems that retrying cannot fix (an invalid
/// configuration or an unsafe runner role).
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let Some(sandbox) = start_sandbox(&config, &shutdown).await? else {
        return Ok(());
    };
    let sandbox = Arc::new(sandbox);
    let client = CoordinatorClient::new(&config.coordinator).context("building the HTTP client")?;
    let request = RegisterGraderRequest {
        name: config.name(),
        hostname: crate::config::hostname(),
        version: env!("CARGO_PKG_VERSION").into(),
        lanes: config.lanes.clone(),
        slots: config.slots,
    };
    let mut backoff = Backoff::new();
    while !shutdown.is_cancelled() {
        let registration = match client.register(&config.cluster_token, &request).await {
            Ok(registration) => registration,
            Err(ClientError::Unauthorized(message)) => {
                error!(%message, "the coordinator refused the cluster token; retrying in 30 s");
                pause(UNAUTHORIZED_PAUSE, &shutdown).await;
                continue;
            }
            Err(error) => {
                let delay = backoff.next_delay();
                warn!(%error, delay_ms = delay.as_millis() as u64, "cannot register; retrying");
                pause(delay, &shutdown).await;
                continue;
            }
        };
        backoff.reset();
        info!(grader_id = %registration.grader_id, coordinator = %config.coordinator, "registered");
        let session = Arc::new(Session {
            client: client.with_token(registration.grader_token),
            sandbox: Arc::clone(&sandbox),
            config: Arc::clone(&config),
            jobs: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            lost: CancellationToken::new(),
        });
        run_session(
            &session,
            Duration::from_millis(registration.heartbeat_interval_ms.max(100)),
            &shutdown,
        )
        .await;
    }
    sandbox.shutdown().await;
    info!("grader stopped");
    Ok(())
}

/// Starts the sandbox, retrying while PostgreSQL is unreachable. Returns
/// `None` when shutdown came first.
async fn start_sandbox(
    config: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Sandbox>> {
    let sandbox_config = SandboxConfig {
        admin_url: config.postgres.clone(),
        prefix: config.prefix(),
        // Two connections per running attempt, as many idle in the pool,
        // and room for backends that are still exiting.
        runner_connection_limit: config.slots * 8 + 4,
        runner_statement_timeout: config.longest_timeout(),
        init_timeout: Duration::from_millis(config.init_timeout_ms),
        max_database_bytes: config.max_database_bytes as u64,
        cache_size: config.cache_size,
    };
    let mut backoff = Backoff::new();
    loop {
        match Sandbox::start(&sandbox_config).await {
            Ok(sandbox) => return Ok(Some(sandbox)),
            Err(error @ crate::sandbox::SandboxError::Connect { .. }) => {
                let delay = backoff.next_delay();
                warn!(%error, delay_ms = delay.as_millis() as u64, "postgres unavailable; retrying");
                if !pause(delay, shutdown).await {
                    return Ok(None);
                }
            }
            Err(error) => return Err(error).context("setting up the PostgreSQL sandbox"),
        }
    }
}

/// Runs one registration: heartbeats and slot workers, until shutdown or
/// until the coordinator forgets this grader.
async fn run_session(
    session: &Arc<Session>,
    heartbeat_interval: Duration,
    shutdown: &CancellationToken,
) {
    let stop_heartbeat = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat_loop(
        Arc::clone(session),
        heartbeat_interval,
        stop_heartbeat.clone(),
    ));
    let presence = tokio::spawn(presence_loop(Arc::clone(session), stop_heartbeat.clone()));
    let mut workers = JoinSet::new();
    workers.spawn(lease_loop(Arc::clone(session), shutdown.clone()));
    // Biased: on shutdown the idle workers return at once too, and the
    // shutdown branch must still be the one taken.
    tokio::select! {
        biased;
        () = shutdown.cancelled() => {
            info!("shutting down: no new jobs, waiting for running ones");
            let grace = Duration::from_millis(session.config.shutdown_grace_ms);
            let finished = tokio::time::timeout(grace, async { while workers.join_next().await.is_some() {} }).await;
            if finished.is_err() {
                warn!("running jobs did not finish in time; cancelling them");
                for job in session.jobs.lock().expect("jobs lock").values() {
                    job.cancel.cancel();
                }
                while workers.join_next().await.is_some() {}
            }
        }
        () = async { while workers.join_next().await.is_some() {} } => {}
    }
    // Whichever branch ended the wait, a shutdown deregisters.
    if shutdown.is_cancelled() && !session.lost.is_cancelled() {
        match session.client.deregister().await {
            Ok(()) => info!("deregistered"),
            Err(error) => warn!(%error, "cannot deregister"),
        }
    }
    stop_heartbeat.cancel();
    let _ = heartbeat.await;
    let _ = presence.await;
}

/// Keeps the presence stream open, reopening it when it ends or stalls: if
/// this process dies, the kernel closes the stream and the coordinator takes
/// the leases back within a couple of seconds rather than after missed
/// heartbeats.
async fn presence_loop(session: Arc<Session>, stop: CancellationToken) {
    /// A stream with no byte for this long is stale (the coordinator sends
    /// one every 100 ms): open another.
    const STALLED: Duration = Duration::from_secs(5);
    let mut backoff = Backoff::new();
    while !stop.is_cancelled() && !session.lost.is_cancelled() {
        let opened = tokio::select! {
            opened = session.client.presence() => opened,
            () = stop.cancelled() => return,
        };
        match opened {
            Ok(mut response) => {
                backoff.reset();
                loop {
                    let chunk = tokio::select! {
                        chunk = tokio::time::timeout(STALLED, response.chunk()) => chunk,
                        () = stop.cancelled() => return,
                        () = session.lost.cancelled() => return,
                    };
                    if !matches!(chunk, Ok(Ok(Some(_)))) {
                        break;
                    }
                }
            }
            Err(ClientError::Unauthorized(message)) => {
                warn!(%message, "presence refused: the coordinator no longer knows this grader");
                session.lost.cancel();
                return;
            }
            Err(error) => {
                let delay = backoff.next_delay();
                warn!(%error, delay_ms = delay.as_millis() as u64, "presence stream failed; retrying");
                if !pause(delay, &stop).await {
                    return;
                }
            }
        }
    }
}

/// Sends heartbeats; cancels the jobs the coordinator names and follows
/// its drain flag.
async fn heartbeat_loop(session: Arc<Session>, interval: Duration, stop: CancellationToken) {
    loop {
        if !pause(interval, &stop).await || session.lost.is_cancelled() {
            return;
        }
        let leases: Vec<HeldLease> = session
            .jobs
            .lock()
            .expect("jobs lock")
            .iter()
            .map(|(job_id, job)| HeldLease {
                job_id: *job_id,
                lease_id: job.lease_id,
            })
            .collect();
        match session.client.heartbeat(&HeartbeatRequest { leases }).await {
            Ok(reply) => {
                let jobs = session.jobs.lock().expect("jobs lock");
                for job_id in reply.cancel {
                    if let Some(job) = jobs.get(&job_id) {
                        info!(%job_id, "coordinator cancelled the job");
                        job.cancel.cancel();
                    }
                }
                if session.draining.swap(reply.drain, Ordering::Relaxed) != reply.drain {
                    info!(drain = reply.drain, "drain state changed");
                }
            }
            Err(ClientError::Unauthorized(message)) => {
                warn!(%message, "the coordinator no longer knows this grader; registering again");
                session.lost.cancel();
                return;
            }
            Err(error) => warn!(%error, "heartbeat failed"),
        }
    }
}

/// Leases jobs into the free slots, as many as are free in one request,
/// and runs each in its own task; returns (after its running jobs ended) on
/// shutdown or when the coordinator forgets this grader.
async fn lease_loop(session: Arc<Session>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(session.config.slots as usize));
    let mut running = JoinSet::new();
    let mut backoff = Backoff::new();
    loop {
        // Reap finished jobs so the set does not grow.
        while running.try_join_next().is_some() {}
        if shutdown.is_cancelled() || session.lost.is_cancelled() {
            break;
        }
        if session.draining.load(Ordering::Relaxed) {
            pause(Duration::from_secs(1), &shutdown).await;
            continue;
        }
        // Wait for one free slot, then take every other free one.
        let first = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("slots never close"),
            () = shutdown.cancelled() => break,
            () = session.lost.cancelled() => break,
        };
        let mut permits = vec![first];
        while let Ok(permit) = Arc::clone(&slots).try_acquire_owned() {
            permits.push(permit);
        }
        let bundles = held_bundles(&session).await;
        let leased = tokio::select! {
            leased = session.client.lease_batch(permits.len() as u32, LEASE_WAIT, &bundles) => leased,
            () = shutdown.cancelled() => break,
            () = session.lost.cancelled() => break,
        };
        match leased {
            Ok(jobs) => {
                backoff.reset();
                for job in jobs {
                    let Some(permit) = permits.pop() else {
                        warn!(job_id = %job.job_id, "the coordinator leased more jobs than asked for; ignoring it");
                        continue;
                    };
                    let session = Arc::clone(&session);
                    running.spawn(async move {
                        execute_job(&session, job).await;
                        drop(permit);
                    });
                }
            }
            Err(ClientError::Unauthorized(message)) => {
                warn!(%message, "lease refused: the coordinator no longer knows this grader");
                session.lost.cancel();
                break;
            }
            Err(error) => {
                let delay = backoff.next_delay();
                warn!(%error, delay_ms = delay.as_millis() as u64, "lease failed; retrying");
                pause(delay, &shutdown).await;
            }
        }
    }
    while running.join_next().await.is_some() {}
}

/// The bundles this grader holds for the coordinator's affinity: those
/// built (most recently used first) and those its running jobs are
/// building, each once.
async fn held_bundles(session: &Session) -> Vec<String> {
    let mut bundles = session.sandbox.cached_hashes().await;
    let running: Vec<String> = session
        .jobs
        .lock()
        .expect("jobs lock")
        .values()
        .filter_map(|job| job.version_hash.clone())
        .collect();
    for hash in running {
        if !bundles.contains(&hash) {
            bundles.push(hash);
        }
    }
    bundles
}

/// Runs one leased job and posts its outcome (nothing when cancelled or
/// when the lease went stale).
#[instrument(skip_all, fields(job_id = %job.job_id, lane = %job.lane, tries = job.tries))]
async fn execute_job(session: &Arc<Session>, job: LeasedJob) {
    let cancel = session.lost.child_token();
    session.jobs.lock().expect("jobs lock").insert(
        job.job_id,
        RunningJob {
            lease_id: job.lease_id,
            cancel: cancel.clone(),
            version_hash: match &job.payload {
                JobPayload::Attempt(attempt) => Some(attempt.version_hash.clone()),
                JobPayload::Init(_) => None,
            },
        },
    );
    let until_deadline = (job.deadline - chrono::Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    // Grading aims to end this much before the deadline, leaving time to
    // post the result.
    let finish_by = std::time::Instant::now() + until_deadline
        - (until_deadline / 10).min(Duration::from_secs(30));
    let deadline_guard = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if pause(until_deadline, &cancel).await {
                warn!("job deadline passed; cancelling");
                cancel.cancel();
            }
        })
    };
    let (progress, progress_receiver) = tokio::sync::mpsc::unbounded_channel();
    let forwarder = tokio::spawn(forward_progress(
        Arc::clone(session),
        cancel.clone(),
        (job.job_id, job.lease_id),
        progress_receiver,
    ));
    let limits = session.config.limits(job.lane);
    let result = match &job.payload {
        JobPayload::Init(payload) => {
            run_init(&session.sandbox, payload, &limits, &cancel, Some(finish_by))
                .await
                .map(JobOutcome::Init)
        }
        JobPayload::Attempt(payload) => {
            match ensure_bundle(
                session,
                payload.challenge_id,
                &payload.version_hash,
                &cancel,
            )
            .await
            {
                Ok(bundle) => run_attempt(
                    &session.sandbox,
                    payload,
                    bundle,
                    &limits,
                    &cancel,
                    Some(&progress),
                    Some(finish_by),
                )
                .await
                .map(JobOutcome::Attempt),
                Err(error) => Err(error),
            }
        }
    };
    drop(progress);
    let _ = forwarder.await;
    if !cancel.is_cancelled() {
        let posted = match result {
            Ok(outcome) => complete_job(session, &job, &cancel, outcome).await,
            Err(JobError::Cancelled) => Ok(()),
            Err(error) => {
                warn!(%error, retryable = error.is_retryable(), "job failed");
                let request = FailRequest {
                    lease_id: job.lease_id,
                    error: error.to_string(),
                    retryable: error.is_retryable(),
                };
                post_with_retry(session, &cancel, || {
                    session.client.fail(job.job_id, &request)
                })
                .await
            }
        };
        match posted {
            Ok(()) => info!("job finished"),
            Err(error) => warn!(%error, "result not accepted"),
        }
    } else {
        info!("job cancelled; nothing posted");
    }
    cancel.cancel();
    let _ = deadline_guard.await;
    session.jobs.lock().expect("jobs lock").remove(&job.job_id);
}

/// Case results of a job's first moments wait for its completion: a job
/// that ends within this long posts its results once, with the completion,
/// instead of a progress post (a request and a store write) per case.
const PROGRESS_AFTER: Duration = Duration::from_millis(100);

/// Posts a job's case results as they arrive, once the job has run for
/// [`PROGRESS_AFTER`] (the cases held until then first); a job that ends
/// before then posts none, its completion carrying them all.
async fn forward_progress(
    session: Arc<Session>,
    cancel: CancellationToken,
    (job_id, lease_id): (JobId, LeaseId),
    mut cases: tokio::sync::mpsc::UnboundedReceiver<CaseResult>,
) {
    let mut held = Vec::new();
    let hold = tokio::time::sleep(PROGRESS_AFTER);
    tokio::pin!(hold);
    loop {
        tokio::select! {
            case = cases.recv() => match case {
                Some(case) => held.push(case),
                None => return,
            },
            () = &mut hold => break,
        }
    }
    let mut held = held.into_iter();
    loop {
        let case = match held.next() {
            Some(case) => case,
            None => match cases.recv().await {
                Some(case) => case,
                None => return,
            },
        };
        if cancel.is_cancelled() {
            continue;
        }
        let request = ProgressRequest { lease_id, case };
        match post_with_retry(&session, &cancel, || {
            session.client.progress(job_id, &request)
        })
        .await
        {
            Ok(()) => {}
            // The lease is no longer ours: stop working for it.
            Err(error @ (ClientError::Conflict(_) | ClientError::Unauthorized(_))) => {
                warn!(%error, "progress not accepted; stopping the job");
                cancel.cancel();
            }
            // The completion carries every case again.
            Err(error) => warn!(%error, "progress not accepted; going on"),
        }
    }
}

/// Posts a job's outcome. Should the coordinator refuse it (too large,
/// say), it is posted again without the rows and diffs shown for display,
/// and if that is refused too the job fails for good with the reason: a
/// refused post never leaves a job hanging until its deadline.
async fn complete_job(
    session: &Session,
    job: &LeasedJob,
    cancel: &CancellationToken,
    outcome: JobOutcome,
) -> Result<(), ClientError> {
    let mut request = CompleteRequest {
        lease_id: job.lease_id,
        outcome,
    };
    let post = || session.client.complete(job.job_id, &request);
    let refusal = match post_with_retry(session, cancel, post).await {
        Err(ClientError::Refused { status, message }) => format!("{status}: {message}"),
        other => return other,
    };
    warn!(%refusal, "outcome refused; posting it without the shown rows");
    if let JobOutcome::Attempt(attempt) = &mut request.outcome {
        for case in &mut attempt.cases {
            case.actual_result = None;
            case.diff = None;
        }
    }
    let post = || session.client.complete(job.job_id, &request);
    let refusal = match post_with_retry(session, cancel, post).await {
        Err(ClientError::Refused { status, message }) => format!("{status}: {message}"),
        other => return other,
    };
    let request = FailRequest {
        lease_id: job.lease_id,
        error: format!("the coordinator refused this job's result ({refusal})"),
        retryable: false,
    };
    post_with_retry(session, cancel, || {
        session.client.fail(job.job_id, &request)
    })
    .await
}

/// Posts with retries on transient errors; a 401 marks the session lost.
async fn post_with_retry<F, Fut>(
    session: &Session,
    cancel: &CancellationToken,
    post: F,
) -> Result<(), ClientError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let mut backoff = Backoff::new();
    loop {
        match post().await {
            Err(ClientError::Transient(message))
                if backoff.attempt < 8 && !cancel.is_cancelled() =>
            {
                let delay = backoff.next_delay();
                warn!(%message, delay_ms = delay.as_millis() as u64, "post failed; retrying");
                pause(delay, cancel).await;
            }
            Err(ClientError::Unauthorized(message)) => {
                session.lost.cancel();
                return Err(ClientError::Unauthorized(message));
            }
            other => return other,
        }
    }
}

/// Returns the built bundle, fetching and building it when missing.
async fn ensure_bundle(
    session: &Session,
    challenge_id: ChallengeId,
    version_hash: &str,
    cancel: &CancellationToken,
) -> Result<Arc<crate::sandbox::CachedBundle>, JobError> {
    if let Some(bundle) = session.sandbox.cached_bundle(version_hash).await {
        return Ok(bundle);
    }
    let bundle = session
        .client
        .bundle(challenge_id)
        .await
        .map_err(|error| match error {
            ClientError::Refused { .. } => {
                JobError::Terminal(format!("cannot fetch the challenge bundle: {error}"))
            }
            _ => JobError::Retryable(format!("cannot fetch the challenge bundle: {error}")),
        })?;
    if bundle.version_hash != version_hash {
        return Err(JobError::Retryable(format!(
            "the coordinator served bundle {} but the attempt needs {version_hash}",
            bundle.version_hash
        )));
    }
    session.sandbox.install_bundle(bundle, cancel).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut backoff = Backoff::new();
        let first = backoff.next_delay();
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(375));
        let second = backoff.next_delay();
        assert!(second >= Duration::from_millis(500));
        for _ in 0..20 {
            assert!(backoff.next_delay() <= Duration::from_secs(45));
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(375));
    }

    #[tokio::test(start_paused = true)]
    async fn pause_stops_early_on_cancel() {
        let cancel = CancellationToken::new();
        assert!(pause(Duration::from_secs(5), &cancel).await);
        cancel.cancel();
        assert!(!pause(Duration::from_secs(5), &cancel).await);
    }
}
