//! Argo Rollouts' kinds (`argoproj.io/v1alpha1`): [`Rollout`], a Deployment that moves to a new
//! template by canary steps or blue-green, and [`AnalysisTemplate`], the measurements that decide
//! whether it goes on.
//!
//! The same conventions as [`types`](super::types): every struct denies unknown fields, optional
//! fields are skipped on output, `Option<serde_yaml::Value>` fields are Argo fields wasmfleet knows
//! but does not support (validation names them with a reason), and `status` is accepted and
//! dropped. Validation lives in `validate/progressive.rs`; conditions are [`Condition`]s.
//!
//! The controller reads these through accessors that apply Argo's defaults: [`RolloutSpec::replicas`],
//! [`RolloutStrategy::kind`], [`CanaryStep::kind`] → [`Step`], [`BlueGreenStrategy`]'s
//! `auto_promotion_enabled()` etc., [`Metric::interval`], [`Metric::success_condition`].
//!
//! Map: [`Rollout`] and its spec; the canary strategy, its steps and analysis references; the
//! blue-green strategy; then [`AnalysisTemplate`], its metrics and provider.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::condition::{Condition, ConditionError};
use super::quantity::parse_duration;
use super::types::{Ignored, IntOrString, LabelSelector, ObjectMeta, PodTemplateSpec};

/// `argoproj.io/v1alpha1 Rollout`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rollout {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: RolloutSpec,
    /// Written by Argo's controller; accepted and dropped.
    #[serde(default, skip_serializing)]
    pub status: Ignored,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Defaults to 1; see [`RolloutSpec::replicas`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    pub selector: LabelSelector,
    /// The same pod template as a Deployment's.
    pub template: PodTemplateSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Exactly one of `canary` and `blueGreen` (checked by validation, so a missing `strategy`
    /// gets the same message as an empty one).
    #[serde(default)]
    pub strategy: RolloutStrategy,
    // Unsupported, each named with a reason by the validator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_ref: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_at: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_window: Option<Value>,
}

impl RolloutSpec {
    /// `replicas`, defaulting to 1 as in Argo.
    pub fn replicas(&self) -> u32 {
        self.replicas.unwrap_or(1)
    }
}

/// `spec.strategy`: exactly one of `canary` and `blueGreen` on a validated Rollout.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RolloutStrategy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStrategy>,
}

/// The strategy of a Rollout, borrowed: what [`RolloutStrategy::kind`] returns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StrategyKind<'a> {
    Canary(&'a CanaryStrategy),
    BlueGreen(&'a BlueGreenStrategy),
}

impl RolloutStrategy {
    /// The one strategy; `None` when there is none or both (never on a validated Rollout).
    pub fn kind(&self) -> Option<StrategyKind<'_>> {
        match (&self.canary, &self.blue_green) {
            (Some(c), None) => Some(StrategyKind::Canary(c)),
            (None, Some(b)) => Some(StrategyKind::BlueGreen(b)),
            _ => None,
        }
    }
}

/// `spec.strategy.canary`: the new revision takes a growing share of traffic, step by step. The
/// gateways split traffic by weight, so none of Argo's traffic routers are needed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CanaryStrategy {
    /// A Service that should select only the canary's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_service: Option<String>,
    /// A Service that should select only the stable replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_service: Option<String>,
    /// No steps: the new revision is promoted at once (after any background analysis starts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CanaryStep>,
    /// Background analysis, running for the whole canary from `startingStep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<BackgroundAnalysis>,
    // Unsupported, each named with a reason by the validator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routing: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay_seconds: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_scale_down_delay_seconds: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_stable_scale: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_metadata: Option<Value>,
}

/// One canary step: exactly one of `setWeight`, `pause` and `analysis` on a validated Rollout.
/// Read it with [`CanaryStep::kind`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CanaryStep {
    /// Percent of traffic for the canary, 0 to 100 (signed so that validation can name a
    /// negative one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_weight: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<RolloutPause>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<RolloutAnalysis>,
    // Unsupported step kinds, each named with a reason by the validator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_canary_scale: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_header_route: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_mirror_route: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<Value>,
}

/// What a canary step does, as the controller acts on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this percent (0 to 100) of traffic to the canary.
    SetWeight(u32),
    /// Wait this long, or (`None`) until the Rollout is promoted.
    Pause(Option<Duration>),
    /// Run these AnalysisTemplates (by name, in the Rollout's namespace) and go on when they
    /// succeed.
    Analysis(Vec<String>),
}

