//! One placement pass: the nodes' free capacity, taken workload by workload in key order.

use std::collections::{BTreeMap, BTreeSet};

use crate::filter::{Free, Summary, static_check, static_passes};
use crate::hash::mix64;
use crate::index::{Bucket, NO_ZONE, NodeIndex};
use crate::plan::{self, Seeds, Unit};
use crate::{NodeInfo, Rule, WorkloadKind, WorkloadReq};

/// `Outcome::nodes` value of a slot that found no node.
pub(crate) const UNPLACED: u32 = u32::MAX;

/// Where the slots of one workload went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Canonical index of the node of each slot, by slot index; [`UNPLACED`] if none.
    pub nodes: Vec<u32>,
    /// The slots that found no node, with the reason, in slot order.
    pub failures: Vec<(u32, String)>,
    /// Slots whose stripe had no feasible node, placed (or failed) by the spread scan.
    pub homeless: u32,
}

impl Outcome {
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.failures.clear();
        self.homeless = 0;
    }
}

/// Workloads with equal node selector, architecture and allowed nodes pass the same nodes.
pub(crate) type FilterKey<'a> = (&'a BTreeMap<String, String>, &'a Option<String>, &'a Option<BTreeSet<String>>);

pub(crate) fn filter_key(workload: &WorkloadReq) -> FilterKey<'_> {
    (&workload.node_selector, &workload.arch, &workload.nodes)
}

/// The static filters' verdicts for one [`FilterKey`].
pub(crate) struct Statics {
    /// Whether the node at each position passes.
    pub passes: Vec<bool>,
    /// Nodes that pass.
    pub eligible: u32,
    /// Per zone id, whether a node in that zone passes; whether a node without a zone does.
    pub bound_zone: Vec<bool>,
    pub zoneless: bool,
    /// The zones with a node that passes, by name, then the pool of zoneless ones if any
    /// pass; and the zone id of each ([`NO_ZONE`] for the pool).
    pub units: Vec<Unit>,
    pub unit_zones: Vec<u32>,
}

impl Statics {
    fn new(workload: &WorkloadReq, nodes: &[&NodeInfo], index: &NodeIndex<'_>) -> Statics {
        let passes: Vec<bool> = index.order.iter().map(|&i| static_passes(workload, nodes[i as usize])).collect();
        let mut in_zone = vec![0u32; index.zone_names.len()];
        let mut zoneless = 0;
        let mut eligible = 0;
        for (ok, &zone) in passes.iter().zip(&index.zones) {
            if *ok {
                eligible += 1;
                match zone {
                    NO_ZONE => zoneless += 1,
                    z => in_zone[z as usize] += 1,
                }
            }
        }
        let mut units = Vec::new();
        let mut unit_zones = Vec::new();
        for (z, (&count, name)) in (0u32..).zip(in_zone.iter().zip(&index.zone_names)) {
            if count > 0 {
                units.push(Unit { eligible: count, hash: plan::unit_hash(Some(name)), pool: false });
                unit_zones.push(z);
            }
        }
        if zoneless > 0 {
            units.push(Unit { eligible: zoneless, hash: plan::unit_hash(None), pool: true });
            unit_zones.push(NO_ZONE);
        }
        let bound_zone = in_zone.iter().map(|c| *c > 0).collect();
        Statics { passes, eligible, bound_zone, zoneless: zoneless > 0, units, unit_zones }
    }

    /// Whether a node in `zone` (a zone id, or [`NO_ZONE`]) passes.
    pub fn covers_zone(&self, zone: u32) -> bool {
        if zone == NO_ZONE { self.zoneless } else { self.bound_zone[zone as usize] }
    }
}

/// Scratch space reused from workload to workload.
#[derive(Default)]
struct Scratch {
    /// Replicas of the current workload per position; all zero between workloads.
    on_node: Vec<u32>,
    /// Positions whose `on_node` the current workload raised.
    touched: Vec<usize>,
    /// Replicas of the current workload per zone id.
    in_zone: Vec<u32>,
    /// `hist[c]`: eligible nodes holding `c` replicas; `zone_hist[c]`: zones with an eligible
    /// node holding `c` replicas.
    hist: Vec<u32>,
    zone_hist: Vec<u32>,
    /// (weight, group) of every group for the current slot.
    groups: Vec<(u64, usize)>,
    /// The current workload's group order (groups by descending weight).
    group_order: Vec<(u64, usize)>,
    /// Per stripe (slot index): the best (stripe hash, position) in the current group
    /// (position `usize::MAX`: none yet), and whether an earlier group settled it.
    stripe_best: Vec<(u64, usize)>,
    settled: Vec<bool>,
    /// Stripes that found a node in the current group.
    found: Vec<usize>,
    /// The slots of each unit, unit after unit, and where each unit's run starts (and, last,
    /// where the last one ends).
    unit_slots: Vec<u32>,
    unit_start: Vec<usize>,
}

