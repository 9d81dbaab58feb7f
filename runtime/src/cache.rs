//! On-disk compiled-code cache: `<dir>/<digest>-<engine hash>.cwasm`.
//!
//! Keyed by the module's digest and the engine's precompile-compatibility hash, so a restart
//! does not recompile and a changed engine setting never loads incompatible code.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::RuntimeError;
use crate::module::Digest;

pub(crate) struct CodeCache {
    dir: Option<PathBuf>,
    engine_hash: String,
}

impl CodeCache {
    pub(crate) fn new(dir: Option<PathBuf>, engine: &Engine) -> Result<CodeCache, RuntimeError> {
        if let Some(d) = &dir {
            std::fs::create_dir_all(d).map_err(|source| RuntimeError::Cache { path: d.clone(), source })?;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        Ok(CodeCache { dir, engine_hash: format!("{:016x}", h.finish()) })
    }

    fn path(&self, digest: Digest, kind: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{}-{}-{}.cwasm", digest.hex(), kind, self.engine_hash)))
    }

    pub(crate) fn component(&self, engine: &Engine, digest: Digest, bytes: &[u8]) -> Result<Component, RuntimeError> {
        self.load(
            digest,
            "c",
            || Component::new(engine, bytes),
            || engine.precompile_component(bytes),
            |path| deserialize_component(engine, path),
        )
    }

    pub(crate) fn core_module(
        &self,
        engine: &Engine,
        digest: Digest,
        bytes: &[u8],
    ) -> Result<wasmtime::Module, RuntimeError> {
        self.load(
            digest,
            "m",
            || wasmtime::Module::new(engine, bytes),
            || engine.precompile_module(bytes),
            |path| deserialize_module(engine, path),
        )
    }

    /// Cached code if usable, else compile, write atomically and load what was written.
    fn load<T>(
        &self,
        digest: Digest,
        kind: &str,
        compile_in_memory: impl FnOnce() -> wasmtime::Result<T>,
        precompile: impl FnOnce() -> wasmtime::Result<Vec<u8>>,
        deserialize: impl Fn(&Path) -> wasmtime::Result<T>,
    ) -> Result<T, RuntimeError> {
        let Some(path) = self.path(digest, kind) else {
            return compile_in_memory().map_err(RuntimeError::invalid);
        };
        if path.exists() {
            match deserialize(&path) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable compiled code");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let compiled = precompile().map_err(RuntimeError::invalid)?;
        write_atomic(&path, &compiled)?;
        deserialize(&path).map_err(RuntimeError::invalid)
    }
}

#[expect(unsafe_code, reason = "loading precompiled code is unsafe by wasmtime's contract")]
fn deserialize_component(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was written by this cache from `Engine::precompile_component` in a
    // directory owned by the node (0700 data dir), and its name carries the engine's
    // compatibility hash; wasmtime additionally checks the header and engine settings.
    unsafe { Component::deserialize_file(engine, path) }
}

#[expect(unsafe_code, reason = "loading precompiled code is unsafe by wasmtime's contract")]
fn deserialize_module(engine: &Engine, path: &Path) -> wasmtime::Result<wasmtime::Module> {
    // SAFETY: as for components: written by this cache from `Engine::precompile_module`.
    unsafe { wasmtime::Module::deserialize_file(engine, path) }
}

/// Crash-safe: a compile interrupted by a crash leaves no half-written artifact under the name.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    wasmfleet_durable::write(path, bytes, wasmfleet_durable::PUBLIC)
        .map_err(|e| RuntimeError::Cache { path: path.to_path_buf(), source: e.into() })
}
