//! The in-memory fake store: a sorted map behind a mutex. It is the reference the contract
//! suite holds the real stores to, and the store the hand-scripted interleavings run on.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use super::{
    Applied, Entry, Store, StoreError, check_entry, check_key, decide_apply, next_version,
};

/// A [`Store`] kept in memory; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemStore {
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every entry, in key order, tombstones included.
    pub fn snapshot(&self) -> BTreeMap<String, Entry> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated: every mutation is
        // a single insert or remove.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for MemStore {
    fn get_entry(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        check_key(key)?;
        Ok(self.lock().get(key).cloned())
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<u64, StoreError> {
        check_key(key)?;
        let mut entries = self.lock();
        let version = next_version(entries.get(key));
        entries.insert(key.to_string(), Entry::value(value, version));
        Ok(version)
    }

    fn delete(&self, key: &str) -> Result<u64, StoreError> {
        check_key(key)?;
        let mut entries = self.lock();
        let held = entries.get(key);
        if held.is_none_or(|entry| entry.live_value().is_none()) {
            return Err(StoreError::NotFound {
                key: key.to_string(),
            });
        }
        let version = next_version(held);
        entries.insert(key.to_string(), Entry::tombstone(version));
        Ok(version)
    }

    fn apply_if_newer(&self, key: &str, entry: &Entry) -> Result<Applied, StoreError> {
        let mut entries = self.lock();
        let outcome = decide_apply(key, entries.get(key), entry)?;
        if outcome == Applied::Applied {
            entries.insert(key.to_string(), entry.clone());
        }
        Ok(outcome)
    }

    fn put_unconditional(&self, key: &str, entry: &Entry) -> Result<(), StoreError> {
        check_entry(key, entry)?;
        self.lock().insert(key.to_string(), entry.clone());
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        Ok(self.lock().remove(key).is_some())
    }

    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, Entry)>, StoreError> {
        let lower = after.map_or(Bound::Unbounded, |key| Bound::Excluded(key.to_string()));
        let entries = self.lock();
        let range = entries.range((lower, Bound::Unbounded));
        Ok(range
            .take(limit)
            .map(|(key, entry)| (key.clone(), entry.clone()))
            .collect())
    }
}
