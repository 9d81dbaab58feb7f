//! `get hpa` and `describe hpa`, as kubectl prints them.

use crate::control::api::ObjectView;
use crate::reconcile::autoscale::AutoscaleView;

use super::print::age_at;

/// `kubectl get hpa`: NAME, REFERENCE, TARGETS, MINPODS, MAXPODS, REPLICAS, AGE.
pub(super) fn table(objs: &[ObjectView], now_ms: u64) -> Vec<Vec<String>> {
    objs.iter()
        .map(|o| {
            let v = o.status.autoscale.clone().unwrap_or_default();
            let (reference, min, max) = match o.status.autoscale.as_ref() {
                Some(v) => (v.reference.clone(), v.min_replicas.to_string(), v.max_replicas.to_string()),
                None => {
                    let s = |p: &str| {
                        o.object.pointer(p).map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()))
                    };
                    let reference = format!(
                        "{}/{}",
                        s("/spec/scaleTargetRef/kind").unwrap_or_default(),
                        s("/spec/scaleTargetRef/name").unwrap_or_default()
                    );
                    (
                        reference,
                        s("/spec/minReplicas").unwrap_or_else(|| "1".into()),
                        s("/spec/maxReplicas").unwrap_or_default(),
                    )
                }
            };
            vec![
                o.key.name.clone(),
                reference,
                targets(&v.targets),
                min,
                max,
                if o.status.autoscale.is_some() { v.current_replicas.to_string() } else { "<unknown>".into() },
                age_at(now_ms, o.created_ms),
            ]
        })
        .collect()
}

pub(super) const HEADER: [&str; 7] = ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"];

/// `status:` as Kubernetes writes an autoscaler's (`autoscaling/v2`).
pub(super) fn status_block(v: &AutoscaleView) -> serde_json::Value {
    use wasmfleet_scheduler::autoscale::Target;
    let metrics: Vec<serde_json::Value> = v
        .metrics
        .iter()
        .filter_map(|m| {
            let current = m.current?;
            Some(match (m.name.as_str(), m.target) {
                ("cpu" | "memory", Target::Utilization(_)) => serde_json::json!({
                    "type": "Resource",
                    "resource": {"name": m.name, "current": {"averageUtilization": current.round() as i64}},
                }),
                ("cpu", _) => serde_json::json!({
                    "type": "Resource",
                    "resource": {"name": "cpu", "current": {"averageValue": format!("{}m", current.round() as i64)}},
                }),
                ("memory", _) => serde_json::json!({
                    "type": "Resource",
                    "resource": {"name": "memory", "current": {"averageValue": format!("{}", current.round() as i64)}},
                }),
                (name, _) => serde_json::json!({
                    "type": "Pods",
                    "pods": {"metric": {"name": name}, "current": {"averageValue": format!("{}", (current * 1000.0).round() / 1000.0)}},
                }),
            })
        })
        .collect();
    let conditions: Vec<serde_json::Value> = v
        .conditions
        .iter()
        .map(|c| {
            serde_json::json!({
                "type": serde_json::to_value(c.type_).unwrap_or_default(),
                "status": if c.status { "True" } else { "False" },
                "reason": c.reason,
                "message": c.message,
            })
        })
        .collect();
    let mut status = serde_json::json!({
        "currentReplicas": v.current_replicas,
        "desiredReplicas": v.desired_replicas,
        "currentMetrics": metrics,
        "conditions": conditions,
    });
    if v.last_scale_ms > 0 {
        status["lastScaleTime"] = crate::clock::rfc3339(v.last_scale_ms).into();
    }
    status
}

/// Two targets shown, the rest counted, as kubectl does.
fn targets(t: &[String]) -> String {
    match t.len() {
        0 => "<none>".into(),
        1 | 2 => t.join(", "),
        n => format!("{}, {} + {} more...", t[0], t[1], n - 2),
    }
}

