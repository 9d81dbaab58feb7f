//! Semantic checks on a deserialized object: Kubernetes' own rules where they apply (names,
//! selectors, restart policies, ports) and wasmfleet's (one module per replica, which Kubernetes
//! fields have no meaning for Wasm). Each problem is an [`Issue`] with a field path; the parser
//! turns issues into located [`ManifestError`](super::ManifestError)s.
//!
//! Map: [`validate`] dispatches by kind; then metadata and names, selectors, Deployment
//! strategies, the pod template (restart policy, node selector, annotations), volumes, the
//! container (image, env, ports, resources, unsupported fields), probes, and Services. Argo's
//! Rollout and AnalysisTemplate are checked in [`progressive`].

mod autoscaling;
mod progressive;
mod storage;

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use super::autoscaling::{HPA_ANNOTATIONS, SERVICE_ANNOTATIONS};
use super::locate::{join_index, join_key};
use super::object::Object;
use super::quantity::{parse_cpu_millis, parse_memory_bytes};
use super::types::{
    Container, DeploymentStrategy, IntOrString, LabelSelector, PodTemplateSpec, Probe, Protocol, RestartPolicy,
    ServiceSpec, ServiceType, StrategyType, UriScheme, Volume,
};
use super::waves::{ANNOTATION_ROLLOUT_WAVES, WAVE_ANNOTATIONS};
use super::workload::{ANNOTATION_PREFIX, KNOWN_ANNOTATIONS, check_annotation};

/// Most replicas a Deployment may ask for.
pub const MAX_REPLICAS: u32 = 10_000;

/// One semantic problem: a field path and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Issue {
    pub path: String,
    pub message: String,
    /// The problem is the field being there at all (report its key), not its value.
    pub at_key: bool,
}

struct Issues(Vec<Issue>);

impl Issues {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue { path: path.into(), message: message.into(), at_key: false });
    }

    /// Reports a field that must not be there (located at its key, not its value).
    fn push_key(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue { path: path.into(), message: message.into(), at_key: true });
    }

    /// Reports a known Kubernetes field that wasmfleet does not support, if it is present.
    fn unsupported(&mut self, base: &str, field: &str, value: &Option<Value>, why: &str) {
        if value.is_some() {
            let message = format!("not supported by wasmfleet: {why}");
            self.0.push(Issue { path: join_key(base, field), message, at_key: true });
        }
    }
}

/// Checks one object; returns every problem found, in field order.
pub(crate) fn validate(object: &Object) -> Vec<Issue> {
    let mut out = Issues(Vec::new());
    metadata(object, &mut out);
    match object {
        Object::Deployment(d) => {
            let spec = &d.spec;
            waves(&d.metadata.annotations, spec.strategy.as_ref(), &mut out);
            if spec.replicas() > MAX_REPLICAS {
                out.push("spec.replicas", format!("must be at most {MAX_REPLICAS} (got {})", spec.replicas()));
            }
            selector(&spec.selector, &spec.template, &mut out);
            if let Some(s) = &spec.strategy {
                strategy(s, &mut out);
            }
            template(&spec.template, TemplateOf::Service, &mut out);
        }
        Object::DaemonSet(d) => {
            selector(&d.spec.selector, &d.spec.template, &mut out);
            if let Some(rolling) = d.spec.update_strategy.as_ref().and_then(|s| s.rolling_update.as_ref()) {
                rolling_update(
                    "spec.updateStrategy.rollingUpdate",
                    rolling.max_surge.as_ref(),
                    rolling.max_unavailable.as_ref(),
                    &mut out,
                );
            }
            template(&d.spec.template, TemplateOf::Service, &mut out);
        }
        Object::Job(j) => {
            let spec = &j.spec;
            if spec.completions == Some(0) {
                out.push("spec.completions", "must be at least 1");
            }
            if spec.parallelism == Some(0) {
                out.push("spec.parallelism", "must be at least 1");
            }
            out.unsupported("spec", "suspend", &spec.suspend, "delete the Job to stop it");
            out.unsupported(
                "spec",
                "completionMode",
                &spec.completion_mode,
                "completions are not indexed; every run is the same",
            );
            out.unsupported("spec", "podFailurePolicy", &spec.pod_failure_policy, "use `backoffLimit`");
            template(&spec.template, TemplateOf::Job, &mut out);
        }
        Object::Service(s) => service(&s.spec, &mut out),
        Object::Rollout(r) => progressive::rollout(r, &mut out),
        Object::AnalysisTemplate(t) => progressive::analysis_template(t, &mut out),
        Object::HorizontalPodAutoscaler(h) => autoscaling::hpa(h, &mut out),
        Object::PersistentVolumeClaim(c) => storage::claim(c, &mut out),
        Object::StorageClass(c) => storage::class(c, &mut out),
    }
    out.0
}

