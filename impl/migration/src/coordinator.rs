//! The migration coordinator: a phase machine advanced one bounded step at a time.
//!
//! Each [`Coordinator::step`] does one piece of work — a `Backfill` batch, one `Verify`
//! pass, or one phase change — and saves the [`PhaseRecord`] before returning. The caller
//! owns control flow: it loops, and on [`Step::Advanced`] it publishes the new phase to the
//! writers (waiting for operations in flight) before stepping again. A crash at any point
//! loses at most the step under way; [`Coordinator::open`] resumes from the saved record,
//! and the backfill restarts after the last batch it recorded.
//!
//! The leaves ([`backfill_apply`], [`verify_pass`]) are public so that hand-scripted
//! interleavings and the simulator can run a step's halves with writes in between.

use crate::compare::{self, Mismatch, MismatchKind, MismatchReport};
use crate::phase_log::{PhaseLog, PhaseLogError, PhaseRecord};
use crate::store::{Applied, BatchApplied, Entry, Store, StoreError};
use crate::{Phase, Variant};

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Work within the phase: a backfill batch, or a verify pass that repaired mismatches.
    Worked,
    /// The phase changed and the change is saved; publish `to` to the writers now.
    Advanced { from: Phase, to: Phase },
    /// Naive verify found X and Y different; it never repairs, so it can only wait.
    Waiting { mismatches: u64 },
    /// The migration is done.
    Finished,
}

/// Why the coordinator stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    PhaseLog(#[from] PhaseLogError),
    #[error(
        "the phase log records a {recorded:?} migration but {requested:?} was requested; \
         resume it with the recorded variant or move the log aside"
    )]
    VariantMismatch {
        recorded: Variant,
        requested: Variant,
    },
    #[error(
        "verify found {count} key(s) where X and Y hold one version with different payloads \
         (first: {first:?}); repair cannot choose between them"
    )]
    Conflict { count: u64, first: Box<Mismatch> },
}

/// One verify pass: keys compared, mismatches found, and how many the pass repaired. A
/// mismatch found but not repaired was resolved by the write in flight reaching Y first.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyPass {
    pub keys_compared: u64,
    pub report: MismatchReport,
    pub repaired: u64,
}

/// Drives one migration; see the module doc.
#[derive(Debug)]
pub struct Coordinator {
    record: PhaseRecord,
    batch_keys: usize,
    /// The latest verify pass, for the report.
    pub last_verify: Option<VerifyPass>,
}

impl Coordinator {
    /// Resumes the migration `log` records, or starts one: dual-writing is on from here.
    pub fn open(
        log: &mut dyn PhaseLog,
        variant: Variant,
        batch_keys: usize,
    ) -> Result<Self, MigrationError> {
        assert!(batch_keys > 0, "a batch must hold at least one key");
        let record = match log.load()? {
            Some(mut record) => {
                if record.variant != variant {
                    let recorded = record.variant;
                    return Err(MigrationError::VariantMismatch {
                        recorded,
                        requested: variant,
                    });
                }
                record.resumes += 1;
                tracing::info!(phase = %record.phase, cursor = ?record.backfill_cursor, "Resume");
                record
            }
            None => PhaseRecord::start(variant),
        };
        log.save(&record)?;
        Ok(Coordinator {
            record,
            batch_keys,
            last_verify: None,
        })
    }

    pub fn phase(&self) -> Phase {
        self.record.phase
    }

    pub fn record(&self) -> &PhaseRecord {
        &self.record
    }

    /// Does the next piece of work and saves the record; see [`Step`].
    pub fn step(
        &mut self,
        x: &dyn Store,
        y: &dyn Store,
        log: &mut dyn PhaseLog,
    ) -> Result<Step, MigrationError> {
        match self.record.phase {
            Phase::DualWrite | Phase::ReadFromY | Phase::StopWritingX => self.advance(log),
            Phase::Backfill => self.backfill_step(x, y, log),
            Phase::Verify => self.verify_step(x, y, log),
            Phase::Done => Ok(Step::Finished),
        }
    }

    fn advance(&mut self, log: &mut dyn PhaseLog) -> Result<Step, MigrationError> {
        let from = self.record.phase;
        let to = from.next().expect("Done does not advance");
        self.record.phase = to;
        log.save(&self.record)?;
        let action = match to {
            Phase::ReadFromY => "SwitchReads",
            Phase::StopWritingX => "StopWritingX",
            _ => "Advance",
        };
        tracing::info!(%from, %to, "{action}");
        Ok(Step::Advanced { from, to })
    }

    fn backfill_step(
        &mut self,
        x: &dyn Store,
        y: &dyn Store,
        log: &mut dyn PhaseLog,
    ) -> Result<Step, MigrationError> {
        let batch = self.backfill_read(x)?;
        self.backfill_write(y, &batch, log)
    }

    /// The first half of a `Backfill` step: the next batch of X's entries after the cursor.
    pub fn backfill_read(&self, x: &dyn Store) -> Result<Vec<(String, Entry)>, MigrationError> {
        assert_eq!(
            self.record.phase,
            Phase::Backfill,
            "backfill runs in its phase only"
        );
        Ok(x.scan(self.record.backfill_cursor.as_deref(), self.batch_keys)?)
    }

