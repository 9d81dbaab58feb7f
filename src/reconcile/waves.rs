//! Rollout waves on the node: a Deployment's wave settings with their analyses resolved,
//! the waves the fleet's nodes make, and what the fleet runs in each.
//!
//! The decisions are pure ([`wasmfleet_scheduler::rollout::waves`]); the coordinator feeds
//! them with this module's inputs, and every node places each set's slots of a wave as a
//! workload of its own, held to the wave's nodes by a node selector (see
//! [`super::desired`]).

use std::collections::BTreeMap;

use wasmfleet_scheduler::NodeInfo;
use wasmfleet_scheduler::rollout::waves::{self, Gate, Wave};
use wasmfleet_scheduler::rollout::{Observed, State};

use super::progressive::{MetricDef, analyses};
use crate::manifest::waves::{WaveSettings, wave_settings};
use crate::manifest::{AnalysisTemplate, Deployment};
use crate::peering::GossipReplica;

/// A Deployment's waves as the coordinator needs them.
#[derive(Clone, Debug)]
pub struct WavesInfo {
    pub settings: WaveSettings,
    pub gate: Gate,
    /// The gate's analysis metrics, by `template/metric`.
    pub metrics: BTreeMap<String, MetricDef>,
    /// The pod template's node selector (a wave's nodes must pass it too).
    pub selector: BTreeMap<String, String>,
}

/// The waves of Deployment `d` (None without `wasmfleet.io/rollout-waves`); problems with its
/// analysis templates go to `messages` (the gate then waits).
pub fn waves_of(
    d: &Deployment,
    namespace: &str,
    templates: &BTreeMap<(&str, &str), &AnalysisTemplate>,
    messages: &mut Vec<String>,
) -> Option<WavesInfo> {
    let settings = wave_settings(&d.metadata.annotations)?;
    let mut metrics = BTreeMap::new();
    let analysis = if settings.analysis.is_empty() {
        Vec::new()
    } else {
        match analyses(&settings.analysis, namespace, templates, &mut metrics, messages) {
            Some(a) => a,
            // A missing template holds the gate: a run that never settles.
            None => vec![wasmfleet_scheduler::rollout::progressive::MetricSpec {
                name: format!("{} (missing)", settings.analysis.join(",")),
                interval_ms: u64::MAX / 4,
                count: 1,
                failure_limit: 0,
                inconclusive_limit: 0,
            }],
        }
    };
    let gate = Gate { pause_ms: settings.pause.as_millis() as u64, analysis };
    Some(WavesInfo { settings, gate, metrics, selector: d.spec.template.spec.node_selector.clone() })
}

/// A node's value of `label` (`zone` is also the node's `--zone`).
pub fn label_of<'a>(node: &'a NodeInfo, label: &str) -> Option<&'a str> {
    node.labels.get(label).map(String::as_str).or_else(|| (label == "zone").then_some(node.zone.as_deref()).flatten())
}

/// The waves `nodes` make for a Deployment of `replicas`: one per value of the label among
/// the nodes its template may run on, in the settings' order, sharing the replicas by node
/// count; and how many of those nodes lack the label (they run none).
pub fn fleet_waves(info: &WavesInfo, replicas: u32, nodes: &[NodeInfo]) -> (Vec<Wave>, usize) {
    let passes = |n: &NodeInfo| info.selector.iter().all(|(k, v)| label_of(n, k) == Some(v.as_str()));
    let mut count: BTreeMap<&str, u32> = BTreeMap::new();
    let mut unlabelled = 0;
    for n in nodes.iter().filter(|n| passes(n)) {
        match label_of(n, &info.settings.label) {
            Some(v) => *count.entry(v).or_default() += 1,
            None => unlabelled += 1,
        }
    }
    let groups: Vec<(String, u32)> =
        info.settings.ordered(count.keys().copied()).into_iter().map(|v| (v.to_string(), count[v])).collect();
    (waves::shares(replicas, &groups), unlabelled)
}

/// What the fleet runs in each wave, per set: each replica counts in the wave its slot is
/// dealt to in `state`. A replica is available once ready for `min_ready_s`.
pub fn observe_waves(
    replicas: &[&GossipReplica],
    state: &State,
    min_ready_s: u32,
    now_ms: u64,
) -> BTreeMap<String, BTreeMap<String, Observed>> {
    let mut out: BTreeMap<String, BTreeMap<String, Observed>> = BTreeMap::new();
    for r in replicas {
        let Some(wave) = waves::wave_of(state, &r.revision, r.index) else { continue };
        let o = out.entry(wave.to_string()).or_default().entry(r.revision.clone()).or_default();
        super::rollouts::count(o, r, min_ready_s, now_ms);
    }
    out
}
