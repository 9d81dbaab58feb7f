//! The reconciler: turns desired state (the store) into running replicas on this node, keeps
//! the gateway's routing table and the Services' ports in step, and records Job progress.
//!
//! It is a thin loop around a pure step. It runs whenever the store or the cluster's gossip
//! changes, when a Job's command ends, and every second. Each pass gathers its inputs (the
//! stored objects and Job records, the live peers and what they run, what runs here, the time
//! since start), asks the scheduler for the placement of every replica in the cluster (every
//! node computes the same answer, so no leader is needed), asks [`desired::plan`] what to do,
//! and carries out the plan: start, promote, stop; record finished Job indices; rebuild routes
//! and ports; publish status and gossip; and only then stop the retired replicas, so no request
//! ever finds a route to a stopped one.
//!
//! Rooms, one noun each:
//!
//! | file | what |
//! |---|---|
//! | [`desired`] | the pure step: which replicas run here, and when they start, take over and stop |
//! | `replicas.rs` | a replica: start (HTTP service or supervised command), status, stop |
//! | [`rollouts`] | Deployments' revision sets: the coordinator's step, what it observes, the record |
//! | `modules.rs` | modules loaded once per digest, fetched from peers, warmed ahead of need |
//! | `jobs.rs` | recording finished Job indices durably and pushing them to peers |
//! | `routes.rs` | the routing table and the Services' node ports |
//! | `publish.rs` | the API's view of replicas and objects, and this node's gossip |
//! | `assignment.rs` | `assigned.json`: what a restart runs before it hears from a peer |
//! | `volumes.rs` | `emptyDir`, `hostPath` and claimed volumes as a replica mounts them |
//! | [`claims`] | PersistentVolumeClaims: where their replicas may run, binding, takeover |
//! | `writers.rs` | the volumes this node writes: scans, snapshots shipped to their holders |
//! | `probe.rs` | readiness probes |
//! | `logs.rs` | the log buffers of the replicas |

pub mod desired;

mod assignment;
pub mod autoscale;
pub mod claims;
mod jobs;
mod logs;
mod modules;
mod persistence;
mod probe;
pub mod progressive;
mod publish;
mod replicas;
pub mod rollouts;
mod routes;
mod volumes;
pub mod waves;
mod writers;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wasmfleet_cluster::membership::MemberState;
use wasmfleet_runtime::{Runtime, ServiceStats};
use wasmfleet_scheduler::{NodeInfo, Placement, Scheduler};

use self::assignment::AssignmentFile;
use self::desired::{Action, Boot, Inputs, Plan, Workloads};
use self::modules::Modules;
use self::replicas::{Replica, Running};
use self::routes::PortListener;
use self::volumes::Volumes;
use crate::dataplane::gateway::Routes;
use crate::manifest::{Object, ObjectKey};
use crate::peering::{PeerView, Peering, ReplicaPhase};
use crate::state::{JobRecord, Store, StoreError, StoredObject};

pub use self::logs::ReplicaLogs;
pub use self::rollouts::{RevisionView, RolloutView};

/// Identity of a replica slot: the owning object and an index; a Deployment's slots also
/// name their revision set (`set`, the template hash); DaemonSet replicas are named by their
/// node instead (their slot index shifts as nodes come and go).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaKey {
    pub owner: ObjectKey,
    pub set: Option<String>,
    pub index: u32,
    pub node: Option<String>,
}

impl ReplicaKey {
    pub fn new(owner: ObjectKey, index: u32) -> Self {
        ReplicaKey { owner, set: None, index, node: None }
    }

    /// Slot `index` of revision set `set`.
    pub fn of_set(owner: ObjectKey, set: &str, index: u32) -> Self {
        ReplicaKey { owner, set: Some(set.to_string()), index, node: None }
    }

