//! The desired step: what this node must run, stop and record, as a pure function.
//!
//! Inputs are values: the stored objects, the Job records, the placement the scheduler
//! computed, what live peers publish, what runs here now, the boot state, and `now` (time since
//! the agent started). Nothing here reads a clock, a file or the network, and nothing is
//! async: the reconciler's loop ([`super`]) gathers the inputs, calls [`workloads`] and
//! [`plan`], and carries out the [`Plan`]. Every rule the node follows about *which* replica
//! runs *where* and *when* lives here, where unit and property tests reach it:
//!
//! - **placement**: a slot runs here when the scheduler assigns it here;
//! - **boot grace**: a restarted node that has known peers but sees none yet runs exactly the
//!   slots it was last assigned (from `assigned.json`), until it sees a peer or
//!   [`BOOT_GRACE`] passes; a node that never knew another member is the whole cluster;
//! - **make-before-break, same node**: a new revision starts beside the serving replica and
//!   takes over once ready, or after [`TAKEOVER_GRACE`];
//! - **make-before-break, across nodes**: a Deployment replica assigned elsewhere keeps
//!   serving here until its new node reports it ready, or [`MOVE_GRACE`] passes;
//! - **Jobs**: a completion index recorded done never runs again; a Job replica a live peer
//!   runs stays there; a running Job replica finishes where it is; Jobs wait [`JOB_SETTLE`]
//!   after start so a node that has not heard of its peers yet does not start theirs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use wasmfleet_runtime::Digest;
use wasmfleet_scheduler::rollout;
use wasmfleet_scheduler::{Placement, Rule, WorkloadKind, WorkloadReq};

use super::autoscale::{AutoscalerInfo, autoscalers, effective_replicas};
use super::claims::{ClaimUse, Claims, Readiness};
use super::progressive::{ProgressiveInfo, progressive_of, verbs_of};
use super::rollouts::spec_of;
use super::waves::{WavesInfo, waves_of};
use super::{ObjectStatus, ReplicaKey};
use crate::manifest::{AnalysisTemplate, Kind, Object, ObjectKey, PodTemplateSpec, WorkloadTemplate};
use crate::peering::{GossipReplica, PeerView};
use crate::state::{JobRecord, RevisionTemplate, RolloutRecord, StoredObject};

/// How long a new revision may take to become ready before it replaces the old one anyway.
pub const TAKEOVER_GRACE: Duration = Duration::from_secs(30);
/// How long a replica assigned elsewhere keeps serving here while its new node is not ready.
pub const MOVE_GRACE: Duration = Duration::from_secs(20);
/// After start, Jobs wait this long for membership to settle.
pub const JOB_SETTLE: Duration = Duration::from_secs(2);
/// After a restart, until a live peer is seen or this long has passed, the node runs the
/// replicas it was last assigned.
pub const BOOT_GRACE: Duration = Duration::from_secs(5);

/// What one replica slot runs: its template, resolved module and revision.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotSpec {
    pub template: WorkloadTemplate,
    pub digest: Digest,
    pub revision: String,
    /// Failed runs allowed before the replica gives up (Jobs only: what is left of
    /// `backoffLimit`).
    pub max_failures: Option<u32>,
    /// The PersistentVolumeClaims it mounts.
    pub claims: Vec<ClaimUse>,
}

/// A Job's settings, as the passes need them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobSpec {
    pub completions: u32,
    pub parallelism: u32,
    pub backoff_limit: u32,
    /// The object's generation: records of an older one are reset.
    pub generation: u64,
}

/// A Deployment or Rollout as its rollout needs it.
#[derive(Clone, Debug)]
pub struct DeploymentInfo {
    pub spec: rollout::Spec,
    /// The current template, as a revision set keeps it.
    pub template: RevisionTemplate,
    pub generation: u64,
    pub min_ready_s: u32,
    /// The sets the fleet runs now: the record's, or the current template alone.
    pub state: rollout::State,
    pub record: Option<RolloutRecord>,
    /// A Rollout's canary or blue/green strategy (None: a Deployment).
    pub progressive: Option<ProgressiveInfo>,
    /// A Deployment rolled out in waves.
    pub waves: Option<WavesInfo>,
    /// The autoscaler that sizes it, if any.
    pub autoscaler: Option<AutoscalerInfo>,
    /// `spec.replicas` as written (the size it runs may be its autoscaler's).
    pub spec_replicas: u32,
}

