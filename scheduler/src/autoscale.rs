//! Horizontal autoscaling: Kubernetes' HorizontalPodAutoscaler (`autoscaling/v2`) as pure
//! functions.
//!
//! [`replicas_for_metric`] is the replica calculator (`replica_calculator.go`): the ratio of
//! the current metric to its target, scaled by the replicas that reported, with Kubernetes'
//! rules for replicas that are not ready or have no metric; [`decide`] is one sync of the
//! controller (`horizontal.go`): the highest proposal over the metrics, the bounds, the
//! stabilization windows and the scaling policies, with the conditions `AbleToScale`,
//! `ScalingActive` and `ScalingLimited` in Kubernetes' words. The history the windows and
//! policies need ([`History`]) is an input and an output, so whichever node computes the
//! next sync continues exactly where the last one stopped.

use serde::{Deserialize, Serialize};

/// Kubernetes' default tolerance: no scaling while the ratio is within 10 % of 1.
pub const TOLERANCE: f64 = 0.1;

/// What a metric aims at.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Target {
    /// A resource's use as a percentage of the replicas' requests (`averageUtilization`).
    Utilization(u32),
    /// A value per replica (`averageValue`), in the metric's unit.
    AverageValue(f64),
}

/// One metric of an autoscaler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricSpec {
    /// `cpu`, `memory`, `requests_per_second`, `concurrency`.
    pub name: String,
    pub target: Target,
    /// Readiness matters (Kubernetes: CPU only): a replica that is not ready counts as 0 on a
    /// scale-up and is left out otherwise.
    pub readiness_matters: bool,
}

/// One replica, as one metric sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Not running yet (starting): left out, as Kubernetes leaves out pending pods.
    pub pending: bool,
    pub ready: bool,
    /// Its value, if it reported one (cpu in millicores, memory in bytes, requests per
    /// second, requests in flight).
    pub value: Option<f64>,
    /// Its request of the resource, for a utilization target.
    pub request: Option<f64>,
}

/// A metric's proposal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Proposal {
    pub replicas: u32,
    /// The current value as `kubectl get hpa` shows it: utilization in percent, or the
    /// average value.
    pub current: f64,
}

/// Why a metric could not be computed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    #[error("no replicas to measure")]
    NoReplicas,
    #[error("did not receive metrics for any ready replica")]
    NoMetrics,
    #[error("missing request for {0}")]
    MissingRequest(String),
}

/// The replicas one metric asks for, with `current` replicas (Kubernetes'
/// `GetResourceReplicas` / `GetMetricReplicas`).
pub fn replicas_for_metric(spec: &MetricSpec, current: u32, samples: &[Sample]) -> Result<Proposal, MetricError> {
    if samples.is_empty() {
        return Err(MetricError::NoReplicas);
    }
    let utilization = matches!(spec.target, Target::Utilization(_));
    // Ready replicas with a value; the unready (when readiness matters) and the missing apart.
    let mut metrics: Vec<(f64, f64)> = Vec::new();
    let mut unready = Vec::new();
    let mut missing = Vec::new();
    for s in samples.iter().filter(|s| !s.pending) {
        let request = s.request.unwrap_or(0.0);
        if utilization && s.request.is_none_or(|r| r <= 0.0) {
            return Err(MetricError::MissingRequest(spec.name.clone()));
        }
        match s.value {
            None => missing.push(request),
            Some(_) if spec.readiness_matters && !s.ready => unready.push(request),
            Some(v) => metrics.push((v, request)),
        }
    }
    if metrics.is_empty() {
        return Err(MetricError::NoMetrics);
    }
    let ready = metrics.len();
    let ratio_of = |m: &[(f64, f64)]| -> (f64, f64) {
        match spec.target {
            Target::Utilization(t) => {
                let used: f64 = m.iter().map(|(v, _)| v).sum();
                let requested: f64 = m.iter().map(|(_, r)| r).sum();
                let u = used * 100.0 / requested;
                (u / f64::from(t.max(1)), u)
            }
            Target::AverageValue(t) => {
                let avg = m.iter().map(|(v, _)| v).sum::<f64>() / m.len() as f64;
                (avg / t.max(f64::MIN_POSITIVE), avg)
            }
        }
    };
    let (ratio, shown) = ratio_of(&metrics);
    let rebalance_unready = !unready.is_empty() && ratio > 1.0;
    if !rebalance_unready && missing.is_empty() {
        if (1.0 - ratio).abs() <= TOLERANCE {
            return Ok(Proposal { replicas: current, current: shown });
        }
        return Ok(Proposal { replicas: ceil(ratio * ready as f64), current: shown });
    }
    // Missing replicas count as using their full request (or the target, when higher) on a
    // scale-down and nothing on a scale-up; unready ones as nothing on a scale-up.
    if ratio < 1.0 {
        for r in &missing {
            let v = match spec.target {
                Target::Utilization(t) => r * f64::from(t.max(100)) / 100.0,
                Target::AverageValue(t) => t,
            };
            metrics.push((v, *r));
        }
    } else if ratio > 1.0 {
        metrics.extend(missing.iter().map(|r| (0.0, *r)));
    }
    if rebalance_unready {
        metrics.extend(unready.iter().map(|r| (0.0, *r)));
    }
    let (new_ratio, _) = ratio_of(&metrics);
    if (1.0 - new_ratio).abs() <= TOLERANCE || (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0) {
        return Ok(Proposal { replicas: current, current: shown });
    }
    let replicas = ceil(new_ratio * metrics.len() as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(Proposal { replicas: current, current: shown });
    }
    Ok(Proposal { replicas, current: shown })
}

