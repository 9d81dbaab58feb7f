//! `autoscaling/v2 HorizontalPodAutoscaler`, with metrics built in (no metrics server): what a
//! manifest says, and the pure spec the controller runs ([`HorizontalPodAutoscaler::spec`]).
//!
//! Metrics: `Resource` `cpu` and `memory` (utilization of the replicas' requests, or an
//! average value), and `Pods` `requests_per_second` and `concurrency` (requests in flight per
//! replica, as Knative scales), all measured by the nodes themselves. `minReplicas: 0` is
//! accepted (scale to zero; Kubernetes gates it behind a feature flag).
//! The annotation `wasmfleet.io/hpa-sync-period` (`1s`, `15s`) sets how often it is evaluated.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use wasmfleet_scheduler::autoscale::{self, MetricSpec, Policy, PolicyKind, Rules, Select, Target};

use super::object::Kind;
use super::quantity::{parse_cpu_millis, parse_duration, parse_memory_bytes, parse_quantity};
use super::types::{Ignored, ObjectMeta, Quantity};

/// How often an autoscaler is evaluated: `wasmfleet.io/hpa-sync-period` on its metadata.
pub const ANNOTATION_HPA_SYNC_PERIOD: &str = "wasmfleet.io/hpa-sync-period";

/// How long a Service's gateway holds a request while a workload scaled to zero activates
/// (on the Service's metadata): `5s` by default.
pub const ANNOTATION_ACTIVATION_TIMEOUT: &str = "wasmfleet.io/activation-timeout";
/// How many requests a Service's gateway holds at once while it activates (default 1000);
/// beyond, 503 with `Retry-After`.
pub const ANNOTATION_MAX_PENDING: &str = "wasmfleet.io/max-pending-requests";
/// The annotations a Service's own metadata may carry.
pub(crate) const SERVICE_ANNOTATIONS: [&str; 2] = [ANNOTATION_ACTIVATION_TIMEOUT, ANNOTATION_MAX_PENDING];

/// The Pods metrics every gateway measures.
pub const POD_METRICS: [&str; 2] = ["requests_per_second", "concurrency"];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HorizontalPodAutoscaler {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: HpaSpec,
    #[serde(default, skip_serializing)]
    pub status: Ignored,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HpaSpec {
    pub scale_target_ref: ScaleTargetRef,
    /// Default 1; 0 scales to zero when idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<u32>,
    pub max_replicas: u32,
    /// Default: cpu at 80 % of the requests, as Kubernetes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<HpaMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<Behavior>,
}

/// `scaleTargetRef`: a Deployment (`apps/v1`) or a Rollout (`argoproj.io/v1alpha1`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaleTargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
}

/// One entry of `metrics`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HpaMetric {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodsMetric>,
    // Not supported, each named by the validator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_resource: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceMetric {
    pub name: String,
    pub target: MetricTarget,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodsMetric {
    pub metric: MetricIdentifier,
    pub target: MetricTarget,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricIdentifier {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Value>,
}

/// `target`: `Utilization` with `averageUtilization`, or `AverageValue` with `averageValue`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricTarget {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_utilization: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_value: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Quantity>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Behavior {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRules>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRules>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScalingRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stabilization_window_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<HpaPolicy>>,
    /// Kubernetes 1.33's alpha per-direction tolerance: not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HpaPolicy {
    #[serde(rename = "type")]
    pub type_: String,
    pub value: i64,
    pub period_seconds: i64,
}

impl HorizontalPodAutoscaler {
    /// `minReplicas` (default 1).
    pub fn min_replicas(&self) -> u32 {
        self.spec.min_replicas.unwrap_or(1)
    }

    /// The target's kind, when it is one an autoscaler can scale.
    pub fn target_kind(&self) -> Option<Kind> {
        match self.spec.scale_target_ref.kind.as_str() {
            "Deployment" => Some(Kind::Deployment),
            "Rollout" => Some(Kind::Rollout),
            _ => None,
        }
    }

