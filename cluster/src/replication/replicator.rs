//! The replication protocol of one node: write fan-out with acknowledgements, anti-entropy
//! rounds, and serving peers' requests, over a [`Storage`] and a [`Transport`].
//!
//! The replicator keeps no membership of its own: callers pass the live peers (and the
//! digests they gossip) into each call, so the same code runs over the QUIC mesh with
//! chitchat membership and over a [`MemoryNetwork`](super::MemoryNetwork) in tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;
use tracing::debug;

use super::entry::{Entry, Key};
use super::storage::Storage;
use super::summary::SummaryDigest;
use super::transport::{Transport, TransportError};
use super::wire::{self, Request, Response, WireError, WireLimits};

/// Settings of a [`Replicator`].
#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    /// Acknowledgements (copies besides this node) a write waits for, at most the number of
    /// live peers. Default 2.
    pub write_quorum: usize,
    /// How long a write waits for its quorum, and any one request for its answer.
    /// Default 3 s.
    pub rpc_timeout: Duration,
    /// Keys asked for in one pull (bounds the size of an answer). Default 128.
    pub pull_batch: usize,
    /// Bounds on what is decoded from peers.
    pub limits: WireLimits,
}

impl Default for ReplicatorConfig {
    fn default() -> Self {
        ReplicatorConfig {
            write_quorum: 2,
            rpc_timeout: Duration::from_secs(3),
            pull_batch: 128,
            limits: WireLimits::default(),
        }
    }
}

