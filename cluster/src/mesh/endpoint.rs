//! The node's QUIC endpoint: accepts connections and serves requests with the [`Handler`],
//! keeps one verified connection per peer for outgoing calls, and the one-shot [`join_call`].
//!
//! A connection is cached only after the hello stream has completed both ways: with TLS 1.3
//! the client's handshake finishes before the server has checked the client certificate, so a
//! refusal only shows on first use.
//!
//! Map: the [`Mesh`] (bind, stream handlers, calls and streams to peers, shutdown) and its
//! per-peer connection slots; then the client side (connect with hello, one request on a
//! connection, error mapping); then the server side (accept loop, serving a connection, the
//! hello, the peer's node id from its certificate, one stream: RPC or a stream channel).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, ConnectionError, Endpoint, VarInt};
use rustls::pki_types::CertificateDer;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::frame::{self, FrameError, RequestHeader, Status};
use super::{ANON_MAX_FRAME_BYTES, Handler, MeshConfig, MeshError, PeerInfo, RateLimit, StreamHandler};
use crate::pki;

/// Server name used by [`join_call`]; the pinned-CA verifier ignores it.
const JOIN_SERVER_NAME: &str = "wasmfleet-join";
/// Largest answer a joiner accepts.
const JOIN_MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Time a new connection has to complete its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a peer has to send a whole request frame once it opened the stream.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent streams allowed to an unauthenticated peer.
const ANON_MAX_STREAMS: u32 = 4;
/// Application close codes.
const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0);
const CLOSE_PROTOCOL: VarInt = VarInt::from_u32(1);
const CLOSE_BAD_CERTIFICATE: VarInt = VarInt::from_u32(2);

/// Per-stream flow-control window.
const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
/// Largest UDP payload path MTU discovery tries (a 9000-byte jumbo frame).
const MTU_UPPER_BOUND: u16 = 8952;

/// The cached connection to one peer. `conn` is read on every call (a short std lock);
/// `connecting` makes concurrent callers wait for one connection attempt instead of racing.
#[derive(Default)]
struct Slot {
    conn: Mutex<Option<Connection>>,
    connecting: tokio::sync::Mutex<()>,
}

impl Slot {
    /// The cached connection if it is open and still to `addr`.
    fn usable(&self, addr: SocketAddr) -> Option<Connection> {
        let conn = self.conn.lock().ok()?;
        conn.as_ref().filter(|c| c.close_reason().is_none() && c.remote_address() == addr).cloned()
    }

    fn take(&self) -> Option<Connection> {
        self.conn.lock().ok().and_then(|mut c| c.take())
    }
}

type PeerSlot = Arc<Slot>;

/// A node's mesh endpoint. Dropping it closes every connection; [`Mesh::close`] also waits
/// until the peers were told.
pub struct Mesh {
    endpoint: Endpoint,
    node_id: String,
    client_config: quinn::ClientConfig,
    max_frame_bytes: usize,
    peers: Mutex<HashMap<String, PeerSlot>>,
    closed: AtomicBool,
    accept_task: JoinHandle<()>,
    server: Arc<Server>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("node_id", &self.node_id)
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// Binds the endpoint and starts serving requests with `handler`.
    pub async fn bind(config: MeshConfig, handler: Arc<dyn Handler>) -> Result<Mesh, MeshError> {
        config.validate()?;
        let socket = std::net::UdpSocket::bind(config.listen)
            .map_err(|source| MeshError::Bind { addr: config.listen, source })?;
        Self::bind_socket(config, socket, handler)
    }

