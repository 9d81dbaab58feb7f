//! The log buffers of the replicas of this node, by owner and replica name. The reconciler
//! fills it; the log service ([`crate::control::logs`]) reads it, for local callers and for
//! peers, without holding the reconciler.

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;
use wasmfleet_runtime::LogBuffer;

use super::ReplicaKey;
use crate::manifest::ObjectKey;

/// Bytes of log kept per replica.
const LOG_BYTES: usize = 256 * 1024;

/// Log buffers of this node's replicas.
#[derive(Default)]
pub struct ReplicaLogs {
    by_owner: DashMap<ObjectKey, BTreeMap<String, Arc<LogBuffer>>>,
}

impl ReplicaLogs {
    /// The buffer of `key`'s replica, created on first use (it outlives restarts of the replica).
    pub fn buffer(&self, key: &ReplicaKey) -> Arc<LogBuffer> {
        let mut entry = self.by_owner.entry(key.owner.clone()).or_default();
        entry.entry(key.name()).or_insert_with(|| LogBuffer::new(LOG_BYTES)).clone()
    }

    /// Buffers of an object's replicas, by replica name.
    pub fn of(&self, owner: &ObjectKey) -> BTreeMap<String, Arc<LogBuffer>> {
        self.by_owner.get(owner).map(|l| l.clone()).unwrap_or_default()
    }

    /// Forgets the logs of objects that no longer exist.
    pub fn retain(&self, live: impl Fn(&ObjectKey) -> bool) {
        self.by_owner.retain(|k, _| live(k));
    }
}
