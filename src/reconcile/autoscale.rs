//! Autoscaling on the node: which autoscaler sizes which target, what every node measures of
//! its own replicas (published in gossip), and the coordinator's sync.
//!
//! The algorithm is pure ([`wasmfleet_scheduler::autoscale`]). Its inputs come from here:
//! - **Metrics.** Every node samples the counters of its replicas of autoscaled targets once a
//!   second (guest time, requests, time in flight, memory-time; see the runtime's
//!   `ServiceStats`) into a ring, and publishes, per replica, the averages over the target's
//!   sync period (gossip key `rmetrics`): millicores of guest time, bytes of linear memory in
//!   use, requests per second, requests in flight. Every node averages its own replicas the
//!   same way, so a coordinator that takes over reads the same figures its predecessor did.
//! - **Who decides.** The target's coordinator (the node that writes its rollout record)
//!   runs each sync and writes the result into that record ([`AutoscaleState`]): one writer,
//!   one replicated write per change, and the history a successor needs.
//! - **The size.** A target runs the autoscaler's size while its `spec.replicas` is the one
//!   the autoscaler last saw; a manual `scale` changes `spec.replicas` and is run until the
//!   next sync corrects it, as in Kubernetes ([`effective_replicas`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmfleet_runtime::ServiceStats;
use wasmfleet_scheduler::autoscale::{self, Sample};

use crate::manifest::{HorizontalPodAutoscaler, Object, ObjectKey};
use crate::peering::{GossipReplica, ReplicaMetrics, ReplicaPhase};
use crate::state::{AutoscaleState, RolloutRecord, StoredObject};

/// Kubernetes' `--horizontal-pod-autoscaler-sync-period`.
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(15);
/// Recent scaling events kept for `describe hpa`.
const EVENTS_KEPT: usize = 10;
/// The longest window a ring keeps samples for.
const RING_SPAN_MS: u64 = 10 * 60 * 1000;

/// An autoscaler, as its target's coordinator needs it.
#[derive(Clone, Debug)]
pub struct AutoscalerInfo {
    pub key: ObjectKey,
    pub hpa: HorizontalPodAutoscaler,
    pub spec: autoscale::Spec,
    /// The target's requests per replica (for utilization): millicores, bytes.
    pub cpu_request: Option<f64>,
    pub memory_request: Option<f64>,
}

impl AutoscalerInfo {
    pub fn period(&self, default: Duration) -> Duration {
        self.hpa.sync_period(default)
    }
}

/// Every target's autoscaler (the first by name when several name one target), and a
/// message for each autoscaler that cannot act.
pub fn autoscalers(
    objects: &[(StoredObject, Object)],
) -> (HashMap<ObjectKey, AutoscalerInfo>, Vec<(ObjectKey, String)>) {
    let templates: HashMap<ObjectKey, &crate::manifest::PodTemplateSpec> =
        objects.iter().filter_map(|(_, o)| Some((o.key(), o.pod_template()?))).collect();
    let mut out: HashMap<ObjectKey, AutoscalerInfo> = HashMap::new();
    let mut messages = Vec::new();
    for (_, o) in objects {
        let Object::HorizontalPodAutoscaler(h) = o else { continue };
        let key = o.key();
        let Some(kind) = h.target_kind() else { continue };
        let target = ObjectKey::new(kind, key.namespace.clone(), h.spec.scale_target_ref.name.clone());
        let Some(tpl) = templates.get(&target) else {
            messages.push((key, format!("the target {kind}/{} does not exist", target.name)));
            continue;
        };
        if let Some(other) = out.get(&target) {
            messages.push((
                key,
                format!("{} already scales {kind}/{}; this one does nothing", other.key.name, target.name),
            ));
            continue;
        }
        let w = tpl.workload();
        let info = AutoscalerInfo {
            key,
            spec: h.spec(),
            hpa: h.clone(),
            cpu_request: w.cpu_millis.map(|m| m as f64),
            memory_request: w.memory_bytes.map(|b| b as f64),
        };
        out.insert(target, info);
    }
    (out, messages)
}

/// The replicas a target runs: its autoscaler's, while its `spec.replicas` is the one the
/// autoscaler last saw; otherwise (never autoscaled, or scaled by hand since) its own.
pub fn effective_replicas(spec_replicas: u32, record: Option<&RolloutRecord>) -> u32 {
    record.and_then(|r| r.autoscale.as_deref()?.size_for(spec_replicas)).unwrap_or(spec_replicas)
}

