//! The straightforward placement this crate shipped before the index-ordered, branch-light
//! scan (see `placement.rs`), kept as a test oracle: both must agree on every input.

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
/// Rendezvous hashing is two-level ("skeleton" HRW): nodes fall into [`GROUPS`] fixed groups
/// by the hash of their id; a slot ranks the groups by weight, then the nodes of a group.
/// A slot's scan stops at the first group that holds a node as good as the best possible
/// (by spread), so a placement costs O(slots × nodes / GROUPS) in the common case instead of
/// O(slots × nodes), with the same minimal-disruption property: a node's arrival or loss only
/// changes the choice of slots that would pick it or were on it.
pub fn place(workloads: &[WorkloadReq], nodes: &[NodeInfo]) -> Placement {
    let nodes = canonical(nodes, |n| &n.id);
    let workloads = canonical(workloads, |w| &w.key);
    let mut free: Vec<Free> = nodes.iter().map(|n| Free::of(n)).collect();
    let index = NodeIndex::new(&nodes);
    let mut statics: BTreeMap<FilterKey<'_>, Vec<Result<(), Rejection>>> = BTreeMap::new();
    let mut placement = Placement::default();
    for workload in workloads {
        match workload.kind {
            WorkloadKind::DaemonSet => {
                place_daemon_set(workload, &nodes, &mut free, &mut placement);
            }
            WorkloadKind::Deployment | WorkloadKind::Job => {
                // Workloads with the same filters share one pass over the nodes.
                let checks = statics
                    .entry((&workload.node_selector, &workload.arch))
                    .or_insert_with(|| nodes.iter().map(|n| static_check(workload, n)).collect());
                place_replicas(workload, &nodes, &index, checks, &mut free, &mut placement);
            }
        }
    }
    placement
}

/// Workloads with equal node selector and architecture pass the same nodes.
type FilterKey<'a> = (&'a BTreeMap<String, String>, &'a Option<String>);

/// Fixed number of rendezvous groups (independent of the node count, so a node's group never
/// changes when others come or go).
const GROUPS: usize = 64;

/// Node hashes and their groups, computed once per placement.
struct NodeIndex {
    hashes: Vec<u64>,
    /// Zone of each node as an index into the sorted zone names (`None`: no zone).
    zones: Vec<Option<usize>>,
    zone_count: usize,
    /// Non-empty groups: (group salt, node indices in canonical order).
    groups: Vec<(u64, Vec<usize>)>,
}

impl NodeIndex {
    fn new(nodes: &[&NodeInfo]) -> NodeIndex {
        let hashes: Vec<u64> = nodes.iter().map(|n| Fnv1a::default().field(n.id.as_bytes()).finish()).collect();
        let mut by_group: Vec<Vec<usize>> = vec![Vec::new(); GROUPS];
        for (i, h) in hashes.iter().enumerate() {
            by_group[(h >> 58) as usize % GROUPS].push(i);
        }
        let groups = by_group
            .into_iter()
            .enumerate()
            .filter(|(_, members)| !members.is_empty())
            .map(|(g, members)| (mix64(0x9e37_79b9_7f4a_7c15 ^ g as u64), members))
            .collect();
        let names: std::collections::BTreeSet<&str> = nodes.iter().filter_map(|n| n.zone.as_deref()).collect();
        let names: Vec<&str> = names.into_iter().collect();
        let zones = nodes.iter().map(|n| n.zone.as_deref().and_then(|z| names.binary_search(&z).ok())).collect();
        NodeIndex { hashes, zones, zone_count: names.len(), groups }
    }
}

/// Sorts by full value and keeps the first item of each identity.
fn canonical<T: Ord>(items: &[T], id: impl Fn(&T) -> &String) -> Vec<&T> {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort();
    sorted.dedup_by(|b, a| id(a) == id(b));
    sorted
}

/// One slot per node that passes the selector and architecture filters, numbered in
/// node-id order; a node without room leaves its slot unschedulable.
fn place_daemon_set(workload: &WorkloadReq, nodes: &[&NodeInfo], free: &mut [Free], placement: &mut Placement) {
    let eligible = nodes.iter().zip(free.iter_mut()).filter(|(node, _)| static_check(workload, node).is_ok());
    for (index, (node, free)) in (0u32..).zip(eligible) {
        let slot = Slot::new(workload.key.clone(), index);
        match free.admits(workload) {
            Ok(()) => {
                free.take(workload);
                placement.assignments.insert(slot, node.id.clone());
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
    statics: &[Result<(), Rejection>],
    free: &mut [Free],
    placement: &mut Placement,
) {
    let mut on_node = vec![0u32; nodes.len()];
    // Lower bound of `on_node` over eligible nodes: `hist[c]` eligible nodes hold c replicas.
    let mut hist: Vec<u32> = vec![statics.iter().filter(|s| s.is_ok()).count() as u32];
    let mut min_on_node = 0usize;
    // Replicas per zone; zones of eligible nodes take part in the lower bound. A node without
    // a zone counts 0.
    let mut in_zone = vec![0u32; index.zone_count];
    let mut bound_zone = vec![false; index.zone_count];
    let mut zoneless = false;
    for (i, check) in statics.iter().enumerate() {
        if check.is_ok() {
            match index.zones[i] {
                Some(z) => bound_zone[z] = true,
                None => zoneless = true,
            }
        }
    }
    let key_hash = Fnv1a::default().field(workload.key.as_bytes());
    let mut groups: Vec<(u64, usize)> = Vec::with_capacity(index.groups.len());
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
            in_zone.iter().zip(&bound_zone).filter(|(_, b)| **b).map(|(c, _)| *c).min().unwrap_or(0)
        };
        let floor = (min_on_node as u32, min_zone);

        groups.clear();
        groups.extend(index.groups.iter().enumerate().map(|(g, (salt, _))| (mix64(slot_hash ^ salt), g)));
        let mut best: Option<(usize, Rank)> = None;
        // Groups in descending weight; usually the first one already holds a node at the
        // floor, so select instead of sorting.
        for round in 0..groups.len() {
            let (pos, _) = groups[round..].iter().enumerate().max_by_key(|(_, w)| **w).unwrap_or((0, &(0, 0)));
            groups.swap(round, round + pos);
            let g = groups[round].1;
            for &i in &index.groups[g].1 {
                if statics[i].is_err() || free[i].admits(workload).is_err() {
                    continue;
                }
                let zone_count = index.zones[i].map(|z| in_zone[z]).unwrap_or(0);
                let weight = mix64(slot_hash ^ index.hashes[i]);
                let rank = (on_node[i], zone_count, Reverse(weight));
                // Strict `<`: on an exact tie the earlier node (canonical order) wins.
                if best.is_none_or(|(_, best_rank)| rank < best_rank) {
                    best = Some((i, rank));
                }
            }
            if best.is_some_and(|(_, (n, z, _))| (n, z) == floor) {
                break;
            }
        }

        match best {
            Some((i, _)) => {
                free[i].take(workload);
                hist[on_node[i] as usize] -= 1;
                on_node[i] += 1;
                if hist.len() <= on_node[i] as usize {
                    hist.push(0);
                }
                hist[on_node[i] as usize] += 1;
                if let Some(z) = index.zones[i] {
                    in_zone[z] += 1;
                }
                placement.assignments.insert(slot, nodes[i].id.clone());
            }
            None => {
                let mut summary = Summary::new(nodes.len());
                for (i, check) in statics.iter().enumerate() {
                    match check {
                        Err(rejection) => summary.add(rejection.clone()),
                        Ok(()) => {
                            if let Err(rejection) = free[i].admits(workload) {
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
}
