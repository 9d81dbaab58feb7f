//! Checks on a [`HorizontalPodAutoscaler`]: its bounds, its target's kind, each metric (built
//! in ones only) and its scaling behavior. Whether the target exists is checked at apply,
//! against the stored objects and the rest of the file (`control`).

use super::super::autoscaling::{HorizontalPodAutoscaler, HpaPolicy, ScalingRules, metric_spec};
use super::super::locate::{join_index, join_key};
use super::{Issues, MAX_REPLICAS, dns_label};

pub(super) fn hpa(h: &HorizontalPodAutoscaler, out: &mut Issues) {
    let spec = &h.spec;
    let target = &spec.scale_target_ref;
    match (target.kind.as_str(), target.api_version.as_deref()) {
        ("Deployment", None | Some("apps/v1")) | ("Rollout", None | Some("argoproj.io/v1alpha1")) => {}
        ("Deployment" | "Rollout", Some(v)) => out.push(
            "spec.scaleTargetRef.apiVersion",
            format!(
                "{v:?} does not serve kind {}: expected {}",
                target.kind,
                if target.kind == "Deployment" { "apps/v1" } else { "argoproj.io/v1alpha1" }
            ),
        ),
        (other, _) => out.push(
            "spec.scaleTargetRef.kind",
            format!("cannot scale kind {other:?}: an autoscaler scales a Deployment or a Rollout"),
        ),
    }
    if let Err(e) = dns_label(&target.name) {
        out.push("spec.scaleTargetRef.name", e);
    }
    if spec.max_replicas == 0 {
        out.push("spec.maxReplicas", "must be at least 1");
    } else if spec.max_replicas > MAX_REPLICAS {
        out.push("spec.maxReplicas", format!("must be at most {MAX_REPLICAS} (got {})", spec.max_replicas));
    }
    if let Some(min) = spec.min_replicas
        && spec.max_replicas < min
    {
        out.push("spec.maxReplicas", format!("must be at least minReplicas ({min}), got {}", spec.max_replicas));
    }
    for (i, m) in spec.metrics.iter().enumerate() {
        let base = join_index("spec.metrics", i);
        if let Err((field, e)) = metric_spec(m) {
            out.push(field.split('.').fold(base, |path, part| join_key(&path, part)), e);
        }
    }
    if let Some(b) = &spec.behavior {
        for (field, rules) in [("scaleUp", &b.scale_up), ("scaleDown", &b.scale_down)] {
            if let Some(r) = rules {
                scaling_rules(&join_key("spec.behavior", field), r, out);
            }
        }
    }
}

fn scaling_rules(base: &str, r: &ScalingRules, out: &mut Issues) {
    if let Some(s) = r.stabilization_window_seconds
        && !(0..=3600).contains(&s)
    {
        out.push(join_key(base, "stabilizationWindowSeconds"), format!("must be between 0 and 3600 (got {s})"));
    }
    if let Some(p) = &r.select_policy
        && !matches!(p.as_str(), "Max" | "Min" | "Disabled")
    {
        out.push(join_key(base, "selectPolicy"), format!("unknown policy {p:?}: expected Max, Min or Disabled"));
    }
    out.unsupported(base, "tolerance", &r.tolerance, "the tolerance is Kubernetes' default, 10 %");
    for (i, p) in r.policies.iter().flatten().enumerate() {
        policy(&join_index(&join_key(base, "policies"), i), p, out);
    }
    if r.policies.as_ref().is_some_and(Vec::is_empty) && r.select_policy.as_deref() != Some("Disabled") {
        out.push(join_key(base, "policies"), "must not be empty (use selectPolicy: Disabled to turn scaling off)");
    }
}

fn policy(base: &str, p: &HpaPolicy, out: &mut Issues) {
    if !matches!(p.type_.as_str(), "Pods" | "Percent") {
        out.push(join_key(base, "type"), format!("unknown policy type {:?}: expected Pods or Percent", p.type_));
    }
    if p.value <= 0 {
        out.push(join_key(base, "value"), format!("must be greater than 0 (got {})", p.value));
    }
    if !(1..=1800).contains(&p.period_seconds) {
        out.push(join_key(base, "periodSeconds"), format!("must be between 1 and 1800 (got {})", p.period_seconds));
    }
}
