//! Conformance checks of [`ExportStore`](super::exports::ExportStore), run
//! on every backend by
//! [`store_exports_conformance_suite!`](crate::store_exports_conformance_suite)
//! (one `#[tokio::test]` per check, each on a fresh store).

// An unlisted check is dead code: refuse to build rather than skip it.
#![deny(dead_code)]

use std::sync::Arc;

use chrono::{Duration, Utc};
use sqlarena_common::assessments::{AssessmentSpec, Feedback, Scoreboard, Selection, Zone};
use sqlarena_common::exports::{ExportFormat, ExportKind, ExportState};
use sqlarena_common::{ChallengeId, ChallengeType, ExportId, Role, UserId};
use uuid::Uuid;

use super::exports::{AttemptScope, ExportFilters, ExportSpec, NewExport};
use super::{NewAttempt, NewChallenge, NewTestCase, NewUser, Store};

/// Generates, in a module `store_exports_conformance`, one
/// `#[tokio::test]` per exports conformance check, each on the fresh empty
/// store returned by `$factory` (an `async fn() -> Arc<dyn Store>`).
#[macro_export]
macro_rules! store_exports_conformance_suite {
    ($factory:expr) => {
        $crate::__store_exports_conformance_tests!(
            $factory;
            exports_move_through_their_states,
            exports_are_cancelled_once_and_expire_once,
            scoped_attempts_are_paged_and_filtered,
            scoped_users_are_distinct_and_paged,
            assessments_are_listed_by_creator,
        );
    };
}

/// Implementation detail of [`store_exports_conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __store_exports_conformance_tests {
    ($factory:expr; $($check:ident),+ $(,)?) => {
        mod store_exports_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let store: ::std::sync::Arc<dyn $crate::store::Store> = ($factory)().await;
                    $crate::store::exports_conformance::$check(store).await;
                }
            )+
        }
    };
}

async fn user(store: &Arc<dyn Store>, role: Role) -> UserId {
    store
        .create_user(NewUser {
            email: format!("{}@example.com", Uuid::new_v4().simple()),
            full_name: "Export Tester".into(),
            role,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        })
        .await
        .expect("create_user")
        .id
}

