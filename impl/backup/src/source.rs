//! What a backup reads: a tree of entries and a way to open files.
//!
//! The client never touches the file system directly, so the simulator can
//! feed it an in-memory tree ([`MemorySource`]) and the CLI a real directory
//! ([`FsSource`]). Special files (a fifo, a socket, a device) are reported as
//! [`SourceKind::Special`], problems with single entries (an unreadable file,
//! a name that is not UTF-8) as [`SourceKind::Skipped`]; neither stops the
//! backup, only an unusable root does.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use crate::manifest::{Owner, RootAttributes};

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
    pub modified_ns: i128,
    /// Last status change, nanoseconds since the Unix epoch.
    pub changed_ns: i128,
    /// The inode number.
    pub inode: u64,
}

impl FileStamp {
    /// The stamp of a file's metadata.
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            modified_ns: modified_ns(metadata),
            changed_ns: nanos(metadata.ctime(), metadata.ctime_nsec()),
            inode: metadata.ino(),
        }
    }
}

/// Last modification, nanoseconds since the Unix epoch.
pub fn modified_ns(metadata: &std::fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    nanos(metadata.mtime(), metadata.mtime_nsec())
}

/// The owning user and group of `metadata`.
fn owner(metadata: &std::fs::Metadata) -> Owner {
    use std::os::unix::fs::MetadataExt;
    Owner {
        uid: metadata.uid(),
        gid: metadata.gid(),
    }
}

/// Exact for any time a file system stores (an `i64` of nanoseconds ends in
/// 2262).
fn nanos(seconds: i64, nanoseconds: i64) -> i128 {
    i128::from(seconds) * 1_000_000_000 + i128::from(nanoseconds)
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
    /// A directory, with its modification time when the source has one.
    Directory { modified_ns: Option<i128> },
    /// A symbolic link: its target text, never followed.
    Symlink { target: String },
    /// A FIFO, socket or device: never backed up, by design.
    Special { reason: String },
    /// Could not be backed up (unreadable, a name or link that is not
    /// UTF-8), with the reason: the snapshot lacks it.
    Skipped { reason: String },
}

/// One entry of the source tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    /// Relative, `/`-separated path (the root itself is not an entry).
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
    /// The owning user and group, when the source has them.
    pub owner: Option<Owner>,
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
    /// Opens the file `entry` lists, refusing (where the source can tell) a
    /// different file found at its path since: the backup then never stores
    /// a file from elsewhere under this entry's name.
    fn open_entry(&self, entry: &SourceEntry) -> io::Result<Box<dyn Read + Send>> {
        self.open(&entry.path)
    }
    /// The root directory's own mode, owner and time, where the source has
    /// them.
    fn root_attributes(&self) -> Option<RootAttributes> {
        None
    }
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
                owner: None,
                kind: match entry {
                    // An in-memory tree has no clock: no stamp, never reused.
                    MemoryEntry::File(bytes) => SourceKind::File {
                        size_bytes: bytes.len() as u64,
                        stamp: None,
                    },
                    MemoryEntry::Directory => SourceKind::Directory { modified_ns: None },
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
}

/// One directory of the walk: its path on disk and relative to the root.
struct DirJob {
    dir: PathBuf,
    prefix: String,
}

/// What the walking threads share.
#[derive(Default)]
struct WalkState {
    queue: Vec<DirJob>,
    /// Jobs taken and not yet finished: the walk ends when none are left
    /// and the queue is empty.
    active: usize,
    /// Each directory's listing, by its relative path.
    listed: HashMap<String, Vec<SourceEntry>>,
}