/// Name, namespace, and the wasmfleet annotations an object's own metadata may carry: a
/// Deployment's rollout waves, an autoscaler's sync period.
fn metadata(object: &Object, out: &mut Issues) {
    let meta = object.meta();
    let waves = matches!(object, Object::Deployment(_));
    let hpa = matches!(object, Object::HorizontalPodAutoscaler(_));
    let service = matches!(object, Object::Service(_));
    match meta.name.as_deref() {
        None | Some("") => out.push("metadata.name", "is required"),
        Some(name) => {
            if let Err(e) = dns_label(name) {
                out.push("metadata.name", e);
            }
        }
    }
    if let Some(ns) = &meta.namespace
        && let Err(e) = dns_label(ns)
    {
        out.push("metadata.namespace", e);
    }
    for key in meta.annotations.keys() {
        if SERVICE_ANNOTATIONS.contains(&key.as_str()) {
            let path = join_key("metadata.annotations", key);
            if !service {
                out.push(path, "applies to Services only");
            } else if let Err(e) = super::autoscaling::check_annotation(key, &meta.annotations[key]) {
                out.push(path, e);
            }
        } else if HPA_ANNOTATIONS.contains(&key.as_str()) {
            let path = join_key("metadata.annotations", key);
            if !hpa {
                out.push(path, "applies to HorizontalPodAutoscalers only");
            } else if let Err(e) = super::autoscaling::check_annotation(key, &meta.annotations[key]) {
                out.push(path, e);
            }
        } else if WAVE_ANNOTATIONS.contains(&key.as_str()) {
            if !waves {
                out.push(join_key("metadata.annotations", key), "rollout waves apply to Deployments only");
            }
        } else if key.starts_with(ANNOTATION_PREFIX) {
            out.push(
                join_key("metadata.annotations", key),
                "wasmfleet.io annotations belong on the pod template: move it to spec.template.metadata.annotations",
            );
        }
    }
}

/// A Deployment's rollout-wave annotations: each value, and that they fit the strategy.
fn waves(annotations: &BTreeMap<String, String>, strategy: Option<&DeploymentStrategy>, out: &mut Issues) {
    for key in WAVE_ANNOTATIONS {
        let Some(value) = annotations.get(key) else { continue };
        let path = join_key("metadata.annotations", key);
        if let Err(e) = super::waves::check(key, value) {
            out.push(path, e);
        } else if key != ANNOTATION_ROLLOUT_WAVES && !annotations.contains_key(ANNOTATION_ROLLOUT_WAVES) {
            out.push(path, format!("has no effect without {ANNOTATION_ROLLOUT_WAVES}"));
        }
    }
    if annotations.contains_key(ANNOTATION_ROLLOUT_WAVES)
        && strategy.is_some_and(|s| s.type_ == Some(StrategyType::Recreate))
    {
        out.push(
            join_key("metadata.annotations", ANNOTATION_ROLLOUT_WAVES),
            "needs strategy RollingUpdate: Recreate stops every replica at once",
        );
    }
}

/// Kubernetes' RFC 1123 label rule; names become hostnames.
pub(crate) fn dns_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name {s:?}: must be a lowercase RFC 1123 label (at most 63 characters of a-z, 0-9 and '-', \
             starting and ending with a letter or digit), because names are used as hostnames"
        ))
    }
}