    /// The second half of a `Backfill` step: copies `batch` (from [`Self::backfill_read`])
    /// into Y and moves the cursor past it; an empty batch ends the backfill.
    pub fn backfill_write(
        &mut self,
        y: &dyn Store,
        batch: &[(String, Entry)],
        log: &mut dyn PhaseLog,
    ) -> Result<Step, MigrationError> {
        assert_eq!(
            self.record.phase,
            Phase::Backfill,
            "backfill runs in its phase only"
        );
        let Some((last_key, _)) = batch.last() else {
            return self.advance(log);
        };
        let counts = backfill_apply(y, self.record.variant, batch)?;
        let record = &mut self.record;
        assert!(
            record.backfill_cursor.as_ref() < Some(last_key),
            "the cursor only moves on"
        );
        record.backfill_cursor = Some(last_key.clone());
        record.backfill_keys_scanned += batch.len() as u64;
        record.backfill_keys_applied += counts.applied;
        record.backfill_keys_stale += counts.stale + counts.already_held;
        log.save(record)?;
        tracing::debug!(keys = batch.len(), applied = counts.applied, "Backfill");
        Ok(Step::Worked)
    }

    fn verify_step(
        &mut self,
        x: &dyn Store,
        y: &dyn Store,
        log: &mut dyn PhaseLog,
    ) -> Result<Step, MigrationError> {
        let pass = verify_pass(x, y, self.record.variant, self.batch_keys)?;
        let record = &mut self.record;
        record.verify_passes += 1;
        record.verify_keys_compared += pass.keys_compared;
        record.verify_mismatches_found += pass.report.count;
        record.verify_mismatches_repaired += pass.repaired;
        let mismatches = pass.report.count;
        tracing::info!(
            pass = record.verify_passes,
            mismatches,
            repaired = pass.repaired,
            "Verify"
        );
        // Fixed: a mismatch the repair found already resolved (Y took the write in flight
        // first) was an unsettled key, not a missing write. A pass that had to repair
        // nothing shows every settled key agrees. Naive can only wait for equality.
        let settled = match self.record.variant {
            Variant::Fixed => pass.repaired == 0,
            Variant::Naive => mismatches == 0,
        };
        self.last_verify = Some(pass);
        if settled {
            return self.advance(log);
        }
        log.save(&self.record)?;
        Ok(match self.record.variant {
            Variant::Fixed => Step::Worked,
            Variant::Naive => Step::Waiting { mismatches },
        })
    }
}

/// `Backfill`: copies a batch read from X into Y — if newer (fixed) or over whatever Y holds
/// (naive).
pub fn backfill_apply(
    y: &dyn Store,
    variant: Variant,
    batch: &[(String, Entry)],
) -> Result<BatchApplied, StoreError> {
    match variant {
        Variant::Fixed => y.apply_batch_if_newer(batch),
        Variant::Naive => {
            y.put_batch_unconditional(batch)?;
            Ok(BatchApplied {
                applied: batch.len() as u64,
                ..BatchApplied::default()
            })
        }
    }
}

/// `Verify`: one full pass of shadow reads. Fixed: every key X holds is compared with Y by
/// version, and Y is repaired with `apply_if_newer` where X is newer. Naive: the values
/// readers see are compared both ways, and nothing is repaired.
pub fn verify_pass(
    x: &dyn Store,
    y: &dyn Store,
    variant: Variant,
    batch_keys: usize,
) -> Result<VerifyPass, MigrationError> {
    if variant == Variant::Naive {
        let (keys_compared, report) = compare::compare_live(x, y, batch_keys)?;
        return Ok(VerifyPass {
            keys_compared,
            report,
            repaired: 0,
        });
    }
    let mut pass = VerifyPass::default();
    let mut conflicts = MismatchReport::default();
    let mut cursor: Option<String> = None;
    loop {
        let batch = x.scan(cursor.as_deref(), batch_keys)?;
        let Some((last_key, _)) = batch.last() else {
            break;
        };
        cursor = Some(last_key.clone());
        let keys: Vec<String> = batch.iter().map(|(key, _)| key.clone()).collect();
        let y_entries = y.get_entries(&keys)?;
        pass.keys_compared += batch.len() as u64;
        for ((key, x_entry), y_entry) in batch.into_iter().zip(y_entries) {
            let Some(kind) = compare::classify_fixed(&x_entry, y_entry.as_ref()) else {
                continue;
            };
            let mismatch = Mismatch {
                key,
                kind,
                x: Some(x_entry),
                y: y_entry,
            };
            if kind == MismatchKind::Conflict {
                conflicts.add(mismatch.clone());
            } else if y.apply_if_newer(&mismatch.key, mismatch.x.as_ref().expect("read"))?
                == Applied::Applied
            {
                pass.repaired += 1;
            }
            pass.report.add(mismatch);
        }
    }
    if let Some(first) = conflicts.samples.first() {
        return Err(MigrationError::Conflict {
            count: conflicts.count,
            first: Box::new(first.clone()),
        });
    }
    Ok(pass)
}
