//! Rollouts of Deployments: which node decides each step, what it observes, and how the
//! decision is recorded.
//!
//! A Deployment's replicas belong to revision sets (one per template), sized by the
//! Deployment's [`RolloutRecord`] in the replicated store. The record is written by one node
//! only, the Deployment's *coordinator*: the first live node in rendezvous order for the
//! Deployment's key (ARCHITECTURE §10). Each pass, the coordinator observes what the fleet
//! runs of each set (its own replicas first-hand, its peers' from gossip), calls the pure
//! [`wasmfleet_scheduler::rollout::step`], and writes the result when it changed; every node
//! (the coordinator too) then places and runs the sets at the recorded sizes. When the
//! coordinator dies, the next node in rendezvous order takes over from the replicated record
//! with a higher epoch; a node that comes back with an old record loses to the fleet's
//! (records order by sequence number, see [`RolloutRecord`]).
//!
//! A Deployment with no record yet (just created, or stored by an older release) runs its
//! current template at full size as revision 1; its coordinator writes that as the first
//! record.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use wasmfleet_scheduler::NodeInfo;
use wasmfleet_scheduler::hash::rendezvous_weight;
use wasmfleet_scheduler::rollout::progressive::{self, Phase, Progress, Progressive};
use wasmfleet_scheduler::rollout::waves::{self, Wave};
use wasmfleet_scheduler::rollout::{self, Bound, Condition, Counts, Observed, Spec, Strategy};

use super::desired::{DeploymentInfo, Workloads};
use super::waves::{WavesInfo, fleet_waves, observe_waves};
use super::{Inner, ObjectStatus};
use crate::clock::now_ms;
use crate::dataplane::revisions::RevisionFigures;
use crate::manifest::{Deployment, IntOrString, ObjectKey, StrategyType};
use crate::peering::{GossipReplica, PeerView};
use crate::state::{AutoscaleState, ROLLOUT_PREFIX, RolloutRecord};

/// `kubernetes.io/change-cause`: recorded on the revision a change creates.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// Set on the pod template by `rollout restart`.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// A Deployment's rollout as the API shows it (`status` of `get`, `describe`, `-o yaml`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RolloutView {
    /// The Deployment's generation (bumped by every spec change).
    pub generation: u64,
    /// The generation the recorded rollout was computed for (0: no record yet).
    pub observed_generation: u64,
    /// `spec.replicas`.
    pub replicas: u32,
    /// `status`: replicas, updated, ready, available, unavailable.
    pub counts: Counts,
    pub paused: bool,
    /// `RollingUpdate` or `Recreate`.
    pub strategy: String,
    /// Resolved `maxSurge` / `maxUnavailable` (0 for Recreate).
    pub max_surge: u32,
    pub max_unavailable: u32,
    /// As written (`25%`, `1`), for `describe`.
    pub max_surge_spec: String,
    pub max_unavailable_spec: String,
    pub min_ready_seconds: u32,
    pub progress_deadline_seconds: u32,
    pub conditions: Vec<Condition>,
    /// Every revision kept, oldest first.
    pub revisions: Vec<RevisionView>,
    /// The node that decides this Deployment's steps, and its epoch.
    pub coordinator: Option<String>,
    pub epoch: u64,
    /// A Rollout's canary or blue/green progress: step, weight, phase, analysis runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// A Rollout's canary steps (`setWeight: 10`, `pause: {}`, `analysis: t`), as `describe`
    /// lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<String>,
    /// A Deployment rolled out in waves: each wave, and where the rollout stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<WavesView>,
}

/// A waved Deployment's waves, as `describe` shows them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WavesView {
    /// The node label whose values are the waves.
    pub label: String,
    pub waves: Vec<WaveView>,
    /// The wave being rolled out (1-based; 0 when none is).
    pub current: u32,
    /// Why the next wave waits, if it does (pause, analysis, halted).
    pub message: String,
    /// Running, Degraded (halted by a failed analysis), Paused (inconclusive), Healthy.
    pub phase: String,
}

/// One wave.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WaveView {
    pub value: String,
    /// Replicas it holds.
    pub share: u32,
    /// Slots of the current revision, and of older ones.
    pub updated: u32,
    pub old: u32,
    /// Available replicas of the current revision there.
    pub available: u32,
}

