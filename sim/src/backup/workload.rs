//! The backup workload: versions of file trees per client, drawn from the seed.
//!
//! Clients start from trees that share files out of one common pool, so their chunks
//! overlap and they race on the same fingerprints at the index — the races the
//! concurrency modes exist for. Between versions each file may get insertions, deletions
//! and overwrites, and files come and go. Sizes are small (a few KiB, chunks of ~256 B)
//! so a seed stays fast while still having dozens of chunks. Everything comes from a
//! ChaCha stream of the run's seed, generated before the simulation starts.
//!
//! With a [`DirectoryBase`] (a real directory, read before any run), the directory's files
//! are the common pool instead: each client starts from a seeded subset of them under
//! their real paths, and the same seeded edits make the later versions. The seed and the
//! directory together fix every byte.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::directory::DirectoryBase;

/// Separates the workload's random stream from the fault config's.
const WORKLOAD_STREAM: u64 = 0x574f_524b_4c4f_4144;

/// One version of a client's tree: relative path to contents.
pub type Tree = BTreeMap<String, Vec<u8>>;

/// The shape of a workload.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct WorkloadShape {
    pub client_count: usize,
    pub versions_per_client: usize,
    /// Files in the common pool that clients start from.
    pub shared_file_count: usize,
    pub file_size_bytes_max: usize,
}

impl Default for WorkloadShape {
    fn default() -> Self {
        Self {
            client_count: 3,
            versions_per_client: 3,
            shared_file_count: 4,
            file_size_bytes_max: 6 * 1024,
        }
    }
}

/// Every version of every client's tree; `versions[client][version]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub versions: Vec<Vec<Tree>>,
}

impl Workload {
    /// The workload of `seed`: the same seed always gives the same bytes.
    pub fn generate(seed: u64, shape: WorkloadShape) -> Self {
        Self::generate_from(seed, shape, None)
    }

    /// The workload of `seed` over `base` when given, else over a seeded pool: the same
    /// seed and the same base always give the same bytes.
    pub fn generate_from(seed: u64, shape: WorkloadShape, base: Option<&DirectoryBase>) -> Self {
        assert!(shape.client_count >= 1 && shape.versions_per_client >= 1);
        assert!(shape.file_size_bytes_max >= 64);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ WORKLOAD_STREAM);
        let pool: Vec<Vec<u8>> = match base {
            Some(base) => base
                .files
                .iter()
                .map(|(_, contents)| contents.clone())
                .collect(),
            None => (0..shape.shared_file_count)
                .map(|_| random_bytes(&mut rng, shape.file_size_bytes_max))
                .collect(),
        };
        let versions = (0..shape.client_count)
            .map(|client| {
                let mut tree = match base {
                    Some(base) => tree_from_directory(&mut rng, base),
                    None => initial_tree(&mut rng, &pool, client, shape.file_size_bytes_max),
                };
                let mut versions = vec![tree.clone()];
                for version in 1..shape.versions_per_client {
                    mutate(
                        &mut rng,
                        &mut tree,
                        &pool,
                        version,
                        shape.file_size_bytes_max,
                    );
                    versions.push(tree.clone());
                }
                versions
            })
            .collect();
        Self { versions }
    }

    pub fn total_bytes(&self) -> usize {
        let trees = self.versions.iter().flatten();
        trees.flat_map(|tree| tree.values()).map(Vec::len).sum()
    }
}

fn random_bytes(rng: &mut ChaCha8Rng, size_bytes_max: usize) -> Vec<u8> {
    let length = rng.random_range(size_bytes_max / 8..=size_bytes_max);
    let mut bytes = vec![0u8; length];
    rng.fill(&mut bytes[..]);
    bytes
}

/// Some pool files (shared with other clients) and one file of the client's own.
fn initial_tree(rng: &mut ChaCha8Rng, pool: &[Vec<u8>], client: usize, size_max: usize) -> Tree {
    let mut tree = Tree::new();
    for (index, contents) in pool.iter().enumerate() {
        if rng.random_bool(0.6) {
            tree.insert(format!("shared/{index}"), contents.clone());
        }
    }
    tree.insert(format!("own/client{client}"), random_bytes(rng, size_max));
    tree
}

/// Where a directory's files sit in a client's tree: apart from the `added/` files that
/// [`mutate`] creates, so a real file named `added` cannot collide with that folder.
const DIRECTORY_PREFIX: &str = "dir";

