//! The dual-write migration of a key-value store X to a store Y, as a stateright model laid
//! out exactly like `specs/Migration.tla` (same variables, same action names).
//!
//! # The system
//!
//! X starts with every key holding value 1 at version 1; Y starts empty. Each writer does
//! one put or delete: to X first (a synchronous call: X applies it, assigns the key's next
//! version and acknowledges), then to Y (sent, and in flight until Y receives it, so writes
//! reach Y in any order). A writer may crash between the two writes. A backfill reads each
//! key from X and sends it to Y; it is in flight too. The coordinator moves through the
//! phases `DualWrite` → `Backfill` (first key copied) → `Verify` (last copy landed) →
//! `ReadFromY` → `StopWritingX` → `Done`.
//!
//! # The two designs
//!
//! `naive`: Y applies whatever arrives last, deletes are physical (an absent key is
//! `[val |-> 0, ver |-> 0]`, so a delete leaves no trace), the backfill copies X's value
//! unconditionally and skips keys X no longer has, and verify only waits for X and Y to
//! hold equal values before switching reads. The checker finds, each as its own property
//! with a shortest trace: writes reaching Y in another order than X
//! (`DualWritesConverge`), a stale backfill copy landing over a newer dual write
//! (`BackfillKeepsNewer`), a stale copy bringing a deleted key back (`DeletedStaysDeleted`),
//! a writer crash leaving Y behind X for good (`CrashRepaired`), and verify waiting forever
//! for equality that never comes (`Completes`).
//!
//! `fixed`: every entry is `(value or tombstone, version)`. X assigns versions, so X's order
//! is the truth; Y applies a write, a backfill copy or a repair only if its version is
//! greater than the one Y holds (`apply_if_newer`); deletes are tombstones with a version.
//! Why that is correct: each version of a key is assigned once, by X, so Y's entry is
//! always one of X's past entries for that key and can only move forward. Once every write
//! to a key has landed in Y, Y holds the greatest version X assigned, which is X's entry:
//! delivery order, a stale backfill copy and a stale copy of a deleted key all lose against
//! a greater version. Only a crashed writer's version can be missing from Y; verify finds
//! every quiet key where X is newer, repairs it with the same `apply_if_newer`, and repeats
//! until none is left, so when reads switch every key agrees. Verify always makes progress
//! (a quiet key that differs is one where X is newer), so the migration always completes.
//!
//! # Liveness without `eventually`
//!
//! stateright's `eventually` is unsound where paths join. This state graph is acyclic:
//! every step increases `(Σ writer progress + 2·|backfilled| − backfill copies in flight +
//! phase index, Σ versions in Y)` lexicographically (only `Verify` leaves the first part
//! unchanged, and it raises a version in Y). On a finite acyclic graph every behaviour ends
//! in a state with no step, so "the migration completes" (`<>(phase = "Done")` under weak
//! fairness in the spec) is exactly "every state without a step is `Done`", an `always`.
//! Every action this model offers changes the state, so "no step" means the same thing
//! here and for `ENABLED Next` in TLC. The spec spells "no step" out as `NoStepLeft` (TLC
//! evaluates `ENABLED` by computing successors, a second `Next` per state); the spec's
//! `NoStepLeftIsExact` says the two agree, and a test has TLC check it.
//!
//! Known gap, by design of the model: writers start their one operation only before reads
//! switch to Y; writes that start afterwards (Y-only, Y assigning versions) are not
//! modelled, since a writer would then need to learn the hand-over of version authority.

use std::collections::BTreeSet;

use stateright::{Model, Property};

use crate::{
    CheckOptions, CheckReport, ModelEntry, ModelError, ParamSpec, Params, PropertyKind,
    PropertySpec, TlaAction, TlaModel, TlaValue, VariantSpec,
};

/// The registry entry.
pub static MIGRATION: MigrationEntry = MigrationEntry;

/// A value 1..=values, or 0 for "no value" (absent in naive, a tombstone in fixed).
const NO_VALUE: u8 = 0;
/// The `src` of a backfill copy in flight (writers are 1..=writers).
const BACKFILLER: u8 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    Naive,
    Fixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    DualWrite,
    Backfill,
    Verify,
    ReadFromY,
    StopWritingX,
    Done,
}