/// The cluster's workloads, derived from the stored objects and Job records.
#[derive(Debug, Default)]
pub struct Workloads {
    /// Every Deployment and Job slot in the cluster (Jobs: the pending indices that may run).
    pub slots: BTreeMap<ReplicaKey, SlotSpec>,
    /// DaemonSets: one replica on every eligible node.
    pub daemonsets: BTreeMap<ObjectKey, SlotSpec>,
    /// What the scheduler places.
    pub requests: Vec<WorkloadReq>,
    pub jobs: BTreeMap<ObjectKey, JobSpec>,
    pub deployments: BTreeMap<ObjectKey, DeploymentInfo>,
    /// Every module the desired state uses (loaded ahead of need).
    pub digests: BTreeSet<Digest>,
    /// Status derived from the objects alone (desired counts, Job progress, messages).
    pub status: HashMap<ObjectKey, ObjectStatus>,
    /// Workloads whose slots are not the replicas' indices (a set's slots in one wave): by
    /// scheduler key, the owner, the set and the index of each slot.
    pub slot_indices: HashMap<String, (ObjectKey, String, Vec<u32>)>,
    /// The cluster's claims, volumes and copies.
    pub claims: Claims,
    /// Scheduler keys of the workloads that mount each claim (`namespace/name`).
    pub claim_users: BTreeMap<String, BTreeSet<String>>,
}

impl Workloads {
    /// The replica the scheduler's slot `index` of workload `key` stands for.
    pub fn replica_of(&self, key: &str, index: u32) -> Option<ReplicaKey> {
        match self.slot_indices.get(key) {
            Some((owner, set, indices)) => Some(ReplicaKey::of_set(owner.clone(), set, *indices.get(index as usize)?)),
            None => {
                let (owner, set) = parse_workload_key(key)?;
                Some(ReplicaKey { owner, set, index, node: None })
            }
        }
    }
}

