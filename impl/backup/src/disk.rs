//! The one door through which the repository touches storage.
//!
//! Every byte the backup service keeps goes through [`Disk`]: the real
//! implementation ([`RealDisk`]) talks to the file system with fsync, and the
//! simulator substitutes a disk that loses unsynced writes at a crash. Hold
//! this in mind while reading: **nothing is durable until it is fsynced, and a
//! rename is not durable until its directory is fsynced.** Code above this
//! layer that wants crash safety uses [`write_atomic`], never a bare `write`.
//!
//! Paths are relative, `/`-separated, and never contain `..`: a disk is a
//! rooted namespace, not the whole file system.

use std::io;

use crate::chunk_bytes::Buffer;

/// Storage with explicit durability. All paths are relative to the disk's root.
pub trait Disk: Send + Sync {
    /// Creates or truncates `path` and writes `bytes`. Not durable until
    /// [`Disk::fsync`]; parent directories are created as needed.
    fn write(&self, path: &str, bytes: &[u8]) -> io::Result<()>;
    /// Makes the contents of `path` durable.
    fn fsync(&self, path: &str) -> io::Result<()>;
    /// Atomically replaces `to` with `from`. Not durable until the directory
    /// holding `to` is fsynced with [`Disk::fsync_dir`].
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes the entries of directory `dir` (creations, renames, removals)
    /// durable. `""` is the root.
    fn fsync_dir(&self, dir: &str) -> io::Result<()>;
    /// Reads the whole of `path`. `ErrorKind::NotFound` when absent.
    fn read(&self, path: &str) -> io::Result<Vec<u8>>;
    /// Names (not paths) of the entries of directory `dir`, sorted. An absent
    /// directory lists as empty.
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Removes file `path`. Not durable until its directory is fsynced.
    fn remove(&self, path: &str) -> io::Result<()>;
    /// True when `path` exists.
    fn exists(&self, path: &str) -> io::Result<bool>;
    /// As [`Disk::write`], with the bytes given as consecutive parts (so a
    /// pack need not be copied into one buffer first). The default joins them.
    fn write_parts(&self, path: &str, parts: &[&[u8]]) -> io::Result<()> {
        self.write(path, &parts.concat())
    }
    /// As [`Disk::write`], for a file of `length_bytes` laid out as `pieces`
    /// (in increasing offset order, not overlapping); bytes no piece covers
    /// are unspecified. The default zero-fills them and writes the whole;
    /// a real disk writes pieces with a block window straight from it.
    fn write_pieces(&self, path: &str, length_bytes: u64, pieces: &[Piece<'_>]) -> io::Result<()> {
        check_layout(length_bytes, pieces)?;
        let length = usize::try_from(length_bytes).map_err(|_| too_long(length_bytes))?;
        let mut bytes = vec![0; length];
        for piece in pieces {
            let start_index = piece.offset_bytes as usize;
            bytes[start_index..start_index + piece.bytes.len()].copy_from_slice(piece.bytes);
        }
        self.write(path, &bytes)
    }
    /// Reads up to `length_bytes` of `path` from `offset_bytes`: fewer when
    /// the file ends first (so a caller can tell truncation from damage).
    /// The default reads the whole file; real disks override it.
    fn read_range(
        &self,
        path: &str,
        offset_bytes: u64,
        length_bytes: usize,
    ) -> io::Result<Vec<u8>> {
        let bytes = self.read(path)?;
        let start_index = usize::try_from(offset_bytes)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let end_index = start_index.saturating_add(length_bytes).min(bytes.len());
        Ok(bytes[start_index..end_index].to_vec())
    }
}

/// Bytes of a file at a given offset, for [`Disk::write_pieces`].
#[derive(Debug, Clone, Copy)]
pub struct Piece<'a> {
    /// Where the bytes go in the file.
    pub offset_bytes: u64,
    /// The bytes.
    pub bytes: &'a [u8],
    /// The same bytes widened to whole [`BLOCK_BYTES`] blocks of aligned
    /// memory, with where `bytes` start in it (see
    /// [`crate::ChunkBytes::block_window`]). When `offset_bytes` minus that
    /// start is block-aligned, a real disk writes the window uncopied; the
    /// widening lands in bytes no piece covers.
    pub block_window: Option<(&'a [u8], usize)>,
}

fn too_long(length_bytes: u64) -> io::Error {
    let message = format!("a file of {length_bytes} bytes does not fit in memory");
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Refuses pieces out of offset order, overlapping, or past the file's end
/// (a bug in the caller's layout), before anything is written.
fn check_layout(length_bytes: u64, pieces: &[Piece<'_>]) -> io::Result<()> {
    let mut piece_end_bytes = 0;
    for piece in pieces {
        let end_bytes = piece.offset_bytes.checked_add(piece.bytes.len() as u64);
        if piece.offset_bytes < piece_end_bytes || end_bytes.is_none_or(|end| end > length_bytes) {
            let message = format!(
                "a piece of {} bytes at offset {} lies outside a file of {length_bytes} \
                 bytes, or before the piece ahead of it (a bug in the caller's layout)",
                piece.bytes.len(),
                piece.offset_bytes
            );
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        piece_end_bytes = piece.offset_bytes + piece.bytes.len() as u64;
    }
    Ok(())
}

/// `path` if nothing is there yet, else the first free `path.N` (N = 1, 2,
/// …): where a set-aside copy goes without replacing an earlier one.
pub fn free_path(disk: &dyn Disk, path: &str) -> io::Result<String> {
    if !disk.exists(path)? {
        return Ok(path.to_string());
    }
    let mut number = 1_u64;
    loop {
        let candidate = format!("{path}.{number}");
        if !disk.exists(&candidate)? {
            return Ok(candidate);
        }
        number += 1;
    }
}

/// Writes `bytes` to `path` so that after a crash at any instant `path` holds
/// either its old contents or all of `bytes`: temp file, fsync, rename,
/// directory fsync.
pub fn write_atomic(disk: &dyn Disk, path: &str, bytes: &[u8]) -> io::Result<()> {
    write_atomic_parts(disk, path, &[bytes])
}

/// [`write_atomic`] with the bytes given as consecutive parts.
pub fn write_atomic_parts(disk: &dyn Disk, path: &str, parts: &[&[u8]]) -> io::Result<()> {
    let temp_path = temp_path_for(path);
    disk.write_parts(&temp_path, parts)?;
    publish(disk, &temp_path, path)
}

/// [`write_atomic`] for a file laid out as pieces ([`Disk::write_pieces`]).
pub fn write_atomic_pieces(
    disk: &dyn Disk,
    path: &str,
    length_bytes: u64,
    pieces: &[Piece<'_>],
) -> io::Result<()> {
    let temp_path = temp_path_for(path);
    disk.write_pieces(&temp_path, length_bytes, pieces)?;
    publish(disk, &temp_path, path)
}

/// Makes the written `temp_path` durable as `path`.
fn publish(disk: &dyn Disk, temp_path: &str, path: &str) -> io::Result<()> {
    disk.fsync(temp_path)?;
    disk.rename(temp_path, path)?;
    disk.fsync_dir(parent_dir(path))
}

/// The temporary name [`write_atomic`] uses for `path`: in the same
/// directory (so the rename stays within one file system), with a `.tmp`
/// suffix that repository listings skip and cleanup removes.
pub fn temp_path_for(path: &str) -> String {
    format!("{path}.tmp")
}

/// True for names that [`write_atomic`] leaves behind when interrupted.
pub fn is_temp_name(name: &str) -> bool {
    name.ends_with(".tmp")
}

/// The directory part of a relative path, `""` for the root.
pub fn parent_dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(index) => &path[..index],
        None => "",
    }
}

/// Joins a directory and a name with `/`, treating `""` as the root.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn check_relative(path: &str) -> io::Result<()> {
    let bad = path.starts_with('/') || path.split('/').any(|part| part == ".." || part == ".");
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("disk path {path:?} must be relative and free of '.' and '..'"),
        ));
    }
    Ok(())
}

