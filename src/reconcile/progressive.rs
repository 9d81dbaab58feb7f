//! Rollouts (the Argo `Rollout` kind): canary and blue/green, from the manifest to the pure
//! step, and the analysis measurements the coordinator takes.
//!
//! [`progressive_of`] turns a `Rollout` and the `AnalysisTemplate`s of its namespace into the
//! pure [`RolloutSpec`] (steps with their metrics) and the metric definitions the coordinator
//! judges measurements by; [`measure`] takes the due measurements of a Rollout's analysis runs
//! from the figures the gateways publish for the canary revision. Everything else — sets,
//! coordinator, record — is shared with Deployments ([`super::rollouts`]).

use std::collections::{BTreeMap, HashMap};

use wasmfleet_scheduler::rollout::progressive::{MetricSpec, Outcome, Progress, Progressive, RolloutSpec, Step, Verbs};
use wasmfleet_scheduler::rollout::{self, Strategy};

use crate::dataplane::revisions::RevisionFigures;
use crate::manifest::{AnalysisTemplate, Condition, ObjectKey, Rollout, StrategyKind};

/// A Rollout as the coordinator and the routes need it.
#[derive(Clone, Debug)]
pub struct ProgressiveInfo {
    pub spec: RolloutSpec,
    /// As recorded (default before the first record).
    pub progress: Progress,
    /// The operator's verbs, as counted on the object.
    pub verbs: Verbs,
    /// The metrics of its analyses, by `template/metric`.
    pub metrics: BTreeMap<String, MetricDef>,
    pub services: Services,
    /// The labels of its pods (Services that select them get the canary's weight).
    pub labels: BTreeMap<String, String>,
}

/// How a measurement is judged.
#[derive(Clone, Debug)]
pub struct MetricDef {
    pub success: Option<Condition>,
    pub failure: Option<Condition>,
    /// Fewer requests in an interval: inconclusive.
    pub min_requests: u64,
}

/// The Services a Rollout names.
#[derive(Clone, Debug, Default)]
pub struct Services {
    /// Canary: a Service for the canary only, and one for the stable only.
    pub canary: Option<String>,
    pub stable: Option<String>,
    /// Blue/green: the Service of the active revision, and of the preview.
    pub active: Option<String>,
    pub preview: Option<String>,
}

/// A Rollout translated: the pure spec, the equivalent Deployment spec (for what both
/// share: replicas, template hash, history), the metrics, the services, and problems found.
pub struct Built {
    pub spec: RolloutSpec,
    pub base: rollout::Spec,
    pub metrics: BTreeMap<String, MetricDef>,
    pub services: Services,
    pub messages: Vec<String>,
}

/// Translates Rollout `r` whose current template hashes to `hash`; `templates` are the
/// AnalysisTemplates by (namespace, name).
pub fn progressive_of(
    r: &Rollout,
    hash: &str,
    namespace: &str,
    templates: &BTreeMap<(&str, &str), &AnalysisTemplate>,
) -> Built {
    let s = &r.spec;
    let mut messages = Vec::new();
    let mut metrics = BTreeMap::new();
    let mut resolve =
        |names: &[String], messages: &mut Vec<String>| analyses(names, namespace, templates, &mut metrics, messages);
    let mut services = Services::default();
    let strategy = match s.strategy.kind() {
        Some(StrategyKind::BlueGreen(b)) => {
            services.active = Some(b.active_service.clone());
            services.preview.clone_from(&b.preview_service);
            Progressive::BlueGreen {
                auto_promotion: b.auto_promotion_enabled(),
                auto_promotion_ms: b.auto_promotion_after().map(|d| d.as_millis() as u64),
                scale_down_delay_ms: b.scale_down_delay().as_millis() as u64,
                preview_replicas: b.preview_replica_count,
            }
        }
        Some(StrategyKind::Canary(c)) => {
            services.canary.clone_from(&c.canary_service);
            services.stable.clone_from(&c.stable_service);
            let mut steps = Vec::new();
            for step in &c.steps {
                steps.push(match step.kind() {
                    Some(crate::manifest::Step::SetWeight(w)) => Step::SetWeight(w.min(100)),
                    Some(crate::manifest::Step::Pause(d)) => Step::Pause(d.map(|d| d.as_millis() as u64)),
                    Some(crate::manifest::Step::Analysis(names)) => match resolve(&names, &mut messages) {
                        Some(m) => Step::Analysis(m),
                        // A template that is missing or wrong: wait there until promoted.
                        None => Step::Pause(None),
                    },
                    None => continue,
                });
            }
            let (background, starting_step) = match &c.analysis {
                Some(a) => (resolve(&a.template_names(), &mut messages).unwrap_or_default(), a.starting_step()),
                None => (Vec::new(), 0),
            };
            Progressive::Canary { steps, background, starting_step }
        }
        None => Progressive::Canary { steps: Vec::new(), background: Vec::new(), starting_step: 0 },
    };
    let base = rollout::Spec {
        replicas: s.replicas(),
        strategy: Strategy::default(),
        progress_deadline_s: s.progress_deadline_seconds.unwrap_or(rollout::DEFAULT_PROGRESS_DEADLINE_S),
        revision_history_limit: s.revision_history_limit.unwrap_or(rollout::DEFAULT_REVISION_HISTORY_LIMIT),
        paused: s.paused.unwrap_or(false),
        template_hash: hash.to_string(),
        change_cause: r.metadata.annotations.get(super::rollouts::CHANGE_CAUSE).cloned(),
    };
    let spec = RolloutSpec {
        replicas: base.replicas,
        strategy,
        template_hash: hash.to_string(),
        change_cause: base.change_cause.clone(),
        paused: base.paused,
        revision_history_limit: base.revision_history_limit,
        progress_deadline_ms: u64::from(base.progress_deadline_s) * 1000,
    };
    Built { spec, base, metrics, services, messages }
}

