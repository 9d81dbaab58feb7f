//! Forwarded HTTP requests: a gateway with no ready local replica hands the request to a peer
//! that has one, over the existing QUIC connection to it (one stream per request).
//!
//! Wire, on one mesh stream ([`Mesh::open_stream`]):
//! - caller → peer: the opening frame carries a [`ForwardHead`] (MessagePack, fields as an
//!   array; the older map form decodes too): Service, preferred replica, method, path and
//!   headers, and the revision to keep to when the Service's requests are split (then the head
//!   goes in map form, which nodes that predate the field decode too); then the request body
//!   as raw stream bytes, ended by finishing the stream.
//! - peer → caller: one length-prefixed frame with a [`ForwardAnswer`], then (for a response)
//!   the body as raw bytes, ended by finishing the stream; a body that fails midway resets it.
//!
//! [`ForwardAnswer::Unavailable`] means no replica saw the request, so the caller may retry
//! any request elsewhere. If the connection fails after the request left, the outcome is
//! unknown and only idempotent requests are retried (the gateway decides, see
//! [`crate::dataplane::gateway`]).
//!
//! Peer health: a probe loop pings every live peer every [`PROBE_INTERVAL`]; a peer that
//! does not answer within [`PROBE_TIMEOUT`], or whose connection fails under a forwarded
//! request, is taken out of rotation at once (before gossip declares it dead), and requests
//! waiting on it are abandoned and retried elsewhere.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt as _, StreamBody};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use wasmfleet_cluster::mesh::frame as wire;
use wasmfleet_cluster::mesh::{Mesh, MeshError, PeerInfo, RecvStream, SendStream, StreamHandler};
use wasmfleet_runtime::ResponseBody;

use crate::dataplane::gateway::Routes;
use crate::dataplane::split::Group;
use crate::manifest::{Kind, ObjectKey};

/// The mesh stream channel of forwarded requests.
pub const STREAM_CHANNEL: u8 = 0;
/// How often every live peer is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// A probe not answered within this marks the peer down.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Largest answer head (status and headers).
const MAX_HEAD_BYTES: usize = 256 * 1024;
/// Read size for streamed bodies.
const CHUNK: usize = 64 * 1024;
/// Stream reset code: the response body failed midway.
const RESET_BODY_FAILED: u32 = 1;
/// Default deadline of a forwarded request when the caller sets none.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// What the caller sends first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardHead {
    pub namespace: String,
    pub service: String,
    /// The replica the caller chose; another ready local one serves if it is gone.
    pub replica: Option<String>,
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub headers: Vec<(String, serde_bytes::ByteBuf)>,
    /// The revision the caller chose, when the Service's requests are split between revisions:
    /// another ready local replica serves only if it is of this revision. Last, and left out
    /// when `None`, so that the array form stays what nodes that predate it decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

impl ForwardHead {
    /// The head's bytes: the compact array form, or with a `revision` the map form (a node
    /// that predates the field ignores it there, where an array one longer would not decode).
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        if self.revision.is_some() { rmp_serde::to_vec_named(self) } else { rmp_serde::to_vec(self) }
    }
}

/// What the peer answers first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardAnswer {
    Response {
        status: u16,
        headers: Vec<(String, serde_bytes::ByteBuf)>,
        replica: String,
    },
    /// No replica here could take it: nothing was delivered.
    Unavailable {
        reason: String,
    },
}

/// Why a forwarded request failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No replica saw the request: safe to retry anywhere.
    #[error("not delivered: {0}")]
    NotDelivered(String),
    /// The request may have been processed.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// Health and load of one peer, as this node's gateway sees it.
#[derive(Default)]
pub struct PeerHealth {
    down: AtomicBool,
    /// Wakes requests waiting on this peer when it goes down.
    lost: Notify,
    /// Forwarded requests in flight to this peer.
    pub in_flight: AtomicU32,
    /// The data-plane lane port that last failed to connect, and when (ms since the Unix
    /// epoch): for [`LANE_RETRY`] after, that port is not tried again (its cluster address
    /// serves instead); a port the peer advertises anew (after a restart) is tried at once.
    lane_failed: std::sync::Mutex<Option<(u16, u64)>>,
}

