//! The real-time runner: the fixed migration on real stores while writer threads load them.
//!
//! This is the only module with threads and wall clocks; the simulator never uses it. The
//! coordinator runs on the calling thread; each writer thread puts, deletes and reads keys
//! through [`Writer`], holding a read lock on the phase for the whole operation, so a phase
//! change (the coordinator takes the write lock) waits for operations in flight.
//!
//! The oracle: every writer keeps the newest entry it saw acknowledged per key; after the
//! run, Y must hold exactly the newest acknowledged entry of every key written, the starting
//! entry of every key not written, and nothing else live. A read that returns an older
//! version than one the same writer already had acknowledged counts as a stale read.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::compare::{self, MismatchReport};
use crate::coordinator::{Coordinator, MigrationError, Step, VerifyPass};
use crate::phase_log::{PhaseLog, PhaseRecord};
use crate::store::{Entry, Store, StoreError};
use crate::writer::{WriteOp, Writer};
use crate::{Phase, Variant};

/// The built-in write load.
#[derive(Debug, Clone, Serialize)]
pub struct LoadConfig {
    pub writers: usize,
    /// Each writer stops after this many operations...
    pub ops_per_writer_max: u64,
    /// ...or when the migration is done, or after this long, whichever comes first.
    pub duration_max: Duration,
    /// Keys are drawn from `key-00000000` up to this count (beyond the seeded ones: new keys).
    pub key_space: u64,
    /// Percent of operations that delete; as many again read; the rest put.
    pub delete_percent: u32,
    /// Seeds every writer's generator (writer `i` uses `seed + i`).
    pub seed: u64,
}

/// How the migration runs.
#[derive(Debug, Clone, Serialize)]
pub struct LiveConfig {
    pub batch_keys: usize,
    /// Verify passes allowed before the run gives up (each repairs what it finds).
    pub verify_passes_max: u64,
    pub load: LoadConfig,
}

/// Counts and time spent in one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseCounts {
    pub phase: Option<Phase>,
    pub duration_ms: u64,
    pub puts: u64,
    pub deletes: u64,
    /// Deletes of keys already absent: nothing to acknowledge.
    pub deletes_absent: u64,
    pub reads: u64,
}

/// What a run did and found.
#[derive(Debug, Clone, Serialize)]
pub struct LiveReport {
    pub phases: Vec<PhaseCounts>,
    pub record: PhaseRecord,
    pub last_verify: Option<VerifyPass>,
    /// Keys/second the backfill copied, over the `Backfill` phase's wall time.
    pub backfill_keys_per_second: f64,
    pub load_ops: u64,
    pub load_ops_per_second: f64,
    /// Operations that failed with a store error (the run then fails).
    pub load_errors: u64,
    pub load_first_error: Option<String>,
    pub stale_reads: u64,
    /// Keys the final comparison checked, and what it found.
    pub final_keys_checked: u64,
    pub final_check: MismatchReport,
    /// From the coordinator's start to `Done`: the migration itself.
    pub migration_ms: u64,
    /// Everything, including the oracle's snapshot and the final comparison.
    pub duration_ms: u64,
}

impl LiveReport {
    /// True when Y holds the last acknowledged write of every key, no read went back in
    /// time, no operation failed, and the migration reached `Done`.
    pub fn holds(&self) -> bool {
        self.final_check.is_clean()
            && self.stale_reads == 0
            && self.load_errors == 0
            && self.record.phase == Phase::Done
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "verify still found mismatches after {passes} passes (last pass: {mismatches}); the \
         load may be too heavy for the store — rerun with fewer writers or more passes"
    )]
    VerifyDidNotConverge { passes: u64, mismatches: u64 },
    #[error("a writer thread panicked: {0}")]
    WriterPanicked(String),
}

/// What one writer thread saw.
#[derive(Default)]
struct WriterTally {
    acked: BTreeMap<String, Entry>,
    counts: [PhaseCounts; Phase::ALL.len()],
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    stale_reads: u64,
}

