//! The store contract: one suite of behaviours every [`Store`] must show, run against the
//! in-memory fake, SQLite and redb (and, later, the simulator's store service).
//!
//! Hold this in mind: the migration's safety rests on stores deciding alike, so the suite
//! checks the exact outcome of every operation, not just that it succeeded. Each case runs on
//! a fresh, empty store and panics with its name and the store's answer on a breach. To run
//! the suite against a new store: `contract::check_all(|| MyStore::new())`, and, if it keeps
//! data across a reopen, `contract::check_reopen(|| MyStore::open(path))`.

use crate::store::{Applied, BatchApplied, Entry, Store, StoreError};

/// A named contract case.
pub struct Case {
    pub name: &'static str,
    pub check: fn(&dyn Store),
}

/// Every case of the contract, in the order they run.
pub const CASES: &[Case] = &[
    Case {
        name: "absent key reads as none",
        check: absent_key_reads_as_none,
    },
    Case {
        name: "put assigns versions from one",
        check: put_assigns_versions_from_one,
    },
    Case {
        name: "delete leaves a versioned tombstone",
        check: delete_leaves_tombstone,
    },
    Case {
        name: "apply_if_newer keeps the newest",
        check: apply_if_newer_keeps_newest,
    },
    Case {
        name: "tombstone blocks a stale value",
        check: tombstone_blocks_stale_value,
    },
    Case {
        name: "batch apply counts outcomes",
        check: batch_apply_counts_outcomes,
    },
    Case {
        name: "unconditional put and remove",
        check: unconditional_put_and_remove,
    },
    Case {
        name: "scan returns key order",
        check: scan_returns_key_order,
    },
    Case {
        name: "scan pages with a cursor",
        check: scan_pages_with_cursor,
    },
    Case {
        name: "empty key is refused",
        check: empty_key_is_refused,
    },
    Case {
        name: "get_entries matches get_entry",
        check: get_entries_matches_get_entry,
    },
    Case {
        name: "values are exact bytes",
        check: values_are_exact_bytes,
    },
];

/// Runs every case of [`CASES`], each on a fresh store from `new_store`.
///
/// # Panics
/// On the first breach, naming the case.
pub fn check_all<S: Store>(mut new_store: impl FnMut() -> S) {
    for case in CASES {
        let store = new_store();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (case.check)(&store);
        }));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_default();
            panic!("store contract case {:?} failed: {message}", case.name);
        }
    }
}

/// Writes through one handle, drops it, and checks a reopened handle sees every entry.
///
/// # Panics
/// When the reopened store differs.
pub fn check_reopen<S: Store>(open: impl Fn() -> S) {
    let written = {
        let store = open();
        store.put("kept", b"value").unwrap();
        store.put("deleted", b"gone").unwrap();
        store.delete("deleted").unwrap();
        store
            .apply_if_newer("applied", &Entry::value("y", 7))
            .unwrap();
        store.scan(None, 100).unwrap()
    };
    let reopened = open();
    assert_eq!(
        reopened.scan(None, 100).unwrap(),
        written,
        "reopened store lost entries"
    );
    assert_eq!(
        reopened.put("kept", b"again").unwrap(),
        2,
        "version must continue after reopen"
    );
}

fn absent_key_reads_as_none(store: &dyn Store) {
    assert_eq!(store.get_entry("missing").unwrap(), None);
    assert_eq!(store.get("missing").unwrap(), None);
    assert!(
        store.scan(None, 10).unwrap().is_empty(),
        "a new store must be empty"
    );
}

fn put_assigns_versions_from_one(store: &dyn Store) {
    assert_eq!(store.put("k", b"one").unwrap(), 1);
    assert_eq!(store.put("k", b"two").unwrap(), 2);
    assert_eq!(store.put("other", b"x").unwrap(), 1, "versions are per key");
    assert_eq!(store.get_entry("k").unwrap(), Some(Entry::value("two", 2)));
    assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"two"[..]));
}

