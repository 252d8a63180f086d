//! The backup scenario's oracles: what must hold, checked against durable state.
//!
//! Every check reads the servers' disks through [`SimDisk::durable_copy`] — what a power
//! cut at that instant would leave — so "acknowledged" is held to "durable", never to
//! "in memory". Injected bit flips are the one excuse: a damaged chunk or manifest that
//! the code *detected* (its hash no longer matches) on a disk the fault model corrupted
//! is the fault doing its job; wrong bytes returned silently are never excused.
//!
//! Checks:
//! - `CommittedRestorable`: at the moment a commit is acknowledged, every chunk the manifest
//!   names is durably stored (checked during the run, by the client's service);
//! - `RestoresIdentical`: after the run, every durable manifest restores byte for byte
//!   to the tree its client read, and every acknowledged commit is still there;
//! - `IndexOnlyListsStored`: the durable index never claims a chunk its store lacks, and
//!   an index segment is found damaged (and its claims dropped) only on a disk the fault
//!   model flipped bits on — damage anywhere else is a write bug the checksum would hide;
//! - `NoDuplicateUploadUnderLease` (pessimistic): two clients never hold valid leases on one
//!   fingerprint at once, and no client uploads a fingerprint while another client's
//!   lease on it is valid;
//! - `EveryClientCommits` (checked by the scenario): after the heal every client finishes.
//!
//! The names are the TLA+ spec's and the stateright model's property names (model/), so a
//! failing seed and a counterexample name the same property. `RestoresIdentical` has no
//! model twin: the model has no bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use backup::disk::Disk;
use backup::index::Index;
use backup::repository::ManifestStore;
use backup::service::{ClientId, ConcurrencyMode, ServiceError};
use backup::store::ChunkStore;
use backup::{EntryKind, Fingerprint, Manifest, SnapshotId};

use super::service::Topology;
use super::workload::Workload;
use crate::disk::SimDisk;
use crate::runner::Violation;

/// An `Upload` answer in pessimistic mode: a lease granted, or a live one confirmed.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseGrant {
    pub shard: usize,
    /// Which start of the shard granted it: leases are not durable, so a restarted shard
    /// rightly forgets them.
    pub incarnation: u64,
    pub client: ClientId,
    pub fingerprint: Fingerprint,
    pub granted_at_ms: u64,
    pub lease_ms: u64,
}

/// A chunk a client sent to a store.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadSent {
    pub client: ClientId,
    pub fingerprint: Fingerprint,
    pub sent_at_ms: u64,
}

/// What the run recorded for the oracles.
#[derive(Debug, Default)]
pub struct Observations {
    pub lease_grants: Vec<LeaseGrant>,
    pub uploads: Vec<UploadSent>,
    /// Violations found during the run (at commit time).
    pub violations: Vec<Violation>,
}

/// The durable state of every server, opened read-only for checking.
pub struct DurableView {
    pub stores: Vec<ChunkStore>,
    pub store_corrupted: Vec<bool>,
    pub shards: Vec<Result<Index, ServiceError>>,
    pub manifests: ManifestStore,
}

impl DurableView {
    /// Opens durable copies of the given disks. A store that cannot open at all is a
    /// violation of its own, reported by the caller.
    pub fn open(
        store_disks: &[SimDisk],
        shard_disks: &[SimDisk],
        mode: ConcurrencyMode,
    ) -> Result<Self, Violation> {
        let mut stores = Vec::new();
        let mut store_corrupted = Vec::new();
        for (index, disk) in store_disks.iter().enumerate() {
            let copy: Arc<dyn Disk> = Arc::new(disk.durable_copy());
            let store = ChunkStore::open(copy).map_err(|error| {
                Violation::safety(
                    "RestoresIdentical",
                    format!("store{index} cannot open: {error}"),
                )
            })?;
            stores.push(store);
            store_corrupted.push(!disk.corrupted_paths().is_empty());
        }
        let shards = shard_disks
            .iter()
            .map(|disk| Index::open(Arc::new(disk.durable_copy()), "index", mode))
            .collect();
        let manifests = ManifestStore::new(Arc::new(store_disks[0].durable_copy()));
        Ok(Self {
            stores,
            store_corrupted,
            shards,
            manifests,
        })
    }

    /// The chunk's durable bytes, `Ok(None)` when absent, `Err` when detected damaged.
    fn chunk(
        &self,
        topology: &Topology,
        fingerprint: &Fingerprint,
    ) -> Result<Option<Vec<u8>>, String> {
        let store = topology.store_of(fingerprint);
        match self.stores[store].get(fingerprint) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(ServiceError::ChunkMissing { .. }) => {
                let in_damaged_pack = !self.stores[store].damaged_packs().is_empty();
                if in_damaged_pack && self.store_corrupted[store] {
                    Err(format!("store{store} has a pack the fault model damaged"))
                } else {
                    Ok(None)
                }
            }
            Err(error) => Err(format!("store{store}: {error}")),
        }
    }
}

