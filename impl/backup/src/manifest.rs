//! Snapshots: what a backup saw, as ordered chunk fingerprints per file.
//!
//! A manifest is the commit record of a backup. It is written once, last,
//! with `write_atomic`, after every chunk it names is durable; its name (the
//! snapshot id) is the SHA-256 of its JSON, so a damaged manifest is detected
//! on read. Paths inside are untrusted input to restore: [`Manifest::validate`]
//! refuses anything that could write outside the restore target.
//!
//! A file's stamp and a directory's `modified_ns` carry modification times,
//! and an entry's `owner` its user and group, which restore sets. Not yet:
//! extended attributes and hard links (each link is
//! stored as its own file; dedup keeps that cheap). Each needs a field here
//! and a step in restore; none is needed for byte-identical contents.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use crate::Fingerprint;
use crate::source::FileStamp;

/// A snapshot's name: the SHA-256 (hex) of its manifest's JSON.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct SnapshotId(pub String);

impl fmt::Display for SnapshotId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// What an entry is, with what restore needs to recreate it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file: its length and its chunks in order, and the stamp it
    /// had when listed, so the next backup can reuse its chunks unread if
    /// the stamp is unchanged (absent for sources without one; then not
    /// written, so such manifests keep their old form and id).
    File {
        size_bytes: u64,
        chunks: Vec<Fingerprint>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stamp: Option<FileStamp>,
    },
    /// A directory, with its modification time when the source had one
    /// (absent: not written, as for a file's stamp).
    Directory {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        modified_ns: Option<i128>,
    },
    /// A symbolic link, stored as its target text and never followed.
    Symlink { target: String },
}

/// One path in a snapshot. Written with the kind's fields flattened beside
/// `path` and `mode`; read through `EntryWire`, because serde's reader
/// for a flattened tagged enum buffers every entry before decoding it (it
/// was most of the time a re-backup of the Rust docs tree took).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "EntryWire")]
pub struct Entry {
    /// Relative, `/`-separated, no `.`/`..`/empty parts (see [`validate_path`]).
    pub path: String,
    /// Unix permission bits (`0o7777` at most).
    pub mode: u32,
    /// The owning user and group, when the source has them (absent: not
    /// written, so such manifests keep their old form and id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// File, directory or symlink.
    #[serde(flatten)]
    pub kind: EntryKind,
}

/// Numeric user and group ids. Restore sets them only when it runs as root
/// (anyone else may only give files away to themselves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// The stored form of an [`Entry`], every kind's fields side by side.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryWire {
    path: String,
    mode: u32,
    owner: Option<Owner>,
    kind: KindTag,
    size_bytes: Option<u64>,
    chunks: Option<Vec<Fingerprint>>,
    stamp: Option<FileStamp>,
    modified_ns: Option<i128>,
    target: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum KindTag {
    File,
    Directory,
    Symlink,
}

impl TryFrom<EntryWire> for Entry {
    type Error = String;

    fn try_from(wire: EntryWire) -> Result<Self, String> {
        let EntryWire {
            path,
            mode,
            owner,
            kind,
            size_bytes,
            chunks,
            stamp,
            modified_ns,
            target,
        } = wire;
        let misplaced = |kind: &str, field: &str| {
            format!(
                "entry {path:?}: a {kind} has no field `{field}`; \
                 the manifest was not written by crosscheck"
            )
        };
        let missing = |kind: &str, field: &str| {
            format!(
                "entry {path:?}: a {kind} needs the field `{field}`; the manifest is incomplete"
            )
        };
        let kind = match kind {
            KindTag::File => {
                if target.is_some() {
                    return Err(misplaced("file", "target"));
                }
                if modified_ns.is_some() {
                    return Err(misplaced("file", "modified_ns"));
                }
                EntryKind::File {
                    size_bytes: size_bytes.ok_or_else(|| missing("file", "size_bytes"))?,
                    chunks: chunks.ok_or_else(|| missing("file", "chunks"))?,
                    stamp,
                }
            }
            KindTag::Directory | KindTag::Symlink => {
                let name = if matches!(kind, KindTag::Directory) {
                    "directory"
                } else {
                    "symlink"
                };
                for (present, field) in [
                    (size_bytes.is_some(), "size_bytes"),
                    (chunks.is_some(), "chunks"),
                    (stamp.is_some(), "stamp"),
                ] {
                    if present {
                        return Err(misplaced(name, field));
                    }
                }
                match kind {
                    KindTag::Directory if target.is_some() => {
                        return Err(misplaced(name, "target"));
                    }
                    KindTag::Directory => EntryKind::Directory { modified_ns },
                    _ if modified_ns.is_some() => return Err(misplaced(name, "modified_ns")),
                    _ => EntryKind::Symlink {
                        target: target.ok_or_else(|| missing(name, "target"))?,
                    },
                }
            }
        };
        Ok(Entry {
            path,
            mode,
            owner,
            kind,
        })
    }
}

