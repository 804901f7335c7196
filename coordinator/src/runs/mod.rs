//! Grading runs: a professor grades a whole roster of one challenge at
//! once (Broadway's grading run). Each item is an ordinary attempt job on
//! the challenge's lane whose result goes to the item, never to the
//! student's attempt (`jobs::runs`); a grader dying mid-item is handled by
//! the jobs' own lease machinery, and an item out of tries ends in ERROR.
//!
//! This service creates runs, feeds their items to the queue, pauses
//! (queued jobs are cancelled and their items queued again on resume, so a
//! paused run holds no lease and its state survives a restart), cancels,
//! retries the items in ERROR, and runs postprocessing exactly once after
//! the last item ended: the store's fan-in moves the run to
//! POSTPROCESSING, one coordinator claims it, builds the gradebook and
//! calls the webhook. A background loop (woken by the jobs service, and
//! every sweep interval) does whatever runs need after a restart.

pub mod webhook;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlarena_common::runs::{
    AttemptRule, ItemState, PostprocessingState, RunItemRef, RunMode, RunState,
};
use sqlarena_common::{AttemptId, AttemptStatus, ChallengeState, ChallengeType, RunId, UserId};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::jobs::{Jobs, JobsError, PAUSE_REASON};
use crate::store::runs::{
    GradableAttempt, GradableQuery, NewRun, NewRunItem, Run, RunSpec, RunTargets,
};
use crate::store::{Attempt, Challenge, Store, StoreError, User};

/// Most targets one run may have.
pub const MAX_TARGETS: usize = 100_000;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;
/// Longest webhook URL.
pub const MAX_WEBHOOK_URL: usize = 2048;
/// Items fed to the queue per store call.
const FEED_BATCH: u32 = 1000;
/// How long a postprocessing claim lasts before another coordinator may
/// take it over (renewed before each webhook try).
const CLAIM_FOR: chrono::Duration = chrono::Duration::seconds(60);

/// What the runs service refuses, and faults beneath it.
#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// A field of the request breaks a rule.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Jobs(#[from] JobsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result alias of the runs service.
pub type RunsResult<T> = Result<T, RunsError>;

/// A run asked for.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub spec: RunSpec,
    pub idempotency_key: Option<String>,
    /// Start at once; otherwise the run waits QUEUED for [`Runs::start`].
    pub start: bool,
}

/// A run as created, with the webhook secret when it was made for this run
/// (shown once).
#[derive(Debug, Clone)]
pub struct CreatedRun {
    pub run: Run,
    pub created: bool,
    pub webhook_secret: Option<String>,
}

/// A student whose status or score a run would change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub user_id: UserId,
    pub attempt_id: sqlarena_common::AttemptId,
    /// Where the published result comes from: `run N` or `attempt N`.
    pub published_from: String,
    pub published_status: Option<AttemptStatus>,
    pub published_score: Option<f64>,
    pub status: Option<AttemptStatus>,
    pub score: Option<f64>,
}

/// The runs service; cheap to clone.
#[derive(Clone)]
pub struct Runs {
    store: Arc<dyn Store>,
    jobs: Jobs,
    http: reqwest::Client,
    retry: webhook::RetryPolicy,
    sweep_interval: Duration,
    shutdown: CancellationToken,
}

impl Runs {
    /// Creates the service.
    pub fn new(
        store: Arc<dyn Store>,
        jobs: Jobs,
        config: &Config,
        shutdown: CancellationToken,
    ) -> Runs {
        let retry = webhook::RetryPolicy {
            first_backoff: Duration::from_millis(config.webhook_backoff_ms.max(1)),
            max_backoff: Duration::from_secs(300),
            give_up_after: Duration::from_secs(config.webhook_retry_secs),
            timeout: Duration::from_secs(10),
        };
        Runs {
            store,
            jobs,
            http: reqwest::Client::new(),
            retry,
            sweep_interval: Duration::from_millis(config.reaper_interval_ms.max(50) * 4),
            shutdown,
        }
    }

