//! Routes and Service ports: after each pass the gateway's routing table is rebuilt from the
//! Services, the replicas of this node and the ready replicas peers publish; every Service port
//! (LoadBalancer/NodePort) gets a listener on this node, as kube-proxy opens them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::task::JoinHandle;

use super::progressive::Traffic;
use super::replicas::{Replica, Runner};
use super::{EndpointStatus, Inner, ObjectStatus, PortStatus, ReplicaKey};
use crate::dataplane::gateway::{
    ACTIVATION_TIMEOUT, Activation, Backend, Binding, Endpoint, MAX_PENDING, RoutingTable, ServiceRoute,
};
use crate::dataplane::split::Split;
use crate::manifest::autoscaling::{ANNOTATION_ACTIVATION_TIMEOUT, ANNOTATION_MAX_PENDING};
use crate::manifest::{Object, ObjectKey, Service, ServiceType, selector_matches};
use crate::peering::PeerView;
use crate::state::StoredObject;

/// How `svc` holds requests while `targets` (scaled to zero) activate: its annotations, or
/// the defaults.
fn activation(svc: &Service, targets: Vec<ObjectKey>) -> Activation {
    let ann = &svc.metadata.annotations;
    Activation {
        targets,
        timeout: ann
            .get(ANNOTATION_ACTIVATION_TIMEOUT)
            .and_then(|v| crate::manifest::parse_duration(v).ok())
            .unwrap_or(ACTIVATION_TIMEOUT),
        max_pending: ann.get(ANNOTATION_MAX_PENDING).and_then(|v| v.trim().parse().ok()).unwrap_or(MAX_PENDING),
    }
}

/// A Service port's listener task (if bound) and its status.
pub(super) type PortListener = (Option<JoinHandle<()>>, PortStatus);

impl Inner {
    /// Rebuilds the routing table and the Service ports; fills the Services' endpoints and
    /// port status in `status`.
    pub(super) fn publish_routes(
        &self,
        objects: &[(StoredObject, Object)],
        replicas: &BTreeMap<ReplicaKey, Replica>,
        peers: &[PeerView],
        traffic: &HashMap<ObjectKey, Traffic>,
        scalable_to_zero: &[ObjectKey],
        status: &mut HashMap<ObjectKey, ObjectStatus>,
    ) {
        let mut table = RoutingTable::default();
        let mut wanted_ports: HashMap<u16, Arc<ServiceRoute>> = HashMap::new();
        // Pod labels of every workload, to match remote replicas against selectors.
        let labels_of: HashMap<String, BTreeMap<String, String>> = objects
            .iter()
            .filter_map(|(_, o)| Some((o.key().to_string(), o.pod_template()?.workload().labels)))
            .collect();
        for (_, obj) in objects {
            let Object::Service(svc) = obj else { continue };
            let key = obj.key();
            let mut endpoints = self.local_endpoints(&key, svc, replicas);
            endpoints.extend(self.remote_endpoints(&key, svc, peers, &labels_of));
            // A Rollout's Services: one revision only (canary/stable, active/preview), or the
            // canary's weight.
            let rule = traffic.get(&key);
            if let Some(only) = rule.and_then(|t| t.only.as_ref()) {
                endpoints.retain(|e| e.revision == *only);
            }
            let split = rule
                .and_then(|t| t.split.as_ref())
                .map(|(canary, weight_permille)| Split { canary: canary.clone(), weight_permille: *weight_permille });
            let st = status.entry(key.clone()).or_default();
            st.endpoints = endpoints
                .iter()
                .map(|e| EndpointStatus {
                    replica: format!("{}@{}", e.replica, e.node),
                    ready: e.ready.load(Ordering::Relaxed),
                })
                .collect();
            st.desired = endpoints.len() as u32;
            st.ready = st.endpoints.iter().filter(|e| e.ready).count() as u32;
            let targets: Vec<ObjectKey> = scalable_to_zero
                .iter()
                .filter(|t| t.namespace == key.namespace)
                .filter(|t| labels_of.get(&t.to_string()).is_some_and(|l| selector_matches(&svc.spec.selector, l)))
                .cloned()
                .collect();
            let activation = (!targets.is_empty()).then(|| activation(svc, targets));
            let route = Arc::new(ServiceRoute::with_split(key.clone(), endpoints, split).activating(activation));
            for p in node_ports(svc) {
                wanted_ports.insert(p, route.clone());
            }
            table.insert(route);
        }
        table.by_port = wanted_ports.clone();
        self.routes.store(table);
        self.sync_ports(&wanted_ports, objects, status);
    }

