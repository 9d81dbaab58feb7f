//! Tables and descriptions, as kubectl prints them.

use crate::control::api::ObjectView;
use crate::manifest::{Kind, ObjectKey};
use crate::peering::NodeView;

pub fn kubectl_name(key: &ObjectKey) -> String {
    let group = match key.kind {
        Kind::Deployment | Kind::DaemonSet => format!("{}.apps", key.kind.as_str().to_lowercase()),
        Kind::Job => "job.batch".into(),
        Kind::Service => "service".into(),
        Kind::Rollout | Kind::AnalysisTemplate => format!("{}.argoproj.io", key.kind.as_str().to_lowercase()),
        Kind::HorizontalPodAutoscaler => "horizontalpodautoscaler.autoscaling".into(),
        Kind::PersistentVolumeClaim => "persistentvolumeclaim".into(),
        Kind::StorageClass => "storageclass.storage.k8s.io".into(),
    };
    format!("{group}/{}", key.name)
}

pub(super) fn age(ms: u64) -> String {
    age_at(crate::clock::now_ms(), ms)
}

/// How long before `now_ms` `ms` was, as kubectl's AGE column says it (`45s`, `3m`, `5h`, `2d`).
pub(super) fn age_at(now_ms: u64, ms: u64) -> String {
    let s = now_ms.saturating_sub(ms) / 1000;
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Prints an aligned table, kubectl style.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", format_table(headers, rows));
}

/// An aligned table, kubectl style: columns three spaces apart, no trailing spaces.
pub(super) fn format_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

pub(super) fn warn_if_stale(in_sync: bool) {
    if !in_sync {
        eprintln!("warning: this node is not in sync with all its peers yet; the answer may be stale");
    }
}

pub(super) fn print_nodes(nodes: &[NodeView], wide: bool) {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let i = n.info.clone().unwrap_or_default();
            let labels: Vec<String> = i.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut r = vec![
                format!("{}{}", n.name, if n.this_node { "*" } else { "" }),
                n.state.clone(),
                i.cluster.clone(),
                i.zone.clone().unwrap_or_else(|| "-".into()),
                format!("{}Mi/{}m", i.memory_mib, i.cpu_millis),
                if i.started_ms > 0 { age(i.started_ms) } else { "-".into() },
                i.version.clone(),
                if n.in_sync { "yes" } else { "no" }.into(),
            ];
            if wide {
                r.push(if labels.is_empty() { "-".into() } else { labels.join(",") });
                r.push(i.api.clone());
                r.push(i.gateway.clone());
                r.push(i.arch.clone());
            }
            r
        })
        .collect();
    let mut h = vec!["NAME", "STATE", "ADDRESS", "ZONE", "CAPACITY", "AGE", "VERSION", "IN-SYNC"];
    if wide {
        h.extend(["LABELS", "API", "GATEWAY", "ARCH"]);
    }
    print_table(&h, &rows);
}

