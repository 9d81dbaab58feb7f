//! The data plane: a few *lanes*, one thread each, that serve gateway connections and
//! forwarded requests, so that one request is handled start to end by one thread.
//!
//! Each lane is a thread with its own current-thread tokio runtime and its own QUIC endpoint
//! (a UDP port on the cluster address, advertised in gossip as [`NodeInfo::lanes`]). The
//! gateway's listeners accept on the main runtime and hand each connection to a lane, round
//! robin; from then on its requests, the Wasm instances serving them, and the requests it
//! forwards (lane *i* to the peer's lane *i mod n*, see [`Forwarder`]) all run on that lane's
//! thread. On the peer, the lane's endpoint serves the forwarded request on its own thread as
//! well.
//!
//! Why: on the work-stealing runtime a forwarded request was handed between threads about a
//! dozen times (quinn's endpoint and connection drivers, the stream task, the gateway task),
//! each hand-off a wake-up of another thread; that cost more than the QUIC hop itself. The
//! control plane (gossip, replication, the reconciler, the API, module transfer, probes)
//! stays on the main runtime and the cluster endpoint.
//!
//! A node with `lanes = 0` serves everything on the main runtime, and peers reach it on its
//! cluster endpoint; so does a peer whose lane ports do not connect (a firewall that passes
//! only the cluster port).
//!
//! [`NodeInfo::lanes`]: crate::peering::NodeInfo::lanes
//! [`Forwarder`]: crate::dataplane::forward::Forwarder

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use wasmfleet_cluster::mesh::{Mesh, MeshConfig, PeerInfo};
use wasmfleet_cluster::pki::NodeIdentity;

use crate::dataplane::forward::{ForwardServer, STREAM_CHANNEL, enter_lane};
use crate::dataplane::gateway::{Binding, Routes, serve_connection};

/// The default number of lanes: one per core.
pub fn default_lanes() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The lanes' UDP sockets, bound before the node announces itself (their ports go into its
/// gossip info) and turned into endpoints by [`start`].
pub struct Sockets {
    sockets: Vec<std::net::UdpSocket>,
}

impl Sockets {
    /// Binds `count` UDP sockets on `ip`: on `first_port`, `first_port + 1`, … or, with
    /// `None`, on any free ports.
    pub fn bind(count: usize, ip: IpAddr, first_port: Option<u16>) -> Result<Sockets> {
        let mut sockets = Vec::with_capacity(count);
        for i in 0..count {
            let port = match first_port {
                Some(p) => p
                    .checked_add(u16::try_from(i).unwrap_or(u16::MAX))
                    .ok_or_else(|| anyhow!("--lane-ports {p}: {count} lanes need ports up to {}", p as usize + i))?,
                None => 0,
            };
            let addr = SocketAddr::new(ip, port);
            let socket = std::net::UdpSocket::bind(addr)
                .with_context(|| format!("binding data-plane lane {i} (UDP) on {addr}"))?;
            sockets.push(socket);
        }
        Ok(Sockets { sockets })
    }

    /// The bound ports, by lane.
    pub fn ports(&self) -> Result<Vec<u16>> {
        self.sockets.iter().map(|s| Ok(s.local_addr()?.port())).collect()
    }
}

/// A connection for a lane, and how its requests pick their Service.
type Handoff = (std::net::TcpStream, Binding);

/// The running lanes, as the gateway's listeners see them.
pub struct Lanes {
    inboxes: Vec<mpsc::UnboundedSender<Handoff>>,
    next: AtomicUsize,
}

