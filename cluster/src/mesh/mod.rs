//! The QUIC mesh between nodes: one endpoint per node (server and client at once), mutual TLS
//! under the cluster CA, and a small request/response RPC layer on top.
//!
//! - [`Mesh::bind`] opens the endpoint; [`Mesh::call`] sends one request to a peer over the
//!   one connection kept per peer (one bidirectional stream per call) and waits for the answer.
//! - Incoming requests go to a [`Handler`] together with a [`PeerInfo`] that names the caller by
//!   the node id in its *verified* certificate.
//! - A node without a certificate yet reaches a seed with [`join_call`]: the server is pinned
//!   by the CA fingerprint from the join token, and the client presents no certificate. If the
//!   mesh was bound with [`MeshConfig::accept_joiners`], the server accepts such clients and
//!   hands their requests to the handler with `PeerInfo::node_id == None`. **The handler must
//!   serve nothing but the join request to those peers**; they also get a smaller frame limit
//!   ([`ANON_MAX_FRAME_BYTES`]) and few concurrent streams.
//!
//! - [`Mesh::call_on`] sends a call to one of [`frame::CALL_CHANNELS`] call channels instead:
//!   a service with its own wire format gets its own channel and [`Handler`]
//!   ([`Mesh::set_call_handler`]; replication uses
//!   [`REPLICATION_CHANNEL`](crate::replication::REPLICATION_CHANNEL)). Channels other than 0
//!   serve cluster members only.
//! - [`Mesh::open_stream`] opens a long-lived bidirectional stream instead, on one of
//!   [`frame::STREAM_CHANNELS`] channels: its first frame goes to the [`StreamHandler`] set
//!   for that channel with [`Mesh::set_stream_handler`], which then owns both halves
//!   (forwarded HTTP requests use one channel, with bodies streamed both ways; module blobs
//!   another).
//!
//! Wire format: [`frame`]. Connection handling: [`endpoint`].

pub mod endpoint;
pub mod frame;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::pki::{NodeIdentity, PkiError};

pub use endpoint::{Mesh, join_call};
pub use quinn::{RecvStream, SendStream};

/// Largest request an unauthenticated (joining) peer may send.
pub const ANON_MAX_FRAME_BYTES: usize = 64 * 1024;

/// How a node's mesh endpoint is set up.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// UDP address to bind; port 0 picks one (see [`Mesh::local_addr`]).
    pub listen: SocketAddr,
    pub identity: NodeIdentity,
    /// QUIC keep-alive interval (default 200 ms).
    pub keep_alive: Duration,
    /// A connection with no traffic for this long is dead (default 1 s). A killed peer is
    /// noticed after about `idle_timeout + keep_alive`.
    pub idle_timeout: Duration,
    /// Largest frame read or written (default 16 MiB).
    pub max_frame_bytes: usize,
    /// Accept clients without a certificate (joining nodes); see the module docs.
    pub accept_joiners: bool,
}

impl MeshConfig {
    /// Defaults: keep-alive 200 ms, idle timeout 1 s, 16 MiB frames, joiners accepted.
    pub fn new(listen: SocketAddr, identity: NodeIdentity) -> Self {
        Self {
            listen,
            identity,
            keep_alive: Duration::from_millis(200),
            idle_timeout: Duration::from_secs(1),
            max_frame_bytes: 16 * 1024 * 1024,
            accept_joiners: true,
        }
    }

    /// Cross-field rules, checked by [`Mesh::bind`] before binding.
    pub fn validate(&self) -> Result<(), MeshError> {
        let invalid = |reason| Err(MeshError::InvalidConfig { reason });
        if self.keep_alive.is_zero() {
            return invalid("keep_alive must be positive");
        }
        if self.idle_timeout <= self.keep_alive {
            return invalid("idle_timeout must be longer than keep_alive");
        }
        if self.max_frame_bytes < 1024 || u32::try_from(self.max_frame_bytes).is_err() {
            return invalid("max_frame_bytes must be between 1 KiB and 4 GiB");
        }
        self.identity.check()?;
        Ok(())
    }
}

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The node id from the peer's verified certificate; `None` for a peer that presented no
    /// certificate (a joining node), which must only be served the join request.
    pub node_id: Option<String>,
    pub addr: SocketAddr,
}

/// Answers requests arriving over the mesh. `Err(message)` reaches the caller as
/// [`MeshError::Remote`].
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, peer: PeerInfo, request: Bytes) -> Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(PeerInfo, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, String>> + Send + 'static,
{
    fn handle(&self, peer: PeerInfo, request: Bytes) -> Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send>> {
        Box::pin(self(peer, request))
    }
}

/// Serves streams opened with [`Mesh::open_stream`]: gets the opening frame's body and both
/// halves of the QUIC stream, and owns them from then on (for example a forwarded HTTP
/// request whose body and response stream both ways).
pub trait StreamHandler: Send + Sync + 'static {
    fn handle_stream(
        &self,
        peer: PeerInfo,
        head: Bytes,
        deadline: Duration,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// What went wrong in the mesh.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("invalid mesh config: {reason}")]
    InvalidConfig { reason: &'static str },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("could not bind the mesh endpoint on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("could not connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("TLS with {addr} failed: {reason}")]
    Tls { addr: SocketAddr, reason: String },
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost { addr: SocketAddr, reason: String },
    #[error("no answer within {after:?}")]
    Timeout { after: Duration },
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge { len: u64, max: usize },
    #[error("peer rejected the request: {reason}")]
    Rejected { reason: String },
    #[error("peer handler failed: {0}")]
    Remote(String),
    #[error("protocol error with {addr}: {reason}")]
    Protocol { addr: SocketAddr, reason: String },
    #[error("could not encode or decode a message: {reason}")]
    Codec { reason: String },
    #[error("the mesh is closed")]
    Closed,
}

/// Lets through at most one event per interval: for log lines a remote peer can trigger.
#[derive(Debug)]
pub(crate) struct RateLimit {
    interval: Duration,
    last: Mutex<Option<Instant>>,
}

impl RateLimit {
    pub(crate) fn new(interval: Duration) -> Self {
        Self { interval, last: Mutex::new(None) }
    }

    pub(crate) fn allow(&self) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return false;
        };
        let now = Instant::now();
        match *last {
            Some(t) if now.duration_since(t) < self.interval => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}
