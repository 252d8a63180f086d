//! A real directory as the base of the backup workload, read once before any run starts.
//!
//! The one idea: **the directory is read outside the simulator, and only once**. Real I/O
//! inside a run would break determinism, so the CLI reads the directory into memory
//! ([`DirectoryBase::read`]) and every seed derives its clients' versions from those bytes
//! with its own seeded edits: the same seed and the same directory give the same workload.
//!
//! Only regular files are taken (no symlinks, devices or sockets), in path order (each
//! directory's entries sorted by name). Two caps keep a seed fast: a file longer than
//! `file_bytes_max` contributes only its first `file_bytes_max` bytes, and reading stops
//! once `total_bytes_max` bytes are in. A file or folder that cannot be read is skipped and
//! named in [`DirectoryBase::skipped`], so the run's log says what it left out.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Skipped entries named one by one in the summary; the rest are counted.
const SKIPPED_NAMED_MAX: usize = 3;

/// How much of a directory a workload takes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DirectoryLimits {
    /// A longer file is cut to its first this-many bytes.
    pub file_bytes_max: usize,
    /// Reading stops once this many bytes are in.
    pub total_bytes_max: usize,
}

impl Default for DirectoryLimits {
    /// About twice the bytes of the seeded workload's pool: seeds stay in milliseconds.
    fn default() -> Self {
        Self {
            file_bytes_max: 8 * 1024,
            total_bytes_max: 32 * 1024,
        }
    }
}

/// Why a directory cannot be a workload's base.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(
        "--from-dir {path:?}: expected an existing directory, found none; pass the path of a \
         directory of files to back up"
    )]
    Missing {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "--from-dir {path:?}: expected a directory, found a {found}; pass the directory that \
         holds the files instead"
    )]
    NotADirectory { path: PathBuf, found: &'static str },
    #[error(
        "--from-dir {path:?}: expected at least one readable, non-empty regular file, found \
         none{skipped}; pass a directory with files in it"
    )]
    Empty { path: PathBuf, skipped: String },
}

/// A file or folder left out because it could not be read.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// The files of a directory, in memory. See the module doc.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectoryBase {
    /// The directory, made absolute so a printed replay command works from anywhere.
    pub root: PathBuf,
    pub limits: DirectoryLimits,
    /// Relative path (with `/`) and contents, in path order.
    pub files: Vec<(String, Vec<u8>)>,
    /// Files cut to `file_bytes_max`.
    pub truncated_count: usize,
    /// True when reading stopped at `total_bytes_max` with files still unread.
    pub stopped_at_cap: bool,
    /// Non-regular entries (symlinks, devices, sockets) passed over.
    pub not_regular_count: usize,
    pub skipped: Vec<Skipped>,
}

impl DirectoryBase {
    /// Reads `root` within `limits`. Fails when `root` is missing, not a directory, or
    /// yields no bytes at all.
    pub fn read(root: &Path, limits: DirectoryLimits) -> Result<Self, DirectoryError> {
        assert!(limits.file_bytes_max >= 1 && limits.total_bytes_max >= limits.file_bytes_max);
        let missing = |source| DirectoryError::Missing {
            path: root.to_path_buf(),
            source,
        };
        let metadata = std::fs::metadata(root).map_err(missing)?;
        if !metadata.is_dir() {
            let found = if metadata.is_file() {
                "regular file"
            } else {
                "special file"
            };
            let path = root.to_path_buf();
            return Err(DirectoryError::NotADirectory { path, found });
        }
        let root = std::fs::canonicalize(root).map_err(missing)?;
        let mut base = Self {
            root: root.clone(),
            limits,
            files: Vec::new(),
            truncated_count: 0,
            stopped_at_cap: false,
            not_regular_count: 0,
            skipped: Vec::new(),
        };
        base.walk(&root, "");
        if base.total_bytes() == 0 {
            let skipped = if base.skipped.is_empty() {
                String::new()
            } else {
                format!(" (skipped: {})", base.skipped_summary())
            };
            return Err(DirectoryError::Empty {
                path: root,
                skipped,
            });
        }
        assert!(base.total_bytes() <= limits.total_bytes_max);
        Ok(base)
    }

