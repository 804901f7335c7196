//! Conformance checks of [`AssessmentStore`], run on every backend by
//! [`assessment_store_conformance_suite!`](crate::assessment_store_conformance_suite)
//! beside the main suite (a list of its own, so that the assessment
//! feature's checks live with it).

// An unlisted check is dead code: refuse to build rather than skip it.
#![deny(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{Duration, Utc};
use sqlarena_common::assessments::{AssessmentSpec, Feedback, Scoreboard, Selection, Zone};
use sqlarena_common::{AttemptId, ChallengeId, Role, UserId};
use uuid::Uuid;

use super::assessments::{
    NewAssessmentSession, NewScoreOverride, Question, SessionEvent, Submission,
};
use super::{NewUser, Store, StoreError};

/// Generates, in a module `assessment_store_conformance`, one
/// `#[tokio::test]` per check of [`AssessmentStore`](super::AssessmentStore),
/// each on the fresh empty store returned by `$factory`.
#[macro_export]
macro_rules! assessment_store_conformance_suite {
    ($factory:expr) => {
        $crate::__assessment_store_conformance_tests!(
            $factory;
            assessments_are_created_and_replaced_by_revision,
            sessions_are_created_once_per_student,
            concurrent_session_changes_are_never_lost,
            manual_scores_are_kept_in_order,
        );
    };
}

/// Implementation detail of [`assessment_store_conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __assessment_store_conformance_tests {
    ($factory:expr; $($check:ident),+ $(,)?) => {
        mod assessment_store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let store: ::std::sync::Arc<dyn $crate::store::Store> = ($factory)().await;
                    $crate::store::assessments_conformance::$check(store).await;
                }
            )+
        }
    };
}

async fn user(store: &Arc<dyn Store>, role: Role) -> UserId {
    store
        .create_user(NewUser {
            email: format!("assess-{}@example.com", Uuid::new_v4().simple()),
            full_name: "Assessed".into(),
            role,
            password_hash: "$argon2id$hash".into(),
        })
        .await
        .unwrap()
        .id
}

fn spec(name: &str) -> AssessmentSpec {
    let now = Utc::now();
    AssessmentSpec {
        name: name.into(),
        description: Some("with a description".into()),
        zones: vec![Zone {
            pool: vec![ChallengeId(1), ChallengeId(2), ChallengeId(3)],
            pick: 2,
            points: 2.5,
        }],
        selection: Selection::Stable,
        time_limit_s: 600,
        opens_at: now,
        closes_at: now + Duration::hours(1),
        max_submissions: Some(3),
        min_interval_s: None,
        feedback: Feedback::AfterClose,
        scoreboard: Scoreboard::Live,
        policy: Default::default(),
        performance_credit: 0.25,
    }
}

fn new_session(assessment_id: i64, user_id: UserId) -> NewAssessmentSession {
    NewAssessmentSession {
        assessment_id,
        user_id,
        seed: u64::MAX - 7,
        questions: vec![Question {
            number: 1,
            zone: 0,
            challenge_id: ChallengeId(2),
            points: 2.5,
        }],
        started_at: Utc::now(),
        log: vec![SessionEvent {
            at: Utc::now(),
            kind: "started".into(),
            actor_id: Some(user_id),
            detail: None,
        }],
    }
}

