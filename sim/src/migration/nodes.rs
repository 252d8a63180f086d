//! The migration's nodes: stores X and Y serving MIGRATION's store steps, the writers, and
//! the coordinator with its phase log.
//!
//! Store handlers run MIGRATION's own leaves (`writer::write_x`, `writer::deliver_y`,
//! `coordinator::backfill_apply`, the `Writer`'s Y-only path) on a [`DiskStore`]; they are
//! synchronous between awaits, so a kill lands between two requests and the disk's crash
//! model supplies the half-done states. Writers and the coordinator own the control flow:
//! every hop is an RPC retried until it is answered, so a partition delays a step and
//! never drops it, and a write can reach Y late and out of order. The one idea to hold:
//! **a phase change waits for the operations begun under the old phase** ([`PhaseBoard`]),
//! exactly as MIGRATION's real runner holds a read lock on the phase for an operation.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::Endpoint;
use migration::store::{Entry, Store, StoreError};
use migration::writer::{self, InFlight, Writer};
use migration::{Phase, Variant, coordinator};

use super::messages::{AppliedWire, Source, StoreAnswer, StoreCall, StoreFailure, WireDelivery};
use super::oracles::{Observations, YSet};
use super::store::DiskStore;
use crate::disk::SimDisk;
use crate::history::{AuthorityWrite, ClientOp};
use crate::rpc::{self, RetryPolicy};
use crate::runner::Violation;
use crate::trace::{Trace, Word};

/// Wait before retrying a call a store could not serve.
pub const RETRY_WAIT: Duration = Duration::from_millis(20);
/// How often a coordinator looks whether the old phase's operations have drained.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// What every node of a run shares: the trace and the oracles' observations.
#[derive(Clone)]
pub struct Shared {
    pub trace: Trace,
    pub observations: Arc<Mutex<Observations>>,
}

impl Shared {
    pub fn observe(&self, change: impl FnOnce(&mut Observations)) {
        change(&mut self.observations.lock().expect("observations lock"));
    }
}

/// The value a reader sees in an entry, as the tag the write carried.
pub fn tag_of(entry: Option<&Entry>) -> Option<String> {
    entry
        .and_then(Entry::live_value)
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

fn failure(error: StoreError) -> StoreFailure {
    match error {
        StoreError::Unavailable(detail) => StoreFailure::Unavailable(detail),
        other => StoreFailure::Refused(other.to_string()),
    }
}

/// Which store a node is: X logs the authority's order of writes until X is retired, Y
/// logs what it applies (and, once it assigns versions, the authority's order too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    X,
    Y,
}

/// The body of store node X or Y, run at start and at every restart.
pub async fn run_store_node(name: String, address: SocketAddr, disk: SimDisk, shared: Shared) {
    let store = Arc::new(DiskStore::new(Arc::new(disk)));
    let endpoint = Endpoint::bind(address)
        .await
        .expect("a store node binds its address");
    endpoint.add_rpc_handler(move |call: StoreCall| {
        let answer = handle(&store, &name, &shared, call);
        async move { answer }
    });
    std::future::pending::<()>().await;
}

/// Serves one call; see the module doc.
pub fn handle(
    store: &DiskStore,
    node: &str,
    shared: &Shared,
    call: StoreCall,
) -> Result<StoreAnswer, StoreFailure> {
    match call {
        StoreCall::WriteX {
            request,
            variant,
            key,
            op,
            tag,
        } => store.on_behalf_of(request, || {
            write_x(
                store,
                node,
                shared,
                variant,
                &key,
                &op.to_op(),
                &tag,
                request,
            )
        }),
        StoreCall::WriteY {
            request,
            variant,
            key,
            op,
            tag,
        } => store.on_behalf_of(request, || {
            write_y(
                store,
                node,
                shared,
                variant,
                &key,
                &op.to_op(),
                &tag,
                request,
            )
        }),
        StoreCall::DeliverY {
            key,
            delivery,
            source,
        } => deliver_y(store, node, shared, key, delivery, source),
        StoreCall::Get { key } => Ok(StoreAnswer::Entry(store.get_entry(&key).map_err(failure)?)),
        StoreCall::Scan { after, limit } => Ok(StoreAnswer::Batch(
            store.scan(after.as_deref(), limit).map_err(failure)?,
        )),
        StoreCall::GetEntries { keys } => Ok(StoreAnswer::Entries(
            store.get_entries(&keys).map_err(failure)?,
        )),
        StoreCall::BackfillApply { variant, batch } => {
            backfill_apply(store, node, shared, variant, &batch)
        }
        StoreCall::Repair { key, entry } => {
            let outcome = store.apply_if_newer(&key, &entry).map_err(failure)?;
            if outcome == migration::store::Applied::Applied {
                let tag = tag_of(Some(&entry));
                shared.observe(|o| o.y_sets.push(YSet::new(&key, tag, Source::Repair)));
            }
            Ok(StoreAnswer::Applied(Some(outcome.into())))
        }
    }
}

