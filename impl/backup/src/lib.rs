//! The deduplicating backup service, as real code.
//!
//! Files are cut into content-defined chunks (FastCDC), each named by its
//! SHA-256 fingerprint; the index answers which fingerprints it lacks; only
//! those chunks are uploaded; a manifest of ordered fingerprints per file is
//! committed last. The one idea to hold: **a manifest may only be committed
//! once every chunk it names is durably stored**, and the index may only
//! claim a chunk after the store holds it durably.

pub mod disk;
