//! The node's cluster layer: its identity (a new cluster, or joined with a token), the QUIC mesh
//! and its RPCs, gossip membership, and replication of desired state and modules.
//!
//! - **Identity** lives in `<data>/cluster/`: `cluster.json` (cluster id, node id, gossip key,
//!   seeds), the CA certificate and key, the node certificate and key (keys 0600), and the join
//!   tokens this node issued (`tokens.json`, 0600). A restarted node reuses it: no token needed.
//! - **Joining**: the joiner connects to a seed over QUIC trusting only the CA fingerprint in the
//!   token, proves the token's secret (an HMAC over its node id and a fresh nonce, never the
//!   secret itself), and receives its certificate, the CA and the gossip key. Every member holds
//!   the CA key so that any member can admit new nodes: there is no special node to lose.
//! - **Desired state** replicates with the cluster crate's [`Replicator`] over the mesh
//!   ([`MeshTransport`], its own call channel), the [`Store`] being its storage
//!   ([`crate::state::replica`]): writes are pushed to every live peer and acknowledged once
//!   `min(2, live peers)` (or `--write-quorum`) of them have them durably; every 500 ms
//!   **anti-entropy** publishes this node's store digest in gossip and pulls from peers whose
//!   digest differs what they hold newer. Module blobs are copied to peers at push time and
//!   fetched from a peer, digest-verified, when a node needs one it lacks ([`blobs`]).
//! - **Replica reports** go straight to the peers deciding rollouts, ahead of gossip
//!   (`reports.rs`); **activations** (`Rpc::Activate`) ask a workload's coordinator to scale it
//!   from zero for a held request.
//! - **Persistent volumes**: snapshots shipped from a volume's writer to its holders
//!   ([`volumes`]); **key-value buckets**: the cluster's `wasi:keyvalue` store ([`kv`]).
//!
//! Map: the RPCs and their replies; [`Peering`]: start (new cluster, join, restart), gossip
//! publishing and peer views, replica reports and activations, replication of the store and of
//! module blobs, join tokens; the mesh handler. Becoming a member and admitting joiners:
//! `join.rs`.

pub mod blobs;
mod join;
pub mod kv;
mod reports;
pub mod view;
pub mod volumes;

pub use reports::REPLICAS_SEQ_KEY;
use reports::Reports;
pub use view::{GossipReplica, NodeInfo, NodeView, PeerView, ReplicaMetrics, ReplicaPhase, VolumeCopy};

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use wasmfleet_cluster::membership::{self, Member, MemberState, Membership, MembershipConfig, spawn_membership};
use wasmfleet_cluster::mesh::{Mesh, MeshConfig, PeerInfo, join_call};
use wasmfleet_cluster::pki::{ClusterCa, NodeIdentity};
use wasmfleet_cluster::replication::{
    MeshPeer, MeshTransport, ReplicationError, Replicator, ReplicatorConfig, Storage as _, SummaryDigest,
    serve_replication,
};
use wasmfleet_cluster::seal::GossipKey;
use wasmfleet_cluster::token::{JoinToken, random_secret, secret_proof, verify_secret_proof};
use wasmfleet_runtime::Digest;

use crate::clock::now_ms;
use crate::peering::blobs::BlobTransfer;
use crate::state::write_private;
use crate::state::{Store, StoreError};

const RPC_TIMEOUT: Duration = Duration::from_secs(3);
/// Dead nodes are forgotten after 15 minutes; deletes are remembered twice as long.
const TOMBSTONE_GRACE: Duration = Duration::from_secs(30 * 60);

