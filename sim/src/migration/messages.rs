//! The RPC between migration clients (writers, coordinator) and the store nodes X and Y.
//!
//! One request type, [`StoreCall`], whose variants are the steps of MIGRATION's writer and
//! coordinator in the shared vocabulary (`WriteX`, `DeliverY`, ...). The store node runs
//! MIGRATION's own leaf functions on them, so the logic under test is the real one and
//! only the hop between the two halves of a dual write is simulated.

use madsim::net::rpc::Request;
use migration::Variant;
use migration::store::{Applied, Entry};
use migration::writer::{Delivery, WriteOp};
use serde::{Deserialize, Serialize};

/// A client's operation, as [`WriteOp`] (which is not serializable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireOp {
    Put(Vec<u8>),
    Delete,
}

impl WireOp {
    pub fn to_op(&self) -> WriteOp {
        match self {
            WireOp::Put(value) => WriteOp::Put(value.clone()),
            WireOp::Delete => WriteOp::Delete,
        }
    }
}

/// How Y is to take a dual write, as [`Delivery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireDelivery {
    IfNewer(Entry),
    Overwrite(Entry),
    Remove,
}

impl From<Delivery> for WireDelivery {
    fn from(delivery: Delivery) -> Self {
        match delivery {
            Delivery::IfNewer(entry) => WireDelivery::IfNewer(entry),
            Delivery::Overwrite(entry) => WireDelivery::Overwrite(entry),
            Delivery::Remove => WireDelivery::Remove,
        }
    }
}

impl From<WireDelivery> for Delivery {
    fn from(delivery: WireDelivery) -> Self {
        match delivery {
            WireDelivery::IfNewer(entry) => Delivery::IfNewer(entry),
            WireDelivery::Overwrite(entry) => Delivery::Overwrite(entry),
            WireDelivery::Remove => Delivery::Remove,
        }
    }
}

/// Who sent a write to Y: the oracles name a lost write by its last setter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    Writer(usize),
    /// A write once X is retired, which Y orders itself.
    YOnly,
    Backfill,
    Repair,
}

impl std::fmt::Display for Source {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Writer(index) => write!(formatter, "writer{index}"),
            Source::YOnly => write!(formatter, "y-only"),
            Source::Backfill => write!(formatter, "backfill"),
            Source::Repair => write!(formatter, "repair"),
        }
    }
}

/// One step, sent to X or Y.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoreCall {
    /// X: the first half of a dual write (`WriteX`/`DeleteX`); X assigns the version.
    WriteX {
        request: u64,
        variant: Variant,
        key: String,
        op: WireOp,
        /// Unique per write: a put writes it as its value; the oracles order writes by it.
        tag: String,
    },
    /// Y: a write once X is no longer written (`WriteY`/`DeleteY`); Y assigns the version.
    WriteY {
        request: u64,
        variant: Variant,
        key: String,
        op: WireOp,
        /// Unique per write: a put writes it as its value; the oracles order writes by it.
        tag: String,
    },
    /// Y: the second half of a dual write.
    DeliverY {
        key: String,
        delivery: WireDelivery,
        source: Source,
    },
    Get {
        key: String,
    },
    Scan {
        after: Option<String>,
        limit: usize,
    },
    GetEntries {
        keys: Vec<String>,
    },
    /// Y: copies a batch read from X (`Backfill`), if newer (fixed) or over Y (naive).
    BackfillApply {
        variant: Variant,
        batch: Vec<(String, Entry)>,
    },
    /// Y: a verify pass's repair, `apply_if_newer` with X's entry.
    Repair {
        key: String,
        entry: Entry,
    },
}

/// What a store answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoreAnswer {
    /// `WriteX`: what to deliver to Y; `None` when a delete found nothing to delete.
    Delivery(Option<WireDelivery>),
    /// `WriteY`: true when the write took effect (false: a delete of nothing).
    Acked(bool),
    /// `DeliverY`, `Repair`: MIGRATION's outcome (`None` for a naive removal).
    Applied(Option<AppliedWire>),
    Entry(Option<Entry>),
    Entries(Vec<Option<Entry>>),
    Batch(Vec<(String, Entry)>),
    /// `BackfillApply`: keys applied.
    BackfillApplied(u64),
}

/// [`Applied`], serializable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppliedWire {
    Applied,
    AlreadyHeld,
    Stale { held_version: u64 },
}

impl From<Applied> for AppliedWire {
    fn from(applied: Applied) -> Self {
        match applied {
            Applied::Applied => AppliedWire::Applied,
            Applied::AlreadyHeld => AppliedWire::AlreadyHeld,
            Applied::Stale { held_version } => AppliedWire::Stale { held_version },
        }
    }
}

/// Why a store refused: `Unavailable` is worth retrying; `Refused` is a broken invariant
/// (a version conflict, a corrupt record) that a retry would only repeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StoreFailure {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store refused: {0}")]
    Refused(String),
}

impl Request for StoreCall {
    const ID: u64 = 0x4d49_0001;
    type Response = Result<StoreAnswer, StoreFailure>;
}
