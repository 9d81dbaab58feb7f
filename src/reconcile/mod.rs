//! The reconciler: turns desired state (the store) into running replicas on this node, keeps
//! the gateway's routing table and the Services' ports in step, and records Job progress.
//!
//! It runs whenever the store or the cluster's gossip changes, and once a second. Each pass
//! is: compute the placement of every replica in the cluster (the scheduler's pure placement
//! over the replicated desired state and the live members, kept by a `Scheduler` that
//! recomputes only what changed: every node computes the same answer, so no leader is
//! needed), start what is assigned here and not running (or running an older revision: the
//! new replica starts before the old one stops), stop what is no longer assigned (a replica
//! that moved keeps serving until its new node reports it ready), publish this node's
//! replicas in gossip, and rebuild the routing table from the local replicas and the ready
//! replicas other nodes publish.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wasmfleet_runtime::{
    Backoff, CommandHandle, Digest, HttpService, Limits, LogBuffer, LogStream, Module, ModuleKind, Phase, Preopen,
    RestartPolicy as RtRestart, Runtime, ServiceStats, WorkloadSpec,
};
use wasmfleet_scheduler::{NodeInfo, WorkloadKind, WorkloadReq};

use crate::clock::now_ms;
use crate::dataplane::gateway::{Backend, Binding, Endpoint, Routes, RoutingTable, ServiceRoute};
use crate::manifest::{Kind, Object, ObjectKey, RestartPolicy, WorkloadTemplate, selector_matches};
use crate::peering::{GossipReplica, PeerView, ReplicaPhase};
use crate::state::{JobRecord, Store, StoredObject};
use wasmfleet_cluster::membership::MemberState;

const LOG_BYTES: usize = 256 * 1024;
/// A replica on another node: (node, ready, running).
type Elsewhere<'a> = (&'a str, bool, bool);
/// Largest `replicas` value published in gossip.
const GOSSIP_VALUE_LIMIT: usize = 48 * 1024;
/// How long a new revision may take to become ready before it replaces the old one anyway.
const TAKEOVER_GRACE: Duration = Duration::from_secs(30);
/// How long a replica assigned elsewhere keeps serving here while its new node is not ready.
const MOVE_GRACE: Duration = Duration::from_secs(20);
/// After start, Jobs wait this long for membership to settle, so a node that has not yet
/// heard of its peers does not start Job replicas that belong to them.
const JOB_SETTLE: Duration = Duration::from_secs(2);
/// After a restart, until a live peer is seen or this long has passed, the node runs the
/// replicas it was last assigned (from `assigned.json`), not what a placement over itself
/// alone would give it: a restart in a healthy cluster starts no replica it will stop a moment
/// later, and a node that comes back with no network serves its share at once. Past the
/// grace, a node that still sees no one places everything over itself (it is the cluster).
const BOOT_GRACE: Duration = Duration::from_secs(5);
/// Where the replicas last assigned to this node are kept (`owner#index` per line).
const ASSIGNED_FILE: &str = "assigned.json";

/// Identity of a replica slot: the owning object and an index; DaemonSet replicas are
/// named by their node instead (their slot index shifts as nodes come and go).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaKey {
    pub owner: ObjectKey,
    pub index: u32,
    pub node: Option<String>,
}

impl ReplicaKey {
    pub fn new(owner: ObjectKey, index: u32) -> Self {
        ReplicaKey { owner, index, node: None }
    }

    pub fn name(&self) -> String {
        match &self.node {
            Some(node) => format!("{}-{node}", self.owner.name),
            None => format!("{}-{}", self.owner.name, self.index),
        }
    }
}

/// A replica as reported by the API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReplicaStatus {
    pub name: String,
    pub owner: String,
    pub namespace: String,
    pub node: String,
    pub revision: String,
    pub module: String,
    pub kind: String,
    pub phase: ReplicaPhase,
    pub ready: bool,
    pub restarts: u32,
    pub started_ms: u64,
    pub message: Option<String>,
    pub stats: Option<ServiceStats>,
}

/// Per-object status the API shows next to the spec.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ObjectStatus {
    pub desired: u32,
    pub ready: u32,
    pub messages: Vec<String>,
    /// Services: node ports and whether they could be bound.
    pub ports: Vec<PortStatus>,
    /// Services: endpoints (replica names) and readiness.
    pub endpoints: Vec<(String, bool)>,
    /// Jobs.
    pub succeeded: u32,
    pub failed: u32,
    pub complete: bool,
}

/// A Service port's listener task (if bound) and its status.
type PortListener = (Option<JoinHandle<()>>, PortStatus);

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PortStatus {
    pub port: u16,
    pub bound: bool,
    pub error: Option<String>,
}

enum Runner {
    Http { service: HttpService, ready: Arc<AtomicBool>, probe: Option<JoinHandle<()>> },
    Command(CommandHandle),
}

struct Replica {
    key: ReplicaKey,
    revision: String,
    digest: Digest,
    runner: Runner,
    started_ms: u64,
    labels: BTreeMap<String, String>,
}

impl Replica {
    fn ready(&self) -> bool {
        match &self.runner {
            Runner::Http { ready, .. } => ready.load(Ordering::Relaxed),
            Runner::Command(h) => h.status().phase == Phase::Running,
        }
    }

    async fn stop(self) {
        match self.runner {
            Runner::Http { ready, probe, .. } => {
                ready.store(false, Ordering::Relaxed);
                if let Some(p) = probe {
                    p.abort();
                }
            }
            Runner::Command(h) => h.stop().await,
        }
    }
}

/// Capacity this node offers to the scheduler.
#[derive(Clone, Debug)]
pub struct NodeCapacity {
    pub memory_mib: u64,
    pub cpu_millis: u64,
    pub max_instances: u32,
    pub labels: BTreeMap<String, String>,
}