/// Derives the cluster's workloads. `job_records` holds the stored record of each Job that
/// has one; a record of an older generation counts as none. `rollouts` holds the rollout
/// record of each Deployment that has one; a Deployment without runs its current template.
pub fn workloads(
    objects: &[(StoredObject, Object)],
    job_records: &HashMap<ObjectKey, JobRecord>,
    mut rollouts: BTreeMap<ObjectKey, RolloutRecord>,
    claims: Claims,
) -> Workloads {
    let mut out = Workloads { claims, ..Workloads::default() };
    let (mut autoscalers, problems) = autoscalers(objects);
    for (hpa, message) in problems {
        out.status.entry(hpa).or_default().messages.push(message);
    }
    let templates: BTreeMap<(&str, &str), &AnalysisTemplate> = objects
        .iter()
        .filter_map(|(_, o)| match o {
            Object::AnalysisTemplate(t) => {
                Some(((t.metadata.namespace.as_deref().unwrap_or("default"), t.metadata.name.as_deref()?), t))
            }
            _ => None,
        })
        .collect();
    for (rec, obj) in objects {
        let Some(tpl) = obj.pod_template() else { continue };
        let w = tpl.workload();
        let key = obj.key();
        let Some(digest) = rec.resolved.get(&w.image).copied() else {
            out.status.entry(key).or_default().messages.push(format!("image {} is not resolved", w.image));
            continue;
        };
        out.digests.insert(digest);
        let tc = out.claims.of_template(&key.namespace, &w.volumes);
        if !tc.problems.is_empty() {
            out.status.entry(key.clone()).or_default().messages.extend(tc.problems.iter().cloned());
        }
        // A ReadWriteOnce claim admits one replica: the others wait.
        let limit = if tc.exclusive() { 1 } else { u32::MAX };
        let spec =
            SlotSpec { revision: revision_of(tpl, digest), template: w, digest, max_failures: None, claims: tc.uses };
        let mut req = WorkloadReq {
            key: key.to_string(),
            kind: WorkloadKind::Deployment,
            replicas: 0,
            memory_mib: spec.template.memory_bytes.map(|b| b.div_ceil(1 << 20)).unwrap_or(0),
            cpu_millis: spec.template.cpu_millis.unwrap_or(0),
            node_selector: spec.template.node_selector.clone(),
            arch: None,
            nodes: tc.nodes,
            planned: 0,
        };
        match obj {
            Object::Deployment(d) => {
                let record = rollouts.remove(&key);
                let spec_replicas = d.spec.replicas();
                let autoscaled;
                let d = match effective_replicas(spec_replicas, record.as_ref()) {
                    n if n == spec_replicas => d,
                    n => {
                        let mut copy = d.clone();
                        copy.spec.replicas = Some(n);
                        autoscaled = copy;
                        &autoscaled
                    }
                };
                out.status.entry(key.clone()).or_default().desired = d.spec.replicas();
                let mut spec_r = spec_of(d, &spec.revision);
                if limit == 1 {
                    // The one writer stops before the new revision starts.
                    spec_r.strategy = rollout::Strategy::Recreate;
                    note_single_writer(&mut out, &key, &spec, d.spec.replicas());
                }
                let state = match &record {
                    Some(r) => r.state.clone(),
                    None => rollout::State::initial(&spec_r, rec.created_ms),
                };
                let mut messages = Vec::new();
                let waves = waves_of(d, &key.namespace, &templates, &mut messages);
                out.status.entry(key.clone()).or_default().messages.extend(messages);
                let label = waves.as_ref().map(|w| w.settings.label.as_str());
                push_sets(&mut out, &key, &spec, &state, record.as_ref(), d.spec.replicas(), label, &req, limit);
                let info = DeploymentInfo {
                    spec: spec_r,
                    template: kept_template(tpl, rec),
                    generation: rec.generation,
                    min_ready_s: d.spec.min_ready_seconds.unwrap_or(0),
                    state,
                    record,
                    progressive: None,
                    waves,
                    autoscaler: autoscalers.remove(&key),
                    spec_replicas,
                };
                out.deployments.insert(key.clone(), info);
                continue;
            }
            Object::Rollout(r) => {
                let record = rollouts.remove(&key);
                let spec_replicas = r.spec.replicas();
                let autoscaled;
                let r = match effective_replicas(spec_replicas, record.as_ref()) {
                    n if n == spec_replicas => r,
                    n => {
                        let mut copy = r.clone();
                        copy.spec.replicas = Some(n);
                        autoscaled = copy;
                        &autoscaled
                    }
                };
                out.status.entry(key.clone()).or_default().desired = r.spec.replicas();
                let built = progressive_of(r, &spec.revision, &key.namespace, &templates);
                let st = out.status.entry(key.clone()).or_default();
                st.messages.extend(built.messages.iter().cloned());
                let state = match &record {
                    Some(r) => r.state.clone(),
                    None => rollout::State::initial(&built.base, rec.created_ms),
                };
                if limit == 1 {
                    note_single_writer(&mut out, &key, &spec, r.spec.replicas());
                }
                push_sets(&mut out, &key, &spec, &state, record.as_ref(), r.spec.replicas(), None, &req, limit);
                let progress = record.as_ref().and_then(|r| r.progress.clone()).unwrap_or_default();
                let info = DeploymentInfo {
                    spec: built.base.clone(),
                    template: kept_template(tpl, rec),
                    generation: rec.generation,
                    min_ready_s: r.spec.min_ready_seconds.unwrap_or(0),
                    state,
                    record,
                    progressive: Some(ProgressiveInfo {
                        spec: built.spec,
                        progress,
                        verbs: verbs_of(&rec.verbs),
                        metrics: built.metrics,
                        services: built.services,
                        labels: spec.template.labels.clone(),
                    }),
                    waves: None,
                    autoscaler: autoscalers.remove(&key),
                    spec_replicas,
                };
                out.deployments.insert(key.clone(), info);
                continue;
            }
            Object::DaemonSet(_) => {
                req.kind = WorkloadKind::DaemonSet;
                out.daemonsets.insert(key.clone(), spec.clone());
            }
            Object::Job(j) => {
                let job = JobSpec {
                    completions: j.spec.completions(),
                    parallelism: j.spec.parallelism(),
                    backoff_limit: j.spec.backoff_limit(),
                    generation: rec.generation,
                };
                let record = current_record(job_records.get(&key), job.generation);
                let st = out.status.entry(key.clone()).or_default();
                st.desired = job.completions;
                st.succeeded = record.done.len() as u32;
                st.failed = record.failed;
                st.complete = record.complete;
                if record.failed_permanently {
                    st.messages.push(format!("job failed: backoffLimit {} reached", job.backoff_limit));
                }
                out.jobs.insert(key.clone(), job);
                if record.complete || record.failed_permanently {
                    continue;
                }
                // Slots are completion indices; the pending ones run, `parallelism` at a time.
                req.kind = WorkloadKind::Job;
                req.replicas = job.completions;
                let allowed = (job.backoff_limit + 1).saturating_sub(record.failed).max(1);
                if limit == 1 {
                    note_single_writer(&mut out, &key, &spec, job.parallelism);
                }
                let pending =
                    (0..job.completions).filter(|i| !record.done.contains(i)).take(job.parallelism.min(limit) as usize);
                for i in pending {
                    let spec = SlotSpec { max_failures: Some(allowed), ..spec.clone() };
                    out.slots.insert(ReplicaKey::new(key.clone(), i), spec);
                }
            }
            Object::Service(_)
            | Object::AnalysisTemplate(_)
            | Object::HorizontalPodAutoscaler(_)
            | Object::PersistentVolumeClaim(_)
            | Object::StorageClass(_) => continue,
        }
        note_users(&mut out, &key, &spec, &req.key);
        out.requests.push(req);
    }
    out
}

