//! [`SimService`]: the backup client's [`BackupService`], implemented over RPC to the
//! index-shard and chunk-store nodes.
//!
//! This is where the distributed protocol lives: a query is split by the consistent-hash
//! ring and reassembled in order; an upload goes to each chunk's store and, only after
//! every store has acknowledged (durably, by contract), is recorded at the index shards.
//! A call whose retries run out becomes `ServiceError::Unavailable`, which the client
//! treats like any failed backup: it tries the version again later.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use backup::service::{
    Answer, BackupService, ClientId, ConcurrencyMode, PutOutcome, RepoConfig, ServiceError,
    ServiceResult,
};
use backup::{BloomFilter, ChunkBytes, Fingerprint, Manifest, Ring, SnapshotId, SnapshotSummary};
use madsim::net::Endpoint;
use madsim::net::rpc::Request;

use super::messages::*;
use super::oracles::{Observations, UploadSent};
use crate::rpc::{RetryPolicy, call};

/// A Bloom filter's target false-positive rate on the client.
const BLOOM_FALSE_POSITIVE_RATE: f64 = 0.01;

/// Where the servers are.
#[derive(Debug, Clone)]
pub struct Topology {
    pub index_shards: Vec<SocketAddr>,
    pub stores: Vec<SocketAddr>,
    pub ring: Ring,
}

impl Topology {
    /// The store holding `fingerprint`. Independent of the ring (which places index
    /// entries) so a store crash and an index crash hit different fingerprint sets.
    pub fn store_of(&self, fingerprint: &Fingerprint) -> usize {
        (fingerprint.second_u64() % self.stores.len() as u64) as usize
    }

    /// The store that keeps the manifests.
    pub fn manifest_store(&self) -> SocketAddr {
        self.stores[0]
    }
}

/// One client's view of the service. See the module doc.
pub struct SimService {
    pub client: ClientId,
    pub endpoint: Endpoint,
    pub topology: Topology,
    pub repo: RepoConfig,
    pub policy: RetryPolicy,
    pub observations: Arc<Mutex<Observations>>,
    /// Pessimistic mode: when each lease this client holds was granted, as the spec
    /// counts it (asking again does not extend a live lease).
    pub leases_granted_at_ms: Mutex<BTreeMap<Fingerprint, u64>>,
}

impl SimService {
    async fn ask<R: Request + Clone>(
        &self,
        to: SocketAddr,
        request: R,
    ) -> ServiceResult<R::Response> {
        call(&self.endpoint, to, request, &self.policy)
            .await
            .map_err(|error| ServiceError::Unavailable {
                detail: error.to_string(),
            })
    }

    /// Positions of `fingerprints` grouped by the index shard that owns each.
    fn by_shard(&self, fingerprints: &[Fingerprint]) -> Vec<Vec<usize>> {
        let mut groups = vec![Vec::new(); self.topology.index_shards.len()];
        for (position, fingerprint) in fingerprints.iter().enumerate() {
            groups[self.topology.ring.shard_of(fingerprint)].push(position);
        }
        groups
    }

    async fn record_at_shards(&self, fingerprints: &[Fingerprint]) -> ServiceResult<()> {
        for (shard, positions) in self.by_shard(fingerprints).into_iter().enumerate() {
            if positions.is_empty() {
                continue;
            }
            let fingerprints = positions.iter().map(|&p| fingerprints[p]).collect();
            let request = RecordRequest {
                client: self.client,
                fingerprints,
            };
            self.ask(self.topology.index_shards[shard], request)
                .await??;
        }
        Ok(())
    }
}

impl BackupService for SimService {
    async fn config(&self) -> ServiceResult<RepoConfig> {
        Ok(self.repo.clone())
    }

    async fn bloom(&self) -> ServiceResult<BloomFilter> {
        let mut claims = Vec::new();
        for &shard in &self.topology.index_shards {
            claims.extend(self.ask(shard, ClaimsRequest).await??);
        }
        let capacity = claims.len() * 2 + 1024;
        let mut filter = BloomFilter::with_capacity(capacity, BLOOM_FALSE_POSITIVE_RATE);
        claims
            .iter()
            .for_each(|fingerprint| filter.insert(fingerprint));
        Ok(filter)
    }

    async fn query(
        &self,
        client: ClientId,
        fingerprints: Vec<Fingerprint>,
        now_ms: u64,
    ) -> ServiceResult<Vec<Answer>> {
        let mut answers = vec![Answer::Present; fingerprints.len()];
        for (shard, positions) in self.by_shard(&fingerprints).into_iter().enumerate() {
            if positions.is_empty() {
                continue;
            }
            let asked = positions.iter().map(|&p| fingerprints[p]).collect();
            let request = QueryRequest {
                client,
                fingerprints: asked,
            };
            let shard_answers = self
                .ask(self.topology.index_shards[shard], request)
                .await??;
            if shard_answers.len() != positions.len() {
                return Err(ServiceError::Unavailable {
                    detail: format!(
                        "index shard {shard} answered {} of {} fingerprints",
                        shard_answers.len(),
                        positions.len()
                    ),
                });
            }
            for (position, answer) in positions.into_iter().zip(shard_answers) {
                answers[position] = answer;
            }
        }
        self.note_leases(&fingerprints, &answers, now_ms);
        Ok(answers)
    }