    /// Visits `folder` (relative path `prefix`) depth first, entries sorted by name.
    fn walk(&mut self, folder: &Path, prefix: &str) {
        let listing = std::fs::read_dir(folder).and_then(|entries| entries.collect());
        let mut entries: Vec<std::fs::DirEntry> = match listing {
            Ok(entries) => entries,
            Err(error) => return self.skip(prefix, format!("cannot list: {error}")),
        };
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            if self.stopped_at_cap {
                return;
            }
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                let shown = name.to_string_lossy().into_owned();
                self.skip(&join(prefix, &shown), "the name is not UTF-8".to_string());
                continue;
            };
            let relative = join(prefix, name);
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => self.walk(&entry.path(), &relative),
                Ok(kind) if kind.is_file() => self.take_file(&entry.path(), relative),
                Ok(_) => self.not_regular_count += 1,
                Err(error) => self.skip(&relative, format!("cannot stat: {error}")),
            }
        }
    }

    /// Reads at most what both caps allow of one regular file.
    fn take_file(&mut self, path: &Path, relative: String) {
        let room_bytes = self.limits.total_bytes_max - self.total_bytes();
        let wanted_bytes = self.limits.file_bytes_max.min(room_bytes);
        let mut contents = Vec::new();
        // One byte more than wanted tells a file that was cut from one that fit.
        let read = std::fs::File::open(path).and_then(|file| {
            file.take(wanted_bytes as u64 + 1)
                .read_to_end(&mut contents)
        });
        if let Err(error) = read {
            return self.skip(&relative, format!("cannot read: {error}"));
        }
        if contents.len() > wanted_bytes {
            contents.truncate(wanted_bytes);
            if wanted_bytes < self.limits.file_bytes_max {
                self.stopped_at_cap = true;
            } else {
                self.truncated_count += 1;
            }
        }
        self.files.push((relative, contents));
        if self.total_bytes() == self.limits.total_bytes_max {
            self.stopped_at_cap = true;
        }
    }

    fn skip(&mut self, path: &str, reason: String) {
        let path = if path.is_empty() { "." } else { path }.to_string();
        self.skipped.push(Skipped { path, reason });
    }

    pub fn total_bytes(&self) -> usize {
        self.files.iter().map(|(_, contents)| contents.len()).sum()
    }

    fn skipped_summary(&self) -> String {
        let mut named: Vec<String> = self
            .skipped
            .iter()
            .take(SKIPPED_NAMED_MAX)
            .map(|skipped| format!("{}: {}", skipped.path, skipped.reason))
            .collect();
        if self.skipped.len() > SKIPPED_NAMED_MAX {
            named.push(format!("{} more", self.skipped.len() - SKIPPED_NAMED_MAX));
        }
        named.join("; ")
    }

    /// The settings a run logs: which directory and how much of it.
    pub fn settings(&self) -> String {
        format!(
            "workload_dir={:?} workload_dir_files={} workload_dir_bytes={}",
            self.root,
            self.files.len(),
            self.total_bytes()
        )
    }

    /// The arguments a replay command needs to rebuild this workload.
    pub fn replay_flags(&self) -> String {
        format!(" --from-dir {}", shell_quoted(&self.root.to_string_lossy()))
    }
}

impl fmt::Display for DirectoryBase {
    /// One line for the operator: what was read and what was left out.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "read {} file(s), {} bytes from {} (caps: {} bytes per file, {} in total); \
             {} cut to the per-file cap",
            self.files.len(),
            self.total_bytes(),
            self.root.display(),
            self.limits.file_bytes_max,
            self.limits.total_bytes_max,
            self.truncated_count
        )?;
        if self.stopped_at_cap {
            write!(
                formatter,
                "; stopped at the total cap, later files left out"
            )?;
        }
        if self.not_regular_count > 0 {
            let count = self.not_regular_count;
            write!(
                formatter,
                "; {count} symlink(s) or special file(s) passed over"
            )?;
        }
        if !self.skipped.is_empty() {
            let count = self.skipped.len();
            write!(
                formatter,
                "; skipped {count} unreadable: {}",
                self.skipped_summary()
            )?;
        }
        Ok(())
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// `text` as one POSIX shell word: unchanged when plain, else single-quoted.
fn shell_quoted(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, relative: &str, contents: &[u8]) {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    #[test]
    fn regular_files_are_read_in_path_order_within_both_caps() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "b/inner.txt", &[2; 100]);
        write(dir.path(), "a.txt", &[1; 300]);
        write(dir.path(), "c.bin", &[3; 1000]);
        write(dir.path(), "d.bin", &[4; 10]);
        let limits = DirectoryLimits {
            file_bytes_max: 256,
            total_bytes_max: 600,
        };
        let base = DirectoryBase::read(dir.path(), limits).unwrap();
        let names: Vec<&str> = base.files.iter().map(|(name, _)| name.as_str()).collect();
        // a.txt is cut to 256; c.bin gets the 244 bytes left; d.bin is never read.
        assert_eq!(names, ["a.txt", "b/inner.txt", "c.bin"]);
        assert_eq!(base.files[0].1, vec![1; 256]);
        assert_eq!(base.files[2].1, vec![3; 244]);
        assert_eq!((base.truncated_count, base.total_bytes()), (1, 600));
        assert!(base.stopped_at_cap);
        assert!(base.to_string().contains("later files left out"), "{base}");
        assert_eq!(base, DirectoryBase::read(dir.path(), limits).unwrap());
    }

    #[test]
    fn symlinks_are_passed_over_and_named_in_the_summary() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "real", b"bytes");
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        let base = DirectoryBase::read(dir.path(), DirectoryLimits::default()).unwrap();
        assert_eq!(base.files, vec![("real".to_string(), b"bytes".to_vec())]);
        assert_eq!(base.not_regular_count, 1);
        assert!(base.to_string().contains("1 symlink(s)"), "{base}");
    }

    #[test]
    fn a_missing_empty_or_non_directory_path_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let limits = DirectoryLimits::default();
        let missing = DirectoryBase::read(&dir.path().join("nope"), limits).unwrap_err();
        assert!(
            matches!(missing, DirectoryError::Missing { .. }),
            "{missing}"
        );
        assert!(
            missing
                .to_string()
                .contains("expected an existing directory")
        );
        let empty = DirectoryBase::read(dir.path(), limits).unwrap_err();
        assert!(matches!(empty, DirectoryError::Empty { .. }), "{empty}");
        write(dir.path(), "file", b"x");
        let file = DirectoryBase::read(&dir.path().join("file"), limits).unwrap_err();
        assert!(file.to_string().contains("found a regular file"), "{file}");
    }

    #[test]
    fn replay_flags_quote_a_path_the_shell_would_split() {
        assert_eq!(shell_quoted("/tmp/plain-dir"), "/tmp/plain-dir");
        assert_eq!(shell_quoted("/tmp/it's here"), r"'/tmp/it'\''s here'");
    }
}
