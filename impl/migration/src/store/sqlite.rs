//! The SQLite store (rusqlite, bundled SQLite): one `WITHOUT ROWID` table keyed by the key.
//!
//! Durability: WAL journal with `synchronous = FULL`, so a write is on disk when the call
//! returns — X acknowledging a version must mean X keeps it. One connection behind a mutex
//! serializes writers, which is also what makes the read-decide-write of
//! [`Store::apply_if_newer`] atomic.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Applied, BatchApplied, Entry, Payload, Store, StoreError, check_entry, check_key, decide_apply,
};

/// A [`Store`] in an SQLite database file.
#[derive(Debug)]
pub struct SqliteStore {
    connection: Mutex<Connection>,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    tombstone INTEGER NOT NULL CHECK (tombstone IN (0, 1)),
    value BLOB
) WITHOUT ROWID";

impl SqliteStore {
    /// Opens (creating if absent) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = Connection::open(path)?;
        // journal_mode answers with a row, so it is a query, not an execute.
        let mode: String =
            connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "SQLite at {}: expected WAL journal mode, found {mode}",
                path.display()
            )));
        }
        connection.execute_batch("PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;")?;
        connection.execute_batch(SCHEMA)?;
        Ok(SqliteStore {
            connection: Mutex::new(connection),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // SQLite rolls back an unfinished transaction itself; the connection stays usable.
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn held_entry(connection: &Connection, key: &str) -> Result<Option<Entry>, StoreError> {
    let mut statement =
        connection.prepare_cached("SELECT version, tombstone, value FROM kv WHERE key = ?1")?;
    let row = statement.query_row([key], row_parts).optional()?;
    row.map(|parts| entry_from_parts(key, parts)).transpose()
}

type RowParts = (i64, i64, Option<Vec<u8>>);

fn row_parts(row: &rusqlite::Row<'_>) -> rusqlite::Result<RowParts> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn entry_from_parts(key: &str, (version, tombstone, value): RowParts) -> Result<Entry, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        key: key.to_string(),
        detail,
    };
    let version = u64::try_from(version)
        .ok()
        .filter(|version| *version >= 1)
        .ok_or_else(|| corrupt(format!("expected a version >= 1, found {version}")))?;
    let payload = match (tombstone, value) {
        (1, None) => Payload::Tombstone,
        (0, Some(value)) => Payload::Value(value),
        (tombstone, value) => {
            let has = if value.is_some() {
                "a value"
            } else {
                "no value"
            };
            return Err(corrupt(format!("tombstone flag {tombstone} with {has}")));
        }
    };
    Ok(Entry { payload, version })
}

fn write_entry(connection: &Connection, key: &str, entry: &Entry) -> Result<(), StoreError> {
    let version = i64::try_from(entry.version).map_err(|_| StoreError::Corrupt {
        key: key.to_string(),
        detail: format!("version {} does not fit SQLite's INTEGER", entry.version),
    })?;
    let tombstone = i64::from(entry.live_value().is_none());
    let mut statement = connection.prepare_cached(
        "INSERT INTO kv (key, version, tombstone, value) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET
           version = excluded.version, tombstone = excluded.tombstone, value = excluded.value",
    )?;
    statement.execute(params![key, version, tombstone, entry.live_value()])?;
    Ok(())
}

impl Store for SqliteStore {
    fn get_entry(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        check_key(key)?;
        held_entry(&self.lock(), key)
    }

    fn get_entries(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let entries = keys
            .iter()
            .map(|key| held_entry(&transaction, key))
            .collect();
        transaction.commit()?;
        entries
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<u64, StoreError> {
        check_key(key)?;
        let connection = self.lock();
        let mut statement = connection.prepare_cached(
            "INSERT INTO kv (key, version, tombstone, value) VALUES (?1, 1, 0, ?2)
             ON CONFLICT (key) DO UPDATE SET
               version = version + 1, tombstone = 0, value = excluded.value
             RETURNING version",
        )?;
        let version: i64 = statement.query_row(params![key, value], |row| row.get(0))?;
        Ok(u64::try_from(version).expect("SQLite CHECK keeps versions >= 1"))
    }

    fn delete(&self, key: &str) -> Result<u64, StoreError> {
        check_key(key)?;
        let connection = self.lock();
        let mut statement = connection.prepare_cached(
            "UPDATE kv SET version = version + 1, tombstone = 1, value = NULL
             WHERE key = ?1 AND tombstone = 0 RETURNING version",
        )?;
        let version: Option<i64> = statement.query_row([key], |row| row.get(0)).optional()?;
        let version = version.ok_or_else(|| StoreError::NotFound {
            key: key.to_string(),
        })?;
        Ok(u64::try_from(version).expect("SQLite CHECK keeps versions >= 1"))
    }

    fn apply_if_newer(&self, key: &str, entry: &Entry) -> Result<Applied, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let outcome = decide_apply(key, held_entry(&transaction, key)?.as_ref(), entry)?;
        if outcome == Applied::Applied {
            write_entry(&transaction, key, entry)?;
        }
        transaction.commit()?;
        Ok(outcome)
    }

    fn apply_batch_if_newer(&self, batch: &[(String, Entry)]) -> Result<BatchApplied, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let mut counts = BatchApplied::default();
        for (key, entry) in batch {
            let outcome = decide_apply(key, held_entry(&transaction, key)?.as_ref(), entry)?;
            if outcome == Applied::Applied {
                write_entry(&transaction, key, entry)?;
            }
            counts.count(outcome);
        }
        transaction.commit()?;
        Ok(counts)
    }

    fn put_unconditional(&self, key: &str, entry: &Entry) -> Result<(), StoreError> {
        check_entry(key, entry)?;
        write_entry(&self.lock(), key, entry)
    }

    fn put_batch_unconditional(&self, batch: &[(String, Entry)]) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        for (key, entry) in batch {
            check_entry(key, entry)?;
            write_entry(&transaction, key, entry)?;
        }
        transaction.commit()?;
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let connection = self.lock();
        let mut statement = connection.prepare_cached("DELETE FROM kv WHERE key = ?1")?;
        Ok(statement.execute([key])? > 0)
    }

    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, Entry)>, StoreError> {
        let connection = self.lock();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // BINARY collation compares UTF-8 bytes, the same order as Rust's `str`. Two
        // statements rather than `?1 IS NULL OR key > ?1`, which would defeat the index.
        let mut statement = connection.prepare_cached(match after {
            None => "SELECT key, version, tombstone, value FROM kv ORDER BY key LIMIT ?2",
            Some(_) => {
                "SELECT key, version, tombstone, value FROM kv WHERE key > ?1 ORDER BY key LIMIT ?2"
            }
        })?;
        let rows = statement.query_map(params![after, limit], |row| {
            Ok((
                row.get::<_, String>(0)?,
                (row.get(1)?, row.get(2)?, row.get(3)?),
            ))
        })?;
        let mut entries = Vec::new();
        for row in rows {
            let (key, parts) = row?;
            let entry = entry_from_parts(&key, parts)?;
            entries.push((key, entry));
        }
        Ok(entries)
    }
}