impl CanaryStep {
    /// What the step does. `None` only for a step that validation rejects (no action or several,
    /// a weight outside 0..=100, an invalid pause duration).
    pub fn kind(&self) -> Option<Step> {
        let step = match (self.set_weight, &self.pause, &self.analysis) {
            (Some(w), None, None) => Step::SetWeight(u32::try_from(w).ok().filter(|&w| w <= 100)?),
            (None, Some(p), None) => Step::Pause(p.duration().ok()?),
            (None, None, Some(a)) => Step::Analysis(a.template_names()),
            _ => return None,
        };
        let unsupported =
            [&self.experiment, &self.set_canary_scale, &self.set_header_route, &self.set_mirror_route, &self.plugin];
        unsupported.iter().all(|v| v.is_none()).then_some(step)
    }
}

/// `pause: {}` (until promoted) or `pause: {duration: 30s}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RolloutPause {
    /// Seconds (`30`, `"30"`) or a duration with a unit (`"30s"`, `"5m"`, `"1h"`, `"1m30s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<IntOrString>,
}

impl RolloutPause {
    /// The pause's length; `None` pauses until the Rollout is promoted.
    pub fn duration(&self) -> Result<Option<Duration>, String> {
        self.duration.as_ref().map(parse_pause_duration).transpose()
    }
}

/// A pause duration as Argo takes it: an integer of seconds, a string of digits (seconds), or a
/// duration with units (see [`parse_duration`]).
pub fn parse_pause_duration(v: &IntOrString) -> Result<Duration, String> {
    match v {
        IntOrString::Int(s) => {
            u64::try_from(*s).map(Duration::from_secs).map_err(|_| format!("must not be negative (got {s})"))
        }
        IntOrString::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().map(Duration::from_secs).map_err(|_| format!("invalid duration {s:?}: too large"))
        }
        IntOrString::String(s) => parse_duration(s).map_err(|e| format!("{e}, or an integer of seconds")),
    }
}

/// `analysis` of a canary step: run these templates, and go on when they all succeed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RolloutAnalysis {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<AnalysisTemplateRef>,
    // Unsupported, each named with a reason by the validator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement_retention: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_run_metadata: Option<Value>,
}

impl RolloutAnalysis {
    /// The referenced AnalysisTemplates' names, in order.
    pub fn template_names(&self) -> Vec<String> {
        self.templates.iter().map(|t| t.template_name.clone()).collect()
    }
}

/// `spec.strategy.canary.analysis`: analysis that runs in the background from `startingStep`
/// until the canary is promoted or aborted; a failure aborts the Rollout.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackgroundAnalysis {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<AnalysisTemplateRef>,
    /// The index (from 0) of the step at which the analysis starts; see
    /// [`BackgroundAnalysis::starting_step`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_step: Option<u32>,
    // Unsupported, each named with a reason by the validator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement_retention: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_run_metadata: Option<Value>,
}

impl BackgroundAnalysis {
    /// The referenced AnalysisTemplates' names, in order.
    pub fn template_names(&self) -> Vec<String> {
        self.templates.iter().map(|t| t.template_name.clone()).collect()
    }

    /// `startingStep`, default 0 (from the first step).
    pub fn starting_step(&self) -> u32 {
        self.starting_step.unwrap_or(0)
    }
}

/// `{templateName: success-rate}`: an AnalysisTemplate in the Rollout's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnalysisTemplateRef {
    /// Required; empty only on an object that validation rejects.
    #[serde(default)]
    pub template_name: String,
    /// Unsupported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_scope: Option<Value>,
}

/// `spec.strategy.blueGreen`: the new revision runs beside the active one, reachable through
/// `previewService`, until it is promoted and `activeService` switches to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BlueGreenStrategy {
    /// The Service that sends production traffic to the active revision. Required; empty only on
    /// an object that validation rejects.
    #[serde(default)]
    pub active_service: String,
    /// A Service that sends traffic to the new revision before it is promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_service: Option<String>,
    /// Default true; see [`BlueGreenStrategy::auto_promotion_enabled`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promotion_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promotion_seconds: Option<u32>,
    /// Default 30; see [`BlueGreenStrategy::scale_down_delay`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay_seconds: Option<u32>,
    /// Replicas of the new revision before promotion; default all of `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_replica_count: Option<u32>,
    // Unsupported, each named with a reason by the validator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_metadata: Option<Value>,
}

impl BlueGreenStrategy {
    /// `autoPromotionEnabled`, default true: promote as soon as the new revision is ready (or
    /// after `autoPromotionSeconds`). When false, wait to be promoted.
    pub fn auto_promotion_enabled(&self) -> bool {
        self.auto_promotion_enabled.unwrap_or(true)
    }