struct Inner {
    node: String,
    store: Arc<Store>,
    runtime: Arc<Runtime>,
    capacity: NodeCapacity,
    routes: Routes,
    gateway_ip: std::net::IpAddr,
    modules: DashMap<Digest, Module>,
    replicas: tokio::sync::Mutex<BTreeMap<ReplicaKey, Replica>>,
    /// New revisions started beside the serving replica, waiting to be ready.
    incoming: tokio::sync::Mutex<BTreeMap<ReplicaKey, (Replica, std::time::Instant)>>,
    view: Mutex<Vec<ReplicaStatus>>,
    status: DashMap<ObjectKey, ObjectStatus>,
    logs: DashMap<ObjectKey, BTreeMap<String, Arc<LogBuffer>>>,
    ports: Mutex<HashMap<u16, PortListener>>,
    shutdown: watch::Receiver<bool>,
    data_dir: std::path::PathBuf,
    /// Poked when a command ends, so Job progress is recorded at once.
    kick: Arc<tokio::sync::Notify>,
    /// Where to fetch module blobs this node lacks.
    peering: std::sync::OnceLock<Arc<crate::peering::Peering>>,
    /// Replicas assigned to another node, kept serving here since (make-before-break).
    moving: Mutex<HashMap<ReplicaKey, std::time::Instant>>,
    /// Modules being loaded ahead of need (so a failover does not wait for a compile).
    warming: DashMap<Digest, ()>,
    /// The last replica list published in gossip.
    published: Mutex<String>,
    started: std::time::Instant,
    /// The replicas last assigned here (`owner#index`), as loaded at start and kept on disk.
    assigned: Mutex<Option<BTreeSet<String>>>,
    /// What `assigned.json` held when this process started: what a restart runs until it
    /// sees a peer (or the boot grace ends).
    boot_assigned: Option<BTreeSet<String>>,
    /// Generation of the last assignment handed to the writer, and of the last one on disk:
    /// writes run on blocking threads, possibly at once, and an older one must never land
    /// after a newer one (a restart would run a stale assignment).
    assigned_generation: std::sync::atomic::AtomicU64,
    assigned_on_disk: Arc<Mutex<u64>>,
    /// The placement kept between passes: a pass recomputes only what changed since the last.
    scheduler: Mutex<wasmfleet_scheduler::Scheduler>,
    boot_logged: std::sync::atomic::AtomicBool,
}

/// Handle to the node's reconciler.
#[derive(Clone)]
pub struct Reconciler {
    inner: Arc<Inner>,
}