/// The nodes of one placement with their free capacity, and the per-filter verdicts met so far.
/// Per-node state is by position (see [`NodeIndex`]).
pub(crate) struct Fleet<'a> {
    pub rule: Rule,
    pub nodes: &'a [&'a NodeInfo],
    pub index: &'a NodeIndex<'a>,
    pub free: Vec<Free>,
    statics: BTreeMap<FilterKey<'a>, Statics>,
    scratch: Scratch,
}

impl<'a> Fleet<'a> {
    /// Every node empty. `nodes` in canonical order, `index` built from them.
    pub fn new(rule: Rule, nodes: &'a [&'a NodeInfo], index: &'a NodeIndex<'a>) -> Fleet<'a> {
        let free = index.order.iter().map(|&i| Free::of(nodes[i as usize])).collect();
        let scratch = Scratch { on_node: vec![0; nodes.len()], ..Scratch::default() };
        Fleet { rule, nodes, index, free, statics: BTreeMap::new(), scratch }
    }

    /// The static verdicts for `workload`'s filters, computed on first use.
    pub fn statics(&mut self, workload: &'a WorkloadReq) -> &Statics {
        let (nodes, index) = (self.nodes, self.index);
        self.statics.entry(filter_key(workload)).or_insert_with(|| Statics::new(workload, nodes, index))
    }

    /// Places every slot of `workload` on the nodes' remaining capacity, into `out` (cleared
    /// first).
    pub fn place(&mut self, workload: &'a WorkloadReq, out: &mut Outcome) {
        out.clear();
        match workload.kind {
            WorkloadKind::DaemonSet => self.place_daemon_set(workload, out),
            WorkloadKind::Deployment | WorkloadKind::Job => self.place_replicas(workload, out),
        }
    }

    /// One slot per node that passes the selector and architecture filters, numbered in
    /// node-id order; a node without room leaves its slot unschedulable.
    fn place_daemon_set(&mut self, workload: &WorkloadReq, out: &mut Outcome) {
        let eligible = (0u32..).zip(self.nodes).filter(|(_, node)| static_passes(workload, node));
        for (slot_index, (i, node)) in (0u32..).zip(eligible) {
            let free = &mut self.free[self.index.position[i as usize] as usize];
            match free.admits(workload) {
                Ok(()) => {
                    free.take(workload);
                    out.nodes.push(i);
                }
                Err(rejection) => {
                    out.nodes.push(UNPLACED);
                    out.failures.push((slot_index, format!("node {} {}", node.id, rejection.phrase(1))));
                }
            }
        }
    }

    /// Slots `0..replicas` in two phases (see [`plan`]). First, each zone (or the pool of
    /// zoneless nodes) takes its quota of slots, and slot `i` of a zone takes the best feasible
    /// node of the zone's stripe `i`: groups in the workload's order, the first one with such a
    /// node, in it the highest stripe hash. Then every slot left over (its stripe had no
    /// feasible node) is placed by the spread scan, in slot order. [`Rule::SlotOrder`]: the
    /// spread scan alone.
    fn place_replicas(&mut self, workload: &'a WorkloadReq, out: &mut Outcome) {
        let (nodes, index) = (self.nodes, self.index);
        let statics = self.statics.entry(filter_key(workload)).or_insert_with(|| Statics::new(workload, nodes, index));
        let scratch = &mut self.scratch;
        let free = &mut self.free;
        let seeds = Seeds::new(&workload.key);

        // Lower bound of `on_node` over eligible nodes: the lowest non-empty level of `hist`;
        // of the zone counts over zones with an eligible node: likewise of `zone_hist`, or 0
        // if an eligible node has no zone.
        scratch.hist.clear();
        scratch.hist.push(statics.eligible);
        scratch.in_zone.clear();
        scratch.in_zone.resize(index.zone_names.len(), 0);
        scratch.zone_hist.clear();
        scratch.zone_hist.push(statics.bound_zone.iter().filter(|b| **b).count() as u32);

        out.nodes.resize(planned(workload) as usize, UNPLACED);
        if self.rule == Rule::Striped {
            place_striped(workload, &seeds, statics, index, free, scratch, out);
        }
        spread_scan(workload, &seeds, statics, nodes, index, free, scratch, out);
        // Slots past `replicas` only held their place in the plan.
        out.nodes.truncate(workload.replicas as usize);
        for p in scratch.touched.drain(..) {
            scratch.on_node[p] = 0;
        }
    }
}

