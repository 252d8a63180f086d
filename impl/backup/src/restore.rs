//! Restore: a snapshot back into a directory, byte-identical, or not at all.
//! Files and directories get back their permission bits and, when the
//! snapshot recorded them, their modification time and (restoring as root)
//! their owner; symlinks their owner.
//!
//! The manifest is untrusted input. Every path is validated before the first
//! byte is written ([`Manifest::validate`]: no absolute path, no `..`, nothing
//! under a symlink entry), the target must be empty so no pre-existing link
//! can redirect a write, and symlinks are created last. Every chunk is
//! re-hashed on arrival. A file with a missing or damaged chunk is left out
//! (never written with wrong bytes under its name) and the restore goes on
//! with the rest, then fails naming each file left out and its chunk.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::Fingerprint;
use crate::manifest::{Entry, EntryKind, Manifest, Owner, RootAttributes, SnapshotId, UnsafePath};
use crate::service::{BackupService, ChunkProblem, ServiceError};

/// What a restore wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestoreStats {
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub directories: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Bytes written to files.
    pub bytes_written: u64,
    /// Chunks fetched and verified.
    pub chunks_fetched: u64,
}

/// A file a restore left out because it could not be written
/// byte-identical.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnrestoredFile {
    /// The file's path in the snapshot.
    pub path: String,
    /// Its first missing or damaged chunk, if a chunk is at fault.
    pub chunk: Option<Fingerprint>,
    /// What is wrong.
    pub problem: String,
}

