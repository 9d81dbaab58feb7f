//! Module blobs between nodes, streamed over the mesh on [`BLOB_CHANNEL`].
//!
//! Wire: the opening frame of the stream carries a [`BlobOp`] (MessagePack).
//! - `Get { digest, offset }`: the peer answers one frame with a [`GetAnswer`] (the blob's
//!   size, or that it does not have it), then the blob's bytes from `offset` to the end as raw
//!   stream data, and finishes the stream.
//! - `Put { digest, size }`: the caller sends `size` raw bytes and finishes; the peer checks
//!   the size limit, the WebAssembly magic and the digest, stores the blob durably, and answers
//!   one frame with a [`PutAnswer`]. A peer that already has the blob answers at once.
//!
//! Nothing is held whole in a frame, so a module of any allowed size travels at stream speed.
//!
//! Fetches resume: bytes land in the blob's `.partial` file next to the store's blobs. A
//! transfer that breaks keeps what arrived, and the next attempt (on the same peer or
//! another) asks only for the rest. The digest is checked over the whole file before it
//! becomes a blob; a partial that fails the check is discarded and fetched again from zero.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use wasmfleet_cluster::mesh::frame as wire;
use wasmfleet_cluster::mesh::{Mesh, PeerInfo, RecvStream, SendStream, StreamHandler};
use wasmfleet_runtime::Digest;

use crate::state::{BlobWriter, MAX_MODULE_BYTES, Store};

/// The mesh stream channel of blob transfers.
pub const BLOB_CHANNEL: u8 = 1;
/// Bounds opening a transfer and waiting for an answer frame.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// A transfer that makes no progress for this long is abandoned (and resumed elsewhere).
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole push to one peer, including its durable write, gets at most this long.
pub const PUT_TIMEOUT: Duration = Duration::from_secs(60);
/// Read and write size.
const CHUNK: usize = 256 * 1024;
/// Largest answer frame.
const MAX_ANSWER_BYTES: usize = 4 * 1024;
/// Rounds over the peers before a fetch gives up.
const FETCH_ROUNDS: usize = 3;

/// The opening frame of a blob stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BlobOp {
    Get { digest: Digest, offset: u64 },
    Put { digest: Digest, size: u64 },
}

/// The first frame of the answer to `Get`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetAnswer {
    /// The whole blob's size; `None`: not on this node.
    pub size: Option<u64>,
}

/// The answer to `Put`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutAnswer {
    /// `None`: stored (or already there); else why not.
    pub error: Option<String>,
}

/// How a fetch went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The peer that sent the last bytes.
    pub from: String,
    /// Bytes that were already here from an earlier, broken transfer.
    pub resumed_at: u64,
    pub size: u64,
}

/// Fetches and pushes blobs; one fetch per digest at a time.
#[derive(Debug)]
pub struct BlobTransfer {
    mesh: Arc<Mesh>,
    store: Arc<Store>,
    in_progress: DashMap<Digest, Arc<tokio::sync::Mutex<()>>>,
}

impl BlobTransfer {
    pub fn new(mesh: Arc<Mesh>, store: Arc<Store>) -> BlobTransfer {
        BlobTransfer { mesh, store, in_progress: DashMap::new() }
    }

    /// Serves other nodes' transfers from now on.
    pub fn serve(&self) {
        self.mesh.set_stream_handler(BLOB_CHANNEL, Arc::new(BlobServer { store: self.store.clone() }));
    }

    /// Makes sure the blob is in the local store, fetching it from `peers` (tried in order,
    /// a few rounds) if it is not. Verifies the digest before storing.
    pub async fn fetch(&self, digest: Digest, peers: &[(String, SocketAddr)]) -> Result<Option<Fetched>> {
        let lock = self.in_progress.entry(digest).or_default().clone();
        let _guard = lock.lock().await;
        let result = self.fetch_locked(digest, peers).await;
        drop(_guard);
        self.in_progress.remove_if(&digest, |_, l| Arc::strong_count(l) <= 2);
        result
    }

