//! Challenges, their versions and test cases.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlarena_common::{
    ChallengeId, ChallengeState, ChallengeType, QueryResult, TestCaseId, UserId,
};

use super::{Page, StoreResult};

/// A test case as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestCase {
    pub id: TestCaseId,
    pub challenge_id: ChallengeId,
    pub data: String,
    pub is_visible: bool,
    /// Filled by the init job.
    pub expected: Option<QueryResult>,
    pub reference_ms: Option<f64>,
    pub created_at: DateTime<Utc>,
}

/// A challenge with its test cases.
#[derive(Debug, Clone, PartialEq)]
pub struct Challenge {
    pub id: ChallengeId,
    pub created_user_id: UserId,
    pub name: String,
    pub description: Option<String>,
    pub challenge_type: ChallengeType,
    pub init: String,
    pub solution: String,
    pub times_to_run: u32,
    pub expires_at: DateTime<Utc>,
    pub version: i64,
    pub state: ChallengeState,
    pub init_at: Option<DateTime<Utc>>,
    pub init_errors: Option<Vec<String>>,
    pub init_warnings: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub test_cases: Vec<TestCase>,
}

/// A test case to be created with its challenge.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTestCase {
    pub data: String,
    pub is_visible: bool,
}

/// A challenge to be created: the store assigns ids, `version = 1`,
/// `state = PENDING` and timestamps.
#[derive(Debug, Clone)]
pub struct NewChallenge {
    pub created_user_id: UserId,
    pub name: String,
    pub description: Option<String>,
    pub challenge_type: ChallengeType,
    pub init: String,
    pub solution: String,
    pub times_to_run: u32,
    pub expires_at: DateTime<Utc>,
    pub test_cases: Vec<NewTestCase>,
}

/// What a version of a challenge is built from: the init SQL, the reference
/// solution and the test cases. Changing any of it makes a new version.
#[derive(Debug, Clone, PartialEq)]
pub struct ChallengeVersion {
    pub init: String,
    pub solution: String,
    pub test_cases: Vec<NewTestCase>,
}

/// Changes to a challenge for [`Store::update_challenge`]; `None` leaves a
/// field as it is.
#[derive(Debug, Clone, Default)]
pub struct ChallengeUpdate {
    pub name: Option<String>,
    /// `Some(None)` removes the description.
    pub description: Option<Option<String>>,
    pub times_to_run: Option<u32>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Moves the challenge to its next version, built from this.
    pub new_version: Option<ChallengeVersion>,
}

/// What an init job established for one version of a challenge.
#[derive(Debug, Clone, PartialEq)]
pub enum InitResult {
    /// Expected results per test case id; the challenge becomes READY.
    Ready {
        expected: Vec<(TestCaseId, QueryResult, Option<f64>)>,
        warnings: Vec<String>,
    },
    /// The challenge becomes FAILED with these messages.
    Failed { errors: Vec<String> },
}

/// Challenges, their versions and test cases.
#[async_trait]
pub trait ChallengeStore: Send + Sync {
    /// Creates a challenge (version 1, PENDING) and its test cases, with ids
    /// from the challenge and test case sequences.
    async fn create_challenge(&self, challenge: NewChallenge) -> StoreResult<Challenge>;
    /// Returns a challenge with its test cases (ordered by id).
    async fn get_challenge(&self, id: ChallengeId) -> StoreResult<Option<Challenge>>;
    /// Lists challenges, newest first (by id), optionally only those
    /// `created_by`; a page starts below the id `page.after`.
    async fn list_challenges(
        &self,
        created_by: Option<UserId>,
        page: Page<ChallengeId>,
    ) -> StoreResult<Vec<Challenge>>;
    /// Applies `update` to a challenge that is still at `expected_version`
    /// and returns the challenge as updated. With `update.new_version` the
    /// challenge moves to `expected_version + 1`: PENDING, init result
    /// cleared (init_at, init_errors, init_warnings), the new test cases
    /// with new ids from the test case sequence; the previous version's test
    /// cases are kept for [`Store::list_test_cases`].
    ///
    /// `NotFound` if there is no such challenge; `Conflict` (nothing
    /// changed) if it is at another version, so of two concurrent updates
    /// made from the same version only one moves it to the next. A backend
    /// may also answer `Conflict` to a new version when an init result for
    /// the current one lands at the same moment; a retry then succeeds.
    async fn update_challenge(
        &self,
        id: ChallengeId,
        expected_version: i64,
        update: ChallengeUpdate,
    ) -> StoreResult<Challenge>;
    /// Returns the test cases of one version of a challenge, ordered by id
    /// (the current ones for the current version; empty for an unknown
    /// challenge or version).
    async fn list_test_cases(
        &self,
        challenge_id: ChallengeId,
        version: i64,
    ) -> StoreResult<Vec<TestCase>>;
    /// Records an init job's result for `version`. Returns false (and changes
    /// nothing) if the challenge has moved on to another version.
    async fn set_challenge_init(
        &self,
        id: ChallengeId,
        version: i64,
        result: InitResult,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
}
