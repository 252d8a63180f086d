//! The dedup upload race: clients of a deduplicating store ask the index which
//! fingerprints are missing, upload those chunks, then commit a manifest that references
//! every chunk of their file. Hold one idea while reading: **the index is a promise** — once
//! it lists a fingerprint, no client will ever upload that chunk again, so the index must
//! never list a chunk the store lacks.
//!
//! Three designs, chosen with [`Variant`]:
//! - `naive`: the index marks a fingerprint present the moment it is first asked about. A
//!   second client is then told "present" while the first is still uploading; it commits at
//!   once, and if the first client crashes before its upload, the chunk is never stored.
//!   (One client suffices too: crash after asking, restart, and be told your own unuploaded
//!   chunks are present. That trace is as short; the race is the one reported.)
//! - `optimistic`: lock-free. Every client told "missing" uploads; duplicate PUTs of the same
//!   content are idempotent; the index records a chunk only after the store has it.
//! - `pessimistic`: a per-fingerprint lease, granted by the index. The holder uploads and
//!   records, which frees the lease; the others wait, and on the grant re-check the index
//!   (so a chunk recorded meanwhile is skipped, not uploaded again).
//!
//! Every client backs up the same file of `chunks` chunks, so every fingerprint is shared and
//! every query is a potential race. A client can crash at any step (at most `crashes` crashes
//! in total); it then restarts from `Query` with its local state gone.
//!
//! The state is laid out exactly like the variables of `specs/Dedup.tla` (same names, same
//! order, clients and chunks numbered from 1 in the spec), and the actions carry the spec's
//! action names — `Query`, `Acquire`, `Upload`, `Record`, `Commit`, `Crash`, `Expire` — so
//! stateright's unique states are TLC's distinct states, one for one.
//!
//! **Lease expiry.** A lease is kept alive by its holder while it runs (renewal), so it can
//! only expire once its holder has crashed. The model marks a crashed holder's leases
//! `Orphaned`, and `Expire` may fire at any later step: every timing of a real TTL after the
//! crash is one of those interleavings, so no real expiry schedule is missed. Known gap: a
//! holder that is paused rather than crashed (a GC pause, a partition) can outlive its lease
//! in a real system and upload while a new holder does; modelling that needs a logical clock
//! and fencing tokens on PUTs, and the "no duplicate upload under a lease" property would
//! then need the store to reject stale tokens.
//!
//! **Liveness.** `eventually` is unsound on joins (see NOTES.md), so "every client commits"
//! is an `always` guarded by termination: a state with no enabled action has every client
//! committed. That equals the liveness property because the state graph is acyclic: every
//! step increases (crashes spent, the clients' total progress, minus the orphaned leases)
//! lexicographically. A client's progress is its phase and, within `upload`, how little work
//! it has left — a chunk still to lease counts 3, to upload 2, to record 1 — and only a
//! crash takes progress back. So every behaviour is finite and ends in a terminal state.
//!
//! # The naive counterexample
//!
//! `crosscheck check dedup --variant naive` finds it in four steps (pinned in
//! `tests/models_dedup.rs`, and replayed by TLC as a behaviour of the spec):
//!
//! ```text
//! Query(1)   client 1 is told chunks {1, 2} are missing; the index lists both at once
//! Query(2)   client 2 is told both are present, so it has nothing to upload
//! Commit(2)  client 2's manifest references chunks 1 and 2; the store has neither
//! Crash(1)   client 1 dies before uploading; restarted, it too will be told "present"
//! ```
//!
//! After `Crash(1)` the chunks are *lost*: listed, unstored, and no client holds an upload
//! of them, so no behaviour ever stores them (`NoCommittedChunkLost`). The optimistic and
//! pessimistic designs keep every property. At the CI parameters (2 clients, 2 chunks, 1
//! crash) the state spaces are: naive 82 distinct states / 177 generated, optimistic
//! 770 / 2,127, pessimistic 967 / 2,455 — the same figures TLC reports for the spec.

use std::collections::BTreeSet;
use std::fmt;

use stateright::{Model, Property};

use crate::{
    CheckOptions, CheckReport, ModelEntry, ModelError, ParamSpec, Params, PropertyKind,
    PropertySpec, TlaAction, TlaModel, TlaValue, VariantSpec, check,
};

/// Which design of the index and upload protocol to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    Naive,
    Optimistic,
    Pessimistic,
}

