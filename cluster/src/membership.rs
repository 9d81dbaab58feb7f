//! Membership: starting chitchat for a node, publishing its key-values, and watching who is in
//! the cluster.
//!
//! [`spawn_membership`] fills every field of chitchat's `ChitchatConfig` from a small
//! [`MembershipConfig`] with the settings measured to work (see FIELD-NOTES): the failure
//! detector's prior interval equals the gossip interval, the dead-node grace period is minutes
//! rather than a day, digests use `ProtocolVersion::V1`, and the generation id is the start
//! time in nanoseconds so a restarted node never inherits its previous incarnation's keys.
//! Gossip is sealed with the cluster's [`GossipKey`] ([`crate::gossip`]) unless the config
//! has no key (tests, benchmarks) or the caller passes its own transport (e.g. chitchat's
//! in-memory `ChannelTransport`).
//!
//! [`Member`] is this crate's view of a chitchat node: one entry per node name (the newest
//! generation wins, so the dead previous incarnation of a restarted node is hidden), with its
//! key-values and a [`MemberState`]. A node announces a graceful departure by publishing
//! `state=leaving` ([`Membership::leave`]); chitchat itself has no leave message. Liveness is
//! "alive for the cluster", not "reachable from me".

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::{Socket, Transport, UdpTransport};
use chitchat::{
    Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion, spawn_chitchat,
};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error};

use crate::gossip::{GossipStats, GossipStatsSnapshot, SealedUdpTransport};
use crate::seal::GossipKey;

/// Key a node publishes to announce its state; see [`STATE_LEAVING`].
pub const STATE_KEY: &str = "state";
/// Value of [`STATE_KEY`] while a node is leaving gracefully.
pub const STATE_LEAVING: &str = "leaving";
/// Largest value accepted by [`Membership::set`]. A chitchat value over ~64 KB never
/// replicates and blocks every later update of its node; bulk data goes over QUIC.
pub const MAX_VALUE_LEN: usize = 16 * 1024;
/// Largest key accepted by [`Membership::set`].
pub const MAX_KEY_LEN: usize = 256;
/// Longest node name or cluster id.
pub const MAX_NAME_LEN: usize = 128;
/// Gossip rounds [`Membership::leave`] waits after announcing the departure.
pub const LEAVE_ROUNDS: u32 = 2;

/// How a node joins and gossips.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Unique name of the node in the cluster.
    pub node_name: String,
    /// Nodes only gossip with nodes of the same cluster id (it is also the sealing AAD).
    pub cluster_id: String,
    /// UDP address to bind (port 0: any free port).
    pub gossip_listen: SocketAddr,
    /// Address peers gossip to; port 0 means "the port actually bound".
    pub gossip_advertise: SocketAddr,
    /// Peers to join through: `ip:port` or `host:port` (re-resolved every minute).
    pub seeds: Vec<String>,
    /// Time between gossip rounds (LAN default 175 ms).
    pub gossip_interval: Duration,
    /// Phi-accrual threshold: dead after about `phi_threshold × gossip_interval` of silence.
    pub phi_threshold: f64,
    /// How long a dead node is remembered before it is forgotten.
    pub dead_node_grace: Duration,
    /// Gossip key; `None` gossips in the clear (tests and benchmarks only).
    pub key: Option<GossipKey>,
}

