//! `wasi:keyvalue@0.2.0-draft` for components: `store` (buckets), `atomics` (increment) and
//! `batch`, over a [`KeyValue`] backend the embedder provides ([`MemoryKv`] keeps buckets in
//! memory; the wasmfleet node replicates them across the cluster). `0.2.0-draft2` (Spin's and
//! wRPC's: compare-and-swap, signed increments, string cursors) is served beside it over the
//! same buckets ([`draft2`]); a component may import either.
//!
//! A workload's buckets are namespaced: the guest opens `identifier` (`""` is `default`, as in
//! Spin) and the backend sees `<prefix><identifier>`, the prefix coming from the workload's
//! [`KvGrant`]. Limits, as Spin states them: keys of at most [`MAX_KEY_BYTES`], values of at
//! most [`MAX_VALUE_BYTES`]; past them the guest gets `error::other` saying so. A counter
//! (`atomics.increment`) is stored as 8 bytes, big-endian.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

mod draft2;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Longest bucket identifier, in bytes.
pub const MAX_BUCKET_BYTES: usize = 128;
/// Keys per `list-keys` page.
pub const PAGE: usize = 1000;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/keyvalue",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
        },
        trappable_error_type: {
            "wasi:keyvalue/store.error" => super::KvError,
        },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};

/// A future a backend returns.
pub type KvFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KvError>> + Send + 'a>>;

/// What a bucket operation can fail with, as the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("no such store")]
    NoSuchStore,
    #[error("access denied")]
    AccessDenied,
    #[error("{0}")]
    Other(String),
}

/// Where a workload's buckets live. `bucket` is the namespaced name.
pub trait KeyValue: Send + Sync + 'static {
    fn get<'a>(&'a self, bucket: &'a str, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>>;
    fn set<'a>(&'a self, bucket: &'a str, key: &'a str, value: Vec<u8>) -> KvFuture<'a, ()>;
    fn delete<'a>(&'a self, bucket: &'a str, key: &'a str) -> KvFuture<'a, ()>;
    /// A page of keys in key order, from `cursor` (an offset), and the next cursor.
    fn list_keys<'a>(&'a self, bucket: &'a str, cursor: Option<u64>) -> KvFuture<'a, (Vec<String>, Option<u64>)>;
    /// Adds `delta` to the counter at `key` (absent: 0), as one step; returns the sum.
    fn increment<'a>(&'a self, bucket: &'a str, key: &'a str, delta: u64) -> KvFuture<'a, u64>;
    /// The value of `key` and the version it has now (None: the key was never written).
    fn get_versioned<'a>(&'a self, bucket: &'a str, key: &'a str) -> KvFuture<'a, (Option<Vec<u8>>, Option<KvToken>)>;
    /// Sets `key` to `value` if its version is still `expected`, as one step; whether it did.
    fn swap<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        expected: Option<KvToken>,
        value: Vec<u8>,
    ) -> KvFuture<'a, bool>;
}

/// A key's version as a backend identifies it, for compare-and-swap.
pub type KvToken = (u64, u64);

/// A workload's access to buckets: the backend, and the prefix of its bucket names.
#[derive(Clone)]
pub struct KvGrant {
    pub backend: Arc<dyn KeyValue>,
    pub prefix: Arc<str>,
}

impl std::fmt::Debug for KvGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvGrant").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// An open bucket (the guest's resource): its namespaced name.
pub struct Bucket {
    name: String,
}

/// The counter encoding: 8 bytes, big-endian.
pub fn counter_value(bytes: &[u8]) -> Result<u64, KvError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| {
        KvError::Other(format!("the value is {} bytes, not a counter (8 bytes, big-endian)", bytes.len()))
    })?;
    Ok(u64::from_be_bytes(arr))
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::Other(format!("key of {} bytes is over the limit of {MAX_KEY_BYTES}", key.len())));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::Other(format!(
            "value of {} bytes is over the limit of {MAX_VALUE_BYTES} (1 MiB)",
            value.len()
        )));
    }
    Ok(())
}

/// The per-store view the bindings use.
pub(crate) struct KvView<'a> {
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) grant: Option<&'a KvGrant>,
}

impl KvView<'_> {
    fn backend(&self) -> Result<Arc<dyn KeyValue>, KvError> {
        self.grant.map(|g| g.backend.clone()).ok_or(KvError::NoSuchStore)
    }

    fn bucket(&self, b: &Resource<Bucket>) -> wasmtime::Result<String> {
        Ok(self.table.get(b)?.name.clone())
    }
}

struct Kv;

impl HasData for Kv {
    type Data<'a> = KvView<'a>;
}