    /// Returns a run `viewer` may see: its creator, the challenge's
    /// professor, or an admin.
    ///
    /// # Errors
    /// `NotFound`, or `Forbidden` for anyone else.
    pub async fn visible_run(&self, viewer: &User, id: RunId) -> RunsResult<Run> {
        let run = self
            .store
            .get_run(id)
            .await?
            .ok_or_else(|| RunsError::NotFound(format!("no run {id}")))?;
        if viewer.role == sqlarena_common::Role::Admin || run.created_by == viewer.id {
            return Ok(run);
        }
        let owns_challenge = self
            .store
            .get_challenge(run.spec.challenge_id)
            .await?
            .is_some_and(|challenge| challenge.created_user_id == viewer.id);
        if owns_challenge {
            return Ok(run);
        }
        Err(RunsError::Forbidden(
            "only the run's professor, the challenge's professor or an admin may see or control this run"
                .into(),
        ))
    }

    /// Creates a run for `creator`: one item per target, the attempt each
    /// is graded with chosen by the rule; started at once when asked.
    /// A repeated idempotency key returns the run it created.
    ///
    /// # Errors
    /// `NotFound` for an unknown challenge; `Forbidden` unless `creator`
    /// is its professor or an admin; `Conflict` while it is not READY;
    /// `Invalid` for a bad target list or webhook URL.
    pub async fn create(&self, creator: &User, request: RunRequest) -> RunsResult<CreatedRun> {
        check_spec(&request)?;
        let challenge_id = request.spec.challenge_id;
        let challenge = self
            .store
            .get_challenge(challenge_id)
            .await?
            .ok_or_else(|| {
                RunsError::NotFound(format!("challenge_id: no challenge {challenge_id}"))
            })?;
        if challenge.created_user_id != creator.id && creator.role != sqlarena_common::Role::Admin {
            return Err(RunsError::Forbidden(format!(
                "challenge {challenge_id} is another professor's: only its professor or an admin may grade it"
            )));
        }
        if challenge.state != ChallengeState::Ready {
            return Err(RunsError::Conflict(format!(
                "challenge {challenge_id} is {}: a run needs it READY",
                challenge.state
            )));
        }
        let items = self.choose_items(&challenge, &request.spec).await?;
        let webhook_secret = match &request.spec.webhook_url {
            Some(_) => {
                let fresh = crate::auth::new_token("sqw_");
                let (_, created) = self.store.webhook_secret(creator.id, fresh.clone()).await?;
                created.then_some(fresh)
            }
            None => None,
        };
        let new_run = NewRun {
            spec: request.spec,
            challenge_version: challenge.version,
            created_by: creator.id,
            idempotency_key: request.idempotency_key,
            items,
            start: request.start,
        };
        let (run, created) = self.store.create_run(new_run, Utc::now()).await?;
        if created {
            tracing::info!(run_id = %run.id, challenge_id = %challenge_id, items = run.counts.total, "run created");
            self.after_change(&run).await?;
        }
        let run = self.store.get_run(run.id).await?.unwrap_or(run);
        Ok(CreatedRun {
            run,
            created,
            webhook_secret,
        })
    }

    /// Picks each target's attempt by the run's rule: one store call for
    /// the attempts (of the listed students only, when listed; with their
    /// cases' ratios only for `best`) and one for the listed students'
    /// existence, whatever their number.
    async fn choose_items(
        &self,
        challenge: &Challenge,
        spec: &RunSpec,
    ) -> RunsResult<Vec<NewRunItem>> {
        let listed = match &spec.targets {
            RunTargets::All(_) => None,
            RunTargets::Users(users) => {
                let missing = self.store.missing_users(users.clone()).await?;
                if let Some(user) = missing.first() {
                    return Err(RunsError::Invalid(format!(
                        "targets: there is no user {user}"
                    )));
                }
                Some(users.clone())
            }
        };
        let attempts = self
            .store
            .list_gradable_attempts(GradableQuery {
                challenge_id: spec.challenge_id,
                users: listed.clone(),
                ratios: spec.attempt == AttemptRule::Best,
            })
            .await?;
        let mut by_user: BTreeMap<UserId, Vec<GradableAttempt>> = BTreeMap::new();
        for attempt in attempts {
            by_user.entry(attempt.user_id).or_default().push(attempt);
        }
        let targets: Vec<UserId> = listed.unwrap_or_else(|| by_user.keys().copied().collect());
        Ok(targets
            .into_iter()
            .map(|user_id| NewRunItem {
                user_id,
                attempt_id: by_user.get(&user_id).and_then(|attempts| {
                    choose(attempts, spec.attempt, challenge.challenge_type)
                        .map(|attempt| attempt.id)
                }),
            })
            .collect())
    }

