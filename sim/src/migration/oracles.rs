//! The migration's oracles: what Y must hold at the end, and what clients may read.
//!
//! The reference is the authority's order of writes ([`Observations::authority`]): X's
//! order while X is written, then Y's once Y assigns versions. After the migration, Y must
//! hold, for every key, the last write in that order — the last acknowledged write, or a
//! newer one X applied whose writer never heard back — and a key whose last write is a
//! delete must not be live in Y. A key that breaks this is reported under the name of the
//! failure the model checker names for `naive`, decided from who last set the key in Y:
//! - `crash between writes`: a writer of the key stopped between its X and Y writes (as
//!   in the model, this comes first: the other kinds judge keys whose writes all landed);
//! - `resurrected delete`: the last write deleted the key, and Y holds a value;
//! - `backfill overwrite`: a backfill copy was the last to land, over a newer write;
//! - `order race`: an older dual write landed in Y after the newer one.

use std::collections::BTreeMap;

use super::messages::Source;
use super::nodes::tag_of;
use super::store::DiskStore;
use crate::history::{AuthorityWrite, ClientOp, check_session_order};
use crate::runner::Violation;

/// One change Y applied, and who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YSet {
    pub key: String,
    /// The live value now held, `None` when removed or a tombstone.
    pub tag: Option<String>,
    pub source: Source,
}

impl YSet {
    pub fn new(key: &str, tag: Option<String>, source: Source) -> Self {
        Self {
            key: key.to_string(),
            tag,
            source,
        }
    }
}

/// What the run's nodes reported, in the order they did it.
#[derive(Debug, Default)]
pub struct Observations {
    pub authority: Vec<AuthorityWrite>,
    pub y_sets: Vec<YSet>,
    pub client_ops: Vec<ClientOp>,
    /// `(key, tag)` of every write whose writer stopped between X and Y.
    pub crashed: Vec<(String, String)>,
    pub violations: Vec<Violation>,
}

/// The failure names, as the tests and the CLI count them.
pub const ORDER_RACE: &str = "order race";
pub const BACKFILL_OVERWRITE: &str = "backfill overwrite";
pub const RESURRECTED_DELETE: &str = "resurrected delete";
pub const CRASH_BETWEEN_WRITES: &str = "crash between writes";
pub const FAILURE_KINDS: [&str; 4] = [
    ORDER_RACE,
    BACKFILL_OVERWRITE,
    RESURRECTED_DELETE,
    CRASH_BETWEEN_WRITES,
];

/// The last write of every key in the authority's order.
fn last_writes(authority: &[AuthorityWrite]) -> BTreeMap<&str, &AuthorityWrite> {
    let mut last = BTreeMap::new();
    for write in authority {
        last.insert(write.key.as_str(), write);
    }
    last
}

fn classify(
    observations: &Observations,
    expected: &AuthorityWrite,
    held: Option<&str>,
) -> &'static str {
    // As in the model, a key a crashed writer touched is a crash's doing: the other
    // properties only judge keys whose every write has landed.
    let crashed = observations
        .crashed
        .iter()
        .any(|(key, _)| *key == expected.key);
    if crashed {
        return CRASH_BETWEEN_WRITES;
    }
    if !expected.live && held.is_some() {
        return RESURRECTED_DELETE;
    }
    let last_setter = observations
        .y_sets
        .iter()
        .rev()
        .find(|set| set.key == expected.key);
    match last_setter {
        Some(set) if set.source == Source::Backfill => BACKFILL_OVERWRITE,
        _ => ORDER_RACE,
    }
}

/// Y against the authority's last write of every key; one violation per failure kind.
pub fn check_final_y(observations: &Observations, y: &DiskStore) -> Vec<Violation> {
    let held = match migration::compare::all_entries(y, 64) {
        Ok(held) => held,
        Err(error) => {
            return vec![Violation::safety(
                "FinalRead",
                format!("could not read Y after the run: {error}"),
            )];
        }
    };
    let mut by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let last = last_writes(&observations.authority);
    for (key, expected) in &last {
        let held_tag = tag_of(held.get(*key));
        let wanted = expected.live.then(|| expected.tag.clone());
        if held_tag == wanted {
            continue;
        }
        let kind = classify(observations, expected, held_tag.as_deref());
        by_kind.entry(kind).or_default().push(format!(
            "key {key}: Y holds {} but the last write was {} {}",
            held_tag.as_deref().unwrap_or("nothing"),
            if expected.live { "put" } else { "delete" },
            expected.tag
        ));
    }
    for (key, entry) in &held {
        if !last.contains_key(key.as_str()) && entry.live_value().is_some() {
            let detail = format!("key {key} is live in Y but was never written");
            by_kind.entry("stray key").or_default().push(detail);
        }
    }
    by_kind
        .into_iter()
        .map(|(kind, problems)| Violation::safety(kind, problems.join("; ")))
        .collect()
}

/// Session order of every client's reads, as one violation listing the first few.
pub fn check_reads(observations: &Observations) -> Option<Violation> {
    let problems = check_session_order(&observations.authority, &observations.client_ops);
    if problems.is_empty() {
        return None;
    }
    let shown: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
    Some(Violation::safety(
        "StaleRead",
        format!(
            "{} read(s) went back in time: {}",
            problems.len(),
            shown.join("; ")
        ),
    ))
}
