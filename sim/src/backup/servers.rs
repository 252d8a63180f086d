//! Index-shard and chunk-store nodes: the real `Index`, `ChunkStore` and `ManifestStore`
//! over each node's [`SimDisk`], served over madsim RPC.
//!
//! A node's `init` is what madsim re-runs at every restart, so it opens its component
//! from whatever its disk kept through the crash — exactly what a real restart does.
//! Opening retries while the disk injects errors; requests that arrive before the
//! endpoint is bound are lost and the client's retry covers them. Handlers are
//! synchronous between awaits, so a kill lands between two requests, never inside one;
//! the disk's crash model supplies the "half-done" states instead.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backup::disk::Disk;
use backup::index::Index;
use backup::repository::ManifestStore;
use backup::service::{Answer, ConcurrencyMode, ServiceResult};
use backup::store::{ChunkStore, verify_chunks};
use madsim::net::Endpoint;

use super::messages::*;
use super::oracles::{LeaseGrant, Observations};
use crate::disk::SimDisk;
use crate::trace::{Trace, Word};

/// How long a node waits before retrying to open its component after a disk error.
const REOPEN_WAIT: Duration = Duration::from_millis(20);

/// What a server node keeps across restarts: its disk and how many times it started.
#[derive(Debug, Clone)]
pub struct ServerState {
    pub name: String,
    pub address: SocketAddr,
    pub disk: SimDisk,
    pub incarnation: Arc<AtomicU64>,
}

impl ServerState {
    pub fn new(name: String, address: SocketAddr, disk: SimDisk) -> Self {
        Self {
            name,
            address,
            disk,
            incarnation: Arc::new(AtomicU64::new(0)),
        }
    }

    fn disk_handle(&self) -> Arc<dyn Disk> {
        Arc::new(self.disk.clone())
    }
}

/// Opens a component, retrying while the disk fails; the trace notes each failure.
async fn open_retrying<T>(
    server: &ServerState,
    trace: &Trace,
    open: impl Fn() -> ServiceResult<T>,
) -> T {
    loop {
        match open() {
            Ok(component) => return component,
            Err(error) => {
                trace.record(&server.name, Word::Restart, format!("open failed: {error}"));
                madsim::time::sleep(REOPEN_WAIT).await;
            }
        }
    }
}

/// This node's reading of the virtual clock, in milliseconds since the run began.
fn virtual_now_ms() -> u64 {
    madsim::time::TimeHandle::current().elapsed().as_millis() as u64
}

/// The body of an index-shard node, run at start and at every restart.
pub async fn run_index_node(
    server: ServerState,
    shard: usize,
    mode: ConcurrencyMode,
    trace: Trace,
    observations: Arc<Mutex<Observations>>,
) {
    let incarnation = server.incarnation.fetch_add(1, Ordering::Relaxed) + 1;
    let disk = server.disk_handle();
    let index = open_retrying(&server, &trace, || Index::open(disk.clone(), "index", mode)).await;
    for damage in index.damaged_segments() {
        trace.record(&server.name, Word::Restart, format!("dropped: {damage}"));
    }
    if let (ConcurrencyMode::Pessimistic { lease_ms }, true) = (mode, incarnation > 1) {
        // Leases of the previous life are forgotten; wait them out before granting.
        index.refuse_leases_until(virtual_now_ms() + lease_ms);
    }
    let index = Arc::new(index);
    let endpoint = Endpoint::bind(server.address)
        .await
        .expect("a restarted node re-binds");
    let query = QueryContext {
        index: index.clone(),
        name: server.name.clone(),
        shard,
        incarnation,
        mode,
        trace: trace.clone(),
        observations,
    };
    endpoint.add_rpc_handler(move |request: QueryRequest| {
        let answers = query.answer(&request);
        async move { Ok(answers) }
    });
    let (record_index, record_trace, name) = (index.clone(), trace.clone(), server.name.clone());
    endpoint.add_rpc_handler(move |request: RecordRequest| {
        let result = record_index.record(&request.fingerprints);
        let outcome = match &result {
            Ok(()) => "ok".to_string(),
            Err(error) => format!("failed: {error}"),
        };
        let detail = format!(
            "client={} fingerprints={} {outcome}",
            request.client,
            request.fingerprints.len()
        );
        record_trace.record(&name, Word::Record, detail);
        async move { result }
    });
    endpoint.add_rpc_handler(move |_: ClaimsRequest| {
        let mut claims = index.fingerprints();
        claims.sort_unstable();
        async move { Ok(claims) }
    });
    trace.record(
        &server.name,
        Word::Restart,
        format!("serving incarnation={incarnation}"),
    );
    std::future::pending::<()>().await;
}

/// What an index node's query handler needs.
struct QueryContext {
    index: Arc<Index>,
    name: String,
    shard: usize,
    incarnation: u64,
    mode: ConcurrencyMode,
    trace: Trace,
    observations: Arc<Mutex<Observations>>,
}