impl Variant {
    /// The name on the command line and the spec's `VARIANT` constant.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Naive => "naive",
            Variant::Optimistic => "optimistic",
            Variant::Pessimistic => "pessimistic",
        }
    }

    fn from_spec(spec: &VariantSpec) -> Variant {
        match spec.name {
            "naive" => Variant::Naive,
            "optimistic" => Variant::Optimistic,
            "pessimistic" => Variant::Pessimistic,
            other => panic!("dedup has no variant `{other}`: the registry resolves names first"),
        }
    }
}

/// The size of a run. The minimums are where the interesting cases become reachable: a race
/// needs two clients, an abandoned upload needs a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bounds {
    pub clients: u8,
    pub chunks: u8,
    pub crashes: u8,
}

impl Bounds {
    /// The defaults: also the CI parameters of the tests and the committed `.cfg` files.
    pub const DEFAULT: Bounds = Bounds {
        clients: 2,
        chunks: 2,
        crashes: 1,
    };

    fn from_params(params: &Params) -> Bounds {
        let get = |name| u8::try_from(params.get(name)).expect("ranges are validated");
        Bounds {
            clients: get("clients"),
            chunks: get("chunks"),
            crashes: get("crashes"),
        }
    }
}

/// Chunk numbers are 0-based here and 1-based in the spec; a set is a bitmask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkSet(u8);

impl ChunkSet {
    pub fn all(chunks: u8) -> ChunkSet {
        assert!(
            chunks <= 8,
            "a ChunkSet holds at most 8 chunks, asked for {chunks}"
        );
        ChunkSet(((1u16 << chunks) - 1) as u8)
    }
    pub fn contains(self, chunk: u8) -> bool {
        self.0 & (1 << chunk) != 0
    }
    pub fn insert(self, chunk: u8) -> ChunkSet {
        ChunkSet(self.0 | (1 << chunk))
    }
    pub fn remove(self, chunk: u8) -> ChunkSet {
        ChunkSet(self.0 & !(1 << chunk))
    }
    pub fn minus(self, other: ChunkSet) -> ChunkSet {
        ChunkSet(self.0 & !other.0)
    }
    pub fn is_subset(self, other: ChunkSet) -> bool {
        self.minus(other).is_empty()
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0..8).filter(move |&chunk| self.contains(chunk))
    }
}

/// Where a client is in its backup. The spec spells these `"query"`, `"upload"`, `"done"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// About to ask the index (at the start, and after every crash).
    Query,
    /// Has the index's answer; uploading, recording and (pessimistic) waiting for leases.
    Upload,
    /// Has committed its manifest.
    Done,
}

/// The lease on one fingerprint (pessimistic only; always `Free` in the other variants).
/// The spec spells these `0` (free), the holder's number, and `-1` (orphaned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lease {
    Free,
    /// Held by a running client (0-based here).
    Held(u8),
    /// Held by a client that crashed; it stays taken until `Expire`.
    Orphaned,
}

/// One state; the fields are the spec's variables, in the spec's order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// Per client: its phase.
    pub pc: Vec<Phase>,
    /// Per client: the fingerprints it was told are missing and has not yet uploaded (or,
    /// pessimistic, not yet resolved through a lease).
    pub pending: Vec<ChunkSet>,
    /// Per client: chunks it uploaded but has not yet recorded in the index.
    pub uploaded: Vec<ChunkSet>,
    /// The chunks the store holds. Only grows: a PUT is durable once done.
    pub store: ChunkSet,
    /// The fingerprints the index lists as present. Only grows.
    pub index: ChunkSet,
    /// Per chunk: its lease.
    pub lease: Vec<Lease>,
    /// Per chunk: PUTs of it since its lease last expired (a history variable for the
    /// properties; it never guards an action).
    pub puts: Vec<u8>,
    /// The chunks whose lease has expired at least once (history, for a witness).
    pub expired: ChunkSet,
    /// Crashes so far, across all clients.
    pub crashes: u8,
}

/// One step, named as in the spec. Clients and chunks are 0-based here; [`fmt::Display`]
/// prints them 1-based, exactly as the spec's action would be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Query { client: u8 },
    Acquire { client: u8, chunk: u8 },
    Upload { client: u8, chunk: u8 },
    Record { client: u8, chunk: u8 },
    Commit { client: u8 },
    Crash { client: u8 },
    Expire { chunk: u8 },
}