/// The waves of a waved Deployment, from the record (or none yet) and what the fleet runs.
fn wave_view(info: &WavesInfo, inputs: &WaveInputs, record: Option<&RolloutRecord>, newest: &str) -> WavesView {
    let state = record.map(|r| &r.state);
    let slots = |hash_is_new: bool, value: &str| -> u32 {
        state.map_or(0, |st| {
            st.sets
                .iter()
                .filter(|s| (s.hash == newest) == hash_is_new)
                .map(|s| s.waves.get(value).map_or(0, Vec::len) as u32)
                .sum()
        })
    };
    let waves: Vec<WaveView> = inputs
        .waves
        .iter()
        .map(|w| WaveView {
            value: w.value.clone(),
            share: w.share,
            updated: slots(true, &w.value),
            old: slots(false, &w.value),
            available: inputs.by_wave.get(&w.value).and_then(|m| m.get(newest)).map_or(0, |o| o.available),
        })
        .collect();
    let progress = record.and_then(|r| r.progress.as_ref());
    let rolling = waves.iter().any(|w| w.old > 0);
    let current = if rolling {
        waves.iter().position(|w| w.old > 0 || w.available < w.share).map_or(0, |i| i as u32 + 1)
    } else {
        0
    };
    let phase = match progress.map(|p| p.phase) {
        Some(Phase::Degraded) => "Degraded",
        Some(Phase::Paused) => "Paused",
        _ if rolling => "Progressing",
        _ => "Healthy",
    };
    WavesView {
        label: info.settings.label.clone(),
        waves,
        current,
        message: progress.map(|p| p.message.clone()).unwrap_or_default(),
        phase: phase.to_string(),
    }
}

/// One revision set.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RevisionView {
    pub revision: u64,
    /// Template hash (the replicas' `revision`).
    pub hash: String,
    /// `<deployment>-<hash>`, as Kubernetes names a ReplicaSet.
    pub name: String,
    /// Replicas the set should have.
    pub replicas: u32,
    /// What the fleet runs of it.
    pub running: u32,
    pub ready: u32,
    pub available: u32,
    pub change_cause: Option<String>,
    /// The first container's image.
    pub image: String,
    /// `spec.template` of the revision (Kubernetes JSON).
    pub template: serde_json::Value,
    pub created_ms: u64,
    /// The newest revision (the one the Deployment rolls toward).
    pub current: bool,
}

/// The coordinator of `key` among `nodes` (live members, this node included): the highest
/// rendezvous weight.
pub fn coordinator<'a>(key: &ObjectKey, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let k = key.to_string();
    nodes.into_iter().max_by_key(|n| (rendezvous_weight(&k, 0, n), *n))
}

/// `maxSurge`/`maxUnavailable` as the pure step takes them (a validated manifest holds a count
/// or `N%`).
fn bound(v: Option<&IntOrString>, default_percent: u32) -> Bound {
    match v {
        Some(IntOrString::Int(n)) => Bound::Count(u32::try_from(*n).unwrap_or(0)),
        Some(IntOrString::String(s)) => {
            Bound::Percent(s.trim_end_matches('%').trim().parse().unwrap_or(default_percent))
        }
        None => Bound::Percent(default_percent),
    }
}

/// The rollout spec of a Deployment whose current template hashes to `template_hash`.
pub fn spec_of(d: &Deployment, template_hash: &str) -> Spec {
    let s = &d.spec;
    let strategy = match &s.strategy {
        Some(st) if st.type_ == Some(StrategyType::Recreate) => Strategy::Recreate,
        Some(st) => {
            let r = st.rolling_update.as_ref();
            Strategy::RollingUpdate {
                max_surge: bound(r.and_then(|r| r.max_surge.as_ref()), 25),
                max_unavailable: bound(r.and_then(|r| r.max_unavailable.as_ref()), 25),
            }
        }
        None => Strategy::default(),
    };
    Spec {
        replicas: s.replicas(),
        strategy,
        progress_deadline_s: s.progress_deadline_seconds.unwrap_or(rollout::DEFAULT_PROGRESS_DEADLINE_S),
        revision_history_limit: s.revision_history_limit.unwrap_or(rollout::DEFAULT_REVISION_HISTORY_LIMIT),
        paused: s.paused.unwrap_or(false),
        template_hash: template_hash.to_string(),
        change_cause: d.metadata.annotations.get(CHANGE_CAUSE).cloned(),
    }
}