fn delete_leaves_tombstone(store: &dyn Store) {
    store.put("k", b"v").unwrap();
    assert_eq!(store.delete("k").unwrap(), 2);
    assert_eq!(store.get("k").unwrap(), None);
    assert_eq!(store.get_entry("k").unwrap(), Some(Entry::tombstone(2)));
    assert!(matches!(store.delete("k"), Err(StoreError::NotFound { key }) if key == "k"));
    assert!(matches!(
        store.delete("never"),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.get_entry("never").unwrap(),
        None,
        "a failed delete writes nothing"
    );
    assert_eq!(
        store.put("k", b"back").unwrap(),
        3,
        "a put after a delete takes the next version"
    );
    assert_eq!(store.get_entry("k").unwrap(), Some(Entry::value("back", 3)));
}

fn apply_if_newer_keeps_newest(store: &dyn Store) {
    assert_eq!(
        store.apply_if_newer("k", &Entry::value("v3", 3)).unwrap(),
        Applied::Applied
    );
    let stale = store.apply_if_newer("k", &Entry::value("v2", 2)).unwrap();
    assert_eq!(stale, Applied::Stale { held_version: 3 });
    let duplicate = store.apply_if_newer("k", &Entry::value("v3", 3)).unwrap();
    assert_eq!(duplicate, Applied::AlreadyHeld);
    let conflict = store.apply_if_newer("k", &Entry::value("other", 3));
    assert!(
        matches!(conflict, Err(StoreError::VersionConflict { ref key, version: 3 }) if key == "k"),
        "equal version, different payload must be a conflict, got {conflict:?}"
    );
    assert_eq!(
        store.get_entry("k").unwrap(),
        Some(Entry::value("v3", 3)),
        "conflict wrote"
    );
    let zero = store.apply_if_newer("k", &Entry::value("v0", 0));
    assert!(
        matches!(zero, Err(StoreError::InvalidVersion { .. })),
        "got {zero:?}"
    );
    assert_eq!(
        store.apply_if_newer("k", &Entry::tombstone(4)).unwrap(),
        Applied::Applied
    );
    assert_eq!(
        store.apply_if_newer("k", &Entry::value("v5", 5)).unwrap(),
        Applied::Applied
    );
    assert_eq!(store.get_entry("k").unwrap(), Some(Entry::value("v5", 5)));
    assert_eq!(
        store.put("k", b"v6").unwrap(),
        6,
        "put continues from an applied version"
    );
}

fn tombstone_blocks_stale_value(store: &dyn Store) {
    store.apply_if_newer("k", &Entry::tombstone(5)).unwrap();
    let late = store.apply_if_newer("k", &Entry::value("old", 3)).unwrap();
    assert_eq!(late, Applied::Stale { held_version: 5 });
    assert_eq!(
        store.get("k").unwrap(),
        None,
        "a stale value resurrected a deleted key"
    );
    assert_eq!(store.get_entry("k").unwrap(), Some(Entry::tombstone(5)));
}

fn batch_apply_counts_outcomes(store: &dyn Store) {
    store.apply_if_newer("b", &Entry::value("b9", 9)).unwrap();
    store.apply_if_newer("c", &Entry::value("c2", 2)).unwrap();
    let batch = vec![
        ("a".to_string(), Entry::value("a1", 1)),
        ("b".to_string(), Entry::value("b8", 8)),
        ("c".to_string(), Entry::value("c2", 2)),
        ("d".to_string(), Entry::tombstone(4)),
    ];
    let counts = store.apply_batch_if_newer(&batch).unwrap();
    assert_eq!(
        counts,
        BatchApplied {
            applied: 2,
            already_held: 1,
            stale: 1
        }
    );
    let scanned = store.scan(None, 10).unwrap();
    let expected = vec![
        ("a".to_string(), Entry::value("a1", 1)),
        ("b".to_string(), Entry::value("b9", 9)),
        ("c".to_string(), Entry::value("c2", 2)),
        ("d".to_string(), Entry::tombstone(4)),
    ];
    assert_eq!(scanned, expected);
    let conflicting = vec![("c".to_string(), Entry::tombstone(2))];
    assert!(matches!(
        store.apply_batch_if_newer(&conflicting),
        Err(StoreError::VersionConflict { .. })
    ));
}

fn unconditional_put_and_remove(store: &dyn Store) {
    store.apply_if_newer("k", &Entry::value("new", 9)).unwrap();
    store
        .put_unconditional("k", &Entry::value("old", 2))
        .unwrap();
    assert_eq!(
        store.get_entry("k").unwrap(),
        Some(Entry::value("old", 2)),
        "must overwrite"
    );
    let zero = store.put_unconditional("k", &Entry::value("x", 0));
    assert!(
        matches!(zero, Err(StoreError::InvalidVersion { .. })),
        "got {zero:?}"
    );
    assert!(store.remove("k").unwrap());
    assert_eq!(
        store.get_entry("k").unwrap(),
        None,
        "remove must leave no tombstone"
    );
    assert!(
        !store.remove("k").unwrap(),
        "removing an absent key reports false"
    );
    let batch = vec![
        ("p".to_string(), Entry::value("p", 4)),
        ("q".to_string(), Entry::tombstone(2)),
    ];
    store.put_batch_unconditional(&batch).unwrap();
    assert_eq!(store.scan(None, 10).unwrap(), batch);
}

/// Keys whose byte order differs from naive expectations: case, prefixes, separators and
/// multi-byte UTF-8.
const AWKWARD_KEYS: [&str; 8] = ["b", "a/b", "Z", "ab", "a", "é", "a0", "~"];

fn scan_returns_key_order(store: &dyn Store) {
    for key in AWKWARD_KEYS {
        store.put(key, key.as_bytes()).unwrap();
    }
    store.delete("ab").unwrap();
    let scanned = store.scan(None, 100).unwrap();
    let keys: Vec<&str> = scanned.iter().map(|(key, _)| key.as_str()).collect();
    let mut expected = AWKWARD_KEYS.to_vec();
    expected.sort_unstable();
    assert_eq!(
        keys, expected,
        "scan must list keys in byte order, tombstones included"
    );
    let ab = scanned.iter().find(|(key, _)| key == "ab").expect("listed");
    assert_eq!(ab.1, Entry::tombstone(2));
    assert_eq!(
        store.scan(None, 3).unwrap().len(),
        3,
        "limit caps the batch"
    );
    assert!(store.scan(None, 0).unwrap().is_empty());
}

fn scan_pages_with_cursor(store: &dyn Store) {
    for key in AWKWARD_KEYS {
        store.put(key, b"v").unwrap();
    }
    let mut cursor: Option<String> = None;
    let mut paged = Vec::new();
    loop {
        let batch = store.scan(cursor.as_deref(), 3).unwrap();
        let Some((last, _)) = batch.last() else { break };
        cursor = Some(last.clone());
        paged.extend(batch.into_iter().map(|(key, _)| key));
    }
    let mut expected: Vec<String> = AWKWARD_KEYS.iter().map(|key| key.to_string()).collect();
    expected.sort_unstable();
    assert_eq!(
        paged, expected,
        "paging must visit every key once, in order"
    );
    // "a1" itself is absent: the cursor is a position, not a key that must exist.
    let after_gap = store.scan(Some("a1"), 2).unwrap();
    let keys: Vec<&str> = after_gap.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["ab", "b"]);
    assert!(
        store.scan(Some("\u{10FFFF}"), 5).unwrap().is_empty(),
        "nothing after the last key"
    );
}