    /// Starts a QUEUED run (Broadway's `POST /grading_run/{id}`).
    ///
    /// # Errors
    /// `Conflict` when it is not QUEUED.
    pub async fn start(&self, run: &Run) -> RunsResult<Run> {
        let Some(run) = self.store.start_run(run.id, Utc::now()).await? else {
            return Err(RunsError::Conflict(format!(
                "run {} is {}: only a QUEUED run can be started",
                run.id, run.state
            )));
        };
        self.after_change(&run).await?;
        self.reload(run).await
    }

    /// Pauses a RUNNING run at the next item boundary: running items
    /// finish, queued ones leave the queue until resumed.
    ///
    /// # Errors
    /// `Conflict` when it is not RUNNING.
    pub async fn pause(&self, run: &Run) -> RunsResult<Run> {
        let Some(paused) = self.store.set_run_paused(run.id, true).await? else {
            return Err(RunsError::Conflict(format!(
                "run {} is {}: only a RUNNING run can be paused",
                run.id, run.state
            )));
        };
        self.unqueue(&paused).await?;
        self.jobs.announce_run(run.id);
        self.reload(paused).await
    }

    /// Takes a paused run's queued jobs out of the queue; their items are
    /// queued again on resume.
    async fn unqueue(&self, run: &Run) -> RunsResult<()> {
        let mut after = None;
        loop {
            let items = self
                .store
                .list_run_items(run.id, Some(ItemState::Queued), after, FEED_BATCH)
                .await?;
            let Some(last) = items.last() else {
                return Ok(());
            };
            after = Some(last.item);
            for item in items {
                let Some(job_id) = item.job_id else {
                    continue;
                };
                if let Some(job) = self
                    .store
                    .cancel_job(job_id, PAUSE_REASON, Utc::now())
                    .await?
                {
                    self.store
                        .detach_item_job(run.id, item.item, job.id)
                        .await?;
                    self.jobs.apply_finished_job(&job).await?;
                }
            }
        }
    }

    /// Resumes a PAUSED run.
    ///
    /// # Errors
    /// `Conflict` when it is not PAUSED.
    pub async fn resume(&self, run: &Run) -> RunsResult<Run> {
        let Some(resumed) = self.store.set_run_paused(run.id, false).await? else {
            return Err(RunsError::Conflict(format!(
                "run {} is {}: only a PAUSED run can be resumed",
                run.id, run.state
            )));
        };
        self.after_change(&resumed).await?;
        self.reload(resumed).await
    }

    /// Cancels a run: nothing more is graded; running items are stopped
    /// through their graders' heartbeats. Postprocessing still runs once
    /// (the gradebook of what was graded).
    ///
    /// # Errors
    /// `Conflict` once the run is past cancelling.
    pub async fn cancel(&self, run: &Run) -> RunsResult<Run> {
        let Some(cancelling) = self.store.request_run_cancel(run.id, Utc::now()).await? else {
            return Err(RunsError::Conflict(format!(
                "run {} is {}: it can no longer be cancelled",
                run.id, run.state
            )));
        };
        self.cancel_items(&cancelling, "its run was cancelled")
            .await?;
        self.after_change(&cancelling).await?;
        self.reload(cancelling).await
    }

    /// Cancels every job of a run's unfinished items.
    async fn cancel_items(&self, run: &Run, reason: &str) -> RunsResult<()> {
        let mut after = None;
        loop {
            let items = self
                .store
                .list_run_items(run.id, None, after, FEED_BATCH)
                .await?;
            let Some(last) = items.last() else {
                break;
            };
            after = Some(last.item);
            for item in items.iter().filter(|item| !item.state.is_final()) {
                if let Some(job_id) = item.job_id {
                    match self.jobs.cancel_job(job_id, reason).await {
                        Ok(_) | Err(JobsError::Conflict(_) | JobsError::NotFound(_)) => {}
                        Err(error) => return Err(error.into()),
                    }
                }
            }
        }
        // Items whose job was unlinked meanwhile, and a run whose last item
        // ended as it was marked.
        self.store.request_run_cancel(run.id, Utc::now()).await?;
        Ok(())
    }