/// The metrics of AnalysisTemplates `names` in `namespace`, as analysis runs take them; their
/// definitions go to `metrics` (by `template/metric`). None if a template is missing or
/// wrong (the problem goes to `messages`).
pub fn analyses(
    names: &[String],
    namespace: &str,
    templates: &BTreeMap<(&str, &str), &AnalysisTemplate>,
    metrics: &mut BTreeMap<String, MetricDef>,
    messages: &mut Vec<String>,
) -> Option<Vec<MetricSpec>> {
    let mut out = Vec::new();
    for name in names {
        let Some(t) = templates.get(&(namespace, name.as_str())) else {
            messages.push(format!("AnalysisTemplate {name} not found: the rollout waits at its analysis"));
            return None;
        };
        for m in &t.spec.metrics {
            let id = format!("{name}/{}", m.name);
            let (success, failure) = match (m.success_condition(), m.failure_condition()) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    messages.push(format!("AnalysisTemplate {name}, metric {}: {e}", m.name));
                    return None;
                }
            };
            metrics.insert(id.clone(), MetricDef { success, failure, min_requests: u64::from(m.min_requests()) });
            out.push(MetricSpec {
                name: id,
                interval_ms: m.interval().as_millis() as u64,
                count: m.count(),
                failure_limit: m.failure_limit(),
                inconclusive_limit: m.inconclusive_limit(),
            });
        }
    }
    Some(out)
}

/// The verbs counted on a stored object.
pub fn verbs_of(counts: &BTreeMap<String, u64>) -> Verbs {
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    Verbs { promote: n("promote"), promote_full: n("promote-full"), abort: n("abort"), retry: n("retry") }
}

/// The figures a condition can name, from one interval's figures of the canary revision.
pub fn figures(delta: &RevisionFigures, interval_ms: u64) -> HashMap<&'static str, f64> {
    let mut out = HashMap::new();
    out.insert("requests", delta.requests as f64);
    out.insert("rps", delta.requests as f64 * 1000.0 / interval_ms.max(1) as f64);
    if let Some(r) = delta.success_rate() {
        out.insert("successRate", r);
    }
    if let Some(r) = delta.error_rate() {
        out.insert("errorRate", r);
    }
    for (name, q) in [("p50Ms", 0.5), ("p90Ms", 0.9), ("p99Ms", 0.99)] {
        if let Some(v) = delta.quantile_ms(q) {
            out.insert(name, v);
        }
    }
    out
}

