//! The placement function and its result.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::filter::{Free, Rejection, Summary, static_check};
use crate::hash::{Fnv1a, mix64};
use crate::{NodeInfo, Slot, WorkloadKind, WorkloadReq};

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
/// Rendezvous hashing is hierarchical ("skeleton" HRW): nodes fall into [`GROUPS`] fixed
/// groups of [`SUBGROUPS`] fixed subgroups by the hash of their id; a slot ranks the groups by
/// weight, then the subgroups of a group, then the nodes of a subgroup.
/// A slot's scan stops at the first subgroup that holds a node as good as the best possible
/// (by spread), so a placement costs O(slots × (GROUPS + SUBGROUPS + nodes / 4096)) in the
/// common case instead of O(slots × nodes), with the same minimal-disruption property: a
/// node's arrival or loss only changes the choice of slots that would pick it or were on it.
pub fn place(workloads: &[WorkloadReq], nodes: &[NodeInfo]) -> Placement {
    let nodes = canonical(nodes, |n| &n.id);
    let workloads = canonical(workloads, |w| &w.key);
    let index = NodeIndex::new(&nodes);
    // Free capacity in the index's group-contiguous order (see `NodeIndex::order`).
    let mut free: Vec<Free> = index.order.iter().map(|&i| Free::of(nodes[i])).collect();
    let mut statics: BTreeMap<FilterKey<'_>, Statics> = BTreeMap::new();
    // Replicas of the current workload per node (index order); all zero between workloads.
    let mut on_node = vec![0u32; nodes.len()];
    let slots: usize = workloads
        .iter()
        .map(|w| match w.kind {
            WorkloadKind::DaemonSet => nodes.len(),
            _ => w.replicas as usize,
        })
        .sum();
    let mut placement = Draft { assigned: Vec::with_capacity(slots), unschedulable: Vec::new() };
    for workload in workloads {
        match workload.kind {
            WorkloadKind::DaemonSet => {
                place_daemon_set(workload, &nodes, &index, &mut free, &mut placement);
            }
            WorkloadKind::Deployment | WorkloadKind::Job => {
                // Workloads with the same filters share one pass over the nodes.
                let checks = statics
                    .entry((&workload.node_selector, &workload.arch))
                    .or_insert_with(|| Statics::new(workload, &nodes, &index));
                place_replicas(workload, &nodes, &index, checks, &mut free, &mut on_node, &mut placement);
            }
        }
    }
    // Slots were produced in key order: the map is built in one pass.
    Placement { assignments: placement.assigned.into_iter().collect(), unschedulable: placement.unschedulable }
}

/// A placement being computed.
#[derive(Default)]
struct Draft {
    assigned: Vec<(Slot, String)>,
    unschedulable: Vec<Unschedulable>,
}

/// Workloads with equal node selector and architecture pass the same nodes.
type FilterKey<'a> = (&'a BTreeMap<String, String>, &'a Option<String>);

/// The static filters' verdicts for one [`FilterKey`]: per node in canonical order (for the
/// unschedulable summary), and as pass flags in the index's order (for the hot loop).
struct Statics {
    checks: Vec<Result<(), Rejection>>,
    passes: Vec<bool>,
    /// Nodes that pass.
    eligible: u32,
    /// Zones with a node that passes; whether a zoneless node passes.
    bound_zone: Vec<bool>,
    zoneless: bool,
}

impl Statics {
    fn new(workload: &WorkloadReq, nodes: &[&NodeInfo], index: &NodeIndex) -> Statics {
        let checks: Vec<Result<(), Rejection>> = nodes.iter().map(|n| static_check(workload, n)).collect();
        let passes: Vec<bool> = index.order.iter().map(|&i| checks[i].is_ok()).collect();
        let mut bound_zone = vec![false; index.zone_count];
        let mut zoneless = false;
        for (p, ok) in passes.iter().enumerate() {
            if *ok {
                match index.zones[p] {
                    NO_ZONE => zoneless = true,
                    z => bound_zone[z as usize] = true,
                }
            }
        }
        let eligible = passes.iter().filter(|ok| **ok).count() as u32;
        Statics { checks, passes, eligible, bound_zone, zoneless }
    }
}