    /// Queues again the items in ERROR of a finished run.
    ///
    /// # Errors
    /// `Conflict` when the run is not finished or has none in ERROR.
    pub async fn retry(&self, run: &Run) -> RunsResult<Run> {
        let Some(retried) = self.store.retry_run_errors(run.id).await? else {
            return Err(RunsError::Conflict(format!(
                "run {} is {} with {} items in ERROR: only a finished run's items in ERROR can be retried",
                run.id, run.state, run.counts.error
            )));
        };
        self.after_change(&retried).await?;
        self.reload(retried).await
    }

    /// Lists the students whose status or score the run would change:
    /// each item against the challenge's latest published run, or, where
    /// none graded the student, the attempt's own result.
    ///
    /// # Errors
    /// `Conflict` until the run has finished.
    pub async fn diff(&self, run: &Run) -> RunsResult<Vec<Change>> {
        if !run.state.is_final() {
            return Err(RunsError::Conflict(format!(
                "run {} is {}: its diff is known once it has finished",
                run.id, run.state
            )));
        }
        let published = self
            .store
            .latest_published_run(run.spec.challenge_id, run.id)
            .await?;
        let mut before: BTreeMap<i64, (Option<AttemptStatus>, Option<f64>, String)> =
            BTreeMap::new();
        if let Some(published) = &published {
            for item in self
                .store
                .list_run_items(published.id, None, None, 0)
                .await?
            {
                before.insert(
                    item.user_id.0,
                    (
                        item.result.status,
                        item.result.score,
                        format!("run {}", published.id),
                    ),
                );
            }
        }
        let mut changes = Vec::new();
        for item in self.store.list_run_items(run.id, None, None, 0).await? {
            let Some(attempt_id) = item.attempt_id else {
                continue;
            };
            let was = match before.get(&item.user_id.0) {
                Some(was) => was.clone(),
                None => match self.store.get_attempt(attempt_id).await? {
                    Some(attempt) => {
                        let passed = attempt
                            .cases
                            .iter()
                            .filter(|case| case.status == sqlarena_common::CaseStatus::Passed)
                            .count();
                        let score = (!attempt.cases.is_empty()).then(|| {
                            (passed as f64 * 10_000.0 / attempt.cases.len() as f64).round() / 100.0
                        });
                        (Some(attempt.status), score, format!("attempt {attempt_id}"))
                    }
                    None => continue,
                },
            };
            let score_changed = match (was.1, item.result.score) {
                (Some(a), Some(b)) => (a - b).abs() > 1e-9,
                (a, b) => a.is_some() != b.is_some(),
            };
            if was.0 != item.result.status || score_changed {
                changes.push(Change {
                    user_id: item.user_id,
                    attempt_id,
                    published_from: was.2,
                    published_status: was.0,
                    published_score: was.1,
                    status: item.result.status,
                    score: item.result.score,
                });
            }
        }
        Ok(changes)
    }

    /// Publishes a finished shadow run: its results become the published
    /// ones (the earlier ones are kept, no longer the latest).
    ///
    /// # Errors
    /// `Conflict` unless the run is a finished, unpublished shadow run
    /// without cancelled or failed items.
    pub async fn publish(&self, run: &Run) -> RunsResult<Run> {
        if run.spec.mode != RunMode::Shadow {
            return Err(RunsError::Conflict(format!(
                "run {} is a publish run: its results are published already",
                run.id
            )));
        }
        let Some(published) = self.store.publish_run(run.id).await? else {
            return Err(RunsError::Conflict(format!(
                "run {} is {}{}: only a COMPLETED or COMPLETED_WITH_ERRORS shadow run can be published, once",
                run.id,
                run.state,
                if run.published { " and published" } else { "" }
            )));
        };
        self.jobs.announce_run(run.id);
        Ok(published)
    }

    async fn reload(&self, run: Run) -> RunsResult<Run> {
        Ok(self.store.get_run(run.id).await?.unwrap_or(run))
    }

    /// Does what a run needs after it changed: feed a running run's items
    /// to the queue, postprocess one whose items all ended.
    async fn after_change(&self, run: &Run) -> RunsResult<()> {
        self.jobs.announce_run(run.id);
        self.advance(run).await
    }