fn empty_key_is_refused(store: &dyn Store) {
    let refused = |result: Result<(), StoreError>, operation: &str| {
        assert!(
            matches!(result, Err(StoreError::EmptyKey)),
            "{operation}: got {result:?}"
        );
    };
    refused(store.get_entry("").map(drop), "get_entry");
    refused(store.put("", b"v").map(drop), "put");
    refused(store.delete("").map(drop), "delete");
    refused(
        store.apply_if_newer("", &Entry::value("v", 1)).map(drop),
        "apply_if_newer",
    );
    refused(
        store.put_unconditional("", &Entry::value("v", 1)),
        "put_unconditional",
    );
    refused(store.remove("").map(drop), "remove");
    assert!(
        store.scan(None, 10).unwrap().is_empty(),
        "a refused write stored something"
    );
}

fn get_entries_matches_get_entry(store: &dyn Store) {
    store.put("a", b"1").unwrap();
    store.put("c", b"3").unwrap();
    store.delete("c").unwrap();
    let keys: Vec<String> = ["c", "b", "a"].map(String::from).to_vec();
    let entries = store.get_entries(&keys).unwrap();
    assert_eq!(
        entries,
        vec![Some(Entry::tombstone(2)), None, Some(Entry::value("1", 1))]
    );
}

fn values_are_exact_bytes(store: &dyn Store) {
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    store.put("binary", &binary).unwrap();
    store.put("empty", b"").unwrap();
    assert_eq!(store.get("binary").unwrap(), Some(binary));
    assert_eq!(
        store.get("empty").unwrap(),
        Some(Vec::new()),
        "an empty value is a value, not a tombstone"
    );
}