impl Action {
    /// The spec's operator name for this action.
    pub fn name(self) -> &'static str {
        match self {
            Action::Query { .. } => "Query",
            Action::Acquire { .. } => "Acquire",
            Action::Upload { .. } => "Upload",
            Action::Record { .. } => "Record",
            Action::Commit { .. } => "Commit",
            Action::Crash { .. } => "Crash",
            Action::Expire { .. } => "Expire",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match *self {
            Action::Query { client } | Action::Commit { client } | Action::Crash { client } => {
                write!(formatter, "{name}({})", client + 1)
            }
            Action::Acquire { client, chunk }
            | Action::Upload { client, chunk }
            | Action::Record { client, chunk } => {
                write!(formatter, "{name}({}, {})", client + 1, chunk + 1)
            }
            Action::Expire { chunk } => write!(formatter, "{name}({})", chunk + 1),
        }
    }
}

/// The model: a variant at some bounds.
#[derive(Clone, Debug)]
pub struct Dedup {
    pub variant: Variant,
    pub bounds: Bounds,
}

impl Dedup {
    pub fn new(variant: Variant, bounds: Bounds) -> Dedup {
        for (spec, value) in PARAMS
            .iter()
            .zip([bounds.clients, bounds.chunks, bounds.crashes])
        {
            let value = u64::from(value);
            assert!(
                (spec.min..=spec.max).contains(&value),
                "{}={value} out of range",
                spec.name
            );
        }
        Dedup { variant, bounds }
    }

    fn clients(&self) -> impl Iterator<Item = u8> + use<> {
        0..self.bounds.clients
    }

    fn chunks(&self) -> impl Iterator<Item = u8> + use<> {
        0..self.bounds.chunks
    }

    fn all_chunks(&self) -> ChunkSet {
        ChunkSet::all(self.bounds.chunks)
    }

    /// Whether `action` may fire in `state`: the guards of the spec's actions.
    fn enabled(&self, state: &State, action: Action) -> bool {
        let pessimistic = self.variant == Variant::Pessimistic;
        match action {
            Action::Query { client } => state.pc[client as usize] == Phase::Query,
            Action::Acquire { client, chunk } => {
                let client = client as usize;
                pessimistic
                    && state.pc[client] == Phase::Upload
                    && state.pending[client].contains(chunk)
                    && state.lease[chunk as usize] == Lease::Free
            }
            Action::Upload { client, chunk } => {
                state.pc[client as usize] == Phase::Upload
                    && state.pending[client as usize].contains(chunk)
                    && (!pessimistic || state.lease[chunk as usize] == Lease::Held(client))
            }
            Action::Record { client, chunk } => {
                self.variant != Variant::Naive && state.uploaded[client as usize].contains(chunk)
            }
            Action::Commit { client } => {
                let client = client as usize;
                state.pc[client] == Phase::Upload
                    && state.pending[client].is_empty()
                    && state.uploaded[client].is_empty()
            }
            Action::Crash { client } => {
                state.pc[client as usize] != Phase::Done && state.crashes < self.bounds.crashes
            }
            Action::Expire { chunk } => state.lease[chunk as usize] == Lease::Orphaned,
        }
    }

    /// The effect of an enabled action: the spec's primed variables.
    fn apply(&self, state: &mut State, action: Action) {
        match action {
            Action::Query { client } => {
                let client = client as usize;
                state.pending[client] = self.all_chunks().minus(state.index);
                state.pc[client] = Phase::Upload;
                if self.variant == Variant::Naive {
                    // The bug under study: asking marks every asked fingerprint present.
                    state.index = self.all_chunks();
                }
            }
            Action::Acquire { client, chunk } => {
                // The index grants the lease only for a fingerprint it still lacks; for one
                // recorded meanwhile it answers "present" and the client drops it.
                if state.index.contains(chunk) {
                    state.pending[client as usize] = state.pending[client as usize].remove(chunk);
                } else {
                    state.lease[chunk as usize] = Lease::Held(client);
                }
            }
            Action::Upload { client, chunk } => {
                let client = client as usize;
                state.store = state.store.insert(chunk);
                state.pending[client] = state.pending[client].remove(chunk);
                if self.variant != Variant::Naive {
                    state.uploaded[client] = state.uploaded[client].insert(chunk);
                }
                state.puts[chunk as usize] += 1;
            }
            Action::Record { client, chunk } => {
                let client = client as usize;
                assert!(
                    state.store.contains(chunk),
                    "Record before the store has the chunk"
                );
                state.index = state.index.insert(chunk);
                state.uploaded[client] = state.uploaded[client].remove(chunk);
                if self.variant == Variant::Pessimistic {
                    assert_eq!(state.lease[chunk as usize], Lease::Held(client as u8));
                    state.lease[chunk as usize] = Lease::Free;
                }
            }
            Action::Commit { client } => state.pc[client as usize] = Phase::Done,
            Action::Crash { client } => self.crash(state, client),
            Action::Expire { chunk } => {
                state.lease[chunk as usize] = Lease::Free;
                state.expired = state.expired.insert(chunk);
                state.puts[chunk as usize] = 0;
            }
        }
    }