fn delivery_for(variant: Variant, entry: Entry) -> WireDelivery {
    match variant {
        Variant::Fixed => WireDelivery::IfNewer(entry),
        Variant::Naive => WireDelivery::Overwrite(entry),
    }
}

fn log_authority(shared: &Shared, node: &str, key: &str, tag: &str, live: bool, version: u64) {
    let (word, store_word) = match (node, live) {
        ("x", true) => (Word::WriteX, "X"),
        ("x", false) => (Word::DeleteX, "X"),
        (_, true) => (Word::WriteY, "Y"),
        (_, false) => (Word::DeleteY, "Y"),
    };
    let detail = format!("key={key} tag={tag} version={version} order_by={store_word}");
    shared.trace.record(node, word, detail);
    let write = AuthorityWrite {
        key: key.to_string(),
        tag: tag.to_string(),
        live,
    };
    shared.observe(|o| o.authority.push(write));
}

#[allow(clippy::too_many_arguments)]
fn write_x(
    store: &DiskStore,
    node: &str,
    shared: &Shared,
    variant: Variant,
    key: &str,
    op: &writer::WriteOp,
    tag: &str,
    request: u64,
) -> Result<StoreAnswer, StoreFailure> {
    if let Some(answered) = store.written_by(key, request).map_err(failure)? {
        let delivery = answered.map(|entry| delivery_for(variant, entry));
        return Ok(StoreAnswer::Delivery(delivery));
    }
    match writer::write_x(store, variant, key, op) {
        Ok(in_flight) => {
            let (live, version) = match &in_flight.delivery {
                writer::Delivery::IfNewer(entry) | writer::Delivery::Overwrite(entry) => {
                    (entry.live_value().is_some(), entry.version)
                }
                writer::Delivery::Remove => (false, 0),
            };
            log_authority(shared, node, key, tag, live, version);
            Ok(StoreAnswer::Delivery(Some(in_flight.delivery.into())))
        }
        Err(StoreError::NotFound { .. }) => {
            store.remember_not_found(key).map_err(failure)?;
            Ok(StoreAnswer::Delivery(None))
        }
        Err(error) => Err(failure(error)),
    }
}

#[allow(clippy::too_many_arguments)]
fn write_y(
    store: &DiskStore,
    node: &str,
    shared: &Shared,
    variant: Variant,
    key: &str,
    op: &writer::WriteOp,
    tag: &str,
    request: u64,
) -> Result<StoreAnswer, StoreFailure> {
    if let Some(answered) = store.written_by(key, request).map_err(failure)? {
        return Ok(StoreAnswer::Acked(answered.is_some()));
    }
    // Y alone: MIGRATION's writer in a phase that no longer writes X, with Y as both
    // stores so that nothing could reach X by mistake.
    let only_y = Writer {
        x: store,
        y: store,
        variant,
    };
    match only_y.write(Phase::StopWritingX, key, op) {
        Ok(acked) => {
            let (live, version) = acked.as_ref().map_or((false, 0), |entry| {
                (entry.live_value().is_some(), entry.version)
            });
            log_authority(shared, node, key, tag, live, version);
            let tag = live.then(|| tag.to_string());
            shared.observe(|o| o.y_sets.push(YSet::new(key, tag, Source::YOnly)));
            Ok(StoreAnswer::Acked(true))
        }
        Err(StoreError::NotFound { .. }) => {
            store.remember_not_found(key).map_err(failure)?;
            Ok(StoreAnswer::Acked(false))
        }
        Err(error) => Err(failure(error)),
    }
}

fn deliver_y(
    store: &DiskStore,
    node: &str,
    shared: &Shared,
    key: String,
    delivery: WireDelivery,
    source: Source,
) -> Result<StoreAnswer, StoreFailure> {
    let before = store.get_entry(&key).map_err(failure)?;
    let in_flight = InFlight {
        key,
        delivery: delivery.into(),
    };
    let outcome = writer::deliver_y(store, &in_flight).map_err(failure)?;
    let key = in_flight.key;
    let after = store.get_entry(&key).map_err(failure)?;
    let detail = format!(
        "key={key} from={source} tag={} outcome={}",
        tag_of(after.as_ref()).unwrap_or_else(|| "-".into()),
        outcome.map_or("Removed".to_string(), |o| format!(
            "{:?}",
            AppliedWire::from(o)
        ))
    );
    shared.trace.record(node, Word::DeliverY, detail);
    if before != after {
        let tag = tag_of(after.as_ref());
        shared.observe(|o| o.y_sets.push(YSet::new(&key, tag, source)));
    }
    Ok(StoreAnswer::Applied(outcome.map(AppliedWire::from)))
}

