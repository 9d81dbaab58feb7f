//! The node's durable state: desired objects and module tags in redb, module blobs as files.
//!
//! Why redb: pure Rust (no C toolchain on small gateways), ACID with copy-on-write B-trees and
//! an fsync per commit, so a SIGKILL at any moment leaves the last committed state; a single
//! file; and small. Module blobs are plain content-addressed files (`blobs/sha256/<hex>`),
//! written to a temporary name, fsynced and renamed, so large uploads never bloat the database.
//!
//! Objects form a last-writer-wins map keyed by (kind, namespace, name), versioned by a hybrid
//! logical clock, with tombstones for deletes. How the store replicates (its three keyspaces
//! as entries of the cluster's replication protocol) is in [`super::replica`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use wasmfleet_cluster::{Hlc, Version};
use wasmfleet_runtime::{Digest, ModuleKind};

use crate::clock::now_ms;
use crate::manifest::{Kind, Object, ObjectKey};

pub(super) const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
pub(super) const TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("tags");
/// Job records, by object key (`Kind/namespace/name`).
pub(super) const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("job_status");
/// Rollout records, by object key.
pub(super) const ROLLOUTS: TableDefinition<&str, &[u8]> = TableDefinition::new("rollouts");
/// Volume records, by volume name.
pub(super) const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {reason}")]
    Db { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stored record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    /// A record from a peer that does not belong where it was sent.
    #[error("refused replicated record {key}: {reason}")]
    Refused { key: String, reason: String },
}

/// One desired object as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StoredObject {
    pub key: ObjectKey,
    pub version: Version,
    pub deleted: bool,
    /// The object as the user wrote it (Kubernetes JSON), absent for tombstones.
    pub object: Option<serde_json::Value>,
    /// Image references resolved to digests at apply time.
    #[serde(default)]
    pub resolved: BTreeMap<String, Digest>,
    /// Increments whenever the spec changes.
    pub generation: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Operator verbs on a Rollout (`promote`, `abort`, ...): how many times each was given.
    /// Kept across applies; the Rollout's coordinator acts on each new one once.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub verbs: BTreeMap<String, u64>,
}

impl StoredObject {
    /// The typed object (None for tombstones).
    pub fn typed(&self) -> Option<Object> {
        let v = self.object.clone()?;
        Object::from_json(self.key.kind, v).ok()
    }
}

/// What `apply` did to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
}

/// Largest module blob a node accepts (an upload, or a copy from a peer).
pub const MAX_MODULE_BYTES: usize = 64 << 20;

/// Summary-key prefix of module tags.
pub const TAG_PREFIX: &str = "tag/";
/// Summary-key prefix of Job progress records (`job/<Kind>/<ns>/<name>`).
pub const JOB_PREFIX: &str = "job/";

/// A module name:tag and what it points to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModuleRecord {
    pub name: String,
    pub digest: Digest,
    pub kind: ModuleKind,
    pub size_bytes: u64,
    pub pushed_ms: u64,
}

/// A Job's recorded progress, so a finished Job never runs again.
///
/// Replicated like desired state, but merged as a grow-only record instead of last writer
/// wins: within one generation, finished indices are a union, failures a maximum, and
/// `complete` sticks. Any node that finishes an index can therefore record it, and concurrent
/// records from two nodes never lose an index; no coordinator is needed.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct JobRecord {
    pub generation: u64,
    /// Completion indices that have succeeded.
    #[serde(default)]
    pub done: Vec<u32>,
    pub succeeded: u32,
    pub failed: u32,
    pub complete: bool,
    pub failed_permanently: bool,
    pub completed_ms: Option<u64>,
}