/// Each local replica's counters, sampled about once a second.
#[derive(Debug, Default)]
pub struct MetricRings {
    rings: HashMap<String, VecDeque<(u64, ServiceStats)>>,
}

impl MetricRings {
    /// Records `stats` of replica `name` at `now_ms` (at most one sample per 900 ms).
    pub fn sample(&mut self, name: &str, now_ms: u64, stats: ServiceStats) {
        let ring = self.rings.entry(name.to_string()).or_default();
        if ring.back().is_some_and(|(t, _)| now_ms < t + 900) {
            return;
        }
        ring.push_back((now_ms, stats));
        while ring.len() > 2 && ring.get(1).is_some_and(|(t, _)| *t + RING_SPAN_MS < now_ms) {
            ring.pop_front();
        }
    }

    /// Forgets replicas that `keep` rejects.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.rings.retain(|name, _| keep(name));
    }

    /// The averages of replica `name` over the last `window_ms` (from the newest sample at
    /// least that old, or the oldest there is); None until it has two samples.
    pub fn metrics(&self, name: &str, window_ms: u64) -> Option<ReplicaMetrics> {
        let ring = self.rings.get(name)?;
        let (t1, last) = ring.back()?;
        let from = t1.saturating_sub(window_ms);
        let (t0, first) = ring.iter().rev().find(|(t, _)| *t <= from).or_else(|| ring.front())?;
        let dt_ms = t1.checked_sub(*t0).filter(|d| *d > 0)? as f64;
        let per_ms = |a: u64, b: u64| a.wrapping_sub(b) as f64 / dt_ms;
        Some(
            ReplicaMetrics {
                // ns of guest time per ms = millicores / 1000.
                cpu_millicores: per_ms(last.cpu_ns, first.cpu_ns) / 1000.0,
                // A service's instances live while requests run: their memory-time over the
                // interval; a command's run holds its memory: what it holds now.
                memory_bytes: match last.memory_kib_us.wrapping_sub(first.memory_kib_us) {
                    0 => last.memory_bytes as f64,
                    _ => per_ms(last.memory_kib_us, first.memory_kib_us) * 1024.0 / 1000.0,
                },
                requests_per_second: per_ms(last.requests, first.requests) * 1000.0,
                concurrency: per_ms(last.busy_ns, first.busy_ns) / 1_000_000.0,
            }
            .rounded(),
        )
    }
}

/// What each metric of `info` sees of the target's replicas: `replicas` (active ones, from
/// gossip and this node), their figures by replica name (`metrics`).
pub fn samples(
    info: &AutoscalerInfo,
    replicas: &[&GossipReplica],
    metrics: &impl Fn(&str) -> Option<ReplicaMetrics>,
) -> Vec<Vec<Sample>> {
    info.spec
        .metrics
        .iter()
        .map(|m| {
            let request = match m.name.as_str() {
                "cpu" => info.cpu_request,
                "memory" => info.memory_request,
                _ => None,
            };
            replicas
                .iter()
                .map(|r| Sample {
                    pending: r.phase == ReplicaPhase::Pending,
                    ready: r.ready,
                    value: metrics(&r.name).and_then(|x| x.value(&m.name)),
                    request,
                })
                .collect()
        })
        .collect()
}

/// One sync of `info` for a target running `current` replicas whose own `spec.replicas` is
/// `spec_replicas`: the next state, from the stored one (None: the first sync).
pub fn sync(
    info: &AutoscalerInfo,
    current: u32,
    spec_replicas: u32,
    stored: Option<&AutoscaleState>,
    samples: &[Vec<Sample>],
    now_ms: u64,
) -> AutoscaleState {
    let mut state = state_of(info, stored, current, now_ms);
    let decision = autoscale::decide(&info.spec, current, samples, &mut state.history, now_ms);
    if decision.replicas != current {
        state.last_scale_ms = now_ms;
    }
    if let Some(reason) = decision.reason {
        push_event(&mut state, now_ms, reason);
    }
    state.replicas = decision.replicas;
    state.spec_replicas = spec_replicas;
    state.last_sync_ms = now_ms;
    state.conditions = decision.conditions;
    state.metrics = decision.metrics;
    state
}

