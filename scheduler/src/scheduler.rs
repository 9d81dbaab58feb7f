//! Placement kept between calls, recomputing only what a change can affect.

use std::collections::BTreeMap;

use crate::filter::{Free, static_passes};
use crate::fleet::{FilterKey, Fleet, Outcome, UNPLACED, filter_key};
use crate::index::{NO_ZONE, NodeIndex, canonical};
use crate::placement::{Placement, emit, emit_failures};
use crate::plan::{self, Seeds, Unit};
use crate::{NodeInfo, Rule, Slot, WorkloadKind, WorkloadReq};

/// Computes the same [`Placement`] as [`place`](crate::place), keeping the last one so that
/// the next call recomputes only the workloads a change can affect.
///
/// Every call gives exactly `place(workloads, nodes)`, whatever came before; only the cost
/// differs. A call whose nodes are those of the previous call, or some of them (nodes lost),
/// reuses each unchanged workload's previous slots when they provably stay the same, which
/// is when
///
/// - none of its slots was on a lost node and none was unschedulable;
/// - if it could use a lost node: its zone quotas are unchanged (so are its slots' zones and
///   stripes), and if some of its slots were homeless (placed by the spread scan), the lost
///   nodes leave their spread floor as it was: at least `replicas` eligible nodes remain,
///   and every zone (or the zoneless kind) of a lost eligible node still has one; and
/// - every node whose free capacity differs from last time, because an earlier workload
///   (in key order) moved, admits this workload's replicas exactly as often as it did.
///
/// Under these conditions each stripe keeps its best node and each spread scan meets the same
/// nodes in the same state and stops at the same group, short of only nodes that never won.
/// Everything else is recomputed as [`place`](crate::place) would, so a move cascades exactly
/// as far as it must. A node that joins or changes, or a change of [`Rule`], recomputes
/// everything.
#[derive(Debug, Clone, Default)]
pub struct Scheduler {
    /// The rule of the next call, and of the last one.
    rule: Rule,
    placed_by: Rule,
    /// The last call's nodes and workloads, in canonical order without duplicates.
    nodes: Vec<NodeInfo>,
    workloads: Vec<WorkloadReq>,
    /// Where each workload's slots went (parallel to `workloads`; node indices into `nodes`).
    outcomes: Vec<Outcome>,
    placement: Placement,
    /// Workloads the last call placed afresh.
    recomputed: usize,
}

impl Scheduler {
    pub fn new() -> Scheduler {
        Scheduler::default()
    }

    /// A scheduler that places by `rule`.
    pub fn with_rule(rule: Rule) -> Scheduler {
        Scheduler { rule, ..Scheduler::default() }
    }

    /// Places by `rule` from the next call on (which then recomputes everything if the rule
    /// changed).
    pub fn set_rule(&mut self, rule: Rule) {
        self.rule = rule;
    }

    /// The rule the next call places by.
    pub fn rule(&self) -> Rule {
        self.rule
    }

    /// The placement of the last call (empty before the first).
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// How many workloads the last call placed afresh; the others kept their slots without a
    /// scan.
    pub fn recomputed(&self) -> usize {
        self.recomputed
    }

    /// Assigns every replica slot of `workloads` to one of `nodes`: the same result as
    /// [`place`](crate::place) on the same arguments.
    pub fn place(&mut self, workloads: &[WorkloadReq], nodes: &[NodeInfo]) -> &Placement {
        let nodes = canonical(nodes, |n| &n.id);
        let workloads = canonical(workloads, |w| &w.key);
        match survivors(&self.nodes, &nodes).filter(|_| self.placed_by == self.rule) {
            Some(kept) => {
                let unchanged = kept.len() == nodes.len()
                    && workloads.len() == self.workloads.len()
                    && workloads.iter().zip(&self.workloads).all(|(new, old)| *new == old);
                if unchanged {
                    self.recomputed = 0;
                } else {
                    self.update(&workloads, &nodes, &kept);
                }
            }
            None => self.recompute(&workloads, &nodes),
        }
        &self.placement
    }

    /// Places everything afresh.
    fn recompute(&mut self, workloads: &[&WorkloadReq], nodes: &[&NodeInfo]) {
        let (outcomes, placement) = place_all(self.rule, workloads, nodes);
        self.placed_by = self.rule;
        self.nodes = nodes.iter().map(|&n| n.clone()).collect();
        self.workloads = workloads.iter().map(|&w| w.clone()).collect();
        self.outcomes = outcomes;
        self.placement = placement;
        self.recomputed = workloads.len();
    }

