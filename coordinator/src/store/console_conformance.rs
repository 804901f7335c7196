//! Conformance checks of what the console reads beyond the main suite:
//! job counts per state and lane ([`ConsoleStore::count_jobs_by_value`]),
//! every try of a job ([`JobTryStore`]) and the per-minute history
//! ([`HistoryStore`]); run on every backend by
//! [`console_store_conformance_suite!`](crate::console_store_conformance_suite).
//!
//! [`ConsoleStore::count_jobs_by_value`]: super::ConsoleStore::count_jobs_by_value
//! [`JobTryStore`]: super::JobTryStore
//! [`HistoryStore`]: super::HistoryStore

// An unlisted check is dead code: refuse to build rather than skip it.
#![deny(dead_code)]

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sqlarena_common::assessments::{AssessmentSpec, Feedback, Scoreboard, Selection, Zone};
use sqlarena_common::runs::{AttemptRule, ItemFailurePolicy, RunMode};
use sqlarena_common::{
    AttemptId, AttemptOutcome, AttemptPayload, ChallengeId, GraderId, JobOutcome, JobPayload,
    JobState, Lane, Role, RunId, TestCaseId, UserId,
};

use super::console::{JobCounts, JobQuery};
use super::history::{minute_of, MinuteSample};
use super::job_tries::TryOutcome;
use super::runs::{AllTargets, NewRun, NewRunItem, RunSpec, RunTargets};
use super::{Completion, HeldLease, Job, NewJob, NewUser, Page, Retry, Store};

/// Generates, in a module `console_store_conformance`, one
/// `#[tokio::test]` per check, each on the fresh empty store returned by
/// `$factory`.
#[macro_export]
macro_rules! console_store_conformance_suite {
    ($factory:expr) => {
        $crate::__console_store_conformance_tests!(
            $factory;
            job_counts_follow_every_state_change,
            job_counts_honour_filters_and_their_cap,
            every_try_of_a_job_is_kept,
            minutes_add_up_and_expire,
            users_runs_and_assessments_are_listed_by_page,
        );
    };
}

/// Implementation detail of [`console_store_conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __console_store_conformance_tests {
    ($factory:expr; $($check:ident),+ $(,)?) => {
        mod console_store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let store: ::std::sync::Arc<dyn $crate::store::Store> = ($factory)().await;
                    $crate::store::console_conformance::$check(store).await;
                }
            )+
        }
    };
}

/// Now, to the millisecond (what every backend keeps).
fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap()
}