/// Lists the tree under `root` on `threads` threads, each taking the next
/// directory to read; returns each directory's own listing.
fn walk_parallel(root: &Path, threads: usize) -> HashMap<String, Vec<SourceEntry>> {
    let state = Mutex::new(WalkState {
        queue: vec![DirJob {
            dir: root.to_path_buf(),
            prefix: String::new(),
        }],
        ..WalkState::default()
    });
    let changed = Condvar::new();
    let work = || {
        let mut guard = state.lock().expect("walk lock");
        loop {
            let Some(job) = guard.queue.pop() else {
                if guard.active == 0 {
                    changed.notify_all();
                    return;
                }
                guard = changed.wait(guard).expect("walk lock");
                continue;
            };
            guard.active += 1;
            drop(guard);
            let (entries, subdirs) = list_dir(&job);
            guard = state.lock().expect("walk lock");
            guard.queue.extend(subdirs);
            guard.listed.insert(job.prefix, entries);
            guard.active -= 1;
            changed.notify_all();
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(work);
        }
        work();
    });
    state.into_inner().expect("walk lock").listed
}

/// One directory's entries, in the order the listing gives them: problems
/// with the directory first, then its children sorted by name. Returns the
/// subdirectories to list next.
fn list_dir(job: &DirJob) -> (Vec<SourceEntry>, Vec<DirJob>) {
    let prefix = job.prefix.as_str();
    let mut out = Vec::new();
    let skipped = |reason: String| SourceEntry {
        path: prefix.to_string(),
        mode: 0,
        owner: None,
        kind: SourceKind::Skipped { reason },
    };
    let read_dir = match std::fs::read_dir(&job.dir) {
        Ok(read_dir) => read_dir,
        Err(error) => {
            // The directory entry itself is already listed; its contents are not.
            let reason = format!("directory unreadable, contents skipped: {error}");
            return (vec![skipped(reason)], Vec::new());
        }
    };
    let mut children: Vec<(String, std::fs::DirEntry)> = Vec::new();
    for child in read_dir {
        let child = match child {
            Ok(child) => child,
            Err(error) => {
                out.push(skipped(format!("directory listing failed: {error}")));
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
                owner: None,
                kind: SourceKind::Skipped {
                    reason: "file name is not UTF-8".to_string(),
                },
            }),
        }
    }
    children.sort_by(|(a, _), (b, _)| a.cmp(b));
    let mut subdirs = Vec::new();
    for (relative, child) in children {
        // `DirEntry::metadata` is an lstat relative to the open
        // directory: no walk of the whole path per file.
        let entry = describe(child.metadata(), &child, relative);
        if matches!(entry.kind, SourceKind::Directory { .. }) {
            subdirs.push(DirJob {
                dir: child.path(),
                prefix: entry.path.clone(),
            });
        }
        out.push(entry);
    }
    (out, subdirs)
}

/// The whole listing in order, depth first: each directory's entry is
/// followed by its own listing, then by its next sibling.
fn assemble(mut listed: HashMap<String, Vec<SourceEntry>>) -> Vec<SourceEntry> {
    let mut out = Vec::new();
    // A stack of each open directory's remaining entries, reversed.
    let mut stack: Vec<Vec<SourceEntry>> = Vec::new();
    let mut root = listed.remove("").unwrap_or_default();
    root.reverse();
    stack.push(root);
    while let Some(top) = stack.last_mut() {
        let Some(entry) = top.pop() else {
            stack.pop();
            continue;
        };
        let children = match entry.kind {
            SourceKind::Directory { .. } => listed.remove(&entry.path),
            _ => None,
        };
        out.push(entry);
        if let Some(mut children) = children {
            children.reverse();
            stack.push(children);
        }
    }
    out
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
    use std::os::unix::fs::PermissionsExt;
    let metadata = match metadata {
        Ok(metadata) => metadata,
        Err(error) => {
            let reason = format!("cannot stat: {error}");
            return SourceEntry {
                path,
                mode: 0,
                owner: None,
                kind: SourceKind::Skipped { reason },
            };
        }
    };
    let mode = metadata.permissions().mode() & 0o7777;
    let file_type = metadata.file_type();
    let kind = if file_type.is_file() {
        SourceKind::File {
            size_bytes: metadata.len(),
            stamp: Some(FileStamp::of(&metadata)),
        }
    } else if file_type.is_dir() {
        SourceKind::Directory {
            modified_ns: Some(modified_ns(&metadata)),
        }
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
        let what = describe_type(file_type);
        SourceKind::Special {
            reason: format!("special file ({what}) not backed up"),
        }
    };
    SourceEntry {
        path,
        mode,
        owner: Some(owner(&metadata)),
        kind,
    }
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
        // Listing is mostly system calls (a readdir per directory, an lstat
        // per entry): on every core, it takes a fraction of the time.
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(assemble(walk_parallel(&self.root, threads)))
    }

    fn open(&self, path: &str) -> io::Result<Box<dyn Read + Send>> {
        self.open_checked(path, None)
    }

    fn root_attributes(&self) -> Option<RootAttributes> {
        use std::os::unix::fs::PermissionsExt;
        // The directory the root names, as the listing read it.
        let metadata = std::fs::metadata(&self.root).ok()?;
        Some(RootAttributes {
            mode: metadata.permissions().mode() & 0o7777,
            owner: Some(owner(&metadata)),
            modified_ns: Some(modified_ns(&metadata)),
        })
    }

    fn open_entry(&self, entry: &SourceEntry) -> io::Result<Box<dyn Read + Send>> {
        let inode = match &entry.kind {
            SourceKind::File { stamp, .. } => stamp.map(|stamp| stamp.inode),
            _ => None,
        };
        self.open_checked(&entry.path, inode)
    }
}