/// The active replicas of every owner, from replicas as gossip carries them (this node's
/// included): one pass over the fleet's replicas for all Deployments.
pub fn by_owner<'a>(replicas: impl IntoIterator<Item = &'a GossipReplica>) -> HashMap<&'a str, Vec<&'a GossipReplica>> {
    let mut out: HashMap<&str, Vec<&GossipReplica>> = HashMap::new();
    for r in replicas.into_iter().filter(|r| r.phase.is_active()) {
        out.entry(r.owner.as_str()).or_default().push(r);
    }
    out
}

/// What the fleet runs of each set, from one owner's active replicas ([`by_owner`]). A
/// replica is available once ready for `min_ready_s` by `now_ms`.
pub fn observe(replicas: &[&GossipReplica], min_ready_s: u32, now_ms: u64) -> BTreeMap<String, Observed> {
    let mut out: BTreeMap<String, Observed> = BTreeMap::new();
    for r in replicas {
        count(out.entry(r.revision.clone()).or_default(), r, min_ready_s, now_ms);
    }
    out
}

/// Counts replica `r` in `o`: running, ready, and available once ready for `min_ready_s`.
pub fn count(o: &mut Observed, r: &GossipReplica, min_ready_s: u32, now_ms: u64) {
    o.running += 1;
    if r.ready {
        o.ready += 1;
        if r.ready_ms > 0 && now_ms.saturating_sub(r.ready_ms) >= u64::from(min_ready_s) * 1000 {
            o.available += 1;
        }
    }
}

/// A waved Deployment's waves over the fleet now, and what the fleet runs in each.
pub struct WaveInputs {
    pub waves: Vec<Wave>,
    pub by_wave: BTreeMap<String, BTreeMap<String, Observed>>,
}

/// The next record of Deployment (or Rollout) `name`, if the coordinator `me` must write
/// one: `stored` is the record as replicated (None: never rolled out); `progress` a Rollout's
/// (or a wave gate's) progress with the measurements just taken (None: as recorded); `waves`
/// a waved Deployment's waves.
/// `autoscale`: the autoscaler's state to record (its size is the one the step scales to).
#[expect(clippy::too_many_arguments, reason = "the step's inputs, gathered by the coordinator")]
pub fn next_record(
    me: &str,
    name: &str,
    info: &DeploymentInfo,
    stored: Option<&RolloutRecord>,
    observed: &BTreeMap<String, Observed>,
    progress: Option<Progress>,
    waves: Option<&WaveInputs>,
    autoscale: Option<AutoscaleState>,
    now_ms: u64,
) -> Option<RolloutRecord> {
    let scaled;
    let mut progressive_scaled = None;
    let spec = match autoscale.as_ref().and_then(|a| a.size_for(info.spec_replicas)) {
        Some(size) if size != info.spec.replicas => {
            scaled = Spec { replicas: size, ..info.spec.clone() };
            if let Some(p) = &info.progressive {
                let mut p = p.clone();
                p.spec.replicas = size;
                progressive_scaled = Some(p);
            }
            &scaled
        }
        _ => &info.spec,
    };
    let progressive_info = progressive_scaled.as_ref().or(info.progressive.as_ref());
    let (template, generation) = (&info.template, info.generation);
    let (state, seq, epoch, mut templates) = match stored {
        Some(r) => {
            (r.state.clone(), r.seq, if r.coordinator == me { r.epoch } else { r.epoch + 1 }, r.templates.clone())
        }
        None => (rollout::State::initial(spec, now_ms), 0, 1, BTreeMap::new()),
    };
    let (state, progress) = match (progressive_info, &info.waves, waves) {
        (None, Some(w), Some(inputs)) => {
            let before = progress.or_else(|| stored.and_then(|r| r.progress.clone())).unwrap_or_default();
            let (state, progress) =
                waves::step(name, spec, &inputs.waves, &w.gate, &state, &before, observed, &inputs.by_wave, now_ms);
            // Steady (no gate to keep): no progress recorded.
            (state, (progress != Progress { phase: Phase::Healthy, ..Progress::default() }).then_some(progress))
        }
        (None, ..) => {
            let mut state = rollout::step(name, spec, &state, observed, now_ms);
            if state.sets.iter().any(|s| !s.waves.is_empty()) {
                // Waves turned off: slots `0..replicas` again.
                let newest = state.newest().map(|s| s.hash.clone()).unwrap_or_default();
                waves::distribute(&[], &mut state, &newest);
            }
            (state, None)
        }
        (Some(p), ..) => {
            let before = progress.unwrap_or_else(|| p.progress.clone());
            let (mut state, progress) = progressive::step(&p.spec, &state, &before, observed, p.verbs, now_ms);
            state.counts = rollout::counts(spec, &state, observed);
            (state, Some(progress))
        }
    };
    templates.entry(spec.template_hash.clone()).or_insert_with(|| template.clone());
    templates.retain(|hash, _| state.set(hash).is_some());
    let next = RolloutRecord {
        seq: seq + 1,
        epoch,
        coordinator: me.to_string(),
        generation,
        state,
        templates,
        progress,
        autoscale: autoscale.map(Box::new),
    };
    let unchanged = stored.is_some_and(|r| {
        r.state == next.state
            && r.generation == next.generation
            && r.coordinator == next.coordinator
            && r.templates == next.templates
            && r.progress == next.progress
            && r.autoscale == next.autoscale
    });
    (!unchanged).then_some(next)
}