/// Adds `wasi:keyvalue` (both revisions) to a linker whose store data gives a [`KvView`].
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, Kv>(linker, view)?;
    atomics::add_to_linker::<T, Kv>(linker, view)?;
    batch::add_to_linker::<T, Kv>(linker, view)?;
    draft2::add_to_linker(linker, view)
}

impl KvView<'_> {
    /// Opens bucket `identifier` of the grant (`""`: `default`).
    fn open_bucket(&mut self, identifier: &str) -> Result<Resource<Bucket>, KvError> {
        let Some(grant) = self.grant else { return Err(KvError::NoSuchStore) };
        let id = if identifier.is_empty() { "default" } else { identifier };
        let valid = id.len() <= MAX_BUCKET_BYTES
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(KvError::Other(format!(
                "invalid bucket {identifier:?}: at most {MAX_BUCKET_BYTES} of a-z, A-Z, 0-9, '-', '_', '.'"
            )));
        }
        let bucket = Bucket { name: format!("{}{id}", grant.prefix) };
        self.table.push(bucket).map_err(|e| KvError::Other(e.to_string()))
    }
}

impl store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, KvError> {
        self.open_bucket(&identifier)
    }

    fn convert_error(&mut self, err: KvError) -> wasmtime::Result<store::Error> {
        Ok(match err {
            KvError::NoSuchStore => store::Error::NoSuchStore,
            KvError::AccessDenied => store::Error::AccessDenied,
            KvError::Other(s) => store::Error::Other(s),
        })
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(&mut self, b: Resource<Bucket>, key: String) -> Result<Option<Vec<u8>>, KvError> {
        check_key(&key)?;
        let name = self.bucket(&b).map_err(|e| KvError::Other(e.to_string()))?;
        self.backend()?.get(&name, &key).await
    }

    async fn set(&mut self, b: Resource<Bucket>, key: String, value: Vec<u8>) -> Result<(), KvError> {
        check_key(&key)?;
        check_value(&value)?;
        let name = self.bucket(&b).map_err(|e| KvError::Other(e.to_string()))?;
        self.backend()?.set(&name, &key, value).await
    }

    async fn delete(&mut self, b: Resource<Bucket>, key: String) -> Result<(), KvError> {
        check_key(&key)?;
        let name = self.bucket(&b).map_err(|e| KvError::Other(e.to_string()))?;
        self.backend()?.delete(&name, &key).await
    }

    async fn exists(&mut self, b: Resource<Bucket>, key: String) -> Result<bool, KvError> {
        check_key(&key)?;
        let name = self.bucket(&b).map_err(|e| KvError::Other(e.to_string()))?;
        Ok(self.backend()?.get(&name, &key).await?.is_some())
    }

    async fn list_keys(&mut self, b: Resource<Bucket>, cursor: Option<u64>) -> Result<store::KeyResponse, KvError> {
        let name = self.bucket(&b).map_err(|e| KvError::Other(e.to_string()))?;
        let (keys, cursor) = self.backend()?.list_keys(&name, cursor).await?;
        Ok(store::KeyResponse { keys, cursor })
    }

    async fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(&mut self, b: Resource<Bucket>, key: String, delta: u64) -> Result<u64, KvError> {
        check_key(&key)?;
        let name = self.bucket(&b).map_err(|e| KvError::Other(e.to_string()))?;
        self.backend()?.increment(&name, &key, delta).await
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        b: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, KvError> {
        let name = self.bucket(&b).map_err(|e| KvError::Other(e.to_string()))?;
        let backend = self.backend()?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            check_key(&key)?;
            let value = backend.get(&name, &key).await?;
            out.push(value.map(|v| (key, v)));
        }
        Ok(out)
    }

    async fn set_many(&mut self, b: Resource<Bucket>, key_values: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        let name = self.bucket(&b).map_err(|e| KvError::Other(e.to_string()))?;
        for (key, value) in &key_values {
            check_key(key)?;
            check_value(value)?;
        }
        let backend = self.backend()?;
        for (key, value) in key_values {
            backend.set(&name, &key, value).await?;
        }
        Ok(())
    }

    async fn delete_many(&mut self, b: Resource<Bucket>, keys: Vec<String>) -> Result<(), KvError> {
        let name = self.bucket(&b).map_err(|e| KvError::Other(e.to_string()))?;
        let backend = self.backend()?;
        for key in keys {
            check_key(&key)?;
            backend.delete(&name, &key).await?;
        }
        Ok(())
    }
}

