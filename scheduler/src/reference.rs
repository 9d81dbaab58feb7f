//! The placement rule written the straightforward way, kept as a test oracle for the fast
//! one (`fleet.rs`): both must agree on every input. It shares only the hash definitions
//! (`hash.rs`, the seeds and stripe hashes of `plan.rs`) with the fast path; quotas, slot
//! assignment, stripes and the spread scan are written out again here.
//!
//! [`explain`] also reports each workload's plan (quotas by zone, slots without a stripe
//! node), which the property tests use to state when disruption is exactly minimal.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use crate::filter::{Free, Rejection, Summary, static_check};
use crate::hash::{Fnv1a, mix64};
use crate::plan::{DRAWS, Seeds, group_weight, stripe_hash, unit_hash};
use crate::{NodeInfo, Rule, Slot, WorkloadKind, WorkloadReq};

/// How the rule placed one replicated workload (a deployment or a job).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Slots per zone (`None`: the pool of zoneless nodes), for zones with eligible nodes.
    pub quotas: BTreeMap<Option<String>, u32>,
    /// Slots whose stripe had no feasible node, placed (or left unschedulable) by the spread
    /// scan, in slot order.
    pub homeless: Vec<u32>,
}

/// The plan of every replicated workload of `place(workloads, nodes)`, by key.
pub fn explain(workloads: &[WorkloadReq], nodes: &[NodeInfo]) -> BTreeMap<String, Plan> {
    run(Rule::Striped, workloads, nodes).1
}

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
    place_with(Rule::Striped, workloads, nodes)
}

/// [`place`] by the given rule.
pub fn place_with(rule: Rule, workloads: &[WorkloadReq], nodes: &[NodeInfo]) -> Placement {
    run(rule, workloads, nodes).0
}

fn run(rule: Rule, workloads: &[WorkloadReq], nodes: &[NodeInfo]) -> (Placement, BTreeMap<String, Plan>) {
    let nodes = canonical(nodes, |n| &n.id);
    let workloads = canonical(workloads, |w| &w.key);
    let mut free: Vec<Free> = nodes.iter().map(|n| Free::of(n)).collect();
    let index = NodeIndex::new(&nodes);
    let mut statics: BTreeMap<FilterKey<'_>, Vec<Result<(), Rejection>>> = BTreeMap::new();
    let mut placement = Placement::default();
    let mut plans = BTreeMap::new();
    for workload in workloads {
        match workload.kind {
            WorkloadKind::DaemonSet => {
                place_daemon_set(workload, &nodes, &mut free, &mut placement);
            }
            WorkloadKind::Deployment | WorkloadKind::Job => {
                // Workloads with the same filters share one pass over the nodes.
                let checks = statics
                    .entry((&workload.node_selector, &workload.arch, &workload.nodes))
                    .or_insert_with(|| nodes.iter().map(|n| static_check(workload, n)).collect());
                let plan = place_replicas(rule, workload, &nodes, &index, checks, &mut free, &mut placement);
                plans.insert(workload.key.clone(), plan);
            }
        }
    }
    (placement, plans)
}

/// Workloads with equal node selector, architecture and allowed nodes pass the same nodes.
type FilterKey<'a> = (&'a BTreeMap<String, String>, &'a Option<String>, &'a Option<BTreeSet<String>>);

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

/// Preference of a node for the next homeless slot, smallest first: replicas of this
/// workload on the node, replicas in its zone (0 without a zone), then highest rendezvous
/// weight.
type Rank = (u32, u32, Reverse<u64>);

/// How many slots each unit takes: full laps over every eligible node, then the seats of the
/// last lap level by level (level 0: one per zone and one per zoneless node; level `j`: one
/// per zone with more than `j` eligible nodes), units within a level by descending rank.
/// Seat by seat.
fn quotas(replicas: u32, units: &[(Option<&str>, u32)], seeds: &Seeds) -> Vec<u32> {
    let total: u32 = units.iter().map(|(_, e)| e).sum();
    if total == 0 {
        return vec![0; units.len()];
    }
    let mut quotas: Vec<u32> = units.iter().map(|(_, e)| replicas / total * e).collect();
    let mut rest = replicas % total;
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by_key(|&i| (Reverse(mix64(seeds.zones ^ unit_hash(units[i].0))), i));
    let mut level = 0;
    while rest > 0 {
        for &i in &order {
            let (name, eligible) = units[i];
            let seats = match (name, level) {
                (None, 0) => eligible,
                (None, _) => 0,
                (Some(_), _) => u32::from(eligible > level),
            };
            for _ in 0..seats {
                if rest > 0 {
                    quotas[i] += 1;
                    rest -= 1;
                }
            }
        }
        level += 1;
    }
    quotas
}