    /// `autoPromotionSeconds`: promote this long after the new revision is ready.
    pub fn auto_promotion_after(&self) -> Option<Duration> {
        self.auto_promotion_seconds.map(|s| Duration::from_secs(u64::from(s)))
    }

    /// `scaleDownDelaySeconds`, default 30: how long the old revision keeps running after
    /// `activeService` has switched away from it.
    pub fn scale_down_delay(&self) -> Duration {
        Duration::from_secs(u64::from(self.scale_down_delay_seconds.unwrap_or(30)))
    }

    /// `previewReplicaCount`, or all of `replicas` when absent.
    pub fn preview_replicas(&self, replicas: u32) -> u32 {
        self.preview_replica_count.unwrap_or(replicas)
    }
}

/// `argoproj.io/v1alpha1 AnalysisTemplate`, measured by the gateways themselves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnalysisTemplate {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: AnalysisTemplateSpec,
    #[serde(default, skip_serializing)]
    pub status: Ignored,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnalysisTemplateSpec {
    /// At least one on a validated template; the analysis succeeds when every metric does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    // Unsupported, each named with a reason by the validator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement_retention: Option<Value>,
}

/// One metric: `count` measurements, `interval` apart, each judged by the conditions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metric {
    /// Required and unique within the template; empty only on an object that validation rejects.
    #[serde(default)]
    pub name: String,
    /// A duration such as `"5s"`; default 10s. See [`Metric::interval`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Measurements taken; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Default 0: more failed measurements than this fail the analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<u32>,
    /// Default 0: more inconclusive measurements than this make the analysis inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_limit: Option<u32>,
    /// A [`Condition`], kept as written; see [`Metric::success_condition`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_condition: Option<String>,
    /// A [`Condition`], kept as written; see [`Metric::failure_condition`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<String>,
    /// `{wasmfleet: {}}` on a validated template.
    #[serde(default)]
    pub provider: MetricProvider,
    // Unsupported, each named with a reason by the validator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_error_limit: Option<Value>,
}

impl Metric {
    /// `interval`, default 10s. An invalid one (rejected by validation) also gives 10s.
    pub fn interval(&self) -> Duration {
        self.interval.as_deref().and_then(|s| parse_duration(s).ok()).unwrap_or(Duration::from_secs(10))
    }

    /// `count`, default 1.
    pub fn count(&self) -> u32 {
        self.count.unwrap_or(1)
    }

    /// `failureLimit`, default 0.
    pub fn failure_limit(&self) -> u32 {
        self.failure_limit.unwrap_or(0)
    }

    /// `inconclusiveLimit`, default 0.
    pub fn inconclusive_limit(&self) -> u32 {
        self.inconclusive_limit.unwrap_or(0)
    }

    /// `successCondition`, parsed: a measurement succeeds when it holds. `Ok(None)` when absent;
    /// an error only on a template that validation rejects.
    pub fn success_condition(&self) -> Result<Option<Condition>, ConditionError> {
        self.success_condition.as_deref().map(Condition::parse).transpose()
    }

    /// `failureCondition`, parsed: a measurement fails when it holds (checked before
    /// `successCondition`).
    pub fn failure_condition(&self) -> Result<Option<Condition>, ConditionError> {
        self.failure_condition.as_deref().map(Condition::parse).transpose()
    }

    /// `provider.wasmfleet.minRequests`, default 10: an interval with fewer requests is
    /// inconclusive.
    pub fn min_requests(&self) -> u32 {
        self.provider.wasmfleet.as_ref().map_or(DEFAULT_MIN_REQUESTS, WasmfleetMetric::min_requests)
    }
}

const DEFAULT_MIN_REQUESTS: u32 = 10;

/// `provider`: where a metric's figures come from. Only the built-in `wasmfleet` provider is
/// supported; Argo's others are declared so that validation can say so.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasmfleet: Option<WasmfleetMetric>,
    // Unsupported providers, each named by the validator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datadog: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_relic: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wavefront: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kayenta: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_watch: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphite: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub influxdb: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skywalking: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<Value>,
}

impl MetricProvider {
    /// Argo's providers that wasmfleet does not have, by field name, with their values.
    pub(crate) fn others(&self) -> [(&'static str, &Option<Value>); 12] {
        [
            ("prometheus", &self.prometheus),
            ("web", &self.web),
            ("job", &self.job),
            ("datadog", &self.datadog),
            ("newRelic", &self.new_relic),
            ("wavefront", &self.wavefront),
            ("kayenta", &self.kayenta),
            ("cloudWatch", &self.cloud_watch),
            ("graphite", &self.graphite),
            ("influxdb", &self.influxdb),
            ("skywalking", &self.skywalking),
            ("plugin", &self.plugin),
        ]
    }
}

/// `provider.wasmfleet`: the gateways' figures for the revision under analysis.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WasmfleetMetric {
    /// Default 10: an interval with fewer requests is inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
}