/// Where a writer is in its one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pc {
    Idle,
    WroteX,
    SentY,
    Done,
    Crashed,
}

/// A stored entry; `[val |-> 0, ver |-> 0]` is an absent key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    pub val: u8,
    pub ver: u8,
}

const ABSENT: Entry = Entry {
    val: NO_VALUE,
    ver: 0,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Writer {
    pub pc: Pc,
    /// 0 while idle; keys are 1..=keys.
    pub key: u8,
    pub val: u8,
    /// The version X acknowledged.
    pub ver: u8,
}

/// A write or backfill copy in flight to Y. Field order matches the TLA+ record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Message {
    pub src: u8,
    pub key: u8,
    pub val: u8,
    pub ver: u8,
}

/// The spec's variables, in its `VARIABLES` order. `x[k - 1]` is the spec's `x[k]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    pub phase: Phase,
    pub x: Vec<Entry>,
    pub y: Vec<Entry>,
    pub writer: Vec<Writer>,
    pub inflight_y: BTreeSet<Message>,
    pub backfilled: BTreeSet<u8>,
}

/// The spec's actions with their arguments (writers and keys are 1-based, as in the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    WriteY {
        writer: u8,
    },
    DeleteY {
        writer: u8,
    },
    /// The message in flight from `src` (a writer, or 0 for the backfill) for `key`.
    DeliverY {
        src: u8,
        key: u8,
    },
    CrashWriter {
        writer: u8,
    },
    Backfill {
        key: u8,
    },
    Verify,
    SwitchReads,
    StopWritingX,
    Finish,
}

#[derive(Debug, Clone)]
pub struct Migration {
    pub variant: Variant,
    pub writers: u8,
    pub keys: u8,
    pub values: u8,
}

impl State {
    fn entry(&self, store: &[Entry], key: u8) -> Entry {
        store[usize::from(key) - 1]
    }

    /// No writer is between its two writes on `key` and nothing for `key` is in flight.
    fn quiet(&self, key: u8) -> bool {
        let busy =
            |writer: &Writer| writer.key == key && matches!(writer.pc, Pc::WroteX | Pc::SentY);
        !self.writer.iter().any(busy) && !self.inflight_y.iter().any(|m| m.key == key)
    }

    fn has_writer_with(&self, key: u8, pc: Pc) -> bool {
        self.writer
            .iter()
            .any(|writer| writer.key == key && writer.pc == pc)
    }

    fn settled(&self, key: u8) -> bool {
        self.quiet(key) && !self.has_writer_with(key, Pc::Crashed)
    }

    fn all_quiet(&self) -> bool {
        self.inflight_y.is_empty()
            && self
                .writer
                .iter()
                .all(|writer| !matches!(writer.pc, Pc::WroteX | Pc::SentY))
    }
}

impl Migration {
    fn key_range(&self) -> std::ops::RangeInclusive<u8> {
        1..=self.keys
    }

    fn is_fixed(&self) -> bool {
        self.variant == Variant::Fixed
    }

    /// `Apply(store, k, e)`: fixed only moves versions forward; naive takes what comes.
    fn apply(&self, store: &mut [Entry], key: u8, entry: Entry) {
        let slot = &mut store[usize::from(key) - 1];
        if !self.is_fixed() || entry.ver > slot.ver {
            *slot = entry;
        }
    }

    /// `XEntry(k, v)`: X's next entry for a put of `val` or a delete (`val` = 0).
    fn x_entry(&self, state: &State, key: u8, val: u8) -> Entry {
        if self.is_fixed() || val != NO_VALUE {
            Entry {
                val,
                ver: state.entry(&state.x, key).ver + 1,
            }
        } else {
            ABSENT
        }
    }

    /// `BackfillDone`: every key copied and no copy still in flight.
    fn backfill_done(&self, state: &State) -> bool {
        state.backfilled.len() == usize::from(self.keys)
            && state
                .inflight_y
                .iter()
                .all(|message| message.src != BACKFILLER)
    }

    /// Quiet keys where X is newer than Y: what one verify pass repairs.
    fn stale_keys(&self, state: &State) -> Vec<u8> {
        self.key_range()
            .filter(|&key| {
                state.quiet(key) && state.entry(&state.x, key).ver > state.entry(&state.y, key).ver
            })
            .collect()
    }

