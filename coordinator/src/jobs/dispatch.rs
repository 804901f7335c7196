//! The long-poll: graders wait for a job in their lanes and are woken when
//! one is queued; with affinity, a job of a bundle wakes a grader that
//! holds it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures_util::future::select_all;
use sqlarena_common::{GraderState, Lane};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Jobs, JobsResult};
use crate::metrics::Metrics;
use crate::store::affinity::Affinity;
use crate::store::{Grader, Job};

/// Wakes long-polling lease requests when a job is queued in their lanes.
///
/// Within one coordinator a queued job wakes a waiter at once. Jobs queued by
/// another coordinator sharing the store are found by re-polling every
/// `poll_interval` (short when several coordinators may share the store).
///
/// With affinity, a job whose bundle a waiting grader holds wakes that
/// grader only: another grader would find the job reserved and wait
/// anyway. When no holder is waiting, a waiter of the lane is woken as
/// before (it takes the job, or learns when the reservation ends).
pub struct Dispatcher {
    lanes: [Notify; 3],
    poll_interval: Duration,
    /// Long polls waiting now, by the bundles their graders hold.
    holders: Mutex<HashMap<String, Arc<Holders>>>,
}

/// The long polls waiting now whose grader holds one bundle.
#[derive(Default)]
struct Holders {
    wakeup: Notify,
    waiting: AtomicUsize,
}

/// A long poll's registration as a holder of its grader's bundles, for as
/// long as it waits.
pub struct Holding<'a> {
    dispatcher: &'a Dispatcher,
    bundles: Vec<(String, Arc<Holders>)>,
}

impl Holding<'_> {
    /// Wake-ups for a job of any of the bundles.
    fn notified(&self) -> impl Iterator<Item = Notified<'_>> {
        self.bundles
            .iter()
            .map(|(_, holders)| holders.wakeup.notified())
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        let mut holders = self
            .dispatcher
            .holders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (bundle, entry) in self.bundles.drain(..) {
            if entry.waiting.fetch_sub(1, Ordering::SeqCst) == 1 {
                holders.remove(&bundle);
            }
        }
    }
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
            holders: Mutex::default(),
        }
    }

    fn lane(&self, lane: Lane) -> &Notify {
        &self.lanes[lane.priority() as usize]
    }

    /// Wakes one waiter of `lane` (or lets the next one through at once).
    pub fn notify(&self, lane: Lane) {
        self.lane(lane).notify_one();
    }

    /// Wakes a waiting grader for a job queued on `lane` that needs
    /// `bundle`: one that holds it if one waits, else any waiter of the lane.
    pub fn notify_job(&self, lane: Lane, bundle: Option<&str>) {
        let holders = bundle.and_then(|bundle| {
            let holders = self
                .holders
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            holders.get(bundle).cloned()
        });
        match holders {
            Some(holders) if holders.waiting.load(Ordering::SeqCst) > 0 => {
                holders.wakeup.notify_one();
            }
            _ => self.notify(lane),
        }
    }

    /// Registers a long poll as waiting with `bundles`, until the returned
    /// registration is dropped.
    fn hold(&self, bundles: &[String]) -> Holding<'_> {
        let mut holders = self
            .holders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let bundles = bundles
            .iter()
            .map(|bundle| {
                let entry = Arc::clone(holders.entry(bundle.clone()).or_default());
                entry.waiting.fetch_add(1, Ordering::SeqCst);
                (bundle.clone(), entry)
            })
            .collect();
        Holding {
            dispatcher: self,
            bundles,
        }
    }
}

/// What one look at the queue found.
struct Claimed {
    jobs: Vec<Job>,
    /// When a job the grader passed over (reserved for holders of its
    /// bundle) opens to it.
    reserved_until: Option<chrono::DateTime<Utc>>,
}

impl Jobs {
    /// Waits up to `wait` for a job in the grader's lanes and leases it to
    /// the grader. Returns `None` when nothing came, the grader is draining
    /// (then only after the wait, so a grader that ignores the drain flag
    /// does not spin), or the coordinator is shutting down. `reported`:
    /// the bundles the grader says it holds, if it says.
    ///
    /// # Errors
    /// Store failures.
    pub async fn lease_next(
        &self,
        grader: &Grader,
        wait: Duration,
        reported: Option<Vec<String>>,
    ) -> JobsResult<Option<Job>> {
        Ok(self.lease_up_to(grader, 1, wait, reported).await?.pop())
    }

    /// Waits up to `wait` for jobs in the grader's lanes and leases up to
    /// `max` of them to the grader at once (as many as are queued then, by
    /// lane priority and age, or by affinity: see
    /// [`crate::store::affinity`]). Empty as [`Jobs::lease_next`] answers
    /// `None`.
    ///
    /// # Errors
    /// Store failures.
    pub async fn lease_up_to(
        &self,
        grader: &Grader,
        max: u32,
        wait: Duration,
        reported: Option<Vec<String>>,
    ) -> JobsResult<Vec<Job>> {
        let deadline = Instant::now() + wait;
        if grader.state != GraderState::Alive || max == 0 {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.shutdown.cancelled() => {}
            }
            return Ok(Vec::new());
        }
        let affinity = match self.config.affinity {
            Some(settings) => Some(self.affinity_of(grader, reported, settings).await?),
            None => None,
        };
        let dispatcher = &self.dispatcher;
        let holding = affinity
            .as_ref()
            .map(|affinity| dispatcher.hold(&affinity.held));
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
            let mut wakeups: Vec<Pin<Box<Notified<'_>>>> = grader
                .lanes
                .iter()
                .map(|lane| dispatcher.lane(*lane).notified())
                .chain(holding.iter().flat_map(Holding::notified))
                .map(Box::pin)
                .collect();
            for wakeup in &mut wakeups {
                wakeup.as_mut().enable();
            }
            let claimed = self.claim(grader, max, affinity.as_ref()).await?;
            if !claimed.jobs.is_empty() {
                for _ in &claimed.jobs {
                    Metrics::incr(&self.metrics.leases_granted);
                }
                return Ok(claimed.jobs);
            }
            let now = Instant::now();
            if now >= deadline || grader.lanes.is_empty() {
                return Ok(Vec::new());
            }
            let mut tick = (deadline - now).min(dispatcher.poll_interval);
            if let Some(opens_at) = claimed.reserved_until {
                // Look again when the first reservation passed over ends.
                let until_open = (opens_at - Utc::now()).to_std().unwrap_or_default();
                tick = tick.min(until_open + Duration::from_millis(1));
            }
            tokio::select! {
                _ = select_all(wakeups) => {}
                _ = tokio::time::sleep(tick) => {}
                _ = self.shutdown.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    /// One look at the queue: by affinity when it is on.
    async fn claim(
        &self,
        grader: &Grader,
        max: u32,
        affinity: Option<&Affinity>,
    ) -> JobsResult<Claimed> {
        let now = Utc::now();
        Ok(match affinity {
            Some(affinity) => {
                let claim = self
                    .store
                    .claim_jobs_by_affinity(grader.id, &grader.lanes, max, affinity, now)
                    .await?;
                Claimed {
                    jobs: claim.jobs,
                    reserved_until: claim.reserved_until,
                }
            }
            None => Claimed {
                jobs: self
                    .store
                    .claim_jobs(grader.id, &grader.lanes, max, now)
                    .await?,
                reserved_until: None,
            },
        })
    }
}