    /// How often it is evaluated: the annotation, else `default`.
    pub fn sync_period(&self, default: Duration) -> Duration {
        self.metadata
            .annotations
            .get(ANNOTATION_HPA_SYNC_PERIOD)
            .and_then(|v| parse_duration(v).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(default)
    }

    /// The pure spec the controller runs. A validated object converts in full; a metric that
    /// does not (only possible unvalidated) is left out.
    pub fn spec(&self) -> autoscale::Spec {
        let metrics: Vec<MetricSpec> = if self.spec.metrics.is_empty() {
            vec![MetricSpec { name: "cpu".into(), target: Target::Utilization(80), readiness_matters: true }]
        } else {
            self.spec.metrics.iter().filter_map(|m| metric_spec(m).ok()).collect()
        };
        let behavior = self.spec.behavior.as_ref();
        let up = rules(behavior.and_then(|b| b.scale_up.as_ref()), Rules::default_up());
        let down = rules(behavior.and_then(|b| b.scale_down.as_ref()), Rules::default_down());
        autoscale::Spec { min: self.min_replicas(), max: self.spec.max_replicas, metrics, up, down }
    }
}

/// One metric as the controller takes it, or why it cannot be (the field, relative to the
/// metric, and the problem).
pub fn metric_spec(m: &HpaMetric) -> Result<MetricSpec, (String, String)> {
    match m.type_.as_str() {
        "Resource" => {
            let Some(r) = &m.resource else { return Err(at(("resource", "is required for type Resource".into()))) };
            let target = match r.name.as_str() {
                "cpu" | "memory" => target(&r.target, Some(&r.name)).map_err(within("resource"))?,
                other => {
                    return Err(at((
                        "resource.name",
                        format!("unknown resource {other:?}: wasmfleet measures cpu and memory"),
                    )));
                }
            };
            Ok(MetricSpec { name: r.name.clone(), target, readiness_matters: r.name == "cpu" })
        }
        "Pods" => {
            let Some(p) = &m.pods else { return Err(at(("pods", "is required for type Pods".into()))) };
            if !POD_METRICS.contains(&p.metric.name.as_str()) {
                return Err(at((
                    "pods.metric.name",
                    format!(
                        "unknown metric {:?}: the gateways measure {} per replica",
                        p.metric.name,
                        POD_METRICS.join(" and ")
                    ),
                )));
            }
            if p.target.type_ != "AverageValue" {
                return Err(at(("pods.target.type", "must be AverageValue for a Pods metric".into())));
            }
            let target = target(&p.target, None).map_err(within("pods"))?;
            Ok(MetricSpec { name: p.metric.name.clone(), target, readiness_matters: false })
        }
        "Object" | "External" | "ContainerResource" => Err(at((
            "type",
            format!(
                "metric type {} is not supported by wasmfleet: metrics are built in (Resource cpu/memory, Pods \
                 requests_per_second/concurrency)",
                m.type_
            ),
        ))),
        other => Err(at(("type", format!("unknown metric type {other:?}: expected Resource or Pods")))),
    }
}

/// A problem at `field` of a metric.
fn at((field, e): (&str, String)) -> (String, String) {
    (field.to_string(), e)
}

/// A problem at `field` of a metric's `source` (`resource`, `pods`).
fn within(source: &'static str) -> impl Fn((&'static str, String)) -> (String, String) {
    move |(field, e)| (format!("{source}.{field}"), e)
}

