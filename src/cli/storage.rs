//! `get pvc`, `get pv`, `get storageclass` and `describe pvc`, as kubectl prints them, with
//! the node a volume is bound to (or written on), the nodes holding copies, and the age of the
//! newest copy.

use std::fmt::Write as _;

use super::print::age_at;
use crate::control::api::ObjectView;
use crate::manifest::storage::{DEFAULT_CLASS, PROVISIONER_LOCAL, PROVISIONER_REPLICATED};
use crate::reconcile::claims::VolumeView;

pub const PVC_HEADER: [&str; 10] =
    ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "NODE", "COPIES", "NEWEST COPY", "AGE"];
pub const PV_HEADER: [&str; 10] =
    ["NAME", "CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM", "STORAGECLASS", "NODE", "COPIES", "AGE"];
pub const SC_HEADER: [&str; 6] =
    ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"];

fn or_none(s: &str) -> String {
    if s.is_empty() { "<none>".into() } else { s.to_string() }
}

/// The nodes holding copies besides the writer, `b,c` (incomplete ones marked `*`).
fn copies(v: &VolumeView) -> String {
    let holders: Vec<String> = v
        .copies
        .iter()
        .filter(|c| !c.writer)
        .map(|c| if c.complete { c.node.clone() } else { format!("{}*", c.node) })
        .collect();
    if holders.is_empty() { "<none>".into() } else { holders.join(",") }
}

/// How old the newest complete copy other than the writer's is.
fn newest_copy(v: &VolumeView, now_ms: u64) -> String {
    v.copies
        .iter()
        .filter(|c| !c.writer && c.complete)
        .map(|c| c.taken_ms)
        .max()
        .map(|t| age_at(now_ms, t))
        .unwrap_or_else(|| "<none>".into())
}

pub fn pvc_table(objs: &[ObjectView], now_ms: u64) -> Vec<Vec<String>> {
    objs.iter()
        .map(|o| {
            let spec = |p: &str| o.object.pointer(p).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            let class = match spec("/spec/storageClassName") {
                c if c.is_empty() => DEFAULT_CLASS.to_string(),
                c => c,
            };
            let modes: Vec<String> = o
                .object
                .pointer("/spec/accessModes")
                .and_then(|m| m.as_array())
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str())
                .map(|m| match m {
                    "ReadWriteOnce" => "RWO".to_string(),
                    "ReadOnlyMany" => "ROX".to_string(),
                    "ReadWriteOncePod" => "RWOP".to_string(),
                    other => other.to_string(),
                })
                .collect();
            let v = o.status.volume.as_ref();
            let bound = v.is_some_and(|v| !v.volume.is_empty());
            vec![
                o.key.name.clone(),
                v.map(|v| v.status.clone()).unwrap_or_else(|| "Pending".into()),
                v.map(|v| or_none(&v.volume)).unwrap_or_default(),
                if bound { spec("/spec/resources/requests/storage") } else { String::new() },
                if bound { modes.join(",") } else { String::new() },
                class,
                v.map(|v| or_none(&v.node)).unwrap_or_else(|| "<none>".into()),
                v.map(copies).unwrap_or_else(|| "<none>".into()),
                v.map(|v| newest_copy(v, now_ms)).unwrap_or_else(|| "<none>".into()),
                age_at(now_ms, o.created_ms),
            ]
        })
        .collect()
}

pub fn pv_table(views: &[VolumeView], now_ms: u64) -> Vec<Vec<String>> {
    views
        .iter()
        .filter(|v| !v.volume.is_empty())
        .map(|v| {
            vec![
                v.volume.clone(),
                if v.capacity.is_empty() { format!("{}", v.capacity_bytes) } else { v.capacity.clone() },
                v.access.clone(),
                v.reclaim.clone(),
                v.status.clone(),
                format!("{}/{}", v.namespace, v.claim),
                v.class.clone(),
                v.node.clone(),
                copies(v),
                age_at(now_ms, v.bound_ms),
            ]
        })
        .collect()
}

/// The stored classes, then the built-in ones no object replaces.
pub fn sc_table(objs: &[ObjectView], now_ms: u64) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = objs
        .iter()
        .map(|o| {
            let f = |p: &str| o.object.pointer(p).map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()));
            vec![
                o.key.name.clone(),
                f("/provisioner").unwrap_or_default(),
                f("/reclaimPolicy").unwrap_or_else(|| "Retain".into()),
                f("/volumeBindingMode").unwrap_or_else(|| "WaitForFirstConsumer".into()),
                f("/allowVolumeExpansion").unwrap_or_else(|| "false".into()),
                age_at(now_ms, o.created_ms),
            ]
        })
        .collect();
    for (name, provisioner) in [("local", PROVISIONER_LOCAL), ("replicated", PROVISIONER_REPLICATED)] {
        if !rows.iter().any(|r| r[0] == name) {
            let shown = if name == DEFAULT_CLASS { format!("{name} (default)") } else { name.to_string() };
            rows.push(vec![
                shown,
                provisioner.into(),
                "Retain".into(),
                "WaitForFirstConsumer".into(),
                "false".into(),
                "<built in>".into(),
            ]);
        }
    }
    rows
}

