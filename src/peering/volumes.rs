//! Replicated volumes between nodes: a writer ships snapshots of a volume's changed files to
//! the nodes that keep copies, streamed over the mesh on [`VOLUME_CHANNEL`].
//!
//! Wire: the opening frame carries a [`ShipHead`] (MessagePack): the volume, the writer's
//! epoch, the snapshot's sequence, and the sequence the delta applies on (`base`), or `whole`.
//! The receiver answers one [`Verdict`] frame:
//! - `Refused`: the sender is not the volume's writer by the record this node holds, or its
//!   epoch is older than the copy here (a writer that came back after its volume moved:
//!   *fencing*, nothing it sends lands);
//! - `NeedWhole`: the copy here is not at `base` (missing, incomplete, older): send it whole;
//! - `Go`: the sender streams [`Item`] frames (file chunks of at most [`CHUNK`] bytes, then
//!   `End` with the removed paths); the receiver stages them, applies them
//!   ([`crate::state::copies::Staging::commit`]) and answers [`Done`].
//!
//! Paths are checked to stay inside the volume; frames are bounded.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;
use wasmfleet_cluster::mesh::frame as wire;
use wasmfleet_cluster::mesh::{Mesh, PeerInfo, RecvStream, SendStream, StreamHandler};

use crate::state::copies::{CopyState, VolumeDirs};
use crate::state::{Store, VolumePhase};

/// The mesh stream channel of volume snapshots.
pub const VOLUME_CHANNEL: u8 = 3;
/// Largest file chunk in one frame.
pub const CHUNK: usize = 1 << 20;
/// Largest frame (a chunk and its envelope).
const MAX_FRAME: usize = CHUNK + 64 * 1024;
/// Bounds opening a shipment and each step of it.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The opening frame of a shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipHead {
    pub volume: String,
    pub epoch: u64,
    pub seq: u64,
    /// The (epoch, seq) the delta applies on; None with `whole`.
    pub base: Option<(u64, u64)>,
    pub whole: bool,
    /// When the writer read the snapshot (wall ms).
    pub taken_ms: u64,
    /// Bytes of the whole volume at the snapshot.
    pub bytes: u64,
}

/// The receiver's answer to a [`ShipHead`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Go,
    NeedWhole,
    Refused(String),
}

/// One frame of a shipment after the verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Item {
    File {
        path: String,
        /// The first chunk of the file (creates it).
        first: bool,
        #[serde(with = "serde_bytes")]
        chunk: Vec<u8>,
    },
    End {
        removed: Vec<String>,
    },
}

/// The receiver's last answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Done {
    error: Option<String>,
}

/// How a shipment went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shipped {
    Applied,
    NeedWhole,
    Refused(String),
}

/// Ships and receives volume snapshots.
#[derive(Debug, Clone)]
pub struct VolumeTransfer {
    mesh: Arc<Mesh>,
    dirs: VolumeDirs,
    store: Arc<Store>,
}

impl VolumeTransfer {
    pub fn new(mesh: Arc<Mesh>, dirs: VolumeDirs, store: Arc<Store>) -> VolumeTransfer {
        VolumeTransfer { mesh, dirs, store }
    }

    pub fn dirs(&self) -> &VolumeDirs {
        &self.dirs
    }

    /// Receives other nodes' snapshots from now on.
    pub fn serve(&self) {
        self.mesh.set_stream_handler(
            VOLUME_CHANNEL,
            Arc::new(Receiver { dirs: self.dirs.clone(), store: self.store.clone() }),
        );
    }

