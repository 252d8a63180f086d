//! The event trace of one run: what happened, on which node, at what virtual time.
//!
//! Events use the words the stateright model and the TLA+ spec use for their actions
//! ([`Word`]), so a trace from the simulator reads like a counterexample path from the
//! checker. The trace is the determinism witness: two runs of one seed must produce the
//! same lines, and [`Trace::hash`] (SHA-256 of the printed lines) pins that in one number.
//! Details must therefore be deterministic text — no addresses, no HashMap order.
//!
//! Reading a printed trace (`crosscheck replay backup --seed S`), column by column:
//! - **virtual time**: milliseconds of simulated time since the runtime started; events
//!   at one instant keep the order they happened in;
//! - **node**: `harness` (the run itself: its start line with the seed and the whole
//!   fault config, the oracles' verdicts), `faults` (network faults and the heal), or the
//!   node the event happened on (`client0`, `index1`, `store0`, ...);
//! - **event**: a [`Word`]; `Crash` lines say what the disk's power cut kept, lost, tore
//!   or flipped; `Restart` lines say which incarnation of a server is now serving;
//! - **detail**: `key=value` figures (which client, how many fingerprints asked,
//!   uploaded, present or waiting; which snapshot committed).
//!
//! A failing run ends in one `Violation` line per broken oracle, after which the CLI
//! prints the seed, the variant, the fault mix and the command that replays it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// The shared vocabulary of the simulator, the model and the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Word {
    /// The run's seed and config, always the first event.
    Start,
    /// A client asks the index which fingerprints it lacks.
    Query,
    /// A client sends one chunk to a store.
    Upload,
    /// The index records a fingerprint as present.
    Record,
    /// A client commits a manifest.
    Commit,
    /// A pessimistic index leases fingerprints to a client (the model's `Acquire`).
    Acquire,
    /// A client finished one version of its backup.
    Done,
    /// A client gave up on an operation after its retries ran out.
    GiveUp,
    /// A node is killed; its disk loses what it had not synced.
    Crash,
    Restart,
    Pause,
    Resume,
    /// Links cut (both ways or one way) or packet loss and latency raised.
    Partition,
    /// Every fault stops; the liveness phase begins.
    Heal,
    /// An oracle checked something after the run.
    Check,
    /// An oracle found a violation: always the last event of a failing run.
    Violation,
    // The migration scenario's words, as in `model::migration` and `Migration.tla`.
    /// X applies a put and assigns its version (the first half of a dual write).
    WriteX,
    /// X applies a delete.
    DeleteX,
    /// Y applies a put on its own once X is no longer written.
    WriteY,
    /// Y applies a delete on its own once X is no longer written.
    DeleteY,
    /// Y receives the second half of a dual write.
    DeliverY,
    /// A writer stops between its X and Y writes; Y never hears of the write.
    CrashWriter,
    /// The coordinator copies a batch of X's entries into Y (or the phase begins).
    Backfill,
    /// A verify pass compares X with Y (and, if fixed, repairs Y).
    Verify,
    /// Reads move to Y.
    SwitchReads,
    /// Writers stop writing X; Y assigns versions from here.
    StopWritingX,
    /// The migration is done.
    Finish,
    /// A client reads a key.
    Read,
}

impl fmt::Display for Word {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours the width the trace printout asks for; Debug alone would not.
        formatter.pad(&format!("{self:?}"))
    }
}

/// One line of the trace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    /// Virtual time since the runtime started.
    pub at: Duration,
    pub node: String,
    pub word: Word,
    pub detail: String,
}

impl fmt::Display for Event {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at_ms = self.at.as_secs_f64() * 1000.0;
        write!(
            formatter,
            "{at_ms:>11.3}ms  {:<9} {:<9} {}",
            self.node, self.word, self.detail
        )
    }
}

/// A run's events, shared by every node of the run. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    events: Arc<Mutex<Vec<Event>>>,
}

impl Trace {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an event stamped with the current virtual time. Must be called inside a
    /// madsim runtime.
    pub fn record(&self, node: &str, word: Word, detail: impl Into<String>) {
        let at = madsim::time::TimeHandle::current().elapsed();
        let event = Event {
            at,
            node: node.to_string(),
            word,
            detail: detail.into(),
        };
        tracing::debug!(node = %event.node, word = %event.word, detail = %event.detail, "event");
        self.lock().push(event);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// How many events carry `word`.
    pub fn count(&self, word: Word) -> usize {
        self.lock()
            .iter()
            .filter(|event| event.word == word)
            .count()
    }
}

/// SHA-256 of the printed events, one per line, as 16 hex digits: stable across
/// versions of Rust and of this crate's dependencies.
pub fn hash_events(events: &[Event]) -> String {
    let mut hasher = Sha256::new();
    for event in events {
        hasher.update(event.to_string().as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(&hasher.finalize()[..8])
}

/// The index of the first event where two traces differ (a missing event counts), or
/// `None` when they are identical.
pub fn first_divergence(left: &[Event], right: &[Event]) -> Option<usize> {
    let common = left.iter().zip(right).position(|(a, b)| a != b);
    match common {
        Some(index) => Some(index),
        None if left.len() != right.len() => Some(left.len().min(right.len())),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at_ms: u64, word: Word) -> Event {
        let at = Duration::from_millis(at_ms);
        Event {
            at,
            node: "index0".into(),
            word,
            detail: "fp=ab12".into(),
        }
    }

    #[test]
    fn divergence_is_the_first_differing_or_missing_event() {
        let left = vec![
            event(1, Word::Query),
            event(2, Word::Upload),
            event(3, Word::Commit),
        ];
        let mut right = left.clone();
        assert_eq!(first_divergence(&left, &right), None);
        assert_eq!(hash_events(&left), hash_events(&right));
        right[1].word = Word::Record;
        assert_eq!(first_divergence(&left, &right), Some(1));
        assert_ne!(hash_events(&left), hash_events(&right));
        assert_eq!(first_divergence(&left, &left[..2]), Some(2));
    }

    #[test]
    fn an_event_prints_time_node_word_detail() {
        let line = event(1500, Word::Upload).to_string();
        assert_eq!(line, "   1500.000ms  index0    Upload    fp=ab12");
    }
}
