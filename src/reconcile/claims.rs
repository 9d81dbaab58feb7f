//! PersistentVolumeClaims as the desired step needs them, as pure functions of values: each
//! claim's volume, class and record; the copies of each volume the nodes report; which nodes
//! may run a replica that mounts a claim; and whether a claim is usable on this node.
//!
//! The rules (see `docs/architecture.md`, *Persistent volumes*):
//! - an unbound claim lets its first user run anywhere; the node of that user's first slot
//!   (lowest workload key, then index, in the placement every node computes) binds it to
//!   itself, writing the volume record, and starts the replica once the record is stored;
//! - a `local` volume's replicas run on its node only, and wait while that node is down;
//! - a `replicated` volume's replicas run on its writer while the writer is alive; when it is
//!   not, on a live node holding the newest complete copy (highest epoch, then sequence),
//!   which takes the volume over by writing the record with the next epoch before it starts;
//! - a ReadWriteOnce claim has one replica at a time; a ReadOnlyMany claim's replicas run on
//!   any node holding a complete copy, read-only.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use wasmfleet_scheduler::hash::rendezvous_weight;

use crate::manifest::storage::{AccessMode, ClassSettings, Provisioner, Reclaim};
use crate::manifest::{Object, ObjectKey, VolumeGrant};
use crate::peering::VolumeCopy;
use crate::state::{StoredObject, VolumePhase, VolumeRecord, volume_name};

/// One claim, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimInfo {
    pub key: ObjectKey,
    pub volume: String,
    /// Its class, or why it has none.
    pub class: Result<ClassSettings, String>,
    pub access: AccessMode,
    pub capacity_bytes: u64,
    /// `resources.requests.storage` as written.
    pub capacity: String,
    /// The record of its volume, once bound.
    pub record: Option<VolumeRecord>,
}

impl ClaimInfo {
    /// The record a node writes to bind the claim to itself.
    pub fn bind_record(&self, node: &str, now_ms: u64) -> Option<VolumeRecord> {
        let class = self.class.clone().ok()?;
        Some(VolumeRecord {
            name: self.volume.clone(),
            claim: self.key.clone(),
            class,
            access: self.access,
            capacity_bytes: self.capacity_bytes,
            node: node.to_string(),
            epoch: 1,
            seq: 1,
            phase: VolumePhase::Bound,
            bound_ms: now_ms,
            changed_ms: now_ms,
        })
    }
}

/// How a slot mounts a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimUse {
    pub claim: String,
    pub volume: String,
    /// It writes the volume, and is its only replica (ReadWriteOnce, mounted read-write).
    pub exclusive: bool,
}

/// What a slot's claims need before it can start here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// This node binds the claim to itself (its record is written first).
    Bind(String),
    /// This node takes the replicated volume over from its dead writer.
    TakeOver(String),
    /// Nothing to do here yet.
    Wait,
}

/// Every claim of the cluster, the volume records and the copies nodes report.
#[derive(Clone, Debug, Default)]
pub struct Claims {
    /// By (namespace, name).
    pub claims: BTreeMap<(String, String), ClaimInfo>,
    /// Every volume record, by volume name (released ones included).
    pub records: BTreeMap<String, VolumeRecord>,
    /// Copies by volume: (node, copy), live nodes only (this one included).
    pub copies: BTreeMap<String, Vec<(String, VolumeCopy)>>,
    /// Live nodes, this one included.
    pub live: BTreeSet<String>,
}

