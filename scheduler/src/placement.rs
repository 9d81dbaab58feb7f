//! The placement function and its result.

use std::collections::BTreeMap;

use crate::fleet::{Outcome, UNPLACED};
use crate::index::canonical;
use crate::scheduler::place_all;
use crate::{NodeInfo, Rule, Slot, WorkloadReq};

/// Where every slot goes, and why the others go nowhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Slot to node id, for every slot that found a node.
    pub assignments: BTreeMap<Slot, String>,
    /// Slots no node can take, in canonical order (workload key, then index).
    pub unschedulable: Vec<Unschedulable>,
}

/// A slot that no node can take, with a summary such as
/// `0/5 nodes: 3 lack memory, 2 fail selector zone=north`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    pub slot: Slot,
    pub reason: String,
}

impl Placement {
    /// The slots assigned to `node`, in slot order.
    pub fn slots_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Slot> {
        self.assignments.iter().filter(move |(_, n)| n.as_str() == node).map(|(slot, _)| slot)
    }

    /// The node `slot` is assigned to, if any.
    pub fn node_of(&self, slot: &Slot) -> Option<&str> {
        self.assignments.get(slot).map(String::as_str)
    }
}

/// Assigns every replica slot of `workloads` to one of `nodes`.
///
/// Deterministic and independent of the order of both slices. Nodes with the same id and
/// workloads with the same key are collapsed to the smallest one in their derived order
/// (callers should not send duplicates).
///
/// A deployment or job is placed as a set ([`Rule::Striped`]): its slots are shared among the
/// zones with eligible nodes by quotas that depend only on how many eligible nodes each zone
/// has, and slot `i` of a zone takes the best feasible node of the zone's stripe `i`, a part
/// of the zone's nodes that no other slot uses (rendezvous hashing over the 64 fixed groups,
/// then the nodes of a group). So losing a node moves exactly the slots on it, each within its
/// stripe, unless a stripe is left without a node, a zone's quota changes or capacity binds;
/// a joining node takes at most one slot of a workload and nothing else moves. Slots whose
/// stripe has no feasible node go to the spread scan of earlier releases (fewest replicas on
/// the node, then in its zone). See `docs/architecture.md` for the argument and its limits.
///
/// [`Scheduler`](crate::Scheduler) gives the same result and recomputes only what changed
/// since its last call.
pub fn place(workloads: &[WorkloadReq], nodes: &[NodeInfo]) -> Placement {
    place_with(Rule::Striped, workloads, nodes)
}

/// [`place`] by the given rule: [`Rule::SlotOrder`] gives exactly the placement of releases
/// before the stripes, for a fleet whose nodes are not all upgraded yet.
pub fn place_with(rule: Rule, workloads: &[WorkloadReq], nodes: &[NodeInfo]) -> Placement {
    let nodes = canonical(nodes, |n| &n.id);
    let workloads = canonical(workloads, |w| &w.key);
    place_all(rule, &workloads, &nodes).1
}

/// Appends the slots of `outcome` (of `workload`, on canonical `nodes`) in slot order.
pub(crate) fn emit(
    workload: &WorkloadReq,
    outcome: &Outcome,
    nodes: &[&NodeInfo],
    assigned: &mut Vec<(Slot, String)>,
    unschedulable: &mut Vec<Unschedulable>,
) {
    for (slot_index, &node) in (0u32..).zip(&outcome.nodes) {
        if node != UNPLACED {
            assigned.push((Slot::new(workload.key.clone(), slot_index), nodes[node as usize].id.clone()));
        }
    }
    emit_failures(workload, outcome, unschedulable);
}

