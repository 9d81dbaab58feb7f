//! Placement core for wasmfleet: decides which node runs each replica slot.
//!
//! Every node in the fleet runs [`place`] on the same inputs (the desired workloads and
//! the nodes it sees in gossip) and must reach the same answer without talking to anyone,
//! so this crate is a pure function of its arguments:
//!
//! - no async runtime, no clock, no randomness, no I/O, no logging;
//! - no hashing through `std`'s `RandomState`: every choice goes through the fixed 64-bit
//!   hash in [`hash`], which must never change between releases (nodes of different
//!   versions share a fleet);
//! - input order never matters: nodes and workloads are put in a canonical order first.
//!
//! Dependencies are limited to `serde` and `thiserror`. This crate knows nothing of
//! wasmtime, the cluster store or the network; the node crate feeds it and acts on the
//! returned [`Placement`].
//!
//! The rules (see `ARCHITECTURE.md` §5 and `docs/architecture.md`): filter nodes by selector,
//! architecture and free capacity; spread the replicas of a workload over distinct nodes,
//! then distinct zones; account capacity workload by workload in key order. A workload's
//! slots are chosen as a set: each zone takes a quota of them that depends only on how many
//! eligible nodes each zone has, and each slot takes the best node of its own *stripe* of its
//! zone (rendezvous hashing), so losing a node moves only that node's slots wherever the
//! fleet is large enough for the workload's stripes. Slots whose stripe has no node fall back
//! to the earlier spread scan ([`Rule::SlotOrder`] places every slot that way).

pub mod autoscale;
mod filter;
mod fleet;
pub mod hash;
mod index;
mod node;
mod placement;
mod plan;
#[doc(hidden)]
pub mod reference;
pub mod rollout;
mod rule;
mod scheduler;
mod slot;
mod workload;

pub use node::NodeInfo;
pub use placement::{Placement, Unschedulable, place, place_with};
pub use rule::Rule;
pub use scheduler::Scheduler;
pub use slot::Slot;
pub use workload::{WorkloadKind, WorkloadReq};
