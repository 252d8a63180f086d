//! What a backup reads: a tree of entries and a way to open files.
//!
//! The client never touches the file system directly, so the simulator can
//! feed it an in-memory tree ([`MemorySource`]) and the CLI a real directory
//! ([`FsSource`]). Problems with single entries (a fifo, an unreadable file,
//! a name that is not UTF-8) are reported as [`SourceKind::Skipped`] and never
//! stop the backup; only an unusable root does.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// What the file system says about a file's last change, as listed. Equal
/// stamps (and sizes) across two backups mean the file is taken as unchanged
/// and its chunks are reused without reading it, as restic and borg do.
/// The ctime catches what a tool resetting mtime hides; the inode catches a
/// file replaced by another. The gap is a file rewritten within one
/// timestamp tick of the file system *and* left at the same size, inode and
/// ctime: `crosscheck backup --force` reads everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    /// Last modification, nanoseconds since the Unix epoch.
    pub modified_ns: i64,
    /// Last status change, nanoseconds since the Unix epoch.
    pub changed_ns: i64,
    /// The inode number.
    pub inode: u64,
}

/// What an entry of the source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A regular file, with its size when listed (it may change while read)
    /// and, when the source has one, its change stamp.
    File {
        size_bytes: u64,
        stamp: Option<FileStamp>,
    },
    /// A directory.
    Directory,
    /// A symbolic link: its target text, never followed.
    Symlink { target: String },
    /// Not backed up, with the reason (special file, unreadable, bad name).
    Skipped { reason: String },
}

/// One entry of the source tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    /// Relative, `/`-separated path (the root itself is not an entry).
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
    /// What it is.
    pub kind: SourceKind,
}

/// The source root itself is unusable.
#[derive(Debug, thiserror::Error)]
#[error("cannot back up {root}: {source}; expected a readable directory")]
pub struct SourceError {
    /// The root given.
    pub root: String,
    /// Why it failed.
    #[source]
    pub source: io::Error,
}

/// A tree to back up.
pub trait Source: Send + Sync {
    /// Every entry, parents before children, in a stable order.
    fn list(&self) -> Result<Vec<SourceEntry>, SourceError>;
    /// Opens a file entry for streaming reads.
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + Send>>;
}

/// An in-memory tree: path → entry, with file contents.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    entries: BTreeMap<String, (u32, MemoryEntry)>,
}

/// An entry of a [`MemorySource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryEntry {
    /// File contents.
    File(Vec<u8>),
    /// A directory.
    Directory,
    /// A symlink target.
    Symlink(String),
}

impl MemorySource {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an entry; parents are not implied, add them too.
    pub fn insert(&mut self, path: &str, mode: u32, entry: MemoryEntry) {
        self.entries.insert(path.to_string(), (mode, entry));
    }

    /// The entries, by path.
    pub fn entries(&self) -> impl Iterator<Item = (&str, u32, &MemoryEntry)> {
        self.entries
            .iter()
            .map(|(path, (mode, entry))| (path.as_str(), *mode, entry))
    }
}

impl Source for MemorySource {
    fn list(&self) -> Result<Vec<SourceEntry>, SourceError> {
        // BTreeMap order puts "a" before "a/b": parents first.
        let entries = self
            .entries
            .iter()
            .map(|(path, (mode, entry))| SourceEntry {
                path: path.clone(),
                mode: *mode,
                kind: match entry {
                    // An in-memory tree has no clock: no stamp, never reused.
                    MemoryEntry::File(bytes) => SourceKind::File {
                        size_bytes: bytes.len() as u64,
                        stamp: None,
                    },
                    MemoryEntry::Directory => SourceKind::Directory,
                    MemoryEntry::Symlink(target) => SourceKind::Symlink {
                        target: target.clone(),
                    },
                },
            });
        Ok(entries.collect())
    }

    fn open(&self, path: &str) -> io::Result<Box<dyn Read + Send>> {
        match self.entries.get(path) {
            Some((_, MemoryEntry::File(bytes))) => Ok(Box::new(io::Cursor::new(bytes.clone()))),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{path} is not a file"),
            )),
        }
    }
}

/// A real directory tree, walked without following symlinks.
#[derive(Debug, Clone)]
pub struct FsSource {
    root: PathBuf,
}