    /// [`Mesh::bind`] on a socket bound already (`config.listen` is then ignored): for a
    /// port that must be known before the endpoint can be made. Must run inside the tokio
    /// runtime that is to drive the endpoint, whose tasks it spawns there.
    pub fn bind_socket(
        config: MeshConfig,
        socket: std::net::UdpSocket,
        handler: Arc<dyn Handler>,
    ) -> Result<Mesh, MeshError> {
        config.validate()?;
        let addr = socket.local_addr().unwrap_or(config.listen);
        let server_tls = if config.accept_joiners {
            pki::server_config_allowing_joiners(&config.identity)?
        } else {
            pki::server_config(&config.identity)?
        };
        let client_tls = pki::client_config(&config.identity)?;
        let transport = Arc::new(transport_config(config.keep_alive, config.idle_timeout)?);
        let server_crypto = QuicServerConfig::try_from(server_tls).map_err(|e| tls_config(&e))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport.clone());
        let client_crypto = QuicClientConfig::try_from(client_tls).map_err(|e| tls_config(&e))?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
        client_config.transport_config(transport);
        let runtime = quinn::default_runtime().ok_or(MeshError::InvalidConfig { reason: "no tokio runtime" })?;
        let endpoint = Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket, runtime)
            .map_err(|source| MeshError::Bind { addr, source })?;
        let server = Arc::new(Server {
            handler,
            streams: std::array::from_fn(|_| std::sync::RwLock::new(None)),
            calls: std::array::from_fn(|_| std::sync::RwLock::new(None)),
            max_frame_bytes: config.max_frame_bytes,
            log_limit: RateLimit::new(Duration::from_secs(1)),
        });
        let accept_task = tokio::spawn(accept_loop(endpoint.clone(), server.clone()));
        Ok(Mesh {
            endpoint,
            node_id: config.identity.node_id.clone(),
            client_config,
            max_frame_bytes: config.max_frame_bytes,
            peers: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            accept_task,
            server,
        })
    }

    /// Sets the handler for streams peers open on `channel` with [`Mesh::open_stream`] (once
    /// per channel; later calls are ignored). Until it is set such streams are refused.
    ///
    /// # Panics
    /// If `channel` is not below [`STREAM_CHANNELS`](frame::STREAM_CHANNELS).
    pub fn set_stream_handler(&self, channel: u8, handler: Arc<dyn StreamHandler>) {
        let mut slot = self.server.streams[usize::from(channel)].write().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() && !self.closed.load(Ordering::SeqCst) {
            *slot = Some(handler);
        }
    }

    /// Sets the handler for calls peers make on `channel` with [`Mesh::call_on`] (once per
    /// channel; later calls are ignored). Channel 0 is the handler given to [`Mesh::bind`];
    /// the others serve cluster members only, never a joining node. Until a channel's handler
    /// is set its calls are refused.
    ///
    /// # Panics
    /// If `channel` is 0 or not below [`CALL_CHANNELS`](frame::CALL_CHANNELS).
    pub fn set_call_handler(&self, channel: u8, handler: Arc<dyn Handler>) {
        assert!(channel != 0, "call channel 0 is the handler given to Mesh::bind");
        let mut slot = self.server.calls[usize::from(channel)].write().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() && !self.closed.load(Ordering::SeqCst) {
            *slot = Some(handler);
        }
    }

    /// Opens a stream on `channel` to `node_id` at `addr` whose first frame carries `head`;
    /// the peer's [`StreamHandler`] for that channel gets it with `deadline`. Returns both
    /// halves; the caller writes the rest (and finishes the send half) and reads the answer.
    /// Connecting is bounded by `deadline` as well.
    pub async fn open_stream(
        &self,
        channel: u8,
        node_id: &str,
        addr: SocketAddr,
        head: &[u8],
        deadline: Duration,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), MeshError> {
        let attempt = async {
            let conn = self.connection(node_id, addr).await?;
            let header = frame::encode_header(&RequestHeader {
                version: frame::PROTOCOL_VERSION,
                deadline_ms: u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX),
                kind: frame::KIND_STREAM,
                channel,
            });
            let (mut send, recv) = conn.open_bi().await.map_err(|e| connection_error(addr, &e, false))?;
            frame::write_frame(&mut send, &[&header, head], self.max_frame_bytes)
                .await
                .map_err(|e| frame_error(addr, e, false))?;
            Ok((send, recv))
        };
        match tokio::time::timeout(deadline, attempt).await {
            Ok(result) => result,
            Err(_) => Err(MeshError::Timeout { after: deadline }),
        }
    }

    /// Forgets the cached connection to `node_id` (closing it), e.g. after it stopped
    /// answering; the next call connects again.
    pub fn drop_connection(&self, node_id: &str) {
        let slot = match self.peers.lock() {
            Ok(mut peers) => peers.remove(node_id),
            Err(_) => None,
        };
        if let Some(conn) = slot.and_then(|slot| slot.take()) {
            conn.close(CLOSE_SHUTDOWN, b"dropped");
        }
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, MeshError> {
        self.endpoint
            .local_addr()
            .map_err(|source| MeshError::Bind { addr: SocketAddr::from(([0, 0, 0, 0], 0)), source })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Connections currently open on this endpoint, in both directions.
    pub fn open_connections(&self) -> usize {
        self.endpoint.open_connections()
    }

    /// Whether a verified connection to `node_id` is cached and open.
    pub fn is_connected(&self, node_id: &str) -> bool {
        let slot = match self.peers.lock() {
            Ok(peers) => peers.get(node_id).cloned(),
            Err(_) => None,
        };
        let Some(slot) = slot else { return false };
        slot.conn.lock().is_ok_and(|c| c.as_ref().is_some_and(|c| c.close_reason().is_none()))
    }

    /// Sends `request` to `node_id` at `addr` and waits at most `timeout` for its answer.
    ///
    /// The peer's certificate must name `node_id`. Reuses the connection to that peer, making
    /// a new one if there is none, it closed, or the peer's address changed.
    pub async fn call(
        &self,
        node_id: &str,
        addr: SocketAddr,
        request: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, MeshError> {
        self.call_on(0, node_id, addr, request, timeout).await
    }

    /// [`Mesh::call`] to the handler the peer set for `channel` with
    /// [`Mesh::set_call_handler`] (0: the handler given to [`Mesh::bind`]).
    pub async fn call_on(
        &self,
        channel: u8,
        node_id: &str,
        addr: SocketAddr,
        request: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, MeshError> {
        let start = Instant::now();
        let attempt = async {
            let conn = self.connection(node_id, addr).await?;
            let remaining = timeout.saturating_sub(start.elapsed());
            request_on(&conn, addr, channel, &request, remaining, self.max_frame_bytes).await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(MeshError::Timeout { after: timeout }),
        }
    }

    /// [`Mesh::call`] with MessagePack-encoded request and response.
    pub async fn call_msg<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        node_id: &str,
        addr: SocketAddr,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, MeshError> {
        let bytes = rmp_serde::to_vec_named(request).map_err(|e| MeshError::Codec { reason: e.to_string() })?;
        let answer = self.call(node_id, addr, Bytes::from(bytes), timeout).await?;
        rmp_serde::from_slice(&answer).map_err(|e| MeshError::Codec { reason: e.to_string() })
    }

    /// Closes every connection, tells the peers, and waits (bounded) until that is sent.
    pub async fn close(&self) {
        self.shut();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }

    /// Closes every connection and stops accepting, without waiting (see [`Mesh::close`]).
    pub fn shutdown(&self) {
        self.shut();
    }

    fn shut(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.accept_task.abort();
        for slot in &self.server.streams {
            slot.write().unwrap_or_else(|e| e.into_inner()).take();
        }
        for slot in &self.server.calls {
            slot.write().unwrap_or_else(|e| e.into_inner()).take();
        }
        self.endpoint.close(CLOSE_SHUTDOWN, b"shutdown");
    }

    /// The verified connection to `node_id` at `addr`, made (with hello) if needed.
    async fn connection(&self, node_id: &str, addr: SocketAddr) -> Result<Connection, MeshError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(MeshError::Closed);
        }
        // Fast path (every forwarded request): an open connection is cached.
        let cached = self.peers.lock().map_err(|_| MeshError::Closed)?.get(node_id).cloned();
        if let Some(conn) = cached.as_ref().and_then(|slot| slot.usable(addr)) {
            return Ok(conn);
        }
        pki::validate_node_id(node_id)?;
        let slot = match cached {
            Some(slot) => slot,
            None => self.peers.lock().map_err(|_| MeshError::Closed)?.entry(node_id.to_owned()).or_default().clone(),
        };
        let _connecting = slot.connecting.lock().await;
        // Another caller may have connected while this one waited.
        if let Some(conn) = slot.usable(addr) {
            return Ok(conn);
        }
        if let Some(old) = slot.take() {
            old.close(CLOSE_SHUTDOWN, b"replaced");
        }
        let conn = connect_and_hello(&self.endpoint, self.client_config.clone(), addr, node_id).await?;
        debug!(node = %node_id, %addr, "connected to peer");
        if let Ok(mut c) = slot.conn.lock() {
            *c = Some(conn.clone());
        }
        Ok(conn)
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Sends one request from a node that has no certificate yet, to `seed`, accepting the seed
/// only if its chain contains the CA whose sha256 is `ca_fingerprint`. `listen` is the local
/// UDP address to use (port 0 is fine). The server's handler sees `node_id: None`.
pub async fn join_call(
    listen: SocketAddr,
    seed: SocketAddr,
    ca_fingerprint: &str,
    request: Bytes,
    timeout: Duration,
) -> Result<Bytes, MeshError> {
    let tls = pki::join_client_config(ca_fingerprint)?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| tls_config(&e))?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
    let idle = timeout.clamp(Duration::from_secs(1), Duration::from_secs(60));
    client_config.transport_config(Arc::new(transport_config(idle / 4, idle)?));
    let endpoint = Endpoint::client(listen).map_err(|source| MeshError::Bind { addr: listen, source })?;
    let start = Instant::now();
    let attempt = async {
        let conn = connect_and_hello(&endpoint, client_config, seed, JOIN_SERVER_NAME).await?;
        let remaining = timeout.saturating_sub(start.elapsed());
        let result =
            request_on(&conn, seed, 0, &request, remaining, ANON_MAX_FRAME_BYTES.max(JOIN_MAX_RESPONSE_BYTES)).await;
        conn.close(CLOSE_SHUTDOWN, b"done");
        result
    };
    let result = match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(MeshError::Timeout { after: timeout }),
    };
    endpoint.close(CLOSE_SHUTDOWN, b"done");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    result
}

fn transport_config(keep_alive: Duration, idle_timeout: Duration) -> Result<quinn::TransportConfig, MeshError> {
    let idle = quinn::IdleTimeout::try_from(idle_timeout)
        .map_err(|_| MeshError::InvalidConfig { reason: "idle_timeout too large" })?;
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(keep_alive)).max_idle_timeout(Some(idle));
    // Bulk transfers (modules) on a LAN: windows large enough that flow control never waits
    // on a sub-millisecond round trip, and path MTU discovery allowed up to jumbo frames
    // (probes that get no answer leave the MTU where it was).
    transport
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(4 * STREAM_WINDOW))
        .send_window(4 * u64::from(STREAM_WINDOW));
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_UPPER_BOUND);
    transport.mtu_discovery_config(Some(mtu));
    Ok(transport)
}

