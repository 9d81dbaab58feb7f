//! Bounded per-workload logs: guest stdout/stderr split into lines, kept in a ring buffer, and
//! broadcast to followers (`logs -f`).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

/// Which guest stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Lines the host writes about the workload (exits, restarts, traps).
    System,
}

/// One log line.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    /// Position in this buffer's history, increasing by one per line.
    pub seq: u64,
    /// Wall time, ms since the Unix epoch.
    pub time_ms: u64,
    pub stream: LogStream,
    pub text: String,
}

struct Inner {
    lines: VecDeque<LogLine>,
    bytes: usize,
    next_seq: u64,
}

/// A bounded ring of log lines. Oldest lines are dropped once `max_bytes` is exceeded.
pub struct LogBuffer {
    inner: Mutex<Inner>,
    max_bytes: usize,
    tx: broadcast::Sender<LogLine>,
}

impl std::fmt::Debug for LogBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBuffer").field("max_bytes", &self.max_bytes).finish_non_exhaustive()
    }
}

/// Longest single line kept; longer output is split.
const MAX_LINE: usize = 8 * 1024;

impl LogBuffer {
    pub fn new(max_bytes: usize) -> Arc<LogBuffer> {
        let (tx, _) = broadcast::channel(1024);
        Arc::new(LogBuffer {
            inner: Mutex::new(Inner { lines: VecDeque::new(), bytes: 0, next_seq: 0 }),
            max_bytes,
            tx,
        })
    }

    /// Appends one line.
    pub fn push(&self, stream: LogStream, text: impl Into<String>) {
        let text: String = text.into();
        let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let line = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let line = LogLine { seq: inner.next_seq, time_ms, stream, text };
            inner.next_seq += 1;
            inner.bytes += line.text.len() + 32;
            inner.lines.push_back(line.clone());
            while inner.bytes > self.max_bytes {
                match inner.lines.pop_front() {
                    Some(old) => inner.bytes -= old.text.len() + 32,
                    None => break,
                }
            }
            line
        };
        let _ = self.tx.send(line);
    }

    /// The last `tail` lines (all kept lines with `None`).
    pub fn snapshot(&self, tail: Option<usize>) -> Vec<LogLine> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let skip = tail.map(|t| inner.lines.len().saturating_sub(t)).unwrap_or(0);
        inner.lines.iter().skip(skip).cloned().collect()
    }

    /// New lines as they are written.
    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.tx.subscribe()
    }
}

/// A guest stdout/stderr that writes into a [`LogBuffer`], split into lines. Every stream the
/// guest opens shares one partial-line buffer; [`LogSink::finish`] emits what is left when the
/// run ends (a `print!` without newline).
#[derive(Clone)]
pub(crate) struct LogSink {
    buf: Arc<LogBuffer>,
    stream: LogStream,
    partial: Arc<Mutex<Vec<u8>>>,
}

impl LogSink {
    pub(crate) fn new(buf: Arc<LogBuffer>, stream: LogStream) -> LogSink {
        LogSink { buf, stream, partial: Arc::default() }
    }

    fn write_bytes(&self, mut data: &[u8]) {
        let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            partial.extend_from_slice(&data[..pos]);
            self.emit(&mut partial);
            data = &data[pos + 1..];
        }
        partial.extend_from_slice(data);
        while partial.len() > MAX_LINE {
            let rest = partial.split_off(MAX_LINE);
            self.emit(&mut partial);
            *partial = rest;
        }
    }

    fn emit(&self, partial: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(partial).trim_end_matches('\r').to_string();
        partial.clear();
        self.buf.push(self.stream, text);
    }

    /// Emits a trailing partial line, if any.
    pub(crate) fn finish(&self) {
        let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        if !partial.is_empty() {
            self.emit(&mut partial);
        }
    }
}

struct LineWriter(LogSink);

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        self.0.write_bytes(data);
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl wasmtime_wasi::cli::IsTerminal for LogSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for LogSink {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_bounds_size() {
        let buf = LogBuffer::new(200);
        let w = LogSink::new(buf.clone(), LogStream::Stdout);
        w.write_bytes(b"one\ntw");
        w.write_bytes(b"o\nthree");
        w.finish();
        let lines: Vec<String> = buf.snapshot(None).into_iter().map(|l| l.text).collect();
        assert_eq!(lines, ["one", "two", "three"]);
        for i in 0..100 {
            buf.push(LogStream::Stderr, format!("line {i}"));
        }
        let snap = buf.snapshot(None);
        assert!(snap.len() < 10, "bounded: {}", snap.len());
        assert_eq!(snap.last().unwrap().text, "line 99");
        assert_eq!(buf.snapshot(Some(2)).len(), 2);
    }
}
