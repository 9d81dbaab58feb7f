//! `v1 PersistentVolumeClaim` and `storage.k8s.io/v1 StorageClass`: what a manifest says, and
//! the resolved settings a node acts on ([`ClaimSettings`]).
//!
//! Two classes are built in, and a `StorageClass` object may define more with either
//! provisioner and its own parameters:
//!
//! | class | provisioner | what it is |
//! |---|---|---|
//! | `local` (the default) | `wasmfleet.io/local` | a directory on the node where the claim is first used; the claim's replicas stay on that node |
//! | `replicated` | `wasmfleet.io/replicated` | the same, and the directory's changed files are shipped every `syncPeriod` to `replicas` other nodes; the replica restarts on the newest complete copy when its node dies |
//!
//! Parameters of the replicated provisioner: `replicas` (copies besides the writer's, default
//! 2) and `syncPeriod` (default `1s`). A StorageClass is cluster-scoped: it has no namespace.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::quantity::{parse_duration, parse_memory_bytes};
use super::types::{Ignored, ObjectMeta, Quantity};

/// The provisioner of node-local volumes.
pub const PROVISIONER_LOCAL: &str = "wasmfleet.io/local";
/// The provisioner of volumes copied to other nodes.
pub const PROVISIONER_REPLICATED: &str = "wasmfleet.io/replicated";
/// The class of a claim that names none.
pub const DEFAULT_CLASS: &str = "local";
/// Copies a replicated volume keeps besides its writer's, unless its class says otherwise.
pub const DEFAULT_COPIES: u32 = 2;
/// How often a replicated volume's changes are shipped, unless its class says otherwise.
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PersistentVolumeClaim {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ClaimSpec,
    #[serde(default, skip_serializing)]
    pub status: Ignored,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ClaimResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// `Filesystem` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
    // Unsupported, each named with a reason by the validator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_source: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_source_ref: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_attributes_class_name: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<StorageList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<StorageList>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StorageList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Quantity>,
}

/// A pod volume's `persistentVolumeClaim` source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimVolumeSource {
    pub claim_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StorageClass {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub provisioner: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// `Retain` (the default here) or `Delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaim_policy: Option<String>,
    /// `WaitForFirstConsumer` or `Immediate`: either way a claim binds where it is first used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_binding_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_volume_expansion: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_options: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_topologies: Option<Value>,
}

/// How a claim may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AccessMode {
    /// One replica writes (`ReadWriteOnce`, `ReadWriteOncePod`).
    ReadWriteOnce,
    /// Any number of replicas read, none writes.
    ReadOnlyMany,
}

impl AccessMode {
    pub fn parse(s: &str) -> Result<AccessMode, String> {
        match s {
            "ReadWriteOnce" | "ReadWriteOncePod" => Ok(AccessMode::ReadWriteOnce),
            "ReadOnlyMany" => Ok(AccessMode::ReadOnlyMany),
            "ReadWriteMany" => Err("ReadWriteMany is not supported: a volume has one writer at a time; use \
                                    ReadWriteOnce, or a wasi:keyvalue bucket for state many replicas write"
                .into()),
            other => {
                Err(format!("unknown access mode {other:?}: expected ReadWriteOnce, ReadWriteOncePod or ReadOnlyMany"))
            }
        }
    }

    /// Kubernetes' short form (`RWO`, `ROX`).
    pub fn short(self) -> &'static str {
        match self {
            AccessMode::ReadWriteOnce => "RWO",
            AccessMode::ReadOnlyMany => "ROX",
        }
    }
}

/// Where a class keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Provisioner {
    Local,
    Replicated,
}

impl Provisioner {
    pub fn parse(s: &str) -> Result<Provisioner, String> {
        match s {
            PROVISIONER_LOCAL => Ok(Provisioner::Local),
            PROVISIONER_REPLICATED => Ok(Provisioner::Replicated),
            other => {
                Err(format!("unknown provisioner {other:?}: expected {PROVISIONER_LOCAL} or {PROVISIONER_REPLICATED}"))
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provisioner::Local => PROVISIONER_LOCAL,
            Provisioner::Replicated => PROVISIONER_REPLICATED,
        }
    }
}

/// What happens to a volume's data when its claim is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reclaim {
    /// The data stays (the volume is `Released`) until the volume is deleted.
    #[default]
    Retain,
    /// The data is deleted on every node with the claim.
    Delete,
}

impl Reclaim {
    pub fn parse(s: &str) -> Result<Reclaim, String> {
        match s {
            "Retain" => Ok(Reclaim::Retain),
            "Delete" => Ok(Reclaim::Delete),
            "Recycle" => Err("Recycle is deprecated in Kubernetes and not supported: use Delete".into()),
            other => Err(format!("unknown reclaim policy {other:?}: expected Retain or Delete")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reclaim::Retain => "Retain",
            Reclaim::Delete => "Delete",
        }
    }
}

/// A storage class, resolved: built in or from a `StorageClass` object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClassSettings {
    pub name: String,
    pub provisioner: Provisioner,
    /// Copies besides the writer's (replicated only).
    pub copies: u32,
    pub sync_period: Duration,
    pub reclaim: Reclaim,
}

impl ClassSettings {
    /// The built-in class of that name.
    pub fn builtin(name: &str) -> Option<ClassSettings> {
        let provisioner = match name {
            "local" => Provisioner::Local,
            "replicated" => Provisioner::Replicated,
            _ => return None,
        };
        Some(ClassSettings {
            name: name.to_string(),
            provisioner,
            copies: DEFAULT_COPIES,
            sync_period: DEFAULT_SYNC_PERIOD,
            reclaim: Reclaim::Retain,
        })
    }
}

impl StorageClass {
    /// The settings of a validated class (values that do not parse take their defaults).
    pub fn settings(&self) -> ClassSettings {
        let p = &self.parameters;
        ClassSettings {
            name: self.metadata.name.clone().unwrap_or_default(),
            provisioner: Provisioner::parse(&self.provisioner).unwrap_or(Provisioner::Local),
            copies: p.get("replicas").and_then(|r| r.parse().ok()).unwrap_or(DEFAULT_COPIES),
            sync_period: p.get("syncPeriod").and_then(|s| parse_duration(s).ok()).unwrap_or(DEFAULT_SYNC_PERIOD),
            reclaim: self.reclaim_policy.as_deref().and_then(|r| Reclaim::parse(r).ok()).unwrap_or_default(),
        }
    }
}

impl PersistentVolumeClaim {
    /// The class it names (`local` when none).
    pub fn class_name(&self) -> &str {
        match self.spec.storage_class_name.as_deref() {
            None | Some("") => DEFAULT_CLASS,
            Some(c) => c,
        }
    }

    /// Its access mode: read-only for many only when that is all it asks.
    pub fn access(&self) -> AccessMode {
        let modes: Vec<AccessMode> = self.spec.access_modes.iter().filter_map(|m| AccessMode::parse(m).ok()).collect();
        if !modes.is_empty() && modes.iter().all(|m| *m == AccessMode::ReadOnlyMany) {
            AccessMode::ReadOnlyMany
        } else {
            AccessMode::ReadWriteOnce
        }
    }

    /// `resources.requests.storage` in bytes (0: none asked).
    pub fn capacity_bytes(&self) -> u64 {
        self.spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.storage.as_ref())
            .and_then(|q| parse_memory_bytes(&q.0).ok())
            .unwrap_or(0)
    }

    /// `resources.requests.storage` as written.
    pub fn capacity_text(&self) -> String {
        self.spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.storage.as_ref())
            .map(|q| q.0.clone())
            .unwrap_or_default()
    }
}