fn tls_config(e: &dyn std::fmt::Display) -> MeshError {
    MeshError::Pki(pki::PkiError::Tls { reason: e.to_string() })
}

/// Connects to `addr` expecting a certificate for `server_name`, then runs the hello.
async fn connect_and_hello(
    endpoint: &Endpoint,
    client_config: quinn::ClientConfig,
    addr: SocketAddr,
    server_name: &str,
) -> Result<Connection, MeshError> {
    let connecting = endpoint.connect_with(client_config, addr, server_name).map_err(|e| match e {
        quinn::ConnectError::EndpointStopping => MeshError::Closed,
        e => MeshError::Connect { addr, reason: e.to_string() },
    })?;
    let conn = connecting.await.map_err(|e| connection_error(addr, &e, true))?;
    let hello = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| connection_error(addr, &e, true))?;
        frame::write_frame(&mut send, &[frame::HELLO], frame::HELLO.len())
            .await
            .map_err(|e| frame_error(addr, e, true))?;
        let _ = send.finish();
        let answer = frame::read_frame(&mut recv, frame::HELLO.len()).await.map_err(|e| frame_error(addr, e, true))?;
        if answer != frame::HELLO {
            return Err(MeshError::Protocol { addr, reason: "unexpected hello".to_owned() });
        }
        Ok(())
    };
    let hello: Result<(), MeshError> = async {
        match tokio::time::timeout(HELLO_TIMEOUT, hello).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(MeshError::Connect { addr, reason: "no hello from peer".to_owned() }),
        }
    }
    .await;
    if let Err(e) = hello {
        conn.close(CLOSE_PROTOCOL, b"hello failed");
        return Err(e);
    }
    Ok(conn)
}

