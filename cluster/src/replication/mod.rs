//! Replication of the desired-state store: a map of versioned entries that every node holds
//! whole and that converges on every node that can talk to the others.
//!
//! - [`Entry`] is one key's value or tombstone with its [`Version`](crate::Version); the one
//!   merge rule is in [`merge`] (last writer wins by version; keyspaces whose values are a
//!   join, such as the node's Job records, plug in through [`Merge`]).
//! - [`Storage`] is the node's durable map (summary, read by key, merge a batch durably), and
//!   [`Transport`] carries requests to a named peer; the protocol is written against these
//!   two only.
//! - [`Replicator`] is the protocol: a write is pushed to every live peer and acknowledged
//!   once `min(quorum, live peers)` of them hold it durably (or a deadline passed); an
//!   anti-entropy round compares the digests peers gossip ([`SummaryDigest`]), asks a peer
//!   that differs for its [`Summary`], and pulls what is missing or newer. It also serves
//!   those requests ([`Replicator::handle`]). Messages: [`wire`].
//! - [`MeshTransport`] runs it over the QUIC mesh; [`MemoryNetwork`] runs many nodes in one
//!   process with message loss, delay and cut links, and [`MemoryStorage`] keeps their maps,
//!   for tests (`cluster/tests/replication_properties.rs`).
//!
//! Nothing here reads a clock except the deadlines of requests (tokio's, which tests pause);
//! versions are made by the caller's [`Hlc`](crate::Hlc) from wall time it passes in.

mod entry;
mod memory_network;
mod memory_storage;
pub mod merge;
mod mesh_transport;
mod replicator;
mod storage;
mod summary;
mod transport;
pub mod wire;

pub use entry::{Entry, Key};
pub use memory_network::{MemoryHandler, MemoryNetwork, MemoryTransport, NetworkStats};
pub use memory_storage::{InjectedFailure, MemoryStorage};
pub use merge::{Merge, Mode, Verdict, compare, resolve};
pub use mesh_transport::{MeshPeer, MeshTransport, REPLICATION_CHANNEL, serve_replication};
pub use replicator::{Copies, ReplicationError, Replicator, ReplicatorConfig, Round};
pub use storage::Storage;
pub use summary::{DigestParseError, Summary, SummaryDigest};
pub use transport::{Transport, TransportError};
pub use wire::{WireError, WireLimits};