    async fn fetch_locked(&self, digest: Digest, peers: &[(String, SocketAddr)]) -> Result<Option<Fetched>> {
        if self.store.has_blob(&digest) {
            return Ok(None);
        }
        let partial = self.store.partial_blob_path(&digest);
        let mut last_error = anyhow!("module {digest} is on no reachable peer");
        let mut anyone_has_it = false;
        for _round in 0..FETCH_ROUNDS {
            for (name, addr) in peers {
                let resumed_at = file_len(&partial).await;
                match self.fetch_from(name, *addr, digest, &partial, resumed_at).await {
                    Ok(None) => continue,
                    Ok(Some(size)) => {
                        let store = self.store.clone();
                        let path = partial.clone();
                        match tokio::task::spawn_blocking(move || store.adopt_partial_blob(&digest, &path)).await? {
                            Ok(()) => return Ok(Some(Fetched { from: name.clone(), resumed_at, size })),
                            Err(e) => {
                                anyone_has_it = true;
                                tracing::warn!(peer = %name, error = %e, "fetched module failed verification; fetching again");
                                last_error = e.into();
                            }
                        }
                    }
                    Err(e) => {
                        anyone_has_it = true;
                        tracing::debug!(peer = %name, error = %e, "module transfer broke; will resume");
                        last_error = e;
                    }
                }
            }
            if !anyone_has_it {
                break;
            }
        }
        Err(last_error)
    }