/// The record of the current generation: the stored one, or a fresh one if it is missing or
/// of an older generation.
pub fn current_record(stored: Option<&JobRecord>, generation: u64) -> JobRecord {
    match stored {
        Some(r) if r.generation == generation => r.clone(),
        _ => JobRecord { generation, ..Default::default() },
    }
}

/// The slots and scheduler requests of a workload run as revision sets (Deployments and
/// Rollouts): every set with a size runs its template (`current` for the current template,
/// else the one the record keeps), planned at `planned` slots. A Deployment rolled out in
/// waves of node label `waves` places each set's slots of one wave as a workload of its own,
/// held to the wave's nodes.
#[expect(clippy::too_many_arguments, reason = "one workload's sets, from its parts")]
fn push_sets(
    out: &mut Workloads,
    key: &ObjectKey,
    current: &SlotSpec,
    state: &rollout::State,
    record: Option<&RolloutRecord>,
    planned: u32,
    waves: Option<&str>,
    base: &WorkloadReq,
    limit: u32,
) {
    let mut left = limit;
    for set in state.sets.iter().filter(|s| s.replicas > 0) {
        let replicas = set.replicas.min(left);
        if replicas == 0 {
            continue;
        }
        left -= replicas;
        let slot = if set.hash == current.revision {
            current.clone()
        } else {
            match record.and_then(|r| set_spec(r, &set.hash)) {
                Some(slot) => slot,
                None => {
                    let msg = format!("revision {} has no stored template", set.revision);
                    out.status.entry(key.clone()).or_default().messages.push(msg);
                    continue;
                }
            }
        };
        out.digests.insert(slot.digest);
        // An older revision's template may mount other claims than the current one.
        let tc = out.claims.of_template(&key.namespace, &slot.template.volumes);
        let slot = SlotSpec { claims: tc.uses, ..slot };
        let req = WorkloadReq {
            key: workload_key(key, Some(&set.hash)),
            nodes: tc.nodes,
            replicas,
            // Every set is planned at the workload's size: a set that grows or shrinks during
            // a rollout moves none of its replicas.
            planned,
            memory_mib: slot.template.memory_bytes.map(|b| b.div_ceil(1 << 20)).unwrap_or(0),
            cpu_millis: slot.template.cpu_millis.unwrap_or(0),
            node_selector: slot.template.node_selector.clone(),
            ..base.clone()
        };
        note_users(out, key, &slot, &req.key);
        match waves {
            Some(label) if !set.waves.is_empty() => {
                for (value, indices) in &set.waves {
                    for &i in indices {
                        out.slots.insert(ReplicaKey::of_set(key.clone(), &set.hash, i), slot.clone());
                    }
                    let mut wave = req.clone();
                    wave.key = format!("{}/{value}", req.key);
                    wave.replicas = indices.len() as u32;
                    wave.node_selector.insert(label.to_string(), value.clone());
                    out.slot_indices.insert(wave.key.clone(), (key.clone(), set.hash.clone(), indices.clone()));
                    out.requests.push(wave);
                }
            }
            _ => {
                for i in 0..replicas {
                    out.slots.insert(ReplicaKey::of_set(key.clone(), &set.hash, i), slot.clone());
                }
                out.requests.push(req);
            }
        }
    }
}