    fn stores_agree(&self, state: &State) -> bool {
        let agree = |(x, y): (&Entry, &Entry)| {
            if self.is_fixed() {
                x == y
            } else {
                x.val == y.val
            }
        };
        state.x.iter().zip(&state.y).all(agree)
    }

    /// No action can take a step: the end of every behaviour through this state.
    pub fn is_terminal(&self, state: &State) -> bool {
        let mut actions = Vec::new();
        self.actions(state, &mut actions);
        actions
            .into_iter()
            .all(|action| self.next_state(state, action).is_none())
    }

    fn writer_actions(&self, state: &State, actions: &mut Vec<Action>) {
        let may_start = matches!(
            state.phase,
            Phase::DualWrite | Phase::Backfill | Phase::Verify
        );
        for (index, writer) in state.writer.iter().enumerate() {
            let id = index as u8 + 1;
            match writer.pc {
                Pc::Idle if may_start => {
                    for key in self.key_range() {
                        for val in 1..=self.values {
                            actions.push(Action::WriteX {
                                writer: id,
                                key,
                                val,
                            });
                        }
                        actions.push(Action::DeleteX { writer: id, key });
                    }
                }
                Pc::WroteX if writer.val == NO_VALUE => {
                    actions.push(Action::DeleteY { writer: id })
                }
                Pc::WroteX => actions.push(Action::WriteY { writer: id }),
                _ => {}
            }
            if writer.pc == Pc::WroteX {
                actions.push(Action::CrashWriter { writer: id });
            }
        }
    }

    fn coordinator_actions(&self, state: &State, actions: &mut Vec<Action>) {
        if matches!(state.phase, Phase::DualWrite | Phase::Backfill) {
            for key in self
                .key_range()
                .filter(|key| !state.backfilled.contains(key))
            {
                actions.push(Action::Backfill { key });
            }
        }
        if state.phase == Phase::Verify {
            if self.is_fixed() && !self.stale_keys(state).is_empty() {
                actions.push(Action::Verify);
            }
            if state.all_quiet() && self.stores_agree(state) {
                actions.push(Action::SwitchReads);
            }
        }
        match state.phase {
            Phase::ReadFromY => actions.push(Action::StopWritingX),
            Phase::StopWritingX => actions.push(Action::Finish),
            _ => {}
        }
    }

    fn start_op(&self, state: &mut State, writer: u8, key: u8, val: u8) {
        let entry = self.x_entry(state, key, val);
        state.x[usize::from(key) - 1] = entry;
        state.writer[usize::from(writer) - 1] = Writer {
            pc: Pc::WroteX,
            key,
            val,
            ver: entry.ver,
        };
    }

    fn send_y(&self, state: &mut State, writer: u8) {
        let slot = &mut state.writer[usize::from(writer) - 1];
        assert_eq!(
            slot.pc,
            Pc::WroteX,
            "only a writer X acknowledged sends to Y"
        );
        slot.pc = Pc::SentY;
        let message = Message {
            src: writer,
            key: slot.key,
            val: slot.val,
            ver: slot.ver,
        };
        state.inflight_y.insert(message);
    }

    fn deliver_y(&self, state: &mut State, src: u8, key: u8) {
        let in_flight = state
            .inflight_y
            .iter()
            .find(|m| m.src == src && m.key == key);
        let message = *in_flight.expect("DeliverY is offered only for a message in flight");
        state.inflight_y.remove(&message);
        self.apply(
            &mut state.y,
            message.key,
            Entry {
                val: message.val,
                ver: message.ver,
            },
        );
        if message.src != BACKFILLER {
            state.writer[usize::from(message.src) - 1].pc = Pc::Done;
        }
        if state.phase == Phase::Backfill && self.backfill_done(state) {
            state.phase = Phase::Verify;
        }
    }

    fn backfill(&self, state: &mut State, key: u8) {
        state.backfilled.insert(key);
        let entry = state.entry(&state.x, key);
        // The naive scan never sees a key X no longer has: there is nothing to copy.
        if self.is_fixed() || entry.val != NO_VALUE {
            let copy = Message {
                src: BACKFILLER,
                key,
                val: entry.val,
                ver: entry.ver,
            };
            state.inflight_y.insert(copy);
        }
        state.phase = if self.backfill_done(state) {
            Phase::Verify
        } else {
            Phase::Backfill
        };
    }

