//! The store conformance suite: one set of checks every [`Store`] backend
//! must pass, in the style of quickwit's `metastore_test_suite!`.
//!
//! Each check is a `pub async fn` taking a fresh, empty `Arc<dyn Store>` and
//! panicking on the first deviation from the trait's contract. A backend's
//! integration test instantiates them all with
//! [`store_conformance_suite!`](crate::store_conformance_suite):
//!
//! ```text
//! async fn fresh_store() -> Arc<dyn Store> { /* a new empty store */ }
//! sqlarena_coordinator::store_conformance_suite!(fresh_store);
//! ```
//!
//! Checks create their own data and assume nothing about other checks'.
//! Times are compared after truncation to milliseconds, the coarsest
//! precision a backend may keep (BSON dates).
//!
//! Where the trait's doc comments leave room, the suite pins one reading so
//! that both backends behave alike:
//! - `JobFilter::limit == 0` lists every matching job;
//! - a job is `applied = false` from enqueue on; `list_unapplied_jobs` lists
//!   only finished (DONE, FAILED, CANCELLED) ones, oldest first;
//! - `stale_leases` answers in the order of the leases asked about, and a
//!   lease is stale for any grader but the one holding it;
//! - a job out of tries fails with a reason that reads "gave up after N
//!   tries: ..." (the lease deadline or the grader's reason);
//! - a clean `release_grader_leases` gives the try back (tries - 1);
//! - `cancel_job` and `retry_job` on a finished/unfinished job return `None`.
//!
//! Compiled only with the `testsuite` feature, which the coordinator's own
//! tests turn on (a dev-dependency of the crate on itself).

// An unlisted check is dead code: refuse to build rather than skip it.
#![deny(dead_code)]

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sqlarena_common::{
    AttemptId, AttemptOutcome, AttemptPayload, AttemptStatus, CaseResult, CaseStatus, ChallengeId,
    ChallengeState, ChallengeType, Column, GraderId, GraderState, InitOutcome, InitPayload, JobId,
    JobKind, JobOutcome, JobPayload, JobState, Lane, LeaseId, QueryResult, Role, TestCaseData,
    TestCaseId, UserId,
};
use uuid::Uuid;

use super::console::{ChallengeAttemptFilter, JobQuery};
use super::{
    pruned_payload, Admission, AttemptErrorKind, AttemptUpdate, ChallengeUpdate, ChallengeVersion,
    ClusterToken, Completion, FailOutcome, Grader, HeldLease, InitResult, Invite, JobFilter,
    NewAttempt, NewChallenge, NewJob, NewTestCase, NewUser, Page, Retry, Session, Store,
    StoreError, TryCount,
};

/// What running a check returns.
pub type CheckFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One check of the suite: its name and how to run it on a fresh store.
pub struct Check {
    /// The check's function name, also the name of its test per backend.
    pub name: &'static str,
    /// Runs the check on a fresh, empty store, panicking on a deviation.
    pub run: fn(Arc<dyn Store>) -> CheckFuture,
}

/// Generates, in a module `store_conformance`, one `#[tokio::test]` per
/// conformance check, each on the fresh empty store returned by `$factory`
/// (an `async fn() -> Arc<dyn Store>`).
///
/// The tests come from the same list as [`CHECKS`], and a check function
/// missing from that list fails the build (`dead_code` is denied in this
/// module, which is private): every check runs on every backend.
#[macro_export]
macro_rules! store_conformance_suite {
    ($factory:expr) => {
        $crate::__with_store_conformance_checks!(__store_conformance_tests!($factory));
    };
}

/// The one list of checks: calls `$callback!(ARGS; check, check, ...)`.
/// Implementation detail of [`store_conformance_suite!`] and [`CHECKS`].
#[doc(hidden)]
#[macro_export]
macro_rules! __with_store_conformance_checks {
    ($callback:ident!($($args:tt)*)) => {
        $crate::$callback!(
            $($args)*;
            emails_are_unique_case_insensitively,
            integer_ids_increase_and_are_distinct,
            sessions_resolve_until_they_expire,
            sessions_are_listed_and_revoked,
            passwords_change_and_sign_out_other_sessions,
            invites_are_single_use,
            invites_expire_and_survive_a_taken_email,
            invites_are_listed_and_revoked_until_used,
            challenges_are_created_listed_and_initialized,
            challenges_change_in_place_or_move_to_a_new_version,
            concurrent_updates_make_one_new_version,
            attempts_are_created_listed_and_updated,
            unfinished_attempts_are_capped_in_one_step,
            concurrent_claims_lease_every_job_once,
            claims_follow_lane_priority_then_age,
            batch_claims_take_up_to_max_in_priority_order,
            concurrent_batch_claims_lease_every_job_once,
            stale_leases_change_nothing,
            completions_are_recorded_once_and_applied,
            attempt_completions_apply_their_result,
            expired_leases_are_requeued_then_failed,
            grader_leases_are_released,
            failures_are_retried_or_final,
            jobs_are_cancelled_and_retried,
            jobs_are_listed_by_state_and_lane,
            lane_stats_cover_every_lane,
            graders_register_heartbeat_and_die,
            dead_graders_are_forgotten_after_a_cutoff,
            grader_leases_are_listed,
            cluster_tokens_are_created_and_revoked,
            lists_are_paged_by_key,
            leaderboards_keep_each_users_best_per_version,
            applied_jobs_are_pruned_then_compacted,
            challenge_attempts_are_listed_newest_first_with_filters,
            jobs_are_found_by_every_console_filter,
        );
    };
}

/// Implementation detail of [`store_conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_tests {
    ($factory:expr; $($check:ident),+ $(,)?) => {
        mod store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let store: ::std::sync::Arc<dyn $crate::store::Store> = ($factory)().await;
                    $crate::store::conformance_check(stringify!($check))(store).await;
                }
            )+
        }
    };
}

/// Implementation detail of [`CHECKS`].
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_table {
    (; $($check:ident),+ $(,)?) => {
        /// Every check of the suite, in the order of the one list.
        pub static CHECKS: &[Check] = &[
            $(Check { name: stringify!($check), run: |store| Box::pin($check(store)) },)+
        ];
    };
}

crate::__with_store_conformance_checks!(__store_conformance_table!());

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Returns a time as milliseconds since the epoch, the precision every
/// backend keeps.
fn ms(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

/// Returns `now` truncated to milliseconds, so that values passed in
/// compare exactly with what any backend returns.
fn now_ms() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now is representable")
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

/// A fresh time-ordered id of whichever type the call needs.
fn new_id<T: From<Uuid>>() -> T {
    Uuid::now_v7().into()
}

async fn create_user(store: &Arc<dyn Store>, role: Role) -> super::User {
    store
        .create_user(NewUser {
            email: format!("{}@example.com", unique("user")),
            full_name: "Test User".into(),
            role,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        })
        .await
        .expect("create_user")
}

fn new_challenge(
    created_user_id: UserId,
    challenge_type: ChallengeType,
    cases: usize,
) -> NewChallenge {
    NewChallenge {
        created_user_id,
        name: unique("challenge"),
        description: Some("find the answer".into()),
        challenge_type,
        init: "create table t (a int)".into(),
        solution: "select a from t order by a".into(),
        times_to_run: 3,
        expires_at: now_ms() + Duration::days(7),
        test_cases: (0..cases)
            .map(|index| NewTestCase {
                data: format!("insert into t values ({index})"),
                is_visible: index % 2 == 0,
            })
            .collect(),
    }
}

fn result_of(value: impl Into<i64>) -> QueryResult {
    let value = value.into();
    QueryResult {
        columns: vec![Column {
            name: "a".into(),
            type_name: "int4".into(),
        }],
        rows: vec![
            vec![serde_json::json!(value)],
            vec![serde_json::Value::Null],
        ],
        ordered: true,
    }
}

fn case_result(test_case_id: TestCaseId, status: CaseStatus) -> CaseResult {
    CaseResult {
        test_case_id,
        status,
        execution_ms: Some(1.5),
        min_ms: Some(1.25),
        reference_ms: Some(2.0),
        ratio: Some(0.75),
        actual_result: Some(result_of(test_case_id)),
        diff: None,
        error: None,
        timing: None,
        audit: None,
    }
}

/// A job on `lane` with an attempt payload naming `attempt_id` (no real
/// attempt is needed: the store does not interpret payloads).
fn attempt_job(lane: Lane, attempt_id: AttemptId) -> NewJob {
    NewJob {
        lane,
        payload: JobPayload::Attempt(AttemptPayload {
            attempt_id,
            user_id: UserId(1),
            challenge_id: ChallengeId(1),
            challenge_name: "c".into(),
            challenge_version: 1,
            version_hash: "abc".into(),
            query: "select a from t".into(),
            times_to_run: 3,
            test_case_ids: vec![TestCaseId(1), TestCaseId(2)],
            run_item: None,
        }),
        max_tries: 3,
        timeout_ms: 30_000,
    }
}

fn init_job(challenge_id: ChallengeId) -> NewJob {
    NewJob {
        lane: Lane::Init,
        payload: JobPayload::Init(InitPayload {
            challenge_id,
            challenge_name: "c".into(),
            version: 1,
            init: "create table t (a int)".into(),
            solution: "select a from t".into(),
            times_to_run: 3,
            test_cases: vec![TestCaseData {
                id: TestCaseId(1),
                data: "insert into t values (1)".into(),
            }],
        }),
        max_tries: 3,
        timeout_ms: 30_000,
    }
}

fn attempt_outcome() -> JobOutcome {
    JobOutcome::Attempt(AttemptOutcome {
        cases: vec![
            case_result(TestCaseId(1), CaseStatus::Passed),
            case_result(TestCaseId(2), CaseStatus::Failed),
        ],
        error: None,
    })
}

fn payload_attempt_id(payload: &JobPayload) -> Option<AttemptId> {
    match payload {
        JobPayload::Attempt(attempt) => Some(attempt.attempt_id),
        JobPayload::Init(_) => None,
    }
}

/// Enqueues one job and claims it for a new grader; returns the leased job.
async fn leased_job(store: &Arc<dyn Store>, job: NewJob) -> (super::Job, GraderId) {
    let lane = job.lane;
    let queued = store.enqueue_job(job).await.expect("enqueue_job");
    let grader_id = new_id();
    let leased = store
        .claim_job(grader_id, &[lane], now_ms())
        .await
        .expect("claim_job")
        .expect("a queued job");
    assert_eq!(leased.id, queued.id, "the only queued job is claimed");
    (leased, grader_id)
}

/// The lease `job`'s current holder (if it has one) reports under with
/// `lease_id`.
fn held_lease(job: &super::Job, lease_id: LeaseId) -> HeldLease {
    HeldLease {
        job_id: job.id,
        lease_id,
        grader_id: job
            .lease
            .map_or(GraderId(Uuid::nil()), |lease| lease.grader_id),
    }
}

fn lease_id_of(job: &super::Job) -> LeaseId {
    job.lease.expect("a leased job has a lease").lease_id
}

// ---------------------------------------------------------------------------
// Users, sessions, invites
// ---------------------------------------------------------------------------

/// Emails are unique regardless of case; lookups ignore case too.
pub async fn emails_are_unique_case_insensitively(store: Arc<dyn Store>) {
    let local = unique("Ada.Lovelace");
    let email = format!("{local}@Example.com");
    let user = store
        .create_user(NewUser {
            email: email.clone(),
            full_name: "Ada Lovelace".into(),
            role: Role::Professor,
            password_hash: "hash".into(),
        })
        .await
        .expect("create_user");
    assert_eq!(user.email, email, "the email is kept as typed");
    assert_eq!(user.role, Role::Professor);
    assert_eq!(user.password_hash, "hash");

    let duplicate = store
        .create_user(NewUser {
            email: email.to_uppercase(),
            full_name: "Someone Else".into(),
            role: Role::Student,
            password_hash: "other".into(),
        })
        .await;
    assert!(
        matches!(duplicate, Err(StoreError::Conflict(_))),
        "same email in another case: {duplicate:?}"
    );

    let found = store
        .get_user_by_email(&email.to_lowercase())
        .await
        .unwrap()
        .expect("found by lower-case email");
    assert_eq!(found, user);
    assert_eq!(store.get_user(user.id).await.unwrap(), Some(user.clone()));
    assert_eq!(
        store.get_user(UserId(user.id.0 + 1_000_000)).await.unwrap(),
        None
    );
    assert_eq!(
        store.get_user_by_email("nobody@example.com").await.unwrap(),
        None
    );
    store.ping().await.expect("ping");
}

/// Users, challenges, test cases and attempts get increasing, distinct ids.
pub async fn integer_ids_increase_and_are_distinct(store: Arc<dyn Store>) {
    let mut user_ids = Vec::new();
    for _ in 0..5 {
        user_ids.push(create_user(&store, Role::Student).await.id);
    }
    let prof = create_user(&store, Role::Professor).await;
    let mut challenge_ids = Vec::new();
    let mut case_ids = Vec::new();
    for _ in 0..3 {
        let challenge = store
            .create_challenge(new_challenge(prof.id, ChallengeType::FE, 3))
            .await
            .unwrap();
        challenge_ids.push(challenge.id);
        case_ids.extend(challenge.test_cases.iter().map(|case| case.id));
    }
    let mut attempt_ids = Vec::new();
    for user_id in &user_ids {
        let attempt = store
            .create_attempt(NewAttempt {
                user_id: *user_id,
                challenge_id: challenge_ids[0],
                challenge_version: 1,
                query: "select 1".into(),
            })
            .await
            .unwrap();
        attempt_ids.push(attempt.id);
    }
    let user_ids: Vec<i64> = user_ids.iter().map(|id| id.0).collect();
    let challenge_ids: Vec<i64> = challenge_ids.iter().map(|id| id.0).collect();
    let case_ids: Vec<i64> = case_ids.iter().map(|id| id.0).collect();
    let attempt_ids: Vec<i64> = attempt_ids.iter().map(|id| id.0).collect();
    for (what, ids) in [
        ("user", &user_ids),
        ("challenge", &challenge_ids),
        ("test case", &case_ids),
        ("attempt", &attempt_ids),
    ] {
        assert!(
            ids.windows(2).all(|pair| pair[0] < pair[1]),
            "{what} ids increase: {ids:?}"
        );
        assert!(
            ids.iter().all(|id| *id > 0),
            "{what} ids are positive: {ids:?}"
        );
    }
}

/// A session resolves to its user until it expires.
pub async fn sessions_resolve_until_they_expire(store: Arc<dyn Store>) {
    let user = create_user(&store, Role::Student).await;
    let now = now_ms();
    let live = unique("live");
    let expired = unique("expired");
    store
        .create_session(Session {
            id: Uuid::new_v4(),
            token_hash: live.clone(),
            user_id: user.id,
            created_at: now,
            expires_at: now + Duration::hours(1),
        })
        .await
        .unwrap();
    store
        .create_session(Session {
            id: Uuid::new_v4(),
            token_hash: expired.clone(),
            user_id: user.id,
            created_at: now - Duration::hours(2),
            expires_at: now - Duration::hours(1),
        })
        .await
        .unwrap();
    assert_eq!(
        store.get_session_user(&live, now).await.unwrap(),
        Some(user.clone())
    );
    assert_eq!(
        store.get_session_user(&expired, now).await.unwrap(),
        None,
        "an expired session does not resolve"
    );
    assert_eq!(
        store
            .get_session_user(&live, now + Duration::hours(2))
            .await
            .unwrap(),
        None,
        "a session stops resolving once it expires"
    );
    assert_eq!(store.get_session_user("unknown", now).await.unwrap(), None);
}

/// Creates a session of `user_id` made `age` ago, lasting `ttl`.
async fn session(store: &Arc<dyn Store>, user_id: UserId, age: Duration, ttl: Duration) -> Session {
    let created_at = now_ms() - age;
    let session = Session {
        id: Uuid::new_v4(),
        token_hash: unique("session"),
        user_id,
        created_at,
        expires_at: created_at + ttl,
    };
    store.create_session(session.clone()).await.unwrap();
    session
}

/// A user's live sessions are listed newest first; one is revoked by its
/// token (logout) or its id (an admin), or all but one together.
pub async fn sessions_are_listed_and_revoked(store: Arc<dyn Store>) {
    let user = create_user(&store, Role::Student).await;
    let other = create_user(&store, Role::Student).await;
    let day = Duration::days(1);
    let oldest = session(&store, user.id, Duration::seconds(30), day).await;
    let middle = session(&store, user.id, Duration::seconds(20), day).await;
    let newest = session(&store, user.id, Duration::seconds(10), day).await;
    session(&store, user.id, Duration::days(2), day).await; // expired
    let others = session(&store, other.id, Duration::seconds(10), day).await;
    let now = now_ms();
    assert_eq!(
        store.list_sessions(user.id, now).await.unwrap(),
        vec![newest.clone(), middle.clone(), oldest.clone()],
        "live sessions, newest first"
    );

    assert!(store.delete_session(&middle.token_hash).await.unwrap());
    assert!(!store.delete_session(&middle.token_hash).await.unwrap());
    assert_eq!(
        store
            .get_session_user(&middle.token_hash, now)
            .await
            .unwrap(),
        None,
        "a deleted session no longer resolves"
    );
    assert!(
        !store
            .delete_user_session(other.id, oldest.id)
            .await
            .unwrap(),
        "a session is revoked only through its own user"
    );
    assert!(store.delete_user_session(user.id, oldest.id).await.unwrap());
    assert_eq!(
        store.list_sessions(user.id, now).await.unwrap(),
        vec![newest.clone()]
    );

    let kept = session(&store, user.id, Duration::seconds(5), day).await;
    let deleted = store
        .delete_user_sessions(user.id, Some(&kept.token_hash))
        .await
        .unwrap();
    assert_eq!(deleted, 2, "the newest and the expired one");
    assert_eq!(store.list_sessions(user.id, now).await.unwrap(), vec![kept]);
    assert_eq!(store.delete_user_sessions(user.id, None).await.unwrap(), 1);
    assert!(store.list_sessions(user.id, now).await.unwrap().is_empty());
    assert_eq!(
        store.list_sessions(other.id, now).await.unwrap(),
        vec![others],
        "another user's sessions are untouched"
    );
}

/// A new password hash replaces the old one and signs out every session
/// of the user but the one kept.
pub async fn passwords_change_and_sign_out_other_sessions(store: Arc<dyn Store>) {
    let user = create_user(&store, Role::Student).await;
    let day = Duration::days(1);
    let current = session(&store, user.id, Duration::seconds(20), day).await;
    let stolen = session(&store, user.id, Duration::seconds(10), day).await;
    store
        .set_password(user.id, "new-hash", Some(&current.token_hash))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_user(user.id)
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "new-hash"
    );
    let now = now_ms();
    assert_eq!(
        store.list_sessions(user.id, now).await.unwrap(),
        vec![current]
    );
    assert_eq!(
        store
            .get_session_user(&stolen.token_hash, now)
            .await
            .unwrap(),
        None
    );

    store
        .set_password(user.id, "newer-hash", None)
        .await
        .unwrap();
    assert!(store.list_sessions(user.id, now).await.unwrap().is_empty());
    let missing = store
        .set_password(UserId(user.id.0 + 1_000_000), "x", None)
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
}