/// The slots a workload is placed as: `replicas`, or its plan when larger.
fn planned(workload: &WorkloadReq) -> u32 {
    workload.replicas.max(workload.planned)
}

/// Takes one replica of `workload` at position `p` for slot `slot_index` (a slot past
/// `replicas` counts for spreading but takes no capacity).
fn commit(
    workload: &WorkloadReq,
    p: usize,
    slot_index: u32,
    free: &mut [Free],
    scratch: &mut Scratch,
    out: &mut Outcome,
    index: &NodeIndex<'_>,
) {
    let Scratch { on_node, touched, in_zone, hist, zone_hist, .. } = scratch;
    if slot_index < workload.replicas {
        free[p].take(workload);
    }
    if on_node[p] == 0 {
        touched.push(p);
    }
    raise(hist, on_node[p]);
    on_node[p] += 1;
    let zone = index.zones[p];
    if zone != NO_ZONE {
        // An eligible node's zone is one of the counted ones.
        raise(zone_hist, in_zone[zone as usize]);
        in_zone[zone as usize] += 1;
    }
    out.nodes[slot_index as usize] = index.order[p];
}

/// The first phase: every slot whose stripe has a feasible node takes the best one.
fn place_striped(
    workload: &WorkloadReq,
    seeds: &Seeds,
    statics: &Statics,
    index: &NodeIndex<'_>,
    free: &mut [Free],
    scratch: &mut Scratch,
    out: &mut Outcome,
) {
    if planned(workload) == 0 || statics.units.is_empty() {
        return;
    }
    let quotas = plan::quotas(planned(workload), &statics.units, seeds);
    let slot_units = plan::assign(&quotas, &statics.units, seeds);
    // Scratch vectors taken out for the pass, so that `commit` can borrow the rest.
    let mut unit_start = std::mem::take(&mut scratch.unit_start);
    let mut unit_slots = std::mem::take(&mut scratch.unit_slots);
    let mut group_order = std::mem::take(&mut scratch.group_order);
    let mut stripe_best = std::mem::take(&mut scratch.stripe_best);
    let mut settled = std::mem::take(&mut scratch.settled);
    let mut found = std::mem::take(&mut scratch.found);

    // The slots of each unit in slot order (the labels of its stripes).
    unit_start.clear();
    let mut start = 0;
    for q in &quotas {
        unit_start.push(start);
        start += *q as usize;
    }
    unit_start.push(start);
    unit_slots.clear();
    unit_slots.resize(start, 0);
    let mut fill = unit_start.clone();
    for (slot_index, &unit) in (0u32..).zip(&slot_units) {
        unit_slots[fill[unit as usize]] = slot_index;
        fill[unit as usize] += 1;
    }
    // The workload's group order: descending (weight, group).
    group_order.clear();
    group_order.extend(index.group_salts.iter().enumerate().map(|(g, salt)| (plan::group_weight(seeds, *salt), g)));
    group_order.sort_unstable_by(|a, b| b.cmp(a));
    // Per stripe (slot index): the best so far in the current group, and whether settled.
    stripe_best.clear();
    stripe_best.resize(slot_units.len(), (0, usize::MAX));
    settled.clear();
    settled.resize(slot_units.len(), false);

    let passes = &statics.passes[..];
    let (need_memory, need_cpu) = (workload.memory_mib, workload.cpu_millis);
    for (u, &zone) in (0u32..).zip(&statics.unit_zones) {
        let labels = &unit_slots[unit_start[u as usize]..unit_start[u as usize + 1]];
        let mut open = labels.len();
        if open == 0 {
            continue;
        }
        for &(_, g) in &group_order {
            let Some(bucket) = index.buckets[index.group_buckets[g].clone()].iter().find(|b| b.zone == zone) else {
                continue;
            };
            for p in bucket.members.clone() {
                let f = &free[p];
                let feasible =
                    passes[p] & (f.memory_mib >= need_memory) & (f.cpu_millis >= need_cpu) & (f.instances > 0);
                if !feasible {
                    continue;
                }
                let label = plan::stripe(seeds, index.hashes[p], &slot_units, u, labels) as usize;
                if settled[label] {
                    continue;
                }
                let hash = plan::stripe_hash(seeds, index.hashes[p]);
                let best = &mut stripe_best[label];
                if best.1 == usize::MAX {
                    *best = (hash, p);
                    found.push(label);
                } else if hash > best.0 {
                    // Of equal hashes the first, the smaller canonical index.
                    *best = (hash, p);
                }
            }
            open -= found.len();
            for label in found.drain(..) {
                settled[label] = true;
                commit(workload, stripe_best[label].1, label as u32, free, scratch, out, index);
            }
            if open == 0 {
                break;
            }
        }
    }
    scratch.unit_start = unit_start;
    scratch.unit_slots = unit_slots;
    scratch.group_order = group_order;
    scratch.stripe_best = stripe_best;
    scratch.settled = settled;
    scratch.found = found;
}