impl FsSource {
    /// Opens `path`, a regular file, and (given `inode`) the same file the
    /// listing saw: a directory on the way swapped for a symlink since the
    /// listing would otherwise lead out of the tree (`O_NOFOLLOW` guards
    /// only the last component).
    fn open_checked(&self, path: &str, inode: Option<u64>) -> io::Result<Box<dyn Read + Send>> {
        use std::os::unix::fs::MetadataExt;
        // The entry may have been replaced since it was listed. O_NOFOLLOW: a
        // symlink is not followed. O_NONBLOCK: opening a FIFO does not wait
        // for a writer (reads of a regular file ignore the flag), and
        // anything but a regular file is refused before a byte is read.
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(self.root.join(path))?;
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            let problem = format!(
                "no longer a regular file (now {}) since it was listed",
                describe_type(metadata.file_type())
            );
            return Err(io::Error::new(io::ErrorKind::InvalidInput, problem));
        }
        if inode.is_some_and(|inode| inode != metadata.ino()) {
            let problem = "another file is at this path since it was listed (it, or a \
                           directory on its path, was replaced); not read";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, problem));
        }
        Ok(Box::new(SteadyFile {
            opened: (metadata.len(), FileStamp::of(&metadata)),
            file: file.take(metadata.len()),
        }))
    }
}

/// A regular file read up to the size it had when opened (so a file that
/// keeps growing cannot hold a backup forever), whose end is reported only
/// if the file did not change while it was read: bytes written meanwhile may
/// have mixed old and new content into a version that never existed, so the
/// read fails instead and the file is reported, not stored.
struct SteadyFile {
    file: io::Take<std::fs::File>,
    /// Size and stamp when opened.
    opened: (u64, FileStamp),
}

impl Read for SteadyFile {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let count = self.file.read(buffer)?;
        if count == 0 && !buffer.is_empty() {
            let metadata = self.file.get_ref().metadata()?;
            let now = (metadata.len(), FileStamp::of(&metadata));
            if now != self.opened {
                let problem = format!(
                    "changed while it was read (size {} -> {} bytes, or its times): not \
                     stored, so no snapshot holds a mix of old and new bytes; the next \
                     backup reads it again",
                    self.opened.0, now.0
                );
                return Err(io::Error::other(problem));
            }
        }
        Ok(count)
    }
}

