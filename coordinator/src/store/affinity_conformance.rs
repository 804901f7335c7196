//! Conformance checks of [`AffinityStore`](super::AffinityStore), run on
//! every backend by
//! [`store_affinity_conformance_suite!`](crate::store_affinity_conformance_suite)
//! (one `#[tokio::test]` per check, each on a fresh store). Kept apart
//! from the main suite so the affinity feature stays in its own files.
//!
//! Jobs are stamped with the real time when queued; the checks move the
//! claim's `now` instead of sleeping (an hour later, every reservation has
//! ended).

// An unlisted check is dead code: refuse to build rather than skip it.
#![deny(dead_code)]

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sqlarena_common::runs::{AttemptRule, ItemFailurePolicy, RunItemRef, RunMode};
use sqlarena_common::{
    AttemptId, AttemptPayload, ChallengeId, GraderId, GraderState, InitPayload, JobId, JobPayload,
    Lane, Role, TestCaseId, UserId,
};
use uuid::Uuid;

use super::affinity::Affinity;
use super::runs::{AllTargets, NewRun, NewRunItem, RunSpec, RunTargets};
use super::{Grader, Job, NewJob, NewUser, Store};

/// Generates, in a module `store_affinity_conformance`, one
/// `#[tokio::test]` per affinity conformance check, each on the fresh empty
/// store returned by `$factory` (an `async fn() -> Arc<dyn Store>`).
#[macro_export]
macro_rules! store_affinity_conformance_suite {
    ($factory:expr) => {
        $crate::__store_affinity_conformance_tests!(
            $factory;
            reported_bundles_replace_the_stored_ones,
            a_grader_takes_a_job_of_its_own_bundle_first,
            a_young_job_waits_only_for_an_alive_holder,
            affinity_reorders_the_queue_within_its_bound,
            claimed_bundles_join_the_claimant_and_init_jobs_need_none,
            run_items_wait_while_a_live_job_is_reserved,
        );
    };
}

/// Implementation detail of [`store_affinity_conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __store_affinity_conformance_tests {
    ($factory:expr; $($check:ident),+ $(,)?) => {
        mod store_affinity_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let store: ::std::sync::Arc<dyn $crate::store::Store> = ($factory)().await;
                    $crate::store::affinity_conformance::$check(store).await;
                }
            )+
        }
    };
}

const LANES: [Lane; 3] = [Lane::Init, Lane::Fast, Lane::Slow];

/// Registers an ALIVE grader.
async fn grader(store: &Arc<dyn Store>) -> GraderId {
    let now = Utc::now();
    let grader = Grader {
        id: GraderId::new_v7(),
        name: format!("grader-{}", Uuid::new_v4().simple()),
        hostname: "box".into(),
        version: "0.1.0".into(),
        lanes: LANES.to_vec(),
        slots: 2,
        state: GraderState::Alive,
        token_hash: Uuid::new_v4().simple().to_string(),
        last_heartbeat: now,
        registered_at: now,
        jobs_done: 0,
        cluster_token_id: None,
    };
    store
        .create_grader(grader.clone())
        .await
        .expect("create_grader");
    grader.id
}

fn payload(bundle: &str, run_item: Option<RunItemRef>) -> AttemptPayload {
    AttemptPayload {
        attempt_id: AttemptId(1),
        user_id: UserId(1),
        challenge_id: ChallengeId(1),
        challenge_name: "c".into(),
        challenge_version: 1,
        version_hash: bundle.into(),
        query: "select 1".into(),
        times_to_run: 1,
        test_case_ids: vec![TestCaseId(1)],
        run_item,
    }
}

/// Queues a live attempt job of `bundle`.
async fn attempt(store: &Arc<dyn Store>, bundle: &str) -> JobId {
    store
        .enqueue_job(NewJob {
            lane: Lane::Fast,
            payload: JobPayload::Attempt(payload(bundle, None)),
            max_tries: 3,
            timeout_ms: 30_000,
        })
        .await
        .expect("enqueue_job")
        .id
}

