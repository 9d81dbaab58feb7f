//! The desired step's rules, by example and by property.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use wasmfleet_runtime::Digest;
use wasmfleet_scheduler::{NodeInfo, Placement, place};

use super::*;
use crate::manifest::{Kind, Object, ObjectKey, parse_str};
use crate::peering::{GossipReplica, PeerView, ReplicaPhase};
use crate::state::{JobRecord, StoredObject};
use wasmfleet_cluster::Version;
use wasmfleet_cluster::membership::MemberState;

const ME: &str = "n1";

fn deployment(name: &str, replicas: u32, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
         spec:\n      containers: [{{name: c, image: \"{image}\"}}]\n"
    )
}

fn job(name: &str, completions: u32, parallelism: u32) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n  completions: {completions}\n  \
         parallelism: {parallelism}\n  template:\n    spec:\n      restartPolicy: Never\n      \
         containers: [{{name: c, image: \"tool:1\"}}]\n"
    )
}

/// Stored objects from YAML, every image resolved to a digest of its name.
fn stored(yaml: &str, generation: u64) -> Vec<(StoredObject, Object)> {
    let objects = parse_str("test.yaml", yaml).unwrap_or_else(|e| panic!("{e:?}"));
    objects
        .into_iter()
        .map(|o| {
            let image = o.pod_template().map(|t| t.workload().image).unwrap_or_default();
            let rec = StoredObject {
                key: o.key(),
                version: Version { wall_ms: 1, counter: 0, node: 1 },
                deleted: false,
                object: Some(o.to_json()),
                resolved: BTreeMap::from([(image.clone(), Digest::of(image.as_bytes()))]),
                generation,
                created_ms: 0,
                updated_ms: 0,
                verbs: BTreeMap::new(),
            };
            (rec, o)
        })
        .collect()
}

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        labels: BTreeMap::new(),
        zone: None,
        arch: "x86_64".into(),
        memory_mib: 1 << 20,
        cpu_millis: 1 << 20,
        max_instances: 10_000,
    }
}

fn peer(name: &str, replicas: Vec<GossipReplica>) -> PeerView {
    PeerView {
        name: name.into(),
        state: MemberState::Alive,
        cluster: None,
        info: None,
        replicas,
        figures: BTreeMap::new(),
        metrics: Default::default(),
        volumes: Vec::new(),
    }
}

fn published(owner: &ObjectKey, index: u32, phase: ReplicaPhase, ready: bool) -> GossipReplica {
    GossipReplica {
        owner: owner.to_string(),
        index,
        name: format!("{}-{index}", owner.name),
        revision: "r".into(),
        phase,
        ready,
        restarts: 0,
        http: true,
        started_ms: 0,
        in_flight: 0,
        ready_ms: 0,
    }
}

/// A Deployment replica published by a peer, in the revision set `set`.
fn published_in(owner: &ObjectKey, set: &str, index: u32, phase: ReplicaPhase, ready: bool) -> GossipReplica {
    GossipReplica { revision: set.into(), ..published(owner, index, phase, ready) }
}

fn clustered() -> Boot {
    Boot { clustered: true, has_known_peers: true, last_assigned: None }
}

struct World {
    workloads: Workloads,
    placement: Placement,
    peers: Vec<PeerView>,
    boot: Boot,
    local: BTreeMap<ReplicaKey, Local>,
    incoming: BTreeMap<ReplicaKey, Incoming>,
    moving: BTreeMap<ReplicaKey, Duration>,
}

impl World {
    fn new(objects: &[(StoredObject, Object)], records: &HashMap<ObjectKey, JobRecord>, nodes: &[&str]) -> World {
        let workloads = workloads(objects, records, BTreeMap::new(), Claims::default());
        let infos: Vec<NodeInfo> = nodes.iter().map(|n| node(n)).collect();
        let placement = place(&workloads.requests, &infos);
        World {
            workloads,
            placement,
            peers: Vec::new(),
            boot: clustered(),
            local: BTreeMap::new(),
            incoming: BTreeMap::new(),
            moving: BTreeMap::new(),
        }
    }

    /// The current revision set of Deployment `owner`.
    fn set(&self, owner: &ObjectKey) -> String {
        self.workloads.deployments[owner].spec.template_hash.clone()
    }

    /// Slot `index` of Deployment `owner`'s current set.
    fn slot(&self, owner: &ObjectKey, index: u32) -> ReplicaKey {
        ReplicaKey::of_set(owner.clone(), &self.set(owner), index)
    }

    /// The placement's node of slot `index` of `owner`'s current set.
    fn node_of(&self, owner: &ObjectKey, index: u32) -> Option<&str> {
        let slot = wasmfleet_scheduler::Slot::new(workload_key(owner, Some(&self.set(owner))), index);
        self.placement.node_of(&slot)
    }

    fn plan(&self, now: Duration) -> Plan {
        plan(Inputs {
            node: ME,
            now,
            workloads: &self.workloads,
            placement: &self.placement,
            peers: &self.peers,
            boot: &self.boot,
            local: &self.local,
            incoming: &self.incoming,
            moving: &self.moving,
        })
    }
}

const SETTLED: Duration = Duration::from_secs(60);

#[test]
fn a_lone_node_runs_every_replica() {
    let objects = stored(&deployment("web", 3, "web:1"), 1);
    let mut w = World::new(&objects, &HashMap::new(), &[ME]);
    w.boot = Boot::default();
    let plan = w.plan(Duration::ZERO);
    assert_eq!(plan.desired.len(), 3);
    assert_eq!(plan.actions.iter().filter(|a| matches!(a, Action::Start(_))).count(), 3);
    assert_eq!(plan.assignment.as_ref().map(|a| a.len()), Some(3));
}

#[test]
fn a_new_revision_waits_beside_the_serving_one_until_ready() {
    let objects = stored(&deployment("web", 1, "web:2"), 2);
    let mut w = World::new(&objects, &HashMap::new(), &[ME]);
    let key = w.slot(&ObjectKey::new(Kind::Deployment, "default", "web"), 0);
    let revision = w.workloads.slots[&key].revision.clone();
    w.local.insert(key.clone(), Local { revision: "old".into(), ready: true, running: false });
    w.incoming.insert(key.clone(), Incoming { revision: revision.clone(), ready: false, since: SETTLED });
    assert!(w.plan(SETTLED + Duration::from_secs(1)).actions.is_empty());
    assert_eq!(w.plan(SETTLED + TAKEOVER_GRACE).actions, vec![Action::Promote(key.clone())]);
    w.incoming.get_mut(&key).unwrap().ready = true;
    assert_eq!(w.plan(SETTLED).actions, vec![Action::Promote(key.clone())]);
    // An outdated waiting revision is replaced by the newest.
    w.incoming.get_mut(&key).unwrap().revision = "older".into();
    assert_eq!(w.plan(SETTLED).actions, vec![Action::StopIncoming(key.clone()), Action::Start(key)]);
}

#[test]
fn a_replica_that_moved_serves_until_its_new_node_is_ready() {
    let objects = stored(&deployment("web", 1, "web:1"), 1);
    let mut w = World::new(&objects, &HashMap::new(), &["n2"]);
    let owner = ObjectKey::new(Kind::Deployment, "default", "web");
    let key = w.slot(&owner, 0);
    let set = w.set(&owner);
    w.local.insert(key.clone(), Local { revision: set.clone(), ready: true, running: false });
    w.peers = vec![peer("n2", vec![published_in(&owner, &set, 0, ReplicaPhase::Pending, false)])];
    let plan = w.plan(SETTLED);
    assert!(plan.actions.is_empty(), "{plan:?}");
    assert_eq!(plan.moving.get(&key), Some(&SETTLED));
    w.moving = plan.moving;
    assert!(w.plan(SETTLED + MOVE_GRACE - Duration::from_millis(1)).actions.is_empty());
    assert_eq!(w.plan(SETTLED + MOVE_GRACE).actions, vec![Action::Retire(key.clone())]);
    w.peers = vec![peer("n2", vec![published_in(&owner, &set, 0, ReplicaPhase::Running, true)])];
    assert_eq!(w.plan(SETTLED).actions, vec![Action::Retire(key)]);
}

#[test]
fn a_restarted_node_runs_its_last_assignment_until_it_sees_a_peer() {
    let objects = stored(&deployment("web", 4, "web:1"), 1);
    let mut w = World::new(&objects, &HashMap::new(), &[ME]);
    let set = w.set(&ObjectKey::new(Kind::Deployment, "default", "web"));
    w.boot.last_assigned = Some(BTreeSet::from([format!("Deployment/default/web@{set}#1")]));
    let plan = w.plan(Duration::from_secs(1));
    assert!(plan.booting);
    assert_eq!(plan.desired.keys().map(|k| k.index).collect::<Vec<_>>(), vec![1]);
    assert_eq!(plan.assignment, None, "the boot assignment is not overwritten while booting");
    // After the grace, a node that still sees no one is the cluster.
    assert_eq!(w.plan(BOOT_GRACE).desired.len(), 4);
    // A node that never knew a peer waits for no one.
    w.boot.has_known_peers = false;
    assert_eq!(w.plan(Duration::ZERO).desired.len(), 4);
}

#[test]
fn a_job_index_recorded_done_never_runs_again() {
    let objects = stored(&job("batch", 3, 3), 1);
    let owner = ObjectKey::new(Kind::Job, "default", "batch");
    let record = JobRecord { generation: 1, done: vec![0, 2], ..Default::default() };
    let w = World::new(&objects, &HashMap::from([(owner.clone(), record)]), &[ME]);
    let plan = w.plan(SETTLED);
    assert_eq!(plan.desired.keys().map(|k| k.index).collect::<Vec<_>>(), vec![1]);
    // A record of an older generation is a fresh start.
    let old = JobRecord { generation: 0, done: vec![0, 1, 2], complete: true, ..Default::default() };
    let w = World::new(&objects, &HashMap::from([(owner, old)]), &[ME]);
    assert_eq!(w.plan(SETTLED).desired.len(), 3);
}

#[test]
fn jobs_wait_for_membership_to_settle_and_for_peers_running_them() {
    let objects = stored(&job("batch", 1, 1), 1);
    let owner = ObjectKey::new(Kind::Job, "default", "batch");
    let mut w = World::new(&objects, &HashMap::new(), &[ME]);
    w.peers = vec![peer("n2", vec![])];
    assert!(w.plan(JOB_SETTLE - Duration::from_millis(1)).desired.is_empty());
    assert_eq!(w.plan(JOB_SETTLE).desired.len(), 1);
    w.peers = vec![peer("n2", vec![published(&owner, 0, ReplicaPhase::Running, true)])];
    assert!(w.plan(SETTLED).desired.is_empty());
}

#[test]
fn a_running_job_replica_finishes_where_it_runs() {
    let objects = stored(&job("batch", 1, 1), 1);
    let mut w = World::new(&objects, &HashMap::new(), &["n2"]);
    let key = ReplicaKey::new(ObjectKey::new(Kind::Job, "default", "batch"), 0);
    w.local.insert(key.clone(), Local { revision: "r".into(), ready: true, running: true });
    assert!(w.plan(SETTLED).actions.is_empty());
    w.local.get_mut(&key).unwrap().running = false;
    assert_eq!(w.plan(SETTLED).actions, vec![Action::Retire(key)]);
}

#[test]
fn a_fleet_with_an_older_node_places_by_the_older_rule() {
    use crate::peering::NodeInfo;
    use wasmfleet_scheduler::Rule;
    let with = |placement| PeerView { info: Some(NodeInfo { placement, ..NodeInfo::default() }), ..peer("p", vec![]) };
    assert_eq!(fleet_rule(&[]), Rule::Striped);
    assert_eq!(fleet_rule(&[with(Some(Rule::Striped)), peer("no-info-yet", vec![])]), Rule::Striped);
    assert_eq!(fleet_rule(&[with(Some(Rule::Striped)), with(None)]), Rule::SlotOrder);
}

// --- properties ---

fn secs(max: u64) -> impl Strategy<Value = Duration> {
    (0..max * 1000).prop_map(Duration::from_millis)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Never runs a Job index that is recorded complete, whatever the record and placement.
    #[test]
    fn never_runs_a_recorded_job_index(
        completions in 1u32..12,
        parallelism in 1u32..6,
        done in proptest::collection::btree_set(0u32..12, 0..12),
        complete in any::<bool>(),
        nodes in 1usize..4,
        now in secs(30),
    ) {
        let objects = stored(&job("batch", completions, parallelism), 3);
        let owner = ObjectKey::new(Kind::Job, "default", "batch");
        let record = JobRecord { generation: 3, done: done.iter().copied().collect(), complete, ..Default::default() };
        let names: Vec<String> = (1..=nodes).map(|i| format!("n{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let w = World::new(&objects, &HashMap::from([(owner, record)]), &refs);
        let plan = w.plan(now);
        for key in plan.desired.keys() {
            prop_assert!(!complete, "a complete Job runs {key:?}");
            prop_assert!(!done.contains(&key.index), "done index {} runs again", key.index);
        }
        prop_assert!(plan.desired.len() <= parallelism as usize);
    }

    /// Never stops the old replica of a moving slot (or of a slot changing revision) before
    /// the new one is ready or the grace passed.
    #[test]
    fn never_breaks_before_make(
        replicas in 1u32..6,
        ready_elsewhere in proptest::collection::vec(any::<bool>(), 6),
        incoming_ready in proptest::collection::vec(any::<bool>(), 6),
        moving_since in proptest::collection::vec(secs(60), 6),
        now in secs(90),
        revision_changed in any::<bool>(),
    ) {
        let objects = stored(&deployment("web", replicas, "web:1"), 1);
        let owner = ObjectKey::new(Kind::Deployment, "default", "web");
        let mut w = World::new(&objects, &HashMap::new(), &[ME, "n2", "n3"]);
        let mut published_by: BTreeMap<String, Vec<GossipReplica>> = BTreeMap::new();
        for i in 0..replicas {
            let key = w.slot(&owner, i);
            let revision = w.workloads.slots[&key].revision.clone();
            let here = w.node_of(&owner, i) == Some(ME);
            let old = if revision_changed && here { "old".to_string() } else { revision.clone() };
            w.local.insert(key.clone(), Local { revision: old, ready: true, running: false });
            if here && revision_changed {
                let since = moving_since[i as usize].min(now);
                w.incoming.insert(key.clone(), Incoming { revision, ready: incoming_ready[i as usize], since });
            } else if !here {
                w.moving.insert(key.clone(), moving_since[i as usize].min(now));
                let new_node = w.node_of(&owner, i).unwrap().to_string();
                published_by.entry(new_node).or_default().push(published_in(
                    &owner, &revision, i, ReplicaPhase::Running, ready_elsewhere[i as usize]));
            }
        }
        // Both peers are live (this node is past its boot grace, which has its own property).
        for other in ["n2", "n3"] {
            published_by.entry(other.to_string()).or_default();
        }
        w.peers = published_by.into_iter().map(|(n, r)| peer(&n, r)).collect();
        let plan = w.plan(now);
        for action in &plan.actions {
            match action {
                Action::Retire(key) => {
                    let since = w.moving[key];
                    prop_assert!(
                        ready_elsewhere[key.index as usize] || now - since >= MOVE_GRACE,
                        "retired {key:?} before its new node was ready (since {since:?}, now {now:?})"
                    );
                }
                Action::Promote(key) => {
                    let new = &w.incoming[key];
                    prop_assert!(new.ready || now - new.since >= TAKEOVER_GRACE);
                }
                Action::Start(key) => prop_assert!(false, "nothing new to start, yet {key:?} starts"),
                Action::StopIncoming(key) => prop_assert!(false, "the waiting {key:?} is stopped"),
                Action::Replace(key) => prop_assert!(false, "nothing claims a volume, yet {key:?} is replaced"),
            }
        }
    }

    /// A node that restarts alone runs exactly its last assignment until it sees a peer or
    /// the grace passes; then it follows the placement.
    #[test]
    fn a_restart_alone_runs_exactly_the_last_assignment(
        replicas in 1u32..8,
        last in proptest::collection::btree_set(0u32..10, 0..10),
        now in secs(10),
        sees_peer in any::<bool>(),
    ) {
        let objects = stored(&deployment("web", replicas, "web:1"), 1);
        let owner = ObjectKey::new(Kind::Deployment, "default", "web");
        let mut w = World::new(&objects, &HashMap::new(), &[ME, "n2"]);
        let set = w.set(&owner);
        w.boot.last_assigned = Some(last.iter().map(|i| format!("{owner}@{set}#{i}")).collect());
        if sees_peer {
            w.peers = vec![peer("n2", vec![])];
        }
        let plan = w.plan(now);
        let running: BTreeSet<u32> = plan.desired.keys().map(|k| k.index).collect();
        if !sees_peer && now < BOOT_GRACE {
            let expected: BTreeSet<u32> = last.iter().copied().filter(|i| *i < replicas).collect();
            prop_assert_eq!(running, expected);
            prop_assert!(plan.assignment.is_none());
        } else {
            let placed: BTreeSet<u32> = w.placement.slots_on(ME).map(|s| s.index).collect();
            prop_assert_eq!(running, placed);
        }
    }

    /// The step is a function: the same inputs give the same plan.
    #[test]
    fn the_same_inputs_give_the_same_plan(replicas in 0u32..8, now in secs(40)) {
        let objects = stored(&format!("{}---\n{}", deployment("web", replicas, "web:1"), job("j", 2, 2)), 1);
        let w = World::new(&objects, &HashMap::new(), &[ME, "n2", "n3"]);
        prop_assert_eq!(w.plan(now), w.plan(now));
    }
}

/// An autoscaler of `kind/web` between 1 and 10.
fn hpa_of(kind: &str) -> String {
    let api = if kind == "Deployment" { "apps/v1" } else { "argoproj.io/v1alpha1" };
    format!(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: web}}\nspec:\n  \
         scaleTargetRef: {{apiVersion: {api}, kind: {kind}, name: web}}\n  minReplicas: 1\n  maxReplicas: 10\n"
    )
}

fn autoscaled(replicas: u32, spec_replicas: u32) -> crate::state::RolloutRecord {
    crate::state::RolloutRecord {
        seq: 1,
        epoch: 1,
        coordinator: ME.into(),
        generation: 1,
        state: Default::default(),
        templates: Default::default(),
        progress: None,
        autoscale: Some(Box::new(crate::state::AutoscaleState {
            hpa: "HorizontalPodAutoscaler/default/web".into(),
            replicas,
            spec_replicas,
            ..Default::default()
        })),
    }
}

#[test]
fn an_autoscaled_deployment_or_rollout_runs_its_autoscalers_size() {
    let rollout = "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  replicas: 2\n  \
                   selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      \
                   containers: [{name: c, image: \"web:1\"}]\n  strategy:\n    canary:\n      steps: [{setWeight: 20}]\n";
    for (kind, yaml) in [("Deployment", deployment("web", 2, "web:1")), ("Rollout", rollout.to_string())] {
        let objects = stored(&format!("{yaml}---\n{}", hpa_of(kind)), 1);
        let key = ObjectKey::new(Kind::parse(kind).unwrap(), "default", "web");
        // The autoscaler set 7 when the object said 2: 7 run.
        let w =
            workloads(&objects, &HashMap::new(), BTreeMap::from([(key.clone(), autoscaled(7, 2))]), Claims::default());
        let info = &w.deployments[&key];
        assert_eq!((info.spec.replicas, info.spec_replicas), (7, 2), "{kind}");
        assert!(info.autoscaler.as_ref().is_some_and(|a| a.spec.max == 10), "{kind}");
        assert_eq!(w.status[&key].desired, 7, "{kind}");
        // Scaled by hand since (the object says 2, the autoscaler saw 3): the object's size.
        let w =
            workloads(&objects, &HashMap::new(), BTreeMap::from([(key.clone(), autoscaled(7, 3))]), Claims::default());
        assert_eq!(w.deployments[&key].spec.replicas, 2, "{kind}");
    }
    // An autoscaler without its target says so.
    let objects = stored(&hpa_of("Deployment"), 1);
    let w = workloads(&objects, &HashMap::new(), BTreeMap::new(), Claims::default());
    let hpa = ObjectKey::new(Kind::HorizontalPodAutoscaler, "default", "web");
    assert!(w.status[&hpa].messages.iter().any(|m| m.contains("does not exist")), "{:?}", w.status[&hpa]);
}

/// A Deployment of `replicas` writing claim `data` (class `class`), with the claim.
fn writer_of_claim(replicas: u32, class: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data}}\nspec:\n  accessModes: [ReadWriteOnce]\n  \
         storageClassName: {class}\n  resources: {{requests: {{storage: 1Mi}}}}\n---\n{}      volumes: [{{name: d, \
         persistentVolumeClaim: {{claimName: data}}}}]\n",
        deployment("db", replicas, "db:1").replace(
            "containers: [{name: c, image: \"db:1\"}]\n",
            "containers: [{name: c, image: \"db:1\", volumeMounts: [{name: d, mountPath: /data}]}]\n"
        )
    )
}