    /// `web-3` (Jobs), `web-<hash>-3` (a Deployment's set, as Kubernetes names pods after
    /// their ReplicaSet), `sensor-<node>` (DaemonSets).
    pub fn name(&self) -> String {
        match (&self.node, &self.set) {
            (Some(node), _) => format!("{}-{node}", self.owner.name),
            (None, Some(set)) => format!("{}-{set}-{}", self.owner.name, self.index),
            (None, None) => format!("{}-{}", self.owner.name, self.index),
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
    /// Wall time (ms) since which it has been ready; 0 while it is not.
    #[serde(default)]
    pub ready_ms: u64,
    pub message: Option<String>,
    pub stats: Option<ServiceStats>,
}

/// An endpoint of a Service: a replica (`name@node`) and whether it takes traffic.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EndpointStatus {
    pub replica: String,
    pub ready: bool,
}

/// Per-object status the API shows next to the spec.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ObjectStatus {
    pub desired: u32,
    pub ready: u32,
    pub messages: Vec<String>,
    /// Services: node ports and whether they could be bound.
    pub ports: Vec<PortStatus>,
    /// Services: endpoints and readiness.
    pub endpoints: Vec<EndpointStatus>,
    /// Jobs.
    pub succeeded: u32,
    pub failed: u32,
    pub complete: bool,
    /// Deployments: the rollout (revisions, counts, conditions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
    /// HorizontalPodAutoscalers: targets, sizes, conditions, events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<autoscale::AutoscaleView>,
    /// PersistentVolumeClaims: the volume, its node and copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<claims::VolumeView>,
}

impl ObjectStatus {
    /// Adds `message` unless it is there already.
    fn note(&mut self, message: String) {
        if !self.messages.contains(&message) {
            self.messages.push(message);
        }
    }
}

/// A Service port opened on this node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PortStatus {
    pub port: u16,
    pub bound: bool,
    pub error: Option<String>,
}

/// Capacity this node offers to the scheduler.
#[derive(Clone, Debug)]
pub struct NodeCapacity {
    pub memory_mib: u64,
    pub cpu_millis: u64,
    pub max_instances: u32,
    pub labels: BTreeMap<String, String>,
}

/// What a reconciler is made of.
pub struct Parts {
    pub node: String,
    pub store: Arc<Store>,
    pub runtime: Arc<Runtime>,
    pub peering: Arc<Peering>,
    pub capacity: NodeCapacity,
    pub routes: Routes,
    /// Service ports listen on this address.
    pub gateway_ip: std::net::IpAddr,
    pub data_dir: std::path::PathBuf,
    pub shutdown: watch::Receiver<bool>,
    /// How often an autoscaler without its own sync period is evaluated.
    pub hpa_sync_period: Duration,
}

struct Inner {
    node: String,
    store: Arc<Store>,
    runtime: Arc<Runtime>,
    peering: Arc<Peering>,
    capacity: NodeCapacity,
    routes: Routes,
    gateway_ip: std::net::IpAddr,
    shutdown: watch::Receiver<bool>,
    modules: Modules,
    logs: Arc<ReplicaLogs>,
    volumes: Volumes,
    writers: writers::Writers,
    /// The last volume copies published in gossip.
    published_volumes: Mutex<String>,
    /// The cluster's volumes as the API shows them.
    volume_views: Mutex<Vec<claims::VolumeView>>,
    assignment: AssignmentFile,
    boot: Boot,
    running: tokio::sync::Mutex<Running>,
    /// Replicas assigned to another node, kept serving here since (make-before-break).
    moving: Mutex<BTreeMap<ReplicaKey, Duration>>,
    /// The placement kept between passes: a pass recomputes only what changed since the last.
    scheduler: Mutex<Scheduler>,
    ports: Mutex<HashMap<u16, PortListener>>,
    view: Mutex<Vec<ReplicaStatus>>,
    status: DashMap<ObjectKey, ObjectStatus>,
    /// Figures of each Rollout's analysis runs at the start of their current interval (only
    /// on the Rollout's coordinator), by Rollout and run.
    baselines: Mutex<HashMap<ObjectKey, HashMap<String, crate::dataplane::revisions::RevisionFigures>>>,
    /// When the next analysis measurement this node takes is due (wall ms): the loop wakes.
    measure_at: Mutex<Option<u64>>,
    /// The last request figures published in gossip.
    published_figures: Mutex<String>,
    /// Counters of this node's replicas of autoscaled targets, sampled once a second.
    rings: Mutex<autoscale::MetricRings>,
    /// The last replica figures published in gossip for autoscaling.
    published_metrics: Mutex<String>,
    hpa_period: Duration,
    /// The last replica list published in gossip, and its sequence number.
    published: Mutex<String>,
    published_seq: Mutex<u64>,
    /// Poked when a command ends, so Job progress is recorded at once.
    kick: Arc<tokio::sync::Notify>,
    started: Instant,
    boot_logged: AtomicBool,
}