/// Why a restore stopped, or did not restore everything.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The manifest names a path that could escape the target; nothing was written.
    #[error("restore refused before writing anything: {0}")]
    UnsafePath(#[from] UnsafePath),
    /// The target directory already has entries.
    #[error(
        "restore target {path} is not empty: expected an empty or absent directory, so \
         that nothing in it can redirect or mix with restored files; choose a new directory"
    )]
    TargetNotEmpty { path: PathBuf },
    /// Some files could not be restored byte-identical; everything else was.
    #[error(
        "{} of the snapshot's files could not be restored byte-identical and were left \
         out, the rest was restored ({} files): {}. `crosscheck fsck` names every damaged \
         snapshot; `fsck --repair`, then a backup of the same data, heals them",
        unrestored.len(),
        stats.files,
        describe_unrestored(unrestored)
    )]
    Incomplete {
        stats: RestoreStats,
        unrestored: Vec<UnrestoredFile>,
    },
    /// A chunk of a file is missing or damaged.
    #[error("cannot restore {path:?}: chunk {chunk} {problem}")]
    BadChunk {
        path: String,
        chunk: Fingerprint,
        problem: String,
    },
    /// A file's chunks do not add up to its recorded size.
    #[error(
        "cannot restore {path:?}: its chunks hold {found_bytes} bytes, the manifest says \
         {expected_bytes}"
    )]
    SizeMismatch {
        path: String,
        expected_bytes: u64,
        found_bytes: u64,
    },
    /// The service failed (manifest unavailable, storage error). (Not a
    /// `#[source]`: the message holds it, and error chains would print it
    /// twice; likewise `Io`'s `error`.)
    #[error("restore failed: {0}")]
    Service(ServiceError),
    /// Writing the target failed.
    #[error(
        "cannot write {path}: {error}; check that the target is a directory with room and \
         write permission"
    )]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The files left out, grouped by problem (one damaged pack can cost
/// hundreds of files, and its description is said once), at most
/// [`UNRESTORED_NAMED_MAX`] of them named.
fn describe_unrestored(unrestored: &[UnrestoredFile]) -> String {
    let mut problems: Vec<(&str, Vec<String>)> = Vec::new();
    for file in unrestored {
        let named = match file.chunk {
            Some(chunk) => format!("{:?} (chunk {chunk})", file.path),
            None => format!("{:?}", file.path),
        };
        match problems
            .iter_mut()
            .find(|(problem, _)| *problem == file.problem)
        {
            Some((_, files)) => files.push(named),
            None => problems.push((&file.problem, vec![named])),
        }
    }
    let mut described: Vec<String> = Vec::new();
    let mut named_count = 0;
    for (problem, files) in &problems {
        let room = UNRESTORED_NAMED_MAX - named_count;
        if room == 0 {
            break;
        }
        let mut named: Vec<&str> = files.iter().take(room).map(String::as_str).collect();
        named_count += named.len();
        let more = format!("and {} more", files.len() - named.len());
        if files.len() > named.len() {
            named.push(&more);
        }
        // A chunk's problem reads after "chunk X" ("is damaged: ..."); here
        // it follows the files, so it gets its subject back.
        let problem = match problem.strip_prefix("is ") {
            Some(rest) => format!("the chunk is {rest}"),
            None => problem.to_string(),
        };
        described.push(format!("{}: {problem}", named.join(", ")));
    }
    let told: usize = problems
        .iter()
        .take(described.len())
        .map(|(_, f)| f.len())
        .sum();
    match unrestored.len() - told {
        0 => {}
        1 => described.push("and 1 more file".to_string()),
        more => described.push(format!("and {more} more files")),
    }
    described.join("; ")
}

/// Files a restore's error names (its report lists them all).
const UNRESTORED_NAMED_MAX: usize = 20;

impl From<ServiceError> for RestoreError {
    fn from(error: ServiceError) -> Self {
        Self::Service(error)
    }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> RestoreError + '_ {
    move |error| RestoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Restores snapshot `id` from `service` into `target` (absent or empty).
pub async fn restore<S: BackupService>(
    service: &S,
    id: &SnapshotId,
    target: &Path,
) -> Result<RestoreStats, RestoreError> {
    let manifest = service.get_manifest(id.clone()).await?;
    manifest.validate()?;
    prepare_target(target)?;
    let mut stats = RestoreStats::default();
    let mut directories = Vec::new();
    let mut unrestored = Vec::new();
    let restorer = Restorer::current();
    for entry in &manifest.entries {
        let full = target.join(&entry.path);
        match &entry.kind {
            EntryKind::Directory { .. } => {
                std::fs::create_dir_all(&full).map_err(io_error(&full))?;
                directories.push(entry);
                stats.directories += 1;
            }
            EntryKind::File { .. } => {
                match restore_file(service, entry, &full, restorer, &mut stats).await? {
                    Some(left_out) => unrestored.push(left_out),
                    None => stats.files += 1,
                }
            }
            EntryKind::Symlink { .. } => {}
        }
    }
    restore_symlinks_and_modes(&manifest, target, &directories, restorer, &mut stats)?;
    if !unrestored.is_empty() {
        return Err(RestoreError::Incomplete { stats, unrestored });
    }
    Ok(stats)
}

/// Writes one file entry at `full`, then its owner, mode and time. A file
/// whose chunks cannot be fetched intact is removed again and returned as
/// left out.
async fn restore_file<S: BackupService>(
    service: &S,
    entry: &Entry,
    full: &Path,
    restorer: Restorer,
    stats: &mut RestoreStats,
) -> Result<Option<UnrestoredFile>, RestoreError> {
    if let Some(parent) = full.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let file = std::fs::File::create(full).map_err(io_error(full))?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    let written = write_file(service, entry, &mut writer, stats).await;
    let (chunk, problem) = match written {
        Ok(()) => return finish_file(writer, entry, full, restorer).map(|()| None),
        Err(RestoreError::BadChunk { chunk, problem, .. }) => (Some(chunk), problem),
        Err(RestoreError::SizeMismatch {
            expected_bytes,
            found_bytes,
            ..
        }) => {
            let problem =
                format!("its chunks hold {found_bytes} bytes, the manifest says {expected_bytes}");
            (None, problem)
        }
        Err(other) => return Err(other),
    };
    // No file under this name rather than wrong bytes.
    drop(writer);
    std::fs::remove_file(full).map_err(io_error(full))?;
    let path = entry.path.clone();
    Ok(Some(UnrestoredFile {
        path,
        chunk,
        problem,
    }))
}

/// Flushes a fully written file, then sets its owner, mode and time.
fn finish_file(
    writer: std::io::BufWriter<std::fs::File>,
    entry: &Entry,
    full: &Path,
    restorer: Restorer,
) -> Result<(), RestoreError> {
    let file = writer
        .into_inner()
        .map_err(|error| io_error(full)(error.into_error()))?;
    // Ownership first: a change of owner clears set-id bits.
    if let Some(owner) = restorer.owner_to_set(entry.owner) {
        std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid))
            .map_err(io_error(full))?;
    }
    let mode = restorer.mode_to_set(entry.mode, entry.owner);
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_error(full))?;
    if let EntryKind::File {
        stamp: Some(stamp), ..
    } = &entry.kind
        && let Some(time) = modified_time(stamp.modified_ns)
    {
        file.set_modified(time).map_err(io_error(full))?;
    }
    Ok(())
}

/// Who restores, asked once. Owners are restored only by root: anyone
/// else may not give files away, and gets them as their own, as `cp` and
/// `tar` do.
#[derive(Debug, Clone, Copy)]
struct Restorer {
    uid: u32,
    gid: u32,
}

impl Restorer {
    fn current() -> Self {
        // SAFETY: geteuid and getegid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Self { uid, gid }
    }

    fn is_root(self) -> bool {
        self.uid == 0
    }

    /// The recorded owner, when this restorer may give it.
    fn owner_to_set(self, owner: Option<Owner>) -> Option<Owner> {
        owner.filter(|_| self.is_root())
    }