    /// Feeds a running run, cancels a failing one, wakes postprocessing.
    async fn advance(&self, run: &Run) -> RunsResult<()> {
        match run.state {
            RunState::Running if run.failing && !run.cancel_requested => {
                if let Some(cancelling) = self.store.request_run_cancel(run.id, Utc::now()).await? {
                    self.cancel_items(
                        &cancelling,
                        "an item of its run failed (on_item_failure is fail_run)",
                    )
                    .await?;
                }
            }
            RunState::Running if !run.cancel_requested => self.feed(run).await?,
            RunState::Postprocessing => {
                self.jobs.run_wakeup().notify_one();
            }
            _ => {}
        }
        Ok(())
    }

    /// Queues a job for every QUEUED item of a RUNNING run that has none.
    async fn feed(&self, run: &Run) -> RunsResult<()> {
        let Some(challenge) = self.store.get_challenge(run.spec.challenge_id).await? else {
            return Ok(());
        };
        loop {
            let items = self.store.list_unqueued_items(run.id, FEED_BATCH).await?;
            if items.is_empty() {
                return Ok(());
            }
            let ids: Vec<AttemptId> = items.iter().filter_map(|item| item.attempt_id).collect();
            let attempts: HashMap<AttemptId, Attempt> = self
                .store
                .get_attempts(ids)
                .await?
                .into_iter()
                .map(|attempt| (attempt.id, attempt))
                .collect();
            let mut jobs = Vec::with_capacity(items.len());
            for item in &items {
                let Some(attempt) = item.attempt_id.and_then(|id| attempts.get(&id)) else {
                    continue;
                };
                let reference = RunItemRef {
                    run_id: run.id,
                    item: item.item,
                };
                jobs.push((
                    item.item,
                    self.jobs.run_item_job(&challenge, attempt, reference),
                ));
            }
            if self.jobs.queue_run_items(run.id, jobs).await? == 0 {
                // The run stopped running meanwhile, or another feeder
                // got there first.
                return Ok(());
            }
        }
    }

    /// Runs until shutdown: on every wake-up from the jobs service and
    /// every sweep interval, does what each active run needs (feeding after
    /// a restart, cancelling a failing run, postprocessing).
    pub async fn run_loop(self) {
        let wakeup = self.jobs.run_wakeup().clone();
        loop {
            if let Err(error) = self.sweep().await {
                tracing::warn!(error = %error, "runs sweep failed");
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = wakeup.notified() => {}
                () = tokio::time::sleep(self.sweep_interval) => {}
            }
        }
    }

    /// One pass over the active runs.
    ///
    /// # Errors
    /// Store failures.
    pub async fn sweep(&self) -> RunsResult<()> {
        for run in self.store.list_active_runs().await? {
            let run = self.store.recount_run(run.id).await?.unwrap_or(run);
            if run.state == RunState::Postprocessing {
                // Its own task: a webhook may be retried for an hour. A
                // second task for the same run loses the claim and returns.
                let runs = self.clone();
                tokio::spawn(async move {
                    let id = run.id;
                    if let Err(error) = runs.postprocess(run).await {
                        tracing::warn!(run_id = %id, error = %error, "postprocessing failed; the sweep tries again");
                    }
                });
            } else {
                self.advance(&run).await?;
            }
        }
        Ok(())
    }

    /// Postprocesses a run whose items all ended, if this coordinator wins
    /// its claim: builds the gradebook, calls the webhook, ends the run.
    async fn postprocess(&self, run: Run) -> RunsResult<()> {
        let token = Uuid::now_v7();
        let now = Utc::now();
        let Some(run) = self
            .store
            .claim_postprocessing(run.id, token, now, now + CLAIM_FOR)
            .await?
        else {
            return Ok(());
        };
        tracing::info!(run_id = %run.id, "postprocessing run");
        let assessments = crate::assessments::Assessments::new(
            self.store.clone(),
            self.jobs.clone(),
            self.retry.timeout,
        );
        let gradebook =
            crate::exports::run_gradebook(self.store.as_ref(), &assessments, &run).await?;
        let final_state = final_state(&run);
        let delivered = match &run.spec.webhook_url {
            Some(url) => self.call_webhook(&run, token, url, final_state).await?,
            None => true,
        };
        let postprocessing = if delivered {
            PostprocessingState::Done
        } else {
            PostprocessingState::Failed
        };
        let finished = self
            .store
            .finish_postprocessing(
                run.id,
                token,
                gradebook,
                postprocessing,
                final_state,
                Utc::now(),
            )
            .await?;
        if finished {
            tracing::info!(run_id = %run.id, state = %final_state, "run finished");
        }
        self.jobs.announce_run(run.id);
        Ok(())
    }

