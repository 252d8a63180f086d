//! Chunk names: the SHA-256 of a chunk's bytes.
//!
//! A fingerprint is the only name a chunk has anywhere in the system (store,
//! index, Bloom filter, manifests), so equal bytes always meet under one name
//! and a reader can always check that the bytes it got are the bytes named.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The SHA-256 digest of a chunk. Displays and parses as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Bytes in a fingerprint.
    pub const SIZE_BYTES: usize = 32;

    /// The fingerprint of `bytes` (hardware SHA-256 where the CPU has it).
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The first 8 bytes as an integer: uniform, because SHA-256 output is;
    /// the ring and the Bloom filter take their positions from it.
    pub fn prefix_u64(&self) -> u64 {
        u64::from_be_bytes(self.0[..8].try_into().expect("32 bytes hold 8"))
    }

    /// Bytes 8..16 as an integer, independent of [`Fingerprint::prefix_u64`].
    pub fn second_u64(&self) -> u64 {
        u64::from_be_bytes(self.0[8..16].try_into().expect("32 bytes hold 16"))
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Twelve digits identify a chunk in logs and assertion messages.
        write!(formatter, "Fingerprint({})", &self.to_hex()[..12])
    }
}

/// A string that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid fingerprint {found:?}: expected 64 hex digits (a SHA-256), {problem}; \
     copy the full fingerprint from `crosscheck fsck` or the manifest"
)]
pub struct ParseFingerprintError {
    /// The text that failed to parse (cut to 80 characters).
    pub found: String,
    /// What was wrong with it.
    pub problem: String,
}

impl FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |problem: String| ParseFingerprintError {
            found: text.chars().take(80).collect(),
            problem,
        };
        if text.len() != 64 {
            return Err(fail(format!("found {} characters", text.len())));
        }
        let mut bytes = [0_u8; 32];
        hex::decode_to_slice(text.to_ascii_lowercase(), &mut bytes)
            .map_err(|error| fail(error.to_string()))?;
        Ok(Self(bytes))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_round_trips_through_hex() {
        let fingerprint = Fingerprint::of(b"abc");
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(fingerprint.to_string(), hex);
        assert_eq!(hex.parse::<Fingerprint>().unwrap(), fingerprint);
        let json = serde_json::to_string(&fingerprint).unwrap();
        assert_eq!(
            serde_json::from_str::<Fingerprint>(&json).unwrap(),
            fingerprint
        );
    }

    #[test]
    fn bad_text_names_the_problem() {
        let error = "abc".parse::<Fingerprint>().unwrap_err();
        assert!(error.to_string().contains("found 3 characters"), "{error}");
        let error = "z".repeat(64).parse::<Fingerprint>().unwrap_err();
        assert!(
            error.to_string().contains("expected 64 hex digits"),
            "{error}"
        );
    }
}