/// `info`'s stored state, or a new one for a target at `current` replicas: Kubernetes'
/// `maybeInitScaleDownStabilizationWindow` starts a new autoscaler with the current size as a
/// recommendation, so it does not scale down at once.
fn state_of(info: &AutoscalerInfo, stored: Option<&AutoscaleState>, current: u32, now_ms: u64) -> AutoscaleState {
    match stored {
        Some(s) if s.hpa == info.key.to_string() => s.clone(),
        _ => {
            let mut s = AutoscaleState { hpa: info.key.to_string(), ..AutoscaleState::default() };
            s.history.recommendations.push(autoscale::Stamped { at_ms: now_ms, value: current });
            s
        }
    }
}

/// Adds a scaling event, keeping the last [`EVENTS_KEPT`].
fn push_event(state: &mut AutoscaleState, now_ms: u64, message: String) {
    state.events.push((now_ms, message));
    let excess = state.events.len().saturating_sub(EVENTS_KEPT);
    state.events.drain(..excess);
}

/// The state after activating a target scaled to zero (a request is held for it): one
/// replica at once, remembered as a recommendation and a scale-up (so the stabilization
/// window and the policies count it).
pub fn activate(
    info: &AutoscalerInfo,
    spec_replicas: u32,
    stored: Option<&AutoscaleState>,
    now_ms: u64,
) -> AutoscaleState {
    let mut state = state_of(info, stored, 0, now_ms);
    let to = info.spec.min.max(1).min(info.spec.max.max(1));
    state.history.recommendations.push(autoscale::Stamped { at_ms: now_ms, value: to });
    autoscale::record_event(&info.spec, &mut state.history, 0, to, now_ms);
    push_event(&mut state, now_ms, format!("New size: {to}; reason: a request arrived for the target scaled to zero"));
    state.replicas = to;
    state.spec_replicas = spec_replicas;
    state.last_scale_ms = now_ms;
    state
}

/// An autoscaler as the API shows it (`status` of `get hpa`, `describe hpa`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AutoscaleView {
    /// `Deployment/web`.
    pub reference: String,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// The target's replicas now, and what the autoscaler last asked for.
    pub current_replicas: u32,
    pub desired_replicas: u32,
    /// `cpu: 45%/50%` per metric.
    pub targets: Vec<String>,
    /// Each metric's current value (None: not measured) and target.
    #[serde(default)]
    pub metrics: Vec<autoscale::MetricStatus>,
    pub conditions: Vec<autoscale::Condition>,
    /// (wall ms, message), newest last.
    pub events: Vec<(u64, String)>,
    pub last_scale_ms: u64,
    pub sync_period_ms: u64,
}

/// The view of an autoscaler of `target` (which runs `current` replicas), from its state.
pub fn view(
    info: &AutoscalerInfo,
    target: &ObjectKey,
    current: u32,
    state: Option<&AutoscaleState>,
    period: Duration,
) -> AutoscaleView {
    let state = state.filter(|s| s.hpa == info.key.to_string());
    let measured: BTreeMap<&str, Option<f64>> =
        state.map(|s| s.metrics.iter().map(|m| (m.name.as_str(), m.current)).collect()).unwrap_or_default();
    let targets = info
        .spec
        .metrics
        .iter()
        .map(|m| {
            crate::manifest::autoscaling::target_text(
                &m.name,
                &m.target,
                measured.get(m.name.as_str()).copied().flatten(),
            )
        })
        .collect();
    AutoscaleView {
        reference: format!("{}/{}", target.kind, target.name),
        min_replicas: info.spec.min,
        max_replicas: info.spec.max,
        current_replicas: current,
        desired_replicas: state.map_or(current, |s| s.replicas),
        targets,
        metrics: state.map(|s| s.metrics.clone()).unwrap_or_default(),
        conditions: state.map(|s| s.conditions.clone()).unwrap_or_default(),
        events: state.map(|s| s.events.clone()).unwrap_or_default(),
        last_scale_ms: state.map_or(0, |s| s.last_scale_ms),
        sync_period_ms: period.as_millis() as u64,
    }
}