    /// Places `workloads` on `nodes`, all of which the last call had: `kept` maps each of the
    /// last call's nodes to its index in `nodes`, or [`UNPLACED`] if it is gone.
    fn update(&mut self, workloads: &[&WorkloadReq], nodes: &[&NodeInfo], kept: &[u32]) {
        let index = NodeIndex::new(nodes);
        let mut fleet = Fleet::new(self.rule, nodes, &index);
        let old_nodes = std::mem::take(&mut self.nodes);
        let old_workloads = std::mem::take(&mut self.workloads);
        let mut old_outcomes = std::mem::take(&mut self.outcomes).into_iter();
        let mut replay = Replay {
            kept,
            lost: old_nodes.iter().zip(kept).filter(|(_, k)| **k == UNPLACED).map(|(n, _)| n).collect(),
            lost_verdicts: BTreeMap::new(),
            units: BTreeMap::new(),
            old_free: fleet.free.clone(),
            dirty: Vec::new(),
            is_dirty: vec![false; nodes.len()],
            balance: vec![0; nodes.len()],
        };
        let assignments = &mut self.placement.assignments;
        let mut failures_changed = false;
        let mut recomputed = 0;
        let mut outcomes = Vec::with_capacity(workloads.len());
        let mut old = old_workloads.iter().peekable();

        for &workload in workloads {
            // Workloads that are gone: their capacity is no longer taken.
            while let Some(gone) = old.next_if(|o| o.key < workload.key) {
                let before = old_outcomes.next().unwrap_or_default();
                replay.retire(gone, &before, &index, assignments);
                failures_changed |= !before.failures.is_empty();
            }
            let previous = old.next_if(|o| o.key == workload.key).map(|o| (o, old_outcomes.next().unwrap_or_default()));
            if let Some((o, before)) = &previous
                && *o == workload
                && let Some(outcome) = replay.reuse(workload, before, &mut fleet)
            {
                // Same slots on the same nodes: nothing changes but the indices.
                replay.take_old(o, before, &index);
                replay.take_new(workload, &outcome, &index, &mut fleet.free);
                outcomes.push(outcome);
                continue;
            }
            let mut outcome = Outcome::default();
            fleet.place(workload, &mut outcome);
            recomputed += 1;
            match &previous {
                Some((o, before)) => {
                    replay.take_old(o, before, &index);
                    replay.compare(o, before, workload, &outcome, &index);
                    failures_changed |= before.failures != outcome.failures;
                }
                None => {
                    replay.compare(workload, &Outcome::default(), workload, &outcome, &index);
                    failures_changed |= !outcome.failures.is_empty();
                }
            }
            update_slots(workload, previous.as_ref().map(|(_, before)| before), &outcome, kept, nodes, assignments);
            outcomes.push(outcome);
        }
        for gone in old {
            let before = old_outcomes.next().unwrap_or_default();
            replay.retire(gone, &before, &index, assignments);
            failures_changed |= !before.failures.is_empty();
        }

        if failures_changed {
            let unschedulable = &mut self.placement.unschedulable;
            unschedulable.clear();
            for (workload, outcome) in workloads.iter().zip(&outcomes) {
                emit_failures(workload, outcome, unschedulable);
            }
        }
        let mut old_nodes = old_nodes;
        let mut survives = kept.iter().map(|k| *k != UNPLACED);
        old_nodes.retain(|_| survives.next().unwrap_or(false));
        self.nodes = old_nodes;
        self.workloads = workloads.iter().map(|&w| w.clone()).collect();
        self.outcomes = outcomes;
        self.recomputed = recomputed;
    }
}

/// Places every workload on fresh nodes (both canonical): each workload's outcome, and the
/// placement.
pub(crate) fn place_all(rule: Rule, workloads: &[&WorkloadReq], nodes: &[&NodeInfo]) -> (Vec<Outcome>, Placement) {
    let index = NodeIndex::new(nodes);
    let mut fleet = Fleet::new(rule, nodes, &index);
    let slots: usize = workloads
        .iter()
        .map(|w| match w.kind {
            WorkloadKind::DaemonSet => nodes.len(),
            _ => w.replicas as usize,
        })
        .sum();
    let mut assigned = Vec::with_capacity(slots);
    let mut unschedulable = Vec::new();
    let mut outcomes = Vec::with_capacity(workloads.len());
    for &workload in workloads {
        let mut outcome = Outcome::default();
        fleet.place(workload, &mut outcome);
        emit(workload, &outcome, nodes, &mut assigned, &mut unschedulable);
        outcomes.push(outcome);
    }
    // Slots were produced in key order: the map is built in one pass.
    (outcomes, Placement { assignments: assigned.into_iter().collect(), unschedulable })
}

