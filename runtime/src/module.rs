//! Modules: content digests, classification (which world a component targets), compilation
//! through the cache, and pre-linking for fast per-request instantiation.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::cache::CodeCache;
use crate::engine::Runtime;
use crate::error::RuntimeError;
use crate::host::{HostState, P1State};

/// A sha256 content digest; displayed as `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// Lowercase hex, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses `sha256:<64 hex>` or bare hex.
    pub fn parse(s: &str) -> Option<Digest> {
        let h = s.strip_prefix("sha256:").unwrap_or(s);
        if h.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(h, &mut out).ok()?;
        Some(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", &self.hex()[..12])
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).ok_or_else(|| serde::de::Error::custom("expected sha256:<64 hex digits>"))
    }
}

/// What a module is, as far as wasmfleet is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModuleKind {
    /// A component exporting `wasi:http/incoming-handler` (the `wasi:http/proxy` world).
    HttpProxy,
    /// A component exporting `wasi:cli/run` (the `wasi:cli/command` world).
    Command,
    /// A core `wasm32-wasip1` module with a `_start` export.
    CoreCommand,
}

impl ModuleKind {
    /// Human description, used in CLI output and errors.
    pub fn describe(self) -> &'static str {
        match self {
            ModuleKind::HttpProxy => "wasi:http/proxy component",
            ModuleKind::Command => "wasi:cli/command component",
            ModuleKind::CoreCommand => "wasip1 command module",
        }
    }

    /// Whether it runs to completion (a command) rather than serving requests.
    pub fn is_command(self) -> bool {
        !matches!(self, ModuleKind::HttpProxy)
    }
}

/// Facts about a loaded module.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModuleInfo {
    pub digest: Digest,
    pub kind: ModuleKind,
    pub size_bytes: u64,
    /// Imported interfaces (components) or `module::name` functions (core modules).
    pub imports: Vec<String>,
}

/// A compiled, pre-linked module, ready to instantiate. Cheap to clone.
#[derive(Clone)]
pub struct Module {
    pub(crate) info: Arc<ModuleInfo>,
    pub(crate) pre: Pre,
}

#[derive(Clone)]
pub(crate) enum Pre {
    Proxy(ProxyPre<HostState>),
    Command(CommandPre<HostState>),
    Core(wasmtime::InstancePre<P1State>),
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Module {
    pub fn info(&self) -> &ModuleInfo {
        &self.info
    }
    pub fn digest(&self) -> Digest {
        self.info.digest
    }
    pub fn kind(&self) -> ModuleKind {
        self.info.kind
    }
}

/// Convenience: load a module and return what it is (used to validate uploads).
pub fn inspect(runtime: &Runtime, bytes: &[u8]) -> Result<ModuleInfo, RuntimeError> {
    runtime.load(bytes).map(|m| m.info().clone())
}

const HTTP_HANDLER: &str = "wasi:http/incoming-handler@0.2";
const CLI_RUN: &str = "wasi:cli/run@0.2";

pub(crate) fn load(rt: &Runtime, cache: &CodeCache, bytes: &[u8]) -> Result<Module, RuntimeError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(RuntimeError::NotWasm);
    }
    let digest = Digest::of(bytes);
    let size_bytes = bytes.len() as u64;
    let is_core = bytes[4..8] == [1, 0, 0, 0];
    if is_core {
        let module = cache.core_module(&rt.engine, digest, bytes)?;
        let mut imports = Vec::new();
        for imp in module.imports() {
            if imp.module() != "wasi_snapshot_preview1" {
                return Err(RuntimeError::Unsupported {
                    reason: format!(
                        "core module imports `{}::{}`; only wasip1 command modules \
                         (imports from wasi_snapshot_preview1, a `_start` export) are supported",
                        imp.module(),
                        imp.name()
                    ),
                });
            }
            imports.push(format!("{}::{}", imp.module(), imp.name()));
        }
        if !module.exports().any(|e| e.name() == "_start") {
            return Err(RuntimeError::Unsupported {
                reason: "core module has no `_start` export: build it as a wasm32-wasip1 command \
                         (a `fn main`), or as a wasi:http/proxy component for wasm32-wasip2"
                    .into(),
            });
        }
        let pre = rt.p1_linker.instantiate_pre(&module).map_err(|e| RuntimeError::Link { reason: format!("{e:#}") })?;
        let info = ModuleInfo { digest, kind: ModuleKind::CoreCommand, size_bytes, imports };
        return Ok(Module { info: Arc::new(info), pre: Pre::Core(pre) });
    }

    let component = cache.component(&rt.engine, digest, bytes)?;
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(&rt.engine).map(|(n, _)| n.to_string()).collect();
    let imports: Vec<String> = ty.imports(&rt.engine).map(|(n, _)| n.to_string()).collect();
    let kind = if exports.iter().any(|e| e.starts_with(HTTP_HANDLER)) {
        ModuleKind::HttpProxy
    } else if exports.iter().any(|e| e.starts_with(CLI_RUN)) {
        ModuleKind::Command
    } else {
        return Err(RuntimeError::Unsupported {
            reason: format!(
                "component exports neither `wasi:http/incoming-handler@0.2.x` (wasi:http/proxy) \
                 nor `wasi:cli/run@0.2.x` (wasi:cli/command); it exports [{}]",
                exports.join(", ")
            ),
        });
    };
    let instance_pre =
        rt.linker.instantiate_pre(&component).map_err(|e| RuntimeError::Link { reason: format!("{e:#}") })?;
    let pre = match kind {
        ModuleKind::HttpProxy => {
            Pre::Proxy(ProxyPre::new(instance_pre).map_err(|e| RuntimeError::Link { reason: format!("{e:#}") })?)
        }
        _ => Pre::Command(CommandPre::new(instance_pre).map_err(|e| RuntimeError::Link { reason: format!("{e:#}") })?),
    };
    let info = ModuleInfo { digest, kind, size_bytes, imports };
    Ok(Module { info: Arc::new(info), pre })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trip() {
        let d = Digest::of(b"hello");
        assert_eq!(Digest::parse(&d.to_string()), Some(d));
        assert_eq!(Digest::parse(&d.hex()), Some(d));
        assert_eq!(Digest::parse("sha256:zz"), None);
    }
}
