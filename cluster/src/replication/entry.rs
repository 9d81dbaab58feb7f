//! The replicated record: one key's value (or tombstone), stamped with a [`Version`].

use serde::{Deserialize, Serialize};

use crate::Version;

/// The key of a replicated entry. The storage gives keys their meaning (the node uses
/// `Kind/namespace/name` for objects, `tag/<name>` and `job/<key>` for its other keyspaces).
pub type Key = String;

/// One key's state as it replicates: a value, or a tombstone for a delete, stamped with the
/// version of the write that made it.
///
/// In a last-writer-wins keyspace the version is that write's [`Hlc`](crate::Hlc) version, so
/// a tombstone replicates and wins like any write. In a join keyspace (see
/// [`Mode::Join`](super::Mode)) it is a fingerprint of the content instead: equal versions
/// mean equal content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<V> {
    pub key: Key,
    pub version: Version,
    /// A tombstone: the key was deleted at `version`. It may still carry a value holding what
    /// the storage keeps of a deleted key (the node keeps the object's generation).
    #[serde(default)]
    pub deleted: bool,
    pub value: Option<V>,
}

impl<V> Entry<V> {
    /// A live entry holding `value`.
    pub fn live(key: impl Into<Key>, version: Version, value: V) -> Self {
        Self { key: key.into(), version, deleted: false, value: Some(value) }
    }

    /// A tombstone: `key` was deleted at `version`.
    pub fn tombstone(key: impl Into<Key>, version: Version) -> Self {
        Self { key: key.into(), version, deleted: true, value: None }
    }

    /// The value of a live entry (`None` for tombstones).
    pub fn live_value(&self) -> Option<&V> {
        if self.deleted { None } else { self.value.as_ref() }
    }
}
