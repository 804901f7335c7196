//! The audit of grading on MongoDB: init audits (`init_audits`, one
//! document per test case), one grader's leaderboard (`grader_leaderboard`,
//! kept by `record_ranking` beside the whole one), recent passed cases.

use super::*;
use crate::store::audit::AuditStore;
use sqlarena_common::CaseAudit;

const INIT_AUDITS: &str = "init_audits";
const GRADER_LEADERBOARD: &str = "grader_leaderboard";

/// The audit's indexes.
pub(super) fn indexes() -> Vec<(&'static str, Document, Option<IndexOptions>)> {
    vec![
        (INIT_AUDITS, doc! { "challenge_id": 1, "version": 1 }, None),
        (
            GRADER_LEADERBOARD,
            doc! { "challenge_id": 1, "version": 1, "grader_id": 1, "rank_key": 1, "time_ms": 1, "attempt_id": 1 },
            None,
        ),
    ]
}

#[async_trait]
impl AuditStore for MongoStore {
    async fn record_init_audits(
        &self,
        challenge_id: ChallengeId,
        version: i64,
        audits: Vec<(TestCaseId, CaseAudit)>,
    ) -> StoreResult<()> {
        let collection = self.collection(INIT_AUDITS);
        for (test_case_id, audit) in audits {
            let document = doc! {
                "_id": test_case_id,
                "challenge_id": challenge_id,
                "version": version,
                "audit": to_bson(&audit)?,
            };
            collection
                .replace_one(doc! { "_id": test_case_id }, document)
                .upsert(true)
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    async fn list_init_audits(
        &self,
        challenge_id: ChallengeId,
        version: i64,
    ) -> StoreResult<Vec<(TestCaseId, CaseAudit)>> {
        let documents = self
            .find_many(
                INIT_AUDITS,
                doc! { "challenge_id": challenge_id, "version": version },
                doc! { "_id": 1 },
                0,
            )
            .await?;
        documents
            .iter()
            .map(|document| {
                let fields = Fields::new(document, "init audit");
                Ok((fields.id("_id")?, fields.value("audit")?))
            })
            .collect()
    }

    async fn top_attempts_of_grader(
        &self,
        challenge_id: ChallengeId,
        version: i64,
        grader_id: GraderId,
        limit: u32,
    ) -> StoreResult<Vec<LeaderboardRow>> {
        let filter = doc! {
            "challenge_id": challenge_id,
            "version": version,
            "grader_id": grader_id.to_string(),
        };
        let documents = self
            .find_many(
                GRADER_LEADERBOARD,
                filter,
                doc! { "rank_key": 1, "time_ms": 1, "attempt_id": 1 },
                i64::from(limit),
            )
            .await?;
        documents.iter().map(leaderboard_row_from).collect()
    }

    async fn list_recent_passed_cases(&self, limit: u32) -> StoreResult<Vec<CaseResult>> {
        let documents = self
            .find_many(
                "attempts",
                doc! { "status": AttemptStatus::Passed.as_str() },
                doc! { "_id": -1 },
                i64::from(limit),
            )
            .await?;
        let mut cases = Vec::new();
        for document in &documents {
            cases.extend(attempt_from(document)?.cases);
        }
        Ok(cases)
    }
}