fn affinity(held: &[&str], wait: Duration, max_reorder: Duration) -> Affinity {
    Affinity {
        held: held.iter().map(|hash| hash.to_string()).collect(),
        wait,
        max_reorder,
    }
}

/// A 50 ms wait and a one-hour reorder bound.
fn usual(held: &[&str]) -> Affinity {
    affinity(held, Duration::milliseconds(50), Duration::hours(1))
}

/// Claims one job by affinity; its id and when the first reservation
/// passed over ends.
async fn claim(
    store: &Arc<dyn Store>,
    grader: GraderId,
    affinity: &Affinity,
    now: DateTime<Utc>,
) -> (Option<JobId>, Option<DateTime<Utc>>) {
    let claim = store
        .claim_jobs_by_affinity(grader, &LANES, 1, affinity, now)
        .await
        .expect("claim_jobs_by_affinity");
    assert!(claim.jobs.len() <= 1, "one job asked for: {claim:?}");
    let job: Option<&Job> = claim.jobs.first();
    if let Some(job) = job {
        let lease = job.lease.expect("a claimed job has a lease");
        assert_eq!(lease.grader_id, grader);
    }
    (job.map(|job| job.id), claim.reserved_until)
}

async fn bundles(store: &Arc<dyn Store>, grader: GraderId) -> Vec<String> {
    store.grader_bundles(grader).await.expect("grader_bundles")
}

fn strings(hashes: &[&str]) -> Vec<String> {
    hashes.iter().map(|hash| hash.to_string()).collect()
}

/// A report replaces the grader's set (each hash once, sorted); an empty
/// report empties it; other graders' sets are untouched.
pub async fn reported_bundles_replace_the_stored_ones(store: Arc<dyn Store>) {
    let (first, second) = (grader(&store).await, grader(&store).await);
    assert!(bundles(&store, first).await.is_empty());
    store
        .set_grader_bundles(first, &strings(&["b", "a", "b"]))
        .await
        .unwrap();
    store
        .set_grader_bundles(second, &strings(&["z"]))
        .await
        .unwrap();
    assert_eq!(bundles(&store, first).await, strings(&["a", "b"]));
    // The same report again changes nothing.
    store
        .set_grader_bundles(first, &strings(&["a", "b"]))
        .await
        .unwrap();
    assert_eq!(bundles(&store, first).await, strings(&["a", "b"]));
    store
        .set_grader_bundles(first, &strings(&["c", "b"]))
        .await
        .unwrap();
    assert_eq!(bundles(&store, first).await, strings(&["b", "c"]));
    store.set_grader_bundles(first, &[]).await.unwrap();
    assert!(bundles(&store, first).await.is_empty());
    assert_eq!(bundles(&store, second).await, strings(&["z"]));
    assert!(bundles(&store, GraderId::new_v7()).await.is_empty());
}

/// A grader takes the oldest job of a bundle it holds before an older job
/// it would have to build; another grader takes the older one.
pub async fn a_grader_takes_a_job_of_its_own_bundle_first(store: Arc<dyn Store>) {
    let (holder, other) = (grader(&store).await, grader(&store).await);
    let older = attempt(&store, "a").await;
    let held_first = attempt(&store, "b").await;
    let held_second = attempt(&store, "b").await;
    let later = Utc::now() + Duration::hours(1);
    let (job, _) = claim(&store, holder, &usual(&["b"]), later).await;
    assert_eq!(job, Some(held_first), "its own bundle's oldest job first");
    let (job, _) = claim(&store, other, &usual(&[]), later).await;
    assert_eq!(job, Some(older), "the other grader takes the oldest job");
    let (job, _) = claim(&store, holder, &usual(&["b"]), later).await;
    assert_eq!(job, Some(held_second));
    let (job, reserved_until) = claim(&store, holder, &usual(&["b"]), later).await;
    assert_eq!((job, reserved_until), (None, None), "nothing is left");
}

