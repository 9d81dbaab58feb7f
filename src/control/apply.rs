//! Apply's blocking half: parse and validate every document, resolve every image to a digest
//! (compiling `sha256:` ones to learn their kind), check what spans objects (an autoscaler's
//! target exists, claims: [`super::claims`]), then write every object in one transaction — or
//! nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmfleet_runtime::{Digest, Runtime};

use super::api::{ApiError, ApiResult, ApplyResult, with_tag};
use crate::manifest::{self, Kind, Object, ObjectKey};
use crate::state::{ModuleRecord, Store};

/// Parses, validates, resolves images (compiling `sha256:` ones) and stores every object, or
/// nothing; on a blocking thread.
pub async fn apply_manifest(
    store: Arc<Store>,
    runtime: Arc<Runtime>,
    source: String,
    text: String,
) -> ApiResult<Vec<ApplyResult>> {
    // Compiling a module takes milliseconds to seconds and the store write syncs to disk:
    // both on a blocking thread, never on an async worker.
    tokio::task::spawn_blocking(move || apply_manifest_blocking(&store, &runtime, &source, &text))
        .await
        .map_err(|e| ApiError::Internal(format!("apply task failed: {e}")))?
}

/// [`apply_manifest`] on the calling thread: it compiles modules and writes the store.
fn apply_manifest_blocking(store: &Store, runtime: &Runtime, source: &str, text: &str) -> ApiResult<Vec<ApplyResult>> {
    let objects = manifest::parse_str(source, text).map_err(ApiError::Invalid)?;
    let mut errors = Vec::new();
    let mut resolved_objects = Vec::new();
    for (i, obj) in objects.into_iter().enumerate() {
        let mut resolved = BTreeMap::new();
        if let Some(tpl) = obj.pod_template() {
            let w = tpl.workload();
            match resolve_image(store, runtime, &w.image) {
                Ok(rec) => {
                    let bad_kind = match obj.kind() {
                        Kind::Job if !rec.kind.is_command() => {
                            Some("a Job runs a command (wasi:cli/command or wasip1), but")
                        }
                        _ => None,
                    };
                    if let Some(why) = bad_kind {
                        errors.push(format!("{}: {why} image {} is a {}", obj.key(), w.image, rec.kind.describe()));
                    }
                    let max = runtime.sizing().instance_memory_bytes;
                    if let Some(m) = w.memory_bytes
                        && m > max
                    {
                        errors.push(format!(
                            "{}: resources.limits.memory {} MiB is above this node's per-instance maximum of {} MiB",
                            obj.key(),
                            m >> 20,
                            max >> 20
                        ));
                    }
                    resolved.insert(w.image.clone(), rec.digest);
                }
                Err(e) => errors.push(format!("{} (document {}): {e}", obj.key(), i + 1)),
            }
        }
        resolved_objects.push((obj, resolved));
    }
    // An autoscaler's target must exist, in this apply or already.
    for (obj, _) in &resolved_objects {
        let Object::HorizontalPodAutoscaler(h) = obj else { continue };
        let Some(kind) = h.target_kind() else { continue };
        let target = ObjectKey::new(kind, obj.namespace(), h.spec.scale_target_ref.name.clone());
        let in_batch = resolved_objects.iter().any(|(o, _)| o.key() == target);
        if !in_batch && store.get(&target)?.is_none() {
            errors.push(format!(
                "{}: spec.scaleTargetRef: {kind} {:?} does not exist in namespace {:?}",
                obj.key(),
                target.name,
                target.namespace
            ));
        }
    }
    let claims_involved = resolved_objects.iter().any(|(o, _)| {
        matches!(o, Object::PersistentVolumeClaim(_))
            || o.pod_template().is_some_and(|t| t.spec.volumes.iter().any(|v| v.persistent_volume_claim.is_some()))
    });
    if claims_involved {
        let stored: Vec<Object> = store.list(None)?.iter().filter_map(|r| r.typed()).collect();
        let batch: Vec<&Object> = resolved_objects.iter().map(|(o, _)| o).collect();
        errors.extend(super::claims::check(&batch, &stored));
    }
    if !errors.is_empty() {
        return Err(ApiError::BadRequest(errors.join("; ")));
    }
    let results = store.apply(resolved_objects)?;
    Ok(results.into_iter().map(|(key, action)| ApplyResult { key, action }).collect())
}

/// The module an `image:` names; a `sha256:` digest is compiled to learn its kind.
pub(crate) fn resolve_image(store: &Store, runtime: &Runtime, image: &str) -> Result<ModuleRecord, String> {
    if let Some(d) = image.strip_prefix("sha256:").and_then(|_| Digest::parse(image)) {
        if !store.has_blob(&d) {
            return Err(format!("module {d} is not in this node's store: push the file first"));
        }
        let bytes = store.read_blob(&d).map_err(|e| e.to_string())?.unwrap_or_default();
        let info = runtime.load(&bytes).map_err(|e| e.to_string())?;
        return Ok(ModuleRecord {
            name: image.into(),
            digest: d,
            kind: info.kind(),
            size_bytes: bytes.len() as u64,
            pushed_ms: 0,
        });
    }
    let name = with_tag(image);
    store
        .get_tag(&name)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("image `{name}` not found: push it with `wasmfleet push {name} FILE.wasm`"))
}