    /// Ships one snapshot of `head.volume` to a peer: `files` (relative paths, read now from
    /// this node's data directory) and `removed`.
    pub async fn ship(
        &self,
        name: &str,
        addr: SocketAddr,
        head: &ShipHead,
        files: &[String],
        removed: &[String],
    ) -> Result<Shipped> {
        let opening = rmp_serde::to_vec_named(head)?;
        let (mut send, mut recv) = self.mesh.open_stream(VOLUME_CHANNEL, name, addr, &opening, STEP_TIMEOUT).await?;
        let verdict = tokio::time::timeout(STEP_TIMEOUT, wire::read_frame(&mut recv, 4096))
            .await
            .map_err(|_| anyhow!("{name} did not answer within {STEP_TIMEOUT:?}"))??;
        match rmp_serde::from_slice::<Verdict>(&verdict).context("undecodable verdict")? {
            Verdict::Go => {}
            Verdict::NeedWhole => return Ok(Shipped::NeedWhole),
            Verdict::Refused(why) => return Ok(Shipped::Refused(why)),
        }
        let data = self.dirs.data_dir(&head.volume);
        let mut buf = vec![0u8; CHUNK];
        for rel in files {
            let mut file = match tokio::fs::File::open(data.join(rel)).await {
                Ok(f) => f,
                // Deleted since the scan: the next snapshot removes it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {rel}")),
            };
            let mut first = true;
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 && !first {
                    break;
                }
                let item = Item::File { path: rel.clone(), first, chunk: buf[..n].to_vec() };
                wire::write_frame(&mut send, &[&rmp_serde::to_vec_named(&item)?], MAX_FRAME).await?;
                first = false;
                if n == 0 {
                    break;
                }
            }
        }
        let end = Item::End { removed: removed.to_vec() };
        wire::write_frame(&mut send, &[&rmp_serde::to_vec_named(&end)?], MAX_FRAME).await?;
        let _ = send.finish();
        let done = tokio::time::timeout(STEP_TIMEOUT, wire::read_frame(&mut recv, 4096))
            .await
            .map_err(|_| anyhow!("{name} did not apply the snapshot within {STEP_TIMEOUT:?}"))??;
        match rmp_serde::from_slice::<Done>(&done).context("undecodable answer")? {
            Done { error: None } => Ok(Shipped::Applied),
            Done { error: Some(e) } => bail!("{name} could not apply the snapshot: {e}"),
        }
    }
}

/// Receives snapshots into this node's copies.
struct Receiver {
    dirs: VolumeDirs,
    store: Arc<Store>,
}

impl StreamHandler for Receiver {
    fn handle_stream(
        &self,
        peer: PeerInfo,
        head: Bytes,
        _deadline: Duration,
        send: SendStream,
        recv: RecvStream,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let (dirs, store) = (self.dirs.clone(), self.store.clone());
        Box::pin(async move {
            let Some(from) = peer.node_id.clone() else { return };
            let result = match rmp_serde::from_slice::<ShipHead>(&head) {
                Ok(head) => receive(&dirs, &store, &from, head, send, recv).await,
                Err(e) => Err(anyhow!("undecodable volume snapshot head: {e}")),
            };
            if let Err(e) = result {
                tracing::debug!(peer = %from, error = %format!("{e:#}"), "volume snapshot failed");
            }
        })
    }
}

/// What this node says to a snapshot `head` from `from`, given its copy and its record.
pub fn verdict(
    head: &ShipHead,
    from: &str,
    copy: Option<CopyState>,
    record: Option<(&str, u64, VolumePhase)>,
) -> Verdict {
    if let Some((writer, epoch, phase)) = record {
        if phase != VolumePhase::Bound {
            return Verdict::Refused(format!("volume {} is {}", head.volume, phase.as_str()));
        }
        if epoch > head.epoch || (epoch == head.epoch && writer != from) {
            return Verdict::Refused(format!(
                "{from} is not the writer of volume {} (the record says {writer}, epoch {epoch})",
                head.volume
            ));
        }
    }
    match copy {
        Some(c) if c.epoch > head.epoch => {
            Verdict::Refused(format!("the copy here is of a later epoch ({} > {})", c.epoch, head.epoch))
        }
        _ if head.whole => Verdict::Go,
        Some(c) if c.complete && Some((c.epoch, c.seq)) == head.base => Verdict::Go,
        _ => Verdict::NeedWhole,
    }
}

