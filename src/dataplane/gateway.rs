//! The HTTP gateway: routes a request to a ready replica of the Service it names, on this node
//! or on any other.
//!
//! On the shared gateway listener a Service is chosen by `Host` (`<svc>`, `<svc>.<ns>`,
//! `<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`); on a Service's own port (opened as
//! LoadBalancer/NodePort would) the port decides. A ready local replica serves if there is
//! one (power of two choices on in-flight requests, rotated round-robin); otherwise the
//! request is forwarded over QUIC to a ready replica on another node ([`crate::dataplane::forward`]),
//! chosen the same way among reachable peers. When a peer fails before its response starts,
//! the request is retried on another replica: always if it was not delivered, and for
//! idempotent methods with a small body also when the outcome is unknown.
//!
//! A route may split its requests between a canary revision and the others
//! ([`crate::dataplane::split`]): the choice above is then made within the group each request
//! is given, falling back to the other group. Every answered request is counted under the
//! revision that served it ([`crate::dataplane::revisions`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use wasmfleet_runtime::{HttpService, ResponseBody};

use crate::dataplane::forward::{DEFAULT_DEADLINE, ForwardError, ForwardHead, Forwarder, PeerHealth, wire_headers};
pub use crate::dataplane::hold::{ACTIVATION_TIMEOUT, Activate, Activation, MAX_PENDING, UNAVAILABLE_HOLD};
use crate::dataplane::metrics::{GatewayMetrics, ServiceMetrics};
use crate::dataplane::revisions::{RevisionCounters, RevisionStats};
use crate::dataplane::split::{Attempts, Group, Sequences, Split};
use crate::manifest::ObjectKey;

/// Request bodies up to this size are buffered when forwarded, so they can be retried.
pub const REPLAY_LIMIT: u64 = 64 * 1024;
/// Peers tried for one request.
const MAX_ATTEMPTS: usize = 3;

/// Where a replica runs.
#[derive(Clone)]
pub enum Backend {
    Local(HttpService),
    /// On a peer, reached at its cluster address or one of its data-plane `lanes` (UDP ports
    /// on the same address, possibly none).
    Remote {
        addr: SocketAddr,
        lanes: Arc<[u16]>,
        health: Arc<PeerHealth>,
    },
}

/// One replica that can serve a Service.
#[derive(Clone)]
pub struct Endpoint {
    pub replica: String,
    pub node: String,
    /// The replica's revision (its template hash).
    pub revision: String,
    pub backend: Backend,
    pub ready: Arc<AtomicBool>,
}

impl Endpoint {
    pub fn local_service(&self) -> Option<&HttpService> {
        match &self.backend {
            Backend::Local(s) => Some(s),
            Backend::Remote { .. } => None,
        }
    }

    fn in_flight(&self) -> u32 {
        match &self.backend {
            Backend::Local(s) => s.in_flight(),
            Backend::Remote { health, .. } => health.in_flight.load(Ordering::Relaxed),
        }
    }

    /// Ready, and (for a remote replica) its node reachable.
    fn usable(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
            && match &self.backend {
                Backend::Local(_) => true,
                Backend::Remote { health, .. } => !health.is_down(),
            }
    }
}

/// A Service and its endpoints. Rebuilt on every reconcile pass; its counters are not in it
/// but in the node's registries, found through [`Routes`] ([`ServiceRoute::metrics`]).
pub struct ServiceRoute {
    pub key: ObjectKey,
    pub endpoints: Vec<Endpoint>,
    /// How requests are split between a canary revision and the others, if they are.
    pub split: Option<Split>,
    /// Whether (and how) a request waits for a workload scaled to zero.
    pub activation: Option<Activation>,
    rr: AtomicUsize,
    /// Handles to this Service's shared state, bound when the route is stored or first used.
    bound: OnceLock<Bound>,
}

/// What a route shares with the node's registries (see [`Routes`]).
pub(crate) struct Bound {
    pub(crate) metrics: ServiceMetrics,
    /// The counters of each endpoint's revision, by endpoint index.
    pub(crate) revisions: Box<[Arc<RevisionCounters>]>,
    /// The Service's request sequence for its split.
    pub(crate) sequence: Arc<AtomicU64>,
}

impl ServiceRoute {
    pub fn new(key: ObjectKey, endpoints: Vec<Endpoint>) -> Self {
        Self::with_split(key, endpoints, None)
    }