/// Judges one interval's figures: failed if the failure condition holds or the success
/// condition does not; inconclusive with fewer than `min_requests` requests or a figure
/// missing.
pub fn judge(def: &MetricDef, delta: &RevisionFigures, interval_ms: u64) -> (Outcome, String) {
    let f = figures(delta, interval_ms);
    let mut shown: Vec<String> = f.iter().map(|(k, v)| format!("{k}={}", round3(*v))).collect();
    shown.sort();
    let value = shown.join(" ");
    if delta.requests < def.min_requests {
        return (Outcome::Inconclusive, value);
    }
    let get = |name: &str| f.get(name).copied();
    if let Some(fail) = &def.failure
        && fail.eval(&get) == Some(true)
    {
        return (Outcome::Failed, value);
    }
    let outcome = match def.success.as_ref().map(|c| c.eval(&get)) {
        Some(Some(true)) | None => Outcome::Successful,
        Some(Some(false)) => Outcome::Failed,
        Some(None) => Outcome::Inconclusive,
    };
    (outcome, value)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Takes the due measurements of `progress`'s runs: `now_figures` are the canary revision's
/// cumulative figures summed over the fleet now; `baselines` (by run name) hold the figures
/// at the start of each run's interval. A run without a baseline (a new coordinator) starts
/// its interval now. Returns whether a measurement was recorded.
pub fn measure(
    progress: &mut Progress,
    metrics: &BTreeMap<String, MetricDef>,
    now_figures: &RevisionFigures,
    baselines: &mut HashMap<String, RevisionFigures>,
    now_ms: u64,
) -> bool {
    let mut recorded = false;
    for run in progress.runs.iter_mut() {
        let name = run.metric.name.clone();
        let Some(base) = baselines.get(&name) else {
            baselines.insert(name, now_figures.clone());
            run.next_ms = run.next_ms.max(now_ms + run.metric.interval_ms);
            continue;
        };
        if !run.due(now_ms) {
            continue;
        }
        let delta = now_figures.delta(base);
        let (outcome, value) = match metrics.get(&name) {
            Some(def) => judge(def, &delta, run.metric.interval_ms),
            None => (Outcome::Inconclusive, "the metric's template is gone".to_string()),
        };
        run.record(outcome, value, now_ms);
        baselines.insert(name, now_figures.clone());
        recorded = true;
    }
    let live: Vec<&str> = progress.runs.iter().map(|r| r.metric.name.as_str()).collect();
    baselines.retain(|k, _| live.contains(&k.as_str()));
    recorded
}

/// How one Service's requests go between a Rollout's revisions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Only replicas of this revision (canary/stable/active/preview Services).
    pub only: Option<String>,
    /// The canary revision and its weight in permille (every other Service that selects the
    /// Rollout's pods, during a canary).
    pub split: Option<(String, u32)>,
}

/// The traffic rules of every Service a Rollout touches: its named Services take one
/// revision; any other Service of its namespace that selects its pods takes the canary's
/// weight. `services` are (key, selector) of every Service.
pub fn traffic<'a>(
    rollouts: impl IntoIterator<Item = (&'a ObjectKey, &'a ProgressiveInfo, Option<&'a Progress>)>,
    services: &[(ObjectKey, &BTreeMap<String, String>)],
) -> HashMap<ObjectKey, Traffic> {
    let mut out = HashMap::new();
    for (key, info, recorded) in rollouts {
        let progress = recorded.unwrap_or(&info.progress);
        let stable = if progress.stable.is_empty() { info.spec.template_hash.clone() } else { progress.stable.clone() };
        let canary = progress.canary.clone();
        let named = |name: &Option<String>| {
            name.as_ref().map(|n| ObjectKey::new(crate::manifest::Kind::Service, key.namespace.clone(), n.clone()))
        };
        let s = &info.services;
        let mut explicit = Vec::new();
        match &info.spec.strategy {
            Progressive::Canary { .. } => {
                explicit.push((named(&s.canary), canary.clone().unwrap_or_else(|| stable.clone())));
                explicit.push((named(&s.stable), stable.clone()));
            }
            Progressive::BlueGreen { .. } => {
                explicit.push((named(&s.active), stable.clone()));
                explicit.push((named(&s.preview), canary.clone().unwrap_or_else(|| stable.clone())));
            }
        }
        let mut taken = Vec::new();
        for (svc, revision) in explicit {
            if let Some(svc) = svc {
                taken.push(svc.clone());
                out.insert(svc, Traffic { only: Some(revision), split: None });
            }
        }
        let Some(split) = progress.split().map(|(c, w)| (c.to_string(), w)) else { continue };
        if !matches!(info.spec.strategy, Progressive::Canary { .. }) {
            continue;
        }
        for (svc, selector) in services {
            if svc.namespace == key.namespace
                && !taken.contains(svc)
                && crate::manifest::selector_matches(selector, &info.labels)
            {
                out.insert(svc.clone(), Traffic { only: None, split: Some(split.clone()) });
            }
        }
    }
    out
}
