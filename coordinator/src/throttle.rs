//! Throttles in front of the password endpoints (login, registration,
//! password changes).
//!
//! Each attempt costs an argon2 hash (19 MiB, tens of milliseconds of CPU),
//! so two things are bounded:
//!
//! - **how often**: token buckets per client (peer IP; an IPv6 client is its
//!   /64) and per account (the email, lower-cased). An attempt takes a token
//!   from both; a successful sign-in gives the account's back, so only
//!   failures count against an account. An empty bucket answers 429 with
//!   `Retry-After`, before any hashing, after holding the request for
//!   `--auth-refusal-delay-ms` (at most the `Retry-After`): a script that
//!   ignores `Retry-After` gets about one reply a second per connection
//!   instead of thousands, so a flood cannot take the CPU that other
//!   requests need. A held request costs a sleeping task, nothing more.
//! - **how many at once**: [`HashGate`] runs at most `--max-concurrent-hashes`
//!   hashes and lets at most `--max-queued-hashes` more wait; anything
//!   beyond is refused at once with 503 and `Retry-After`, so memory stays
//!   bounded whatever the load.
//!
//! The buckets live in this process: several coordinators behind one
//! address each apply the limits (the store is not touched per attempt).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::auth::{self, HashMemory};
use crate::config::Config;
use crate::error::ApiError;

/// Most keys one [`RateLimiter`] tracks; beyond, new keys are refused until
/// old buckets refill (a flood of distinct emails cannot grow memory).
const MAX_KEYS: usize = 100_000;

/// Least time between two scans of a full table for refilled buckets, so
/// a flood of new keys against a full table costs no scan per request.
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);

/// Token buckets by key: `burst` tokens, refilled at `per_minute`.
#[derive(Debug)]
pub struct RateLimiter {
    what: &'static str,
    burst: f64,
    per_second: f64,
    max_keys: usize,
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    by_key: HashMap<String, Bucket>,
    /// When a full table was last scanned for refilled buckets.
    pruned_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A limiter allowing `burst` attempts at once and `per_minute` after
    /// that; `what` names the limit in refusals ("this client").
    pub fn new(what: &'static str, burst: u32, per_minute: u32) -> RateLimiter {
        RateLimiter {
            what,
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute.max(1)) / 60.0,
            max_keys: MAX_KEYS,
            buckets: Mutex::default(),
        }
    }

    /// Takes a token for `key`, or says how long until one is available.
    ///
    /// # Errors
    /// `TooManyRequests` with the wait in `Retry-After`.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), ApiError> {
        let mut buckets = lock(&self.buckets);
        let Buckets { by_key, pruned_at } = &mut *buckets;
        if by_key.len() >= self.max_keys && !by_key.contains_key(key) {
            if pruned_at.is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_INTERVAL) {
                // Full buckets hold nothing a fresh one would not.
                let (burst, per_second) = (self.burst, self.per_second);
                by_key.retain(|_, bucket| refilled(*bucket, now, burst, per_second) < burst);
                *pruned_at = Some(now);
            }
            if by_key.len() >= self.max_keys {
                return Err(self.refusal(PRUNE_INTERVAL));
            }
        }
        let bucket = by_key.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = refilled(*bucket, now, self.burst, self.per_second);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_second;
            Err(self.refusal(Duration::from_secs_f64(wait)))
        }
    }

    /// Gives back a token taken for `key` (an attempt that should not
    /// count, such as a successful sign-in).
    pub fn give_back(&self, key: &str) {
        if let Some(bucket) = lock(&self.buckets).by_key.get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(self.burst);
        }
    }

    fn refusal(&self, wait: Duration) -> ApiError {
        let retry_after_secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        ApiError::TooManyRequests {
            message: format!(
                "too many sign-in attempts from {}: try again in {retry_after_secs} s",
                self.what
            ),
            retry_after_secs,
        }
    }
}

/// Tokens in `bucket` at `now`.
fn refilled(bucket: Bucket, now: Instant, burst: f64, per_second: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(burst)
}

/// The key of a client: its IPv4 address, or the /64 of an IPv6 one (a
/// single host usually holds a whole /64).
pub fn client_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let segments = v6.segments();
                format!(
                    "{:x}:{:x}:{:x}:{:x}::/64",
                    segments[0], segments[1], segments[2], segments[3]
                )
            }
        },
    }
}

