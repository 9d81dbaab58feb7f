//! A Deployment as kubectl shows it: the `get` columns, the `status:` block of `-o yaml` /
//! `-o json`, and the rollout lines of `describe`. Pure: each takes the object view and
//! returns text or JSON.

use serde_json::{Map, Value, json};
use wasmfleet_scheduler::rollout::Condition;

use crate::control::api::ObjectView;
use crate::reconcile::RolloutView;

use super::print::{age_at, format_table};
use crate::clock::rfc3339;

/// `NAME READY UP-TO-DATE AVAILABLE AGE` (`-o wide`: and `IMAGE MESSAGE`).
pub(super) fn table(objs: &[ObjectView], wide: bool, now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = objs
        .iter()
        .map(|o| {
            let st = &o.status;
            let (ready, updated, available) = match &st.rollout {
                Some(r) => (format!("{}/{}", r.counts.ready, r.replicas), r.counts.updated, r.counts.available),
                // A server that does not report rollouts: what it counts.
                None => (format!("{}/{}", st.ready, st.desired), st.ready, st.ready),
            };
            let mut row = vec![
                o.key.name.clone(),
                ready,
                updated.to_string(),
                available.to_string(),
                age_at(now_ms, o.created_ms),
            ];
            if wide {
                let image = o.object.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str);
                row.push(image.unwrap_or_default().to_string());
                row.push(st.messages.join("; "));
            }
            row
        })
        .collect();
    let mut h = vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"];
    if wide {
        h.extend(["IMAGE", "MESSAGE"]);
    }
    format_table(&h, &rows)
}

/// The object of `-o yaml` / `-o json`: a Deployment gets Kubernetes' `status:`.
pub(super) fn with_status(o: &ObjectView) -> Value {
    let mut object = o.object.clone();
    if o.key.kind == crate::manifest::Kind::Deployment
        && let Some(m) = object.as_object_mut()
    {
        let status = match &o.status.rollout {
            Some(r) => status_block(r),
            None => counts(&[("replicas", o.status.desired), ("readyReplicas", o.status.ready)]),
        };
        m.insert("status".into(), status);
    }
    if let (Some(a), Some(m)) = (&o.status.autoscale, object.as_object_mut()) {
        m.insert("status".into(), super::hpa::status_block(a));
    }
    if let (Some(v), Some(m)) = (&o.status.volume, object.as_object_mut()) {
        m.insert("status".into(), super::storage::status_block(v));
    }
    object
}

/// `status:` as Kubernetes writes a Deployment's: counts (a zero one left out, as Go's
/// `omitempty` does), `observedGeneration`, and the conditions with RFC 3339 times.
pub(super) fn status_block(r: &RolloutView) -> Value {
    let c = &r.counts;
    let mut status = counts(&[
        ("replicas", c.replicas),
        ("updatedReplicas", c.updated),
        ("readyReplicas", c.ready),
        ("availableReplicas", c.available),
        ("unavailableReplicas", c.unavailable),
    ]);
    if let Some(m) = status.as_object_mut() {
        if r.observed_generation > 0 {
            m.insert("observedGeneration".into(), r.observed_generation.into());
        }
        if !r.conditions.is_empty() {
            m.insert("conditions".into(), r.conditions.iter().map(condition).collect());
        }
    }
    status
}

fn counts(counts: &[(&str, u32)]) -> Value {
    Value::Object(
        counts.iter().filter(|(_, n)| *n > 0).map(|(k, n)| (k.to_string(), Value::from(*n))).collect::<Map<_, _>>(),
    )
}

fn condition(c: &Condition) -> Value {
    json!({
        "type": word(&c.type_),
        "status": word(&c.status),
        "lastUpdateTime": rfc3339(c.last_update_ms),
        "lastTransitionTime": rfc3339(c.last_transition_ms),
        "reason": c.reason,
        "message": c.message,
    })
}