impl Claims {
    /// Resolves every claim against the classes (built in and stored) and the records.
    pub fn new(
        objects: &[(StoredObject, Object)],
        records: BTreeMap<String, VolumeRecord>,
        copies: BTreeMap<String, Vec<(String, VolumeCopy)>>,
        live: BTreeSet<String>,
    ) -> Claims {
        let classes: BTreeMap<&str, ClassSettings> = objects
            .iter()
            .filter_map(|(_, o)| match o {
                Object::StorageClass(c) => Some((c.metadata.name.as_deref()?, c.settings())),
                _ => None,
            })
            .collect();
        let mut claims = BTreeMap::new();
        for (rec, obj) in objects {
            let Object::PersistentVolumeClaim(c) = obj else { continue };
            let key = obj.key();
            let volume = volume_name(&key, rec.created_ms);
            let class_name = c.class_name();
            let class = classes
                .get(class_name)
                .cloned()
                .or_else(|| ClassSettings::builtin(class_name))
                .ok_or_else(|| format!("storageclass {class_name:?} not found"));
            let info = ClaimInfo {
                key: key.clone(),
                record: records.get(&volume).cloned(),
                volume,
                class,
                access: c.access(),
                capacity_bytes: c.capacity_bytes(),
                capacity: c.capacity_text(),
            };
            claims.insert((key.namespace.clone(), key.name.clone()), info);
        }
        Claims { claims, records, copies, live }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&ClaimInfo> {
        self.claims.get(&(namespace.to_string(), name.to_string()))
    }

    /// The nodes that may run a replica mounting `info` (None: any), or why none may.
    pub fn allowed(&self, info: &ClaimInfo) -> Result<Option<BTreeSet<String>>, String> {
        let class = info.class.as_ref().map_err(Clone::clone)?;
        let Some(record) = &info.record else { return Ok(None) };
        if record.phase != VolumePhase::Bound {
            return Err(format!("volume {} is {}", record.name, record.phase.as_str()));
        }
        let writer_alive = self.live.contains(&record.node);
        let holders = self.complete_copies(&record.name);
        match (class.provisioner, info.access) {
            (Provisioner::Local, _) if writer_alive => Ok(Some([record.node.clone()].into())),
            (Provisioner::Local, _) => Err(format!(
                "volume {} is on node {}, which is down: a local volume does not move; its replicas wait for the \
                 node (use storageClassName: replicated for data that survives its node)",
                record.name, record.node
            )),
            (Provisioner::Replicated, AccessMode::ReadOnlyMany) => {
                let mut nodes: BTreeSet<String> = holders.into_iter().collect();
                if writer_alive {
                    nodes.insert(record.node.clone());
                }
                Ok(Some(nodes))
            }
            (Provisioner::Replicated, AccessMode::ReadWriteOnce) if writer_alive => {
                Ok(Some([record.node.clone()].into()))
            }
            (Provisioner::Replicated, AccessMode::ReadWriteOnce) if holders.is_empty() => Err(format!(
                "volume {}'s writer {} is down and no live node holds a complete copy of it: its replica waits",
                record.name, record.node
            )),
            (Provisioner::Replicated, AccessMode::ReadWriteOnce) => Ok(Some(holders.into_iter().collect())),
        }
    }

    /// Live nodes (the writer excluded) holding a complete copy of `volume` at the newest
    /// freshness any of them holds.
    pub fn complete_copies(&self, volume: &str) -> Vec<String> {
        let writer = self.records.get(volume).map(|r| r.node.as_str());
        let copies: Vec<&(String, VolumeCopy)> = self
            .copies
            .get(volume)
            .into_iter()
            .flatten()
            .filter(|(node, c)| c.complete && Some(node.as_str()) != writer && self.live.contains(node))
            .collect();
        let Some(newest) = copies.iter().map(|(_, c)| c.freshness()).max() else { return Vec::new() };
        copies.into_iter().filter(|(_, c)| c.freshness() == newest).map(|(n, _)| n.clone()).collect()
    }

    /// Whether `use_` lets a slot start on `node` now; `binder` says whether this node binds
    /// the claim if it is not bound yet.
    pub fn readiness(&self, namespace: &str, use_: &ClaimUse, node: &str, binder: bool) -> Readiness {
        let Some(info) = self.get(namespace, &use_.claim) else { return Readiness::Wait };
        let Ok(class) = &info.class else { return Readiness::Wait };
        let Some(record) = &info.record else {
            return if binder { Readiness::Bind(use_.claim.clone()) } else { Readiness::Wait };
        };
        if record.phase != VolumePhase::Bound {
            return Readiness::Wait;
        }
        if record.node == node {
            return Readiness::Ready;
        }
        let holds_copy = self.complete_copies(&record.name).iter().any(|n| n == node);
        match (class.provisioner, info.access) {
            (Provisioner::Replicated, AccessMode::ReadOnlyMany) if holds_copy => Readiness::Ready,
            (Provisioner::Replicated, AccessMode::ReadWriteOnce) if holds_copy && !self.live.contains(&record.node) => {
                Readiness::TakeOver(use_.claim.clone())
            }
            _ => Readiness::Wait,
        }
    }

    /// The record a node writes to take `claim`'s volume over (the next epoch, itself as
    /// writer).
    pub fn takeover_record(&self, namespace: &str, claim: &str, node: &str, now_ms: u64) -> Option<VolumeRecord> {
        let record = self.get(namespace, claim)?.record.as_ref()?;
        Some(VolumeRecord {
            node: node.to_string(),
            epoch: record.epoch + 1,
            seq: record.seq + 1,
            changed_ms: now_ms,
            ..record.clone()
        })
    }
}

/// A pod template's claims, resolved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TemplateClaims {
    pub uses: Vec<ClaimUse>,
    /// The nodes its replicas may run on (None: any).
    pub nodes: Option<BTreeSet<String>>,
    /// Why its replicas wait (a claim missing, a volume's node down, ...).
    pub problems: Vec<String>,
}