/// LAN profile: gossip interval. With [`LAN_PHI_THRESHOLD`] a killed node is seen dead in about a
/// second (`phi × mean heartbeat interval`, the mean being a little under the gossip interval).
/// 175 ms rather than 200 ms keeps detection at 50 nodes near 1.1 s (p99 1.6 s at 200 ms: the
/// mean interval grows with the cluster, and deaths are noticed at gossip rounds) while gossip
/// stays under 20 KB/s per node (`benches/membership.sh`).
pub const LAN_GOSSIP_INTERVAL: Duration = Duration::from_millis(175);
/// LAN profile: phi-accrual threshold (chitchat's phi is `silence / mean interval`).
pub const LAN_PHI_THRESHOLD: f64 = 5.0;

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            node_name: String::new(),
            cluster_id: "wasmfleet".to_string(),
            gossip_listen: ([127, 0, 0, 1], 0).into(),
            gossip_advertise: ([127, 0, 0, 1], 0).into(),
            seeds: Vec::new(),
            gossip_interval: LAN_GOSSIP_INTERVAL,
            phi_threshold: LAN_PHI_THRESHOLD,
            dead_node_grace: Duration::from_secs(15 * 60),
            key: None,
        }
    }
}

impl MembershipConfig {
    /// Checks cross-field rules; run before binding anything.
    pub fn validate(&self) -> Result<(), MembershipError> {
        let invalid = |field: &'static str, reason: String| Err(MembershipError::InvalidConfig { field, reason });
        for (field, value) in [("node_name", &self.node_name), ("cluster_id", &self.cluster_id)] {
            if value.is_empty() || value.len() > MAX_NAME_LEN {
                return invalid(field, format!("must be 1 to {MAX_NAME_LEN} bytes"));
            }
            if value.chars().any(char::is_control) {
                return invalid(field, "must not contain control characters".to_string());
            }
        }
        if self.gossip_advertise.ip().is_unspecified() {
            return invalid(
                "gossip_advertise",
                format!("{} is not an address peers can reach: give the node's own IP", self.gossip_advertise.ip()),
            );
        }
        if self.gossip_interval < Duration::from_millis(10) || self.gossip_interval > Duration::from_secs(60) {
            return invalid("gossip_interval", format!("{:?} is outside 10 ms ..= 60 s", self.gossip_interval));
        }
        if !self.phi_threshold.is_finite() || self.phi_threshold <= 0.0 {
            return invalid("phi_threshold", format!("{} must be a positive number (8 is usual)", self.phi_threshold));
        }
        if self.dead_node_grace < self.gossip_interval * 10 {
            return invalid(
                "dead_node_grace",
                format!("{:?} must be at least ten gossip intervals (10-15 min is usual)", self.dead_node_grace),
            );
        }
        if let Some(position) = self.seeds.iter().position(|seed| seed.trim().is_empty()) {
            return invalid("seeds", format!("seed #{position} is empty"));
        }
        Ok(())
    }
}

/// What went wrong in membership.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MembershipError {
    #[error("invalid membership config: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("cannot open the gossip socket on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("cannot start gossip: {reason}")]
    Start { reason: String },
    #[error("key {key:?} is invalid: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error(
        "value of key {key:?} is {len} bytes, over the {max}-byte limit: publish a digest or pointer and move the data over QUIC"
    )]
    ValueTooLarge { key: String, len: usize, max: usize },
    #[error("gossip stopped: {reason}")]
    Stopped { reason: String },
}

/// Liveness of a member as seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberState {
    /// Alive for the cluster (the failure detector hears its heartbeat, maybe through others).
    Alive,
    /// Alive but announced a graceful departure (`state=leaving`).
    Leaving,
    /// Silent for longer than the failure detector tolerates.
    Dead,
}

/// One node of the cluster, as seen from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// Generation id of the incarnation shown (start time in ns).
    pub generation: u64,
    /// Gossip address the node advertises.
    pub gossip_addr: SocketAddr,
    pub state: MemberState,
    /// The node's published key-values (deleted keys excluded).
    pub kv: BTreeMap<String, String>,
}

