//! Consistent hashing of fingerprints over index shards.
//!
//! Each shard owns many points (virtual nodes) on a 64-bit ring; a
//! fingerprint belongs to the first point at or after its position. Adding a
//! shard only takes over the arcs in front of its new points, so about
//! 1/(N+1) of the fingerprints move, where `fingerprint % N` would move most.

use sha2::{Digest, Sha256};

use crate::Fingerprint;

/// Index of an index shard, `0..shard_count`.
pub type ShardIndex = usize;

/// A consistent-hash ring of `shard_count` shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// (position, shard), sorted by position.
    points: Vec<(u64, ShardIndex)>,
    shard_count: usize,
}

impl Ring {
    /// Virtual nodes per shard by default: enough that each shard's share of
    /// the ring stays within a few percent of 1/N.
    pub const DEFAULT_VNODES_PER_SHARD: usize = 160;

    /// A ring of `shard_count` shards with `vnodes_per_shard` points each.
    /// The points depend only on (shard, vnode), so shard k keeps its points
    /// when shards are added.
    pub fn new(shard_count: usize, vnodes_per_shard: usize) -> Self {
        assert!(shard_count >= 1, "a ring needs at least one shard");
        assert!(vnodes_per_shard >= 1, "a shard needs at least one point");
        let mut points = Vec::with_capacity(shard_count * vnodes_per_shard);
        for shard in 0..shard_count {
            for vnode in 0..vnodes_per_shard {
                let mut hasher = Sha256::new();
                hasher.update(b"crosscheck-ring");
                hasher.update((shard as u64).to_be_bytes());
                hasher.update((vnode as u64).to_be_bytes());
                let digest = hasher.finalize();
                let position = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
                points.push((position, shard));
            }
        }
        points.sort_unstable();
        Self {
            points,
            shard_count,
        }
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// The shard that owns `fingerprint`.
    pub fn shard_of(&self, fingerprint: &Fingerprint) -> ShardIndex {
        let position = fingerprint.prefix_u64();
        let index = self.points.partition_point(|(point, _)| *point < position);
        // Past the last point the ring wraps to the first.
        self.points[index % self.points.len()].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(count: u64) -> Vec<Fingerprint> {
        (0..count)
            .map(|index| Fingerprint::of(&index.to_le_bytes()))
            .collect()
    }

    #[test]
    fn adding_a_shard_moves_about_one_in_n_plus_one() {
        let fingerprints = sample(40_000);
        for shard_count in [3_usize, 4, 8] {
            let before = Ring::new(shard_count, Ring::DEFAULT_VNODES_PER_SHARD);
            let after = Ring::new(shard_count + 1, Ring::DEFAULT_VNODES_PER_SHARD);
            let moved = fingerprints
                .iter()
                .filter(|fingerprint| before.shard_of(fingerprint) != after.shard_of(fingerprint))
                .count();
            let moved_fraction = moved as f64 / fingerprints.len() as f64;
            let ideal_fraction = 1.0 / (shard_count + 1) as f64;
            assert!(
                (moved_fraction - ideal_fraction).abs() < 0.35 * ideal_fraction,
                "N={shard_count}: moved {moved_fraction:.3}, ideal {ideal_fraction:.3}"
            );
            // Whatever moved, moved to the new shard: nothing shuffles between old ones.
            assert!(fingerprints.iter().all(|fingerprint| {
                let shard = after.shard_of(fingerprint);
                shard == shard_count || shard == before.shard_of(fingerprint)
            }));
            let modulo_moved = fingerprints
                .iter()
                .filter(|fingerprint| {
                    let position = fingerprint.prefix_u64();
                    position % shard_count as u64 != position % (shard_count as u64 + 1)
                })
                .count();
            assert!(modulo_moved as f64 / fingerprints.len() as f64 > 0.6);
        }
    }

    #[test]
    fn shards_get_near_equal_shares() {
        let ring = Ring::new(4, Ring::DEFAULT_VNODES_PER_SHARD);
        let mut counts = [0_usize; 4];
        for fingerprint in sample(40_000) {
            counts[ring.shard_of(&fingerprint)] += 1;
        }
        assert!(
            counts.iter().all(|count| (7_000..13_000).contains(count)),
            "{counts:?}"
        );
    }
}
