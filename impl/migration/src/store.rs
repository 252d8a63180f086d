//! The key-value store interface that stores X and Y both implement.
//!
//! Every entry is `(value or tombstone, version)`. The one idea to hold while reading: **the
//! version is the order.** A store assigns versions itself for [`Store::put`] and
//! [`Store::delete`] (its held version + 1), and accepts someone else's version only through
//! [`Store::apply_if_newer`], which keeps whichever write is newer. The decision is one pure
//! function, [`decide_apply`], so every implementation (the in-memory fake, SQLite, redb, the
//! simulator's store service) decides alike.
//!
//! The unconditional operations ([`Store::put_unconditional`], [`Store::remove`]) exist for the
//! `naive` variant and for bulk copies; the fixed design never calls them during a migration.

pub mod memory;
pub mod redb_store;
pub mod sqlite;

use serde::{Deserialize, Serialize};

/// What a key holds: a value, or the tombstone a versioned delete leaves behind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Payload {
    Value(Vec<u8>),
    Tombstone,
}

/// One stored entry: the payload and the version that ordered it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub payload: Payload,
    /// 1 for a key's first write; 0 is never stored.
    pub version: u64,
}

impl Entry {
    pub fn value(value: impl Into<Vec<u8>>, version: u64) -> Self {
        Entry {
            payload: Payload::Value(value.into()),
            version,
        }
    }

    pub fn tombstone(version: u64) -> Self {
        Entry {
            payload: Payload::Tombstone,
            version,
        }
    }

    /// The value a reader sees: `None` for a tombstone.
    pub fn live_value(&self) -> Option<&[u8]> {
        match &self.payload {
            Payload::Value(value) => Some(value),
            Payload::Tombstone => None,
        }
    }
}

/// What [`Store::apply_if_newer`] did with an offered entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The offered entry was newer (or the key was absent): it is now stored.
    Applied,
    /// The store already held exactly this entry (a duplicate delivery).
    AlreadyHeld,
    /// The store holds a newer version: the offered entry was dropped.
    Stale { held_version: u64 },
}

/// Counts from [`Store::apply_batch_if_newer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchApplied {
    pub applied: u64,
    pub already_held: u64,
    pub stale: u64,
}

impl BatchApplied {
    pub fn count(&mut self, outcome: Applied) {
        match outcome {
            Applied::Applied => self.applied += 1,
            Applied::AlreadyHeld => self.already_held += 1,
            Applied::Stale { .. } => self.stale += 1,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key:?} not found (absent or already deleted): nothing to delete")]
    NotFound { key: String },
    #[error(
        "version conflict on key {key:?}: version {version} is already held with a different \
         payload; two writes were given one version, so the version source is broken"
    )]
    VersionConflict { key: String, version: u64 },
    #[error("invalid version 0 offered for key {key:?}: versions start at 1")]
    InvalidVersion { key: String },
    #[error("invalid key: expected a non-empty key, found an empty one")]
    EmptyKey,
    #[error("store entry for key {key:?} is corrupt: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("SQLite store failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("redb store failed: {0}")]
    Redb(#[from] redb::Error),
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A key-value store as migration source X or target Y. Keys order as bytes (UTF-8 `str`
/// order), the same in every implementation.
pub trait Store: Send + Sync {
    /// The entry `key` holds, tombstones included.
    fn get_entry(&self, key: &str) -> Result<Option<Entry>, StoreError>;

    /// Writes `value` with the key's next version (held + 1, or 1) and returns that version.
    fn put(&self, key: &str, value: &[u8]) -> Result<u64, StoreError>;

    /// Replaces a live value with a tombstone at the next version and returns that version.
    /// [`StoreError::NotFound`] when the key is absent or already a tombstone.
    fn delete(&self, key: &str) -> Result<u64, StoreError>;

    /// Stores `entry` only if its version is newer than the held one; see [`decide_apply`].
    fn apply_if_newer(&self, key: &str, entry: &Entry) -> Result<Applied, StoreError>;

    /// Overwrites whatever `key` holds with `entry` (the naive write; bulk copies).
    fn put_unconditional(&self, key: &str, entry: &Entry) -> Result<(), StoreError>;

    /// Physically removes `key`, leaving no tombstone (the naive delete). True if it existed.
    fn remove(&self, key: &str) -> Result<bool, StoreError>;

    /// Up to `limit` entries with keys strictly after `after` (from the start if `None`),
    /// in ascending key order, tombstones included.
    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, Entry)>, StoreError>;

    /// The live value of `key`: `None` when absent or a tombstone.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .get_entry(key)?
            .and_then(|entry| entry.live_value().map(<[u8]>::to_vec)))
    }

    /// [`Store::get_entry`] for many keys; real stores answer in one read transaction.
    fn get_entries(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        keys.iter().map(|key| self.get_entry(key)).collect()
    }

    /// [`Store::apply_if_newer`] for a batch; real stores commit it as one transaction.
    fn apply_batch_if_newer(&self, batch: &[(String, Entry)]) -> Result<BatchApplied, StoreError> {
        let mut counts = BatchApplied::default();
        for (key, entry) in batch {
            counts.count(self.apply_if_newer(key, entry)?);
        }
        Ok(counts)
    }

    /// [`Store::put_unconditional`] for a batch; real stores commit it as one transaction.
    fn put_batch_unconditional(&self, batch: &[(String, Entry)]) -> Result<(), StoreError> {
        batch
            .iter()
            .try_for_each(|(key, entry)| self.put_unconditional(key, entry))
    }
}

