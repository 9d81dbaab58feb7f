//! The node's durable state: desired objects, module tags, Job records and module blobs
//! ([`store`]), the store as a replica of the cluster's desired state ([`replica`]), and the
//! one way this node writes a small private file.

pub mod copies;
pub mod replica;
pub mod rollout;
pub mod store;
pub mod volume;

use std::path::Path;

use anyhow::{Context as _, Result};

pub use replica::Record;
pub use rollout::{AutoscaleState, ROLLOUT_PREFIX, RevisionTemplate, RolloutRecord};
pub use store::{
    ApplyAction, BlobWriter, JOB_PREFIX, JobRecord, MAX_MODULE_BYTES, ModuleRecord, Store, StoreError, StoredObject,
    TAG_PREFIX,
};
pub use volume::{VOLUME_PREFIX, VolumePhase, VolumeRecord, volume_name};

/// Writes a file readable by its owner only (0600), atomically and durably
/// ([`wasmfleet_durable::write`]).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    wasmfleet_durable::write(path, bytes, wasmfleet_durable::PRIVATE)
        .with_context(|| format!("writing {}", path.display()))
}