    fn crash(&self, state: &mut State, client: u8) {
        let index = client as usize;
        state.pc[index] = Phase::Query;
        state.pending[index] = ChunkSet::default();
        state.uploaded[index] = ChunkSet::default();
        for lease in &mut state.lease {
            if *lease == Lease::Held(client) {
                *lease = Lease::Orphaned;
            }
        }
        state.crashes += 1;
    }

    /// Every action the model knows, enabled or not, in a fixed order (stateright rebuilds
    /// traces from action indices, so the order must never change between calls). Crashes
    /// and expiries come last: of several shortest traces, BFS then reports the one that
    /// tries the normal steps first, which reads as the race rather than as a lone crash.
    fn all_actions(&self) -> Vec<Action> {
        let mut actions = Vec::new();
        for client in self.clients() {
            actions.push(Action::Query { client });
            for chunk in self.chunks() {
                actions.push(Action::Acquire { client, chunk });
                actions.push(Action::Upload { client, chunk });
                actions.push(Action::Record { client, chunk });
            }
            actions.push(Action::Commit { client });
        }
        actions.extend(self.clients().map(|client| Action::Crash { client }));
        actions.extend(self.chunks().map(|chunk| Action::Expire { chunk }));
        actions
    }

    fn is_terminal(&self, state: &State) -> bool {
        let mut actions = Vec::new();
        self.actions(state, &mut actions);
        actions.is_empty()
    }
}

/// The registry entry: `crosscheck check dedup ...` and friends reach the model through it.
pub static DEDUP: DedupEntry = DedupEntry;

pub struct DedupEntry;

const VARIANTS: [VariantSpec; 3] = [
    VariantSpec {
        name: "naive",
        about: "the index marks a fingerprint present when first asked, before any upload",
        expect_violation: true,
    },
    VariantSpec {
        name: "optimistic",
        about: "lock-free; idempotent duplicate PUTs; the index records a chunk once stored",
        expect_violation: false,
    },
    VariantSpec {
        name: "pessimistic",
        about: "a per-fingerprint lease: the holder uploads, others wait, expiry after a crash",
        expect_violation: false,
    },
];

const PARAMS: [ParamSpec; 3] = [
    ParamSpec {
        name: "clients",
        about: "clients backing up the same file (two are needed for a race)",
        default: Bounds::DEFAULT.clients as u64,
        min: 2,
        max: 4,
    },
    ParamSpec {
        name: "chunks",
        about: "chunks in the file, all shared by every client",
        default: Bounds::DEFAULT.chunks as u64,
        min: 1,
        max: 4,
    },
    ParamSpec {
        name: "crashes",
        about: "client crashes allowed in a behaviour, in total (one is needed to lose a chunk)",
        default: Bounds::DEFAULT.crashes as u64,
        min: 1,
        max: 3,
    },
];

const INDEX_ONLY_LISTS_STORED: PropertySpec = PropertySpec {
    name: "IndexOnlyListsStored",
    kind: PropertyKind::Safety,
    about: "the index lists only fingerprints whose chunk the store holds",
};
const COMMITTED_RESTORABLE: PropertySpec = PropertySpec {
    name: "CommittedRestorable",
    kind: PropertyKind::Safety,
    about: "once a manifest is committed, every chunk it references is stored",
};
const NO_COMMITTED_CHUNK_LOST: PropertySpec = PropertySpec {
    name: "NoCommittedChunkLost",
    kind: PropertyKind::Safety,
    about: "no committed manifest references a chunk that will never be stored",
};
const NO_DUPLICATE_UPLOAD_UNDER_LEASE: PropertySpec = PropertySpec {
    name: "NoDuplicateUploadUnderLease",
    kind: PropertyKind::Safety,
    about: "while a client holds a chunk's lease, the chunk has been PUT at most once since \
            its lease last expired (vacuous in the lease-free variants)",
};
const EVERY_CLIENT_COMMITS: PropertySpec = PropertySpec {
    name: "EveryClientCommits",
    kind: PropertyKind::Liveness,
    about: "every behaviour ends with every client's manifest committed",
};
const RACE_ON_FINGERPRINT: PropertySpec = PropertySpec {
    name: "RaceOnFingerprint",
    kind: PropertyKind::Sometimes,
    about: "two clients hold the index's answer about a fingerprint not yet stored",
};
const CRASH_MID_UPLOAD: PropertySpec = PropertySpec {
    name: "CrashMidUpload",
    kind: PropertyKind::Sometimes,
    about: "a crash abandons an upload half-done: a chunk listed but not stored with no \
            upload left, or stored but not listed with no record left",
};
const DUPLICATE_UPLOAD: PropertySpec = PropertySpec {
    name: "DuplicateUpload",
    kind: PropertyKind::Sometimes,
    about: "two clients both PUT the same chunk (optimistic: idempotent, harmless)",
};
const WAIT_ON_LEASE: PropertySpec = PropertySpec {
    name: "WaitOnLease",
    kind: PropertyKind::Sometimes,
    about: "a client needs a chunk whose lease another client holds",
};
const REUPLOAD_AFTER_EXPIRY: PropertySpec = PropertySpec {
    name: "ReuploadAfterExpiry",
    kind: PropertyKind::Sometimes,
    about: "a crashed holder's lease expires and the chunk is PUT under a new lease",
};

