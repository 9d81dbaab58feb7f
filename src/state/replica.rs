//! The store as a replica of the cluster's desired state: [`Store`] implements the cluster
//! crate's replication [`Storage`], so the crate's replicator pushes, pulls and serves it.
//!
//! Three keyspaces replicate, each an [`Entry`] of a [`Record`] under its own keys:
//! - desired objects, `Kind/namespace/name`: last writer wins by their HLC version, deletes
//!   are tombstones (a tombstone that wins also drops the object's Job record);
//! - module tags, `tag/<name>`: last writer wins by push time, the digest breaking ties;
//! - Job records, `job/<Kind/namespace/name>`: a join ([`JobRecord::merge`]); their version is
//!   a fingerprint of the content. A record is kept only while its Job exists here with at
//!   least its generation (anti-entropy brings it again once the Job arrives).
//! - rollout records, `rollout/<Kind/namespace/name>`: last writer wins by the record's own
//!   sequence ([`RolloutRecord::version`]); kept only while their Deployment exists here.
//! - volume records, `volume/<volume name>`: last writer wins by the record's own sequence
//!   ([`VolumeRecord::version`]); they outlive their claim (a retained volume keeps its data).
//!
//! Which entry a key ends with is decided by the crate's one merge rule,
//! [`resolve`], inside the redb write transaction that stores it. Key, version and tombstone
//! flag of an entry from a peer are taken from the record it carries, never from the envelope:
//! an entry whose key does not match its record is refused.

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use wasmfleet_cluster::Version;
use wasmfleet_cluster::replication::{Entry, Key, Merge, Mode, Storage, Summary, resolve};

use super::store::{JOBS, OBJECTS, ROLLOUTS, TAGS, VOLUMES};
use super::{
    JOB_PREFIX, JobRecord, ModuleRecord, ROLLOUT_PREFIX, RolloutRecord, Store, StoreError, StoredObject, TAG_PREFIX,
    VOLUME_PREFIX, VolumeRecord,
};
use crate::clock::now_ms;
use crate::manifest::ObjectKey;

/// What a replicated entry of this node's store holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    Object(StoredObject),
    Tag(ModuleRecord),
    Job(JobRecord),
    Rollout(RolloutRecord),
    Volume(VolumeRecord),
}

impl Merge for Record {
    fn mode(key: &str) -> Mode {
        if key.starts_with(JOB_PREFIX) { Mode::Join } else { Mode::Lww }
    }

    fn join(&mut self, other: &Self) -> Option<Version> {
        match (self, other) {
            (Record::Job(mine), Record::Job(theirs)) => mine.merge(theirs).then(|| job_version(mine)),
            _ => None,
        }
    }
}

/// What a summary reads of a stored object.
#[derive(Deserialize)]
struct ObjectStamp {
    version: Version,
}

/// The version of a tag: push time, then digest bytes as a tie-break.
fn tag_version(t: &ModuleRecord) -> Version {
    let mut tie = [0u8; 8];
    tie.copy_from_slice(&t.digest.0[..8]);
    Version { wall_ms: t.pushed_ms, counter: 0, node: u64::from_be_bytes(tie) }
}

/// The version of a Job record: a fingerprint that differs whenever the content does
/// (compared for equality, not order).
fn job_version(rec: &JobRecord) -> Version {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(serde_json::to_vec(rec).unwrap_or_default());
    let mut node = [0u8; 8];
    node.copy_from_slice(&hash[..8]);
    Version { wall_ms: rec.generation, counter: rec.done.len() as u32, node: u64::from_be_bytes(node) }
}