/// A [`Disk`] on the real file system, rooted at a directory.
///
/// A large write (a pack) bypasses the page cache with `O_DIRECT`, staged
/// from the chunks' own aligned buffers or through one reused staging
/// buffer on huge pages (see [`crate::chunk_bytes::Buffer::pooled`]):
/// pack bytes are written once and not read back soon, so caching them
/// costs a copy into freshly allocated cache pages (most of a first
/// backup's time on this project's machines) and evicts the user's own
/// files. Where the file system refuses
/// `O_DIRECT`, the write is buffered as usual. Durability is unchanged:
/// callers still fsync ([`write_atomic`]).
#[derive(Debug, Clone)]
pub struct RealDisk {
    root: std::path::PathBuf,
    staging: std::sync::Arc<std::sync::Mutex<Option<Buffer>>>,
}

/// Writes of at least this many bytes go around the page cache.
const DIRECT_WRITE_MIN_BYTES: usize = 1 << 20;
/// Alignment of `O_DIRECT` offsets, lengths and buffers (the largest
/// logical block size in common use).
pub const BLOCK_BYTES: usize = 4096;
/// Bytes per `O_DIRECT` write.
const DIRECT_STAGING_BYTES: usize = 8 << 20;
/// A transparent huge page on x86-64 (a multiple of [`BLOCK_BYTES`]).
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

