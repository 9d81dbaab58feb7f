//! Modules this node runs, loaded (compiled, or read from the code cache) once per digest, off
//! the async threads; a module this node lacks is fetched from a peer first. Every module the
//! desired state uses is loaded ahead of need, so a replica that fails over here starts without
//! waiting for a compile.

use std::collections::BTreeSet;
use std::sync::Arc;

use dashmap::DashMap;
use wasmfleet_runtime::{Digest, Module, Runtime};

use crate::peering::Peering;
use crate::state::Store;

/// The module loader of the node.
#[derive(Clone)]
pub struct Modules {
    inner: Arc<ModulesInner>,
}

struct ModulesInner {
    runtime: Arc<Runtime>,
    store: Arc<Store>,
    peering: Arc<Peering>,
    loaded: DashMap<Digest, Module>,
    warming: DashMap<Digest, ()>,
}

impl Modules {
    pub fn new(runtime: Arc<Runtime>, store: Arc<Store>, peering: Arc<Peering>) -> Modules {
        Modules {
            inner: Arc::new(ModulesInner { runtime, store, peering, loaded: DashMap::new(), warming: DashMap::new() }),
        }
    }

    /// The loaded module of `digest`.
    pub async fn get(&self, digest: Digest) -> Result<Module, String> {
        if let Some(m) = self.inner.loaded.get(&digest) {
            return Ok(m.clone());
        }
        if !self.inner.store.has_blob(&digest) {
            self.inner.peering.fetch_blob(digest).await.map_err(|e| format!("{e:#}"))?;
        }
        let inner = self.inner.clone();
        let loaded = tokio::task::spawn_blocking(move || -> Result<Module, String> {
            let bytes = inner
                .store
                .read_blob(&digest)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("module {digest} is not in this node's store"))?;
            inner.runtime.load(&bytes).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("module loader failed: {e}"))??;
        self.inner.loaded.insert(digest, loaded.clone());
        Ok(loaded)
    }

    /// Loads every module of `digests` in the background.
    pub fn prewarm(&self, digests: &BTreeSet<Digest>) {
        for &digest in digests {
            if self.inner.loaded.contains_key(&digest) || self.inner.warming.insert(digest, ()).is_some() {
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.get(digest).await {
                    tracing::debug!(module = %digest, error = %e, "prewarm failed; will load on demand");
                }
                this.inner.warming.remove(&digest);
            });
        }
    }
}