/// The stripe of a node (id hash `node_hash`) in unit `unit`: the first slot of the unit the
/// node draws (draw `t`: `mix64(start + t * golden)` scaled to `0..replicas`), or after
/// [`DRAWS`] draws, the unit's slot of highest rendezvous weight.
fn stripe(seeds: &Seeds, node_hash: u64, slot_units: &[usize], unit: usize) -> Option<usize> {
    let start = mix64(seeds.labels ^ node_hash);
    let labels: Vec<usize> = (0..slot_units.len()).filter(|&i| slot_units[i] == unit).collect();
    if labels.len() <= 1 {
        return labels.first().copied();
    }
    let drawn = (0..DRAWS).map(|t| {
        let draw = mix64(start.wrapping_add(t.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        ((u128::from(draw) * slot_units.len() as u128) >> 64) as usize
    });
    drawn
        .into_iter()
        .find(|&label| slot_units[label] == unit)
        .or_else(|| labels.into_iter().max_by_key(|&l| (mix64(start ^ mix64(l as u64)), Reverse(l))))
}

/// For each slot in order, the unit with quota left and the highest weight for the slot.
fn assign(quotas: &[u32], units: &[(Option<&str>, u32)], seeds: &Seeds) -> Vec<usize> {
    let mut left = quotas.to_vec();
    let mut out = Vec::new();
    for index in 0..quotas.iter().sum::<u32>() {
        let slot = seeds.slot(index);
        let best = (0..units.len())
            .filter(|&u| left[u] > 0)
            .max_by_key(|&u| (mix64(slot ^ unit_hash(units[u].0)), Reverse(u)))
            .unwrap_or(0);
        left[best] -= 1;
        out.push(best);
    }
    out
}

/// Slots `0..replicas`: first each zone's quota of slots, slot `i` of a zone on the best
/// feasible node of the zone's stripe `i` (the first group in the workload's order holding
/// one, then the highest stripe hash, then the smallest canonical index); then every slot
/// whose stripe had none (every slot, by [`Rule::SlotOrder`]), on a feasible node with the
/// fewest replicas of this workload, then the fewest in its zone; among those, the
/// rendezvous choice (group, then node).
fn place_replicas(
    rule: Rule,
    workload: &WorkloadReq,
    nodes: &[&NodeInfo],
    index: &NodeIndex,
    statics: &[Result<(), Rejection>],
    free: &mut [Free],
    placement: &mut Placement,
) -> Plan {
    let seeds = Seeds::new(&workload.key);
    let zone_name = |i: usize| nodes[i].zone.as_deref();
    // Units: zones with eligible nodes by name, then the pool.
    let mut counts: BTreeMap<(bool, Option<&str>), u32> = BTreeMap::new();
    for (i, check) in statics.iter().enumerate() {
        if check.is_ok() {
            *counts.entry((zone_name(i).is_none(), zone_name(i))).or_default() += 1;
        }
    }
    let units: Vec<(Option<&str>, u32)> = counts.iter().map(|((_, name), count)| (*name, *count)).collect();
    let quotas = quotas(workload.replicas, &units, &seeds);
    let slot_units = assign(&quotas, &units, &seeds);
    let mut plan = Plan {
        quotas: units.iter().zip(&quotas).map(|((name, _), q)| (name.map(str::to_string), *q)).collect(),
        homeless: Vec::new(),
    };
    // Rank of each node's group in the workload's group order.
    let mut order: Vec<(u64, usize)> =
        index.groups.iter().enumerate().map(|(g, (salt, _))| (group_weight(&seeds, *salt), g)).collect();
    order.sort_by(|a, b| b.cmp(a));
    let mut group_rank = vec![0; nodes.len()];
    for (rank, (_, g)) in order.iter().enumerate() {
        for &i in &index.groups[*g].1 {
            group_rank[i] = rank;
        }
    }

    let mut on_node = vec![0u32; nodes.len()];
    // Lower bound of `on_node` over eligible nodes: `hist[c]` eligible nodes hold c replicas.
    let mut hist: Vec<u32> = vec![statics.iter().filter(|s| s.is_ok()).count() as u32];
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
    let mut chosen: Vec<Option<usize>> = vec![None; workload.replicas as usize];
    let take = |i: usize, free: &mut [Free], on_node: &mut [u32], hist: &mut Vec<u32>, in_zone: &mut [u32]| {
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
    };

    // Stripes.
    let unit_of = |i: usize| units.iter().position(|(name, _)| *name == zone_name(i));
    let stripes: Vec<Option<usize>> = (0..nodes.len())
        .map(|i| match (&statics[i], unit_of(i)) {
            (Ok(()), Some(u)) => stripe(&seeds, index.hashes[i], &slot_units, u),
            _ => None,
        })
        .collect();
    for (slot_index, chosen) in chosen.iter_mut().enumerate().filter(|_| rule == Rule::Striped) {
        let best = (0..nodes.len())
            .filter(|&i| stripes[i] == Some(slot_index) && free[i].admits(workload).is_ok())
            .min_by_key(|&i| (group_rank[i], Reverse(stripe_hash(&seeds, index.hashes[i])), i));
        if let Some(i) = best {
            take(i, free, &mut on_node, &mut hist, &mut in_zone);
            *chosen = Some(i);
        }
    }

    // The spread scan for the rest.
    let mut min_on_node = 0usize;
    let mut groups: Vec<(u64, usize)> = Vec::with_capacity(index.groups.len());
    let mut last_failure: Option<String> = None;
    for slot_index in 0..workload.replicas {
        if chosen[slot_index as usize].is_some() {
            continue;
        }
        plan.homeless.push(slot_index);
        let slot = Slot::new(workload.key.clone(), slot_index);
        // Capacity only shrinks, so once one slot fails the rest fail the same way.
        if let Some(reason) = &last_failure {
            placement.unschedulable.push(Unschedulable { slot, reason: reason.clone() });
            continue;
        }
        let slot_hash = seeds.slot(slot_index);
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
                take(i, free, &mut on_node, &mut hist, &mut in_zone);
                chosen[slot_index as usize] = Some(i);
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
    for (slot_index, i) in (0u32..).zip(chosen) {
        if let Some(i) = i {
            placement.assignments.insert(Slot::new(workload.key.clone(), slot_index), nodes[i].id.clone());
        }
    }
    plan
}