/// A job whose bundle an ALIVE grader holds is reserved for it during the
/// wait, and the claim says when that ends; a job whose bundle nobody
/// holds, or only a DEAD grader, goes at once.
pub async fn a_young_job_waits_only_for_an_alive_holder(store: Arc<dyn Store>) {
    let (holder, other) = (grader(&store).await, grader(&store).await);
    store
        .set_grader_bundles(holder, &strings(&["a"]))
        .await
        .unwrap();
    let reserved = attempt(&store, "a").await;
    let queued_at = store.get_job(reserved).await.unwrap().unwrap().created_at;
    let wait = Duration::seconds(60);
    let now = Utc::now();
    let (job, reserved_until) =
        claim(&store, other, &affinity(&[], wait, Duration::hours(1)), now).await;
    assert_eq!(job, None, "reserved for its holder during the wait");
    let until = reserved_until.expect("the claim says when the reservation ends");
    assert!(
        (until - (queued_at + wait)).num_milliseconds().abs() <= 1,
        "{until} is the queue time {queued_at} plus the wait"
    );
    let nobodys = attempt(&store, "n").await;
    let (job, _) = claim(&store, other, &affinity(&[], wait, Duration::hours(1)), now).await;
    assert_eq!(
        job,
        Some(nobodys),
        "no grader holds its bundle: taken at once"
    );
    let after_wait = queued_at + wait + Duration::milliseconds(1);
    let (job, reserved_until) = claim(
        &store,
        other,
        &affinity(&[], wait, Duration::hours(1)),
        after_wait,
    )
    .await;
    assert_eq!(job, Some(reserved), "after the wait anyone may take it");
    assert_eq!(reserved_until, None);

    let dead_holders = attempt(&store, "a").await;
    assert!(store
        .set_grader_state(holder, GraderState::Dead)
        .await
        .unwrap());
    let (job, _) = claim(
        &store,
        other,
        &affinity(&[], wait, Duration::hours(1)),
        Utc::now(),
    )
    .await;
    assert_eq!(
        job,
        Some(dead_holders),
        "a DEAD grader's bundles reserve nothing"
    );
}

