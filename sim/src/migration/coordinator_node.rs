//! The coordinator node: MIGRATION's phase machine driven over RPC, its record on the
//! node's own simulated disk.
//!
//! MIGRATION's [`Coordinator`] steps against two local stores; here X and Y are across
//! the network, so this node runs the same steps with each store access as a call: the
//! record is opened (and resumed, `resumes` counted) by `Coordinator::open` over a
//! [`DiskPhaseLog`], the backfill copies with `coordinator::backfill_apply` at Y, the fixed
//! verify classifies with `compare::classify_fixed` and repairs with `apply_if_newer`, and
//! the naive verify is `compare::compare_live` on what it read. The one rule carried over:
//! **save the record before publishing a phase**, so a restart never resumes behind the
//! writers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::Endpoint;
use migration::compare::{self, MismatchKind};
use migration::coordinator::Coordinator;
use migration::phase_log::{PhaseLog, PhaseRecord};
use migration::store::memory::MemStore;
use migration::store::{Entry, Store};
use migration::{Phase, Variant};

use super::messages::{AppliedWire, StoreAnswer, StoreCall};
use super::nodes::{PhaseBoard, RETRY_WAIT, Shared, call_until_answered, close, open, publish};
use super::store::DiskPhaseLog;
use crate::disk::SimDisk;
use crate::rpc::RetryPolicy;
use crate::runner::Violation;
use crate::trace::Word;

/// Everything the coordinator node needs; cloned for each incarnation.
#[derive(Clone)]
pub struct CoordinatorSetup {
    pub name: String,
    pub address: SocketAddr,
    pub disk: SimDisk,
    pub x: SocketAddr,
    pub y: SocketAddr,
    pub variant: Variant,
    pub batch_keys: usize,
    pub step_wait: Duration,
    /// The longest a backfill batch stays between its read from X and its write to Y.
    pub backfill_delay_ms_max: u64,
    pub board: Arc<Mutex<PhaseBoard>>,
    pub shared: Shared,
    pub policy: RetryPolicy,
    pub done: Arc<AtomicBool>,
}

struct Running<'a> {
    setup: &'a CoordinatorSetup,
    endpoint: Endpoint,
    log: DiskPhaseLog,
    record: PhaseRecord,
}