fn ms(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

/// An attempt job on `lane` for `challenge_id`.
fn job(lane: Lane, challenge_id: i64) -> NewJob {
    NewJob {
        lane,
        payload: JobPayload::Attempt(AttemptPayload {
            attempt_id: AttemptId(1),
            user_id: UserId(1),
            challenge_id: ChallengeId(challenge_id),
            challenge_name: "c".into(),
            challenge_version: 1,
            version_hash: "abc".into(),
            query: "select 1".into(),
            times_to_run: 1,
            test_case_ids: vec![TestCaseId(1)],
            run_item: None,
        }),
        max_tries: 3,
        timeout_ms: 30_000,
    }
}

fn outcome() -> JobOutcome {
    JobOutcome::Attempt(AttemptOutcome {
        cases: Vec::new(),
        error: None,
    })
}

fn held(job: &Job) -> HeldLease {
    let lease = job.lease.expect("a leased job");
    HeldLease {
        job_id: job.id,
        lease_id: lease.lease_id,
        grader_id: lease.grader_id,
    }
}

async fn claim(store: &Arc<dyn Store>, grader: GraderId, lane: Lane) -> Job {
    store
        .claim_job(grader, &[lane], now_ms())
        .await
        .unwrap()
        .expect("a queued job")
}

async fn counts(store: &Arc<dyn Store>, query: JobQuery) -> JobCounts {
    store.count_jobs_by_value(query, 1_000).await.unwrap()
}

/// Counts per state and lane follow enqueue, claim, completion, failure,
/// cancel, retry and retention, and the lane stats read the same numbers.
pub async fn job_counts_follow_every_state_change(store: Arc<dyn Store>) {
    assert_eq!(
        counts(&store, JobQuery::default())
            .await
            .in_state(JobState::Queued, None),
        0
    );
    for _ in 0..3 {
        store.enqueue_job(job(Lane::Fast, 1)).await.unwrap();
    }
    for _ in 0..2 {
        store.enqueue_job(job(Lane::Slow, 2)).await.unwrap();
    }
    let all = counts(&store, JobQuery::default()).await;
    assert!(!all.capped);
    assert_eq!(all.in_state(JobState::Queued, None), 5);
    assert_eq!(all.in_state(JobState::Queued, Some(Lane::Fast)), 3);
    assert_eq!(all.on_lane(Lane::Slow, None), 2);
    let grader = GraderId::new_v7();
    let done = claim(&store, grader, Lane::Fast).await;
    let completed = store
        .complete_job(held(&done), outcome(), now_ms())
        .await
        .unwrap();
    assert!(matches!(completed, Completion::Recorded(_)));
    let failed = claim(&store, grader, Lane::Fast).await;
    store
        .fail_job(held(&failed), "broken", Retry::Never, now_ms())
        .await
        .unwrap();
    let leased = claim(&store, grader, Lane::Slow).await;
    let cancelled = store.enqueue_job(job(Lane::Init, 3)).await.unwrap();
    store
        .cancel_job(cancelled.id, "not wanted", now_ms())
        .await
        .unwrap();
    let all = counts(&store, JobQuery::default()).await;
    let expected = [
        (JobState::Queued, Lane::Fast, 1),
        (JobState::Queued, Lane::Slow, 1),
        (JobState::Leased, Lane::Slow, 1),
        (JobState::Done, Lane::Fast, 1),
        (JobState::Failed, Lane::Fast, 1),
        (JobState::Cancelled, Lane::Init, 1),
    ];
    for (state, lane, jobs) in expected {
        assert_eq!(
            all.in_state(state, Some(lane)),
            jobs,
            "{state} {lane}: {all:?}"
        );
    }
    assert_eq!(all.cells.iter().map(|cell| cell.jobs).sum::<u64>(), 6);
    let stats = store.lane_stats().await.unwrap();
    let slow = stats.iter().find(|lane| lane.lane == Lane::Slow).unwrap();
    assert_eq!((slow.queued, slow.leased), (1, 1));
    // A retried job counts as queued again; a deleted one no more.
    store.retry_job(cancelled.id).await.unwrap().unwrap();
    let all = counts(&store, JobQuery::default()).await;
    assert_eq!(all.in_state(JobState::Cancelled, None), 0);
    assert_eq!(all.on_lane(Lane::Init, Some(JobState::Queued)), 1);
    store.mark_job_applied(done.id).await.unwrap();
    let deleted = store
        .delete_finished_jobs(Utc::now() + Duration::seconds(5), 0)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let all = counts(&store, JobQuery::default()).await;
    assert_eq!(all.in_state(JobState::Done, None), 0);
    assert_eq!(all.in_state(JobState::Leased, None), 1, "{leased:?}");
}

/// With a challenge, grader or time filter, the counts cover the jobs that
/// match it; counting stops at the cap and says so. The time filter lists
/// nothing for a time after every job.
pub async fn job_counts_honour_filters_and_their_cap(store: Arc<dyn Store>) {
    for _ in 0..4 {
        store.enqueue_job(job(Lane::Fast, 7)).await.unwrap();
    }
    store.enqueue_job(job(Lane::Slow, 8)).await.unwrap();
    let grader = GraderId::new_v7();
    let leased = claim(&store, grader, Lane::Fast).await;
    let of_seven = JobQuery {
        challenge_id: Some(ChallengeId(7)),
        // State and lane filters do not narrow the counts.
        state: Some(JobState::Done),
        lane: Some(Lane::Slow),
        ..JobQuery::default()
    };
    let seven = counts(&store, of_seven).await;
    assert!(!seven.capped);
    assert_eq!(seven.in_state(JobState::Queued, None), 3);
    assert_eq!(seven.in_state(JobState::Leased, None), 1);
    assert_eq!(seven.on_lane(Lane::Slow, None), 0);
    let by_grader = counts(
        &store,
        JobQuery {
            grader_id: Some(grader),
            ..JobQuery::default()
        },
    )
    .await;
    assert_eq!(by_grader.cells.len(), 1, "{by_grader:?}");
    assert_eq!(by_grader.in_state(JobState::Leased, Some(Lane::Fast)), 1);
    let capped = store.count_jobs_by_value(of_seven, 2).await.unwrap();
    assert!(capped.capped, "{capped:?}");
    let counted: u64 = capped.cells.iter().map(|cell| cell.jobs).sum();
    assert!(counted >= 2, "{capped:?}");
    let later = JobQuery {
        queued_from: Some(Utc::now() + Duration::seconds(5)),
        ..JobQuery::default()
    };
    assert!(store.list_jobs_matching(later).await.unwrap().is_empty());
    assert!(counts(&store, later).await.cells.is_empty());
    let since_start = JobQuery {
        queued_from: Some(leased.created_at - Duration::seconds(60)),
        ..JobQuery::default()
    };
    assert_eq!(
        counts(&store, since_start).await.on_lane(Lane::Fast, None),
        4
    );
    assert_eq!(
        store.list_jobs_matching(since_start).await.unwrap().len(),
        5
    );
}

/// Each lease of a job is a try with its grader, start, end, outcome and
/// error, whatever ended it; retention deletes them with their job.
pub async fn every_try_of_a_job_is_kept(store: Arc<dyn Store>) {
    let queued = store.enqueue_job(job(Lane::Fast, 1)).await.unwrap();
    assert!(store.list_job_tries(queued.id).await.unwrap().is_empty());
    let (first, second, third) = (GraderId::new_v7(), GraderId::new_v7(), GraderId::new_v7());
    let started = now_ms();
    let try_one = claim(&store, first, Lane::Fast).await;
    store
        .fail_job(held(&try_one), "disk full", Retry::IfTriesLeft, now_ms())
        .await
        .unwrap();
    let try_two = claim(&store, second, Lane::Fast).await;
    let open = store.list_job_tries(queued.id).await.unwrap();
    assert_eq!(open.len(), 2, "{open:?}");
    assert_eq!(open[1].ended_at, None);
    assert_eq!(open[1].outcome, None);
    let expired_at = try_two.lease.unwrap().expires_at + Duration::seconds(1);
    store.requeue_expired(expired_at).await.unwrap();
    let try_three = claim(&store, third, Lane::Fast).await;
    store
        .complete_job(held(&try_three), outcome(), now_ms())
        .await
        .unwrap();
    let tries = store.list_job_tries(queued.id).await.unwrap();
    assert_eq!(tries.len(), 3, "{tries:?}");
    let graders: Vec<GraderId> = tries.iter().map(|each| each.grader_id).collect();
    assert_eq!(graders, [first, second, third]);
    let outcomes: Vec<Option<TryOutcome>> = tries.iter().map(|each| each.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Some(TryOutcome::Requeued),
            Some(TryOutcome::Requeued),
            Some(TryOutcome::Done)
        ]
    );
    assert!(tries[0].error.as_deref().unwrap().contains("disk full"));
    assert!(tries[1].error.as_deref().unwrap().contains("deadline"));
    assert_eq!(tries[2].error, None);
    assert_eq!(ms(tries[1].ended_at.unwrap()), ms(expired_at));
    assert_eq!(
        tries.iter().map(|each| each.lease_id).collect::<Vec<_>>(),
        [
            try_one.lease.unwrap().lease_id,
            try_two.lease.unwrap().lease_id,
            try_three.lease.unwrap().lease_id
        ]
    );
    for each in &tries {
        assert_eq!(each.job_id, queued.id);
        assert!(ms(each.started_at) >= ms(started));
        assert!(each.ended_at.unwrap() >= each.started_at);
    }
    // Cancelled while leased; a failure with no tries left.
    let cancelled = store.enqueue_job(job(Lane::Slow, 1)).await.unwrap();
    claim(&store, first, Lane::Slow).await;
    store
        .cancel_job(cancelled.id, "stop it", now_ms())
        .await
        .unwrap();
    let tries = store.list_job_tries(cancelled.id).await.unwrap();
    assert_eq!(tries.len(), 1);
    assert_eq!(tries[0].outcome, Some(TryOutcome::Cancelled));
    assert_eq!(tries[0].error.as_deref(), Some("stop it"));
    let doomed = store.enqueue_job(job(Lane::Init, 1)).await.unwrap();
    let leased = claim(&store, first, Lane::Init).await;
    store
        .fail_job(held(&leased), "bad payload", Retry::Never, now_ms())
        .await
        .unwrap();
    let tries = store.list_job_tries(doomed.id).await.unwrap();
    assert_eq!(tries[0].outcome, Some(TryOutcome::Failed));
    // Retention takes a job's tries with it.
    store.mark_job_applied(queued.id).await.unwrap();
    store
        .delete_finished_jobs(Utc::now() + Duration::seconds(5), 0)
        .await
        .unwrap();
    assert!(store.get_job(queued.id).await.unwrap().is_none());
    assert!(store.list_job_tries(queued.id).await.unwrap().is_empty());
}

