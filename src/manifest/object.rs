//! [`Kind`], [`ObjectKey`] and [`Object`]: one parsed, typed Kubernetes-shaped object.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::autoscaling::HorizontalPodAutoscaler;
use super::progressive::{AnalysisTemplate, Rollout};
use super::storage::{PersistentVolumeClaim, StorageClass};
use super::types::{DaemonSet, Deployment, Job, ObjectMeta, PodTemplateSpec, Service};

/// The kinds of object wasmfleet accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Deployment,
    Service,
    Job,
    DaemonSet,
    /// Argo Rollouts' `Rollout`.
    Rollout,
    /// Argo Rollouts' `AnalysisTemplate`.
    AnalysisTemplate,
    /// `autoscaling/v2 HorizontalPodAutoscaler`.
    HorizontalPodAutoscaler,
    /// `v1 PersistentVolumeClaim`.
    PersistentVolumeClaim,
    /// `storage.k8s.io/v1 StorageClass` (cluster-scoped: kept in namespace `default`).
    StorageClass,
}

impl Kind {
    /// Every kind, in order.
    pub const ALL: [Kind; 9] = [
        Kind::Deployment,
        Kind::Service,
        Kind::Job,
        Kind::DaemonSet,
        Kind::Rollout,
        Kind::AnalysisTemplate,
        Kind::HorizontalPodAutoscaler,
        Kind::PersistentVolumeClaim,
        Kind::StorageClass,
    ];