impl FsSource {
    /// The tree under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn walk(&self, dir: &Path, prefix: &str, out: &mut Vec<SourceEntry>) {
        let mut children: Vec<(String, std::fs::DirEntry)> = Vec::new();
        let read_dir = match std::fs::read_dir(dir) {
            Ok(read_dir) => read_dir,
            Err(error) => {
                // The directory entry itself is already listed; its contents are not.
                let reason = format!("directory unreadable, contents skipped: {error}");
                out.push(SourceEntry {
                    path: prefix.to_string(),
                    mode: 0,
                    kind: SourceKind::Skipped { reason },
                });
                return;
            }
        };
        for child in read_dir {
            let child = match child {
                Ok(child) => child,
                Err(error) => {
                    let reason = format!("directory listing failed: {error}");
                    out.push(SourceEntry {
                        path: prefix.to_string(),
                        mode: 0,
                        kind: SourceKind::Skipped { reason },
                    });
                    continue;
                }
            };
            let name = child.file_name();
            let relative = join_relative(prefix, &name.to_string_lossy());
            match name.to_str() {
                Some(_) => children.push((relative, child)),
                None => out.push(SourceEntry {
                    path: relative,
                    mode: 0,
                    kind: SourceKind::Skipped {
                        reason: "file name is not UTF-8".to_string(),
                    },
                }),
            }
        }
        children.sort_by(|(a, _), (b, _)| a.cmp(b));
        for (relative, child) in children {
            // `DirEntry::metadata` is an lstat relative to the open
            // directory: no walk of the whole path per file.
            let entry = describe(child.metadata(), &child, relative);
            let is_directory = entry.kind == SourceKind::Directory;
            let path = entry.path.clone();
            out.push(entry);
            if is_directory {
                self.walk(&child.path(), &path, out);
            }
        }
    }
}

fn join_relative(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Classifies one directory entry from its `lstat`: symlinks are described,
/// not followed.
fn describe(
    metadata: io::Result<std::fs::Metadata>,
    child: &std::fs::DirEntry,
    path: String,
) -> SourceEntry {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let metadata = match metadata {
        Ok(metadata) => metadata,
        Err(error) => {
            let reason = format!("cannot stat: {error}");
            return SourceEntry {
                path,
                mode: 0,
                kind: SourceKind::Skipped { reason },
            };
        }
    };
    let mode = metadata.permissions().mode() & 0o7777;
    let file_type = metadata.file_type();
    let kind = if file_type.is_file() {
        let nanos = |seconds: i64, nanoseconds: i64| {
            seconds
                .saturating_mul(1_000_000_000)
                .saturating_add(nanoseconds)
        };
        let stamp = FileStamp {
            modified_ns: nanos(metadata.mtime(), metadata.mtime_nsec()),
            changed_ns: nanos(metadata.ctime(), metadata.ctime_nsec()),
            inode: metadata.ino(),
        };
        SourceKind::File {
            size_bytes: metadata.len(),
            stamp: Some(stamp),
        }
    } else if file_type.is_dir() {
        SourceKind::Directory
    } else if file_type.is_symlink() {
        match std::fs::read_link(child.path()) {
            Ok(target) => match target.to_str() {
                Some(target) => SourceKind::Symlink {
                    target: target.to_string(),
                },
                None => SourceKind::Skipped {
                    reason: "symlink target is not UTF-8".to_string(),
                },
            },
            Err(error) => SourceKind::Skipped {
                reason: format!("cannot read link: {error}"),
            },
        }
    } else {
        let what = if file_type.is_fifo() {
            "a fifo"
        } else if file_type.is_socket() {
            "a socket"
        } else if file_type.is_block_device() {
            "a block device"
        } else if file_type.is_char_device() {
            "a character device"
        } else {
            "an unknown file type"
        };
        SourceKind::Skipped {
            reason: format!("special file ({what}) not backed up"),
        }
    };
    SourceEntry { path, mode, kind }
}

impl Source for FsSource {
    fn list(&self) -> Result<Vec<SourceEntry>, SourceError> {
        let root_error = |source: io::Error| SourceError {
            root: self.root.display().to_string(),
            source,
        };
        let metadata = std::fs::metadata(&self.root).map_err(root_error)?;
        if !metadata.is_dir() {
            return Err(root_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory",
            )));
        }
        std::fs::read_dir(&self.root).map_err(root_error)?;
        let mut entries = Vec::new();
        self.walk(&self.root, "", &mut entries);
        Ok(entries)
    }

    fn open(&self, path: &str) -> io::Result<Box<dyn Read + Send>> {
        // O_NOFOLLOW: a file swapped for a symlink after listing is not followed.
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.root.join(path))?;
        Ok(Box::new(file))
    }
}