impl TemplateClaims {
    /// Whether one of its claims admits a single replica.
    pub fn exclusive(&self) -> bool {
        self.uses.iter().any(|u| u.exclusive)
    }
}

impl Claims {
    /// The claims a template mounts, and where its replicas may run.
    pub fn of_template(&self, namespace: &str, volumes: &[VolumeGrant]) -> TemplateClaims {
        let mut out = TemplateClaims::default();
        for v in volumes {
            let Some(claim) = &v.claim else { continue };
            let Some(info) = self.get(namespace, claim) else {
                out.problems.push(format!("persistentvolumeclaim {claim:?} not found"));
                out.nodes = Some(BTreeSet::new());
                continue;
            };
            out.uses.push(ClaimUse {
                claim: claim.clone(),
                volume: info.volume.clone(),
                exclusive: info.access == AccessMode::ReadWriteOnce && !v.read_only,
            });
            match self.allowed(info) {
                Ok(None) => {}
                Ok(Some(nodes)) => {
                    out.nodes = Some(match out.nodes.take() {
                        None => nodes,
                        Some(before) => before.intersection(&nodes).cloned().collect(),
                    })
                }
                Err(why) => {
                    out.problems.push(why);
                    out.nodes = Some(BTreeSet::new());
                }
            }
        }
        out
    }
}

/// The nodes a replicated volume's writer ships to: the first `copies` live nodes (the
/// writer excluded) in rendezvous order for the volume, so every node agrees and a node's
/// death moves only its own share.
pub fn holders<'a>(volume: &str, writer: &str, live: impl IntoIterator<Item = &'a String>, copies: u32) -> Vec<String> {
    let mut ranked: Vec<(u64, &String)> =
        live.into_iter().filter(|n| *n != writer).map(|n| (rendezvous_weight(volume, 0, n), n)).collect();
    ranked.sort_by(|a, b| b.cmp(a));
    ranked.into_iter().take(copies as usize).map(|(_, n)| n.clone()).collect()
}

/// The node that writes a volume's record changes (released, deleted): its writer while it
/// lives, else the first live node in rendezvous order for the volume.
pub fn keeper<'a>(record: &'a VolumeRecord, live: &'a BTreeSet<String>) -> Option<&'a str> {
    if live.contains(&record.node) {
        return Some(&record.node);
    }
    live.iter().max_by_key(|n| (rendezvous_weight(&record.name, 0, n), *n)).map(String::as_str)
}

