//! A pod template as kubectl's `DescribePodTemplate` writes it (`rollout history --revision`,
//! `describe`): labels, annotations, containers (image, ports, args, resources, readiness,
//! environment, mounts), volumes. Cells end with a tab, as kubectl writes them: `describe`
//! aligns them, `rollout history` prints them as they are.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// Annotations longer than this are cut (kubectl's `maxAnnotationLen`).
const MAX_ANNOTATION_LEN: usize = 140;

/// `Pod Template:` and what follows, for `template` (`spec.template`, Kubernetes JSON) with
/// `labels` and `annotations` added to its own (a revision's `pod-template-hash`, its
/// change cause).
pub(super) fn pod_template(
    template: &Value,
    mut labels: BTreeMap<String, String>,
    mut annotations: BTreeMap<String, String>,
) -> String {
    let mut out = String::from("Pod Template:\n");
    labels.extend(string_map(template.pointer("/metadata/labels")));
    annotations.extend(string_map(template.pointer("/metadata/annotations")));
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    multiline(&mut out, "  Labels", labels.iter().map(|(k, v)| format!("{k}={v}")));
    if !annotations.is_empty() {
        let lines = annotations.iter().map(|(k, v)| {
            let line = format!("{k}: {v}");
            if line.chars().count() > MAX_ANNOTATION_LEN {
                format!("{}...", line.chars().take(MAX_ANNOTATION_LEN).collect::<String>())
            } else {
                line
            }
        });
        multiline(&mut out, "  Annotations", lines);
    }
    out.push_str("  Containers:\n");
    for c in array(template.pointer("/spec/containers")) {
        container(&mut out, c);
    }
    volumes(&mut out, array(template.pointer("/spec/volumes")));
    let selectors = string_map(template.pointer("/spec/nodeSelector"));
    multiline(&mut out, "  Node-Selectors", selectors.iter().map(|(k, v)| format!("{k}={v}")));
    out.push_str("  Tolerations:\t<none>\n");
    out
}

/// `TITLE:\tfirst\n\tsecond\n`, or `TITLE:\t<none>\n`.
fn multiline(out: &mut String, title: &str, lines: impl Iterator<Item = String>) {
    let _ = write!(out, "{title}:\t");
    let mut any = false;
    for (i, l) in lines.enumerate() {
        if i > 0 {
            out.push('\t');
        }
        let _ = writeln!(out, "{l}");
        any = true;
    }
    if !any {
        out.push_str("<none>\n");
    }
}

fn container(out: &mut String, c: &Value) {
    let _ = writeln!(out, "   {}:", text(c.get("name")));
    let _ = writeln!(out, "    Image:\t{}", text(c.get("image")));
    let ports: Vec<&Value> = array(c.get("ports")).collect();
    let protocol = |p: &Value| p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string();
    let list = |f: &dyn Fn(&Value) -> String| ports.iter().map(|p| f(p)).collect::<Vec<_>>().join(", ");
    if ports.is_empty() {
        out.push_str("    Port:\t<none>\n    Host Port:\t<none>\n");
    } else {
        let _ = writeln!(out, "    Port:\t{}", list(&|p| format!("{}/{}", text(p.get("containerPort")), protocol(p))));
        let _ = writeln!(out, "    Host Port:\t{}", list(&|p| format!("0/{}", protocol(p))));
    }
    let args: Vec<&Value> = array(c.get("args")).collect();
    if !args.is_empty() {
        out.push_str("    Args:\n");
        for a in args {
            for l in text(Some(a)).split('\n') {
                let _ = writeln!(out, "      {l}");
            }
        }
    }
    for (title, key) in [("Limits", "limits"), ("Requests", "requests")] {
        let list = string_map(c.pointer(&format!("/resources/{key}")));
        if !list.is_empty() {
            let _ = writeln!(out, "    {title}:");
            for (k, v) in list {
                let _ = writeln!(out, "      {k}:\t{v}");
            }
        }
    }
    if let Some(p) = c.get("readinessProbe") {
        let _ = writeln!(out, "    Readiness:\t{}", probe(p));
    }
    let env: Vec<&Value> = array(c.get("env")).collect();
    out.push_str(if env.is_empty() { "    Environment:\t<none>\n" } else { "    Environment:\n" });
    for e in env {
        let name = text(e.get("name"));
        match e.get("value") {
            Some(v) if e.get("valueFrom").is_none() => {
                for (i, l) in text(Some(v)).split('\n').enumerate() {
                    if i == 0 {
                        let _ = writeln!(out, "      {name}:\t{l}");
                    } else {
                        let _ = writeln!(out, "      \t{l}");
                    }
                }
            }
            _ => {
                let _ = writeln!(out, "      {name}:\t");
            }
        }
    }
    let mut mounts: Vec<&Value> = array(c.get("volumeMounts")).collect();
    mounts.sort_by_key(|m| text(m.get("mountPath")));
    out.push_str(if mounts.is_empty() { "    Mounts:\t<none>\n" } else { "    Mounts:\n" });
    for m in mounts {
        let mode = if m.get("readOnly").and_then(Value::as_bool).unwrap_or(false) { "ro" } else { "rw" };
        let _ = writeln!(out, "      {} from {} ({mode})", text(m.get("mountPath")), text(m.get("name")));
    }
}

