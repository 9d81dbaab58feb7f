//! The unit of placement: one replica of one workload.

use serde::{Deserialize, Serialize};

/// Replica `index` of the workload with key `key`.
///
/// Deployments and jobs have indices `0..replicas`. A daemon set has one slot per
/// eligible node, numbered `0..` in node-id order; that numbering shifts when eligible
/// nodes come or go, so callers should identify a daemon-set replica by its node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Slot {
    pub key: String,
    pub index: u32,
}

impl Slot {
    pub fn new(key: impl Into<String>, index: u32) -> Self {
        Self { key: key.into(), index }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.key, self.index)
    }
}