/// Ids increase; a replace at the stored revision is written (rev + 1),
/// one at a stale revision is not and changes nothing, one of an unknown
/// assessment is `NotFound`.
pub async fn assessments_are_created_and_replaced_by_revision(store: Arc<dyn Store>) {
    let professor = user(&store, Role::Professor).await;
    let first = store
        .create_assessment(professor, spec("first"))
        .await
        .unwrap();
    let second = store
        .create_assessment(professor, spec("second"))
        .await
        .unwrap();
    assert!(second.id > first.id);
    assert_eq!((first.rev, first.started, first.extension_s), (1, false, 0));
    assert_eq!(
        store.get_assessment(first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.get_assessment(second.id + 100).await.unwrap(), None);

    let mut changed = first.clone();
    changed.started = true;
    changed.extension_s = 90;
    assert!(store.replace_assessment(&changed).await.unwrap());
    let stored = store.get_assessment(first.id).await.unwrap().unwrap();
    assert_eq!(stored.rev, 2);
    assert_eq!((stored.started, stored.extension_s), (true, 90));

    let mut stale = first.clone();
    stale.spec.name = "lost".into();
    assert!(!store.replace_assessment(&stale).await.unwrap());
    assert_eq!(
        store.get_assessment(first.id).await.unwrap().unwrap(),
        stored
    );
    let mut unknown = first;
    unknown.id = second.id + 100;
    assert!(matches!(
        store.replace_assessment(&unknown).await,
        Err(StoreError::NotFound(_))
    ));
}

/// Of concurrent starts of one student's session, exactly one creates it
/// and every call returns it; sessions are found by student and listed by
/// assessment and by user.
pub async fn sessions_are_created_once_per_student(store: Arc<dyn Store>) {
    let professor = user(&store, Role::Professor).await;
    let student = user(&store, Role::Student).await;
    let other = user(&store, Role::Student).await;
    let assessment = store
        .create_assessment(professor, spec("sessions"))
        .await
        .unwrap();
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_assessment_session(new_session(assessment.id, student))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    let mut ids = HashSet::new();
    for start in starts {
        let (session, new) = start.await.unwrap();
        created += usize::from(new);
        ids.insert(session.id);
    }
    assert_eq!(created, 1, "exactly one start creates the session");
    assert_eq!(ids.len(), 1, "every start returns the same session");
    let id = *ids.iter().next().unwrap();
    let session = store.get_assessment_session(id).await.unwrap().unwrap();
    assert_eq!(session.seed, u64::MAX - 7, "seeds keep all 64 bits");
    assert_eq!((session.rev, session.extension_s), (1, 0));
    assert_eq!(session.questions.len(), 1);
    assert_eq!(
        store
            .find_assessment_session(assessment.id, student)
            .await
            .unwrap(),
        Some(session.clone())
    );
    assert_eq!(
        store
            .find_assessment_session(assessment.id, other)
            .await
            .unwrap(),
        None
    );
    let (other_session, new) = store
        .create_assessment_session(new_session(assessment.id, other))
        .await
        .unwrap();
    assert!(new);
    let listed: Vec<i64> = store
        .list_assessment_sessions(assessment.id)
        .await
        .unwrap()
        .iter()
        .map(|session| session.id)
        .collect();
    assert_eq!(listed, vec![id, other_session.id]);
    assert_eq!(
        store.list_user_assessment_sessions(other).await.unwrap(),
        vec![other_session]
    );
}

/// Ten tasks each add a submission by read, change, replace-if-unchanged
/// (retrying when another got in first): all ten are kept.
pub async fn concurrent_session_changes_are_never_lost(store: Arc<dyn Store>) {
    let professor = user(&store, Role::Professor).await;
    let student = user(&store, Role::Student).await;
    let assessment = store
        .create_assessment(professor, spec("races"))
        .await
        .unwrap();
    let (session, _) = store
        .create_assessment_session(new_session(assessment.id, student))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    let mut current = store
                        .get_assessment_session(session.id)
                        .await
                        .unwrap()
                        .unwrap();
                    current.submissions.push(Submission {
                        number: task,
                        question: 1,
                        received_at: Utc::now(),
                        query: format!("select {task}"),
                        attempt_id: Some(AttemptId(i64::from(task))),
                        error: None,
                    });
                    if store.replace_assessment_session(&current).await.unwrap() {
                        break;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stored = store
        .get_assessment_session(session.id)
        .await
        .unwrap()
        .unwrap();
    let mut numbers: Vec<u32> = stored.submissions.iter().map(|s| s.number).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..10).collect::<Vec<_>>());
    assert_eq!(stored.rev, 11);
    let mut unknown = stored;
    unknown.id += 1000;
    assert!(matches!(
        store.replace_assessment_session(&unknown).await,
        Err(StoreError::NotFound(_))
    ));
}

/// Manual scores keep who, when and why, listed by id and filtered by
/// assessment and user.
pub async fn manual_scores_are_kept_in_order(store: Arc<dyn Store>) {
    let professor = user(&store, Role::Professor).await;
    let student = user(&store, Role::Student).await;
    let other = user(&store, Role::Student).await;
    let first = store.create_assessment(professor, spec("a")).await.unwrap();
    let second = store.create_assessment(professor, spec("b")).await.unwrap();
    let mut made = Vec::new();
    for (assessment_id, user_id, score) in [
        (first.id, student, 1.5),
        (first.id, other, 2.0),
        (second.id, student, 3.0),
        (first.id, student, 4.0),
    ] {
        let before = Utc::now() - Duration::seconds(1);
        let stored = store
            .create_score_override(NewScoreOverride {
                assessment_id,
                user_id,
                score,
                reason: format!("because {score}"),
                created_by: professor,
            })
            .await
            .unwrap();
        assert!(stored.created_at >= before);
        assert_eq!((stored.created_by, stored.score), (professor, score));
        made.push(stored);
    }
    assert!(made.windows(2).all(|pair| pair[0].id < pair[1].id));
    let ids = |list: Vec<super::assessments::ScoreOverride>| -> Vec<i64> {
        list.iter().map(|score| score.id).collect()
    };
    assert_eq!(
        ids(store
            .list_score_overrides(Some(first.id), None)
            .await
            .unwrap()),
        vec![made[0].id, made[1].id, made[3].id]
    );
    assert_eq!(
        ids(store
            .list_score_overrides(None, Some(student))
            .await
            .unwrap()),
        vec![made[0].id, made[2].id, made[3].id]
    );
    assert_eq!(
        store
            .list_score_overrides(Some(first.id), Some(student))
            .await
            .unwrap(),
        vec![made[0].clone(), made[3].clone()]
    );
}
