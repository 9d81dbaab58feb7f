//! The reconciler: turns desired state (the store) into running replicas on this node, keeps
//! the gateway's routing table and the Services' ports in step, and records Job progress.
//!
//! It runs whenever the store changes and once a second. Each pass is: compute the placement
//! (the scheduler's pure `place`, today with this node alone), start what is assigned here and
//! not running (or running an older revision: the new replica starts before the old one
//! stops), stop what is no longer assigned, and publish routes and status.

use std::collections::{BTreeMap, HashMap, HashSet};
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

use crate::gateway::{Binding, Endpoint, Routes, RoutingTable, ServiceRoute};
use crate::manifest::{Kind, Object, ObjectKey, RestartPolicy, WorkloadTemplate, selector_matches};
use crate::store::{JobRecord, Store, StoredObject, now_ms};

const LOG_BYTES: usize = 256 * 1024;
/// How long a new revision may take to become ready before it replaces the old one anyway.
const TAKEOVER_GRACE: Duration = Duration::from_secs(30);

/// Identity of a replica slot: the owning object and an index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaKey {
    pub owner: ObjectKey,
    pub index: u32,
}

impl ReplicaKey {
    pub fn name(&self) -> String {
        format!("{}-{}", self.owner.name, self.index)
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
    pub phase: String,
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
                data_dir,
                kick: Arc::new(tokio::sync::Notify::new()),
                peering: std::sync::OnceLock::new(),
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
            loop {
                this.pass().await;
                tokio::select! {
                    _ = changed.changed() => {}
                    _ = tick.tick() => {}
                    _ = this.inner.kick.notified() => {}
                    _ = shutdown.wait_for(|s| *s) => break,
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
        // Slot -> (template, module, revision, failures allowed before giving up: Jobs only).
        let mut desired: BTreeMap<ReplicaKey, (WorkloadTemplate, Digest, String, Option<u32>)> = BTreeMap::new();
        let mut reqs = Vec::new();
        let mut new_status: HashMap<ObjectKey, ObjectStatus> = HashMap::new();
        let mut jobs: Vec<(ObjectKey, u32, u32, u32, u64)> = Vec::new();

        for (rec, obj) in &objects {
            let Some(tpl) = obj.pod_template() else { continue };
            let w = tpl.workload();
            let key = obj.key();
            let Some(digest) = rec.resolved.get(&w.image).copied() else {
                new_status.entry(key.clone()).or_default().messages.push(format!("image {} is not resolved", w.image));
                continue;
            };
            let revision = revision_of(tpl, digest);
            let (kind, replicas) = match obj {
                Object::Deployment(d) => (WorkloadKind::Deployment, d.spec.replicas()),
                Object::DaemonSet(_) => (WorkloadKind::DaemonSet, 1),
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
                    // Pending indices, at most `parallelism` at a time.
                    let pending: Vec<u32> =
                        (0..completions).filter(|i| !record.done.contains(i)).take(parallelism as usize).collect();
                    let allowed = (backoff + 1).saturating_sub(record.failed).max(1);
                    for i in pending {
                        desired.insert(
                            ReplicaKey { owner: key.clone(), index: i },
                            (w.clone(), digest, revision.clone(), Some(allowed)),
                        );
                    }
                    continue;
                }
                Object::Service(_) => continue,
            };
            new_status.entry(key.clone()).or_default().desired = replicas;
            reqs.push(WorkloadReq {
                key: key.to_string(),
                kind,
                replicas,
                memory_mib: w.memory_bytes.map(|b| b.div_ceil(1 << 20)).unwrap_or(0),
                cpu_millis: w.cpu_millis.unwrap_or(0),
                node_selector: w.node_selector.clone(),
                arch: None,
            });
            for i in 0..replicas {
                desired
                    .insert(ReplicaKey { owner: key.clone(), index: i }, (w.clone(), digest, revision.clone(), None));
            }
        }

        // Placement: the scheduler decides which slots this node runs.
        let me = NodeInfo {
            id: self.inner.node.clone(),
            labels: self.inner.capacity.labels.clone(),
            zone: None,
            arch: std::env::consts::ARCH.to_string(),
            memory_mib: self.inner.capacity.memory_mib,
            cpu_millis: self.inner.capacity.cpu_millis,
            max_instances: self.inner.capacity.max_instances,
        };
        let placement = wasmfleet_scheduler::place(&reqs, std::slice::from_ref(&me));
        let mut placed: HashSet<ReplicaKey> = HashSet::new();
        for slot in placement.slots_on(&me.id) {
            if let Ok(owner) = slot.key.parse::<ObjectKey>() {
                placed.insert(ReplicaKey { owner, index: slot.index });
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
        desired.retain(|k, _| k.owner.kind == Kind::Job || placed.contains(k));

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
        for k in stale {
            if let Some(r) = replicas.remove(&k) {
                retired.push(r);
            }
        }

        // Jobs: record finished indices.
        for (key, _completions, _par, backoff, generation) in &jobs {
            self.record_job_progress(&mut replicas, key, *backoff, *generation, &mut new_status);
        }

        // Readiness and the view.
        let mut view = Vec::new();
        for r in replicas.values() {
            let ready = r.ready();
            if ready {
                new_status.entry(r.key.owner.clone()).or_default().ready += 1;
            }
            view.push(self.replica_status(r, ready));
        }
        for (r, _) in incoming.values() {
            let mut st = self.replica_status(r, r.ready());
            st.message = Some(format!(
                "new revision, waiting to take over from the serving replica{}",
                st.message.map(|m| format!("; {m}")).unwrap_or_default()
            ));
            view.push(st);
        }
        self.publish_routes(&objects, &replicas, &mut new_status);
        drop(incoming);
        drop(replicas);
        for r in retired {
            r.stop().await;
        }
        // Forget logs and volumes of deleted objects.
        let live: HashSet<ObjectKey> = objects.iter().map(|(_, o)| o.key()).collect();
        self.inner.logs.retain(|k, _| live.contains(k));
        self.remove_orphan_volumes(&live);
        *self.inner.view.lock().unwrap_or_else(|e| e.into_inner()) = view;
        self.inner.status.clear();
        for (k, v) in new_status {
            self.inner.status.insert(k, v);
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
        if let Err(e) = self.inner.store.set_job_record(key, &rec) {
            tracing::error!(job = %key, error = %e, "cannot record job progress");
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

    /// Deletes the emptyDir volumes of replicas whose object is gone (as Kubernetes does when
    /// a pod is deleted). Directories are `<data>/volumes/<namespace>/<replica>/<volume>`.
    fn remove_orphan_volumes(&self, live: &HashSet<ObjectKey>) {
        let root = self.inner.data_dir.join("volumes");
        let Ok(namespaces) = std::fs::read_dir(&root) else { return };
        for ns in namespaces.flatten() {
            let ns_name = ns.file_name().to_string_lossy().into_owned();
            let Ok(reps) = std::fs::read_dir(ns.path()) else { continue };
            for rep in reps.flatten() {
                let rep_name = rep.file_name().to_string_lossy().into_owned();
                let owner = rep_name.rsplit_once('-').map(|(o, _)| o).unwrap_or(&rep_name);
                if !live.iter().any(|k| k.namespace == ns_name && k.name == owner)
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
                if ready { "Running" } else { "NotReady" }.to_string(),
                0,
                None,
                Some(service.stats()),
            ),
            Runner::Command(h) => {
                let s = h.status();
                (
                    "command".to_string(),
                    format!("{:?}", s.phase),
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
        status: &mut HashMap<ObjectKey, ObjectStatus>,
    ) {
        let mut table = RoutingTable::default();
        let mut wanted_ports: HashMap<u16, Arc<ServiceRoute>> = HashMap::new();
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
                    endpoints.push(Endpoint { replica: r.key.name(), service: service.clone(), ready: ready.clone() });
                }
            }
            let st = status.entry(key.clone()).or_default();
            st.endpoints = endpoints.iter().map(|e| (e.replica.clone(), e.ready.load(Ordering::Relaxed))).collect();
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
                    let h = crate::gateway::spawn_listener(
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

/// A short, stable revision id for a pod template and its resolved module.
fn revision_of(tpl: &crate::manifest::PodTemplateSpec, digest: Digest) -> String {
    let json = serde_json::to_vec(tpl).unwrap_or_default();
    let mut bytes = json;
    bytes.extend_from_slice(&digest.0);
    Digest::of(&bytes).hex()[..10].to_string()
}
