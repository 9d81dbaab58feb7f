//! What the scheduler knows about a node.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A node as advertised in gossip: identity, labels and total capacity.
///
/// Capacity fields are totals; the scheduler subtracts what it places itself.
/// Derived ordering (by `id` first) only serves to make the result independent of
/// input order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub zone: Option<String>,
    pub arch: String,
    pub memory_mib: u64,
    pub cpu_millis: u64,
    pub max_instances: u32,
}
