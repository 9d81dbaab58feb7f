//! The HTTP gateway: routes a request to a ready replica of the Service it names.
//!
//! On the shared gateway listener a Service is chosen by `Host` (`<svc>`, `<svc>.<ns>`,
//! `<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`); on a Service's own port (opened as
//! LoadBalancer/NodePort would) the port decides. Among ready replicas the gateway picks the
//! less loaded of two (power of two choices on in-flight requests, rotated round-robin).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use wasmfleet_runtime::{HttpService, ResponseBody};

use crate::manifest::ObjectKey;

/// One replica that can serve a Service.
#[derive(Clone)]
pub struct Endpoint {
    pub replica: String,
    pub service: HttpService,
    pub ready: Arc<AtomicBool>,
}

/// A Service and its endpoints.
pub struct ServiceRoute {
    pub key: ObjectKey,
    pub endpoints: Vec<Endpoint>,
    rr: AtomicUsize,
    pub requests: AtomicU64,
    pub unavailable: AtomicU64,
}

impl ServiceRoute {
    pub fn new(key: ObjectKey, endpoints: Vec<Endpoint>) -> Self {
        ServiceRoute {
            key,
            endpoints,
            rr: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
        }
    }

    pub fn ready_count(&self) -> usize {
        self.endpoints.iter().filter(|e| e.ready.load(Ordering::Relaxed)).count()
    }

    /// Power of two choices among ready endpoints.
    fn pick(&self) -> Option<&Endpoint> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.rr.fetch_add(1, Ordering::Relaxed);
        let mut first: Option<&Endpoint> = None;
        for i in 0..n {
            let e = &self.endpoints[(start + i) % n];
            if !e.ready.load(Ordering::Relaxed) {
                continue;
            }
            match first {
                None => first = Some(e),
                Some(f) => {
                    return Some(if e.service.in_flight() < f.service.in_flight() { e } else { f });
                }
            }
        }
        first
    }
}

/// The routing table, replaced wholesale by the reconciler.
#[derive(Default)]
pub struct RoutingTable {
    pub by_host: HashMap<String, Arc<ServiceRoute>>,
    pub by_port: HashMap<u16, Arc<ServiceRoute>>,
    pub services: Vec<Arc<ServiceRoute>>,
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
        self.services.push(route);
    }
}

/// Shared, swappable routing table.
#[derive(Clone, Default)]
pub struct Routes(Arc<RwLock<Arc<RoutingTable>>>);

impl Routes {
    pub fn load(&self) -> Arc<RoutingTable> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn store(&self, table: RoutingTable) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
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

fn text(status: StatusCode, msg: String) -> Response<ResponseBody> {
    wasmfleet_runtime::error_response(status, &msg)
}

/// Routes one request.
pub async fn route(routes: &Routes, binding: Binding, req: Request<Incoming>) -> Response<ResponseBody> {
    let table = routes.load();
    let route = match binding {
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
    route.requests.fetch_add(1, Ordering::Relaxed);
    let Some(ep) = route.pick() else {
        route.unavailable.fetch_add(1, Ordering::Relaxed);
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "service {}/{} has no ready replicas (0/{} ready)",
                route.key.namespace,
                route.key.name,
                route.endpoints.len()
            ),
        );
    };
    let mut resp = ep.service.handle(req).await;
    if let Ok(v) = http::HeaderValue::from_str(&ep.replica) {
        resp.headers_mut().insert("x-wasmfleet-replica", v);
    }
    resp
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host;
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

/// Serves HTTP/1.1 on `listener` until `shutdown` turns true.
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
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let routes = routes.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let routes = routes.clone();
                    async move { Ok::<_, std::convert::Infallible>(route(&routes, binding, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
