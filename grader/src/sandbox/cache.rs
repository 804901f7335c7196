//! The bundle cache: which challenge bundles have databases on this grader.
//!
//! Keyed by the bundle's version hash; least recently used bundles beyond
//! the capacity are evicted whole (all their databases), but never while a
//! job still holds them.

use std::collections::HashMap;
use std::sync::Arc;

use sqlarena_common::{ChallengeBundle, TestCaseId};

/// A bundle whose test-case databases exist on this grader.
#[derive(Debug)]
pub struct CachedBundle {
    pub bundle: ChallengeBundle,
    /// The version's owner role, dropped with the databases.
    pub owner: String,
    /// Test case id to database name.
    pub databases: HashMap<TestCaseId, String>,
}

/// An LRU map of built bundles.
#[derive(Debug)]
pub struct BundleCache {
    capacity: usize,
    clock: u64,
    entries: HashMap<String, (Arc<CachedBundle>, u64)>,
}

impl BundleCache {
    /// Creates an empty cache holding at most `capacity` bundles (at least one).
    pub fn new(capacity: usize) -> BundleCache {
        BundleCache {
            capacity: capacity.max(1),
            clock: 0,
            entries: HashMap::new(),
        }
    }

    /// Returns the bundle with this version hash, marking it recently used.
    pub fn get(&mut self, version_hash: &str) -> Option<Arc<CachedBundle>> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(version_hash).map(|(bundle, used)| {
            *used = clock;
            Arc::clone(bundle)
        })
    }

    /// Inserts a bundle and returns the bundles evicted to make room (their
    /// databases must be dropped). Bundles still in use are not evicted.
    pub fn insert(&mut self, bundle: Arc<CachedBundle>) -> Vec<Arc<CachedBundle>> {
        self.clock += 1;
        let key = bundle.bundle.version_hash.clone();
        let mut evicted: Vec<Arc<CachedBundle>> = self
            .entries
            .insert(key.clone(), (bundle, self.clock))
            .map(|(old, _)| old)
            .into_iter()
            .collect();
        while self.entries.len() > self.capacity {
            let victim = self
                .entries
                .iter()
                .filter(|(hash, (bundle, _))| **hash != key && Arc::strong_count(bundle) == 1)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(hash, _)| hash.clone());
            match victim.and_then(|hash| self.entries.remove(&hash)) {
                Some((bundle, _)) => evicted.push(bundle),
                None => break,
            }
        }
        evicted
    }

    /// Returns the version hashes of the cached bundles, most recently
    /// used first.
    pub fn hashes(&self) -> Vec<String> {
        let mut entries: Vec<(&String, u64)> = self
            .entries
            .iter()
            .map(|(hash, (_, used))| (hash, *used))
            .collect();
        entries.sort_by_key(|(_, used)| std::cmp::Reverse(*used));
        entries.into_iter().map(|(hash, _)| hash.clone()).collect()
    }

    /// Removes and returns every bundle.
    pub fn drain(&mut self) -> Vec<Arc<CachedBundle>> {
        self.entries
            .drain()
            .map(|(_, (bundle, _))| bundle)
            .collect()
    }

    /// Returns the number of cached bundles.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Returns true when no bundle is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlarena_common::ChallengeId;

    fn bundle(hash: &str) -> Arc<CachedBundle> {
        Arc::new(CachedBundle {
            bundle: ChallengeBundle {
                challenge_id: ChallengeId(1),
                version: 1,
                version_hash: hash.into(),
                init: String::new(),
                solution: String::new(),
                times_to_run: 1,
                test_cases: vec![],
            },
            owner: String::new(),
            databases: HashMap::new(),
        })
    }

    fn hashes(bundles: &[Arc<CachedBundle>]) -> Vec<String> {
        bundles
            .iter()
            .map(|b| b.bundle.version_hash.clone())
            .collect()
    }

    #[test]
    fn evicts_the_least_recently_used_bundle() {
        let mut cache = BundleCache::new(2);
        assert!(cache.insert(bundle("a")).is_empty());
        assert!(cache.insert(bundle("b")).is_empty());
        assert!(cache.get("a").is_some());
        assert_eq!(hashes(&cache.insert(bundle("c"))), vec!["b"]);
        assert!(cache.get("b").is_none());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn lists_hashes_most_recently_used_first() {
        let mut cache = BundleCache::new(3);
        cache.insert(bundle("a"));
        cache.insert(bundle("b"));
        cache.insert(bundle("c"));
        assert!(cache.get("a").is_some());
        assert_eq!(cache.hashes(), vec!["a", "c", "b"]);
    }

    #[test]
    fn never_evicts_a_bundle_in_use() {
        let mut cache = BundleCache::new(1);
        cache.insert(bundle("a"));
        let in_use = cache.get("a").unwrap();
        assert!(cache.insert(bundle("b")).is_empty());
        assert_eq!(cache.len(), 2);
        drop(in_use);
        assert_eq!(hashes(&cache.insert(bundle("c"))).len(), 2);
        assert_eq!(cache.len(), 1);
    }
}