    fn verify(&self, state: &mut State) {
        for key in self.stale_keys(state) {
            let newer = state.entry(&state.x, key);
            self.apply(&mut state.y, key, newer);
        }
    }
}

impl Model for Migration {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let writer = Writer {
            pc: Pc::Idle,
            key: 0,
            val: NO_VALUE,
            ver: 0,
        };
        vec![State {
            phase: Phase::DualWrite,
            x: vec![Entry { val: 1, ver: 1 }; usize::from(self.keys)],
            y: vec![ABSENT; usize::from(self.keys)],
            writer: vec![writer; usize::from(self.writers)],
            inflight_y: BTreeSet::new(),
            backfilled: BTreeSet::new(),
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        self.writer_actions(state, actions);
        actions.extend(state.inflight_y.iter().map(|message| Action::DeliverY {
            src: message.src,
            key: message.key,
        }));
        self.coordinator_actions(state, actions);
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        let mut next = state.clone();
        match action {
            Action::WriteX { writer, key, val } => self.start_op(&mut next, writer, key, val),
            Action::DeleteX { writer, key } => self.start_op(&mut next, writer, key, NO_VALUE),
            Action::WriteY { writer } | Action::DeleteY { writer } => {
                self.send_y(&mut next, writer)
            }
            Action::DeliverY { src, key } => self.deliver_y(&mut next, src, key),
            Action::CrashWriter { writer } => next.writer[usize::from(writer) - 1].pc = Pc::Crashed,
            Action::Backfill { key } => self.backfill(&mut next, key),
            Action::Verify => self.verify(&mut next),
            Action::SwitchReads => next.phase = Phase::ReadFromY,
            Action::StopWritingX => next.phase = Phase::StopWritingX,
            Action::Finish => next.phase = Phase::Done,
        }
        assert_ne!(
            &next, state,
            "{action:?} offered but changes nothing: it would be a \
                                  stuttering step and break the terminal-state liveness check"
        );
        Some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("DualWritesConverge", |_, state| dual_writes_converge(state)),
            Property::always("BackfillKeepsNewer", |_, state| backfill_keeps_newer(state)),
            Property::always("DeletedStaysDeleted", |_, state| {
                deleted_stays_deleted(state)
            }),
            Property::always("CrashRepaired", |model, state| {
                !model.is_terminal(state) || crash_repaired(state)
            }),
            Property::always("Completes", |model, state| {
                !model.is_terminal(state) || state.phase == Phase::Done
            }),
            Property::sometimes("TwoWritersRaceOneKey", |_, state| two_writers_race(state)),
            Property::sometimes("BackfillRacesWrite", |_, state| backfill_races_write(state)),
            Property::sometimes("CrashMidDualWrite", |_, state| some_writer_crashed(state)),
        ]
    }
}

fn keys_of(state: &State) -> impl Iterator<Item = u8> + '_ {
    1..=state.x.len() as u8
}

fn same_value(state: &State, key: u8) -> bool {
    state.entry(&state.x, key).val == state.entry(&state.y, key).val
}

/// Before any backfill, a key whose dual writes have all landed holds the same value in X
/// and Y.
fn dual_writes_converge(state: &State) -> bool {
    state.phase != Phase::DualWrite
        || keys_of(state).all(|key| {
            !(state.settled(key) && state.has_writer_with(key, Pc::Done)) || same_value(state, key)
        })
}

/// Once a key's backfill copy and all its dual writes have landed, Y holds X's value.
fn backfill_keeps_newer(state: &State) -> bool {
    keys_of(state).all(|key| {
        let relevant = state.backfilled.contains(&key)
            && state.settled(key)
            && state.entry(&state.x, key).val != NO_VALUE;
        !relevant || same_value(state, key)
    })
}

/// A key X has deleted (and whose writes have all landed) holds no value in Y.
fn deleted_stays_deleted(state: &State) -> bool {
    keys_of(state).all(|key| {
        let deleted = state.settled(key) && state.entry(&state.x, key).val == NO_VALUE;
        !deleted || state.entry(&state.y, key).val == NO_VALUE
    })
}

/// Every key a crashed writer touched holds the same value in X and Y.
fn crash_repaired(state: &State) -> bool {
    keys_of(state).all(|key| !state.has_writer_with(key, Pc::Crashed) || same_value(state, key))
}

