//! The nodes of one placement in canonical order, and the layout the scan reads them in.

use std::ops::Range;

use crate::NodeInfo;
use crate::hash::{Fnv1a, mix64};

/// Fixed number of rendezvous groups (independent of the node count, so a node's group never
/// changes when others come or go).
pub const GROUPS: usize = 64;

/// `zones` value of a node without a zone.
pub(crate) const NO_ZONE: u32 = u32::MAX;

/// Sorts by full value and keeps the first item of each identity.
pub(crate) fn canonical<T: Ord>(items: &[T], id: impl Fn(&T) -> &String) -> Vec<&T> {
    let mut sorted: Vec<&T> = items.iter().collect();
    // Equal items are identical, so an unstable sort gives the same order.
    sorted.sort_unstable();
    sorted.dedup_by(|b, a| id(a) == id(b));
    sorted
}

/// Node hashes, zones and rendezvous groups, computed once per placement.
///
/// Nodes are numbered two ways. A *canonical index* is a node's place in id order (the order
/// of the `nodes` slice given to [`NodeIndex::new`]). A *position* is its place in the scan
/// layout: the nodes of group 0, then of group 1, and so on; within a group, zone by zone
/// (each zone a [`Bucket`]), each zone in canonical order. A slot scans one group at a time,
/// so what it reads is contiguous in memory, and all the nodes of a bucket share the zone
/// count that ranks them, so a bucket that cannot hold the best node is skipped whole. The
/// scan breaks exact ties by canonical index, so the layout does not change the result.
pub(crate) struct NodeIndex<'a> {
    /// Canonical index of the node at each position.
    pub order: Vec<u32>,
    /// Position of each canonical index.
    pub position: Vec<u32>,
    /// Id hash per position.
    pub hashes: Vec<u64>,
    /// Zone per position, as an index into `zone_names` ([`NO_ZONE`]: none).
    pub zones: Vec<u32>,
    /// The distinct zone names, sorted.
    pub zone_names: Vec<&'a str>,
    /// Salts of the non-empty groups, in group order.
    pub group_salts: Vec<u64>,
    /// The buckets of each non-empty group (a range of `buckets`), parallel to `group_salts`.
    pub group_buckets: Vec<Range<usize>>,
    pub buckets: Vec<Bucket>,
}

/// The members of one group in one zone: a range of positions.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    /// Zone id, or [`NO_ZONE`].
    pub zone: u32,
    pub members: Range<usize>,
}

impl<'a> NodeIndex<'a> {
    /// Indexes `nodes`, which must be in canonical order.
    pub fn new(nodes: &[&'a NodeInfo]) -> NodeIndex<'a> {
        let hashes: Vec<u64> = nodes.iter().map(|n| node_hash(&n.id)).collect();
        let mut by_group: Vec<Vec<u32>> = vec![Vec::new(); GROUPS];
        for (i, h) in (0u32..).zip(&hashes) {
            by_group[group_of(*h)].push(i);
        }
        let mut zone_names: Vec<&str> = nodes.iter().filter_map(|n| n.zone.as_deref()).collect();
        zone_names.sort_unstable();
        zone_names.dedup();
        let zone_of: Vec<u32> = nodes.iter().map(|n| zone_id(&zone_names, n.zone.as_deref())).collect();
        let mut order = Vec::with_capacity(nodes.len());
        let mut group_salts = Vec::new();
        let mut group_buckets = Vec::new();
        let mut buckets: Vec<Bucket> = Vec::new();
        for (g, mut members) in by_group.into_iter().enumerate() {
            if members.is_empty() {
                continue;
            }
            // Stable: each zone's members stay in canonical order.
            members.sort_by_key(|&i| zone_of[i as usize]);
            let first_bucket = buckets.len();
            for i in members {
                let zone = zone_of[i as usize];
                match buckets[first_bucket..].last_mut().filter(|b| b.zone == zone) {
                    Some(b) => b.members.end += 1,
                    None => buckets.push(Bucket { zone, members: order.len()..order.len() + 1 }),
                }
                order.push(i);
            }
            group_salts.push(mix64(0x9e37_79b9_7f4a_7c15 ^ g as u64));
            group_buckets.push(first_bucket..buckets.len());
        }
        let mut position = vec![0; nodes.len()];
        for (p, &i) in (0u32..).zip(&order) {
            position[i as usize] = p;
        }
        NodeIndex {
            hashes: order.iter().map(|&i| hashes[i as usize]).collect(),
            zones: order.iter().map(|&i| zone_of[i as usize]).collect(),
            order,
            position,
            zone_names,
            group_salts,
            group_buckets,
            buckets,
        }
    }

    /// The id of `zone` among this index's zones, [`NO_ZONE`] for none, `None` for a zone no
    /// node of this index is in.
    pub fn zone(&self, zone: Option<&str>) -> Option<u32> {
        match zone {
            None => Some(NO_ZONE),
            Some(name) => self.zone_names.binary_search(&name).ok().map(|z| z as u32),
        }
    }
}

fn zone_id(names: &[&str], zone: Option<&str>) -> u32 {
    zone.and_then(|z| names.binary_search(&z).ok()).map_or(NO_ZONE, |z| z as u32)
}

/// The hash of a node id that its rendezvous weights derive from.
fn node_hash(id: &str) -> u64 {
    Fnv1a::default().field(id.as_bytes()).finish()
}

/// The fixed group of a node id hash.
fn group_of(hash: u64) -> usize {
    (hash >> 58) as usize % GROUPS
}
