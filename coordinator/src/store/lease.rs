//! The lease decisions, written once for every backend: a new lease, the
//! fence a grader's report must pass (ownership, then the lease being the
//! job's current one), whether a heartbeat's lease is still held, and what
//! becomes of a job whose lease ends without a result (requeued, or FAILED
//! once out of tries). Each is a pure function of the job as read and, where
//! time matters, an explicit `now`; the backends only persist what they
//! decide, with writes conditional on the lease they read.

use chrono::{DateTime, Utc};
use sqlarena_common::{GraderId, JobId, JobKind, JobOutcome, JobState, LeaseId};

use super::{Job, Lease, StoreError, StoreResult};

/// The lease a grader reports under: the job, the lease id it was given,
/// and the grader itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLease {
    pub job_id: JobId,
    pub lease_id: LeaseId,
    pub grader_id: GraderId,
}

/// Whether a failure its grader reported may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A fault of the grader or its machine: requeued while tries are left.
    IfTriesLeft,
    /// Trying again cannot help (the payload itself is bad): FAILED now.
    Never,
}

/// Whether taking a lease back counts as one of the job's tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryCount {
    /// The grader died or the deadline passed: the try counts, and a job
    /// out of tries FAILS.
    Counts,
    /// A clean release (the grader left or was cut off): the try is given
    /// back and the job requeued.
    Refunded,
}

/// What becomes of a LEASED job whose lease ends without a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEnd {
    /// Back to QUEUED with `tries`; `error`, when given, becomes the job's
    /// last error.
    Requeue { tries: u32, error: Option<String> },
    /// FAILED with `error`.
    Fail { error: String },
}

/// What a completion under a lease that passed the fence does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionCheck {
    /// Record the outcome: the job becomes DONE.
    Record,
    /// The same lease already completed the job: change nothing.
    AlreadyRecorded,
}

/// A new lease of a job with `timeout_ms` for `grader_id`, from `now`.
pub fn new_lease(timeout_ms: u64, grader_id: GraderId, now: DateTime<Utc>) -> Lease {
    let timeout = i64::try_from(timeout_ms).unwrap_or(i64::MAX);
    Lease {
        lease_id: LeaseId::new_v7(),
        grader_id,
        expires_at: now + chrono::Duration::milliseconds(timeout),
    }
}

/// Checks a grader's report against the job as read: refused when the
/// lease is another grader's, or is not the job's current LEASED lease
/// (then the message says what happened to it).
///
/// # Errors
/// `StaleLease`, naming the job.
pub fn check_fence(job: &Job, held: HeldLease) -> StoreResult<()> {
    check_owner(job, held)?;
    let current = job.lease.map(|lease| lease.lease_id);
    if job.state == JobState::Leased && current == Some(held.lease_id) {
        return Ok(());
    }
    let (id, lease_id) = (job.id, held.lease_id);
    let why = match job.state {
        JobState::Queued => format!("job {id} is QUEUED again: lease {lease_id} was taken back"),
        JobState::Cancelled => format!("job {id} was CANCELLED"),
        state if current == Some(lease_id) => {
            format!("job {id} is already {state} under this lease")
        }
        state => format!("job {id} is {state} under another lease"),
    };
    Err(StoreError::StaleLease(why))
}

/// Refuses a report under a lease id the job holds for another grader.
fn check_owner(job: &Job, held: HeldLease) -> StoreResult<()> {
    match job.lease {
        Some(lease) if lease.lease_id == held.lease_id && lease.grader_id != held.grader_id => {
            Err(StoreError::StaleLease(format!(
                "lease {} of job {} is not this grader's",
                held.lease_id, job.id
            )))
        }
        _ => Ok(()),
    }
}

