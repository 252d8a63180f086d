//! The X → Y key-value migration, as real code.
//!
//! A live key-value store X is migrated to a new store Y while writers keep writing. The
//! coordinator drives the phases in order — `DualWrite`, `Backfill`, `Verify`, `ReadFromY`,
//! `StopWritingX`, `Done` — and records every phase change durably so that a restarted
//! coordinator resumes where it stopped.
//!
//! The one idea to hold: **store X orders every write.** While both stores are written, X
//! assigns each write the key's next version, and Y accepts a write only if it is newer than
//! what Y holds ([`store::Store::apply_if_newer`]). Writes reaching Y late or out of order,
//! the backfill's stale copies and deletes (kept as versioned tombstones) all converge to X's
//! order. The `naive` variant writes, copies and deletes unconditionally, and loses writes.
//!
//! Code map:
//! - [`store`]: the store interface, the shared conditional-write rule, and three stores
//!   (in-memory, SQLite, redb). [`contract`] is the one test suite they all must pass.
//! - [`writer`]: a client's put/delete/get routed by the phase (`WriteX`, `WriteY`, ...).
//! - [`coordinator`]: the phase machine, one bounded step at a time; [`phase_log`] keeps its
//!   record durably. [`compare`] is the key-by-key comparison behind `Verify` and the final
//!   check. [`url`] names real stores on the command line.
//! - [`schedule`]: replays the model's action sequences (its counterexamples) against the
//!   real code and evaluates the model's properties on the real stores.
//! - [`live`]: the real-time runner behind `crosscheck migrate` — writer threads, wall
//!   clock, seeded load.
//!
//! Outside [`live`], nothing spawns threads, reads clocks or draws randomness: callers pass
//! time and I/O in, so the same code runs for real and under the simulator.

pub mod compare;
pub mod contract;
pub mod coordinator;
pub mod live;
pub mod phase_log;
pub mod schedule;
pub mod store;
pub mod url;
pub mod writer;

use serde::{Deserialize, Serialize};

/// Which migration design runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Variant {
    /// Unconditional writes to X then Y, an unconditional backfill, physical deletes, and a
    /// verify that only waits for X == Y.
    Naive,
    /// X orders, Y applies if newer, tombstones, and a verify that repairs.
    Fixed,
}

/// The migration's phases, in the order the coordinator drives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Writers write X, then Y; reads come from X.
    DualWrite,
    /// As `DualWrite`, while the coordinator copies X's entries to Y.
    Backfill,
    /// As `DualWrite`, while the coordinator compares X with Y (and, if fixed, repairs Y).
    Verify,
    /// Writers still write X then Y; reads come from Y.
    ReadFromY,
    /// Writers write Y only, and Y assigns versions; X is no longer written.
    StopWritingX,
    /// The migration is over: X is retired.
    Done,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::DualWrite,
        Phase::Backfill,
        Phase::Verify,
        Phase::ReadFromY,
        Phase::StopWritingX,
        Phase::Done,
    ];

    /// The phase after this one; `Done` is last.
    pub fn next(self) -> Option<Phase> {
        let index = Phase::ALL
            .iter()
            .position(|phase| *phase == self)
            .expect("listed");
        Phase::ALL.get(index + 1).copied()
    }

    /// True when writes go to X first (and X assigns versions).
    pub fn writes_x(self) -> bool {
        self < Phase::StopWritingX
    }

    /// True when reads are served by Y.
    pub fn reads_y(self) -> bool {
        self >= Phase::ReadFromY
    }

    /// Position in [`Phase::ALL`], for per-phase counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, formatter)
    }
}
