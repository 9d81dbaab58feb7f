//! A workload's plan before any node is chosen: how many of its slots each zone takes
//! (*quotas*), which slot goes to which zone, and how a zone's nodes split into *stripes*,
//! one per slot of the zone, labelled by the slot's index.
//!
//! A plan depends only on the workload and on how many nodes of each zone pass its static
//! filters, never on which nodes those are, so losing or gaining a node leaves it unchanged
//! unless a zone's count is what limits its quota (see `docs/architecture.md`).

use crate::hash::{Fnv1a, mix64};

/// A zone with eligible nodes, or the *pool* of eligible nodes without a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unit {
    /// Eligible nodes in it.
    pub eligible: u32,
    /// [`unit_hash`] of its name.
    pub hash: u64,
    /// Whether it is the pool of zoneless nodes.
    pub pool: bool,
}

/// The hash a zone (`Some(name)`) or the pool (`None`) is ranked by.
pub(crate) fn unit_hash(zone: Option<&str>) -> u64 {
    match zone {
        Some(name) => Fnv1a::default().field(b"zone").field(name.as_bytes()).finish(),
        None => Fnv1a::default().field(b"no zone").finish(),
    }
}

/// The hashes one workload's choices derive from, all from its key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seeds {
    key: Fnv1a,
    /// Ranks the zones for the seats of a partly filled level.
    pub zones: u64,
    /// Ranks a node within its stripe.
    pub stripes: u64,
    /// Draws the labels that put a node in a stripe.
    pub labels: u64,
    /// Orders the rendezvous groups.
    pub groups: u64,
}

impl Seeds {
    pub fn new(key: &str) -> Seeds {
        let key = Fnv1a::default().field(key.as_bytes());
        Seeds {
            key,
            zones: key.field(b"zones").finish(),
            stripes: key.field(b"stripes").finish(),
            labels: key.field(b"labels").finish(),
            groups: key.field(b"groups").finish(),
        }
    }

    /// The hash of slot `index`: it picks the slot's zone, and its node when the slot has no
    /// stripe to take one from.
    pub fn slot(&self, index: u32) -> u64 {
        self.key.u32(index).finish()
    }
}

/// A node's weight within its stripe for a workload (among the nodes of a stripe in one
/// group, the highest wins).
pub(crate) fn stripe_hash(seeds: &Seeds, node_hash: u64) -> u64 {
    mix64(seeds.stripes ^ node_hash)
}

/// Label draws a node makes before it falls back to rendezvous over its unit's slots.
pub(crate) const DRAWS: u64 = 256;

/// The splitmix64 increment, stepping a node's label draws.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The stripe of a node in `unit`: a slot index of that unit. The node draws slot indices
/// `0..replicas` from its own sequence (`slot_units[i]` is the unit of slot `i`) and takes
/// the first that is one of `labels` (the unit's slots, not empty); after [`DRAWS`] misses,
/// the slot of `labels` with the highest rendezvous weight.
///
/// Consistent: when the unit gains a slot, only nodes that now draw it (or weigh it highest)
/// move, all into its stripe; when it loses one, only that stripe's nodes move. So a change
/// of quotas never relabels the stripes of the slots that stay.
pub(crate) fn stripe(seeds: &Seeds, node_hash: u64, slot_units: &[u32], unit: u32, labels: &[u32]) -> u32 {
    if let [only] = labels {
        return *only;
    }
    let start = mix64(seeds.labels ^ node_hash);
    let replicas = slot_units.len() as u64;
    for t in 0..DRAWS {
        let draw = mix64(start.wrapping_add(t.wrapping_mul(GOLDEN)));
        let label = ((u128::from(draw) * u128::from(replicas)) >> 64) as u32;
        if slot_units.get(label as usize) == Some(&unit) {
            return label;
        }
    }
    let weight = |label: u32| (mix64(start ^ mix64(u64::from(label))), std::cmp::Reverse(label));
    labels.iter().copied().max_by_key(|&l| weight(l)).unwrap_or(0)
}