    /// A route whose requests are split between revisions as `split` says.
    pub fn with_split(key: ObjectKey, endpoints: Vec<Endpoint>, split: Option<Split>) -> Self {
        ServiceRoute { key, endpoints, split, activation: None, rr: AtomicUsize::new(0), bound: OnceLock::new() }
    }

    /// This route, holding requests while `activation`'s targets scale from zero.
    pub fn activating(mut self, activation: Option<Activation>) -> Self {
        self.activation = activation;
        self
    }

    pub(crate) fn bound(&self, routes: &Routes) -> &Bound {
        self.bound.get_or_init(|| Bound {
            metrics: routes.metrics().service(&self.key),
            revisions: self.endpoints.iter().map(|e| routes.revisions.counters(&e.revision)).collect(),
            sequence: routes.sequences.of(&self.key),
        })
    }

    /// This Service's counters and latency histogram, which outlive the route.
    pub fn metrics(&self, routes: &Routes) -> &ServiceMetrics {
        &self.bound(routes).metrics
    }

    pub fn ready_count(&self) -> usize {
        self.endpoints.iter().filter(|e| e.usable()).count()
    }

    /// Power of two choices among usable endpoints that pass `filter`: an index.
    fn pick_where(&self, filter: impl Fn(&Endpoint) -> bool) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.rr.fetch_add(1, Ordering::Relaxed);
        let mut first: Option<usize> = None;
        for i in (0..n).map(|i| (start + i) % n) {
            let e = &self.endpoints[i];
            if !e.usable() || !filter(e) {
                continue;
            }
            match first {
                None => first = Some(i),
                Some(f) => return Some(if e.in_flight() < self.endpoints[f].in_flight() { i } else { f }),
            }
        }
        first
    }

    /// A ready replica on this node: `preferred` if it is one, else by two choices.
    pub fn pick_local(&self, preferred: Option<&str>) -> Option<&Endpoint> {
        self.pick_local_in(Group::Any, preferred).map(|i| &self.endpoints[i])
    }

    /// A ready replica on this node in `group`: `preferred` if it is one, else by two choices.
    pub(crate) fn pick_local_in(&self, group: Group<'_>, preferred: Option<&str>) -> Option<usize> {
        if let Some(name) = preferred
            && let Some(i) = self.endpoints.iter().position(|e| e.replica == name && e.local_service().is_some())
            && self.endpoints[i].usable()
            && self.in_group(&self.endpoints[i], group)
        {
            return Some(i);
        }
        self.pick_where(|e| e.local_service().is_some() && self.in_group(e, group))
    }

    /// A ready replica in `group` on a reachable peer not in `exclude`.
    pub(crate) fn pick_remote_in(&self, group: Group<'_>, exclude: &[&str]) -> Option<usize> {
        self.pick_where(|e| {
            e.local_service().is_none() && !exclude.contains(&e.node.as_str()) && self.in_group(e, group)
        })
    }
}

/// The routing table, replaced wholesale by the reconciler.
#[derive(Default)]
pub struct RoutingTable {
    pub by_host: HashMap<String, Arc<ServiceRoute>>,
    pub by_port: HashMap<u16, Arc<ServiceRoute>>,
    pub services: Vec<Arc<ServiceRoute>>,
    pub by_key: HashMap<ObjectKey, Arc<ServiceRoute>>,
}

impl RoutingTable {
    /// Adds a service under all its host names.
    pub fn insert(&mut self, route: Arc<ServiceRoute>) {
        let (name, ns) = (route.key.name.clone(), route.key.namespace.clone());
        if ns == "default" {
            self.by_host.entry(name.clone()).or_insert_with(|| route.clone());
        }
        for h in [format!("{name}.{ns}"), format!("{name}.{ns}.svc"), format!("{name}.{ns}.svc.cluster.local")] {
            self.by_host.insert(h, route.clone());
        }
        // A bare name also finds a service in another namespace if no default one claims it.
        self.by_host.entry(name).or_insert_with(|| route.clone());
        self.by_key.insert(route.key.clone(), route.clone());
        self.services.push(route);
    }
}