fn ceil(v: f64) -> u32 {
    let c = v.ceil();
    if c <= 0.0 {
        0
    } else if c >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        c as u32
    }
}

/// `behavior.scaleUp.policies[].type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyKind {
    Pods,
    Percent,
}

/// One scaling policy: at most `value` pods (or percent) per `period_s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: u32,
    pub period_s: u32,
}

/// `selectPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Select {
    /// The policy allowing the largest change.
    #[default]
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// `behavior.scaleUp` or `behavior.scaleDown`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    pub stabilization_s: u32,
    pub select: Select,
    pub policies: Vec<Policy>,
}

impl Rules {
    /// Kubernetes' scale-up defaults: no window; 4 pods or 100 % per 15 s, the larger.
    pub fn default_up() -> Rules {
        Rules {
            stabilization_s: 0,
            select: Select::Max,
            policies: vec![
                Policy { kind: PolicyKind::Pods, value: 4, period_s: 15 },
                Policy { kind: PolicyKind::Percent, value: 100, period_s: 15 },
            ],
        }
    }

    /// Kubernetes' scale-down defaults: a 300 s window; 100 % per 15 s.
    pub fn default_down() -> Rules {
        Rules {
            stabilization_s: 300,
            select: Select::Max,
            policies: vec![Policy { kind: PolicyKind::Percent, value: 100, period_s: 15 }],
        }
    }

    fn longest_period_ms(&self) -> u64 {
        self.policies.iter().map(|p| u64::from(p.period_s) * 1000).max().unwrap_or(0)
    }
}

/// What an autoscaler asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub min: u32,
    pub max: u32,
    pub metrics: Vec<MetricSpec>,
    pub up: Rules,
    pub down: Rules,
}

/// A recommendation, or a scaling event, at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped {
    pub at_ms: u64,
    pub value: u32,
}

/// What the stabilization windows and the policies remember between syncs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Recent unstabilized recommendations.
    pub recommendations: Vec<Stamped>,
    /// Recent scale-ups and scale-downs (replicas added or removed).
    pub ups: Vec<Stamped>,
    pub downs: Vec<Stamped>,
}

/// `AbleToScale`, `ScalingActive`, `ScalingLimited`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConditionType {
    AbleToScale,
    ScalingActive,
    ScalingLimited,
}

/// One condition, as `describe hpa` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: ConditionType,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// What one metric measured, for `get hpa` (None: could not be computed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricStatus {
    pub name: String,
    pub current: Option<f64>,
    pub target: Target,
}

/// The outcome of one sync.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The replicas the target should have.
    pub replicas: u32,
    pub conditions: Vec<Condition>,
    pub metrics: Vec<MetricStatus>,
    /// Why the size changed (Kubernetes' event: `New size: 4; reason: cpu resource
    /// utilization (percentage of request) above target`); None if it did not.
    pub reason: Option<String>,
}