fn invite(created_by: UserId, role: Role, expires_at: DateTime<Utc>) -> Invite {
    Invite {
        code_hash: unique("invite"),
        role,
        created_by,
        created_at: now_ms(),
        expires_at,
        used_by: None,
    }
}

fn new_user(role: Role) -> NewUser {
    NewUser {
        email: format!("{}@example.com", unique("invited")),
        full_name: "Invited User".into(),
        role,
        password_hash: "hash".into(),
    }
}

/// An invite creates one user, with the invite's role; of two concurrent
/// registrations with it exactly one wins, and the loser creates nothing.
pub async fn invites_are_single_use(store: Arc<dyn Store>) {
    let admin = create_user(&store, Role::Admin).await;
    let invite = invite(admin.id, Role::Professor, now_ms() + Duration::days(7));
    store.create_invite(invite.clone()).await.unwrap();

    let register = |user: NewUser| {
        let store = store.clone();
        let code = invite.code_hash.clone();
        tokio::spawn(async move { store.create_invited_user(user, &code, now_ms()).await })
    };
    let (first, second) = (new_user(Role::Student), new_user(Role::Student));
    let (left, right) = tokio::join!(register(first.clone()), register(second.clone()));
    let outcomes = [left.unwrap().unwrap(), right.unwrap().unwrap()];
    let winners: Vec<&super::User> = outcomes.iter().flatten().collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one registration wins: {outcomes:?}"
    );
    let winner = winners[0];
    assert_eq!(winner.role, Role::Professor, "the invite decides the role");
    let loser = if winner.email == first.email {
        &second
    } else {
        &first
    };
    assert_eq!(
        store.get_user_by_email(&loser.email).await.unwrap(),
        None,
        "the losing registration created no user"
    );
    assert_eq!(
        store
            .create_invited_user(new_user(Role::Student), &invite.code_hash, now_ms())
            .await
            .unwrap(),
        None,
        "a used invite stays used"
    );
    assert_eq!(
        store
            .create_invited_user(new_user(Role::Student), "no-such-invite", now_ms())
            .await
            .unwrap(),
        None
    );
}

/// Invites list newest first with whether and by whom they were used; an
/// unused invite can be revoked and then registers no one, a used one
/// cannot be revoked and stays listed.
pub async fn invites_are_listed_and_revoked_until_used(store: Arc<dyn Store>) {
    let admin = create_user(&store, Role::Admin).await;
    let mut older = invite(admin.id, Role::Professor, now_ms() + Duration::days(1));
    older.created_at = now_ms() + Duration::days(3650);
    let mut newer = invite(admin.id, Role::Admin, now_ms() + Duration::days(1));
    newer.created_at = older.created_at + Duration::seconds(1);
    store.create_invite(older.clone()).await.unwrap();
    store.create_invite(newer.clone()).await.unwrap();
    let listed = store.list_invites(2).await.unwrap();
    assert_eq!(listed, vec![newer.clone(), older.clone()], "newest first");
    assert_eq!(store.list_invites(1).await.unwrap(), vec![newer.clone()]);

    let used = store
        .create_invited_user(new_user(Role::Student), &older.code_hash, now_ms())
        .await
        .unwrap()
        .expect("the invite registers");
    let refused = store.revoke_invite(&older.code_hash).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "a used invite is not revoked: {refused:?}"
    );
    let listed = store.list_invites(2).await.unwrap();
    assert_eq!(listed[1].used_by, Some(used.id), "{listed:?}");

    store.revoke_invite(&newer.code_hash).await.unwrap();
    let again = store.revoke_invite(&newer.code_hash).await;
    assert!(
        matches!(again, Err(StoreError::NotFound(_))),
        "revoked once: {again:?}"
    );
    assert_eq!(
        store
            .create_invited_user(new_user(Role::Student), &newer.code_hash, now_ms())
            .await
            .unwrap(),
        None,
        "a revoked invite registers no one"
    );
    let listed = store.list_invites(1).await.unwrap();
    assert_eq!(listed[0].code_hash, older.code_hash, "{listed:?}");
}

/// An expired invite creates nobody; a registration refused for a taken
/// email leaves the invite usable.
pub async fn invites_expire_and_survive_a_taken_email(store: Arc<dyn Store>) {
    let admin = create_user(&store, Role::Admin).await;
    let now = now_ms();
    let expired = invite(admin.id, Role::Professor, now - Duration::seconds(1));
    store.create_invite(expired.clone()).await.unwrap();
    let refused = new_user(Role::Student);
    assert_eq!(
        store
            .create_invited_user(refused.clone(), &expired.code_hash, now)
            .await
            .unwrap(),
        None,
        "an expired invite is refused"
    );
    assert_eq!(store.get_user_by_email(&refused.email).await.unwrap(), None);

    let live = invite(admin.id, Role::Admin, now + Duration::hours(1));
    store.create_invite(live.clone()).await.unwrap();
    let mut taken = new_user(Role::Student);
    taken.email = admin.email.to_uppercase();
    let conflict = store.create_invited_user(taken, &live.code_hash, now).await;
    assert!(
        matches!(conflict, Err(StoreError::Conflict(_))),
        "{conflict:?}"
    );
    let user = store
        .create_invited_user(new_user(Role::Student), &live.code_hash, now)
        .await
        .unwrap()
        .expect("the invite is still usable after the conflict");
    assert_eq!(user.role, Role::Admin);
    assert_eq!(
        store
            .create_invited_user(
                new_user(Role::Student),
                &live.code_hash,
                now + Duration::hours(2)
            )
            .await
            .unwrap(),
        None
    );
}

// ---------------------------------------------------------------------------
// Challenges and attempts
// ---------------------------------------------------------------------------