/// Runs (or resumes) the fixed migration from `x` to `y` under the load and checks Y.
pub fn run_fixed(
    x: &dyn Store,
    y: &dyn Store,
    log: &mut dyn PhaseLog,
    config: &LiveConfig,
) -> Result<LiveReport, LiveError> {
    let started = Instant::now();
    let mut coordinator = Coordinator::open(log, Variant::Fixed, config.batch_keys)?;
    let authority = if coordinator.phase().writes_x() { x } else { y };
    let starting = compare::all_entries(authority, config.batch_keys)?;
    let gate = RwLock::new(coordinator.phase());
    let stop = AtomicBool::new(false);
    let ops_done = AtomicU64::new(0);
    let deadline = started + config.load.duration_max;
    let migration_started = Instant::now();
    let (driven, tallies) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..config.load.writers)
            .map(|index| {
                let (gate, stop, load, ops_done) = (&gate, &stop, &config.load, &ops_done);
                let writer_index = index as u64;
                scope.spawn(move || {
                    write_load(x, y, (gate, stop, ops_done), load, writer_index, deadline)
                })
            })
            .collect();
        // The load must overlap the migration from its first phase: on fast stores
        // the coordinator could otherwise finish before a writer thread is scheduled.
        let ops_wanted = (config.load.writers as u64).min(config.load.ops_per_writer_max);
        while ops_done.load(Ordering::Relaxed) < ops_wanted && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let driven = drive(&mut coordinator, x, y, log, &gate, config.verify_passes_max);
        stop.store(true, Ordering::Relaxed);
        let tallies: Result<Vec<WriterTally>, LiveError> = handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .map_err(|panic| LiveError::WriterPanicked(format!("{panic:?}")))
            })
            .collect();
        (driven, tallies)
    });
    let migration_ms = elapsed_ms(migration_started);
    let phase_ms = driven?;
    let tallies = tallies?;
    let timing = Timing {
        phase_ms,
        migration_ms,
        started,
    };
    report(coordinator, starting, tallies, timing, y, config)
}