/// The per-client and per-account limits of the password endpoints.
#[derive(Debug)]
pub struct CredentialThrottle {
    clients: RateLimiter,
    accounts: RateLimiter,
    refusal_delay: Duration,
}

/// One admitted attempt on an account; [`CredentialAttempt::succeeded`]
/// gives the account's token back.
#[must_use]
pub struct CredentialAttempt<'a> {
    accounts: &'a RateLimiter,
    account: String,
}

impl CredentialAttempt<'_> {
    /// The credentials were right: the attempt does not count against the
    /// account.
    pub fn succeeded(self) {
        self.accounts.give_back(&self.account);
    }
}

impl CredentialThrottle {
    /// Limits from the configuration.
    pub fn new(config: &Config) -> CredentialThrottle {
        CredentialThrottle {
            clients: RateLimiter::new(
                "this client",
                config.auth_client_burst,
                config.auth_client_per_minute,
            ),
            accounts: RateLimiter::new(
                "this account",
                config.auth_account_burst,
                config.auth_account_per_minute,
            ),
            refusal_delay: Duration::from_millis(config.auth_refusal_delay_ms),
        }
    }

    /// Admits an attempt of `client` on the account `email`, or refuses it
    /// after the refusal delay.
    ///
    /// # Errors
    /// `TooManyRequests` when the client or the account is over its limit.
    pub async fn admit(
        &self,
        client: IpAddr,
        email: &str,
    ) -> Result<CredentialAttempt<'_>, ApiError> {
        let account = email.trim().to_lowercase();
        let now = Instant::now();
        let admitted = self
            .clients
            .take(&client_key(client), now)
            .and_then(|()| self.accounts.take(&account, now));
        if let Err(refusal) = admitted {
            let wait = Duration::from_secs(refusal.retry_after_secs().unwrap_or(0));
            tokio::time::sleep(self.refusal_delay.min(wait)).await;
            return Err(refusal);
        }
        Ok(CredentialAttempt {
            accounts: &self.accounts,
            account,
        })
    }
}

/// Bounds the password hashing in progress: `concurrent` run, `queued`
/// more wait, the rest are refused at once. Each running hash works in one
/// of at most `concurrent` reused [`HashMemory`]s, so hashing memory is
/// bounded too (`concurrent` x 19 MiB).
pub struct HashGate {
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    memories: Arc<Mutex<Vec<HashMemory>>>,
}

impl std::fmt::Debug for HashGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashGate").finish_non_exhaustive()
    }
}

impl HashGate {
    /// A gate running `concurrent` hashes with `queued` more waiting.
    pub fn new(concurrent: usize, queued: usize) -> HashGate {
        let concurrent = concurrent.max(1);
        HashGate {
            running: Arc::new(Semaphore::new(concurrent)),
            admitted: Arc::new(Semaphore::new(concurrent + queued)),
            memories: Arc::default(),
        }
    }

