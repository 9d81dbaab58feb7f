//! Volume records: which node writes each persistent volume, under which epoch, and whether
//! its claim still exists. Written by the node that binds a claim (where it is first used),
//! by the node that takes a replicated volume over when its writer died, and by the volume's
//! keeper when the claim is deleted; read by every node to place the claim's replicas.
//!
//! Replicated as last writer wins by the record's own sequence (every write takes the number
//! after the record it was computed from), then the epoch, then the writer's id, as rollout
//! records are. A node that comes back after its volume moved holds a record with a lower
//! sequence and epoch: it defers to the fleet's, and the nodes that hold copies refuse what it
//! ships (fencing, see `reconcile::claims`).

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use wasmfleet_cluster::Version;

use super::rollout::version_of;
use super::store::VOLUMES;
use super::{Store, StoreError};
use crate::manifest::ObjectKey;
use crate::manifest::storage::{AccessMode, ClassSettings};

/// Summary-key prefix of volume records (`volume/<volume name>`).
pub const VOLUME_PREFIX: &str = "volume/";

/// Where a volume is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumePhase {
    /// Its claim exists; `node` writes it.
    Bound,
    /// Its claim was deleted and its class retains the data.
    Released,
    /// Its data is deleted on every node.
    Deleted,
}

impl VolumePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumePhase::Bound => "Bound",
            VolumePhase::Released => "Released",
            VolumePhase::Deleted => "Deleted",
        }
    }
}

/// One persistent volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// `pvc-<16 hex>`, from the claim's key and creation time.
    pub name: String,
    /// The claim (`PersistentVolumeClaim/<ns>/<name>`).
    pub claim: ObjectKey,
    /// The class as it was when the claim was bound.
    pub class: ClassSettings,
    pub access: AccessMode,
    pub capacity_bytes: u64,
    /// The node whose copy is the volume: the one it is bound to (local), the writer
    /// (replicated).
    pub node: String,
    /// Bumped whenever `node` changes.
    pub epoch: u64,
    /// Bumped on every write.
    pub seq: u64,
    pub phase: VolumePhase,
    /// When the claim was bound (wall ms).
    pub bound_ms: u64,
    /// When this record was written (wall ms).
    pub changed_ms: u64,
}

impl VolumeRecord {
    /// The record's replication version: sequence, then epoch, then writer.
    pub fn version(&self) -> Version {
        version_of(self.seq, self.epoch, &self.node)
    }
}

/// What a summary reads of a stored record.
#[derive(Deserialize)]
pub(super) struct VolumeStamp {
    seq: u64,
    epoch: u64,
    node: String,
}

impl VolumeStamp {
    pub(super) fn version(&self) -> Version {
        version_of(self.seq, self.epoch, &self.node)
    }
}

/// The volume name of the claim `key` created at `created_ms`: a claim deleted and created
/// again gets a new volume, as in Kubernetes.
pub fn volume_name(key: &ObjectKey, created_ms: u64) -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(format!("{key}@{created_ms}").as_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("pvc-{hex}")
}

impl Store {
    /// Every volume record, by volume name.
    pub fn volume_records(&self) -> Result<BTreeMap<String, VolumeRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let t = txn.open_table(VOLUMES).map_err(|e| self.db_err(e))?;
        let mut out = BTreeMap::new();
        for row in t.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let rec: VolumeRecord = serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                key: format!("{VOLUME_PREFIX}{}", k.value()),
                reason: e.to_string(),
            })?;
            out.insert(k.value().to_string(), rec);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;

    #[test]
    fn a_claim_created_again_gets_a_new_volume() {
        let key = ObjectKey::new(Kind::PersistentVolumeClaim, "default", "data");
        let a = volume_name(&key, 1000);
        assert_eq!(a, volume_name(&key, 1000));
        assert_ne!(a, volume_name(&key, 1001));
        assert!(a.starts_with("pvc-") && a.len() == 20, "{a}");
    }

    #[test]
    fn a_summary_reads_the_same_version_as_the_record_gives() {
        let rec = VolumeRecord {
            name: "pvc-0123456789abcdef".into(),
            claim: ObjectKey::new(Kind::PersistentVolumeClaim, "default", "data"),
            class: ClassSettings::builtin("replicated").unwrap(),
            access: AccessMode::ReadWriteOnce,
            capacity_bytes: 1 << 20,
            node: "node-b".into(),
            epoch: 2,
            seq: 5,
            phase: VolumePhase::Bound,
            bound_ms: 1,
            changed_ms: 2,
        };
        let stamp: VolumeStamp = serde_json::from_slice(&serde_json::to_vec(&rec).unwrap()).unwrap();
        assert_eq!(stamp.version(), rec.version());
        let takeover = VolumeRecord { seq: 6, epoch: 3, node: "node-a".into(), ..rec.clone() };
        assert!(takeover.version() > rec.version());
    }
}