impl Claims {
    /// Records whose claim is gone (deleted, or deleted and created again: a new volume):
    /// each with the phase its class's reclaim policy gives it.
    pub fn orphans(&self) -> Vec<(&VolumeRecord, VolumePhase)> {
        self.records
            .values()
            .filter(|r| r.phase == VolumePhase::Bound)
            .filter(|r| self.get(&r.claim.namespace, &r.claim.name).is_none_or(|c| c.volume != r.name))
            .map(|r| {
                let phase = match r.class.reclaim {
                    Reclaim::Retain => VolumePhase::Released,
                    Reclaim::Delete => VolumePhase::Deleted,
                };
                (r, phase)
            })
            .collect()
    }

    /// Whether this node's copy of `volume` (of `copy_epoch`) is no longer needed: the volume
    /// is deleted; or the node neither writes it nor is one of its holders, and the writer is
    /// alive with at least as many complete copies of the current epoch elsewhere as its
    /// class keeps (a stale copy is the last resort until then).
    pub fn copy_is_stale(&self, volume: &str, node: &str, copy_epoch: u64) -> bool {
        let Some(r) = self.records.get(volume) else { return false };
        match r.phase {
            VolumePhase::Deleted => return true,
            VolumePhase::Released => return false,
            VolumePhase::Bound => {}
        }
        if r.node == node {
            return false;
        }
        if r.class.provisioner == Provisioner::Local {
            // A local volume never moves: a copy elsewhere lost a race to bind it.
            return copy_epoch <= r.epoch && self.live.contains(&r.node);
        }
        if holders(volume, &r.node, &self.live, r.class.copies).iter().any(|h| h == node) {
            return false;
        }
        let current = self
            .copies
            .get(volume)
            .into_iter()
            .flatten()
            .filter(|(n, c)| n != node && n != &r.node && c.complete && c.epoch >= r.epoch)
            .count();
        self.live.contains(&r.node) && current >= r.class.copies as usize
    }
}

/// A copy of a volume, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CopyView {
    pub node: String,
    pub epoch: u64,
    pub seq: u64,
    pub complete: bool,
    pub bytes: u64,
    /// When the snapshot it holds was read (wall ms).
    pub taken_ms: u64,
    pub writer: bool,
}

/// A claim and its volume (or a volume whose claim is gone), as the API shows them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VolumeView {
    /// The volume (`pvc-…`); empty while the claim is pending.
    pub volume: String,
    pub namespace: String,
    pub claim: String,
    /// The claim exists.
    pub claimed: bool,
    /// `Pending` or `Bound` (a claim); `Released` or `Deleted` (a volume whose claim is gone).
    pub status: String,
    pub class: String,
    pub provisioner: String,
    pub access: String,
    pub capacity: String,
    pub capacity_bytes: u64,
    pub reclaim: String,
    /// The node it is bound to (local) or that writes it (replicated).
    pub node: String,
    pub epoch: u64,
    pub copies: Vec<CopyView>,
    /// Bytes in the writer's copy at its last scan.
    pub used_bytes: u64,
    pub bound_ms: u64,
    /// Workloads that mount the claim.
    pub users: Vec<String>,
    pub messages: Vec<String>,
}