impl QueryContext {
    /// Asks the real index, and notes every `Upload` answer of pessimistic mode (a lease
    /// granted or confirmed) for the lease oracle.
    fn answer(&self, request: &QueryRequest) -> Vec<Answer> {
        // The shard's own clock, never the asker's: a client with a skewed or stale clock
        // must not be able to stretch or shrink a lease. The oracle counts from it too.
        let now_ms = virtual_now_ms();
        let answers = self
            .index
            .query(request.client, &request.fingerprints, now_ms);
        let count = |wanted: fn(&Answer) -> bool| answers.iter().filter(|a| wanted(a)).count();
        let uploads = count(|a| *a == Answer::Upload);
        if let ConcurrencyMode::Pessimistic { lease_ms } = self.mode {
            if uploads > 0 {
                let detail = format!("client={} leased_or_held={uploads}", request.client);
                self.trace.record(&self.name, Word::Acquire, detail);
            }
            let mut observations = self.observations.lock().expect("observations lock");
            for (fingerprint, answer) in request.fingerprints.iter().zip(&answers) {
                if *answer == Answer::Upload {
                    observations.lease_grants.push(LeaseGrant {
                        shard: self.shard,
                        incarnation: self.incarnation,
                        client: request.client,
                        fingerprint: *fingerprint,
                        granted_at_ms: now_ms,
                        lease_ms,
                    });
                }
            }
        }
        let detail = format!(
            "client={} asked={} upload={uploads} present={} wait={}",
            request.client,
            answers.len(),
            count(|a| *a == Answer::Present),
            count(|a| matches!(a, Answer::Wait { .. })),
        );
        self.trace.record(&self.name, Word::Query, detail);
        answers
    }
}

/// The body of a chunk-store node; store 0 also keeps the manifests.
pub async fn run_store_node(server: ServerState, holds_manifests: bool, trace: Trace) {
    let incarnation = server.incarnation.fetch_add(1, Ordering::Relaxed) + 1;
    let disk = server.disk_handle();
    let store = Arc::new(open_retrying(&server, &trace, || ChunkStore::open(disk.clone())).await);
    let endpoint = Endpoint::bind(server.address)
        .await
        .expect("a restarted node re-binds");
    let (put_store, put_trace, name) = (store.clone(), trace.clone(), server.name.clone());
    endpoint.add_rpc_handler(move |request: PutRequest| {
        let result =
            verify_chunks(&request.chunks).and_then(|()| put_store.put_batch(&request.chunks));
        let outcome = match &result {
            Ok(put) => format!(
                "stored={} duplicate={}",
                put.stored_chunks, put.duplicate_chunks
            ),
            Err(error) => format!("failed: {error}"),
        };
        let detail = format!(
            "client={} chunks={} {outcome}",
            request.client,
            request.chunks.len()
        );
        put_trace.record(&name, Word::Upload, detail);
        async move { result }
    });
    endpoint.add_rpc_handler(move |request: GetChunkRequest| {
        let result = store.get(&request.fingerprint);
        async move { result }
    });
    if holds_manifests {
        serve_manifests(&endpoint, &server, disk, trace.clone());
    }
    trace.record(
        &server.name,
        Word::Restart,
        format!("serving incarnation={incarnation}"),
    );
    std::future::pending::<()>().await;
}

fn serve_manifests(endpoint: &Endpoint, server: &ServerState, disk: Arc<dyn Disk>, trace: Trace) {
    let manifests = Arc::new(ManifestStore::new(disk));
    let (commit_manifests, name) = (manifests.clone(), server.name.clone());
    endpoint.add_rpc_handler(move |request: CommitRequest| {
        let result = commit_manifests.commit(&request.manifest);
        let outcome = match &result {
            Ok(id) => format!("snapshot={}", &id.0[..12]),
            Err(error) => format!("failed: {error}"),
        };
        trace.record(
            &name,
            Word::Commit,
            format!("client={} {outcome}", request.client),
        );
        async move { result }
    });
    let get_manifests = manifests.clone();
    endpoint.add_rpc_handler(move |request: GetManifestRequest| {
        let result = get_manifests.get(&request.id);
        async move { result }
    });
    endpoint.add_rpc_handler(move |_: ListSnapshotsRequest| {
        let result = list_snapshots(&manifests);
        async move { result }
    });
}

fn list_snapshots(manifests: &ManifestStore) -> ServiceResult<Vec<backup::SnapshotSummary>> {
    let mut summaries = Vec::new();
    for id in manifests.ids()? {
        summaries.push(manifests.get(&id)?.summary());
    }
    summaries.sort_by(|a, b| (a.time_unix_ms, &a.id).cmp(&(b.time_unix_ms, &b.id)));
    Ok(summaries)
}
