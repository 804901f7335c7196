//! Conformance checks of [`AuditStore`](super::AuditStore), run on every
//! backend by [`store_audit_conformance_suite!`](crate::store_audit_conformance_suite)
//! beside the main suite.

// An unlisted check is dead code: refuse to build rather than skip it.
#![deny(dead_code)]

use std::sync::Arc;

use chrono::{Duration, Utc};
use sqlarena_common::{
    AttemptId, AttemptStatus, CaseAudit, CaseResult, CaseStatus, ChallengeType, GraderId,
    QueryResult, Role, TestCaseId, UserId,
};
use uuid::Uuid;

use super::{
    AttemptUpdate, Challenge, InitResult, NewAttempt, NewChallenge, NewTestCase, NewUser, Store,
};

/// Generates, in a module `store_audit_conformance`, one `#[tokio::test]`
/// per check of the audit store, each on the fresh empty store returned by
/// `$factory`.
#[macro_export]
macro_rules! store_audit_conformance_suite {
    ($factory:expr) => {
        $crate::__store_audit_conformance_tests!(
            $factory;
            init_audits_are_kept_per_version,
            each_graders_leaderboard_keeps_its_own_best,
            recent_passed_cases_come_newest_first,
        );
    };
}

/// Implementation detail of [`store_audit_conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __store_audit_conformance_tests {
    ($factory:expr; $($check:ident),+ $(,)?) => {
        mod store_audit_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let store: ::std::sync::Arc<dyn $crate::store::Store> = ($factory)().await;
                    $crate::store::audit_conformance::$check(store).await;
                }
            )+
        }
    };
}

async fn user(store: &Arc<dyn Store>, role: Role) -> UserId {
    store
        .create_user(NewUser {
            email: format!("audit-{}@example.com", Uuid::new_v4().simple()),
            full_name: "Audited".into(),
            role,
            password_hash: "$argon2id$hash".into(),
        })
        .await
        .unwrap()
        .id
}

/// A READY FE challenge with two test cases.
async fn ready_challenge(store: &Arc<dyn Store>) -> Challenge {
    let professor = user(store, Role::Professor).await;
    let created = store
        .create_challenge(NewChallenge {
            created_user_id: professor,
            name: format!("audited-{}", Uuid::new_v4().simple()),
            description: None,
            challenge_type: ChallengeType::FE,
            init: "create table t (a int)".into(),
            solution: "select a from t".into(),
            times_to_run: 3,
            expires_at: Utc::now() + Duration::days(1),
            test_cases: (0..2)
                .map(|index| NewTestCase {
                    data: format!("insert into t values ({index})"),
                    is_visible: true,
                })
                .collect(),
        })
        .await
        .unwrap();
    let expected = created
        .test_cases
        .iter()
        .map(|case| (case.id, QueryResult::default(), Some(1.0)))
        .collect();
    let ready = InitResult::Ready {
        expected,
        warnings: Vec::new(),
    };
    assert!(store
        .set_challenge_init(created.id, created.version, ready, Utc::now())
        .await
        .unwrap());
    store.get_challenge(created.id).await.unwrap().unwrap()
}

fn audit_by(grader_id: Option<GraderId>, reference_ms: f64) -> CaseAudit {
    CaseAudit {
        grader_id,
        grader_name: grader_id.map(|_| "lab".to_string()),
        postgres_version: Some("16.4".into()),
        rounds: 5,
        discarded: 1,
        reference_median_ms: Some(reference_ms),
        ..CaseAudit::default()
    }
}

/// Finishes an attempt of `user_id` on `challenge` with `ratio` on every
/// case, graded by `grader` (cases without audits when `None`).
async fn finish(
    store: &Arc<dyn Store>,
    user_id: UserId,
    challenge: &Challenge,
    ratio: f64,
    status: AttemptStatus,
    grader: Option<GraderId>,
) -> AttemptId {
    let attempt = store
        .create_attempt(NewAttempt {
            user_id,
            challenge_id: challenge.id,
            challenge_version: challenge.version,
            query: "select a from t".into(),
        })
        .await
        .unwrap();
    let case_status = if status == AttemptStatus::Passed {
        CaseStatus::Passed
    } else {
        CaseStatus::Failed
    };
    let cases = challenge
        .test_cases
        .iter()
        .map(|case| CaseResult {
            test_case_id: case.id,
            status: case_status,
            execution_ms: Some(ratio),
            min_ms: Some(ratio),
            reference_ms: Some(1.0),
            ratio: Some(ratio),
            actual_result: None,
            diff: None,
            error: None,
            timing: None,
            audit: grader.map(|grader_id| audit_by(Some(grader_id), ratio * 2.0)),
        })
        .collect();
    store
        .update_attempt(
            attempt.id,
            AttemptUpdate {
                status: Some(status),
                cases: Some(cases),
                finished_at: Some(Utc::now()),
                ..AttemptUpdate::default()
            },
        )
        .await
        .unwrap();
    attempt.id
}

