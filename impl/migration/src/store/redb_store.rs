//! The redb store: one table from `&str` keys to entries in [`encode_entry`]'s byte form.
//!
//! Every write is a write transaction committed with redb's default immediate durability
//! (fsynced before `commit` returns). redb allows one write transaction at a time, which is
//! what makes the read-decide-write of [`Store::apply_if_newer`] atomic.

use std::ops::Bound;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{
    Applied, BatchApplied, Entry, Store, StoreError, check_entry, check_key, decide_apply,
    decode_entry, encode_entry, next_version,
};

const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");

/// A [`Store`] in a redb database file.
#[derive(Debug)]
pub struct RedbStore {
    database: Database,
}

fn redb_error(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Redb(error.into())
}

impl RedbStore {
    /// Opens (creating if absent) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let database = Database::create(path).map_err(redb_error)?;
        // Create the table up front so that reads of a new, empty store find it.
        let transaction = database.begin_write().map_err(redb_error)?;
        transaction.open_table(ENTRIES).map_err(redb_error)?;
        transaction.commit().map_err(redb_error)?;
        Ok(RedbStore { database })
    }

    /// Runs `body` in one write transaction and commits it if `body` succeeds.
    fn write<T>(
        &self,
        body: impl FnOnce(&mut redb::Table<'_, &str, &[u8]>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let transaction: WriteTransaction = self.database.begin_write().map_err(redb_error)?;
        let result = {
            let mut table = transaction.open_table(ENTRIES).map_err(redb_error)?;
            body(&mut table)?
        };
        transaction.commit().map_err(redb_error)?;
        Ok(result)
    }

    fn read<T>(
        &self,
        body: impl FnOnce(&redb::ReadOnlyTable<&str, &[u8]>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let transaction = self.database.begin_read().map_err(redb_error)?;
        let table = transaction.open_table(ENTRIES).map_err(redb_error)?;
        body(&table)
    }
}

fn held_entry(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Entry>, StoreError> {
    let guard = table.get(key).map_err(redb_error)?;
    guard
        .map(|bytes| decode_entry(key, bytes.value()))
        .transpose()
}

fn apply_in(
    table: &mut redb::Table<'_, &str, &[u8]>,
    key: &str,
    entry: &Entry,
) -> Result<Applied, StoreError> {
    let outcome = decide_apply(key, held_entry(table, key)?.as_ref(), entry)?;
    if outcome == Applied::Applied {
        table
            .insert(key, encode_entry(entry).as_slice())
            .map_err(redb_error)?;
    }
    Ok(outcome)
}

impl Store for RedbStore {
    fn get_entry(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        check_key(key)?;
        self.read(|table| held_entry(table, key))
    }

    fn get_entries(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        self.read(|table| keys.iter().map(|key| held_entry(table, key)).collect())
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<u64, StoreError> {
        check_key(key)?;
        self.write(|table| {
            let version = next_version(held_entry(table, key)?.as_ref());
            let bytes = encode_entry(&Entry::value(value, version));
            table.insert(key, bytes.as_slice()).map_err(redb_error)?;
            Ok(version)
        })
    }

    fn delete(&self, key: &str) -> Result<u64, StoreError> {
        check_key(key)?;
        self.write(|table| {
            let held = held_entry(table, key)?;
            if held
                .as_ref()
                .is_none_or(|entry| entry.live_value().is_none())
            {
                return Err(StoreError::NotFound {
                    key: key.to_string(),
                });
            }
            let version = next_version(held.as_ref());
            table
                .insert(key, encode_entry(&Entry::tombstone(version)).as_slice())
                .map_err(redb_error)?;
            Ok(version)
        })
    }

    fn apply_if_newer(&self, key: &str, entry: &Entry) -> Result<Applied, StoreError> {
        self.write(|table| apply_in(table, key, entry))
    }

    fn apply_batch_if_newer(&self, batch: &[(String, Entry)]) -> Result<BatchApplied, StoreError> {
        self.write(|table| {
            let mut counts = BatchApplied::default();
            for (key, entry) in batch {
                counts.count(apply_in(table, key, entry)?);
            }
            Ok(counts)
        })
    }

    fn put_unconditional(&self, key: &str, entry: &Entry) -> Result<(), StoreError> {
        check_entry(key, entry)?;
        self.write(|table| {
            table
                .insert(key, encode_entry(entry).as_slice())
                .map_err(redb_error)?;
            Ok(())
        })
    }

    fn put_batch_unconditional(&self, batch: &[(String, Entry)]) -> Result<(), StoreError> {
        self.write(|table| {
            for (key, entry) in batch {
                check_entry(key, entry)?;
                table
                    .insert(key.as_str(), encode_entry(entry).as_slice())
                    .map_err(redb_error)?;
            }
            Ok(())
        })
    }

    fn remove(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        self.write(|table| Ok(table.remove(key).map_err(redb_error)?.is_some()))
    }

    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, Entry)>, StoreError> {
        self.read(|table| {
            let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
            let range = table
                .range((lower, Bound::<&str>::Unbounded))
                .map_err(redb_error)?;
            let mut entries = Vec::new();
            for item in range.take(limit) {
                let (key, bytes) = item.map_err(redb_error)?;
                let key = key.value().to_string();
                let entry = decode_entry(&key, bytes.value())?;
                entries.push((key, entry));
            }
            Ok(entries)
        })
    }
}
