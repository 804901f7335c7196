//! The cluster's own history, one row per minute and lane, kept by the
//! coordinator so that the console's overview draws the last hour from 60
//! small rows instead of reading the jobs table (Flower's console loses its
//! history on restart; this one survives it).
//!
//! Each coordinator adds what it saw during a minute (jobs that ended,
//! their queued-to-finished time) and samples the queue depth once a
//! minute; with several coordinators on one MongoDB, their additions sum.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlarena_common::Lane;

use super::StoreResult;

/// What happened on one lane during one minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinuteSample {
    /// The start of the minute (seconds and below are zero).
    pub minute: DateTime<Utc>,
    pub lane: Lane,
    /// Jobs that ended DONE in the minute.
    pub completed: u64,
    /// Jobs that ended FAILED in the minute.
    pub failed: u64,
    /// Sum of the queued-to-finished times of those jobs, in milliseconds.
    pub latency_ms_sum: u64,
    /// How many times `latency_ms_sum` adds up.
    pub latency_count: u64,
    /// Jobs queued on the lane when the minute was sampled (the last
    /// sample wins); `None` when no sample was taken.
    pub queue_depth: Option<u64>,
}

/// The start of the minute `at` falls in.
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = at.timestamp().div_euclid(60) * 60;
    DateTime::from_timestamp(seconds, 0).unwrap_or(at)
}

/// The per-minute history of the cluster.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Adds `sample`'s counts to its (minute, lane) row, creating it, and
    /// sets the row's queue depth when the sample has one.
    async fn record_minute(&self, sample: MinuteSample) -> StoreResult<()>;

    /// Lists the rows of the minutes at or after `since`, oldest first.
    async fn list_minutes(&self, since: DateTime<Utc>) -> StoreResult<Vec<MinuteSample>>;

    /// Deletes the rows of the minutes before `before`; returns how many.
    async fn delete_minutes_before(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}