async fn receive(
    dirs: &VolumeDirs,
    store: &Store,
    from: &str,
    head: ShipHead,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<()> {
    let records = store.volume_records()?;
    let record = records.get(&head.volume).map(|r| (r.node.as_str(), r.epoch, r.phase));
    let verdict = verdict(&head, from, dirs.state(&head.volume), record);
    wire::write_frame(&mut send, &[&rmp_serde::to_vec_named(&verdict)?], 4096).await?;
    if verdict != Verdict::Go {
        let _ = send.finish();
        return Ok(());
    }
    let staging = {
        let (dirs, volume) = (dirs.clone(), head.volume.clone());
        tokio::task::spawn_blocking(move || dirs.begin(&volume)).await??
    };
    let staging = Arc::new(staging);
    let removed = loop {
        let frame = tokio::time::timeout(STEP_TIMEOUT, wire::read_frame(&mut recv, MAX_FRAME))
            .await
            .map_err(|_| anyhow!("snapshot stalled for {STEP_TIMEOUT:?}"))??;
        match rmp_serde::from_slice::<Item>(&frame).context("undecodable snapshot item")? {
            Item::File { path, first, chunk } => {
                let s = staging.clone();
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    if first {
                        drop(s.create(&path)?);
                    }
                    s.append(&path, &chunk)
                })
                .await??;
            }
            Item::End { removed } => break removed,
        }
    };
    let staging = Arc::try_unwrap(staging).map_err(|_| anyhow!("staging still in use"))?;
    let state =
        CopyState { epoch: head.epoch, seq: head.seq, complete: true, bytes: head.bytes, taken_ms: head.taken_ms };
    let whole = head.whole;
    let applied = tokio::task::spawn_blocking(move || staging.commit(state, &removed, whole)).await?;
    let done = Done { error: applied.err().map(|e| e.to_string()) };
    wire::write_frame(&mut send, &[&rmp_serde::to_vec_named(&done)?], 4096).await?;
    let _ = send.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(epoch: u64, seq: u64, base: Option<(u64, u64)>, whole: bool) -> ShipHead {
        ShipHead { volume: "pvc-1".into(), epoch, seq, base, whole, taken_ms: 0, bytes: 0 }
    }

    fn copy(epoch: u64, seq: u64, complete: bool) -> Option<CopyState> {
        Some(CopyState { epoch, seq, complete, bytes: 0, taken_ms: 0 })
    }

    #[test]
    fn a_writer_that_lost_its_volume_is_fenced() {
        let bound = VolumePhase::Bound;
        // The record moved on to b at epoch 3: a's epoch-2 snapshots are refused.
        let v = verdict(&head(2, 9, Some((2, 8)), false), "a", copy(2, 8, true), Some(("b", 3, bound)));
        assert!(matches!(v, Verdict::Refused(ref why) if why.contains("not the writer")), "{v:?}");
        // Same epoch, another writer: refused too.
        assert!(matches!(verdict(&head(3, 1, None, true), "a", None, Some(("b", 3, bound))), Verdict::Refused(_)));
        // The copy here is newer than the sender's epoch (the record has not arrived yet).
        assert!(matches!(verdict(&head(2, 9, None, true), "a", copy(3, 1, true), None), Verdict::Refused(_)));
    }

    #[test]
    fn a_delta_needs_its_base_and_a_whole_snapshot_does_not() {
        let rec = Some(("a", 2, VolumePhase::Bound));
        assert_eq!(verdict(&head(2, 9, Some((2, 8)), false), "a", copy(2, 8, true), rec), Verdict::Go);
        assert_eq!(verdict(&head(2, 9, Some((2, 8)), false), "a", copy(2, 7, true), rec), Verdict::NeedWhole);
        assert_eq!(verdict(&head(2, 9, Some((2, 8)), false), "a", copy(2, 8, false), rec), Verdict::NeedWhole);
        assert_eq!(verdict(&head(2, 9, Some((2, 8)), false), "a", None, rec), Verdict::NeedWhole);
        assert_eq!(verdict(&head(2, 9, None, true), "a", copy(1, 50, true), rec), Verdict::Go);
        assert!(matches!(
            verdict(&head(2, 9, None, true), "a", None, Some(("a", 2, VolumePhase::Deleted))),
            Verdict::Refused(_)
        ));
    }
}