impl PeerHealth {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    fn lane_usable(&self, port: u16) -> bool {
        match *self.lane_failed.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((failed, at)) if failed == port => {
                crate::clock::now_ms().saturating_sub(at) > LANE_RETRY.as_millis() as u64
            }
            _ => true,
        }
    }

    fn lane_failed(&self, port: u16) {
        *self.lane_failed.lock().unwrap_or_else(|e| e.into_inner()) = Some((port, crate::clock::now_ms()));
    }
}

/// How long a peer's data-plane lane port that did not connect is left alone. Connecting
/// to a port that drops packets takes the handshake timeout, so this is rare.
const LANE_RETRY: Duration = Duration::from_secs(300);

thread_local! {
    /// The data-plane lane this thread drives, if it is one (see [`crate::dataplane`]).
    static LANE: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Marks the current thread as the one driving data-plane lane `index`: requests it forwards
/// go out through that lane's endpoint.
pub fn enter_lane(index: usize) {
    LANE.with(|l| l.set(Some(index)));
}

/// Sends requests to peers and tracks their health.
///
/// Requests go out through the endpoint of the data-plane lane the calling thread drives, to
/// the peer's lane of the same index ([`crate::dataplane`]), so a forwarded request stays on
/// one thread on both nodes; from any other thread, and to a peer without lanes, through the
/// cluster endpoint.
pub struct Forwarder {
    mesh: Arc<Mesh>,
    lanes: std::sync::OnceLock<Vec<Arc<Mesh>>>,
    peers: DashMap<String, Arc<PeerHealth>>,
}

impl Forwarder {
    pub fn new(mesh: Arc<Mesh>) -> Arc<Forwarder> {
        Arc::new(Forwarder { mesh, lanes: std::sync::OnceLock::new(), peers: DashMap::new() })
    }

    /// The lanes' endpoints, by lane index (once, when the data plane is up).
    pub fn set_lanes(&self, lanes: Vec<Arc<Mesh>>) {
        let _ = self.lanes.set(lanes);
    }

    /// The calling thread's lane: its index and endpoint.
    fn lane(&self) -> Option<(usize, &Arc<Mesh>)> {
        let index = LANE.with(|l| l.get())?;
        Some((index, self.lanes.get()?.get(index)?))
    }

    pub fn health(&self, node: &str) -> Arc<PeerHealth> {
        if let Some(h) = self.peers.get(node) {
            return h.clone();
        }
        self.peers.entry(node.to_string()).or_default().clone()
    }

    /// Whether `node` is currently usable (not marked down by a probe or a failure).
    pub fn is_up(&self, node: &str) -> bool {
        self.peers.get(node).is_none_or(|h| !h.is_down())
    }

    /// Takes `node` out of rotation and abandons requests waiting on it.
    pub fn mark_down(&self, node: &str, why: &str) {
        let h = self.health(node);
        if !h.down.swap(true, Ordering::SeqCst) {
            tracing::warn!(peer = %node, reason = %why, "peer unreachable: out of rotation");
        }
        h.lost.notify_waiters();
        self.mesh.drop_connection(node);
        for lane in self.lanes.get().into_iter().flatten() {
            lane.drop_connection(node);
        }
    }

    fn mark_up(&self, node: &str) {
        let h = self.health(node);
        if h.down.swap(false, Ordering::SeqCst) {
            tracing::info!(peer = %node, "peer reachable again: back in rotation");
        }
    }

    /// Pings every live peer every [`PROBE_INTERVAL`] until `peers` returns `None`.
    pub fn spawn_probes(
        self: &Arc<Self>,
        peers: impl Fn() -> Option<Vec<(String, SocketAddr)>> + Send + 'static,
        ping: Bytes,
    ) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(list) = peers() else { return };
                let Some(this) = weak.upgrade() else { return };
                let mut probes = tokio::task::JoinSet::new();
                for (name, addr) in list {
                    let this = this.clone();
                    let ping = ping.clone();
                    probes.spawn(async move {
                        match this.mesh.call(&name, addr, ping, PROBE_TIMEOUT).await {
                            Ok(_) => this.mark_up(&name),
                            Err(e) => this.mark_down(&name, &e.to_string()),
                        }
                    });
                }
                while probes.join_next().await.is_some() {}
            }
        });
    }

    /// Opens the request's stream: on this thread's lane to the peer's lane of the same index
    /// when both have lanes, else (or when that does not connect) on the cluster endpoints.
    async fn open(
        &self,
        node: &str,
        addr: SocketAddr,
        lanes: &[u16],
        health: &PeerHealth,
        head: &[u8],
        deadline: Duration,
    ) -> Result<(SendStream, RecvStream), MeshError> {
        if let Some((index, mesh)) = self.lane()
            && let Some(&port) = lanes.get(index % lanes.len().max(1))
            && health.lane_usable(port)
        {
            let lane = SocketAddr::new(addr.ip(), port);
            match mesh.open_stream(STREAM_CHANNEL, node, lane, head, deadline).await {
                // Nothing was sent: the cluster address may still work (a firewall that lets
                // only the cluster port through).
                Err(e @ (MeshError::Connect { .. } | MeshError::Tls { .. })) => {
                    tracing::warn!(peer = %node, %lane, error = %e, "peer's data-plane port does not connect: using its cluster address");
                    health.lane_failed(port);
                }
                other => return other,
            }
        }
        self.mesh.open_stream(STREAM_CHANNEL, node, addr, head, deadline).await
    }

    /// Forwards one request to `node`. The response body streams from the peer.
    pub async fn send<B>(
        &self,
        node: &str,
        addr: SocketAddr,
        lanes: &[u16],
        head: &ForwardHead,
        body: B,
        deadline: Duration,
    ) -> Result<Response<ResponseBody>, ForwardError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Display + Send,
    {
        let health = self.health(node);
        let lost = health.lost.notified();
        tokio::pin!(lost);
        lost.as_mut().enable();
        if health.is_down() {
            return Err(ForwardError::NotDelivered(format!("{node} is unreachable")));
        }
        let head_bytes = head.encode().map_err(|e| ForwardError::NotDelivered(e.to_string()))?;
        health.in_flight.fetch_add(1, Ordering::Relaxed);
        let _guard = InFlight(health.clone());
        // Errors carry whether the connection itself failed (then the peer leaves rotation).
        let exchange = async {
            let (send, mut recv) =
                self.open(node, addr, lanes, &health, &head_bytes, deadline).await.map_err(|e| match e {
                    MeshError::Connect { .. } | MeshError::Tls { .. } | MeshError::Closed => {
                        (ForwardError::NotDelivered(e.to_string()), true)
                    }
                    e => (ForwardError::Unknown(e.to_string()), true),
                })?;
            if body.is_end_stream() {
                // No body (most GETs): finish now instead of spawning a pump.
                let mut send = send;
                let _ = send.finish();
            } else {
                tokio::spawn(pump_body(body, send, Vec::new()));
            }
            let answer = wire::read_frame(&mut recv, MAX_HEAD_BYTES).await.map_err(|e| {
                let connection = matches!(e, wire::FrameError::Read(quinn::ReadError::ConnectionLost(_)));
                (ForwardError::Unknown(format!("{node}: {e}")), connection)
            })?;
            let answer: ForwardAnswer = rmp_serde::from_slice(&answer)
                .map_err(|e| (ForwardError::Unknown(format!("{node} sent an undecodable answer: {e}")), false))?;
            Ok::<_, (ForwardError, bool)>((answer, recv))
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(deadline, exchange) => match r {
                Ok(r) => r,
                Err(_) => Err((ForwardError::Unknown(format!("{node} did not answer within {deadline:?}")), false)),
            },
            _ = &mut lost => Err((ForwardError::Unknown(format!("{node} became unreachable")), false)),
        };
        let (answer, recv) = match outcome {
            Ok(v) => v,
            Err((e, connection_failed)) => {
                if connection_failed {
                    self.mark_down(node, &e.to_string());
                }
                return Err(e);
            }
        };
        match answer {
            ForwardAnswer::Unavailable { reason } => Err(ForwardError::NotDelivered(format!("{node}: {reason}"))),
            ForwardAnswer::Response { status, headers, replica } => {
                let mut resp = Response::new(recv_body(recv));
                *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                for (name, value) in headers {
                    if let (Ok(n), Ok(v)) =
                        (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_bytes(&value))
                    {
                        resp.headers_mut().append(n, v);
                    }
                }
                if let Ok(v) = http::HeaderValue::from_str(&replica) {
                    resp.headers_mut().insert("x-wasmfleet-replica", v);
                }
                if let Ok(v) = http::HeaderValue::from_str(node) {
                    resp.headers_mut().insert("x-wasmfleet-node", v);
                }
                Ok(resp)
            }
        }
    }
}