/// Checks a completion: the fence, the outcome's kind against the job's,
/// and whether the same lease already completed the job.
///
/// # Errors
/// `StaleLease` as [`check_fence`]; `Invalid` for an outcome of the wrong
/// kind.
pub fn check_completion(
    job: &Job,
    held: HeldLease,
    outcome: &JobOutcome,
) -> StoreResult<CompletionCheck> {
    check_owner(job, held)?;
    if outcome_kind(outcome) != job.kind {
        return Err(StoreError::Invalid(format!(
            "job {} is a {} job: post an outcome of that kind",
            job.id, job.kind
        )));
    }
    let same_lease = job.lease.map(|lease| lease.lease_id) == Some(held.lease_id);
    if job.state == JobState::Done && same_lease {
        return Ok(CompletionCheck::AlreadyRecorded);
    }
    check_fence(job, held)?;
    Ok(CompletionCheck::Record)
}

/// The kind of job an outcome is for.
pub fn outcome_kind(outcome: &JobOutcome) -> JobKind {
    match outcome {
        JobOutcome::Init(_) => JobKind::Init,
        JobOutcome::Attempt(_) => JobKind::Attempt,
    }
}

/// True while `grader_id` still holds `lease_id` on `job` and no cancel
/// was requested (a heartbeat's grader keeps running it).
pub fn still_held(job: &Job, lease_id: LeaseId, grader_id: GraderId) -> bool {
    job.state == JobState::Leased
        && !job.cancel_requested
        && job
            .lease
            .is_some_and(|lease| lease.lease_id == lease_id && lease.grader_id == grader_id)
}

/// What a failure its grader reported makes of a job that passed the
/// fence: requeued when it may be retried and tries are left, else FAILED.
pub fn after_failure(job: &Job, error: &str, retry: Retry) -> LeaseEnd {
    if retry == Retry::IfTriesLeft && job.tries < job.max_tries {
        return LeaseEnd::Requeue {
            tries: job.tries,
            error: Some(error.to_owned()),
        };
    }
    let error = match retry {
        Retry::IfTriesLeft => gave_up(job.tries, error),
        Retry::Never => error.to_owned(),
    };
    LeaseEnd::Fail { error }
}

/// What taking back a LEASED job's lease makes of it: with the try
/// counted, requeued with `reason` as its last error or FAILED once out of
/// tries; with the try refunded, requeued with one try less.
pub fn after_take_back(job: &Job, tries: TryCount, reason: &str) -> LeaseEnd {
    match tries {
        TryCount::Counts if job.tries >= job.max_tries => LeaseEnd::Fail {
            error: gave_up(job.tries, reason),
        },
        TryCount::Counts => LeaseEnd::Requeue {
            tries: job.tries,
            error: Some(reason.to_owned()),
        },
        TryCount::Refunded => LeaseEnd::Requeue {
            tries: job.tries.saturating_sub(1),
            error: None,
        },
    }
}

/// What the expiry of its lease at `now` makes of a job: `None` while it
/// is not LEASED or its deadline has not passed.
pub fn after_expiry(job: &Job, now: DateTime<Utc>) -> Option<LeaseEnd> {
    let lease = job.lease?;
    if job.state != JobState::Leased || lease.expires_at >= now {
        return None;
    }
    let reason = format!(
        "the job ran past its {} deadline",
        human_duration(job.timeout_ms)
    );
    Some(after_take_back(job, TryCount::Counts, &reason))
}

/// Formats a job timeout for people: `30 s`, `1.5 s`, `250 ms`.
fn human_duration(timeout_ms: u64) -> String {
    if timeout_ms.is_multiple_of(1000) {
        format!("{} s", timeout_ms / 1000)
    } else if timeout_ms >= 1000 {
        format!("{:.1} s", timeout_ms as f64 / 1000.0)
    } else {
        format!("{timeout_ms} ms")
    }
}