    /// One attempt on one peer: `Ok(None)` if it lacks the blob, `Ok(Some(size))` once the
    /// partial file holds `size` bytes.
    async fn fetch_from(
        &self,
        name: &str,
        addr: SocketAddr,
        digest: Digest,
        partial: &Path,
        offset: u64,
    ) -> Result<Option<u64>> {
        let head = rmp_serde::to_vec_named(&BlobOp::Get { digest, offset })?;
        let (mut send, mut recv) = self.mesh.open_stream(BLOB_CHANNEL, name, addr, &head, OPEN_TIMEOUT).await?;
        let _ = send.finish();
        let answer = tokio::time::timeout(OPEN_TIMEOUT, wire::read_frame(&mut recv, MAX_ANSWER_BYTES))
            .await
            .map_err(|_| anyhow!("{name} did not answer within {OPEN_TIMEOUT:?}"))??;
        let GetAnswer { size } = rmp_serde::from_slice(&answer).context("undecodable answer")?;
        let Some(size) = size else { return Ok(None) };
        if size > MAX_MODULE_BYTES as u64 {
            bail!("{name} offers a module of {size} bytes, over the limit of {MAX_MODULE_BYTES}");
        }
        if offset > size {
            // Not a prefix of this blob: start over.
            let _ = tokio::fs::remove_file(partial).await;
            bail!("partial module is longer than the module; discarded");
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(partial)
            .await
            .with_context(|| format!("opening {}", partial.display()))?;
        let mut have = offset;
        loop {
            let chunk = tokio::time::timeout(STALL_TIMEOUT, recv.read_chunk(CHUNK, true))
                .await
                .map_err(|_| anyhow!("transfer from {name} stalled for {STALL_TIMEOUT:?}"))?
                .with_context(|| format!("transfer from {name} broke at byte {have}"))?;
            let Some(chunk) = chunk else { break };
            have += chunk.bytes.len() as u64;
            if have > size {
                drop(file);
                let _ = tokio::fs::remove_file(partial).await;
                bail!("{name} sent more than the {size} bytes it announced");
            }
            file.write_all(&chunk.bytes).await?;
        }
        file.flush().await?;
        if have < size {
            bail!("transfer from {name} ended at byte {have} of {size}");
        }
        Ok(Some(size))
    }

    /// Pushes a blob to one peer and waits until it is durable there.
    pub async fn put(&self, name: &str, addr: SocketAddr, digest: Digest, bytes: Bytes) -> Result<()> {
        let attempt = async {
            let head = rmp_serde::to_vec_named(&BlobOp::Put { digest, size: bytes.len() as u64 })?;
            let (mut send, mut recv) = self.mesh.open_stream(BLOB_CHANNEL, name, addr, &head, OPEN_TIMEOUT).await?;
            // A peer that has the blob answers without reading it (and stops the stream).
            if send.write_chunk(bytes).await.is_ok() {
                let _ = send.finish();
            }
            let answer = wire::read_frame(&mut recv, MAX_ANSWER_BYTES).await?;
            match rmp_serde::from_slice::<PutAnswer>(&answer).context("undecodable answer")? {
                PutAnswer { error: None } => Ok(()),
                PutAnswer { error: Some(e) } => Err(anyhow!("{name} refused the module: {e}")),
            }
        };
        tokio::time::timeout(PUT_TIMEOUT, attempt).await.map_err(|_| anyhow!("push to {name} timed out"))?
    }
}

async fn file_len(path: &Path) -> u64 {
    tokio::fs::metadata(path).await.map(|m| m.len()).unwrap_or(0)
}

/// Serves [`BlobOp`]s from this node's store.
struct BlobServer {
    store: Arc<Store>,
}

impl StreamHandler for BlobServer {
    fn handle_stream(
        &self,
        peer: PeerInfo,
        head: Bytes,
        _deadline: Duration,
        send: SendStream,
        recv: RecvStream,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let store = self.store.clone();
        Box::pin(async move {
            let result = match rmp_serde::from_slice::<BlobOp>(&head) {
                Ok(BlobOp::Get { digest, offset }) => serve_get(&store, digest, offset, send).await,
                Ok(BlobOp::Put { digest, size }) => serve_put(&store, digest, size, send, recv).await,
                Err(e) => Err(anyhow!("undecodable blob request: {e}")),
            };
            if let Err(e) = result {
                tracing::debug!(peer = ?peer.node_id, error = %format!("{e:#}"), "blob transfer failed");
            }
        })
    }
}

async fn serve_get(store: &Store, digest: Digest, offset: u64, mut send: SendStream) -> Result<()> {
    let file = match tokio::fs::File::open(store.blob_path(&digest)).await {
        Ok(file) => Some(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let Some(mut file) = file else {
        let answer = rmp_serde::to_vec_named(&GetAnswer { size: None })?;
        wire::write_frame(&mut send, &[&answer], MAX_ANSWER_BYTES).await?;
        let _ = send.finish();
        return Ok(());
    };
    let size = file.metadata().await?.len();
    let answer = rmp_serde::to_vec_named(&GetAnswer { size: Some(size) })?;
    wire::write_frame(&mut send, &[&answer], MAX_ANSWER_BYTES).await?;
    if offset < size {
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            send.write_all(&buf[..n]).await?;
        }
    }
    send.finish()?;
    Ok(())
}

async fn serve_put(
    store: &Arc<Store>,
    digest: Digest,
    size: u64,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<()> {
    let outcome = async {
        if store.has_blob(&digest) {
            let _ = recv.stop(0u32.into());
            return Ok(());
        }
        if size > MAX_MODULE_BYTES as u64 {
            bail!("module of {size} bytes is over the limit of {MAX_MODULE_BYTES}");
        }
        // Chunks are hashed and written on a blocking thread while the next ones arrive.
        let writer = store.blob_writer(digest)?;
        let (tx, disk) = spawn_disk_writer(writer, |w: &mut BlobWriter, chunk: &[u8]| Ok(w.write(chunk)?));
        let mut have = 0u64;
        let mut magic = Vec::with_capacity(4);
        let received = async {
            loop {
                let chunk = tokio::time::timeout(STALL_TIMEOUT, recv.read_chunk(CHUNK, true))
                    .await
                    .map_err(|_| anyhow!("transfer stalled for {STALL_TIMEOUT:?}"))??;
                let Some(chunk) = chunk else { break };
                if magic.len() < 4 {
                    let take = (4 - magic.len()).min(chunk.bytes.len());
                    magic.extend_from_slice(&chunk.bytes[..take]);
                    if !b"\0asm".starts_with(&magic) {
                        bail!("not WebAssembly");
                    }
                }
                have += chunk.bytes.len() as u64;
                if have > size {
                    bail!("more than the announced {size} bytes");
                }
                if !tx.send(chunk.bytes).await {
                    break;
                }
            }
            if have != size {
                bail!("transfer ended at byte {have} of {size}");
            }
            if magic.len() < 4 {
                bail!("not WebAssembly");
            }
            Ok(())
        }
        .await;
        drop(tx);
        let writer = disk.await??;
        received?;
        tokio::task::spawn_blocking(move || writer.finish()).await??;
        Ok(())
    }
    .await;
    let answer = PutAnswer { error: outcome.as_ref().err().map(|e| format!("{e:#}")) };
    wire::write_frame(&mut send, &[&rmp_serde::to_vec_named(&answer)?], MAX_ANSWER_BYTES).await?;
    let _ = send.finish();
    outcome
}

/// How many chunks may wait for the disk.
const DISK_QUEUE: usize = 16;

/// The async end of [`spawn_disk_writer`].
struct DiskQueue(tokio::sync::mpsc::Sender<Bytes>);

impl DiskQueue {
    /// Queues a chunk, waiting (without blocking the thread) while the queue is full; false
    /// once the writer has stopped.
    async fn send(&self, chunk: Bytes) -> bool {
        self.0.send(chunk).await.is_ok()
    }
}

/// Runs `write(&mut sink, chunk)` for every chunk queued on the returned [`DiskQueue`], on a
/// blocking thread; stops at the first error. The handle yields the sink once the queue is
/// dropped.
fn spawn_disk_writer<W, F>(mut sink: W, mut write: F) -> (DiskQueue, tokio::task::JoinHandle<Result<W>>)
where
    W: Send + 'static,
    F: FnMut(&mut W, &[u8]) -> Result<()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(DISK_QUEUE);
    let disk = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            write(&mut sink, &chunk)?;
        }
        Ok(sink)
    });
    (DiskQueue(tx), disk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmfleet_cluster::mesh::MeshConfig;
    use wasmfleet_cluster::pki::ClusterCa;

    struct Node {
        _dir: tempfile::TempDir,
        store: Arc<Store>,
        transfer: BlobTransfer,
        addr: SocketAddr,
    }

    async fn node(ca: &ClusterCa, name: &str, id: u64) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), id).unwrap());
        let config = MeshConfig::new("127.0.0.1:0".parse().unwrap(), ca.issue(name).unwrap());
        let no_calls = |_: PeerInfo, _: Bytes| async { Err::<Bytes, String>("no calls here".into()) };
        let mesh = Arc::new(Mesh::bind(config, Arc::new(no_calls)).await.unwrap());
        let addr = mesh.local_addr().unwrap();
        let transfer = BlobTransfer::new(mesh, store.clone());
        transfer.serve();
        Node { _dir: dir, store, transfer, addr }
    }

    /// A module-shaped blob of `len` bytes whose content depends on `seed`.
    fn blob(len: usize, seed: u8) -> Vec<u8> {
        let mut b = b"\0asm\x01\0\0\0".to_vec();
        b.extend((0..len - 8).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
        b
    }

    #[tokio::test]
    async fn fetch_streams_verifies_and_resumes() {
        let ca = ClusterCa::generate("test").unwrap();
        let (a, b, c) = (node(&ca, "a", 1).await, node(&ca, "b", 2).await, node(&ca, "c", 3).await);
        let bytes = blob(3 * CHUNK + 17, 7);
        let digest = b.store.put_blob(&bytes).unwrap();
        let peers = [("c".to_string(), c.addr), ("b".to_string(), b.addr)];

        // c lacks it, b has it.
        let got = a.transfer.fetch(digest, &peers).await.unwrap().unwrap();
        assert_eq!(got, Fetched { from: "b".into(), resumed_at: 0, size: bytes.len() as u64 });
        assert_eq!(a.store.read_blob(&digest).unwrap().unwrap(), bytes);
        // Already here: nothing to do.
        assert_eq!(a.transfer.fetch(digest, &peers).await.unwrap(), None);

        // A broken earlier transfer left the first part: only the rest travels.
        let half = bytes.len() / 2;
        std::fs::write(c.store.partial_blob_path(&digest), &bytes[..half]).unwrap();
        let got = c.transfer.fetch(digest, &[("b".to_string(), b.addr)]).await.unwrap().unwrap();
        assert_eq!(got.resumed_at, half as u64);
        assert_eq!(c.store.read_blob(&digest).unwrap().unwrap(), bytes);
        assert!(!c.store.partial_blob_path(&digest).exists());
    }

    #[tokio::test]
    async fn a_corrupt_partial_is_discarded_and_fetched_again() {
        let ca = ClusterCa::generate("test").unwrap();
        let (a, b) = (node(&ca, "a", 1).await, node(&ca, "b", 2).await);
        let bytes = blob(CHUNK + 5, 3);
        let digest = b.store.put_blob(&bytes).unwrap();
        std::fs::write(a.store.partial_blob_path(&digest), b"\0asm garbage that is not a prefix").unwrap();
        let got = a.transfer.fetch(digest, &[("b".to_string(), b.addr)]).await.unwrap().unwrap();
        assert_eq!(got.resumed_at, 0, "the second attempt starts from zero");
        assert_eq!(a.store.read_blob(&digest).unwrap().unwrap(), bytes);

        // On no peer at all: a clear error.
        let missing = Digest::of(b"nowhere");
        let err = a.transfer.fetch(missing, &[("b".to_string(), b.addr)]).await.unwrap_err();
        assert!(format!("{err:#}").contains("on no reachable peer"), "{err:#}");
    }

    #[tokio::test]
    async fn put_stores_durably_and_refuses_bad_content() {
        let ca = ClusterCa::generate("test").unwrap();
        let (a, b) = (node(&ca, "a", 1).await, node(&ca, "b", 2).await);
        let bytes = blob(2 * CHUNK, 9);
        let digest = Digest::of(&bytes);
        a.transfer.put("b", b.addr, digest, Bytes::from(bytes.clone())).await.unwrap();
        assert_eq!(b.store.read_blob(&digest).unwrap().unwrap(), bytes);
        // Again: already there.
        a.transfer.put("b", b.addr, digest, Bytes::from(bytes.clone())).await.unwrap();

        let wrong = Digest::of(b"something else");
        let err = a.transfer.put("b", b.addr, wrong, Bytes::from(bytes.clone())).await.unwrap_err();
        assert!(format!("{err:#}").contains("does not match digest"), "{err:#}");
        assert!(!b.store.has_blob(&wrong));

        let text = b"plain text, not a module".to_vec();
        let err = a.transfer.put("b", b.addr, Digest::of(&text), Bytes::from(text)).await.unwrap_err();
        assert!(format!("{err:#}").contains("not WebAssembly"), "{err:#}");
        // Refused transfers leave nothing behind: the one good blob is all there is.
        let files: Vec<_> = std::fs::read_dir(b.store.blob_path(&digest).parent().unwrap()).unwrap().collect();
        assert_eq!(files.len(), 1, "{files:?}");
    }

    /// A disk slower than the network must not stall the async thread that receives: on a
    /// single-threaded runtime, the task that lets the disk go on must still get to run.
    #[test]
    fn a_slow_disk_does_not_block_the_async_thread() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let written = rt.block_on(async {
                let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
                let (queue, disk) = spawn_disk_writer(0usize, move |written: &mut usize, chunk: &[u8]| {
                    if *written == 0 {
                        // The disk is stuck until the gate opens.
                        let _ = gate_rx.recv();
                    }
                    *written += chunk.len();
                    Ok(())
                });
                let opener = tokio::spawn(async move {
                    let _ = gate_tx.send(());
                });
                for _ in 0..4 * DISK_QUEUE {
                    assert!(queue.send(Bytes::from_static(b"chunk")).await);
                }
                drop(queue);
                opener.await.unwrap();
                disk.await.unwrap().unwrap()
            });
            let _ = done_tx.send(written);
        });
        let written = done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the async thread blocked on a full disk queue (a blocking send in async code)");
        assert_eq!(written, 4 * DISK_QUEUE * 5);
    }
}