/// One request/response on a fresh stream of `conn`.
async fn request_on(
    conn: &Connection,
    addr: SocketAddr,
    channel: u8,
    request: &[u8],
    deadline: Duration,
    max_frame_bytes: usize,
) -> Result<Bytes, MeshError> {
    let header = frame::encode_header(&RequestHeader {
        version: frame::PROTOCOL_VERSION,
        deadline_ms: u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX),
        kind: frame::KIND_CALL,
        channel,
    });
    let len = header.len() + request.len();
    if len > max_frame_bytes {
        return Err(MeshError::FrameTooLarge { len: len as u64, max: max_frame_bytes });
    }
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| connection_error(addr, &e, false))?;
    match frame::write_frame(&mut send, &[&header, request], max_frame_bytes).await {
        Ok(()) => {
            let _ = send.finish();
        }
        // The server refused the frame; its answer says why.
        Err(FrameError::Write(quinn::WriteError::Stopped(_))) => {}
        Err(e) => return Err(frame_error(addr, e, false)),
    }
    let answer = frame::read_frame(&mut recv, max_frame_bytes).await.map_err(|e| frame_error(addr, e, false))?;
    let Some((&status, body)) = answer.split_first() else {
        return Err(MeshError::Protocol { addr, reason: "empty response".to_owned() });
    };
    let text = || String::from_utf8_lossy(body).into_owned();
    match Status::from_u8(status) {
        Some(Status::Ok) => Ok(answer.slice(1..)),
        Some(Status::HandlerError) => Err(MeshError::Remote(text())),
        Some(Status::DeadlineExceeded) => Err(MeshError::Timeout { after: deadline }),
        Some(Status::FrameTooLarge | Status::BadRequest) => Err(MeshError::Rejected { reason: text() }),
        None => Err(MeshError::Protocol { addr, reason: format!("unknown response status {status}") }),
    }
}

