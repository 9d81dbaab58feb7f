//! The runtime view of a pod template: what a node needs to run one replica.
//!
//! Besides the Kubernetes fields, pod-template annotations extend a workload (see the
//! [module docs](super)): `wasmfleet.io/allowed-outbound-hosts`, `wasmfleet.io/request-timeout`,
//! `wasmfleet.io/max-concurrency` and `wasmfleet.io/keyvalue-scope`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::quantity::{parse_cpu_millis, parse_duration, parse_memory_bytes};
use super::types::{IntOrString, PodTemplateSpec, RestartPolicy};

/// Prefix of wasmfleet's annotations; unknown keys under it are errors (typos would be silent).
pub const ANNOTATION_PREFIX: &str = "wasmfleet.io/";
/// Comma-separated hosts a module may call: `api.example.com, *.internal, 10.0.0.5:8080`.
pub const ANNOTATION_ALLOWED_OUTBOUND_HOSTS: &str = "wasmfleet.io/allowed-outbound-hosts";
/// Deadline for one HTTP request to the module: `500ms`, `10s`, `2m`.
pub const ANNOTATION_REQUEST_TIMEOUT: &str = "wasmfleet.io/request-timeout";
/// Most requests one replica serves at once: a positive integer.
pub const ANNOTATION_MAX_CONCURRENCY: &str = "wasmfleet.io/max-concurrency";
/// Whose `wasi:keyvalue` buckets a workload opens: `namespace` (the default: every workload
/// of the namespace shares them) or `application` (its own: the Deployment's, Job's, ...).
pub const ANNOTATION_KEYVALUE_SCOPE: &str = "wasmfleet.io/keyvalue-scope";

pub(crate) const KNOWN_ANNOTATIONS: [&str; 4] = [
    ANNOTATION_ALLOWED_OUTBOUND_HOSTS,
    ANNOTATION_REQUEST_TIMEOUT,
    ANNOTATION_MAX_CONCURRENCY,
    ANNOTATION_KEYVALUE_SCOPE,
];

/// An HTTP readiness probe, with Kubernetes' defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbe {
    pub path: String,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// A directory granted to the module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeGrant {
    pub name: String,
    /// The host directory; `None` for an `emptyDir` (a fresh per-replica directory) or a
    /// claim.
    pub host_path: Option<PathBuf>,
    /// The PersistentVolumeClaim it mounts (its volume's directory on the node).
    pub claim: Option<String>,
    /// Where the module sees it.
    pub guest_path: String,
    pub read_only: bool,
}

/// Everything a node needs to run one replica of a pod template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadTemplate {
    pub container_name: String,
    pub image: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u64>,
    pub restart_policy: RestartPolicy,
    pub volumes: Vec<VolumeGrant>,
    pub readiness: Option<HttpProbe>,
    pub labels: BTreeMap<String, String>,
    pub node_selector: BTreeMap<String, String>,
    pub container_port: Option<u16>,
    pub allowed_outbound_hosts: Vec<String>,
    pub request_timeout: Option<Duration>,
    pub max_concurrency: Option<u32>,
    /// Its `wasi:keyvalue` buckets are its own, not its namespace's.
    pub keyvalue_per_application: bool,
}

impl PodTemplateSpec {
    /// The runtime view of this template. Infallible on a validated object; on an unvalidated one,
    /// values that do not parse are left out.
    pub fn workload(&self) -> WorkloadTemplate {
        let spec = &self.spec;
        let c = spec.containers.first().cloned().unwrap_or_default();
        let resources = c.resources.clone().unwrap_or_default();
        let limits = resources.limits.unwrap_or_default();
        let requests = resources.requests.unwrap_or_default();
        let memory = limits.memory.or(requests.memory).and_then(|q| parse_memory_bytes(&q.0).ok());
        let cpu = limits.cpu.or(requests.cpu).and_then(|q| parse_cpu_millis(&q.0).ok());

        let volumes = c
            .volume_mounts
            .iter()
            .filter_map(|m| {
                let v = spec.volumes.iter().find(|v| v.name == m.name)?;
                Some(VolumeGrant {
                    name: m.name.clone(),
                    host_path: v.host_path.as_ref().map(|h| PathBuf::from(&h.path)),
                    claim: v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone()),
                    guest_path: m.mount_path.clone(),
                    read_only: m.read_only.unwrap_or(false)
                        || v.persistent_volume_claim.as_ref().and_then(|c| c.read_only).unwrap_or(false),
                })
            })
            .collect();