/// A snapshot's manifest. Label and time come from the caller: the library
/// reads no clock, so the simulator can pass virtual time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Free text chosen by the caller (host, source directory, ...).
    pub label: String,
    /// Milliseconds since the Unix epoch, as the caller's clock saw it.
    pub time_unix_ms: u64,
    /// Every entry, parents before children.
    pub entries: Vec<Entry>,
    /// The backed-up directory's own mode, owner and time, which restore
    /// gives the target (absent for sources without them; then not written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<RootAttributes>,
}

/// What a snapshot keeps of the backed-up directory itself (its entries
/// are the manifest's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootAttributes {
    /// Unix permission bits (`0o7777` at most).
    pub mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Last modification, nanoseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_ns: Option<i128>,
}

/// A manifest entry restore must refuse, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error(
    "manifest path {path:?} is unsafe: {problem}; expected a relative path inside the \
     restore target. The snapshot may be tampered with; `crosscheck fsck --repair` moves \
     its manifest to quarantine/"
)]
pub struct UnsafePath {
    /// The path as the manifest has it.
    pub path: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Checks that `path` is relative, `/`-separated and cannot climb out of the
/// directory it is joined to.
pub fn validate_path(path: &str) -> Result<(), UnsafePath> {
    let problem = if path.is_empty() {
        Some("it is empty")
    } else if path.starts_with('/') {
        Some("it is absolute")
    } else if path.contains('\0') {
        Some("it contains a NUL byte")
    } else if path.split('/').any(|part| part == "..") {
        Some("it contains '..'")
    } else if path.split('/').any(|part| part.is_empty() || part == ".") {
        Some("it has an empty or '.' component")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(UnsafePath {
            path: path.to_string(),
            problem: problem.to_string(),
        }),
        None => Ok(()),
    }
}

impl Manifest {
    /// The snapshot id this manifest commits under: SHA-256 of its JSON.
    pub fn id(&self) -> SnapshotId {
        SnapshotId(Fingerprint::of(&self.to_json()).to_hex())
    }

    /// The canonical JSON the id is computed over and the store keeps.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serializes")
    }

    /// Checks every path before anything is written: each is valid
    /// ([`validate_path`]), none repeats, and none lies under a symlink entry
    /// (restoring it would write through the link, possibly out of the target).
    pub fn validate(&self) -> Result<(), UnsafePath> {
        let mut seen = HashSet::with_capacity(self.entries.len());
        let symlinks: HashSet<&str> = self
            .entries
            .iter()
            .filter(|entry| matches!(entry.kind, EntryKind::Symlink { .. }))
            .map(|entry| entry.path.as_str())
            .collect();
        for entry in &self.entries {
            validate_path(&entry.path)?;
            let unsafe_path = |problem: String| UnsafePath {
                path: entry.path.clone(),
                problem,
            };
            if !seen.insert(entry.path.as_str()) {
                return Err(unsafe_path("it appears twice".to_string()));
            }
            let mut ancestor_end = entry.path.find('/');
            while let Some(end_index) = ancestor_end {
                let ancestor = &entry.path[..end_index];
                if symlinks.contains(ancestor) {
                    return Err(unsafe_path(format!(
                        "it goes through the symlink {ancestor:?}"
                    )));
                }
                ancestor_end = entry.path[end_index + 1..]
                    .find('/')
                    .map(|i| end_index + 1 + i);
            }
            if entry.mode > 0o7777 {
                return Err(unsafe_path(format!(
                    "mode {:o} is not a permission mode",
                    entry.mode
                )));
            }
        }
        Ok(())
    }

