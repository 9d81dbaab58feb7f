//! Logs from every node: `wasmfleet logs NAME` on any node shows the replicas of NAME wherever
//! they run, and `--follow` keeps streaming from all of them.
//!
//! Each node serves its own replicas' logs on mesh stream channel [`LOGS_CHANNEL`]: the
//! opening frame is a [`LogsRequest`]; the answer is NDJSON [`LogRecord`]s of what the
//! buffers hold (oldest first), an empty line, then — when following — each new line as it
//! is written, until the caller closes the stream. The node answering the API merges the
//! snapshots of all nodes by time, then interleaves the followed lines as they come.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;
use wasmfleet_cluster::mesh::{PeerInfo, RecvStream, SendStream, StreamHandler};
use wasmfleet_runtime::{LogBuffer, LogLine};

use crate::manifest::{Kind, ObjectKey};
use crate::peering::Peering;
use crate::reconcile::ReplicaLogs;

/// The mesh stream channel of log streams.
pub const LOGS_CHANNEL: u8 = 2;
/// Bounds opening a peer's log stream and reading its snapshot.
const PEER_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest log line accepted from a peer.
const MAX_LINE: usize = 256 * 1024;

/// What the caller asks a node for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogsRequest {
    pub namespace: String,
    /// A Deployment, Job or DaemonSet, or one replica (`hello-1`).
    pub name: String,
    pub tail: Option<usize>,
    pub follow: bool,
}

/// One line of one replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogRecord {
    pub replica: String,
    pub node: String,
    #[serde(flatten)]
    pub line: LogLine,
}

impl LogRecord {
    /// The record as one NDJSON line.
    pub fn ndjson(&self) -> Bytes {
        let mut s = serde_json::to_vec(self).unwrap_or_default();
        s.push(b'\n');
        Bytes::from(s)
    }
}

/// This node's log buffers for `name` (an object or one of its replicas), by replica name.
pub fn local_buffers(logs: &ReplicaLogs, namespace: &str, name: &str) -> BTreeMap<String, Arc<LogBuffer>> {
    let kinds = [Kind::Deployment, Kind::Job, Kind::DaemonSet];
    let mut buffers = BTreeMap::new();
    for kind in kinds {
        let key = ObjectKey { kind, namespace: namespace.to_string(), name: name.to_string() };
        buffers.extend(logs.of(&key));
    }
    if buffers.is_empty() {
        // A replica name: `hello-1`, or `agent-<node>` for a DaemonSet's.
        let mut owner = name;
        while let Some((prefix, _)) = owner.rsplit_once('-') {
            for kind in kinds {
                let key = ObjectKey { kind, namespace: namespace.to_string(), name: prefix.to_string() };
                buffers.extend(logs.of(&key).into_iter().filter(|(r, _)| r == name));
            }
            if !buffers.is_empty() {
                break;
            }
            owner = prefix;
        }
    }
    buffers
}

fn snapshot(buffers: &BTreeMap<String, Arc<LogBuffer>>, node: &str, tail: Option<usize>) -> Vec<LogRecord> {
    let mut all: Vec<LogRecord> = buffers
        .iter()
        .flat_map(|(replica, b)| {
            b.snapshot(tail).into_iter().map(|line| LogRecord {
                replica: replica.clone(),
                node: node.to_string(),
                line,
            })
        })
        .collect();
    sort_and_tail(&mut all, tail);
    all
}

fn sort_and_tail(all: &mut Vec<LogRecord>, tail: Option<usize>) {
    all.sort_by(|a, b| (a.line.time_ms, &a.replica, a.line.seq).cmp(&(b.line.time_ms, &b.replica, b.line.seq)));
    if let Some(t) = tail {
        all.drain(..all.len().saturating_sub(t));
    }
}

/// Sends every new line of `buffers` into `tx` until it closes.
fn follow(buffers: BTreeMap<String, Arc<LogBuffer>>, node: &str, tx: &mpsc::Sender<Bytes>) {
    for (replica, b) in buffers {
        let mut sub = b.subscribe();
        let (tx, node) = (tx.clone(), node.to_string());
        tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(line) => {
                        let record = LogRecord { replica: replica.clone(), node: node.clone(), line };
                        if tx.send(record.ndjson()).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                }
            }
        });
    }
}

/// Serves this node's logs to peers.
pub struct LogsServer {
    pub logs: Arc<ReplicaLogs>,
    pub node: String,
}

impl StreamHandler for LogsServer {
    fn handle_stream(
        &self,
        _peer: PeerInfo,
        head: Bytes,
        _deadline: Duration,
        mut send: SendStream,
        mut recv: RecvStream,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let (logs, node) = (self.logs.clone(), self.node.clone());
        Box::pin(async move {
            let Ok(req) = rmp_serde::from_slice::<LogsRequest>(&head) else {
                let _ = send.finish();
                return;
            };
            let buffers = local_buffers(&logs, &req.namespace, &req.name);
            let mut out = Vec::new();
            for record in snapshot(&buffers, &node, req.tail) {
                out.extend_from_slice(&record.ndjson());
            }
            out.push(b'\n');
            if send.write_all(&out).await.is_err() || !req.follow {
                let _ = send.finish();
                return;
            }
            let (tx, mut rx) = mpsc::channel::<Bytes>(256);
            follow(buffers, &node, &tx);
            drop(tx);
            // Until the caller goes away (it finishes or resets its half) or nothing is left.
            let mut closed = Box::pin(async move { while let Ok(Some(_)) = recv.read_chunk(1024, true).await {} });
            loop {
                tokio::select! {
                    line = rx.recv() => match line {
                        Some(line) if send.write_all(&line).await.is_ok() => {}
                        _ => break,
                    },
                    _ = &mut closed => break,
                }
            }
            let _ = send.finish();
        })
    }
}

