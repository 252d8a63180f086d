//! Replays a schedule of the model's actions against the real code, step by step.
//!
//! The migration model (`model/src/migration.rs`, `specs/Migration.tla`) explores every
//! interleaving of writers, deliveries, crashes and the coordinator on a few keys; its
//! counterexamples are sequences of actions. A [`Replay`] performs the same sequence with
//! the real writer ([`writer::write_x`], [`writer::deliver_y`]), the real backfill
//! ([`coordinator::backfill_apply`]) and the real verify ([`coordinator::verify_pass`]) on
//! real stores, and evaluates the model's properties on the real stores after every step.
//! So a model counterexample that also breaks the real code shows the code has the bug the
//! model found, under the property's own name; the same schedule run against the fixed code
//! shows the fix holds where it broke.
//!
//! Hold this in mind: the replay owns only what the model calls the network — which
//! acknowledged writes and backfill copies are in flight to Y. Every decision about what a
//! store holds is made by the real code.
//!
//! One deliberate difference: the model lets a writer delete a key that X no longer holds
//! (a new tombstone, or a no-op removal in naive); the real store answers `NotFound` and
//! writes nothing. The replay then sends nothing, and the writer's later `DeleteY` and
//! `DeliverY` are no-ops. Values stay the same either way; only a tombstone's version differs.

use std::collections::BTreeSet;

use crate::compare;
use crate::coordinator::{self, MigrationError};
use crate::store::memory::MemStore;
use crate::store::{Entry, Store, StoreError};
use crate::writer::{self, InFlight, WriteOp};
use crate::{Phase, Variant};

/// The model's actions, with the model's 1-based writer and key numbers. Key `k` is the real
/// key `key-k`; value `v` is the bytes `v<v>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    WriteX {
        writer: u8,
        key: u8,
        val: u8,
    },
    DeleteX {
        writer: u8,
        key: u8,
    },
    /// The writer sends its acknowledged put toward Y (now in flight).
    WriteY {
        writer: u8,
    },
    /// The writer sends its acknowledged delete toward Y (now in flight).
    DeleteY {
        writer: u8,
    },
    /// Y receives the in-flight message from `src` (0: the backfill) for `key`.
    DeliverY {
        src: u8,
        key: u8,
    },
    CrashWriter {
        writer: u8,
    },
    /// The backfill reads `key` from X and sends the copy toward Y.
    Backfill {
        key: u8,
    },
    Verify,
    SwitchReads,
    StopWritingX,
    Finish,
}

/// A property of the model, evaluated on the real stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Property {
    DualWritesConverge,
    BackfillKeepsNewer,
    DeletedStaysDeleted,
    CrashRepaired,
    Completes,
}

impl Property {
    pub const ALL: [Property; 5] = [
        Property::DualWritesConverge,
        Property::BackfillKeepsNewer,
        Property::DeletedStaysDeleted,
        Property::CrashRepaired,
        Property::Completes,
    ];

    /// The model's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Property::DualWritesConverge => "DualWritesConverge",
            Property::BackfillKeepsNewer => "BackfillKeepsNewer",
            Property::DeletedStaysDeleted => "DeletedStaysDeleted",
            Property::CrashRepaired => "CrashRepaired",
            Property::Completes => "Completes",
        }
    }
}