/// What went wrong in replication.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("storage failed: {source}")]
    Storage {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{request} to {peer} failed: {source}")]
    Transport {
        peer: String,
        request: &'static str,
        #[source]
        source: TransportError,
    },
    #[error("{request} answer from {peer}: {source}")]
    Answer {
        peer: String,
        request: &'static str,
        #[source]
        source: WireError,
    },
    #[error("{peer} answered {request} with something else")]
    UnexpectedAnswer { peer: String, request: &'static str },
    /// A peer's request could not be decoded, or an answer encoded.
    #[error(transparent)]
    Wire(#[from] WireError),
}

fn storage_error(e: impl std::error::Error + Send + Sync + 'static) -> ReplicationError {
    ReplicationError::Storage { source: Box::new(e) }
}

/// A write's durability once [`Replicator::replicate`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copies<P> {
    /// Durable copies: this node and every peer that acknowledged in time.
    pub copies: usize,
    /// The peers that acknowledged (`copies - 1` of them).
    pub acknowledged_by: Vec<P>,
}

/// What one anti-entropy round did.
#[derive(Debug)]
pub struct Round<P> {
    /// This node's digest when the round began (what it should publish in gossip).
    pub digest: SummaryDigest,
    /// Peers pulled from, with how many keys each changed here.
    pub pulled: Vec<(P, usize)>,
    /// Peers whose pull failed, and why.
    pub failed: Vec<(P, ReplicationError)>,
}

/// One node's side of replication.
pub struct Replicator<S: Storage, T: Transport> {
    storage: Arc<S>,
    transport: Arc<T>,
    config: ReplicatorConfig,
    /// Pushes still running after their write returned; aborted when the replicator is
    /// dropped (a stopped node sends nothing more).
    stragglers: Mutex<JoinSet<()>>,
}

impl<S: Storage, T: Transport> std::fmt::Debug for Replicator<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<S: Storage, T: Transport> Replicator<S, T> {
    pub fn new(storage: Arc<S>, transport: Arc<T>, config: ReplicatorConfig) -> Self {
        Replicator { storage, transport, config, stragglers: Mutex::new(JoinSet::new()) }
    }

    pub fn storage(&self) -> &Arc<S> {
        &self.storage
    }

    pub fn config(&self) -> &ReplicatorConfig {
        &self.config
    }

    /// Pushes the entries of `keys` (written durably here already) to `peers`; returns once
    /// `min(write_quorum, peers)` of them acknowledged them durably, or the deadline passed.
    /// Pushes to the other peers finish in the background. A key this node does not hold is
    /// skipped; with none left there is nothing to push and the write has one copy.
    pub async fn replicate(&self, keys: &[Key], peers: &[T::Peer]) -> Result<Copies<T::Peer>, ReplicationError> {
        let entries = self.storage.read(keys).map_err(storage_error)?;
        if entries.is_empty() {
            return Ok(Copies { copies: 1, acknowledged_by: Vec::new() });
        }
        self.push(entries, peers).await
    }

    /// [`Replicator::replicate`] with the entries given.
    pub async fn push(
        &self,
        entries: Vec<Entry<S::Value>>,
        peers: &[T::Peer],
    ) -> Result<Copies<T::Peer>, ReplicationError> {
        let body = wire::encode(&Request::Push { entries })?;
        let quorum = self.config.write_quorum.min(peers.len());
        let mut pushes = JoinSet::new();
        for peer in peers {
            let (transport, peer, body) = (self.transport.clone(), peer.clone(), body.clone());
            let (timeout, limits) = (self.config.rpc_timeout, self.config.limits);
            pushes.spawn(async move {
                let acked = match call::<S::Value, T>(&transport, &peer, body, "Push", timeout, &limits).await {
                    Ok(Response::Ack { .. }) => true,
                    Ok(_) => {
                        debug!(peer = %peer, "unexpected answer to a push");
                        false
                    }
                    Err(e) => {
                        debug!(peer = %peer, error = %e, "push failed");
                        false
                    }
                };
                (peer, acked)
            });
        }
        let mut acknowledged_by = Vec::new();
        let deadline = tokio::time::Instant::now() + self.config.rpc_timeout;
        while acknowledged_by.len() < quorum {
            match tokio::time::timeout_at(deadline, pushes.join_next()).await {
                Ok(Some(Ok((peer, true)))) => acknowledged_by.push(peer),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if !pushes.is_empty() {
            let mut stragglers = self.stragglers.lock().unwrap_or_else(|e| e.into_inner());
            while stragglers.try_join_next().is_some() {}
            stragglers.spawn(async move { while pushes.join_next().await.is_some() {} });
        }
        Ok(Copies { copies: 1 + acknowledged_by.len(), acknowledged_by })
    }

    /// One anti-entropy round: pulls from every peer whose gossiped digest differs from this
    /// node's (peers without a digest are skipped). Fails only if this node's own digest
    /// cannot be read; a failed pull is reported in the round.
    pub async fn anti_entropy(
        &self,
        peers: &[(T::Peer, Option<SummaryDigest>)],
    ) -> Result<Round<T::Peer>, ReplicationError> {
        let digest = self.storage.digest().map_err(storage_error)?;
        let mut round = Round { digest, pulled: Vec::new(), failed: Vec::new() };
        for (peer, theirs) in peers {
            if theirs.is_none_or(|d| d == digest) {
                continue;
            }
            match self.pull_from(peer).await {
                Ok(won) => round.pulled.push((peer.clone(), won)),
                Err(e) => round.failed.push((peer.clone(), e)),
            }
        }
        Ok(round)
    }

    /// Asks `peer` for its summary and pulls what it holds newer (or, in join keyspaces,
    /// different), in batches; merges each batch durably. Returns how many keys changed here.
    pub async fn pull_from(&self, peer: &T::Peer) -> Result<usize, ReplicationError> {
        let theirs = match self.request(peer, &Request::Summary).await? {
            Response::Summary(s) => s,
            _ => return Err(ReplicationError::UnexpectedAnswer { peer: peer.to_string(), request: "Summary" }),
        };
        let mine = self.storage.summary().map_err(storage_error)?;
        let wanted = mine.wanted::<S::Value>(&theirs);
        let mut won = 0;
        for keys in wanted.chunks(self.config.pull_batch.max(1)) {
            let entries = match self.request(peer, &Request::Pull { keys: keys.to_vec() }).await? {
                Response::Entries(e) => e,
                _ => return Err(ReplicationError::UnexpectedAnswer { peer: peer.to_string(), request: "Pull" }),
            };
            won += self.storage.merge(entries).map_err(storage_error)?;
        }
        Ok(won)
    }

    /// Serves a peer's request: decodes it (within the limits), answers from the storage.
    /// Pushed entries are durable before the answer is.
    pub fn handle(&self, request: &[u8]) -> Result<Bytes, ReplicationError> {
        let response = match wire::decode_request::<S::Value>(request, &self.config.limits)? {
            Request::Summary => Response::Summary(self.storage.summary().map_err(storage_error)?),
            Request::Pull { keys } => Response::Entries(self.storage.read(&keys).map_err(storage_error)?),
            Request::Push { entries } => {
                let won = self.storage.merge(entries).map_err(storage_error)?;
                Response::Ack { won: won as u64 }
            }
        };
        Ok(wire::encode(&response)?)
    }

    async fn request(
        &self,
        peer: &T::Peer,
        request: &Request<S::Value>,
    ) -> Result<Response<S::Value>, ReplicationError> {
        let body = wire::encode(request)?;
        call::<S::Value, T>(&self.transport, peer, body, request.name(), self.config.rpc_timeout, &self.config.limits)
            .await
    }
}

/// One request to `peer` and its decoded answer.
async fn call<V: serde::de::DeserializeOwned, T: Transport>(
    transport: &T,
    peer: &T::Peer,
    body: Bytes,
    request: &'static str,
    timeout: Duration,
    limits: &WireLimits,
) -> Result<Response<V>, ReplicationError> {
    let answer = transport.call(peer, body, timeout).await.map_err(|source| ReplicationError::Transport {
        peer: peer.to_string(),
        request,
        source,
    })?;
    wire::decode_response(&answer, limits).map_err(|source| ReplicationError::Answer {
        peer: peer.to_string(),
        request,
        source,
    })
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::Version;
    use crate::replication::merge::Merge;
    use crate::replication::{MemoryNetwork, MemoryStorage, MemoryTransport};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Text(String);
    impl Merge for Text {}

    type Repl = Replicator<MemoryStorage<Text>, MemoryTransport>;

    const TIMEOUT: Duration = Duration::from_millis(500);

    struct Cluster {
        net: MemoryNetwork,
        nodes: Vec<Arc<Repl>>,
    }

    fn name(i: usize) -> String {
        format!("n{i}")
    }

    fn cluster(n: usize, config: ReplicatorConfig) -> Cluster {
        let net = MemoryNetwork::new(7);
        let nodes = (0..n)
            .map(|i| {
                let r = Arc::new(Replicator::new(
                    Arc::new(MemoryStorage::new()),
                    Arc::new(net.transport(&name(i))),
                    config.clone(),
                ));
                let weak = Arc::downgrade(&r);
                net.serve(
                    &name(i),
                    Arc::new(move |req| match weak.upgrade() {
                        Some(r) => r.handle(&req).map_err(|e| e.to_string()),
                        None => Err("stopped".into()),
                    }),
                );
                r
            })
            .collect();
        Cluster { net, nodes }
    }

    fn config() -> ReplicatorConfig {
        ReplicatorConfig { rpc_timeout: TIMEOUT, ..ReplicatorConfig::default() }
    }

    fn others(c: &Cluster, me: usize) -> Vec<String> {
        (0..c.nodes.len()).filter(|i| *i != me).map(name).collect()
    }

    /// Writes `key` on node `i` (locally, durably) at `wall_ms`.
    fn write(c: &Cluster, i: usize, key: &str, wall_ms: u64) {
        let version = Version { wall_ms, counter: 0, node: i as u64 };
        let entry = Entry::live(key, version, Text(format!("{key}@{wall_ms}")));
        assert!(c.nodes[i].storage().write(entry).unwrap());
    }

    fn holds(c: &Cluster, i: usize, key: &str) -> bool {
        c.nodes[i].storage().get(key).is_some()
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_returns_at_quorum_and_stragglers_finish_in_the_background() {
        let c = cluster(4, config());
        c.net.set_max_delay(Duration::from_millis(50));
        write(&c, 0, "a", 1);
        let t0 = tokio::time::Instant::now();
        let copies = c.nodes[0].replicate(&["a".into()], &others(&c, 0)).await.unwrap();
        assert_eq!(copies.copies, 3, "this node and the quorum of two");
        assert_eq!(copies.acknowledged_by.len(), 2);
        assert!(t0.elapsed() < TIMEOUT, "returned at quorum, not at the deadline");
        assert!(
            copies.acknowledged_by.iter().all(|p| holds(&c, p[1..].parse().unwrap(), "a")),
            "acknowledged = durable"
        );
        // The third peer gets it too, after the write returned.
        assert!(c.net.settle(TIMEOUT).await);
        assert!((1..4).all(|i| holds(&c, i, "a")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_below_quorum_returns_at_the_deadline_with_the_copies_it_has() {
        let c = cluster(4, config());
        c.net.remove_link("n0", "n1");
        c.net.remove_link("n0", "n2");
        write(&c, 0, "a", 1);
        let t0 = tokio::time::Instant::now();
        let copies = c.nodes[0].replicate(&["a".into()], &others(&c, 0)).await.unwrap();
        assert_eq!(copies, Copies { copies: 2, acknowledged_by: vec!["n3".to_string()] });
        assert_eq!(t0.elapsed(), TIMEOUT);
        // Alone, a node's write has one copy and waits for nobody.
        let copies = c.nodes[0].replicate(&["a".into()], &[]).await.unwrap();
        assert_eq!(copies.copies, 1);
        // A key this node does not hold has nothing to push.
        let copies = c.nodes[0].replicate(&["absent".into()], &others(&c, 0)).await.unwrap();
        assert_eq!(copies.copies, 1);
        assert_eq!(c.net.in_flight(), 2, "only the two pushes over cut links are still waiting");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_replicator_sends_nothing_more() {
        let c = cluster(2, ReplicatorConfig { write_quorum: 0, ..config() });
        c.net.set_max_delay(Duration::from_millis(100));
        write(&c, 0, "a", 1);
        write(&c, 0, "b", 2);
        let Cluster { net: _net, mut nodes } = c;
        // While it lives, its pushes arrive after the write returned.
        let copies = nodes[0].replicate(&["a".into()], &["n1".into()]).await.unwrap();
        assert_eq!(copies.copies, 1, "a quorum of zero waits for nobody");
        assert!(wait_until(|| nodes[1].storage().get("a").is_some()).await);
        nodes[0].replicate(&["b".into()], &["n1".into()]).await.unwrap();
        nodes.remove(0);
        assert!(!wait_until(|| nodes[0].storage().get("b").is_some()).await, "the push died with its node");
    }

    /// Waits (bounded, four timeouts of virtual time) for `cond`; returns whether it held.
    async fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + 4 * TIMEOUT;
        while !cond() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    #[tokio::test(start_paused = true)]
    async fn anti_entropy_pulls_in_batches_from_differing_peers_only() {
        let c = cluster(3, ReplicatorConfig { pull_batch: 2, ..config() });
        for (i, key) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            write(&c, 0, key, i as u64 + 1);
        }
        write(&c, 2, "a", 100); // newer than n0's
        write(&c, 1, "b", 0); // older than n0's
        let digest = |i: usize| Some(c.nodes[i].storage().digest().unwrap());
        let before = c.net.stats();
        let round = c.nodes[1].anti_entropy(&[("n0".into(), digest(0)), ("n1".into(), digest(1))]).await.unwrap();
        assert_eq!(round.pulled, [("n0".to_string(), 5)]);
        assert!(round.failed.is_empty());
        // A summary and three pulls of at most two keys, each answered.
        assert_eq!(c.net.stats().delivered - before.delivered, 8);
        let round = c.nodes[1].anti_entropy(&[("n2".into(), digest(2))]).await.unwrap();
        assert_eq!(round.pulled, [("n2".to_string(), 1)]);
        assert_eq!(c.nodes[1].storage().get("a").unwrap().version.wall_ms, 100);
        // Peers without a digest (or with an equal one) are not asked.
        let before = c.net.stats();
        let round = c.nodes[1].anti_entropy(&[("n0".into(), None), ("n2".into(), digest(1))]).await.unwrap();
        assert!(round.pulled.is_empty());
        assert_eq!(c.net.stats(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn storage_failures_are_errors_not_empty_answers() {
        let c = cluster(2, config());
        write(&c, 0, "a", 1);
        write(&c, 1, "b", 1);
        c.nodes[0].storage().set_failing(true);
        // Reading the write fails: no push claims a copy.
        let err = c.nodes[0].replicate(&["a".into()], &["n1".into()]).await.unwrap_err();
        assert!(matches!(err, ReplicationError::Storage { .. }), "{err}");
        // Its own digest fails: the round fails.
        let err = c.nodes[0].anti_entropy(&[("n1".into(), None)]).await.unwrap_err();
        assert!(matches!(err, ReplicationError::Storage { .. }), "{err}");
        // Serving fails, and the peer hears it as an error, not as an empty summary.
        let err = c.nodes[1].pull_from(&"n0".into()).await.unwrap_err();
        assert!(
            matches!(&err, ReplicationError::Transport { source: TransportError::Remote { reason }, .. } if reason.contains("storage")),
            "{err}"
        );
        let copies = c.nodes[1].replicate(&["b".into()], &["n0".into()]).await.unwrap();
        assert_eq!(copies.copies, 1, "a push the peer could not store is not a copy");
        c.nodes[0].storage().set_failing(false);
        assert_eq!(c.nodes[1].pull_from(&"n0".into()).await.unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn malformed_requests_are_refused() {
        let c = cluster(1, config());
        assert!(matches!(c.nodes[0].handle(&[]), Err(ReplicationError::Wire(WireError::Empty))));
        assert!(matches!(c.nodes[0].handle(&[1, 0xc1]), Err(ReplicationError::Wire(WireError::Decode { .. }))));
        assert!(matches!(c.nodes[0].handle(&[2, 0x90]), Err(ReplicationError::Wire(WireError::Version { got: 2 }))));
    }
}