fn some_writer_crashed(state: &State) -> bool {
    state.writer.iter().any(|writer| writer.pc == Pc::Crashed)
}

fn two_writers_race(state: &State) -> bool {
    let racing: Vec<&Writer> = state
        .writer
        .iter()
        .filter(|writer| matches!(writer.pc, Pc::WroteX | Pc::SentY))
        .collect();
    racing.iter().enumerate().any(|(index, first)| {
        racing[index + 1..]
            .iter()
            .any(|second| second.key == first.key)
    })
}

/// A backfill copy is in flight while X already holds something newer for its key.
fn backfill_races_write(state: &State) -> bool {
    state.inflight_y.iter().any(|message| {
        message.src == BACKFILLER
            && state.entry(&state.x, message.key)
                != Entry {
                    val: message.val,
                    ver: message.ver,
                }
    })
}

fn entry_value(entry: &Entry) -> TlaValue {
    TlaValue::record([
        ("val", TlaValue::int(entry.val)),
        ("ver", TlaValue::int(entry.ver)),
    ])
}

fn message_value(message: &Message) -> TlaValue {
    TlaValue::record([
        ("src", TlaValue::int(message.src)),
        ("key", TlaValue::int(message.key)),
        ("val", TlaValue::int(message.val)),
        ("ver", TlaValue::int(message.ver)),
    ])
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::DualWrite => "DualWrite",
        Phase::Backfill => "Backfill",
        Phase::Verify => "Verify",
        Phase::ReadFromY => "ReadFromY",
        Phase::StopWritingX => "StopWritingX",
        Phase::Done => "Done",
    }
}

fn pc_name(pc: Pc) -> &'static str {
    match pc {
        Pc::Idle => "Idle",
        Pc::WroteX => "WroteX",
        Pc::SentY => "SentY",
        Pc::Done => "Done",
        Pc::Crashed => "Crashed",
    }
}

impl TlaModel for Migration {
    fn tla_state(&self, state: &State) -> Vec<(&'static str, TlaValue)> {
        let writer = |writer: &Writer| {
            TlaValue::record([
                ("pc", TlaValue::str(pc_name(writer.pc))),
                ("key", TlaValue::int(writer.key)),
                ("val", TlaValue::int(writer.val)),
                ("ver", TlaValue::int(writer.ver)),
            ])
        };
        vec![
            ("phase", TlaValue::str(phase_name(state.phase))),
            (
                "x",
                TlaValue::Seq(state.x.iter().map(entry_value).collect()),
            ),
            (
                "y",
                TlaValue::Seq(state.y.iter().map(entry_value).collect()),
            ),
            (
                "writer",
                TlaValue::Seq(state.writer.iter().map(writer).collect()),
            ),
            (
                "inflightY",
                TlaValue::Set(state.inflight_y.iter().map(message_value).collect()),
            ),
            (
                "backfilled",
                TlaValue::Set(state.backfilled.iter().map(|k| TlaValue::int(*k)).collect()),
            ),
        ]
    }

    fn tla_action(&self, action: &Action) -> TlaAction {
        let int = |value: u8| TlaValue::int(value);
        let (name, args) = match *action {
            Action::WriteX { writer, key, val } => {
                ("WriteX", vec![int(writer), int(key), int(val)])
            }
            Action::DeleteX { writer, key } => ("DeleteX", vec![int(writer), int(key)]),
            Action::WriteY { writer } => ("WriteY", vec![int(writer)]),
            Action::DeleteY { writer } => ("DeleteY", vec![int(writer)]),
            Action::DeliverY { src, key } => ("DeliverY", vec![int(src), int(key)]),
            Action::CrashWriter { writer } => ("CrashWriter", vec![int(writer)]),
            Action::Backfill { key } => ("Backfill", vec![int(key)]),
            Action::Verify => ("Verify", vec![]),
            Action::SwitchReads => ("SwitchReads", vec![]),
            Action::StopWritingX => ("StopWritingX", vec![]),
            Action::Finish => ("Finish", vec![]),
        };
        TlaAction { name, args }
    }

    fn property_specs(&self) -> &'static [PropertySpec] {
        PROPERTIES
    }
}