    /// An entry's mode, less its set-user-id and set-group-id bits when its
    /// owner is not kept (a restore by someone other than root, of another
    /// user's file), as `cp` and `tar` do: otherwise the restoring user
    /// would get set-id programs of their own.
    fn mode_to_set(self, mode: u32, owner: Option<Owner>) -> u32 {
        let kept = self.is_root()
            || owner.is_none_or(|owner| owner.uid == self.uid && owner.gid == self.gid);
        if kept { mode } else { mode & !0o6000 }
    }
}

/// The time `modified_ns` nanoseconds from the Unix epoch (before it when
/// negative); `None` past what this system's clock type holds (only a
/// tampered manifest goes there: a file system's times all fit).
fn modified_time(modified_ns: i128) -> Option<std::time::SystemTime> {
    let seconds = modified_ns.div_euclid(1_000_000_000);
    let nanoseconds = u32::try_from(modified_ns.rem_euclid(1_000_000_000)).ok()?;
    let whole = std::time::Duration::from_secs(u64::try_from(seconds.unsigned_abs()).ok()?);
    let epoch_second = if seconds >= 0 {
        std::time::UNIX_EPOCH.checked_add(whole)?
    } else {
        std::time::UNIX_EPOCH.checked_sub(whole)?
    };
    epoch_second.checked_add(std::time::Duration::new(0, nanoseconds))
}

/// Symlinks last, so no write can pass through one; directory times and
/// modes after their contents, so neither a new entry changes a restored
/// time nor a read-only directory blocks its own files.
fn restore_symlinks_and_modes(
    manifest: &Manifest,
    target: &Path,
    directories: &[&Entry],
    restorer: Restorer,
    stats: &mut RestoreStats,
) -> Result<(), RestoreError> {
    for entry in &manifest.entries {
        if let EntryKind::Symlink {
            target: link_target,
        } = &entry.kind
        {
            let full = target.join(&entry.path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).map_err(io_error(parent))?;
            }
            std::os::unix::fs::symlink(link_target, &full).map_err(io_error(&full))?;
            if let Some(owner) = restorer.owner_to_set(entry.owner) {
                std::os::unix::fs::lchown(&full, Some(owner.uid), Some(owner.gid))
                    .map_err(io_error(&full))?;
            }
            stats.symlinks += 1;
        }
    }
    for entry in directories.iter().rev() {
        let modified_ns = match entry.kind {
            EntryKind::Directory { modified_ns } => modified_ns,
            _ => None,
        };
        let attributes = RootAttributes {
            mode: entry.mode,
            owner: entry.owner,
            modified_ns,
        };
        set_directory_attributes(&target.join(&entry.path), attributes, restorer)?;
    }
    // The target is the backed-up directory itself: last, as its parent.
    // Only its owner may change its mode and time: a user restoring into
    // someone else's directory (a shared, writable one) leaves them be.
    if let Some(attributes) = manifest.root {
        use std::os::unix::fs::MetadataExt;
        let target_uid = std::fs::metadata(target).map_err(io_error(target))?.uid();
        if restorer.is_root() || target_uid == restorer.uid {
            set_directory_attributes(target, attributes, restorer)?;
        } else {
            tracing::warn!(
                target = %target.display(),
                "the restore target belongs to another user: its mode and time are left as \
                 they are"
            );
        }
    }
    Ok(())
}

/// Owner (as root), then time, then mode of a directory whose contents are
/// all in place, so no later step changes them.
fn set_directory_attributes(
    full: &Path,
    attributes: RootAttributes,
    restorer: Restorer,
) -> Result<(), RestoreError> {
    if let Some(owner) = restorer.owner_to_set(attributes.owner) {
        std::os::unix::fs::chown(full, Some(owner.uid), Some(owner.gid)).map_err(io_error(full))?;
    }
    if let Some(time) = attributes.modified_ns.and_then(modified_time) {
        let directory = std::fs::File::open(full).map_err(io_error(full))?;
        directory.set_modified(time).map_err(io_error(full))?;
    }
    let mode = restorer.mode_to_set(attributes.mode, attributes.owner);
    std::fs::set_permissions(full, std::fs::Permissions::from_mode(mode)).map_err(io_error(full))
}

