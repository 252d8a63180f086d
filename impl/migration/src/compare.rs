//! Key-by-key comparison of stores: the shadow reads of the `Verify` phase and the final
//! check that Y holds what it should.
//!
//! Two notions of "equal" live here, and mixing them up hides bugs: the fixed design compares
//! whole entries (payload and version), the naive one only what a reader sees (a tombstone
//! reads like an absent key).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::{Entry, Store, StoreError};

/// How X and Y disagree on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum MismatchKind {
    /// X holds the key, Y does not.
    MissingInY,
    /// Y holds an older version than X: a dual write that never reached Y.
    OlderInY,
    /// Same version, different payloads: the version order is broken.
    Conflict,
    /// Y holds a key X (or the expected state) does not: a resurrected or stray key.
    ExtraInY,
    /// The values a reader sees differ (naive comparison, or an expected-state check).
    ValueDiffers,
}

/// One disagreeing key, with both sides as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub key: String,
    pub kind: MismatchKind,
    pub x: Option<Entry>,
    pub y: Option<Entry>,
}

/// Mismatches counted in full, with the first few kept as samples for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MismatchReport {
    pub count: u64,
    pub samples: Vec<Mismatch>,
}

/// Samples a report keeps; the count is always exact.
pub const SAMPLES_MAX: usize = 20;

impl MismatchReport {
    pub fn add(&mut self, mismatch: Mismatch) {
        self.count += 1;
        if self.samples.len() < SAMPLES_MAX {
            self.samples.push(mismatch);
        }
    }

    pub fn is_clean(&self) -> bool {
        self.count == 0
    }
}

/// The fixed design's verdict on one key X holds: `None` when Y is as new as X. A Y entry
/// newer than X's is not a mismatch: X was read first, and a dual write landed in both since.
pub fn classify_fixed(x: &Entry, y: Option<&Entry>) -> Option<MismatchKind> {
    let Some(y) = y else {
        return Some(MismatchKind::MissingInY);
    };
    if y.version < x.version {
        Some(MismatchKind::OlderInY)
    } else if y.version == x.version && y.payload != x.payload {
        Some(MismatchKind::Conflict)
    } else {
        None
    }
}

/// Compares what readers see in X and in Y, over every key of both (a merge of two scans).
/// Returns the number of keys compared and the mismatches.
pub fn compare_live(
    x: &dyn Store,
    y: &dyn Store,
    batch_keys: usize,
) -> Result<(u64, MismatchReport), StoreError> {
    let x_live = live_entries(x, batch_keys)?;
    let y_live = live_entries(y, batch_keys)?;
    let mut report = MismatchReport::default();
    let mut keys: Vec<&String> = x_live.keys().chain(y_live.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in &keys {
        let (x_entry, y_entry) = (x_live.get(*key), y_live.get(*key));
        let kind = match (x_entry, y_entry) {
            (Some(_), None) => MismatchKind::MissingInY,
            (None, Some(_)) => MismatchKind::ExtraInY,
            (Some(a), Some(b)) if a.live_value() != b.live_value() => MismatchKind::ValueDiffers,
            _ => continue,
        };
        let (x, y) = (x_entry.cloned(), y_entry.cloned());
        report.add(Mismatch {
            key: key.to_string(),
            kind,
            x,
            y,
        });
    }
    Ok((keys.len() as u64, report))
}

/// Checks that `y` holds exactly `expected`: every entry (payload and version) equal, and no
/// live key beyond them. Tombstones in `y` for keys `expected` lacks are allowed.
pub fn compare_to_expected(
    expected: &BTreeMap<String, Entry>,
    y: &dyn Store,
    batch_keys: usize,
) -> Result<MismatchReport, StoreError> {
    let mut report = MismatchReport::default();
    let held = all_entries(y, batch_keys)?;
    for (key, want) in expected {
        let got = held.get(key);
        let kind = match got {
            None => MismatchKind::MissingInY,
            Some(got) if got == want => continue,
            Some(got) if got.version < want.version => MismatchKind::OlderInY,
            Some(_) => MismatchKind::ValueDiffers,
        };
        let mismatch = Mismatch {
            key: key.clone(),
            kind,
            x: Some(want.clone()),
            y: got.cloned(),
        };
        report.add(mismatch);
    }
    for (key, got) in &held {
        if !expected.contains_key(key) && got.live_value().is_some() {
            let y = Some(got.clone());
            report.add(Mismatch {
                key: key.clone(),
                kind: MismatchKind::ExtraInY,
                x: None,
                y,
            });
        }
    }
    Ok(report)
}

/// Every entry of `store`, tombstones included, read in batches of `batch_keys`.
pub fn all_entries(
    store: &dyn Store,
    batch_keys: usize,
) -> Result<BTreeMap<String, Entry>, StoreError> {
    assert!(batch_keys > 0, "a scan batch must hold at least one key");
    let mut entries = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let batch = store.scan(cursor.as_deref(), batch_keys)?;
        let Some((last, _)) = batch.last() else {
            return Ok(entries);
        };
        cursor = Some(last.clone());
        entries.extend(batch);
    }
}

fn live_entries(
    store: &dyn Store,
    batch_keys: usize,
) -> Result<BTreeMap<String, Entry>, StoreError> {
    let mut entries = all_entries(store, batch_keys)?;
    entries.retain(|_, entry| entry.live_value().is_some());
    Ok(entries)
}