/// The body of the coordinator node, run at start and at every restart.
pub async fn run_coordinator(setup: CoordinatorSetup) {
    let endpoint = Endpoint::bind(setup.address)
        .await
        .expect("the coordinator binds its address");
    let mut log = DiskPhaseLog::new(Arc::new(setup.disk.clone()));
    let record = loop {
        match Coordinator::open(&mut log, setup.variant, setup.batch_keys) {
            Ok(opened) => break opened.record().clone(),
            Err(error) => {
                let detail = format!("open failed: {error}");
                setup
                    .shared
                    .trace
                    .record(&setup.name, Word::Restart, detail);
                madsim::time::sleep(RETRY_WAIT).await;
            }
        }
    };
    let detail = format!(
        "phase={} cursor={} resumes={}",
        record.phase,
        record.backfill_cursor.as_deref().unwrap_or("-"),
        record.resumes
    );
    setup.shared.trace.record(&setup.name, Word::Start, detail);
    publish(&setup.board, record.phase).await;
    let mut running = Running {
        setup: &setup,
        endpoint,
        log,
        record,
    };
    loop {
        madsim::time::sleep(setup.step_wait).await;
        let stepped = match running.record.phase {
            Phase::DualWrite | Phase::ReadFromY | Phase::StopWritingX => {
                running.advance().await;
                Ok(())
            }
            Phase::Backfill => running.backfill_step().await,
            Phase::Verify => running.verify_step().await,
            Phase::Done => {
                setup.done.store(true, Ordering::SeqCst);
                std::future::pending::<()>().await;
                unreachable!("pending never completes")
            }
        };
        if let Err(detail) = stepped {
            let violation = Violation::safety("StoreRefused", detail);
            setup.shared.observe(|o| o.violations.push(violation));
            setup.done.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
    }
}

impl Running<'_> {
    async fn call(&self, to: SocketAddr, call: StoreCall) -> Result<StoreAnswer, String> {
        call_until_answered(&self.endpoint, to, call, &self.setup.policy).await
    }

    async fn save(&mut self) {
        while let Err(error) = self.log.save(&self.record) {
            let detail = format!("phase log save failed, retrying: {error}");
            self.setup
                .shared
                .trace
                .record(&self.setup.name, Word::GiveUp, detail);
            madsim::time::sleep(RETRY_WAIT).await;
        }
    }

    async fn advance(&mut self) {
        close(&self.setup.board).await;
        self.advance_closed().await;
    }

    /// Saves the next phase, then opens the (closed, drained) board on it.
    async fn advance_closed(&mut self) {
        let from = self.record.phase;
        let to = from.next().expect("Done does not advance");
        self.record.phase = to;
        self.save().await;
        let word = match to {
            Phase::Backfill => Word::Backfill,
            Phase::Verify => Word::Verify,
            Phase::ReadFromY => Word::SwitchReads,
            Phase::StopWritingX => Word::StopWritingX,
            Phase::Done => Word::Finish,
            Phase::DualWrite => unreachable!("nothing advances to the first phase"),
        };
        let detail = format!("phase {from} -> {to} saved");
        self.setup
            .shared
            .trace
            .record(&self.setup.name, word, detail);
        open(&self.setup.board, to);
    }

    async fn scan(
        &self,
        at: SocketAddr,
        after: Option<String>,
    ) -> Result<Vec<(String, Entry)>, String> {
        let limit = self.setup.batch_keys;
        match self.call(at, StoreCall::Scan { after, limit }).await? {
            StoreAnswer::Batch(batch) => Ok(batch),
            other => Err(format!("expected a batch from Scan, found {other:?}")),
        }
    }

    async fn backfill_step(&mut self) -> Result<(), String> {
        let batch = self
            .scan(self.setup.x, self.record.backfill_cursor.clone())
            .await?;
        let Some((last_key, _)) = batch.last() else {
            self.advance().await;
            return Ok(());
        };
        let last_key = last_key.clone();
        // The copy is in flight: writes landing in Y meanwhile are what it may overwrite.
        let delay_ms = madsim::rand::random::<u64>() % (self.setup.backfill_delay_ms_max + 1);
        madsim::time::sleep(Duration::from_millis(delay_ms)).await;
        let call = StoreCall::BackfillApply {
            variant: self.setup.variant,
            batch: batch.clone(),
        };
        let StoreAnswer::BackfillApplied(applied) = self.call(self.setup.y, call).await? else {
            return Err("Y answered BackfillApply with something else".into());
        };
        let record = &mut self.record;
        assert!(
            record.backfill_cursor.as_ref() < Some(&last_key),
            "the backfill cursor only moves on"
        );
        record.backfill_cursor = Some(last_key);
        record.backfill_keys_scanned += batch.len() as u64;
        record.backfill_keys_applied += applied;
        self.save().await;
        Ok(())
    }

    /// Every entry of a store, read in batches (not atomic: writes go on meanwhile).
    async fn read_all(&self, at: SocketAddr) -> Result<MemStore, String> {
        let copy = MemStore::new();
        let mut cursor = None;
        loop {
            let batch = self.scan(at, cursor).await?;
            let Some((last, _)) = batch.last() else {
                return Ok(copy);
            };
            cursor = Some(last.clone());
            for (key, entry) in &batch {
                copy.put_unconditional(key, entry)
                    .expect("an in-memory store accepts");
            }
        }
    }

    /// One verify pass, with writers paused: reads switch only after a pass that found X
    /// and Y equal while nothing was in flight (the model's `SwitchReads` needs every
    /// write landed). MIGRATION's own `verify_step` switches after any clean pass, while
    /// writers go on; a writer stopping between X and Y after that pass then leaves Y
    /// behind X for good — the simulator found exactly that — so the pass runs closed.
    async fn verify_step(&mut self) -> Result<(), String> {
        close(&self.setup.board).await;
        let result = self.verify_closed().await;
        if self.record.phase == Phase::Verify {
            open(&self.setup.board, Phase::Verify);
        }
        result
    }

    async fn verify_closed(&mut self) -> Result<(), String> {
        let (compared, mismatches, repaired) = match self.setup.variant {
            Variant::Fixed => self.verify_fixed().await?,
            Variant::Naive => {
                let x = self.read_all(self.setup.x).await?;
                let y = self.read_all(self.setup.y).await?;
                let (compared, report) = compare::compare_live(&x, &y, self.setup.batch_keys)
                    .expect("in-memory stores do not fail");
                (compared, report.count, 0)
            }
        };
        let record = &mut self.record;
        record.verify_passes += 1;
        record.verify_keys_compared += compared;
        record.verify_mismatches_found += mismatches;
        record.verify_mismatches_repaired += repaired;
        let detail = format!(
            "pass={} compared={compared} mismatches={mismatches} repaired={repaired}",
            record.verify_passes
        );
        self.setup
            .shared
            .trace
            .record(&self.setup.name, Word::Verify, detail);
        if mismatches == 0 {
            self.advance_closed().await;
        } else {
            self.save().await;
        }
        Ok(())
    }

    /// One fixed verify pass: every key X holds, compared by version; Y repaired where X
    /// is newer. Returns (compared, mismatches, repaired).
    async fn verify_fixed(&self) -> Result<(u64, u64, u64), String> {
        let (mut compared, mut mismatches, mut repaired) = (0, 0, 0);
        let mut cursor = None;
        loop {
            let batch = self.scan(self.setup.x, cursor).await?;
            let Some((last, _)) = batch.last() else {
                return Ok((compared, mismatches, repaired));
            };
            cursor = Some(last.clone());
            let keys: Vec<String> = batch.iter().map(|(key, _)| key.clone()).collect();
            let StoreAnswer::Entries(y_entries) = self
                .call(self.setup.y, StoreCall::GetEntries { keys })
                .await?
            else {
                return Err("Y answered GetEntries with something else".into());
            };
            compared += batch.len() as u64;
            for ((key, x_entry), y_entry) in batch.into_iter().zip(y_entries) {
                let Some(kind) = compare::classify_fixed(&x_entry, y_entry.as_ref()) else {
                    continue;
                };
                mismatches += 1;
                if kind == MismatchKind::Conflict {
                    return Err(format!(
                        "verify found key {key} with one version and two payloads: X {x_entry:?}, \
                         Y {y_entry:?}"
                    ));
                }
                let call = StoreCall::Repair {
                    key,
                    entry: x_entry,
                };
                if let StoreAnswer::Applied(Some(AppliedWire::Applied)) =
                    self.call(self.setup.y, call).await?
                {
                    repaired += 1;
                }
            }
        }
    }
}
