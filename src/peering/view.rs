//! What nodes publish about themselves in gossip, and how this node sees its peers.
//!
//! Chitchat values are strings and every node holds every node's values, so these records are
//! compact (short field names) and typed: a peer's replica phase is a [`ReplicaPhase`], never
//! text to match.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use wasmfleet_cluster::membership::MemberState;

/// The phase of a replica, as published in gossip and shown by the API. Serialised as its
/// name (`"Running"`), the form earlier versions published as text; a name this version does
/// not know reads as [`ReplicaPhase::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplicaPhase {
    /// Starting, or a command waiting for its first run.
    Pending,
    Running,
    /// An HTTP replica whose readiness probe does not pass.
    NotReady,
    /// A command that exited 0 and will not restart.
    Succeeded,
    /// A command that failed and will not restart.
    Failed,
    /// A command waiting to restart after repeated quick failures.
    CrashLoopBackOff,
    Stopped,
    #[serde(other)]
    Unknown,
}

impl ReplicaPhase {
    /// The replica occupies its slot: it runs, or is about to.
    pub fn is_active(self) -> bool {
        matches!(self, ReplicaPhase::Running | ReplicaPhase::Pending | ReplicaPhase::NotReady)
    }

    /// A command's phase, from the runtime's.
    pub fn of_command(phase: wasmfleet_runtime::Phase) -> ReplicaPhase {
        use wasmfleet_runtime::Phase;
        match phase {
            Phase::Pending => ReplicaPhase::Pending,
            Phase::Running => ReplicaPhase::Running,
            Phase::Succeeded => ReplicaPhase::Succeeded,
            Phase::Failed => ReplicaPhase::Failed,
            Phase::CrashLoopBackOff => ReplicaPhase::CrashLoopBackOff,
            Phase::Stopped => ReplicaPhase::Stopped,
        }
    }
}

impl std::fmt::Display for ReplicaPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// What this node publishes about itself in gossip (key `info`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub cluster: String,
    pub api: String,
    pub gateway: String,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub memory_mib: u64,
    pub cpu_millis: u64,
    /// Replicas this node can run at once (Wasm instance slots).
    #[serde(default)]
    pub max_instances: u32,
    pub arch: String,
    pub version: String,
    pub started_ms: u64,
    /// UDP ports of the data-plane lanes on the cluster address, by lane index (none: the
    /// cluster endpoint serves forwarded requests alone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lanes: Vec<u16>,
    /// The placement rule this node places by; absent from nodes of releases before the rule
    /// was published (they place by [`wasmfleet_scheduler::Rule::SlotOrder`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<wasmfleet_scheduler::Rule>,
}

/// A replica as a node publishes it in gossip (key `replicas`, a JSON list): short field
/// names keep the value small (chitchat values must stay far below 64 KB).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GossipReplica {
    /// Owner object key, `Kind/namespace/name`.
    #[serde(rename = "o")]
    pub owner: String,
    #[serde(rename = "i")]
    pub index: u32,
    #[serde(rename = "n")]
    pub name: String,
    #[serde(rename = "r")]
    pub revision: String,
    #[serde(rename = "p")]
    pub phase: ReplicaPhase,
    #[serde(rename = "y")]
    pub ready: bool,
    #[serde(rename = "c", default)]
    pub restarts: u32,
    /// Serves HTTP (a `wasi:http/proxy` component).
    #[serde(rename = "h", default)]
    pub http: bool,
    #[serde(rename = "s", default)]
    pub started_ms: u64,
    /// Requests in flight (HTTP replicas).
    #[serde(rename = "f", default)]
    pub in_flight: u32,
    /// Wall time (ms) since which the replica has been ready; 0 while it is not
    /// (`minReadySeconds` counts from here).
    #[serde(rename = "a", default, skip_serializing_if = "is_zero")]
    pub ready_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// What a node publishes of one replica: averages over its target's sync period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaMetrics {
    /// Guest time, in millicores.
    #[serde(rename = "c")]
    pub cpu_millicores: f64,
    /// Linear memory in use, in bytes.
    #[serde(rename = "m")]
    pub memory_bytes: f64,
    /// Requests per second.
    #[serde(rename = "r")]
    pub requests_per_second: f64,
    /// Requests in flight, on average.
    #[serde(rename = "q")]
    pub concurrency: f64,
}

