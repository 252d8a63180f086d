//! MIGRATION's [`Store`] and [`PhaseLog`] over a node's simulated disk, so that disk faults
//! reach the migration's stores and the coordinator's record.
//!
//! One file per key under `kv/`, replaced with `write_atomic` (temp, fsync, rename,
//! directory fsync): an acknowledged write is durable, and a crash leaves each key with
//! its old or its new record, never a torn one. The one idea to hold: **a request is
//! applied at most once.** Each record keeps the ids of the last requests that wrote it,
//! in the same atomic file as the entry, so a retried `WriteX` whose reply was lost finds
//! its own write and returns it instead of assigning the key a second version (a retried
//! delete would otherwise find a tombstone and report "not found"). The naive variant's
//! physical delete leaves no record and so no id: its retries are not idempotent, as in
//! the design it models.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use backup::disk::{Disk, write_atomic};
use migration::phase_log::{PhaseLog, PhaseLogError, PhaseRecord};
use migration::store::{
    Applied, Entry, Store, StoreError, check_entry, check_key, decide_apply, next_version,
};
use serde::{Deserialize, Serialize};

/// The directory holding one file per key.
const KEY_DIR: &str = "kv";
/// Request ids a record remembers: far more than the writes that can land on one key
/// between a request and its last retry (three writers, a few retries each).
const RECENT_REQUESTS_MAX: usize = 32;
/// Attempts at one disk operation before the store reports itself unavailable. The disk
/// injects errors at under 5 % per call, so 64 attempts fail together essentially never.
const DISK_ATTEMPTS_MAX: usize = 64;

/// What one key's file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    entry: Entry,
    /// `(request id, entry that request wrote)`, oldest first; `None` for a delete that
    /// found nothing, so that a late copy of it cannot delete a newer value.
    recent: Vec<(u64, Option<Entry>)>,
}

/// A [`Store`] whose entries live on a [`Disk`]. Cheap to open: it keeps no cache, so a
/// restarted node sees exactly what its disk kept.
pub struct DiskStore {
    disk: Arc<dyn Disk>,
    /// The request on whose behalf `put`/`delete` write, remembered in the record.
    request: Mutex<Option<u64>>,
}

fn unavailable(key: &str, error: &io::Error) -> StoreError {
    StoreError::Unavailable(format!("disk error on key {key:?}: {error}"))
}

fn retry_disk<T>(mut operation: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut last_error = None;
    for _ in 0..DISK_ATTEMPTS_MAX {
        match operation() {
            Ok(value) => return Ok(value),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(error),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.expect("at least one attempt ran"))
}

impl DiskStore {
    pub fn new(disk: Arc<dyn Disk>) -> Self {
        Self {
            disk,
            request: Mutex::new(None),
        }
    }

    /// A key's file: its bytes in lowercase hex, so any key (`/` included) is one file
    /// name, and file names sort in the keys' byte order.
    fn path(key: &str) -> String {
        format!("{KEY_DIR}/{}", hex::encode(key.as_bytes()))
    }

    /// Sets (or clears) the request the next writes belong to.
    pub fn set_request(&self, request: Option<u64>) {
        *self.request.lock().expect("request lock") = request;
    }

    /// Runs `write` with its writes remembered as `request`'s, then clears it.
    pub fn on_behalf_of<T>(&self, request: u64, write: impl FnOnce() -> T) -> T {
        self.set_request(Some(request));
        let result = write();
        self.set_request(None);
        result
    }

    fn load(&self, key: &str) -> Result<Option<Record>, StoreError> {
        check_key(key)?;
        let bytes = match retry_disk(|| self.disk.read(&Self::path(key))) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(unavailable(key, &error)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| StoreError::Corrupt {
                key: key.to_string(),
                detail: format!(
                    "expected a JSON record, found {} bytes: {error}",
                    bytes.len()
                ),
            })
    }

    /// Writes `entry` as the key's record, keeping `held`'s request ids.
    fn store(&self, key: &str, entry: &Entry, held: Option<Record>) -> Result<(), StoreError> {
        self.store_answer(key, entry, held, Some(entry.clone()))
    }

    fn store_answer(
        &self,
        key: &str,
        entry: &Entry,
        held: Option<Record>,
        answer: Option<Entry>,
    ) -> Result<(), StoreError> {
        let mut recent = held.map(|record| record.recent).unwrap_or_default();
        if let Some(request) = *self.request.lock().expect("request lock") {
            recent.push((request, answer));
            let excess = recent.len().saturating_sub(RECENT_REQUESTS_MAX);
            recent.drain(..excess);
        }
        let record = Record {
            entry: entry.clone(),
            recent,
        };
        let bytes = serde_json::to_vec(&record).expect("a record always serializes");
        retry_disk(|| write_atomic(self.disk.as_ref(), &Self::path(key), &bytes))
            .map_err(|error| unavailable(key, &error))
    }

    /// The entry `request` wrote to `key`, if the record still remembers it. The record is
    /// made durable again first: the reply may have been lost because the write's fsync
    /// failed, and the retry must not acknowledge what a crash could still undo.
    /// `Some(None)`: the request was a delete that found nothing.
    pub fn written_by(&self, key: &str, request: u64) -> Result<Option<Option<Entry>>, StoreError> {
        let Some(record) = self.load(key)? else {
            return Ok(None);
        };
        let Some((_, entry)) = record.recent.iter().find(|(id, _)| *id == request) else {
            return Ok(None);
        };
        let path = Self::path(key);
        retry_disk(|| self.disk.fsync(&path))
            .and_then(|()| retry_disk(|| self.disk.fsync_dir(KEY_DIR)))
            .map_err(|error| unavailable(key, &error))?;
        Ok(Some(entry.clone()))
    }

    /// Remembers that the current request, a delete, found nothing to delete: a copy of it
    /// arriving later (a retry, a duplicate) must get the same answer, not delete a value
    /// written since. A key without a record (naive's physical delete) cannot remember.
    pub fn remember_not_found(&self, key: &str) -> Result<(), StoreError> {
        let Some(held) = self.load(key)? else {
            return Ok(());
        };
        let entry = held.entry.clone();
        self.store_answer(key, &entry, Some(held), None)
    }

    /// Every key with a file, sorted (leftover temp files of a crash are skipped).
    fn keys(&self) -> Result<Vec<String>, StoreError> {
        let mut names =
            retry_disk(|| self.disk.list(KEY_DIR)).map_err(|error| unavailable(KEY_DIR, &error))?;
        names.retain(|name| !name.ends_with(".tmp"));
        names.sort();
        names
            .into_iter()
            .map(|name| {
                hex::decode(&name)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| StoreError::Corrupt {
                        key: name.clone(),
                        detail: format!(
                            "expected a key file named by the key's bytes in hex, found {name:?}"
                        ),
                    })
            })
            .collect()
    }
}