/// One sync of the controller: the replicas for `current` replicas whose metrics are
/// `samples` (per metric, in `spec.metrics` order), updating `history` at `now_ms`.
pub fn decide(spec: &Spec, current: u32, samples: &[Vec<Sample>], history: &mut History, now_ms: u64) -> Decision {
    let mut conditions = Vec::new();
    let mut statuses: Vec<MetricStatus> =
        spec.metrics.iter().map(|m| MetricStatus { name: m.name.clone(), current: None, target: m.target }).collect();
    let finish = |replicas: u32, mut conditions: Vec<Condition>, metrics, reason| {
        conditions.sort_by_key(|c| c.type_);
        Decision { replicas, conditions, metrics, reason }
    };
    if current == 0 && spec.min == 0 {
        set(
            &mut conditions,
            ConditionType::ScalingActive,
            false,
            "ScaledToZero",
            "the target is scaled to zero: a request for it activates it".into(),
        );
        return finish(0, conditions, statuses, None);
    }
    if current == 0 && spec.min > 0 {
        set(
            &mut conditions,
            ConditionType::ScalingActive,
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
        );
        return finish(0, conditions, statuses, None);
    }
    let (desired, reason) = if current > spec.max {
        (spec.max, "Current number of replicas above Spec.MaxReplicas".to_string())
    } else if current < spec.min {
        (spec.min, "Current number of replicas below Spec.MinReplicas".to_string())
    } else {
        // The highest proposal over the metrics.
        let mut best: Option<(u32, &str)> = None;
        let mut invalid = Vec::new();
        for (i, m) in spec.metrics.iter().enumerate() {
            match replicas_for_metric(m, current, samples.get(i).map(Vec::as_slice).unwrap_or_default()) {
                Ok(p) => {
                    statuses[i].current = Some(p.current);
                    if best.is_none_or(|(r, _)| p.replicas > r) {
                        best = Some((p.replicas, &m.name));
                    }
                }
                Err(e) => invalid.push((m, e)),
            }
        }
        let all_invalid = invalid.len() >= spec.metrics.len();
        let some_invalid_down = !invalid.is_empty() && best.is_some_and(|(r, _)| r < current);
        if all_invalid || some_invalid_down {
            if let Some((m, e)) = invalid.first() {
                let reason = if m.name == "cpu" || m.name == "memory" {
                    "FailedGetResourceMetric"
                } else {
                    "FailedGetPodsMetric"
                };
                set(
                    &mut conditions,
                    ConditionType::ScalingActive,
                    false,
                    reason,
                    format!("the HPA was unable to compute the replica count: {e} ({})", m.name),
                );
            }
            set(
                &mut conditions,
                ConditionType::AbleToScale,
                true,
                "SucceededGetScale",
                "the HPA controller was able to get the target's current scale".into(),
            );
            return finish(current, conditions, statuses, None);
        }
        let (proposal, metric) = best.unwrap_or((current, ""));
        set(
            &mut conditions,
            ConditionType::ScalingActive,
            true,
            "ValidMetricFound",
            format!("the HPA was able to successfully calculate a replica count from {}", described(metric)),
        );
        let reason = if proposal > current {
            format!("{} above target", described(metric))
        } else {
            "All metrics below target".to_string()
        };
        let stabilized = stabilize(spec, current, proposal, history, now_ms);
        if stabilized != proposal {
            let (r, m) = if proposal >= current {
                (
                    "ScaleUpStabilized",
                    "recent recommendations were lower than current one, applying the lowest recent recommendation",
                )
            } else {
                (
                    "ScaleDownStabilized",
                    "recent recommendations were higher than current one, applying the highest recent recommendation",
                )
            };
            set(&mut conditions, ConditionType::AbleToScale, true, r, m.into());
        } else {
            set(
                &mut conditions,
                ConditionType::AbleToScale,
                true,
                "ReadyForNewScale",
                "recommended size matches current size".into(),
            );
        }
        let (limited, why, message) = rate_limit(spec, current, stabilized, history, now_ms);
        set(&mut conditions, ConditionType::ScalingLimited, limited != stabilized, why, message.into());
        (limited, reason)
    };
    if desired == current {
        return finish(current, conditions, statuses, None);
    }
    record_event(spec, history, current, desired, now_ms);
    if !conditions.iter().any(|c| c.type_ == ConditionType::AbleToScale) {
        set(
            &mut conditions,
            ConditionType::AbleToScale,
            true,
            "SucceededRescale",
            format!("the HPA controller was able to update the target scale to {desired}"),
        );
    }
    finish(desired, conditions, statuses, Some(format!("New size: {desired}; reason: {reason}")))
}

/// Sets condition `t` (one of each type).
fn set(conditions: &mut Vec<Condition>, t: ConditionType, status: bool, reason: &str, message: String) {
    conditions.retain(|c| c.type_ != t);
    conditions.push(Condition { type_: t, status, reason: reason.into(), message });
}

/// A metric as Kubernetes names it in reasons.
fn described(metric: &str) -> String {
    match metric {
        "cpu" | "memory" => format!("{metric} resource utilization (percentage of request)"),
        "" => "its metrics".into(),
        other => format!("pods metric {other}"),
    }
}