/// Shared, swappable routing table, and the way to reach other nodes.
#[derive(Clone, Default)]
pub struct Routes {
    table: Arc<RwLock<Arc<RoutingTable>>>,
    forwarder: Arc<OnceLock<Arc<Forwarder>>>,
    lanes: Arc<OnceLock<Arc<crate::dataplane::lanes::Lanes>>>,
    /// Notified whenever a new table is stored.
    pub(super) changed: Arc<tokio::sync::Notify>,
    /// Per-Service counters and histograms, registered once and kept across tables.
    metrics: Arc<GatewayMetrics>,
    /// Per-revision request figures, kept across tables.
    revisions: Arc<RevisionStats>,
    /// Per-Service split sequences, kept across tables.
    sequences: Arc<Sequences>,
    /// Scales workloads from zero (set once, when the reconciler is up).
    pub(super) activator: Arc<OnceLock<Arc<dyn Activate>>>,
    /// Requests held per Service on this gateway while its workloads activate.
    pub(super) pending: Arc<dashmap::DashMap<ObjectKey, Arc<std::sync::atomic::AtomicU32>>>,
}

impl Routes {
    pub fn load(&self) -> Arc<RoutingTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Stores a new table. Its routes are bound to their Services' metrics and their
    /// revisions' counters, and the series of Services that left the table are dropped.
    pub fn store(&self, table: RoutingTable) {
        for route in &table.services {
            route.bound(self);
        }
        let new = Arc::new(table);
        let old = std::mem::replace(&mut *self.table.write().unwrap_or_else(|e| e.into_inner()), new.clone());
        for key in old.by_key.keys().filter(|k| !new.by_key.contains_key(*k)) {
            self.metrics.forget(key);
            self.sequences.forget(key);
        }
        self.changed.notify_waiters();
    }

    /// The gateway's metrics on this node (see [`crate::dataplane::metrics`]).
    pub fn metrics(&self) -> &Arc<GatewayMetrics> {
        &self.metrics
    }

    /// The request figures per revision on this node (see [`crate::dataplane::revisions`]).
    pub fn revision_stats(&self) -> &Arc<RevisionStats> {
        &self.revisions
    }

    /// Lets the gateway forward to other nodes (set once, when the cluster layer is up).
    pub fn set_forwarder(&self, forwarder: Arc<Forwarder>) {
        let _ = self.forwarder.set(forwarder);
    }
    pub fn forwarder(&self) -> Option<&Arc<Forwarder>> {
        self.forwarder.get()
    }
    /// Hands accepted connections to the data plane's lanes (set once, when it is up).
    pub fn set_lanes(&self, lanes: Arc<crate::dataplane::lanes::Lanes>) {
        let _ = self.lanes.set(lanes);
    }
    pub fn lanes(&self) -> Option<&Arc<crate::dataplane::lanes::Lanes>> {
        self.lanes.get()
    }
}

/// How a listener picks the Service.
#[derive(Clone, Copy, Debug)]
pub enum Binding {
    /// The shared gateway: by `Host`.
    ByHost,
    /// A Service's own port.
    Port(u16),
}

pub(super) fn text(status: StatusCode, msg: String) -> Response<ResponseBody> {
    wasmfleet_runtime::error_response(status, &msg)
}

/// Routes one request.
pub async fn route(routes: &Routes, binding: Binding, req: Request<Incoming>) -> Response<ResponseBody> {
    let table = routes.load();
    let route: Option<Arc<ServiceRoute>> = match binding {
        Binding::Port(p) => table.by_port.get(&p).cloned(),
        Binding::ByHost => {
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
                .or_else(|| req.uri().host().map(str::to_string))
                .unwrap_or_default();
            let host = strip_port(&host).to_ascii_lowercase();
            match table.by_host.get(host.as_str()) {
                Some(r) => Some(r.clone()),
                None => {
                    let mut known: Vec<&str> = table.services.iter().map(|s| s.key.name.as_str()).collect();
                    known.sort();
                    known.dedup();
                    let hint = if known.is_empty() {
                        "no services are defined".to_string()
                    } else {
                        format!("known services: {}", known.join(", "))
                    };
                    return text(
                        StatusCode::NOT_FOUND,
                        format!("no service for host `{host}`: set Host to a service name ({hint})"),
                    );
                }
            }
        }
    };
    let Some(route) = route else {
        return text(StatusCode::NOT_FOUND, "no service is bound to this port".into());
    };
    let (route, held) = match routes.ready_route(route).await {
        Ok(r) => r,
        Err(rejected) => return rejected,
    };
    let mut resp = dispatch(routes, &route, req).await;
    if let Some(held) = held
        && let Ok(v) = http::HeaderValue::from_str(&held.as_millis().to_string())
    {
        resp.headers_mut().insert("x-wasmfleet-cold-start", v);
    }
    resp
}