fn selector(sel: &LabelSelector, template: &PodTemplateSpec, out: &mut Issues) {
    out.unsupported("spec.selector", "matchExpressions", &sel.match_expressions, "use `matchLabels`");
    if sel.match_labels.is_empty() {
        if sel.match_expressions.is_none() {
            out.push("spec.selector.matchLabels", "is required and must not be empty");
        }
        return;
    }
    if !selector_matches(&sel.match_labels, &template.metadata.labels) {
        let want: Vec<String> = sel.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push(
            "spec.template.metadata.labels",
            format!("selector does not match template labels: spec.selector.matchLabels requires {}", want.join(", ")),
        );
    }
}

/// Whether every `key: value` of `selector` is among `labels` (an empty selector matches all).
pub fn selector_matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn strategy(s: &DeploymentStrategy, out: &mut Issues) {
    if let Some(rolling) = &s.rolling_update {
        if s.type_ == Some(StrategyType::Recreate) {
            out.push_key("spec.strategy.rollingUpdate", "may not be specified when strategy type is Recreate");
        }
        rolling_update(
            "spec.strategy.rollingUpdate",
            rolling.max_surge.as_ref(),
            rolling.max_unavailable.as_ref(),
            out,
        );
    }
}

fn rolling_update(base: &str, surge: Option<&IntOrString>, unavailable: Option<&IntOrString>, out: &mut Issues) {
    let mut zero = 0;
    for (field, v) in [("maxSurge", surge), ("maxUnavailable", unavailable)] {
        let Some(v) = v else { continue };
        match int_or_percent(v) {
            Ok(0) => zero += 1,
            Ok(_) => {}
            Err(e) => out.push(join_key(base, field), e),
        }
    }
    if zero == 2 {
        out.push(join_key(base, "maxUnavailable"), "may not be 0 when maxSurge is 0");
    }
}