struct InFlight(Arc<PeerHealth>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Headers that describe one hop, not the message: never forwarded.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Headers of a message, minus hop-by-hop ones.
pub fn wire_headers(headers: &http::HeaderMap) -> Vec<(String, serde_bytes::ByteBuf)> {
    headers
        .iter()
        .filter(|(n, _)| !hop_by_hop(n.as_str()))
        .map(|(n, v)| (n.as_str().to_string(), serde_bytes::ByteBuf::from(v.as_bytes().to_vec())))
        .collect()
}

/// Streams a body (a request's or a response's) into `send` after `prefix` (bytes still to
/// go first, such as the answer frame), then finishes it; a failing body resets the stream.
///
/// A prefix goes out together with the body's first data when that is ready at once: one
/// write, usually one packet, for a small response.
async fn pump_body<B>(body: B, mut send: SendStream, mut prefix: Vec<u8>)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display + Send,
{
    use futures::FutureExt as _;
    let mut body = std::pin::pin!(body);
    while !body.is_end_stream() {
        let next = match body.frame().now_or_never() {
            Some(next) => next,
            None => {
                // Not ready: what is written so far goes now, the rest when it comes.
                if !prefix.is_empty() && send.write_all(&std::mem::take(&mut prefix)).await.is_err() {
                    return;
                }
                body.frame().await
            }
        };
        match next {
            None => break,
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                let written = if prefix.is_empty() {
                    send.write_all(&data).await
                } else {
                    prefix.extend_from_slice(&data);
                    send.write_all(&std::mem::take(&mut prefix)).await
                };
                if written.is_err() {
                    return;
                }
            }
            Some(Err(_)) => {
                if !prefix.is_empty() {
                    let _ = send.write_all(&prefix).await;
                }
                let _ = send.reset(RESET_BODY_FAILED.into());
                return;
            }
        }
    }
    if !prefix.is_empty() && send.write_all(&prefix).await.is_err() {
        return;
    }
    let _ = send.finish();
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body read from a QUIC stream until it finishes.
///
/// The stream is read one step ahead: when a chunk is the last one (its packet carried the
/// FIN), the end is consumed at once and the stream dropped. A reader that stops at
/// `Content-Length`, as hyper does, therefore never drops a stream with its end unread,
/// which would make quinn send STOP_SENDING: a packet, and an ACK for it, per request.
fn recv_body(recv: RecvStream) -> ResponseBody {
    BodyReader::new(recv).into_body()
}

/// The body of a forwarded request: empty without touching the stream again when it already
/// ended (a GET arrives with its FIN), so the stream is not stopped when the guest ignores it.
fn request_body(recv: RecvStream) -> ResponseBody {
    let mut reader = BodyReader::new(recv);
    reader.look_ahead();
    if reader.finished() {
        return http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync();
    }
    reader.into_body()
}

/// Reads a stream one step ahead (see [`recv_body`]).
struct BodyReader {
    /// `None` once the end or an error was read.
    recv: Option<RecvStream>,
    /// A read made early, delivered before reading again.
    ahead: Option<Result<Bytes, quinn::ReadError>>,
}

impl BodyReader {
    fn new(recv: RecvStream) -> Self {
        BodyReader { recv: Some(recv), ahead: None }
    }

    fn finished(&self) -> bool {
        self.recv.is_none() && self.ahead.is_none()
    }

    /// Reads what is ready now, without waiting: the end (the stream goes) or the next read.
    fn look_ahead(&mut self) {
        use futures::FutureExt as _;
        let Some(recv) = self.recv.as_mut() else { return };
        match recv.read_chunk(CHUNK, true).now_or_never() {
            None => {}
            Some(Ok(None)) => self.recv = None,
            Some(Ok(Some(chunk))) => self.ahead = Some(Ok(chunk.bytes)),
            Some(Err(e)) => {
                self.ahead = Some(Err(e));
                self.recv = None;
            }
        }
    }

    fn into_body(self) -> ResponseBody {
        let stream = futures::stream::unfold(self, |mut reader| async move {
            let item = match reader.ahead.take() {
                Some(item) => item,
                None => match reader.recv.as_mut()?.read_chunk(CHUNK, true).await {
                    Ok(Some(chunk)) => Ok(chunk.bytes),
                    Ok(None) => return None,
                    Err(e) => {
                        // After an error there is nothing more to read.
                        reader.recv = None;
                        Err(e)
                    }
                },
            };
            reader.look_ahead();
            Some((item.map(Frame::data).map_err(|e| Box::new(e) as BoxError), reader))
        });
        StreamBody::new(stream).boxed_unsync()
    }
}

/// Serves forwarded requests with this node's local replicas.
pub struct ForwardServer {
    pub routes: Routes,
}

impl StreamHandler for ForwardServer {
    fn handle_stream(
        &self,
        peer: PeerInfo,
        head: Bytes,
        deadline: Duration,
        send: SendStream,
        recv: RecvStream,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let routes = self.routes.clone();
        Box::pin(async move { serve(routes, peer, head, deadline, send, recv).await })
    }
}

async fn answer(send: &mut SendStream, answer: &ForwardAnswer) -> bool {
    let Ok(bytes) = rmp_serde::to_vec(answer) else { return false };
    wire::write_frame(send, &[&bytes], MAX_HEAD_BYTES).await.is_ok()
}

async fn serve(
    routes: Routes,
    peer: PeerInfo,
    head: Bytes,
    deadline: Duration,
    mut send: SendStream,
    recv: RecvStream,
) {
    let head: ForwardHead = match rmp_serde::from_slice(&head) {
        Ok(h) => h,
        Err(e) => {
            answer(&mut send, &ForwardAnswer::Unavailable { reason: format!("malformed forward head: {e}") }).await;
            let _ = send.finish();
            return;
        }
    };
    let key = ObjectKey { kind: Kind::Service, namespace: head.namespace.clone(), name: head.service.clone() };
    let route = routes.load().by_key.get(&key).cloned();
    // The caller chose the revision when the Service's requests are split: keep to it.
    let group = head.revision.as_deref().map_or(Group::Any, Group::Revision);
    let picked = route.as_ref().and_then(|route| route.pick_local_in(group, head.replica.as_deref()));
    let (Some(route), Some(picked)) = (route, picked) else {
        let reason = format!("no ready replica of service {}/{} on this node", head.namespace, head.service);
        answer(&mut send, &ForwardAnswer::Unavailable { reason }).await;
        let _ = send.finish();
        return;
    };
    let endpoint = &route.endpoints[picked];
    let Some(service) = endpoint.local_service() else { return };
    let mut builder = Request::builder().method(head.method.as_str()).uri(head.uri.as_str());
    for (name, value) in &head.headers {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    if let Some(from) = &peer.node_id {
        builder = builder.header("x-wasmfleet-forwarded-by", from.as_str());
    }
    let body = request_body(recv).map_err(|e| wasmfleet_runtime::WasiHttpError::InternalError(Some(e.to_string())));
    let req = match builder.body(body) {
        Ok(r) => r,
        Err(e) => {
            answer(&mut send, &ForwardAnswer::Unavailable { reason: format!("bad forwarded request: {e}") }).await;
            let _ = send.finish();
            return;
        }
    };
    let started = std::time::Instant::now();
    let metrics = route.metrics(&routes);
    metrics.requests.inc();
    let resp = match tokio::time::timeout(deadline, service.handle(req)).await {
        Ok(resp) => resp,
        Err(_) => wasmfleet_runtime::error_response(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("no response within the caller's deadline of {deadline:?}"),
        ),
    };
    metrics.observe_latency(started.elapsed());
    let (parts, body) = resp.into_parts();
    let head = ForwardAnswer::Response {
        status: parts.status.as_u16(),
        headers: wire_headers(&parts.headers),
        replica: endpoint.replica.clone(),
    };
    // The answer frame leaves with the first body bytes.
    let Ok(head) = rmp_serde::to_vec(&head) else { return };
    let Ok(prefix) = wire::encode_frame(&[&head], &[], MAX_HEAD_BYTES) else { return };
    pump_body(body, send, prefix).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmfleet_cluster::mesh::MeshConfig;
    use wasmfleet_cluster::pki::ClusterCa;

    /// Answers every forwarded request with 200 from replica `0`.
    struct Answer(&'static str);

    impl StreamHandler for Answer {
        fn handle_stream(
            &self,
            _peer: PeerInfo,
            _head: Bytes,
            _deadline: Duration,
            mut send: SendStream,
            _recv: RecvStream,
        ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
            let replica = self.0.to_string();
            Box::pin(async move {
                answer(&mut send, &ForwardAnswer::Response { status: 200, headers: Vec::new(), replica }).await;
                let _ = send.finish();
            })
        }
    }

    async fn endpoint(ca: &ClusterCa, node: &str, answers_as: &'static str) -> Arc<Mesh> {
        let config = MeshConfig::new("127.0.0.1:0".parse().unwrap(), ca.issue(node).unwrap());
        let no_calls = |_: PeerInfo, _: Bytes| async { Err::<Bytes, String>("no calls here".into()) };
        let mesh = Arc::new(Mesh::bind(config, Arc::new(no_calls)).await.unwrap());
        mesh.set_stream_handler(STREAM_CHANNEL, Arc::new(Answer(answers_as)));
        mesh
    }

    fn get() -> ForwardHead {
        ForwardHead {
            namespace: "default".into(),
            service: "hello".into(),
            replica: None,
            method: "GET".into(),
            uri: "/".into(),
            headers: Vec::new(),
            revision: None,
        }
    }

    /// Which endpoint of `b` served a GET sent with `lanes`.
    async fn served_by(forwarder: &Forwarder, b: SocketAddr, lanes: &[u16]) -> String {
        let empty = http_body_util::Empty::<Bytes>::new();
        let resp = forwarder.send("b", b, lanes, &get(), empty, Duration::from_secs(10)).await.unwrap();
        resp.headers()["x-wasmfleet-replica"].to_str().unwrap().to_string()
    }

    #[test]
    fn heads_and_answers_encode_compactly_and_the_named_form_still_decodes() {
        let compact = rmp_serde::to_vec(&get()).unwrap();
        let named = rmp_serde::to_vec_named(&get()).unwrap();
        assert!(compact.len() < named.len());
        for bytes in [compact, named] {
            assert_eq!(rmp_serde::from_slice::<ForwardHead>(&bytes).unwrap().uri, "/");
        }
        let answer = ForwardAnswer::Response { status: 204, headers: Vec::new(), replica: "r".into() };
        for bytes in [rmp_serde::to_vec(&answer).unwrap(), rmp_serde::to_vec_named(&answer).unwrap()] {
            let decoded = rmp_serde::from_slice::<ForwardAnswer>(&bytes).unwrap();
            assert!(matches!(decoded, ForwardAnswer::Response { status: 204, .. }), "{decoded:?}");
        }
    }

    #[test]
    fn a_head_with_a_revision_goes_in_map_form_which_older_nodes_decode() {
        /// The head as nodes that predate `revision` know it.
        #[derive(Deserialize)]
        #[expect(dead_code, reason = "only decoded")]
        struct OlderHead {
            namespace: String,
            service: String,
            replica: Option<String>,
            method: String,
            uri: String,
            headers: Vec<(String, serde_bytes::ByteBuf)>,
        }
        let plain = get();
        assert_eq!(plain.encode().unwrap(), rmp_serde::to_vec(&plain).unwrap());
        let older: OlderHead = rmp_serde::from_slice(&plain.encode().unwrap()).unwrap();
        assert_eq!((older.service.as_str(), older.replica), ("hello", None));
        assert_eq!(rmp_serde::from_slice::<ForwardHead>(&plain.encode().unwrap()).unwrap().revision, None);

        let split = ForwardHead { replica: Some("hello-1".into()), revision: Some("0123456789".into()), ..get() };
        let bytes = split.encode().unwrap();
        let older: OlderHead = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!((older.service.as_str(), older.replica.as_deref()), ("hello", Some("hello-1")));
        let decoded: ForwardHead = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(decoded.revision.as_deref(), Some("0123456789"));
        // The array form with the field would not decode there.
        assert!(rmp_serde::from_slice::<OlderHead>(&rmp_serde::to_vec(&split).unwrap()).is_err());
    }

    // A current-thread runtime: the test's thread is the lane.
    #[tokio::test]
    async fn a_lane_forwards_to_the_peers_lane_and_falls_back_to_its_cluster_address() {
        let ca = ClusterCa::generate("test").unwrap();
        let forwarder = Forwarder::new(endpoint(&ca, "a", "-").await);
        forwarder.set_lanes(vec![endpoint(&ca, "a", "-").await]);
        let (b_cluster, b_lane) = (endpoint(&ca, "b", "cluster").await, endpoint(&ca, "b", "lane").await);
        let b = b_cluster.local_addr().unwrap();
        let lane = b_lane.local_addr().unwrap().port();

        // Off a lane thread, and to a peer without lanes: the cluster endpoints.
        assert_eq!(served_by(&forwarder, b, &[lane]).await, "cluster");
        enter_lane(0);
        assert_eq!(served_by(&forwarder, b, &[]).await, "cluster");
        // On lane 0: the peer's lane 0.
        assert_eq!(served_by(&forwarder, b, &[lane]).await, "lane");
        assert_eq!(b_lane.open_connections(), 1);

        // A lane port nothing answers on: the request still goes through, on the cluster
        // address, and the peer's lanes are left alone for a while.
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead_port = dead.local_addr().unwrap().port();
        drop(dead);
        assert_eq!(served_by(&forwarder, b, &[dead_port]).await, "cluster");
        assert!(!forwarder.health("b").lane_usable(dead_port));
        assert!(!forwarder.health("b").is_down(), "a lane that does not connect is no reason to leave rotation");
        let started = std::time::Instant::now();
        assert_eq!(served_by(&forwarder, b, &[dead_port]).await, "cluster");
        assert!(started.elapsed() < Duration::from_millis(500), "the dead lane was tried again");
        // A lane the peer advertises anew (it restarted) is used at once.
        assert_eq!(served_by(&forwarder, b, &[lane]).await, "lane");
    }
}