    /// The `kind:` value as written in a manifest: `"Deployment"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::Service => "Service",
            Kind::Job => "Job",
            Kind::DaemonSet => "DaemonSet",
            Kind::Rollout => "Rollout",
            Kind::AnalysisTemplate => "AnalysisTemplate",
            Kind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::StorageClass => "StorageClass",
        }
    }

    /// The Kubernetes `apiVersion` of this kind.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::DaemonSet => "apps/v1",
            Kind::Service | Kind::PersistentVolumeClaim => "v1",
            Kind::Job => "batch/v1",
            Kind::Rollout | Kind::AnalysisTemplate => "argoproj.io/v1alpha1",
            Kind::HorizontalPodAutoscaler => "autoscaling/v2",
            Kind::StorageClass => "storage.k8s.io/v1",
        }
    }

    /// The lowercase plural, as in `kubectl get deployments`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::Service => "services",
            Kind::Job => "jobs",
            Kind::DaemonSet => "daemonsets",
            Kind::Rollout => "rollouts",
            Kind::AnalysisTemplate => "analysistemplates",
            Kind::HorizontalPodAutoscaler => "horizontalpodautoscalers",
            Kind::PersistentVolumeClaim => "persistentvolumeclaims",
            Kind::StorageClass => "storageclasses",
        }
    }

    /// Parses a kind as kubectl does on its command line: case-insensitive, singular, plural or
    /// short name (`deploy`, `svc`, `ds`, and Argo's `ro`, `at`).
    pub fn parse(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "deployment" | "deployments" | "deploy" => Some(Kind::Deployment),
            "service" | "services" | "svc" => Some(Kind::Service),
            "job" | "jobs" => Some(Kind::Job),
            "daemonset" | "daemonsets" | "ds" => Some(Kind::DaemonSet),
            "rollout" | "rollouts" | "ro" => Some(Kind::Rollout),
            "analysistemplate" | "analysistemplates" | "at" => Some(Kind::AnalysisTemplate),
            "horizontalpodautoscaler" | "horizontalpodautoscalers" | "hpa" => Some(Kind::HorizontalPodAutoscaler),
            "persistentvolumeclaim" | "persistentvolumeclaims" | "pvc" => Some(Kind::PersistentVolumeClaim),
            "storageclass" | "storageclasses" | "sc" => Some(Kind::StorageClass),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of an object: `Deployment/default/hello`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey { kind, namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

impl FromStr for ObjectKey {
    type Err = String;

    /// Parses `Kind/namespace/name` (the kind as [`Kind::parse`] accepts it).
    fn from_str(s: &str) -> Result<ObjectKey, String> {
        let mut parts = s.split('/');
        let (Some(kind), Some(namespace), Some(name), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("invalid object key {s:?}: expected Kind/namespace/name"));
        };
        let kind = Kind::parse(kind).ok_or_else(|| format!("invalid object key {s:?}: unknown kind {kind:?}"))?;
        if namespace.is_empty() || name.is_empty() {
            return Err(format!("invalid object key {s:?}: namespace and name must not be empty"));
        }
        Ok(ObjectKey::new(kind, namespace, name))
    }
}

/// A typed object of one of the accepted kinds.
#[derive(Clone, Debug, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "a Rollout (~3.5 KiB, its strategies inline) is under twice a Deployment; objects are few and \
              handled one at a time, and `Object::Rollout(Rollout)` matches and builds like every other kind"
)]
pub enum Object {
    Deployment(Deployment),
    Service(Service),
    Job(Job),
    DaemonSet(DaemonSet),
    Rollout(Rollout),
    AnalysisTemplate(AnalysisTemplate),
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
    PersistentVolumeClaim(PersistentVolumeClaim),
    StorageClass(StorageClass),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Deployment(_) => Kind::Deployment,
            Object::Service(_) => Kind::Service,
            Object::Job(_) => Kind::Job,
            Object::DaemonSet(_) => Kind::DaemonSet,
            Object::Rollout(_) => Kind::Rollout,
            Object::AnalysisTemplate(_) => Kind::AnalysisTemplate,
            Object::HorizontalPodAutoscaler(_) => Kind::HorizontalPodAutoscaler,
            Object::PersistentVolumeClaim(_) => Kind::PersistentVolumeClaim,
            Object::StorageClass(_) => Kind::StorageClass,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::Deployment(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Job(o) => &o.metadata,
            Object::DaemonSet(o) => &o.metadata,
            Object::Rollout(o) => &o.metadata,
            Object::AnalysisTemplate(o) => &o.metadata,
            Object::HorizontalPodAutoscaler(o) => &o.metadata,
            Object::PersistentVolumeClaim(o) => &o.metadata,
            Object::StorageClass(o) => &o.metadata,
        }
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Deployment(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::Job(o) => &mut o.metadata,
            Object::DaemonSet(o) => &mut o.metadata,
            Object::Rollout(o) => &mut o.metadata,
            Object::AnalysisTemplate(o) => &mut o.metadata,
            Object::HorizontalPodAutoscaler(o) => &mut o.metadata,
            Object::PersistentVolumeClaim(o) => &mut o.metadata,
            Object::StorageClass(o) => &mut o.metadata,
        }
    }

    /// `metadata.name` (never empty on a validated object).
    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or("")
    }

    /// `metadata.namespace`, `"default"` when absent.
    pub fn namespace(&self) -> &str {
        self.meta().namespace.as_deref().unwrap_or("default")
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(self.kind(), self.namespace(), self.name())
    }

    /// The pod template of a Deployment, Job, DaemonSet or Rollout.
    pub fn pod_template(&self) -> Option<&PodTemplateSpec> {
        match self {
            Object::Deployment(o) => Some(&o.spec.template),
            Object::Job(o) => Some(&o.spec.template),
            Object::DaemonSet(o) => Some(&o.spec.template),
            Object::Rollout(o) => Some(&o.spec.template),
            Object::Service(_)
            | Object::AnalysisTemplate(_)
            | Object::HorizontalPodAutoscaler(_)
            | Object::PersistentVolumeClaim(_)
            | Object::StorageClass(_) => None,
        }
    }

    pub fn pod_template_mut(&mut self) -> Option<&mut PodTemplateSpec> {
        match self {
            Object::Deployment(o) => Some(&mut o.spec.template),
            Object::Job(o) => Some(&mut o.spec.template),
            Object::DaemonSet(o) => Some(&mut o.spec.template),
            Object::Rollout(o) => Some(&mut o.spec.template),
            Object::Service(_)
            | Object::AnalysisTemplate(_)
            | Object::HorizontalPodAutoscaler(_)
            | Object::PersistentVolumeClaim(_)
            | Object::StorageClass(_) => None,
        }
    }

    /// A copy whose `apiVersion` and `kind` are the canonical ones for its kind.
    fn with_type_meta(&self) -> Object {
        let kind = self.kind();
        let mut o = self.clone();
        let (api_version, k) = match &mut o {
            Object::Deployment(o) => (&mut o.api_version, &mut o.kind),
            Object::Service(o) => (&mut o.api_version, &mut o.kind),
            Object::Job(o) => (&mut o.api_version, &mut o.kind),
            Object::DaemonSet(o) => (&mut o.api_version, &mut o.kind),
            Object::Rollout(o) => (&mut o.api_version, &mut o.kind),
            Object::AnalysisTemplate(o) => (&mut o.api_version, &mut o.kind),
            Object::HorizontalPodAutoscaler(o) => (&mut o.api_version, &mut o.kind),
            Object::PersistentVolumeClaim(o) => (&mut o.api_version, &mut o.kind),
            Object::StorageClass(o) => (&mut o.api_version, &mut o.kind),
        };
        kind.api_version().clone_into(api_version);
        kind.as_str().clone_into(k);
        o
    }

    /// The Kubernetes object as written, with `apiVersion` and `kind`.
    pub fn to_json(&self) -> serde_json::Value {
        let result = match self.with_type_meta() {
            Object::Deployment(o) => serde_json::to_value(o),
            Object::Service(o) => serde_json::to_value(o),
            Object::Job(o) => serde_json::to_value(o),
            Object::DaemonSet(o) => serde_json::to_value(o),
            Object::Rollout(o) => serde_json::to_value(o),
            Object::AnalysisTemplate(o) => serde_json::to_value(o),
            Object::HorizontalPodAutoscaler(o) => serde_json::to_value(o),
            Object::PersistentVolumeClaim(o) => serde_json::to_value(o),
            Object::StorageClass(o) => serde_json::to_value(o),
        };
        // Serializing these plain structs (string-keyed maps only) cannot fail.
        result.unwrap_or(serde_json::Value::Null)
    }

    /// The inverse of [`Object::to_json`]. Does not run validation.
    pub fn from_json(kind: Kind, v: serde_json::Value) -> Result<Object, String> {
        let err = |e: serde_json::Error| format!("invalid {kind} object: {e}");
        let o = match kind {
            Kind::Deployment => Object::Deployment(serde_json::from_value(v).map_err(err)?),
            Kind::Service => Object::Service(serde_json::from_value(v).map_err(err)?),
            Kind::Job => Object::Job(serde_json::from_value(v).map_err(err)?),
            Kind::DaemonSet => Object::DaemonSet(serde_json::from_value(v).map_err(err)?),
            Kind::Rollout => Object::Rollout(serde_json::from_value(v).map_err(err)?),
            Kind::AnalysisTemplate => Object::AnalysisTemplate(serde_json::from_value(v).map_err(err)?),
            Kind::HorizontalPodAutoscaler => Object::HorizontalPodAutoscaler(serde_json::from_value(v).map_err(err)?),
            Kind::PersistentVolumeClaim => Object::PersistentVolumeClaim(serde_json::from_value(v).map_err(err)?),
            Kind::StorageClass => Object::StorageClass(serde_json::from_value(v).map_err(err)?),
        };
        Ok(o.with_type_meta())
    }

    /// The object as a YAML document, in the field order of the Kubernetes types.
    pub fn to_yaml(&self) -> String {
        let result = match self.with_type_meta() {
            Object::Deployment(o) => serde_yaml::to_string(&o),
            Object::Service(o) => serde_yaml::to_string(&o),
            Object::Job(o) => serde_yaml::to_string(&o),
            Object::DaemonSet(o) => serde_yaml::to_string(&o),
            Object::Rollout(o) => serde_yaml::to_string(&o),
            Object::AnalysisTemplate(o) => serde_yaml::to_string(&o),
            Object::HorizontalPodAutoscaler(o) => serde_yaml::to_string(&o),
            Object::PersistentVolumeClaim(o) => serde_yaml::to_string(&o),
            Object::StorageClass(o) => serde_yaml::to_string(&o),
        };
        result.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_parse() {
        for (s, k) in [
            ("Deployment", Kind::Deployment),
            ("deployments", Kind::Deployment),
            ("DEPLOY", Kind::Deployment),
            ("svc", Kind::Service),
            ("Services", Kind::Service),
            ("job", Kind::Job),
            ("Jobs", Kind::Job),
            ("ds", Kind::DaemonSet),
            ("daemonSets", Kind::DaemonSet),
            ("Rollout", Kind::Rollout),
            ("rollouts", Kind::Rollout),
            ("RO", Kind::Rollout),
            ("AnalysisTemplate", Kind::AnalysisTemplate),
            ("analysistemplates", Kind::AnalysisTemplate),
            ("at", Kind::AnalysisTemplate),
            ("hpa", Kind::HorizontalPodAutoscaler),
            ("HorizontalPodAutoscaler", Kind::HorizontalPodAutoscaler),
        ] {
            assert_eq!(Kind::parse(s), Some(k), "{s}");
        }
        assert_eq!(Kind::parse("pod"), None);
        assert_eq!(Kind::parse(""), None);
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            assert_eq!(Kind::parse(k.plural()), Some(k));
        }
        assert_eq!(Kind::Job.api_version(), "batch/v1");
        assert_eq!(Kind::Service.api_version(), "v1");
        assert_eq!(Kind::Rollout.api_version(), "argoproj.io/v1alpha1");
        assert_eq!(Kind::AnalysisTemplate.api_version(), "argoproj.io/v1alpha1");
        assert_eq!(Kind::AnalysisTemplate.plural(), "analysistemplates");
    }

    #[test]
    fn object_key_round_trips() {
        let k = ObjectKey::new(Kind::Deployment, "default", "hello");
        assert_eq!(k.to_string(), "Deployment/default/hello");
        assert_eq!("Deployment/default/hello".parse::<ObjectKey>(), Ok(k));
        assert_eq!("svc/prod/web".parse::<ObjectKey>().map(|k| k.kind), Ok(Kind::Service));
        assert!("Deployment/hello".parse::<ObjectKey>().is_err());
        assert!("Pod/default/x".parse::<ObjectKey>().is_err());
        assert!("Job/a/b/c".parse::<ObjectKey>().is_err());
    }
}
