//! `wasmfleet-runtime`: the Wasm host of a wasmfleet node, small enough to embed on its own in a
//! gateway program.
//!
//! It runs two shapes of workload with wasmtime:
//! - **HTTP services**: `wasi:http/proxy` components, instantiated in a fresh [`Store`] for every
//!   request from a cached pre-instance (the same `.wasm` that `wasmtime serve` or Spin runs);
//! - **commands**: `wasi:cli/command` components and core `wasm32-wasip1` modules with `_start`
//!   (jobs and long-running daemons), with args, env, preopened directories, bounded logs and
//!   restart policies.
//!
//! Every workload runs under limits (memory, deadline, concurrency, body sizes) and in a sandbox
//! (no files, env or outbound network unless granted). A trap, a timeout or an out-of-memory is
//! a result for that request or run, never a crash of the host.
//!
//! This crate must not depend on the cluster, the scheduler or the node: it knows modules and
//! workloads, nothing of nodes, gossip or manifests.
//!
//! [`Store`]: wasmtime::Store

mod cache;
mod command;
mod config;
mod engine;
mod error;
mod host;
mod http;
pub mod keyvalue;
mod logs;
mod module;
mod supervisor;
mod timing;

pub use command::{ExitStatus, RunOutcome, Stdio};
pub use config::{PoolSizing, RuntimeConfig, fit_allocator_to_address_space};
pub use error::RuntimeError;
pub use host::{OutboundBody, OutboundFuture, ServiceRouter};
pub use http::{BoxError, HttpService, ResponseBody, ServiceStats, error_response};
pub use logs::{LogBuffer, LogLine, LogStream};
pub use module::{Digest, Module, ModuleInfo, ModuleKind, inspect};
pub use supervisor::{Backoff, CommandHandle, Phase, RestartPolicy, WorkloadStatus};
/// The error type request bodies handed to [`HttpService::handle`] convert into.
pub use wasmtime_wasi_http::Error as WasiHttpError;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How a workload is run: identity, environment, grants and limits.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// A name for logs and errors, e.g. `default/hello-0`.
    pub name: String,
    /// Arguments after the program name (commands only).
    pub args: Vec<String>,
    /// Environment variables visible to the guest. Nothing else is inherited.
    pub env: Vec<(String, String)>,
    /// Directories granted to the guest.
    pub dirs: Vec<Preopen>,
    /// Hosts the guest may reach with outgoing `wasi:http` requests (`host`, `host:port`,
    /// `*.suffix`, or `*` for any). Empty: no outbound HTTP.
    pub allowed_outbound_hosts: Vec<String>,
    /// Resource limits.
    pub limits: Limits,
    /// Where outgoing requests to in-cluster names go instead of the network (see
    /// [`ServiceRouter`]); `None`: every request goes to the network, under the allow-list.
    pub service_router: Option<OutboundRouter>,
    /// Where a command's runs account their guest time and memory (HTTP services count
    /// theirs in [`ServiceStats`]); `None`: not accounted.
    pub usage: Option<Arc<Usage>>,
    /// The `wasi:keyvalue` buckets the guest may open; `None`: `open` answers
    /// `no-such-store`.
    pub keyvalue: Option<keyvalue::KvGrant>,
}

/// What a command's runs use, as they run: guest time (the time of every poll of the guest,
/// added as it goes; cumulative, wrapping) and the linear memory of the run now.
#[derive(Debug, Default)]
pub struct Usage {
    pub cpu_ns: std::sync::atomic::AtomicU64,
    pub memory_bytes: std::sync::atomic::AtomicU64,
}

/// A [`ServiceRouter`] and the namespace the workload calls from.
#[derive(Clone)]
pub struct OutboundRouter {
    pub router: std::sync::Arc<dyn ServiceRouter>,
    pub namespace: std::sync::Arc<str>,
}

impl std::fmt::Debug for OutboundRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundRouter").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl WorkloadSpec {
    /// A sandboxed workload with default limits and no grants.
    pub fn new(name: impl Into<String>) -> Self {
        WorkloadSpec {
            name: name.into(),
            args: Vec::new(),
            env: Vec::new(),
            dirs: Vec::new(),
            allowed_outbound_hosts: Vec::new(),
            limits: Limits::default(),
            service_router: None,
            usage: None,
            keyvalue: None,
        }
    }
}

/// A host directory made visible to the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preopen {
    pub host_path: PathBuf,
    pub guest_path: String,
    pub read_only: bool,
}

/// Limits for one workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Linear memory per instance, in bytes.
    pub memory_bytes: u64,
    /// Deadline for one HTTP request (instantiate, handle, and stream the response).
    pub request_timeout: Duration,
    /// Instances running at once for this workload; more requests wait in a queue.
    pub max_concurrency: u32,
    /// How long an excess request may wait for a slot before it gets `503`.
    pub queue_timeout: Duration,
    /// Largest request body accepted, in bytes (`413` above it).
    pub max_request_body_bytes: u64,
    /// Largest response body a guest may produce, in bytes (the stream is cut above it).
    pub max_response_body_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            request_timeout: Duration::from_secs(30),
            max_concurrency: 64,
            queue_timeout: Duration::from_secs(1),
            max_request_body_bytes: 16 << 20,
            max_response_body_bytes: 64 << 20,
        }
    }
}

/// Shared handle to the runtime: cheap to clone.
pub type SharedRuntime = Arc<Runtime>;

pub use engine::Runtime;