fn int_or_percent(v: &IntOrString) -> Result<i64, String> {
    match v {
        IntOrString::Int(i) if *i >= 0 => Ok(*i),
        IntOrString::Int(i) => Err(format!("must not be negative (got {i})")),
        IntOrString::String(s) => s
            .strip_suffix('%')
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|&n| n <= 100)
            .map(i64::from)
            .ok_or_else(|| format!("invalid value {s:?}: expected an integer or a percentage such as \"25%\"")),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TemplateOf {
    /// Deployment, DaemonSet or Rollout: replicas run until removed.
    Service,
    Job,
}

fn template(t: &PodTemplateSpec, of: TemplateOf, out: &mut Issues) {
    for (key, value) in &t.metadata.annotations {
        let path = join_key("spec.template.metadata.annotations", key);
        if KNOWN_ANNOTATIONS.contains(&key.as_str()) {
            if let Err(e) = check_annotation(key, value) {
                out.push(path, e);
            }
        } else if key.starts_with(ANNOTATION_PREFIX) {
            out.push(path, format!("unknown wasmfleet annotation; known ones are {}", KNOWN_ANNOTATIONS.join(", ")));
        }
    }
    let spec = &t.spec;
    let sbase = "spec.template.spec";
    match (of, spec.restart_policy) {
        (TemplateOf::Service, None | Some(RestartPolicy::Always)) => {}
        (TemplateOf::Service, Some(p)) => out.push(
            join_key(sbase, "restartPolicy"),
            format!("must be Always for a Deployment, DaemonSet or Rollout (got {p:?}); use a Job for run-to-completion work"),
        ),
        (TemplateOf::Job, Some(RestartPolicy::OnFailure | RestartPolicy::Never)) => {}
        (TemplateOf::Job, Some(p)) => out.push(
            join_key(sbase, "restartPolicy"),
            format!("a Job's restartPolicy must be OnFailure or Never (got {p:?})"),
        ),
        (TemplateOf::Job, None) => {
            out.push(join_key(sbase, "restartPolicy"), "is required for a Job: OnFailure or Never")
        }
    }

    let volume_names = volumes(&spec.volumes, out);
    match spec.containers.len() {
        0 => out.push(join_key(sbase, "containers"), "at least one container is required"),
        1 => {}
        n => out.push(
            join_key(sbase, "containers"),
            format!("wasmfleet runs one module per replica; sidecars are not supported (found {n} containers)"),
        ),
    }
    for (i, c) in spec.containers.iter().enumerate() {
        container(c, &join_index(&join_key(sbase, "containers"), i), &volume_names, out);
    }

    let empty_security_context = matches!(&spec.security_context, Some(Value::Mapping(m)) if m.is_empty());
    if !empty_security_context {
        out.unsupported(sbase, "securityContext", &spec.security_context, SANDBOX);
    }
    out.unsupported(
        sbase,
        "initContainers",
        &spec.init_containers,
        "wasmfleet runs one module per replica; run setup steps as a Job",
    );
    out.unsupported(sbase, "ephemeralContainers", &spec.ephemeral_containers, "modules cannot be attached to");
    out.unsupported(
        sbase,
        "affinity",
        &spec.affinity,
        "use `nodeSelector`; wasmfleet spreads replicas across nodes and zones by itself",
    );
    out.unsupported(
        sbase,
        "tolerations",
        &spec.tolerations,
        "nodes have no taints; use `nodeSelector` to choose nodes",
    );
    out.unsupported(
        sbase,
        "topologySpreadConstraints",
        &spec.topology_spread_constraints,
        "wasmfleet spreads replicas across nodes and zones by itself",
    );
    out.unsupported(
        sbase,
        "nodeName",
        &spec.node_name,
        "every node computes placement itself; use `nodeSelector` with a node label",
    );
    out.unsupported(sbase, "priorityClassName", &spec.priority_class_name, "there is no preemption");
    let no_accounts = "modules have no access to a cluster API, so there are no service accounts";
    out.unsupported(sbase, "serviceAccountName", &spec.service_account_name, no_accounts);
    out.unsupported(sbase, "serviceAccount", &spec.service_account, no_accounts);
    out.unsupported(sbase, "automountServiceAccountToken", &spec.automount_service_account_token, no_accounts);
    let host_ns =
        "Wasm modules never share the host's namespaces; expose services through a Service on the node gateway";
    out.unsupported(sbase, "hostNetwork", &spec.host_network, host_ns);
    out.unsupported(sbase, "hostPID", &spec.host_pid, host_ns);
    out.unsupported(sbase, "hostIPC", &spec.host_ipc, host_ns);
    out.unsupported(
        sbase,
        "imagePullSecrets",
        &spec.image_pull_secrets,
        "modules are pushed into the cluster with `wasmfleet push`; there is no registry to log in to",
    );
    let dns = "grant outbound hosts with the `wasmfleet.io/allowed-outbound-hosts` annotation";
    out.unsupported(sbase, "dnsConfig", &spec.dns_config, dns);
    out.unsupported(sbase, "hostAliases", &spec.host_aliases, dns);
    out.unsupported(sbase, "runtimeClassName", &spec.runtime_class_name, "every workload runs on wasmtime");
}

const SANDBOX: &str = "Wasm modules are sandboxed and get only the volumes, env and outbound hosts the spec grants";

/// Checks the pod's volumes; returns their names.
fn volumes(vols: &[Volume], out: &mut Issues) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, v) in vols.iter().enumerate() {
        let base = join_index("spec.template.spec.volumes", i);
        if let Err(e) = dns_label(&v.name) {
            out.push(join_key(&base, "name"), e);
        } else if !names.insert(v.name.clone()) {
            out.push(join_key(&base, "name"), format!("duplicate volume name {:?}", v.name));
        }
        let cm = "ConfigMaps and Secrets are not supported; put files in a `hostPath` volume or values in `env`";
        out.unsupported(&base, "configMap", &v.config_map, cm);
        out.unsupported(&base, "secret", &v.secret, cm);
        let other = "only `hostPath`, `emptyDir` and `persistentVolumeClaim` volumes are supported";
        out.unsupported(&base, "projected", &v.projected, other);
        out.unsupported(&base, "downwardAPI", &v.downward_api, other);
        out.unsupported(&base, "nfs", &v.nfs, other);
        out.unsupported(&base, "csi", &v.csi, other);
        out.unsupported(&base, "ephemeral", &v.ephemeral, other);
        let sources = [v.host_path.is_some(), v.empty_dir.is_some(), v.persistent_volume_claim.is_some()];
        if sources.iter().filter(|s| **s).count() > 1 {
            out.push(&base, "a volume has exactly one source: `hostPath`, `emptyDir` or `persistentVolumeClaim`");
        }
        if let Some(c) = &v.persistent_volume_claim
            && let Err(e) = dns_label(&c.claim_name)
        {
            out.push(join_key(&join_key(&base, "persistentVolumeClaim"), "claimName"), e);
        }
        if let Some(hp) = &v.host_path {
            if !hp.path.starts_with('/') {
                out.push(
                    join_key(&join_key(&base, "hostPath"), "path"),
                    format!("must be an absolute path (got {:?})", hp.path),
                );
            }
            if let Some(t) = &hp.type_
                && !matches!(t.as_str(), "" | "DirectoryOrCreate" | "Directory" | "FileOrCreate" | "File")
            {
                out.push(
                    join_key(&join_key(&base, "hostPath"), "type"),
                    format!("unsupported hostPath type {t:?}: expected \"\", DirectoryOrCreate, Directory, FileOrCreate or File"),
                );
            }
        }
        if let Some(ed) = &v.empty_dir {
            let ebase = join_key(&base, "emptyDir");
            if let Some(m) = &ed.medium
                && !matches!(m.as_str(), "" | "Memory")
            {
                out.push(join_key(&ebase, "medium"), format!("unsupported medium {m:?}: expected \"\" or Memory"));
            }
            if let Some(q) = &ed.size_limit
                && let Err(e) = parse_memory_bytes(&q.0)
            {
                out.push(join_key(&ebase, "sizeLimit"), e);
            }
        }
    }
    names
}