const PROPERTIES: &[PropertySpec] = &[
    PropertySpec {
        name: "DualWritesConverge",
        kind: PropertyKind::Safety,
        about: "before the backfill, a key whose dual writes all landed holds the same value \
                in X and Y (no order race)",
    },
    PropertySpec {
        name: "BackfillKeepsNewer",
        kind: PropertyKind::Safety,
        about: "a stale backfill copy never lands over a newer dual-written value in Y",
    },
    PropertySpec {
        name: "DeletedStaysDeleted",
        kind: PropertyKind::Safety,
        about: "a key deleted in X does not come back in Y",
    },
    PropertySpec {
        name: "CrashRepaired",
        kind: PropertyKind::Safety,
        about: "when nothing more can happen, a writer's crash between its X and Y writes has \
                not left X and Y different",
    },
    PropertySpec {
        name: "Completes",
        kind: PropertyKind::Liveness,
        about: "the migration reaches Done on every behaviour",
    },
    PropertySpec {
        name: "TwoWritersRaceOneKey",
        kind: PropertyKind::Sometimes,
        about: "two writers are between their X and Y writes on the same key",
    },
    PropertySpec {
        name: "BackfillRacesWrite",
        kind: PropertyKind::Sometimes,
        about: "a backfill copy is in flight while X already holds a newer entry",
    },
    PropertySpec {
        name: "CrashMidDualWrite",
        kind: PropertyKind::Sometimes,
        about: "a writer crashed between its X and Y writes",
    },
];

const VARIANTS: &[VariantSpec] = &[
    VariantSpec {
        name: "naive",
        about: "unconditional writes and backfill, physical deletes, verify waits for X == Y",
        expect_violation: true,
    },
    VariantSpec {
        name: "fixed",
        about: "versions from X, apply_if_newer everywhere, tombstones, verify repairs",
        expect_violation: false,
    },
];

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "writers",
        about: "writers, one operation each",
        default: 2,
        min: 1,
        max: 4,
    },
    ParamSpec {
        name: "keys",
        about: "keys, all present in X at the start",
        default: 1,
        min: 1,
        max: 3,
    },
    ParamSpec {
        name: "values",
        about: "distinct values a put can write",
        default: 2,
        min: 1,
        max: 3,
    },
];

/// The migration model's registry entry.
pub struct MigrationEntry;

impl MigrationEntry {
    /// The model for a variant and validated parameters.
    pub fn build(&self, variant: &VariantSpec, params: &Params) -> Migration {
        let variant = match variant.name {
            "naive" => Variant::Naive,
            "fixed" => Variant::Fixed,
            other => panic!("variant `{other}` is not in VARIANTS"),
        };
        let narrow = |name: &str| u8::try_from(params.get(name)).expect("ranges fit in u8");
        Migration {
            variant,
            writers: narrow("writers"),
            keys: narrow("keys"),
            values: narrow("values"),
        }
    }
}

impl ModelEntry for MigrationEntry {
    fn name(&self) -> &'static str {
        "migration"
    }

    fn about(&self) -> &'static str {
        "dual-write migration of a key-value store X to Y, with backfill, verify and switch"
    }

    fn variants(&self) -> &'static [VariantSpec] {
        VARIANTS
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn properties(&self) -> &'static [PropertySpec] {
        PROPERTIES
    }

    fn spec_module(&self) -> &'static str {
        "Migration"
    }

    fn spec_source(&self) -> &'static str {
        include_str!("../../specs/Migration.tla")
    }

    fn tlc_constants(&self, variant: &VariantSpec, params: &Params) -> Vec<(&'static str, String)> {
        vec![
            ("NumWriters", params.get("writers").to_string()),
            ("NumKeys", params.get("keys").to_string()),
            ("NumValues", params.get("values").to_string()),
            ("Variant", format!("{:?}", variant.name)),
        ]
    }

    fn check(&self, variant: &VariantSpec, params: &Params, options: &CheckOptions) -> CheckReport {
        let model = self.build(variant, params);
        crate::check::run(
            model,
            self.name(),
            variant,
            params,
            self.spec_source(),
            options,
        )
    }

    fn explore(
        &self,
        variant: &VariantSpec,
        params: &Params,
        address: &str,
        ready: &dyn Fn(&str),
    ) -> Result<(), ModelError> {
        crate::check::serve(self.build(variant, params), address, ready)
    }
}