/// Records that scheduler workload `workload` (of `owner`) mounts the claims of `slot`.
fn note_users(out: &mut Workloads, owner: &ObjectKey, slot: &SlotSpec, workload: &str) {
    for u in &slot.claims {
        let claim = format!("{}/{}", owner.namespace, u.claim);
        out.claim_users.entry(claim).or_default().insert(workload.to_string());
    }
}

/// Says why replicas beyond the first of a workload with a ReadWriteOnce claim wait.
fn note_single_writer(out: &mut Workloads, key: &ObjectKey, slot: &SlotSpec, wanted: u32) {
    if wanted <= 1 {
        return;
    }
    let claim = slot.claims.iter().find(|u| u.exclusive).map(|u| u.claim.as_str()).unwrap_or_default();
    out.status.entry(key.clone()).or_default().messages.push(format!(
        "{} of {wanted} replicas wait: persistentvolumeclaim {claim:?} is ReadWriteOnce (one replica at a time)",
        wanted - 1
    ));
}

/// The current template as a revision set keeps it.
fn kept_template(tpl: &PodTemplateSpec, rec: &StoredObject) -> RevisionTemplate {
    RevisionTemplate { template: serde_json::to_value(tpl).unwrap_or_default(), resolved: rec.resolved.clone() }
}

/// The slot spec of revision set `hash`, from the template the record keeps for it.
fn set_spec(record: &RolloutRecord, hash: &str) -> Option<SlotSpec> {
    let kept = record.templates.get(hash)?;
    let tpl: PodTemplateSpec = serde_json::from_value(kept.template.clone()).ok()?;
    let template = tpl.workload();
    let digest = kept.resolved.get(&template.image).copied()?;
    Some(SlotSpec { template, digest, revision: hash.to_string(), max_failures: None, claims: Vec::new() })
}

/// The scheduler's key of a workload: the owner's key, and `@<hash>` for a Deployment's
/// revision set.
pub fn workload_key(owner: &ObjectKey, set: Option<&str>) -> String {
    match set {
        Some(set) => format!("{owner}@{set}"),
        None => owner.to_string(),
    }
}

/// The owner and set of a scheduler workload key ([`workload_key`]).
pub fn parse_workload_key(key: &str) -> Option<(ObjectKey, Option<String>)> {
    match key.split_once('@') {
        Some((owner, set)) => Some((owner.parse().ok()?, Some(set.to_string()))),
        None => Some((key.parse().ok()?, None)),
    }
}

/// The revision set a replica published in gossip belongs to: its revision, for a
/// Deployment's.
pub fn gossip_set(r: &GossipReplica) -> Option<&str> {
    r.owner.starts_with("Deployment/").then_some(r.revision.as_str())
}

/// A short, stable revision id for a pod template and its resolved module.
pub fn revision_of(tpl: &PodTemplateSpec, digest: Digest) -> String {
    let mut bytes = serde_json::to_vec(tpl).unwrap_or_default();
    bytes.extend_from_slice(&digest.0);
    Digest::of(&bytes).hex()[..10].to_string()
}

