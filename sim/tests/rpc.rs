//! The retrying RPC layer under a lossy, partitioned, duplicating network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use madsim::net::{Endpoint, NetSim, rpc::Request};
use madsim::runtime::{Handle, Runtime};
use serde::{Deserialize, Serialize};
use sim::rpc::{RetryPolicy, RpcError, call};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping(u64);

impl Request for Ping {
    const ID: u64 = 0x5049_4e47;
    type Response = u64;
}

const SERVER: &str = "10.0.0.1:1";
const CLIENT: &str = "10.0.0.2:1";

/// Starts a server node that counts the requests it handles; returns the counter and
/// the server's node id.
fn start_server(handle: &Handle) -> (Arc<AtomicU64>, madsim::task::NodeId) {
    let handled = Arc::new(AtomicU64::new(0));
    let counter = handled.clone();
    let address: SocketAddr = SERVER.parse().unwrap();
    let node = handle.create_node().name("server").ip(address.ip()).build();
    node.spawn(async move {
        let endpoint = Endpoint::bind(address).await.unwrap();
        endpoint.add_rpc_handler(move |Ping(value)| {
            counter.fetch_add(1, Ordering::Relaxed);
            async move { value + 1 }
        });
        std::future::pending::<()>().await;
    });
    (handled, node.id())
}

fn policy(attempts_max: u32, duplicate_rate: f64) -> RetryPolicy {
    RetryPolicy {
        attempt_timeout: Duration::from_millis(50),
        attempts_max,
        backoff: Duration::from_millis(10),
        duplicate_rate,
    }
}

/// What a test saw: the client's result and how many requests the server handled.
type Seen = (Result<u64, RpcError>, u64);

/// Runs one client call in a fresh runtime on a fresh thread. `net_setup` shapes the
/// network (given the client's and server's node ids) before the client starts.
fn run_client(
    seed: u64,
    request: u64,
    policy: RetryPolicy,
    net_setup: fn(madsim::task::NodeId, madsim::task::NodeId),
) -> Seen {
    std::thread::spawn(move || {
        let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
        let handle = runtime.handle().clone();
        runtime.block_on(async move {
            let (handled, server) = start_server(&handle);
            let address: SocketAddr = CLIENT.parse().unwrap();
            let client = handle.create_node().name("client").ip(address.ip()).build();
            net_setup(client.id(), server);
            let reply = client.spawn(async move {
                madsim::time::sleep(Duration::from_millis(1)).await;
                let endpoint = Endpoint::bind(address).await.unwrap();
                let reply = call(&endpoint, SERVER.parse().unwrap(), Ping(request), &policy).await;
                // Let any duplicate still in flight arrive before counting.
                madsim::time::sleep(Duration::from_millis(200)).await;
                reply
            });
            let reply = reply.await.unwrap();
            (reply, handled.load(Ordering::Relaxed))
        })
    })
    .join()
    .unwrap()
}

#[test]
fn half_the_packets_lost_still_gets_an_answer_by_retrying() {
    for seed in 0..20 {
        let lossy = |_, _| NetSim::current().update_config(|c| c.packet_loss_rate = 0.5);
        let (reply, handled) = run_client(seed, 41, policy(40, 0.0), lossy);
        assert_eq!(reply, Ok(42), "seed {seed}");
        assert!(handled >= 1, "seed {seed}");
    }
}

#[test]
fn a_clogged_link_ends_in_exhausted_never_a_hang() {
    let clog = |client, server| NetSim::current().clog_link(client, server);
    let (reply, handled) = run_client(1, 1, policy(3, 0.0), clog);
    match reply {
        Err(RpcError::Exhausted { attempts: 3, .. }) => {}
        other => panic!("expected exhaustion after 3 attempts, got {other:?}"),
    }
    assert_eq!(handled, 0);
}

#[test]
fn a_lost_reply_makes_the_retry_deliver_the_request_twice() {
    let clog_replies = |client, server| NetSim::current().clog_link(server, client);
    let (reply, handled) = run_client(3, 5, policy(2, 0.0), clog_replies);
    assert!(reply.is_err());
    assert_eq!(
        handled, 2,
        "both attempts reached the server; only the replies were lost"
    );
}

#[test]
fn duplicate_delivery_makes_the_server_handle_a_request_twice() {
    let (reply, handled) = run_client(2, 7, policy(1, 1.0), |_, _| {});
    assert_eq!(reply, Ok(8));
    assert_eq!(handled, 2, "one request plus its duplicate");
}
