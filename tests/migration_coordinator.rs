//! The coordinator survives crashes: every phase change and backfill batch is saved before
//! the step returns, and a coordinator opened on the saved record carries on without going
//! back a phase or copying a batch twice.

use std::collections::BTreeMap;

use migration::compare;
use migration::coordinator::{Coordinator, MigrationError, Step};
use migration::phase_log::{FilePhaseLog, MemPhaseLog, PhaseLog};
use migration::store::memory::MemStore;
use migration::store::redb_store::RedbStore;
use migration::store::sqlite::SqliteStore;
use migration::store::{Entry, Store, StoreError};
use migration::writer::{WriteOp, Writer};
use migration::{Phase, Variant};

const BATCH_KEYS: usize = 4;
const KEYS: usize = 25;

fn seeded_x(x: &dyn Store) {
    for index in 0..KEYS {
        x.put(
            &format!("key-{index:03}"),
            format!("seed-{index}").as_bytes(),
        )
        .unwrap();
    }
}

/// Steps until the migration is done; panics if it takes absurdly long.
fn finish(coordinator: &mut Coordinator, x: &dyn Store, y: &dyn Store, log: &mut dyn PhaseLog) {
    for _ in 0..1000 {
        if coordinator.step(x, y, log).unwrap() == Step::Finished {
            return;
        }
    }
    panic!(
        "migration did not finish; stuck in {:?}",
        coordinator.phase()
    );
}

fn assert_y_matches_x(x: &dyn Store, y: &dyn Store) {
    let expected: BTreeMap<String, Entry> = compare::all_entries(x, 7).unwrap();
    let report = compare::compare_to_expected(&expected, y, 7).unwrap();
    assert!(
        report.is_clean(),
        "Y differs from X after the migration: {report:?}"
    );
}

#[test]
fn a_coordinator_crashed_mid_backfill_resumes_after_its_last_batch() {
    let (x, y, mut log) = (MemStore::new(), MemStore::new(), MemPhaseLog::new());
    seeded_x(&x);
    let mut first = Coordinator::open(&mut log, Variant::Fixed, BATCH_KEYS).unwrap();
    for _ in 0..4 {
        first.step(&x, &y, &mut log).unwrap(); // DualWrite → Backfill, then three batches.
    }
    assert_eq!(first.phase(), Phase::Backfill);
    drop(first); // The coordinator crashes; writers carry on in the recorded phase.
    let writer = Writer {
        x: &x,
        y: &y,
        variant: Variant::Fixed,
    };
    writer
        .write(
            Phase::Backfill,
            "key-001",
            &WriteOp::Put(b"while down".to_vec()),
        )
        .unwrap();
    writer
        .write(Phase::Backfill, "key-020", &WriteOp::Delete)
        .unwrap();

    let mut second = Coordinator::open(&mut log, Variant::Fixed, BATCH_KEYS).unwrap();
    let record = second.record().clone();
    assert_eq!((record.phase, record.resumes), (Phase::Backfill, 1));
    assert_eq!(
        record.backfill_cursor.as_deref(),
        Some("key-011"),
        "three batches of four"
    );
    assert_eq!(record.backfill_keys_scanned, 12);
    finish(&mut second, &x, &y, &mut log);
    assert_eq!(
        second.record().backfill_keys_scanned,
        KEYS as u64,
        "no batch copied twice"
    );
    assert_y_matches_x(&x, &y);
    assert_eq!(y.get("key-020").unwrap(), None);
}

