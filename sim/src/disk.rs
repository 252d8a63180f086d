//! A simulated disk with a crash model: what was fsynced survives, the rest is a coin toss.
//!
//! madsim's own file system keeps unsynced writes across a kill, so it cannot test crash
//! safety. [`SimDisk`] implements the backup code's [`Disk`] with two layers per node:
//! the *visible* state (what reads see now) and the *durable* state (what a power cut
//! leaves). File contents become durable at [`Disk::fsync`]; creations, renames and
//! removals become durable at [`Disk::fsync_dir`] of their directory. At [`SimDisk::crash`]
//! every pending operation is independently kept or lost, an unsynced write may be torn
//! (only a prefix kept), and a stored file may suffer a silent bit flip.
//!
//! The one idea to hold: **the disk outlives the node**. A `SimDisk` is a cheap handle to
//! shared state; the harness keeps one per server, hands a clone to each incarnation of the
//! node, and calls `crash` when it kills the node. Every random choice comes from the
//! disk's own ChaCha stream, seeded by the run's seed and the node's index, so a seed
//! replays bit for bit as long as the calls arrive in the same order (madsim guarantees it).

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use backup::disk::{Disk, parent_dir};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The fault rates of one disk, drawn per run by the swarm configuration.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DiskFaults {
    /// Probability that each pending (unsynced) operation survives a crash.
    pub pending_keep_rate: f64,
    /// Probability that an unsynced file write that is not simply kept is torn to a
    /// prefix rather than lost whole.
    pub torn_write_rate: f64,
    /// Probability, at each crash, that one durable file gets one bit flipped.
    pub corruption_rate: f64,
    /// Probability that a write, read, rename or remove fails with an I/O error.
    pub io_error_rate: f64,
    /// Probability that an fsync or directory fsync fails (and makes nothing durable).
    pub fsync_error_rate: f64,
    /// A known bug, not a fault: fsync returns success without making anything durable,
    /// as if the code above acknowledged before syncing.
    pub fsync_ignored: bool,
}

impl DiskFaults {
    /// A disk that never fails and loses every unsynced operation at a crash.
    pub fn none() -> Self {
        Self {
            pending_keep_rate: 0.0,
            torn_write_rate: 0.0,
            corruption_rate: 0.0,
            io_error_rate: 0.0,
            fsync_error_rate: 0.0,
            fsync_ignored: false,
        }
    }
}

/// A file's identity, so that a rename carries the same contents to a new name.
type InodeId = u64;

#[derive(Debug, Clone)]
struct Inode {
    /// What reads see.
    visible: Vec<u8>,
    /// What a crash leaves when the unsynced write is lost; `None` when never synced.
    durable: Option<Vec<u8>>,
    /// True when `visible` differs from `durable` (written since the last fsync).
    dirty: bool,
}

/// A namespace change not yet made durable by a directory fsync.
#[derive(Debug, Clone, PartialEq)]
enum PendingOp {
    Create {
        path: String,
        inode: InodeId,
    },
    Rename {
        from: String,
        to: String,
        inode: InodeId,
    },
    Remove {
        path: String,
    },
}

impl PendingOp {
    /// True when fsyncing `dir` makes this operation durable.
    fn is_in_dir(&self, dir: &str) -> bool {
        match self {
            PendingOp::Create { path, .. } | PendingOp::Remove { path } => parent_dir(path) == dir,
            PendingOp::Rename { from, to, .. } => parent_dir(to) == dir || parent_dir(from) == dir,
        }
    }

    fn apply(&self, names: &mut BTreeMap<String, InodeId>) {
        match self {
            PendingOp::Create { path, inode } => {
                names.insert(path.clone(), *inode);
            }
            PendingOp::Rename { from, to, inode } => {
                names.remove(from);
                names.insert(to.clone(), *inode);
            }
            PendingOp::Remove { path } => {
                names.remove(path);
            }
        }
    }
}

/// What one crash did, for the trace and for oracles that must tell injected corruption
/// from a bug.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CrashReport {
    pub pending_ops_kept: usize,
    pub pending_ops_lost: usize,
    pub writes_kept: usize,
    pub writes_lost: usize,
    pub writes_torn: usize,
    /// The path and bit index of a silent bit flip, if one happened.
    pub corrupted: Option<(String, usize)>,
}

#[derive(Debug)]
struct State {
    faults: DiskFaults,
    rng: ChaCha8Rng,
    next_inode: InodeId,
    inodes: BTreeMap<InodeId, Inode>,
    /// Names as reads see them.
    visible_names: BTreeMap<String, InodeId>,
    /// Names as a crash would leave them before pending operations are considered.
    durable_names: BTreeMap<String, InodeId>,
    pending: Vec<PendingOp>,
    /// Every path that has had a bit flipped at rest, ever.
    corrupted_paths: Vec<String>,
    crash_count: u64,
}

