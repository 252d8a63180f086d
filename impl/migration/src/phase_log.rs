//! The coordinator's durable record: the phase, the backfill cursor and the counts so far.
//!
//! The one rule: **a phase change counts only once [`PhaseLog::save`] has returned.** The
//! coordinator saves before it tells writers about a new phase, so a restarted coordinator
//! never resumes in a phase older than one writers already followed. [`FilePhaseLog`] keeps
//! the record in a JSON file replaced atomically (temp file, fsync, rename, directory
//! fsync); the simulator supplies its own log over its faulty disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::{Phase, Variant};

/// Everything a restarted coordinator needs to carry on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub variant: Variant,
    pub phase: Phase,
    /// The last key the backfill copied; the next batch starts after it.
    pub backfill_cursor: Option<String>,
    pub backfill_keys_scanned: u64,
    pub backfill_keys_applied: u64,
    /// Backfill copies that Y already held newer (a dual write got there first).
    pub backfill_keys_stale: u64,
    pub verify_passes: u64,
    pub verify_keys_compared: u64,
    /// Mismatches every verify pass found, summed.
    pub verify_mismatches_found: u64,
    pub verify_mismatches_repaired: u64,
    /// Times a coordinator opened this record and carried on from it.
    pub resumes: u64,
}

impl PhaseRecord {
    /// The record of a migration that has just turned dual-writing on.
    pub fn start(variant: Variant) -> Self {
        PhaseRecord {
            variant,
            phase: Phase::DualWrite,
            backfill_cursor: None,
            backfill_keys_scanned: 0,
            backfill_keys_applied: 0,
            backfill_keys_stale: 0,
            verify_passes: 0,
            verify_keys_compared: 0,
            verify_mismatches_found: 0,
            verify_mismatches_repaired: 0,
            resumes: 0,
        }
    }
}

/// Why the record could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum PhaseLogError {
    #[error("phase log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "phase log {path} is not a migration record ({source}); expected the JSON this tool \
         writes — move it aside to start a new migration"
    )]
    Malformed {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Durable storage for one [`PhaseRecord`].
pub trait PhaseLog {
    /// The saved record, or `None` when no migration was ever recorded here.
    fn load(&self) -> Result<Option<PhaseRecord>, PhaseLogError>;
    /// Replaces the record; durable when this returns.
    fn save(&mut self, record: &PhaseRecord) -> Result<(), PhaseLogError>;
}

/// A [`PhaseLog`] in memory, shared between clones: a "crashed" coordinator's clone keeps the
/// record for the next one, as a disk would.
#[derive(Debug, Clone, Default)]
pub struct MemPhaseLog {
    record: Arc<Mutex<Option<PhaseRecord>>>,
    saves: Arc<Mutex<u64>>,
}

impl MemPhaseLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times a record was saved, across clones.
    pub fn save_count(&self) -> u64 {
        *self.saves.lock().expect("no panics while held")
    }
}

impl PhaseLog for MemPhaseLog {
    fn load(&self) -> Result<Option<PhaseRecord>, PhaseLogError> {
        Ok(self.record.lock().expect("no panics while held").clone())
    }

    fn save(&mut self, record: &PhaseRecord) -> Result<(), PhaseLogError> {
        *self.record.lock().expect("no panics while held") = Some(record.clone());
        *self.saves.lock().expect("no panics while held") += 1;
        Ok(())
    }
}

/// A [`PhaseLog`] in a JSON file, replaced atomically and durably on every save.
#[derive(Debug, Clone)]
pub struct FilePhaseLog {
    path: PathBuf,
}

impl FilePhaseLog {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FilePhaseLog { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(&self, source: std::io::Error) -> PhaseLogError {
        PhaseLogError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl PhaseLog for FilePhaseLog {
    fn load(&self) -> Result<Option<PhaseRecord>, PhaseLogError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.io_error(error)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| PhaseLogError::Malformed {
                path: self.path.clone(),
                source,
            })
    }

    fn save(&mut self, record: &PhaseRecord) -> Result<(), PhaseLogError> {
        let bytes = serde_json::to_vec_pretty(record).expect("a record always serializes");
        let mut temp_name = self.path.as_os_str().to_owned();
        temp_name.push(".tmp");
        let temp_path = PathBuf::from(temp_name);
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temp_path)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp_path, &self.path)?;
            // The rename is durable only once the directory entry is.
            let parent = self.path.parent().filter(|dir| !dir.as_os_str().is_empty());
            std::fs::File::open(parent.unwrap_or(Path::new(".")))?.sync_all()
        };
        write().map_err(|error| self.io_error(error))
    }
}