async fn challenge(store: &Arc<dyn Store>, professor: UserId) -> ChallengeId {
    store
        .create_challenge(NewChallenge {
            created_user_id: professor,
            name: format!("exports-{}", Uuid::new_v4().simple()),
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
        .expect("create_challenge")
        .id
}

fn new_export(created_by: UserId, total: u64) -> NewExport {
    NewExport {
        spec: ExportSpec {
            kind: ExportKind::Attempts,
            format: ExportFormat::Csv,
            filters: ExportFilters {
                challenge_id: Some(ChallengeId(3)),
                ..ExportFilters::default()
            },
            challenge_ids: Some(vec![ChallengeId(3)]),
            assessment_ids: vec![7],
            as_of: Utc::now(),
        },
        created_by,
        total,
    }
}

pub async fn exports_move_through_their_states(store: Arc<dyn Store>) {
    let professor = user(&store, Role::Professor).await;
    let request = new_export(professor, 42);
    let export = store
        .create_export(request.clone(), Utc::now())
        .await
        .unwrap();
    assert_eq!(export.state, ExportState::Running);
    assert_eq!((export.cursor, export.rows, export.bytes), (None, 0, 0));
    assert_eq!(export.total, 42);
    assert_eq!(export.created_by, professor);
    assert_eq!(export.spec.filters, request.spec.filters);
    assert_eq!(export.spec.challenge_ids, request.spec.challenge_ids);
    assert_eq!(export.spec.assessment_ids, vec![7]);
    let second = store.create_export(request, Utc::now()).await.unwrap();
    assert!(second.id > export.id, "ids come from a sequence");
    assert_eq!(
        store.get_export(export.id).await.unwrap(),
        Some(export.clone())
    );
    assert_eq!(store.get_export(ExportId(999_999)).await.unwrap(), None);

    let saved = store
        .save_export_page(export.id, Some(17), 10, 1234)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (saved.cursor, saved.rows, saved.bytes),
        (Some(17), 10, 1234)
    );
    let paused = store
        .set_export_paused(export.id, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(paused.state, ExportState::Paused);
    assert!(store
        .set_export_paused(export.id, true)
        .await
        .unwrap()
        .is_none());
    let unchanged = store
        .save_export_page(export.id, Some(30), 20, 2000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            unchanged.state,
            unchanged.cursor,
            unchanged.rows,
            unchanged.bytes
        ),
        (ExportState::Paused, Some(17), 10, 1234),
        "a page is not saved while paused: the writer is told to stop"
    );
    let unfinished: Vec<ExportId> = store
        .list_unfinished_exports()
        .await
        .unwrap()
        .iter()
        .map(|export| export.id)
        .collect();
    assert_eq!(unfinished, vec![export.id, second.id]);
    assert!(!store
        .finish_export(export.id, ExportState::Completed, None, Utc::now(), None)
        .await
        .unwrap());
    let resumed = store
        .set_export_paused(export.id, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resumed.state, ExportState::Running);
    assert!(store
        .set_export_paused(export.id, false)
        .await
        .unwrap()
        .is_none());
    let expires_at = Utc::now() + Duration::hours(1);
    assert!(store
        .finish_export(
            export.id,
            ExportState::Completed,
            None,
            Utc::now(),
            Some(expires_at)
        )
        .await
        .unwrap());
    let finished = store.get_export(export.id).await.unwrap().unwrap();
    assert_eq!(finished.state, ExportState::Completed);
    assert!(finished.finished_at.is_some());
    let expiry = finished.expires_at.unwrap();
    assert!(
        (expiry - expires_at).num_milliseconds().abs() <= 1,
        "{expiry}"
    );
    assert!(!store
        .finish_export(export.id, ExportState::Failed, None, Utc::now(), None)
        .await
        .unwrap());
    assert!(store
        .finish_export(
            second.id,
            ExportState::Failed,
            Some("disk full".into()),
            Utc::now(),
            None
        )
        .await
        .unwrap());
    let failed = store.get_export(second.id).await.unwrap().unwrap();
    assert_eq!(
        (failed.state, failed.error.as_deref()),
        (ExportState::Failed, Some("disk full"))
    );
    assert!(store.list_unfinished_exports().await.unwrap().is_empty());
}

pub async fn exports_are_cancelled_once_and_expire_once(store: Arc<dyn Store>) {
    let professor = user(&store, Role::Professor).await;
    let running = store
        .create_export(new_export(professor, 1), Utc::now())
        .await
        .unwrap();
    let paused = store
        .create_export(new_export(professor, 1), Utc::now())
        .await
        .unwrap();
    store.set_export_paused(paused.id, true).await.unwrap();
    for id in [running.id, paused.id] {
        let cancelled = store.cancel_export(id, Utc::now()).await.unwrap().unwrap();
        assert_eq!(cancelled.state, ExportState::Cancelled);
        assert!(cancelled.finished_at.is_some());
        assert!(store.cancel_export(id, Utc::now()).await.unwrap().is_none());
        assert!(store.set_export_paused(id, false).await.unwrap().is_none());
        let after = store
            .save_export_page(id, Some(5), 5, 50)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((after.state, after.rows), (ExportState::Cancelled, 0));
    }

    let done = store
        .create_export(new_export(professor, 1), Utc::now())
        .await
        .unwrap();
    let later = store
        .create_export(new_export(professor, 1), Utc::now())
        .await
        .unwrap();
    let now = Utc::now();
    for (id, expires_at) in [
        (done.id, now - Duration::seconds(5)),
        (later.id, now + Duration::hours(1)),
    ] {
        store
            .finish_export(id, ExportState::Completed, None, now, Some(expires_at))
            .await
            .unwrap();
    }
    let expired: Vec<ExportId> = store
        .list_expired_exports(now)
        .await
        .unwrap()
        .iter()
        .map(|export| export.id)
        .collect();
    assert_eq!(expired, vec![done.id], "only the one past its expiry");
    assert!(store.cancel_export(done.id, now).await.unwrap().is_none());
    assert!(store.expire_export(done.id).await.unwrap());
    assert!(!store.expire_export(done.id).await.unwrap(), "once");
    assert!(!store.expire_export(running.id).await.unwrap());
    assert_eq!(
        store.get_export(done.id).await.unwrap().unwrap().state,
        ExportState::Expired
    );
    assert!(store.list_expired_exports(now).await.unwrap().is_empty());
}

pub async fn scoped_attempts_are_paged_and_filtered(store: Arc<dyn Store>) {
    let professor = user(&store, Role::Professor).await;
    let mine = challenge(&store, professor).await;
    let other = challenge(&store, professor).await;
    let students = [
        user(&store, Role::Student).await,
        user(&store, Role::Student).await,
    ];
    let mut attempts = Vec::new();
    for round in 0..3 {
        for (index, student) in students.iter().enumerate() {
            let challenge_id = if (round + index) % 2 == 0 {
                mine
            } else {
                other
            };
            let attempt = store
                .create_attempt(NewAttempt {
                    user_id: *student,
                    challenge_id,
                    challenge_version: 1,
                    query: format!("select {round}"),
                })
                .await
                .unwrap();
            attempts.push(attempt);
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
    }
    let ids = |list: &[crate::store::Attempt]| list.iter().map(|a| a.id).collect::<Vec<_>>();
    let everything = AttemptScope::default();
    let all = store
        .list_scoped_attempts(&everything, None, 0)
        .await
        .unwrap();
    assert_eq!(ids(&all), ids(&attempts), "by id, all of them");
    assert_eq!(all[0], attempts[0], "whole attempts");
    assert_eq!(store.count_scoped_attempts(&everything).await.unwrap(), 6);

    // Pages: after the last id of the previous page.
    let first = store
        .list_scoped_attempts(&everything, None, 4)
        .await
        .unwrap();
    let rest = store
        .list_scoped_attempts(&everything, Some(first[3].id), 4)
        .await
        .unwrap();
    assert_eq!(ids(&first), ids(&attempts[..4]));
    assert_eq!(ids(&rest), ids(&attempts[4..]));

    let only_mine = AttemptScope {
        challenge_ids: Some(vec![mine]),
        ..AttemptScope::default()
    };
    let expected: Vec<_> = attempts
        .iter()
        .filter(|attempt| attempt.challenge_id == mine)
        .map(|attempt| attempt.id)
        .collect();
    let found = store
        .list_scoped_attempts(&only_mine, None, 0)
        .await
        .unwrap();
    assert_eq!(ids(&found), expected);
    assert_eq!(store.count_scoped_attempts(&only_mine).await.unwrap(), 3);
    let nothing = AttemptScope {
        challenge_ids: Some(Vec::new()),
        ..AttemptScope::default()
    };
    assert!(store
        .list_scoped_attempts(&nothing, None, 0)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.count_scoped_attempts(&nothing).await.unwrap(), 0);

    let one_student_in_dates = AttemptScope {
        challenge_ids: Some(vec![mine, other]),
        user_id: Some(students[1]),
        date_gte: Some(attempts[1].created_at),
        date_lte: Some(attempts[3].created_at),
    };
    let found = store
        .list_scoped_attempts(&one_student_in_dates, None, 0)
        .await
        .unwrap();
    assert_eq!(
        ids(&found),
        vec![attempts[1].id, attempts[3].id],
        "bounds included"
    );
    assert_eq!(
        store
            .count_scoped_attempts(&one_student_in_dates)
            .await
            .unwrap(),
        2
    );
    let page = store
        .list_scoped_attempts(&one_student_in_dates, Some(attempts[1].id), 1)
        .await
        .unwrap();
    assert_eq!(ids(&page), vec![attempts[3].id]);
}

pub async fn scoped_users_are_distinct_and_paged(store: Arc<dyn Store>) {
    let professor = user(&store, Role::Professor).await;
    let mine = challenge(&store, professor).await;
    let other = challenge(&store, professor).await;
    let mut students = Vec::new();
    for _ in 0..4 {
        students.push(user(&store, Role::Student).await);
    }
    // Students 0 and 2 attempt `mine` twice; 1 only `other`; 3 nothing.
    let mut last = None;
    for (student, challenge_id) in [
        (students[2], mine),
        (students[0], mine),
        (students[1], other),
        (students[2], mine),
        (students[0], mine),
    ] {
        let attempt = store
            .create_attempt(NewAttempt {
                user_id: student,
                challenge_id,
                challenge_version: 1,
                query: "select 1".into(),
            })
            .await
            .unwrap();
        last = Some(attempt);
    }
    let only_mine = AttemptScope {
        challenge_ids: Some(vec![mine]),
        ..AttemptScope::default()
    };
    assert_eq!(
        store.list_scoped_users(&only_mine, None, 0).await.unwrap(),
        vec![students[0], students[2]],
        "each once, by id"
    );
    assert_eq!(store.count_scoped_users(&only_mine).await.unwrap(), 2);
    assert_eq!(
        store
            .list_scoped_users(&AttemptScope::default(), None, 2)
            .await
            .unwrap(),
        vec![students[0], students[1]]
    );
    assert_eq!(
        store
            .list_scoped_users(&AttemptScope::default(), Some(students[1]), 2)
            .await
            .unwrap(),
        vec![students[2]]
    );
    assert_eq!(
        store
            .count_scoped_users(&AttemptScope::default())
            .await
            .unwrap(),
        3
    );
    let one = AttemptScope {
        user_id: Some(students[2]),
        ..only_mine.clone()
    };
    assert_eq!(
        store.list_scoped_users(&one, None, 0).await.unwrap(),
        vec![students[2]]
    );
    let latest_only = AttemptScope {
        date_gte: last.map(|attempt| attempt.created_at),
        ..only_mine
    };
    assert_eq!(
        store
            .list_scoped_users(&latest_only, None, 0)
            .await
            .unwrap(),
        vec![students[0]],
        "dates apply to the users' attempts"
    );
    assert_eq!(store.count_scoped_users(&latest_only).await.unwrap(), 1);
}

pub async fn assessments_are_listed_by_creator(store: Arc<dyn Store>) {
    let first = user(&store, Role::Professor).await;
    let second = user(&store, Role::Professor).await;
    let spec = |name: &str| {
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
            feedback: Feedback::Immediate,
            scoreboard: Scoreboard::Live,
            policy: Default::default(),
            performance_credit: 0.0,
        }
    };
    let a = store.create_assessment(first, spec("a")).await.unwrap();
    let b = store.create_assessment(second, spec("b")).await.unwrap();
    let c = store.create_assessment(first, spec("c")).await.unwrap();
    let ids = |list: Vec<crate::store::assessments::Assessment>| {
        list.into_iter()
            .map(|assessment| assessment.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.list_assessments_by(Some(first)).await.unwrap()),
        vec![a.id, c.id]
    );
    assert_eq!(
        ids(store.list_assessments_by(None).await.unwrap()),
        vec![a.id, b.id, c.id]
    );
    let listed = store.list_assessments_by(Some(second)).await.unwrap();
    assert_eq!(listed, vec![b]);
}