/// The second phase: the slots still unplaced, in slot order, each on a feasible node with
/// the fewest replicas of this workload, then the fewest in its zone (0 without a zone);
/// among those, the rendezvous choice: groups by descending weight, the heaviest node of a
/// group, and the scan stops at the first group holding a node at the best rank any node
/// could have (the *floor*). With no slot placed before, this is the whole placement rule of
/// earlier releases.
#[expect(clippy::too_many_arguments, reason = "the pieces of one fleet, borrowed apart")]
fn spread_scan(
    workload: &WorkloadReq,
    seeds: &Seeds,
    statics: &Statics,
    nodes: &[&NodeInfo],
    index: &NodeIndex<'_>,
    free: &mut [Free],
    scratch: &mut Scratch,
    out: &mut Outcome,
) {
    let passes = &statics.passes[..];
    let (need_memory, need_cpu) = (workload.memory_mib, workload.cpu_millis);
    let zoneless = statics.zoneless;
    let mut min_on_node = 0usize;
    let mut min_zone = 0usize;
    let mut last_failure: Option<String> = None;
    for slot_index in 0..planned(workload) {
        if out.nodes[slot_index as usize] != UNPLACED {
            continue;
        }
        let real = slot_index < workload.replicas;
        out.homeless += u32::from(real);
        // Capacity only shrinks, so once one slot fails the rest fail the same way.
        if let Some(reason) = &last_failure {
            if real {
                out.failures.push((slot_index, reason.clone()));
            }
            continue;
        }
        let Scratch { on_node, in_zone, hist, zone_hist, groups, .. } = &mut *scratch;
        let slot_hash = seeds.slot(slot_index);
        while min_on_node + 1 < hist.len() && hist[min_on_node] == 0 {
            min_on_node += 1;
        }
        while min_zone + 1 < zone_hist.len() && zone_hist[min_zone] == 0 {
            min_zone += 1;
        }
        let floor = spread_pair(min_on_node as u32, if zoneless { 0 } else { min_zone as u32 });

        // Group weights, and the heaviest group found in the same pass.
        groups.resize(index.group_salts.len(), (0, 0));
        let mut top = (0, 0);
        for (g, (group, salt)) in groups.iter_mut().zip(&index.group_salts).enumerate() {
            let weight = mix64(slot_hash ^ salt);
            *group = (weight, g);
            // `>=`: of equal weights the later group, as the largest (weight, group).
            if weight >= top.0 {
                top = (weight, g);
            }
        }
        // The best node so far: smallest (spread pair, !weight) as one integer, then the
        // earliest group, then the smallest canonical index.
        let mut best = (u128::MAX, usize::MAX, u32::MAX);
        let mut best_position = usize::MAX;
        for round in 0..groups.len() {
            // Groups in descending (weight, group); usually the first one already holds a
            // node at the floor, so select instead of sorting.
            let top =
                if round == 0 { top.1 } else { (round..groups.len()).max_by_key(|&k| groups[k]).unwrap_or(round) };
            groups.swap(round, top);
            let buckets = &index.buckets[index.group_buckets[groups[round].1].clone()];
            // Every node of a bucket ranks at least (0, its zone count): buckets at the
            // group's lowest such bound first, then any other that can still win.
            let zone_count = |zone: u32| if zone == NO_ZONE { 0 } else { in_zone[zone as usize] };
            let low = buckets.iter().map(|b| zone_count(b.zone)).min().unwrap_or(u32::MAX);
            if u128::from(spread_pair(0, low)) << 64 > best.0 {
                // No node of this group can win.
                continue;
            }
            // The best node of a bucket: (rank, position), rank `MAX` if none is feasible.
            let scan = |bucket: &Bucket, count: u32| {
                let members = bucket.members.clone();
                // Usually the heaviest member is feasible and holds no replica of this
                // workload yet, and then it is the bucket's best: every member ranks at
                // least (0, count). Otherwise, the full rank of every member.
                let (weight, offset) = heaviest(&index.hashes[members.clone()], slot_hash);
                let p = members.start + offset;
                let f = &free[p];
                let easy = passes[p]
                    & (f.memory_mib >= need_memory)
                    & (f.cpu_millis >= need_cpu)
                    & (f.instances > 0)
                    & (on_node[p] == 0);
                let (rank, offset) = if easy {
                    (u128::from(spread_pair(0, count)) << 64 | u128::from(!weight), offset)
                } else {
                    bucket_best(
                        &free[members.clone()],
                        &passes[members.clone()],
                        &index.hashes[members.clone()],
                        &on_node[members.clone()],
                        count,
                        (need_memory, need_cpu),
                        slot_hash,
                    )
                };
                (rank, members.start + offset)
            };
            // Strict: of equal ranks the earlier group's node wins, then the smaller
            // canonical index.
            let offer = |(rank, p): (u128, usize), best: &mut (u128, usize, u32), best_position: &mut usize| {
                let candidate = (rank, round, index.order[p]);
                if rank != u128::MAX && candidate < *best {
                    *best = candidate;
                    *best_position = p;
                }
            };
            // Buckets at the group's lowest bound first: usually one of them holds the best.
            for bucket in buckets {
                let count = zone_count(bucket.zone);
                if count == low {
                    offer(scan(bucket, count), &mut best, &mut best_position);
                }
            }
            if (best.0 >> 64) as u64 != spread_pair(0, low) {
                for bucket in buckets {
                    let count = zone_count(bucket.zone);
                    if count != low && u128::from(spread_pair(0, count)) << 64 <= best.0 {
                        offer(scan(bucket, count), &mut best, &mut best_position);
                    }
                }
            }
            if (best.0 >> 64) as u64 == floor {
                break;
            }
        }

        if best_position != usize::MAX {
            commit(workload, best_position, slot_index, free, scratch, out, index);
        } else {
            let mut summary = Summary::new(nodes.len());
            for (i, node) in nodes.iter().enumerate() {
                let verdict =
                    static_check(workload, node).and_then(|()| free[index.position[i] as usize].admits(workload));
                if let Err(rejection) = verdict {
                    summary.add(rejection);
                }
            }
            let reason = summary.to_string();
            if real {
                out.failures.push((slot_index, reason.clone()));
            }
            last_failure = Some(reason);
        }
    }
}

