//! The MongoDB store: the conformance suite on a fresh database per test,
//! several coordinators sharing one database, and the places where the
//! nx-27017 test server deviates from MongoDB.
//!
//! Needs nx-27017 (`scripts/mongo-test-server.sh`) or a real server named
//! by `SQLARENA_TEST_MONGODB_URI`. The quirk tests assert the deviation on
//! nx-27017 and MongoDB's documented behaviour on a real server.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use mongodb::bson::{doc, Bson, Document};
use mongodb::{Client, Collection};
use sqlarena_common::{
    AttemptId, AttemptPayload, ChallengeId, GraderId, JobId, JobPayload, JobState, Lane,
    TestCaseId, UserId,
};
use sqlarena_coordinator::store::mongo::MongoStore;
use sqlarena_coordinator::store::{AttemptStore, ChallengeStore, NewJob, Store, UserStore};
use sqlarena_e2e::mongo::{test_mongodb_uri, using_nx_27017};

/// Connects a store to a fresh, empty database.
async fn fresh_store() -> Arc<dyn Store> {
    Arc::new(connect(&test_mongodb_uri()).await)
}

async fn connect(uri: &str) -> MongoStore {
    MongoStore::connect(uri)
        .await
        .unwrap_or_else(|error| panic!("connect to {uri}: {error:#}"))
}

sqlarena_coordinator::store_conformance_suite!(fresh_store);
sqlarena_coordinator::assessment_store_conformance_suite!(fresh_store);
sqlarena_coordinator::store_runs_conformance_suite!(fresh_store);
sqlarena_coordinator::store_affinity_conformance_suite!(fresh_store);
sqlarena_coordinator::store_exports_conformance_suite!(fresh_store);
sqlarena_coordinator::store_audit_conformance_suite!(fresh_store);
sqlarena_coordinator::console_store_conformance_suite!(fresh_store);

fn attempt_job(attempt_id: i64) -> NewJob {
    NewJob {
        lane: Lane::Fast,
        payload: JobPayload::Attempt(AttemptPayload {
            attempt_id: AttemptId(attempt_id),
            user_id: UserId(1),
            challenge_id: ChallengeId(1),
            challenge_name: "c".into(),
            challenge_version: 1,
            version_hash: "v1".into(),
            query: "select 1".into(),
            times_to_run: 3,
            test_case_ids: vec![TestCaseId(1), TestCaseId(2)],
            run_item: None,
        }),
        max_tries: 3,
        timeout_ms: 30_000,
    }
}

/// Two coordinators (two clients, two connection pools) on one database,
/// each with several claimers at once: every job is leased exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_coordinators_lease_every_job_once() {
    let uri = test_mongodb_uri();
    let first: Arc<dyn Store> = Arc::new(connect(&uri).await);
    let second: Arc<dyn Store> = Arc::new(connect(&uri).await);
    const JOBS: i64 = 40;
    let mut queued = HashSet::new();
    for attempt_id in 0..JOBS {
        queued.insert(
            first
                .enqueue_job(attempt_job(attempt_id))
                .await
                .expect("enqueue")
                .id,
        );
    }

    let mut claimers = tokio::task::JoinSet::new();
    for claimer in 0..8 {
        let store = if claimer % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        claimers.spawn(async move {
            let grader_id = GraderId::new_v7();
            let mut claimed = Vec::new();
            while let Some(job) = store
                .claim_job(grader_id, &[Lane::Fast], Utc::now())
                .await
                .expect("claim")
            {
                assert_eq!(job.state, JobState::Leased);
                assert_eq!(job.tries, 1, "job {} was leased before", job.id);
                assert_eq!(job.lease.expect("a lease").grader_id, grader_id);
                claimed.push(job.id);
            }
            claimed
        });
    }
    let mut leased = Vec::new();
    while let Some(claimed) = claimers.join_next().await {
        leased.extend(claimed.expect("claimer panicked"));
    }
    let distinct: HashSet<JobId> = leased.iter().copied().collect();
    assert_eq!(distinct.len(), leased.len(), "a job was leased twice");
    assert_eq!(distinct, queued, "every queued job is leased");
    for store in [&first, &second] {
        let stats = store.lane_stats().await.expect("lane stats");
        let fast = stats
            .iter()
            .find(|lane| lane.lane == Lane::Fast)
            .expect("fast lane");
        assert_eq!((fast.queued, fast.leased), (0, JOBS as u64));
    }
}