impl JobRecord {
    /// Folds `other` into `self`; returns whether `self` changed.
    pub fn merge(&mut self, other: &JobRecord) -> bool {
        if other.generation < self.generation {
            return false;
        }
        if other.generation > self.generation {
            let changed = self != other;
            *self = other.clone();
            return changed;
        }
        let before = self.clone();
        for i in &other.done {
            if !self.done.contains(i) {
                self.done.push(*i);
            }
        }
        self.done.sort_unstable();
        self.succeeded = self.done.len() as u32;
        self.failed = self.failed.max(other.failed);
        self.complete |= other.complete;
        self.failed_permanently |= other.failed_permanently;
        self.completed_ms = match (self.completed_ms, other.completed_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        *self != before
    }
}

/// The durable store of one node.
pub struct Store {
    pub(super) db: Database,
    path: PathBuf,
    blobs: PathBuf,
    pub(super) hlc: Mutex<Hlc>,
    changed_tx: watch::Sender<u64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store under `data_dir`.
    pub fn open(data_dir: &Path, node_id: u64) -> Result<Store, StoreError> {
        let path = data_dir.join("state.redb");
        let db_err = |e: &dyn std::fmt::Display| StoreError::Db { path: path.clone(), reason: e.to_string() };
        let blobs = data_dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(|source| StoreError::Io { path: blobs.clone(), source })?;
        let db = Database::create(&path).map_err(|e| db_err(&e))?;
        let txn = db.begin_write().map_err(|e| db_err(&e))?;
        for t in [OBJECTS, TAGS, JOBS, ROLLOUTS, VOLUMES] {
            txn.open_table(t).map_err(|e| db_err(&e))?;
        }
        txn.commit().map_err(|e| db_err(&e))?;
        let (changed_tx, _) = watch::channel(0);
        let store = Store { db, path: path.clone(), blobs, hlc: Mutex::new(Hlc::new(node_id)), changed_tx };
        // Versions issued after a restart must exceed every stored one.
        let max = store.all_records()?.into_iter().map(|r| r.version).max();
        if let Some(v) = max {
            store.hlc.lock().unwrap_or_else(|e| e.into_inner()).observe(v, now_ms());
        }
        Ok(store)
    }

    pub(super) fn db_err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db { path: self.path.clone(), reason: e.to_string() }
    }