/// The weight of rendezvous group `salt` for a workload; groups are visited heaviest first.
pub(crate) fn group_weight(seeds: &Seeds, salt: u64) -> u64 {
    mix64(seeds.groups ^ salt)
}

/// How many of `replicas` slots each unit takes.
///
/// Every eligible node takes one replica per *lap*: `replicas / eligible` full laps, then
/// the rest as seats of the last lap, level by level. At level 0 every zone has one seat and
/// the pool one per node (zoneless nodes never share a zone); at level `j` every zone with
/// more than `j` eligible nodes has one more. Within a level, units take seats in descending
/// rank (`mix64(seeds.zones ^ hash)`, then the earlier unit); the pool's seats are taken
/// together. `units` in canonical order (zones by name, the pool last).
pub(crate) fn quotas(replicas: u32, units: &[Unit], seeds: &Seeds) -> Vec<u32> {
    let total: u64 = units.iter().map(|u| u64::from(u.eligible)).sum();
    let mut quotas = vec![0u32; units.len()];
    if total == 0 {
        return quotas;
    }
    let laps = u64::from(replicas) / total;
    let mut rest = u64::from(replicas) % total;
    for (q, u) in quotas.iter_mut().zip(units) {
        // At most `replicas`: fits.
        *q = (laps * u64::from(u.eligible)) as u32;
    }
    // Units by descending rank.
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(mix64(seeds.zones ^ units[i].hash)), i));
    // Level 0.
    for &i in &order {
        let seats = if units[i].pool { u64::from(units[i].eligible) } else { 1 };
        let take = seats.min(rest);
        quotas[i] += take as u32;
        rest -= take;
    }
    // Levels 1.. for zones, a run of full levels at a time: up to the next zone size, every
    // zone larger than the level has a seat.
    let mut level = 1u64;
    let active = |i: &usize, level: u64| !units[*i].pool && u64::from(units[*i].eligible) > level;
    while rest > 0 {
        let count = order.iter().filter(|i| active(i, level)).count() as u64;
        let Some(next) = order.iter().filter(|i| active(i, level)).map(|&i| u64::from(units[i].eligible)).min() else {
            // `rest < total` leaves a seat for every replica; not reached.
            break;
        };
        let full = (rest / count).min(next - level);
        for &i in order.iter().filter(|i| active(i, level)) {
            quotas[i] += full as u32;
        }
        rest -= full * count;
        if level + full < next {
            // A partly filled level.
            for &i in order.iter().filter(|i| active(i, level)).take(rest as usize) {
                quotas[i] += 1;
            }
            rest = 0;
        }
        level += full;
    }
    quotas
}

