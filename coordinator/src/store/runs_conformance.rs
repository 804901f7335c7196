//! Conformance checks of [`RunStore`](super::runs::RunStore), run on every
//! backend by [`store_runs_conformance_suite!`](crate::store_runs_conformance_suite)
//! (one `#[tokio::test]` per check, each on a fresh store). Kept apart from
//! the main suite so the runs feature stays in its own files.

// An unlisted check is dead code: refuse to build rather than skip it.
#![deny(dead_code)]

use std::sync::Arc;

use chrono::{Duration, Utc};
use sqlarena_common::runs::{
    AttemptRule, ItemFailurePolicy, ItemState, PostprocessingState, RunItemRef, RunMode, RunState,
};
use sqlarena_common::{
    AttemptId, AttemptOutcome, AttemptPayload, AttemptStatus, CaseResult, CaseStatus, ChallengeId,
    ChallengeType, GraderId, JobId, JobOutcome, JobPayload, JobState, Lane, Role, RunId,
    TestCaseId, UserId,
};
use uuid::Uuid;

use super::runs::{
    AllTargets, Delivery, GradableAttempt, GradableQuery, ItemEnd, ItemResult, NewRun, NewRunItem,
    RunSpec, RunTargets, NO_ATTEMPT_NOTE,
};
use super::{
    AttemptUpdate, Completion, HeldLease, NewAttempt, NewChallenge, NewJob, NewTestCase, NewUser,
    Store,
};

/// Generates, in a module `store_runs_conformance`, one `#[tokio::test]`
/// per runs conformance check, each on the fresh empty store returned by
/// `$factory` (an `async fn() -> Arc<dyn Store>`).
#[macro_export]
macro_rules! store_runs_conformance_suite {
    ($factory:expr) => {
        $crate::__store_runs_conformance_tests!(
            $factory;
            runs_are_created_once_per_idempotency_key,
            items_end_once_and_the_last_one_fans_in,
            postprocessing_is_claimed_by_one_caller,
            pause_cancel_and_retry_move_runs_and_items,
            items_are_listed_by_state_and_page,
            deliveries_secrets_and_gradable_attempts,
            run_items_wait_for_live_jobs_and_take_turns,
            shadow_runs_are_published_once,
            run_item_completions_leave_the_attempt_alone,
        );
    };
}

/// Implementation detail of [`store_runs_conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __store_runs_conformance_tests {
    ($factory:expr; $($check:ident),+ $(,)?) => {
        mod store_runs_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let store: ::std::sync::Arc<dyn $crate::store::Store> = ($factory)().await;
                    $crate::store::runs_conformance::$check(store).await;
                }
            )+
        }
    };
}

async fn user(store: &Arc<dyn Store>) -> UserId {
    let user = store
        .create_user(NewUser {
            email: format!("{}@example.com", Uuid::new_v4().simple()),
            full_name: "Run Tester".into(),
            role: Role::Student,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        })
        .await
        .expect("create_user");
    user.id
}

fn spec(challenge_id: i64, mode: RunMode) -> RunSpec {
    RunSpec {
        challenge_id: ChallengeId(challenge_id),
        targets: RunTargets::All(AllTargets::All),
        attempt: AttemptRule::Latest,
        mode,
        on_item_failure: ItemFailurePolicy::Continue,
        webhook_url: None,
    }
}

/// A run of `attempts` items with an attempt (ids 1..) and `without`
/// items with none.
fn new_run(created_by: UserId, attempts: usize, without: usize, key: Option<&str>) -> NewRun {
    let mut items: Vec<NewRunItem> = (0..attempts)
        .map(|index| NewRunItem {
            user_id: UserId(100 + index as i64),
            attempt_id: Some(AttemptId(index as i64 + 1)),
        })
        .collect();
    items.extend((0..without).map(|index| NewRunItem {
        user_id: UserId(500 + index as i64),
        attempt_id: None,
    }));
    NewRun {
        spec: spec(1, RunMode::Publish),
        challenge_version: 1,
        created_by,
        idempotency_key: key.map(str::to_owned),
        items,
        start: true,
    }
}