/// Why a schedule could not be replayed: it does not fit the real code's state.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("step {step} ({action:?}): {reason}")]
    NotEnabled {
        step: usize,
        action: Action,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pc {
    Idle,
    WroteX,
    SentY,
    Done,
    Crashed,
}

#[derive(Debug, Clone)]
struct WriterSlot {
    pc: Pc,
    key: u8,
    /// The real write X acknowledged; `None` when X had nothing to delete.
    pending: Option<InFlight>,
}

/// A message in flight to Y: a writer's acknowledged write or a backfill copy.
#[derive(Debug, Clone)]
struct Message {
    src: u8,
    key: u8,
    in_flight: Option<InFlight>,
    /// Backfill copies carry X's entry; `None` for writers.
    copy: Option<Entry>,
}

/// The real stores and the schedule's network, one action at a time.
pub struct Replay {
    pub variant: Variant,
    pub phase: Phase,
    pub x: MemStore,
    pub y: MemStore,
    keys: u8,
    writers: Vec<WriterSlot>,
    in_flight: Vec<Message>,
    backfilled: BTreeSet<u8>,
    /// The step under way, for refusals.
    current: Option<(usize, Action)>,
}

/// The real key for the model's key number.
pub fn key_name(key: u8) -> String {
    format!("key-{key}")
}

impl Replay {
    /// The model's initial state: every key holds value 1 at version 1 in X; Y is empty.
    pub fn new(variant: Variant, writers: u8, keys: u8) -> Result<Replay, ReplayError> {
        let x = MemStore::new();
        for key in 1..=keys {
            x.put(&key_name(key), b"v1")?;
        }
        let idle = WriterSlot {
            pc: Pc::Idle,
            key: 0,
            pending: None,
        };
        Ok(Replay {
            variant,
            phase: Phase::DualWrite,
            x,
            y: MemStore::new(),
            keys,
            writers: vec![idle; usize::from(writers)],
            in_flight: Vec::new(),
            backfilled: BTreeSet::new(),
            current: None,
        })
    }

    /// Replays `actions` in order and returns the properties violated after each step
    /// (checked with [`Replay::violations`]), first violation first, each named once.
    pub fn run(&mut self, actions: &[Action]) -> Result<Vec<Property>, ReplayError> {
        let mut violated = Vec::new();
        for (step, action) in actions.iter().enumerate() {
            self.apply(step, action)?;
            for property in self.violations()? {
                if !violated.contains(&property) {
                    violated.push(property);
                }
            }
        }
        Ok(violated)
    }

    /// Takes the migration to its end the way the real coordinator would: delivers what is
    /// in flight, finishes the backfill, then verifies (repairing, if fixed), switches reads,
    /// stops writing X and finishes. Returns the properties violated on the way; a naive
    /// verify that can never pass leaves `Completes` among them.
    pub fn finish(&mut self) -> Result<Vec<Property>, ReplayError> {
        let mut tail = Vec::new();
        for message in &self.in_flight {
            tail.push(Action::DeliverY {
                src: message.src,
                key: message.key,
            });
        }
        for key in (1..=self.keys).filter(|key| !self.backfilled.contains(key)) {
            tail.extend([Action::Backfill { key }, Action::DeliverY { src: 0, key }]);
        }
        let step = self.current.as_ref().map_or(0, |(step, _)| step + 1);
        let mut violated = Vec::new();
        for (offset, action) in tail.iter().enumerate() {
            // A naive backfill of a key X no longer holds sends nothing to deliver.
            let nothing_sent = matches!(action, Action::DeliverY { src: 0, key }
                if !self.in_flight.iter().any(|m| m.src == 0 && m.key == *key));
            if !nothing_sent {
                self.apply(step + offset, action)?;
            }
        }
        if self.phase == Phase::Verify && self.variant == Variant::Fixed {
            self.apply(step + tail.len(), &Action::Verify)?;
        }
        let phase_changes = [Action::SwitchReads, Action::StopWritingX, Action::Finish];
        for (offset, action) in phase_changes.iter().enumerate() {
            if self.apply(step + tail.len() + 1 + offset, action).is_err() {
                break;
            }
        }
        for property in self.violations()? {
            if !violated.contains(&property) {
                violated.push(property);
            }
        }
        Ok(violated)
    }

    /// Performs one action with the real code.
    pub fn apply(&mut self, step: usize, action: &Action) -> Result<(), ReplayError> {
        self.current = Some((step, action.clone()));
        match *action {
            Action::WriteX { writer, key, val } => {
                self.start_write(writer, key, &WriteOp::Put(format!("v{val}").into_bytes()))
            }
            Action::DeleteX { writer, key } => self.start_write(writer, key, &WriteOp::Delete),
            Action::WriteY { writer } | Action::DeleteY { writer } => self.send_y(writer),
            Action::DeliverY { src, key } => self.deliver(src, key),
            Action::CrashWriter { writer } => {
                let slot = self.slot(writer)?;
                if slot.pc != Pc::WroteX {
                    return Err(self.refuse("only a writer between its X and Y writes can crash"));
                }
                // CrashWriter: the acknowledged write never leaves for Y.
                slot.pc = Pc::Crashed;
                slot.pending = None;
                Ok(())
            }
            Action::Backfill { key } => self.backfill(key),
            Action::Verify => {
                if self.phase != Phase::Verify || self.variant != Variant::Fixed {
                    return Err(self.refuse("verify repairs only in the fixed design's Verify"));
                }
                coordinator::verify_pass(&self.x, &self.y, self.variant, 16)?;
                Ok(())
            }
            Action::SwitchReads => self.switch_reads(),
            Action::StopWritingX => self.advance(Phase::ReadFromY),
            Action::Finish => self.advance(Phase::StopWritingX),
        }
    }

    fn refuse(&self, reason: impl Into<String>) -> ReplayError {
        let (step, action) = self.current.clone().expect("set by apply");
        ReplayError::NotEnabled {
            step,
            action,
            reason: reason.into(),
        }
    }

    fn slot(&mut self, writer: u8) -> Result<&mut WriterSlot, ReplayError> {
        let index = usize::from(writer).wrapping_sub(1);
        if index >= self.writers.len() {
            return Err(self.refuse(format!("there is no writer {writer}")));
        }
        Ok(&mut self.writers[index])
    }

    fn check_key(&self, key: u8) -> Result<(), ReplayError> {
        if (1..=self.keys).contains(&key) {
            Ok(())
        } else {
            Err(self.refuse(format!("there is no key {key}")))
        }
    }

    /// `WriteX` / `DeleteX`: the real first half of a dual write.
    fn start_write(&mut self, writer: u8, key: u8, op: &WriteOp) -> Result<(), ReplayError> {
        self.check_key(key)?;
        if self.phase > Phase::Verify {
            return Err(self.refuse(format!(
                "writers start before reads switch, not in {}",
                self.phase
            )));
        }
        if self.slot(writer)?.pc != Pc::Idle {
            return Err(self.refuse("the writer is busy with its one operation"));
        }
        let pending = match writer::write_x(&self.x, self.variant, &key_name(key), op) {
            Ok(in_flight) => Some(in_flight),
            Err(StoreError::NotFound { .. }) => None,
            Err(error) => return Err(error.into()),
        };
        *self.slot(writer)? = WriterSlot {
            pc: Pc::WroteX,
            key,
            pending,
        };
        Ok(())
    }

    /// `WriteY` / `DeleteY`: the acknowledged write leaves for Y.
    fn send_y(&mut self, writer: u8) -> Result<(), ReplayError> {
        if self.slot(writer)?.pc != Pc::WroteX {
            return Err(self.refuse("only a writer X acknowledged sends to Y"));
        }
        let slot = self.slot(writer)?;
        slot.pc = Pc::SentY;
        let (key, in_flight) = (slot.key, slot.pending.take());
        self.in_flight.push(Message {
            src: writer,
            key,
            in_flight,
            copy: None,
        });
        Ok(())
    }

    /// `DeliverY`: Y receives one in-flight message, through the real code.
    fn deliver(&mut self, src: u8, key: u8) -> Result<(), ReplayError> {
        let position = self
            .in_flight
            .iter()
            .position(|message| (message.src, message.key) == (src, key));
        let Some(index) = position else {
            return Err(self.refuse(format!("nothing from {src} for key {key} is in flight")));
        };
        let message = self.in_flight.remove(index);
        match (&message.in_flight, &message.copy) {
            (Some(in_flight), _) => drop(writer::deliver_y(&self.y, in_flight)?),
            (None, Some(copy)) => {
                let batch = [(key_name(key), copy.clone())];
                coordinator::backfill_apply(&self.y, self.variant, &batch)?;
            }
            (None, None) => {} // X had nothing to delete: nothing reaches Y.
        }
        if src != 0 {
            self.slot(src)?.pc = Pc::Done;
        }
        self.end_backfill_if_done();
        Ok(())
    }

    /// `Backfill`: the real read of one key from X; the copy leaves for Y.
    fn backfill(&mut self, key: u8) -> Result<(), ReplayError> {
        self.check_key(key)?;
        let open = matches!(self.phase, Phase::DualWrite | Phase::Backfill);
        if !open || self.backfilled.contains(&key) {
            return Err(self.refuse(format!("key {key} cannot be backfilled in {}", self.phase)));
        }
        self.backfilled.insert(key);
        // The backfill scans X: it never sees a key X physically removed (naive).
        if let Some(entry) = self.x.get_entry(&key_name(key))? {
            self.in_flight.push(Message {
                src: 0,
                key,
                in_flight: None,
                copy: Some(entry),
            });
        }
        self.phase = Phase::Backfill;
        self.end_backfill_if_done();
        Ok(())
    }

    fn end_backfill_if_done(&mut self) {
        let copies_in_flight = self.in_flight.iter().any(|message| message.src == 0);
        let all_copied = self.backfilled.len() == usize::from(self.keys);
        if self.phase == Phase::Backfill && all_copied && !copies_in_flight {
            self.phase = Phase::Verify;
        }
    }

    /// `SwitchReads`: allowed only when the real verify finds X and Y equal.
    fn switch_reads(&mut self) -> Result<(), ReplayError> {
        if self.phase != Phase::Verify || !self.in_flight.is_empty() {
            return Err(self.refuse("reads switch only in Verify with nothing in flight"));
        }
        let pass = coordinator::verify_pass(&self.x, &self.y, self.variant, 16)?;
        if !pass.report.is_clean() {
            let count = pass.report.count;
            return Err(self.refuse(format!("the real verify still finds {count} mismatch(es)")));
        }
        self.phase = Phase::ReadFromY;
        Ok(())
    }

    fn advance(&mut self, from: Phase) -> Result<(), ReplayError> {
        if self.phase != from {
            return Err(self.refuse(format!("expected phase {from}, found {}", self.phase)));
        }
        self.phase = from.next().expect("not Done");
        Ok(())
    }

    /// No writer is between its two writes on `key`, and nothing for it is in flight.
    fn quiet(&self, key: u8) -> bool {
        let busy = |slot: &WriterSlot| slot.key == key && matches!(slot.pc, Pc::WroteX | Pc::SentY);
        !self.writers.iter().any(busy) && !self.in_flight.iter().any(|message| message.key == key)
    }

    fn has_writer_with(&self, key: u8, pc: Pc) -> bool {
        self.writers
            .iter()
            .any(|slot| slot.key == key && slot.pc == pc)
    }

    fn settled(&self, key: u8) -> bool {
        self.quiet(key) && !self.has_writer_with(key, Pc::Crashed)
    }

    fn live(&self, store: &MemStore, key: u8) -> Result<Option<Vec<u8>>, StoreError> {
        store.get(&key_name(key))
    }

    /// The model's safety properties, evaluated on the real stores now.
    pub fn violations(&self) -> Result<Vec<Property>, ReplayError> {
        let mut violated = BTreeSet::new();
        let terminal = self.is_terminal()?;
        for key in 1..=self.keys {
            let (x, y) = (self.live(&self.x, key)?, self.live(&self.y, key)?);
            let same = x == y;
            let written_and_settled = self.settled(key) && self.has_writer_with(key, Pc::Done);
            if self.phase == Phase::DualWrite && written_and_settled && !same {
                violated.insert(Property::DualWritesConverge);
            }
            let copied = self.backfilled.contains(&key) && self.settled(key);
            if copied && x.is_some() && !same {
                violated.insert(Property::BackfillKeepsNewer);
            }
            if self.settled(key) && x.is_none() && y.is_some() {
                violated.insert(Property::DeletedStaysDeleted);
            }
            if terminal && self.has_writer_with(key, Pc::Crashed) && !same {
                violated.insert(Property::CrashRepaired);
            }
        }
        if terminal && self.phase != Phase::Done {
            violated.insert(Property::Completes);
        }
        Ok(violated.into_iter().collect())
    }

    /// True when nothing more can happen: no writer busy or able to start, nothing in
    /// flight, and the migration either `Done` or stuck in a naive verify that the real
    /// comparison says can never pass (fixed verify repairs, so it is never stuck).
    fn is_terminal(&self) -> Result<bool, ReplayError> {
        let busy = self
            .writers
            .iter()
            .any(|slot| matches!(slot.pc, Pc::WroteX | Pc::SentY));
        let may_start =
            self.phase <= Phase::Verify && self.writers.iter().any(|slot| slot.pc == Pc::Idle);
        if busy || may_start || !self.in_flight.is_empty() {
            return Ok(false);
        }
        if self.phase == Phase::Done {
            return Ok(true);
        }
        if self.phase != Phase::Verify || self.variant == Variant::Fixed {
            return Ok(false);
        }
        let (_, report) = compare::compare_live(&self.x, &self.y, 16)?;
        Ok(!report.is_clean())
    }
}
