//! `GET /metrics`: the node's metrics in OpenMetrics text (`prometheus-client`).
//!
//! Two sources: the gateway's per-Service families, registered once and kept across
//! reconcile passes ([`crate::dataplane::metrics`]), and per-replica values read from the
//! replicas this node runs at scrape time (their counters live in the runtime).

use std::fmt;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::dataplane::metrics::GatewayMetrics;
use crate::reconcile::ReplicaStatus;

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    replica: String,
    namespace: String,
}

/// The whole scrape: the gateway's families, then this node's replicas, then `# EOF`.
pub fn render(gateway: &GatewayMetrics, replicas: &[ReplicaStatus], uptime: Duration) -> Result<String, fmt::Error> {
    let mut out = String::new();
    gateway.encode(&mut out)?;
    prometheus_client::encoding::text::encode(&mut out, &node_registry(replicas, uptime))?;
    Ok(out)
}

/// A registry of this scrape's per-replica values and the node's uptime.
fn node_registry(replicas: &[ReplicaStatus], uptime: Duration) -> Registry {
    let mut registry = Registry::default();
    let counter = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<ReplicaLabels, Counter>::default();
        registry.register(name, help, family.clone());
        family
    };
    let requests = counter(&mut registry, "wasmfleet_replica_requests", "Requests served by a replica on this node");
    let rejected =
        counter(&mut registry, "wasmfleet_replica_rejected", "Requests turned away because every slot stayed busy");
    let traps = counter(&mut registry, "wasmfleet_replica_traps", "Requests that ended in a guest trap");
    let timeouts = counter(&mut registry, "wasmfleet_replica_timeouts", "Requests stopped at their deadline");
    let oom = counter(&mut registry, "wasmfleet_replica_oom", "Requests that hit the replica's memory limit");
    let restarts = counter(&mut registry, "wasmfleet_replica_restarts", "Restarts of a replica on this node");
    let in_flight = Family::<ReplicaLabels, Gauge>::default();
    registry.register("wasmfleet_replica_in_flight", "Requests a replica is serving now", in_flight.clone());
    let ready = Family::<ReplicaLabels, Gauge>::default();
    registry.register("wasmfleet_replica_ready", "1 when the replica is ready", ready.clone());
    let up = Gauge::<i64>::default();
    registry.register_with_unit("wasmfleet_uptime", "Time since this agent started", Unit::Seconds, up.clone());

    for r in replicas {
        let l = ReplicaLabels { replica: r.name.clone(), namespace: r.namespace.clone() };
        if let Some(s) = &r.stats {
            requests.get_or_create(&l).inc_by(s.requests);
            rejected.get_or_create(&l).inc_by(s.rejected);
            traps.get_or_create(&l).inc_by(s.traps);
            timeouts.get_or_create(&l).inc_by(s.timeouts);
            oom.get_or_create(&l).inc_by(s.out_of_memory);
            in_flight.get_or_create(&l).set(i64::from(s.in_flight));
        }
        restarts.get_or_create(&l).inc_by(u64::from(r.restarts));
        ready.get_or_create(&l).set(i64::from(r.ready));
    }
    up.set(i64::try_from(uptime.as_secs()).unwrap_or(i64::MAX));
    registry
}
