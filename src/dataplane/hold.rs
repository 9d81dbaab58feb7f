//! Holding a request while a Service has no usable replica: briefly for any Service (a node
//! that just restarted, replicas moving, a scale-up from zero by hand), and, for a Service
//! whose workloads an autoscaler scaled to zero, while one is activated: the gateway asks for
//! the activation ([`Activate`]), bounds how many requests wait, and says how long they did.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use wasmfleet_runtime::ResponseBody;

use super::gateway::{Routes, ServiceRoute, text};
use crate::manifest::ObjectKey;

/// How a Service backed by workloads scaled to zero holds a request while one is activated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activation {
    /// The workloads (Deployments, Rollouts) its autoscaler may have scaled to zero.
    pub targets: Vec<ObjectKey>,
    /// How long a request is held (`wasmfleet.io/activation-timeout`).
    pub timeout: Duration,
    /// Requests held at once on this gateway; beyond, 503 with `Retry-After`
    /// (`wasmfleet.io/max-pending-requests`).
    pub max_pending: u32,
}

/// Default of `wasmfleet.io/activation-timeout`.
pub const ACTIVATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of `wasmfleet.io/max-pending-requests`.
pub const MAX_PENDING: u32 = 1000;

/// Scales a workload from zero when a request for it is held (the reconciler asks the
/// workload's coordinator).
pub trait Activate: Send + Sync {
    fn activate(&self, target: &ObjectKey);
}

/// Gives back a held request's place.
struct Release(Arc<std::sync::atomic::AtomicU32>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a request for a Service with no usable replica waits for one before it gets a
/// 503: covers a node that just restarted and has not heard from its peers yet, every replica
/// of a Service moving at once, and a scale-up from zero by hand (an autoscaled one holds for
/// its Service's activation timeout, [`ACTIVATION_TIMEOUT`] by default). The same 5 s as
/// that default: a loaded 2-core node has been seen to need more than 2 s to start the first
/// replica of a scale-up from zero.
pub const UNAVAILABLE_HOLD: Duration = Duration::from_secs(5);
/// How often a held request looks again.
const HOLD_POLL: Duration = Duration::from_millis(20);

impl Routes {
    /// Lets held requests activate workloads scaled to zero (set once).
    pub fn set_activator(&self, activator: Arc<dyn Activate>) {
        let _ = self.activator.set(activator);
    }

    /// `route`, or its newer version once it has a usable endpoint, and how long the request
    /// was held for an activation (None if it was not). A Service with no usable endpoint
    /// holds the request up to [`UNAVAILABLE_HOLD`]; one whose workloads an autoscaler may
    /// have scaled to zero asks for them to be activated and holds it up to its activation
    /// timeout, unless too many requests wait already: then the answer is a 503 with
    /// `Retry-After`.
    pub async fn ready_route(
        &self,
        route: Arc<ServiceRoute>,
    ) -> Result<(Arc<ServiceRoute>, Option<Duration>), Response<ResponseBody>> {
        if route.ready_count() > 0 {
            return Ok((route, None));
        }
        let Some(activation) = route.activation.clone() else {
            return Ok((self.hold(route, UNAVAILABLE_HOLD).await, None));
        };
        let counter = self.pending.entry(route.key.clone()).or_default().clone();
        let held = counter.fetch_add(1, Ordering::Relaxed);
        let _release = Release(counter);
        if held >= activation.max_pending {
            route.metrics(self).unavailable.inc();
            let mut resp = text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "service {}/{} is activating and {held} requests already wait for it (max-pending-requests {})",
                    route.key.namespace, route.key.name, activation.max_pending
                ),
            );
            resp.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            return Err(resp);
        }
        let started = Instant::now();
        if let Some(activator) = self.activator.get() {
            for target in &activation.targets {
                activator.activate(target);
            }
        }
        let route = self.hold(route, activation.timeout).await;
        Ok((route, Some(started.elapsed())))
    }

    /// [`Routes::ready_route`], for callers that answer a rejection themselves (a held
    /// request that was rejected is routed as is: it gets the route's 503).
    pub async fn when_ready(&self, route: Arc<ServiceRoute>) -> Arc<ServiceRoute> {
        match self.ready_route(route.clone()).await {
            Ok((route, _)) => route,
            Err(_) => route,
        }
    }

    /// Waits up to `hold` for `route` (or a newer one) to have a usable endpoint, re-checking
    /// as tables are stored and every [`HOLD_POLL`], since readiness and peer health change
    /// without a new table.
    async fn hold(&self, mut route: Arc<ServiceRoute>, hold: Duration) -> Arc<ServiceRoute> {
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(newer) = self.load().by_key.get(&route.key) {
                route = newer.clone();
            }
            let now = tokio::time::Instant::now();
            if route.ready_count() > 0 || now >= deadline {
                return route;
            }
            let _ = tokio::time::timeout_at(deadline.min(now + HOLD_POLL), changed).await;
        }
    }
}