/// Serves one request for `route`: a ready local replica, else a remote one (with retries),
/// within the group the route's split gives the request, then the other.
pub async fn dispatch<B>(routes: &Routes, route: &ServiceRoute, req: Request<B>) -> Response<ResponseBody>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<wasmfleet_runtime::WasiHttpError> + std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let bound = route.bound(routes);
    bound.metrics.requests.inc();
    let forwarder = routes.forwarder().map(Arc::as_ref);
    let mut attempts = route.attempts(route.plan(&bound.sequence), forwarder.is_some());
    let first = attempts.next();
    let (resp, served_by) = if let Some(i) = first
        && let Some(service) = route.endpoints[i].local_service()
    {
        (tag_replica(service.handle(req).await, &route.endpoints[i]), Some(i))
    } else {
        forward(forwarder, route, &bound.metrics, first, attempts, req).await
    };
    let elapsed = started.elapsed();
    bound.metrics.observe_latency(elapsed);
    if let Some(counters) = served_by.and_then(|i| bound.revisions.get(i)) {
        counters.record(resp.status().is_server_error(), elapsed);
    }
    resp
}

/// A local replica's answer, which says which replica it is.
fn tag_replica(mut resp: Response<ResponseBody>, ep: &Endpoint) -> Response<ResponseBody> {
    if let Ok(v) = http::HeaderValue::from_str(&ep.replica) {
        resp.headers_mut().insert("x-wasmfleet-replica", v);
    }
    resp
}

fn unavailable(route: &ServiceRoute, metrics: &ServiceMetrics, last_error: Option<String>) -> Response<ResponseBody> {
    metrics.unavailable.inc();
    let split = match &route.split {
        Some(s) => format!("; {}‰ of requests go to revision {}", s.weight_permille.min(1000), s.canary),
        None => String::new(),
    };
    let why = match last_error {
        Some(e) => format!("; last attempt: {e}"),
        None => String::new(),
    };
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "service {}/{} has no ready replicas ({}/{} ready{split}){why}",
            route.key.namespace,
            route.key.name,
            route.ready_count(),
            route.endpoints.len()
        ),
    )
}

fn idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// What is left of a request's body while the request looks for a replica.
enum Payload<B> {
    /// Not read yet.
    Unread(B),
    /// Buffered (small): can be sent again.
    Replay(bytes::Bytes),
    /// Streamed to an attempt that failed: the request cannot go anywhere else.
    Spent,
}