impl ReplicaMetrics {
    pub(crate) fn value(&self, metric: &str) -> Option<f64> {
        match metric {
            "cpu" => Some(self.cpu_millicores),
            "memory" => Some(self.memory_bytes),
            "requests_per_second" => Some(self.requests_per_second),
            "concurrency" => Some(self.concurrency),
            _ => None,
        }
    }

    /// Rounded to what a decision can tell apart (keeps the gossip value short and steady).
    pub(crate) fn rounded(self) -> ReplicaMetrics {
        let r = |v: f64| if v >= 100.0 { v.round() } else { (v * 100.0).round() / 100.0 };
        ReplicaMetrics {
            cpu_millicores: r(self.cpu_millicores),
            memory_bytes: (self.memory_bytes / 1024.0).round() * 1024.0,
            requests_per_second: r(self.requests_per_second),
            concurrency: r(self.concurrency),
        }
    }
}

/// A copy of a volume on one node, as the node publishes it in gossip (key `vols`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeCopy {
    /// Volume name.
    #[serde(rename = "v")]
    pub volume: String,
    /// The writer's epoch the copy was made under.
    #[serde(rename = "e")]
    pub epoch: u64,
    /// The snapshot sequence the copy holds.
    #[serde(rename = "s")]
    pub seq: u64,
    /// Whether the copy holds the whole snapshot `seq` (false while one is being applied).
    #[serde(rename = "c")]
    pub complete: bool,
    /// Bytes of data in it.
    #[serde(rename = "b")]
    pub bytes: u64,
    /// When the writer read the snapshot it holds (wall ms).
    #[serde(rename = "t")]
    pub taken_ms: u64,
}

impl VolumeCopy {
    /// Copies order by epoch, then sequence: the newest is the greatest.
    pub fn freshness(&self) -> (u64, u64) {
        (self.epoch, self.seq)
    }
}

/// Another node as seen through gossip, with what it runs.
#[derive(Clone, Debug)]
pub struct PeerView {
    pub name: String,
    pub state: MemberState,
    pub cluster: Option<SocketAddr>,
    pub info: Option<NodeInfo>,
    pub replicas: Vec<GossipReplica>,
    /// Its gateways' request figures for the revisions under analysis (key `rstats`).
    pub figures: BTreeMap<String, crate::dataplane::revisions::RevisionFigures>,
    /// Its replicas' figures for autoscaling, by replica name (key `rmetrics`).
    pub metrics: std::collections::HashMap<String, ReplicaMetrics>,
    /// The persistent volumes it holds (key `vols`).
    pub volumes: Vec<VolumeCopy>,
}

/// A node as the API reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub state: String,
    pub info: Option<NodeInfo>,
    pub generation: u64,
    pub in_sync: bool,
    pub this_node: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_read_as_earlier_versions_wrote_them() {
        let old = r#"[{"o":"Job/default/j","i":0,"n":"j-0","r":"abc","p":"Running","y":true},
                      {"o":"Job/default/j","i":1,"n":"j-1","r":"abc","p":"Starting","y":false}]"#;
        let replicas: Vec<GossipReplica> = serde_json::from_str(old).unwrap();
        assert_eq!(replicas[0].phase, ReplicaPhase::Running);
        assert!(replicas[0].phase.is_active());
        assert_eq!(replicas[1].phase, ReplicaPhase::Unknown);
        let back = serde_json::to_string(&replicas[0]).unwrap();
        assert!(back.contains(r#""p":"Running""#), "{back}");
    }
}
