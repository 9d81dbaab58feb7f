//! A replicated value for tests: text under last-writer-wins keys, and a grow-only set of
//! small numbers under `set/` keys (a join keyspace, as the node's Job records are).

use serde::{Deserialize, Serialize};
use wasmfleet_cluster::Version;
use wasmfleet_cluster::replication::{Entry, Merge, Mode};

/// Prefix of the join keyspace.
pub const SET_PREFIX: &str = "set/";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Val {
    Text(u32),
    /// A set of numbers below 64, as a bit mask.
    Set(u64),
}

/// The fingerprint of a set: a function of the content alone, and distinct for distinct
/// sets (the mask is in it whole).
pub fn fingerprint(mask: u64) -> Version {
    Version { wall_ms: u64::from(mask.count_ones()), counter: 0, node: mask }
}

impl Merge for Val {
    fn mode(key: &str) -> Mode {
        if key.starts_with(SET_PREFIX) { Mode::Join } else { Mode::Lww }
    }

    fn join(&mut self, other: &Self) -> Option<Version> {
        match (self, other) {
            (Val::Set(mine), Val::Set(theirs)) if *mine | *theirs != *mine => {
                *mine |= *theirs;
                Some(fingerprint(*mine))
            }
            _ => None,
        }
    }
}

/// The entry of a set key holding `mask`.
pub fn set_entry(key: &str, mask: u64) -> Entry<Val> {
    Entry::live(key, fingerprint(mask), Val::Set(mask))
}