fn item_job(run_id: RunId, item: i64) -> (i64, NewJob) {
    let payload = JobPayload::Attempt(AttemptPayload {
        attempt_id: AttemptId(item),
        user_id: UserId(1),
        challenge_id: ChallengeId(1),
        challenge_name: "c".into(),
        challenge_version: 1,
        version_hash: "abc".into(),
        query: "select 1".into(),
        times_to_run: 1,
        test_case_ids: vec![TestCaseId(1)],
        run_item: Some(RunItemRef { run_id, item }),
    });
    (
        item,
        NewJob {
            lane: Lane::Fast,
            payload,
            max_tries: 3,
            timeout_ms: 30_000,
        },
    )
}

/// Queues a job for each of `items` and returns their job ids.
async fn queue(store: &Arc<dyn Store>, run_id: RunId, items: &[i64]) -> Vec<JobId> {
    let jobs = items.iter().map(|item| item_job(run_id, *item)).collect();
    let queued = store.queue_item_jobs(run_id, jobs).await.expect("queue");
    assert_eq!(queued.len(), items.len());
    queued.iter().map(|job| job.id).collect()
}

fn graded(score: f64) -> ItemEnd {
    ItemEnd::Graded(ItemResult {
        status: Some(AttemptStatus::Passed),
        score: Some(score),
        tries: 1,
        ..ItemResult::default()
    })
}