fn is_tls_code(code: quinn::TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

fn connection_error(addr: SocketAddr, e: &ConnectionError, connecting: bool) -> MeshError {
    let reason = e.to_string();
    match e {
        ConnectionError::TransportError(t) if is_tls_code(t.code) => MeshError::Tls { addr, reason },
        ConnectionError::ConnectionClosed(c) if is_tls_code(c.error_code) => {
            MeshError::Tls { addr, reason: format!("refused by peer: {reason}") }
        }
        ConnectionError::LocallyClosed => MeshError::Closed,
        ConnectionError::ApplicationClosed(c) if c.error_code == CLOSE_BAD_CERTIFICATE => {
            MeshError::Tls { addr, reason: format!("refused by peer: {reason}") }
        }
        _ if connecting => MeshError::Connect { addr, reason },
        _ => MeshError::ConnectionLost { addr, reason },
    }
}

fn frame_error(addr: SocketAddr, e: FrameError, connecting: bool) -> MeshError {
    match e {
        FrameError::TooLarge { len, max } => MeshError::FrameTooLarge { len, max },
        FrameError::Read(quinn::ReadError::ConnectionLost(c))
        | FrameError::Write(quinn::WriteError::ConnectionLost(c)) => connection_error(addr, &c, connecting),
        e => MeshError::Protocol { addr, reason: e.to_string() },
    }
}

/// Server side state shared by all connections.
struct Server {
    handler: Arc<dyn Handler>,
    /// Handlers of stream channels and of call channels 1.. (channel 0 is `handler`); cleared
    /// on shutdown, so that a handler holding what holds the mesh (the gateway's routes hold
    /// the forwarder, the replicator holds its transport, both hold the mesh) is no cycle.
    streams: [std::sync::RwLock<Option<Arc<dyn StreamHandler>>>; frame::STREAM_CHANNELS],
    calls: [std::sync::RwLock<Option<Arc<dyn Handler>>>; frame::CALL_CHANNELS],
    max_frame_bytes: usize,
    log_limit: RateLimit,
}

async fn accept_loop(endpoint: Endpoint, server: Arc<Server>) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(serve_connection(incoming, server.clone()));
    }
}

async fn serve_connection(incoming: quinn::Incoming, server: Arc<Server>) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            if server.log_limit.allow() {
                debug!(addr = %remote, error = %e, "incoming connection failed");
            }
            return;
        }
    };
    let node_id = match peer_node_id(&conn) {
        Ok(node_id) => node_id,
        Err(e) => {
            if server.log_limit.allow() {
                warn!(addr = %remote, error = %e, "peer certificate has no usable node id");
            }
            conn.close(CLOSE_BAD_CERTIFICATE, b"certificate has no node id");
            return;
        }
    };
    let max_frame_bytes = match node_id {
        Some(_) => server.max_frame_bytes,
        None => {
            conn.set_max_concurrent_bi_streams(VarInt::from_u32(ANON_MAX_STREAMS));
            server.max_frame_bytes.min(ANON_MAX_FRAME_BYTES)
        }
    };
    let peer = PeerInfo { node_id, addr: remote };
    if tokio::time::timeout(HELLO_TIMEOUT, answer_hello(&conn)).await.map_or(true, |ok| !ok) {
        conn.close(CLOSE_PROTOCOL, b"no hello");
        return;
    }
    debug!(peer = ?peer.node_id, addr = %remote, "peer connected");
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(serve_stream(send, recv, peer.clone(), server.clone(), max_frame_bytes));
    }
}

