//! Rollout records: the revision sets of each Deployment and their sizes, written by the
//! Deployment's coordinator and read by every node (see `reconcile::rollouts`).
//!
//! Replicated as last writer wins, ordered by the record's own sequence number (every write
//! takes the number after the record it was computed from), then the coordinator's epoch and
//! id. A node that comes back with an old record and writes a decision computed from it writes
//! a number below the fleet's, and loses: a stale coordinator cannot roll a fleet back.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use wasmfleet_cluster::Version;
use wasmfleet_runtime::Digest;
use wasmfleet_scheduler::rollout;

use super::store::ROLLOUTS;
use super::{Store, StoreError};
use crate::manifest::ObjectKey;

/// Summary-key prefix of rollout records (`rollout/<Kind>/<ns>/<name>`).
pub const ROLLOUT_PREFIX: &str = "rollout/";

/// The template of one revision set, kept so that the set can run (and be rolled back to)
/// after the Deployment's spec has moved on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevisionTemplate {
    /// `spec.template` as the user wrote it (Kubernetes JSON).
    pub template: serde_json::Value,
    /// Its images, resolved to digests when it was applied.
    #[serde(default)]
    pub resolved: BTreeMap<String, Digest>,
}

/// A Deployment's rollout, as its coordinator last decided it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// Bumped on every write.
    pub seq: u64,
    /// Bumped whenever a different node writes (a new coordinator).
    pub epoch: u64,
    pub coordinator: String,
    /// The Deployment's generation the record was computed for (`observedGeneration`).
    pub generation: u64,
    pub state: rollout::State,
    /// Templates of the sets in `state`, by hash.
    pub templates: BTreeMap<String, RevisionTemplate>,
    /// A Rollout's canary or blue/green progress (None for a Deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<rollout::progressive::Progress>,
    /// The size an autoscaler set, and what it needs to continue (see
    /// `reconcile::autoscale`). Written by the same coordinator as the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Box<AutoscaleState>>,
}

/// An autoscaler's decisions about its target, kept with the target's rollout so that the
/// node deciding both (the target's coordinator) writes them together, and a successor
/// continues the stabilization windows and scaling policies where they were.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AutoscaleState {
    /// The autoscaler (`HorizontalPodAutoscaler/ns/name`).
    pub hpa: String,
    /// The replicas it set.
    pub replicas: u32,
    /// The target's `spec.replicas` when it did: a different one since is a manual scale,
    /// which the target runs until the autoscaler's next sync corrects it (as in Kubernetes).
    pub spec_replicas: u32,
    pub history: wasmfleet_scheduler::autoscale::History,
    pub last_sync_ms: u64,
    /// When the size last changed (`status.lastScaleTime`).
    pub last_scale_ms: u64,
    pub conditions: Vec<wasmfleet_scheduler::autoscale::Condition>,
    pub metrics: Vec<wasmfleet_scheduler::autoscale::MetricStatus>,
    /// Recent scaling events, newest last: (wall ms, message).
    pub events: Vec<(u64, String)>,
}

impl AutoscaleState {
    /// The size a target whose own `spec.replicas` is `spec_replicas` runs by this state:
    /// the autoscaler's, unless the target was scaled by hand since (None).
    pub fn size_for(&self, spec_replicas: u32) -> Option<u32> {
        (self.spec_replicas == spec_replicas).then_some(self.replicas)
    }
}

impl RolloutRecord {
    /// The record's replication version: sequence, then epoch, then writer.
    pub fn version(&self) -> Version {
        version_of(self.seq, self.epoch, &self.coordinator)
    }
}

/// What a summary reads of a stored record: enough for its version, without the sets and
/// templates (summaries run every anti-entropy round).
#[derive(Deserialize)]
pub(super) struct RolloutStamp {
    seq: u64,
    epoch: u64,
    coordinator: String,
}

impl RolloutStamp {
    pub(super) fn version(&self) -> Version {
        version_of(self.seq, self.epoch, &self.coordinator)
    }
}

/// A decision record's version: its sequence, then epoch, then a hash of its writer.
pub(super) fn version_of(seq: u64, epoch: u64, coordinator: &str) -> Version {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(coordinator.as_bytes());
    let mut node = [0u8; 8];
    node.copy_from_slice(&hash[..8]);
    Version { wall_ms: seq, counter: u32::try_from(epoch).unwrap_or(u32::MAX), node: u64::from_be_bytes(node) }
}

impl Store {
    pub fn rollout_record(&self, key: &ObjectKey) -> Result<Option<RolloutRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let t = txn.open_table(ROLLOUTS).map_err(|e| self.db_err(e))?;
        let k = key.to_string();
        match t.get(k.as_str()).map_err(|e| self.db_err(e))? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| StoreError::Corrupt { key: format!("{ROLLOUT_PREFIX}{k}"), reason: e.to_string() }),
            None => Ok(None),
        }
    }

    /// Every rollout record, by Deployment.
    pub fn rollout_records(&self) -> Result<BTreeMap<ObjectKey, RolloutRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let t = txn.open_table(ROLLOUTS).map_err(|e| self.db_err(e))?;
        let mut out = BTreeMap::new();
        for row in t.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let key: ObjectKey = k.value().parse().map_err(|e: String| StoreError::Corrupt {
                key: format!("{ROLLOUT_PREFIX}{}", k.value()),
                reason: e,
            })?;
            let rec = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::Corrupt { key: format!("{ROLLOUT_PREFIX}{key}"), reason: e.to_string() })?;
            out.insert(key, rec);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_reads_the_same_version_as_the_record_gives() {
        let rec = RolloutRecord {
            seq: 42,
            epoch: 3,
            coordinator: "node-b".into(),
            generation: 7,
            state: rollout::State::default(),
            templates: BTreeMap::new(),
            progress: None,
            autoscale: None,
        };
        let stamp: RolloutStamp = serde_json::from_slice(&serde_json::to_vec(&rec).unwrap()).unwrap();
        assert_eq!(stamp.version(), rec.version());
        let later = RolloutRecord { seq: 43, epoch: 1, ..rec.clone() };
        assert!(later.version() > rec.version(), "the sequence orders records before the epoch");
    }
}