/// The placement rule of the fleet: every node must place by the same one, so a fleet with
/// a node of an older release (which publishes no rule, and places slot by slot) places by the
/// oldest rule until that node is upgraded. Peers whose info has not arrived are not placed on
/// and do not count.
pub fn fleet_rule(peers: &[PeerView]) -> Rule {
    peers
        .iter()
        .filter_map(|p| p.info.as_ref())
        .map(|info| info.placement.unwrap_or(Rule::SlotOrder))
        .fold(Rule::default(), Ord::max)
}

/// How a replica is named in `assigned.json`.
pub fn assigned_id(key: &ReplicaKey) -> String {
    format!("{}#{}", workload_key(&key.owner, key.set.as_deref()), key.index)
}

/// What the node knows about its own start.
#[derive(Clone, Debug, Default)]
pub struct Boot {
    /// The node is part of a cluster layer (false: a bare node, e.g. in unit tests).
    pub clustered: bool,
    /// Gossip started with seeds: this node has known other members.
    pub has_known_peers: bool,
    /// What `assigned.json` held when the process started.
    pub last_assigned: Option<BTreeSet<String>>,
}

/// A replica running on this node, as the plan needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Local {
    pub revision: String,
    pub ready: bool,
    /// A command still running (Jobs finish where they run).
    pub running: bool,
}

/// A new revision started beside the serving replica, not yet taken over.
#[derive(Clone, Debug, PartialEq)]
pub struct Incoming {
    pub revision: String,
    pub ready: bool,
    /// When it started (time since the agent started).
    pub since: Duration,
}

/// Everything [`plan`] looks at.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub node: &'a str,
    /// Time since the agent started.
    pub now: Duration,
    pub workloads: &'a Workloads,
    pub placement: &'a Placement,
    /// Live peers (not this node) and what they publish.
    pub peers: &'a [PeerView],
    pub boot: &'a Boot,
    /// Replicas serving here.
    pub local: &'a BTreeMap<ReplicaKey, Local>,
    /// New revisions waiting beside them.
    pub incoming: &'a BTreeMap<ReplicaKey, Incoming>,
    /// Replicas assigned elsewhere that keep serving here, since when.
    pub moving: &'a BTreeMap<ReplicaKey, Duration>,
}

/// One thing the loop must do, in the order given.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Start `key`'s desired revision. If a replica serves the slot already, the new one waits
    /// beside it unless it is ready at once (see [`takes_over_at_start`]).
    Start(ReplicaKey),
    /// The waiting new revision takes over; the old replica is retired.
    Promote(ReplicaKey),
    /// Stop the waiting new revision (outdated, or its slot left this node).
    StopIncoming(ReplicaKey),
    /// Stop a serving replica, after the new routing table is published.
    Retire(ReplicaKey),
    /// Stop the serving replica, then start the desired revision: a slot that writes a
    /// ReadWriteOnce volume never has two replicas at once.
    Replace(ReplicaKey),
}

/// A volume record this node must write before a slot can start here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeIntent {
    pub namespace: String,
    pub claim: String,
    /// Take the volume over from its dead writer (else: bind the unbound claim).
    pub takeover: bool,
}

/// What this node must do now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The slots this node runs, with their specs.
    pub desired: BTreeMap<ReplicaKey, SlotSpec>,
    pub actions: Vec<Action>,
    /// The `moving` map for the next pass.
    pub moving: BTreeMap<ReplicaKey, Duration>,
    /// The assignment to keep in `assigned.json`; `None` while booting (the old one stands).
    pub assignment: Option<BTreeSet<String>>,
    /// Still in the boot grace: running the last assignment.
    pub booting: bool,
    /// Messages per object (unschedulable slots).
    pub messages: Vec<(ObjectKey, String)>,
    /// Volume records to write (claims to bind or take over) before their slots start.
    pub volumes: Vec<VolumeIntent>,
}

/// Whether a replica started for a slot that another replica serves replaces it at once:
/// only when it is ready at once (no readiness probe to pass).
pub fn takes_over_at_start(new_ready: bool) -> bool {
    new_ready
}

/// Whether this node is still in its boot grace.
pub fn booting(boot: &Boot, peers_alive: usize, now: Duration) -> bool {
    boot.clustered && boot.has_known_peers && peers_alive == 0 && now < BOOT_GRACE
}

