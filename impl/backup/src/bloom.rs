//! A Bloom filter of the fingerprints an index holds, shipped to clients.
//!
//! "Certainly absent" lets a client upload a new chunk without asking the
//! index; "maybe present" always asks. The filter only ever errs towards
//! "maybe", so a stale or saturated filter costs lookups or a duplicate
//! upload (idempotent), never a chunk skipped that the store lacks.

use crate::Fingerprint;

/// A fixed-size Bloom filter over fingerprints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BloomFilter {
    bit_words: Vec<u64>,
    bit_count: u64,
    hash_count: u32,
    item_count: u64,
}

impl BloomFilter {
    /// A filter sized for `capacity_items` at a false-positive rate of about
    /// `false_positive_rate` (m = -n ln p / ln²2 bits, k = m/n ln 2 probes).
    pub fn with_capacity(capacity_items: usize, false_positive_rate: f64) -> Self {
        assert!(false_positive_rate > 0.0 && false_positive_rate < 1.0);
        let capacity_items = capacity_items.max(64) as f64;
        let ln2 = std::f64::consts::LN_2;
        let bit_count = (-capacity_items * false_positive_rate.ln() / (ln2 * ln2)).ceil() as u64;
        let bit_count = bit_count.max(64);
        let hash_count = ((bit_count as f64 / capacity_items) * ln2)
            .round()
            .clamp(1.0, 30.0);
        Self {
            bit_words: vec![0; bit_count.div_ceil(64) as usize],
            bit_count,
            hash_count: hash_count as u32,
            item_count: 0,
        }
    }

    /// Adds `fingerprint`.
    pub fn insert(&mut self, fingerprint: &Fingerprint) {
        for bit_index in self.bit_indexes(fingerprint) {
            self.bit_words[(bit_index / 64) as usize] |= 1 << (bit_index % 64);
        }
        self.item_count += 1;
    }

    /// False means certainly never inserted; true means maybe.
    pub fn may_contain(&self, fingerprint: &Fingerprint) -> bool {
        self.bit_indexes(fingerprint).all(|bit_index| {
            self.bit_words[(bit_index / 64) as usize] & (1 << (bit_index % 64)) != 0
        })
    }

    /// Insertions so far (duplicates counted twice).
    pub fn item_count(&self) -> u64 {
        self.item_count
    }

    /// Size of the bit array.
    pub fn bit_count(&self) -> u64 {
        self.bit_count
    }

    /// Probes per fingerprint.
    pub fn hash_count(&self) -> u32 {
        self.hash_count
    }

    /// The false-positive rate expected at the current fill:
    /// (1 - e^(-k n / m))^k.
    pub fn expected_false_positive_rate(&self) -> f64 {
        let exponent = -(self.hash_count as f64) * self.item_count as f64 / self.bit_count as f64;
        (1.0 - exponent.exp()).powi(self.hash_count as i32)
    }

    /// Kirsch–Mitzenmacher double hashing: the fingerprint is already a
    /// uniform hash, so two of its words give all k probe positions.
    fn bit_indexes(&self, fingerprint: &Fingerprint) -> impl Iterator<Item = u64> + use<> {
        let first = fingerprint.prefix_u64();
        let second = fingerprint.second_u64() | 1;
        let bit_count = self.bit_count;
        (0..self.hash_count as u64)
            .map(move |probe| first.wrapping_add(probe.wrapping_mul(second)) % bit_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(index: u64) -> Fingerprint {
        Fingerprint::of(&index.to_le_bytes())
    }

    #[test]
    fn no_false_negatives_and_false_positive_rate_near_design() {
        let design_rate = 0.01;
        let mut filter = BloomFilter::with_capacity(20_000, design_rate);
        (0..20_000).for_each(|index| filter.insert(&fingerprint(index)));
        assert!((0..20_000).all(|index| filter.may_contain(&fingerprint(index))));

        let probes = 100_000_u64;
        let false_positives = (1_000_000..1_000_000 + probes)
            .filter(|i| filter.may_contain(&fingerprint(*i)))
            .count();
        let measured_rate = false_positives as f64 / probes as f64;
        assert!(
            (0.5 * design_rate..1.5 * design_rate).contains(&measured_rate),
            "measured {measured_rate}, designed {design_rate}"
        );
        let expected = filter.expected_false_positive_rate();
        assert!(
            (expected - design_rate).abs() < 0.3 * design_rate,
            "expected {expected}"
        );
    }

    #[test]
    fn survives_serialization() {
        let mut filter = BloomFilter::with_capacity(100, 0.01);
        filter.insert(&fingerprint(7));
        let json = serde_json::to_string(&filter).unwrap();
        let back: BloomFilter = serde_json::from_str(&json).unwrap();
        assert!(back.may_contain(&fingerprint(7)));
        assert_eq!(back, filter);
    }
}