fn container(c: &Container, base: &str, volume_names: &BTreeSet<String>, out: &mut Issues) {
    if c.name.is_empty() {
        out.push(join_key(base, "name"), "is required");
    } else if let Err(e) = dns_label(&c.name) {
        out.push(join_key(base, "name"), e);
    }
    if c.image.trim().is_empty() {
        out.push(
            join_key(base, "image"),
            "is required: name the module (`name:tag`, `sha256:<digest>` or a local path)",
        );
    }

    let mut env_names = BTreeSet::new();
    for (i, e) in c.env.iter().enumerate() {
        let ebase = join_index(&join_key(base, "env"), i);
        if !env_name_ok(&e.name) {
            out.push(
                join_key(&ebase, "name"),
                format!("invalid environment variable name {:?}: use letters, digits, '_', '-' and '.', not starting with a digit", e.name),
            );
        } else if !env_names.insert(e.name.as_str()) {
            out.push(join_key(&ebase, "name"), format!("duplicate environment variable {:?}", e.name));
        }
        out.unsupported(
            &ebase,
            "valueFrom",
            &e.value_from,
            "ConfigMaps, Secrets and the downward API are not supported; set `value`",
        );
    }

    let mut port_names = BTreeSet::new();
    for (i, p) in c.ports.iter().enumerate() {
        let pbase = join_index(&join_key(base, "ports"), i);
        port_range(&join_key(&pbase, "containerPort"), p.container_port, out);
        protocol(&pbase, p.protocol, out);
        if let Some(n) = &p.name
            && !port_names.insert(n.as_str())
        {
            out.push(join_key(&pbase, "name"), format!("duplicate port name {n:?}"));
        }
        let host = "a Service of type NodePort or LoadBalancer opens its port on every node's gateway";
        out.unsupported(&pbase, "hostPort", &p.host_port, host);
        out.unsupported(&pbase, "hostIP", &p.host_ip, host);
    }

    if let Some(r) = &c.resources {
        let rbase = join_key(base, "resources");
        let mut parsed: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (section, list) in [("limits", &r.limits), ("requests", &r.requests)] {
            let Some(list) = list else { continue };
            let lbase = join_key(&rbase, section);
            if let Some(q) = &list.memory {
                match parse_memory_bytes(&q.0) {
                    Ok(b) => {
                        parsed.insert((section, "memory"), b);
                    }
                    Err(e) => out.push(join_key(&lbase, "memory"), e),
                }
            }
            if let Some(q) = &list.cpu {
                match parse_cpu_millis(&q.0) {
                    Ok(m) => {
                        parsed.insert((section, "cpu"), m);
                    }
                    Err(e) => out.push(join_key(&lbase, "cpu"), e),
                }
            }
        }
        for res in ["memory", "cpu"] {
            if let (Some(req), Some(lim)) = (parsed.get(&("requests", res)), parsed.get(&("limits", res)))
                && req > lim
            {
                out.push(
                    join_key(&join_key(&rbase, "requests"), res),
                    format!("must be less than or equal to the {res} limit"),
                );
            }
        }
    }

    let mut mount_paths = BTreeSet::new();
    for (i, m) in c.volume_mounts.iter().enumerate() {
        let mbase = join_index(&join_key(base, "volumeMounts"), i);
        if !volume_names.contains(&m.name) {
            out.push(
                join_key(&mbase, "name"),
                format!("volume {:?} is not declared in spec.template.spec.volumes", m.name),
            );
        }
        if !m.mount_path.starts_with('/') {
            out.push(join_key(&mbase, "mountPath"), format!("must be an absolute path (got {:?})", m.mount_path));
        } else if !mount_paths.insert(m.mount_path.as_str()) {
            out.push(join_key(&mbase, "mountPath"), format!("{:?} is mounted twice", m.mount_path));
        }
        out.unsupported(&mbase, "subPath", &m.sub_path, "mount a `hostPath` that points at the sub-directory");
    }

    if let Some(p) = &c.readiness_probe {
        probe(p, &join_key(base, "readinessProbe"), &port_names, out);
    }

    out.unsupported(base, "command", &c.command, "a Wasm module has a single entry point; put arguments in `args`");
    out.unsupported(base, "workingDir", &c.working_dir, "a module sees only its mounted volumes; use absolute paths");
    out.unsupported(base, "envFrom", &c.env_from, "ConfigMaps and Secrets are not supported; list variables in `env`");
    out.unsupported(
        base,
        "livenessProbe",
        &c.liveness_probe,
        "a replica whose module traps or exits is restarted by its restartPolicy; check HTTP health with `readinessProbe.httpGet`",
    );
    out.unsupported(base, "startupProbe", &c.startup_probe, "use `readinessProbe` with `initialDelaySeconds`");
    out.unsupported(
        base,
        "lifecycle",
        &c.lifecycle,
        "a module has no hooks; it is stopped when its replica is removed",
    );
    out.unsupported(base, "securityContext", &c.security_context, SANDBOX);
    out.unsupported(base, "volumeDevices", &c.volume_devices, "modules cannot open block devices");
    out.unsupported(base, "stdin", &c.stdin, "modules run without a terminal");
    out.unsupported(base, "tty", &c.tty, "modules run without a terminal");
}