impl RealDisk {
    /// A disk rooted at `root`, which is created if absent.
    pub fn open(root: impl Into<std::path::PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(Self {
            root,
            staging: Default::default(),
        })
    }

    /// Writes `pieces` (a checked layout) to `full` with `O_DIRECT`;
    /// `Ok(false)` when the file system refuses it (nothing useful written;
    /// the caller writes buffered). A piece whose block window lines up with the file's
    /// blocks is written from it uncopied; the others are copied into the
    /// staging buffer, which is written a block-aligned stretch at a time.
    fn write_direct(
        &self,
        full: &std::path::Path,
        length_bytes: u64,
        pieces: &[Piece<'_>],
    ) -> io::Result<bool> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = match std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(full)
        {
            Ok(file) => file,
            Err(error) if refused_direct(&error) => return Ok(false),
            Err(error) => return Err(error),
        };
        let mut staging = self
            .staging
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let staging = staging.get_or_insert_with(|| Buffer::pooled(DIRECT_STAGING_BYTES));
        let mut writer = DirectWriter {
            out: BlockWrites {
                file: &file,
                written_end_bytes: 0,
            },
            staging,
            staged_offset_bytes: 0,
            staged_bytes: 0,
        };
        for piece in pieces {
            let written = match lined_up(piece) {
                Some((window, at_bytes)) => writer.write_window(window, at_bytes)?,
                None => writer.stage(piece.offset_bytes, piece.bytes)?,
            };
            if !written {
                return Ok(false);
            }
        }
        if !writer.flush()? {
            return Ok(false);
        }
        file.set_len(length_bytes)?;
        Ok(true)
    }

    /// The directory this disk is rooted at.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    fn resolve(&self, path: &str) -> io::Result<std::path::PathBuf> {
        check_relative(path)?;
        Ok(if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        })
    }
}

impl Disk for RealDisk {
    fn write(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let full = self.resolve(path)?;
        if let Some(parent) = full.parent() {
            create_dirs_durably(parent)?;
        }
        std::fs::write(full, bytes)
    }

    fn write_parts(&self, path: &str, parts: &[&[u8]]) -> io::Result<()> {
        let mut offset_bytes = 0;
        let pieces: Vec<Piece<'_>> = parts
            .iter()
            .map(|part| {
                let piece = Piece {
                    offset_bytes,
                    bytes: part,
                    block_window: None,
                };
                offset_bytes += part.len() as u64;
                piece
            })
            .collect();
        self.write_pieces(path, offset_bytes, &pieces)
    }

    fn write_pieces(&self, path: &str, length_bytes: u64, pieces: &[Piece<'_>]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        check_layout(length_bytes, pieces)?;
        let full = self.resolve(path)?;
        if let Some(parent) = full.parent() {
            create_dirs_durably(parent)?;
        }
        if length_bytes >= DIRECT_WRITE_MIN_BYTES as u64
            && self.write_direct(&full, length_bytes, pieces)?
        {
            return Ok(());
        }
        let file = std::fs::File::create(full)?;
        for piece in pieces {
            file.write_all_at(piece.bytes, piece.offset_bytes)?;
        }
        file.set_len(length_bytes)
    }

    fn fsync(&self, path: &str) -> io::Result<()> {
        std::fs::File::open(self.resolve(path)?)?.sync_all()
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.resolve(from)?, self.resolve(to)?)
    }

    fn fsync_dir(&self, dir: &str) -> io::Result<()> {
        fsync_directory(&self.resolve(dir)?)
    }

    fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.resolve(path)?)
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let full = self.resolve(dir)?;
        let entries = match std::fs::read_dir(&full) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        let mut names = Vec::new();
        for entry in entries {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        std::fs::remove_file(self.resolve(path)?)
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        self.resolve(path)?.try_exists()
    }

    fn read_range(
        &self,
        path: &str,
        offset_bytes: u64,
        length_bytes: usize,
    ) -> io::Result<Vec<u8>> {
        use std::io::{Read, Seek};
        let mut file = std::fs::File::open(self.resolve(path)?)?;
        file.seek(io::SeekFrom::Start(offset_bytes))?;
        // Sized by what the file holds, not by what was asked: a damaged
        // length (a pack header's entry count) must read short, not try to
        // allocate gigabytes.
        let present_bytes = file.metadata()?.len().saturating_sub(offset_bytes);
        let capacity = usize::try_from(present_bytes)
            .map_or(length_bytes, |present| present.min(length_bytes));
        let mut bytes = Vec::with_capacity(capacity);
        file.take(length_bytes as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

fn refused_direct(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::EINVAL)
}

/// A piece's block window and the file offset it goes to, when both line
/// up with blocks (so `O_DIRECT` can write it as it is).
fn lined_up<'a>(piece: &Piece<'a>) -> Option<(&'a [u8], u64)> {
    let (window, start_index) = piece.block_window?;
    let at_bytes = piece.offset_bytes.checked_sub(start_index as u64)?;
    let block = BLOCK_BYTES;
    let lined_up = at_bytes.is_multiple_of(block as u64)
        && (window.as_ptr() as usize).is_multiple_of(block)
        && window.len().is_multiple_of(block)
        && window
            .get(start_index..start_index + piece.bytes.len())
            .is_some_and(|within| std::ptr::eq(within, piece.bytes));
    lined_up.then_some((window, at_bytes))
}

/// Whole-block `O_DIRECT` writes to one file, in increasing offsets.
struct BlockWrites<'a> {
    file: &'a std::fs::File,
    /// End of the last block written: later writes must start at or after.
    written_end_bytes: u64,
}

impl BlockWrites<'_> {
    /// Writes `bytes` (whole blocks of aligned memory) at `at_bytes`;
    /// `Ok(false)` when `O_DIRECT` is refused.
    fn write_at(&mut self, bytes: &[u8], at_bytes: u64) -> io::Result<bool> {
        use std::os::unix::fs::FileExt;
        if at_bytes < self.written_end_bytes {
            let message = format!(
                "a write at offset {at_bytes} would overwrite the block written up to {} \
                 (pieces share a block: a bug in the caller's layout)",
                self.written_end_bytes
            );
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        match self.file.write_all_at(bytes, at_bytes) {
            Ok(()) => {
                self.written_end_bytes = at_bytes + bytes.len() as u64;
                Ok(true)
            }
            Err(error) if refused_direct(&error) => Ok(false),
            Err(error) => Err(error),
        }
    }
}

/// One `O_DIRECT` file write: what is staged for a block-aligned stretch.
struct DirectWriter<'a> {
    out: BlockWrites<'a>,
    staging: &'a mut [u8],
    /// File offset of `staging[0]` (block-aligned).
    staged_offset_bytes: u64,
    staged_bytes: usize,
}

