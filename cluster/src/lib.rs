//! The cluster layer of wasmfleet: everything that moves state between nodes.
//!
//! - [`hlc`]: hybrid logical clock versions, the order of every replicated write;
//! - [`kv`]: replicated key-value buckets: owners of a key, its versions, the majority rule;
//! - [`replication`]: the replicated desired-state store's protocol: the entry and its one
//!   merge rule, write fan-out with acknowledgements, anti-entropy over gossiped digests,
//!   behind a storage trait and a transport trait (with in-memory ones for tests);
//! - [`membership`] and [`gossip`]: chitchat membership and failure detection, its datagrams
//!   sealed with the cluster's gossip key ([`seal`]);
//! - [`mesh`]: the QUIC mesh (mutual TLS under the cluster CA, [`pki`]) that carries RPCs,
//!   replication and streams; [`token`]: join tokens.
//!
//! This crate knows nothing of wasmtime or of how workloads run, nor of what the replicated
//! values mean (the node defines them). Its protocol cores read no clock: wall time is passed
//! in as values, so they can be driven and tested deterministically in one process.

pub mod gossip;
pub mod hlc;
pub mod kv;
pub mod membership;
pub mod mesh;
pub mod pki;
pub mod replication;
pub mod seal;
pub mod token;

pub use hlc::{Hlc, Version};