/// The claim's deadline comes from the job's own timeout (set by the
/// claim's second, fenced write), and that is what is stored.
#[tokio::test]
async fn claims_set_the_deadline_from_the_jobs_timeout() {
    let store = fresh_store().await;
    let mut short = attempt_job(1);
    short.timeout_ms = 1_500;
    let short = store.enqueue_job(short).await.expect("enqueue");
    let now = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    let claimed = store
        .claim_job(GraderId::new_v7(), &[Lane::Fast], now)
        .await
        .expect("claim")
        .expect("a job");
    assert_eq!(claimed.id, short.id);
    let expected = now + chrono::Duration::milliseconds(1_500);
    assert_eq!(claimed.lease.expect("lease").expires_at, expected);
    let stored = store.get_job(short.id).await.expect("get").expect("job");
    assert_eq!(stored.lease.expect("lease").expires_at, expected);
    assert!(
        store
            .requeue_expired(expected)
            .await
            .expect("requeue")
            .is_empty(),
        "not expired at the deadline"
    );
    let requeued = store
        .requeue_expired(expected + chrono::Duration::milliseconds(1))
        .await
        .expect("requeue");
    assert_eq!(requeued.len(), 1, "expired just after the deadline");
}

/// Indexes are created at startup, and a second startup on the same
/// database (another coordinator) succeeds.
#[tokio::test]
async fn startup_creates_indexes_idempotently() {
    let uri = test_mongodb_uri();
    connect(&uri).await;
    connect(&uri).await;
    let jobs = raw_collection(&uri, "jobs").await;
    let mut keys = Vec::new();
    let mut cursor = jobs.list_indexes().await.expect("list indexes");
    while cursor.advance().await.expect("next index") {
        keys.push(cursor.deserialize_current().expect("index").keys);
    }
    for wanted in [
        doc! { "state": 1, "lane_priority": 1, "seq": 1 },
        doc! { "lease_expires_ms": 1 },
        doc! { "state": 1, "lane": 1 },
        doc! { "lease.grader_id": 1 },
    ] {
        assert!(
            keys.contains(&wanted),
            "index {wanted} missing from {keys:?}"
        );
    }
}

#[tokio::test]
async fn a_bad_uri_is_a_clear_error() {
    let error = MongoStore::connect("mongodb://")
        .await
        .expect_err("no host")
        .to_string();
    assert!(error.contains("MongoDB URI"), "{error}");
}

// ---------------------------------------------------------------------------
// nx-27017 quirks: each test asserts the deviation on nx-27017 and what
// MongoDB documents on a real server.
// ---------------------------------------------------------------------------

async fn raw_collection(uri: &str, name: &str) -> Collection<Document> {
    let client = Client::with_uri_str(uri).await.expect("client");
    client
        .default_database()
        .expect("database in the URI")
        .collection(name)
}

async fn scratch() -> Collection<Document> {
    raw_collection(&test_mongodb_uri(), "quirks").await
}