/// A seeded subset (at least one) of the directory's files, under their own paths.
fn tree_from_directory(rng: &mut ChaCha8Rng, base: &DirectoryBase) -> Tree {
    assert!(
        !base.files.is_empty(),
        "DirectoryBase::read refuses an empty directory"
    );
    let mut tree = Tree::new();
    for (path, contents) in &base.files {
        if rng.random_bool(0.6) {
            tree.insert(format!("{DIRECTORY_PREFIX}/{path}"), contents.clone());
        }
    }
    if tree.is_empty() {
        let (path, contents) = &base.files[rng.random_range(0..base.files.len())];
        tree.insert(format!("{DIRECTORY_PREFIX}/{path}"), contents.clone());
    }
    tree
}

/// One version's edits: per file an insertion, a deletion or an overwrite (or nothing);
/// sometimes a file is dropped, and sometimes a pool file is added.
fn mutate(rng: &mut ChaCha8Rng, tree: &mut Tree, pool: &[Vec<u8>], version: usize, max: usize) {
    let before = tree.clone();
    for contents in tree.values_mut() {
        match rng.random_range(0..4) {
            0 => {
                let at = rng.random_range(0..=contents.len());
                let inserted = random_bytes(rng, 512);
                contents.splice(at..at, inserted);
            }
            1 if !contents.is_empty() => {
                let start = rng.random_range(0..contents.len());
                let end = rng.random_range(start..=contents.len().min(start + 512));
                contents.drain(start..end);
            }
            2 if !contents.is_empty() => {
                let start = rng.random_range(0..contents.len());
                let end = contents.len().min(start + rng.random_range(1..256));
                rng.fill(&mut contents[start..end]);
            }
            _ => {}
        }
    }
    if tree.len() > 1 && rng.random_bool(0.3) {
        let victim = tree
            .keys()
            .nth(rng.random_range(0..tree.len()))
            .cloned()
            .unwrap();
        tree.remove(&victim);
    }
    if rng.random_bool(0.5) {
        let index = rng.random_range(0..pool.len().max(1));
        let contents = pool
            .get(index)
            .cloned()
            .unwrap_or_else(|| random_bytes(rng, max));
        tree.insert(format!("added/v{version}-{index}"), contents);
    }
    if *tree == before {
        // Every version must differ, or a "new version" exercises nothing.
        tree.insert(format!("added/v{version}-fresh"), random_bytes(rng, max));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_workload_and_seeds_differ() {
        let shape = WorkloadShape::default();
        assert_eq!(Workload::generate(3, shape), Workload::generate(3, shape));
        assert_ne!(Workload::generate(3, shape), Workload::generate(4, shape));
    }

    #[test]
    fn a_seed_and_a_directory_give_the_same_workload_built_from_its_files() {
        use super::super::directory::DirectoryLimits;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/readme.md"), vec![b'r'; 3000]).unwrap();
        std::fs::write(dir.path().join("main.rs"), vec![b'm'; 5000]).unwrap();
        let base = DirectoryBase::read(dir.path(), DirectoryLimits::default()).unwrap();
        let shape = WorkloadShape::default();
        let first = Workload::generate_from(9, shape, Some(&base));
        let reread = DirectoryBase::read(dir.path(), DirectoryLimits::default()).unwrap();
        assert_eq!(first, Workload::generate_from(9, shape, Some(&reread)));
        assert_ne!(first, Workload::generate_from(10, shape, Some(&base)));
        assert_ne!(first, Workload::generate(9, shape));
        for versions in &first.versions {
            let start = &versions[0];
            assert!(!start.is_empty());
            for (path, contents) in start {
                let original = path.strip_prefix("dir/").expect("only directory files");
                let (_, read) = base.files.iter().find(|(p, _)| p == original).unwrap();
                assert_eq!(contents, read, "{path} starts as the directory's bytes");
            }
            assert_ne!(versions[0], versions[1], "a version changed nothing");
        }
    }

    #[test]
    fn clients_overlap_and_versions_change() {
        let shape = WorkloadShape::default();
        let mut overlapping_seeds = 0;
        for seed in 0..50 {
            let workload = Workload::generate(seed, shape);
            assert_eq!(workload.versions.len(), shape.client_count);
            for versions in &workload.versions {
                assert_eq!(versions.len(), shape.versions_per_client);
                assert_ne!(
                    versions[0], versions[1],
                    "seed {seed}: a version changed nothing"
                );
            }
            let first = &workload.versions[0][0];
            let shared_with_others = workload.versions[1..]
                .iter()
                .any(|versions| versions[0].values().any(|c| first.values().any(|f| f == c)));
            overlapping_seeds += usize::from(shared_with_others);
        }
        assert!(
            overlapping_seeds > 35,
            "clients share files in {overlapping_seeds}/50 seeds"
        );
    }
}