/// Members as chitchat currently sees them: one per node name (newest generation), sorted by
/// name.
pub fn members_of(chitchat: &Chitchat) -> Vec<Member> {
    let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    let mut by_name: BTreeMap<&str, Member> = BTreeMap::new();
    for (id, node_state) in chitchat.node_states() {
        if by_name.get(&*id.node_id).is_some_and(|known| known.generation >= id.generation_id) {
            continue;
        }
        let kv: BTreeMap<String, String> =
            node_state.key_values().map(|(key, value)| (key.to_string(), value.to_string())).collect();
        let state = if !live.contains(id) {
            MemberState::Dead
        } else if kv.get(STATE_KEY).map(String::as_str) == Some(STATE_LEAVING) {
            MemberState::Leaving
        } else {
            MemberState::Alive
        };
        by_name.insert(
            &id.node_id,
            Member {
                name: id.node_id.to_string(),
                generation: id.generation_id,
                gossip_addr: id.gossip_advertise_addr,
                state,
                kv,
            },
        );
    }
    by_name.into_values().collect()
}

fn check_key_value(key: &str, value: &str) -> Result<(), MembershipError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(MembershipError::InvalidKey {
            key: key.chars().take(64).collect(),
            reason: format!("must be 1 to {MAX_KEY_LEN} bytes"),
        });
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(MembershipError::ValueTooLarge { key: key.to_string(), len: value.len(), max: MAX_VALUE_LEN });
    }
    Ok(())
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Hands chitchat a socket opened beforehand, so the bound port is known before the node's
/// `ChitchatId` (which carries the advertised address) is built.
struct PreOpened(std::sync::Mutex<Option<Box<dyn Socket>>>);

impl Transport for PreOpened {
    fn open<'life0, 'async_trait>(
        &'life0 self,
        _listen_addr: SocketAddr,
    ) -> BoxFuture<'async_trait, anyhow::Result<Box<dyn Socket>>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let socket = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        Box::pin(async move { socket.ok_or_else(|| anyhow::anyhow!("gossip socket already opened")) })
    }
}

/// A running member of the cluster. Dropping it stops gossip (abruptly, like a crash).
pub struct Membership {
    handle: Option<ChitchatHandle>,
    chitchat: Arc<Mutex<Chitchat>>,
    chitchat_id: ChitchatId,
    listen_addr: SocketAddr,
    gossip_interval: Duration,
    members_rx: watch::Receiver<Vec<Member>>,
    refresher: JoinHandle<()>,
    stats: Option<Arc<GossipStats>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("chitchat_id", &self.chitchat_id)
            .field("listen_addr", &self.listen_addr)
            .finish_non_exhaustive()
    }
}