fn prepare_target(target: &Path) -> Result<(), RestoreError> {
    match std::fs::read_dir(target) {
        Ok(mut children) => {
            if children.next().is_some() {
                return Err(RestoreError::TargetNotEmpty {
                    path: target.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(target).map_err(io_error(target))
        }
        Err(error) => Err(io_error(target)(error)),
    }
}

/// Fetches, verifies and writes the chunks of one file entry, in order, to
/// `writer`; checks the total against the recorded size. Usable on its own
/// to restore into memory (the simulator's oracle does).
pub async fn write_file<S: BackupService, W: Write>(
    service: &S,
    entry: &Entry,
    writer: &mut W,
    stats: &mut RestoreStats,
) -> Result<(), RestoreError> {
    let EntryKind::File {
        size_bytes, chunks, ..
    } = &entry.kind
    else {
        return Ok(());
    };
    let mut written_bytes = 0_u64;
    for fingerprint in chunks {
        let bad_chunk = |problem: String| RestoreError::BadChunk {
            path: entry.path.clone(),
            chunk: *fingerprint,
            problem,
        };
        let bytes = match service.get_chunk(*fingerprint).await {
            Ok(bytes) => bytes,
            Err(ServiceError::ChunkMissing { .. }) => {
                return Err(bad_chunk("is missing from the store".to_string()));
            }
            Err(ServiceError::ChunkDamaged { problem, .. }) => {
                return Err(bad_chunk(format!("is damaged: {problem}")));
            }
            Err(other) => return Err(other.into()),
        };
        // Trust no service: check the bytes against their name here too.
        let found = Fingerprint::of(&bytes);
        if found != *fingerprint {
            let problem = if bytes.is_empty() {
                ChunkProblem::ZeroLength
            } else {
                ChunkProblem::HashMismatch { found }
            };
            return Err(bad_chunk(format!("is damaged: {problem}")));
        }
        writer.write_all(&bytes).map_err(|error| RestoreError::Io {
            path: PathBuf::from(&entry.path),
            error,
        })?;
        written_bytes += bytes.len() as u64;
        stats.chunks_fetched += 1;
    }
    if written_bytes != *size_bytes {
        return Err(RestoreError::SizeMismatch {
            path: entry.path.clone(),
            expected_bytes: *size_bytes,
            found_bytes: written_bytes,
        });
    }
    stats.bytes_written += written_bytes;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One unreadable pack costing many files is described once, and the
    /// error names at most a bounded number of files, counting the rest.
    #[test]
    fn files_left_out_are_grouped_by_problem_and_counted_past_the_bound() {
        let pack_lost = "is damaged: its pack is unreadable: (a long description)";
        let mut unrestored: Vec<UnrestoredFile> = (0..30)
            .map(|index| UnrestoredFile {
                path: format!("dir/f{index}"),
                chunk: Some(Fingerprint::of(&[index as u8])),
                problem: pack_lost.to_string(),
            })
            .collect();
        unrestored.push(UnrestoredFile {
            path: "odd".to_string(),
            chunk: None,
            problem: "its chunks hold 1 bytes, the manifest says 2".to_string(),
        });
        let described = describe_unrestored(&unrestored);
        assert_eq!(described.matches("is damaged").count(), 1, "{described}");
        assert_eq!(described.matches("\"dir/f").count(), UNRESTORED_NAMED_MAX);
        assert!(
            described.contains(
                "and 10 more: the chunk is damaged: its pack is unreadable: (a long \
                 description); and 1 more file"
            ),
            "{described}"
        );
        let few = describe_unrestored(&unrestored[29..]);
        assert!(
            few.contains("\"dir/f29\" (chunk ") && few.contains("; \"odd\": its chunks hold"),
            "{few}"
        );
        assert!(!few.contains("more"), "{few}");
    }

    /// Set-id bits survive only where the owner does: restoring as root,
    /// or a file already the restoring user's, or one with no recorded
    /// owner.
    #[test]
    fn set_id_bits_are_dropped_when_the_owner_is_not_kept() {
        let (root, user) = (
            Restorer { uid: 0, gid: 0 },
            Restorer {
                uid: 1000,
                gid: 100,
            },
        );
        let own = Some(Owner {
            uid: user.uid,
            gid: user.gid,
        });
        let other = Some(Owner {
            uid: 1001,
            gid: 100,
        });
        assert_eq!(root.mode_to_set(0o6755, other), 0o6755);
        assert_eq!(user.mode_to_set(0o6755, other), 0o755);
        assert_eq!(user.mode_to_set(0o4750, own), 0o4750);
        assert_eq!(user.mode_to_set(0o2775, None), 0o2775);
    }

    /// Times before 1970 and after 2262 (where an i64 of nanoseconds ends)
    /// convert exactly; ones no clock holds are refused, not wrapped.
    #[test]
    fn modification_times_convert_exactly_or_not_at_all() {
        let epoch = std::time::UNIX_EPOCH;
        let far = 10_500_000_000_i128 * 1_000_000_000 + 1;
        let expected = epoch + std::time::Duration::new(10_500_000_000, 1);
        assert_eq!(modified_time(far), Some(expected));
        let before = epoch - std::time::Duration::new(1, 0) + std::time::Duration::new(0, 5);
        assert_eq!(modified_time(-999_999_995), Some(before));
        assert_eq!(modified_time(i128::MAX), None);
    }
}