/// Explains why a job out of tries FAILED: "gave up after 3 tries: REASON".
fn gave_up(tries: u32, reason: &str) -> String {
    let plural = if tries == 1 { "try" } else { "tries" };
    format!("gave up after {tries} {plural}: {reason}")
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use sqlarena_common::{
        AttemptId, AttemptOutcome, AttemptPayload, ChallengeId, InitOutcome, JobPayload, Lane,
        TestCaseId, UserId,
    };
    use uuid::Uuid;

    use super::*;

    /// A fresh id of whichever type the call needs.
    fn new_id<T: From<Uuid>>() -> T {
        Uuid::now_v7().into()
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
    }

    /// A grading job leased at second 0 for 30 s to `grader`, on its
    /// `tries`th try of 3.
    fn leased(grader: GraderId, tries: u32) -> (Job, HeldLease) {
        let lease = new_lease(30_000, grader, at(0));
        let job = Job {
            id: new_id(),
            seq: 1,
            kind: JobKind::Attempt,
            lane: Lane::Fast,
            payload: JobPayload::Attempt(AttemptPayload {
                attempt_id: AttemptId(1),
                user_id: UserId(1),
                challenge_id: ChallengeId(1),
                challenge_name: "c".into(),
                challenge_version: 1,
                version_hash: String::new(),
                query: "SELECT 1".into(),
                times_to_run: 1,
                test_case_ids: vec![TestCaseId(1)],
                run_item: None,
            }),
            state: JobState::Leased,
            tries,
            max_tries: 3,
            lease: Some(lease),
            timeout_ms: 30_000,
            progress: Vec::new(),
            outcome: None,
            error: None,
            applied: true,
            cancel_requested: false,
            created_at: at(-1),
            leased_at: Some(at(0)),
            finished_at: None,
        };
        let held = HeldLease {
            job_id: job.id,
            lease_id: lease.lease_id,
            grader_id: grader,
        };
        (job, held)
    }

    fn attempt_outcome() -> JobOutcome {
        JobOutcome::Attempt(AttemptOutcome {
            cases: Vec::new(),
            error: None,
        })
    }

    fn stale_message(result: StoreResult<impl std::fmt::Debug>) -> String {
        match result {
            Err(StoreError::StaleLease(message)) => message,
            other => panic!("expected a stale lease, got {other:?}"),
        }
    }

    #[test]
    fn a_new_lease_runs_for_the_job_timeout() {
        let grader = new_id();
        let lease = new_lease(1_500, grader, at(0));
        assert_eq!(lease.grader_id, grader);
        assert_eq!(
            lease.expires_at,
            at(0) + chrono::Duration::milliseconds(1_500)
        );
        assert_ne!(new_lease(1_500, grader, at(0)).lease_id, lease.lease_id);
    }

    #[test]
    fn the_fence_passes_only_the_current_lease_of_its_own_grader() {
        let grader = new_id();
        let (job, held) = leased(grader, 1);
        check_fence(&job, held).unwrap();

        let thief = HeldLease {
            grader_id: new_id(),
            ..held
        };
        assert!(stale_message(check_fence(&job, thief)).contains("is not this grader's"));

        let forged = HeldLease {
            lease_id: new_id(),
            ..held
        };
        assert!(stale_message(check_fence(&job, forged)).contains("under another lease"));

        let requeued = Job {
            state: JobState::Queued,
            lease: None,
            ..job.clone()
        };
        assert!(stale_message(check_fence(&requeued, held)).contains("QUEUED again"));
        let cancelled = Job {
            state: JobState::Cancelled,
            ..job.clone()
        };
        assert!(stale_message(check_fence(&cancelled, held)).contains("CANCELLED"));
        let done = Job {
            state: JobState::Done,
            ..job
        };
        assert!(stale_message(check_fence(&done, held)).contains("already DONE under this lease"));
    }

    #[test]
    fn a_completion_checks_the_owner_then_the_kind_then_repeats() {
        let grader = new_id();
        let (job, held) = leased(grader, 1);
        assert_eq!(
            check_completion(&job, held, &attempt_outcome()).unwrap(),
            CompletionCheck::Record
        );
        let wrong_kind = JobOutcome::Init(InitOutcome {
            expected: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        });
        assert!(matches!(
            check_completion(&job, held, &wrong_kind),
            Err(StoreError::Invalid(message)) if message.contains("post an outcome of that kind")
        ));
        let thief = HeldLease {
            grader_id: new_id(),
            ..held
        };
        assert!(stale_message(check_completion(&job, thief, &wrong_kind))
            .contains("is not this grader's"));
        let done = Job {
            state: JobState::Done,
            ..job
        };
        assert_eq!(
            check_completion(&done, held, &attempt_outcome()).unwrap(),
            CompletionCheck::AlreadyRecorded
        );
    }

    #[test]
    fn a_heartbeat_lease_is_held_until_cancelled_or_taken() {
        let grader = new_id();
        let (job, held) = leased(grader, 1);
        assert!(still_held(&job, held.lease_id, grader));
        assert!(!still_held(&job, held.lease_id, new_id()));
        assert!(!still_held(&job, new_id(), grader));
        let cancelling = Job {
            cancel_requested: true,
            ..job.clone()
        };
        assert!(!still_held(&cancelling, held.lease_id, grader));
        let requeued = Job {
            state: JobState::Queued,
            ..job
        };
        assert!(!still_held(&requeued, held.lease_id, grader));
    }

    #[test]
    fn a_reported_failure_requeues_while_tries_are_left_and_retryable() {
        let (job, _) = leased(new_id(), 2);
        assert_eq!(
            after_failure(&job, "flaky", Retry::IfTriesLeft),
            LeaseEnd::Requeue {
                tries: 2,
                error: Some("flaky".into())
            }
        );
        assert_eq!(
            after_failure(&job, "bad query", Retry::Never),
            LeaseEnd::Fail {
                error: "bad query".into()
            }
        );
        let (last, _) = leased(new_id(), 3);
        assert_eq!(
            after_failure(&last, "flaky", Retry::IfTriesLeft),
            LeaseEnd::Fail {
                error: "gave up after 3 tries: flaky".into()
            }
        );
    }

    #[test]
    fn a_take_back_counts_the_try_or_refunds_it() {
        let (job, _) = leased(new_id(), 1);
        assert_eq!(
            after_take_back(&job, TryCount::Counts, "grader g1 stopped heartbeating"),
            LeaseEnd::Requeue {
                tries: 1,
                error: Some("grader g1 stopped heartbeating".into())
            }
        );
        assert_eq!(
            after_take_back(&job, TryCount::Refunded, "grader g1 deregistered"),
            LeaseEnd::Requeue {
                tries: 0,
                error: None
            }
        );
        let (last, _) = leased(new_id(), 3);
        assert_eq!(
            after_take_back(&last, TryCount::Counts, "grader g1 stopped heartbeating"),
            LeaseEnd::Fail {
                error: "gave up after 3 tries: grader g1 stopped heartbeating".into()
            }
        );
        assert!(matches!(
            after_take_back(&last, TryCount::Refunded, "x"),
            LeaseEnd::Requeue { tries: 2, .. }
        ));
    }

    #[test]
    fn a_lease_expires_only_after_its_deadline() {
        let (job, _) = leased(new_id(), 1);
        assert_eq!(after_expiry(&job, at(29)), None);
        assert_eq!(
            after_expiry(&job, at(30)),
            None,
            "the deadline itself is in time"
        );
        assert_eq!(
            after_expiry(&job, at(31)),
            Some(LeaseEnd::Requeue {
                tries: 1,
                error: Some("the job ran past its 30 s deadline".into())
            })
        );
        let finished = Job {
            state: JobState::Done,
            ..job
        };
        assert_eq!(after_expiry(&finished, at(31)), None);
    }

    #[test]
    fn durations_and_give_ups_read_like_people_write_them() {
        assert_eq!(human_duration(30_000), "30 s");
        assert_eq!(human_duration(1_500), "1.5 s");
        assert_eq!(human_duration(250), "250 ms");
        assert_eq!(gave_up(1, "x"), "gave up after 1 try: x");
        assert_eq!(gave_up(3, "x"), "gave up after 3 tries: x");
    }
}
