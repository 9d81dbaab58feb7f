//! Many nodes in one process: a network of [`MemoryTransport`]s that can drop messages,
//! delay them, and cut and heal links (as chitchat's `ChannelTransport` does with
//! `remove_link`/`add_link`), for tests of the protocol under failures.
//!
//! A request or answer that is dropped, sent over a cut link, or sent to a node that serves
//! nothing (stopped) is silence: the caller hears nothing until its timeout, as over a real
//! network. Delays are uniform between zero and the configured maximum, per message, so
//! messages overtake each other. Randomness comes from a seed; under a paused tokio clock on
//! one thread a run repeats exactly.
//!
//! Requests run the serving node's handler with the real bytes, so the wire codec is part of
//! every test.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::watch;

use super::transport::{Transport, TransportError};

/// Serves requests arriving at a node of a [`MemoryNetwork`].
pub type MemoryHandler = Arc<dyn Fn(Bytes) -> Result<Bytes, String> + Send + Sync>;

/// Counts of what the network did with messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Requests handed to a handler, and answers handed back.
    pub delivered: u64,
    /// Messages lost: dropped at random, over a cut link, or to a stopped node.
    pub lost: u64,
}

struct State {
    handlers: HashMap<String, MemoryHandler>,
    /// Cut links, as (smaller name, larger name).
    cut: HashSet<(String, String)>,
    drop_probability: f64,
    max_delay: Duration,
    rng: StdRng,
    stats: NetworkStats,
}

fn link(a: &str, b: &str) -> (String, String) {
    if a <= b { (a.to_owned(), b.to_owned()) } else { (b.to_owned(), a.to_owned()) }
}

/// The shared medium; cheap to clone (all clones are the same network).
#[derive(Clone)]
pub struct MemoryNetwork {
    state: Arc<Mutex<State>>,
    in_flight: Arc<watch::Sender<usize>>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNetwork").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// Decrements the in-flight count when a call ends, however it ends.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn start(counter: &Arc<watch::Sender<usize>>) -> Self {
        counter.send_modify(|n| *n += 1);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl MemoryNetwork {
    /// A network with no loss and no delay; `seed` drives every random choice.
    pub fn new(seed: u64) -> Self {
        MemoryNetwork {
            state: Arc::new(Mutex::new(State {
                handlers: HashMap::new(),
                cut: HashSet::new(),
                drop_probability: 0.0,
                max_delay: Duration::ZERO,
                rng: StdRng::seed_from_u64(seed),
                stats: NetworkStats::default(),
            })),
            in_flight: Arc::new(watch::channel(0).0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts serving `node` with `handler` (replacing its previous one: a restart).
    pub fn serve(&self, node: &str, handler: MemoryHandler) {
        self.state().handlers.insert(node.to_owned(), handler);
    }

    /// Stops serving `node`: requests to it are lost from now on (a crash).
    pub fn stop(&self, node: &str) {
        self.state().handlers.remove(node);
    }

    /// The transport `node` sends with.
    pub fn transport(&self, node: &str) -> MemoryTransport {
        MemoryTransport { node: node.to_owned(), network: self.clone() }
    }

    /// Cuts the link between `a` and `b` (both directions).
    pub fn remove_link(&self, a: &str, b: &str) {
        self.state().cut.insert(link(a, b));
    }

    /// Heals the link between `a` and `b`.
    pub fn add_link(&self, a: &str, b: &str) {
        self.state().cut.remove(&link(a, b));
    }

    /// Heals every link.
    pub fn heal_all(&self) {
        self.state().cut.clear();
    }

    /// Loses each message (request or answer) with probability `p` (clamped to 0..=1).
    pub fn set_drop_probability(&self, p: f64) {
        self.state().drop_probability = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
    }

    /// Delays each message by a uniform random time up to `max`.
    pub fn set_max_delay(&self, max: Duration) {
        self.state().max_delay = max;
    }

    pub fn stats(&self) -> NetworkStats {
        self.state().stats
    }

    /// Calls still waiting for their answer or timeout.
    pub fn in_flight(&self) -> usize {
        *self.in_flight.borrow()
    }

    /// Waits until no call is in flight, at most `limit`; returns whether that happened.
    /// Tasks spawned before this call get to start their calls first (one yield: enough on
    /// the single-threaded runtime tests use).
    pub async fn settle(&self, limit: Duration) -> bool {
        tokio::task::yield_now().await;
        let mut rx = self.in_flight.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await.is_ok_and(|r| r.is_ok())
    }

    /// Decides the fate of one message from `from` to `to`: its delay, and whether it
    /// arrives (`false`: dropped, or the link is cut).
    fn leg(&self, from: &str, to: &str) -> (Duration, bool) {
        let mut s = self.state();
        let max = u64::try_from(s.max_delay.as_micros()).unwrap_or(u64::MAX);
        let delay = Duration::from_micros(if max == 0 { 0 } else { s.rng.random_range(0..=max) });
        let p = s.drop_probability;
        let dropped = p > 0.0 && s.rng.random_bool(p);
        let arrives = !dropped && !s.cut.contains(&link(from, to));
        (delay, arrives)
    }

    /// The handler of `to` if `from` reaches it now.
    fn reachable(&self, from: &str, to: &str) -> Option<MemoryHandler> {
        let mut s = self.state();
        let handler = if s.cut.contains(&link(from, to)) { None } else { s.handlers.get(to).cloned() };
        match handler {
            Some(_) => s.stats.delivered += 1,
            None => s.stats.lost += 1,
        }
        handler
    }

    fn is_cut(&self, a: &str, b: &str) -> bool {
        self.state().cut.contains(&link(a, b))
    }

    fn lost(&self) {
        self.state().stats.lost += 1;
    }

    async fn call(&self, from: &str, to: &str, request: Bytes, timeout: Duration) -> Result<Bytes, TransportError> {
        let _in_flight = InFlight::start(&self.in_flight);
        let exchange = async {
            let (delay, arrives) = self.leg(from, to);
            tokio::time::sleep(delay).await;
            if !arrives {
                self.lost();
                return std::future::pending().await;
            }
            // The link may have been cut, or the node stopped, while the request travelled.
            let Some(handler) = self.reachable(from, to) else {
                return std::future::pending().await;
            };
            let answer = handler(request);
            let (delay, arrives) = self.leg(to, from);
            tokio::time::sleep(delay).await;
            if !arrives || self.is_cut(from, to) {
                self.lost();
                return std::future::pending().await;
            }
            self.state().stats.delivered += 1;
            answer.map_err(|reason| TransportError::Remote { reason })
        };
        tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(TransportError::Timeout { after: timeout }))
    }
}

/// One node's end of a [`MemoryNetwork`]; peers are named by their node names.
#[derive(Debug, Clone)]
pub struct MemoryTransport {
    node: String,
    network: MemoryNetwork,
}

impl MemoryTransport {
    /// The node this transport sends from.
    pub fn node(&self) -> &str {
        &self.node
    }
}

impl Transport for MemoryTransport {
    type Peer = String;

    async fn call(&self, peer: &String, request: Bytes, timeout: Duration) -> Result<Bytes, TransportError> {
        self.network.call(&self.node, peer, request, timeout).await
    }
}
