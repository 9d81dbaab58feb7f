//! `wasmfleet`: the node. It wires the Wasm runtime (`wasmfleet-runtime`), placement
//! (`wasmfleet-scheduler`) and cluster state (`wasmfleet-cluster`) into one agent with a control
//! API, an HTTP gateway and a kubectl-like CLI.
//!
//! Layout: [`manifest`] parses Kubernetes-shaped YAML; [`store`] keeps desired state and module
//! blobs durable on disk; [`reconciler`] turns desired state into running replicas; [`gateway`]
//! routes HTTP to ready replicas; [`api`] is the control API; [`agent`] starts a node;
//! [`cli`] and [`client`] are the command line; [`demo`] is the quick start.

pub mod agent;
pub mod cli;
pub mod clock;
pub mod control;
pub mod dataplane;
pub mod launch;
pub mod manifest;
pub mod peering;
pub mod reconcile;
pub mod state;