/// Challenges are created PENDING at version 1 with their test cases, listed
/// newest first (optionally by creator), and initialized once per version.
pub async fn challenges_are_created_listed_and_initialized(store: Arc<dyn Store>) {
    let alice = create_user(&store, Role::Professor).await;
    let bob = create_user(&store, Role::Professor).await;
    let nobody = create_user(&store, Role::Professor).await;
    let input = new_challenge(alice.id, ChallengeType::FE, 3);
    let first = store.create_challenge(input.clone()).await.unwrap();
    let second = store
        .create_challenge(new_challenge(bob.id, ChallengeType::SE, 2))
        .await
        .unwrap();
    let third = store
        .create_challenge(new_challenge(alice.id, ChallengeType::FE, 1))
        .await
        .unwrap();

    assert_eq!(first.created_user_id, alice.id);
    assert_eq!(first.name, input.name);
    assert_eq!(first.description, input.description);
    assert_eq!(first.challenge_type, ChallengeType::FE);
    assert_eq!(
        (first.init.as_str(), first.solution.as_str()),
        (input.init.as_str(), input.solution.as_str())
    );
    assert_eq!(first.times_to_run, 3);
    assert_eq!(ms(first.expires_at), ms(input.expires_at));
    assert_eq!((first.version, first.state), (1, ChallengeState::Pending));
    assert_eq!((first.init_at, first.init_errors.clone()), (None, None));
    assert!(first.init_warnings.is_empty());
    assert_eq!(first.test_cases.len(), 3);
    assert!(
        first
            .test_cases
            .windows(2)
            .all(|pair| pair[0].id < pair[1].id),
        "test cases ordered by id"
    );
    for (case, new_case) in first.test_cases.iter().zip(&input.test_cases) {
        assert_eq!(case.challenge_id, first.id);
        assert_eq!(
            (case.data.as_str(), case.is_visible),
            (new_case.data.as_str(), new_case.is_visible)
        );
        assert_eq!((case.expected.clone(), case.reference_ms), (None, None));
    }
    assert_eq!(
        store.get_challenge(first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store
            .get_challenge(ChallengeId(third.id.0 + 1_000))
            .await
            .unwrap(),
        None
    );

    let ids = |challenges: Vec<super::Challenge>| {
        challenges.into_iter().map(|c| c.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.list_challenges(None, Page::all()).await.unwrap()),
        vec![third.id, second.id, first.id]
    );
    assert_eq!(
        ids(store
            .list_challenges(Some(alice.id), Page::all())
            .await
            .unwrap()),
        vec![third.id, first.id]
    );
    assert_eq!(
        ids(store
            .list_challenges(Some(nobody.id), Page::all())
            .await
            .unwrap()),
        Vec::<ChallengeId>::new()
    );
    let listed = store
        .list_challenges(Some(bob.id), Page::all())
        .await
        .unwrap();
    assert_eq!(
        listed,
        vec![second.clone()],
        "listed challenges carry their test cases"
    );

    // Another version's result changes nothing.
    let expected: Vec<(TestCaseId, QueryResult, Option<f64>)> = first
        .test_cases
        .iter()
        .map(|case| (case.id, result_of(case.id), Some(case.id.0 as f64 + 0.5)))
        .collect();
    let ready = InitResult::Ready {
        expected: expected.clone(),
        warnings: vec!["order is not fixed".into()],
    };
    let at = now_ms();
    assert!(
        !store
            .set_challenge_init(first.id, 2, ready.clone(), at)
            .await
            .unwrap(),
        "wrong version"
    );
    assert_eq!(
        store.get_challenge(first.id).await.unwrap(),
        Some(first.clone()),
        "wrong version changes nothing"
    );

    assert!(store
        .set_challenge_init(first.id, 1, ready, at)
        .await
        .unwrap());
    let initialized = store.get_challenge(first.id).await.unwrap().unwrap();
    assert_eq!(initialized.state, ChallengeState::Ready);
    assert_eq!(initialized.init_at.map(ms), Some(ms(at)));
    assert_eq!(initialized.init_errors, None);
    assert_eq!(
        initialized.init_warnings,
        vec!["order is not fixed".to_owned()]
    );
    for (case, (case_id, result, reference_ms)) in initialized.test_cases.iter().zip(&expected) {
        assert_eq!(case.id, *case_id);
        assert_eq!(
            case.expected.as_ref(),
            Some(result),
            "expected result of case {case_id}"
        );
        assert_eq!(case.reference_ms, *reference_ms);
    }

    let errors = vec![
        "syntax error at or near \"tabel\"".to_owned(),
        "test case 2: relation t does not exist".to_owned(),
    ];
    assert!(store
        .set_challenge_init(
            second.id,
            1,
            InitResult::Failed {
                errors: errors.clone()
            },
            at
        )
        .await
        .unwrap());
    let failed = store.get_challenge(second.id).await.unwrap().unwrap();
    assert_eq!(failed.state, ChallengeState::Failed);
    assert_eq!(failed.init_errors, Some(errors));

    assert!(!store
        .set_challenge_init(
            third.id,
            0,
            InitResult::Failed {
                errors: vec!["late".into()]
            },
            at
        )
        .await
        .unwrap());
    assert_eq!(
        store.get_challenge(third.id).await.unwrap().unwrap().state,
        ChallengeState::Pending
    );
}

/// Returns the init result that makes every test case of `challenge` READY.
fn ready_for(challenge: &super::Challenge) -> InitResult {
    InitResult::Ready {
        expected: challenge
            .test_cases
            .iter()
            .map(|case| (case.id, result_of(case.id), Some(1.5)))
            .collect(),
        warnings: vec!["a warning".into()],
    }
}

/// A new version built from `solution`, with three test cases.
fn next_version(solution: &str) -> ChallengeVersion {
    ChallengeVersion {
        init: "create table t (a int, b int)".into(),
        solution: solution.into(),
        test_cases: (0..3)
            .map(|index| NewTestCase {
                data: format!("insert into t values ({index}, {index})"),
                is_visible: index == 0,
            })
            .collect(),
    }
}

/// A challenge changes in place (name, description, times_to_run, expiry)
/// or moves to its next version (init, solution, test cases): PENDING with
/// no init result and test cases under new ids, the old version's test
/// cases kept. An update from a stale version conflicts and changes
/// nothing, and so does an init result for the old version.
pub async fn challenges_change_in_place_or_move_to_a_new_version(store: Arc<dyn Store>) {
    let prof = create_user(&store, Role::Professor).await;
    let created = store
        .create_challenge(new_challenge(prof.id, ChallengeType::SE, 2))
        .await
        .unwrap();
    let id = created.id;
    assert!(store
        .set_challenge_init(id, 1, ready_for(&created), now_ms())
        .await
        .unwrap());
    let first = store.get_challenge(id).await.unwrap().unwrap();

    // In place: the version, state, init result and test cases stay.
    let expires_at = now_ms() + Duration::days(30);
    let renamed = store
        .update_challenge(
            id,
            1,
            ChallengeUpdate {
                name: Some("renamed".into()),
                description: Some(None),
                times_to_run: Some(7),
                expires_at: Some(expires_at),
                new_version: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (renamed.name.as_str(), renamed.description.clone()),
        ("renamed", None)
    );
    assert_eq!(renamed.times_to_run, 7);
    assert_eq!(ms(renamed.expires_at), ms(expires_at));
    assert_eq!((renamed.version, renamed.state), (1, ChallengeState::Ready));
    assert_eq!(renamed.init_at.map(ms), first.init_at.map(ms));
    assert_eq!(renamed.init_warnings, first.init_warnings);
    assert_eq!(
        (renamed.init.as_str(), renamed.solution.as_str()),
        (first.init.as_str(), first.solution.as_str())
    );
    assert_eq!(renamed.test_cases, first.test_cases);
    assert_eq!(
        store.get_challenge(id).await.unwrap(),
        Some(renamed.clone())
    );
    let unchanged = store
        .update_challenge(id, 1, ChallengeUpdate::default())
        .await
        .unwrap();
    assert_eq!(unchanged, renamed, "an empty update changes nothing");
    let described = store
        .update_challenge(
            id,
            1,
            ChallengeUpdate {
                description: Some(Some("new words".into())),
                ..ChallengeUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(described.description.as_deref(), Some("new words"));
    assert_eq!(
        described.name, "renamed",
        "fields left as None keep their value"
    );

    // A new version.
    let version = next_version("select a, b from t order by a");
    let second = store
        .update_challenge(
            id,
            1,
            ChallengeUpdate {
                name: Some("second".into()),
                new_version: Some(version.clone()),
                ..ChallengeUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((second.version, second.state), (2, ChallengeState::Pending));
    assert_eq!((second.init_at, second.init_errors.clone()), (None, None));
    assert!(second.init_warnings.is_empty());
    assert_eq!(
        (second.init.as_str(), second.solution.as_str()),
        (version.init.as_str(), version.solution.as_str())
    );
    assert_eq!(second.name, "second");
    assert_eq!(second.times_to_run, 7);
    assert_eq!(second.challenge_type, ChallengeType::SE);
    assert_eq!(second.test_cases.len(), 3);
    let old_ids: BTreeSet<TestCaseId> = first.test_cases.iter().map(|case| case.id).collect();
    let newest_old_id = *old_ids.last().unwrap();
    for (case, new_case) in second.test_cases.iter().zip(&version.test_cases) {
        assert!(
            case.id > newest_old_id,
            "new test case ids come from the sequence"
        );
        assert_eq!(case.challenge_id, id);
        assert_eq!(
            (case.data.as_str(), case.is_visible),
            (new_case.data.as_str(), new_case.is_visible)
        );
        assert_eq!((case.expected.clone(), case.reference_ms), (None, None));
    }
    assert!(
        second
            .test_cases
            .windows(2)
            .all(|pair| pair[0].id < pair[1].id),
        "test cases ordered by id"
    );
    assert_eq!(store.get_challenge(id).await.unwrap(), Some(second.clone()));

    // Each version's test cases, the old ones with their expected results.
    assert_eq!(
        store.list_test_cases(id, 1).await.unwrap(),
        first.test_cases
    );
    assert_eq!(
        store.list_test_cases(id, 2).await.unwrap(),
        second.test_cases
    );
    assert!(store.list_test_cases(id, 3).await.unwrap().is_empty());
    assert!(store
        .list_test_cases(ChallengeId(id.0 + 1_000), 1)
        .await
        .unwrap()
        .is_empty());

    // Stale: an update from version 1, in place or not, and its init result.
    for update in [
        ChallengeUpdate {
            name: Some("late".into()),
            ..ChallengeUpdate::default()
        },
        ChallengeUpdate {
            new_version: Some(next_version("select 1")),
            ..ChallengeUpdate::default()
        },
    ] {
        let stale = store.update_challenge(id, 1, update).await;
        assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    }
    assert!(!store
        .set_challenge_init(id, 1, ready_for(&first), now_ms())
        .await
        .unwrap());
    assert_eq!(
        store.get_challenge(id).await.unwrap(),
        Some(second.clone()),
        "stale updates change nothing"
    );
    let missing = store
        .update_challenge(ChallengeId(id.0 + 1_000), 1, ChallengeUpdate::default())
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );

    // The new version initializes as the first did.
    assert!(store
        .set_challenge_init(id, 2, ready_for(&second), now_ms())
        .await
        .unwrap());
    let ready = store.get_challenge(id).await.unwrap().unwrap();
    assert_eq!((ready.version, ready.state), (2, ChallengeState::Ready));
    assert!(ready
        .test_cases
        .iter()
        .all(|case| case.expected == Some(result_of(case.id))));
    assert_eq!(
        store.list_test_cases(id, 1).await.unwrap(),
        first.test_cases,
        "the old version's test cases are untouched"
    );
}

/// Of several updates made at once from the same version, exactly one moves
/// the challenge to the next version; the others conflict.
pub async fn concurrent_updates_make_one_new_version(store: Arc<dyn Store>) {
    let prof = create_user(&store, Role::Professor).await;
    let challenge = store
        .create_challenge(new_challenge(prof.id, ChallengeType::FE, 2))
        .await
        .unwrap();
    let mut updates = tokio::task::JoinSet::new();
    for index in 0..8 {
        let store = store.clone();
        let id = challenge.id;
        updates.spawn(async move {
            let solution = format!("select a from t -- {index}");
            let update = ChallengeUpdate {
                new_version: Some(next_version(&solution)),
                ..ChallengeUpdate::default()
            };
            (solution, store.update_challenge(id, 1, update).await)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = updates.join_next().await {
        match joined.expect("update task panicked") {
            (solution, Ok(updated)) => {
                assert_eq!(updated.version, 2);
                winners.push(solution);
            }
            (_, Err(StoreError::Conflict(_))) => {}
            (_, Err(error)) => panic!("unexpected error: {error}"),
        }
    }
    assert_eq!(winners.len(), 1, "one winner: {winners:?}");
    let stored = store.get_challenge(challenge.id).await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(stored.solution, winners[0]);
    assert_eq!(stored.test_cases.len(), 3, "the winner's test cases");
    assert_eq!(
        store.list_test_cases(challenge.id, 1).await.unwrap(),
        challenge.test_cases
    );
}

/// Attempts are created PENDING, listed, counted and updated until final.
pub async fn attempts_are_created_listed_and_updated(store: Arc<dyn Store>) {
    let student = create_user(&store, Role::Student).await;
    let other = create_user(&store, Role::Student).await;
    let prof = create_user(&store, Role::Professor).await;
    let challenge = store
        .create_challenge(new_challenge(prof.id, ChallengeType::FE, 2))
        .await
        .unwrap();
    let new_attempt = |user_id: UserId| NewAttempt {
        user_id,
        challenge_id: challenge.id,
        challenge_version: 1,
        query: "select a from t".into(),
    };
    let first = store.create_attempt(new_attempt(student.id)).await.unwrap();
    let second = store.create_attempt(new_attempt(student.id)).await.unwrap();
    let theirs = store.create_attempt(new_attempt(other.id)).await.unwrap();

    assert_eq!(
        (first.user_id, first.challenge_id, first.challenge_version),
        (student.id, challenge.id, 1)
    );
    assert_eq!(first.query, "select a from t");
    assert_eq!(first.status, AttemptStatus::Pending);
    assert!(first.cases.is_empty());
    assert_eq!(
        (first.error.clone(), first.job_id, first.finished_at),
        (None, None, None)
    );
    assert_eq!(
        store.get_attempt(first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store
            .get_attempt(AttemptId(theirs.id.0 + 1_000))
            .await
            .unwrap(),
        None
    );

    let ids =
        |attempts: Vec<super::Attempt>| attempts.into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store
            .list_user_attempts(student.id, Page::all())
            .await
            .unwrap()),
        vec![second.id, first.id]
    );
    assert_eq!(
        ids(store
            .list_user_attempts(other.id, Page::all())
            .await
            .unwrap()),
        vec![theirs.id]
    );
    assert_eq!(
        store.count_unfinished_attempts(student.id).await.unwrap(),
        2
    );
    let challenge_id = challenge.id;
    let unfinished = || {
        let store = store.clone();
        async move {
            ids(store
                .list_unfinished_challenge_attempts(challenge_id)
                .await
                .unwrap())
        }
    };
    assert_eq!(
        unfinished().await,
        vec![first.id, second.id, theirs.id],
        "a challenge's unfinished attempts, oldest first"
    );
    assert!(store
        .list_unfinished_challenge_attempts(ChallengeId(challenge.id.0 + 1_000))
        .await
        .unwrap()
        .is_empty());

    let untouched = store
        .update_attempt(theirs.id, AttemptUpdate::default())
        .await
        .unwrap();
    assert_eq!(untouched, theirs, "an empty update changes nothing");

    let job_id = new_id();
    let running = store
        .update_attempt(
            first.id,
            AttemptUpdate {
                status: Some(AttemptStatus::Running),
                job_id: Some(job_id),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (running.status, running.job_id),
        (AttemptStatus::Running, Some(job_id))
    );
    assert_eq!(
        store.count_unfinished_attempts(student.id).await.unwrap(),
        2,
        "RUNNING is unfinished"
    );

    let cases = vec![
        case_result(challenge.test_cases[0].id, CaseStatus::Passed),
        case_result(challenge.test_cases[1].id, CaseStatus::Passed),
    ];
    let finished_at = now_ms();
    let passed = store
        .update_attempt(
            first.id,
            AttemptUpdate {
                status: Some(AttemptStatus::Passed),
                cases: Some(cases.clone()),
                finished_at: Some(finished_at),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(passed.status, AttemptStatus::Passed);
    assert_eq!(passed.cases, cases);
    assert_eq!(
        passed.job_id,
        Some(job_id),
        "fields left as None keep their value"
    );
    assert_eq!(passed.finished_at.map(ms), Some(ms(finished_at)));
    assert_eq!(
        store.get_attempt(first.id).await.unwrap(),
        Some(passed.clone())
    );
    assert_eq!(
        store.count_unfinished_attempts(student.id).await.unwrap(),
        1
    );
    assert_eq!(
        ids(store.list_passed_attempts(challenge.id).await.unwrap()),
        vec![first.id]
    );

    let after_final = store
        .update_attempt(
            first.id,
            AttemptUpdate {
                status: Some(AttemptStatus::Failed),
                error: Some("late".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(after_final, passed, "a final attempt does not change");
    assert_eq!(store.get_attempt(first.id).await.unwrap(), Some(passed));

    let errored = store
        .update_attempt(
            second.id,
            AttemptUpdate {
                status: Some(AttemptStatus::Error),
                error: Some("not a single read-only statement".into()),
                finished_at: Some(finished_at),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        errored.error.as_deref(),
        Some("not a single read-only statement")
    );
    assert_eq!(
        store.count_unfinished_attempts(student.id).await.unwrap(),
        0
    );
    assert_eq!(
        ids(store.list_passed_attempts(challenge.id).await.unwrap()),
        vec![first.id]
    );
    assert_eq!(
        unfinished().await,
        vec![theirs.id],
        "finished attempts are not listed"
    );

    // Reopening (an admin retried the job) applies even to a final attempt.
    let reopened = store.reopen_attempt(first.id).await.unwrap();
    assert_eq!(reopened.status, AttemptStatus::Pending);
    assert!(reopened.cases.is_empty());
    assert_eq!((reopened.error.clone(), reopened.finished_at), (None, None));
    assert_eq!(reopened.job_id, Some(job_id), "the job stays the attempt's");
    assert_eq!(store.get_attempt(first.id).await.unwrap(), Some(reopened));
    assert_eq!(
        store.count_unfinished_attempts(student.id).await.unwrap(),
        1
    );
    assert!(store
        .list_passed_attempts(challenge.id)
        .await
        .unwrap()
        .is_empty());

    let missing = store
        .update_attempt(AttemptId(theirs.id.0 + 1_000), AttemptUpdate::default())
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
    let missing = store.reopen_attempt(AttemptId(theirs.id.0 + 1_000)).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
}

// ---------------------------------------------------------------------------
// Jobs: claims
// ---------------------------------------------------------------------------

/// `admit_attempt` counts and creates in one step: 30 concurrent calls for
/// one user with a cap of 5 create exactly 5; a finished attempt frees its
/// place, a reopened one takes it again, and other users are not counted.
/// An error's kind is kept beside its text.
pub async fn unfinished_attempts_are_capped_in_one_step(store: Arc<dyn Store>) {
    const CAP: u64 = 5;
    let student = create_user(&store, Role::Student).await;
    let other = create_user(&store, Role::Student).await;
    let prof = create_user(&store, Role::Professor).await;
    let challenge = store
        .create_challenge(new_challenge(prof.id, ChallengeType::FE, 1))
        .await
        .unwrap();
    let new_attempt = move |user_id: UserId| NewAttempt {
        user_id,
        challenge_id: challenge.id,
        challenge_version: 1,
        query: "select a from t".into(),
    };
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let store = store.clone();
        calls.spawn(async move { store.admit_attempt(new_attempt(student.id), CAP).await });
    }
    let mut created = Vec::new();
    let mut refused = 0;
    while let Some(result) = calls.join_next().await {
        match result.expect("admit task").expect("admit_attempt") {
            Admission::Created(attempt) => created.push(attempt),
            Admission::OverCap { unfinished } => {
                assert_eq!(unfinished, CAP);
                refused += 1;
            }
        }
    }
    assert_eq!((created.len(), refused), (CAP as usize, 30 - CAP as usize));
    assert_eq!(
        store.count_unfinished_attempts(student.id).await.unwrap(),
        CAP
    );
    assert_eq!(
        store
            .list_user_attempts(student.id, Page::all())
            .await
            .unwrap()
            .len(),
        CAP as usize,
        "refused attempts leave nothing behind"
    );
    assert!(matches!(
        store
            .admit_attempt(new_attempt(other.id), CAP)
            .await
            .unwrap(),
        Admission::Created(_)
    ));

    let finished = store
        .update_attempt(
            created[0].id,
            AttemptUpdate {
                status: Some(AttemptStatus::Error),
                error: Some("grader lab-1 (lab-1.example.edu) stopped heartbeating".into()),
                error_kind: Some(AttemptErrorKind::Grading),
                finished_at: Some(now_ms()),
                ..AttemptUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(finished.error_kind, Some(AttemptErrorKind::Grading));
    assert_eq!(
        store
            .get_attempt(finished.id)
            .await
            .unwrap()
            .unwrap()
            .error_kind,
        Some(AttemptErrorKind::Grading)
    );
    let Admission::Created(sixth) = store
        .admit_attempt(new_attempt(student.id), CAP)
        .await
        .unwrap()
    else {
        panic!("a finished attempt frees its place");
    };
    assert!(matches!(
        store
            .admit_attempt(new_attempt(student.id), CAP)
            .await
            .unwrap(),
        Admission::OverCap { unfinished: CAP }
    ));
    let reopened = store.reopen_attempt(finished.id).await.unwrap();
    assert_eq!((reopened.error, reopened.error_kind), (None, None));
    store
        .update_attempt(
            sixth.id,
            AttemptUpdate {
                status: Some(AttemptStatus::Cancelled),
                finished_at: Some(now_ms()),
                ..AttemptUpdate::default()
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(
            store
                .admit_attempt(new_attempt(student.id), CAP)
                .await
                .unwrap(),
            Admission::OverCap { unfinished: CAP }
        ),
        "the reopened attempt counts again"
    );
}

/// Sixteen tasks claiming 300 jobs at once lease every job exactly once.
pub async fn concurrent_claims_lease_every_job_once(store: Arc<dyn Store>) {
    const JOBS: i64 = 300;
    let mut enqueued = HashSet::new();
    for index in 0..JOBS {
        let lane = Lane::ALL[(index % 3) as usize];
        let job = store
            .enqueue_job(attempt_job(lane, AttemptId(index)))
            .await
            .unwrap();
        assert_eq!(
            (job.state, job.tries, job.lease),
            (JobState::Queued, 0, None)
        );
        enqueued.insert(job.id);
    }
    assert_eq!(enqueued.len() as i64, JOBS, "job ids are distinct");

    let now = now_ms();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let grader_id = new_id();
            let mut claimed = Vec::new();
            while let Some(job) = store
                .claim_job(grader_id, &Lane::ALL, now)
                .await
                .expect("claim_job")
            {
                claimed.push((grader_id, job));
            }
            claimed
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.unwrap());
    }
    assert_eq!(claimed.len() as i64, JOBS, "every job is claimed once");
    let claimed_ids: HashSet<_> = claimed.iter().map(|(_, job)| job.id).collect();
    assert_eq!(
        claimed_ids, enqueued,
        "the claimed jobs are the enqueued ones, none twice"
    );
    let lease_ids: HashSet<_> = claimed.iter().map(|(_, job)| lease_id_of(job)).collect();
    assert_eq!(lease_ids.len() as i64, JOBS, "every lease id is new");
    for (grader_id, job) in &claimed {
        let lease = job.lease.unwrap();
        assert_eq!((job.state, job.tries), (JobState::Leased, 1));
        assert_eq!(lease.grader_id, *grader_id);
        assert_eq!(
            ms(lease.expires_at),
            ms(now) + 30_000,
            "the lease expires timeout_ms after the claim"
        );
        assert_eq!(job.leased_at.map(ms), Some(ms(now)));
    }
    let leased = store
        .list_jobs(JobFilter {
            state: Some(JobState::Leased),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(leased.len() as i64, JOBS, "a limit of 0 lists every job");
    assert!(store
        .claim_job(new_id(), &Lane::ALL, now)
        .await
        .unwrap()
        .is_none());
}

/// A batch claim takes up to `max` jobs, in the order single claims would
/// (lane priority, then age), each LEASED to the grader under its own new
/// lease; it takes nothing with no lanes or `max == 0`.
pub async fn batch_claims_take_up_to_max_in_priority_order(store: Arc<dyn Store>) {
    let slow = store
        .enqueue_job(attempt_job(Lane::Slow, AttemptId(1)))
        .await
        .unwrap();
    let fast_old = store
        .enqueue_job(attempt_job(Lane::Fast, AttemptId(2)))
        .await
        .unwrap();
    let init = store.enqueue_job(init_job(ChallengeId(3))).await.unwrap();
    let fast_new = store
        .enqueue_job(attempt_job(Lane::Fast, AttemptId(4)))
        .await
        .unwrap();
    let grader_id = new_id();
    let now = now_ms();
    assert!(store
        .claim_jobs(grader_id, &[], 3, now)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .claim_jobs(grader_id, &Lane::ALL, 0, now)
        .await
        .unwrap()
        .is_empty());
    let first = store
        .claim_jobs(grader_id, &Lane::ALL, 3, now)
        .await
        .unwrap();
    let ids: Vec<_> = first.iter().map(|job| job.id).collect();
    assert_eq!(
        ids,
        vec![init.id, fast_old.id, fast_new.id],
        "priority, then age"
    );
    for job in &first {
        let lease = job.lease.expect("a lease");
        assert_eq!((job.state, job.tries), (JobState::Leased, 1));
        assert_eq!(lease.grader_id, grader_id);
        assert_eq!(job.leased_at.map(ms), Some(ms(now)));
        assert_eq!(store.get_job(job.id).await.unwrap().as_ref(), Some(job));
    }
    let lease_ids: HashSet<_> = first.iter().map(lease_id_of).collect();
    assert_eq!(lease_ids.len(), 3, "one new lease per job");
    let rest = store
        .claim_jobs(grader_id, &Lane::ALL, 3, now)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|job| job.id).collect::<Vec<_>>(),
        vec![slow.id],
        "fewer than max when fewer are queued"
    );
    assert!(store
        .claim_jobs(grader_id, &Lane::ALL, 3, now)
        .await
        .unwrap()
        .is_empty());
}

/// Graders racing with batch claims lease every job exactly once.
pub async fn concurrent_batch_claims_lease_every_job_once(store: Arc<dyn Store>) {
    const JOBS: i64 = 200;
    let mut enqueued = HashSet::new();
    for index in 0..JOBS {
        let lane = Lane::ALL[(index % 3) as usize];
        enqueued.insert(
            store
                .enqueue_job(attempt_job(lane, AttemptId(index)))
                .await
                .unwrap()
                .id,
        );
    }
    let now = now_ms();
    let mut tasks = Vec::new();
    for max in 1..=8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let grader_id = new_id();
            let mut claimed = Vec::new();
            loop {
                let batch = store
                    .claim_jobs(grader_id, &Lane::ALL, max, now)
                    .await
                    .expect("claim_jobs");
                assert!(batch.len() <= max as usize, "at most max jobs");
                if batch.is_empty() {
                    return claimed;
                }
                claimed.extend(batch.into_iter().map(|job| (grader_id, job)));
            }
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.unwrap());
    }
    assert_eq!(claimed.len() as i64, JOBS, "every job is claimed once");
    let claimed_ids: HashSet<_> = claimed.iter().map(|(_, job)| job.id).collect();
    assert_eq!(claimed_ids, enqueued);
    for (grader_id, job) in &claimed {
        assert_eq!((job.state, job.tries), (JobState::Leased, 1));
        assert_eq!(job.lease.unwrap().grader_id, *grader_id);
    }
}

/// Claims take the init lane before fast before slow, the oldest job first
/// within a lane, and only from the lanes asked for.
pub async fn claims_follow_lane_priority_then_age(store: Arc<dyn Store>) {
    let slow_old = store
        .enqueue_job(attempt_job(Lane::Slow, AttemptId(1)))
        .await
        .unwrap();
    let fast_old = store
        .enqueue_job(attempt_job(Lane::Fast, AttemptId(2)))
        .await
        .unwrap();
    let slow_new = store
        .enqueue_job(attempt_job(Lane::Slow, AttemptId(3)))
        .await
        .unwrap();
    let init = store.enqueue_job(init_job(ChallengeId(4))).await.unwrap();
    let fast_new = store
        .enqueue_job(attempt_job(Lane::Fast, AttemptId(5)))
        .await
        .unwrap();
    assert_eq!((init.kind, init.lane), (JobKind::Init, Lane::Init));
    assert_eq!(
        (fast_old.kind, fast_old.lane),
        (JobKind::Attempt, Lane::Fast)
    );
    assert!(
        !init.applied
            && !init.cancel_requested
            && init.progress.is_empty()
            && init.outcome.is_none()
    );
    assert_eq!((init.max_tries, init.timeout_ms), (3, 30_000));
    assert_eq!(store.get_job(init.id).await.unwrap(), Some(init.clone()));
    assert_eq!(store.get_job(new_id()).await.unwrap(), None);

    let grader_id = new_id();
    let now = now_ms();
    assert_eq!(
        store.claim_job(grader_id, &[], now).await.unwrap(),
        None,
        "no lanes, no job"
    );
    let claim = |lanes: Vec<Lane>| {
        let store = store.clone();
        async move {
            store
                .claim_job(grader_id, &lanes, now)
                .await
                .unwrap()
                .map(|job| job.id)
        }
    };
    assert_eq!(
        claim(vec![Lane::Fast]).await,
        Some(fast_old.id),
        "only the lanes asked for"
    );
    let all_lanes_in_any_order = vec![Lane::Slow, Lane::Fast, Lane::Init];
    assert_eq!(
        claim(all_lanes_in_any_order.clone()).await,
        Some(init.id),
        "init goes first"
    );
    assert_eq!(claim(vec![Lane::Init]).await, None);
    assert_eq!(
        claim(all_lanes_in_any_order.clone()).await,
        Some(fast_new.id),
        "fast before slow"
    );
    assert_eq!(
        claim(all_lanes_in_any_order.clone()).await,
        Some(slow_old.id),
        "oldest first"
    );
    assert_eq!(
        claim(all_lanes_in_any_order.clone()).await,
        Some(slow_new.id)
    );
    assert_eq!(claim(all_lanes_in_any_order).await, None);
    let slow = store.get_job(slow_new.id).await.unwrap().unwrap();
    assert_eq!(
        payload_attempt_id(&slow.payload),
        Some(AttemptId(3)),
        "the payload round-trips"
    );
    assert_eq!(slow.payload, slow_new.payload);
}

// ---------------------------------------------------------------------------
// Jobs: fencing and outcomes
// ---------------------------------------------------------------------------

/// Progress, completion and failure under a lease that is not the job's
/// current one change nothing and report `StaleLease`.
pub async fn stale_leases_change_nothing(store: Arc<dyn Store>) {
    let (leased, grader_id) = leased_job(&store, attempt_job(Lane::Fast, AttemptId(1))).await;
    let lease_id = lease_id_of(&leased);
    let now = now_ms();

    let assert_stale = |result: Result<(), StoreError>, what: &str| match result {
        Err(StoreError::StaleLease(message)) => {
            assert!(
                message.contains(&leased.id.to_string()),
                "{what}: the message names the job: {message}"
            )
        }
        other => panic!("{what}: expected StaleLease, got {other:?}"),
    };
    let forged = new_id();
    assert_stale(
        store
            .record_progress(
                held_lease(&leased, forged),
                case_result(TestCaseId(1), CaseStatus::Passed),
            )
            .await
            .map(drop),
        "progress",
    );
    assert_stale(
        store
            .complete_job(held_lease(&leased, forged), attempt_outcome(), now)
            .await
            .map(drop),
        "complete",
    );
    assert_stale(
        store
            .fail_job(held_lease(&leased, forged), "boom", Retry::Never, now)
            .await
            .map(drop),
        "fail",
    );
    assert_eq!(
        store.get_job(leased.id).await.unwrap(),
        Some(leased.clone()),
        "a forged lease changes nothing"
    );

    // The lease id of another grader's job: refused as not its own.
    let thief = HeldLease {
        grader_id: new_id(),
        ..held_lease(&leased, lease_id)
    };
    let assert_not_owner = |result: Result<(), StoreError>, what: &str| match result {
        Err(StoreError::StaleLease(message)) => {
            assert!(message.contains("not this grader's"), "{what}: {message}")
        }
        other => panic!("{what}: expected StaleLease, got {other:?}"),
    };
    assert_not_owner(
        store
            .record_progress(thief, case_result(TestCaseId(1), CaseStatus::Passed))
            .await
            .map(drop),
        "progress",
    );
    assert_not_owner(
        store
            .complete_job(thief, attempt_outcome(), now)
            .await
            .map(drop),
        "complete",
    );
    assert_not_owner(
        store
            .fail_job(thief, "boom", Retry::Never, now)
            .await
            .map(drop),
        "fail",
    );
    // An outcome of the other kind is refused before anything is written.
    let wrong_kind = JobOutcome::Init(InitOutcome {
        expected: Vec::new(),
        errors: vec!["x".into()],
        warnings: Vec::new(),
    });
    match store
        .complete_job(held_lease(&leased, lease_id), wrong_kind, now)
        .await
    {
        Err(StoreError::Invalid(message)) => assert!(
            message.contains("post an outcome of that kind"),
            "{message}"
        ),
        other => panic!("wrong kind: expected Invalid, got {other:?}"),
    }
    assert_eq!(
        store.get_job(leased.id).await.unwrap(),
        Some(leased.clone()),
        "another grader's report or the wrong kind changes nothing"
    );

    store
        .record_progress(
            held_lease(&leased, lease_id),
            case_result(TestCaseId(2), CaseStatus::Passed),
        )
        .await
        .unwrap();
    store
        .record_progress(
            held_lease(&leased, lease_id),
            case_result(TestCaseId(1), CaseStatus::Passed),
        )
        .await
        .unwrap();
    let progressed = store
        .record_progress(
            held_lease(&leased, lease_id),
            case_result(TestCaseId(2), CaseStatus::Failed),
        )
        .await
        .unwrap();
    assert_eq!(
        progressed.progress.len(),
        2,
        "a repeated case replaces the earlier one: {:?}",
        progressed.progress
    );
    let case_two = progressed
        .progress
        .iter()
        .find(|case| case.test_case_id == TestCaseId(2))
        .expect("case 2");
    assert_eq!(case_two.status, CaseStatus::Failed);
    assert_eq!(
        case_two,
        &case_result(TestCaseId(2), CaseStatus::Failed),
        "case results round-trip"
    );
    assert_eq!(
        store.get_job(leased.id).await.unwrap().unwrap().progress,
        progressed.progress
    );

    // The lease is taken back: the old lease id is stale from now on.
    store
        .release_grader_leases(grader_id, TryCount::Refunded, "grader stopped", now)
        .await
        .unwrap();
    assert_stale(
        store
            .record_progress(
                held_lease(&leased, lease_id),
                case_result(TestCaseId(1), CaseStatus::Passed),
            )
            .await
            .map(drop),
        "progress",
    );
    assert_stale(
        store
            .complete_job(held_lease(&leased, lease_id), attempt_outcome(), now)
            .await
            .map(drop),
        "complete",
    );
    assert_stale(
        store
            .fail_job(
                held_lease(&leased, lease_id),
                "boom",
                Retry::IfTriesLeft,
                now,
            )
            .await
            .map(drop),
        "fail",
    );
    let queued = store.get_job(leased.id).await.unwrap().unwrap();
    assert_eq!(
        (queued.state, queued.outcome.clone()),
        (JobState::Queued, None)
    );

    let other_grader = new_id();
    let again = store
        .claim_job(other_grader, &[Lane::Fast], now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, leased.id);
    assert!(
        again.progress.is_empty(),
        "a new lease starts without progress"
    );
    let new_lease = lease_id_of(&again);
    assert_ne!(new_lease, lease_id);
    assert_stale(
        store
            .complete_job(held_lease(&leased, lease_id), attempt_outcome(), now)
            .await
            .map(drop),
        "complete",
    );
    assert_eq!(store.get_job(leased.id).await.unwrap(), Some(again.clone()));

    let unknown_job = new_id();
    let stale = store
        .stale_leases(
            other_grader,
            &[
                (again.id, new_lease),
                (again.id, lease_id),
                (unknown_job, new_id()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        stale,
        vec![again.id, unknown_job],
        "only the current lease is still held"
    );
    assert_eq!(
        store
            .stale_leases(grader_id, &[(again.id, new_lease)])
            .await
            .unwrap(),
        vec![again.id],
        "a lease held by another grader is stale for this one"
    );
    assert!(store
        .stale_leases(other_grader, &[])
        .await
        .unwrap()
        .is_empty());
}

/// A completion is recorded once; a repeat by the same lease is
/// `AlreadyRecorded`; the result stays unapplied until marked.
pub async fn completions_are_recorded_once_and_applied(store: Arc<dyn Store>) {
    let (leased, _) = leased_job(&store, attempt_job(Lane::Fast, AttemptId(1))).await;
    let lease_id = lease_id_of(&leased);
    let now = now_ms();
    let outcome = attempt_outcome();
    let recorded = match store
        .complete_job(held_lease(&leased, lease_id), outcome.clone(), now)
        .await
        .unwrap()
    {
        Completion::Recorded(job) => job,
        other => panic!("expected Recorded, got {other:?}"),
    };
    assert_eq!(recorded.state, JobState::Done);
    assert_eq!(recorded.outcome, Some(outcome.clone()));
    assert!(!recorded.applied);
    assert_eq!(recorded.finished_at.map(ms), Some(ms(now)));
    assert_eq!(
        store.get_job(leased.id).await.unwrap(),
        Some(recorded.clone())
    );

    let other_outcome = JobOutcome::Attempt(AttemptOutcome {
        cases: vec![],
        error: Some("late".into()),
    });
    match store
        .complete_job(
            held_lease(&leased, lease_id),
            other_outcome,
            now + Duration::seconds(1),
        )
        .await
        .unwrap()
    {
        Completion::AlreadyRecorded(job) => assert_eq!(job, recorded, "a repeat changes nothing"),
        other => panic!("expected AlreadyRecorded, got {other:?}"),
    }
    let forged = store
        .complete_job(held_lease(&leased, new_id()), outcome.clone(), now)
        .await;
    assert!(
        matches!(forged, Err(StoreError::StaleLease(_))),
        "{forged:?}"
    );
    let late_failure = store
        .fail_job(
            held_lease(&leased, lease_id),
            "boom",
            Retry::IfTriesLeft,
            now,
        )
        .await;
    assert!(
        matches!(late_failure, Err(StoreError::StaleLease(_))),
        "{late_failure:?}"
    );
    let late_progress = store
        .record_progress(
            held_lease(&leased, lease_id),
            case_result(TestCaseId(1), CaseStatus::Passed),
        )
        .await;
    assert!(
        matches!(late_progress, Err(StoreError::StaleLease(_))),
        "{late_progress:?}"
    );
    assert_eq!(
        store.get_job(leased.id).await.unwrap(),
        Some(recorded.clone())
    );

    // Init outcomes round-trip too.
    let (init, _) = leased_job(&store, init_job(ChallengeId(7))).await;
    let init_outcome = JobOutcome::Init(InitOutcome {
        expected: vec![sqlarena_common::ExpectedCase {
            test_case_id: TestCaseId(1),
            result: result_of(1),
            reference_ms: Some(0.25),
            audit: None,
        }],
        errors: vec![],
        warnings: vec!["ties".into()],
    });
    let Completion::Recorded(init_done) = store
        .complete_job(
            held_lease(&init, lease_id_of(&init)),
            init_outcome.clone(),
            now,
        )
        .await
        .unwrap()
    else {
        panic!("the first completion is recorded");
    };
    assert_eq!(init_done.outcome, Some(init_outcome));

    let queued = store
        .enqueue_job(attempt_job(Lane::Slow, AttemptId(2)))
        .await
        .unwrap();
    assert!(!queued.applied);
    let unapplied: Vec<_> = store
        .list_unapplied_jobs()
        .await
        .unwrap()
        .iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(
        unapplied,
        vec![leased.id, init.id],
        "finished jobs only, oldest first"
    );
    store.mark_job_applied(leased.id).await.unwrap();
    assert!(store.get_job(leased.id).await.unwrap().unwrap().applied);
    let unapplied: Vec<_> = store
        .list_unapplied_jobs()
        .await
        .unwrap()
        .iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(unapplied, vec![init.id]);
}

/// An attempt job's completion applies its result in the same step: the
/// attempt takes the update, the job is DONE, applied and pruned; a repeat
/// or a stale lease changes neither.
pub async fn attempt_completions_apply_their_result(store: Arc<dyn Store>) {
    let student = create_user(&store, Role::Student).await;
    let prof = create_user(&store, Role::Professor).await;
    let challenge = store
        .create_challenge(new_challenge(prof.id, ChallengeType::FE, 2))
        .await
        .unwrap();
    let attempt = store
        .create_attempt(NewAttempt {
            user_id: student.id,
            challenge_id: challenge.id,
            challenge_version: 1,
            query: "select a from t".into(),
        })
        .await
        .unwrap();
    let (leased, _) = leased_job(&store, attempt_job(Lane::Fast, attempt.id)).await;
    let lease_id = lease_id_of(&leased);
    let now = now_ms();
    let JobOutcome::Attempt(graded) = attempt_outcome() else {
        unreachable!("an attempt outcome")
    };
    let update = AttemptUpdate {
        status: Some(AttemptStatus::Failed),
        cases: Some(graded.cases.clone()),
        finished_at: Some(now),
        ..AttemptUpdate::default()
    };
    let forged = store
        .complete_attempt_job(
            held_lease(&leased, new_id()),
            attempt_outcome(),
            update.clone(),
            now,
        )
        .await;
    assert!(
        matches!(forged, Err(StoreError::StaleLease(_))),
        "{forged:?}"
    );
    assert_eq!(
        store.get_attempt(attempt.id).await.unwrap(),
        Some(attempt.clone()),
        "a refused completion leaves the attempt alone"
    );

    let Completion::Recorded(done) = store
        .complete_attempt_job(
            held_lease(&leased, lease_id),
            attempt_outcome(),
            update.clone(),
            now,
        )
        .await
        .unwrap()
    else {
        panic!("the first completion is recorded");
    };
    assert_eq!((done.state, done.applied), (JobState::Done, true));
    assert_eq!(done.payload, pruned_payload(&leased.payload));
    assert_eq!(store.get_job(leased.id).await.unwrap(), Some(done.clone()));
    let graded_attempt = store.get_attempt(attempt.id).await.unwrap().unwrap();
    assert_eq!(graded_attempt.status, AttemptStatus::Failed);
    assert_eq!(graded_attempt.cases, graded.cases);
    assert_eq!(graded_attempt.finished_at.map(ms), Some(ms(now)));
    assert!(
        !store
            .list_unapplied_jobs()
            .await
            .unwrap()
            .iter()
            .any(|job| job.id == leased.id),
        "nothing is left to apply"
    );

    let repeat = store
        .complete_attempt_job(
            held_lease(&leased, lease_id),
            attempt_outcome(),
            AttemptUpdate {
                status: Some(AttemptStatus::Passed),
                ..AttemptUpdate::default()
            },
            now,
        )
        .await
        .unwrap();
    assert!(
        matches!(&repeat, Completion::AlreadyRecorded(job) if *job == done),
        "{repeat:?}"
    );
    assert_eq!(
        store.get_attempt(attempt.id).await.unwrap(),
        Some(graded_attempt),
        "a repeat changes nothing"
    );

    // The attempt may be gone meanwhile: the job still finishes, applied.
    let (orphan, _) = leased_job(&store, attempt_job(Lane::Fast, AttemptId(i64::MAX))).await;
    let Completion::Recorded(orphan_done) = store
        .complete_attempt_job(
            held_lease(&orphan, lease_id_of(&orphan)),
            attempt_outcome(),
            update,
            now,
        )
        .await
        .unwrap()
    else {
        panic!("the first completion is recorded");
    };
    assert_eq!(
        (orphan_done.state, orphan_done.applied),
        (JobState::Done, true)
    );
}

/// Leases past their deadline are taken back: requeued with the try
/// counted, then FAILED with a reason once out of tries.
pub async fn expired_leases_are_requeued_then_failed(store: Arc<dyn Store>) {
    let mut short = attempt_job(Lane::Fast, AttemptId(1));
    short.max_tries = 2;
    short.timeout_ms = 1_000;
    let job = store.enqueue_job(short).await.unwrap();
    let long = store
        .enqueue_job(attempt_job(Lane::Slow, AttemptId(2)))
        .await
        .unwrap();
    let grader_id = new_id();
    let start = now_ms();
    let first = store
        .claim_job(grader_id, &[Lane::Fast], start)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.id, job.id);
    assert_eq!(
        first.lease.map(|lease| ms(lease.expires_at)),
        Some(ms(start) + 1_000)
    );
    let held = store
        .claim_job(grader_id, &[Lane::Slow], start)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.id, long.id);

    assert!(store
        .requeue_expired(start + Duration::milliseconds(500))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.get_job(job.id).await.unwrap().unwrap().state,
        JobState::Leased
    );

    let outcomes = store
        .requeue_expired(start + Duration::seconds(2))
        .await
        .unwrap();
    let requeued = match outcomes.as_slice() {
        [FailOutcome::Requeued(requeued)] => requeued.clone(),
        other => panic!("expected one requeued job, got {other:?}"),
    };
    assert_eq!(requeued.id, job.id);
    assert_eq!(
        (requeued.state, requeued.tries, requeued.lease),
        (JobState::Queued, 1, None)
    );
    assert_eq!(store.get_job(job.id).await.unwrap(), Some(requeued));
    let stale = store
        .complete_job(
            held_lease(&job, lease_id_of(&first)),
            attempt_outcome(),
            start,
        )
        .await;
    assert!(matches!(stale, Err(StoreError::StaleLease(_))), "{stale:?}");

    let later = start + Duration::seconds(3);
    let second = store
        .claim_job(grader_id, &[Lane::Fast], later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((second.id, second.tries), (job.id, 2));
    let end = later + Duration::seconds(2);
    let outcomes = store.requeue_expired(end).await.unwrap();
    let failed = match outcomes.as_slice() {
        [FailOutcome::Failed(failed)] => failed.clone(),
        other => panic!("expected one failed job, got {other:?}"),
    };
    assert_eq!(
        (failed.id, failed.state, failed.tries),
        (job.id, JobState::Failed, 2)
    );
    let reason = failed.error.clone().unwrap_or_default();
    assert!(
        reason.contains("gave up after 2 tries") && reason.contains("deadline"),
        "reason: {reason}"
    );
    assert_eq!(failed.finished_at.map(ms), Some(ms(end)));
    assert!(!failed.applied);
    assert_eq!(store.get_job(job.id).await.unwrap(), Some(failed));
    let unapplied: Vec<_> = store
        .list_unapplied_jobs()
        .await
        .unwrap()
        .iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(unapplied, vec![job.id]);

    assert_eq!(
        store.get_job(long.id).await.unwrap(),
        Some(held),
        "an unexpired lease is left alone"
    );
    assert!(
        store.requeue_expired(end).await.unwrap().is_empty(),
        "nothing is taken back twice"
    );
}

/// A grader's leases are released: cleanly (the try does not count) or
/// because it died (the try counts, and a job out of tries FAILS).
pub async fn grader_leases_are_released(store: Arc<dyn Store>) {
    let roomy = store
        .enqueue_job(attempt_job(Lane::Fast, AttemptId(1)))
        .await
        .unwrap();
    let mut last_try = attempt_job(Lane::Fast, AttemptId(2));
    last_try.max_tries = 1;
    let last_try = store.enqueue_job(last_try).await.unwrap();
    let elsewhere = store
        .enqueue_job(attempt_job(Lane::Fast, AttemptId(3)))
        .await
        .unwrap();
    let (dying, healthy) = (new_id(), new_id());
    let now = now_ms();
    for (grader_id, expected) in [
        (dying, roomy.id),
        (dying, last_try.id),
        (healthy, elsewhere.id),
    ] {
        let job = store
            .claim_job(grader_id, &[Lane::Fast], now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job.id, expected);
    }
    let held_elsewhere = store.get_job(elsewhere.id).await.unwrap().unwrap();

    let released = store
        .release_grader_leases(dying, TryCount::Refunded, "grader g1 shut down", now)
        .await
        .unwrap();
    assert_eq!(released.len(), 2);
    for outcome in &released {
        let FailOutcome::Requeued(job) = outcome else {
            panic!("a clean release requeues: {outcome:?}")
        };
        assert_eq!(
            (job.state, job.tries, job.lease),
            (JobState::Queued, 0, None),
            "the try does not count"
        );
    }
    assert_eq!(
        store.get_job(elsewhere.id).await.unwrap(),
        Some(held_elsewhere.clone())
    );

    for expected in [roomy.id, last_try.id] {
        let job = store
            .claim_job(dying, &[Lane::Fast], now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((job.id, job.tries), (expected, 1));
    }
    let released = store
        .release_grader_leases(
            dying,
            TryCount::Counts,
            "grader g1 stopped heartbeating",
            now,
        )
        .await
        .unwrap();
    assert_eq!(released.len(), 2);
    for outcome in released {
        match outcome {
            FailOutcome::Requeued(job) => {
                assert_eq!(
                    (job.id, job.state, job.tries),
                    (roomy.id, JobState::Queued, 1),
                    "the try counts"
                )
            }
            FailOutcome::Failed(job) => {
                assert_eq!((job.id, job.state), (last_try.id, JobState::Failed));
                let reason = job.error.unwrap_or_default();
                assert!(
                    reason.contains("gave up after 1")
                        && reason.contains("grader g1 stopped heartbeating"),
                    "reason: {reason}"
                );
            }
        }
    }
    assert!(store
        .release_grader_leases(new_id(), TryCount::Counts, "unknown", now)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.get_job(elsewhere.id).await.unwrap(),
        Some(held_elsewhere)
    );
}

/// A grader's failure report requeues a retryable job with tries left and
/// FAILS it otherwise.
pub async fn failures_are_retried_or_final(store: Arc<dyn Store>) {
    let mut twice = attempt_job(Lane::Fast, AttemptId(1));
    twice.max_tries = 2;
    let (leased, grader_id) = leased_job(&store, twice).await;
    let now = now_ms();
    let FailOutcome::Requeued(requeued) = store
        .fail_job(
            held_lease(&leased, lease_id_of(&leased)),
            "connection refused",
            Retry::IfTriesLeft,
            now,
        )
        .await
        .unwrap()
    else {
        panic!("a retryable failure with tries left is requeued");
    };
    assert_eq!(
        (requeued.state, requeued.tries, requeued.lease),
        (JobState::Queued, 1, None)
    );
    assert!(requeued
        .error
        .clone()
        .unwrap_or_default()
        .contains("connection refused"));

    let again = store
        .claim_job(grader_id, &[Lane::Fast], now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.tries, 2);
    let FailOutcome::Failed(failed) = store
        .fail_job(
            held_lease(&again, lease_id_of(&again)),
            "connection refused",
            Retry::IfTriesLeft,
            now,
        )
        .await
        .unwrap()
    else {
        panic!("no tries left: the job fails");
    };
    assert_eq!(failed.state, JobState::Failed);
    assert!(failed
        .error
        .clone()
        .unwrap_or_default()
        .contains("connection refused"));
    assert_eq!(failed.finished_at.map(ms), Some(ms(now)));

    let (leased, _) = leased_job(&store, attempt_job(Lane::Slow, AttemptId(2))).await;
    let FailOutcome::Failed(terminal) = store
        .fail_job(
            held_lease(&leased, lease_id_of(&leased)),
            "syntax error in init SQL",
            Retry::Never,
            now,
        )
        .await
        .unwrap()
    else {
        panic!("a failure that a retry cannot fix is final");
    };
    assert_eq!((terminal.state, terminal.tries), (JobState::Failed, 1));
    assert!(terminal
        .error
        .clone()
        .unwrap_or_default()
        .contains("syntax error in init SQL"));
    let repeat = store
        .fail_job(
            held_lease(&leased, lease_id_of(&leased)),
            "again",
            Retry::Never,
            now,
        )
        .await;
    assert!(
        matches!(repeat, Err(StoreError::StaleLease(_))),
        "{repeat:?}"
    );
    let unapplied: BTreeSet<_> = store
        .list_unapplied_jobs()
        .await
        .unwrap()
        .iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(unapplied, BTreeSet::from([failed.id, terminal.id]));
}

/// Queued jobs are cancelled at once; leased ones are cancelled with
/// `cancel_requested`, which makes their lease stale. Failed and cancelled
/// jobs can be retried from zero tries.
pub async fn jobs_are_cancelled_and_retried(store: Arc<dyn Store>) {
    let (leased, grader_id) = leased_job(&store, attempt_job(Lane::Fast, AttemptId(1))).await;
    let lease_id = lease_id_of(&leased);
    let queued = store
        .enqueue_job(attempt_job(Lane::Fast, AttemptId(2)))
        .await
        .unwrap();
    let now = now_ms();

    let cancelled = store
        .cancel_job(queued.id, "cancelled by its owner", now)
        .await
        .unwrap()
        .expect("cancelled");
    assert_eq!(
        (cancelled.state, cancelled.cancel_requested),
        (JobState::Cancelled, false)
    );
    assert!(cancelled
        .error
        .clone()
        .unwrap_or_default()
        .contains("cancelled by its owner"));
    assert_eq!(store.get_job(queued.id).await.unwrap(), Some(cancelled));

    let stopping = store
        .cancel_job(leased.id, "cancelled by an admin", now)
        .await
        .unwrap()
        .expect("cancelled");
    assert_eq!(
        (stopping.state, stopping.cancel_requested),
        (JobState::Cancelled, true)
    );
    assert_eq!(
        store
            .stale_leases(grader_id, &[(leased.id, lease_id)])
            .await
            .unwrap(),
        vec![leased.id]
    );
    let late = store
        .complete_job(held_lease(&leased, lease_id), attempt_outcome(), now)
        .await;
    assert!(matches!(late, Err(StoreError::StaleLease(_))), "{late:?}");
    let late = store
        .record_progress(
            held_lease(&leased, lease_id),
            case_result(TestCaseId(1), CaseStatus::Passed),
        )
        .await;
    assert!(matches!(late, Err(StoreError::StaleLease(_))), "{late:?}");
    assert_eq!(
        store.cancel_job(leased.id, "again", now).await.unwrap(),
        None,
        "already finished"
    );
    assert_eq!(
        store.claim_job(grader_id, &Lane::ALL, now).await.unwrap(),
        None,
        "cancelled jobs are not claimed"
    );
    let unapplied: BTreeSet<_> = store
        .list_unapplied_jobs()
        .await
        .unwrap()
        .iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(
        unapplied,
        BTreeSet::from([leased.id, queued.id]),
        "cancellations are applied like outcomes"
    );

    let retried = store
        .retry_job(queued.id)
        .await
        .unwrap()
        .expect("a cancelled job can be retried");
    assert_eq!(
        (retried.state, retried.tries, retried.lease),
        (JobState::Queued, 0, None)
    );
    assert!(!retried.cancel_requested);
    assert_eq!(
        store.retry_job(queued.id).await.unwrap(),
        None,
        "a queued job is not retried"
    );
    let retried = store.retry_job(leased.id).await.unwrap().expect("retried");
    assert_eq!(
        (retried.state, retried.tries, retried.cancel_requested),
        (JobState::Queued, 0, false)
    );

    let first = store
        .claim_job(grader_id, &[Lane::Fast], now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.id, first.tries),
        (leased.id, 1),
        "a retried job keeps its place by age"
    );
    assert_eq!(
        store.retry_job(first.id).await.unwrap(),
        None,
        "a leased job is not retried"
    );
    let Completion::Recorded(done) = store
        .complete_job(
            held_lease(&first, lease_id_of(&first)),
            attempt_outcome(),
            now,
        )
        .await
        .unwrap()
    else {
        panic!("recorded");
    };
    assert_eq!(
        store.retry_job(done.id).await.unwrap(),
        None,
        "a done job is not retried"
    );
    assert_eq!(
        store.cancel_job(done.id, "too late", now).await.unwrap(),
        None,
        "a done job is not cancelled"
    );
    assert_eq!(store.get_job(done.id).await.unwrap(), Some(done));
}

/// Jobs are listed oldest first, by state, by lane, or both, up to a limit.
pub async fn jobs_are_listed_by_state_and_lane(store: Arc<dyn Store>) {
    let fast_one = store
        .enqueue_job(attempt_job(Lane::Fast, AttemptId(1)))
        .await
        .unwrap();
    let slow_one = store
        .enqueue_job(attempt_job(Lane::Slow, AttemptId(2)))
        .await
        .unwrap();
    let init = store.enqueue_job(init_job(ChallengeId(3))).await.unwrap();
    let fast_two = store
        .enqueue_job(attempt_job(Lane::Fast, AttemptId(4)))
        .await
        .unwrap();
    let slow_two = store
        .enqueue_job(attempt_job(Lane::Slow, AttemptId(5)))
        .await
        .unwrap();
    let claimed = store
        .claim_job(new_id(), &[Lane::Fast], now_ms())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, fast_one.id);

    let list = |state: Option<JobState>, lane: Option<Lane>, limit: u32| {
        let store = store.clone();
        async move {
            store
                .list_jobs(JobFilter {
                    state,
                    lane,
                    limit,
                    after: None,
                })
                .await
                .unwrap()
                .into_iter()
                .map(|job| job.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(None, None, 0).await,
        vec![fast_one.id, slow_one.id, init.id, fast_two.id, slow_two.id]
    );
    assert_eq!(
        list(Some(JobState::Queued), None, 0).await,
        vec![slow_one.id, init.id, fast_two.id, slow_two.id]
    );
    assert_eq!(
        list(None, Some(Lane::Fast), 0).await,
        vec![fast_one.id, fast_two.id]
    );
    assert_eq!(
        list(Some(JobState::Queued), Some(Lane::Slow), 0).await,
        vec![slow_one.id, slow_two.id]
    );
    assert_eq!(
        list(Some(JobState::Leased), None, 0).await,
        vec![fast_one.id]
    );
    assert_eq!(list(None, None, 2).await, vec![fast_one.id, slow_one.id]);
    assert_eq!(
        list(Some(JobState::Done), None, 0).await,
        Vec::<JobId>::new()
    );
    let listed = store
        .list_jobs(JobFilter {
            lane: Some(Lane::Init),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed, vec![init]);
}

/// Lane statistics list every lane with its queue depth, leases held and
/// oldest queued job.
pub async fn lane_stats_cover_every_lane(store: Arc<dyn Store>) {
    let stats = store.lane_stats().await.unwrap();
    assert_eq!(
        stats
            .iter()
            .map(|stats| stats.lane)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(Lane::ALL)
    );
    for lane_stats in &stats {
        assert_eq!(
            (
                lane_stats.queued,
                lane_stats.leased,
                lane_stats.oldest_queued_at
            ),
            (0, 0, None)
        );
    }

    let oldest_fast = store
        .enqueue_job(attempt_job(Lane::Fast, AttemptId(1)))
        .await
        .unwrap();
    store
        .enqueue_job(attempt_job(Lane::Fast, AttemptId(2)))
        .await
        .unwrap();
    store.enqueue_job(init_job(ChallengeId(3))).await.unwrap();
    store
        .claim_job(new_id(), &[Lane::Init], now_ms())
        .await
        .unwrap()
        .expect("the init job");
    let stats = store.lane_stats().await.unwrap();
    assert_eq!(stats.len(), 3, "{stats:?}");
    let of = |lane: Lane| {
        stats
            .iter()
            .find(|stats| stats.lane == lane)
            .expect("every lane is listed")
            .clone()
    };
    let fast = of(Lane::Fast);
    assert_eq!((fast.queued, fast.leased), (2, 0));
    assert_eq!(
        fast.oldest_queued_at.map(ms),
        Some(ms(oldest_fast.created_at))
    );
    let init = of(Lane::Init);
    assert_eq!(
        (init.queued, init.leased, init.oldest_queued_at),
        (0, 1, None)
    );
    let slow = of(Lane::Slow);
    assert_eq!(
        (slow.queued, slow.leased, slow.oldest_queued_at),
        (0, 0, None)
    );
}

// ---------------------------------------------------------------------------
// Graders and cluster tokens
// ---------------------------------------------------------------------------

fn grader(
    registered_at: DateTime<Utc>,
    last_heartbeat: DateTime<Utc>,
    state: GraderState,
) -> Grader {
    Grader {
        id: new_id(),
        name: unique("grader"),
        hostname: "box-1".into(),
        version: "0.1.0".into(),
        lanes: vec![Lane::Init, Lane::Fast],
        slots: 2,
        state,
        token_hash: unique("token"),
        last_heartbeat,
        registered_at,
        jobs_done: 0,
        cluster_token_id: Some(new_id()),
    }
}

/// Graders are stored, found by id and token, heartbeat until declared
/// dead, and DEAD is final.
pub async fn graders_register_heartbeat_and_die(store: Arc<dyn Store>) {
    let now = now_ms();
    // Made in the order they registered: ids are v7, and lists go by id.
    let draining = grader(
        now - Duration::seconds(120),
        now - Duration::seconds(120),
        GraderState::Draining,
    );
    let first = grader(
        now - Duration::seconds(60),
        now - Duration::seconds(60),
        GraderState::Alive,
    );
    let second = grader(now - Duration::seconds(30), now, GraderState::Alive);
    for grader in [&first, &second, &draining] {
        store.create_grader(grader.clone()).await.unwrap();
    }
    assert_eq!(
        store.get_grader(first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.get_grader(new_id()).await.unwrap(), None);
    assert_eq!(
        store.get_grader_by_token(&second.token_hash).await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(store.get_grader_by_token("unknown").await.unwrap(), None);
    let ids: Vec<_> = store
        .list_graders(Page::all())
        .await
        .unwrap()
        .iter()
        .map(|grader| grader.id)
        .collect();
    assert_eq!(ids, vec![second.id, first.id, draining.id], "newest first");
    let mut same_token = grader(now, now, GraderState::Alive);
    same_token.token_hash = first.token_hash.clone();
    let duplicate = store.create_grader(same_token).await;
    assert!(
        matches!(duplicate, Err(StoreError::Conflict(_))),
        "{duplicate:?}"
    );

    let touched = store
        .touch_grader(first.id, now)
        .await
        .unwrap()
        .expect("alive");
    assert_eq!(ms(touched.last_heartbeat), ms(now));
    assert!(store
        .set_grader_state(second.id, GraderState::Draining)
        .await
        .unwrap());
    assert_eq!(
        store.get_grader(second.id).await.unwrap().unwrap().state,
        GraderState::Draining
    );

    let dead = store
        .mark_dead_graders(now - Duration::seconds(10))
        .await
        .unwrap();
    assert_eq!(
        dead.iter().map(|grader| grader.id).collect::<Vec<_>>(),
        vec![draining.id]
    );
    assert_eq!(dead[0].state, GraderState::Dead);
    assert_eq!(
        store.touch_grader(draining.id, now).await.unwrap(),
        None,
        "a dead grader must register again"
    );
    assert!(
        !store
            .set_grader_state(draining.id, GraderState::Alive)
            .await
            .unwrap(),
        "DEAD is final"
    );
    assert_eq!(
        store.get_grader(draining.id).await.unwrap().unwrap().state,
        GraderState::Dead
    );
    assert_eq!(store.touch_grader(new_id(), now).await.unwrap(), None);

    // A recorded completion counts in the lease holder's jobs_done, once:
    // the repeat of the same completion counts nothing.
    for attempt_id in [1, 2] {
        store
            .enqueue_job(attempt_job(Lane::Fast, AttemptId(attempt_id)))
            .await
            .unwrap();
        let job = store
            .claim_job(first.id, &[Lane::Fast], now)
            .await
            .unwrap()
            .expect("a queued job");
        let lease_id = lease_id_of(&job);
        for _ in 0..2 {
            store
                .complete_job(held_lease(&job, lease_id), attempt_outcome(), now)
                .await
                .unwrap();
        }
    }
    assert_eq!(
        store.get_grader(first.id).await.unwrap().unwrap().jobs_done,
        2
    );

    let dead: BTreeSet<_> = store
        .mark_dead_graders(now + Duration::seconds(10))
        .await
        .unwrap()
        .iter()
        .map(|grader| grader.id)
        .collect();
    assert_eq!(
        dead,
        BTreeSet::from([first.id, second.id]),
        "draining graders die too"
    );
    assert!(store
        .mark_dead_graders(now + Duration::seconds(10))
        .await
        .unwrap()
        .is_empty());
}

/// DEAD graders silent since before the cutoff are deleted; live ones and
/// recently dead ones stay.
pub async fn dead_graders_are_forgotten_after_a_cutoff(store: Arc<dyn Store>) {
    let now = now_ms();
    let long_dead = grader(
        now - Duration::hours(3),
        now - Duration::hours(2),
        GraderState::Dead,
    );
    let just_dead = grader(
        now - Duration::hours(3),
        now - Duration::minutes(1),
        GraderState::Dead,
    );
    let silent_alive = grader(
        now - Duration::hours(3),
        now - Duration::hours(2),
        GraderState::Alive,
    );
    for grader in [&long_dead, &just_dead, &silent_alive] {
        store.create_grader(grader.clone()).await.unwrap();
    }
    assert_eq!(
        store
            .delete_dead_graders(now - Duration::hours(1))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.get_grader(long_dead.id).await.unwrap(), None);
    assert_eq!(
        store.get_grader(just_dead.id).await.unwrap(),
        Some(just_dead.clone())
    );
    assert_eq!(
        store.get_grader(silent_alive.id).await.unwrap(),
        Some(silent_alive),
        "only DEAD graders are forgotten"
    );
    assert_eq!(
        store
            .delete_dead_graders(now - Duration::hours(1))
            .await
            .unwrap(),
        0
    );
}

/// A grader's leases are the jobs LEASED to it, oldest first.
pub async fn grader_leases_are_listed(store: Arc<dyn Store>) {
    let now = now_ms();
    let holder = grader(now, now, GraderState::Alive);
    let other = grader(now, now, GraderState::Alive);
    for attempt_id in 1..=4 {
        store
            .enqueue_job(attempt_job(Lane::Fast, AttemptId(attempt_id)))
            .await
            .unwrap();
    }
    let first = store
        .claim_job(holder.id, &[Lane::Fast], now)
        .await
        .unwrap()
        .unwrap();
    let second = store
        .claim_job(holder.id, &[Lane::Fast], now)
        .await
        .unwrap()
        .unwrap();
    store
        .claim_job(other.id, &[Lane::Fast], now)
        .await
        .unwrap()
        .unwrap();
    let done = store
        .claim_job(holder.id, &[Lane::Fast], now)
        .await
        .unwrap()
        .unwrap();
    store
        .complete_job(
            held_lease(&done, lease_id_of(&done)),
            attempt_outcome(),
            now,
        )
        .await
        .unwrap();
    let leases: Vec<_> = store
        .list_grader_leases(holder.id)
        .await
        .unwrap()
        .iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(leases, vec![first.id, second.id]);
    assert!(store.list_grader_leases(new_id()).await.unwrap().is_empty());
}

/// Cluster tokens are stored by hash, listed newest first and revoked.
pub async fn cluster_tokens_are_created_and_revoked(store: Arc<dyn Store>) {
    let admin = create_user(&store, Role::Admin).await;
    let now = now_ms();
    let older = ClusterToken {
        id: new_id(),
        label: "rack 1".into(),
        token_hash: unique("hash"),
        created_by: Some(admin.id),
        created_at: now - Duration::seconds(10),
        revoked: false,
    };
    let newer = ClusterToken {
        id: new_id(),
        label: "from the command line".into(),
        token_hash: unique("hash"),
        created_by: None,
        created_at: now,
        revoked: false,
    };
    store.create_cluster_token(older.clone()).await.unwrap();
    store.create_cluster_token(newer.clone()).await.unwrap();
    assert_eq!(
        store.list_cluster_tokens().await.unwrap(),
        vec![newer.clone(), older.clone()]
    );
    assert_eq!(
        store
            .get_cluster_token_by_hash(&older.token_hash)
            .await
            .unwrap(),
        Some(older.clone())
    );
    assert_eq!(
        store.get_cluster_token_by_hash("unknown").await.unwrap(),
        None
    );

    let mut duplicate = newer.clone();
    duplicate.id = new_id();
    let result = store.create_cluster_token(duplicate).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");

    assert_eq!(
        store.get_cluster_token(newer.id).await.unwrap(),
        Some(newer.clone())
    );
    assert_eq!(store.get_cluster_token(new_id()).await.unwrap(), None);
    assert!(store.revoke_cluster_token(older.id).await.unwrap());
    let revoked = store
        .get_cluster_token_by_hash(&older.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert!(revoked.revoked);
    assert!(
        !store
            .get_cluster_token_by_hash(&newer.token_hash)
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    assert!(!store.revoke_cluster_token(new_id()).await.unwrap());
    assert_eq!(store.list_cluster_tokens().await.unwrap().len(), 2);
}

/// Walks a list page by page (`page_size` at a time) with `list`, the
/// next page starting after the key of the last entry of the previous one.
async fn walk<K: Copy, T, F, Fut>(page_size: u32, key: impl Fn(&T) -> K, list: F) -> Vec<T>
where
    F: Fn(Page<K>) -> Fut,
    Fut: std::future::Future<Output = Vec<T>>,
{
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = list(Page {
            after,
            limit: page_size,
        })
        .await;
        assert!(
            page.len() <= page_size as usize,
            "a page is at most its limit"
        );
        let done = page.len() < page_size as usize;
        after = page.last().map(&key).or(after);
        all.extend(page);
        if done {
            return all;
        }
    }
}

/// Every list pages by its key: challenges (all and by creator), a user's
/// attempts and graders newest first, jobs oldest first with their
/// filters; walking the pages gives the whole list once, in order.
pub async fn lists_are_paged_by_key(store: Arc<dyn Store>) {
    let alice = create_user(&store, Role::Professor).await;
    let bob = create_user(&store, Role::Professor).await;
    let mut challenges = Vec::new();
    for index in 0..7 {
        let creator = if index % 3 == 0 { bob.id } else { alice.id };
        let challenge = store
            .create_challenge(new_challenge(creator, ChallengeType::FE, 1))
            .await
            .unwrap();
        challenges.push((challenge.id, creator));
    }
    let newest_first = |creator: Option<UserId>| -> Vec<ChallengeId> {
        challenges
            .iter()
            .rev()
            .filter(|(_, by)| creator.is_none_or(|creator| creator == *by))
            .map(|(id, _)| *id)
            .collect()
    };
    for creator in [None, Some(alice.id), Some(bob.id)] {
        let walked = walk(
            2,
            |c: &super::Challenge| c.id,
            |page| {
                let store = store.clone();
                async move { store.list_challenges(creator, page).await.unwrap() }
            },
        )
        .await;
        let ids: Vec<ChallengeId> = walked.iter().map(|c| c.id).collect();
        assert_eq!(ids, newest_first(creator), "challenges by {creator:?}");
    }

    let student = create_user(&store, Role::Student).await;
    let mut attempts = Vec::new();
    for _ in 0..5 {
        let attempt = store
            .create_attempt(NewAttempt {
                user_id: student.id,
                challenge_id: challenges[0].0,
                challenge_version: 1,
                query: "select a from t".into(),
            })
            .await
            .unwrap();
        attempts.push(attempt.id);
    }
    attempts.reverse();
    let walked = walk(
        2,
        |a: &super::Attempt| a.id,
        |page| {
            let store = store.clone();
            async move { store.list_user_attempts(student.id, page).await.unwrap() }
        },
    )
    .await;
    assert_eq!(walked.iter().map(|a| a.id).collect::<Vec<_>>(), attempts);

    let mut fast = Vec::new();
    for attempt_id in 0..5 {
        fast.push(
            store
                .enqueue_job(attempt_job(Lane::Fast, AttemptId(attempt_id)))
                .await
                .unwrap(),
        );
        store
            .enqueue_job(init_job(ChallengeId(attempt_id)))
            .await
            .unwrap();
    }
    let walked = walk(
        2,
        |job: &super::Job| job.seq,
        |page| {
            let store = store.clone();
            async move {
                store
                    .list_jobs(JobFilter {
                        state: Some(JobState::Queued),
                        lane: Some(Lane::Fast),
                        limit: page.limit,
                        after: page.after,
                    })
                    .await
                    .unwrap()
            }
        },
    )
    .await;
    assert_eq!(walked, fast, "jobs, oldest first, one lane");
    let every = walk(
        3,
        |job: &super::Job| job.seq,
        |page| {
            let store = store.clone();
            async move {
                store
                    .list_jobs(JobFilter {
                        limit: page.limit,
                        after: page.after,
                        ..JobFilter::default()
                    })
                    .await
                    .unwrap()
            }
        },
    )
    .await;
    assert_eq!(every.len(), 10);
    assert!(every.windows(2).all(|pair| pair[0].seq < pair[1].seq));

    let now = now_ms();
    let mut graders = Vec::new();
    for _ in 0..5 {
        let made = grader(now, now, GraderState::Alive);
        store.create_grader(made.clone()).await.unwrap();
        graders.push(made.id);
    }
    graders.reverse();
    let walked = walk(
        2,
        |g: &Grader| g.id,
        |page| {
            let store = store.clone();
            async move { store.list_graders(page).await.unwrap() }
        },
    )
    .await;
    assert_eq!(walked.iter().map(|g| g.id).collect::<Vec<_>>(), graders);
}

/// Finishes a fresh attempt of `user_id` on version `version` of
/// `challenge_id` with the given per-case ratios (all PASSED, or all
/// FAILED) and returns its id.
async fn finish_with_ratios(
    store: &Arc<dyn Store>,
    user_id: UserId,
    challenge: &super::Challenge,
    ratios: &[f64],
    passed: bool,
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
    let status = if passed {
        CaseStatus::Passed
    } else {
        CaseStatus::Failed
    };
    let cases = challenge
        .test_cases
        .iter()
        .zip(ratios)
        .map(|(case, ratio)| CaseResult {
            ratio: Some(*ratio),
            execution_ms: Some(ratio * 10.0),
            ..case_result(case.id, status)
        })
        .collect();
    let update = AttemptUpdate {
        status: Some(if passed {
            AttemptStatus::Passed
        } else {
            AttemptStatus::Failed
        }),
        cases: Some(cases),
        finished_at: Some(now_ms()),
        ..AttemptUpdate::default()
    };
    store
        .update_attempt(attempt.id, update.clone())
        .await
        .unwrap();
    // Applying the result again (crash recovery) changes nothing.
    store.update_attempt(attempt.id, update).await.unwrap();
    attempt.id
}

/// Finishing a PASSED attempt keeps its user's best row per challenge
/// version: FE lowest geometric mean first, SE highest, ties by earlier
/// submission; failed and incomplete attempts and other versions stay off.
pub async fn leaderboards_keep_each_users_best_per_version(store: Arc<dyn Store>) {
    let prof = create_user(&store, Role::Professor).await;
    let mut students = Vec::new();
    for _ in 0..3 {
        students.push(create_user(&store, Role::Student).await.id);
    }
    let ready = |challenge: super::Challenge| {
        let store = store.clone();
        async move {
            assert!(store
                .set_challenge_init(
                    challenge.id,
                    challenge.version,
                    ready_for(&challenge),
                    now_ms()
                )
                .await
                .unwrap());
            store.get_challenge(challenge.id).await.unwrap().unwrap()
        }
    };
    let fe = ready(
        store
            .create_challenge(new_challenge(prof.id, ChallengeType::FE, 2))
            .await
            .unwrap(),
    )
    .await;
    let top = |challenge_id: ChallengeId, version: i64| {
        let store = store.clone();
        async move {
            store
                .top_attempts(challenge_id, version, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|row| (row.user_id, row.attempt_id))
                .collect::<Vec<_>>()
        }
    };
    let a0 = finish_with_ratios(&store, students[0], &fe, &[2.0, 8.0], true).await; // 4
    let a1 = finish_with_ratios(&store, students[1], &fe, &[1.0, 1.0], true).await; // 1
    let a2 = finish_with_ratios(&store, students[0], &fe, &[0.5, 2.0], true).await; // 1, later
    finish_with_ratios(&store, students[2], &fe, &[0.1, 0.1], false).await;
    let a4 = finish_with_ratios(&store, students[2], &fe, &[3.0, 3.0], true).await; // 3
    finish_with_ratios(&store, students[0], &fe, &[9.0, 9.0], true).await; // worse: ignored
    assert_ne!(a0, a2);
    assert_eq!(
        top(fe.id, 1).await,
        vec![(students[1], a1), (students[0], a2), (students[2], a4)]
    );
    let rows = store.top_attempts(fe.id, 1, 2).await.unwrap();
    assert_eq!(rows.len(), 2, "the limit holds");
    assert!((rows[0].score - 1.0).abs() < 1e-9);
    assert!((rows[0].completion_time_ms - 20.0).abs() < 1e-9);

    let se = ready(
        store
            .create_challenge(new_challenge(prof.id, ChallengeType::SE, 2))
            .await
            .unwrap(),
    )
    .await;
    let slow = finish_with_ratios(&store, students[0], &se, &[2.0, 8.0], true).await;
    let fast = finish_with_ratios(&store, students[1], &se, &[1.0, 1.0], true).await;
    assert_eq!(
        top(se.id, 1).await,
        vec![(students[0], slow), (students[1], fast)],
        "SE: the highest score first"
    );

    // A new version starts an empty board; the old one is kept apart.
    let moved = store
        .update_challenge(
            fe.id,
            1,
            ChallengeUpdate {
                new_version: Some(next_version("select a from t order by a")),
                ..ChallengeUpdate::default()
            },
        )
        .await
        .unwrap();
    let moved = ready(moved).await;
    assert_eq!(top(fe.id, 2).await, vec![]);
    let newer = finish_with_ratios(&store, students[2], &moved, &[5.0, 5.0, 5.0], true).await;
    assert_eq!(top(fe.id, 2).await, vec![(students[2], newer)]);
    assert_eq!(top(fe.id, 1).await.len(), 3);
}

/// Marking a finished job applied drops its outcome and progress, and a
/// DONE job's payload keeps only its ids (a FAILED one keeps its payload
/// for a retry). `delete_finished_jobs` deletes only finished, applied
/// jobs queued before the cutoff, at most `limit` per call.
pub async fn applied_jobs_are_pruned_then_compacted(store: Arc<dyn Store>) {
    let (done, _) = leased_job(&store, attempt_job(Lane::Fast, AttemptId(1))).await;
    store
        .record_progress(
            held_lease(&done, lease_id_of(&done)),
            case_result(TestCaseId(1), CaseStatus::Passed),
        )
        .await
        .unwrap();
    store
        .complete_job(
            held_lease(&done, lease_id_of(&done)),
            attempt_outcome(),
            now_ms(),
        )
        .await
        .unwrap();
    let (failed, _) = leased_job(&store, attempt_job(Lane::Fast, AttemptId(2))).await;
    store
        .record_progress(
            held_lease(&failed, lease_id_of(&failed)),
            case_result(TestCaseId(1), CaseStatus::Passed),
        )
        .await
        .unwrap();
    store
        .fail_job(
            held_lease(&failed, lease_id_of(&failed)),
            "boom",
            Retry::Never,
            now_ms(),
        )
        .await
        .unwrap();
    let unapplied = {
        let (job, _) = leased_job(&store, attempt_job(Lane::Fast, AttemptId(3))).await;
        store
            .complete_job(
                held_lease(&job, lease_id_of(&job)),
                attempt_outcome(),
                now_ms(),
            )
            .await
            .unwrap();
        job
    };
    let queued = store
        .enqueue_job(attempt_job(Lane::Slow, AttemptId(4)))
        .await
        .unwrap();

    for job in [&done, &failed] {
        store.mark_job_applied(job.id).await.unwrap();
    }
    let pruned = store.get_job(done.id).await.unwrap().unwrap();
    assert!(pruned.applied);
    assert_eq!((pruned.outcome, pruned.progress), (None, Vec::new()));
    assert_eq!(pruned.payload, pruned_payload(&done.payload));
    let JobPayload::Attempt(payload) = &pruned.payload else {
        panic!("an attempt payload");
    };
    assert_eq!(
        (payload.attempt_id, payload.query.as_str()),
        (AttemptId(1), "")
    );
    let kept = store.get_job(failed.id).await.unwrap().unwrap();
    assert_eq!(kept.payload, failed.payload, "a FAILED job can be retried");
    assert!(kept.progress.is_empty());

    // Nothing was queued an hour ago.
    let hour_ago = now_ms() - Duration::hours(1);
    assert_eq!(store.delete_finished_jobs(hour_ago, 10).await.unwrap(), 0);
    let later = now_ms() + Duration::seconds(5);
    assert_eq!(store.delete_finished_jobs(later, 1).await.unwrap(), 1);
    assert_eq!(store.delete_finished_jobs(later, 10).await.unwrap(), 1);
    assert_eq!(store.delete_finished_jobs(later, 10).await.unwrap(), 0);
    for gone in [done.id, failed.id] {
        assert_eq!(store.get_job(gone).await.unwrap(), None);
    }
    for stays in [unapplied.id, queued.id] {
        assert!(store.get_job(stays).await.unwrap().is_some(), "job {stays}");
    }
}

/// The console's list of a challenge's attempts: newest first, only that
/// challenge's, filtered by status and by user, paged by id.
pub async fn challenge_attempts_are_listed_newest_first_with_filters(store: Arc<dyn Store>) {
    let prof = create_user(&store, Role::Professor).await;
    let ada = create_user(&store, Role::Student).await;
    let alan = create_user(&store, Role::Student).await;
    let challenge = store
        .create_challenge(new_challenge(prof.id, ChallengeType::FE, 1))
        .await
        .unwrap();
    let other = store
        .create_challenge(new_challenge(prof.id, ChallengeType::FE, 1))
        .await
        .unwrap();
    let attempt = |user_id: UserId, challenge_id: ChallengeId| {
        let store = store.clone();
        async move {
            store
                .create_attempt(NewAttempt {
                    user_id,
                    challenge_id,
                    challenge_version: 1,
                    query: "select a from t".into(),
                })
                .await
                .unwrap()
        }
    };
    let first = attempt(ada.id, challenge.id).await;
    let second = attempt(alan.id, challenge.id).await;
    attempt(ada.id, other.id).await;
    let third = attempt(ada.id, challenge.id).await;
    store
        .update_attempt(
            second.id,
            AttemptUpdate {
                status: Some(AttemptStatus::Passed),
                ..AttemptUpdate::default()
            },
        )
        .await
        .unwrap();
    let list = |status: Option<AttemptStatus>, user_id: Option<UserId>, page: Page<AttemptId>| {
        let store = store.clone();
        let filter = ChallengeAttemptFilter {
            challenge_id: challenge.id,
            status,
            user_id,
        };
        async move {
            store
                .list_challenge_attempts(filter, page)
                .await
                .unwrap()
                .into_iter()
                .map(|attempt| attempt.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(None, None, Page::all()).await,
        [third.id, second.id, first.id]
    );
    assert_eq!(
        list(Some(AttemptStatus::Passed), None, Page::all()).await,
        [second.id]
    );
    assert_eq!(
        list(Some(AttemptStatus::Pending), Some(ada.id), Page::all()).await,
        [third.id, first.id]
    );
    assert_eq!(list(None, Some(alan.id), Page::all()).await, [second.id]);
    let page = |after: Option<AttemptId>| Page { after, limit: 2 };
    assert_eq!(list(None, None, page(None)).await, [third.id, second.id]);
    assert_eq!(list(None, None, page(Some(second.id))).await, [first.id]);
}

/// The time in a job's id (a UUID v7).
fn id_time(id: JobId) -> DateTime<Utc> {
    let (seconds, nanos) = Uuid::from(id).get_timestamp().expect("a v7 id").to_unix();
    DateTime::from_timestamp(i64::try_from(seconds).unwrap(), nanos).unwrap()
}

/// The console's job list: each filter alone and together, the grader
/// filter on current leases, the queue-time range, pages by `seq`.
pub async fn jobs_are_found_by_every_console_filter(store: Arc<dyn Store>) {
    let first = store
        .enqueue_job(attempt_job(Lane::Fast, AttemptId(1)))
        .await
        .unwrap();
    // Distinct queue times (a backend may keep milliseconds only).
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let init = store.enqueue_job(init_job(ChallengeId(7))).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let mut slow = attempt_job(Lane::Slow, AttemptId(2));
    if let JobPayload::Attempt(payload) = &mut slow.payload {
        payload.challenge_id = ChallengeId(7);
    }
    let slow = store.enqueue_job(slow).await.unwrap();
    let grader = GraderId::new_v7();
    let claimed = store
        .claim_job(grader, &[Lane::Fast], now_ms())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, first.id);
    let find = |query: JobQuery| {
        let store = store.clone();
        async move {
            store
                .list_jobs_matching(query)
                .await
                .unwrap()
                .into_iter()
                .map(|job| job.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        find(JobQuery::default()).await,
        [first.id, init.id, slow.id]
    );
    let of_seven = JobQuery {
        challenge_id: Some(ChallengeId(7)),
        ..JobQuery::default()
    };
    assert_eq!(find(of_seven).await, [init.id, slow.id]);
    assert_eq!(
        find(JobQuery {
            lane: Some(Lane::Slow),
            ..of_seven
        })
        .await,
        [slow.id]
    );
    assert_eq!(
        find(JobQuery {
            state: Some(JobState::Queued),
            challenge_id: Some(ChallengeId(1)),
            ..JobQuery::default()
        })
        .await,
        Vec::<JobId>::new()
    );
    assert_eq!(
        find(JobQuery {
            grader_id: Some(grader),
            ..JobQuery::default()
        })
        .await,
        [first.id]
    );
    assert!(find(JobQuery {
        grader_id: Some(GraderId::new_v7()),
        ..JobQuery::default()
    })
    .await
    .is_empty());
    assert_eq!(
        find(JobQuery {
            queued_from: Some(id_time(init.id)),
            queued_before: Some(id_time(slow.id)),
            ..JobQuery::default()
        })
        .await,
        [init.id]
    );
    assert_eq!(
        find(JobQuery {
            limit: 1,
            after: Some(init.seq),
            ..JobQuery::default()
        })
        .await,
        [slow.id]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `pub async fn` of this file is in [`CHECKS`], even one someone
    /// exempted from the `dead_code` lint.
    #[test]
    fn every_check_defined_is_listed() {
        let defined: BTreeSet<&str> = include_str!("conformance.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("pub async fn "))
            .map(|rest| rest.split('(').next().expect("a function name"))
            .collect();
        let listed: Vec<&str> = CHECKS.iter().map(|check| check.name).collect();
        assert_eq!(
            listed.len(),
            listed.iter().collect::<BTreeSet<_>>().len(),
            "a check is listed twice"
        );
        assert_eq!(defined, listed.into_iter().collect::<BTreeSet<_>>());
        assert!(defined.len() >= 29, "the checks were found: {defined:?}");
    }
}
