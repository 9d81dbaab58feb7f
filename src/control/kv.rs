//! The operator's view of the `wasi:keyvalue` buckets (`wasmfleet kv get|set|del|ls`): the
//! same buckets, limits and rules as a component's (a bucket `B` of namespace `ns` is the
//! component's `open("B")` there).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use wasmfleet_runtime::keyvalue::{KeyValue as _, KvError, MAX_KEY_BYTES, MAX_VALUE_BYTES};

use super::api::{ApiError, AppState};

/// A key's value as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KvValue {
    pub key: String,
    /// The value as text, when it is UTF-8.
    pub text: Option<String>,
    /// The value as a counter, when it is one (8 bytes, big-endian).
    pub counter: Option<u64>,
    pub bytes: usize,
}

fn unavailable(e: KvError) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

/// `?app=NAME`: the bucket of an application whose buckets are its own
/// (`wasmfleet.io/keyvalue-scope: application`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Scope {
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    local: bool,
}

fn bucket(ns: &str, bucket: &str, scope: &Scope) -> Result<String, ApiError> {
    let valid = !bucket.is_empty()
        && bucket.len() <= wasmfleet_runtime::keyvalue::MAX_BUCKET_BYTES
        && bucket.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(ApiError::BadRequest(format!("invalid bucket {bucket:?}: a-z, A-Z, 0-9, '-', '_', '.'")));
    }
    match &scope.app {
        Some(app) if app.is_empty() || app.contains('/') => {
            Err(ApiError::BadRequest(format!("invalid application name {app:?}")))
        }
        Some(app) => Ok(format!("{ns}/{app}/{bucket}")),
        None => Ok(format!("{ns}/{bucket}")),
    }
}

fn key_ok(key: &str) -> Result<(), ApiError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::BadRequest(format!("key of {} bytes is over the limit of {MAX_KEY_BYTES}", key.len())));
    }
    Ok(())
}

/// `?local=true`: this node's own copies (key, version, value as text), for operators and
/// tests that check every copy; else the cluster's keys.
pub(crate) async fn list(
    State(a): State<AppState>,
    Path((ns, b)): Path<(String, String)>,
    Query(q): Query<Scope>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let bucket = bucket(&ns, &b, &q)?;
    let kv = a.peering.kv();
    if q.local {
        let rows = kv.local_entries(&bucket).map_err(unavailable)?;
        let rows: Vec<(String, u64, Option<String>)> =
            rows.into_iter().map(|(k, v, val)| (k, v, val.map(|b| String::from_utf8_lossy(&b).into_owned()))).collect();
        return Ok(axum::Json(serde_json::json!(rows)));
    }
    kv.keys(&bucket).await.map(|k| axum::Json(serde_json::json!(k))).map_err(unavailable)
}

pub(crate) async fn get(
    State(a): State<AppState>,
    Path((ns, b, key)): Path<(String, String, String)>,
    Query(q): Query<Scope>,
) -> Result<axum::Json<KvValue>, ApiError> {
    let bucket = bucket(&ns, &b, &q)?;
    key_ok(&key)?;
    let value = a.peering.kv().get(&bucket, &key).await.map_err(unavailable)?;
    let Some(v) = value else { return Err(ApiError::NotFound { what: format!("key {key:?} in bucket {b:?}") }) };
    let counter = <[u8; 8]>::try_from(v.as_slice()).ok().map(u64::from_be_bytes);
    Ok(axum::Json(KvValue { key, counter, bytes: v.len(), text: String::from_utf8(v).ok() }))
}

pub(crate) async fn set(
    State(a): State<AppState>,
    Path((ns, b, key)): Path<(String, String, String)>,
    Query(q): Query<Scope>,
    body: Bytes,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let bucket = bucket(&ns, &b, &q)?;
    key_ok(&key)?;
    if body.len() > MAX_VALUE_BYTES {
        return Err(ApiError::TooLarge { path: format!("/v1/kv/{ns}/{b}/{key}"), limit_bytes: MAX_VALUE_BYTES });
    }
    a.peering.kv().set(&bucket, &key, body.to_vec()).await.map_err(unavailable)?;
    Ok(axum::Json(serde_json::json!({ "key": key, "bytes": body.len() })))
}

pub(crate) async fn delete(
    State(a): State<AppState>,
    Path((ns, b, key)): Path<(String, String, String)>,
    Query(q): Query<Scope>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let bucket = bucket(&ns, &b, &q)?;
    key_ok(&key)?;
    a.peering.kv().delete(&bucket, &key).await.map_err(unavailable)?;
    Ok(axum::Json(serde_json::json!({ "key": key, "deleted": true })))
}