/// `zones` value of a node without a zone.
const NO_ZONE: u32 = u32::MAX;

/// Fixed number of rendezvous groups (independent of the node count, so a node's group never
/// changes when others come or go).
pub const GROUPS: usize = 64;
/// Fixed number of subgroups per group (the second level of the rendezvous hierarchy).
pub const SUBGROUPS: usize = 64;

/// A subgroup: its salt and the index positions of its members.
type Subgroup = (u64, std::ops::Range<usize>);

/// Node hashes and their groups, computed once per placement.
///
/// Per-node data is stored in *index order*: the nodes of group 0, then of group 1, and so
/// on, each group in canonical order. A slot scans one group at a time, so what it reads is
/// contiguous in memory. Scan order (groups by weight, members in canonical order) is the
/// same as over canonical indices, so the result is too.
struct NodeIndex {
    /// Canonical index of the node at each index position.
    order: Vec<usize>,
    /// Index position of each canonical node.
    position: Vec<usize>,
    /// Id hash per index position.
    hashes: Vec<u64>,
    /// Zone per index position, as an index into the sorted zone names ([`NO_ZONE`]: none).
    zones: Vec<u32>,
    zone_count: usize,
    /// Non-empty groups: (group salt, its non-empty subgroups: (subgroup salt, index
    /// positions of its members)).
    groups: Vec<(u64, Vec<Subgroup>)>,
    /// The salts of `groups`, and of each group's subgroups, contiguous.
    group_salts: Vec<u64>,
    subgroup_salts: Vec<Vec<u64>>,
}

impl NodeIndex {
    fn new(nodes: &[&NodeInfo]) -> NodeIndex {
        let hashes: Vec<u64> = nodes.iter().map(|n| Fnv1a::default().field(n.id.as_bytes()).finish()).collect();
        let mut by_group: Vec<Vec<Vec<usize>>> = vec![vec![Vec::new(); SUBGROUPS]; GROUPS];
        for (i, h) in hashes.iter().enumerate() {
            by_group[(h >> 58) as usize % GROUPS][(h >> 52) as usize % SUBGROUPS].push(i);
        }
        let names: std::collections::BTreeSet<&str> = nodes.iter().filter_map(|n| n.zone.as_deref()).collect();
        let names: Vec<&str> = names.into_iter().collect();
        let zone_of = |i: usize| {
            nodes[i].zone.as_deref().and_then(|z| names.binary_search(&z).ok()).map_or(NO_ZONE, |z| z as u32)
        };
        let mut order = Vec::with_capacity(nodes.len());
        let mut groups = Vec::new();
        for (g, subgroups) in by_group.into_iter().enumerate() {
            let mut subs = Vec::new();
            for (sg, members) in subgroups.into_iter().enumerate() {
                if members.is_empty() {
                    continue;
                }
                let start = order.len();
                order.extend(members);
                subs.push((mix64(0x5851_f42d_4c95_7f2d ^ ((g * SUBGROUPS + sg) as u64)), start..order.len()));
            }
            if !subs.is_empty() {
                groups.push((mix64(0x9e37_79b9_7f4a_7c15 ^ g as u64), subs));
            }
        }
        let mut position = vec![0; nodes.len()];
        for (p, &i) in order.iter().enumerate() {
            position[i] = p;
        }
        NodeIndex {
            group_salts: groups.iter().map(|(salt, _)| *salt).collect(),
            subgroup_salts: groups.iter().map(|(_, subs)| subs.iter().map(|(salt, _)| *salt).collect()).collect(),
            hashes: order.iter().map(|&i| hashes[i]).collect(),
            zones: order.iter().map(|&i| zone_of(i)).collect(),
            order,
            position,
            zone_count: names.len(),
            groups,
        }
    }
}

