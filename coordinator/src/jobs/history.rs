//! The cluster's history as the console's overview charts it: jobs that
//! ended (DONE or FAILED) and their queued-to-finished time, tallied in
//! memory as results are recorded (a lock and a few additions: nothing on
//! the grading path waits for the store), then added to the store's
//! per-minute rows once a minute with a sample of each lane's queue depth.
//!
//! A coordinator that dies loses at most the minute it had not written;
//! one that stops cleanly writes it on the way out.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlarena_common::{JobState, Lane};

use super::{Jobs, JobsResult};
use crate::store::history::{minute_of, MinuteSample};
use crate::store::Job;

/// How long the per-minute rows are kept.
pub const HISTORY_RETENTION: chrono::Duration = chrono::Duration::days(7);

/// The tallies of minutes not yet written, by (minute, lane).
#[derive(Debug, Default)]
pub struct History {
    pending: Mutex<BTreeMap<(DateTime<Utc>, Lane), MinuteSample>>,
}

impl History {
    /// Counts a job that just ended, in the minute it ended.
    pub fn record_end(&self, job: &Job) {
        let failed = match job.state {
            JobState::Done => false,
            JobState::Failed => true,
            _ => return,
        };
        let finished_at = job.finished_at.unwrap_or_else(Utc::now);
        let latency_ms = (finished_at - job.created_at).num_milliseconds().max(0) as u64;
        let minute = minute_of(finished_at);
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let sample = pending
            .entry((minute, job.lane))
            .or_insert_with(|| empty(minute, job.lane));
        if failed {
            sample.failed += 1;
        } else {
            sample.completed += 1;
        }
        sample.latency_ms_sum += latency_ms;
        sample.latency_count += 1;
    }

    /// The tallies not yet written (the overview adds them to the store's).
    pub fn pending(&self) -> Vec<MinuteSample> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pending.values().copied().collect()
    }

    /// Takes every tally out, to be written.
    fn take(&self) -> Vec<MinuteSample> {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::take(&mut *pending).into_values().collect()
    }

    /// Puts tallies back after a failed write (adding to newer ones).
    fn restore(&self, samples: Vec<MinuteSample>) {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for sample in samples {
            let kept = pending
                .entry((sample.minute, sample.lane))
                .or_insert_with(|| empty(sample.minute, sample.lane));
            kept.completed += sample.completed;
            kept.failed += sample.failed;
            kept.latency_ms_sum += sample.latency_ms_sum;
            kept.latency_count += sample.latency_count;
        }
    }
}

fn empty(minute: DateTime<Utc>, lane: Lane) -> MinuteSample {
    MinuteSample {
        minute,
        lane,
        completed: 0,
        failed: 0,
        latency_ms_sum: 0,
        latency_count: 0,
        queue_depth: None,
    }
}

/// How long after a minute's end its row is written (results recorded
/// just before the boundary have reached the tally by then).
const AFTER_MINUTE: Duration = Duration::from_secs(1);

impl Jobs {
    /// The tallies of this coordinator not yet written to the store.
    pub fn pending_history(&self) -> Vec<MinuteSample> {
        self.history.pending()
    }

    /// Writes the tallies and, when `depth_minute` is given, each lane's
    /// queue depth now as that minute's sample; deletes rows past
    /// [`HISTORY_RETENTION`].
    ///
    /// # Errors
    /// Store failures (the tallies are kept for the next pass).
    pub async fn write_history(&self, depth_minute: Option<DateTime<Utc>>) -> JobsResult<()> {
        let mut samples = self.history.take();
        if let Some(minute) = depth_minute {
            let stats = match self.store.lane_stats().await {
                Ok(stats) => stats,
                Err(error) => {
                    self.history.restore(samples);
                    return Err(error.into());
                }
            };
            for lane in stats {
                let at = samples
                    .iter()
                    .position(|sample| sample.minute == minute && sample.lane == lane.lane);
                let sample = match at {
                    Some(at) => &mut samples[at],
                    None => {
                        samples.push(empty(minute, lane.lane));
                        samples.last_mut().expect("just pushed")
                    }
                };
                sample.queue_depth = Some(lane.queued);
            }
        }
        let mut unwritten = Vec::new();
        let mut failure = None;
        for sample in samples {
            if failure.is_some() {
                unwritten.push(sample);
                continue;
            }
            if let Err(error) = self.store.record_minute(sample).await {
                unwritten.push(sample);
                failure = Some(error);
            }
        }
        if let Some(error) = failure {
            self.history.restore(unwritten);
            return Err(error.into());
        }
        self.store
            .delete_minutes_before(Utc::now() - HISTORY_RETENTION)
            .await?;
        Ok(())
    }

    /// Writes the history just after each minute ends, until shutdown, and
    /// once more on the way out.
    pub async fn run_history(self) {
        loop {
            let now = Utc::now();
            let next = minute_of(now) + chrono::Duration::minutes(1);
            let wait = (next - now).to_std().unwrap_or_default() + AFTER_MINUTE;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.shutdown.cancelled() => break,
            }
            if let Err(error) = self.write_history(Some(next)).await {
                tracing::warn!(%error, "writing the cluster history failed");
            }
        }
        if let Err(error) = self.write_history(None).await {
            tracing::warn!(%error, "writing the cluster history at shutdown failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_jobs_are_tallied_by_minute_and_lane() {
        let history = History::default();
        let at = DateTime::parse_from_rfc3339("2030-01-01T10:00:30Z")
            .unwrap()
            .with_timezone(&Utc);
        let job = |state: JobState, lane: Lane, latency_secs: i64| Job {
            id: sqlarena_common::JobId::new_v7(),
            seq: 1,
            kind: sqlarena_common::JobKind::Init,
            lane,
            payload: sqlarena_common::JobPayload::Init(sqlarena_common::InitPayload {
                challenge_id: sqlarena_common::ChallengeId(1),
                challenge_name: String::new(),
                version: 1,
                init: String::new(),
                solution: String::new(),
                times_to_run: 1,
                test_cases: Vec::new(),
            }),
            state,
            tries: 1,
            max_tries: 3,
            lease: None,
            timeout_ms: 1,
            progress: Vec::new(),
            outcome: None,
            error: None,
            applied: false,
            cancel_requested: false,
            created_at: at - chrono::Duration::seconds(latency_secs),
            leased_at: None,
            finished_at: Some(at),
        };
        history.record_end(&job(JobState::Done, Lane::Fast, 2));
        history.record_end(&job(JobState::Done, Lane::Fast, 4));
        history.record_end(&job(JobState::Failed, Lane::Fast, 6));
        history.record_end(&job(JobState::Cancelled, Lane::Slow, 1));
        let pending = history.pending();
        assert_eq!(pending.len(), 1);
        let fast = pending[0];
        assert_eq!(fast.minute, minute_of(at));
        assert_eq!((fast.completed, fast.failed), (2, 1));
        assert_eq!((fast.latency_ms_sum, fast.latency_count), (12_000, 3));
        let taken = history.take();
        assert!(history.pending().is_empty());
        history.restore(taken.clone());
        history.restore(taken);
        assert_eq!(history.pending()[0].completed, 4);
    }
}