impl Lanes {
    /// Gives an accepted connection to the next lane; hands it back if it cannot (no lane
    /// is running any more), for the caller to serve.
    pub fn hand_off(&self, stream: tokio::net::TcpStream, binding: Binding) -> Result<(), tokio::net::TcpStream> {
        let lane = self.next.fetch_add(1, Ordering::Relaxed) % self.inboxes.len().max(1);
        let Some(inbox) = self.inboxes.get(lane) else { return Err(stream) };
        // A std stream can move between runtimes; it is registered again on the lane's.
        let std = match stream.into_std() {
            Ok(std) => std,
            Err(e) => {
                tracing::debug!(error = %e, "could not hand a connection to a lane");
                return Ok(());
            }
        };
        match inbox.send((std, binding)) {
            Ok(()) => Ok(()),
            // The lane has stopped: the caller serves the connection, if it registers again.
            Err(mpsc::error::SendError((std, _))) => match tokio::net::TcpStream::from_std(std) {
                Ok(stream) => Err(stream),
                Err(_) => Ok(()),
            },
        }
    }
}

/// A started data plane: the lanes, their endpoints (by lane) and their threads.
pub struct DataPlane {
    pub lanes: Arc<Lanes>,
    pub endpoints: Vec<Arc<Mesh>>,
    /// Resolve when the lane threads have ended.
    pub done: Vec<oneshot::Receiver<()>>,
}

/// Starts one lane thread per socket, each serving forwarded requests on its endpoint and the
/// connections handed to it, until `shutdown` turns true. Returns once every lane is up.
pub async fn start(
    sockets: Sockets,
    identity: &NodeIdentity,
    routes: &Routes,
    shutdown: &watch::Receiver<bool>,
) -> Result<DataPlane> {
    let mut inboxes = Vec::new();
    let mut endpoints = Vec::new();
    let mut done = Vec::new();
    for (index, socket) in sockets.sockets.into_iter().enumerate() {
        let (inbox, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let lane =
            Lane { index, socket, identity: identity.clone(), routes: routes.clone(), shutdown: shutdown.clone() };
        std::thread::Builder::new()
            .name(format!("lane-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!(e).context("starting the lane's runtime")));
                        return;
                    }
                };
                runtime.block_on(lane.run(rx, ready_tx));
                // Dropping the runtime ends the lane's remaining connections.
                drop(runtime);
                let _ = done_tx.send(());
            })
            .context("starting a data-plane thread")?;
        let endpoint = ready_rx.await.map_err(|_| anyhow!("data-plane lane {index} ended while starting"))??;
        inboxes.push(inbox);
        endpoints.push(endpoint);
        done.push(done_rx);
    }
    Ok(DataPlane { lanes: Arc::new(Lanes { inboxes, next: AtomicUsize::new(0) }), endpoints, done })
}

struct Lane {
    index: usize,
    socket: std::net::UdpSocket,
    identity: NodeIdentity,
    routes: Routes,
    shutdown: watch::Receiver<bool>,
}

impl Lane {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Handoff>, ready: oneshot::Sender<Result<Arc<Mesh>>>) {
        enter_lane(self.index);
        let mut config =
            MeshConfig::new(self.socket.local_addr().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))), self.identity);
        // Members only, and only forwarded-request streams: no joiners, no calls.
        config.accept_joiners = false;
        let no_calls =
            |_: PeerInfo, _: Bytes| async { Err::<Bytes, _>("a data-plane lane serves no calls".to_string()) };
        let mesh = match Mesh::bind_socket(config, self.socket, Arc::new(no_calls)) {
            Ok(mesh) => Arc::new(mesh),
            Err(e) => {
                let _ = ready.send(Err(anyhow!(e).context(format!("starting data-plane lane {}", self.index))));
                return;
            }
        };
        mesh.set_stream_handler(STREAM_CHANNEL, Arc::new(ForwardServer { routes: self.routes.clone() }));
        if ready.send(Ok(mesh.clone())).is_err() {
            return;
        }
        loop {
            let handed = tokio::select! {
                h = inbox.recv() => h,
                _ = self.shutdown.wait_for(|s| *s) => None,
            };
            let Some((std, binding)) = handed else { break };
            match tokio::net::TcpStream::from_std(std) {
                Ok(stream) => {
                    tokio::spawn(serve_connection(stream, self.routes.clone(), binding));
                }
                Err(e) => tracing::debug!(error = %e, "could not take over a connection"),
            }
        }
        // Tell the peers, so their forwarders stop using this lane at once.
        mesh.close().await;
    }
}