/// Starts gossiping as `config.node_name`, publishing `initial` key-values.
///
/// `transport`: `None` uses sealed UDP (or plain UDP when `config.key` is `None`); tests pass
/// chitchat's `ChannelTransport`.
pub async fn spawn_membership(
    config: MembershipConfig,
    initial: Vec<(String, String)>,
    transport: Option<Box<dyn Transport>>,
) -> Result<Membership, MembershipError> {
    config.validate()?;
    for (key, value) in &initial {
        check_key_value(key, value)?;
    }
    let (transport, stats): (Box<dyn Transport>, Option<Arc<GossipStats>>) = match (transport, &config.key) {
        (Some(transport), _) => (transport, None),
        (None, Some(key)) => {
            let sealed = SealedUdpTransport::new(key, &config.cluster_id);
            let stats = sealed.stats();
            (Box::new(sealed), Some(stats))
        }
        (None, None) => (Box::new(UdpTransport), None),
    };
    let bind_error =
        |err: anyhow::Error| MembershipError::Bind { addr: config.gossip_listen, reason: format!("{err:#}") };
    let socket = transport.open(config.gossip_listen).await.map_err(bind_error)?;
    let listen_addr = socket.local_addr().map_err(bind_error)?;
    let mut advertise = config.gossip_advertise;
    if advertise.port() == 0 {
        advertise.set_port(listen_addr.port());
    }
    let generation = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_nanos() as u64).unwrap_or(0);
    let chitchat_id = ChitchatId::new(config.node_name.clone(), generation, advertise);
    let chitchat_config = ChitchatConfig {
        chitchat_id: chitchat_id.clone(),
        cluster_id: config.cluster_id.clone(),
        gossip_interval: config.gossip_interval,
        listen_addr,
        seed_nodes: config.seeds.clone(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: config.phi_threshold,
            sampling_window_size: 1_000,
            max_interval: Duration::from_secs(10).max(config.gossip_interval * 10),
            // Without this the 5 s prior dominates detection for minutes.
            initial_interval: config.gossip_interval,
            dead_node_grace_period: config.dead_node_grace,
        },
        // A tombstone outlives the time a dead node is remembered: a node away longer comes
        // back as a new incarnation anyway.
        marked_for_deletion_grace_period: config.dead_node_grace,
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: ProtocolVersion::V1,
    };
    let pre_opened = PreOpened(std::sync::Mutex::new(Some(socket)));
    let handle = spawn_chitchat(chitchat_config, initial, &pre_opened)
        .await
        .map_err(|err| MembershipError::Start { reason: format!("{err:#}") })?;
    let chitchat = handle.chitchat();
    let (live_rx, members) = {
        let guard = chitchat.lock().await;
        (guard.live_nodes_watcher(), members_of(&guard))
    };
    let (members_tx, members_rx) = watch::channel(members);
    let refresher = tokio::spawn(refresh_members(
        chitchat.clone(),
        live_rx,
        members_tx,
        config.gossip_interval,
        handle.termination_watcher(),
        config.node_name.clone(),
    ));
    debug!(node = %config.node_name, generation, listen = %listen_addr, advertise = %advertise, "membership started");
    Ok(Membership {
        handle: Some(handle),
        chitchat,
        chitchat_id,
        listen_addr,
        gossip_interval: config.gossip_interval,
        members_rx,
        refresher,
        stats,
    })
}

/// Keeps the members watch current: on every live-set change chitchat reports, and once per
/// gossip round so deaths (which chitchat's watcher may report late) show up too.
async fn refresh_members(
    chitchat: Arc<Mutex<Chitchat>>,
    mut live_rx: watch::Receiver<BTreeMap<ChitchatId, chitchat::NodeState>>,
    members_tx: watch::Sender<Vec<Member>>,
    interval: Duration,
    termination: impl Future<Output = anyhow::Result<()>>,
    node_name: String,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut live_open = true;
    tokio::pin!(termination);
    loop {
        tokio::select! {
            result = &mut termination => {
                if let Err(err) = result {
                    error!(node = %node_name, error = %format!("{err:#}"), "gossip task stopped");
                }
                return;
            }
            changed = live_rx.changed(), if live_open => {
                live_open = changed.is_ok();
            }
            _ = ticker.tick() => {}
        }
        let members = members_of(&*chitchat.lock().await);
        members_tx.send_if_modified(|current| {
            if *current == members {
                false
            } else {
                *current = members;
                true
            }
        });
    }
}

impl Membership {
    /// This incarnation's chitchat id (name, generation, advertised address).
    pub fn chitchat_id(&self) -> &ChitchatId {
        &self.chitchat_id
    }

    pub fn node_name(&self) -> &str {
        &self.chitchat_id.node_id
    }

    pub fn generation(&self) -> u64 {
        self.chitchat_id.generation_id
    }