/// Every property of any variant, in the order each variant's list keeps them.
const ALL_PROPERTIES: [PropertySpec; 10] = [
    INDEX_ONLY_LISTS_STORED,
    COMMITTED_RESTORABLE,
    NO_COMMITTED_CHUNK_LOST,
    NO_DUPLICATE_UPLOAD_UNDER_LEASE,
    EVERY_CLIENT_COMMITS,
    RACE_ON_FINGERPRINT,
    CRASH_MID_UPLOAD,
    DUPLICATE_UPLOAD,
    WAIT_ON_LEASE,
    REUPLOAD_AFTER_EXPIRY,
];

// The safety and liveness properties are the same in every variant (so one `.cfg` shape
// serves all three); the witnesses differ, because each design has its own interesting case
// and a witness a design cannot reach would fail the run for the wrong reason.
const NAIVE_PROPERTIES: [PropertySpec; 7] = [
    INDEX_ONLY_LISTS_STORED,
    COMMITTED_RESTORABLE,
    NO_COMMITTED_CHUNK_LOST,
    NO_DUPLICATE_UPLOAD_UNDER_LEASE,
    EVERY_CLIENT_COMMITS,
    RACE_ON_FINGERPRINT,
    CRASH_MID_UPLOAD,
];
const OPTIMISTIC_PROPERTIES: [PropertySpec; 8] = [
    INDEX_ONLY_LISTS_STORED,
    COMMITTED_RESTORABLE,
    NO_COMMITTED_CHUNK_LOST,
    NO_DUPLICATE_UPLOAD_UNDER_LEASE,
    EVERY_CLIENT_COMMITS,
    RACE_ON_FINGERPRINT,
    CRASH_MID_UPLOAD,
    DUPLICATE_UPLOAD,
];
const PESSIMISTIC_PROPERTIES: [PropertySpec; 9] = [
    INDEX_ONLY_LISTS_STORED,
    COMMITTED_RESTORABLE,
    NO_COMMITTED_CHUNK_LOST,
    NO_DUPLICATE_UPLOAD_UNDER_LEASE,
    EVERY_CLIENT_COMMITS,
    RACE_ON_FINGERPRINT,
    CRASH_MID_UPLOAD,
    WAIT_ON_LEASE,
    REUPLOAD_AFTER_EXPIRY,
];

/// A fingerprint that is lost for good: the index lists it, so no client will ever be told to
/// upload it again (the index only grows and `Query`/`Acquire` skip listed fingerprints), the
/// store lacks it, and no client still holds an upload of it. No extension stores it.
fn lost_chunks(state: &State) -> impl Iterator<Item = u8> + '_ {
    state
        .index
        .minus(state.store)
        .iter()
        .filter(|&chunk| state.pending.iter().all(|pending| !pending.contains(chunk)))
}

/// A fingerprint whose uploader crashed between `Upload` and `Record`: stored, not listed,
/// and nobody left to record it (the next client told "missing" uploads it again).
fn unrecorded_chunks(state: &State) -> impl Iterator<Item = u8> + '_ {
    state.store.minus(state.index).iter().filter(|&chunk| {
        state
            .uploaded
            .iter()
            .all(|uploaded| !uploaded.contains(chunk))
    })
}

fn any_committed(state: &State) -> bool {
    state.pc.contains(&Phase::Done)
}