/// Buckets in this process's memory: for an embedding, and tests.
#[derive(Debug, Default)]
pub struct MemoryKv {
    data: Mutex<BTreeMap<String, BTreeMap<String, Vec<u8>>>>,
}

impl MemoryKv {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, BTreeMap<String, Vec<u8>>>) -> T) -> T {
        f(&mut self.data.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl KeyValue for MemoryKv {
    fn get<'a>(&'a self, bucket: &'a str, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        let v = self.with(|d| d.get(bucket).and_then(|b| b.get(key)).cloned());
        Box::pin(async move { Ok(v) })
    }

    fn set<'a>(&'a self, bucket: &'a str, key: &'a str, value: Vec<u8>) -> KvFuture<'a, ()> {
        self.with(|d| d.entry(bucket.to_string()).or_default().insert(key.to_string(), value));
        Box::pin(async { Ok(()) })
    }

    fn delete<'a>(&'a self, bucket: &'a str, key: &'a str) -> KvFuture<'a, ()> {
        self.with(|d| d.get_mut(bucket).map(|b| b.remove(key)));
        Box::pin(async { Ok(()) })
    }

    fn list_keys<'a>(&'a self, bucket: &'a str, cursor: Option<u64>) -> KvFuture<'a, (Vec<String>, Option<u64>)> {
        let keys: Vec<String> = self.with(|d| d.get(bucket).map(|b| b.keys().cloned().collect()).unwrap_or_default());
        Box::pin(async move { Ok(page(keys, cursor)) })
    }

    fn increment<'a>(&'a self, bucket: &'a str, key: &'a str, delta: u64) -> KvFuture<'a, u64> {
        let result = self.with(|d| {
            let b = d.entry(bucket.to_string()).or_default();
            let now = b.get(key).map(|v| counter_value(v)).transpose()?.unwrap_or(0);
            let sum = now.wrapping_add(delta);
            b.insert(key.to_string(), sum.to_be_bytes().to_vec());
            Ok(sum)
        });
        Box::pin(async move { result })
    }

    /// The version of a value here is a hash of its bytes (a write of the same bytes
    /// is the same version: enough for a compare-and-swap on values).
    fn get_versioned<'a>(&'a self, bucket: &'a str, key: &'a str) -> KvFuture<'a, (Option<Vec<u8>>, Option<KvToken>)> {
        let v = self.with(|d| d.get(bucket).and_then(|b| b.get(key)).cloned());
        let token = v.as_deref().map(value_token);
        Box::pin(async move { Ok((v, token)) })
    }

    fn swap<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        expected: Option<KvToken>,
        value: Vec<u8>,
    ) -> KvFuture<'a, bool> {
        let swapped = self.with(|d| {
            let b = d.entry(bucket.to_string()).or_default();
            if b.get(key).map(|v| value_token(v)) != expected {
                return false;
            }
            b.insert(key.to_string(), value);
            true
        });
        Box::pin(async move { Ok(swapped) })
    }
}

/// [`MemoryKv`]'s version of a value: FNV-1a of its bytes, and its length.
fn value_token(v: &[u8]) -> KvToken {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h, v.len() as u64)
}

/// The page of `keys` (sorted) at `cursor` (an offset), and the next cursor.
pub fn page(keys: Vec<String>, cursor: Option<u64>) -> (Vec<String>, Option<u64>) {
    let start = cursor.unwrap_or(0) as usize;
    let end = (start + PAGE).min(keys.len());
    let next = (end < keys.len()).then_some(end as u64);
    (keys.into_iter().skip(start).take(end.saturating_sub(start)).collect(), next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_buckets_count_and_page() {
        let kv = MemoryKv::default();
        assert_eq!(kv.increment("ns/b", "c", 2).await, Ok(2));
        assert_eq!(kv.increment("ns/b", "c", 3).await, Ok(5));
        assert_eq!(kv.get("ns/b", "c").await.unwrap(), Some(5u64.to_be_bytes().to_vec()));
        kv.set("ns/b", "text", b"hello".to_vec()).await.unwrap();
        assert!(matches!(kv.increment("ns/b", "text", 1).await, Err(KvError::Other(m)) if m.contains("not a counter")));
        for i in 0..1500 {
            kv.set("ns/many", &format!("k{i:04}"), vec![]).await.unwrap();
        }
        let (first, next) = kv.list_keys("ns/many", None).await.unwrap();
        assert_eq!((first.len(), next), (PAGE, Some(PAGE as u64)));
        let (rest, end) = kv.list_keys("ns/many", next).await.unwrap();
        assert_eq!((rest.len(), end), (500, None));
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(check_value(&vec![0; MAX_VALUE_BYTES + 1]).is_err());
    }
}