impl Reconciler {
    #[expect(clippy::too_many_arguments, reason = "plain wiring of the node's parts, called once")]
    pub fn new(
        node: String,
        store: Arc<Store>,
        runtime: Arc<Runtime>,
        capacity: NodeCapacity,
        routes: Routes,
        gateway_ip: std::net::IpAddr,
        data_dir: std::path::PathBuf,
        shutdown: watch::Receiver<bool>,
    ) -> Reconciler {
        let boot_assigned = std::fs::read(data_dir_assigned(&data_dir))
            .ok()
            .and_then(|b| serde_json::from_slice::<BTreeSet<String>>(&b).ok());
        Reconciler {
            inner: Arc::new(Inner {
                node,
                store,
                runtime,
                capacity,
                routes,
                gateway_ip,
                modules: DashMap::new(),
                replicas: tokio::sync::Mutex::new(BTreeMap::new()),
                incoming: tokio::sync::Mutex::new(BTreeMap::new()),
                view: Mutex::new(Vec::new()),
                status: DashMap::new(),
                logs: DashMap::new(),
                ports: Mutex::new(HashMap::new()),
                shutdown,
                kick: Arc::new(tokio::sync::Notify::new()),
                peering: std::sync::OnceLock::new(),
                moving: Mutex::new(HashMap::new()),
                warming: DashMap::new(),
                published: Mutex::new(String::new()),
                started: std::time::Instant::now(),
                assigned: Mutex::new(boot_assigned.clone()),
                boot_assigned,
                assigned_generation: std::sync::atomic::AtomicU64::new(0),
                assigned_on_disk: Arc::new(Mutex::new(0)),
                scheduler: Mutex::new(wasmfleet_scheduler::Scheduler::new()),
                data_dir,
                boot_logged: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Runs passes until shutdown; stops every replica on the way out.
    pub fn spawn(&self) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut changed = this.inner.store.subscribe();
            let mut shutdown = this.inner.shutdown.clone();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut members = this.inner.peering.get().map(|p| p.members_watch());
            loop {
                this.pass().await;
                let gossip = tokio::select! {
                    _ = changed.changed() => false,
                    _ = tick.tick() => false,
                    _ = this.inner.kick.notified() => false,
                    Ok(()) = async { match members.as_mut() {
                        Some(m) => m.changed().await,
                        None => std::future::pending().await,
                    } } => true,
                    _ = shutdown.wait_for(|s| *s) => break,
                };
                if gossip {
                    // Gossip changes come in bursts (one per peer per round): batch them.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            this.stop_all().await;
        })
    }

    async fn stop_all(&self) {
        let mut replicas = self.inner.replicas.lock().await;
        for (_, r) in std::mem::take(&mut *replicas) {
            r.stop().await;
        }
        for (_, (r, _)) in std::mem::take(&mut *self.inner.incoming.lock().await) {
            r.stop().await;
        }
        for (_, (h, _)) in self.inner.ports.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            if let Some(h) = h {
                h.abort();
            }
        }
    }

    /// Lets the reconciler fetch missing module blobs from peers.
    pub fn set_peering(&self, peering: Arc<crate::peering::Peering>) {
        let _ = self.inner.peering.set(peering);
    }

    /// Replicas on this node, as last published.
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        self.inner.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replicas on every live node: this node's in full, the others' as they publish them
    /// in gossip.
    pub fn cluster_replicas(&self) -> Vec<ReplicaStatus> {
        let mut all = self.replicas();
        let views = self.inner.peering.get().map(|p| p.peer_views()).unwrap_or_default();
        for v in views.iter().filter(|v| v.state == MemberState::Alive) {
            for r in &v.replicas {
                let namespace = r.owner.parse::<ObjectKey>().map(|o| o.namespace).unwrap_or_default();
                all.push(ReplicaStatus {
                    name: r.name.clone(),
                    owner: r.owner.clone(),
                    namespace,
                    node: v.name.clone(),
                    revision: r.revision.clone(),
                    module: String::new(),
                    kind: if r.http { "http" } else { "command" }.to_string(),
                    phase: r.phase,
                    ready: r.ready,
                    restarts: r.restarts,
                    started_ms: r.started_ms,
                    message: None,
                    stats: None,
                });
            }
        }
        all.sort_by(|a, b| (&a.owner, &a.name, &a.node).cmp(&(&b.owner, &b.name, &b.node)));
        all
    }

    pub fn object_status(&self, key: &ObjectKey) -> Option<ObjectStatus> {
        self.inner.status.get(key).map(|s| s.clone())
    }

    /// Log buffers of an object's replicas (by replica name).
    pub fn logs(&self, key: &ObjectKey) -> BTreeMap<String, Arc<LogBuffer>> {
        self.inner.logs.get(key).map(|l| l.clone()).unwrap_or_default()
    }

    pub fn routes(&self) -> &Routes {
        &self.inner.routes
    }

    fn log_buffer(&self, key: &ReplicaKey) -> Arc<LogBuffer> {
        let mut entry = self.inner.logs.entry(key.owner.clone()).or_default();
        entry.entry(key.name()).or_insert_with(|| LogBuffer::new(LOG_BYTES)).clone()
    }

    /// Loads a module by digest (compiling it, or loading cached code) off the async threads.
    pub async fn module(&self, digest: Digest) -> Result<Module, String> {
        if let Some(m) = self.inner.modules.get(&digest) {
            return Ok(m.clone());
        }
        if !self.inner.store.has_blob(&digest)
            && let Some(p) = self.inner.peering.get()
        {
            p.fetch_blob(digest).await.map_err(|e| format!("{e:#}"))?;
        }
        let inner = self.inner.clone();
        let loaded = tokio::task::spawn_blocking(move || -> Result<Module, String> {
            let bytes = inner
                .store
                .read_blob(&digest)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("module {digest} is not in this node's store"))?;
            inner.runtime.load(&bytes).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("module loader failed: {e}"))??;
        self.inner.modules.insert(digest, loaded.clone());
        Ok(loaded)
    }

    /// One reconciliation pass.
    /// Keeps `assigned.json` equal to the replicas (not DaemonSet ones) assigned here.
    fn remember_assignment<V>(&self, desired: &BTreeMap<ReplicaKey, V>) {
        let now: BTreeSet<String> = desired.keys().filter(|k| k.node.is_none()).map(assigned_id).collect();
        let mut assigned = self.inner.assigned.lock().unwrap_or_else(|e| e.into_inner());
        if assigned.as_ref() == Some(&now) {
            return;
        }
        let Ok(bytes) = serde_json::to_vec(&now) else { return };
        *assigned = Some(now);
        let generation = self.inner.assigned_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let on_disk = self.inner.assigned_on_disk.clone();
        let path = data_dir_assigned(&self.inner.data_dir);
        tokio::task::spawn_blocking(move || write_if_newer(&on_disk, &path, generation, &bytes));
    }

    pub async fn pass(&self) {
        let records = match self.inner.store.list(None) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read desired state");
                return;
            }
        };
        let mut objects: Vec<(StoredObject, Object)> = Vec::new();
        for r in records {
            if let Some(o) = r.typed() {
                objects.push((r, o));
            }
        }
        // What other nodes run, from gossip.
        let peering = self.inner.peering.get().cloned();
        let views = peering.as_ref().map(|p| p.peer_views()).unwrap_or_default();
        let alive_views: Vec<&PeerView> = views.iter().filter(|v| v.state == MemberState::Alive).collect();

        // Every slot in the cluster -> (template, module, revision, failures allowed: Jobs only).
        let mut slots: BTreeMap<ReplicaKey, (WorkloadTemplate, Digest, String, Option<u32>)> = BTreeMap::new();
        let mut reqs = Vec::new();
        let mut new_status: HashMap<ObjectKey, ObjectStatus> = HashMap::new();
        let mut jobs: Vec<(ObjectKey, u32, u32, u32, u64)> = Vec::new();
        let mut daemonsets: Vec<(ObjectKey, WorkloadTemplate, Digest, String)> = Vec::new();
        let mut digests: HashSet<Digest> = HashSet::new();

        for (rec, obj) in &objects {
            let Some(tpl) = obj.pod_template() else { continue };
            let w = tpl.workload();
            let key = obj.key();
            let Some(digest) = rec.resolved.get(&w.image).copied() else {
                new_status.entry(key.clone()).or_default().messages.push(format!("image {} is not resolved", w.image));
                continue;
            };
            digests.insert(digest);
            let revision = revision_of(tpl, digest);
            let mut req = WorkloadReq {
                key: key.to_string(),
                kind: WorkloadKind::Deployment,
                replicas: 0,
                memory_mib: w.memory_bytes.map(|b| b.div_ceil(1 << 20)).unwrap_or(0),
                cpu_millis: w.cpu_millis.unwrap_or(0),
                node_selector: w.node_selector.clone(),
                arch: None,
            };
            match obj {
                Object::Deployment(d) => {
                    req.replicas = d.spec.replicas();
                    new_status.entry(key.clone()).or_default().desired = req.replicas;
                    for i in 0..req.replicas {
                        slots.insert(ReplicaKey::new(key.clone(), i), (w.clone(), digest, revision.clone(), None));
                    }
                }
                Object::DaemonSet(_) => {
                    req.kind = WorkloadKind::DaemonSet;
                    daemonsets.push((key.clone(), w.clone(), digest, revision.clone()));
                }
                Object::Job(j) => {
                    let completions = j.spec.completions();
                    let parallelism = j.spec.parallelism();
                    let backoff = j.spec.backoff_limit();
                    let record = self.inner.store.job_record(&key).ok().flatten().unwrap_or_default();
                    let record = if record.generation != rec.generation {
                        JobRecord { generation: rec.generation, ..Default::default() }
                    } else {
                        record
                    };
                    let st = new_status.entry(key.clone()).or_default();
                    st.desired = completions;
                    st.succeeded = record.done.len() as u32;
                    st.failed = record.failed;
                    st.complete = record.complete;
                    if record.failed_permanently {
                        st.messages.push(format!("job failed: backoffLimit {backoff} reached"));
                    }
                    jobs.push((key.clone(), completions, parallelism, backoff, rec.generation));
                    if record.complete || record.failed_permanently {
                        continue;
                    }
                    // Slots are completion indices; the pending ones run, `parallelism` at a time.
                    req.kind = WorkloadKind::Job;
                    req.replicas = completions;
                    let allowed = (backoff + 1).saturating_sub(record.failed).max(1);
                    for i in (0..completions).filter(|i| !record.done.contains(i)).take(parallelism as usize) {
                        slots.insert(
                            ReplicaKey::new(key.clone(), i),
                            (w.clone(), digest, revision.clone(), Some(allowed)),
                        );
                    }
                }
                Object::Service(_) => continue,
            }
            reqs.push(req);
        }
        self.prewarm(digests);

        // Placement over the live members (this node alone before the cluster layer is up).
        let me = NodeInfo {
            id: self.inner.node.clone(),
            labels: self.inner.capacity.labels.clone(),
            zone: None,
            arch: std::env::consts::ARCH.to_string(),
            memory_mib: self.inner.capacity.memory_mib,
            cpu_millis: self.inner.capacity.cpu_millis,
            max_instances: self.inner.capacity.max_instances,
        };
        let mut nodes = peering.as_ref().map(|p| p.placement_nodes()).unwrap_or_default();
        if !nodes.iter().any(|n| n.id == me.id) {
            nodes.push(me.clone());
        }
        let placement = self.inner.scheduler.lock().unwrap_or_else(|e| e.into_inner()).place(&reqs, &nodes).clone();
        let mut owner_of: HashMap<ReplicaKey, String> = HashMap::new();
        for (slot, node) in &placement.assignments {
            if let Ok(owner) = slot.key.parse::<ObjectKey>() {
                owner_of.insert(ReplicaKey::new(owner, slot.index), node.clone());
            }
        }
        for u in &placement.unschedulable {
            if let Ok(owner) = u.slot.key.parse::<ObjectKey>() {
                let st = new_status.entry(owner).or_default();
                let msg = format!("replica {} unschedulable: {}", u.slot.index, u.reason);
                if !st.messages.contains(&msg) {
                    st.messages.push(msg);
                }
            }
        }
        // Replicas running on other nodes, by (owner, index).
        let mut elsewhere: HashMap<(String, u32), Vec<Elsewhere<'_>>> = HashMap::new();
        for v in &alive_views {
            for r in &v.replicas {
                let running = r.phase.is_active();
                elsewhere.entry((r.owner.clone(), r.index)).or_default().push((v.name.as_str(), r.ready, running));
            }
        }
        let settled = peering.is_none() || self.inner.started.elapsed() >= JOB_SETTLE;
        // Just started and no peer seen yet: run what was last assigned here (nothing, for a
        // node joining for the first time). A node that never knew another member is the
        // whole cluster: nothing to wait for.
        static NOTHING: BTreeSet<String> = BTreeSet::new();
        let booting = (peering.as_ref().is_some_and(|p| p.has_known_peers())
            && alive_views.is_empty()
            && self.inner.started.elapsed() < BOOT_GRACE)
            .then(|| self.inner.boot_assigned.as_ref().unwrap_or(&NOTHING));
        let mut desired: BTreeMap<ReplicaKey, (WorkloadTemplate, Digest, String, Option<u32>)> = BTreeMap::new();
        for (key, spec) in slots {
            let mine = match booting {
                Some(last) => last.contains(&assigned_id(&key)),
                None => owner_of.get(&key).map(String::as_str) == Some(me.id.as_str()),
            };
            if !mine {
                continue;
            }
            if key.owner.kind == Kind::Job {
                // A Job replica another live node is already running stays there.
                let busy = elsewhere
                    .get(&(key.owner.to_string(), key.index))
                    .is_some_and(|v| v.iter().any(|(_, _, running)| *running));
                if !settled || busy {
                    continue;
                }
            }
            desired.insert(key, spec);
        }
        for (key, w, digest, revision) in daemonsets {
            if placement.slots_on(&me.id).any(|slot| slot.key == key.to_string()) {
                let rk = ReplicaKey { owner: key, index: 0, node: Some(me.id.clone()) };
                desired.insert(rk, (w, digest, revision, None));
            }
        }
        if booting.is_none() {
            self.remember_assignment(&desired);
        } else if !self.inner.boot_logged.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::info!(replicas = desired.len(), "no peer seen yet: running the replicas last assigned here");
        }