/// MongoDB keeps the BSON type of a value written by `$set`
/// (https://www.mongodb.com/docs/manual/reference/operator/update/set/);
/// nx-27017 stores a date set on a field as text, while dates inside a
/// set subdocument or an inserted document stay dates. The store's
/// decoder reads that text back (`Fields::time`).
#[tokio::test]
async fn nx_27017_stores_set_dates_as_strings() {
    let collection = scratch().await;
    let at = mongodb::bson::DateTime::from_millis(1_767_268_800_123);
    collection
        .insert_one(doc! { "_id": 1, "inserted": at })
        .await
        .expect("insert");
    collection
        .update_one(
            doc! { "_id": 1 },
            doc! { "$set": { "field": at, "sub": { "nested": at } } },
        )
        .await
        .expect("update");
    let stored = collection
        .find_one(doc! { "_id": 1 })
        .await
        .expect("find")
        .expect("document");
    assert_eq!(stored.get("inserted"), Some(&Bson::DateTime(at)));
    assert_eq!(
        stored.get_document("sub").unwrap().get("nested"),
        Some(&Bson::DateTime(at))
    );
    if using_nx_27017() {
        assert_eq!(
            stored.get("field"),
            Some(&Bson::String("2026-01-01 12:00:00.123000".into()))
        );
    } else {
        assert_eq!(stored.get("field"), Some(&Bson::DateTime(at)));
    }
}

/// MongoDB keeps booleans written by `$set`
/// (https://www.mongodb.com/docs/manual/reference/operator/update/set/);
/// nx-27017 stores them as 0/1, though `{field: true}` filters still
/// match. The store's decoder reads 0/1 back (`Fields::bool`).
#[tokio::test]
async fn nx_27017_stores_set_booleans_as_integers() {
    let collection = scratch().await;
    collection
        .insert_one(doc! { "_id": 1, "flag": false })
        .await
        .expect("insert");
    collection
        .update_one(doc! { "_id": 1 }, doc! { "$set": { "flag": true } })
        .await
        .expect("update");
    let stored = collection
        .find_one(doc! { "_id": 1 })
        .await
        .expect("find")
        .expect("document");
    let flag = stored.get("flag").cloned();
    if using_nx_27017() {
        assert!(
            matches!(flag, Some(Bson::Int32(1) | Bson::Int64(1))),
            "{flag:?}"
        );
    } else {
        assert_eq!(flag, Some(Bson::Boolean(true)));
    }
    assert_eq!(
        collection
            .count_documents(doc! { "flag": true })
            .await
            .unwrap(),
        1
    );
}

/// MongoDB appends the document itself with `$push`
/// (https://www.mongodb.com/docs/manual/reference/operator/update/push/) and
/// updates the matched element with `$`
/// (https://www.mongodb.com/docs/manual/reference/operator/update/positional/);
/// nx-27017 stores the document's JSON text instead, with both. The store's `record_progress` needs neither (it rewrites the
/// case list under a revision check).
#[tokio::test]
async fn nx_27017_pushes_and_sets_elements_as_json_strings() {
    let collection = scratch().await;
    collection
        .insert_one(doc! { "_id": 1, "cases": [ { "id": 1, "ok": "no" } ] })
        .await
        .expect("insert");
    collection
        .update_one(
            doc! { "_id": 1, "cases.id": 1 },
            doc! { "$set": { "cases.$": { "id": 1, "ok": "yes" } } },
        )
        .await
        .expect("positional update");
    collection
        .update_one(
            doc! { "_id": 1 },
            doc! { "$push": { "cases": { "id": 2 } } },
        )
        .await
        .expect("push");
    let stored = collection
        .find_one(doc! { "_id": 1 })
        .await
        .expect("find")
        .expect("document");
    let cases = stored.get_array("cases").expect("cases").clone();
    if using_nx_27017() {
        assert!(
            matches!(&cases[0], Bson::String(text) if text.contains("yes")),
            "{cases:?}"
        );
        assert!(
            matches!(&cases[1], Bson::String(text) if text.contains("\"id\"")),
            "{cases:?}"
        );
    } else {
        assert_eq!(
            cases,
            vec![
                Bson::Document(doc! { "id": 1, "ok": "yes" }),
                Bson::Document(doc! { "id": 2 })
            ]
        );
    }
}