/// How reading one line from a peer went.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line (with its `\n`, unless the stream ended without one) is in the buffer.
    Read,
    /// The stream ended.
    End,
    /// The line is longer than the limit: the stream is no good, drop it.
    TooLong,
}

/// Reads one line into `line` (cleared first); a line longer than `max` bytes is `TooLong`.
async fn read_line_bounded<R>(reader: &mut R, line: &mut Vec<u8>, max: usize) -> std::io::Result<Line>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    line.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if line.is_empty() { Line::End } else { Line::Read });
        }
        let (chunk, complete) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        if line.len() + chunk.len() > max {
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(chunk);
        let used = chunk.len();
        reader.consume(used);
        if complete {
            return Ok(Line::Read);
        }
    }
}

/// What `logs` answers: the merged snapshot, and (when following) the lines after it.
pub struct ClusterLogs {
    pub snapshot: Vec<LogRecord>,
    pub follow: Option<mpsc::Receiver<Bytes>>,
}

/// Logs of `req.name` from this node and every live peer.
pub async fn cluster_logs(logs: &ReplicaLogs, peering: &Peering, node: &str, req: &LogsRequest) -> ClusterLogs {
    let buffers = local_buffers(logs, &req.namespace, &req.name);
    let mut all = snapshot(&buffers, node, req.tail);
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let head = rmp_serde::to_vec_named(req).unwrap_or_default();
    let mut asks = tokio::task::JoinSet::new();
    for (peer, addr) in peering.peers() {
        let mesh = peering.mesh().clone();
        let head = head.clone();
        asks.spawn(async move {
            let (mut send, recv) = mesh.open_stream(LOGS_CHANNEL, &peer, addr, &head, PEER_TIMEOUT).await.ok()?;
            let mut lines = tokio::io::BufReader::new(recv);
            let mut records = Vec::new();
            let mut line = Vec::new();
            let read_snapshot = async {
                loop {
                    match read_line_bounded(&mut lines, &mut line, MAX_LINE).await {
                        Ok(Line::End | Line::TooLong) | Err(_) => return false,
                        Ok(Line::Read) if line.trim_ascii().is_empty() => return true,
                        Ok(Line::Read) => records.extend(serde_json::from_slice::<LogRecord>(&line).ok()),
                    }
                }
            };
            let complete = tokio::time::timeout(PEER_TIMEOUT, read_snapshot).await.unwrap_or(false);
            if !complete {
                let _ = send.finish();
            }
            Some((records, complete.then_some((send, lines))))
        });
    }
    while let Some(done) = asks.join_next().await {
        let Ok(Some((records, stream))) = done else { continue };
        all.extend(records);
        if let (true, Some((send, mut lines))) = (req.follow, stream) {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _send = send; // Kept open: finishing it tells the peer to stop.
                let mut line = Vec::new();
                loop {
                    match read_line_bounded(&mut lines, &mut line, MAX_LINE).await {
                        Ok(Line::End | Line::TooLong) | Err(_) => return,
                        // Passed on as they are: only whole UTF-8 lines.
                        Ok(Line::Read) if std::str::from_utf8(&line).is_err() => return,
                        Ok(Line::Read) => {
                            if tx.send(Bytes::from(std::mem::take(&mut line))).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    }
    sort_and_tail(&mut all, req.tail);
    if req.follow {
        follow(buffers, node, &tx);
    }
    drop(tx);
    ClusterLogs { snapshot: all, follow: req.follow.then_some(rx) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, BufReader};

    #[tokio::test]
    async fn lines_are_read_one_by_one() {
        let mut reader = BufReader::new(&b"a\nbb\n\nlast"[..]);
        let mut line = Vec::new();
        for want in [&b"a\n"[..], b"bb\n", b"\n", b"last"] {
            assert_eq!(read_line_bounded(&mut reader, &mut line, 16).await.unwrap(), Line::Read);
            assert_eq!(line, want);
        }
        assert_eq!(read_line_bounded(&mut reader, &mut line, 16).await.unwrap(), Line::End);
        let mut reader = BufReader::new(&b"0123456789\n"[..]);
        assert_eq!(read_line_bounded(&mut reader, &mut line, 11).await.unwrap(), Line::Read);
        let mut reader = BufReader::new(&b"0123456789\n"[..]);
        assert_eq!(read_line_bounded(&mut reader, &mut line, 10).await.unwrap(), Line::TooLong);
    }

    #[tokio::test]
    async fn a_peer_that_never_ends_its_line_is_cut_off_at_the_limit() {
        // 64 lines' worth of bytes and no newline.
        let sent = 64 * MAX_LINE as u64;
        let mut reader = BufReader::new(tokio::io::repeat(b'x').take(sent));
        let mut line = Vec::new();
        assert_eq!(read_line_bounded(&mut reader, &mut line, MAX_LINE).await.unwrap(), Line::TooLong);
        let pulled = sent - reader.get_ref().limit();
        assert!(pulled <= (MAX_LINE + 64 * 1024) as u64, "read {pulled} bytes for a line limited to {MAX_LINE}");
        assert!(line.capacity() <= 2 * MAX_LINE, "held {} bytes", line.capacity());
    }
}