/// `describe hpa`'s lines: reference, metrics, bounds, pods, conditions, events (cells end
/// with tabs; `describe` aligns them).
pub(super) fn describe(v: &AutoscaleView, now_ms: u64) -> String {
    let mut out = format!("Reference:\t{}\n", v.reference);
    out.push_str("Metrics:\t( current / target )\n");
    for t in &v.targets {
        if let Some((name, values)) = t.split_once(": ") {
            let what = if name == "cpu" || name == "memory" {
                format!("resource {name} on pods")
            } else {
                format!("\"{name}\" on pods")
            };
            out.push_str(&format!("  {what}:\t{}\n", values.replace('/', " / ")));
        }
    }
    out.push_str(&format!("Min replicas:\t{}\n", v.min_replicas));
    out.push_str(&format!("Max replicas:\t{}\n", v.max_replicas));
    let kind = v.reference.split('/').next().unwrap_or("Deployment");
    out.push_str(&format!("{kind} pods:\t{} current / {} desired\n", v.current_replicas, v.desired_replicas));
    out.push_str(&format!("Sync period:\t{} ms\n", v.sync_period_ms));
    if !v.conditions.is_empty() {
        out.push_str("Conditions:\n  Type\tStatus\tReason\tMessage\n  ----\t------\t------\t-------\n");
        for c in &v.conditions {
            let t = serde_json::to_value(c.type_).ok().and_then(|x| x.as_str().map(str::to_string)).unwrap_or_default();
            let status = if c.status { "True" } else { "False" };
            out.push_str(&format!("  {t}\t{status}\t{}\t{}\n", c.reason, c.message));
        }
    }
    if v.events.is_empty() {
        out.push_str("Events:\t<none>\n");
    } else {
        out.push_str("Events:\n  Type\tReason\tAge\tFrom\tMessage\n  ----\t------\t---\t----\t-------\n");
        for (at, message) in &v.events {
            out.push_str(&format!(
                "  Normal\tSuccessfulRescale\t{}\thorizontal-pod-autoscaler\t{message}\n",
                age_at(now_ms, *at)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use wasmfleet_scheduler::autoscale::{Condition, ConditionType};

    use super::*;
    use crate::cli::tabs::align;

    fn view() -> AutoscaleView {
        AutoscaleView {
            reference: "Deployment/web".into(),
            min_replicas: 1,
            max_replicas: 10,
            current_replicas: 3,
            desired_replicas: 4,
            targets: vec!["cpu: 45%/50%".into()],
            metrics: vec![wasmfleet_scheduler::autoscale::MetricStatus {
                name: "cpu".into(),
                current: Some(45.0),
                target: wasmfleet_scheduler::autoscale::Target::Utilization(50),
            }],
            conditions: vec![Condition {
                type_: ConditionType::AbleToScale,
                status: true,
                reason: "ReadyForNewScale".into(),
                message: "recommended size matches current size".into(),
            }],
            events: vec![(
                1_000,
                "New size: 4; reason: cpu resource utilization (percentage of request) above target".into(),
            )],
            last_scale_ms: 1_000,
            sync_period_ms: 15_000,
        }
    }

    #[test]
    fn status_as_kubernetes_writes_it() {
        let s = status_block(&view());
        assert_eq!(s["currentReplicas"], 3);
        assert_eq!(s["desiredReplicas"], 4);
        assert_eq!(s["currentMetrics"][0]["resource"]["current"]["averageUtilization"], 45);
        assert_eq!(s["conditions"][0]["type"], "AbleToScale");
        assert_eq!(s["conditions"][0]["status"], "True");
        assert_eq!(s["lastScaleTime"], "1970-01-01T00:00:01Z");
    }

    #[test]
    fn targets_as_kubectl_shows_them() {
        assert_eq!(targets(&[]), "<none>");
        assert_eq!(targets(&["cpu: 45%/50%".into(), "memory: 10%/80%".into()]), "cpu: 45%/50%, memory: 10%/80%");
        assert_eq!(targets(&["a".into(), "b".into(), "c".into()]), "a, b + 1 more...");
    }

    #[test]
    fn describe_lines() {
        let text = align(&describe(&view(), 61_000), 2);
        let want = "\
Reference:               Deployment/web
Metrics:                 ( current / target )
  resource cpu on pods:  45% / 50%
Min replicas:            1
Max replicas:            10
Deployment pods:         3 current / 4 desired
Sync period:             15000 ms
Conditions:
  Type         Status  Reason            Message
  ----         ------  ------            -------
  AbleToScale  True    ReadyForNewScale  recommended size matches current size
Events:
  Type    Reason             Age  From                       Message
  ----    ------             ---  ----                       -------
  Normal  SuccessfulRescale  60s  horizontal-pod-autoscaler  New size: 4; reason: cpu resource utilization (percentage of request) above target
";
        assert_eq!(text, want);
    }
}