/// Asks a zero-scaled workload's coordinator to activate it, for the gateway's held
/// requests: at most once per target every [`ACTIVATION_RESEND`] (the request holds; the
/// coordinator may be changing).
pub struct Activator {
    node: String,
    peering: std::sync::Arc<crate::peering::Peering>,
    /// The runtime the mesh runs on (gateways call from their lanes' threads).
    handle: tokio::runtime::Handle,
    last: std::sync::Mutex<HashMap<ObjectKey, std::time::Instant>>,
}

/// How often a gateway asks again for a target still not activated.
const ACTIVATION_RESEND: Duration = Duration::from_millis(250);

impl Activator {
    pub fn new(node: String, peering: std::sync::Arc<crate::peering::Peering>) -> Activator {
        Activator { node, peering, handle: tokio::runtime::Handle::current(), last: Default::default() }
    }
}

impl crate::dataplane::gateway::Activate for Activator {
    fn activate(&self, target: &ObjectKey) {
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.get(target).is_some_and(|t| t.elapsed() < ACTIVATION_RESEND) {
                return;
            }
            last.insert(target.clone(), std::time::Instant::now());
        }
        let peers = self.peering.peers();
        let names = peers.iter().map(|(n, _)| n.as_str()).chain([self.node.as_str()]);
        let Some(coordinator) = super::rollouts::coordinator(target, names) else { return };
        if coordinator == self.node {
            self.peering.note_activation(&target.to_string());
        } else if let Some((name, addr)) = peers.iter().find(|(n, _)| n == coordinator).cloned() {
            let (peering, target) = (self.peering.clone(), target.to_string());
            self.handle.spawn(async move { peering.send_activation(&name, addr, target).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(cpu_ms: u64, requests: u64, busy_ms: u64, kib: u64, over_ms: u64) -> ServiceStats {
        ServiceStats {
            cpu_ns: cpu_ms * 1_000_000,
            requests,
            busy_ns: busy_ms * 1_000_000,
            memory_kib_us: kib * over_ms * 1000,
            ..ServiceStats::default()
        }
    }

    #[test]
    fn rings_average_over_the_window() {
        let mut rings = MetricRings::default();
        assert_eq!(rings.metrics("a", 1000), None);
        rings.sample("a", 10_000, stats(0, 0, 0, 0, 0));
        assert_eq!(rings.metrics("a", 1000), None, "one sample is no rate");
        // Over 2 s: 500 ms of guest time (250 millicores), 40 requests (20/s), 1.5 s in
        // flight (0.75 on average), 64 KiB held for the whole time.
        rings.sample("a", 11_000, stats(250, 20, 750, 64, 1000));
        rings.sample("a", 12_000, stats(500, 40, 1500, 64, 2000));
        let m = rings.metrics("a", 2000).unwrap();
        assert_eq!(m.cpu_millicores, 250.0);
        assert_eq!(m.requests_per_second, 20.0);
        assert_eq!(m.concurrency, 0.75);
        assert_eq!(m.memory_bytes, 64.0 * 1024.0);
        // A window shorter than the ring takes the newest samples only.
        rings.sample("a", 13_000, stats(500, 40, 1500, 64, 2000));
        assert_eq!(rings.metrics("a", 1000).unwrap().requests_per_second, 0.0);
        // Samples closer than 900 ms are skipped.
        rings.sample("a", 13_500, stats(900, 90, 0, 0, 0));
        assert_eq!(rings.metrics("a", 1000).unwrap().requests_per_second, 0.0);
        rings.retain(|n| n != "a");
        assert_eq!(rings.metrics("a", 1000), None);
    }

    #[test]
    fn a_target_runs_the_autoscalers_size_until_scaled_by_hand() {
        let mut rec = RolloutRecord {
            seq: 1,
            epoch: 1,
            coordinator: "n1".into(),
            generation: 1,
            state: Default::default(),
            templates: Default::default(),
            progress: None,
            autoscale: Some(Box::new(AutoscaleState { replicas: 7, spec_replicas: 2, ..AutoscaleState::default() })),
        };
        assert_eq!(effective_replicas(2, Some(&rec)), 7);
        assert_eq!(effective_replicas(5, Some(&rec)), 5, "a manual scale wins until the next sync");
        rec.autoscale = None;
        assert_eq!(effective_replicas(2, Some(&rec)), 2);
        assert_eq!(effective_replicas(2, None), 2);
    }
}