/// A unit enum as serde writes it (`Progressing`, `True`).
fn word(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The spec lines of `describe` (cells end with tabs; `describe` aligns them):
/// `Replicas:`, `StrategyType:`, `MinReadySeconds:`, `RollingUpdateStrategy:`.
pub(super) fn describe_spec(r: &RolloutView) -> String {
    let c = &r.counts;
    let mut out = format!(
        "Replicas:\t{} desired | {} updated | {} total | {} available | {} unavailable\n",
        r.replicas, c.updated, c.replicas, c.available, c.unavailable
    );
    out.push_str(&format!("StrategyType:\t{}\n", r.strategy));
    out.push_str(&format!("MinReadySeconds:\t{}\n", r.min_ready_seconds));
    if r.strategy == "RollingUpdate" {
        let or = |spec: &str, n: u32| if spec.is_empty() { n.to_string() } else { spec.to_string() };
        out.push_str(&format!(
            "RollingUpdateStrategy:\t{} max unavailable, {} max surge\n",
            or(&r.max_unavailable_spec, r.max_unavailable),
            or(&r.max_surge_spec, r.max_surge)
        ));
    }
    out
}

/// The status lines of `describe`: `Conditions:`, `OldReplicaSets:`, `NewReplicaSet:`, and
/// wasmfleet's `Coordinator:`.
pub(super) fn describe_status(r: &RolloutView) -> String {
    let mut out = String::new();
    if !r.conditions.is_empty() {
        out.push_str("Conditions:\n  Type\tStatus\tReason\n  ----\t------\t------\n");
        for c in &r.conditions {
            out.push_str(&format!("  {} \t{}\t{}\n", word(&c.type_), word(&c.status), c.reason));
        }
    }
    let sets = |current: bool| {
        let list: Vec<String> = r
            .revisions
            .iter()
            .filter(|v| v.current == current && (current || v.replicas > 0))
            .map(|v| format!("{} ({}/{} replicas created)", v.name, v.running, v.replicas))
            .collect();
        if list.is_empty() { "<none>".to_string() } else { list.join(", ") }
    };
    out.push_str(&format!("OldReplicaSets:\t{}\n", sets(false)));
    out.push_str(&format!("NewReplicaSet:\t{}\n", sets(true)));
    if let Some(w) = &r.waves {
        let at = if w.current == 0 { String::new() } else { format!("wave {} of {}, ", w.current, w.waves.len()) };
        out.push_str(&format!("RolloutWaves:\tby node label {} ({at}{})\n", w.label, w.phase));
        out.push_str("  Wave\tReplicas\tUpdated\tOld\tAvailable\n  ----\t--------\t-------\t---\t---------\n");
        for v in &w.waves {
            out.push_str(&format!("  {}\t{}\t{}\t{}\t{}\n", v.value, v.share, v.updated, v.old, v.available));
        }
        if !w.message.is_empty() {
            out.push_str(&format!("  Message:\t{}\n", w.message));
        }
    }
    match &r.coordinator {
        Some(node) => out.push_str(&format!("Coordinator:\t{node} (epoch {})\n", r.epoch)),
        None => out.push_str("Coordinator:\t<none>\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use wasmfleet_scheduler::rollout::{ConditionStatus, ConditionType, Counts};

    use super::*;
    use crate::cli::tabs::align;
    use crate::manifest::{Kind, ObjectKey};
    use crate::reconcile::{ObjectStatus, RevisionView};

    const T: u64 = 1_796_612_645_000; // 2026-12-07T03:04:05Z

    fn cond(type_: ConditionType, reason: &str, message: &str) -> Condition {
        Condition {
            type_,
            status: ConditionStatus::True,
            reason: reason.into(),
            message: message.into(),
            last_update_ms: T,
            last_transition_ms: T - 60_000,
        }
    }

    fn rollout() -> RolloutView {
        let set = |revision: u64, hash: &str, replicas: u32, running: u32, current: bool| RevisionView {
            revision,
            hash: hash.into(),
            name: format!("web-{hash}"),
            replicas,
            running,
            current,
            ..RevisionView::default()
        };
        RolloutView {
            generation: 4,
            observed_generation: 4,
            replicas: 3,
            counts: Counts { replicas: 4, updated: 2, ready: 3, available: 3, unavailable: 0 },
            strategy: "RollingUpdate".into(),
            max_surge: 1,
            max_unavailable: 0,
            max_surge_spec: "25%".into(),
            max_unavailable_spec: "25%".into(),
            progress_deadline_seconds: 600,
            conditions: vec![
                cond(ConditionType::Available, "MinimumReplicasAvailable", "Deployment has minimum availability."),
                cond(ConditionType::Progressing, "ReplicaSetUpdated", "ReplicaSet \"web-7c9f\" is progressing."),
            ],
            revisions: vec![set(1, "5d9c", 0, 0, false), set(2, "6e1a", 2, 2, false), set(3, "7c9f", 2, 2, true)],
            coordinator: Some("edge-2".into()),
            epoch: 3,
            ..RolloutView::default()
        }
    }

    fn object(rollout: Option<RolloutView>) -> ObjectView {
        ObjectView {
            key: ObjectKey::new(Kind::Deployment, "default", "web"),
            object: json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}}),
            resolved: BTreeMap::new(),
            generation: 4,
            version: "1".into(),
            created_ms: T - 300_000,
            status: ObjectStatus { desired: 3, ready: 2, rollout, ..ObjectStatus::default() },
        }
    }

    #[test]
    fn get_columns() {
        let want = "\
NAME   READY   UP-TO-DATE   AVAILABLE   AGE
web    3/3     2            3           5m
";
        assert_eq!(table(&[object(Some(rollout()))], false, T), want);
        let old_server = "\
NAME   READY   UP-TO-DATE   AVAILABLE   AGE
web    2/3     2            2           5m
";
        assert_eq!(table(&[object(None)], false, T), old_server);
    }

    #[test]
    fn yaml_status_block() {
        let mut r = rollout();
        r.counts.unavailable = 1;
        let v = with_status(&object(Some(r)));
        let want = "\
availableReplicas: 3
conditions:
- lastTransitionTime: 2026-12-07T03:03:05Z
  lastUpdateTime: 2026-12-07T03:04:05Z
  message: Deployment has minimum availability.
  reason: MinimumReplicasAvailable
  status: 'True'
  type: Available
- lastTransitionTime: 2026-12-07T03:03:05Z
  lastUpdateTime: 2026-12-07T03:04:05Z
  message: ReplicaSet \"web-7c9f\" is progressing.
  reason: ReplicaSetUpdated
  status: 'True'
  type: Progressing
observedGeneration: 4
readyReplicas: 3
replicas: 4
unavailableReplicas: 1
updatedReplicas: 2
";
        assert_eq!(serde_yaml::to_string(&v["status"]).unwrap(), want);
        assert_eq!(v["kind"], "Deployment");
        // No unavailable replicas: the field is left out, as Kubernetes does.
        assert!(status_block(&rollout()).get("unavailableReplicas").is_none());
        assert_eq!(with_status(&object(None))["status"], json!({"replicas": 3, "readyReplicas": 2}));
    }

    #[test]
    fn describe_lines() {
        let text = format!("Name:\tweb\n{}{}", describe_spec(&rollout()), describe_status(&rollout()));
        let want = "\
Name:                   web
Replicas:               3 desired | 2 updated | 4 total | 3 available | 0 unavailable
StrategyType:           RollingUpdate
MinReadySeconds:        0
RollingUpdateStrategy:  25% max unavailable, 25% max surge
Conditions:
  Type           Status  Reason
  ----           ------  ------
  Available      True    MinimumReplicasAvailable
  Progressing    True    ReplicaSetUpdated
OldReplicaSets:  web-6e1a (2/2 replicas created)
NewReplicaSet:   web-7c9f (2/2 replicas created)
Coordinator:     edge-2 (epoch 3)
";
        assert_eq!(align(&text, 2), want);
    }

    #[test]
    fn describe_recreate_with_nothing_old() {
        let mut r = rollout();
        r.strategy = "Recreate".into();
        r.conditions.clear();
        r.revisions.retain(|v| v.current);
        r.coordinator = None;
        let text = format!("{}{}", describe_spec(&r), describe_status(&r));
        let want = "\
Replicas:         3 desired | 2 updated | 4 total | 3 available | 0 unavailable
StrategyType:     Recreate
MinReadySeconds:  0
OldReplicaSets:   <none>
NewReplicaSet:    web-7c9f (2/2 replicas created)
Coordinator:      <none>
";
        assert_eq!(align(&text, 2), want);
    }

    #[test]
    fn describe_waves() {
        use crate::reconcile::rollouts::{WaveView, WavesView};
        let mut r = rollout();
        r.waves = Some(WavesView {
            label: "zone".into(),
            waves: vec![
                WaveView { value: "north".into(), share: 2, updated: 2, old: 0, available: 2 },
                WaveView { value: "east".into(), share: 2, updated: 0, old: 2, available: 0 },
            ],
            current: 2,
            message: "wave 2 of 2 waits for its analysis".into(),
            phase: "Progressing".into(),
        });
        let text = describe_status(&r);
        let tail: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("RolloutWaves:")).collect();
        let want = "\
RolloutWaves:\tby node label zone (wave 2 of 2, Progressing)
  Wave\tReplicas\tUpdated\tOld\tAvailable
  ----\t--------\t-------\t---\t---------
  north\t2\t2\t0\t2
  east\t2\t0\t2\t0
  Message:\twave 2 of 2 waits for its analysis
Coordinator:\tedge-2 (epoch 3)";
        assert_eq!(tail.join("\n"), want);
    }
}