    /// Every chunk fingerprint referenced, with how many times.
    pub fn chunk_references(&self) -> BTreeMap<Fingerprint, usize> {
        let mut references = BTreeMap::new();
        for entry in &self.entries {
            if let EntryKind::File { chunks, .. } = &entry.kind {
                for fingerprint in chunks {
                    *references.entry(*fingerprint).or_insert(0) += 1;
                }
            }
        }
        references
    }

    /// A one-line summary for listings.
    pub fn summary(&self) -> SnapshotSummary {
        self.summary_as(self.id())
    }

    /// The summary under the id this manifest is stored as (the hash of its
    /// stored bytes, which a re-serialization need not reproduce).
    pub fn summary_as(&self, id: SnapshotId) -> SnapshotSummary {
        let mut summary = SnapshotSummary {
            id,
            label: self.label.clone(),
            time_unix_ms: self.time_unix_ms,
            file_count: 0,
            size_bytes: 0,
        };
        for entry in &self.entries {
            if let EntryKind::File { size_bytes, .. } = entry.kind {
                summary.file_count += 1;
                summary.size_bytes += size_bytes;
            }
        }
        summary
    }
}

/// A snapshot as listed by `snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotSummary {
    /// The snapshot id.
    pub id: SnapshotId,
    /// The caller's label.
    pub label: String,
    /// The caller's timestamp.
    pub time_unix_ms: u64,
    /// Regular files in the snapshot.
    pub file_count: u64,
    /// Sum of their sizes.
    pub size_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(entries: Vec<(&str, EntryKind)>) -> Manifest {
        let entries = entries
            .into_iter()
            .map(|(path, kind)| Entry {
                path: path.to_string(),
                mode: 0o644,
                owner: None,
                kind,
            })
            .collect();
        Manifest {
            label: "test".to_string(),
            time_unix_ms: 0,
            entries,
            root: None,
        }
    }

    #[test]
    fn unsafe_paths_are_named() {
        for (path, problem) in [
            ("/etc/passwd", "absolute"),
            ("a/../../x", "'..'"),
            ("..", "'..'"),
            ("a//b", "empty"),
            ("./a", "'.'"),
            ("", "empty"),
        ] {
            let error = manifest(vec![(path, EntryKind::Directory { modified_ns: None })])
                .validate()
                .unwrap_err();
            assert_eq!(error.path, path);
            assert!(error.problem.contains(problem), "{path}: {error}");
        }
    }

    #[test]
    fn a_path_through_a_symlink_is_refused() {
        let link = EntryKind::Symlink {
            target: "/etc".to_string(),
        };
        let file = EntryKind::File {
            size_bytes: 0,
            chunks: vec![],
            stamp: None,
        };
        let error = manifest(vec![("out", link), ("out/passwd", file)])
            .validate()
            .unwrap_err();
        assert_eq!(error.path, "out/passwd");
        assert!(error.problem.contains("symlink \"out\""), "{error}");
    }

    #[test]
    fn id_is_stable_and_json_round_trips() {
        let file = |stamp| EntryKind::File {
            size_bytes: 3,
            chunks: vec![Fingerprint::of(b"abc")],
            stamp,
        };
        let stamp = FileStamp {
            modified_ns: -5,
            changed_ns: 1_700_000_000_000_000_007,
            inode: u64::MAX,
        };
        let entries = vec![
            ("d", EntryKind::Directory { modified_ns: None }),
            ("d/f", file(None)),
            ("d/g", file(Some(stamp))),
            (
                "d/l",
                EntryKind::Symlink {
                    target: "g".to_string(),
                },
            ),
        ];
        let original = manifest(entries);
        original.validate().unwrap();
        let json = String::from_utf8(original.to_json()).unwrap();
        // An unstamped file keeps the form manifests had before stamps.
        assert_eq!(json.matches("\"stamp\"").count(), 1, "{json}");
        let back: Manifest = serde_json::from_slice(json.as_bytes()).unwrap();
        assert_eq!(back, original);
        assert_eq!(back.id(), original.id());
        assert_eq!(original.summary().size_bytes, 6);
        let renamed = SnapshotId("stored-name".to_string());
        assert_eq!(original.summary_as(renamed.clone()).id, renamed);
    }

    /// The stored form, as every earlier manifest has it: read back to the
    /// same entries and written back to the same bytes (so the same id).
    #[test]
    fn the_stored_form_reads_and_writes_back_byte_for_byte() {
        let stored = concat!(
            r#"{"label":"l","time_unix_ms":7,"entries":["#,
            r#"{"path":"d","mode":493,"kind":"directory"},"#,
            r#"{"path":"d/f","mode":420,"kind":"file","size_bytes":0,"chunks":[]},"#,
            r#"{"path":"d/g","mode":420,"kind":"file","size_bytes":3,"chunks":["#,
            r#""ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],"#,
            r#""stamp":{"modified_ns":1,"changed_ns":2,"inode":3}},"#,
            r#"{"path":"d/l","mode":511,"kind":"symlink","target":"g"}]}"#
        );
        let manifest: Manifest = serde_json::from_str(stored).unwrap();
        assert_eq!(manifest.entries.len(), 4);
        assert_eq!(
            manifest.entries[3].kind,
            EntryKind::Symlink {
                target: "g".to_string()
            }
        );
        assert_eq!(String::from_utf8(manifest.to_json()).unwrap(), stored);
        // A directory's time and an owner, when recorded, read and write
        // back too.
        let dated = stored.replace(
            r#""mode":493,"kind":"directory"}"#,
            r#""mode":493,"owner":{"uid":1,"gid":2},"kind":"directory","modified_ns":-5}"#,
        );
        let manifest: Manifest = serde_json::from_str(&dated).unwrap();
        let modified_ns = Some(-5);
        assert_eq!(
            manifest.entries[0].kind,
            EntryKind::Directory { modified_ns }
        );
        let owner = Some(Owner { uid: 1, gid: 2 });
        assert_eq!(manifest.entries[0].owner, owner);
        assert_eq!(String::from_utf8(manifest.to_json()).unwrap(), dated);
    }

    /// An entry with a field missing, or one its kind does not have, is
    /// refused with the entry and the field named.
    #[test]
    fn an_entry_with_missing_or_foreign_fields_is_refused_by_name() {
        let parse = |entry: &str| {
            let json = format!(r#"{{"label":"l","time_unix_ms":7,"entries":[{entry}]}}"#);
            serde_json::from_str::<Manifest>(&json)
                .unwrap_err()
                .to_string()
        };
        let error = parse(r#"{"path":"f","mode":420,"kind":"file","size_bytes":3}"#);
        assert!(
            error.contains(r#"entry "f": a file needs the field `chunks`"#),
            "{error}"
        );
        let error = parse(r#"{"path":"d","mode":493,"kind":"directory","chunks":[]}"#);
        assert!(
            error.contains(r#"entry "d": a directory has no field `chunks`"#),
            "{error}"
        );
        let error = parse(r#"{"path":"l","mode":511,"kind":"symlink","modified_ns":1}"#);
        assert!(
            error.contains("a symlink has no field `modified_ns`"),
            "{error}"
        );
        let error = parse(r#"{"path":"l","mode":511,"kind":"symlink"}"#);
        assert!(
            error.contains("a symlink needs the field `target`"),
            "{error}"
        );
        let error = parse(r#"{"path":"f","mode":420,"kind":"fifo"}"#);
        assert!(error.contains("unknown variant `fifo`"), "{error}");
        let error = parse(r#"{"path":"f","mode":420,"kind":"directory","xattrs":0}"#);
        assert!(error.contains("unknown field `xattrs`"), "{error}");
    }
}