        let readiness = c.readiness_probe.as_ref().and_then(|p| {
            let h = p.http_get.as_ref()?;
            Some(HttpProbe {
                path: h.path.clone().unwrap_or_else(|| "/".to_owned()),
                initial_delay: Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).into()),
                period: Duration::from_secs(p.period_seconds.unwrap_or(10).into()),
                timeout: Duration::from_secs(p.timeout_seconds.unwrap_or(1).into()),
                success_threshold: p.success_threshold.unwrap_or(1),
                failure_threshold: p.failure_threshold.unwrap_or(3),
            })
        });

        // The serving port: the probe's port if it names one, else the first declared port.
        let probe_port = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| match &h.port {
            IntOrString::Int(n) => u16::try_from(*n).ok(),
            IntOrString::String(name) => c
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok()),
        });
        let container_port = c.ports.first().and_then(|p| u16::try_from(p.container_port).ok()).or(probe_port);

        let ann = &self.metadata.annotations;
        WorkloadTemplate {
            container_name: c.name.clone(),
            image: c.image.clone(),
            args: c.args.clone(),
            env: c.env.iter().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect(),
            memory_bytes: memory,
            cpu_millis: cpu,
            restart_policy: spec.restart_policy.unwrap_or_default(),
            volumes,
            readiness,
            labels: self.metadata.labels.clone(),
            node_selector: spec.node_selector.clone(),
            container_port,
            allowed_outbound_hosts: ann
                .get(ANNOTATION_ALLOWED_OUTBOUND_HOSTS)
                .and_then(|v| parse_allowed_hosts(v).ok())
                .unwrap_or_default(),
            request_timeout: ann.get(ANNOTATION_REQUEST_TIMEOUT).and_then(|v| parse_request_timeout(v).ok()),
            max_concurrency: ann.get(ANNOTATION_MAX_CONCURRENCY).and_then(|v| parse_max_concurrency(v).ok()),
            keyvalue_per_application: ann.get(ANNOTATION_KEYVALUE_SCOPE).is_some_and(|v| v == "application"),
        }
    }
}

/// Checks the value of one of [`KNOWN_ANNOTATIONS`].
pub(crate) fn check_annotation(key: &str, value: &str) -> Result<(), String> {
    match key {
        ANNOTATION_ALLOWED_OUTBOUND_HOSTS => parse_allowed_hosts(value).map(drop),
        ANNOTATION_REQUEST_TIMEOUT => parse_request_timeout(value).map(drop),
        ANNOTATION_MAX_CONCURRENCY => parse_max_concurrency(value).map(drop),
        ANNOTATION_KEYVALUE_SCOPE => match value {
            "namespace" | "application" => Ok(()),
            other => Err(format!("unknown scope {other:?}: expected namespace or application")),
        },
        _ => Ok(()),
    }
}

/// `api.example.com, *.internal, 10.0.0.5:8080` → each host pattern, trimmed.
pub fn parse_allowed_hosts(value: &str) -> Result<Vec<String>, String> {
    let mut hosts = Vec::new();
    for raw in value.split(',') {
        let h = raw.trim();
        if h.is_empty() {
            if value.trim().is_empty() {
                break;
            }
            return Err(format!("invalid host list {value:?}: empty entry between commas"));
        }
        let (host, port) = match h.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        };
        let name = host.strip_prefix("*.").unwrap_or(host);
        let name_ok = host == "*"
            || (!name.is_empty()
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
        if !name_ok || !port_ok {
            return Err(format!(
                "invalid host {h:?}: expected a host name, `*.domain` or `*`, with an optional `:port` \
                 (\"api.example.com, *.internal\")"
            ));
        }
        hosts.push(h.to_owned());
    }
    Ok(hosts)
}

/// A request timeout: `500ms`, `10s`, `2m`; greater than zero.
pub fn parse_request_timeout(value: &str) -> Result<Duration, String> {
    let d = parse_duration(value)?;
    if d.is_zero() {
        return Err(format!("invalid duration {value:?}: must be greater than zero"));
    }
    Ok(d)
}

/// A concurrency limit: a positive integer.
pub fn parse_max_concurrency(value: &str) -> Result<u32, String> {
    match value.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("invalid value {value:?}: expected a positive integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations() {
        assert_eq!(
            parse_allowed_hosts("api.example.com, *.internal"),
            Ok(vec!["api.example.com".into(), "*.internal".into()])
        );
        assert_eq!(parse_allowed_hosts("10.0.0.5:8080"), Ok(vec!["10.0.0.5:8080".into()]));
        assert_eq!(parse_allowed_hosts(""), Ok(vec![]));
        assert!(parse_allowed_hosts("a,,b").is_err());
        assert!(parse_allowed_hosts("http://x").is_err());
        assert!(parse_allowed_hosts("a.com:0").is_err());
        assert_eq!(parse_request_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_request_timeout("0s").is_err());
        assert_eq!(parse_max_concurrency("32"), Ok(32));
        assert!(parse_max_concurrency("0").is_err());
        assert!(parse_max_concurrency("lots").is_err());
    }
}
