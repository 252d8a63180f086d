//! The RPC messages between backup clients and the index and store nodes.
//!
//! One request type per service step; replies are the service's own `ServiceResult`s, so
//! a server's typed error crosses the simulated network unchanged. Requests carry the
//! asking client's id where an oracle needs to know who did what (uploads, leases).

use backup::service::{Answer, ClientId, PutOutcome, ServiceResult};
use backup::{ChunkBytes, Fingerprint, Manifest, SnapshotId, SnapshotSummary};
use madsim::net::rpc::Request;
use serde::{Deserialize, Serialize};

/// Index shard: one answer per fingerprint.
///
/// No time travels with the question: the shard grants and expires leases by its own
/// clock, so a client whose clock is skewed or stale cannot stretch or shrink a lease.
/// The client keeps its own send time to itself, to count its lease conservatively.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryRequest {
    pub client: ClientId,
    pub fingerprints: Vec<Fingerprint>,
}

impl Request for QueryRequest {
    const ID: u64 = 0x4243_0001;
    type Response = ServiceResult<Vec<Answer>>;
}

/// Index shard: record fingerprints the stores now hold durably.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordRequest {
    pub client: ClientId,
    pub fingerprints: Vec<Fingerprint>,
}

impl Request for RecordRequest {
    const ID: u64 = 0x4243_0002;
    type Response = ServiceResult<()>;
}

/// Index shard: every fingerprint it claims (for the client's Bloom filter).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimsRequest;

impl Request for ClaimsRequest {
    const ID: u64 = 0x4243_0003;
    type Response = ServiceResult<Vec<Fingerprint>>;
}

/// Store: keep these chunks durably.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutRequest {
    pub client: ClientId,
    pub chunks: Vec<(Fingerprint, ChunkBytes)>,
}

impl Request for PutRequest {
    const ID: u64 = 0x4243_0004;
    type Response = ServiceResult<PutOutcome>;
}

/// Store: one chunk's verified bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetChunkRequest {
    pub fingerprint: Fingerprint,
}

impl Request for GetChunkRequest {
    const ID: u64 = 0x4243_0005;
    type Response = ServiceResult<Vec<u8>>;
}

/// Manifest store (on store 0): commit a manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitRequest {
    pub client: ClientId,
    pub manifest: Manifest,
}

impl Request for CommitRequest {
    const ID: u64 = 0x4243_0006;
    type Response = ServiceResult<SnapshotId>;
}

/// Manifest store: one manifest, checked against its id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetManifestRequest {
    pub id: SnapshotId,
}

impl Request for GetManifestRequest {
    const ID: u64 = 0x4243_0007;
    type Response = ServiceResult<Manifest>;
}

/// Manifest store: every committed snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListSnapshotsRequest;

impl Request for ListSnapshotsRequest {
    const ID: u64 = 0x4243_0008;
    type Response = ServiceResult<Vec<SnapshotSummary>>;
}