/// The condition of each property, by its spec name; each mirrors the spec's definition.
fn condition(name: &str) -> fn(&Dedup, &State) -> bool {
    match name {
        "IndexOnlyListsStored" => |_, state| state.index.is_subset(state.store),
        "CommittedRestorable" => {
            |model, state| !any_committed(state) || model.all_chunks().is_subset(state.store)
        }
        "NoCommittedChunkLost" => {
            |_, state| !any_committed(state) || lost_chunks(state).next().is_none()
        }
        "NoDuplicateUploadUnderLease" => |_, state| {
            state
                .lease
                .iter()
                .zip(&state.puts)
                .all(|(lease, &puts)| !matches!(lease, Lease::Held(_)) || puts <= 1)
        },
        "EveryClientCommits" => |model, state| {
            !model.is_terminal(state) || state.pc.iter().all(|&phase| phase == Phase::Done)
        },
        // The store only grows, so a fingerprint unstored now was unstored when both clients
        // asked: both were told "missing", or one was told "present" by a naive index while
        // the other still has to upload it.
        "RaceOnFingerprint" => |model, state| {
            let answered = state
                .pc
                .iter()
                .filter(|&&phase| phase == Phase::Upload)
                .count();
            answered >= 2 && !model.all_chunks().is_subset(state.store)
        },
        "CrashMidUpload" => |_, state| {
            lost_chunks(state).next().is_some() || unrecorded_chunks(state).next().is_some()
        },
        "DuplicateUpload" => |_, state| state.puts.iter().any(|&puts| puts >= 2),
        "WaitOnLease" => |_, state| {
            state.pending.iter().zip(0u8..).any(|(pending, client)| {
                pending.iter().any(|chunk| {
                    matches!(state.lease[chunk as usize],
                        Lease::Held(holder) if holder != client)
                })
            })
        },
        "ReuploadAfterExpiry" => |_, state| {
            state
                .expired
                .iter()
                .any(|chunk| state.puts[chunk as usize] == 1)
        },
        other => panic!("dedup has no property `{other}`"),
    }
}

impl Model for Dedup {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let clients = self.bounds.clients as usize;
        let chunks = self.bounds.chunks as usize;
        vec![State {
            pc: vec![Phase::Query; clients],
            pending: vec![ChunkSet::default(); clients],
            uploaded: vec![ChunkSet::default(); clients],
            store: ChunkSet::default(),
            index: ChunkSet::default(),
            lease: vec![Lease::Free; chunks],
            puts: vec![0; chunks],
            expired: ChunkSet::default(),
            crashes: 0,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let enabled = self
            .all_actions()
            .into_iter()
            .filter(|&action| self.enabled(state, action));
        actions.extend(enabled);
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        assert!(
            self.enabled(state, action),
            "{action} is not enabled in {state:?}"
        );
        let mut next = state.clone();
        self.apply(&mut next, action);
        Some(next)
    }

    fn format_action(&self, action: &Action) -> String {
        action.to_string()
    }

    fn properties(&self) -> Vec<Property<Self>> {
        self.property_specs()
            .iter()
            .map(|spec| match spec.kind {
                PropertyKind::Safety | PropertyKind::Liveness => {
                    Property::always(spec.name, condition(spec.name))
                }
                PropertyKind::Sometimes => Property::sometimes(spec.name, condition(spec.name)),
            })
            .collect()
    }
}

fn tla_set(set: ChunkSet) -> TlaValue {
    TlaValue::Set(
        set.iter()
            .map(|chunk| TlaValue::int(chunk + 1))
            .collect::<BTreeSet<_>>(),
    )
}

impl TlaModel for Dedup {
    fn tla_state(&self, state: &State) -> Vec<(&'static str, TlaValue)> {
        let phase = |phase: &Phase| match phase {
            Phase::Query => TlaValue::str("query"),
            Phase::Upload => TlaValue::str("upload"),
            Phase::Done => TlaValue::str("done"),
        };
        let lease = |lease: &Lease| match lease {
            Lease::Free => TlaValue::int(0),
            Lease::Held(client) => TlaValue::int(client + 1),
            Lease::Orphaned => TlaValue::int(-1),
        };
        vec![
            ("pc", TlaValue::Seq(state.pc.iter().map(phase).collect())),
            (
                "pending",
                TlaValue::Seq(state.pending.iter().copied().map(tla_set).collect()),
            ),
            (
                "uploaded",
                TlaValue::Seq(state.uploaded.iter().copied().map(tla_set).collect()),
            ),
            ("store", tla_set(state.store)),
            ("index", tla_set(state.index)),
            (
                "lease",
                TlaValue::Seq(state.lease.iter().map(lease).collect()),
            ),
            (
                "puts",
                TlaValue::Seq(state.puts.iter().map(|&puts| TlaValue::int(puts)).collect()),
            ),
            ("expired", tla_set(state.expired)),
            ("crashes", TlaValue::int(state.crashes)),
        ]
    }

