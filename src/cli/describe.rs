//! `describe`: one object in detail, kubectl style (label cells aligned as Go's tabwriter
//! aligns them), with wasmfleet's own lines (version, resolved images, replicas, messages,
//! the spec).

use anyhow::Result;

use crate::control::api::ObjectView;
use crate::manifest::Kind;
use crate::reconcile::ReplicaStatus;

use super::deployment::{describe_spec, describe_status};
use super::print::age_at;
use super::tabs::align;

/// The description of `o`, with `replicas` (those it owns) listed, at `now_ms`.
pub(super) fn describe_object(o: &ObjectView, replicas: &[ReplicaStatus], now_ms: u64) -> Result<String> {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("Name:\t{}", o.key.name));
    line(format!("Namespace:\t{}", o.key.namespace));
    line(format!("Kind:\t{}", o.key.kind.as_str()));
    line(format!("Generation:\t{}", o.generation));
    line(format!("Version:\t{}", o.version));
    line(format!("Created:\t{} ago", age_at(now_ms, o.created_ms)));
    for (img, d) in &o.resolved {
        line(format!("Image:\t{img} -> {d}"));
    }
    let st = &o.status;
    let rollout = st.rollout.as_ref().filter(|_| o.key.kind == Kind::Deployment);
    match (o.key.kind, rollout) {
        (Kind::Job, _) => line(format!(
            "Completions:\t{}/{} succeeded, {} failed{}",
            st.succeeded,
            st.desired,
            st.failed,
            if st.complete { ", complete" } else { "" }
        )),
        (_, Some(r)) => line(describe_spec(r).trim_end().to_string()),
        (Kind::HorizontalPodAutoscaler | Kind::PersistentVolumeClaim | Kind::StorageClass, _) => {}
        _ => line(format!("Replicas:\t{} desired, {} ready", st.desired, st.ready)),
    }
    for p in &st.ports {
        line(format!(
            "Node port:\t{} {}",
            p.port,
            if p.bound { "bound".to_string() } else { p.error.clone().unwrap_or_default() }
        ));
    }
    if let Some(r) = rollout {
        line(describe_status(r).trim_end().to_string());
    }
    if let Some(a) = &st.autoscale {
        line(super::hpa::describe(a, now_ms).trim_end().to_string());
    }
    if let Some(v) = &st.volume {
        line(super::storage::describe_volume(v, now_ms).trim_end().to_string());
    }
    if o.key.kind == Kind::Rollout
        && let Some(r) = &st.rollout
    {
        line(super::rollouts::describe(r).trim_end().to_string());
    }
    if !st.endpoints.is_empty() {
        line("Endpoints:".into());
        for e in &st.endpoints {
            line(format!("  {}\t{}", e.replica, if e.ready { "ready" } else { "not ready" }));
        }
    }
    let owner = o.key.to_string();
    let mine: Vec<&ReplicaStatus> = replicas.iter().filter(|r| r.owner == owner).collect();
    if !mine.is_empty() {
        line("Running replicas:".into());
        for r in mine {
            line(format!(
                "  {}\tnode={} phase={} ready={} restarts={} revision={}{}",
                r.name,
                r.node,
                r.phase,
                r.ready,
                r.restarts,
                r.revision,
                r.message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default()
            ));
        }
    }
    if !st.messages.is_empty() {
        line("Messages:".into());
        for m in &st.messages {
            line(format!("  {m}"));
        }
    }
    line("Spec:".into());
    // The spec is YAML: no cells, whatever its strings hold.
    let mut text = align(&out, 2);
    for l in serde_yaml::to_string(&o.object)?.lines() {
        text.push_str(&format!("  {l}\n"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::manifest::ObjectKey;
    use crate::reconcile::{ObjectStatus, RevisionView, RolloutView};

    #[test]
    fn a_deployment_with_its_rollout() {
        let r = RolloutView {
            generation: 2,
            observed_generation: 2,
            replicas: 1,
            counts: wasmfleet_scheduler::rollout::Counts {
                replicas: 1,
                updated: 1,
                ready: 1,
                available: 1,
                unavailable: 0,
            },
            strategy: "RollingUpdate".into(),
            max_surge_spec: "25%".into(),
            max_unavailable_spec: "25%".into(),
            revisions: vec![RevisionView {
                revision: 2,
                name: "web-7c9f".into(),
                replicas: 1,
                running: 1,
                current: true,
                ..RevisionView::default()
            }],
            coordinator: Some("edge-1".into()),
            epoch: 1,
            ..RolloutView::default()
        };
        let o = ObjectView {
            key: ObjectKey::new(Kind::Deployment, "default", "web"),
            object: json!({"kind": "Deployment", "spec": {"replicas": 1}}),
            resolved: BTreeMap::new(),
            generation: 2,
            version: "7".into(),
            created_ms: 0,
            status: ObjectStatus { desired: 1, ready: 1, rollout: Some(r), ..ObjectStatus::default() },
        };
        let want = "\
Name:                   web
Namespace:              default
Kind:                   Deployment
Generation:             2
Version:                7
Created:                30s ago
Replicas:               1 desired | 1 updated | 1 total | 1 available | 0 unavailable
StrategyType:           RollingUpdate
MinReadySeconds:        0
RollingUpdateStrategy:  25% max unavailable, 25% max surge
OldReplicaSets:         <none>
NewReplicaSet:          web-7c9f (1/1 replicas created)
Coordinator:            edge-1 (epoch 1)
Spec:
  kind: Deployment
  spec:
    replicas: 1
";
        assert_eq!(describe_object(&o, &[], 30_000).unwrap(), want);
    }
}