/// Cluster settings of an agent.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// QUIC listener for peers and joining nodes (port 0: any).
    pub listen_cluster: SocketAddr,
    /// Gossip (UDP) listener; default: the cluster port + 1 (or any port when that is 0).
    pub listen_gossip: Option<SocketAddr>,
    /// The QUIC address peers reach this node on; default: the bound cluster address.
    pub advertise: Option<SocketAddr>,
    /// Seeds to join through (with `token`).
    pub join: Vec<SocketAddr>,
    pub token: Option<String>,
    pub zone: Option<String>,
    /// Copies (besides this node) a write needs before it is acknowledged; default min(2, peers).
    pub write_quorum: Option<usize>,
    pub gossip_interval: Duration,
    /// Phi-accrual threshold: a peer is dead after about `phi × gossip interval` of silence.
    pub phi_threshold: f64,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            listen_cluster: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7946),
            listen_gossip: None,
            advertise: None,
            join: Vec::new(),
            token: None,
            zone: None,
            write_quorum: None,
            gossip_interval: membership::LAN_GOSSIP_INTERVAL,
            phi_threshold: membership::LAN_PHI_THRESHOLD,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ClusterFile {
    cluster_id: String,
    node_id: String,
    gossip_key: String,
    gossip_seeds: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct IssuedToken {
    secret: String,
    expires_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
enum Rpc {
    Join {
        node_id: String,
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
        #[serde(with = "serde_bytes")]
        proof: Vec<u8>,
    },
    Ping,
    /// Health probe: cheaper than Ping (no digest).
    Probe,
    /// The sender's replicas (its gossip `replicas` value), sent straight to the peers that
    /// decide rollouts of them, ahead of gossip. `seq` orders reports from one sender.
    Replicas {
        seq: u64,
        value: String,
    },
    /// A request is held for `target` (an object key), which its autoscaler scaled to zero:
    /// sent to the target's coordinator, which scales it to one.
    Activate {
        target: String,
    },
}

#[derive(Serialize, Deserialize)]
struct JoinGrant {
    cluster_id: String,
    ca_cert: String,
    ca_key: String,
    node_cert: String,
    node_key: String,
    gossip_key: String,
    gossip_seeds: Vec<String>,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    Joined(Box<JoinGrant>),
    Pong { digest: String },
    Ack { won: usize },
}

/// Gossip key of this node's gateway figures for the revisions under analysis.
pub const FIGURES_KEY: &str = "rstats";
/// Gossip key of this node's replica figures for autoscaling.
pub const METRICS_KEY: &str = "rmetrics";
/// Gossip key of the persistent volume copies this node holds.
pub const VOLUMES_KEY: &str = "vols";

/// State the mesh handler needs.
struct Shared {
    node_id: String,
    cluster_id: String,
    dir: PathBuf,
    store: Arc<Store>,
    ca: ClusterCa,
    gossip_key: GossipKey,
    gossip_advertise: Mutex<Option<SocketAddr>>,
    tokens: Mutex<Vec<IssuedToken>>,
    /// Replica reports peers sent straight here ([`Rpc::Replicas`]).
    reports: Reports,
    /// Targets peers asked this node to activate ([`Rpc::Activate`]), not yet acted on.
    activations: Mutex<std::collections::BTreeSet<String>>,
}

/// The running cluster layer of a node.
pub struct Peering {
    shared: Arc<Shared>,
    mesh: Arc<Mesh>,
    /// Replication of the desired-state store (serves peers on its own mesh channel).
    replicator: Arc<Replicator<Store, MeshTransport>>,
    blobs: BlobTransfer,
    volumes: volumes::VolumeTransfer,
    kv: Arc<kv::ClusterKv>,
    membership: tokio::sync::Mutex<Option<Membership>>,
    members: tokio::sync::watch::Receiver<Vec<Member>>,
    advertise: SocketAddr,
    gossip_addr: SocketAddr,
    write_quorum: Option<usize>,
    /// Whether gossip started with any seed (a join, or peers seen alive before a restart):
    /// without one this node has never known another member.
    seeded: bool,
    /// This node's certificate and key (the data-plane lanes' endpoints use them too).
    identity: NodeIdentity,
}

impl std::fmt::Debug for Peering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peering").field("node", &self.shared.node_id).finish_non_exhaustive()
    }
}

fn cluster_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster")
}