    fn tla_action(&self, action: &Action) -> TlaAction {
        let number = |value: u8| TlaValue::int(value + 1);
        let args = match *action {
            Action::Query { client } | Action::Commit { client } | Action::Crash { client } => {
                vec![number(client)]
            }
            Action::Acquire { client, chunk }
            | Action::Upload { client, chunk }
            | Action::Record { client, chunk } => vec![number(client), number(chunk)],
            Action::Expire { chunk } => vec![number(chunk)],
        };
        TlaAction {
            name: action.name(),
            args,
        }
    }

    fn property_specs(&self) -> &'static [PropertySpec] {
        match self.variant {
            Variant::Naive => &NAIVE_PROPERTIES,
            Variant::Optimistic => &OPTIMISTIC_PROPERTIES,
            Variant::Pessimistic => &PESSIMISTIC_PROPERTIES,
        }
    }
}

impl ModelEntry for DedupEntry {
    fn name(&self) -> &'static str {
        "dedup"
    }
    fn about(&self) -> &'static str {
        "clients of a deduplicating store racing to upload shared chunks, with crashes"
    }
    fn variants(&self) -> &'static [VariantSpec] {
        &VARIANTS
    }
    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    /// Every variant's properties, in one order. Only the witnesses (`Sometimes`) differ
    /// between variants; see [`Dedup::property_specs`].
    fn properties(&self) -> &'static [PropertySpec] {
        &ALL_PROPERTIES
    }
    fn spec_module(&self) -> &'static str {
        "Dedup"
    }
    fn spec_source(&self) -> &'static str {
        include_str!("../../specs/Dedup.tla")
    }
    fn tlc_constants(&self, variant: &VariantSpec, params: &Params) -> Vec<(&'static str, String)> {
        let bounds = Bounds::from_params(params);
        vec![
            ("CLIENTS", bounds.clients.to_string()),
            ("CHUNKS", bounds.chunks.to_string()),
            ("MAX_CRASHES", bounds.crashes.to_string()),
            (
                "VARIANT",
                format!("{:?}", Variant::from_spec(variant).name()),
            ),
        ]
    }
    fn check(&self, variant: &VariantSpec, params: &Params, options: &CheckOptions) -> CheckReport {
        let model = Dedup::new(Variant::from_spec(variant), Bounds::from_params(params));
        check::run(model, "dedup", variant, params, self.spec_source(), options)
    }
    fn explore(
        &self,
        variant: &VariantSpec,
        params: &Params,
        address: &str,
        ready: &dyn Fn(&str),
    ) -> Result<(), ModelError> {
        let model = Dedup::new(Variant::from_spec(variant), Bounds::from_params(params));
        check::serve(model, address, ready)
    }
}