pub async fn runs_are_created_once_per_idempotency_key(store: Arc<dyn Store>) {
    let professor = user(&store).await;
    let (run, created) = store
        .create_run(new_run(professor, 2, 1, Some("k")), Utc::now())
        .await
        .unwrap();
    assert!(created);
    assert_eq!(run.state, RunState::Running);
    assert_eq!((run.counts.total, run.counts.done), (3, 1));
    assert!(run.published && run.started_at.is_some());
    let (again, created) = store
        .create_run(new_run(professor, 5, 0, Some("k")), Utc::now())
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.id, run.id);
    assert_eq!(again.counts.total, 3);
    let other = user(&store).await;
    let (theirs, created) = store
        .create_run(new_run(other, 1, 0, Some("k")), Utc::now())
        .await
        .unwrap();
    assert!(created && theirs.id != run.id, "keys are per creator");
    let items = store.list_run_items(run.id, None, None, 0).await.unwrap();
    assert_eq!(
        items.iter().map(|item| item.item).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(items[2].state, ItemState::Done);
    assert_eq!(items[2].note.as_deref(), Some(NO_ATTEMPT_NOTE));
    assert_eq!(items[0].state, ItemState::Queued);
    // A started run whose items all ended at creation fans in at once.
    let (empty, _) = store
        .create_run(new_run(professor, 0, 2, None), Utc::now())
        .await
        .unwrap();
    assert_eq!(empty.state, RunState::Postprocessing);
    // An unstarted run waits.
    let mut waiting = new_run(professor, 1, 0, None);
    waiting.start = false;
    let (waiting, _) = store.create_run(waiting, Utc::now()).await.unwrap();
    assert_eq!(waiting.state, RunState::Queued);
    assert!(store
        .queue_item_jobs(waiting.id, vec![item_job(waiting.id, 1)])
        .await
        .unwrap()
        .is_empty());
    let started = store
        .start_run(waiting.id, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(started.state, RunState::Running);
    assert!(store
        .start_run(waiting.id, Utc::now())
        .await
        .unwrap()
        .is_none());
    assert!(store.get_run(RunId(999_999)).await.unwrap().is_none());
}

pub async fn items_end_once_and_the_last_one_fans_in(store: Arc<dyn Store>) {
    let professor = user(&store).await;
    let (run, _) = store
        .create_run(new_run(professor, 2, 1, None), Utc::now())
        .await
        .unwrap();
    assert_eq!(store.list_unqueued_items(run.id, 0).await.unwrap().len(), 2);
    let jobs = queue(&store, run.id, &[1, 2]).await;
    assert!(store
        .list_unqueued_items(run.id, 0)
        .await
        .unwrap()
        .is_empty());
    // Linking again changes nothing.
    assert!(store
        .queue_item_jobs(run.id, vec![item_job(run.id, 1)])
        .await
        .unwrap()
        .is_empty());
    let job = store.get_job(jobs[0]).await.unwrap().expect("the job");
    assert_eq!(job.state, JobState::Queued);

    let now = Utc::now();
    let wrong_job = JobId::new_v7();
    assert!(store
        .finish_run_item(run.id, 1, wrong_job, graded(50.0), now)
        .await
        .unwrap()
        .is_none());
    let after_one = store
        .finish_run_item(run.id, 1, jobs[0], graded(100.0), now)
        .await
        .unwrap()
        .expect("the first end counts");
    assert_eq!(
        (after_one.counts.done, after_one.state),
        (2, RunState::Running)
    );
    assert!(
        store
            .finish_run_item(run.id, 1, jobs[0], graded(0.0), now)
            .await
            .unwrap()
            .is_none(),
        "an item ends once"
    );
    let error = ItemEnd::Error(ItemResult {
        error: Some("gave up after 3 tries".into()),
        tries: 3,
        ..ItemResult::default()
    });
    let last = store
        .finish_run_item(run.id, 2, jobs[1], error, now)
        .await
        .unwrap()
        .expect("the last end counts");
    assert_eq!(last.state, RunState::Postprocessing);
    assert_eq!((last.counts.done, last.counts.error), (2, 1));
    let items = store.list_run_items(run.id, None, None, 0).await.unwrap();
    assert_eq!(items[0].result.score, Some(100.0));
    assert_eq!(items[0].job_id, Some(jobs[0]));
    assert_eq!(items[1].state, ItemState::Error);
    assert_eq!(items[1].result.tries, 3);
    assert!(items[1].finished_at.is_some());
    assert_eq!(
        store.recount_run(run.id).await.unwrap().unwrap().counts,
        last.counts
    );
}

pub async fn postprocessing_is_claimed_by_one_caller(store: Arc<dyn Store>) {
    let professor = user(&store).await;
    let (run, _) = store
        .create_run(new_run(professor, 0, 1, None), Utc::now())
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Postprocessing);
    let now = Utc::now();
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let claimed = store
        .claim_postprocessing(run.id, first, now, now + Duration::seconds(60))
        .await
        .unwrap()
        .expect("the first claim");
    assert_eq!(claimed.postprocessing, PostprocessingState::Running);
    assert!(store
        .claim_postprocessing(run.id, second, now, now + Duration::seconds(60))
        .await
        .unwrap()
        .is_none());
    assert!(
        store
            .claim_postprocessing(run.id, first, now, now + Duration::seconds(90))
            .await
            .unwrap()
            .is_some(),
        "the holder renews its claim"
    );
    assert!(!store
        .finish_postprocessing(
            run.id,
            second,
            "x".into(),
            PostprocessingState::Done,
            RunState::Completed,
            now
        )
        .await
        .unwrap());
    // An expired claim may be taken over.
    let later = now + Duration::seconds(120);
    assert!(store
        .claim_postprocessing(run.id, second, later, later + Duration::seconds(60))
        .await
        .unwrap()
        .is_some());
    assert!(!store
        .finish_postprocessing(
            run.id,
            first,
            "x".into(),
            PostprocessingState::Done,
            RunState::Completed,
            later
        )
        .await
        .unwrap());
    assert!(store
        .finish_postprocessing(
            run.id,
            second,
            "a,b\n".into(),
            PostprocessingState::Done,
            RunState::Completed,
            later
        )
        .await
        .unwrap());
    let finished = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(finished.state, RunState::Completed);
    assert_eq!(finished.postprocessing, PostprocessingState::Done);
    assert_eq!(finished.gradebook.as_deref(), Some("a,b\n"));
    assert!(finished.finished_at.is_some());
    assert!(store
        .claim_postprocessing(run.id, Uuid::now_v7(), later, later)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .list_active_runs()
        .await
        .unwrap()
        .iter()
        .all(|active| active.id != run.id));
}

