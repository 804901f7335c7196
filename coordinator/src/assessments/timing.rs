//! Deadlines: when a session ends, when an assessment closes for a student,
//! and when results may be shown. All pure functions of the records and a
//! clock, so the deadline holds whether or not anyone calls at that moment.

use chrono::{DateTime, Duration, Utc};
use sqlarena_common::assessments::TimeOverride;
use sqlarena_common::UserId;

use crate::store::assessments::{Assessment, AssessmentSession};

/// A student's override, if any.
pub fn override_of(assessment: &Assessment, user_id: UserId) -> Option<&TimeOverride> {
    assessment
        .overrides
        .iter()
        .find(|time| time.user_id == user_id)
}

/// When the assessment closes for `user_id`: their own close date or the
/// assessment's, moved by the extension for everyone.
pub fn closes_at_for(assessment: &Assessment, user_id: UserId) -> DateTime<Utc> {
    let own = override_of(assessment, user_id).and_then(|time| time.closes_at);
    own.unwrap_or(assessment.spec.closes_at) + Duration::seconds(assessment.extension_s)
}

/// The session's deadline: `min(start + limit x scale + extra, close date)`
/// (the student's override giving scale, extra and close date), then the
/// staff's extensions for everyone and for this session.
pub fn deadline(assessment: &Assessment, session: &AssessmentSession) -> DateTime<Utc> {
    let time = override_of(assessment, session.user_id);
    let scale = time.and_then(|time| time.time_scale).unwrap_or(1.0);
    let extra_s = time.and_then(|time| time.extra_s).unwrap_or(0);
    let limit_ms = (f64::from(assessment.spec.time_limit_s) * scale * 1000.0).round() as i64
        + i64::from(extra_s) * 1000;
    let own_close = time
        .and_then(|time| time.closes_at)
        .unwrap_or(assessment.spec.closes_at);
    let base = (session.started_at + Duration::milliseconds(limit_ms)).min(own_close);
    base + Duration::seconds(assessment.extension_s + session.extension_s)
}

/// True when the session takes no more submissions at `at`.
pub fn is_closed(assessment: &Assessment, session: &AssessmentSession, at: DateTime<Utc>) -> bool {
    session.finished_at.is_some() || at >= deadline(assessment, session)
}

/// When students may see results under `feedback: after_close`: once the
/// assessment has closed for everyone (the latest close date of any
/// override counts, so nobody still working learns from a classmate).
pub fn results_released_at(assessment: &Assessment) -> DateTime<Utc> {
    let latest = assessment
        .overrides
        .iter()
        .filter_map(|time| time.closes_at)
        .fold(assessment.spec.closes_at, DateTime::max);
    latest + Duration::seconds(assessment.extension_s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlarena_common::assessments::{AssessmentSpec, Feedback, Scoreboard, Selection, Zone};
    use sqlarena_common::ChallengeId;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn assessment(time_limit_s: u32, closes: i64) -> Assessment {
        Assessment {
            id: 1,
            rev: 1,
            created_user_id: UserId(1),
            spec: AssessmentSpec {
                name: "exam".into(),
                description: None,
                zones: vec![Zone {
                    pool: vec![ChallengeId(1)],
                    pick: 1,
                    points: 1.0,
                }],
                selection: Selection::Random,
                time_limit_s,
                opens_at: at(0),
                closes_at: at(closes),
                max_submissions: None,
                min_interval_s: None,
                feedback: Feedback::Immediate,
                scoreboard: Scoreboard::Hidden,
                policy: Default::default(),
                performance_credit: 0.0,
            },
            overrides: Vec::new(),
            extension_s: 0,
            started: true,
            log: Vec::new(),
            created_at: at(0),
        }
    }

    fn session(user_id: i64, started: i64) -> AssessmentSession {
        let user_id = UserId(user_id);
        AssessmentSession {
            id: 1,
            rev: 1,
            assessment_id: 1,
            user_id,
            seed: 0,
            questions: Vec::new(),
            started_at: at(started),
            finished_at: None,
            extension_s: 0,
            submissions: Vec::new(),
            log: Vec::new(),
        }
    }

    #[test]
    fn deadlines_take_the_limit_overrides_the_close_date_and_extensions() {
        let mut exam = assessment(3600, 10_000);
        assert_eq!(deadline(&exam, &session(5, 100)), at(3700));
        // A late starter sees a full timer but is cut off at the close date.
        assert_eq!(deadline(&exam, &session(5, 9_000)), at(10_000));
        exam.overrides.push(TimeOverride {
            user_id: UserId(5),
            extra_s: Some(60),
            time_scale: Some(1.5),
            closes_at: Some(at(20_000)),
        });
        assert_eq!(deadline(&exam, &session(5, 100)), at(100 + 5400 + 60));
        assert_eq!(deadline(&exam, &session(5, 18_000)), at(20_000));
        assert_eq!(
            deadline(&exam, &session(6, 100)),
            at(3700),
            "others unchanged"
        );
        exam.extension_s = 30;
        let mut extended = session(6, 100);
        extended.extension_s = 15;
        assert_eq!(deadline(&exam, &extended), at(3745));
        assert_eq!(closes_at_for(&exam, UserId(6)), at(10_030));
        assert_eq!(results_released_at(&exam), at(20_030));
        assert!(!is_closed(&exam, &extended, at(3744)));
        assert!(is_closed(&exam, &extended, at(3745)));
        extended.finished_at = Some(at(200));
        assert!(is_closed(&exam, &extended, at(201)));
    }
}
