//! The storage a [`Replicator`](super::Replicator) replicates: a durable map of [`Entry`]s.
//!
//! The shape follows raft-rs's `Storage`: the protocol asks, the storage answers from its own
//! tables. Every method returns a `Result`; a failed read is an error for the caller to
//! report, never an empty answer (an empty summary would make a node look like it lacks
//! everything, and an empty read would acknowledge a write that was not sent).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::entry::{Entry, Key};
use super::merge::Merge;
use super::summary::{Summary, SummaryDigest};

/// A node's durable replica of the replicated map.
///
/// Calls are synchronous and may block on the disk (the node's store fsyncs each merge);
/// the replicator makes them from its tasks, as the node's own writes do.
pub trait Storage: Send + Sync + 'static {
    /// What the entries hold; it says how it merges ([`Merge`]) and crosses the wire with
    /// serde (MessagePack).
    type Value: Merge + Serialize + DeserializeOwned + Send + Sync + 'static;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Every key held (tombstones included) with its version.
    fn summary(&self) -> Result<Summary, Self::Error>;

    /// The digest of [`Storage::summary`], published in gossip. Override it if the storage
    /// can keep it current more cheaply.
    fn digest(&self) -> Result<SummaryDigest, Self::Error> {
        Ok(self.summary()?.digest())
    }

    /// The entries of `keys` (tombstones included); keys not held are left out.
    fn read(&self, keys: &[Key]) -> Result<Vec<Entry<Self::Value>>, Self::Error>;

    /// Merges entries from a peer, durably, before returning: each key ends as
    /// [`resolve`](super::resolve) says (the implementation calls it with its local entry, in
    /// one transaction with the write). Returns how many keys changed.
    fn merge(&self, batch: Vec<Entry<Self::Value>>) -> Result<usize, Self::Error>;
}