impl Store for DiskStore {
    fn get_entry(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        Ok(self.load(key)?.map(|record| record.entry))
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<u64, StoreError> {
        let held = self.load(key)?;
        let version = next_version(held.as_ref().map(|record| &record.entry));
        self.store(key, &Entry::value(value, version), held)?;
        Ok(version)
    }

    fn delete(&self, key: &str) -> Result<u64, StoreError> {
        let held = self.load(key)?;
        let entry = held.as_ref().map(|record| &record.entry);
        if entry.is_none_or(|entry| entry.live_value().is_none()) {
            return Err(StoreError::NotFound {
                key: key.to_string(),
            });
        }
        let version = next_version(entry);
        self.store(key, &Entry::tombstone(version), held)?;
        Ok(version)
    }

    fn apply_if_newer(&self, key: &str, entry: &Entry) -> Result<Applied, StoreError> {
        let held = self.load(key)?;
        let outcome = decide_apply(key, held.as_ref().map(|record| &record.entry), entry)?;
        if outcome == Applied::Applied {
            self.store(key, entry, held)?;
        }
        Ok(outcome)
    }

    fn put_unconditional(&self, key: &str, entry: &Entry) -> Result<(), StoreError> {
        check_entry(key, entry)?;
        let held = self.load(key)?;
        self.store(key, entry, held)
    }

    fn remove(&self, key: &str) -> Result<bool, StoreError> {
        if self.load(key)?.is_none() {
            return Ok(false);
        }
        let path = Self::path(key);
        match retry_disk(|| self.disk.remove(&path)) {
            Ok(()) => {}
            // Another attempt removed it before failing on its own error.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(unavailable(key, &error)),
        }
        retry_disk(|| self.disk.fsync_dir(KEY_DIR)).map_err(|error| unavailable(key, &error))?;
        Ok(true)
    }

    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, Entry)>, StoreError> {
        let mut batch = Vec::new();
        for key in self.keys()? {
            if batch.len() >= limit {
                break;
            }
            if after.is_some_and(|after| key.as_str() <= after) {
                continue;
            }
            if let Some(record) = self.load(&key)? {
                batch.push((key, record.entry));
            }
        }
        Ok(batch)
    }
}

/// The coordinator's [`PhaseRecord`] as one JSON file on its node's disk.
pub struct DiskPhaseLog {
    disk: Arc<dyn Disk>,
}

const PHASE_PATH: &str = "phase.json";

impl DiskPhaseLog {
    pub fn new(disk: Arc<dyn Disk>) -> Self {
        Self { disk }
    }

    fn io_error(source: io::Error) -> PhaseLogError {
        PhaseLogError::Io {
            path: PathBuf::from(PHASE_PATH),
            source,
        }
    }
}

impl PhaseLog for DiskPhaseLog {
    fn load(&self) -> Result<Option<PhaseRecord>, PhaseLogError> {
        let bytes = match retry_disk(|| self.disk.read(PHASE_PATH)) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(Self::io_error(error)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| PhaseLogError::Malformed {
                path: PathBuf::from(PHASE_PATH),
                source,
            })
    }

    fn save(&mut self, record: &PhaseRecord) -> Result<(), PhaseLogError> {
        let bytes = serde_json::to_vec(record).expect("a record always serializes");
        retry_disk(|| write_atomic(self.disk.as_ref(), PHASE_PATH, &bytes)).map_err(Self::io_error)
    }
}