/// The view of Deployment `key`'s rollout: the recorded sets (or `info`'s, with no record),
/// the fleet's replicas of each, the conditions.
pub fn view(
    key: &ObjectKey,
    info: &DeploymentInfo,
    record: Option<&RolloutRecord>,
    observed: &BTreeMap<String, Observed>,
    coordinator: Option<&str>,
) -> RolloutView {
    let state = record.map(|r| &r.state).unwrap_or(&info.state);
    let spec = &info.spec;
    let (max_surge, max_unavailable) = spec.strategy.fenceposts(spec.replicas);
    let (mut strategy, surge_spec, unavailable_spec) = match spec.strategy {
        Strategy::Recreate => ("Recreate", String::new(), String::new()),
        Strategy::RollingUpdate { max_surge, max_unavailable } => {
            ("RollingUpdate", bound_text(max_surge), bound_text(max_unavailable))
        }
    };
    let mut steps = Vec::new();
    if let Some(p) = &info.progressive {
        match &p.spec.strategy {
            Progressive::Canary { steps: s, .. } => {
                strategy = "Canary";
                steps = s.iter().map(step_text).collect();
            }
            Progressive::BlueGreen { .. } => strategy = "BlueGreen",
        }
    }
    let newest = state.newest().map(|s| s.revision);
    let mut revisions: Vec<RevisionView> = state
        .sets
        .iter()
        .map(|set| {
            let template = record
                .and_then(|r| r.templates.get(&set.hash))
                .map(|t| t.template.clone())
                .or_else(|| (set.hash == spec.template_hash).then(|| info.template.template.clone()))
                .unwrap_or_default();
            let image = template
                .pointer("/spec/containers/0/image")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string();
            let o = observed.get(&set.hash).copied().unwrap_or_default();
            RevisionView {
                revision: set.revision,
                hash: set.hash.clone(),
                name: rollout::set_name(&key.name, &set.hash),
                replicas: set.replicas,
                running: o.running,
                ready: o.ready,
                available: o.available,
                change_cause: set.change_cause.clone(),
                image,
                template,
                created_ms: set.created_ms,
                current: Some(set.revision) == newest,
            }
        })
        .collect();
    revisions.sort_by_key(|r| r.revision);
    RolloutView {
        generation: info.generation,
        observed_generation: record.map(|r| r.generation).unwrap_or(0),
        replicas: spec.replicas,
        counts: rollout::counts(spec, state, observed),
        paused: spec.paused,
        strategy: strategy.to_string(),
        max_surge,
        max_unavailable,
        max_surge_spec: surge_spec,
        max_unavailable_spec: unavailable_spec,
        min_ready_seconds: info.min_ready_s,
        progress_deadline_seconds: spec.progress_deadline_s,
        conditions: state.conditions.clone(),
        revisions,
        coordinator: coordinator.map(str::to_string),
        epoch: record.map(|r| r.epoch).unwrap_or(0),
        progress: info
            .progressive
            .as_ref()
            .map(|p| record.and_then(|r| r.progress.clone()).unwrap_or_else(|| p.progress.clone())),
        steps,
        waves: None,
    }
}