/// The best node of a bucket (members' free capacity, filter verdicts, id hashes and replica
/// counts; `in_zone` replicas in their zone): its rank (spread pair, then `!weight`, as one
/// integer; `MAX` if no member is feasible) and offset. Branch-light: an infeasible member
/// ranks `MAX`; of equal ranks the first, which has the smallest canonical index, wins.
fn bucket_best(
    free: &[Free],
    passes: &[bool],
    hashes: &[u64],
    on_node: &[u32],
    in_zone: u32,
    (need_memory, need_cpu): (u64, u64),
    slot_hash: u64,
) -> (u128, usize) {
    let mut best = (u128::MAX, 0);
    for (offset, (((f, passes), hash), on_node)) in free.iter().zip(passes).zip(hashes).zip(on_node).enumerate() {
        let feasible = *passes & (f.memory_mib >= need_memory) & (f.cpu_millis >= need_cpu) & (f.instances > 0);
        let weight = mix64(slot_hash ^ hash);
        let rank = u128::from(spread_pair(*on_node, in_zone)) << 64 | u128::from(!weight);
        let rank = if feasible { rank } else { u128::MAX };
        if rank < best.0 {
            best = (rank, offset);
        }
    }
    best
}

/// The heaviest of `hashes` for `slot_hash` and its offset, the first of equal weights.
fn heaviest(hashes: &[u64], slot_hash: u64) -> (u64, usize) {
    let mut best = (0, 0);
    for (offset, hash) in hashes.iter().enumerate() {
        let weight = mix64(slot_hash ^ hash);
        // `>` keeps the first of equal weights; an all-zero weight stays at offset 0.
        if weight > best.0 {
            best = (weight, offset);
        }
    }
    best
}

/// A node's spread rank for the current slot as one integer: replicas of the workload on it,
/// then in its zone; smaller is better.
fn spread_pair(on_node: u32, in_zone: u32) -> u64 {
    (u64::from(on_node) << 32) | u64::from(in_zone)
}

/// Moves one entry of the histogram `hist` from level `from` to `from + 1`.
fn raise(hist: &mut Vec<u32>, from: u32) {
    let from = from as usize;
    hist[from] -= 1;
    if hist.len() <= from + 1 {
        hist.push(0);
    }
    hist[from + 1] += 1;
}
