//! Cluster state for wasmfleet: membership (chitchat gossip), the QUIC mesh between
//! nodes, and the replicated store of desired state, status and coordinator records.
//!
//! For now it holds the versioning primitives everything replicated is built on:
//! [`hlc`] (hybrid logical clock versions) and [`lww`] (last-writer-wins records).
//!
//! This crate knows nothing of wasmtime or of how workloads run, and its core reads no
//! clock: wall time is passed in as `wall_ms`, so protocol logic can be driven and tested
//! deterministically in one process.

pub mod gossip;
pub mod hlc;
pub mod lww;
pub mod membership;
pub mod mesh;
pub mod pki;
pub mod seal;
pub mod token;

pub use hlc::{Hlc, Version};
pub use lww::{Record, merge};