        // Converge. A replica whose revision changed is replaced make-before-break: the new one
        // starts beside the old, and takes over once ready (or after a grace period).
        let mut replicas = self.inner.replicas.lock().await;
        let mut incoming = self.inner.incoming.lock().await;
        // Replaced or removed replicas stop only after the new routing table is published, so
        // no request ever finds a route to a stopped replica.
        let mut retired: Vec<Replica> = Vec::new();
        for (key, (w, digest, revision, max_failures)) in &desired {
            if replicas.get(key).is_some_and(|r| r.revision == *revision) {
                if let Some((stray, _)) = incoming.remove(key) {
                    stray.stop().await;
                }
                continue;
            }
            if let Some((new, since)) = incoming.get(key)
                && new.revision == *revision
            {
                if (new.ready() || since.elapsed() >= TAKEOVER_GRACE)
                    && let Some((new, _)) = incoming.remove(key)
                    && let Some(old) = replicas.insert(key.clone(), new)
                {
                    retired.push(old);
                }
                continue;
            }
            if let Some((outdated, _)) = incoming.remove(key) {
                outdated.stop().await;
            }
            match self.start(key, w, *digest, revision, *max_failures).await {
                Ok(new) if replicas.contains_key(key) && !new.ready() => {
                    incoming.insert(key.clone(), (new, std::time::Instant::now()));
                }
                Ok(new) => {
                    if let Some(old) = replicas.insert(key.clone(), new) {
                        retired.push(old);
                    }
                }
                Err(e) => {
                    let st = new_status.entry(key.owner.clone()).or_default();
                    if !st.messages.contains(&e) {
                        st.messages.push(e);
                    }
                }
            }
        }
        let gone: Vec<ReplicaKey> = incoming.keys().filter(|k| !desired.contains_key(k)).cloned().collect();
        for k in gone {
            if let Some((r, _)) = incoming.remove(&k) {
                r.stop().await;
            }
        }
        let stale: Vec<ReplicaKey> = replicas.keys().filter(|k| !desired.contains_key(k)).cloned().collect();
        let mut moving = self.inner.moving.lock().unwrap_or_else(|e| e.into_inner()).clone();
        moving.retain(|k, _| stale.contains(k));
        for k in stale {
            let Some(r) = replicas.get(&k) else { continue };
            // Make-before-break across nodes: a Deployment replica now assigned to another
            // node serves here until that node reports it ready (or the grace period ends).
            // A running Job replica finishes here.
            let keep = match k.owner.kind {
                Kind::Deployment => owner_of.get(&k).is_some_and(|new_node| {
                    let ready_there = elsewhere
                        .get(&(k.owner.to_string(), k.index))
                        .is_some_and(|v| v.iter().any(|(node, ready, _)| node == new_node && *ready));
                    let since = *moving.entry(k.clone()).or_insert_with(std::time::Instant::now);
                    !ready_there && since.elapsed() < MOVE_GRACE
                }),
                Kind::Job => {
                    jobs.iter().any(|(job, ..)| *job == k.owner)
                        && matches!(&r.runner, Runner::Command(h) if h.status().phase == Phase::Running)
                }
                _ => false,
            };
            if keep {
                continue;
            }
            moving.remove(&k);
            if let Some(r) = replicas.remove(&k) {
                retired.push(r);
            }
        }
        *self.inner.moving.lock().unwrap_or_else(|e| e.into_inner()) = moving;

