//! RPC over madsim's simulated network with timeouts, retries and duplicate delivery.
//!
//! A message lost to packet loss or a partition makes a bare `call` wait forever, so every
//! attempt here has a timeout, and a failed attempt is retried after a jittered backoff.
//! The hold-in-mind fact: **a retry can deliver a request twice** — the first attempt may
//! have arrived and only its reply been lost — and the network can duplicate on its own
//! (`duplicate_rate`). Every server handler must be idempotent; the oracles check it.

use std::net::SocketAddr;
use std::time::Duration;

use madsim::net::Endpoint;
use madsim::net::rpc::Request;

/// How one logical call is attempted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// How long one attempt waits for its reply.
    pub attempt_timeout: Duration,
    /// Attempts before the call fails with [`RpcError::Exhausted`].
    pub attempts_max: u32,
    /// Base wait between attempts; each wait adds up to the same again at random.
    pub backoff: Duration,
    /// Fraction of requests sent twice, as a network that duplicates packets would.
    pub duplicate_rate: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RpcError {
    #[error("no reply from {destination} after {attempts} attempts of {timeout_ms} ms each")]
    Exhausted {
        destination: SocketAddr,
        attempts: u32,
        timeout_ms: u128,
    },
}

/// Sends `request` to `destination` until a reply arrives or the attempts run out.
pub async fn call<R>(
    endpoint: &Endpoint,
    destination: SocketAddr,
    request: R,
    policy: &RetryPolicy,
) -> Result<R::Response, RpcError>
where
    R: Request + Clone,
{
    assert!(
        policy.attempts_max >= 1,
        "a call needs at least one attempt"
    );
    for attempt in 1..=policy.attempts_max {
        if policy.duplicate_rate > 0.0 && madsim::rand::random::<f64>() < policy.duplicate_rate {
            send_duplicate(
                endpoint,
                destination,
                request.clone(),
                policy.attempt_timeout,
            );
        }
        let reply = endpoint.call_timeout(destination, request.clone(), policy.attempt_timeout);
        match reply.await {
            Ok(response) => return Ok(response),
            Err(error) => {
                tracing::trace!(%destination, attempt, %error, "RPC attempt failed");
            }
        }
        if attempt < policy.attempts_max {
            let jitter_ns = madsim::rand::random::<u64>() % (policy.backoff.as_nanos() as u64 + 1);
            madsim::time::sleep(policy.backoff + Duration::from_nanos(jitter_ns)).await;
        }
    }
    Err(RpcError::Exhausted {
        destination,
        attempts: policy.attempts_max,
        timeout_ms: policy.attempt_timeout.as_millis(),
    })
}

/// A second copy of the request, whose reply nobody reads: the server sees it twice.
fn send_duplicate<R>(endpoint: &Endpoint, destination: SocketAddr, request: R, timeout: Duration)
where
    R: Request,
{
    let endpoint = endpoint.clone();
    madsim::task::spawn(async move {
        let _ignored = endpoint.call_timeout(destination, request, timeout).await;
    });
}