impl Claims {
    /// Every claim and every volume record, as the API shows them.
    pub fn views(&self, users: &BTreeMap<String, BTreeSet<String>>) -> Vec<VolumeView> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for ((ns, name), info) in &self.claims {
            let users: Vec<String> = users.get(&format!("{ns}/{name}")).into_iter().flatten().cloned().collect();
            let mut v = match &info.record {
                Some(r) => self.record_view(r),
                None => VolumeView {
                    volume: String::new(),
                    namespace: ns.clone(),
                    claim: name.clone(),
                    claimed: true,
                    status: "Pending".into(),
                    class: info.class.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
                    provisioner: info.class.as_ref().map(|c| c.provisioner.as_str().to_string()).unwrap_or_default(),
                    access: info.access.short().into(),
                    capacity: String::new(),
                    capacity_bytes: info.capacity_bytes,
                    reclaim: info.class.as_ref().map(|c| c.reclaim.as_str().to_string()).unwrap_or_default(),
                    node: String::new(),
                    epoch: 0,
                    copies: Vec::new(),
                    used_bytes: 0,
                    bound_ms: 0,
                    users: Vec::new(),
                    messages: Vec::new(),
                },
            };
            v.capacity = info.capacity.clone();
            v.claimed = true;
            match (&info.class, &info.record) {
                (Err(e), _) => v.messages.push(e.clone()),
                (Ok(_), None) if users.is_empty() => {
                    v.messages.push("waiting for first consumer to be created before binding".into())
                }
                (Ok(_), None) => v.messages.push("waiting for its first replica's node to bind it".into()),
                (Ok(_), Some(_)) => {
                    if let Err(why) = self.allowed(info) {
                        v.messages.push(why);
                    }
                }
            }
            if v.capacity_bytes > 0 && v.used_bytes > v.capacity_bytes {
                v.messages.push(format!(
                    "uses {} bytes, over its requested storage of {} ({} bytes): writes are not refused; grow the claim or free space",
                    v.used_bytes, v.capacity, v.capacity_bytes
                ));
            }
            v.users = users;
            seen.insert(info.volume.clone());
            out.push(v);
        }
        // Volumes whose claim is gone: released (their data kept), until deleted.
        for r in self.records.values().filter(|r| !seen.contains(&r.name) && r.phase != VolumePhase::Deleted) {
            let mut v = self.record_view(r);
            v.claimed = false;
            out.push(v);
        }
        out
    }

    fn record_view(&self, r: &VolumeRecord) -> VolumeView {
        let copies: Vec<CopyView> = self
            .copies
            .get(&r.name)
            .into_iter()
            .flatten()
            .map(|(node, c)| CopyView {
                node: node.clone(),
                epoch: c.epoch,
                seq: c.seq,
                complete: c.complete,
                bytes: c.bytes,
                taken_ms: c.taken_ms,
                writer: *node == r.node,
            })
            .collect();
        let used_bytes = copies.iter().find(|c| c.writer).map(|c| c.bytes).unwrap_or(0);
        VolumeView {
            volume: r.name.clone(),
            namespace: r.claim.namespace.clone(),
            claim: r.claim.name.clone(),
            claimed: true,
            status: r.phase.as_str().into(),
            class: r.class.name.clone(),
            provisioner: r.class.provisioner.as_str().into(),
            access: r.access.short().into(),
            capacity: String::new(),
            capacity_bytes: r.capacity_bytes,
            reclaim: r.class.reclaim.as_str().into(),
            node: r.node.clone(),
            epoch: r.epoch,
            copies,
            used_bytes,
            bound_ms: r.bound_ms,
            users: Vec::new(),
            messages: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;

    fn claims(class: &str, access: AccessMode, record: Option<(&str, u64)>) -> Claims {
        let key = ObjectKey::new(Kind::PersistentVolumeClaim, "default", "data");
        let info = ClaimInfo {
            key: key.clone(),
            volume: "pvc-1".into(),
            class: Ok(ClassSettings::builtin(class).unwrap()),
            access,
            capacity_bytes: 1 << 20,
            capacity: "1Mi".into(),
            record: None,
        };
        let mut c = Claims { live: ["a", "b", "c"].map(String::from).into(), ..Claims::default() };
        if let Some((node, epoch)) = record {
            let mut r = info.bind_record(node, 5).unwrap();
            r.epoch = epoch;
            c.records.insert("pvc-1".into(), r);
        }
        let info = ClaimInfo { record: c.records.get("pvc-1").cloned(), ..info };
        c.claims.insert(("default".into(), "data".into()), info);
        c
    }

    fn copy(epoch: u64, seq: u64, complete: bool) -> VolumeCopy {
        VolumeCopy { volume: "pvc-1".into(), epoch, seq, complete, bytes: 10, taken_ms: 0 }
    }

    fn use_() -> ClaimUse {
        ClaimUse { claim: "data".into(), volume: "pvc-1".into(), exclusive: true }
    }

    fn info(c: &Claims) -> &ClaimInfo {
        c.get("default", "data").unwrap()
    }

    #[test]
    fn an_unbound_claim_runs_anywhere_and_its_binder_binds_it() {
        let c = claims("local", AccessMode::ReadWriteOnce, None);
        assert_eq!(c.allowed(info(&c)), Ok(None));
        assert_eq!(c.readiness("default", &use_(), "a", true), Readiness::Bind("data".into()));
        assert_eq!(c.readiness("default", &use_(), "b", false), Readiness::Wait);
    }

    #[test]
    fn a_local_volume_keeps_its_replicas_on_its_node_and_waits_for_it() {
        let mut c = claims("local", AccessMode::ReadWriteOnce, Some(("b", 1)));
        assert_eq!(c.allowed(info(&c)), Ok(Some(["b".to_string()].into())));
        assert_eq!(c.readiness("default", &use_(), "b", false), Readiness::Ready);
        assert_eq!(c.readiness("default", &use_(), "a", true), Readiness::Wait);
        c.live.remove("b");
        let why = c.allowed(info(&c)).unwrap_err();
        assert!(why.contains("is on node b, which is down"), "{why}");
    }

    #[test]
    fn a_replicated_volume_moves_to_the_newest_complete_copy_when_its_writer_dies() {
        let mut c = claims("replicated", AccessMode::ReadWriteOnce, Some(("a", 2)));
        c.copies.insert(
            "pvc-1".into(),
            vec![
                ("a".into(), copy(2, 9, true)),
                ("b".into(), copy(2, 8, true)),
                ("c".into(), copy(2, 7, true)),
                ("d".into(), copy(2, 9, true)),
            ],
        );
        assert_eq!(c.allowed(info(&c)), Ok(Some(["a".to_string()].into())), "the writer while it lives");
        c.live.remove("a");
        assert_eq!(c.allowed(info(&c)), Ok(Some(["b".to_string()].into())), "newest live copy (d is not live)");
        assert_eq!(c.readiness("default", &use_(), "b", false), Readiness::TakeOver("data".into()));
        assert_eq!(c.readiness("default", &use_(), "c", false), Readiness::Wait, "an older copy never takes over");
        let next = c.takeover_record("default", "data", "b", 9).unwrap();
        assert_eq!((next.node.as_str(), next.epoch), ("b", 3));
        assert!(next.version() > c.records["pvc-1"].version());
        // An incomplete copy does not count; a copy of an older epoch loses to a newer one.
        c.copies.insert("pvc-1".into(), vec![("b".into(), copy(2, 9, false)), ("c".into(), copy(1, 50, true))]);
        assert_eq!(c.allowed(info(&c)), Ok(Some(["c".to_string()].into())));
        c.copies.insert("pvc-1".into(), vec![("b".into(), copy(3, 1, true)), ("c".into(), copy(2, 50, true))]);
        assert_eq!(c.allowed(info(&c)), Ok(Some(["b".to_string()].into())));
        c.copies.clear();
        assert!(c.allowed(info(&c)).unwrap_err().contains("no live node holds a complete copy"));
    }

    #[test]
    fn read_only_many_runs_wherever_a_complete_copy_is() {
        let mut c = claims("replicated", AccessMode::ReadOnlyMany, Some(("a", 1)));
        c.copies.insert("pvc-1".into(), vec![("b".into(), copy(1, 3, true)), ("c".into(), copy(1, 2, true))]);
        assert_eq!(c.allowed(info(&c)), Ok(Some(["a".to_string(), "b".to_string()].into())));
        let ro = ClaimUse { exclusive: false, ..use_() };
        assert_eq!(c.readiness("default", &ro, "b", false), Readiness::Ready);
        assert_eq!(c.readiness("default", &ro, "c", false), Readiness::Wait);
    }

    #[test]
    fn an_unknown_class_says_so() {
        let mut c = claims("local", AccessMode::ReadWriteOnce, None);
        c.claims.get_mut(&("default".into(), "data".into())).unwrap().class =
            Err("storageclass \"x\" not found".into());
        assert_eq!(c.allowed(info(&c)), Err("storageclass \"x\" not found".into()));
    }
}