fn backfill_apply(
    store: &DiskStore,
    node: &str,
    shared: &Shared,
    variant: Variant,
    batch: &[(String, Entry)],
) -> Result<StoreAnswer, StoreFailure> {
    let keys: Vec<String> = batch.iter().map(|(key, _)| key.clone()).collect();
    let before = store.get_entries(&keys).map_err(failure)?;
    let counts = coordinator::backfill_apply(store, variant, batch).map_err(failure)?;
    let after = store.get_entries(&keys).map_err(failure)?;
    for ((key, was), now) in keys.iter().zip(&before).zip(&after) {
        if was != now {
            let tag = tag_of(now.as_ref());
            shared.observe(|o| o.y_sets.push(YSet::new(key, tag, Source::Backfill)));
        }
    }
    let detail = format!(
        "keys={} applied={} stale={}",
        keys.join(","),
        counts.applied,
        counts.stale + counts.already_held
    );
    shared.trace.record(node, Word::Backfill, detail);
    Ok(StoreAnswer::BackfillApplied(counts.applied))
}

/// Sends `call` until a store answers it. A refusal (a broken invariant) is returned;
/// unavailability and silence are retried, so a partition only delays the step.
pub async fn call_until_answered(
    endpoint: &Endpoint,
    destination: SocketAddr,
    call: StoreCall,
    policy: &RetryPolicy,
) -> Result<StoreAnswer, String> {
    loop {
        match rpc::call(endpoint, destination, call.clone(), policy).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(StoreFailure::Refused(detail))) => return Err(detail),
            Ok(Err(StoreFailure::Unavailable(_))) | Err(_) => madsim::time::sleep(RETRY_WAIT).await,
        }
    }
}

/// The phase writers follow, as a lock: operations hold it shared for their whole length,
/// and a phase change takes it exclusively — it closes the board to new operations, waits
/// for those under way, then opens it on the new phase.
#[derive(Debug)]
pub struct PhaseBoard {
    phase: Phase,
    active: u32,
    closed: bool,
}

impl PhaseBoard {
    pub fn new() -> Arc<Mutex<PhaseBoard>> {
        Arc::new(Mutex::new(PhaseBoard {
            phase: Phase::DualWrite,
            active: 0,
            closed: false,
        }))
    }
}

/// An operation under way in one phase; dropping it (also when a node dies) ends it.
pub struct OpGuard {
    board: Arc<Mutex<PhaseBoard>>,
    pub phase: Phase,
}

impl OpGuard {
    /// Waits while a phase change is under way, then joins the current phase.
    pub async fn begin(board: &Arc<Mutex<PhaseBoard>>) -> Self {
        loop {
            {
                let mut locked = board.lock().expect("board lock");
                if !locked.closed {
                    locked.active += 1;
                    return Self {
                        board: board.clone(),
                        phase: locked.phase,
                    };
                }
            }
            madsim::time::sleep(DRAIN_POLL).await;
        }
    }
}

impl Drop for OpGuard {
    fn drop(&mut self) {
        let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
        board.active -= 1;
    }
}

/// Stops new operations and waits until none is under way. A coordinator that died with
/// the board closed left it closed; its successor closes it again and carries on.
pub async fn close(board: &Arc<Mutex<PhaseBoard>>) {
    board.lock().expect("board lock").closed = true;
    while board.lock().expect("board lock").active > 0 {
        madsim::time::sleep(DRAIN_POLL).await;
    }
}

/// Lets operations start again, under `phase`.
pub fn open(board: &Arc<Mutex<PhaseBoard>>, phase: Phase) {
    let mut locked = board.lock().expect("board lock");
    assert!(
        locked.phase <= phase,
        "a resumed coordinator published {phase} after writers had followed {}: the phase \
         log lost a saved change",
        locked.phase
    );
    assert_eq!(
        locked.active, 0,
        "a phase opened while operations were under way"
    );
    locked.phase = phase;
    locked.closed = false;
}

/// Changes the phase writers follow: close, drain, open on `phase`.
pub async fn publish(board: &Arc<Mutex<PhaseBoard>>, phase: Phase) {
    close(board).await;
    open(board, phase);
}

/// One writer's planned operation, drawn from the seed before the run.
#[derive(Debug, Clone)]
pub struct PlannedOp {
    pub key: String,
    pub op: super::messages::WireOp,
    pub tag: String,
    pub think: Duration,
    pub deliver_delay: Duration,
    /// Stop between the X and Y writes (only while the model lets writers start).
    pub crash: bool,
}