/// MongoDB accepts an aggregation pipeline as an update
/// (https://www.mongodb.com/docs/manual/tutorial/update-documents-with-aggregation-pipeline/);
/// nx-27017 rejects it. This is why a claim sets the job's deadline in a
/// second, fenced write rather than with `$add` in the claim itself.
#[tokio::test]
async fn nx_27017_rejects_pipeline_updates() {
    let collection = scratch().await;
    collection
        .insert_one(doc! { "_id": 1, "start": 10_i64, "timeout": 5_i64 })
        .await
        .expect("insert");
    let pipeline = vec![doc! { "$set": { "deadline": { "$add": ["$start", "$timeout"] } } }];
    let updated = collection.update_one(doc! { "_id": 1 }, pipeline).await;
    if using_nx_27017() {
        assert!(
            updated.is_err(),
            "nx-27017 now supports pipeline updates: {updated:?}"
        );
    } else {
        updated.expect("pipeline update");
        let stored = collection
            .find_one(doc! { "_id": 1 })
            .await
            .expect("find")
            .expect("document");
        assert_eq!(stored.get_i64("deadline").unwrap(), 15);
    }
}

/// MongoDB applies every condition of a filter
/// (https://www.mongodb.com/docs/manual/reference/operator/query/lt/);
/// nx-27017's `find` misses a date written by `$set` (even 100 s in range)
/// once the filter also has an `$in`. The store filters its range-filtered
/// times (`lease_expires_ms`, `last_heartbeat_ms`) alone.
#[tokio::test]
async fn nx_27017_range_filters_with_in_miss_set_dates() {
    let collection = scratch().await;
    let at = mongodb::bson::DateTime::from_millis(1_767_268_800_000);
    let later = mongodb::bson::DateTime::from_millis(1_767_268_900_000);
    collection
        .insert_one(doc! { "_id": 1, "state": "A" })
        .await
        .expect("insert");
    collection
        .update_one(
            doc! { "_id": 1 },
            doc! { "$set": { "top": at, "sub": { "at": at } } },
        )
        .await
        .expect("update");
    let count = |filter: Document| {
        let collection = collection.clone();
        async move {
            let mut cursor = collection.find(filter).await.expect("find");
            let mut count = 0;
            while cursor.advance().await.expect("next") {
                count += 1;
            }
            count
        }
    };
    // Top-level and alone: both servers match.
    assert_eq!(count(doc! { "top": { "$lt": later } }).await, 1);
    let mixed = count(doc! { "state": { "$in": ["A", "B"] }, "top": { "$lt": later } }).await;
    if using_nx_27017() {
        assert_eq!(mixed, 0);
    } else {
        assert_eq!(mixed, 1);
    }
}

/// MongoDB compares dates to the millisecond
/// (https://www.mongodb.com/docs/manual/reference/bson-types/#date);
/// nx-27017 compares a date written by `$set` (stored as text) to the
/// second only. The store range-filters integer copies instead
/// (`lease_expires_ms`, `last_heartbeat_ms`).
#[tokio::test]
async fn nx_27017_compares_set_dates_to_the_second() {
    let collection = scratch().await;
    let at = mongodb::bson::DateTime::from_millis(1_767_268_800_500);
    let just_after = mongodb::bson::DateTime::from_millis(1_767_268_800_501);
    collection
        .insert_one(doc! { "_id": 1 })
        .await
        .expect("insert");
    collection
        .update_one(doc! { "_id": 1 }, doc! { "$set": { "at": at } })
        .await
        .expect("update");
    let mut cursor = collection
        .find(doc! { "at": { "$lt": just_after } })
        .await
        .expect("find");
    let matched = cursor.advance().await.expect("next");
    assert_eq!(matched, !using_nx_27017());
}