/// For each of `old`'s nodes, its index in `new`, or [`UNPLACED`] if it is gone; `None` if
/// `new` has a node `old` lacks or one that changed. Both canonical.
fn survivors(old: &[NodeInfo], new: &[&NodeInfo]) -> Option<Vec<u32>> {
    let mut kept = Vec::with_capacity(old.len());
    let mut new = (0u32..).zip(new).peekable();
    for node in old {
        match new.next_if(|(_, n)| n.id == node.id) {
            Some((i, n)) if *n == node => kept.push(i),
            Some(_) => return None,
            None => {
                if new.peek().is_some_and(|(_, n)| n.id < node.id) {
                    return None;
                }
                kept.push(UNPLACED);
            }
        }
    }
    new.next().is_none().then_some(kept)
}

/// The units of a filter with lost eligible nodes, now and before the loss (each in
/// canonical order), and for each unit before, its index now (`None`: it has no eligible
/// node left).
#[derive(Default)]
struct UnitsNowAndBefore {
    now: Vec<Unit>,
    before: Vec<Unit>,
    now_of: Vec<Option<usize>>,
    /// Eligible nodes now, and the fewest left in a unit that lost some.
    total_now: u32,
    least_left: u32,
}

/// What the lost nodes mean for the workloads with one filter (see [`Scheduler`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// None of them passed the filter.
    NoneEligible,
    /// Some passed, and each one's zone (or the zoneless kind) still has an eligible node;
    /// `remaining` nodes pass.
    Eligible { remaining: u32 },
    /// A lost eligible node was the last eligible one of its zone or kind.
    LastOfZone,
}

/// The last call's placement replayed beside the new one, workload by workload in key order.
struct Replay<'a> {
    /// Old canonical index to new canonical index, or [`UNPLACED`].
    kept: &'a [u32],
    /// The nodes that are gone.
    lost: Vec<&'a NodeInfo>,
    lost_verdicts: BTreeMap<FilterKey<'a>, Lost>,
    /// Per filter with lost eligible nodes, its units (by zone name) now and before.
    units: BTreeMap<FilterKey<'a>, UnitsNowAndBefore>,
    /// Free capacity per position as the last call had it at the same point in key order
    /// (the new one is the fleet's).
    old_free: Vec<Free>,
    /// Positions where the two free capacities may differ.
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
    /// Scratch per position, zero between uses.
    balance: Vec<i64>,
}

impl<'a> Replay<'a> {
    /// The position in the new index of old canonical node `old`, if it is still there.
    fn position(&self, old: u32, index: &NodeIndex<'_>) -> Option<usize> {
        let new = *self.kept.get(old as usize)?;
        (new != UNPLACED).then(|| index.position[new as usize] as usize)
    }

    fn mark(&mut self, position: usize) {
        if !self.is_dirty[position] {
            self.is_dirty[position] = true;
            self.dirty.push(position);
        }
    }

