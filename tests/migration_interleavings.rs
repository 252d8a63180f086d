//! Hand-scripted interleavings, one per way the naive migration loses data: each runs the
//! same schedule against `naive` and `fixed` on the in-memory stores. Naive must show the
//! failure; fixed must finish with Y holding exactly what X acknowledged.
//!
//! The schedules use the shared vocabulary: `WriteX` then `DeliverY` are a dual write's two
//! halves, a dropped `InFlight` is `CrashWriter`, and `Backfill` is split into its scan of X
//! and its write to Y so a client write can land in between.

use std::collections::BTreeMap;

use migration::compare;
use migration::coordinator::{Coordinator, Step};
use migration::phase_log::MemPhaseLog;
use migration::store::memory::MemStore;
use migration::store::{Entry, Store};
use migration::writer::{self, WriteOp, Writer};
use migration::{Phase, Variant};

const BATCH_KEYS: usize = 8;
/// Steps a run may take before it counts as stalled: far more than these tiny stores need.
const STEPS_MAX: usize = 50;

struct Run {
    variant: Variant,
    x: MemStore,
    y: MemStore,
    log: MemPhaseLog,
    coordinator: Coordinator,
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    Done,
    /// Verify kept finding mismatches and never let the migration move on.
    Stalled {
        phase: Phase,
        mismatches: u64,
    },
}

impl Run {
    /// X seeded with `seed` (one put per key), before the migration starts.
    fn new(variant: Variant, seed: &[(&str, &str)]) -> Run {
        let x = MemStore::new();
        for (key, value) in seed {
            x.put(key, value.as_bytes()).unwrap();
        }
        let mut log = MemPhaseLog::new();
        let coordinator = Coordinator::open(&mut log, variant, BATCH_KEYS).unwrap();
        Run {
            variant,
            x,
            y: MemStore::new(),
            log,
            coordinator,
        }
    }

    fn writer(&self) -> Writer<'_> {
        Writer {
            x: &self.x,
            y: &self.y,
            variant: self.variant,
        }
    }

    fn step(&mut self) -> Step {
        self.coordinator
            .step(&self.x, &self.y, &mut self.log)
            .unwrap()
    }

    /// Steps the coordinator until it reaches `phase`.
    fn advance_to(&mut self, phase: Phase) {
        for _ in 0..STEPS_MAX {
            if self.coordinator.phase() == phase {
                return;
            }
            self.step();
        }
        panic!(
            "never reached {phase:?}; stuck in {:?}",
            self.coordinator.phase()
        );
    }

    /// Steps to `Done`, or reports the stall.
    fn finish(&mut self) -> End {
        let mut mismatches = 0;
        for _ in 0..STEPS_MAX {
            match self.step() {
                Step::Finished => return End::Done,
                Step::Waiting { mismatches: count } => mismatches = count,
                Step::Worked | Step::Advanced { .. } => {}
            }
        }
        End::Stalled {
            phase: self.coordinator.phase(),
            mismatches,
        }
    }

    fn y_value(&self, key: &str) -> Option<String> {
        self.y
            .get(key)
            .unwrap()
            .map(|bytes| String::from_utf8(bytes).unwrap())
    }

    /// Y must hold exactly X's entries: X acknowledged every write these scripts make
    /// before `StopWritingX`.
    fn assert_y_matches_x(&self) {
        let expected: BTreeMap<String, Entry> = self.x.snapshot();
        let report = compare::compare_to_expected(&expected, &self.y, BATCH_KEYS).unwrap();
        assert!(report.is_clean(), "Y differs from X: {report:?}");
    }
}

fn put(value: &str) -> WriteOp {
    WriteOp::Put(value.as_bytes().to_vec())
}

/// Order race: two writers put one key; X orders them a then b, but Y receives b then a.
fn order_race(variant: Variant) -> Run {
    let mut run = Run::new(variant, &[("k", "seed")]);
    run.advance_to(Phase::ReadFromY);
    let first = writer::write_x(&run.x, variant, "k", &put("a")).unwrap();
    let second = writer::write_x(&run.x, variant, "k", &put("b")).unwrap();
    writer::deliver_y(&run.y, &second).unwrap();
    writer::deliver_y(&run.y, &first).unwrap();
    run
}

#[test]
fn order_race_loses_the_last_write_in_naive() {
    let mut run = order_race(Variant::Naive);
    assert_eq!(
        run.y_value("k").as_deref(),
        Some("a"),
        "Y must hold the overtaken write"
    );
    assert_eq!(
        run.writer()
            .read(Phase::ReadFromY, "k")
            .unwrap()
            .unwrap()
            .live_value(),
        Some(&b"a"[..])
    );
    assert_eq!(run.finish(), End::Done, "naive finishes without noticing");
    assert_eq!(
        run.y_value("k").as_deref(),
        Some("a"),
        "b was acknowledged last, yet lost"
    );
}

#[test]
fn order_race_converges_in_fixed() {
    let mut run = order_race(Variant::Fixed);
    assert_eq!(run.y_value("k").as_deref(), Some("b"));
    assert_eq!(run.finish(), End::Done);
    run.assert_y_matches_x();
}