/// An init's audits are kept per test case of one version, listed by test
/// case id, and replaced when that version is initialized again; other
/// versions and challenges have none.
pub async fn init_audits_are_kept_per_version(store: Arc<dyn Store>) {
    let challenge = ready_challenge(&store).await;
    let (first, second) = (challenge.test_cases[0].id, challenge.test_cases[1].id);
    let grader = GraderId::from(Uuid::now_v7());
    assert!(store
        .list_init_audits(challenge.id, challenge.version)
        .await
        .unwrap()
        .is_empty());
    store
        .record_init_audits(
            challenge.id,
            challenge.version,
            vec![
                (second, audit_by(Some(grader), 2.0)),
                (first, audit_by(Some(grader), 1.0)),
            ],
        )
        .await
        .unwrap();
    let audits = store
        .list_init_audits(challenge.id, challenge.version)
        .await
        .unwrap();
    assert_eq!(
        audits,
        vec![
            (first, audit_by(Some(grader), 1.0)),
            (second, audit_by(Some(grader), 2.0))
        ]
    );
    // A second init of the same version replaces its audits.
    let other = GraderId::from(Uuid::now_v7());
    store
        .record_init_audits(
            challenge.id,
            challenge.version,
            vec![(first, audit_by(Some(other), 3.0))],
        )
        .await
        .unwrap();
    let audits = store
        .list_init_audits(challenge.id, challenge.version)
        .await
        .unwrap();
    assert_eq!(audits[0], (first, audit_by(Some(other), 3.0)));
    assert_eq!(audits.len(), 2);
    assert!(store
        .list_init_audits(challenge.id, challenge.version + 1)
        .await
        .unwrap()
        .is_empty());
}

/// Each grader's leaderboard holds each user's best attempt that grader
/// graded, in leaderboard order; the whole leaderboard still ranks every
/// grader's; attempts without audits and failed ones enter none.
pub async fn each_graders_leaderboard_keeps_its_own_best(store: Arc<dyn Store>) {
    let challenge = ready_challenge(&store).await;
    let (first, second) = (
        GraderId::from(Uuid::now_v7()),
        GraderId::from(Uuid::now_v7()),
    );
    let (ann, bob, cyd) = (
        user(&store, Role::Student).await,
        user(&store, Role::Student).await,
        user(&store, Role::Student).await,
    );
    let passed = AttemptStatus::Passed;
    let ann_first = finish(&store, ann, &challenge, 2.0, passed, Some(first)).await;
    let ann_second = finish(&store, ann, &challenge, 1.0, passed, Some(second)).await;
    let bob_first = finish(&store, bob, &challenge, 1.5, passed, Some(first)).await;
    finish(&store, bob, &challenge, 3.0, passed, Some(first)).await; // worse: ignored
    finish(
        &store,
        bob,
        &challenge,
        0.1,
        AttemptStatus::Failed,
        Some(first),
    )
    .await;
    let cyd_unaudited = finish(&store, cyd, &challenge, 0.5, passed, None).await;
    let board = |grader: GraderId| {
        let store = store.clone();
        let challenge = challenge.clone();
        async move {
            store
                .top_attempts_of_grader(challenge.id, challenge.version, grader, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|row| (row.user_id, row.attempt_id))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(board(first).await, vec![(bob, bob_first), (ann, ann_first)]);
    assert_eq!(board(second).await, vec![(ann, ann_second)]);
    assert!(board(GraderId::from(Uuid::now_v7())).await.is_empty());
    let limited = store
        .top_attempts_of_grader(challenge.id, challenge.version, first, 1)
        .await
        .unwrap();
    assert_eq!(limited.len(), 1, "the limit holds");
    assert!((limited[0].score - 1.5).abs() < 1e-9);
    let whole: Vec<_> = store
        .top_attempts(challenge.id, challenge.version, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.user_id, row.attempt_id))
        .collect();
    assert_eq!(
        whole,
        vec![(cyd, cyd_unaudited), (ann, ann_second), (bob, bob_first)]
    );
    assert!(store
        .top_attempts_of_grader(challenge.id, challenge.version + 1, first, 10)
        .await
        .unwrap()
        .is_empty());
}

/// The recent passed cases are those of the newest PASSED attempts, the
/// newest attempt's first, at most `limit` attempts' worth.
pub async fn recent_passed_cases_come_newest_first(store: Arc<dyn Store>) {
    let challenge = ready_challenge(&store).await;
    let student = user(&store, Role::Student).await;
    let grader = GraderId::from(Uuid::now_v7());
    let passed = AttemptStatus::Passed;
    finish(&store, student, &challenge, 1.0, passed, Some(grader)).await;
    finish(&store, student, &challenge, 2.0, passed, Some(grader)).await;
    finish(
        &store,
        student,
        &challenge,
        9.0,
        AttemptStatus::Failed,
        Some(grader),
    )
    .await;
    finish(&store, student, &challenge, 3.0, passed, Some(grader)).await;
    let ratios = |cases: Vec<CaseResult>| {
        cases
            .iter()
            .map(|case| case.ratio.unwrap())
            .collect::<Vec<_>>()
    };
    let recent = store.list_recent_passed_cases(2).await.unwrap();
    assert_eq!(ratios(recent.clone()), vec![3.0, 3.0, 2.0, 2.0]);
    assert!(recent
        .iter()
        .all(|case| case.audit.as_ref().and_then(|audit| audit.grader_id) == Some(grader)));
    let test_cases: Vec<TestCaseId> = recent.iter().map(|case| case.test_case_id).collect();
    assert_eq!(
        test_cases[..2],
        [challenge.test_cases[0].id, challenge.test_cases[1].id]
    );
    assert_eq!(
        ratios(store.list_recent_passed_cases(0).await.unwrap()),
        vec![3.0, 3.0, 2.0, 2.0, 1.0, 1.0],
        "0 lists them all"
    );
}