/// Where a replica of another node stands.
struct Elsewhere<'a> {
    node: &'a str,
    ready: bool,
    active: bool,
}

/// Slot to node, and what peers run, by (owner, set, index).
struct Views<'a> {
    node_of: HashMap<ReplicaKey, &'a str>,
    elsewhere: HashMap<(String, Option<String>, u32), Vec<Elsewhere<'a>>>,
}

impl<'a> Views<'a> {
    fn new(inp: &Inputs<'a>) -> Views<'a> {
        let node_of = inp
            .placement
            .assignments
            .iter()
            .filter_map(|(slot, node)| Some((inp.workloads.replica_of(&slot.key, slot.index)?, node.as_str())))
            .collect();
        let mut elsewhere: HashMap<(String, Option<String>, u32), Vec<Elsewhere<'a>>> = HashMap::new();
        for peer in inp.peers {
            for r in &peer.replicas {
                let e = Elsewhere { node: &peer.name, ready: r.ready, active: r.phase.is_active() };
                elsewhere.entry((r.owner.clone(), gossip_set(r).map(str::to_string), r.index)).or_default().push(e);
            }
        }
        Views { node_of, elsewhere }
    }

    fn of(&self, key: &ReplicaKey) -> &[Elsewhere<'a>] {
        self.elsewhere.get(&(key.owner.to_string(), key.set.clone(), key.index)).map(Vec::as_slice).unwrap_or_default()
    }
}

/// Computes what this node must run, start, promote and stop.
pub fn plan(inp: Inputs<'_>) -> Plan {
    let views = Views::new(&inp);
    let mut out = Plan { booting: booting(inp.boot, inp.peers.len(), inp.now), ..Plan::default() };
    for u in &inp.placement.unschedulable {
        if let Some(replica) = inp.workloads.replica_of(&u.slot.key, u.slot.index) {
            let owner = replica.owner.clone();
            let replica = replica.name();
            let msg = format!("replica {replica} unschedulable: {}", u.reason);
            if !out.messages.iter().any(|(o, m)| *o == owner && *m == msg) {
                out.messages.push((owner, msg));
            }
        }
    }
    (out.desired, out.volumes) = runs_here(&inp, &views, out.booting);
    if !out.booting {
        out.assignment = Some(out.desired.keys().filter(|k| k.node.is_none()).map(assigned_id).collect());
    }
    out.actions = converge(&inp, &out.desired);
    for (key, local) in inp.local.iter().filter(|(k, _)| !out.desired.contains_key(*k)) {
        match keeps_serving(&inp, &views, key) {
            Some(since) => {
                out.moving.insert(key.clone(), since);
            }
            None if key.owner.kind == Kind::Job && inp.workloads.jobs.contains_key(&key.owner) && local.running => {}
            None => out.actions.push(Action::Retire(key.clone())),
        }
    }
    out
}

/// The slots this node runs: those placed here (while booting: those last assigned here), but
/// not a Job replica before membership settled or while a live peer runs it, nor a slot whose
/// claims are not usable here yet (with the volume records to write for them).
fn runs_here(
    inp: &Inputs<'_>,
    views: &Views<'_>,
    booting: bool,
) -> (BTreeMap<ReplicaKey, SlotSpec>, Vec<VolumeIntent>) {
    static NOTHING: BTreeSet<String> = BTreeSet::new();
    let last = inp.boot.last_assigned.as_ref().unwrap_or(&NOTHING);
    let settled = !inp.boot.clustered || inp.now >= JOB_SETTLE;
    let mut out = BTreeMap::new();
    let mut intents = Vec::new();
    for (key, spec) in &inp.workloads.slots {
        let mine =
            if booting { last.contains(&assigned_id(key)) } else { views.node_of.get(key).copied() == Some(inp.node) };
        let job_waits = key.owner.kind == Kind::Job && (!settled || views.of(key).iter().any(|e| e.active));
        if mine && !job_waits && claims_ready(inp, key, spec, &mut intents) {
            out.insert(key.clone(), spec.clone());
        }
    }
    for (owner, spec) in &inp.workloads.daemonsets {
        if inp.placement.slots_on(inp.node).any(|slot| slot.key == owner.to_string()) {
            let key = ReplicaKey { owner: owner.clone(), set: None, index: 0, node: Some(inp.node.to_string()) };
            if claims_ready(inp, &key, spec, &mut intents) {
                out.insert(key, spec.clone());
            }
        }
    }
    (out, intents)
}

/// Whether every claim `spec` mounts is usable here; adds the records to write otherwise.
fn claims_ready(inp: &Inputs<'_>, key: &ReplicaKey, spec: &SlotSpec, intents: &mut Vec<VolumeIntent>) -> bool {
    let namespace = &key.owner.namespace;
    let mut ready = true;
    for u in &spec.claims {
        let binder = binds_here(inp, namespace, &u.claim);
        let intent = match inp.workloads.claims.readiness(namespace, u, inp.node, binder) {
            Readiness::Ready => continue,
            Readiness::Wait => None,
            Readiness::Bind(claim) => Some(VolumeIntent { namespace: namespace.clone(), claim, takeover: false }),
            Readiness::TakeOver(claim) => Some(VolumeIntent { namespace: namespace.clone(), claim, takeover: true }),
        };
        ready = false;
        if let Some(i) = intent
            && !intents.contains(&i)
        {
            intents.push(i);
        }
    }
    ready
}

/// Whether this node binds an unbound claim: it holds the first slot (by workload key, then
/// index) of the workloads that mount it, in the placement every node computes.
fn binds_here(inp: &Inputs<'_>, namespace: &str, claim: &str) -> bool {
    let Some(users) = inp.workloads.claim_users.get(&format!("{namespace}/{claim}")) else { return false };
    inp.placement.assignments.iter().find(|(slot, _)| users.contains(&slot.key)).is_some_and(|(_, n)| n == inp.node)
}

/// For each desired slot: start its revision, let a waiting new revision take over, or leave
/// it alone; and stop waiting revisions of slots that left.
fn converge(inp: &Inputs<'_>, desired: &BTreeMap<ReplicaKey, SlotSpec>) -> Vec<Action> {
    let mut actions = Vec::new();
    for (key, spec) in desired {
        let waiting = inp.incoming.get(key);
        if inp.local.get(key).is_some_and(|r| r.revision == spec.revision) {
            if waiting.is_some() {
                actions.push(Action::StopIncoming(key.clone()));
            }
            continue;
        }
        match waiting {
            Some(new) if new.revision == spec.revision => {
                if new.ready || inp.now.saturating_sub(new.since) >= TAKEOVER_GRACE {
                    actions.push(Action::Promote(key.clone()));
                }
            }
            Some(_) => actions.extend([Action::StopIncoming(key.clone()), Action::Start(key.clone())]),
            None if inp.local.contains_key(key) && spec.claims.iter().any(|u| u.exclusive) => {
                actions.push(Action::Replace(key.clone()))
            }
            None => actions.push(Action::Start(key.clone())),
        }
    }
    for key in inp.incoming.keys().filter(|k| !desired.contains_key(*k)) {
        actions.push(Action::StopIncoming(key.clone()));
    }
    actions
}

/// Make-before-break across nodes: a Deployment replica whose slot moved to another node
/// serves here until that node reports it ready, or the grace passes. Returns since when it
/// has been moving, while it keeps serving.
fn keeps_serving(inp: &Inputs<'_>, views: &Views<'_>, key: &ReplicaKey) -> Option<Duration> {
    if key.owner.kind != Kind::Deployment {
        return None;
    }
    // The writer of a ReadWriteOnce volume stops as soon as it is not the slot's: two never run.
    if inp.workloads.slots.get(key).is_some_and(|s| s.claims.iter().any(|u| u.exclusive)) {
        return None;
    }
    let new_node = views.node_of.get(key)?;
    let ready_there = views.of(key).iter().any(|e| e.node == *new_node && e.ready);
    let since = *inp.moving.get(key).unwrap_or(&inp.now);
    (!ready_there && inp.now.saturating_sub(since) < MOVE_GRACE).then_some(since)
}

#[cfg(test)]
mod tests;