/// Symmetry reduction over clients: the state with its clients renumbered into a canonical
/// order. Sound here because clients are interchangeable — each backs up the same file with
/// the same code, every action is defined for each client alike, and every property
/// quantifies over all clients — so a state and its renumbering have the same futures up to
/// renumbering, and the same verdicts. Chunks are *not* permuted: a fingerprint's identity
/// matters once a client has a set of them. Use with stateright's DFS
/// (`checker().symmetry_fn(representative).spawn_dfs()`; its BFS ignores symmetry); the counts
/// are then of classes, not comparable with TLC's.
pub fn representative(state: &State) -> State {
    let held_by = |client: usize| {
        let held = state
            .lease
            .iter()
            .zip(0u8..)
            .filter(|(lease, _)| **lease == Lease::Held(client as u8));
        held.fold(ChunkSet::default(), |set, (_, chunk)| set.insert(chunk))
    };
    // Clients with equal keys are identical in every variable, so any order among them gives
    // the same state: the result is canonical.
    let mut order: Vec<usize> = (0..state.pc.len()).collect();
    order.sort_by_key(|&client| {
        (
            state.pc[client],
            state.pending[client],
            state.uploaded[client],
            held_by(client),
        )
    });
    let mut renumbered = vec![0u8; order.len()];
    for (new, &old) in order.iter().enumerate() {
        renumbered[old] = new as u8;
    }
    let lease = state.lease.iter().map(|lease| match *lease {
        Lease::Held(holder) => Lease::Held(renumbered[holder as usize]),
        other => other,
    });
    State {
        pc: order.iter().map(|&client| state.pc[client]).collect(),
        pending: order.iter().map(|&client| state.pending[client]).collect(),
        uploaded: order.iter().map(|&client| state.uploaded[client]).collect(),
        lease: lease.collect(),
        ..state.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The lease property is vacuous in the lease-free variants and, in the pessimistic one,
    // holds on every reachable state; this shows it is not vacuous there: a second PUT while
    // a client holds the lease (what a grant without the index re-check would allow) fails it.
    #[test]
    fn a_second_put_under_a_held_lease_violates_the_lease_property() {
        let model = Dedup::new(Variant::Pessimistic, Bounds::DEFAULT);
        let holds = condition(NO_DUPLICATE_UPLOAD_UNDER_LEASE.name);
        let mut state = model.init_states().remove(0);
        state.store = ChunkSet::all(1);
        state.puts[0] = 2;
        state.lease[0] = Lease::Held(1);
        assert!(
            !holds(&model, &state),
            "two PUTs under client 2's lease must fail it"
        );
        state.lease[0] = Lease::Free;
        assert!(
            holds(&model, &state),
            "without a held lease the property says nothing"
        );
    }

    #[test]
    fn the_liveness_guard_fails_only_in_a_terminal_state_with_an_uncommitted_client() {
        let model = Dedup::new(Variant::Pessimistic, Bounds::DEFAULT);
        let commits = condition(EVERY_CLIENT_COMMITS.name);
        let mut state = model.init_states().remove(0);
        assert!(commits(&model, &state), "the initial state has moves left");
        // A lease that a committed client never gave back (unreachable in this design): client
        // 1 waits on it forever, and no crash is left to shake anything loose.
        state.pc = vec![Phase::Upload, Phase::Done];
        state.pending[0] = ChunkSet::all(1);
        state.lease[0] = Lease::Held(1);
        state.crashes = Bounds::DEFAULT.crashes;
        assert!(
            model.is_terminal(&state),
            "client 1 can neither acquire, upload nor commit"
        );
        assert!(!commits(&model, &state));
    }

    /// Symmetry must not change a verdict: the reduced DFS finds exactly the discoveries of the
    /// full search, on fewer states.
    #[test]
    fn symmetry_reduction_keeps_every_verdict() {
        use std::collections::BTreeSet;

        use stateright::{Checker, HasDiscoveries};
        let bounds = Bounds {
            clients: 3,
            chunks: 2,
            crashes: 1,
        };
        for variant in [Variant::Naive, Variant::Optimistic, Variant::Pessimistic] {
            let model = Dedup::new(variant, bounds);
            let run = |symmetric: bool| {
                let builder = model
                    .clone()
                    .checker()
                    .finish_when(HasDiscoveries::AnyOf(BTreeSet::new()));
                // The two checkers are different types: read each one out where it is.
                if symmetric {
                    let checker = builder.symmetry_fn(representative).spawn_dfs().join();
                    let found: BTreeSet<&str> = checker.discoveries().into_keys().collect();
                    (checker.unique_state_count(), found)
                } else {
                    let checker = builder.spawn_bfs().join();
                    let found: BTreeSet<&str> = checker.discoveries().into_keys().collect();
                    (checker.unique_state_count(), found)
                }
            };
            let (full_states, full_found) = run(false);
            let (reduced_states, reduced_found) = run(true);
            assert_eq!(reduced_found, full_found, "{variant:?}: discoveries");
            assert!(
                reduced_states < full_states,
                "{variant:?}: {reduced_states} vs {full_states}"
            );
        }
    }

    #[test]
    fn the_representative_renumbers_lease_holders_with_their_clients() {
        let model = Dedup::new(Variant::Pessimistic, Bounds::DEFAULT);
        let mut state = model.init_states().remove(0);
        state.pc = vec![Phase::Upload, Phase::Query];
        state.pending[0] = ChunkSet::all(2);
        state.lease[1] = Lease::Held(0);
        let canonical = representative(&state);
        assert_eq!(canonical.pc, vec![Phase::Query, Phase::Upload]);
        assert_eq!(
            canonical.pending,
            vec![ChunkSet::default(), ChunkSet::all(2)]
        );
        assert_eq!(canonical.lease, vec![Lease::Free, Lease::Held(1)]);
        assert_eq!(
            representative(&canonical),
            canonical,
            "a representative is its own"
        );
    }
}
