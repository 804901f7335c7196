//! The long-poll: graders wait for a job in their lanes and are woken when
//! one is queued.

use std::pin::Pin;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::select_all;
use sqlarena_common::{GraderState, Lane};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Jobs, JobsResult};
use crate::metrics::Metrics;
use crate::store::{Grader, Job};

/// Wakes long-polling lease requests when a job is queued in their lanes.
///
/// Within one coordinator a queued job wakes a waiter at once. Jobs queued by
/// another coordinator sharing the store are found by re-polling every
/// `poll_interval` (short when several coordinators may share the store).
pub struct Dispatcher {
    lanes: [Notify; 3],
    poll_interval: Duration,
}

impl Dispatcher {
    /// Creates a dispatcher; `multi_coordinator` shortens the re-poll interval.
    pub fn new(multi_coordinator: bool) -> Dispatcher {
        let poll_interval = if multi_coordinator {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(500)
        };
        Dispatcher {
            lanes: [Notify::new(), Notify::new(), Notify::new()],
            poll_interval,
        }
    }

    fn lane(&self, lane: Lane) -> &Notify {
        &self.lanes[lane.priority() as usize]
    }

    /// Wakes one waiter of `lane` (or lets the next one through at once).
    pub fn notify(&self, lane: Lane) {
        self.lane(lane).notify_one();
    }
}

impl Jobs {
    /// Waits up to `wait` for a job in the grader's lanes and leases it to
    /// the grader. Returns `None` when nothing came, the grader is draining
    /// (then only after the wait, so a grader that ignores the drain flag
    /// does not spin), or the coordinator is shutting down.
    ///
    /// # Errors
    /// Store failures.
    pub async fn lease_next(&self, grader: &Grader, wait: Duration) -> JobsResult<Option<Job>> {
        Ok(self.lease_up_to(grader, 1, wait).await?.pop())
    }

    /// Waits up to `wait` for jobs in the grader's lanes and leases up to
    /// `max` of them to the grader at once (as many as are queued then, by
    /// lane priority and age). Empty as [`Jobs::lease_next`] answers `None`.
    ///
    /// # Errors
    /// Store failures.
    pub async fn lease_up_to(
        &self,
        grader: &Grader,
        max: u32,
        wait: Duration,
    ) -> JobsResult<Vec<Job>> {
        let deadline = Instant::now() + wait;
        if grader.state != GraderState::Alive || max == 0 {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.shutdown.cancelled() => {}
            }
            return Ok(Vec::new());
        }
        let dispatcher = &self.dispatcher;
        let mut woken = false;
        loop {
            // The grader was ALIVE on entry; after a wait it may have been
            // drained or declared dead, and then it takes nothing new.
            if woken {
                let current = self.store.get_grader(grader.id).await?;
                if current.is_none_or(|current| current.state != GraderState::Alive) {
                    return Ok(Vec::new());
                }
            }
            woken = true;
            // Register for wake-ups before looking, so a job queued between
            // the look and the wait is not missed.
            let mut wakeups: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> = grader
                .lanes
                .iter()
                .map(|lane| Box::pin(dispatcher.lane(*lane).notified()))
                .collect();
            for wakeup in &mut wakeups {
                wakeup.as_mut().enable();
            }
            let jobs = self
                .store
                .claim_jobs(grader.id, &grader.lanes, max, Utc::now())
                .await?;
            if !jobs.is_empty() {
                for _ in &jobs {
                    Metrics::incr(&self.metrics.leases_granted);
                }
                return Ok(jobs);
            }
            let now = Instant::now();
            if now >= deadline || grader.lanes.is_empty() {
                return Ok(Vec::new());
            }
            let tick = (deadline - now).min(dispatcher.poll_interval);
            tokio::select! {
                _ = select_all(wakeups) => {}
                _ = tokio::time::sleep(tick) => {}
                _ = self.shutdown.cancelled() => return Ok(Vec::new()),
            }
        }
    }
}