    /// Calls the run's webhook until it answers 2xx or the retry window
    /// closes (a call that already succeeded, before a crash, is not
    /// repeated). Returns whether it succeeded.
    async fn call_webhook(
        &self,
        run: &Run,
        token: Uuid,
        url: &str,
        final_state: RunState,
    ) -> RunsResult<bool> {
        let earlier = self.store.list_deliveries(run.id).await?;
        if earlier.iter().any(|delivery| {
            delivery.succeeded() && run.started_at.is_none_or(|started| delivery.at >= started)
        }) {
            return Ok(true);
        }
        let (secret, _) = self
            .store
            .webhook_secret(run.created_by, crate::auth::new_token("sqw_"))
            .await?;
        let body = serde_json::to_vec(&serde_json::json!({
            "run_id": run.id,
            "challenge_id": run.spec.challenge_id,
            "state": final_state,
            "total": run.counts.total,
            "done": run.counts.done,
            "error": run.counts.error,
            "cancelled": run.counts.cancelled,
            "gradebook_url": format!("/api/v1/runs/{}/gradebook", run.id),
        }))
        .map_err(|error| StoreError::Backend(error.to_string()))?;
        let call = webhook::Call {
            url,
            secret: &secret,
            body: &body,
            delivery_id: Uuid::now_v7(),
            run_id: run.id,
        };
        let started = Instant::now();
        let mut backoff = self.retry.first_backoff;
        let mut attempt = earlier.len() as u32;
        loop {
            attempt += 1;
            let now = Utc::now();
            if self
                .store
                .claim_postprocessing(
                    run.id,
                    token,
                    now,
                    // Held through this try and the wait before the next.
                    now + CLAIM_FOR
                        + chrono::Duration::from_std(self.retry.timeout + backoff)
                            .unwrap_or_default(),
                )
                .await?
                .is_none()
            {
                return Ok(false);
            }
            let delivery = webhook::try_once(&self.http, &call, attempt, self.retry.timeout).await;
            let succeeded = delivery.succeeded();
            tracing::info!(run_id = %run.id, attempt, status = ?delivery.status_code, error = ?delivery.error, "webhook delivery");
            self.store.record_delivery(delivery).await?;
            if succeeded {
                return Ok(true);
            }
            if started.elapsed() + backoff > self.retry.give_up_after {
                return Ok(false);
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return Ok(false),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.retry.max_backoff);
        }
    }
}

/// Estimated seconds until every item of `run` has ended, from the pace so
/// far (0 while postprocessing; unknown before the first item ends).
pub fn eta_seconds(run: &Run) -> Option<f64> {
    let ended = run.counts.ended();
    let remaining = run.counts.total.saturating_sub(ended);
    match (run.started_at, run.state) {
        (_, RunState::Postprocessing) => Some(0.0),
        (Some(started), RunState::Running) if ended > 0 && remaining > 0 => {
            let elapsed = (Utc::now() - started).num_milliseconds().max(0) as f64 / 1000.0;
            Some((elapsed / ended as f64 * remaining as f64 * 10.0).round() / 10.0)
        }
        _ => None,
    }
}

/// The state a run ends in once postprocessed.
fn final_state(run: &Run) -> RunState {
    if run.cancel_requested && !run.failing {
        RunState::Cancelled
    } else if run.failing {
        RunState::Failed
    } else if run.counts.error > 0 {
        RunState::CompletedWithErrors
    } else {
        RunState::Completed
    }
}