/// `http-get http://:8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3`.
fn probe(p: &Value) -> String {
    let n = |key: &str, default: u64| p.get(key).and_then(Value::as_u64).unwrap_or(default);
    let action = match p.get("httpGet") {
        Some(h) => {
            let scheme = h.get("scheme").and_then(Value::as_str).unwrap_or("HTTP").to_ascii_lowercase();
            let path = h.get("path").and_then(Value::as_str).unwrap_or("");
            format!("http-get {scheme}://{}:{}{path}", text(h.get("host")), text(h.get("port")))
        }
        None => "unknown".to_string(),
    };
    format!(
        "{action} delay={}s timeout={}s period={}s #success={} #failure={}",
        n("initialDelaySeconds", 0),
        n("timeoutSeconds", 1),
        n("periodSeconds", 10),
        n("successThreshold", 1),
        n("failureThreshold", 3)
    )
}

fn volumes<'a>(out: &mut String, volumes: impl Iterator<Item = &'a Value>) {
    let volumes: Vec<&Value> = volumes.collect();
    if volumes.is_empty() {
        out.push_str("  Volumes:\t<none>\n");
        return;
    }
    out.push_str("  Volumes:\n");
    for v in volumes {
        let _ = writeln!(out, "   {}:", text(v.get("name")));
        if let Some(h) = v.get("hostPath") {
            let _ = writeln!(out, "    Type:\tHostPath (bare host directory volume)");
            let _ = writeln!(out, "    Path:\t{}", text(h.get("path")));
            let _ = writeln!(out, "    HostPathType:\t{}", text(h.get("type")));
        } else if let Some(e) = v.get("emptyDir") {
            let _ = writeln!(out, "    Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)");
            let _ = writeln!(out, "    Medium:\t{}", text(e.get("medium")));
            let limit = e.get("sizeLimit").map(|l| text(Some(l))).unwrap_or_else(|| "<unset>".into());
            let _ = writeln!(out, "    SizeLimit:\t{limit}");
        }
    }
}

fn array(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

/// A JSON string as it is, any other value as JSON, nothing as "".
fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), text(Some(v)))).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_template_as_kubectl_describes_it() {
        let template = json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [{
                    "name": "web",
                    "image": "web:2.0",
                    "ports": [{"containerPort": 8080}],
                    "env": [{"name": "GREETING", "value": "hi"}, {"name": "MODE", "value": "fast"}],
                    "resources": {"limits": {"memory": "64Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
                    "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]
                }],
                "volumes": [{"name": "cache", "emptyDir": {}}],
                "nodeSelector": {"zone": "a"}
            }
        });
        let got = pod_template(
            &template,
            [("pod-template-hash".to_string(), "5d9c7b".to_string())].into(),
            [("kubernetes.io/change-cause".to_string(), "wasmfleet set image deployment/web web=web:2.0".to_string())]
                .into(),
        );
        let want = "Pod Template:
  Labels:\tapp=web
\tpod-template-hash=5d9c7b
  Annotations:\tkubernetes.io/change-cause: wasmfleet set image deployment/web web=web:2.0
  Containers:
   web:
    Image:\tweb:2.0
    Port:\t8080/TCP
    Host Port:\t0/TCP
    Limits:
      memory:\t64Mi
    Readiness:\thttp-get http://:8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3
    Environment:
      GREETING:\thi
      MODE:\tfast
    Mounts:
      /cache from cache (rw)
  Volumes:
   cache:
    Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)
    Medium:\t
    SizeLimit:\t<unset>
  Node-Selectors:\tzone=a
  Tolerations:\t<none>
";
        assert_eq!(got, want);
    }

    #[test]
    fn an_empty_template_says_none() {
        let got = pod_template(
            &json!({"spec": {"containers": [{"name": "x", "image": "x:1"}]}}),
            BTreeMap::new(),
            BTreeMap::new(),
        );
        let want = "Pod Template:
  Labels:\t<none>
  Containers:
   x:
    Image:\tx:1
    Port:\t<none>
    Host Port:\t<none>
    Environment:\t<none>
    Mounts:\t<none>
  Volumes:\t<none>
  Node-Selectors:\t<none>
  Tolerations:\t<none>
";
        assert_eq!(got, want);
    }
}