impl WasmfleetMetric {
    /// `minRequests`, default 10.
    pub fn min_requests(&self) -> u32 {
        self.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_durations() {
        let d = |v: IntOrString| parse_pause_duration(&v);
        assert_eq!(d(IntOrString::Int(30)), Ok(Duration::from_secs(30)));
        assert_eq!(d(IntOrString::String("30".into())), Ok(Duration::from_secs(30)));
        assert_eq!(d(IntOrString::String("30s".into())), Ok(Duration::from_secs(30)));
        assert_eq!(d(IntOrString::String("5m".into())), Ok(Duration::from_secs(300)));
        assert_eq!(d(IntOrString::String("1h".into())), Ok(Duration::from_secs(3600)));
        assert_eq!(d(IntOrString::String("1m30s".into())), Ok(Duration::from_secs(90)));
        assert_eq!(d(IntOrString::Int(-1)), Err("must not be negative (got -1)".into()));
        assert_eq!(
            d(IntOrString::String("soon".into())),
            Err(
                "invalid duration \"soon\": expected a number with a unit ms, s, m or h (\"500ms\", \"10s\", \"2m\"), \
                 or an integer of seconds"
                    .into()
            )
        );
        assert!(d(IntOrString::String("".into())).is_err());
        assert_eq!(RolloutPause { duration: None }.duration(), Ok(None));
    }

    #[test]
    fn step_kinds() {
        let weight = |w| CanaryStep { set_weight: Some(w), ..CanaryStep::default() };
        assert_eq!(weight(10).kind(), Some(Step::SetWeight(10)));
        assert_eq!(weight(0).kind(), Some(Step::SetWeight(0)));
        assert_eq!(weight(100).kind(), Some(Step::SetWeight(100)));
        assert_eq!(weight(101).kind(), None);
        assert_eq!(weight(-1).kind(), None);

        let pause =
            |d: Option<IntOrString>| CanaryStep { pause: Some(RolloutPause { duration: d }), ..CanaryStep::default() };
        assert_eq!(pause(None).kind(), Some(Step::Pause(None)));
        assert_eq!(
            pause(Some(IntOrString::String("30s".into()))).kind(),
            Some(Step::Pause(Some(Duration::from_secs(30))))
        );
        assert_eq!(pause(Some(IntOrString::String("later".into()))).kind(), None);

        let analysis = CanaryStep {
            analysis: Some(RolloutAnalysis {
                templates: vec![
                    AnalysisTemplateRef { template_name: "success-rate".into(), cluster_scope: None },
                    AnalysisTemplateRef { template_name: "latency".into(), cluster_scope: None },
                ],
                ..RolloutAnalysis::default()
            }),
            ..CanaryStep::default()
        };
        assert_eq!(analysis.kind(), Some(Step::Analysis(vec!["success-rate".into(), "latency".into()])));

        assert_eq!(CanaryStep::default().kind(), None);
        assert_eq!(CanaryStep { pause: Some(RolloutPause::default()), ..weight(10) }.kind(), None);
        assert_eq!(CanaryStep { experiment: Some(Value::Null), ..weight(10) }.kind(), None);
    }

    #[test]
    fn defaults() {
        let bg = BlueGreenStrategy::default();
        assert!(bg.auto_promotion_enabled());
        assert_eq!(bg.auto_promotion_after(), None);
        assert_eq!(bg.scale_down_delay(), Duration::from_secs(30));
        assert_eq!(bg.preview_replicas(4), 4);
        assert_eq!(RolloutSpec::default().replicas(), 1);
        assert_eq!(BackgroundAnalysis::default().starting_step(), 0);

        let m = Metric::default();
        assert_eq!(
            (m.interval(), m.count(), m.failure_limit(), m.inconclusive_limit()),
            (Duration::from_secs(10), 1, 0, 0)
        );
        assert_eq!(m.min_requests(), 10);
        assert_eq!(m.success_condition(), Ok(None));
        let m = Metric {
            interval: Some("5s".into()),
            success_condition: Some("successRate >= 0.99".into()),
            provider: MetricProvider {
                wasmfleet: Some(WasmfleetMetric { min_requests: Some(20) }),
                ..MetricProvider::default()
            },
            ..Metric::default()
        };
        assert_eq!(m.interval(), Duration::from_secs(5));
        assert_eq!(m.min_requests(), 20);
        assert_eq!(m.success_condition().map(|c| c.map(|c| c.to_string())), Ok(Some("successRate >= 0.99".into())));
    }
}