/// Backfill overwrite: the backfill reads k = a from X; a writer then puts k = b to both
/// stores; the backfill's stale copy of a reaches Y last.
fn backfill_overwrite(variant: Variant) -> Run {
    let mut run = Run::new(variant, &[("k", "a")]);
    run.advance_to(Phase::Backfill);
    let batch = run.coordinator.backfill_read(&run.x).unwrap();
    run.writer().write(Phase::Backfill, "k", &put("b")).unwrap();
    run.coordinator
        .backfill_write(&run.y, &batch, &mut run.log)
        .unwrap();
    run
}

#[test]
fn backfill_overwrite_clobbers_a_newer_write_in_naive() {
    let mut run = backfill_overwrite(Variant::Naive);
    assert_eq!(
        run.y_value("k").as_deref(),
        Some("a"),
        "the backfill overwrote b with a"
    );
    let end = run.finish();
    assert!(
        matches!(
            end,
            End::Stalled {
                phase: Phase::Verify,
                mismatches: 1
            }
        ),
        "naive verify must wait forever on the clobbered key, got {end:?}"
    );
}

#[test]
fn backfill_overwrite_is_refused_in_fixed() {
    let mut run = backfill_overwrite(Variant::Fixed);
    assert_eq!(run.y_value("k").as_deref(), Some("b"));
    assert_eq!(run.finish(), End::Done);
    run.assert_y_matches_x();
    assert_eq!(
        run.coordinator.record().backfill_keys_stale,
        1,
        "the stale copy was dropped"
    );
}

/// Resurrected delete: the backfill reads k = a from X; a writer deletes k in both stores;
/// the backfill's copy of a reaches Y after the delete.
fn resurrected_delete(variant: Variant) -> Run {
    let mut run = Run::new(variant, &[("k", "a"), ("other", "o")]);
    run.advance_to(Phase::Backfill);
    let batch = run.coordinator.backfill_read(&run.x).unwrap();
    run.writer()
        .write(Phase::Backfill, "k", &WriteOp::Delete)
        .unwrap();
    run.coordinator
        .backfill_write(&run.y, &batch, &mut run.log)
        .unwrap();
    run
}

#[test]
fn resurrected_delete_brings_a_deleted_key_back_in_naive() {
    let mut run = resurrected_delete(Variant::Naive);
    assert_eq!(run.x.get("k").unwrap(), None);
    assert_eq!(
        run.y_value("k").as_deref(),
        Some("a"),
        "the deleted key is back in Y"
    );
    let end = run.finish();
    assert!(
        matches!(
            end,
            End::Stalled {
                phase: Phase::Verify,
                ..
            }
        ),
        "got {end:?}"
    );
}

#[test]
fn resurrected_delete_stays_deleted_in_fixed() {
    let mut run = resurrected_delete(Variant::Fixed);
    assert_eq!(run.y_value("k"), None);
    assert_eq!(run.y.get_entry("k").unwrap(), Some(Entry::tombstone(2)));
    assert_eq!(run.finish(), End::Done);
    run.assert_y_matches_x();
}

/// Crash between X and Y writes: after the backfill, a writer's put reaches X and the writer
/// crashes before `DeliverY`.
fn crash_between_writes(variant: Variant) -> Run {
    let mut run = Run::new(variant, &[("k", "a")]);
    run.advance_to(Phase::Verify);
    let in_flight = writer::write_x(&run.x, variant, "k", &put("b")).unwrap();
    drop(in_flight); // CrashWriter: Y never hears of b.
    run
}

#[test]
fn crash_between_writes_stalls_naive_verify_forever() {
    let mut run = crash_between_writes(Variant::Naive);
    let end = run.finish();
    assert_eq!(
        end,
        End::Stalled {
            phase: Phase::Verify,
            mismatches: 1
        }
    );
    assert_eq!(run.y_value("k").as_deref(), Some("a"));
}

#[test]
fn crash_between_writes_is_repaired_by_fixed_verify() {
    let mut run = crash_between_writes(Variant::Fixed);
    assert_eq!(run.finish(), End::Done);
    assert_eq!(run.y_value("k").as_deref(), Some("b"));
    run.assert_y_matches_x();
    let record = run.coordinator.record();
    assert_eq!(
        (
            record.verify_mismatches_found,
            record.verify_mismatches_repaired
        ),
        (1, 1)
    );
    assert_eq!(
        record.verify_passes, 2,
        "one pass repairs, the next finds nothing"
    );
}

/// After `StopWritingX`, writes reach Y alone and Y continues the key's versions.
#[test]
fn after_stop_writing_x_only_y_is_written() {
    let mut run = Run::new(Variant::Fixed, &[("k", "a")]);
    run.advance_to(Phase::StopWritingX);
    let acked = run
        .writer()
        .write(Phase::StopWritingX, "k", &put("z"))
        .unwrap();
    assert_eq!(acked, Some(Entry::value("z", 2)));
    let deleted = run
        .writer()
        .write(Phase::StopWritingX, "k", &WriteOp::Delete)
        .unwrap();
    assert_eq!(deleted, Some(Entry::tombstone(3)));
    assert_eq!(
        run.x.get_entry("k").unwrap(),
        Some(Entry::value("a", 1)),
        "X was written"
    );
    assert_eq!(
        run.writer().read(Phase::StopWritingX, "k").unwrap(),
        Some(Entry::tombstone(3))
    );
    assert_eq!(run.finish(), End::Done);
}