async fn answer_hello(conn: &Connection) -> bool {
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return false;
    };
    match frame::read_frame(&mut recv, frame::HELLO.len()).await {
        Ok(hello) if hello == frame::HELLO => {}
        _ => return false,
    }
    if frame::write_frame(&mut send, &[frame::HELLO], frame::HELLO.len()).await.is_err() {
        return false;
    }
    send.finish().is_ok()
}

/// The node id in the peer's certificate, `None` if it sent none. The chain was already
/// verified against the CA by rustls.
fn peer_node_id(conn: &Connection) -> Result<Option<String>, pki::PkiError> {
    let Some(identity) = conn.peer_identity() else {
        return Ok(None);
    };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else {
        return Ok(None);
    };
    match chain.first() {
        Some(leaf) => pki::node_id_from_cert(leaf).map(Some),
        None => Ok(None),
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    peer: PeerInfo,
    server: Arc<Server>,
    max_frame_bytes: usize,
) {
    let read = async {
        let len = frame::read_frame_len(&mut recv, max_frame_bytes).await?;
        frame::read_body(&mut recv, len).await
    };
    let payload = match tokio::time::timeout(REQUEST_READ_TIMEOUT, read).await {
        Ok(Ok(payload)) => payload,
        Ok(Err(FrameError::TooLarge { len, max })) => {
            if server.log_limit.allow() {
                warn!(peer = ?peer.node_id, addr = %peer.addr, len, max, "request frame too large");
            }
            let _ = recv.stop(frame::STOP_FRAME_TOO_LARGE);
            let message = format!("request frame of {len} bytes exceeds the limit of {max}");
            respond(&mut send, Status::FrameTooLarge, message.as_bytes(), max_frame_bytes).await;
            return;
        }
        Ok(Err(_)) | Err(_) => {
            let _ = recv.stop(frame::STOP_BAD_REQUEST);
            return;
        }
    };
    let (header, body) = match frame::decode_request(&payload) {
        Ok(parts) => parts,
        Err(message) => {
            respond(&mut send, Status::BadRequest, message.as_bytes(), max_frame_bytes).await;
            return;
        }
    };
    if header.version != frame::PROTOCOL_VERSION {
        let message = format!("unsupported protocol version {}", header.version);
        respond(&mut send, Status::BadRequest, message.as_bytes(), max_frame_bytes).await;
        return;
    }
    let deadline = Duration::from_millis(u64::from(header.deadline_ms));
    if header.kind == frame::KIND_STREAM {
        // Streams are for cluster members only, never for a joining node.
        let handler = server
            .streams
            .get(usize::from(header.channel))
            .and_then(|h| h.read().unwrap_or_else(|e| e.into_inner()).clone());
        match (&peer.node_id, handler) {
            (Some(_), Some(streams)) => streams.handle_stream(peer, body, deadline, send, recv).await,
            _ => {
                let message = "streams are not served here";
                respond(&mut send, Status::BadRequest, message.as_bytes(), max_frame_bytes).await;
            }
        }
        return;
    }
    let handler = match header.channel {
        0 => Some(server.handler.clone()),
        // Other channels are for cluster members only, never for a joining node.
        channel => server
            .calls
            .get(usize::from(channel))
            .and_then(|h| h.read().unwrap_or_else(|e| e.into_inner()).clone())
            .filter(|_| peer.node_id.is_some()),
    };
    let Some(handler) = handler else {
        let message = format!("call channel {} is not served here", header.channel);
        respond(&mut send, Status::BadRequest, message.as_bytes(), max_frame_bytes).await;
        return;
    };
    let handled = tokio::time::timeout(deadline, handler.handle(peer, body)).await;
    match handled {
        Ok(Ok(answer)) => {
            if answer.len() + 1 > max_frame_bytes {
                let message = format!("response of {} bytes is too large", answer.len());
                respond(&mut send, Status::HandlerError, message.as_bytes(), max_frame_bytes).await;
            } else {
                respond(&mut send, Status::Ok, &answer, max_frame_bytes).await;
            }
        }
        Ok(Err(message)) => {
            respond(&mut send, Status::HandlerError, message.as_bytes(), max_frame_bytes).await;
        }
        Err(_) => respond(&mut send, Status::DeadlineExceeded, &[], max_frame_bytes).await,
    }
}

async fn respond(send: &mut quinn::SendStream, status: Status, body: &[u8], max: usize) {
    // Error messages are truncated to fit; a too-large Ok answer was turned into an error.
    let body = &body[..body.len().min(max.saturating_sub(1))];
    if frame::write_frame(send, &[&[status as u8], body], max).await.is_ok() {
        let _ = send.finish();
    }
}