    /// `outcome`, `workload`'s slots last time, if they are provably its slots now; in new
    /// canonical indices.
    fn reuse(&mut self, workload: &'a WorkloadReq, outcome: &Outcome, fleet: &mut Fleet<'a>) -> Option<Outcome> {
        let index = fleet.index;
        let mut nodes = Vec::with_capacity(outcome.nodes.len());
        for &old in &outcome.nodes {
            nodes.push(if old == UNPLACED { UNPLACED } else { *self.kept.get(old as usize)? });
        }
        // A slot on a lost node moves.
        if nodes.iter().zip(&outcome.nodes).any(|(new, old)| *new == UNPLACED && *old != UNPLACED) {
            return None;
        }
        let daemon_set = workload.kind == WorkloadKind::DaemonSet;
        // Striped slots stay if the plan does; the others (homeless) if the spread floor does.
        let floor_kept = match self.lost(workload, fleet) {
            Lost::NoneEligible => true,
            // Losing an eligible node renumbers a daemon set's slots after it.
            Lost::Eligible { remaining } => {
                !daemon_set && (outcome.homeless == 0 || remaining >= workload.replicas) && self.same_quotas(workload)
            }
            Lost::LastOfZone => !daemon_set && outcome.homeless == 0 && self.same_quotas(workload),
        };
        // The reason of an unschedulable replica counts every node. (A daemon set's names its
        // node, whose capacity is checked below.)
        if !floor_kept || (!daemon_set && !outcome.failures.is_empty()) {
            return None;
        }
        // Nodes whose capacity differs must admit this workload exactly as before.
        self.dirty.retain(|&p| {
            let same = self.old_free[p] == fleet.free[p];
            if same {
                self.is_dirty[p] = false;
            }
            !same
        });
        if !self.dirty.is_empty() {
            for &new in nodes.iter().filter(|n| **n != UNPLACED) {
                self.balance[index.position[new as usize] as usize] += 1;
            }
            let passes = |fleet: &mut Fleet<'a>, p: usize| {
                if self.dirty.len() * 8 < fleet.nodes.len() {
                    static_passes(workload, fleet.nodes[index.order[p] as usize])
                } else {
                    fleet.statics(workload).passes[p]
                }
            };
            let mut same = true;
            for &p in &self.dirty {
                if !passes(fleet, p) {
                    continue;
                }
                let (old, new) = (&self.old_free[p], &fleet.free[p]);
                same &= if daemon_set {
                    old.admits(workload) == new.admits(workload)
                } else {
                    let limit = self.balance[p] as u64 + 1;
                    old.fits(workload, limit) == new.fits(workload, limit)
                };
            }
            for &new in nodes.iter().filter(|n| **n != UNPLACED) {
                self.balance[index.position[new as usize] as usize] = 0;
            }
            if !same {
                return None;
            }
        }
        Some(Outcome { nodes, failures: outcome.failures.clone(), homeless: outcome.homeless })
    }

    /// Whether `workload`'s zone quotas are those it had before the loss (its filter has lost
    /// eligible nodes: [`Replay::lost`] ran for it).
    fn same_quotas(&self, workload: &WorkloadReq) -> bool {
        let Some(units) = self.units.get(&filter_key(workload)) else {
            return false;
        };
        // Fewer replicas than eligible nodes, and than the nodes left in every unit that lost
        // some: no lap is full and no such unit runs out of seats, before or after.
        if workload.replicas < units.total_now && workload.replicas < units.least_left {
            return true;
        }
        let seeds = Seeds::new(&workload.key);
        let now = plan::quotas(workload.replicas, &units.now, &seeds);
        let before = plan::quotas(workload.replicas, &units.before, &seeds);
        before.iter().zip(&units.now_of).all(|(q, j)| *q == j.map_or(0, |j| now[j]))
    }

    /// What the lost nodes mean for `workload`'s filter, computed once per filter.
    fn lost(&mut self, workload: &'a WorkloadReq, fleet: &mut Fleet<'a>) -> Lost {
        let key = filter_key(workload);
        if let Some(verdict) = self.lost_verdicts.get(&key) {
            return *verdict;
        }
        let lost: Vec<&NodeInfo> = self.lost.iter().copied().filter(|n| static_passes(workload, n)).collect();
        let verdict = if lost.is_empty() {
            Lost::NoneEligible
        } else {
            let index = fleet.index;
            let statics = fleet.statics(workload);
            // The units now and before, zones by name, then the pool.
            let mut counts: BTreeMap<(bool, Option<&str>), (u32, u32)> = BTreeMap::new();
            for (unit, &zone) in statics.units.iter().zip(&statics.unit_zones) {
                let name = (zone != NO_ZONE).then(|| index.zone_names[zone as usize]);
                counts.insert((name.is_none(), name), (unit.eligible, unit.eligible));
            }
            for n in &lost {
                counts.entry((n.zone.is_none(), n.zone.as_deref())).or_default().1 += 1;
            }
            let mut units = UnitsNowAndBefore { least_left: u32::MAX, ..UnitsNowAndBefore::default() };
            for ((pool, name), (now, before)) in counts {
                units.total_now += now;
                if now < before {
                    units.least_left = units.least_left.min(now);
                }
                let unit = |eligible| Unit { eligible, hash: plan::unit_hash(name), pool };
                units.now_of.push((now > 0).then_some(units.now.len()));
                if now > 0 {
                    units.now.push(unit(now));
                }
                units.before.push(unit(before));
            }
            self.units.insert(key, units);
            if lost.iter().all(|n| index.zone(n.zone.as_deref()).is_some_and(|z| statics.covers_zone(z))) {
                Lost::Eligible { remaining: statics.eligible }
            } else {
                Lost::LastOfZone
            }
        };
        self.lost_verdicts.insert(key, verdict);
        verdict
    }

    /// Takes `outcome`'s slots (new canonical indices) from the new free capacity.
    fn take_new(&self, workload: &WorkloadReq, outcome: &Outcome, index: &NodeIndex<'_>, free: &mut [Free]) {
        for &new in outcome.nodes.iter().filter(|n| **n != UNPLACED) {
            free[index.position[new as usize] as usize].take(workload);
        }
    }

    /// Takes `outcome`'s slots (old canonical indices) on the nodes still there from the old
    /// free capacity.
    fn take_old(&mut self, workload: &WorkloadReq, outcome: &Outcome, index: &NodeIndex<'_>) {
        for &old in outcome.nodes.iter().filter(|n| **n != UNPLACED) {
            if let Some(p) = self.position(old, index) {
                self.old_free[p].take(workload);
            }
        }
    }

    /// A workload that is gone: its old slots leave the map, and their capacity differs.
    fn retire(
        &mut self,
        workload: &WorkloadReq,
        before: &Outcome,
        index: &NodeIndex<'_>,
        assignments: &mut BTreeMap<Slot, String>,
    ) {
        self.take_old(workload, before, index);
        self.compare(workload, before, workload, &Outcome::default(), index);
        for (slot_index, &old) in (0u32..).zip(&before.nodes) {
            if old != UNPLACED {
                assignments.remove(&Slot::new(workload.key.clone(), slot_index));
            }
        }
    }

    /// Marks the nodes where `after` (new indices, of `new`) takes other capacity than
    /// `before` (old indices, of `old`) did.
    fn compare(
        &mut self,
        old: &WorkloadReq,
        before: &Outcome,
        new: &WorkloadReq,
        after: &Outcome,
        index: &NodeIndex<'_>,
    ) {
        let same_need = (old.memory_mib, old.cpu_millis) == (new.memory_mib, new.cpu_millis);
        for &n in before.nodes.iter().filter(|n| **n != UNPLACED) {
            if let Some(p) = self.position(n, index) {
                self.balance[p] += 1;
            }
        }
        for &n in after.nodes.iter().filter(|n| **n != UNPLACED) {
            self.balance[index.position[n as usize] as usize] -= 1;
        }
        let touched = before
            .nodes
            .iter()
            .filter_map(|&n| if n == UNPLACED { None } else { self.position(n, index) })
            .chain(after.nodes.iter().filter(|n| **n != UNPLACED).map(|&n| index.position[n as usize] as usize))
            .collect::<Vec<usize>>();
        for p in touched {
            if self.balance[p] != 0 || !same_need {
                self.mark(p);
            }
            self.balance[p] = 0;
        }
    }
}

/// Brings `workload`'s entries in `assignments` from `before` (old canonical indices; `None`
/// for a new workload) to `after` (indices into `nodes`).
fn update_slots(
    workload: &WorkloadReq,
    before: Option<&Outcome>,
    after: &Outcome,
    kept: &[u32],
    nodes: &[&NodeInfo],
    assignments: &mut BTreeMap<Slot, String>,
) {
    let empty = Outcome::default();
    let before = before.unwrap_or(&empty);
    let slots = before.nodes.len().max(after.nodes.len());
    for slot_index in 0..slots {
        // The slot's node before (in new indices; `UNPLACED` if it is gone) and after.
        let old = before.nodes.get(slot_index).filter(|n| **n != UNPLACED).map(|&n| kept[n as usize]);
        let new = after.nodes.get(slot_index).filter(|n| **n != UNPLACED).copied();
        if old == new && old.is_none_or(|n| n != UNPLACED) {
            continue;
        }
        let slot = Slot::new(workload.key.clone(), slot_index as u32);
        match new {
            Some(n) => {
                assignments.insert(slot, nodes[n as usize].id.clone());
            }
            None => {
                assignments.remove(&slot);
            }
        }
    }
}
