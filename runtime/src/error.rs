//! Errors of the runtime.

use std::path::PathBuf;

/// What can go wrong when loading or running a module.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("not a WebAssembly file: it does not start with the `\\0asm` magic bytes")]
    NotWasm,
    #[error("unsupported module: {reason}")]
    Unsupported { reason: String },
    #[error("invalid WebAssembly: {reason}")]
    Invalid { reason: String },
    #[error("module needs imports that wasmfleet does not provide: {reason}")]
    Link { reason: String },
    #[error("module `{name}` is a {actual}, not a {expected}")]
    WrongKind { name: String, expected: &'static str, actual: &'static str },
    #[error(
        "memory limit {requested_mib} MiB is above this node's per-instance maximum of {max_mib} MiB (raise --instance-memory-max)"
    )]
    MemoryAboveMaximum { requested_mib: u64, max_mib: u64 },
    #[error("cannot grant directory {path}: {source}")]
    Preopen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the wasm engine: {reason}")]
    Engine { reason: String },
    #[error("compiled-code cache at {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn invalid(e: impl std::fmt::Display) -> Self {
        RuntimeError::Invalid { reason: format!("{e:#}") }
    }
}
