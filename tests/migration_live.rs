//! The real-time runner: the fixed migration under concurrent writer threads, checked by the
//! oracle (Y holds the newest acknowledged entry of every key) — and a broken store that the
//! oracle must catch.

use std::time::Duration;

use migration::Phase;
use migration::compare::MismatchKind;
use migration::live::{self, LiveConfig, LoadConfig};
use migration::phase_log::MemPhaseLog;
use migration::store::memory::MemStore;
use migration::store::redb_store::RedbStore;
use migration::store::sqlite::SqliteStore;
use migration::store::{Applied, Entry, Store, StoreError};

const SEEDED_KEYS: u64 = 600;

fn config(writers: usize, ops_per_writer_max: u64) -> LiveConfig {
    LiveConfig {
        batch_keys: 50,
        verify_passes_max: 20,
        load: LoadConfig {
            writers,
            ops_per_writer_max,
            duration_max: Duration::from_secs(20),
            key_space: SEEDED_KEYS + SEEDED_KEYS / 10,
            delete_percent: 20,
            seed: 7,
        },
    }
}

fn seed(x: &dyn Store) {
    let batch: Vec<(String, Entry)> = (0..SEEDED_KEYS)
        .map(|index| {
            (
                format!("key-{index:08}"),
                Entry::value(format!("seed-{index}"), 1),
            )
        })
        .collect();
    x.put_batch_unconditional(&batch).unwrap();
}

#[test]
fn fixed_migration_under_load_between_memory_stores_holds() {
    let (x, y, mut log) = (MemStore::new(), MemStore::new(), MemPhaseLog::new());
    seed(&x);
    let report = live::run_fixed(&x, &y, &mut log, &config(3, 2_000)).unwrap();
    assert!(report.holds(), "{report:#?}");
    assert_eq!(report.record.phase, Phase::Done);
    assert_eq!(
        report.final_keys_checked,
        y.scan(None, 10_000).unwrap().len() as u64
    );
    assert!(report.record.backfill_keys_scanned >= SEEDED_KEYS);
    assert!(report.load_ops > 0, "the load must have run");
}

#[test]
fn fixed_migration_under_load_from_sqlite_to_redb_holds() {
    let directory = tempfile::tempdir().unwrap();
    let x = SqliteStore::open(&directory.path().join("x.db")).unwrap();
    let y = RedbStore::open(&directory.path().join("y.redb")).unwrap();
    seed(&x);
    let mut log = MemPhaseLog::new();
    let report = live::run_fixed(&x, &y, &mut log, &config(2, 150)).unwrap();
    assert!(report.holds(), "{report:#?}");
    let writes: u64 = report
        .phases
        .iter()
        .map(|counts| counts.puts + counts.deletes)
        .sum();
    assert!(
        writes > 0,
        "writers must have written during the migration: {report:#?}"
    );
}

/// A Y whose listing loses one key: point reads (all verify uses) stay truthful, so only
/// the final full comparison can notice.
struct ListingLosesAKey(MemStore);

const LOST_KEY: &str = "key-00000003";

impl Store for ListingLosesAKey {
    fn get_entry(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.0.get_entry(key)
    }
    fn put(&self, key: &str, value: &[u8]) -> Result<u64, StoreError> {
        self.0.put(key, value)
    }
    fn delete(&self, key: &str) -> Result<u64, StoreError> {
        self.0.delete(key)
    }
    fn apply_if_newer(&self, key: &str, entry: &Entry) -> Result<Applied, StoreError> {
        self.0.apply_if_newer(key, entry)
    }
    fn put_unconditional(&self, key: &str, entry: &Entry) -> Result<(), StoreError> {
        self.0.put_unconditional(key, entry)
    }
    fn remove(&self, key: &str) -> Result<bool, StoreError> {
        self.0.remove(key)
    }
    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, Entry)>, StoreError> {
        let mut entries = self.0.scan(after, limit)?;
        entries.retain(|(key, _)| key != LOST_KEY);
        Ok(entries)
    }
}

#[test]
fn the_final_comparison_catches_a_key_missing_from_y() {
    let (x, y, mut log) = (
        MemStore::new(),
        ListingLosesAKey(MemStore::new()),
        MemPhaseLog::new(),
    );
    seed(&x);
    let report = live::run_fixed(&x, &y, &mut log, &config(0, 0)).unwrap();
    assert_eq!(report.record.phase, Phase::Done);
    assert_eq!(
        report.record.verify_mismatches_found, 0,
        "point reads were truthful"
    );
    assert!(
        !report.holds(),
        "a key missing from Y's listing went unnoticed"
    );
    assert_eq!(report.final_check.count, 1);
    let mismatch = &report.final_check.samples[0];
    assert_eq!(
        (mismatch.key.as_str(), mismatch.kind),
        (LOST_KEY, MismatchKind::MissingInY)
    );
}
