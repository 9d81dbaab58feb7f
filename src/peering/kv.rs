//! `wasi:keyvalue` buckets kept by the cluster ([`ClusterKv`]): the runtime's
//! [`KeyValue`] backend of every workload on this node, following the rules of
//! [`wasmfleet_cluster::kv`] (owners by rendezvous, every write executed by the key's primary
//! under a majority, acknowledged once two copies are durable).
//!
//! Data: `<data>/kv.redb`, one table of `bucket NUL key` → the entry (MessagePack), each write
//! its own transaction (fsync). Requests between nodes go on mesh call channel
//! [`KV_CHANNEL`]. After every change of the live set, each node pushes the keys it is now the
//! primary of to their other owners, so copies converge after a partition heals or an owner
//! changes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::watch;
use wasmfleet_cluster::kv::{
    DEFAULT_COPIES, KV_CHANNEL, KvEntry, KvOp, KvReply, KvRequest, KvVersion, has_quorum, node_tag, owners,
    write_quorum,
};
use wasmfleet_cluster::membership::{Member, MemberState};
use wasmfleet_cluster::mesh::{Mesh, PeerInfo};
use wasmfleet_runtime::keyvalue::{KeyValue, KvError, KvFuture, KvToken, counter_value, page};

use super::NodeInfo;

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// One request between nodes.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The live nodes as this node sees them (itself included), with their cluster addresses,
/// and how many members the cluster has (alive or not).
struct View {
    live: Vec<(String, Option<SocketAddr>)>,
    members: usize,
    /// A fingerprint of the live set: a key's primary catches up once per live set.
    generation: u64,
}

/// The cluster's buckets, as this node serves them.
pub struct ClusterKv {
    node: String,
    tag: u64,
    mesh: Arc<Mesh>,
    members: watch::Receiver<Vec<Member>>,
    /// The live set, recomputed when membership changes (reads stay off the gossip state).
    view: std::sync::RwLock<Arc<View>>,
    db: Arc<Database>,
    /// One write at a time per key on its primary.
    locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// The live-set generation each key last caught up under (on its primary).
    synced: DashMap<String, u64>,
}

impl std::fmt::Debug for ClusterKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKv").field("node", &self.node).finish_non_exhaustive()
    }
}

fn db_key(bucket: &str, key: &str) -> String {
    format!("{bucket}\0{key}")
}