/// `status:` as Kubernetes writes a claim's (`phase`, `accessModes`, `capacity`), with the
/// volume's name in `volumeName` and where its data is under `wasmfleet`.
pub(super) fn status_block(v: &VolumeView) -> serde_json::Value {
    let mut status = serde_json::json!({ "phase": v.status });
    if !v.volume.is_empty() {
        status["volumeName"] = v.volume.clone().into();
        status["accessModes"] = serde_json::json!([v.access]);
        status["capacity"] = serde_json::json!({ "storage": v.capacity });
        status["wasmfleet"] = serde_json::json!({
            "node": v.node,
            "epoch": v.epoch,
            "usedBytes": v.used_bytes,
            "copies": v.copies,
        });
    }
    status
}

/// The volume part of `describe pvc`.
pub fn describe_volume(v: &VolumeView, now_ms: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "StorageClass:\t{}", or_none(&v.class));
    let _ = writeln!(out, "Status:\t{}", v.status);
    let _ = writeln!(out, "Volume:\t{}", or_none(&v.volume));
    let _ = writeln!(out, "Capacity:\t{}", v.capacity);
    let _ = writeln!(out, "Used:\t{} bytes", v.used_bytes);
    let _ = writeln!(out, "Access Modes:\t{}", v.access);
    let _ = writeln!(out, "Reclaim Policy:\t{}", or_none(&v.reclaim));
    if !v.volume.is_empty() {
        let role = if v.provisioner == PROVISIONER_LOCAL { "Bound to node" } else { "Writer" };
        let _ = writeln!(out, "{role}:\t{} (epoch {})", v.node, v.epoch);
        let _ = writeln!(out, "Copies:");
        if v.copies.is_empty() {
            let _ = writeln!(out, "  <none reported>");
        }
        for c in &v.copies {
            let _ = writeln!(
                out,
                "  {}\t{}epoch {}, snapshot {}, {} bytes, {}, taken {} ago",
                c.node,
                if c.writer { "(writer) " } else { "" },
                c.epoch,
                c.seq,
                c.bytes,
                if c.complete { "complete" } else { "incomplete" },
                age_at(now_ms, c.taken_ms)
            );
        }
    }
    let _ = writeln!(out, "Used By:\t{}", if v.users.is_empty() { "<none>".into() } else { v.users.join(", ") });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::claims::CopyView;

    #[test]
    fn a_replicated_volume_shows_its_writer_copies_and_newest_copy() {
        let copy = |node: &str, writer, complete, taken_ms| CopyView {
            node: node.into(),
            epoch: 2,
            seq: 7,
            complete,
            bytes: 100,
            taken_ms,
            writer,
        };
        let v = VolumeView {
            volume: "pvc-0011".into(),
            namespace: "default".into(),
            claim: "data".into(),
            claimed: true,
            status: "Bound".into(),
            class: "replicated".into(),
            provisioner: PROVISIONER_REPLICATED.into(),
            access: "RWO".into(),
            capacity: "1Gi".into(),
            capacity_bytes: 1 << 30,
            reclaim: "Retain".into(),
            node: "a".into(),
            epoch: 2,
            copies: vec![copy("a", true, true, 9_000), copy("b", false, true, 8_000), copy("c", false, false, 9_000)],
            used_bytes: 100,
            bound_ms: 0,
            users: vec!["Deployment/default/db".into()],
            messages: vec![],
        };
        assert_eq!(copies(&v), "b,c*");
        assert_eq!(newest_copy(&v, 10_000), "2s");
        let pv = pv_table(std::slice::from_ref(&v), 60_000);
        assert_eq!(
            pv[0],
            ["pvc-0011", "1Gi", "RWO", "Retain", "Bound", "default/data", "replicated", "a", "b,c*", "60s"]
        );
        let d = describe_volume(&v, 10_000);
        assert!(d.contains("Writer:\ta (epoch 2)"), "{d}");
        assert!(d.contains("c\tepoch 2, snapshot 7, 100 bytes, incomplete, taken 1s ago"), "{d}");
    }
}