/// `CommittedRestorable`: every chunk `manifest` names is durably stored right now.
pub fn check_commit_durable(
    manifest: &Manifest,
    client: ClientId,
    view: &DurableView,
    topology: &Topology,
) -> Option<Violation> {
    for fingerprint in manifest.chunk_references().keys() {
        if let Ok(None) = view.chunk(topology, fingerprint) {
            let detail = format!(
                "client {client} got a commit acknowledged for {:?} naming chunk {} which no \
                 store holds durably",
                manifest.label,
                &fingerprint.to_hex()[..12]
            );
            return Some(Violation::safety("CommittedRestorable", detail));
        }
    }
    None
}

/// The client and version a manifest label names: `client<c>-v<version>`.
pub fn parse_label(label: &str) -> Option<(usize, usize)> {
    let rest = label.strip_prefix("client")?;
    let (client, version) = rest.split_once("-v")?;
    Some((client.parse().ok()?, version.parse().ok()?))
}

/// `RestoresIdentical` and acknowledged commits: see the module doc.
pub fn check_restores(
    view: &DurableView,
    topology: &Topology,
    workload: &Workload,
    acknowledged: &[(usize, usize, SnapshotId)],
    manifests_corrupted: bool,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    let durable_ids: BTreeSet<SnapshotId> = match view.manifests.ids() {
        Ok(ids) => ids.into_iter().collect(),
        Err(error) => {
            return vec![Violation::safety(
                "RestoresIdentical",
                format!("listing: {error}"),
            )];
        }
    };
    for (client, version, id) in acknowledged {
        if !durable_ids.contains(id) {
            let detail = format!(
                "client{client} v{version}: acknowledged snapshot {} is gone",
                short(id)
            );
            violations.push(Violation::safety("RestoresIdentical", detail));
        }
    }
    for id in &durable_ids {
        let manifest = match view.manifests.get(id) {
            Ok(manifest) => manifest,
            Err(ServiceError::ManifestInvalid { .. }) if manifests_corrupted => continue,
            Err(error) => {
                let detail = format!("snapshot {} unreadable: {error}", short(id));
                violations.push(Violation::safety("RestoresIdentical", detail));
                continue;
            }
        };
        if let Some(violation) = check_one_restore(view, topology, workload, id, &manifest) {
            violations.push(violation);
        }
    }
    violations
}

fn short(id: &SnapshotId) -> &str {
    &id.0[..id.0.len().min(12)]
}

fn check_one_restore(
    view: &DurableView,
    topology: &Topology,
    workload: &Workload,
    id: &SnapshotId,
    manifest: &Manifest,
) -> Option<Violation> {
    let fail = |detail: String| Some(Violation::safety("RestoresIdentical", detail));
    let Some((client, version)) = parse_label(&manifest.label) else {
        return fail(format!(
            "snapshot {} has a label no client wrote: {:?}",
            short(id),
            manifest.label
        ));
    };
    let Some(tree) = workload
        .versions
        .get(client)
        .and_then(|versions| versions.get(version))
    else {
        return fail(format!(
            "snapshot {} names client{client} v{version}, not in the workload",
            short(id)
        ));
    };
    let mut restored = BTreeMap::new();
    for entry in &manifest.entries {
        let EntryKind::File { chunks, .. } = &entry.kind else {
            continue;
        };
        let mut bytes = Vec::new();
        for fingerprint in chunks {
            match view.chunk(topology, fingerprint) {
                Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                Ok(None) => {
                    let detail = format!(
                        "snapshot {} ({}) names chunk {} of {} which no store holds durably",
                        short(id),
                        manifest.label,
                        &fingerprint.to_hex()[..12],
                        entry.path
                    );
                    return Some(Violation::safety("RestoresIdentical", detail));
                }
                // Detected damage from an injected bit flip: the fault, not a bug.
                Err(_) => return None,
            }
        }
        restored.insert(entry.path.clone(), bytes);
    }
    if &restored != tree {
        let differing: Vec<&String> = tree
            .keys()
            .chain(restored.keys())
            .filter(|path| tree.get(*path) != restored.get(*path))
            .collect();
        let detail = format!(
            "snapshot {} ({}) restores differently from what the client read at {:?}",
            short(id),
            manifest.label,
            differing.first()
        );
        return fail(detail);
    }
    None
}