fn other(e: impl std::fmt::Display) -> KvError {
    KvError::Other(e.to_string())
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Executed {
    /// Done; the counter's new value for an increment.
    Done(Option<u64>),
    /// A swap whose expected version was no longer the key's.
    Conflict,
}

/// A key as this node holds it: key, version counter, value (None: deleted).
pub type LocalCopy = (String, u64, Option<Vec<u8>>);

/// The live set `node` sees in `members` (itself included, with no address).
fn compute_view(node: &str, members: &[Member]) -> View {
    let mut live: Vec<(String, Option<SocketAddr>)> = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for m in members {
        names.insert(m.name.clone());
        if m.state != MemberState::Alive || m.name == node {
            continue;
        }
        let addr =
            m.kv.get("info")
                .and_then(|i| serde_json::from_str::<NodeInfo>(i).ok())
                .and_then(|i| i.cluster.parse().ok());
        live.push((m.name.clone(), addr));
    }
    live.push((node.to_string(), None));
    names.insert(node.to_string());
    live.sort();
    let generation = node_tag(&live.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(","));
    View { live, members: names.len(), generation }
}

/// Keeps `entry` for `bucket`/`key` in `db` if it is newer than the one there, durably.
/// Returns whether it did.
fn keep_in(db: &Database, bucket: &str, key: &str, entry: &KvEntry) -> Result<bool, KvError> {
    let k = db_key(bucket, key);
    let txn = db.begin_write().map_err(other)?;
    let stored = {
        let mut t = txn.open_table(KV).map_err(other)?;
        let current: Option<KvEntry> = match t.get(k.as_str()).map_err(other)? {
            Some(v) => rmp_serde::from_slice(v.value()).ok(),
            None => None,
        };
        if entry.newer_than(current.as_ref()) {
            let bytes = rmp_serde::to_vec_named(entry).map_err(other)?;
            t.insert(k.as_str(), bytes.as_slice()).map_err(other)?;
            true
        } else {
            false
        }
    };
    txn.commit().map_err(other)?;
    Ok(stored)
}

impl ClusterKv {
    pub fn open(
        data_dir: &Path,
        node: &str,
        mesh: Arc<Mesh>,
        members: watch::Receiver<Vec<Member>>,
    ) -> anyhow::Result<Arc<ClusterKv>> {
        let path = data_dir.join("kv.redb");
        let db = Database::create(&path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(KV)?;
        txn.commit()?;
        let view = std::sync::RwLock::new(Arc::new(compute_view(node, &members.borrow())));
        let kv = Arc::new(ClusterKv {
            node: node.to_string(),
            tag: node_tag(node),
            mesh,
            members,
            view,
            db: Arc::new(db),
            locks: DashMap::new(),
            synced: DashMap::new(),
        });
        kv.serve();
        kv.spawn_repair();
        Ok(kv)
    }

    /// Answers peers' requests on [`KV_CHANNEL`] (holding this store weakly).
    fn serve(self: &Arc<Self>) {
        let weak: Weak<ClusterKv> = Arc::downgrade(self);
        let handler = move |_peer: PeerInfo, request: Bytes| {
            let kv = weak.upgrade();
            async move {
                let kv = kv.ok_or_else(|| "the key-value store has stopped".to_owned())?;
                let req: KvRequest = rmp_serde::from_slice(&request).map_err(|e| format!("bad kv request: {e}"))?;
                let reply = kv.handle(req).await;
                rmp_serde::to_vec_named(&reply).map(Bytes::from).map_err(|e| e.to_string())
            }
        };
        self.mesh.set_call_handler(KV_CHANNEL, Arc::new(handler));
    }

    /// After every change of the live set, pushes the keys this node is the primary of to
    /// their other owners.
    fn spawn_repair(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let mut members = self.members.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut repair: Option<tokio::task::JoinHandle<()>> = None;
            loop {
                if members.changed().await.is_err() {
                    return;
                }
                let Some(kv) = weak.upgrade() else { return };
                // The view is updated at once; writes and reads route by it.
                let fresh = Arc::new(compute_view(&kv.node, &members.borrow_and_update()));
                if fresh.generation == last {
                    continue;
                }
                last = fresh.generation;
                *kv.view.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                // A repair under an older view is moot: start again under this one, once the
                // burst of changes settles.
                if let Some(r) = repair.take() {
                    r.abort();
                }
                repair = Some(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let view = kv.view();
                    if let Err(e) = kv.repair(&view).await {
                        tracing::warn!(error = %e, "key-value repair after a membership change failed");
                    }
                }));
            }
        });
    }

    fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn owners(&self, view: &View, bucket: &str, key: &str) -> Vec<String> {
        owners(bucket, key, view.live.iter().map(|(n, _)| n.as_str()), DEFAULT_COPIES)
    }

    fn addr(view: &View, node: &str) -> Option<SocketAddr> {
        view.live.iter().find(|(n, _)| n == node).and_then(|(_, a)| *a)
    }

    fn local(&self, bucket: &str, key: &str) -> Result<Option<KvEntry>, KvError> {
        let txn = self.db.begin_read().map_err(other)?;
        let t = txn.open_table(KV).map_err(other)?;
        match t.get(db_key(bucket, key).as_str()).map_err(other)? {
            Some(v) => rmp_serde::from_slice(v.value()).map(Some).map_err(other),
            None => Ok(None),
        }
    }

    /// Keeps `entry` if it is newer than the one here, durably (on a blocking thread: the
    /// commit waits for the disk). Returns whether it did.
    async fn keep(&self, bucket: &str, key: &str, entry: &KvEntry) -> Result<bool, KvError> {
        let (db, bucket, key, entry) = (self.db.clone(), bucket.to_string(), key.to_string(), entry.clone());
        tokio::task::spawn_blocking(move || keep_in(&db, &bucket, &key, &entry)).await.map_err(other)?
    }

    async fn call(&self, node: &str, addr: SocketAddr, req: &KvRequest) -> Result<KvReply, KvError> {
        let bytes = rmp_serde::to_vec_named(req).map_err(other)?;
        let answer = self
            .mesh
            .call_on(KV_CHANNEL, node, addr, Bytes::from(bytes), CALL_TIMEOUT)
            .await
            .map_err(|e| KvError::Other(format!("node {node} did not answer: {e}")))?;
        rmp_serde::from_slice(&answer).map_err(other)
    }

    /// A write, executed by the key's primary (this node, or sent to it).
    async fn write(&self, bucket: &str, key: &str, op: KvOp) -> Result<Executed, KvError> {
        let view = self.view();
        let owners = self.owners(&view, bucket, key);
        let primary = owners.first().cloned().unwrap_or_else(|| self.node.clone());
        if primary == self.node {
            return self.execute(&view, &owners, bucket, key, op).await;
        }
        let addr = Self::addr(&view, &primary)
            .ok_or_else(|| KvError::Other(format!("the primary of the key, {primary}, has no address yet")))?;
        let req = KvRequest::Execute { bucket: bucket.into(), key: key.into(), op };
        match self.call(&primary, addr, &req).await? {
            KvReply::Done { counter } => Ok(Executed::Done(counter)),
            KvReply::Conflict => Ok(Executed::Conflict),
            KvReply::Refused(why) => Err(KvError::Other(why)),
            other_reply => Err(KvError::Other(format!("unexpected answer from {primary}: {other_reply:?}"))),
        }
    }

    /// Executes a write as the key's primary: under a majority, after catching up with the
    /// other owners once per live set, one at a time per key; acknowledged once
    /// [`write_quorum`] copies are durable.
    async fn execute(
        &self,
        view: &View,
        owners: &[String],
        bucket: &str,
        key: &str,
        op: KvOp,
    ) -> Result<Executed, KvError> {
        if !has_quorum(view.live.len(), view.members) {
            return Err(KvError::Other(format!(
                "no majority: this node sees {} of the cluster's {} members; writes and atomics wait until it \
                 sees a majority (reads still work)",
                view.live.len(),
                view.members
            )));
        }
        let dk = db_key(bucket, key);
        let lock = self.locks.entry(dk.clone()).or_default().clone();
        let _guard = lock.lock().await;
        if self.synced.get(&dk).map(|g| *g) != Some(view.generation) {
            self.catch_up(view, owners, bucket, key).await?;
            self.synced.insert(dk.clone(), view.generation);
        }
        let current = self.local(bucket, key)?;
        let (value, counter) = match op {
            KvOp::Swap { expected, .. } if current.as_ref().map(|e| e.version) != expected => {
                return Ok(Executed::Conflict);
            }
            KvOp::Swap { value, .. } => (Some(value), None),
            KvOp::Set(v) => (Some(v), None),
            KvOp::Delete => (None, None),
            KvOp::Increment(delta) => {
                let now = match current.as_ref().and_then(|e| e.value.as_deref()) {
                    Some(v) => counter_value(v)?,
                    None => 0,
                };
                let sum = now.wrapping_add(delta);
                (Some(sum.to_be_bytes().to_vec()), Some(sum))
            }
        };
        let counter_after = current.as_ref().map_or(0, |e| e.version.counter) + 1;
        let entry = KvEntry { value, version: KvVersion { counter: counter_after, node: self.tag } };
        let wanted = write_quorum(owners.len());
        // The local commit and the copies to the other owners go at once.
        let (local, pushed) =
            tokio::join!(self.keep(bucket, key, &entry), self.push(view, owners, bucket, key, &entry, wanted - 1));
        if let Err(e) = local {
            // Owners may now hold a version this node lacks: catch up before the next write.
            self.synced.remove(&dk);
            return Err(e);
        }
        let copies = 1 + pushed;
        if copies < wanted {
            return Err(KvError::Other(format!(
                "the write is durable on {copies} of the {wanted} copies it needs (an owner did not answer); it may \
                 still take effect"
            )));
        }
        Ok(Executed::Done(counter))
    }

    /// Reads every live owner's entry and keeps the newest here.
    async fn catch_up(&self, view: &View, owners: &[String], bucket: &str, key: &str) -> Result<(), KvError> {
        let reads = owners.iter().filter(|o| **o != self.node).filter_map(|o| {
            let addr = Self::addr(view, o)?;
            let req = KvRequest::Read { bucket: bucket.into(), key: key.into() };
            Some(async move { self.call(o, addr, &req).await })
        });
        for reply in futures::future::join_all(reads).await {
            if let Ok(KvReply::Entry(Some(e))) = reply {
                self.keep(bucket, key, &e).await?;
            }
        }
        Ok(())
    }

    /// Copies `entry` to the other owners; returns how many stored it, waiting until `enough`
    /// did (or every one answered). The copies not waited for still complete, in the
    /// background.
    async fn push(
        &self,
        view: &View,
        owners: &[String],
        bucket: &str,
        key: &str,
        entry: &KvEntry,
        enough: usize,
    ) -> usize {
        let req = KvRequest::Put { bucket: bucket.into(), key: key.into(), entry: entry.clone() };
        let Ok(bytes) = rmp_serde::to_vec_named(&req).map(Bytes::from) else { return 0 };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for o in owners.iter().filter(|o| **o != self.node) {
            let Some(addr) = Self::addr(view, o) else { continue };
            let (mesh, node, bytes, tx) = (self.mesh.clone(), o.clone(), bytes.clone(), tx.clone());
            tokio::spawn(async move {
                let answer = mesh.call_on(KV_CHANNEL, &node, addr, bytes, CALL_TIMEOUT).await;
                let stored = answer
                    .ok()
                    .and_then(|a| rmp_serde::from_slice::<KvReply>(&a).ok())
                    .is_some_and(|r| r == KvReply::Stored);
                let _ = tx.send(stored);
            });
        }
        drop(tx);
        let mut stored = 0;
        while stored < enough {
            match rx.recv().await {
                Some(true) => stored += 1,
                Some(false) => {}
                None => break,
            }
        }
        stored
    }

    /// A read: from this node when it owns the key, else from the primary (or another owner).
    async fn read(&self, bucket: &str, key: &str) -> Result<Option<KvEntry>, KvError> {
        let view = self.view();
        let owners = self.owners(&view, bucket, key);
        if owners.contains(&self.node) {
            return self.local(bucket, key);
        }
        let mut last = KvError::Other("no owner of the key is reachable".into());
        for o in &owners {
            let Some(addr) = Self::addr(&view, o) else { continue };
            match self.call(o, addr, &KvRequest::Read { bucket: bucket.into(), key: key.into() }).await {
                Ok(KvReply::Entry(e)) => return Ok(e),
                Ok(KvReply::Refused(why)) => last = KvError::Other(why),
                Ok(r) => last = KvError::Other(format!("unexpected answer from {o}: {r:?}")),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Every entry of `bucket` this node holds, in key order.
    fn bucket_entries(&self, bucket: &str) -> Result<Vec<(String, KvEntry)>, KvError> {
        let txn = self.db.begin_read().map_err(other)?;
        let t = txn.open_table(KV).map_err(other)?;
        let start = format!("{bucket}\0");
        let mut out = Vec::new();
        for row in t.range(start.as_str()..).map_err(other)? {
            let (k, v) = row.map_err(other)?;
            let Some(key) = k.value().strip_prefix(&start) else { break };
            out.push((key.to_string(), rmp_serde::from_slice(v.value()).map_err(other)?));
        }
        Ok(out)
    }

    /// The keys of `bucket` on this node, with their versions and whether they have a value.
    fn local_keys(&self, bucket: &str) -> Result<Vec<(String, KvVersion, bool)>, KvError> {
        Ok(self.bucket_entries(bucket)?.into_iter().map(|(k, e)| (k, e.version, e.value.is_some())).collect())
    }

    /// This node's own copies of `bucket`'s keys.
    pub fn local_entries(&self, bucket: &str) -> Result<Vec<LocalCopy>, KvError> {
        Ok(self.bucket_entries(bucket)?.into_iter().map(|(k, e)| (k, e.version.counter, e.value)).collect())
    }

    /// Every key of `bucket` with a value in the cluster: the newest version of each key any
    /// live node holds decides, sorted.
    pub async fn keys(&self, bucket: &str) -> Result<Vec<String>, KvError> {
        let view = self.view();
        let mut newest: std::collections::BTreeMap<String, (KvVersion, bool)> = std::collections::BTreeMap::new();
        let mut merge = |rows: Vec<(String, KvVersion, bool)>| {
            for (k, version, live) in rows {
                let e = newest.entry(k).or_insert((version, live));
                if version > e.0 {
                    *e = (version, live);
                }
            }
        };
        merge(self.local_keys(bucket)?);
        let lists = view.live.iter().filter(|(n, _)| *n != self.node).filter_map(|(n, a)| {
            let addr = (*a)?;
            let req = KvRequest::List { bucket: bucket.into() };
            Some(async move { self.call(n, addr, &req).await })
        });
        for reply in futures::future::join_all(lists).await {
            if let Ok(KvReply::Listed(rows)) = reply {
                merge(rows);
            }
        }
        Ok(newest.into_iter().filter(|(_, (_, live))| *live).map(|(k, _)| k).collect())
    }

    /// Pushes every key this node is the primary of to its other owners.
    async fn repair(&self, view: &View) -> Result<usize, KvError> {
        let rows: Vec<(String, KvEntry)> = {
            let txn = self.db.begin_read().map_err(other)?;
            let t = txn.open_table(KV).map_err(other)?;
            let mut rows = Vec::new();
            for row in t.iter().map_err(other)? {
                let (k, v) = row.map_err(other)?;
                rows.push((k.value().to_string(), rmp_serde::from_slice(v.value()).map_err(other)?));
            }
            rows
        };
        let mut pushed = 0;
        for (dk, entry) in rows {
            let Some((bucket, key)) = dk.split_once('\0') else { continue };
            let owners = self.owners(view, bucket, key);
            if owners.first() == Some(&self.node) && owners.len() > 1 {
                pushed += self.push(view, &owners, bucket, key, &entry, owners.len() - 1).await;
            }
        }
        Ok(pushed)
    }

    async fn handle(&self, req: KvRequest) -> KvReply {
        let refused = |e: KvError| KvReply::Refused(e.to_string());
        match req {
            KvRequest::Execute { bucket, key, op } => {
                let view = self.view();
                let owners = self.owners(&view, &bucket, &key);
                if owners.first() != Some(&self.node) {
                    return KvReply::Refused(format!(
                        "{} is not the primary of the key (membership is changing); retry",
                        self.node
                    ));
                }
                match self.execute(&view, &owners, &bucket, &key, op).await {
                    Ok(Executed::Done(counter)) => KvReply::Done { counter },
                    Ok(Executed::Conflict) => KvReply::Conflict,
                    Err(e) => refused(e),
                }
            }
            KvRequest::Read { bucket, key } => self.local(&bucket, &key).map(KvReply::Entry).unwrap_or_else(refused),
            KvRequest::Put { bucket, key, entry } => {
                self.keep(&bucket, &key, &entry).await.map(|_| KvReply::Stored).unwrap_or_else(refused)
            }
            KvRequest::List { bucket } => self.local_keys(&bucket).map(KvReply::Listed).unwrap_or_else(refused),
        }
    }
}

impl KeyValue for ClusterKv {
    fn get<'a>(&'a self, bucket: &'a str, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move { Ok(self.read(bucket, key).await?.and_then(|e| e.value)) })
    }

    fn set<'a>(&'a self, bucket: &'a str, key: &'a str, value: Vec<u8>) -> KvFuture<'a, ()> {
        Box::pin(async move { self.write(bucket, key, KvOp::Set(value)).await.map(|_| ()) })
    }

    fn get_versioned<'a>(&'a self, bucket: &'a str, key: &'a str) -> KvFuture<'a, (Option<Vec<u8>>, Option<KvToken>)> {
        Box::pin(async move {
            let entry = self.read(bucket, key).await?;
            let token = entry.as_ref().map(|e| (e.version.counter, e.version.node));
            Ok((entry.and_then(|e| e.value), token))
        })
    }

    fn swap<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        expected: Option<KvToken>,
        value: Vec<u8>,
    ) -> KvFuture<'a, bool> {
        let expected = expected.map(|(counter, node)| KvVersion { counter, node });
        Box::pin(
            async move { Ok(self.write(bucket, key, KvOp::Swap { expected, value }).await? == Executed::Done(None)) },
        )
    }

    fn delete<'a>(&'a self, bucket: &'a str, key: &'a str) -> KvFuture<'a, ()> {
        Box::pin(async move { self.write(bucket, key, KvOp::Delete).await.map(|_| ()) })
    }

    fn list_keys<'a>(&'a self, bucket: &'a str, cursor: Option<u64>) -> KvFuture<'a, (Vec<String>, Option<u64>)> {
        Box::pin(async move { Ok(page(self.keys(bucket).await?, cursor)) })
    }

    fn increment<'a>(&'a self, bucket: &'a str, key: &'a str, delta: u64) -> KvFuture<'a, u64> {
        Box::pin(async move {
            match self.write(bucket, key, KvOp::Increment(delta)).await? {
                Executed::Done(Some(n)) => Ok(n),
                _ => Err(KvError::Other("the primary did not return the counter".into())),
            }
        })
    }
}
