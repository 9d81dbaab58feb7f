//! How replication messages reach a peer: one request, one response (chitchat's `Transport`
//! in spirit). [`MeshTransport`](super::MeshTransport) carries them over the QUIC mesh,
//! [`MemoryTransport`](super::MemoryTransport) between nodes in one process for tests.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

/// Sends a request to a named peer and waits for its answer.
pub trait Transport: Send + Sync + 'static {
    /// Who a request goes to (shown in logs and errors).
    type Peer: Clone + fmt::Display + Send + Sync + 'static;

    /// Sends `request` to `peer`; the answer, or an error, within `timeout`.
    fn call(
        &self,
        peer: &Self::Peer,
        request: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<Bytes, TransportError>> + Send;
}

/// Why a call got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("no answer within {after:?}")]
    Timeout { after: Duration },
    #[error("peer unreachable: {reason}")]
    Unreachable { reason: String },
    /// The peer got the request and answered with an error.
    #[error("peer failed the request: {reason}")]
    Remote { reason: String },
    #[error("the transport is closed")]
    Closed,
}