/// The world of `objects` with `claims` (records and copies) over `nodes`, all live.
fn with_claims(objects: &[(StoredObject, Object)], nodes: &[&str], records: Vec<crate::state::VolumeRecord>) -> World {
    let live = nodes.iter().map(|n| n.to_string()).collect();
    let records = records.into_iter().map(|r| (r.name.clone(), r)).collect();
    let claims = Claims::new(objects, records, BTreeMap::new(), live);
    let workloads = workloads(objects, &HashMap::new(), BTreeMap::new(), claims);
    let infos: Vec<NodeInfo> = nodes.iter().map(|n| node(n)).collect();
    let placement = place(&workloads.requests, &infos);
    World { workloads, placement, ..World::new(&[], &HashMap::new(), &[]) }
}

#[test]
fn a_claim_is_bound_by_its_first_slots_node_before_the_slot_starts() {
    let objects = stored(&writer_of_claim(1, "local"), 1);
    let w = with_claims(&objects, &[ME], vec![]);
    let plan = w.plan(SETTLED);
    assert!(plan.desired.is_empty(), "nothing starts before the claim is bound");
    assert_eq!(plan.volumes, [VolumeIntent { namespace: "default".into(), claim: "data".into(), takeover: false }]);
    // Once the record says this node, the slot starts; on another node it would wait.
    let info = w.workloads.claims.get("default", "data").unwrap().clone();
    let bound = with_claims(&objects, &[ME, "n2"], vec![info.bind_record(ME, 1).unwrap()]);
    let plan = bound.plan(SETTLED);
    assert_eq!(plan.desired.len(), 1);
    assert!(plan.volumes.is_empty());
    assert!(bound.placement.assignments.values().all(|n| n == ME), "held to the volume's node");
}