/// Handle to the node's reconciler.
#[derive(Clone)]
pub struct Reconciler {
    inner: Arc<Inner>,
}

impl Reconciler {
    pub fn new(parts: Parts) -> Reconciler {
        let assignment = AssignmentFile::load(&parts.data_dir);
        let boot = Boot {
            clustered: true,
            has_known_peers: parts.peering.has_known_peers(),
            last_assigned: assignment.at_boot().cloned(),
        };
        Reconciler {
            inner: Arc::new(Inner {
                modules: Modules::new(parts.runtime.clone(), parts.store.clone(), parts.peering.clone()),
                volumes: Volumes::new(&parts.data_dir),
                writers: writers::Writers::new(parts.node.clone(), parts.peering.clone()),
                published_volumes: Mutex::new(String::new()),
                volume_views: Mutex::new(Vec::new()),
                node: parts.node,
                store: parts.store,
                runtime: parts.runtime,
                peering: parts.peering,
                capacity: parts.capacity,
                routes: parts.routes,
                gateway_ip: parts.gateway_ip,
                shutdown: parts.shutdown,
                logs: Arc::new(ReplicaLogs::default()),
                assignment,
                boot,
                running: tokio::sync::Mutex::new(Running::default()),
                moving: Mutex::new(BTreeMap::new()),
                scheduler: Mutex::new(Scheduler::new()),
                ports: Mutex::new(HashMap::new()),
                view: Mutex::new(Vec::new()),
                status: DashMap::new(),
                published: Mutex::new(String::new()),
                published_seq: Mutex::new(0),
                baselines: Mutex::new(HashMap::new()),
                published_figures: Mutex::new(String::new()),
                rings: Mutex::new(autoscale::MetricRings::default()),
                published_metrics: Mutex::new(String::new()),
                hpa_period: parts.hpa_sync_period,
                measure_at: Mutex::new(None),
                kick: Arc::new(tokio::sync::Notify::new()),
                started: Instant::now(),
                boot_logged: AtomicBool::new(false),
            }),
        }
    }

