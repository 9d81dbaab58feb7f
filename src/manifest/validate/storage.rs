//! Checks on a [`PersistentVolumeClaim`] and a [`StorageClass`]. Whether a claim's class
//! exists, and whether two workloads claim one ReadWriteOnce volume, is checked at apply,
//! against the stored objects and the rest of the file (`control`).

use super::super::locate::join_key;
use super::super::quantity::{parse_duration, parse_memory_bytes};
use super::super::storage::{AccessMode, PersistentVolumeClaim, Provisioner, Reclaim, StorageClass};
use super::{Issues, dns_label};

pub(super) fn claim(c: &PersistentVolumeClaim, out: &mut Issues) {
    let spec = &c.spec;
    if spec.access_modes.is_empty() {
        out.push("spec.accessModes", "is required: ReadWriteOnce, ReadWriteOncePod or ReadOnlyMany");
    }
    for (i, m) in spec.access_modes.iter().enumerate() {
        if let Err(e) = AccessMode::parse(m) {
            out.push(format!("spec.accessModes[{i}]"), e);
        }
    }
    let storage = spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.storage.as_ref());
    match storage {
        None => out.push("spec.resources.requests.storage", "is required (the volume's size, e.g. 1Gi)"),
        Some(q) => match parse_memory_bytes(&q.0) {
            Ok(0) => out.push("spec.resources.requests.storage", "must be more than 0"),
            Ok(_) => {}
            Err(e) => out.push("spec.resources.requests.storage", e),
        },
    }
    if let Some(limit) = spec.resources.as_ref().and_then(|r| r.limits.as_ref()).and_then(|l| l.storage.as_ref())
        && let Err(e) = parse_memory_bytes(&limit.0)
    {
        out.push("spec.resources.limits.storage", e);
    }
    if let Some(class) = spec.storage_class_name.as_deref()
        && !class.is_empty()
        && let Err(e) = dns_label(class)
    {
        out.push("spec.storageClassName", e);
    }
    if let Some(mode) = spec.volume_mode.as_deref()
        && mode != "Filesystem"
    {
        out.push(
            "spec.volumeMode",
            format!("unsupported volume mode {mode:?}: a Wasm module sees directories only (Filesystem)"),
        );
    }
    let provisioned = "volumes are provisioned for each claim by its class";
    out.unsupported("spec", "volumeName", &spec.volume_name, provisioned);
    out.unsupported("spec", "selector", &spec.selector, provisioned);
    out.unsupported("spec", "dataSource", &spec.data_source, "a volume starts empty");
    out.unsupported("spec", "dataSourceRef", &spec.data_source_ref, "a volume starts empty");
    out.unsupported(
        "spec",
        "volumeAttributesClassName",
        &spec.volume_attributes_class_name,
        "use the class's parameters",
    );
}

pub(super) fn class(c: &StorageClass, out: &mut Issues) {
    if c.metadata.namespace.is_some() {
        out.push_key("metadata.namespace", "a StorageClass is cluster-scoped: remove the namespace");
    }
    let provisioner = match Provisioner::parse(&c.provisioner) {
        Ok(p) => Some(p),
        Err(e) => {
            out.push("provisioner", e);
            None
        }
    };
    for (key, value) in &c.parameters {
        let path = join_key("parameters", key);
        match (key.as_str(), provisioner) {
            ("replicas", Some(Provisioner::Replicated) | None) => match value.parse::<u32>() {
                Ok(1..=16) => {}
                _ => out.push(path, format!("must be a whole number of copies from 1 to 16 (got {value:?})")),
            },
            ("syncPeriod", Some(Provisioner::Replicated) | None) => match parse_duration(value) {
                Ok(d) if d.as_millis() >= 100 && d.as_secs() <= 3600 => {}
                Ok(_) => out.push(path, "must be from 100ms to 1h"),
                Err(e) => out.push(path, e),
            },
            ("replicas" | "syncPeriod", Some(Provisioner::Local)) => {
                out.push(path, "applies to the wasmfleet.io/replicated provisioner only")
            }
            _ => out.push(path, "unknown parameter: expected replicas or syncPeriod (wasmfleet.io/replicated)"),
        }
    }
    if let Some(r) = &c.reclaim_policy
        && let Err(e) = Reclaim::parse(r)
    {
        out.push("reclaimPolicy", e);
    }
    if let Some(m) = &c.volume_binding_mode
        && !matches!(m.as_str(), "WaitForFirstConsumer" | "Immediate")
    {
        out.push("volumeBindingMode", format!("unknown mode {m:?}: expected WaitForFirstConsumer or Immediate"));
    }
    out.unsupported("", "mountOptions", &c.mount_options, "a volume is a directory; there is nothing to mount");
    out.unsupported("", "allowedTopologies", &c.allowed_topologies, "use nodeSelector on the workloads");
}
