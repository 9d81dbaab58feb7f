//! What the scheduler is asked to place.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// How many replica slots a workload has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum WorkloadKind {
    /// `replicas` slots, spread over nodes.
    Deployment,
    /// One slot per node that passes the selector and architecture filters.
    DaemonSet,
    /// Like a deployment: `replicas` slots run in parallel.
    Job,
}

/// One workload's placement request: its key, kind, size of one replica and filters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkloadReq {
    /// Unique key, e.g. `"Deployment/default/hello"`; also the canonical sort key.
    pub key: String,
    pub kind: WorkloadKind,
    /// Number of slots; ignored for [`WorkloadKind::DaemonSet`].
    pub replicas: u32,
    /// The size the placement is planned for, when larger than `replicas`: slots are placed
    /// as if the workload had `planned` of them, and the first `replicas` run (only they take
    /// capacity). While capacity does not bind, a workload that grows or shrinks within its
    /// plan keeps every slot where it was: a Deployment's revision sets are planned at the
    /// Deployment's size, so a rollout never moves a replica that stays.
    #[serde(default)]
    pub planned: u32,
    /// Memory one replica needs; 0 means it only takes an instance slot.
    pub memory_mib: u64,
    /// CPU one replica needs; 0 means it only takes an instance slot.
    pub cpu_millis: u64,
    /// Every pair must match a node label; the key `zone` also matches [`NodeInfo::zone`].
    ///
    /// [`NodeInfo::zone`]: crate::NodeInfo::zone
    pub node_selector: BTreeMap<String, String>,
    /// Required node architecture, if any.
    pub arch: Option<String>,
    /// When set, only these nodes may run it (by id): the nodes that hold the data of a
    /// volume it claims. Empty: none may (its volume's node is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<BTreeSet<String>>,
}