/// Crash after every possible number of steps, with the record in a real file: the resumed
/// run never starts in an earlier phase than the crashed one reached, and always finishes
/// with Y equal to X.
#[test]
fn a_crash_after_any_step_resumes_from_the_file_record() {
    let steps_total = {
        let (x, y, mut log) = (MemStore::new(), MemStore::new(), MemPhaseLog::new());
        seeded_x(&x);
        let mut coordinator = Coordinator::open(&mut log, Variant::Fixed, BATCH_KEYS).unwrap();
        let mut steps = 0;
        while coordinator.step(&x, &y, &mut log).unwrap() != Step::Finished {
            steps += 1;
        }
        steps
    };
    assert!(
        steps_total > 10,
        "the run must cross several phases and batches"
    );
    for crash_after in 0..=steps_total {
        let directory = tempfile::tempdir().unwrap();
        let mut log = FilePhaseLog::new(directory.path().join("phase.json"));
        let (x, y) = (MemStore::new(), MemStore::new());
        seeded_x(&x);
        let mut crashed = Coordinator::open(&mut log, Variant::Fixed, BATCH_KEYS).unwrap();
        for _ in 0..crash_after {
            crashed.step(&x, &y, &mut log).unwrap();
        }
        let reached = crashed.phase();
        drop(crashed);
        let mut resumed = Coordinator::open(&mut log, Variant::Fixed, BATCH_KEYS).unwrap();
        assert_eq!(resumed.phase(), reached, "crash after {crash_after} steps");
        finish(&mut resumed, &x, &y, &mut log);
        assert_y_matches_x(&x, &y);
        assert_eq!(log.load().unwrap().unwrap().phase, Phase::Done);
    }
}

#[test]
fn a_fixed_migration_between_sqlite_and_redb_files_copies_everything() {
    let directory = tempfile::tempdir().unwrap();
    let x = SqliteStore::open(&directory.path().join("x.db")).unwrap();
    let y = RedbStore::open(&directory.path().join("y.redb")).unwrap();
    seeded_x(&x);
    x.delete("key-005").unwrap();
    let mut log = FilePhaseLog::new(directory.path().join("phase.json"));
    let mut coordinator = Coordinator::open(&mut log, Variant::Fixed, BATCH_KEYS).unwrap();
    finish(&mut coordinator, &x, &y, &mut log);
    assert_y_matches_x(&x, &y);
    assert_eq!(y.get_entry("key-005").unwrap(), Some(Entry::tombstone(2)));
}

#[test]
fn resuming_with_the_other_variant_is_refused() {
    let mut log = MemPhaseLog::new();
    Coordinator::open(&mut log, Variant::Naive, BATCH_KEYS).unwrap();
    let error = Coordinator::open(&mut log, Variant::Fixed, BATCH_KEYS).unwrap_err();
    assert!(
        matches!(error, MigrationError::VariantMismatch { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("move the log aside"), "{error}");
}

#[test]
fn a_malformed_phase_log_is_reported_not_overwritten() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("phase.json");
    std::fs::write(&path, b"{ not json").unwrap();
    let mut log = FilePhaseLog::new(&path);
    let error = Coordinator::open(&mut log, Variant::Fixed, BATCH_KEYS).unwrap_err();
    assert!(
        error.to_string().contains("not a migration record"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"{ not json",
        "the file must be left alone"
    );
}

/// Two different writes carrying one version cannot be repaired: the backfill and verify
/// must both stop rather than pick one.
#[test]
fn backfill_and_verify_stop_on_a_version_conflict() {
    let (x, y, mut log) = (MemStore::new(), MemStore::new(), MemPhaseLog::new());
    x.put("k", b"from x").unwrap();
    y.put("k", b"from elsewhere").unwrap();
    let mut coordinator = Coordinator::open(&mut log, Variant::Fixed, BATCH_KEYS).unwrap();
    coordinator.step(&x, &y, &mut log).unwrap(); // DualWrite → Backfill
    let error = coordinator.step(&x, &y, &mut log).unwrap_err();
    assert!(
        matches!(
            error,
            MigrationError::Store(StoreError::VersionConflict { .. })
        ),
        "{error}"
    );

    y.put_unconditional("k", &Entry::value("from x", 1))
        .unwrap();
    while coordinator.phase() != Phase::Verify {
        coordinator.step(&x, &y, &mut log).unwrap();
    }
    y.put_unconditional("k", &Entry::value("corrupted", 1))
        .unwrap();
    let error = coordinator.step(&x, &y, &mut log).unwrap_err();
    assert!(
        matches!(error, MigrationError::Conflict { count: 1, .. }),
        "{error}"
    );
    assert_eq!(
        coordinator.phase(),
        Phase::Verify,
        "it must not switch reads"
    );
}