    async fn put_chunks(
        &self,
        chunks: Vec<(Fingerprint, ChunkBytes)>,
    ) -> ServiceResult<PutOutcome> {
        let mut per_store = vec![Vec::new(); self.topology.stores.len()];
        let fingerprints: Vec<Fingerprint> = chunks.iter().map(|(f, _)| *f).collect();
        for chunk in chunks {
            per_store[self.topology.store_of(&chunk.0)].push(chunk);
        }
        let mut total = PutOutcome::default();
        for (store, chunks) in per_store.into_iter().enumerate() {
            if chunks.is_empty() {
                continue;
            }
            let outcome = self.put_to_store(store, chunks).await?;
            total.stored_chunks += outcome.stored_chunks;
            total.stored_bytes += outcome.stored_bytes;
            total.duplicate_chunks += outcome.duplicate_chunks;
        }
        // Every store acknowledged durably: now, and only now, the index may learn.
        self.record_at_shards(&fingerprints).await?;
        Ok(total)
    }

    async fn get_chunk(&self, fingerprint: Fingerprint) -> ServiceResult<Vec<u8>> {
        let store = self.topology.stores[self.topology.store_of(&fingerprint)];
        self.ask(store, GetChunkRequest { fingerprint }).await?
    }

    async fn commit_manifest(&self, manifest: Manifest) -> ServiceResult<SnapshotId> {
        let request = CommitRequest {
            client: self.client,
            manifest,
        };
        self.ask(self.topology.manifest_store(), request).await?
    }

    async fn get_manifest(&self, id: SnapshotId) -> ServiceResult<Manifest> {
        self.ask(self.topology.manifest_store(), GetManifestRequest { id })
            .await?
    }

    async fn list_snapshots(&self) -> ServiceResult<Vec<SnapshotSummary>> {
        self.ask(self.topology.manifest_store(), ListSnapshotsRequest)
            .await?
    }
}

impl SimService {
    /// Sends one store its chunks, one attempt at a time so that every attempt is
    /// noted for the lease oracle and, in pessimistic mode, fenced by the lease: a chunk
    /// whose lease ran out is not sent (another client may hold it now); the backup
    /// fails and asks the index again.
    async fn put_to_store(
        &self,
        store: usize,
        chunks: Vec<(Fingerprint, ChunkBytes)>,
    ) -> ServiceResult<PutOutcome> {
        let single_attempt = RetryPolicy {
            attempts_max: 1,
            ..self.policy
        };
        let request = PutRequest {
            client: self.client,
            chunks,
        };
        for attempt in 1..=self.policy.attempts_max {
            self.check_leases_live(&request.chunks)?;
            self.note_uploads(&request.chunks);
            let to = self.topology.stores[store];
            match call(&self.endpoint, to, request.clone(), &single_attempt).await {
                Ok(reply) => return reply,
                Err(error) if attempt == self.policy.attempts_max => {
                    return Err(ServiceError::Unavailable {
                        detail: error.to_string(),
                    });
                }
                Err(_) => madsim::time::sleep(self.policy.backoff).await,
            }
        }
        unreachable!("the last attempt returns")
    }

    fn lease_ms(&self) -> Option<u64> {
        match self.repo.mode {
            ConcurrencyMode::Pessimistic { lease_ms } => Some(lease_ms),
            _ => None,
        }
    }

    fn note_leases(&self, fingerprints: &[Fingerprint], answers: &[Answer], now_ms: u64) {
        if self.lease_ms().is_none() {
            return;
        }
        let mut leases = self.leases_granted_at_ms.lock().expect("lease lock");
        for (fingerprint, answer) in fingerprints.iter().zip(answers) {
            if *answer != Answer::Upload {
                continue;
            }
            // Every `Upload` grants or renews the lease at the index's own time, which
            // is no earlier than `now_ms`, when this question was sent: counting
            // from here is safe (the lease looks shorter to the client, never longer).
            let granted = leases.entry(*fingerprint).or_insert(now_ms);
            *granted = (*granted).max(now_ms);
        }
    }

    fn check_leases_live(&self, chunks: &[(Fingerprint, ChunkBytes)]) -> ServiceResult<()> {
        let Some(lease_ms) = self.lease_ms() else {
            return Ok(());
        };
        let now_ms = madsim::time::TimeHandle::current().elapsed().as_millis() as u64;
        let leases = self.leases_granted_at_ms.lock().expect("lease lock");
        for (fingerprint, _) in chunks {
            let live = leases
                .get(fingerprint)
                .is_some_and(|&granted| granted + lease_ms > now_ms);
            if !live {
                return Err(ServiceError::Unavailable {
                    detail: format!(
                        "the lease on chunk {} ran out before its upload; ask the index again",
                        &fingerprint.to_hex()[..12]
                    ),
                });
            }
        }
        Ok(())
    }

    fn note_uploads(&self, chunks: &[(Fingerprint, ChunkBytes)]) {
        let sent_at_ms = madsim::time::TimeHandle::current().elapsed().as_millis() as u64;
        let mut observations = self.observations.lock().expect("observations lock");
        for (fingerprint, _) in chunks {
            let upload = UploadSent {
                client: self.client,
                fingerprint: *fingerprint,
                sent_at_ms,
            };
            observations.uploads.push(upload);
        }
    }
}
