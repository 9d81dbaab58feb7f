//! `wasmfleet`: the node. It wires the Wasm runtime (`wasmfleet-runtime`), placement
//! (`wasmfleet-scheduler`) and cluster state (`wasmfleet-cluster`) into one agent with a control
//! API, an HTTP gateway and a kubectl-like CLI.
//!
//! Layout: [`manifest`] parses Kubernetes-shaped YAML; [`state`] keeps desired state and module
//! blobs durable on disk; [`reconcile`] turns desired state into running replicas;
//! [`dataplane`] routes HTTP to ready replicas; [`control`] is the control API and its client;
//! [`peering`] is this node's part in the cluster; [`agent`] starts a node; [`cli`] is the
//! command line and the demo; [`launch`] starts an agent as a child process and reads its
//! listeners (the demo, tests and benches).

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