        // Jobs: record finished indices.
        for (key, _completions, _par, backoff, generation) in &jobs {
            self.record_job_progress(&mut replicas, key, *backoff, *generation, &mut new_status);
        }

        // Readiness (cluster-wide, by replica name) and the view.
        let mut ready_names: HashMap<ObjectKey, HashSet<String>> = HashMap::new();
        let mut view = Vec::new();
        for r in replicas.values() {
            let ready = r.ready();
            if ready {
                ready_names.entry(r.key.owner.clone()).or_default().insert(r.key.name());
            }
            view.push(self.replica_status(r, ready));
        }
        for v in &alive_views {
            for r in v.replicas.iter().filter(|r| r.ready) {
                if let Ok(owner) = r.owner.parse::<ObjectKey>() {
                    ready_names.entry(owner).or_default().insert(r.name.clone());
                }
            }
        }
        for (owner, names) in ready_names {
            if let Some(st) = new_status.get_mut(&owner) {
                st.ready = names.len() as u32;
            }
        }
        let gossip: Vec<GossipReplica> = view.iter().map(gossip_replica).collect();
        for (r, _) in incoming.values() {
            let mut st = self.replica_status(r, r.ready());
            st.message = Some(format!(
                "new revision, waiting to take over from the serving replica{}",
                st.message.map(|m| format!("; {m}")).unwrap_or_default()
            ));
            view.push(st);
        }
        self.publish_routes(&objects, &replicas, &alive_views, &mut new_status);
        // Replicas on this node now, by (namespace, name): their emptyDirs stay.
        let here: HashSet<(String, String)> =
            replicas.keys().chain(incoming.keys()).map(|k| (k.owner.namespace.clone(), k.name())).collect();
        drop(incoming);
        drop(replicas);
        drop(alive_views);
        self.publish_gossip(gossip).await;
        for r in retired {
            r.stop().await;
        }
        // Forget logs and volumes of deleted objects.
        let live: HashSet<ObjectKey> = objects.iter().map(|(_, o)| o.key()).collect();
        self.inner.logs.retain(|k, _| live.contains(k));
        // Once this node knows its assignment, a replica that left it (moved, scaled away,
        // deleted) loses its emptyDirs, as a pod's do in Kubernetes when it leaves a node.
        if booting.is_none() {
            self.remove_volumes(|ns, rep| here.contains(&(ns.to_string(), rep.to_string())));
        } else {
            self.remove_volumes(|ns, rep| {
                live.iter()
                    .any(|k| k.namespace == ns && rep.strip_prefix(k.name.as_str()).is_some_and(|r| r.starts_with('-')))
            });
        }
        *self.inner.view.lock().unwrap_or_else(|e| e.into_inner()) = view;
        self.inner.status.clear();
        for (k, v) in new_status {
            self.inner.status.insert(k, v);
        }
    }

    /// Loads (compiles or reads cached code for) every module the desired state uses, in the
    /// background, so a replica that fails over here starts without waiting for a compile.
    fn prewarm(&self, digests: HashSet<Digest>) {
        for digest in digests {
            if self.inner.modules.contains_key(&digest) || self.inner.warming.insert(digest, ()).is_some() {
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.module(digest).await {
                    tracing::debug!(module = %digest, error = %e, "prewarm failed; will load on demand");
                }
                this.inner.warming.remove(&digest);
            });
        }
    }

    /// Publishes this node's replicas in gossip (key `replicas`) when they changed.
    async fn publish_gossip(&self, mut replicas: Vec<GossipReplica>) {
        let Some(peering) = self.inner.peering.get() else { return };
        replicas.sort_by(|a, b| (&a.owner, a.index, &a.name).cmp(&(&b.owner, b.index, &b.name)));
        let mut json = serde_json::to_string(&replicas).unwrap_or_default();
        // A chitchat value must stay small; keep the ready HTTP replicas (routing) first.
        if json.len() > GOSSIP_VALUE_LIMIT {
            replicas.sort_by_key(|r| !(r.http && r.ready));
            while json.len() > GOSSIP_VALUE_LIMIT && !replicas.is_empty() {
                replicas.truncate(replicas.len() * 9 / 10);
                json = serde_json::to_string(&replicas).unwrap_or_default();
            }
            tracing::warn!(kept = replicas.len(), "too many replicas to publish in gossip; published a subset");
        }
        {
            let mut last = self.inner.published.lock().unwrap_or_else(|e| e.into_inner());
            if *last == json {
                return;
            }
            last.clone_from(&json);
        }
        if let Err(e) = peering.publish("replicas", &json).await {
            tracing::warn!(error = %format!("{e:#}"), "cannot publish replicas in gossip");
        }
    }

    fn record_job_progress(
        &self,
        replicas: &mut BTreeMap<ReplicaKey, Replica>,
        key: &ObjectKey,
        backoff: u32,
        generation: u64,
        status: &mut HashMap<ObjectKey, ObjectStatus>,
    ) {
        let finished: Vec<ReplicaKey> = replicas
            .iter()
            .filter(|(k, r)| {
                &k.owner == key
                    && matches!(&r.runner, Runner::Command(h) if matches!(h.status().phase, Phase::Succeeded | Phase::Failed))
            })
            .map(|(k, _)| k.clone())
            .collect();
        if finished.is_empty() {
            return;
        }
        let mut rec = self.inner.store.job_record(key).ok().flatten().unwrap_or_default();
        if rec.generation != generation {
            rec = JobRecord { generation, ..Default::default() };
        }
        let completions = status.get(key).map(|s| s.desired).unwrap_or(1);
        for k in finished {
            let Some(r) = replicas.remove(&k) else { continue };
            if let Runner::Command(h) = &r.runner {
                let st = h.status();
                rec.failed += st.failures;
                if st.phase == Phase::Succeeded && !rec.done.contains(&k.index) {
                    rec.done.push(k.index);
                }
            }
        }
        rec.done.sort_unstable();
        if rec.failed > backoff {
            rec.failed_permanently = true;
        }
        if rec.done.len() as u32 >= completions {
            rec.complete = true;
            rec.completed_ms = Some(now_ms());
        }
        // Merge with what peers recorded meanwhile, store durably, and push to peers at once
        // (the record is a grow-only union: concurrent writers never lose an index).
        if let Ok(Some(current)) = self.inner.store.job_record(key)
            && current.generation == rec.generation
        {
            rec.merge(&current);
        }
        if let Err(e) = self.inner.store.set_job_record(key, &rec) {
            tracing::error!(job = %key, error = %e, "cannot record job progress");
        } else if let Some(peering) = self.inner.peering.get().cloned() {
            let summary_key = format!("{}{key}", crate::state::JOB_PREFIX);
            tokio::spawn(async move {
                peering.replicate(&[summary_key]).await;
            });
        }
        let st = status.entry(key.clone()).or_default();
        st.succeeded = rec.done.len() as u32;
        st.failed = rec.failed;
        st.complete = rec.complete;
    }

    async fn start(
        &self,
        key: &ReplicaKey,
        w: &WorkloadTemplate,
        digest: Digest,
        revision: &str,
        max_failures: Option<u32>,
    ) -> Result<Replica, String> {
        let module = self.module(digest).await.map_err(|e| format!("image {} ({digest:?}): {e}", w.image))?;
        let name = key.name();
        let logs = self.log_buffer(key);
        let spec = self.workload_spec(key, w)?;
        let runner = match module.kind() {
            ModuleKind::HttpProxy => {
                if key.owner.kind == Kind::Job {
                    return Err(format!("image {} is a {}; a Job needs a command", w.image, module.kind().describe()));
                }
                let service = HttpService::new(self.inner.runtime.clone(), &module, spec, logs.clone())
                    .map_err(|e| e.to_string())?;
                let ready = Arc::new(AtomicBool::new(w.readiness.is_none()));
                let probe = w.readiness.clone().map(|p| spawn_probe(service.clone(), ready.clone(), p, logs.clone()));
                Runner::Http { service, ready, probe }
            }
            _ => {
                let policy = match (key.owner.kind, w.restart_policy) {
                    (_, RestartPolicy::Always) => RtRestart::Always,
                    (_, RestartPolicy::OnFailure) => RtRestart::OnFailure,
                    (_, RestartPolicy::Never) => RtRestart::Never,
                };
                let handle = self.inner.runtime.spawn_command(
                    module.clone(),
                    spec,
                    policy,
                    Backoff::default(),
                    max_failures,
                    logs.clone(),
                );
                if key.owner.kind == Kind::Job {
                    let mut rx = handle.watch();
                    let kick = self.inner.kick.clone();
                    tokio::spawn(async move {
                        let _ = rx.wait_for(|s| matches!(s.phase, Phase::Succeeded | Phase::Failed)).await;
                        kick.notify_one();
                    });
                }
                Runner::Command(handle)
            }
        };
        logs.push(
            LogStream::System,
            format!("{name} started on {} (revision {revision}, module {digest})", self.inner.node),
        );
        Ok(Replica {
            key: key.clone(),
            revision: revision.to_string(),
            digest,
            runner,
            started_ms: now_ms(),
            labels: w.labels.clone(),
        })
    }

    fn workload_spec(&self, key: &ReplicaKey, w: &WorkloadTemplate) -> Result<WorkloadSpec, String> {
        let name = key.name();
        let mut spec = WorkloadSpec::new(format!("{}/{}", key.owner.namespace, name));
        spec.args = w.args.clone();
        spec.env = w.env.clone();
        for (k, v) in [
            ("WASMFLEET_REPLICA", name.clone()),
            ("WASMFLEET_NODE", self.inner.node.clone()),
            ("WASMFLEET_NAMESPACE", key.owner.namespace.clone()),
            ("HOSTNAME", name.clone()),
        ] {
            if !spec.env.iter().any(|(n, _)| n == k) {
                spec.env.push((k.to_string(), v));
            }
        }
        spec.allowed_outbound_hosts = w.allowed_outbound_hosts.clone();
        spec.service_router = Some(wasmfleet_runtime::OutboundRouter {
            router: Arc::new(crate::dataplane::gateway::ServiceCalls { routes: self.inner.routes.clone() }),
            namespace: key.owner.namespace.as_str().into(),
        });
        let mut limits = Limits::default();
        if let Some(m) = w.memory_bytes {
            limits.memory_bytes = m;
        }
        limits.memory_bytes = limits.memory_bytes.min(self.inner.runtime.sizing().instance_memory_bytes);
        if let Some(t) = w.request_timeout {
            limits.request_timeout = t;
        }
        if let Some(c) = w.max_concurrency {
            limits.max_concurrency = c;
        }
        spec.limits = limits;
        for v in &w.volumes {
            let host_path = match &v.host_path {
                Some(p) => p.clone(),
                None => {
                    // emptyDir: a directory owned by this replica, kept across restarts of it.
                    let dir = self.inner.data_dir.join("volumes").join(&key.owner.namespace).join(&name).join(&v.name);
                    std::fs::create_dir_all(&dir).map_err(|e| format!("emptyDir {}: {e}", dir.display()))?;
                    dir
                }
            };
            spec.dirs.push(Preopen { host_path, guest_path: v.guest_path.clone(), read_only: v.read_only });
        }
        Ok(spec)
    }

    /// Deletes the emptyDir volumes of replicas `keep(namespace, replica)` rejects.
    /// Directories are `<data>/volumes/<namespace>/<replica>/<volume>`.
    fn remove_volumes(&self, keep: impl Fn(&str, &str) -> bool) {
        let root = self.inner.data_dir.join("volumes");
        let Ok(namespaces) = std::fs::read_dir(&root) else { return };
        for ns in namespaces.flatten() {
            let ns_name = ns.file_name().to_string_lossy().into_owned();
            let Ok(reps) = std::fs::read_dir(ns.path()) else { continue };
            for rep in reps.flatten() {
                let rep_name = rep.file_name().to_string_lossy().into_owned();
                if !keep(&ns_name, &rep_name)
                    && let Err(e) = std::fs::remove_dir_all(rep.path())
                {
                    tracing::warn!(path = %rep.path().display(), error = %e, "cannot remove volume");
                }
            }
        }
    }

    fn replica_status(&self, r: &Replica, ready: bool) -> ReplicaStatus {
        let (kind, phase, restarts, message, stats) = match &r.runner {
            Runner::Http { service, .. } => (
                "http".to_string(),
                if ready { ReplicaPhase::Running } else { ReplicaPhase::NotReady },
                0,
                None,
                Some(service.stats()),
            ),
            Runner::Command(h) => {
                let s = h.status();
                (
                    "command".to_string(),
                    ReplicaPhase::of_command(s.phase),
                    s.restarts,
                    s.last_exit.map(|e| format!("last run: {e}")),
                    None,
                )
            }
        };
        ReplicaStatus {
            name: r.key.name(),
            owner: r.key.owner.to_string(),
            namespace: r.key.owner.namespace.clone(),
            node: self.inner.node.clone(),
            revision: r.revision.clone(),
            module: r.digest.to_string(),
            kind,
            phase,
            ready,
            restarts,
            started_ms: r.started_ms,
            message,
            stats,
        }
    }

    fn publish_routes(
        &self,
        objects: &[(StoredObject, Object)],
        replicas: &BTreeMap<ReplicaKey, Replica>,
        peers: &[&PeerView],
        status: &mut HashMap<ObjectKey, ObjectStatus>,
    ) {
        let mut table = RoutingTable::default();
        let mut wanted_ports: HashMap<u16, Arc<ServiceRoute>> = HashMap::new();
        // Pod labels of every workload, to match remote replicas against selectors.
        let labels_of: HashMap<String, BTreeMap<String, String>> = objects
            .iter()
            .filter_map(|(_, o)| Some((o.key().to_string(), o.pod_template()?.workload().labels)))
            .collect();
        let forwarder = self.inner.routes.forwarder().cloned();
        // Each peer's data-plane lane ports, shared by its endpoints of every Service.
        let peer_lanes: Vec<Arc<[u16]>> =
            peers.iter().map(|p| p.info.as_ref().map(|i| i.lanes.as_slice()).unwrap_or_default().into()).collect();
        for (_, obj) in objects {
            let Object::Service(svc) = obj else { continue };
            let key = obj.key();
            let selector = svc.spec.selector.clone();
            let mut endpoints = Vec::new();
            for r in replicas.values() {
                if r.key.owner.namespace != key.namespace || !selector_matches(&selector, &r.labels) {
                    continue;
                }
                if let Runner::Http { service, ready, .. } = &r.runner {
                    endpoints.push(Endpoint {
                        replica: r.key.name(),
                        node: self.inner.node.clone(),
                        backend: Backend::Local(service.clone()),
                        ready: ready.clone(),
                    });
                }
            }
            if let Some(forwarder) = &forwarder {
                for (peer, lanes) in peers.iter().zip(&peer_lanes) {
                    let Some(addr) = peer.cluster else { continue };
                    for r in peer.replicas.iter().filter(|r| r.http && r.ready) {
                        let Some(labels) = labels_of.get(&r.owner) else { continue };
                        let in_namespace = r.owner.parse::<ObjectKey>().is_ok_and(|o| o.namespace == key.namespace);
                        if !in_namespace || !selector_matches(&selector, labels) {
                            continue;
                        }
                        endpoints.push(Endpoint {
                            replica: r.name.clone(),
                            node: peer.name.clone(),
                            backend: Backend::Remote {
                                addr,
                                lanes: lanes.clone(),
                                health: forwarder.health(&peer.name),
                            },
                            ready: Arc::new(AtomicBool::new(true)),
                        });
                    }
                }
            }
            let st = status.entry(key.clone()).or_default();
            st.endpoints = endpoints
                .iter()
                .map(|e| (format!("{}@{}", e.replica, e.node), e.ready.load(Ordering::Relaxed)))
                .collect();
            st.desired = endpoints.len() as u32;
            st.ready = st.endpoints.iter().filter(|e| e.1).count() as u32;
            let route = Arc::new(ServiceRoute::new(key.clone(), endpoints));
            for p in node_ports(svc) {
                wanted_ports.insert(p, route.clone());
            }
            table.insert(route);
        }
        table.by_port = wanted_ports.clone();
        self.inner.routes.store(table);
        self.sync_ports(&wanted_ports, objects, status);
    }

    /// Opens a listener for every Service port (as LoadBalancer/NodePort would), closes unused
    /// ones; a port that cannot be bound is reported in the Service's status.
    fn sync_ports(
        &self,
        wanted: &HashMap<u16, Arc<ServiceRoute>>,
        objects: &[(StoredObject, Object)],
        status: &mut HashMap<ObjectKey, ObjectStatus>,
    ) {
        let mut ports = self.inner.ports.lock().unwrap_or_else(|e| e.into_inner());
        ports.retain(|p, (h, _)| {
            let keep = wanted.contains_key(p);
            if !keep && let Some(h) = h.take() {
                h.abort();
            }
            keep
        });
        for &port in wanted.keys() {
            if ports.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::new(self.inner.gateway_ip, port);
            let entry = match std::net::TcpListener::bind(addr).and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            }) {
                Ok(l) => {
                    tracing::info!(%addr, "service port listening");
                    let h = crate::dataplane::gateway::spawn_listener(
                        l,
                        self.inner.routes.clone(),
                        Binding::Port(port),
                        self.inner.shutdown.clone(),
                    );
                    (Some(h), PortStatus { port, bound: true, error: None })
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "cannot open service port");
                    (None, PortStatus { port, bound: false, error: Some(format!("cannot bind {addr}: {e}")) })
                }
            };
            ports.insert(port, entry);
        }
        for (_, obj) in objects {
            let Object::Service(svc) = obj else { continue };
            let st = status.entry(obj.key()).or_default();
            st.ports = node_ports(svc).into_iter().filter_map(|p| ports.get(&p).map(|(_, s)| s.clone())).collect();
            for p in &st.ports {
                if let Some(e) = &p.error {
                    st.messages.push(format!("port {}: {e} (still reachable through the gateway by Host)", p.port));
                }
            }
        }
    }
}