pub async fn pause_cancel_and_retry_move_runs_and_items(store: Arc<dyn Store>) {
    let professor = user(&store).await;
    let (run, _) = store
        .create_run(new_run(professor, 3, 0, None), Utc::now())
        .await
        .unwrap();
    assert!(store
        .list_active_runs()
        .await
        .unwrap()
        .iter()
        .any(|active| active.id == run.id));
    let jobs = queue(&store, run.id, &[1]).await;
    let paused = store
        .set_run_paused(run.id, true)
        .await
        .unwrap()
        .expect("pause");
    assert_eq!(paused.state, RunState::Paused);
    assert!(store.set_run_paused(run.id, true).await.unwrap().is_none());
    assert!(
        store
            .queue_item_jobs(run.id, vec![item_job(run.id, 2)])
            .await
            .unwrap()
            .is_empty(),
        "a paused run is not fed"
    );
    assert!(store.detach_item_job(run.id, 1, jobs[0]).await.unwrap());
    assert!(!store.detach_item_job(run.id, 1, jobs[0]).await.unwrap());
    assert_eq!(store.list_unqueued_items(run.id, 0).await.unwrap().len(), 3);
    let resumed = store
        .set_run_paused(run.id, false)
        .await
        .unwrap()
        .expect("resume");
    assert_eq!(resumed.state, RunState::Running);
    let jobs = queue(&store, run.id, &[1]).await;
    let now = Utc::now();
    store
        .finish_run_item(
            run.id,
            1,
            jobs[0],
            ItemEnd::Error(ItemResult::default()),
            now,
        )
        .await
        .unwrap()
        .unwrap();
    store.set_run_failing(run.id).await.unwrap();
    let cancelling = store
        .request_run_cancel(run.id, now)
        .await
        .unwrap()
        .expect("cancel");
    assert!(cancelling.cancel_requested && cancelling.failing);
    assert_eq!(
        cancelling.state,
        RunState::Postprocessing,
        "items 2 and 3 had no job"
    );
    assert_eq!(
        (cancelling.counts.error, cancelling.counts.cancelled),
        (1, 2)
    );
    assert!(store
        .request_run_cancel(run.id, now)
        .await
        .unwrap()
        .is_none());
    assert!(store.set_run_paused(run.id, true).await.unwrap().is_none());
    assert!(
        store.retry_run_errors(run.id).await.unwrap().is_none(),
        "not finished yet"
    );
    let token = Uuid::now_v7();
    store
        .claim_postprocessing(run.id, token, now, now)
        .await
        .unwrap()
        .unwrap();
    store
        .finish_postprocessing(
            run.id,
            token,
            String::new(),
            PostprocessingState::Done,
            RunState::Failed,
            now,
        )
        .await
        .unwrap();
    let retried = store
        .retry_run_errors(run.id)
        .await
        .unwrap()
        .expect("retry");
    assert_eq!(retried.state, RunState::Running);
    assert_eq!(retried.postprocessing, PostprocessingState::Pending);
    assert!(!retried.failing && retried.finished_at.is_none());
    assert_eq!((retried.counts.error, retried.counts.cancelled), (0, 2));
    let unqueued = store.list_unqueued_items(run.id, 0).await.unwrap();
    assert_eq!(
        unqueued.iter().map(|item| item.item).collect::<Vec<_>>(),
        [1]
    );
    assert!(store.retry_run_errors(run.id).await.unwrap().is_none());
}