/// A file type in words, for messages.
fn describe_type(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symlink"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "an unknown file type"
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// The listing order the walk promises, computed the plain way: depth
    /// first, each directory's children sorted by name.
    fn reference_paths(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|child| child.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        for name in names {
            let relative = join_relative(prefix, &name);
            out.push(relative.clone());
            let path = dir.join(&name);
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                reference_paths(&path, &relative, out);
            }
        }
    }

    /// Names chosen so that sorting whole paths would give another order
    /// than depth first ("a-c" sorts before "a/b"), with a deep chain and
    /// wide directories, so several threads share the walk.
    fn awkward_tree(root: &Path) {
        for dir in ["a/b/c/d/e/f", "a-c", "b", "wide"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for index in 0..40 {
            std::fs::create_dir(root.join(format!("wide/d{index:02}"))).unwrap();
            std::fs::write(root.join(format!("wide/d{index:02}/f")), b"x").unwrap();
        }
        for file in ["a/b/x", "a/b/c/d/e/f/deep", "a-c/y", "a.txt", "b/z"] {
            std::fs::write(root.join(file), file.as_bytes()).unwrap();
        }
        std::os::unix::fs::symlink("a", root.join("link-to-a")).unwrap();
    }

    #[test]
    fn the_parallel_walk_lists_depth_first_in_name_order_on_any_thread_count() {
        let root = tempfile::tempdir().unwrap();
        awkward_tree(root.path());
        let mut expected = Vec::new();
        reference_paths(root.path(), "", &mut expected);
        assert!(expected.len() > 90, "{} entries", expected.len());
        for threads in [1, 2, 3, 8] {
            let listed = assemble(walk_parallel(root.path(), threads));
            let paths: Vec<&str> = listed.iter().map(|entry| entry.path.as_str()).collect();
            assert_eq!(paths, expected, "{threads} threads");
        }
        let listing = FsSource::new(root.path()).list().unwrap();
        let link = listing
            .iter()
            .find(|entry| entry.path == "link-to-a")
            .unwrap();
        let target = "a".to_string();
        assert_eq!(
            link.kind,
            SourceKind::Symlink { target },
            "symlinks are not followed"
        );
    }

    #[test]
    fn an_entry_replaced_by_a_fifo_after_listing_is_refused_without_waiting() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), b"data").unwrap();
        let source = FsSource::new(root.path());
        assert!(matches!(
            source.list().unwrap()[0].kind,
            SourceKind::File { .. }
        ));
        std::fs::remove_file(root.path().join("f")).unwrap();
        let fifo = std::ffi::CString::new(root.path().join("f").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        // Without O_NONBLOCK this open would wait for a writer forever.
        let error = source.open("f").err().expect("a FIFO is not read");
        assert!(error.to_string().contains("now a FIFO"), "{error}");
    }

    #[test]
    fn a_file_changed_while_read_fails_at_its_end_and_one_left_alone_does_not() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("f");
        std::fs::write(&path, vec![b'a'; 10_000]).unwrap();
        let source = FsSource::new(root.path());
        let mut steady = Vec::new();
        source.open("f").unwrap().read_to_end(&mut steady).unwrap();
        assert_eq!(steady, vec![b'a'; 10_000]);

        let mut reader = source.open("f").unwrap();
        let mut head = [0_u8; 100];
        reader.read_exact(&mut head).unwrap();
        // Grown by a writer: only the size at open is read, then the change
        // is reported instead of an end of file.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[b'b'; 5_000])
            .unwrap();
        let mut rest = Vec::new();
        let error = reader.read_to_end(&mut rest).unwrap_err();
        assert_eq!(rest.len(), 10_000 - 100, "read stops at the size at open");
        assert!(
            error.to_string().contains("changed while it was read"),
            "{error}"
        );
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_after_listing_does_not_lead_out_of_the_tree() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("d")).unwrap();
        std::fs::write(root.path().join("d/a"), b"inside").unwrap();
        std::fs::write(outside.path().join("a"), b"SECRET").unwrap();
        let source = FsSource::new(root.path());
        let listing = source.list().unwrap();
        let entry = listing.iter().find(|entry| entry.path == "d/a").unwrap();
        std::fs::rename(root.path().join("d"), root.path().join("d-old")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("d")).unwrap();
        let error = source
            .open_entry(entry)
            .err()
            .expect("the outside file is not read");
        assert!(
            error.to_string().contains("another file is at this path"),
            "{error}"
        );
    }
}