/// Forwards to a replica on another node, retrying on another one when that is safe; after
/// the first group of the split, a local replica of the next serves if there is one. `first`
/// is the first of `attempts`. Returns the answer and the index of the endpoint it is from
/// (the last one tried when none answered).
async fn forward<B>(
    forwarder: Option<&Forwarder>,
    route: &ServiceRoute,
    metrics: &ServiceMetrics,
    first: Option<usize>,
    mut attempts: Attempts<'_>,
    req: Request<B>,
) -> (Response<ResponseBody>, Option<usize>)
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<wasmfleet_runtime::WasiHttpError> + std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = req.into_parts();
    let mut head = ForwardHead {
        namespace: route.key.namespace.clone(),
        service: route.key.name.clone(),
        replica: None,
        method: parts.method.to_string(),
        uri: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_else(|| "/".into()),
        headers: wire_headers(&parts.headers),
        revision: None,
    };
    let mut payload = Payload::Unread(body);
    let mut sent = 0;
    let mut last: Option<usize> = None;
    let mut last_error = None;
    let mut next = first;
    while let Some(i) = next {
        let ep = &route.endpoints[i];
        let (addr, lanes) = match &ep.backend {
            Backend::Remote { addr, lanes, .. } => (*addr, lanes),
            // A local replica of the next group: the request goes to it as it came. (Rare:
            // boxed, so as not to grow every forwarded request's future.)
            Backend::Local(service) => {
                let resp = match payload {
                    Payload::Unread(body) => Box::pin(service.handle(Request::from_parts(parts, body))).await,
                    Payload::Replay(bytes) => {
                        let body =
                            Full::new(bytes).map_err(|never| -> wasmfleet_runtime::WasiHttpError { match never {} });
                        Box::pin(service.handle(Request::from_parts(parts, body))).await
                    }
                    Payload::Spent => break,
                };
                return (tag_replica(resp, ep), Some(i));
            }
        };
        let Some(forwarder) = forwarder else { break };
        if sent == MAX_ATTEMPTS {
            break;
        }
        // Small bodies are buffered so the request can be sent again.
        let (replay, streaming) = match std::mem::replace(&mut payload, Payload::Spent) {
            Payload::Unread(body) => match body.size_hint().upper() {
                Some(n) if n <= REPLAY_LIMIT => match Limited::new(body, REPLAY_LIMIT as usize).collect().await {
                    Ok(collected) => (Some(collected.to_bytes()), None),
                    Err(e) => {
                        return (text(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}")), None);
                    }
                },
                _ => (None, Some(body)),
            },
            Payload::Replay(bytes) => (Some(bytes), None),
            Payload::Spent => break,
        };
        if let Some(bytes) = &replay {
            payload = Payload::Replay(bytes.clone());
        }
        let retry_unknown = idempotent(&parts.method) && replay.is_some();
        last = Some(i);
        head.replica = Some(ep.replica.clone());
        // The peer keeps to the revision chosen here if it has to serve with another replica.
        head.revision = route.split.as_ref().map(|_| ep.revision.clone());
        if sent > 0 {
            metrics.retried.inc();
        }
        metrics.forwarded.inc();
        sent += 1;
        let result = match (replay, streaming) {
            (Some(bytes), _) => forwarder.send(&ep.node, addr, lanes, &head, Full::new(bytes), DEFAULT_DEADLINE).await,
            (None, Some(body)) => forwarder.send(&ep.node, addr, lanes, &head, body, DEFAULT_DEADLINE).await,
            (None, None) => break,
        };
        match result {
            Ok(resp) => return (resp, Some(i)),
            Err(ForwardError::NotDelivered(e)) => last_error = Some(e),
            Err(ForwardError::Unknown(e)) if retry_unknown => last_error = Some(e),
            Err(ForwardError::Unknown(e)) => {
                let resp = text(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "replica {} on {} failed before answering: {e} (not retried: {} requests are retried only when idempotent with a body under {REPLAY_LIMIT} bytes)",
                        ep.replica, ep.node, parts.method
                    ),
                );
                return (resp, Some(i));
            }
        }
        next = attempts.next();
    }
    (unavailable(route, metrics, last_error), last)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host;
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

/// Serves HTTP/1.1 on `listener` until `shutdown` turns true. Accepted connections go to the
/// data plane's lanes when it runs ([`Routes::set_lanes`]), else are served here.
pub fn spawn_listener(
    listener: TcpListener,
    routes: Routes,
    binding: Binding,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let (stream, _peer): (tokio::net::TcpStream, SocketAddr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let stream = match routes.lanes() {
                Some(lanes) => match lanes.hand_off(stream, binding) {
                    Ok(()) => continue,
                    Err(stream) => stream,
                },
                None => stream,
            };
            tokio::spawn(serve_connection(stream, routes.clone(), binding));
        }
    })
}

/// Serves one HTTP/1.1 connection (keep-alive) until the client closes it.
pub async fn serve_connection(stream: tokio::net::TcpStream, routes: Routes, binding: Binding) {
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let routes = routes.clone();
        async move { Ok::<_, std::convert::Infallible>(route(&routes, binding, req).await) }
    });
    let _ =
        hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), svc).await;
}

/// Routes a component's outgoing `wasi:http` request for `http://<service>[.<namespace>...]/`
/// to the Service through this node's routing table (local replica or the mesh): service
/// discovery without DNS. Bare names resolve in the caller's namespace first.
pub struct ServiceCalls {
    pub routes: Routes,
}

