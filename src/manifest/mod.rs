//! Manifests: Kubernetes-shaped YAML → typed, validated objects, with precise errors.
//!
//! A user's existing `Deployment` and `Service` should apply with only the `image:` line changed,
//! so the types follow Kubernetes field for field ([`types`]), and anything wasmfleet cannot honour
//! is an error rather than silently ignored. Depends on serde only; knows nothing of the store,
//! the cluster or the runtime.
//!
//! # Kinds
//!
//! `apps/v1 Deployment`, `v1 Service`, `batch/v1 Job`, `apps/v1 DaemonSet`,
//! `v1 PersistentVolumeClaim`, `storage.k8s.io/v1 StorageClass` ([`storage`]), Argo Rollouts'
//! `argoproj.io/v1alpha1 Rollout` and `AnalysisTemplate` ([`progressive`], with the built-in
//! metrics' [`Condition`] language), and `v1 List` whose `items` are such objects (as
//! `kubectl get -o yaml` prints them). A kind with the wrong `apiVersion`
//! (`extensions/v1beta1 Deployment`) is an error that names the right one.
//!
//! # Errors
//!
//! [`parse_str`] returns every [`ManifestError`] of a file at once, never a partial result. Each
//! names the document (1-based, counting only non-empty documents), the object's kind and name,
//! the field path (`spec.template.spec.containers[0].image`), and the line and column in the file:
//!
//! - *syntax errors* and *type errors* (unknown field, wrong type, unknown enum value) come from
//!   serde_yaml with its exact position; serde stops at the first one in a document;
//! - *unsupported fields*: Kubernetes fields wasmfleet knows but cannot honour (`command`,
//!   `livenessProbe`, `initContainers`, `affinity`, `valueFrom`, `configMap` volumes, UDP ports …)
//!   are declared in [`types`] and reported by validation with the reason and what to do instead;
//! - *semantic errors* (names, selectors, ports, quantities, restart policies …) are all reported;
//!   their line is found by scanning the document's block-style YAML for the field path (falling
//!   back to the nearest enclosing field when the path is not written out, e.g. a missing field).
//!
//! # Read-only fields
//!
//! So that `kubectl get -o yaml` output applies, `metadata.uid`, `resourceVersion`, `generation`,
//! `creationTimestamp`, `managedFields`, `selfLink`, the top-level `status`, the pod's
//! `dnsPolicy`/`schedulerName`, the container's `terminationMessagePath`/`Policy` and an empty
//! pod `securityContext: {}` are **accepted and dropped** (they do not round-trip through
//! [`Object::to_yaml`]). `imagePullPolicy` is accepted, kept, and ignored: modules are
//! content-addressed.
//!
//! # wasmfleet annotations
//!
//! Pod-template annotations (`spec.template.metadata.annotations`) extend a workload the
//! Kubernetes way; their values are validated, and unknown keys under `wasmfleet.io/` are errors:
//!
//! | annotation | value | meaning |
//! |---|---|---|
//! | `wasmfleet.io/allowed-outbound-hosts` | `"api.example.com, *.internal"` | hosts (optionally `:port`, `*.` wildcards, or `*`) the module may call over `wasi:http`; none by default |
//! | `wasmfleet.io/request-timeout` | `500ms`, `10s`, `2m` | deadline for one request to an HTTP module |
//! | `wasmfleet.io/max-concurrency` | `32` | most requests one replica serves at once |
//!
//! The runtime view of a template, with these and Kubernetes' defaults applied, is
//! [`PodTemplateSpec::workload`] → [`WorkloadTemplate`].

pub mod autoscaling;
mod condition;
mod error;
mod locate;
mod object;
mod parse;
pub mod progressive;
mod quantity;
pub mod storage;
pub mod types;
mod validate;
pub mod waves;
mod workload;

pub use autoscaling::HorizontalPodAutoscaler;
pub use condition::{Comparison, Condition, ConditionError, Figure, Op};
pub use error::ManifestError;
pub use object::{Kind, Object, ObjectKey};
pub use parse::parse_str;
pub use progressive::{
    AnalysisTemplate, AnalysisTemplateRef, AnalysisTemplateSpec, BackgroundAnalysis, BlueGreenStrategy, CanaryStep,
    CanaryStrategy, Metric, MetricProvider, Rollout, RolloutAnalysis, RolloutPause, RolloutSpec, RolloutStrategy, Step,
    StrategyKind, WasmfleetMetric, parse_pause_duration,
};
pub use quantity::{parse_cpu_millis, parse_duration, parse_memory_bytes, parse_quantity};
pub use storage::{PersistentVolumeClaim, StorageClass};
pub use types::{
    Container, ContainerPort, DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, DeploymentStrategy, EnvVar,
    IntOrString, Job, JobSpec, LabelSelector, ObjectMeta, PodSpec, PodTemplateSpec, Probe, Protocol, Quantity,
    ResourceList, ResourceRequirements, RestartPolicy, Service, ServicePort, ServiceSpec, ServiceType, StrategyType,
    Volume, VolumeMount,
};
pub use validate::{MAX_REPLICAS, selector_matches};
pub use workload::{
    ANNOTATION_ALLOWED_OUTBOUND_HOSTS, ANNOTATION_MAX_CONCURRENCY, ANNOTATION_PREFIX, ANNOTATION_REQUEST_TIMEOUT,
    HttpProbe, VolumeGrant, WorkloadTemplate, parse_allowed_hosts, parse_max_concurrency, parse_request_timeout,
};
