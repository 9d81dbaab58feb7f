//! The node's durable state: desired objects, module tags, Job records and module blobs
//! ([`store`]), the store as a replica of the cluster's desired state ([`replica`]), and the
//! one way this node writes a small private file.

pub mod replica;
pub mod store;

use std::path::Path;

use anyhow::{Context as _, Result};

pub use replica::Record;
pub use store::{
    ApplyAction, BlobWriter, JOB_PREFIX, JobRecord, MAX_MODULE_BYTES, ModuleRecord, Store, StoreError, StoredObject,
    TAG_PREFIX,
};

/// Writes a file readable by its owner only (0600), atomically (temporary name, fsync, rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