fn gossip_replica(st: &ReplicaStatus) -> GossipReplica {
    let index = st.name.rsplit_once('-').and_then(|(_, i)| i.parse().ok()).unwrap_or(0);
    GossipReplica {
        owner: st.owner.clone(),
        index,
        name: st.name.clone(),
        revision: st.revision.clone(),
        phase: st.phase,
        ready: st.ready,
        restarts: st.restarts,
        http: st.kind == "http",
        started_ms: st.started_ms,
        in_flight: st.stats.map(|s| s.in_flight).unwrap_or(0),
    }
}

/// Runs a readiness probe (HTTP GET on the replica itself) until aborted.
fn spawn_probe(
    service: HttpService,
    ready: Arc<AtomicBool>,
    probe: crate::manifest::HttpProbe,
    logs: Arc<LogBuffer>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(probe.initial_delay).await;
        let (mut ok_run, mut fail_run) = (0u32, 0u32);
        loop {
            let req = http::Request::get(probe.path.as_str())
                .header(http::header::HOST, "localhost")
                .header(http::header::USER_AGENT, "wasmfleet-probe")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .expect("static request");
            let ok = match tokio::time::timeout(probe.timeout, service.handle(req)).await {
                Ok(resp) => {
                    let s = resp.status();
                    s.is_success() || s.is_redirection()
                }
                Err(_) => false,
            };
            if ok {
                ok_run += 1;
                fail_run = 0;
                if ok_run >= probe.success_threshold && !ready.swap(true, Ordering::Relaxed) {
                    logs.push(LogStream::System, format!("readiness probe GET {} passed: ready", probe.path));
                }
            } else {
                fail_run += 1;
                ok_run = 0;
                if fail_run >= probe.failure_threshold && ready.swap(false, Ordering::Relaxed) {
                    logs.push(
                        LogStream::System,
                        format!("readiness probe GET {} failed {fail_run} times: not ready", probe.path),
                    );
                }
            }
            tokio::time::sleep(probe.period).await;
        }
    })
}