/// Kubernetes' `stabilizeRecommendationWithBehaviors`: the lowest recommendation of the
/// scale-up window and the highest of the scale-down window bound the change; the
/// recommendation is remembered, and those no window can see any more are forgotten.
fn stabilize(spec: &Spec, current: u32, desired: u32, history: &mut History, now_ms: u64) -> u32 {
    let up_cutoff = now_ms.saturating_sub(u64::from(spec.up.stabilization_s) * 1000);
    let down_cutoff = now_ms.saturating_sub(u64::from(spec.down.stabilization_s) * 1000);
    let (mut up, mut down) = (desired, desired);
    for r in &history.recommendations {
        if r.at_ms > up_cutoff {
            up = up.min(r.value);
        }
        if r.at_ms > down_cutoff {
            down = down.max(r.value);
        }
    }
    let recommendation = current.max(up).min(down);
    // Kubernetes keeps one recommendation per sync; a window only needs the latest time each
    // value was recommended, so a run of equal ones is one entry (its latest time).
    match history.recommendations.last_mut() {
        Some(last) if last.value == desired => last.at_ms = now_ms,
        _ => history.recommendations.push(Stamped { at_ms: now_ms, value: desired }),
    }
    let keep = up_cutoff.min(down_cutoff);
    history.recommendations.retain(|r| r.at_ms > keep || r.at_ms == now_ms);
    recommendation
}

/// Replicas added (or removed) by the events of the last `period_ms`.
fn changed_within(events: &[Stamped], period_ms: u64, now_ms: u64) -> u32 {
    let cutoff = now_ms.saturating_sub(period_ms);
    events.iter().filter(|e| e.at_ms > cutoff).map(|e| e.value).sum()
}

/// Kubernetes' `convertDesiredReplicasWithBehaviorRate`: the policies and the bounds, with
/// the `ScalingLimited` reason and message.
fn rate_limit(
    spec: &Spec,
    current: u32,
    desired: u32,
    history: &History,
    now_ms: u64,
) -> (u32, &'static str, &'static str) {
    let start = |p: &Policy| {
        let period = u64::from(p.period_s) * 1000;
        let added = changed_within(&history.ups, period, now_ms);
        let removed = changed_within(&history.downs, period, now_ms);
        (i64::from(current) - i64::from(added) + i64::from(removed)).max(0)
    };
    if desired > current {
        let limit = match spec.up.select {
            Select::Disabled => i64::from(current),
            select => {
                let proposals = spec.up.policies.iter().map(|p| match p.kind {
                    PolicyKind::Pods => start(p) + i64::from(p.value),
                    PolicyKind::Percent => (start(p) as f64 * (1.0 + f64::from(p.value) / 100.0)).ceil() as i64,
                });
                match select {
                    Select::Min => proposals.min(),
                    _ => proposals.max(),
                }
                .unwrap_or(i64::from(current))
            }
        };
        let limit = u32::try_from(limit.max(i64::from(current))).unwrap_or(u32::MAX);
        let (allowed, why, message) = if spec.max > limit {
            (limit, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
        } else {
            (spec.max, "TooManyReplicas", "the desired replica count is more than the maximum replica count")
        };
        if desired > allowed {
            return (allowed, why, message);
        }
    } else if desired < current {
        let limit = match spec.down.select {
            Select::Disabled => i64::from(current),
            select => {
                let proposals = spec.down.policies.iter().map(|p| match p.kind {
                    PolicyKind::Pods => start(p) - i64::from(p.value),
                    PolicyKind::Percent => (start(p) as f64 * (1.0 - f64::from(p.value) / 100.0)) as i64,
                });
                // The largest change is the lowest count.
                match select {
                    Select::Min => proposals.max(),
                    _ => proposals.min(),
                }
                .unwrap_or(i64::from(current))
            }
        };
        let limit = u32::try_from(limit.clamp(0, i64::from(current))).unwrap_or(0);
        let (allowed, why, message) = if spec.min < limit {
            (limit, "ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate")
        } else {
            (spec.min, "TooFewReplicas", "the desired replica count is less than the minimum replica count")
        };
        if desired < allowed {
            return (allowed, why, message);
        }
    }
    (desired, "DesiredWithinRange", "the desired count is within the acceptable range")
}

/// Remembers a scaling event for the policies (replacing one older than the longest period).
pub fn record_event(spec: &Spec, history: &mut History, from: u32, to: u32, now_ms: u64) {
    let (events, rules, change) = if to > from {
        (&mut history.ups, &spec.up, to - from)
    } else if to < from {
        (&mut history.downs, &spec.down, from - to)
    } else {
        return;
    };
    let cutoff = now_ms.saturating_sub(rules.longest_period_ms());
    events.retain(|e| e.at_ms > cutoff);
    events.push(Stamped { at_ms: now_ms, value: change });
}

#[cfg(test)]
mod tests;