/// Everything a writer node needs.
#[derive(Clone)]
pub struct WriterSetup {
    pub index: usize,
    pub name: String,
    pub address: SocketAddr,
    pub x: SocketAddr,
    pub y: SocketAddr,
    pub variant: Variant,
    pub plan: Arc<Vec<PlannedOp>>,
    pub board: Arc<Mutex<PhaseBoard>>,
    pub shared: Shared,
    pub policy: RetryPolicy,
    pub finished: Arc<AtomicBool>,
}

/// The body of a writer node: each planned write, then a read of the same key.
pub async fn run_writer(setup: WriterSetup) {
    let endpoint = Endpoint::bind(setup.address)
        .await
        .expect("a writer binds its address");
    for (number, planned) in setup.plan.iter().enumerate() {
        let request = ((setup.index as u64) << 32) | number as u64;
        if let Err(detail) = write_once(&setup, &endpoint, planned, request).await {
            let violation = Violation::safety("StoreRefused", detail);
            setup.shared.observe(|o| o.violations.push(violation));
        }
        if let Err(detail) = read_once(&setup, &endpoint, &planned.key).await {
            let violation = Violation::safety("StoreRefused", detail);
            setup.shared.observe(|o| o.violations.push(violation));
        }
        madsim::time::sleep(planned.think).await;
    }
    setup.finished.store(true, Ordering::SeqCst);
    std::future::pending::<()>().await;
}

async fn write_once(
    setup: &WriterSetup,
    endpoint: &Endpoint,
    planned: &PlannedOp,
    request: u64,
) -> Result<(), String> {
    let guard = OpGuard::begin(&setup.board).await;
    let (key, tag) = (planned.key.clone(), planned.tag.clone());
    let live = planned.op != super::messages::WireOp::Delete;
    if !guard.phase.writes_x() {
        let call = StoreCall::WriteY {
            request,
            variant: setup.variant,
            key: key.clone(),
            op: planned.op.clone(),
            tag: tag.clone(),
        };
        let answer = call_until_answered(endpoint, setup.y, call, &setup.policy).await?;
        if answer == StoreAnswer::Acked(true) {
            let op = ClientOp::Wrote {
                client: setup.index,
                key,
                tag,
                live,
            };
            setup.shared.observe(|o| o.client_ops.push(op));
        }
        return Ok(());
    }
    let call = StoreCall::WriteX {
        request,
        variant: setup.variant,
        key: key.clone(),
        op: planned.op.clone(),
        tag: tag.clone(),
    };
    let StoreAnswer::Delivery(delivery) =
        call_until_answered(endpoint, setup.x, call, &setup.policy).await?
    else {
        return Err("X answered WriteX with something other than a delivery".into());
    };
    let Some(delivery) = delivery else {
        return Ok(()); // A delete of nothing: no write, nothing to deliver.
    };
    // The model's writers start operations only before reads switch to Y, so crashes
    // happen there too. Not yet: a crash after the switch; the oracles would then need
    // to allow an unacknowledged X write to vanish with X's retirement.
    if planned.crash && guard.phase < Phase::ReadFromY {
        let detail = format!("key={key} tag={tag} phase={}", guard.phase);
        setup
            .shared
            .trace
            .record(&setup.name, Word::CrashWriter, detail);
        setup.shared.observe(|o| o.crashed.push((key, tag)));
        return Ok(());
    }
    madsim::time::sleep(planned.deliver_delay).await;
    let call = StoreCall::DeliverY {
        key: key.clone(),
        delivery,
        source: Source::Writer(setup.index),
    };
    call_until_answered(endpoint, setup.y, call, &setup.policy).await?;
    let op = ClientOp::Wrote {
        client: setup.index,
        key,
        tag,
        live,
    };
    setup.shared.observe(|o| o.client_ops.push(op));
    Ok(())
}

async fn read_once(setup: &WriterSetup, endpoint: &Endpoint, key: &str) -> Result<(), String> {
    let guard = OpGuard::begin(&setup.board).await;
    let (target, from) = if guard.phase.reads_y() {
        (setup.y, "Y")
    } else {
        (setup.x, "X")
    };
    let call = StoreCall::Get {
        key: key.to_string(),
    };
    let StoreAnswer::Entry(entry) =
        call_until_answered(endpoint, target, call, &setup.policy).await?
    else {
        return Err("a store answered Get with something other than an entry".into());
    };
    let value = tag_of(entry.as_ref());
    let detail = format!(
        "key={key} from={from} value={}",
        value.as_deref().unwrap_or("-")
    );
    setup.shared.trace.record(&setup.name, Word::Read, detail);
    let op = ClientOp::Read {
        client: setup.index,
        key: key.to_string(),
        value,
    };
    setup.shared.observe(|o| o.client_ops.push(op));
    drop(guard);
    Ok(())
}