/// MongoDB updates the document matching `{_id, status: {$in: [...]}}`
/// (https://www.mongodb.com/docs/manual/reference/operator/query/in/);
/// nx-27017 updates another one when the ids were inserted out of order
/// (as concurrent attempt admissions insert them): here the update meant
/// for `_id: 1` lands on `_id: 2`, inserted first. The same filter with
/// `$or` is applied correctly by both, so `update_attempt` uses `$or`.
#[tokio::test]
async fn nx_27017_misapplies_id_with_in() {
    let collection = scratch().await;
    for id in [2, 1] {
        collection
            .insert_one(doc! { "_id": id, "status": "PENDING" })
            .await
            .expect("insert");
    }
    let marked = |who: &str| {
        let collection = collection.clone();
        let who = who.to_owned();
        async move {
            let mut marked: Vec<i32> = Vec::new();
            for id in [1, 2] {
                let stored = collection
                    .find_one(doc! { "_id": id })
                    .await
                    .expect("find")
                    .expect("document");
                if stored.get_str("who") == Ok(who.as_str()) {
                    marked.push(id);
                }
            }
            marked
        }
    };
    collection
        .update_one(
            doc! { "_id": 1, "status": { "$in": ["PENDING", "RUNNING"] } },
            doc! { "$set": { "who": "in" } },
        )
        .await
        .expect("update with $in");
    let expected_with_in = if using_nx_27017() { vec![2] } else { vec![1] };
    assert_eq!(marked("in").await, expected_with_in);
    collection
        .update_one(
            doc! { "_id": 1, "$or": [{ "status": "PENDING" }, { "status": "RUNNING" }] },
            doc! { "$set": { "who": "or" } },
        )
        .await
        .expect("update with $or");
    assert_eq!(marked("or").await, vec![1], "$or is applied right by both");
}

/// A database from before the leaderboard (passed attempts, no rows) gets
/// its leaderboard filled when a coordinator connects.
#[tokio::test]
async fn connecting_fills_an_empty_leaderboard_from_passed_attempts() {
    use sqlarena_common::{AttemptStatus, CaseResult, CaseStatus, ChallengeType, Role};
    use sqlarena_coordinator::store::{
        AttemptUpdate, NewAttempt, NewChallenge, NewTestCase, NewUser,
    };

    let uri = test_mongodb_uri();
    let store = connect(&uri).await;
    let user = store
        .create_user(NewUser {
            email: "old@example.com".into(),
            full_name: "Old".into(),
            role: Role::Student,
            password_hash: "hash".into(),
        })
        .await
        .unwrap();
    let challenge = store
        .create_challenge(NewChallenge {
            created_user_id: user.id,
            name: "old".into(),
            description: None,
            challenge_type: ChallengeType::FE,
            init: "create table t (a int)".into(),
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
    let attempt = store
        .create_attempt(NewAttempt {
            user_id: user.id,
            challenge_id: challenge.id,
            challenge_version: 1,
            query: "select a from t".into(),
        })
        .await
        .unwrap();
    let case = CaseResult {
        test_case_id: challenge.test_cases[0].id,
        status: CaseStatus::Passed,
        execution_ms: Some(3.0),
        min_ms: None,
        reference_ms: Some(2.0),
        ratio: Some(1.5),
        actual_result: None,
        diff: None,
        error: None,
        timing: None,
        audit: None,
    };
    let update = AttemptUpdate {
        status: Some(AttemptStatus::Passed),
        cases: Some(vec![case]),
        ..AttemptUpdate::default()
    };
    store.update_attempt(attempt.id, update).await.unwrap();
    raw_collection(&uri, "leaderboard")
        .await
        .delete_many(doc! {})
        .await
        .unwrap();
    assert!(store
        .top_attempts(challenge.id, 1, 10)
        .await
        .unwrap()
        .is_empty());

    let reconnected = connect(&uri).await;
    let board = reconnected.top_attempts(challenge.id, 1, 10).await.unwrap();
    assert_eq!(
        board.iter().map(|row| row.attempt_id).collect::<Vec<_>>(),
        vec![attempt.id]
    );
    assert!((board[0].score - 1.5).abs() < 1e-9);
}