/// The coordinator loop: step, publish each new phase under the write lock, time each phase.
fn drive(
    coordinator: &mut Coordinator,
    x: &dyn Store,
    y: &dyn Store,
    log: &mut dyn PhaseLog,
    gate: &RwLock<Phase>,
    verify_passes_max: u64,
) -> Result<[u64; Phase::ALL.len()], LiveError> {
    let mut phase_ms = [0u64; Phase::ALL.len()];
    let mut phase_started = Instant::now();
    loop {
        let step = coordinator.step(x, y, log)?;
        match step {
            Step::Finished => return Ok(phase_ms),
            Step::Advanced { from, to } => {
                *gate
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = to;
                phase_ms[from.index()] += elapsed_ms(phase_started);
                phase_started = Instant::now();
            }
            Step::Worked | Step::Waiting { .. } => {}
        }
        let record = coordinator.record();
        if record.phase == Phase::Verify && record.verify_passes >= verify_passes_max {
            let mismatches = coordinator
                .last_verify
                .as_ref()
                .map_or(0, |pass| pass.report.count);
            return Err(LiveError::VerifyDidNotConverge {
                passes: record.verify_passes,
                mismatches,
            });
        }
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One writer thread: random puts, deletes and reads until told to stop.
fn write_load(
    x: &dyn Store,
    y: &dyn Store,
    (gate, stop, ops_done): (&RwLock<Phase>, &AtomicBool, &AtomicU64),
    load: &LoadConfig,
    writer_index: u64,
    deadline: Instant,
) -> WriterTally {
    let mut random = rand_chacha::ChaCha8Rng::seed_from_u64(load.seed.wrapping_add(writer_index));
    let writer = Writer {
        x,
        y,
        variant: Variant::Fixed,
    };
    let mut tally = WriterTally::default();
    while tally.ops < load.ops_per_writer_max && !stop.load(Ordering::Relaxed) {
        if tally.ops % 64 == 0 && Instant::now() >= deadline {
            break;
        }
        let key = format!("key-{:08}", random.random_range(0..load.key_space.max(1)));
        let roll = random.random_range(0..100);
        let guard = gate.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let phase = *guard;
        let counts = &mut tally.counts[phase.index()];
        let outcome = if roll < load.delete_percent {
            counts.deletes += 1;
            writer.write(phase, &key, &WriteOp::Delete).map(Some)
        } else if roll < 2 * load.delete_percent {
            counts.reads += 1;
            writer.read(phase, &key).map(|read| {
                let seen = tally.acked.get(&key).map_or(0, |entry| entry.version);
                if read.is_none_or(|entry| entry.version < seen) && seen > 0 {
                    tally.stale_reads += 1;
                }
                None
            })
        } else {
            counts.puts += 1;
            let value = format!("w{writer_index}-op{}", tally.ops).into_bytes();
            writer.write(phase, &key, &WriteOp::Put(value)).map(Some)
        };
        drop(guard);
        tally.ops += 1;
        ops_done.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(Some(Some(entry))) => keep_newest(&mut tally.acked, key, entry),
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => tally.counts[phase.index()].deletes_absent += 1,
            Err(error) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    tally
}

fn keep_newest(acked: &mut BTreeMap<String, Entry>, key: String, entry: Entry) {
    let slot = acked.entry(key).or_insert_with(|| entry.clone());
    if entry.version > slot.version {
        *slot = entry;
    }
}

struct Timing {
    phase_ms: [u64; Phase::ALL.len()],
    migration_ms: u64,
    started: Instant,
}

fn report(
    coordinator: Coordinator,
    starting: BTreeMap<String, Entry>,
    tallies: Vec<WriterTally>,
    timing: Timing,
    y: &dyn Store,
    config: &LiveConfig,
) -> Result<LiveReport, LiveError> {
    let Timing {
        phase_ms,
        migration_ms,
        started,
    } = timing;
    let mut expected = starting;
    let mut phases: Vec<PhaseCounts> = Phase::ALL
        .iter()
        .map(|phase| PhaseCounts {
            phase: Some(*phase),
            duration_ms: phase_ms[phase.index()],
            ..PhaseCounts::default()
        })
        .collect();
    let (mut load_ops, mut load_errors, mut stale_reads, mut load_first_error) = (0, 0, 0, None);
    for tally in tallies {
        for (key, entry) in tally.acked {
            keep_newest(&mut expected, key, entry);
        }
        for (total, counts) in phases.iter_mut().zip(&tally.counts) {
            total.puts += counts.puts;
            total.deletes += counts.deletes;
            total.deletes_absent += counts.deletes_absent;
            total.reads += counts.reads;
        }
        load_ops += tally.ops;
        load_errors += tally.errors;
        stale_reads += tally.stale_reads;
        load_first_error = load_first_error.or(tally.first_error);
    }
    let final_check = compare::compare_to_expected(&expected, y, config.batch_keys)?;
    let duration_ms = elapsed_ms(started).max(1);
    let record = coordinator.record().clone();
    let backfill_ms = phase_ms[Phase::Backfill.index()].max(1);
    Ok(LiveReport {
        phases,
        backfill_keys_per_second: record.backfill_keys_scanned as f64 * 1000.0 / backfill_ms as f64,
        record,
        last_verify: coordinator.last_verify,
        load_ops,
        load_ops_per_second: load_ops as f64 * 1000.0 / migration_ms.max(1) as f64,
        load_errors,
        load_first_error,
        stale_reads,
        final_keys_checked: expected.len() as u64,
        final_check,
        migration_ms,
        duration_ms,
    })
}