/// A canary step as `describe` shows it.
fn step_text(step: &progressive::Step) -> String {
    match step {
        progressive::Step::SetWeight(w) => format!("setWeight: {w}"),
        progressive::Step::Pause(Some(ms)) => format!("pause: {} s", ms / 1000),
        progressive::Step::Pause(None) => "pause: until promoted".into(),
        progressive::Step::Analysis(m) => {
            format!("analysis: {}", m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "))
        }
    }
}

fn bound_text(b: Bound) -> String {
    match b {
        Bound::Count(n) => n.to_string(),
        Bound::Percent(p) => format!("{p}%"),
    }
}

impl Inner {
    /// Steps the rollouts this node coordinates (not while booting: its record may be old),
    /// and sets every Deployment's rollout status. `mine` is what this node publishes.
    #[expect(clippy::too_many_arguments, reason = "one pass's views of the fleet, borrowed from it")]
    pub(super) fn rollouts(
        &self,
        workloads: &Workloads,
        mine: &[GossipReplica],
        peers: &[PeerView],
        nodes: &[NodeInfo],
        activations: &std::collections::BTreeSet<String>,
        booting: bool,
        status: &mut HashMap<ObjectKey, ObjectStatus>,
    ) {
        let now = now_ms();
        let live: Vec<&str> = peers.iter().map(|p| p.name.as_str()).chain([self.node.as_str()]).collect();
        let replicas = by_owner(mine.iter().chain(peers.iter().flat_map(|p| p.replicas.iter())));
        for (key, info) in &workloads.deployments {
            let owner = key.to_string();
            let theirs = replicas.get(owner.as_str()).map(Vec::as_slice).unwrap_or_default();
            let observed = observe(theirs, info.min_ready_s, now);
            let coordinator = coordinator(key, live.iter().copied());
            let stored = info.record.as_ref();
            let waves = info.waves.as_ref().map(|w| {
                let (waves, unlabelled) = fleet_waves(w, info.spec.replicas, nodes);
                let label = &w.settings.label;
                let note = match (waves.is_empty(), unlabelled) {
                    (true, _) => Some(format!("no node has label {label}: the Deployment rolls out without waves")),
                    (false, 0) => None,
                    (false, n) => Some(format!("{n} node(s) without label {label} run none of its replicas")),
                };
                if let Some(note) = note {
                    status.entry(key.clone()).or_default().note(note);
                }
                let by_wave = observe_waves(theirs, stored.map_or(&info.state, |r| &r.state), info.min_ready_s, now);
                WaveInputs { waves, by_wave }
            });
            let mut written = None;
            let deciding = !booting && coordinator == Some(self.node.as_str());
            let progress = if deciding { self.measure(key, info, stored, peers, now) } else { None };
            let autoscale = if deciding {
                self.autoscale_state(info, stored, theirs, peers, activations.contains(&owner), now)
            } else {
                stored.and_then(|r| r.autoscale.as_deref().cloned())
            };
            if deciding
                && let Some(next) = next_record(
                    &self.node,
                    &key.name,
                    info,
                    stored,
                    &observed,
                    progress,
                    waves.as_ref(),
                    autoscale,
                    now,
                )
            {
                match self.store.put_rollout(key, next.clone()) {
                    Ok(true) => {
                        self.replicate_rollout(key);
                        // Runs the step started measure from now: their first interval starts
                        // with these figures.
                        if let Some(p) = &next.progress {
                            self.seed_baselines(key, p, peers);
                        }
                        written = Some(next);
                    }
                    // A newer record arrived meanwhile: the next pass steps from it.
                    Ok(false) => {}
                    Err(e) => tracing::warn!(deployment = %key, error = %e, "cannot record the rollout step"),
                }
            }
            let record = written.as_ref().or(stored);
            if let Some(a) = &info.autoscaler {
                let running = observed.values().map(|o| o.running).sum();
                let state = record.and_then(|r| r.autoscale.as_deref());
                let v = super::autoscale::view(a, key, running, state, a.period(self.hpa_period));
                status.entry(a.key.clone()).or_default().autoscale = Some(v);
            }
            let mut view = view(key, info, record, &observed, coordinator);
            if let (Some(w), Some(inputs)) = (&info.waves, &waves) {
                view.waves = Some(wave_view(w, inputs, written.as_ref().or(stored), &info.spec.template_hash));
            }
            status.entry(key.clone()).or_default().rollout = Some(view);
        }
    }

    /// The autoscaler state this coordinator records for `info`'s target: a new sync when one
    /// is due; the stored one otherwise; the last size kept after the autoscaler is deleted
    /// (as Kubernetes leaves the target at its last scale), until the target is scaled.
    fn autoscale_state(
        &self,
        info: &DeploymentInfo,
        stored: Option<&RolloutRecord>,
        replicas: &[&GossipReplica],
        peers: &[PeerView],
        activate: bool,
        now: u64,
    ) -> Option<AutoscaleState> {
        let state = stored.and_then(|r| r.autoscale.as_ref());
        let Some(a) = &info.autoscaler else {
            return state.filter(|s| s.size_for(info.spec_replicas).is_some()).map(|s| (**s).clone());
        };
        if activate && info.spec.replicas == 0 && a.spec.min == 0 {
            return Some(super::autoscale::activate(a, info.spec_replicas, state.map(|s| &**s), now));
        }
        let period = a.period(self.hpa_period).as_millis() as u64;
        let due = state.is_none_or(|s| {
            s.hpa != a.key.to_string()
                || now + 100 >= s.last_sync_ms + period
                || s.size_for(info.spec_replicas).is_none()
        });
        if !due {
            return state.map(|s| (**s).clone());
        }
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let metrics = |name: &str| {
            rings.metrics(name, period).or_else(|| peers.iter().find_map(|p| p.metrics.get(name).copied()))
        };
        let samples = super::autoscale::samples(a, replicas, &metrics);
        Some(super::autoscale::sync(a, info.spec.replicas, info.spec_replicas, state.map(|s| &**s), &samples, now))
    }

    /// A Rollout's progress with the measurements that were due taken (None when nothing was
    /// measured): the canary revision's figures, summed over every gateway in the fleet.
    fn measure(
        &self,
        key: &ObjectKey,
        info: &DeploymentInfo,
        record: Option<&RolloutRecord>,
        peers: &[PeerView],
        now: u64,
    ) -> Option<Progress> {
        let (metrics, mut progress) = match (&info.progressive, &info.waves) {
            (Some(p), _) => (&p.metrics, record.and_then(|r| r.progress.clone()).unwrap_or_else(|| p.progress.clone())),
            (None, Some(w)) => (&w.metrics, record.and_then(|r| r.progress.clone())?),
            (None, None) => return None,
        };
        let canary = progress.canary.clone()?;
        if progress.runs.is_empty() {
            return None;
        }
        let total = self.fleet_figures(&canary, peers);
        let mut baselines = self.baselines.lock().unwrap_or_else(|e| e.into_inner());
        let mine = baselines.entry(key.clone()).or_default();
        super::progressive::measure(&mut progress, metrics, &total, mine, now).then_some(progress)
    }

    /// The figures of `revision` summed over the fleet: this gateway's now, the others' as
    /// they last published them.
    fn fleet_figures(&self, revision: &str, peers: &[PeerView]) -> RevisionFigures {
        let mut total = self.routes.revision_stats().figures(revision).unwrap_or_default();
        for peer in peers {
            if let Some(f) = peer.figures.get(revision) {
                total.add(f);
            }
        }
        total
    }

    /// Starts the interval of every run of `progress` that has none yet, and notes when the
    /// next measurement is due (the loop wakes for it).
    fn seed_baselines(&self, key: &ObjectKey, progress: &Progress, peers: &[PeerView]) {
        let Some(canary) = &progress.canary else { return };
        let mut baselines = self.baselines.lock().unwrap_or_else(|e| e.into_inner());
        let mine = baselines.entry(key.clone()).or_default();
        for run in &progress.runs {
            if !mine.contains_key(&run.metric.name) {
                mine.insert(run.metric.name.clone(), self.fleet_figures(canary, peers));
            }
        }
    }

    /// When the next measurement of a run this node coordinates is due (wall ms).
    pub(super) fn next_measurement(&self, workloads: &Workloads) -> Option<u64> {
        let baselines = self.baselines.lock().unwrap_or_else(|e| e.into_inner());
        workloads
            .deployments
            .iter()
            .filter(|(key, _)| baselines.contains_key(*key))
            .filter_map(|(_, info)| info.record.as_ref()?.progress.as_ref())
            .flat_map(|p| p.runs.iter().filter(|r| r.phase == progressive::RunPhase::Running).map(|r| r.next_ms))
            .min()
    }

    /// Pushes a rollout record to peers in the background (anti-entropy brings it otherwise).
    fn replicate_rollout(&self, key: &ObjectKey) {
        let peering = self.peering.clone();
        let summary_key = format!("{ROLLOUT_PREFIX}{key}");
        tokio::spawn(async move {
            if let Err(e) = peering.replicate(std::slice::from_ref(&summary_key)).await {
                tracing::warn!(rollout = %summary_key, error = %e, "rollout record not replicated (anti-entropy will)");
            }
        });
    }
}