/// Fills `items` with (weight, position) for `salts` and moves the heaviest to the front, as
/// `select_max(items, 0)` would.
fn weigh(items: &mut Vec<(u64, usize)>, salts: &[u64], slot_hash: u64) {
    items.resize(salts.len(), (0, 0));
    let mut top = (0, 0);
    for (k, (item, salt)) in items.iter_mut().zip(salts).enumerate() {
        let w = mix64(slot_hash ^ salt);
        *item = (w, k);
        // `>=`: the last of equal maxima, like `max_by_key`.
        if w >= top.0 {
            top = (w, k);
        }
    }
    if !items.is_empty() {
        items.swap(0, top.1);
    }
}

/// Moves the entry with the largest weight in `items[from..]` to `from`.
fn select_max(items: &mut [(u64, usize)], from: usize) {
    let (pos, _) = items[from..].iter().enumerate().max_by_key(|(_, w)| **w).unwrap_or((0, &(0, 0)));
    items.swap(from, from + pos);
}

/// Sorts by full value and keeps the first item of each identity.
fn canonical<T: Ord>(items: &[T], id: impl Fn(&T) -> &String) -> Vec<&T> {
    let mut sorted: Vec<&T> = items.iter().collect();
    // Equal items are identical, so an unstable sort gives the same order.
    sorted.sort_unstable();
    sorted.dedup_by(|b, a| id(a) == id(b));
    sorted
}

/// One slot per node that passes the selector and architecture filters, numbered in
/// node-id order; a node without room leaves its slot unschedulable.
fn place_daemon_set(
    workload: &WorkloadReq,
    nodes: &[&NodeInfo],
    index: &NodeIndex,
    free: &mut [Free],
    placement: &mut Draft,
) {
    let eligible = nodes.iter().enumerate().filter(|(_, node)| static_check(workload, node).is_ok());
    for (slot_index, (i, node)) in (0u32..).zip(eligible) {
        let free = &mut free[index.position[i]];
        let slot = Slot::new(workload.key.clone(), slot_index);
        match free.admits(workload) {
            Ok(()) => {
                free.take(workload);
                placement.assigned.push((slot, node.id.clone()));
            }
            Err(rejection) => placement
                .unschedulable
                .push(Unschedulable { slot, reason: format!("node {} {}", node.id, rejection.phrase(1)) }),
        }
    }
}

/// Preference of a node for the next slot, smallest first: replicas of this workload on
/// the node, replicas in its zone (0 without a zone), then highest rendezvous weight.
type Rank = (u32, u32, Reverse<u64>);