    /// Runs passes until shutdown; stops every replica on the way out.
    pub fn spawn(&self) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let inner = &this.inner;
            let mut changed = inner.store.subscribe();
            let mut shutdown = inner.shutdown.clone();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut members = inner.peering.members_watch();
            let reports = inner.peering.reports_notify();
            loop {
                this.pass().await;
                // An analysis measurement falls due: wake for it (at most every 100 ms).
                let due = inner.measure_at.lock().unwrap_or_else(|e| e.into_inner()).map(|at| {
                    Duration::from_millis(at.saturating_sub(crate::clock::now_ms())).max(Duration::from_millis(100))
                });
                let gossip = tokio::select! {
                    _ = tokio::time::sleep(due.unwrap_or(Duration::from_secs(3600))), if due.is_some() => false,
                    _ = changed.changed() => false,
                    _ = tick.tick() => false,
                    _ = inner.kick.notified() => false,
                    Ok(()) = members.changed() => true,
                    _ = reports.notified() => true,
                    _ = shutdown.wait_for(|s| *s) => break,
                };
                if gossip {
                    // Gossip changes come in bursts (one per peer per round): batch them.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            inner.running.lock().await.stop_all().await;
            inner.close_ports();
            // The table holds the replicas, whose outbound router holds the routes: drop it.
            inner.routes.store(crate::dataplane::gateway::RoutingTable::default());
        })
    }

    /// One reconciliation pass. A pass that cannot read the store changes nothing it cannot
    /// finish; the next one (at most a second later) retries.
    pub async fn pass(&self) {
        if let Err(e) = self.inner.pass().await {
            tracing::error!(error = %e, "reconcile pass failed; retrying");
        }
    }

    /// Replicas on this node, as last published.
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        self.inner.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replicas on every live node: this node's in full, the others' as they publish them
    /// in gossip.
    pub fn cluster_replicas(&self) -> Vec<ReplicaStatus> {
        let mut all = self.replicas();
        for v in self.inner.peering.peer_views().iter().filter(|v| v.state == MemberState::Alive) {
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
                    ready_ms: r.ready_ms,
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

    /// The log buffers of this node's replicas.
    pub fn logs(&self) -> Arc<ReplicaLogs> {
        self.inner.logs.clone()
    }

    pub fn routes(&self) -> &Routes {
        &self.inner.routes
    }

    /// Every claim and volume of the cluster, as of the last pass.
    pub fn volumes(&self) -> Vec<claims::VolumeView> {
        self.inner.volume_views.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How often a gateway publishes its request figures while a canary is under analysis.
const FIGURES_PERIOD_MS: u64 = 250;

/// How the Services a Rollout touches split their traffic (from each Rollout's recorded
/// progress).
fn traffic_rules(
    objects: &[(StoredObject, Object)],
    workloads: &Workloads,
) -> HashMap<ObjectKey, progressive::Traffic> {
    let services: Vec<(ObjectKey, &BTreeMap<String, String>)> = objects
        .iter()
        .filter_map(|(_, o)| match o {
            Object::Service(s) => Some((o.key(), &s.spec.selector)),
            _ => None,
        })
        .collect();
    let rollouts = workloads.deployments.iter().filter_map(|(key, info)| {
        let p = info.progressive.as_ref()?;
        Some((key, p, info.record.as_ref().and_then(|r| r.progress.as_ref())))
    });
    progressive::traffic(rollouts, &services)
}

/// The canary revisions under analysis, and every revision of a Deployment or Rollout.
fn revisions_in_use(workloads: &Workloads) -> (std::collections::BTreeSet<String>, HashSet<String>) {
    let mut analysed = std::collections::BTreeSet::new();
    let mut live = HashSet::new();
    for info in workloads.deployments.values() {
        let state = info.record.as_ref().map(|r| &r.state).unwrap_or(&info.state);
        live.extend(state.sets.iter().map(|s| s.hash.clone()));
        let progress = info.record.as_ref().and_then(|r| r.progress.as_ref());
        if let Some(p) = progress
            && let Some(c) = &p.canary
            && !p.runs.is_empty()
        {
            analysed.insert(c.clone());
        }
    }
    (analysed, live)
}

impl Inner {
    async fn pass(&self) -> Result<(), StoreError> {
        let now = self.started.elapsed();
        let objects: Vec<(StoredObject, Object)> =
            self.store.list(None)?.into_iter().filter_map(|r| r.typed().map(|o| (r, o))).collect();
        let peers: Vec<PeerView> =
            self.peering.peer_views().into_iter().filter(|v| v.state == MemberState::Alive).collect();
        let claims = self.claims(&objects, &peers)?;
        let mut workloads =
            desired::workloads(&objects, &self.job_records(&objects)?, self.store.rollout_records()?, claims);
        self.modules.prewarm(&workloads.digests);
        let nodes = self.fleet_nodes();
        let placement = self.place(&workloads, &nodes, desired::fleet_rule(&peers));
        let mut running = self.running.lock().await;
        let moving = self.moving.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let plan = desired::plan(Inputs {
            node: &self.node,
            now,
            workloads: &workloads,
            placement: &placement,
            peers: &peers,
            boot: &self.boot,
            local: &running.locals(),
            incoming: &running.incomings(),
            moving: &moving,
        });
        self.keep_assignment(&plan);
        self.write_volumes(&plan.volumes, &workloads.claims);
        let mut status = std::mem::take(&mut workloads.status);
        for (owner, message) in &plan.messages {
            status.entry(owner.clone()).or_default().note(message.clone());
        }
        let retired = self.carry_out(&plan, &mut running, now, &mut status).await;
        *self.moving.lock().unwrap_or_else(|e| e.into_inner()) = plan.moving.clone();
        // A failed record leaves the finished replicas in place: the next pass records them.
        let recorded = self.record_jobs(&mut running, &workloads, &mut status);
        let (view, gossip) = self.views(&running, &peers, &mut status);
        self.publish_metrics(&view, &workloads).await;
        let activations = self.peering.take_activations();
        self.rollouts(&workloads, &gossip, &peers, &nodes, &activations, plan.booting, &mut status);
        let traffic = traffic_rules(&objects, &workloads);
        let scalable_to_zero: Vec<ObjectKey> = workloads
            .deployments
            .iter()
            .filter(|(_, d)| d.autoscaler.as_ref().is_some_and(|a| a.spec.min == 0))
            .map(|(k, _)| k.clone())
            .collect();
        self.publish_routes(&objects, &running.serving, &peers, &traffic, &scalable_to_zero, &mut status);
        let here: HashSet<(String, String)> = running
            .serving
            .keys()
            .chain(running.incoming.keys())
            .map(|k| (k.owner.namespace.clone(), k.name()))
            .collect();
        drop(running);
        self.publish_gossip(gossip, &peers, &scalable_to_zero).await;
        self.keep_volumes(&workloads.claims, &workloads.claim_users, &mut status).await;
        let (analysed, live) = revisions_in_use(&workloads);
        self.publish_figures(&analysed, &live).await;
        // While a canary is under analysis, every gateway publishes its figures often (the
        // coordinator sums them at each measurement); the coordinator also wakes for each.
        let publish_again = (!analysed.is_empty()).then(|| crate::clock::now_ms() + FIGURES_PERIOD_MS);
        let next = self.next_measurement(&workloads).into_iter().chain(publish_again).min();
        *self.measure_at.lock().unwrap_or_else(|e| e.into_inner()) = next;
        for r in retired {
            r.stop().await;
        }
        self.tidy(&objects, &here, plan.booting);
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = view;
        self.status.retain(|k, _| status.contains_key(k));
        for (k, v) in status {
            self.status.insert(k, v);
        }
        recorded
    }

    /// The stored record of every Job. A read error fails the pass: a Job whose record cannot
    /// be read must not look fresh (it would run its finished indices again).
    fn job_records(&self, objects: &[(StoredObject, Object)]) -> Result<HashMap<ObjectKey, JobRecord>, StoreError> {
        let mut out = HashMap::new();
        for (_, obj) in objects.iter().filter(|(_, o)| matches!(o, Object::Job(_))) {
            let key = obj.key();
            if let Some(rec) = self.store.job_record(&key)? {
                out.insert(key, rec);
            }
        }
        Ok(out)
    }

    /// The live members as the scheduler sees them (this node included, even before it is in
    /// gossip).
    fn fleet_nodes(&self) -> Vec<NodeInfo> {
        let me = NodeInfo {
            id: self.node.clone(),
            labels: self.capacity.labels.clone(),
            zone: None,
            arch: std::env::consts::ARCH.to_string(),
            memory_mib: self.capacity.memory_mib,
            cpu_millis: self.capacity.cpu_millis,
            max_instances: self.capacity.max_instances,
        };
        let mut nodes = self.peering.placement_nodes();
        if !nodes.iter().any(|n| n.id == me.id) {
            nodes.push(me);
        }
        nodes
    }

    /// The placement over `nodes` by `rule`.
    fn place(&self, workloads: &Workloads, nodes: &[NodeInfo], rule: wasmfleet_scheduler::Rule) -> Placement {
        let mut scheduler = self.scheduler.lock().unwrap_or_else(|e| e.into_inner());
        if scheduler.rule() != rule {
            tracing::info!(?rule, "placing by the rule every live node knows");
            scheduler.set_rule(rule);
        }
        scheduler.place(&workloads.requests, nodes).clone()
    }

    /// Keeps `assigned.json` equal to the replicas assigned here (not while booting: then the
    /// file is what this node runs).
    fn keep_assignment(&self, plan: &Plan) {
        match &plan.assignment {
            Some(assignment) => {
                self.assignment.remember(assignment);
            }
            None if !self.boot_logged.swap(true, Ordering::Relaxed) => {
                tracing::info!(
                    replicas = plan.desired.len(),
                    "no peer seen yet: running the replicas last assigned here"
                );
            }
            None => {}
        }
    }

    /// Starts, promotes and stops what the plan says; returns the replicas to stop once the
    /// new routes are published.
    async fn carry_out(
        &self,
        plan: &Plan,
        running: &mut Running,
        now: Duration,
        status: &mut HashMap<ObjectKey, ObjectStatus>,
    ) -> Vec<Replica> {
        let mut retired = Vec::new();
        for action in &plan.actions {
            match action {
                Action::StopIncoming(key) => {
                    if let Some((r, _)) = running.incoming.remove(key) {
                        r.stop().await;
                    }
                }
                Action::Promote(key) => {
                    if let Some((new, _)) = running.incoming.remove(key) {
                        retired.extend(running.serving.insert(key.clone(), new));
                    }
                }
                Action::Retire(key) => retired.extend(running.serving.remove(key)),
                Action::Start(key) | Action::Replace(key) => {
                    let Some(slot) = plan.desired.get(key) else { continue };
                    if matches!(action, Action::Replace(_))
                        && let Some(old) = running.serving.remove(key)
                    {
                        old.stop().await;
                    }
                    match self.start(key, slot).await {
                        Ok(new) if running.serving.contains_key(key) && !desired::takes_over_at_start(new.ready()) => {
                            running.incoming.insert(key.clone(), (new, now));
                        }
                        Ok(new) => retired.extend(running.serving.insert(key.clone(), new)),
                        Err(e) => status.entry(key.owner.clone()).or_default().note(e),
                    }
                }
            }
        }
        retired
    }

    /// Forgets the logs of deleted objects and the `emptyDir`s of replicas that left.
    fn tidy(&self, objects: &[(StoredObject, Object)], here: &HashSet<(String, String)>, booting: bool) {
        let live: HashSet<ObjectKey> = objects.iter().map(|(_, o)| o.key()).collect();
        self.logs.retain(|k| live.contains(k));
        if booting {
            // Until this node knows its assignment, only deleted objects lose their volumes.
            self.volumes.remove_unless(|ns, rep| {
                live.iter()
                    .any(|k| k.namespace == ns && rep.strip_prefix(k.name.as_str()).is_some_and(|r| r.starts_with('-')))
            });
        } else {
            // A replica that left this node (moved, scaled away, deleted) loses its emptyDirs,
            // as a pod's do in Kubernetes when it leaves a node.
            self.volumes.remove_unless(|ns, rep| here.contains(&(ns.to_string(), rep.to_string())));
        }
    }
}