impl Peering {
    /// Prepares the identity, binds the mesh, and starts gossip and anti-entropy.
    pub async fn start(
        data_dir: &Path,
        node_id: &str,
        opts: &ClusterOptions,
        store: Arc<Store>,
        info: NodeInfo,
    ) -> Result<Arc<Peering>> {
        let (file, ca, identity) = join::prepare(data_dir, node_id, opts).await?;
        let tokens_path = cluster_dir(data_dir).join("tokens.json");
        let tokens: Vec<IssuedToken> =
            std::fs::read(&tokens_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let gossip_key = GossipKey::from_hex(&file.gossip_key).map_err(|e| anyhow!("cluster.json: gossip key: {e}"))?;
        let shared = Arc::new(Shared {
            node_id: node_id.to_string(),
            cluster_id: file.cluster_id.clone(),
            dir: cluster_dir(data_dir),
            store: store.clone(),
            ca,
            gossip_key: gossip_key.clone(),
            gossip_advertise: Mutex::new(None),
            tokens: Mutex::new(tokens),
            reports: Reports::default(),
            activations: Mutex::new(Default::default()),
        });
        let handler_state = shared.clone();
        let handler = move |peer: PeerInfo, req: Bytes| {
            let state = handler_state.clone();
            async move { state.handle(peer, req).await.map_err(|e| format!("{e:#}")) }
        };
        let mesh_config = MeshConfig::new(opts.listen_cluster, identity.clone());
        let mesh =
            Arc::new(Mesh::bind(mesh_config, Arc::new(handler)).await.context("binding the cluster (QUIC) listener")?);
        let replication = ReplicatorConfig {
            write_quorum: opts.write_quorum.unwrap_or(2),
            rpc_timeout: RPC_TIMEOUT,
            ..ReplicatorConfig::default()
        };
        let replicator =
            Arc::new(Replicator::new(store.clone(), Arc::new(MeshTransport::new(mesh.clone())), replication));
        serve_replication(&mesh, &replicator);
        let blobs = BlobTransfer::new(mesh.clone(), store.clone());
        blobs.serve();
        let dirs = crate::state::copies::VolumeDirs::new(data_dir);
        let volumes = volumes::VolumeTransfer::new(mesh.clone(), dirs, store.clone());
        volumes.serve();
        let bound = mesh.local_addr()?;
        let advertise = opts.advertise.unwrap_or_else(|| {
            let ip = if bound.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { bound.ip() };
            SocketAddr::new(ip, bound.port())
        });
        let gossip_listen = opts.listen_gossip.unwrap_or_else(|| {
            let port = if opts.listen_cluster.port() == 0 { 0 } else { bound.port().wrapping_add(1) };
            SocketAddr::new(bound.ip(), port)
        });
        let gossip_advertise = SocketAddr::new(advertise.ip(), gossip_listen.port());
        let mut info = info;
        info.cluster = advertise.to_string();
        info.zone = opts.zone.clone();
        let digest = store.digest()?.to_string();
        let config = MembershipConfig {
            node_name: node_id.to_string(),
            cluster_id: file.cluster_id.clone(),
            gossip_listen,
            gossip_advertise,
            seeds: file.gossip_seeds.clone(),
            gossip_interval: opts.gossip_interval,
            phi_threshold: opts.phi_threshold,
            dead_node_grace: Duration::from_secs(15 * 60),
            key: Some(gossip_key),
        };
        let initial = vec![("info".to_string(), serde_json::to_string(&info)?), ("digest".to_string(), digest)];
        // Seeds: those of the join, plus every peer seen alive last time (a restarted founder
        // has no join seeds, and its own gossip port may have changed).
        let known: Vec<String> = std::fs::read(cluster_dir(data_dir).join("peers.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut config = config;
        for k in known {
            if !config.seeds.contains(&k) {
                config.seeds.push(k);
            }
        }
        let seeded = !config.seeds.is_empty();
        let membership = spawn_membership(config, initial, None).await.context("starting gossip")?;
        let gossip_addr = membership.gossip_addr();
        *shared.gossip_advertise.lock().unwrap_or_else(|e| e.into_inner()) = Some(gossip_addr);
        let members = membership.watch();
        let kv = kv::ClusterKv::open(data_dir, node_id, mesh.clone(), members.clone())?;
        let peering = Arc::new(Peering {
            shared,
            mesh,
            replicator,
            blobs,
            volumes,
            kv,
            membership: tokio::sync::Mutex::new(Some(membership)),
            members,
            advertise,
            gossip_addr,
            write_quorum: opts.write_quorum,
            seeded,
            identity,
        });
        peering.clone().spawn_anti_entropy();
        Ok(peering)
    }

    /// Whether this node knew of another member when it started: a join, or peers seen alive
    /// before a restart.
    pub fn has_known_peers(&self) -> bool {
        self.seeded
    }

    pub fn cluster_addr(&self) -> SocketAddr {
        self.advertise
    }

    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// This node's cluster identity.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The request the gateway's health probes send.
    pub fn probe_request() -> Bytes {
        Bytes::from(rmp_serde::to_vec_named(&Rpc::Probe).unwrap_or_default())
    }

    /// The QUIC mesh (for forwarded requests).
    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.mesh
    }

    /// Notified whenever membership or any node's published state changes.
    pub fn members_watch(&self) -> tokio::sync::watch::Receiver<Vec<Member>> {
        self.members.clone()
    }

    /// The nodes the scheduler places on: every alive member (not leaving, not dead) that
    /// publishes its node info, this node included. Every node computes the same list from
    /// the same gossip, so placements agree.
    pub fn placement_nodes(&self) -> Vec<wasmfleet_scheduler::NodeInfo> {
        self.members
            .borrow()
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .filter_map(|m| {
                let info: NodeInfo = serde_json::from_str(m.kv.get("info")?).ok()?;
                Some(wasmfleet_scheduler::NodeInfo {
                    id: m.name.clone(),
                    labels: info.labels,
                    zone: info.zone,
                    arch: info.arch,
                    memory_mib: info.memory_mib,
                    cpu_millis: info.cpu_millis,
                    max_instances: info.max_instances.max(1),
                })
            })
            .collect()
    }

    /// Every other node gossip knows of (dead ones included, with their last published state).
    pub fn peer_views(&self) -> Vec<PeerView> {
        self.members
            .borrow()
            .iter()
            .filter(|m| m.name != self.shared.node_id)
            .map(|m| {
                let info: Option<NodeInfo> = m.kv.get("info").and_then(|i| serde_json::from_str(i).ok());
                // A direct report newer than what gossip carries stands in for it, briefly.
                let gossip_seq: u64 = m.kv.get(REPLICAS_SEQ_KEY).and_then(|s| s.parse().ok()).unwrap_or(0);
                let report = self.shared.reports.fresh(&m.name, gossip_seq);
                PeerView {
                    name: m.name.clone(),
                    state: m.state,
                    cluster: info.as_ref().and_then(|i| i.cluster.parse().ok()),
                    info,
                    replicas: report.unwrap_or_else(|| {
                        m.kv.get("replicas").and_then(|r| serde_json::from_str(r).ok()).unwrap_or_default()
                    }),
                    figures: m.kv.get(FIGURES_KEY).and_then(|r| serde_json::from_str(r).ok()).unwrap_or_default(),
                    metrics: m.kv.get(METRICS_KEY).and_then(|r| serde_json::from_str(r).ok()).unwrap_or_default(),
                    volumes: m.kv.get(VOLUMES_KEY).and_then(|r| serde_json::from_str(r).ok()).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The cluster's `wasi:keyvalue` buckets.
    pub fn kv(&self) -> Arc<kv::ClusterKv> {
        self.kv.clone()
    }

    /// Volume snapshots to and from peers.
    pub fn volumes(&self) -> &volumes::VolumeTransfer {
        &self.volumes
    }

    /// Asks this node (its reconciler, if it coordinates `target`) to activate `target`.
    pub fn note_activation(&self, target: &str) {
        self.shared.activations.lock().unwrap_or_else(|e| e.into_inner()).insert(target.to_string());
        self.shared.reports.poke();
    }

    /// Asks `peer` at `addr` to activate `target` (best effort: the held request asks again).
    pub async fn send_activation(&self, peer: &str, addr: SocketAddr, target: String) {
        let Ok(request) = rmp_serde::to_vec_named(&Rpc::Activate { target }) else { return };
        if let Err(e) = self.mesh.call(peer, addr, Bytes::from(request), Duration::from_secs(2)).await {
            tracing::debug!(peer = %peer, error = %e, "activation request not delivered (the request asks again)");
        }
    }

    /// The targets asked to be activated since the last call.
    pub fn take_activations(&self) -> std::collections::BTreeSet<String> {
        std::mem::take(&mut *self.shared.activations.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Notified when a peer reports its replicas directly.
    pub fn reports_notify(&self) -> Arc<tokio::sync::Notify> {
        self.shared.reports.arrived()
    }

    /// Publishes this node's replicas (`value`, the gossip `replicas` JSON) with sequence
    /// `seq` in gossip, and sends it straight to `targets` (peers deciding rollouts of them) so
    /// they see it before gossip carries it. Reports are best effort: gossip follows anyway.
    pub async fn publish_replicas(self: &Arc<Self>, value: &str, seq: u64, targets: &[String]) -> Result<()> {
        self.publish(REPLICAS_SEQ_KEY, &seq.to_string()).await?;
        self.publish("replicas", value).await?;
        let addrs: HashMap<String, SocketAddr> = self.peers().into_iter().collect();
        let request = Bytes::from(rmp_serde::to_vec_named(&Rpc::Replicas { seq, value: value.to_string() })?);
        for target in targets {
            let Some(addr) = addrs.get(target).copied() else { continue };
            let (mesh, target, request) = (self.mesh.clone(), target.clone(), request.clone());
            tokio::spawn(async move {
                if let Err(e) = mesh.call(&target, addr, request, Duration::from_secs(2)).await {
                    tracing::debug!(peer = %target, error = %e, "replica report not delivered (gossip follows)");
                }
            });
        }
        Ok(())
    }

    /// Publishes `key=value` in this node's gossip state.
    pub async fn publish(&self, key: &str, value: &str) -> Result<()> {
        if let Some(m) = self.membership.lock().await.as_ref() {
            m.set(key, value).await?;
        }
        Ok(())
    }

    /// Live peers (not this node) with their cluster address.
    pub fn peers(&self) -> Vec<(String, SocketAddr)> {
        self.members
            .borrow()
            .iter()
            .filter(|m| m.name != self.shared.node_id && m.state == MemberState::Alive)
            .filter_map(|m| {
                let info: NodeInfo = serde_json::from_str(m.kv.get("info")?).ok()?;
                Some((m.name.clone(), info.cluster.parse().ok()?))
            })
            .collect()
    }

    /// Whether every live peer publishes the same store digest as this node.
    pub fn in_sync(&self) -> Result<bool, StoreError> {
        let mine = self.shared.store.digest()?.to_string();
        Ok(self
            .members
            .borrow()
            .iter()
            .filter(|m| m.name != self.shared.node_id && m.state == MemberState::Alive)
            .all(|m| m.kv.get("digest").is_some_and(|d| *d == mine)))
    }

    /// Members as the API shows them.
    pub fn nodes(&self) -> Result<Vec<NodeView>, StoreError> {
        let mine = self.shared.store.digest()?.to_string();
        let mut v: Vec<NodeView> = self
            .members
            .borrow()
            .iter()
            .map(|m| NodeView {
                name: m.name.clone(),
                state: format!("{:?}", m.state),
                info: m.kv.get("info").and_then(|i| serde_json::from_str(i).ok()),
                generation: m.generation,
                in_sync: m.kv.get("digest").is_some_and(|d| *d == mine),
                this_node: m.name == self.shared.node_id,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// Issues a join token valid for `ttl`, with this node as the seed.
    pub fn create_token(&self, ttl: Duration) -> Result<String> {
        let secret = random_secret();
        let expires_at_ms = now_ms() + ttl.as_millis() as u64;
        let token = JoinToken {
            cluster_id: self.shared.cluster_id.clone(),
            seeds: vec![self.advertise],
            ca_fingerprint: self.shared.ca.fingerprint(),
            secret,
            expires_at_ms,
        };
        let mut tokens = self.shared.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.retain(|t| t.expires_at_ms > now_ms());
        tokens.push(IssuedToken { secret: hex::encode(secret), expires_at_ms });
        write_private(&self.shared.dir.join("tokens.json"), &serde_json::to_vec(&*tokens)?)?;
        Ok(token.encode())
    }

    /// Pushes the entries of `keys` (objects, `tag/…`, `job/…`; written here already) to every
    /// live peer; returns the number of durable copies (this node included) once the write
    /// quorum acknowledged or the deadline passed. Stragglers still get the push in the
    /// background. A store that cannot be read is an error, not one copy.
    pub async fn replicate(&self, keys: &[String]) -> Result<usize, ReplicationError> {
        Ok(self.replicator.replicate(keys, &self.mesh_peers()).await?.copies)
    }

    /// Live peers as the replicator addresses them.
    fn mesh_peers(&self) -> Vec<MeshPeer> {
        self.peers().into_iter().map(|(node_id, addr)| MeshPeer { node_id, addr }).collect()
    }

    /// Copies a module blob (streamed) to peers; returns the copies (this node included).
    pub async fn replicate_blob(self: &Arc<Self>, digest: Digest, bytes: Bytes) -> usize {
        let this = self.clone();
        self.fan_out(crate::peering::blobs::PUT_TIMEOUT, move |_, name, addr| {
            let (this, bytes) = (this.clone(), bytes.clone());
            async move {
                match this.blobs.put(&name, addr, digest, bytes).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(peer = %name, error = %format!("{e:#}"), "module copy failed");
                        false
                    }
                }
            }
        })
        .await
    }

    /// Peers a write must reach: `--write-quorum` (default 2), at most the live peers.
    fn quorum(&self, live_peers: usize) -> usize {
        self.write_quorum.unwrap_or(2).min(live_peers)
    }

    /// Copies (this node included) a write must reach before it counts as durable; a write
    /// answered with fewer is reported to the client (`202 Accepted`).
    pub fn wanted_copies(&self) -> usize {
        1 + self.quorum(self.peers().len())
    }

    /// Runs `send` for every live peer; returns 1 + the successes once the write quorum
    /// answered or `timeout` passed. Stragglers finish in the background.
    async fn fan_out<F, Fut>(&self, timeout: Duration, send: F) -> usize
    where
        F: Fn(Arc<Mesh>, String, SocketAddr) -> Fut,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        let peers = self.peers();
        let quorum = self.quorum(peers.len());
        let mut set = JoinSet::new();
        for (name, addr) in peers {
            set.spawn(send(self.mesh.clone(), name, addr));
        }
        let mut acks = 0;
        let deadline = tokio::time::Instant::now() + timeout;
        while acks < quorum {
            match tokio::time::timeout_at(deadline, set.join_next()).await {
                Ok(Some(Ok(true))) => acks += 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        // Let the remaining pushes finish on their own.
        tokio::spawn(async move { while set.join_next().await.is_some() {} });
        1 + acks
    }

    /// Fetches a module blob this node lacks from a live peer (streamed, resumable);
    /// verifies and stores it.
    pub async fn fetch_blob(&self, digest: Digest) -> Result<()> {
        if let Some(f) = self.blobs.fetch(digest, &self.peers()).await? {
            tracing::info!(module = %digest, peer = %f.from, bytes = f.size, resumed_at = f.resumed_at, "fetched module");
        }
        Ok(())
    }

    /// Every 500 ms: one anti-entropy round (pull from live peers whose gossiped digest
    /// differs), then publish this node's digest if it changed.
    fn spawn_anti_entropy(self: Arc<Self>) {
        let weak = Arc::downgrade(&self);
        drop(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut published: Option<SummaryDigest> = None;
            let mut remembered: Vec<String> = Vec::new();
            let mut rounds: u64 = 0;
            let mut last_warned: Option<tokio::time::Instant> = None;
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                this.remember_peers(&mut remembered);
                rounds += 1;
                // Tombstones go after twice the dead-node grace: every peer that could still
                // come back has had time to learn of the delete.
                if rounds.is_multiple_of(120)
                    && let Err(e) = this.shared.store.gc_tombstones(TOMBSTONE_GRACE.as_millis() as u64)
                {
                    tracing::warn!(error = %e, "tombstone collection failed");
                }
                let peers = this.gossiped_digests();
                let round = match this.replicator.anti_entropy(&peers).await {
                    Ok(round) => round,
                    Err(e) => {
                        // A failing disk fails every round: say so once a minute.
                        if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                            tracing::warn!(error = %e, "anti-entropy cannot read this node's store");
                            last_warned = Some(tokio::time::Instant::now());
                        }
                        continue;
                    }
                };
                for (peer, won) in round.pulled.iter().filter(|(_, won)| *won > 0) {
                    tracing::info!(peer = %peer, records = won, "caught up from peer");
                }
                for (peer, e) in &round.failed {
                    tracing::debug!(peer = %peer, error = %e, "anti-entropy pull failed");
                }
                // The digest before this round's pulls: a change they made is published next
                // round, after peers had the chance to see this one.
                if published != Some(round.digest) {
                    if let Some(m) = this.membership.lock().await.as_ref() {
                        let _ = m.set("digest", &round.digest.to_string()).await;
                    }
                    published = Some(round.digest);
                }
            }
        });
    }

    /// Live peers with the store digest each publishes in gossip (none if it publishes none,
    /// or an unreadable one).
    fn gossiped_digests(&self) -> Vec<(MeshPeer, Option<SummaryDigest>)> {
        let peers = self.mesh_peers();
        let members = self.members.borrow();
        peers
            .into_iter()
            .map(|peer| {
                let digest = members
                    .iter()
                    .find(|m| m.name == peer.node_id)
                    .and_then(|m| m.kv.get("digest"))
                    .and_then(|d| d.parse().ok());
                (peer, digest)
            })
            .collect()
    }

    /// Keeps `peers.json` (gossip addresses of live peers) current, for seeds after a restart.
    fn remember_peers(&self, remembered: &mut Vec<String>) {
        let mut now: Vec<String> = self
            .members
            .borrow()
            .iter()
            .filter(|m| m.name != self.shared.node_id && m.state == MemberState::Alive)
            .map(|m| m.gossip_addr.to_string())
            .collect();
        now.sort();
        if now.is_empty() || now == *remembered {
            return;
        }
        if let Ok(bytes) = serde_json::to_vec(&now)
            && write_private(&self.shared.dir.join("peers.json"), &bytes).is_ok()
        {
            *remembered = now;
        }
    }

    /// Stops gossip and the mesh without announcing anything (a crash looks the same).
    pub fn leave_quietly(&self) {
        self.mesh.shutdown();
    }

    /// Announces a graceful departure (two gossip rounds), then stops gossip and the mesh.
    pub async fn leave(&self) {
        if let Some(m) = self.membership.lock().await.take() {
            let _ = m.leave().await;
        }
        self.mesh.shutdown();
    }
}

impl Shared {
    async fn handle(&self, peer: PeerInfo, req: Bytes) -> Result<Bytes> {
        let rpc: Rpc = rmp_serde::from_slice(&req).context("undecodable request")?;
        let reply = match (rpc, peer.node_id) {
            (Rpc::Join { node_id, nonce, proof }, _) => Reply::Joined(Box::new(self.admit(&node_id, &nonce, &proof)?)),
            (_, None) => bail!("not authenticated: only a join request is accepted without a node certificate"),
            (Rpc::Ping, Some(_)) => Reply::Pong { digest: self.store.digest()?.to_string() },
            (Rpc::Probe, Some(_)) => Reply::Ack { won: 0 },
            (Rpc::Replicas { seq, value }, Some(sender)) => {
                let replicas: Vec<GossipReplica> =
                    serde_json::from_str(&value).context("undecodable replica report")?;
                self.reports.accept(sender, seq, replicas);
                Reply::Ack { won: 0 }
            }
            (Rpc::Activate { target }, Some(_)) => {
                self.activations.lock().unwrap_or_else(|e| e.into_inner()).insert(target);
                self.reports.poke();
                Reply::Ack { won: 0 }
            }
        };
        Ok(Bytes::from(rmp_serde::to_vec_named(&reply)?))
    }
}