    /// The HTTP replicas of this node that `svc` selects.
    fn local_endpoints(
        &self,
        key: &ObjectKey,
        svc: &Service,
        replicas: &BTreeMap<ReplicaKey, Replica>,
    ) -> Vec<Endpoint> {
        replicas
            .values()
            .filter(|r| r.key.owner.namespace == key.namespace && selector_matches(&svc.spec.selector, &r.labels))
            .filter_map(|r| match &r.runner {
                Runner::Http { service, ready, .. } => Some(Endpoint {
                    replica: r.key.name(),
                    node: self.node.clone(),
                    revision: r.revision.clone(),
                    backend: Backend::Local(service.clone()),
                    ready: ready.clone(),
                }),
                Runner::Command(_) => None,
            })
            .collect()
    }

    /// The ready HTTP replicas peers publish that `svc` selects.
    fn remote_endpoints(
        &self,
        key: &ObjectKey,
        svc: &Service,
        peers: &[PeerView],
        labels_of: &HashMap<String, BTreeMap<String, String>>,
    ) -> Vec<Endpoint> {
        let Some(forwarder) = self.routes.forwarder() else { return Vec::new() };
        let mut out = Vec::new();
        for peer in peers {
            let Some(addr) = peer.cluster else { continue };
            // The peer's data-plane lane ports, shared by its endpoints.
            let lanes: Arc<[u16]> = peer.info.as_ref().map(|i| i.lanes.as_slice()).unwrap_or_default().into();
            for r in peer.replicas.iter().filter(|r| r.http && r.ready) {
                let Some(labels) = labels_of.get(&r.owner) else { continue };
                let in_namespace = r.owner.parse::<ObjectKey>().is_ok_and(|o| o.namespace == key.namespace);
                if !in_namespace || !selector_matches(&svc.spec.selector, labels) {
                    continue;
                }
                out.push(Endpoint {
                    replica: r.name.clone(),
                    node: peer.name.clone(),
                    revision: r.revision.clone(),
                    backend: Backend::Remote { addr, lanes: lanes.clone(), health: forwarder.health(&peer.name) },
                    ready: Arc::new(AtomicBool::new(true)),
                });
            }
        }
        out
    }

    /// Opens a listener for every Service port (as LoadBalancer/NodePort would), closes unused
    /// ones; a port that cannot be bound is reported in the Service's status.
    fn sync_ports(
        &self,
        wanted: &HashMap<u16, Arc<ServiceRoute>>,
        objects: &[(StoredObject, Object)],
        status: &mut HashMap<ObjectKey, ObjectStatus>,
    ) {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        ports.retain(|p, (h, _)| {
            let keep = wanted.contains_key(p);
            if !keep && let Some(h) = h.take() {
                h.abort();
            }
            keep
        });
        for &port in wanted.keys() {
            ports.entry(port).or_insert_with(|| self.open_port(port));
        }
        for (_, obj) in objects {
            let Object::Service(svc) = obj else { continue };
            let st = status.entry(obj.key()).or_default();
            st.ports = node_ports(svc).into_iter().filter_map(|p| ports.get(&p).map(|(_, s)| s.clone())).collect();
            for p in &st.ports {
                if let Some(e) = &p.error {
                    st.messages.push(format!("port {}: {e} (still reachable through the gateway by Host)", p.port));
                }
            }
        }
    }

    fn open_port(&self, port: u16) -> PortListener {
        let addr = SocketAddr::new(self.gateway_ip, port);
        let bound = std::net::TcpListener::bind(addr).and_then(|l| {
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        });
        match bound {
            Ok(l) => {
                tracing::info!(%addr, "service port listening");
                let h = crate::dataplane::gateway::spawn_listener(
                    l,
                    self.routes.clone(),
                    Binding::Port(port),
                    self.shutdown.clone(),
                );
                (Some(h), PortStatus { port, bound: true, error: None })
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot open service port");
                (None, PortStatus { port, bound: false, error: Some(format!("cannot bind {addr}: {e}")) })
            }
        }
    }

    /// Closes every Service port.
    pub(super) fn close_ports(&self) {
        for (_, (h, _)) in self.ports.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            if let Some(h) = h {
                h.abort();
            }
        }
    }
}

/// Ports a Service opens on the node: `port` for LoadBalancer, `nodePort` (or `port`) for
/// NodePort; none for ClusterIP (reachable through the gateway by Host).
pub fn node_ports(svc: &Service) -> Vec<u16> {
    let mut out = Vec::new();
    for p in &svc.spec.ports {
        let port = match svc.spec.service_type() {
            ServiceType::LoadBalancer => Some(p.port),
            ServiceType::NodePort => Some(p.node_port.unwrap_or(p.port)),
            _ => None,
        };
        if let Some(port) = port.and_then(|p| u16::try_from(p).ok()) {
            out.push(port);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}