/// A target; `resource` names cpu or memory (whose average values are quantities of cores or
/// bytes), None for a Pods metric (a plain number).
fn target(t: &MetricTarget, resource: Option<&String>) -> Result<Target, (&'static str, String)> {
    match t.type_.as_str() {
        "Utilization" => {
            if resource.is_none() {
                return Err(("target.type", "Utilization applies to Resource metrics only".into()));
            }
            match t.average_utilization {
                Some(u) if u > 0 => Ok(Target::Utilization(u32::try_from(u).unwrap_or(u32::MAX))),
                Some(u) => Err(("target.averageUtilization", format!("must be greater than 0 (got {u})"))),
                None => Err(("target.averageUtilization", "is required for type Utilization".into())),
            }
        }
        "AverageValue" => {
            let Some(v) = &t.average_value else {
                return Err(("target.averageValue", "is required for type AverageValue".into()));
            };
            let value = match resource.map(String::as_str) {
                Some("cpu") => parse_cpu_millis(&v.0).map(|m| m as f64),
                Some(_) => parse_memory_bytes(&v.0).map(|b| b as f64),
                None => parse_quantity(&v.0),
            }
            .map_err(|e| ("target.averageValue", e))?;
            if value <= 0.0 {
                return Err(("target.averageValue", "must be greater than 0".into()));
            }
            Ok(Target::AverageValue(value))
        }
        "Value" => Err(("target.type", "Value applies to Object and External metrics: use AverageValue".into())),
        other => Err(("target.type", format!("unknown target type {other:?}: expected Utilization or AverageValue"))),
    }
}

/// `scaleUp`/`scaleDown` with Kubernetes' defaults for what is left out.
fn rules(r: Option<&ScalingRules>, default: Rules) -> Rules {
    let Some(r) = r else { return default };
    Rules {
        stabilization_s: r
            .stabilization_window_seconds
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(default.stabilization_s),
        select: match r.select_policy.as_deref() {
            Some("Min") => Select::Min,
            Some("Disabled") => Select::Disabled,
            _ => Select::Max,
        },
        policies: match &r.policies {
            Some(p) => p
                .iter()
                .filter_map(|p| {
                    Some(Policy {
                        kind: if p.type_ == "Pods" { PolicyKind::Pods } else { PolicyKind::Percent },
                        value: u32::try_from(p.value).ok()?,
                        period_s: u32::try_from(p.period_seconds).ok()?,
                    })
                })
                .collect(),
            None => default.policies,
        },
    }
}

/// What `kubectl get hpa` shows of a target: `cpu: 45%/50%`, `requests_per_second: 12/10`.
pub fn target_text(name: &str, target: &Target, current: Option<f64>) -> String {
    let cur = |f: &dyn Fn(f64) -> String| current.map_or_else(|| "<unknown>".to_string(), f);
    match target {
        Target::Utilization(t) => format!("{name}: {}/{t}%", cur(&|v| format!("{}%", v.round() as i64))),
        Target::AverageValue(t) => {
            let show = |v: f64| match name {
                "cpu" => format!("{}m", v.round() as i64),
                "memory" => format!("{}Mi", (v / 1048576.0).round() as i64),
                _ if v.fract() == 0.0 => format!("{v}"),
                _ => format!("{:.2}", v),
            };
            format!("{name}: {}/{}", cur(&show), show(*t))
        }
    }
}

/// The annotations an HPA's own metadata may carry.
pub(crate) const HPA_ANNOTATIONS: [&str; 1] = [ANNOTATION_HPA_SYNC_PERIOD];

/// Checks one HPA or Service annotation's value.
pub(crate) fn check_annotation(key: &str, value: &str) -> Result<(), String> {
    match key {
        ANNOTATION_ACTIVATION_TIMEOUT => match parse_duration(value) {
            Ok(d) if d >= Duration::from_millis(10) && d <= Duration::from_secs(600) => Ok(()),
            Ok(_) => Err("must be between 10ms and 10m".into()),
            Err(e) => Err(e),
        },
        ANNOTATION_MAX_PENDING => match value.trim().parse::<u32>() {
            Ok(n) if n >= 1 => Ok(()),
            _ => Err(format!("invalid count {value:?}: expected a positive integer")),
        },
        ANNOTATION_HPA_SYNC_PERIOD => match parse_duration(value) {
            Ok(d) if d >= Duration::from_millis(100) => Ok(()),
            Ok(_) => Err("must be at least 100ms".into()),
            Err(e) => Err(e),
        },
        _ => Ok(()),
    }
}