/// `IndexOnlyListsStored`: every fingerprint a durable index shard claims, its store holds.
pub fn check_index_claims(view: &DurableView, topology: &Topology) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (shard, index) in view.shards.iter().enumerate() {
        let index = match index {
            Ok(index) => index,
            Err(error) => {
                let detail =
                    format!("index shard {shard} cannot open from its durable state: {error}");
                violations.push(Violation::safety("IndexOnlyListsStored", detail));
                continue;
            }
        };
        let mut claims = index.fingerprints();
        claims.sort_unstable();
        let unbacked: Vec<&Fingerprint> = claims
            .iter()
            .filter(|fingerprint| matches!(view.chunk(topology, fingerprint), Ok(None)))
            .collect();
        if let Some(first) = unbacked.first() {
            let detail = format!(
                "index shard {shard} claims {} chunk(s) no store holds, first {}",
                unbacked.len(),
                &first.to_hex()[..12]
            );
            violations.push(Violation::safety("IndexOnlyListsStored", detail));
        }
    }
    violations
}

/// The second half of `IndexOnlyListsStored`: see the module doc.
pub fn check_index_damage(view: &DurableView, shard_disks: &[SimDisk]) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (shard, (index, disk)) in view.shards.iter().zip(shard_disks).enumerate() {
        let Ok(index) = index else {
            continue; // `check_index_claims` reports a shard that cannot open.
        };
        let damaged = index.damaged_segments();
        if let (Some(first), true) = (damaged.first(), disk.corrupted_paths().is_empty()) {
            let detail = format!("index shard {shard}, no bit flip injected: {first}");
            violations.push(Violation::safety("IndexOnlyListsStored", detail));
        }
    }
    violations
}

/// A lease as the spec defines it: from its grant until `lease_ms` later.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LeaseSpan {
    holder: ClientId,
    from_ms: u64,
    until_ms: u64,
}

/// Replays the `Upload` answers of one shard incarnation for one fingerprint, in the
/// order the shard gave them, against the spec of a lease: an `Upload` to a client is a
/// new lease unless that client's lease is still live (asking again does not extend it);
/// an `Upload` while another client's lease is live is the violation.
fn replay_leases(answers: &[&LeaseGrant]) -> Result<Vec<LeaseSpan>, String> {
    let mut spans: Vec<LeaseSpan> = Vec::new();
    for answer in answers {
        let now_ms = answer.granted_at_ms;
        match spans.last() {
            Some(live) if live.until_ms > now_ms && live.holder == answer.client => {}
            Some(live) if live.until_ms > now_ms => {
                return Err(format!(
                    "chunk {} leased to client {} at {now_ms} ms while client {}'s lease \
                     ({}..{} ms) was live",
                    &answer.fingerprint.to_hex()[..12],
                    answer.client,
                    live.holder,
                    live.from_ms,
                    live.until_ms
                ));
            }
            _ => spans.push(LeaseSpan {
                holder: answer.client,
                from_ms: now_ms,
                until_ms: now_ms + answer.lease_ms,
            }),
        }
    }
    Ok(spans)
}

/// `NoDuplicateUploadUnderLease`: see the module doc. Leases from different incarnations of a
/// shard are not compared: a restart frees every lease by design.
pub fn check_leases(observations: &Observations) -> Vec<Violation> {
    let mut by_key: BTreeMap<(Fingerprint, usize, u64), Vec<&LeaseGrant>> = BTreeMap::new();
    for grant in &observations.lease_grants {
        by_key
            .entry((grant.fingerprint, grant.shard, grant.incarnation))
            .or_default()
            .push(grant);
    }
    let mut spans_by_fingerprint: BTreeMap<Fingerprint, Vec<LeaseSpan>> = BTreeMap::new();
    for ((fingerprint, ..), answers) in &by_key {
        match replay_leases(answers) {
            Ok(spans) => spans_by_fingerprint
                .entry(*fingerprint)
                .or_default()
                .extend(spans),
            Err(detail) => return vec![Violation::safety("NoDuplicateUploadUnderLease", detail)],
        }
    }
    for upload in &observations.uploads {
        let Some(spans) = spans_by_fingerprint.get(&upload.fingerprint) else {
            continue;
        };
        let live = |span: &&LeaseSpan| {
            span.from_ms <= upload.sent_at_ms && upload.sent_at_ms < span.until_ms
        };
        let own_live = spans
            .iter()
            .filter(live)
            .any(|span| span.holder == upload.client);
        let other = spans
            .iter()
            .filter(live)
            .find(|span| span.holder != upload.client);
        if let (false, Some(other)) = (own_live, other) {
            let detail = format!(
                "client {} uploaded chunk {} at {} ms while client {} held its lease ({}..{} ms)",
                upload.client,
                &upload.fingerprint.to_hex()[..12],
                upload.sent_at_ms,
                other.holder,
                other.from_ms,
                other.until_ms
            );
            return vec![Violation::safety("NoDuplicateUploadUnderLease", detail)];
        }
    }
    Vec::new()
}
