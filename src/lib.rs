//! `wasmfleet`: the node. It wires the Wasm runtime (`wasmfleet-runtime`), placement
//! (`wasmfleet-scheduler`) and cluster state (`wasmfleet-cluster`) into one agent with a control
//! API, an HTTP gateway and a kubectl-like CLI.
//!
//! Modules, lowest first (a module uses only those above it in this list; `tests/layers.rs`
//! fails on any import circle):
//!
//! - [`clock`]: wall-clock reads for the I/O shell;
//! - [`launch`]: starts an agent as a child process and reads its listeners (the demo, tests
//!   and benches);
//! - [`manifest`]: Kubernetes-shaped YAML to typed, validated objects;
//! - [`state`]: the durable store of desired state, module tags, Job records and blobs;
//! - [`peering`]: this node in the cluster: identity and joining, gossip views, replication of
//!   the store, module transfer;
//! - [`dataplane`]: the gateway, forwarding over QUIC, and the data-plane lanes;
//! - [`reconcile`]: the pure desired step and the loop that carries it out;
//! - [`control`]: the HTTP API, its client, and the cluster-wide log service;
//! - [`agent`]: starts a node (wires all of the above);
//! - [`cli`]: the command line and the demo.

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