/// The unit of each slot: slot by slot in index order, the unit with quota left that has the
/// highest weight `mix64(slot hash ^ unit hash)` (then the earlier unit).
pub(crate) fn assign(quotas: &[u32], units: &[Unit], seeds: &Seeds) -> Vec<u32> {
    let replicas: u32 = quotas.iter().sum();
    let mut left = quotas.to_vec();
    let mut open = left.iter().filter(|q| **q > 0).count();
    let mut out = Vec::with_capacity(replicas as usize);
    for index in 0..replicas {
        let unit = if open == 1 {
            left.iter().position(|q| *q > 0).unwrap_or(0)
        } else {
            let slot = seeds.slot(index);
            let mut best = (0u64, usize::MAX);
            for (i, (u, q)) in units.iter().zip(&left).enumerate() {
                let weight = mix64(slot ^ u.hash);
                if *q > 0 && (best.1 == usize::MAX || weight > best.0) {
                    best = (weight, i);
                }
            }
            best.1
        };
        left[unit] -= 1;
        if left[unit] == 0 {
            open -= 1;
        }
        out.push(unit as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str, eligible: u32) -> Unit {
        Unit { eligible, hash: unit_hash(Some(name)), pool: false }
    }

    fn pool(eligible: u32) -> Unit {
        Unit { eligible, hash: unit_hash(None), pool: true }
    }

    #[test]
    fn quotas_fill_levels_then_laps() {
        let seeds = Seeds::new("w");
        let units = [zone("a", 3), zone("b", 1), zone("c", 2)];
        // 3 zones take one each, then the zones with a second node, then `a`'s third.
        assert_eq!(quotas(3, &units, &seeds), [1, 1, 1]);
        assert_eq!(quotas(5, &units, &seeds), [2, 1, 2]);
        assert_eq!(quotas(6, &units, &seeds), [3, 1, 2]);
        // Two laps, then level 0 of the third.
        let q = quotas(15, &units, &seeds);
        assert_eq!(q.iter().sum::<u32>(), 15);
        assert_eq!(q.iter().zip(&units).map(|(q, u)| q - 2 * u.eligible).sum::<u32>(), 3);
        assert!(q.iter().zip(&units).all(|(q, u)| (2 * u.eligible..=2 * u.eligible + 1).contains(q)));
    }

    #[test]
    fn quotas_seat_the_pool_at_level_zero() {
        let seeds = Seeds::new("w");
        let units = [zone("a", 5), zone("b", 5), pool(4)];
        // Up to zones + zoneless nodes, no zone takes two.
        for replicas in 0..=6 {
            let q = quotas(replicas, &units, &seeds);
            assert_eq!(q.iter().sum::<u32>(), replicas);
            assert!(q[0] <= 1 && q[1] <= 1, "{replicas}: {q:?}");
        }
        assert_eq!(quotas(8, &units, &seeds), [2, 2, 4]);
    }

    #[test]
    fn quotas_are_balanced_for_any_split() {
        let seeds = Seeds::new("Deployment/default/x");
        for a in 1..6 {
            for b in 1..6 {
                let units = [zone("a", a), zone("b", b)];
                for replicas in 0..=(a + b) {
                    let q = quotas(replicas, &units, &seeds);
                    assert_eq!(q.iter().sum::<u32>(), replicas);
                    // Water-filling: a zone below another's count is full.
                    for i in 0..2 {
                        for j in 0..2 {
                            assert!(q[i] + 1 >= q[j] || q[i] == units[i].eligible, "{units:?} {replicas} {q:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn assign_follows_quotas() {
        let seeds = Seeds::new("w");
        let units = [zone("a", 9), zone("b", 9), zone("c", 9)];
        let q = [3, 2, 4];
        let slots = assign(&q, &units, &seeds);
        for (u, quota) in (0u32..).zip(q) {
            assert_eq!(slots.iter().filter(|unit| **unit == u).count() as u32, quota);
        }
    }

    #[test]
    fn stripes_are_consistent_when_a_unit_gains_or_loses_a_slot() {
        let seeds = Seeds::new("w");
        // Slots 0..12 over units 0 and 1; then slot 5 moves from unit 0 to unit 1.
        let before: Vec<u32> = (0..12).map(|i| u32::from(i % 3 == 0)).collect();
        let mut after = before.clone();
        after[5] = 1;
        let labels =
            |units: &[u32], u: u32| (0u32..).zip(units).filter(|(_, x)| **x == u).map(|(i, _)| i).collect::<Vec<_>>();
        let mut moved = [0; 2];
        for node in 0..2000u64 {
            let h = mix64(node);
            for u in 0..2 {
                let (b, a) = (
                    stripe(&seeds, h, &before, u, &labels(&before, u)),
                    stripe(&seeds, h, &after, u, &labels(&after, u)),
                );
                assert_eq!(before[b as usize], u);
                assert_eq!(after[a as usize], u);
                if a != b {
                    moved[u as usize] += 1;
                    // Unit 0 lost slot 5: only its nodes move. Unit 1 gained it: nodes move there.
                    if u == 0 { assert_eq!(b, 5) } else { assert_eq!(a, 5) }
                }
            }
        }
        // About 1/8 of unit 0's nodes were in stripe 5; about 1/5 of unit 1's move into it.
        assert!((150..350).contains(&moved[0]), "{moved:?}");
        assert!((250..550).contains(&moved[1]), "{moved:?}");
    }
}