/// A simulated per-node disk; clones share one state. See the module doc.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

fn injected(kind: &str) -> io::Error {
    io::Error::other(format!("injected simulated {kind} error"))
}

fn not_found(path: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("simulated disk has no file {path:?}"),
    )
}

fn check_path(path: &str) -> io::Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("disk path {path:?} must be relative, non-empty and free of '.' and '..'"),
        ));
    }
    Ok(())
}

impl SimDisk {
    /// An empty disk whose random choices come from `seed`.
    pub fn new(seed: u64, faults: DiskFaults) -> Self {
        assert!((0.0..=1.0).contains(&faults.pending_keep_rate));
        assert!((0.0..=1.0).contains(&faults.io_error_rate));
        let state = State {
            faults,
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_inode: 1,
            inodes: BTreeMap::new(),
            visible_names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            pending: Vec::new(),
            corrupted_paths: Vec::new(),
            crash_count: 0,
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is already a failed run; the state is still the
        // best evidence we have, so keep using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the fault rates, e.g. to stop injecting errors in the liveness phase.
    pub fn set_faults(&self, faults: DiskFaults) {
        self.lock().faults = faults;
    }

    pub fn faults(&self) -> DiskFaults {
        self.lock().faults
    }

    /// Paths that have had a bit flipped at rest by [`SimDisk::crash`].
    pub fn corrupted_paths(&self) -> Vec<String> {
        self.lock().corrupted_paths.clone()
    }

    pub fn crash_count(&self) -> u64 {
        self.lock().crash_count
    }

    /// A separate disk holding only what is durable now, as a crash that kept no pending
    /// operation would leave it; this disk is untouched. Oracles inspect the copy, so
    /// checking durability never changes the run.
    pub fn durable_copy(&self) -> SimDisk {
        let state = self.lock();
        let inodes = state
            .durable_names
            .values()
            .map(|id| {
                let contents = state.inodes[id].durable.clone().unwrap_or_default();
                let inode = Inode {
                    visible: contents.clone(),
                    durable: Some(contents),
                    dirty: false,
                };
                (*id, inode)
            })
            .collect();
        let copy = State {
            faults: DiskFaults::none(),
            rng: ChaCha8Rng::seed_from_u64(0),
            next_inode: state.next_inode,
            inodes,
            visible_names: state.durable_names.clone(),
            durable_names: state.durable_names.clone(),
            pending: Vec::new(),
            corrupted_paths: state.corrupted_paths.clone(),
            crash_count: state.crash_count,
        };
        SimDisk {
            state: Arc::new(Mutex::new(copy)),
        }
    }

    /// The power cut: decides the fate of every pending operation and unsynced write,
    /// maybe flips a bit at rest, and leaves visible state equal to durable state.
    pub fn crash(&self) -> CrashReport {
        let mut state = self.lock();
        let mut report = CrashReport::default();
        state.crash_count += 1;
        let pending = std::mem::take(&mut state.pending);
        let keep_rate = state.faults.pending_keep_rate;
        for op in pending {
            if state.rng.random_bool(keep_rate) {
                op.apply(&mut state.durable_names);
                report.pending_ops_kept += 1;
            } else {
                report.pending_ops_lost += 1;
            }
        }
        settle_contents(&mut state, &mut report);
        let names = state.durable_names.clone();
        state.visible_names = names;
        collect_orphans(&mut state);
        maybe_corrupt(&mut state, &mut report);
        report
    }

    fn roll(state: &mut State, rate: f64) -> bool {
        rate > 0.0 && state.rng.random_bool(rate)
    }
}

/// Every dirty inode keeps its unsynced write, loses it, or keeps a torn prefix of it.
fn settle_contents(state: &mut State, report: &mut CrashReport) {
    let faults = state.faults;
    let ids: Vec<InodeId> = state.inodes.keys().copied().collect();
    for id in ids {
        if !state.inodes[&id].dirty {
            continue;
        }
        let keep = state.rng.random_bool(faults.pending_keep_rate);
        let torn = !keep && SimDisk::roll(state, faults.torn_write_rate);
        let prefix_bytes = {
            let len = state.inodes[&id].visible.len();
            if torn {
                state.rng.random_range(0..=len)
            } else {
                0
            }
        };
        let inode = state.inodes.get_mut(&id).expect("id was listed");
        if keep {
            report.writes_kept += 1;
        } else if torn {
            inode.visible.truncate(prefix_bytes);
            report.writes_torn += 1;
        } else {
            inode.visible = inode.durable.clone().unwrap_or_default();
            report.writes_lost += 1;
        }
        inode.durable = Some(inode.visible.clone());
        inode.dirty = false;
    }
}

/// Inodes no durable name points to are gone after a crash.
fn collect_orphans(state: &mut State) {
    let live: std::collections::BTreeSet<InodeId> = state.durable_names.values().copied().collect();
    state.inodes.retain(|id, _| live.contains(id));
}

fn maybe_corrupt(state: &mut State, report: &mut CrashReport) {
    let rate = state.faults.corruption_rate;
    if state.durable_names.is_empty() || !SimDisk::roll(state, rate) {
        return;
    }
    let index = state.rng.random_range(0..state.durable_names.len());
    let (path, id) = state
        .durable_names
        .iter()
        .nth(index)
        .map(|(p, i)| (p.clone(), *i))
        .unwrap();
    let length_bits = state.inodes[&id].visible.len() * 8;
    if length_bits == 0 {
        return;
    }
    let bit = state.rng.random_range(0..length_bits);
    let inode = state
        .inodes
        .get_mut(&id)
        .expect("durable name has an inode");
    inode.visible[bit / 8] ^= 1 << (bit % 8);
    inode.durable = Some(inode.visible.clone());
    state.corrupted_paths.push(path.clone());
    report.corrupted = Some((path, bit));
}

impl Disk for SimDisk {
    fn write(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        check_path(path)?;
        let mut state = self.lock();
        let rate = state.faults.io_error_rate;
        if SimDisk::roll(&mut state, rate) {
            return Err(injected("write"));
        }
        if let Some(&id) = state.visible_names.get(path) {
            let inode = state
                .inodes
                .get_mut(&id)
                .expect("visible name has an inode");
            inode.visible = bytes.to_vec();
            inode.dirty = true;
            return Ok(());
        }
        let id = state.next_inode;
        state.next_inode += 1;
        state.inodes.insert(
            id,
            Inode {
                visible: bytes.to_vec(),
                durable: None,
                dirty: true,
            },
        );
        state.visible_names.insert(path.to_string(), id);
        state.pending.push(PendingOp::Create {
            path: path.to_string(),
            inode: id,
        });
        Ok(())
    }

    fn fsync(&self, path: &str) -> io::Result<()> {
        check_path(path)?;
        let mut state = self.lock();
        let rate = state.faults.fsync_error_rate;
        if SimDisk::roll(&mut state, rate) {
            return Err(injected("fsync"));
        }
        let id = *state
            .visible_names
            .get(path)
            .ok_or_else(|| not_found(path))?;
        if state.faults.fsync_ignored {
            return Ok(());
        }
        let inode = state
            .inodes
            .get_mut(&id)
            .expect("visible name has an inode");
        inode.durable = Some(inode.visible.clone());
        inode.dirty = false;
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_path(from)?;
        check_path(to)?;
        let mut state = self.lock();
        let rate = state.faults.io_error_rate;
        if SimDisk::roll(&mut state, rate) {
            return Err(injected("rename"));
        }
        let id = state
            .visible_names
            .remove(from)
            .ok_or_else(|| not_found(from))?;
        state.visible_names.insert(to.to_string(), id);
        let op = PendingOp::Rename {
            from: from.to_string(),
            to: to.to_string(),
            inode: id,
        };
        state.pending.push(op);
        Ok(())
    }

    fn fsync_dir(&self, dir: &str) -> io::Result<()> {
        let mut state = self.lock();
        let rate = state.faults.fsync_error_rate;
        if SimDisk::roll(&mut state, rate) {
            return Err(injected("directory fsync"));
        }
        if state.faults.fsync_ignored {
            return Ok(());
        }
        let pending = std::mem::take(&mut state.pending);
        let (now_durable, still_pending): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|op| op.is_in_dir(dir));
        for op in &now_durable {
            op.apply(&mut state.durable_names);
        }
        state.pending = still_pending;
        Ok(())
    }

    fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        check_path(path)?;
        let mut state = self.lock();
        let rate = state.faults.io_error_rate;
        if SimDisk::roll(&mut state, rate) {
            return Err(injected("read"));
        }
        let id = *state
            .visible_names
            .get(path)
            .ok_or_else(|| not_found(path))?;
        Ok(state.inodes[&id].visible.clone())
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let state = self.lock();
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut names: Vec<String> = state
            .visible_names
            .range(prefix.clone()..)
            .take_while(|(path, _)| path.starts_with(&prefix))
            .map(|(path, _)| {
                path[prefix.len()..]
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        check_path(path)?;
        let mut state = self.lock();
        let rate = state.faults.io_error_rate;
        if SimDisk::roll(&mut state, rate) {
            return Err(injected("remove"));
        }
        state
            .visible_names
            .remove(path)
            .ok_or_else(|| not_found(path))?;
        state.pending.push(PendingOp::Remove {
            path: path.to_string(),
        });
        Ok(())
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        check_path(path)?;
        let state = self.lock();
        let prefix = format!("{path}/");
        let is_dir = state
            .visible_names
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(p, _)| p.starts_with(&prefix));
        Ok(state.visible_names.contains_key(path) || is_dir)
    }
}

#[cfg(test)]
mod tests;
