//! Replication over the QUIC mesh: requests travel as calls on their own mesh channel
//! ([`REPLICATION_CHANNEL`]), served by [`serve_replication`].

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;

use super::replicator::Replicator;
use super::storage::Storage;
use super::transport::{Transport, TransportError};
use crate::mesh::{Mesh, MeshError, PeerInfo};

/// The mesh call channel replication requests travel on.
pub const REPLICATION_CHANNEL: u8 = 1;

/// A peer on the mesh: its node id (its certificate must name it) and QUIC address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeshPeer {
    pub node_id: String,
    pub addr: SocketAddr,
}

impl fmt::Display for MeshPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.node_id)
    }
}

/// Sends replication requests over a node's [`Mesh`].
#[derive(Debug, Clone)]
pub struct MeshTransport {
    mesh: Arc<Mesh>,
}

impl MeshTransport {
    pub fn new(mesh: Arc<Mesh>) -> Self {
        MeshTransport { mesh }
    }
}

impl From<MeshError> for TransportError {
    fn from(e: MeshError) -> Self {
        match e {
            MeshError::Timeout { after } => TransportError::Timeout { after },
            MeshError::Remote(reason) | MeshError::Rejected { reason } => TransportError::Remote { reason },
            MeshError::Closed => TransportError::Closed,
            e => TransportError::Unreachable { reason: e.to_string() },
        }
    }
}

impl Transport for MeshTransport {
    type Peer = MeshPeer;

    async fn call(&self, peer: &MeshPeer, request: Bytes, timeout: Duration) -> Result<Bytes, TransportError> {
        Ok(self.mesh.call_on(REPLICATION_CHANNEL, &peer.node_id, peer.addr, request, timeout).await?)
    }
}

/// Serves peers' replication requests arriving on `mesh` with `replicator` (held weakly: the
/// mesh does not keep it alive). Only authenticated cluster members reach this channel.
pub fn serve_replication<S: Storage>(mesh: &Mesh, replicator: &Arc<Replicator<S, MeshTransport>>) {
    let weak: Weak<Replicator<S, MeshTransport>> = Arc::downgrade(replicator);
    let handler = move |_peer: PeerInfo, request: Bytes| {
        let replicator = weak.upgrade();
        async move {
            let replicator = replicator.ok_or_else(|| "replication has stopped".to_owned())?;
            replicator.handle(&request).map_err(|e| e.to_string())
        }
    };
    mesh.set_call_handler(REPLICATION_CHANNEL, Arc::new(handler));
}