pub async fn items_are_listed_by_state_and_page(store: Arc<dyn Store>) {
    let professor = user(&store).await;
    let (run, _) = store
        .create_run(new_run(professor, 4, 1, None), Utc::now())
        .await
        .unwrap();
    let jobs = queue(&store, run.id, &[1, 2, 3, 4]).await;
    assert_eq!(store.run_queue_position(run.id).await.unwrap(), Some(0));
    let grader = GraderId::new_v7();
    let claimed = store
        .claim_job(grader, &[Lane::Fast], Utc::now())
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(claimed.id, jobs[0]);
    assert_eq!(store.count_running_items(run.id).await.unwrap(), 1);
    assert_eq!(store.run_queue_position(run.id).await.unwrap(), Some(0));
    store
        .finish_run_item(run.id, 2, jobs[1], graded(10.0), Utc::now())
        .await
        .unwrap()
        .unwrap();
    let items = |state: Option<ItemState>, after: Option<i64>, limit: u32| {
        let store = store.clone();
        async move {
            store
                .list_run_items(run.id, state, after, limit)
                .await
                .unwrap()
                .iter()
                .map(|item| item.item)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(items(None, None, 0).await, [1, 2, 3, 4, 5]);
    assert_eq!(items(None, Some(2), 2).await, [3, 4]);
    assert_eq!(items(Some(ItemState::Running), None, 0).await, [1]);
    assert_eq!(items(Some(ItemState::Queued), None, 0).await, [3, 4]);
    assert_eq!(items(Some(ItemState::Queued), Some(3), 0).await, [4]);
    assert_eq!(items(Some(ItemState::Done), None, 0).await, [2, 5]);
    assert_eq!(items(Some(ItemState::Done), None, 1).await, [2]);
    assert!(items(Some(ItemState::Error), None, 0).await.is_empty());
}

pub async fn deliveries_secrets_and_gradable_attempts(store: Arc<dyn Store>) {
    let professor = user(&store).await;
    let (run, _) = store
        .create_run(new_run(professor, 1, 0, None), Utc::now())
        .await
        .unwrap();
    let at = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    for (attempt, status_code) in [(1, Some(500)), (2, Some(200))] {
        store
            .record_delivery(Delivery {
                id: Uuid::now_v7(),
                run_id: run.id,
                attempt,
                at: at + Duration::milliseconds(i64::from(attempt)),
                status_code,
                error: (status_code == Some(500)).then(|| "answered 500".into()),
                duration_ms: 12,
            })
            .await
            .unwrap();
    }
    let deliveries = store.list_deliveries(run.id).await.unwrap();
    assert_eq!(deliveries.len(), 2);
    assert!(!deliveries[0].succeeded() && deliveries[1].succeeded());
    assert_eq!(deliveries[0].error.as_deref(), Some("answered 500"));
    assert_eq!(deliveries[1].at, at + Duration::milliseconds(2));
    assert!(store
        .list_deliveries(RunId(999_999))
        .await
        .unwrap()
        .is_empty());

    let (secret, created) = store
        .webhook_secret(professor, "first".into())
        .await
        .unwrap();
    assert_eq!((secret.as_str(), created), ("first", true));
    let (secret, created) = store
        .webhook_secret(professor, "second".into())
        .await
        .unwrap();
    assert_eq!((secret.as_str(), created), ("first", false));

    let challenge = store
        .create_challenge(NewChallenge {
            created_user_id: professor,
            name: format!("runs-{}", Uuid::new_v4().simple()),
            description: None,
            challenge_type: ChallengeType::FE,
            init: "create table t (a int)".into(),
            solution: "select a from t".into(),
            times_to_run: 1,
            expires_at: Utc::now() + Duration::days(1),
            test_cases: vec![NewTestCase {
                data: "insert into t values (1)".into(),
                is_visible: true,
            }],
        })
        .await
        .unwrap();
    let (student, other) = (user(&store).await, user(&store).await);
    let mut ids = Vec::new();
    for (owner, status) in [
        (student, AttemptStatus::Passed),
        (student, AttemptStatus::Pending),
        (other, AttemptStatus::Passed),
        (student, AttemptStatus::Failed),
    ] {
        let attempt = store
            .create_attempt(NewAttempt {
                user_id: owner,
                challenge_id: challenge.id,
                challenge_version: 1,
                query: "select 1".into(),
            })
            .await
            .unwrap();
        if status != AttemptStatus::Pending {
            let case = graded_case(0.5 + ids.len() as f64);
            store
                .update_attempt(
                    attempt.id,
                    AttemptUpdate {
                        status: Some(status),
                        cases: Some(vec![case]),
                        finished_at: Some(Utc::now()),
                        ..AttemptUpdate::default()
                    },
                )
                .await
                .unwrap();
            ids.push((attempt.id, owner, status));
        }
    }
    let all = GradableQuery {
        challenge_id: challenge.id,
        users: None,
        ratios: false,
    };
    let gradable = store.list_gradable_attempts(all.clone()).await.unwrap();
    let expected: Vec<GradableAttempt> = ids
        .iter()
        .map(|&(id, user_id, status)| GradableAttempt {
            id,
            user_id,
            status,
            ratios: Vec::new(),
        })
        .collect();
    assert_eq!(gradable, expected, "oldest first, without ratios");
    let with_ratios = store
        .list_gradable_attempts(GradableQuery {
            ratios: true,
            ..all.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        with_ratios
            .iter()
            .map(|attempt| attempt.ratios.clone())
            .collect::<Vec<_>>(),
        [vec![0.5], vec![1.5], vec![2.5]]
    );
    let listed = store
        .list_gradable_attempts(GradableQuery {
            users: Some(vec![other, UserId(i64::MAX - 1)]),
            ..all
        })
        .await
        .unwrap();
    assert_eq!(listed, expected[1..2], "only the listed students' attempts");

    let fetched = store
        .get_attempts(vec![ids[2].0, AttemptId(i64::MAX - 1), ids[0].0])
        .await
        .unwrap();
    let mut fetched: Vec<AttemptId> = fetched.iter().map(|attempt| attempt.id).collect();
    fetched.sort();
    assert_eq!(fetched, [ids[0].0, ids[2].0], "the attempts that exist");
    assert_eq!(
        store
            .missing_users(vec![student, UserId(i64::MAX - 1), other])
            .await
            .unwrap(),
        [UserId(i64::MAX - 1)]
    );
}

/// A passed case result with `ratio`.
fn graded_case(ratio: f64) -> CaseResult {
    CaseResult {
        test_case_id: TestCaseId(1),
        status: CaseStatus::Passed,
        execution_ms: Some(1.0),
        min_ms: None,
        reference_ms: Some(1.0),
        ratio: Some(ratio),
        actual_result: None,
        diff: None,
        error: None,
        timing: None,
        audit: None,
    }
}

pub async fn run_items_wait_for_live_jobs_and_take_turns(store: Arc<dyn Store>) {
    let (first, second) = (user(&store).await, user(&store).await);
    let (run_a, _) = store
        .create_run(new_run(first, 2, 0, None), Utc::now())
        .await
        .unwrap();
    let (run_b, _) = store
        .create_run(new_run(second, 2, 0, None), Utc::now())
        .await
        .unwrap();
    let a = queue(&store, run_a.id, &[1, 2]).await;
    let b = queue(&store, run_b.id, &[1, 2]).await;
    assert_eq!(store.run_queue_position(run_b.id).await.unwrap(), Some(1));
    let (_, mut live_job) = item_job(run_a.id, 9);
    if let JobPayload::Attempt(payload) = &mut live_job.payload {
        payload.run_item = None;
    }
    let live = store.enqueue_job(live_job).await.unwrap();
    assert_eq!(
        store.run_queue_position(run_a.id).await.unwrap(),
        Some(1),
        "the live job is ahead of the run's first item"
    );
    let grader = GraderId::new_v7();
    let mut order = Vec::new();
    while let Some(job) = store
        .claim_job(grader, &[Lane::Init, Lane::Fast, Lane::Slow], Utc::now())
        .await
        .unwrap()
    {
        order.push(job.id);
    }
    assert_eq!(
        order,
        vec![live.id, a[0], b[0], a[1], b[1]],
        "the live job first, then the professors' items by turns"
    );
    // A professor's next run queues behind the items of their last one.
    let (run_c, _) = store
        .create_run(new_run(first, 1, 0, None), Utc::now())
        .await
        .unwrap();
    let (run_d, _) = store
        .create_run(new_run(second, 1, 0, None), Utc::now())
        .await
        .unwrap();
    let c = queue(&store, run_c.id, &[1]).await;
    let d = queue(&store, run_d.id, &[1]).await;
    let batch = store
        .claim_jobs(grader, &[Lane::Fast], 5, Utc::now())
        .await
        .unwrap();
    let ids: Vec<JobId> = batch.iter().map(|job| job.id).collect();
    assert_eq!(ids, vec![c[0], d[0]]);
}

pub async fn shadow_runs_are_published_once(store: Arc<dyn Store>) {
    let professor = user(&store).await;
    let challenge = ChallengeId(1);
    let mut published = new_run(professor, 0, 1, None);
    published.spec = spec(challenge.0, RunMode::Publish);
    let (published, _) = store.create_run(published, Utc::now()).await.unwrap();
    let mut shadow = new_run(professor, 0, 1, None);
    shadow.spec = spec(challenge.0, RunMode::Shadow);
    let (shadow, _) = store.create_run(shadow, Utc::now()).await.unwrap();
    assert!(published.published && !shadow.published);
    assert!(
        store
            .latest_published_run(challenge, shadow.id)
            .await
            .unwrap()
            .is_none(),
        "an unfinished run is not the published one"
    );
    for run in [&published, &shadow] {
        let token = Uuid::now_v7();
        let now = Utc::now();
        store
            .claim_postprocessing(run.id, token, now, now)
            .await
            .unwrap()
            .unwrap();
        store
            .finish_postprocessing(
                run.id,
                token,
                String::new(),
                PostprocessingState::Done,
                RunState::Completed,
                now,
            )
            .await
            .unwrap();
    }
    let latest = store
        .latest_published_run(challenge, shadow.id)
        .await
        .unwrap();
    assert_eq!(latest.map(|run| run.id), Some(published.id));
    assert!(store
        .latest_published_run(challenge, published.id)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .latest_published_run(ChallengeId(2), shadow.id)
        .await
        .unwrap()
        .is_none());
    let now_published = store
        .publish_run(shadow.id)
        .await
        .unwrap()
        .expect("publish");
    assert!(now_published.published);
    assert!(
        store.publish_run(shadow.id).await.unwrap().is_none(),
        "once"
    );
    let latest = store
        .latest_published_run(challenge, RunId(0))
        .await
        .unwrap();
    assert_eq!(latest.map(|run| run.id), Some(shadow.id));
}

/// A run item's job completed through `Store::complete_attempt_job` (the
/// path every attempt job's result takes) is only recorded: DONE with its
/// outcome, not applied, and the student's attempt is left as it was; its
/// result is the item's, applied by `finish_run_item`.
pub async fn run_item_completions_leave_the_attempt_alone(store: Arc<dyn Store>) {
    let professor = user(&store).await;
    let challenge = store
        .create_challenge(NewChallenge {
            created_user_id: professor,
            name: format!("runs-{}", Uuid::new_v4().simple()),
            description: None,
            challenge_type: ChallengeType::FE,
            init: "create table t (a int)".into(),
            solution: "select a from t".into(),
            times_to_run: 1,
            expires_at: Utc::now() + Duration::days(1),
            test_cases: vec![NewTestCase {
                data: "insert into t values (1)".into(),
                is_visible: true,
            }],
        })
        .await
        .unwrap();
    let student = user(&store).await;
    let attempt = store
        .create_attempt(NewAttempt {
            user_id: student,
            challenge_id: challenge.id,
            challenge_version: 1,
            query: "select a from t".into(),
        })
        .await
        .unwrap();
    let before = store.get_attempt(attempt.id).await.unwrap().unwrap();
    let mut new = new_run(professor, 0, 0, None);
    new.spec = spec(challenge.id.0, RunMode::Publish);
    new.items = vec![NewRunItem {
        user_id: student,
        attempt_id: Some(attempt.id),
    }];
    let (run, _) = store.create_run(new, Utc::now()).await.unwrap();
    let (item, mut job) = item_job(run.id, 1);
    if let JobPayload::Attempt(payload) = &mut job.payload {
        payload.attempt_id = attempt.id;
        payload.user_id = student;
        payload.challenge_id = challenge.id;
    }
    let queued = store
        .queue_item_jobs(run.id, vec![(item, job)])
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    let leased = store
        .claim_job(GraderId::new_v7(), &[Lane::Fast], Utc::now())
        .await
        .unwrap()
        .expect("the item's job");
    assert_eq!(leased.id, queued[0].id);
    let lease = leased.lease.expect("a leased job has a lease");
    let held = HeldLease {
        job_id: leased.id,
        lease_id: lease.lease_id,
        grader_id: lease.grader_id,
    };
    let outcome = JobOutcome::Attempt(AttemptOutcome {
        cases: vec![CaseResult {
            test_case_id: TestCaseId(1),
            status: CaseStatus::Passed,
            execution_ms: Some(1.0),
            min_ms: None,
            reference_ms: None,
            ratio: None,
            actual_result: None,
            diff: None,
            error: None,
            timing: None,
            audit: None,
        }],
        error: None,
    });
    let now = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    let update = AttemptUpdate {
        status: Some(AttemptStatus::Passed),
        finished_at: Some(now),
        ..AttemptUpdate::default()
    };
    let Completion::Recorded(done) = store
        .complete_attempt_job(held, outcome.clone(), update.clone(), now)
        .await
        .unwrap()
    else {
        panic!("the first completion is recorded");
    };
    assert_eq!(done.state, JobState::Done);
    assert!(!done.applied, "a run item's job is left for its item");
    assert_eq!(done.outcome, Some(outcome.clone()), "its outcome is kept");
    assert_eq!(store.get_job(done.id).await.unwrap(), Some(done.clone()));
    assert!(store
        .list_unapplied_jobs()
        .await
        .unwrap()
        .iter()
        .any(|job| job.id == done.id));
    assert_eq!(
        store.get_attempt(attempt.id).await.unwrap(),
        Some(before.clone()),
        "the student's attempt is left alone"
    );
    let repeat = store
        .complete_attempt_job(held, outcome, update, now)
        .await
        .unwrap();
    assert!(
        matches!(&repeat, Completion::AlreadyRecorded(job) if job.id == done.id && !job.applied),
        "{repeat:?}"
    );
    assert_eq!(store.get_attempt(attempt.id).await.unwrap(), Some(before));
    let ended = store
        .finish_run_item(run.id, 1, done.id, graded(100.0), now)
        .await
        .unwrap()
        .expect("the item takes the result");
    assert_eq!(ended.counts.done, 1);
}