impl wasmfleet_runtime::ServiceRouter for ServiceCalls {
    fn route(
        &self,
        namespace: &str,
        request: Request<wasmfleet_runtime::OutboundBody>,
    ) -> Result<wasmfleet_runtime::OutboundFuture, Box<Request<wasmfleet_runtime::OutboundBody>>> {
        let Some(host) = request.uri().host().map(str::to_ascii_lowercase) else { return Err(Box::new(request)) };
        if request.uri().port_u16().is_some_and(|p| p != 80) {
            return Err(Box::new(request));
        }
        let table = self.routes.load();
        let own =
            ObjectKey { kind: crate::manifest::Kind::Service, namespace: namespace.to_string(), name: host.clone() };
        let Some(route) = table.by_key.get(&own).or_else(|| table.by_host.get(host.as_str())).cloned() else {
            return Err(Box::new(request));
        };
        let routes = self.routes.clone();
        Ok(Box::pin(async move {
            let route = routes.when_ready(route).await;
            let response = dispatch(&routes, &route, request).await;
            Ok(response.map(|body| {
                body.map_err(|e| wasmfleet_runtime::WasiHttpError::InternalError(Some(e.to_string()))).boxed_unsync()
            }))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;

    fn hello() -> ObjectKey {
        ObjectKey { kind: Kind::Service, namespace: "default".into(), name: "hello".into() }
    }

    fn get() -> Request<impl http_body::Body<Data = bytes::Bytes, Error = wasmfleet_runtime::WasiHttpError>> {
        let body =
            Full::new(bytes::Bytes::new()).map_err(|never| -> wasmfleet_runtime::WasiHttpError { match never {} });
        Request::builder().uri("/").body(body).unwrap()
    }

    /// The reconciler builds a new [`ServiceRoute`] for every Service on every pass.
    fn rebuild(routes: &Routes, services: &[ObjectKey]) {
        let mut table = RoutingTable::default();
        for key in services {
            table.insert(Arc::new(ServiceRoute::new(key.clone(), Vec::new())));
        }
        routes.store(table);
    }

    #[tokio::test]
    async fn counters_survive_a_route_rebuild_and_are_exported() {
        let routes = Routes::default();
        for _pass in 0..3 {
            rebuild(&routes, &[hello()]);
            let route = routes.load().by_key[&hello()].clone();
            let resp = dispatch(&routes, &route, get()).await;
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        let m = routes.metrics().service(&hello());
        assert_eq!((m.requests.get(), m.unavailable.get()), (3, 3));

        let mut text = String::new();
        routes.metrics().encode(&mut text).unwrap();
        let series = r#"{service="hello",namespace="default"}"#;
        for line in [
            format!("wasmfleet_gateway_requests_total{series} 3"),
            format!("wasmfleet_gateway_unavailable_total{series} 3"),
            format!("wasmfleet_gateway_forwarded_total{series} 0"),
            format!("wasmfleet_gateway_retried_total{series} 0"),
            format!("wasmfleet_gateway_request_duration_seconds_count{series} 3"),
            "# TYPE wasmfleet_gateway_request_duration_seconds histogram".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "no line `{line}` in:\n{text}");
        }

        // A Service that is deleted takes its series with it.
        rebuild(&routes, &[]);
        let mut text = String::new();
        routes.metrics().encode(&mut text).unwrap();
        assert!(!text.contains("service=\"hello\""), "{text}");
    }

    /// Counts activations and never activates anything.
    #[derive(Default)]
    struct Asked(std::sync::Mutex<Vec<ObjectKey>>);

    impl Activate for Asked {
        fn activate(&self, target: &ObjectKey) {
            self.0.lock().unwrap().push(target.clone());
        }
    }

    #[tokio::test]
    async fn held_requests_ask_for_an_activation_and_are_bounded() {
        let routes = Routes::default();
        let asked = Arc::new(Asked::default());
        routes.set_activator(asked.clone());
        let target = ObjectKey::new(Kind::Deployment, "default", "hello");
        let activation =
            Activation { targets: vec![target.clone()], timeout: Duration::from_millis(300), max_pending: 2 };
        let route = Arc::new(ServiceRoute::new(hello(), Vec::new()).activating(Some(activation)));
        let mut table = RoutingTable::default();
        table.insert(route.clone());
        routes.store(table);
        // Two are held (and ask for the target), the third is turned away at once.
        let held = |r: &Routes| {
            let (r, route) = (r.clone(), route.clone());
            tokio::spawn(async move { r.ready_route(route).await.map(|(_, waited)| waited) })
        };
        let (a, b) = (held(&routes), held(&routes));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let rejected = routes.ready_route(route.clone()).await.err().expect("over max-pending-requests");
        assert!(started.elapsed() < Duration::from_millis(100), "turned away without waiting");
        assert_eq!(rejected.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rejected.headers()[http::header::RETRY_AFTER], "1");
        // Nothing activates: each is held for the activation timeout, then routed as is.
        for h in [a, b] {
            let waited = h.await.unwrap().unwrap().expect("held for an activation");
            assert!(waited >= Duration::from_millis(300), "{waited:?}");
        }
        assert!(asked.0.lock().unwrap().iter().all(|t| *t == target));
        assert!(!asked.0.lock().unwrap().is_empty());
        // Their places are given back.
        let third = tokio::spawn({
            let (r, route) = (routes.clone(), route.clone());
            async move { r.ready_route(route).await.is_ok() }
        });
        assert!(third.await.unwrap());
    }
}
