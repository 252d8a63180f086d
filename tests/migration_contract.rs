//! The store contract (`migration::contract`) run against every store the migration uses for
//! real: the in-memory fake, SQLite and redb, on real files in temporary directories.

use migration::contract;
use migration::store::memory::MemStore;
use migration::store::redb_store::RedbStore;
use migration::store::sqlite::SqliteStore;

/// A fresh file path per store, kept alive by the returned directories.
fn fresh_paths(extension: &str) -> (Vec<tempfile::TempDir>, impl FnMut() -> std::path::PathBuf) {
    let directory = tempfile::tempdir().expect("temp dir");
    let root = directory.path().to_path_buf();
    let mut count = 0;
    let extension = extension.to_string();
    let next = move || {
        count += 1;
        root.join(format!("store-{count}.{extension}"))
    };
    (vec![directory], next)
}

#[test]
fn memory_store_meets_the_contract() {
    contract::check_all(MemStore::new);
}

#[test]
fn sqlite_store_meets_the_contract() {
    let (_keep, mut next_path) = fresh_paths("db");
    contract::check_all(|| SqliteStore::open(&next_path()).expect("open SQLite"));
}

#[test]
fn redb_store_meets_the_contract() {
    let (_keep, mut next_path) = fresh_paths("redb");
    contract::check_all(|| RedbStore::open(&next_path()).expect("open redb"));
}

#[test]
fn sqlite_store_keeps_entries_across_reopen() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("x.db");
    contract::check_reopen(|| SqliteStore::open(&path).expect("open SQLite"));
}

#[test]
fn redb_store_keeps_entries_across_reopen() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("y.redb");
    contract::check_reopen(|| RedbStore::open(&path).expect("open redb"));
}

/// The suite must be able to fail: a store that ignores versions breaks it.
#[test]
fn contract_rejects_a_store_that_overwrites_unconditionally() {
    struct Careless(MemStore);
    impl migration::store::Store for Careless {
        fn get_entry(
            &self,
            key: &str,
        ) -> Result<Option<migration::store::Entry>, migration::store::StoreError> {
            self.0.get_entry(key)
        }
        fn put(&self, key: &str, value: &[u8]) -> Result<u64, migration::store::StoreError> {
            self.0.put(key, value)
        }
        fn delete(&self, key: &str) -> Result<u64, migration::store::StoreError> {
            self.0.delete(key)
        }
        fn apply_if_newer(
            &self,
            key: &str,
            entry: &migration::store::Entry,
        ) -> Result<migration::store::Applied, migration::store::StoreError> {
            self.0.put_unconditional(key, entry)?;
            Ok(migration::store::Applied::Applied)
        }
        fn put_unconditional(
            &self,
            key: &str,
            entry: &migration::store::Entry,
        ) -> Result<(), migration::store::StoreError> {
            self.0.put_unconditional(key, entry)
        }
        fn remove(&self, key: &str) -> Result<bool, migration::store::StoreError> {
            self.0.remove(key)
        }
        fn scan(
            &self,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<(String, migration::store::Entry)>, migration::store::StoreError> {
            self.0.scan(after, limit)
        }
    }
    let outcome = std::panic::catch_unwind(|| contract::check_all(|| Careless(MemStore::new())));
    let message = *outcome
        .expect_err("the contract must catch it")
        .downcast::<String>()
        .unwrap();
    assert!(
        message.contains("apply_if_newer keeps the newest"),
        "{message}"
    );
}