/// Ports a Service opens on the node: `port` for LoadBalancer, `nodePort` (or `port`) for
/// NodePort; none for ClusterIP (reachable through the gateway by Host).
fn node_ports(svc: &crate::manifest::Service) -> Vec<u16> {
    use crate::manifest::ServiceType;
    let mut out = Vec::new();
    for p in &svc.spec.ports {
        let port = match svc.spec.service_type() {
            ServiceType::LoadBalancer => Some(p.port),
            ServiceType::NodePort => Some(p.node_port.unwrap_or(p.port)),
            _ => None,
        };
        if let Some(port) = port.and_then(|p| u16::try_from(p).ok()) {
            out.push(port);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Writes `bytes` (generation `generation`) to `path` unless a newer generation is there
/// already; `on_disk` holds the generation on disk and serialises the writers.
fn write_if_newer(on_disk: &Mutex<u64>, path: &std::path::Path, generation: u64, bytes: &[u8]) {
    let mut last = on_disk.lock().unwrap_or_else(|e| e.into_inner());
    if *last >= generation {
        return;
    }
    match crate::state::write_private(path, bytes) {
        Ok(()) => *last = generation,
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "could not record this node's assignment"),
    }
}

/// How a replica is named in `assigned.json`.
fn assigned_id(key: &ReplicaKey) -> String {
    format!("{}#{}", key.owner, key.index)
}

fn data_dir_assigned(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join(ASSIGNED_FILE)
}

/// A short, stable revision id for a pod template and its resolved module.
fn revision_of(tpl: &crate::manifest::PodTemplateSpec, digest: Digest) -> String {
    let json = serde_json::to_vec(tpl).unwrap_or_default();
    let mut bytes = json;
    bytes.extend_from_slice(&digest.0);
    Digest::of(&bytes).hex()[..10].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_assignment_never_lands_after_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ASSIGNED_FILE);
        let on_disk = Mutex::new(0);
        write_if_newer(&on_disk, &path, 2, b"[\"newer\"]");
        // The writer of generation 1 was slower: it must not overwrite generation 2.
        write_if_newer(&on_disk, &path, 1, b"[]");
        assert_eq!(std::fs::read(&path).unwrap(), b"[\"newer\"]");
        write_if_newer(&on_disk, &path, 3, b"[\"newest\"]");
        assert_eq!(std::fs::read(&path).unwrap(), b"[\"newest\"]");
    }
}
