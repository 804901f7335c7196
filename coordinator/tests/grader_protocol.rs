//! The grader protocol over real HTTP against a running coordinator, with a
//! scripted grader client, on both stores: racing graders, dead graders,
//! fencing, cancel, drain, deregister, max tries, restarts, and two
//! coordinators sharing one MongoDB database.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlarena_common::{
    AttemptId, AttemptOutcome, AttemptStatus, CaseResult, CaseStatus, ChallengeType, GraderId,
    HeartbeatResponse, HeldLease, JobId, JobOutcome, JobPayload, JobState, Lane, LeaseBatch,
    LeaseId, LeasedJob, RegisterGraderResponse, Role,
};
use sqlarena_coordinator::config::Config;
use sqlarena_coordinator::state::AppState;
use sqlarena_coordinator::store::{
    self, NewAttempt, NewChallenge, NewTestCase, NewUser, Page, Store,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const CLUSTER_TOKEN: &str = "test-cluster-token-0123456789";

/// A store and the URI it was opened from.
struct StoreSpec {
    uri: String,
}

fn sqlite_spec() -> StoreSpec {
    let dir = std::env::temp_dir().join(format!("sqlarena-protocol-{}", Uuid::new_v4().simple()));
    StoreSpec {
        uri: format!("sqlite://{}/store.db", dir.display()),
    }
}

fn mongo_spec() -> StoreSpec {
    StoreSpec {
        uri: sqlarena_e2e::mongo::test_mongodb_uri(),
    }
}

/// A coordinator serving in this process.
struct Coordinator {
    state: AppState,
    base: String,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Coordinator {
    async fn start(store: Arc<dyn Store>, uri: &str) -> Coordinator {
        Coordinator::start_with_heartbeat(store, uri, 200).await
    }

    /// Starts a coordinator whose graders heartbeat every `heartbeat_ms`
    /// (dead after 3 missed).
    async fn start_with_heartbeat(
        store: Arc<dyn Store>,
        uri: &str,
        heartbeat_ms: u64,
    ) -> Coordinator {
        let mut config = Config::for_store(uri);
        config.cluster_token = Some(CLUSTER_TOKEN.into());
        config.heartbeat_interval_ms = heartbeat_ms;
        config.missed_heartbeats = 3;
        config.reaper_interval_ms = 50;
        config.max_tries = 3;
        config.admin_email = Some("admin@example.com".into());
        config.admin_password = Some("admin-password".into());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = AppState::new(store, config, CancellationToken::new());
        let task = tokio::spawn(sqlarena_coordinator::serve_state(state.clone(), listener));
        let coordinator = Coordinator { state, base, task };
        for _ in 0..100 {
            if reqwest::get(format!("{}/healthz", coordinator.base))
                .await
                .is_ok()
            {
                return coordinator;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("coordinator did not come up");
    }

    async fn stop(self) {
        self.state.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.state.store
    }

    async fn admin_token(&self) -> String {
        let reply: Value = reqwest::Client::new()
            .post(format!("{}/api/v1/login", self.base))
            .json(&json!({"email": "admin@example.com", "password": "admin-password"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        reply["data"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("login failed: {reply}"))
            .to_string()
    }
}

/// A grader driven step by step by the test.
#[derive(Clone)]
struct ScriptedGrader {
    http: reqwest::Client,
    base: String,
    id: GraderId,
    token: String,
}

impl ScriptedGrader {
    async fn register(base: &str, name: &str, lanes: &[Lane]) -> ScriptedGrader {
        ScriptedGrader::register_with(base, name, lanes, CLUSTER_TOKEN).await
    }

    async fn register_with(
        base: &str,
        name: &str,
        lanes: &[Lane],
        cluster_token: &str,
    ) -> ScriptedGrader {
        let http = reqwest::Client::new();
        let response = http
            .post(format!("{base}/api/v1/grader/register"))
            .bearer_auth(cluster_token)
            .json(&json!({"name": name, "hostname": "test-host", "version": "test", "lanes": lanes, "slots": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        let registered: RegisterGraderResponse =
            serde_json::from_value(body["data"].clone()).unwrap();
        assert_eq!(registered.heartbeat_interval_ms, 200);
        assert_eq!(registered.lease_timeout_ms, 600);
        ScriptedGrader {
            http,
            base: base.to_string(),
            id: registered.grader_id,
            token: registered.grader_token,
        }
    }

    /// Registers a grader with `slots` slots on a coordinator of any
    /// heartbeat interval.
    async fn register_slots(base: &str, name: &str, slots: u32) -> ScriptedGrader {
        let http = reqwest::Client::new();
        let response = http
            .post(format!("{base}/api/v1/grader/register"))
            .bearer_auth(CLUSTER_TOKEN)
            .json(&json!({"name": name, "hostname": "test-host", "version": "test", "lanes": ["fast"], "slots": slots}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        let registered: RegisterGraderResponse =
            serde_json::from_value(body["data"].clone()).unwrap();
        ScriptedGrader {
            http,
            base: base.to_string(),
            id: registered.grader_id,
            token: registered.grader_token,
        }
    }

    /// The same grader talking to another coordinator, on its own
    /// connections.
    fn via(&self, base: &str) -> ScriptedGrader {
        ScriptedGrader {
            http: reqwest::Client::new(),
            base: base.to_string(),
            ..self.clone()
        }
    }

    /// Leases up to `max_jobs` in one request (the batch form).
    async fn lease_batch(&self, wait_ms: u64, max_jobs: u32) -> Vec<LeasedJob> {
        let (status, body) = self
            .post(
                &format!("/jobs/lease?wait_ms={wait_ms}&max_jobs={max_jobs}"),
                json!({}),
            )
            .await;
        match status {
            StatusCode::OK => {
                serde_json::from_value::<LeaseBatch>(body["data"].clone())
                    .unwrap()
                    .jobs
            }
            StatusCode::NO_CONTENT => Vec::new(),
            other => panic!("batch lease answered {other}: {body}"),
        }
    }

    /// Opens the presence stream on its own connection: it stays open while
    /// the answer is held, and closes (as when the process dies) when it is
    /// dropped.
    async fn presence(&self) -> reqwest::Response {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/grader/presence", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "the presence stream opens"
        );
        response
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/api/v1/grader{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = if status == StatusCode::NO_CONTENT {
            Value::Null
        } else {
            response.json().await.unwrap()
        };
        (status, body)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}/api/v1/grader{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn lease(&self, wait_ms: u64) -> Option<LeasedJob> {
        let (status, body) = self
            .post(&format!("/jobs/lease?wait_ms={wait_ms}"), json!({}))
            .await;
        match status {
            StatusCode::OK => Some(serde_json::from_value(body["data"].clone()).unwrap()),
            StatusCode::NO_CONTENT => None,
            other => panic!("lease answered {other}: {body}"),
        }
    }

    async fn heartbeat(&self, leases: &[&LeasedJob]) -> (StatusCode, Option<HeartbeatResponse>) {
        let held: Vec<HeldLease> = leases
            .iter()
            .map(|job| HeldLease {
                job_id: job.job_id,
                lease_id: job.lease_id,
            })
            .collect();
        let (status, body) = self.post("/heartbeat", json!({ "leases": held })).await;
        (status, serde_json::from_value(body["data"].clone()).ok())
    }

    /// Heartbeats every 100 ms until the returned guard is dropped, as a
    /// real grader does beside its work: only heartbeats keep it alive.
    fn keep_alive(&self) -> KeepAlive {
        let grader = self.clone();
        KeepAlive(tokio::spawn(async move {
            loop {
                let (status, _) = grader.heartbeat(&[]).await;
                assert_eq!(status, StatusCode::OK, "heartbeat refused");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }))
    }

    async fn complete(&self, job: &LeasedJob) -> (StatusCode, Value) {
        let outcome = passing_outcome(job);
        self.post(
            &format!("/jobs/{}/complete", job.job_id),
            json!({"lease_id": job.lease_id, "outcome": outcome}),
        )
        .await
    }

    async fn fail(&self, job: &LeasedJob, retryable: bool) -> (StatusCode, Value) {
        let body = json!({"lease_id": job.lease_id, "error": "postgres went away", "retryable": retryable});
        self.post(&format!("/jobs/{}/fail", job.job_id), body).await
    }
}

/// Stops a grader's background heartbeats when dropped.
struct KeepAlive(tokio::task::JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn passing_outcome(job: &LeasedJob) -> JobOutcome {
    let JobPayload::Attempt(payload) = &job.payload else {
        panic!("expected an attempt job")
    };
    JobOutcome::Attempt(AttemptOutcome {
        cases: payload
            .test_case_ids
            .iter()
            .map(|id| CaseResult {
                test_case_id: *id,
                status: CaseStatus::Passed,
                execution_ms: Some(1.0),
                min_ms: Some(1.0),
                reference_ms: Some(1.0),
                ratio: Some(1.0),
                actual_result: None,
                diff: None,
                error: None,
                timing: None,
                audit: None,
            })
            .collect(),
        error: None,
    })
}

/// Creates a user, a challenge and `count` attempts with their jobs queued.
async fn queue_attempts(state: &AppState, count: usize) -> Vec<(AttemptId, JobId)> {
    let store = &state.store;
    let user = store
        .create_user(NewUser {
            email: format!("student-{}@example.com", Uuid::new_v4().simple()),
            full_name: "Student".into(),
            role: Role::Student,
            password_hash: "x".into(),
        })
        .await
        .unwrap();
    let challenge = store
        .create_challenge(NewChallenge {
            created_user_id: user.id,
            name: "protocol".into(),
            description: None,
            challenge_type: ChallengeType::FE,
            init: "create table t(a int)".into(),
            solution: "select a from t".into(),
            times_to_run: 1,
            expires_at: Utc::now() + chrono::Duration::days(1),
            test_cases: vec![NewTestCase {
                data: "insert into t values (1)".into(),
                is_visible: true,
            }],
        })
        .await
        .unwrap();
    let mut queued = Vec::new();
    for index in 0..count {
        let attempt = store
            .create_attempt(NewAttempt {
                user_id: user.id,
                challenge_id: challenge.id,
                challenge_version: challenge.version,
                query: format!("select a from t -- {index}"),
            })
            .await
            .unwrap();
        let (attempt, job) = state
            .jobs
            .enqueue_attempt(&challenge, &attempt)
            .await
            .unwrap();
        queued.push((attempt.id, job.id));
    }
    queued
}

// ---------------------------------------------------------------------------
// The checks, each run on both stores
// ---------------------------------------------------------------------------

async fn racing_graders_complete_each_job_once(spec: StoreSpec) {
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start(store, &spec.uri).await;
    let queued = queue_attempts(&coordinator.state, 1000).await;
    let recorded = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for index in 0..4 {
        let grader =
            ScriptedGrader::register(&coordinator.base, &format!("racer-{index}"), &[Lane::Fast])
                .await;
        let recorded = recorded.clone();
        workers.push(tokio::spawn(async move {
            let _alive = grader.keep_alive();
            let mut seen = Vec::new();
            while let Some(job) = grader.lease(200).await {
                let (status, body) = grader.complete(&job).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                if body["data"]["recorded"] == json!(true) {
                    recorded.fetch_add(1, Ordering::SeqCst);
                }
                // The same completion posted again is not recorded twice.
                if seen.len() % 100 == 0 {
                    let (status, body) = grader.complete(&job).await;
                    assert_eq!(status, StatusCode::OK);
                    assert_eq!(body["data"]["recorded"], json!(false));
                }
                seen.push(job.job_id);
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    let distinct: HashSet<JobId> = all.iter().copied().collect();
    assert_eq!(all.len(), 1000, "every job leased once in all");
    assert_eq!(distinct.len(), 1000);
    assert_eq!(recorded.load(Ordering::SeqCst), 1000);
    for (attempt_id, job_id) in queued.iter().step_by(50) {
        let attempt = coordinator
            .store()
            .get_attempt(*attempt_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(attempt.status, AttemptStatus::Passed);
        let job = coordinator.store().get_job(*job_id).await.unwrap().unwrap();
        assert_eq!(
            (job.state, job.tries, job.applied),
            (JobState::Done, 1, true)
        );
    }
    coordinator.stop().await;
}

async fn silent_grader_loses_its_job_to_another(spec: StoreSpec) {
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start(store, &spec.uri).await;
    let queued = queue_attempts(&coordinator.state, 1).await;
    let silent = ScriptedGrader::register(&coordinator.base, "silent", &[Lane::Fast]).await;
    let taken = silent.lease(1000).await.expect("a job");
    let healthy = ScriptedGrader::register(&coordinator.base, "healthy", &[Lane::Fast]).await;
    // The healthy grader keeps heartbeating while it waits for the requeue.
    let mut requeued = None;
    for _ in 0..40 {
        let (status, _) = healthy.heartbeat(&[]).await;
        assert_eq!(status, StatusCode::OK);
        if let Some(job) = healthy.lease(100).await {
            requeued = Some(job);
            break;
        }
    }
    let requeued = requeued.expect("the silent grader's job was requeued within 4 s");
    assert_eq!(requeued.job_id, taken.job_id);
    assert_ne!(requeued.lease_id, taken.lease_id);
    assert_eq!(requeued.tries, 2);
    // The dead grader is told to register again; its late result is refused.
    let (status, _) = silent.heartbeat(&[&taken]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = healthy.complete(&requeued).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = silent.complete(&taken).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // Even with a valid grader token, the stale lease is refused with 409.
    let fresh = ScriptedGrader::register(&coordinator.base, "other", &[Lane::Fast]).await;
    let (status, body) = fresh.complete(&taken).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["status"], "error");
    let job = coordinator
        .store()
        .get_job(queued[0].1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        job.lease.unwrap().lease_id,
        requeued.lease_id,
        "the recorded result is the live lease's"
    );
    let graders = coordinator.store().list_graders(Page::all()).await.unwrap();
    assert!(graders
        .iter()
        .any(|g| g.id == silent.id && g.state == sqlarena_common::GraderState::Dead));
    coordinator.stop().await;
}

async fn cancel_while_leased_reaches_the_grader(spec: StoreSpec) {
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start(store, &spec.uri).await;
    let queued = queue_attempts(&coordinator.state, 1).await;
    let grader = ScriptedGrader::register(&coordinator.base, "busy", &[Lane::Fast]).await;
    let job = grader.lease(1000).await.expect("a job");
    let admin = coordinator.admin_token().await;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/admin/jobs/{}/cancel",
            coordinator.base, job.job_id
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, reply) = grader.heartbeat(&[&job]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply.unwrap().cancel, vec![job.job_id]);
    let (status, _) = grader.complete(&job).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let attempt = coordinator
        .store()
        .get_attempt(queued[0].0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt.status, AttemptStatus::Cancelled);
    // Retrying puts it back in the queue and the attempt is graded after all.
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/admin/jobs/{}/retry",
            coordinator.base, job.job_id
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let again = grader.lease(1000).await.expect("the retried job");
    assert_eq!(again.job_id, job.job_id);
    assert_eq!(grader.complete(&again).await.0, StatusCode::OK);
    let attempt = coordinator
        .store()
        .get_attempt(queued[0].0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt.status, AttemptStatus::Passed);
    coordinator.stop().await;
}

/// A grader speaks only for its own leases: another grader that somehow
/// learned a lease id can neither report progress, fail nor complete it.
async fn graders_report_only_on_their_own_leases(spec: StoreSpec) {
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start(store, &spec.uri).await;
    let queued = queue_attempts(&coordinator.state, 1).await;
    let holder = ScriptedGrader::register(&coordinator.base, "holder", &[Lane::Fast]).await;
    let other = ScriptedGrader::register(&coordinator.base, "other", &[Lane::Fast]).await;
    let job = holder.lease(1000).await.expect("a job");
    let (status, body) = other.complete(&job).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not this grader's"),
        "{body}"
    );
    assert_eq!(other.fail(&job, false).await.0, StatusCode::CONFLICT);
    let JobOutcome::Attempt(outcome) = passing_outcome(&job) else {
        panic!("an attempt outcome")
    };
    let progress = json!({"lease_id": job.lease_id, "case": outcome.cases[0]});
    assert_eq!(
        other
            .post(&format!("/jobs/{}/progress", job.job_id), progress)
            .await
            .0,
        StatusCode::CONFLICT
    );
    let attempt = coordinator
        .store()
        .get_attempt(queued[0].0)
        .await
        .unwrap()
        .unwrap();
    assert!(!attempt.status.is_final(), "{attempt:?}");
    let stored = coordinator
        .store()
        .get_job(job.job_id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.progress.is_empty(), "{stored:?}");
    assert_eq!(holder.complete(&job).await.0, StatusCode::OK);
    let attempt = coordinator
        .store()
        .get_attempt(queued[0].0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt.status, AttemptStatus::Passed);
    coordinator.stop().await;
}

async fn drained_grader_finishes_but_takes_nothing_new(spec: StoreSpec) {
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start(store, &spec.uri).await;
    queue_attempts(&coordinator.state, 2).await;
    let grader = ScriptedGrader::register(&coordinator.base, "drained", &[Lane::Fast]).await;
    let job = grader.lease(1000).await.expect("a job");
    let admin = coordinator.admin_token().await;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/admin/graders/{}/drain",
            coordinator.base, grader.id
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, reply) = grader.heartbeat(&[&job]).await;
    let reply = reply.unwrap();
    assert!(reply.drain);
    assert!(reply.cancel.is_empty());
    assert_eq!(
        grader.complete(&job).await.0,
        StatusCode::OK,
        "a draining grader finishes its work"
    );
    assert!(
        grader.lease(200).await.is_none(),
        "a draining grader gets nothing new"
    );
    let queues: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/admin/queues", coordinator.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fast = queues["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|lane| lane["lane"] == "fast")
        .unwrap()
        .clone();
    assert_eq!(fast["queued"], 1);
    coordinator.stop().await;
}

async fn deregistering_releases_leases_at_once(spec: StoreSpec) {
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start(store, &spec.uri).await;
    queue_attempts(&coordinator.state, 1).await;
    let leaving = ScriptedGrader::register(&coordinator.base, "leaving", &[Lane::Fast]).await;
    let job = leaving.lease(1000).await.expect("a job");
    let (status, _) = leaving.post("/deregister", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let other = ScriptedGrader::register(&coordinator.base, "staying", &[Lane::Fast]).await;
    let again = other
        .lease(100)
        .await
        .expect("released at once, not after the heartbeat timeout");
    assert_eq!(again.job_id, job.job_id);
    assert_eq!(again.tries, 1, "a clean release does not count as a try");
    let (status, _) = leaving.heartbeat(&[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    coordinator.stop().await;
}

async fn job_fails_after_max_tries(spec: StoreSpec) {
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start(store, &spec.uri).await;
    let queued = queue_attempts(&coordinator.state, 1).await;
    let grader = ScriptedGrader::register(&coordinator.base, "unlucky", &[Lane::Fast]).await;
    for attempt in 1..=3 {
        let job = grader
            .lease(1000)
            .await
            .unwrap_or_else(|| panic!("try {attempt}"));
        assert_eq!(job.tries, attempt);
        let (status, body) = grader.fail(&job, true).await;
        assert_eq!(status, StatusCode::OK);
        let expected = if attempt < 3 { "QUEUED" } else { "FAILED" };
        assert_eq!(body["data"]["state"], expected);
    }
    assert!(grader.lease(100).await.is_none());
    let job = coordinator
        .store()
        .get_job(queued[0].1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert!(
        job.error
            .as_deref()
            .unwrap_or("")
            .contains("postgres went away"),
        "{:?}",
        job.error
    );
    let attempt = coordinator
        .store()
        .get_attempt(queued[0].0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt.status, AttemptStatus::Error);
    assert!(attempt.error.is_some());
    coordinator.stop().await;
}

async fn restarted_coordinator_keeps_leases(spec: StoreSpec) {
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start(store, &spec.uri).await;
    let queued = queue_attempts(&coordinator.state, 3).await;
    let grader = ScriptedGrader::register(&coordinator.base, "steady", &[Lane::Fast]).await;
    let job = grader.lease(1000).await.expect("a job");
    coordinator.stop().await;
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start(store, &spec.uri).await;
    let grader = ScriptedGrader {
        base: coordinator.base.clone(),
        ..grader
    };
    let (status, _) = grader.heartbeat(&[&job]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the grader survives a quick coordinator restart"
    );
    assert_eq!(grader.complete(&job).await.0, StatusCode::OK);
    let mut done = 1;
    while let Some(next) = grader.lease(200).await {
        assert_eq!(grader.complete(&next).await.0, StatusCode::OK);
        done += 1;
    }
    assert_eq!(done, 3, "no job was lost across the restart");
    for (attempt_id, _) in queued {
        let attempt = coordinator
            .store()
            .get_attempt(attempt_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(attempt.status, AttemptStatus::Passed);
    }
    coordinator.stop().await;
}

async fn unknown_jobs_and_bad_bodies_are_client_errors(spec: StoreSpec) {
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start(store, &spec.uri).await;
    let grader = ScriptedGrader::register(&coordinator.base, "careless", &[Lane::Fast]).await;
    let lease = Uuid::new_v4();
    let (status, body) = grader
        .post(
            &format!("/jobs/{}/complete", Uuid::new_v4()),
            json!({"lease_id": lease, "outcome": {"kind": "attempt", "cases": []}}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = grader.post("/jobs/not-a-uuid/fail", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = grader.post("/heartbeat", json!({"leases": "nope"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["status"], "error");
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/grader/register", coordinator.base))
        .bearer_auth("wrong-token")
        .json(&json!({"name": "x", "hostname": "h", "version": "v", "lanes": ["fast"], "slots": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let metrics = reqwest::get(format!("{}/metrics", coordinator.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sqlarena_queue_depth{lane=\"fast\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sqlarena_graders{state=\"ALIVE\"} 1"),
        "{metrics}"
    );
    coordinator.stop().await;
}

/// Revoking a cluster token cuts off the graders registered with it at
/// their next heartbeat: 401, DEAD, their jobs back in the queue without a
/// try counted; graders on other tokens carry on.
async fn revoking_a_cluster_token_cuts_off_its_graders(spec: StoreSpec) {
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start(store, &spec.uri).await;
    let admin = coordinator.admin_token().await;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/api/v1/admin/cluster-tokens", coordinator.base))
        .bearer_auth(&admin)
        .json(&json!({"label": "rack 2"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token_id = created["data"]["id"].as_str().unwrap().to_string();
    let secret = created["data"]["token"].as_str().unwrap().to_string();
    let doomed =
        ScriptedGrader::register_with(&coordinator.base, "doomed", &[Lane::Fast], &secret).await;
    let kept = ScriptedGrader::register(&coordinator.base, "kept", &[Lane::Fast]).await;
    let _kept_alive = kept.keep_alive();
    queue_attempts(&coordinator.state, 1).await;
    let job = {
        let _alive = doomed.keep_alive();
        let job = doomed.lease(2000).await.expect("the queued job");
        assert_eq!(doomed.heartbeat(&[&job]).await.0, StatusCode::OK);
        job
    };

    let revoked = http
        .delete(format!(
            "{}/api/v1/admin/cluster-tokens/{token_id}",
            coordinator.base
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    // Before its next heartbeat, the grader gets no bundle (solutions and
    // hidden data) for the job it still leases.
    let challenge_id = match &job.payload {
        JobPayload::Attempt(attempt) => attempt.challenge_id,
        JobPayload::Init(init) => init.challenge_id,
    };
    let (status, body) = doomed
        .get(&format!("/challenges/{challenge_id}/bundle"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("revoked"),
        "the grader is told why: {body}"
    );
    let (status, body) = doomed.post("/heartbeat", json!({"leases": []})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = doomed.post("/jobs/lease?wait_ms=0", json!({})).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "every later call is refused"
    );
    let grader = coordinator
        .store()
        .get_grader(doomed.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(grader.state, sqlarena_common::GraderState::Dead);
    let stored = coordinator
        .store()
        .get_job(job.job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.state,
        JobState::Queued,
        "its job is back in the queue"
    );
    assert_eq!(stored.tries, 0, "without a try counted against it");

    let again = kept
        .lease(2000)
        .await
        .expect("the other grader takes the job");
    assert_eq!(again.job_id, job.job_id);
    let refused = reqwest::Client::new()
        .post(format!("{}/api/v1/grader/register", coordinator.base))
        .bearer_auth(&secret)
        .json(&json!({"name": "again", "hostname": "h", "version": "v", "lanes": ["fast"], "slots": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    coordinator.stop().await;
}

/// A grader gets a challenge's bundle only while it holds a lease on a job
/// of that challenge; any other is 403, whether the challenge exists or not.
async fn bundles_go_only_to_lease_holders(spec: StoreSpec) {
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start(store, &spec.uri).await;
    let (attempt_id, _) = queue_attempts(&coordinator.state, 1).await[0];
    let challenge_id = coordinator
        .store()
        .get_attempt(attempt_id)
        .await
        .unwrap()
        .unwrap()
        .challenge_id;
    let holder = ScriptedGrader::register(&coordinator.base, "holder", &[Lane::Fast]).await;
    let other = ScriptedGrader::register(&coordinator.base, "other", &[Lane::Fast]).await;
    let (_holder_alive, _other_alive) = (holder.keep_alive(), other.keep_alive());
    let bundle = format!("/challenges/{challenge_id}/bundle");

    let (status, body) = holder.get(&bundle).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "before the lease: {body}");
    let job = holder.lease(2000).await.expect("the queued job");
    let (status, body) = holder.get(&bundle).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["challenge_id"], json!(challenge_id));

    let (status, body) = other.get(&bundle).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["status"], "error");
    let (status, _) = holder
        .get(&format!("/challenges/{}/bundle", challenge_id.0 + 1000))
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "no lease on another challenge"
    );

    let (status, _) = holder.complete(&job).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = holder.get(&bundle).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the lease is over");
    coordinator.stop().await;
}

/// A grader with free slots leases up to that many jobs in one request
/// (never more than its slots); the single-job shape still answers one
/// job; a drained grader gets none; asking for none is refused.
async fn batch_lease_fills_free_slots(spec: StoreSpec) {
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start(store, &spec.uri).await;
    let queued = queue_attempts(&coordinator.state, 5).await;
    let batch = ScriptedGrader::register_slots(&coordinator.base, "batch", 3).await;
    let _batch_alive = batch.keep_alive();
    let jobs = batch.lease_batch(1000, 5).await;
    let expected: Vec<JobId> = queued.iter().take(3).map(|(_, job_id)| *job_id).collect();
    assert_eq!(
        jobs.iter().map(|job| job.job_id).collect::<Vec<_>>(),
        expected,
        "as many as its slots, oldest first"
    );
    let lease_ids: HashSet<LeaseId> = jobs.iter().map(|job| job.lease_id).collect();
    assert_eq!(lease_ids.len(), 3, "one lease per job");
    for job in &jobs {
        let (status, body) = batch.complete(job).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["recorded"], json!(true));
    }
    let old = ScriptedGrader::register(&coordinator.base, "single", &[Lane::Fast]).await;
    let _old_alive = old.keep_alive();
    let single = old.lease(1000).await.expect("the single-job shape");
    assert_eq!(single.job_id, queued[3].1);
    let (status, _) = batch.post("/jobs/lease?max_jobs=0", json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let admin = coordinator.admin_token().await;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/admin/graders/{}/drain",
            coordinator.base, batch.id
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        batch.lease_batch(200, 3).await.is_empty(),
        "a drained grader gets nothing"
    );
    let last = old.lease(1000).await.expect("the last job is still queued");
    assert_eq!(last.job_id, queued[4].1);
    coordinator.stop().await;
}

/// Polls until `grader` leases a job (waiting up to `within`); returns it
/// and how long it took from `since`.
async fn lease_within(
    grader: &ScriptedGrader,
    since: tokio::time::Instant,
    within: Duration,
) -> (LeasedJob, Duration) {
    loop {
        if let Some(job) = grader.lease(200).await {
            return (job, since.elapsed());
        }
        assert!(
            since.elapsed() < within,
            "no job came back within {within:?}"
        );
    }
}

/// A grader whose presence stream closes (its process died) loses its
/// leases within about a second, long before its heartbeat timeout (6 s
/// here): the job is requeued with the try counted, the grader is DEAD,
/// and a result under the old lease is refused.
async fn closed_presence_requeues_leases_at_once(spec: StoreSpec) {
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start_with_heartbeat(store, &spec.uri, 2000).await;
    queue_attempts(&coordinator.state, 1).await;
    let dying = ScriptedGrader::register_slots(&coordinator.base, "dying", 1).await;
    let presence = dying.presence().await;
    let job = dying.lease_batch(1000, 1).await.pop().expect("a job");
    let waiting = ScriptedGrader::register_slots(&coordinator.base, "waiting", 1).await;
    let closed_at = tokio::time::Instant::now();
    drop(presence);
    let (again, took) = lease_within(&waiting, closed_at, Duration::from_secs(6)).await;
    assert_eq!(again.job_id, job.job_id);
    assert_eq!(again.tries, 2, "the dead grader's try counts");
    assert!(
        took < Duration::from_millis(3000),
        "taken back after {took:?}, not at once"
    );
    assert_eq!(
        dying.complete(&job).await.0,
        StatusCode::UNAUTHORIZED,
        "the grader was declared dead"
    );
    let (status, body) = waiting.complete(&again).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    coordinator.stop().await;
}

/// Only a grader opens a presence stream, and only for itself: a request
/// without a grader token (none, or one that is no grader's) is 401, and
/// closing it takes back no grader's leases.
async fn presence_needs_a_grader_token(spec: StoreSpec) {
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start_with_heartbeat(store, &spec.uri, 2000).await;
    queue_attempts(&coordinator.state, 1).await;
    let holder = ScriptedGrader::register_slots(&coordinator.base, "holder", 1).await;
    let job = holder.lease_batch(1000, 1).await.pop().expect("a job");
    let url = format!("{}/api/v1/grader/presence", coordinator.base);
    let client = reqwest::Client::new();
    let anonymous = client.post(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let forged = client
        .post(&url)
        .bearer_auth("not-a-grader-token")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    drop((anonymous, forged));
    // Past the grace, the holder still holds its lease and posts its result.
    let (status, body) = holder.heartbeat(&[&job]).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    // Nothing to await: the test shows that nothing happens once the 1 s
    // grace of a (wrongly) counted close would have passed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = holder.complete(&job).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    coordinator.stop().await;
}

/// A grader that reopens its presence stream within the grace keeps its
/// leases and finishes its job.
async fn reopened_presence_keeps_leases(spec: StoreSpec) {
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start_with_heartbeat(store, &spec.uri, 2000).await;
    queue_attempts(&coordinator.state, 1).await;
    let grader = ScriptedGrader::register_slots(&coordinator.base, "blip", 1).await;
    let presence = grader.presence().await;
    let job = grader.lease_batch(1000, 1).await.pop().expect("a job");
    drop(presence);
    let _presence = grader.presence().await;
    // Past the grace: a take-back would have happened by now.
    tokio::time::sleep(sqlarena_coordinator::jobs::PRESENCE_GRACE + Duration::from_millis(1500))
        .await;
    let (status, reply) = grader.heartbeat(&[&job]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(reply.unwrap().cancel.is_empty(), "the lease is still held");
    let (status, body) = grader.complete(&job).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["recorded"], json!(true));
    coordinator.stop().await;
}

/// A heartbeat soon after the last write writes nothing (the stored
/// `last_heartbeat` stays as it was); one an interval later writes; a
/// grader heartbeating so stays alive past its timeout.
async fn quiet_heartbeats_write_nothing(spec: StoreSpec) {
    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start_with_heartbeat(store, &spec.uri, 2000).await;
    let grader = ScriptedGrader::register_slots(&coordinator.base, "quiet", 1).await;
    let stored = |store: Arc<dyn Store>, id: GraderId| async move {
        store
            .get_grader(id)
            .await
            .unwrap()
            .expect("the grader")
            .last_heartbeat
    };
    let registered = stored(coordinator.store().clone(), grader.id).await;
    for _ in 0..3 {
        let (status, reply) = grader.heartbeat(&[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!reply.unwrap().drain);
    }
    assert_eq!(
        stored(coordinator.store().clone(), grader.id).await,
        registered,
        "heartbeats within an interval of the last write write nothing"
    );
    coordinator.stop().await;

    let store = store::open(&spec.uri).await.unwrap();
    let coordinator = Coordinator::start(store, &spec.uri).await;
    let grader = ScriptedGrader::register(&coordinator.base, "steady", &[Lane::Fast]).await;
    let registered = stored(coordinator.store().clone(), grader.id).await;
    let started = tokio::time::Instant::now();
    // Heartbeats every 100 ms (interval 200 ms, dead after 600 ms) for
    // three timeouts: some write, and the grader is never declared dead.
    while started.elapsed() < Duration::from_millis(1800) {
        let (status, _) = grader.heartbeat(&[]).await;
        assert_eq!(status, StatusCode::OK, "a steady grader stays alive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored(coordinator.store().clone(), grader.id).await > registered);
    coordinator.stop().await;
}

macro_rules! on_both_stores {
    ($($check:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::$check(super::sqlite_spec()).await;
                }
            )+
        }
        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::$check(super::mongo_spec()).await;
                }
            )+
        }
    };
}

on_both_stores!(
    racing_graders_complete_each_job_once,
    silent_grader_loses_its_job_to_another,
    cancel_while_leased_reaches_the_grader,
    graders_report_only_on_their_own_leases,
    drained_grader_finishes_but_takes_nothing_new,
    deregistering_releases_leases_at_once,
    job_fails_after_max_tries,
    restarted_coordinator_keeps_leases,
    unknown_jobs_and_bad_bodies_are_client_errors,
    revoking_a_cluster_token_cuts_off_its_graders,
    bundles_go_only_to_lease_holders,
    batch_lease_fills_free_slots,
    closed_presence_requeues_leases_at_once,
    presence_needs_a_grader_token,
    reopened_presence_keeps_leases,
    quiet_heartbeats_write_nothing,
);

/// Two coordinators on one MongoDB: a grader's presence stream on the
/// first, its other requests on the second. When the stream closes, the
/// first takes the leases back and a result posted to the second under the
/// old lease is refused; a grader that reconnects to the second within the
/// grace keeps its leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_takeback_across_two_coordinators() {
    let spec = mongo_spec();
    let first =
        Coordinator::start_with_heartbeat(store::open(&spec.uri).await.unwrap(), &spec.uri, 2000)
            .await;
    let second =
        Coordinator::start_with_heartbeat(store::open(&spec.uri).await.unwrap(), &spec.uri, 2000)
            .await;

    queue_attempts(&second.state, 1).await;
    let dying = ScriptedGrader::register_slots(&second.base, "split-dying", 1).await;
    let presence = dying.via(&first.base).presence().await;
    let job = dying.lease_batch(1000, 1).await.pop().expect("a job");
    let waiting = ScriptedGrader::register_slots(&second.base, "split-waiting", 1).await;
    let closed_at = tokio::time::Instant::now();
    drop(presence);
    let (again, took) = lease_within(&waiting, closed_at, Duration::from_secs(6)).await;
    assert_eq!((again.job_id, again.tries), (job.job_id, 2));
    assert!(
        took < Duration::from_millis(3000),
        "taken back after {took:?}"
    );
    assert_eq!(dying.complete(&job).await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = waiting.complete(&again).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    queue_attempts(&second.state, 1).await;
    let moving = ScriptedGrader::register_slots(&second.base, "split-moving", 1).await;
    let presence = moving.via(&first.base).presence().await;
    let job = moving.lease_batch(1000, 1).await.pop().expect("a job");
    drop(presence);
    let _presence = moving.via(&second.base).presence().await;
    tokio::time::sleep(sqlarena_coordinator::jobs::PRESENCE_GRACE + Duration::from_millis(1500))
        .await;
    let (status, body) = moving.complete(&job).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "reconnected in time, kept its lease: {body}"
    );
    assert_eq!(body["data"]["recorded"], json!(true));
    first.stop().await;
    second.stop().await;
}

/// Two coordinators on one MongoDB database, graders split between them:
/// jobs queued through either reach graders on both, each done once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_coordinators_share_one_mongodb() {
    let spec = mongo_spec();
    let first = Coordinator::start(store::open(&spec.uri).await.unwrap(), &spec.uri).await;
    let second = Coordinator::start(store::open(&spec.uri).await.unwrap(), &spec.uri).await;
    let mut queued = queue_attempts(&first.state, 100).await;
    queued.extend(queue_attempts(&second.state, 100).await);
    let mut workers = Vec::new();
    for (index, base) in [&first.base, &second.base, &first.base, &second.base]
        .into_iter()
        .enumerate()
    {
        let grader = ScriptedGrader::register(base, &format!("split-{index}"), &[Lane::Fast]).await;
        workers.push(tokio::spawn(async move {
            let _alive = grader.keep_alive();
            let mut done = Vec::new();
            while let Some(job) = grader.lease(300).await {
                let (status, body) = grader.complete(&job).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                assert_eq!(body["data"]["recorded"], json!(true));
                done.push(job.job_id);
            }
            done
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        let done = worker.await.unwrap();
        assert!(!done.is_empty(), "every grader got work");
        all.extend(done);
    }
    let distinct: HashSet<JobId> = all.iter().copied().collect();
    assert_eq!((all.len(), distinct.len()), (200, 200));
    for (attempt_id, _) in queued.iter().step_by(20) {
        let attempt = first
            .store()
            .get_attempt(*attempt_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(attempt.status, AttemptStatus::Passed);
    }
    // A job queued through one coordinator wakes a grader waiting on the
    // other within 250 ms (the median of several tries, so one slow answer
    // of the test server does not decide; none may take seconds).
    let waiter = ScriptedGrader::register(&second.base, "waiter", &[Lane::Fast]).await;
    let _alive = waiter.keep_alive();
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let waiting = {
            let waiter = waiter.clone();
            tokio::spawn(async move { waiter.lease(5000).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let queued_at = tokio::time::Instant::now();
        queue_attempts(&first.state, 1).await;
        let job = waiting
            .await
            .unwrap()
            .expect("the waiting grader gets the job");
        latencies.push(queued_at.elapsed());
        let (status, _) = waiter.complete(&job).await;
        assert_eq!(status, StatusCode::OK);
    }
    latencies.sort();
    assert!(
        latencies[2] < Duration::from_millis(250) && latencies[4] < Duration::from_millis(2500),
        "cross-coordinator dispatch took {latencies:?}"
    );
    first.stop().await;
    second.stop().await;
}