/// Kubernetes' rule for environment variable names.
fn env_name_ok(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn port_range(path: &str, port: i64, out: &mut Issues) {
    if !(1..=65535).contains(&port) {
        out.push(path, format!("must be between 1 and 65535 (got {port})"));
    }
}

fn protocol(base: &str, p: Option<Protocol>, out: &mut Issues) {
    match p {
        None | Some(Protocol::Tcp) => {}
        Some(p) => out.push(
            join_key(base, "protocol"),
            format!(
                "{} is not supported by wasmfleet: the gateway carries HTTP over TCP only",
                if p == Protocol::Udp { "UDP" } else { "SCTP" }
            ),
        ),
    }
}

fn probe(p: &Probe, base: &str, port_names: &BTreeSet<&str>, out: &mut Issues) {
    out.unsupported(base, "exec", &p.exec, "modules cannot run other programs; use `httpGet`");
    out.unsupported(base, "tcpSocket", &p.tcp_socket, "use `httpGet`");
    out.unsupported(base, "grpc", &p.grpc, "use `httpGet`");
    match &p.http_get {
        None if p.exec.is_none() && p.tcp_socket.is_none() && p.grpc.is_none() => {
            out.push(join_key(base, "httpGet"), "is required: wasmfleet probes replicas over HTTP")
        }
        None => {}
        Some(h) => {
            let hbase = join_key(base, "httpGet");
            if let Some(path) = &h.path
                && !path.starts_with('/')
            {
                out.push(join_key(&hbase, "path"), format!("must start with '/' (got {path:?})"));
            }
            match &h.port {
                IntOrString::Int(n) => port_range(&join_key(&hbase, "port"), *n, out),
                IntOrString::String(s) if port_names.contains(s.as_str()) => {}
                IntOrString::String(s) => {
                    out.push(join_key(&hbase, "port"), format!("no container port is named {s:?}"))
                }
            }
            if h.scheme == Some(UriScheme::Https) {
                out.push(
                    join_key(&hbase, "scheme"),
                    "HTTPS is not supported by wasmfleet: replicas serve plain HTTP inside the node; use HTTP",
                );
            }
            out.unsupported(&hbase, "host", &h.host, "the probe always targets the replica itself");
            out.unsupported(&hbase, "httpHeaders", &h.http_headers, "probes send a plain GET");
        }
    }
    for (field, v) in [
        ("periodSeconds", p.period_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        if v == Some(0) {
            out.push(join_key(base, field), "must be at least 1");
        }
    }
}

fn service(spec: &ServiceSpec, out: &mut Issues) {
    let base = "spec";
    if spec.selector.is_empty() {
        out.push("spec.selector", "is required: wasmfleet routes a Service to the replicas whose labels it selects");
    }
    if spec.service_type() == ServiceType::ExternalName {
        out.push(
            "spec.type",
            "ExternalName is not supported by wasmfleet: call outside hosts directly and grant them with the \
             `wasmfleet.io/allowed-outbound-hosts` annotation",
        );
    }
    match spec.session_affinity.as_deref() {
        None | Some("None") => {}
        Some(other) => out.push(
            "spec.sessionAffinity",
            format!("{other:?} is not supported by wasmfleet: the gateway balances every request by load"),
        ),
    }
    out.unsupported(base, "externalName", &spec.external_name, "call outside hosts directly");
    let ips = "every node's gateway serves the Service's port; there are no virtual IPs";
    out.unsupported(base, "externalIPs", &spec.external_ips, ips);
    out.unsupported(base, "loadBalancerIP", &spec.load_balancer_ip, ips);
    out.unsupported(
        base,
        "loadBalancerSourceRanges",
        &spec.load_balancer_source_ranges,
        "filter traffic in front of the nodes",
    );
    out.unsupported(
        base,
        "externalTrafficPolicy",
        &spec.external_traffic_policy,
        "the gateway prefers a local replica and fails over to remote ones",
    );

    if spec.ports.is_empty() {
        out.push("spec.ports", "at least one port is required");
    }
    let mut numbers = BTreeSet::new();
    let mut names = BTreeSet::new();
    let node_ports_allowed = matches!(spec.service_type(), ServiceType::NodePort | ServiceType::LoadBalancer);
    for (i, p) in spec.ports.iter().enumerate() {
        let pbase = join_index("spec.ports", i);
        port_range(&join_key(&pbase, "port"), p.port, out);
        if !numbers.insert(p.port) {
            out.push(join_key(&pbase, "port"), format!("duplicate port {}", p.port));
        }
        protocol(&pbase, p.protocol, out);
        match &p.name {
            Some(n) if !names.insert(n.as_str()) => {
                out.push(join_key(&pbase, "name"), format!("duplicate port name {n:?}"))
            }
            None if spec.ports.len() > 1 => {
                out.push(join_key(&pbase, "name"), "is required when a Service has more than one port")
            }
            _ => {}
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) => port_range(&join_key(&pbase, "targetPort"), *n, out),
            Some(IntOrString::String(s)) if s.is_empty() => {
                out.push(join_key(&pbase, "targetPort"), "must not be empty")
            }
            _ => {}
        }
        if let Some(np) = p.node_port {
            if !node_ports_allowed {
                out.push_key(join_key(&pbase, "nodePort"), "may only be set when type is NodePort or LoadBalancer");
            } else {
                port_range(&join_key(&pbase, "nodePort"), np, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["hello", "a", "web-1", "0abc", &"a".repeat(63)] {
            assert!(dns_label(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Hello", "web_1", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(dns_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selectors() {
        let m = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(selector_matches(&m(&[("app", "a")]), &m(&[("app", "a"), ("tier", "web")])));
        assert!(!selector_matches(&m(&[("app", "a")]), &m(&[("app", "b")])));
        assert!(!selector_matches(&m(&[("app", "a"), ("x", "y")]), &m(&[("app", "a")])));
        assert!(selector_matches(&m(&[]), &m(&[("app", "a")])));
    }
}