impl DirectWriter<'_> {
    fn write_window(&mut self, window: &[u8], at_bytes: u64) -> io::Result<bool> {
        Ok(self.flush()? && self.out.write_at(window, at_bytes)?)
    }

    /// Copies `bytes`, bound for `offset_bytes`, into the staging buffer,
    /// writing it out whenever it fills or the bytes do not continue it.
    fn stage(&mut self, mut offset_bytes: u64, mut bytes: &[u8]) -> io::Result<bool> {
        let block = BLOCK_BYTES as u64;
        while !bytes.is_empty() {
            let staged_end_bytes = self.staged_offset_bytes + self.staged_bytes as u64;
            if self.staged_bytes > 0 && offset_bytes != staged_end_bytes && !self.flush()? {
                return Ok(false);
            }
            if self.staged_bytes == 0 {
                self.staged_offset_bytes = offset_bytes - offset_bytes % block;
                let lead_bytes = (offset_bytes % block) as usize;
                self.staging[..lead_bytes].fill(0);
                self.staged_bytes = lead_bytes;
            }
            let taken = bytes.len().min(self.staging.len() - self.staged_bytes);
            let end = self.staged_bytes + taken;
            self.staging[self.staged_bytes..end].copy_from_slice(&bytes[..taken]);
            self.staged_bytes = end;
            (offset_bytes, bytes) = (offset_bytes + taken as u64, &bytes[taken..]);
            if self.staged_bytes == self.staging.len() && !self.flush()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes what is staged, its last block padded with zeroes.
    fn flush(&mut self) -> io::Result<bool> {
        if self.staged_bytes == 0 {
            return Ok(true);
        }
        let padded = self.staged_bytes.next_multiple_of(BLOCK_BYTES);
        self.staging[self.staged_bytes..padded].fill(0);
        self.staged_bytes = 0;
        self.out
            .write_at(&self.staging[..padded], self.staged_offset_bytes)
    }
}

/// Creates `dir` and any missing ancestors, fsyncing each new directory's
/// parent: a new directory's entry must reach its parent durably, or a later
/// fsync_dir of it protects nothing (a crash could drop the whole subtree).
fn create_dirs_durably(dir: &std::path::Path) -> io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        // Another writer created it meanwhile; it fsynced the parent too.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(error) => return Err(error),
    }
    match dir.parent() {
        Some(parent) => fsync_directory(parent),
        None => Ok(()),
    }
}

fn fsync_directory(dir: &std::path::Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let disk = RealDisk::open(dir.path()).unwrap();
        write_atomic(&disk, "a/b/c", b"one").unwrap();
        write_atomic(&disk, "a/b/c", b"two").unwrap();
        assert_eq!(disk.read("a/b/c").unwrap(), b"two");
        assert_eq!(disk.list("a/b").unwrap(), vec!["c".to_string()]);
    }

    #[test]
    fn paths_that_escape_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let disk = RealDisk::open(dir.path()).unwrap();
        for path in ["../x", "/etc/passwd", "a/../../x", "./a"] {
            let error = disk.write(path, b"x").unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{path}");
        }
    }

    #[test]
    fn read_range_stops_at_the_end_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let disk = RealDisk::open(dir.path()).unwrap();
        disk.write("f", b"0123456789").unwrap();
        assert_eq!(disk.read_range("f", 2, 3).unwrap(), b"234");
        assert_eq!(disk.read_range("f", 8, 5).unwrap(), b"89");
        assert_eq!(disk.read_range("f", 20, 5).unwrap(), b"");
    }

    /// Large writes take the `O_DIRECT` path (or its fallback, on a file
    /// system without it, such as an older tmpfs): either way, exactly the
    /// bytes given, at exactly their length, over several staging buffers
    /// and an unaligned tail, and a rewrite truncates.
    #[test]
    fn large_writes_read_back_exactly_whatever_the_file_system() {
        let pattern = |length: usize, salt: u8| -> Vec<u8> {
            (0..length).map(|i| (i % 251) as u8 ^ salt).collect()
        };
        let big = pattern(DIRECT_STAGING_BYTES * 2 + 12_345, 1);
        let small = pattern(DIRECT_WRITE_MIN_BYTES + 1, 2);
        let mut roots = vec![tempfile::tempdir().unwrap()];
        if std::path::Path::new("/dev/shm").is_dir() {
            roots.push(tempfile::tempdir_in("/dev/shm").unwrap());
        }
        for root in &roots {
            let disk = RealDisk::open(root.path()).unwrap();
            let (head, tail) = big.split_at(777);
            disk.write_parts("p/pack", &[head, tail, b"end"]).unwrap();
            let mut expected = big.clone();
            expected.extend_from_slice(b"end");
            assert_eq!(disk.read("p/pack").unwrap(), expected, "{:?}", root.path());
            disk.write_parts("p/pack", &[&small]).unwrap();
            assert_eq!(disk.read("p/pack").unwrap(), small, "{:?}", root.path());
            write_atomic(&disk, "p/atomic", &big).unwrap();
            assert_eq!(disk.read("p/atomic").unwrap(), big);
        }
    }

    #[test]
    fn absent_directory_lists_empty() {
        let dir = tempfile::tempdir().unwrap();
        let disk = RealDisk::open(dir.path()).unwrap();
        assert!(disk.list("nothing/here").unwrap().is_empty());
    }
}