    /// A receiver that changes whenever desired state changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed_tx.subscribe()
    }

    pub(super) fn notify(&self) {
        self.changed_tx.send_modify(|n| *n += 1);
    }

    fn next_version(&self) -> Version {
        self.hlc.lock().unwrap_or_else(|e| e.into_inner()).now(now_ms())
    }

    fn all_records(&self) -> Result<Vec<StoredObject>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(OBJECTS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let rec: StoredObject = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::Corrupt { key: k.value().to_string(), reason: e.to_string() })?;
            out.push(rec);
        }
        Ok(out)
    }

    /// Live objects, optionally of one kind, sorted by key.
    pub fn list(&self, kind: Option<Kind>) -> Result<Vec<StoredObject>, StoreError> {
        let mut v: Vec<StoredObject> =
            self.all_records()?.into_iter().filter(|r| !r.deleted && kind.is_none_or(|k| r.key.kind == k)).collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(v)
    }

    /// One live object.
    pub fn get(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(OBJECTS).map_err(|e| self.db_err(e))?;
        let k = key.to_string();
        let Some(v) = table.get(k.as_str()).map_err(|e| self.db_err(e))? else {
            return Ok(None);
        };
        let rec: StoredObject =
            serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt { key: k, reason: e.to_string() })?;
        Ok((!rec.deleted).then_some(rec))
    }

    /// Writes all objects in one transaction: all are applied or none.
    pub fn apply(
        &self,
        objects: Vec<(Object, BTreeMap<String, Digest>)>,
    ) -> Result<Vec<(ObjectKey, ApplyAction)>, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        let mut results = Vec::new();
        {
            let mut table = txn.open_table(OBJECTS).map_err(|e| self.db_err(e))?;
            for (obj, resolved) in objects {
                let key = obj.key();
                let k = key.to_string();
                let json = obj.to_json();
                let existing: Option<StoredObject> = match table.get(k.as_str()).map_err(|e| self.db_err(e))? {
                    Some(v) => serde_json::from_slice(v.value()).ok(),
                    None => None,
                };
                let now = now_ms();
                let (action, generation, created_ms) = match &existing {
                    Some(e) if !e.deleted && e.object.as_ref() == Some(&json) && e.resolved == resolved => {
                        results.push((key, ApplyAction::Unchanged));
                        continue;
                    }
                    Some(e) if !e.deleted => (ApplyAction::Configured, e.generation + 1, e.created_ms),
                    Some(e) => (ApplyAction::Created, e.generation + 1, now),
                    None => (ApplyAction::Created, 1, now),
                };
                let verbs = existing.as_ref().filter(|e| !e.deleted).map(|e| e.verbs.clone()).unwrap_or_default();
                let rec = StoredObject {
                    key: key.clone(),
                    version: self.next_version(),
                    deleted: false,
                    object: Some(json),
                    resolved,
                    generation,
                    created_ms,
                    updated_ms: now,
                    verbs,
                };
                let bytes = serde_json::to_vec(&rec).map_err(|e| self.db_err(e))?;
                table.insert(k.as_str(), bytes.as_slice()).map_err(|e| self.db_err(e))?;
                results.push((key, action));
            }
        }
        txn.commit().map_err(|e| self.db_err(e))?;
        if results.iter().any(|(_, a)| *a != ApplyAction::Unchanged) {
            self.notify();
        }
        Ok(results)
    }

    /// Counts one more `verb` on an existing object (a new version; the spec and its
    /// generation are unchanged). Returns the object, or None if there is none.
    pub fn add_verb(&self, key: &ObjectKey, verb: &str) -> Result<Option<StoredObject>, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        let out = {
            let mut table = txn.open_table(OBJECTS).map_err(|e| self.db_err(e))?;
            let k = key.to_string();
            let existing: Option<StoredObject> = match table.get(k.as_str()).map_err(|e| self.db_err(e))? {
                Some(v) => Some(
                    serde_json::from_slice(v.value())
                        .map_err(|e| StoreError::Corrupt { key: k.clone(), reason: e.to_string() })?,
                ),
                None => None,
            };
            match existing {
                Some(mut rec) if !rec.deleted => {
                    *rec.verbs.entry(verb.to_string()).or_default() += 1;
                    rec.version = self.next_version();
                    rec.updated_ms = now_ms();
                    let bytes = serde_json::to_vec(&rec).map_err(|e| self.db_err(e))?;
                    table.insert(k.as_str(), bytes.as_slice()).map_err(|e| self.db_err(e))?;
                    Some(rec)
                }
                _ => None,
            }
        };
        txn.commit().map_err(|e| self.db_err(e))?;
        if out.is_some() {
            self.notify();
        }
        Ok(out)
    }

    /// Replaces the spec of an existing object (e.g. `scale`).
    pub fn update<F>(&self, key: &ObjectKey, f: F) -> Result<Option<StoredObject>, StoreError>
    where
        F: FnOnce(&mut Object),
    {
        let Some(rec) = self.get(key)? else { return Ok(None) };
        let Some(mut obj) = rec.typed() else { return Ok(None) };
        f(&mut obj);
        self.apply(vec![(obj, rec.resolved.clone())])?;
        self.get(key)
    }

    /// Deletes objects (writes tombstones). Returns which existed.
    pub fn delete(&self, keys: &[ObjectKey]) -> Result<Vec<bool>, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        {
            let mut table = txn.open_table(OBJECTS).map_err(|e| self.db_err(e))?;
            let mut jobs = txn.open_table(JOBS).map_err(|e| self.db_err(e))?;
            let mut rollouts = txn.open_table(ROLLOUTS).map_err(|e| self.db_err(e))?;
            for key in keys {
                let k = key.to_string();
                let existing: Option<StoredObject> = match table.get(k.as_str()).map_err(|e| self.db_err(e))? {
                    Some(v) => serde_json::from_slice(v.value()).ok(),
                    None => None,
                };
                match existing {
                    Some(mut rec) if !rec.deleted => {
                        rec.deleted = true;
                        rec.object = None;
                        rec.version = self.next_version();
                        rec.updated_ms = now_ms();
                        let bytes = serde_json::to_vec(&rec).map_err(|e| self.db_err(e))?;
                        table.insert(k.as_str(), bytes.as_slice()).map_err(|e| self.db_err(e))?;
                        jobs.remove(k.as_str()).map_err(|e| self.db_err(e))?;
                        rollouts.remove(k.as_str()).map_err(|e| self.db_err(e))?;
                        out.push(true);
                    }
                    _ => out.push(false),
                }
            }
        }
        txn.commit().map_err(|e| self.db_err(e))?;
        if out.iter().any(|d| *d) {
            self.notify();
        }
        Ok(out)
    }

    /// Drops tombstones older than `older_than_ms` (after every peer has had time to see them).
    pub fn gc_tombstones(&self, older_than_ms: u64) -> Result<usize, StoreError> {
        let cutoff = now_ms().saturating_sub(older_than_ms);
        let dead: Vec<String> = self
            .all_records()?
            .into_iter()
            .filter(|r| r.deleted && r.updated_ms < cutoff)
            .map(|r| r.key.to_string())
            .collect();
        if dead.is_empty() {
            return Ok(0);
        }
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut table = txn.open_table(OBJECTS).map_err(|e| self.db_err(e))?;
            for k in &dead {
                table.remove(k.as_str()).map_err(|e| self.db_err(e))?;
            }
        }
        txn.commit().map_err(|e| self.db_err(e))?;
        Ok(dead.len())
    }

    // --- module blobs and tags ---

    /// Path of a blob (which may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).exists()
    }

    /// Stores bytes under their digest (durably; idempotent).
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(bytes);
        let path = self.blob_path(&digest);
        if path.exists() {
            return Ok(digest);
        }
        wasmfleet_durable::write(&path, bytes, wasmfleet_durable::PUBLIC).map_err(blob_io)?;
        Ok(digest)
    }

    /// A writer that stores a blob as it arrives: bytes go to a temporary file and into the
    /// digest as they come; [`BlobWriter::finish`] checks the digest, fsyncs and renames.
    pub fn blob_writer(&self, digest: Digest) -> Result<BlobWriter, StoreError> {
        let file = wasmfleet_durable::AtomicFile::create(&self.blob_path(&digest), wasmfleet_durable::PUBLIC)
            .map_err(blob_io)?;
        Ok(BlobWriter { file, digest, hasher: sha2::Sha256::default() })
    }

    /// Where a blob being fetched collects its bytes until it is whole.
    pub fn partial_blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(format!("{}.partial", digest.hex()))
    }

    /// Turns a whole partial file into the blob, durably, if its content matches `digest`;
    /// otherwise deletes it and says so.
    pub fn adopt_partial_blob(&self, digest: &Digest, partial: &Path) -> Result<(), StoreError> {
        let io = |source| StoreError::Io { path: partial.to_path_buf(), source };
        let bytes = std::fs::read(partial).map_err(io)?;
        if Digest::of(&bytes) != *digest {
            let _ = std::fs::remove_file(partial);
            return Err(StoreError::Corrupt {
                key: digest.to_string(),
                reason: "fetched content does not match its digest".into(),
            });
        }
        wasmfleet_durable::rename(partial, &self.blob_path(digest)).map_err(blob_io)?;
        Ok(())
    }

    /// Reads a blob and verifies its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.blob_path(digest);
        match std::fs::read(&path) {
            Ok(bytes) if Digest::of(&bytes) == *digest => Ok(Some(bytes)),
            Ok(_) => Err(StoreError::Corrupt {
                key: digest.to_string(),
                reason: "blob content does not match its digest".into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    pub fn set_tag(&self, rec: &ModuleRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut t = txn.open_table(TAGS).map_err(|e| self.db_err(e))?;
            let bytes = serde_json::to_vec(rec).map_err(|e| self.db_err(e))?;
            t.insert(rec.name.as_str(), bytes.as_slice()).map_err(|e| self.db_err(e))?;
        }
        txn.commit().map_err(|e| self.db_err(e))
    }

    pub fn get_tag(&self, name: &str) -> Result<Option<ModuleRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let t = txn.open_table(TAGS).map_err(|e| self.db_err(e))?;
        Ok(t.get(name).map_err(|e| self.db_err(e))?.and_then(|v| serde_json::from_slice(v.value()).ok()))
    }

    pub fn list_tags(&self) -> Result<Vec<ModuleRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let t = txn.open_table(TAGS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.db_err(e))? {
            let (_, v) = row.map_err(|e| self.db_err(e))?;
            if let Ok(r) = serde_json::from_slice(v.value()) {
                out.push(r);
            }
        }
        Ok(out)
    }

    // --- job progress ---

    pub fn job_record(&self, key: &ObjectKey) -> Result<Option<JobRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let t = txn.open_table(JOBS).map_err(|e| self.db_err(e))?;
        let k = key.to_string();
        Ok(t.get(k.as_str()).map_err(|e| self.db_err(e))?.and_then(|v| serde_json::from_slice(v.value()).ok()))
    }

    pub fn set_job_record(&self, key: &ObjectKey, rec: &JobRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut t = txn.open_table(JOBS).map_err(|e| self.db_err(e))?;
            let bytes = serde_json::to_vec(rec).map_err(|e| self.db_err(e))?;
            let k = key.to_string();
            t.insert(k.as_str(), bytes.as_slice()).map_err(|e| self.db_err(e))?;
        }
        txn.commit().map_err(|e| self.db_err(e))
    }
}