    /// Hashes a new password.
    ///
    /// # Errors
    /// `Overloaded` when the gate is full; `Internal` if hashing fails.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move |memory| auth::hash_password_in(&password, memory))
            .await?
    }

    /// Checks a password against a stored hash.
    ///
    /// # Errors
    /// `Overloaded` when the gate is full.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, ApiError> {
        self.run(move |memory| auth::verify_password_in(&password, &hash, memory))
            .await
    }

    /// Runs `work` (password hashing, in the memory it is given) on the
    /// blocking pool once it is its turn, or refuses it at once when
    /// `concurrent + queued` are already admitted.
    ///
    /// # Errors
    /// `Overloaded` (503, `Retry-After: 1`) when the gate is full.
    pub async fn run<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut HashMemory) -> T + Send + 'static,
    {
        let admitted =
            self.admitted
                .clone()
                .try_acquire_owned()
                .map_err(|_| ApiError::Overloaded {
                    message: "too many sign-ins in progress: try again in a moment".into(),
                    retry_after_secs: 1,
                })?;
        let running = self.running.clone().acquire_owned().await.map_err(closed)?;
        let memories = self.memories.clone();
        // The permits go with the work: a caller that gives up (the client
        // hung up) does not free its slot while its hash still runs.
        tokio::task::spawn_blocking(move || {
            // One memory per running permit: at most `concurrent` exist.
            let mut memory = lock(&memories).pop().unwrap_or_default();
            let value = work(&mut memory);
            lock(&memories).push(memory);
            drop((running, admitted));
            value
        })
        .await
        .map_err(|error| ApiError::Internal(format!("hashing task: {error}")))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn closed(error: tokio::sync::AcquireError) -> ApiError {
    ApiError::Internal(format!("hash gate closed: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refuse_past_the_burst_and_refill_over_time() {
        let limiter = RateLimiter::new("this client", 3, 60);
        let start = Instant::now();
        for _ in 0..3 {
            limiter.take("a", start).unwrap();
        }
        match limiter.take("a", start) {
            Err(ApiError::TooManyRequests {
                retry_after_secs, ..
            }) => assert_eq!(retry_after_secs, 1),
            other => panic!("expected a refusal, got {other:?}"),
        }
        limiter
            .take("b", start)
            .expect("other keys have their own bucket");
        limiter
            .take("a", start + Duration::from_secs(1))
            .expect("one token back after a second at 60 per minute");
        assert!(limiter.take("a", start + Duration::from_secs(1)).is_err());
        limiter.give_back("a");
        limiter
            .take("a", start + Duration::from_secs(1))
            .expect("a token given back");
    }

    /// A full table refuses new keys until buckets refill, scanning for
    /// refilled ones at most once per interval.
    #[test]
    fn a_full_table_refuses_new_keys_until_buckets_refill() {
        let limiter = RateLimiter {
            max_keys: 2,
            ..RateLimiter::new("this account", 2, 60)
        };
        let start = Instant::now();
        limiter.take("a", start).unwrap();
        limiter.take("b", start).unwrap();
        assert!(matches!(
            limiter.take("c", start),
            Err(ApiError::TooManyRequests { .. })
        ));
        limiter.take("a", start).expect("known keys still count");
        // Two seconds later a and b have refilled: the next scan drops them.
        let later = start + PRUNE_INTERVAL + Duration::from_secs(1);
        limiter
            .take("c", later)
            .expect("refilled buckets make room");
        limiter.take("d", later).expect("room for one more");
        assert!(
            limiter.take("e", later).is_err(),
            "full again, and no scan within the interval"
        );
    }

    #[test]
    fn ipv6_clients_are_their_64() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_eq!(client_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
        assert_eq!(client_key("10.0.0.1".parse().unwrap()), "10.0.0.1");
    }

    #[tokio::test]
    async fn the_gate_runs_some_queues_some_and_refuses_the_rest() {
        let gate = std::sync::Arc::new(HashGate::new(1, 1));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let holder = tokio::spawn({
            let gate = gate.clone();
            async move {
                gate.run(move |_| {
                    let _ = started.send(());
                    held.recv().ok()
                })
                .await
            }
        });
        running.await.unwrap();
        let queued = tokio::spawn({
            let gate = gate.clone();
            async move { gate.run(|_| 2).await }
        });
        // Wait until the queued call holds its admission.
        while gate.admitted.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        match gate.run(|_| 3).await {
            Err(ApiError::Overloaded {
                retry_after_secs, ..
            }) => assert_eq!(retry_after_secs, 1),
            other => panic!("expected a refusal, got {other:?}"),
        }
        release.send(()).unwrap();
        assert_eq!(holder.await.unwrap().unwrap(), Some(()));
        assert_eq!(queued.await.unwrap().unwrap(), 2, "the queued call ran");
        assert_eq!(gate.run(|_| 4).await.unwrap(), 4);
    }

    /// A caller that gives up while its hash runs keeps its slot until the
    /// hash is done, so hanging up cannot get more hashes running.
    #[tokio::test]
    async fn a_caller_that_gives_up_keeps_its_slot_until_the_work_ends() {
        let gate = Arc::new(HashGate::new(1, 0));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let caller = tokio::spawn({
            let gate = gate.clone();
            async move {
                gate.run(move |_| {
                    let _ = started.send(());
                    held.recv().ok()
                })
                .await
            }
        });
        running.await.unwrap();
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        assert!(
            matches!(gate.run(|_| 1).await, Err(ApiError::Overloaded { .. })),
            "the abandoned hash still holds the slot"
        );
        release.send(()).unwrap();
        while gate.admitted.available_permits() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.run(|_| 2).await.unwrap(), 2);
    }
}