/// Appends the unschedulable slots of `outcome` in slot order.
pub(crate) fn emit_failures(workload: &WorkloadReq, outcome: &Outcome, unschedulable: &mut Vec<Unschedulable>) {
    unschedulable.extend(outcome.failures.iter().map(|(slot_index, reason)| Unschedulable {
        slot: Slot::new(workload.key.clone(), *slot_index),
        reason: reason.clone(),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WorkloadKind;

    fn node(id: &str, zone: Option<&str>, memory_mib: u64) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            labels: BTreeMap::new(),
            zone: zone.map(Into::into),
            arch: "x86_64".into(),
            memory_mib,
            cpu_millis: 4000,
            max_instances: 100,
        }
    }

    fn deployment(key: &str, replicas: u32, memory_mib: u64) -> WorkloadReq {
        WorkloadReq {
            key: key.into(),
            kind: WorkloadKind::Deployment,
            replicas,
            memory_mib,
            cpu_millis: 0,
            node_selector: BTreeMap::new(),
            arch: None,
            nodes: None,
            planned: 0,
        }
    }

    fn nodes_of(p: &Placement, key: &str) -> Vec<String> {
        p.assignments.iter().filter(|(s, _)| s.key == key).map(|(_, n)| n.clone()).collect()
    }

    #[test]
    fn golden_spread_over_zones_then_nodes() {
        let nodes = [
            node("north-1", Some("north"), 1024),
            node("north-2", Some("north"), 1024),
            node("south-1", Some("south"), 1024),
            node("west-1", Some("west"), 1024),
        ];
        let p = place(&[deployment("Deployment/default/hello", 3, 64)], &nodes);
        assert!(p.unschedulable.is_empty());
        let mut zones: Vec<String> = nodes_of(&p, "Deployment/default/hello")
            .iter()
            .map(|id| id.split('-').next().unwrap().to_string())
            .collect();
        zones.sort();
        assert_eq!(zones, ["north", "south", "west"], "one replica per zone");

        // Four replicas: every node gets one; five: one node gets two.
        let p = place(&[deployment("Deployment/default/hello", 5, 64)], &nodes);
        let mut per_node = BTreeMap::<String, u32>::new();
        for id in nodes_of(&p, "Deployment/default/hello") {
            *per_node.entry(id).or_default() += 1;
        }
        let mut counts: Vec<u32> = per_node.values().copied().collect();
        counts.sort();
        assert_eq!(counts, [1, 1, 1, 2]);
    }

    #[test]
    fn golden_exact_assignment_is_pinned() {
        // Pins the hash and tie-breaking together: a change here reshuffles real fleets.
        let nodes: Vec<NodeInfo> = (1..=5).map(|i| node(&format!("edge-{i}"), None, 1024)).collect();
        let p = place(&[deployment("Deployment/default/hello", 3, 64)], &nodes);
        let got: Vec<(u32, &str)> = p.assignments.iter().map(|(s, n)| (s.index, n.as_str())).collect();
        assert_eq!(got, PINNED);
    }

    // Cross-checked against an independent Python model of the rule (every slot here takes
    // the best node of its stripe of the pool of zoneless nodes).
    const PINNED: [(u32, &str); 3] = [(0, "edge-2"), (1, "edge-4"), (2, "edge-5")];

    #[test]
    fn golden_slot_order_is_the_previous_release() {
        // The assignment the previous release pinned (same hash, same tie-breaking).
        let nodes: Vec<NodeInfo> = (1..=5).map(|i| node(&format!("edge-{i}"), None, 1024)).collect();
        let p = place_with(Rule::SlotOrder, &[deployment("Deployment/default/hello", 3, 64)], &nodes);
        let got: Vec<(u32, &str)> = p.assignments.iter().map(|(s, n)| (s.index, n.as_str())).collect();
        assert_eq!(got, [(0, "edge-3"), (1, "edge-5"), (2, "edge-2")]);
    }

    #[test]
    fn golden_unschedulable_reason() {
        let mut nodes = vec![
            node("n1", Some("north"), 100),
            node("n2", Some("north"), 100),
            node("n3", Some("north"), 100),
            node("s1", Some("south"), 4096),
            node("s2", None, 4096),
        ];
        nodes[4].labels.insert("zone".into(), "south".into());
        let mut w = deployment("Deployment/default/big", 2, 512);
        w.node_selector.insert("zone".into(), "north".into());
        let p = place(&[w], &nodes);
        assert!(p.assignments.is_empty());
        let reasons: Vec<(u32, &str)> = p.unschedulable.iter().map(|u| (u.slot.index, u.reason.as_str())).collect();
        assert_eq!(
            reasons,
            [
                (0, "0/5 nodes: 3 lack memory, 2 fail selector zone=north"),
                (1, "0/5 nodes: 3 lack memory, 2 fail selector zone=north"),
            ]
        );
    }

    #[test]
    fn golden_daemon_set_filters_arch_and_reports_full_node() {
        let mut nodes = vec![node("edge-1", None, 1024), node("edge-2", None, 1024), node("edge-3", None, 1024)];
        nodes[1].arch = "aarch64".into();
        nodes[2].max_instances = 0;
        let ds = WorkloadReq {
            key: "DaemonSet/kube/agent".into(),
            kind: WorkloadKind::DaemonSet,
            replicas: 99,
            memory_mib: 0,
            cpu_millis: 0,
            node_selector: BTreeMap::new(),
            arch: Some("x86_64".into()),
            nodes: None,
            planned: 0,
        };
        let p = place(&[ds], &nodes);
        assert_eq!(p.assignments, BTreeMap::from([(Slot::new("DaemonSet/kube/agent", 0), "edge-1".into())]));
        assert_eq!(
            p.unschedulable,
            [Unschedulable {
                slot: Slot::new("DaemonSet/kube/agent", 1),
                reason: "node edge-3 is at max instances".into(),
            }]
        );
        assert_eq!(p.slots_on("edge-1").count(), 1);
        assert_eq!(p.slots_on("edge-2").count(), 0);
    }

    #[test]
    fn capacity_goes_to_workloads_in_key_order() {
        let nodes = [node("only", None, 100)];
        let a = deployment("a", 1, 60);
        let b = deployment("b", 1, 60);
        for workloads in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
            let p = place(&workloads, &nodes);
            assert_eq!(p.node_of(&Slot::new("a", 0)), Some("only"));
            assert_eq!(
                p.unschedulable,
                [Unschedulable { slot: Slot::new("b", 0), reason: "0/1 nodes: 1 lacks memory".into() }]
            );
        }
    }

    #[test]
    fn zero_sized_replicas_only_take_instances() {
        let mut n = node("tiny", None, 0);
        n.cpu_millis = 0;
        n.max_instances = 2;
        let p = place(&[deployment("w", 3, 0)], &[n]);
        assert_eq!(p.slots_on("tiny").count(), 2);
        assert_eq!(p.unschedulable.len(), 1);
        assert_eq!(p.unschedulable[0].reason, "0/1 nodes: 1 is at max instances");
    }

    #[test]
    fn zone_selector_matches_zone_field_or_label() {
        let mut labelled = node("labelled", None, 1024);
        labelled.labels.insert("zone".into(), "north".into());
        let nodes = [labelled, node("field", Some("north"), 1024), node("other", Some("south"), 1024)];
        let mut w = deployment("w", 2, 1);
        w.node_selector.insert("zone".into(), "north".into());
        let p = place(&[w], &nodes);
        let mut got = nodes_of(&p, "w");
        got.sort();
        assert_eq!(got, ["field", "labelled"]);
    }

    #[test]
    fn a_volume_holds_its_replicas_to_the_nodes_with_its_data() {
        let nodes = [node("a", None, 1024), node("b", None, 1024), node("c", None, 1024)];
        let mut w = deployment("w", 1, 1);
        w.nodes = Some(["c".to_string()].into());
        assert_eq!(nodes_of(&place(std::slice::from_ref(&w), &nodes), "w"), ["c"]);
        w.nodes = Some(["gone".to_string()].into());
        let p = place(&[w], &nodes);
        assert_eq!(p.unschedulable[0].reason, "0/3 nodes: 3 have volume node affinity conflict");
        let mut ds = deployment("DaemonSet/default/sensor", 0, 0);
        ds.kind = WorkloadKind::DaemonSet;
        ds.nodes = Some(["b".to_string()].into());
        let p = place(&[ds], &nodes);
        assert_eq!(p.assignments.values().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn no_nodes() {
        let p = place(&[deployment("w", 1, 1)], &[]);
        assert_eq!(p.unschedulable[0].reason, "0/0 nodes: no nodes known");
    }
}