/// A failed blob write, on the path the step failed on.
fn blob_io(e: wasmfleet_durable::WriteError) -> StoreError {
    StoreError::Io { path: e.path.clone(), source: e.into() }
}

/// A blob being written as it arrives (see [`Store::blob_writer`]). Dropped unfinished, it
/// leaves nothing behind.
pub struct BlobWriter {
    file: wasmfleet_durable::AtomicFile,
    digest: Digest,
    hasher: sha2::Sha256,
}

impl BlobWriter {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        use sha2::Digest as _;
        use std::io::Write as _;
        self.hasher.update(bytes);
        self.file
            .write_all(bytes)
            .map_err(|source| StoreError::Io { path: self.file.temp_path().to_path_buf(), source })
    }

    /// Makes the blob durable under its digest if the bytes match it.
    pub fn finish(mut self) -> Result<(), StoreError> {
        use sha2::Digest as _;
        let got = Digest(std::mem::take(&mut self.hasher).finalize().into());
        if got != self.digest {
            return Err(StoreError::Corrupt {
                key: self.digest.to_string(),
                reason: format!("content does not match digest {} (it is {got})", self.digest),
            });
        }
        self.file.commit().map_err(blob_io)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use wasmfleet_cluster::replication::Storage as _;

    use super::*;

    const HELLO: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: NAME\nspec:\n  replicas: REPLICAS\n  selector:\n    matchLabels: {app: x}\n  template:\n    metadata:\n      labels: {app: x}\n    spec:\n      containers:\n      - name: x\n        image: hello:1.0\n";

    pub(in crate::state) fn obj(name: &str, replicas: u32) -> (Object, BTreeMap<String, Digest>) {
        let text = HELLO.replace("NAME", name).replace("REPLICAS", &replicas.to_string());
        let mut objs = crate::manifest::parse_str("t.yaml", &text).expect("valid");
        (objs.remove(0), BTreeMap::new())
    }

    pub(in crate::state) fn store(node: u64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), node).unwrap();
        (dir, s)
    }

    pub(in crate::state) fn replicas(s: &Store, name: &str) -> Option<u32> {
        let key = ObjectKey { kind: Kind::Deployment, namespace: "default".into(), name: name.into() };
        match s.get(&key).unwrap()?.typed()? {
            Object::Deployment(d) => Some(d.spec.replicas()),
            _ => None,
        }
    }

    #[test]
    fn apply_is_durable_and_reports_actions() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), 1).unwrap();
            let r = s.apply(vec![obj("a", 1), obj("b", 2)]).unwrap();
            assert!(r.iter().all(|(_, a)| *a == ApplyAction::Created));
            let r = s.apply(vec![obj("a", 1), obj("b", 3)]).unwrap();
            assert_eq!(
                r.iter().map(|(_, a)| *a).collect::<Vec<_>>(),
                [ApplyAction::Unchanged, ApplyAction::Configured]
            );
        }
        let s = Store::open(dir.path(), 1).unwrap();
        assert_eq!(replicas(&s, "b"), Some(3));
        assert_eq!(s.list(None).unwrap().len(), 2);
    }

    #[test]
    fn old_tombstones_are_collected() {
        let (_d, s) = store(1);
        s.apply(vec![obj("gone", 1)]).unwrap();
        s.delete(&[ObjectKey { kind: Kind::Deployment, namespace: "default".into(), name: "gone".into() }]).unwrap();
        assert_eq!(s.gc_tombstones(60_000).unwrap(), 0, "too young");
        assert_eq!(s.summary().unwrap().len(), 1);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(s.gc_tombstones(1).unwrap(), 1);
        assert!(s.summary().unwrap().is_empty());
    }

    #[test]
    fn blobs_are_content_addressed_and_verified() {
        let (_d, s) = store(1);
        let d = s.put_blob(b"\0asm module bytes").unwrap();
        assert_eq!(s.put_blob(b"\0asm module bytes").unwrap(), d);
        assert_eq!(s.read_blob(&d).unwrap().as_deref(), Some(&b"\0asm module bytes"[..]));
        std::fs::write(s.blob_path(&d), b"tampered").unwrap();
        assert!(s.read_blob(&d).is_err());
        assert_eq!(s.read_blob(&Digest::of(b"absent")).unwrap(), None);
    }
}