/// The replicated keys of a store, by keyspace.
enum Keyspace<'k> {
    Object(&'k str),
    Tag(&'k str),
    Job(&'k str),
    Rollout(&'k str),
    Volume(&'k str),
}

fn keyspace(key: &str) -> Keyspace<'_> {
    if let Some(name) = key.strip_prefix(TAG_PREFIX) {
        Keyspace::Tag(name)
    } else if let Some(object) = key.strip_prefix(JOB_PREFIX) {
        Keyspace::Job(object)
    } else if let Some(object) = key.strip_prefix(ROLLOUT_PREFIX) {
        Keyspace::Rollout(object)
    } else if let Some(name) = key.strip_prefix(VOLUME_PREFIX) {
        Keyspace::Volume(name)
    } else {
        Keyspace::Object(key)
    }
}

fn object_entry(rec: StoredObject) -> Entry<Record> {
    Entry { key: rec.key.to_string(), version: rec.version, deleted: rec.deleted, value: Some(Record::Object(rec)) }
}

fn tag_entry(rec: ModuleRecord) -> Entry<Record> {
    Entry::live(format!("{TAG_PREFIX}{}", rec.name), tag_version(&rec), Record::Tag(rec))
}

fn job_entry(object: &str, rec: JobRecord) -> Entry<Record> {
    Entry::live(format!("{JOB_PREFIX}{object}"), job_version(&rec), Record::Job(rec))
}

fn rollout_entry(object: &str, rec: RolloutRecord) -> Entry<Record> {
    Entry::live(format!("{ROLLOUT_PREFIX}{object}"), rec.version(), Record::Rollout(rec))
}

fn volume_entry(rec: VolumeRecord) -> Entry<Record> {
    Entry::live(format!("{VOLUME_PREFIX}{}", rec.name), rec.version(), Record::Volume(rec))
}

/// Rebuilds an entry from a peer out of the record it carries; refuses one whose key does not
/// match its record.
fn checked(entry: Entry<Record>) -> Result<Entry<Record>, StoreError> {
    let refuse = |key: &str, reason: &str| StoreError::Refused { key: key.to_owned(), reason: reason.to_owned() };
    let Entry { key, value, .. } = entry;
    match (keyspace(&key), value) {
        (Keyspace::Object(k), Some(Record::Object(rec))) if rec.key.to_string() == k => Ok(object_entry(rec)),
        (Keyspace::Tag(name), Some(Record::Tag(rec))) if rec.name == name => Ok(tag_entry(rec)),
        (Keyspace::Job(object), Some(Record::Job(rec))) if object.parse::<ObjectKey>().is_ok() => {
            Ok(job_entry(object, rec))
        }
        (Keyspace::Rollout(object), Some(Record::Rollout(rec))) if object.parse::<ObjectKey>().is_ok() => {
            Ok(rollout_entry(object, rec))
        }
        (Keyspace::Volume(name), Some(Record::Volume(rec))) if rec.name == name => Ok(volume_entry(rec)),
        (_, None) => Err(refuse(&key, "an entry without its record")),
        _ => Err(refuse(&key, "the record does not belong under this key")),
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { key: key.to_owned(), reason: e.to_string() })
}

/// Reads one table row as a typed record.
fn row<T, Tbl>(store: &Store, table: &Tbl, key: &str) -> Result<Option<T>, StoreError>
where
    T: serde::de::DeserializeOwned,
    Tbl: ReadableTable<&'static str, &'static [u8]>,
{
    match table.get(key).map_err(|e| store.db_err(e))? {
        Some(v) => decode(key, v.value()).map(Some),
        None => Ok(None),
    }
}

impl Storage for Store {
    type Value = Record;
    type Error = StoreError;

    /// Every object (tombstones included), tag and Job record with its version. A record
    /// that cannot be read is an error, not a gap.
    fn summary(&self) -> Result<Summary, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        let tables = [
            (OBJECTS, ""),
            (TAGS, TAG_PREFIX),
            (JOBS, JOB_PREFIX),
            (ROLLOUTS, ROLLOUT_PREFIX),
            (VOLUMES, VOLUME_PREFIX),
        ];
        for (table, prefix) in tables {
            let t = txn.open_table(table).map_err(|e| self.db_err(e))?;
            for row in t.iter().map_err(|e| self.db_err(e))? {
                let (k, v) = row.map_err(|e| self.db_err(e))?;
                let (k, v) = (k.value(), v.value());
                out.push(match prefix {
                    // Only the version: an object's spec is not parsed to summarise it (this
                    // runs every anti-entropy round). Its row key is its key.
                    "" => (k.to_owned(), decode::<ObjectStamp>(k, v)?.version),
                    TAG_PREFIX => (format!("{TAG_PREFIX}{k}"), tag_version(&decode(k, v)?)),
                    ROLLOUT_PREFIX => {
                        (format!("{ROLLOUT_PREFIX}{k}"), decode::<super::rollout::RolloutStamp>(k, v)?.version())
                    }
                    VOLUME_PREFIX => {
                        (format!("{VOLUME_PREFIX}{k}"), decode::<super::volume::VolumeStamp>(k, v)?.version())
                    }
                    _ => (format!("{JOB_PREFIX}{k}"), job_version(&decode(k, v)?)),
                });
            }
        }
        Ok(Summary::new(out))
    }

    fn read(&self, keys: &[Key]) -> Result<Vec<Entry<Record>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let objects = txn.open_table(OBJECTS).map_err(|e| self.db_err(e))?;
        let tags = txn.open_table(TAGS).map_err(|e| self.db_err(e))?;
        let jobs = txn.open_table(JOBS).map_err(|e| self.db_err(e))?;
        let rollouts = txn.open_table(ROLLOUTS).map_err(|e| self.db_err(e))?;
        let volumes = txn.open_table(VOLUMES).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for key in keys {
            let entry = match keyspace(key) {
                Keyspace::Object(k) => row(self, &objects, k)?.map(object_entry),
                Keyspace::Tag(name) => row(self, &tags, name)?.map(tag_entry),
                Keyspace::Job(object) => row(self, &jobs, object)?.map(|rec| job_entry(object, rec)),
                Keyspace::Rollout(object) => row(self, &rollouts, object)?.map(|rec| rollout_entry(object, rec)),
                Keyspace::Volume(name) => row(self, &volumes, name)?.map(volume_entry),
            };
            out.extend(entry);
        }
        Ok(out)
    }

    /// Merges a batch in one transaction (one fsync): objects and tags first, then Job
    /// records, which need their Job. Versions of objects seen are fed to the clock, so later
    /// local writes order after them.
    fn merge(&self, batch: Vec<Entry<Record>>) -> Result<usize, StoreError> {
        let mut batch = batch.into_iter().map(checked).collect::<Result<Vec<_>, _>>()?;
        batch.sort_by_key(|e| matches!(keyspace(&e.key), Keyspace::Job(_) | Keyspace::Rollout(_)));
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        let mut changed = 0;
        {
            let mut objects = txn.open_table(OBJECTS).map_err(|e| self.db_err(e))?;
            let mut tags = txn.open_table(TAGS).map_err(|e| self.db_err(e))?;
            let mut jobs = txn.open_table(JOBS).map_err(|e| self.db_err(e))?;
            let mut rollouts = txn.open_table(ROLLOUTS).map_err(|e| self.db_err(e))?;
            let mut volumes = txn.open_table(VOLUMES).map_err(|e| self.db_err(e))?;
            for incoming in batch {
                let key = incoming.key.clone();
                let space = keyspace(&key);
                let local = match space {
                    Keyspace::Object(k) => {
                        self.hlc.lock().unwrap_or_else(|e| e.into_inner()).observe(incoming.version, now_ms());
                        row(self, &objects, k)?.map(object_entry)
                    }
                    Keyspace::Tag(name) => row(self, &tags, name)?.map(tag_entry),
                    Keyspace::Job(object) => {
                        let Some(Record::Job(rec)) = &incoming.value else { continue };
                        let job: Option<StoredObject> = row(self, &objects, object)?;
                        if job.is_none_or(|j| j.deleted || rec.generation > j.generation) {
                            continue;
                        }
                        row(self, &jobs, object)?.map(|r| job_entry(object, r))
                    }
                    Keyspace::Rollout(object) => {
                        let owner: Option<StoredObject> = row(self, &objects, object)?;
                        if owner.is_none_or(|o| o.deleted) {
                            continue;
                        }
                        row(self, &rollouts, object)?.map(|r| rollout_entry(object, r))
                    }
                    Keyspace::Volume(name) => row(self, &volumes, name)?.map(volume_entry),
                };
                let Some(winner) = resolve(local.as_ref(), incoming) else { continue };
                let bytes = match &winner.value {
                    Some(Record::Object(rec)) => serde_json::to_vec(rec),
                    Some(Record::Tag(rec)) => serde_json::to_vec(rec),
                    Some(Record::Job(rec)) => serde_json::to_vec(rec),
                    Some(Record::Rollout(rec)) => serde_json::to_vec(rec),
                    Some(Record::Volume(rec)) => serde_json::to_vec(rec),
                    None => continue,
                }
                .map_err(|e| self.db_err(e))?;
                match space {
                    Keyspace::Object(k) => {
                        objects.insert(k, bytes.as_slice()).map_err(|e| self.db_err(e))?;
                        if winner.deleted {
                            jobs.remove(k).map_err(|e| self.db_err(e))?;
                            rollouts.remove(k).map_err(|e| self.db_err(e))?;
                        }
                    }
                    Keyspace::Tag(name) => {
                        tags.insert(name, bytes.as_slice()).map_err(|e| self.db_err(e))?;
                    }
                    Keyspace::Job(object) => {
                        jobs.insert(object, bytes.as_slice()).map_err(|e| self.db_err(e))?;
                    }
                    Keyspace::Rollout(object) => {
                        rollouts.insert(object, bytes.as_slice()).map_err(|e| self.db_err(e))?;
                    }
                    Keyspace::Volume(name) => {
                        volumes.insert(name, bytes.as_slice()).map_err(|e| self.db_err(e))?;
                    }
                }
                changed += 1;
            }
        }
        txn.commit().map_err(|e| self.db_err(e))?;
        if changed > 0 {
            self.notify();
        }
        Ok(changed)
    }
}

impl Store {
    /// Writes a rollout record decided on this node, by the same rule as a peer's (a record
    /// below the stored one loses). Returns whether it was stored.
    pub fn put_rollout(&self, key: &ObjectKey, rec: RolloutRecord) -> Result<bool, StoreError> {
        Ok(self.merge(vec![rollout_entry(&key.to_string(), rec)])? > 0)
    }

    /// Writes a volume record decided on this node, by the same rule as a peer's (a record
    /// below the stored one loses). Returns whether it was stored.
    pub fn put_volume(&self, rec: VolumeRecord) -> Result<bool, StoreError> {
        Ok(self.merge(vec![volume_entry(rec)])? > 0)
    }

    /// Records Job progress made on this node, merged into the stored records by the same
    /// rule as a peer's (see [`JobRecord`]). Returns how many changed.
    pub fn merge_jobs(&self, records: Vec<(ObjectKey, JobRecord)>) -> Result<usize, StoreError> {
        self.merge(records.into_iter().map(|(key, rec)| job_entry(&key.to_string(), rec)).collect())
    }
}

#[cfg(test)]
mod tests {
    use wasmfleet_cluster::replication::Storage as _;

    use super::*;
    use crate::manifest::Kind;
    use crate::state::store::tests::{obj, replicas, store};

    fn key(name: &str) -> ObjectKey {
        ObjectKey { kind: Kind::Deployment, namespace: "default".into(), name: name.into() }
    }

    fn everything(s: &Store) -> Vec<Entry<Record>> {
        let keys: Vec<Key> = s.summary().unwrap().entries().iter().map(|(k, _)| k.clone()).collect();
        s.read(&keys).unwrap()
    }

    fn tag(name: &str, pushed_ms: u64, bytes: &[u8]) -> ModuleRecord {
        ModuleRecord {
            name: name.into(),
            digest: wasmfleet_runtime::Digest::of(bytes),
            kind: wasmfleet_runtime::ModuleKind::HttpProxy,
            size_bytes: bytes.len() as u64,
            pushed_ms,
        }
    }

    #[test]
    fn stores_converge_by_exchanging_entries_in_any_order() {
        let (_d1, a) = store(1);
        let (_d2, b) = store(2);
        a.apply(vec![obj("x", 1), obj("y", 1)]).unwrap();
        b.apply(vec![obj("x", 5)]).unwrap(); // later write of x on b
        a.delete(&[key("y")]).unwrap();
        a.set_tag(&tag("hello:1.0", 10, b"one")).unwrap();
        b.set_tag(&tag("hello:1.0", 20, b"two")).unwrap(); // later push on b
        let (from_a, from_b) = (everything(&a), everything(&b));
        assert_eq!(from_a.len(), 3);
        a.merge(from_b.clone()).unwrap();
        b.merge(from_a.clone()).unwrap();
        // Merging again, or in the other order, changes nothing.
        assert_eq!(a.merge(from_b).unwrap(), 0);
        assert_eq!(b.merge(from_a).unwrap(), 0);
        assert_eq!(a.digest().unwrap(), b.digest().unwrap());
        assert_eq!(replicas(&a, "x"), Some(5));
        assert_eq!(replicas(&b, "y"), None, "the tombstone won");
        assert_eq!(a.get_tag("hello:1.0").unwrap().unwrap().pushed_ms, 20);
        // A write after the merge orders after everything seen.
        a.apply(vec![obj("x", 7)]).unwrap();
        let newest = a.read(&["Deployment/default/x".into()]).unwrap();
        assert_eq!(b.merge(newest).unwrap(), 1);
        assert_eq!(replicas(&b, "x"), Some(7));
    }

    #[test]
    fn job_records_join_and_need_their_job() {
        let (_d1, a) = store(1);
        let (_d2, b) = store(2);
        let rec = |done: &[u32]| JobRecord { generation: 1, done: done.to_vec(), ..Default::default() };
        // Without its Job a record is not kept.
        assert_eq!(a.merge_jobs(vec![(key("j"), rec(&[0]))]).unwrap(), 0);
        a.apply(vec![obj("j", 1)]).unwrap();
        b.merge(everything(&a)).unwrap();
        a.merge_jobs(vec![(key("j"), rec(&[0]))]).unwrap();
        b.merge_jobs(vec![(key("j"), rec(&[1]))]).unwrap();
        // Concurrent records from two nodes: each pulls the other's (their versions differ
        // but neither is "newer") and both end with the union.
        let wanted = a.summary().unwrap().wanted::<Record>(&b.summary().unwrap());
        assert_eq!(wanted, ["job/Deployment/default/j"]);
        a.merge(b.read(&wanted).unwrap()).unwrap();
        b.merge(a.read(&wanted).unwrap()).unwrap();
        assert_eq!(a.job_record(&key("j")).unwrap().unwrap().done, [0, 1]);
        assert_eq!(a.digest().unwrap(), b.digest().unwrap());
        // A record from a later generation than the Job here waits for the Job.
        let later = JobRecord { generation: 2, ..Default::default() };
        assert_eq!(a.merge_jobs(vec![(key("j"), later)]).unwrap(), 0);
        // A tombstone that wins drops the record.
        b.delete(&[key("j")]).unwrap();
        a.merge(b.read(&["Deployment/default/j".into()]).unwrap()).unwrap();
        assert_eq!(a.job_record(&key("j")).unwrap(), None);
    }

    #[test]
    fn entries_whose_key_does_not_match_their_record_are_refused() {
        let (_d1, a) = store(1);
        let (_d2, b) = store(2);
        a.apply(vec![obj("x", 1)]).unwrap();
        let mut entries = everything(&a);
        entries[0].key = "Deployment/default/other".into();
        assert!(matches!(b.merge(entries), Err(StoreError::Refused { .. })));
        let mut entries = everything(&a);
        entries[0].value = None;
        assert!(matches!(b.merge(entries), Err(StoreError::Refused { .. })));
        // A lying version is ignored: the record's own version counts.
        let mut entries = everything(&a);
        entries[0].version = Version { wall_ms: u64::MAX, counter: 0, node: 9 };
        assert_eq!(b.merge(entries).unwrap(), 1);
        assert_eq!(b.summary().unwrap(), a.summary().unwrap());
        assert!(b.list(None).unwrap().len() == 1, "nothing was written by the refused batches");
    }

    #[test]
    fn unreadable_records_are_errors_not_gaps() {
        let (_d, s) = store(1);
        s.apply(vec![obj("x", 1)]).unwrap();
        let txn = s.db.begin_write().unwrap();
        txn.open_table(TAGS).unwrap().insert("broken:1", b"not json".as_slice()).unwrap();
        txn.commit().unwrap();
        assert!(matches!(s.summary(), Err(StoreError::Corrupt { .. })));
        assert!(matches!(s.digest(), Err(StoreError::Corrupt { .. })));
        assert!(matches!(s.read(&["tag/broken:1".into()]), Err(StoreError::Corrupt { .. })));
        assert_eq!(s.read(&["Deployment/default/x".into(), "tag/absent".into()]).unwrap().len(), 1);
    }
}
