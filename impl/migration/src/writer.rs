//! A writer client: put, delete and get routed by the migration phase.
//!
//! While X is written (phases before `StopWritingX`) a write is two steps, and the gap between
//! them is where migrations lose data: `WriteX`/`DeleteX` makes X assign the version, then
//! `DeliverY` hands the same entry to Y. The steps are separate functions ([`write_x`],
//! [`deliver_y`]) so that a test or the simulator can reorder deliveries, or drop one to
//! model `CrashWriter`; [`Writer`] runs both back to back. From `StopWritingX` on, writes go
//! to Y alone (`WriteY`/`DeleteY`) and Y assigns versions.
//!
//! The caller must keep each whole operation inside one phase (the real runner holds a read
//! lock on the phase for the operation's length): a phase change waits for operations in
//! flight, so no X-versioned write reaches Y after Y starts assigning versions itself.

use crate::store::{Applied, Entry, Store, StoreError};
use crate::{Phase, Variant};

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    Put(Vec<u8>),
    Delete,
}

/// A write that X has acknowledged and Y has not yet received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub key: String,
    pub delivery: Delivery,
}

/// How Y is to take an in-flight write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Fixed: `apply_if_newer` with X's entry.
    IfNewer(Entry),
    /// Naive: overwrite with X's entry.
    Overwrite(Entry),
    /// Naive: physically remove the key.
    Remove,
}

/// `WriteX` / `DeleteX`: the first half of a dual write. X assigns the version.
///
/// A delete of a key X does not hold live is [`StoreError::NotFound`], and sends nothing.
pub fn write_x(
    x: &dyn Store,
    variant: Variant,
    key: &str,
    op: &WriteOp,
) -> Result<InFlight, StoreError> {
    let delivery = match (variant, op) {
        (Variant::Fixed, WriteOp::Put(value)) => {
            Delivery::IfNewer(Entry::value(value.as_slice(), x.put(key, value)?))
        }
        (Variant::Fixed, WriteOp::Delete) => Delivery::IfNewer(Entry::tombstone(x.delete(key)?)),
        (Variant::Naive, WriteOp::Put(value)) => {
            Delivery::Overwrite(Entry::value(value.as_slice(), x.put(key, value)?))
        }
        (Variant::Naive, WriteOp::Delete) => {
            if !x.remove(key)? {
                return Err(StoreError::NotFound {
                    key: key.to_string(),
                });
            }
            Delivery::Remove
        }
    };
    tracing::trace!(
        key,
        ?delivery,
        "{}",
        if *op == WriteOp::Delete {
            "DeleteX"
        } else {
            "WriteX"
        }
    );
    Ok(InFlight {
        key: key.to_string(),
        delivery,
    })
}

/// `DeliverY`: the second half of a dual write. `None` for a naive removal, which has no
/// outcome to report.
pub fn deliver_y(y: &dyn Store, in_flight: &InFlight) -> Result<Option<Applied>, StoreError> {
    let key = in_flight.key.as_str();
    let outcome = match &in_flight.delivery {
        Delivery::IfNewer(entry) => Some(y.apply_if_newer(key, entry)?),
        Delivery::Overwrite(entry) => {
            y.put_unconditional(key, entry)?;
            Some(Applied::Applied)
        }
        Delivery::Remove => {
            y.remove(key)?;
            None
        }
    };
    tracing::trace!(key, ?outcome, "DeliverY");
    Ok(outcome)
}

/// A client of the two stores, following the phase it is told.
#[derive(Clone, Copy)]
pub struct Writer<'a> {
    pub x: &'a dyn Store,
    pub y: &'a dyn Store,
    pub variant: Variant,
}

impl Writer<'_> {
    /// Performs `op` on `key` as `phase` requires and returns the acknowledged entry (value
    /// or tombstone with its version); `None` for a naive delete, which leaves no version.
    pub fn write(
        &self,
        phase: Phase,
        key: &str,
        op: &WriteOp,
    ) -> Result<Option<Entry>, StoreError> {
        if phase.writes_x() {
            let in_flight = write_x(self.x, self.variant, key, op)?;
            deliver_y(self.y, &in_flight)?;
            return Ok(match in_flight.delivery {
                Delivery::IfNewer(entry) | Delivery::Overwrite(entry) => Some(entry),
                Delivery::Remove => None,
            });
        }
        let acked = match (self.variant, op) {
            (_, WriteOp::Put(value)) => {
                Some(Entry::value(value.as_slice(), self.y.put(key, value)?))
            }
            (Variant::Fixed, WriteOp::Delete) => Some(Entry::tombstone(self.y.delete(key)?)),
            (Variant::Naive, WriteOp::Delete) => {
                if !self.y.remove(key)? {
                    return Err(StoreError::NotFound {
                        key: key.to_string(),
                    });
                }
                None
            }
        };
        tracing::trace!(
            key,
            ?acked,
            "{}",
            if *op == WriteOp::Delete {
                "DeleteY"
            } else {
                "WriteY"
            }
        );
        Ok(acked)
    }

    /// The entry a read sees in `phase`: from X until reads switch to Y.
    pub fn read(&self, phase: Phase, key: &str) -> Result<Option<Entry>, StoreError> {
        if phase.reads_y() {
            self.y.get_entry(key)
        } else {
            self.x.get_entry(key)
        }
    }
}