/// A minute's counts add up across records, its queue depth is the last
/// sample given, rows are listed by minute and deleted before a time.
pub async fn minutes_add_up_and_expire(store: Arc<dyn Store>) {
    let now = minute_of(Utc::now());
    assert_eq!(ms(minute_of(now + Duration::seconds(59))), ms(now));
    let sample =
        |minute: DateTime<Utc>, lane: Lane, completed: u64, depth: Option<u64>| MinuteSample {
            minute,
            lane,
            completed,
            failed: 1,
            latency_ms_sum: 100 * completed,
            latency_count: completed,
            queue_depth: depth,
        };
    let earlier = now - Duration::minutes(90);
    store
        .record_minute(sample(earlier, Lane::Fast, 1, Some(9)))
        .await
        .unwrap();
    store
        .record_minute(sample(now, Lane::Fast, 2, Some(5)))
        .await
        .unwrap();
    store
        .record_minute(sample(now, Lane::Fast, 3, None))
        .await
        .unwrap();
    store
        .record_minute(sample(now, Lane::Slow, 0, Some(4)))
        .await
        .unwrap();
    let rows = store
        .list_minutes(now - Duration::minutes(60))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let fast = rows.iter().find(|row| row.lane == Lane::Fast).unwrap();
    assert_eq!(ms(fast.minute), ms(now));
    assert_eq!(
        (
            fast.completed,
            fast.failed,
            fast.latency_ms_sum,
            fast.latency_count
        ),
        (5, 2, 500, 5)
    );
    assert_eq!(fast.queue_depth, Some(5));
    let slow = rows.iter().find(|row| row.lane == Lane::Slow).unwrap();
    assert_eq!((slow.completed, slow.queue_depth), (0, Some(4)));
    let all = store.list_minutes(earlier).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(ms(all[0].minute), ms(earlier));
    let deleted = store
        .delete_minutes_before(now - Duration::minutes(60))
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(store.list_minutes(earlier).await.unwrap().len(), 2);
}

