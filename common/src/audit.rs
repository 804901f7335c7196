//! Audit records: where and how each test case of an attempt or an init was
//! measured, so that a professor who doubts a result can see which grader
//! ran it, on which PostgreSQL, with how many rounds.
//!
//! A grader fills in what it measured; the coordinator fills in the grader
//! from the lease the result came under (what a grader says there is
//! replaced: the coordinator trusts a grader only for the leases it holds).
//! Only the challenge's professor and admins see audits: they name
//! graders and their PostgreSQL versions, infrastructure a student has no
//! need to know.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::GraderId;

/// Where and how one test case was measured. Times are milliseconds; the
/// student's are absent for an init (it times the reference alone) and for
/// a case that failed before its timed rounds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct CaseAudit {
    /// The grader the result came from (set by the coordinator).
    #[serde(default)]
    pub grader_id: Option<GraderId>,
    /// That grader's name when the result came (set by the coordinator).
    #[serde(default)]
    pub grader_name: Option<String>,
    /// `server_version` of the grader's PostgreSQL.
    #[serde(default)]
    pub postgres_version: Option<String>,
    /// Timed rounds run (each a student run and a reference run; for an
    /// init, one reference run), warm-ups not counted.
    #[serde(default)]
    pub rounds: u32,
    /// Rounds discarded as stalled (both sides slowed together).
    #[serde(default)]
    pub discarded: u32,
    /// Median of the student's kept runs.
    #[serde(default)]
    pub student_median_ms: Option<f64>,
    /// Fastest student run.
    #[serde(default)]
    pub student_min_ms: Option<f64>,
    /// Median of the reference's kept runs.
    #[serde(default)]
    pub reference_median_ms: Option<f64>,
    /// Fastest reference run.
    #[serde(default)]
    pub reference_min_ms: Option<f64>,
    /// Median of the pairwise student/reference ratios, and its 95 %
    /// confidence interval.
    #[serde(default)]
    pub ratio: Option<f64>,
    #[serde(default)]
    pub ratio_low: Option<f64>,
    #[serde(default)]
    pub ratio_high: Option<f64>,
}

impl CaseAudit {
    /// Records that the result came from `grader_id` named `grader_name`,
    /// whatever the grader itself wrote there.
    pub fn stamp(&mut self, grader_id: GraderId, grader_name: &str) {
        self.grader_id = Some(grader_id);
        self.grader_name = Some(grader_name.to_string());
    }
}

/// Stamps `audit` (made empty when the grader sent none) with the grader.
pub fn stamp(audit: &mut Option<CaseAudit>, grader_id: GraderId, grader_name: &str) {
    audit
        .get_or_insert_with(CaseAudit::default)
        .stamp(grader_id, grader_name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamping_replaces_what_the_grader_claimed() {
        let claimed = GraderId::new_v7();
        let mut audit = Some(CaseAudit {
            grader_id: Some(claimed),
            grader_name: Some("someone else".into()),
            postgres_version: Some("17.2".into()),
            rounds: 3,
            ..CaseAudit::default()
        });
        let real = GraderId::new_v7();
        stamp(&mut audit, real, "lab-1");
        let audit = audit.unwrap();
        assert_eq!(audit.grader_id, Some(real));
        assert_eq!(audit.grader_name.as_deref(), Some("lab-1"));
        assert_eq!(audit.postgres_version.as_deref(), Some("17.2"));
        let mut missing = None;
        stamp(&mut missing, real, "lab-1");
        assert_eq!(missing.unwrap().grader_id, Some(real));
    }
}