    /// The address peers gossip to.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.chitchat_id.gossip_advertise_addr
    }

    /// The address the gossip socket is bound to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// Publishes `key=value` in this node's state (at most [`MAX_VALUE_LEN`] bytes).
    pub async fn set(&self, key: &str, value: &str) -> Result<(), MembershipError> {
        check_key_value(key, value)?;
        self.chitchat.lock().await.self_node_state().set(key, value);
        Ok(())
    }

    /// Deletes `key` from this node's state (a no-op if absent).
    pub async fn delete(&self, key: &str) {
        let mut chitchat = self.chitchat.lock().await;
        let node_state = chitchat.self_node_state();
        if node_state.get(key).is_some() {
            node_state.delete(key);
        }
    }

    /// The members as chitchat sees them now.
    pub async fn members(&self) -> Vec<Member> {
        members_of(&*self.chitchat.lock().await)
    }

    /// A receiver of the member list, updated on changes (checked at least once per round).
    pub fn watch(&self) -> watch::Receiver<Vec<Member>> {
        self.members_rx.clone()
    }

    /// Gossip transport counters (sealed UDP only).
    pub fn gossip_stats(&self) -> Option<GossipStatsSnapshot> {
        self.stats.as_ref().map(|stats| stats.snapshot())
    }

    /// Escape hatch to the underlying chitchat instance.
    pub fn chitchat(&self) -> Arc<Mutex<Chitchat>> {
        self.chitchat.clone()
    }

    /// Resolves when gossip stops: `Ok` after a shutdown, `Err` if the gossip task failed
    /// (a fatal UDP error ends it).
    pub fn termination(&self) -> impl Future<Output = Result<(), MembershipError>> + Send + 'static {
        let watcher = self.handle.as_ref().map(ChitchatHandle::termination_watcher);
        async move {
            match watcher {
                Some(watcher) => watcher.await.map_err(|err| MembershipError::Stopped { reason: format!("{err:#}") }),
                None => Ok(()),
            }
        }
    }

    /// Announces a graceful departure (`state=leaving`), lets it spread for
    /// [`LEAVE_ROUNDS`] gossip rounds, then shuts down.
    pub async fn leave(self) -> Result<(), MembershipError> {
        self.chitchat.lock().await.self_node_state().set(STATE_KEY, STATE_LEAVING);
        tokio::time::sleep(self.gossip_interval * LEAVE_ROUNDS).await;
        self.shutdown().await
    }

    /// Stops gossiping now (peers will see this node die).
    pub async fn shutdown(mut self) -> Result<(), MembershipError> {
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        handle.shutdown().await.map_err(|err| MembershipError::Stopped { reason: format!("{err:#}") })
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.refresher.abort();
        if let Some(handle) = &self.handle {
            let _ = handle.initiate_shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MembershipConfig {
        MembershipConfig { node_name: "n1".to_string(), ..MembershipConfig::default() }
    }

    #[test]
    fn default_with_a_name_is_valid() {
        config().validate().unwrap();
    }

    #[test]
    fn validate_rejects_bad_fields() {
        let cases: Vec<(&str, MembershipConfig)> = vec![
            ("node_name", MembershipConfig::default()),
            ("cluster_id", MembershipConfig { cluster_id: String::new(), ..config() }),
            ("gossip_advertise", MembershipConfig { gossip_advertise: ([0, 0, 0, 0], 7000).into(), ..config() }),
            ("gossip_interval", MembershipConfig { gossip_interval: Duration::ZERO, ..config() }),
            ("phi_threshold", MembershipConfig { phi_threshold: f64::NAN, ..config() }),
            ("dead_node_grace", MembershipConfig { dead_node_grace: Duration::from_millis(100), ..config() }),
            ("seeds", MembershipConfig { seeds: vec![" ".to_string()], ..config() }),
        ];
        for (field, config) in cases {
            match config.validate() {
                Err(MembershipError::InvalidConfig { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: expected InvalidConfig, got {other:?}"),
            }
        }
    }

    #[test]
    fn values_are_bounded() {
        assert!(check_key_value("k", &"v".repeat(MAX_VALUE_LEN)).is_ok());
        assert!(matches!(
            check_key_value("k", &"v".repeat(MAX_VALUE_LEN + 1)),
            Err(MembershipError::ValueTooLarge { .. })
        ));
        assert!(check_key_value("", "v").is_err());
        assert!(check_key_value(&"k".repeat(MAX_KEY_LEN + 1), "v").is_err());
    }
}
