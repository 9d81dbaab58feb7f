//! `wasi:keyvalue@0.2.0-draft2` over the same buckets and backend as 0.2.0-draft: `open`,
//! `get`/`set`/`delete`/`exists` and the batch are the same calls; `list-keys` takes and
//! returns its cursor as a string (the offset, in decimal); `increment` is signed (two's
//! complement on the same 8-byte counter); and `atomics.cas` reads a key's value and version,
//! `swap` writes only if the version is unchanged (else `cas-failed`, with the cas to retry).

use wasmtime::component::{Linker, Resource};

use super::{Bucket, KvError, KvToken, KvView, check_key, check_value};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/keyvalue-draft2",
        world: "wasi:keyvalue/imports@0.2.0-draft2",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::super::Bucket,
            "wasi:keyvalue/atomics.cas": super::Cas,
        },
        trappable_error_type: {
            "wasi:keyvalue/store.error" => super::super::KvError,
        },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};

/// A compare-and-swap in progress: the key, its value and version when it was read.
pub struct Cas {
    bucket: String,
    key: String,
    value: Option<Vec<u8>>,
    token: Option<KvToken>,
}

/// Adds the 0.2.0-draft2 interfaces.
pub(super) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, super::Kv>(linker, view)?;
    atomics::add_to_linker::<T, super::Kv>(linker, view)?;
    batch::add_to_linker::<T, super::Kv>(linker, view)?;
    Ok(())
}

fn table_error(e: impl std::fmt::Display) -> KvError {
    KvError::Other(e.to_string())
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
        super::store::HostBucket::get(self, b, key).await
    }

    async fn set(&mut self, b: Resource<Bucket>, key: String, value: Vec<u8>) -> Result<(), KvError> {
        super::store::HostBucket::set(self, b, key, value).await
    }

    async fn delete(&mut self, b: Resource<Bucket>, key: String) -> Result<(), KvError> {
        super::store::HostBucket::delete(self, b, key).await
    }

    async fn exists(&mut self, b: Resource<Bucket>, key: String) -> Result<bool, KvError> {
        super::store::HostBucket::exists(self, b, key).await
    }

    async fn list_keys(&mut self, b: Resource<Bucket>, cursor: Option<String>) -> Result<store::KeyResponse, KvError> {
        let cursor = match cursor {
            Some(c) => Some(c.parse::<u64>().map_err(|_| KvError::Other(format!("invalid cursor {c:?}")))?),
            None => None,
        };
        let page = super::store::HostBucket::list_keys(self, b, cursor).await?;
        Ok(store::KeyResponse { keys: page.keys, cursor: page.cursor.map(|c| c.to_string()) })
    }

    async fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        super::store::HostBucket::drop(self, b).await
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(&mut self, b: Resource<Bucket>, key: String, delta: i64) -> Result<i64, KvError> {
        // Two's complement: adding `delta as u64` to the counter is the signed sum.
        let sum = super::atomics::Host::increment(self, b, key, delta as u64).await?;
        Ok(sum as i64)
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let (bucket, key, token) = {
            let c = self.table.get(&cas)?;
            (c.bucket.clone(), c.key.clone(), c.token)
        };
        if let Err(e) = check_value(&value) {
            self.table.delete(cas)?;
            return Ok(Err(atomics::CasError::StoreError(store::Host::convert_error(self, e)?)));
        }
        let backend = match self.backend() {
            Ok(b) => b,
            Err(e) => return Ok(Err(atomics::CasError::StoreError(store::Host::convert_error(self, e)?))),
        };
        match backend.swap(&bucket, &key, token, value).await {
            Ok(true) => {
                self.table.delete(cas)?;
                Ok(Ok(()))
            }
            Ok(false) => Ok(Err(atomics::CasError::CasFailed(cas))),
            Err(e) => {
                self.table.delete(cas)?;
                Ok(Err(atomics::CasError::StoreError(store::Host::convert_error(self, e)?)))
            }
        }
    }
}

impl atomics::HostCas for KvView<'_> {
    async fn new(&mut self, b: Resource<Bucket>, key: String) -> Result<Resource<Cas>, KvError> {
        check_key(&key)?;
        let bucket = self.bucket(&b).map_err(table_error)?;
        let (value, token) = self.backend()?.get_versioned(&bucket, &key).await?;
        self.table.push(Cas { bucket, key, value, token }).map_err(table_error)
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.table.get(&cas).map_err(table_error)?.value.clone())
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        b: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        let name = self.bucket(&b).map_err(table_error)?;
        let backend = self.backend()?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            check_key(&key)?;
            let value = backend.get(&name, &key).await?;
            out.push((key, value));
        }
        Ok(out)
    }

    async fn set_many(&mut self, b: Resource<Bucket>, key_values: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        super::batch::Host::set_many(self, b, key_values).await
    }

    async fn delete_many(&mut self, b: Resource<Bucket>, keys: Vec<String>) -> Result<(), KvError> {
        super::batch::Host::delete_many(self, b, keys).await
    }
}
