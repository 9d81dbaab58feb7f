//! The gateway's metrics per Service, in Prometheus/OpenMetrics form (`prometheus-client`).
//!
//! The reconciler rebuilds every [`ServiceRoute`](crate::dataplane::gateway::ServiceRoute) on
//! every pass, so counters cannot live in a route: they live here, in one family per metric
//! registered once per node ([`Routes`](crate::dataplane::gateway::Routes) holds it), and a
//! route only holds handles to its Service's series ([`ServiceMetrics`], shared atomics).
//! A Service's series are dropped when the Service leaves the routing table.

use std::fmt;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::manifest::ObjectKey;

/// Upper bounds (seconds) of the latency buckets: from a local instantiation (sub-millisecond)
/// to the default request timeout (30 s).
pub const LATENCY_BUCKETS_SECONDS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0];

/// The labels of a Service's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
    pub namespace: String,
}

impl ServiceLabels {
    pub fn of(key: &ObjectKey) -> ServiceLabels {
        ServiceLabels { service: key.name.clone(), namespace: key.namespace.clone() }
    }
}

type LatencyFamily = Family<ServiceLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_SECONDS)
}

/// Every Service's gateway series on this node.
#[derive(Debug)]
pub struct GatewayMetrics {
    registry: Registry,
    requests: Family<ServiceLabels, Counter>,
    unavailable: Family<ServiceLabels, Counter>,
    forwarded: Family<ServiceLabels, Counter>,
    retried: Family<ServiceLabels, Counter>,
    latency: LatencyFamily,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<ServiceLabels, Counter>::default();
        let unavailable = Family::<ServiceLabels, Counter>::default();
        let forwarded = Family::<ServiceLabels, Counter>::default();
        let retried = Family::<ServiceLabels, Counter>::default();
        let latency = LatencyFamily::new_with_constructor(latency_histogram);
        registry.register(
            "wasmfleet_gateway_requests",
            "Requests for a Service handled by this node's gateway (including those forwarded here by peers)",
            requests.clone(),
        );
        registry.register(
            "wasmfleet_gateway_unavailable",
            "Requests for a Service answered 503 because no replica was ready or reachable",
            unavailable.clone(),
        );
        registry.register(
            "wasmfleet_gateway_forwarded",
            "Attempts to serve a request on a replica of another node (over QUIC), retries included",
            forwarded.clone(),
        );
        registry.register(
            "wasmfleet_gateway_retried",
            "Forwarding attempts after the first for one request (the previous replica failed)",
            retried.clone(),
        );
        registry.register_with_unit(
            "wasmfleet_gateway_request_duration",
            "Time from a request's arrival at the gateway to its response head",
            Unit::Seconds,
            latency.clone(),
        );
        GatewayMetrics { registry, requests, unavailable, forwarded, retried, latency }
    }
}

impl GatewayMetrics {
    /// Handles to the series of the Service `key`, created on first use.
    pub fn service(&self, key: &ObjectKey) -> ServiceMetrics {
        let labels = ServiceLabels::of(key);
        ServiceMetrics {
            requests: self.requests.get_or_create_owned(&labels),
            unavailable: self.unavailable.get_or_create_owned(&labels),
            forwarded: self.forwarded.get_or_create_owned(&labels),
            retried: self.retried.get_or_create_owned(&labels),
            latency: self.latency.get_or_create_owned(&labels),
        }
    }

    /// Drops the series of a Service that no longer exists.
    pub fn forget(&self, key: &ObjectKey) {
        let labels = ServiceLabels::of(key);
        self.requests.remove(&labels);
        self.unavailable.remove(&labels);
        self.forwarded.remove(&labels);
        self.retried.remove(&labels);
        self.latency.remove(&labels);
    }

    /// Appends the families in OpenMetrics text (no `# EOF`: the caller may add more).
    pub fn encode(&self, out: &mut String) -> fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.registry)
    }
}

/// One Service's series: cheap clones sharing the counters of [`GatewayMetrics`].
#[derive(Clone, Debug)]
pub struct ServiceMetrics {
    pub requests: Counter,
    pub unavailable: Counter,
    pub forwarded: Counter,
    pub retried: Counter,
    pub latency: Histogram,
}

impl ServiceMetrics {
    pub fn observe_latency(&self, elapsed: Duration) {
        self.latency.observe(elapsed.as_secs_f64());
    }
}