/// Waits until the clock is past `job`'s queue time by more than the
/// stores' time resolution (a millisecond on MongoDB), so the next job is
/// queued strictly later.
async fn after_queue_time_of(store: &Arc<dyn Store>, job: JobId) {
    let queued_at = store.get_job(job).await.unwrap().unwrap().created_at;
    while Utc::now() <= queued_at + Duration::milliseconds(2) {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// A held job goes before an older one only while it was queued within
/// the reorder bound of it.
pub async fn affinity_reorders_the_queue_within_its_bound(store: Arc<dyn Store>) {
    let claimer = grader(&store).await;
    let later = Utc::now() + Duration::hours(1);
    let older = attempt(&store, "a").await;
    after_queue_time_of(&store, older).await;
    let held = attempt(&store, "b").await;
    let no_reorder = affinity(&["b"], Duration::zero(), Duration::zero());
    let (job, _) = claim(&store, claimer, &no_reorder, later).await;
    assert_eq!(job, Some(older), "passed over by more than the bound");
    let (job, _) = claim(&store, claimer, &no_reorder, later).await;
    assert_eq!(job, Some(held));

    let again_older = attempt(&store, "a").await;
    after_queue_time_of(&store, again_older).await;
    let again_held = attempt(&store, "b").await;
    let (job, _) = claim(&store, claimer, &usual(&["b"]), later).await;
    assert_eq!(
        job,
        Some(again_held),
        "within the bound the held one goes first"
    );
    let (job, _) = claim(&store, claimer, &usual(&["b"]), later).await;
    assert_eq!(job, Some(again_older));
}

/// A claimed job's bundle joins the claimant's at once (so others wait for
/// it), a batch claims held jobs first, and init jobs need no bundle and
/// keep their lane's priority.
pub async fn claimed_bundles_join_the_claimant_and_init_jobs_need_none(store: Arc<dyn Store>) {
    let (claimant, other) = (grader(&store).await, grader(&store).await);
    store
        .set_grader_bundles(claimant, &strings(&["b"]))
        .await
        .unwrap();
    let first_a = attempt(&store, "a").await;
    let held = attempt(&store, "b").await;
    let init = store
        .enqueue_job(NewJob {
            lane: Lane::Init,
            payload: JobPayload::Init(InitPayload {
                challenge_id: ChallengeId(2),
                challenge_name: "c".into(),
                version: 1,
                init: "create table t (x int)".into(),
                solution: "select x from t".into(),
                times_to_run: 1,
                test_cases: vec![],
            }),
            max_tries: 3,
            timeout_ms: 30_000,
        })
        .await
        .unwrap()
        .id;
    let later = Utc::now() + Duration::hours(1);
    let batch = store
        .claim_jobs_by_affinity(claimant, &LANES, 3, &usual(&["b"]), later)
        .await
        .unwrap();
    let ids: Vec<JobId> = batch.jobs.iter().map(|job| job.id).collect();
    assert_eq!(
        ids,
        vec![init, held, first_a],
        "the init lane first, then the held bundle, then the rest"
    );
    assert_eq!(bundles(&store, claimant).await, strings(&["a", "b"]));
    // The claimant now holds a: a new job of a waits for it.
    let second_a = attempt(&store, "a").await;
    let (job, reserved_until) = claim(&store, other, &usual(&[]), Utc::now()).await;
    assert_eq!(job, None, "reserved for the grader that was leased a");
    assert!(reserved_until.is_some());
    let (job, _) = claim(&store, claimant, &usual(&["a", "b"]), Utc::now()).await;
    assert_eq!(job, Some(second_a));
    assert!(bundles(&store, other).await.is_empty());
}

/// Run items (the batch share) are not taken while a live job is queued,
/// even one reserved for another grader; once none is, they are.
pub async fn run_items_wait_while_a_live_job_is_reserved(store: Arc<dyn Store>) {
    let (holder, other) = (grader(&store).await, grader(&store).await);
    store
        .set_grader_bundles(holder, &strings(&["a"]))
        .await
        .unwrap();
    let professor = store
        .create_user(NewUser {
            email: format!("{}@example.com", Uuid::new_v4().simple()),
            full_name: "Affinity Tester".into(),
            role: Role::Professor,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        })
        .await
        .unwrap()
        .id;
    let (run, _) = store
        .create_run(
            NewRun {
                spec: RunSpec {
                    challenge_id: ChallengeId(1),
                    targets: RunTargets::All(AllTargets::All),
                    attempt: AttemptRule::Latest,
                    mode: RunMode::Publish,
                    on_item_failure: ItemFailurePolicy::Continue,
                    webhook_url: None,
                },
                challenge_version: 1,
                created_by: professor,
                idempotency_key: None,
                items: vec![NewRunItem {
                    user_id: UserId(7),
                    attempt_id: Some(AttemptId(1)),
                }],
                start: true,
            },
            Utc::now(),
        )
        .await
        .unwrap();
    let item = store
        .queue_item_jobs(
            run.id,
            vec![(
                1,
                NewJob {
                    lane: Lane::Fast,
                    payload: JobPayload::Attempt(payload(
                        "r",
                        Some(RunItemRef {
                            run_id: run.id,
                            item: 1,
                        }),
                    )),
                    max_tries: 3,
                    timeout_ms: 30_000,
                },
            )],
        )
        .await
        .unwrap()[0]
        .id;
    let live = attempt(&store, "a").await;
    let (job, reserved_until) = claim(&store, other, &usual(&[]), Utc::now()).await;
    assert_eq!(job, None, "the live job is reserved and goes first");
    assert!(reserved_until.is_some());
    let later = Utc::now() + Duration::hours(1);
    let (job, _) = claim(&store, other, &usual(&[]), later).await;
    assert_eq!(job, Some(live));
    let (job, _) = claim(&store, other, &usual(&[]), later).await;
    assert_eq!(job, Some(item), "then the run item");
}