async fn user(store: &Arc<dyn Store>, name: &str, role: Role) -> UserId {
    store
        .create_user(NewUser {
            email: format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple()),
            full_name: name.into(),
            role,
            password_hash: "$argon2id$hash".into(),
        })
        .await
        .unwrap()
        .id
}

fn run_of(created_by: UserId) -> NewRun {
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
        created_by,
        idempotency_key: None,
        items: vec![NewRunItem {
            user_id: UserId(1),
            attempt_id: None,
        }],
        start: false,
    }
}

fn assessment_spec(name: &str) -> AssessmentSpec {
    let now = Utc::now();
    AssessmentSpec {
        name: name.into(),
        description: None,
        zones: vec![Zone {
            pool: vec![ChallengeId(1)],
            pick: 1,
            points: 1.0,
        }],
        selection: Selection::Stable,
        time_limit_s: 600,
        opens_at: now,
        closes_at: now + Duration::hours(1),
        max_submissions: None,
        min_interval_s: None,
        feedback: Feedback::AfterClose,
        scoreboard: Scoreboard::Live,
        policy: Default::default(),
        performance_credit: 0.0,
    }
}

/// Users by id, runs and assessments newest first, each by creator when
/// asked, one page at a time.
pub async fn users_runs_and_assessments_are_listed_by_page(store: Arc<dyn Store>) {
    let ada = user(&store, "ada", Role::Professor).await;
    let alan = user(&store, "alan", Role::Professor).await;
    let sam = user(&store, "sam", Role::Student).await;
    let users = store.list_users(Page::all()).await.unwrap();
    let ids: Vec<UserId> = users.iter().map(|each| each.id).collect();
    assert_eq!(ids, [ada, alan, sam]);
    assert_eq!(users[2].role, Role::Student);
    let second = store
        .list_users(Page {
            after: Some(ada),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(
        second.iter().map(|each| each.id).collect::<Vec<_>>(),
        [alan]
    );

    let mut made = Vec::new();
    for creator in [ada, alan, ada] {
        let (run, created) = store.create_run(run_of(creator), Utc::now()).await.unwrap();
        assert!(created);
        made.push(run.id);
    }
    let ids = |runs: Vec<super::runs::Run>| runs.iter().map(|run| run.id).collect::<Vec<RunId>>();
    assert_eq!(
        ids(store.list_runs(None, Page::all()).await.unwrap()),
        [made[2], made[1], made[0]]
    );
    assert_eq!(
        ids(store.list_runs(Some(ada), Page::all()).await.unwrap()),
        [made[2], made[0]]
    );
    assert_eq!(
        ids(store
            .list_runs(
                Some(ada),
                Page {
                    after: Some(made[2]),
                    limit: 1
                }
            )
            .await
            .unwrap()),
        [made[0]]
    );
    assert!(store
        .list_runs(Some(sam), Page::all())
        .await
        .unwrap()
        .is_empty());

    let first = store
        .create_assessment(ada, assessment_spec("first"))
        .await
        .unwrap();
    let other = store
        .create_assessment(alan, assessment_spec("other"))
        .await
        .unwrap();
    let last = store
        .create_assessment(ada, assessment_spec("last"))
        .await
        .unwrap();
    let listed = store
        .list_assessments(Some(ada), Page::all())
        .await
        .unwrap();
    let names: Vec<&str> = listed.iter().map(|each| each.spec.name.as_str()).collect();
    assert_eq!(names, ["last", "first"]);
    assert_eq!(listed[0].id, last.id);
    let all = store.list_assessments(None, Page::all()).await.unwrap();
    assert_eq!(
        all.iter().map(|each| each.id).collect::<Vec<_>>(),
        [last.id, other.id, first.id]
    );
    let paged = store
        .list_assessments(
            None,
            Page {
                after: Some(other.id),
                limit: 5,
            },
        )
        .await
        .unwrap();
    assert_eq!(paged.len(), 1);
    assert_eq!(paged[0].id, first.id);
}

#[cfg(test)]
mod tests {
    /// Every check of this file is listed in the suite's macro.
    #[test]
    fn every_check_is_listed() {
        let source = include_str!("console_conformance.rs");
        let (_, listed) = source.split_once("$factory;").unwrap();
        let (listed, _) = listed.split_once(");").unwrap();
        for line in source.lines() {
            if let Some(name) = line.strip_prefix("pub async fn ") {
                let name = name.split('(').next().unwrap();
                assert!(listed.contains(name), "{name} is not in the suite");
            }
        }
    }
}