pub(super) fn print_objects(kind: Kind, objs: &[ObjectView], wide: bool) {
    let s = |v: &serde_json::Value, p: &str| {
        v.pointer(p).map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string())).unwrap_or_default()
    };
    match kind {
        Kind::Deployment => print!("{}", super::deployment::table(objs, wide, crate::clock::now_ms())),
        Kind::Rollout => print!("{}", super::rollouts::table(objs, crate::clock::now_ms())),
        Kind::HorizontalPodAutoscaler => {
            print_table(&super::hpa::HEADER, &super::hpa::table(objs, crate::clock::now_ms()));
        }
        Kind::PersistentVolumeClaim => {
            print_table(&super::storage::PVC_HEADER, &super::storage::pvc_table(objs, crate::clock::now_ms()));
        }
        Kind::StorageClass => {
            print_table(&super::storage::SC_HEADER, &super::storage::sc_table(objs, crate::clock::now_ms()));
        }
        Kind::AnalysisTemplate => print_table(
            &["NAME", "AGE"],
            &objs.iter().map(|o| vec![o.key.name.clone(), age(o.created_ms)]).collect::<Vec<_>>(),
        ),
        Kind::DaemonSet => {
            let rows: Vec<Vec<String>> = objs
                .iter()
                .map(|o| {
                    let mut r = vec![
                        o.key.name.clone(),
                        format!("{}/{}", o.status.ready, o.status.desired),
                        o.status.ready.to_string(),
                        age(o.created_ms),
                    ];
                    if wide {
                        r.push(s(&o.object, "/spec/template/spec/containers/0/image"));
                        r.push(o.status.messages.join("; "));
                    }
                    r
                })
                .collect();
            let mut h = vec!["NAME", "READY", "AVAILABLE", "AGE"];
            if wide {
                h.extend(["IMAGE", "MESSAGE"]);
            }
            print_table(&h, &rows);
        }
        Kind::Service => {
            let rows: Vec<Vec<String>> = objs
                .iter()
                .map(|o| {
                    let ports: Vec<String> = o
                        .object
                        .pointer("/spec/ports")
                        .and_then(|p| p.as_array())
                        .map(|a| {
                            a.iter()
                                .map(|p| format!("{}/TCP", p.get("port").map(|x| x.to_string()).unwrap_or_default()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let bound: Vec<String> = o
                        .status
                        .ports
                        .iter()
                        .map(|p| if p.bound { format!("{}", p.port) } else { format!("{}(unbound)", p.port) })
                        .collect();
                    let eps: Vec<String> =
                        o.status.endpoints.iter().filter(|e| e.ready).map(|e| e.replica.clone()).collect();
                    let mut r = vec![
                        o.key.name.clone(),
                        s(&o.object, "/spec/type")
                            .replace("\"", "")
                            .chars()
                            .filter(|c| !c.is_whitespace())
                            .collect::<String>()
                            .if_empty("ClusterIP"),
                        ports.join(","),
                        format!("{}/{}", o.status.ready, o.status.desired),
                        age(o.created_ms),
                    ];
                    if wide {
                        r.push(if bound.is_empty() { "-".into() } else { bound.join(",") });
                        r.push(eps.join(","));
                    }
                    r
                })
                .collect();
            let mut h = vec!["NAME", "TYPE", "PORT(S)", "READY", "AGE"];
            if wide {
                h.extend(["NODE-PORTS", "ENDPOINTS"]);
            }
            print_table(&h, &rows);
        }
        Kind::Job => {
            let rows: Vec<Vec<String>> = objs
                .iter()
                .map(|o| {
                    let st = if o.status.complete {
                        "Complete"
                    } else if o.status.messages.iter().any(|m| m.contains("job failed")) {
                        "Failed"
                    } else {
                        "Running"
                    };
                    vec![
                        o.key.name.clone(),
                        st.to_string(),
                        format!("{}/{}", o.status.succeeded, o.status.desired),
                        o.status.failed.to_string(),
                        age(o.created_ms),
                    ]
                })
                .collect();
            print_table(&["NAME", "STATUS", "COMPLETIONS", "FAILED", "AGE"], &rows);
        }
    }
}

trait IfEmpty {
    fn if_empty(self, d: &str) -> String;
}
impl IfEmpty for String {
    fn if_empty(self, d: &str) -> String {
        if self.is_empty() || self == "null" { d.to_string() } else { self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_seconds() {
        use crate::clock::rfc3339;
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_612_645_999), "2026-12-07T03:04:05Z");
        assert_eq!(rfc3339(4_107_542_399_000), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn ages_and_tables() {
        assert_eq!(age_at(200_000, 155_000), "45s");
        assert_eq!(age_at(10_000_000, 0), "2h");
        assert_eq!(
            format_table(&["NAME", "AGE"], &[vec!["a-long-name".into(), "1s".into()]]),
            "NAME          AGE\na-long-name   1s\n"
        );
    }
}