/// Slots `0..replicas`, each on a feasible node with the fewest replicas of this workload,
/// then the fewest in its zone; among those, the rendezvous choice (group, then node).
fn place_replicas(
    workload: &WorkloadReq,
    nodes: &[&NodeInfo],
    index: &NodeIndex,
    statics: &Statics,
    free: &mut [Free],
    on_node: &mut [u32],
    placement: &mut Draft,
) {
    // Everything per node below is by index position (see `NodeIndex`).
    let passes = &statics.passes;
    // Positions whose `on_node` this workload raised, to reset them at the end.
    let mut touched: Vec<usize> = Vec::new();
    // Lower bound of `on_node` over eligible nodes: `hist[c]` eligible nodes hold c replicas.
    let mut hist: Vec<u32> = vec![statics.eligible];
    let mut min_on_node = 0usize;
    // Replicas per zone; zones of eligible nodes take part in the lower bound. A node without
    // a zone counts 0.
    let mut in_zone = vec![0u32; index.zone_count];
    let (bound_zone, zoneless) = (&statics.bound_zone, statics.zoneless);
    let (need_memory, need_cpu) = (workload.memory_mib, workload.cpu_millis);
    let key_hash = Fnv1a::default().field(workload.key.as_bytes());
    let mut groups: Vec<(u64, usize)> = Vec::with_capacity(index.groups.len());
    let mut subs: Vec<(u64, usize)> = Vec::with_capacity(SUBGROUPS);
    let mut last_failure: Option<String> = None;

    for slot_index in 0..workload.replicas {
        let slot = Slot::new(workload.key.clone(), slot_index);
        // Capacity only shrinks, so once one slot fails the rest fail the same way.
        if let Some(reason) = &last_failure {
            placement.unschedulable.push(Unschedulable { slot, reason: reason.clone() });
            continue;
        }
        let slot_hash = key_hash.u32(slot_index).finish();
        // The best rank any node could have now: scanning stops once it is reached.
        while min_on_node + 1 < hist.len() && hist[min_on_node] == 0 {
            min_on_node += 1;
        }
        let min_zone = if zoneless {
            0
        } else {
            in_zone.iter().zip(bound_zone).filter(|(_, b)| **b).map(|(c, _)| *c).min().unwrap_or(0)
        };
        let floor = (min_on_node as u32, min_zone);

        weigh(&mut groups, &index.group_salts, slot_hash);
        let mut best: Option<(usize, Rank)> = None;
        // Groups, then their subgroups, in descending weight; usually the first subgroup
        // already holds a node at the floor, so select instead of sorting.
        'groups: for round in 0..groups.len() {
            if round > 0 {
                select_max(&mut groups, round);
            }
            let g = groups[round].1;
            let subgroups = &index.groups[g].1;
            weigh(&mut subs, &index.subgroup_salts[g], slot_hash);
            for sub_round in 0..subs.len() {
                if sub_round > 0 {
                    select_max(&mut subs, sub_round);
                }
                // Branch-light scan: every node's rank as one integer, infeasible ones as MAX;
                // the smallest wins, the earliest on an exact tie.
                let mut sub_best = (u128::MAX, usize::MAX);
                for p in subgroups[subs[sub_round].1].1.clone() {
                    let f = &free[p];
                    let feasible =
                        passes[p] & (f.memory_mib >= need_memory) & (f.cpu_millis >= need_cpu) & (f.instances > 0);
                    let zone = index.zones[p];
                    let zone_count = if zone == NO_ZONE { 0 } else { in_zone[zone as usize] };
                    let weight = mix64(slot_hash ^ index.hashes[p]);
                    let key = (u128::from(on_node[p]) << 96) | (u128::from(zone_count) << 64) | u128::from(!weight);
                    let key = if feasible { key } else { u128::MAX };
                    if key < sub_best.0 {
                        sub_best = (key, p);
                    }
                }
                if sub_best.0 != u128::MAX {
                    let rank = ((sub_best.0 >> 96) as u32, (sub_best.0 >> 64) as u32, Reverse(!(sub_best.0 as u64)));
                    // Strict `<`: on an exact tie the node scanned first wins.
                    if best.is_none_or(|(_, best_rank)| rank < best_rank) {
                        best = Some((sub_best.1, rank));
                    }
                }
                if best.is_some_and(|(_, (n, z, _))| (n, z) == floor) {
                    break 'groups;
                }
            }
        }

        match best {
            Some((p, _)) => {
                free[p].take(workload);
                if on_node[p] == 0 {
                    touched.push(p);
                }
                hist[on_node[p] as usize] -= 1;
                on_node[p] += 1;
                if hist.len() <= on_node[p] as usize {
                    hist.push(0);
                }
                hist[on_node[p] as usize] += 1;
                if index.zones[p] != NO_ZONE {
                    in_zone[index.zones[p] as usize] += 1;
                }
                placement.assigned.push((slot, nodes[index.order[p]].id.clone()));
            }
            None => {
                let mut summary = Summary::new(nodes.len());
                for (i, check) in statics.checks.iter().enumerate() {
                    match check {
                        Err(rejection) => summary.add(rejection.clone()),
                        Ok(()) => {
                            if let Err(rejection) = free[index.position[i]].admits(workload) {
                                summary.add(rejection);
                            }
                        }
                    }
                }
                let reason = summary.to_string();
                last_failure = Some(reason.clone());
                placement.unschedulable.push(Unschedulable { slot, reason });
            }
        }
    }
    for p in touched {
        on_node[p] = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    // Cross-checked against an independent Python model of the algorithm.
    const PINNED: [(u32, &str); 3] = [(0, "edge-3"), (1, "edge-5"), (2, "edge-2")];

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
    fn no_nodes() {
        let p = place(&[deployment("w", 1, 1)], &[]);
        assert_eq!(p.unschedulable[0].reason, "0/0 nodes: no nodes known");
    }
}