#[test]
fn a_read_write_once_claim_runs_one_replica_and_replaces_it_break_before_make() {
    let objects = stored(&writer_of_claim(3, "local"), 1);
    let info = with_claims(&objects, &[ME], vec![]).workloads.claims.get("default", "data").unwrap().clone();
    let mut w = with_claims(&objects, &[ME], vec![info.bind_record(ME, 1).unwrap()]);
    let owner = ObjectKey::new(Kind::Deployment, "default", "db");
    assert_eq!(w.workloads.slots.len(), 1, "one replica of three runs");
    assert!(w.workloads.status[&owner].messages.iter().any(|m| m.contains("2 of 3 replicas wait")));
    assert_eq!(w.workloads.deployments[&owner].spec.strategy, rollout::Strategy::Recreate);
    // A slot whose replica runs an older revision is replaced, not run beside it.
    let key = w.slot(&owner, 0);
    w.local.insert(key.clone(), Local { revision: "old".into(), ready: true, running: true });
    assert_eq!(w.plan(SETTLED).actions, vec![Action::Replace(key)]);
}

#[test]
fn a_replicated_claim_is_taken_over_by_a_live_holder_when_its_writer_is_gone() {
    let objects = stored(&writer_of_claim(1, "replicated"), 1);
    let info = with_claims(&objects, &[ME], vec![]).workloads.claims.get("default", "data").unwrap().clone();
    let record = info.bind_record("gone", 1).unwrap();
    let live: BTreeSet<String> = [ME.to_string(), "n2".to_string()].into();
    let copy = |seq| crate::peering::VolumeCopy {
        volume: info.volume.clone(),
        epoch: 1,
        seq,
        complete: true,
        bytes: 1,
        taken_ms: 0,
    };
    let copies = BTreeMap::from([(info.volume.clone(), vec![(ME.to_string(), copy(9)), ("n2".to_string(), copy(8))])]);
    let claims = Claims::new(&objects, BTreeMap::from([(record.name.clone(), record)]), copies, live);
    let workloads = workloads(&objects, &HashMap::new(), BTreeMap::new(), claims);
    let placement = place(&workloads.requests, &[node(ME), node("n2")]);
    assert!(placement.assignments.values().all(|n| n == ME), "the newest copy is here");
    let w = World { workloads, placement, ..World::new(&[], &HashMap::new(), &[]) };
    let plan = w.plan(SETTLED);
    assert!(plan.desired.is_empty(), "it starts once the takeover is recorded");
    assert_eq!(plan.volumes, [VolumeIntent { namespace: "default".into(), claim: "data".into(), takeover: true }]);
}