/// The conditional-write rule of the fixed design, shared by every store: an offered entry
/// replaces the held one only if its version is greater. Equal versions must carry equal
/// payloads (a duplicate delivery); anything else means two writes got one version.
pub fn decide_apply(
    key: &str,
    held: Option<&Entry>,
    offered: &Entry,
) -> Result<Applied, StoreError> {
    check_key(key)?;
    if offered.version == 0 {
        return Err(StoreError::InvalidVersion {
            key: key.to_string(),
        });
    }
    let Some(held) = held else {
        return Ok(Applied::Applied);
    };
    if offered.version > held.version {
        Ok(Applied::Applied)
    } else if offered.version < held.version {
        Ok(Applied::Stale {
            held_version: held.version,
        })
    } else if offered.payload == held.payload {
        Ok(Applied::AlreadyHeld)
    } else {
        Err(StoreError::VersionConflict {
            key: key.to_string(),
            version: held.version,
        })
    }
}

/// The version a store assigns to its next write of a key.
pub fn next_version(held: Option<&Entry>) -> u64 {
    held.map_or(1, |entry| {
        entry
            .version
            .checked_add(1)
            .expect("a key's version overflowed u64")
    })
}

/// Refuses the empty key, which no store accepts.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        Err(StoreError::EmptyKey)
    } else {
        Ok(())
    }
}

/// Refuses an entry no store may hold (version 0).
pub fn check_entry(key: &str, entry: &Entry) -> Result<(), StoreError> {
    check_key(key)?;
    if entry.version == 0 {
        return Err(StoreError::InvalidVersion {
            key: key.to_string(),
        });
    }
    Ok(())
}

/// The compact byte form of an entry that the real stores keep: the version (8 bytes,
/// little-endian), a tag (0 tombstone, 1 value), then the value's bytes.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let value = entry.live_value().unwrap_or(&[]);
    let mut bytes = Vec::with_capacity(9 + value.len());
    bytes.extend_from_slice(&entry.version.to_le_bytes());
    bytes.push(u8::from(entry.live_value().is_some()));
    bytes.extend_from_slice(value);
    bytes
}

/// Reverses [`encode_entry`]; `key` only names the entry in the error.
pub fn decode_entry(key: &str, bytes: &[u8]) -> Result<Entry, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        key: key.to_string(),
        detail,
    };
    if bytes.len() < 9 {
        return Err(corrupt(format!(
            "expected at least 9 bytes, found {}",
            bytes.len()
        )));
    }
    let version = u64::from_le_bytes(bytes[..8].try_into().expect("slice of 8 bytes"));
    let payload = match bytes[8] {
        0 if bytes.len() == 9 => Payload::Tombstone,
        1 => Payload::Value(bytes[9..].to_vec()),
        tag => {
            return Err(corrupt(format!(
                "expected tag 0 or 1 (9 bytes for 0), found {tag}"
            )));
        }
    };
    if version == 0 {
        return Err(corrupt(
            "expected a version of at least 1, found 0".to_string(),
        ));
    }
    Ok(Entry { payload, version })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decide_apply_orders_by_version_and_flags_conflicts() {
        let held = Entry::value("a", 3);
        let decide = |offered: Entry| decide_apply("k", Some(&held), &offered);
        assert_eq!(decide(Entry::value("b", 4)).unwrap(), Applied::Applied);
        assert_eq!(
            decide(Entry::tombstone(2)).unwrap(),
            Applied::Stale { held_version: 3 }
        );
        assert_eq!(decide(Entry::value("a", 3)).unwrap(), Applied::AlreadyHeld);
        assert!(matches!(
            decide(Entry::tombstone(3)),
            Err(StoreError::VersionConflict { .. })
        ));
        assert!(matches!(
            decide(Entry::value("x", 0)),
            Err(StoreError::InvalidVersion { .. })
        ));
        assert_eq!(
            decide_apply("k", None, &Entry::tombstone(1)).unwrap(),
            Applied::Applied
        );
    }

    #[test]
    fn entry_encoding_round_trips_and_rejects_garbage() {
        for entry in [
            Entry::value("", 1),
            Entry::value(vec![0, 1, 255], 7),
            Entry::tombstone(9),
        ] {
            assert_eq!(decode_entry("k", &encode_entry(&entry)).unwrap(), entry);
        }
        assert!(decode_entry("k", &[1, 2]).is_err());
        assert!(decode_entry("k", &[1, 0, 0, 0, 0, 0, 0, 0, 7]).is_err());
        assert!(decode_entry("k", &[0; 9]).is_err());
    }
}