/// Checks what can be checked without the store.
fn check_spec(request: &RunRequest) -> RunsResult<()> {
    if let RunTargets::Users(users) = &request.spec.targets {
        if users.is_empty() {
            return Err(RunsError::Invalid(
                "targets: give \"all\" or at least one user id".into(),
            ));
        }
        if users.len() > MAX_TARGETS {
            return Err(RunsError::Invalid(format!(
                "targets: at most {MAX_TARGETS} users"
            )));
        }
        let distinct: BTreeSet<_> = users.iter().collect();
        if distinct.len() != users.len() {
            return Err(RunsError::Invalid(
                "targets: a user id is listed twice".into(),
            ));
        }
    }
    if let Some(key) = &request.idempotency_key {
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
            return Err(RunsError::Invalid(format!(
                "idempotency_key: 1 to {MAX_IDEMPOTENCY_KEY} bytes"
            )));
        }
    }
    if let Some(url) = &request.spec.webhook_url {
        check_webhook_url(url)?;
    }
    Ok(())
}

/// A webhook URL must be an absolute http(s) URL with a host.
fn check_webhook_url(url: &str) -> RunsResult<()> {
    if url.len() > MAX_WEBHOOK_URL {
        return Err(RunsError::Invalid(format!(
            "webhook_url: at most {MAX_WEBHOOK_URL} bytes"
        )));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|error| RunsError::Invalid(format!("webhook_url: not a URL ({error})")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(RunsError::Invalid(
            "webhook_url: must be an http:// or https:// URL with a host".into(),
        ));
    }
    Ok(())
}

/// The attempt a rule picks among one student's graded attempts (oldest
/// first): the latest, or the best passing one by the leaderboard's order
/// (FE: lowest mean ratio, SE: highest; ties to the later), else the
/// latest.
fn choose(
    attempts: &[GradableAttempt],
    rule: AttemptRule,
    challenge_type: ChallengeType,
) -> Option<&GradableAttempt> {
    let latest = attempts.iter().max_by_key(|attempt| attempt.id);
    match rule {
        AttemptRule::Latest => latest,
        AttemptRule::Best => {
            let ratio = |attempt: &GradableAttempt| -> f64 {
                let ratios: Vec<f64> = attempt
                    .ratios
                    .iter()
                    .copied()
                    .filter(|ratio| *ratio > 0.0)
                    .collect();
                if ratios.is_empty() {
                    return 1.0;
                }
                (ratios.iter().map(|ratio| ratio.ln()).sum::<f64>() / ratios.len() as f64).exp()
            };
            let key = |attempt: &GradableAttempt| match challenge_type {
                ChallengeType::FE => ratio(attempt),
                ChallengeType::SE => -ratio(attempt),
            };
            attempts
                .iter()
                .filter(|attempt| attempt.status == AttemptStatus::Passed)
                .min_by(|a, b| key(a).total_cmp(&key(b)).then(b.id.cmp(&a.id)))
                .or(latest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(id: i64, status: AttemptStatus, ratio: f64) -> GradableAttempt {
        GradableAttempt {
            id: AttemptId(id),
            user_id: UserId(1),
            status,
            ratios: vec![ratio],
        }
    }

    #[test]
    fn rules_pick_the_latest_or_the_best_passing() {
        let attempts = vec![
            attempt(1, AttemptStatus::Passed, 0.5),
            attempt(2, AttemptStatus::Passed, 2.0),
            attempt(3, AttemptStatus::Failed, 0.1),
        ];
        let pick = |rule, kind| choose(&attempts, rule, kind).map(|attempt| attempt.id.0);
        assert_eq!(pick(AttemptRule::Latest, ChallengeType::FE), Some(3));
        assert_eq!(pick(AttemptRule::Best, ChallengeType::FE), Some(1));
        assert_eq!(pick(AttemptRule::Best, ChallengeType::SE), Some(2));
        let failed = vec![attempt(4, AttemptStatus::Failed, 1.0)];
        assert_eq!(
            choose(&failed, AttemptRule::Best, ChallengeType::FE).map(|attempt| attempt.id.0),
            Some(4)
        );
    }

    #[test]
    fn webhook_urls_must_be_http_with_a_host() {
        assert!(check_webhook_url("http://127.0.0.1:9/hook").is_ok());
        assert!(check_webhook_url("https://example.edu/x").is_ok());
        for bad in [
            "ftp://example.edu/",
            "file:///etc/passwd",
            "not a url",
            "http://",
        ] {
            assert!(check_webhook_url(bad).is_err(), "{bad}");
        }
    }
}
